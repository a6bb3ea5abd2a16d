"""The examples in PyTorch's own docstrings (``>>>`` blocks of torch/_torch_docs.py, _tensor_docs.py, functional.py,
nn/functional.py, nn/modules, linalg and special), run on chainrule, as tests/docexamples_common.py says: each a
program over the modules whose result must equal the literal expected in tests/docexamples_expected.py and, where
PyTorch is installed, PyTorch's result. Creation (fixed: from_file, hash_tensor, which has no gradient and refuses
what PyTorch refuses), pointwise maths and special functions."""

import math
import os

import numpy as np
import pytest

import autograd

from .docexamples_common import AREAS, check, example

# ----------------------------------------------------------------------------------------------
# creation (fixed: from_file, hash_tensor)
# ----------------------------------------------------------------------------------------------


@example("creation")
def from_file_reads_raw_bytes(m):
    torch = m.torch
    path = os.path.join(os.environ.get("DOCEXAMPLES_DIR", "."), f"storage-{torch.__name__}.pt")
    t = torch.tensor([[0.5, -1.25, 2.0, 3.5, 0.0], [1.0, 2.0, 4.0, 8.0, -16.0]], dtype=torch.float64)
    t.numpy().tofile(path)
    t_mapped = torch.from_file(path, shared=False, size=10, dtype=torch.float64)
    t_mapped[1] = 7.0  # a private copy: the file keeps -1.25
    # (cloned before the shared write below: PyTorch's private copy is a copy-on-write mapping of the file,
    # whose untouched pages show later writes to the file; chainrule reads the bytes at once)
    halves = torch.from_file(path, size=4, dtype=torch.float32).clone()
    try:
        torch.from_file(path, size=11, dtype=torch.float64)
        refused = False
    except RuntimeError as error:
        refused = "is smaller than the required mapping size <88>" in str(error)
    del t_mapped
    shared = torch.from_file(path, shared=True, size=12, dtype=torch.float64)  # the file, grown to 12 elements
    shared[0] = 42.0
    shared.add_(1.0)
    del shared
    written = np.fromfile(path, dtype=np.float64).tolist()
    os.remove(path)
    return halves, written, refused


@example("creation")
def hash_tensor(m):
    torch = m.torch
    a = torch.tensor([[1.1918, -1.1813, 0.3373]])
    b = torch.tensor([[0.1317, -0.5554, -1.4724, -1.1391], [0.0778, -0.6070, 0.6375, 0.1798]])
    return (torch.hash_tensor(a), torch.hash_tensor(b, 1), torch.hash_tensor(b, 0, keepdim=True),
            torch.hash_tensor(torch.tensor([1, -2, 3])), torch.hash_tensor(torch.tensor([True, False, True])))


@example("creation")
def tensor_split(m):
    torch = m.torch
    x7 = torch.arange(7)
    x = torch.arange(14).reshape(2, 7)
    return (torch.tensor_split(torch.arange(8), 3), torch.tensor_split(x7, 3), torch.tensor_split(x7, (1, 6)),
            torch.tensor_split(x, 3, dim=1), torch.tensor_split(x, (1, 6), dim=1))


@example("creation")
def linspace_logspace_range(m):
    torch = m.torch
    return (torch.linspace(3, 10, steps=5), torch.linspace(start=-10, end=10, steps=1),
            torch.logspace(start=-10, end=10, steps=5), torch.logspace(start=0.1, end=1.0, steps=5),
            torch.logspace(start=2, end=2, steps=1, base=2), torch.arange(1, 2.5, 0.5), torch.full((2, 3), 3.141592))


@example("creation")
def tril_triu_indices(m):
    torch = m.torch
    return (torch.tril_indices(3, 3), torch.tril_indices(4, 3, -1), torch.tril_indices(4, 3, 1),
            torch.triu_indices(4, 3, -1))


@example("creation")
def combinations_and_cartesian_prod(m):
    torch = m.torch
    a = torch.tensor([1, 2, 3])
    return (torch.combinations(a), torch.combinations(a, r=3), torch.combinations(a, with_replacement=True),
            torch.cartesian_prod(a, torch.tensor([4, 5])))


@example("creation")
def stacks(m):
    torch = m.torch
    a, b = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    return (torch.hstack((a, b)), torch.vstack((a, b)), torch.dstack((a, b)), torch.column_stack((a, b)),
            torch.atleast_2d(torch.tensor(1.)), torch.atleast_3d(a).shape)


# ----------------------------------------------------------------------------------------------
# pointwise maths
# ----------------------------------------------------------------------------------------------


@example("pointwise")
def frexp_ldexp(m):
    torch = m.torch
    mantissa, exponent = torch.frexp(torch.arange(9.))
    return (mantissa, exponent, torch.ldexp(mantissa, exponent),
            torch.ldexp(torch.tensor([1., 1.]), torch.tensor([1, 2])))


@example("pointwise")
def fmod_remainder_floor_divide(m):
    torch = m.torch
    return (torch.fmod(torch.tensor([-3., -2, -1, 1, 2, 3]), 2), torch.fmod(torch.tensor([1, 2, 3, 4, 5]), -1.5),
            torch.remainder(torch.tensor([-3., -2, -1, 1, 2, 3]), 2),
            torch.remainder(torch.tensor([1, 2, 3, 4, 5]), -1.5),
            torch.floor_divide(torch.tensor([4.0, 3.0]), torch.tensor([2.0, 2.0])),
            torch.div(torch.tensor([-7, 7]), 2, rounding_mode="floor"))


@example("pointwise")
def bitwise(m):
    torch = m.torch
    a, b = torch.tensor([-1, -2, 3], dtype=torch.int8), torch.tensor([1, 0, 3], dtype=torch.int8)
    return (torch.bitwise_not(a), torch.bitwise_and(a, b), torch.bitwise_or(a, b), torch.bitwise_xor(a, b),
            torch.bitwise_left_shift(a, b), torch.bitwise_right_shift(a, b),
            torch.bitwise_xor(torch.tensor([True, True, False]), torch.tensor([False, True, False])))


@example("pointwise")
def gcd_lcm_hypot_logaddexp(m):
    torch = m.torch
    a = torch.tensor([5, 10, 15])
    return (torch.gcd(a, torch.tensor([3, 4, 5])), torch.lcm(a, torch.tensor([3, 4, 5])),
            torch.hypot(torch.tensor([4.0]), torch.tensor([3.0, 4.0, 5.0])),
            torch.logaddexp(torch.tensor([-1.0]), torch.tensor([-1.0, -2, -3])),
            torch.logaddexp(torch.tensor([-100.0, -200, -300]), torch.tensor([-1.0, -2, -3])))


@example("pointwise")
def heaviside_sign_signbit(m):
    torch = m.torch
    x = torch.tensor([-1.5, 0, 2.0])
    a = torch.tensor([0.7, -1.2, 0., 2.3])
    return (torch.heaviside(x, torch.tensor([0.5])), torch.heaviside(x, torch.tensor([1.2, -2.0, 3.5])),
            torch.sign(a), torch.signbit(torch.tensor([-0.0, 0.0, -1.5])), torch.sgn(torch.tensor([3 + 4j, -2j])))


@example("pointwise")
def nan_to_num_and_friends(m):
    torch = m.torch
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 3.14])
    return (torch.nan_to_num(x), torch.nan_to_num(x, nan=2.0), torch.nan_to_num(x, nan=2.0, posinf=1.0),
            torch.isinf(x), torch.isposinf(x), torch.isneginf(x), torch.isfinite(x), torch.isnan(x),
            torch.nansum(torch.tensor([1., float("nan")])))


@example("pointwise")
def complex_numbers(m):
    torch = m.torch
    real, imag = torch.tensor([1, 2], dtype=torch.float32), torch.tensor([3, 4], dtype=torch.float32)
    abs_, angle = torch.tensor([1, 2], dtype=torch.float64), torch.tensor([np.pi / 2, 5 * np.pi / 4],
                                                                          dtype=torch.float64)
    return (torch.complex(real, imag), torch.polar(abs_, angle),
            torch.angle(torch.tensor([-1 + 1j, -2 + 2j, 3 - 3j])) * 180 / 3.14159,
            torch.vdot(torch.tensor([2 + 3j, 3 + 4j]), torch.tensor([1 + 2j, 2 + 3j])),
            torch.isreal(torch.tensor([1, 1 + 1j, 2 + 0j])))


@example("pointwise")
def rounding_and_degrees(m):
    torch = m.torch
    return (torch.round(torch.tensor((4.7, -2.3, 9.1, -7.7))), torch.round(torch.tensor([-0.5, 0.5, 1.5, 2.5])),
            torch.round(torch.tensor([0.1234567]), decimals=3), torch.round(torch.tensor([1200.1234567]), decimals=-3),
            torch.frac(torch.tensor([1, 2.5, -3.2])), torch.rad2deg(torch.tensor([[3.142, -3.142], [6.283, -6.283]])),
            torch.deg2rad(torch.tensor([[180.0, -180.0], [360.0, -360.0], [90.0, -90.0]])))


@example("pointwise")
def comparisons(m):
    torch = m.torch
    a, b = torch.tensor([[1, 2], [3, 4]]), torch.tensor([[1, 1], [4, 4]])
    return (torch.eq(a, b), torch.ge(a, b), torch.gt(a, b), torch.le(a, b), torch.lt(a, b), torch.ne(a, b),
            torch.equal(torch.tensor([1, 2]), torch.tensor([1, 2])),
            torch.maximum(torch.tensor((1, 2, -1)), torch.tensor((3, 0, 4))),
            torch.fmax(torch.tensor([9.7, float("nan"), 3.1, float("nan")]),
                       torch.tensor([-2.2, 0.5, float("nan"), float("nan")])))


@example("pointwise")
def isin_and_nextafter(m):
    torch = m.torch
    eps = torch.finfo(torch.float32).eps
    return (torch.isin(torch.tensor([[1, 2], [3, 4]]), torch.tensor([2, 3])),
            torch.nextafter(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0])) == torch.tensor([eps + 1, 2 - eps]))


@example("pointwise")
def type_promotion(m):
    torch = m.torch
    return (torch.promote_types(torch.int32, torch.float32), torch.promote_types(torch.uint8, torch.long),
            torch.result_type(torch.tensor([1, 2], dtype=torch.int), 1.0),
            torch.result_type(torch.tensor([1, 2], dtype=torch.uint8), torch.tensor(1)),
            torch.can_cast(torch.double, torch.float), torch.can_cast(torch.float, torch.int))


# ----------------------------------------------------------------------------------------------
# special functions
# ----------------------------------------------------------------------------------------------


@example("special")
def polygamma_digamma_lgamma(m):
    torch = m.torch
    a = torch.tensor([1, 0.5])
    return (torch.special.polygamma(1, a), torch.special.polygamma(2, a), torch.special.polygamma(4, a),
            torch.special.digamma(torch.tensor([1, 0.5])), torch.lgamma(torch.arange(0.5, 2, 0.5)),
            torch.special.gammaln(torch.arange(0.5, 2, 0.5)))


@example("special")
def error_functions(m):
    torch = m.torch
    return (torch.special.erf(torch.tensor([0, -1., 10.])), torch.special.erfc(torch.tensor([0, -1., 10.])),
            torch.special.erfcx(torch.tensor([0, -1., 10.])), torch.special.erfinv(torch.tensor([0, 0.5, -1.])),
            torch.special.ndtr(torch.tensor([-3., -2, -1, 0, 1, 2, 3])),
            torch.special.ndtri(torch.tensor([0, 0.25, 0.5, 0.75, 1])),
            torch.special.log_ndtr(torch.tensor([-3., -2, -1, 0, 1, 2, 3])))


@example("special")
def bessel_zeta_gammainc(m):
    torch = m.torch
    x = torch.tensor([2., 4.])
    a1, a2 = torch.tensor([4.0]), torch.tensor([3.0, 4.0, 5.0])
    return (torch.i0(torch.arange(5, dtype=torch.float32)), torch.special.i0e(torch.arange(5, dtype=torch.float32)),
            torch.special.i1(torch.arange(5, dtype=torch.float32)),
            torch.special.i1e(torch.arange(5, dtype=torch.float32)),
            torch.special.zeta(x, 1), torch.special.zeta(x, torch.tensor([1., 2.])),
            torch.special.gammaincc(a1, a2), torch.special.gammainc(a1, a2) + torch.special.gammaincc(a1, a2))


@example("special")
def xlogy_entr_softmax(m):
    torch = m.torch
    x = torch.zeros(5,)
    y = torch.tensor([-1, 0, 1, float("inf"), float("nan")])
    t = torch.ones(2, 2)
    return (torch.special.xlogy(x, y), torch.special.xlogy(torch.tensor([1, 2, 3]), torch.tensor([3, 2, 1])),
            torch.special.xlog1py(torch.tensor([1, 2, 3]), torch.tensor([3, 2, 1])),
            torch.special.entr(torch.arange(-0.5, 1, 0.5)), torch.special.softmax(t, 0),
            torch.special.log_softmax(t, 0), torch.special.expm1(torch.tensor([0, math.log(2.)])),
            torch.special.exp2(torch.tensor([0, math.log2(2.), 3, 4])))


@pytest.fixture(autouse=True)
def _scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCEXAMPLES_DIR", str(tmp_path))


@pytest.mark.parametrize("name", list(AREAS["creation"]))
def test_creation(name):
    check("creation", name)


@pytest.mark.parametrize("name", list(AREAS["pointwise"]))
def test_pointwise(name):
    check("pointwise", name)


@pytest.mark.parametrize("name", list(AREAS["special"]))
def test_special(name):
    check("special", name, rtol=1e-5, atol=1e-6)


def test_hash_tensor_has_no_gradient_and_refuses_what_pytorch_refuses():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    assert not x.hash_tensor().requires_grad
    with pytest.raises(RuntimeError, match="Unknown hash_tensor mode: 1"):
        autograd.hash_tensor(x, mode=1)
    with pytest.raises(RuntimeError, match="Expected reduction dim to be specified"):
        autograd.hash_tensor(autograd.zeros(0))
    with pytest.raises(IndexError, match="Expected reduction dim 0 to have non-zero size"):
        autograd.hash_tensor(autograd.zeros(0, 3), 0)
    with pytest.raises(NotImplementedError, match="xor_sum_cpu"):
        autograd.hash_tensor(autograd.tensor([1 + 2j]))
