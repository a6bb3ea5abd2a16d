"""Layers and functions of torch.nn beyond the losses, ported from PyTorch's test/test_nn.py (TestNN and
TestNNDeviceType on CPU): Linear, Bilinear, Flatten/Unflatten, Dropout, the activations (threshold,
hardtanh, GELU, GLU, PReLU, RReLU, softmax family, in-place forms), one_hot, cosine similarity,
pairwise distance, pdist, normalize, affine_grid / grid_sample and ChannelShuffle, with values against
NumPy and the errors. Each test runs on chainrule's `nn` and, where it is installed, on PyTorch's."""

import warnings

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


def test_linear_values_broadcasting_and_no_bias(T, nn, F):
    m = nn.Linear(5, 8)
    x = T.randn(2, 3, 5)
    w, b = values(m.weight), values(m.bias)
    close(m(x), values(x) @ w.T + b, rtol=1e-5, atol=1e-6)
    assert tuple(m(T.randn(5)).shape) == (8,)                # a single vector
    m = nn.Linear(5, 8, bias=False)
    assert m.bias is None and [n for n, _ in m.named_parameters()] == ["weight"]
    assert repr(m) == "Linear(in_features=5, out_features=8, bias=False)"
    close(F.linear(T.ones(2, 5), T.ones(3, 5), T.tensor([1.0, 2.0, 3.0])), [[6.0, 7, 8], [6, 7, 8]])


def test_linear_errors(T, nn):
    raises(RuntimeError, "both arguments to linear need to be at least 1D, but they are 0D and 2D", nn.Linear(1, 1),
           T.tensor(1.0))
    raises(RuntimeError, r"mat1 and mat2 shapes cannot be multiplied( \(2x3 and 4x5\))?", nn.Linear(4, 5),
           T.randn(2, 3))


def test_linear_init_bounds(T, nn):
    T.manual_seed(0)
    m = nn.Linear(100, 50)
    bound = 1 / np.sqrt(100)
    assert np.abs(values(m.weight)).max() <= bound and np.abs(values(m.bias)).max() <= bound
    assert np.abs(values(m.weight)).max() > 0.9 * bound            # kaiming_uniform(a=√5): the same bound


def test_bilinear(T, nn, F):
    module = nn.Bilinear(10, 10, 8, dtype=T.float64)
    input1 = T.randn(4, 10, dtype=T.float64, requires_grad=True)
    input2 = T.randn(4, 10, dtype=T.float64, requires_grad=True)
    grad_output = T.randn(4, 8, dtype=T.float64)
    res = module(input1, input2)
    expected = (np.einsum("bi,kij,bj->bk", values(input1), values(module.weight), values(input2))
                + values(module.bias))
    close(res, expected, rtol=1e-10)
    res.backward(grad_output)
    g = values(grad_output)
    close(input1.grad, np.einsum("bk,kij,bj->bi", g, values(module.weight), values(input2)), rtol=1e-10)
    close(module.weight.grad, np.einsum("bk,bi,bj->kij", g, values(input1), values(input2)), rtol=1e-10)
    assert repr(nn.Bilinear(2, 3, 4)) == "Bilinear(in1_features=2, in2_features=3, out_features=4, bias=True)"
    raises(RuntimeError, "bilinear\\(\\): input batch dimensions do not match", nn.Bilinear(2, 3, 4), T.randn(5, 2),
           T.randn(6, 3))


def test_bilinear_non_contiguous(T, nn):
    module = nn.Bilinear(7, 7, 5)
    input1 = T.randn(4, 7, 10).transpose(1, 2)
    input2 = T.randn(4, 7, 10).transpose(1, 2)
    out = module(input1, input2)
    close(out, values(module(input1.contiguous(), input2.contiguous())), rtol=1e-5, atol=1e-6)


def test_flatten_unflatten(T, nn):
    x = T.randn(2, 3, 4, 5)
    assert tuple(nn.Flatten()(x).shape) == (2, 60)
    assert tuple(nn.Flatten(0, 2)(x).shape) == (24, 5)
    assert tuple(nn.Flatten(-3, -2)(x).shape) == (2, 12, 5)
    assert tuple(nn.Unflatten(1, (3, 4))(T.randn(2, 12)).shape) == (2, 3, 4)
    assert tuple(nn.Unflatten(-1, (-1, 2))(T.randn(2, 12)).shape) == (2, 6, 2)
    assert repr(nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"
    assert repr(nn.Unflatten(1, (3, 4))) == "Unflatten(dim=1, unflattened_size=(3, 4))"
    raises(TypeError, "unflattened_size must be tuple of ints, but found element of type str at pos 1", nn.Unflatten,
           1, (2, "a"))
    raises(RuntimeError, "flatten\\(\\) has invalid args: start_dim cannot come after end_dim", nn.Flatten(2, 1),
           T.randn(2, 3, 4))
    raises(RuntimeError, r"unflatten: Provided sizes \[2, 3\] don't multiply up to the size of dim 1 \(5\)|"
           r"cannot reshape a tensor of size 10 into shape \(2, 2, 3\)", nn.Unflatten(1, (2, 3)), T.randn(2, 5))


def test_dropout(T, nn, F):
    T.manual_seed(0)
    x = T.ones(1000)
    p = 0.2
    out = F.dropout(x, p, training=True)
    v = values(out)
    assert set(np.unique(v)) <= {0.0, np.float32(1 / 0.8)}
    assert abs(v.mean() - 1) < 0.1
    same(F.dropout(x, p, training=False), np.ones(1000, np.float32))
    same(F.dropout(x, 1.0), np.zeros(1000, np.float32))
    same(F.dropout(x, 0.0), np.ones(1000, np.float32))
    m = nn.Dropout(p)
    m.eval()
    assert m(x) is x or np.array_equal(values(m(x)), values(x))
    raises(ValueError, "dropout probability has to be between 0 and 1, but got 1.5", nn.Dropout, 1.5)
    raises(ValueError, "dropout probability has to be between 0 and 1, but got -0.1", F.dropout, x, -0.1)
    assert repr(nn.Dropout(0.3, inplace=True)) == "Dropout(p=0.3, inplace=True)"
    # the gradient is the same mask, scaled
    y = T.ones(100, requires_grad=True)
    out = F.dropout(y, 0.5)
    out.sum().backward()
    same(y.grad, values(out))


def test_dropout_inplace_and_channels(T, nn, F):
    T.manual_seed(1)
    x = T.ones(4, 50, 3, 3)
    out = F.dropout2d(x, 0.5)
    v = values(out)
    per_channel = v.reshape(4, 50, 9)
    assert np.all((per_channel == 0).all(-1) | (per_channel == 2).all(-1))    # whole channels zeroed
    y = T.ones(10)
    r = F.dropout(y, 0.5, inplace=True)
    assert r is y
    x3 = T.ones(2, 6, 4)
    v = values(nn.Dropout1d(0.5)(x3))
    assert np.all((v == 0).all(-1) | (v == 2).all(-1))


def test_threshold_int_and_float(T, F, nn):
    x = T.tensor([-3, -2, -1, 0, 1, 2, 3])
    expected = [99, 99, 99, 99, 1, 2, 3]
    same(F.threshold(x, 0, 99), expected, dtype="int64")
    same(nn.Threshold(0.5, -1.0)(T.tensor([0.2, 0.5, 0.75])), [-1.0, -1.0, 0.75])


def test_hardtanh_and_relu6(T, F, nn):
    x = T.tensor([-3.0, -1.0, 0.0, 0.5, 2.0, 7.0], requires_grad=True)
    out = F.hardtanh(x, -1.0, 1.0)
    same(out, [-1.0, -1.0, 0.0, 0.5, 1.0, 1.0])
    out.sum().backward()
    same(x.grad, [0.0, 0.0, 1.0, 1.0, 0.0, 0.0])      # 0 at the kinks, as PyTorch
    same(F.relu6(T.tensor([-1.0, 3.0, 7.0])), [0.0, 3.0, 6.0])
    raises(ValueError, "min_val cannot be greater than max_val", F.hardtanh, T.randn(2), 2.0, 1.0)
    raises(AssertionError, r"max_val \(1.0\) must be greater than min_val \(2.0\)", nn.Hardtanh, 2.0, 1.0)


def test_activations_match_numpy(T, F):
    z = np.linspace(-4, 4, 17)
    x = T.tensor(z)
    from math import erf
    close(F.gelu(x), z * 0.5 * (1 + np.vectorize(erf)(z / np.sqrt(2))), rtol=1e-12, atol=1e-15)
    close(F.gelu(x, approximate="tanh"), 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3))),
          rtol=1e-12, atol=1e-15)
    close(F.elu(x, alpha=0.5), np.where(z > 0, z, 0.5 * np.expm1(z)), rtol=1e-12, atol=1e-15)
    close(F.celu(x, alpha=2.0), np.maximum(0, z) + np.minimum(0, 2 * np.expm1(z / 2)), rtol=1e-12, atol=1e-15)
    scale, alpha = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
    close(F.selu(x), scale * np.where(z > 0, z, alpha * np.expm1(z)), rtol=1e-12, atol=1e-15)
    close(F.leaky_relu(x, 0.1), np.where(z > 0, z, 0.1 * z), rtol=1e-12)
    close(F.softplus(x, beta=2.0, threshold=5.0), np.where(2 * z > 5, z, np.log1p(np.exp(2 * z)) / 2), rtol=1e-12)
    close(F.silu(x), z / (1 + np.exp(-z)), rtol=1e-12)
    close(F.mish(x), z * np.tanh(np.log1p(np.exp(z))), rtol=1e-12, atol=1e-15)
    close(F.hardswish(x), z * np.clip(z + 3, 0, 6) / 6, rtol=1e-12)
    close(F.hardsigmoid(x), np.clip(z / 6 + 0.5, 0, 1), rtol=1e-12)
    close(F.softsign(x), z / (1 + np.abs(z)), rtol=1e-12)
    close(F.tanhshrink(x), z - np.tanh(z), rtol=1e-12, atol=1e-15)
    close(F.hardshrink(x, 0.5), np.where(np.abs(z) > 0.5, z, 0), rtol=1e-12)
    close(F.softshrink(x, 0.5), np.where(z > 0.5, z - 0.5, np.where(z < -0.5, z + 0.5, 0)), rtol=1e-12)
    close(F.logsigmoid(x), -np.log1p(np.exp(-z)), rtol=1e-12)
    raises(RuntimeError, "approximate argument must be either none or tanh", F.gelu, x, approximate="garbage")


def test_glu(T, F, nn):
    x = T.tensor([[1.0, 2.0, 3.0, 4.0]])
    close(F.glu(x), [[1 / (1 + np.exp(-3)), 2 / (1 + np.exp(-4))]], rtol=1e-6)
    close(nn.GLU(0)(T.tensor([1.0, 0.0])), [0.5])
    raises(RuntimeError, "Halving dimension must be even, but dimension 1 is size 3", F.glu, T.randn(2, 3))
    raises(RuntimeError, "glu does not support scalars because halving size must be even", F.glu, T.tensor(1.0))


def test_prelu_and_rrelu(T, nn, F):
    m = nn.PReLU(3, init=0.1)
    x = T.tensor([[-1.0, -2.0, 3.0]])
    close(m(x), [[-0.1, -0.2, 3.0]])
    with T.no_grad():
        m.weight.copy_(T.tensor([0.1, 0.2, 0.3]))
    close(m(T.tensor([[-1.0, -1.0, -1.0]])), [[-0.1, -0.2, -0.3]])
    close(m(T.full((2, 3, 2), -1.0))[0, :, 0], [-0.1, -0.2, -0.3])       # channels in dim 1
    raises(RuntimeError, "Mismatch of parameter numbers and input channel size. Found parameter numbers = 3 and "
           "channel size = 4.", m, T.randn(2, 4))
    assert repr(nn.PReLU()) == "PReLU(num_parameters=1)"
    r = nn.RReLU(0.1, 0.3)
    r.eval()                                       # eval: the mean slope
    close(r(T.tensor([-1.0, 2.0])), [-0.2, 2.0], rtol=1e-6)
    r.train()
    out = values(r(T.full((1000,), -1.0)))
    assert (out <= -0.1 + 1e-6).all() and (out >= -0.3 - 1e-6).all()


def test_softmax_family(T, F, nn):
    z = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 5.0]])
    e = np.exp(z - z.max(1, keepdims=True))
    sm = e / e.sum(1, keepdims=True)
    close(F.softmax(T.tensor(z), dim=1), sm, rtol=1e-12)
    close(F.log_softmax(T.tensor(z), dim=1), np.log(sm), rtol=1e-12)
    close(nn.Softmin(dim=1)(T.tensor(z)), values(F.softmax(T.tensor(-z), dim=1)), rtol=1e-12)
    close(F.softmax(T.tensor(z), dim=0, dtype=T.float32), (np.exp(z) / np.exp(z).sum(0)).astype(np.float32),
          rtol=1e-6)
    assert str(F.softmax(T.tensor(z), dim=0, dtype=T.float32).dtype).endswith("float32")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = F.softmax(T.tensor(z))                 # implicit dim: 1 for a 2-D input
    assert any("Implicit dimension choice for softmax has been deprecated" in str(x.message) for x in w)
    close(out, sm, rtol=1e-12)
    x4 = T.randn(2, 3, 4, 5, dtype=T.float64)
    close(nn.Softmax2d()(x4), values(F.softmax(x4, dim=1)), rtol=1e-12)
    raises(ValueError, "Softmax2d: expected input (to be 3D or 4D, got 2D instead|of 3 or 4 dimensions, got 2)",
           nn.Softmax2d(), T.randn(2, 3))
    assert repr(nn.Softmax(dim=1)) == "Softmax(dim=1)"


def test_inplace_activations(T, F, nn):
    x = T.tensor([-1.0, 2.0])
    out = F.relu(x, inplace=True)
    assert out is x
    same(x, [0.0, 2.0])
    y = T.tensor([-1.0, 2.0])
    nn.LeakyReLU(0.5, inplace=True)(y)
    same(y, [-0.5, 2.0])
    z = T.tensor([-1.0, 2.0])
    F.elu_(z)
    close(z, [np.expm1(-1.0), 2.0], rtol=1e-6)
    raises(RuntimeError, "a leaf Variable that requires grad is being used in an in-place operation", F.relu,
           T.randn(2, requires_grad=True), inplace=True)
    # in place on a non-leaf: the gradient is still right
    a = T.tensor([-1.0, 2.0], requires_grad=True)
    b = a * 3
    F.relu(b, inplace=True).sum().backward()
    same(a.grad, [0.0, 3.0])


def test_one_hot(T, F):
    same(F.one_hot(T.tensor([0, 2, 1])), [[1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype="int64")
    same(F.one_hot(T.tensor([0, 2]), num_classes=4), [[1, 0, 0, 0], [0, 0, 1, 0]])
    same(F.one_hot(T.tensor([[1], [0]]), -1), [[[0, 1]], [[1, 0]]])
    assert tuple(F.one_hot(T.zeros(0, dtype=T.long), 3).shape) == (0, 3)
    raises(RuntimeError, "Class values must be smaller than num_classes.", F.one_hot, T.tensor([0, 3]), 3)
    raises(RuntimeError, "Class values must be non-negative.", F.one_hot, T.tensor([0, -1]))
    raises(RuntimeError, "one_hot is only applicable to index tensor", F.one_hot, T.tensor([0.0]))


def test_cosine_similarity_and_pairwise_distance(T, F, nn):
    a = np.array([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]])
    b = np.array([[2.0, 0.0, 1.0], [0.0, -3.0, 4.0]])
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    close(F.cosine_similarity(T.tensor(a), T.tensor(b)), cos, rtol=1e-12)
    close(nn.CosineSimilarity(dim=0)(T.tensor(a), T.tensor(b)),
          (a * b).sum(0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)), rtol=1e-12)
    # broadcasting, and eps bounding each norm from below
    close(F.cosine_similarity(T.tensor(a), T.tensor(b[:1])), (a * b[:1]).sum(1) / (np.linalg.norm(a, axis=1) *
                                                                                   np.linalg.norm(b[0])), rtol=1e-12)
    close(F.cosine_similarity(T.zeros(1, 2), T.ones(1, 2)), [0.0])
    close(F.pairwise_distance(T.tensor(a), T.tensor(b)), np.linalg.norm(a - b + 1e-6, axis=1), rtol=1e-12)
    close(F.pairwise_distance(T.tensor(a), T.tensor(b), p=1.0, keepdim=True),
          np.abs(a - b + 1e-6).sum(1, keepdims=True), rtol=1e-12)
    raises(RuntimeError, "The size of tensor a \\(2\\) must match the size of tensor b \\(4\\)", F.cosine_similarity,
           T.randn(2, 3), T.randn(4, 3))


def test_pdist_and_normalize(T, F):
    x = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    close(F.pdist(T.tensor(x)), [5.0, 10.0, 5.0], rtol=1e-12)
    close(F.pdist(T.tensor(x), p=1), [7.0, 14.0, 7.0], rtol=1e-12)
    raises(RuntimeError, "pdist only supports 2D tensors, got: 3D", F.pdist, T.randn(2, 3, 4))
    close(F.normalize(T.tensor([[3.0, 4.0]]), p=2, dim=1), [[0.6, 0.8]])
    close(F.normalize(T.tensor([[3.0, 4.0], [1.0, 1.0]]), p=1, dim=0), [[0.75, 0.8], [0.25, 0.2]])
    same(F.normalize(T.zeros(1, 2)), [[0.0, 0.0]])      # eps: no division by zero


def test_affine_grid_and_grid_sample_identity(T, F):
    theta = T.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=T.float64)
    for align in (True, False):
        grid = F.affine_grid(theta, [1, 1, 3, 4], align_corners=align)
        xs = np.linspace(-1, 1, 4) if align else (np.arange(4) * 2 + 1) / 4 - 1
        ys = np.linspace(-1, 1, 3) if align else (np.arange(3) * 2 + 1) / 3 - 1
        close(grid[0, :, :, 0], np.broadcast_to(xs, (3, 4)), rtol=1e-12, atol=1e-15)
        close(grid[0, :, :, 1], np.broadcast_to(ys[:, None], (3, 4)), rtol=1e-12, atol=1e-15)
        img = T.randn(1, 2, 3, 4, dtype=T.float64)
        for mode in ("bilinear", "nearest", "bicubic"):
            close(F.grid_sample(img, grid, mode=mode, align_corners=align), values(img), rtol=1e-10, atol=1e-12)


def test_grid_sample_padding_modes(T, F):
    img = T.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=T.float64)
    grid = T.tensor([[[[-3.0, -1.0], [1.0, 1.0]]]], dtype=T.float64)      # one point far off the left edge
    same(F.grid_sample(img, grid, padding_mode="zeros", align_corners=True), [[[[0.0, 4.0]]]])
    same(F.grid_sample(img, grid, padding_mode="border", align_corners=True), [[[[1.0, 4.0]]]])
    # x = -3 reflects about the edge x = -1 to x = 1: the right column
    same(F.grid_sample(img, grid, padding_mode="reflection", align_corners=True), [[[[2.0, 4.0]]]])


def test_affine_grid_and_grid_sample_errors(T, F):
    raises(ValueError, r"Expected a batch of 2D affine matrices of shape Nx2x3 for size \[1, 1, 2, 2\]. Got",
           F.affine_grid, T.randn(1, 3, 3), [1, 1, 2, 2], align_corners=False)
    raises(NotImplementedError, r"affine_grid only supports 4D and 5D sizes, for 2D and 3D affine transforms, "
           r"respectively. Got size \[1, 1, 2\].", F.affine_grid, T.randn(1, 2, 3), [1, 1, 2], align_corners=False)
    raises(ValueError, "expected mode to be 'bilinear', 'nearest' or 'bicubic', but got: 'garbage'", F.grid_sample,
           T.randn(1, 1, 2, 2), T.randn(1, 2, 2, 2), mode="garbage", align_corners=False)
    raises(ValueError, "expected padding_mode to be 'zeros', 'border', or 'reflection', but got: 'garbage'",
           F.grid_sample, T.randn(1, 1, 2, 2), T.randn(1, 2, 2, 2), padding_mode="garbage", align_corners=False)


def test_channel_shuffle(T, nn, F):
    x = T.arange(6.0).reshape(1, 6, 1, 1)
    same(nn.ChannelShuffle(2)(x).flatten(), [0.0, 3, 1, 4, 2, 5])
    same(F.channel_shuffle(x, 3).flatten(), [0.0, 2, 4, 1, 3, 5])
    raises(RuntimeError, "Number of channels must be divisible by groups. Got 4 channels and 3 groups.",
           nn.ChannelShuffle(3), T.randn(1, 4, 2, 2))


@pytest.mark.parametrize("name", ["ReLU", "Tanh", "Sigmoid", "GELU", "SiLU", "ELU", "Softplus", "Mish",
                                  "Hardswish", "LeakyReLU"])
def test_activation_modules_match_functional(T, nn, F, name):
    x = T.linspace(-3, 3, 13, dtype=T.float64)
    fn = {"ReLU": F.relu, "Tanh": T.tanh, "Sigmoid": T.sigmoid, "GELU": F.gelu, "SiLU": F.silu, "ELU": F.elu,
          "Softplus": F.softplus, "Mish": F.mish, "Hardswish": F.hardswish, "LeakyReLU": F.leaky_relu}[name]
    same(getattr(nn, name)()(x), values(fn(x)))


def test_softmax_of_integers_is_refused(T, F, request):
    raises(NotImplementedError, "not implemented for 'Long'", F.softmax, T.tensor([1, 2]), 0)
    raises(NotImplementedError, "not implemented for 'Long'", F.log_softmax, T.tensor([1, 2]), 0)


@pytest.mark.parametrize("name, slope, expected", [("elu_", -2.0, [-2 * np.exp(-1.0), 1.0]),
                                                   ("leaky_relu_", -2.0, [-2.0, 1.0]),
                                                   ("leaky_relu_", 0.0, [0.0, 1.0])])
def test_inplace_activation_with_negative_slope(T, F, name, slope, expected):
    a = T.tensor([-1.0, 1.0], requires_grad=True)
    b = a * 1
    out = getattr(F, name)(b, slope)
    assert out is b
    if slope < 0 and not ported_nn.on_chainrule(T):
        # PyTorch's in-place backward reads the output, which a negative slope does not determine
        raises(RuntimeError, "backward calculation is triggered with a negative slope which is not supported",
               out.sum().backward)
        return
    out.sum().backward()       # chainrule differentiates the in-place form from a copy of its input
    close(a.grad, expected, rtol=1e-6)


def test_cosine_similarity_precision_and_zero_vectors(T, F):
    vv1 = T.tensor([float(i) for i in range(84)]).unsqueeze(0)
    assert float(F.cosine_similarity(vv1, vv1.clone())) <= 1.0 + 2e-7
    T.manual_seed(0)
    i1 = T.randn(10, dtype=T.float64).requires_grad_()
    i2 = T.zeros_like(i1).requires_grad_()
    T.cosine_similarity(i1, i2, 0).sum().backward()
    same(i1.grad, np.zeros(10))
    close(i2.grad, values(i1) / np.linalg.norm(values(i1)) * 1e8, rtol=1e-10)
    assert tuple(F.cosine_similarity(T.randn(1, 2, 3), T.randn(2, 1, 3), dim=-1).shape) == (2, 2)
    assert tuple(F.cosine_similarity(T.randn(4), T.randn(4), dim=0).shape) == ()


def test_affine_grid_3d_and_normalize_at_zero(T, F):
    th = T.tensor([[[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]])
    g = F.affine_grid(th, [1, 1, 2, 2, 2], align_corners=True)
    assert tuple(g.shape) == (1, 2, 2, 2, 3)
    same(g[0, 1, 0, 1], [1.0, -1.0, 1.0])               # (x, y, z) of depth 1, row 0, column 1
    x = T.zeros(1, 2, requires_grad=True)
    F.normalize(x).sum().backward()
    close(x.grad, [[1e12, 1e12]], rtol=1e-6)             # 1 / eps, where the norm is clamped
