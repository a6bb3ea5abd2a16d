"""Axis bookkeeping shared by reductions and shape ops."""

import builtins
import operator
import warnings

import numpy

from ..errors import ShapeError
from ..graph import program_stacklevel
from ..tensor import Tensor


def sizes_or_keyword(sizes, keyword, value):
    """A method's sizes as PyTorch's methods take them: ``x.view(2, 3)``, ``x.view((2, 3))`` or by
    keyword, ``x.view(size=(2, 3))``. Returns the positional form (``sizes``, or ``(value,)``), which
    the op then unpacks as it always did."""
    if value is None:
        return sizes
    if sizes:
        raise TypeError(f"{keyword} was given both positionally {sizes} and as {keyword}={value}")
    return (value,)


def int_or_ints(value, name="dims"):
    """An argument that is one int or a sequence of them (roll's shifts, movedim's dims) as a tuple. A NumPy
    integer or a 0-d integer tensor is one int, as PyTorch's argument parser reads it (``np.argmax`` gives one);
    a bool or a 0-d NumPy array is not (int_argument)."""
    if isinstance(value, (tuple, list)) or getattr(value, "ndim", 0) > 0:
        return tuple(value)
    return (int_argument(value, name=name, arrays=False),)


def int_argument(value, op=None, name="dim", position=None, arrays=True):
    """An argument PyTorch's parser reads as an int: a Python or NumPy integer, or an integer tensor of one
    element. A bool, a float, a floating tensor or a string is refused with PyTorch's TypeError, as
    "multinomial(): argument 'num_samples' (position 2) must be int, not float" (without the position for a
    function whose schema PyTorch names none, as "fft_fft(): argument 'dim' must be int, not tuple"; without the
    op's name where the caller does not know it, as dim_index). A 0-d NumPy integer array is one where the schema
    says SymInt (a count, a size: randperm's n); ``arrays=False`` refuses it, as PyTorch's plain int (a dim)."""
    if not isinstance(value, (bool, numpy.bool_) if arrays else (bool, numpy.bool_, numpy.ndarray)):
        try:
            return operator.index(value)
        except TypeError:
            pass
    where = "" if position is None else f" (position {position})"
    raise TypeError(f"{op or ''}{'(): ' if op else ''}argument '{name}'{where} must be int, not {type(value).__name__}")


def size_dim(dim, ndim):
    """``x.size(dim)``'s dim, read as PyTorch's parser reads it (True is no dim 1: int_argument), as an axis in
    [0, ndim), with PyTorch's IndexError otherwise (a 0-d tensor has no dim at all for size)."""
    dim = int_argument(dim, "size", "dim", 1, arrays=False)
    if not ndim:
        raise IndexError(f"Dimension specified as {dim} but tensor has no dimensions")
    return dim_index(dim, ndim)


def dim_index(dim, ndim):
    """One ``dim`` (negatives count from the end) as an axis in [0, ndim), with PyTorch's
    IndexError otherwise. A 0-d tensor accepts dims -1 and 0, as PyTorch's does. A dim is an int
    as PyTorch's parser reads one (int_argument): True is not dim 1, nor a NumPy array a dim."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        dim = int_argument(dim, arrays=False)
    span = builtins.max(ndim, 1)
    if not -span <= dim < span:
        if not -2**63 <= dim < 2**63:  # (PyTorch reads a dim as a C long long first)
            raise ValueError("Overflow when unpacking long long")
        raise IndexError(f"Dimension out of range (expected to be in range of [{-span}, {span - 1}], "
                         f"but got {dim})")
    return dim % span if ndim else 0


def normalize_dims(dim, ndim, empty_is_every=True):
    """``dim`` (None, an int or a tuple, negatives allowed) as a sorted tuple of axes.

    An empty tuple or list means every axis, as PyTorch's reductions read it (``x.sum(dim=())``
    is ``x.sum()``); ops for which it means none (squeeze, flip, any, all) pass
    ``empty_is_every=False``."""
    if dim is None:
        return tuple(range(ndim))
    if type(dim) in (tuple, list) and not dim:
        return tuple(range(ndim)) if empty_is_every else ()
    if type(dim) is tuple and len(dim) == 1 and type(dim[0]) is int:
        dim = dim[0]
    if type(dim) is int and -ndim <= dim < ndim:  # the common case, one axis in range, without the checks
        return (dim % ndim,)
    if not isinstance(dim, (int, tuple, list)) and hasattr(dim, "__index__"):  # a NumPy integer, a 0-d tensor
        return normalize_dims(int_argument(dim, arrays=False), ndim, empty_is_every)
    if ndim == 0:  # a 0-d tensor accepts dim 0 and -1, as PyTorch, and has no axis to reduce
        for d in (dim,) if isinstance(dim, int) else tuple(dim):
            if d not in (0, -1):
                raise IndexError(f"Dimension out of range (expected to be in range of [-1, 0], but got {d})")
        return ()
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    axes = [dim_index(d, ndim) for d in dims]
    if ndim == 0:  # a scalar's dim 0 (or -1) is the scalar itself: nothing to reduce over
        return ()
    if len(set(axes)) < len(axes):
        repeated = next(a for a in axes if axes.count(a) > 1)
        raise RuntimeError(f"dim {repeated} appears multiple times in the list of dims")
    return tuple(sorted(axes))


def inverse_permutation(dims):
    """The axes that undo the permutation ``dims``: x.transpose(dims).transpose(inverse_permutation(dims)) is x."""
    inverse = [0] * len(dims)
    for position, axis in enumerate(dims):
        inverse[axis] = position
    return tuple(inverse)


def kept_shape(shape, axes):
    """``shape`` with the reduced ``axes`` kept as size 1 (keepdim=True's shape)."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def unbiased_overload(name, dim, unbiased, keepdim, correction):
    """PyTorch's ``var(input, unbiased)`` overload: a bool where ``dim`` stands is ``unbiased``
    (``torch.std(x, False)`` is the population std, not the std over dim 0). That overload takes
    nothing else, so a bool dim beside other arguments raises PyTorch's TypeError. Returns
    (dim, unbiased)."""
    if not isinstance(dim, bool):
        return dim, unbiased
    if unbiased is not None or keepdim or correction is not None:
        raise TypeError(f"{name}(): a bool in dim's place is the {name}(input, unbiased) overload, "
                        "which takes no dim, keepdim or correction")
    return None, dim


def matrices_only(x, name, conjugates=False):
    """PyTorch's checks of x.mT, x.mH and x.adjoint(): a 1-d tensor is refused; a 0-d one is still taken (as
    itself, or its conjugate), with PyTorch's deprecation warning. True when x is 0-d."""
    if x.ndim == 1:
        raise ShapeError(f"tensor.{name} is only supported on matrices or batches of matrices. Got 1-D tensor.")
    if x.ndim == 0:
        action = "Consider using x.conj()." if conjugates else "This function is the identity in these cases."
        warnings.warn(f"{'Tensor.' if name[0] == 'm' else ''}{name} is deprecated on 0-D tensors. {action}",
                      UserWarning, stacklevel=program_stacklevel())
        return True
    return False


def extremum_overload(name, args, kwargs):
    """PyTorch's three overloads of max and min as (dim, keepdim, other): ``max(input)``, ``max(input, other)``
    (the elementwise maximum) and ``max(input, dim, keepdim=False)``. A tensor alone in dim's place is ``other``;
    given by keyword (``dim=``), or beside a keepdim, it is a dim, which PyTorch's parser takes only as an int: a
    0-d integer tensor (its ``__index__``), not a float, bool or 1-element one."""
    if len(args) > 2:
        raise TypeError(f"{name}() takes at most 2 positional arguments after the tensor ({len(args)} given)")
    given = dict(zip(("dim", "keepdim"), args))
    for keyword, value in kwargs.items():
        if keyword not in ("dim", "keepdim", "other"):
            raise TypeError(f"{name}() got an unexpected keyword argument '{keyword}'")
        if keyword in given:
            raise TypeError(f"{name}() got multiple values for argument '{keyword}'")
        given[keyword] = value
    if "other" in given or (len(given) == 1 and args and isinstance(args[0], Tensor)):
        if len(given) > 1:
            raise TypeError(f"{name}(input, other) takes no dim or keepdim (got {', '.join(sorted(given))})")
        return None, False, given.get("other", args[0] if args else None)
    dim, keepdim = given.get("dim"), given.get("keepdim", False)
    if "dim" not in given and "keepdim" in given:  # (max(input) has no keepdim: PyTorch refuses it without a dim)
        raise TypeError(f"{name}() received an invalid combination of arguments - got keepdim={keepdim!r} without "
                        f"a dim: {name}(input) takes no keepdim, {name}(input, dim, keepdim=False) needs the dim")
    if "dim" in given and dim is None:  # (None is not max(input)'s dim: that overload has none)
        raise TypeError(f"{name}(): argument 'dim' must be int, not NoneType (leave dim out to reduce every element)")
    if isinstance(dim, Tensor) and (dim._data.ndim or dim._data.dtype.kind not in "iu"):
        raise TypeError(f"{name}(): argument 'dim' must be int, not Tensor (a 0-d integer tensor is read as an int; "
                        f"got one of dtype {dim._data.dtype} and shape {tuple(dim._data.shape)})")
    if dim is not None and type(dim) is not int and not isinstance(dim, Tensor):  # (a NumPy integer will do)
        dim = int_argument(dim, name, "dim", arrays=False)
    if type(keepdim) is not bool:  # (nor a NumPy bool, as PyTorch's parser)
        kind = type(keepdim)
        given = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
        raise TypeError(f"{name}(): argument 'keepdim' must be bool, not {given}")
    return dim, keepdim, None
