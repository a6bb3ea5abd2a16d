"""F.kl_div(reduction='batchmean') divides the summed loss by the batch size, as PyTorch's does (a product by
1/batch, which it was, rounds differently: its float32 value was a unit off in most batches of odd size), and
its node is the division's."""

import numpy as np
import pytest


@pytest.mark.parametrize("batch", [3, 5, 7, 12])
def test_batchmean_is_the_sum_divided_by_the_batch(T, batch):
    F = T.nn.functional if T.__name__ == "torch" else __import__("nn.functional").functional
    rng = np.random.default_rng(batch)
    for _ in range(20):
        log_probs = F.log_softmax(T.tensor(rng.standard_normal((batch, 5)).astype(np.float32)), 1)
        target = T.tensor(rng.random((batch, 5)).astype(np.float32))
        log_probs.requires_grad_()
        batchmean = F.kl_div(log_probs, target, reduction="batchmean")
        total = F.kl_div(log_probs.detach(), target, reduction="sum")
        assert batchmean.item() == (total / batch).item()
        assert batchmean.grad_fn.name() == "DivBackward0"
        (grad,) = T.autograd.grad(batchmean, log_probs)
        np.testing.assert_array_equal(grad.numpy(), (-target * (T.ones(()) / batch)).numpy())  # (1 / batch, rounded)
