"""A new user's first hour: short programs that each make one mistake people really make, run as
tests/probe10_mistakes_common.py says. Data and checkpoints: float64 NumPy data into a float32 model, a dataset of
ragged sequences; a checkpoint of another architecture, ``strict=False``'s unmatched keys, a checkpoint saved from
DataParallel (prefixed keys), one with other sizes even with ``strict=False``, the best state kept without a copy."""

import copy

from tests.program_errors import raises_alike

from .probe10_mistakes_common import ROWS, _same

# -- data -------------------------------------------------------------------------------------------------


def test_float64_numpy_data_into_a_float32_model():
    def program(m):
        class Rows(m.data.Dataset):
            def __len__(self):
                return 4

            def __getitem__(self, i):
                return ROWS[i], i % 2  # NumPy's default dtype is float64

        features, _ = next(iter(m.data.DataLoader(Rows(), batch_size=2)))
        return m.nn.Linear(3, 2)(features)

    error = raises_alike(program, "same dtype", kind=RuntimeError)
    assert "float64" in str(error) and "float32" in str(error)


def test_a_dataset_of_sequences_of_different_lengths():
    def program(m):
        class Sentences(m.data.Dataset):
            def __len__(self):
                return 4

            def __getitem__(self, i):
                return m.torch.arange(i + 2)

        return next(iter(m.data.DataLoader(Sentences(), batch_size=2)))

    raises_alike(program, r"stack expects each tensor to be equal size, but got \[2\] at entry 0 and \[3\]",
                 kind=RuntimeError)


# -- checkpoints ------------------------------------------------------------------------------------------


def _two_models(m):
    small = m.nn.Sequential(m.nn.Linear(2, 2))
    large = m.nn.Sequential(m.nn.Linear(2, 2), m.nn.ReLU(), m.nn.Linear(2, 1))
    return small, large


def test_loading_a_checkpoint_of_another_architecture():
    def program(m):
        small, large = _two_models(m)
        large.load_state_dict(small.state_dict())

    error = raises_alike(program, "Error\\(s\\) in loading state_dict for Sequential", kind=RuntimeError)
    assert 'Missing key(s) in state_dict: "2.weight", "2.bias"' in str(error)


def test_strict_false_returns_the_keys_that_did_not_match():
    def program(m):
        small, large = _two_models(m)
        missing = large.load_state_dict(small.state_dict(), strict=False)
        unexpected = small.load_state_dict(large.state_dict(), strict=False)
        return [missing.missing_keys, missing.unexpected_keys, unexpected.unexpected_keys, repr(unexpected),
                str(small.load_state_dict(small.state_dict()))]

    assert _same(program)[:3] == [["2.weight", "2.bias"], [], ["2.weight", "2.bias"]]


def test_a_checkpoint_saved_from_dataparallel():
    def program(m):
        saved = {"module." + k: v for k, v in m.nn.Linear(2, 2).state_dict().items()}
        m.nn.Linear(2, 2).load_state_dict(saved)

    error = raises_alike(program, "Unexpected key\\(s\\) in state_dict: \"module.weight\"", kind=RuntimeError)
    assert 'Missing key(s) in state_dict: "weight", "bias"' in str(error)


def test_a_checkpoint_with_other_sizes_even_with_strict_false():
    def program(m):
        m.nn.Linear(2, 3).load_state_dict(m.nn.Linear(2, 2).state_dict(), strict=False)

    raises_alike(program, r"size mismatch for weight: copying a param with shape .*Size\(\[2, 2\]\) from checkpoint, "
                          r"the shape in current model is .*Size\(\[3, 2\]\)", kind=RuntimeError)


def test_the_best_state_kept_without_a_copy_follows_the_training():
    def program(m):
        model = m.nn.Linear(1, 1, bias=False)
        with m.torch.no_grad():
            model.weight.fill_(1.0)
        best, best_copy = model.state_dict(), copy.deepcopy(model.state_dict())
        optimizer = m.optim.SGD(model.parameters(), lr=0.5)
        model(m.torch.ones(1, 1)).sum().backward()
        optimizer.step()
        return best["weight"], best_copy["weight"]

    kept, copied = _same(program)
    assert kept.item() == 0.5 and copied.item() == 1.0
