# ruff: noqa: B007, E501, F841  (the programs are kept as their authors wrote them)
"""Programs students write in deep-learning courses (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and data, comparing values and gradients. CS231n (PyTorch versions): RNN and
attention-LSTM captioning with a temporal softmax loss under a mask; SimCLR's NT-Xent loss by loops and vectorised; a
captioning transformer with hand-written multi-head attention."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# CS231n / EECS 498: RNN and attention-LSTM captioning with a temporal softmax loss under a mask
# ----------------------------------------------------------------------------------------------


def captioning(m):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(10)
    N, T, D, W, H, V = 3, 5, 6, 4, 5, 7
    NULL, START, END = 0, 1, 2
    f64 = torch.float64
    params = {
        'W_proj': rng.standard_normal((D, H)) / math.sqrt(D), 'b_proj': np.zeros(H),
        'W_embed': rng.standard_normal((V, W)) / 100, 'Wx': rng.standard_normal((W, H)) / math.sqrt(W),
        'Wh': rng.standard_normal((H, H)) / math.sqrt(H), 'b': np.zeros(H),
        'W_vocab': rng.standard_normal((H, V)) / math.sqrt(H), 'b_vocab': np.zeros(V),
        'Wx4': rng.standard_normal((W, 4 * H)) / math.sqrt(W), 'Wh4': rng.standard_normal((H, 4 * H)) / math.sqrt(H),
        'Wattn': rng.standard_normal((H, 4 * H)) / math.sqrt(H), 'b4': np.zeros(4 * H)}
    params = {k: torch.tensor(v, dtype=f64, requires_grad=True) for k, v in params.items()}
    features = torch.tensor(rng.standard_normal((N, D)), dtype=f64)
    A = torch.tensor(rng.standard_normal((N, H, 2, 2)), dtype=f64)
    captions = torch.tensor([[START, 3, 4, 5, END, NULL], [START, 6, END, NULL, NULL, NULL], [START, 3, 3, 3, 4, END]])

    def rnn_step_forward(x, prev_h, Wx, Wh, b):
        next_h = torch.tanh(x.mm(Wx) + prev_h.mm(Wh) + b)
        return next_h, (x, prev_h, Wx, Wh, next_h)

    def rnn_step_backward(dnext_h, cache):
        x, prev_h, Wx, Wh, next_h = cache
        dtanh = dnext_h * (1 - next_h ** 2)
        return dtanh.mm(Wx.t()), dtanh.mm(Wh.t()), x.t().mm(dtanh), prev_h.t().mm(dtanh), dtanh.sum(dim=0)

    def rnn_forward(x, h0, Wx, Wh, b):
        N, T, _ = x.shape
        h = torch.zeros((N, T, h0.shape[1]), dtype=x.dtype)
        prev_h = h0
        for t in range(T):
            prev_h, _ = rnn_step_forward(x[:, t, :], prev_h, Wx, Wh, b)
            h[:, t, :] = prev_h
        return h

    def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b, attn=None, Wattn=None):
        a = x.mm(Wx) + prev_h.mm(Wh) + b
        if attn is not None:
            a = a + attn.mm(Wattn)
        H = prev_h.shape[1]
        i = torch.sigmoid(a[:, :H])
        f = torch.sigmoid(a[:, H:2 * H])
        o = torch.sigmoid(a[:, 2 * H:3 * H])
        g = torch.tanh(a[:, 3 * H:])
        next_c = f * prev_c + i * g
        next_h = o * torch.tanh(next_c)
        return next_h, next_c

    def dot_product_attention(prev_h, A):
        N, H, D_a, _ = A.shape
        A_flat = A.reshape(N, H, -1)
        M_tilde = torch.bmm(prev_h.unsqueeze(1), A_flat).squeeze(1) / math.sqrt(H)
        M_tilde = F.softmax(M_tilde, dim=1)
        attn = torch.bmm(A_flat, M_tilde.unsqueeze(2)).squeeze(2)
        return attn, M_tilde.reshape(N, D_a, D_a)

    def attention_forward(x, A, Wx, Wh, Wattn, b):
        h0 = A.mean(dim=(2, 3))
        c0 = h0
        N, T, _ = x.shape
        hs, weights = [], []
        prev_h, prev_c = h0, c0
        for t in range(T):
            attn, w = dot_product_attention(prev_h, A)
            prev_h, prev_c = lstm_step_forward(x[:, t], prev_h, prev_c, Wx, Wh, b, attn, Wattn)
            hs.append(prev_h)
            weights.append(w)
        return torch.stack(hs, dim=1), torch.stack(weights, dim=1)

    def temporal_softmax_loss(x, y, mask):
        N, T, V = x.shape
        x_flat, y_flat, mask_flat = x.reshape(N * T, V), y.reshape(N * T), mask.reshape(N * T)
        probs = torch.exp(x_flat - torch.max(x_flat, dim=1, keepdim=True).values)
        probs = probs / torch.sum(probs, dim=1, keepdim=True)  # (/= would change what exp saved: both raise)
        return -torch.sum(mask_flat * torch.log(probs[torch.arange(N * T), y_flat])) / N

    p = params
    captions_in, captions_out = captions[:, :-1], captions[:, 1:]
    mask = captions_out != NULL
    h0 = features.mm(p['W_proj']) + p['b_proj']
    x = p['W_embed'][captions_in]
    h = rnn_forward(x, h0, p['Wx'], p['Wh'], p['b'])
    scores = h.matmul(p['W_vocab']) + p['b_vocab']
    loss_mask = temporal_softmax_loss(scores, captions_out, mask)
    loss_ce = F.cross_entropy(scores.reshape(-1, V), captions_out.reshape(-1), ignore_index=NULL, reduction='sum') / N
    loss_ce_t = F.cross_entropy(torch.transpose(scores, 1, 2), captions_out, ignore_index=NULL, reduction='sum') / N
    grads = torch.autograd.grad(loss_mask, [p[k] for k in ('W_proj', 'W_embed', 'Wx', 'Wh', 'b', 'W_vocab')], retain_graph=True)
    # one step by hand against autograd
    x0, h_prev = x[:, 0].detach(), h0.detach()
    next_h, cache = rnn_step_forward(x0, h_prev, p['Wx'].detach(), p['Wh'].detach(), p['b'].detach())
    dnext = torch.tensor(rng.standard_normal(next_h.shape), dtype=f64)
    by_hand = rnn_step_backward(dnext, cache)
    xs, hs_ = x0.clone().requires_grad_(), h_prev.clone().requires_grad_()
    out = torch.tanh(xs.mm(p['Wx']) + hs_.mm(p['Wh']) + p['b'])
    by_autograd = torch.autograd.grad(out, (xs, hs_, p['Wx'], p['Wh'], p['b']), dnext)
    # the embedding as nn.Embedding with padding_idx
    emb = nn.Embedding(V, W, padding_idx=NULL)
    with torch.no_grad():
        emb.weight.copy_(p['W_embed'].to(torch.float32))
        emb.weight[NULL].fill_(0)
    ew = emb(captions_in).pow(2).sum()
    ew.backward()
    # the attention LSTM and greedy sampling
    ha, attn_w = attention_forward(x, A, p['Wx4'], p['Wh4'], p['Wattn'], p['b4'])
    scores_a = ha.matmul(p['W_vocab']) + p['b_vocab']
    loss_a = temporal_softmax_loss(scores_a, captions_out, mask)
    grads_a = torch.autograd.grad(loss_a, [p['Wattn'], p['Wx4'], p['W_embed']])

    def sample(max_length=6):
        sampled = torch.full((N, max_length), NULL, dtype=torch.long)
        words = torch.full((N,), START, dtype=torch.long)
        prev_h = (features.mm(p['W_proj']) + p['b_proj']).detach()
        with torch.no_grad():
            for t in range(max_length):
                xw = p['W_embed'][words]
                prev_h, _ = rnn_step_forward(xw, prev_h, p['Wx'], p['Wh'], p['b'])
                words = (prev_h.mm(p['W_vocab']) + p['b_vocab']).argmax(dim=1)
                sampled[:, t] = words
        return sampled

    return {"losses": (loss_mask, loss_ce, loss_ce_t, loss_a), "grads": grads, "hand": by_hand, "autograd": by_autograd,
            "emb_grad": emb.weight.grad, "attn": attn_w, "grads_a": grads_a, "sampled": sample(), "mask_sum": mask.sum()}


def test_cs231n_rnn_and_attention_captioning():
    ours, _ = run_both(captioning, rtol=1e-9, atol=1e-11)
    lm, lce, lcet, _ = ours["losses"]
    assert float(lm) == pytest.approx(float(lce), rel=1e-12) and float(lce) == pytest.approx(float(lcet), rel=1e-12)
    for a, b in zip(ours["hand"], ours["autograd"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert (ours["emb_grad"][0] == 0).all()
    np.testing.assert_allclose(ours["attn"].sum(axis=(2, 3)), 1, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# CS231n (2021+): SimCLR's NT-Xent loss by loops and vectorised, transformer captioning pieces
# ----------------------------------------------------------------------------------------------


def simclr_and_transformer(m):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(13)
    N, D, tau, device = 4, 5, 0.5, 'cpu'
    out_left = torch.tensor(rng.standard_normal((N, D)), requires_grad=True)
    out_right = torch.tensor(rng.standard_normal((N, D)), requires_grad=True)

    def sim(z_i, z_j):
        return torch.dot(z_i, z_j) / (torch.linalg.norm(z_i) * torch.linalg.norm(z_j))

    def simclr_loss_naive(out_left, out_right, tau):
        N = out_left.shape[0]
        out = torch.cat([out_left, out_right], dim=0)
        total_loss = 0
        for k in range(N):
            z_k, z_k_N = out[k], out[k + N]
            denom_left, denom_right = 0, 0
            for i in range(2 * N):
                if i != k:
                    denom_left += torch.exp(sim(z_k, out[i]) / tau)
                if i != k + N:
                    denom_right += torch.exp(sim(z_k_N, out[i]) / tau)
            loss_left = -torch.log(torch.exp(sim(z_k, z_k_N) / tau) / denom_left)
            loss_right = -torch.log(torch.exp(sim(z_k_N, z_k) / tau) / denom_right)
            total_loss += loss_left + loss_right
        return total_loss / (2 * N)

    def sim_positive_pairs(out_left, out_right):
        left_norm = out_left / torch.linalg.norm(out_left, dim=1, keepdim=True)
        right_norm = out_right / torch.linalg.norm(out_right, dim=1, keepdim=True)
        return torch.sum(left_norm * right_norm, dim=1, keepdim=True)

    def compute_sim_matrix(out):
        out_norm = out / torch.linalg.norm(out, dim=1, keepdim=True)
        return out_norm @ out_norm.T

    def simclr_loss_vectorized(out_left, out_right, tau, device='cuda'):
        N = out_left.shape[0]
        out = torch.cat([out_left, out_right], dim=0)
        sim_matrix = compute_sim_matrix(out)
        exponential = torch.exp(sim_matrix / tau)
        mask = (torch.ones_like(exponential, device=device) - torch.eye(2 * N, device=device)).to(device).bool()
        exponential = exponential.masked_select(mask).view(2 * N, -1)
        denom = torch.sum(exponential, dim=1, keepdim=True)
        sim_pairs = sim_positive_pairs(out_left, out_right).to(device)
        sim_pairs = torch.cat([sim_pairs, sim_pairs], dim=0)
        numerator = torch.exp(sim_pairs / tau)
        return torch.sum(-torch.log(numerator / denom)) / (2 * N)

    naive = simclr_loss_naive(out_left, out_right, tau)
    g_naive = torch.autograd.grad(naive, (out_left, out_right))
    vec = simclr_loss_vectorized(out_left, out_right, tau, device=device)
    g_vec = torch.autograd.grad(vec, (out_left, out_right))
    # the same loss as cross-entropy over the similarity logits (the library version)
    z = F.normalize(torch.cat([out_left, out_right]), dim=1)
    logits = (z @ z.t() / tau).fill_diagonal_(float('-inf'))
    targets = torch.cat([torch.arange(N, 2 * N), torch.arange(N)])
    xent = F.cross_entropy(logits, targets)
    cos = F.cosine_similarity(out_left[:, None, :], out_right[None, :, :], dim=-1)

    return {"naive": naive, "vec": vec, "xent": xent, "g_naive": g_naive, "g_vec": g_vec, "cos": cos}


def make_captioner(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MultiHeadAttention(nn.Module):
        def __init__(self, embed_dim, num_heads, dropout=0.1):
            super().__init__()
            assert embed_dim % num_heads == 0
            self.key = nn.Linear(embed_dim, embed_dim)
            self.query = nn.Linear(embed_dim, embed_dim)
            self.value = nn.Linear(embed_dim, embed_dim)
            self.proj = nn.Linear(embed_dim, embed_dim)
            self.attn_drop = nn.Dropout(dropout)
            self.n_head = num_heads
            self.emd_dim = embed_dim
            self.head_dim = self.emd_dim // self.n_head

        def forward(self, query, key, value, attn_mask=None):
            N, S, E = query.shape
            N, T, E = value.shape
            H = self.n_head
            Q = self.query(query).view(N, S, H, E // H).transpose(1, 2)
            K = self.key(key).view(N, T, H, E // H).transpose(1, 2)
            V = self.value(value).view(N, T, H, E // H).transpose(1, 2)
            Y = torch.matmul(Q, K.transpose(2, 3)) / math.sqrt(E / H)
            if attn_mask is not None:
                Y = Y.masked_fill(attn_mask == 0, float('-inf'))
            Y = self.attn_drop(F.softmax(Y, dim=-1))
            output = torch.matmul(Y, V).transpose(1, 2).reshape(N, S, E)
            return self.proj(output)

    class PositionalEncoding(nn.Module):
        def __init__(self, embed_dim, dropout=0.1, max_len=5000):
            super().__init__()
            self.dropout = nn.Dropout(p=dropout)
            assert embed_dim % 2 == 0
            pe = torch.zeros(1, max_len, embed_dim)
            i = torch.arange(max_len)[:, None]
            pows = torch.pow(10000, -torch.arange(0, embed_dim, 2) / embed_dim)
            pe[0, :, 0::2] = torch.sin(i * pows)
            pe[0, :, 1::2] = torch.cos(i * pows)
            self.register_buffer('pe', pe)

        def forward(self, x):
            N, S, D = x.shape
            output = x + self.pe[:, :S]
            return self.dropout(output)

    class CaptioningTransformer(nn.Module):
        def __init__(self, input_dim=6, wordvec_dim=8, num_heads=2, vocab_size=7, max_length=10):
            super().__init__()
            self.visual_projection = nn.Linear(input_dim, wordvec_dim)
            self.embedding = nn.Embedding(vocab_size, wordvec_dim, padding_idx=0)
            self.positional_encoding = PositionalEncoding(wordvec_dim, max_len=max_length)
            self.self_attn = MultiHeadAttention(wordvec_dim, num_heads)
            self.cross_attn = MultiHeadAttention(wordvec_dim, num_heads)
            self.norm1, self.norm2 = nn.LayerNorm(wordvec_dim), nn.LayerNorm(wordvec_dim)
            self.output = nn.Linear(wordvec_dim, vocab_size)
            self.apply(self._init_weights)

        def _init_weights(self, module):
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.data.normal_(mean=0.0, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    module.bias.data.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.bias.data.zero_()
                module.weight.data.fill_(1.0)

        def forward(self, features, captions):
            N, T = captions.shape
            caption_embeddings = self.positional_encoding(self.embedding(captions))
            projected_features = self.visual_projection(features).unsqueeze(1)
            tgt_mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
            x = self.norm1(caption_embeddings + self.self_attn(caption_embeddings, caption_embeddings, caption_embeddings, tgt_mask))
            x = self.norm2(x + self.cross_attn(x, projected_features, projected_features))
            return self.output(x)

    return CaptioningTransformer()


def transformer_captioning(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, make_captioner(m), weights_of(make_captioner))
    model.eval()  # (the attention and positional dropout off: each library draws its own masks)
    rng = np.random.default_rng(14)
    features = torch.tensor(rng.standard_normal((3, 6)).astype(np.float32))
    captions = torch.tensor([[1, 3, 4, 5, 2, 0], [1, 6, 2, 0, 0, 0], [1, 3, 3, 3, 4, 2]])
    captions_in, captions_out = captions[:, :-1], captions[:, 1:]
    opt = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(3):
        scores = model(features, captions_in)
        loss = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), captions_out.reshape(-1), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # the causal mask: changing a later word leaves the earlier scores alone
    with torch.no_grad():
        a = model(features, captions_in)
        changed = captions_in.clone()
        changed[:, -1] = 5
        b = model(features, changed)
    return {"losses": losses, "scores": a, "earlier_same": bool((a[:, :-1] == b[:, :-1]).all()),
            "pe": model.positional_encoding.pe, "pe_dtype": str(model.positional_encoding.pe.dtype).replace("torch.", ""),
            "grads": {k: p.grad for k, p in model.named_parameters()}}


def test_cs231n_simclr_loss():
    ours, _ = run_both(simclr_and_transformer, rtol=1e-9, atol=1e-11)
    assert float(ours["vec"]) == pytest.approx(float(ours["naive"]), rel=1e-12)
    assert float(ours["xent"]) == pytest.approx(float(ours["naive"]), rel=1e-12)
    for a, b in zip(ours["g_vec"], ours["g_naive"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_cs231n_transformer_captioning():
    ours, _ = run_both(transformer_captioning, rtol=2e-5, atol=2e-6)
    assert ours["pe_dtype"] == "float32" and ours["earlier_same"] is True
    i, k = np.arange(10)[:, None], np.arange(0, 8, 2)
    np.testing.assert_allclose(ours["pe"][0, :, 0::2], np.sin(i * 10000.0 ** (-k / 8)), rtol=1e-6, atol=1e-6)
