"""Which of equal elements sort, kthvalue, topk and mode name is their algorithms' (libstdc++'s sort /
partial_sort / nth_element, PyTorch's quickselect), not the input's order: the indices, topk(sorted=False)'s
order, where the gradient goes, and the order pack_padded_sequence gives equal lengths match PyTorch's
(autograd/ops/tie_orders.py replays them)."""

import numpy as np

import nn


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


def test_topk_of_tied_values_and_its_unsorted_order_are_pytorchs(T):
    x = T.tensor([[1.0, 3, 3, 2, 3, 1, 1, 0, 2, 2, 3, 1], [0, 0, 5, 5, 1, 1, 2, 2, 0, 5, 1, 2]], requires_grad=True)
    assert x.topk(4).indices.tolist() == [[1, 10, 4, 2], [2, 9, 3, 7]]  # (nth_element, then sort)
    assert x.topk(4, largest=False).indices.tolist() == [[7, 5, 6, 0], [1, 8, 0, 10]]
    assert x.topk(6, sorted=False).indices.tolist() == [[1, 10, 4, 2, 9, 8], [7, 6, 2, 3, 9, 11]]
    y = T.tensor([2, 0, 1, 2, 0, 1, 2, 0, 1, 1, 0, 2, 2, 0, 1, 0, 2, 1, 0, 2] * 8)  # k · 64 <= n: partial_sort
    assert y.topk(2).indices.tolist() == [3, 0]
    x.topk(2, dim=1).values.sum().backward()
    grad = np.zeros((2, 12))
    grad[0, [1, 10]] = grad[1, [2, 9]] = 1
    np.testing.assert_array_equal(x.grad.numpy(), grad)


def test_mode_of_more_than_16_names_pytorchs_position(T):
    y = T.tensor([2, 0, 1, 2, 0, 1, 2, 0, 1, 1, 0, 2, 2, 0, 1, 0, 2, 1, 0, 2])
    assert y.mode().values.item() == 0 and y.mode().indices.item() == 4  # (std::sort's order, not the last 0)
    assert y[:16].mode().indices.item() == 15  # up to 16: the last position


LENGTHS = [5, 3, 5, 2, 5, 3, 3, 5, 2, 2, 5, 3, 4, 4, 5, 1, 3, 5, 2, 4]


def test_sort_of_more_than_16_puts_equal_values_in_pytorchs_order(T):
    lengths = T.tensor(LENGTHS)
    assert lengths.sort(descending=True).indices.tolist() == [0, 2, 17, 4, 14, 7, 10, 19, 13, 12, 11, 6, 5, 16, 1,
                                                              9, 8, 3, 18, 15]  # (std::sort's order)
    assert lengths.sort().indices.tolist() == [15, 18, 3, 8, 9, 1, 16, 5, 6, 11, 19, 13, 12, 10, 14, 7, 4, 17, 2, 0]
    assert lengths.sort(stable=True).indices.tolist() == [15, 3, 8, 9, 18, 1, 5, 6, 11, 16, 12, 13, 19, 0, 2, 4, 7,
                                                          10, 14, 17]
    nan = float("nan")
    half = T.tensor([0.5, nan, 0.5, 1, 0.5, nan, 1, 0.5, 0.5, 1, 0.5, 0.5, 1, 0.5, 1, 0.5, 0.5, 0.5], dtype=T.float16)
    assert half.argsort().tolist() == [17, 2, 16, 4, 15, 7, 8, 0, 10, 11, 13, 9, 14, 12, 6, 3, 5, 1]
    # quantile sorts too: the gradient goes to the elements PyTorch's sort put at the interpolated ranks
    x = T.tensor([0.0, 1] * 10, requires_grad=True)
    T.quantile(x, 0.3).backward()
    grad = np.zeros(20)
    grad[8], grad[16] = 0.7, 0.3
    np.testing.assert_allclose(x.grad.numpy(), grad, rtol=1e-5)


def test_packing_a_batch_orders_equal_lengths_as_pytorchs_sort(T):
    pack = (nn.utils.rnn if T.__name__ == "autograd" else T.nn.utils.rnn).pack_padded_sequence
    steps = T.arange(20 * 5, dtype=T.float32).reshape(20, 5, 1)
    packed = pack(steps, T.tensor(LENGTHS), batch_first=True, enforce_sorted=False)
    assert packed.sorted_indices.tolist() == T.tensor(LENGTHS).sort(descending=True).indices.tolist()
    assert packed.data[:20, 0].tolist() == [5.0 * i for i in packed.sorted_indices.tolist()]
