"""Programs written for torch.distributed, run as one process (PyTorch's "gloo" backend with world_size=1)
on chainrule and, where torch is installed, on PyTorch: collectives, an env:// launcher training a
DistributedDataParallel model with a DistributedSampler, no_sync and find_unused_parameters, saving on rank 0,
and nn.DataParallel on the CPU."""

import datetime
import os
import socket

import numpy as np
import pytest

import autograd
import autograd.distributed
import nn
import nn.functional
import optim
from autograd.utils import data as chainrule_data

TIMEOUT = datetime.timedelta(seconds=60)  # a stuck rendezvous fails the test instead of hanging it


def chainrule_modules():
    return autograd, nn, nn.functional, autograd.distributed, optim, chainrule_data


def torch_modules():
    pytest.importorskip("torch")
    import torch
    import torch.distributed
    import torch.nn.functional
    import torch.utils.data.distributed

    data = torch.utils.data
    data.DistributedSampler = torch.utils.data.distributed.DistributedSampler
    return torch, torch.nn, torch.nn.functional, torch.distributed, torch.optim, data


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def collectives_program(modules, store):
    torch, nn, F, dist, optim, data = modules
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1, timeout=TIMEOUT)
    try:
        seen = {"group": (dist.is_initialized(), dist.get_rank(), dist.get_world_size(), dist.get_backend())}
        dist.barrier()
        for op in ("SUM", "AVG", "MAX", "MIN", "PRODUCT"):
            t = torch.tensor([1.5, -2.0, 3.0])
            dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
            seen[op] = t.tolist()
        t = torch.arange(4.0)
        dist.broadcast(t, src=0)
        gathered = [torch.zeros(4)]
        dist.all_gather(gathered, t * 2)
        into = torch.zeros(4)
        dist.all_gather_into_tensor(into, t + 1)
        scattered = torch.zeros(4)
        dist.reduce_scatter(scattered, [t * 3])
        block = torch.zeros(2)
        dist.reduce_scatter_tensor(block, torch.tensor([5.0, 7.0]), op=dist.ReduceOp.AVG)
        received = torch.zeros(4)
        dist.scatter(received, [t - 1], src=0)
        pieces = [torch.zeros(4)]
        dist.gather(t * t, pieces, dst=0)
        work = dist.all_reduce(t, async_op=True)
        work.wait()
        objects = [None]
        dist.all_gather_object(objects, {"accuracy": 0.5, "rank": dist.get_rank()})
        config = [{"lr": 0.1}, "run-1"]
        dist.broadcast_object_list(config, src=0)
        seen.update(bcast=t.tolist(), all_gather=gathered[0].tolist(), into=into.tolist(),
                    reduce_scatter=scattered.tolist(), reduce_scatter_tensor=block.tolist(), scatter=received.tolist(),
                    gather=pieces[0].tolist(), async_done=work.is_completed(), objects=objects, config=config)
    finally:
        dist.destroy_process_group()
    seen["after"] = dist.is_available() and dist.is_initialized()
    return seen


def test_collectives_of_one_process(tmp_path):
    ours = collectives_program(chainrule_modules(), tmp_path / "ours")
    x = [1.5, -2.0, 3.0]
    assert ours["group"] == (True, 0, 1, "gloo")
    assert all(ours[op] == x for op in ("SUM", "AVG", "MAX", "MIN", "PRODUCT"))  # one rank: its own tensor
    assert ours["all_gather"] == [0.0, 2.0, 4.0, 6.0] and ours["into"] == [1.0, 2.0, 3.0, 4.0]
    assert ours["reduce_scatter"] == [0.0, 3.0, 6.0, 9.0] and ours["reduce_scatter_tensor"] == [5.0, 7.0]
    assert ours["scatter"] == [-1.0, 0.0, 1.0, 2.0] and ours["gather"] == [0.0, 1.0, 4.0, 9.0]
    assert ours["objects"] == [{"accuracy": 0.5, "rank": 0}] and ours["config"] == [{"lr": 0.1}, "run-1"]
    assert ours["async_done"] and ours["after"] is False
    assert ours == collectives_program(torch_modules(), tmp_path / "theirs")


class Net:
    """A model with a layer forward never uses (find_unused_parameters)."""

    @staticmethod
    def make(nn, F):
        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1, self.bn, self.fc2 = nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)
                self.unused = nn.Linear(2, 2)

            def forward(self, x):
                return self.fc2(F.relu(self.bn(self.fc1(x))))

        return Model()


def launcher_program(modules, folder, wrap=True):
    """torchrun-style: rank and world size from the environment, DDP, a DistributedSampler, gradient
    accumulation under no_sync, the loss averaged over ranks for logging, a checkpoint on rank 0."""
    torch, nn, F, dist, optim, data = modules
    local_rank = int(os.environ["LOCAL_RANK"])
    if wrap:
        dist.init_process_group(backend="gloo", timeout=TIMEOUT)
    torch.manual_seed(0)
    model = Net.make(nn, F)
    ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if wrap else model
    inputs, targets = torch.randn(20, 4), torch.randint(0, 3, (20,))
    dataset = data.TensorDataset(inputs, targets)
    sampler = data.DistributedSampler(dataset, num_replicas=None if wrap else 1, rank=None if wrap else 0, seed=5)
    loader = data.DataLoader(dataset, batch_size=6, sampler=sampler)
    optimizer = optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    orders, losses = [], []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
        for i, (xb, yb) in enumerate(loader):
            optimizer.zero_grad()
            if i % 2 == 0 and wrap:
                with ddp.no_sync():
                    F.cross_entropy(ddp(xb), yb).backward()
            elif i % 2 == 0:
                F.cross_entropy(ddp(xb), yb).backward()
            else:
                loss = F.cross_entropy(ddp(xb), yb)
                loss.backward()
                logged = loss.detach().clone()
                if dist.is_available() and dist.is_initialized():
                    dist.all_reduce(logged, op=dist.ReduceOp.AVG)
                losses.append(logged.item())
            optimizer.step()
    keys = list(ddp.state_dict())[:2]
    if not wrap or dist.get_rank() == 0:
        torch.save(ddp.module.state_dict() if wrap else model.state_dict(), os.path.join(folder, f"ck{local_rank}.pt"))
    if wrap:
        dist.barrier()
        dist.destroy_process_group()
    saved = torch.load(os.path.join(folder, "ck0.pt"))
    return dict(orders=orders, losses=losses, keys=keys, unused_grad=model.unused.weight.grad,
                weights={k: np.asarray(v.tolist()) for k, v in saved.items()})


def test_env_launcher_trains_ddp_as_plain_training(tmp_path, monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    (tmp_path / "ddp").mkdir()
    (tmp_path / "plain").mkdir()
    ours = launcher_program(chainrule_modules(), tmp_path / "ddp")
    plain = launcher_program(chainrule_modules(), tmp_path / "plain", wrap=False)
    # PyTorch's permutations for seed 5 and 6 (torch.randperm(20, generator=manual_seed(5 + epoch)))
    assert ours["orders"] == [[11, 0, 9, 10, 3, 15, 14, 18, 8, 2, 19, 6, 5, 12, 1, 7, 4, 17, 16, 13],
                              [10, 11, 17, 12, 14, 2, 19, 7, 3, 5, 9, 18, 15, 0, 8, 13, 6, 16, 1, 4]]
    assert ours["keys"] == ["module.fc1.weight", "module.fc1.bias"] and ours["unused_grad"] is None
    # one rank averages over itself: DDP's steps are plain training's
    np.testing.assert_allclose(ours["losses"], plain["losses"], rtol=1e-6)
    np.testing.assert_allclose(ours["losses"], [1.164711, 1.389015, 1.009232, 0.97843], atol=2e-6)
    assert ours["weights"].keys() == plain["weights"].keys()
    for key, value in ours["weights"].items():
        np.testing.assert_allclose(value, plain["weights"][key], rtol=1e-5, atol=1e-7)
    (tmp_path / "torch").mkdir()
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    theirs = launcher_program(torch_modules(), tmp_path / "torch")
    assert ours["orders"] == theirs["orders"] and ours["keys"] == theirs["keys"] and theirs["unused_grad"] is None
    np.testing.assert_allclose(ours["losses"], theirs["losses"], rtol=1e-5)
    for key, value in ours["weights"].items():
        np.testing.assert_allclose(value, theirs["weights"][key], rtol=1e-4, atol=1e-6)


def sampler_program(modules):
    data = modules[5]
    shares = {}
    for size, replicas, drop_last, shuffle in [(10, 3, False, True), (10, 3, True, True), (11, 4, False, True),
                                               (7, 2, True, False)]:
        for rank in range(replicas):
            sampler = data.DistributedSampler(list(range(size)), num_replicas=replicas, rank=rank, shuffle=shuffle,
                                              seed=1, drop_last=drop_last)
            epochs = []
            for epoch in range(3):
                sampler.set_epoch(epoch)
                epochs.append(list(sampler))
            shares[size, replicas, drop_last, rank] = (len(sampler), epochs)
    return shares


def test_distributed_sampler_epochs_padding_and_drop_last():
    ours = sampler_program(chainrule_modules())
    assert ours[10, 3, False, 0] == (4, [[5, 2, 9, 4], [8, 5, 0, 3], [6, 7, 1, 4]])  # 4 pads with the first two
    assert ours[10, 3, True, 2] == (3, [[1, 8, 7], [1, 9, 2], [3, 5, 2]])
    assert ours[11, 4, False, 3] == (3, [[3, 8, 0], [0, 2, 3], [6, 8, 9]])
    assert ours[7, 2, True, 1] == (3, [[1, 3, 5]] * 3)
    for epoch in range(3):  # without drop_last the shares cover everything; with it they are disjoint
        assert sorted({i for r in range(3) for i in ours[10, 3, False, r][1][epoch]}) == list(range(10))
        assert len({i for r in range(3) for i in ours[10, 3, True, r][1][epoch]}) == 9
    assert ours == sampler_program(torch_modules())


def data_parallel_program(modules):
    torch, nn, F = modules[:3]
    torch.manual_seed(1)
    model = nn.DataParallel(Net.make(nn, F))
    x = torch.randn(3, 4, requires_grad=True)
    model(x).sum().backward()
    return dict(device_ids=model.device_ids, module=type(model.module).__name__, keys=list(model.state_dict())[:2],
                grad=np.asarray(x.grad.tolist()), bn=model.module.bn.num_batches_tracked.item())


def test_data_parallel_without_gpus_runs_the_module():
    ours = data_parallel_program(chainrule_modules())
    assert ours["device_ids"] == [] and ours["module"] == "Model" and ours["bn"] == 1
    assert ours["keys"] == ["module.fc1.weight", "module.fc1.bias"]
    np.testing.assert_allclose(ours["grad"].sum(0), 0, atol=1e-5)  # batch norm: input gradients sum to 0
    theirs = data_parallel_program(torch_modules())
    np.testing.assert_allclose(ours.pop("grad"), theirs.pop("grad"), rtol=1e-4, atol=1e-6)
    assert ours == theirs


def simclr_program(modules, store):
    """SimCLR's NT-Xent over every rank's embeddings, gathered by the usual custom Function."""
    torch, nn, F, dist = modules[:4]

    class GatherLayer(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
            dist.all_gather(out, x)
            return tuple(out)

        @staticmethod
        def backward(ctx, *grads):
            every = torch.stack(grads)
            dist.all_reduce(every)
            return every[dist.get_rank()]

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1, timeout=TIMEOUT)
    try:
        torch.manual_seed(0)
        encoder = nn.Linear(3, 4)
        model = nn.parallel.DistributedDataParallel(encoder)
        x1, x2 = torch.randn(4, 3), torch.randn(4, 3)
        a = torch.cat(GatherLayer.apply(F.normalize(model(x1), dim=1)), 0)
        b = torch.cat(GatherLayer.apply(F.normalize(model(x2), dim=1)), 0)
        z = torch.cat([a, b])
        n = a.shape[0]
        similarity = (z @ z.t() / 0.5).masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
        loss = F.cross_entropy(similarity, torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]))
        loss.backward()
        return loss.item(), np.asarray(encoder.weight.grad.tolist())
    finally:
        dist.destroy_process_group()


def test_simclr_gather_layer(tmp_path):
    loss, grad = simclr_program(chainrule_modules(), tmp_path / "ours")
    assert abs(loss - 1.85519) < 1e-5 and grad.shape == (4, 3)
    their_loss, their_grad = simclr_program(torch_modules(), tmp_path / "theirs")
    assert abs(loss - their_loss) < 1e-5
    np.testing.assert_allclose(grad, their_grad, rtol=1e-4, atol=1e-6)



def unused_parameter_program(modules, store):
    """A branch left out of the loss without find_unused_parameters: the next forward says so."""
    torch, nn, F, dist = modules[:4]

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            return self.a(x)

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1, timeout=TIMEOUT)
    try:
        torch.manual_seed(0)
        model = nn.parallel.DistributedDataParallel(TwoHeads())
        x = torch.randn(4, 3)
        model(x).sum().backward()
        grads = [p.grad is None for p in model.parameters()]
        try:
            model(x)
        except RuntimeError as error:
            return grads, type(error).__name__, str(error).split(".")[0]
        return grads, None, None
    finally:
        dist.destroy_process_group()


def test_unused_parameters_without_detection_raise_at_the_next_forward(tmp_path):
    ours = unused_parameter_program(chainrule_modules(), tmp_path / "ours")
    assert ours == ([False, False, True, True], "RuntimeError",
                    "Expected to have finished reduction in the prior iteration before starting a new one")
    assert ours == unused_parameter_program(torch_modules(), tmp_path / "theirs")


def ddp_tutorial_program(modules, folder, port, rank=0, world_size=1):
    """PyTorch's "Getting Started with DDP" checkpoint demo (the body mp.spawn runs on each rank): env://
    through MASTER_ADDR/MASTER_PORT, rank 0 saves, a barrier, every rank loads with a cuda map_location."""
    torch, nn, F, dist, optim, data = modules
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "localhost", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=TIMEOUT)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 5))
        ddp_model = nn.parallel.DistributedDataParallel(model)
        path = os.path.join(folder, "model.checkpoint")
        if rank == 0:
            torch.save(ddp_model.state_dict(), path)
        dist.barrier()
        ddp_model.load_state_dict(torch.load(path, map_location={"cuda:0": f"cuda:{rank}"}, weights_only=True))
        optimizer = optim.SGD(ddp_model.parameters(), lr=0.001)
        torch.manual_seed(1)
        for _ in range(3):
            optimizer.zero_grad()
            nn.MSELoss()(ddp_model(torch.randn(20, 10)), torch.randn(20, 5)).backward()
            optimizer.step()
        return np.asarray(ddp_model.module[2].weight.tolist())
    finally:
        dist.destroy_process_group()


def test_ddp_tutorial_checkpoint_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "")  # (restored afterwards: the program sets both)
    monkeypatch.setenv("MASTER_PORT", "")
    (tmp_path / "ours").mkdir()
    ours = ddp_tutorial_program(chainrule_modules(), tmp_path / "ours", free_port())
    # PyTorch's first weights of the last layer after the three steps (torch 2.13, computed once)
    np.testing.assert_allclose(ours.reshape(-1)[:8], [-0.129506, 0.187690, -0.192411, 0.286966, 0.216680, -0.266646,
                                                      -0.078760, 0.014324], atol=2e-6)
    (tmp_path / "theirs").mkdir()
    theirs = ddp_tutorial_program(torch_modules(), tmp_path / "theirs", free_port())
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
