"""The newcomer errors the first-hour programs (test_programs_probe28_onboarding.py) met, in PyTorch's classes and
words: a tensor of several elements through float()/int()/complex(), string labels into torch.tensor, an object
array (a pandas column of mixed values) into torch.tensor, an unused input of autograd.grad, x[0] = v on a leaf
that requires grad, and a Python int as the index of scatter_ (the one-hot Lambda written without
torch.tensor(y)). Each is checked against PyTorch where installed, and against its literal message always."""

import numpy as np
import pytest

from tests.program_errors import raises_alike
from tests.pytorch_programs import OURS, pytorch


def _alike(call, kind, message):
    """``call(torch)`` raises a ``kind`` (or a subclass) whose message starts with ``message``, on chainrule and
    on PyTorch where installed."""
    libraries = [OURS] + [m for m in [pytorch()] if m is not None]
    for m in libraries:
        with pytest.raises(kind) as caught:
            call(m.torch)
        assert str(caught.value).startswith(message), (m.torch.__name__, str(caught.value))


@pytest.mark.parametrize("convert", [float, int, complex])
@pytest.mark.parametrize("shape", [(3,), (0,), (2, 2)])
def test_python_number_of_a_tensor_of_other_than_one_element_is_a_value_error(convert, shape):
    _alike(lambda torch: convert(torch.ones(shape)), ValueError,
           "only one element tensors can be converted to Python scalars")


@pytest.mark.parametrize("convert", [float, int, complex])
def test_python_number_of_one_element_in_any_shape(convert):
    assert convert(OURS.torch.full((1, 1), 7.0)) == convert(7.0)


def test_item_keeps_its_own_words():
    _alike(lambda torch: torch.ones(3).item(), RuntimeError, "a Tensor with 3 elements cannot be converted to Scalar")


@pytest.mark.parametrize("data", [["cat", "dog"], [["a", "b"]], ("a",), [["a"], 1]])
def test_string_labels_first_in_a_list_are_too_many_dimensions(data):
    _alike(lambda torch: torch.tensor(data), ValueError, "too many dimensions 'str'")


@pytest.mark.parametrize("data, kind", [([1, "a"], "str"), ([[1], ["a"]], "str"), ([b"a"], "bytes"),
                                        ([1, b"a"], "bytes")])
def test_a_string_where_a_number_belongs_is_a_type_error_naming_it(data, kind):
    _alike(lambda torch: torch.tensor(data), TypeError, f"new(): invalid data type '{kind}'")


@pytest.mark.parametrize("array", [np.array(["a", "b"]), np.array([1, "a"], dtype=object),
                                   np.array([1, 2], dtype=object)])
@pytest.mark.parametrize("factory", ["tensor", "as_tensor", "from_numpy"])
def test_an_array_of_objects_or_strings_is_refused_by_every_factory(array, factory):
    name = array.dtype.type.__name__
    _alike(lambda torch: getattr(torch, factory)(array), TypeError,
           f"can't convert np.ndarray of type numpy.{name}. The only supported types are: float64, float32, float16, "
           "complex64, complex128, int64, int32, int16, int8, uint64, uint32, uint16, uint8, and bool.")


def test_an_array_of_numbers_still_becomes_a_tensor():
    np.testing.assert_array_equal(OURS.torch.tensor(np.array([[1, 2]], dtype=np.int16)), [[1, 2]])
    assert OURS.torch.tensor(np.array([1.5])).dtype == OURS.torch.float64


@pytest.mark.parametrize("which", [0, 1])
def test_grad_of_an_unused_input_names_its_index(which):
    def call(torch):
        x, unused = torch.ones(2, requires_grad=True), torch.ones(1, requires_grad=True)
        inputs = [unused, x] if which == 0 else [x, unused]
        return torch.autograd.grad((x * 2).sum(), inputs)

    _alike(call, RuntimeError, f"The differentiated Tensor at index {which} appears to not have been used in the "
                               "graph. Set allow_unused=True if this is the desired behavior.")


def test_grad_of_an_unused_input_with_allow_unused_is_none():
    x, unused = OURS.torch.ones(2, requires_grad=True), OURS.torch.ones(1, requires_grad=True)
    gx, gu = OURS.torch.autograd.grad((x * 2).sum(), [x, unused], allow_unused=True)
    np.testing.assert_array_equal(gx, [2.0, 2.0])
    assert gu is None


@pytest.mark.parametrize("write, view", [
    (lambda w: w.__setitem__(0, 5.0), True),  # PyTorch writes through the view w[0]
    (lambda w: w.__setitem__((slice(None), 0), 0.0), True),
    (lambda w: w.__setitem__(slice(1, None), 0.0), True),
    (lambda w: w.__setitem__(None, 0.0), True),  # an unsqueezed view
    (lambda w: w.__setitem__(slice(None), 1.0), False),  # w[:] is w itself
    (lambda w: w.__setitem__(Ellipsis, 1.0), False),
    (lambda w: w.__setitem__((slice(None), slice(None)), 1.0), False),
    (lambda w: w.__setitem__([0, 1], 2.0), False),  # an advanced index: index_put_ on w
    (lambda w: w.__setitem__(w > 0, 0.0), False),
    (lambda w: w.copy_(w.detach() * 0), False),
])
def test_a_write_by_index_into_a_leaf_says_whether_it_went_through_a_view(write, view):
    def call(torch):
        write(torch.ones(2, 3, requires_grad=True))

    _alike(call, RuntimeError, ("a view of a leaf Variable" if view else "a leaf Variable") +
           " that requires grad is being used in an in-place operation")


def test_a_write_by_index_into_a_leaf_under_no_grad_is_the_usual_update():
    w = OURS.torch.ones(2, 3, requires_grad=True)
    with OURS.torch.no_grad():
        w[0] = 5.0
    np.testing.assert_array_equal(w.detach(), [[5, 5, 5], [1, 1, 1]])
    assert w.is_leaf and w.requires_grad


@pytest.mark.parametrize("call", [
    lambda torch: torch.zeros(10).scatter_(0, 3, value=1),
    lambda torch: torch.zeros(10).scatter(0, 3, 1.0),
    lambda torch: torch.zeros(3).gather(0, 1),
    lambda torch: torch.zeros(3).scatter_add(0, 1, torch.ones(1)),
    lambda torch: torch.zeros(3).scatter_reduce(0, 1, torch.ones(1), "sum"),
])
def test_a_python_int_as_the_index_of_gather_or_scatter_is_refused(call):
    raises_alike(lambda m: call(m.torch), "must be Tensor, not int", kind=TypeError)


def test_the_one_hot_lambda_as_the_tutorial_writes_it():
    torch = OURS.torch
    one_hot = torch.zeros(10, dtype=torch.float).scatter_(0, torch.tensor(3), value=1)
    np.testing.assert_array_equal(one_hot, np.eye(10, dtype=np.float32)[3])


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("scores, labels, message", [
    ((3, 4), [[1], [2], [0]], "0D or 1D target tensor expected, multi-target not supported"),  # a column of labels
    ((4,), [[1]], "0D or 1D target tensor expected, multi-target not supported"),
    ((3, 4), [[1, 2, 0]], "Expected input batch_size (3) to match target batch_size (1)."),  # checked first
    ((3, 4), [[1], [2]], "Expected input batch_size (3) to match target batch_size (2)."),
])
def test_a_column_of_class_labels_is_multi_target_in_pytorchs_words_and_order(loss, scores, labels, message):
    def call(torch):
        return getattr(torch.nn.functional, loss)(torch.zeros(scores), torch.tensor(labels))

    kind = ValueError if message.startswith("Expected") else RuntimeError
    _alike(call, kind, message)


def test_a_column_of_labels_squeezed_gives_the_loss():
    torch, F = OURS.torch, OURS.F
    labels = torch.tensor([[1], [2], [0]])
    loss = F.cross_entropy(torch.zeros(3, 4), labels.squeeze(1))
    np.testing.assert_allclose(loss.item(), np.log(4), rtol=1e-6)
