"""Fixes found by the energy-based-model probe (tests/test_programs_probe27_energy.py), each against PyTorch where
installed and against literals always."""

import pytest

import autograd

REMOVED = ["solve", "lstsq", "eig", "symeig", "matrix_rank"]


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("name", REMOVED)
def test_removed_linalg_functions_raise_runtime_error(name):
    """torch.symeig & co. were removed in PyTorch 1.9 but stay names that raise a RuntimeError saying what replaces
    them (old HMC code calls torch.symeig for a metric): not an AttributeError."""
    A = autograd.eye(2)
    assert hasattr(autograd, name)
    with pytest.raises(RuntimeError, match="deprecated since version 1.9 and is now removed") as ours:
        getattr(autograd, name)(A, A)
    assert ("linalg." + ("eigh" if name == "symeig" else "eigvals" if name == "eig" else name)) in str(ours.value)


@pytest.mark.parametrize("name", REMOVED)
def test_removed_linalg_messages_are_pytorchs(name):
    torch = _torch()
    with pytest.raises(RuntimeError) as theirs:
        getattr(torch, name)(torch.eye(2), torch.eye(2))
    with pytest.raises(RuntimeError) as ours:
        getattr(autograd, name)(autograd.eye(2), autograd.eye(2))
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("name", REMOVED)
def test_removed_linalg_methods(name):
    """Tensor.solve, .lstsq, .eig and .symeig raise the same way; Tensor has no matrix_rank method (nor PyTorch's)."""
    A = autograd.eye(2)
    if name == "matrix_rank":
        assert not hasattr(A, name)
        return
    with pytest.raises(RuntimeError, match="is now removed"):
        getattr(A, name)(A)
