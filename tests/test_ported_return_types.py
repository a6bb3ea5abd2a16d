"""Ported from PyTorch's test/test_namedtuple_return_api.py: every op that returns several tensors returns a
``torch.return_types`` named tuple with PyTorch's field names, as a function, as a method where there is one,
and with ``out=`` (then of the type ``<name>_out``, holding the very out tensors); the fields are the tuple's
items; indexing, slicing, unpacking and repr are a tuple's. Values are checked against NumPy. (Type names,
pickling and isinstance of the common ones: tests/test_return_types.py.)"""

import warnings

import numpy as np
import pytest

A = [[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]]

OPS = [  # (op, extra args ("A": the matrix again, "TRIU": its upper triangle), field names, has a method)
    ("max", (0,), ("values", "indices"), True), ("min", (0,), ("values", "indices"), True),
    ("median", (0,), ("values", "indices"), True), ("nanmedian", (0,), ("values", "indices"), True),
    ("mode", (0,), ("values", "indices"), True), ("sort", (0,), ("values", "indices"), True),
    ("topk", (2,), ("values", "indices"), True), ("cummax", (0,), ("values", "indices"), True),
    ("cummin", (0,), ("values", "indices"), True), ("kthvalue", (2, 0), ("values", "indices"), True),
    ("svd", (), ("U", "S", "V"), True), ("linalg.svd", (), ("U", "S", "Vh"), False),
    ("slogdet", (), ("sign", "logabsdet"), True), ("linalg.slogdet", (), ("sign", "logabsdet"), False),
    ("qr", (), ("Q", "R"), True), ("linalg.qr", (), ("Q", "R"), False), ("geqrf", (), ("a", "tau"), True),
    ("triangular_solve", ("TRIU",), ("solution", "cloned_coefficient"), True),
    ("linalg.eigh", ("L",), ("eigenvalues", "eigenvectors"), False),
    ("linalg.eig", (), ("eigenvalues", "eigenvectors"), False), ("frexp", (), ("mantissa", "exponent"), True),
    ("histogram", (2,), ("hist", "bin_edges"), True), ("aminmax", (), ("min", "max"), True),
    ("linalg.cholesky_ex", (), ("L", "info"), False), ("linalg.inv_ex", (), ("inverse", "info"), False),
    ("linalg.solve_ex", ("A",), ("result", "info"), False), ("linalg.lu_factor", (), ("LU", "pivots"), False),
    ("linalg.lu_factor_ex", (), ("LU", "pivots", "info"), False),
    ("linalg.ldl_factor", (), ("LD", "pivots"), False), ("linalg.ldl_factor_ex", (), ("LD", "pivots", "info"), False),
    ("linalg.lu", (), ("P", "L", "U"), False),
    ("linalg.lstsq", ("A",), ("solution", "residuals", "rank", "singular_values"), False),
]


def _op(T, path):
    obj = T
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _fields_are_items(result, names):
    assert isinstance(result, tuple) and len(result) == len(names)
    assert all(getattr(result, name) is result[i] for i, name in enumerate(names))


@pytest.mark.parametrize("op,args,names,has_method", OPS, ids=[op[0] for op in OPS])
def test_named_tuple_return(T, op, args, names, has_method):
    a = T.tensor(A)
    args = tuple(a if x == "A" else a.triu() if x == "TRIU" else x for x in args)
    type_name = op.replace(".", "_")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch.qr, triangular_solve and svd are deprecated)
        result = _op(T, op)(a, *args)
        assert type(result).__name__ == type_name and type(result) is getattr(T.return_types, type_name)
        _fields_are_items(result, names)
        if has_method:
            method_result = getattr(a, op)(*args)
            assert type(method_result) is type(result)
            for ours, theirs in zip(method_result, result):
                np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
        outs = tuple(t.clone() for t in result)
        with_out = _op(T, op)(a, *args, out=outs)
    assert type(with_out).__name__ == f"{type_name}_out" and type(with_out) is getattr(T.return_types,
                                                                                        f"{type_name}_out")
    _fields_are_items(with_out, names)
    assert all(given is back for given, back in zip(outs, with_out))
    for ours, theirs in zip(with_out, result):
        if T.__name__ == "torch" and op == "linalg.lstsq":  # (PyTorch's own two calls differed by 1 ulp in a full
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=0, atol=1e-6)  # run: its BLAS threads)
        else:
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_histogramdd_has_no_out_type(T):
    result = T.histogramdd(T.tensor([[1.0, 2.0], [1.0, 3.0]]), bins=2)
    _fields_are_items(result, ("hist", "bin_edges"))
    assert type(result).__name__ == "histogramdd" and not hasattr(T.return_types, "histogramdd_out")
    np.testing.assert_array_equal(result.hist.numpy(), [[0.0, 0.0], [1.0, 1.0]])  # (x's range widened by ±0.5)


def test_values_against_numpy(T):
    a = T.tensor(A)
    array = np.array(A, dtype=np.float32)
    values, indices = a.max(1)
    np.testing.assert_array_equal(values.numpy(), array.max(1))
    np.testing.assert_array_equal(indices.numpy(), array.argmax(1))
    np.testing.assert_array_equal(a.sort(1, descending=True).indices.numpy(), np.argsort(-array, 1))
    np.testing.assert_array_equal(a.topk(2, largest=False).values.numpy(),
                                  np.sort(array, 1)[:, :2])
    np.testing.assert_array_equal(a.kthvalue(2, 0).values.numpy(), np.sort(array, 0)[1])
    np.testing.assert_array_equal(a.cummin(1).values.numpy(), np.minimum.accumulate(array, 1))
    np.testing.assert_array_equal(a.cummax(1).indices.numpy(), [[0, 0, 0], [0, 1, 1], [0, 0, 2]])
    np.testing.assert_array_equal(T.aminmax(a).min.numpy(), np.float32(0.2))
    np.testing.assert_array_equal(T.aminmax(a, dim=1).max.numpy(), [4.0, 3.0, 2.0])
    mantissa, exponent = T.frexp(a)
    np.testing.assert_array_equal(mantissa.numpy(), np.frexp(array)[0])
    np.testing.assert_array_equal(exponent.numpy(), np.frexp(array)[1])
    sign, logabsdet = T.linalg.slogdet(a)
    np.testing.assert_allclose([sign.item(), logabsdet.item()], np.linalg.slogdet(array), rtol=1e-6)
    np.testing.assert_allclose(T.linalg.eigh(a).eigenvalues.numpy(), np.linalg.eigvalsh(array), rtol=1e-5)
    np.testing.assert_allclose(T.linalg.svd(a).S.numpy(), np.linalg.svd(array, compute_uv=False), rtol=1e-5)
    with_nan = T.tensor([[1.0, float("nan"), 3.0], [2.0, 0.0, 5.0]])
    np.testing.assert_array_equal(with_nan.nanmedian(1).values.numpy(), [1.0, 2.0])  # (the lower of two middles)
    np.testing.assert_array_equal(with_nan.median(1).indices.numpy(), [1, 0])  # (NaN is the median)
    mode = T.mode(T.tensor([[1.0, 1.0, 2.0], [3.0, 2.0, 2.0]]), 1)
    np.testing.assert_array_equal(mode.values.numpy(), [1.0, 2.0])
    hist, bin_edges = T.histogram(T.tensor([1.0, 2.0, 1.0, 4.0]), bins=3)
    np.testing.assert_array_equal(hist.numpy(), [2.0, 1.0, 1.0])
    np.testing.assert_array_equal(bin_edges.numpy(), [1.0, 2.0, 3.0, 4.0])


def test_indexing_unpacking_and_repr(T):
    x = T.tensor([[1.0, 5.0], [3.0, 2.0]])
    result = x.max(1)
    values, indices = result
    assert values is result.values and indices is result[-1]
    assert type(result[0:1]) is tuple and result[0:1][0] is values and result[::-1] == (indices, values)
    assert list(result) == [values, indices] and tuple(result) == (values, indices)
    assert repr(result) == (f"{T.__name__}.return_types.max(\nvalues=tensor([5., 3.]),\nindices=tensor([1, 0]))")
    assert str(result) == repr(result)
    with_out = T.max(x, 1, out=(T.empty(2), T.empty(2, dtype=T.long)))
    assert repr(with_out) == f"{T.__name__}.return_types.max_out(\nvalues=tensor([5., 3.]),\nindices=tensor([1, 0]))"
    with pytest.raises(AttributeError):
        result.values = values
    with pytest.raises(TypeError):
        result[0] = values


def test_made_from_a_sequence_as_a_structseq(T):
    """PyTorch's return types are structseqs: made from one sequence, with n_fields and n_sequence_fields."""
    values, indices = T.tensor([5.0, 3.0]), T.tensor([1, 0])
    result = T.return_types.max((values, indices))
    assert result.values is values and result.indices is indices and type(result) is T.return_types.max
    assert T.return_types.linalg_svd.n_fields == 3 and result.n_sequence_fields == 2 and result.n_unnamed_fields == 0
    np.testing.assert_array_equal(T.return_types.topk([values, indices])[1].numpy(), [1, 0])
