"""``full``/``full_like`` read a 0-d tensor's fill value as its number (PyTorch's Scalar), of any dtype, and refuse
a tensor of more elements in PyTorch's words: Rprop's ``full_like(param, lr)`` with a tensor learning rate."""

import numpy as np
import pytest

import autograd
import optim


@pytest.mark.parametrize("fill, dtype", [(0.25, None), (3, None), (True, autograd.float64)])
def test_a_zero_dimensional_tensor_fills_as_its_number(fill, dtype):
    like = autograd.zeros(2, 3, dtype=autograd.float64)
    made = autograd.full_like(like, autograd.tensor(fill), dtype=dtype)
    assert made.dtype == (dtype or autograd.float64) and made.tolist() == [[float(fill)] * 3] * 2
    assert autograd.full((2,), autograd.tensor(fill)).tolist() == [fill, fill]


def test_a_tensor_of_several_elements_is_refused():
    for name, call in (("full_like", lambda t: autograd.full_like(autograd.zeros(3), t)),
                       ("full", lambda t: autograd.full((3,), t))):
        with pytest.raises(TypeError, match=f"^{name}\\(\\): argument 'fill_value' \\(position 2\\) must be Number, "
                                            "not Tensor$"):
            call(autograd.ones(2))


def test_rprop_with_a_tensor_learning_rate_starts_its_steps_at_it():
    weight = autograd.tensor([1.0, -2.0], requires_grad=True)
    optimizer = optim.Rprop([weight], lr=autograd.tensor(0.01))
    (weight * weight).sum().backward()
    optimizer.step()
    np.testing.assert_allclose(weight.detach().numpy(), [0.99, -1.99], rtol=1e-6)
    np.testing.assert_allclose(optimizer.state[weight]["step_size"].numpy(), [0.01, 0.01], rtol=1e-6)


def test_as_pytorch():
    torch = pytest.importorskip("torch")
    for fill in (0.25, 3, True):
        ours = autograd.full_like(autograd.zeros(2), autograd.tensor(fill))
        theirs = torch.full_like(torch.zeros(2), torch.tensor(fill))
        assert ours.tolist() == theirs.tolist() and str(ours.dtype) == str(theirs.dtype).removeprefix("torch.")
