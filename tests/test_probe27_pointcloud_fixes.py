"""The fixes of the point-cloud probe (session 27), each against PyTorch where installed and against literals always:
index_put_ with a mask of several dims before an index tensor (the index was checked against the mask's second dim),
and the dim PyTorch names when an index tensor is out of bounds (its kernel counts only the dims index tensors cover:
x[:, t] names dimension 0)."""

import numpy as np
import pytest

import autograd

from .pytorch_programs import error_of

MASK = [[True, False, True], [False, False, False]]  # covers dims 0 and 1 of a (2, 3, 4) tensor


@pytest.mark.parametrize("last", [3, -4, 0])
def test_index_put_after_a_two_dim_mask_indexes_the_third_dim(last):
    """A ball query's padded neighbours written through (mask over (batch, point), channel): the channel index
    is checked against the channel dim (4), not the mask's second dim (3)."""
    def program(torch):
        x = torch.arange(24.0).view(2, 3, 4)
        x.index_put_((torch.tensor(MASK), torch.tensor([last])), torch.tensor(-1.0))
        y = torch.arange(24.0).view(2, 3, 4).index_put((torch.tensor(MASK), torch.tensor([last])),
                                                        torch.tensor([5.0]), accumulate=True)
        return x.numpy(), y.numpy()

    x, y = program(autograd)
    expected = np.arange(24.0).reshape(2, 3, 4)
    column = last % 4
    written = expected.copy()
    written[0, 0, column] = written[0, 2, column] = -1
    added = expected.copy()
    added[0, 0, column] += 5
    added[0, 2, column] += 5
    np.testing.assert_array_equal(x, written)
    np.testing.assert_array_equal(y, added)
    try:
        import torch
    except ImportError:
        return
    for ours, theirs in zip((x, y), program(torch)):
        np.testing.assert_array_equal(ours, theirs)


def test_index_put_after_a_two_dim_mask_refuses_past_the_third_dim():
    x = autograd.arange(24.0).view(2, 3, 4)
    assert error_of(lambda: x.index_put_((autograd.tensor(MASK), autograd.tensor([-5])), autograd.tensor(1.0))) == (
        "IndexError", "index -5 is out of bounds for dimension 2 with size 4")


# (subscript, PyTorch's message): the dim named counts the dims index tensors (and lists) cover before the
# offending one, never those of slices, None, Ellipsis or integers (which select first)
OUT_OF_BOUNDS = [
    ("x[:, T([5])]", "index 5 is out of bounds for dimension 0 with size 3"),
    ("x[:, T([-4])]", "index -4 is out of bounds for dimension 0 with size 3"),
    ("x[..., T([9])]", "index 9 is out of bounds for dimension 0 with size 4"),
    ("x[:, :, T([[4, 0]])]", "index 4 is out of bounds for dimension 0 with size 4"),
    ("x[T([0]), :, T([9])]", "index 9 is out of bounds for dimension 1 with size 4"),
    ("x[T([0]), 0:1, T([4])]", "index 4 is out of bounds for dimension 1 with size 4"),
    ("x[None, T([0]), None, :, T([9])]", "index 9 is out of bounds for dimension 1 with size 4"),
    ("x[:, [0, 1], [0, 9]]", "index 9 is out of bounds for dimension 1 with size 4"),
    ("x[T([True, False]), :, T([9])]", "index 9 is out of bounds for dimension 1 with size 4"),
    ("x[T(1), :, T([9])]", "index 9 is out of bounds for dimension 0 with size 4"),
    ("x[T(MASK), T([9])]", "index 9 is out of bounds for dimension 2 with size 4"),
    ("x[T([0]), T([1]), T([9])]", "index 9 is out of bounds for dimension 2 with size 4"),
    ("x[0, 5]", "index 5 is out of bounds for dimension 1 with size 3"),
    ("x[:, 5]", "index 5 is out of bounds for dimension 1 with size 3"),
    ("x.__setitem__((slice(None), T([5])), 1.0)", "index 5 is out of bounds for dimension 0 with size 3"),
    ("x.__setitem__((T([0]), slice(None), T([9])), 1.0)", "index 9 is out of bounds for dimension 1 with size 4"),
    ("x.index_put_((T(MASK), T([9])), T(1.0))", "index 9 is out of bounds for dimension 2 with size 4"),
]


@pytest.mark.parametrize("subscript,message", OUT_OF_BOUNDS)
def test_out_of_bounds_index_tensor_names_pytorchs_dim(subscript, message):
    def error(torch):
        x, T = torch.arange(24.0).view(2, 3, 4), torch.tensor  # noqa: F841  (read by the subscript)
        return error_of(lambda: eval(subscript, {"x": x, "T": T, "MASK": MASK}))

    assert error(autograd) == ("IndexError", message)


@pytest.mark.parametrize("subscript,message", OUT_OF_BOUNDS)
def test_out_of_bounds_messages_are_pytorchs(subscript, message):
    torch = pytest.importorskip("torch")
    x, T = torch.arange(24.0).view(2, 3, 4), torch.tensor
    assert error_of(lambda: eval(subscript, {"x": x, "T": T, "MASK": MASK})) == ("IndexError", message)


# (function of autograd.linalg, its matrix's keyword): PyTorch names it A where its documentation does, and the
# float16 refusal in front of these functions took it positionally as ``input``, so linalg.svd(A=H) (Kabsch, as
# the documentation writes it) was a TypeError
MATRIX_KEYWORDS = [("svd", "A"), ("svdvals", "A"), ("det", "A"), ("slogdet", "A"), ("inv", "A"), ("inv_ex", "A"),
                   ("qr", "A"), ("lu", "A"), ("lu_factor", "A"), ("lu_factor_ex", "A"), ("eigh", "input"),
                   ("eigvalsh", "input"), ("cholesky", "input"), ("pinv", "input"), ("matrix_rank", "input"),
                   ("cond", "input")]
SPD = [[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]]


def first_result(value):
    while isinstance(value, tuple):
        value = value[0]
    return value


@pytest.mark.parametrize("name,keyword", MATRIX_KEYWORDS)
def test_linalg_matrix_keyword_is_pytorchs(name, keyword):
    function = getattr(autograd.linalg, name)
    by_keyword = first_result(function(**{keyword: autograd.tensor(SPD)}))
    by_position = first_result(function(autograd.tensor(SPD)))
    np.testing.assert_array_equal(np.asarray(by_keyword), np.asarray(by_position))
    other = "input" if keyword == "A" else "A"
    assert error_of(lambda: function(**{other: autograd.tensor(SPD)}))[0] == "TypeError"
    try:
        import torch
    except ImportError:
        return
    np.testing.assert_allclose(np.asarray(by_keyword),
                               first_result(getattr(torch.linalg, name)(**{keyword: torch.tensor(SPD)})).numpy(),
                               rtol=1e-6, atol=1e-6)


def test_linalg_solve_by_keywords_and_half_refusal_by_keyword():
    x = autograd.linalg.solve(A=autograd.tensor(SPD), B=autograd.ones(3))
    np.testing.assert_allclose(np.asarray(SPD) @ x.numpy(), np.ones(3), rtol=1e-6)
    half = autograd.tensor(SPD, dtype=autograd.float16)
    assert error_of(lambda: autograd.linalg.svd(A=half)) == ("NotImplementedError",
                                                           "\"linalg_svd_cpu\" not implemented for 'Half'")
    assert error_of(lambda: autograd.linalg.eigh(input=half)) == ("NotImplementedError",
                                                                "\"linalg_eigh_cpu\" not implemented for 'Half'")
