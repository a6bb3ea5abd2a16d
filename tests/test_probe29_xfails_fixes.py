"""Fixes of known differences from PyTorch that were strict xfails (session 29): float16 nll_loss's cascade sum,
the FLOP counter's kernels (addmm, mv, dot, folded matmul, fused recurrent layers), complex LDL, the coalesced flag
of a sparse leaf's gradient. The FLOP counts below were measured once on PyTorch 2.13's CPU build; where torch is
installed they are measured again."""

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F
from autograd.utils.flop_counter import FlopCounterMode


def _torch():
    try:
        import torch
    except ModuleNotFoundError:
        return None
    return torch


# -- float16 nll_loss sums in float16 by PyTorch's cascade ----------------------------------------------------------


def _half_case(seed, image, weighted, ignored):
    rng = np.random.default_rng(seed)
    n, classes = 40, 4
    shape = (n, classes, 2, 3) if image else (n, classes)
    x = -(rng.random(shape) * 5).astype(np.float16)
    y = rng.integers(0, classes, (n, 2, 3) if image else n)
    if ignored:
        y[rng.random(y.shape) < 0.2] = -100
    w = (rng.random(classes) * 2).astype(np.float16) if weighted else None
    return x, y, w


def _nll(lib, x, y, w, reduction):
    functional = F if lib is autograd else lib.nn.functional
    inputs = lib.tensor(x, requires_grad=True)
    loss = functional.nll_loss(inputs, lib.tensor(y), weight=None if w is None else lib.tensor(w),
                               reduction=reduction)
    loss.backward()
    return loss.detach().numpy(), inputs.grad.numpy()


@pytest.mark.parametrize("image", [False, True])
@pytest.mark.parametrize("weighted, ignored", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_half_nll_loss_reduces_as_pytorchs_kernel(image, weighted, ignored, reduction):
    x, y, w = _half_case(3, image, weighted, ignored)
    value, grad = _nll(autograd, x, y, w, reduction)
    assert value.dtype == np.float16 and grad.dtype == np.float16
    # always: near the float64 sum of the same float16 terms (the exact cascade by hand is
    # tests/test_probe28_mixed_fixes.py's), the mean divided by the kept rows' weight
    labels = y.reshape(-1)
    safe = np.where(labels < 0, 0, labels)
    picked = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])[np.arange(labels.size), safe].astype(np.float64)
    weights = np.ones(labels.size) if w is None else w[safe].astype(np.float64)
    kept = labels != -100
    expected = -(picked * weights)[kept].sum() / (weights[kept].sum() if reduction == "mean" else 1)
    assert abs(float(value) - expected) < 2e-3 * abs(expected)
    torch = _torch()
    if torch is not None:
        theirs = _nll(torch, x, y, w, reduction)
        np.testing.assert_array_equal(value, theirs[0])
        np.testing.assert_array_equal(grad, theirs[1])


def test_half_nll_loss_of_nothing_kept_is_nan_with_zero_gradient():
    x = autograd.tensor(-np.ones((3, 2), np.float16), requires_grad=True)
    loss = F.nll_loss(x, autograd.tensor([-100, -100, -100]))
    loss.backward()
    assert np.isnan(loss.item()) and loss.dtype == autograd.float16 and not x.grad.numpy().any()


# -- the FLOP counter says PyTorch's kernels --------------------------------------------------------------------


def T(lib, *shape, grad=False, dtype=None):
    return lib.ones(*shape, requires_grad=grad, **({} if dtype is None else {"dtype": dtype}))


PRODUCTS = {  # name: (program, PyTorch's counts)
    "addmv": (lambda t: t.addmv(T(t, 4), T(t, 4, 5), T(t, 5)), {}),
    "addbmm": (lambda t: t.addbmm(T(t, 4, 6), T(t, 3, 4, 5, grad=True), T(t, 3, 5, 6, grad=True)).sum().backward(),
               {"aten.bmm": 1440}),
    "matrix @ vector": (lambda t: (T(t, 3, 4, grad=True) @ T(t, 4, grad=True)).sum().backward(), {}),
    "batch @ vector": (lambda t: (T(t, 2, 3, 4, grad=True) @ T(t, 4, grad=True)).sum().backward(), {}),
    "vector @ matrix": (lambda t: (T(t, 4, grad=True) @ T(t, 4, 3, grad=True)).sum().backward(), {"aten.mm": 72}),
    "vector @ batch": (lambda t: T(t, 4) @ T(t, 2, 4, 3), {"aten.bmm": 48}),
    "vector @ batch, batch grad": (lambda t: (T(t, 4) @ T(t, 2, 4, 3, grad=True)).sum().backward(),
                                   {"aten.bmm": 96}),
    "dot": (lambda t: t.dot(T(t, 4, grad=True), T(t, 4, grad=True)).backward(), {}),
    "batch @ matrix": (lambda t: (T(t, 2, 3, 4, grad=True) @ T(t, 4, 5, grad=True)).sum().backward(),
                       {"aten.mm": 720}),
    "matrix @ batch, no grad": (lambda t: T(t, 3, 4) @ T(t, 2, 4, 5), {"aten.bmm": 240}),
    "matrix @ batch, batch grad": (lambda t: (T(t, 3, 4) @ T(t, 2, 4, 5, grad=True)).sum().backward(),
                                   {"aten.bmm": 480}),
    "transposed batch @ matrix": (lambda t: T(t, 2, 4, 3).mT @ T(t, 4, 5), {"aten.bmm": 240}),
    "matrix @ 4-d batch": (lambda t: (T(t, 3, 4, grad=True) @ T(t, 2, 2, 4, 5)).sum().backward(), {"aten.mm": 960}),
    "addmm": (lambda t: t.addmm(T(t, 6), T(t, 4, 5, grad=True), T(t, 5, 6)).sum().backward(),
              {"aten.addmm": 240, "aten.mm": 240}),
    "baddbmm": (lambda t: t.baddbmm(T(t, 3, 4, 6), T(t, 3, 4, 5, grad=True), T(t, 3, 5, 6, grad=True))
                .sum().backward(), {"aten.baddbmm": 720, "aten.bmm": 1440}),
}


def _pack(lib, x, lengths):
    return (nn.utils.rnn if lib is autograd else lib.nn.utils.rnn).pack_padded_sequence(x, lengths)


def _frozen(module):
    for p in module.parameters():
        p.requires_grad_(False)
    return module


RECURRENT = {  # name: (program of (lib, nn), PyTorch's counts)
    "GRU, batch first": (lambda t, n: n.GRU(4, 3, batch_first=True)(T(t, 2, 5, 4))[0].sum().backward(),
                         {"aten.mm": 2412, "aten.addmm": 540}),
    "GRU, input and h0 grad": (lambda t, n: n.GRU(4, 3)(T(t, 5, 2, 4, grad=True), T(t, 1, 2, 3, grad=True))[0]
                               .sum().backward(), {"aten.addmm": 1260, "aten.mm": 2520}),
    "GRU, 2 layers bidirectional": (lambda t, n: n.GRU(4, 3, num_layers=2, bidirectional=True)(T(t, 5, 2, 4))[0]
                                    .sum().backward(), {"aten.addmm": 5760, "aten.mm": 9648}),
    "RNN, no grad": (lambda t, n: n.RNN(4, 3)(T(t, 5, 2, 4)), {"aten.addmm": 420}),
    "RNN, no bias": (lambda t, n: n.RNN(4, 3, bias=False)(T(t, 5, 2, 4)), {"aten.mm": 420}),
    "RNN, unbatched": (lambda t, n: n.RNN(4, 3)(T(t, 5, 4)), {"aten.addmm": 210}),
    "RNN, frozen, batch first": (lambda t, n: _frozen(n.RNN(4, 3, batch_first=True))(T(t, 2, 5, 4, grad=True))[0]
                                 .sum().backward(), {"aten.bmm": 480, "aten.addmm": 180, "aten.mm": 144}),
    "LSTM, float32": (lambda t, n: n.LSTM(4, 3)(T(t, 5, 2, 4))[0].sum().backward(), {}),
    "LSTM, float64": (lambda t, n: n.LSTM(4, 3, dtype=t.float64)(T(t, 5, 2, 4, dtype=t.float64))[0].sum().backward(),
                      {"aten.addmm": 1680, "aten.mm": 2256}),
    "LSTM, projected": (lambda t, n: n.LSTM(4, 3, proj_size=2)(T(t, 5, 2, 4))[0].sum().backward(),
                        {"aten.addmm": 1440, "aten.mm": 2184}),
    "LSTM, packed": (lambda t, n: n.LSTM(4, 3)(_pack(t, T(t, 5, 3, 4), [5, 3, 2]))[0].data.sum().backward(),
                     {"aten.addmm": 1680, "aten.mm": 2184}),
    "GRU, packed bidirectional": (lambda t, n: n.GRU(4, 3, bidirectional=True)(_pack(t, T(t, 5, 3, 4), [5, 3, 2]))[0]
                                  .data.sum().backward(), {"aten.addmm": 2520, "aten.mm": 3384}),
    "LSTMCell": (lambda t, n: n.LSTMCell(4, 3)(T(t, 2, 4))[0].sum().backward(), {"aten.addmm": 336, "aten.mm": 336}),
    "RNNCell, unbatched": (lambda t, n: n.RNNCell(4, 3)(T(t, 4)).sum().backward(), {"aten.addmm": 42, "aten.mm": 42}),
}


def _counts(lib, program, counter):
    with counter(display=False) as mode:
        program()
    return {str(op): n for op, n in mode.get_flop_counts().get("Global", {}).items()}


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_products_are_counted_as_pytorchs_kernels(name):
    program, expected = PRODUCTS[name]
    assert _counts(autograd, lambda: program(autograd), FlopCounterMode) == expected
    torch = _torch()
    if torch is not None:
        from torch.utils.flop_counter import FlopCounterMode as TorchCounter

        assert _counts(torch, lambda: program(torch), TorchCounter) == expected


@pytest.mark.parametrize("name", sorted(RECURRENT))
def test_recurrent_layers_are_counted_as_pytorchs_kernels(name):
    program, expected = RECURRENT[name]
    autograd.manual_seed(0)
    assert _counts(autograd, lambda: program(autograd, nn), FlopCounterMode) == expected
    torch = _torch()
    if torch is not None:
        import warnings

        from torch.utils.flop_counter import FlopCounterMode as TorchCounter

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (a projecting LSTM's note that oneDNN does not run it)
            assert _counts(torch, lambda: program(torch, torch.nn), TorchCounter) == expected


def test_a_recurrent_layers_backward_is_counted_in_its_module():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.fc = nn.GRU(4, 3, num_layers=2), nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.rnn(x)[0])

    with FlopCounterMode(display=False) as mode:
        Net()(autograd.ones(5, 2, 4)).sum().backward()
    counts = {module: {str(op): n for op, n in ops.items()} for module, ops in mode.get_flop_counts().items()}
    assert counts["Net.rnn"] == {"aten.addmm": 2340, "aten.mm": 3744}  # (PyTorch's)
    assert counts["Global"] == {"aten.addmm": 2460, "aten.mm": 3984}


# -- complex LDL ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hermitian", [False, True])
@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_complex_ldl_solves_and_factors_as_pytorch(hermitian, dtype):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((6, 6)) + 1j * rng.standard_normal((6, 6))).astype(dtype)
    a[0, 0] = 0  # (a pivot is needed at once)
    full = np.tril(a) + (np.tril(a, -1).conj().T if hermitian else np.tril(a, -1).T)
    if hermitian:
        full[np.diag_indices(6)] = full.diagonal().real
    b = (rng.standard_normal((6, 2)) + 1j * rng.standard_normal((6, 2))).astype(dtype)
    LD, pivots = autograd.linalg.ldl_factor(autograd.tensor(a), hermitian=hermitian)
    x = autograd.linalg.ldl_solve(LD, pivots, autograd.tensor(b), hermitian=hermitian)
    tolerance = 1e-4 if dtype == np.complex64 else 1e-10
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(full, b), rtol=tolerance, atol=tolerance)
    assert pivots.numpy()[0] != 1  # (row 0 was not its own pivot)
    if hermitian:
        assert not LD.numpy().diagonal().imag.any()
    torch = _torch()
    if torch is not None:
        theirs = torch.linalg.ldl_factor(torch.tensor(a), hermitian=hermitian)
        np.testing.assert_array_equal(pivots.numpy(), theirs.pivots.numpy())
        np.testing.assert_allclose(LD.numpy(), theirs.LD.numpy(), rtol=tolerance, atol=tolerance)


# -- a sparse leaf's gradient keeps its coalesced flag ------------------------------------------------------------


def test_the_gradient_of_a_coalesced_sparse_leaf_is_coalesced():
    S = autograd.sparse_coo_tensor(autograd.tensor([[0, 1], [1, 0]]), autograd.tensor([1.0, 2.0]), (2, 2),
                                   is_coalesced=True, requires_grad=True)
    autograd.sparse.mm(S, autograd.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    assert S.grad.is_coalesced() and S.grad.values().tolist() == [7.0, 3.0]


def test_the_gradient_of_an_unsorted_sparse_leaf_is_sorted_and_unflagged():
    S = autograd.sparse_coo_tensor(autograd.tensor([[1, 0, 0], [0, 1, 1]]), autograd.tensor([1.0, 2.0, 5.0]),
                                   (2, 2), requires_grad=True)
    autograd.sparse.mm(S, autograd.tensor([[1.0, 2.0], [3.0, 4.0]])).pow(2).sum().backward()
    assert not S.grad.is_coalesced()
    assert S.grad.coalesce().indices().tolist() == [[0, 1], [1, 0]]
    assert S.grad.coalesce().values().tolist() == [350.0, 10.0]  # (dL/dA there, as PyTorch's)


# -- scan, PyTorch's prototype control-flow operator, run eagerly --------------------------------------------------


def _scan_lstm(lib, nn_module, scan, state):
    cell = nn_module.LSTMCell(4, 5)
    cell.load_state_dict({k: lib.tensor(v) for k, v in state.items()})

    def combine(carry, x):
        hx, cx = cell(x, carry)
        return (hx, cx.clone()), hx.clone()

    xs = lib.tensor(np.random.default_rng(0).standard_normal((6, 4)), dtype=lib.float32, requires_grad=True)
    carry, outs = scan(combine, (lib.zeros(5), lib.zeros(5)), xs, dim=0)
    outs.sum().backward()
    return outs.detach().numpy(), carry[1].detach().numpy(), xs.grad.numpy()


def test_scan_runs_an_lstm_cell_over_a_sequence():
    from autograd._higher_order_ops.scan import scan

    assert autograd._higher_order_ops.scan is scan  # (the function over its module, as PyTorch's package binds it)
    rng = np.random.default_rng(1)
    state = {"weight_ih": rng.standard_normal((20, 4)) * 0.3, "weight_hh": rng.standard_normal((20, 5)) * 0.3,
             "bias_ih": rng.standard_normal(20) * 0.1, "bias_hh": rng.standard_normal(20) * 0.1}
    state = {k: v.astype(np.float32) for k, v in state.items()}
    outs, last_cell, grad = _scan_lstm(autograd, nn, scan, state)
    # always: the same loop written out
    cell, h, c = nn.LSTMCell(4, 5), autograd.zeros(5), autograd.zeros(5)
    cell.load_state_dict({k: autograd.tensor(v) for k, v in state.items()})
    xs = autograd.tensor(np.random.default_rng(0).standard_normal((6, 4)), dtype=autograd.float32)
    rows = []
    for x in xs:
        h, c = cell(x, (h, c))
        rows.append(h.detach().numpy())
    np.testing.assert_allclose(outs, np.stack(rows), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(last_cell, c.detach().numpy(), rtol=1e-6, atol=1e-7)
    assert grad.shape == (6, 4) and np.abs(grad).sum() > 0
    torch = _torch()
    if torch is not None:
        from torch._higher_order_ops.scan import scan as torch_scan

        theirs = _scan_lstm(torch, torch.nn, torch_scan, state)
        for a, b in zip((outs, last_cell, grad), theirs):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_scan_stacks_pytrees_along_dim_and_reverses():
    from autograd._higher_order_ops.scan import scan

    def add(carry, x):
        total = carry + x
        return total, {"a": total.clone(), "b": [x * 2]}

    carry, ys = scan(add, autograd.zeros(2), autograd.arange(6.0).reshape(2, 3), dim=1, reverse=True)
    assert carry.tolist() == [3.0, 12.0]
    assert ys["a"].tolist() == [[3.0, 3.0, 2.0], [12.0, 9.0, 5.0]]  # (PyTorch's: each y at its slice's place)
    assert ys["b"][0].tolist() == [[0.0, 2.0, 4.0], [6.0, 8.0, 10.0]]
    init = {"u": autograd.zeros(3)}
    nothing = scan(add, init, [])  # (no xs: the init as it is, and no outputs)
    assert nothing[0] is init and nothing[1] == []


@pytest.mark.parametrize("combine, init, xs, words", [
    (lambda c, x: (c, x), (3,), (2, 3), "aliasing"),
    (lambda c, x: (c.sum(), x * 1), (3,), (2, 3), "same metadata"),
    (lambda c, x: (c + x, x * 1), (3,), (0, 3), "scan dimension > 0"),
])
def test_scan_refuses_what_pytorchs_refuses(combine, init, xs, words):
    from autograd._higher_order_ops.scan import scan

    with pytest.raises(RuntimeError, match=words):
        scan(combine, autograd.zeros(init), autograd.ones(xs))


# -- sparse CSR matrices -------------------------------------------------------------------------------------------


def _csr_program(lib):
    values = lib.tensor([1.0, 2, 3, 4, 5], requires_grad=True)
    A = lib.sparse_csr_tensor(lib.tensor([0, 2, 3, 5]), lib.tensor([0, 2, 1, 0, 2]), values, (3, 3))
    X = lib.arange(6.0).view(3, 2).requires_grad_()
    Y = A @ X
    Y.pow(2).sum().backward()
    dense = lib.tensor([[1.0, 0, 2], [0, 0, 3], [4, 5, 0]]).to_sparse_csr()
    return dict(Y=Y.tolist(), values=values.grad.tolist(), X=X.grad.tolist(), dense=A.to_dense().tolist(),
                crow=dense.crow_indices().tolist(), col=dense.col_indices().tolist(),
                vals=dense.values().tolist(), layout=str(A.layout), csr=(A.is_sparse, A.is_sparse_csr))


def test_a_csr_matrix_multiplies_and_passes_gradients_to_its_values():
    ours = _csr_program(autograd)
    assert ours == dict(Y=[[8.0, 11.0], [6.0, 9.0], [20.0, 29.0]], values=[22.0, 174.0, 78.0, 58.0, 450.0],
                        X=[[176.0, 254.0], [36.0, 54.0], [232.0, 334.0]],
                        dense=[[1.0, 0.0, 2.0], [0.0, 3.0, 0.0], [4.0, 0.0, 5.0]], crow=[0, 2, 3, 5],
                        col=[0, 2, 2, 0, 1], vals=[1.0, 2.0, 3.0, 4.0, 5.0], layout="torch.sparse_csr",
                        csr=(False, True))
    torch = _torch()
    if torch is not None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (PyTorch's note that CSR support is in beta)
            assert _csr_program(torch) == ours


@pytest.mark.parametrize("crow, col, words", [([0, 2, 3], [0, 1, 2], "crow_indices.size"),
                                              ([0, 2, 3, 4], [0, 1, 2], "must start at 0, end at nnz"),
                                              ([0, 1, 2, 3], [0, 1, 3], "col_indices must be in")])
def test_a_csr_matrix_of_bad_indices_is_refused(crow, col, words):
    with pytest.raises(RuntimeError, match=words):
        autograd.sparse_csr_tensor(autograd.tensor(crow), autograd.tensor(col), autograd.ones(3), (3, 3))


# -- SGD steps a sparse leaf -----------------------------------------------------------------------------------------


def _sgd_on_a_sparse_leaf(lib, optimizers):
    S = lib.sparse_coo_tensor(lib.tensor([[0, 1, 1], [1, 0, 1]]), lib.tensor([1.0, 2.0, 3.0]), (2, 2),
                              requires_grad=True)
    step = optimizers.SGD([S], lr=0.1)
    seen = []
    for _ in range(2):
        step.zero_grad()
        lib.sparse.mm(S, lib.tensor([[1.0, 2.0], [3.0, 4.0]])).pow(2).sum().backward()
        step.step()
        seen.append(S.detach().coalesce().values().tolist())
    return seen, S.is_leaf and S.requires_grad


def test_sgd_steps_a_sparse_leaf_and_keeps_it_a_leaf():
    import optim

    seen, leaf = _sgd_on_a_sparse_leaf(autograd, optim)
    assert leaf
    np.testing.assert_allclose(seen, [[-4.0, -6.6, -16.4], [16.0, 36.08, 80.12]], rtol=1e-6)
    torch = _torch()
    if torch is not None:
        theirs, their_leaf = _sgd_on_a_sparse_leaf(torch, torch.optim)
        np.testing.assert_allclose(seen, theirs, rtol=1e-6)  # (PyTorch adds a + alpha·b rounded once: an ulp)
        assert their_leaf


def test_other_optimizers_refuse_a_sparse_leaf_at_the_step():
    import optim

    S = autograd.sparse_coo_tensor(autograd.tensor([[0], [1]]), autograd.tensor([1.0]), (2, 2), requires_grad=True)
    step = optim.Adam([S])
    autograd.sparse.mm(S, autograd.ones(2, 1)).sum().backward()
    with pytest.raises(RuntimeError, match="Adam does not support sparse gradients"):
        step.step()
    with pytest.raises(RuntimeError, match="plain steps only"):
        optim.SGD([S], lr=0.1, momentum=0.9).step()
