# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Programs students write in deep-learning courses (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and data, comparing values and gradients. CS231n (PyTorch versions): a two-layer net;
softmax loss by loops and vectorised, with a numerical gradient check; a naive convolution and max-pool by loops
against ``F.conv2d``/``F.max_pool2d``; batch and layer norm backward by hand; inverted dropout's mask statistics."""

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# CS231n: softmax loss by loops and vectorised, a two-layer net, numerical gradient checks
# ----------------------------------------------------------------------------------------------


def cs231n_softmax_two_layer(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(6)
    N, D, H, C = 10, 7, 6, 4
    X = torch.tensor(rng.standard_normal((N, D)), dtype=torch.float64)
    y = torch.tensor(rng.integers(0, C, N))
    W = torch.tensor(0.1 * rng.standard_normal((D, C)), dtype=torch.float64)
    reg = 0.05

    def softmax_loss_naive(W, X, y, reg):
        loss = 0.0
        dW = torch.zeros_like(W)
        num_train = X.shape[0]
        num_classes = W.shape[1]
        for i in range(num_train):
            scores = X[i].matmul(W)
            scores -= scores.max()
            correct_class_score = scores[y[i]]
            exp_sum = torch.exp(scores).sum()
            loss += torch.log(exp_sum) - correct_class_score
            for j in range(num_classes):
                if j == y[i]:
                    dW[:, j] += (torch.exp(scores[j]) / exp_sum - 1) * X[i]
                else:
                    dW[:, j] += torch.exp(scores[j]) / exp_sum * X[i]
        loss /= num_train
        dW /= num_train
        loss += reg * torch.sum(W * W)
        dW += 2 * reg * W
        return loss, dW

    def softmax_loss_vectorized(W, X, y, reg):
        num_train = X.shape[0]
        scores = X.mm(W)
        scores = scores - scores.max(dim=1, keepdim=True).values
        probs = scores.exp() / scores.exp().sum(dim=1, keepdim=True)
        loss = -probs[torch.arange(num_train), y].log().sum() / num_train + reg * torch.sum(W * W)
        dscores = probs.clone()
        dscores[range(num_train), y] -= 1
        dW = X.t().mm(dscores) / num_train + 2 * reg * W
        return loss, dW

    def grad_check_sparse(f, x, analytic_grad, num_checks=6, h=1e-5):
        errs = []
        g = torch.Generator().manual_seed(0)
        for i in range(num_checks):
            ix = tuple([torch.randint(high=s, size=(1,), generator=g).item() for s in x.shape])
            oldval = x[ix].item()
            x[ix] = oldval + h
            fxph = f(x).item()
            x[ix] = oldval - h
            fxmh = f(x).item()
            x[ix] = oldval
            grad_numerical = (fxph - fxmh) / (2 * h)
            grad_analytic = analytic_grad[ix].item()
            errs.append(abs(grad_numerical - grad_analytic) / (abs(grad_numerical) + abs(grad_analytic) + 1e-12))
        return errs

    loss_naive, grad_naive = softmax_loss_naive(W, X, y, reg)
    loss_vec, grad_vec = softmax_loss_vectorized(W, X, y, reg)
    errs = grad_check_sparse(lambda w: softmax_loss_vectorized(w, X, y, reg)[0], W, grad_vec)
    Wg = W.clone().requires_grad_(True)
    loss_autograd = F.cross_entropy(X @ Wg, y) + reg * (Wg ** 2).sum()
    loss_autograd.backward()

    # the two-layer net with hand-written backward, then its gradients by autograd
    params = {'W1': torch.tensor(1e-1 * rng.standard_normal((D, H)), dtype=torch.float64), 'b1': torch.zeros(H, dtype=torch.float64),
              'W2': torch.tensor(1e-1 * rng.standard_normal((H, C)), dtype=torch.float64), 'b2': torch.zeros(C, dtype=torch.float64)}

    def two_layer_loss(params, X, y, reg):
        W1, b1, W2, b2 = params['W1'], params['b1'], params['W2'], params['b2']
        hidden = (X.mm(W1) + b1).clamp(min=0)
        scores = hidden.mm(W2) + b2
        shifted = scores - scores.max(dim=1, keepdim=True)[0]
        log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
        probs = log_probs.exp()
        N = X.shape[0]
        loss = -log_probs[torch.arange(N), y].mean() + reg * (torch.sum(W1 * W1) + torch.sum(W2 * W2))
        grads = {}
        dscores = probs.clone()
        dscores[torch.arange(N), y] -= 1
        dscores /= N
        grads['W2'] = hidden.t().mm(dscores) + 2 * reg * W2
        grads['b2'] = dscores.sum(dim=0)
        dhidden = dscores.mm(W2.t())
        dhidden[hidden <= 0] = 0
        grads['W1'] = X.t().mm(dhidden) + 2 * reg * W1
        grads['b1'] = dhidden.sum(dim=0)
        return loss, grads

    loss2, grads2 = two_layer_loss(params, X, y, reg)
    auto = {k: v.clone().requires_grad_() for k, v in params.items()}
    two_layer_loss(auto, X, y, reg)[0].backward()
    # training with SGD and learning-rate decay, prediction by argmax
    history = []
    for it in range(30):
        loss_it, g = two_layer_loss(params, X, y, 1e-3)
        for k in params:
            params[k] -= 0.5 * (0.95 ** (it // 10)) * g[k]
        history.append(loss_it.item())
    y_pred = torch.argmax((X.mm(params['W1']) + params['b1']).clamp(min=0).mm(params['W2']) + params['b2'], dim=1)
    return {"naive": (loss_naive, grad_naive), "vec": (loss_vec, grad_vec), "errs_small": max(errs) < 1e-7,  # (each library's own generator picks the entries)
            "autograd": (loss_autograd, Wg.grad), "two_layer": (loss2, [grads2[k] for k in sorted(grads2)]),
            "two_layer_autograd": [auto[k].grad for k in sorted(auto)], "history": history, "acc": (y_pred == y).double().mean()}


def test_cs231n_softmax_and_two_layer_net():
    ours, theirs = run_both(cs231n_softmax_two_layer, rtol=1e-9, atol=1e-11)
    for k in ("vec", "autograd"):
        assert float(ours[k][0]) == pytest.approx(float(ours["naive"][0]), rel=1e-12)
        np.testing.assert_allclose(ours[k][1], ours["naive"][1], rtol=1e-10, atol=1e-12)
    assert ours["errs_small"] is True
    for a, b in zip(ours["two_layer"][1], ours["two_layer_autograd"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert ours["history"][-1] < 0.5 * ours["history"][0]


# ----------------------------------------------------------------------------------------------
# CS231n: convolution and max-pooling by loops, batch and layer norm backward by hand, dropout
# ----------------------------------------------------------------------------------------------


def cs231n_layers(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(7)
    x = torch.tensor(rng.standard_normal((2, 3, 5, 5)), dtype=torch.float64)
    w = torch.tensor(rng.standard_normal((4, 3, 3, 3)), dtype=torch.float64)
    b = torch.tensor(rng.standard_normal(4), dtype=torch.float64)
    conv_param = {'stride': 2, 'pad': 1}

    def conv_forward_naive(x, w, b, conv_param):
        stride, pad = conv_param['stride'], conv_param['pad']
        N, C, H, W = x.shape
        F_, _, HH, WW = w.shape
        x_pad = F.pad(x, (pad, pad, pad, pad))
        H_out = 1 + (H + 2 * pad - HH) // stride
        W_out = 1 + (W + 2 * pad - WW) // stride
        out = torch.zeros((N, F_, H_out, W_out), dtype=x.dtype)
        for n in range(N):
            for f in range(F_):
                for i in range(H_out):
                    for j in range(W_out):
                        window = x_pad[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                        out[n, f, i, j] = (window * w[f]).sum() + b[f]
        return out

    def max_pool_forward_naive(x, pool_param):
        N, C, H, W = x.shape
        ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
        out = x.new_zeros((N, C, 1 + (H - ph) // s, 1 + (W - pw) // s))
        for i in range(out.shape[2]):
            for j in range(out.shape[3]):
                out[:, :, i, j] = x[:, :, i * s:i * s + ph, j * s:j * s + pw].amax(dim=(-1, -2))
        return out

    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
    out_naive = conv_forward_naive(xg, wg, bg, conv_param)
    dout = torch.tensor(rng.standard_normal(out_naive.shape), dtype=torch.float64)
    grads_naive = torch.autograd.grad(out_naive, (xg, wg, bg), dout)
    out_fast = F.conv2d(xg, wg, bg, stride=2, padding=1)
    grads_fast = torch.autograd.grad(out_fast, (xg, wg, bg), dout)
    pool_naive = max_pool_forward_naive(xg, {'pool_height': 2, 'pool_width': 2, 'stride': 2})
    pool_fast = F.max_pool2d(xg, 2, 2)
    dpool = torch.autograd.grad(pool_naive.sum(), xg)[0]
    dpool_fast = torch.autograd.grad(pool_fast.sum(), xg)[0]

    # batchnorm backward, the simplified formula, against autograd
    X = torch.tensor(rng.standard_normal((8, 5)) * 3 + 2, dtype=torch.float64)
    gamma = torch.tensor(rng.standard_normal(5), dtype=torch.float64)
    beta = torch.tensor(rng.standard_normal(5), dtype=torch.float64)
    dout2 = torch.tensor(rng.standard_normal((8, 5)), dtype=torch.float64)
    eps = 1e-5

    def batchnorm_backward_alt(dout, x, gamma, eps, dim):
        mu = x.mean(dim=dim, keepdim=True)
        var = x.var(dim=dim, unbiased=False, keepdim=True)
        std = torch.sqrt(var + eps)
        x_hat = (x - mu) / std
        N = x.shape[dim]
        dx_hat = dout * gamma
        dx = (N * dx_hat - dx_hat.sum(dim=dim, keepdim=True) - x_hat * (dx_hat * x_hat).sum(dim=dim, keepdim=True)) / (N * std)
        return dx, (dout * x_hat).sum(dim=0), dout.sum(dim=0)

    bn_hand = batchnorm_backward_alt(dout2, X, gamma, eps, 0)
    Xg, gg, bg2 = (t.clone().requires_grad_() for t in (X, gamma, beta))
    bn_out = F.batch_norm(Xg, None, None, gg, bg2, training=True, eps=eps)
    bn_auto = torch.autograd.grad(bn_out, (Xg, gg, bg2), dout2)
    ln_hand = batchnorm_backward_alt(dout2, X, gamma, eps, 1)
    ln_out = F.layer_norm(Xg, (5,), gg, bg2, eps=eps)
    ln_auto = torch.autograd.grad(ln_out, (Xg, gg, bg2), dout2)

    # spatial batchnorm as the assignment writes it: transpose, reshape, call the vanilla one
    def spatial_batchnorm(x, gamma, beta):
        N, C, H, W = x.shape
        x_flat = x.permute(0, 2, 3, 1).reshape(-1, C)
        out = F.batch_norm(x_flat, None, None, gamma, beta, training=True, eps=eps)
        return out.reshape(N, H, W, C).permute(0, 3, 1, 2)

    sg, sb = torch.ones(3, dtype=torch.float64, requires_grad=True), torch.zeros(3, dtype=torch.float64, requires_grad=True)
    sbn = spatial_batchnorm(xg, sg, sb)
    ref = F.batch_norm(xg, None, None, sg, sb, training=True, eps=eps)
    sbn_grads = torch.autograd.grad((sbn * out_naive.new_ones(1).expand_as(sbn) * x).sum(), (xg, sg, sb))
    # inverted dropout with a fixed seed: only the mask statistics compare across libraries
    torch.manual_seed(231)
    xd = torch.ones(500, 500, dtype=torch.float64) + 9
    stats = {}
    for p in (0.25, 0.4, 0.7):
        mask = (torch.rand(*xd.shape) < p) / p
        out_train = xd * mask
        stats[p] = (out_train.mean().item(), (out_train == 0).double().mean().item())
        dr = F.dropout(xd, 1 - p, training=True)
        stats[p] += (dr.mean().item(), (dr == 0).double().mean().item(), F.dropout(xd, 1 - p, training=False).mean().item())
    return {"conv": (out_naive, out_fast), "conv_grads": (grads_naive, grads_fast), "pool": (pool_naive, pool_fast),
            "dpool": (dpool, dpool_fast), "bn": (bn_hand, bn_auto), "ln": (ln_hand, ln_auto), "sbn": (sbn, ref),
            "sbn_grads": sbn_grads, "dropout": stats}


def test_cs231n_naive_layers_norm_backward_and_dropout():
    ours, theirs = run_both(cs231n_layers, compare=False)
    for k in ("conv", "conv_grads", "pool", "dpool", "bn", "ln", "sbn"):
        mine, fast = ours[k]
        for a, b in zip(mine if isinstance(mine, tuple) else [mine], fast if isinstance(fast, tuple) else [fast]):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=k)
    for p, (mean, zeros, dr_mean, dr_zeros, test_mean) in ours["dropout"].items():
        assert mean == pytest.approx(10, rel=0.02) and zeros == pytest.approx(1 - p, abs=0.01)
        assert dr_mean == pytest.approx(10, rel=0.02) and dr_zeros == pytest.approx(1 - p, abs=0.01)
        assert test_mean == 10
    if theirs is not None:
        keys = ("conv", "conv_grads", "pool", "dpool", "bn", "ln", "sbn", "sbn_grads")
        from .pytorch_programs import assert_same
        assert_same({k: ours[k] for k in keys}, {k: theirs[k] for k in keys}, 1e-10, 1e-12)
