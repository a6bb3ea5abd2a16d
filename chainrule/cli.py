"""The ``chainrule`` command (also ``python -m chainrule``): ``chainrule demo`` trains an
MLP end to end and writes what it saw into ``--out``.

    chainrule demo                          # the 8x8 digits, Adam, a few seconds
    chainrule demo --data moons --optimizer nesterov --epochs 40
    chainrule demo --model cnn              # a small convolutional network on the digits
    chainrule predict --model chainrule-demo    # reload the model, report its validation accuracy
    mpiexec -n 2 chainrule demo --distributed    # data-parallel over MPI (the distributed extra)
"""

import argparse
import contextlib
import math
import os
import sys
import time
import warnings

import numpy

import autograd
import nn
import optim
from autograd import viz
from autograd.data import DataLoader, TensorDataset, random_split
from autograd.trace import trace_backward
from autograd.transforms import Standardize
from chainrule.curves import DEMO_EXTRA, write_curves
from chainrule.digits_cnn import DigitsCNN
from chainrule.model_file import read_model, save_model

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
MODELS = ("mlp", "cnn")


class DemoError(Exception):
    """A problem to report in one line, without a traceback (exit status 2)."""


class Diverged(Exception):
    """The loss stopped being a finite number (exit status 1)."""

    def __init__(self, epoch):
        super().__init__(f"loss diverged at epoch {epoch}: try a smaller --lr")


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise DemoError(message)


def positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not math.isfinite(value):  # nan slips past `value <= 0`
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value

    return parse


def parser():
    top = Parser(prog="chainrule", description="chainrule: reverse-mode autodiff on NumPy.",
                 epilog="run `chainrule COMMAND --help` for a command's options")
    top.add_argument("--version", action="version", version=f"chainrule {autograd.version.chainrule}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    demo = commands.add_parser("demo", help="train an MLP end to end and write its pictures",
                               description="Train an MLP end to end and write its pictures and weights into --out.")
    demo.add_argument("--data", choices=DATA, default="digits",
                      help="the data set: the 8x8 digits (needs the demo extra) or a 2-D toy (default: digits)")
    demo.add_argument("--model", choices=MODELS, default="mlp",
                      help="mlp: the lecture's multi-layer perceptron; cnn: convolutional, for the digits "
                           "(default: mlp)")
    demo.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam", help="default: adam")
    demo.add_argument("--epochs", type=positive(int), default=20, help="passes over the training split (default: 20)")
    demo.add_argument("--batch-size", type=positive(int), default=32, help="samples per step (default: 32)")
    demo.add_argument("--lr", type=positive(float), default=None, help="learning rate (default: the optimizer's own)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seeds the data, the split, the initial weights and the shuffling (default: 0)")
    demo.add_argument("--out", default="chainrule-demo", help="folder for the pictures and the weights "
                      "(created if missing; default: chainrule-demo)")
    demo.add_argument("--distributed", action="store_true",
                      help="data-parallel training over MPI: run as mpiexec -n N chainrule demo --distributed")
    add_predict(commands)
    return top


def add_predict(commands):
    predict = commands.add_parser("predict", help="reload a trained model and report its validation accuracy",
                                  description="Reload DIR/model.npz and score it on the validation split "
                                  "the demo held out (the same data set and seed rebuild the same split).")
    predict.add_argument("--model", required=True, metavar="DIR",
                         help="the demo's --out folder (or the model.npz in it)")
    predict.add_argument("--data", choices=DATA, default=None, help="default: the data set the model trained on")


def load(name):
    if name == "digits":
        try:
            X, y = autograd.datasets.load_digits()
        except ImportError:
            raise DemoError("--data digits needs scikit-learn, which ships the digits: "
                            f"{DEMO_EXTRA} (or run --data moons)") from None
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

    def close(self):
        """End the bar early (the loss diverged)."""
        if self.bar is not None:
            self.bar.close()
        elif sys.stdout.isatty():
            sys.stdout.write("\n")


def accuracy(model, X, y):
    with autograd.no_grad():
        return float((model(X).argmax(1).numpy() == y.numpy()).mean())


def split(data, seed):
    """The demo's data set and its 80/20 training/validation split, drawn from ``seed``."""
    autograd.manual_seed(seed)
    X, y, hidden = load(data)
    train, valid = random_split(TensorDataset(X, y), [0.8, 0.2])
    return X, y, hidden, train, valid


def check_out(folder):
    """Create ``folder`` and make sure files can be written there, before any training."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise DemoError(f"--out {folder}: cannot create the folder ({error.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DemoError(f"--out {folder}: the folder is not writable")


@contextlib.contextmanager
def quiet_numerics():
    """NumPy's overflow and invalid-value RuntimeWarnings stay inside: a diverging loss is
    reported once, as Diverged."""
    with numpy.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def demo(args):
    check_out(args.out)
    X, y, hidden, train, valid = split(args.data, args.seed)
    classes = int(y.numpy().max()) + 1
    X_train, y_train = train.batch(numpy.arange(len(train)))
    X_valid, y_valid = valid.batch(numpy.arange(len(valid)))
    scaler = Standardize().fit(X_train)  # fitted on the training split only
    X_train, X_valid = scaler(X_train), scaler(X_valid)

    if args.model == "cnn" and args.data != "digits":
        raise DemoError(f"--model cnn needs images: use --data digits (not {args.data})")
    model = DigitsCNN(classes) if args.model == "cnn" else nn.MLP(X.shape[1], hidden, classes)
    shape = "CNN conv8-conv16" if args.model == "cnn" else "MLP " + "-".join(map(str, [X.shape[1], *hidden]))
    optimizer_class, default_lr, options = OPTIMIZERS[args.optimizer]
    optimizer = optimizer_class(model.parameters(), lr=args.lr or default_lr, **options)
    criterion = nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(X_train, y_train), batch_size=args.batch_size, shuffle=True)
    print(f"chainrule demo: {args.data} ({len(train)} training, {len(valid)} validation samples), "
          f"{shape}-{classes}, {args.optimizer} "
          f"lr={args.lr or default_lr}, {args.epochs} epochs of batches of {args.batch_size}")

    history = {"training loss": [], "validation loss": [], "training accuracy": [], "validation accuracy": []}
    started = time.perf_counter()
    try:
        for epoch in range(1, args.epochs + 1):
            model.train()
            running, seen = 0.0, 0
            bar = Progress(epoch, args.epochs, len(loader))
            for batch, (inputs, targets) in enumerate(loader, 1):
                optimizer.zero_grad()
                loss = criterion(model(inputs), targets)
                if not math.isfinite(value := loss.item()):
                    bar.close()
                    raise Diverged(epoch)
                loss.backward()
                optimizer.step()
                running += value * len(targets)
                seen += len(targets)
                bar.update(batch, running / seen)
            model.eval()
            with autograd.no_grad():
                validation_loss = criterion(model(X_valid), y_valid).item()
            if not math.isfinite(validation_loss):
                raise Diverged(epoch)
            history["validation loss"].append(validation_loss)
            history["training loss"].append(running / seen)
            history["training accuracy"].append(accuracy(model, X_train, y_train))
            history["validation accuracy"].append(accuracy(model, X_valid, y_valid))
    except Diverged:
        print(f"wrote into {args.out}/:\n  " + "\n  ".join(write_curves(args.out, history)))
        raise
    print(f"training accuracy {history['training accuracy'][-1]:.1%}, "
          f"validation accuracy {history['validation accuracy'][-1]:.1%} "
          f"in {time.perf_counter() - started:.1f} s")
    write_outputs(args.out, model, criterion, X_train[:8], y_train[:8], history,
                  saved=recipe(args, architecture(args.model, X.shape[1], hidden, classes), scaler))


def architecture(model, in_features, hidden_sizes, out_features):
    """The architecture model.npz records: the class (chainrule.model_file.MODELS) and its arguments."""
    if model == "cnn":
        return {"model": "DigitsCNN", "arguments": {"classes": out_features}}
    return {"model": "MLP", "arguments": {"in_features": in_features, "hidden_sizes": hidden_sizes,
                                          "out_features": out_features}}


def recipe(args, architecture, scaler):
    """What write_outputs saves beside the weights so that the model reloads and predict rebuilds its split."""
    return {"architecture": architecture, "standardize": scaler, "data": args.data, "seed": args.seed}


def predict(args):
    """Reload ``args.model`` and score it on the validation split its demo held out."""
    try:
        model, standardize, about = read_model(args.model)
    except (OSError, ValueError, KeyError) as error:
        raise DemoError(f"--model {args.model}: cannot read the model ({error})") from None
    data = args.data or about["data"]
    valid = split(data, about["seed"])[-1]
    X_valid, y_valid = valid.batch(numpy.arange(len(valid)))
    if X_valid.shape[1] != standardize.mean.shape[0]:
        raise DemoError(f"--data {data} has {X_valid.shape[1]} features, but the model takes "
                        f"{standardize.mean.shape[0]}")
    score = accuracy(model, standardize(X_valid), y_valid)
    print(f"validation accuracy {score:.1%} ({len(y_valid)} samples of {data}, split by seed {about['seed']})")


def write_outputs(folder, model, criterion, inputs, targets, history, saved=None):
    """``saved``: architecture, fitted standardize, data and seed, for a model.npz that reloads
    (without it, the weights alone)."""
    os.makedirs(folder, exist_ok=True)
    written = []
    if saved is None:
        autograd.save(model.state_dict(), os.path.join(folder, "model.npz"))
        written.append("model.npz (the trained weights: autograd.load, then model.load_state_dict)")
    else:
        save_model(os.path.join(folder, "model.npz"), model, saved["architecture"], saved["standardize"],
                   data=saved["data"], seed=saved["seed"], validation_accuracy=history["validation accuracy"][-1])
        written.append("model.npz (the model and its input scaling: chainrule.load_model; chainrule predict)")
    written += write_curves(folder, history)
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
        top = parser()
        args = top.parse_args(argv)
        if args.command is None:  # `chainrule` alone: usage and the commands, argparse's status
            top.print_help(sys.stderr)
            return 2
        with quiet_numerics():
            if args.command == "demo" and args.distributed:
                from chainrule import distributed_demo

                distributed_demo.train(args)
            elif args.command == "demo":
                demo(args)
            elif args.command == "predict":
                predict(args)
        return 0
    except DemoError as error:
        print(f"chainrule: error: {error}", file=sys.stderr)
        return 2
    except Diverged as error:
        print(f"chainrule: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("chainrule: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
