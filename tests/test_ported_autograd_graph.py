"""The torch.autograd.graph API, ported from PyTorch's test/test_autograd.py (TestAutograd): GradientEdge and
get_gradient_edge as inputs and outputs of grad/backward, Node.name(), next_functions, metadata and node hooks.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import numpy as np

from tests.ported import close, raises, same, values
from tests.ported_autograd import randn


def edge(T, t):
    return T.autograd.graph.get_gradient_edge(t)


def test_grad_to_node(T):
    def check_matches(out, inp):
        ref = T.autograd.grad(out.sum(), inp)
        new = T.autograd.grad(out.sum(), edge(T, inp))
        same(new[0], values(ref[0]))

    x = T.rand(2, requires_grad=True)
    check_matches(x.clone(), x)
    x = x.clone()
    check_matches(x.clone(), x)
    x = T.var_mean(T.rand(3, 2, requires_grad=True), dim=0)[1]
    check_matches(x.clone(), x)


def test_grad_to_node_inplace(T):
    x = T.rand(2, requires_grad=True).clone()
    x_edge = edge(T, x)
    x *= 2
    g_old, g_new = T.autograd.grad(x.sum(), (x_edge, x))
    same(g_old, [2.0, 2.0])
    same(g_new, [1.0, 1.0])


def test_grad_to_node_multi(T):
    x = T.rand(2, requires_grad=True).clone()
    y = T.rand(2, requires_grad=True).clone()
    out = x + y
    GradientEdge = T.autograd.graph.GradientEdge
    ref = T.autograd.grad(out.sum(), (x, y), retain_graph=True)
    new = T.autograd.grad(out.sum(), (GradientEdge(x.grad_fn, x.output_nr if hasattr(x, "output_nr") else 0),
                                      GradientEdge(y.grad_fn, 0)))
    for a, b in zip(ref, new):
        same(a, values(b))


def test_grad_to_node_materialize(T):
    GradientEdge = T.autograd.graph.GradientEdge
    x = T.rand(2, requires_grad=True).clone()
    edge_x = GradientEdge(x.grad_fn, 0)
    y = T.rand(2, requires_grad=True).clone()
    edge_y = GradientEdge(y.grad_fn, 0)
    out = x.clone()
    gx, gy = T.autograd.grad(out.sum(), (edge_x, y), allow_unused=True, materialize_grads=True, retain_graph=True)
    same(gx, [1.0, 1.0])
    same(gy, [0.0, 0.0])
    gx, gy = T.autograd.grad(out.sum(), (x, y), allow_unused=True, materialize_grads=True, retain_graph=True)
    same(gy, [0.0, 0.0])
    gx, gy = T.autograd.grad(out.sum(), (x, edge_y), allow_unused=True, retain_graph=True)
    assert gy is None
    raises(RuntimeError, "materialize_grads cannot be used when the given input is a GradientEdge", T.autograd.grad,
           out.sum(), (x, edge_y), allow_unused=True, materialize_grads=True)


def test_backward_to_node(T):
    GradientEdge = T.autograd.graph.GradientEdge
    x0 = T.rand(2, requires_grad=True)
    x = x0.clone()
    edge_x = GradientEdge(x.grad_fn, 0)
    y = T.rand(2, requires_grad=True).clone()
    edge_y = GradientEdge(y.grad_fn, 0)
    out = x.clone()
    T.autograd.backward(out.sum(), inputs=(edge_x, y), retain_graph=True)
    T.autograd.backward(out.sum(), inputs=(x, y), retain_graph=True)
    T.autograd.backward(out.sum(), inputs=(x, edge_y), retain_graph=True)
    T.autograd.backward(out.sum(), inputs=(edge_x, edge_y))
    assert x0.grad is None  # (the inputs stop the pass above the leaf)


def test_gradient_edge_output(T):
    x = T.tensor([1.0, 2.0], requires_grad=True)

    def fn(x, reduce=True):
        tmp = x.sin().cos()
        if reduce:
            tmp = tmp.sum()
        out = tmp.exp().clone().sin().sum()
        return out, edge(T, tmp)

    out, tmp_edge = fn(x)
    (tmp_grad,) = T.autograd.grad(out, (tmp_edge,))
    (x_grad,) = T.autograd.grad(tmp_edge, (x,), grad_outputs=(tmp_grad,))
    out, _ = fn(x)
    (x_grad_ref,) = T.autograd.grad(out, (x,))
    close(x_grad, values(x_grad_ref), rtol=1e-6)
    xv = np.array([1.0, 2.0])
    t = np.cos(np.sin(xv)).sum()
    expected = np.cos(np.exp(t)) * np.exp(t) * -np.sin(np.sin(xv)) * np.cos(xv)
    close(x_grad, expected, rtol=1e-5)

    out, tmp_edge = fn(x, reduce=False)
    raises(RuntimeError, "grad can be implicitly created only for scalar output", T.autograd.grad, tmp_edge, (x,))
    out, tmp_edge = fn(x, reduce=True)
    T.autograd.grad(tmp_edge, (x,))
    out, tmp_edge = fn(x)
    raises(RuntimeError, "Mismatch in shape", T.autograd.grad, tmp_edge, (x,),
           grad_outputs=T.tensor([1.0, 2.0, 3.0, 4.0]))
    out, tmp_edge = fn(x)
    T.autograd.backward(tmp_edge, retain_graph=True)
    (x_grad_ref,) = T.autograd.grad(tmp_edge, (x,), retain_graph=True)
    same(x.grad, values(x_grad_ref))
    x.grad = None
    T.autograd.backward((tmp_edge,), retain_graph=True)
    same(x.grad, values(x_grad_ref))
    out1, tmp_edge1 = fn(x)
    out2, _ = fn(x)
    (ref,) = T.autograd.grad((tmp_edge1, out2), (x,), retain_graph=True)
    x.grad = None
    T.autograd.backward((tmp_edge1, out2), retain_graph=True)
    close(x.grad, values(ref))
    out, tmp_edge = fn(x)
    raises(RuntimeError, "Mismatch in shape", T.autograd.backward, tmp_edge, inputs=(x,),
           grad_tensors=T.tensor([1.0, 2.0, 3.0, 4.0]))


def test_gradient_edge_graph_ownership(T):
    class Clone(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, gX):
            return gX.clone()

    leaf = T.rand(1, requires_grad=True)
    inp = leaf.clone()
    for make in (lambda: inp.clone(), lambda: Clone.apply(inp)):
        out = make()
        e = edge(T, out)
        T.autograd.backward(e)
        del out
        T.autograd.backward(e)  # the edge keeps the graph it needs
    same(leaf.grad, [4.0])


def test_get_gradient_edge_requires_grad(T):
    raises(RuntimeError, "It is not possible to get the gradient edge for a Tensor that does not require gradients",
           T.autograd.graph.get_gradient_edge, T.ones(2))
    x = T.ones(2, requires_grad=True)
    e = edge(T, x)
    assert e.node.name() == "torch::autograd::AccumulateGrad" and e.output_nr == 0
    e2 = edge(T, x * 2)
    assert e2.node.name() == "MulBackward0"


def test_node_name_and_next_functions_walk(T):
    """graph_desc of PyTorch's test: the names of the nodes reachable from a grad_fn."""
    def desc(fn):
        if fn is None:
            return "None"
        nf = fn.next_functions
        return fn.name() + "(" + ", ".join(desc(f) for f, _ in nf) + ")"

    x, y = randn(T, 2), randn(T, 2, seed=1)
    z = (x * y).exp().sum()
    assert desc(z.grad_fn) == ("SumBackward0(ExpBackward0(MulBackward0(torch::autograd::AccumulateGrad(), "
                               "torch::autograd::AccumulateGrad())))")


def test_node_metadata(T):
    x = T.ones(2, requires_grad=True)
    y = x * 2
    md = y.grad_fn.metadata
    assert md == {} and y.grad_fn.metadata is md
    md["tag"] = 7
    assert y.grad_fn.metadata["tag"] == 7


def test_node_register_hook_changes_grad_inputs(T):
    x = T.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    seen = []

    def hook(grad_inputs, grad_outputs):
        seen.append((values(grad_inputs[0]).copy(), values(grad_outputs[0]).copy()))
        return tuple(None if g is None else g * 10 for g in grad_inputs)

    h = y.grad_fn.register_hook(hook)
    y.sum().backward(retain_graph=True)
    same(seen[0][0], [3.0, 3.0])
    same(seen[0][1], [1.0, 1.0])
    same(x.grad, [30.0, 30.0])
    h.remove()
    x.grad = None
    y.sum().backward()
    same(x.grad, [3.0, 3.0])


def test_accumulate_grad_node_is_shared(T):
    x = T.ones(2, requires_grad=True)
    a = x.clone().grad_fn.next_functions[0][0]
    b = (x * 2).grad_fn.next_functions[0][0]
    assert a is b
    assert a.variable is x
