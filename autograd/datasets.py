"""Small data sets that need no download: generated from the global generator
(``manual_seed`` repeats them), or shipped inside an installed package.

Each returns (X, y): X a float32 Tensor of shape (n, features), y an int64
Tensor of labels (a float32 target for ``make_regression``), ready for
``TensorDataset``.
"""

import numpy

from .random import generator
from .tensor import tensor_from


def _pack(X, y, regression=False):
    return tensor_from(X.astype(numpy.float32)), tensor_from(y.astype(numpy.float32 if regression else numpy.int64))


def _counts(n_samples, classes):
    return [n_samples // classes + (1 if i < n_samples % classes else 0) for i in range(classes)]


def make_moons(n_samples=100, noise=0.0):
    """Two interleaving half circles (labels 0 and 1), with Gaussian noise of std ``noise``."""
    rng = generator()
    outer, inner = _counts(n_samples, 2)
    t_outer = numpy.linspace(0, numpy.pi, outer)
    t_inner = numpy.linspace(0, numpy.pi, inner)
    X = numpy.concatenate([numpy.stack([numpy.cos(t_outer), numpy.sin(t_outer)], 1),
                           numpy.stack([1 - numpy.cos(t_inner), 0.5 - numpy.sin(t_inner)], 1)])
    y = numpy.concatenate([numpy.zeros(outer), numpy.ones(inner)])
    X = X + rng.normal(0, noise, X.shape) if noise else X
    order = rng.permutation(n_samples)
    return _pack(X[order], y[order])


def make_circles(n_samples=100, noise=0.0, factor=0.8):
    """A circle inside a larger one (labels 0 outer, 1 inner); ``factor`` is their radius ratio."""
    if not 0 <= factor < 1:
        raise ValueError("'factor' has to be between 0 and 1.")
    rng = generator()
    outer, inner = _counts(n_samples, 2)
    t_outer = numpy.linspace(0, 2 * numpy.pi, outer, endpoint=False)
    t_inner = numpy.linspace(0, 2 * numpy.pi, inner, endpoint=False)
    X = numpy.concatenate([numpy.stack([numpy.cos(t_outer), numpy.sin(t_outer)], 1),
                           factor * numpy.stack([numpy.cos(t_inner), numpy.sin(t_inner)], 1)])
    y = numpy.concatenate([numpy.zeros(outer), numpy.ones(inner)])
    X = X + rng.normal(0, noise, X.shape) if noise else X
    order = rng.permutation(n_samples)
    return _pack(X[order], y[order])


def make_spirals(n_samples=300, classes=3, noise=0.2, turns=1.0):
    """``classes`` interleaved spiral arms (the classic test of a non-linear classifier)."""
    rng = generator()
    X, y = [], []
    for label, count in enumerate(_counts(n_samples, classes)):
        radius = numpy.linspace(0.0, 1.0, count)
        angle = (numpy.linspace(0, 2 * numpy.pi * turns, count) + label * 2 * numpy.pi / classes
                 + rng.normal(0, noise, count))
        X.append(numpy.stack([radius * numpy.sin(angle), radius * numpy.cos(angle)], 1))
        y.append(numpy.full(count, label))
    order = rng.permutation(n_samples)
    return _pack(numpy.concatenate(X)[order], numpy.concatenate(y)[order])


def make_blobs(n_samples=100, centers=3, n_features=2, cluster_std=1.0, center_box=(-10.0, 10.0)):
    """Gaussian clusters around ``centers`` (a count, drawn in center_box, or an array)."""
    rng = generator()
    centers = (rng.uniform(*center_box, (centers, n_features)) if isinstance(centers, int)
               else numpy.asarray(centers, dtype=float))
    X, y = [], []
    for label, count in enumerate(_counts(n_samples, len(centers))):
        X.append(centers[label] + rng.normal(0, cluster_std, (count, centers.shape[1])))
        y.append(numpy.full(count, label))
    order = rng.permutation(n_samples)
    return _pack(numpy.concatenate(X)[order], numpy.concatenate(y)[order])


def make_regression(n_samples=100, n_features=1, noise=0.0, bias=0.0):
    """y = X w + bias + noise for a random w: returns (X, y, w)."""
    rng = generator()
    X = rng.normal(size=(n_samples, n_features))
    weights = rng.uniform(-3, 3, n_features)
    y = X @ weights + bias + (rng.normal(0, noise, n_samples) if noise else 0)
    X, y = _pack(X, y, regression=True)
    return X, y, tensor_from(weights.astype(numpy.float32))


def load_digits():
    """The 8x8 handwritten digits (1797 images, 10 classes) that ship inside scikit-learn:
    X of shape (1797, 64) with values 0..16, y the digit. Needs scikit-learn
    (``pip install 'chainrule[demo]'``); nothing is downloaded."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise ImportError("load_digits needs scikit-learn, which carries the digits inside its package: "
                          "pip install 'chainrule[demo]' (or pip install scikit-learn)") from None
    digits = sklearn_digits()
    return _pack(digits.data, digits.target)
