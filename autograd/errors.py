"""Exception types shared across the package."""

import re

from .sparse_layout import is_sparse


class ShapeError(RuntimeError, ValueError):
    """Shapes that do not fit together (a reshape, cat, stack, expand or permute that cannot be).

    PyTorch raises RuntimeError here; NumPy, and chainrule's earlier messages, ValueError.
    Being both, it is caught by ``except RuntimeError`` in PyTorch programs and by
    ``except ValueError`` in NumPy-minded ones."""


class DtypeError(RuntimeError, TypeError):
    """A dtype an operation cannot take (an integer tensor asked to require grad, a float result
    written into an integer tensor). PyTorch raises RuntimeError; Python's habit is TypeError:
    being both, it is caught either way."""


class IndexRangeError(RuntimeError, IndexError):
    """A position past the size of the dim it indexes (index_select, gather, index_add, ...). PyTorch raises
    IndexError from some of these kernels and RuntimeError from others, even for one op along another dim
    (index_select along dim 0 or 1): being both, it is caught either way."""


class NotATensorError(TypeError):
    """An argument that must be a Tensor is something else: most often a NumPy array given to a
    layer or an op (PyTorch raises TypeError, "must be Tensor, not numpy.ndarray")."""


def broadcast_mismatch(*shapes):
    """PyTorch's sentence for the first pair of sizes that do not broadcast, counted from the last dim ("" when
    the shapes broadcast)."""
    ndim = max(len(s) for s in shapes)
    for dim in range(ndim - 1, -1, -1):
        sizes = [s[dim - ndim + len(s)] for s in shapes if dim - ndim + len(s) >= 0]
        stretched = [n for n in sizes if n != 1]
        if len(set(stretched)) > 1:
            other = next(n for n in stretched if n != stretched[0])  # (of three shapes, the first two may agree)
            return (f"The size of tensor a ({stretched[0]}) must match the size of tensor b ({other}) at "
                    f"non-singleton dimension {dim}")
    return ""


def refuse_unbroadcastable(*shapes):
    """PyTorch's RuntimeError (a ShapeError) naming the first sizes of ``shapes`` that do not broadcast, where NumPy
    would raise its ValueError; nothing when they broadcast."""
    mismatch = broadcast_mismatch(*shapes)
    if mismatch:
        raise ShapeError(mismatch)


def not_a_tensor(where, i, argument):
    """The NotATensorError for positional argument i (from 0) of ``where``."""
    if is_sparse(argument):  # (PyTorch's error for an op with no sparse kernel)
        return NotImplementedError(f"Could not run '{where}' with arguments from the 'SparseCPU' backend: argument "
                                   f"{i + 1} is a sparse tensor (size {tuple(argument.shape)}), which {where} does "
                                   "not take; call .to_dense() first")
    kind = f"{type(argument).__module__}.{type(argument).__name__}".removeprefix("builtins.")
    shape = getattr(argument, "shape", None)
    if shape is None:
        return NotATensorError(f"{where}: argument {i + 1} must be a Tensor, not {kind}")
    return NotATensorError(f"{where}: argument {i + 1} must be a Tensor, not {kind} of shape {tuple(shape)}; "
                           "convert it with autograd.from_numpy(x) (shares its memory) or autograd.tensor(x) (a copy)")


def refuse_non_tensors(where, arguments, tensor_type):
    """Raise NotATensorError naming the first argument that is not a ``tensor_type``, if any (called
    once something failed on an argument the op could not read: never on the fast path)."""
    for i, argument in enumerate(arguments):
        if not isinstance(argument, tensor_type):
            raise not_a_tensor(where, i, argument)


class NotATensorDataError(NotATensorError, AttributeError):
    """Data that must be a Tensor is something else: ``nn.Parameter([1, 2])``, a list or NumPy array where
    PyTorch's Parameter calls ``data.detach()`` and so raises AttributeError ("'list' object has no attribute
    'detach'"). Being a NotATensorError (a TypeError) too, it is caught either way."""


class OutOfMemoryError(RuntimeError):
    """PyTorch's ``torch.OutOfMemoryError`` (also ``torch.cuda.OutOfMemoryError``): an allocation on a
    device failed. Programs catch it to retry with a smaller batch. Nothing here raises it on the
    CPU, where PyTorch raises a RuntimeError and NumPy a MemoryError; CuPy raises its own
    ``cupy.cuda.memory.OutOfMemoryError`` (a MemoryError), which this type does not catch."""


def refuse_bool_subtraction(x_is_bool, y_is_bool):
    """PyTorch subtracts no bools, tensors or Python's True/False (promotion would hide it: True - 1 is 0);
    its message depends on whether one operand or both are bools."""
    if x_is_bool and y_is_bool:
        raise DtypeError("Subtraction, the `-` operator, with two bool tensors is not supported. Use the `^` "
                         "or `logical_xor()` operator instead.")
    if x_is_bool or y_is_bool:
        raise DtypeError("Subtraction, the `-` operator, with a bool tensor is not supported. If you are trying to "
                         "invert a mask, use the `~` or `logical_not()` operator instead.")


def check_same_dtype(op, input, pytorchs_words=None, **parameters):
    """A layer's parameters (None where absent) must have its input's dtype, as PyTorch's refuse to
    mix them (no silent promotion: a float64 batch into a float32 model is a mistake to report).
    ``pytorchs_words``: (function, *arguments), where function(*arguments) is PyTorch's message, said first.
    (A tuple, not a closure: this runs at every layer call, and the words only when the dtypes differ.)"""
    for name, tensor in parameters.items():
        if tensor is not None and tensor.dtype != input.dtype:
            ours = f"{op}: the {name} is {tensor.dtype} but the input is {input.dtype}"
            if pytorchs_words is None:
                raise RuntimeError(f"{ours}; they must have the same dtype (convert one with .to())")
            words, *arguments = pytorchs_words
            raise RuntimeError(f"{words(*arguments)} ({ours}: convert one with .to())")


def refuse_unordered(value, op, message=None):
    """Complex numbers have no order: an op that compares them (max, sort, clamp, relu, <, softmax's shift)
    refuses them, as PyTorch's do, where NumPy would compare them part by part. ``value``: an array or
    a Python number; ``message``: PyTorch's own words, where the op has them."""
    if type(value) is complex or (getattr(value, "dtype", None) is not None and value.dtype.kind == "c"):
        raise NotImplementedError(message or f"{op} does not support complex inputs: complex numbers have no order")


def refuse_complex_extremum(value, op):
    """maximum, minimum, fmax and fmin (max and min of two tensors) refuse complex numbers in PyTorch's words."""
    refuse_unordered(value, op, f"{op} not implemented for complex tensors. (complex numbers have no order)")


def refuse_ragged(data):
    """PyTorch's error for nested sequences whose lengths disagree: the shape is read off the first elements,
    and the first element that does not fit it is named (a number where a sequence belongs: TypeError)."""

    def is_sequence(x):
        return isinstance(x, (list, tuple)) or (hasattr(x, "ndim") and hasattr(x, "__len__") and x.ndim > 0)

    sizes, first = [], data
    while is_sequence(first):
        sizes.append(len(first))
        if not len(first):
            break
        first = first[0]

    def check(seq, dim):
        if dim == len(sizes):
            return
        if not is_sequence(seq):
            raise TypeError(f"not a sequence: {type(seq).__name__} {seq!r:.30} at dim {dim}, where the first elements "
                            f"make a tensor of shape {sizes}")
        if len(seq) != sizes[dim]:
            raise ValueError(f"expected sequence of length {sizes[dim]} at dim {dim} (got {len(seq)})")
        for item in seq:
            check(item, dim + 1)

    check(data, 0)


_BACKWARD = re.compile(r"Backward(0$)?")  # (PyTorch says Exp for ExpBackward0, Max1 for MaxBackward1)


def op_word(node):
    """A node's op as PyTorch's in-place error names it: Exp for ExpBackward0, Max1 for MaxBackward1, Sort for the
    node sort's values come from."""
    return _BACKWARD.sub("", node.name())


def modified_in_place(dtype, shape, made_by, version, expected, why):
    """PyTorch's error for a tensor saved for backward and written in place since: its type and sizes, the node
    that made it (``made_by``, a grad_fn, or None for a leaf), its version now and the one saved (None where not
    known: more than one write came after), then ``why`` (chainrule's sentence on what to do)."""
    from .ops.conversion import type_name  # (an error's words: conversion builds on this module)

    which = ""
    if made_by is not None:  # (PyTorch names the node by its op: Exp for ExpBackward0)
        which = f", which is output {getattr(made_by, 'output_nr', 0)} of {op_word(made_by)},"
    saved = f"expected version {expected} instead" if expected is not None else \
        "expected an earlier version instead (it was written more than once since it was saved)"
    return RuntimeError("one of the variables needed for gradient computation has been modified by an inplace "
                        f"operation: [torch.{type_name(dtype)}Tensor {list(shape)}]{which} is at version {version}; "
                        f"{saved}. {why}")
