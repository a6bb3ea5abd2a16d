"""Padding by copying ('reflect', 'replicate', 'circular'; autograd/ops/padding.py), a sliced gather: slice
copies forward, slice additions backward. Checked against finite differences (first and second order) over
hypothesis-drawn shapes and amounts, crops included; against the index gather it replaces, element for element
and bit for bit; and against PyTorch's values, gradients and node names where it is installed."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import nn.functional as F
from autograd.ops.padding import padded_positions
from autograd.ops.sliced_gather import slice_plan
from tests.test_ops import _run, arrays, leaf


@st.composite
def padded(draw, mode):
    """(x, pad): a 2-d to 4-d input and one (before, after) pair per padded dim, as F.pad takes them (last dim
    first); 'replicate' and 'reflect' crop too, within what each keeps."""
    dims = draw(st.integers(1, 2))
    shape = draw(st.lists(st.integers(2, 4), min_size=dims + 1, max_size=dims + 2).map(tuple))
    pad = []
    for size in reversed(shape[-dims:]):
        low = {"replicate": -1, "reflect": -(size - 1) // 2, "circular": 0}[mode]
        high = size - 1 if mode == "reflect" else size
        before = draw(st.integers(low, high))
        pad += [before, draw(st.integers(max(low, 1 - size - before), high))]  # (at least one output left)
    return [leaf(draw(arrays(shape)))], tuple(pad)


def _pad_and_weigh(mode):
    def padded_sum(x, pad):  # (a weight per output element: each gradient element is a different sum)
        y = F.pad(x, pad, mode=mode)
        return y * autograd.arange(y.numel(), dtype=y.dtype).reshape(y.shape).cos()
    return padded_sum


CASES = {"SlicedGather": (padded("replicate"), _pad_and_weigh("replicate")),
         "SlicedGatherSum": (padded("reflect"), _pad_and_weigh("reflect"))}
MODES = {"replicate": CASES["SlicedGather"], "reflect": CASES["SlicedGatherSum"],
         "circular": (padded("circular"), _pad_and_weigh("circular"))}


@pytest.mark.parametrize("mode", list(MODES))
@given(data=st.data())
def test_gradients_match_finite_differences(mode, data):
    tensors, fn = _run(MODES[mode], data)
    assert autograd.gradcheck(fn, tensors)
    assert autograd.gradgradcheck(fn, tensors)  # (FoldedPad's own gradient is the pad again)


@pytest.mark.parametrize("mode", list(MODES))
@given(data=st.data())
def test_the_same_elements_and_sums_as_the_gather_it_replaces(mode, data):
    """Each output is the input at p(j), and each input's gradient the sum of the outputs reading it, added in
    the order of j (as PyTorch's kernels add them), bit for bit."""
    (x,), pad = data.draw(MODES[mode][0])
    x = x.detach().float().requires_grad_()
    y = F.pad(x, pad, mode=mode)
    grad = np.random.default_rng(0).standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(autograd.tensor(grad))
    expected, gathered = x.detach().numpy(), grad
    for k in range(len(pad) // 2):
        dim = x.ndim - 1 - k
        positions = padded_positions(x.shape[dim], pad[2 * k], pad[2 * k + 1], mode)
        expected = np.take(expected, positions, axis=dim)
    np.testing.assert_array_equal(y.detach().numpy(), expected)
    # (the last dim's gradient first, as backward runs: pad lists it first; circular's from the first dim, each input's
    # middle term first, then the right pad's and the left's, as PyTorch's _pad_circular copies the middle's ends)
    for k in range(len(pad) // 2 - 1, -1, -1) if mode == "circular" else range(len(pad) // 2):
        dim = x.ndim - 1 - k
        positions = padded_positions(x.shape[dim], pad[2 * k], pad[2 * k + 1], mode)
        summed = np.zeros(gathered.shape[:dim] + (x.shape[dim],) + gathered.shape[dim + 1:], np.float32)
        order = np.arange(len(positions))
        if mode == "circular":  # (outputs from the middle's first, wrapping round)
            order = np.roll(order, -pad[2 * k])
        for j in order:  # (one output after another, into zeros)
            summed[(slice(None),) * dim + (positions[j],)] += gathered[(slice(None),) * dim + (j,)]
        gathered = summed
    assert x.grad.numpy().tobytes() == gathered.tobytes()


def test_positions_run_in_slices():
    assert slice_plan(padded_positions(5, 2, 3, "replicate")) == [(0, 1, 3, 0, 0), (3, 1, 4, 1, 1), (7, 1, 3, 4, 0)]
    assert slice_plan(padded_positions(5, 2, 3, "reflect")) == [(0, 1, 3, 2, -1), (3, 1, 4, 1, 1), (7, 1, 3, 3, -1)]
    assert slice_plan(padded_positions(4, 3, 2, "circular")) == [(0, 1, 3, 1, 1), (3, 1, 4, 0, 1), (7, 1, 2, 0, 1)]
    assert slice_plan(padded_positions(6, -2, 1, "replicate")) == [(0, 1, 4, 2, 1), (4, 1, 1, 5, 1)]
    x = autograd.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    y = F.pad(x, (2, 1), mode="replicate")
    assert y.tolist() == [[1.0, 1.0, 1.0, 2.0, 3.0, 3.0]]
    y.backward(autograd.tensor([[1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0]]))
    assert x.grad.tolist() == [[111.0, 1000.0, 110000.0]]


def test_a_complex_input_pads_and_its_gradient_adds_up():
    x = autograd.tensor([1 + 2j, 3 - 1j, -2j], requires_grad=True)
    y = F.pad(x[None], (1, 2), mode="reflect")
    assert y.tolist() == [[3 - 1j, 1 + 2j, 3 - 1j, -2j, 3 - 1j, 1 + 2j]]
    y.real.sum().backward()
    assert x.grad.tolist() == [2 + 0j, 3 + 0j, 1 + 0j]


@pytest.mark.parametrize("mode", ["replicate", "reflect", "circular"])
@pytest.mark.parametrize("shape, pad", [((2, 3, 7), (2, 3)), ((2, 3, 7), (-2, 3)), ((2, 3, 5, 6), (1, 2, 3, 4)),
                                        ((1, 2, 4, 5, 6), (1, 2, 0, 3, 2, 1)), ((2, 3, 40), (30, 17))])
def test_as_pytorch(mode, shape, pad):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    values = rng.standard_normal(shape)
    try:
        theirs_y = torch.nn.functional.pad(torch.tensor(values, requires_grad=True), pad, mode=mode)
    except RuntimeError as error:
        with pytest.raises(RuntimeError):
            F.pad(autograd.tensor(values), pad, mode=mode)
        return str(error)
    t = torch.tensor(values, requires_grad=True)
    theirs_y = torch.nn.functional.pad(t, pad, mode=mode)
    grad = rng.standard_normal(tuple(theirs_y.shape))
    theirs_y.backward(torch.tensor(grad))
    x = autograd.tensor(values, requires_grad=True)
    y = F.pad(x, pad, mode=mode)
    y.backward(autograd.tensor(grad))
    np.testing.assert_array_equal(y.detach().numpy(), theirs_y.detach().numpy())
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-13, atol=1e-13)
    assert y.grad_fn.name() == theirs_y.grad_fn.name()


SCATTERED = np.random.default_rng(4).integers(0, 9, 40)  # (in no few runs: the index gather)


@pytest.mark.parametrize("positions", [np.arange(24) // 3, np.minimum((np.arange(15) * 0.6).astype(int), 8),
                                       np.arange(0, 9, 2), np.array([4, 1, 1, 3, 0, 2, 2, 2, 4, 0, 3]), SCATTERED])
def test_any_positions_gather_and_sum_as_numpy_does(positions):
    """Upsampling by 3 and by 5/3 (runs with an output stride), downsampling, and positions in no few runs (the
    index gather): values as NumPy's take, gradients as NumPy's unbuffered add in output order."""
    from autograd.ops.sliced_gather import gather_along

    values = np.random.default_rng(2).standard_normal((2, 9, 3)).astype(np.float32)
    x = autograd.tensor(values, requires_grad=True)
    y = gather_along(x, {1: positions})
    np.testing.assert_array_equal(y.detach().numpy(), np.take(values, positions, axis=1))
    grad = np.random.default_rng(3).standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(autograd.tensor(grad))
    expected = np.zeros_like(values)
    for j, i in enumerate(positions):
        expected[:, i] += grad[:, j]
    assert x.grad.numpy().tobytes() == expected.tobytes()
    assert (slice_plan(positions) is None) == (positions is SCATTERED)
