# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Language-model building blocks as they are written today, run as tests/probe13_llm_common.py says. Training: the
Qwen3-style decoder trained through ``torch.compile`` with AdamW parameter groups, a warmup-stable-decay
``LambdaLR``, gradient accumulation normalised by the step's label tokens and ``clip_grad_norm_(foreach=True)``, its
compiled state dict (``_orig_mod.``) loaded into a fresh model; its sliding-window mask by hand; SDPA on rows masked
throughout (math backend). Training-memory idioms: Liger-Kernel's fused linear cross-entropy ``autograd.Function``
(``addmm(out=)``); packed documents with a block-diagonal mask from ``cu_seqlens`` under
``checkpoint(use_reentrant=False)`` and ``save_on_cpu``; the optimizer step fused into backward by
``register_post_accumulate_grad_hook``."""

import math

import numpy as np
import pytest

from . import probe13_llm_common
from .probe13_llm_common import Q_V, Q_WINDOW, make_qwen, qwen_batch, sliding_causal_mask
from .pytorch_programs import OURS, load, run_both

qwen_weights = probe13_llm_common.qwen_weights  # the fixture


# ----------------------------------------------------------------------------------------------
# A Qwen3-style decoder (Hugging Face's modeling_qwen3.py, tiny)
# ----------------------------------------------------------------------------------------------


def wsd_lambda(num_warmup_steps, num_stable_steps, num_decay_steps, min_lr_ratio=0.1):
    """transformers' get_wsd_schedule: linear warmup, a plateau, then a cosine decay to min_lr_ratio."""
    def lr_lambda(current_step):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        if current_step < num_warmup_steps + num_stable_steps:
            return 1.0
        if current_step < num_warmup_steps + num_stable_steps + num_decay_steps:
            progress = float(current_step - num_warmup_steps - num_stable_steps) / float(max(1, num_decay_steps))
            value = max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
            return (1.0 - min_lr_ratio) * value + min_lr_ratio
        return min_lr_ratio
    return lr_lambda


def qwen_training(m, weights, steps=4, accumulation=2):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, make_qwen(m), weights)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    compiled = torch.compile(model, backend="eager")  # (inductor would take seconds to build here)
    param_dict = {pn: p for pn, p in compiled.named_parameters() if p.requires_grad}
    decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
    nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
    optimizer = m.optim.AdamW([{"params": decay_params, "weight_decay": 0.1},
                               {"params": nodecay_params, "weight_decay": 0.0}],
                              lr=4e-3, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    scheduler = m.optim.lr_scheduler.LambdaLR(optimizer, wsd_lambda(1, 1, 2))
    ids, attention_mask, labels = (torch.tensor(a) for a in qwen_batch())
    losses, norms, lrs = [], [], []
    compiled.train()
    for step in range(steps):
        # the number of label tokens of the whole step, as the Trainer counts it before the micro-batches
        num_items_in_batch = (labels[:, 1:] != -100).sum()
        for micro in range(accumulation):
            sl = slice(2 * micro, 2 * micro + 2)
            loss, _ = compiled(ids[sl], attention_mask[sl], labels=labels[sl], num_items_in_batch=num_items_in_batch)
            loss.backward()
            losses.append(loss.item())
        norms.append(nn.utils.clip_grad_norm_(compiled.parameters(), max_norm=0.5, foreach=True))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        lrs.append(scheduler.get_last_lr()[0])
    grads_are_none = all(p.grad is None for p in model.parameters())
    state = {k.removeprefix("_orig_mod."): v for k, v in compiled.state_dict().items()}
    fresh = make_qwen(m)
    missing = fresh.load_state_dict(state, strict=True)
    compiled.eval()
    with torch.no_grad():
        _, logits = fresh(ids, attention_mask)
        _, logits_compiled = compiled(ids, attention_mask)
    n_params = sum(p.numel() for p in model.parameters())
    return (losses, norms, lrs, grads_are_none, sorted(state), logits, logits_compiled, n_params,
            [p.detach() for p in model.parameters()])


def test_qwen3_qk_norm_sliding_window_tied_compiled_training(qwen_weights):
    (losses, norms, lrs, grads_are_none, keys, logits, logits_compiled, n_params, params), _ = run_both(
        qwen_training, qwen_weights, rtol=1e-4, atol=1e-5)
    assert lrs == pytest.approx([4e-3, 4e-3, 4e-3 * (0.9 * 0.5 + 0.1), 4e-4])
    assert grads_are_none and np.isfinite(losses).all()
    assert "lm_head.weight" in keys and "model.rotary_emb.inv_freq" not in keys
    np.testing.assert_array_equal(logits, logits_compiled)
    # the tied weight is counted once
    assert n_params == sum(v.size for k, v in qwen_weights.items() if k != "lm_head.weight")
    # the two micro-batches' losses are each summed over the step's label tokens: they add to the mean loss
    ids, attention_mask, labels = qwen_batch()
    assert losses[0] + losses[1] == pytest.approx(_qwen_mean_loss(qwen_weights), rel=1e-5)


def _qwen_mean_loss(weights):
    torch = OURS.torch
    model = load(OURS, make_qwen(OURS), weights)
    ids, attention_mask, labels = (torch.tensor(a) for a in qwen_batch())
    loss, _ = model(ids, attention_mask, labels=labels)
    return loss.item()


def qwen_mask_program(m):
    torch = m.torch
    ids, attention_mask, labels = (torch.tensor(a) for a in qwen_batch())
    prefill = sliding_causal_mask(m, attention_mask, 10, 10, torch.float32, torch.arange(10), Q_WINDOW, False)
    unmasked = sliding_causal_mask(m, attention_mask, 10, 10, torch.float32, torch.arange(10), Q_WINDOW)
    decode = sliding_causal_mask(m, attention_mask, 2, 10, torch.float32, torch.arange(8, 10), Q_WINDOW, False)
    return prefill, unmasked, decode


def test_qwen_sliding_window_mask_by_hand():
    """The float mask lets query i see keys j with i - window < j <= i that are not padding."""
    (prefill, unmasked, decode), _ = run_both(qwen_mask_program)
    attention_mask = qwen_batch()[1]
    i, j = np.meshgrid(np.arange(10), np.arange(10), indexing="ij")
    allowed = (j <= i) & (j > i - Q_WINDOW)
    for b in range(4):
        expected = allowed & (attention_mask[b][None, :] == 1)
        np.testing.assert_array_equal(prefill[b, 0] == 0, expected)
        assert (prefill[b, 0][~expected] == np.finfo(np.float32).min).all()
        np.testing.assert_array_equal(decode[b, 0], prefill[b, 0, 8:])
        masked_throughout = ~expected.any(-1)
        assert masked_throughout.sum() == (attention_mask[b] == 0).sum()  # the padding's own rows
        assert (unmasked[b, 0][masked_throughout] == 0).all()
        np.testing.assert_array_equal(unmasked[b, 0][~masked_throughout], prefill[b, 0][~masked_throughout])


def sdpa_rows_masked_throughout(m):
    """A float mask of finfo.min over a whole query row (left padding without _unmask_unattended): the row's
    softmax is uniform; PyTorch's fused CPU kernel then gives that row's query gradient times the number of keys
    (its backward recomputes the probabilities from a logsumexp that finfo.min swallowed), its math backend the
    true gradient, which chainrule gives."""
    torch, F = m.torch, m.F
    from importlib import import_module
    attention = import_module(m.nn.__name__ + ".attention")
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 8, generator=g).requires_grad_()
    k = torch.randn(2, 2, 5, 8, generator=g).requires_grad_()
    v = torch.randn(2, 2, 5, 8, generator=g).requires_grad_()
    min_dtype = torch.finfo(torch.float32).min
    mask = torch.full((5, 5), min_dtype) * (torch.arange(5) > torch.arange(5).reshape(-1, 1))
    mask = mask[None, None].expand(2, 1, -1, -1).clone()
    mask[1, :, :, :2] = min_dtype  # two left-padding keys: queries 0 and 1 of the second sequence see nothing
    with attention.sdpa_kernel(attention.SDPBackend.MATH):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3, enable_gqa=True)
    out.pow(2).sum().backward()
    # by hand: the softmax composed of its parts
    scores = q.detach() @ k.detach().repeat_interleave(2, dim=1).transpose(-1, -2) * 0.3 + mask
    by_hand = scores.softmax(-1) @ v.detach().repeat_interleave(2, dim=1)
    return out, by_hand, q.grad, k.grad, v.grad


def test_sdpa_rows_masked_throughout_by_the_math_backend():
    (out, by_hand, *grads), _ = run_both(sdpa_rows_masked_throughout, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1, :, 0], out[1, :, 1], rtol=1e-6)  # both rows average every value


# ----------------------------------------------------------------------------------------------
# Training-memory idioms: Liger-Kernel's fused linear cross-entropy as a torch.autograd.Function (the gradients
# computed chunk by chunk in the forward, addmm_ into a preallocated weight gradient, scaled in the backward);
# packed sequences with position ids restarting per document and a block-diagonal causal mask from cu_seqlens;
# blocks under torch.utils.checkpoint(use_reentrant=False) with activations offloaded by save_on_cpu
# ----------------------------------------------------------------------------------------------


def fused_linear_cross_entropy(m):
    torch, F = m.torch, m.F

    class LigerFusedLinearCrossEntropyFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, _input, weight, target, bias=None, ignore_index=-100, label_smoothing=0.0,
                    reduction="mean"):
            BT, H = _input.shape
            V = weight.shape[0]
            inc_factor = math.ceil(V / H)
            chunk_size = max(1, 2 ** math.ceil(math.log2(math.ceil(BT / inc_factor))) // 2)  # (smaller chunks)
            num_chunks = math.ceil(BT / chunk_size)
            grad_weight = torch.zeros_like(weight)
            grad_input = torch.zeros_like(_input)
            grad_bias = torch.zeros_like(bias) if bias is not None else None
            loss_1d = torch.zeros(BT, dtype=torch.float32)
            target_mask = target != ignore_index
            total_n_non_ignore = target_mask.sum().item()
            for chunk_id in range(num_chunks):
                start_idx = chunk_id * chunk_size
                end_idx = min((chunk_id + 1) * chunk_size, BT)
                _input_chunk = _input[start_idx:end_idx]
                logits_chunk = _input_chunk @ weight.t()
                if bias is not None:
                    logits_chunk = logits_chunk + bias
                target_chunk = target[start_idx:end_idx]
                # the loss and d(loss)/d(logits) of the chunk at once (Liger's Triton kernel, in PyTorch)
                valid = target_chunk != ignore_index
                log_probs = torch.log_softmax(logits_chunk.float(), dim=-1)
                safe_target = target_chunk.masked_fill(~valid, 0)
                nll = -log_probs.gather(-1, safe_target[:, None]).squeeze(-1)
                smooth = -log_probs.mean(-1)
                loss_chunk = ((1 - label_smoothing) * nll + label_smoothing * smooth) * valid
                grad_logits_chunk = log_probs.exp() - label_smoothing / V
                grad_logits_chunk.scatter_add_(1, safe_target[:, None],
                                               torch.full_like(safe_target[:, None], -(1 - label_smoothing),
                                                               dtype=grad_logits_chunk.dtype))
                grad_logits_chunk = grad_logits_chunk * valid[:, None]
                if reduction == "mean":
                    grad_logits_chunk = grad_logits_chunk / total_n_non_ignore
                loss_1d[start_idx:end_idx] = loss_chunk
                grad_logits_chunk = grad_logits_chunk.to(_input.dtype)
                grad_input[start_idx:end_idx] = grad_logits_chunk @ weight
                torch.addmm(input=grad_weight, mat1=grad_logits_chunk.t(), mat2=_input_chunk, out=grad_weight,
                            alpha=1.0, beta=1.0)
                if bias is not None:
                    torch.add(input=grad_bias, other=grad_logits_chunk.sum(dim=0), out=grad_bias, alpha=1.0)
            loss = torch.sum(loss_1d)
            if reduction == "mean":
                loss = loss / total_n_non_ignore
            ctx.save_for_backward(grad_input.detach(), grad_weight.detach(),
                                  grad_bias.detach() if bias is not None else None)
            return loss

        @staticmethod
        def backward(ctx, grad_output):
            grad_input, grad_weight, grad_bias = ctx.saved_tensors
            if not torch.equal(grad_output, torch.tensor(1.0, device=grad_output.device)):
                grad_input = grad_input * grad_output
                grad_weight = grad_weight * grad_output
                grad_bias = grad_bias * grad_output if grad_bias is not None else None
            return grad_input, grad_weight, None, grad_bias, None, None, None

    return LigerFusedLinearCrossEntropyFunction


def fused_ce_program(m, label_smoothing):
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(26, 8, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(Q_V, 8, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(Q_V, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, Q_V, (26,), generator=g)
    target[[3, 7, 8]] = -100
    fused = fused_linear_cross_entropy(m).apply(hidden, weight, target, bias, -100, label_smoothing)
    (2.5 * fused).backward()  # a grad_output other than 1 is scaled in the backward
    fused_grads = [t.grad.clone() for t in (hidden, weight, bias)]
    for t in (hidden, weight, bias):
        t.grad = None
    plain_loss = F.cross_entropy(F.linear(hidden, weight, bias), target, ignore_index=-100,
                                 label_smoothing=label_smoothing)
    (2.5 * plain_loss).backward()
    return fused, plain_loss, fused_grads, [t.grad for t in (hidden, weight, bias)]


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_liger_fused_linear_cross_entropy_function(label_smoothing):
    (fused, plain_loss, fused_grads, plain_grads), _ = run_both(fused_ce_program, label_smoothing, rtol=1e-6,
                                                                atol=1e-7)
    # (the fused kernel computes its softmax in float32, as Liger's does)
    np.testing.assert_allclose(fused, plain_loss, rtol=1e-6)
    for a, b in zip(fused_grads, plain_grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def packing_program(m, weights):
    torch, F = m.torch, m.F
    from importlib import import_module
    checkpoint = import_module(m.torch.__name__ + ".utils.checkpoint").checkpoint
    model = load(m, make_qwen(m), weights)
    rng = np.random.default_rng(9)
    documents = [torch.tensor(rng.integers(1, Q_V, n)) for n in (4, 3, 5)]
    seqlens = torch.tensor([len(d) for d in documents])
    cu_seqlens = F.pad(torch.cumsum(seqlens, 0, dtype=torch.int32), (1, 0))
    packed = torch.cat(documents)[None]
    total = packed.shape[1]
    # position ids restart at each document (DataCollatorWithFlattening)
    position_ids = torch.cat([torch.arange(n) for n in seqlens.tolist()])[None]
    # the block-diagonal causal mask from cu_seqlens, as a float mask over the packed row
    doc_ids = torch.searchsorted(cu_seqlens[1:], torch.arange(total), right=True)
    same_doc = doc_ids[:, None] == doc_ids[None, :]
    causal = torch.ones(total, total, dtype=torch.bool).tril()
    block_diag = torch.block_diag(*[torch.ones(n, n, dtype=torch.bool).tril() for n in seqlens.tolist()])
    float_mask = torch.zeros(1, 1, total, total).masked_fill(~(same_doc & causal), torch.finfo(torch.float32).min)

    def forward(ids, pos, mask):
        hidden = model.model.embed_tokens(ids)
        cos_sin = model.model.rotary_emb(hidden, pos)
        for layer in model.model.layers:
            hidden = checkpoint(layer, hidden, mask, cos_sin, use_reentrant=False)
        return model.lm_head(model.model.norm(hidden))

    with torch.autograd.graph.save_on_cpu(pin_memory=False):
        logits = forward(packed, position_ids, float_mask)
    labels = torch.cat([F.pad(d[1:], (0, 1), value=-100) for d in documents])
    loss = F.cross_entropy(logits[0], labels, ignore_index=-100, reduction="sum")
    loss.backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    # each document on its own, without checkpointing: the same logits, loss and gradients
    separate_logits, separate_loss = [], 0.0
    for d in documents:
        n = len(d)
        mask = torch.zeros(1, 1, n, n).masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(),
                                                   torch.finfo(torch.float32).min)
        hidden = model.model.embed_tokens(d[None])
        cos_sin = model.model.rotary_emb(hidden, torch.arange(n)[None])
        for layer in model.model.layers:
            hidden = layer(hidden, mask, cos_sin)
        doc_logits = model.lm_head(model.model.norm(hidden))
        separate_logits.append(doc_logits[0])
        separate_loss = separate_loss + F.cross_entropy(doc_logits[0, :-1], d[1:], reduction="sum")
    separate_loss.backward()
    return (logits[0], torch.cat(separate_logits), loss, separate_loss, packed_grads,
            {n: p.grad for n, p in model.named_parameters()}, torch.equal(block_diag, same_doc & causal), cu_seqlens)


def test_packed_documents_with_checkpointing_and_offloading(qwen_weights):
    (logits, separate, loss, separate_loss, packed_grads, separate_grads, masks_agree, cu_seqlens), _ = run_both(
        packing_program, qwen_weights, rtol=1e-4, atol=1e-5)
    assert masks_agree and list(cu_seqlens) == [0, 4, 7, 12]
    np.testing.assert_allclose(logits, separate, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loss, separate_loss, rtol=1e-5)
    for name in packed_grads:
        np.testing.assert_allclose(packed_grads[name], separate_grads[name], rtol=1e-4, atol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------------------------
# The optimizer step fused into the backward pass (PyTorch's tutorial, torchtune's optimizer_in_bwd): one
# AdamW per parameter stepped from register_post_accumulate_grad_hook, once per step also for the tied weight
# ----------------------------------------------------------------------------------------------


def optimizer_in_backward_program(m, weights, fused, steps=3):
    torch = m.torch
    model = load(m, make_qwen(m), weights)
    ids, attention_mask, labels = (torch.tensor(a) for a in qwen_batch())
    calls = []
    if fused:
        optimizer_dict = {p: m.optim.AdamW([p], lr=1e-2, weight_decay=0.1 if p.dim() >= 2 else 0.0)
                          for p in model.parameters()}

        def optimizer_hook(parameter) -> None:
            calls.append(tuple(parameter.shape))
            optimizer_dict[parameter].step()
            optimizer_dict[parameter].zero_grad()

        for p in model.parameters():
            p.register_post_accumulate_grad_hook(optimizer_hook)
    else:
        optimizer = m.optim.AdamW([{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
                                   {"params": [p for p in model.parameters() if p.dim() < 2],
                                    "weight_decay": 0.0}], lr=1e-2)
    losses = []
    for step in range(steps):
        loss, _ = model(ids, attention_mask, labels=labels)
        if not fused:
            optimizer.zero_grad()
        loss.backward()
        if not fused:
            optimizer.step()
        losses.append(loss.item())
    return losses, len(calls), [p.detach() for p in model.parameters()], all(p.grad is None for p in model.parameters())


def test_optimizer_step_in_backward_hooks(qwen_weights):
    (losses, calls, params, grads_freed), _ = run_both(optimizer_in_backward_program, qwen_weights, True, rtol=1e-4,
                                                       atol=1e-5)
    n_params = len(params)
    assert calls == 3 * n_params and grads_freed
    reference = optimizer_in_backward_program(OURS, qwen_weights, False)
    np.testing.assert_allclose(losses, reference[0], rtol=1e-5)
    for a, b in zip(params, reference[2]):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6)
