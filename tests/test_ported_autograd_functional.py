"""torch.autograd.functional (jacobian, hessian, vjp, jvp, hvp, vhp), ported from the TestAutogradFunctional
part of PyTorch's test/test_autograd.py (now test/autograd/test_functional.py).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import numpy as np
import pytest

from tests.ported import close, raises, same, values


def F(T):
    return T.autograd.functional


def pow_reducer(x):
    return x.pow(3).sum()


def test_vjp_err_check(T):
    def foo(a):
        return 3 * a.narrow(0, 0, 3)

    def bar(a):
        return 3 * a.narrow(0, 0, 3), "bar"

    inp = T.rand(4)
    v = T.ones(3)
    raises(TypeError, "The inputs given to vjp must be either a Tensor", F(T).vjp, foo, (inp, 2), v)
    raises(TypeError, "The outputs of the user-provided function given to vjp must", F(T).vjp, bar, inp, v)
    raises(RuntimeError, "The vector v can only be None if the user-provided function returns", F(T).vjp, foo, inp)
    raises(RuntimeError, "The given v should contain a single Tensor.", F(T).vjp, foo, inp, (T.ones_like(inp),
                                                                                              T.ones_like(inp)))
    raises(RuntimeError, "v has invalid size: should be", F(T).vjp, foo, inp, v[:2])
    res = F(T).vjp(foo, inp, v)[1]
    same(res, [3.0, 3.0, 3.0, 0.0])


def test_vjp_output(T):
    def reducer(x):
        return x.sum(dim=1)

    inputs = T.rand(4, 4, dtype=T.float64)
    v = T.ones(4, dtype=T.float64)
    out, vjp_val = F(T).vjp(reducer, inputs, v)
    close(out, values(inputs).sum(1))
    same(vjp_val, np.ones((4, 4)))
    assert vjp_val.grad_fn is None and out.grad_fn is None

    def adder(x, y):
        return 2 * x + 3 * y

    inputs = (T.rand(2, dtype=T.float64), T.rand(2, dtype=T.float64))
    out, (gx, gy) = F(T).vjp(adder, inputs, T.ones(2, dtype=T.float64))
    same(gx, [2.0, 2.0])
    same(gy, [3.0, 3.0])


def test_vjp_scalar_and_create_graph(T):
    inputs = T.tensor([1.0, 2.0, 3.0], dtype=T.float64)
    out, v = F(T).vjp(pow_reducer, inputs)
    same(out, 36.0)
    same(v, [3.0, 12.0, 27.0])
    inputs = T.tensor([1.0, 2.0, 3.0], dtype=T.float64, requires_grad=True)
    out, v = F(T).vjp(pow_reducer, inputs, create_graph=True)
    assert v.requires_grad
    v.sum().backward()
    same(inputs.grad, [6.0, 12.0, 18.0])


def test_jvp(T):
    def reducer(x):
        return x.sum(dim=1)

    inputs = T.rand(4, 4, dtype=T.float64)
    v = T.ones(4, 4, dtype=T.float64)
    out, jvp_val = F(T).jvp(reducer, inputs, v)
    close(out, values(inputs).sum(1))
    same(jvp_val, np.full(4, 4.0))
    raises(RuntimeError, "The vector v can only be None if the input to the user-provided function is a single "
           "Tensor with a single element", F(T).jvp, reducer, inputs)


def test_jacobian(T):
    def exp_reducer(x):
        return x.exp().sum(dim=1)

    x = T.tensor(np.random.default_rng(0).random((4, 4)))
    jac = F(T).jacobian(exp_reducer, x)
    expected = np.zeros((4, 4, 4))
    for i in range(4):
        expected[i, i] = np.exp(values(x)[i])
    close(jac, expected, rtol=1e-12)
    jac_v = F(T).jacobian(exp_reducer, x, vectorize=True)
    close(jac_v, expected, rtol=1e-12)

    def add_exp_reducer(a, b):
        return (a + b.exp()).sum(dim=1)

    a, b = T.rand(4, 4, dtype=T.float64), T.rand(4, 4, dtype=T.float64)
    ja, jb = F(T).jacobian(add_exp_reducer, (a, b))
    expected_a = np.zeros((4, 4, 4))
    expected_b = np.zeros((4, 4, 4))
    for i in range(4):
        expected_a[i, i] = 1
        expected_b[i, i] = np.exp(values(b)[i])
    same(ja, expected_a)
    close(jb, expected_b, rtol=1e-12)


def test_jacobian_err_check_and_strict(T):
    def foo(a):
        return 3 * a.narrow(0, 0, 3)

    def bar(a):
        return 3 * a.narrow(0, 0, 3), "bar"

    inp = T.rand(4)
    raises(TypeError, "The inputs given to jacobian must be either a Tensor", F(T).jacobian, foo, (inp, 2))
    raises(TypeError, "The outputs of the user-provided function given to jacobian must", F(T).jacobian, bar, inp)

    def unrelated(a):
        return T.ones(3, dtype=a.dtype)

    x = T.rand(2, dtype=T.float64)
    same(F(T).jacobian(unrelated, x), np.zeros((3, 2)))
    raises(RuntimeError, "Output 0 of the user-provided function does not require gradients. The outputs must be "
           "computed in a differentiable manner from the input when running in strict mode.", F(T).jacobian,
           unrelated, x, strict=True)


def test_hessian(T):
    x = T.tensor([1.0, 2.0], dtype=T.float64)
    h = F(T).hessian(pow_reducer, x)
    same(h, np.diag(6 * np.array([1.0, 2.0])))

    def bilinear(a, b):
        return (a * b).sum()

    a, b = T.rand(3, dtype=T.float64), T.rand(3, dtype=T.float64)
    (haa, hab), (hba, hbb) = F(T).hessian(bilinear, (a, b))
    same(haa, np.zeros((3, 3)))
    same(hab, np.eye(3))
    same(hba, np.eye(3))
    same(hbb, np.zeros((3, 3)))
    raises(RuntimeError, "The function given to hessian should return a single Tensor", F(T).hessian,
           lambda x: (x.sum(), x.sum()), x)
    raises(RuntimeError, "The Tensor returned by the function given to hessian should contain a single element",
           F(T).hessian, lambda x: x.pow(3), x)


def test_vhp_hvp(T):
    x = T.tensor([1.0, 2.0, 3.0], dtype=T.float64)
    v = T.tensor([1.0, 0.0, -1.0], dtype=T.float64)
    out, r = F(T).vhp(pow_reducer, x, v)
    same(out, 36.0)
    same(r, 6 * np.array([1.0, 2.0, 3.0]) * np.array([1.0, 0.0, -1.0]))
    out, r = F(T).hvp(pow_reducer, x, v)
    same(r, 6 * np.array([1.0, 2.0, 3.0]) * np.array([1.0, 0.0, -1.0]))
    raises(RuntimeError, "The function given to vhp should return a single Tensor", F(T).vhp,
           lambda x: (x.sum(), x.sum()), x, v)
    raises(RuntimeError, "The Tensor returned by the function given to vhp should contain a single element", F(T).vhp,
           lambda x: x * 2, x, v)
    raises(RuntimeError, "v has invalid size", F(T).vhp, pow_reducer, x, v[:2])


@pytest.mark.parametrize("fn", ["jacobian", "hessian"])
def test_create_graph(T, fn):
    x = T.tensor([0.5, 1.5], dtype=T.float64, requires_grad=True)
    res = getattr(F(T), fn)(pow_reducer, x, create_graph=True)
    assert res.requires_grad and res.grad_fn is not None
    res.sum().backward()
    # jacobian: d/dx sum 3x^2 = 6x; hessian: d/dx sum diag(6x) = 6
    same(x.grad, 6 * np.array([0.5, 1.5]) if fn == "jacobian" else [6.0, 6.0])
    res = getattr(F(T), fn)(pow_reducer, x)
    assert not res.requires_grad
