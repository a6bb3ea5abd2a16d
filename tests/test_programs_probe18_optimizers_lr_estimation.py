# ruff: noqa: F841, UP008, UP032  (the programs are kept as their authors wrote them)
"""Optimizers as research code writes them, subclassing ``torch.optim.Optimizer``, run as
tests/probe18_optimizers_common.py says. Learning rates found by the optimizer: Prodigy (D-Adaptation): ``d``
estimated in Python floats from ``torch.dot(...).item()`` over strided slices; hypergradient descent (SGD-HD,
Adam-HD: the learning rate a Tensor, PyTorch 1's ``add_(Number, Tensor)`` overloads) under StepLR."""

import math

import pytest

from .probe18_optimizers_common import WEIGHTS, batches, net, params_of
from .pytorch_programs import load, run_both

# ----------------------------------------------------------------------------------------------
# Prodigy (konstmish/prodigy): D-Adaptation in Python floats
# ----------------------------------------------------------------------------------------------


def prodigy_program(m, steps=10, slice_p=1, weight_decay=0.0, safeguard_warmup=False, use_bias_correction=False):
    torch, F, optim = m.torch, m.F, m.optim

    class Prodigy(torch.optim.Optimizer):
        def __init__(self, params, lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0, decouple=True,
                     use_bias_correction=False, safeguard_warmup=False, d0=1e-6, d_coef=1.0,
                     growth_rate=float('inf'), fsdp_in_use=False, slice_p=1):
            if not 0.0 < d0:
                raise ValueError("Invalid d0 value: {}".format(d0))
            if not 0.0 < lr:
                raise ValueError("Invalid learning rate: {}".format(lr))
            if not 0.0 < eps:
                raise ValueError("Invalid epsilon value: {}".format(eps))
            if not 0.0 <= betas[0] < 1.0:
                raise ValueError("Invalid beta parameter at index 0: {}".format(betas[0]))
            if not 0.0 <= betas[1] < 1.0:
                raise ValueError("Invalid beta parameter at index 1: {}".format(betas[1]))
            if beta3 is not None and not 0.0 <= beta3 < 1.0:
                raise ValueError("Invalid beta3 parameter: {}".format(beta3))

            defaults = dict(lr=lr, betas=betas, beta3=beta3, eps=eps, weight_decay=weight_decay, d=d0, d0=d0,
                            d_max=d0, d_numerator=0.0, d_coef=d_coef, k=0, growth_rate=growth_rate,
                            use_bias_correction=use_bias_correction, decouple=decouple,
                            safeguard_warmup=safeguard_warmup, fsdp_in_use=fsdp_in_use, slice_p=slice_p)
            self.d0 = d0
            super().__init__(params, defaults)

        @property
        def supports_memory_efficient_fp16(self):
            return False

        @property
        def supports_flat_params(self):
            return True

        def step(self, closure=None):
            loss = None
            if closure is not None:
                loss = closure()

            d_denom = 0.0

            group = self.param_groups[0]
            use_bias_correction = group['use_bias_correction']
            beta1, beta2 = group['betas']
            beta3 = group['beta3']
            if beta3 is None:
                beta3 = math.sqrt(beta2)
            k = group['k']

            d = group['d']
            d_max = group['d_max']
            d_coef = group['d_coef']
            lr = max(group['lr'] for group in self.param_groups)

            if use_bias_correction:
                bias_correction = ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1))
            else:
                bias_correction = 1

            dlr = d * lr * bias_correction

            growth_rate = group['growth_rate']
            decouple = group['decouple']
            fsdp_in_use = group['fsdp_in_use']

            d_numerator = group['d_numerator']
            d_numerator *= beta3

            for group in self.param_groups:
                decay = group['weight_decay']
                k = group['k']
                eps = group['eps']
                group_lr = group['lr']
                d0 = group['d0']
                safeguard_warmup = group['safeguard_warmup']
                slice_p = group['slice_p']

                if group_lr not in [lr, 0.0]:
                    raise RuntimeError("Setting different lr values in different parameter groups is only "
                                       "supported for values of 0")

                for p in group['params']:
                    if p.grad is None:
                        continue
                    if hasattr(p, "_fsdp_flattened"):
                        fsdp_in_use = True

                    grad = p.grad.data

                    # Apply weight decay (coupled variant)
                    if decay != 0 and not decouple:
                        grad.add_(p.data, alpha=decay)

                    state = self.state[p]

                    # State initialization
                    if 'step' not in state:
                        state['step'] = 0
                        state['s'] = torch.zeros_like(p.data.flatten()[::slice_p]).detach()

                        if p.count_nonzero() > 0:
                            state['p0'] = p.flatten()[::slice_p].detach().clone()
                        else:
                            # All values are zero, so save VRAM with a zero-tensor
                            state['p0'] = torch.tensor(0, device=p.device, dtype=p.dtype)

                        # Exponential moving average of gradient values
                        if beta1 > 0:
                            state['exp_avg'] = torch.zeros_like(p.data).detach()
                        # Exponential moving average of squared gradient values
                        state['exp_avg_sq'] = torch.zeros_like(p.data).detach()

                    exp_avg_sq = state['exp_avg_sq']

                    s = state['s']
                    p0 = state['p0']

                    if group_lr > 0.0:
                        # we use d / d0 instead of just d to avoid getting values that are too small
                        sliced_grad = grad.flatten()[::slice_p]
                        d_numerator += (d / d0) * dlr * torch.dot(sliced_grad,
                                                                  p0.data - p.data.flatten()[::slice_p]).item()

                        # Adam EMA updates
                        if beta1 > 0:
                            exp_avg = state['exp_avg']
                            exp_avg.mul_(beta1).add_(grad, alpha=d * (1 - beta1))
                        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=d * d * (1 - beta2))

                        if safeguard_warmup:
                            s.mul_(beta3).add_(sliced_grad, alpha=((d / d0) * d))
                        else:
                            s.mul_(beta3).add_(sliced_grad, alpha=((d / d0) * dlr))
                        d_denom += s.abs().sum().item()

            d_hat = d

            # if we have not done any progres, return
            # if we have any gradients available, will have d_denom > 0 (unless \|g\|=0)
            if d_denom == 0:
                return loss

            if lr > 0.0:
                global_d_numerator = d_numerator
                global_d_denom = d_denom

                d_hat = d_coef * global_d_numerator / global_d_denom
                if d == group['d0']:
                    d = max(d, d_hat)
                d_max = max(d_max, d_hat)
                d = min(d_max, d * growth_rate)

            for group in self.param_groups:
                group['d_numerator'] = global_d_numerator
                group['d_denom'] = global_d_denom
                group['d'] = d
                group['d_max'] = d_max
                group['d_hat'] = d_hat

                decay = group['weight_decay']
                k = group['k']
                eps = group['eps']

                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad.data

                    state = self.state[p]

                    exp_avg_sq = state['exp_avg_sq']

                    state['step'] += 1

                    denom = exp_avg_sq.sqrt().add_(d * eps)

                    # Apply weight decay (decoupled variant)
                    if decay != 0 and decouple:
                        p.data.add_(p.data, alpha=-decay * dlr)

                    ### Take step
                    if beta1 > 0:
                        exp_avg = state['exp_avg']
                        p.data.addcdiv_(exp_avg, denom, value=-dlr)
                    else:
                        p.data.addcdiv_(grad, denom, value=-dlr * d)

                group['k'] = k + 1

            return loss

    model = load(m, net(m), WEIGHTS)
    model[0].bias.data.zero_()  # an all-zero parameter keeps a 0-d p0
    optimizer = Prodigy(model.parameters(), lr=1.0, weight_decay=weight_decay, slice_p=slice_p,
                        safeguard_warmup=safeguard_warmup, use_bias_correction=use_bias_correction)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    losses, ds = [], []
    data = batches(m)
    for i in range(steps):
        x, y = data[i % len(data)]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        ds.append((optimizer.param_groups[0]["d"], optimizer.param_groups[0]["d_hat"]))
    p0 = [optimizer.state[p]["p0"] for p in model.parameters()]
    return losses, ds, params_of(model), p0


@pytest.mark.parametrize("options", [dict(), dict(slice_p=3, weight_decay=0.01, safeguard_warmup=True,
                                                  use_bias_correction=True)])
def test_prodigy_estimates_d_as_pytorch(options):
    # d comes from float32 dot products and sums (.item()): summation order differs
    ours, theirs = run_both(prodigy_program, **options, rtol=2e-4, atol=1e-7)
    if not options:
        assert ours[1][-1][0] > 1e-6  # d grew from d0
    assert ours[3][1].shape == ()  # the zeroed bias keeps a 0-d p0


# ----------------------------------------------------------------------------------------------
# Hypergradient descent (gbaydin/hypergradient-descent): the learning rate becomes a Tensor
# ----------------------------------------------------------------------------------------------


def hypergradient_program(m, which="AdamHD", steps=8):
    torch, F, optim = m.torch, m.F, m.optim
    import warnings
    from functools import reduce

    Optimizer = optim.Optimizer

    class SGDHD(Optimizer):
        def __init__(self, params, lr=0.1, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                     hypergrad_lr=1e-6):
            defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                            nesterov=nesterov, hypergrad_lr=hypergrad_lr)
            if nesterov and (momentum <= 0 or dampening != 0):
                raise ValueError("Nesterov momentum requires a momentum and zero dampening")
            super(SGDHD, self).__init__(params, defaults)

            if len(self.param_groups) != 1:
                raise ValueError("SGDHD doesn't support per-parameter options (parameter groups)")

            self._params = self.param_groups[0]['params']
            self._params_numel = reduce(lambda total, p: total + p.numel(), self._params, 0)

        def _gather_flat_grad_with_weight_decay(self, weight_decay=0):
            views = []
            for p in self._params:
                if p.grad is None:
                    view = torch.zeros_like(p.data)
                elif p.grad.data.is_sparse:
                    view = p.grad.data.to_dense().view(-1)
                else:
                    view = p.grad.data.view(-1)
                if weight_decay != 0:
                    view.add_(weight_decay, p.data.view(-1))
                views.append(view)
            return torch.cat(views, 0)

        def _add_grad(self, step_size, update):
            offset = 0
            for p in self._params:
                numel = p.numel()
                # view as to avoid deprecated pointwise semantics
                p.data.add_(step_size, update[offset:offset + numel].view_as(p.data))
                offset += numel
            assert offset == self._params_numel

        def step(self, closure=None):
            assert len(self.param_groups) == 1

            loss = None
            if closure is not None:
                loss = closure()

            group = self.param_groups[0]
            weight_decay = group['weight_decay']
            momentum = group['momentum']
            dampening = group['dampening']
            nesterov = group['nesterov']

            grad = self._gather_flat_grad_with_weight_decay(weight_decay)

            # NOTE: SGDHD has only global state, but we register it as state for
            # the first param, because this helps with casting in load_state_dict
            state = self.state[self._params[0]]
            # State initialization
            if len(state) == 0:
                state['grad_prev'] = torch.zeros_like(grad)

            grad_prev = state['grad_prev']
            # Hypergradient for SGD
            h = torch.dot(grad, grad_prev)
            # Hypergradient descent of the learning rate:
            group['lr'] += group['hypergrad_lr'] * h

            if momentum != 0:
                if 'momentum_buffer' not in state:
                    buf = state['momentum_buffer'] = torch.zeros_like(grad)
                    buf.mul_(momentum).add_(grad)
                else:
                    buf = state['momentum_buffer']
                    buf.mul_(momentum).add_(1 - dampening, grad)
                if nesterov:
                    grad.add_(momentum, buf)
                else:
                    grad = buf

            state['grad_prev'] = grad

            self._add_grad(-group['lr'], grad)

            return loss

    class AdamHD(Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, hypergrad_lr=1e-8):
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, hypergrad_lr=hypergrad_lr)
            super(AdamHD, self).__init__(params, defaults)

        def step(self, closure=None):
            loss = None
            if closure is not None:
                loss = closure()

            for group in self.param_groups:
                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad.data
                    if grad.is_sparse:
                        raise RuntimeError('Adam does not support sparse gradients, please consider SparseAdam instead')

                    state = self.state[p]

                    # State initialization
                    if len(state) == 0:
                        state['step'] = 0
                        # Exponential moving average of gradient values
                        state['exp_avg'] = torch.zeros_like(p.data)
                        # Exponential moving average of squared gradient values
                        state['exp_avg_sq'] = torch.zeros_like(p.data)

                    exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
                    beta1, beta2 = group['betas']

                    state['step'] += 1

                    if group['weight_decay'] != 0:
                        grad = grad.add(group['weight_decay'], p.data)

                    if state['step'] > 1:
                        prev_bias_correction1 = 1 - beta1 ** (state['step'] - 1)
                        prev_bias_correction2 = 1 - beta2 ** (state['step'] - 1)
                        # Hypergradient for Adam:
                        h = torch.dot(grad.view(-1),
                                      torch.div(exp_avg, exp_avg_sq.sqrt().add_(group['eps'])).view(-1)) \
                            * math.sqrt(prev_bias_correction2) / prev_bias_correction1
                        # Hypergradient descent of the learning rate:
                        group['lr'] += group['hypergrad_lr'] * h

                    # Decay the first and second moment running average coefficient
                    exp_avg.mul_(beta1).add_(1 - beta1, grad)
                    exp_avg_sq.mul_(beta2).addcmul_(1 - beta2, grad, grad)
                    denom = exp_avg_sq.sqrt().add_(group['eps'])

                    bias_correction1 = 1 - beta1 ** state['step']
                    bias_correction2 = 1 - beta2 ** state['step']
                    step_size = group['lr'] * math.sqrt(bias_correction2) / bias_correction1

                    p.data.addcdiv_(-step_size, exp_avg, denom)

            return loss

    model = load(m, net(m), WEIGHTS)
    if which == "SGDHD":
        optimizer = SGDHD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4, hypergrad_lr=1e-3)
    else:
        optimizer = AdamHD(model.parameters(), lr=3e-3, weight_decay=1e-4, hypergrad_lr=1e-4)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    data = batches(m)
    losses, lrs = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the deprecated add_(Number, Tensor) overloads
        for i in range(steps):
            x, y = data[i % len(data)]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            lrs.append(float(optimizer.param_groups[0]["lr"]))
    return losses, lrs, params_of(model), torch.is_tensor(optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("which", ["SGDHD", "AdamHD"])
def test_hypergradient_descent_turns_the_lr_into_a_tensor(which):
    # the hypergradient is a float32 dot product over every parameter
    ours, theirs = run_both(hypergradient_program, which=which, rtol=1e-4, atol=1e-7)
    assert ours[3] is True and ours[1][0] != ours[1][1]
