# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""timm's building blocks and training recipe, run as tests/probe11_timm_common.py says. torchvision's references
(``set_weight_decay`` by norm classes, an EMA by ``AveragedModel(use_buffers=True)``, accuracy by ``topk``),
BatchNorm folded into the preceding conv by hand for eval, ``channels_last`` (results unchanged), CPU autocast;
timm's foreach code (Adan's multi-tensor step with caution, ModelEmaV3's ``_foreach_lerp_`` over state_dict values)."""

import math
from copy import deepcopy

import numpy as np

from .probe11_timm_common import param_groups_weight_decay, small_resnet
from .pytorch_programs import OURS, load, pytorch, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# torchvision's classification references: set_weight_decay by norm classes, an EMA by
# AveragedModel(use_buffers=True), accuracy by topk, autocast(enabled=False); channels_last
# changing nothing; BatchNorm folded into the conv before it for eval
# ----------------------------------------------------------------------------------------------


def set_weight_decay(m, model, weight_decay, norm_weight_decay=None, norm_classes=None):
    nn = m.nn  # torchvision spells these torch.nn.…: torch_dot_nn_spelling in test_programs_nanogpt.py
    if not norm_classes:
        norm_classes = [
            nn.modules.batchnorm._BatchNorm,
            nn.LayerNorm,
            nn.GroupNorm,
            nn.modules.instancenorm._InstanceNorm,
            nn.LocalResponseNorm,
        ]
    norm_classes = tuple(norm_classes)
    params = {"other": [], "norm": []}
    params_weight_decay = {"other": weight_decay, "norm": norm_weight_decay}

    def _add_params(module, prefix=""):
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if norm_weight_decay is not None and isinstance(module, norm_classes):
                params["norm"].append(p)
            else:
                params["other"].append(p)
        for child_name, child_module in module.named_children():
            child_prefix = f"{prefix}.{child_name}" if prefix != "" else child_name
            _add_params(child_module, prefix=child_prefix)

    _add_params(model)
    param_groups = []
    for key in params:
        if len(params[key]) > 0:
            param_groups.append({"params": params[key], "weight_decay": params_weight_decay[key]})
    return param_groups


def exponential_moving_average(m, model, decay):
    optim = m.optim

    class ExponentialMovingAverage(optim.swa_utils.AveragedModel):
        """Maintains moving averages of model parameters using an exponential decay.
        ``ema_avg = decay * avg_model_param + (1 - decay) * model_param``"""

        def __init__(self, model, decay, device="cpu"):
            def ema_avg(avg_model_param, model_param, num_averaged):
                return decay * avg_model_param + (1 - decay) * model_param

            super().__init__(model, device, ema_avg, use_buffers=True)

    return ExponentialMovingAverage(model, decay)


def accuracy(m, output, target, topk=(1,)):
    """Computes the accuracy over the k top predictions for the specified values of k"""
    torch = m.torch
    with torch.inference_mode():
        maxk = max(topk)
        batch_size = target.size(0)
        if target.ndim == 2:
            target = target.max(dim=1)[1]
        _, pred = output.topk(maxk, 1, True, True)
        pred = pred.t()
        correct = pred.eq(target[None])
        res = []
        for k in topk:
            correct_k = correct[:k].flatten().sum(dtype=torch.float32)
            res.append(correct_k * (100.0 / batch_size))
        return res


def fold_bn(m, conv, bn):
    """The eval-mode conv whose output equals bn(conv(x)): weight * gamma / std, and the bias shifted"""
    torch, nn = m.torch, m.nn
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True)
    with torch.no_grad():
        std = (bn.running_var + bn.eps).sqrt()
        t = (bn.weight / std).reshape(-1, 1, 1, 1)
        fused.weight.copy_(conv.weight * t)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_(bn.bias + (bias - bn.running_mean) * bn.weight / std)
    return fused


def fold_all_bn(m, module):
    nn = m.nn
    children = list(module.named_children())
    for (name, child), (next_name, next_child) in zip(children, children[1:]):
        if isinstance(child, nn.Conv2d) and isinstance(next_child, nn.BatchNorm2d):
            setattr(module, name, fold_bn(m, child, next_child))
            setattr(module, next_name, nn.Identity())
    for name, child in module.named_children():
        fold_all_bn(m, child)
    return module


def torchvision_training(m, weights, channels_last=False, epochs=2, lr_warmup_epochs=1, model_ema_steps=2):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, small_resnet(m), weights)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    parameters = set_weight_decay(m, model, 1e-4, norm_weight_decay=0.0)
    optimizer = optim.SGD(parameters, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    main_lr_scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - lr_warmup_epochs, eta_min=0.0)
    warmup_lr_scheduler = optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=lr_warmup_epochs)
    lr_scheduler = optim.lr_scheduler.SequentialLR(
        optimizer, schedulers=[warmup_lr_scheduler, main_lr_scheduler], milestones=[lr_warmup_epochs])
    model_ema = exponential_moving_average(m, model, decay=1.0 - 0.2)
    rng = np.random.default_rng(5)
    data = [(torch.tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32)),
             torch.tensor(rng.integers(0, 4, 4))) for _ in range(3)]
    losses, accs = [], []
    for epoch in range(epochs):
        model.train()
        for i, (image, target) in enumerate(data):
            if channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", enabled=False):
                output = model(image)
                loss = criterion(output, target)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 2.0)
            optimizer.step()
            if i % model_ema_steps == 0:
                model_ema.update_parameters(model)
                if epoch < lr_warmup_epochs:
                    # Reset ema buffer to keep copying weights during warmup period
                    model_ema.n_averaged.fill_(0)
            acc1, acc3 = accuracy(m, output, target, topk=(1, 3))
            losses.append(loss.item())
            accs.append((acc1.item(), acc3.item()))
        lr_scheduler.step()
    grads = {n: p.grad for n, p in model.named_parameters()}
    model.eval()
    probe = torch.tensor(rng.standard_normal((3, 3, 8, 8)).astype(np.float32))
    with torch.no_grad():
        out, out_ema = model(probe), model_ema(probe)
        folded = fold_all_bn(m, deepcopy(model))
        out_folded = folded(probe)
    n_bn = sum(isinstance(mod, nn.BatchNorm2d) for mod in folded.modules())
    return dict(losses=losses, accs=accs, grads=grads, params=dict(model.state_dict()),
                ema=dict(model_ema.module.state_dict()), n_averaged=model_ema.n_averaged, out=out,
                out_ema=out_ema, out_folded=out_folded, n_bn=n_bn, n_groups=len(parameters),
                lr=optimizer.param_groups[0]["lr"])


def test_torchvision_reference_recipe_and_bn_folding():
    weights = weights_of(small_resnet)
    ours, theirs = run_both(torchvision_training, weights, rtol=2e-4, atol=2e-5)
    assert ours["n_bn"] == 0 and ours["n_groups"] == 2 and int(ours["n_averaged"]) == 2
    np.testing.assert_allclose(ours["out_folded"], ours["out"], rtol=1e-4, atol=1e-5)
    assert not np.allclose(ours["out_ema"], ours["out"], atol=1e-4)
    # the EMA averages the BN running statistics too (use_buffers=True)
    assert not np.allclose(ours["ema"]["bn1.running_var"], ours["params"]["bn1.running_var"])
    assert all(a3 >= a1 for a1, a3 in ours["accs"])


def test_channels_last_changes_no_result():
    weights = weights_of(small_resnet)
    plain_layout, _ = run_both(torchvision_training, weights, channels_last=False, compare=False)
    channels_last, _ = run_both(torchvision_training, weights, channels_last=True, rtol=2e-4, atol=2e-5)
    for key in ("losses", "grads", "params", "out", "out_folded"):
        a, b = plain_layout[key], channels_last[key]
        for k in (a if isinstance(a, dict) else [None]):
            np.testing.assert_allclose(a[k] if k else a, b[k] if k else b, rtol=1e-5, atol=1e-6, err_msg=f"{key} {k}")


def autocast_on_cpu(m):
    torch, nn = m.torch, m.nn
    lin = nn.Linear(4, 3)
    x = torch.ones(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        off = lin(x)
    with torch.autocast(device_type="cpu", dtype=torch.float16):
        on = lin(x)
    return off.dtype == torch.float32, on.dtype == torch.float16


def test_cpu_autocast_float16():
    """A float16 autocast on 'cpu' lowers the linear map to float16, as PyTorch's; ``enabled=False``, as
    torchvision's references pass without a GradScaler, runs in float32."""
    assert autocast_on_cpu(OURS) == (True, True)
    torch_modules = pytorch()
    if torch_modules is not None:
        assert autocast_on_cpu(torch_modules) == (True, True)
    with OURS.torch.autocast("cpu", enabled=False):
        assert OURS.nn.Linear(4, 3)(OURS.torch.ones(2, 4)).dtype == OURS.torch.float32


# ----------------------------------------------------------------------------------------------
# timm's foreach code: Adan's multi-tensor step (with caution) and ModelEmaV3's lerp over state_dict
# values, with the decay warmed up; the single-tensor paths give the same numbers
# ----------------------------------------------------------------------------------------------


def adan(m):
    torch = m.torch

    def _single_tensor_adan(params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, *, beta1, beta2,
                            beta3, bias_correction1, bias_correction2, bias_correction3_sqrt, lr, weight_decay, eps,
                            no_prox, caution):
        for i, param in enumerate(params):
            grad = grads[i]
            exp_avg = exp_avgs[i]
            exp_avg_sq = exp_avg_sqs[i]
            exp_avg_diff = exp_avg_diffs[i]
            neg_grad_or_diff = neg_pre_grads[i]
            neg_grad_or_diff.add_(grad)
            exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)  # m_t
            exp_avg_diff.mul_(beta2).add_(neg_grad_or_diff, alpha=1 - beta2)  # diff_t
            neg_grad_or_diff.mul_(beta2).add_(grad)
            exp_avg_sq.mul_(beta3).addcmul_(neg_grad_or_diff, neg_grad_or_diff, value=1 - beta3)  # n_t
            denom = (exp_avg_sq.sqrt() / bias_correction3_sqrt).add_(eps)
            step_size_diff = lr * beta2 / bias_correction2
            step_size = lr / bias_correction1
            if caution:
                mask = (exp_avg * grad > 0).to(grad.dtype)
                mask.div_(mask.mean().clamp_(min=1e-3))
                exp_avg = exp_avg * mask
            if no_prox:
                param.mul_(1 - lr * weight_decay)
                param.addcdiv_(exp_avg, denom, value=-step_size)
                param.addcdiv_(exp_avg_diff, denom, value=-step_size_diff)
            else:
                param.addcdiv_(exp_avg, denom, value=-step_size)
                param.addcdiv_(exp_avg_diff, denom, value=-step_size_diff)
                param.div_(1 + lr * weight_decay)
            neg_grad_or_diff.zero_().add_(grad, alpha=-1.0)

    def _multi_tensor_adan(params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, *, beta1, beta2,
                           beta3, bias_correction1, bias_correction2, bias_correction3_sqrt, lr, weight_decay, eps,
                           no_prox, caution):
        if len(params) == 0:
            return
        torch._foreach_add_(neg_pre_grads, grads)
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)  # m_t
        torch._foreach_mul_(exp_avg_diffs, beta2)
        torch._foreach_add_(exp_avg_diffs, neg_pre_grads, alpha=1 - beta2)  # diff_t
        torch._foreach_mul_(neg_pre_grads, beta2)
        torch._foreach_add_(neg_pre_grads, grads)
        torch._foreach_mul_(exp_avg_sqs, beta3)
        torch._foreach_addcmul_(exp_avg_sqs, neg_pre_grads, neg_pre_grads, value=1 - beta3)  # n_t
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction3_sqrt)
        torch._foreach_add_(denom, eps)
        step_size_diff = lr * beta2 / bias_correction2
        step_size = lr / bias_correction1
        if caution:
            masks = torch._foreach_mul(exp_avgs, grads)
            masks = [(m > 0).to(g.dtype) for m, g in zip(masks, grads)]
            mask_scale = [m.mean() for m in masks]
            torch._foreach_maximum_(mask_scale, 1e-3)
            torch._foreach_div_(masks, mask_scale)
            exp_avgs = torch._foreach_mul(exp_avgs, masks)
        if no_prox:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
            torch._foreach_addcdiv_(params, exp_avgs, denom, value=-step_size)
            torch._foreach_addcdiv_(params, exp_avg_diffs, denom, value=-step_size_diff)
        else:
            torch._foreach_addcdiv_(params, exp_avgs, denom, value=-step_size)
            torch._foreach_addcdiv_(params, exp_avg_diffs, denom, value=-step_size_diff)
            torch._foreach_div_(params, 1 + lr * weight_decay)
        torch._foreach_zero_(neg_pre_grads)
        torch._foreach_add_(neg_pre_grads, grads, alpha=-1.0)

    class Adan(m.optim.Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, no_prox=False,
                     caution=False, foreach=None):
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, no_prox=no_prox,
                            caution=caution, foreach=foreach)
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            try:
                has_scalar_maximum = 'Scalar' in torch.ops.aten._foreach_maximum_.overloads()
            except Exception:
                has_scalar_maximum = False
            for group in self.param_groups:
                params_with_grad, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads = [], [], [], [], [], []
                beta1, beta2, beta3 = group['betas']
                if 'step' in group:
                    group['step'] += 1
                else:
                    group['step'] = 1
                bias_correction1 = 1.0 - beta1 ** group['step']
                bias_correction2 = 1.0 - beta2 ** group['step']
                bias_correction3 = 1.0 - beta3 ** group['step']
                for p in group['params']:
                    if p.grad is None:
                        continue
                    params_with_grad.append(p)
                    grads.append(p.grad)
                    state = self.state[p]
                    if len(state) == 0:
                        state['exp_avg'] = torch.zeros_like(p)
                        state['exp_avg_sq'] = torch.zeros_like(p)
                        state['exp_avg_diff'] = torch.zeros_like(p)
                    if 'neg_pre_grad' not in state or group['step'] == 1:
                        state['neg_pre_grad'] = -p.grad.clone()
                    exp_avgs.append(state['exp_avg'])
                    exp_avg_sqs.append(state['exp_avg_sq'])
                    exp_avg_diffs.append(state['exp_avg_diff'])
                    neg_pre_grads.append(state['neg_pre_grad'])
                if not params_with_grad:
                    continue
                if group['foreach'] is None:
                    use_foreach = not group['caution'] or has_scalar_maximum
                else:
                    use_foreach = group['foreach']
                func = _multi_tensor_adan if use_foreach else _single_tensor_adan
                func(params_with_grad, grads, exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs,
                     exp_avg_diffs=exp_avg_diffs, neg_pre_grads=neg_pre_grads, beta1=beta1, beta2=beta2,
                     beta3=beta3, bias_correction1=bias_correction1, bias_correction2=bias_correction2,
                     bias_correction3_sqrt=math.sqrt(bias_correction3), lr=group['lr'],
                     weight_decay=group['weight_decay'], eps=group['eps'], no_prox=group['no_prox'],
                     caution=group['caution'])
            return loss

    return Adan


def model_ema_v3(m, model, **kwargs):
    torch, nn = m.torch, m.nn

    class ModelEmaV3(nn.Module):
        def __init__(self, model, decay=0.9999, min_decay=0.0, update_after_step=0, use_warmup=False,
                     warmup_gamma=1.0, warmup_power=2 / 3, device=None, foreach=True, exclude_buffers=False):
            super().__init__()
            self.module = deepcopy(model)
            self.module.eval()
            self.decay = decay
            self.min_decay = min_decay
            self.update_after_step = update_after_step
            self.use_warmup = use_warmup
            self.warmup_gamma = warmup_gamma
            self.warmup_power = warmup_power
            self.foreach = foreach
            self.device = device
            self.exclude_buffers = exclude_buffers

        def get_decay(self, step=None):
            if step is None:
                return self.decay
            step = max(0, step - self.update_after_step - 1)
            if step <= 0:
                return 0.0
            if self.use_warmup:
                decay = 1 - (1 + step / self.warmup_gamma) ** -self.warmup_power
                decay = max(min(decay, self.decay), self.min_decay)
            else:
                decay = self.decay
            return decay

        @torch.no_grad()
        def update(self, model, step=None):
            decay = self.get_decay(step)
            if self.exclude_buffers:
                self.apply_update_no_buffers_(model, decay)
            else:
                self.apply_update_(model, decay)

        def apply_update_(self, model, decay):
            if self.foreach:
                ema_lerp_values = []
                model_lerp_values = []
                for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
                    if ema_v.is_floating_point():
                        ema_lerp_values.append(ema_v)
                        model_lerp_values.append(model_v)
                    else:
                        ema_v.copy_(model_v)
                torch._foreach_lerp_(ema_lerp_values, model_lerp_values, weight=1. - decay)
            else:
                for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
                    if ema_v.is_floating_point():
                        ema_v.lerp_(model_v.to(device=self.device), weight=1. - decay)
                    else:
                        ema_v.copy_(model_v.to(device=self.device))

        def apply_update_no_buffers_(self, model, decay):
            ema_params = tuple(self.module.parameters())
            model_params = tuple(model.parameters())
            if self.foreach:
                torch._foreach_lerp_(ema_params, model_params, weight=1. - decay)
            else:
                for ema_p, model_p in zip(ema_params, model_params):
                    ema_p.lerp_(model_p.to(device=self.device), weight=1. - decay)
            for ema_b, model_b in zip(self.module.buffers(), model.buffers()):
                ema_b.copy_(model_b.to(device=self.device))

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    return ModelEmaV3(model, **kwargs)


def adan_ema_training(m, weights, foreach=True, caution=True, no_prox=False, steps=4):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, small_resnet(m), weights)
    optimizer = adan(m)(param_groups_weight_decay(model, 0.02), lr=1e-2, caution=caution, no_prox=no_prox,
                        foreach=foreach)
    emas = [model_ema_v3(m, model, decay=0.99, use_warmup=True, warmup_power=3 / 4, foreach=foreach),
            model_ema_v3(m, model, decay=0.9, foreach=foreach, exclude_buffers=True, update_after_step=1)]
    rng = np.random.default_rng(9)
    losses = []
    for step in range(steps):
        model.train()
        x = torch.tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
        y = torch.tensor(rng.integers(0, 4, 4))
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for ema in emas:
            ema.update(model, step=step + 2)
        losses.append(loss.item())
    return dict(
        losses=losses,
        params=dict(model.state_dict()),
        ema=dict(emas[0].module.state_dict()),
        ema_params=dict(emas[1].module.state_dict()),
        state=[optimizer.state[p]["exp_avg_diff"] for p in model.parameters()],
    )


def test_adan_foreach_and_model_ema_v3():
    weights = weights_of(small_resnet)
    by_foreach, _ = run_both(adan_ema_training, weights, foreach=True, rtol=2e-4, atol=2e-5)
    one_by_one, _ = run_both(adan_ema_training, weights, foreach=False, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(by_foreach["losses"], one_by_one["losses"], rtol=1e-5)
    for key in ("params", "ema", "ema_params"):
        for k in by_foreach[key]:
            np.testing.assert_allclose(by_foreach[key][k], one_by_one[key][k], rtol=1e-5, atol=1e-6, err_msg=k)
    # ModelEmaV3 copies integer buffers; with exclude_buffers it copies every buffer
    assert by_foreach["ema"]["bn1.num_batches_tracked"] == 4
    np.testing.assert_array_equal(
        by_foreach["ema_params"]["bn1.running_mean"], by_foreach["params"]["bn1.running_mean"]
    )
    assert not np.allclose(by_foreach["ema"]["bn1.running_mean"], by_foreach["params"]["bn1.running_mean"])
    run_both(adan_ema_training, weights, caution=False, no_prox=True, rtol=2e-4, atol=2e-5)
