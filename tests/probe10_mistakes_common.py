"""What the files of session 10's new-user-mistakes probe (tests/test_programs_probe10_mistakes_*.py, one kind of
mistake each) share: ``_same`` (run on both libraries, ours returned), ``warns_alike`` (both warn, alike, and give
the same result), and the images, labels and float64 rows drawn once from one seeded generator.

The programs run on chainrule and (where installed) PyTorch. Each must (a) raise where PyTorch raises, an exception
of PyTorch's class (or a subclass) whose message names the problem, (b) warn where PyTorch warns, with the same
warning class and the same result, or (c) give the same wrong-but-legal answer PyTorch gives.

Deliberate differences the README names (a loss of mismatched shapes raises; ``view`` of a transposed tensor and
``numpy()`` of a tensor that requires grad work) are not repeated here."""

import re
import warnings

import numpy as np

from tests.pytorch_programs import OURS, assert_same, plain, pytorch, run_both


def _same(program, *args, **kwargs):
    return run_both(program, *args, **kwargs)[0]


def warns_alike(program, match, *args, kind=UserWarning, rtol=1e-5, atol=1e-6):
    """``program(modules, *args)`` warns on both libraries (ours a ``kind`` matching ``match``, PyTorch's one of
    that class) and returns the same result on both. Returns ours."""
    with warnings.catch_warnings(record=True) as ours_caught:
        warnings.simplefilter("always")
        ours = plain(program(OURS, *args))
    assert any(issubclass(w.category, kind) and re.search(match, str(w.message)) for w in ours_caught), (
        [f"{w.category.__name__}: {w.message}" for w in ours_caught])
    torch_modules = pytorch()
    if torch_modules is not None:
        with warnings.catch_warnings(record=True) as theirs_caught:
            warnings.simplefilter("always")
            theirs = plain(program(torch_modules, *args))
        assert any(issubclass(w.category, kind) for w in theirs_caught), "PyTorch did not warn"
        assert_same(ours, theirs, rtol, atol)
    return ours


RNG = np.random.default_rng(0)
IMAGES = RNG.standard_normal((4, 1, 8, 8)).astype(np.float32)
LABELS = np.array([0, 2, 1, 2])
ROWS = RNG.standard_normal((5, 3))  # float64, as NumPy makes them
