"""kthvalue names the tied element PyTorch's selection algorithm leaves at position k (its quickselect's
swaps decide, not the input's order), so its index, and where its gradient goes, match PyTorch's."""

import numpy as np


def test_tied_kth_values_name_pytorchs_index(T):
    nan = float("nan")
    x = T.tensor([[0.0, -1, 2, -1, 0, 1, 0], [2, 2, 2, 2, 2, 2, 2], [1, nan, 0, nan, 1, 0, 1]], requires_grad=True)
    expected = {1: [3, 3, 2], 2: [1, 4, 5], 3: [4, 5, 6], 4: [0, 0, 0], 5: [6, 2, 4], 6: [5, 1, 1], 7: [2, 6, 3]}
    for k, indices in expected.items():
        assert x.kthvalue(k, 1).indices.tolist() == indices, k
    assert T.tensor([3, 1, 3, 1, 3, 1, 3, 1, 3, 1, 3]).kthvalue(6).indices.item() == 8
    # along another dim, kept, and the gradient reaching the named element
    assert x.t().kthvalue(2, 0, keepdim=True).indices.tolist() == [[1, 4, 5]]
    x.kthvalue(3, 1).values[:2].sum().backward()
    grad = np.zeros((3, 7))
    grad[0, 4] = grad[1, 5] = 1
    np.testing.assert_array_equal(x.grad.numpy(), grad)
