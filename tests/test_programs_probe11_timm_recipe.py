# ruff: noqa: F841, UP008, UP031  (the programs are kept as their authors wrote them)
"""timm's building blocks and training recipe, run as tests/probe11_timm_common.py says. timm's recipe: Mixup/CutMix
(NumPy beta lambda, ``flip(0)`` mixing by ``mul_``/``add_``, boxes cut by slice assignment, per-element mixing),
LabelSmoothingCrossEntropy, SoftTargetCrossEntropy and ``nn.CrossEntropyLoss(label_smoothing=)`` with probabilities
as targets, ModelEmaV2 over state_dict values (buffers included), no-weight-decay groups by ``ndim <= 1``, BEiT's
layer-wise lr decay, a cosine schedule with warmup by ``LambdaLR``, timm's LAMB written out, SGD(nesterov),
``clip_grad_norm_``, ``clip_grad_value_`` and adaptive gradient clipping by unit-wise norms."""

import math
from copy import deepcopy

import numpy as np

from .probe11_timm_common import param_groups_weight_decay, small_resnet
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# timm's training recipe: Mixup/CutMix, soft-target losses, EMA, parameter groups, schedules,
# optimizers and gradient clipping, on a small ResNet-style network in channels_last
# ----------------------------------------------------------------------------------------------


def one_hot(m, x, num_classes, on_value=1., off_value=0.):
    torch = m.torch
    x = x.long().view(-1, 1)
    return torch.full((x.size()[0], num_classes), off_value, device=x.device).scatter_(1, x, on_value)


def mixup_target(m, target, num_classes, lam=1., smoothing=0.0):
    off_value = smoothing / num_classes
    on_value = 1. - smoothing + off_value
    y1 = one_hot(m, target, num_classes, on_value=on_value, off_value=off_value)
    y2 = one_hot(m, target.flip(0), num_classes, on_value=on_value, off_value=off_value)
    return y1 * lam + y2 * (1. - lam)


def rand_bbox(img_shape, lam, margin=0., count=None):
    ratio = np.sqrt(1 - lam)
    img_h, img_w = img_shape[-2:]
    cut_h, cut_w = int(img_h * ratio), int(img_w * ratio)
    margin_y, margin_x = int(margin * cut_h), int(margin * cut_w)
    cy = np.random.randint(0 + margin_y, img_h - margin_y, size=count)
    cx = np.random.randint(0 + margin_x, img_w - margin_x, size=count)
    yl = np.clip(cy - cut_h // 2, 0, img_h)
    yh = np.clip(cy + cut_h // 2, 0, img_h)
    xl = np.clip(cx - cut_w // 2, 0, img_w)
    xh = np.clip(cx + cut_w // 2, 0, img_w)
    return yl, yh, xl, xh


def cutmix_bbox_and_lam(img_shape, lam, correct_lam=True, count=None):
    yl, yu, xl, xu = rand_bbox(img_shape, lam, count=count)
    if correct_lam:
        bbox_area = (yu - yl) * (xu - xl)
        lam = 1. - bbox_area / float(img_shape[-2] * img_shape[-1])
    return (yl, yu, xl, xu), lam


class Mixup:
    """ timm's Mixup/Cutmix, per 'batch' or per 'elem' """

    def __init__(self, m, mixup_alpha=1., cutmix_alpha=0., prob=1.0, switch_prob=0.5, mode='batch',
                 correct_lam=True, label_smoothing=0.1, num_classes=1000):
        self.m = m
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.mix_prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        self.mode = mode
        self.correct_lam = correct_lam
        self.mixup_enabled = True

    def _params_per_elem(self, batch_size):
        lam = np.ones(batch_size, dtype=np.float32)
        use_cutmix = np.zeros(batch_size, dtype=bool)
        if self.mixup_enabled:
            if self.mixup_alpha > 0. and self.cutmix_alpha > 0.:
                use_cutmix = np.random.rand(batch_size) < self.switch_prob
                lam_mix = np.where(
                    use_cutmix,
                    np.random.beta(self.cutmix_alpha, self.cutmix_alpha, size=batch_size),
                    np.random.beta(self.mixup_alpha, self.mixup_alpha, size=batch_size))
            elif self.mixup_alpha > 0.:
                lam_mix = np.random.beta(self.mixup_alpha, self.mixup_alpha, size=batch_size)
            else:
                use_cutmix = np.ones(batch_size, dtype=bool)
                lam_mix = np.random.beta(self.cutmix_alpha, self.cutmix_alpha, size=batch_size)
            lam = np.where(np.random.rand(batch_size) < self.mix_prob, lam_mix.astype(np.float32), lam)
        return lam, use_cutmix

    def _params_per_batch(self):
        lam = 1.
        use_cutmix = False
        if self.mixup_enabled and np.random.rand() < self.mix_prob:
            if self.mixup_alpha > 0. and self.cutmix_alpha > 0.:
                use_cutmix = np.random.rand() < self.switch_prob
                lam_mix = np.random.beta(self.cutmix_alpha, self.cutmix_alpha) if use_cutmix else \
                    np.random.beta(self.mixup_alpha, self.mixup_alpha)
            elif self.mixup_alpha > 0.:
                lam_mix = np.random.beta(self.mixup_alpha, self.mixup_alpha)
            else:
                use_cutmix = True
                lam_mix = np.random.beta(self.cutmix_alpha, self.cutmix_alpha)
            lam = float(lam_mix)
        return lam, use_cutmix

    def _mix_elem(self, x):
        torch = self.m.torch
        batch_size = len(x)
        lam_batch, use_cutmix = self._params_per_elem(batch_size)
        x_orig = x.clone()  # need to keep an unmodified original for mixing source
        for i in range(batch_size):
            j = batch_size - i - 1
            lam = lam_batch[i]
            if lam != 1.:
                if use_cutmix[i]:
                    (yl, yh, xl, xh), lam = cutmix_bbox_and_lam(x[i].shape, lam, correct_lam=self.correct_lam)
                    x[i][:, yl:yh, xl:xh] = x_orig[j][:, yl:yh, xl:xh]
                    lam_batch[i] = lam
                else:
                    x[i] = x[i] * lam + x_orig[j] * (1 - lam)
        return torch.tensor(lam_batch, device=x.device, dtype=x.dtype).unsqueeze(1)

    def _mix_batch(self, x):
        lam, use_cutmix = self._params_per_batch()
        if lam == 1.:
            return 1.
        if use_cutmix:
            (yl, yh, xl, xh), lam = cutmix_bbox_and_lam(x.shape, lam, correct_lam=self.correct_lam)
            x[:, :, yl:yh, xl:xh] = x.flip(0)[:, :, yl:yh, xl:xh]
        else:
            x_flipped = x.flip(0).mul_(1. - lam)
            x.mul_(lam).add_(x_flipped)
        return lam

    def __call__(self, x, target):
        assert len(x) % 2 == 0, 'Batch size should be even when using this'
        if self.mode == 'elem':
            lam = self._mix_elem(x)
        else:
            lam = self._mix_batch(x)
        target = mixup_target(self.m, target, self.num_classes, lam, self.label_smoothing)
        return x, target


def soft_target_cross_entropy(m):
    nn, F = m.nn, m.F

    class SoftTargetCrossEntropy(nn.Module):
        def __init__(self):
            super(SoftTargetCrossEntropy, self).__init__()

        def forward(self, x, target):
            loss = m.torch.sum(-target * F.log_softmax(x, dim=-1), dim=-1)
            return loss.mean()

    return SoftTargetCrossEntropy()


def label_smoothing_cross_entropy(m, smoothing=0.1):
    nn, F = m.nn, m.F

    class LabelSmoothingCrossEntropy(nn.Module):
        def __init__(self, smoothing=0.1):
            super(LabelSmoothingCrossEntropy, self).__init__()
            assert smoothing < 1.0
            self.smoothing = smoothing
            self.confidence = 1. - smoothing

        def forward(self, x, target):
            logprobs = F.log_softmax(x, dim=-1)
            nll_loss = -logprobs.gather(dim=-1, index=target.unsqueeze(1))
            nll_loss = nll_loss.squeeze(1)
            smooth_loss = -logprobs.mean(dim=-1)
            loss = self.confidence * nll_loss + self.smoothing * smooth_loss
            return loss.mean()

    return LabelSmoothingCrossEntropy(smoothing)


def model_ema_v2(m, model, decay):
    nn = m.nn
    torch = m.torch

    class ModelEmaV2(nn.Module):
        def __init__(self, model, decay=0.9999, device=None):
            super().__init__()
            self.module = deepcopy(model)
            self.module.eval()
            self.decay = decay
            self.device = device

        def _update(self, model, update_fn):
            with torch.no_grad():
                for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
                    if self.device is not None:
                        model_v = model_v.to(device=self.device)
                    ema_v.copy_(update_fn(ema_v, model_v))

        def update(self, model):
            self._update(model, update_fn=lambda e, m: self.decay * e + (1. - self.decay) * m)

        def set(self, model):
            self._update(model, update_fn=lambda e, m: m)

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    return ModelEmaV2(model, decay)


def lamb(m):
    torch = m.torch

    class Lamb(m.optim.Optimizer):
        """ timm's Lamb (NvLamb), as timm writes it (less caution and decoupled decay) """

        def __init__(self, params, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-6,
                     weight_decay=0.01, grad_averaging=True, max_grad_norm=1.0, trust_clip=False,
                     always_adapt=False):
            defaults = dict(lr=lr, bias_correction=bias_correction, betas=betas, eps=eps,
                            weight_decay=weight_decay, grad_averaging=grad_averaging,
                            max_grad_norm=max_grad_norm, trust_clip=trust_clip, always_adapt=always_adapt)
            super().__init__(params, defaults)

        def _get_clip_grad_norm(self):
            max_grad_norm = self.defaults['max_grad_norm']
            if max_grad_norm is None:
                return None
            norms = []
            for group in self.param_groups:
                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad
                    if grad.is_sparse:
                        raise RuntimeError('Lamb does not support sparse gradients, consider SparseAdam instead.')
                    norms.append(torch.linalg.vector_norm(grad))
            global_norm = torch.linalg.vector_norm(torch.stack(norms))
            clip_global_norm = (global_norm / max_grad_norm).clamp_(min=1.0)
            return clip_global_norm

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            clip_grad_norm = self._get_clip_grad_norm()
            for group in self.param_groups:
                bias_correction = 1 if group['bias_correction'] else 0
                beta1, beta2 = group['betas']
                grad_averaging = 1 if group['grad_averaging'] else 0
                beta3 = 1 - beta1 if grad_averaging else 1.0
                if 'step' not in group:
                    group['step'] = torch.tensor(0.0, dtype=torch.float32, device='cpu')
                group['step'].add_(1)
                if not any(p.grad is not None for p in group['params']):
                    continue
                step = group['step'].item()
                if bias_correction:
                    bias_correction1 = 1 - beta1 ** step
                    bias_correction2 = 1 - beta2 ** step
                else:
                    bias_correction1, bias_correction2 = 1.0, 1.0
                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad
                    if clip_grad_norm is not None:
                        grad.div_(clip_grad_norm)
                    state = self.state[p]
                    if len(state) == 0:
                        state['exp_avg'] = torch.zeros_like(p)
                        state['exp_avg_sq'] = torch.zeros_like(p)
                    exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
                    exp_avg.mul_(beta1).add_(grad, alpha=beta3)  # m_t
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v_t
                    denom = (exp_avg_sq.sqrt() / (bias_correction2 ** 0.5)).add_(group['eps'])
                    update = (exp_avg / bias_correction1).div_(denom)
                    weight_decay = group['weight_decay']
                    if weight_decay != 0:
                        update.add_(p, alpha=weight_decay)
                    if weight_decay != 0 or group['always_adapt']:
                        w_norm = p.norm(2.0)
                        g_norm = update.norm(2.0)
                        trust_ratio = w_norm / g_norm
                        trust_ratio = torch.where(
                            w_norm > 0,
                            torch.where(g_norm > 0, trust_ratio, 1.0),
                            1.0,
                        )
                        if group['trust_clip']:
                            trust_ratio = torch.clamp(trust_ratio, max=1.0)
                        update.mul_(trust_ratio)
                    p.add_(update, alpha=-group['lr'])
            return loss

    return Lamb


def unitwise_norm(x, norm_type=2.0):
    if x.ndim <= 1:
        return x.norm(norm_type)
    else:
        return x.norm(norm_type, dim=tuple(range(1, x.ndim)), keepdim=True)


def adaptive_clip_grad(m, parameters, clip_factor=0.01, eps=1e-3, norm_type=2.0):
    torch = m.torch
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    for p in parameters:
        if p.grad is None:
            continue
        p_data = p.detach()
        g_data = p.grad.detach()
        max_norm = unitwise_norm(p_data, norm_type=norm_type).clamp_(min=eps).mul_(clip_factor)
        grad_norm = unitwise_norm(g_data, norm_type=norm_type)
        clipped_grad = g_data * (max_norm / grad_norm.clamp(min=1e-6))
        new_grads = torch.where(grad_norm < max_norm, g_data, clipped_grad)
        p.grad.detach().copy_(new_grads)


def param_groups_layer_decay(model, weight_decay=0.05, layer_decay=.75):
    """ BEiT's layer-wise lr decay: a layer's lr_scale is layer_decay ** (depth below the head) """
    layer_map = {}
    for name, _ in model.named_parameters():
        if name.startswith(('conv1', 'bn1')):
            layer_map[name] = 0
        elif name.startswith('layer1'):
            layer_map[name] = 1
        elif name.startswith('layer2'):
            layer_map[name] = 2
        else:
            layer_map[name] = 3
    num_layers = max(layer_map.values()) + 1
    layer_max = num_layers - 1
    layer_scales = list(layer_decay ** (layer_max - i) for i in range(num_layers))
    param_groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim == 1:
            g_decay = "no_decay"
            this_decay = 0.
        else:
            g_decay = "decay"
            this_decay = weight_decay
        layer_id = layer_map.get(name, layer_max)
        this_scale = layer_scales[layer_id]
        group_name = "layer_%d_%s" % (layer_id, g_decay)
        if group_name not in param_groups:
            param_groups[group_name] = {"lr_scale": this_scale, "weight_decay": this_decay, "params": []}
        param_groups[group_name]["params"].append(param)
    return list(param_groups.values())


def recipe_training(m, weights, opt='adamw', clip_mode='norm', mixup_mode='batch', steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    np.random.seed(42)  # Mixup's lambdas and boxes come from NumPy's global generator
    model = load(m, small_resnet(m), weights)
    model = model.to(memory_format=torch.channels_last)
    base_lr = 0.05 if opt == 'sgd' else 2e-3
    if opt == 'adamw':
        param_groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.6)
        optimizer = optim.AdamW(param_groups, lr=base_lr, betas=(0.9, 0.95))
        scheduler = None
    elif opt == 'lamb':
        optimizer = lamb(m)(param_groups_weight_decay(model, 0.02), lr=base_lr, max_grad_norm=0.5)
        warmup = 2

        def lr_lambda(step):
            if step < warmup:
                return float(step + 1) / warmup
            progress = float(step - warmup) / float(max(1, steps - warmup))
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

        scheduler = optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    else:
        optimizer = optim.SGD(param_groups_weight_decay(model, 1e-4), lr=base_lr, momentum=0.9, nesterov=True)
        warmup_lr = optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=2)
        main_lr = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps - 2, eta_min=0.0)
        scheduler = optim.lr_scheduler.SequentialLR(optimizer, schedulers=[warmup_lr, main_lr], milestones=[2])
    mixup_fn = Mixup(m, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, mode=mixup_mode,
                     label_smoothing=0.1, num_classes=4)
    train_loss_fn = soft_target_cross_entropy(m)
    torchvision_loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    model_ema = model_ema_v2(m, model, decay=0.9)
    rng = np.random.default_rng(3)
    losses, lrs, mixed_inputs, targets = [], [], [], []
    for step in range(steps):
        if opt == 'adamw':  # MAE / BEiT's per-iteration schedule honours each group's lr_scale
            lr = base_lr * (step + 1) / steps
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr * param_group.get("lr_scale", 1.0)
        model.train()
        input = torch.tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
        target = torch.tensor(rng.integers(0, 4, 4))
        input = input.contiguous(memory_format=torch.channels_last)
        input, target = mixup_fn(input, target)
        mixed_inputs.append(input.clone())
        targets.append(target)
        output = model(input)
        loss = train_loss_fn(output, target)
        # torchvision's references: the same soft targets through nn.CrossEntropyLoss(label_smoothing=)
        loss_tv = torchvision_loss_fn(output, target)
        optimizer.zero_grad()
        (loss + 0.5 * loss_tv).backward()
        if clip_mode == 'norm':
            total_norm = nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        elif clip_mode == 'value':
            nn.utils.clip_grad_value_(model.parameters(), 0.01)
        else:
            adaptive_clip_grad(m, model.parameters(), clip_factor=0.02)
        optimizer.step()
        model_ema.update(model)
        if scheduler is not None:
            scheduler.step()
        losses.append((loss.item(), loss_tv.item()))
        lrs.append([g['lr'] for g in optimizer.param_groups])  # the next step's, after scheduler.step()
    grads = {n: p.grad for n, p in model.named_parameters()}
    model.eval()
    model_ema.eval()
    with torch.no_grad():
        probe = torch.tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
        out, out_ema = model(probe), model_ema(probe)
    return dict(losses=losses, lrs=lrs, inputs=mixed_inputs, targets=targets, grads=grads,
                params=dict(model.state_dict()), ema=dict(model_ema.module.state_dict()), out=out,
                out_ema=out_ema)


def check_recipe(opt, clip_mode, mixup_mode):
    weights = weights_of(small_resnet)
    ours, _ = run_both(recipe_training, weights, opt=opt, clip_mode=clip_mode, mixup_mode=mixup_mode,
                       rtol=2e-4, atol=2e-5)
    # the EMA is a running average of the model's state (buffers too): after four updates from the
    # initial weights it lies between them and the model's
    ema_counter = ours["ema"]["bn1.num_batches_tracked"]
    assert ours["params"]["bn1.num_batches_tracked"] == 4 and ema_counter in (0, 1, 2)  # integers truncate
    assert not np.allclose(ours["ema"]["bn1.running_mean"], 0)
    targets = np.stack(ours["targets"])
    np.testing.assert_allclose(targets.sum(-1), 1, rtol=1e-6)
    assert targets.min() >= 0.1 / 4 * 0.99
    return ours


def test_recipe_adamw_layer_decay_clip_norm_mixup_batch():
    ours = check_recipe('adamw', 'norm', 'batch')
    lrs = np.array(ours["lrs"])
    scales = sorted(set(np.round(lrs[0] / lrs[0].max(), 6)))
    np.testing.assert_allclose(scales, [0.6 ** 3, 0.6 ** 2, 0.6, 1.0], rtol=1e-5)


def test_recipe_lamb_cosine_warmup_clip_value_mixup_elem():
    ours = check_recipe('lamb', 'value', 'elem')
    np.testing.assert_allclose(np.array(ours["lrs"])[:, 0],
                               [2e-3, 2e-3, 2e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)), 0.0], atol=1e-12)


def test_recipe_sgd_nesterov_sequential_lr_agc():
    ours = check_recipe('sgd', 'agc', 'batch')
    np.testing.assert_allclose(np.array(ours["lrs"])[:, 0], [0.005 + 0.0225, 0.05, 0.025, 0.0], rtol=1e-6, atol=1e-12)
