# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs (see tests/pytorch_programs.py), each run unchanged but for its imports on chainrule and on
PyTorch from the same weights, comparing losses, parameters and gradients. Layers as tutorials and libraries write
them: the spatial transformer tutorial (a localisation net, ``affine_grid``, ``grid_sample``); a sparse mixture of
experts (top-k gating with noise, dispatch by index, a load-balancing loss); the parametrizations tutorial's caching
(a constrained recurrent kernel computed once per forward); third-party layers as timm and others write them (``from
torch.nn.modules.utils import _pair``, TF-"SAME" padding, a locally connected layer by unfold, attention pinned to
the math kernel)."""

import math

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of
from .test_programs_probe4_sequence import comparable

# ----------------------------------------------------------------------------------------------
# The spatial transformer tutorial: a localisation net, affine_grid, grid_sample
# ----------------------------------------------------------------------------------------------


def stn_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, kernel_size=3)
            self.fc1 = nn.Linear(4 * 3 * 3, 3)
            self.localization = nn.Sequential(nn.Conv2d(1, 4, kernel_size=3), nn.MaxPool2d(2, stride=2), nn.ReLU(True))
            self.fc_loc = nn.Sequential(nn.Linear(4 * 3 * 3, 8), nn.ReLU(True), nn.Linear(8, 3 * 2))
            self.fc_loc[2].weight.data.zero_()
            # the tutorial starts from the identity, whose grid points fall on pixel centres: the kinks of
            # bilinear sampling, where the gradient in the grid is one-sided by each library's rounding of
            # the base grid (PyTorch's own is off the centres by an ulp at most sizes). A slight shift
            # keeps the points off the kinks.
            self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0.03, 0, 1, -0.02], dtype=torch.float))

        def stn(self, x, align_corners, mode, padding_mode):
            xs = self.localization(x)
            xs = xs.view(-1, 4 * 3 * 3)
            theta = self.fc_loc(xs)
            theta = theta.view(-1, 2, 3)
            grid = F.affine_grid(theta, x.size(), align_corners=align_corners)
            return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)

        def forward(self, x, align_corners=False, mode="bilinear", padding_mode="zeros"):
            x = self.stn(x, align_corners, mode, padding_mode)
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = x.view(-1, 4 * 3 * 3)
            return F.log_softmax(self.fc1(x), dim=1)

    return Net()


def spatial_transformer(m, weights, steps=4, dtype="float32", **kwargs):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, stn_net(m), weights).to(getattr(torch, dtype))
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    rng = np.random.default_rng(12)
    data = torch.tensor(rng.standard_normal((5, 1, 8, 8)).astype(dtype))
    target = torch.tensor(rng.integers(0, 3, 5))
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        output = model(data, **kwargs)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        warped = model.stn(data, kwargs.get("align_corners", False), kwargs.get("mode", "bilinear"),
                           kwargs.get("padding_mode", "zeros"))
    # float32 grids one rounding apart sample the image (W/2)·|∇image| ≈ 10x further apart: the warped
    # images are compared in float64 (1e-15 apart), the training in float32 too
    return losses, [p.detach() for p in model.parameters()], [p.grad for p in model.parameters()], (
        warped if dtype == "float64" else None)


def test_spatial_transformer_network():
    weights = weights_of(stn_net)
    run_both(spatial_transformer, weights, rtol=1e-5, atol=1e-6)
    ours, _ = run_both(spatial_transformer, weights, dtype="float64", rtol=1e-10, atol=1e-12)
    losses, params, grads, warped = ours
    assert np.abs(grads[-1]).max() > 0 and warped.shape == (5, 1, 8, 8)  # theta's bias learns through grid_sample
    for kwargs in (dict(align_corners=True, padding_mode="border"), dict(padding_mode="reflection"),
                   dict(mode="nearest", align_corners=True), dict(mode="bicubic")):
        run_both(spatial_transformer, weights, dtype="float64", rtol=1e-10, atol=1e-12, **kwargs)


# ----------------------------------------------------------------------------------------------
# A sparse mixture of experts: top-k gating with noise, dispatch by index, load-balancing loss
# ----------------------------------------------------------------------------------------------


def moe_net(m):
    nn = m.nn

    class MoE(nn.Module):
        def __init__(self, d=6, num_experts=4, k=2):
            super().__init__()
            self.k, self.num_experts = k, num_experts
            self.gate = nn.Linear(d, num_experts, bias=False)
            self.noise = nn.Linear(d, num_experts, bias=False)
            self.experts = nn.ModuleList([nn.Sequential(nn.Linear(d, 8), nn.GELU(approximate="tanh"), nn.Linear(8, d))
                                          for _ in range(num_experts)])

    return MoE()


def moe(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, moe_net(m), weights)

    def forward(x, eps):
        clean = model.gate(x)
        noisy = clean + eps * F.softplus(model.noise(x))
        top_logits, top_indices = noisy.topk(min(model.k + 1, model.num_experts), dim=1)
        top_k_logits, top_k_indices = top_logits[:, :model.k], top_indices[:, :model.k]
        top_k_gates = F.softmax(top_k_logits, dim=1)
        zeros = torch.zeros_like(noisy, requires_grad=True)
        gates = zeros.scatter(1, top_k_indices, top_k_gates)
        out = torch.zeros_like(x)
        for e, expert in enumerate(model.experts):
            token_idx, slot = torch.where(top_k_indices == e)
            if token_idx.numel() == 0:
                continue
            y = expert(x[token_idx]) * top_k_gates[token_idx, slot].unsqueeze(-1)
            out.index_add_(0, token_idx, y)
        importance = gates.sum(0)
        load = (gates > 0).sum(0).float()
        cv_squared = lambda v: v.float().var() / (v.float().mean() ** 2 + 1e-10)
        # Switch-style auxiliary loss: fraction of tokens per expert times mean router probability
        probs = F.softmax(clean, dim=-1)
        tokens_per_expert = F.one_hot(top_k_indices[:, 0], model.num_experts).float().mean(0)
        aux = model.num_experts * (tokens_per_expert * probs.mean(0)).sum()
        return out, cv_squared(importance) + cv_squared(load), aux, top_k_indices

    optimizer = optim.AdamW(model.parameters(), lr=5e-3)
    rng = np.random.default_rng(17)
    x = torch.tensor(rng.standard_normal((10, 6)).astype(np.float32))
    target = torch.tensor(rng.standard_normal((10, 6)).astype(np.float32))
    log = []
    for step in range(steps):
        eps = torch.tensor(rng.standard_normal((10, 4)).astype(np.float32))
        out, balance, aux, indices = forward(x, eps)
        loss = F.mse_loss(out, target) + 0.01 * balance + 0.01 * aux
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append((loss.item(), balance.item(), aux.item()))
    return log, [p.detach() for p in model.parameters()], [p.grad for p in model.parameters()], indices


def test_mixture_of_experts_top_k_routing():
    weights = weights_of(moe_net)
    ours, _ = run_both(moe, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, indices = ours
    assert indices.shape == (10, 2) and np.abs(grads[0]).max() > 0 and np.abs(grads[1]).max() > 0


# ----------------------------------------------------------------------------------------------
# The parametrizations tutorial's caching: a constrained recurrent kernel computed once per forward
# ----------------------------------------------------------------------------------------------


def cached_rnn_net(m):
    nn = m.nn
    return nn.ModuleDict({"cell": nn.RNNCell(3, 4), "head": nn.Linear(4, 2)})


def cached_rnn(m, weights, steps=3, use_cache=True):
    import contextlib

    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    parametrize = nn.utils.parametrize
    net = load(m, cached_rnn_net(m), weights)

    class Skew(nn.Module):
        calls = 0

        def forward(self, X):
            Skew.calls += 1
            A = X.triu(1)
            return A - A.transpose(-1, -2)

    class MatrixExponential(nn.Module):
        def forward(self, X):
            return torch.matrix_exp(X)

    parametrize.register_parametrization(net["cell"], "weight_hh", Skew())
    parametrize.register_parametrization(net["cell"], "weight_hh", MatrixExponential())
    optimizer = optim.Adam(net.parameters(), lr=1e-2)
    rng = np.random.default_rng(19)
    xs = torch.tensor(rng.standard_normal((6, 5, 3)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 2, 5))
    log = []
    for step in range(steps):
        optimizer.zero_grad()
        Skew.calls = 0
        with parametrize.cached() if use_cache else contextlib.nullcontext():
            h = torch.zeros(5, 4)
            for x in xs:
                h = net["cell"](x, h)
            loss = F.cross_entropy(net["head"](h), y)
        loss.backward()
        optimizer.step()
        log.append((loss.item(), Skew.calls))
    W = net["cell"].weight_hh.detach()
    orthogonal = bool(torch.allclose(W @ W.T, torch.eye(4), atol=1e-5))
    return log, [p.detach() for p in net.parameters()], [p.grad for p in net.parameters()], orthogonal


def test_parametrize_cached_recurrent_kernel():
    weights = weights_of(cached_rnn_net)
    ours, _ = run_both(cached_rnn, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, orthogonal = ours
    assert [calls for _, calls in log] == [1, 1, 1] and orthogonal  # once per forward, not per time step
    uncached = cached_rnn(OURS, weights, use_cache=False)
    assert [calls for _, calls in uncached[0]] == [6, 6, 6]
    for a, b in zip(grads, uncached[2]):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Third-party layers as timm and others write them: ``from torch.nn.modules.utils import _pair``,
# TF-"SAME" padding, a locally connected layer by unfold, and attention pinned to the math kernel
# ----------------------------------------------------------------------------------------------


def third_party_net(m):
    torch, nn, F = m.torch, m.nn, m.F
    _pair = nn.modules.utils._pair
    _reverse_repeat_tuple = nn.modules.utils._reverse_repeat_tuple

    def get_same_padding(x, k, s, d):
        return max((math.ceil(x / s) - 1) * s + (k - 1) * d + 1 - x, 0)

    def pad_same(x, k, s, d, value=0):
        ih, iw = x.size()[-2:]
        pad_h, pad_w = get_same_padding(ih, k[0], s[0], d[0]), get_same_padding(iw, k[1], s[1], d[1])
        return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=value)

    class Conv2dSame(nn.Conv2d):
        """timm's Tensorflow-like 'SAME' convolution for a dynamic image size."""

        def forward(self, x):
            x = pad_same(x, self.kernel_size, self.stride, self.dilation)
            return F.conv2d(x, self.weight, self.bias, self.stride, (0, 0), self.dilation, self.groups)

    class LocallyConnected2d(nn.Module):
        def __init__(self, in_channels, out_channels, output_size, kernel_size, stride, bias=True):
            super().__init__()
            output_size = _pair(output_size)
            self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, output_size[0], output_size[1],
                                                   kernel_size ** 2) * 0.1)
            self.bias = nn.Parameter(torch.zeros(1, out_channels, output_size[0], output_size[1])) if bias else None
            self.kernel_size = _pair(kernel_size)
            self.stride = _pair(stride)

        def forward(self, x):
            kh, kw = self.kernel_size
            dh, dw = self.stride
            x = x.unfold(2, kh, dh).unfold(3, kw, dw)
            x = x.contiguous().view(*x.size()[:-2], -1)
            out = (x.unsqueeze(1) * self.weight).sum([2, -1])
            if self.bias is not None:
                out += self.bias
            return out

    class ReflectConv(nn.Conv2d):
        """A convolution padded by F.pad from its own (padH, padW), as nn.Conv2d's padding_mode does."""

        def forward(self, x):
            pad = _reverse_repeat_tuple(self.padding, 2)
            return F.conv2d(F.pad(x, pad, mode="reflect"), self.weight, self.bias, self.stride, _pair(0))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.same = Conv2dSame(2, 4, 3, stride=2)
            self.local = LocallyConnected2d(4, 3, output_size=3, kernel_size=2, stride=1)
            self.reflect = ReflectConv(3, 4, 3, padding=(1, 1))
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            x = F.gelu(self.same(x))
            x = F.gelu(self.local(x))
            x = self.reflect(x)
            tokens = x.flatten(2).transpose(1, 2)
            tokens = tokens + self.attn(tokens, tokens, tokens, need_weights=False)[0]
            return self.head(tokens.mean(1))

    return Net()


def third_party_layers(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_attention = __import__(m.nn.__name__ + ".attention", fromlist=["SDPBackend", "sdpa_kernel"])
    SDPBackend, sdpa_kernel = from_attention.SDPBackend, from_attention.sdpa_kernel
    model = load(m, third_party_net(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(20)
    x = torch.tensor(rng.standard_normal((3, 2, 7, 7)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 2, 3))
    log = []
    for step in range(steps):
        optimizer.zero_grad()
        with sdpa_kernel(SDPBackend.MATH):  # the math kernel, the one with a double backward
            x_in = x.clone().requires_grad_(True)
            loss = F.cross_entropy(model(x_in), y)
            g, = torch.autograd.grad(loss, x_in, create_graph=True)
            (loss + 0.1 * g.pow(2).sum()).backward()  # an input-gradient penalty
        optimizer.step()
        log.append(loss.item())
    refused = None
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):  # no such kernel on a CPU
        try:
            model(x)
        except RuntimeError as error:
            refused = str(error)
    shapes = (tuple(model.same(x).shape), nn.modules.utils._pair(3), nn.modules.utils._triple((1, 2, 3)))
    kept, key_bias_grads = comparable(model, 4)  # less the attention's key bias (noise under Adam)
    grads = [p.grad for name, p in model.named_parameters() if name != "attn.in_proj_bias"]
    return log, kept, grads, refused, shapes, max(key_bias_grads) < 1e-6


def test_third_party_layers_with_modules_utils_and_sdpa_kernel():
    weights = weights_of(third_party_net)
    ours, _ = run_both(third_party_layers, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, refused, shapes, key_bias_gradient_zero = ours
    assert key_bias_gradient_zero
    assert shapes == ((3, 4, 4, 4), (3, 3), (1, 2, 3)) and refused.startswith("No viable backend")
