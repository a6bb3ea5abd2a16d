# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Programs that meet special values and degenerate shapes (see tests/pytorch_programs.py), each run on chainrule and
on PyTorch from the same weights and data, comparing values, gradients, parameters and errors, and checked against
values known by hand. Special values: heteroscedastic regression whose variance head overflows to inf
(``gaussian_nll_loss``, the non-finite losses masked out by ``isfinite``) and retrieval by ``cosine_similarity`` of
features whose norm overflows; per-class metrics over classes without samples (0/0, ``nanmean``, ``nan_to_num``,
reductions of empty selections and their refusals); dynamic loss scaling (``isfinite`` checks, skipped steps,
``clip_grad_norm_(error_if_nonfinite=True)``, ``detect_anomaly`` naming the backward that made a NaN); a multi-label
head whose impossible labels have logits of ±inf (``Bernoulli(logits=).log_prob`` and ``entropy``); a scorer whose
``sigmoid`` underflows to exactly 0 (a naive log-loss that becomes inf, ``BCELoss``'s floor of -100); a token tagger
whose padded positions' logits are masked to -inf and ignored by ``cross_entropy`` (with label smoothing) and
``nll_loss``; and segmentation whose void pixels have probability 0 (``nll_loss`` of a 4-d input with
``ignore_index=255`` and class weights)."""

import math
import warnings

import numpy as np

from tests.program_errors import raises_alike

from .pytorch_programs import load, run_both, weights_of

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
