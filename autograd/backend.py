"""The one place that names the array module.

Every op computes with ``xp``. It is NumPy unless the environment variable
``CHAINRULE_ARRAY_MODULE`` names another module with NumPy's interface
(``cupy``, say) before ``autograd`` is imported; no op needs editing for that.
"""

import importlib
import os

import numpy

xp = importlib.import_module(os.environ.get("CHAINRULE_ARRAY_MODULE", "numpy"))

float32 = numpy.dtype("float32")
float64 = numpy.dtype("float64")
float16 = numpy.dtype("float16")
int64 = numpy.dtype("int64")
int32 = numpy.dtype("int32")
bool_ = numpy.dtype("bool")

_default_dtype = float32


def set_default_dtype(dtype):
    """Set the floating dtype that Python floats and lists become (float32 to start)."""
    global _default_dtype
    dtype = numpy.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"default dtype must be a floating dtype, got {dtype}")
    _default_dtype = dtype


def get_default_dtype():
    """The floating dtype that Python floats and lists become."""
    return _default_dtype


def to_numpy(array):
    """A NumPy copy of an array of the array module (itself when it is NumPy's)."""
    return array.get() if hasattr(array, "get") else numpy.asarray(array)
