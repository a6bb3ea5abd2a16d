"""repr, str and print of tensors (autograd/printing.py): PyTorch's text, character for character.

A table of tensors is compared with PyTorch's repr where PyTorch is installed (its ``torch.`` dtype
prefix set aside); a handful of expected
strings written out below assert the same layout without it.
"""

import re

import numpy as np
import pytest

import autograd


@pytest.fixture(autouse=True)
def _default_printoptions():
    """Each test starts and ends with the default settings (ours, and PyTorch's when it is loaded)."""
    autograd.set_printoptions(profile="default")
    yield
    autograd.set_printoptions(profile="default")
    try:
        import torch
    except ImportError:
        return
    torch.set_printoptions(profile="default")


def _random(*shape, scale=1.0, dtype=np.float32):
    return (np.random.default_rng(sum(shape) + 7).standard_normal(shape) * scale).astype(dtype)


# name -> the array both libraries print
ARRAYS = {
    "vector": np.array([1.0, 2.5], np.float32),
    "whole numbers": np.array([1.0, -2.0, 30.0], np.float32),
    "0-d": np.array(3.0, np.float32),
    "0-d fraction": np.array(-0.125, np.float32),
    "0-d int": np.array(-7),
    "0-d bool": np.array(True),
    "0-d tiny": np.array(1e-10, np.float32),
    "0-d nan": np.array(np.nan, np.float32),
    "0-d negative zero": np.array(-0.0, np.float32),
    "empty": np.zeros(0, np.float32),
    "empty 0x3": np.zeros((0, 3), np.float32),
    "empty int 2x0x3": np.zeros((2, 0, 3), np.int64),
    "empty int": np.zeros(0, np.int64),
    "empty bool": np.zeros(0, bool),
    "empty float64": np.zeros((3, 0)),
    "sci: small": np.array([1e-5, 1.0], np.float32),
    "sci: large": np.array([1e9, 1.0]),
    "sci: ratio over 1000": np.array([1.0, 1001.0], np.float32),
    "fixed: ratio under 1000": np.array([1.0, 999.5]),
    "sci: at 1e8": np.array([1e8, 2e8]),
    "fixed: under 1e8": np.array([12345678.0, 1.5]),
    "sci: extremes": np.array([1e300, 1e-300]),
    "nan inf whole": np.array([np.nan, np.inf, -np.inf, 1.0], np.float32),
    "nan inf fraction": np.array([np.nan, 1.5, -np.inf], np.float32),
    "nan inf sci": np.array([np.nan, np.inf, 1e-6]),
    "only nan and inf": np.array([np.nan, -np.inf], np.float32),
    "zeros": np.zeros((2, 2), np.float32),
    "negative zero": np.array([-0.0, 0.0, 1.0], np.float32),
    "negative zero fraction": np.array([-0.0, 0.5], np.float32),
    "ints 2-d": np.arange(12).reshape(3, 4),
    "ints negative": np.array([[-5, 10], [300, -4000]]),
    "int64 extremes": np.array([2**62, -5]),
    "int32": np.array([1, 2], np.int32),
    "int8": np.array([1, -100], np.int8),
    "uint8": np.array([3, 255], np.uint8),
    "bool": np.array([[True, False], [False, True]]),
    "float16": np.array([1.0, 2.5], np.float16),
    "float16 sci": np.array([0.1, 65504.0], np.float16),
    "float64": np.array([1.0, 2.5]),
    "complex64": np.array([1 + 2j, -3.5 - 0j], np.complex64),
    "complex128 0-d": np.array(1e-3j),
    "complex128": np.array([[1 + 2j, 3 - 1j], [0.5j, -2]]),
    "3-d": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
    "4-d": _random(2, 3, 4, 5),
    "4-d whole": np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5),
    "small magnitudes": _random(3, 3, scale=1e-3),
    "wraps at 80": _random(100),
    "wraps, wide numbers": _random(30, scale=1e5),
    "wraps, whole numbers": np.arange(60, dtype=np.float32) * 1.5,
    "linspace": np.linspace(-1, 1, 33).astype(np.float32),
    "mixed widths": np.array([123456.7, 0.5], np.float32),
    "summarised 1-d": np.arange(1001, dtype=np.float32),
    "summarised ints 2-d": np.arange(2000).reshape(40, 50),
    "summarised bool": np.arange(1500).reshape(3, 500) % 3 == 0,
    "summarised 3-d": _random(40, 50, 3),
    "summarised 4-d float64": _random(7, 7, 7, 7, dtype=np.float64),
    "summarised 1000x1000": np.arange(1_000_000, dtype=np.float32).reshape(1000, 1000),
    "summarised, short rows": _random(500, 3),
    "summarised, one long row": _random(1, 2000),
}


def _torch_repr(torch, array, requires_grad=False):
    return repr(torch.tensor(array.copy(), requires_grad=requires_grad))


def _as_ours(text):
    """PyTorch's text in this project's names: ``float64`` for ``torch.float64``."""
    return text.replace("torch.", "")


def _unwrapped(text):
    """The text with its suffixes on the line of the numbers: where a dtype's or a grad_fn's name is
    longer in PyTorch, its suffixes move to the next line sooner."""
    return re.sub(r",\n *(?=(?:size|dtype|grad_fn|requires_grad)=)", ", ", text)


def _assert_same(ours, theirs):
    theirs = _as_ours(theirs)
    if "dtype=" in ours or "grad_fn=" in ours:
        ours, theirs = _unwrapped(ours), _unwrapped(theirs)
    assert ours == theirs, f"\nours:\n{ours}\nPyTorch's:\n{theirs}"


@pytest.mark.torch
@pytest.mark.parametrize("name", ARRAYS)
def test_repr_matches_pytorch(name):
    torch = pytest.importorskip("torch")
    array = ARRAYS[name]
    _assert_same(repr(autograd.tensor(array.copy())), _torch_repr(torch, array))


@pytest.mark.torch
@pytest.mark.parametrize("name", ["vector", "0-d", "3-d", "float64", "wraps at 80", "summarised 3-d", "float16"])
def test_repr_with_requires_grad_matches_pytorch(name):
    torch = pytest.importorskip("torch")
    array = ARRAYS[name]
    _assert_same(repr(autograd.tensor(array.copy(), requires_grad=True)), _torch_repr(torch, array, True))


@pytest.mark.torch
@pytest.mark.parametrize("op", [lambda x: x * 2, lambda x: (x * 2).sum(), lambda x: x + 1, lambda x: x.exp(),
                                lambda x: x.unsqueeze(0) * x.unsqueeze(1), lambda x: (x * x).mean()])
@pytest.mark.parametrize("name", ["vector", "linspace", "float64"])
def test_repr_with_grad_fn_matches_pytorch(op, name):
    torch = pytest.importorskip("torch")
    array = ARRAYS[name]
    ours = op(autograd.tensor(array.copy(), requires_grad=True))
    theirs = op(torch.tensor(array.copy(), requires_grad=True))
    _assert_same(repr(ours), repr(theirs))


OPTIONS = {
    "precision 2": dict(precision=2),
    "precision 0": dict(precision=0),
    "precision 8": dict(precision=8),
    "sci_mode on": dict(sci_mode=True),
    "sci_mode off": dict(sci_mode=False),
    "threshold 5": dict(threshold=5),
    "threshold 5, edgeitems 1": dict(threshold=5, edgeitems=1),
    "threshold 5, edgeitems 0": dict(threshold=5, edgeitems=0),
    "edgeitems 0 alone": dict(edgeitems=0),
    "linewidth 30": dict(linewidth=30),
    "linewidth 1": dict(linewidth=1),
    "profile short": dict(profile="short"),
    "profile full": dict(profile="full"),
    "profile short, precision 6": dict(profile="short", precision=6),
}


@pytest.mark.torch
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("name", ["vector", "0-d", "sci: small", "ints 2-d", "3-d", "wraps at 80", "summarised 1-d",
                                  "summarised ints 2-d", "complex64", "nan inf fraction", "bool", "empty 0x3"])
def test_set_printoptions_matches_pytorch(options, name):
    torch = pytest.importorskip("torch")
    array = ARRAYS[name]
    autograd.set_printoptions(**OPTIONS[options])
    torch.set_printoptions(**OPTIONS[options])
    _assert_same(repr(autograd.tensor(array.copy())), _torch_repr(torch, array))


@pytest.mark.torch
def test_default_dtype_float64_matches_pytorch():
    torch = pytest.importorskip("torch")
    old, old_torch = autograd.get_default_dtype(), torch.get_default_dtype()
    autograd.set_default_dtype(autograd.float64)
    torch.set_default_dtype(torch.float64)
    try:
        for name in ["vector", "float64", "empty float64", "empty", "complex64", "complex128", "empty int"]:
            array = ARRAYS[name]
            _assert_same(repr(autograd.tensor(array.copy())), _torch_repr(torch, array))
        assert repr(autograd.tensor([1.0, 2.5])) == "tensor([1.0000, 2.5000])"
        assert repr(autograd.tensor(np.array([1.0], np.float32))) == "tensor([1.], dtype=float32)"
    finally:
        autograd.set_default_dtype(old)
        torch.set_default_dtype(old_torch)


@pytest.mark.torch
def test_parameter_and_subclass_match_pytorch():
    torch = pytest.importorskip("torch")
    import nn

    ours = nn.Parameter(autograd.tensor(ARRAYS["3-d"].copy()))
    theirs = torch.nn.Parameter(torch.tensor(ARRAYS["3-d"].copy()))
    _assert_same(repr(ours), repr(theirs))

    ours_class = type("Special", (autograd.Tensor,), {})
    their_class = type("Special", (torch.Tensor,), {})
    array = ARRAYS["wraps at 80"]
    _assert_same(repr(ours_class(array.copy())), repr(torch.tensor(array.copy()).as_subclass(their_class)))


# -- the same layout asserted without PyTorch --------------------------------------------------------------

EXPECTED = {
    "vector": "tensor([1.0000, 2.5000])",
    "whole numbers": "tensor([ 1., -2., 30.])",
    "0-d": "tensor(3.)",
    "0-d int": "tensor(-7)",
    "0-d bool": "tensor(True)",
    "0-d tiny": "tensor(1.0000e-10)",
    "0-d negative zero": "tensor(-0.)",
    "empty": "tensor([])",
    "empty 0x3": "tensor([], size=(0, 3))",
    "empty int 2x0x3": "tensor([], size=(2, 0, 3), dtype=int64)",
    "empty bool": "tensor([], dtype=bool)",
    "sci: small": "tensor([1.0000e-05, 1.0000e+00])",
    "sci: ratio over 1000": "tensor([1.0000e+00, 1.0010e+03])",
    "fixed: ratio under 1000": "tensor([  1.0000, 999.5000], dtype=float64)",
    "nan inf whole": "tensor([nan, inf, -inf, 1.])",
    "nan inf fraction": "tensor([   nan, 1.5000,   -inf])",
    "nan inf sci": "tensor([       nan,        inf, 1.0000e-06], dtype=float64)",
    "zeros": "tensor([[0., 0.],\n        [0., 0.]])",
    "negative zero": "tensor([-0., 0., 1.])",
    "ints negative": "tensor([[   -5,    10],\n        [  300, -4000]])",
    "int32": "tensor([1, 2], dtype=int32)",
    "bool": "tensor([[ True, False],\n        [False,  True]])",
    "float16": "tensor([1.0000, 2.5000], dtype=float16)",
    "float16 sci": "tensor([9.9976e-02, 6.5504e+04], dtype=float16)",
    "complex64": "tensor([ 1.0000+2.j, -3.5000+0.j])",
    "complex128 0-d": "tensor(0.+0.0010j, dtype=complex128)",
    "3-d": ("tensor([[[0.0000, 0.1429, 0.2857, 0.4286],\n"
            "         [0.5714, 0.7143, 0.8571, 1.0000],\n"
            "         [1.1429, 1.2857, 1.4286, 1.5714]],\n"
            "\n"
            "        [[1.7143, 1.8571, 2.0000, 2.1429],\n"
            "         [2.2857, 2.4286, 2.5714, 2.7143],\n"
            "         [2.8571, 3.0000, 3.1429, 3.2857]]])"),
    "linspace": ("tensor([-1.0000, -0.9375, -0.8750, -0.8125, -0.7500, -0.6875, -0.6250, -0.5625,\n"
                 "        -0.5000, -0.4375, -0.3750, -0.3125, -0.2500, -0.1875, -0.1250, -0.0625,\n"
                 "         0.0000,  0.0625,  0.1250,  0.1875,  0.2500,  0.3125,  0.3750,  0.4375,\n"
                 "         0.5000,  0.5625,  0.6250,  0.6875,  0.7500,  0.8125,  0.8750,  0.9375,\n"
                 "         1.0000])"),
    "summarised 1-d": "tensor([   0.,    1.,    2.,  ...,  998.,  999., 1000.])",
    "summarised ints 2-d": ("tensor([[   0,    1,    2,  ...,   47,   48,   49],\n"
                            "        [  50,   51,   52,  ...,   97,   98,   99],\n"
                            "        [ 100,  101,  102,  ...,  147,  148,  149],\n"
                            "        ...,\n"
                            "        [1850, 1851, 1852,  ..., 1897, 1898, 1899],\n"
                            "        [1900, 1901, 1902,  ..., 1947, 1948, 1949],\n"
                            "        [1950, 1951, 1952,  ..., 1997, 1998, 1999]])"),
    "summarised 1000x1000": (
        "tensor([[0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 9.9700e+02, 9.9800e+02,\n"
        "         9.9900e+02],\n"
        "        [1.0000e+03, 1.0010e+03, 1.0020e+03,  ..., 1.9970e+03, 1.9980e+03,\n"
        "         1.9990e+03],\n"
        "        [2.0000e+03, 2.0010e+03, 2.0020e+03,  ..., 2.9970e+03, 2.9980e+03,\n"
        "         2.9990e+03],\n"
        "        ...,\n"
        "        [9.9700e+05, 9.9700e+05, 9.9700e+05,  ..., 9.9800e+05, 9.9800e+05,\n"
        "         9.9800e+05],\n"
        "        [9.9800e+05, 9.9800e+05, 9.9800e+05,  ..., 9.9900e+05, 9.9900e+05,\n"
        "         9.9900e+05],\n"
        "        [9.9900e+05, 9.9900e+05, 9.9900e+05,  ..., 1.0000e+06, 1.0000e+06,\n"
        "         1.0000e+06]])"),
}


@pytest.mark.parametrize("name", EXPECTED)
def test_repr_expected(name):
    assert repr(autograd.tensor(ARRAYS[name].copy())) == EXPECTED[name]


def test_str_print_and_format_give_the_repr(capsys):
    t = autograd.tensor([1.0, 2.5])
    assert str(t) == repr(t) == f"{t}" == "tensor([1.0000, 2.5000])"
    print(t)
    assert capsys.readouterr().out == "tensor([1.0000, 2.5000])\n"
    assert f"{autograd.tensor(2.5):.2f}" == "2.50" and f"{autograd.tensor(3)}" == "3"


def test_requires_grad_and_grad_fn_suffixes():
    x = autograd.tensor([1.0, 2.5], requires_grad=True)
    assert repr(x) == "tensor([1.0000, 2.5000], requires_grad=True)"
    assert repr(x * 2) == "tensor([2., 5.], grad_fn=<MulBackward0>)"
    assert repr((x * 2).sum()) == "tensor(7., grad_fn=<SumBackward0>)"
    assert repr(x.double()) == "tensor([1.0000, 2.5000], dtype=float64, grad_fn=<ToCopyBackward0>)"
    assert repr(x.detach()) == "tensor([1.0000, 2.5000])"
    with autograd.no_grad():
        assert repr(x * 2) == "tensor([2., 5.])"


def test_suffixes_wrap_at_the_line_width():
    x = autograd.tensor(np.arange(14) * 1.123, requires_grad=True)
    assert repr(x) == ("tensor([ 0.0000,  1.1230,  2.2460,  3.3690,  4.4920,  5.6150,  6.7380,  7.8610,\n"
                       "         8.9840, 10.1070, 11.2300, 12.3530, 13.4760, 14.5990],\n"
                       "       dtype=float64, requires_grad=True)")
    assert repr(x.reshape(2, 7) * 1) == (
        "tensor([[ 0.0000,  1.1230,  2.2460,  3.3690,  4.4920,  5.6150,  6.7380],\n"
        "        [ 7.8610,  8.9840, 10.1070, 11.2300, 12.3530, 13.4760, 14.5990]],\n"
        "       dtype=float64, grad_fn=<MulBackward0>)")


def test_parameter_repr():
    import nn

    weight = nn.Parameter(autograd.tensor([1.0, 2.0]))
    assert repr(weight) == "Parameter containing:\ntensor([1., 2.], requires_grad=True)"
    frozen = nn.Parameter(autograd.tensor([[0.5]]), requires_grad=False)
    assert repr(frozen) == "Parameter containing:\ntensor([[0.5000]])"


def test_subclass_prints_its_name():
    class Special(autograd.Tensor):
        pass

    assert repr(Special([1.0, 2.0])) == "Special([1., 2.])"


def test_set_printoptions():
    t = autograd.tensor([1.123456, 2.0])
    autograd.set_printoptions(precision=2)
    assert repr(t) == "tensor([1.12, 2.00])"
    autograd.set_printoptions(sci_mode=True)  # precision stays; sci_mode is set by every call
    assert repr(t) == "tensor([1.12e+00, 2.00e+00])"
    autograd.set_printoptions(precision=3)
    assert repr(t) == "tensor([1.123, 2.000])"
    autograd.set_printoptions(threshold=5)
    assert repr(autograd.arange(10)) == "tensor([0, 1, 2,  ..., 7, 8, 9])"
    autograd.set_printoptions(threshold=5, edgeitems=1)
    assert repr(autograd.arange(10)) == "tensor([0,  ..., 9])"
    autograd.set_printoptions(edgeitems=0)
    assert repr(autograd.arange(10).reshape(2, 5)) == "tensor([...], size=(2, 5))"
    autograd.set_printoptions(profile="default")
    assert repr(autograd.arange(10)) == "tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])"
    autograd.set_printoptions(profile="short")
    assert repr(t) == "tensor([1.12, 2.00])"
    autograd.set_printoptions(profile="full")
    assert "..." not in repr(autograd.arange(5000))
    autograd.set_printoptions(profile="default", linewidth=20)
    assert repr(autograd.arange(8)) == "tensor([0, 1, 2, 3,\n        4, 5, 6, 7])"


def test_printoptions_leave_numpy_alone():
    before = np.get_printoptions()
    autograd.set_printoptions(precision=2, threshold=5, edgeitems=1, linewidth=30, sci_mode=True)
    assert np.get_printoptions() == before


def test_printoptions_context_restores():
    from autograd.printing import get_printoptions, printoptions

    before = get_printoptions()
    with printoptions(precision=1):
        assert repr(autograd.tensor([0.25])) == "tensor([0.2])"
    assert get_printoptions() == before and repr(autograd.tensor([0.25])) == "tensor([0.2500])"
