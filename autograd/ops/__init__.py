"""The primitive ops, grouped by kind. Importing the package binds the names each
op declares (``autograd.ops.names``) as Tensor methods."""

from ..tensor import Tensor
from . import (  # noqa: F401  (each declares its names)
    activations,
    arithmetic,
    arranging,
    bessel,
    bilinear,
    broadcasting,
    clamping,
    conjugation,
    contractions,
    conversion,
    convolution,
    cumulative,
    decompositions,
    diagonals,
    dirichlet_draw,
    distances,
    dlpack,
    dropout,
    elementwise,
    elementwise_unary,
    embedding,
    extrema,
    functions,
    gamma,
    hardswish,
    hashing,
    householder,
    in_place_arithmetic,
    incomplete_gamma,
    index_errors,
    index_vectors,
    indexing,
    inverses,
    linalg,
    losses,
    lu,
    masking,
    matrix_exp,
    normalization,
    norms,
    numbers,
    operators,
    pixel_shuffle,
    pointwise,
    pointwise_pairs,
    pooling,
    predicates,
    promotion,
    quantization,
    reductions,
    regions,
    reshaping_in_place,
    rounding,
    runtime_checks,
    sampling,
    scaled_products,
    shape,
    short_time_fourier,
    sorting,
    special,
    splitting,
    standard_gamma,
    statistics,
    strided,
    subscripts,
    svd,
    triangular,
    zeta,
)
from .names import FUNCTIONS, INPLACE, METHODS


def _in_place(name, function):
    def method(self, *args, **kwargs):
        return self._write_back(function, args, kwargs, name)

    method.__name__ = name
    method.__doc__ = f"x.{name}(...) writes x.{name[:-1]}(...) into x (recorded, as PyTorch's)."
    return method


def bind_tensor_methods():
    """Attach every declared method to Tensor. A name tensor.py defines itself (the write
    door's fast in-place methods) is not replaced."""
    for name, function in METHODS.items():
        if name not in Tensor.__dict__:
            setattr(Tensor, name, function)
    for name, function in INPLACE.items():
        if name not in Tensor.__dict__:
            setattr(Tensor, name, _in_place(name, function))


bind_tensor_methods()


def __getattr__(name):
    """``autograd.ops.<namespace>``, PyTorch's ``torch.ops``: the operators ``autograd.library.custom_op`` made in
    that namespace, and ``aten``'s (the library's functions by their ATen names). Other names raise AttributeError,
    so ``from . import submodule`` still imports the submodule."""
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ..library import op_namespace  # (loaded on first use)

    return op_namespace(name)
