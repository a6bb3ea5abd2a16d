# ruff: noqa: B007, B023, E741, UP004, UP008, UP032, UP034, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is
a function of the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``), run on
chainrule and, where PyTorch is installed, on PyTorch, comparing the numbers.

Programs that differentiate derivatives or shape the backward pass themselves: a physics-informed
net (second derivatives by ``autograd.grad(create_graph=True)`` inside the loss), style transfer
(an input image optimised by L-BFGS with a closure, Gram matrices), and custom ``autograd.Function``s
(``needs_input_grad``, ``mark_non_differentiable``, ``once_differentiable``,
``set_materialize_grads``) inside a model, with gradcheck and gradgradcheck."""

import numpy as np

from .pytorch_programs import OURS, assert_same, load, plain, pytorch, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A physics-informed network: u'' = -pi^2 sin(pi x) on [0, 1], u(0) = u(1) = 0
# ----------------------------------------------------------------------------------------------


def pinn(m, weights, steps=30):
    torch, nn, optim = m.torch, m.nn, m.optim

    class PINN(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))

        def forward(self, x):
            return self.net(x)

    model = PINN()
    if weights is None:
        return model
    load(m, model, weights)
    x = torch.tensor(np.linspace(0, 1, 32, dtype=np.float32)[:, None]).requires_grad_(True)
    xb = torch.tensor([[0.0], [1.0]])
    opt = optim.Adam(model.parameters(), lr=1e-2)
    losses, first = [], None
    for step in range(steps):
        opt.zero_grad()
        u = model(x)
        du = torch.autograd.grad(u, x, grad_outputs=torch.ones_like(u), create_graph=True)[0]
        d2u = torch.autograd.grad(du, x, grad_outputs=torch.ones_like(du), create_graph=True)[0]
        f = d2u + (np.pi ** 2) * torch.sin(np.pi * x)
        loss = (f ** 2).mean() + (model(xb) ** 2).mean()
        loss.backward()
        if step == 0:
            first = (u, du, d2u)
        opt.step()
        losses.append(loss.item())
    grads = [p.grad for p in model.parameters()]
    return losses, grads, first


def test_physics_informed_net():
    weights = weights_of(lambda m: pinn(m, None))
    ours, _ = run_both(pinn, weights, rtol=1e-4, atol=1e-5)
    losses, grads, (u, du, d2u) = ours
    assert losses[-1] < 0.2 * losses[0]  # 46.2 -> 6.1 from PyTorch's initial weights for seed 0, in both libraries
    assert all(g is not None and np.abs(g).sum() > 0 for g in grads)
    # the network's derivatives against central differences of its own output (float32: loose)
    h = 1.0 / 31
    np.testing.assert_allclose(du[1:-1, 0], (u[2:, 0] - u[:-2, 0]) / (2 * h), rtol=0.05, atol=5e-3)
    np.testing.assert_allclose(d2u[2:-2, 0], (du[3:-1, 0] - du[1:-3, 0]) / (2 * h), rtol=0.05, atol=2e-2)


# The shares of one tensor's gradient are summed in a buffer of the backward pass; under
# create_graph a share that carries a graph must not be added into that buffer in place.


def accumulated_shares(m):
    torch = m.torch
    w = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64, requires_grad=True)
    u = w * t * t + (t + 2 * t)  # u_t = 2 w t + 3: two constant shares reach t first, then 2 w t
    u_t, = torch.autograd.grad(u.sum(), t, create_graph=True)
    loss = (u_t ** 2).sum() + (u ** 2).sum()
    loss.backward()
    return u_t, u_t.requires_grad, w.grad


def test_create_graph_keeps_a_share_added_after_two_constant_shares():
    u_t, requires_grad, w_grad = plain(accumulated_shares(OURS))
    tt = np.array([0.2, 0.7])
    np.testing.assert_allclose(u_t, 2 * 1.5 * tt + 3)
    assert requires_grad
    expected = (2 * (3 * tt + 3) * 2 * tt).sum() + (2 * (1.5 * tt * tt + 3 * tt) * tt * tt).sum()
    np.testing.assert_allclose(w_grad, expected)  # 19.9911; 2.8311 without the u_t term


def relu_second_derivative(m):
    torch, F = m.torch, m.F
    x = torch.tensor([-1.0, 0.4, 1.3, -0.2], requires_grad=True)
    g, = torch.autograd.grad(F.relu(x).sum(), x, create_graph=True)
    gg, = torch.autograd.grad(g.sum(), x)
    return g, gg


def test_relu_second_derivative_is_zero_not_unused():
    g, gg = plain(relu_second_derivative(OURS))
    np.testing.assert_array_equal(g, [0.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(gg, np.zeros(4))
    torch_modules = pytorch()
    if torch_modules is not None:
        assert_same((g, gg), plain(relu_second_derivative(torch_modules)), 0, 0)


# ----------------------------------------------------------------------------------------------
# Neural style transfer (PyTorch's tutorial, on a small random CNN): L-BFGS on the input image
# ----------------------------------------------------------------------------------------------


def style_transfer(m, weights, num_steps=6):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    def gram_matrix(input):
        a, b, c, d = input.size()
        features = input.view(a * b, c * d)
        G = torch.mm(features, features.t())
        return G.div(a * b * c * d)

    class ContentLoss(nn.Module):
        def __init__(self, target):
            super(ContentLoss, self).__init__()
            self.target = target.detach()

        def forward(self, input):
            self.loss = F.mse_loss(input, self.target)
            return input

    class StyleLoss(nn.Module):
        def __init__(self, target_feature):
            super(StyleLoss, self).__init__()
            self.target = gram_matrix(target_feature).detach()

        def forward(self, input):
            G = gram_matrix(input)
            self.loss = F.mse_loss(G, self.target)
            return input

    class Normalization(nn.Module):
        def __init__(self, mean, std):
            super(Normalization, self).__init__()
            self.mean = torch.tensor(mean).view(-1, 1, 1)
            self.std = torch.tensor(std).view(-1, 1, 1)

        def forward(self, img):
            return (img - self.mean) / self.std

    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
    if weights is None:
        return cnn
    load(m, cnn, weights)
    cnn = cnn.eval()
    rng = np.random.default_rng(2)
    style_img = torch.tensor(rng.random((1, 3, 12, 12)).astype(np.float32))
    content_img = torch.tensor(rng.random((1, 3, 12, 12)).astype(np.float32))
    input_img = content_img.clone()
    normalization = Normalization([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    content_losses, style_losses = [], []
    model = nn.Sequential(normalization)
    i = 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            i += 1
            name = 'conv_{}'.format(i)
        elif isinstance(layer, nn.ReLU):
            name = 'relu_{}'.format(i)
            layer = nn.ReLU(inplace=False)
        elif isinstance(layer, nn.MaxPool2d):
            name = 'pool_{}'.format(i)
        model.add_module(name, layer)
        if name == 'conv_2':
            target = model(content_img).detach()
            content_loss = ContentLoss(target)
            model.add_module("content_loss_{}".format(i), content_loss)
            content_losses.append(content_loss)
        if name in ('conv_1', 'conv_2', 'conv_3'):
            target_feature = model(style_img).detach()
            style_loss = StyleLoss(target_feature)
            model.add_module("style_loss_{}".format(i), style_loss)
            style_losses.append(style_loss)
    input_img.requires_grad_(True)
    model.eval()
    model.requires_grad_(False)
    optimizer = optim.LBFGS([input_img])
    run = [0]
    log = []
    while run[0] <= num_steps:
        def closure():
            with torch.no_grad():
                input_img.clamp_(0, 1)
            optimizer.zero_grad()
            model(input_img)
            style_score = 0
            content_score = 0
            for sl in style_losses:
                style_score += sl.loss
            for cl in content_losses:
                content_score += cl.loss
            style_score *= 1000000
            content_score *= 1
            loss = style_score + content_score
            loss.backward()
            run[0] += 1
            log.append((style_score.item(), content_score.item()))
            return style_score + content_score

        optimizer.step(closure)
    with torch.no_grad():
        input_img.clamp_(0, 1)
    frozen = [p.requires_grad for p in model.parameters()]
    return log, input_img, frozen, optimizer.state_dict()["state"][0]["n_iter"]


def test_style_transfer_lbfgs():
    weights = weights_of(lambda m: style_transfer(m, None))
    ours, _ = run_both(style_transfer, weights, rtol=2e-3, atol=1e-4)
    log, image, frozen, n_iter = ours
    assert len(log) == 20 and n_iter == 20  # one step of max_iter=20 closure calls
    assert log[0][1] == 0.0  # the content loss starts at zero: the input is the content image
    assert log[-1][0] < 0.01 * log[0][0]  # 118 -> 0.69 on PyTorch
    assert not any(frozen)
    assert image.shape == (1, 3, 12, 12) and image.min() >= 0 and image.max() <= 1


def lbfgs_strong_wolfe(m):
    torch, optim = m.torch, m.optim
    x = torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True)
    opt = optim.LBFGS([x], lr=1, max_iter=20, history_size=5, line_search_fn="strong_wolfe")
    calls = []

    def closure():
        opt.zero_grad()
        loss = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        loss.backward()
        calls.append(loss.item())
        return loss

    for _ in range(3):
        opt.step(closure)
    state = opt.state_dict()["state"][0]
    return x, calls, state["func_evals"], state["n_iter"]


def test_lbfgs_strong_wolfe_on_rosenbrock():
    # float64: in float32 the two libraries' last-bit differences send the line search down
    # different (equally good) paths on this ill-conditioned valley
    (x, calls, evals, n_iter), _ = run_both(lbfgs_strong_wolfe, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(x, [1.0, 1.0], atol=1e-4)
    assert evals == len(calls) == 54 and n_iter == 41
    assert calls[0] == 12.5 and calls[-1] < 1e-8


# ----------------------------------------------------------------------------------------------
# Custom autograd.Functions in a model: needs_input_grad, mark_non_differentiable,
# once_differentiable, set_materialize_grads; gradcheck and gradgradcheck on them
# ----------------------------------------------------------------------------------------------


def custom_functions(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_fn = torch.autograd.function

    class ScaledSoftsign(torch.autograd.Function):
        """y = a x / (1 + |x|), its backward in tensor ops (so twice differentiable)."""

        @staticmethod
        def forward(ctx, x, a, flag):
            ctx.save_for_backward(x, a)
            ctx.flag = flag
            return a * x / (1 + x.abs())

        @staticmethod
        def backward(ctx, gy):
            x, a = ctx.saved_tensors
            gx = ga = None
            if ctx.needs_input_grad[0]:
                gx = gy * a / (1 + x.abs()) ** 2
            if ctx.needs_input_grad[1]:
                ga = (gy * x / (1 + x.abs())).sum().reshape(a.shape)
            return gx, ga, None

    class SortWithIndex(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            values, idx = x.sort(dim=-1)
            ctx.mark_non_differentiable(idx)
            ctx.save_for_backward(idx)
            return values, idx

        @staticmethod
        @from_fn.once_differentiable
        def backward(ctx, gv, gi):
            (idx,) = ctx.saved_tensors
            gx = torch.zeros_like(gv)
            gx.scatter_(-1, idx, gv)
            return gx

    class TwoOut(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.set_materialize_grads(False)
            ctx.save_for_backward(x)
            return x * 2, x.exp()

        @staticmethod
        def backward(ctx, g1, g2):
            (x,) = ctx.saved_tensors
            gx = None
            if g1 is not None:
                gx = g1 * 2
            if g2 is not None:
                gx = g2 * x.exp() if gx is None else gx + g2 * x.exp()
            return gx

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 6)
            self.a = nn.Parameter(torch.tensor([1.5]))
            self.fc2 = nn.Linear(6, 2)

        def forward(self, x):
            h = ScaledSoftsign.apply(self.fc1(x), self.a, "tag")
            v, i = SortWithIndex.apply(h)
            d, _ = TwoOut.apply(v)  # the second output is unused: its gradient arrives as None
            return self.fc2(d), i

    model = Net()
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(9)
    x = torch.tensor(rng.standard_normal((8, 4)).astype(np.float32))
    y = torch.tensor(rng.standard_normal((8, 2)).astype(np.float32))
    opt = optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        out, idx = model(x)
        loss = F.mse_loss(out, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    info = (idx.requires_grad, idx.dtype == torch.int64, out.requires_grad)
    # needs_input_grad: a scale that does not require grad gets none
    xx = torch.tensor(rng.standard_normal(5), dtype=torch.float64, requires_grad=True)
    aa = torch.tensor([0.7], dtype=torch.float64)
    ScaledSoftsign.apply(xx, aa, None).sum().backward()
    xd = torch.tensor(rng.standard_normal(5), dtype=torch.float64, requires_grad=True)
    ad = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    checks = (torch.autograd.gradcheck(lambda x, a: ScaledSoftsign.apply(x, a, None), (xd, ad)),
              torch.autograd.gradgradcheck(lambda x, a: ScaledSoftsign.apply(x, a, None), (xd, ad)),
              torch.autograd.gradcheck(lambda x: SortWithIndex.apply(x)[0], (xd,)),
              torch.autograd.gradcheck(lambda x: TwoOut.apply(x), (xd,)))
    # once_differentiable: the gradient it gives cannot be differentiated again
    z = torch.tensor(rng.standard_normal(4), dtype=torch.float64, requires_grad=True)
    v, _ = SortWithIndex.apply(z * z)
    (g,) = torch.autograd.grad(v.pow(2).sum(), z, create_graph=True)
    try:
        g.sum().backward()
        refused = False
    except RuntimeError:
        refused = True
    return losses, info, xx.grad, aa.grad, checks, refused, [p.grad for p in model.parameters()]


def test_custom_functions_in_a_model():
    weights = weights_of(lambda m: custom_functions(m, None))
    ours, _ = run_both(custom_functions, weights, rtol=1e-4, atol=1e-5)
    losses, info, x_grad, a_grad, checks, refused, grads = ours
    assert losses[-1] < 0.5 * losses[0]  # 0.99 -> 0.44 on PyTorch
    assert info == (False, True, True)
    assert a_grad is None and x_grad.shape == (5,) and (x_grad > 0).all()
    assert checks == (True, True, True, True)
    assert refused
    assert grads[0].shape == (1,) and grads[0][0] != 0  # the scale a (own parameters come first) learns


# ----------------------------------------------------------------------------------------------
# MAML on sine regression (the "MAML from scratch" pattern): a functional forward on fast
# weights, inner steps by autograd.grad(create_graph=True), second-order meta-gradients
# ----------------------------------------------------------------------------------------------


def maml(m, weights, iterations=6, second_order=True):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    net = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1))
    if weights is None:
        return net
    load(m, net, weights)
    params = list(net.parameters())

    def forward(x, p):
        return F.linear(torch.tanh(F.linear(x, p[0], p[1])), p[2], p[3])

    rng = np.random.default_rng(11)
    tasks = [(1.0 + 0.5 * k, 0.7 * k) for k in range(3)]
    data = [(rng.uniform(-3, 3, (10, 1)).astype(np.float32), rng.uniform(-3, 3, (10, 1)).astype(np.float32))
            for _ in tasks]
    meta_opt = optim.Adam(params, lr=1e-2)
    losses = []
    for it in range(iterations):
        meta_opt.zero_grad()
        meta_loss = 0.0
        for (amp, phase), (xs, xq) in zip(tasks, data):
            xs, xq = torch.tensor(xs), torch.tensor(xq)
            ys, yq = amp * torch.sin(xs + phase), amp * torch.sin(xq + phase)
            fast = params
            for _ in range(2):
                inner = F.mse_loss(forward(xs, fast), ys)
                grads = torch.autograd.grad(inner, fast, create_graph=second_order)
                fast = [p - 0.05 * g for p, g in zip(fast, grads)]
            meta_loss = meta_loss + F.mse_loss(forward(xq, fast), yq)
        meta_loss = meta_loss / len(tasks)
        meta_loss.backward()
        if it == 0:
            first_grads = [p.grad.clone() for p in params]
        meta_opt.step()
        losses.append(meta_loss.item())
    return losses, first_grads


def test_maml_second_order():
    weights = weights_of(lambda m: maml(m, None))
    (losses, grads), _ = run_both(maml, weights, rtol=1e-4, atol=1e-5)
    (fo_losses, fo_grads), _ = run_both(maml, weights, second_order=False, rtol=1e-4, atol=1e-5)
    assert losses[-1] < 0.8 * losses[0]  # 0.997 -> 0.749 (first-order MAML: 0.846)
    assert losses[-1] < fo_losses[-1]
    # the second-order term changes the meta-gradient; first-order MAML sees the same first loss
    assert losses[0] == fo_losses[0]
    assert max(np.abs(a - b).max() for a, b in zip(grads, fo_grads)) > 1e-4


# ----------------------------------------------------------------------------------------------
# A quotient written in place: attention scores scaled by a division, then masked in place
# ----------------------------------------------------------------------------------------------


def scaled_scores_masked_in_place(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(5)
    q = torch.tensor(rng.standard_normal((2, 4, 8)), requires_grad=True)
    k = torch.tensor(rng.standard_normal((2, 4, 8)), requires_grad=True)
    scores = torch.bmm(q, k.transpose(1, 2)) / np.sqrt(8.0)
    mask = torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)
    scores.masked_fill_(mask, float("-inf"))
    attn = F.softmax(scores, dim=-1)
    attn.sum(1).pow(2).sum().backward()
    return attn, q.grad, k.grad


def test_a_quotient_may_be_written_in_place():
    attn, q_grad, k_grad = plain(scaled_scores_masked_in_place(OURS))
    assert np.allclose(np.triu(attn, 1), 0) and np.allclose(attn.sum(-1), 1)
    assert np.abs(q_grad).sum() > 0
    torch_modules = pytorch()
    if torch_modules is not None:
        assert_same((attn, q_grad, k_grad), plain(scaled_scores_masked_in_place(torch_modules)), 1e-12, 1e-12)
