"""The fixes of the data-pipeline probe (session 25), each against PyTorch where installed and against literals
always: multinomial's errors with replacement (WeightedRandomSampler's), TensorDataset's edge cases, tensor() of
integers past int64's range (default_collate's), randperm's n read by PyTorch's int parser (random_split with tensor
lengths)."""

import math

import pytest

import autograd
from autograd.utils.data import TensorDataset, random_split

from .pytorch_programs import error_of


def torch_or_skip():
    return pytest.importorskip("torch")


NEGATIVE = ("RuntimeError", "invalid multinomial distribution (encountering probability entry < 0)")
INFINITE = ("RuntimeError", "invalid multinomial distribution (encountering probability entry = infinity or NaN)")
ZERO_SUM = ("RuntimeError", "invalid multinomial distribution (sum of probabilities <= 0)")
WHOLE = ("RuntimeError", "probability tensor contains either `inf`, `nan` or element < 0")

# (weights, num_samples, replacement, PyTorch's error): with replacement and several draws its kernel checks each
# row's entries in turn, then the row's sum; one draw or none replaced: the whole tensor at once
MULTINOMIAL_CASES = [
    ([-1.0, 2.0], 2, True, NEGATIVE),
    ([math.nan, 1.0], 2, True, NEGATIVE),
    ([math.inf, 1.0], 2, True, INFINITE),
    ([[math.inf, -1.0]], 3, True, INFINITE),
    ([[-1.0, math.inf]], 3, True, NEGATIVE),
    ([[0.0, 0.0], [-1.0, 1.0]], 3, True, ZERO_SUM),
    ([[1.0, 1.0], [1.0, math.nan]], 3, True, NEGATIVE),
    ([-1.0, 2.0], 1, True, WHOLE),
    ([-1.0, 2.0], 2, False, WHOLE),
    ([math.inf, 1.0], 2, False, WHOLE),
    ([0.0, 0.0], 2, True, ZERO_SUM),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("weights, n, replacement, expected", MULTINOMIAL_CASES)
def test_multinomial_errors_as_pytorch_kernels(weights, n, replacement, expected, dtype):
    ours = error_of(lambda: autograd.multinomial(autograd.tensor(weights, dtype=getattr(autograd, dtype)), n,
                                                 replacement))
    assert ours == expected
    try:
        import torch
    except ImportError:
        return
    assert error_of(lambda: torch.multinomial(torch.tensor(weights, dtype=getattr(torch, dtype)), n,
                                              replacement)) == expected


def test_weighted_random_sampler_negative_weight():
    from autograd.utils.data import WeightedRandomSampler

    assert error_of(lambda: list(WeightedRandomSampler([0.5, -1.0, 2.0], 4))) == NEGATIVE


def test_tensor_dataset_edge_cases():
    empty = TensorDataset()
    assert empty.tensors == ()
    assert error_of(lambda: len(empty)) == ("IndexError", "tuple index out of range")
    scalar = ("IndexError", "Dimension specified as 0 but tensor has no dimensions")
    assert error_of(lambda: TensorDataset(autograd.tensor(1.0))) == scalar
    assert error_of(lambda: TensorDataset(autograd.zeros(2), autograd.tensor(1.0))) == scalar
    torch = pytest.importorskip("torch")
    from torch.utils.data import TensorDataset as TorchTensorDataset

    assert error_of(lambda: len(TorchTensorDataset())) == ("IndexError", "tuple index out of range")
    assert error_of(lambda: TorchTensorDataset(torch.zeros(2), torch.tensor(1.0))) == scalar


OVERFLOW = ("ValueError", "Overflow when unpacking long long")


@pytest.mark.parametrize("data", [[2 ** 70, 1], [2 ** 63], [-2 ** 63 - 1], 2 ** 64, [[1, 2 ** 65]], [True, 2 ** 64]])
def test_tensor_of_integers_past_int64_overflows(data):
    assert error_of(lambda: autograd.tensor(data)) == OVERFLOW
    try:
        import torch
    except ImportError:
        return
    assert error_of(lambda: torch.tensor(data)) == OVERFLOW


def test_tensor_of_a_huge_integer_among_floats_is_a_float():
    ours = autograd.tensor([1.0, 2 ** 70])
    assert ours.dtype == autograd.float32 and ours.tolist() == [1.0, float(2 ** 70)]
    nested = autograd.tensor([[2 ** 70], [0.5]])
    assert nested.tolist() == [[float(2 ** 70)], [0.5]]
    torch = pytest.importorskip("torch")
    theirs = torch.tensor([1.0, 2 ** 70])
    assert theirs.dtype == torch.float32 and theirs.tolist() == ours.tolist()
    assert torch.tensor([[2 ** 70], [0.5]]).tolist() == nested.tolist()


def test_default_collate_of_huge_integers():
    from autograd.utils.data import default_collate

    assert error_of(lambda: default_collate([2 ** 70, 1])) == OVERFLOW


def test_randperm_reads_n_as_pytorch_parser():
    g = autograd.Generator().manual_seed(0)
    assert autograd.randperm(autograd.tensor(6), generator=g).tolist() == [2, 5, 3, 0, 1, 4]
    assert error_of(lambda: autograd.randperm(6.0)) == (
        "TypeError", "randperm(): argument 'n' (position 1) must be int, not float")
    assert error_of(lambda: autograd.randperm(True)) == (
        "TypeError", "randperm(): argument 'n' (position 1) must be int, not bool")
    assert error_of(lambda: autograd.randperm(autograd.tensor(6.0))) == (
        "TypeError", "randperm(): argument 'n' (position 1) must be int, not Tensor")
    torch = pytest.importorskip("torch")
    assert torch.randperm(torch.tensor(6), generator=torch.Generator().manual_seed(0)).tolist() == [2, 5, 3, 0, 1, 4]
    assert error_of(lambda: torch.randperm(6.0)) == error_of(lambda: autograd.randperm(6.0))


def test_random_split_with_tensor_lengths():
    first, second = random_split(range(6), (autograd.tensor(4), autograd.tensor(2)),
                                 generator=autograd.Generator().manual_seed(0))
    assert list(first) == [2, 5, 3, 0] and list(second) == [1, 4]


def test_loader_reads_a_tensor_dataset_subclass_through_its_getitem():
    """A TensorDataset subclass that augments in ``__getitem__`` was batched by TensorDataset's own fast path, so its
    samples came back unaugmented ([0, 1] where PyTorch's [0, 2]); a Subset of it too."""
    from autograd.utils.data import DataLoader, Subset

    class Doubled(TensorDataset):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return x * 2, y + 100

    class WithIndex(TensorDataset):
        def __getitem__(self, i):
            return (*super().__getitem__(i), i)

    doubled = Doubled(autograd.arange(4.0), autograd.arange(4))
    assert [b[0].tolist() for b in DataLoader(doubled, batch_size=2)] == [[0.0, 2.0], [4.0, 6.0]]
    assert [b[1].tolist() for b in DataLoader(Subset(doubled, [3, 1]), batch_size=2)] == [[103, 101]]
    with_index = [b[1].tolist() for b in DataLoader(WithIndex(autograd.arange(3.0)), batch_size=2)]
    assert with_index == [[0, 1], [2]]
    plain = TensorDataset(autograd.arange(3.0))
    assert [b[0].tolist() for b in DataLoader(Subset(plain, [2, 0]), batch_size=2)] == [[2.0, 0.0]]


def test_worker_info_under_pytorch_private_path():
    """Sharding code imports get_worker_info from torch.utils.data._utils.worker; that module was missing."""
    import autograd.utils.data as data
    from autograd.utils.data._utils.worker import WorkerInfo, get_worker_info

    class Shards(data.IterableDataset):
        def __iter__(self):
            info = get_worker_info()
            assert isinstance(info, WorkerInfo)
            return iter(range(info.id, 6, info.num_workers))

    assert get_worker_info() is None
    assert [b.item() for b in data.DataLoader(Shards(), num_workers=2)] == [0, 1, 2, 3, 4, 5]


def test_loader_index_errors_of_a_tensor_dataset_are_pytorch_words():
    """TensorDataset's batch-at-once path handed the sampler's indices to NumPy: an index past the end was NumPy's
    "axis 0" error, a float index (1.0) was read as 1; now such a batch is read sample by sample, as PyTorch's."""
    from autograd.utils.data import DataLoader, Subset

    ds = TensorDataset(autograd.arange(5) * 2, autograd.arange(5.0))
    assert error_of(lambda: list(DataLoader(ds, sampler=[1, 10], batch_size=2))) == (
        "IndexError", "index 10 is out of bounds for dimension 0 with size 5")
    assert error_of(lambda: list(DataLoader(Subset(ds, [0, 9]), batch_size=2))) == (
        "IndexError", "index 9 is out of bounds for dimension 0 with size 5")
    floats = ("IndexError", "only integers, slices (`:`), ellipsis (`...`), None and long or byte Variables are "
              "valid indices (got float)")
    assert error_of(lambda: list(DataLoader(ds, sampler=[1.0], batch_size=1))) == floats
    assert [b[0].tolist() for b in DataLoader(ds, sampler=[-1, 0], batch_size=2)] == [[8, 0]]


@pytest.mark.parametrize("index, expected", [
    (1.0, "only integers, slices (`:`), ellipsis (`...`), None and long or byte Variables are valid indices (got "
          "float)"),
    ((0, 1.5), "only integers, slices (`:`), ellipsis (`...`), None and long or byte Variables are valid indices "
               "(got float)"),
    ("float64", "only integers, slices (`:`), ellipsis (`...`), None and long or byte Variables are valid indices "
                "(got numpy.float64)"),
    ("tensor", "tensors used as indices must be long, int, byte or bool tensors"),
])
def test_float_subscripts_refused_in_pytorch_words(index, expected):
    import numpy

    def key(lib):
        if index == "float64":
            return numpy.float64(1.0)
        if index == "tensor":
            return lib.tensor([1.0])
        return index

    x = autograd.arange(6).view(2, 3)
    assert error_of(lambda: x[key(autograd)]) == ("IndexError", expected)
    try:
        import torch
    except ImportError:
        return
    assert error_of(lambda: torch.arange(6).view(2, 3)[key(torch)]) == ("IndexError", expected)
