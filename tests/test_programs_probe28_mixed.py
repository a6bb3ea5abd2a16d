# ruff: noqa: E501, E731  (the programs are kept as their authors write them)
"""Programs that mix dtypes as real code does (see tests/pytorch_programs.py), run on chainrule and, where
installed, on PyTorch, comparing values, gradients, dtypes and error messages; each also checked without PyTorch
against literals, NumPy by hand or invariants.

A float64 model fed float32 and then its inputs cast to ``next(model.parameters()).dtype``; a model built under
``set_default_dtype(torch.float64)`` (restored after); a float16 model trained on the CPU; every common loss with
int64 labels, int32 labels, float targets and class probabilities; integer tensors in arithmetic with Python
floats and 0-d float tensors; bool masks in arithmetic, indexing and accuracy; Adam on complex parameters; a
float32 leaf through ``.double()`` and ``.half()``; preprocessing with ``where``/``cat``/``clamp``/``scatter_``/
``index_put_``/``masked_fill`` across dtypes; ``load_state_dict`` into models of other dtypes with an EMA;
``finfo``/``iinfo`` masks; autocast on the CPU with float16 (not built: strict xfail)."""

import numpy as np
import pytest

from .pytorch_programs import OURS, error_of, pytorch, run_both


def dt(x):
    """A dtype's short name, the same for both libraries ('float32')."""
    return str(x.dtype if hasattr(x, "dtype") and not isinstance(x, type) else x).split(".")[-1]


def both_errors(program):
    """(ours, PyTorch's or None) errors of ``program(m)``."""
    theirs = None
    if pytorch() is not None:
        theirs = error_of(lambda: program(pytorch()))
    return error_of(lambda: program(OURS)), theirs


# ----------------------------------------------------------------------------------------------
# a float64 model fed float32, then inputs cast to the model's dtype
# ----------------------------------------------------------------------------------------------


def double_model_training(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    opt = optim.Adam(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 3), torch.randn(16, 1)  # float32 data, as a DataLoader gives
    model_dtype = next(model.parameters()).dtype
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = F.mse_loss(model(x.to(model_dtype)), y.to(model_dtype))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    state = opt.state[model[0].weight]
    return dict(losses=losses, weight=model[0].weight, grad=model[0].weight.grad, step=state["step"],
                dtypes=[dt(model_dtype), dt(loss), dt(state["exp_avg"]), dt(state["exp_avg_sq"]), dt(state["step"]),
                        dt(model[0].weight.grad)])


def test_double_model_refuses_float32_batch_with_pytorchs_words():
    def program(m):
        m.torch.manual_seed(0)
        model = m.nn.Sequential(m.nn.Linear(3, 4), m.nn.ReLU()).double()
        return model(m.torch.randn(2, 3))

    ours, theirs = both_errors(program)
    assert ours[0] == "RuntimeError"
    assert ours[1].startswith("mat1 and mat2 must have the same dtype, but got Float and Double")
    if theirs is not None:
        assert ours[1].startswith(theirs[1])


def test_double_model_trains_on_inputs_cast_to_its_dtype():
    ours, _ = run_both(double_model_training, rtol=1e-9, atol=1e-12)
    assert ours["dtypes"] == ["float64", "float64", "float64", "float64", "float32", "float64"]
    assert float(ours["step"]) == 3.0
    assert ours["losses"][2] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# set_default_dtype(float64): layers, factories, random draws, losses and optimizers, restored after
# ----------------------------------------------------------------------------------------------


def default_float64_program(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(1)
        layer = nn.Linear(4, 2)
        x = torch.randn(5, 4)
        target = torch.tensor([0, 1, 1, 0, 1])
        loss = F.cross_entropy(layer(x), target)
        opt = optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
        loss.backward()
        opt.step()
        made = [torch.tensor([1.0, 2.0]), torch.tensor([1, 2]), torch.arange(0, 1, 0.25), torch.zeros(2),
                torch.full((2,), 1.5), torch.full((2,), 1), torch.rand(3), torch.tensor([1, 2]) / 2,
                torch.linspace(0, 1, 3), torch.tensor(1j)]
        return dict(loss=loss, weight=layer.weight, grad=layer.weight.grad, bias=layer.bias, bias_grad=layer.bias.grad,
                    x=x, target=target, made=made,
                    dtypes=[dt(layer.weight), dt(x), dt(loss)] + [dt(t) for t in made])
    finally:
        torch.set_default_dtype(previous)


def test_default_float64_builds_float64_and_is_restored():
    ours, _ = run_both(default_float64_program, rtol=1e-12, atol=1e-14)
    assert ours["dtypes"] == ["float64"] * 4 + ["int64", "float64", "float64", "float64", "int64", "float64",
                                                 "float64", "float64", "complex128"]
    assert OURS.torch.get_default_dtype() == OURS.torch.float32
    # the loss by hand in float64, from the parameters before SGD's first step (p1 = p0 - 0.1 g)
    w0, b0 = ours["weight"] + 0.1 * ours["grad"], ours["bias"] + 0.1 * ours["bias_grad"]
    z = ours["x"] @ w0.T + b0
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    assert ours["loss"] == pytest.approx(-log_p[np.arange(5), ours["target"]].mean(), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# a float16 model on the CPU: forward, cross-entropy, backward, every dtype
# ----------------------------------------------------------------------------------------------


def half_training(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    model = nn.Linear(4, 3).half()
    x = torch.randn(2, 4).half()
    out = model(x)
    loss = F.cross_entropy(out, torch.tensor([0, 2]))
    loss.backward()
    h = torch.linspace(-2, 2, 12).reshape(3, 4).half().requires_grad_()
    y = torch.softmax(h @ torch.linspace(-1, 1, 8).reshape(4, 2).half(), -1)
    y.sum().backward()
    return dict(out=out, loss=loss, grad=model.weight.grad, bias_grad=model.bias.grad, y=y, h_grad=h.grad,
                sum32=h.sum(dtype=torch.float32), dtypes=[dt(t) for t in (out, loss, model.weight.grad, y, h.grad,
                                                                          h.sum(), h.sum(dtype=torch.float32))])


def test_half_model_trains_on_cpu_with_pytorchs_float16_numbers():
    ours, _ = run_both(half_training, rtol=0, atol=0)
    assert ours["dtypes"] == ["float16"] * 6 + ["float32"]
    # (-ln p_0 of row 0 and -ln p_2 of row 1 in float16, their float16 sum halved: PyTorch's 1.443359375)
    assert ours["loss"] == np.float16(1.443359375)


# ----------------------------------------------------------------------------------------------
# losses with every common target dtype
# ----------------------------------------------------------------------------------------------


def loss_targets(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    logits = torch.randn(3, 4, requires_grad=True)
    indices = torch.tensor([0, 3, 1])
    probabilities = torch.softmax(torch.randn(3, 4), -1)
    scores = torch.randn(3, requires_grad=True)
    labels = torch.tensor([0, 1, 1])  # int64 labels, as a dataset gives them
    losses = [F.cross_entropy(logits, indices), F.cross_entropy(logits, probabilities),
              F.cross_entropy(logits.double(), probabilities.double(), label_smoothing=0.1),
              F.nll_loss(logits.log_softmax(-1), indices),
              F.binary_cross_entropy_with_logits(scores, labels.float()),
              F.binary_cross_entropy(scores.sigmoid(), labels.float()),
              F.mse_loss(scores, labels.float()), F.mse_loss(scores, labels.double()),
              F.l1_loss(scores, labels), F.smooth_l1_loss(scores, labels)]
    sum(loss.float() for loss in losses).backward()
    errors = [error_of(lambda: F.cross_entropy(logits, indices.int())),
              error_of(lambda: F.nll_loss(logits, indices.float())),
              error_of(lambda: F.binary_cross_entropy(scores.sigmoid(), labels)),
              error_of(lambda: F.binary_cross_entropy_with_logits(scores, labels))]
    return dict(losses=losses, dtypes=[dt(loss) for loss in losses], logits_grad=logits.grad,
                scores_grad=scores.grad, errors=[e[0] for e in errors],
                words=[e[1].split(" (")[0].split(". ")[0].split(";")[0] for e in errors[:2]])


def test_losses_take_and_refuse_target_dtypes_as_pytorch():
    ours, theirs = run_both(loss_targets, compare=False)
    if theirs is not None:
        from .pytorch_programs import assert_same

        assert_same({k: v for k, v in ours.items() if k not in ("errors", "words")},
                    {k: v for k, v in theirs.items() if k not in ("errors", "words")}, 1e-5, 1e-6)
        for word_ours, word_theirs in zip(ours["words"], theirs["words"]):
            assert word_theirs in word_ours
    assert ours["dtypes"] == ["float32"] * 2 + ["float64", "float32", "float32", "float32", "float32", "float64",
                                                "float32", "float32"]
    assert ours["errors"] == ["DtypeError", "DtypeError", "RuntimeError", "RuntimeError"]
    assert "expected target dtype to be Long or Byte, but got Int" in ours["words"][0]
    # cross-entropy's gradient rows sum to 0 (each loss's softmax minus a distribution)
    np.testing.assert_allclose(ours["logits_grad"].sum(1), 0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# integer tensors with Python floats and 0-d tensors; bool masks; accuracy
# ----------------------------------------------------------------------------------------------


def integer_arithmetic(m):
    torch = m.torch
    t = torch.tensor([3, -7, 10])
    results = [t / 2, t // 2, t // -2, torch.true_divide(t, 2), t * 1.5, t + torch.tensor(0.5),
               t + torch.tensor(0.5, dtype=torch.float64), t.int() + torch.tensor(5), t % 3, t ** 2, 2.0 ** t,
               t.div(4, rounding_mode="floor"), t.div(4, rounding_mode="trunc"),
               torch.tensor([1, 2], dtype=torch.uint8) - 3, torch.tensor([1., 2.], dtype=torch.float16) * torch.tensor(2.5, dtype=torch.float64)]
    inplace = torch.tensor([1, 2])

    def add_half():
        inplace.add_(0.5)

    return dict(values=results, dtypes=[dt(r) for r in results], error=error_of(add_half)[1].split(" (")[0])


def test_integer_arithmetic_promotes_by_category():
    ours, _ = run_both(integer_arithmetic)
    # (a 0-d float64 beside an int64 tensor raises the category, and so gives its own float64)
    assert ours["dtypes"] == ["float32", "int64", "int64", "float32", "float32", "float32", "float64", "int32",
                              "int64", "int64", "float32", "int64", "int64", "uint8", "float16"]
    np.testing.assert_array_equal(ours["values"][1], [1, -4, 5])
    np.testing.assert_array_equal(ours["values"][2], [-2, 3, -5])
    np.testing.assert_array_equal(ours["values"][12], [0, -1, 2])
    np.testing.assert_array_equal(ours["values"][13], [254, 255])
    assert ours["error"].startswith("result type Float can't be cast to the desired output type Long")


def masks_and_accuracy(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(3)
    model = nn.Linear(5, 4)
    x, y = torch.randn(12, 5), torch.randint(0, 4, (12,))
    logits = model(x)
    pred = logits.argmax(1)
    correct = (pred == y).sum()
    mask = logits > 0
    masked = (logits * mask).sum() + logits[mask].sum() + torch.where(mask, logits, torch.zeros(())).sum()
    masked.backward()
    return dict(correct=correct, accuracy=correct.item() / len(y), mean=(pred == y).float().mean(),
                per_row=mask.sum(1), grad=model.weight.grad,
                dtypes=[dt(correct), dt(mask.sum(1)), dt(mask + mask), dt(mask * 2.5)])


def test_bool_masks_in_arithmetic_indexing_and_accuracy():
    ours, _ = run_both(masks_and_accuracy)
    assert ours["dtypes"] == ["int64", "int64", "bool", "float32"]
    assert ours["accuracy"] == pytest.approx(float(ours["mean"]))
    # each positive logit counts three times: d/dW = 3 Σ_n [z_n > 0] x_n
    assert ours["grad"].shape == (4, 5) and 0 <= int(ours["correct"]) <= 12


# ----------------------------------------------------------------------------------------------
# Adam on complex parameters; a float32 leaf through .double() and .half()
# ----------------------------------------------------------------------------------------------


def complex_adam(m):
    torch, optim = m.torch, m.optim
    w = torch.tensor([1 + 1j, 2 - 1j, 0.5j], requires_grad=True)
    target = torch.tensor([0j, 1 + 0j, 1j])
    opt = optim.Adam([w], lr=0.1)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = (w - target).abs().pow(2).sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return dict(w=w, losses=losses, exp_avg=opt.state[w]["exp_avg"], dtypes=[dt(w), dt(w.grad), dt(loss)])


def test_adam_on_complex_parameters_steps_their_real_views():
    ours, _ = run_both(complex_adam)
    assert ours["dtypes"] == ["complex64", "complex64", "float32"]
    # NumPy's Adam on the real view, the gradient of |w - t|² being 2 (w - t)
    w = np.array([1 + 1j, 2 - 1j, 0.5j], np.complex64).view(np.float32).astype(np.float64)
    t = np.array([0j, 1, 1j], np.complex64).view(np.float32).astype(np.float64)
    m1 = m2 = 0
    for step in range(1, 5):
        g = 2 * (w - t)
        m1, m2 = 0.9 * m1 + 0.1 * g, 0.999 * m2 + 0.001 * g * g
        w = w - 0.1 * (m1 / (1 - 0.9 ** step)) / (np.sqrt(m2 / (1 - 0.999 ** step)) + 1e-8)
    np.testing.assert_allclose(ours["w"].view(np.float32), w, rtol=1e-5, atol=1e-6)


def dtype_round_trip(m):
    torch = m.torch
    torch.manual_seed(0)
    x = torch.randn(3, requires_grad=True)
    y = x.double() * 2
    z = (y.float().half().float() * y.float()).sum()
    z.backward()
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    (w * torch.randn(3)).sum().backward()
    return dict(grad=x.grad, x=x, w_grad=w.grad, dtypes=[dt(x.grad), dt(y), dt(w.grad)])


def test_gradients_keep_their_leafs_dtype_through_casts():
    ours, _ = run_both(dtype_round_trip)
    assert ours["dtypes"] == ["float32", "float64", "float64"]
    x = ours["x"].astype(np.float64)
    # z = Σ h(2x)·(2x): each factor's gradient is the other, and the one reaching the float16 copy is float16
    half_of_2x = (2 * x).astype(np.float32).astype(np.float16).astype(np.float64)
    np.testing.assert_allclose(ours["grad"], 4 * half_of_2x, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# preprocessing across dtypes: where, cat, stack, clamp, scatter, index_put, masked_fill
# ----------------------------------------------------------------------------------------------


def mixed_preprocessing(m):
    torch = m.torch
    counts = torch.tensor([1, 5, 9])
    scale = torch.tensor([0.5, 1.5, 2.5])
    present = torch.tensor([True, False, True])
    results = [torch.where(present, counts, scale), torch.where(present, counts, 0.5), torch.where(present, 1, 0),
               torch.cat([counts, scale]), torch.cat([counts, present]), torch.stack([counts, scale]),
               counts.clamp(2.5, 7), counts.clamp(min=torch.tensor(2.5)), scale.clamp(torch.tensor([1, 1, 1])),
               counts.masked_fill(present, 2.7), scale.masked_fill(present, float("-inf")),
               torch.zeros(3, dtype=torch.long).scatter_(0, torch.tensor([0, 2]), 2.5),
               torch.zeros(3).index_put_((torch.tensor([0, 2]),), torch.tensor([1., 2.])),
               torch.lerp(scale, scale * 3, 0.25), torch.addcmul(counts, counts, counts, value=2)]
    int_board = torch.zeros(3, dtype=torch.long)
    int_board[0] = 1.7  # (a Python number is cast into the integer tensor)
    results.append(int_board)
    errors = [error_of(lambda: torch.zeros(3).scatter_add_(0, torch.tensor([0]), torch.tensor([1.], dtype=torch.float64))),
              error_of(lambda: torch.lerp(scale, scale.double(), 0.5)),
              error_of(lambda: torch.zeros(3).masked_scatter_(present, scale.double())),
              error_of(lambda: torch.zeros(3).index_put_((torch.tensor([0, 2]),), torch.tensor([1, 2])))]
    return dict(values=results, dtypes=[dt(r) for r in results], errors=[e[1].split(" (")[0] for e in errors])


def test_mixed_dtype_preprocessing_promotes_or_refuses_as_pytorch():
    ours, theirs = run_both(mixed_preprocessing, compare=False)
    if theirs is not None:
        from .pytorch_programs import assert_same

        assert_same(ours["values"], theirs["values"], 1e-6, 1e-7)
        assert ours["dtypes"] == theirs["dtypes"]
        for a, b in zip(ours["errors"], theirs["errors"]):
            assert a.startswith(b)
    assert ours["dtypes"] == ["float32", "float32", "int64", "float32", "int64", "float32", "float32", "float32",
                              "float32", "int64", "float32", "int64", "float32", "float32", "int64", "int64"]
    np.testing.assert_array_equal(ours["values"][9], [2, 5, 2])
    np.testing.assert_array_equal(ours["values"][15], [1, 0, 0])
    assert ours["errors"][2] == "masked_scatter: expected self and source to have same dtypes but gotFloat and Double"
    assert ours["errors"][3].startswith("Index put requires the source and destination dtypes match, got Float")


# ----------------------------------------------------------------------------------------------
# state dicts across dtypes, an EMA in float64, finfo / iinfo masks
# ----------------------------------------------------------------------------------------------


def state_dicts_and_ema(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    source = nn.Linear(3, 2)
    wide, narrow = nn.Linear(3, 2).double(), nn.Linear(3, 2).half()
    wide.load_state_dict(source.state_dict())
    narrow.load_state_dict(wide.state_dict())
    ema = nn.Linear(3, 2).double()
    with torch.no_grad():
        for averaged, p in zip(ema.parameters(), source.parameters()):
            averaged.mul_(0.9).add_(p, alpha=0.1)
    norm = nn.BatchNorm1d(2)
    state = norm.state_dict()
    state["running_mean"] = torch.tensor([1.0, 2.0], dtype=torch.float64)
    state["num_batches_tracked"] = torch.tensor(5, dtype=torch.int32)
    norm.load_state_dict(state)
    return dict(wide=wide.weight, narrow=narrow.weight, ema=ema.weight, source=source.weight,
                running_mean=norm.running_mean, batches=norm.num_batches_tracked,
                dtypes=[dt(wide.weight), dt(narrow.weight), dt(ema.weight), dt(norm.running_mean),
                        dt(norm.num_batches_tracked)])


def test_load_state_dict_casts_into_each_models_dtype():
    ours, _ = run_both(state_dicts_and_ema)
    assert ours["dtypes"] == ["float64", "float16", "float64", "float32", "int64"]
    np.testing.assert_array_equal(ours["wide"], ours["source"].astype(np.float64))
    np.testing.assert_array_equal(ours["narrow"], ours["source"].astype(np.float16))
    assert int(ours["batches"]) == 5


def finfo_masks(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 3)
    causal = torch.ones(3, 3, dtype=torch.bool).triu(1)
    masked = scores.masked_fill(causal, torch.finfo(scores.dtype).min)
    half_scores = scores.half().masked_fill(causal, torch.finfo(torch.float16).min)
    probs = F.softmax(masked, -1)
    eps = torch.finfo(torch.float32).eps
    logs = torch.tensor([0.0, 1.0]).clamp(min=eps).log()
    info = [torch.finfo(torch.float16).max, torch.finfo(torch.float64).tiny, torch.finfo().eps,
            torch.iinfo(torch.int32).max, torch.iinfo(torch.uint8).min, torch.iinfo(torch.int64).bits]
    return dict(probs=probs, half=F.softmax(half_scores, -1), logs=logs, info=info)


def test_finfo_iinfo_masks_and_clamps():
    ours, _ = run_both(finfo_masks, rtol=1e-6, atol=1e-7)
    assert ours["info"] == [65504.0, 2.2250738585072014e-308, 1.1920928955078125e-07, 2147483647, 0, 64]
    np.testing.assert_array_equal(np.triu(ours["probs"][0], 1), 0)
    np.testing.assert_allclose(ours["probs"].sum(-1), 1, rtol=1e-6)
    np.testing.assert_array_equal(np.triu(ours["half"][1].astype(np.float32), 1), 0)
    assert ours["logs"][0] == np.log(np.float32(2.0 ** -23))


# ----------------------------------------------------------------------------------------------
# autocast on the CPU with float16: PyTorch lowers linear and matmul to float16 there
# ----------------------------------------------------------------------------------------------


def cpu_autocast(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    with torch.autocast("cpu", dtype=torch.float16):
        y = layer(x)
    return dict(y=y, dtype=dt(y))


def test_cpu_autocast_float16_lowers_linear():
    ours, _ = run_both(cpu_autocast, rtol=1e-3, atol=1e-3)
    assert ours["dtype"] == "float16"
