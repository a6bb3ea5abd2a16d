"""Forward-mode differentiation's state: dual tensors, which carry a tangent beside their value.

Inside a dual level (``autograd.autograd.forward_ad.dual_level``) a tensor may carry a tangent ẋ, and
every op computes its output's tangent along with its value: ẏ = Σ_i (∂y/∂x_i) ẋ_i, the Jacobian of the
op times its inputs' tangents (a Jacobian-vector product). Chained through a program, the tangent of
its result is J ẋ for the whole program, in one forward pass: what a column of the Jacobian costs.

The ops define their derivative once, as a backward: the vector-Jacobian product g ↦ gᵀJ. The
Jacobian-vector product is read from it (the double-vjp trick): gᵀJ is linear in g, so

    J ẋ = ∂/∂g ⟨gᵀJ, ẋ⟩,

one small reverse pass over the op's own backward. It needs no second rule per op, and it is exact;
it costs more than a rule written for the forward direction, which forward mode here trades away.
Where PyTorch's own forward rule is not its backward read forward (at a tie or a NaN, clamp with a
tensor bound gives the bound's tangent while its backward gives x the gradient), the op says so with a
``jvp`` of its own (``Primitive.jvp``), which is then used instead.

While a level is open, ``Primitive.apply``, the write door's ``_write`` and ``_write_at``, the
engine's sums of gradient shares and ``Tensor.detach_`` are replaced by versions that also carry (or
drop) tangents (``open_level``), so programs outside a level pay nothing for it; ``Primitive.apply_replaced``
says so to the backward's own ops, which then go through apply too (``Primitive.apply_in_backward``). Through
``autograd.grad`` tangents reach the gradients: the tangent of ∇f along ẋ is the Hessian-vector
product H ẋ (forward-over-reverse).
Tangents live on the tensors (``_fw``: the level they belong to and the tangent); closing the level
makes every one of them stale at once.

Complex numbers: a backward here gives PyTorch's gradient, the real gradient of each (real, imaginary)
pair written as one complex number, so the vjp is gᵀJ of the real Jacobian J of those pairs, and the
same trick reads J ẋ with the real inner product ⟨a, b⟩ = Re Σ ā b. For a holomorphic op that is
f'(z) ż, as PyTorch's forward mode gives it.
"""

import contextlib

from . import graph
from .backend import xp
from .tensor import Tensor

LEVEL = None  # the open level (an object, compared by identity), or None


def tangent_of(x):
    """x's tangent at the open level, or None."""
    if LEVEL is None or type(x) is not Tensor and not isinstance(x, Tensor):
        return None
    carried = x.__dict__.get("_fw")
    return carried[1] if carried is not None and carried[0] is LEVEL else None


def set_tangent(x, tangent):
    x._fw = (LEVEL, tangent)


def open_level():
    """Open the one dual level (nesting is refused, as PyTorch refuses it) and put the tangent-carrying
    versions of Primitive.apply and the write door in place."""
    global LEVEL
    if LEVEL is not None:
        raise RuntimeError("Nested forward mode AD is not supported at the moment")
    from . import engine
    from .primitive import Primitive
    from .write_door import WriteDoor

    LEVEL = object()
    _PLAIN.update(apply=Primitive.__dict__["apply"], output_again=Primitive.__dict__["_output_again"],
                  write=WriteDoor.__dict__["_write"], write_at=WriteDoor.__dict__["_write_at"],
                  backpropagate=engine.backpropagate, add_share=engine.add_share, detach_=Tensor.__dict__["detach_"])
    Primitive.apply = classmethod(_apply_carrying_tangents)
    Primitive.apply_replaced += 1  # (a backward's own ops go through apply, carrying tangents: apply_in_backward)
    Primitive._output_again = _output_again_carrying_tangent
    WriteDoor._write, WriteDoor._write_at = _write_carrying_tangents, _write_at_carrying_tangents
    engine.backpropagate, engine.add_share = _backpropagate_carrying_tangents, _add_share_carrying_tangents
    Tensor.detach_ = _detach_dropping_the_tangent
    return 0


def close_level():
    """Close the open level: every tangent made in it is gone, and the plain methods are back."""
    global LEVEL
    if LEVEL is None:
        return
    from . import engine
    from .primitive import Primitive
    from .write_door import WriteDoor

    Primitive.apply, Primitive._output_again = _PLAIN["apply"], _PLAIN["output_again"]
    Primitive.apply_replaced -= 1
    WriteDoor._write, WriteDoor._write_at = _PLAIN["write"], _PLAIN["write_at"]
    engine.backpropagate, engine.add_share = _PLAIN["backpropagate"], _PLAIN["add_share"]
    Tensor.detach_ = _PLAIN["detach_"]
    LEVEL = None


_PLAIN = {}  # the methods the open level replaced


@contextlib.contextmanager
def paused():
    """Ops inside carry no tangents (what forward mode does for itself: a view it labels, a jvp rule's
    arithmetic), the level staying open."""
    global LEVEL
    level, LEVEL = LEVEL, None
    try:
        yield
    finally:
        LEVEL = level


def _apply_carrying_tangents(cls, *inputs, **params):
    """Primitive.apply with tangents: the op runs once, recorded, so that its node (which holds what its
    forward worked out: an argmax's index, a dropout mask, a random draw) gives the tangent; the output
    keeps the graph the plain apply would have given it, and no other."""
    tangents = [tangent_of(x) for x in inputs]
    if all(t is None for t in tangents):
        return _PLAIN["apply"].__func__(cls, *inputs, **params)
    recording = graph.modes.grad_enabled
    if recording and any(x._requires_grad for x in inputs):  # recorded anyway: its node is the output's grad_fn
        out = _PLAIN["apply"].__func__(cls, *inputs, **params)
        node = out.grad_fn
    else:  # recorded for the tangent alone, then the output let go of the graph, as the plain apply leaves it
        flipped = [x for x, t in zip(inputs, tangents) if t is not None and not x._requires_grad]
        for x in flipped:
            x._requires_grad = True
        graph.modes.grad_enabled = True
        try:
            out = _PLAIN["apply"].__func__(cls, *inputs, **params)
        finally:
            graph.modes.grad_enabled = recording
            for x in flipped:
                x._requires_grad = False
        node, out.grad_fn, out._requires_grad = out.grad_fn, None, False
    if type(node) is cls:  # (not recorded: an output with no derivative, of integers or bools)
        tangent = push_forward(node, inputs, out, tangents, recording)
        set_tangent(out, tangent)
        if out.grad_fn is node:  # in the program's graph: a backward pass reading the saved output reads its tangent
            node._fw_output = (LEVEL, tangent)
    return out


def _detach_dropping_the_tangent(self):
    """``x.detach_()`` inside a level: x leaves forward mode too, its tangent dropped (as ``detach()`` gives a
    tensor without one), as PyTorch's."""
    _PLAIN["detach_"](self)
    self.__dict__.pop("_fw", None)
    return self


def _output_again_carrying_tangent(node, data):
    """A node's saved output, as a backward pass reads it, with the tangent the output had."""
    output = _PLAIN["output_again"](node, data)
    carried = node.__dict__.get("_fw_output")
    if carried is not None and carried[0] is LEVEL:
        set_tangent(output, carried[1])
    return output


def _add_share_carrying_tangents(total, share, sums):
    """The engine's sum of a node's gradient shares, out of place where a share carries a tangent (the sum's
    tangent is theirs; an in-place sum into the first share's array would keep only its tangent)."""
    if tangent_of(total) is None and tangent_of(share) is None:
        return _PLAIN["add_share"](total, share, sums)
    return total + share


def _backpropagate_carrying_tangents(roots, root_grads, retain_graph=False, capture=None, **options):
    """A backward pass inside a dual level: ``autograd.grad``'s gradients carry tangents (forward-over-reverse:
    the tangent of a gradient, a Hessian-vector product), as PyTorch's; a ``backward()`` stores none in
    ``.grad``, as PyTorch's (its pass runs without them)."""
    if capture is None:
        with paused():
            return _PLAIN["backpropagate"](roots, root_grads, retain_graph, capture, **options)
    return _PLAIN["backpropagate"](roots, root_grads, retain_graph, capture, **options)


def push_forward(node, inputs, out, tangents, recording=False):
    """ẏ = Σ_i J_i ẋ_i for the op ``node`` made ``out`` from ``inputs``, read from its backward by the
    double-vjp trick (the module's docstring). Where ``recording`` (the caller's grad mode) and an input or a
    tangent requires grad, the tangent is itself recorded, a function of them (reverse-over-forward: a
    tangent's backward reaches the parameters, as PyTorch's); otherwise it is a constant."""
    value = out._data
    differentiable = recording and any(x is not None and x._requires_grad for x in (*inputs, *tangents))
    if node.jvp is not None:
        return _by_own_rule(node, inputs, out, tangents, differentiable)
    with graph.enable_grad(), paused():  # (the double-vjp's own ops carry no tangents)
        g = Tensor._make(xp.zeros_like(value))
        g.requires_grad_()
        constants = []
        for x, t in zip(inputs, tangents):  # each input a constant; the ones with a tangent say they need a
            if differentiable and x._requires_grad:  # gradient, so the backward computes their share (an
                constants.append(x)                   # input in the program's graph stands for itself)
                continue
            c = Tensor._make(x._data)
            if t is not None:
                c.requires_grad_()
            constants.append(c)
        output = None
        if node.saves_output:
            output = out if differentiable and out.grad_fn is node else Tensor._make(value)
        shares = node.backward(g, output, *constants)
        total = None
        for share, t in zip(shares, tangents):
            if share is not None and t is not None:
                if share._data.dtype.kind == "c" or t._data.dtype.kind == "c":  # ⟨share, ẋ⟩ = Re Σ conj(share) ẋ
                    term = (share.conj() * t).real.sum()
                else:
                    term = (share * t).sum()
                total = term if total is None else total + term
        if total is None or not total.requires_grad:  # the output does not depend on a tangent-carrying input
            return Tensor._make(xp.zeros_like(value))
        from .differentiate import grad

        (tangent,) = grad([total], [g], allow_unused=True, create_graph=differentiable)
    if tangent is None:
        return Tensor._make(xp.zeros_like(value))
    return tangent if differentiable and tangent.requires_grad else tangent.detach()


def _by_own_rule(node, inputs, out, tangents, differentiable):
    """ẏ by the op's own forward rule, ``node.jvp(tangents, y, *inputs)``, written with Tensor ops (each
    input's tangent given, zeros for one without), recorded where the tangent is to be differentiable."""
    with graph.enable_grad() if differentiable else graph.no_grad(), paused():
        given = [Tensor._make(xp.zeros_like(x._data)) if t is None else t for x, t in zip(inputs, tangents)]
        tangent = node.jvp(given, out, *inputs)
    return tangent if differentiable and tangent.requires_grad else tangent.detach()


def _write_carrying_tangents(self, operands, out_of_place, in_place=None, reads_old=True, overlapping_ok=False):
    """The write door with tangents: a write into a dual tensor, or of one, is made out of place on its
    value and its tangent, and both are written back."""
    own = tangent_of(self)
    if own is None and not any(tangent_of(x) is not None for x in operands):
        return _PLAIN["write"](self, operands, out_of_place, in_place, reads_old, overlapping_ok)
    base = self._base
    sharing = base is not None and tangent_of(base) is not None
    if base is not None and (_at_this_level(base, "_fw_primal") and not _at_this_level(self, "_fw_root")
                             or sharing and not _shares_the_base_tangent(self)):
        raise NotImplementedError("an in-place write into a view of a dual tensor is not built here (its base's "
                                  "tangent would not follow): write into the dual tensor itself, or out of place")
    own = tangent_of(self)  # (where the base's is shared, now the region of it the view shows)
    made = []
    # the tangent is updated in place, as PyTorch's (the tensor given to make_dual, or unpack_dual's, changes
    # with it), where it can be: its memory writable, outside any graph (a write would not be recorded)
    in_place = own is not None and getattr(own._data.flags, "writeable", True) and not own._requires_grad
    before = Tensor._make(own._data.copy()) if in_place else own  # (what the snapshot below keeps)

    def carrying(old):
        if old is not None and own is not None and tangent_of(old) is None:
            set_tangent(old, before)  # (the recorded write's snapshot of self: the same value, the same tangent)
        new = out_of_place(self if old is None else old)
        made.append(new)
        return new

    _PLAIN["write"](self, operands, carrying, None, True, overlapping_ok)
    tangent = tangent_of(made[-1]) if made else None
    if tangent is None:
        tangent = Tensor._make(xp.zeros_like(self._data))
    if in_place and tangent._data.dtype == own._data.dtype:
        own._data[...] = tangent._data
        graph.bump_version(own)
        tangent = own
    set_tangent(self, tangent)
    if base is not None and not sharing and self._view_chain is not None and not _at_this_level(base, "_fw_primal"):
        _give_the_base_a_tangent(self)
    return self


def _shares_the_base_tangent(view):
    """A write into a view of a tensor that carries a tangent (``out = x.clone(); out.diagonal().copy_(d)``): the
    view's tangent becomes the region of its base's tangent that the view shows, so that the write's new tangent,
    made in place there, is the base's too (as PyTorch's view and base share their tangent), and every view written
    so shows the others' writes. The base's tangent is copied the first time: another tensor may hold the same one
    (an op's tangent may be its input's). False where that cannot be done (no replayable view chain, or a tangent
    in a graph, which is not written in place)."""
    base, base_tangent = view._base, tangent_of(view._base)
    if view._view_chain is None or base_tangent._requires_grad:
        return False
    from .ops.shape import _replay_view_of_array

    if base.__dict__.get("_fw_own_tangent") is not base_tangent:
        base_tangent = base._fw_own_tangent = Tensor._make(base_tangent._data.copy())
        set_tangent(base, base_tangent)
    set_tangent(view, Tensor._make(_replay_view_of_array(base_tangent._data, view._view_chain)))
    return True


def mark_root(view):
    """``make_dual``'s and ``unpack_dual``'s views of a tensor: for forward mode they are tensors of their own (a
    write into one changes its tangent, not the tensor it shows), as PyTorch's forward non-differentiable views.
    The views share their base with every other view of it, so the base is marked as well: a write with tangents
    into another of its views (a view of the dual, or of the base, which cannot be told apart) is refused."""
    if view._base is not None:
        view._fw_root = LEVEL
        view._base._fw_primal = LEVEL


def _at_this_level(x, mark):
    return LEVEL is not None and x.__dict__.get(mark) is LEVEL


def _give_the_base_a_tangent(view):
    """A dual written into a view of a tensor without a tangent: the base gets one too, zeros but in the region
    the view shows, and the view's tangent becomes that region (as PyTorch's view and base share their tangent):
    whatever is computed from the base afterwards carries the tangent written."""
    from .ops.shape import _replay_view_of_array

    base_tangent = xp.zeros_like(view._base._data)
    region = _replay_view_of_array(base_tangent, view._view_chain)
    region[...] = tangent_of(view)._data
    set_tangent(view._base, Tensor._make(base_tangent))
    set_tangent(view, Tensor._make(region))


def _write_at_carrying_tangents(self, index, value):
    """``self[index] = value`` with tangents: the write door's out-of-place index_put, tangent and all."""
    if tangent_of(self) is None and tangent_of(value) is None:
        return _PLAIN["write_at"](self, index, value)
    from .operands import _operand
    from .write_door import _index

    index = _index(index)
    _write_carrying_tangents(self, (value,), lambda old: old._index_put(index, _operand(value, old)))
