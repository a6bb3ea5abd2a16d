# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Language-model building blocks as they are written today, run as tests/probe13_llm_common.py says. Inference:
generation from a static KV cache written by ``index_copy_`` under ``inference_mode``, a ``torch.cat`` cache and no
cache, with repetition / presence / frequency penalties, min-p, typical-p (``nansum``), top-k / top-p,
``multinomial`` and gpt-fast's exponential race on a seeded ``Generator``, eos padding; chunked prefill. Speculative
decoding verified under ``nn.attention.bias.causal_lower_right`` with cache roll-back, and beam search reordering its
cache by ``index_select``. Half-precision inference with float32 norms (``nn.RMSNorm``'s default eps), and the
float16 decoder on SDPA's math kernel giving PyTorch's logits to the bit. gpt-fast's ``torch._dynamo.config`` and
``torch._inductor.config`` settings, imported as modules."""

import numpy as np

from . import probe13_llm_common
from .probe13_llm_common import Q_D, Q_HD, Q_KV, Q_L, S_V, make_qwen, make_small_gpt, qwen_batch
from .pytorch_programs import OURS, load, run_both, weights_of

qwen_weights = probe13_llm_common.qwen_weights  # the fixture


# ----------------------------------------------------------------------------------------------
# Generation: a static KV cache written by index_copy_, a DynamicCache grown by torch.cat, logits processors
# ----------------------------------------------------------------------------------------------


def caches(m):
    torch = m.torch

    class DynamicCache:
        def __init__(self):
            self.key_cache, self.value_cache = [], []

        def get_seq_length(self, layer_idx=0):
            return self.key_cache[layer_idx].shape[-2] if len(self.key_cache) > layer_idx else 0

        def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
            if len(self.key_cache) <= layer_idx:
                self.key_cache.append(key_states)
                self.value_cache.append(value_states)
            else:
                self.key_cache[layer_idx] = torch.cat([self.key_cache[layer_idx], key_states], dim=-2)
                self.value_cache[layer_idx] = torch.cat([self.value_cache[layer_idx], value_states], dim=-2)
            return self.key_cache[layer_idx], self.value_cache[layer_idx]

        def reorder_cache(self, beam_idx):
            for layer_idx in range(len(self.key_cache)):
                self.key_cache[layer_idx] = self.key_cache[layer_idx].index_select(0, beam_idx)
                self.value_cache[layer_idx] = self.value_cache[layer_idx].index_select(0, beam_idx)

    class StaticCache:
        def __init__(self, max_batch_size, max_cache_len, dtype=torch.float32):
            self.max_cache_len = max_cache_len
            cache_shape = (max_batch_size, Q_KV, max_cache_len, Q_HD)
            self.key_cache, self.value_cache = [], []
            for _ in range(Q_L):
                self.key_cache.append(torch.zeros(cache_shape, dtype=dtype))
                self.value_cache.append(torch.zeros(cache_shape, dtype=dtype))

        def get_seq_length(self, layer_idx=0):
            return (self.key_cache[layer_idx][0, 0].any(dim=-1)).sum()

        def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
            cache_position = cache_kwargs.get("cache_position")
            k_out, v_out = self.key_cache[layer_idx], self.value_cache[layer_idx]
            k_out.index_copy_(2, cache_position, key_states)
            v_out.index_copy_(2, cache_position, value_states)
            return k_out, v_out

    return DynamicCache, StaticCache


def logits_warpers(m):
    torch = m.torch

    def repetition_penalty(input_ids, scores, penalty):
        score = torch.gather(scores, 1, input_ids)
        score = torch.where(score < 0, score * penalty, score / penalty)
        return scores.scatter(1, input_ids, score)

    def presence_frequency_penalty(input_ids, scores, presence, frequency):
        counts = torch.zeros_like(scores).scatter_add_(1, input_ids, torch.ones_like(input_ids, dtype=scores.dtype))
        return scores - frequency * counts - presence * (counts > 0).to(scores.dtype)

    def min_p(scores, min_p, min_tokens_to_keep=1):
        probs = torch.softmax(scores, dim=-1)
        top_probs = probs.amax(dim=-1, keepdim=True)
        scaled_min_p = min_p * top_probs
        tokens_to_remove = probs < scaled_min_p
        sorted_indices = torch.argsort(scores, descending=True, dim=-1)
        sorted_indices_to_remove = torch.gather(tokens_to_remove, dim=-1, index=sorted_indices)
        sorted_indices_to_remove[..., :min_tokens_to_keep] = False
        indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
        return scores.masked_fill(indices_to_remove, -float("Inf"))

    def typical(scores, mass, min_tokens_to_keep=1):
        normalized = m.F.log_softmax(scores, dim=-1)  # (HF: torch.nn.functional; see test_torch_dot_nn_spelling)
        p = torch.exp(normalized)
        ent = -(normalized * p).nansum(-1, keepdim=True)  # -inf * 0 where earlier warpers removed tokens
        shifted_scores = torch.abs((-normalized) - ent)
        sorted_scores, sorted_indices = torch.sort(shifted_scores, descending=False)
        sorted_logits = scores.gather(-1, sorted_indices)
        cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        last_ind = (cumulative_probs < mass).sum(dim=1)
        last_ind.clamp_(max=sorted_scores.shape[-1] - 1)
        sorted_indices_to_remove = sorted_scores > sorted_scores.gather(1, last_ind.view(-1, 1))
        sorted_indices_to_remove[..., :min_tokens_to_keep] = 0
        indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
        return scores.masked_fill(indices_to_remove, -float("Inf"))

    def top_k(scores, k):
        v, _ = torch.topk(scores, min(k, scores.size(-1)))
        return torch.where(scores < v[:, [-1]], -float("Inf"), scores)

    def top_p(scores, p):
        sorted_logits, sorted_indices = torch.sort(scores, descending=True)
        cumulative_probs = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
        sorted_indices_to_remove = cumulative_probs > p
        sorted_indices_to_remove[..., 1:] = sorted_indices_to_remove[..., :-1].clone()
        sorted_indices_to_remove[..., 0] = 0
        indices_to_remove = sorted_indices_to_remove.scatter(dim=1, index=sorted_indices, src=sorted_indices_to_remove)
        return scores.masked_fill(indices_to_remove, float("-inf"))

    def exponential_race(probs, generator=None):
        """gpt-fast's multinomial_sample_one_no_sync: argmax of p / Exp(1)."""
        q = torch.empty_like(probs).exponential_(1, generator=generator)
        return torch.argmax(probs / q, dim=-1, keepdim=True).to(dtype=torch.int)

    return repetition_penalty, presence_frequency_penalty, min_p, typical, top_k, top_p, exponential_race


def qwen_generate(m, model, input_ids, attention_mask, max_new_tokens, cache="dynamic", sample=None, generator=None,
                  eos_token_id=None, pad_token_id=0):
    torch, F = m.torch, m.F
    DynamicCache, StaticCache = caches(m)
    repetition_penalty, presence_frequency_penalty, min_p, typical, top_k, top_p, exponential_race = logits_warpers(m)
    batch_size, prompt_len = input_ids.shape
    if cache == "static":
        past_key_values = StaticCache(batch_size, prompt_len + max_new_tokens)
    elif cache == "dynamic":
        past_key_values = DynamicCache()
    else:
        past_key_values = None
    unfinished_sequences = torch.ones(batch_size, dtype=torch.long)
    cache_position = torch.arange(prompt_len)
    step_scores = []
    model_input = input_ids
    for step in range(max_new_tokens):
        position_ids = attention_mask.long().cumsum(-1) - 1
        position_ids.masked_fill_(attention_mask == 0, 1)
        if past_key_values is not None:
            position_ids = position_ids[:, -model_input.shape[1]:]
        _, logits = model(model_input, attention_mask, position_ids=position_ids, past_key_values=past_key_values,
                          cache_position=cache_position if past_key_values is not None else None)
        next_token_logits = logits[:, -1, :].to(copy=True, dtype=torch.float32)
        scores = next_token_logits
        if sample is None:
            next_tokens = torch.argmax(scores, dim=-1)
        else:
            scores = repetition_penalty(input_ids, scores, sample["repetition_penalty"])
            scores = presence_frequency_penalty(input_ids, scores, 0.3, 0.2)
            scores = scores / sample["temperature"]
            scores = top_k(scores, sample["top_k"])
            scores = top_p(scores, sample["top_p"])
            scores = min_p(scores, sample["min_p"])
            scores = typical(scores, sample["typical_p"])
            probs = F.softmax(scores, dim=-1)
            if sample["draw"] == "multinomial":
                next_tokens = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
            else:
                next_tokens = exponential_race(probs, generator).squeeze(1).long()
        step_scores.append(scores)
        if eos_token_id is not None:
            next_tokens = next_tokens * unfinished_sequences + pad_token_id * (1 - unfinished_sequences)
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((batch_size, 1))], dim=-1)
        if eos_token_id is not None:
            unfinished_sequences = unfinished_sequences & ~(next_tokens == eos_token_id)
        if past_key_values is not None:
            model_input = next_tokens[:, None]
            cache_position = cache_position[-1:] + 1
        else:
            model_input = input_ids
        if unfinished_sequences.max() == 0:
            break
    return input_ids, torch.stack(step_scores, 1)


def qwen_generation(m, weights):
    torch = m.torch
    model = load(m, make_qwen(m), weights).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(0.2)  # (tied: the embedding too) flatter next-token distributions to sample
    ids, attention_mask, _ = (torch.tensor(a[:, :6]) for a in qwen_batch())
    out = {}
    with torch.inference_mode():
        for cache in ("none", "dynamic", "static"):
            out[f"greedy_{cache}"] = qwen_generate(m, model, ids, attention_mask, 6, cache=cache)
        settings = dict(repetition_penalty=1.3, temperature=0.8, top_k=12, top_p=0.95, min_p=0.05, typical_p=0.9)
        for draw in ("multinomial", "exponential"):
            g = torch.Generator().manual_seed(1234)
            out[f"sampled_{draw}"] = qwen_generate(m, model, ids, attention_mask, 6, cache="static",
                                                   sample=dict(settings, draw=draw), generator=g)
        out["eos"] = qwen_generate(m, model, ids, attention_mask, 6, cache="dynamic", eos_token_id=int(
            out["greedy_none"][0][2, 6]))
    return out


def test_qwen_generation_static_and_dynamic_caches_and_sampling(qwen_weights):
    out, theirs = run_both(qwen_generation, qwen_weights, rtol=1e-4, atol=1e-5)
    tokens, scores = out["greedy_none"]
    for cache in ("dynamic", "static"):
        np.testing.assert_array_equal(out[f"greedy_{cache}"][0], tokens)
        np.testing.assert_allclose(out[f"greedy_{cache}"][1], scores, rtol=1e-4, atol=1e-5)
    # a sequence stops at its eos, after which it is padded; the others go on as greedy until all have stopped
    eos_tokens, eos = out["eos"][0], tokens[2, 6]
    for row, greedy in zip(eos_tokens, tokens):
        hits = np.flatnonzero(greedy[6:] == eos)
        stop = 6 + hits[0] + 1 if len(hits) else len(greedy)
        np.testing.assert_array_equal(row[:stop], greedy[:stop])
        assert (row[stop:] == 0).all()
    for draw in ("multinomial", "exponential"):
        sampled, warped = out[f"sampled_{draw}"]
        kept = np.isfinite(warped)
        assert (kept.sum(-1) >= 1).all() and (kept.sum(-1) <= 12).all()
        chosen = np.take_along_axis(kept, sampled[:, 6:, None], -1)
        assert chosen.all()  # every drawn token survived the warpers
    # PyTorch's multinomial draws one sample as the exponential race does, from the same generator state
    np.testing.assert_array_equal(out["sampled_multinomial"][0], out["sampled_exponential"][0])
    assert (out["sampled_multinomial"][0] != tokens).any()


# ----------------------------------------------------------------------------------------------
# Speculative decoding (Leviathan et al.; gpt-fast's speculative_decode): a draft model proposes k tokens, the
# target scores them in one pass against its KV cache under a lower-right causal bias
# (``torch.nn.attention.bias.causal_lower_right``), accepts each by ``torch.rand`` < q/p and resamples the
# residual ``(q - p)+``; the caches roll back by slicing. Greedy speculation must give the target's own greedy
# tokens. Beam search over the same model, reordering its cache by ``index_select``.
# ----------------------------------------------------------------------------------------------


def truncate(cache, length):
    for layer in cache:
        layer[:] = [t[:, :, :length] for t in layer]


def speculative_program(m, target_weights, draft_weights, k=3, new_tokens=8, temperature=0.9):
    torch, F = m.torch, m.F
    target = load(m, make_small_gpt(m), target_weights).eval()
    draft = load(m, make_small_gpt(m, n_layer=1), draft_weights).eval()
    prompt = torch.tensor([[1, 4, 7, 2]])

    def logits_to_probs(logits, greedy):
        if greedy:
            return F.one_hot(logits.argmax(-1), S_V).float()
        return F.softmax(logits / temperature, dim=-1)

    def sample(probs, generator):
        return torch.multinomial(probs, 1, generator=generator)

    def speculative_generate(greedy, generator=None):
        target_cache, draft_cache = [[] for _ in target.h], [[] for _ in draft.h]
        target_logits = target(prompt, target_cache)
        draft(prompt[:, :-1], draft_cache)
        tokens = prompt[0].tolist()
        cur = sample(logits_to_probs(target_logits[0, -1], greedy), generator)  # the first token: the target's
        tokens.append(cur.item())
        # the draft has seen tokens[:-2], the target tokens[:-1]
        accepted_counts = []
        while len(tokens) < prompt.size(1) + new_tokens:
            n_ctx = len(tokens) - 1
            draft_in = torch.tensor([tokens[-2:]])  # the token the draft has not seen, and the newest
            draft_tokens, draft_probs = [], []
            for i in range(k):
                probs = logits_to_probs(draft(draft_in, draft_cache)[0, -1], greedy)
                token = sample(probs, generator) if not greedy else probs.argmax(-1, keepdim=True)
                draft_tokens.append(token)
                draft_probs.append(probs)
                draft_in = token.view(1, 1)
            draft_tokens = torch.cat(draft_tokens)
            draft_probs = torch.stack(draft_probs)
            verify_in = torch.cat([torch.tensor([tokens[-1]]), draft_tokens]).view(1, -1)
            target_probs = logits_to_probs(target(verify_in, target_cache)[0], greedy)  # k + 1 rows
            p = draft_probs[torch.arange(0, k), draft_tokens]
            q = target_probs[torch.arange(0, k), draft_tokens]
            accept_draft_prob = torch.minimum(torch.ones(()), q[:k] / p)
            if greedy:
                rejected_locations = (accept_draft_prob < 1).nonzero()
            else:
                rejected_locations = (torch.rand(k, generator=generator) > accept_draft_prob).nonzero()
            if rejected_locations.shape[0] == 0:
                accept_length = k
                last_token = sample(target_probs[-1], generator) if not greedy else target_probs[-1].argmax(-1,
                                                                                                   keepdim=True)
                new = torch.cat([draft_tokens, last_token])
            else:
                accept_length = rejected_locations[0].item()
                p = draft_probs[accept_length]
                q = target_probs[accept_length]
                new = q - p
                new = torch.where(new > 0, new, 0.0)
                new = new / new.sum()
                next_token = sample(new, generator) if not greedy else new.argmax(-1, keepdim=True)
                new = torch.cat([draft_tokens[:accept_length], next_token])
            accepted_counts.append(accept_length)
            tokens.extend(new.tolist())
            # roll the caches back to the accepted context
            truncate(target_cache, n_ctx + 1 + accept_length)
            truncate(draft_cache, min(n_ctx + 1 + accept_length, draft_cache[0][0].size(2)))
        return tokens[:prompt.size(1) + new_tokens], accepted_counts

    def greedy_generate():
        idx = prompt
        for _ in range(new_tokens):
            idx = torch.cat([idx, target(idx)[:, -1].argmax(-1, keepdim=True)], dim=1)
        return idx[0].tolist()

    with torch.no_grad():
        greedy_tokens = greedy_generate()
        speculative_greedy, greedy_accepted = speculative_generate(True)
        g = torch.Generator().manual_seed(42)
        speculative_sampled, sampled_accepted = speculative_generate(False, g)
    return greedy_tokens, speculative_greedy, greedy_accepted, speculative_sampled, sampled_accepted


def test_speculative_decoding_with_a_lower_right_causal_bias():
    target_weights = weights_of(make_small_gpt, seed=0)
    draft_weights = weights_of(lambda m: make_small_gpt(m, n_layer=1), seed=1)
    # the draft shares the target's (tied) embedding and final norm, and has a block of its own
    draft_weights = {k: (draft_weights[k] if k.startswith("h.") else target_weights[k]) for k in draft_weights}
    (greedy, spec_greedy, greedy_accepted, spec_sampled, sampled_accepted), _ = run_both(
        speculative_program, target_weights, draft_weights)
    assert spec_greedy == greedy
    assert len(spec_sampled) == 12 and all(0 <= t < S_V for t in spec_sampled)
    # drafts partly accepted, rejected and wholly accepted (then the target's own next token is appended)
    assert 0 < sum(greedy_accepted) < 3 * len(greedy_accepted) and 3 in sampled_accepted


def beam_search_program(m, weights, num_beams=3, steps=5):
    torch, F = m.torch, m.F
    model = load(m, make_small_gpt(m), weights).eval()
    prompts = torch.tensor([[1, 4, 7], [3, 3, 9]])
    batch_size = prompts.size(0)
    with torch.no_grad():
        input_ids = prompts.repeat_interleave(num_beams, dim=0)
        cache = [[] for _ in model.h]
        beam_scores = torch.zeros((batch_size, num_beams), dtype=torch.float)
        beam_scores[:, 1:] = -1e9  # the beams start equal: only the first may expand
        beam_scores = beam_scores.view((batch_size * num_beams,))
        model_input = input_ids
        for step in range(steps):
            next_token_logits = model(model_input, cache)[:, -1, :]
            next_token_scores = F.log_softmax(next_token_logits, dim=-1)
            next_token_scores = next_token_scores + beam_scores[:, None].expand_as(next_token_scores)
            vocab_size = next_token_scores.shape[-1]
            next_token_scores = next_token_scores.view(batch_size, num_beams * vocab_size)
            next_token_scores, next_tokens = torch.topk(next_token_scores, 2 * num_beams, dim=1, largest=True,
                                                        sorted=True)
            next_indices = torch.div(next_tokens, vocab_size, rounding_mode="floor")
            next_tokens = next_tokens % vocab_size
            # no end-of-sequence token here: the best num_beams continue
            beam_scores = next_token_scores[:, :num_beams].reshape(-1)
            beam_next_tokens = next_tokens[:, :num_beams].reshape(-1)
            batch_offset = (torch.arange(batch_size) * num_beams).unsqueeze(1)
            beam_idx = (next_indices[:, :num_beams] + batch_offset).view(-1)
            input_ids = torch.cat([input_ids[beam_idx, :], beam_next_tokens.unsqueeze(-1)], dim=-1)
            for layer in cache:  # _reorder_cache
                layer[:] = [past_state.index_select(0, beam_idx) for past_state in layer]
            model_input = beam_next_tokens.unsqueeze(-1)
        # the beams' scores again, teacher-forced through the whole sequence without a cache
        logprobs = F.log_softmax(model(input_ids[:, :-1]), dim=-1)
        rescored = logprobs[:, prompts.size(1) - 1:].gather(-1, input_ids[:, prompts.size(1):, None]).sum((1, 2))
    return input_ids, beam_scores, rescored


def test_beam_search_reorders_its_cache():
    weights = weights_of(make_small_gpt, seed=3)
    (sequences, scores, rescored), _ = run_both(beam_search_program, weights, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, rescored, rtol=1e-5, atol=1e-5)
    assert (np.diff(scores.reshape(2, 3), axis=1) <= 0).all()  # best first
    assert len({tuple(s) for s in sequences[:3]}) == 3  # distinct beams


# ----------------------------------------------------------------------------------------------
# gpt-fast's generate.py sets the compiler's configuration before anything else
# ----------------------------------------------------------------------------------------------


def gpt_fast_compiler_settings(m):
    import importlib
    torch = m.torch
    # import torch._dynamo.config
    # import torch._inductor.config
    importlib.import_module(torch.__name__ + "._dynamo.config")
    importlib.import_module(torch.__name__ + "._inductor.config")
    torch._inductor.config.coordinate_descent_tuning = True
    torch._inductor.config.triton.unique_kernel_names = True
    torch._inductor.config.fx_graph_cache = True  # Experimental feature to reduce compilation times
    torch._dynamo.config.cache_size_limit = 64
    decode_one_token = torch.compile(lambda x: x * 2, mode="reduce-overhead", fullgraph=True)
    return decode_one_token(torch.ones(2)), torch._dynamo.config.cache_size_limit


def test_gpt_fast_compiler_settings():
    (doubled, limit), _ = run_both(gpt_fast_compiler_settings)
    np.testing.assert_array_equal(doubled, [2.0, 2.0])
    assert limit == 64


# ----------------------------------------------------------------------------------------------
# Half-precision inference with the norms kept in float32 (Hugging Face's _keep_in_fp32_modules, CLIP's
# convert_weights): float16 activations through float32 RMSNorm / LayerNorm weights, nn.RMSNorm's default eps
# ----------------------------------------------------------------------------------------------


def half_inference_program(m, qwen_weights, gpt_weights):
    torch, nn = m.torch, m.nn
    qwen = load(m, make_qwen(m), qwen_weights)
    final_norm = nn.RMSNorm(Q_D)  # eps=None: float32's machine epsilon, also for a float16 input
    final_norm.load_state_dict(qwen.model.norm.state_dict())
    qwen.model.norm = final_norm
    gpt = load(m, make_small_gpt(m), gpt_weights)
    for model in (qwen, gpt):
        model.half()
        for module in model.modules():
            if isinstance(module, (nn.RMSNorm, nn.LayerNorm)):
                module.float()
    ids, attention_mask, _ = (torch.tensor(a) for a in qwen_batch())
    with torch.no_grad():
        _, qwen_logits = qwen(ids, attention_mask)
        gpt_logits = gpt(ids[:, :8] % S_V)
        tokens, _ = qwen_generate(m, qwen, ids[:, :6], attention_mask[:, :6], 4, cache="dynamic")
    return (qwen_logits.dtype == torch.float16, gpt_logits.dtype == torch.float16, qwen_logits.float(),
            gpt_logits.float(), tokens, qwen.model.norm.weight.dtype == torch.float32)


def test_half_inference_with_float32_norms(qwen_weights):
    gpt_weights = weights_of(make_small_gpt, seed=5)
    (qwen_half, gpt_half, qwen_logits, gpt_logits, tokens, norm_float), _ = run_both(
        half_inference_program, qwen_weights, gpt_weights, rtol=1e-2, atol=2e-2)
    assert qwen_half and gpt_half and norm_float
    # against the float32 model: float16's rounding only
    full = load(OURS, make_qwen(OURS), qwen_weights)
    _, full_logits = full(*(OURS.torch.tensor(a) for a in qwen_batch()[:2]))
    np.testing.assert_allclose(qwen_logits, full_logits.detach().numpy(), rtol=2e-2, atol=5e-2)


def chunked_prefill_program(m, weights):
    """A prompt prefilled in chunks (vLLM / HF's prefill_chunk_size): each chunk's queries attend to the cache
    and to themselves, through the sliding-window mask built from cache_position, into a static or a dynamic
    cache."""
    torch = m.torch
    DynamicCache, StaticCache = caches(m)
    model = load(m, make_qwen(m), weights).eval()
    ids, attention_mask, _ = (torch.tensor(a) for a in qwen_batch())
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids.masked_fill_(attention_mask == 0, 1)
    out = {}
    with torch.no_grad():
        _, full = model(ids, attention_mask, position_ids=position_ids)
        for name, cache in (("dynamic", DynamicCache()), ("static", StaticCache(4, 10))):
            chunks = []
            for start, end in ((0, 4), (4, 7), (7, 10)):
                mask = attention_mask if name == "static" else attention_mask[:, :end]
                _, logits = model(ids[:, start:end], mask, position_ids=position_ids[:, start:end],
                                  past_key_values=cache, cache_position=torch.arange(start, end))
                chunks.append(logits)
            out[name] = torch.cat(chunks, dim=1)
    out["full"] = full
    return out


def test_chunked_prefill_matches_the_full_pass(qwen_weights):
    out, _ = run_both(chunked_prefill_program, qwen_weights, rtol=1e-4, atol=1e-5)
    real = qwen_batch()[1] == 1  # (padding rows see all keys when masked throughout: left out)
    for name in ("dynamic", "static"):
        np.testing.assert_allclose(out[name][real], out["full"][real], rtol=1e-4, atol=1e-5)


def half_math_kernel_program(m, weights):
    from importlib import import_module
    torch = m.torch
    attention = import_module(m.nn.__name__ + ".attention")
    model = load(m, make_qwen(m), weights).half()
    ids, attention_mask, labels = (torch.tensor(a) for a in qwen_batch())
    with attention.sdpa_kernel(attention.SDPBackend.MATH):
        loss, logits = model(ids, attention_mask, labels=labels)
    loss.backward()
    return loss, logits, {n: p.grad for n, p in model.named_parameters()}


def test_half_decoder_on_the_math_kernel_to_the_bit(qwen_weights):
    """The whole float16 decoder (RMSNorm, linear layers, rotary embeddings, SDPA's math kernel, SwiGLU,
    cross-entropy) gives PyTorch's float16 logits exactly, and nearly all its gradients: each kernel rounds
    where PyTorch's does."""
    (loss, logits, grads), theirs = run_both(half_math_kernel_program, qwen_weights, rtol=2e-3, atol=1e-4)
    np.testing.assert_array_equal(logits, logits.astype(np.float16))  # (float16 values, made float32 for the loss)
    if theirs is not None:
        np.testing.assert_array_equal(logits, theirs[1])  # (the float32 loss: to its last bit's sum order)
        for name, grad in grads.items():  # the backward's float16 gradients: most to the bit (over 95% where
            # PyTorch's float16 GEMMs add in float32 as NumPy does; on a processor with native float16 they sum in
            # another order, and 62 to 98% are, the rest a unit or two off: within run_both's tolerance above)
            assert grad.dtype == np.float16 and (grad == theirs[2][name]).mean() > 0.6, name
    full = load(OURS, make_qwen(OURS), qwen_weights)
    _, full_logits = full(*(OURS.torch.tensor(a) for a in qwen_batch()[:2]))
    np.testing.assert_allclose(logits, full_logits.detach().numpy(), rtol=2e-2, atol=5e-2)
