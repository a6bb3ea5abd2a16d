# ruff: noqa: B007, E501, E702, E722, UP004, UP008  (the programs are kept as their authors wrote them)
"""Implicit and bilevel differentiation programs (see tests/pytorch_programs.py) as PyTorch users write them, each
run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy and invariants.
Architecture search: DARTS (mixed operations weighted by a softmax of architecture parameters, an unrolled model
built from a flat theta, the second-order architecture gradient by a finite-difference Hessian-vector product, two
optimizers, deprecated ``Variable``); GDAS's Gumbel relaxation and PC-DARTS' channel shuffle."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

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
