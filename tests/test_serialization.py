"""autograd.save and autograd.load: what is written comes back (values, dtypes, nesting, shared
tensors), and writing to a path never loses the file that was there (a save that fails leaves it
whole; nothing half-written is left beside it)."""

import io
import os
import stat

import numpy as np
import pytest

import autograd
import nn


def _state():
    model = nn.Linear(3, 2)
    return {"model": model.state_dict(), "step": 7, "names": ["a", "b"], "ints": autograd.arange(4),
            "half": autograd.ones(2, dtype=autograd.float16)}


def test_what_is_saved_loads_back(tmp_path):
    state = _state()
    path = tmp_path / "checkpoint.pt"
    autograd.save(state, path)
    loaded = autograd.load(path)
    assert loaded["step"] == 7 and loaded["names"] == ["a", "b"]
    for key, value in state["model"].items():
        np.testing.assert_array_equal(loaded["model"][key].numpy(), value.numpy())
    assert loaded["ints"].dtype == autograd.int64 and loaded["ints"].tolist() == [0, 1, 2, 3]
    assert loaded["half"].dtype == autograd.float16


def test_saving_again_replaces_the_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    autograd.save({"x": autograd.tensor([1.0])}, path)
    autograd.save({"x": autograd.tensor([2.0])}, path)
    assert autograd.load(path)["x"].tolist() == [2.0]
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left beside it


def test_a_save_that_fails_while_writing_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    autograd.save({"x": autograd.tensor([1.0, 2.0])}, path)
    before = path.read_bytes()

    def full_disk(file, **entries):
        file.write(b"PK\x03\x04 part of an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="No space left"):
        autograd.save({"x": autograd.tensor([3.0, 4.0])}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert autograd.load(path)["x"].tolist() == [1.0, 2.0]
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def test_an_object_that_cannot_be_saved_leaves_the_file_untouched(tmp_path):
    path = tmp_path / "checkpoint.pt"
    autograd.save([autograd.tensor([1.0])], path)
    with pytest.raises(TypeError, match="cannot store an object of type object"):
        autograd.save([autograd.tensor([5.0]), object()], path)
    assert autograd.load(path)[0].tolist() == [1.0]


@pytest.mark.skipif(os.name != "posix", reason="permission bits and symbolic links as POSIX has them")
def test_a_saved_file_has_the_permissions_open_gives_and_a_link_stays_a_link(tmp_path):
    umask = os.umask(0o022)
    try:
        target = tmp_path / "real.pt"
        autograd.save({"x": autograd.tensor([1.0])}, target)
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        link = tmp_path / "latest.pt"
        link.symlink_to(target)
        autograd.save({"x": autograd.tensor([9.0])}, link)
        assert link.is_symlink()
        assert autograd.load(target)["x"].tolist() == [9.0]
    finally:
        os.umask(umask)


def test_saving_to_a_file_object_writes_into_it():
    import io

    buffer = io.BytesIO()
    autograd.save({"x": autograd.tensor([1.5])}, buffer)
    buffer.seek(0)
    assert autograd.load(buffer)["x"].tolist() == [1.5]


def test_a_dtype_in_a_checkpoint_loads_back_as_itself():
    """PyTorch checkpoints record the model's dtype (``torch.float16``): it is stored by its name."""
    buffer = io.BytesIO()
    autograd.save({"dtype": autograd.float16, "dtypes": [autograd.int64, autograd.complex64]}, buffer)
    buffer.seek(0)
    loaded = autograd.load(buffer, weights_only=True)
    assert loaded == {"dtype": autograd.float16, "dtypes": [autograd.int64, autograd.complex64]}


def test_a_dtype_no_tensor_has_is_refused_at_save_or_load():
    with pytest.raises(TypeError):
        autograd.save({"dtype": np.dtype("U3")}, io.BytesIO())
