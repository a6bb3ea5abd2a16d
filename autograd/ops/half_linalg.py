"""PyTorch's CPU linear algebra has no float16 kernels (LAPACK has none): each function refuses a float16
matrix with the error PyTorch's gives, where NumPy would raise a TypeError of its own or compute in
float16 (the LU, LDL and triangular routines here are NumPy code that would)."""

import functools

from ..backend import float16


def refuses_half(refusal):
    """Decorator for a function whose first argument is a matrix: ``refusal`` is PyTorch's kernel name
    ("lu_cpu": NotImplementedError '"lu_cpu" not implemented for 'Half''), or a whole RuntimeError
    message (holding a space)."""

    def decorate(function):
        first = function.__code__.co_varnames[0]  # the matrix's name, PyTorch's keyword: A (linalg.svd) or input

        @functools.wraps(function)
        def checked(*args, **kwargs):
            matrix = args[0] if args else kwargs.get(first)
            if getattr(matrix, "dtype", None) == float16:
                if " " in refusal:
                    raise RuntimeError(refusal.format(shape=list(matrix.shape)))
                raise NotImplementedError(f"\"{refusal}\" not implemented for 'Half'")
            return function(*args, **kwargs)

        return checked

    return decorate


def low_precision(name):
    """PyTorch's refusal of the functions that check the dtype before any kernel."""
    return f"{name}: Low precision dtypes not supported. Got Half"


FLOAT_OR_DOUBLE = "This function doesn't handle types other than float and double"
PINV = ("linalg.pinv(Half{{{shape}}}): expected a tensor with 2 or more dimensions of float, double, cfloat or "
        "cdouble types")
