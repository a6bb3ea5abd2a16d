# ruff: noqa: E501, UP008  (the programs are kept as their authors wrote them)
"""Paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them (labml_nn/...), run
as tests/probe21_papers_common.py says: activations and normalisation: fuzzy tiling activation, Swish;
batch/layer/instance/group norm by hand against ``nn``'s, batch-channel norm, weight standardisation
(``torch.var_mean``) in an ``nn.Conv2d`` subclass; DeepNorm."""

import copy
import math

import numpy as np

from .probe21_papers_common import labml_transformers, train_few
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# labml_nn/activations: fuzzy tiling activation and Swish
# ----------------------------------------------------------------------------------------------


def fta_program(m):
    torch, nn = m.torch, m.nn

    class FTA(nn.Module):
        def __init__(self, lower_limit, upper_limit, delta, eta):
            super().__init__()
            self.c = nn.Parameter(torch.arange(lower_limit, upper_limit, delta), requires_grad=False)
            self.expansion_factor = len(self.c)
            self.delta = delta
            self.eta = eta

        def fuzzy_i_plus(self, x):
            return (x <= self.eta) * x + (x > self.eta)

        def forward(self, z):
            z = z.view(*z.shape, 1)
            z = 1. - self.fuzzy_i_plus(torch.clip(self.c - z, min=0.) + torch.clip(z - self.delta - self.c, min=0.))
            return z.view(*z.shape[:-2], -1)

    class Swish(nn.Module):
        def __init__(self):
            super().__init__()
            self.sigmoid = nn.Sigmoid()

        def forward(self, x):
            return x * self.sigmoid(x)

    a = FTA(-10, 10, 2., 0.5)
    z = torch.tensor([1.1, 2.2, 3.3, 4.4, 5.5, 6.6, 7.7, 8.8, 9., 10., 11.])
    tiled = a(z)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fta = FTA(-1., 1., 0.2, 0.2)
            self.linear1 = nn.Linear(4, 6)
            self.linear2 = nn.Linear(6 * self.fta.expansion_factor, 3)
            self.swish = Swish()

        def forward(self, x):
            return self.linear2(self.swish(self.fta(torch.tanh(self.linear1(x)))))

    torch.manual_seed(0)
    model = Model()
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.standard_normal((32, 4)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 3, 32))
    optimizer = m.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = m.F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    names = [n for n, _ in model.named_parameters()]
    return {"c": a.c, "expansion": a.expansion_factor, "tiled": tiled, "losses": losses, "names": names,
            "c_grad": model.fta.c.grad is None, "w": model.linear1.weight, "float32": tiled.dtype == torch.float32}


def test_fuzzy_tiling_activation():
    ours, _ = run_both(fta_program, rtol=1e-5, atol=1e-6)
    assert ours["expansion"] == 10 and ours["c_grad"] and ours["float32"]
    # by hand: 1 - I+(max(0, c - z) + max(0, z - delta - c)), eta = 0.5
    c = np.arange(-10, 10, 2.0)
    z = np.array([1.1, 2.2, 3.3, 4.4, 5.5, 6.6, 7.7, 8.8, 9., 10., 11.])[:, None]
    d = np.maximum(c - z, 0) + np.maximum(z - 2.0 - c, 0)
    np.testing.assert_allclose(ours["tiled"], (1 - np.where(d <= 0.5, d, 1.0)).reshape(-1), rtol=1e-6, atol=1e-6)
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# labml_nn/normalization: batch, layer, instance, group, batch-channel norm and weight standardisation
# ----------------------------------------------------------------------------------------------


def normalization_program(m):
    torch, nn, F = m.torch, m.nn, m.F

    class BatchNorm(nn.Module):
        def __init__(self, channels, *, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
            super().__init__()
            self.channels = channels
            self.eps = eps
            self.momentum = momentum
            self.affine = affine
            self.track_running_stats = track_running_stats
            if self.affine:
                self.scale = nn.Parameter(torch.ones(channels))
                self.shift = nn.Parameter(torch.zeros(channels))
            if self.track_running_stats:
                self.register_buffer('exp_mean', torch.zeros(channels))
                self.register_buffer('exp_var', torch.ones(channels))

        def forward(self, x):
            x_shape = x.shape
            batch_size = x_shape[0]
            assert self.channels == x.shape[1]
            x = x.view(batch_size, self.channels, -1)
            if self.training or not self.track_running_stats:
                mean = x.mean(dim=[0, 2])
                mean_x2 = (x ** 2).mean(dim=[0, 2])
                var = mean_x2 - mean ** 2
                if self.training and self.track_running_stats:
                    self.exp_mean = (1 - self.momentum) * self.exp_mean + self.momentum * mean
                    self.exp_var = (1 - self.momentum) * self.exp_var + self.momentum * var
            else:
                mean = self.exp_mean
                var = self.exp_var
            x_norm = (x - mean.view(1, -1, 1)) / torch.sqrt(var + self.eps).view(1, -1, 1)
            if self.affine:
                x_norm = self.scale.view(1, -1, 1) * x_norm + self.shift.view(1, -1, 1)
            return x_norm.view(x_shape)

    class LayerNorm(nn.Module):
        def __init__(self, normalized_shape, *, eps=1e-5, elementwise_affine=True):
            super().__init__()
            if isinstance(normalized_shape, int):
                normalized_shape = torch.Size([normalized_shape])
            elif isinstance(normalized_shape, list):
                normalized_shape = torch.Size(normalized_shape)
            assert isinstance(normalized_shape, torch.Size)
            self.normalized_shape = normalized_shape
            self.eps = eps
            self.elementwise_affine = elementwise_affine
            if self.elementwise_affine:
                self.gain = nn.Parameter(torch.ones(normalized_shape))
                self.bias = nn.Parameter(torch.zeros(normalized_shape))

        def forward(self, x):
            assert self.normalized_shape == x.shape[-len(self.normalized_shape):]
            dims = [-(i + 1) for i in range(len(self.normalized_shape))]
            mean = x.mean(dim=dims, keepdim=True)
            mean_x2 = (x ** 2).mean(dim=dims, keepdim=True)
            var = mean_x2 - mean ** 2
            x_norm = (x - mean) / torch.sqrt(var + self.eps)
            if self.elementwise_affine:
                x_norm = self.gain * x_norm + self.bias
            return x_norm

    class InstanceNorm(nn.Module):
        def __init__(self, channels, *, eps=1e-5, affine=True):
            super().__init__()
            self.channels = channels
            self.eps = eps
            self.affine = affine
            if self.affine:
                self.scale = nn.Parameter(torch.ones(channels))
                self.shift = nn.Parameter(torch.zeros(channels))

        def forward(self, x):
            x_shape = x.shape
            batch_size = x_shape[0]
            assert self.channels == x.shape[1]
            x = x.view(batch_size, self.channels, -1)
            mean = x.mean(dim=[-1], keepdim=True)
            mean_x2 = (x ** 2).mean(dim=[-1], keepdim=True)
            var = mean_x2 - mean ** 2
            x_norm = (x - mean) / torch.sqrt(var + self.eps)
            x_norm = x_norm.view(batch_size, self.channels, -1)
            if self.affine:
                x_norm = self.scale.view(1, -1, 1) * x_norm + self.shift.view(1, -1, 1)
            return x_norm.view(x_shape)

    class GroupNorm(nn.Module):
        def __init__(self, groups, channels, *, eps=1e-5, affine=True):
            super().__init__()
            assert channels % groups == 0, "Number of channels should be evenly divisible by the number of groups"
            self.groups = groups
            self.channels = channels
            self.eps = eps
            self.affine = affine
            if self.affine:
                self.scale = nn.Parameter(torch.ones(channels))
                self.shift = nn.Parameter(torch.zeros(channels))

        def forward(self, x):
            x_shape = x.shape
            batch_size = x_shape[0]
            assert self.channels == x.shape[1]
            x = x.view(batch_size, self.groups, -1)
            mean = x.mean(dim=[-1], keepdim=True)
            mean_x2 = (x ** 2).mean(dim=[-1], keepdim=True)
            var = mean_x2 - mean ** 2
            x_norm = (x - mean) / torch.sqrt(var + self.eps)
            if self.affine:
                x_norm = x_norm.view(batch_size, self.channels, -1)
                x_norm = self.scale.view(1, -1, 1) * x_norm + self.shift.view(1, -1, 1)
            return x_norm.view(x_shape)

    class EstimatedBatchNorm(nn.Module):
        def __init__(self, channels, eps=1e-5, momentum=0.1, affine=True):
            super().__init__()
            self.eps = eps
            self.momentum = momentum
            self.affine = affine
            self.channels = channels
            if self.affine:
                self.scale = nn.Parameter(torch.ones(channels))
                self.shift = nn.Parameter(torch.zeros(channels))
            self.register_buffer('exp_mean', torch.zeros(channels))
            self.register_buffer('exp_var', torch.ones(channels))

        def forward(self, x):
            x_shape = x.shape
            batch_size = x_shape[0]
            assert self.channels == x.shape[1]
            x = x.view(batch_size, self.channels, -1)
            if self.training:
                with torch.no_grad():
                    mean = x.mean(dim=[0, 2])
                    mean_x2 = (x ** 2).mean(dim=[0, 2])
                    var = mean_x2 - mean ** 2
                    self.exp_mean = (1 - self.momentum) * self.exp_mean + self.momentum * mean
                    self.exp_var = (1 - self.momentum) * self.exp_var + self.momentum * var
            x_norm = (x - self.exp_mean.view(1, -1, 1)) / torch.sqrt(self.exp_var + self.eps).view(1, -1, 1)
            if self.affine:
                x_norm = self.scale.view(1, -1, 1) * x_norm + self.shift.view(1, -1, 1)
            return x_norm.view(x_shape)

    class ChannelNorm(nn.Module):
        def __init__(self, channels, groups, eps=1e-5, affine=True):
            super().__init__()
            self.channels = channels
            self.groups = groups
            self.eps = eps
            self.affine = affine
            if self.affine:
                self.scale = nn.Parameter(torch.ones(groups))
                self.shift = nn.Parameter(torch.zeros(groups))

        def forward(self, x):
            x_shape = x.shape
            batch_size = x_shape[0]
            assert self.channels == x.shape[1]
            x = x.view(batch_size, self.groups, -1)
            mean = x.mean(dim=[-1], keepdim=True)
            mean_x2 = (x ** 2).mean(dim=[-1], keepdim=True)
            var = mean_x2 - mean ** 2
            x_norm = (x - mean) / torch.sqrt(var + self.eps)
            if self.affine:
                x_norm = self.scale.view(1, -1, 1) * x_norm + self.shift.view(1, -1, 1)
            return x_norm.view(x_shape)

    class BatchChannelNorm(nn.Module):
        def __init__(self, channels, groups, eps=1e-5, momentum=0.1, estimate=True):
            super().__init__()
            if estimate:
                self.batch_norm = EstimatedBatchNorm(channels, eps=eps, momentum=momentum)
            else:
                self.batch_norm = BatchNorm(channels, eps=eps, momentum=momentum)
            self.channel_norm = ChannelNorm(channels, groups, eps)

        def forward(self, x):
            x = self.batch_norm(x)
            return self.channel_norm(x)

    def weight_standardization(weight, eps):
        c_out, c_in, *kernel_shape = weight.shape
        weight = weight.view(c_out, -1)
        var, mean = torch.var_mean(weight, dim=1, keepdim=True)
        weight = (weight - mean) / (torch.sqrt(var + eps))
        return weight.view(c_out, c_in, *kernel_shape)

    class Conv2d(nn.Conv2d):
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                     bias=True, padding_mode='zeros', eps=1e-5):
            super(Conv2d, self).__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                         dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode)
            self.eps = eps

        def forward(self, x):
            return F.conv2d(x, weight_standardization(self.weight, self.eps), self.bias, self.stride,
                            self.padding, self.dilation, self.groups)

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((4, 6, 5, 5)) * 2 + 1)
    out = {}
    # each by hand against nn's layer of the same kind, forward and the input's gradient
    pairs = {
        "batch": (BatchNorm(6), nn.BatchNorm2d(6)),
        "layer": (LayerNorm(x.shape[2:]), nn.LayerNorm([5, 5])),
        "instance": (InstanceNorm(6), nn.InstanceNorm2d(6, affine=True)),
        "group": (GroupNorm(2, 6), nn.GroupNorm(2, 6)),
    }
    for name, (ours_layer, reference) in pairs.items():
        ours_layer.double(), reference.double()
        with torch.no_grad():
            for p in ours_layer.parameters():
                p.copy_(torch.linspace(0.5, 1.5, p.numel(), dtype=torch.float64).view(p.shape))
            for p in reference.parameters():
                p.copy_(torch.linspace(0.5, 1.5, p.numel(), dtype=torch.float64).view(p.shape))
        xs = x.clone().requires_grad_()
        y = ours_layer(xs)
        (y * torch.arange(y.numel(), dtype=torch.float64).view(y.shape).sin()).sum().backward()
        xr = x.clone().requires_grad_()
        yr = reference(xr)
        (yr * torch.arange(yr.numel(), dtype=torch.float64).view(yr.shape).sin()).sum().backward()
        out[name] = [y, xs.grad, yr, xr.grad, [p.grad for p in ours_layer.parameters()]]
    bn = pairs["batch"][0]
    out["buffers"] = [bn.exp_mean, bn.exp_var, pairs["batch"][1].running_mean, sorted(bn.state_dict()),
                      bn.exp_mean.requires_grad, isinstance(bn._buffers["exp_mean"], torch.Tensor)]
    bn.eval()
    out["batch_eval"] = bn(x)

    # a small CNN with weight-standardised convolutions and batch-channel norm, trained a few steps
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = Conv2d(1, 8, 3, padding=1)
            self.norm1 = BatchChannelNorm(8, 4)
            self.conv2 = Conv2d(8, 8, 3, stride=2, bias=False)
            self.norm2 = BatchChannelNorm(8, 2, estimate=False)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            x = F.relu(self.norm1(self.conv1(x)))
            x = F.relu(self.norm2(self.conv2(x)))
            return self.fc(x.mean(dim=[2, 3]))

    torch.manual_seed(0)
    net = Net().double()
    images = torch.tensor(rng.standard_normal((8, 1, 7, 7)))
    labels = torch.tensor(rng.integers(0, 3, 8))
    optimizer = m.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = F.cross_entropy(net(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    net.eval()
    with torch.no_grad():
        logits = net(images)
    standardized = weight_standardization(net.conv1.weight, 1e-5)
    return {**out, "losses": losses, "logits": logits, "exp_var": net.norm1.batch_norm.exp_var,
            "ws_mean": standardized.mean(dim=[1, 2, 3]), "ws_var": standardized.var(dim=[1, 2, 3]),
            "state": sorted(net.state_dict())}


def test_normalization_by_hand():
    ours, _ = run_both(normalization_program, rtol=1e-9, atol=1e-10)
    for name in ("batch", "layer", "instance", "group"):
        y, gx, yr, gxr, _ = ours[name]
        np.testing.assert_allclose(y, yr, rtol=1e-8, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(gx, gxr, rtol=1e-7, atol=1e-8, err_msg=name)
    exp_mean, exp_var, running_mean, keys, requires_grad, is_tensor = ours["buffers"]
    np.testing.assert_allclose(exp_mean, running_mean, rtol=1e-10)
    assert keys == ["exp_mean", "exp_var", "scale", "shift"] and requires_grad and is_tensor
    assert ours["losses"][-1] < ours["losses"][0]
    np.testing.assert_allclose(ours["ws_mean"], 0, atol=1e-12)
    np.testing.assert_allclose(ours["ws_var"], 1, rtol=1e-3)  # eps 1e-5 in the denominator
    assert "norm2.batch_norm.exp_mean" in ours["state"]


# ----------------------------------------------------------------------------------------------
# labml_nn/normalization/deep_norm: DeepNorm transformer layers
# ----------------------------------------------------------------------------------------------


def make_deep_norm(m):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)

    class LayerNorm(nn.Module):  # labml's own, over a list of dimensions
        def __init__(self, normalized_shape, *, eps=1e-5, elementwise_affine=True):
            super().__init__()
            self.normalized_shape = torch.Size(normalized_shape)
            self.eps = eps
            self.gain = nn.Parameter(torch.ones(normalized_shape))
            self.bias = nn.Parameter(torch.zeros(normalized_shape))

        def forward(self, x):
            dims = [-(i + 1) for i in range(len(self.normalized_shape))]
            mean = x.mean(dim=dims, keepdim=True)
            mean_x2 = (x ** 2).mean(dim=dims, keepdim=True)
            var = mean_x2 - mean ** 2
            return self.gain * (x - mean) / torch.sqrt(var + self.eps) + self.bias

    class DeepNorm(nn.Module):
        def __init__(self, alpha, normalized_shape, *, eps=1e-5, elementwise_affine=True):
            super().__init__()
            self.alpha = alpha
            self.layer_norm = LayerNorm(normalized_shape, eps=eps, elementwise_affine=elementwise_affine)

        def forward(self, x, gx):
            return self.layer_norm(x + self.alpha * gx)

    class DeepNormTransformerLayer(nn.Module):
        def __init__(self, *, d_model, self_attn, feed_forward, deep_norm_alpha, deep_norm_beta):
            super().__init__()
            self.self_attn = self_attn
            self.feed_forward = feed_forward
            self.self_attn_norm = DeepNorm(deep_norm_alpha, [d_model])
            self.feed_forward_norm = DeepNorm(deep_norm_alpha, [d_model])
            with torch.no_grad():
                feed_forward.layer1.weight *= deep_norm_beta
                feed_forward.layer2.weight *= deep_norm_beta
                self_attn.value.linear.weight *= deep_norm_beta
                self_attn.output.weight *= deep_norm_beta
            self.mask = None

        def forward(self, x):
            if self.mask is None or self.mask.size(0) != len(x):
                self.mask = t.subsequent_mask(len(x)).to(x.device)
            x = self.self_attn_norm(x, self.self_attn(query=x, key=x, value=x, mask=self.mask))
            x = self.feed_forward_norm(x, self.feed_forward(x))
            return x

    class AutoregressiveTransformer(nn.Module):
        def __init__(self, n_tokens, d_model, n_layers, layer):
            super().__init__()
            self.transformer = nn.Sequential(*[copy.deepcopy(layer) for _ in range(n_layers)])
            self.emb = nn.Embedding(n_tokens, d_model)
            self.readout = nn.Linear(d_model, n_tokens)

        def forward(self, x):
            x = self.emb(x)
            x = self.transformer(x)
            x = self.readout(x)
            return x, None

    n_layers, d_model = 4, 16
    deep_norm_alpha = (2. * n_layers) ** (1. / 4.)
    deep_norm_beta = (8. * n_layers) ** -(1. / 4.)
    layer = DeepNormTransformerLayer(d_model=d_model, deep_norm_alpha=deep_norm_alpha, deep_norm_beta=deep_norm_beta,
                                     feed_forward=t.FeedForward(d_model=d_model, d_ff=32, dropout=0.),
                                     self_attn=t.MultiHeadAttention(4, d_model, dropout_prob=0.))
    return AutoregressiveTransformer(11, d_model, n_layers, layer).double()


def deep_norm_program(m, weights):
    torch = m.torch
    model = make_deep_norm(m)
    model = load(m, model, weights)
    rng = np.random.default_rng(0)
    tokens = torch.tensor(rng.integers(0, 11, (9, 2)))
    target = torch.tensor(rng.integers(0, 11, (9, 2)))

    def loss_fn(model, x, y):
        out, _ = model(x)
        return m.F.cross_entropy(out.view(-1, out.shape[-1]), y.view(-1))

    losses, grads = train_few(m, model, (tokens, target), loss_fn, steps=4)
    attn = model.transformer[1].self_attn.attn
    return {"losses": losses, "grads": grads, "attn": attn,
            "mask": model.transformer[0].mask[:, :, 0]}


def test_deep_norm_transformer():
    weights = weights_of(make_deep_norm)
    fresh = make_deep_norm(OURS)
    ours, _ = run_both(deep_norm_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    # causal: the attention of position i over j > i is zero, and each row sums to one over keys (dim=1)
    attn = ours["attn"]
    assert attn.shape == (9, 9, 2, 4)
    assert np.all(attn[np.triu_indices(9, 1)] == 0)
    np.testing.assert_allclose(attn.sum(1), 1, rtol=1e-12)
    np.testing.assert_array_equal(ours["mask"], np.tril(np.ones((9, 9), bool)))
    # the in-place scaling under no_grad: beta times Linear's initialisation bound
    beta = 32 ** -0.25
    assert np.abs(fresh.transformer[0].feed_forward.layer1.weight.detach().numpy()).max() <= beta / math.sqrt(16) + 1e-12
    assert fresh.transformer[0].feed_forward.layer1.weight.requires_grad
