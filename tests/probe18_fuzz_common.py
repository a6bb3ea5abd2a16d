"""What the files of session 18's differential fuzzing of the state around the ops
(tests/test_programs_probe18_fuzz_*.py: layouts, in-place writes, writes through view(), out= and promotion, backward
and autograd.grad) share: ``FUZZ`` (hypothesis' settings), ``TORCH``, ``gradcheck`` (first and second order in
float64), ``agree`` (a program run on both libraries: the same results, or errors of the same class, and warnings
where asked) with its ``_plain``, ``_outcome`` and ``_same``, ``values`` (uniform draws) and ``W0`` (the weights
several programs start from).

Without PyTorch (CI) every program still asserts something real: its gradients by ``gradcheck`` (and
``gradgradcheck``) in float64, or its values against NumPy computed by hand. The draws are derandomized with few
examples, so the files run the same programs each time."""

import warnings

import numpy as np
from hypothesis import HealthCheck, settings

import autograd
import nn  # noqa: F401  (registers autograd.nn)

from .pytorch_programs import pytorch

FUZZ = settings(max_examples=30, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
TORCH = pytorch()


def gradcheck(function, *inputs):
    """chainrule's gradients of ``function`` against finite differences, in float64 (first and second order)."""
    inputs = tuple(autograd.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in inputs)
    assert autograd.autograd.gradcheck(function, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


# -- running a program on both libraries -------------------------------------------------------------


def _plain(result):
    """A result as plain data: ('tensor', dtype name, shape, values), tuples of those, or a Python value."""
    if isinstance(result, autograd.Tensor) or type(result).__module__.startswith("torch"):
        return ("tensor", str(result.dtype).removeprefix("torch."), tuple(result.shape),
                np.array(result.detach().numpy()))
    if isinstance(result, (tuple, list)):
        return tuple(_plain(item) for item in result)
    return result


def _outcome(lib, program):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = "ok", _plain(program(lib))
        except Exception as error:  # noqa: BLE001 (its class is what is compared)
            result = "error", error
    return result, [w for w in caught if issubclass(w.category, UserWarning)]


def _same(ours, theirs, where="result", tolerance=1e-9):
    if isinstance(theirs, tuple) and theirs[:1] == ("tensor",):
        assert isinstance(ours, tuple) and ours[:1] == ("tensor",), f"{where}: {ours!r} is no tensor"
        assert ours[1] == theirs[1], f"{where}: dtype {ours[1]} != PyTorch's {theirs[1]}"
        assert ours[2] == theirs[2], f"{where}: shape {ours[2]} != PyTorch's {theirs[2]}"
        np.testing.assert_allclose(ours[3].astype(np.float64), theirs[3].astype(np.float64), rtol=tolerance,
                                   atol=tolerance, err_msg=where)
    elif isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs), f"{where}: {ours!r} != {theirs!r}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _same(a, b, f"{where}[{i}]", tolerance)
    else:
        assert ours == theirs, f"{where}: {ours!r} != PyTorch's {theirs!r}"


def agree(program, tolerance=1e-9, warns=False, refused=()):
    """Run ``program(lib)`` on chainrule and (where installed) PyTorch: both give the same results, or both
    raise (chainrule's error an instance of the class PyTorch raises among IndexError, TypeError,
    ValueError, RuntimeError). ``warns``: both warn, or neither. Returns chainrule's results (None where
    it raised). Without PyTorch, chainrule may raise only an error of a class in ``refused``."""
    (ours, our_warnings) = _outcome(autograd, program)
    if TORCH is not None:
        (theirs, their_warnings) = _outcome(TORCH.torch, program)
        if theirs[0] == "error":
            assert ours[0] == "error", f"PyTorch raised {theirs[1]!r}, chainrule gave {ours[1]!r}"
            kind = next(k for k in (IndexError, TypeError, ValueError, RuntimeError, Exception)
                        if isinstance(theirs[1], k))
            assert isinstance(ours[1], kind), f"chainrule raised {ours[1]!r} where PyTorch raised {theirs[1]!r}"
        else:
            assert ours[0] == "ok", f"chainrule raised {ours[1]!r}"
            _same(ours[1], theirs[1], tolerance=tolerance)
        if warns:
            assert bool(our_warnings) == bool(their_warnings), (our_warnings, their_warnings)
    elif ours[0] == "error" and not isinstance(ours[1], refused):
        raise ours[1]
    return ours[1] if ours[0] == "ok" else None


def values(rng, shape):
    return rng.uniform(-1.5, 1.5, shape)


W0 = np.linspace(-1, 1, 12).reshape(3, 4)
