"""The torch.nn layers and functions that fill gaps beside the common ones: instance norm, local response norm,
distances, hinge embedding loss, RReLU, feature alpha dropout, channel shuffle, LP pooling. Values by
definition and finite differences without torch; against PyTorch (float64, 1e-10: values, every gradient,
running statistics, repr, state_dict keys, a loaded torch state_dict) where it is installed."""

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F
from tests.torch_reference import same_as_torch, same_module_as_torch

torch_only = pytest.mark.torch


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def tensor(array, grad=False):
    return autograd.Tensor(np.array(array, dtype=np.float64), requires_grad=grad)


# -- without torch: definitions and finite differences --------------------------------------------------


def test_instance_norm_normalises_each_channel_of_each_sample():
    x = randn(2, 3, 4, 5)
    y = F.instance_norm(tensor(x)).numpy()
    mean, var = x.mean((2, 3), keepdims=True), x.var((2, 3), keepdims=True)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), atol=1e-12)
    running_mean, running_var = tensor(np.zeros(3)), tensor(np.ones(3))
    F.instance_norm(tensor(x), running_mean, running_var, momentum=0.5)
    np.testing.assert_allclose(running_mean.numpy(), 0.5 * x.mean((2, 3)).mean(0))
    np.testing.assert_allclose(running_var.numpy(), 0.5 + 0.5 * x.var((2, 3), ddof=1).mean(0))
    layer = nn.InstanceNorm2d(3, affine=True, track_running_stats=True)
    assert list(layer.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert layer(tensor(x[0])).shape == (3, 4, 5)  # unbatched
    layer.eval()  # eval: the running statistics
    mean, var = (getattr(layer, name).numpy()[:, None, None] for name in ("running_mean", "running_var"))
    np.testing.assert_allclose(layer(tensor(x)).numpy(), (x - mean) / np.sqrt(var + 1e-5), atol=1e-12)


def test_local_response_norm_by_definition():
    x, size, alpha, beta, k = randn(2, 5, 3), 3, 0.1, 0.75, 2.0
    padded = np.pad(x * x, [(0, 0), (1, 1), (0, 0)])
    total = sum(padded[:, j:j + 5] for j in range(size))
    np.testing.assert_allclose(F.local_response_norm(tensor(x), size, alpha, beta, k).numpy(),
                               x / (k + alpha / size * total) ** beta, rtol=1e-12)


def test_hinge_embedding_loss_by_definition():
    x, y = np.array([0.3, 1.5, -0.2, 0.7]), np.array([1.0, -1.0, -1.0, 1.0])
    losses = np.where(y == 1, x, np.maximum(0, 1 - x))
    assert F.hinge_embedding_loss(tensor(x), tensor(y)).item() == pytest.approx(losses.mean())
    assert nn.HingeEmbeddingLoss(margin=2.0, reduction="sum")(tensor(x), tensor(y)).item() == pytest.approx(
        np.where(y == 1, x, np.maximum(0, 2 - x)).sum())


def test_rrelu_draws_slopes_in_training_and_uses_their_mean_in_eval():
    autograd.manual_seed(0)
    x = tensor(randn(200), grad=True)
    y = F.rrelu(x, 0.1, 0.3, training=True)
    y.sum().backward()
    negative = x.numpy() < 0
    slopes = y.numpy()[negative] / x.numpy()[negative]
    assert 0.1 <= slopes.min() and slopes.max() <= 0.3 and slopes.std() > 0.02
    np.testing.assert_allclose(x.grad.numpy()[negative], slopes)  # dy/dx = the slope drawn
    np.testing.assert_array_equal(y.numpy()[~negative], x.numpy()[~negative])
    layer = nn.RReLU(0.1, 0.3).eval()
    np.testing.assert_allclose(layer(x).numpy(), np.where(negative, 0.2 * x.numpy(), x.numpy()))


def test_feature_alpha_dropout_drops_whole_channels_to_one_value():
    autograd.manual_seed(0)
    x = tensor(randn(8, 6, 5))
    y = F.feature_alpha_dropout(x, 0.5, training=True).numpy()
    p, saturation = 0.5, -1.7580993408473766
    a = 1 / np.sqrt((saturation**2 * p + 1) * (1 - p))
    dropped = np.isclose(y, a * saturation + (-a * saturation * p)).all(-1)
    kept = np.isclose(y, a * x.numpy() - a * saturation * p).all(-1)
    assert (dropped | kept).all() and dropped.any() and kept.any()
    assert nn.FeatureAlphaDropout(0.5).eval()(x) is x
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        F.feature_alpha_dropout(tensor([1.0]), training=True)


def test_channel_shuffle_interleaves_groups():
    x = tensor(np.arange(6.0).reshape(1, 6, 1))
    np.testing.assert_array_equal(F.channel_shuffle(x, 2).numpy().ravel(), [0, 3, 1, 4, 2, 5])
    np.testing.assert_array_equal(nn.ChannelShuffle(3)(x).numpy().ravel(), [0, 2, 4, 1, 3, 5])
    with pytest.raises(RuntimeError, match="Got 5 channels and 2 groups"):
        F.channel_shuffle(tensor(randn(2, 5, 3)), 2)
    with pytest.raises(RuntimeError, match="must be positive"):
        F.channel_shuffle(tensor(randn(2, 4, 3)), 0)
    with pytest.raises(RuntimeError, match="expects input with > 2 dims"):
        F.channel_shuffle(tensor(randn(2, 4)), 2)


def test_lp_pool_is_the_p_norm_of_each_window():
    x = np.abs(randn(1, 2, 4, 6)) + 0.1
    y = F.lp_pool2d(tensor(x), 3, 2).numpy()
    windows = x.reshape(1, 2, 2, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(1, 2, 2, 3, 4)
    np.testing.assert_allclose(y, (windows**3).sum(-1) ** (1 / 3), rtol=1e-12)
    assert nn.LPPool1d(2, 3, stride=1)(tensor(x[0])).shape == (2, 4, 4)


def test_new_functions_gradients_match_finite_differences():
    x = tensor(randn(2, 4, 3, 3), grad=True)
    w, b = tensor(randn(4, seed=1), grad=True), tensor(randn(4, seed=2), grad=True)
    assert autograd.gradcheck(lambda x, w, b: F.instance_norm(x, weight=w, bias=b), (x, w, b))
    assert autograd.gradcheck(lambda x: F.local_response_norm(x, 3, 0.5, 0.75, 1.0), (x,))
    assert autograd.gradcheck(lambda x: F.lp_pool2d(x.abs() + 0.5, 1.5, 2, 1), (x,))
    assert autograd.gradcheck(lambda x: F.channel_shuffle(x, 2), (x,))
    target = tensor(np.sign(randn(2, 4, 3, 3, seed=3)))
    assert autograd.gradcheck(lambda x: F.hinge_embedding_loss(x, target, 0.5), (x,))
    assert autograd.gradgradcheck(lambda x, w: F.instance_norm(x, weight=w), (x, w))


# -- against torch -------------------------------------------------------------------------------------


@torch_only
@pytest.mark.parametrize("shape", [(3, 4, 5), (3, 4, 5, 6), (2, 4, 3, 4, 3)])
def test_instance_norm_matches_torch_with_running_statistics(shape):
    import torch

    x, w, b = randn(*shape), randn(4, seed=1), randn(4, seed=2)
    same_as_torch(lambda x, w, b: F.instance_norm(x, weight=w, bias=b, eps=1e-3),
                  lambda x, w, b: torch.nn.functional.instance_norm(x, weight=w, bias=b, eps=1e-3), [x, w, b])
    mean, var = randn(4, seed=3), np.abs(randn(4, seed=4)) + 0.5
    ours, theirs = (tensor(mean), tensor(var)), (torch.tensor(mean), torch.tensor(var))
    same_as_torch(lambda x: F.instance_norm(x, *ours, momentum=0.3),
                  lambda x: torch.nn.functional.instance_norm(x, *theirs, momentum=0.3), [x])
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), t.numpy(), rtol=1e-12)
    same_as_torch(lambda x: F.instance_norm(x, *ours, use_input_stats=False),
                  lambda x: torch.nn.functional.instance_norm(x, *theirs, use_input_stats=False), [x])


@torch_only
@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 4, 3, 4), (2, 4, 2, 3, 2)])
def test_local_response_norm_matches_torch(size, shape):
    import torch

    same_as_torch(lambda x: F.local_response_norm(x, size, 0.01, 0.6, 2.0),
                  lambda x: torch.nn.functional.local_response_norm(x, size, 0.01, 0.6, 2.0), [randn(*shape)])


@torch_only
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_hinge_embedding_loss_matches_torch(reduction):
    import torch

    x = randn(3, 6)
    x[0, 0] = 1.0  # at the margin: the kink, where PyTorch's clamp passes the gradient
    target = np.array([[1, -1, 1, 0, -1, 1]] * 3, dtype=np.float64)  # 0: both terms, as PyTorch
    same_as_torch(lambda x: F.hinge_embedding_loss(x, tensor(target), reduction=reduction),
                  lambda x: torch.nn.functional.hinge_embedding_loss(x, torch.tensor(target), reduction=reduction),
                  [x])


@torch_only
def test_rrelu_eval_channel_shuffle_and_distances_match_torch():
    import torch

    x = randn(3, 4, 5, 6)
    x[0, 0, 0, :2] = 0.0  # the kink
    same_as_torch(F.rrelu, torch.nn.functional.rrelu, [x])
    same_as_torch(lambda x: F.rrelu(x, 0.2, 0.4), lambda x: torch.nn.functional.rrelu(x, 0.2, 0.4), [x])
    for groups in (1, 2, 4):
        same_as_torch(lambda x, g=groups: F.channel_shuffle(x, g),
                      lambda x, g=groups: torch.nn.functional.channel_shuffle(x, g), [x])
    same_as_torch(lambda a, b: nn.PairwiseDistance(3, keepdim=True)(a, b),
                  lambda a, b: torch.nn.PairwiseDistance(3, keepdim=True)(a, b), [randn(5, 4), randn(5, 4, seed=1)])
    same_as_torch(lambda a, b: nn.CosineSimilarity(0)(a, b), lambda a, b: torch.nn.CosineSimilarity(0)(a, b),
                  [randn(5, 4), randn(5, 4, seed=1)])


@torch_only
@pytest.mark.parametrize("p", [1, 2, 1.5])
def test_lp_pool_matches_torch(p):
    import torch

    x = np.abs(randn(2, 3, 5, 6)) + 0.1
    for options in (dict(kernel_size=2), dict(kernel_size=(2, 3), stride=(1, 2), ceil_mode=True)):
        same_as_torch(lambda x, o=options: F.lp_pool2d(x, p, **o),
                      lambda x, o=options: torch.nn.functional.lp_pool2d(x, p, **o), [x])
    same_as_torch(lambda x: F.lp_pool1d(x, p, 3, 2, True), lambda x: torch.nn.functional.lp_pool1d(x, p, 3, 2, True),
                  [x[0]])
    same_as_torch(lambda x: F.lp_pool3d(x, p, 2), lambda x: torch.nn.functional.lp_pool3d(x, p, 2), [x[None]])


LAYERS = [
    ("InstanceNorm1d", (4,), {}, (3, 4, 5)),
    ("InstanceNorm1d", (4,), dict(affine=True), (4, 5)),
    ("InstanceNorm2d", (4,), dict(affine=True, track_running_stats=True, momentum=0.3), (3, 4, 5, 6)),
    ("InstanceNorm3d", (4,), dict(affine=True, bias=False), (2, 4, 3, 4, 3)),
    ("LocalResponseNorm", (3,), dict(alpha=0.1), (3, 4, 5, 6)),
    ("RReLU", (0.1, 0.2), {}, (3, 4)),
    ("FeatureAlphaDropout", (0.2,), {}, (3, 4, 5)),
    ("ChannelShuffle", (2,), {}, (3, 4, 5)),
    ("LPPool2d", (2, 3), dict(stride=2), (2, 4, 7, 6)),
    ("LPPool1d", (1.5, 3, 2, True), {}, (2, 4, 7)),
]


@torch_only
@pytest.mark.parametrize("name, args, kwargs, shape", LAYERS)
def test_layers_match_torch(name, args, kwargs, shape):
    import torch

    autograd.manual_seed(0)
    ours, theirs = getattr(nn, name)(*args, **kwargs).double(), getattr(torch.nn, name)(*args, **kwargs).double()
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = randn(*shape)
    if name in ("RReLU", "FeatureAlphaDropout"):  # random in training
        ours.eval(), theirs.eval()
    elif name.startswith("LPPool"):
        x = np.abs(x) + 0.1
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_()
    ours.load_state_dict({k: autograd.Tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    same_module_as_torch(ours, theirs, x)
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[key].numpy(), value.numpy(), rtol=1e-12)
    ours.eval(), theirs.eval()
    np.testing.assert_allclose(ours(tensor(x)).detach().numpy(), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-10,
                               atol=1e-10)


@torch_only
def test_instance_norm_errors_and_warning_match_torch():
    with pytest.raises(ValueError, match=r"expected 2D or 3D input \(got 4D input\)"):
        nn.InstanceNorm1d(3)(tensor(randn(2, 3, 4, 5)))
    with pytest.raises(ValueError, match="to match num_features"):
        nn.InstanceNorm2d(3, affine=True)(tensor(randn(2, 4, 3, 3)))
    with pytest.warns(UserWarning, match="does not match num_features"):
        nn.InstanceNorm2d(3)(tensor(randn(2, 4, 3, 3)))
    with pytest.raises(ValueError, match="Expected more than 1 spatial element when training"):
        F.instance_norm(tensor(randn(2, 3, 1)))
    with pytest.raises(ValueError, match="Expected 3D or higher dimensionality input"):
        F.local_response_norm(tensor(randn(2, 3)), 2)


# -- unpooling, upsampling, bicubic -----------------------------------------------------------------------


def test_max_unpool_puts_each_maximum_back_and_zeros_elsewhere():
    x = tensor(randn(2, 3, 4, 6))
    y, indices = F.max_pool2d_with_indices(x, 2)
    out = F.max_unpool2d(y, indices, 2)
    kept = out.numpy() != 0
    np.testing.assert_array_equal(out.numpy()[kept], x.numpy()[kept])
    np.testing.assert_array_equal(F.max_pool2d(out, 2).numpy(), y.numpy())
    assert kept.sum() == y.numpy().size
    assert nn.MaxUnpool2d(2)(y, indices, output_size=(2, 3, 5, 7)).shape == (2, 3, 5, 7)
    values = tensor(y.numpy(), grad=True)
    assert autograd.gradcheck(lambda v: F.max_unpool2d(v, indices, 2), (values,))
    y1, indices1 = F.max_pool1d_with_indices(tensor(randn(3, 7)), 3, 2)  # unbatched
    assert F.max_unpool1d(y1, indices1, 3, 2).shape == (3, 7)


def test_max_unpool_errors_match_torch():
    y, indices = F.max_pool2d_with_indices(tensor(randn(1, 2, 4, 4)), 2)
    with pytest.raises(RuntimeError, match=r"Found an invalid max index: [0-9]+ \(output volumes are of size 4x4\)"):
        F.max_unpool2d(y, indices * 10, 2)
    with pytest.raises(RuntimeError, match="should be type int64"):
        F.max_unpool2d(y, indices.double(), 2)
    with pytest.raises(RuntimeError, match="Expected shape of indices to be same as that of the input"):
        F.max_unpool2d(y, indices[:, :1], 2)
    with pytest.raises(ValueError, match=r'invalid output_size "\(6, 6\)" \(dim 0 must be between 2 and 6\)'):
        F.max_unpool2d(y, indices, 2, output_size=(6, 6))


def test_bicubic_interpolates_the_samples_and_keeps_constants():
    x = randn(1, 2, 4, 5)
    y = F.interpolate(tensor(x), size=(7, 9), mode="bicubic", align_corners=True).numpy()
    np.testing.assert_allclose(y[:, :, ::2, ::2], x, atol=1e-12)  # an interpolating kernel
    constant = F.interpolate(tensor(np.full((1, 1, 3, 4), 2.5)), scale_factor=1.7, mode="bicubic").numpy()
    np.testing.assert_allclose(constant, 2.5, rtol=1e-12)  # the weights sum to 1
    assert autograd.gradcheck(lambda x: F.interpolate(x, size=(3, 7), mode="bicubic"), (tensor(x, grad=True),))


@torch_only
@pytest.mark.parametrize("options", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                     dict(kernel_size=(2, 3), stride=(2, 1))])
def test_max_unpool_matches_torch(options):
    import torch

    x = np.random.default_rng(0).permutation(2 * 3 * 8 * 8).reshape(2, 3, 8, 8) * 0.1
    y, indices = F.max_pool2d_with_indices(tensor(x), **options)
    t_y, t_indices = torch.nn.functional.max_pool2d_with_indices(torch.tensor(x), **options)
    np.testing.assert_array_equal(indices.numpy(), t_indices.numpy())
    args = options["kernel_size"], options.get("stride"), options.get("padding", 0)
    sizes = ((None,) if options == dict(kernel_size=2) else ()) + (x.shape, x.shape[2:])
    for size in sizes:
        same_as_torch(lambda v, s=size: F.max_unpool2d(v, indices, *args, s),
                      lambda v, s=size: torch.nn.functional.max_unpool2d(v, t_indices, *args, s), [y.numpy()])
    x1 = x[0]  # unbatched 1-d
    y, indices = F.max_pool1d_with_indices(tensor(x1), 3, 2)
    t_y, t_indices = torch.nn.functional.max_pool1d_with_indices(torch.tensor(x1), 3, 2)
    np.testing.assert_array_equal(indices.numpy(), t_indices.numpy())
    same_as_torch(lambda v: nn.MaxUnpool1d(3, 2)(v, indices, (8,)),
                  lambda v: torch.nn.MaxUnpool1d(3, 2)(v, t_indices, (8,)), [y.numpy()])
    x3 = np.random.default_rng(1).permutation(2 * 3 * 4 * 6 * 5).reshape(2, 3, 4, 6, 5) * 0.1
    _, indices = F.max_pool3d_with_indices(tensor(x3), 2)
    t_y, t_indices = torch.nn.functional.max_pool3d_with_indices(torch.tensor(x3), 2)
    same_as_torch(lambda v: F.max_unpool3d(v, indices, 2, output_size=(5, 7, 5)),
                  lambda v: torch.nn.functional.max_unpool3d(v, t_indices, 2, output_size=(5, 7, 5)), [t_y.numpy()])
    for ours, theirs, array in ((F.adaptive_max_pool2d_with_indices,
                                 torch.nn.functional.adaptive_max_pool2d_with_indices, x),
                                (F.adaptive_max_pool1d_with_indices,
                                 torch.nn.functional.adaptive_max_pool1d_with_indices, x[:, :, 0])):
        a, b = ours(tensor(array), 3), theirs(torch.tensor(array), 3)
        np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())


@torch_only
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("resize", [dict(size=(7, 9)), dict(scale_factor=2), dict(scale_factor=(0.6, 1.7)),
                                    dict(size=(3, 4)), dict(size=(1, 1))])
def test_bicubic_and_trilinear_match_torch(resize, align_corners):
    import torch

    x = randn(2, 3, 5, 6)
    same_as_torch(lambda v: F.interpolate(v, mode="bicubic", align_corners=align_corners, **resize),
                  lambda v: torch.nn.functional.interpolate(v, mode="bicubic", align_corners=align_corners, **resize),
                  [x])
    size = (4,) + tuple(resize.get("size", (4, 5)))
    same_as_torch(lambda v: F.interpolate(v, size=size, mode="trilinear", align_corners=align_corners),
                  lambda v: torch.nn.functional.interpolate(v, size=size, mode="trilinear",
                                                            align_corners=align_corners), [randn(2, 3, 3, 5, 6)])


@torch_only
def test_upsampling_layers_and_functions_match_torch():
    import torch

    x = randn(2, 3, 5, 6)
    for ours, theirs in ((nn.UpsamplingNearest2d(scale_factor=2), torch.nn.UpsamplingNearest2d(scale_factor=2)),
                         (nn.UpsamplingBilinear2d(size=4), torch.nn.UpsamplingBilinear2d(size=4)),
                         (nn.UpsamplingBilinear2d(scale_factor=1.5), torch.nn.UpsamplingBilinear2d(scale_factor=1.5)),
                         (nn.Upsample(scale_factor=(2, 3)), torch.nn.Upsample(scale_factor=(2, 3))),
                         (nn.MaxUnpool2d(2), torch.nn.MaxUnpool2d(2)),
                         (nn.MaxUnpool1d(3, 2, 1), torch.nn.MaxUnpool1d(3, 2, 1))):
        assert repr(ours) == repr(theirs)
        if not isinstance(ours, nn.MaxUnpool1d | nn.MaxUnpool2d):
            same_as_torch(ours, theirs, [x])
    with pytest.warns(UserWarning, match="upsample_bilinear. is deprecated"):
        same_as_torch(lambda v: F.upsample_bilinear(v, scale_factor=2),
                      lambda v: torch.nn.functional.upsample_bilinear(v, scale_factor=2), [x])
    with pytest.warns(UserWarning, match="upsample_nearest. is deprecated"):
        same_as_torch(lambda v: F.upsample_nearest(v, size=(7, 8)),
                      lambda v: torch.nn.functional.upsample_nearest(v, size=(7, 8)), [x])
    same_as_torch(lambda v: F.interpolate(v, size=(2, 3, 4), mode="area"),
                  lambda v: torch.nn.functional.interpolate(v, size=(2, 3, 4), mode="area"), [randn(2, 3, 4, 6, 5)])


# -- gumbel softmax, affine_grid, grid_sample ---------------------------------------------------------------


def test_gumbel_softmax_samples_the_categorical_distribution():
    autograd.manual_seed(0)
    probabilities = np.array([0.1, 0.2, 0.7])
    logits = tensor(np.log(probabilities)[None].repeat(20000, 0), grad=True)
    hard = F.gumbel_softmax(logits, tau=0.5, hard=True)
    assert set(np.unique(hard.numpy())) == {0.0, 1.0} and (hard.numpy().sum(1) == 1).all()
    np.testing.assert_allclose(hard.numpy().mean(0), probabilities, atol=0.01)
    soft = F.gumbel_softmax(logits[:4], tau=2.0, dim=1)
    np.testing.assert_allclose(soft.numpy().sum(1), 1.0)
    assert ((soft.numpy() > 0) & (soft.numpy() < 1)).all()
    # straight through: the hard sample's gradient is the soft sample's (same noise)
    weights = tensor([[1.0, -2.0, 3.0]])
    grads = []
    for is_hard in (True, False):
        autograd.manual_seed(1)
        x = tensor(randn(5, 3), grad=True)
        (F.gumbel_softmax(x, 0.7, hard=is_hard) * weights).sum().backward()
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1])
    assert F.gumbel_softmax(tensor(randn(2, 3)).float()).dtype == autograd.float32


def test_affine_grid_of_the_identity_is_the_pixel_centres_and_grid_sample_reads_them_back():
    x = randn(2, 3, 4, 5)
    identity = tensor(np.array([[[1.0, 0, 0], [0, 1, 0]]] * 2))
    for align_corners in (False, True):
        grid = F.affine_grid(identity, (2, 3, 4, 5), align_corners)
        assert grid.shape == (2, 4, 5, 2)
        for mode in ("bilinear", "nearest"):
            np.testing.assert_allclose(F.grid_sample(tensor(x), grid, mode, align_corners=align_corners).numpy(), x,
                                       atol=1e-12)
    shift = tensor(np.array([[[1.0, 0, 2 / 5], [0, 1, 0]]]))  # one pixel to the right
    y = F.grid_sample(tensor(x[:1]), F.affine_grid(shift, (1, 3, 4, 5), False), align_corners=False).numpy()
    np.testing.assert_allclose(y[..., :-1], x[:1, ..., 1:], atol=1e-12)
    np.testing.assert_allclose(y[..., -1], 0, atol=1e-12)  # zeros padding


def test_grid_sample_gradients_match_finite_differences():
    x = tensor(randn(1, 2, 3, 4), grad=True)
    grid = tensor(np.random.default_rng(1).uniform(-1.3, 1.3, (1, 3, 2, 2)), grad=True)
    for mode, padding_mode in (("bilinear", "zeros"), ("bilinear", "border"), ("bilinear", "reflection"),
                               ("bicubic", "reflection")):
        assert autograd.gradcheck(
            lambda x, g, m=mode, p=padding_mode: F.grid_sample(x, g, m, padding_mode=p, align_corners=False), (x, grid))
    theta = tensor(randn(1, 3, 4), grad=True)
    assert autograd.gradcheck(lambda t: F.affine_grid(t, (1, 1, 2, 3, 2), align_corners=True), (theta,))


@torch_only
@pytest.mark.filterwarnings("ignore:Since version 1.3.0")
@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_matches_torch(align_corners):
    import torch

    same_as_torch(lambda t: F.affine_grid(t, (2, 3, 4, 5), align_corners),
                  lambda t: torch.nn.functional.affine_grid(t, (2, 3, 4, 5), align_corners), [randn(2, 2, 3)])
    same_as_torch(lambda t: F.affine_grid(t, (2, 3, 3, 1, 5), align_corners),
                  lambda t: torch.nn.functional.affine_grid(t, (2, 3, 3, 1, 5), align_corners), [randn(2, 3, 4)])


@torch_only
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_grid_sample_matches_torch(mode, padding_mode, align_corners):
    import torch

    rng = np.random.default_rng(0)
    options = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)

    def ours(x, g):
        return F.grid_sample(x, g, **options)

    def theirs(x, g):
        return torch.nn.functional.grid_sample(x, g, **options)

    same_as_torch(ours, theirs, [randn(2, 3, 4, 5), rng.uniform(-1.4, 1.4, (2, 6, 7, 2))])
    if mode != "bicubic":  # images only, as PyTorch
        same_as_torch(ours, theirs, [randn(2, 3, 3, 4, 5), rng.uniform(-1.4, 1.4, (2, 3, 4, 5, 3))])
    lattice = np.stack(np.meshgrid(np.linspace(-1.5, 1.5, 13), np.linspace(-1, 1, 9)), -1)[None]  # edges, halves
    same_as_torch(ours, theirs, [randn(1, 2, 4, 5), lattice])


@torch_only
def test_grid_sample_and_affine_grid_errors_match_torch():
    x, grid = tensor(randn(2, 3, 4, 5)), tensor(randn(2, 3, 3, 2))
    with pytest.raises(RuntimeError, match="expected grid and input to have same batch size"):
        F.grid_sample(x, grid[:1], align_corners=False)
    with pytest.raises(RuntimeError, match="expected grid to have size 2 in last dimension"):
        F.grid_sample(x, grid[..., :1], align_corners=False)
    with pytest.raises(ValueError, match="expected padding_mode to be 'zeros', 'border', or 'reflection'"):
        F.grid_sample(x, grid, padding_mode="wrap", align_corners=False)
    with pytest.raises(RuntimeError, match="bicubic interpolation only supports 4D input"):
        F.grid_sample(tensor(randn(1, 1, 2, 2, 2)), tensor(randn(1, 1, 1, 1, 3)), "bicubic", align_corners=False)
    with pytest.warns(UserWarning, match="align_corners=False since 1.3.0"):
        F.grid_sample(x, grid)
    with pytest.raises(ValueError, match="Expected a batch of 2D affine matrices of shape Nx2x3"):
        F.affine_grid(tensor(randn(2, 3, 3)), (2, 3, 4, 5), False)
    with pytest.raises(ValueError, match="Expected theta to have floating point type"):
        F.affine_grid(autograd.tensor(np.ones((2, 2, 3), dtype=np.int64)), (2, 3, 4, 5), False)


def test_inplace_selu_celu_and_nllloss2d():
    x = tensor(randn(2, 3))
    expected = F.selu(x).numpy()
    assert F.selu_(x) is x
    np.testing.assert_array_equal(x.numpy(), expected)
    y = tensor(randn(2, 3))
    expected = F.celu(y, 0.5).numpy()
    F.celu_(y, 0.5)
    np.testing.assert_array_equal(y.numpy(), expected)
    scores, target = tensor(randn(2, 3, 4, 4)).log_softmax(1), autograd.tensor(np.zeros((2, 4, 4), dtype=np.int64))
    assert nn.NLLLoss2d()(scores, target).item() == nn.NLLLoss()(scores, target).item()


# -- fractional max pooling ------------------------------------------------------------------------------------


def test_fractional_max_pool_windows_start_at_fractional_strides():
    x = np.random.default_rng(0).permutation(11 * 13).reshape(1, 1, 11, 13) * 0.1
    samples = autograd.Tensor(np.array([[[0.3, 0.6]]]))  # (u_W, u_H)
    y, indices = F.fractional_max_pool2d(tensor(x), 2, (5, 7), return_indices=True, _random_samples=samples)
    alpha_h, alpha_w = (11 - 2) / 4, (13 - 2) / 6
    rows = [int((i + 0.6) * alpha_h) - int(0.6 * alpha_h) for i in range(4)] + [9]
    cols = [int((j + 0.3) * alpha_w) - int(0.3 * alpha_w) for j in range(6)] + [11]
    expected = np.array([[x[0, 0, r:r + 2, c:c + 2].max() for c in cols] for r in rows])
    np.testing.assert_array_equal(y.numpy()[0, 0], expected)
    np.testing.assert_array_equal(x.reshape(-1)[indices.numpy().ravel()], expected.ravel())
    autograd.manual_seed(0)
    layer = nn.FractionalMaxPool3d(2, output_ratio=0.5)
    assert layer(tensor(randn(2, 3, 6, 8, 7))).shape == (2, 3, 3, 4, 3)
    assert autograd.gradcheck(lambda v: F.fractional_max_pool2d(v, 3, 4, _random_samples=samples),
                              (tensor(x, grad=True),))
    with pytest.raises(ValueError, match="requires specifying either an output size, or a pooling ratio"):
        nn.FractionalMaxPool2d(2)
    with pytest.raises(ValueError, match="output_ratio must be between 0 and 1"):
        nn.FractionalMaxPool2d(2, output_ratio=1.5)
    with pytest.raises(RuntimeError, match="too large relative to input"):
        F.fractional_max_pool2d(tensor(x), 4, (10, 5), _random_samples=samples)


@torch_only
@pytest.mark.parametrize("options", [dict(kernel_size=2, output_size=(5, 7)),
                                     dict(kernel_size=(3, 2), output_ratio=(0.5, 0.7)),
                                     dict(kernel_size=2, output_size=1), dict(kernel_size=3, output_size=(9, 11))])
def test_fractional_max_pool_matches_torch_for_the_same_samples(options):
    import torch

    rng = np.random.default_rng(0)
    x, u = rng.permutation(2 * 3 * 11 * 13).reshape(2, 3, 11, 13) * 0.1, rng.random((2, 3, 2))
    ours, theirs = same_as_torch(
        lambda v: F.fractional_max_pool2d(v, return_indices=True, _random_samples=autograd.Tensor(u), **options),
        lambda v: torch.nn.functional.fractional_max_pool2d(v, return_indices=True, _random_samples=torch.tensor(u),
                                                            **options), [x])
    np.testing.assert_array_equal(ours[1].numpy(), theirs[1].numpy())
    x3, u3 = rng.permutation(2 * 3 * 7 * 8 * 9).reshape(2, 3, 7, 8, 9) * 0.1, rng.random((2, 3, 3))
    ours, theirs = same_as_torch(
        lambda v: F.fractional_max_pool3d_with_indices(v, 2, (4, 5, 6), _random_samples=autograd.Tensor(u3)),
        lambda v: torch.nn.functional.fractional_max_pool3d_with_indices(v, 2, (4, 5, 6),
                                                                         _random_samples=torch.tensor(u3)), [x3])
    np.testing.assert_array_equal(ours[1].numpy(), theirs[1].numpy())
    xf, uf = x.astype(np.float32), u.astype(np.float32)  # windows computed in float32, as PyTorch
    a = F.fractional_max_pool2d_with_indices(autograd.Tensor(xf), 2, (5, 7), _random_samples=autograd.Tensor(uf))
    b = torch.nn.functional.fractional_max_pool2d_with_indices(torch.tensor(xf), 2, (5, 7),
                                                               _random_samples=torch.tensor(uf))
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert repr(nn.FractionalMaxPool2d(3, output_ratio=0.5)) == repr(torch.nn.FractionalMaxPool2d(3, output_ratio=0.5))


def test_container_is_deprecated_and_holds_its_keywords():
    with pytest.warns(UserWarning, match="nn.Container. is deprecated"):
        container = nn.Container(a=nn.Linear(2, 2), b=nn.ReLU())
    assert list(dict(container.named_children())) == ["a", "b"]


def test_conv_tbc_is_conv1d_in_time_batch_channel_layout():
    x, w, b = randn(7, 2, 3), randn(3, 3, 4, seed=1), randn(4, seed=2)
    y = F.conv_tbc(tensor(x), tensor(w), tensor(b), 1).numpy()
    padded = np.pad(x, [(1, 1), (0, 0), (0, 0)])
    expected = np.stack([np.einsum("kbc,kco->bo", padded[t:t + 3], w) + b for t in range(7)])
    np.testing.assert_allclose(y, expected, atol=1e-12)


@torch_only
def test_conv_tbc_matches_torch():
    import torch

    same_as_torch(lambda x, w, b: F.conv_tbc(x, w, b, 2), lambda x, w, b: torch.nn.functional.conv_tbc(x, w, b, 2),
                  [randn(7, 2, 3), randn(3, 3, 4, seed=1), randn(4, seed=2)])
