"""Focused tests of the library fixes found by tests/test_programs_probe28_gan.py, against PyTorch where installed
and against PyTorch's words always."""

import pytest

import autograd

from .pytorch_programs import error_of, pytorch


def grad_errors(torch):
    """autograd.grad's refusals, in PyTorch's order: an output that needs no grad is named before an input that
    needs none (a critic evaluated under no_grad, asked for a gradient penalty on a plain tensor)."""
    x = torch.randn(2, 3)
    y = torch.randn(2, 3, requires_grad=True)
    return [error_of(lambda: torch.autograd.grad(x.sum(), x)),
            error_of(lambda: torch.autograd.grad(x.sum(), y)),
            error_of(lambda: torch.autograd.grad((y * 2).sum(), x)),
            error_of(lambda: torch.autograd.grad((y * 2).sum(), [y, x]))]


OUTPUT_FIRST = "element 0 of tensors does not require grad and does not have a grad_fn"
INPUT = "One of the differentiated Tensors does not require grad"


def test_grad_names_the_output_before_the_input():
    ours = grad_errors(autograd)
    assert [e[0] for e in ours] == ["RuntimeError"] * 4
    assert ours[0][1].startswith(OUTPUT_FIRST) and ours[1][1].startswith(OUTPUT_FIRST)
    assert ours[2][1].startswith(INPUT) and ours[3][1].startswith(INPUT)


@pytest.mark.torch
def test_grad_errors_are_pytorchs():
    torch_modules = pytorch()
    if torch_modules is None:
        pytest.skip("PyTorch is not installed")
    theirs = grad_errors(torch_modules.torch)
    for a, b in zip(grad_errors(autograd), theirs):
        assert a[0] == b[0] and a[1].startswith(b[1]), (a, b)
