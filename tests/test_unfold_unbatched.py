"""F.unfold of an unbatched (C, H, W) image, as PyTorch's: (C·kh·kw, L) columns, what F.fold of a
2-D input takes back; other ranks are refused with PyTorch's message."""

import numpy as np
import pytest

import autograd
import nn.functional as F


def test_unbatched_unfold_is_the_batched_one_without_the_batch_and_fold_inverts_it():
    x = autograd.tensor(np.arange(75.0).reshape(3, 5, 5), requires_grad=True)
    cols = F.unfold(x, kernel_size=2, stride=2, padding=1)
    assert cols.shape == (12, 9)
    np.testing.assert_array_equal(cols.detach().numpy(), F.unfold(x.detach()[None], 2, stride=2, padding=1)[0].numpy())
    back = F.fold(F.unfold(x, 2, stride=2), (4, 4), 2, stride=2)  # the top-left 4 x 4 of each channel
    np.testing.assert_array_equal(back.detach().numpy(), x.detach().numpy()[:, :4, :4])
    (cols * autograd.arange(9.0)).sum().backward()
    assert x.grad.shape == (3, 5, 5) and x.grad[0, 0, 0].item() == 0 and x.grad[0, 4, 4].item() == 8


def test_other_ranks_are_refused():
    for shape in ((1, 1, 1, 5, 5),):
        with pytest.raises(RuntimeError, match=r"Expected 3D or 4D \(batch mode\) tensor"):
            F.unfold(autograd.ones(*shape), 2)


def test_against_pytorch():
    torch = pytest.importorskip("torch")
    data = np.random.default_rng(0).standard_normal((2, 6, 7))
    ours = autograd.tensor(data, requires_grad=True)
    theirs = torch.tensor(data, requires_grad=True)
    a = F.unfold(ours, (2, 3), dilation=(1, 2), padding=1, stride=(2, 1))
    b = torch.nn.functional.unfold(theirs, (2, 3), dilation=(1, 2), padding=1, stride=(2, 1))
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy())
    w = np.random.default_rng(1).standard_normal(tuple(b.shape))
    (a * autograd.tensor(w)).sum().backward()
    (b * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy())
    with pytest.raises(RuntimeError) as e:
        torch.nn.functional.unfold(torch.ones(1, 1, 1, 5, 5), 2)
    with pytest.raises(RuntimeError, match=str(e.value).replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
                       .replace("]", r"\]")):
        F.unfold(autograd.ones(1, 1, 1, 5, 5), 2)
