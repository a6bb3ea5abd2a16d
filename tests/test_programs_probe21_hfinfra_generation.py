# ruff: noqa: B007, E702  (the programs are kept as their authors wrote them)
"""The model infrastructure of Hugging Face transformers-style code, written in plain PyTorch (see
tests/pytorch_programs.py): each program runs on chainrule and on PyTorch and the results must agree; what can be is
also checked by hand, so that the tests assert something where PyTorch is not installed. Generation: the watermarking
processor (``randperm`` on a seeded ``Generator``), repetition penalty, temperature, top-k, top-p, epsilon and eta
warpers, ``multinomial``; beam search in its legacy form (``topk`` over flattened beams, ``index_select`` of a KV
cache) and its vectorised form (``take_along_dim`` gathers); contrastive search's degeneration penalty;
``DynamicCache``'s ``cat``, reorder, crop and ``repeat_interleave``; stopping criteria by ``isin``."""

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Generation utilities
# ----------------------------------------------------------------------------------------------


def watermark(m):
    torch = m.torch
    vocab_size = 20; gamma = 0.25; delta = 2.0; hash_key = 15485863
    rng = torch.Generator(device="cpu")
    table_size = 1_000_003
    fixed_table = torch.randperm(table_size, generator=rng.manual_seed(hash_key), device="cpu")
    def _get_greenlist_ids(input_seq):
        prev_token = input_seq[-1].item()
        rng.manual_seed(hash_key * prev_token)
        vocab_permutation = torch.randperm(vocab_size, device="cpu", generator=rng)
        greenlist_size = int(vocab_size * gamma)
        return vocab_permutation[:greenlist_size]
    input_ids = torch.tensor([[3, 5, 7], [1, 2, 19]])
    scores = torch.zeros(2, vocab_size)
    scores_processed = scores.clone()
    for b_idx, input_seq in enumerate(input_ids):
        greenlist_ids = _get_greenlist_ids(input_seq)
        scores_processed[b_idx, greenlist_ids] = scores_processed[b_idx, greenlist_ids] + delta
    return fixed_table[:10], fixed_table[-5:], scores_processed

def sampling(m):
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 12, generator=g)
    input_ids = torch.randint(0, 12, (3, 4), generator=g)
    scores = logits.clone()
    # repetition penalty
    score = torch.gather(scores, 1, input_ids)
    score = torch.where(score < 0, score * 1.3, score / 1.3)
    scores = scores.scatter(1, input_ids, score)
    scores = scores / 0.7
    # top-k
    top_k = 5
    indices_to_remove = scores < torch.topk(scores, top_k)[0][..., -1, None]
    scores = scores.masked_fill(indices_to_remove, -float("inf"))
    # top-p
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)
    cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_indices_to_remove = cumulative_probs <= (1 - 0.8)
    sorted_indices_to_remove[..., -1:] = 0
    indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
    scores = scores.masked_fill(indices_to_remove, -float("inf"))
    # epsilon, eta
    probs = scores.softmax(dim=-1)
    eps_remove = probs < 3e-2
    top_k2 = min(1, scores.size(-1))
    eps_remove = eps_remove & (scores < torch.topk(scores, top_k2)[0][..., -1, None])
    entropy = torch.distributions.Categorical(logits=logits).entropy()
    eta = torch.min(torch.tensor(0.1), torch.sqrt(torch.tensor(0.1)) * torch.exp(-entropy))[..., None]
    eta_remove = F.softmax(logits, -1) < eta
    torch.manual_seed(3)
    next_tokens = torch.multinomial(probs, num_samples=1).squeeze(1)
    torch.manual_seed(3)
    nt2 = torch.multinomial(probs, num_samples=2, replacement=True)
    return scores, eps_remove, entropy, eta, eta_remove, next_tokens, nt2

def beam_search_hf(m):
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(1)
    V, B, K = 9, 2, 3
    W = torch.randn(V, V, generator=g)
    def model_step(ids):  # logits for next token depend on last token
        return W[ids[:, -1]]
    input_ids = torch.tensor([[1, 2], [3, 4]]).repeat_interleave(K, dim=0)
    beam_scores = torch.zeros(B, K)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.view(-1)
    cur_len = 2
    finished = []
    for step in range(4):
        logits = model_step(input_ids)
        next_token_scores = F.log_softmax(logits, dim=-1)
        next_token_scores = next_token_scores + beam_scores[:, None].expand_as(next_token_scores)
        next_token_scores = next_token_scores.view(B, K * V)
        next_token_scores, next_tokens = torch.topk(next_token_scores, 2 * K, dim=1, largest=True, sorted=True)
        next_indices = torch.div(next_tokens, V, rounding_mode="floor")
        next_tokens = next_tokens % V
        beam_idx = (next_indices + torch.arange(B)[:, None] * K)[:, :K].reshape(-1)
        beam_scores = next_token_scores[:, :K].reshape(-1)
        beam_tokens = next_tokens[:, :K].reshape(-1)
        input_ids = torch.cat([input_ids[beam_idx, :], beam_tokens.unsqueeze(-1)], dim=-1)
        cur_len += 1
        length_penalty = 1.2
        finished.append(beam_scores / (cur_len ** length_penalty))
    # new-style vectorized: take_along_dim / gather beams
    seqs = input_ids.view(B, K, -1)
    order = torch.argsort(beam_scores.view(B, K), dim=1, descending=True)
    best = torch.take_along_dim(seqs, order[:, :, None], dim=1)
    return input_ids, beam_scores, finished, best, order

def contrastive(m):
    torch = m.torch
    g = torch.Generator().manual_seed(2)
    context_hidden = torch.randn(6, 5, 4, generator=g)  # batch*top_k, seq, hidden
    next_hidden = torch.randn(6, 1, 4, generator=g)
    next_top_k_probs = torch.rand(2, 3, generator=g).view(-1)
    alpha, beam_width = 0.6, 3
    norm_context_hidden = context_hidden / context_hidden.norm(dim=2, keepdim=True)
    norm_next_hidden = next_hidden / next_hidden.norm(dim=2, keepdim=True)
    cosine_matrix = torch.matmul(norm_context_hidden, norm_next_hidden.transpose(1, 2)).squeeze(-1)
    degeneration_penalty, _ = torch.max(cosine_matrix, dim=-1)
    contrastive_score = (1.0 - alpha) * next_top_k_probs - alpha * degeneration_penalty
    contrastive_score = torch.stack(torch.split(contrastive_score, beam_width))
    _, selected_idx = contrastive_score.max(dim=-1)
    cs = torch.nn.functional.cosine_similarity(context_hidden, next_hidden, dim=-1)
    return cosine_matrix, degeneration_penalty, contrastive_score, selected_idx, cs

def dynamic_cache(m):
    torch = m.torch
    g = torch.Generator().manual_seed(3)
    key_cache, value_cache = [], []
    def update(k, v, layer_idx):
        if len(key_cache) <= layer_idx:
            key_cache.append(k); value_cache.append(v)
        else:
            key_cache[layer_idx] = torch.cat([key_cache[layer_idx], k], dim=-2)
            value_cache[layer_idx] = torch.cat([value_cache[layer_idx], v], dim=-2)
        return key_cache[layer_idx], value_cache[layer_idx]
    for step in range(3):
        for layer in range(2):
            n = 1 + (step == 0) * 2
            update(torch.randn(2, 2, n, 3, generator=g), torch.randn(2, 2, n, 3, generator=g), layer)
    seq_len = key_cache[0].shape[-2]
    # reorder for beams
    beam_idx = torch.tensor([1, 1])
    for i in range(2):
        key_cache[i] = key_cache[i].index_select(0, beam_idx)
        value_cache[i] = value_cache[i].index_select(0, beam_idx)
    # crop
    for i in range(2):
        key_cache[i] = key_cache[i][..., :4, :]
    # batch_repeat_interleave
    rep = [k.repeat_interleave(3, dim=0) for k in key_cache]
    sel = [k[torch.tensor([0, 4]), ...] for k in rep]
    legacy = tuple((key_cache[i], value_cache[i]) for i in range(2))
    return seq_len, key_cache, rep[0].shape, sel, legacy[1][1]

def stopping(m):
    torch = m.torch
    input_ids = torch.tensor([[5, 6, 2, 0], [1, 2, 3, 4], [7, 7, 7, 9]])
    eos = torch.tensor([2, 9])
    max_length = 6
    cur_len = input_ids.shape[-1]
    is_done = torch.full((input_ids.shape[0],), cur_len >= max_length, dtype=torch.bool)
    is_done = is_done | torch.isin(input_ids[:, -1], eos)
    unfinished = torch.tensor([1, 1, 1])
    pad = 0
    next_tokens = torch.tensor([4, 3, 8])
    next_tokens = next_tokens * unfinished + pad * (1 - unfinished)
    unfinished = unfinished & ~is_done
    # StopStringCriteria-ish: check suffix matches
    stop = torch.tensor([3, 4])
    ends = (input_ids[:, -2:] == stop).all(dim=-1)
    return is_done, next_tokens, unfinished, ends, torch.any(is_done).item(), is_done.all()

def take_along(m):
    torch = m.torch
    seqs = torch.arange(2 * 3 * 5).view(2, 3, 5)
    idx = torch.tensor([[2, 0, 0, 1], [1, 1, 2, 0]])
    gi = idx
    for _ in range(len(seqs.shape) - 2):
        gi = gi.unsqueeze(-1)
    g = torch.take_along_dim(input=seqs, indices=gi, dim=1)
    scores = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    g2 = torch.take_along_dim(scores, torch.tensor([[[0], [3], [1]]]), dim=2)  # batch broadcast
    g3 = torch.take_along_dim(scores, torch.tensor([5, 0]))  # flattened
    return g, g2, g3

def beam_vectorized(m):
    torch, F = m.torch, m.F
    gen = torch.Generator().manual_seed(4)
    B, K, V, L = 2, 2, 7, 6
    W = torch.randn(V, V, generator=gen)
    running_sequences = torch.zeros(B, K, L, dtype=torch.long)
    running_sequences[:, :, 0] = torch.tensor([[1], [3]])
    running_beam_scores = torch.zeros(B, K); running_beam_scores[:, 1:] = -1e9
    sequences = torch.full((B, K, L), 0, dtype=torch.long)
    beam_scores = torch.full((B, K), -1e9)
    is_sent_finished = torch.zeros(B, K, dtype=torch.bool)
    eos = 2
    def gather_beams(tensor, beam_indices):
        gather_indices = beam_indices
        for _ in range(len(tensor.shape) - 2):
            gather_indices = gather_indices.unsqueeze(-1)
        return torch.take_along_dim(input=tensor, indices=gather_indices, dim=1)
    for cur_len in range(1, L):
        logits = W[running_sequences[:, :, cur_len - 1].reshape(-1)]
        log_probs = F.log_softmax(logits, dim=-1).view(B, K, V)
        log_probs = log_probs + running_beam_scores[:, :, None]
        log_probs = log_probs.reshape(B, K * V)
        beams_to_keep = 2 * K
        topk_log_probs, topk_indices = torch.topk(log_probs, k=beams_to_keep)
        topk_current_beam_indices = topk_indices // V
        topk_running_sequences = gather_beams(running_sequences, topk_current_beam_indices)
        topk_running_tokens = topk_indices % V
        topk_running_sequences[:, :, cur_len] = topk_running_tokens
        did_finish = topk_running_tokens == eos
        # running: keep non-finished
        running_topk = topk_log_probs + did_finish.to(torch.float32) * -1e9
        next_scores, next_idx = torch.topk(running_topk, k=K)
        running_sequences = gather_beams(topk_running_sequences, next_idx)
        running_beam_scores = next_scores
        # finished
        lp = topk_log_probs / ((cur_len + 1 - 1) ** 1.1)
        lp = lp + torch.logical_not(did_finish).to(torch.float32) * -1e9
        merged_sequences = torch.cat((sequences, topk_running_sequences), dim=1)
        merged_scores = torch.cat((beam_scores, lp), dim=1)
        merged_done = torch.cat((is_sent_finished, did_finish), dim=1)
        s, i = torch.topk(merged_scores, k=K)
        sequences = gather_beams(merged_sequences, i)
        beam_scores = s
        is_sent_finished = gather_beams(merged_done, i)
    return sequences, beam_scores, running_sequences, running_beam_scores, is_sent_finished

def isin_stops(m):
    torch = m.torch
    eos = torch.tensor([2, 7])
    ids = torch.tensor([[1, 5, 2], [3, 4, 7], [1, 1, 1]])
    is_done = torch.isin(ids[:, -1], eos)
    unfinished = torch.ones(3, dtype=torch.long)
    unfinished = unfinished & ~is_done
    this_peer_finished = unfinished.max() == 0
    r2 = torch.isin(ids, eos, invert=True)
    r3 = torch.isin(ids, 7)
    r4 = torch.isin(2, eos)
    return is_done, unfinished, this_peer_finished, r2, r3, r4, unfinished.dtype == torch.int64



def test_watermark_and_sampling_warpers():
    fixed_head, fixed_tail, watermarked = run_both(watermark)[0]
    assert len(set(fixed_head) | set(fixed_tail)) == 15 and max(fixed_head.max(), fixed_tail.max()) < 1_000_003
    np.testing.assert_array_equal((watermarked == 2.0).sum(1), [5, 5])
    assert set(np.unique(watermarked)) == {0.0, 2.0}
    scores, eps_remove, entropy, eta, eta_remove, next_tokens, two = run_both(sampling)[0]
    assert np.isfinite(scores[np.arange(3), next_tokens]).all()
    assert np.isfinite(np.take_along_axis(scores, two, 1)).all()
    assert (np.isfinite(scores).sum(1) <= 5).all()  # top-k 5, then top-p
    probs = np.exp(scores - scores.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_array_equal(eps_remove, (probs < 3e-2) & (scores < scores.max(1, keepdims=True)))
    assert (entropy > 0).all() and (eta <= 0.1).all()


def legacy_beam_scores_by_hand(m):
    """The log-probability of each sequence the legacy beam search kept, by the same toy model."""
    torch = m.torch
    W = torch.randn(9, 9, generator=torch.Generator().manual_seed(1))
    return W


def test_beam_search_legacy_and_vectorised():
    input_ids, beam_scores, finished, best, order = run_both(beam_search_hf)[0]
    W = run_both(legacy_beam_scores_by_hand)[0].astype(np.float64)
    log_probs = W - np.log(np.exp(W).sum(1, keepdims=True))
    by_hand = [sum(log_probs[seq[t - 1], seq[t]] for t in range(2, 6)) for seq in input_ids]
    np.testing.assert_allclose(beam_scores, by_hand, rtol=1e-5)
    assert (np.diff(beam_scores.reshape(2, 3), axis=1) <= 0).all()  # each batch's beams best first
    np.testing.assert_allclose(finished[-1], beam_scores / 6 ** 1.2, rtol=1e-6)
    np.testing.assert_array_equal(best[:, 0], input_ids.reshape(2, 3, -1)[:, 0])
    g, g2, g3 = run_both(take_along)[0]
    seqs = np.arange(30).reshape(2, 3, 5)
    np.testing.assert_array_equal(g, np.take_along_axis(seqs, np.array([[2, 0, 0, 1], [1, 1, 2, 0]])[..., None], 1))
    sequences, scores, running, running_scores, done = run_both(beam_vectorized)[0]
    assert sequences.shape == (2, 2, 6) and running.shape == (2, 2, 6)
    assert (np.diff(running_scores, axis=1) <= 0).all()


def test_contrastive_search_cache_and_stopping():
    cosine, penalty, score, selected, cs = run_both(contrastive)[0]
    np.testing.assert_allclose(cs, cosine, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(penalty, cosine.max(-1), rtol=1e-6)
    np.testing.assert_array_equal(selected, score.argmax(-1))
    seq_len, keys, repeated_shape, selected_rows, last_value = run_both(dynamic_cache)[0]
    assert seq_len == 5 and tuple(repeated_shape) == (6, 2, 4, 3)
    np.testing.assert_array_equal(keys[0][0], keys[0][1])  # both rows are beam 1's after the reorder
    np.testing.assert_array_equal(selected_rows[0][0], selected_rows[0][1])
    is_done, next_tokens, unfinished, ends, any_done, all_done = run_both(stopping)[0]
    np.testing.assert_array_equal(is_done, [False, False, True])
    np.testing.assert_array_equal(unfinished, [1, 1, 0])
    np.testing.assert_array_equal(ends, [False, True, False])
    assert any_done and not all_done
    done, unfinished, finished_peer, not_eos, is_seven, scalar, is_long = run_both(isin_stops)[0]
    np.testing.assert_array_equal(done, [True, True, False])
    np.testing.assert_array_equal(unfinished, [0, 0, 1])
    assert not finished_peer and scalar and is_long
