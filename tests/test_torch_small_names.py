"""The small names of PyTorch's top level: the ``*_copy`` twins of the view ops, as_strided_scatter,
segment_reduce, fill, histogramdd, empty_permuted, slice_inverse, DLPack, the in-place
functions, the autocast state and the runtime flags. Values asserted without PyTorch; float64
gradchecks for the differentiable ones; values, gradients, dtypes and errors against PyTorch
where it is installed (tests marked ``torch``)."""

import importlib
import warnings

import numpy as np
import pytest

import autograd

X = np.arange(1.0, 13.0).reshape(3, 4) / 7 - 0.6  # distinct values, float64


def leaf(array=X):
    return autograd.tensor(np.array(array, dtype=np.float64), requires_grad=True)


# name: (arguments after the input, the input's shape or array), for each differentiable *_copy
COPIES = {
    "alias_copy": ((), X),
    "as_strided_copy": (((2, 2), (1, 2), 1), X),
    "diagonal_copy": ((1, 0, 1), X),
    "expand_copy": (((2, 3, 4),), X),
    "permute_copy": (((1, 0),), X),
    "select_copy": ((1, -2), X),
    "slice_copy": ((1, -3, None, 2), X),
    "squeeze_copy": ((1,), X.reshape(3, 1, 4)),
    "t_copy": ((), X),
    "transpose_copy": ((0, 1), X),
    "unfold_copy": ((1, 2, 1), X),
    "unsqueeze_copy": ((-1,), X),
    "view_copy": (((4, 3),), X),
}
VIEWS = {
    "alias_copy": lambda x: x,
    "as_strided_copy": lambda x: x.as_strided((2, 2), (1, 2), 1),
    "diagonal_copy": lambda x: x.diagonal(1, 0, 1),
    "expand_copy": lambda x: x.expand(2, 3, 4),
    "permute_copy": lambda x: x.permute(1, 0),
    "select_copy": lambda x: x.select(1, -2),
    "slice_copy": lambda x: x[:, -3::2],
    "squeeze_copy": lambda x: x.squeeze(1),
    "t_copy": lambda x: x.t(),
    "transpose_copy": lambda x: x.transpose(0, 1),
    "unfold_copy": lambda x: x.unfold(1, 2, 1),
    "unsqueeze_copy": lambda x: x.unsqueeze(-1),
    "view_copy": lambda x: x.view(4, 3),
}


# -- the *_copy functions -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COPIES))
def test_copy_is_the_view_in_new_memory(name):
    args, array = COPIES[name]
    x = autograd.tensor(array)
    y = getattr(autograd, name)(x, *args)
    np.testing.assert_array_equal(y.numpy(), VIEWS[name](x).numpy())
    assert y.dtype == x.dtype
    before = x.numpy().copy()
    y.fill_(5.0)
    np.testing.assert_array_equal(x.numpy(), before)  # the copy owns its memory


@pytest.mark.parametrize("name", sorted(COPIES))
def test_copy_gradients_are_the_views(name):
    args, array = COPIES[name]
    function = getattr(autograd, name)
    assert autograd.gradcheck(lambda x: function(x, *args), [leaf(array)])
    shape = VIEWS[name](autograd.tensor(array)).shape
    x, weights = leaf(array), autograd.tensor(np.random.default_rng(0).normal(size=shape))
    (function(x, *args) * weights).sum().backward()
    y = leaf(array)
    (VIEWS[name](y) * weights).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), y.grad.numpy())


def test_copies_giving_several_tensors():
    x = leaf()
    pieces = autograd.split_copy(x, 2, 1)
    assert isinstance(pieces, tuple) and [p.shape for p in pieces] == [(3, 2), (3, 2)]
    assert autograd.gradcheck(lambda x: autograd.split_copy(x, 2)[1], [leaf()])
    assert autograd.gradcheck(lambda x: autograd.split_with_sizes_copy(x, [1, 3], 1)[1], [leaf()])
    assert autograd.gradcheck(lambda x: autograd.unbind_copy(x, 1)[2], [leaf()])
    np.testing.assert_array_equal(autograd.unbind_copy(x)[1].detach().numpy(), X[1])
    out = [autograd.empty(0, dtype=autograd.float64), autograd.empty(0, dtype=autograd.float64)]
    assert autograd.split_copy(autograd.tensor(X), 2, out=out) is None
    np.testing.assert_array_equal(out[0].numpy(), X[:2])
    np.testing.assert_array_equal(out[1].numpy(), X[2:])
    out = [autograd.empty(3, dtype=autograd.float64) for _ in range(4)]
    assert autograd.unbind_copy(autograd.tensor(X), 1, out=out) is None
    np.testing.assert_array_equal(out[3].numpy(), X[:, 3])


def test_copy_out_and_errors():
    out = autograd.empty(4, 3, dtype=autograd.float64)
    assert autograd.t_copy(autograd.tensor(X), out=out) is out
    np.testing.assert_array_equal(out.numpy(), X.T)
    with pytest.raises(RuntimeError, match="slice step must be positive"):
        autograd.slice_copy(autograd.tensor(X), 1, 0, 4, 0)
    with pytest.raises(RuntimeError, match="don't support automatic differentiation"):
        autograd.t_copy(leaf(), out=autograd.empty(4, 3, dtype=autograd.float64))


def test_detach_view_and_complex_copies():
    x = leaf()
    d = autograd.detach_copy(x)
    assert not d.requires_grad and d.grad_fn is None  # (PyTorch's claims grad, then fails at backward)
    np.testing.assert_array_equal(d.numpy(), X)
    as_int = autograd.view_copy(autograd.tensor(X.astype(np.float32)), autograd.int32)
    assert as_int.dtype == autograd.int32 and not as_int.requires_grad
    np.testing.assert_array_equal(as_int.numpy(), X.astype(np.float32).view(np.int32))
    assert autograd.view_copy(autograd.tensor(X), dtype=autograd.int64).dtype == autograd.int64
    assert autograd.view_copy(input=autograd.tensor(X), size=[12]).shape == (12,)
    halves = autograd.view_copy(autograd.tensor(X.astype(np.float32)), autograd.float16)
    assert halves.shape == (3, 8)
    with pytest.raises(RuntimeError, match="stride"):
        autograd.view_copy(autograd.tensor(X.astype(np.float32)).t(), autograd.float16)
    z = autograd.tensor(np.array([1 + 2j, 3 - 4j]))
    pairs = autograd.view_as_real_copy(z)
    np.testing.assert_array_equal(pairs.numpy(), [[1, 2], [3, -4]])
    np.testing.assert_array_equal(autograd.view_as_complex_copy(pairs).numpy(), z.numpy())
    assert autograd.gradcheck(lambda p: autograd.view_as_real_copy(autograd.view_as_complex_copy(p)) * p,
                              [leaf(np.arange(6.0).reshape(3, 2))])


# -- as_strided_, as_strided_scatter, slice_inverse ---------------------------------------------


def test_as_strided_scatter_values_and_gradients():
    x = autograd.zeros(3, 4)
    y = autograd.as_strided_scatter(x, autograd.ones(2, 2), (2, 2), (1, 2), 1)
    np.testing.assert_array_equal(y.numpy(), [[0, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(x.numpy(), np.zeros((3, 4)))  # a new tensor
    src = np.arange(4.0).reshape(2, 2)
    # in input's memory: x[1:] starts at x's element 4; x[:, ::2]'s gaps take nothing
    shifted = autograd.as_strided_scatter(autograd.zeros(3, 4)[1:], autograd.tensor(src), (2, 2), (1, 2))
    np.testing.assert_array_equal(shifted.numpy(), [[0, 2, 1, 3], [0, 0, 0, 0]])
    gapped = autograd.as_strided_scatter(autograd.zeros(3, 4)[:, ::2], autograd.tensor(src), (2, 2), (1, 2), 1)
    np.testing.assert_array_equal(gapped.numpy(), [[0, 2], [3, 0], [0, 0]])
    for offset in (0, 1, 3):
        assert autograd.gradcheck(lambda a, b, offset=offset: autograd.as_strided_scatter(a, b, (2, 2), (1, 2), offset),
                                  [leaf(), leaf(src)])
    a, b = leaf(), leaf(src)
    autograd.as_strided_scatter(a, b, (2, 2), (1, 2), 1).backward(autograd.tensor(np.arange(12.0).reshape(3, 4)))
    np.testing.assert_array_equal(a.grad.numpy(), [[0, 0, 0, 0], [0, 5, 6, 7], [8, 9, 10, 11]])
    np.testing.assert_array_equal(b.grad.numpy(), [[1, 3], [2, 4]])


def test_as_strided_scatter_errors():
    with pytest.raises(RuntimeError, match=r"src size = \[3\], slice size = \[2, 2\]"):
        autograd.as_strided_scatter(autograd.zeros(3, 4), autograd.ones(3), (2, 2), (1, 2))
    with pytest.raises(RuntimeError, match="more than one element"):
        autograd.as_strided_scatter(autograd.zeros(3, 4), autograd.ones(4), (4,), (0,))
    with pytest.raises(RuntimeError, match="out of bounds"):
        autograd.as_strided_scatter(autograd.zeros(3, 4), autograd.ones(2, 2), (2, 2), (8, 4), 1)


def test_as_strided_in_place_function_and_slice_inverse():
    x = autograd.arange(6.0)
    assert autograd.as_strided_(x, (2, 2), (2, 1)) is x
    np.testing.assert_array_equal(x.numpy(), [[0, 1], [2, 3]])
    base = autograd.arange(10.0)
    np.testing.assert_array_equal(autograd.slice_inverse(base[2:8:2], base, 0, 2, 8, 2).numpy(), np.arange(10.0))
    grid = autograd.tensor(X)
    np.testing.assert_array_equal(autograd.slice_inverse(grid[:, 1:3], grid, 1, 1, 3).numpy(), X)


# -- segment_reduce ---------------------------------------------------------------------------

DATA = np.array([1.0, 3.0, 3.0, 2.0, 5.0, -1.0, -1.0, 4.0])
LENGTHS = [3, 0, 2, 3]


def test_segment_reduce_values():
    data, lengths = autograd.tensor(DATA), autograd.tensor(LENGTHS)
    expected = {"sum": [7, 0, 7, 2], "mean": [7 / 3, np.nan, 3.5, 2 / 3], "prod": [9, 1, 10, 4],
                "max": [3, -np.inf, 5, 4], "min": [1, np.inf, 2, -1]}
    with_initial = {"sum": [9, 2, 9, 4], "mean": [3, 2, 4.5, 4 / 3], "prod": [18, 2, 20, 8], "max": [3, 2, 5, 4],
                    "min": [1, 2, 2, -1]}
    for reduce in expected:
        y = autograd.segment_reduce(data, reduce, lengths=lengths)
        assert y.dtype == autograd.float64
        np.testing.assert_allclose(y.numpy(), expected[reduce])
        by_offsets = autograd.segment_reduce(data, reduce, offsets=autograd.tensor([0, 3, 3, 5, 8]))
        np.testing.assert_allclose(by_offsets.numpy(), expected[reduce])
        np.testing.assert_allclose(autograd.segment_reduce(data, reduce, lengths=lengths, initial=2.0).numpy(),
                                   with_initial[reduce])
    batched = autograd.segment_reduce(autograd.tensor(np.arange(12.0).reshape(4, 3)), "sum",
                                      lengths=autograd.tensor([[1, 2], [3, 0], [0, 3], [2, 1]]), axis=1)
    np.testing.assert_array_equal(batched.numpy(), [[0, 3], [12, 0], [0, 21], [19, 11]])
    along_rows = autograd.segment_reduce(autograd.tensor(np.arange(12.0).reshape(4, 3)), "max",
                                         lengths=autograd.tensor([1, 3]))
    np.testing.assert_array_equal(along_rows.numpy(), [[0, 1, 2], [9, 10, 11]])


@pytest.mark.parametrize("reduce", ["sum", "mean", "prod", "max", "min"])
def test_segment_reduce_gradcheck(reduce):
    data = np.array([0.3, -1.2, 0.7, 2.1, -0.4, 1.5, 0.9, -2.2])
    # (an empty segment's max is -inf without initial: finite differences of it are inf - inf)
    assert autograd.gradcheck(lambda d: autograd.segment_reduce(d, reduce, lengths=autograd.tensor([3, 2, 3])),
                              [leaf(data)])
    assert autograd.gradcheck(lambda d: autograd.segment_reduce(d, reduce, lengths=autograd.tensor([3, 0, 2, 3]),
                                                                initial=0.5), [leaf(data)])
    grid = np.random.default_rng(1).normal(size=(3, 5, 2))
    per_row = autograd.tensor([[2, 3], [4, 1], [1, 4]])
    assert autograd.gradcheck(lambda d: autograd.segment_reduce(d, reduce, lengths=per_row, axis=1), [leaf(grid)])
    assert autograd.gradcheck(lambda d: autograd.segment_reduce(d, reduce, offsets=autograd.tensor([0, 1, 3]),
                                                                unsafe=True), [leaf(grid)])


def test_segment_reduce_ties_share_the_gradient_whatever_its_sign():
    d = leaf([3.0, 3.0, 1.0])
    y = autograd.segment_reduce(d, "max", lengths=autograd.tensor([3]))
    y.backward(autograd.tensor([-2.0], dtype=autograd.float64))
    np.testing.assert_array_equal(d.grad.numpy(), [-1, -1, 0])  # (PyTorch's: [-2, -2, 0])


def test_segment_reduce_errors():
    data = autograd.tensor(DATA)
    with pytest.raises(RuntimeError, match="Either lengths or offsets"):
        autograd.segment_reduce(data, "sum")
    with pytest.raises(RuntimeError, match="sum to"):
        autograd.segment_reduce(data, "sum", lengths=autograd.tensor([1, 2]))
    with pytest.raises(RuntimeError, match="negative"):
        autograd.segment_reduce(data, "sum", lengths=autograd.tensor([-1, 9]))
    with pytest.raises(RuntimeError, match="reduce argument must be"):
        autograd.segment_reduce(data, "median", lengths=autograd.tensor([8]))
    with pytest.raises(RuntimeError, match="indices based reduction"):
        autograd.segment_reduce(data, "sum", indices=autograd.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="last dimension of lengths"):
        autograd.segment_reduce(data.reshape(2, 4), "sum", lengths=autograd.tensor([4]), axis=1)
    with pytest.raises(NotImplementedError, match="Int"):
        autograd.segment_reduce(autograd.tensor([1, 2], dtype=autograd.int32), "sum", lengths=autograd.tensor([2]))
    with pytest.raises(NotImplementedError, match="Float"):
        autograd.segment_reduce(data, "sum", lengths=autograd.tensor([8.0]))
    with pytest.raises(RuntimeError, match="offsets"):
        autograd.segment_reduce(data, "sum", offsets=autograd.tensor([0, 5, 3]))


# -- fill, histogramdd, empty_permuted, the in-place functions ----------------------------------


def test_fill():
    x, v = leaf([1.0, np.nan]), autograd.tensor(3.0, dtype=autograd.float64, requires_grad=True)
    y = autograd.fill(x, v)
    np.testing.assert_array_equal(y.detach().numpy(), [3, 3])
    (y * autograd.tensor([2.0, 5.0], dtype=autograd.float64)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0])
    assert v.grad.item() == 7.0
    ints = autograd.fill(autograd.tensor([1, 2]), 2.7)
    assert ints.dtype == autograd.int64 and ints.tolist() == [2, 2]
    with pytest.raises(RuntimeError, match="0-dimension value tensor"):
        autograd.fill(autograd.ones(2), autograd.ones(2))


def test_histogramdd():
    points = autograd.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 2.0], [2.0, 2.0]])
    hist, edges = autograd.histogramdd(points, bins=[2, 2])
    np.testing.assert_array_equal(hist.numpy(), [[1, 1], [0, 2]])
    assert hist.dtype == autograd.float32 and len(edges) == 2
    np.testing.assert_array_equal(edges[0].numpy(), [0, 1, 2])
    weighted = autograd.histogramdd(points, 2, range=[0.0, 1.0, 0.0, 2.0], weight=autograd.tensor([1.0, 2, 3, 4]),
                                    density=True)
    np.testing.assert_allclose(weighted.hist.numpy(), [[1 / 3, 0], [0, 5 / 3]], rtol=1e-6)
    with pytest.raises(RuntimeError, match="size of bins"):
        autograd.histogramdd(points, bins=[2])
    with pytest.raises(RuntimeError, match="range should have 4 elements"):
        autograd.histogramdd(points, 2, range=[0.0, 1.0])
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        autograd.histogramdd(autograd.tensor([1.0, 2.0]), 2)


def test_empty_permuted():
    t = autograd.empty_permuted((2, 3, 5, 7), (0, 2, 3, 1), dtype=autograd.float64)
    assert tuple(t.shape) == (2, 3, 5, 7) and t.stride() == (105, 1, 21, 3) and t.dtype == autograd.float64
    assert autograd.empty_permuted((2, 3), (1, 0), requires_grad=True).requires_grad
    with pytest.raises(RuntimeError, match="Duplicate dim"):
        autograd.empty_permuted((2, 3), (0, 0))
    with pytest.raises(RuntimeError, match="does not match the length"):
        autograd.empty_permuted((2, 3), (0,))


def test_in_place_functions():
    z = autograd.tensor(np.array([1 + 2j]))
    assert autograd.conj_physical_(z) is z and z.numpy()[0] == 1 - 2j
    y = autograd.ones(2)
    assert autograd.addmv_(y, autograd.ones(2, 3), autograd.ones(3), beta=2) is y
    np.testing.assert_array_equal(y.numpy(), [5, 5])
    w = autograd.tensor([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]])
    assert autograd.embedding_renorm_(w, autograd.tensor([0, 0, 2]), 1.0, 2.0) is w
    np.testing.assert_allclose(w.numpy(), [[0.6, 0.8], [0.3, 0.4], [0.6, 0.8]], rtol=1e-6)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        autograd.embedding_renorm_(autograd.ones(2, 2, requires_grad=True), autograd.tensor([0]), 1.0, 2.0)
    with pytest.raises(RuntimeError, match="2-dimensional"):
        autograd.embedding_renorm_(autograd.ones(2), autograd.tensor([0]), 1.0, 2.0)
    with pytest.raises(RuntimeError, match="Long, Int"):
        autograd.embedding_renorm_(autograd.ones(2, 2), autograd.tensor([0.0]), 1.0, 2.0)
    assert autograd.get_device(autograd.ones(1)) == -1
    with pytest.raises(TypeError, match="must be Tensor"):
        autograd.get_device(3)


# -- DLPack -----------------------------------------------------------------------------------


def test_utils_dlpack_and_model_zoo_are_pytorchs_module_paths():
    import autograd.utils.dlpack
    import autograd.utils.model_zoo

    array = np.arange(3.0)
    shared = autograd.utils.dlpack.from_dlpack(array)
    array[0] = 5.0
    assert shared.tolist() == [5.0, 1.0, 2.0]
    assert autograd.utils.dlpack.to_dlpack == autograd.to_dlpack  # (==: a dispatching wrapper once a subclass of
    # Tensor takes part in calls, autograd/overrides.py)
    assert autograd.utils.model_zoo.load_url is autograd.hub.load_state_dict_from_url


def test_dlpack_with_numpy():
    x = autograd.arange(4.0)
    shared = np.from_dlpack(x)
    shared[0] = 10.0
    assert x[0].item() == 10.0
    assert x.__dlpack_device__() == (1, 0)
    array = np.arange(3.0)
    y = autograd.from_dlpack(array)
    array[1] = 7.0
    assert y.tolist() == [0.0, 7.0, 2.0] and y.dtype == autograd.float64
    round_trip = autograd.from_dlpack(autograd.to_dlpack(autograd.arange(2.0)))
    assert round_trip.tolist() == [0.0, 1.0]
    with pytest.raises(BufferError, match="require gradient"):
        np.from_dlpack(autograd.ones(2, requires_grad=True))
    with pytest.raises(TypeError, match="__dlpack__"):
        autograd.from_dlpack([1, 2])


# -- autocast state ---------------------------------------------------------------------------


def test_autocast_state_functions_share_autocasts_state():
    assert autograd.is_autocast_enabled() is False and autograd.is_autocast_enabled("cpu") is False
    assert autograd.get_autocast_dtype("cuda") == autograd.float16
    assert autograd.is_autocast_cache_enabled()
    with pytest.raises(RuntimeError, match="device type at start of device string: foo"):
        autograd.get_autocast_dtype("foo")
    autograd.set_autocast_dtype("cpu", autograd.float32)
    try:
        assert autograd.get_autocast_dtype("cpu") == autograd.float32
        with pytest.warns(DeprecationWarning, match="get_autocast_dtype"):
            assert autograd.get_autocast_cpu_dtype() == autograd.float32
        with autograd.autocast("cpu", dtype=autograd.float16, enabled=False, cache_enabled=False):
            assert autograd.get_autocast_dtype("cpu") == autograd.float16
            assert not autograd.is_autocast_cache_enabled() and not autograd.is_autocast_enabled("cpu")
            assert autograd.autocast_increment_nesting() == 2 and autograd.autocast_decrement_nesting() == 1
        assert autograd.get_autocast_dtype("cpu") == autograd.float32 and autograd.is_autocast_cache_enabled()
    finally:
        autograd.set_autocast_dtype("cpu", autograd.float16)
    assert autograd.autocast_increment_nesting() == 1 and autograd.autocast_decrement_nesting() == 0
    with pytest.raises(NotImplementedError, match="outside an autocast block is not built"):
        autograd.set_autocast_enabled("cpu", True)
    with autograd.autocast("cpu", enabled=False):  # (inside a block the switch works: the block's mode casts)
        assert not autograd.is_autocast_enabled("cpu")
    with autograd.autocast("cpu"), autograd.autocast("cpu", enabled=False):
        autograd.set_autocast_enabled("cpu", True)
        assert (autograd.ones(2, 2) @ autograd.ones(2, 2)).dtype == autograd.float16
    with pytest.raises(TypeError, match="must be bool"):
        autograd.set_autocast_enabled("cpu", 1)
    autograd.set_autocast_cache_enabled(False)
    assert not autograd.is_autocast_cache_enabled()
    autograd.set_autocast_cache_enabled(True)
    assert autograd.clear_autocast_cache() is None
    if not autograd.cuda.is_available():  # without a GPU, the "cuda" flag changes nothing: kept, as PyTorch's
        autograd.set_autocast_enabled(True)
        assert autograd.is_autocast_enabled("cuda") and not autograd.is_autocast_enabled("cpu")
        autograd.set_autocast_enabled("cuda", False)
        assert not autograd.is_autocast_enabled()


# -- runtime flags ----------------------------------------------------------------------------


def test_runtime_flags():
    assert autograd.set_flush_denormal(True) is False and autograd.set_flush_denormal(False) is False
    assert autograd.get_num_interop_threads() >= 1
    autograd.set_num_interop_threads(2)
    assert autograd.get_num_interop_threads() == 2
    for bad, message in ((0, "positive integer"), ("a", "expects an int"), (True, "expects an int")):
        with pytest.raises(RuntimeError, match=message):
            autograd.set_num_interop_threads(bad)
    assert autograd.init_num_threads() is None
    assert autograd.is_warn_always_enabled() is False
    autograd.set_warn_always(True)
    assert autograd.is_warn_always_enabled()
    autograd.set_warn_always(False)
    assert autograd.is_anomaly_check_nan_enabled()
    autograd.set_anomaly_enabled(True)
    assert autograd.is_anomaly_enabled()
    autograd.set_anomaly_enabled(False)
    assert not autograd.is_anomaly_enabled()
    autograd.set_anomaly_enabled(True, False)  # on, without the check of values
    try:
        assert autograd.is_anomaly_enabled() and not autograd.is_anomaly_check_nan_enabled()
        x = autograd.tensor([0.0], requires_grad=True)
        (x.log() * 0).backward()  # NaN, as PyTorch's check_nan=False lets through
        assert np.isnan(x.grad.item())
    finally:
        autograd.set_anomaly_enabled(False)
    assert not autograd.is_anomaly_enabled() and autograd.is_anomaly_check_nan_enabled()
    with autograd.autograd.detect_anomaly(check_nan=False):
        assert autograd.is_anomaly_enabled() and not autograd.is_anomaly_check_nan_enabled()
    with autograd.autograd.detect_anomaly():
        x = autograd.tensor([0.0], requires_grad=True)
        with pytest.raises(RuntimeError, match="Function 'LogBackward0' returned nan values"):
            (x.log() * 0).backward()


def test_deterministic_debug_mode_is_use_deterministic_algorithms():
    try:
        for mode, (number, on, warn_only) in {"default": (0, False, False), "warn": (1, True, True),
                                              "error": (2, True, False), 1: (1, True, True)}.items():
            autograd.set_deterministic_debug_mode(mode)
            assert autograd.get_deterministic_debug_mode() == number
            assert autograd.are_deterministic_algorithms_enabled() is on
            assert autograd.is_deterministic_algorithms_warn_only_enabled() is warn_only
        autograd.use_deterministic_algorithms(True)
        assert autograd.get_deterministic_debug_mode() == 2
        with pytest.raises(RuntimeError, match="expected 0, 1, or 2, but got 3"):
            autograd.set_deterministic_debug_mode(3)
        with pytest.raises(RuntimeError, match="one of `default`, `warn`, `error`"):
            autograd.set_deterministic_debug_mode("x")
        with pytest.raises(TypeError, match="must be str or int"):
            autograd.set_deterministic_debug_mode(1.0)
    finally:
        autograd.use_deterministic_algorithms(False)


def test_set_default_tensor_type():
    try:
        with pytest.warns(UserWarning, match="deprecated as of PyTorch 2.1"):
            autograd.set_default_tensor_type("torch.DoubleTensor")
        assert autograd.get_default_dtype() == autograd.float64 and autograd.tensor([1.5]).dtype == autograd.float64
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            autograd.set_default_tensor_type(autograd.FloatTensor)
            assert autograd.get_default_dtype() == autograd.float32
            with pytest.raises(TypeError, match="only floating-point types"):
                autograd.set_default_tensor_type("torch.LongTensor")
            with pytest.raises(TypeError, match="only floating-point types"):
                autograd.set_default_tensor_type(autograd.LongTensor)
            with pytest.raises(AttributeError, match="Foo"):
                autograd.set_default_tensor_type("torch.Foo")
    finally:
        autograd.set_default_dtype(autograd.float32)


def test_typename_is_storage_and_paths():
    assert autograd.typename(autograd.tensor([1])) == "torch.LongTensor"
    assert autograd.typename(autograd.zeros(2)) == "torch.FloatTensor"
    assert autograd.typename(autograd.Tensor) == "autograd.tensor.Tensor"
    assert autograd.typename(3) == "int" and autograd.typename(int) == "int"
    assert autograd.is_storage(autograd.zeros(2)) is False
    import os

    assert os.path.isfile(autograd.get_file_path("autograd", "tensor.py"))
    assert autograd.prepare_multiprocessing_environment("somewhere") is None


# -- against PyTorch --------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(COPIES))
def test_copies_match_torch(name):
    torch = pytest.importorskip("torch")
    args, array = COPIES[name]
    ours, theirs = leaf(array), torch.tensor(array, requires_grad=True)
    y, t = getattr(autograd, name)(ours, *args), getattr(torch, name)(theirs, *args)
    np.testing.assert_array_equal(y.detach().numpy(), t.detach().numpy())
    assert str(y.dtype) == str(t.dtype).removeprefix("torch.")
    weights = np.random.default_rng(2).normal(size=tuple(t.shape))
    (y * autograd.tensor(weights)).sum().backward()
    (t * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12)


@pytest.mark.torch
def test_several_copies_and_dtype_views_match_torch():
    torch = pytest.importorskip("torch")
    x, t = autograd.tensor(X), torch.tensor(X)
    for name, args in (("split_copy", (2, 1)), ("split_with_sizes_copy", ([1, 2],)), ("unbind_copy", (1,))):
        ours, theirs = getattr(autograd, name)(x, *args), getattr(torch, name)(t, *args)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    f32 = X.astype(np.float32)
    for dtype in ("int32", "float16", "float64", "uint8"):
        ours = autograd.view_copy(autograd.tensor(f32), getattr(autograd, dtype))
        theirs = torch.view_copy(torch.tensor(f32), getattr(torch, dtype))
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    z = np.array([1 + 2j, 3 - 4j])
    np.testing.assert_array_equal(autograd.view_as_real_copy(autograd.tensor(z)).numpy(),
                                  torch.view_as_real_copy(torch.tensor(z)).numpy())
    with pytest.raises(RuntimeError, match="slice step must be positive"):
        torch.slice_copy(t, 1, 0, 4, 0)


@pytest.mark.torch
def test_as_strided_scatter_matches_torch():
    torch = pytest.importorskip("torch")
    src = np.arange(4.0).reshape(2, 2)
    cases = [(lambda m: m.zeros(3, 4, dtype=m.float64), (1,)), (lambda m: m.zeros(3, 4, dtype=m.float64).t(), (1,)),
             (lambda m: m.zeros(3, 4, dtype=m.float64)[:, ::2], (1,)),
             (lambda m: m.zeros(3, 4, dtype=m.float64)[1:], ())]
    for make, offset in cases:
        ours = autograd.as_strided_scatter(make(autograd), autograd.tensor(src), (2, 2), (1, 2), *offset)
        theirs = torch.as_strided_scatter(make(torch), torch.tensor(src), (2, 2), (1, 2), *offset)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    # src's gradient as PyTorch's; input's is checked by gradcheck above (PyTorch 2.13's is its complement:
    # its own gradcheck of as_strided_scatter fails)
    b, tb = leaf(src), torch.tensor(src, requires_grad=True)
    grad = np.arange(12.0).reshape(3, 4)
    autograd.as_strided_scatter(autograd.zeros(3, 4, dtype=autograd.float64), b, (2, 2), (1, 2), 1).backward(
        autograd.tensor(grad))
    torch.as_strided_scatter(torch.zeros(3, 4, dtype=torch.float64), tb, (2, 2), (1, 2), 1).backward(
        torch.tensor(grad))
    np.testing.assert_array_equal(b.grad.numpy(), tb.grad.numpy())


@pytest.mark.torch
@pytest.mark.parametrize("reduce", ["sum", "mean", "prod", "max", "min"])
def test_segment_reduce_matches_torch(reduce):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    data = rng.normal(size=(8, 3))  # no ties: PyTorch and chainrule agree on every gradient
    grad_weights = rng.normal(size=(4, 3))
    for kwargs in ({"lengths": [3, 0, 2, 3]}, {"offsets": [0, 3, 3, 5, 8]}, {"lengths": [3, 0, 2, 3], "initial": 0.5}):
        ours, theirs = leaf(data), torch.tensor(data, requires_grad=True)
        ours_kwargs = {k: autograd.tensor(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        theirs_kwargs = {k: torch.tensor(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        y = autograd.segment_reduce(ours, reduce, **ours_kwargs)
        t = torch.segment_reduce(theirs, reduce, **theirs_kwargs)
        np.testing.assert_allclose(y.detach().numpy(), t.detach().numpy(), rtol=1e-12)
        y.backward(autograd.tensor(grad_weights))
        t.backward(torch.tensor(grad_weights))
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12, atol=1e-15)
    per_row = [[1, 2], [3, 0], [0, 3], [2, 1]]
    grid = rng.normal(size=(4, 3))
    np.testing.assert_allclose(
        autograd.segment_reduce(autograd.tensor(grid), reduce, lengths=autograd.tensor(per_row), axis=1).numpy(),
        torch.segment_reduce(torch.tensor(grid), reduce, lengths=torch.tensor(per_row), axis=1).numpy())


@pytest.mark.torch
def test_segment_reduce_errors_match_torch():
    torch = pytest.importorskip("torch")
    for m in (autograd, torch):
        data = m.tensor(DATA)
        with pytest.raises(RuntimeError, match="Either lengths or offsets"):
            m.segment_reduce(data, "sum")
        with pytest.raises(RuntimeError, match="to sum to"):
            m.segment_reduce(data, "sum", lengths=m.tensor([1, 2]))
        with pytest.raises(RuntimeError, match="reduce argument must be either sum, prod, mean, amax or amin"):
            m.segment_reduce(data, "median", lengths=m.tensor([8]))
        with pytest.raises(NotImplementedError, match="not implemented for 'Int'"):
            m.segment_reduce(m.tensor([1, 2], dtype=m.int32), "sum", lengths=m.tensor([2]))


@pytest.mark.torch
def test_fill_histogramdd_empty_permuted_embedding_renorm_match_torch():
    torch = pytest.importorskip("torch")
    for value in (2.7, 2, True):
        for array in ([1, 2], [1.5, 2.5], [True, False]):
            ours, theirs = autograd.fill(autograd.tensor(array), value), torch.fill(torch.tensor(array), value)
            assert ours.tolist() == theirs.tolist() and str(ours.dtype) == str(theirs.dtype).removeprefix("torch.")
    points = np.random.default_rng(4).normal(size=(20, 3))
    weight = np.random.default_rng(5).uniform(size=20)
    for bins, kwargs in ((4, {}), ([2, 3, 4], {"density": True}), (3, {"range": [-1.0, 1, -2, 2, 0, 1]}),
                         (2, {"weight": weight})):
        ours = autograd.histogramdd(autograd.tensor(points), bins,
                                    **{k: autograd.tensor(v) if k == "weight" else v for k, v in kwargs.items()})
        theirs = torch.histogramdd(torch.tensor(points), bins,
                                   **{k: torch.tensor(v) if k == "weight" else v for k, v in kwargs.items()})
        np.testing.assert_allclose(ours.hist.numpy(), theirs.hist.numpy(), rtol=1e-12)
        for a, b in zip(ours.bin_edges, theirs.bin_edges):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)
    for size, layout in (((2, 3, 5, 7), (0, 2, 3, 1)), ((4, 5), (1, 0)), ((2, 3, 4), (2, 0, 1))):
        assert autograd.empty_permuted(size, layout).stride() == torch.empty_permuted(size, layout).stride()
    rows = np.array([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0], [1.0, -2.0]])
    for norm_type in (1.0, 2.0, 3.0):
        ours, theirs = autograd.tensor(rows), torch.tensor(rows)
        autograd.embedding_renorm_(ours, autograd.tensor([[0, 3], [2, 0]]), 1.5, norm_type)
        torch.embedding_renorm_(theirs, torch.tensor([[0, 3], [2, 0]]), 1.5, norm_type)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)


@pytest.mark.torch
def test_dlpack_with_torch():
    torch = pytest.importorskip("torch")
    x = autograd.arange(4.0)
    t = torch.from_dlpack(x)
    t[0] = 10.0
    assert x.tolist() == [10.0, 1.0, 2.0, 3.0] and t.dtype == torch.float32
    source = torch.arange(6.0).reshape(2, 3).t()
    y = autograd.from_dlpack(source)
    source[0, 0] = -1.0
    assert y.tolist() == source.tolist() and y.stride() == source.stride()
    assert autograd.from_dlpack(torch.to_dlpack(torch.arange(3.0))).tolist() == [0.0, 1.0, 2.0]
    assert torch.from_dlpack(autograd.to_dlpack(autograd.arange(2.0))).tolist() == [0.0, 1.0]
    with pytest.raises(BufferError, match="require gradient"):
        torch.from_dlpack(autograd.ones(2, requires_grad=True))
    assert x.__dlpack_device__() == tuple(int(v) for v in t.__dlpack_device__())


@pytest.mark.torch
def test_flags_match_torch():
    torch = pytest.importorskip("torch")
    for m in (autograd, torch):
        assert m.get_autocast_dtype("cuda") == m.float16
        assert m.is_autocast_enabled() is False and m.is_autocast_cache_enabled() is True
        assert [m.autocast_increment_nesting(), m.autocast_increment_nesting(), m.autocast_decrement_nesting(),
                m.autocast_decrement_nesting()] == [1, 2, 1, 0]
        assert m.is_anomaly_check_nan_enabled() and m.is_warn_always_enabled() is False
        assert m.get_deterministic_debug_mode() == 0
        with pytest.raises(RuntimeError, match="positive integer"):
            m.set_num_interop_threads(0)
        with pytest.raises(RuntimeError, match="invalid value of debug_mode"):
            m.set_deterministic_debug_mode(5)
    for dtype in ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool", "complex64",
                  "complex128"):
        assert autograd.typename(autograd.zeros(1, dtype=getattr(autograd, dtype))) == \
            torch.typename(torch.zeros(1, dtype=getattr(torch, dtype)))
    assert autograd.typename(3.5) == torch.typename(3.5) and autograd.typename(len) == torch.typename(len)
    for bad, error in (("torch.LongTensor", TypeError), ("torch.Foo", AttributeError)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for m in (autograd, torch):
                with pytest.raises(error):
                    m.set_default_tensor_type(bad)


@pytest.mark.torch
def test_signatures_match_torchs():
    torch = pytest.importorskip("torch")
    import inspect

    overrides = torch.overrides.get_testing_overrides()
    for name in (*COPIES, "detach_copy", "split_copy", "split_with_sizes_copy", "unbind_copy", "view_as_real_copy",
                 "view_as_complex_copy", "as_strided_scatter", "slice_inverse", "histogramdd", "segment_reduce",
                 "get_device"):
        theirs = ["input" if p == "self" else p for p in inspect.signature(overrides[getattr(torch, name)]).parameters]
        ours = getattr(autograd, name)
        ours = list(inspect.signature(getattr(ours, "__wrapped__", ours)).parameters)
        if name == "view_copy":  # PyTorch's two overloads: (input, size) and (input, dtype)
            theirs = ["input", "size"]
        assert ours[:len(theirs)] == theirs, name


def test_submodule_paths_programs_import_from():
    """``from torch.autograd.function import once_differentiable``, ``from torch.autograd.gradcheck import
    gradgradcheck``, ``torch.autograd.grad_mode`` and ``torch.nn.common_types``' annotations, by their paths."""
    from autograd.autograd.function import Function, FunctionCtx, once_differentiable
    from autograd.autograd.grad_mode import no_grad
    from autograd.autograd.gradcheck import gradcheck, gradgradcheck

    from nn.common_types import _size_2_t, _size_any_opt_t

    assert Function is autograd.Function and no_grad is autograd.no_grad and gradcheck is autograd.gradcheck
    assert FunctionCtx.__name__ == "FunctionCtx" and callable(once_differentiable)
    x = autograd.tensor([0.3, -1.2], dtype=autograd.float64, requires_grad=True)
    assert gradgradcheck(lambda t: (t * t).sin(), (x,))
    assert _size_2_t == int | tuple[int, int] and _size_any_opt_t == int | None | tuple[int | None, ...]


def test_private_names_third_party_code_imports(T):
    """Names third-party layers and losses take from PyTorch's private corners, on both libraries."""
    import warnings

    nn_ = T.nn if T.__name__ == "torch" else importlib.import_module("nn")
    F = nn_.functional
    assert [F._Reduction.get_enum(r) for r in ("none", "mean", "sum")] == [0, 1, 2]
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        F._Reduction.get_enum("max")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert F._Reduction.legacy_get_string(None, False) == "none"
        assert F._Reduction.legacy_get_string(False, None) == "sum"
        assert F._Reduction.legacy_get_enum(None, None, emit_warning=False) == 1
    assert len(caught) == 2 and "size_average and reduce args will be deprecated" in str(caught[0].message)
    pooling = importlib.import_module(f"{nn_.__name__}.modules.pooling")
    assert isinstance(nn_.AdaptiveAvgPool2d(3), pooling._AdaptiveAvgPoolNd)
    assert isinstance(nn_.AdaptiveMaxPool1d(3), pooling._AdaptiveMaxPoolNd)
    assert not isinstance(nn_.AdaptiveMaxPool2d(3), pooling._AdaptiveAvgPoolNd)
    transformer = importlib.import_module(f"{nn_.__name__}.modules.transformer")
    clones = transformer._get_clones(nn_.Linear(2, 2), 3)
    assert len(clones) == 3 and clones[0].weight is not clones[1].weight
    assert T.equal(clones[0].weight, clones[2].weight)
    T.manual_seed(0)
    w = nn_.init._no_grad_trunc_normal_(T.empty(1000), 0.0, 1.0, -0.5, 0.5)
    assert w.abs().max().item() <= 0.5
    collate = importlib.import_module(f"{T.__name__}.utils.data._utils.collate")
    assert collate.default_collate([T.tensor([1, 2]), T.tensor([3, 4])]).tolist() == [[1, 2], [3, 4]]
    optim_ = T.optim if T.__name__ == "torch" else importlib.import_module("optim")
    assert importlib.import_module(f"{optim_.__name__}.adamw").AdamW is optim_.AdamW
