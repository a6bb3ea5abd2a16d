"""What the processes started by tests/test_multiprocessing.py run: small functions, importable by a
spawned process, each written against a library named by a string ("autograd" or "torch")."""

import importlib


def library(name):
    """(torch-like module, nn, optim) of the named library."""
    if name == "torch":
        import torch

        return torch, torch.nn, torch.optim
    return importlib.import_module("autograd"), importlib.import_module("nn"), importlib.import_module("optim")


def hogwild_train(rank, name, model, steps):
    """pytorch/examples' mnist_hogwild worker, shrunk: SGD steps on a model the parent shares."""
    torch, nn, optim = library(name)
    torch.manual_seed(rank + 1)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    x = torch.randn(32, 4)
    y = (x * torch.tensor([1.0, -2.0, 0.5, 3.0])).sum(1, keepdim=True)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def fill_row(rank, table):
    """Row ``rank`` of a shared table set to rank + 1, in place."""
    table[rank] = rank + 1


def double_what_arrives(inbox, outbox):
    """Each tensor taken from ``inbox`` doubled in place (the sender sees it) and sent back."""
    for _ in range(2):
        tensor = inbox.get()
        tensor.detach().mul_(2)  # (a parameter too: its detached view shares its memory)
        outbox.put((type(tensor).__name__, tensor.requires_grad, tensor.is_shared(), tensor))
    inbox.get()  # alive until the parent has taken them: a descriptor is sent by the process that holds it


def fail_at(rank, failing, how):
    if rank == failing:
        if how == "raise":
            raise ValueError(f"process {rank} gives up")
        import sys

        sys.exit(3)
