"""autograd/avx_mathfun.py: float32 log, sin and cos as PyTorch's vectorised CPU loops compute them, which its randn
(blocks of 16 float32 values, Box-Muller) reads. Fed the same uniforms, they give torch.randn's numbers to the bit
(NumPy's float32 functions put one value in seven an ulp off)."""

import numpy as np
import pytest

from autograd import avx_mathfun
from autograd.mersenne import _TWO_PI_FLOAT32, TorchStream

# torch.manual_seed(0); torch.randn(32) (PyTorch 2.13, x86-64: its AVX2 loop)
RANDN_SEED_0 = [-1.1258398294448853, -1.152360200881958, -0.2505785822868347, -0.4338788092136383,
                0.8487103581428528, 0.6920091509819031, -0.31601276993751526, -2.1152193546295166,
                0.32227492332458496, -1.2633347511291504, 0.34998318552970886, 0.30813392996788025,
                0.11984150856733322, 1.237657904624939, 1.1167771816253662, -0.2472781538963318,
                -1.3526537418365479, -1.6959311962127686, 0.5666506290435791, 0.7935083508491516,
                0.5988394618034363, -1.5550950765609741, -0.3413603901863098, 1.85300612449646,
                0.750189483165741, -0.5854975581169128, -0.1733967512845993, 0.18347793817520142,
                1.3893661499023438, 1.586334228515625, 0.946298360824585, -0.843676745891571]


def box_muller(seed, count):
    """torch.randn(count) (a multiple of 16) for torch.manual_seed(seed), by PyTorch's blocks of 16: for j < 8,
    √(-2 ln(1 - u_j)) · cos(2π u_(j+8)) at j and the same with sin at j + 8, through avx_mathfun."""
    blocks = TorchStream(seed).units(count, np.float32).astype(np.float32).reshape(-1, 16)
    radius = np.sqrt(np.float32(-2) * avx_mathfun.log(np.float32(1) - blocks[:, :8]))
    sin, cos = avx_mathfun.sincos(_TWO_PI_FLOAT32 * blocks[:, 8:])
    return np.concatenate([radius * cos, radius * sin], axis=1).reshape(-1)


def test_box_muller_through_them_is_pytorchs_randn():
    np.testing.assert_array_equal(box_muller(0, 32), np.array(RANDN_SEED_0, np.float32))


@pytest.mark.parametrize("seed", [1, 7, 2**40 + 3])
def test_box_muller_through_them_is_pytorchs_randn_at_other_seeds(seed):
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    np.testing.assert_array_equal(box_muller(seed, 16 * 4000), torch.randn(16 * 4000).numpy())


def test_they_are_within_a_few_ulps_of_the_exact_values():
    rng = np.random.default_rng(0)
    x = rng.uniform(1e-30, 1.0, 20000).astype(np.float32)
    log = avx_mathfun.log(x)
    assert log.dtype == np.float32
    np.testing.assert_allclose(log, np.log(x.astype(np.float64)), rtol=4e-7, atol=0)
    theta = rng.uniform(0, 2 * np.pi, 20000).astype(np.float32)
    sin, cos = avx_mathfun.sincos(theta)
    np.testing.assert_allclose(sin, np.sin(theta.astype(np.float64)), rtol=0, atol=1.2e-7)
    np.testing.assert_allclose(cos, np.cos(theta.astype(np.float64)), rtol=0, atol=1.2e-7)
    negative = avx_mathfun.sincos(-theta)
    np.testing.assert_array_equal(negative[0], -sin)  # sin is odd, cos even, exactly
    np.testing.assert_array_equal(negative[1], cos)
    assert np.isnan(avx_mathfun.log(np.array([0.0, -1.0], np.float32))).all()  # the header's NaN for x <= 0
    assert avx_mathfun.log(np.array([1.0], np.float32))[0] == 0


def test_randn_is_pytorchs_to_the_bit():
    import autograd

    autograd.manual_seed(0)
    np.testing.assert_array_equal(autograd.randn(32).numpy(), np.array(RANDN_SEED_0, np.float32))
    autograd.manual_seed(3)
    np.testing.assert_array_equal(autograd.randn(4, 400).numpy().ravel(), box_muller(3, 1600))
