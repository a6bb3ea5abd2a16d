"""Recommender-system and ranking programs (see tests/pytorch_programs.py), each trained a few steps from the same
weights on synthetic data on chainrule and on PyTorch, comparing losses, gradients, parameters and metrics (float64
to about 1e-10; the float32 DLRM bit for bit where PyTorch's kernels allow), and checked against NumPy by hand where
a formula is short. tests/test_programs_probe11_tabular_*.py has the first round (NeuMF, DeepFM, DLRM in float64,
GRU4Rec, SASRec, two-tower, LightGCN): these go past it. Sparse-style updates by hand: lazy Adam and row-wise Adagrad
on the rows a batch touched (``unique``, ``index_select``, ``index_copy_``, ``index_add_``,
``index_put_(accumulate=True)``); where PyTorch 2.13 is wrong (its CPU ``embedding_bag`` divides by another index's
count under ``scale_grad_by_freq``, pytorch/pytorch#190063; ``scatter_reduce('amax', include_self=False)`` counts an
excluded self equal to the maximum as a tie), chainrule is checked by hand instead."""

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Sparse-style updates by hand: lazy Adam and row-wise Adagrad on the rows a batch touched
# ----------------------------------------------------------------------------------------------


def sparse_updates(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(9)
    table = torch.tensor(rng.standard_normal((20, 4)) * 0.1, requires_grad=True)
    adam_m = torch.zeros(20, 4, dtype=torch.float64)
    adam_v = torch.zeros(20, 4, dtype=torch.float64)
    row_step = torch.zeros(20, dtype=torch.long)
    rowwise_acc = torch.zeros(20, dtype=torch.float64)  # DLRM's row-wise Adagrad: one accumulator a row
    table2 = table.detach().clone().requires_grad_(True)
    lr, beta1, beta2, eps = 0.05, 0.9, 0.999, 1e-8
    batches = [rng.integers(0, 20, 12) for _ in range(4)]
    targets = [rng.standard_normal(12) for _ in range(4)]
    for idx, y in zip(batches, targets):
        idx, y = torch.from_numpy(idx), torch.from_numpy(y)
        for weight in (table, table2):
            weight.grad = None
            loss = ((F.embedding(idx, weight).sum(1) - y) ** 2).mean()
            loss.backward()
        with torch.no_grad():
            rows = torch.unique(idx)
            # lazy Adam: moments and bias corrections of the touched rows only
            g = table.grad.index_select(0, rows)
            row_step[rows] += 1
            m_rows = adam_m.index_select(0, rows) * beta1 + (1 - beta1) * g
            v_rows = adam_v.index_select(0, rows) * beta2 + (1 - beta2) * g * g
            adam_m.index_copy_(0, rows, m_rows)
            adam_v.index_copy_(0, rows, v_rows)
            t = row_step[rows].double().unsqueeze(1)
            m_hat = m_rows / (1 - beta1 ** t)
            v_hat = v_rows / (1 - beta2 ** t)
            table.index_add_(0, rows, -lr * m_hat / (v_hat.sqrt() + eps))
            # row-wise Adagrad on the second table, its update accumulated per lookup (duplicates add up)
            g2 = table2.grad[rows]
            rowwise_acc.index_put_((rows,), g2.pow(2).mean(1), accumulate=True)
            step = -0.1 * g2 / (rowwise_acc[rows].sqrt().unsqueeze(1) + 1e-10)
            table2.index_put_((rows,), step, accumulate=True)
    return {"table": table.detach(), "table2": table2.detach(), "adam_m": adam_m, "adam_v": adam_v,
            "row_step": row_step, "rowwise_acc": rowwise_acc}


def test_sparse_style_updates_by_hand():
    ours, _ = run_both(sparse_updates, rtol=1e-11, atol=1e-13)
    rng = np.random.default_rng(9)
    table = rng.standard_normal((20, 4)) * 0.1
    batches = [rng.integers(0, 20, 12) for _ in range(4)]
    assert ours["row_step"].tolist() == np.bincount(np.concatenate([np.unique(b) for b in batches]),
                                                    minlength=20).tolist()
    untouched = np.setdiff1d(np.arange(20), np.concatenate(batches))
    np.testing.assert_array_equal(ours["table"][untouched], table[untouched])  # lazy: never moved
    np.testing.assert_array_equal(ours["table2"][untouched], table[untouched])


# ----------------------------------------------------------------------------------------------
# Where PyTorch 2.13 is wrong: chainrule checked by hand
# ----------------------------------------------------------------------------------------------


def bag_frequency_scaled(m):
    torch, nn = m.torch, m.nn
    bag = nn.EmbeddingBag(7, 3, mode="sum", scale_grad_by_freq=True).double()
    with torch.no_grad():
        bag.weight.copy_(torch.from_numpy(np.random.default_rng(1).standard_normal((7, 3))))
    inp = torch.tensor([1, 1, 3, 1, 2, 3])
    out = bag(inp, torch.tensor([0, 2, 4]))
    out.backward(torch.ones_like(out))
    emb = nn.Embedding.from_pretrained(bag.weight.detach(), freeze=False, scale_grad_by_freq=True)
    emb(inp).backward(torch.ones(6, 3, dtype=torch.float64))
    return {"out": out, "bag_grad": bag.weight.grad, "embedding_grad": emb.weight.grad}


def test_embedding_bag_scale_grad_by_freq_divides_by_each_rows_count():
    """Each looked-up row's gradient divided by how often its own index occurs, as nn.Embedding's does (and
    PyTorch's CUDA kernel): PyTorch 2.13's CPU embedding_bag divides by the count of another index of its
    sorted indices (pytorch/pytorch#190063, fixed after 2.13), giving rows 2 and 3 a third and two thirds."""
    ours, theirs = run_both(bag_frequency_scaled, compare=False)
    np.testing.assert_array_equal(ours["bag_grad"][:, 0], [0, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(ours["bag_grad"], ours["embedding_grad"])
    if theirs is not None:
        np.testing.assert_allclose(ours["out"], theirs["out"], rtol=1e-12)
        np.testing.assert_array_equal(theirs["embedding_grad"], ours["embedding_grad"])
        if not np.array_equal(theirs["bag_grad"], ours["bag_grad"]):  # PyTorch with the bug
            np.testing.assert_allclose(theirs["bag_grad"][:, 0], [0, 1, 1 / 3, 2 / 3, 0, 0, 0], rtol=1e-12)


def scatter_amax_excluded_self(m):
    torch = m.torch
    scores = torch.tensor([[-1.0, 1.6, 0.2, -1.7, -0.1, -1.2]], dtype=torch.float64, requires_grad=True)
    session = torch.tensor([[0, 1, 1, 2, 2, 2]])
    best = torch.full((1, 3), -1.0, dtype=torch.float64).scatter_reduce(1, session, scores, "amax",
                                                                         include_self=False)
    best.sum().backward()
    return {"best": best, "grad": scores.grad}


def test_scatter_reduce_amax_excluded_self_takes_no_share():
    """Session 0's maximum is its one score, -1.0, which happens to equal the excluded initial value: the
    score gets the whole gradient (the function is differentiable there). PyTorch 2.13 counts the excluded
    self as a tie and gives it half (its amax backward builds the tie count before masking self out)."""
    ours, theirs = run_both(scatter_amax_excluded_self, compare=False)
    np.testing.assert_array_equal(ours["best"], [[-1.0, 1.6, -0.1]])
    np.testing.assert_array_equal(ours["grad"], [[1, 1, 0, 0, 1, 0]])
    if theirs is not None:
        np.testing.assert_array_equal(theirs["best"], ours["best"])
        assert theirs["grad"][0, 0] in (0.5, 1.0) and np.array_equal(theirs["grad"][0, 1:], ours["grad"][0, 1:])
