"""The graph API of ``torch.autograd.graph`` and ``torch.autograd`` as PyTorch's docstrings use it, run
on chainrule and on PyTorch: ``Node``, ``GradientEdge`` and ``get_gradient_edge`` (a place in the graph
that ``autograd.grad`` takes in place of a tensor, valid after the tensor is changed in place),
``set_multithreading_enabled``."""

import numpy as np
import pytest

from tests.program_errors import raises_alike
from tests.pytorch_programs import run_both


def _same(program, *args, **kwargs):
    return run_both(program, *args, **kwargs)[0]


def test_node_api():
    def program(m):
        t = m.torch
        x = t.tensor([1.0, 2.0], requires_grad=True)
        y = x * 2
        node = y.grad_fn
        node.metadata["tag"] = "scale"
        return [isinstance(node, t.autograd.graph.Node), node.name(), node.metadata, x.grad_fn,
                isinstance(node.next_functions[0][0], t.autograd.graph.Node)]

    assert _same(program) == [True, "MulBackward0", {"tag": "scale"}, None, True]


def test_grad_through_an_edge_equals_grad_through_its_tensor():
    def program(m):
        t = m.torch
        get = t.autograd.graph.get_gradient_edge
        x = t.tensor([0.5, 1.5], requires_grad=True)
        h = (x * 3).sin()
        loss = (h * h).sum()
        by_tensor = t.autograd.grad(loss, [h, x], retain_graph=True)
        by_edge = t.autograd.grad(loss, [get(h), get(x)])
        edge = get(h)
        return [by_tensor, by_edge, edge.node.name(), edge.output_nr, get(x).node.name(), get(x).output_nr,
                isinstance(edge, tuple), edge.node is h.grad_fn]

    by_tensor, by_edge, name, nr, leaf_name, leaf_nr, is_tuple, is_grad_fn = _same(program)
    np.testing.assert_allclose(by_edge[0], by_tensor[0])
    np.testing.assert_allclose(by_edge[1], by_tensor[1])
    assert (name, nr, leaf_name, leaf_nr) == ("SinBackward0", 0, "torch::autograd::AccumulateGrad", 0)
    assert is_tuple and is_grad_fn


def test_an_edge_outlives_an_in_place_change_of_its_tensor():
    def program(m):
        t = m.torch
        x = t.ones(2, requires_grad=True)
        y = x * 2
        edge = t.autograd.graph.get_gradient_edge(y)
        z = y.exp().sum()
        y.mul_(3)  # y has a new grad_fn now; the edge still points where z's gradient arrives
        return [t.autograd.grad(z, edge), y.grad_fn.name(), edge.node.name()]

    (grad,), now, then = _same(program)
    np.testing.assert_allclose(grad, np.exp([2.0, 2.0]), rtol=1e-6)
    assert (now, then) == ("MulBackward0", "MulBackward0")


def test_an_edge_as_an_output_starts_the_pass_there():
    def program(m):
        t = m.torch
        x = t.tensor([1.0, 2.0], requires_grad=True)
        q = x * 5
        return t.autograd.grad([t.autograd.graph.get_gradient_edge(q)], x, [t.tensor([1.0, 0.5])])

    np.testing.assert_allclose(_same(program)[0], [5.0, 2.5])


def test_an_output_edge_checks_the_gradient_shape():
    def program(m):
        t = m.torch
        q = t.tensor([1.0, 2.0], requires_grad=True) * 5
        t.autograd.grad([t.autograd.graph.get_gradient_edge(q)], q, [t.ones(3)])

    raises_alike(program, r"Mismatch in shape: .*shape of .*\[?3,?\]?.*\[?2,?\]?", kind=RuntimeError)


def test_an_unused_edge_with_allow_unused():
    def program(m):
        t = m.torch
        x = t.tensor([1.0, 2.0], requires_grad=True)
        other = t.tensor([3.0], requires_grad=True)
        return t.autograd.grad((other * 2).sum(), t.autograd.graph.get_gradient_edge(x), allow_unused=True)

    assert _same(program) == (None,)


def test_create_graph_through_an_edge():
    def program(m):
        t = m.torch
        x = t.tensor([0.5, 1.5], requires_grad=True)
        h = x.exp()
        (g,) = t.autograd.grad((h ** 3).sum(), t.autograd.graph.get_gradient_edge(h), create_graph=True)
        g.sum().backward()
        return [g, x.grad]

    g, grad = _same(program)
    np.testing.assert_allclose(g, 3 * np.exp([0.5, 1.5]) ** 2, rtol=1e-6)
    np.testing.assert_allclose(grad, 6 * np.exp([0.5, 1.5]) ** 2, rtol=1e-6)


def test_no_edge_for_a_tensor_that_needs_no_gradient():
    def program(m):
        m.torch.autograd.graph.get_gradient_edge(m.torch.ones(2))

    raises_alike(program, "does not require gradients", kind=RuntimeError)


def test_an_edge_made_by_hand_serves_as_an_input_but_not_as_an_output():
    import autograd

    graph = autograd.autograd.graph
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    h = x * 4
    edge = graph.GradientEdge(h.grad_fn, 0)
    np.testing.assert_array_equal(autograd.autograd.grad(h.sum(), edge, retain_graph=True)[0].numpy(), [1.0, 1.0])
    with pytest.raises(ValueError, match="must come from get_gradient_edge"):
        autograd.autograd.grad(edge, x, autograd.ones(2))


def test_set_multithreading_enabled_as_a_block_a_call_and_a_decorator():
    def program(m):
        t = m.torch
        x = t.tensor([1.0, 2.0], requires_grad=True)
        with t.autograd.set_multithreading_enabled(False):
            (x * x).sum().backward()

        @t.autograd.set_multithreading_enabled(False)
        def step():
            (x * 3).sum().backward()

        step()
        t.autograd.set_multithreading_enabled(True)
        return x.grad

    np.testing.assert_array_equal(_same(program), [5.0, 7.0])


def test_anomaly_mode_during_backward_decides_whether_nan_is_refused():
    import warnings

    def program(m):
        t = m.torch

        class NanBackward(t.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 1

            @staticmethod
            def backward(ctx, grad):
                return grad * float("nan")

        said = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (PyTorch's warnings about anomaly mode)
            x = t.tensor([0.0, 2.0], requires_grad=True)
            with t.autograd.detect_anomaly():  # made in anomaly mode, run outside it: not checked
                z = ((x * 0).sqrt() / (x * 0).sqrt()).sum()
            z.backward()
            said.append(bool(t.isnan(x.grad).all()))
            for loss in (((x * 0).sqrt() / (x * 0).sqrt()).sum(), NanBackward.apply(x).sum()):
                try:  # made outside anomaly mode, run in it: checked
                    with t.autograd.detect_anomaly():
                        loss.backward()
                except RuntimeError as error:
                    said.append(str(error).split(" returned")[0])
        return said

    assert _same(program) == [True, "Function 'DivBackward0'", "Function 'NanBackwardBackward'"]


@pytest.mark.parametrize("use", ["both", "first"])
def test_node_hooks_of_a_function_with_several_outputs_see_every_output(use):
    def program(m):
        t = m.torch

        class Two(t.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2, x * 3

            @staticmethod
            def backward(ctx, g1, g2):
                return g1 * 2 + g2 * 3

        def listed(grads):
            return [None if g is None else g.tolist() for g in grads]

        x = t.tensor([1.0, 2.0], requires_grad=True)
        a, b = Two.apply(x)
        log = []
        a.grad_fn.register_prehook(lambda go: log.append(("pre", listed(go))) or (go[0] * 10, go[1]))
        handle = b.grad_fn.register_hook(lambda gi, go: log.append(("post", listed(gi), listed(go))))
        a.grad_fn.metadata["tag"] = "two"
        loss = a.sum() + b.sum() if use == "both" else a.sum()
        loss.backward()
        handle.remove()
        return [log, x.grad, b.grad_fn.metadata, a.grad_fn.name()]

    log, grad, metadata, name = _same(program)
    assert metadata == {"tag": "two"} and name == "TwoBackward"
    if use == "first":
        assert log == [("pre", [[1.0, 1.0], None]), ("post", [[20.0, 20.0]], [[10.0, 10.0], None])]
