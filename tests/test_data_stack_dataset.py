"""``utils.data.StackDataset`` (datasets side by side, as a tuple or a dict, batched through
``__getitems__`` where a part has it) and ``nn.utils.rnn.invert_permutation``, against PyTorch's
where it is installed."""

import pytest

import autograd
import nn
from autograd.utils import data as D

from .pytorch_programs import run_both


class Squares(D.Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return i * i


class Batched(D.Dataset):
    """A dataset that makes a batch at once (as Hugging Face datasets do), counting the calls."""

    def __init__(self):
        self.calls = 0

    def __len__(self):
        return 5

    def __getitem__(self, i):
        raise AssertionError("the batch goes through __getitems__")

    def __getitems__(self, indices):
        self.calls += 1
        return [f"item{i}" for i in indices]


def test_tuple_and_dict_samples():
    images = D.TensorDataset(autograd.arange(10.0).reshape(5, 2))
    tuples = D.StackDataset(images, Squares())
    assert len(tuples) == 5
    x, sq = tuples[3]
    assert x[0].tolist() == [6.0, 7.0] and sq == 9
    named = D.StackDataset(image=images, label=Squares())
    assert set(named[2]) == {"image", "label"} and named[2]["label"] == 4


def test_batches_use_getitems_of_the_parts_that_have_it():
    batched = Batched()
    stack = D.StackDataset(text=batched, label=Squares())
    out = list(D.DataLoader(stack, batch_size=2, collate_fn=lambda b: b))
    assert out[0] == [{"text": "item0", "label": 0}, {"text": "item1", "label": 1}]
    assert batched.calls == 3 and len(out[-1]) == 1
    loader = D.DataLoader(D.StackDataset(Squares(), Squares()), batch_size=5)
    (a, b), = list(loader)
    assert a.tolist() == [0, 1, 4, 9, 16] and b.tolist() == a.tolist()


def test_errors():
    with pytest.raises(ValueError, match="At least one dataset"):
        D.StackDataset()
    with pytest.raises(ValueError, match="both types are given"):
        D.StackDataset(Squares(), b=Squares())
    with pytest.raises(ValueError, match="Size mismatch between datasets"):
        D.StackDataset(Squares(), [1, 2])


def test_invert_permutation():
    perm = autograd.tensor([2, 0, 3, 1])
    inverse = nn.utils.rnn.invert_permutation(perm)
    assert inverse.tolist() == [1, 3, 0, 2] and inverse.dtype == autograd.int64
    assert perm[inverse].tolist() == [0, 1, 2, 3]
    assert nn.utils.rnn.invert_permutation(None) is None
    packed = nn.utils.rnn.pack_sequence([autograd.ones(2), autograd.ones(3), autograd.ones(1)], enforce_sorted=False)
    assert nn.utils.rnn.invert_permutation(packed.sorted_indices).tolist() == packed.unsorted_indices.tolist()


def stacked(m):
    D = m.data
    images = D.TensorDataset(m.torch.arange(12.0).reshape(6, 2))
    labels = D.TensorDataset(m.torch.arange(6))
    stack = D.StackDataset(x=images, y=labels)
    batches = list(D.DataLoader(stack, batch_size=4))
    perm = m.nn.utils.rnn.invert_permutation(m.torch.tensor([3, 1, 0, 2]))
    return [(b["x"][0], b["y"][0]) for b in batches], perm, len(stack)


def test_against_pytorch():
    (batches, perm, n), _ = run_both(stacked)
    assert n == 6 and batches[1][1].tolist() == [4, 5] and perm.tolist() == [2, 1, 3, 0]
