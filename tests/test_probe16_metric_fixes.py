"""Focused tests for what the metric-learning programs (test_programs_probe16_metric_*.py) found: the addmm family's
PyTorch 1 overloads with beta and alpha first, which PyTorch still reads with a warning (re-ID code of that time
computes squared distances by ``dist.addmm_(1, -2, x, y.t())``)."""

import warnings

import numpy as np
import pytest


def squared_distances_old_style(T, x, y):
    """open-reid's / the re-ID baselines' euclidean_dist, as written for PyTorch 1."""
    m, n = x.size(0), y.size(0)
    xx = T.pow(x, 2).sum(1, keepdim=True).expand(m, n)
    yy = T.pow(y, 2).sum(1, keepdim=True).expand(n, m).t()
    dist = xx + yy
    dist.addmm_(1, -2, x, y.t())
    return dist.clamp(min=1e-12).sqrt()


def test_addmm_in_place_with_beta_and_alpha_first_gives_distances_and_gradients(T, rng, warn_always):
    x_np, y_np = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    x = T.tensor(x_np, requires_grad=True)
    with pytest.warns(UserWarning, match="addmm_? is deprecated"):
        dist = squared_distances_old_style(T, x, T.tensor(y_np))
    expected = np.sqrt(((x_np[:, None] - y_np[None]) ** 2).sum(-1))
    np.testing.assert_allclose(dist.detach().numpy(), expected, rtol=1e-12)
    dist.sum().backward()
    by_hand = ((x_np[:, None] - y_np[None]) / expected[..., None]).sum(1)
    np.testing.assert_allclose(x.grad.numpy(), by_hand, rtol=1e-10)


@pytest.mark.parametrize("name, shapes", [
    ("addmm", ((2, 4), (2, 3), (3, 4))),
    ("addmv", ((2,), (2, 3), (3,))),
    ("addbmm", ((2, 4), (5, 2, 3), (5, 3, 4))),
    ("baddbmm", ((5, 2, 4), (5, 2, 3), (5, 3, 4))),
    ("addr", ((2, 3), (2,), (3,))),
])
def test_every_form_with_the_scales_first_is_the_keyword_form(T, rng, name, shapes, warn_always):
    input, a, b = (T.tensor(rng.standard_normal(shape)) for shape in shapes)
    both = getattr(T, name)(input, a, b, beta=0.5, alpha=-2)
    beta_only = getattr(T, name)(input, a, b, beta=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        forms = {
            "function(beta, input, alpha, a, b)": (getattr(T, name)(0.5, input, -2, a, b), both),
            "function(beta, input, a, b)": (getattr(T, name)(0.5, input, a, b), beta_only),
            "method(beta, alpha, a, b)": (getattr(input, name)(0.5, -2, a, b), both),
            "method(beta, a, b)": (getattr(input, name)(0.5, a, b), beta_only),
            "in place(beta, alpha, a, b)": (getattr(input.clone(), name + "_")(0.5, -2, a, b), both),
        }
    for form, (got, expected) in forms.items():
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-12, err_msg=form)
    assert len(caught) == 5 and all("deprecated" in str(w.message) for w in caught)
    if T.__name__ == "autograd":  # (at the program's line, whichever wrappers the call went through)
        assert {w.filename for w in caught} == {__file__}


def test_scales_first_refuses_a_tensor_where_a_number_belongs(T):
    ones = T.ones(2, 2)
    with pytest.raises(TypeError):
        ones.addmm(ones, ones, ones, ones)


def test_addcmul_addcdiv_and_sub_in_place_with_the_number_first(T, warn_always):
    """PyTorch 1's addcmul(input, value, t1, t2) / addcdiv(...) (function and method, out of place) and
    sub_(alpha, other), as custom optimisers of that time call them: read with a warning, as PyTorch reads them."""
    x, t1, t2 = T.tensor([1.0, 2.0]), T.tensor([3.0, 4.0], requires_grad=True), T.tensor([2.0, 8.0])
    with pytest.warns(UserWarning, match="deprecated"):
        forms = [T.addcmul(x, 0.5, t1, t2), x.addcmul(0.5, t1, t2), T.addcdiv(x, -1, t1, t2), x.addcdiv(-1, t1, t2),
                 x.clone().sub_(2, t2)]
    np.testing.assert_allclose(forms[0].detach().numpy(), [4.0, 18.0])
    np.testing.assert_allclose(forms[1].detach().numpy(), [4.0, 18.0])
    np.testing.assert_allclose(forms[2].detach().numpy(), [-0.5, 1.5])
    np.testing.assert_allclose(forms[3].detach().numpy(), [-0.5, 1.5])
    np.testing.assert_allclose(forms[4].numpy(), [-3.0, -14.0])
    (forms[0] + forms[2]).sum().backward()
    np.testing.assert_allclose(t1.grad.numpy(), [0.5 * 2.0 - 1 / 2.0, 0.5 * 8.0 - 1 / 8.0])


def test_the_number_first_warnings_name_the_programs_line():
    """(chainrule's: its wrappers differ between the function, the method and the in-place method)"""
    import autograd

    x = autograd.ones(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x.clone().add_(2, x)
        autograd.add(x, 2, x)
        x.addcmul(0.5, x, x)
        x.clone().addcdiv_(0.5, x, x)
        autograd.ones(2, 2).addmm_(1, -2, autograd.ones(2, 2), autograd.ones(2, 2))
    assert len(caught) == 5 and {w.filename for w in caught} == {__file__}


@pytest.mark.parametrize("p", [1, 2, 3])
def test_float16_distances_take_the_norm_in_float32_rounded_once(T, rng, p):
    """F.normalize, F.cosine_similarity and F.pairwise_distance of float16 vectors: their norm is PyTorch's norm
    kernel's, accumulated in float32 and rounded once (the squares, or the sum, rounded to float16 first put a
    tenth of the values a unit or two off)."""
    F = T.nn.functional if T.__name__ == "torch" else __import__("nn.functional", fromlist=["normalize"])
    a = T.tensor(rng.standard_normal((64, 16)).astype(np.float16))
    b = T.tensor(rng.standard_normal((64, 16)).astype(np.float16))
    norm = T.linalg.vector_norm(a.float(), p, dim=1, keepdim=True).half()  # (float32, rounded once)
    np.testing.assert_array_equal(F.normalize(a, p=p, dim=1).numpy(), (a / norm.clamp(min=1e-12)).numpy())
    difference = a - b + 1e-6
    np.testing.assert_array_equal(F.pairwise_distance(a, b, p=p).numpy(),
                                  T.linalg.vector_norm(difference.float(), p, dim=-1).half().numpy())
    if p == 2:
        norm_b = T.linalg.vector_norm(b.float(), 2, dim=1, keepdim=True).half()
        np.testing.assert_array_equal(F.cosine_similarity(a, b).numpy(), ((a / norm) * (b / norm_b)).sum(1).numpy())


@pytest.mark.parametrize("shape", [(32, 16), (4, 16, 3, 3)])
def test_float16_batch_norm_keeps_its_batch_statistics_in_float16(T, rng, shape):
    """F.batch_norm of float16 in training with float16 (or no) parameters: PyTorch's CPU kernel computes the batch
    mean and 1/√(var + eps) in float32, keeps them as float16, and normalises with those in float32, rounding the
    output once; with float32 parameters ("mixed dtype", a half model whose norms stay float32) it keeps them in
    float32, and chainrule accepted no float32 parameters beside a float16 input."""
    F = T.nn.functional if T.__name__ == "torch" else __import__("nn.functional", fromlist=["batch_norm"])
    a = rng.standard_normal(shape) * 2 + 1
    x = T.tensor(a.astype(np.float16))
    axes = (0,) + tuple(range(2, len(shape)))
    a16 = a.astype(np.float16).astype(np.float64)
    mean, var = a16.mean(axes, keepdims=True), a16.var(axes, keepdims=True)
    mean16 = mean.astype(np.float16).astype(np.float64)
    invstd16 = (1 / np.sqrt(var + 1e-5)).astype(np.float16).astype(np.float64)
    expected = ((a16 - mean16) * invstd16).astype(np.float16)
    np.testing.assert_array_equal(F.batch_norm(x, None, None, training=True).numpy(), expected)
    weight, bias = T.ones(16) * 1.5, T.zeros(16) + 0.25  # (float32: mixed)
    mixed = F.batch_norm(x, None, None, weight, bias, training=True)
    assert mixed.dtype == T.float16
    np.testing.assert_allclose(mixed.numpy().astype(np.float64), (a16 - mean) / np.sqrt(var + 1e-5) * 1.5 + 0.25,
                               rtol=2e-3, atol=2e-3)
    running_mean, running_var = T.zeros(16), T.ones(16)
    F.batch_norm(x, running_mean, running_var, weight, bias, training=True, momentum=0.5)
    assert running_mean.dtype == T.float32
    np.testing.assert_allclose(running_mean.numpy(), 0.5 * mean.reshape(-1), rtol=1e-5, atol=1e-6)
