# ruff: noqa: B007, UP006, UP008, UP032, UP035  (the programs are kept as their authors wrote them)
"""Optimizers as research code writes them, subclassing ``torch.optim.Optimizer``, run as
tests/probe18_optimizers_common.py says. Curvature: Sophia-G (Liu et al.): tensor ``step`` counters, the
Gauss-Newton-Bartlett Hessian estimate from labels sampled from the model's own logits (Gumbel noise from NumPy),
``step(bs=...)``; resumed from its state dict mid-run, also from an older version's checkpoint (steps saved as
numbers), which its ``__setstate__`` migrates when ``load_state_dict`` calls it. AdaHessian: Hutchinson's Hessian
diagonal by ``torch.autograd.grad`` of the ``create_graph`` gradients inside the step (spatially averaged over conv
kernels), ``grad.detach_()``, ``p.data = ...``. Shampoo (pytorch-optimizer's: preconditioners per dimension of a conv
kernel, inverse roots by ``torch.svd``, ``torch.eye(out=)``, ``transpose_``) and a variant taking the roots by
``torch.linalg.eigh``; a Shampoo keeping float64 factor matrices in nested state (a dict holding a tuple and a list),
which PyTorch's load_state_dict casts to the parameter's float32 on resuming."""

import copy
import math

import numpy as np
import pytest

from .probe18_optimizers_common import WEIGHTS, batches, net, params_of
from .pytorch_programs import assert_same, load, run_both

# ----------------------------------------------------------------------------------------------
# Sophia-G (Liu et al., "Sophia: A Scalable Stochastic Second-order Optimizer")
# ----------------------------------------------------------------------------------------------


def sophia_program(m, steps=10, resume_at=None, k=3, legacy_checkpoint=False):
    torch, F, optim = m.torch, m.F, m.optim
    from typing import List

    Tensor = torch.Tensor

    class SophiaG(optim.Optimizer):
        def __init__(self, params, lr=1e-4, betas=(0.965, 0.99), rho=0.04,
                     weight_decay=1e-1, *, maximize: bool = False,
                     capturable: bool = False):
            if not 0.0 <= lr:
                raise ValueError("Invalid learning rate: {}".format(lr))
            if not 0.0 <= betas[0] < 1.0:
                raise ValueError("Invalid beta parameter at index 0: {}".format(betas[0]))
            if not 0.0 <= betas[1] < 1.0:
                raise ValueError("Invalid beta parameter at index 1: {}".format(betas[1]))
            if not 0.0 <= rho:
                raise ValueError("Invalid rho parameter at index 1: {}".format(rho))
            if not 0.0 <= weight_decay:
                raise ValueError("Invalid weight_decay value: {}".format(weight_decay))
            defaults = dict(lr=lr, betas=betas, rho=rho,
                            weight_decay=weight_decay,
                            maximize=maximize, capturable=capturable)
            super(SophiaG, self).__init__(params, defaults)

        def __setstate__(self, state):
            super().__setstate__(state)
            for group in self.param_groups:
                group.setdefault('maximize', False)
                group.setdefault('capturable', False)
            state_values = list(self.state.values())
            step_is_tensor = (len(state_values) != 0) and torch.is_tensor(state_values[0]['step'])
            if not step_is_tensor:
                for s in state_values:
                    s['step'] = torch.tensor(float(s['step']))

        @torch.no_grad()
        def update_hessian(self):
            for group in self.param_groups:
                beta1, beta2 = group['betas']
                for p in group['params']:
                    if p.grad is None:
                        continue
                    state = self.state[p]

                    if len(state) == 0:
                        state['step'] = torch.zeros((1,), dtype=torch.float, device=p.device) \
                            if self.defaults['capturable'] else torch.tensor(0.)
                        state['exp_avg'] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        state['hessian'] = torch.zeros_like(p, memory_format=torch.preserve_format)

                    if 'hessian' not in state.keys():
                        state['hessian'] = torch.zeros_like(p, memory_format=torch.preserve_format)

                    state['hessian'].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)

        @torch.no_grad()
        def step(self, closure=None, bs=5120):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()

            for group in self.param_groups:
                params_with_grad = []
                grads = []
                exp_avgs = []
                state_steps = []
                hessian = []
                beta1, beta2 = group['betas']

                for p in group['params']:
                    if p.grad is None:
                        continue
                    params_with_grad.append(p)

                    if p.grad.is_sparse:
                        raise RuntimeError('Hero does not support sparse gradients')
                    grads.append(p.grad)
                    state = self.state[p]
                    # State initialization
                    if len(state) == 0:
                        state['step'] = torch.zeros((1,), dtype=torch.float, device=p.device) \
                            if self.defaults['capturable'] else torch.tensor(0.)
                        state['exp_avg'] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        state['hessian'] = torch.zeros_like(p, memory_format=torch.preserve_format)

                    if 'hessian' not in state.keys():
                        state['hessian'] = torch.zeros_like(p, memory_format=torch.preserve_format)

                    exp_avgs.append(state['exp_avg'])
                    state_steps.append(state['step'])
                    hessian.append(state['hessian'])

                sophiag(params_with_grad, grads, exp_avgs, hessian, state_steps, bs=bs, beta1=beta1,
                        beta2=beta2, rho=group['rho'], lr=group['lr'], weight_decay=group['weight_decay'],
                        maximize=group['maximize'], capturable=group['capturable'])

            return loss

    def sophiag(params: List[Tensor], grads: List[Tensor], exp_avgs: List[Tensor], hessian: List[Tensor],
                state_steps: List[Tensor], capturable: bool = False, *, bs: int, beta1: float, beta2: float,
                rho: float, lr: float, weight_decay: float, maximize: bool):
        if not all(isinstance(t, torch.Tensor) for t in state_steps):
            raise RuntimeError("API has changed, `state_steps` argument must contain a list of singleton tensors")
        _single_tensor_sophiag(params, grads, exp_avgs, hessian, state_steps, bs=bs, beta1=beta1, beta2=beta2,
                               rho=rho, lr=lr, weight_decay=weight_decay, maximize=maximize, capturable=capturable)

    def _single_tensor_sophiag(params, grads, exp_avgs, hessian, state_steps, *, bs, beta1, beta2, rho, lr,
                               weight_decay, maximize, capturable):
        for i, param in enumerate(params):
            grad = grads[i] if not maximize else -grads[i]
            exp_avg = exp_avgs[i]
            hess = hessian[i]
            step_t = state_steps[i]

            if torch.is_complex(param):
                grad = torch.view_as_real(grad)
                exp_avg = torch.view_as_real(exp_avg)
                hess = torch.view_as_real(hess)
                param = torch.view_as_real(param)

            # update step
            step_t += 1

            # Perform stepweight decay
            param.mul_(1 - lr * weight_decay)

            # Decay the first and second moment running average coefficient
            exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)

            step_size_neg = - lr
            ratio = (exp_avg.abs() / (rho * bs * hess + 1e-15)).clamp(None, 1)
            param.addcmul_(exp_avg.sign(), ratio, value=step_size_neg)

    data = batches(m)
    gumbel = np.random.default_rng(1).gumbel(size=(steps, 16, 3)).astype(np.float32)

    def build():
        model = load(m, net(m), WEIGHTS)
        optimizer = SophiaG(model.parameters(), lr=2e-3, betas=(0.965, 0.99), rho=0.05, weight_decay=0.1)
        return model, optimizer

    model, optimizer = build()
    losses, hessian_norms = [], []
    for iter_num in range(steps):
        if iter_num == resume_at:
            checkpoint = {"model": copy.deepcopy(model.state_dict()),
                          "optimizer": copy.deepcopy(optimizer.state_dict())}
            if legacy_checkpoint:  # as an older SophiaG saved it: its steps were numbers
                for s in checkpoint["optimizer"]["state"].values():
                    s["step"] = int(s["step"].item())
            model, optimizer = build()
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])  # (its __setstate__ makes them Tensors again)
        X, Y = data[iter_num % len(data)]
        logits = model(X)
        loss = F.cross_entropy(logits, Y)
        loss.backward()
        optimizer.step(bs=16)
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if iter_num % k == k - 1:
            # update hessian EMA
            logits = model(X)
            y_sample = (logits.detach() + torch.from_numpy(gumbel[iter_num])).argmax(-1)  # a draw from softmax(logits)
            loss_sampled = F.cross_entropy(logits.view(-1, logits.size(-1)), y_sample.view(-1), ignore_index=-1)
            loss_sampled.backward()
            optimizer.update_hessian()
            optimizer.zero_grad(set_to_none=True)
            hessian_norms.append(sum(optimizer.state[p]["hessian"].sum().item() for p in model.parameters()))
    state = [(s["step"], s["exp_avg"], s["hessian"]) for s in (optimizer.state[p] for p in model.parameters())]
    return losses, hessian_norms, params_of(model), state


def test_sophia_g_with_gauss_newton_bartlett_hessian_estimates():
    # the ratio exp_avg / (rho * bs * h) is elementwise, but the model's matmuls and conv sum in float32
    ours, theirs = run_both(sophia_program, rtol=1e-4, atol=1e-6)
    steps = ours[3][0][0]
    assert steps.shape == () and steps == 10.0


@pytest.mark.parametrize("legacy_checkpoint", [False, True])
def test_sophia_g_resumes_from_its_state_dict_as_if_never_stopped(legacy_checkpoint):
    straight, _ = run_both(sophia_program, rtol=1e-4, atol=1e-6)
    resumed, _ = run_both(sophia_program, resume_at=4, legacy_checkpoint=legacy_checkpoint, rtol=1e-4, atol=1e-6)
    assert_same(resumed, straight, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# Shampoo (jettify/pytorch-optimizer), and a variant taking the roots by eigh
# ----------------------------------------------------------------------------------------------


def shampoo_program(m, root="svd", steps=6, momentum=0.5, weight_decay=1e-4, epsilon=1e-4):
    torch, F, optim = m.torch, m.F, m.optim
    Optimizer = optim.Optimizer

    def _matrix_power(matrix, power):
        # use CPU for svd for speed up
        device = matrix.device
        matrix = matrix.cpu()
        u, s, v = torch.svd(matrix)
        return (u @ s.pow_(power).diag() @ v.t()).to(device)

    def _matrix_power_eigh(matrix, power, eps=1e-12):
        evals, evecs = torch.linalg.eigh(matrix)
        evals = torch.clamp(evals, min=eps)
        return evecs @ torch.diag(evals ** power) @ evecs.T

    matrix_power = _matrix_power if root == "svd" else _matrix_power_eigh

    class Shampoo(Optimizer):
        def __init__(self, params, lr: float = 1e-1, momentum: float = 0.0, weight_decay: float = 0.0,
                     epsilon: float = 1e-4, update_freq: int = 1):
            if lr <= 0.0:
                raise ValueError("Invalid learning rate: {}".format(lr))
            if momentum < 0.0:
                raise ValueError("Invalid momentum value: {}".format(momentum))
            defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, epsilon=epsilon,
                            update_freq=update_freq)
            super(Shampoo, self).__init__(params, defaults)

        def step(self, closure=None):
            loss = None
            if closure is not None:
                loss = closure()

            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad.data
                    order = grad.ndimension()
                    original_size = grad.size()
                    state = self.state[p]
                    momentum = group["momentum"]
                    weight_decay = group["weight_decay"]
                    if len(state) == 0:
                        state["step"] = 0
                        if momentum > 0:
                            state["momentum_buffer"] = grad.clone()
                        for dim_id, dim in enumerate(grad.size()):
                            # precondition matrices
                            state["precond_{}".format(dim_id)] = group["epsilon"] * torch.eye(
                                dim, out=grad.new(dim, dim))
                            state["inv_precond_{dim_id}".format(dim_id=dim_id)] = grad.new(dim, dim).zero_()

                    if momentum > 0:
                        grad.mul_(1 - momentum).add_(state["momentum_buffer"], alpha=momentum)

                    if weight_decay > 0:
                        grad.add_(p.data, alpha=group["weight_decay"])

                    # See Algorithm 2 for detail
                    for dim_id, dim in enumerate(grad.size()):
                        precond = state["precond_{}".format(dim_id)]
                        inv_precond = state["inv_precond_{}".format(dim_id)]

                        # mat_{dim_id}(grad)
                        grad = grad.transpose_(0, dim_id).contiguous()
                        transposed_size = grad.size()
                        grad = grad.view(dim, -1)

                        grad_t = grad.t()
                        precond.add_(grad @ grad_t)
                        if state["step"] % group["update_freq"] == 0:
                            inv_precond.copy_(matrix_power(precond, -1 / order))

                        if dim_id == order - 1:
                            # finally
                            grad = grad_t @ inv_precond
                            # grad: (-1, last_dim)
                            grad = grad.view(original_size)
                        else:
                            # if not final
                            grad = inv_precond @ grad
                            # grad (dim, -1)
                            grad = grad.view(transposed_size)

                    state["step"] += 1
                    state["momentum_buffer"] = grad
                    p.data.add_(grad, alpha=-group["lr"])

            return loss

    model = load(m, net(m), WEIGHTS).double()
    optimizer = Shampoo(model.parameters(), lr=0.05, momentum=momentum, weight_decay=weight_decay, epsilon=epsilon,
                        update_freq=2)
    losses = []
    data = batches(m)
    for i in range(steps):
        x, y = data[i % len(data)]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x.double()), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    conv = optimizer.state[model[0].weight]
    return losses, params_of(model), [conv["precond_{}".format(i)] for i in range(4)], \
        [conv["inv_precond_{}".format(i)] for i in range(4)], optimizer.state[model[3].weight]["momentum_buffer"]


@pytest.mark.parametrize("root", ["svd", "eigh"])
def test_shampoo_with_inverse_roots(root):
    # float64: the inverse roots come from LAPACK's svd/eigh (different drivers, unique only as a product)
    ours, theirs = run_both(shampoo_program, root=root, epsilon=0.1, rtol=1e-10, atol=1e-12)
    preconds = ours[2]
    assert [p.shape for p in preconds] == [(4, 4), (1, 1), (3, 3), (3, 3)]
    for p, inverse_root in zip(preconds, ours[3]):  # the last inverse root is of the preconditioner before it
        assert np.all(np.linalg.eigvalsh(p) > 0)


# ----------------------------------------------------------------------------------------------
# A Shampoo keeping its factor matrices in float64, in nested state, resumed from a state dict
# ----------------------------------------------------------------------------------------------


def nested_state_shampoo_program(m, steps=8, resume_at=None):
    torch, F, optim = m.torch, m.F, m.optim

    class Shampoo(optim.Optimizer):
        """Two-sided Shampoo for matrices (factor matrices in ``factor_matrix_dtype``, as Distributed
        Shampoo's option keeps them in float64), SGD with momentum for the rest."""

        def __init__(self, params, lr=0.01, momentum=0.9, epsilon=1e-3, factor_matrix_dtype=torch.float64):
            defaults = dict(lr=lr, momentum=momentum, epsilon=epsilon)
            self.factor_matrix_dtype = factor_matrix_dtype
            super().__init__(params, defaults)

        @staticmethod
        def _inverse_root(matrix, root, epsilon):
            evals, evecs = torch.linalg.eigh(matrix)
            return evecs @ torch.diag((evals + epsilon) ** (-1.0 / root)) @ evecs.T

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad.view(p.shape[0], -1) if p.dim() > 1 else p.grad
                    state = self.state[p]
                    if len(state) == 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                        if p.dim() > 1:
                            rows, cols = grad.shape
                            state["shampoo"] = {
                                "factor_matrices": (torch.zeros(rows, rows, dtype=self.factor_matrix_dtype),
                                                    torch.zeros(cols, cols, dtype=self.factor_matrix_dtype)),
                                "inv_roots": [torch.eye(rows, dtype=self.factor_matrix_dtype),
                                              torch.eye(cols, dtype=self.factor_matrix_dtype)],
                                "step": torch.tensor(0),
                            }
                    if p.dim() > 1:
                        shampoo = state["shampoo"]
                        L, R = shampoo["factor_matrices"]
                        g = grad.to(L.dtype)
                        L.add_(g @ g.T)
                        R.add_(g.T @ g)
                        shampoo["step"] += 1
                        if shampoo["step"] % 2 == 1:
                            shampoo["inv_roots"][0].copy_(self._inverse_root(L, 4, group["epsilon"]))
                            shampoo["inv_roots"][1].copy_(self._inverse_root(R, 4, group["epsilon"]))
                        Linv, Rinv = shampoo["inv_roots"]
                        update = (Linv @ g @ Rinv).to(p.dtype).view_as(p)
                        # graft onto the gradient's norm
                        update.mul_(p.grad.norm() / update.norm().clamp(min=1e-12))
                    else:
                        update = p.grad
                    buf = state["momentum_buffer"]
                    buf.mul_(group["momentum"]).add_(update)
                    p.add_(buf, alpha=-group["lr"])

    def build():
        model = load(m, net(m), WEIGHTS)
        return model, Shampoo(model.parameters(), lr=0.05)

    model, optimizer = build()
    data = batches(m)
    losses = []
    for step in range(steps):
        if step == resume_at:
            saved = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
            model, optimizer = build()
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
        x, y = data[step % len(data)]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    shampoo = optimizer.state[model[3].weight]["shampoo"]
    names = {torch.float32: "float32", torch.float64: "float64", torch.int64: "int64"}
    dtypes = [names[t.dtype] for t in (*shampoo["factor_matrices"], *shampoo["inv_roots"], shampoo["step"])]
    return losses, params_of(model), dtypes, shampoo["factor_matrices"]


def test_a_resumed_shampoo_casts_the_tensors_of_its_nested_state_as_pytorch():
    """PyTorch's load_state_dict casts every floating Tensor of a parameter's state to the parameter's dtype,
    also inside a dict, list or tuple (but a ``step``): the float64 factor matrices continue in float32 (chainrule
    kept those inside a dict in float64). The matmuls and eigh run in float32 after the resume: float32 tolerance."""
    straight, _ = run_both(nested_state_shampoo_program, rtol=1e-5, atol=1e-6)
    assert straight[2] == ["float64"] * 4 + ["int64"]
    resumed, _ = run_both(nested_state_shampoo_program, resume_at=4, rtol=1e-4, atol=1e-5)
    assert resumed[2] == ["float32"] * 4 + ["int64"]


# ----------------------------------------------------------------------------------------------
# AdaHessian (amirgholami/adahessian): Hutchinson's Hessian diagonal inside the optimizer's step
# ----------------------------------------------------------------------------------------------


def adahessian_program(m, steps=5):
    torch, F, optim = m.torch, m.F, m.optim
    import warnings

    Optimizer = optim.Optimizer
    rademacher = np.random.default_rng(7)

    class Adahessian(Optimizer):
        def __init__(self, params, lr=0.15, betas=(0.9, 0.999), eps=1e-4, weight_decay=0, hessian_power=1):
            if not 0.0 <= lr:
                raise ValueError("Invalid learning rate: {}".format(lr))
            if not 0.0 <= hessian_power <= 1.0:
                raise ValueError("Invalid Hessian power value: {}".format(hessian_power))
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, hessian_power=hessian_power)
            super(Adahessian, self).__init__(params, defaults)

        def get_trace(self, params, grads):
            """
            compute the Hessian vector product with a random vector v, at the current gradient point,
            i.e., compute the gradient of <gradsH,v>.
            """
            # Check backward was called with create_graph set to True
            for i, grad in enumerate(grads):
                if grad.grad_fn is None:
                    raise RuntimeError('Gradient tensor {:} does not have grad_fn. When calling\n'.format(i) +
                                       '\t\t\t  loss.backward(), make sure the option create_graph is\n' +
                                       '\t\t\t  set to True.')

            # (the authors' v = [2 * torch.randint_like(p, high=2) - 1 for p in params], drawn by NumPy here)
            v = [2 * torch.from_numpy(rademacher.integers(0, 2, size=tuple(p.shape))).to(p.dtype) - 1 for p in params]

            hvs = torch.autograd.grad(grads, params, grad_outputs=v, only_inputs=True, retain_graph=False)

            hutchinson_trace = []
            for hv in hvs:
                param_size = hv.size()
                if len(param_size) <= 2:  # for 0/1/2D tensor
                    # Hessian diagonal block size is 1 here.
                    # We use that torch.abs(hv * vi) = hv.abs()
                    tmp_output = hv.abs()

                elif len(param_size) == 4:  # Conv kernel
                    # Hessian diagonal block size is 9 here: torch.sum() reduces the dim 2/3.
                    # We use that torch.abs(hv * vi) = hv.abs()
                    tmp_output = torch.mean(hv.abs(), dim=[2, 3], keepdim=True)
                hutchinson_trace.append(tmp_output)

            return hutchinson_trace

        def step(self, closure=None):
            loss = None
            if closure is not None:
                loss = closure()

            params = []
            groups = []
            grads = []

            # Flatten groups into lists, so that
            #  hut_traces can be called with lists of parameters
            #  and grads
            for group in self.param_groups:
                for p in group['params']:
                    if p.grad is not None:
                        params.append(p)
                        groups.append(group)
                        grads.append(p.grad)

            # get the Hessina diagonal
            hut_traces = self.get_trace(params, grads)

            for (p, group, grad, hut_trace) in zip(params, groups, grads, hut_traces):

                state = self.state[p]

                # State initialization
                if len(state) == 0:
                    state['step'] = 0
                    # Exponential moving average of gradient values
                    state['exp_avg'] = torch.zeros_like(p.data)
                    # Exponential moving average of Hessian diagonal square values
                    state['exp_hessian_diag_sq'] = torch.zeros_like(p.data)

                exp_avg, exp_hessian_diag_sq = state['exp_avg'], state['exp_hessian_diag_sq']

                beta1, beta2 = group['betas']

                state['step'] += 1

                # Decay the first and second moment running average coefficient
                exp_avg.mul_(beta1).add_(1 - beta1, grad.detach_())
                exp_hessian_diag_sq.mul_(beta2).addcmul_(1 - beta2, hut_trace, hut_trace)

                bias_correction1 = 1 - beta1 ** state['step']
                bias_correction2 = 1 - beta2 ** state['step']

                # make the square root, and the Hessian power
                k = group['hessian_power']
                denom = ((exp_hessian_diag_sq.sqrt() ** k) / math.sqrt(bias_correction2) ** k).add_(group['eps'])

                # make update
                p.data = p.data - group['lr'] * (exp_avg / bias_correction1 / denom + group['weight_decay'] * p.data)

            return loss

    model = load(m, net(m), WEIGHTS).double()  # float64: a Hessian-vector product of float32 sums is noisy
    optimizer = Adahessian(model.parameters(), lr=0.05, weight_decay=5e-4, hessian_power=0.5)
    data = batches(m)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # add_(Number, Tensor), and backward(create_graph=True)'s
        for i in range(steps):
            x, y = data[i % len(data)]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x.double()), y)
            loss.backward(create_graph=True)
            optimizer.step()
            losses.append(loss.item())
    hessian = [optimizer.state[p]["exp_hessian_diag_sq"] for p in model.parameters()]
    return losses, params_of(model), hessian, [p.grad.grad_fn is None for p in model.parameters()]


def test_adahessian_estimates_the_hessian_diagonal_in_its_step():
    ours, theirs = run_both(adahessian_program, rtol=1e-9, atol=1e-12)
    assert ours[2][0].shape == (4, 1, 3, 3) and all(ours[3])  # (grad.detach_() cut each gradient's graph)
