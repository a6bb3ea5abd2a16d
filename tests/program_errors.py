"""Running a program that must fail, on chainrule and (where installed) PyTorch: both must raise the
same kind of exception, and ours must name the problem."""

import pytest

from tests.pytorch_programs import OURS, pytorch


def raises_alike(program, match, *args, kind=Exception):
    """``program(modules, *args)`` raises on both libraries: ours an exception of ``kind`` whose message
    matches ``match``; PyTorch's (where installed) one of the class ours is or derives from (by name,
for the classes each library defines: GradcheckError)."""
    with pytest.raises(kind, match=match) as ours:
        program(OURS, *args)
    torch_modules = pytorch()
    if torch_modules is not None:
        with pytest.raises(Exception) as theirs:
            program(torch_modules, *args)
        # the same class, a subclass of it, or the library's own class of that name (GradcheckError)
        assert type(theirs.value).__name__ in {k.__name__ for k in type(ours.value).__mro__}, (
            f"ours raised {type(ours.value).__name__}, PyTorch {type(theirs.value).__name__}: {theirs.value}")
    return ours.value
