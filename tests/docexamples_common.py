"""What the files of PyTorch's docstring examples (tests/test_programs_docexamples_*.py) share: ``AREAS`` and the
``example`` decorator that registers a program in its area, ``snap`` (a result as literals), ``assert_matches``,
``fill`` (fixed weights for a layer), ``raised`` and ``check``, which runs an example on chainrule against its
expected literal and, where PyTorch is installed, on PyTorch against chainrule.

A probe ran every example of PyTorch 2.13's docstrings (about 3100) on both libraries and compared what they return
and print; the examples kept are those that found a difference, now fixed (einsum's sublist form, allclose of shapes
that do not broadcast, broadcast_shapes' Size, complex pinv, matrix_rank and householder_product, hash_tensor,
from_file, a layer given a non-tensor), and a sample of those that already agreed, grouped by area. Random inputs
(``torch.randn(...)`` in the docs) are replaced by fixed values; layers with random weights get fixed ones
(``fill``).

Each example is a program over the modules (``m.torch`` is ``autograd`` or ``torch``). Its result must equal the
literal expected in tests/docexamples_expected.py, so that it is tested without PyTorch, and, where PyTorch is
installed, PyTorch's result: the same dtypes, shapes and values."""

import math

import numpy as np

from .docexamples_expected import EXPECTED
from .pytorch_programs import OURS, pytorch

AREAS = {}  # area -> {example name: program}


def example(area):
    def register(program):
        AREAS.setdefault(area, {})[program.__name__] = program
        return program

    return register


def snap(value):
    """A result as literals: a tensor as (dtype name, nested list of values), a Size as a list,
    a dtype as its name; tuples (named or not) and lists as lists."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        array = value.detach().numpy()
        return (str(value.dtype).removeprefix("torch."), array.tolist())
    if type(value).__name__ == "Size":
        return [int(n) for n in value]
    if type(value).__name__ == "dtype" or type(value).__name__.endswith("DType"):
        return str(value).removeprefix("torch.")
    if isinstance(value, (list, tuple)):
        return [snap(v) for v in value]
    return value


def assert_matches(got, expected, where="result", rtol=1e-5, atol=1e-6):
    """got (a snap) equals expected: tensors' dtypes and shapes exactly, their values to rtol/atol."""
    if isinstance(expected, tuple):  # a tensor: (dtype, values)
        assert isinstance(got, tuple), f"{where}: expected a tensor, got {got!r}"
        assert got[0] == expected[0], f"{where}: dtype {got[0]} != {expected[0]}"
        a, b = np.asarray(got[1]), np.asarray(expected[1])
        assert a.shape == b.shape, f"{where}: shape {a.shape} != {b.shape}"
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True, err_msg=where)
        else:
            assert a.tolist() == b.tolist(), f"{where}: {a.tolist()} != {b.tolist()}"
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), f"{where}: {got!r} != {expected!r}"
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_matches(g, e, f"{where}[{i}]", rtol, atol)
    elif isinstance(expected, float):
        close = math.isclose(got, expected, rel_tol=rtol, abs_tol=atol) or math.isnan(got) and math.isnan(expected)
        assert type(got) in (float, int) and close, f"{where}: {got} != {expected}"
    else:
        assert type(got) is type(expected) and got == expected, f"{where}: {got!r} != {expected!r}"


def fill(m, module):
    """Fixed weights for a layer (the docs' are random): its parameters in order, each a linspace."""
    with m.torch.no_grad():
        for k, p in enumerate(module.parameters()):
            p.copy_(m.torch.linspace(-0.5 + 0.1 * k, 0.5 - 0.05 * k, p.numel()).reshape(p.shape))
    return module


def raised(call, *args, **kwargs):
    """The class name and message of what call raises (None where it returns)."""
    try:
        call(*args, **kwargs)
    except Exception as error:  # noqa: BLE001  (the class is the result)
        return [type(error).__name__, str(error).split("\n")[0]]
    return None


def check(area, name, rtol=1e-5, atol=1e-6):
    program = AREAS[area][name]
    ours = snap(program(OURS))
    assert_matches(ours, EXPECTED[name], "chainrule", rtol, atol)
    torch_modules = pytorch()
    if torch_modules is not None:
        assert_matches(snap(program(torch_modules)), ours, "PyTorch against chainrule", rtol, atol)
