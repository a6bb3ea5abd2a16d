# ruff: noqa: UP008, UP032  (the programs are kept as their authors wrote them)
"""Optimizers as research code writes them, subclassing ``torch.optim.Optimizer``, run as
tests/probe18_optimizers_common.py says. Adaptive moments: Hugging Face's Adafactor (factored row/column second
moments, relative step from the parameter's RMS, update clipping, a 0-d Tensor ``alpha``), also on float16 parameters
(a float32 copy, ``copy_`` back); AdaBelief as its authors' package writes it (RAdam's rectification buffered per
group, amsgrad's ``torch.max(out=)``, coupled and fixed weight decay, ``__setstate__``); NovoGrad (layer-wise 0-d
second moments, ``torch.max(out=)``) under a CyclicLR cycling its beta1."""

import copy
import math

import numpy as np
import pytest

from .probe18_optimizers_common import WEIGHTS, batches, net, params_of
from .pytorch_programs import load, run_both

# ----------------------------------------------------------------------------------------------
# Hugging Face's Adafactor (transformers.optimization.Adafactor)
# ----------------------------------------------------------------------------------------------


def hf_adafactor_program(m, dtype="float32", steps=8, **options):
    torch, F, optim = m.torch, m.F, m.optim
    Optimizer = optim.Optimizer

    class Adafactor(Optimizer):
        def __init__(self, params, lr=None, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None,
                     weight_decay=0.0, scale_parameter=True, relative_step=True, warmup_init=False):
            if lr is not None and relative_step:
                raise ValueError("Cannot combine manual `lr` and `relative_step=True` options")
            if warmup_init and not relative_step:
                raise ValueError("`warmup_init=True` requires `relative_step=True`")

            defaults = {
                "lr": lr,
                "eps": eps,
                "clip_threshold": clip_threshold,
                "decay_rate": decay_rate,
                "beta1": beta1,
                "weight_decay": weight_decay,
                "scale_parameter": scale_parameter,
                "relative_step": relative_step,
                "warmup_init": warmup_init,
            }
            super().__init__(params, defaults)

        @staticmethod
        def _get_lr(param_group, param_state):
            rel_step_sz = param_group["lr"]
            if param_group["relative_step"]:
                min_step = 1e-6 * param_state["step"] if param_group["warmup_init"] else 1e-2
                rel_step_sz = min(min_step, 1.0 / math.sqrt(param_state["step"]))
            param_scale = 1.0
            if param_group["scale_parameter"]:
                param_scale = max(param_group["eps"][1], param_state["RMS"])
            return param_scale * rel_step_sz

        @staticmethod
        def _get_options(param_group, param_shape):
            factored = len(param_shape) >= 2
            use_first_moment = param_group["beta1"] is not None
            return factored, use_first_moment

        @staticmethod
        def _rms(tensor):
            return tensor.norm(2) / (tensor.numel() ** 0.5)

        @staticmethod
        def _approx_sq_grad(exp_avg_sq_row, exp_avg_sq_col):
            # copy from fairseq's adafactor implementation:
            # https://github.com/huggingface/transformers/blob/8395f14de6068012787d83989c3627c3df6a252b/src/transformers/optimization.py#L505
            r_factor = (exp_avg_sq_row / exp_avg_sq_row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
            c_factor = exp_avg_sq_col.unsqueeze(-2).rsqrt()
            return torch.mul(r_factor, c_factor)

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                loss = closure()

            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad
                    if grad.dtype in {torch.float16, torch.bfloat16}:
                        grad = grad.float()
                    if grad.is_sparse:
                        raise RuntimeError("Adafactor does not support sparse gradients.")

                    state = self.state[p]
                    grad_shape = grad.shape

                    factored, use_first_moment = self._get_options(group, grad_shape)
                    # State Initialization
                    if len(state) == 0:
                        state["step"] = 0

                        if use_first_moment:
                            # Exponential moving average of gradient values
                            state["exp_avg"] = torch.zeros_like(grad)
                        if factored:
                            state["exp_avg_sq_row"] = torch.zeros(grad_shape[:-1]).to(grad)
                            state["exp_avg_sq_col"] = torch.zeros(grad_shape[:-2] + grad_shape[-1:]).to(grad)
                        else:
                            state["exp_avg_sq"] = torch.zeros_like(grad)

                        state["RMS"] = 0
                    else:
                        if use_first_moment:
                            state["exp_avg"] = state["exp_avg"].to(grad)
                        if factored:
                            state["exp_avg_sq_row"] = state["exp_avg_sq_row"].to(grad)
                            state["exp_avg_sq_col"] = state["exp_avg_sq_col"].to(grad)
                        else:
                            state["exp_avg_sq"] = state["exp_avg_sq"].to(grad)

                    p_data_fp32 = p
                    if p.dtype in {torch.float16, torch.bfloat16}:
                        p_data_fp32 = p_data_fp32.float()

                    state["step"] += 1
                    state["RMS"] = self._rms(p_data_fp32)
                    lr = self._get_lr(group, state)

                    beta2t = 1.0 - math.pow(state["step"], group["decay_rate"])
                    update = (grad**2) + group["eps"][0]
                    if factored:
                        exp_avg_sq_row = state["exp_avg_sq_row"]
                        exp_avg_sq_col = state["exp_avg_sq_col"]

                        exp_avg_sq_row.mul_(beta2t).add_(update.mean(dim=-1), alpha=(1.0 - beta2t))
                        exp_avg_sq_col.mul_(beta2t).add_(update.mean(dim=-2), alpha=(1.0 - beta2t))

                        # Approximation of exponential moving average of square of gradient
                        update = self._approx_sq_grad(exp_avg_sq_row, exp_avg_sq_col)
                        update.mul_(grad)
                    else:
                        exp_avg_sq = state["exp_avg_sq"]

                        exp_avg_sq.mul_(beta2t).add_(update, alpha=(1.0 - beta2t))
                        update = exp_avg_sq.rsqrt().mul_(grad)

                    update.div_((self._rms(update) / group["clip_threshold"]).clamp_(min=1.0))
                    update.mul_(lr)

                    if use_first_moment:
                        exp_avg = state["exp_avg"]
                        exp_avg.mul_(group["beta1"]).add_(update, alpha=(1 - group["beta1"]))
                        update = exp_avg

                    if group["weight_decay"] != 0:
                        p_data_fp32.add_(p_data_fp32, alpha=(-group["weight_decay"] * lr))

                    p_data_fp32.add_(-update)

                    if p.dtype in {torch.float16, torch.bfloat16}:
                        p.copy_(p_data_fp32)

            return loss

    model = load(m, net(m), WEIGHTS).to(getattr(torch, dtype))
    optimizer = Adafactor(model.parameters(), **options)
    losses = []
    data = batches(m)
    for i in range(steps):
        x, y = data[i % len(data)]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x.to(getattr(torch, dtype))).float(), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    states = [{k: v for k, v in optimizer.state[p].items()} for p in model.parameters()]
    return losses, [p.float() for p in params_of(model)], states


ADAFACTOR_OPTIONS = [
    dict(),  # relative step, scale by the parameter's RMS
    dict(lr=1e-2, relative_step=False, scale_parameter=False, warmup_init=False, beta1=0.9, weight_decay=0.01),
    dict(warmup_init=True, clip_threshold=0.5),
]


@pytest.mark.parametrize("options", ADAFACTOR_OPTIONS)
def test_hugging_faces_adafactor(options):
    # the row/column means and the RMS (a norm) are float32 reductions
    ours, theirs = run_both(hf_adafactor_program, **options, rtol=1e-4, atol=1e-6)
    first = ours[2][0]
    assert first["exp_avg_sq_row"].shape == (4, 1, 3) and first["exp_avg_sq_col"].shape == (4, 1, 3)
    assert first["RMS"].shape == () and first["step"] == 8


def test_hugging_faces_adafactor_on_float16_parameters():
    # its float32 copy of each float16 parameter, copied back by copy_; the float16 forward matches PyTorch's
    # bit for bit (a flattened convolution output into Linear: addmm's single rounding), the float32 reductions
    # of the update (RMS, row/column means) round a float16 parameter an ulp apart now and then
    ours, theirs = run_both(hf_adafactor_program, dtype="float16", steps=4, rtol=1e-3, atol=1e-4)
    assert ours[2][0]["exp_avg_sq_row"].dtype == np.float32  # the state of the float32 gradient
    if theirs is not None:
        assert ours[0][0] == theirs[0][0]  # the first forward, bit for bit


# ----------------------------------------------------------------------------------------------
# NovoGrad (layer-wise second moments) under CyclicLR cycling its beta1
# ----------------------------------------------------------------------------------------------


def novograd_program(m, steps=10, amsgrad=True):
    torch, F, optim = m.torch, m.F, m.optim
    Optimizer = optim.Optimizer

    class NovoGrad(Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.95, 0.98), eps=1e-8, weight_decay=0, grad_averaging=False,
                     amsgrad=False):
            if not 0.0 <= lr:
                raise ValueError("Invalid learning rate: {}".format(lr))
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, grad_averaging=grad_averaging,
                            amsgrad=amsgrad)
            super(NovoGrad, self).__init__(params, defaults)

        def __setstate__(self, state):
            super(NovoGrad, self).__setstate__(state)
            for group in self.param_groups:
                group.setdefault('amsgrad', False)

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
                        raise RuntimeError('Sparse gradients are not supported.')
                    amsgrad = group['amsgrad']

                    state = self.state[p]

                    # State initialization
                    if len(state) == 0:
                        state['step'] = 0
                        # Exponential moving average of gradient values
                        state['exp_avg'] = torch.zeros_like(p.data)
                        # Exponential moving average of squared gradient values
                        state['exp_avg_sq'] = torch.zeros([]).to(state['exp_avg'].device)
                        if amsgrad:
                            # Maintains max of all exp. moving avg. of sq. grad. values
                            state['max_exp_avg_sq'] = torch.zeros([]).to(state['exp_avg'].device)

                    exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
                    if amsgrad:
                        max_exp_avg_sq = state['max_exp_avg_sq']
                    beta1, beta2 = group['betas']

                    state['step'] += 1

                    norm = torch.sum(torch.pow(grad, 2))

                    if exp_avg_sq == 0:
                        exp_avg_sq.copy_(norm)
                    else:
                        exp_avg_sq.mul_(beta2).add_(norm, alpha=1 - beta2)

                    if amsgrad:
                        # Maintains the maximum of all 2nd moment running avg. till now
                        torch.max(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
                        # Use the max. for normalizing running avg. of gradient
                        denom = max_exp_avg_sq.sqrt().add_(group['eps'])
                    else:
                        denom = exp_avg_sq.sqrt().add_(group['eps'])

                    grad.div_(denom)
                    if group['weight_decay'] != 0:
                        grad.add_(p.data, alpha=group['weight_decay'])
                    if group['grad_averaging']:
                        grad.mul_(1 - beta1)
                    exp_avg.mul_(beta1).add_(grad)

                    p.data.add_(exp_avg, alpha=-group['lr'])

            return loss

    model = load(m, net(m), WEIGHTS)
    optimizer = NovoGrad(model.parameters(), lr=0.01, weight_decay=1e-3, grad_averaging=True, amsgrad=amsgrad)
    scheduler = optim.lr_scheduler.CyclicLR(optimizer, base_lr=0.005, max_lr=0.02, step_size_up=3,
                                            mode="triangular2", cycle_momentum=True, base_momentum=0.85,
                                            max_momentum=0.95)
    losses, lrs, beta1s = [], [], []
    data = batches(m)
    for i in range(steps):
        x, y = data[i % len(data)]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        lrs.append(scheduler.get_last_lr()[0])
        beta1s.append(optimizer.param_groups[0]["betas"][0])
    states = [(s["exp_avg_sq"], s["max_exp_avg_sq"], s["exp_avg"])
              for s in (optimizer.state[p] for p in model.parameters())]
    return losses, lrs, beta1s, params_of(model), states


def test_novograd_under_cyclic_lr_cycling_its_beta1():
    # the layer-wise second moment is a float32 sum of squares
    ours, theirs = run_both(novograd_program, rtol=1e-5, atol=1e-7)
    assert ours[4][0][0].shape == () and ours[2][0] != ours[2][2]


# ----------------------------------------------------------------------------------------------
# AdaBelief as its authors' package writes it (rectification's buffer, amsgrad by torch.max(out=))
# ----------------------------------------------------------------------------------------------


def adabelief_program(m, steps=10, rectify=True, amsgrad=False, weight_decouple=True, fixed_decay=False):
    torch, F, optim = m.torch, m.F, m.optim
    Optimizer = optim.Optimizer

    class AdaBelief(Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0, amsgrad=False,
                     weight_decouple=True, fixed_decay=False, rectify=True, degenerated_to_sgd=True):
            if not 0.0 <= lr:
                raise ValueError("Invalid learning rate: {}".format(lr))
            if not 0.0 <= eps:
                raise ValueError("Invalid epsilon value: {}".format(eps))
            if not 0.0 <= betas[0] < 1.0:
                raise ValueError("Invalid beta parameter at index 0: {}".format(betas[0]))
            if not 0.0 <= betas[1] < 1.0:
                raise ValueError("Invalid beta parameter at index 1: {}".format(betas[1]))

            self.degenerated_to_sgd = degenerated_to_sgd
            if isinstance(params, (list, tuple)) and len(params) > 0 and isinstance(params[0], dict):
                for param in params:
                    if 'betas' in param and (param['betas'][0] != betas[0] or param['betas'][1] != betas[1]):
                        param['buffer'] = [[None, None, None] for _ in range(10)]

            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                            buffer=[[None, None, None] for _ in range(10)])
            super(AdaBelief, self).__init__(params, defaults)

            self.degenerated_to_sgd = degenerated_to_sgd
            self.weight_decouple = weight_decouple
            self.rectify = rectify
            self.fixed_decay = fixed_decay

        def __setstate__(self, state):
            super(AdaBelief, self).__setstate__(state)
            for group in self.param_groups:
                group.setdefault('amsgrad', False)

        def reset(self):
            for group in self.param_groups:
                for p in group['params']:
                    state = self.state[p]
                    amsgrad = group['amsgrad']

                    # State initialization
                    state['rho_inf'] = 2.0 / (1.0 - group['betas'][1]) - 1.0
                    state['step'] = 0
                    # Exponential moving average of gradient values
                    state['exp_avg'] = torch.zeros_like(p.data, memory_format=torch.preserve_format)
                    # Exponential moving average of squared gradient values
                    state['exp_avg_var'] = torch.zeros_like(p.data, memory_format=torch.preserve_format)
                    if amsgrad:
                        # Maintains max of all exp. moving avg. of sq. grad. values
                        state['max_exp_avg_var'] = torch.zeros_like(p.data, memory_format=torch.preserve_format)

        def step(self, closure=None):
            loss = None
            if closure is not None:
                loss = closure()

            for group in self.param_groups:
                for p in group['params']:
                    if p.grad is None:
                        continue

                    # cast data type
                    half_precision = False
                    if p.data.dtype == torch.float16:
                        half_precision = True
                        p.data = p.data.float()
                        p.grad = p.grad.float()

                    grad = p.grad.data
                    if grad.is_sparse:
                        raise RuntimeError(
                            'AdaBelief does not support sparse gradients, please consider SparseAdam instead')
                    amsgrad = group['amsgrad']

                    state = self.state[p]

                    beta1, beta2 = group['betas']

                    # State initialization
                    if len(state) == 0:
                        state['rho_inf'] = 2.0 / (1.0 - beta2) - 1.0
                        state['step'] = 0
                        # Exponential moving average of gradient values
                        state['exp_avg'] = torch.zeros_like(p.data, memory_format=torch.preserve_format)
                        # Exponential moving average of squared gradient values
                        state['exp_avg_var'] = torch.zeros_like(p.data, memory_format=torch.preserve_format)
                        if amsgrad:
                            # Maintains max of all exp. moving avg. of sq. grad. values
                            state['max_exp_avg_var'] = torch.zeros_like(p.data, memory_format=torch.preserve_format)

                    # perform weight decay, check if decoupled weight decay
                    if self.weight_decouple:
                        if not self.fixed_decay:
                            p.data.mul_(1.0 - group['lr'] * group['weight_decay'])
                        else:
                            p.data.mul_(1.0 - group['weight_decay'])
                    else:
                        if group['weight_decay'] != 0:
                            grad.add_(p.data, alpha=group['weight_decay'])

                    # get current state variable
                    exp_avg, exp_avg_var = state['exp_avg'], state['exp_avg_var']

                    state['step'] += 1
                    bias_correction1 = 1 - beta1 ** state['step']
                    bias_correction2 = 1 - beta2 ** state['step']

                    # Update first and second moment running average
                    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                    grad_residual = grad - exp_avg
                    exp_avg_var.mul_(beta2).addcmul_(grad_residual, grad_residual, value=1 - beta2)

                    if amsgrad:
                        max_exp_avg_var = state['max_exp_avg_var']
                        # Maintains the maximum of all 2nd moment running avg. till now
                        torch.max(max_exp_avg_var, exp_avg_var.add_(group['eps']), out=max_exp_avg_var)

                        # Use the max. for normalizing running avg. of gradient
                        denom = (max_exp_avg_var.sqrt() / math.sqrt(bias_correction2)).add_(group['eps'])
                    else:
                        denom = (exp_avg_var.add_(group['eps']).sqrt() / math.sqrt(bias_correction2)).add_(group['eps'])

                    # update
                    if not self.rectify:
                        # Default update
                        step_size = group['lr'] / bias_correction1
                        p.data.addcdiv_(exp_avg, denom, value=-step_size)

                    else:  # Rectified update, forked from RAdam
                        buffered = group['buffer'][int(state['step'] % 10)]
                        if state['step'] == buffered[0]:
                            N_sma, step_size = buffered[1], buffered[2]
                        else:
                            buffered[0] = state['step']
                            beta2_t = beta2 ** state['step']
                            N_sma_max = 2 / (1 - beta2) - 1
                            N_sma = N_sma_max - 2 * state['step'] * beta2_t / (1 - beta2_t)
                            buffered[1] = N_sma

                            # more conservative since it's an approximated value
                            if N_sma >= 5:
                                step_size = math.sqrt(
                                    (1 - beta2_t) * (N_sma - 4) / (N_sma_max - 4) * (N_sma - 2) / N_sma * N_sma_max / (
                                        N_sma_max - 2)) / (1 - beta1 ** state['step'])
                            elif self.degenerated_to_sgd:
                                step_size = 1.0 / (1 - beta1 ** state['step'])
                            else:
                                step_size = -1
                            buffered[2] = step_size

                        if N_sma >= 5:
                            denom = exp_avg_var.sqrt().add_(group['eps'])
                            p.data.addcdiv_(exp_avg, denom, value=-step_size * group['lr'])
                        elif step_size > 0:
                            p.data.add_(exp_avg, alpha=-step_size * group['lr'])

                    if half_precision:
                        p.data = p.data.half()
                        p.grad = p.grad.half()

            return loss

    model = load(m, net(m), WEIGHTS)
    optimizer = AdaBelief([{"params": model[0].parameters(), "betas": (0.8, 0.9)},
                           {"params": model[3:].parameters()}], lr=3e-3, betas=(0.9, 0.999), eps=1e-12,
                          weight_decay=1e-2, amsgrad=amsgrad, weight_decouple=weight_decouple,
                          fixed_decay=fixed_decay, rectify=rectify)
    data = batches(m)
    losses = []
    for i in range(steps):
        x, y = data[i % len(data)]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if i == steps // 2:
            saved = copy.deepcopy(optimizer.state_dict())
            optimizer.load_state_dict(saved)  # (through __setstate__)
    buffers = [g["buffer"][: 3] for g in optimizer.param_groups]
    return losses, params_of(model), buffers, [optimizer.state[p]["exp_avg_var"] for p in model.parameters()]


@pytest.mark.parametrize("options", [dict(), dict(rectify=False, amsgrad=True, weight_decouple=False),
                                     dict(fixed_decay=True, amsgrad=True)])
def test_adabelief_as_its_authors_package_writes_it(options):
    # elementwise updates, but the model's forward sums in float32
    ours, theirs = run_both(adabelief_program, **options, rtol=1e-5, atol=1e-6)
    if options.get("rectify", True):
        assert ours[2][0][1][0] == 1 and ours[2][1][1][0] == 1  # each group's own buffer (group 0's betas differ)
