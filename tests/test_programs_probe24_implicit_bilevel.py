# ruff: noqa: B007, B023, E501, E702, F841  (the programs are kept as their authors wrote them)
"""Implicit and bilevel differentiation programs (see tests/pytorch_programs.py) as PyTorch users write them, each
run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy and invariants.
Bilevel problems: iMAML's conjugate gradient on Hessian-vector products with ``parameters_to_vector``;
hyperparameters (learning rate, weight decay, momentum) learnt through hand-written unrolled SGD, through
``torch.func.grad`` over ``functional_call``, and through ``differentiable=True`` optimizers; MAML with functional
batch norm, second order; the implicit function theorem by a Neumann series and by SciPy's CG on HVPs after an L-BFGS
inner solve; learning to reweight examples (buffers that require grad, swapped for non-leaf tensors by ``setattr``)."""

import importlib
import math

import numpy as np
import pytest

from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# iMAML: a proximal inner loop, the implicit meta-gradient by conjugate gradient on HVPs
# ----------------------------------------------------------------------------------------------


def imaml(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    parameters_to_vector, vector_to_parameters = nn.utils.parameters_to_vector, nn.utils.vector_to_parameters
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    meta_opt = optim.Adam(model.parameters(), lr=1e-3)
    lam = 2.0

    def matrix_evaluator(loss_fn, params, lam, regu_coef=1.0, lam_damping=10.0):
        def evaluator(v):
            grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
            flat = torch.cat([g.contiguous().view(-1) for g in grads])
            hvp = torch.autograd.grad(flat, params, grad_outputs=v)
            hvp = torch.cat([h.reshape(-1) for h in hvp])
            return (1.0 + regu_coef) * v + hvp / (lam + lam_damping)
        return evaluator

    def cg_solve(f_Ax, b, cg_iters=10, x_init=None, residual_tol=1e-10):
        x = torch.zeros(b.shape[0], dtype=b.dtype) if x_init is None else x_init
        r = b - f_Ax(x)
        p = r.clone()
        for i in range(cg_iters):
            Ap = f_Ax(p)
            alpha = (r @ r) / (p @ Ap)
            x = x + alpha * p
            r_new = r - alpha * Ap
            beta = (r_new @ r_new) / (r @ r)
            p = r_new + beta * p
            r = r_new
            if r.norm().item() < residual_tol:
                break
        return x, f_Ax(x)

    g = torch.Generator().manual_seed(3)
    outs, residuals = [], []
    for it in range(2):
        meta_grad = None
        for task in range(2):
            amp = torch.rand(1, generator=g, dtype=torch.float64) * 4 + 1
            phase = torch.rand(1, generator=g, dtype=torch.float64) * math.pi
            xs = torch.rand(10, 1, generator=g, dtype=torch.float64) * 10 - 5
            ys = amp * torch.sin(xs + phase)
            fast = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1)).double()
            fast.load_state_dict(model.state_dict())
            w0 = parameters_to_vector(model.parameters()).detach()
            inner_opt = optim.SGD(fast.parameters(), lr=0.01)
            for k in range(5):
                inner_opt.zero_grad()
                reg = 0.5 * lam * (parameters_to_vector(fast.parameters()) - w0).pow(2).sum()
                loss = F.mse_loss(fast(xs), ys) + reg
                loss.backward()
                inner_opt.step()
            vl = F.mse_loss(fast(xs[:5]), ys[:5])
            vgrad = torch.autograd.grad(vl, list(fast.parameters()))
            vgrad = torch.cat([t.reshape(-1) for t in vgrad])
            ev = matrix_evaluator(lambda: F.mse_loss(fast(xs[5:]), ys[5:]), list(fast.parameters()), lam, 0.0)
            ig, Aig = cg_solve(ev, vgrad, cg_iters=8)
            residuals.append((Aig - vgrad).norm().item() / vgrad.norm().item())
            meta_grad = ig if meta_grad is None else meta_grad + ig
        meta_opt.zero_grad()
        off = 0
        for p in model.parameters():
            n = p.numel()
            p.grad = (meta_grad[off:off + n] / 2).view(p.size()).clone()
            off += n
        meta_opt.step()
        outs.append(meta_grad)
    vec = parameters_to_vector(model.parameters())
    vector_to_parameters(vec * 0.5, model.parameters())
    return {"meta_grads": outs, "params": [p.detach() for p in model.parameters()], "vec": vec,
            "residuals": residuals}


def test_imaml_conjugate_gradient_on_hessian_vector_products():
    ours, _ = run_both(imaml, rtol=1e-8, atol=1e-10)
    assert sorted(ours["residuals"])[2] < 1e-7  # CG solved (I + H / (λ + 10)) x = g (one task's H is indefinite)
    np.testing.assert_allclose([np.linalg.norm(g) for g in ours["meta_grads"]], [4.333237935778838, 11.109679000851326],
                               rtol=1e-7)
    np.testing.assert_array_equal(np.concatenate([p.ravel() for p in ours["params"]]), 0.5 * ours["vec"])


# ----------------------------------------------------------------------------------------------
# Hyperparameters by unrolled differentiation: hand-written SGD with momentum, torch.func, and
# PyTorch's differentiable=True optimizers
# ----------------------------------------------------------------------------------------------


def hyperopt(m, lr0=0.05):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    X = torch.randn(30, 4, dtype=torch.float64); w_true = torch.randn(4, 1, dtype=torch.float64)
    y = X @ w_true + 0.1 * torch.randn(30, 1, dtype=torch.float64)
    Xv = torch.randn(20, 4, dtype=torch.float64); yv = Xv @ w_true
    log_lr = torch.tensor(math.log(lr0), dtype=torch.float64, requires_grad=True)
    log_wd = torch.full((), -3.0, dtype=torch.float64, requires_grad=True)
    mom = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    hopt = torch.optim.Adam([log_lr, log_wd, mom], lr=0.05)
    hist = []
    for outer in range(3):
        w = torch.zeros(4, 1, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        vw, vb = torch.zeros_like(w), torch.zeros_like(b)
        for t in range(5):
            loss = F.mse_loss(X @ w + b, y) + log_wd.exp() * (w ** 2).sum() / 2
            gw, gb = torch.autograd.grad(loss, (w, b), create_graph=True)
            vw = mom * vw + gw
            vb = mom * vb + gb
            w = w - log_lr.exp() * vw
            b = b - log_lr.exp() * vb
        vloss = F.mse_loss(Xv @ w + b, yv)
        hopt.zero_grad()
        vloss.backward()
        hist.append((vloss.item(), log_lr.grad.clone(), log_wd.grad.clone(), mom.grad.clone()))
        hopt.step()
    # hypergradient descent (Baydin et al.): the step size follows the dot product of successive gradients
    torch.manual_seed(1)
    net = torch.nn.Linear(4, 1).double()
    alpha = torch.tensor(0.01, dtype=torch.float64)
    prev = None
    for t in range(4):
        net.zero_grad()
        F.mse_loss(net(X), y).backward()
        g = torch.cat([p.grad.view(-1) for p in net.parameters()])
        if prev is not None:
            alpha = alpha + 0.001 * torch.dot(g, prev)
        prev = g.clone()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(p.grad, alpha=-alpha.item())
    return {"hist": hist, "alpha": alpha, "weight": net.weight, "hyper": [log_lr, log_wd, mom]}


def test_hyperparameters_through_unrolled_sgd():
    ours, _ = run_both(hyperopt, rtol=1e-9, atol=1e-11)
    # the first hypergradient in the learning rate is the slope of the validation loss (central differences)
    h = 1e-6
    up, down = hyperopt(OURS, 0.05 * math.exp(h))["hist"][0][0], hyperopt(OURS, 0.05 * math.exp(-h))["hist"][0][0]
    np.testing.assert_allclose(ours["hist"][0][1], (up - down) / (2 * h), rtol=1e-6)


def unrolled_func(m):
    torch, nn, F = m.torch, m.nn, m.F
    func = importlib.import_module(torch.__name__ + ".func")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    params = {k: v.detach() for k, v in net.named_parameters()}
    X = torch.randn(16, 3, dtype=torch.float64); y = torch.randn(16, 1, dtype=torch.float64)
    Xv = torch.randn(8, 3, dtype=torch.float64); yv = torch.randn(8, 1, dtype=torch.float64)

    def inner_loss(p, wd):
        out = func.functional_call(net, p, (X,))
        return F.mse_loss(out, y) + wd * sum((w ** 2).sum() for w in p.values())

    def val_loss_of(hp):
        lr, wd = hp[0], hp[1]
        p = params
        for _ in range(4):
            g = func.grad(inner_loss)(p, wd)
            p = {k: p[k] - lr * g[k] for k in p}
        return F.mse_loss(func.functional_call(net, p, (Xv,)), yv)

    hp = torch.tensor([0.1, 0.01], dtype=torch.float64)
    hg = func.grad(val_loss_of)(hp)
    hp2 = hp.clone().requires_grad_()
    vl = val_loss_of(hp2)
    vl.backward()
    H = func.jacrev(func.jacrev(val_loss_of))(hp)  # (PyTorch 2.13's func.hessian here: "ZeroTensors are immutable")
    return {"hg": hg, "backward": hp2.grad, "vl": vl, "H": H}


def test_hyperparameters_through_torch_func_grad():
    ours, _ = run_both(unrolled_func, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["hg"], ours["backward"], rtol=1e-12)
    np.testing.assert_allclose(ours["H"], ours["H"].T, rtol=1e-9, atol=1e-12)


def test_func_hessian_of_unrolled_inner_loop_equals_jacrev_twice():
    """PyTorch 2.13 fails here (its ZeroTensor of an unused input's gradient is written to in place); ours gives
    the Hessian jacrev(jacrev) gives."""
    torch, nn, F = OURS.torch, OURS.nn, OURS.F
    func = importlib.import_module("autograd.func")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    params = {k: v.detach() for k, v in net.named_parameters()}
    X = torch.randn(16, 3, dtype=torch.float64); y = torch.randn(16, 1, dtype=torch.float64)

    def val(hp):
        p = params
        for _ in range(2):
            g = func.grad(lambda q: F.mse_loss(func.functional_call(net, q, (X,)), y) + hp[1] * sum((w ** 2).sum() for w in q.values()))(p)
            p = {k: p[k] - hp[0] * g[k] for k in p}
        return F.mse_loss(func.functional_call(net, p, (X,)), y)

    hp = torch.tensor([0.1, 0.01], dtype=torch.float64)
    np.testing.assert_allclose(func.hessian(val)(hp).numpy(), func.jacrev(func.jacrev(val))(hp).numpy(), rtol=1e-10)


def differentiable_optimizer(m, name):
    torch = m.torch
    torch.manual_seed(0)
    X = torch.randn(10, 3, dtype=torch.float64); y = torch.randn(10, dtype=torch.float64)
    w0 = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    w = w0.clone()
    opt = {"sgd": lambda: torch.optim.SGD([w], lr=lr, differentiable=True),
           "sgd_nesterov": lambda: torch.optim.SGD([w], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, differentiable=True),
           "adam": lambda: torch.optim.Adam([w], lr=lr, differentiable=True),
           "adamw": lambda: torch.optim.AdamW([w], lr=0.05, weight_decay=0.1, differentiable=True),
           "adagrad": lambda: torch.optim.Adagrad([w], lr=0.1, differentiable=True),
           "nadam": lambda: torch.optim.NAdam([w], lr=0.1, differentiable=True),
           "radam": lambda: torch.optim.RAdam([w], lr=0.1, differentiable=True)}[name]()
    for _ in range(3):
        loss = ((X @ w - y) ** 2).mean()
        g, = torch.autograd.grad(loss, w, create_graph=True)
        w.grad = g
        opt.step()
    vl = ((X @ w - 1) ** 2).mean()
    vl.backward()
    return {"vl": vl, "w": w, "lr_grad": lr.grad, "w0_grad": w0.grad, "state": sorted(opt.state[w].keys())}


@pytest.mark.parametrize("name", ["sgd", "sgd_nesterov", "adam", "adamw", "adagrad", "nadam", "radam"])
def test_differentiable_optimizers(name):
    ours, _ = run_both(differentiable_optimizer, name, rtol=1e-8, atol=1e-10)
    assert np.abs(ours["w0_grad"]).max() > 0  # the validation loss reaches the initial weights through the steps
    if name == "sgd":  # plain SGD by hand in NumPy: d vl / d lr by central differences
        OURS.torch.manual_seed(0)
        X, y = OURS.torch.randn(10, 3, dtype=OURS.torch.float64).numpy(), OURS.torch.randn(10, dtype=OURS.torch.float64).numpy()

        def vl_at(lr):
            w = np.zeros(3)
            for _ in range(3):
                w = w - lr * 2 * X.T @ (X @ w - y) / len(y)
            return ((X @ w - 1) ** 2).mean()
        np.testing.assert_allclose(ours["vl"], vl_at(0.1), rtol=1e-12)
        np.testing.assert_allclose(ours["lr_grad"], (vl_at(0.1 + 1e-6) - vl_at(0.1 - 1e-6)) / 2e-6, rtol=1e-6)


def l2rw(m):
    torch, nn, F = m.torch, m.nn, m.F
    Variable = torch.autograd.Variable
    torch.manual_seed(0)
    def to_var(x, requires_grad=True):
        return Variable(x, requires_grad=requires_grad)
    class MetaModule(nn.Module):
        def params(self):
            for name, param in self.named_params(self):
                yield param
        def named_leaves(self):
            return []
        def named_submodules(self):
            return []
        def named_params(self, curr_module=None, memo=None, prefix=''):
            if memo is None:
                memo = set()
            if hasattr(curr_module, 'named_leaves'):
                for name, p in curr_module.named_leaves():
                    if p is not None and p not in memo:
                        memo.add(p)
                        yield prefix + ('.' if prefix else '') + name, p
            else:
                for name, p in curr_module._parameters.items():
                    if p is not None and p not in memo:
                        memo.add(p)
                        yield prefix + ('.' if prefix else '') + name, p
            for mname, module in curr_module.named_children():
                submodule_prefix = prefix + ('.' if prefix else '') + mname
                for name, p in self.named_params(module, memo, submodule_prefix):
                    yield name, p
        def update_params(self, lr_inner, first_order=False, source_params=None, detach=False):
            if source_params is not None:
                for tgt, src in zip(self.named_params(self), source_params):
                    name_t, param_t = tgt
                    grad = src
                    if first_order:
                        grad = to_var(grad.detach().data)
                    tmp = param_t - lr_inner * grad
                    self.set_param(self, name_t, tmp)
            else:
                for name, param in self.named_params(self):
                    if not detach:
                        grad = param.grad
                        if first_order:
                            grad = to_var(grad.detach().data)
                        tmp = param - lr_inner * grad
                        self.set_param(self, name, tmp)
                    else:
                        param = param.detach_()
                        self.set_param(self, name, param)
        def set_param(self, curr_mod, name, param):
            if '.' in name:
                n = name.split('.')
                module_name = n[0]
                rest = '.'.join(n[1:])
                for name, mod in curr_mod.named_children():
                    if module_name == name:
                        self.set_param(mod, rest, param)
                        break
            else:
                setattr(curr_mod, name, param)
        def detach_params(self):
            for name, param in self.named_params(self):
                self.set_param(self, name, param, detach=True)
        def copy(self, other, same_var=False):
            for name, param in other.named_params():
                if not same_var:
                    param = to_var(param.data.clone(), requires_grad=True)
                self.set_param(name, param)
    class MetaLinear(MetaModule):
        def __init__(self, *args, **kwargs):
            super().__init__()
            ignore = nn.Linear(*args, **kwargs)
            self.register_buffer('weight', to_var(ignore.weight.data, requires_grad=True))
            self.register_buffer('bias', to_var(ignore.bias.data, requires_grad=True))
        def forward(self, x):
            return F.linear(x, self.weight, self.bias)
        def named_leaves(self):
            return [('weight', self.weight), ('bias', self.bias)]
    class MetaConv2d(MetaModule):
        def __init__(self, *args, **kwargs):
            super().__init__()
            ignore = nn.Conv2d(*args, **kwargs)
            self.stride = ignore.stride; self.padding = ignore.padding; self.dilation = ignore.dilation; self.groups = ignore.groups
            self.register_buffer('weight', to_var(ignore.weight.data, requires_grad=True))
            if ignore.bias is not None:
                self.register_buffer('bias', to_var(ignore.bias.data, requires_grad=True))
            else:
                self.register_buffer('bias', None)
        def forward(self, x):
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        def named_leaves(self):
            return [('weight', self.weight), ('bias', self.bias)]
    class MetaBatchNorm2d(MetaModule):
        def __init__(self, *args, **kwargs):
            super().__init__()
            ignore = nn.BatchNorm2d(*args, **kwargs)
            self.num_features = ignore.num_features; self.eps = ignore.eps; self.momentum = ignore.momentum
            self.affine = ignore.affine; self.track_running_stats = ignore.track_running_stats
            if self.affine:
                self.register_buffer('weight', to_var(ignore.weight.data, requires_grad=True))
                self.register_buffer('bias', to_var(ignore.bias.data, requires_grad=True))
            if self.track_running_stats:
                self.register_buffer('running_mean', torch.zeros(self.num_features))
                self.register_buffer('running_var', torch.ones(self.num_features))
            else:
                self.register_parameter('running_mean', None)
                self.register_parameter('running_var', None)
        def forward(self, x):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                self.training or not self.track_running_stats, self.momentum, self.eps)
        def named_leaves(self):
            return [('weight', self.weight), ('bias', self.bias)]
    class LeNet(MetaModule):
        def __init__(self, n_out):
            super().__init__()
            layers = []
            layers.append(MetaConv2d(1, 6, kernel_size=5))
            layers.append(MetaBatchNorm2d(6))
            layers.append(nn.ReLU(inplace=True))
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            layers.append(MetaConv2d(6, 16, kernel_size=5))
            layers.append(MetaBatchNorm2d(16))
            layers.append(nn.ReLU(inplace=True))
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            self.main = nn.Sequential(*layers)
            layers = []
            layers.append(MetaLinear(16 * 5 * 5, 120))
            layers.append(nn.ReLU(inplace=True))
            layers.append(MetaLinear(120, 84))
            layers.append(nn.ReLU(inplace=True))
            layers.append(MetaLinear(84, n_out))
            self.fc_layers = nn.Sequential(*layers)
        def forward(self, x):
            x = self.main(x)
            x = x.view(-1, 16 * 5 * 5)
            return self.fc_layers(x).squeeze()
    def build_model():
        net = LeNet(n_out=1)
        opt = torch.optim.SGD(net.params(), lr=1e-3)
        return net, opt
    net, opt = build_model()
    g = torch.Generator().manual_seed(2)
    X = torch.randn(8, 1, 32, 32, generator=g); y = (torch.rand(8, generator=g) > 0.5).float()
    Xv = torch.randn(4, 1, 32, 32, generator=g); yv = (torch.rand(4, generator=g) > 0.5).float()
    hist = []
    for i in range(2):
        net.train()
        meta_net = LeNet(n_out=1)
        meta_net.load_state_dict(net.state_dict())
        y_f_hat = meta_net(X)
        cost = F.binary_cross_entropy_with_logits(y_f_hat, y, reduce=False)
        eps = to_var(torch.zeros(cost.size()))
        l_f_meta = torch.sum(cost * eps)
        meta_net.zero_grad()
        grads = torch.autograd.grad(l_f_meta, (meta_net.params()), create_graph=True)
        meta_net.update_params(1e-3, source_params=grads)
        y_g_hat = meta_net(Xv)
        l_g_meta = F.binary_cross_entropy_with_logits(y_g_hat, yv)
        grad_eps = torch.autograd.grad(l_g_meta, eps, only_inputs=True)[0]
        w_tilde = torch.clamp(-grad_eps, min=0)
        norm_c = torch.sum(w_tilde)
        if norm_c != 0:
            w = w_tilde / norm_c
        else:
            w = w_tilde
        y_f_hat = net(X)
        cost = F.binary_cross_entropy_with_logits(y_f_hat, y, reduce=False)
        l_f = torch.sum(cost * w)
        opt.zero_grad()
        l_f.backward()
        opt.step()
        hist.append((l_f.item(), grad_eps))
    return {"hist": hist, "state": dict(net.state_dict()), "keys": sorted(net.state_dict().keys())}


@pytest.mark.filterwarnings("ignore::UserWarning")  # (reduce=False: PyTorch's deprecated loss arguments)
def test_learning_to_reweight_with_buffers_that_require_grad():
    ours, _ = run_both(l2rw, rtol=1e-4, atol=1e-6)
    assert ours["keys"][:3] == ["fc_layers.0.bias", "fc_layers.0.weight", "fc_layers.2.bias"]
    for loss, grad_eps in ours["hist"]:
        assert np.isfinite(loss) and np.abs(grad_eps).max() > 0


def ift_neumann(m):
    import scipy.sparse.linalg as sla
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    X = torch.randn(40, 6, dtype=torch.float64); y = torch.randint(0, 3, (40,))
    Xv = torch.randn(20, 6, dtype=torch.float64); yv = torch.randint(0, 3, (20,))
    model = nn.Linear(6, 3).double()
    log_wd = torch.full((6,), -2.0, dtype=torch.float64, requires_grad=True)  # per-feature weight decay
    def train_loss():
        return F.cross_entropy(model(X), y) + (log_wd.exp() * model.weight.pow(2)).sum()
    def val_loss():
        return F.cross_entropy(model(Xv), yv)
    inner = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=50, line_search_fn="strong_wolfe",
                              tolerance_grad=1e-12, tolerance_change=1e-14, history_size=10)
    def closure():
        inner.zero_grad()
        l = train_loss()
        l.backward()
        return l
    inner.step(closure)
    params = list(model.parameters())
    vl = val_loss()
    v = torch.autograd.grad(vl, params)
    dtrain_dw = torch.autograd.grad(train_loss(), params, create_graph=True)
    # Neumann: p = sum_j (I - a H)^j v
    p = [vi.clone() for vi in v]
    cur = [vi.clone() for vi in v]
    for _ in range(30):
        hv = torch.autograd.grad(dtrain_dw, params, grad_outputs=cur, retain_graph=True)
        cur = [c - 0.5 * h for c, h in zip(cur, hv)]
        p = [pi + c for pi, c in zip(p, cur)]
    p = [0.5 * pi for pi in p]
    # hypergrad = - d/dlam (dtrain_dw . p)
    hyper = torch.autograd.grad(dtrain_dw, log_wd, grad_outputs=p, retain_graph=True)[0]
    hyper = -hyper
    # exact by CG via scipy LinearOperator on HVPs
    shapes = [q.shape for q in params]
    n = sum(q.numel() for q in params)
    def mv(vec):
        vs, o = [], 0
        for s in shapes:
            k = int(np.prod(s)); vs.append(torch.from_numpy(vec[o:o + k].copy()).view(s)); o += k
        hv = torch.autograd.grad(dtrain_dw, params, grad_outputs=vs, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).detach().numpy()
    A = sla.LinearOperator((n, n), matvec=mv, dtype=np.float64)
    b = torch.cat([q.reshape(-1) for q in v]).numpy()
    sol, info = sla.cg(A, b, rtol=1e-12, maxiter=200)
    exact = -torch.autograd.grad(dtrain_dw, log_wd, grad_outputs=[torch.from_numpy(sol[:18].copy()).view(3, 6),
                                                                   torch.from_numpy(sol[18:].copy())])[0]
    return {"vl": vl, "neumann": hyper, "cg": sol, "info": info, "params": [q.detach() for q in params], "exact": exact}


def test_ift_hypergradient_by_neumann_series_and_scipy_cg():
    pytest.importorskip("scipy")
    ours, _ = run_both(ift_neumann, rtol=1e-6, atol=1e-8)
    assert ours["info"] == 0
    np.testing.assert_allclose(ours["neumann"], ours["exact"], atol=1e-4)  # 30 Neumann terms ≈ H⁻¹


# ----------------------------------------------------------------------------------------------
# MAML-Pytorch's Learner: functional batch norm with running statistics, second order
# ----------------------------------------------------------------------------------------------


def maml_batchnorm_second_order(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    dt = torch.float64
    vars_ = [torch.randn(4, 2, 3, 3, dtype=dt) * 0.3, torch.zeros(4, dtype=dt),
             torch.ones(4, dtype=dt), torch.zeros(4, dtype=dt),
             torch.randn(4, 3, 2, 2, dtype=dt) * 0.3, torch.zeros(3, dtype=dt),
             torch.randn(5, 3 * 4 * 4, dtype=dt) * 0.1, torch.zeros(5, dtype=dt)]
    vars_ = [v.requires_grad_() for v in vars_]
    running_mean = torch.zeros(4, dtype=dt); running_var = torch.ones(4, dtype=dt)
    def forward(x, v, bn_training=True):
        x = F.conv2d(x, v[0], v[1], stride=1, padding=1)
        x = F.batch_norm(x, running_mean, running_var, weight=v[2], bias=v[3], training=bn_training)
        x = F.leaky_relu(x, negative_slope=0.1, inplace=True)
        x = F.max_pool2d(x, 2, 2, 0)
        x = F.conv_transpose2d(x, v[4], v[5], stride=2, padding=0)
        x = F.elu(x, inplace=True)
        x = F.avg_pool2d(x, 2)
        x = x.view(x.size(0), -1)
        return F.linear(x, v[6], v[7])
    x = torch.randn(6, 2, 8, 8, dtype=dt); y = torch.randint(0, 5, (6,))
    xq = torch.randn(6, 2, 8, 8, dtype=dt); yq = torch.randint(0, 5, (6,))
    fast = vars_
    for k in range(2):
        loss = F.cross_entropy(forward(x, fast), y)
        grad = torch.autograd.grad(loss, fast, create_graph=True)
        fast = [p - 0.4 * g for p, g in zip(fast, grad)]
    lq = F.cross_entropy(forward(xq, fast), yq)
    lq.backward()
    with torch.no_grad():
        ev = forward(xq, fast, bn_training=False)
    return {"lq": lq, "grads": [v.grad for v in vars_], "running_mean": running_mean, "running_var": running_var,
            "ev": ev}


def test_maml_with_functional_batch_norm_and_transposed_convolution():
    ours, _ = run_both(maml_batchnorm_second_order, rtol=1e-8, atol=1e-10)
    assert all(np.abs(g).max() > 0 for g in ours["grads"])
    # the three training-mode forwards (two inner steps, the query) moved the running statistics
    assert (ours["running_var"] != 1).all() and (ours["running_mean"] != 0).all()
