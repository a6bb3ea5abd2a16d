# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Memory-augmented and set-structured models as their reference PyTorch code writes them, each run as a program on
chainrule and on PyTorch from the same seed (tests/pytorch_programs.py), comparing losses, outputs and gradients
after a few Adam/AdamW steps, with invariants and NumPy checks that hold without PyTorch. Associative memories:
modern Hopfield networks (Ramsauer et al.): ``softmax(beta * X^T xi)`` retrieval iterated to a fixed point, the
``Hopfield`` layer with its projections and ``HopfieldPooling`` with a learnt state pattern, and the update's
Jacobian and Hessian by ``torch.func`` (``jacrev``, ``jacfwd``, ``hessian``, ``vmap``) against their closed forms;
End-To-End Memory Networks (adjacent weight tying, position and temporal encodings, three hops, a linear start); a
product-key memory layer (top-k of two sets of sub-keys, k*k candidates by broadcasting)."""

import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Modern Hopfield networks
# ----------------------------------------------------------------------------------------------


def hopfield_retrieval(m):
    """Retrieval of stored patterns by the update xi <- X softmax(beta X^T xi), from a noisy query, iterated until
    it stops moving; and its gradient with respect to the stored patterns."""
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    d, n = 16, 6
    X = torch.sign(torch.randn(d, n)).requires_grad_()
    target = 3
    xi = X.detach()[:, target].clone()
    flip = torch.randperm(d)[:4]
    xi[flip] = -xi[flip]
    beta = 0.5
    states = [xi]
    for step in range(5):
        p = F.softmax(beta * X.t() @ states[-1], dim=0)
        new = X @ p
        states.append(new)
        if torch.allclose(new, states[-2], atol=1e-6):
            break
    energy = -1.0 / beta * torch.logsumexp(beta * X.t() @ states[-1], dim=0) + 0.5 * states[-1] @ states[-1]
    energy.backward()
    return {"retrieved": states[-1].detach(), "steps": len(states), "energy": energy.detach(), "X_grad": X.grad,
            "match": int((X.detach().t() @ states[-1].detach()).argmax())}


def test_hopfield_retrieval():
    ours, _ = run_both(hopfield_retrieval, rtol=1e-5, atol=1e-6)
    assert ours["match"] == 3
    assert ours["energy"].shape == ()


def hopfield_layers(m):
    """The hflayers package's Hopfield layer in a small form: state patterns (queries) R, stored patterns Y
    projected by W_K, W_Q, W_V, retrieval iterated ``update_steps`` times with a scaling beta, and HopfieldPooling,
    whose query is a learnt state pattern; trained on a multiple-instance problem with AdamW."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class Hopfield(nn.Module):
        def __init__(self, input_size, hidden_size, output_size, num_heads=2, scaling=None, update_steps=2,
                     dropout=0.0):
            super().__init__()
            self.num_heads, self.hidden = num_heads, hidden_size
            self.scaling = scaling if scaling is not None else 1.0 / math.sqrt(hidden_size)
            self.update_steps = update_steps
            self.q_proj = nn.Linear(input_size, hidden_size * num_heads, bias=False)
            self.k_proj = nn.Linear(input_size, hidden_size * num_heads, bias=False)
            self.v_proj = nn.Linear(input_size, hidden_size * num_heads, bias=False)
            self.out_proj = nn.Linear(hidden_size * num_heads, output_size)
            self.norm_stored = nn.LayerNorm(input_size)
            self.norm_state = nn.LayerNorm(input_size)
            self.dropout = nn.Dropout(dropout)

        def forward(self, stored, state, stored_mask=None):
            B, N, _ = stored.shape
            S = state.shape[1]
            stored, state = self.norm_stored(stored), self.norm_state(state)
            k = self.k_proj(stored).view(B, N, self.num_heads, self.hidden).transpose(1, 2)
            v = self.v_proj(stored).view(B, N, self.num_heads, self.hidden).transpose(1, 2)
            xi = self.q_proj(state).view(B, S, self.num_heads, self.hidden).transpose(1, 2)
            for _ in range(self.update_steps):
                logits = self.scaling * torch.matmul(xi, k.transpose(-2, -1))
                if stored_mask is not None:
                    logits = logits.masked_fill(stored_mask[:, None, None, :], float("-inf"))
                assoc = torch.softmax(logits, dim=-1)
                xi = torch.matmul(assoc, k)  # the state moves towards the stored patterns
            assoc = self.dropout(assoc)
            out = torch.matmul(assoc, v).transpose(1, 2).reshape(B, S, -1)
            return self.out_proj(out), assoc

    class HopfieldPooling(nn.Module):
        def __init__(self, input_size, hidden_size, output_size, quantity=1, **kw):
            super().__init__()
            self.hopfield = Hopfield(input_size, hidden_size, output_size, **kw)
            self.pooling_weights = nn.Parameter(torch.empty(1, quantity, input_size))
            nn.init.normal_(self.pooling_weights, mean=0.0, std=0.02)

        def forward(self, stored, stored_mask=None):
            state = self.pooling_weights.expand(stored.shape[0], -1, -1)
            out, assoc = self.hopfield(stored, state, stored_mask)
            return out.flatten(start_dim=1), assoc

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Sequential(nn.Linear(5, 16), nn.ReLU())
            self.lookup = Hopfield(16, 8, 16, num_heads=2, update_steps=3)
            self.pool = HopfieldPooling(16, 8, 8, quantity=2, num_heads=2, scaling=0.25, update_steps=1)
            self.head = nn.Linear(16, 1)

        def forward(self, bags, mask):
            h = self.embed(bags)
            h2, _ = self.lookup(h, h, mask)
            h = h + h2
            pooled, assoc = self.pool(h, mask)
            return self.head(pooled).squeeze(-1), assoc

    torch.manual_seed(0)
    net = Net()
    bags = torch.randn(8, 7, 5)
    lengths = torch.tensor([7, 5, 3, 7, 6, 2, 4, 7])
    mask = torch.arange(7)[None, :] >= lengths[:, None]
    labels = (bags[:, :, 0] * (~mask)).amax(dim=1).gt(1.0).float()
    opt = optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.05)
    losses = []
    for step in range(6):
        opt.zero_grad()
        logits, assoc = net(bags, mask)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), max_norm=1.0)
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "assoc": assoc.detach(), "pool_grad": net.pool.pooling_weights.grad,
            "kgrad": net.lookup.k_proj.weight.grad, "masked_zero": bool((assoc.detach()[5, :, :, 2:] == 0).all())}


def test_hopfield_layers():
    ours, _ = run_both(hopfield_layers, rtol=2e-4, atol=1e-5)
    assert ours["masked_zero"]
    np.testing.assert_allclose(ours["assoc"].sum(-1), 1.0, rtol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# End-to-end memory networks, product-key memory, an empty set at inference
# ----------------------------------------------------------------------------------------------


def memn2n(m):
    """End-To-End Memory Networks (Sukhbaatar et al. 2015) on a bAbI-like toy task: adjacent weight tying
    (``C[k].weight = A[k + 1].weight``), position encoding of the words, temporal encoding added to the memories,
    three hops, ``clip_grad_norm_(40)``, SGD with the learning rate halved on a schedule; linear start (no softmax)
    for the first steps."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    V, d, n_mem, n_words, hops = 12, 10, 5, 4, 3

    def position_encoding(sentence_size, embedding_dim):
        encoding = np.ones((embedding_dim, sentence_size), dtype=np.float32)
        ls, le = sentence_size + 1, embedding_dim + 1
        for i in range(1, le):
            for j in range(1, ls):
                encoding[i - 1, j - 1] = (i - (le - 1) / 2) * (j - (ls - 1) / 2)
        encoding = 1 + 4 * encoding / embedding_dim / sentence_size
        return torch.from_numpy(np.transpose(encoding))

    class MemN2N(nn.Module):
        def __init__(self):
            super().__init__()
            self.A = nn.ModuleList([nn.Embedding(V, d, padding_idx=0) for _ in range(hops + 1)])
            for emb in self.A:
                emb.weight.data.normal_(0, 0.1)
            self.C = nn.ModuleList()
            for k in range(hops):
                self.C.append(nn.Embedding(V, d, padding_idx=0))
                self.C[k].weight = self.A[k + 1].weight  # adjacent tying
            self.TA = nn.Parameter(torch.randn(n_mem, d) * 0.1)
            self.TC = nn.Parameter(torch.randn(n_mem, d) * 0.1)
            self.register_buffer("encoding", position_encoding(n_words, d))
            self.linear_start = True

        def forward(self, story, query):
            u = (self.A[0](query) * self.encoding).sum(1)
            for k in range(hops):
                m_in = (self.A[k](story) * self.encoding).sum(2) + self.TA
                c = (self.C[k](story) * self.encoding).sum(2) + self.TC
                scores = torch.bmm(m_in, u.unsqueeze(2)).squeeze(2)
                p = scores if self.linear_start else F.softmax(scores, dim=-1)
                o = torch.bmm(p.unsqueeze(1), c).squeeze(1)
                u = u + o
            return F.linear(u, self.C[-1].weight), p

    rng = np.random.default_rng(0)
    story = torch.from_numpy(rng.integers(0, V, (8, n_mem, n_words)))
    query = torch.from_numpy(rng.integers(1, V, (8, n_words)))
    answer = story[torch.arange(8), 2, 1]
    torch.manual_seed(10)
    model = MemN2N()
    opt = optim.SGD(model.parameters(), lr=0.01)
    sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    losses, norms = [], []
    for step in range(6):
        if step == 3:
            model.linear_start = False
        logits, p = model(story, query)
        loss = F.cross_entropy(logits, answer, reduction="sum")
        opt.zero_grad()
        loss.backward()
        norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), 40.0)))
        opt.step()
        sched.step()
        with torch.no_grad():
            for emb in model.A:
                emb.weight[0].zero_()  # keep the null word's embedding at zero
        losses.append(loss.item())
    n_params = sum(p.numel() for p in model.parameters())
    return {"losses": losses, "norms": norms, "p": p.detach(), "n_params": n_params,
            "tied": model.C[0].weight is model.A[1].weight, "A1_grad": model.A[1].weight.grad}


def test_memn2n():
    ours, _ = run_both(memn2n, rtol=1e-4, atol=1e-5)
    assert ours["tied"]
    assert ours["n_params"] == 4 * 12 * 10 + 2 * 5 * 10  # tied embeddings counted once
    assert max(ours["norms"][3:]) > 0 and all(n <= 1e6 for n in ours["norms"])
    np.testing.assert_allclose(ours["p"].sum(-1), 1.0, rtol=1e-5)


def product_key_memory(m):
    """A product-key memory layer (Lample et al. 2019) as its reference writes it: two half-queries scored
    against two sets of sub-keys, the top-k of each, the k*k candidate scores and indices by broadcasting, the
    best k kept, their values read by ``nn.EmbeddingBag(mode="sum", sparse=True)`` with ``per_sample_weights``;
    sub-keys trained by Adam and the sparse values by SparseAdam."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class HashingMemory(nn.Module):
        def __init__(self, input_dim=8, k_dim=6, n_keys=5, heads=2, knn=3, v_dim=8):
            super().__init__()
            self.k_dim, self.n_keys, self.heads, self.knn = k_dim, n_keys, heads, knn
            self.keys = nn.Parameter(torch.empty(heads, 2, n_keys, k_dim // 2))
            nn.init.uniform_(self.keys, -1 / math.sqrt(k_dim), 1 / math.sqrt(k_dim))
            self.values = nn.EmbeddingBag(n_keys ** 2, v_dim, mode="sum", sparse=True)
            nn.init.normal_(self.values.weight, mean=0, std=v_dim ** -0.5)
            self.query_proj = nn.Sequential(nn.Linear(input_dim, heads * k_dim), nn.BatchNorm1d(heads * k_dim))

        def _get_indices(self, query, subkeys):
            bs = query.size(0)
            knn, half = self.knn, self.k_dim // 2
            q1, q2 = query[:, :half], query[:, half:]
            scores1 = F.linear(q1, subkeys[0], bias=None)
            scores2 = F.linear(q2, subkeys[1], bias=None)
            scores1, indices1 = scores1.topk(knn, dim=1)
            scores2, indices2 = scores2.topk(knn, dim=1)
            all_scores = (scores1.view(bs, knn, 1).expand(bs, knn, knn) +
                          scores2.view(bs, 1, knn).expand(bs, knn, knn)).view(bs, -1)
            all_indices = (indices1.view(bs, knn, 1).expand(bs, knn, knn) * self.n_keys +
                           indices2.view(bs, 1, knn).expand(bs, knn, knn)).view(bs, -1)
            scores, best_indices = torch.topk(all_scores, k=knn, dim=1)
            indices = all_indices.gather(1, best_indices)
            return scores, indices

        def forward(self, x):
            prefix_shape = x.shape[:-1]
            x = x.contiguous().view(-1, x.shape[-1])
            bs = x.size(0)
            query = self.query_proj(x).view(bs, self.heads, self.k_dim)
            outputs = [self._get_indices(query[:, i], self.keys[i]) for i in range(self.heads)]
            scores = torch.cat([s.unsqueeze(1) for s, _ in outputs], 1).view(bs * self.heads, self.knn)
            indices = torch.cat([idx.unsqueeze(1) for _, idx in outputs], 1).view(bs * self.heads, self.knn)
            scores = F.softmax(scores.float(), dim=-1).type_as(scores)
            output = self.values(indices, per_sample_weights=scores)
            output = output.view(bs, self.heads, -1).sum(1)
            return output.view(prefix_shape + (output.shape[-1],)), indices

    torch.manual_seed(11)
    memory = HashingMemory()
    head = nn.Linear(8, 1)
    dense = [p for n, p in memory.named_parameters() if not n.startswith("values")] + list(head.parameters())
    opt_dense = optim.Adam(dense, lr=1e-2)
    opt_sparse = optim.SparseAdam(list(memory.values.parameters()), lr=1e-2)
    x = torch.randn(4, 3, 8)
    y = x.sum(-1, keepdim=True).tanh()
    losses = []
    for step in range(4):
        out, indices = memory(x)
        loss = F.mse_loss(head(out + x), y)
        opt_dense.zero_grad()
        opt_sparse.zero_grad()
        loss.backward()
        grad = memory.values.weight.grad
        touched = grad.coalesce().indices()[0].unique()
        opt_dense.step()
        opt_sparse.step()
        losses.append(loss.item())
    return {"losses": losses, "indices": indices, "sparse": grad.is_sparse, "touched": touched,
            "values": memory.values.weight.detach(), "keys_grad": memory.keys.grad}
    # (not the batch norm's running mean: the query projection's bias, which batch norm cancels, gets gradients of
    # rounding noise only, which Adam scales up to steps of lr in directions the two libraries' rounding decides)


def test_product_key_memory():
    ours, _ = run_both(product_key_memory, rtol=2e-4, atol=1e-6)
    assert ours["sparse"]
    assert ours["indices"].min() >= 0 and ours["indices"].max() < 25
    assert set(ours["indices"].ravel()) <= set(ours["touched"].tolist())


def hopfield_fixed_point_jacobian(m):
    """The modern Hopfield update f(xi) = X softmax(beta X^T xi) as a function for torch.func: its Jacobian by
    ``jacrev`` and ``jacfwd`` equals beta X (diag(p) - p p^T) X^T, the Hessian of the energy by ``hessian`` is
    I - that Jacobian, and ``vmap`` retrieves a batch of queries."""
    torch = m.torch
    torch.manual_seed(15)
    X = torch.randn(5, 7, dtype=torch.float64)
    beta = 1.5

    def update(xi):
        return X @ torch.softmax(beta * X.T @ xi, dim=0)

    def energy(xi):
        return -torch.logsumexp(beta * X.T @ xi, dim=0) / beta + 0.5 * xi @ xi

    xi = torch.randn(5, dtype=torch.float64)
    return {"jacrev": torch.func.jacrev(update)(xi), "jacfwd": torch.func.jacfwd(update)(xi),
            "hessian": torch.func.hessian(energy)(xi), "grad": torch.func.grad(energy)(xi),
            "batch": torch.func.vmap(update)(torch.randn(4, 5, dtype=torch.float64)), "X": X, "xi": xi}


def test_hopfield_fixed_point_jacobian():
    ours, _ = run_both(hopfield_fixed_point_jacobian, rtol=1e-10, atol=1e-12)
    X, xi, beta = ours["X"], ours["xi"], 1.5
    z = beta * X.T @ xi
    p = np.exp(z - z.max())
    p /= p.sum()
    J = beta * X @ (np.diag(p) - np.outer(p, p)) @ X.T
    np.testing.assert_allclose(ours["jacrev"], J, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["jacfwd"], J, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["hessian"], np.eye(5) - J, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["grad"], xi - X @ p, rtol=1e-10, atol=1e-12)
