# ruff: noqa: B007, B008, B023, E501, E722, E701, E702, E731, E741, F841, N801, N802, N806, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Implicit and bilevel differentiation programs (see tests/pytorch_programs.py) as PyTorch users write them, each
run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy and invariants.

DARTS (mixed operations weighted by a softmax of architecture parameters, an unrolled model built from a flat
theta, the second-order architecture gradient by a finite-difference Hessian-vector product, two optimizers,
deprecated ``Variable``); a convolutional deep equilibrium model (Anderson acceleration under ``no_grad``, a
``register_hook`` on the fixed point solving the adjoint system, a hook that removes itself, Hutchinson's Jacobian
penalty with ``create_graph``) and one written as an ``autograd.Function`` whose backward re-enters grad mode;
iMAML's conjugate gradient on Hessian-vector products with ``parameters_to_vector``; hyperparameters (learning
rate, weight decay, momentum) learnt through hand-written unrolled SGD, through ``torch.func.grad`` over
``functional_call``, and through ``differentiable=True`` optimizers; the implicit function theorem by a Neumann
series and by SciPy's CG on HVPs after an L-BFGS inner solve; learning to reweight examples (buffers that require
grad, swapped for non-leaf tensors by ``setattr``); hypernetworks (``F.conv2d``/``F.linear``/``bmm`` with generated
weights, a grouped convolution with per-example kernels, a hypernetwork as a ``parametrize`` parametrization);
OptNet-style layers (projected-gradient QP, a KKT system by ``linalg.solve``, ``lu_factor``/``lu_solve``,
``cholesky_solve``, a log-barrier Newton method, a custom sparsemax and an implicit ridge layer with gradcheck);
Sinkhorn's entropic transport with a gradient penalty; IGR's SDF network with geometric init, ``weight_norm`` and
the eikonal loss, SIREN's Laplacian by nested ``autograd.grad``, NeuS's variance and sphere tracing."""

import importlib
import math

import numpy as np
import pytest

from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# DARTS (Liu et al.): the search network, the architect's unrolled second-order step
# ----------------------------------------------------------------------------------------------


def darts(m, second_order=True, check_hvp=False):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)
    try:
        OPS = {
            'none': lambda C, stride, affine: Zero(stride),
            'avg_pool_3x3': lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
            'max_pool_3x3': lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
            'skip_connect': lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine),
            'sep_conv_3x3': lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
            'dil_conv_3x3': lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
        }
        PRIMITIVES = list(OPS)

        class ReLUConvBN(nn.Module):
            def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
                super(ReLUConvBN, self).__init__()
                self.op = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
                                        nn.BatchNorm2d(C_out, affine=affine))

            def forward(self, x):
                return self.op(x)

        class DilConv(nn.Module):
            def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
                super(DilConv, self).__init__()
                self.op = nn.Sequential(
                    nn.ReLU(inplace=False),
                    nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, groups=C_in, bias=False),
                    nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
                    nn.BatchNorm2d(C_out, affine=affine))

            def forward(self, x):
                return self.op(x)

        class SepConv(nn.Module):
            def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
                super(SepConv, self).__init__()
                self.op = nn.Sequential(
                    nn.ReLU(inplace=False),
                    nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
                    nn.Conv2d(C_in, C_in, kernel_size=1, padding=0, bias=False),
                    nn.BatchNorm2d(C_in, affine=affine),
                    nn.ReLU(inplace=False),
                    nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
                    nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
                    nn.BatchNorm2d(C_out, affine=affine))

            def forward(self, x):
                return self.op(x)

        class Identity(nn.Module):
            def forward(self, x):
                return x

        class Zero(nn.Module):
            def __init__(self, stride):
                super(Zero, self).__init__()
                self.stride = stride

            def forward(self, x):
                if self.stride == 1:
                    return x.mul(0.)
                return x[:, :, ::self.stride, ::self.stride].mul(0.)

        class FactorizedReduce(nn.Module):
            def __init__(self, C_in, C_out, affine=True):
                super(FactorizedReduce, self).__init__()
                self.relu = nn.ReLU(inplace=False)
                self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
                self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
                self.bn = nn.BatchNorm2d(C_out, affine=affine)

            def forward(self, x):
                x = self.relu(x)
                out = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)
                return self.bn(out)

        class MixedOp(nn.Module):
            def __init__(self, C, stride):
                super(MixedOp, self).__init__()
                self._ops = nn.ModuleList()
                for primitive in PRIMITIVES:
                    op = OPS[primitive](C, stride, False)
                    if 'pool' in primitive:
                        op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
                    self._ops.append(op)

            def forward(self, x, weights):
                return sum(w * op(x) for w, op in zip(weights, self._ops))

        class Cell(nn.Module):
            def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev):
                super(Cell, self).__init__()
                self.reduction = reduction
                if reduction_prev:
                    self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
                else:
                    self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
                self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
                self._steps = steps
                self._multiplier = multiplier
                self._ops = nn.ModuleList()
                for i in range(self._steps):
                    for j in range(2 + i):
                        stride = 2 if reduction and j < 2 else 1
                        self._ops.append(MixedOp(C, stride))

            def forward(self, s0, s1, weights):
                s0 = self.preprocess0(s0)
                s1 = self.preprocess1(s1)
                states = [s0, s1]
                offset = 0
                for i in range(self._steps):
                    s = sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
                    offset += len(states)
                    states.append(s)
                return torch.cat(states[-self._multiplier:], dim=1)

        class Network(nn.Module):
            def __init__(self, C, num_classes, layers, criterion, steps=2, multiplier=2, stem_multiplier=3):
                super(Network, self).__init__()
                self._C = C
                self._num_classes = num_classes
                self._layers = layers
                self._criterion = criterion
                self._steps = steps
                self._multiplier = multiplier
                C_curr = stem_multiplier * C
                self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
                C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
                self.cells = nn.ModuleList()
                reduction_prev = False
                for i in range(layers):
                    if i in [layers // 3, 2 * layers // 3]:
                        C_curr *= 2
                        reduction = True
                    else:
                        reduction = False
                    cell = Cell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
                    reduction_prev = reduction
                    self.cells += [cell]
                    C_prev_prev, C_prev = C_prev, multiplier * C_curr
                self.global_pooling = nn.AdaptiveAvgPool2d(1)
                self.classifier = nn.Linear(C_prev, num_classes)
                self._initialize_alphas()

            def new(self):
                model_new = Network(self._C, self._num_classes, self._layers, self._criterion, self._steps, self._multiplier)
                for x, y in zip(model_new.arch_parameters(), self.arch_parameters()):
                    x.data.copy_(y.data)
                return model_new

            def forward(self, input):
                s0 = s1 = self.stem(input)
                for i, cell in enumerate(self.cells):
                    if cell.reduction:
                        weights = F.softmax(self.alphas_reduce, dim=-1)
                    else:
                        weights = F.softmax(self.alphas_normal, dim=-1)
                    s0, s1 = s1, cell(s0, s1, weights)
                out = self.global_pooling(s1)
                logits = self.classifier(out.view(out.size(0), -1))
                return logits

            def _loss(self, input, target):
                logits = self(input)
                return self._criterion(logits, target)

            def _initialize_alphas(self):
                k = sum(1 for i in range(self._steps) for n in range(2 + i))
                num_ops = len(PRIMITIVES)
                self.alphas_normal = torch.autograd.Variable(1e-3 * torch.randn(k, num_ops), requires_grad=True)
                self.alphas_reduce = torch.autograd.Variable(1e-3 * torch.randn(k, num_ops), requires_grad=True)
                self._arch_parameters = [self.alphas_normal, self.alphas_reduce]

            def arch_parameters(self):
                return self._arch_parameters

            def genotype(self):
                def _parse(weights):
                    gene = []
                    n = 2
                    start = 0
                    for i in range(self._steps):
                        end = start + n
                        W = weights[start:end].copy()
                        edges = sorted(range(i + 2), key=lambda x: -max(W[x][k] for k in range(len(W[x])) if k != PRIMITIVES.index('none')))[:2]
                        for j in edges:
                            k_best = None
                            for k in range(len(W[j])):
                                if k != PRIMITIVES.index('none'):
                                    if k_best is None or W[j][k] > W[j][k_best]:
                                        k_best = k
                            gene.append((PRIMITIVES[k_best], j))
                        start = end
                        n += 1
                    return gene
                gene_normal = _parse(F.softmax(self.alphas_normal, dim=-1).data.cpu().numpy())
                gene_reduce = _parse(F.softmax(self.alphas_reduce, dim=-1).data.cpu().numpy())
                return gene_normal, gene_reduce

        def _concat(xs):
            return torch.cat([x.view(-1) for x in xs])

        class Architect(object):
            def __init__(self, model, momentum, weight_decay, arch_lr, arch_wd):
                self.network_momentum = momentum
                self.network_weight_decay = weight_decay
                self.model = model
                self.optimizer = optim.Adam(self.model.arch_parameters(), lr=arch_lr, betas=(0.5, 0.999), weight_decay=arch_wd)

            def _compute_unrolled_model(self, input, target, eta, network_optimizer):
                loss = self.model._loss(input, target)
                theta = _concat(self.model.parameters()).data
                try:
                    moment = _concat(network_optimizer.state[v]['momentum_buffer'] for v in self.model.parameters()).mul_(self.network_momentum)
                except:
                    moment = torch.zeros_like(theta)
                dtheta = _concat(torch.autograd.grad(loss, self.model.parameters())).data + self.network_weight_decay * theta
                unrolled_model = self._construct_model_from_theta(theta.sub(eta, moment + dtheta))
                return unrolled_model

            def step(self, input_train, target_train, input_valid, target_valid, eta, network_optimizer, unrolled):
                self.optimizer.zero_grad()
                if unrolled:
                    self._backward_step_unrolled(input_train, target_train, input_valid, target_valid, eta, network_optimizer)
                else:
                    self._backward_step(input_valid, target_valid)
                self.optimizer.step()

            def _backward_step(self, input_valid, target_valid):
                loss = self.model._loss(input_valid, target_valid)
                loss.backward()

            def _backward_step_unrolled(self, input_train, target_train, input_valid, target_valid, eta, network_optimizer):
                unrolled_model = self._compute_unrolled_model(input_train, target_train, eta, network_optimizer)
                unrolled_loss = unrolled_model._loss(input_valid, target_valid)
                unrolled_loss.backward()
                dalpha = [v.grad for v in unrolled_model.arch_parameters()]
                vector = [v.grad.data for v in unrolled_model.parameters()]
                implicit_grads = self._hessian_vector_product(vector, input_train, target_train)
                if check_hvp:  # the exact product by double backward, for the test
                    loss = self.model._loss(input_train, target_train)
                    gw = torch.autograd.grad(loss, list(self.model.parameters()), create_graph=True)
                    self.exact_hvp = torch.autograd.grad(gw, self.model.arch_parameters(), grad_outputs=vector)
                    self.fd_hvp = self._hessian_vector_product(vector, input_train, target_train, r=1e-6)
                for g, ig in zip(dalpha, implicit_grads):
                    g.data.sub_(eta, ig.data)
                for v, g in zip(self.model.arch_parameters(), dalpha):
                    if v.grad is None:
                        v.grad = torch.autograd.Variable(g.data)
                    else:
                        v.grad.data.copy_(g.data)

            def _construct_model_from_theta(self, theta):
                model_new = self.model.new()
                model_dict = self.model.state_dict()
                params, offset = {}, 0
                for k, v in self.model.named_parameters():
                    v_length = np.prod(v.size())
                    params[k] = theta[offset: offset + v_length].view(v.size())
                    offset += v_length
                assert offset == len(theta)
                model_dict.update(params)
                model_new.load_state_dict(model_dict)
                return model_new

            def _hessian_vector_product(self, vector, input, target, r=1e-2):
                R = r / _concat(vector).norm()
                for p, v in zip(self.model.parameters(), vector):
                    p.data.add_(R, v)
                loss = self.model._loss(input, target)
                grads_p = torch.autograd.grad(loss, self.model.arch_parameters())
                for p, v in zip(self.model.parameters(), vector):
                    p.data.sub_(2 * R, v)
                loss = self.model._loss(input, target)
                grads_n = torch.autograd.grad(loss, self.model.arch_parameters())
                for p, v in zip(self.model.parameters(), vector):
                    p.data.add_(R, v)
                return [(x - y).div_(2 * R) for x, y in zip(grads_p, grads_n)]

        criterion = nn.CrossEntropyLoss()
        model = Network(2, 3, 3, criterion, steps=1, multiplier=1)
        optimizer = optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
        scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, 4, eta_min=0.001)
        architect = Architect(model, 0.9, 3e-4, 3e-4, 1e-3)
        g = torch.Generator().manual_seed(1)
        xs = torch.randn(4, 2, 3, 8, 8, generator=g)
        ys = torch.randint(0, 3, (4, 2), generator=g)
        hist = []
        for step in range(2):
            model.train()
            input, target = xs[2 * step], ys[2 * step]
            input_search, target_search = xs[2 * step + 1], ys[2 * step + 1]
            lr = scheduler.get_last_lr()[0]
            if step == 1:  # the architect's second step (the first takes no momentum: none is there yet)
                architect.step(input, target, input_search, target_search, lr, optimizer, unrolled=second_order)
            optimizer.zero_grad()
            logits = model(input)
            loss = criterion(logits, target)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.)
            optimizer.step()
            scheduler.step()
            hist.append(loss.item())
        out = {"hist": hist, "alphas": [a.detach() for a in model.arch_parameters()],
               "agrad": [a.grad for a in model.arch_parameters()], "stem": model.stem[0].weight,
               "genotype": str(model.genotype()), "lr": scheduler.get_last_lr()[0],
               "mom": optimizer.state[model.classifier.weight]['momentum_buffer']}
        if check_hvp:
            out["exact_hvp"], out["fd_hvp"] = list(architect.exact_hvp), architect.fd_hvp
        return out
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.filterwarnings("ignore::UserWarning")  # (add_(R, v), sub(eta, v): PyTorch's deprecated overloads)
def test_darts_second_order_architect():
    ours, _ = run_both(darts, check_hvp=True, rtol=1e-7, atol=1e-9)
    # the finite-difference Hessian-vector product is the exact one (double backward) to O(r²)
    for fd, exact in zip(ours["fd_hvp"], ours["exact_hvp"]):
        np.testing.assert_allclose(fd, exact, rtol=1e-6, atol=1e-8)
        assert np.abs(exact).max() > 1e-5
    np.testing.assert_allclose(ours["hist"], [1.1962435527066437, 1.131080201244406], rtol=1e-7)
    assert ours["lr"] == pytest.approx(0.001 + 0.5 * (0.025 - 0.001) * (1 + math.cos(math.pi * 2 / 4)))
    assert all(np.abs(g).max() > 0 for g in ours["agrad"])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_darts_first_order_architect():
    ours, _ = run_both(darts, second_order=False, rtol=1e-7, atol=1e-9)
    assert ours["genotype"].startswith("([(")


# ----------------------------------------------------------------------------------------------
# Deep equilibrium models: Anderson acceleration, a backward hook solving the adjoint fixed point
# ----------------------------------------------------------------------------------------------


def anderson(torch, f, x0, m=5, lam=1e-4, threshold=50, eps=1e-8, stop_mode='rel', beta=1.0, **kwargs):
    """ Anderson acceleration for fixed point iteration (the DEQ repository's, with its bookkeeping). """
    bsz, d, L = x0.shape
    alternative_mode = 'rel' if stop_mode == 'abs' else 'abs'
    X = torch.zeros(bsz, m, d * L, dtype=x0.dtype, device=x0.device)
    F = torch.zeros(bsz, m, d * L, dtype=x0.dtype, device=x0.device)
    X[:, 0], F[:, 0] = x0.reshape(bsz, -1), f(x0).reshape(bsz, -1)
    X[:, 1], F[:, 1] = F[:, 0], f(F[:, 0].reshape_as(x0)).reshape(bsz, -1)
    H = torch.zeros(bsz, m + 1, m + 1, dtype=x0.dtype, device=x0.device)
    H[:, 0, 1:] = H[:, 1:, 0] = 1
    y = torch.zeros(bsz, m + 1, 1, dtype=x0.dtype, device=x0.device)
    y[:, 0] = 1
    trace_dict = {'abs': [], 'rel': []}
    lowest_dict = {'abs': 1e8, 'rel': 1e8}
    lowest_step_dict = {'abs': 0, 'rel': 0}
    lowest_xest = x0
    for k in range(2, threshold):
        n = min(k, m)
        G = F[:, :n] - X[:, :n]
        H[:, 1:n + 1, 1:n + 1] = torch.bmm(G, G.transpose(1, 2)) + lam * torch.eye(n, dtype=x0.dtype, device=x0.device)[None]
        alpha = torch.linalg.solve(H[:, :n + 1, :n + 1], y[:, :n + 1])[:, 1:n + 1, 0]
        X[:, k % m] = beta * (alpha[:, None] @ F[:, :n])[:, 0] + (1 - beta) * (alpha[:, None] @ X[:, :n])[:, 0]
        F[:, k % m] = f(X[:, k % m].reshape_as(x0)).reshape(bsz, -1)
        gx = (F[:, k % m] - X[:, k % m]).view_as(x0)
        abs_diff = gx.norm().item()
        rel_diff = abs_diff / (1e-5 + F[:, k % m].norm().item())
        diff_dict = {'abs': abs_diff, 'rel': rel_diff}
        trace_dict['abs'].append(abs_diff)
        trace_dict['rel'].append(rel_diff)
        for mode in ['rel', 'abs']:
            if diff_dict[mode] < lowest_dict[mode]:
                if mode == stop_mode:
                    lowest_xest, lowest_gx = X[:, k % m].view_as(x0).clone().detach(), gx.clone().detach()
                lowest_dict[mode] = diff_dict[mode]
                lowest_step_dict[mode] = k
        if trace_dict[stop_mode][-1] < eps:
            for _ in range(threshold - 1 - k):
                trace_dict[stop_mode].append(lowest_dict[stop_mode])
                trace_dict[alternative_mode].append(lowest_dict[alternative_mode])
            break
    out = {"result": lowest_xest, "lowest": lowest_dict[stop_mode], "nstep": lowest_step_dict[stop_mode],
           "prot_break": False, "abs_trace": trace_dict['abs'], "rel_trace": trace_dict['rel'], "eps": eps, "threshold": threshold}
    X = F = None
    return out


def deq_conv(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    autograd = torch.autograd
    torch.manual_seed(0)

    class ResNetLayer(nn.Module):
        def __init__(self, n_channels, n_inner_channels, kernel_size=3, num_groups=2):
            super().__init__()
            self.conv1 = nn.Conv2d(n_channels, n_inner_channels, kernel_size, padding=kernel_size // 2, bias=False)
            self.conv2 = nn.Conv2d(n_inner_channels, n_channels, kernel_size, padding=kernel_size // 2, bias=False)
            self.norm1 = nn.GroupNorm(num_groups, n_inner_channels)
            self.norm2 = nn.GroupNorm(num_groups, n_channels)
            self.norm3 = nn.GroupNorm(num_groups, n_channels)
            self.conv1.weight.data.normal_(0, 0.01)
            self.conv2.weight.data.normal_(0, 0.01)

        def forward(self, z, x):
            y = self.norm1(F.relu(self.conv1(z)))
            return self.norm3(F.relu(z + self.norm2(x + self.conv2(y))))

    class DEQFixedPoint(nn.Module):
        def __init__(self, f, solver, **kwargs):
            super().__init__()
            self.f = f
            self.solver = solver
            self.kwargs = kwargs
            self.hook = None

        def forward(self, x):
            with torch.no_grad():
                out = self.solver(lambda z: self.f(z.view_as(x), x).flatten(1).unsqueeze(-1),
                                  torch.zeros_like(x).flatten(1).unsqueeze(-1), **self.kwargs)
                z = out['result'].view_as(x)
                self.forward_res = out['lowest']
            z = self.f(z, x)
            z0 = z.clone().detach().requires_grad_()
            f0 = self.f(z0, x)
            self.jac_loss = torch.zeros(())
            if self.training:  # Hutchinson's estimate of the Jacobian's Frobenius norm (on its own copy of f)
                zj = z.clone().detach().requires_grad_()
                fj = self.f(zj, x)
                v = torch.randn_like(fj)
                vJ = autograd.grad(fj, zj, v, retain_graph=True, create_graph=True)[0]
                self.jac_loss = vJ.norm() ** 2 / v.numel()

            def backward_hook(grad):
                if self.hook is not None:
                    self.hook.remove()  # (the DEQ repository's guard: the hook runs once however often it is reached)
                g = self.solver(lambda y: autograd.grad(f0, z0, y.view_as(grad), retain_graph=True)[0].flatten(1).unsqueeze(-1) + grad.flatten(1).unsqueeze(-1),
                                torch.zeros_like(grad).flatten(1).unsqueeze(-1), **self.kwargs)
                self.backward_res = g['lowest']
                return g['result'].view_as(grad)
            if z.requires_grad:
                self.hook = z.register_hook(backward_hook)
            return z

    chan = 4
    f = ResNetLayer(chan, 8, kernel_size=3)
    model = nn.Sequential(nn.Conv2d(1, chan, kernel_size=3, bias=True, padding=1), nn.BatchNorm2d(chan),
                          DEQFixedPoint(f, lambda f_, x0, **kw: anderson(torch, f_, x0, **kw), threshold=30, eps=1e-6),
                          nn.BatchNorm2d(chan), nn.AvgPool2d(2, 2), nn.Flatten(), nn.Linear(chan * 3 * 3, 5))
    model = model.double()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    X = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 5, (4,))
    hist = []
    for it in range(2):
        opt.zero_grad()
        yp = model(X)
        loss = nn.CrossEntropyLoss()(yp, y) + 0.5 * model[2].jac_loss
        loss.backward()
        opt.step()
        hist.append((loss.item(), model[2].forward_res, model[2].backward_res))
    model.eval()
    with torch.no_grad():
        ev = model(X)
    return {"hist": hist, "ev": ev, "grads": [p.grad for p in model.parameters()]}


def test_deq_convolutional_with_anderson_and_self_removing_hook():
    ours, _ = run_both(deq_conv, rtol=1e-6, atol=1e-8)
    assert all(h[1] < 1e-4 and h[2] < 1e-2 for h in ours["hist"])  # both fixed points found (relative residuals)
    np.testing.assert_allclose([h[0] for h in ours["hist"]], [1.8355967717546011, 1.771098096771409], rtol=1e-7)


def deq_function(m):
    torch, nn, F = m.torch, m.nn, m.F
    autograd = torch.autograd
    fwAD = importlib.import_module(torch.__name__ + ".autograd.forward_ad")
    func = importlib.import_module(torch.__name__ + ".func")
    torch.manual_seed(0)

    def fixed_point(f, z0, iters=60):
        z = z0
        for _ in range(iters):
            z = f(z)
        return z

    class DEQFunc(autograd.Function):
        @staticmethod
        def forward(ctx, x, W, U, b):
            with torch.no_grad():
                z = fixed_point(lambda z: torch.tanh(z @ W.t() + x @ U.t() + b), torch.zeros(x.shape[0], W.shape[0], dtype=x.dtype))
            ctx.save_for_backward(z, x, W, U, b)
            return z

        @staticmethod
        def backward(ctx, grad):
            z, x, W, U, b = ctx.saved_tensors
            with torch.enable_grad():
                z = z.detach().requires_grad_()
                W_ = W.detach().requires_grad_(); U_ = U.detach().requires_grad_(); b_ = b.detach().requires_grad_()
                x_ = x.detach().requires_grad_()
                fz = torch.tanh(z @ W_.t() + x_ @ U_.t() + b_)
                g = grad
                for _ in range(60):
                    g = autograd.grad(fz, z, g, retain_graph=True)[0] + grad
                gx, gW, gU, gb = autograd.grad(fz, (x_, W_, U_, b_), g)
            return gx, gW, gU, gb

    W = (0.3 * torch.randn(6, 6, dtype=torch.float64)).requires_grad_()
    U = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    z = DEQFunc.apply(x, W, U, b)
    loss = z.pow(2).sum()
    loss.backward()
    # the same gradient through 80 unrolled iterations
    W2 = W.detach().clone().requires_grad_()
    zu = torch.zeros(4, 6, dtype=torch.float64)
    for _ in range(80):
        zu = torch.tanh(zu @ W2.t() + x.detach() @ U.detach().t() + b.detach())
    zu.pow(2).sum().backward()
    # Jacobian-vector products of f at the fixed point: dual numbers, torch.func, batched grads, HVPs
    z0 = z.detach()
    v = torch.randn_like(z0)
    with fwAD.dual_level():
        dz = fwAD.make_dual(z0, v)
        out = torch.tanh(dz @ W.detach().t() + x.detach() @ U.detach().t())
        jvp = fwAD.unpack_dual(out).tangent
    fn = lambda zz: torch.tanh(zz @ W.detach().t() + x.detach() @ U.detach().t())
    _, jvp2 = func.jvp(fn, (z0,), (v,))
    _, vjp_fn = func.vjp(fn, z0)
    (vjp2,) = vjp_fn(v)
    zz = z0.clone().requires_grad_()
    o = fn(zz)
    eye = torch.eye(6, dtype=torch.float64).unsqueeze(1).expand(6, 4, 6)
    jac_rows = autograd.grad(o, zz, eye, is_grads_batched=True)[0]
    hv = autograd.functional.hvp(lambda t: fn(t).pow(2).sum(), z0, v)[1]
    vh = autograd.functional.vhp(lambda t: fn(t).pow(2).sum(), z0, v)[1]
    J = autograd.functional.jacobian(lambda t: fn(t).sum(0), z0, vectorize=True)
    return {"z": z, "grads": [x.grad, W.grad, U.grad, b.grad], "unrolled": W2.grad, "jvp": jvp, "jvp2": jvp2,
            "vjp": vjp2, "jac_rows": jac_rows, "hvp": hv, "vhp": vh, "J": J, "v": v}


def test_deq_as_a_function_with_implicit_backward():
    ours, _ = run_both(deq_function, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["grads"][1], ours["unrolled"], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["jvp"], ours["jvp2"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours["hvp"], ours["vhp"], rtol=1e-10, atol=1e-12)  # the Hessian is symmetric
    # row j of the batched grads is e_j's vector-Jacobian product: the VJP with v is their v-weighted sum
    vjp = np.einsum("jbk,bj->bk", ours["jac_rows"], ours["v"])
    np.testing.assert_allclose(vjp, ours["vjp"], rtol=1e-10, atol=1e-12)


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


# ----------------------------------------------------------------------------------------------
# Hypernetworks: generated convolution kernels, per-example heads, a parametrization
# ----------------------------------------------------------------------------------------------


def hypernet(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class HyperNet(nn.Module):
        def __init__(self, z_dim=8, in_c=3, out_c=4, k=3):
            super().__init__()
            self.in_c, self.out_c, self.k = in_c, out_c, k
            self.w1 = nn.Parameter(torch.fmod(torch.randn(z_dim, out_c * k * k), 2))
            self.b1 = nn.Parameter(torch.fmod(torch.randn(out_c * k * k), 2))
            self.w2 = nn.Parameter(torch.fmod(torch.randn(z_dim, in_c * z_dim), 2))
            self.b2 = nn.Parameter(torch.fmod(torch.randn(in_c * z_dim), 2))
            self.z_dim = z_dim

        def forward(self, z):
            h_in = torch.matmul(z, self.w2) + self.b2
            h_in = h_in.view(self.in_c, self.z_dim)
            h_final = torch.matmul(h_in, self.w1) + self.b1
            kernel = h_final.view(self.out_c, self.in_c, self.k, self.k)
            return kernel

    class Target(nn.Module):
        def __init__(self):
            super().__init__()
            self.hyper = HyperNet()
            self.z = nn.Parameter(torch.randn(8))
            self.emb = nn.Embedding(5, 6)
            self.head_gen = nn.Linear(6, 4 * 3 + 3)

        def forward(self, x, task):
            w = self.hyper(self.z)
            h = F.relu(F.conv2d(x, w, padding=1, stride=1))
            h = F.adaptive_avg_pool2d(h, 1).flatten(1)
            p = self.head_gen(self.emb(task))  # a head per example
            W = p[:, :12].view(-1, 3, 4); bias = p[:, 12:]
            out = torch.bmm(W, h.unsqueeze(-1)).squeeze(-1) + bias
            # per-example kernels by one grouped convolution
            B = x.shape[0]
            pw = torch.tanh(p[:, :9]).view(B, 1, 1, 3, 3).expand(B, 3, 1, 3, 3).reshape(B * 3, 1, 3, 3)
            y2 = F.conv2d(x.view(1, B * 3, *x.shape[2:]), pw, padding=1, groups=B * 3).view(B, 3, *x.shape[2:])
            self.per_example = (x, pw, y2)
            out = out + y2.mean((2, 3))
            Wl = self.hyper(self.z * 0.5).flatten(1)[:, :5]
            out2 = F.linear(h, Wl.t(), None)
            return out, out2

    model = Target().double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    t = torch.tensor([0, 3, 4])
    y = torch.tensor([1, 0, 2])
    hist = []
    for s in range(3):
        opt.zero_grad()
        out, out2 = model(x, t)
        loss = F.cross_entropy(out, y) + out2.pow(2).mean()
        loss.backward()
        opt.step()
        hist.append(loss.item())
    x, pw, y2 = model.per_example
    looped = torch.stack([F.conv2d(x[i:i + 1], pw[3 * i:3 * i + 3], padding=1, groups=3)[0] for i in range(3)])
    return {"hist": hist, "grads": [p.grad for p in model.parameters()], "grouped": y2, "looped": looped}


def test_hypernetwork_generated_weights():
    ours, _ = run_both(hypernet, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(ours["grouped"], ours["looped"], rtol=1e-12, atol=1e-12)
    assert ours["hist"][2] < ours["hist"][0]


def parametrize_hyper(m):
    torch, nn, F = m.torch, m.nn, m.F
    P = importlib.import_module(nn.__name__ + ".utils.parametrize")
    torch.manual_seed(0)

    class HyperWeight(nn.Module):
        def __init__(self, shape, zdim=4):
            super().__init__()
            self.z = nn.Parameter(torch.randn(zdim))
            self.gen = nn.Linear(zdim, int(np.prod(shape)))
            self.shape = shape

        def forward(self, W):
            return W + 0.1 * self.gen(self.z).view(self.shape)

    class Sym(nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).transpose(-1, -2)

    lin = nn.Linear(5, 5).double()
    P.register_parametrization(lin, "weight", HyperWeight((5, 5)).double())
    P.register_parametrization(lin, "weight", Sym())
    x = torch.randn(3, 5, dtype=torch.float64)
    y = lin(x)
    y.pow(2).sum().backward()
    names = sorted(n for n, _ in lin.named_parameters())
    grads = [p.grad for _, p in sorted(lin.named_parameters())]
    with P.cached():
        y2 = lin(x) + lin(x)
    sd = sorted(lin.state_dict().keys())
    w = lin.weight
    P.remove_parametrizations(lin, "weight", leave_parametrized=True)
    return {"y": y, "names": names, "sd": sd, "y2": y2, "w": w, "w_after": lin.weight, "grads": grads,
            "still": P.is_parametrized(lin)}


def test_hypernetwork_as_a_parametrization():
    ours, _ = run_both(parametrize_hyper, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(ours["w"], ours["w"].T)
    np.testing.assert_array_equal(ours["w"], ours["w_after"])
    np.testing.assert_allclose(ours["y2"], 2 * ours["y"], rtol=1e-14)
    assert ours["names"] == ["bias", "parametrizations.weight.0.gen.bias", "parametrizations.weight.0.gen.weight",
                             "parametrizations.weight.0.z", "parametrizations.weight.original"]
    assert not ours["still"]


# ----------------------------------------------------------------------------------------------
# OptNet-style layers: a QP by projected gradient, a KKT system, Cholesky and LU, a barrier method
# ----------------------------------------------------------------------------------------------


def optnet(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    dt = torch.float64

    class QPLayer(nn.Module):
        """min 1/2 z'Qz + p'z  s.t. z >= 0, by projected gradient; Q = LL' + 0.1 I."""
        def __init__(self, n, steps=300):
            super().__init__()
            self.L = nn.Parameter(torch.tril(torch.rand(n, n, dtype=dt)))
            self.steps = steps

        def forward(self, p):
            Q = self.L.mm(self.L.t()) + 0.1 * torch.eye(self.L.size(0), dtype=dt)
            step = 1.0 / torch.linalg.matrix_norm(Q, ord=2)
            z = torch.zeros_like(p)
            for _ in range(self.steps):
                z = torch.clamp(z - step * (z @ Q + p), min=0)
            self.Q = Q
            return z

    class EqQP(nn.Module):
        """min 1/2 z'Qz + p'z  s.t. Az = b: the KKT system."""
        def __init__(self, n, neq):
            super().__init__()
            self.M = nn.Parameter(torch.randn(n, n, dtype=dt) * 0.3)
            self.A = nn.Parameter(torch.randn(neq, n, dtype=dt))
            self.b = nn.Parameter(torch.randn(neq, dtype=dt))

        def forward(self, p):
            n = self.M.shape[0]; neq = self.A.shape[0]
            Q = self.M @ self.M.T + torch.eye(n, dtype=dt)
            K = torch.cat([torch.cat([Q, self.A.t()], 1),
                           torch.cat([self.A, torch.zeros(neq, neq, dtype=dt)], 1)], 0)
            rhs = torch.cat([-p, self.b.unsqueeze(0).expand(p.size(0), neq)], 1)
            sol = torch.linalg.solve(K.unsqueeze(0).expand(p.size(0), -1, -1), rhs.unsqueeze(-1)).squeeze(-1)
            z, nu = sol[:, :n], sol[:, n:]
            Lc = torch.linalg.cholesky(Q)
            z_unc = torch.cholesky_solve(-p.t(), Lc).t()
            LU, piv = torch.linalg.lu_factor(K)
            sol2 = torch.linalg.lu_solve(LU, piv, rhs.t()).t()
            self.Qe = Q
            return z, nu, z_unc, sol2

    n = 5
    qp = QPLayer(n)
    eq = EqQP(n, 2)
    p = torch.randn(3, n, dtype=dt, requires_grad=True)
    z = qp(p)
    z2, nu, zu, s2 = eq(p)
    loss = z.pow(2).sum() + (z2 * torch.arange(n, dtype=dt)).sum() + nu.sum() + zu.sin().sum() + s2.cos().sum()
    loss.backward()
    return {"z": z, "z2": z2, "nu": nu, "zu": zu, "s2": s2, "grads": [p.grad, qp.L.grad, eq.M.grad, eq.A.grad, eq.b.grad],
            "Q": qp.Q, "Qe": eq.Qe, "p": p, "A": eq.A, "b": eq.b}


def test_optnet_qp_and_kkt_layers():
    ours, _ = run_both(optnet, rtol=1e-8, atol=1e-10)
    z, Q, p = ours["z"], ours["Q"], ours["p"]
    # the QP's KKT conditions: z >= 0, the gradient Qz + p >= 0 and zero wherever z > 0
    grad = z @ Q + p
    assert (z >= 0).all() and (grad > -1e-8).all() and np.abs(grad * z).max() < 1e-8
    Qe, A, b = ours["Qe"], ours["A"], ours["b"]
    np.testing.assert_allclose(ours["z2"] @ A.T, np.broadcast_to(b, (3, 2)), atol=1e-12)
    np.testing.assert_allclose(ours["z2"] @ Qe + p + ours["nu"] @ A, 0, atol=1e-12)
    np.testing.assert_allclose(ours["zu"], np.linalg.solve(Qe, -p.T).T, rtol=1e-12)
    np.testing.assert_allclose(ours["s2"], np.concatenate([ours["z2"], ours["nu"]], 1), rtol=1e-10, atol=1e-12)


def barrier_qp(m):
    torch = m.torch
    torch.manual_seed(0)
    n = 4
    Q = torch.eye(n, dtype=torch.float64) * 2
    q = torch.randn(n, dtype=torch.float64, requires_grad=True)
    G = torch.randn(6, n, dtype=torch.float64)
    h = torch.ones(6, dtype=torch.float64, requires_grad=True)
    z = torch.zeros(n, dtype=torch.float64)
    t = 1.0
    for outer in range(4):
        for _ in range(8):
            s = h - G @ z
            grad = t * (Q @ z + q) + G.t() @ (1 / s)
            H = t * Q + G.t() @ torch.diag(1 / s ** 2) @ G
            dz = torch.linalg.solve(H, grad)
            z = z - 0.5 * dz
        t *= 4
    loss = (z ** 2).sum()
    loss.backward()
    L = torch.linalg.cholesky(H.detach())
    tri = torch.linalg.solve_triangular(L, torch.eye(n, dtype=torch.float64), upper=False)
    Ainv, info = torch.linalg.inv_ex(H.detach())
    ev, V = torch.linalg.eigh(H.detach())
    return {"z": z, "q_grad": q.grad, "h_grad": h.grad, "tri": tri, "Ainv": Ainv, "info": info, "ev": ev,
            "H": H, "L": L, "recon": V @ torch.diag(ev) @ V.t()}  # (V's signs are LAPACK's: MKL's and OpenBLAS's differ)


def test_log_barrier_newton_unrolled():
    ours, _ = run_both(barrier_qp, rtol=1e-7, atol=1e-9)
    H = ours["H"]
    np.testing.assert_allclose(ours["Ainv"], np.linalg.inv(H), rtol=1e-10)
    np.testing.assert_allclose(ours["recon"], H, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours["tri"] @ ours["L"], np.eye(4), atol=1e-12)
    assert ours["info"] == 0


def sparsemax_prog(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class SparsemaxFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input, dim=-1):
            ctx.dim = dim
            max_val, _ = input.max(dim=dim, keepdim=True)
            input = input - max_val
            tau, supp_size = SparsemaxFunction._threshold_and_support(input, dim=dim)
            output = torch.clamp(input - tau, min=0)
            ctx.save_for_backward(supp_size, output)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            supp_size, output = ctx.saved_tensors
            dim = ctx.dim
            grad_input = grad_output.clone()
            grad_input[output == 0] = 0
            v_hat = grad_input.sum(dim=dim) / supp_size.to(output.dtype).squeeze()
            v_hat = v_hat.unsqueeze(dim)
            grad_input = torch.where(output != 0, grad_input - v_hat, grad_input)
            return grad_input, None

        @staticmethod
        def _threshold_and_support(input, dim=-1):
            input_srt, _ = torch.sort(input, descending=True, dim=dim)
            input_cumsum = input_srt.cumsum(dim) - 1
            d = input.size(dim)
            rhos = torch.arange(1, d + 1, device=input.device, dtype=input.dtype)
            view = [1] * input.dim(); view[0] = -1
            rhos = rhos.view(view).transpose(0, dim)
            support = rhos * input_srt > input_cumsum
            support_size = support.sum(dim=dim).unsqueeze(dim)
            tau = input_cumsum.gather(dim, support_size - 1)
            tau /= support_size.to(input.dtype)
            return tau, support_size

    x = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    y = SparsemaxFunction.apply(x, -1)
    w = torch.randn(4, 7, dtype=torch.float64)
    (y * w).sum().backward()
    ok = torch.autograd.gradcheck(lambda t: SparsemaxFunction.apply(t, 1), (x.detach().clone().requires_grad_(),))
    return {"y": y, "grad": x.grad, "ok": ok, "x": x, "w": w}


def test_sparsemax_custom_function():
    ours, _ = run_both(sparsemax_prog, rtol=1e-10, atol=1e-12)
    y, x, w = ours["y"], ours["x"], ours["w"]
    assert ours["ok"] and (y >= 0).all() and (y == 0).any()
    np.testing.assert_allclose(y.sum(1), 1, rtol=1e-12)
    # sparsemax(x) = max(x - τ, 0) with τ from the sorted prefix sums (Martins & Astudillo), by NumPy
    for row, out, wr, g in zip(x, y, w, ours["grad"]):
        srt = np.sort(row)[::-1]
        k = np.arange(1, 8)
        support = k * srt > np.cumsum(srt) - 1
        kz = k[support][-1]
        tau = (np.cumsum(srt)[kz - 1] - 1) / kz
        np.testing.assert_allclose(out, np.maximum(row - tau, 0), atol=1e-12)
        s = out > 0
        np.testing.assert_allclose(g, np.where(s, wr - wr[s].mean(), 0), atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Implicit layers as custom Functions, optimal transport, neural implicit surfaces, NAS relaxations,
# learning to reweight, the implicit function theorem with SciPy
# ----------------------------------------------------------------------------------------------


def implicit_fn(m):
    torch = m.torch
    torch.manual_seed(0)
    class ImplicitSolve(torch.autograd.Function):
        """z* = argmin ridge: (X'X + lam I) z = X'y; backward via adjoint solve."""
        @staticmethod
        def forward(ctx, X, y, lam):
            A = X.t() @ X + lam * torch.eye(X.shape[1], dtype=X.dtype)
            z = torch.linalg.solve(A, X.t() @ y)
            ctx.save_for_backward(X, y, lam, A, z)
            return z
        @staticmethod
        def backward(ctx, gz):
            X, y, lam, A, z = ctx.saved_tensors
            v = torch.linalg.solve(A.t(), gz)
            r = y - X @ z
            gX = torch.outer(r, v) - X @ torch.outer(v, z) if ctx.needs_input_grad[0] else None
            gy = X @ v if ctx.needs_input_grad[1] else None
            glam = -(v * z).sum() if ctx.needs_input_grad[2] else None
            return gX, gy, glam
    X = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(8, dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    z = ImplicitSolve.apply(X, y, lam)
    (z ** 3).sum().backward()
    g1 = (X.grad.clone(), y.grad.clone(), lam.grad.clone())
    for t in (X, y, lam):
        t.grad = None
    A = X.t() @ X + lam * torch.eye(3, dtype=torch.float64)
    z2 = torch.linalg.solve(A, X.t() @ y)
    (z2 ** 3).sum().backward()
    ok = torch.autograd.gradcheck(ImplicitSolve.apply, (X, y, lam))
    ok2 = torch.autograd.gradgradcheck(lambda X_, l_: torch.linalg.solve(X_.t() @ X_ + l_ * torch.eye(3, dtype=torch.float64), X_.t() @ y.detach()), (X, lam))
    return {"z": z, "custom": g1, "through_solve": (X.grad, y.grad, lam.grad), "ok": ok, "ok2": ok2}


def test_implicit_ridge_layer_custom_function():
    ours, _ = run_both(implicit_fn, rtol=1e-8, atol=1e-10)
    assert ours["ok"] and ours["ok2"]
    for custom, through_solve in zip(ours["custom"], ours["through_solve"]):  # the adjoint solve is the IFT's gradient
        np.testing.assert_allclose(custom, through_solve, rtol=1e-10, atol=1e-12)


def fn_ctx(m):
    torch = m.torch
    autograd = torch.autograd
    from_fn = importlib.import_module(torch.__name__ + ".autograd.function")
    once_differentiable = from_fn.once_differentiable
    class SolveWithInfo(autograd.Function):
        @staticmethod
        def forward(ctx, A, b):
            x = torch.linalg.solve(A, b)
            iters = torch.tensor(3)
            ctx.mark_non_differentiable(iters)
            ctx.set_materialize_grads(False)
            ctx.save_for_backward(A, x)
            return x, iters
        @staticmethod
        @once_differentiable
        def backward(ctx, gx, giters):
            A, x = ctx.saved_tensors
            if gx is None:
                return None, None
            gb = torch.linalg.solve(A.transpose(-1, -2), gx)
            gA = -gb.unsqueeze(-1) * x.unsqueeze(-2) if x.dim() == A.dim() - 1 else -gb @ x.transpose(-1, -2)
            return gA, gb
    torch.manual_seed(0)
    A = (torch.randn(2, 4, 4, dtype=torch.float64) + 4 * torch.eye(4, dtype=torch.float64)).requires_grad_()
    b = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    x, it = SolveWithInfo.apply(A, b)
    (x.sin().sum()).backward()
    res = [x, it, it.requires_grad, A.grad.clone(), b.grad.clone()]
    # create_graph through once_differentiable: error when differentiating again
    A.grad = None; b.grad = None
    x, it = SolveWithInfo.apply(A, b)
    g = autograd.grad(x.sum(), A, create_graph=True)[0]
    res.append(g.requires_grad)
    try:
        g.sum().backward()
        res.append("no error")
    except RuntimeError as e:
        res.append("error")
    # post-accumulate-grad hook (optimizer-in-backward)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    seen = []
    def hook(p):
        seen.append(p.grad.clone())
        with torch.no_grad():
            p.add_(p.grad, alpha=-0.1)
        p.grad = None
    w.register_post_accumulate_grad_hook(hook)
    (w ** 2).sum().backward()
    res += [w.detach().clone(), seen, w.grad]
    return res


def test_custom_function_context_and_post_accumulate_hook():
    ours, _ = run_both(fn_ctx, rtol=1e-8, atol=1e-10)
    x, it, it_requires_grad, gA, gb = ours[:5]
    assert it == 3 and it_requires_grad is False
    assert ours[5] is False and ours[6] == "error"  # once_differentiable's gradient has no graph (its inputs had none)
    w, seen, grad_after = ours[7:]
    np.testing.assert_allclose(w, 0.8 * (seen[0] / 2), rtol=1e-14)  # w - 0.1 * 2w, from the hook's own step
    assert grad_after is None


def sinkhorn(m):
    torch = m.torch
    torch.manual_seed(0)
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 2, dtype=torch.float64)
    a = torch.full((6,), 1 / 6, dtype=torch.float64); b = torch.full((5,), 1 / 5, dtype=torch.float64)

    def transport(x, eps=0.1, iters=50):
        C = ((x[:, None] - y[None]) ** 2).sum(-1)
        f = torch.zeros(6, dtype=torch.float64); g = torch.zeros(5, dtype=torch.float64)
        for _ in range(iters):
            f = -eps * torch.logsumexp((g[None, :] - C) / eps + b.log()[None, :], dim=1)
            g = -eps * torch.logsumexp((f[:, None] - C) / eps + a.log()[:, None], dim=0)
        Pm = torch.exp((f[:, None] + g[None, :] - C) / eps) * a[:, None] * b[None, :]
        return (Pm * C).sum(), Pm

    cost, Pm = transport(x)
    gx = torch.autograd.grad(cost, x, create_graph=True)[0]
    gg = torch.autograd.grad(gx.pow(2).sum(), x)[0]
    with torch.no_grad():
        e = torch.zeros(6, 2, dtype=torch.float64); e[2, 1] = 1e-6
        fd = (transport(x + e)[0] - transport(x - e)[0]) / 2e-6
    return {"cost": cost, "marginal": Pm.sum(0), "gx": gx, "gg": gg, "P": Pm, "fd": fd}


def test_sinkhorn_transport_with_gradient_penalty():
    ours, _ = run_both(sinkhorn, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["marginal"], np.full(5, 0.2), rtol=1e-12)  # the last half-step fits b exactly
    np.testing.assert_allclose(ours["P"].sum(1), np.full(6, 1 / 6), atol=5e-3)
    np.testing.assert_allclose(ours["gx"][2, 1], ours["fd"], rtol=1e-6)  # the unrolled iterations' gradient


def igr(m, wn='old'):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    class ImplicitNet(nn.Module):
        def __init__(self, d_in, dims, skip_in=(), geometric_init=True, radius_init=1, beta=100):
            super().__init__()
            dims = [d_in] + dims + [1]
            self.num_layers = len(dims)
            self.skip_in = skip_in
            for layer in range(0, self.num_layers - 1):
                if layer + 1 in skip_in:
                    out_dim = dims[layer + 1] - d_in
                else:
                    out_dim = dims[layer + 1]
                lin = nn.Linear(dims[layer], out_dim)
                if geometric_init:
                    if layer == self.num_layers - 2:
                        torch.nn.init.normal_(lin.weight, mean=np.sqrt(np.pi) / np.sqrt(dims[layer]), std=0.00001)
                        torch.nn.init.constant_(lin.bias, -radius_init)
                    else:
                        torch.nn.init.constant_(lin.bias, 0.0)
                        torch.nn.init.normal_(lin.weight, 0.0, np.sqrt(2) / np.sqrt(out_dim))
                if wn == 'old':
                    lin = nn.utils.weight_norm(lin)
                elif wn == 'new':
                    lin = nn.utils.parametrizations.weight_norm(lin)
                setattr(self, "lin" + str(layer), lin)
            if beta > 0:
                self.activation = nn.Softplus(beta=beta)
            else:
                self.activation = nn.ReLU()
        def forward(self, input):
            x = input
            for layer in range(0, self.num_layers - 1):
                lin = getattr(self, "lin" + str(layer))
                if layer in self.skip_in:
                    x = torch.cat([x, input], -1) / np.sqrt(2)
                x = lin(x)
                if layer < self.num_layers - 2:
                    x = self.activation(x)
            return x
    def gradient(inputs, outputs):
        d_points = torch.ones_like(outputs, requires_grad=False, device=outputs.device)
        points_grad = torch.autograd.grad(outputs=outputs, inputs=inputs, grad_outputs=d_points,
                                          create_graph=True, retain_graph=True, only_inputs=True)[0][:, -3:]
        return points_grad
    net = ImplicitNet(3, [16, 16, 16], skip_in=(2,)).double()
    opt = torch.optim.Adam([{"params": net.parameters(), "lr": 1e-3}])
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
    g = torch.Generator().manual_seed(0)
    pts = F.normalize(torch.randn(32, 3, generator=g, dtype=torch.float64), dim=-1)
    normals = pts.clone()
    hist = []
    for it in range(3):
        mnfld_pnts = pts.clone().requires_grad_()
        sigma = torch.full((32, 1), 0.1, dtype=torch.float64)
        sample_local = mnfld_pnts + torch.randn(32, 3, generator=g, dtype=torch.float64) * sigma
        sample_global = torch.rand(8, 3, generator=g, dtype=torch.float64) * 2.4 - 1.2
        nonmnfld_pnts = torch.cat([sample_local, sample_global], dim=0)
        mnfld_pred = net(mnfld_pnts)
        nonmnfld_pred = net(nonmnfld_pnts)
        mnfld_grad = gradient(mnfld_pnts, mnfld_pred)
        nonmnfld_grad = gradient(nonmnfld_pnts, nonmnfld_pred)
        mnfld_loss = (mnfld_pred.abs()).mean()
        grad_loss = ((nonmnfld_grad.norm(2, dim=-1) - 1) ** 2).mean()
        normals_loss = ((mnfld_grad - normals).abs()).norm(2, dim=1).mean()
        loss = mnfld_loss + 0.1 * grad_loss + 1.0 * normals_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        hist.append([mnfld_loss.item(), grad_loss.item(), normals_loss.item()])
    probe = torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64, requires_grad=True)
    sdf_grad = gradient(probe, net(probe))
    with torch.no_grad():
        fd = torch.stack([(net(probe + 1e-6 * e) - net(probe - 1e-6 * e)).squeeze() / 2e-6 for e in torch.eye(3, dtype=torch.float64)])
    return {"hist": hist, "state": dict(net.state_dict()), "grads": [p.grad for p in net.parameters()],
            "probe_grad": sdf_grad, "fd": fd}


@pytest.mark.filterwarnings("ignore::FutureWarning")  # (nn.utils.weight_norm's deprecation)
@pytest.mark.parametrize("wn", ["old", "new", None])
def test_igr_sdf_with_eikonal_loss(wn):
    # (rtol 1e-6: weight_norm's g comes from a float32 norm before .double(), where PyTorch's kernel fuses the
    # multiply-adds of a 3-element row and NumPy does not: one unit in the last place of g, 1e-6 after training)
    ours, _ = run_both(igr, wn=wn, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours["probe_grad"][0], ours["fd"], rtol=1e-6, atol=1e-8)
    assert all(np.isfinite(h).all() for h in ours["hist"])


def siren(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    class SineLayer(nn.Module):
        def __init__(self, in_f, out_f, bias=True, is_first=False, omega_0=30):
            super().__init__()
            self.omega_0 = omega_0; self.is_first = is_first; self.in_features = in_f
            self.linear = nn.Linear(in_f, out_f, bias=bias)
            with torch.no_grad():
                if self.is_first:
                    self.linear.weight.uniform_(-1 / self.in_features, 1 / self.in_features)
                else:
                    self.linear.weight.uniform_(-np.sqrt(6 / self.in_features) / self.omega_0, np.sqrt(6 / self.in_features) / self.omega_0)
        def forward(self, input):
            return torch.sin(self.omega_0 * self.linear(input))
    class Siren(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(SineLayer(2, 16, is_first=True), SineLayer(16, 16), nn.Linear(16, 1))
        def forward(self, coords):
            coords = coords.clone().detach().requires_grad_(True)
            output = self.net(coords)
            return output, coords
    def gradient(y, x, grad_outputs=None):
        if grad_outputs is None:
            grad_outputs = torch.ones_like(y)
        return torch.autograd.grad(y, [x], grad_outputs=grad_outputs, create_graph=True)[0]
    def divergence(y, x):
        div = 0.
        for i in range(y.shape[-1]):
            div += torch.autograd.grad(y[..., i], x, torch.ones_like(y[..., i]), create_graph=True)[0][..., i:i + 1]
        return div
    def laplace(y, x):
        return divergence(gradient(y, x), x)
    model = Siren().double()
    lin = torch.linspace(-1, 1, steps=5, dtype=torch.float64)
    mgrid = torch.stack(torch.meshgrid(lin, lin, indexing='ij'), dim=-1).reshape(-1, 2)
    out, coords = model(mgrid)
    img_grad = gradient(out, coords)
    img_lap = laplace(out, coords)
    target_lap = -(coords ** 2).sum(-1, keepdim=True).detach()
    loss = ((img_lap - target_lap) ** 2).mean() + 1e-3 * img_grad.norm(dim=-1).mean()
    loss.backward()
    H = torch.autograd.functional.hessian(lambda c: model.net(c).sum(), mgrid[7:8].clone())
    hessian_trace = H[0, 0, 0, 0] + H[0, 1, 0, 1]
    # NeuS-style: variance net, SDF to alpha, sphere tracing under no_grad
    class SingleVarianceNetwork(nn.Module):
        def __init__(self, init_val):
            super().__init__()
            self.register_parameter('variance', nn.Parameter(torch.tensor(init_val)))
        def forward(self, x):
            return torch.ones([len(x), 1]) * torch.exp(self.variance * 10.0)
    dev = SingleVarianceNetwork(0.3)
    sdf = lambda p: p.norm(dim=-1, keepdim=True) - 0.5
    rays_o = torch.tensor([[0., 0., -2.], [0.3, 0.1, -2.]])
    rays_d = F.normalize(torch.tensor([[0., 0., 1.], [0., 0.05, 1.]]), dim=-1)
    t = torch.zeros(2, 1)
    with torch.no_grad():
        for _ in range(20):
            t = t + sdf(rays_o + t * rays_d)
    p = (rays_o + t * rays_d).requires_grad_()
    s = sdf(p)
    n = torch.autograd.grad(s.sum(), p, create_graph=True)[0]
    inv_s = dev(p).clip(1e-6, 1e6)
    prev_cdf = torch.sigmoid((s + 0.01) * inv_s)
    next_cdf = torch.sigmoid((s - 0.01) * inv_s)
    alpha = ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clip(0.0, 1.0)
    (alpha.sum() + n.sum()).backward()
    return {"loss": loss, "img_grad": img_grad, "img_lap": img_lap, "grads": [q.grad for q in model.parameters()],
            "t": t, "n": n, "alpha": alpha, "variance_grad": dev.variance.grad, "hessian_trace": hessian_trace}


def test_siren_laplacian_and_neus_sphere_tracing():
    ours, _ = run_both(siren, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["img_lap"][7, 0], ours["hessian_trace"], rtol=1e-10)  # nested grads = trace H
    np.testing.assert_allclose(ours["t"][0], [1.5], atol=1e-4)  # sphere tracing along the axis reaches |p| = 0.5
    np.testing.assert_allclose(np.linalg.norm(ours["n"], axis=1), 1, rtol=1e-10)  # an exact SDF's gradient is unit


def gdas(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    alphas = (1e-3 * torch.randn(5, 4)).requires_grad_()
    outs = []
    for tau in (10.0, 1.0):
        while True:
            gumbels = -torch.empty_like(alphas).exponential_().log()
            logits = (alphas.log_softmax(dim=1) + gumbels) / tau
            probs = nn.functional.softmax(logits, dim=1)
            index = probs.max(-1, keepdim=True)[1]
            one_h = torch.zeros_like(logits).scatter_(-1, index, 1.0)
            hardwts = one_h - probs.detach() + probs
            if (torch.isinf(gumbels).any()) or (torch.isinf(probs).any()) or (torch.isnan(probs).any()):
                continue
            else:
                break
        outs.append((hardwts, index))
    y = F.gumbel_softmax(alphas, tau=0.5, hard=True)
    y2 = F.gumbel_softmax(alphas, tau=0.5, hard=False, dim=0)
    w = torch.arange(20.).view(5, 4)
    loss = (outs[0][0] * w).sum() + (outs[1][0] * w).sum() + (y * w).sum() + (y2 * w).sum()
    loss.backward()
    # PC-DARTS channel shuffle + partial channels + edge normalization (betas)
    def channel_shuffle(x, groups):
        batchsize, num_channels, height, width = x.data.size()
        channels_per_group = num_channels // groups
        x = x.view(batchsize, groups, channels_per_group, height, width)
        x = torch.transpose(x, 1, 2).contiguous()
        x = x.view(batchsize, -1, height, width)
        return x
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    k = 4
    dim_2 = x.shape[1]
    xtemp = x[:, :dim_2 // k, :, :]
    xtemp2 = x[:, dim_2 // k:, :, :]
    mp = nn.MaxPool2d(2, 2)
    temp1 = xtemp * 2.0
    ans = torch.cat([temp1, xtemp2], dim=1)
    ans = channel_shuffle(ans, k)
    betas = (1e-3 * torch.randn(5)).requires_grad_()
    n = 3; start = 2
    weights2 = F.softmax(betas[0:2], dim=-1)
    tw2 = F.softmax(betas[start:start + n], dim=-1)
    weights2 = torch.cat([weights2, tw2], dim=0)
    z = (ans * weights2.sum()).sum() + mp(ans).pow(2).sum()
    z.backward()
    # ProxylessNAS binary gates
    ap = torch.randn(6, requires_grad=True)
    probs = F.softmax(ap, dim=0)
    sample = torch.multinomial(probs.data, 2, replacement=False)
    probs_slice = F.softmax(torch.stack([ap[idx] for idx in sample]), dim=0)
    c = torch.multinomial(probs_slice.data, 1)[0]
    return {"outs": outs, "hard": y, "soft": y2, "alphas_grad": alphas.grad, "x_grad": x.grad, "betas_grad": betas.grad,
            "sample": sample, "c": c, "probs_slice": probs_slice}


def test_gdas_gumbel_and_pc_darts_channel_shuffle():
    ours, _ = run_both(gdas, rtol=1e-5, atol=1e-6)
    for hard, index in ours["outs"]:
        np.testing.assert_allclose(hard, np.eye(4)[index[:, 0]], atol=1e-6)  # straight-through: one-hot forward
    np.testing.assert_array_equal(ours["hard"].sum(1), 1)
    np.testing.assert_allclose(ours["soft"].sum(0), 1, rtol=1e-6)


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


def scipy_layer(m):
    import scipy.optimize
    torch = m.torch
    torch.manual_seed(0)
    class RootLayer(torch.autograd.Function):
        """z solves z = tanh(W z + x); forward by scipy, backward by IFT."""
        @staticmethod
        def forward(ctx, x, W):
            Wn, xn = W.detach().numpy(), x.detach().numpy()
            sol = scipy.optimize.root(lambda z: z - np.tanh(Wn @ z + xn), np.zeros_like(xn), tol=1e-14)
            z = torch.from_numpy(sol.x).to(x.dtype)
            ctx.save_for_backward(z, x, W)
            return z
        @staticmethod
        def backward(ctx, gz):
            z, x, W = ctx.saved_tensors
            s = 1 - torch.tanh(W @ z + x) ** 2
            J = torch.eye(len(z), dtype=z.dtype) - s[:, None] * W
            u = torch.linalg.solve(J.t(), gz)
            gpre = u * s
            return gpre, torch.outer(gpre, z)
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    W = (0.3 * torch.randn(5, 5, dtype=torch.float64)).requires_grad_()
    z = RootLayer.apply(x, W)
    (z ** 2).sum().backward()
    ok = torch.autograd.gradcheck(RootLayer.apply, (x, W), atol=1e-6)
    a = np.arange(3.0)
    t = torch.from_numpy(a); a[0] = 7
    return {"z": z, "x_grad": x.grad, "W_grad": W.grad, "ok": ok, "shared": t, "x": x, "W": W}


def test_scipy_root_layer_with_implicit_backward():
    pytest.importorskip("scipy")
    ours, _ = run_both(scipy_layer, rtol=1e-8, atol=1e-10)
    z, x, W = ours["z"], ours["x"], ours["W"]
    np.testing.assert_allclose(z, np.tanh(W @ z + x), atol=1e-13)
    assert ours["ok"]
    np.testing.assert_array_equal(ours["shared"], [7.0, 1.0, 2.0])  # from_numpy shares the array's memory


# ----------------------------------------------------------------------------------------------
# The DEQ repository's Broyden solver (low-rank inverse-Jacobian updates by einsum, Armijo line search)
# ----------------------------------------------------------------------------------------------


def broyden_prog(m):
    torch = m.torch
    def _safe_norm(v):
        if not torch.isfinite(v).all():
            return float('inf')
        return torch.norm(v)
    def scalar_search_armijo(phi, phi0, derphi0, c1=1e-4, alpha0=1, amin=0):
        ite = 0
        phi_a0 = phi(alpha0)
        if phi_a0 <= phi0 + c1 * alpha0 * derphi0:
            return alpha0, phi_a0, ite
        alpha1 = -(derphi0) * alpha0 ** 2 / 2.0 / (phi_a0 - phi0 - derphi0 * alpha0)
        phi_a1 = phi(alpha1)
        while alpha1 > amin:
            factor = alpha0 ** 2 * alpha1 ** 2 * (alpha1 - alpha0)
            a = alpha0 ** 2 * (phi_a1 - phi0 - derphi0 * alpha1) - alpha1 ** 2 * (phi_a0 - phi0 - derphi0 * alpha0)
            a = a / factor
            b = -alpha0 ** 3 * (phi_a1 - phi0 - derphi0 * alpha1) + alpha1 ** 3 * (phi_a0 - phi0 - derphi0 * alpha0)
            b = b / factor
            alpha2 = (-b + torch.sqrt(torch.abs(b ** 2 - 3 * a * derphi0))) / (3.0 * a)
            phi_a2 = phi(alpha2)
            ite += 1
            if (phi_a2 <= phi0 + c1 * alpha2 * derphi0):
                return alpha2, phi_a2, ite
            if (alpha1 - alpha2) > alpha1 / 2.0 or (1 - alpha2 / alpha1) < 0.96:
                alpha2 = alpha1 / 2.0
            alpha0 = alpha1; alpha1 = alpha2; phi_a0 = phi_a1; phi_a1 = phi_a2
        return None, phi_a1, ite
    def line_search(update, x0, g0, g, nstep=0, on=True):
        tmp_s = [0]; tmp_g0 = [g0]; tmp_phi = [torch.norm(g0) ** 2]; s_norm = torch.norm(x0) / torch.norm(update)
        def phi(s, store=True):
            if s == tmp_s[0]:
                return tmp_phi[0]
            x_est = x0 + s * update
            g0_new = g(x_est)
            phi_new = _safe_norm(g0_new) ** 2
            if store:
                tmp_s[0] = s; tmp_g0[0] = g0_new; tmp_phi[0] = phi_new
            return phi_new
        if on:
            s, phi1, ite = scalar_search_armijo(phi, tmp_phi[0], -tmp_phi[0], amin=1e-2)
        if (not on) or s is None:
            s = 1.0; ite = 0
        x_est = x0 + s * update
        if s == tmp_s[0]:
            g0_new = tmp_g0[0]
        else:
            g0_new = g(x_est)
        return x_est, g0_new, x_est - x0, g0_new - g0, ite
    def rmatvec(part_Us, part_VTs, x):
        if part_Us.nelement() == 0:
            return -x
        xTU = torch.einsum('bij, bijd -> bd', x, part_Us)
        return -x + torch.einsum('bd, bdij -> bij', xTU, part_VTs)
    def matvec(part_Us, part_VTs, x):
        if part_Us.nelement() == 0:
            return -x
        VTx = torch.einsum('bdij, bij -> bd', part_VTs, x)
        return -x + torch.einsum('bijd, bd -> bij', part_Us, VTx)
    def broyden(f, x0, threshold, eps=1e-3, stop_mode="rel", ls=False, name="unknown"):
        bsz, total_hsize, seq_len = x0.size()
        g = lambda y: f(y) - y
        dev = x0.device
        alternative_mode = 'rel' if stop_mode == 'abs' else 'abs'
        x_est = x0
        gx = g(x_est)
        nstep = 0
        tnstep = 0
        Us = torch.zeros(bsz, total_hsize, seq_len, threshold, dtype=x0.dtype).to(dev)
        VTs = torch.zeros(bsz, threshold, total_hsize, seq_len, dtype=x0.dtype).to(dev)
        update = -matvec(Us[:, :, :, :nstep], VTs[:, :nstep], gx)
        prot_break = False
        protect_thres = (1e6 if stop_mode == "abs" else 1e3) * seq_len
        new_objective = 1e8
        trace_dict = {'abs': [], 'rel': []}
        lowest_dict = {'abs': 1e8, 'rel': 1e8}
        lowest_step_dict = {'abs': 0, 'rel': 0}
        nstep, lowest_xest, lowest_gx = 0, x_est, gx
        while nstep < threshold:
            x_est, gx, delta_x, delta_gx, ite = line_search(update, x_est, gx, g, nstep=nstep, on=ls)
            nstep += 1
            tnstep += (ite + 1)
            abs_diff = torch.norm(gx).item()
            rel_diff = abs_diff / (torch.norm(gx + x_est).item() + 1e-9)
            diff_dict = {'abs': abs_diff, 'rel': rel_diff}
            trace_dict['abs'].append(abs_diff)
            trace_dict['rel'].append(rel_diff)
            for mode in ['rel', 'abs']:
                if diff_dict[mode] < lowest_dict[mode]:
                    if mode == stop_mode:
                        lowest_xest, lowest_gx = x_est.clone().detach(), gx.clone().detach()
                    lowest_dict[mode] = diff_dict[mode]
                    lowest_step_dict[mode] = nstep
            new_objective = diff_dict[stop_mode]
            if new_objective < eps: break
            if new_objective < 3 * eps and nstep > 30 and np.max(trace_dict[stop_mode][-30:]) / np.min(trace_dict[stop_mode][-30:]) < 1.3:
                break
            if new_objective > trace_dict[stop_mode][0] * protect_thres:
                prot_break = True
                break
            part_Us, part_VTs = Us[:, :, :, :nstep - 1], VTs[:, :nstep - 1]
            vT = rmatvec(part_Us, part_VTs, delta_x)
            u = (delta_x - matvec(part_Us, part_VTs, delta_gx)) / torch.einsum('bij, bij -> b', vT, delta_gx)[:, None, None]
            vT[vT != vT] = 0
            u[u != u] = 0
            VTs[:, nstep - 1] = vT
            Us[:, :, :, nstep - 1] = u
            update = -matvec(Us[:, :, :, :nstep], VTs[:, :nstep], gx)
        for _ in range(threshold + 1 - len(trace_dict[stop_mode])):
            trace_dict[stop_mode].append(lowest_dict[stop_mode])
            trace_dict[alternative_mode].append(lowest_dict[alternative_mode])
        return {"result": lowest_xest, "lowest": lowest_dict[stop_mode], "nstep": lowest_step_dict[stop_mode],
                "prot_break": prot_break, "abs_trace": trace_dict['abs'], "rel_trace": trace_dict['rel'],
                "eps": eps, "threshold": threshold}
    torch.manual_seed(0)
    W = 0.4 * torch.randn(6, 6, dtype=torch.float64) / 6 ** 0.5
    U = torch.randn(6, 3, dtype=torch.float64)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    f = lambda z: torch.tanh(torch.einsum('ij,bjl->bil', W, z) + torch.einsum('ij,bjl->bil', U, x))
    out = broyden(f, torch.zeros(2, 6, 4, dtype=torch.float64), 30, eps=1e-10)
    out2 = broyden(f, torch.zeros(2, 6, 4, dtype=torch.float64), 30, eps=1e-10, ls=True)
    z = torch.zeros(2, 6, 4, dtype=torch.float64)
    for _ in range(200):
        z = f(z)
    return {"result": out["result"], "nstep": out["nstep"], "trace": out["rel_trace"][:8], "ls_result": out2["result"],
            "ls_nstep": out2["nstep"], "residual": (f(out["result"]) - out["result"]).abs().max(), "iterated": z}


def test_deq_broyden_solver_with_armijo_line_search():
    ours, _ = run_both(broyden_prog, rtol=1e-6, atol=1e-9)
    assert ours["residual"] < 1e-9 and ours["nstep"] < 30
    np.testing.assert_allclose(ours["result"], ours["iterated"], atol=1e-9)
    np.testing.assert_allclose(ours["ls_result"], ours["iterated"], atol=1e-9)


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
