# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Continual, federated and private learning programs, run as tests/probe21_continual_common.py says. Private
learning: DP-SGD with per-sample gradients three ways (Opacus-style hooks with ``p.grad_sample`` and the unfold conv
sampler, ``vmap(grad)`` over ``functional_call``, a loop with ``clip_grad_norm_``), Poisson sampling and noise from
seeded Generators; Opacus' Embedding / LayerNorm / Linear samplers on a text model and its convolution sampler
(``as_strided`` unfold, ``Tensor.unfold``, the ``einsum("ngrg...->ngr...")`` diagonal)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# DP-SGD: per-sample gradients by Opacus-style hooks (grad_sample on each parameter, conv by unfold),
# by vmap(grad) over functional_call, and by a per-sample loop with clip_grad_norm_; Poisson sampling and
# Gaussian noise from a seeded Generator
# ----------------------------------------------------------------------------------------------


def dp_model(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 3 * 3, 8), nn.ELU(), nn.Linear(8, 3))


def fix_batchnorm(m, module):
    """Opacus' ModuleValidator.fix: BatchNorm mixes samples, so it becomes a GroupNorm."""
    nn = m.nn
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(min(32, child.num_features), child.num_features, affine=True))
        else:
            fix_batchnorm(m, child)
    return module


def dp_weights():
    autograd_model = fix_batchnorm(OURS, dp_model(OURS))
    OURS.torch.manual_seed(1)
    for p in autograd_model.parameters():
        p.data.normal_(0, 0.3)
    return {k: v.numpy().copy() for k, v in autograd_model.state_dict().items()}


DP_WEIGHTS = dp_weights()


def dp_images():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((40, 1, 6, 6)).astype(np.float32)
    Y = rng.integers(0, 3, 40)
    return X, Y


class GradSampleModule:
    """Opacus' hooks, cut down: the forward hook keeps the activations, the full backward hook turns the
    backprops into each sample's gradient, kept in p.grad_sample."""

    def __init__(self, m, module):
        self.m, self.module = m, module
        self.handles = []
        for layer in module.modules():
            if isinstance(layer, (m.nn.Linear, m.nn.Conv2d, m.nn.GroupNorm)):
                self.handles.append(layer.register_forward_hook(self.capture_activations))
                self.handles.append(layer.register_full_backward_hook(self.capture_backprops))

    def capture_activations(self, module, forward_input, _forward_output):
        module.activations = forward_input[0].detach()

    def capture_backprops(self, module, _grad_input, grad_output):
        torch, F = self.m.torch, self.m.F
        A, B = module.activations, grad_output[0].detach()
        n = A.shape[0]
        if isinstance(module, self.m.nn.Linear):
            gs = {"weight": torch.einsum("n...i,n...j->nij", B, A), "bias": torch.einsum("n...k->nk", B)}
        elif isinstance(module, self.m.nn.Conv2d):
            A = F.unfold(A, module.kernel_size, dilation=module.dilation, padding=module.padding,
                         stride=module.stride)
            B = B.reshape(n, -1, A.shape[-1])
            grad_sample = torch.einsum("noq,npq->nop", B, A)
            gs = {"weight": grad_sample.view(n, *module.weight.shape), "bias": torch.sum(B, dim=2)}
        else:
            normalized = F.group_norm(A, module.num_groups, eps=module.eps)
            gs = {"weight": torch.einsum("ni...->ni", normalized * B), "bias": torch.einsum("ni...->ni", B)}
        for name, g in gs.items():
            p = getattr(module, name)
            if hasattr(p, "grad_sample"):
                p.grad_sample += g
            else:
                p.grad_sample = g


def dp_sgd(m, method):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_numpy = torch.from_numpy
    X, Y = (from_numpy(a) for a in dp_images())
    model = load(m, fix_batchnorm(m, dp_model(m)), DP_WEIGHTS)
    optimizer = optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
    max_grad_norm, noise_multiplier, sample_rate = 1.0, 0.7, 0.25
    generator = torch.Generator().manual_seed(2024)
    sampler_gen = torch.Generator().manual_seed(99)
    params = dict(model.named_parameters())
    if method == "hooks":
        gsm = GradSampleModule(m, model)
    if method == "vmap":
        from_func = torch.func

        def compute_loss(params, buffers, sample, target):
            batch = sample.unsqueeze(0)
            targets = target.unsqueeze(0)
            predictions = from_func.functional_call(model, (params, buffers), (batch,))
            return F.cross_entropy(predictions, targets)

        ft_compute_sample_grad = from_func.vmap(from_func.grad(compute_loss), in_dims=(None, None, 0, 0))
    history, batch_sizes = [], []
    for step in range(4):
        mask = torch.rand(len(X), generator=sampler_gen) < sample_rate
        idx = mask.nonzero(as_tuple=True)[0]
        x, y = X[idx], Y[idx]
        batch_sizes.append(len(idx))
        optimizer.zero_grad()
        if method == "hooks":
            loss = F.cross_entropy(model(x), y, reduction="sum")
            loss.backward()
            grad_samples = {n: p.grad_sample for n, p in params.items()}
        elif method == "vmap":
            detached = {k: v.detach() for k, v in params.items()}
            buffers = {k: v.detach() for k, v in model.named_buffers()}
            grad_samples = ft_compute_sample_grad(detached, buffers, x, y)
        if method == "loop":
            summed = {n: torch.zeros_like(p) for n, p in params.items()}
            norms = []
            for i in range(len(x)):
                optimizer.zero_grad()
                F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
                norms.append(nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm))
                for n, p in params.items():
                    summed[n] += p.grad
            per_sample_norms = torch.stack(norms)
        else:
            per_param_norms = [g.reshape(len(g), -1).norm(2, dim=-1) for g in grad_samples.values()]
            per_sample_norms = torch.stack(per_param_norms, dim=1).norm(2, dim=1)
            per_sample_clip_factor = (max_grad_norm / (per_sample_norms + 1e-6)).clamp(max=1.0)
            summed = {n: torch.einsum("i,i...", per_sample_clip_factor, g) for n, g in grad_samples.items()}
        for n, p in params.items():
            noise = torch.normal(mean=0, std=noise_multiplier * max_grad_norm, size=p.shape, generator=generator)
            p.grad = (summed[n] + noise) / (sample_rate * len(X))
            if method == "hooks":
                del p.grad_sample
        optimizer.step()
        history.append(per_sample_norms)
    if method == "hooks":
        for h in gsm.handles:
            h.remove()
    return {"history": history, "params": {n: p.detach() for n, p in params.items()}, "batch_sizes": batch_sizes,
            "leftover": [hasattr(p, "grad_sample") for p in model.parameters()],
            "hooks_left": sum(len(mod._forward_hooks) + len(mod._backward_hooks) for mod in model.modules())}


@pytest.mark.parametrize("method", ["hooks", "vmap", "loop"])
def test_dp_sgd(method):
    ours, _ = run_both(dp_sgd, method=method, rtol=1e-4, atol=1e-5)
    assert not any(ours["leftover"]) and ours["hooks_left"] == 0
    assert ours["batch_sizes"] == dp_sgd(OURS, "vmap")["batch_sizes"]


def test_dp_sgd_methods_agree():
    """Clipping by 1e-6-padded norms (hooks, vmap) or by clip_grad_norm_'s (loop): the same to about 1e-5."""
    hooks, vmapped, looped = (dp_sgd(OURS, method) for method in ["hooks", "vmap", "loop"])
    for a, b in [(hooks, vmapped), (hooks, looped)]:
        for n in a["params"]:
            np.testing.assert_allclose(a["params"][n], b["params"][n], rtol=1e-4, atol=1e-5, err_msg=n)
        for s, t in zip(a["history"], b["history"]):
            np.testing.assert_allclose(s, t, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# DP on a text classifier: Opacus' grad samplers for Embedding (scatter_add_ over an expanded index),
# LayerNorm and a Linear on 3-D activations, checked against vmap(grad) of functional_call
# ----------------------------------------------------------------------------------------------


def dp_text_model(m):
    nn = m.nn

    class TextClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(20, 6, padding_idx=0)
            self.norm = nn.LayerNorm(6)
            self.proj = nn.Linear(6, 6)
            self.fc = nn.Linear(6, 3)

        def forward(self, tokens):
            h = self.proj(self.norm(self.embedding(tokens))).relu()
            return self.fc(h.mean(dim=1))

    return TextClassifier()


DP_TEXT_WEIGHTS = weights_of(dp_text_model)


def sum_over_all_but_batch_and_last_n(tensor, n_dims):
    if tensor.dim() == n_dims + 1:
        return tensor
    dims = list(range(1, tensor.dim() - n_dims))
    return tensor.sum(dim=dims)


def dp_text(m, method):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(12)
    tokens = torch.from_numpy(rng.integers(0, 20, (10, 7)))
    labels = torch.from_numpy(rng.integers(0, 3, 10))
    model = load(m, dp_text_model(m), DP_TEXT_WEIGHTS)
    if method == "vmap":
        params = {k: v.detach() for k, v in model.named_parameters()}

        def loss_of(p, tok, lab):
            return F.cross_entropy(torch.func.functional_call(model, p, (tok.unsqueeze(0),)), lab.unsqueeze(0))

        return torch.func.vmap(torch.func.grad(loss_of), in_dims=(None, 0, 0))(params, tokens, labels)

    def capture_activations(module, inputs, output):
        module.activations = inputs[0].detach()

    def capture_backprops(module, grad_input, grad_output):
        A, B = module.activations, grad_output[0].detach()
        batch_size = A.shape[0]
        if isinstance(module, nn.Embedding):
            index = A.unsqueeze(-1).expand(*A.shape, module.embedding_dim).reshape(batch_size, -1,
                                                                                    module.embedding_dim)
            grad_sample = torch.zeros(batch_size, *module.weight.shape, dtype=B.dtype)
            grad_sample.scatter_add_(1, index, B.reshape(batch_size, -1, module.embedding_dim))
            module.weight.grad_sample = grad_sample
        elif isinstance(module, nn.LayerNorm):
            module.weight.grad_sample = sum_over_all_but_batch_and_last_n(
                F.layer_norm(A, module.normalized_shape, eps=module.eps) * B, module.weight.dim())
            module.bias.grad_sample = sum_over_all_but_batch_and_last_n(B, module.bias.dim())
        else:
            module.weight.grad_sample = torch.einsum("n...i,n...j->nij", B, A)
            module.bias.grad_sample = torch.einsum("n...k->nk", B)

    for layer in model.children():
        layer.register_forward_hook(capture_activations)
        layer.register_full_backward_hook(capture_backprops)
    F.cross_entropy(model(tokens), labels, reduction="sum").backward()
    return {n: p.grad_sample for n, p in model.named_parameters()}


def test_dp_text_grad_samplers():
    hooks, _ = run_both(dp_text, method="hooks", rtol=1e-4, atol=1e-6)
    vmapped, _ = run_both(dp_text, method="vmap", rtol=1e-4, atol=1e-6)
    # the sampler scatters the padding tokens' backprops into row 0 too; autograd's gradient leaves that row 0
    assert np.all(vmapped["embedding.weight"][:, 0] == 0)
    for grads in (hooks, vmapped):
        grads["embedding.weight"] = grads["embedding.weight"][:, 1:]
    for n in vmapped:
        np.testing.assert_allclose(hooks[n], vmapped[n], rtol=1e-4, atol=1e-6, err_msg=n)


# ----------------------------------------------------------------------------------------------
# Opacus' convolution grad sampler: unfold2d by as_strided over the padded input (groups, dilation, stride),
# Conv1d with padding='same' through F.unfold, Conv3d by Tensor.unfold, permute and index_select of the dilated
# rows; the groups' diagonal by einsum("ngrg...->ngr..."); against vmap(grad) over functional_call
# ----------------------------------------------------------------------------------------------


def unfold2d(m, input, *, kernel_size, padding, stride, dilation):
    F = m.F
    *shape, H, W = input.shape
    if padding == "same":
        total_pad_H = dilation[0] * (kernel_size[0] - 1)
        total_pad_W = dilation[1] * (kernel_size[1] - 1)
        pad_H_left = math.floor(total_pad_H / 2)
        pad_H_right = total_pad_H - pad_H_left
        pad_W_left = math.floor(total_pad_W / 2)
        pad_W_right = total_pad_W - pad_W_left
    else:
        pad_H_left, pad_H_right, pad_W_left, pad_W_right = padding[0], padding[0], padding[1], padding[1]
    H_effective = (H + pad_H_left + pad_H_right - (kernel_size[0] + (kernel_size[0] - 1) * (dilation[0] - 1))) \
        // stride[0] + 1
    W_effective = (W + pad_W_left + pad_W_right - (kernel_size[1] + (kernel_size[1] - 1) * (dilation[1] - 1))) \
        // stride[1] + 1
    input = F.pad(input, (pad_W_left, pad_W_right, pad_H_left, pad_H_right))
    *shape_pad, H_pad, W_pad = input.shape
    strides = list(input.stride())
    strides = strides[:-2] + [W_pad * dilation[0], dilation[1], W_pad * stride[0], stride[1]]
    out = input.as_strided(shape + [kernel_size[0], kernel_size[1], H_effective, W_effective], strides)
    return out.reshape(input.size(0), -1, H_effective * W_effective)


def unfold3d(m, tensor, *, kernel_size, padding, stride, dilation):
    torch, F = m.torch, m.F
    batch_size, channels, _, _, _ = tensor.shape
    tensor = F.pad(tensor, (padding[2], padding[2], padding[1], padding[1], padding[0], padding[0]))
    dilated_kernel_size = tuple(k + (k - 1) * (d - 1) for k, d in zip(kernel_size, dilation))
    tensor = tensor.unfold(dimension=2, size=dilated_kernel_size[0], step=stride[0])
    tensor = tensor.unfold(dimension=3, size=dilated_kernel_size[1], step=stride[1])
    tensor = tensor.unfold(dimension=4, size=dilated_kernel_size[2], step=stride[2])
    if dilation != (1, 1, 1):
        axis_offset = len(tensor.shape) - 3
        for dim in range(3):
            keep = torch.arange(0, dilated_kernel_size[dim], dilation[dim])
            tensor = torch.index_select(tensor, dim=axis_offset + dim, index=keep)
    tensor = tensor.permute(0, 2, 3, 4, 1, 5, 6, 7)
    return tensor.reshape(batch_size, -1, channels * np.prod(kernel_size)).transpose(1, 2)


def conv_layers(m):
    nn = m.nn
    return nn.ModuleDict({
        "conv1d": nn.Conv1d(4, 6, 3, padding="same", dilation=2, groups=2),
        "conv2d": nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
        "conv3d": nn.Conv3d(2, 3, 2, stride=(1, 2, 1), padding=(1, 0, 1), dilation=(2, 1, 1)),
    })


CONV_WEIGHTS = weights_of(conv_layers)


def opacus_conv_grad_samples(m, kind, method):
    torch, nn, F = m.torch, m.nn, m.F
    layer = load(m, conv_layers(m), CONV_WEIGHTS)[kind]
    rng = np.random.default_rng(15)
    shape = {"conv1d": (3, 4, 9), "conv2d": (3, 4, 9, 8), "conv3d": (3, 2, 5, 6, 4)}[kind]
    x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    out_shape = layer(x).shape
    target = torch.from_numpy(rng.standard_normal(tuple(out_shape)).astype(np.float32))
    if method == "vmap":
        params = {k: v.detach() for k, v in layer.named_parameters()}

        def loss_of(p, xi, ti):
            return (torch.func.functional_call(layer, p, (xi.unsqueeze(0),)) * ti.unsqueeze(0)).sum()

        return torch.func.vmap(torch.func.grad(loss_of), in_dims=(None, 0, 0))(params, x, target)
    activations = x
    output = layer(x)
    backprops = torch.autograd.grad((output * target).sum(), output)[0]
    n = activations.shape[0]
    if kind == "conv2d":
        activations = unfold2d(m, activations, kernel_size=layer.kernel_size, padding=layer.padding,
                               stride=layer.stride, dilation=layer.dilation)
    elif kind == "conv1d":
        activations = activations.unsqueeze(-2)
        total_pad = layer.dilation[0] * (layer.kernel_size[0] - 1)
        left_pad = math.floor(total_pad / 2)
        right_pad = total_pad - left_pad
        activations = F.pad(activations, (left_pad, right_pad))
        activations = F.unfold(activations, kernel_size=(1, layer.kernel_size[0]), stride=(1, layer.stride[0]),
                               dilation=(1, layer.dilation[0]))
    else:
        activations = unfold3d(m, activations, kernel_size=layer.kernel_size, padding=layer.padding,
                               stride=layer.stride, dilation=layer.dilation)
    backprops = backprops.reshape(n, -1, activations.shape[-1])
    grad_sample = torch.einsum("noq,npq->nop", backprops, activations)
    grad_sample = grad_sample.view(n, layer.groups, -1, layer.groups, int(layer.in_channels / layer.groups),
                                   np.prod(layer.kernel_size))
    grad_sample = torch.einsum("ngrg...->ngr...", grad_sample).contiguous()
    return {"weight": grad_sample.view([n] + list(layer.weight.shape)), "bias": torch.sum(backprops, dim=2)}


@pytest.mark.parametrize("kind", ["conv1d", "conv2d", "conv3d"])
def test_opacus_conv_grad_sampler(kind):
    hooks, _ = run_both(opacus_conv_grad_samples, kind=kind, method="unfold", rtol=1e-4, atol=1e-6)
    vmapped, _ = run_both(opacus_conv_grad_samples, kind=kind, method="vmap", rtol=1e-4, atol=1e-6)
    for n in ("weight", "bias"):
        np.testing.assert_allclose(hooks[n], vmapped[n], rtol=1e-4, atol=1e-5, err_msg=n)
