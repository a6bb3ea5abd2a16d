"""The write door: every change to a tensor's memory passes here.

``WriteDoor`` is the base of ``Tensor`` that owns mutation (the style guide's one owner of that
rule): the in-place methods (``add_``, ``mul_``, ``fill_``, ``copy_``, ``+=``, ..., declared by
``ops/in_place_arithmetic.py``; every other ``op_`` writes op's result back with ``_write_back``),
``x[i] = v`` (``_write_at``) and the in-place shape changes (``_become``).

A write bumps the version (views share their base's), so a node that saved this tensor
can tell. When grad mode is on and the tensor or the value written requires grad, the
write is recorded as PyTorch records it: the new value is computed out of place from a
snapshot of the old one, written into this memory, and becomes this tensor's history
(and, for a view, its base's). A leaf that requires grad refuses in-place writes, and so does
an inference tensor outside ``inference_mode``.
"""

import math
import numbers
import warnings
import weakref

import numpy

from .backend import QUIET, address, float_error_mode, is_dense, xp
from .errors import DtypeError, ShapeError, op_word
from .graph import bump_version, modes, no_grad, program_stacklevel
from .meta import MetaArray
from .saved_tensor_hooks import allow_mutation_on_saved_tensors, preserve_saved


class WriteDoor:
    """The methods through which a Tensor's memory is written (``Tensor`` is the only subclass)."""

    __slots__ = ()

    def _write(self, operands, out_of_place, in_place=None, reads_old=True, overlapping_ok=False):
        """Change this tensor in place: ``out_of_place(old)`` gives the new value as a Tensor;
        ``in_place(array)``, where given, makes the same change on the array directly (the
        fast path, taken when nothing needs recording). A write whose new value does not read
        the old one (copy_) says ``reads_old=False``: a recorded write then copies nothing first.
        An expanded tensor, whose elements share memory, takes only the writes that say
        ``overlapping_ok`` (one value everywhere: fill_, zero_), as PyTorch's."""
        if 0 in self._data.strides:  # (overlapping's own first test, here saving a call)
            if type(self._data) is MetaArray:  # values it has not: the write is nothing, as PyTorch's meta kernels
                return self
            if not overlapping_ok:
                refuse_overlap(self._data)
        for operand in operands:  # (an operand and this tensor that are both arrays of their own cannot overlap)
            if isinstance(operand, WriteDoor) and (operand._data.base is not None or self._data.base is not None):
                refuse_partial_overlap(self._data, operand._data)
        self._before_write()
        if modes.grad_enabled and (self._requires_grad or _requires_grad(operands)):
            self._refuse_recorded_write()
            self._take(out_of_place(self._snapshot() if reads_old else None))
            return self
        if in_place is None:
            with no_grad():
                new = out_of_place(self)
            self._store(new)
        else:
            numpy_errors = float_error_mode.set(QUIET)  # (inf and NaN without NumPy's warnings, as an op's)
            try:
                in_place(self._data)
            except (TypeError, OverflowError, ValueError):  # NumPy refused (uint8 += int64: same_kind casting;
                # -1 · uint8; an output that does not broadcast): PyTorch's result dtype, then its casting rule
                # (uint8 += int64 wraps) and its errors
                with no_grad():
                    new = out_of_place(self)
                self._store(new)
            finally:
                float_error_mode.reset(numpy_errors)
        bump_version(self)
        return self

    def _before_write(self):
        """What every write checks first, whichever entry it takes: an inference tensor refuses a write outside
        inference_mode (before anything is written), and inside allow_mutation_on_saved_tensors what backward
        saved of this memory is copied before it changes."""
        if self._inference and not modes.inference:
            self._refuse_inference_write()
        if allow_mutation_on_saved_tensors.open_blocks:
            preserve_saved(self)

    def _refuse_inference_write(self):
        raise RuntimeError(
            "Inplace update to inference tensor outside InferenceMode is not allowed: this tensor of shape "
            f"{tuple(self.shape)} was made in inference_mode, where nothing records what changes it. You can "
            "make a clone to get a normal tensor before doing inplace update."
        )

    def _refuse_write_into_no_grad_view(self):
        view = ("A view was created" if self.grad_fn is None else  # (a view of one, made with grad mode on)
                f"Output 0 of {op_word(self.grad_fn)} is a view of a view which was created")
        raise RuntimeError(f"{view} {no_grad_view_words(self._made_in_no_grad, 'is being modified inplace')} (A "
                           f"view of shape {tuple(self.shape)}: its write would not be recorded, and the gradient "
                           "would leave it out.)")

    def _refuse_recorded_write(self):
        """What a write that is recorded refuses: a leaf that requires grad, a view of one, an output of a custom
        Function that shows one of its inputs (its history would replace the Function's backward), and a piece of a
        multi-output view op (split, unbind: see mark_several_views), and a view made under no_grad or in
        inference_mode, or a view of one (PyTorch's creation meta)."""
        if self._made_in_no_grad:
            self._refuse_write_into_no_grad_view()
        if self._made_by_function is not None:
            self._refuse_write_into_function_output()
        base = self._base
        if base is not None and base.grad_fn is None and base.requires_grad:  # (first: such a view without a
            raise RuntimeError(  # grad_fn, made before its base was asked to require grad, is a leaf too)
                f"a view of a leaf Variable that requires grad is being used in an in-place operation "
                f"(a view of shape {tuple(self.shape)} of a leaf of shape {tuple(base.shape)})"
            )
        if self.grad_fn is None and self.requires_grad:
            raise RuntimeError(
                f"a leaf Variable that requires grad is being used in an in-place operation "
                f"(a tensor of shape {tuple(self.shape)}): its gradient would belong to a value that "
                "no longer exists. Write it under autograd.no_grad() (a parameter update), or out of "
                "place (x = x + y)."
            )

    def _refuse_write_into_function_output(self):
        index, name, several = self._made_by_function
        if several and not self.requires_grad:  # a piece of a tensor that requires no grad, written with a value
            # that does: no node to name, so PyTorch's sentence for a view made in no_grad mode begins it
            written = "A view was created in no_grad mode and is being modified inplace with grad mode enabled."
        else:
            if name is None:  # a view of such an output: PyTorch names the view's own op
                index, name = 0, op_word(self.grad_fn)
            written = f"Output {index} of {name} is a view and is being modified inplace."
        if several:
            raise RuntimeError(
                f"{written} This view is the output of a function that returns multiple views. Such functions do not "
                "allow the output views to be modified inplace. You should replace the inplace operation by an "
                "out-of-place one.")
        raise RuntimeError(
            f"{written} This view was created inside a custom "
            "Function (or because an input was returned as-is) and the autograd logic to handle view+inplace would "
            "override the custom backward associated with the custom Function, leading to incorrect gradients. This "
            "behavior is forbidden. You can fix this by cloning the output of the custom Function.")

    def _snapshot(self):
        """The current value, copied, at this tensor's place in the graph: the input of a
        recorded in-place op, which must not change when the result is written here."""
        old = self._make(self._data.copy())
        old._requires_grad = self.requires_grad
        old.grad_fn = self._view_as_written().grad_fn
        return old

    def _view_as_written(self):
        """This tensor at its place in the graph, as a recorded write reads its old value. PyTorch's write
        through a view (CopySlices) hands the gradient for the old value to the base's node, copied into the
        view's region, without passing the view's own node. So the hooks registered on a view (on the tensor or
        its node) before the write do not see it (they still see those of ops that read the view before): a
        hooked view is read anew from its base. And where the view's windows share elements (unfold with a step
        below its size), each shared element takes one window's gradient, not their sum: ops/
        overlapping_view_read.py."""
        base, node = self._base, self.grad_fn
        if base is None or node is None:
            return self
        if shows_an_element_twice(self._data):
            return base._read_overlapping_view(self._view_chain)
        if node.hooks or node.pre_hooks or node.post_hooks:
            return base._replay_view(self._view_chain)
        return self

    def _store(self, new):
        """Copy a computed value into this memory (PyTorch's casting and broadcasting rules: a result of
        its dtype's category or a lower one is cast, so uint8 += int64 wraps; a higher one is refused)."""
        if new.dtype != self.dtype:
            _refuse_cast(new.dtype, self.dtype, self.shape)
        if new.shape != self.shape and xp.broadcast_shapes(new.shape, self.shape) != self.shape:
            raise RuntimeError(f"output with shape {tuple(self.shape)} doesn't match the broadcast "
                               f"shape {tuple(xp.broadcast_shapes(new.shape, self.shape))}")
        if overlapping(self._data):
            # an expanded tensor (masked_fill_, index_fill_): the elements the op changed, as PyTorch's kernels
            # write only those; the others would write their old values over memory that a changed one shares
            xp.copyto(self._data, new._data, where=new._data != self._data)
            return
        self._data[...] = new._data

    def _take(self, new):
        """Write a recorded value here and make it this tensor's history."""
        self._store(new)
        bump_version(self)
        old_node = self.grad_fn
        if new.dtype != self.dtype:
            new = new.to(self.dtype)
        if self._base is not None:
            self._rebase_view(new)
        else:
            if new.shape != self.shape:
                new = new.expand(self.shape)
            self.grad_fn = new.grad_fn
            self._requires_grad = new.requires_grad
        _move_retained_grad(self, old_node)
        _rederive_views(self._base if self._base is not None else self, self)

    def _rebase_view(self, new):
        """A write through a view changes its base: the base's new history replaces the viewed
        region by ``new``; the view is then re-derived from the new base."""
        base, chain = self._base, self._view_chain
        if not (new.requires_grad or base.requires_grad):
            return
        written = base._written_through_view(new, chain)
        old_base_node, base.grad_fn = base.grad_fn, written.grad_fn
        _move_retained_grad(base, old_base_node)
        base._requires_grad = True
        self.grad_fn = _regenerated_node(base, chain)
        self._requires_grad = True

    def _pass_flag_to_views(self):
        """A leaf's views made while it required no grad read its flag from then on (requires_grad_), as PyTorch's
        (whose views without a grad_fn require grad through their base): they require grad, but no gradient edge
        leads to them (a pass stores nothing there, as in a view made under no_grad), and a write into one is a
        write into a view of a leaf that requires grad, refused."""
        for view in list(self._views):
            if view.grad_fn is None and (view._no_gradient_edge or not view._requires_grad):
                view._requires_grad = view._no_gradient_edge = self._requires_grad

    def _adopt_view_of(self, source, op, params):
        """Mark this tensor, just computed by ``op`` from ``source``, as a view of its memory."""
        if source._inference:  # a view of an inference tensor is one, in any mode, and no view is tracked (PyTorch's
            self._inference = True  # inference tensors have no views: _is_view() is False, it is a leaf)
            if self._data.base is not None:
                self._version_cell = source._version_cell
            return
        if self._data.base is None:  # NumPy had to copy (a reshape of a strided array)
            return
        self._version_cell = source._version_cell  # a view and its base change together
        if source._made_by_function is not None:  # (a view of a custom Function's view output is refused writes too)
            self._made_by_function = (None, None, source._made_by_function[2])
        if not modes.grad_enabled:  # (a backward pass's own views): no write through it is recorded, so, with
            # grad mode on again, a recorded one is refused, and so is using it after a recorded write into its base
            # (_rederive_views): PyTorch's NO_GRAD_MODE view (the refusal names the mode)
            self._made_in_no_grad = "inference" if modes.inference else "no_grad"
            if source._requires_grad:  # it requires grad through its base, as PyTorch's (an inference tensor's
                # view does not), but no gradient edge leads to it: a pass stores nothing there (Tensor.receive)
                self._requires_grad = self._no_gradient_edge = not source._inference
        elif source._made_in_no_grad:  # a view of such a view is one too, as PyTorch's creation meta propagates
            self._made_in_no_grad = source._made_in_no_grad
        if source._base is None:
            self._base, self._view_chain = source, ((op, params),)
        else:
            self._base, self._view_chain = source._base, source._view_chain + ((op, params),)
        views = self._base._views
        if views is None:
            views = self._base._views = weakref.WeakSet()
        views.add(self)  # so a recorded write to the base (or a sibling view) re-derives this one

    def _write_back(self, function, args, kwargs, name=None):
        """x.op_(...): write x.op(...) into x (the in-place twins declared by the ops, ``name`` op_)."""
        overlapping_ok = name in DEPRECATED_ON_EXPANDED and overlapping(self._data)
        if overlapping_ok:
            _warn_expanded(name)
        return self._write(args, lambda old: function(old, *args, **kwargs), overlapping_ok=overlapping_ok)

    def _become(self, view, new_memory=False):
        """x.t_(), x.unsqueeze_(0), x.resize_(...): x takes the shape and strides of ``view`` (computed
        from x, with grad mode on so that a view of a view keeps its chain to the base) and, when
        the change is recorded, its history. As in PyTorch a leaf that requires grad refuses, and
        the version moves on (a node that saved x would see another shape). A base whose live
        views are replayed from its shape by recorded writes refuses too: their steps would no
        longer fit it. x.set_(y) says ``new_memory``: x shows other memory from now on, and the views
        made before keep the memory they showed (as ``x.data = y`` and PyTorch's set_)."""
        self._before_write()
        recorded = modes.grad_enabled and (self.requires_grad or view.requires_grad)
        if recorded:
            self._refuse_recorded_write()
        if new_memory:
            self._views = None
        elif self._base is None and self._views and any(other is not view and not other._made_in_no_grad
                                                          for other in self._views):  # (those are never replayed)
            raise RuntimeError(f"an in-place shape change of a tensor of shape {tuple(self.shape)} that has live "
                               "views: those views are defined on its current shape. Use the out-of-place op "
                               "(x = x.t()) or drop the views first")
        old_node = self.grad_fn
        self._data = view._data
        if recorded:
            self.grad_fn = view.grad_fn
            self._requires_grad = True
            _move_retained_grad(self, old_node)
        if self._base is not None:
            if view._base is self._base:
                self._view_chain = view._view_chain
            else:  # resize_: no view op leads there from the base, so it stops being a view
                if not xp.may_share_memory(view._data, self._base._data):  # (grown: new memory)
                    self._version_cell = [0, self._version_cell[1], 0]
                self._base = self._view_chain = None
        bump_version(self)
        return self

    def _write_at(self, index, value):
        """``self[index] = value`` once the index reads as PyTorch reads it (ops/shape.py's ``__setitem__``)."""
        if type(value) is float and (self._data.dtype.kind != "f" or not -3.4e38 <= value <= 3.4e38):
            _refuse_overflow(value, self._data.dtype)  # (a float into integers, or past float32's range: may overflow)
        index = _index(index)
        if 0 in self._data.strides:
            if type(self._data) is MetaArray:  # (as _write)
                return
            region = self._data[index]
            if not isinstance(region, xp.ndarray):  # one element by ints (NumPy's scalar): PyTorch's select and
                pass  # fill_, which neither warn nor refuse (one element overlaps nothing)
            elif region.base is None:  # an advanced index (its region is a copy): PyTorch's index_put_, which warns
                if overlapping(self._data):
                    _warn_expanded("index_put_")
            else:
                refuse_overlap(region)
        if isinstance(value, WriteDoor):  # (x[i] = v is x[i].copy_(v expanded to x[i]'s shape), an advanced index
            if is_basic_index(index):  # x.index_put_(i, v))
                region = self._data[index]
                refuse_partial_overlap(region, _broadcast_or_as_it_is(value._data, region.shape))
            else:
                refuse_partial_overlap(self._data, value._data)
        self._before_write()
        if modes.grad_enabled and (self.requires_grad or (isinstance(value, WriteDoor) and value.requires_grad)):
            if self._made_by_function is not None and is_basic_index(index):  # PyTorch writes through the view
                self[index]._refuse_write_into_function_output()  # x[index], and names its op (Select, Slice)
            if self.grad_fn is None and self.requires_grad and is_basic_index(index) \
                    and self._data[index].shape != self._data.shape:  # (x[0] = v on a leaf: PyTorch writes through
                self[index]._refuse_recorded_write()  # the view x[0], so refuses "a view of a leaf"; x[:] is x itself)
            self._refuse_recorded_write()
            from .operands import _operand  # (a recorded write: the rare path)

            if self._base is not None and shows_an_element_twice(self._data):
                region = self[index]
                if region._base is self._base:  # a basic index into overlapping windows (x.unfold(0, 3, 2)[:, 0]
                    region.copy_(_operand(value, region))  # = v): written through the narrower view, as PyTorch;
                    return  # the whole windows written back would put stale copies of shared elements over new ones
            self._take(self._view_as_written()._index_put(index, _operand(value, self)))
            return
        try:
            self._data[index] = _data(value)
        except (ValueError, TypeError, OverflowError) as error:  # what NumPy refuses, PyTorch's way
            self._data[index] = _written_value(self._data, index, value, error)
        bump_version(self)


# PyTorch's in-place ops that write into an expanded tensor with a deprecation warning, where the others refuse
DEPRECATED_ON_EXPANDED = frozenset({"masked_fill_", "index_fill_", "index_put_"})


def mark_several_views(pieces, op_name):
    """The pieces of a multi-output view op (split, chunk, unbind: PyTorch's MULTI_OUTPUT_NODE views), made with grad
    mode on, refuse recorded in-place writes as PyTorch's do ("Output 0 of Split is a view ..."): their history
    could not be rewritten without the other pieces'. Writes that nothing records (no_grad, nothing requiring grad,
    ``.data``, ``detach()``) still go through."""
    if modes.grad_enabled:
        for i, piece in enumerate(pieces):
            if piece._base is not None:
                piece._made_by_function = (i, op_name, True)
    return pieces


def overlapping(array):
    """Whether some elements of ``array`` are one element in memory: a dim of more than one element that
    steps 0 (an expanded tensor's; PyTorch's has_internal_overlap, which looks no further either)."""
    return 0 in array.strides and array.size > 1 and any(step == 0 and n > 1 for step, n in zip(array.strides,
                                                                                                array.shape))


def shows_an_element_twice(array):
    """Whether two positions of a strided array reach one memory element (Tensor.unfold's overlapping windows,
    an expanded tensor): with the strides sorted, one reaches an element the smaller ones' span already holds."""
    span = 0
    for stride, size in sorted((abs(s), n) for s, n in zip(array.strides, array.shape) if n > 1):
        if stride <= span:
            return True
        span += stride * (size - 1)
    return False


def refuse_overlap(array):
    """PyTorch's refusal of a write into memory that several elements of the tensor share."""
    if overlapping(array):
        raise RuntimeError("unsupported operation: more than one element of the written-to tensor refers to a single "
                           "memory location. Please clone() the tensor before performing the operation. (It has "
                           f"shape {tuple(array.shape)} and steps {tuple(s // array.itemsize for s in array.strides)}"
                           ": expanded.)")


def refuse_partial_overlap(written, read):
    """PyTorch's refusal of a write that reads memory it writes, in part (x[2:7] = x[0:5], x[1:].add_(x[:-1])):
    its kernels would read values already overwritten. Told as PyTorch tells it: for two tensors each laid out
    densely, their memory spans overlapping but not the same span in the same steps (a tensor written from
    itself is fine); other layouts are not refused (PyTorch's "too hard" to tell)."""
    if written is read or written.size == 0 or read.size == 0:
        return
    if (written.base is None and read.base is None) or not xp.may_share_memory(written, read):
        return  # (the common case: two arrays of their own, or disjoint spans)
    if not (is_dense(written) and is_dense(read)):
        return
    written_start, read_start = address(written), address(read)
    written_end, read_end = written_start + written.nbytes, read_start + read.nbytes
    if written_start == read_start and written_end == read_end and written.shape == read.shape and all(
            a == b for a, b, n in zip(written.strides, read.strides, written.shape) if n > 1):
        return  # (the same elements in the same order: each read before it is written; a dim of one has no step)
    if written_start < read_end and read_start < written_end:
        raise RuntimeError("unsupported operation: some elements of the input tensor and the written-to tensor refer "
                           "to a single memory location. Please clone() the tensor before performing the operation. "
                           f"(The written-to tensor of shape {tuple(written.shape)} and the input of shape "
                           f"{tuple(read.shape)} share part of their memory.)")


def _broadcast_or_as_it_is(array, shape):
    """array broadcast to ``shape``, as x[i] = v expands v first; as it is where it does not broadcast (the write
    will say so)."""
    try:
        return xp.broadcast_to(array, shape)
    except ValueError:
        return array


def is_basic_index(index):
    """Whether an index selects a view (ints, slices, None, Ellipsis only): NumPy's basic indexing."""
    if type(index) is int or type(index) is slice:  # x[t], x[a:b]: the common cases, at once
        return True
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, slice)) or p is None or p is Ellipsis for p in parts)


def _warn_expanded(name):
    warnings.warn(f"Use of {name} on expanded tensors is deprecated. Please clone() the tensor before performing this "
                  "operation. This also applies to advanced indexing e.g. tensor[indices] = tensor", UserWarning,
                  stacklevel=program_stacklevel())


def _refuse_cast(result, output, shape):
    """PyTorch's refusal to write a result of dtype ``result`` into a tensor of dtype ``output`` and
    ``shape`` in place: a float into integers, an integer into bools, a complex number into reals."""
    from .ops.conversion import type_name  # (the ops' table of PyTorch's dtype names; a rare path)
    from .ops.promotion import can_cast

    if not can_cast(result, output):
        raise DtypeError(f"result type {type_name(result)} can't be cast to the desired output type "
                         f"{type_name(output)} (in-place on a tensor of shape {tuple(shape)})")


def _refuse_overflow(value, dtype):
    """PyTorch's refusal of a Python number that ``dtype`` cannot hold (fill_): NaN, an infinity or a value out
    of range for integers (an unsigned dtype takes negative ints down to -max, wrapped), a finite value past the
    largest float of a floating dtype, a complex number with an imaginary part for a real dtype."""
    kind = dtype.kind
    if kind == "b":
        return
    if isinstance(value, numpy.generic):  # (a NumPy scalar compared with a Python float would be cast to its dtype)
        value = value.item()
    parts = (value.real, value.imag) if type(value) is complex else (value,)
    if type(value) is complex and kind != "c" and value.imag:
        fits = False
    elif kind in "iu":
        info = numpy.iinfo(dtype)
        low = -int(info.max) if kind == "u" and type(value) is int else int(info.min)
        fits = math.isfinite(parts[0]) and low <= parts[0] <= int(info.max)
    else:
        largest = float(numpy.finfo(dtype).max)
        fits = all(not math.isfinite(part) or abs(part) <= largest for part in parts)
    if not fits:
        raise RuntimeError(f"value cannot be converted to type {dtype} without overflow")


def _written_value(array, index, value, error):
    """What ``array[index] = value`` writes where NumPy refused it with ``error``, as PyTorch writes it: a
    Python integer out of the dtype's range is cast (-1 into uint8 is 255) or refused; a number the dtype
    cannot hold (NaN or inf into integers, a complex number into reals) and a value that does not broadcast
    to the region are RuntimeErrors, not NumPy's TypeError or ValueError."""
    if isinstance(error, OverflowError) and type(value) is int:
        from .reading_data import integers_cast

        return integers_cast(value, array.dtype)
    if isinstance(value, complex) and value.imag == 0:  # (a complex number without imaginary part is its real one)
        return value.real
    if isinstance(value, numbers.Number):
        raise RuntimeError(f"value cannot be converted to type {array.dtype} without overflow") from None
    if isinstance(error, ValueError):
        raise ShapeError(f"shape mismatch: value tensor of shape {list(numpy.shape(_data(value)))} cannot be "
                         f"broadcast to indexing result of shape {list(array[index].shape)}") from None
    raise error


def _rederive_views(base, written):
    """After a recorded write to ``base`` (or through its view ``written``), every other live view
    of it shows the new values, so its history must be the new base's: it is replayed from the
    base (PyTorch regenerates a view's grad_fn likewise when its base's version moves on)."""
    views = base._views
    if not views or base.grad_fn is None:
        return
    for view in list(views):
        if view._made_in_no_grad:  # (not written: it refuses recorded writes) PyTorch refuses it from now on
            view.grad_fn = base._rebase_no_grad_view(view).grad_fn
            view._requires_grad, view._no_gradient_edge = True, False
        elif view is not written:
            old_node = view.grad_fn
            view.grad_fn = _regenerated_node(base, view._view_chain)
            view._requires_grad = True
            _move_retained_grad(view, old_node)


def no_grad_view_words(made_in, what_happened):
    """PyTorch's words for a view made under no_grad (``made_in`` "no_grad") or in inference_mode ("inference")
    that a recorded write reached: ``what_happened`` to it, why that is refused, and what to do."""
    made_in, now, block = (("inference mode", "in normal mode", "inference_mode") if made_in == "inference" else
                           ("no_grad mode", "with grad mode enabled", "no_grad"))
    return (f"in {made_in} and {what_happened} {now}. Given that this use case is ambiguous and error-prone, it is "
            "forbidden. You can clarify your code by moving both the view and the inplace either both inside the "
            f"{block} block (if you don't want the inplace to be tracked) or both outside (if you want the inplace "
            "to be tracked).")


def _regenerated_node(base, chain):
    """The history of a view (``chain`` its steps from ``base``) once a recorded write changed their memory: the
    view replayed from the base's new node. PyTorch regenerates it as one as_strided of the base, named
    AsStridedBackward0, but where the last step reads the memory as another dtype (view_as_real, view_as_complex),
    which as_strided cannot: that step's own node."""
    node = base._replay_view(chain).grad_fn
    if not getattr(chain[-1][0], "reads_as_dtype", False):
        node.pytorch_name = "AsStridedBackward0"
    return node


def _move_retained_grad(tensor, old_node):
    """retain_grad() follows a tensor to the value an in-place write gave it, as in PyTorch."""
    if old_node is not None and old_node.retained is not None and tensor.grad_fn is not None:
        tensor.grad_fn.retained, old_node.retained = old_node.retained, None


def _requires_grad(operands):
    for value in operands:
        if isinstance(value, WriteDoor) and value.requires_grad:
            return True
    return False


def _data(value):
    return value._data if isinstance(value, WriteDoor) else value


def _index(index):
    """An index with the Tensors in it replaced by their arrays."""
    if isinstance(index, tuple):
        return tuple(_data(i) for i in index)
    return _data(index)
