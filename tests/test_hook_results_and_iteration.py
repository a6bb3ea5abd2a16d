"""What a hook may return, and what iterating over a tensor gives, as PyTorch's (found by session 34's state probe):

- a tensor hook (or a module's full backward hook) that returns something other than a tensor or None raises
  PyTorch's TypeError ("expected Variable, but hook returned 'int'"), not an AttributeError from inside the pass;
- a node hook (``grad_fn.register_hook``) that returns a gradient where its input had none raises PyTorch's
  RuntimeError: the pass would drop it;
- ``iter(x)`` is ``iter(x.unbind(0))``: the rows are UnbindBackward0's views, which refuse recorded in-place writes.

Each runs on ours, and on PyTorch where it is installed.
"""

import pytest

import autograd
import nn


def _nn(library):
    return nn if library is autograd else library.nn


@pytest.mark.parametrize("returned", [3, 2.5, "g", [1.0, 1.0, 1.0]])
def test_a_tensor_hook_returning_no_tensor_is_a_type_error(T, returned):
    x = T.ones(3, requires_grad=True)
    y = x * 2
    y.register_hook(lambda grad: returned)
    with pytest.raises(TypeError, match=f"expected Variable, but hook returned '{type(returned).__name__}'"):
        y.sum().backward()


def test_a_leaf_hook_returning_no_tensor_is_a_type_error(T):
    x = T.ones(3, requires_grad=True)
    x.register_hook(lambda grad: 1)
    with pytest.raises(TypeError, match="expected Variable, but hook returned 'int'"):
        (x * 2).sum().backward()
    assert x.grad is None


def test_a_tensor_hook_returning_a_tensor_or_none_still_works(T):
    x = T.ones(3, requires_grad=True)
    y = x * 2
    y.register_hook(lambda grad: grad * 10)
    y.register_hook(lambda grad: None)
    y.sum().backward()
    assert x.grad.tolist() == [20.0, 20.0, 20.0]


def test_a_module_full_backward_hook_returning_no_tensor_is_a_type_error(T):
    linear = _nn(T).Linear(2, 2)
    linear.register_full_backward_hook(lambda module, grad_input, grad_output: (3,))
    x = T.ones(1, 2, requires_grad=True)
    with pytest.raises(TypeError, match="expected Variable, but hook returned 'int'"):
        linear(x).sum().backward()


def test_a_node_hook_may_not_fill_a_none_gradient(T):
    x = T.ones(3, requires_grad=True)
    y = x * T.ones(3)  # the second factor needs no gradient: its slot is None
    y.grad_fn.register_hook(lambda grad_inputs, grad_outputs: (grad_inputs[0] * 5, grad_inputs[0]))
    with pytest.raises(RuntimeError, match="can't replace a None gradient with a non-None value"):
        y.sum().backward()


def test_a_node_hook_may_replace_the_gradients_there_are(T):
    x = T.ones(3, requires_grad=True)
    y = x * T.ones(3)
    y.grad_fn.register_hook(lambda grad_inputs, grad_outputs: (grad_inputs[0] * 5, None))
    y.sum().backward()
    assert x.grad.tolist() == [5.0, 5.0, 5.0]


def test_the_rows_of_an_iteration_are_unbinds_views(T):
    x = T.arange(6.0).reshape(3, 2).requires_grad_()
    rows = list(x * 1)
    assert [row.tolist() for row in rows] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert rows[0].grad_fn.name() == "UnbindBackward0"
    (rows[0] * 1 + rows[2] * 3).sum().backward()
    assert x.grad.tolist() == [[1.0, 1.0], [0.0, 0.0], [3.0, 3.0]]


def test_a_row_of_an_iteration_refuses_a_recorded_in_place_write(T):
    first, _ = T.ones(2, 2, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="Output 0 of Unbind is a view and is being modified inplace"):
        first.mul_(2)


def test_rows_of_a_tensor_that_records_nothing_are_written_through(T):
    z = T.zeros(2, 3)
    for i, row in enumerate(z):
        row.add_(i + 1)
    assert z.tolist() == [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    assert list(T.ones(0, 3)) == []
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        iter(T.tensor(1.0))


def test_iterating_over_a_subclass_gives_its_rows_of_that_class(T):
    """PyTorch's __iter__ skips __torch_function__ (gh-54457); its unbind asks, so the rows keep the class, and a
    mode sees the unbind, not the iteration."""

    class Mine(T.Tensor):
        pass

    rows = list(T.arange(4.0).reshape(2, 2).as_subclass(Mine))
    assert [type(row) for row in rows] == [Mine, Mine]
    assert [row.tolist() for row in rows] == [[0.0, 1.0], [2.0, 3.0]]
    seen = []

    class Watching(T.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    plain = T.ones(2, 3)
    with Watching():
        list(plain)
    assert "unbind" in seen and "__iter__" not in seen
