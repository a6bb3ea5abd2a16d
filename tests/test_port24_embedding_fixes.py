"""The library fixes of the port of PyTorch's test/nn/test_embedding.py (session 24), each against literals and,
where installed, PyTorch:

- a sparse embedding gradient whose rows have no elements (an embedding of dim 0) has no entries, as PyTorch's
  embedding_sparse_backward (it had one entry per lookup, each of no values);
- an embedding bag in mode='max' with no lookups at all (empty input, or padding only) is on the graph: it
  requires grad and gives W a gradient of zeros (it was a constant, and backward refused);
- an embedding_bag index out of range is reported in the words of the PyTorch kernel that meets it: the fast
  one (float32 and float16 sums and means without padding) names its position, the generic one its value;
- embedding_bag's dimension checks: F.embedding_bag refuses a weight that is not 2-D (ValueError; it went on to a
  broadcasting error), the top-level embedding_bag checks input, offsets and weight with PyTorch's RuntimeErrors and
  reads 2-D indices as one row cut at offsets (it refused them);
- max_norm with norm_type=0 counts nonzero entries (it divided by zero); embedding_bag refuses integer, bool and
  complex tables (it summed them); F.embedding_bag(weight, input), the old order, is swapped with PyTorch's
  warning; a bad dtype is named as PyTorch's checks name it (torch.DoubleTensor, CPUBoolType).
"""

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import raises, same

nn = ported_nn.nn  # the fixtures
F = ported_nn.F


def test_a_zero_width_embeddings_sparse_gradient_has_no_entries(T, nn):
    embedding = nn.Embedding(4, 0, sparse=True)
    embedding(T.tensor([0, 2, 2])).sum().backward()
    grad = embedding.weight.grad
    assert grad.is_sparse and tuple(grad.shape) == (4, 0)
    assert tuple(grad._indices().shape) == (1, 0) and tuple(grad._values().shape) == (0, 0)
    assert grad._nnz() == 0


def test_a_max_bag_of_no_lookups_is_on_the_graph(T, F):
    weight = T.tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    output = F.embedding_bag(T.tensor([], dtype=T.long), weight, T.tensor([0, 0]), mode="max")
    same(output, np.zeros((2, 2)))
    assert output.requires_grad and output.grad_fn is not None
    (output * 3).sum().backward()
    same(weight.grad, np.zeros((3, 2)))
    weight.grad = None
    output = F.embedding_bag(T.tensor([[1, 1]]), weight, mode="max", padding_idx=1)  # padding only
    same(output, [[0.0, 0.0]])
    output.sum().backward()
    same(weight.grad, np.zeros((3, 2)))


@pytest.mark.parametrize("mode, dtype, padding_idx, words", [
    ("sum", "float32", None, r"Index 2 of input takes value -4 which is not in the valid range \[0, 3\)"),
    ("mean", "float16", None, r"Index 2 of input takes value -4 which is not in the valid range \[0, 3\)"),
    ("max", "float32", None, "embedding_bag: Expected idx >= 0 && idx < num_embeddings but found idx to be -4"),
    ("sum", "float64", None, "embedding_bag: Expected idx >= 0 && idx < num_embeddings but found idx to be -4"),
    ("mean", "float32", 0, "embedding_bag: Expected idx >= 0 && idx < num_embeddings but found idx to be -4"),
])
def test_an_index_out_of_range_is_reported_as_pytorchs_kernel_reports_it(T, F, mode, dtype, padding_idx, words):
    table = T.ones(3, 2, dtype=getattr(T, dtype))
    raises(RuntimeError, words, F.embedding_bag, T.tensor([0, 1, -4, 7]), table, T.tensor([0, 2]), mode=mode,
           padding_idx=padding_idx)


def test_embedding_bag_dimension_errors(T, F):
    """PyTorch's test_embedding_bag_dimension_errors: F.embedding_bag's ValueErrors and the top-level kernel's
    RuntimeErrors, checked input, then offsets, then weight."""
    weight = T.zeros(2, 6, dtype=T.float64)
    indices = T.full((2, 0, 0, 6, 6), 2, dtype=T.int64)
    offsets = T.full((2, 0, 0, 6, 6), 0, dtype=T.int64)
    raises(ValueError, "input has to be 1D or 2D Tensor, but got Tensor of dimension 5", F.embedding_bag, indices,
           weight, offsets)
    raises(RuntimeError, "input has to be a 1D or 2D Tensor, but got Tensor of dimension 5", T.embedding_bag,
           weight, indices, offsets)
    weight, indices = T.zeros(2, 2, dtype=T.float64), T.full((2,), 1, dtype=T.int64)
    raises(ValueError, "offsets has to be a 1D Tensor", F.embedding_bag, indices, weight, offsets)
    raises(RuntimeError, "offsets has to be a 1D Tensor, but got Tensor of dimension 5", T.embedding_bag, weight,
           indices, offsets)
    weight, offsets = T.zeros(2, 2, 2, dtype=T.float64), T.zeros(2, dtype=T.int64)
    raises(ValueError, "weight has to be a 2D Tensor, but got Tensor of dimension 3", F.embedding_bag, indices,
           weight, offsets)
    raises(RuntimeError, "weight has to be a 2D Tensor, but got Tensor of dimension 3", T.embedding_bag, weight,
           indices, offsets)


def test_the_top_level_embedding_bag_reads_2d_indices_as_one_row(T):
    table = T.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, -30.0]], dtype=T.float64)
    indices = T.tensor([[0], [1], [2], [2], [1]])
    output, offset2bag, _, _ = T.embedding_bag(table, indices, T.tensor([0, 2, 2]))
    same(output, [[3.0, 30.0], [0.0, 0.0], [8.0, -40.0]])
    same(offset2bag, [0, 0, 2, 2, 2])
    # the last offset may not pass the number of rows (PyTorch's check reads size(0))
    raises(RuntimeError, "offsets\\[-1\\] can not be greater than input's length 1 but got offsets\\[-1\\] of 2",
           T.embedding_bag, table, indices.reshape(1, 5), T.tensor([0, 2, 2]))


def test_max_norm_with_norm_type_0_counts_the_nonzero_entries(T, F):
    weight = T.tensor([[2.0, 3.0], [0.0, 0.5], [4.0, 0.0]], dtype=T.float64)
    output = F.embedding(T.tensor([0, 1, 2]), weight, max_norm=1.0, norm_type=0.0)
    # 0-norms 2, 1, 1: only row 0 passes max_norm, scaled by 1 / (2 + 1e-7)
    scale = 1.0 / (2 + 1e-7)
    same(output, [[2 * scale, 3 * scale], [0.0, 0.5], [4.0, 0.0]])
    same(weight, output.detach())


@pytest.mark.parametrize("dtype, name", [("int64", "torch.LongTensor"), ("int32", "torch.IntTensor"),
                                         ("bool", "CPUBoolType"), ("complex64", "CPUComplexFloatType")])
def test_embedding_bag_takes_floating_tables_only(T, F, dtype, name):
    table = T.ones(2, 2, dtype=getattr(T, dtype))
    raises(RuntimeError, "Expected tensor for argument #1 'weight' to have one of the following scalar types: Half, "
           f"BFloat16, Float, Double; but got {name} instead \\(while checking arguments for embedding_bag\\)",
           F.embedding_bag, T.tensor([0]), table, T.tensor([0]))


@pytest.mark.parametrize("dtype, name", [("uint8", "torch.ByteTensor"), ("float64", "torch.DoubleTensor"),
                                         ("bool", "CPUBoolType"), ("complex128", "CPUComplexDoubleType")])
def test_indices_of_another_type_are_named_as_pytorchs_checks_name_them(T, F, dtype, name):
    indices = T.zeros(1, dtype=getattr(T, dtype))
    raises(RuntimeError, f"Long, Int; but got {name} instead", F.embedding, indices, T.ones(2, 2))


def test_embedding_bag_with_the_old_argument_order_swaps_them_with_a_warning(T, F):
    table = T.tensor([[1.0, 2.0], [3.0, 4.0]])
    with pytest.warns(UserWarning, match="Argument order of nn.functional.embedding_bag was changed"):
        output = F.embedding_bag(table, T.tensor([[1, 0]]))
    same(output, [[2.0, 3.0]])
