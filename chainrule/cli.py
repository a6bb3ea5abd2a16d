"""The ``chainrule`` command (also ``python -m chainrule``): ``chainrule demo`` trains an
MLP end to end and writes what it saw into ``--out``.

    chainrule demo                          # the 8x8 digits, Adam, a few seconds
    chainrule demo --data moons --optimizer nesterov --epochs 40
"""

import argparse
import os
import sys
import time

import numpy

import autograd
import nn
import optim
from autograd import viz
from autograd.data import DataLoader, TensorDataset, random_split
from autograd.trace import trace_backward
from autograd.transforms import Standardize
from chainrule.svg_chart import line_chart

OPTIMIZERS = {  # name: (class, default learning rate, extra options)
    "sgd": (optim.SGD, 0.1, {}),
    "momentum": (optim.SGD, 0.05, {"momentum": 0.9}),
    "nesterov": (optim.SGD, 0.05, {"momentum": 0.9, "nesterov": True}),
    "rmsprop": (optim.RMSprop, 0.002, {}),
    "adagrad": (optim.Adagrad, 0.05, {}),
    "adam": (optim.Adam, 0.003, {}),
    "adadelta": (optim.Adadelta, 1.0, {}),
}
DATA = ("digits", "moons", "spirals")


class DemoError(Exception):
    """A problem to report in one line, without a traceback."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise DemoError(message)


def positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value

    return parse


def parser():
    top = Parser(prog="chainrule", description="chainrule: reverse-mode autodiff on NumPy.")
    commands = top.add_subparsers(dest="command", required=True, parser_class=Parser)
    demo = commands.add_parser("demo", help="train an MLP end to end and write its pictures")
    demo.add_argument("--data", choices=DATA, default="digits")
    demo.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    demo.add_argument("--epochs", type=positive(int), default=20)
    demo.add_argument("--batch-size", type=positive(int), default=32)
    demo.add_argument("--lr", type=positive(float), default=None, help="default: the optimizer's own")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="chainrule-demo", help="folder for the pictures and the weights")
    return top


def load(name):
    if name == "digits":
        try:
            X, y = autograd.datasets.load_digits()
        except ImportError:
            raise DemoError("--data digits needs scikit-learn, which ships the digits: "
                            "pip install -e '.[demo]' (or run --data moons)") from None
        return X, y, [64, 64]
    if name == "moons":
        X, y = autograd.datasets.make_moons(1000, noise=0.1)
        return X, y, [32, 32]
    X, y = autograd.datasets.make_spirals(900, classes=3, noise=0.1)
    return X, y, [64, 64]


class Progress:
    """A bar per epoch with the running loss: tqdm's when installed, else a plain one
    (redrawn in place on a terminal; one line per epoch when the output is a file)."""

    def __init__(self, epoch, epochs, batches):
        self.epoch, self.epochs, self.batches = epoch, epochs, batches
        self.started = time.perf_counter()
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        self.bar = tqdm(total=batches, desc=f"epoch {epoch}/{epochs}", file=sys.stdout) if tqdm else None

    def update(self, batch, loss):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if batch == self.batches:
                self.bar.close()
            return
        if batch < self.batches and not sys.stdout.isatty():
            return
        done = 24 * batch // self.batches
        line = (f"epoch {self.epoch:>3}/{self.epochs} [{'#' * done}{'.' * (24 - done)}] loss {loss:.4f}  "
                f"{time.perf_counter() - self.started:5.2f}s")
        sys.stdout.write(("\r" if sys.stdout.isatty() else "") + line + ("\n" if batch == self.batches else ""))
        sys.stdout.flush()


def accuracy(model, X, y):
    with autograd.no_grad():
        return float((model(X).argmax(1).numpy() == y.numpy()).mean())


def demo(args):
    autograd.manual_seed(args.seed)
    X, y, hidden = load(args.data)
    classes = int(y.numpy().max()) + 1
    train, valid = random_split(TensorDataset(X, y), [0.8, 0.2])
    X_train, y_train = train.batch(numpy.arange(len(train)))
    X_valid, y_valid = valid.batch(numpy.arange(len(valid)))
    scaler = Standardize().fit(X_train)  # fitted on the training split only
    X_train, X_valid = scaler(X_train), scaler(X_valid)

    model = nn.MLP(X.shape[1], hidden, classes)
    optimizer_class, default_lr, options = OPTIMIZERS[args.optimizer]
    optimizer = optimizer_class(model.parameters(), lr=args.lr or default_lr, **options)
    criterion = nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(X_train, y_train), batch_size=args.batch_size, shuffle=True)
    print(f"chainrule demo: {args.data} ({len(train)} training, {len(valid)} validation samples), "
          f"MLP {X.shape[1]}-{'-'.join(map(str, hidden))}-{classes}, {args.optimizer} "
          f"lr={args.lr or default_lr}, {args.epochs} epochs of batches of {args.batch_size}")

    history = {"training loss": [], "validation loss": [], "training accuracy": [], "validation accuracy": []}
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        running, seen = 0.0, 0
        bar = Progress(epoch, args.epochs, len(loader))
        for batch, (inputs, targets) in enumerate(loader, 1):
            optimizer.zero_grad()
            loss = criterion(model(inputs), targets)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(targets)
            seen += len(targets)
            bar.update(batch, running / seen)
        model.eval()
        with autograd.no_grad():
            history["validation loss"].append(criterion(model(X_valid), y_valid).item())
        history["training loss"].append(running / seen)
        history["training accuracy"].append(accuracy(model, X_train, y_train))
        history["validation accuracy"].append(accuracy(model, X_valid, y_valid))
    print(f"training accuracy {history['training accuracy'][-1]:.1%}, "
          f"validation accuracy {history['validation accuracy'][-1]:.1%} "
          f"in {time.perf_counter() - started:.1f} s")
    write_outputs(args.out, model, criterion, X_train[:8], y_train[:8], history)


def write_outputs(folder, model, criterion, inputs, targets, history):
    os.makedirs(folder, exist_ok=True)
    written = []
    autograd.save(model.state_dict(), os.path.join(folder, "model.npz"))
    written.append("model.npz (the trained weights: autograd.load, then model.load_state_dict)")
    with open(os.path.join(folder, "curves.svg"), "w", encoding="utf-8") as file:
        file.write(line_chart([("loss", {k: v for k, v in history.items() if "loss" in k}),
                               ("accuracy", {k: v for k, v in history.items() if "accuracy" in k})]))
    written.append("curves.svg (loss and accuracy per epoch)")
    model.train()
    output, layers = viz.run_layers(model, inputs)  # each op labelled with its layer's name
    step_loss = criterion(output, targets)
    model.zero_grad()
    step_loss.backward(retain_graph=True)  # the parameters show this step's gradients, not the last batch's
    graph = viz.draw(step_loss, names={"input batch": inputs, "targets": targets, **dict(model.named_parameters()),
                                       "loss": step_loss}, layers=[*layers, (type(criterion).__name__, step_loss)])
    x1, x2, w1, w2, b = (autograd.Value(v, label=n) for v, n in
                         ((2.0, "x1"), (-1.0, "x2"), (0.5, "w1"), (-0.25, "w2"), (0.1, "b")))
    neuron = (w1 * x1 + w2 * x2 + b).sigmoid()
    neuron.label = "y"
    loss = (neuron - 1.0) ** 2
    loss.label = "L"
    if viz.dot_available():
        viz.save_svg(graph, os.path.join(folder, "graph.svg"))
        written.append("graph.svg (the computation graph of one training step)")
        trace_backward(loss).save_html(os.path.join(folder, "backprop.html"))
        written.append("backprop.html (backpropagation step by step, through one neuron)")
    else:
        with open(os.path.join(folder, "graph.dot"), "w", encoding="utf-8") as file:
            file.write(graph.source)
        written.append("graph.dot (Graphviz's dot is missing, so no SVG and no step-through; "
                       "sudo apt-get install graphviz)")
    print(f"wrote into {folder}/:\n  " + "\n  ".join(written))


def main(argv=None):
    try:
        args = parser().parse_args(argv)
        if args.command == "demo":
            demo(args)
        return 0
    except DemoError as error:
        print(f"chainrule: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chainrule: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
