"""Regressions found by session 34's differential probe of autograd state (views and in-place writes, version
counters, hooks, module state, data utilities), each checked by value here and against PyTorch where it is installed.

- The pieces of ``split``, ``chunk``, ``split_with_sizes`` and ``unbind`` (PyTorch's multi-output view ops) took
  recorded in-place writes; PyTorch refuses them ("Output 0 of Split is a view and is being modified inplace. This
  view is the output of a function that returns multiple views. ..."), and a piece of a tensor that requires no grad,
  written with a value that does ("A view was created in no_grad mode ... This view is the output of a function that
  returns multiple views. ..."). Writes nothing records still go through, and the
  pieces of ``tensor_split``/``hsplit`` (slices) and of the ``unsafe_*`` forms (no views) still take them.
- A custom Function's saved tensor changed in place named neither its type nor its versions: PyTorch's
  "[torch.DoubleTensor [2]] is at version 2; expected version 0 instead."
- ``autograd.functional.vjp`` without ``v`` of a function with several output elements said "... function returns is
  a single Tensor"; PyTorch's "... function returns a single Tensor with a single element."
"""

import re

import pytest

import autograd

MULTIPLE_VIEWS = (" This view is the output of a function that returns multiple views. Such functions do not allow "
                  "the output views to be modified inplace. You should replace the inplace operation by an "
                  "out-of-place one.")
NO_GRAD_VIEW = "A view was created in no_grad mode and is being modified inplace with grad mode enabled."
NO_GRAD_PIECE = NO_GRAD_VIEW + " "  # (then PyTorch's sentence on multiple views)

# (program, the start of PyTorch 2.13's error) with T the library: each piece comes from x = (a tensor that
# requires grad) * 1, or from the leaf itself
REFUSED = [
    ("x = T.ones(4, requires_grad=True) * 1; a, b = x.split(2); a.mul_(2)", "Output 0 of Split "),
    ("x = T.ones(4, requires_grad=True) * 1; a, b = x.split(2); b.add_(1)", "Output 1 of Split "),
    ("x = T.ones(4, requires_grad=True); a, b = x.split(2); a.mul_(2)", "Output 0 of Split "),
    ("x = T.ones(4, 2, requires_grad=True) * 1; a = x.split(4)[0]; a.mul_(2)", "Output 0 of Split "),
    ("x = T.ones(4, 2, requires_grad=True) * 1; a = x.chunk(2)[1]; a.mul_(2)", "Output 1 of Split "),
    ("x = T.ones(4, 2, requires_grad=True) * 1; a = T.chunk(x, 2)[1]; a.zero_()", "Output 1 of Split "),
    ("x = T.ones(4, requires_grad=True) * 1; a, b, c = x.split([1, 1, 2]); a.mul_(2)", "Output 0 of SplitWithSizes "),
    ("x = T.ones(4, 2, requires_grad=True) * 1; a = x.split_with_sizes([1, 3])[0]; a.mul_(2)",
     "Output 0 of SplitWithSizes "),
    ("x = T.ones(4, 2, requires_grad=True) * 1; a, b = x.unbind(1); b.mul_(2)", "Output 1 of Unbind "),
    ("x = T.ones(4, 2, requires_grad=True) * 1; a = x.movedim(0, 1).unbind()[0]; a.mul_(2)", "Output 0 of Unbind "),
    ("x = T.ones(4, 2, requires_grad=True) * 1; a = T.unbind(x)[3]; a.copy_(T.zeros(2))", "Output 3 of Unbind "),
    ("x = T.ones(4, 2, requires_grad=True) * 1; a = x.split(2)[1]; a.t_()", "Output 1 of Split "),
    ("x = T.ones(4, 2, requires_grad=True) * 1; a = x.split(2)[1]; a.copy_(T.zeros(2, 2))", "Output 1 of Split "),
    ("x = T.ones(4, requires_grad=True) * 1; a, b = x.split(2); a += 1", "Output 0 of Split "),
    # a write through a view of a piece names the view's op, as PyTorch's
    ("x = T.ones(4, requires_grad=True) * 1; a, b = x.split(2); a[0] = 5.", "Output 0 of Select "),
    ("x = T.ones(4, requires_grad=True) * 1; a, b = x.split(2); a.view(2).mul_(2)", "Output 0 of View "),
    # a piece of a tensor that requires no grad, written with one that does: no node to name, so PyTorch begins
    # with its sentence for a view made in no_grad mode
    ("x = T.ones(4); w = T.ones(2, requires_grad=True); a, b = x.split(2); a.mul_(w)", NO_GRAD_PIECE),
    ("x = T.ones(4); w = T.ones(2, requires_grad=True); a, b = x.split(2); a[0] = w[0]", NO_GRAD_PIECE),
    ("x = T.ones(4); w = T.ones(2, requires_grad=True); a, b = x.split(2); a.view(2).mul_(w)", NO_GRAD_PIECE),
    ("x = T.ones(4); w = T.ones(2, requires_grad=True); a, b = x.unbind(0)[:2]; a.add_(w[0])", NO_GRAD_PIECE),
    # made under no_grad, written with grad mode on (as before)
    ("x = T.ones(4, requires_grad=True) * 1\nwith T.no_grad():\n    a, b = x.split(2)\na.mul_(2)", NO_GRAD_VIEW),
]

# (program, r: what it computes) that both libraries run: writes nothing records, and the pieces that are not
# multi-output views
ALLOWED = [
    "x = T.ones(4); a, b = x.split(2); a.mul_(2); r = x",
    "x = T.ones(4, 2); a, b = x.unbind(1); b.add_(1); r = x",
    "x = T.ones(4, requires_grad=True) * 1; a, b = x.split(2)\nwith T.no_grad():\n    a.mul_(3)\nr = x",
    "x = T.ones(4, requires_grad=True) * 1\nwith T.no_grad():\n    a, b = x.split(2)\n    a.mul_(3)\nr = x",
    "x = T.ones(4, requires_grad=True) * 1; a, b = x.split(2); a.detach().mul_(2); r = x",
    "x = T.ones(4, requires_grad=True) * 1; a, b = x.split(2); a.data.mul_(2); r = x",
    "w = T.arange(4., requires_grad=True); x = w * 1; a, b = x.tensor_split(2); a.mul_(3); x.sum().backward(); "
    "r = (x, w.grad)",
    "w = T.arange(4., requires_grad=True); x = w * 1; a, b = x.hsplit(2); b.mul_(3); x.sum().backward(); "
    "r = (x, w.grad)",
    "w = T.arange(4., requires_grad=True); x = w * 1; a, b = x.unsafe_split(2); a.mul_(3); "
    "(a.sum() + x.sum()).backward(); r = (a, x, w.grad)",
    "w = T.arange(4., requires_grad=True); x = w * 1; a, b = x.unsafe_chunk(2); b.mul_(3); "
    "(b.sum() * 2).backward(); r = (b, w.grad)",
    "w = T.arange(4., requires_grad=True); a, b = (w * 1).split(2); c = a * 2; c.mul_(3); c.sum().backward(); "
    "r = w.grad",
    "w = T.arange(6., requires_grad=True); a, b = (w * 1).split(3); (a * b).sum().backward(); r = w.grad",
]


def _run(T, program):
    scope = {"T": T}
    exec(program, scope)
    return scope.get("r")


def _check_refused(T, program, error):
    with pytest.raises(RuntimeError, match="^" + re.escape(error)) as caught:
        _run(T, program)
    if error == NO_GRAD_PIECE:  # the whole message: its start, then the sentence on multiple views
        assert str(caught.value) == NO_GRAD_VIEW + MULTIPLE_VIEWS
    elif error != NO_GRAD_VIEW:
        assert str(caught.value) == error + "is a view and is being modified inplace." + MULTIPLE_VIEWS


@pytest.mark.parametrize("program, error", REFUSED)
def test_multi_output_view_pieces_refuse_recorded_writes(program, error):
    _check_refused(autograd, program, error)


def _values(result):
    if isinstance(result, tuple):
        return tuple(_values(r) for r in result)
    return result.detach().tolist()


# (what ALLOWED computes here, by hand)
ALLOWED_VALUES = [
    [2, 2, 1, 1],
    [[1, 2]] * 4,
    [3, 3, 1, 1],
    [3, 3, 1, 1],
    [2, 2, 1, 1],
    [2, 2, 1, 1],
    ([0, 3, 2, 3], [3, 3, 1, 1]),
    ([0, 1, 6, 9], [1, 1, 3, 3]),
    ([0, 3], [0, 3, 2, 3], [4, 4, 1, 1]),
    ([6, 9], [0, 0, 6, 6]),
    [6, 6, 0, 0],
    [3, 4, 5, 0, 1, 2],
]


@pytest.mark.parametrize("program, expected", list(zip(ALLOWED, ALLOWED_VALUES)))
def test_writes_nothing_records_and_single_views_still_go_through(program, expected):
    assert _values(_run(autograd, program)) == expected


@pytest.mark.parametrize("program, error", REFUSED)
def test_refusals_match_pytorch(program, error):
    _check_refused(pytest.importorskip("torch"), program, error)


@pytest.mark.parametrize("program, expected", list(zip(ALLOWED, ALLOWED_VALUES)))
def test_allowed_writes_match_pytorch(program, expected):
    torch = pytest.importorskip("torch")
    assert _values(_run(torch, program)) == expected


def test_pieces_keep_their_other_state():
    """The mark changes no value, gradient, version or node name."""
    x = autograd.arange(4., requires_grad=True)
    a, b = (x * 1).split(2)
    assert (a.grad_fn.name(), a.requires_grad, a.is_leaf, a._version) == ("SplitBackward0", True, False, 0)
    (a * b).sum().backward()
    assert x.grad.tolist() == [2, 3, 0, 1]
    with autograd.no_grad():
        p, q = x.split(2)
        p.mul_(2)  # under no_grad: a plain write, seen by the version counter
    assert (x.tolist(), x._version, p._version) == ([0, 2, 2, 3], 1, 1)


class _Scale(autograd.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        return grad * w, grad * x


def _modified_saved_tensor_error(T, function):
    x = T.tensor([1., 2.], requires_grad=True)
    w = T.ones(2, 3, dtype=T.float64)[:, 0]
    y = function.apply(x, w)
    w.add_(1)
    w.add_(1)
    with pytest.raises(RuntimeError) as caught:
        y.sum().backward()
    return str(caught.value)


SAVED_MODIFIED = ("one of the variables needed for gradient computation has been modified by an inplace operation: "
                  "[torch.DoubleTensor [2]] is at version 2; expected version 0 instead.")


def test_a_saved_tensor_changed_in_place_is_named_with_its_versions():
    message = _modified_saved_tensor_error(autograd, _Scale)
    assert message.startswith(SAVED_MODIFIED)
    assert "_ScaleBackward saved it with save_for_backward, argument 1" in message


def test_a_saved_tensor_changed_in_place_matches_pytorch():
    torch = pytest.importorskip("torch")

    class Scale(torch.autograd.Function):
        forward = staticmethod(_Scale.forward)
        backward = staticmethod(_Scale.backward)

    assert _modified_saved_tensor_error(torch, Scale).startswith(SAVED_MODIFIED)


V_NEEDED = [
    ("vjp", lambda T: T.autograd.functional.vjp(lambda x: x ** 3, T.tensor([1., 2.])),
     "The vector v can only be None if the user-provided function returns a single Tensor with a single element."),
    ("jvp", lambda T: T.autograd.functional.jvp(lambda x: x ** 3, T.tensor([1., 2.])),
     "The vector v can only be None if the input to the user-provided function is a single Tensor with a single "
     "element."),
    ("hvp", lambda T: T.autograd.functional.hvp(lambda x: (x ** 3).sum(), T.tensor([1., 2.])),
     "The vector v can only be None if the input to the user-provided function is a single Tensor with a single "
     "element."),
]


@pytest.mark.parametrize("name, call, message", V_NEEDED)
def test_functional_v_needed_message(name, call, message):
    with pytest.raises(RuntimeError, match="^" + re.escape(message) + "$"):
        call(autograd)


@pytest.mark.parametrize("name, call, message", V_NEEDED)
def test_functional_v_needed_message_matches_pytorch(name, call, message):
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError, match="^" + re.escape(message) + "$"):
        call(torch)
