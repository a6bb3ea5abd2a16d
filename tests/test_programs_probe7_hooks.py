"""The hook programs of PyTorch's autograd notes ("Backward hooks execution", "Hooks for saved
tensors") and of the Tensor/Node hook docstrings, run on chainrule and on PyTorch: which hooks fire,
in which order, what they see around in-place changes, and saved-tensor hooks that offload to disk."""

import os
import tempfile
import uuid

import numpy as np
import pytest

from tests.pytorch_programs import run_both


def _same(program, *args, **kwargs):
    return run_both(program, *args, **kwargs)[0]


def test_tensor_register_hook_docstring():
    def program(m):
        t = m.torch
        v = t.tensor([0.0, 0.0, 0.0], requires_grad=True)
        h = v.register_hook(lambda grad: grad * 2)  # double the gradient
        v.backward(t.tensor([1.0, 2.0, 3.0]))
        h.remove()
        return v.grad

    np.testing.assert_array_equal(_same(program), [2.0, 4.0, 6.0])


@pytest.mark.parametrize("kind", ["register_hook", "register_prehook"])
def test_node_hook_docstrings(kind):
    def program(m):
        t = m.torch
        a = t.tensor([0.0, 0.0, 0.0], requires_grad=True)
        b = a.clone()
        assert isinstance(b.grad_fn, t.autograd.graph.Node)
        if kind == "register_hook":
            handle = b.grad_fn.register_hook(lambda grad_inputs, grad_outputs: (grad_outputs[0] * 2,))
        else:
            handle = b.grad_fn.register_prehook(lambda grad_outputs: (grad_outputs[0] * 2,))
        b.sum().backward(retain_graph=True)
        first = a.grad.clone()
        handle.remove()
        a.grad = None
        b.sum().backward(retain_graph=True)
        return [first, a.grad]

    first, second = _same(program)
    np.testing.assert_array_equal(first, [2.0] * 3)
    np.testing.assert_array_equal(second, [1.0] * 3)


def test_hooks_before_and_after_an_in_place_change():
    def program(m):
        t = m.torch
        x = t.tensor([1.0, 2.0], requires_grad=True)
        y = x.sin()
        seen = []
        y.register_hook(lambda g: seen.append(("before", g.clone())))  # sees dL/d(y before cos_)
        y.cos_()
        y.register_hook(lambda g: seen.append(("after", g.clone())))   # sees dL/d(y after cos_)
        y.sum().backward()
        return [[tag for tag, _ in seen], [g for _, g in seen], x.grad]

    order, grads, grad = _same(program)
    s = np.sin([1.0, 2.0])
    assert order == ["after", "before"]
    np.testing.assert_allclose(grads[1], -np.sin(s), rtol=1e-6)


def test_retain_grad_before_an_in_place_change():
    def program(m):
        x = m.torch.tensor([1.0, 2.0], requires_grad=True)
        y = x.sin()
        y.retain_grad()
        y.cos_()
        y.sum().backward()
        return [y.grad, x.grad]

    _same(program)


def test_a_hook_on_a_node_that_does_not_run_does_not_fire():
    def program(m):
        t = m.torch
        x = t.tensor([1.0, 2.0], requires_grad=True)
        w = t.tensor([3.0, 4.0], requires_grad=True)
        fired = []
        y = x * 2
        y.grad_fn.register_hook(lambda gi, go: fired.append("unused"))
        z = (w * 3).sum()
        z.backward()
        return fired

    assert _same(program) == []


def test_tensor_hooks_run_before_retain_grad_and_node_prehooks():
    def program(m):
        t = m.torch
        x = t.tensor([1.0, 2.0], requires_grad=True)
        y = x * 2
        log = []
        y.grad_fn.register_prehook(lambda go: log.append(("pre", go[0].tolist())) or (go[0] * 3,))
        y.retain_grad()
        y.register_hook(lambda g: log.append(("tensor", g.tolist())) or g * 10)
        leaf = (x * 1).grad_fn.next_functions[0][0]
        leaf.register_prehook(lambda go: log.append(("leaf pre", go[0].tolist())))
        x.register_hook(lambda g: log.append(("leaf tensor", g.tolist())))
        (y.sum() + (x * 1).sum()).backward()
        return [log, y.grad, x.grad]

    log, y_grad, x_grad = _same(program)
    assert [tag for tag, _ in log] == ["tensor", "pre", "leaf tensor", "leaf pre"]
    np.testing.assert_array_equal(y_grad, [10.0, 10.0])  # retain_grad stores before the node's pre-hook


# -- saved-tensor hooks ---------------------------------------------------------------------------------


def test_saved_tensors_offloaded_to_disk_as_the_notes_show():
    def program(m):
        t = m.torch
        tmp_dir = tempfile.mkdtemp()

        class SelfDeletingTempFile:
            def __init__(self):
                self.name = os.path.join(tmp_dir, str(uuid.uuid4()))

            def __del__(self):
                os.remove(self.name)

        def pack_hook(tensor):
            temp_file = SelfDeletingTempFile()
            t.save(tensor, temp_file.name)
            return temp_file

        def unpack_hook(temp_file):
            return t.load(temp_file.name)

        x = t.tensor([1.0, 2.0, 3.0], requires_grad=True)
        with t.autograd.graph.saved_tensors_hooks(pack_hook, unpack_hook):
            y = x.pow(2).sin()
        y.sum().backward()
        del y
        return [x.grad, sorted(os.listdir(tmp_dir))]

    grad, left = _same(program)
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(grad, np.cos(x ** 2) * 2 * x, rtol=1e-6)
    assert left == []  # every file was deleted with the graph


def test_pack_and_unpack_run_once_per_saved_tensor():
    def program(m):
        t = m.torch
        log = []

        def pack_hook(x):
            log.append(("pack", tuple(x.shape)))
            return x

        def unpack_hook(x):
            log.append(("unpack", tuple(x.shape)))
            return x

        with t.autograd.graph.saved_tensors_hooks(pack_hook, unpack_hook):
            a = t.ones(5, requires_grad=True)
            b = t.ones(5, requires_grad=True) * 2
            y = a * b
        y.sum().backward()
        return log

    assert _same(program) == [("pack", (5,))] * 2 + [("unpack", (5,))] * 2


def test_what_the_pack_hook_returns_is_what_backward_uses():
    def program(m):
        t = m.torch
        x = t.tensor([1.0, 2.0], requires_grad=True)
        with t.autograd.graph.saved_tensors_hooks(lambda x: x * 0, lambda x: x):
            y = x * x
        y.sum().backward()
        return x.grad

    np.testing.assert_array_equal(_same(program), [0.0, 0.0])


def test_a_detached_pack_still_gives_double_backward():
    def program(m):
        t = m.torch
        x = t.tensor([1.0, 2.0], requires_grad=True)
        with t.autograd.graph.saved_tensors_hooks(lambda x: x.detach(), lambda x: x):
            y = x.exp()
        (g,) = t.autograd.grad(y.sum(), x, create_graph=True)
        g.sum().backward()
        return [g, x.grad]

    g, grad = _same(program)
    np.testing.assert_allclose(grad, np.exp([1.0, 2.0]), rtol=1e-6)


def test_saved_tensor_hooks_around_a_module():
    def program(m):
        t = m.torch

        class Model(m.nn.Module):
            def forward(self, x):
                return x.sin().exp()

        x = t.tensor([1.0, 2.0], requires_grad=True)
        seen = []
        with t.autograd.graph.saved_tensors_hooks(lambda x: seen.append(1) or x, lambda x: x):
            out = Model()(x)
        out.sum().backward()
        return [len(seen), x.grad]

    count, grad = _same(program)
    assert count == 2


@pytest.mark.parametrize("input_requires_grad", [True, False])
def test_saved_tensor_hooks_on_a_custom_function_pack_after_forward(input_requires_grad):
    def program(m):
        t = m.torch

        class Exp(t.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                y = x.exp()
                ctx.save_for_backward(y, x)  # its own output: a recorded backward goes through it
                return y

            @staticmethod
            def backward(ctx, grad):
                y, _ = ctx.saved_tensors
                return grad * y

        log = []

        def pack(v):
            log.append(("pack", t.is_grad_enabled(), v.requires_grad, v.grad_fn is not None))
            return v * 1

        x = t.tensor([0.5, 1.0], requires_grad=input_requires_grad)
        with t.autograd.graph.saved_tensors_hooks(pack, lambda v: log.append(("unpack",)) or v):
            y = Exp.apply(x)
        if not input_requires_grad:
            return log
        (g,) = t.autograd.grad(y.sum(), x, create_graph=True)
        g.sum().backward()
        return [log, g, x.grad]

    result = _same(program)
    if input_requires_grad:
        log, g, grad = result
        assert log[:2] == [("pack", False, True, True), ("pack", False, True, False)]
        np.testing.assert_allclose(grad, np.exp([0.5, 1.0]), rtol=1e-6)
    else:
        assert result == []  # nothing recorded: nothing packed


def test_hooks_on_one_saved_tensor_as_the_notes_show():
    def program(m):
        t = m.torch
        said, log = [], []
        x = t.tensor([1.0, 2.0], requires_grad=True)
        y = x.pow(2)
        y.grad_fn._raw_saved_self.register_hooks(lambda v: log.append("pack") or v * 2,
                                                 lambda v: log.append("unpack") or v / 2)
        try:
            y.grad_fn._raw_saved_self.register_hooks(lambda v: v, lambda v: v)
        except RuntimeError as error:
            said.append(str(error).split(".")[0])
        y.sum().backward()
        grads = [x.grad.clone()]
        for make, name, pack in ((lambda x: x.exp(), "_raw_saved_result", lambda v: v * 3),
                                 (lambda x: x * t.tensor([3.0, 4.0]), "_raw_saved_other", lambda v: v * 0)):
            x.grad = None
            z = make(x)
            getattr(z.grad_fn, name).register_hooks(pack, lambda v: v)
            z.sum().backward()
            grads.append(x.grad.clone())
        return [said, log, grads]

    said, log, (square, exp, product) = _same(program)
    assert said == ["Calling register_hooks on a saved tensor whose hooks have already been set"]
    assert log == ["pack", "unpack"]
    np.testing.assert_allclose(exp, 3 * np.exp([1.0, 2.0]), rtol=1e-6)
    np.testing.assert_array_equal(product, [0.0, 0.0])
