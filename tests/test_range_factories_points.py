"""arange's, linspace's and logspace's points are PyTorch's to the bit. linspace: start + i·step for the
first half, end - (steps - 1 - i)·step for the second, each a fused multiply-add rounded once in the dtype
(float16's operations each round), integers truncated; logspace: the base raised to those by C's pow;
arange: start + i·step fused in float64, in the blocks of PyTorch's vectorised loop, and for integer
dtypes from the truncated bounds. NumPy's points are an ulp or so away (a SIREN's sin(30 x) magnifies
that), and its integer aranges of fractional bounds differ outright."""

import numpy as np
import pytest

import autograd

# PyTorch 2.13's points (float.hex of each), the same on every CPU it was checked on for these sizes
EXPECTED = {
    (0.001, 1000.0, 15, "float32"): [
        "0x1.0624de0000000p-10", "0x1.1db7d00000000p+6", "0x1.1db74e0000000p+7", "0x1.ac92b20000000p+7",
        "0x1.1db70c0000000p+8", "0x1.6524be0000000p+8", "0x1.ac92700000000p+8", "0x1.f4001e0000000p+8",
        "0x1.1db6e80000000p+9", "0x1.416dc20000000p+9", "0x1.65249c0000000p+9", "0x1.88db740000000p+9",
        "0x1.ac924e0000000p+9", "0x1.d049260000000p+9", "0x1.f400000000000p+9"],
    (-1, 1, 6, "float32"): ["-0x1.0000000000000p+0", "-0x1.3333340000000p-1", "-0x1.9999980000000p-3",
                            "0x1.9999980000000p-3", "0x1.3333340000000p-1", "0x1.0000000000000p+0"],
    (-3.3, 5, 7, "float64"): ["-0x1.a666666666666p+1", "-0x1.eaaaaaaaaaaa9p+0", "-0x1.111111111110cp-1",
                              "0x1.b33333333332ep-1", "0x1.1ddddddddddddp+1", "0x1.ceeeeeeeeeeeep+1",
                              "0x1.4000000000000p+2"],
    (0.1, 2.7, 11, "float64"): ["0x1.999999999999ap-4", "0x1.70a3d70a3d70ap-2", "0x1.3d70a3d70a3d7p-1",
                                "0x1.c28f5c28f5c29p-1", "0x1.23d70a3d70a3ep+0", "0x1.6666666666667p+0",
                                "0x1.a8f5c28f5c290p+0", "0x1.eb851eb851eb9p+0", "0x1.170a3d70a3d71p+1",
                                "0x1.3851eb851eb86p+1", "0x1.599999999999ap+1"],
}


@pytest.mark.parametrize("case", sorted(EXPECTED, key=str))
def test_points_are_pytorchs_to_the_bit(case):
    start, end, steps, dtype = case
    points = autograd.linspace(start, end, steps, dtype=getattr(autograd, dtype))
    assert points.dtype == np.dtype(dtype)
    assert [float(v).hex() for v in points.numpy().astype(np.float64)] == EXPECTED[case]


def test_integer_points_truncate_the_fused_values():
    # end - 7·step = -3 + 4·(1 - ε): 0 after truncation (computed unfused, 1)
    assert autograd.linspace(5, -3.3, 15, dtype=autograd.int64).tolist() == [5, 4, 3, 3, 2, 2, 1, 0, 0, 0, 0, -1,
                                                                                -1, -2, -3]


def test_edges():
    assert autograd.linspace(0, 1, 0).shape == (0,) and autograd.linspace(3, 7, 1).tolist() == [3.0]
    assert autograd.linspace(0, 1, 5).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert autograd.linspace(0, 1, 5).dtype == autograd.float32
    assert autograd.linspace(2.7, 2.7, 4, dtype=autograd.float64).tolist() == [2.7] * 4


def test_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    pairs = [(-1, 1), (0, 1), (0.1, 2.7), (5, -3.3), (1e-3, 1e3)] + [tuple(rng.uniform(-50, 50, 2)) for _ in range(4)]
    for steps in list(range(0, 40)) + [100, 1000]:
        for start, end in pairs:
            for dtype in ("float32", "float64", "float16", "int64", "int32"):
                theirs = torch.linspace(start, end, steps, dtype=getattr(torch, dtype)).numpy()
                ours = autograd.linspace(start, end, steps, dtype=getattr(autograd, dtype)).numpy()
                assert ours.dtype == theirs.dtype
                np.testing.assert_array_equal(ours, theirs, err_msg=f"linspace({start}, {end}, {steps}, {dtype})")


def test_logspace_is_pytorchs_to_the_bit():
    points = autograd.logspace(-3.3, 5, 4, base=2.718281828, dtype=autograd.float64)
    assert [v.hex() for v in points.tolist()] == ["0x1.2e259bbb2f194p-5", "0x1.2c5ce4aeb069dp-1",
                                                  "0x1.2a96dffd11c5dp+3", "0x1.28d38992cec60p+7"]
    assert autograd.logspace(-3.3, 5, 1, base=0.5, dtype=autograd.int64).tolist() == [9]  # 0.5 ** -3.3, truncated
    assert autograd.logspace(0, -2, 3, base=0.0).tolist() == [1.0, float("inf"), float("inf")]
    values = autograd.logspace(0, 1, 3, base=-2.0).tolist()
    assert values[0] == 1.0 and values[1] != values[1] and values[2] == -2.0  # NaN for a fractional power


def test_logspace_against_torch():
    torch = pytest.importorskip("torch")
    for steps in list(range(0, 34)) + [100]:
        for start, end in ((-1, 1), (0.1, 2.7), (5, -3.3), (-2, 3)):
            for base in (10.0, 2.0, 2.718281828, 0.5):
                for dtype in ("float32", "float64", "float16", "int64"):
                    theirs = torch.logspace(start, end, steps, base=base, dtype=getattr(torch, dtype)).numpy()
                    ours = autograd.logspace(start, end, steps, base=base, dtype=getattr(autograd, dtype)).numpy()
                    np.testing.assert_array_equal(ours, theirs, err_msg=f"logspace({start}, {end}, {steps}, {base})")


def test_arange_is_pytorchs_to_the_bit():
    tenth = ["0x0.0p+0", "0x1.99999a0000000p-4", "0x1.99999a0000000p-3", "0x1.3333340000000p-2",
             "0x1.99999a0000000p-2", "0x1.0000000000000p-1", "0x1.3333340000000p-1", "0x1.6666660000000p-1",
             "0x1.99999a0000000p-1", "0x1.cccccc0000000p-1"]
    assert [v.hex() for v in autograd.arange(0, 1, 0.1).numpy().astype(np.float64).tolist()] == tenth
    points = autograd.arange(-2.3, 7.1, 0.37, dtype=autograd.float64)
    assert points.shape == (26,)
    assert [v.hex() for v in points.tolist()[-3:]] == ["0x1.8d70a3d70a3d7p+2", "0x1.a51eb851eb852p+2",
                                                      "0x1.bcccccccccccdp+2"]
    # points 16-17 come from the second vector of PyTorch's vectorised loop (its base point plus j·step)
    assert [v.hex() for v in autograd.arange(0.1, 9.0, 0.3).numpy().astype(np.float64).tolist()[14:18]] == [
        "0x1.1333340000000p+2", "0x1.2666660000000p+2", "0x1.39999a0000000p+2", "0x1.4ccccc0000000p+2"]


def test_integer_arange_of_fractional_bounds():
    # int64: bounds and step truncated first (3, 198, 2); other integer dtypes count from the bounds as given
    assert autograd.arange(3.77, 198.77, 2.5, dtype=autograd.int64)[:3].tolist() == [3, 5, 7]
    assert len(autograd.arange(3.77, 198.77, 2.5, dtype=autograd.int64)) == 98
    assert len(autograd.arange(3.77, 198.77, 2.5, dtype=autograd.int32)) == 78
    assert autograd.arange(10.5, 0, -3.5, dtype=autograd.int64).tolist() == [10, 7, 4, 1]
    assert autograd.arange(5).tolist() == [0, 1, 2, 3, 4] and autograd.arange(5).dtype == autograd.int64


def test_arange_against_torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)  # (PyTorch splits past 32768 points among its threads, each starting vectors anew)
    rng = np.random.default_rng(0)
    for _ in range(60):
        start = float(rng.uniform(-10, 10))
        step = float(rng.choice([0.1, 0.3, 1 / 3, 0.7, 2.5, -0.1, -0.37, 1e-3, 3.0]))
        end = start + step * float(rng.uniform(0, 700))
        for dtype in ("float32", "float64", "float16") + (("int64",) if abs(step) >= 1 else ()):
            theirs = torch.arange(start, end, step, dtype=getattr(torch, dtype)).numpy()
            ours = autograd.arange(start, end, step, dtype=getattr(autograd, dtype)).numpy()
            assert ours.dtype == theirs.dtype
            np.testing.assert_array_equal(ours, theirs, err_msg=f"arange({start}, {end}, {step}, {dtype})")
