# ruff: noqa: B007, B008, B023, E501, E731, E741, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Programs that meet special values and degenerate shapes (see tests/pytorch_programs.py), each run on chainrule
and on PyTorch from the same weights and data, comparing values, gradients, parameters and errors, and checked
against values known by hand.

Mask R-CNN's mask head over an image without proposals (``ConvTranspose2d`` on an empty batch, torchvision's
``mask_logits.sum() * 0`` loss, SGD with momentum and weight decay); a video autoencoder (``Conv3d``,
``ConvTranspose3d``) fed a filtered batch with nothing left; a bucketed sequence classifier whose bucket is empty
(``LSTM``, a two-layer bidirectional ``GRU``, ``LSTMCell``/``GRUCell``/``RNNCell`` loops, and the refusal of a
sequence of length 0); a Transformer encoder-decoder stepped on an empty batch and on one with a fully padded
sequence (``TransformerEncoderLayer``, ``TransformerDecoderLayer``, ``MultiheadAttention`` without weights, its
float ``attn_mask``); heteroscedastic regression whose variance head overflows to inf (``gaussian_nll_loss``,
the non-finite losses masked out by ``isfinite``) and retrieval by ``cosine_similarity`` of features whose norm
overflows; a LoRA adapter of rank 0 (zero-size parameters under Adam, ``clip_grad_norm_`` of orders 2 and inf);
per-class metrics over classes without samples (0/0, ``nanmean``, ``nan_to_num``, reductions of empty selections
and their refusals); dynamic loss scaling (``isfinite`` checks, skipped steps, ``clip_grad_norm_(
error_if_nonfinite=True)``, ``detect_anomaly`` naming the backward that made a NaN); a multi-label head whose
impossible labels have logits of ±inf (``Bernoulli(logits=).log_prob`` and ``entropy``); and a scorer whose
``sigmoid`` underflows to exactly 0 (a naive log-loss that becomes inf, ``BCELoss``'s floor of -100); a token
tagger whose padded positions' logits are masked to -inf and ignored by ``cross_entropy`` (with label smoothing)
and ``nll_loss``; and segmentation whose void pixels have probability 0 (``nll_loss`` of a 4-d input with
``ignore_index=255`` and class weights).
Then focused tests of what they found: ``vector_norm`` of orders inf and below 0 over empty tensors and dims, and
the undefined gradient of its order 0; ``movedim``, ``split`` and ``index_select`` of 0-d tensors; convolutions,
fractional max pooling, ``svd``, ``native_group_norm`` and ``spectral_norm`` on empty batches or zero-size weights;
convolutions without filters, ``orthogonal_`` of zero-size tensors, adaptive pooling of empty planes; NaN (and infinite) arguments to
``bernoulli``, ``dropout``, ``quantile``, ``pdist``/``cdist``, ``huber_loss``/``smooth_l1_loss``, ``interpolate``,
``uniform_`` and the other samplers, ``renorm``; ``binomial`` outside [0, 1]; and a NaN made an integer
tensor (refused as an overflow, PyTorch's words)."""

import math
import warnings

import numpy as np
import pytest

from tests.ported import raises
from tests.program_errors import raises_alike

from .pytorch_programs import OURS, load, pytorch, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Mask R-CNN's mask head: an image without proposals gives an empty batch of ROI features
# ----------------------------------------------------------------------------------------------


def make_mask_head(m):
    nn = m.nn

    class MaskRCNNHeads(nn.Sequential):
        def __init__(self, in_channels=4, layers=(8, 8)):
            blocks = []
            next_feature = in_channels
            for layer_features in layers:
                blocks += [nn.Conv2d(next_feature, layer_features, 3, padding=1), nn.ReLU(inplace=True)]
                next_feature = layer_features
            super().__init__(*blocks)

    class MaskRCNNPredictor(nn.Sequential):
        def __init__(self, in_channels=8, dim_reduced=6, num_classes=3):
            super().__init__()
            self.conv5_mask = nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)
            self.relu = nn.ReLU(inplace=True)
            self.mask_fcn_logits = nn.Conv2d(dim_reduced, num_classes, 1, 1, 0)

    return nn.Sequential(MaskRCNNHeads(), MaskRCNNPredictor())


def maskrcnn_loss(m, mask_logits, labels, mask_targets):
    F = m.F
    if mask_targets.numel() == 0:
        return mask_logits.sum() * 0  # torchvision's: no proposal, a zero loss still connected to the graph
    picked = mask_logits[m.torch.arange(labels.shape[0]), labels]
    return F.binary_cross_entropy_with_logits(picked, mask_targets)


def mask_head(m, weights):
    torch, optim = m.torch, m.optim
    rng = np.random.default_rng(0)
    model = load(m, make_mask_head(m), weights)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    batches = [  # (ROI features, labels, mask targets): the second image has no proposals
        (rng.standard_normal((3, 4, 5, 5)).astype(np.float32), np.array([0, 2, 1]),
         (rng.random((3, 10, 10)) < 0.4).astype(np.float32)),
        (np.zeros((0, 4, 5, 5), np.float32), np.zeros(0, np.int64), np.zeros((0, 10, 10), np.float32)),
        (rng.standard_normal((2, 4, 5, 5)).astype(np.float32), np.array([1, 1]),
         (rng.random((2, 10, 10)) < 0.4).astype(np.float32)),
    ]
    losses, empty = [], {}
    for features, labels, targets in batches:
        mask_logits = model(torch.tensor(features))
        loss = maskrcnn_loss(m, mask_logits, torch.tensor(labels), torch.tensor(targets))
        optimizer.zero_grad()
        loss.backward()
        if features.shape[0] == 0:
            empty = {"logits": mask_logits, "loss": loss,
                     "grads": {k: p.grad.clone() for k, p in model.named_parameters()}}
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "empty": empty, "weights": dict(model.state_dict())}


def test_mask_head_over_an_image_without_proposals():
    weights = weights_of(make_mask_head)
    ours, _ = run_both(mask_head, weights, rtol=1e-5, atol=1e-6)
    assert ours["empty"]["logits"].shape == (0, 3, 10, 10) and ours["losses"][1] == 0.0
    assert all((g == 0).all() for g in ours["empty"]["grads"].values())  # every weight's gradient exists, all 0


# ----------------------------------------------------------------------------------------------
# A video autoencoder fed a filtered batch with nothing left
# ----------------------------------------------------------------------------------------------


def make_video_autoencoder(m):
    nn = m.nn
    return nn.Sequential(nn.Conv3d(2, 4, 3, stride=(1, 2, 2), padding=1), nn.GELU(),
                         nn.Conv3d(4, 4, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(),
                         nn.ConvTranspose3d(4, 2, (1, 2, 2), stride=(1, 2, 2)))


def video_autoencoder(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(1)
    clips = torch.tensor(rng.standard_normal((5, 2, 3, 6, 6)).astype(np.float32))
    motion = torch.tensor([0.2, 0.05, 0.9, 0.1, 0.3])
    model = load(m, make_video_autoencoder(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for threshold in (0.25, 2.0, 0.0):  # the second threshold keeps no clip
        keep = motion > threshold
        batch = clips[keep]
        recon = model(batch)
        loss = F.mse_loss(recon, batch, reduction="sum") / max(1, batch.shape[0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((tuple(recon.shape), loss.item()))
    return {"shapes": str([h[0] for h in history]), "losses": [h[1] for h in history],
            "weights": dict(model.state_dict())}


def test_video_autoencoder_on_an_empty_batch():
    weights = weights_of(make_video_autoencoder)
    ours, _ = run_both(video_autoencoder, weights, rtol=2e-5, atol=2e-6)
    assert "(0, 2, 3, 6, 6)" in ours["shapes"] and ours["losses"][1] == 0.0


# ----------------------------------------------------------------------------------------------
# A bucketed sequence classifier whose bucket is empty; recurrent cells stepped over no sequences
# ----------------------------------------------------------------------------------------------


def make_bucketed(m):
    nn = m.nn

    class Bucketed(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(3, 5, batch_first=True)
            self.gru = nn.GRU(5, 4, num_layers=2, bidirectional=True, batch_first=True)
            self.cell = nn.LSTMCell(3, 5)
            self.gru_cell = nn.GRUCell(5, 5)
            self.rnn_cell = nn.RNNCell(5, 5, nonlinearity="relu")
            self.head = nn.Linear(8 + 5, 2)

        def forward(self, x):
            y, (h, c) = self.lstm(x)
            z, h_n = self.gru(y)
            hx = cx = x.new_zeros(x.shape[0], 5)
            for t in range(x.shape[1]):
                hx, cx = self.cell(x[:, t], (hx, cx))
                hx = self.rnn_cell(self.gru_cell(hx, hx), hx)
            return self.head(m.torch.cat([z[:, -1], hx], dim=1))

    return Bucketed()


def bucketed(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(2)
    lengths = np.array([3, 3, 6, 6, 6])
    x = rng.standard_normal((5, 6, 3)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1])
    model = load(m, make_bucketed(m), weights)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    out = {}
    for length in (3, 4, 6):  # no sequence has length 4: its bucket is empty
        members = np.nonzero(lengths == length)[0]
        xb = torch.tensor(x[members, :length])
        logits = model(xb)
        loss = F.cross_entropy(logits, torch.tensor(y[members]), reduction="sum")
        optimizer.zero_grad()
        loss.backward()
        out[f"bucket{length}"] = {"logits": logits, "loss": loss,
                                  "grads": {k: p.grad.clone() for k, p in model.named_parameters()}}
        optimizer.step()
    out["weights"] = dict(model.state_dict())
    return out


def test_bucketed_recurrent_classifier_with_an_empty_bucket():
    weights = weights_of(make_bucketed)
    ours, _ = run_both(bucketed, weights, rtol=2e-5, atol=2e-6)
    empty = ours["bucket4"]
    assert empty["logits"].shape == (0, 2) and empty["loss"] == 0.0
    assert all((g == 0).all() for g in empty["grads"].values())


def test_recurrent_layers_refuse_a_sequence_of_length_zero():
    def run(m, make, shape):
        return make(m)(m.torch.zeros(*shape))

    for make, shape in ((lambda m: m.nn.LSTM(3, 4), (0, 2, 3)), (lambda m: m.nn.GRU(3, 4, batch_first=True), (2, 0, 3)),
                        (lambda m: m.nn.RNN(3, 4), (0, 3))):
        raises_alike(run, "Expected sequence length to be larger than 0 in RNN", make, shape, kind=RuntimeError)
    # an empty batch of sequences with steps is not refused
    assert run(OURS, lambda m: m.nn.RNN(3, 4, batch_first=True), (0, 2, 3))[0].shape == (0, 2, 4)


# ----------------------------------------------------------------------------------------------
# A Transformer stepped on an empty batch, and on one with a fully padded sequence
# ----------------------------------------------------------------------------------------------


def make_seq2seq(m):
    nn = m.nn

    class Seq2Seq(nn.Module):
        def __init__(self, d=8):
            super().__init__()
            layer = nn.TransformerEncoderLayer(d, 2, 16, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.decoder = nn.TransformerDecoderLayer(d, 2, 16, dropout=0.0, batch_first=True, norm_first=True)
            self.pool = nn.MultiheadAttention(d, 2, batch_first=True)
            self.out = nn.Linear(d, 3)

        def forward(self, src, tgt, src_pad, tgt_mask):
            # (no mask where nothing is padded: PyTorch's own attention cannot reshape a merged mask of no batch)
            memory = self.encoder(src, src_key_padding_mask=src_pad if src_pad.any() else None)
            h = self.decoder(tgt, memory, tgt_mask=tgt_mask)
            pooled, _ = self.pool(h, h, h, attn_mask=tgt_mask, need_weights=False)
            return self.out(pooled)

    return Seq2Seq()


def seq2seq(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(3)
    model = load(m, make_seq2seq(m), weights)
    # (SGD: Adam would scale the key bias's gradient, exactly 0 but for roundoff, up to whole steps)
    optimizer = optim.SGD(model.parameters(), lr=1e-2)
    tgt_mask = nn.Transformer.generate_square_subsequent_mask(4)
    results = {}
    for name, n in (("empty", 0), ("full", 3)):
        src = torch.tensor(rng.standard_normal((n, 5, 8)).astype(np.float32))
        tgt = torch.tensor(rng.standard_normal((n, 4, 8)).astype(np.float32))
        src_pad = torch.zeros(n, 5, dtype=torch.bool)
        if n:
            src_pad[1, 3:] = True
        labels = torch.tensor(rng.integers(0, 3, (n, 4)))
        logits = model(src, tgt, src_pad, tgt_mask)
        loss = F.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1), reduction="sum")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        results[name] = {"logits": logits, "loss": loss}
    results["weights"] = dict(model.state_dict())
    return results


def test_transformer_on_an_empty_batch():
    weights = weights_of(make_seq2seq)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (PyTorch's notes on nested tensors and mask types)
        ours, _ = run_both(seq2seq, weights, rtol=5e-5, atol=5e-6)
    assert ours["empty"]["logits"].shape == (0, 4, 3) and ours["empty"]["loss"] == 0.0
    assert np.isfinite(ours["full"]["logits"]).all()


def padded_attention(m, weights):
    torch = m.torch
    torch.manual_seed(0)
    mha = m.nn.MultiheadAttention(8, 2, batch_first=True)
    mha.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.standard_normal((3, 4, 8)).astype(np.float32), requires_grad=True)
    pad = torch.tensor([[False, False, True, True], [True, True, True, True], [False, False, False, False]])
    bias = torch.zeros(4, 4).masked_fill(torch.eye(4, dtype=torch.bool), -1.0)  # a float attn_mask beside it
    outs = {}
    for need_weights in (True, False):
        out, w = mha(x, x, x, key_padding_mask=pad, attn_mask=bias, need_weights=need_weights)
        loss = out.nan_to_num().pow(2).sum()  # the fully padded sequence's rows are NaN: kept out of the loss
        x.grad = None
        loss.backward()
        outs[str(need_weights)] = {"out": out, "weights": w, "x_grad": x.grad}
    return outs


def test_attention_with_a_fully_padded_sequence_with_and_without_weights():
    weights = {k: v.numpy().copy() for k, v in OURS.nn.MultiheadAttention(8, 2, batch_first=True).state_dict().items()}
    ours, _ = run_both(padded_attention, weights, rtol=2e-5, atol=2e-6)
    for result in ours.values():
        assert np.isfinite(result["out"][[0, 2]]).all() and np.isfinite(result["x_grad"][[0, 2]]).all()
    # the fully padded sequence: NaN through the explicit softmax of the weights, 0 from PyTorch 2's fused
    # attention (which writes a row with no key left as zeros)
    assert np.isnan(ours["True"]["out"][1]).all() and np.isnan(ours["True"]["weights"][1]).all()
    assert (ours["False"]["out"][1] == 0).all()


# ----------------------------------------------------------------------------------------------
# Heteroscedastic regression whose variance overflows; retrieval with features whose norm overflows
# ----------------------------------------------------------------------------------------------


def make_heteroscedastic(m):
    nn = m.nn

    class MeanVariance(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(2, 8), nn.Tanh())
            self.mean = nn.Linear(8, 1)
            self.log_var = nn.Linear(8, 1)

        def forward(self, x):
            h = self.body(x)
            return self.mean(h).squeeze(-1), self.log_var(h).squeeze(-1)

    return MeanVariance()


def heteroscedastic(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.standard_normal((16, 2)).astype(np.float32))
    y = torch.tensor(rng.standard_normal(16).astype(np.float32))
    model = load(m, make_heteroscedastic(m), weights)
    with torch.no_grad():
        model.log_var.bias.fill_(88.0)  # exp(88.7) is float32's largest: the steeper samples overflow
        model.log_var.weight.mul_(3.0)
    optimizer = optim.SGD(model.parameters(), lr=1e-3)
    # first try: the non-finite losses masked out. Their gradient is 0, but exp's derivative there is inf: 0 · inf
    # makes the gradients NaN anyway (the masked-out NaN trap), on both libraries
    mean, log_var = model(x)
    first_losses = F.gaussian_nll_loss(mean, y, log_var.exp(), reduction="none")
    finite = torch.isfinite(first_losses)
    first_losses[finite].mean().backward()
    trapped = {k: p.grad.clone() for k, p in model.named_parameters()}
    history = []
    for step in range(3):  # the fix: the log-variance bounded before exp
        mean, log_var = model(x)
        var = log_var.clamp(-10.0, 10.0).exp()
        losses = F.gaussian_nll_loss(mean, y, var, reduction="none")
        loss = losses.mean()
        optimizer.zero_grad()
        loss.backward()
        history.append([loss.item(), int((~finite).sum())])
        optimizer.step()
    return {"history": history, "first_losses": first_losses, "trapped": trapped,
            "grads": {k: p.grad for k, p in model.named_parameters()}, "weights": dict(model.state_dict())}


def test_heteroscedastic_regression_with_an_overflowing_variance():
    weights = weights_of(make_heteroscedastic)
    ours, _ = run_both(heteroscedastic, weights, rtol=1e-4, atol=1e-5)
    first = ours["first_losses"]
    overflowed = ~np.isfinite(first)
    assert 0 < overflowed.sum() < 16 and np.isposinf(first[overflowed]).all()  # an inf variance: an inf loss, not NaN
    assert np.isnan(ours["trapped"]["log_var.bias"]).all()
    assert all(np.isfinite(g).all() for g in ours["grads"].values())


def retrieval(m):
    torch, F = m.torch, m.F
    queries = torch.tensor([[1e20, 1e20, 0.0], [1.0, 2.0, 2.0], [0.0, 0.0, 0.0]], requires_grad=True)
    keys = torch.tensor([[1.0, 1.0, 0.0], [2e19, -1e19, 3e19], [0.0, 3.0, 4.0]])
    scores = F.cosine_similarity(queries[:, None], keys[None], dim=-1)
    best = scores.nan_to_num(-2.0).argmax(-1)
    scores.nan_to_num(0.0).sum().backward()
    return {"scores": scores, "best": best, "grad": queries.grad}


def test_retrieval_with_features_whose_norm_overflows():
    ours, _ = run_both(retrieval)
    # the overflowing norm is inf: the normalised vector and its cosines are 0 (not NaN), as PyTorch's
    assert (ours["scores"][0] == 0).all() and (ours["scores"][:, 1] == 0).all()
    np.testing.assert_allclose(ours["scores"][1, 2], 14 / 15, rtol=1e-6)
    assert np.isfinite(ours["grad"]).all()


# ----------------------------------------------------------------------------------------------
# A LoRA adapter of rank 0: zero-size parameters in the optimiser and in gradient clipping
# ----------------------------------------------------------------------------------------------


def make_lora(m, rank=0):
    nn = m.nn

    class LoRALinear(nn.Module):
        def __init__(self, base, rank, alpha=4):
            super().__init__()
            self.base = base
            self.lora_A = nn.Parameter(m.torch.zeros(rank, base.in_features))
            self.lora_B = nn.Parameter(m.torch.zeros(base.out_features, rank))
            self.scaling = alpha / max(rank, 1)

        def forward(self, x):
            return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling

    return nn.Sequential(LoRALinear(nn.Linear(4, 6), rank), nn.ReLU(), LoRALinear(nn.Linear(6, 2), rank))


def lora(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(6)
    x = torch.tensor(rng.standard_normal((10, 4)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 2, 10))
    model = load(m, make_lora(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.01)
    norms = []
    for step in range(3):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        norms.append(nn.utils.clip_grad_norm_(model.parameters(), 0.5))
        optimizer.step()
    sizes = [tuple(p.shape) for p in model.parameters()]
    states = [tuple(optimizer.state[p]["exp_avg"].shape) for p in model.parameters()]
    return {"norms": norms, "sizes": str(sizes), "states": str(states), "weights": dict(model.state_dict())}


def test_lora_adapter_of_rank_zero():
    weights = weights_of(make_lora)
    ours, _ = run_both(lora, weights, rtol=2e-5, atol=2e-6)
    assert "(0, 4)" in ours["states"] and "(6, 0)" in ours["states"]


def lora_inf_norm(m, weights):
    model = load(m, make_lora(m), weights)
    m.F.cross_entropy(model(m.torch.ones(2, 4)), m.torch.tensor([0, 1])).backward()
    return m.nn.utils.clip_grad_norm_(model.parameters(), 0.5, norm_type="inf")


def test_lora_adapter_of_rank_zero_refuses_the_inf_norm():
    weights = weights_of(make_lora)
    raises_alike(lora_inf_norm, "_foreach_norm cannot compute the infinity norm on an empty tensor", weights,
                 kind=RuntimeError)


# ----------------------------------------------------------------------------------------------
# Per-class metrics over classes without samples
# ----------------------------------------------------------------------------------------------


def per_class_metrics(m):
    torch = m.torch
    rng = np.random.default_rng(7)
    num_classes = 5
    logits = torch.tensor(rng.standard_normal((12, num_classes)).astype(np.float32))
    targets = torch.tensor([0, 0, 1, 1, 1, 3, 3, 0, 1, 3, 0, 1])  # classes 2 and 4 never occur
    preds = logits.argmax(1)
    confusion = torch.bincount(targets * num_classes + preds, minlength=num_classes ** 2).reshape(num_classes, -1)
    tp = confusion.diag().float()
    precision = tp / confusion.sum(0).float()  # 0/0 where a class is never predicted
    recall = tp / confusion.sum(1).float()
    f1 = 2 * precision * recall / (precision + recall)
    out = {"confusion": confusion, "precision": precision, "recall": recall,
           "macro_recall": torch.nanmean(recall), "macro_f1": f1.nan_to_num(0.0).mean(),
           "nansum": torch.nansum(f1)}
    # per-class statistics of the logits of each class's samples: empty selections for the absent classes
    means, sums, counts = [], [], []
    for c in range(num_classes):
        chosen = logits[targets == c]
        means.append(chosen.mean(0))
        sums.append(chosen.sum(0))
        counts.append(chosen.shape[0])
        if chosen.shape[0] == 0:
            for name, reduce in (("amax", lambda t: t.amax(0)), ("max", lambda t: t.max(0)),
                                 ("median", lambda t: t.median(0)), ("argmax", lambda t: t.argmax(0)),
                                 ("logsumexp", lambda t: t.logsumexp(0)), ("std", lambda t: t.std(0)),
                                 ("prod", lambda t: t.prod(0)), ("max_over_classes", lambda t: t.max(1))):
                try:
                    result = reduce(chosen)
                    out[f"{name}_{c}"] = result if not isinstance(result, tuple) else tuple(result)
                except (RuntimeError, IndexError) as error:
                    out[f"{name}_{c}"] = f"{type(error).__name__}"
    out.update(means=torch.stack(means), sums=torch.stack(sums), counts=counts)
    return out


def test_per_class_metrics_over_classes_without_samples():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the std of no samples warns on both)
        ours, _ = run_both(per_class_metrics)
    assert np.isnan(ours["recall"][[2, 4]]).all() and np.isfinite(ours["macro_recall"])
    assert np.isnan(ours["means"][2]).all() and (ours["sums"][4] == 0).all()
    assert ours["amax_2"] == ours["max_2"] == ours["median_2"] == ours["argmax_2"] == "IndexError"
    assert ours["logsumexp_2"].tolist() == [-np.inf] * 5 and (ours["prod_2"] == 1).all()
    assert ours["max_over_classes_2"][0].shape == (0,)


# ----------------------------------------------------------------------------------------------
# Dynamic loss scaling: overflowing steps skipped, clipping that refuses non-finite norms, anomaly mode
# ----------------------------------------------------------------------------------------------


def make_regressor(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))


def loss_scaling(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(8)
    model = load(m, make_regressor(m), weights)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scale, growth_tracker, history = 2.0 ** 16, 0, []
    for step in range(6):
        x = rng.standard_normal((8, 3)).astype(np.float32)
        if step == 2:
            x[0, 0] = 1e30  # one sample overflows: inf loss, inf/NaN gradients
        if step == 4:
            x[1, 2] = np.nan
        x, y = torch.tensor(x), torch.tensor(rng.standard_normal((8, 1)).astype(np.float32))
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        (loss * scale).backward()
        found_inf = not all(torch.isfinite(p.grad).all() for p in model.parameters())
        try:
            for p in model.parameters():
                p.grad.div_(scale)
            total = nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
            refused = False
        except RuntimeError:
            total, refused = float("nan"), True
        if found_inf:
            scale *= 0.5
            growth_tracker = 0
        else:
            optimizer.step()
            growth_tracker += 1
            if growth_tracker == 2:
                scale, growth_tracker = scale * 2.0, 0
        history.append([float(loss), float(total), bool(found_inf), refused, scale])
    return {"history": history, "weights": dict(model.state_dict())}


def test_dynamic_loss_scaling_skips_non_finite_steps():
    weights = weights_of(make_regressor)
    ours, _ = run_both(loss_scaling, weights, rtol=2e-5, atol=2e-6)
    flags = [(h[2], h[3]) for h in ours["history"]]
    assert flags[2] == (True, True) and flags[4] == (True, True) and flags[0] == (False, False)


def anomaly(m, weights):
    torch = m.torch
    model = load(m, make_regressor(m), weights)
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]], requires_grad=True)  # (an input-gradient saliency map)
    with torch.autograd.detect_anomaly():
        h = model(x)
        # a norm-like feature: sqrt of 0 has an infinite derivative, times a zero weight makes NaN
        scale = (x * x).sum(1, keepdim=True).sqrt()
        loss = (h * scale * 0).sum() + h.sum()
        loss.backward()


def test_detect_anomaly_names_the_backward_that_made_nan():
    weights = weights_of(make_regressor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (anomaly mode's own warning, and its traceback of the forward)
        error = raises_alike(anomaly, "Function 'SqrtBackward0' returned nan values in its 0th output", weights,
                             kind=RuntimeError)
    assert "SqrtBackward0" in str(error)


# ----------------------------------------------------------------------------------------------
# A multi-label head whose impossible labels have logits of ±inf
# ----------------------------------------------------------------------------------------------


def multilabel_bernoulli(m):
    torch = m.torch
    Bernoulli = torch.distributions.Bernoulli
    inf = float("inf")
    logits = torch.tensor([[inf, -inf, 2.0, -100.0, 100.0, 0.0]], requires_grad=True)
    labels = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0, 1.0],
                           [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]])
    dist = Bernoulli(logits=logits, validate_args=False)
    log_prob = dist.log_prob(labels)
    entropy = dist.entropy()
    log_prob[:, 2:].sum().backward()
    return {"log_prob": log_prob, "entropy": entropy, "grad": logits.grad,
            "impossible": torch.isneginf(log_prob)}


def test_multilabel_bernoulli_with_infinite_logits():
    ours, _ = run_both(multilabel_bernoulli)
    # a certain label (logit +inf) not taken is impossible: -inf, as PyTorch's -BCE gives it (not NaN)
    assert ours["log_prob"][0, 0] == -np.inf and ours["impossible"][0, 0]
    np.testing.assert_allclose(ours["log_prob"][0, 2], -math.log1p(math.exp(-2.0)), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# A fraud scorer whose scores saturate: σ of logits below -88.7 is exactly 0 in float32
# ----------------------------------------------------------------------------------------------


def saturated_scorer(m):
    torch, nn, F = m.torch, m.nn, m.F
    scorer = nn.Linear(2, 1)
    with torch.no_grad():
        scorer.weight.copy_(torch.tensor([[30.0, -1.0]]))
        scorer.bias.fill_(-2.0)
    x = torch.tensor([[-3.0, 1.0], [-2.9, 0.5], [-3.2, 0.2], [-3.4, 0.0], [0.1, 0.3], [2.0, 1.0]])
    y = torch.tensor([[1.0], [0.0], [1.0], [0.0], [1.0], [0.0]])
    logits = scorer(x)  # about -93 to -104 for the first four rows
    probs = torch.sigmoid(logits)
    naive = -(y * torch.log(probs) + (1 - y) * torch.log(1 - probs))  # log(0) = -inf where σ underflowed
    bce = F.binary_cross_entropy(probs, y, reduction="none")  # its log floored at -100
    bce.mean().backward()
    return {"logits": logits, "probs": probs, "zero": probs == 0, "naive": naive, "bce": bce,
            "grads": {k: p.grad for k, p in scorer.named_parameters()}}


def test_saturated_scores_underflow_to_zero():
    ours, _ = run_both(saturated_scorer)
    assert ours["zero"][:4].all() and (ours["probs"][4:] > 0).all()
    assert np.isposinf(ours["naive"][[0, 2]]).all()  # a positive scored σ = 0: an infinite naive loss, as PyTorch's
    np.testing.assert_allclose(ours["bce"][[0, 2]], 100.0)  # BCELoss's floor


# ----------------------------------------------------------------------------------------------
# A token tagger whose padded positions' logits are masked to -inf, ignored by the loss; segmentation with
# void pixels whose probabilities are 0
# ----------------------------------------------------------------------------------------------


def make_tagger(m):
    nn = m.nn

    class Tagger(nn.Module):
        def __init__(self, vocab=12, tags=4, d=8):
            super().__init__()
            self.embed = nn.Embedding(vocab, d, padding_idx=0)
            self.rnn = nn.GRU(d, d, batch_first=True)
            self.out = nn.Linear(d, tags)

        def forward(self, tokens):
            h, _ = self.rnn(self.embed(tokens))
            logits = self.out(h)
            return logits.masked_fill((tokens == 0)[..., None], float("-inf"))  # padding predicts nothing

    return Tagger()


def tagger(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    tokens = torch.tensor([[3, 5, 7, 2, 0, 0], [4, 4, 9, 11, 8, 1], [6, 2, 0, 0, 0, 0]])
    tags = torch.tensor([[1, 0, 2, 3, -100, -100], [0, 0, 1, 2, 3, 1], [2, 2, -100, -100, -100, -100]])
    model = load(m, make_tagger(m), weights)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    history = []
    for step in range(3):
        logits = model(tokens)
        flat, flat_tags = logits.reshape(-1, 4), tags.reshape(-1)
        loss = F.cross_entropy(flat, flat_tags, label_smoothing=0.1)
        per_token = F.cross_entropy(flat, flat_tags, reduction="none")
        nll = F.nll_loss(F.log_softmax(flat, -1), flat_tags, reduction="sum")
        optimizer.zero_grad()
        loss.backward()
        grads_finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())
        optimizer.step()
        history.append([loss.item(), nll.item(), grads_finite])
    return {"history": history, "per_token": per_token, "weights": dict(model.state_dict())}


def test_tagger_with_masked_padding_logits():
    weights = weights_of(make_tagger)
    ours, _ = run_both(tagger, weights, rtol=2e-5, atol=2e-6)
    assert all(np.isfinite(h[:2]).all() for h in ours["history"])  # the ignored -inf rows are skipped, not NaN
    assert (ours["per_token"][[4, 5, 14, 15, 16, 17]] == 0).all()
    assert [h[2] for h in ours["history"]] == [True, True, True]  # (an ignored row's gradient is 0)


def segmentation_void(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(9)
    scores = torch.tensor(rng.random((2, 3, 4, 4)).astype(np.float32), requires_grad=True)
    target = torch.tensor(rng.integers(0, 3, (2, 4, 4)))
    target[0, :2, :2] = 255  # void pixels
    target[1, 3] = 255
    probabilities = scores.softmax(1) * (target != 255)[:, None]  # void pixels' probabilities are 0
    log_probabilities = probabilities.log()  # -inf there
    loss = F.nll_loss(log_probabilities, target, ignore_index=255)
    weighted = F.nll_loss(log_probabilities, target, weight=torch.tensor([1.0, 2.0, 0.5]), ignore_index=255,
                          reduction="none")
    loss.backward()
    return {"loss": loss, "weighted": weighted, "grad": scores.grad}


def test_segmentation_with_void_pixels_of_zero_probability():
    ours, _ = run_both(segmentation_void)
    assert np.isfinite(ours["loss"]) and (ours["weighted"][0, :2, :2] == 0).all()
    # log(0)'s derivative, inf, times the ignored pixels' zero gradient: NaN there (the trap), finite elsewhere
    void = np.zeros((2, 4, 4), bool)
    void[0, :2, :2] = void[1, 3] = True
    assert np.isnan(ours["grad"].transpose(0, 2, 3, 1)[void]).all()
    assert np.isfinite(ours["grad"].transpose(0, 2, 3, 1)[~void]).all()


# ----------------------------------------------------------------------------------------------
# Focused tests of the fixes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ord", [math.inf, -math.inf, -1, -0.5])
def test_vector_norm_without_identity_over_empty(T, ord):
    x = T.zeros(0, 3)
    words = f"cannot compute the {float(ord):g} norm"
    raises(RuntimeError, words + " on an empty tensor because the operation does not have an identity",
           T.linalg.vector_norm, x, ord)
    raises(RuntimeError, words + " on an empty tensor", T.linalg.vector_norm, x, ord, ())
    raises(RuntimeError, words + " on the dimension 0because this dimension is empty", T.linalg.vector_norm, x, ord, 0)
    raises(RuntimeError, words + " on the dimension -2because", T.linalg.vector_norm, x, ord, (1, -2))
    assert T.linalg.vector_norm(x, ord, dim=1).shape == (0,)  # the empty dim is not reduced: nothing refused
    raises(RuntimeError, words + " on an empty tensor", T.linalg.norm, T.zeros(0), ord)
    assert float(T.linalg.vector_norm(T.tensor([3.0, -4.0]), ord)) == pytest.approx(
        {math.inf: 4.0, -math.inf: 3.0, -1: 12 / 7, -0.5: 1 / (3 ** -0.5 + 4 ** -0.5) ** 2}[ord])


def test_empty_tensor_norms_with_an_identity(T):
    x = T.zeros(0, 3)
    assert float(T.linalg.vector_norm(x)) == 0.0 and float(T.linalg.vector_norm(x, 0)) == 0.0
    assert float(T.linalg.vector_norm(x, 1)) == 0.0


def test_movedim_of_a_scalar(T):
    x = T.tensor(2.0, requires_grad=True)
    for source, destination in ((0, 0), (-1, 0), ((0,), (-1,))):
        y = x.movedim(source, destination)
        assert y.shape == () and float(y) == 2.0
    T.moveaxis(x, 0, -1).backward()
    assert float(x.grad) == 1.0
    raises(IndexError, r"Dimension out of range \(expected to be in range of \[-1, 0\], but got 1\)", x.movedim, 1, 0)


def test_split_of_a_scalar_is_refused(T):
    x = T.tensor(2.0)
    for args in ((1,), ([1],)):
        raises(RuntimeError, "split expects at least a 1-dimensional tensor", x.split, *args)
    raises(RuntimeError, "split expects at least a 1-dimensional tensor", T.split, x, 1)
    raises(RuntimeError, "chunk expects at least a 1-dimensional tensor", x.chunk, 1)


def modules_of(T):
    """The program namespace (nn, F, ...) of the library the ``T`` fixture gives."""
    return OURS if T is OURS.torch else pytorch()


def test_index_select_of_a_scalar_takes_one_index(T):
    x = T.tensor(5.0)
    assert float(x.index_select(0, T.tensor([0]))) == 5.0 and x.index_select(0, T.tensor(0)).shape == ()
    for index, n in ((T.tensor([0, 0]), 2), (T.tensor([], dtype=T.long), 0)):
        raises(RuntimeError, rf"index_select\(\): Index to scalar can have only 1 value, got {n} value\(s\)",
               x.index_select, 0, index)


def test_nan_probabilities_are_refused(T):
    F = modules_of(T).F
    raises(RuntimeError, "", T.bernoulli, T.tensor([0.5, float("nan")]))
    raises(RuntimeError, "", T.zeros(2).bernoulli_, float("nan"))
    raises(RuntimeError, "dropout probability has to be between 0 and 1, but got nan", F.dropout, T.ones(3),
           float("nan"))
    raises(ValueError, "dropout probability has to be between 0 and 1, but got 1.5", F.dropout, T.ones(3), 1.5)
    assert T.bernoulli(T.tensor([0.0, 1.0])).tolist() == [0.0, 1.0]


def test_bernoulli_log_prob_at_infinite_logits(T):
    inf = float("inf")
    d = T.distributions.Bernoulli(logits=T.tensor([inf, -inf, inf, -inf, 100.0]), validate_args=False)
    got = d.log_prob(T.tensor([0.0, 1.0, 1.0, 0.0, 1.0]))
    assert got[0] == -inf and all(math.isnan(v) for v in got[1:4].tolist())  # PyTorch's -BCE: 0 · inf is NaN
    assert -1e-40 < float(got[4]) < 0  # -softplus(-100), not 100 - softplus(100) = 0
    entropy = T.distributions.Bernoulli(logits=T.tensor([0.0, 100.0])).entropy()
    assert float(entropy[0]) == pytest.approx(math.log(2)) and 0 < float(entropy[1]) < 1e-40


def test_conv_transpose_weight_gradient_on_an_empty_batch(T):
    nn = modules_of(T).nn
    for conv, shape in ((nn.ConvTranspose1d(2, 3, 3, stride=2), (0, 2, 5)),
                        (nn.ConvTranspose2d(2, 3, 3, dilation=2), (0, 2, 4, 4)),
                        (nn.ConvTranspose3d(2, 4, 2, groups=2), (0, 2, 3, 3, 3)),
                        (nn.Conv3d(2, 3, 2, stride=(1, 2, 2)), (0, 2, 4, 4, 4))):
        x = T.zeros(*shape, requires_grad=True)
        y = conv(x)
        assert y.shape[0] == 0
        y.sum().backward()
        assert x.grad.shape == x.shape and (conv.weight.grad == 0).all() and (conv.bias.grad == 0).all()


def test_fractional_max_pool_on_an_empty_batch(T):
    nn = modules_of(T).nn
    for pool, shape, out in ((nn.FractionalMaxPool2d(2, output_size=3, return_indices=True), (0, 2, 6, 6), (3, 3)),
                             (nn.FractionalMaxPool3d(2, output_ratio=0.5), (0, 1, 4, 4, 4), (2, 2, 2))):
        x = T.zeros(*shape, requires_grad=True)
        y = pool(x)
        y = y[0] if isinstance(y, tuple) else y
        assert tuple(y.shape) == shape[:2] + out
        y.sum().backward()
        assert x.grad.shape == x.shape


def test_a_nan_made_an_integer_tensor_is_refused_as_an_overflow():
    raises_alike(lambda m: m.torch.tensor([1.0, float("nan")], dtype=m.torch.long),
                 "value cannot be converted to type int64 without overflow", kind=RuntimeError)


def test_convolutions_without_filters_are_refused(T):
    F = modules_of(T).F
    for conv, x, w, groups in ((F.conv1d, T.ones(1, 1, 4), T.ones(0, 1, 3), 1),
                               (F.conv3d, T.ones(1, 1, 4, 4, 4), T.ones(0, 1, 3, 3, 3), 1),
                               (F.conv_transpose2d, T.ones(1, 0, 4, 4), T.ones(0, 2, 3, 3), 1),
                               (F.conv2d, T.ones(1, 2, 4, 4), T.ones(1, 1, 3, 3), 2)):
        raises(RuntimeError, rf"Given groups={groups}, expected weight to be at least {groups} at dimension 0, but got "
                             r"weight of size \[", conv, x, w, groups=groups)


def test_orthogonal_init_of_a_zero_size_tensor_is_a_no_op(T):
    nn = modules_of(T).nn
    for shape in ((0, 3), (4, 0), (3, 0, 2)):
        t = T.zeros(*shape)
        assert nn.init.orthogonal_(t) is t and tuple(t.shape) == shape


def test_decompositions_and_norms_of_an_empty_batch(T):
    nn = modules_of(T).nn
    a = T.zeros(0, 3, 2, requires_grad=True)
    u, s, vh = T.linalg.svd(a)
    assert (tuple(u.shape), tuple(s.shape), tuple(vh.shape)) == ((0, 3, 3), (0, 2), (0, 2, 2))
    (u.sum() + s.sum() + vh.sum()).backward()
    assert a.grad.shape == a.shape
    y, mean, rstd = T.native_group_norm(T.zeros(0, 4, 3), None, None, 0, 4, 3, 2, 1e-5)
    assert (tuple(y.shape), tuple(mean.shape), tuple(rstd.shape)) == ((0, 4, 3), (0, 2), (0, 2))
    assert nn.utils.parametrizations.spectral_norm(nn.Linear(3, 0)).weight.shape == (0, 3)


def test_quantile_refuses_a_nan_q_in_pytorchs_words(T):
    x = T.tensor([1.0, 2.0])
    for fn in (T.quantile, T.nanquantile):  # (nanquantile's messages name quantile(), as PyTorch's)
        raises(RuntimeError, r"^quantile\(\) q must be in the range \[0, 1\] but got nan$", fn, x, float("nan"))
        raises(RuntimeError, r"^quantile\(\) q values must be in the range \[0, 1\]$", fn, x, T.tensor([0.5, float("nan")]))
        raises(RuntimeError, r"^quantile\(\) input tensor must be non-empty$", fn, T.zeros(0), 0.5)
        assert float(fn(x, 1.0)) == 2.0 and float(fn(x, 0.0)) == 1.0


def test_nan_arguments_fail_pytorchs_range_checks(T):
    F = modules_of(T).F
    nan = float("nan")
    x = T.ones(2, 2)
    raises(RuntimeError, "pdist only supports non-negative p values", F.pdist, x, nan)
    raises(RuntimeError, "cdist only supports non-negative p values", T.cdist, x, x, nan)
    raises(RuntimeError, "huber_loss does not support non-positive values for delta.", F.huber_loss, x, x, delta=nan)
    raises(RuntimeError, "smooth_l1_loss does not support negative values for beta.", F.smooth_l1_loss, x, x, beta=nan)
    for scale in (nan, float("inf")):
        raises(RuntimeError, "value cannot be converted to type int64_t without overflow", F.interpolate,
               T.ones(1, 1, 2), scale_factor=scale)


def test_uniform_bounds_must_fit_the_dtype(T):
    inf = float("inf")
    raises(RuntimeError, "^to is out of bounds for float$", T.zeros(2).uniform_, 0, inf)
    raises(RuntimeError, "^from is out of bounds for float$", T.zeros(2).uniform_, float("nan"), 1)
    raises(RuntimeError, "^to is out of bounds for double$", T.zeros(2, dtype=T.float64).uniform_, 0, inf)
    raises(RuntimeError, "^to is out of bounds for c10::Half$", T.zeros(2, dtype=T.float16).uniform_, 0, 1e5)
    raises(RuntimeError, r"uniform_ expects to-from <= std::numeric_limits<Float>::max\(\), but found to=3e\+38 and "
                         r"from=-3e\+38 which result in to-from to exceed the limit", T.zeros(2).uniform_, -3e38, 3e38)
    raises(RuntimeError, r"uniform_ expects to return a \[from, to\) range, but found from=1 > to=0",
           T.zeros(2).uniform_, 1, 0)
    drawn = T.zeros(1000).uniform_(-1e38, 1e38)
    assert float(drawn.abs().max()) <= 1e38 and float(drawn.min()) < 0 < float(drawn.max())


def test_sampling_refuses_nan_parameters(T):
    nan = float("nan")
    raises(RuntimeError, "^normal expects std >= 0.0, but found std nan$", T.zeros(2).normal_, 0, nan)
    raises(RuntimeError, "^normal expects std >= 0.0, but found std -1$", T.zeros(2).normal_, 0, -1.0)
    raises(RuntimeError, "exponential_ expects lambda > 0.0, but found lambda=nan", T.zeros(2).exponential_, nan)
    raises(RuntimeError, "cauchy_ expects sigma > 0.0, but found sigma=nan", T.zeros(2).cauchy_, 0, nan)
    raises(RuntimeError, "log_normal_ expects std > 0.0, but found std=nan", T.zeros(2).log_normal_, 0, nan)
    raises(RuntimeError, "normal expects std >= 0.0, but found std nan", T.normal, T.zeros(2), nan)
    raises(RuntimeError, "normal expects all elements of std >= 0.0", T.normal, T.zeros(2), T.tensor([nan, 1.0]))
    for rate in (-1.0, nan):
        raises(RuntimeError, "invalid Poisson rate, expected rate to be non-negative", T.poisson, T.tensor([rate]))
    raises(RuntimeError, "renorm: non-positive-norm not supported", T.ones(2, 3).renorm, nan, 0, 1.0)
    raises(RuntimeError, "renorm: expected maxnorm to be >= 0 but got nan", T.ones(2, 3).renorm, 2, 0, nan)


def test_binomial_probabilities_outside_the_unit_interval(T):
    # unchecked, as PyTorch's: a probability <= 0 draws 0, one >= 1 the count, NaN gives NaN
    draws = T.binomial(T.tensor([5.0, 5.0, 0.0, 5.0]), T.tensor([-0.5, 2.0, 0.5, float("nan")]))
    assert draws[:3].tolist() == [0.0, 5.0, 0.0] and math.isnan(float(draws[3]))


def test_the_zero_norm_counts_without_a_gradient(T):
    x = T.tensor([0.0, 1.0, 2.0], requires_grad=True)
    T.linalg.vector_norm(x, 0).backward()
    assert x.grad is None  # undefined, as PyTorch's: the leaf's grad stays None
    (x.norm(p=0) + x.sum()).backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]
    a = T.tensor([[1.0, 2.0], [1.0, 3.0]], requires_grad=True)
    T.cdist(a, a, p=0).sum().backward()  # the distances' gradient is zeros
    assert a.grad.abs().sum().item() == 0.0


def test_adaptive_pooling_of_empty_planes_is_refused(T):
    F = modules_of(T).F
    words = r"\(\): Expected input to have non-zero size for non-batch dimensions, but input has sizes "
    raises(RuntimeError, r"^adaptive_avg_pool2d" + words + r"\[2, 4, 1, 0\] with dimension 3 being empty$",
           F.adaptive_avg_pool1d, T.zeros(2, 4, 0), 2)  # (a mean of nothing was 0 here)
    raises(RuntimeError, r"^adaptive_avg_pool2d" + words + r"\[4, 0, 3\] with dimension 1 being empty$",
           F.adaptive_avg_pool2d, T.zeros(4, 0, 3), 2)
    raises(RuntimeError, r"^adaptive_max_pool1d" + words + r"\[2, 4, 0\] with dimension 2 being empty$",
           F.adaptive_max_pool1d, T.zeros(2, 4, 0), 2)
    raises(RuntimeError, r"^adaptive_max_pool3d" + words + r"\[2, 0, 3, 3, 3\] with dimension 1 being empty$",
           F.adaptive_max_pool3d, T.zeros(2, 0, 3, 3, 3), 2)
    raises(RuntimeError, r"^adaptive_avg_pool3d" + words + r"\[2, 1, 0, 3, 3\] with dimension 2 being empty$",
           F.adaptive_avg_pool3d, T.zeros(2, 1, 0, 3, 3), 2)
    # an empty batch (and, for 2-d averages, no channels) is pooled
    assert tuple(F.adaptive_avg_pool2d(T.zeros(2, 0, 3, 3), 2).shape) == (2, 0, 2, 2)
    assert tuple(F.adaptive_max_pool2d(T.zeros(0, 4, 3, 3), 2).shape) == (0, 4, 2, 2)
    assert tuple(F.adaptive_avg_pool3d(T.zeros(0, 3, 3, 3), 2).shape) == (0, 2, 2, 2)
