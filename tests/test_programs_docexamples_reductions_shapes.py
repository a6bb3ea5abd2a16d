"""The examples in PyTorch's own docstrings (``>>>`` blocks of torch/_torch_docs.py, _tensor_docs.py, functional.py,
nn/functional.py, nn/modules, linalg and special), run on chainrule, as tests/docexamples_common.py says: each a
program over the modules whose result must equal the literal expected in tests/docexamples_expected.py and, where
PyTorch is installed, PyTorch's result. Reductions, sorting and searching; shapes and indexing."""

import pytest

from .docexamples_common import AREAS, check, example

# ----------------------------------------------------------------------------------------------
# reductions, sorting and searching
# ----------------------------------------------------------------------------------------------

VM = [[0.2035, 1.2959, 1.8101, -0.4644], [1.5027, -0.3270, 0.5905, 0.6538],
      [-1.5745, 1.3330, -0.5596, -0.6548], [0.1264, -0.5080, 1.6420, 0.1992]]


@example("reductions")
def var_std_mean(m):
    torch = m.torch
    a = torch.tensor(VM)
    return (torch.var_mean(a, dim=0, keepdim=True), torch.std_mean(a, dim=0, keepdim=True),
            torch.var(a, dim=1, keepdim=True), torch.std(a, dim=1, correction=0))


@example("reductions")
def aminmax_kthvalue_mode(m):
    torch = m.torch
    b = torch.tensor([[0, 0, 0, 2, 0, 0, 2], [0, 3, 0, 0, 2, 0, 1], [2, 2, 2, 0, 0, 0, 3],
                      [2, 2, 3, 0, 1, 1, 0], [1, 1, 0, 0, 2, 0, 2]])
    x = torch.arange(1., 7.).resize_(2, 3)
    return (torch.aminmax(torch.tensor([1, -3, 5])), torch.aminmax(torch.tensor([1, -3, 5, torch.nan])),
            torch.arange(10).view(2, 5).aminmax(dim=0, keepdim=True), torch.kthvalue(torch.arange(1., 6.), 4),
            torch.kthvalue(x, 2, 0, True), torch.mode(b, 0))


@example("reductions")
def topk_argsort_take_along_dim(m):
    torch = m.torch
    t = torch.tensor([[10, 30, 20], [60, 40, 50]])
    return (torch.topk(torch.arange(1., 6.), 3), torch.take_along_dim(t, torch.argmax(t)),
            torch.take_along_dim(t, torch.argsort(t, dim=1), dim=1), torch.take(t, torch.tensor([0, 2, 5])))


@example("reductions")
def searchsorted_bucketize(m):
    torch = m.torch
    sorted_sequence = torch.tensor([[1, 3, 5, 7, 9], [2, 4, 6, 8, 10]])
    values = torch.tensor([[3, 6, 9], [3, 6, 9]])
    boundaries = torch.tensor([1, 3, 5, 7, 9])
    return (torch.searchsorted(sorted_sequence, values), torch.searchsorted(sorted_sequence, values, side="right"),
            torch.searchsorted(boundaries, values), torch.bucketize(values, boundaries),
            torch.bucketize(values, boundaries, right=True))


@example("reductions")
def unique_and_unique_consecutive(m):
    torch = m.torch
    x = torch.tensor([[1, 3, 2, 3], [1, 2, 1, 2]], dtype=torch.long)
    y = torch.tensor([1, 1, 2, 2, 3, 1, 1, 2])
    return (torch.unique(torch.tensor([1, 3, 2, 3], dtype=torch.long), sorted=True, return_inverse=True),
            torch.unique(torch.tensor([[1, 3], [2, 3]], dtype=torch.long), sorted=True, return_inverse=True),
            torch.unique(x, dim=0), torch.unique(x, dim=1), torch.unique_consecutive(y, return_inverse=True),
            torch.unique_consecutive(y, return_counts=True))


@example("reductions")
def cumulative_and_trapezoid(m):
    torch = m.torch
    y = torch.tensor([1, 5, 10])
    return (torch.cumulative_trapezoid(y), torch.cumulative_trapezoid(y, dx=2),
            torch.cumulative_trapezoid(y, torch.tensor([1, 3, 6])),
            torch.cumulative_trapezoid(torch.arange(9).reshape(3, 3), dim=0),
            torch.cumulative_trapezoid(torch.ones(3, 3), torch.tensor([[1, 2, 3], [1, 3, 5], [1, 4, 7]])),
            torch.trapezoid(torch.tensor([1, 5, 10]), torch.tensor([1, 3, 6])))


@example("reductions")
def gradient_diff_histogram(m):
    torch = m.torch
    t = torch.tensor([[1, 2, 4, 8], [10, 20, 40, 80]])
    a = torch.tensor([1, 3, 2])
    return (torch.gradient(torch.tensor([4., 1., 1., 16.]), spacing=(torch.tensor([-2., -1., 1., 4.]),)),
            torch.gradient(t), torch.gradient(t, spacing=2.0), torch.gradient(t, spacing=[3., 2.]),
            torch.gradient(t, spacing=(torch.tensor([0, 2]), torch.tensor([0, 3, 6, 9]))),
            torch.diff(a), torch.diff(a, append=torch.tensor([4, 5])),
            torch.diff(torch.tensor([[1, 2, 3], [3, 4, 5]]), dim=0),
            torch.histogram(torch.tensor([1., 2, 1]), bins=4, range=(0., 3.), weight=torch.tensor([1., 2., 4.]),
                            density=True),
            torch.histc(torch.tensor([1., 2, 1]), bins=4, min=0, max=3))


# ----------------------------------------------------------------------------------------------
# shapes and indexing
# ----------------------------------------------------------------------------------------------


@example("shapes")
def gather_roll_flip_rot90(m):
    torch = m.torch
    x = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8]).view(4, 2)
    return (torch.gather(torch.tensor([[1, 2], [3, 4]]), 1, torch.tensor([[0, 0], [1, 0]])), torch.roll(x, 1),
            torch.roll(x, -1, 0), torch.roll(x, shifts=(2, 1), dims=(0, 1)),
            torch.flip(torch.arange(8).view(2, 2, 2), [0, 1]), torch.rot90(torch.arange(4).view(2, 2), 1, [0, 1]),
            torch.fliplr(torch.arange(4).view(2, 2)))


@example("shapes")
def repeat_interleave_and_tile(m):
    torch = m.torch
    y = torch.tensor([[1, 2], [3, 4]])
    return (torch.tensor([1, 2, 3]).repeat_interleave(2), torch.repeat_interleave(y, 3, dim=1),
            torch.repeat_interleave(y, torch.tensor([1, 2]), dim=0, output_size=3),
            torch.repeat_interleave(torch.tensor([1, 2, 3])), torch.tile(torch.tensor([1, 2, 3]), (2,)),
            torch.tile(y, (2, 2)))


@example("shapes")
def unravel_index_nonzero_argwhere(m):
    torch = m.torch
    return (torch.unravel_index(torch.tensor(4), (3, 2)),
            torch.unravel_index(torch.tensor([1234, 5678]), (10, 10, 10, 10)),
            torch.nonzero(torch.tensor([[0.6, 0.0, 0.0, 0.0], [0.0, 0.4, 0.0, 0.0], [0.0, 0.0, 1.2, 0.0],
                                        [0.0, 0.0, 0.0, -0.4]])),
            torch.nonzero(torch.tensor([1, 1, 1, 0, 1]), as_tuple=True),
            torch.argwhere(torch.tensor([[1, 0, 1], [0, 1, 1]])))


@example("shapes")
def movedim_narrow_unflatten(m):
    torch = m.torch
    t = torch.arange(24).reshape(2, 3, 4)
    return (torch.movedim(t, 1, 0).shape, torch.moveaxis(t, (1, 2), (0, 1)).shape,
            torch.narrow(torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]]), 1, 1, 2),
            torch.unflatten(torch.arange(12).reshape(3, 4), 1, (2, 2)).shape, torch.swapaxes(t, 0, 2).shape,
            torch.diagonal_scatter(torch.zeros(3, 3), torch.ones(2), 1))


@pytest.mark.parametrize("name", list(AREAS["reductions"]))
def test_reductions_sorting_searching(name):
    check("reductions", name)


@pytest.mark.parametrize("name", list(AREAS["shapes"]))
def test_shapes_and_indexing(name):
    check("shapes", name)
