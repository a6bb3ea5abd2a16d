"""Object-detection and audio programs written with plain tensor idioms, as the model repositories write them without
torchvision / torchaudio, run as tests/probe10_detect_common.py says. Sequence losses for speech: CTC training with
greedy decoding (``unique_consecutive``) and CTC's edge cases (impossible alignments with and without
``zero_infinity``); an RNN-Transducer loss by hand."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# CTC training with F.ctc_loss on log_softmax outputs, greedy decoding by argmax + unique_consecutive
# ----------------------------------------------------------------------------------------------


def ctc_model(m):
    nn = m.nn

    class SpeechRecognizer(nn.Module):
        def __init__(self, n_feats=6, hidden=12, n_class=5):
            super().__init__()
            self.cnn = nn.Conv1d(n_feats, hidden, 3, padding=1)
            self.rnn = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
            self.classifier = nn.Linear(2 * hidden, n_class)

        def forward(self, x):
            x = m.F.gelu(self.cnn(x)).transpose(1, 2)  # [B, T, hidden]
            x, _ = self.rnn(x)
            return self.classifier(x)

    return SpeechRecognizer()


def ctc_program(m, weights, steps=6):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = ctc_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(15)
    B, T = 3, 14
    labels = [[1, 2, 2, 3], [4, 1], [3, 3, 4]]
    # each label is a feature prototype held for 2-3 frames, with blanks (noise) between
    protos = rng.standard_normal((5, 6))
    feats = 0.1 * rng.standard_normal((B, 6, T))
    for b, lab in enumerate(labels):
        t = 1
        for c in lab:
            feats[b, :, t:t + 2] += protos[c][:, None]
            t += 3
    x = torch.tensor(feats, dtype=torch.float32)
    targets = torch.tensor([c for lab in labels for c in lab])  # concatenated form
    target_lengths = torch.tensor([len(lab) for lab in labels])
    input_lengths = torch.tensor([14, 10, 12])
    criterion = nn.CTCLoss(blank=0, zero_infinity=True)
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-2, total_steps=steps, anneal_strategy="linear")
    losses = []
    for _ in range(steps):
        output = F.log_softmax(model(x), dim=2)  # [B, T, C]
        output = output.transpose(0, 1)  # [T, B, C]
        loss = criterion(output, targets, input_lengths, target_lengths)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    # padded-targets form and per-sample losses agree with the concatenated one
    padded = torch.zeros(B, 4, dtype=torch.long)
    for b, lab in enumerate(labels):
        padded[b, :len(lab)] = torch.tensor(lab)
    with torch.no_grad():
        lp = F.log_softmax(model(x), dim=2).transpose(0, 1)
        per = F.ctc_loss(lp, padded, input_lengths, target_lengths, reduction="none")
        per_cat = F.ctc_loss(lp, targets, input_lengths, target_lengths, reduction="sum")

    def greedy_decode(log_probs, lengths, blank=0):
        arg_maxes = torch.argmax(log_probs, dim=2).transpose(0, 1)  # [B, T]
        decodes = []
        for i, args in enumerate(arg_maxes):
            collapsed = torch.unique_consecutive(args[:lengths[i]])
            decodes.append(collapsed[collapsed != blank].tolist())
        return decodes, arg_maxes

    decodes, arg_maxes = greedy_decode(lp, input_lengths)
    return losses, per, per_cat, arg_maxes, decodes, model.rnn.weight_hh_l0_reverse.grad, model.cnn.weight.grad


def test_ctc_training_and_greedy_decoding():
    weights = weights_of(lambda m: ctc_program(m, None))
    (losses, per, per_cat, arg_maxes, decodes, g_rnn, g_cnn), _ = run_both(ctc_program, weights, rtol=1e-4,
                                                                           atol=1e-5)
    assert losses[-1] < losses[0] and arg_maxes.dtype == np.int64
    np.testing.assert_allclose(per.sum(), per_cat, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# CTC edge cases: an impossible alignment under zero_infinity, int32 targets, float64 log-probs
# ----------------------------------------------------------------------------------------------


def ctc_edges_program(m, zero_infinity):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(19)
    T, B, C = 6, 3, 4
    logits = torch.tensor(rng.standard_normal((T, B, C)), requires_grad=True)
    log_probs = logits.log_softmax(2)
    # sample 1 needs 5 labels with a repeat (at least 6 frames) but has 4: its loss is infinite
    targets = torch.tensor([[1, 2, 0, 0, 0], [3, 3, 1, 2, 1], [2, 0, 0, 0, 0]], dtype=torch.int32)
    input_lengths = torch.tensor([6, 4, 5], dtype=torch.int32)
    target_lengths = torch.tensor([2, 5, 1], dtype=torch.int32)
    per = F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="none",
                     zero_infinity=zero_infinity)
    mean = F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
                      zero_infinity=zero_infinity)
    if zero_infinity:
        mean.backward()
        return per, mean, logits.grad
    # the finite samples' gradient, and blank as the last class
    per[[0, 2]].sum().backward()
    last = F.ctc_loss(log_probs, targets - 1 + (targets == 0).int() * C, [6, 4, 5], (2, 5, 1), blank=C - 1,
                      reduction="none")
    return per, mean, logits.grad, last


def test_ctc_impossible_alignment_and_zero_infinity():
    (per, mean, grad), _ = run_both(ctc_edges_program, True, rtol=1e-9, atol=1e-10)
    assert per[1] == 0 and np.isfinite(mean) and (grad[:, 1] == 0).all()
    (per, mean, grad, last), _ = run_both(ctc_edges_program, False, rtol=1e-9, atol=1e-10)
    # PyTorch's gradient is NaN on the impossible sample's 4 frames even though only the others were summed
    assert np.isinf(per[1]) and np.isinf(mean) and np.isnan(grad[:4, 1]).all() and (grad[4:, 1] == 0).all()
    assert np.isfinite(grad[:, [0, 2]]).all() and np.isinf(last[1]) and np.isfinite(last[[0, 2]]).all()


# ----------------------------------------------------------------------------------------------
# An RNN-Transducer loss by hand (the alpha lattice in log space), trained through a joint network
# ----------------------------------------------------------------------------------------------


def transducer_model(m):
    nn = m.nn

    class Transducer(nn.Module):
        def __init__(self, n_feats=5, vocab=4, hidden=8, joint=10):
            super().__init__()
            self.encoder = nn.LSTM(n_feats, hidden, batch_first=True)
            self.embed = nn.Embedding(vocab, hidden, padding_idx=0)  # 0 is the blank, also the start token
            self.predictor = nn.GRU(hidden, hidden, batch_first=True)
            self.joint_enc = nn.Linear(hidden, joint)
            self.joint_pred = nn.Linear(hidden, joint, bias=False)
            self.out = nn.Linear(joint, vocab)

        def forward(self, x, y):
            enc, _ = self.encoder(x)  # [B, T, H]
            y_in = m.F.pad(y, (1, 0), value=0)  # prepend the start (blank) token
            pred, _ = self.predictor(self.embed(y_in))  # [B, U+1, H]
            joint = self.joint_enc(enc).unsqueeze(2) + self.joint_pred(pred).unsqueeze(1)  # [B, T, U+1, J]
            return self.out(m.torch.tanh(joint)).log_softmax(dim=-1)

    return Transducer()


def rnnt_loss(m, log_probs, targets, logit_lengths, target_lengths, blank=0):
    torch = m.torch
    losses = []
    for b in range(log_probs.shape[0]):
        T, U = int(logit_lengths[b]), int(target_lengths[b])
        lp = log_probs[b]
        blank_lp = lp[:T, :U + 1, blank]  # [T, U+1]
        emit_lp = lp[:T, :U].gather(2, targets[b, :U].view(1, U, 1).expand(T, U, 1)).squeeze(2)  # [T, U]
        alpha = [[None] * (U + 1) for _ in range(T)]
        alpha[0][0] = torch.zeros((), dtype=lp.dtype)
        for t in range(T):
            for u in range(U + 1):
                if t == 0 and u == 0:
                    continue
                terms = []
                if t > 0:
                    terms.append(alpha[t - 1][u] + blank_lp[t - 1, u])
                if u > 0:
                    terms.append(alpha[t][u - 1] + emit_lp[t, u - 1])
                alpha[t][u] = torch.logsumexp(torch.stack(terms), dim=0)
        losses.append(-(alpha[T - 1][U] + blank_lp[T - 1, U]))
    return torch.stack(losses)


def transducer_program(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    model = transducer_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(26)
    x = torch.tensor(rng.standard_normal((2, 6, 5)), dtype=torch.float32)
    y = torch.tensor([[1, 3, 2], [2, 2, 0]])
    x_lens = torch.tensor([6, 4])
    y_lens = torch.tensor([3, 2])

    opt = optim.Adam(model.parameters(), lr=0.01)
    history = []
    for _ in range(steps):
        log_probs = model(x, y)
        loss = rnnt_loss(m, log_probs, y, x_lens, y_lens).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())

    # greedy decoding: at each frame emit until blank (at most 2 symbols per frame)
    @torch.no_grad()
    def greedy(x, length):
        enc, _ = model.encoder(x)
        hyp, hidden = [], None
        token = torch.zeros(1, 1, dtype=torch.long)
        pred, hidden = model.predictor(model.embed(token), hidden)
        for t in range(length):
            for _ in range(2):
                logits = model.out(torch.tanh(model.joint_enc(enc[:, t]) + model.joint_pred(pred[:, -1])))
                k = logits.argmax(-1).item()
                if k == 0:
                    break
                hyp.append(k)
                pred, hidden = model.predictor(model.embed(torch.tensor([[k]])), hidden)
        return hyp

    return history, model.joint_pred.weight.grad, model.encoder.weight_ih_l0.grad, greedy(x[:1], 6)


def test_rnn_transducer_loss_by_hand():
    weights = weights_of(lambda m: transducer_program(m, None))
    (history, g_joint, g_enc, hyp), _ = run_both(transducer_program, weights, rtol=1e-4, atol=1e-6)
    assert history[-1] < history[0] and all(0 < k < 4 for k in hyp)


def test_rnn_transducer_loss_against_a_path_sum():
    # T=2 frames, U=1 label: two paths through the lattice, (blank, emit, blank) and (emit, blank, blank)
    lp = np.log(np.random.default_rng(27).dirichlet(np.ones(3), (1, 2, 2)))
    (loss, grad), _ = run_both(lambda m: (lambda t: (rnnt_loss(m, t, m.torch.tensor([[2]]), [2], [1]),
                                                      m.torch.autograd.grad(rnnt_loss(m, t, m.torch.tensor([[2]]),
                                                                                      [2], [1]).sum(), t)[0]))(
        m.torch.tensor(lp, requires_grad=True)), rtol=1e-12, atol=1e-14)
    expected = -np.logaddexp(lp[0, 0, 0, 0] + lp[0, 1, 0, 2] + lp[0, 1, 1, 0],
                             lp[0, 0, 0, 2] + lp[0, 0, 1, 0] + lp[0, 1, 1, 0])
    np.testing.assert_allclose(loss, [expected], rtol=1e-12)
    assert grad[0, 0, 1, 1] == 0 and grad[0, 1, 1, 0] == -1  # an unused entry; the last blank is on both paths
