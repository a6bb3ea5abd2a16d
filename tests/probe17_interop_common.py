"""What the files of session 17's probe of tensors beside NumPy and plain Python
(tests/test_programs_probe17_interop_*.py: memory and the array protocol, Python values, training scripts,
NumPy-configured programs) share: ``dtype_name`` and ``kind`` (what a value is, in the same words for either
library), ``blobs`` (a small classification problem drawn by NumPy) and ``classifier`` (a small network for it)."""

import numpy as np


def dtype_name(dtype):
    """A dtype's name in either library (chainrule's print as NumPy's, PyTorch's as ``torch.float32``)."""
    return str(dtype).split(".")[-1]


def kind(value):
    """What a value is, the same words in either library: 'Tensor(float32)', 'ndarray(float64)', 'float', ..."""
    if hasattr(value, "detach") and hasattr(value, "dtype"):
        return f"Tensor({dtype_name(value.dtype)})"
    if isinstance(value, np.ndarray):
        return f"ndarray({value.dtype})"
    if isinstance(value, np.generic):
        return f"np.{type(value).__name__}"
    return type(value).__name__


def blobs(n=96, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((classes, features))
    y = rng.integers(0, classes, n)
    X = (centres[y] + rng.standard_normal((n, features))).astype(np.float32)
    return X, y


def classifier(m):
    return m.nn.Sequential(m.nn.Linear(5, 16), m.nn.ReLU(), m.nn.Linear(16, 3))
