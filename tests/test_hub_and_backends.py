"""autograd.backends (torch.backends: a package, so `import torch.backends.cudnn as cudnn` works) and autograd.hub
(torch.hub's progress bar and cache directory; its downloads refused)."""

import importlib
import io
import sys

import pytest

import autograd


def test_backends_is_a_package_of_switches():
    import autograd.backends.cudnn as cudnn  # (the first lines of pytorch/examples' imagenet and dcgan)

    assert cudnn is autograd.backends.cudnn and not cudnn.is_available()
    old = cudnn.benchmark, cudnn.deterministic
    try:
        cudnn.benchmark, cudnn.deterministic = True, True
        assert autograd.backends.cudnn.benchmark and autograd.backends.cudnn.deterministic
    finally:
        cudnn.benchmark, cudnn.deterministic = old
    assert autograd.backends.cudnn.allow_tf32 is True and autograd.backends.cuda.matmul.allow_tf32 is False
    assert not autograd.backends.mps.is_available() and not autograd.backends.cuda.is_built()


def test_hub_progress_bar_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # (as where the extra is not installed)
    hub = importlib.reload(importlib.import_module("autograd.hub"))
    try:
        bar = hub.tqdm(range(3), desc="EPOCH", file=io.StringIO())
        assert list(bar) == [0, 1, 2] and bar.n == 3 and len(bar) == 3
        bar.set_postfix(loss=0.5)
        bar.set_description("next")
        with hub.tqdm(total=10) as manual:
            manual.update(4)
            assert manual.n == 4
    finally:
        monkeypatch.undo()
        importlib.reload(hub)


def test_hub_refuses_downloads_and_keeps_its_directory(tmp_path):
    with pytest.raises(RuntimeError, match="downloads code or weights from the network"):
        autograd.hub.load("pytorch/vision", "resnet18")
    with pytest.raises(RuntimeError, match="load_state_dict_from_url downloads"):
        autograd.hub.load_state_dict_from_url("https://example.invalid/w.pth")
    before = autograd.hub.get_dir()
    autograd.hub.set_dir(str(tmp_path))
    try:
        assert autograd.hub.get_dir() == str(tmp_path)
    finally:
        autograd.hub.set_dir(before)


def test_accelerator_names_a_device_or_none():
    """torch.accelerator: the examples' `torch.accelerator.current_accelerator().type if ... is_available()`."""
    if autograd.accelerator.is_available():  # (CuPy serving a GPU)
        assert autograd.accelerator.current_accelerator() == autograd.device("cuda")
        assert autograd.accelerator.current_accelerator().type == "cuda"
    else:
        assert autograd.accelerator.current_accelerator() is None and autograd.accelerator.device_count() == 0
    assert autograd.accelerator.current_device_index() == 0
    autograd.accelerator.synchronize()
    autograd.accelerator.set_device_index(0)
