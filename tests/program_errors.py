"""Running a program that must fail, on chainrule and (where installed) PyTorch: both must raise the
same kind of exception, and ours must name the problem."""

import pytest

from tests.pytorch_programs import OURS, pytorch


def raises_alike(program, match, *args, kind=Exception):
    """``program(modules, *args)`` raises on both libraries: ours an exception of ``kind`` whose message
    matches ``match``; PyTorch's (where installed) one of the class ours is or derives from."""
    with pytest.raises(kind, match=match) as ours:
        program(OURS, *args)
    torch_modules = pytorch()
    if torch_modules is not None:
        with pytest.raises(Exception) as theirs:
            program(torch_modules, *args)
        assert isinstance(ours.value, type(theirs.value)), (
            f"ours raised {type(ours.value).__name__}, PyTorch {type(theirs.value).__name__}: {theirs.value}")
    return ours.value
