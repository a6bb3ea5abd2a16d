"""The library fixes of the port of PyTorch's test/nn/test_embedding.py (session 24), each against literals and,
where installed, PyTorch:

- a sparse embedding gradient whose rows have no elements (an embedding of dim 0) has no entries, as PyTorch's
  embedding_sparse_backward (it had one entry per lookup, each of no values);
- an embedding bag in mode='max' with no lookups at all (empty input, or padding only) is on the graph: it
  requires grad and gives W a gradient of zeros (it was a constant, and backward refused);
- an embedding_bag index out of range is reported in the words of the PyTorch kernel that meets it: the fast
  one (float32 and float16 sums and means without padding) names its position, the generic one its value.
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
