"""autograd.cond and autograd.while_loop: PyTorch's control-flow operators, eager: the branch taken
(the iterations made) computes the value and the gradient; what PyTorch refuses is refused."""

import numpy as np
import pytest

import autograd
from autograd import cond, gradcheck, while_loop


def f64(values, requires_grad=True):
    return autograd.tensor(np.asarray(values, dtype=np.float64), requires_grad=requires_grad)


def test_cond_takes_the_branch_and_its_gradient():
    x = f64([0.3, -1.2, 2.0])
    for pred, expected, derivative in ((True, np.cos, lambda v: -np.sin(v)), (False, np.sin, np.cos)):
        x.grad = None
        out = cond(autograd.tensor(pred), lambda a: a.cos(), lambda a: a.sin(), (x,))
        np.testing.assert_allclose(out.numpy(), expected(x.numpy()))
        out.sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), derivative(x.numpy()))


def test_cond_gradcheck_on_both_branches():
    def f(a, b):
        return cond(a.sum() > 0, lambda u, v: (u * v).exp(), lambda u, v: u / (1 + v * v), [a, b])

    b = f64([0.4, -0.7])
    assert gradcheck(f, (f64([0.5, 0.25]), b))
    assert gradcheck(f, (f64([-0.5, 0.25]), b))


def test_cond_structures_and_python_predicates():
    x = f64([1.0, 2.0], requires_grad=False)
    out = cond(autograd.tensor([[1.0]]), lambda d: {"double": d["x"] * 2, "pair": (d["x"] + 1,)},
               lambda d: {"double": d["x"], "pair": (d["x"],)}, ({"x": x},))
    np.testing.assert_array_equal(out["double"].numpy(), [2.0, 4.0])
    np.testing.assert_array_equal(out["pair"][0].numpy(), [2.0, 3.0])
    assert cond(0, lambda: 1, lambda: 2) == 2  # a Python predicate just picks the branch (PyTorch's eager case)
    assert cond(2.5, lambda v: v, lambda v: None, (x,)) is x
    np.testing.assert_array_equal(cond(autograd.tensor(False), lambda: autograd.ones(2), lambda: autograd.zeros(2))
                                  .numpy(), [0.0, 0.0])


def test_cond_refuses_what_pytorch_refuses():
    x = f64([1.0, 2.0], requires_grad=False)
    t = autograd.tensor(True)
    with pytest.raises(RuntimeError, match="Expected pred to be bool or tensor, but got a."):
        cond("a", abs, abs, (x,))
    with pytest.raises(RuntimeError, match="Expected pred to be bool or single-element tensor"):
        cond(autograd.tensor([True, False]), abs, abs, (x,))
    with pytest.raises(RuntimeError, match="Expect both branches to be callable."):
        cond(t, abs, 3, (x,))
    with pytest.raises(RuntimeError, match="only consists of tensor leaves"):
        cond(t, abs, abs, x)
    with pytest.raises(RuntimeError, match="only consists of tensor leaves"):
        cond(t, abs, abs, (x, 1))
    with pytest.raises(RuntimeError, match="aliasing"):
        cond(t, lambda a: a, lambda a: a + 1, (x,))
    with pytest.raises(RuntimeError, match="aliasing"):
        cond(t, lambda a: a[:1], lambda a: a + 1, (x,))
    with pytest.raises(RuntimeError, match="input mutation"):
        cond(t, lambda a: a.add_(1) * 2, lambda a: a + 1, (x,))
    with pytest.raises(RuntimeError, match="tensors or ints/bools only but got <class 'float'>"):
        cond(t, lambda a: a.sum().item(), lambda a: 1.0, (x,))


def test_while_loop_runs_the_body_and_differentiates_through_every_iteration():
    x = f64([1.5, 2.0])
    i, y = while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * v), (autograd.tensor(0), x))
    assert i.item() == 3
    np.testing.assert_allclose(y.numpy(), x.numpy() ** 8)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 8 * x.numpy() ** 7)


def test_while_loop_gradcheck():
    def f(v, w):
        return while_loop(lambda k, a: k < 4, lambda k, a: (k + 1, (a * w).tanh() + a), (0, v))[1]

    assert gradcheck(f, (f64([0.3, -0.2, 0.9]), f64([0.5, 1.5, -0.8])))


def test_while_loop_zero_iterations_gives_a_tuple_of_clones():
    x = f64([1.0, 2.0])
    out = while_loop(lambda i, v: i > 3, lambda i, v: (i + 1, v * 2), [autograd.tensor(0), x])
    assert isinstance(out, tuple) and out[1] is not x
    np.testing.assert_array_equal(out[1].numpy(), [1.0, 2.0])
    out[1].sum().backward()  # the clone is differentiable
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])


def test_while_loop_nested_structures_and_python_ints():
    out = while_loop(lambda d: d["i"] < 3, lambda d: ({"i": d["i"] + 1, "s": d["s"] * 2},),
                     ({"i": autograd.tensor(0), "s": autograd.ones(2)},))
    assert out[0]["i"].item() == 3
    np.testing.assert_array_equal(out[0]["s"].numpy(), [8.0, 8.0])
    assert while_loop(lambda k: k < 5, lambda k: (k + 2,), (0,)) == (6,)
    assert while_loop(lambda k: k < 5, lambda k: [k + 2], [0]) == [6]  # the body's own sequence type


def test_while_loop_refuses_what_pytorch_refuses():
    x = f64([1.0, 2.0], requires_grad=False)
    i0 = autograd.tensor(0)
    with pytest.raises(RuntimeError, match="Expect cond_fn and body_fn to be callable."):
        while_loop(None, abs, (x,))
    with pytest.raises(RuntimeError, match="carried_inputs must be a tuple or list"):
        while_loop(lambda v: False, lambda v: (v,), x)
    with pytest.raises(RuntimeError, match="tensor or int leaves, but got"):
        while_loop(lambda v, f: False, lambda v, f: (v, f), (x, 0.5))
    with pytest.raises(RuntimeError, match="boolean scalar tensor or a boolean but got"):
        while_loop(lambda i, v: (i < 3).int(), lambda i, v: (i + 1, v), (i0, x))
    with pytest.raises(RuntimeError, match="boolean scalar tensor or a boolean but got"):
        while_loop(lambda i, v: autograd.tensor([True]), lambda i, v: (i + 1, v), (i0, x))
    with pytest.raises(RuntimeError, match="same number of outputs"):
        while_loop(lambda i, v: i < 3, lambda i, v: (i + 1,), (i0, x))
    with pytest.raises(RuntimeError, match="differ in 'shape"):
        while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, autograd.cat([v, v])), (i0, x))
    with pytest.raises(RuntimeError, match="differ in 'dtype: float32 vs float64'"):
        while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v.float()), (i0, x))
    with pytest.raises(RuntimeError, match="body_fn should return a tuple"):
        while_loop(lambda i, v: i < 3, lambda i, v: v * 2, (i0, x))
    with pytest.raises(RuntimeError, match="aliasing"):
        while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v), (i0, x))
    with pytest.raises(RuntimeError, match="input mutation"):
        while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v.mul_(2) + 0), (i0, x))


@pytest.fixture
def torch_restored():
    """torch, with what its compiler (which torch.cond and torch.while_loop run) turns off globally
    put back after the test: the distributions' argument validation."""
    torch = pytest.importorskip("torch")
    validate = torch.distributions.Distribution._validate_args
    yield torch
    torch.distributions.Distribution.set_default_validate_args(validate)


@pytest.mark.torch
def test_against_torch(torch_restored):
    torch = torch_restored
    values = np.array([0.3, -1.2, 2.0])
    xt = torch.tensor(values, requires_grad=True)
    x = f64(values)
    outs = [torch.cond(xt.sum() > 0, lambda a: a.cos() * a, lambda a: a.sin(), (xt,)),
            cond(x.sum() > 0, lambda a: a.cos() * a, lambda a: a.sin(), (x,))]
    np.testing.assert_allclose(outs[1].numpy(), outs[0].detach().numpy())
    outs[0].sum().backward()
    outs[1].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy())

    theirs = torch.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * v.sin()), (torch.tensor(0), xt))
    ours = while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * v.sin()), (autograd.tensor(0), x))
    assert type(ours) is type(theirs) and ours[0].item() == theirs[0].item()
    np.testing.assert_allclose(ours[1].detach().numpy(), theirs[1].detach().numpy())
    xt.grad, x.grad = None, None
    theirs[1].sum().backward()
    ours[1].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy())

    for bad in (lambda c: c("a", abs, abs, ()), lambda c: c(None, abs, abs, [])):
        with pytest.raises(RuntimeError) as theirs_error:
            bad(torch.cond)
        with pytest.raises(RuntimeError) as ours_error:
            bad(cond)
        assert str(ours_error.value) == str(theirs_error.value)
