"""``chainrule demo --distributed``: the demo's training as data-parallel training over MPI.

    mpiexec -n 2 chainrule demo --distributed --data moons

Every rank builds the same data split (same seed), wraps the MLP in
DistributedDataParallel (rank 0's weights everywhere), and trains on its share of
each epoch's samples (DistributedSampler): a global batch of --batch-size is split
evenly across the ranks, so each step is the step one process would take on the
whole batch. Only rank 0 prints and writes the outputs.
"""

import time

import numpy

import autograd
import autograd.distributed as dist
import nn
from autograd.data import TensorDataset, random_split
from autograd.transforms import Standardize
from autograd.utils.data import DistributedSampler
from chainrule import cli


def train(args):
    try:
        dist.init_process_group("mpi")
    except RuntimeError as error:
        raise cli.DemoError(str(error)) from None
    rank, size = dist.get_rank(), dist.get_world_size()
    say = print if rank == 0 else (lambda *a, **k: None)
    if args.batch_size % size:
        raise cli.DemoError(f"--batch-size {args.batch_size} must be a multiple of the {size} processes")
    autograd.manual_seed(args.seed)
    X, y, hidden = cli.load(args.data)
    classes = int(y.numpy().max()) + 1
    train_set, valid = random_split(TensorDataset(X, y), [0.8, 0.2])
    X_train, y_train = train_set.batch(numpy.arange(len(train_set)))
    X_valid, y_valid = valid.batch(numpy.arange(len(valid)))
    scaler = Standardize().fit(X_train)
    X_train, X_valid = scaler(X_train), scaler(X_valid)
    training = TensorDataset(X_train, y_train)

    model = nn.parallel.DistributedDataParallel(nn.MLP(X.shape[1], hidden, classes))
    optimizer_class, default_lr, options = cli.OPTIMIZERS[args.optimizer]
    optimizer = optimizer_class(model.parameters(), lr=args.lr or default_lr, **options)
    criterion = nn.CrossEntropyLoss()
    sampler = DistributedSampler(training, seed=args.seed)
    local = args.batch_size // size
    steps = -(-len(sampler) // local)
    processes = f"{size} process" + ("es" if size > 1 else "")
    say(f"chainrule demo --distributed: {processes}, {args.data} ({len(train_set)} training samples, "
        f"{len(sampler)} per process), MLP {X.shape[1]}-{'-'.join(map(str, hidden))}-{classes}, "
        f"{args.optimizer} lr={args.lr or default_lr}, {args.epochs} epochs of global batches of "
        f"{args.batch_size} ({local} per process)")
    history = {"training loss": [], "validation loss": [], "training accuracy": [], "validation accuracy": []}
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        sampler.set_epoch(epoch)
        order = sampler.indices()
        model.train()
        total = autograd.zeros(2, dtype=autograd.float64)  # loss sum, samples: over all ranks at the end
        for step in range(steps):
            inputs, targets = training.batch(order[step * local:(step + 1) * local])
            optimizer.zero_grad()
            loss = criterion(model(inputs), targets)
            loss.backward()
            optimizer.step()
            with autograd.no_grad():
                total.add_(autograd.tensor([loss.item() * len(targets), len(targets)], dtype=total.dtype))
        dist.all_reduce(total)
        model.eval()
        with autograd.no_grad():
            history["validation loss"].append(criterion(model(X_valid), y_valid).item())
        history["training loss"].append(total[0].item() / total[1].item())
        history["training accuracy"].append(cli.accuracy(model, X_train, y_train))
        history["validation accuracy"].append(cli.accuracy(model, X_valid, y_valid))
        say(f"epoch {epoch:>3}/{args.epochs} loss {history['training loss'][-1]:.4f} "
            f"validation accuracy {history['validation accuracy'][-1]:.1%}")
    say(f"training accuracy {history['training accuracy'][-1]:.1%}, validation accuracy "
        f"{history['validation accuracy'][-1]:.1%} in {time.perf_counter() - started:.1f} s on {processes}")
    if rank == 0:
        cli.write_outputs(args.out, model.module, criterion, X_train[:8], y_train[:8], history,
                          saved=cli.recipe(args, cli.architecture("mlp", X.shape[1], hidden, classes), scaler))
    dist.barrier()
    dist.destroy_process_group()
