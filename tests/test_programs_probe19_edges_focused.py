# ruff: noqa: E501  (the programs are kept as their authors wrote them)
"""Programs that meet special values and degenerate shapes (see tests/pytorch_programs.py), each run on chainrule and
on PyTorch from the same weights and data, comparing values, gradients, parameters and errors, and checked against
values known by hand. Focused tests of what the programs found: ``vector_norm`` of orders inf and below 0 over empty
tensors and dims, and the undefined gradient of its order 0; ``movedim``, ``split`` and ``index_select`` of 0-d
tensors; convolutions, fractional max pooling, ``svd``, ``native_group_norm`` and ``spectral_norm`` on empty batches
or zero-size weights; convolutions without filters, ``orthogonal_`` of zero-size tensors, adaptive pooling of empty
planes; NaN (and infinite) arguments to ``bernoulli``, ``dropout``, ``quantile``, ``pdist``/``cdist``,
``huber_loss``/``smooth_l1_loss``, ``interpolate``, ``uniform_`` and the other samplers, ``renorm``; ``binomial``
outside [0, 1]; and a NaN made an integer tensor (refused as an overflow, PyTorch's words)."""

import math

import pytest

from tests.ported import raises
from tests.program_errors import raises_alike

from .pytorch_programs import OURS, pytorch

# ----------------------------------------------------------------------------------------------
# Focused tests of the fixes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ord", [math.inf, -math.inf, -1, -0.5])
def test_vector_norm_without_identity_over_empty(T, ord):
    x = T.zeros(0, 3)
    words = f"cannot compute the {float(ord):g} norm"
    raises(RuntimeError, words + " on an empty tensor because the operation does not have an identity",
           T.linalg.vector_norm, x, ord)
    raises(RuntimeError, words + " on an empty tensor", T.linalg.vector_norm, x, ord, ())
    raises(RuntimeError, words + " on the dimension 0because this dimension is empty", T.linalg.vector_norm, x, ord, 0)
    raises(RuntimeError, words + " on the dimension -2because", T.linalg.vector_norm, x, ord, (1, -2))
    assert T.linalg.vector_norm(x, ord, dim=1).shape == (0,)  # the empty dim is not reduced: nothing refused
    raises(RuntimeError, words + " on an empty tensor", T.linalg.norm, T.zeros(0), ord)
    assert float(T.linalg.vector_norm(T.tensor([3.0, -4.0]), ord)) == pytest.approx(
        {math.inf: 4.0, -math.inf: 3.0, -1: 12 / 7, -0.5: 1 / (3 ** -0.5 + 4 ** -0.5) ** 2}[ord])


def test_empty_tensor_norms_with_an_identity(T):
    x = T.zeros(0, 3)
    assert float(T.linalg.vector_norm(x)) == 0.0 and float(T.linalg.vector_norm(x, 0)) == 0.0
    assert float(T.linalg.vector_norm(x, 1)) == 0.0


def test_movedim_of_a_scalar(T):
    x = T.tensor(2.0, requires_grad=True)
    for source, destination in ((0, 0), (-1, 0), ((0,), (-1,))):
        y = x.movedim(source, destination)
        assert y.shape == () and float(y) == 2.0
    T.moveaxis(x, 0, -1).backward()
    assert float(x.grad) == 1.0
    raises(IndexError, r"Dimension out of range \(expected to be in range of \[-1, 0\], but got 1\)", x.movedim, 1, 0)


def test_split_of_a_scalar_is_refused(T):
    x = T.tensor(2.0)
    for args in ((1,), ([1],)):
        raises(RuntimeError, "split expects at least a 1-dimensional tensor", x.split, *args)
    raises(RuntimeError, "split expects at least a 1-dimensional tensor", T.split, x, 1)
    raises(RuntimeError, "chunk expects at least a 1-dimensional tensor", x.chunk, 1)


def modules_of(T):
    """The program namespace (nn, F, ...) of the library the ``T`` fixture gives."""
    return OURS if T is OURS.torch else pytorch()


def test_index_select_of_a_scalar_takes_one_index(T):
    x = T.tensor(5.0)
    assert float(x.index_select(0, T.tensor([0]))) == 5.0 and x.index_select(0, T.tensor(0)).shape == ()
    for index, n in ((T.tensor([0, 0]), 2), (T.tensor([], dtype=T.long), 0)):
        raises(RuntimeError, rf"index_select\(\): Index to scalar can have only 1 value, got {n} value\(s\)",
               x.index_select, 0, index)


def test_nan_probabilities_are_refused(T):
    F = modules_of(T).F
    raises(RuntimeError, "", T.bernoulli, T.tensor([0.5, float("nan")]))
    raises(RuntimeError, "", T.zeros(2).bernoulli_, float("nan"))
    raises(RuntimeError, "dropout probability has to be between 0 and 1, but got nan", F.dropout, T.ones(3),
           float("nan"))
    raises(ValueError, "dropout probability has to be between 0 and 1, but got 1.5", F.dropout, T.ones(3), 1.5)
    assert T.bernoulli(T.tensor([0.0, 1.0])).tolist() == [0.0, 1.0]


def test_bernoulli_log_prob_at_infinite_logits(T):
    inf = float("inf")
    d = T.distributions.Bernoulli(logits=T.tensor([inf, -inf, inf, -inf, 100.0]), validate_args=False)
    got = d.log_prob(T.tensor([0.0, 1.0, 1.0, 0.0, 1.0]))
    assert got[0] == -inf and all(math.isnan(v) for v in got[1:4].tolist())  # PyTorch's -BCE: 0 · inf is NaN
    assert -1e-40 < float(got[4]) < 0  # -softplus(-100), not 100 - softplus(100) = 0
    entropy = T.distributions.Bernoulli(logits=T.tensor([0.0, 100.0])).entropy()
    assert float(entropy[0]) == pytest.approx(math.log(2)) and 0 < float(entropy[1]) < 1e-40


def test_conv_transpose_weight_gradient_on_an_empty_batch(T):
    nn = modules_of(T).nn
    for conv, shape in ((nn.ConvTranspose1d(2, 3, 3, stride=2), (0, 2, 5)),
                        (nn.ConvTranspose2d(2, 3, 3, dilation=2), (0, 2, 4, 4)),
                        (nn.ConvTranspose3d(2, 4, 2, groups=2), (0, 2, 3, 3, 3)),
                        (nn.Conv3d(2, 3, 2, stride=(1, 2, 2)), (0, 2, 4, 4, 4))):
        x = T.zeros(*shape, requires_grad=True)
        y = conv(x)
        assert y.shape[0] == 0
        y.sum().backward()
        assert x.grad.shape == x.shape and (conv.weight.grad == 0).all() and (conv.bias.grad == 0).all()


def test_fractional_max_pool_on_an_empty_batch(T):
    nn = modules_of(T).nn
    for pool, shape, out in ((nn.FractionalMaxPool2d(2, output_size=3, return_indices=True), (0, 2, 6, 6), (3, 3)),
                             (nn.FractionalMaxPool3d(2, output_ratio=0.5), (0, 1, 4, 4, 4), (2, 2, 2))):
        x = T.zeros(*shape, requires_grad=True)
        y = pool(x)
        y = y[0] if isinstance(y, tuple) else y
        assert tuple(y.shape) == shape[:2] + out
        y.sum().backward()
        assert x.grad.shape == x.shape


def test_a_nan_made_an_integer_tensor_is_refused_as_an_overflow():
    raises_alike(lambda m: m.torch.tensor([1.0, float("nan")], dtype=m.torch.long),
                 "value cannot be converted to type int64 without overflow", kind=RuntimeError)


def test_convolutions_without_filters_are_refused(T):
    F = modules_of(T).F
    for conv, x, w, groups in ((F.conv1d, T.ones(1, 1, 4), T.ones(0, 1, 3), 1),
                               (F.conv3d, T.ones(1, 1, 4, 4, 4), T.ones(0, 1, 3, 3, 3), 1),
                               (F.conv_transpose2d, T.ones(1, 0, 4, 4), T.ones(0, 2, 3, 3), 1),
                               (F.conv2d, T.ones(1, 2, 4, 4), T.ones(1, 1, 3, 3), 2)):
        raises(RuntimeError, rf"Given groups={groups}, expected weight to be at least {groups} at dimension 0, but got "
                             r"weight of size \[", conv, x, w, groups=groups)


def test_orthogonal_init_of_a_zero_size_tensor_is_a_no_op(T):
    nn = modules_of(T).nn
    for shape in ((0, 3), (4, 0), (3, 0, 2)):
        t = T.zeros(*shape)
        assert nn.init.orthogonal_(t) is t and tuple(t.shape) == shape


def test_decompositions_and_norms_of_an_empty_batch(T):
    nn = modules_of(T).nn
    a = T.zeros(0, 3, 2, requires_grad=True)
    u, s, vh = T.linalg.svd(a)
    assert (tuple(u.shape), tuple(s.shape), tuple(vh.shape)) == ((0, 3, 3), (0, 2), (0, 2, 2))
    (u.sum() + s.sum() + vh.sum()).backward()
    assert a.grad.shape == a.shape
    y, mean, rstd = T.native_group_norm(T.zeros(0, 4, 3), None, None, 0, 4, 3, 2, 1e-5)
    assert (tuple(y.shape), tuple(mean.shape), tuple(rstd.shape)) == ((0, 4, 3), (0, 2), (0, 2))
    assert nn.utils.parametrizations.spectral_norm(nn.Linear(3, 0)).weight.shape == (0, 3)


def test_quantile_refuses_a_nan_q_in_pytorchs_words(T):
    x = T.tensor([1.0, 2.0])
    for fn in (T.quantile, T.nanquantile):  # (nanquantile's messages name quantile(), as PyTorch's)
        raises(RuntimeError, r"^quantile\(\) q must be in the range \[0, 1\] but got nan$", fn, x, float("nan"))
        raises(RuntimeError, r"^quantile\(\) q values must be in the range \[0, 1\]$", fn, x, T.tensor([0.5, float("nan")]))
        raises(RuntimeError, r"^quantile\(\) input tensor must be non-empty$", fn, T.zeros(0), 0.5)
        assert float(fn(x, 1.0)) == 2.0 and float(fn(x, 0.0)) == 1.0


def test_nan_arguments_fail_pytorchs_range_checks(T):
    F = modules_of(T).F
    nan = float("nan")
    x = T.ones(2, 2)
    raises(RuntimeError, "pdist only supports non-negative p values", F.pdist, x, nan)
    raises(RuntimeError, "cdist only supports non-negative p values", T.cdist, x, x, nan)
    raises(RuntimeError, "huber_loss does not support non-positive values for delta.", F.huber_loss, x, x, delta=nan)
    raises(RuntimeError, "smooth_l1_loss does not support negative values for beta.", F.smooth_l1_loss, x, x, beta=nan)
    for scale in (nan, float("inf")):
        raises(RuntimeError, "value cannot be converted to type int64_t without overflow", F.interpolate,
               T.ones(1, 1, 2), scale_factor=scale)


def test_uniform_bounds_must_fit_the_dtype(T):
    inf = float("inf")
    raises(RuntimeError, "^to is out of bounds for float$", T.zeros(2).uniform_, 0, inf)
    raises(RuntimeError, "^from is out of bounds for float$", T.zeros(2).uniform_, float("nan"), 1)
    raises(RuntimeError, "^to is out of bounds for double$", T.zeros(2, dtype=T.float64).uniform_, 0, inf)
    raises(RuntimeError, "^to is out of bounds for c10::Half$", T.zeros(2, dtype=T.float16).uniform_, 0, 1e5)
    raises(RuntimeError, r"uniform_ expects to-from <= std::numeric_limits<Float>::max\(\), but found to=3e\+38 and "
                         r"from=-3e\+38 which result in to-from to exceed the limit", T.zeros(2).uniform_, -3e38, 3e38)
    raises(RuntimeError, r"uniform_ expects to return a \[from, to\) range, but found from=1 > to=0",
           T.zeros(2).uniform_, 1, 0)
    drawn = T.zeros(1000).uniform_(-1e38, 1e38)
    assert float(drawn.abs().max()) <= 1e38 and float(drawn.min()) < 0 < float(drawn.max())


def test_sampling_refuses_nan_parameters(T):
    nan = float("nan")
    raises(RuntimeError, "^normal expects std >= 0.0, but found std nan$", T.zeros(2).normal_, 0, nan)
    raises(RuntimeError, "^normal expects std >= 0.0, but found std -1$", T.zeros(2).normal_, 0, -1.0)
    raises(RuntimeError, "exponential_ expects lambda > 0.0, but found lambda=nan", T.zeros(2).exponential_, nan)
    raises(RuntimeError, "cauchy_ expects sigma > 0.0, but found sigma=nan", T.zeros(2).cauchy_, 0, nan)
    raises(RuntimeError, "log_normal_ expects std > 0.0, but found std=nan", T.zeros(2).log_normal_, 0, nan)
    raises(RuntimeError, "normal expects std >= 0.0, but found std nan", T.normal, T.zeros(2), nan)
    raises(RuntimeError, "normal expects all elements of std >= 0.0", T.normal, T.zeros(2), T.tensor([nan, 1.0]))
    for rate in (-1.0, nan):
        raises(RuntimeError, "invalid Poisson rate, expected rate to be non-negative", T.poisson, T.tensor([rate]))
    raises(RuntimeError, "renorm: non-positive-norm not supported", T.ones(2, 3).renorm, nan, 0, 1.0)
    raises(RuntimeError, "renorm: expected maxnorm to be >= 0 but got nan", T.ones(2, 3).renorm, 2, 0, nan)


def test_binomial_probabilities_outside_the_unit_interval(T):
    # unchecked, as PyTorch's: a probability <= 0 draws 0, one >= 1 the count, NaN gives NaN
    draws = T.binomial(T.tensor([5.0, 5.0, 0.0, 5.0]), T.tensor([-0.5, 2.0, 0.5, float("nan")]))
    assert draws[:3].tolist() == [0.0, 5.0, 0.0] and math.isnan(float(draws[3]))


def test_the_zero_norm_counts_without_a_gradient(T):
    x = T.tensor([0.0, 1.0, 2.0], requires_grad=True)
    T.linalg.vector_norm(x, 0).backward()
    assert x.grad is None  # undefined, as PyTorch's: the leaf's grad stays None
    (x.norm(p=0) + x.sum()).backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]
    a = T.tensor([[1.0, 2.0], [1.0, 3.0]], requires_grad=True)
    T.cdist(a, a, p=0).sum().backward()  # the distances' gradient is zeros
    assert a.grad.abs().sum().item() == 0.0


def test_adaptive_pooling_of_empty_planes_is_refused(T):
    F = modules_of(T).F
    words = r"\(\): Expected input to have non-zero size for non-batch dimensions, but input has sizes "
    raises(RuntimeError, r"^adaptive_avg_pool2d" + words + r"\[2, 4, 1, 0\] with dimension 3 being empty$",
           F.adaptive_avg_pool1d, T.zeros(2, 4, 0), 2)  # (a mean of nothing was 0 here)
    raises(RuntimeError, r"^adaptive_avg_pool2d" + words + r"\[4, 0, 3\] with dimension 1 being empty$",
           F.adaptive_avg_pool2d, T.zeros(4, 0, 3), 2)
    raises(RuntimeError, r"^adaptive_max_pool1d" + words + r"\[2, 4, 0\] with dimension 2 being empty$",
           F.adaptive_max_pool1d, T.zeros(2, 4, 0), 2)
    raises(RuntimeError, r"^adaptive_max_pool3d" + words + r"\[2, 0, 3, 3, 3\] with dimension 1 being empty$",
           F.adaptive_max_pool3d, T.zeros(2, 0, 3, 3, 3), 2)
    raises(RuntimeError, r"^adaptive_avg_pool3d" + words + r"\[2, 1, 0, 3, 3\] with dimension 2 being empty$",
           F.adaptive_avg_pool3d, T.zeros(2, 1, 0, 3, 3), 2)
    # an empty batch (and, for 2-d averages, no channels) is pooled
    assert tuple(F.adaptive_avg_pool2d(T.zeros(2, 0, 3, 3), 2).shape) == (2, 0, 2, 2)
    assert tuple(F.adaptive_max_pool2d(T.zeros(0, 4, 3, 3), 2).shape) == (0, 4, 2, 2)
    assert tuple(F.adaptive_avg_pool3d(T.zeros(0, 3, 3, 3), 2).shape) == (0, 2, 2, 2)
