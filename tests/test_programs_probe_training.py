# ruff: noqa: B007, B023, E741, UP004, UP008, UP032, UP034, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is
a function of the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``), run on
chainrule and, where PyTorch is installed, on PyTorch, comparing the numbers.

Small versions of well-known training programs: a seq2seq GRU with Bahdanau attention and teacher
forcing, a DCGAN loop, REINFORCE on a bandit, word2vec skip-gram with negative sampling, a
Transformer-encoder classifier (padding mask, warmup + cosine LambdaLR, clipping, AdamW weight-decay
groups), gradient accumulation with frozen layers, param groups and a checkpoint round trip, the DQN
tutorial (replay memory, target network soft updates) and the spatial transformer tutorial."""

import io
import math
from collections import deque, namedtuple

import numpy as np

from .pytorch_programs import load, quickstart_data, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# seq2seq with attention (PyTorch's "NLP From Scratch: Translation" tutorial, batched)
# ----------------------------------------------------------------------------------------------

PAD, SOS, EOS = 0, 1, 2


def seq2seq(m, weights, steps=8):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    V, H = 12, 16
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, H, padding_idx=PAD)
            self.gru = nn.GRU(H, H, batch_first=True)
            self.dropout = nn.Dropout(0.0)
        def forward(self, x):
            emb = self.dropout(self.embedding(x))
            out, hidden = self.gru(emb)
            return out, hidden
    class BahdanauAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.Wa = nn.Linear(H, H)
            self.Ua = nn.Linear(H, H)
            self.Va = nn.Linear(H, 1)
        def forward(self, query, keys, mask):
            scores = self.Va(torch.tanh(self.Wa(query) + self.Ua(keys)))
            scores = scores.squeeze(2).unsqueeze(1)
            scores = scores.masked_fill(mask.unsqueeze(1), float("-inf"))
            weights = F.softmax(scores, dim=-1)
            context = torch.bmm(weights, keys)
            return context, weights
    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, H)
            self.attention = BahdanauAttention()
            self.gru = nn.GRU(2 * H, H, batch_first=True)
            self.out = nn.Linear(H, V)
        def forward(self, enc_out, enc_hidden, mask, target=None, max_len=5):
            B = enc_out.size(0)
            dec_input = torch.empty(B, 1, dtype=torch.long).fill_(SOS)
            hidden = enc_hidden
            outs, attns = [], []
            for i in range(max_len):
                emb = self.embedding(dec_input)
                query = hidden.permute(1, 0, 2)
                ctx, attn = self.attention(query, enc_out, mask)
                out, hidden = self.gru(torch.cat((emb, ctx), dim=2), hidden)
                out = self.out(out)
                outs.append(out)
                attns.append(attn)
                if target is not None:
                    dec_input = target[:, i].unsqueeze(1)
                else:
                    _, topi = out.topk(1)
                    dec_input = topi.squeeze(-1).detach()
            outs = torch.cat(outs, dim=1)
            return F.log_softmax(outs, dim=-1), hidden, torch.cat(attns, dim=1)
    class S2S(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder()
            self.decoder = Decoder()
    model = S2S()
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(3)
    src = rng.integers(3, V, (4, 6))
    src[0, 4:] = PAD
    src[2, 5:] = PAD
    tgt = np.concatenate([src[:, :4][:, ::-1], np.full((4, 1), EOS)], 1).copy()
    tgt[1, 3:] = PAD
    src, tgt = torch.tensor(src), torch.tensor(tgt)
    mask = src == PAD
    crit = nn.NLLLoss(ignore_index=PAD)
    eopt = optim.Adam(model.encoder.parameters(), lr=0.01)
    dopt = optim.Adam(model.decoder.parameters(), lr=0.01)
    losses = []
    for _ in range(steps):
        eopt.zero_grad()
        dopt.zero_grad()
        eo, eh = model.encoder(src)
        logp, _, attn = model.decoder(eo, eh, mask, target=tgt)
        loss = crit(logp.view(-1, logp.size(-1)), tgt.view(-1))
        loss.backward()
        eopt.step()
        dopt.step()
        losses.append(loss.item())
    with torch.no_grad():
        eo, eh = model.encoder(src)
        logp, _, attn = model.decoder(eo, eh, mask)
        pred = logp.argmax(-1)
    return losses, attn, pred, model.encoder.embedding.weight.grad


def test_seq2seq_attention_teacher_forcing():
    weights = weights_of(lambda m: seq2seq(m, None))
    (losses, attn, pred, emb_grad), _ = run_both(seq2seq, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] - 0.5  # 2.52 -> 1.86 on PyTorch
    assert attn.shape == (4, 5, 6) and pred.shape == (4, 5)
    np.testing.assert_allclose(attn.sum(-1), 1.0, rtol=1e-5)
    assert (attn[0, :, 4:] == 0).all() and (attn[2, :, 5:] == 0).all()  # masked_fill(-inf) on padding
    assert (emb_grad[PAD] == 0).all()  # padding_idx gets no gradient


# ----------------------------------------------------------------------------------------------
# DCGAN (PyTorch's tutorial, 16x16 images): two optimizers, detach, BCEWithLogits
# ----------------------------------------------------------------------------------------------


def dcgan(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    nz, ngf, ndf = 8, 8, 8
    def weights_init(mod):
        classname = mod.__class__.__name__
        if classname.find('BatchNorm') != -1:
            nn.init.constant_(mod.bias.data, 0)
    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.ConvTranspose2d(nz, ngf * 2, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
                nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False), nn.Tanh())
        def forward(self, x):
            return self.main(x)
    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.Conv2d(1, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False))
        def forward(self, x):
            return self.main(x).view(-1)
    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.G = Generator()
            self.D = Discriminator()
    both = Both()
    both.apply(weights_init)
    if weights is None:
        return both
    load(m, both, weights)
    netG, netD = both.G, both.D
    rng = np.random.default_rng(5)
    real_all = torch.tensor(np.tanh(rng.standard_normal((steps, 6, 1, 16, 16))).astype(np.float32))
    noise_all = torch.tensor(rng.standard_normal((steps, 6, nz, 1, 1)).astype(np.float32))
    criterion = nn.BCEWithLogitsLoss()
    optD = optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real_label, fake_label = 1., 0.
    log = []
    for i in range(steps):
        netD.zero_grad()
        real = real_all[i]
        b = real.size(0)
        label = torch.full((b,), real_label, dtype=torch.float)
        output = netD(real)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = torch.sigmoid(output).mean().item()
        fake = netG(noise_all[i])
        label.fill_(fake_label)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        errD = errD_real + errD_fake
        optD.step()
        netG.zero_grad()
        label.fill_(real_label)
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        optG.step()
        log.append((errD.item(), errG.item(), D_x))
    return log, both.state_dict(), [p.grad for p in netG.parameters()]


def test_dcgan_loop():
    weights = weights_of(lambda m: dcgan(m, None))
    (log, state, g_grads), _ = run_both(dcgan, weights, rtol=1e-4, atol=1e-5)
    assert len(log) == 4 and all(np.isfinite(v).all() for v in log)
    assert 0 < log[0][2] < 1  # D(x) is a probability
    assert int(state["G.main.1.num_batches_tracked"]) == 4  # G runs once a step
    assert int(state["D.main.3.num_batches_tracked"]) == 12  # real, fake.detach(), fake
    assert all(g is not None and np.abs(g).sum() > 0 for g in g_grads)


# ----------------------------------------------------------------------------------------------
# REINFORCE (pytorch/examples reinforcement_learning/reinforce.py) on a three-armed bandit
# ----------------------------------------------------------------------------------------------


def reinforce(m, weights, episodes=60, own_sampler=True):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Categorical = torch.distributions.Categorical
    class Policy(nn.Module):
        def __init__(self):
            super().__init__()
            self.affine1 = nn.Linear(4, 16)
            self.dropout = nn.Dropout(p=0.0)
            self.affine2 = nn.Linear(16, 3)
            self.saved_log_probs = []
            self.rewards = []
        def forward(self, x):
            x = self.affine1(x)
            x = self.dropout(x)
            x = F.relu(x)
            action_scores = self.affine2(x)
            return F.softmax(action_scores, dim=1)
    policy = Policy()
    if weights is None:
        return policy
    load(m, policy, weights)
    torch.manual_seed(543)
    optimizer = optim.Adam(policy.parameters(), lr=3e-2)
    eps = np.finfo(np.float32).eps.item()
    rng = np.random.default_rng(0)
    means = np.array([0.1, 0.9, 0.4])
    gamma = 0.9
    def select_action(state):
        state = torch.from_numpy(state).float().unsqueeze(0)
        probs = policy(state)
        mm = Categorical(probs)
        if own_sampler:
            u = rng.random()
            action = torch.tensor([int(np.searchsorted(np.cumsum(probs.detach().numpy()[0]), u))]).clamp(max=2)
        else:
            action = mm.sample()
        policy.saved_log_probs.append(mm.log_prob(action))
        return action.item(), mm.entropy()
    history, entropies = [], []
    for ep in range(episodes // 4):
        for t in range(4):
            state = rng.standard_normal(4)
            action, ent = select_action(state)
            reward = float(rng.random() < means[action])
            policy.rewards.append(reward)
            entropies.append(ent.item())
        R = 0
        policy_loss = []
        returns = []
        for r in policy.rewards[::-1]:
            R = r + gamma * R
            returns.insert(0, R)
        returns = torch.tensor(returns)
        returns = (returns - returns.mean()) / (returns.std() + eps)
        for log_prob, R in zip(policy.saved_log_probs, returns):
            policy_loss.append(-log_prob * R)
        optimizer.zero_grad()
        policy_loss = torch.cat(policy_loss).sum()
        policy_loss.backward()
        optimizer.step()
        history.append(policy_loss.item())
        del policy.rewards[:]
        del policy.saved_log_probs[:]
    with torch.no_grad():
        final = policy(torch.tensor(rng.standard_normal((64, 4)).astype(np.float32))).mean(0)
    return history, entropies, final


def test_reinforce_bandit():
    weights = weights_of(lambda m: reinforce(m, None))
    # actions drawn from the policy's probabilities by one NumPy generator: the same episodes on both
    (history, entropies, final), _ = run_both(reinforce, weights, rtol=1e-4, atol=1e-5)
    assert len(history) == 15 and len(entropies) == 60
    assert all(0 < e <= np.log(3) + 1e-6 for e in entropies)
    np.testing.assert_allclose(final.sum(), 1.0, rtol=1e-5)
    # Categorical.sample(): the generators differ, so only what learning should do is checked
    (history, entropies, final), _ = run_both(reinforce, weights, own_sampler=False, episodes=200,
                                              compare=False)
    assert final[1] > 0.5  # the best arm (mean reward 0.9) becomes the most likely


# ----------------------------------------------------------------------------------------------
# word2vec skip-gram with negative sampling
# ----------------------------------------------------------------------------------------------


def skipgram(m, weights, epochs=5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    V, D, K = 20, 8, 4
    class SkipGramNeg(nn.Module):
        def __init__(self):
            super().__init__()
            self.in_embed = nn.Embedding(V, D)
            self.out_embed = nn.Embedding(V, D)
            self.in_embed.weight.data.uniform_(-1, 1)
            self.out_embed.weight.data.uniform_(-1, 1)
        def forward(self, input_words, output_words, noise_words):
            input_vectors = self.in_embed(input_words).unsqueeze(2)       # (B, D, 1)
            output_vectors = self.out_embed(output_words).unsqueeze(1)    # (B, 1, D)
            noise_vectors = self.out_embed(noise_words).neg()             # (B, K, D)
            out_loss = torch.bmm(output_vectors, input_vectors).sigmoid().log().squeeze()
            noise_loss = F.logsigmoid(torch.bmm(noise_vectors, input_vectors)).squeeze().sum(1)
            return -(out_loss + noise_loss).mean()
    model = SkipGramNeg()
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(1)
    corpus = rng.integers(0, V, 200)
    pairs = np.array([(corpus[i], corpus[j]) for i in range(len(corpus))
                      for j in range(max(0, i - 2), min(len(corpus), i + 3)) if i != j])
    freqs = np.bincount(corpus, minlength=V) ** 0.75
    noise_dist = torch.tensor(freqs / freqs.sum())
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for epoch in range(epochs):
        for b in range(0, 256, 64):
            inp = torch.tensor(pairs[b:b + 64, 0])
            out = torch.tensor(pairs[b:b + 64, 1])
            noise = torch.tensor(rng.choice(V, (64, K), p=freqs / freqs.sum()))
            loss = model(inp, out, noise)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    torch.manual_seed(0)
    drawn = torch.multinomial(noise_dist, 1000, replacement=True)
    emb = model.in_embed.weight
    sims = F.cosine_similarity(emb[:3].unsqueeze(1), emb.unsqueeze(0), dim=2)
    return losses, sims, model.out_embed.weight.grad, drawn.shape, drawn.dtype == torch.int64


def test_skipgram_negative_sampling():
    weights = weights_of(lambda m: skipgram(m, None))
    (losses, sims, out_grad, drawn_shape, drawn_long), _ = run_both(skipgram, weights, rtol=1e-4, atol=1e-5)
    assert len(losses) == 20 and losses[-1] < losses[0] - 0.3  # 4.06 -> 3.55 on PyTorch
    assert sims.shape == (3, 20)
    np.testing.assert_allclose(np.diag(sims[:, :3]), 1.0, rtol=1e-5)
    assert tuple(drawn_shape) == (1000,) and drawn_long


# ----------------------------------------------------------------------------------------------
# A Transformer-encoder classifier: padding mask, positional encodings, warmup + cosine,
# clip_grad_norm_, AdamW with and without weight decay
# ----------------------------------------------------------------------------------------------


def transformer_cls(m, weights, steps=8):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    V, D, C, L = 16, 16, 3, 7
    class PositionalEncoding(nn.Module):
        def __init__(self, d_model, dropout=0.0, max_len=32):
            super().__init__()
            self.dropout = nn.Dropout(p=dropout)
            position = torch.arange(max_len).unsqueeze(1)
            div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
            pe = torch.zeros(max_len, 1, d_model)
            pe[:, 0, 0::2] = torch.sin(position * div_term)
            pe[:, 0, 1::2] = torch.cos(position * div_term)
            self.register_buffer('pe', pe)
        def forward(self, x):
            x = x + self.pe[:x.size(0)]
            return self.dropout(x)
    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, D, padding_idx=0)
            self.pos_encoder = PositionalEncoding(D)
            layer = nn.TransformerEncoderLayer(D, nhead=2, dim_feedforward=32, dropout=0.0)
            self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(D)
            self.head = nn.Linear(D, C)
        def forward(self, src, pad_mask):
            x = self.embedding(src) * math.sqrt(D)     # (L, B, D): seq-first
            x = self.pos_encoder(x)
            x = self.transformer_encoder(x, src_key_padding_mask=pad_mask)
            keep = (~pad_mask).t().unsqueeze(-1).float()
            pooled = (x * keep).sum(0) / keep.sum(0)
            return self.head(self.norm(pooled))
    model = Classifier()
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(4)
    lengths = np.array([7, 5, 3, 6, 7, 4])
    src = rng.integers(1, V, (6, L))
    src[np.arange(L)[None, :] >= lengths[:, None]] = 0
    labels = torch.tensor(src[:, 0] % C)
    src_t = torch.tensor(src.T.copy())
    pad_mask = torch.tensor(src == 0)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    optimizer = optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.98))
    warmup = 3
    def lr_lambda(step):
        if step < warmup:
            return float(step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    losses, lrs, norms = [], [], []
    model.train()
    for step in range(steps):
        optimizer.zero_grad()
        logits = model(src_t, pad_mask)
        loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
        loss.backward()
        norms.append(nn.utils.clip_grad_norm_(model.parameters(), 0.5).item())
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        lrs.append(scheduler.get_last_lr())
    model.eval()
    with torch.no_grad():
        out_eval = model(src_t, pad_mask)
        # a padded token's content must not change any output
        src2 = src.copy()
        src2[2, 5] = 9
        out_eval2 = model(torch.tensor(src2.T.copy()), pad_mask)
    return losses, lrs, norms, out_eval, out_eval2


def test_transformer_encoder_classifier():
    weights = weights_of(lambda m: transformer_cls(m, None))
    (losses, lrs, norms, out, out_padded_changed), _ = run_both(transformer_cls, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < 0.6 * losses[0]  # 1.56 -> 0.73 on PyTorch
    # read after scheduler.step(): warmup factors 2/3, 1, then the cosine from 1 down to 0
    factors = (2 / 3, 1, *(0.5 * (1 + math.cos(math.pi * k / 5)) for k in range(6)))
    expected = [3e-3 * f for f in factors]
    np.testing.assert_allclose([lr[0] for lr in lrs], expected, rtol=1e-12, atol=1e-15)
    assert all(a == b for a, b in lrs)  # both groups follow the schedule
    assert norms[0] > 0.5  # the norm before clipping is returned
    np.testing.assert_array_equal(out, out_padded_changed)  # a padded token changes nothing


# ----------------------------------------------------------------------------------------------
# Gradient accumulation, frozen layers, param groups, zero_grad(set_to_none=False), and a
# checkpoint through save/load to a BytesIO that resumes the same trajectory
# ----------------------------------------------------------------------------------------------


def accumulate_resume(m, weights, total=8, resume_at=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    def make():
        return nn.Sequential(nn.Linear(5, 12), nn.BatchNorm1d(12), nn.GELU(), nn.Linear(12, 12), nn.ReLU(),
                             nn.Linear(12, 3))
    model = make()
    if weights is None:
        return model
    rng = np.random.default_rng(7)
    X = torch.tensor(rng.standard_normal((total, 4, 4, 5)).astype(np.float32))
    Y = torch.tensor(rng.integers(0, 3, (total, 4, 4)))
    accum = 4
    def build():
        model = load(m, make(), weights)
        model[0].requires_grad_(False)   # freeze the first layer
        opt = optim.SGD([{"params": model[3].parameters(), "lr": 0.05},
                         {"params": model[5].parameters()},
                         {"params": model[1].parameters(), "weight_decay": 0.0}],
                        lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
        sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        return model, opt, sched
    def train(model, opt, sched, start, stop, log):
        model.train()
        for step in range(start, stop):
            opt.zero_grad(set_to_none=False)
            for micro in range(accum):
                out = model(X[step, micro])
                if micro % 2 == 0:
                    loss = F.cross_entropy(out, Y[step, micro], reduction="sum") / (4 * accum)
                else:
                    loss = F.cross_entropy(out, Y[step, micro], reduction="mean") / accum
                loss.backward()
            log.append((loss.item(), model[3].weight.grad.norm().item(), model[0].weight.grad is None))
            opt.step()
            sched.step()
    model, opt, sched = build()
    full_log = []
    train(model, opt, sched, 0, total, full_log)
    straight = {k: v.clone() for k, v in model.state_dict().items()}
    model, opt, sched = build()
    part_log = []
    train(model, opt, sched, 0, resume_at, part_log)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "step": resume_at}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    model2, opt2, sched2 = build()
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    train(model2, opt2, sched2, ckpt["step"], total, part_log)
    resumed = model2.state_dict()
    same = all(bool(torch.equal(straight[k], resumed[k])) for k in straight)
    frozen_same = bool(torch.equal(resumed["0.weight"], torch.tensor(weights["0.weight"])))
    grads_zero_kept = model2[3].weight.grad is not None
    return full_log, part_log, same, frozen_same, grads_zero_kept, straight, opt2.param_groups[0]["lr"], \
        [g["lr"] for g in opt2.state_dict()["param_groups"]], sorted(ckpt["optimizer"]["state"].keys())


def test_accumulation_freezing_and_resume():
    weights = weights_of(lambda m: accumulate_resume(m, None))
    ours, _ = run_both(accumulate_resume, weights, rtol=1e-4, atol=1e-5)
    full_log, part_log, same, frozen_same, grads_kept, state, lr, group_lrs, state_keys = ours
    assert same and frozen_same and grads_kept
    assert full_log == part_log  # the resumed run logs what the straight run logged, exactly
    assert all(frozen for _, _, frozen in full_log)  # the frozen layer never gets a .grad
    assert lr == 0.1 * 0.5 ** 4 * 0.5 and group_lrs == [0.003125, 0.00625, 0.00625]
    assert state_keys == [0, 1, 2, 3, 4, 5]  # momentum buffers of the six trained tensors only


# ----------------------------------------------------------------------------------------------
# Deep Q-learning (PyTorch's DQN tutorial) on a five-cell corridor
# ----------------------------------------------------------------------------------------------


Transition = namedtuple('Transition', ('state', 'action', 'next_state', 'reward'))


class ReplayMemory(object):
    def __init__(self, capacity):
        self.memory = deque([], maxlen=capacity)

    def push(self, *args):
        self.memory.append(Transition(*args))

    def sample(self, batch_size, rng):
        return [self.memory[i] for i in rng.choice(len(self.memory), batch_size, replace=False)]

    def __len__(self):
        return len(self.memory)


def dqn(m, weights, episodes=6):
    """PyTorch's DQN tutorial on a 1-D corridor: reach the right end (reward 1) in few steps."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class DQN(nn.Module):
        def __init__(self, n_observations, n_actions):
            super(DQN, self).__init__()
            self.layer1 = nn.Linear(n_observations, 32)
            self.layer2 = nn.Linear(32, 32)
            self.layer3 = nn.Linear(32, n_actions)

        def forward(self, x):
            x = F.relu(self.layer1(x))
            x = F.relu(self.layer2(x))
            return self.layer3(x)

    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = DQN(5, 2)

    both = Both()
    if weights is None:
        return both
    load(m, both, weights)
    BATCH_SIZE, GAMMA, EPS_START, EPS_END, EPS_DECAY, TAU, LR = 16, 0.9, 0.9, 0.05, 50, 0.05, 1e-3
    policy_net = both.policy
    target_net = DQN(5, 2)
    target_net.load_state_dict(policy_net.state_dict())
    optimizer = optim.AdamW(policy_net.parameters(), lr=LR, amsgrad=True)
    memory = ReplayMemory(1000)
    rng = np.random.default_rng(0)
    steps_done = 0

    def observe(pos):
        return torch.tensor(np.eye(5, dtype=np.float32)[pos]).unsqueeze(0)

    def select_action(state):
        nonlocal steps_done
        sample = rng.random()
        eps_threshold = EPS_END + (EPS_START - EPS_END) * math.exp(-1. * steps_done / EPS_DECAY)
        steps_done += 1
        if sample > eps_threshold:
            with torch.no_grad():
                return policy_net(state).max(1).indices.view(1, 1)
        return torch.tensor([[int(rng.integers(2))]], dtype=torch.long)

    losses = []

    def optimize_model():
        if len(memory) < BATCH_SIZE:
            return
        transitions = memory.sample(BATCH_SIZE, rng)
        batch = Transition(*zip(*transitions))
        non_final_mask = torch.tensor(tuple(map(lambda s: s is not None, batch.next_state)), dtype=torch.bool)
        non_final_next_states = torch.cat([s for s in batch.next_state if s is not None])
        state_batch = torch.cat(batch.state)
        action_batch = torch.cat(batch.action)
        reward_batch = torch.cat(batch.reward)
        state_action_values = policy_net(state_batch).gather(1, action_batch)
        next_state_values = torch.zeros(BATCH_SIZE)
        with torch.no_grad():
            next_state_values[non_final_mask] = target_net(non_final_next_states).max(1).values
        expected_state_action_values = (next_state_values * GAMMA) + reward_batch
        criterion = nn.SmoothL1Loss()
        loss = criterion(state_action_values, expected_state_action_values.unsqueeze(1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_value_(policy_net.parameters(), 100)  # torch.nn.utils in the tutorial
        optimizer.step()
        losses.append(loss.item())

    lengths = []
    for i_episode in range(episodes):
        pos = 0
        state = observe(pos)
        for t in range(30):
            action = select_action(state)
            pos = max(0, pos + (1 if action.item() == 1 else -1))
            terminated = pos == 4
            reward = torch.tensor([1.0 if terminated else -0.05])
            next_state = None if terminated else observe(pos)
            memory.push(state, action, next_state, reward)
            state = next_state
            optimize_model()
            target_net_state_dict = target_net.state_dict()
            policy_net_state_dict = policy_net.state_dict()
            for key in policy_net_state_dict:
                target_net_state_dict[key] = policy_net_state_dict[key] * TAU + target_net_state_dict[key] * (1 - TAU)
            target_net.load_state_dict(target_net_state_dict)
            if terminated:
                break
        lengths.append(t + 1)
    with torch.no_grad():
        q = policy_net(torch.eye(5))
    return lengths, losses, q, target_net.state_dict()


def test_dqn_corridor():
    weights = weights_of(lambda m: dqn(m, None))
    (lengths, losses, q, target_state), _ = run_both(dqn, weights, rtol=1e-4, atol=1e-5)
    # the episodes' lengths from PyTorch's initial weights for seed 0 and its draws (PyTorch's too)
    assert lengths == [30, 18, 4, 12, 4, 4] and len(losses) == sum(lengths) - 15  # learning starts at 16
    assert all(np.isfinite(losses))  # (a TD loss moves with the targets: no trend over 57 steps to assert)
    assert (q[:4, 1] > q[:4, 0]).all()  # moving right (towards the reward) is valued higher everywhere


# ----------------------------------------------------------------------------------------------
# Spatial transformer networks (PyTorch's tutorial): affine_grid + grid_sample in a classifier
# ----------------------------------------------------------------------------------------------


def spatial_transformer(m, weights, steps=6):
    """PyTorch's spatial transformer tutorial (a localisation net predicts an affine map,
    affine_grid + grid_sample warp the input), on 12x12 random 'digits'."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 6, kernel_size=3)
            self.conv2 = nn.Conv2d(6, 8, kernel_size=3)
            self.conv2_drop = nn.Dropout2d(p=0.0)
            self.fc1 = nn.Linear(8 * 1 * 1, 16)
            self.fc2 = nn.Linear(16, 4)
            self.localization = nn.Sequential(
                nn.Conv2d(1, 4, kernel_size=3), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
                nn.Conv2d(4, 6, kernel_size=3), nn.MaxPool2d(2, stride=2), nn.ReLU(True))
            self.fc_loc = nn.Sequential(nn.Linear(6 * 1 * 1, 8), nn.ReLU(True), nn.Linear(8, 3 * 2))
            self.fc_loc[2].weight.data.zero_()
            # the tutorial starts at the identity, which samples exactly at pixel centres: bilinear
            # interpolation has a kink there, and which one-sided derivative the grid gets depends on
            # the last bit of affine_grid's coordinates (NumPy's and PyTorch's linspace differ in it),
            # so the comparison starts a little off the identity
            self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0.013, 0, 1, -0.021], dtype=torch.float))

        def stn(self, x):
            xs = self.localization(x)
            xs = xs.view(-1, 6 * 1 * 1)
            theta = self.fc_loc(xs)
            theta = theta.view(-1, 2, 3)
            grid = F.affine_grid(theta, x.size(), align_corners=False)
            x = F.grid_sample(x, grid, align_corners=False)
            return x, theta

        def forward(self, x):
            x, theta = self.stn(x)
            x = F.relu(F.max_pool2d(self.conv1(x), 2))
            x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
            x = x.view(-1, 8 * 1 * 1)
            x = F.relu(self.fc1(x))
            x = F.dropout(x, training=self.training, p=0.0)
            x = self.fc2(x)
            return F.log_softmax(x, dim=1), theta

    model = Net()
    if weights is None:
        return model
    load(m, model, weights)
    images, labels = quickstart_data(n=64, side=12, classes=4, seed=21)
    x, y = torch.tensor(images), torch.tensor(labels)
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for step in range(steps):
        batch = slice(16 * (step % 4), 16 * (step % 4 + 1))
        optimizer.zero_grad()
        output, theta = model(x[batch])
        loss = F.nll_loss(output, y[batch])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        warped, theta = model.stn(x[:2])
    return losses, theta, warped, {n: p.grad for n, p in model.named_parameters()}


def test_spatial_transformer():
    weights = weights_of(lambda m: spatial_transformer(m, None))
    (losses, theta, warped, grads), _ = run_both(spatial_transformer, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    assert theta.shape == (2, 2, 3) and warped.shape == (2, 1, 12, 12)
    assert np.abs(grads["fc_loc.2.bias"]).sum() > 0  # the localisation net learns through grid_sample
