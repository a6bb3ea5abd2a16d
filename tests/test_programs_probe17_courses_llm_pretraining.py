# ruff: noqa: B007, E731  (the programs are kept as their authors wrote them)
"""Course and book programs, run as tests/probe17_courses_common.py says. Sebastian Raschka's "Build a Large Language
Model (From Scratch)": chapter 2's sliding-window GPTDatasetV1 in a DataLoader; chapter 3's attention ladder
(``nn.Parameter(torch.rand)`` self-attention, the tril mask renormalised by row sums against
``masked_fill(-torch.inf)``, the MultiHeadAttentionWrapper's ``cat`` of heads against the fused MultiHeadAttention
with its ``triu`` buffer and in-place ``masked_fill_``); chapter 4's GPTModel (LayerNorm with
``var(unbiased=False)``, tanh GELU built from ``torch.tensor(2.0 / torch.pi)``) and ``generate_text_simple``; chapter
5's training loop (AdamW, ``flatten(0, 1)`` cross-entropy, ``calc_loss_loader``), ``generate`` with top-k by
``torch.where`` against ``-inf`` and temperature sampling by ``multinomial``, and GPT-2 weights loaded by ``assign``
(``nn.Parameter`` replacing each weight, the fused c_attn split by ``np.split``); appendix D's warm-up plus cosine
schedule set on ``param_groups`` with ``clip_grad_norm_`` after warm-up."""

import math

import numpy as np
import pytest

from .probe17_courses_common import (
    GPT2_CONFIG,
    GPT2_IDS,
    GPT_CONFIG,
    calc_loss_batch,
    gpt2_params,
    llm_modules,
    load_weights_into_gpt,
)
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# LLMs from scratch: the model as chapters 3 and 4 write it
# ----------------------------------------------------------------------------------------------


def generate_text_simple(m, model, idx, max_new_tokens, context_size):
    torch = m.torch
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]
        probas = torch.softmax(logits, dim=-1)
        idx_next = torch.argmax(probas, dim=-1, keepdim=True)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def generate(m, model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None):
    torch = m.torch
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]
        if top_k is not None:
            top_logits, _ = torch.topk(logits, top_k)
            min_val = top_logits[:, -1]
            logits = torch.where(logits < min_val, torch.tensor(float("-inf")).to(logits.device), logits)
        if temperature > 0.0:
            logits = logits / temperature
            probs = torch.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1)
        else:
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)
        if idx_next == eos_id:
            break
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def token_stream(n=400, vocab=50, seed=0):
    """A stand-in for the tokenised short story: a noisy repeating pattern a tiny GPT can learn."""
    rng = np.random.default_rng(seed)
    base = np.tile(np.arange(0, vocab, 3), n // 10 + 1)[:n]
    noise = rng.random(n) < 0.1
    return np.where(noise, rng.integers(0, vocab, n), base).tolist()


def make_dataloader(m, token_ids, batch_size=4, max_length=8, stride=8, shuffle=False, drop_last=True):
    torch, data = m.torch, m.data

    class GPTDatasetV1(data.Dataset):
        def __init__(self, token_ids, max_length, stride):
            self.input_ids = []
            self.target_ids = []
            for i in range(0, len(token_ids) - max_length, stride):
                input_chunk = token_ids[i:i + max_length]
                target_chunk = token_ids[i + 1: i + max_length + 1]
                self.input_ids.append(torch.tensor(input_chunk))
                self.target_ids.append(torch.tensor(target_chunk))

        def __len__(self):
            return len(self.input_ids)

        def __getitem__(self, idx):
            return self.input_ids[idx], self.target_ids[idx]

    dataset = GPTDatasetV1(token_ids, max_length, stride)
    return data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=0)


def calc_loss_loader(m, data_loader, model, device="cpu", num_batches=None):
    total_loss = 0.
    if len(data_loader) == 0:
        return float("nan")
    elif num_batches is None:
        num_batches = len(data_loader)
    else:
        num_batches = min(num_batches, len(data_loader))
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i < num_batches:
            loss = calc_loss_batch(m, input_batch, target_batch, model, device)
            total_loss += loss.item()
        else:
            break
    return total_loss / num_batches


def attention_ladder(m):
    """Chapter 3: from a hand-made self-attention to the fused multi-head module."""
    torch, nn = m.torch, m.nn
    MultiHeadAttention = llm_modules(m)[0]
    inputs = torch.tensor(
        [[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
         [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]])
    # simplified attention without weights
    attn_scores = inputs @ inputs.T
    attn_weights = torch.softmax(attn_scores, dim=-1)
    all_context_vecs = attn_weights @ inputs

    class SelfAttention_v1(nn.Module):
        def __init__(self, d_in, d_out):
            super().__init__()
            self.W_query = nn.Parameter(torch.rand(d_in, d_out))
            self.W_key = nn.Parameter(torch.rand(d_in, d_out))
            self.W_value = nn.Parameter(torch.rand(d_in, d_out))

        def forward(self, x):
            keys = x @ self.W_key
            queries = x @ self.W_query
            values = x @ self.W_value
            attn_scores = queries @ keys.T
            attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
            return attn_weights @ values

    class SelfAttention_v2(nn.Module):
        def __init__(self, d_in, d_out, qkv_bias=False):
            super().__init__()
            self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
            self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
            self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

        def forward(self, x):
            keys = self.W_key(x)
            queries = self.W_query(x)
            values = self.W_value(x)
            attn_scores = queries @ keys.T
            attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
            return attn_weights @ values

    torch.manual_seed(123)
    sa_v1 = SelfAttention_v1(3, 2)
    v1 = sa_v1(inputs)
    torch.manual_seed(789)
    sa_v2 = SelfAttention_v2(3, 2)
    v2 = sa_v2(inputs)
    # the exercise: v1 gives v2's numbers once it holds v2's (transposed) weights
    sa_v1.W_query = nn.Parameter(sa_v2.W_query.weight.T)
    sa_v1.W_key = nn.Parameter(sa_v2.W_key.weight.T)
    sa_v1.W_value = nn.Parameter(sa_v2.W_value.weight.T)
    v1_from_v2 = sa_v1(inputs)

    # the causal mask: renormalised by rows, and by -inf before the softmax
    queries = sa_v2.W_query(inputs)
    keys = sa_v2.W_key(inputs)
    attn_scores = queries @ keys.T
    attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
    context_length = attn_scores.shape[0]
    mask_simple = torch.tril(torch.ones(context_length, context_length))
    masked_simple = attn_weights * mask_simple
    row_sums = masked_simple.sum(dim=-1, keepdim=True)
    masked_simple_norm = masked_simple / row_sums
    mask = torch.triu(torch.ones(context_length, context_length), diagonal=1)
    masked = attn_scores.masked_fill(mask.bool(), -torch.inf)
    attn_weights_inf = torch.softmax(masked / keys.shape[-1] ** 0.5, dim=1)

    torch.manual_seed(123)
    dropout = torch.nn.Dropout(0.5)
    example = torch.ones(6, 6)
    dropped = dropout(example)

    class CausalAttention(nn.Module):
        def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
            super().__init__()
            self.d_out = d_out
            self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
            self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
            self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
            self.dropout = nn.Dropout(dropout)
            self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

        def forward(self, x):
            b, num_tokens, d_in = x.shape
            keys = self.W_key(x)
            queries = self.W_query(x)
            values = self.W_value(x)
            attn_scores = queries @ keys.transpose(1, 2)
            attn_scores.masked_fill_(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
            attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
            attn_weights = self.dropout(attn_weights)
            return attn_weights @ values

    class MultiHeadAttentionWrapper(nn.Module):
        def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
            super().__init__()
            self.heads = nn.ModuleList(
                [CausalAttention(d_in, d_out, context_length, dropout, qkv_bias) for _ in range(num_heads)])

        def forward(self, x):
            return torch.cat([head(x) for head in self.heads], dim=-1)

    batch = torch.stack((inputs, inputs), dim=0)
    torch.manual_seed(123)
    wrapper = MultiHeadAttentionWrapper(3, 2, batch.shape[1], 0.0, num_heads=2)
    wrapped = wrapper(batch)
    # the fused module holding the wrapper's heads stacked (and an identity output projection)
    fused = MultiHeadAttention(3, 4, batch.shape[1], 0.0, num_heads=2)
    with torch.no_grad():
        fused.W_query.weight.copy_(torch.cat([h.W_query.weight for h in wrapper.heads], dim=0))
        fused.W_key.weight.copy_(torch.cat([h.W_key.weight for h in wrapper.heads], dim=0))
        fused.W_value.weight.copy_(torch.cat([h.W_value.weight for h in wrapper.heads], dim=0))
        fused.out_proj.weight.copy_(torch.eye(4))
        fused.out_proj.bias.zero_()
    fused_out = fused(batch)
    fused_out.sum().backward()
    wrapped.sum().backward()
    return {"all_context_vecs": all_context_vecs, "v1": v1, "v2": v2, "v1_from_v2": v1_from_v2,
            "masked_simple_norm": masked_simple_norm, "attn_weights_inf": attn_weights_inf, "dropped": dropped,
            "wrapped": wrapped, "fused": fused_out,
            "fused_grad_q": fused.W_query.weight.grad,
            "wrapper_grad_q": torch.cat([h.W_query.weight.grad for h in wrapper.heads], dim=0)}


def test_llms_from_scratch_attention_ladder():
    ours, _ = run_both(attention_ladder)
    np.testing.assert_allclose(ours["v1_from_v2"], ours["v2"], rtol=1e-6)
    np.testing.assert_allclose(ours["masked_simple_norm"], ours["attn_weights_inf"], rtol=1e-5, atol=1e-7)
    assert np.all(np.triu(ours["attn_weights_inf"], 1) == 0)
    assert set(np.unique(ours["dropped"])) <= {0.0, 2.0}
    np.testing.assert_allclose(ours["fused"], ours["wrapped"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["fused_grad_q"], ours["wrapper_grad_q"], rtol=1e-5, atol=1e-6)
    inputs = np.array([[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
                       [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]], dtype=np.float32)
    s = inputs @ inputs.T
    w = np.exp(s - s.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    np.testing.assert_allclose(ours["all_context_vecs"], w @ inputs, rtol=1e-5)


def gpt_train_and_generate(m):
    """Chapters 4 and 5: the GPTModel trained by ``train_model_simple``, then generating text."""
    torch = m.torch
    GPTModel = llm_modules(m)[3]
    torch.manual_seed(123)
    model = GPTModel(GPT_CONFIG)
    total_params = sum(p.numel() for p in model.parameters())
    ids = token_stream()
    split_idx = int(0.9 * len(ids))
    train_loader = make_dataloader(m, ids[:split_idx], batch_size=4, max_length=8, stride=8, shuffle=True)
    val_loader = make_dataloader(m, ids[split_idx:], batch_size=2, max_length=8, stride=8, drop_last=False)
    start_context = torch.tensor([[0, 3, 6]])
    untrained = generate_text_simple(m, model, start_context, 6, GPT_CONFIG["context_length"])
    with torch.no_grad():
        initial_train_loss = calc_loss_loader(m, train_loader, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.004, weight_decay=0.1)
    train_losses, val_losses, tokens_seen = [], [], 0
    global_step = -1
    for epoch in range(2):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = calc_loss_batch(m, input_batch, target_batch, model)
            loss.backward()
            optimizer.step()
            tokens_seen += input_batch.numel()
            global_step += 1
            if global_step % 5 == 0:
                model.eval()
                with torch.no_grad():
                    train_losses.append(calc_loss_loader(m, train_loader, model, num_batches=2))
                    val_losses.append(calc_loss_loader(m, val_loader, model, num_batches=2))
                model.train()
    model.eval()
    greedy = generate_text_simple(m, model, start_context, 10, GPT_CONFIG["context_length"])
    torch.manual_seed(123)
    sampled = generate(m, model, start_context, max_new_tokens=10, context_size=GPT_CONFIG["context_length"],
                       top_k=5, temperature=1.4)
    top_k_greedy = generate(m, model, start_context, 10, GPT_CONFIG["context_length"], top_k=3)
    stopped = generate(m, model, start_context, 10, GPT_CONFIG["context_length"], eos_id=int(greedy[0, 4]))
    # the temperature demo of chapter 5 on a fixed logit vector
    next_token_logits = torch.tensor([4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79])

    def softmax_with_temperature(logits, temperature):
        scaled_logits = logits / temperature
        return torch.softmax(scaled_logits, dim=0)

    scaled = [softmax_with_temperature(next_token_logits, T) for T in [1, 0.1, 5]]
    torch.manual_seed(123)
    sample = [torch.multinomial(scaled[0], num_samples=1).item() for i in range(1_000)]
    counts = torch.bincount(torch.tensor(sample), minlength=9)
    top_logits, top_pos = torch.topk(next_token_logits, 3)
    new_logits = torch.where(condition=next_token_logits < top_logits[-1], input=torch.tensor(float("-inf")),
                             other=next_token_logits)
    return {"total_params": total_params, "untrained": untrained, "initial": initial_train_loss,
            "train_losses": train_losses, "val_losses": val_losses, "tokens_seen": tokens_seen, "greedy": greedy,
            "sampled": sampled, "top_k_greedy": top_k_greedy, "stopped": stopped, "scaled": scaled,
            "counts": counts, "new_logits": torch.softmax(new_logits, dim=0),
            "weights": {k: v for k, v in model.state_dict().items() if "mask" not in k}}


def test_llms_from_scratch_gpt_training_and_generation():
    ours, _ = run_both(gpt_train_and_generate, rtol=2e-4, atol=2e-5)
    assert ours["total_params"] == 50 * 16 + 16 * 16 + 2 * (4 * 16 * 16 + 16 + 2 * 16 * 64 + 64 + 16 + 4 * 16) \
        + 2 * 16 + 16 * 50
    assert ours["initial"] == pytest.approx(math.log(50), rel=0.1)
    assert ours["train_losses"][-1] < ours["train_losses"][0] - 1
    assert ours["stopped"].shape[1] == 4  # one token appended, stopped before the end token (the 2nd)
    assert ours["counts"].sum() == 1000 and ours["counts"][3] > ours["counts"][7] > ours["counts"][0]
    assert np.count_nonzero(ours["new_logits"]) == 3


def gpt2_by_numpy(params, idx, cfg):
    """GPT-2's forward as the checkpoint defines it, in float64 NumPy."""
    p = lambda a: np.asarray(a, np.float64)
    x = p(params["wte"])[idx] + p(params["wpe"])[: idx.shape[1]]
    ln = lambda x, g, b: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * g + b
    gelu = lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    B, T = idx.shape
    H, d = cfg["n_heads"], cfg["emb_dim"]
    for blk in params["blocks"]:
        h = ln(x, p(blk["ln_1"]["g"]), p(blk["ln_1"]["b"]))
        qkv = h @ p(blk["attn"]["c_attn"]["w"]) + p(blk["attn"]["c_attn"]["b"])
        q, k, v = (a.reshape(B, T, H, d // H).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, -1))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // H) + np.triu(np.full((T, T), -np.inf), 1)
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        a = (w @ v).transpose(0, 2, 1, 3).reshape(B, T, d)
        x = x + a @ p(blk["attn"]["c_proj"]["w"]) + p(blk["attn"]["c_proj"]["b"])
        h = ln(x, p(blk["ln_2"]["g"]), p(blk["ln_2"]["b"]))
        x = x + gelu(h @ p(blk["mlp"]["c_fc"]["w"]) + p(blk["mlp"]["c_fc"]["b"])) @ p(blk["mlp"]["c_proj"]["w"]) \
            + p(blk["mlp"]["c_proj"]["b"])
    return ln(x, p(params["g"]), p(params["b"])) @ p(params["wte"]).T


def gpt2_weight_loading(m):
    torch = m.torch
    GPTModel = llm_modules(m)[3]
    torch.manual_seed(123)
    gpt = GPTModel(GPT2_CONFIG)
    gpt.eval()
    load_weights_into_gpt(m, gpt, gpt2_params(GPT2_CONFIG))
    try:
        load_weights_into_gpt(m, gpt, {"wpe": np.zeros((3, 3), np.float32)})
        mismatch = None
    except ValueError as e:
        mismatch = str(e).split(". Left")[0]  # (the shape prints as a tuple here, a torch.Size there: README)
    logits = gpt(torch.tensor(GPT2_IDS))
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), torch.tensor(GPT2_IDS)[:, 1:].flatten())
    loss.backward()
    tied = gpt.out_head.weight is gpt.tok_emb.weight
    n_params = len(list(gpt.parameters()))
    return {"logits": logits, "loss": loss, "mismatch": mismatch, "tied": tied, "n_params": n_params,
            "grad_wte": gpt.tok_emb.weight.grad, "grad_head": gpt.out_head.weight.grad,
            "grad_q": gpt.trf_blocks[0].att.W_query.weight.grad,
            "grad_scale": gpt.trf_blocks[1].norm2.scale.grad}


def test_llms_from_scratch_gpt2_weights_by_assign():
    ours, _ = run_both(gpt2_weight_loading, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["logits"], gpt2_by_numpy(gpt2_params(GPT2_CONFIG), GPT2_IDS, GPT2_CONFIG),
                               rtol=1e-4, atol=1e-4)
    assert ours["mismatch"] == "Shape mismatch"
    assert ours["tied"] is False  # two Parameters made from the same array
    assert ours["n_params"] == 2 + 2 * 16 + 2 + 1


def appendix_d_training_loop(m):
    """Appendix D: linear warm-up then cosine decay written onto ``param_groups`` each step, gradient clipping
    from the end of warm-up, the learning rates and the norms tracked."""
    torch = m.torch
    GPTModel = llm_modules(m)[3]
    torch.manual_seed(123)
    model = GPTModel(GPT_CONFIG)
    train_loader = make_dataloader(m, token_stream(), batch_size=8, max_length=8, stride=8, shuffle=True)
    n_epochs = 2
    peak_lr, initial_lr = 0.01, 0.0001
    min_lr = 0.1 * initial_lr
    total_training_steps = len(train_loader) * n_epochs
    warmup_steps = int(0.2 * total_training_steps)
    optimizer = torch.optim.AdamW(model.parameters(), weight_decay=0.1)
    lr_increment = (peak_lr - initial_lr) / warmup_steps
    global_step = -1
    track_lrs, train_losses, norms = [], [], []
    for epoch in range(n_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            global_step += 1
            if global_step < warmup_steps:
                lr = initial_lr + global_step * lr_increment
            else:
                progress = ((global_step - warmup_steps) / (total_training_steps - warmup_steps))
                lr = min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            track_lrs.append(lr)
            loss = calc_loss_batch(m, input_batch, target_batch, model)
            loss.backward()
            if global_step > warmup_steps:
                norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0))
            optimizer.step()
            train_losses.append(loss.item())
    total_norm = torch.norm(torch.stack([p.grad.detach().norm(2) for p in model.parameters()]), 2)
    return {"lrs": track_lrs, "losses": train_losses, "norms": norms, "last_norm": total_norm,
            "wte": model.tok_emb.weight}


def test_llms_from_scratch_appendix_d_schedule_and_clipping():
    ours, _ = run_both(appendix_d_training_loop, rtol=2e-4, atol=2e-5)
    lrs = ours["lrs"]
    assert lrs[0] == pytest.approx(0.0001) and max(lrs) == pytest.approx(0.01) and lrs[-1] < 0.001
    assert ours["last_norm"] <= 1.0 + 1e-5  # the last step's gradients were clipped
    assert ours["losses"][-1] < ours["losses"][0]
