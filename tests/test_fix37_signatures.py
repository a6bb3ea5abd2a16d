"""Argument parsing that accepted calls PyTorch refuses, found by a sweep of every name ours shares with torch
(tests/test_fix37_signatures_sweep.py compares each with PyTorch where it is installed): a dim is an int as
PyTorch's parser reads one (not True, not a NumPy array, not None where the op has no None form), keyword-only
parameters are keyword-only, and sort's stable= overload takes nothing by position. Every refusal is a TypeError
naming the argument; every form PyTorch takes still gives its values. No torch needed here."""

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F

X = autograd.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]])
INDEX = autograd.zeros(2, 1, dtype=autograd.int64)

# a bool where an int dim stands: PyTorch's parser refuses it (True is not dim 1)
BOOL_DIMS = {
    "sum": lambda: X.sum(True), "mean": lambda: X.mean(True), "prod": lambda: X.prod(True),
    "softmax": lambda: X.softmax(True), "F.softmax": lambda: F.softmax(X, True), "unsqueeze": lambda: X.unsqueeze(True),
    "transpose": lambda: X.transpose(True, 0), "cumsum": lambda: X.cumsum(True), "select": lambda: X.select(True, 0),
    "argmax": lambda: X.argmax(True), "sort": lambda: X.sort(True), "autograd.sort": lambda: autograd.sort(X, True),
    "argsort": lambda: X.argsort(True), "narrow": lambda: X.narrow(True, 0, 1),
    "cat": lambda: autograd.cat([X, X], True),
    "stack": lambda: autograd.stack([X, X], True), "max": lambda: X.max(True), "max(dim=)": lambda: X.max(dim=True),
    "autograd.max": lambda: autograd.max(X, True), "logsumexp": lambda: X.logsumexp(True),
    "cummax": lambda: X.cummax(True), "gather": lambda: X.gather(True, INDEX),
    "index_select": lambda: X.index_select(True, autograd.tensor([0])), "movedim": lambda: X.movedim(True, 0),
    "chunk": lambda: X.chunk(2, True), "split": lambda: X.split(1, True), "unbind": lambda: X.unbind(True),
    "roll": lambda: X.roll(1, True), "kthvalue": lambda: X.kthvalue(1, True), "median": lambda: X.median(True),
    "mode": lambda: X.mode(True), "norm": lambda: X.norm(2, True), "all": lambda: X.all(True),
    "amax": lambda: X.amax(True), "count_nonzero": lambda: X.count_nonzero(True), "flatten": lambda: X.flatten(True),
    "unflatten": lambda: X.unflatten(True, (3, 1)), "diff": lambda: X.diff(1, True),
    "flip": lambda: X.flip(True), "repeat": lambda: X.repeat(True, 1), "expand": lambda: X.expand(True, 2, 3),
}


@pytest.mark.parametrize("name", sorted(BOOL_DIMS))
def test_a_bool_is_not_a_dim(name):
    with pytest.raises(TypeError, match="bool"):
        BOOL_DIMS[name]()


ARRAY_DIMS = {
    "max(dim=)": lambda d: X.max(dim=d), "autograd.max": lambda d: autograd.max(X, d), "sum": lambda d: X.sum(d),
    "softmax": lambda d: X.softmax(d), "unsqueeze": lambda d: X.unsqueeze(d), "sort": lambda d: X.sort(d),
    "transpose": lambda d: X.transpose(d, 0), "roll": lambda d: X.roll(1, d),
    "fft": lambda d: autograd.fft.fft(X, dim=d),
}


@pytest.mark.parametrize("name", sorted(ARRAY_DIMS))
def test_a_numpy_array_is_not_a_dim(name):
    with pytest.raises(TypeError, match="argument 'dims?' must be int, not ndarray"):
        ARRAY_DIMS[name](np.array(1))


def test_integers_that_are_dims():
    """A NumPy integer and a 0-d integer tensor are dims, as in PyTorch; a bool beyond a list's first size is read
    as PyTorch reads it; std(input, True) is the unbiased overload, not a dim."""
    assert X.max(np.int64(1)).values.tolist() == [3.0, 5.0]
    assert X.sum(np.int32(0)).tolist() == [3.0, 6.0, 6.0]
    assert X.softmax(autograd.tensor(1)).sum(1).tolist() == pytest.approx([1.0, 1.0])
    assert autograd.sort(X, np.int64(0)).values.tolist() == [[0.0, 1.0, 2.0], [3.0, 5.0, 4.0]]
    assert X.flip(0, True).tolist() == [[4.0, 5.0, 0.0], [2.0, 1.0, 3.0]]  # (PyTorch: dims 0 and 1)
    assert autograd.std(X, True).item() == pytest.approx(np.std(X.numpy(), ddof=1))
    assert autograd.randperm(np.array(3)).sort().values.tolist() == [0, 1, 2]  # (a count is a SymInt: an array will do)


def test_max_min_dim_none_refused():
    for call in (lambda: X.max(dim=None), lambda: autograd.max(X, dim=None), lambda: autograd.min(X, None),
                 lambda: X.min(None, True)):
        with pytest.raises(TypeError, match="argument 'dim' must be int, not NoneType"):
            call()
    with pytest.raises(TypeError, match="keepdim=True without a dim"):
        X.max(keepdim=True)
    with pytest.raises(TypeError, match="keepdim=True without a dim"):
        autograd.min(X, keepdim=True)
    with pytest.raises(TypeError, match="argument 'keepdim' must be bool, not int"):
        X.max(0, 1)
    with pytest.raises(TypeError, match="argument 'keepdim' must be bool, not NoneType"):
        autograd.max(X, 0, None)
    with pytest.raises(TypeError, match="argument 'keepdim' must be bool, not numpy.bool"):
        X.min(0, keepdim=np.True_)
    assert X.max().item() == 5.0 and autograd.min(X).item() == 0.0
    values, indices = autograd.max(X, dim=1, keepdim=True)
    assert values.tolist() == [[3.0], [5.0]] and indices.tolist() == [[0], [1]]
    assert X.min(0).values.tolist() == [0.0, 1.0, 2.0]
    out = autograd.empty(0)
    assert autograd.max(X, out=out) is out and out.item() == 5.0


def test_sort_stable_takes_the_others_by_keyword():
    for call in (lambda: autograd.sort(X, 1, stable=True), lambda: X.sort(1, stable=False),
                 lambda: autograd.sort(X, 1, True, stable=True), lambda: autograd.argsort(X, 1, stable=True),
                 lambda: X.argsort(0, stable=True)):
        with pytest.raises(TypeError, match="positional argument.*stable="):
            call()
    with pytest.raises(TypeError, match="takes from 1 to 3 positional arguments but 4 were given"):
        autograd.sort(X, 1, True, True)
    assert autograd.sort(X, stable=True, dim=0, descending=True).values.tolist() == [[3.0, 5.0, 4.0],
                                                                                       [0.0, 1.0, 2.0]]
    assert X.sort(stable=True).indices.tolist() == [[1, 2, 0], [0, 2, 1]]
    assert autograd.sort(input=X, dim=1, descending=True).values.tolist() == [[3.0, 2.0, 1.0], [5.0, 4.0, 0.0]]
    assert X.sort(1, True).indices.tolist() == [[0, 2, 1], [1, 2, 0]]
    assert autograd.argsort(X, stable=True, descending=True).tolist() == [[0, 2, 1], [1, 2, 0]]
    assert X.argsort(0, True).tolist() == [[0, 1, 1], [1, 0, 0]]


NONE_DIMS = {
    "median": lambda: autograd.median(X, None), "Tensor.median": lambda: X.median(dim=None),
    "nanmedian": lambda: autograd.nanmedian(X, dim=None), "Tensor.nanmedian": lambda: X.nanmedian(None),
    "prod": lambda: autograd.prod(X, None), "Tensor.prod": lambda: X.prod(dim=None, keepdim=True),
    "nuclear_norm": lambda: autograd.nuclear_norm(X, dim=None), "cat": lambda: autograd.cat([X, X], None),
    "logsumexp": lambda: X.logsumexp(None), "cosine_similarity": lambda: F.cosine_similarity(X, X, None),
}


@pytest.mark.parametrize("name", sorted(NONE_DIMS))
def test_none_is_not_a_dim_where_pytorch_has_no_none_form(name):
    with pytest.raises(TypeError, match="argument 'dim' must be (int|tuple of ints), not NoneType"):
        NONE_DIMS[name]()


def test_forms_without_a_dim_still_reduce_everything():
    assert X.median().item() == 2.0 and autograd.nanmedian(X).item() == 2.0
    assert X.median(1).values.tolist() == [2.0, 4.0] and autograd.median(input=X, dim=0).values.tolist() == [0.0, 1.0,
                                                                                                             2.0]
    assert X.prod().item() == 0.0 and autograd.prod(X, 1).tolist() == [6.0, 0.0]
    assert autograd.prod(X, dim=0, keepdim=True).tolist() == [[0.0, 5.0, 8.0]]
    assert autograd.nuclear_norm(X).item() == pytest.approx(np.linalg.norm(X.numpy(), "nuc"), rel=1e-6)
    assert autograd.nuclear_norm(X, True).shape == (1, 1)  # (a bool there is keepdim, PyTorch's overload)
    assert autograd.cat([X, X], -1).shape == (2, 6) and autograd.cat([autograd.tensor([]), X]).shape == (2, 3)
    np.testing.assert_allclose(F.cosine_similarity(X, X + 1, 0).numpy(), [
        np.dot(a, a + 1) / (np.linalg.norm(a) * np.linalg.norm(a + 1)) for a in X.numpy().T], rtol=1e-6)
    np.testing.assert_allclose(X.logsumexp(1).numpy(), np.log(np.exp(X.numpy()).sum(1)), rtol=1e-6)


def test_keyword_only_parameters():
    with pytest.raises(TypeError, match="positional"):
        F.gelu(X, "tanh")
    tanh_form = 0.5 * X.numpy() * (1 + np.tanh(np.sqrt(2 / np.pi) * (X.numpy() + 0.044715 * X.numpy() ** 3)))
    np.testing.assert_allclose(F.gelu(X, approximate="tanh").numpy(), tanh_form, rtol=1e-6)
    np.testing.assert_allclose(nn.GELU("tanh")(X).numpy(), tanh_form, rtol=1e-6)
    for op in ("var", "std"):
        with pytest.raises(TypeError, match="positional"):
            getattr(X, op)(1, True, False, 1)
        expected = getattr(np, op)(X.numpy(), axis=1)
        np.testing.assert_allclose(getattr(X, op)(1, correction=0).numpy(), expected, rtol=1e-6)
    with pytest.raises(TypeError, match="positional"):
        autograd.zeros(6).resize_as_(X, autograd.contiguous_format)
    resized = autograd.zeros(6).resize_as_(X, memory_format=autograd.contiguous_format)
    assert resized.shape == (2, 3)
    with pytest.raises(TypeError, match="positional"):
        X.cpu(autograd.preserve_format)
    assert X.cpu(memory_format=autograd.preserve_format).tolist() == X.tolist()


def test_lp_pool1d_kernel_size_is_an_int():
    x = autograd.arange(8.0).reshape(1, 2, 4)
    for kernel_size in ([2], (2,)):
        with pytest.raises(TypeError, match="lp_pool1d\\(\\): kernel_size must be an int"):
            F.lp_pool1d(x, 2, kernel_size)
        with pytest.raises(TypeError, match="kernel_size must be an int"):
            nn.LPPool1d(2, kernel_size)(x)
    expected = np.sqrt(np.array([[0 + 1, 4 + 9], [16 + 25, 36 + 49]], dtype=np.float32))
    np.testing.assert_allclose(F.lp_pool1d(x, 2, 2, [2]).numpy()[0], expected, rtol=1e-6)  # (a list stride will do)
    assert F.lp_pool1d(x, float("inf"), [2]).tolist() == [[[1.0, 3.0], [5.0, 7.0]]]  # (max pooling takes a list)
    assert F.lp_pool2d(x[None], 1, [1, 2]).tolist() == [[[[1.0, 5.0], [9.0, 13.0]]]]


def test_upsample_scale_factor_list_refused():
    with pytest.raises(TypeError, match="float\\(\\) argument must be"):
        nn.Upsample(scale_factor=[2.0])
    x = autograd.arange(3.0).reshape(1, 1, 3)
    assert nn.Upsample(scale_factor=(2,))(x).tolist() == [[[0.0, 0.0, 1.0, 1.0, 2.0, 2.0]]]
    assert nn.Upsample(scale_factor=2).scale_factor == 2.0
    assert F.interpolate(x, scale_factor=[2.0]).tolist() == [[[0.0, 0.0, 1.0, 1.0, 2.0, 2.0]]]  # (the function does)


def test_size_reads_its_dim_as_pytorch_and_contiguous_takes_memory_format_by_keyword():
    x = autograd.ones(2, 3)
    assert (x.size(1), x.size(-1), x.size(autograd.tensor(1)), x.size(np.int64(0)), x.size(axis=1)) == (3, 3, 3, 2, 3)
    with pytest.raises(TypeError, match="argument 'dim' \\(position 1\\) must be int, not bool"):
        x.size(True)
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 5\)"):
        x.size(5)
    with pytest.raises(IndexError, match="Dimension specified as 0 but tensor has no dimensions"):
        autograd.tensor(1.0).size(0)
    with pytest.raises(TypeError, match="positional argument"):
        x.t().contiguous(autograd.contiguous_format)
    assert x.t().contiguous(memory_format=autograd.contiguous_format).is_contiguous()
