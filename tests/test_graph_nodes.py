"""What a ``grad_fn`` shows of the graph, as PyTorch's nodes do: ``next_functions`` (with an
``AccumulateGrad`` for each leaf that requires grad) and the tensors the node saved
(``_saved_self``, ``_saved_other``, ``_saved_result``), before and after a backward pass."""

import pytest

import autograd
from autograd.autograd.graph import Node


def _walk(lib, root):
    """Every node under root as (depth, name), depth-first through next_functions, as torchviz reads a graph."""
    seen, found = set(), []

    def visit(node, depth):
        if node is None or id(node) in seen:
            return
        seen.add(id(node))
        found.append((depth, node.name()))
        for child, _ in node.next_functions:
            visit(child, depth + 1)

    visit(root, 0)
    return found


def _program(lib):
    x = lib.tensor([[1.0, 2.0], [3.0, -1.0]], requires_grad=True)
    w = lib.tensor([[0.5, -1.0], [2.0, 1.0]], requires_grad=True)
    data = lib.tensor([[1.0, 1.0], [0.0, 2.0]])
    return x, w, ((x * w).relu() + data).sum()


def test_next_functions_end_at_an_accumulate_grad_per_leaf():
    x, w, loss = _program(autograd)
    assert [name for _, name in _walk(autograd, loss.grad_fn)] == [
        "SumBackward0", "AddBackward0", "ReluBackward0", "MulBackward0",
        "torch::autograd::AccumulateGrad", "torch::autograd::AccumulateGrad"]
    mul = loss.grad_fn.next_functions[0][0].next_functions[0][0].next_functions[0][0]
    (to_x, _), (to_w, _) = mul.next_functions
    assert to_x.variable is x and to_w.variable is w and to_x.next_functions == ()
    assert isinstance(to_x, Node) and loss.grad_fn.next_functions[0][0].next_functions[1] == (None, 0)  # the data
    assert (x * 2).grad_fn.next_functions[0][0] is to_x  # one node per leaf while it is held


def test_next_functions_stay_after_backward_but_saved_tensors_go():
    x, w, loss = _program(autograd)
    mul = loss.grad_fn.next_functions[0][0].next_functions[0][0].next_functions[0][0]
    assert mul._saved_self is x and mul._saved_other is w
    loss.backward()
    assert len(_walk(autograd, loss.grad_fn)) == 6
    with pytest.raises(RuntimeError, match="second time"):
        _ = mul._saved_self


def test_saved_result_is_the_output_and_other_names_are_absent():
    x = autograd.tensor([0.0, 1.0], requires_grad=True)
    y = x.exp()
    assert y.grad_fn._saved_result.tolist() == pytest.approx([1.0, 2.718281828])
    assert y.grad_fn._saved_result.grad_fn is y.grad_fn
    with pytest.raises(AttributeError, match="_saved_self"):
        _ = y.grad_fn._saved_self  # Exp keeps its output, not its input, as PyTorch's ExpBackward0
    with pytest.raises(AttributeError):
        _ = (x + 1).grad_fn._saved_other  # an add saves nothing


def test_custom_functions_have_next_functions_too():
    class Double(autograd.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * 2

    x = autograd.ones(2, requires_grad=True)
    y = Double.apply(x)
    assert y.grad_fn.next_functions[0][0].variable is x
    y.sum().backward()
    assert y.grad_fn.next_functions[0][0].variable is x


def test_the_walk_matches_pytorchs():
    torch = pytest.importorskip("torch")
    assert _walk(autograd, _program(autograd)[2].grad_fn) == _walk(torch, _program(torch)[2].grad_fn)
    ours, theirs = _program(autograd)[2], _program(torch)[2]
    ours_mul = ours.grad_fn.next_functions[0][0].next_functions[0][0].next_functions[0][0]
    theirs_mul = theirs.grad_fn.next_functions[0][0].next_functions[0][0].next_functions[0][0]
    assert ours_mul._saved_other.tolist() == theirs_mul._saved_other.tolist()


def test_saved_exponent_of_both_pows():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    assert x.pow(2).grad_fn._saved_exponent == 2 and (x**2.5).grad_fn._saved_exponent == 2.5  # the number
    exponent = autograd.tensor([3.0, 0.5], requires_grad=True)
    y = x**exponent
    assert y.grad_fn._saved_exponent is exponent and y.grad_fn._saved_self is x  # the tensor, as PowBackward1's
    y.sum().backward()
    with pytest.raises(RuntimeError, match="second time"):
        _ = y.grad_fn._saved_exponent


def test_the_tutorials_node_names_are_pytorchs():
    """The names PyTorch's autograd tutorial prints (y = x + 2: AddBackward0; z = y * y * 3; z.mean()), and x ** 2's."""
    x = autograd.ones(2, 2, requires_grad=True)
    y = x + 2
    z = y * y * 3
    names = [y.grad_fn.name(), z.grad_fn.name(), z.mean().grad_fn.name(), (x**2).grad_fn.name(),
             x.pow(3).grad_fn.name(), (x * 0.5).grad_fn.name(), (x - 1).grad_fn.name(), x.sum().grad_fn.name(),
             x.relu().grad_fn.name(), x.exp().grad_fn.name()]
    assert names == ["AddBackward0", "MulBackward0", "MeanBackward0", "PowBackward0", "PowBackward0",
                     "MulBackward0", "SubBackward0", "SumBackward0", "ReluBackward0", "ExpBackward0"]
