"""What the files of session 7's probe of the autograd-mechanics notes (tests/test_programs_probe7_mechanics_*.py:
saved tensors, hooks and in-place checks, grad modes, threads and complex gradients) share: ``_same``, which runs a
program on both libraries and returns chainrule's values."""

from tests.pytorch_programs import run_both


def _same(program, *args, **kwargs):
    return run_both(program, *args, **kwargs)[0]
