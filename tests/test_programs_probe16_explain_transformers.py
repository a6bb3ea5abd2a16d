# ruff: noqa: E501, F841  (the programs are kept as their authors wrote them)
"""Model interpretability as PyTorch users and Captum's sources write it, run as tests/probe16_explain_common.py
says. Transformers: ViT attention rollout and gradient rollout (hooks on attn_drop), MultiheadAttention weights, a
tiny GPT's logit lens, activation and attribution patching, direct logit attribution and steering, attention maps out
of TransformerEncoder by a patched ``self_attn.forward``, a sparse autoencoder on hooked activations."""

import numpy as np

from .probe16_explain_common import images, mlp
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Attention rollout (Abnar and Zuidema) and gradient-weighted rollout (Chefer et al.) in a small ViT whose
# attention is caught by hooks on its attn_drop (as vit-explain does with timm models), and through
# nn.MultiheadAttention's own weights
# ----------------------------------------------------------------------------------------------


def tiny_vit(m, dim=16, depth=2, heads=4, patch=4, classes=3):
    torch, nn = m.torch, m.nn

    class Attention(nn.Module):
        def __init__(self, dim, num_heads):
            super().__init__()
            self.num_heads = num_heads
            self.scale = (dim // num_heads) ** -0.5
            self.qkv = nn.Linear(dim, dim * 3)
            self.attn_drop = nn.Dropout(0.0)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x = (attn @ v).transpose(1, 2).reshape(B, N, C)
            return self.proj(x)

    class Block(nn.Module):
        def __init__(self, dim, num_heads):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim)
            self.attn = Attention(dim, num_heads)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.randn(1, 1 + (8 // patch) ** 2, dim) * 0.02)
            self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, classes)

        def forward(self, x):
            x = self.patch_embed(x).flatten(2).transpose(1, 2)
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.norm(x)[:, 0])

    return ViT()


def attention_rollout(m, weights, discard_ratio=0.25):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, tiny_vit(m), weights).double().eval()
    X = torch.from_numpy(images(2, seed=6))

    attentions, attention_gradients = [], []

    def get_attention(module, input, output):
        attentions.append(output.cpu())

    def get_attention_gradient(module, grad_input, grad_output):
        attention_gradients.append(grad_input[0].cpu())

    handles = []
    for name, module in model.named_modules():
        if "attn_drop" in name:
            handles.append(module.register_forward_hook(get_attention))
            handles.append(module.register_full_backward_hook(get_attention_gradient))

    def rollout(attentions, discard_ratio, head_fusion):
        result = torch.eye(attentions[0].size(-1), dtype=attentions[0].dtype)
        with torch.no_grad():
            for attention in attentions:
                if head_fusion == "mean":
                    attention_heads_fused = attention.mean(axis=1)
                elif head_fusion == "max":
                    attention_heads_fused = attention.max(axis=1)[0]
                elif head_fusion == "min":
                    attention_heads_fused = attention.min(axis=1)[0]
                # drop the lowest attentions, but not the class token's
                flat = attention_heads_fused.view(attention_heads_fused.size(0), -1)
                _, indices = flat.topk(int(flat.size(-1) * discard_ratio), -1, False)
                indices = indices[indices != 0]
                flat[0, indices] = 0
                I = torch.eye(attention_heads_fused.size(-1), dtype=flat.dtype)
                a = (attention_heads_fused + 1.0 * I) / 2
                a = a / a.sum(dim=-1, keepdim=True)
                result = torch.matmul(a, result)
        mask = result[0, 0, 1:]
        width = int(mask.size(-1) ** 0.5)
        mask = mask.reshape(width, width)
        return mask / mask.max()

    with torch.no_grad():
        logits = model(X[:1])
    out = {"logits": logits}
    for fusion in ("mean", "max", "min"):
        out["rollout_" + fusion] = rollout([a.clone() for a in attentions], discard_ratio, fusion)

    # gradient-weighted rollout: the class score's gradient through each attention map
    attentions.clear()
    model.zero_grad()
    x = X[:1].clone().requires_grad_(True)
    output = model(x)
    category_mask = torch.zeros(output.size(), dtype=output.dtype)
    category_mask[:, 1] = 1
    loss = (output * category_mask).sum()
    loss.backward()
    result = torch.eye(attentions[0].size(-1), dtype=torch.float64)
    with torch.no_grad():
        for attention, grad in zip(attentions, attention_gradients[::-1]):  # the hooks fire last layer first
            weights_ = grad
            attention_heads_fused = (attention * weights_).mean(axis=1)
            attention_heads_fused[attention_heads_fused < 0] = 0
            I = torch.eye(attention_heads_fused.size(-1), dtype=torch.float64)
            a = (attention_heads_fused + 1.0 * I) / 2
            a = a / a.sum(dim=-1, keepdim=True)
            result = torch.matmul(a, result)
    out["grad_rollout"] = result[0, 0, 1:]
    out["attn_grads"] = attention_gradients
    # the same gradients by tensor hooks on the attention maps (Chefer's attn.register_hook(save_attn_gradients))
    tensor_grads = []
    for h in handles:
        h.remove()

    def save_attn_gradients(mod, i, o):
        o.register_hook(tensor_grads.append)

    handles = [mod.register_forward_hook(save_attn_gradients) for name, mod in model.named_modules() if name.endswith("attn_drop")]
    model(X[:1])[0, 1].backward()
    for h in handles:
        h.remove()
    out["tensor_grads"] = tensor_grads
    out["input_grad"] = x.grad
    return out


def mha_rollout(m, weights):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).double()
    mha.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    x = torch.from_numpy(np.random.default_rng(7).standard_normal((2, 5, 8))).requires_grad_()
    out, weights_per_head = mha(x, x, x, need_weights=True, average_attn_weights=False)
    _, weights_mean = mha(x, x, x, need_weights=True)
    weights_per_head.retain_grad()
    (out.sum() + (weights_per_head * torch.arange(5.0, dtype=torch.float64)).sum()).backward()
    rows = weights_per_head.sum(-1)
    result = torch.eye(5, dtype=torch.float64).expand(2, 5, 5)
    for _ in range(2):
        a = 0.5 * weights_mean.detach() + 0.5 * torch.eye(5, dtype=torch.float64)
        result = a @ result
    return {"per_head": weights_per_head, "mean": weights_mean, "rows": rows, "rollout": result,
            "weights_grad": weights_per_head.grad, "x_grad": x.grad, "in_proj_grad": mha.in_proj_weight.grad}


def test_attention_rollout_in_a_small_vit():
    autograd_weights = weights_of(tiny_vit)
    ours, _ = run_both(attention_rollout, autograd_weights, rtol=1e-8, atol=1e-11)
    for grad_hook, tensor_hook in zip(ours["attn_grads"], ours["tensor_grads"]):
        np.testing.assert_allclose(grad_hook, tensor_hook, rtol=1e-12, atol=1e-15)
    assert ours["rollout_mean"].shape == (2, 2)


def test_multihead_attention_weights_and_rollout():
    weights = weights_of(lambda m: m.nn.MultiheadAttention(8, 2, batch_first=True), seed=5)
    ours, _ = run_both(mha_rollout, weights, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["rows"], 1, rtol=1e-12)
    np.testing.assert_allclose(ours["per_head"].mean(1), ours["mean"], rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Mechanistic interpretability in a tiny GPT, as TransformerLens users write it with plain hooks: a cache
# of the residual stream, the logit lens, activation patching (a forward hook writing the clean
# activation into the output in place), attribution patching ((clean - corrupt) x gradient) and direct
# logit attribution; a steering vector added by a forward pre-hook
# ----------------------------------------------------------------------------------------------


def tiny_gpt(m, vocab=11, d=16, heads=2, layers=2, ctx=6):
    torch, nn, F = m.torch, m.nn, m.F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.ln2 = nn.LayerNorm(d)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))
            self.attn_out = nn.Identity()  # hook points, as TransformerLens's HookPoint
            self.mlp_out = nn.Identity()

        def forward(self, x, mask):
            h = self.ln1(x)
            a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
            x = x + self.attn_out(a)
            return x + self.mlp_out(self.mlp(self.ln2(x)))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.zeros(ctx, d))
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.ln_f = nn.LayerNorm(d)
            self.unembed = nn.Linear(d, vocab, bias=False)
            self.resid = nn.ModuleList([nn.Identity() for _ in range(layers + 1)])

        def forward(self, tokens):
            T = tokens.shape[1]
            mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
            x = self.resid[0](self.embed(tokens) + self.pos[:T])
            for i, block in enumerate(self.blocks):
                x = self.resid[i + 1](block(x, mask))
            return self.unembed(self.ln_f(x))

    return GPT()


def mech_interp(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, tiny_gpt(m), weights).double().eval()
    clean = torch.tensor([[1, 4, 2, 7, 4, 2]])
    corrupt = torch.tensor([[1, 5, 2, 7, 5, 2]])
    answer, wrong = 7, 3
    out = {}

    def logit_diff(logits):
        return logits[0, -1, answer] - logits[0, -1, wrong]

    # a cache of every hook point
    cache = {}

    def caching_hook(name):
        def hook(module, inputs, output):
            cache[name] = output.detach()
        return hook

    points = {f"resid.{i}": mod for i, mod in enumerate(model.resid)}
    for i, block in enumerate(model.blocks):
        points[f"attn_out.{i}"] = block.attn_out
        points[f"mlp_out.{i}"] = block.mlp_out
    handles = [mod.register_forward_hook(caching_hook(name)) for name, mod in points.items()]
    with torch.no_grad():
        clean_logits = model(clean)
    clean_cache = dict(cache)
    with torch.no_grad():
        corrupt_logits = model(corrupt)
    for h in handles:
        h.remove()
    out["logit_diffs"] = torch.stack([logit_diff(clean_logits), logit_diff(corrupt_logits)])

    # the logit lens: each layer's residual stream through the final norm and unembedding
    with torch.no_grad():
        out["logit_lens"] = torch.stack([model.unembed(model.ln_f(clean_cache[f"resid.{i}"]))[0, -1].log_softmax(-1)
                                         for i in range(len(model.resid))])

    # direct logit attribution: each component's output along the answer direction, through ln_f's scale
    direction = model.unembed.weight[answer] - model.unembed.weight[wrong]
    final = clean_cache[f"resid.{len(model.blocks)}"][0, -1]
    scale = (final.var(unbiased=False) + model.ln_f.eps).sqrt()
    components = [clean_cache["resid.0"]] + [clean_cache[f"{k}.{i}"] for i in range(len(model.blocks)) for k in ("attn_out", "mlp_out")]
    with torch.no_grad():
        dla = torch.stack([((c[0, -1] - c[0, -1].mean()) / scale * model.ln_f.weight) @ direction for c in components])
        total = dla.sum() + model.ln_f.bias @ direction
    out["dla"] = (dla, total)

    # activation patching: the clean residual stream written into the corrupt run, one position at a time
    def patch_hook(name, pos):
        def hook(module, inputs, output):
            output[:, pos] = clean_cache[name][:, pos]
        return hook

    patched = torch.zeros(len(model.resid), clean.shape[1], dtype=torch.float64)
    for i, mod in enumerate(model.resid):
        for pos in range(clean.shape[1]):
            h = mod.register_forward_hook(patch_hook(f"resid.{i}", pos))
            with torch.no_grad():
                patched[i, pos] = logit_diff(model(corrupt))
            h.remove()
    out["patching"] = (patched - logit_diff(corrupt_logits)) / (logit_diff(clean_logits) - logit_diff(corrupt_logits))

    # attribution patching: gradients of the corrupt run's metric at every hook point, by retain_grad
    kept = {}

    def keep_grad(name):
        def hook(module, inputs, output):
            output.retain_grad()
            kept[name] = output
        return hook

    handles = [mod.register_forward_hook(keep_grad(name)) for name, mod in points.items()]
    model.zero_grad()
    logit_diff(model(corrupt)).backward()
    for h in handles:
        h.remove()
    out["attribution_patching"] = {name: ((clean_cache[name] - kept[name].detach()) * kept[name].grad).sum(-1)[0]
                                   for name in points}

    # steering: a vector added to the residual stream before block 1 by a forward pre-hook on it
    steer = (clean_cache["resid.1"][0, 1] - clean_cache["resid.1"][0, 4]) * 0.5

    def steering_hook(module, args):
        x, mask = args
        return (x + steer, mask)

    h = model.blocks[1].register_forward_pre_hook(steering_hook)
    with torch.no_grad():
        out["steered"] = model(corrupt)[0, -1].softmax(-1)
    h.remove()
    return out


def test_tiny_gpt_logit_lens_patching_attribution():
    ours, _ = run_both(mech_interp, weights_of(tiny_gpt), rtol=1e-8, atol=1e-11)
    # patching the whole final residual stream at the last position restores the clean run
    np.testing.assert_allclose(ours["patching"][-1, -1], 1.0, rtol=1e-10)
    dla, total = ours["dla"]
    np.testing.assert_allclose(total, ours["logit_diffs"][0], rtol=1e-10)  # the components add up to the logit difference


# ----------------------------------------------------------------------------------------------
# A sparse autoencoder on hooked activations, as SAELens / Anthropic's write-ups train it: a tied
# pre-encoder bias initialised at the mean, unit-norm decoder rows, the gradient's component parallel to
# each row removed in place before the step, an L1 penalty weighted by decoder norms, dead features
# counted; then the SAE spliced back in by a forward hook, reconstruction loss measured
# ----------------------------------------------------------------------------------------------


def sparse_autoencoder(m, weights, steps=8):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, mlp(m), weights).double().eval()
    rng = np.random.default_rng(13)
    X = torch.from_numpy(rng.standard_normal((64, 6)))
    acts = []
    h = model[1].register_forward_hook(lambda mod, i, o: acts.append(o.detach()))
    with torch.no_grad():
        model(X)
    h.remove()
    A = acts[0]
    d_in, d_sae = A.shape[1], 24

    class SAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.W_enc = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(d_in, d_sae, dtype=torch.float64)))
            self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=torch.float64))
            self.W_dec = nn.Parameter(self.W_enc.data.T.clone())
            self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=torch.float64))
            with torch.no_grad():
                self.W_dec.data /= torch.norm(self.W_dec.data, dim=1, keepdim=True)

        def encode(self, x):
            return F.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

        def forward(self, x):
            f = self.encode(x)
            return f @ self.W_dec + self.b_dec, f

        @torch.no_grad()
        def remove_gradient_parallel_to_decoder_directions(self):
            parallel_component = torch.einsum("sd,sd->s", self.W_dec.grad, self.W_dec.data)
            self.W_dec.grad -= torch.einsum("s,sd->sd", parallel_component, self.W_dec.data)

        @torch.no_grad()
        def set_decoder_norm_to_unit_norm(self):
            self.W_dec.data /= torch.norm(self.W_dec.data, dim=1, keepdim=True)

    torch.manual_seed(3)
    sae = SAE()
    with torch.no_grad():
        sae.b_dec.data = A.mean(0).clone()
    opt = optim.Adam(sae.parameters(), lr=3e-3, betas=(0.9, 0.999))
    sched = optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 4))
    act_freq = torch.zeros(d_sae, dtype=torch.float64)
    history = []
    for step in range(steps):
        batch = A[(step * 16) % 64:(step * 16) % 64 + 16]
        recon, f = sae(batch)
        mse = (recon - batch).pow(2).sum(-1).mean()
        l1 = (f * sae.W_dec.norm(dim=1)).sum(-1).mean()
        loss = mse + 5e-3 * l1
        opt.zero_grad()
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        nn.utils.clip_grad_norm_(sae.parameters(), 1.0)  # (SAELens: torch.nn.utils, see test_torch_dot_nn_spelling)
        opt.step()
        sched.step()
        sae.set_decoder_norm_to_unit_norm()
        act_freq += (f > 0).double().sum(0)
        history.append((mse.item(), l1.item(), (f > 0).double().sum(-1).mean().item()))

    # splice the SAE in: the hooked activation replaced by its reconstruction
    def splice(module, inputs, output):
        return sae(output)[0]

    with torch.no_grad():
        clean = model(X)
        h = model[1].register_forward_hook(splice)
        spliced = model(X)
        h.remove()
    ce_gap = (F.kl_div(spliced.log_softmax(-1), clean.log_softmax(-1), log_target=True, reduction="batchmean"))
    return {"history": history, "W_dec": sae.W_dec.detach(), "norms": sae.W_dec.norm(dim=1).detach(),
            "dead": (act_freq == 0).sum(), "kl": ce_gap, "lr": sched.get_last_lr()}


def test_sparse_autoencoder_on_hooked_activations():
    ours, _ = run_both(sparse_autoencoder, weights_of(mlp, seed=9), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(ours["norms"], 1.0, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Attention maps out of nn.TransformerEncoder, the way a well-known forum answer does it: each layer's
# self_attn.forward wrapped to force need_weights=True, average_attn_weights=False, and a forward hook on
# self_attn saving output[1] (and calling retain_grad on it, which gets nothing); the maps then rolled out
# ----------------------------------------------------------------------------------------------


def encoder_attention_maps(m, weights):
    torch, nn = m.torch, m.nn
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    encoder = load(m, encoder, weights).double().eval()

    class SaveOutput:
        def __init__(self):
            self.outputs = []

        def __call__(self, module, module_in, module_out):
            module_out[1].retain_grad()
            self.outputs.append(module_out[1])

        def clear(self):
            self.outputs = []

    def patch_attention(m):
        forward_orig = m.forward

        def wrap(*args, **kwargs):
            kwargs["need_weights"] = True
            kwargs["average_attn_weights"] = False
            return forward_orig(*args, **kwargs)

        m.forward = wrap

    save_output = SaveOutput()
    handles = []
    for module in encoder.modules():
        if isinstance(module, nn.MultiheadAttention):
            patch_attention(module)
            handles.append(module.register_forward_hook(save_output))
    x = torch.from_numpy(np.random.default_rng(29).standard_normal((2, 5, 8))).requires_grad_(True)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    out = encoder(x, src_key_padding_mask=mask)
    out[:, 0].sum().backward()
    for h in handles:
        h.remove()
    maps = [o.detach() for o in save_output.outputs]
    # the returned weights are a view made after the output was computed from them: no gradient reaches it
    no_grads = [o.grad is None for o in save_output.outputs]
    result = torch.eye(5, dtype=torch.float64).expand(2, 5, 5)
    for a in maps:
        fused = a.mean(1) + torch.eye(5, dtype=torch.float64)
        result = (fused / fused.sum(-1, keepdim=True)) @ result
    return {"maps": maps, "no_grads": no_grads, "rollout": result, "x_grad": x.grad, "count": len(maps)}


def test_transformer_encoder_attention_maps_by_patched_forward():
    def make(m):
        layer = m.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
        return m.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)

    ours, _ = run_both(encoder_attention_maps, weights_of(make), rtol=1e-9, atol=1e-12)
    assert ours["count"] == 2 and ours["maps"][0].shape == (2, 2, 5, 5) and ours["no_grads"] == [True, True]
    np.testing.assert_array_equal(ours["maps"][1][1, :, :, 3:], 0)  # padded keys get no attention
