"""autograd.save/load in the .safetensors format, and weights travelling between PyTorch and us."""

import sys

import numpy as np
import pytest

import autograd
import nn


def _model():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_missing_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import safetensors now fails
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ModuleNotFoundError, match=r"chainrule\[safetensors\]"):
        autograd.save({"w": autograd.ones(2)}, tmp_path / "w.safetensors")
    with pytest.raises(ModuleNotFoundError, match=r"chainrule\[safetensors\]"):
        autograd.load(tmp_path / "w.safetensors")


def test_round_trip_keeps_names_values_and_dtypes(tmp_path):
    pytest.importorskip("safetensors")
    state = {
        "weight": autograd.randn(3, 4),
        "bias": autograd.tensor(np.arange(3, dtype=np.float64)),
        "steps": autograd.tensor([7], dtype=autograd.int64),
        "transposed": autograd.randn(4, 3).T,  # not contiguous: stored in C order
        "array": np.ones((2, 2), dtype=np.float16),
    }
    path = tmp_path / "state.safetensors"
    autograd.save(state, path)
    loaded = autograd.load(str(path))
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        expected = value.numpy() if isinstance(value, autograd.Tensor) else value
        assert isinstance(loaded[key], autograd.Tensor) and not loaded[key].requires_grad
        assert loaded[key].dtype == expected.dtype
        np.testing.assert_array_equal(loaded[key].numpy(), expected)


def test_only_flat_dicts_of_tensors(tmp_path):
    pytest.importorskip("safetensors")
    with pytest.raises(TypeError, match="dict of named tensors"):
        autograd.save([autograd.ones(2)], tmp_path / "list.safetensors")
    with pytest.raises(TypeError, match="'lr' is a float"):
        autograd.save({"lr": 0.1}, tmp_path / "lr.safetensors")


def test_npz_files_still_work(tmp_path):
    autograd.save({"w": autograd.ones(2), "n": 3}, tmp_path / "state.pt")
    loaded = autograd.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)
    assert loaded["n"] == 3 and np.array_equal(loaded["w"].numpy(), [1.0, 1.0])


def test_model_round_trip_through_safetensors(tmp_path):
    pytest.importorskip("safetensors")
    autograd.manual_seed(0)
    source, target = _model(), _model()
    path = tmp_path / "model.safetensors"
    autograd.save(source.state_dict(), path)
    target.load_state_dict(autograd.load(path))
    x = autograd.randn(5, 4)
    np.testing.assert_array_equal(source(x).numpy(), target(x).numpy())


def test_load_state_dict_accepts_numpy_arrays():
    source, target = _model(), _model()
    target.load_state_dict({key: value.numpy().copy() for key, value in source.state_dict().items()})
    x = autograd.randn(2, 4)
    np.testing.assert_array_equal(source(x).numpy(), target(x).numpy())


@pytest.mark.torch
def test_pytorch_to_ours_and_back(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)

    save_file(theirs.state_dict(), tmp_path / "torch.safetensors")
    ours = _model()
    ours.load_state_dict(autograd.load(tmp_path / "torch.safetensors"))
    expected = theirs(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours(autograd.tensor(x)).numpy(), expected, rtol=1e-6, atol=1e-6)

    autograd.manual_seed(1)
    ours = _model()
    autograd.save(ours.state_dict(), tmp_path / "ours.safetensors")
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    theirs.load_state_dict(load_file(tmp_path / "ours.safetensors"))
    np.testing.assert_allclose(theirs(torch.from_numpy(x)).detach().numpy(), ours(autograd.tensor(x)).numpy(),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.torch
def test_pytorch_state_dict_of_tensors_loads_directly():
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Linear(4, 3)
    ours = nn.Linear(4, 3)
    ours.load_state_dict(theirs.state_dict())  # torch tensors are read through NumPy
    x = np.ones((1, 4), dtype=np.float32)
    np.testing.assert_allclose(ours(autograd.tensor(x)).numpy(), theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-6)


def test_a_save_that_fails_while_writing_keeps_the_previous_file(tmp_path, monkeypatch):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "w.safetensors"
    autograd.save({"w": autograd.ones(2)}, path)

    def interrupted(arrays, filename):
        with open(filename, "wb") as file:
            file.write(b"\x10\x00 half a header")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors_numpy, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        autograd.save({"w": autograd.zeros(2)}, path)
    monkeypatch.undo()
    assert autograd.load(path)["w"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
