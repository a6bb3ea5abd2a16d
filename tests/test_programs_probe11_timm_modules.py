"""timm's building blocks and training recipe, run as tests/probe11_timm_common.py says. timm's attention/conv
modules and losses (CBAM, ECA, global context, coordinate attention, MedianPool2d, split attention, CondConv,
MixedConv2d, AsymmetricLoss, JsdCrossEntropy, BinaryCrossEntropy, RoPE, ``checkpoint_seq``) with pools, interpolation
and norms; the ``_foreach_*`` keyword operands."""

from copy import deepcopy

import numpy as np
import pytest

from .probe11_timm_common import data
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# timm's attention and convolution modules and losses, each forward and backward: CBAM / ECA /
# global context, coordinate attention by torch.split, MedianPool2d by unfold().median(), space-to-depth
# and split attention's radix softmax, CondConv's per-sample grouped conv, MixedConv2d, in-place
# activations, AsymmetricLoss with set_grad_enabled(False), JsdCrossEntropy, timm's BinaryCrossEntropy,
# RoPE's rotate-half, qk-norm SDPA, checkpoint_seq; pools, interpolation, unfold/fold, norms, gathers
# ----------------------------------------------------------------------------------------------


def cbam_eca_gc(m):
    torch, nn, F = m.torch, m.nn, m.F
    x = torch.tensor(np.round(data(2, 4, 5, 5), 1), requires_grad=True)
    s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
    conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(data(1, 2, 7, 7, seed=4)))
    x1 = x * conv(s).sigmoid()
    y = x1.mean((2, 3)).view(x.shape[0], 1, -1)
    c1 = nn.Conv1d(1, 1, kernel_size=3, padding=1, bias=False)
    with torch.no_grad():
        c1.weight.copy_(torch.tensor(data(1, 1, 3, seed=5)))
    y = c1(y).sigmoid().view(x.shape[0], -1, 1, 1)
    x2 = x1 * y.expand_as(x1)
    B, C, H, W = x2.shape
    attn = F.softmax(x2.mean(1, keepdim=True).view(B, 1, H * W), -1).unsqueeze(-1)
    context = x2.reshape(B, C, H * W).unsqueeze(1) @ attn
    out = x2 + context.view(B, C, 1, 1)
    (out * torch.tensor(data(2, 4, 5, 5, seed=6))).sum().backward()
    return out, x.grad


def coord_attention_split(m):
    torch = m.torch
    x = torch.tensor(data(2, 3, 4, 5), requires_grad=True)
    B, C, H, W = x.shape
    x_h = x.mean(3, keepdim=True)
    x_w = x.mean(2, keepdim=True).permute(0, 1, 3, 2)
    y = torch.cat([x_h, x_w], dim=2)
    y = m.F.hardswish(y)
    a_h, a_w = torch.split(y, [H, W], dim=2)
    a_w = a_w.permute(0, 1, 3, 2)
    out = x * a_h.sigmoid() * a_w.sigmoid()
    out.pow(2).sum().backward()
    return out, x.grad


def median_pool(m):
    torch, F = m.torch, m.F
    x = torch.tensor(np.round(data(1, 2, 6, 6), 0), requires_grad=True)
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    u = xp.unfold(2, 3, 1).unfold(3, 3, 1)
    med = u.contiguous().view(u.size()[:4] + (-1,)).median(dim=-1)[0]
    (med * torch.tensor(data(*med.shape, seed=2))).sum().backward()
    return med, x.grad


def space_to_depth_splitattn(m):
    torch, F = m.torch, m.F
    x = torch.tensor(data(2, 4, 4, 4), requires_grad=True)
    N, C, H, W = x.size()
    bs = 2
    s = (
        x.view(N, C, H // bs, bs, W // bs, bs)
        .permute(0, 3, 5, 1, 2, 4)
        .contiguous()
        .view(N, C * bs * bs, H // bs, W // bs)
    )
    radix, card = 2, 1
    B, RC, H2, W2 = s.shape
    xr = s.reshape((B, radix, RC // radix, H2, W2))
    x_gap = xr.sum(dim=1).mean((2, 3), keepdim=True).repeat(1, 2, 1, 1)
    att = x_gap.view(B, card, radix, -1).transpose(1, 2)
    att = F.softmax(att, dim=1).reshape(B, -1).view(B, -1, 1, 1)
    out = (xr * att.reshape((B, radix, RC // radix, 1, 1))).sum(dim=1)
    (out * torch.tensor(data(*out.shape, seed=3))).sum().backward()
    return out, x.grad


def condconv(m):
    torch, F = m.torch, m.F
    x = torch.tensor(data(2, 3, 5, 5), requires_grad=True)
    experts = torch.tensor(data(4, 6 * 3 * 3 * 3, seed=1) * 0.2, requires_grad=True)
    routing = torch.sigmoid(torch.tensor(data(2, 4, seed=2), requires_grad=True))
    B, C, H, W = x.shape
    weight = torch.matmul(routing, experts).view(B * 6, 3, 3, 3)
    y = F.conv2d(x.reshape(1, B * C, H, W), weight, None, 1, 1, 1, groups=B)
    y = y.permute([1, 0, 2, 3]).view(B, 6, y.shape[-2], y.shape[-1])
    (y * torch.tensor(data(*y.shape, seed=3))).sum().backward()
    return y, x.grad, experts.grad


def mixed_conv(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    convs = nn.ModuleList([nn.Conv2d(2, 2, k, padding=k // 2, groups=2) for k in (3, 5)])
    x = torch.tensor(data(1, 4, 6, 6), requires_grad=True)
    for i, c in enumerate(convs):
        with torch.no_grad():
            c.weight.copy_(torch.tensor(data(*c.weight.shape, seed=10 + i)))
            c.bias.zero_()
    x_split = torch.split(x, [2, 2], 1)
    y = torch.cat([c(x_split[i]) for i, c in enumerate(convs)], 1)
    y.pow(2).sum().backward()
    return y, x.grad


def activations_inplace(m):
    torch, F, nn = m.torch, m.F, m.nn
    x = torch.tensor(data(3, 8) * 3, requires_grad=True)
    outs = []
    for mod in [
        nn.Mish(inplace=True),
        nn.ReLU6(inplace=True),
        nn.LeakyReLU(0.01, inplace=True),
        nn.SiLU(inplace=True),
        nn.GELU(approximate="tanh"),
        nn.Hardtanh(-2, 2, inplace=True),
        nn.ELU(inplace=True),
        nn.CELU(0.5, inplace=True),
        nn.SELU(inplace=True),
        nn.Hardsigmoid(inplace=True),
        nn.PReLU(),
        nn.GLU(),
    ]:
        outs.append(mod(x * 1.0))
    y = x * 1.0
    outs.append(y.sigmoid_())
    outs.append((x * 1.0).tanh_())
    outs.append(F.leaky_relu(x * 1, negative_slope=0.2, inplace=True))
    sum((o * (i + 1)).sum() for i, o in enumerate(outs)).backward()
    return outs, x.grad


def asymmetric_loss(m):
    torch = m.torch
    x = torch.tensor(data(4, 5), requires_grad=True)
    y = torch.tensor((data(4, 5, seed=1) > 0).astype(np.float32))
    gamma_neg, gamma_pos, clip, eps = 4, 1, 0.05, 1e-8
    x_sigmoid = torch.sigmoid(x)
    xs_pos = x_sigmoid
    xs_neg = 1 - x_sigmoid
    xs_neg = (xs_neg + clip).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=eps))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
    loss = los_pos + los_neg
    torch.set_grad_enabled(False)
    pt0 = xs_pos * y
    pt1 = xs_neg * (1 - y)
    pt = pt0 + pt1
    one_sided_gamma = gamma_pos * y + gamma_neg * (1 - y)
    one_sided_w = torch.pow(1 - pt, one_sided_gamma)
    torch.set_grad_enabled(True)
    loss *= one_sided_w
    l = -loss.sum()
    l.backward()
    return l, x.grad


def jsd(m):
    torch, F = m.torch, m.F
    output = torch.tensor(data(6, 5), requires_grad=True)
    target = torch.tensor([1, 2, 0, 1, 2, 0])
    split_size = 2
    logits_split = torch.split(output, split_size)
    loss = F.cross_entropy(logits_split[0], target[:split_size], label_smoothing=0.1)
    probs = [F.softmax(logits, dim=1) for logits in logits_split]
    logp_mixture = torch.clamp(torch.stack(probs).mean(axis=0), 1e-7, 1).log()
    loss += 12 * sum([F.kl_div(logp_mixture, p_split, reduction="batchmean") for p_split in probs]) / len(probs)
    loss.backward()
    return loss, output.grad


def bce_timm(m):
    torch, F = m.torch, m.F
    x = torch.tensor(data(4, 5), requires_grad=True)
    target = torch.tensor([1, 2, 0, 4])
    num_classes = x.shape[-1]
    off_value = 0.1 / num_classes
    on_value = 1.0 - 0.1 + off_value
    target = target.long().view(-1, 1)
    target = torch.full((4, num_classes), off_value, device=x.device, dtype=x.dtype).scatter_(1, target, on_value)
    target = target.gt(0.2).to(dtype=target.dtype)
    pos_weight = torch.tensor([1.0, 2.0, 3.0, 1.0, 0.5])
    loss = F.binary_cross_entropy_with_logits(
        x, target, torch.tensor([1.0, 1.0, 2.0, 1.0, 1.0]), pos_weight=pos_weight, reduction="mean"
    )
    loss.backward()
    return loss, x.grad


def rope(m):
    torch = m.torch
    x = torch.tensor(data(2, 3, 6, 8), requires_grad=True)
    freqs = 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))
    t = torch.arange(6).float()
    f = torch.outer(t, freqs).repeat_interleave(2, -1)
    sin, cos = f.sin(), f.cos()

    def rot(x):
        return torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)

    y = x * cos + rot(x) * sin
    (y * torch.tensor(data(2, 3, 6, 8, seed=1))).sum().backward()
    return y, x.grad


def attn_qknorm_dropout_eval(m):
    torch, nn, F = m.torch, m.nn, m.F
    q = torch.tensor(data(2, 2, 5, 4), requires_grad=True)
    k = torch.tensor(data(2, 2, 5, 4, seed=1), requires_grad=True)
    v = torch.tensor(data(2, 2, 5, 4, seed=2), requires_grad=True)
    qn = nn.LayerNorm(4)
    kn = nn.LayerNorm(4)
    drop = nn.Dropout(0.3)
    drop.eval()
    mask = torch.tensor(data(5, 5, seed=3) > -0.5)
    o = F.scaled_dot_product_attention(qn(q), kn(k), v, attn_mask=mask, dropout_p=drop.p if drop.training else 0.0)
    o2 = F.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(data(2, 1, 5, 5, seed=4)), scale=0.3)
    o3 = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    (o.sum() + (o2 * o3).sum()).backward()
    return o, o2, o3, q.grad, k.grad, v.grad


def checkpoint_seq(m):
    torch, nn = m.torch, m.nn
    from_utils = m.torch.utils.checkpoint
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 4), nn.LayerNorm(4))
    with torch.no_grad():
        for i, p in enumerate(seq.parameters()):
            p.copy_(torch.tensor(data(*p.shape, seed=i)))
    x = torch.tensor(data(3, 4), requires_grad=True)

    def run_function(start, end, functions):
        def forward(_x):
            for j in range(start, end + 1):
                _x = functions[j](_x)
            return _x

        return forward

    y = from_utils.checkpoint(run_function(0, 1, seq), x, use_reentrant=False)
    y = from_utils.checkpoint(run_function(2, 3, seq), y, use_reentrant=False)
    y2 = from_utils.checkpoint_sequential(seq, 2, x, use_reentrant=False)
    (y.pow(2).sum() + y2.sum()).backward()
    return y, x.grad, [p.grad for p in seq.parameters()]


def pools_and_interp(m):
    torch, nn, F = m.torch, m.nn, m.F
    x = torch.tensor(data(2, 3, 7, 7), requires_grad=True)
    outs = [
        F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) - x,
        F.adaptive_avg_pool2d(x, 3),
        F.adaptive_max_pool2d(x, (2, 4)),
        nn.AdaptiveAvgPool2d((None, 1))(x),
        F.interpolate(x, scale_factor=1.5, mode="bicubic", align_corners=False),
        F.interpolate(x, scale_factor=2, mode="nearest"),
        F.interpolate(x, size=(5, 9), mode="nearest-exact"),
        F.interpolate(x, scale_factor=0.6, mode="bilinear", recompute_scale_factor=True),
        F.interpolate(x, scale_factor=0.6, mode="bilinear"),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)(x),
        F.unfold(x, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=1),
        F.unfold(x, 2, dilation=2),
        F.fold(F.unfold(x, 3, padding=1, stride=2), (7, 7), 3, padding=1, stride=2),
        F.avg_pool2d(x, 2, ceil_mode=True),
        F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
        F.lp_pool2d(x.abs() + 0.1, 2, 2),
    ]
    sum((o * (i + 1)).pow(2).sum() for i, o in enumerate(outs)).backward()
    return outs, x.grad


def norms(m):
    torch, nn, F = m.torch, m.nn, m.F
    x = torch.tensor(data(2, 4, 3, 3), requires_grad=True)
    ln = nn.LayerNorm(3, bias=False)
    rms = nn.RMSNorm([3, 3], eps=1e-6)
    gn = nn.GroupNorm(1, 4)
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        rms.weight.mul_(torch.tensor(data(3, 3, seed=1)))
    outs = [
        ln(x),
        rms(x),
        gn(x),
        F.rms_norm(x, (3,)),
        F.group_norm(x, 2),
        F.instance_norm(x),
        F.local_response_norm(x, 2),
        F.normalize(x, p=1, dim=1),
    ]
    sum((o * torch.tensor(data(*o.shape, seed=i))).sum() for i, o in enumerate(outs)).backward()
    return outs, x.grad, ln.weight


def gather_scatter(m):
    torch = m.torch
    x = torch.tensor(data(2, 6, 4), requires_grad=True)
    idx = torch.tensor([[0, 3, 5], [1, 1, 2]])
    g = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    s = torch.zeros(2, 6, 4).scatter_add(1, idx.unsqueeze(-1).expand(-1, -1, 4), g)
    s2 = torch.zeros(2, 6, 4).scatter_reduce(
        1, idx.unsqueeze(-1).expand(-1, -1, 4), g, reduce="amax", include_self=False
    )
    isel = x.index_select(1, torch.tensor([5, 0]))
    (s.pow(2).sum() + s2.sum() + isel.sum()).backward()
    return g, s, s2, x.grad


MODULE_PROGRAMS = [
    cbam_eca_gc,
    coord_attention_split,
    median_pool,
    space_to_depth_splitattn,
    condconv,
    mixed_conv,
    activations_inplace,
    asymmetric_loss,
    jsd,
    bce_timm,
    rope,
    attn_qknorm_dropout_eval,
    checkpoint_seq,
    pools_and_interp,
    norms,
    gather_scatter,
]


@pytest.mark.parametrize("program", MODULE_PROGRAMS, ids=lambda f: f.__name__)
def test_timm_modules_and_losses(program):
    ours, _ = run_both(program, rtol=1e-5, atol=1e-5)
    grads = [g for g in ours if isinstance(g, np.ndarray)]
    assert all(np.isfinite(g).all() for g in grads)


def model_ema_v3_fallback(m):
    """ModelEmaV3's path where torch lacks _foreach_lerp_: ``_foreach_mul_(..., scalar=decay)`` then
    ``_foreach_add_(..., alpha=1 - decay)``, PyTorch's keyword names for the second operand."""
    torch, nn = m.torch, m.nn
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(data(2, 3)))
        model.bias.copy_(torch.tensor([0.5, -0.25]))
    ema = deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        ema_params, model_params = tuple(ema.parameters()), tuple(model.parameters())
        decay = 0.75
        torch._foreach_mul_(ema_params, scalar=decay)
        torch._foreach_add_(ema_params, model_params, alpha=1 - decay)
        lerped = torch._foreach_lerp(model_params, ema_params, weight=0.5)
        scaled = torch._foreach_mul(model_params, other=torch.tensor(2.0))
        shifted = torch._foreach_add(model_params, scalars=[1.0, 2.0])
    return [p - q for p, q in zip(model.parameters(), ema.parameters())], lerped, scaled, shifted


def test_foreach_second_operand_by_keyword():
    (diffs, lerped, scaled, shifted), _ = run_both(model_ema_v3_fallback)
    for d in diffs:
        np.testing.assert_allclose(d, 0.75, rtol=1e-6)  # (1 - decay) of the way to the model, which is 1 ahead
