# ruff: noqa: B007, B008, B023, E501, E731, E741, F841, UP004, UP008, UP031, UP034  (the programs are kept as their authors wrote them)
"""Paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them (labml_nn/...),
rewritten without labml's config and tracker plumbing but keeping the authors' tensor idioms, each run as a program
on chainrule and on PyTorch from the same weights and data (tests/pytorch_programs.py), comparing forwards, losses,
gradients and several optimizer steps (float64 to about 1e-8, float32 to its rounding), with hand checks in NumPy.

- optimizers: GenericAdaptiveOptimizer, WeightDecay, Adam, AMSGrad, RAdam, AdaBelief, Noam (subclasses of
  ``Optimizer`` with ``@torch.no_grad()`` steps over ``self.state[p]``, ``param.data.addcdiv_``,
  ``torch.maximum(out=)``, state_dict resume, ``add_param_group``), AdamFP16 (float16 parameters, float32 state,
  ``param.data =``), AdamWarmupCosineDecay and Sophia.
- activations and normalisation: fuzzy tiling activation, Swish; batch/layer/instance/group norm by hand against
  ``nn``'s, batch-channel norm, weight standardisation (``torch.var_mean``) in an ``nn.Conv2d`` subclass; DeepNorm.
- transformers: labml's MHA (``ibhd,jbhd->ijbh``), Feedback transformer (plain, and with its ``Stack``
  ``autograd.Function``), fast weights (DPFP), Primer EZ, gMLP, AFT-local, Hourglass, RoPE/ALiBi/Transformer-XL,
  FNet with label smoothing, Switch/GLU variants/MLP-Mixer/ViT, RETRO with MLM masking, Compressive Transformer,
  GPT's weight-decay groups with distillation, the NLP data pipelines, GPT-NeoX layers (partition merging through
  ``.data`` slices, KV cache, bias fine-tuning).
- others: capsule networks, HyperLSTM, evidential losses (``digamma``/``lgamma``), PPO with GAE, dueling double-Q,
  GAT/GATv2, ConvMixer, LoRA, sketch-RNN (bidirectional LSTM VAE, bivariate Gaussian mixture), PonderNet, RWKV
  (``ZeroPad2d`` with a negative pad, the ``L2Wrap`` Function), recurrent highway networks with the samplers,
  StyleGAN 2 with gradient and path-length penalties, CycleGAN, and a U-Net generator under WGAN-GP.
"""

import copy
import importlib
import math
import types
from types import SimpleNamespace

import numpy as np
import pytest

from .pytorch_programs import OURS, assert_same, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# labml_nn/optimizers: Adam, AMSGrad, RAdam, AdaBelief, Noam as Optimizer subclasses
# ----------------------------------------------------------------------------------------------


def labml_optimizer_family(m):
    """labml.ai's optimizers (labml_nn/optimizers), as its authors write them: a generic adaptive optimizer over
    torch.optim.Optimizer, a weight decay, Adam and its descendants."""
    torch, optim = m.torch, m.optim
    Optimizer = optim.Optimizer

    class GenericAdaptiveOptimizer(Optimizer):
        def __init__(self, params, defaults, lr, betas, eps):
            if not 0.0 <= lr:
                raise ValueError(f"Invalid learning rate: {lr}")
            if not 0.0 <= eps:
                raise ValueError(f"Invalid epsilon value: {eps}")
            if not 0.0 <= betas[0] < 1.0:
                raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
            if not 0.0 <= betas[1] < 1.0:
                raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
            defaults.update(dict(lr=lr, betas=betas, eps=eps))
            super().__init__(params, defaults)

        def init_state(self, state, group, param):
            pass

        def step_param(self, state, group, grad, param):
            pass

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                for param in group['params']:
                    if param.grad is None:
                        continue
                    grad = param.grad.data
                    if grad.is_sparse:
                        raise RuntimeError('GenericAdaptiveOptimizer does not support sparse gradients,'
                                           ' please consider SparseAdam instead')
                    state = self.state[param]
                    if len(state) == 0:
                        self.init_state(state, group, param)
                    self.step_param(state, group, grad, param)
            return loss

    class WeightDecay:
        def __init__(self, weight_decay=0., weight_decouple=True, absolute=False):
            if not 0.0 <= weight_decay:
                raise ValueError(f"Invalid weight_decay value: {weight_decay}")
            self.absolute = absolute
            self.weight_decouple = weight_decouple
            self.weight_decay = weight_decay

        def defaults(self):
            return dict(weight_decay=self.weight_decay)

        def __call__(self, param, grad, group):
            if self.weight_decouple:
                if self.absolute:
                    param.data.mul_(1.0 - group['weight_decay'])
                else:
                    param.data.mul_(1.0 - group['lr'] * group['weight_decay'])
                return grad
            else:
                if group['weight_decay'] != 0:
                    return grad.add(param.data, alpha=group['weight_decay'])
                else:
                    return grad

    class Adam(GenericAdaptiveOptimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16,
                     weight_decay=WeightDecay(), optimized_update=True, defaults=None):
            defaults = {} if defaults is None else defaults
            defaults.update(weight_decay.defaults())
            super().__init__(params, defaults, lr, betas, eps)
            self.weight_decay = weight_decay
            self.optimized_update = optimized_update

        def init_state(self, state, group, param):
            state['step'] = 0
            state['exp_avg'] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state['exp_avg_sq'] = torch.zeros_like(param, memory_format=torch.preserve_format)

        def get_mv(self, state, group, grad):
            beta1, beta2 = group['betas']
            m, v = state['exp_avg'], state['exp_avg_sq']
            m.mul_(beta1).add_(grad, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            return m, v

        def get_lr(self, state, group):
            return group['lr']

        def adam_update(self, state, group, param, m, v):
            beta1, beta2 = group['betas']
            bias_correction1 = 1 - beta1 ** state['step']
            bias_correction2 = 1 - beta2 ** state['step']
            lr = self.get_lr(state, group)
            if self.optimized_update:
                denominator = v.sqrt().add_(group['eps'])
                step_size = lr * math.sqrt(bias_correction2) / bias_correction1
                param.data.addcdiv_(m, denominator, value=-step_size)
            else:
                denominator = (v.sqrt() / math.sqrt(bias_correction2)).add_(group['eps'])
                step_size = lr / bias_correction1
                param.data.addcdiv_(m, denominator, value=-step_size)

        def step_param(self, state, group, grad, param):
            grad = self.weight_decay(param, grad, group)
            m, v = self.get_mv(state, group, grad)
            state['step'] += 1
            self.adam_update(state, group, param, m, v)

    class AMSGrad(Adam):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16,
                     weight_decay=WeightDecay(), optimized_update=True, amsgrad=True, defaults=None):
            defaults = {} if defaults is None else defaults
            defaults.update(dict(amsgrad=amsgrad))
            super().__init__(params, lr, betas, eps, weight_decay, optimized_update, defaults)

        def init_state(self, state, group, param):
            super().init_state(state, group, param)
            if group['amsgrad']:
                state['max_exp_avg_sq'] = torch.zeros_like(param, memory_format=torch.preserve_format)

        def get_mv(self, state, group, grad):
            m, v = super().get_mv(state, group, grad)
            if group['amsgrad']:
                v_max = state['max_exp_avg_sq']
                torch.maximum(v_max, v, out=v_max)
                return m, v_max
            else:
                return m, v

    class RAdam(AMSGrad):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                     weight_decay=WeightDecay(), optimized_update=True, amsgrad=False,
                     degenerated_to_sgd=True, defaults=None):
            self.degenerated_to_sgd = degenerated_to_sgd
            super().__init__(params, lr, betas, eps, weight_decay, optimized_update, amsgrad, defaults)

        def step_param(self, state, group, grad, param):
            grad = self.weight_decay(param, grad, group)
            m, v = self.get_mv(state, group, grad)
            state['step'] += 1
            self.r_adam_update(state, group, param, m, v)

        @staticmethod
        def calc_rectification_term(beta2, step):
            beta2_t = beta2 ** step
            rho_inf = 2 / (1 - beta2) - 1
            rho = rho_inf - 2 * step * beta2_t / (1 - beta2_t)
            if rho >= 5:
                r2 = (rho - 4) / (rho_inf - 4) * (rho - 2) / rho * rho_inf / (rho_inf - 2)
                return math.sqrt(r2)
            else:
                return None

        def r_adam_update(self, state, group, param, m, v):
            beta1, beta2 = group['betas']
            bias_correction1 = 1 - beta1 ** state['step']
            bias_correction2 = 1 - beta2 ** state['step']
            r = self.calc_rectification_term(beta2, state['step'])
            lr = self.get_lr(state, group)
            if r is not None:
                if self.optimized_update:
                    denominator = v.sqrt().add_(group['eps'])
                    step_size = lr * math.sqrt(bias_correction2) * r / bias_correction1
                    param.data.addcdiv_(m, denominator, value=-step_size)
                else:
                    denominator = (v.sqrt() / math.sqrt(bias_correction2)).add_(group['eps'])
                    step_size = lr * r / bias_correction1
                    param.data.addcdiv_(m, denominator, value=-step_size)
            elif self.degenerated_to_sgd:
                step_size = lr / bias_correction1
                param.data.add_(m, alpha=-step_size)

    class AdaBelief(RAdam):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16,
                     weight_decay=WeightDecay(), amsgrad=False, degenerate_to_sgd=True, rectify=True, defaults=None):
            defaults = {} if defaults is None else defaults
            super().__init__(params, lr, betas, eps, weight_decay, amsgrad, degenerate_to_sgd, defaults)
            self.rectify = rectify

        def init_state(self, state, group, param):
            state['step'] = 0
            state['exp_avg'] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state['exp_avg_var'] = torch.zeros_like(param, memory_format=torch.preserve_format)
            if group['amsgrad']:
                state['max_exp_avg_var'] = torch.zeros_like(param, memory_format=torch.preserve_format)

        def get_ms(self, state, group, grad):
            beta1, beta2 = group['betas']
            m, s = state['exp_avg'], state['exp_avg_var']
            m.mul_(beta1).add_(grad, alpha=1 - beta1)
            grad_residual = grad - m
            s.mul_(beta2).addcmul_(grad_residual, grad_residual, value=1 - beta2)
            if group['amsgrad']:
                s_max = state['max_exp_avg_var']
                torch.maximum(s_max, s, out=s_max)
                return m, s_max
            else:
                return m, s

        def step_param(self, state, group, grad, param):
            grad = self.weight_decay(param, grad, group)
            m, s = self.get_ms(state, group, grad)
            state['step'] += 1
            if not self.rectify:
                self.adam_update(state, group, param, m, s + group['eps'])
            else:
                self.r_adam_update(state, group, param, m, s + group['eps'])

    class Noam(AMSGrad):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=WeightDecay(),
                     optimized_update=True, amsgrad=False, warmup=0, d_model=512, defaults=None):
            defaults = {} if defaults is None else defaults
            defaults.update(dict(warmup=warmup))
            super().__init__(params, lr, betas, eps, weight_decay, optimized_update, amsgrad, defaults)
            self.d_model = d_model

        def get_lr(self, state, group):
            factor = min(state['step'] ** (-0.5), state['step'] * group['warmup'] ** (-1.5))
            return group['lr'] * self.d_model ** (-0.5) * factor

    return types.SimpleNamespace(GenericAdaptiveOptimizer=GenericAdaptiveOptimizer, WeightDecay=WeightDecay, Adam=Adam,
                                 AMSGrad=AMSGrad, RAdam=RAdam, AdaBelief=AdaBelief, Noam=Noam)


def labml_optimizers(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    family = labml_optimizer_family(m)
    WeightDecay, Adam, AMSGrad, RAdam = family.WeightDecay, family.Adam, family.AMSGrad, family.RAdam
    AdaBelief, Noam = family.AdaBelief, family.Noam
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.standard_normal((64, 5)))
    y = torch.from_numpy((rng.standard_normal(64) > 0).astype(np.int64))

    def make():
        return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2)).double()

    makers = {
        "adam": lambda p: Adam(p, lr=1e-2, weight_decay=WeightDecay(0.01)),
        "adam_plain": lambda p: Adam(p, lr=1e-2, eps=1e-8, optimized_update=False),
        "amsgrad": lambda p: AMSGrad(p, lr=1e-2, betas=(0.9, 0.99), weight_decay=WeightDecay(0.1, weight_decouple=False)),
        "radam": lambda p: RAdam(p, lr=1e-2, weight_decay=WeightDecay(0.05, absolute=True)),
        "radam_unoptimized": lambda p: RAdam(p, lr=1e-2, betas=(0.9, 0.9), optimized_update=False),
        "adabelief": lambda p: AdaBelief(p, lr=1e-2, amsgrad=True),
        "adabelief_unrectified": lambda p: AdaBelief(p, lr=1e-2, rectify=False),
        "noam": lambda p: Noam(p, lr=1.0, warmup=4, d_model=16),
    }
    out = {}
    for name, make_opt in makers.items():
        model = load(m, make(), weights)
        opt = make_opt(model.parameters())
        losses = []
        for step in range(12):
            def closure():
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(X), y)
                loss.backward()
                return loss
            losses.append(opt.step(closure).item())
            if step == 5:  # resume half way from a saved state, as labml's checkpoints do
                saved = copy.deepcopy(opt.state_dict())
                opt = make_opt(model.parameters())
                opt.load_state_dict(saved)
        state = opt.state[model[0].weight]
        out[name] = {"losses": losses, "w": model[0].weight, "b": model[2].bias,
                     "steps": state['step'], "keys": sorted(state), "m": state['exp_avg']}
    # their Adam without the optimized update is PyTorch's Adam: the same steps as optim.Adam
    model = load(m, make(), weights)
    opt = optim.Adam(model.parameters(), lr=1e-2, eps=1e-8)
    for step in range(12):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    out["torch_adam_w"] = model[0].weight
    # a second group with its own defaults filled in by add_param_group
    model = load(m, make(), weights)
    opt = AMSGrad(model[0].parameters(), lr=1e-2)
    opt.add_param_group({"params": model[2].parameters(), "lr": 0.1, "amsgrad": False})
    for step in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    out["groups"] = [sorted(opt.state[p]) for p in model.parameters()] + [opt.param_groups[1]["betas"], model[2].weight]
    # the AMSGrad paper's synthetic problem, clamped to [-1, 1] through .data
    for name, cls in (("adam", Adam), ("amsgrad", AMSGrad)):
        x = nn.Parameter(torch.tensor([.0], dtype=torch.float64))
        opt = cls([x], lr=1e-2, betas=(0.9, 0.99))
        for step in range(300):
            regret = (1010 * x).sum() if step % 101 == 1 else (-10 * x).sum()
            regret.backward()
            opt.step()
            opt.zero_grad()
            x.data.clamp_(-1., +1.)
        out["synthetic_" + name] = x
    try:
        Adam([x], betas=(1.0, 0.999))
    except ValueError as e:
        out["error"] = str(e)
    return out


def test_labml_optimizers():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(5, 16), m.nn.Tanh(), m.nn.Linear(16, 2)).double(), seed=3)
    ours, _ = run_both(labml_optimizers, weights, rtol=1e-9, atol=1e-11)
    for name in ("adam", "amsgrad", "radam", "radam_unoptimized", "adabelief", "adabelief_unrectified", "noam"):
        assert ours[name]["steps"] == 12 and ours[name]["losses"][-1] < ours[name]["losses"][0], name
    assert ours["amsgrad"]["keys"] == ["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"]
    assert ours["adabelief"]["keys"] == ["exp_avg", "exp_avg_var", "max_exp_avg_var", "step"]
    np.testing.assert_allclose(ours["adam_plain"]["w"], ours["torch_adam_w"], rtol=1e-12, atol=1e-14)
    assert ours["groups"][0] == ["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"]
    assert ours["groups"][2] == ["exp_avg", "exp_avg_sq", "step"]
    assert tuple(ours["groups"][4]) == (0.9, 0.999)
    # AMSGrad finds the minimiser x = -1 of the synthetic problem, where Adam drifts towards +1
    assert ours["synthetic_amsgrad"][0] < ours["synthetic_adam"][0]
    assert ours["error"] == "Invalid beta parameter at index 0: 1.0"


# ----------------------------------------------------------------------------------------------
# labml_nn/activations: fuzzy tiling activation and Swish
# ----------------------------------------------------------------------------------------------


def fta_program(m):
    torch, nn = m.torch, m.nn

    class FTA(nn.Module):
        def __init__(self, lower_limit, upper_limit, delta, eta):
            super().__init__()
            self.c = nn.Parameter(torch.arange(lower_limit, upper_limit, delta), requires_grad=False)
            self.expansion_factor = len(self.c)
            self.delta = delta
            self.eta = eta

        def fuzzy_i_plus(self, x):
            return (x <= self.eta) * x + (x > self.eta)

        def forward(self, z):
            z = z.view(*z.shape, 1)
            z = 1. - self.fuzzy_i_plus(torch.clip(self.c - z, min=0.) + torch.clip(z - self.delta - self.c, min=0.))
            return z.view(*z.shape[:-2], -1)

    class Swish(nn.Module):
        def __init__(self):
            super().__init__()
            self.sigmoid = nn.Sigmoid()

        def forward(self, x):
            return x * self.sigmoid(x)

    a = FTA(-10, 10, 2., 0.5)
    z = torch.tensor([1.1, 2.2, 3.3, 4.4, 5.5, 6.6, 7.7, 8.8, 9., 10., 11.])
    tiled = a(z)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fta = FTA(-1., 1., 0.2, 0.2)
            self.linear1 = nn.Linear(4, 6)
            self.linear2 = nn.Linear(6 * self.fta.expansion_factor, 3)
            self.swish = Swish()

        def forward(self, x):
            return self.linear2(self.swish(self.fta(torch.tanh(self.linear1(x)))))

    torch.manual_seed(0)
    model = Model()
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.standard_normal((32, 4)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, 3, 32))
    optimizer = m.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = m.F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    names = [n for n, _ in model.named_parameters()]
    return {"c": a.c, "expansion": a.expansion_factor, "tiled": tiled, "losses": losses, "names": names,
            "c_grad": model.fta.c.grad is None, "w": model.linear1.weight, "float32": tiled.dtype == torch.float32}


def test_fuzzy_tiling_activation():
    ours, _ = run_both(fta_program, rtol=1e-5, atol=1e-6)
    assert ours["expansion"] == 10 and ours["c_grad"] and ours["float32"]
    # by hand: 1 - I+(max(0, c - z) + max(0, z - delta - c)), eta = 0.5
    c = np.arange(-10, 10, 2.0)
    z = np.array([1.1, 2.2, 3.3, 4.4, 5.5, 6.6, 7.7, 8.8, 9., 10., 11.])[:, None]
    d = np.maximum(c - z, 0) + np.maximum(z - 2.0 - c, 0)
    np.testing.assert_allclose(ours["tiled"], (1 - np.where(d <= 0.5, d, 1.0)).reshape(-1), rtol=1e-6, atol=1e-6)
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# labml_nn/normalization: batch, layer, instance, group, batch-channel norm and weight standardisation
# ----------------------------------------------------------------------------------------------


def normalization_program(m):
    torch, nn, F = m.torch, m.nn, m.F

    class BatchNorm(nn.Module):
        def __init__(self, channels, *, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
            super().__init__()
            self.channels = channels
            self.eps = eps
            self.momentum = momentum
            self.affine = affine
            self.track_running_stats = track_running_stats
            if self.affine:
                self.scale = nn.Parameter(torch.ones(channels))
                self.shift = nn.Parameter(torch.zeros(channels))
            if self.track_running_stats:
                self.register_buffer('exp_mean', torch.zeros(channels))
                self.register_buffer('exp_var', torch.ones(channels))

        def forward(self, x):
            x_shape = x.shape
            batch_size = x_shape[0]
            assert self.channels == x.shape[1]
            x = x.view(batch_size, self.channels, -1)
            if self.training or not self.track_running_stats:
                mean = x.mean(dim=[0, 2])
                mean_x2 = (x ** 2).mean(dim=[0, 2])
                var = mean_x2 - mean ** 2
                if self.training and self.track_running_stats:
                    self.exp_mean = (1 - self.momentum) * self.exp_mean + self.momentum * mean
                    self.exp_var = (1 - self.momentum) * self.exp_var + self.momentum * var
            else:
                mean = self.exp_mean
                var = self.exp_var
            x_norm = (x - mean.view(1, -1, 1)) / torch.sqrt(var + self.eps).view(1, -1, 1)
            if self.affine:
                x_norm = self.scale.view(1, -1, 1) * x_norm + self.shift.view(1, -1, 1)
            return x_norm.view(x_shape)

    class LayerNorm(nn.Module):
        def __init__(self, normalized_shape, *, eps=1e-5, elementwise_affine=True):
            super().__init__()
            if isinstance(normalized_shape, int):
                normalized_shape = torch.Size([normalized_shape])
            elif isinstance(normalized_shape, list):
                normalized_shape = torch.Size(normalized_shape)
            assert isinstance(normalized_shape, torch.Size)
            self.normalized_shape = normalized_shape
            self.eps = eps
            self.elementwise_affine = elementwise_affine
            if self.elementwise_affine:
                self.gain = nn.Parameter(torch.ones(normalized_shape))
                self.bias = nn.Parameter(torch.zeros(normalized_shape))

        def forward(self, x):
            assert self.normalized_shape == x.shape[-len(self.normalized_shape):]
            dims = [-(i + 1) for i in range(len(self.normalized_shape))]
            mean = x.mean(dim=dims, keepdim=True)
            mean_x2 = (x ** 2).mean(dim=dims, keepdim=True)
            var = mean_x2 - mean ** 2
            x_norm = (x - mean) / torch.sqrt(var + self.eps)
            if self.elementwise_affine:
                x_norm = self.gain * x_norm + self.bias
            return x_norm

    class InstanceNorm(nn.Module):
        def __init__(self, channels, *, eps=1e-5, affine=True):
            super().__init__()
            self.channels = channels
            self.eps = eps
            self.affine = affine
            if self.affine:
                self.scale = nn.Parameter(torch.ones(channels))
                self.shift = nn.Parameter(torch.zeros(channels))

        def forward(self, x):
            x_shape = x.shape
            batch_size = x_shape[0]
            assert self.channels == x.shape[1]
            x = x.view(batch_size, self.channels, -1)
            mean = x.mean(dim=[-1], keepdim=True)
            mean_x2 = (x ** 2).mean(dim=[-1], keepdim=True)
            var = mean_x2 - mean ** 2
            x_norm = (x - mean) / torch.sqrt(var + self.eps)
            x_norm = x_norm.view(batch_size, self.channels, -1)
            if self.affine:
                x_norm = self.scale.view(1, -1, 1) * x_norm + self.shift.view(1, -1, 1)
            return x_norm.view(x_shape)

    class GroupNorm(nn.Module):
        def __init__(self, groups, channels, *, eps=1e-5, affine=True):
            super().__init__()
            assert channels % groups == 0, "Number of channels should be evenly divisible by the number of groups"
            self.groups = groups
            self.channels = channels
            self.eps = eps
            self.affine = affine
            if self.affine:
                self.scale = nn.Parameter(torch.ones(channels))
                self.shift = nn.Parameter(torch.zeros(channels))

        def forward(self, x):
            x_shape = x.shape
            batch_size = x_shape[0]
            assert self.channels == x.shape[1]
            x = x.view(batch_size, self.groups, -1)
            mean = x.mean(dim=[-1], keepdim=True)
            mean_x2 = (x ** 2).mean(dim=[-1], keepdim=True)
            var = mean_x2 - mean ** 2
            x_norm = (x - mean) / torch.sqrt(var + self.eps)
            if self.affine:
                x_norm = x_norm.view(batch_size, self.channels, -1)
                x_norm = self.scale.view(1, -1, 1) * x_norm + self.shift.view(1, -1, 1)
            return x_norm.view(x_shape)

    class EstimatedBatchNorm(nn.Module):
        def __init__(self, channels, eps=1e-5, momentum=0.1, affine=True):
            super().__init__()
            self.eps = eps
            self.momentum = momentum
            self.affine = affine
            self.channels = channels
            if self.affine:
                self.scale = nn.Parameter(torch.ones(channels))
                self.shift = nn.Parameter(torch.zeros(channels))
            self.register_buffer('exp_mean', torch.zeros(channels))
            self.register_buffer('exp_var', torch.ones(channels))

        def forward(self, x):
            x_shape = x.shape
            batch_size = x_shape[0]
            assert self.channels == x.shape[1]
            x = x.view(batch_size, self.channels, -1)
            if self.training:
                with torch.no_grad():
                    mean = x.mean(dim=[0, 2])
                    mean_x2 = (x ** 2).mean(dim=[0, 2])
                    var = mean_x2 - mean ** 2
                    self.exp_mean = (1 - self.momentum) * self.exp_mean + self.momentum * mean
                    self.exp_var = (1 - self.momentum) * self.exp_var + self.momentum * var
            x_norm = (x - self.exp_mean.view(1, -1, 1)) / torch.sqrt(self.exp_var + self.eps).view(1, -1, 1)
            if self.affine:
                x_norm = self.scale.view(1, -1, 1) * x_norm + self.shift.view(1, -1, 1)
            return x_norm.view(x_shape)

    class ChannelNorm(nn.Module):
        def __init__(self, channels, groups, eps=1e-5, affine=True):
            super().__init__()
            self.channels = channels
            self.groups = groups
            self.eps = eps
            self.affine = affine
            if self.affine:
                self.scale = nn.Parameter(torch.ones(groups))
                self.shift = nn.Parameter(torch.zeros(groups))

        def forward(self, x):
            x_shape = x.shape
            batch_size = x_shape[0]
            assert self.channels == x.shape[1]
            x = x.view(batch_size, self.groups, -1)
            mean = x.mean(dim=[-1], keepdim=True)
            mean_x2 = (x ** 2).mean(dim=[-1], keepdim=True)
            var = mean_x2 - mean ** 2
            x_norm = (x - mean) / torch.sqrt(var + self.eps)
            if self.affine:
                x_norm = self.scale.view(1, -1, 1) * x_norm + self.shift.view(1, -1, 1)
            return x_norm.view(x_shape)

    class BatchChannelNorm(nn.Module):
        def __init__(self, channels, groups, eps=1e-5, momentum=0.1, estimate=True):
            super().__init__()
            if estimate:
                self.batch_norm = EstimatedBatchNorm(channels, eps=eps, momentum=momentum)
            else:
                self.batch_norm = BatchNorm(channels, eps=eps, momentum=momentum)
            self.channel_norm = ChannelNorm(channels, groups, eps)

        def forward(self, x):
            x = self.batch_norm(x)
            return self.channel_norm(x)

    def weight_standardization(weight, eps):
        c_out, c_in, *kernel_shape = weight.shape
        weight = weight.view(c_out, -1)
        var, mean = torch.var_mean(weight, dim=1, keepdim=True)
        weight = (weight - mean) / (torch.sqrt(var + eps))
        return weight.view(c_out, c_in, *kernel_shape)

    class Conv2d(nn.Conv2d):
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                     bias=True, padding_mode='zeros', eps=1e-5):
            super(Conv2d, self).__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                         dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode)
            self.eps = eps

        def forward(self, x):
            return F.conv2d(x, weight_standardization(self.weight, self.eps), self.bias, self.stride,
                            self.padding, self.dilation, self.groups)

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((4, 6, 5, 5)) * 2 + 1)
    out = {}
    # each by hand against nn's layer of the same kind, forward and the input's gradient
    pairs = {
        "batch": (BatchNorm(6), nn.BatchNorm2d(6)),
        "layer": (LayerNorm(x.shape[2:]), nn.LayerNorm([5, 5])),
        "instance": (InstanceNorm(6), nn.InstanceNorm2d(6, affine=True)),
        "group": (GroupNorm(2, 6), nn.GroupNorm(2, 6)),
    }
    for name, (ours_layer, reference) in pairs.items():
        ours_layer.double(), reference.double()
        with torch.no_grad():
            for p in ours_layer.parameters():
                p.copy_(torch.linspace(0.5, 1.5, p.numel(), dtype=torch.float64).view(p.shape))
            for p in reference.parameters():
                p.copy_(torch.linspace(0.5, 1.5, p.numel(), dtype=torch.float64).view(p.shape))
        xs = x.clone().requires_grad_()
        y = ours_layer(xs)
        (y * torch.arange(y.numel(), dtype=torch.float64).view(y.shape).sin()).sum().backward()
        xr = x.clone().requires_grad_()
        yr = reference(xr)
        (yr * torch.arange(yr.numel(), dtype=torch.float64).view(yr.shape).sin()).sum().backward()
        out[name] = [y, xs.grad, yr, xr.grad, [p.grad for p in ours_layer.parameters()]]
    bn = pairs["batch"][0]
    out["buffers"] = [bn.exp_mean, bn.exp_var, pairs["batch"][1].running_mean, sorted(bn.state_dict()),
                      bn.exp_mean.requires_grad, isinstance(bn._buffers["exp_mean"], torch.Tensor)]
    bn.eval()
    out["batch_eval"] = bn(x)

    # a small CNN with weight-standardised convolutions and batch-channel norm, trained a few steps
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = Conv2d(1, 8, 3, padding=1)
            self.norm1 = BatchChannelNorm(8, 4)
            self.conv2 = Conv2d(8, 8, 3, stride=2, bias=False)
            self.norm2 = BatchChannelNorm(8, 2, estimate=False)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            x = F.relu(self.norm1(self.conv1(x)))
            x = F.relu(self.norm2(self.conv2(x)))
            return self.fc(x.mean(dim=[2, 3]))

    torch.manual_seed(0)
    net = Net().double()
    images = torch.tensor(rng.standard_normal((8, 1, 7, 7)))
    labels = torch.tensor(rng.integers(0, 3, 8))
    optimizer = m.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = F.cross_entropy(net(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    net.eval()
    with torch.no_grad():
        logits = net(images)
    standardized = weight_standardization(net.conv1.weight, 1e-5)
    return {**out, "losses": losses, "logits": logits, "exp_var": net.norm1.batch_norm.exp_var,
            "ws_mean": standardized.mean(dim=[1, 2, 3]), "ws_var": standardized.var(dim=[1, 2, 3]),
            "state": sorted(net.state_dict())}


def test_normalization_by_hand():
    ours, _ = run_both(normalization_program, rtol=1e-9, atol=1e-10)
    for name in ("batch", "layer", "instance", "group"):
        y, gx, yr, gxr, _ = ours[name]
        np.testing.assert_allclose(y, yr, rtol=1e-8, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(gx, gxr, rtol=1e-7, atol=1e-8, err_msg=name)
    exp_mean, exp_var, running_mean, keys, requires_grad, is_tensor = ours["buffers"]
    np.testing.assert_allclose(exp_mean, running_mean, rtol=1e-10)
    assert keys == ["exp_mean", "exp_var", "scale", "shift"] and requires_grad and is_tensor
    assert ours["losses"][-1] < ours["losses"][0]
    np.testing.assert_allclose(ours["ws_mean"], 0, atol=1e-12)
    np.testing.assert_allclose(ours["ws_var"], 1, rtol=1e-3)  # eps 1e-5 in the denominator
    assert "norm2.batch_norm.exp_mean" in ours["state"]


# ----------------------------------------------------------------------------------------------
# labml_nn/transformers: their multi-head attention, feed-forward and layer, shared by what follows
# ----------------------------------------------------------------------------------------------


def labml_transformers(m):
    """labml_nn/transformers/{mha,feed_forward,models,utils}.py and labml_nn/utils as they write them."""
    torch, nn = m.torch, m.nn

    def clone_module_list(module, n):
        return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])

    def subsequent_mask(seq_len):
        mask = torch.tril(torch.ones(seq_len, seq_len)).to(torch.bool).unsqueeze(-1)
        return mask

    class PrepareForMultiHeadAttention(nn.Module):
        def __init__(self, d_model, heads, d_k, bias):
            super().__init__()
            self.linear = nn.Linear(d_model, heads * d_k, bias=bias)
            self.heads = heads
            self.d_k = d_k

        def forward(self, x):
            head_shape = x.shape[:-1]
            x = self.linear(x)
            x = x.view(*head_shape, self.heads, self.d_k)
            return x

    class MultiHeadAttention(nn.Module):
        def __init__(self, heads, d_model, dropout_prob=0.1, bias=True):
            super().__init__()
            self.d_k = d_model // heads
            self.heads = heads
            self.query = PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=bias)
            self.key = PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=bias)
            self.value = PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=True)
            self.softmax = nn.Softmax(dim=1)
            self.output = nn.Linear(d_model, d_model)
            self.dropout = nn.Dropout(dropout_prob)
            self.scale = 1 / math.sqrt(self.d_k)
            self.attn = None

        def get_scores(self, query, key):
            return torch.einsum('ibhd,jbhd->ijbh', query, key)

        def prepare_mask(self, mask, query_shape, key_shape):
            assert mask.shape[0] == 1 or mask.shape[0] == query_shape[0]
            assert mask.shape[1] == key_shape[0]
            assert mask.shape[2] == 1 or mask.shape[2] == query_shape[1]
            mask = mask.unsqueeze(-1)
            return mask

        def forward(self, *, query, key, value, mask=None):
            seq_len, batch_size, _ = query.shape
            if mask is not None:
                mask = self.prepare_mask(mask, query.shape, key.shape)
            query = self.query(query)
            key = self.key(key)
            value = self.value(value)
            scores = self.get_scores(query, key)
            scores *= self.scale
            if mask is not None:
                scores = scores.masked_fill(mask == 0, float('-inf'))
            attn = self.softmax(scores)
            attn = self.dropout(attn)
            x = torch.einsum("ijbh,jbhd->ibhd", attn, value)
            self.attn = attn.detach()
            x = x.reshape(seq_len, batch_size, -1)
            return self.output(x)

    class FeedForward(nn.Module):
        def __init__(self, d_model, d_ff, dropout=0.1, activation=nn.ReLU(), is_gated=False,
                     bias1=True, bias2=True, bias_gate=True):
            super().__init__()
            self.layer1 = nn.Linear(d_model, d_ff, bias=bias1)
            self.layer2 = nn.Linear(d_ff, d_model, bias=bias2)
            self.dropout = nn.Dropout(dropout)
            self.activation = activation
            self.is_gated = is_gated
            if is_gated:
                self.linear_v = nn.Linear(d_model, d_ff, bias=bias_gate)

        def forward(self, x):
            g = self.activation(self.layer1(x))
            if self.is_gated:
                x = g * self.linear_v(x)
            else:
                x = g
            x = self.dropout(x)
            return self.layer2(x)

    class TransformerLayer(nn.Module):
        def __init__(self, *, d_model, self_attn, src_attn=None, feed_forward, dropout_prob):
            super().__init__()
            self.size = d_model
            self.self_attn = self_attn
            self.src_attn = src_attn
            self.feed_forward = feed_forward
            self.dropout = nn.Dropout(dropout_prob)
            self.norm_self_attn = nn.LayerNorm([d_model])
            if self.src_attn is not None:
                self.norm_src_attn = nn.LayerNorm([d_model])
            self.norm_ff = nn.LayerNorm([d_model])
            self.is_save_ff_input = False

        def forward(self, *, x, mask, src=None, src_mask=None):
            z = self.norm_self_attn(x)
            self_attn = self.self_attn(query=z, key=z, value=z, mask=mask)
            x = x + self.dropout(self_attn)
            if src is not None:
                z = self.norm_src_attn(x)
                attn_src = self.src_attn(query=z, key=src, value=src, mask=src_mask)
                x = x + self.dropout(attn_src)
            z = self.norm_ff(x)
            if self.is_save_ff_input:
                self.ff_input = z.clone()
            ff = self.feed_forward(z)
            x = x + self.dropout(ff)
            return x

    return SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("torch", "nn", "m")})


def train_few(m, model, batches, loss_fn, steps=3, lr=1e-2, optimizer="Adam"):
    """A few optimizer steps; the losses and every parameter's gradient of the first step."""
    opt = getattr(m.optim, optimizer)(model.parameters(), lr=lr)
    losses, first_grads = [], None
    for step in range(steps):
        opt.zero_grad()
        loss = loss_fn(model, *batches)
        loss.backward()
        if first_grads is None:
            first_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        opt.step()
        losses.append(loss.item())
    return losses, first_grads


def sequence_data(seq_len=7, batch=3, d_model=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((seq_len, batch, d_model)), rng.standard_normal((seq_len, batch, d_model))


# ----------------------------------------------------------------------------------------------
# labml_nn/normalization/deep_norm: DeepNorm transformer layers
# ----------------------------------------------------------------------------------------------


def make_deep_norm(m):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)

    class LayerNorm(nn.Module):  # labml's own, over a list of dimensions
        def __init__(self, normalized_shape, *, eps=1e-5, elementwise_affine=True):
            super().__init__()
            self.normalized_shape = torch.Size(normalized_shape)
            self.eps = eps
            self.gain = nn.Parameter(torch.ones(normalized_shape))
            self.bias = nn.Parameter(torch.zeros(normalized_shape))

        def forward(self, x):
            dims = [-(i + 1) for i in range(len(self.normalized_shape))]
            mean = x.mean(dim=dims, keepdim=True)
            mean_x2 = (x ** 2).mean(dim=dims, keepdim=True)
            var = mean_x2 - mean ** 2
            return self.gain * (x - mean) / torch.sqrt(var + self.eps) + self.bias

    class DeepNorm(nn.Module):
        def __init__(self, alpha, normalized_shape, *, eps=1e-5, elementwise_affine=True):
            super().__init__()
            self.alpha = alpha
            self.layer_norm = LayerNorm(normalized_shape, eps=eps, elementwise_affine=elementwise_affine)

        def forward(self, x, gx):
            return self.layer_norm(x + self.alpha * gx)

    class DeepNormTransformerLayer(nn.Module):
        def __init__(self, *, d_model, self_attn, feed_forward, deep_norm_alpha, deep_norm_beta):
            super().__init__()
            self.self_attn = self_attn
            self.feed_forward = feed_forward
            self.self_attn_norm = DeepNorm(deep_norm_alpha, [d_model])
            self.feed_forward_norm = DeepNorm(deep_norm_alpha, [d_model])
            with torch.no_grad():
                feed_forward.layer1.weight *= deep_norm_beta
                feed_forward.layer2.weight *= deep_norm_beta
                self_attn.value.linear.weight *= deep_norm_beta
                self_attn.output.weight *= deep_norm_beta
            self.mask = None

        def forward(self, x):
            if self.mask is None or self.mask.size(0) != len(x):
                self.mask = t.subsequent_mask(len(x)).to(x.device)
            x = self.self_attn_norm(x, self.self_attn(query=x, key=x, value=x, mask=self.mask))
            x = self.feed_forward_norm(x, self.feed_forward(x))
            return x

    class AutoregressiveTransformer(nn.Module):
        def __init__(self, n_tokens, d_model, n_layers, layer):
            super().__init__()
            self.transformer = nn.Sequential(*[copy.deepcopy(layer) for _ in range(n_layers)])
            self.emb = nn.Embedding(n_tokens, d_model)
            self.readout = nn.Linear(d_model, n_tokens)

        def forward(self, x):
            x = self.emb(x)
            x = self.transformer(x)
            x = self.readout(x)
            return x, None

    n_layers, d_model = 4, 16
    deep_norm_alpha = (2. * n_layers) ** (1. / 4.)
    deep_norm_beta = (8. * n_layers) ** -(1. / 4.)
    layer = DeepNormTransformerLayer(d_model=d_model, deep_norm_alpha=deep_norm_alpha, deep_norm_beta=deep_norm_beta,
                                     feed_forward=t.FeedForward(d_model=d_model, d_ff=32, dropout=0.),
                                     self_attn=t.MultiHeadAttention(4, d_model, dropout_prob=0.))
    return AutoregressiveTransformer(11, d_model, n_layers, layer).double()


def deep_norm_program(m, weights):
    torch = m.torch
    model = make_deep_norm(m)
    model = load(m, model, weights)
    rng = np.random.default_rng(0)
    tokens = torch.tensor(rng.integers(0, 11, (9, 2)))
    target = torch.tensor(rng.integers(0, 11, (9, 2)))

    def loss_fn(model, x, y):
        out, _ = model(x)
        return m.F.cross_entropy(out.view(-1, out.shape[-1]), y.view(-1))

    losses, grads = train_few(m, model, (tokens, target), loss_fn, steps=4)
    attn = model.transformer[1].self_attn.attn
    return {"losses": losses, "grads": grads, "attn": attn,
            "mask": model.transformer[0].mask[:, :, 0]}


def test_deep_norm_transformer():
    weights = weights_of(make_deep_norm)
    fresh = make_deep_norm(OURS)
    ours, _ = run_both(deep_norm_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    # causal: the attention of position i over j > i is zero, and each row sums to one over keys (dim=1)
    attn = ours["attn"]
    assert attn.shape == (9, 9, 2, 4)
    assert np.all(attn[np.triu_indices(9, 1)] == 0)
    np.testing.assert_allclose(attn.sum(1), 1, rtol=1e-12)
    np.testing.assert_array_equal(ours["mask"], np.tril(np.ones((9, 9), bool)))
    # the in-place scaling under no_grad: beta times Linear's initialisation bound
    beta = 32 ** -0.25
    assert np.abs(fresh.transformer[0].feed_forward.layer1.weight.detach().numpy()).max() <= beta / math.sqrt(16) + 1e-12
    assert fresh.transformer[0].feed_forward.layer1.weight.requires_grad


# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/feedback: the Feedback transformer, and its key/value memory Stack Function
# ----------------------------------------------------------------------------------------------


def make_feedback(m, kv):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)

    class FeedbackAttention(nn.Module):
        def __init__(self, heads, d_model, dropout_prob=0.1, *, is_kv_precomputed=False):
            super().__init__()
            self.d_k = d_model // heads
            self.heads = heads
            self.query = t.PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=False)
            if not is_kv_precomputed:
                self.key = t.PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=False)
                self.value = t.PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=True)
            else:
                self.key = None
                self.value = None
            self.output = nn.Linear(d_model, d_model)
            self.dropout = nn.Dropout(dropout_prob)
            self.scale = 1 / math.sqrt(self.d_k)
            self.softmax = nn.Softmax(dim=0)
            self.P = 2 ** 6
            self.key_pos_embeddings = nn.Parameter(torch.zeros((self.P, heads, self.d_k)), requires_grad=True)
            self.key_pos_bias = nn.Parameter(torch.zeros((self.P, heads)), requires_grad=True)
            self.query_pos_bias = nn.Parameter(torch.zeros((heads, self.d_k)), requires_grad=True)
            self.attn = None

        def get_scores(self, query, key):
            key_pos_emb = self.key_pos_embeddings[-key.shape[0]:]
            query_pos_bias = self.query_pos_bias[None, :, :]
            key_pos_bias = self.key_pos_bias[-key.shape[0]:]
            ac = torch.einsum('bhd,jbhd->jbh', query + query_pos_bias, key)
            bd = torch.einsum('bhd,jhd->jbh', query, key_pos_emb) + key_pos_bias[:, None, :]
            return ac + bd

        def forward(self, *, query, key, value):
            query = self.query(query)
            if self.key:
                key = self.key(key)
            if self.value:
                value = self.value(value)
            scores = self.get_scores(query, key)
            scores *= self.scale
            attn = self.softmax(scores)
            attn = self.dropout(attn)
            x = torch.einsum("jbh,jbhd->bhd", attn, value)
            x = x.reshape(x.shape[0], -1)
            return self.output(x)

    class FeedbackTransformerLayer(nn.Module):
        def __init__(self, *, d_model, attn, feed_forward, dropout_prob):
            super().__init__()
            self.size = d_model
            self.attn = attn
            self.feed_forward = feed_forward
            self.dropout = nn.Dropout(dropout_prob)
            self.norm_self_attn = nn.LayerNorm([d_model])
            self.norm_ff = nn.LayerNorm([d_model])

        def forward(self, *, x, key, value):
            if key is not None:
                z = self.norm_self_attn(x)
                self_attn = self.attn(query=z, key=key, value=value)
                x = x + self.dropout(self_attn)
            z = self.norm_ff(x)
            ff = self.feed_forward(z)
            x = x + self.dropout(ff)
            return x

    class FeedbackTransformer(nn.Module):
        def __init__(self, layer, n_layers):
            super().__init__()
            self.layers = t.clone_module_list(layer, n_layers)
            self.norm = nn.LayerNorm([layer.size])
            self.weights = nn.Parameter(torch.ones(n_layers + 1), requires_grad=True)
            self.softmax = nn.Softmax(0)

        def forward(self, x_seq):
            x_seq = torch.unbind(x_seq, dim=0)
            res = []
            mem = []
            for x in x_seq:
                layer_outputs = [x]
                mem_tensor = torch.stack(mem) if mem else None
                for layer in self.layers:
                    x = layer(x=x, key=mem_tensor, value=mem_tensor)
                    layer_outputs.append(x)
                layer_outputs = torch.stack(layer_outputs)
                mem.append(torch.einsum('lbd,l->bd', layer_outputs, self.softmax(self.weights)))
                res.append(x)
            res = torch.stack(res)
            return self.norm(res)

    class StackFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, memory, memory_grad, last, n):
            ctx._mem_grad = memory_grad
            ctx._n = n
            return memory[:n + 1]

        @staticmethod
        def backward(ctx, grad_output):
            n = ctx._n
            memory_grad = ctx._mem_grad
            memory_grad[:n + 1] += grad_output
            return None, None, memory_grad[n], None

    class Stack:
        def __init__(self, max_len):
            self.max_len = max_len
            self.memory = None
            self.memory_grad = None
            self.last = None
            self.n = -1
            self.last_get_n = -1

        def append(self, n, value):
            assert n == 0 or self.last_get_n == n - 1, f"{n}, {self.last_get_n}"
            with torch.no_grad():
                if self.memory is None or self.memory.shape[1:] != value.shape:
                    assert n == 0
                    self.memory = value.new_zeros(self.max_len, *value.shape, requires_grad=False)
                    self.memory_grad = value.new_zeros(self.memory.shape, requires_grad=False)
                elif n == 0:
                    self.memory_grad.fill_(0.)
                self.memory.data[n] = value.detach()
                self.n = n
            self.last = value

        def get(self):
            self.last_get_n = self.n
            return StackFunction.apply(self.memory, self.memory_grad, self.last, self.n)

        def free(self):
            self.memory = None
            self.memory_grad = None
            self.last = None

    class FeedbackTransformerKV(nn.Module):
        def __init__(self, layer, n_layers, d_model, heads):
            super().__init__()
            self.layers = t.clone_module_list(layer, n_layers)
            self.norm = nn.LayerNorm([layer.size])
            self.weights = nn.Parameter(torch.ones(n_layers + 1), requires_grad=True)
            self.softmax = nn.Softmax(0)
            d_k = d_model // heads
            self.key = t.PrepareForMultiHeadAttention(d_model, heads, d_k, bias=False)
            self.value = t.PrepareForMultiHeadAttention(d_model, heads, d_k, bias=False)
            self.mem_key = Stack(16)
            self.mem_value = Stack(16)

        def forward(self, x_seq):
            x_seq = torch.unbind(x_seq, dim=0)
            res = []
            for step, x in enumerate(x_seq):
                layer_outputs = [x]
                key_tensor = None
                value_tensor = None
                if step > 0:
                    key_tensor = self.mem_key.get()
                    value_tensor = self.mem_value.get()
                for layer in self.layers:
                    x = layer(x=x, key=key_tensor, value=value_tensor)
                    layer_outputs.append(x)
                layer_outputs = torch.stack(layer_outputs)
                mem = torch.einsum('lbd,l->bd', layer_outputs, self.softmax(self.weights))
                self.mem_key.append(step, self.key(mem))
                self.mem_value.append(step, self.value(mem))
                res.append(x)
            res = torch.stack(res)
            return self.norm(res)

        def free(self):
            self.mem_key.free()
            self.mem_value.free()

    class AutoregressiveModel(nn.Module):
        def __init__(self, n_vocab, d_model, transformer):
            super().__init__()
            self.src_embed = nn.Embedding(n_vocab, d_model)
            self.transformer = transformer
            self.generator = nn.Linear(d_model, n_vocab)

        def forward(self, x):
            x = self.src_embed(x)
            res = self.transformer(x)
            return self.generator(res), None

    d_model, heads = 8, 2
    layer = FeedbackTransformerLayer(d_model=d_model, attn=FeedbackAttention(heads, d_model, 0., is_kv_precomputed=kv),
                                     feed_forward=t.FeedForward(d_model, 16, 0.), dropout_prob=0.)
    transformer = FeedbackTransformerKV(layer, 2, d_model, heads) if kv else FeedbackTransformer(layer, 2)
    return AutoregressiveModel(10, d_model, transformer).double()


def feedback_program(m, weights, kv):
    torch = m.torch
    model = load(m, make_feedback(m, kv), weights)
    with torch.no_grad():  # their position parameters start at zero: give them values to differentiate
        for name, p in model.named_parameters():
            if "pos" in name:
                p.copy_(torch.linspace(-0.5, 0.5, p.numel(), dtype=torch.float64).view(p.shape))
    rng = np.random.default_rng(0)
    tokens = torch.tensor(rng.integers(0, 10, (6, 3)))
    target = torch.tensor(rng.integers(0, 10, (6, 3)))

    def loss_fn(model, x, y):
        out, _ = model(x)
        loss = m.F.cross_entropy(out.view(-1, out.shape[-1]), y.view(-1))
        return loss

    losses, grads = train_few(m, model, (tokens, target), loss_fn, steps=3)
    out = {"losses": losses, "grads": grads}
    if kv:
        out["memory"] = model.transformer.mem_key.memory[:6]
        out["memory_grad"] = model.transformer.mem_key.memory_grad[:6]
        model.transformer.free()
    return out


@pytest.mark.parametrize("kv", [False, True], ids=["plain", "kv_stack"])
def test_feedback_transformer(kv):
    weights = weights_of(lambda m: make_feedback(m, kv))
    ours, _ = run_both(feedback_program, weights, kv, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    assert np.abs(ours["grads"]["transformer.weights"]).max() > 0
    if kv:
        # the memory's last row is never read, so the gradient the Function accumulated stops one short
        assert np.abs(ours["memory_grad"][:5]).max() > 0 and np.all(ours["memory_grad"][5] == 0)
        assert np.abs(ours["grads"]["transformer.key.linear.weight"]).max() > 0


# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/{fast_weights,primer_ez,gmlp,aft,hour_glass}: attention variants
# ----------------------------------------------------------------------------------------------


def make_attention_variants(m):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)

    class DPFP(nn.Module):
        def __init__(self, nu=1, eps=1e-6):
            super().__init__()
            self.nu = nu
            self.relu = nn.ReLU()
            self.eps = eps

        def forward(self, k):
            k = self.dpfp(k)
            return k / (torch.sum(k, dim=-1, keepdim=True) + self.eps)

        def dpfp(self, k):
            x = self.relu(torch.cat([k, -k], dim=-1))
            x_rolled = [x.roll(shifts=i, dims=-1) for i in range(1, self.nu + 1)]
            x_rolled = torch.cat(x_rolled, dim=-1)
            x_repeat = torch.cat([x] * self.nu, dim=-1)
            return x_repeat * x_rolled

    class FastWeightsAttention(nn.Module):
        def __init__(self, heads, d_model, dropout_prob, phi):
            super().__init__()
            self.d_k = d_model // heads
            self.heads = heads
            self.query = t.PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=False)
            self.key = t.PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=False)
            self.value = t.PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=False)
            self.interpolation_weight = nn.Sequential(
                t.PrepareForMultiHeadAttention(d_model, heads, 1, bias=False),
                nn.Sigmoid()
            )
            self.phi = phi
            self.output = nn.Linear(d_model, d_model)
            self.dropout = nn.Dropout(dropout_prob)

        def forward(self, x):
            seq_len = x.shape[0]
            query = self.phi(self.query(x))
            key = self.phi(self.key(x))
            value = self.value(x)
            beta = self.interpolation_weight(x)
            weights = key.new_zeros((key.shape[1], key.shape[2], value.shape[3], key.shape[3]))
            outputs = []
            for i in range(seq_len):
                value_existing = torch.einsum('bhvk,bhk->bhv', weights, key[i])
                weights = weights + torch.einsum('bhv,bhk->bhvk', beta[i] * (value[i] - value_existing), key[i])
                y = torch.einsum('bhvk,bhk->bhv', weights, query[i])
                outputs.append(y.reshape(y.shape[0], -1))
            x = torch.stack(outputs)
            return self.output(x)

    class SquaredReLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x):
            x = self.relu(x)
            return x * x

    class SpatialDepthWiseConvolution(nn.Module):
        def __init__(self, d_k, kernel_size=3):
            super().__init__()
            self.kernel_size = kernel_size
            self.conv = nn.Conv1d(in_channels=d_k, out_channels=d_k, kernel_size=(kernel_size,),
                                  padding=(kernel_size - 1,), groups=d_k)

        def forward(self, x):
            seq_len, batch_size, heads, d_k = x.shape
            x = x.permute(1, 2, 3, 0)
            x = x.view(batch_size * heads, d_k, seq_len)
            x = self.conv(x)
            x = x[:, :, :-(self.kernel_size - 1)]
            x = x.view(batch_size, heads, d_k, seq_len)
            x = x.permute(3, 0, 1, 2)
            return x

    class MultiDConvHeadAttention(t.MultiHeadAttention):
        def __init__(self, heads, d_model, dropout_prob=0.1):
            super().__init__(heads, d_model, dropout_prob)
            self.query = nn.Sequential(self.query, SpatialDepthWiseConvolution(self.d_k))
            self.key = nn.Sequential(self.key, SpatialDepthWiseConvolution(self.d_k))
            self.value = nn.Sequential(self.value, SpatialDepthWiseConvolution(self.d_k))

    class SpacialGatingUnit(nn.Module):
        def __init__(self, d_z, seq_len):
            super().__init__()
            self.norm = nn.LayerNorm([d_z // 2])
            self.weight = nn.Parameter(torch.zeros(seq_len, seq_len).uniform_(-0.01, 0.01), requires_grad=True)
            self.bias = nn.Parameter(torch.ones(seq_len), requires_grad=True)

        def forward(self, z, mask=None):
            seq_len = z.shape[0]
            z1, z2 = torch.chunk(z, 2, dim=-1)
            if mask is not None:
                assert mask.shape[0] == 1 or mask.shape[0] == seq_len
                assert mask.shape[1] == seq_len
                assert mask.shape[2] == 1
                mask = mask[:, :, 0]
            z2 = self.norm(z2)
            weight = self.weight[:seq_len, :seq_len]
            if mask is not None:
                weight = weight * mask
            z2 = torch.einsum('ij,jbd->ibd', weight, z2) + self.bias[:seq_len, None, None]
            return z1 * z2

    class GMLPBlock(nn.Module):
        def __init__(self, d_model, d_ffn, seq_len):
            super().__init__()
            self.norm = nn.LayerNorm([d_model])
            self.activation = nn.GELU()
            self.proj1 = nn.Linear(d_model, d_ffn)
            self.sgu = SpacialGatingUnit(d_ffn, seq_len)
            self.proj2 = nn.Linear(d_ffn // 2, d_model)
            self.size = d_model

        def forward(self, *, x, mask=None):
            shortcut = x
            x = self.norm(x)
            z = self.activation(self.proj1(x))
            z = self.sgu(z, mask)
            z = self.proj2(z)
            return z + shortcut

    class AFTLocal(nn.Module):
        def __init__(self, d_model, seq_len, local_window_size, bias=True):
            super().__init__()
            self.local_window_size = local_window_size
            self.query = nn.Linear(d_model, d_model, bias=bias)
            self.key = nn.Linear(d_model, d_model, bias=bias)
            self.value = nn.Linear(d_model, d_model, bias=bias)
            self.pos_bias = nn.Parameter(torch.zeros(seq_len, seq_len), requires_grad=True)
            self.local_mask = nn.Parameter(self.create_local_mask(seq_len, local_window_size), requires_grad=False)
            self.activation = nn.Sigmoid()
            self.output = nn.Linear(d_model, d_model)

        @staticmethod
        def create_local_mask(seq_len, local_window_size):
            local_mask = torch.ones(seq_len, seq_len, dtype=torch.bool)
            local_mask = torch.tril(local_mask, local_window_size - 1)
            local_mask = torch.triu(local_mask, -(local_window_size - 1))
            return local_mask

        def forward(self, *, query, key, value, mask=None):
            seq_len, _, _ = query.shape
            if mask is not None:
                assert mask.shape[0] == 1 or mask.shape[0] == query.shape[0]
                assert mask.shape[1] == key.shape[0]
                assert mask.shape[2] == 1 or mask.shape[2] == query.shape[1]
            query = self.query(query)
            key = self.key(key)
            value = self.value(value)
            pos_bias = self.pos_bias[:seq_len, :seq_len] * self.local_mask[:seq_len, :seq_len]
            pos_bias = pos_bias.unsqueeze(-1)
            pos_bias.masked_fill_(~mask, float('-inf'))
            max_key = key.max(dim=0, keepdims=True)[0]
            max_pos_bias = pos_bias.max(dim=1, keepdims=True)[0]
            exp_key = torch.exp(key - max_key)
            exp_pos_bias = torch.exp(pos_bias - max_pos_bias)
            num = torch.einsum('ijb,jbd->ibd', exp_pos_bias, exp_key * value)
            den = torch.einsum('ijb,jbd->ibd', exp_pos_bias, exp_key)
            y = self.activation(query) * num / den
            return self.output(y)

    class ShiftRight(nn.Module):
        def __init__(self, shift):
            super().__init__()
            assert shift >= 0
            self.shift = shift

        def forward(self, x):
            if self.shift == 0:
                return x
            prefix = x.new_zeros([self.shift, *x.shape[1:]])
            return torch.cat([prefix, x[:-self.shift]])

    class AvgPoolShortening(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.pool = nn.AvgPool1d(k, ceil_mode=True)

        def forward(self, x):
            return self.pool(x.permute(1, 2, 0)).permute(2, 0, 1)

    class NaiveUpSampling(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x, x_short):
            expanded = torch.repeat_interleave(x_short, self.k, dim=0)
            expanded = expanded[:x.shape[0]]
            return expanded

    class AutoregressiveMask(nn.Module):
        def __init__(self):
            super().__init__()
            self.mask = None

        def forward(self, x):
            if self.mask is None or self.mask.size(0) != len(x):
                self.mask = t.subsequent_mask(len(x)).to(x.device)
            return self.mask

    def transformer_layer(n_heads, d_model, dropout, d_ff):
        return t.TransformerLayer(d_model=d_model, self_attn=t.MultiHeadAttention(n_heads, d_model, dropout),
                                  feed_forward=t.FeedForward(d_model, d_ff, dropout), dropout_prob=dropout)

    class HourGlass(nn.Module):
        def __init__(self, n_heads, d_model, dropout, d_ff, shortening_factors):
            super().__init__()
            self.pre = transformer_layer(n_heads, d_model, dropout, d_ff)
            self.mask = AutoregressiveMask()
            k = shortening_factors[0]
            self.shift_right = ShiftRight(k - 1)
            self.shortening = AvgPoolShortening(k)
            if len(shortening_factors) == 1:
                self.shortened = transformer_layer(n_heads, d_model, dropout, d_ff)
                self.mask_short = AutoregressiveMask()
                self.hour_glass = None
            else:
                self.hour_glass = HourGlass(n_heads, d_model, dropout, d_ff, shortening_factors[1:])
            self.up_sampling = NaiveUpSampling(k)
            self.post = transformer_layer(n_heads, d_model, dropout, d_ff)

        def forward(self, x):
            x = self.pre(x=x, mask=self.mask(x))
            x_short = self.shortening(self.shift_right(x))
            if self.hour_glass is None:
                x_short = self.shortened(x=x_short, mask=self.mask_short(x_short))
            else:
                x_short = self.hour_glass(x_short)
            x = x + self.up_sampling(x, x_short)
            x = self.post(x=x, mask=self.mask(x))
            return x

    class Variants(nn.Module):
        def __init__(self, d_model=8, heads=2, seq_len=7):
            super().__init__()
            self.fast = FastWeightsAttention(heads, d_model, 0., DPFP(nu=2))
            self.primer_attn = MultiDConvHeadAttention(heads, d_model, 0.)
            self.primer_ff = t.FeedForward(d_model, 16, 0., activation=SquaredReLU())
            self.gmlp = GMLPBlock(d_model, 16, seq_len)
            self.aft = AFTLocal(d_model, seq_len, 3)
            self.hour_glass = HourGlass(heads, d_model, 0., 16, [2, 2])
            self.head = nn.Linear(d_model, 1)

        def forward(self, x):
            mask = t.subsequent_mask(x.shape[0])
            parts = {"fast": self.fast(x)}
            parts["primer"] = self.primer_ff(self.primer_attn(query=x, key=x, value=x, mask=mask))
            parts["gmlp"] = self.gmlp(x=x, mask=mask)
            parts["aft"] = self.aft(query=x, key=x, value=x, mask=mask)
            parts["hour_glass"] = self.hour_glass(x)
            return parts

    return Variants().double()


def attention_variants_program(m, weights):
    torch = m.torch
    model = load(m, make_attention_variants(m), weights)
    with torch.no_grad():
        model.aft.pos_bias.copy_(torch.linspace(-1, 1, 49, dtype=torch.float64).view(7, 7))
    x, y = (torch.tensor(a) for a in sequence_data())
    x.requires_grad_()
    parts = model(x)
    out = {"parts": {k: v.detach() for k, v in parts.items()}}
    # each variant's gradient separately (and its input gradient from position 3 alone: all are causal),
    # then a few steps on their sum
    for name, value in parts.items():
        out["grad_" + name] = torch.autograd.grad((value * y).sum(), [p for p in model.parameters() if p.requires_grad],
                                                  retain_graph=True, allow_unused=True)
        out["causal_" + name] = torch.autograd.grad(value[3].sum(), x, retain_graph=True)[0]
    x = x.detach()

    def loss_fn(model, x, y):
        return sum(((v - y) ** 2).mean() for v in model(x).values())

    out["losses"], out["grads"] = train_few(m, model, (x, y), loss_fn, steps=3)
    out["local_mask"] = model.aft.local_mask
    out["local_mask_grad"] = model.aft.local_mask.requires_grad
    return out


def test_attention_variants():
    weights = weights_of(make_attention_variants)
    ours, _ = run_both(attention_variants_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    assert not ours["local_mask_grad"]
    np.testing.assert_array_equal(ours["local_mask"], np.abs(np.subtract.outer(range(7), range(7))) < 3)
    for name in ("fast", "primer", "gmlp", "aft", "hour_glass"):
        assert np.all(np.isfinite(ours["parts"][name])), name
        # (AFT subtracts the maximum key over every position: causal up to its rounding)
        assert np.abs(ours["causal_" + name][4:]).max() < 1e-15 and np.abs(ours["causal_" + name][:4]).max() > 0, name


# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/{rope,alibi,xl}: positions in attention
# ----------------------------------------------------------------------------------------------


def make_positional_attention(m):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)

    class RotaryPositionalEmbeddings(nn.Module):
        def __init__(self, d, base=10_000):
            super().__init__()
            self.base = base
            self.d = d
            self.cos_cached = None
            self.sin_cached = None

        def _build_cache(self, x):
            if self.cos_cached is not None and x.shape[0] <= self.cos_cached.shape[0]:
                return
            seq_len = x.shape[0]
            theta = 1. / (self.base ** (torch.arange(0, self.d, 2).float() / self.d)).to(x.device)
            seq_idx = torch.arange(seq_len, device=x.device).float().to(x.device)
            idx_theta = torch.einsum('n,d->nd', seq_idx, theta)
            idx_theta2 = torch.cat([idx_theta, idx_theta], dim=1)
            self.cos_cached = idx_theta2.cos()[:, None, None, :]
            self.sin_cached = idx_theta2.sin()[:, None, None, :]

        def _neg_half(self, x):
            d_2 = self.d // 2
            return torch.cat([-x[:, :, :, d_2:], x[:, :, :, :d_2]], dim=-1)

        def forward(self, x):
            self._build_cache(x)
            seq_len = x.shape[0]
            x_rope, x_pass = x[..., :self.d], x[..., self.d:]
            neg_half_x = self._neg_half(x_rope)
            x_rope = (x_rope * self.cos_cached[:seq_len]) + (neg_half_x * self.sin_cached[:seq_len])
            return torch.cat((x_rope, x_pass), dim=-1)

    class RotaryPEMultiHeadAttention(t.MultiHeadAttention):
        def __init__(self, heads, d_model, rope_percentage=0.5, dropout_prob=0.0):
            super().__init__(heads, d_model, dropout_prob)
            d_rope = int(self.d_k * rope_percentage)
            self.query_rotary_pe = RotaryPositionalEmbeddings(d_rope)
            self.key_rotary_pe = RotaryPositionalEmbeddings(d_rope)

        def get_scores(self, query, key):
            return torch.einsum('ibhd,jbhd->ijbh', self.query_rotary_pe(query), self.key_rotary_pe(key))

    def get_slopes(n_heads):
        n = 2 ** math.floor(math.log2(n_heads))
        m_0 = 2.0 ** (-8.0 / n)
        m = torch.pow(m_0, torch.arange(1, 1 + n))
        if n < n_heads:
            m_hat_0 = 2.0 ** (-4.0 / n)
            m_hat = torch.pow(m_hat_0, torch.arange(1, 1 + 2 * (n_heads - n), 2))
            m = torch.cat([m, m_hat])
        return m

    @torch.no_grad()
    def get_alibi_biases(n_heads, mask):
        m = get_slopes(n_heads).to(mask.device)
        distance = mask.cumsum(dim=-1)
        return distance[:, :, None] * m[None, None, :]

    class AlibiMultiHeadAttention(t.MultiHeadAttention):
        def __init__(self, heads, d_model, dropout_prob=0.1):
            super().__init__(heads, d_model, dropout_prob)
            self.alibi_biases = None

        def forward(self, *, query, key, value, mask=None):
            assert mask is not None
            assert mask.shape[0] == mask.shape[1] and mask.shape[2] == 1
            seq_len, batch_size, _ = query.shape
            mask = self.prepare_mask(mask, query.shape, key.shape)
            query = self.query(query)
            key = self.key(key)
            value = self.value(value)
            scores = self.get_scores(query, key)
            scores *= self.scale
            if self.alibi_biases is None or self.alibi_biases.shape[1] < seq_len:
                self.alibi_biases = get_alibi_biases(scores.shape[-1], mask[:, :, 0, 0])
            scores += self.alibi_biases[:seq_len, :seq_len, None, :]
            scores = scores.masked_fill(mask == 0, float('-inf'))
            attn = self.softmax(scores)
            attn = self.dropout(attn)
            x = torch.einsum("ijbh,jbhd->ibhd", attn, value)
            x = x.reshape(seq_len, batch_size, -1)
            return self.output(x)

    def shift_right(x):
        zero_pad = x.new_zeros(x.shape[0], 1, *x.shape[2:])
        x_padded = torch.cat([x, zero_pad], dim=1)
        x_padded = x_padded.view(x.shape[1] + 1, x.shape[0], *x.shape[2:])
        x = x_padded[:-1].view_as(x)
        return x

    class RelativeMultiHeadAttention(t.MultiHeadAttention):
        def __init__(self, heads, d_model, dropout_prob=0.1):
            super().__init__(heads, d_model, dropout_prob, bias=False)
            self.P = 2 ** 5
            self.key_pos_embeddings = nn.Parameter(torch.zeros((self.P * 2, heads, self.d_k)), requires_grad=True)
            self.key_pos_bias = nn.Parameter(torch.zeros((self.P * 2, heads)), requires_grad=True)
            self.query_pos_bias = nn.Parameter(torch.zeros((heads, self.d_k)), requires_grad=True)

        def get_scores(self, query, key):
            key_pos_emb = self.key_pos_embeddings[self.P - key.shape[0]:self.P + query.shape[0]]
            key_pos_bias = self.key_pos_bias[self.P - key.shape[0]:self.P + query.shape[0]]
            query_pos_bias = self.query_pos_bias[None, None, :, :]
            ac = torch.einsum('ibhd,jbhd->ijbh', query + query_pos_bias, key)
            b = torch.einsum('ibhd,jhd->ijbh', query, key_pos_emb)
            d = key_pos_bias[None, :, None, :]
            bd = shift_right(b + d)
            bd = bd[:, -key.shape[0]:]
            return ac + bd

    class Model(nn.Module):
        def __init__(self, d_model=16, heads=4):
            super().__init__()
            self.rope = RotaryPEMultiHeadAttention(heads, d_model, rope_percentage=0.5)
            self.alibi = AlibiMultiHeadAttention(6, 12, dropout_prob=0.)
            self.xl = RelativeMultiHeadAttention(heads, d_model, 0.)
            self.project = nn.Linear(d_model, 12)

    return Model().double(), RotaryPositionalEmbeddings, get_slopes, get_alibi_biases, shift_right


def positional_program(m, weights):
    torch = m.torch
    model, Rotary, get_slopes, get_alibi_biases, shift_right = make_positional_attention(m)
    model = load(m, model, weights)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "pos" in name:
                p.copy_(torch.linspace(-0.3, 0.3, p.numel(), dtype=torch.float64).view(p.shape))
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.standard_normal((6, 2, 16)))
    mem = torch.tensor(rng.standard_normal((4, 2, 16)))  # Transformer-XL's memory of the previous segment
    mask = torch.tril(torch.ones(6, 6)).to(torch.bool).unsqueeze(-1)
    xl_mask = torch.cat([torch.ones(6, 4, 1, dtype=torch.bool), mask], dim=1)
    out = {}
    rope = model.rope(query=x, key=x, value=x, mask=mask)
    alibi = model.alibi(query=model.project(x), key=model.project(x), value=model.project(x), mask=mask)
    mem_x = torch.cat([mem, x])
    xl = model.xl(query=x, key=mem_x, value=mem_x, mask=xl_mask)
    loss = rope.pow(2).mean() + alibi.pow(2).mean() + xl.pow(2).mean()
    loss.backward()
    out["outputs"] = [rope, alibi, xl]
    out["grads"] = {n: p.grad for n, p in model.named_parameters()}
    # the module-level helpers as the authors' _test functions call them
    r = Rotary(4)
    points = torch.tensor([[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10]], dtype=torch.float)[:, None, None, :]
    out["rotary"] = r(points)
    out["slopes"] = [get_slopes(8), get_slopes(12)]
    out["biases"] = get_alibi_biases(12, torch.tril(torch.ones(8, 8)).to(torch.bool))[:, :, 3]
    out["shift"] = shift_right(torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]]))
    out["shift4"] = shift_right(torch.arange(1, 6)[None, :, None, None].repeat(3, 1, 1, 1))[:, :, 0, 0]
    return out


def test_rope_alibi_xl_attention():
    weights = weights_of(lambda m: make_positional_attention(m)[0])
    # (RoPE's cos/sin cache is float32, as they write it, and float32 cos may differ by an ulp)
    ours, _ = run_both(positional_program, weights, rtol=2e-6, atol=1e-8)
    # RoPE rotates pairs (i, i + d/2) by position * theta_i; position 0 is unchanged
    p = np.array([[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10]], dtype=np.float64)
    theta = 1.0 / 10000 ** (np.arange(0, 4, 2) / 4)
    ang = np.arange(3)[:, None] * theta
    cos, sin = np.cos(ang), np.sin(ang)
    expected = np.concatenate([p[:, :2] * cos - p[:, 2:] * sin, p[:, 2:] * cos + p[:, :2] * sin], axis=1)
    np.testing.assert_allclose(ours["rotary"][:, 0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(ours["slopes"][0], 2.0 ** (-np.arange(1, 9)), rtol=1e-6)
    assert ours["slopes"][1].shape == (12,)
    assert ours["biases"].shape == (8, 8)
    np.testing.assert_array_equal(ours["shift"], [[1, 2, 3], [0, 4, 5], [6, 0, 7]])
    assert all(np.isfinite(o).all() for o in ours["outputs"])
    assert np.abs(ours["grads"]["xl.key_pos_embeddings"]).max() > 0


# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/fnet and label_smoothing_loss: an FNet encoder trained with label smoothing
# ----------------------------------------------------------------------------------------------


def make_fnet(m):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)

    class FNetMix(nn.Module):
        def forward(self, query, key, value, mask=None):
            assert query is key and key is value
            assert mask is None
            x = query
            fft_hidden = torch.fft.fft(x, dim=2)
            fft_seq = torch.fft.fft(fft_hidden, dim=0)
            return torch.real(fft_seq)

    class Classifier(nn.Module):
        def __init__(self, n_vocab=9, d_model=8, n_layers=2, n_classes=6):
            super().__init__()
            self.embed = nn.Embedding(n_vocab, d_model)
            layer = t.TransformerLayer(d_model=d_model, self_attn=FNetMix(), feed_forward=t.FeedForward(d_model, 16, 0.),
                                       dropout_prob=0.)
            self.layers = t.clone_module_list(layer, n_layers)
            self.norm = nn.LayerNorm([d_model])
            self.generator = nn.Linear(d_model, n_classes)

        def forward(self, x):
            x = self.embed(x)
            for layer in self.layers:
                x = layer(x=x, mask=None)
            x = self.norm(x)
            return torch.log_softmax(self.generator(x[0]), dim=-1)

    return Classifier().double()


def fnet_program(m, weights):
    torch, nn = m.torch, m.nn

    class LabelSmoothingLoss(nn.Module):
        def __init__(self, size, padding_idx, smoothing=0.0):
            super().__init__()
            self.loss = nn.KLDivLoss(reduction='sum')
            self.padding_idx = padding_idx
            self.confidence = 1.0 - smoothing
            self.smoothing = smoothing
            self.size = size
            self.true_dist = None

        def forward(self, x, target):
            assert x.shape[1] == self.size
            true_dist = x.clone()
            true_dist.fill_(self.smoothing / (self.size - 2))
            true_dist.scatter_(1, target.unsqueeze(1), self.confidence)
            true_dist[:, self.padding_idx] = 0
            mask = torch.nonzero(target == self.padding_idx, as_tuple=False)
            if mask.dim() > 0:
                true_dist.index_fill_(0, mask.squeeze(), 0.0)
            self.true_dist = true_dist
            return self.loss(x, true_dist.detach())

    smooth_loss = LabelSmoothingLoss(5, 0, 0.4)
    predict = torch.tensor([[0, 0.2, 0.7, 0.1, 0], [0, 0.2, 0.7, 0.1, 0], [0, 0.2, 0.7, 0.1, 0]], dtype=torch.float)
    demo = smooth_loss(predict.log(), torch.tensor([2, 1, 0], dtype=torch.long))
    out = {"demo_dist": smooth_loss.true_dist, "demo": demo}

    model = load(m, make_fnet(m), weights)
    rng = np.random.default_rng(3)
    tokens = torch.tensor(rng.integers(0, 9, (10, 12)))
    labels = torch.tensor(rng.integers(0, 6, 12))
    labels[3] = 0  # the padding class: its row drops out of the loss
    criterion = LabelSmoothingLoss(6, 0, 0.1)
    out["losses"], out["grads"] = train_few(m, model, (tokens, labels), lambda model, x, y: criterion(model(x), y), steps=4)
    out["true_dist"] = criterion.true_dist
    mix = model.layers[0].self_attn
    z = torch.tensor(rng.standard_normal((4, 2, 3)))
    out["mix"] = mix(z, z, z)
    return out


def test_fnet_with_label_smoothing():
    weights = weights_of(make_fnet)
    ours, _ = run_both(fnet_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    e = 0.4 / 3
    np.testing.assert_allclose(ours["demo_dist"], [[0, e, 0.6, e, e], [0, 0.6, e, e, e], [0] * 5], rtol=1e-6)
    td = ours["true_dist"]
    assert np.all(td[3] == 0) and np.all(td[:, 0] == 0)
    np.testing.assert_allclose(td.sum(1)[td.sum(1) > 0], 1.0, rtol=1e-12)
    rng = np.random.default_rng(3)
    rng.integers(0, 9, (10, 12)), rng.integers(0, 6, 12)
    z = rng.standard_normal((4, 2, 3))
    np.testing.assert_allclose(ours["mix"], np.real(np.fft.fft(np.fft.fft(z, axis=2), axis=0)), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# labml_nn/capsule_networks: dynamic routing between capsules with the margin loss
# ----------------------------------------------------------------------------------------------


def make_capsnet(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Squash(nn.Module):
        def __init__(self, epsilon=1e-8):
            super().__init__()
            self.epsilon = epsilon

        def forward(self, s):
            s2 = (s ** 2).sum(dim=-1, keepdims=True)
            return (s2 / (1 + s2)) * (s / torch.sqrt(s2 + self.epsilon))

    class Router(nn.Module):
        def __init__(self, in_caps, out_caps, in_d, out_d, iterations):
            super().__init__()
            self.in_caps = in_caps
            self.out_caps = out_caps
            self.iterations = iterations
            self.softmax = nn.Softmax(dim=1)
            self.squash = Squash()
            self.weight = nn.Parameter(torch.randn(in_caps, out_caps, in_d, out_d), requires_grad=True)

        def forward(self, u):
            u_hat = torch.einsum('ijnm,bin->bijm', self.weight, u)
            b = u.new_zeros(u.shape[0], self.in_caps, self.out_caps)
            v = None
            for i in range(self.iterations):
                c = self.softmax(b)
                s = torch.einsum('bij,bijm->bjm', c, u_hat)
                v = self.squash(s)
                a = torch.einsum('bjm,bijm->bij', v, u_hat)
                b = b + a
            return v

    class MNISTCapsuleNetworkModel(nn.Module):  # labml_nn/capsule_networks/mnist.py, on 12x12 images
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels=1, out_channels=16, kernel_size=3, stride=1)
            self.conv2 = nn.Conv2d(in_channels=16, out_channels=4 * 4, kernel_size=3, stride=2, padding=0)
            self.squash = Squash()
            self.digit_capsules = Router(4 * 4 * 4, 3, 4, 8, 3)
            self.decoder = nn.Sequential(
                nn.Linear(8 * 3, 32), nn.ReLU(),
                nn.Linear(32, 144), nn.Sigmoid()
            )

        def forward(self, data):
            x = F.relu(self.conv1(data))
            caps = self.conv2(x).view(x.shape[0], 4, 4, -1).permute(0, 1, 3, 2)
            caps = self.squash(caps)
            caps = caps.reshape(caps.shape[0], -1, 4)
            caps = self.digit_capsules(caps)
            with torch.no_grad():
                pred = (caps ** 2).sum(-1).argmax(-1)
                mask = torch.eye(3, device=data.device)[pred]
            reconstructions = self.decoder((caps * mask[:, :, None]).view(x.shape[0], -1))
            reconstructions = reconstructions.view(-1, 1, 12, 12)
            return caps, reconstructions, pred

    return MNISTCapsuleNetworkModel().double()


def capsnet_program(m, weights):
    torch, nn, F = m.torch, m.nn, m.F

    class MarginLoss(nn.Module):
        def __init__(self, *, n_labels, lambda_=0.5, m_positive=0.9, m_negative=0.1):
            super().__init__()
            self.m_negative = m_negative
            self.m_positive = m_positive
            self.lambda_ = lambda_
            self.n_labels = n_labels

        def forward(self, v, labels):
            v_norm = torch.sqrt((v ** 2).sum(dim=-1))
            labels = torch.eye(self.n_labels, device=labels.device)[labels]
            loss = labels * F.relu(self.m_positive - v_norm) + \
                self.lambda_ * (1.0 - labels) * F.relu(v_norm - self.m_negative)
            return loss.sum(dim=-1).mean()

    model = load(m, make_capsnet(m), weights)
    rng = np.random.default_rng(4)
    images = torch.tensor(rng.uniform(0, 1, (6, 1, 12, 12)))
    labels = torch.tensor(rng.integers(0, 3, 6))
    margin_loss = MarginLoss(n_labels=3)

    def loss_fn(model, data, target):
        output, reconstructions, pred = model(data)
        return margin_loss(output, target) + 0.0005 * F.mse_loss(reconstructions, data)

    losses, grads = train_few(m, model, (images, labels), loss_fn, steps=4, lr=1e-3)
    caps, rec, pred = model(images)
    return {"losses": losses, "grads": grads, "caps": caps, "pred": pred, "rec": rec}


def test_capsule_network():
    weights = weights_of(make_capsnet)
    ours, _ = run_both(capsnet_program, weights, rtol=1e-7, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    norms = np.sqrt((ours["caps"] ** 2).sum(-1))
    assert np.all(norms < 1)  # squashed
    np.testing.assert_array_equal(ours["pred"], norms.argmax(-1))


# ----------------------------------------------------------------------------------------------
# labml_nn/hypernetworks: HyperLSTM (a small LSTM generating the main LSTM's weight scalings)
# ----------------------------------------------------------------------------------------------


def make_hyper_lstm(m):
    torch, nn = m.torch, m.nn

    class LSTMCell(nn.Module):
        def __init__(self, input_size, hidden_size, layer_norm=False):
            super().__init__()
            self.hidden_lin = nn.Linear(hidden_size, 4 * hidden_size)
            self.input_lin = nn.Linear(input_size, 4 * hidden_size, bias=False)
            if layer_norm:
                self.layer_norm = nn.ModuleList([nn.LayerNorm(hidden_size) for _ in range(4)])
                self.layer_norm_c = nn.LayerNorm(hidden_size)
            else:
                self.layer_norm = nn.ModuleList([nn.Identity() for _ in range(4)])
                self.layer_norm_c = nn.Identity()

        def forward(self, x, h, c):
            ifgo = self.hidden_lin(h) + self.input_lin(x)
            ifgo = ifgo.chunk(4, dim=-1)
            ifgo = [self.layer_norm[i](ifgo[i]) for i in range(4)]
            i, f, g, o = ifgo
            c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_next = torch.sigmoid(o) * torch.tanh(self.layer_norm_c(c_next))
            return h_next, c_next

    class HyperLSTMCell(nn.Module):
        def __init__(self, input_size, hidden_size, hyper_size, n_z):
            super().__init__()
            self.hyper = LSTMCell(hidden_size + input_size, hyper_size, layer_norm=True)
            self.z_h = nn.Linear(hyper_size, 4 * n_z)
            self.z_x = nn.Linear(hyper_size, 4 * n_z)
            self.z_b = nn.Linear(hyper_size, 4 * n_z, bias=False)
            d_h = [nn.Linear(n_z, hidden_size, bias=False) for _ in range(4)]
            self.d_h = nn.ModuleList(d_h)
            d_x = [nn.Linear(n_z, hidden_size, bias=False) for _ in range(4)]
            self.d_x = nn.ModuleList(d_x)
            d_b = [nn.Linear(n_z, hidden_size) for _ in range(4)]
            self.d_b = nn.ModuleList(d_b)
            self.w_h = nn.ParameterList([nn.Parameter(torch.zeros(hidden_size, hidden_size)) for _ in range(4)])
            self.w_x = nn.ParameterList([nn.Parameter(torch.zeros(hidden_size, input_size)) for _ in range(4)])
            self.layer_norm = nn.ModuleList([nn.LayerNorm(hidden_size) for _ in range(4)])
            self.layer_norm_c = nn.LayerNorm(hidden_size)

        def forward(self, x, h, c, h_hat, c_hat):
            x_hat = torch.cat((h, x), dim=-1)
            h_hat, c_hat = self.hyper(x_hat, h_hat, c_hat)
            z_h = self.z_h(h_hat).chunk(4, dim=-1)
            z_x = self.z_x(h_hat).chunk(4, dim=-1)
            z_b = self.z_b(h_hat).chunk(4, dim=-1)
            ifgo = []
            for i in range(4):
                d_h = self.d_h[i](z_h[i])
                d_x = self.d_x[i](z_x[i])
                y = d_h * torch.einsum('ij,bj->bi', self.w_h[i], h) + \
                    d_x * torch.einsum('ij,bj->bi', self.w_x[i], x) + \
                    self.d_b[i](z_b[i])
                ifgo.append(self.layer_norm[i](y))
            i, f, g, o = ifgo
            c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_next = torch.sigmoid(o) * torch.tanh(self.layer_norm_c(c_next))
            return h_next, c_next, h_hat, c_hat

    class HyperLSTM(nn.Module):
        def __init__(self, input_size, hidden_size, hyper_size, n_z, n_layers):
            super().__init__()
            self.n_layers = n_layers
            self.hidden_size = hidden_size
            self.hyper_size = hyper_size
            self.cells = nn.ModuleList([HyperLSTMCell(input_size, hidden_size, hyper_size, n_z)] +
                                       [HyperLSTMCell(hidden_size, hidden_size, hyper_size, n_z) for _ in
                                        range(n_layers - 1)])

        def forward(self, x, state=None):
            n_steps, batch_size = x.shape[:2]
            if state is None:
                h = [x.new_zeros(batch_size, self.hidden_size) for _ in range(self.n_layers)]
                c = [x.new_zeros(batch_size, self.hidden_size) for _ in range(self.n_layers)]
                h_hat = [x.new_zeros(batch_size, self.hyper_size) for _ in range(self.n_layers)]
                c_hat = [x.new_zeros(batch_size, self.hyper_size) for _ in range(self.n_layers)]
            else:
                (h, c, h_hat, c_hat) = state
                h, c = list(torch.unbind(h)), list(torch.unbind(c))
                h_hat, c_hat = list(torch.unbind(h_hat)), list(torch.unbind(c_hat))
            out = []
            for t in range(n_steps):
                inp = x[t]
                for layer in range(self.n_layers):
                    h[layer], c[layer], h_hat[layer], c_hat[layer] = \
                        self.cells[layer](inp, h[layer], c[layer], h_hat[layer], c_hat[layer])
                    inp = h[layer]
                out.append(h[-1])
            out = torch.stack(out)
            h = torch.stack(h)
            c = torch.stack(c)
            h_hat = torch.stack(h_hat)
            c_hat = torch.stack(c_hat)
            return out, (h, c, h_hat, c_hat)

    class AutoregressiveModel(nn.Module):
        def __init__(self, n_vocab=7, d_model=6, hidden=8):
            super().__init__()
            self.src_embed = nn.Embedding(n_vocab, d_model)
            self.lstm = HyperLSTM(d_model, hidden, 5, 3, 2)
            self.generator = nn.Linear(hidden, n_vocab)

        def forward(self, x, state=None):
            x = self.src_embed(x)
            res, state = self.lstm(x, state)
            return self.generator(res), state

    model = AutoregressiveModel().double()
    with torch.no_grad():  # their w_h, w_x start at zero
        for i, p in enumerate(model.parameters()):
            if p.dim() == 2 and p.abs().sum() == 0:
                nn.init.orthogonal_(p)
    return model


def hyper_lstm_program(m, weights):
    torch = m.torch
    model = load(m, make_hyper_lstm(m), weights)
    rng = np.random.default_rng(5)
    tokens = torch.tensor(rng.integers(0, 7, (8, 3)))
    target = torch.tensor(rng.integers(0, 7, (8, 3)))

    def loss_fn(model, x, y):
        first, state = model(x[:4])
        # truncated backpropagation through time: the second half starts from the detached state
        second, _ = model(x[4:], tuple(s.detach() for s in state))
        out = torch.cat([first, second])
        return m.F.cross_entropy(out.view(-1, 7), y.view(-1))

    losses, grads = train_few(m, model, (tokens, target), loss_fn, steps=3)
    with torch.no_grad():
        _, state = model(tokens)
    return {"losses": losses, "grads": grads, "state": state, "n_params": len(list(model.parameters()))}


def test_hyper_lstm():
    weights = weights_of(make_hyper_lstm)
    ours, _ = run_both(hyper_lstm_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    assert [s.shape for s in ours["state"]] == [(2, 3, 8), (2, 3, 8), (2, 3, 5), (2, 3, 5)]
    assert np.abs(ours["grads"]["lstm.cells.1.w_h.2"]).max() > 0


# ----------------------------------------------------------------------------------------------
# labml_nn/uncertainty/evidence: evidential deep learning's losses
# ----------------------------------------------------------------------------------------------


def evidence_program(m):
    torch, nn = m.torch, m.nn

    class MaximumLikelihoodLoss(nn.Module):
        def forward(self, evidence, target):
            alpha = evidence + 1.
            strength = alpha.sum(dim=-1)
            loss = (target * (strength.log()[:, None] - alpha.log())).sum(dim=-1)
            return loss.mean()

    class CrossEntropyBayesRisk(nn.Module):
        def forward(self, evidence, target):
            alpha = evidence + 1.
            strength = alpha.sum(dim=-1)
            loss = (target * (torch.digamma(strength)[:, None] - torch.digamma(alpha))).sum(dim=-1)
            return loss.mean()

    class SquaredErrorBayesRisk(nn.Module):
        def forward(self, evidence, target):
            alpha = evidence + 1.
            strength = alpha.sum(dim=-1)
            p = alpha / strength[:, None]
            err = (target - p) ** 2
            var = p * (1 - p) / (strength[:, None] + 1)
            loss = (err + var).sum(dim=-1)
            return loss.mean()

    class KLDivergenceLoss(nn.Module):
        def forward(self, evidence, target):
            alpha = evidence + 1.
            n_classes = evidence.shape[-1]
            alpha_tilde = target + (1 - target) * alpha
            strength_tilde = alpha_tilde.sum(dim=-1)
            first = (torch.lgamma(alpha_tilde.sum(dim=-1))
                     - torch.lgamma(alpha_tilde.new_tensor(float(n_classes)))
                     - (torch.lgamma(alpha_tilde)).sum(dim=-1))
            second = (
                (alpha_tilde - 1) *
                (torch.digamma(alpha_tilde) - torch.digamma(strength_tilde)[:, None])
            ).sum(dim=-1)
            loss = first + second
            return loss.mean()

    def statistics(evidence, target):
        n_classes = evidence.shape[-1]
        match = evidence.argmax(dim=-1).eq(target.argmax(dim=-1))
        accuracy = match.sum() / match.shape[0]
        alpha = evidence + 1.
        strength = alpha.sum(dim=-1)
        expected_probability = alpha / strength[:, None]
        expected_probability, _ = expected_probability.max(dim=-1)
        uncertainty_mass = n_classes / strength
        return {"accuracy": accuracy, "u.succ": uncertainty_mass.masked_select(match),
                "u.fail": uncertainty_mass.masked_select(~match),
                "prob.succ": expected_probability.masked_select(match),
                "prob.fail": expected_probability.masked_select(~match)}

    class Model(nn.Module):
        def __init__(self, dropout=0.0):
            super().__init__()
            self.fc1 = nn.Linear(6, 24)
            self.act = nn.ReLU()
            self.dropout = nn.Dropout(dropout)
            self.fc2 = nn.Linear(24, 4)

        def forward(self, x):
            return self.fc2(self.dropout(self.act(self.fc1(x))))

    rng = np.random.default_rng(6)
    x = torch.tensor(rng.standard_normal((40, 6)))
    y = torch.tensor(rng.integers(0, 4, 40))
    target = torch.eye(4, dtype=torch.float64)[y]
    out = {}
    for name, loss_func in (("mll", MaximumLikelihoodLoss()), ("ce", CrossEntropyBayesRisk()),
                            ("sq", SquaredErrorBayesRisk())):
        torch.manual_seed(0)
        model = Model().double()
        optimizer = m.optim.Adam(model.parameters(), lr=5e-3)
        kl_div_loss = KLDivergenceLoss()
        losses = []
        for step in range(8):
            optimizer.zero_grad()
            outputs = model(x)
            evidence = m.F.softplus(outputs)
            annealing_coef = min(1., step / 4)
            loss = loss_func(evidence, target) + annealing_coef * kl_div_loss(evidence, target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        out[name] = {"losses": losses, "stats": statistics(m.F.softplus(model(x)).detach(), target)}
    e = torch.tensor(rng.uniform(0, 3, (5, 4)), requires_grad=True)
    t5 = torch.eye(4, dtype=torch.float64)[torch.tensor([0, 1, 2, 3, 0])]
    values = [f()(e, t5) for f in (MaximumLikelihoodLoss, CrossEntropyBayesRisk, SquaredErrorBayesRisk, KLDivergenceLoss)]
    out["values"] = values
    out["grads"] = [torch.autograd.grad(v, e)[0] for v in values]
    out["e"] = e
    return out


def test_evidential_losses():
    ours, _ = run_both(evidence_program, rtol=1e-8, atol=1e-10)
    for name in ("mll", "ce", "sq"):
        assert ours[name]["losses"][-1] < ours[name]["losses"][4], name  # once the KL weight is 1
        s = ours[name]["stats"]
        assert len(s["u.succ"]) + len(s["u.fail"]) == 40
    # by hand: the Dirichlet KL to the uniform Dirichlet, and the ML loss
    from scipy.special import digamma, gammaln
    e = ours["e"]
    t = np.eye(4)[[0, 1, 2, 3, 0]]
    alpha = e + 1
    S = alpha.sum(-1)
    assert ours["values"][0] == pytest.approx(np.mean((t * (np.log(S)[:, None] - np.log(alpha))).sum(-1)), rel=1e-12)
    assert ours["values"][1] == pytest.approx(np.mean((t * (digamma(S)[:, None] - digamma(alpha))).sum(-1)), rel=1e-12)
    at = t + (1 - t) * alpha
    St = at.sum(-1)
    kl = gammaln(St) - gammaln(4.0) - gammaln(at).sum(-1) + ((at - 1) * (digamma(at) - digamma(St)[:, None])).sum(-1)
    assert ours["values"][3] == pytest.approx(kl.mean(), rel=1e-10)


# ----------------------------------------------------------------------------------------------
# labml_nn/rl/ppo: clipped PPO losses on advantages from GAE
# ----------------------------------------------------------------------------------------------


class GAE:
    def __init__(self, n_workers, worker_steps, gamma, lambda_):
        self.lambda_ = lambda_
        self.gamma = gamma
        self.worker_steps = worker_steps
        self.n_workers = n_workers

    def __call__(self, done, rewards, values):
        advantages = np.zeros((self.n_workers, self.worker_steps), dtype=np.float32)
        last_advantage = 0
        last_value = values[:, -1]
        for t in reversed(range(self.worker_steps)):
            mask = 1.0 - done[:, t]
            last_value = last_value * mask
            last_advantage = last_advantage * mask
            delta = rewards[:, t] + self.gamma * last_value - values[:, t]
            last_advantage = delta + self.gamma * self.lambda_ * last_advantage
            advantages[:, t] = last_advantage
            last_value = values[:, t]
        return advantages


def make_ppo(m):
    nn = m.nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels=2, out_channels=8, kernel_size=3, stride=2)
            self.lin = nn.Linear(in_features=8 * 3 * 3, out_features=32)
            self.pi_logits = nn.Linear(in_features=32, out_features=4)
            self.value = nn.Linear(in_features=32, out_features=1)
            self.activation = nn.ReLU()

        def forward(self, obs):
            h = self.activation(self.conv1(obs))
            h = h.reshape((-1, 8 * 3 * 3))
            h = self.activation(self.lin(h))
            pi = m.torch.distributions.Categorical(logits=self.pi_logits(h))
            value = self.value(h).reshape(-1)
            return pi, value

    return Model()


def ppo_program(m, weights):
    torch, nn = m.torch, m.nn

    class ClippedPPOLoss(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, log_pi, sampled_log_pi, advantage, clip):
            ratio = torch.exp(log_pi - sampled_log_pi)
            clipped_ratio = ratio.clamp(min=1.0 - clip, max=1.0 + clip)
            policy_reward = torch.min(ratio * advantage, clipped_ratio * advantage)
            self.clip_fraction = (abs((ratio - 1.0)) > clip).to(torch.float).mean()
            return -policy_reward.mean()

    class ClippedValueFunctionLoss(nn.Module):
        def forward(self, value, sampled_value, sampled_return, clip):
            clipped_value = sampled_value + (value - sampled_value).clamp(min=-clip, max=clip)
            vf_loss = torch.max((value - sampled_return) ** 2, (clipped_value - sampled_return) ** 2)
            return 0.5 * vf_loss.mean()

    model = load(m, make_ppo(m), weights)
    rng = np.random.default_rng(7)
    n_workers, worker_steps = 4, 8
    obs = rng.standard_normal((n_workers, worker_steps, 2, 7, 7)).astype(np.float32)
    actions = rng.integers(0, 4, (n_workers, worker_steps))
    rewards = rng.standard_normal((n_workers, worker_steps)).astype(np.float32)
    done = rng.random((n_workers, worker_steps)) < 0.2
    with torch.no_grad():
        pi, v = model(torch.tensor(obs.reshape(-1, 2, 7, 7), dtype=torch.float32))
        log_pis = pi.log_prob(torch.tensor(actions.reshape(-1))).numpy().reshape(n_workers, worker_steps)
        values = np.concatenate([v.numpy().reshape(n_workers, worker_steps), np.zeros((n_workers, 1), np.float32)], 1)
    gae = GAE(n_workers, worker_steps, 0.99, 0.95)
    advantages = gae(done, rewards, values)
    samples = {'obs': obs, 'actions': actions, 'values': values[:, :-1], 'log_pis': log_pis, 'advantages': advantages}
    samples_flat = {}
    for k, v in samples.items():
        v = v.reshape(v.shape[0] * v.shape[1], *v.shape[2:])
        samples_flat[k] = torch.tensor(v)
    ppo_loss = ClippedPPOLoss()
    value_loss = ClippedValueFunctionLoss()
    optimizer = m.optim.Adam(model.parameters(), lr=2.5e-3)
    losses, fractions = [], []
    for _ in range(3):
        indexes = torch.tensor(np.random.default_rng(_).permutation(32))
        for start in range(0, 32, 16):
            mini_batch_indexes = indexes[start: start + 16]
            samples_mb = {k: v[mini_batch_indexes] for k, v in samples_flat.items()}
            sampled_return = samples_mb['values'] + samples_mb['advantages']
            sampled_normalized_advantage = (samples_mb['advantages'] - samples_mb['advantages'].mean()) / (
                samples_mb['advantages'].std() + 1e-8)
            pi, value = model(samples_mb['obs'])
            log_pi = pi.log_prob(samples_mb['actions'])
            policy_loss = ppo_loss(log_pi, samples_mb['log_pis'], sampled_normalized_advantage, 0.1)
            entropy_bonus = pi.entropy()
            entropy_bonus = entropy_bonus.mean()
            vf_loss = value_loss(value, samples_mb['values'], sampled_return, 0.1)
            loss = (policy_loss + 0.5 * vf_loss - 0.01 * entropy_bonus)
            for pg in optimizer.param_groups:
                pg['lr'] = 2.5e-3
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
            optimizer.step()
            losses.append(loss.item())
            fractions.append(ppo_loss.clip_fraction.item())
    return {"advantages": advantages, "losses": losses, "fractions": fractions, "w": model.lin.weight,
            "values": values}


def test_ppo_with_gae():
    weights = weights_of(make_ppo)
    ours, _ = run_both(ppo_program, weights, rtol=1e-5, atol=1e-6)
    assert max(ours["fractions"]) > 0  # some ratios left the clip range
    # GAE by its definition: sum_l (gamma lambda)^l delta_{t+l}, cut at episode ends
    rng = np.random.default_rng(7)
    rng.standard_normal((4, 8, 2, 7, 7)), rng.integers(0, 4, (4, 8))
    rewards = rng.standard_normal((4, 8)).astype(np.float32)
    done = rng.random((4, 8)) < 0.2
    values = ours["values"].astype(np.float64)
    for w in range(4):
        for t in range(8):
            total, discount = 0.0, 1.0
            for s in range(t, 8):
                nxt = 0.0 if done[w, s] else values[w, s + 1]
                total += discount * (rewards[w, s] + 0.99 * nxt - values[w, s])
                if done[w, s]:
                    break
                discount *= 0.99 * 0.95
            assert ours["advantages"][w, t] == pytest.approx(total, rel=1e-4, abs=1e-5)


# ----------------------------------------------------------------------------------------------
# labml_nn/graphs: GAT and GATv2 on a small citation-like graph
# ----------------------------------------------------------------------------------------------


def make_gat(m, v2):
    torch, nn = m.torch, m.nn

    class GraphAttentionLayer(nn.Module):
        def __init__(self, in_features, out_features, n_heads, is_concat=True, dropout=0.6,
                     leaky_relu_negative_slope=0.2):
            super().__init__()
            self.is_concat = is_concat
            self.n_heads = n_heads
            if is_concat:
                assert out_features % n_heads == 0
                self.n_hidden = out_features // n_heads
            else:
                self.n_hidden = out_features
            self.linear = nn.Linear(in_features, self.n_hidden * n_heads, bias=False)
            self.attn = nn.Linear(self.n_hidden * 2, 1, bias=False)
            self.activation = nn.LeakyReLU(negative_slope=leaky_relu_negative_slope)
            self.softmax = nn.Softmax(dim=1)
            self.dropout = nn.Dropout(dropout)

        def forward(self, h, adj_mat):
            n_nodes = h.shape[0]
            g = self.linear(h).view(n_nodes, self.n_heads, self.n_hidden)
            g_repeat = g.repeat(n_nodes, 1, 1)
            g_repeat_interleave = g.repeat_interleave(n_nodes, dim=0)
            g_concat = torch.cat([g_repeat_interleave, g_repeat], dim=-1)
            g_concat = g_concat.view(n_nodes, n_nodes, self.n_heads, 2 * self.n_hidden)
            e = self.activation(self.attn(g_concat))
            e = e.squeeze(-1)
            assert adj_mat.shape[0] == 1 or adj_mat.shape[0] == n_nodes
            assert adj_mat.shape[1] == 1 or adj_mat.shape[1] == n_nodes
            assert adj_mat.shape[2] == 1 or adj_mat.shape[2] == self.n_heads
            e = e.masked_fill(adj_mat == 0, float('-inf'))
            a = self.softmax(e)
            a = self.dropout(a)
            attn_res = torch.einsum('ijh,jhf->ihf', a, g)
            if self.is_concat:
                return attn_res.reshape(n_nodes, self.n_heads * self.n_hidden)
            else:
                return attn_res.mean(dim=1)

    class GraphAttentionV2Layer(nn.Module):
        def __init__(self, in_features, out_features, n_heads, is_concat=True, dropout=0.6,
                     leaky_relu_negative_slope=0.2, share_weights=False):
            super().__init__()
            self.is_concat = is_concat
            self.n_heads = n_heads
            self.share_weights = share_weights
            if is_concat:
                assert out_features % n_heads == 0
                self.n_hidden = out_features // n_heads
            else:
                self.n_hidden = out_features
            self.linear_l = nn.Linear(in_features, self.n_hidden * n_heads, bias=False)
            if share_weights:
                self.linear_r = self.linear_l
            else:
                self.linear_r = nn.Linear(in_features, self.n_hidden * n_heads, bias=False)
            self.attn = nn.Linear(self.n_hidden, 1, bias=False)
            self.activation = nn.LeakyReLU(negative_slope=leaky_relu_negative_slope)
            self.softmax = nn.Softmax(dim=1)
            self.dropout = nn.Dropout(dropout)

        def forward(self, h, adj_mat):
            n_nodes = h.shape[0]
            g_l = self.linear_l(h).view(n_nodes, self.n_heads, self.n_hidden)
            g_r = self.linear_r(h).view(n_nodes, self.n_heads, self.n_hidden)
            g_l_repeat = g_l.repeat(n_nodes, 1, 1)
            g_r_repeat_interleave = g_r.repeat_interleave(n_nodes, dim=0)
            g_sum = g_l_repeat + g_r_repeat_interleave
            g_sum = g_sum.view(n_nodes, n_nodes, self.n_heads, self.n_hidden)
            e = self.attn(self.activation(g_sum))
            e = e.squeeze(-1)
            assert adj_mat.shape[0] == 1 or adj_mat.shape[0] == n_nodes
            assert adj_mat.shape[1] == 1 or adj_mat.shape[1] == n_nodes
            assert adj_mat.shape[2] == 1 or adj_mat.shape[2] == self.n_heads
            e = e.masked_fill(adj_mat == 0, float('-inf'))
            a = self.softmax(e)
            a = self.dropout(a)
            attn_res = torch.einsum('ijh,jhf->ihf', a, g_r)
            if self.is_concat:
                return attn_res.reshape(n_nodes, self.n_heads * self.n_hidden)
            else:
                return attn_res.mean(dim=1)

    class GAT(nn.Module):
        def __init__(self, in_features, n_hidden, n_classes, n_heads, dropout, share_weights=False):
            super().__init__()
            if v2:
                self.layer1 = GraphAttentionV2Layer(in_features, n_hidden, n_heads, is_concat=True, dropout=dropout,
                                                    share_weights=share_weights)
                self.output = GraphAttentionV2Layer(n_hidden, n_classes, 1, is_concat=False, dropout=dropout,
                                                    share_weights=share_weights)
            else:
                self.layer1 = GraphAttentionLayer(in_features, n_hidden, n_heads, is_concat=True, dropout=dropout)
                self.output = GraphAttentionLayer(n_hidden, n_classes, 1, is_concat=False, dropout=dropout)
            self.activation = nn.ELU()
            self.dropout = nn.Dropout(dropout)

        def forward(self, x, adj_mat):
            x = self.dropout(x)
            x = self.layer1(x, adj_mat)
            x = self.activation(x)
            x = self.dropout(x)
            return self.output(x, adj_mat)

    return GAT(7, 12, 3, 4, 0.0, share_weights=v2).double()


def gat_program(m, weights, v2):
    torch, nn = m.torch, m.nn
    model = load(m, make_gat(m, v2), weights)
    rng = np.random.default_rng(8)
    n = 10
    features = torch.tensor(rng.standard_normal((n, 7)))
    labels = torch.tensor(rng.integers(0, 3, n))
    edges = rng.integers(0, n, (2, 18))
    adj_mat = torch.zeros((n, n), dtype=torch.bool)
    adj_mat[torch.tensor(edges[0]), torch.tensor(edges[1])] = True
    adj_mat[torch.tensor(edges[1]), torch.tensor(edges[0])] = True
    adj_mat = adj_mat | torch.eye(n, dtype=torch.bool)  # self-loops, so no row is all -inf
    adj_mat = adj_mat.unsqueeze(-1)
    idx_train = torch.arange(0, 7)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3, weight_decay=5e-4)
    loss_func = nn.CrossEntropyLoss()
    losses = []
    for _ in range(5):
        model.train()
        optimizer.zero_grad()
        output = model(features, adj_mat)
        loss = loss_func(output[idx_train], labels[idx_train])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        output = model(features, adj_mat)
        accuracy = output.argmax(dim=-1).eq(labels).sum().item() / n
    a = model.layer1
    return {"losses": losses, "output": output, "accuracy": accuracy, "shared": getattr(a, "linear_r", None) is getattr(a, "linear_l", 0),
            "n_params": len(list(model.parameters()))}


@pytest.mark.parametrize("v2", [False, True], ids=["gat", "gatv2"])
def test_graph_attention(v2):
    weights = weights_of(lambda m: make_gat(m, v2))
    ours, _ = run_both(gat_program, weights, v2, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    assert ours["shared"] == v2 and ours["n_params"] == (4 if v2 else 4)


# ----------------------------------------------------------------------------------------------
# labml_nn/conv_mixer: ConvMixer (depth-wise and point-wise convolutions, x += residual after batch norm)
# ----------------------------------------------------------------------------------------------


def make_conv_mixer(m):
    torch, nn = m.torch, m.nn

    class ConvMixerLayer(nn.Module):
        def __init__(self, d_model, kernel_size):
            super().__init__()
            self.depth_wise_conv = nn.Conv2d(d_model, d_model, kernel_size=kernel_size, groups=d_model,
                                             padding=(kernel_size - 1) // 2)
            self.act1 = nn.GELU()
            self.norm1 = nn.BatchNorm2d(d_model)
            self.point_wise_conv = nn.Conv2d(d_model, d_model, kernel_size=1)
            self.act2 = nn.GELU()
            self.norm2 = nn.BatchNorm2d(d_model)

        def forward(self, x):
            residual = x
            x = self.depth_wise_conv(x)
            x = self.act1(x)
            x = self.norm1(x)
            x += residual
            x = self.point_wise_conv(x)
            x = self.act2(x)
            x = self.norm2(x)
            return x

    class PatchEmbeddings(nn.Module):
        def __init__(self, d_model, patch_size, in_channels):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)
            self.act = nn.GELU()
            self.norm = nn.BatchNorm2d(d_model)

        def forward(self, x):
            x = self.conv(x)
            x = self.act(x)
            x = self.norm(x)
            return x

    class ClassificationHead(nn.Module):
        def __init__(self, d_model, n_classes):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d((1, 1))
            self.linear = nn.Linear(d_model, n_classes)

        def forward(self, x):
            x = self.pool(x)
            x = x[:, :, 0, 0]
            x = self.linear(x)
            return x

    class ConvMixer(nn.Module):
        def __init__(self, conv_mixer_layer, n_layers, patch_emb, classification):
            super().__init__()
            self.patch_emb = patch_emb
            self.classification = classification
            self.conv_mixer_layers = nn.ModuleList([copy.deepcopy(conv_mixer_layer) for _ in range(n_layers)])

        def forward(self, x):
            x = self.patch_emb(x)
            for layer in self.conv_mixer_layers:
                x = layer(x)
            x = self.classification(x)
            return x

    return ConvMixer(ConvMixerLayer(16, 5), 2, PatchEmbeddings(16, 2, 3), ClassificationHead(16, 4)).double()


def conv_mixer_program(m, weights):
    torch = m.torch
    model = load(m, make_conv_mixer(m), weights)
    rng = np.random.default_rng(9)
    images = torch.tensor(rng.standard_normal((6, 3, 12, 12)))
    labels = torch.tensor(rng.integers(0, 4, 6))
    losses, grads = train_few(m, model, (images, labels),
                              lambda model, x, y: m.F.cross_entropy(model(x), y), steps=3, lr=0.05, optimizer="SGD")
    model.eval()
    with torch.no_grad():
        logits = model(images)
    return {"losses": losses, "grads": grads, "logits": logits,
            "running": model.conv_mixer_layers[1].norm1.running_var,
            "tracked": model.conv_mixer_layers[0].norm2.num_batches_tracked}


def test_conv_mixer():
    weights = weights_of(make_conv_mixer)
    ours, _ = run_both(conv_mixer_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0] and ours["tracked"] == 3


# ----------------------------------------------------------------------------------------------
# labml_nn/lora: LoRA linear and embedding layers over frozen weights
# ----------------------------------------------------------------------------------------------


def lora_program(m):
    torch, nn = m.torch, m.nn

    class Linear(nn.Module):
        def __init__(self, in_features, out_features, bias, r, alpha=None):
            super().__init__()
            if alpha is None:
                alpha = r
            self.weight = nn.Parameter(torch.empty((out_features, in_features)))
            self.weight.requires_grad = False
            if bias:
                self.bias = nn.Parameter(torch.empty(out_features))
                self.bias.requires_grad = False
            else:
                self.bias = None
            self.scaling = alpha / r
            self.lora_a = nn.Parameter(torch.empty((r, in_features)))
            self.lora_b = nn.Parameter(torch.empty((out_features, r)))
            with torch.no_grad():
                nn.init.kaiming_uniform_(self.lora_a, a=5 ** 0.5)
                nn.init.zeros_(self.lora_b)

        def forward(self, x):
            result = nn.functional.linear(x, self.weight, bias=self.bias)
            result += (x @ self.lora_a.T @ self.lora_b.T) * self.scaling
            return result

    class Embedding(nn.Module):
        def __init__(self, num_embeddings, embedding_dim, r, alpha=None):
            super().__init__()
            if alpha is None:
                alpha = r
            self.weight = nn.Parameter(torch.empty((num_embeddings, embedding_dim)))
            self.weight.requires_grad = False
            self.scaling = alpha / r
            self.lora_a = nn.Parameter(torch.empty((r, num_embeddings)))
            self.lora_b = nn.Parameter(torch.empty((embedding_dim, r)))
            with torch.no_grad():
                nn.init.normal_(self.lora_a)
                nn.init.zeros_(self.lora_b)

        def forward(self, x):
            result = nn.functional.embedding(x, self.weight)
            result += (nn.functional.embedding(x, self.lora_a.T) @ self.lora_b.T) * self.scaling
            return result

    class GPT2Ish(nn.Module):  # labml_nn/lora/gpt2.py's shape, one block, with LoRA on every projection
        def __init__(self, n_vocab=13, d_model=8, r=4):
            super().__init__()
            self.token_embedding = Embedding(n_vocab, d_model, r=r)
            self.position_embedding = Embedding(6, d_model, r=r)
            self.ln = nn.LayerNorm(d_model)
            self.c_att = Linear(d_model, d_model * 3, r=r, bias=True)
            self.c_proj = Linear(d_model, d_model, r=r, bias=True)
            self.lm_head = Linear(d_model, n_vocab, r=r, bias=False, alpha=8)

        def forward(self, input_ids):
            batch_size, seq_length = input_ids.shape
            token_embeddings = self.token_embedding(input_ids)
            position_ids = torch.arange(seq_length, device=input_ids.device)
            position_embeddings = self.position_embedding(position_ids[None, :])
            hidden_states = token_embeddings + position_embeddings
            q, k, v = self.c_att(self.ln(hidden_states)).split(8, dim=-1)
            attn = nn.functional.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], is_causal=True)
            hidden_states = hidden_states + self.c_proj(attn[:, 0])
            return self.lm_head(hidden_states)

    torch.manual_seed(0)
    model = GPT2Ish()
    rng = np.random.default_rng(10)
    with torch.no_grad():  # the "pre-trained" weights, and LoRA's B away from zero to test its gradient paths
        for name, p in model.named_parameters():
            p.copy_(torch.tensor(rng.standard_normal(p.shape) * 0.3, dtype=torch.float32))
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    ids = torch.tensor(rng.integers(0, 13, (3, 6)))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        logits = model(ids[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 13), ids[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    unchanged = all(torch.equal(frozen[n], p) for n, p in model.named_parameters() if n in frozen)
    return {"losses": losses, "trainable": trainable, "unchanged": unchanged,
            "grads_of_frozen": [p.grad is None for n, p in model.named_parameters() if n in frozen],
            "lora": {n: p for n, p in model.named_parameters() if "lora" in n}}


def test_lora():
    ours, _ = run_both(lora_program, rtol=1e-5, atol=1e-6)
    assert ours["losses"][-1] < ours["losses"][0] and ours["unchanged"] and all(ours["grads_of_frozen"])
    assert [n for n in ours["trainable"] if "lora" not in n] == ["ln.weight", "ln.bias"] and len(ours["trainable"]) == 12


# ----------------------------------------------------------------------------------------------
# labml_nn/sketch_rnn: a bidirectional-LSTM VAE with a bivariate Gaussian mixture decoder
# ----------------------------------------------------------------------------------------------


def make_sketch_rnn(m):
    torch, nn = m.torch, m.nn

    class EncoderRNN(nn.Module):
        def __init__(self, d_z, enc_hidden_size):
            super().__init__()
            self.lstm = nn.LSTM(5, enc_hidden_size, bidirectional=True)
            self.mu_head = nn.Linear(2 * enc_hidden_size, d_z)
            self.sigma_head = nn.Linear(2 * enc_hidden_size, d_z)

        def forward(self, inputs, state=None):
            _, (hidden, cell) = self.lstm(inputs.float(), state)
            hidden = hidden.permute(1, 0, 2).reshape(hidden.shape[1], -1)  # einops' 'fb b h -> b (fb h)'
            mu = self.mu_head(hidden)
            sigma_hat = self.sigma_head(hidden)
            sigma = torch.exp(sigma_hat / 2.)
            z = mu + sigma * torch.normal(mu.new_zeros(mu.shape), mu.new_ones(mu.shape))
            return z, mu, sigma_hat

    class DecoderRNN(nn.Module):
        def __init__(self, d_z, dec_hidden_size, n_distributions):
            super().__init__()
            self.lstm = nn.LSTM(d_z + 5, dec_hidden_size)
            self.init_state = nn.Linear(d_z, 2 * dec_hidden_size)
            self.mixtures = nn.Linear(dec_hidden_size, 6 * n_distributions)
            self.q_head = nn.Linear(dec_hidden_size, 3)
            self.q_log_softmax = nn.LogSoftmax(-1)
            self.n_distributions = n_distributions
            self.dec_hidden_size = dec_hidden_size

        def forward(self, x, z, state):
            if state is None:
                h, c = torch.split(torch.tanh(self.init_state(z)), self.dec_hidden_size, 1)
                state = (h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous())
            outputs, state = self.lstm(x, state)
            q_logits = self.q_log_softmax(self.q_head(outputs))
            pi_logits, mu_x, mu_y, sigma_x, sigma_y, rho_xy = \
                torch.split(self.mixtures(outputs), self.n_distributions, 2)
            dist = BivariateGaussianMixture(pi_logits, mu_x, mu_y,
                                            torch.exp(sigma_x), torch.exp(sigma_y), torch.tanh(rho_xy))
            return dist, q_logits, state

    class BivariateGaussianMixture:
        def __init__(self, pi_logits, mu_x, mu_y, sigma_x, sigma_y, rho_xy):
            self.pi_logits = pi_logits
            self.mu_x = mu_x
            self.mu_y = mu_y
            self.sigma_x = sigma_x
            self.sigma_y = sigma_y
            self.rho_xy = rho_xy

        @property
        def n_distributions(self):
            return self.pi_logits.shape[-1]

        def set_temperature(self, temperature):
            self.pi_logits /= temperature
            self.sigma_x *= math.sqrt(temperature)
            self.sigma_y *= math.sqrt(temperature)

        def get_distribution(self):
            sigma_x = torch.clamp_min(self.sigma_x, 1e-5)
            sigma_y = torch.clamp_min(self.sigma_y, 1e-5)
            rho_xy = torch.clamp(self.rho_xy, -1 + 1e-5, 1 - 1e-5)
            mean = torch.stack([self.mu_x, self.mu_y], -1)
            cov = torch.stack([
                sigma_x * sigma_x, rho_xy * sigma_x * sigma_y,
                rho_xy * sigma_x * sigma_y, sigma_y * sigma_y
            ], -1)
            cov = cov.view(*sigma_y.shape, 2, 2)
            multi_dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
            cat_dist = torch.distributions.Categorical(logits=self.pi_logits)
            return cat_dist, multi_dist

    class SketchRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = EncoderRNN(6, 8)
            self.decoder = DecoderRNN(6, 10, 3)

    return SketchRNN()


def sketch_rnn_program(m, weights):
    torch, nn = m.torch, m.nn

    class ReconstructionLoss(nn.Module):
        def forward(self, mask, target, dist, q_logits):
            pi, mix = dist.get_distribution()
            xy = target[:, :, 0:2].unsqueeze(-2).expand(-1, -1, dist.n_distributions, -1)
            probs = torch.sum(pi.probs * torch.exp(mix.log_prob(xy)), 2)
            loss_stroke = -torch.mean(mask * torch.log(1e-5 + probs))
            loss_pen = -torch.mean(target[:, :, 2:] * q_logits)
            return loss_stroke + loss_pen

    class KLDivLoss(nn.Module):
        def forward(self, sigma_hat, mu):
            return -0.5 * torch.mean(1 + sigma_hat - mu ** 2 - torch.exp(sigma_hat))

    class StrokesDataset(m.data.Dataset):
        def __init__(self, dataset, max_seq_length, scale=None):
            data = []
            for seq in dataset:
                if 10 < len(seq) <= max_seq_length:
                    seq = np.minimum(seq, 1000)
                    seq = np.maximum(seq, -1000)
                    seq = np.array(seq, dtype=np.float32)
                    data.append(seq)
            if scale is None:
                scale = np.std(np.concatenate([np.ravel(s[:, 0:2]) for s in data]))
            self.scale = scale
            longest_seq_len = max([len(seq) for seq in data])
            self.data = torch.zeros(len(data), longest_seq_len + 2, 5, dtype=torch.float)
            self.mask = torch.zeros(len(data), longest_seq_len + 1)
            for i, seq in enumerate(data):
                seq = torch.from_numpy(seq)
                len_seq = len(seq)
                self.data[i, 1:len_seq + 1, :2] = seq[:, :2] / scale
                self.data[i, 1:len_seq + 1, 2] = 1 - seq[:, 2]
                self.data[i, 1:len_seq + 1, 3] = seq[:, 2]
                self.data[i, len_seq + 1:, 4] = 1
                self.mask[i, :len_seq + 1] = 1
            self.data[:, 0, 2] = 1

        def __len__(self):
            return len(self.data)

        def __getitem__(self, idx):
            return self.data[idx], self.mask[idx]

    rng = np.random.default_rng(11)
    strokes = []
    for length in (12, 15, 9, 14, 20, 13, 30):
        seq = np.zeros((length, 3), dtype=np.int64)
        seq[:, :2] = rng.integers(-40, 40, (length, 2))
        seq[rng.integers(0, length, 2), 2] = 1
        seq[-1, 2] = 1
        strokes.append(seq)
    dataset = StrokesDataset(strokes, 25)
    loader = m.data.DataLoader(dataset, 3)
    model = load(m, make_sketch_rnn(m), weights)
    encoder, decoder = model.encoder, model.decoder
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=1e-2)
    kl_div_loss, reconstruction_loss = KLDivLoss(), ReconstructionLoss()
    torch.manual_seed(0)
    losses = []
    for epoch in range(4):
        for batch in loader:
            data = batch[0].transpose(0, 1)
            mask = batch[1].transpose(0, 1)
            z, mu, sigma_hat = encoder(data)
            z_stack = z.unsqueeze(0).expand(data.shape[0] - 1, -1, -1)
            inputs = torch.cat([data[:-1], z_stack], 2)
            dist, q_logits, _ = decoder(inputs, z, None)
            kl_loss = kl_div_loss(sigma_hat, mu)
            loss = reconstruction_loss(mask, data[1:], dist, q_logits) + 0.5 * kl_loss
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(encoder.parameters(), 1.)
            nn.utils.clip_grad_norm_(decoder.parameters(), 1.)
            optimizer.step()
            losses.append(loss.item())
    # one sampling step at a temperature, as their Sampler._sample_step does
    with torch.no_grad():
        data = dataset[0][0].unsqueeze(1)
        z, _, _ = encoder(data)
        s = data.new_tensor([0, 0, 1, 0, 0])
        inp = torch.cat([s.view(1, 1, -1), z.unsqueeze(0)], 2)
        dist, q_logits, state = decoder(inp, z, None)
        dist.set_temperature(0.4)
        pi, mix = dist.get_distribution()
        idx = pi.sample()[0, 0]
        q = torch.distributions.Categorical(logits=q_logits / 0.4)
        q_idx = q.sample()[0, 0]
        xy = mix.sample()[0, 0, idx]
        stroke = q_logits.new_zeros(5)
        stroke[:2] = xy
        stroke[q_idx + 2] = 1
    return {"losses": losses, "scale": dataset.scale, "n": len(dataset), "data": dataset.data, "mask": dataset.mask,
            "stroke": stroke, "sigma_x": dist.sigma_x, "pi_logits": dist.pi_logits, "cov": mix.covariance_matrix}


def test_sketch_rnn():
    weights = weights_of(make_sketch_rnn)
    ours, _ = run_both(sketch_rnn_program, weights, rtol=1e-5, atol=1e-6)
    assert ours["n"] == 5 and ours["data"].shape == (5, 22, 5)  # lengths 9 and 30 are left out
    assert sum(ours["losses"][-2:]) < sum(ours["losses"][:2])  # the last epoch against the first
    assert ours["stroke"][2:].sum() == 1


# ----------------------------------------------------------------------------------------------
# labml_nn/adaptive_computation/ponder_net: PonderNet on the parity task (halting drawn by bernoulli)
# ----------------------------------------------------------------------------------------------


def make_ponder_net(m):
    torch, nn = m.torch, m.nn

    class ParityPonderGRU(nn.Module):
        def __init__(self, n_elems, n_hidden, max_steps):
            super().__init__()
            self.max_steps = max_steps
            self.n_hidden = n_hidden
            self.gru = nn.GRUCell(n_elems, n_hidden)
            self.output_layer = nn.Linear(n_hidden, 1)
            self.lambda_layer = nn.Linear(n_hidden, 1)
            self.lambda_prob = nn.Sigmoid()
            self.is_halt = False

        def forward(self, x):
            batch_size = x.shape[0]
            h = x.new_zeros((x.shape[0], self.n_hidden))
            h = self.gru(x, h)
            p = []
            y = []
            un_halted_prob = h.new_ones((batch_size,))
            halted = h.new_zeros((batch_size,))
            p_m = h.new_zeros((batch_size,))
            y_m = h.new_zeros((batch_size,))
            for n in range(1, self.max_steps + 1):
                if n == self.max_steps:
                    lambda_n = h.new_ones(h.shape[0])
                else:
                    lambda_n = self.lambda_prob(self.lambda_layer(h))[:, 0]
                y_n = self.output_layer(h)[:, 0]
                p_n = un_halted_prob * lambda_n
                un_halted_prob = un_halted_prob * (1 - lambda_n)
                halt = torch.bernoulli(lambda_n) * (1 - halted)
                p.append(p_n)
                y.append(y_n)
                p_m = p_m * (1 - halt) + p_n * halt
                y_m = y_m * (1 - halt) + y_n * halt
                halted = halted + halt
                h = self.gru(x, h)
                if self.is_halt and halted.sum() == batch_size:
                    break
            return torch.stack(p), torch.stack(y), p_m, y_m

    return ParityPonderGRU(8, 16, 6)


def ponder_program(m, weights):
    torch, nn = m.torch, m.nn

    class ReconstructionLoss(nn.Module):
        def __init__(self, loss_func):
            super().__init__()
            self.loss_func = loss_func

        def forward(self, p, y_hat, y):
            total_loss = p.new_tensor(0.)
            for n in range(p.shape[0]):
                loss = (p[n] * self.loss_func(y_hat[n], y)).mean()
                total_loss = total_loss + loss
            return total_loss

    class RegularizationLoss(nn.Module):
        def __init__(self, lambda_p, max_steps=1_000):
            super().__init__()
            p_g = torch.zeros((max_steps,))
            not_halted = 1.
            for k in range(max_steps):
                p_g[k] = not_halted * lambda_p
                not_halted = not_halted * (1 - lambda_p)
            self.p_g = nn.Parameter(p_g, requires_grad=False)
            self.kl_div = nn.KLDivLoss(reduction='batchmean')

        def forward(self, p):
            p = p.transpose(0, 1)
            p_g = self.p_g[None, :p.shape[1]].expand_as(p)
            return self.kl_div(p.log(), p_g)

    class ParityDataset(m.data.Dataset):
        def __init__(self, n_samples, n_elems=64):
            self.n_samples = n_samples
            self.n_elems = n_elems

        def __len__(self):
            return self.n_samples

        def __getitem__(self, idx):
            x = torch.zeros((self.n_elems,))
            n_non_zero = torch.randint(1, self.n_elems + 1, (1,)).item()
            x[:n_non_zero] = torch.randint(0, 2, (n_non_zero,)) * 2 - 1
            x = x[torch.randperm(self.n_elems)]
            y = (x == 1.).sum() % 2
            return x, y

    torch.manual_seed(0)
    model = load(m, make_ponder_net(m), weights)
    loader = m.data.DataLoader(ParityDataset(48, 8), batch_size=16)
    loss_rec = ReconstructionLoss(nn.BCEWithLogitsLoss(reduction='none'))
    loss_reg = RegularizationLoss(0.2, 6)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    out = {"losses": [], "steps": [], "batches": []}
    for x, y in loader:
        p, y_hat, p_sampled, y_hat_sampled = model(x)
        loss = loss_rec(p, y_hat, y.to(torch.float)) + 0.01 * loss_reg(p)
        steps = torch.arange(1, p.shape[0] + 1, device=p.device)
        expected_steps = (p * steps[:, None]).sum(dim=0)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        out["losses"].append(loss.item())
        out["steps"].append(expected_steps.mean().item())
        out["batches"].append((x, y, p_sampled, y_hat_sampled))
    out["p_g"] = loss_reg.p_g
    return out


def test_ponder_net():
    weights = weights_of(make_ponder_net)
    ours, _ = run_both(ponder_program, weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["p_g"], 0.2 * 0.8 ** np.arange(6), rtol=1e-6)
    for x, y, p_sampled, _ in ours["batches"]:
        np.testing.assert_array_equal(y, (x == 1).sum(1) % 2)
        assert np.all(p_sampled > 0)  # every sample halted somewhere, at the latest at max_steps
    assert all(1 <= s <= 6 for s in ours["steps"])


# ----------------------------------------------------------------------------------------------
# labml_nn/rwkv: RWKV's time and channel mixing (ZeroPad2d with a negative pad, the L2Wrap Function)
# ----------------------------------------------------------------------------------------------


def make_rwkv(m):
    torch, nn, F = m.torch, m.nn, m.F
    config = SimpleNamespace(n_embd=8, intermediate_size=None, n_layer=2, vocab_size=11, block_size=12, bias=True)

    class LayerNorm(nn.Module):
        def __init__(self, ndim, bias):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(ndim))
            self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

        def forward(self, input):
            return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)

    class ChannelMixing(nn.Module):
        def __init__(self, config, layer_id):
            super().__init__()
            self.time_shift = nn.ZeroPad2d((0, 0, 1, -1))
            self.layer_id = layer_id
            n_embd = config.n_embd
            intermediate_size = (config.intermediate_size if config.intermediate_size is not None else 4 * n_embd)
            self.key_proj = nn.Linear(n_embd, intermediate_size, bias=False)
            self.value_proj = nn.Linear(intermediate_size, n_embd, bias=False)
            self.receptance_proj = nn.Linear(n_embd, n_embd, bias=False)
            self.time_mix_key = nn.Parameter(torch.empty(1, 1, n_embd))
            self.time_mix_receptance = nn.Parameter(torch.empty(1, 1, n_embd))

        def forward(self, x, state=None):
            prev_x = self.time_shift(x)
            receptance = x * self.time_mix_receptance + prev_x * (1 - self.time_mix_receptance)
            receptance = self.receptance_proj(receptance)
            key = x * self.time_mix_key + prev_x * (1 - self.time_mix_key)
            key = self.key_proj(key)
            value = self.value_proj(torch.square(torch.relu(key)))
            out = F.sigmoid(receptance) * value
            return out, state

    class TimeMixing(nn.Module):
        def __init__(self, config, layer_id):
            super().__init__()
            self.config = config
            self.time_shift = nn.ZeroPad2d((0, 0, 1, -1))
            self.layer_id = layer_id
            n_embd = config.n_embd
            attn_sz = n_embd
            self.key_proj = nn.Linear(n_embd, attn_sz, bias=False)
            self.value_proj = nn.Linear(n_embd, attn_sz, bias=False)
            self.receptance_proj = nn.Linear(n_embd, attn_sz, bias=False)
            self.output_proj = nn.Linear(attn_sz, n_embd, bias=False)
            self.time_decay = nn.Parameter(torch.empty(attn_sz))
            self.time_first = nn.Parameter(torch.empty(attn_sz))
            self.time_mix_key = nn.Parameter(torch.empty(1, 1, n_embd))
            self.time_mix_value = nn.Parameter(torch.empty(1, 1, n_embd))
            self.time_mix_receptance = nn.Parameter(torch.empty(1, 1, n_embd))

        def forward(self, x, state=None):
            prev_x = self.time_shift(x)
            receptance = x * self.time_mix_receptance + prev_x * (1 - self.time_mix_receptance)
            receptance = self.receptance_proj(receptance)
            key = x * self.time_mix_key + prev_x * (1 - self.time_mix_key)
            key = self.key_proj(key)
            value = x * self.time_mix_value + prev_x * (1 - self.time_mix_value)
            value = self.value_proj(value)
            # the recurrent wkv, as their loop writes it (the state is the four running quantities)
            _, seq_length, _ = key.size()
            output = torch.zeros_like(key)
            num_state = torch.zeros_like(key[:, 0], dtype=torch.float32)
            den_state = torch.zeros_like(key[:, 0], dtype=torch.float32)
            max_state = torch.zeros_like(key[:, 0], dtype=torch.float32) - 1e38
            time_decay = -torch.exp(self.time_decay)
            for current_index in range(seq_length):
                current_key = key[:, current_index].float()
                current_value = value[:, current_index]
                max_for_output = torch.maximum(max_state, current_key + self.time_first)
                e1 = torch.exp(max_state - max_for_output)
                e2 = torch.exp(current_key + self.time_first - max_for_output)
                numerator = e1 * num_state + e2 * current_value
                denominator = e1 * den_state + e2
                output[:, current_index] = (numerator / denominator).to(output.dtype)
                max_for_state = torch.maximum(max_state + time_decay, current_key)
                e1 = torch.exp(max_state + time_decay - max_for_state)
                e2 = torch.exp(current_key - max_for_state)
                num_state = e1 * num_state + e2 * current_value
                den_state = e1 * den_state + e2
                max_state = max_for_state
            rwkv = F.sigmoid(receptance) * output
            rwkv = self.output_proj(rwkv)
            return rwkv, state

    class Block(nn.Module):
        def __init__(self, config, layer_id):
            super().__init__()
            self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
            self.attn = TimeMixing(config, layer_id)
            self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
            self.ffn = ChannelMixing(config, layer_id)

        def forward(self, x, state=None):
            residual = x
            x, state = self.attn(self.ln_1(x), state=state)
            x = x + residual
            residual = x
            x, state = self.ffn(self.ln_2(x), state=state)
            x = x + residual
            return x, state

    class L2Wrap(torch.autograd.Function):
        @staticmethod
        def forward(ctx, loss, y):
            ctx.save_for_backward(y)
            return loss

        @staticmethod
        def backward(ctx, grad_output):
            y = ctx.saved_tensors[0]
            factor = 1e-4 / (y.shape[0] * y.shape[1])
            maxx, ids = torch.max(y, -1, keepdim=True)
            gy = torch.zeros_like(y)
            gy.scatter_(-1, ids, maxx * factor)
            return grad_output, gy

    class RWKV(nn.Module):
        def __init__(self, config, lr_init=0.0008):
            super().__init__()
            self.config = config
            self.lr_init = lr_init
            self.n_layer = config.n_layer
            self.n_embd = config.n_embd
            self.rwkv = nn.ModuleDict(dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                ln_p=LayerNorm(config.n_embd, bias=config.bias),
                h=nn.ModuleList([Block(config, layer_id) for layer_id in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            ))
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            with torch.no_grad():  # labml's configs initialise these; here a fixed ramp per layer
                for block in self.rwkv.h:
                    for name, p in block.named_parameters():
                        if "time_" in name:
                            p.copy_(torch.linspace(0.1, 0.9, p.numel()).view(p.shape))

        def forward(self, idx, targets=None, state=None, return_state=False):
            b, t = idx.size()
            assert t <= self.config.block_size, f"Cannot forward sequence of length {t}, block size is only {self.config.block_size}"
            x = self.rwkv.wte(idx)
            x = self.rwkv.ln_p(x)
            for block_idx, block in enumerate(self.rwkv.h):
                x, state = block(x, state)
            x = self.rwkv.ln_f(x)
            if targets is not None:
                logits = self.lm_head(x)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
                if self.training:
                    loss = L2Wrap.apply(loss, logits)
            else:
                logits = self.lm_head(x[:, [-1], :])
                loss = None
            if return_state:
                return logits, loss, state
            else:
                return logits, loss

    return RWKV(config)


def rwkv_program(m, weights):
    torch = m.torch
    model = load(m, make_rwkv(m), weights)
    rng = np.random.default_rng(12)
    idx = torch.tensor(rng.integers(0, 11, (3, 9)))
    targets = torch.tensor(rng.integers(0, 11, (3, 9)))
    targets[0, :2] = -1  # ignored positions
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, betas=(0.9, 0.99))
    losses, first = [], None
    for step in range(4):
        logits, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        if first is None:
            first = {n: p.grad.clone() for n, p in model.named_parameters()}
            logits_grad = torch.autograd.grad(model(idx, targets)[1], model.lm_head.weight)[0]
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        last_logits, none = model(idx)
    shift = model.rwkv.h[0].ffn.time_shift(torch.arange(12.).view(1, 4, 3))
    return {"losses": losses, "grads": first, "last": last_logits, "none": none, "shift": shift,
            "logits_grad": logits_grad}


def test_rwkv():
    weights = weights_of(make_rwkv)
    ours, _ = run_both(rwkv_program, weights, rtol=1e-5, atol=1e-7)
    assert ours["losses"][-1] < ours["losses"][0]
    assert ours["last"].shape == (3, 1, 11) and ours["none"] is None
    # ZeroPad2d((0, 0, 1, -1)): shifted one step down the time axis, the last step cut
    np.testing.assert_array_equal(ours["shift"][0], [[0, 0, 0], [0, 1, 2], [3, 4, 5], [6, 7, 8]])


# ----------------------------------------------------------------------------------------------
# labml_nn/recurrent_highway_networks and labml_nn/sampling
# ----------------------------------------------------------------------------------------------


def make_rhn(m):
    torch, nn = m.torch, m.nn

    class RHNCell(nn.Module):
        def __init__(self, input_size, hidden_size, depth):
            super().__init__()
            self.hidden_size = hidden_size
            self.depth = depth
            self.hidden_lin = nn.ModuleList([nn.Linear(hidden_size, 2 * hidden_size) for _ in range(depth)])
            self.input_lin = nn.Linear(input_size, 2 * hidden_size, bias=False)

        def forward(self, x, s):
            for d in range(self.depth):
                if d == 0:
                    hg = self.input_lin(x) + self.hidden_lin[d](s)
                else:
                    hg = self.hidden_lin[d](s)
                h = torch.tanh(hg[:, :self.hidden_size])
                g = torch.sigmoid(hg[:, self.hidden_size:])
                s = h * g + s * (1 - g)
            return s

    class RHN(nn.Module):
        def __init__(self, input_size, hidden_size, depth, n_layers):
            super().__init__()
            self.n_layers = n_layers
            self.hidden_size = hidden_size
            self.cells = nn.ModuleList([RHNCell(input_size, hidden_size, depth)] +
                                       [RHNCell(hidden_size, hidden_size, depth) for _ in range(n_layers - 1)])

        def forward(self, x, state=None):
            time_steps, batch_size = x.shape[:2]
            if state is None:
                s = [x.new_zeros(batch_size, self.hidden_size) for _ in range(self.n_layers)]
            else:
                s = list(torch.unbind(state))
            out = []
            for t in range(time_steps):
                inp = x[t]
                for layer in range(self.n_layers):
                    s[layer] = self.cells[layer](inp, s[layer])
                    inp = s[layer]
                out.append(s[-1])
            out = torch.stack(out)
            s = torch.stack(s)
            return out, s

    class LanguageModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(12, 6)
            self.rhn = RHN(6, 10, 3, 2)
            self.generator = nn.Linear(10, 12)

        def forward(self, x, state=None):
            out, state = self.rhn(self.embed(x), state)
            return self.generator(out), state

    return LanguageModel().double()


def rhn_and_sampling_program(m, weights):
    torch, nn = m.torch, m.nn

    class TemperatureSampler:
        def __init__(self, temperature=1.0):
            self.temperature = temperature

        def __call__(self, logits):
            dist = torch.distributions.Categorical(logits=logits / self.temperature)
            return dist.sample()

    class GreedySampler:
        def __call__(self, logits):
            return logits.argmax(dim=-1)

    class TopKSampler:
        def __init__(self, k, sampler):
            self.k = k
            self.sampler = sampler

        def __call__(self, logits):
            zeros = logits.new_ones(logits.shape) * float('-inf')
            values, indices = torch.topk(logits, self.k, dim=-1)
            zeros.scatter_(-1, indices, values)
            return self.sampler(zeros)

    class NucleusSampler:
        def __init__(self, p, sampler):
            self.p = p
            self.sampler = sampler
            self.softmax = nn.Softmax(dim=-1)

        def __call__(self, logits):
            probs = self.softmax(logits)
            sorted_probs, indices = torch.sort(probs, dim=-1, descending=True)
            cum_sum_probs = torch.cumsum(sorted_probs, dim=-1)
            nucleus = cum_sum_probs < self.p
            nucleus = torch.cat([nucleus.new_ones(nucleus.shape[:-1] + (1,)), nucleus[..., :-1]], dim=-1)
            sorted_log_probs = torch.log(sorted_probs)
            sorted_log_probs[~nucleus] = float('-inf')
            sampled_sorted_indexes = self.sampler(sorted_log_probs)
            res = indices.gather(-1, sampled_sorted_indexes.unsqueeze(-1))
            return res.squeeze(-1)

    model = load(m, make_rhn(m), weights)
    rng = np.random.default_rng(13)
    text = torch.tensor(rng.integers(0, 12, (10, 4)))
    losses, grads = train_few(m, model, (text[:-1], text[1:]),
                              lambda model, x, y: m.F.cross_entropy(model(x)[0].reshape(-1, 12), y.reshape(-1)),
                              steps=4, lr=2e-2)
    # generate with each sampler from the trained model, one token at a time carrying the state
    samplers = {"greedy": GreedySampler(), "temperature": TemperatureSampler(0.7),
                "top_k": TopKSampler(3, TemperatureSampler(1.)), "nucleus": NucleusSampler(0.6, TemperatureSampler(1.))}
    generated = {}
    with torch.no_grad():
        for name, sampler in samplers.items():
            torch.manual_seed(42)
            x = text[:3]
            logits, state = model(x)
            tokens = []
            for _ in range(6):
                token = sampler(logits[-1])
                tokens.append(token)
                logits, state = model(token[None, :], state)
            generated[name] = torch.stack(tokens)
    last = logits[-1]
    topk_zeros = last.new_ones(last.shape) * float('-inf')
    values, indices = torch.topk(last, 3, dim=-1)
    topk_zeros.scatter_(-1, indices, values)
    return {"losses": losses, "grads": grads, "generated": generated, "last": last, "topk": topk_zeros}


def test_rhn_and_samplers():
    weights = weights_of(make_rhn)
    ours, _ = run_both(rhn_and_sampling_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    assert (np.isfinite(ours["topk"]).sum(-1) == 3).all()
    g = ours["generated"]
    assert all(v.shape == (6, 4) for v in g.values())


# ----------------------------------------------------------------------------------------------
# labml_nn/gan/stylegan: StyleGAN 2 with its gradient and path-length penalties (double backward)
# ----------------------------------------------------------------------------------------------


def make_stylegan(m):
    torch, nn, F = m.torch, m.nn, m.F

    class EqualizedWeight(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.c = 1 / math.sqrt(np.prod(shape[1:]))
            self.weight = nn.Parameter(torch.randn(shape))

        def forward(self):
            return self.weight * self.c

    class EqualizedLinear(nn.Module):
        def __init__(self, in_features, out_features, bias=0.):
            super().__init__()
            self.weight = EqualizedWeight([out_features, in_features])
            self.bias = nn.Parameter(torch.ones(out_features) * bias)

        def forward(self, x):
            return F.linear(x, self.weight(), bias=self.bias)

    class EqualizedConv2d(nn.Module):
        def __init__(self, in_features, out_features, kernel_size, padding=0):
            super().__init__()
            self.padding = padding
            self.weight = EqualizedWeight([out_features, in_features, kernel_size, kernel_size])
            self.bias = nn.Parameter(torch.ones(out_features))

        def forward(self, x):
            return F.conv2d(x, self.weight(), bias=self.bias, padding=self.padding)

    class MappingNetwork(nn.Module):
        def __init__(self, features, n_layers):
            super().__init__()
            layers = []
            for i in range(n_layers):
                layers.append(EqualizedLinear(features, features))
                layers.append(nn.LeakyReLU(negative_slope=0.2, inplace=True))
            self.net = nn.Sequential(*layers)

        def forward(self, z):
            z = F.normalize(z, dim=1)
            return self.net(z)

    class Conv2dWeightModulate(nn.Module):
        def __init__(self, in_features, out_features, kernel_size, demodulate=True, eps=1e-8):
            super().__init__()
            self.out_features = out_features
            self.demodulate = demodulate
            self.padding = (kernel_size - 1) // 2
            self.weight = EqualizedWeight([out_features, in_features, kernel_size, kernel_size])
            self.eps = eps

        def forward(self, x, s):
            b, _, h, w = x.shape
            s = s[:, None, :, None, None]
            weights = self.weight()[None, :, :, :, :]
            weights = weights * s
            if self.demodulate:
                sigma_inv = torch.rsqrt((weights ** 2).sum(dim=(2, 3, 4), keepdim=True) + self.eps)
                weights = weights * sigma_inv
            x = x.reshape(1, -1, h, w)
            _, _, *ws = weights.shape
            weights = weights.reshape(b * self.out_features, *ws)
            x = F.conv2d(x, weights, padding=self.padding, groups=b)
            return x.reshape(-1, self.out_features, h, w)

    class StyleBlock(nn.Module):
        def __init__(self, d_latent, in_features, out_features):
            super().__init__()
            self.to_style = EqualizedLinear(d_latent, in_features, bias=1.0)
            self.conv = Conv2dWeightModulate(in_features, out_features, kernel_size=3)
            self.scale_noise = nn.Parameter(torch.zeros(1))
            self.bias = nn.Parameter(torch.zeros(out_features))
            self.activation = nn.LeakyReLU(0.2, True)

        def forward(self, x, w, noise):
            s = self.to_style(w)
            x = self.conv(x, s)
            if noise is not None:
                x = x + self.scale_noise[None, :, None, None] * noise
            return self.activation(x + self.bias[None, :, None, None])

    class ToRGB(nn.Module):
        def __init__(self, d_latent, features):
            super().__init__()
            self.to_style = EqualizedLinear(d_latent, features, bias=1.0)
            self.conv = Conv2dWeightModulate(features, 3, kernel_size=1, demodulate=False)
            self.bias = nn.Parameter(torch.zeros(3))
            self.activation = nn.LeakyReLU(0.2, True)

        def forward(self, x, w):
            style = self.to_style(w)
            x = self.conv(x, style)
            return self.activation(x + self.bias[None, :, None, None])

    class Smooth(nn.Module):
        def __init__(self):
            super().__init__()
            kernel = [[1, 2, 1], [2, 4, 2], [1, 2, 1]]
            kernel = torch.tensor([[kernel]], dtype=torch.float)
            kernel /= kernel.sum()
            self.kernel = nn.Parameter(kernel, requires_grad=False)
            self.pad = nn.ReplicationPad2d(1)

        def forward(self, x):
            b, c, h, w = x.shape
            x = x.view(-1, 1, h, w)
            x = self.pad(x)
            x = F.conv2d(x, self.kernel)
            return x.view(b, c, h, w)

    class UpSample(nn.Module):
        def __init__(self):
            super().__init__()
            self.up_sample = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False)
            self.smooth = Smooth()

        def forward(self, x):
            return self.smooth(self.up_sample(x))

    class DownSample(nn.Module):
        def __init__(self):
            super().__init__()
            self.smooth = Smooth()

        def forward(self, x):
            x = self.smooth(x)
            return F.interpolate(x, (x.shape[2] // 2, x.shape[3] // 2), mode='bilinear', align_corners=False)

    class GeneratorBlock(nn.Module):
        def __init__(self, d_latent, in_features, out_features):
            super().__init__()
            self.style_block1 = StyleBlock(d_latent, in_features, out_features)
            self.style_block2 = StyleBlock(d_latent, out_features, out_features)
            self.to_rgb = ToRGB(d_latent, out_features)

        def forward(self, x, w, noise):
            x = self.style_block1(x, w, noise[0])
            x = self.style_block2(x, w, noise[1])
            rgb = self.to_rgb(x, w)
            return x, rgb

    class Generator(nn.Module):
        def __init__(self, log_resolution, d_latent, n_features=32, max_features=512):
            super().__init__()
            features = [min(max_features, n_features * (2 ** i)) for i in range(log_resolution - 2, -1, -1)]
            self.n_blocks = len(features)
            self.initial_constant = nn.Parameter(torch.randn((1, features[0], 4, 4)))
            self.style_block = StyleBlock(d_latent, features[0], features[0])
            self.to_rgb = ToRGB(d_latent, features[0])
            blocks = [GeneratorBlock(d_latent, features[i - 1], features[i]) for i in range(1, self.n_blocks)]
            self.blocks = nn.ModuleList(blocks)
            self.up_sample = UpSample()

        def forward(self, w, input_noise):
            batch_size = w.shape[1]
            x = self.initial_constant.expand(batch_size, -1, -1, -1)
            x = self.style_block(x, w[0], input_noise[0][1])
            rgb = self.to_rgb(x, w[0])
            for i in range(1, self.n_blocks):
                x = self.up_sample(x)
                x, rgb_new = self.blocks[i - 1](x, w[i], input_noise[i])
                rgb = self.up_sample(rgb) + rgb_new
            return rgb

    class MiniBatchStdDev(nn.Module):
        def __init__(self, group_size=4):
            super().__init__()
            self.group_size = group_size

        def forward(self, x):
            assert x.shape[0] % self.group_size == 0
            grouped = x.view(self.group_size, -1)
            std = torch.sqrt(grouped.var(dim=0) + 1e-8)
            std = std.mean().view(1, 1, 1, 1)
            b, _, h, w = x.shape
            std = std.expand(b, -1, h, w)
            return torch.cat([x, std], dim=1)

    class DiscriminatorBlock(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.residual = nn.Sequential(DownSample(), EqualizedConv2d(in_features, out_features, kernel_size=1))
            self.block = nn.Sequential(
                EqualizedConv2d(in_features, in_features, kernel_size=3, padding=1),
                nn.LeakyReLU(0.2, True),
                EqualizedConv2d(in_features, out_features, kernel_size=3, padding=1),
                nn.LeakyReLU(0.2, True),
            )
            self.down_sample = DownSample()
            self.scale = 1 / math.sqrt(2)

        def forward(self, x):
            residual = self.residual(x)
            x = self.block(x)
            x = self.down_sample(x)
            return (x + residual) * self.scale

    class Discriminator(nn.Module):
        def __init__(self, log_resolution, n_features=64, max_features=512):
            super().__init__()
            self.from_rgb = nn.Sequential(EqualizedConv2d(3, n_features, 1), nn.LeakyReLU(0.2, True))
            features = [min(max_features, n_features * (2 ** i)) for i in range(log_resolution - 1)]
            n_blocks = len(features) - 1
            blocks = [DiscriminatorBlock(features[i], features[i + 1]) for i in range(n_blocks)]
            self.blocks = nn.Sequential(*blocks)
            self.std_dev = MiniBatchStdDev()
            final_features = features[-1] + 1
            self.conv = EqualizedConv2d(final_features, final_features, 3)
            self.final = EqualizedLinear(2 * 2 * final_features, 1)

        def forward(self, x):
            x = x - 0.5
            x = self.from_rgb(x)
            x = self.blocks(x)
            x = self.std_dev(x)
            x = self.conv(x)
            x = x.reshape(x.shape[0], -1)
            return self.final(x)

    class StyleGAN(nn.Module):
        def __init__(self):
            super().__init__()
            self.mapping_network = MappingNetwork(8, 2)
            self.generator = Generator(4, 8, n_features=4, max_features=8)
            self.discriminator = Discriminator(4, n_features=4, max_features=8)

    return StyleGAN().double()


def stylegan_program(m, weights):
    torch, nn, F = m.torch, m.nn, m.F

    class GradientPenalty(nn.Module):
        def forward(self, x, d):
            batch_size = x.shape[0]
            gradients, *_ = torch.autograd.grad(outputs=d, inputs=x, grad_outputs=d.new_ones(d.shape),
                                                create_graph=True)
            gradients = gradients.reshape(batch_size, -1)
            norm = gradients.norm(2, dim=-1)
            return torch.mean(norm ** 2)

    class PathLengthPenalty(nn.Module):
        def __init__(self, beta):
            super().__init__()
            self.beta = beta
            self.steps = nn.Parameter(torch.tensor(0.), requires_grad=False)
            self.exp_sum_a = nn.Parameter(torch.tensor(0.), requires_grad=False)

        def forward(self, w, x):
            image_size = x.shape[2] * x.shape[3]
            y = torch.randn(x.shape, dtype=x.dtype)
            output = (x * y).sum() / math.sqrt(image_size)
            gradients, *_ = torch.autograd.grad(outputs=output, inputs=w, grad_outputs=torch.ones(output.shape, dtype=x.dtype),
                                                create_graph=True)
            norm = (gradients ** 2).sum(dim=2).mean(dim=1).sqrt()
            if self.steps > 0:
                a = self.exp_sum_a / (1 - self.beta ** self.steps)
                loss = torch.mean((norm - a) ** 2)
            else:
                loss = norm.new_tensor(0)
            mean = norm.mean().detach()
            self.exp_sum_a.mul_(self.beta).add_(mean, alpha=1 - self.beta)
            self.steps.add_(1.)
            return loss

    class DiscriminatorLoss(nn.Module):
        def forward(self, f_real, f_fake):
            return F.relu(1 - f_real).mean(), F.relu(1 + f_fake).mean()

    class GeneratorLoss(nn.Module):
        def forward(self, f_fake):
            return -f_fake.mean()

    model = load(m, make_stylegan(m), weights)
    mapping_network, generator, discriminator = model.mapping_network, model.generator, model.discriminator
    rng = np.random.default_rng(14)
    real = torch.tensor(rng.uniform(0, 1, (4, 3, 16, 16)))
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=1e-3, betas=(0.0, 0.99))
    g_opt = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.0, 0.99))
    m_opt = torch.optim.Adam(mapping_network.parameters(), lr=1e-4, betas=(0.0, 0.99))
    gradient_penalty, path_length_penalty = GradientPenalty(), PathLengthPenalty(0.99)
    discriminator_loss, generator_loss = DiscriminatorLoss(), GeneratorLoss()
    torch.manual_seed(0)
    n_gen_blocks = generator.n_blocks

    def get_w(batch_size):
        z = torch.randn(batch_size, 8, dtype=torch.float64)
        w = mapping_network(z)
        return w[None, :, :].expand(n_gen_blocks, -1, -1)

    def get_noise(batch_size):
        noise = []
        resolution = 4
        for i in range(n_gen_blocks):
            if i == 0:
                n1 = None
            else:
                n1 = torch.randn(batch_size, 1, resolution, resolution, dtype=torch.float64)
            n2 = torch.randn(batch_size, 1, resolution, resolution, dtype=torch.float64)
            noise.append((n1, n2))
            resolution *= 2
        return noise

    def generate_images(batch_size):
        w = get_w(batch_size)
        noise = get_noise(batch_size)
        images = generator(w, noise)
        return images, w

    out = {"d": [], "g": [], "gp": [], "plp": []}
    for idx in range(3):
        d_opt.zero_grad()
        generated_images, _ = generate_images(4)
        fake_output = discriminator(generated_images.detach())
        real_images = real.clone().requires_grad_()
        real_output = discriminator(real_images)
        real_loss, fake_loss = discriminator_loss(real_output, fake_output)
        disc_loss = real_loss + fake_loss
        gp = gradient_penalty(real_images, real_output)
        disc_loss = disc_loss + 0.5 * 10. * gp
        disc_loss.backward()
        nn.utils.clip_grad_norm_(discriminator.parameters(), max_norm=1.0)
        d_opt.step()
        g_opt.zero_grad()
        m_opt.zero_grad()
        generated_images, w = generate_images(4)
        fake_output = discriminator(generated_images)
        gen_loss = generator_loss(fake_output)
        plp = path_length_penalty(w, generated_images)
        if not torch.isnan(plp):
            gen_loss = gen_loss + plp
        gen_loss.backward()
        nn.utils.clip_grad_norm_(generator.parameters(), max_norm=1.0)
        nn.utils.clip_grad_norm_(mapping_network.parameters(), max_norm=1.0)
        g_opt.step()
        m_opt.step()
        out["d"].append(disc_loss.item())
        out["g"].append(gen_loss.item())
        out["gp"].append(gp.item())
        out["plp"].append(plp.item())
    out["steps"] = path_length_penalty.steps
    out["exp_sum_a"] = path_length_penalty.exp_sum_a
    out["conv_grad"] = discriminator.from_rgb[0].weight.weight.grad
    out["style_grad"] = generator.blocks[0].style_block1.to_style.weight.weight.grad
    out["images"] = generated_images
    return out


def test_stylegan2_with_penalties():
    weights = weights_of(make_stylegan)
    ours, _ = run_both(stylegan_program, weights, rtol=1e-7, atol=1e-9)
    assert ours["steps"] == 3 and ours["plp"][0] == 0 and ours["plp"][2] > 0
    assert ours["images"].shape == (4, 3, 16, 16) and all(g > 0 for g in ours["gp"])


# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/{switch,glu_variants,vit,mlp_mixer}: routing, gated feed-forwards, patches
# ----------------------------------------------------------------------------------------------


def make_switch_glu_vit(m):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)

    class SwitchFeedForward(nn.Module):
        def __init__(self, *, capacity_factor, drop_tokens, is_scale_prob, n_experts, expert, d_model):
            super().__init__()
            self.capacity_factor = capacity_factor
            self.is_scale_prob = is_scale_prob
            self.n_experts = n_experts
            self.drop_tokens = drop_tokens
            self.experts = t.clone_module_list(expert, n_experts)
            self.switch = nn.Linear(d_model, n_experts)
            self.softmax = nn.Softmax(dim=-1)

        def forward(self, x):
            seq_len, batch_size, d_model = x.shape
            x = x.view(-1, d_model)
            route_prob = self.softmax(self.switch(x))
            route_prob_max, routes = torch.max(route_prob, dim=-1)
            indexes_list = [torch.eq(routes, i).nonzero(as_tuple=True)[0] for i in range(self.n_experts)]
            final_output = x.new_zeros(x.shape)
            capacity = int(self.capacity_factor * len(x) / self.n_experts)
            counts = x.new_tensor([len(indexes_list[i]) for i in range(self.n_experts)])
            dropped = []
            if self.drop_tokens:
                for i in range(self.n_experts):
                    if len(indexes_list[i]) <= capacity:
                        continue
                    indexes_list[i] = indexes_list[i][torch.randperm(len(indexes_list[i]))]
                    dropped.append(indexes_list[i][capacity:])
                    indexes_list[i] = indexes_list[i][:capacity]
            expert_output = [self.experts[i](x[indexes_list[i], :]) for i in range(self.n_experts)]
            for i in range(self.n_experts):
                final_output[indexes_list[i], :] = expert_output[i]
            if dropped:
                dropped = torch.cat(dropped)
                final_output[dropped, :] = x[dropped, :]
            if self.is_scale_prob:
                final_output = final_output * route_prob_max.view(-1, 1)
            else:
                final_output = final_output * (route_prob_max / route_prob_max.detach()).view(-1, 1)
            final_output = final_output.view(seq_len, batch_size, d_model)
            return final_output, counts, route_prob.sum(0), len(dropped), route_prob_max

    class MLPMixer(nn.Module):
        def __init__(self, mlp):
            super().__init__()
            self.mlp = mlp

        def forward(self, query, key, value, mask=None):
            assert query is key and key is value
            assert mask is None
            x = query
            x = x.transpose(0, 2)
            x = self.mlp(x)
            x = x.transpose(0, 2)
            return x

    class PatchEmbeddings(nn.Module):
        def __init__(self, d_model, patch_size, in_channels):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, d_model, patch_size, stride=patch_size)

        def forward(self, x):
            x = self.conv(x)
            bs, c, h, w = x.shape
            x = x.permute(2, 3, 0, 1)
            x = x.view(h * w, bs, c)
            return x

    class LearnedPositionalEmbeddings(nn.Module):
        def __init__(self, d_model, max_len=5_000):
            super().__init__()
            self.positional_encodings = nn.Parameter(torch.zeros(max_len, 1, d_model), requires_grad=True)

        def forward(self, x):
            pe = self.positional_encodings[:x.shape[0]]
            return x + pe

    class ClassificationHead(nn.Module):
        def __init__(self, d_model, n_hidden, n_classes):
            super().__init__()
            self.linear1 = nn.Linear(d_model, n_hidden)
            self.act = nn.ReLU()
            self.linear2 = nn.Linear(n_hidden, n_classes)

        def forward(self, x):
            x = self.act(self.linear1(x))
            x = self.linear2(x)
            return x

    class VisionTransformer(nn.Module):
        def __init__(self, transformer_layer, n_layers, patch_emb, pos_emb, classification):
            super().__init__()
            self.patch_emb = patch_emb
            self.pos_emb = pos_emb
            self.classification = classification
            self.transformer_layers = t.clone_module_list(transformer_layer, n_layers)
            self.cls_token_emb = nn.Parameter(torch.randn(1, 1, transformer_layer.size), requires_grad=True)
            self.ln = nn.LayerNorm([transformer_layer.size])

        def forward(self, x):
            x = self.patch_emb(x)
            cls_token_emb = self.cls_token_emb.expand(-1, x.shape[1], -1)
            x = torch.cat([cls_token_emb, x])
            x = self.pos_emb(x)
            for layer in self.transformer_layers:
                x = layer(x=x, mask=None)
            x = x[0]
            x = self.ln(x)
            x = self.classification(x)
            return x

    class Models(nn.Module):
        def __init__(self, d_model=8):
            super().__init__()
            self.switch = SwitchFeedForward(capacity_factor=1.0, drop_tokens=True, is_scale_prob=False, n_experts=3,
                                            expert=t.FeedForward(d_model, 16, 0.), d_model=d_model)
            self.glu = nn.ModuleDict({
                'GLU': t.FeedForward(d_model, 12, 0., nn.Sigmoid(), True, False, False, False),
                'Bilinear': t.FeedForward(d_model, 12, 0., nn.Identity(), True, False, False, False),
                'GEGLU': t.FeedForward(d_model, 12, 0., nn.GELU(), True, False, False, False),
                'SwiGLU': t.FeedForward(d_model, 12, 0., nn.SiLU(), True, False, False, False),
            })
            mixer_layer = t.TransformerLayer(d_model=d_model, self_attn=MLPMixer(t.FeedForward(7, 14, 0., nn.GELU())),
                                             feed_forward=t.FeedForward(d_model, 16, 0.), dropout_prob=0.)
            self.mixer = t.clone_module_list(mixer_layer, 2)
            vit_layer = t.TransformerLayer(d_model=d_model, self_attn=t.MultiHeadAttention(2, d_model, 0.),
                                           feed_forward=t.FeedForward(d_model, 16, 0.), dropout_prob=0.)
            self.vit = VisionTransformer(vit_layer, 2, PatchEmbeddings(d_model, 4, 3),
                                         LearnedPositionalEmbeddings(d_model, 20), ClassificationHead(d_model, 12, 5))

    return Models().double()


def switch_glu_vit_program(m, weights):
    torch = m.torch
    model = load(m, make_switch_glu_vit(m), weights)
    with torch.no_grad():
        model.vit.pos_emb.positional_encodings.copy_(torch.linspace(-1, 1, 160, dtype=torch.float64).view(20, 1, 8))
    x, y = (torch.tensor(a) for a in sequence_data())
    torch.manual_seed(3)  # the dropped tokens are drawn by randperm
    out = {}
    sw, counts, route_prob, n_dropped, route_prob_max = model.switch(x)
    load_balancing = 3 * ((counts / counts.sum()) * (route_prob / 21)).sum()
    ((sw - y) ** 2).mean().add(0.01 * load_balancing).backward()
    out["switch"] = [sw, counts, route_prob, n_dropped, route_prob_max]
    out["switch_grads"] = {n: p.grad for n, p in model.switch.named_parameters()}
    for name, ffn in model.glu.items():
        x_ = x.clone().requires_grad_()
        value = ffn(x_)
        out["glu_" + name] = [value, torch.autograd.grad(value.pow(2).sum(), [x_, ffn.layer1.weight, ffn.linear_v.weight])]
    h = x
    for layer in model.mixer:
        h = layer(x=h, mask=None)
    out["mixer"] = h
    out["mixer_grad"] = torch.autograd.grad(h.sum(), model.mixer[0].self_attn.mlp.layer1.weight)[0]
    rng = np.random.default_rng(15)
    images = torch.tensor(rng.standard_normal((5, 3, 12, 12)))
    labels = torch.tensor(rng.integers(0, 5, 5))
    out["vit_losses"], out["vit_grads"] = train_few(m, model.vit, (images, labels),
                                                    lambda model, x, y: m.F.cross_entropy(model(x), y), steps=4)
    return out


def test_switch_glu_mixer_vit():
    weights = weights_of(make_switch_glu_vit)
    ours, _ = run_both(switch_glu_vit_program, weights, rtol=1e-8, atol=1e-10)
    sw, counts, route_prob, n_dropped, route_prob_max = ours["switch"]
    # the experts over their capacity of 7 tokens send their extras through unchanged
    assert counts.sum() == 21 and n_dropped == np.maximum(counts - 7, 0).sum() > 0
    np.testing.assert_allclose(route_prob.sum(), 21, rtol=1e-12)
    assert ours["vit_losses"][-1] < ours["vit_losses"][0]


# ----------------------------------------------------------------------------------------------
# labml_nn/neox: GPT-NeoX layers built by a LayerGenerator, weights merged from two model-parallel
# partitions through .data slices, generation with a key/value cache, and bias-only fine-tuning
# ----------------------------------------------------------------------------------------------


def neox_program(m, partitions):
    torch, nn = m.torch, m.nn
    autocast = m.torch.cuda.amp.autocast

    class Cache:
        def __init__(self):
            self._cache = {}

        def clear_all(self):
            self._cache = {}

        def push(self, name, value):
            if name not in self._cache:
                self._cache[name] = []
            self._cache[name].append(value)

        def pop(self, name):
            return self._cache[name].pop(0)

        def set(self, key, value):
            self._cache[key] = value

        def get(self, key, default=None):
            return self._cache.get(key, default)

    _cache = Cache()

    def get_cache():
        return _cache

    def merge_params_dim_0(param, key, p1, p2):
        w1, w2 = p1[key], p2[key]
        param.data[:w1.shape[0]] = w1
        param.data[w1.shape[0]:] = w2

    def merge_params_dim_1(param, key, p1, p2):
        w1, w2 = p1[key], p2[key]
        param.data[:, :w1.shape[1]] = w1
        param.data[:, w1.shape[1]:] = w2

    def merge_params_duplicate(param, key, p1, p2):
        w1, w2 = p1[key], p2[key]
        diff = sum((w1 - w2) ** 2).item()
        assert diff < 1e-4, f'The partitions do not match: {key}'
        param.data[:] = (w1 + w2) / 2.

    def merge_params_sum(param, key, p1, p2):
        w1, w2 = p1[key], p2[key]
        param.data[:] = w1 + w2

    class NeoXModule(nn.Module):
        def load_state(self, p1, p2):
            pass

    class Embedding(NeoXModule):
        def __init__(self, n_vocab=50_432, n_hidden=6_144):
            super().__init__()
            self.emb = nn.Embedding(n_vocab, n_hidden)

        def forward(self, x):
            return self.emb(x)

        def load_state(self, p1, p2):
            merge_params_dim_0(self.emb.weight, 'word_embeddings.weight', p1, p2)

    class RoPE(nn.Module):
        def __init__(self, d_rope, base=10_000.):
            super().__init__()
            self.theta = None
            self.cos_cached = None
            self.sin_cached = None
            self.base = base
            self.d_rope = d_rope

        @staticmethod
        def rotate_half(x):
            x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
            return torch.cat((-x2, x1), dim=-1)

        def forward(self, x, offset=0):
            seq_len = x.shape[-3] + offset
            if self.theta is None:
                theta = 1.0 / (self.base ** (torch.arange(0, self.d_rope, 2).float() / self.d_rope))
                self.theta = theta.to(x.device).to(x.dtype)
            if (self.cos_cached is None or seq_len > self.cos_cached.shape[1] or
                    self.cos_cached.device != x.device or self.cos_cached.dtype != x.dtype):
                seq_idx = torch.arange(seq_len, device=x.device).type_as(self.theta)
                idx_theta = torch.einsum("s,d->sd", seq_idx, self.theta)
                idx_theta2 = torch.cat((idx_theta, idx_theta), dim=-1).to(x.device)
                with autocast(enabled=False):
                    idx_theta2 = idx_theta2.float()
                    self.cos_cached = idx_theta2.cos()[:, None, :]
                    self.sin_cached = idx_theta2.sin()[:, None, :]
                self.cos_cached = self.cos_cached.to(x.dtype)
                self.sin_cached = self.sin_cached.to(x.dtype)
            x_rope, x_pass = x[..., :self.d_rope], x[..., self.d_rope:]
            cos, sin = self.cos_cached[offset: seq_len], self.sin_cached[offset: seq_len]
            x_rope = (x_rope * cos) + (self.rotate_half(x_rope) * sin)
            return torch.cat((x_rope, x_pass), dim=-1)

    class AttentionLayer(nn.Module):
        def __init__(self, n_hidden=6_144, n_heads=64, rope_percentage=0.25, mask_fill=-10_000.0):
            super().__init__()
            self.n_heads = n_heads
            self.mask_fill = mask_fill
            self.qkv_lin = nn.Linear(n_hidden, n_hidden * 3)
            self.output = nn.Linear(n_hidden, n_hidden)
            d_k = n_hidden // n_heads
            self.rope = RoPE(int(d_k * rope_percentage))
            self.scale = 1 / math.sqrt(d_k)
            self.causal_mask = None
            self.softmax = nn.Softmax(dim=-2)

        def _get_mask(self, attn):
            nq, nk = attn.shape[1:3]
            if (self.causal_mask is None or self.causal_mask.shape[0] != nq or self.causal_mask.shape[1] != nk or
                    self.causal_mask.device != attn.device):
                self.causal_mask = torch.triu(attn.new_ones([nq, nk], dtype=torch.bool), 1 + nk - nq)
            return self.causal_mask[None, :, :, None]

        def forward(self, x):
            qkv = self.qkv_lin(x)
            qkv = qkv.view(*qkv.shape[:-1], self.n_heads, -1)
            q, k, v = torch.split(qkv, qkv.shape[-1] // 3, dim=-1)
            if get_cache().get('use_cache', False):
                prev_state_id, next_state_id = get_cache().get('state_ids')
                if prev_state_id is not None:
                    k_past, v_past = get_cache().pop(f'attn_kv_{prev_state_id}')
                    offset = k_past.shape[1]
                    q = self.rope(q, offset=offset)
                    k = self.rope(k, offset=offset)
                    k = torch.cat([k_past, k], dim=1)
                    v = torch.cat([v_past, v], dim=1)
                else:
                    q = self.rope(q)
                    k = self.rope(k)
                get_cache().push(f'attn_kv_{next_state_id}', (k, v))
            else:
                q = self.rope(q)
                k = self.rope(k)
            output = self.compute_attention(q, k, v)
            output = output.reshape(*x.shape)
            return self.output(output)

        def compute_attention(self, q, k, v):
            with autocast(enabled=False):
                if q.dtype == torch.float16:
                    attn = torch.einsum('bihk,bjhk->bijh', q.float(), k.float())
                else:
                    attn = torch.einsum('bihk,bjhk->bijh', q, k)
                attn = attn * self.scale
                mask = self._get_mask(attn)
                attn.masked_fill_(mask, self.mask_fill)
                attn = self.softmax(attn)
            output = torch.einsum('bijh,bjhk->bihk', attn.to(v.dtype), v)
            return output

    class FFNLayer(nn.Module):
        def __init__(self, n_hidden=6_144, d_ff=0):
            super().__init__()
            if not d_ff:
                d_ff = n_hidden * 4
            self.dense_h_h4 = nn.Linear(n_hidden, d_ff)
            self.activation = nn.GELU()
            self.dense_h4_h = nn.Linear(d_ff, n_hidden)

        def forward(self, x):
            x = self.dense_h_h4(x)
            x = self.activation(x)
            x = self.dense_h4_h(x)
            return x

    class TransformerLayer(NeoXModule):
        def __init__(self, n_hidden=6_144, n_heads=64):
            super().__init__()
            self.pre_ln_attn = nn.LayerNorm(n_hidden)
            self.pre_ln_ffn = nn.LayerNorm(n_hidden)
            self.attention = AttentionLayer(n_hidden, n_heads)
            self.ffn = FFNLayer(n_hidden)

        def forward(self, x):
            residual = x
            attn = self.attention(self.pre_ln_attn(x))
            ffn = self.ffn(self.pre_ln_ffn(x))
            return attn + ffn + residual

        def load_state(self, p1, p2):
            merge_params_sum(self.attention.output.bias, 'attention.dense.bias', p1, p2)
            merge_params_dim_1(self.attention.output.weight, 'attention.dense.weight', p1, p2)
            merge_params_dim_0(self.attention.qkv_lin.bias, 'attention.query_key_value.bias', p1, p2)
            merge_params_dim_0(self.attention.qkv_lin.weight, 'attention.query_key_value.weight', p1, p2)
            merge_params_duplicate(self.pre_ln_attn.bias, 'input_layernorm.bias', p1, p2)
            merge_params_duplicate(self.pre_ln_attn.weight, 'input_layernorm.weight', p1, p2)
            merge_params_dim_0(self.ffn.dense_h_h4.bias, 'mlp.dense_h_to_4h.bias', p1, p2)
            merge_params_dim_0(self.ffn.dense_h_h4.weight, 'mlp.dense_h_to_4h.weight', p1, p2)
            merge_params_sum(self.ffn.dense_h4_h.bias, 'mlp.dense_4h_to_h.bias', p1, p2)
            merge_params_dim_1(self.ffn.dense_h4_h.weight, 'mlp.dense_4h_to_h.weight', p1, p2)
            merge_params_duplicate(self.pre_ln_ffn.bias, 'post_attention_layernorm.bias', p1, p2)
            merge_params_duplicate(self.pre_ln_ffn.weight, 'post_attention_layernorm.weight', p1, p2)

    class FinalNorm(NeoXModule):
        def __init__(self, n_hidden=6_144):
            super().__init__()
            self.ln = nn.LayerNorm(n_hidden)

        def forward(self, x):
            return self.ln(x)

        def load_state(self, p1, p2):
            merge_params_duplicate(self.ln.bias, 'norm.bias', p1, p2)
            merge_params_duplicate(self.ln.weight, 'norm.weight', p1, p2)

    class ReadoutLayer(NeoXModule):
        def __init__(self, n_hidden=6_144, n_vocab=50_432):
            super().__init__()
            self.linear = nn.Linear(n_hidden, n_vocab, bias=False)

        def forward(self, x):
            return self.linear(x)

        def load_state(self, p1, p2):
            merge_params_dim_0(self.linear.weight, 'final_linear.weight', p1, p2)

    class LayerGenerator:
        def __init__(self, *, n_vocab=50_432, n_hidden=6_144, n_layers=44, n_heads=64, filter_layers=None,
                     is_clone_layers=True, dtype=torch.float, device=torch.device('cpu')):
            if filter_layers is None:
                filter_layers = set(range(n_layers + 3))
            self.n_vocab = n_vocab
            self.n_hidden = n_hidden
            self.n_layers = n_layers
            self.n_heads = n_heads
            self.filter_layers = filter_layers
            self.is_clone_layers = is_clone_layers
            self.dtype = dtype
            self.device = device
            self.pre_created_layers = dict(transformer_layer=None)

        def _prepare_layer(self, layer):
            return layer.to(self.device, self.dtype)

        def _create_and_cache_layer(self, name, creator):
            if not self.is_clone_layers:
                return self._prepare_layer(creator())
            if self.pre_created_layers[name] is None:
                self.pre_created_layers[name] = self._prepare_layer(creator())
            layer = copy.deepcopy(self.pre_created_layers[name])
            return layer

        @torch.no_grad()
        def get_layers(self):
            if 0 in self.filter_layers:
                yield self._prepare_layer(Embedding(self.n_vocab, self.n_hidden)), 0
            for i in range(self.n_layers):
                if i + 1 in self.filter_layers:
                    yield self._create_and_cache_layer(
                        'transformer_layer', lambda: TransformerLayer(self.n_hidden, self.n_heads)), i + 2
            if self.n_layers + 1 in self.filter_layers:
                yield self._prepare_layer(FinalNorm(self.n_hidden)), 47
            if self.n_layers + 2 in self.filter_layers:
                yield self._prepare_layer(ReadoutLayer(self.n_hidden, self.n_vocab)), 48
            for k in self.pre_created_layers.keys():
                self.pre_created_layers[k] = None

        @torch.no_grad()
        def load(self):
            for i, (layer, checkpoint) in enumerate(self.get_layers()):
                p1, p2 = ({k: torch.tensor(v) for k, v in p[checkpoint].items()} for p in partitions)
                layer.load_state(p1, p2)
                yield layer

    class FineTuneBiases:
        def __init__(self, layers):
            self.layers = layers

        def get_trainable_params(self):
            params = {}
            for i, layer in enumerate(self.layers):
                if isinstance(layer, TransformerLayer):
                    params[f'layer_{i :02d}.attention.output.bias'] = layer.attention.output.bias
                    params[f'layer_{i :02d}.attention.qkv_lin.bias'] = layer.attention.qkv_lin.bias
                    params[f'layer_{i :02d}.ffn.dense_h_h4.bias'] = layer.ffn.dense_h_h4.bias
            return params

        def set_trainable_params(self):
            for layer in self.layers:
                layer.requires_grad_(False)
                for p in self.get_trainable_params().values():
                    p.requires_grad_(True)

        def state_dict(self):
            return {n: p.data.cpu() for n, p in self.get_trainable_params().items()}

        def load_state_dict(self, state_dict):
            params = self.get_trainable_params()
            for n, p in params.items():
                p.data[:] = state_dict[n].to(p.data.device)
            for n in state_dict.keys():
                assert n in params, n

    generator = LayerGenerator(n_vocab=13, n_hidden=16, n_layers=2, n_heads=2, dtype=torch.float64)
    layers = list(generator.load())
    model = nn.Sequential(*layers)
    out = {"requires_grad": [p.requires_grad for p in model.parameters()],
           "weights": {k: v for k, v in model.state_dict().items()}}
    rng = np.random.default_rng(16)
    ids = torch.tensor(rng.integers(0, 13, (2, 7)))
    with torch.no_grad():
        full = model(ids)
        # generation with the key/value cache: the prompt, then one token at a time
        get_cache().set('use_cache', True)
        get_cache().set('state_ids', (None, 0))
        prompt_logits = model(ids[:, :5])
        steps = []
        for i, token in enumerate((ids[:, 5:6], ids[:, 6:7])):
            get_cache().set('state_ids', (i, i + 1))
            steps.append(model(token))
        get_cache().clear_all()
    out["full"], out["cached"] = full, torch.cat([prompt_logits] + steps, dim=1)
    fine_tuner = FineTuneBiases(layers)
    fine_tuner.set_trainable_params()
    params = fine_tuner.get_trainable_params()
    optimizer = torch.optim.Adam(params.values(), lr=1e-2)
    losses = []
    for _ in range(3):
        logits = model(ids[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 13), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    out["losses"] = losses
    out["trainable"] = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    out["frozen_grads"] = [p.grad is None for p in model.parameters() if not p.requires_grad]
    saved = fine_tuner.state_dict()
    fine_tuner.load_state_dict({n: v * 0 for n, v in saved.items()})
    out["zeroed"] = [p.abs().sum() for p in params.values()]
    fine_tuner.load_state_dict(saved)
    out["restored"] = model(ids)
    return out


def neox_partitions():
    """Two model-parallel halves of a tiny NeoX checkpoint: sharded rows/columns, duplicated norms, summed biases."""
    rng = np.random.default_rng(17)
    r = lambda *s: rng.standard_normal(s) * 0.3
    halves = ({}, {})
    halves[0][0], halves[1][0] = {'word_embeddings.weight': r(7, 16)}, {'word_embeddings.weight': r(6, 16)}
    for layer in (2, 3):
        ln = {k: r(16) for k in ('input_layernorm.bias', 'input_layernorm.weight', 'post_attention_layernorm.bias',
                                   'post_attention_layernorm.weight')}
        for half in halves:
            half[layer] = {'attention.dense.bias': r(16), 'attention.dense.weight': r(16, 8),
                           'attention.query_key_value.bias': r(24), 'attention.query_key_value.weight': r(24, 16),
                           'mlp.dense_h_to_4h.bias': r(32), 'mlp.dense_h_to_4h.weight': r(32, 16),
                           'mlp.dense_4h_to_h.bias': r(16), 'mlp.dense_4h_to_h.weight': r(16, 32), **ln}
    norm = {'norm.bias': r(16), 'norm.weight': 1 + r(16)}
    halves[0][47], halves[1][47] = norm, dict(norm)
    halves[0][48], halves[1][48] = {'final_linear.weight': r(7, 16)}, {'final_linear.weight': r(6, 16)}
    return halves


@pytest.mark.filterwarnings("ignore:`(torch|autograd).cuda.amp.autocast:FutureWarning")
def test_neox_layers():
    halves = neox_partitions()
    # (NeoX's RoPE computes its cos/sin cache in float32, where cos may differ by an ulp)
    ours, _ = run_both(neox_program, halves, rtol=1e-6, atol=1e-9)
    w = ours["weights"]
    np.testing.assert_array_equal(w["0.emb.weight"], np.concatenate([halves[0][0]['word_embeddings.weight'],
                                                                     halves[1][0]['word_embeddings.weight']]))
    np.testing.assert_array_equal(w["1.attention.output.weight"], np.concatenate(
        [halves[0][2]['attention.dense.weight'], halves[1][2]['attention.dense.weight']], axis=1))
    np.testing.assert_allclose(w["2.ffn.dense_h4_h.bias"], halves[0][3]['mlp.dense_4h_to_h.bias'] + halves[1][3]['mlp.dense_4h_to_h.bias'])
    assert all(ours["requires_grad"])  # built and loaded under no_grad, its parameters still require grad
    # the cache gives the same logits as the whole sequence at once
    np.testing.assert_allclose(ours["cached"], ours["full"], rtol=1e-9, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0] and all(ours["frozen_grads"])
    assert len(ours["trainable"]) == 6 and all(z == 0 for z in ours["zeroed"])


# ----------------------------------------------------------------------------------------------
# labml_nn/optimizers/{adam_fp16,adam_warmup_cosine_decay,sophia}: float16 parameters with float32
# state, a warm-up cosine schedule in get_lr, and Sophia's Hessian estimate
# ----------------------------------------------------------------------------------------------


def fp16_and_sophia_program(m, weights):
    torch, nn = m.torch, m.nn
    Optimizer = importlib.import_module(m.optim.__name__ + ".optimizer").Optimizer  # from torch.optim.optimizer import
    assert Optimizer is m.optim.Optimizer
    family = labml_optimizer_family(m)
    WeightDecay, GenericAdaptiveOptimizer, Adam = family.WeightDecay, family.GenericAdaptiveOptimizer, family.Adam

    class AdamFP16(Adam):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=WeightDecay(),
                     optimized_update=True, defaults=None):
            self.grad_fp32 = {}
            super().__init__(params, lr, betas, eps, weight_decay, optimized_update, defaults)

        def init_state(self, state, group, param):
            state['step'] = 0
            state['exp_avg'] = torch.zeros_like(param, memory_format=torch.preserve_format, dtype=torch.float)
            state['exp_avg_sq'] = torch.zeros_like(param, memory_format=torch.preserve_format, dtype=torch.float)
            state['fp32_copy'] = param.to(torch.float)

        def step_param(self, state, group, grad, param):
            param_fp32 = state['fp32_copy']
            grad_fp32 = self.grad_fp32.get(param, None)
            if grad_fp32 is not None:
                del self.grad_fp32[param]
                grad = grad_fp32
            else:
                grad = grad.to(torch.float)
            grad = self.weight_decay(param_fp32, grad, group)
            m, v = self.get_mv(state, group, grad)
            state['step'] += 1
            self.adam_update(state, group, param_fp32, m, v)
            param.data = param_fp32.to(param.dtype)

    class AdamWarmupCosineDecay(Adam):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=WeightDecay(),
                     optimized_update=True, warmup=0, total_steps=1e10, defaults=None):
            defaults = {} if defaults is None else defaults
            defaults.update(dict(warmup=warmup, total_steps=total_steps))
            super().__init__(params, lr, betas, eps, weight_decay, optimized_update, defaults)

        def get_lr(self, state, group):
            if group['warmup'] > state['step']:
                return 1e-8 + state['step'] * group['lr'] / group['warmup']
            else:
                progress = (state['step'] - group['warmup']) / max(1, group['total_steps'] - group['warmup'])
                return group['lr'] * max(0.1, 0.5 * (1.0 + math.cos(math.pi * progress)))

    class Sophia(GenericAdaptiveOptimizer):
        def __init__(self, params, lr=1e-4, betas=(0.9, 0.95), eps=1e-12, rho=0.03, weight_decay=WeightDecay(),
                     defaults=None):
            defaults = {} if defaults is None else defaults
            defaults.update(weight_decay.defaults())
            defaults.update(dict(rho=rho))
            super().__init__(params, defaults, lr, betas, eps)
            self.weight_decay = weight_decay

        def init_state(self, state, group, param):
            state['step'] = 0
            state['exp_avg'] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state['hessian'] = torch.zeros_like(param, memory_format=torch.preserve_format)

        def update_hessian(self, n_tokens_training_batch):
            for group in self.param_groups:
                _, beta2 = group['betas']
                for p in group['params']:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if len(state) == 0:
                        self.init_state(state, group, p)
                    state['hessian'].mul_(beta2).addcmul_(p.grad, p.grad, value=(1 - beta2) * n_tokens_training_batch)

        def step_param(self, state, group, grad, param):
            grad = self.weight_decay(param, grad, group)
            beta1, beta2 = group['betas']
            rho = group['rho']
            m, hessian = state['exp_avg'], state['hessian']
            m.mul_(beta1).add_(grad, alpha=1 - beta1)
            state['step'] += 1
            lr = group['lr']
            eta = lr / rho
            ratio = (m / (hessian + group['eps'])).clamp(-rho, rho)
            param.data.add_(ratio, alpha=-eta)

    rng = np.random.default_rng(18)
    x = rng.standard_normal((32, 6))
    y = rng.integers(0, 4, 32)
    out = {}
    # float16 parameters and activations, the optimizer keeping float32 copies and moments
    model = load(m, nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)), weights).half()
    opt = AdamFP16(model.parameters(), lr=1e-2, weight_decay=WeightDecay(0.01))
    xh, yt = torch.tensor(x, dtype=torch.float16), torch.tensor(y)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xh).float(), yt)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    state = opt.state[model[0].weight]
    out["fp16"] = {"losses": losses, "w": model[0].weight, "dtype": model[0].weight.dtype == torch.float16,
                   "state_dtype": state['exp_avg'].dtype == torch.float32, "copy": state['fp32_copy'],
                   "grad_dtype": model[0].weight.grad.dtype == torch.float16}
    # a warm-up of 3 steps, then the cosine decay over 10
    model = load(m, nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)), weights).double()
    opt = AdamWarmupCosineDecay(model.parameters(), lr=3e-2, warmup=3, total_steps=10)
    xd = torch.tensor(x)
    lrs, losses = [], []
    for _ in range(8):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xd), yt)
        loss.backward()
        opt.step()
        lrs.append(opt.get_lr(opt.state[model[0].weight], opt.param_groups[0]))
        losses.append(loss.item())
    out["cosine"] = {"lrs": lrs, "losses": losses, "w": model[2].weight,
                     "schedule": [opt.get_lr({'step': i}, opt.defaults) for i in range(0, 14)]}
    # Sophia: the Hessian estimate from the squared gradients of sampled labels every other step
    model = load(m, nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)), weights).double()
    opt = Sophia(model.parameters(), lr=1e-2, rho=0.05, weight_decay=WeightDecay(0.1))
    torch.manual_seed(0)
    losses = []
    for step in range(6):
        if step % 2 == 0:
            logits = model(xd)
            samp = torch.distributions.Categorical(logits=logits).sample()
            opt.zero_grad()
            nn.functional.cross_entropy(logits, samp).backward()
            opt.update_hessian(len(xd))
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xd), yt)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out["sophia"] = {"losses": losses, "w": model[0].weight, "hessian": opt.state[model[0].weight]['hessian']}
    return out


def test_fp16_adam_cosine_and_sophia():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(6, 16), m.nn.ReLU(), m.nn.Linear(16, 4)))
    ours, theirs = run_both(fp16_and_sophia_program, weights, compare=False)
    f = ours["fp16"]
    assert f["dtype"] and f["state_dtype"] and f["grad_dtype"] and f["losses"][-1] < f["losses"][0]
    # the float16 parameter is the float32 copy rounded
    np.testing.assert_array_equal(f["w"], f["copy"].astype(np.float16))
    c = ours["cosine"]
    np.testing.assert_allclose(c["schedule"][:4], [1e-8, 1e-8 + 0.01, 1e-8 + 0.02, 0.03], rtol=1e-12)
    assert c["schedule"][3] == 0.03 and c["schedule"][10] == pytest.approx(0.003)  # floored at a tenth
    assert ours["sophia"]["losses"][-1] < ours["sophia"]["losses"][0]
    if theirs is not None:
        # (float16 parameters, float32 state: the same to float32's rounding)
        assert_same(ours["fp16"], theirs["fp16"], rtol=1e-5, atol=1e-6)
        assert_same(ours["cosine"], theirs["cosine"], rtol=1e-9, atol=1e-11)
        assert_same(ours["sophia"], theirs["sophia"], rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/{retro,mlm}: RETRO's chunked cross-attention, trained with MLM-style masking
# ----------------------------------------------------------------------------------------------


def make_retro(m):
    torch, nn = m.torch, m.nn

    class RotaryPositionalEmbeddings(nn.Module):
        def __init__(self, d, base=10_000):
            super().__init__()
            self.theta = nn.Parameter(1. / (base ** (torch.arange(0, d, 2).float() / d)), requires_grad=False)

        def forward(self, x):
            batch_size, seq_len, n_heads, d = x.shape
            d_2 = d // 2
            seq_idx = torch.arange(seq_len, device=x.device).type_as(self.theta)
            idx_theta = torch.einsum('n,d->nd', seq_idx, self.theta)
            idx_theta2 = torch.cat([idx_theta, idx_theta], dim=1)
            neg_half_x = torch.cat([-x[:, :, :, d_2:], x[:, :, :, :d_2]], dim=-1)
            rx = (x * idx_theta2.cos()[None, :, None, :]) + (neg_half_x * idx_theta2.sin()[None, :, None, :])
            return rx

    class SelfAttention(nn.Module):
        def __init__(self, d_model, n_heads, d_k, is_causal):
            super().__init__()
            self.is_causal = is_causal
            self.n_heads = n_heads
            self.d_k = d_k
            self.scale = 1 / math.sqrt(self.d_k)
            self.query = nn.Linear(d_model, n_heads * d_k)
            self.key = nn.Linear(d_model, n_heads * d_k)
            self.value = nn.Linear(d_model, n_heads * d_k)
            self.norm = nn.LayerNorm(d_model)
            self.softmax = nn.Softmax(dim=-1)
            self.rotary_pe = RotaryPositionalEmbeddings(self.d_k)
            self.output = nn.Linear(n_heads * d_k, d_model)

        def mask_attention(self, attn):
            if not self.is_causal:
                return attn
            mask = torch.tril(attn.new_ones(attn.shape[-2:]))
            return attn.masked_fill(mask == 0, float('-inf'))

        def forward(self, h):
            h_res = h
            h = self.norm(h)
            mh_shape = (*h.shape[:-1], self.n_heads, self.d_k)
            q = self.query(h).view(mh_shape)
            k = self.key(h).view(mh_shape)
            v = self.value(h).view(mh_shape)
            q = self.rotary_pe(q)
            k = self.rotary_pe(k)
            attn = torch.einsum('bihd,bjhd->bhij', q, k)
            attn = attn * self.scale
            attn = self.mask_attention(attn)
            attn = self.softmax(attn)
            h = torch.einsum("bhij,bjhd->bihd", attn, v)
            h = h.reshape(*h.shape[:-2], -1)
            h = self.output(h)
            return h + h_res

    class CrossAttention(nn.Module):
        def __init__(self, d_model, n_heads, d_k):
            super().__init__()
            self.n_heads = n_heads
            self.d_k = d_k
            self.scale = 1 / math.sqrt(self.d_k)
            self.query = nn.Linear(d_model, n_heads * d_k)
            self.key = nn.Linear(d_model, n_heads * d_k)
            self.value = nn.Linear(d_model, n_heads * d_k)
            self.norm = nn.LayerNorm(d_model)
            self.softmax = nn.Softmax(dim=-1)
            self.output = nn.Linear(n_heads * d_k, d_model)

        def forward(self, e, h):
            e_res = e
            e = self.norm(e)
            q = self.query(e).view(*e.shape[:-1], self.n_heads, self.d_k)
            k = self.key(h).view(*h.shape[:-1], self.n_heads, self.d_k)
            v = self.value(h).view(*h.shape[:-1], self.n_heads, self.d_k)
            attn = torch.einsum('bcnihd,bcjhd->bcnhij', q, k)
            attn = attn * self.scale
            attn = self.softmax(attn)
            e = torch.einsum("bcnhij,bcjhd->bcnihd", attn, v)
            e = e.reshape(*e.shape[:-2], -1)
            e = self.output(e)
            return e + e_res

    class ChunkedCrossAttention(nn.Module):
        def __init__(self, d_model, n_heads, d_k, chunk_len):
            super().__init__()
            self.chunk_len = chunk_len
            self.n_heads = n_heads
            self.d_k = d_k
            self.scale = 1 / math.sqrt(self.d_k)
            self.query = nn.Linear(d_model, n_heads * d_k)
            self.key = nn.Linear(d_model, n_heads * d_k)
            self.value = nn.Linear(d_model, n_heads * d_k)
            self.norm = nn.LayerNorm(d_model)
            self.softmax = nn.Softmax(dim=-1)
            self.output = nn.Linear(n_heads * d_k, d_model)

        def forward(self, h, e):
            batch_size, chunks, neighbors, neighbor_len, d_model = e.shape
            if chunks == 0:
                return h
            h_res = h
            h = h[:, self.chunk_len - 1:]
            h = self.norm(h)
            if h.shape[1] < chunks * self.chunk_len:
                h = torch.cat((h, h.new_zeros(batch_size, chunks * self.chunk_len - h.shape[1], d_model)), dim=1)
            h = h.reshape(batch_size, chunks, self.chunk_len, d_model)
            q = self.query(h).view(*h.shape[:-1], self.n_heads, self.d_k)
            k = self.key(e).view(*e.shape[:-1], self.n_heads, self.d_k)
            v = self.value(e).view(*e.shape[:-1], self.n_heads, self.d_k)
            attn = torch.einsum('bcihd,bcnjhd->bchinj', q, k)
            attn = attn * self.scale
            attn = self.softmax(attn.view(*attn.shape[:-2], -1)).view(attn.shape)
            h = torch.einsum("bchinj,bcnjhd->bcihd", attn, v)
            h = h.reshape(batch_size, chunks * self.chunk_len, -1)
            h = self.output(h)
            h = torch.cat((h.new_zeros(batch_size, self.chunk_len - 1, d_model), h), dim=1)
            return h[:, :h_res.shape[1]] + h_res

    class FeedForward(nn.Module):
        def __init__(self, d_model, d_ff):
            super().__init__()
            self.lin1 = nn.Linear(d_model, d_ff)
            self.lin2 = nn.Linear(d_ff, d_model)
            self.act = nn.ReLU()
            self.norm = nn.LayerNorm(d_model)

        def forward(self, h):
            h_res = h
            h = self.norm(h)
            h = self.lin1(h)
            h = self.act(h)
            h = self.lin2(h)
            return h + h_res

    class NearestNeighborEncoder(nn.Module):
        def __init__(self, chunk_len, n_layers, ca_layers, d_model, n_heads, d_k, d_ff):
            super().__init__()
            self.ca_layers = ca_layers
            self.chunk_len = chunk_len
            self.ca = nn.ModuleList([CrossAttention(d_model, n_heads, d_k) for _ in range(len(ca_layers))])
            self.attn = nn.ModuleList([SelfAttention(d_model, n_heads, d_k, is_causal=False) for _ in range(n_layers)])
            self.ffw = nn.ModuleList([FeedForward(d_model, d_ff) for _ in range(n_layers)])
            self.norm_h = nn.LayerNorm(d_model)

        def forward(self, e, h):
            batch_size, chunks, neighbors, neighbor_len, d_model = e.shape
            h_split = h[:, :self.chunk_len * chunks, :].reshape(batch_size, chunks, self.chunk_len, d_model)
            h_split = self.norm_h(h_split)
            p_ca = 0
            for p in range(len(self.attn)):
                e = self.attn[p](e.view(-1, neighbor_len, d_model)).view(e.shape)
                if p in self.ca_layers:
                    e = self.ca[p_ca](e, h_split)
                    p_ca += 1
                e = self.ffw[p](e)
            return e

    class RetroModel(nn.Module):
        def __init__(self, n_vocab, d_model, n_layers, ca_layers, chunk_len, n_heads, d_k, d_ff, encoder):
            super().__init__()
            self.ca_layers = ca_layers
            self.encoder = encoder
            self.emb = nn.Embedding(n_vocab, d_model)
            self.cca = nn.ModuleList(
                [ChunkedCrossAttention(d_model, n_heads, d_k, chunk_len) for _ in range(len(ca_layers))])
            self.attn = nn.ModuleList([SelfAttention(d_model, n_heads, d_k, is_causal=True) for _ in range(n_layers)])
            self.ffw = nn.ModuleList([FeedForward(d_model, d_ff) for _ in range(n_layers)])
            self.read = nn.Linear(d_model, n_vocab)
            self.norm_e = nn.LayerNorm(d_model)

        def forward(self, x, ret):
            h = self.emb(x)
            ret_emb = self.emb(ret)
            p_ca = 0
            for p in range(len(self.attn)):
                h = self.attn[p](h)
                if self.ca_layers and p == min(self.ca_layers):
                    e = self.encoder(ret_emb, h)
                    e = self.norm_e(e)
                if p in self.ca_layers:
                    h = self.cca[p_ca](h, e)
                    p_ca += 1
                h = self.ffw[p](h)
            return self.read(h)

    chunk_len, d_model, d_ff, n_heads, d_k = 4, 8, 16, 2, 4
    return RetroModel(7, d_model, 4, {1, 3}, chunk_len, n_heads, d_k, d_ff,
                      encoder=NearestNeighborEncoder(chunk_len, 2, {1}, d_model, n_heads, d_k, d_ff)).double()


def retro_mlm_program(m, weights):
    torch = m.torch

    class MLM:
        def __init__(self, *, padding_token, mask_token, no_mask_tokens, n_tokens, masking_prob=0.15,
                     randomize_prob=0.1, no_change_prob=0.1):
            self.n_tokens = n_tokens
            self.no_change_prob = no_change_prob
            self.randomize_prob = randomize_prob
            self.masking_prob = masking_prob
            self.no_mask_tokens = no_mask_tokens + [padding_token, mask_token]
            self.padding_token = padding_token
            self.mask_token = mask_token

        def __call__(self, x):
            full_mask = torch.rand(x.shape, device=x.device) < self.masking_prob
            for t in self.no_mask_tokens:
                full_mask &= x != t
            unchanged = full_mask & (torch.rand(x.shape, device=x.device) < self.no_change_prob)
            random_token_mask = full_mask & (torch.rand(x.shape, device=x.device) < self.randomize_prob)
            random_token_idx = torch.nonzero(random_token_mask, as_tuple=True)
            random_tokens = torch.randint(0, self.n_tokens, (len(random_token_idx[0]),), device=x.device)
            mask = full_mask & ~random_token_mask & ~unchanged
            y = x.clone()
            x.masked_fill_(mask, self.mask_token)
            x[random_token_idx] = random_tokens
            y.masked_fill_(~full_mask, self.padding_token)
            return x, y

    model = load(m, make_retro(m), weights)
    rng = np.random.default_rng(19)
    x = torch.tensor(rng.integers(2, 7, (3, 10)))
    ret = torch.tensor(rng.integers(2, 7, (3, 2, 2, 6)))  # (batch, chunks, neighbors, neighbor_len)
    torch.manual_seed(5)
    mlm = MLM(padding_token=0, mask_token=1, no_mask_tokens=[6], n_tokens=7, masking_prob=0.4,
              randomize_prob=0.3, no_change_prob=0.2)
    masked, target = mlm(x.clone())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(3):
        logits = model(masked, ret)
        loss = m.F.cross_entropy(logits.view(-1, 7), target.view(-1), ignore_index=0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    logits = model(x, ret)
    emb_grad = torch.autograd.grad(logits[:, 2].sum(), model.emb.weight)[0]
    return {"masked": masked, "target": target, "losses": losses, "logits": logits, "emb_grad": emb_grad, "x": x}


def test_retro_with_mlm_masking():
    weights = weights_of(make_retro)
    ours, _ = run_both(retro_mlm_program, weights, rtol=1e-8, atol=1e-10)
    x, masked, target = ours["x"], ours["masked"], ours["target"]
    full = target != 0
    assert full.any() and np.all(target[full] == x[full]) and np.all(x[full] != 6)
    assert np.all(masked[~full] == x[~full])
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# labml_nn/rl/dqn: a dueling double-Q network with prioritised replay's importance weights
# ----------------------------------------------------------------------------------------------


def make_dqn(m):
    nn = m.nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(
                nn.Conv2d(in_channels=4, out_channels=8, kernel_size=4, stride=2), nn.ReLU(),
                nn.Conv2d(in_channels=8, out_channels=8, kernel_size=3, stride=1), nn.ReLU(),
            )
            self.lin = nn.Linear(in_features=2 * 2 * 8, out_features=32)
            self.activation = nn.ReLU()
            self.state_value = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1))
            self.action_value = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))

        def forward(self, obs):
            h = self.conv(obs)
            h = h.reshape((-1, 2 * 2 * 8))
            h = self.activation(self.lin(h))
            action_value = self.action_value(h)
            state_value = self.state_value(h)
            action_score_centered = action_value - action_value.mean(dim=-1, keepdim=True)
            q = state_value + action_score_centered
            return q

    return Model()


def dqn_program(m, weights):
    torch, nn = m.torch, m.nn

    class QFuncLoss(nn.Module):
        def __init__(self, gamma):
            super().__init__()
            self.gamma = gamma
            self.huber_loss = nn.SmoothL1Loss(reduction='none')

        def forward(self, q, action, double_q, target_q, done, reward, weights):
            q_sampled_action = q.gather(-1, action.to(torch.long).unsqueeze(-1)).squeeze(-1)
            with torch.no_grad():
                best_next_action = torch.argmax(double_q, -1)
                best_next_q_value = target_q.gather(-1, best_next_action.unsqueeze(-1)).squeeze(-1)
                q_update = reward + self.gamma * best_next_q_value * (1 - done)
                td_error = q_sampled_action - q_update
            losses = self.huber_loss(q_sampled_action, q_update)
            loss = torch.mean(weights * losses)
            return td_error, loss

    model = load(m, make_dqn(m), weights)
    target_model = load(m, make_dqn(m), weights)
    rng = np.random.default_rng(20)
    obs = rng.integers(0, 255, (16, 4, 10, 10)).astype(np.uint8)
    next_obs = rng.integers(0, 255, (16, 4, 10, 10)).astype(np.uint8)
    samples = {'obs': obs, 'next_obs': next_obs, 'action': rng.integers(0, 4, 16).astype(np.int32),
               'reward': rng.standard_normal(16).astype(np.float32), 'done': rng.random(16) < 0.3,
               'weights': rng.uniform(0.3, 1, 16).astype(np.float32)}
    loss_func = QFuncLoss(0.99)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = {"td": [], "losses": []}
    obs_to_torch = lambda o: torch.tensor(o, dtype=torch.float32) / 255.
    for step in range(4):
        with torch.no_grad():
            double_q = model(obs_to_torch(samples['next_obs']))
            target_q = target_model(obs_to_torch(samples['next_obs']))
        q = model(obs_to_torch(samples['obs']))
        td_errors, loss = loss_func(q, torch.tensor(samples['action'], dtype=torch.int32), double_q, target_q,
                                    torch.tensor(samples['done'], dtype=torch.float32),
                                    torch.tensor(samples['reward']), torch.tensor(samples['weights']))
        new_priorities = np.abs(td_errors.cpu().numpy()) + 1e-6
        for pg in optimizer.param_groups:
            pg['lr'] = 1e-3
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
        optimizer.step()
        if step == 1:
            target_model.load_state_dict(model.state_dict())
        out["td"].append(new_priorities)
        out["losses"].append(loss.item())
    out["q"] = model(obs_to_torch(obs))
    return out


def test_dqn_double_q():
    weights = weights_of(make_dqn)
    ours, _ = run_both(dqn_program, weights, rtol=1e-5, atol=1e-6)
    assert ours["losses"][-1] < ours["losses"][0]
    assert all(np.all(td > 0) for td in ours["td"])


# ----------------------------------------------------------------------------------------------
# labml_nn/gan/cycle_gan: CycleGAN (reflect-padded convolutions, instance norm, in-place ReLUs, a
# replay buffer of generated images, LambdaLR decay), seeded and initialised by apply(weights_init_normal)
# ----------------------------------------------------------------------------------------------


def make_cycle_gan(m):
    torch, nn = m.torch, m.nn
    class GeneratorResNet(nn.Module):
        def __init__(self, input_channels, n_residual_blocks):
            super().__init__()
            out_features = 8
            layers = [
                nn.Conv2d(input_channels, out_features, kernel_size=7, padding=3, padding_mode='reflect'),
                nn.InstanceNorm2d(out_features),
                nn.ReLU(inplace=True),
            ]
            in_features = out_features
            for _ in range(2):
                out_features *= 2
                layers += [
                    nn.Conv2d(in_features, out_features, kernel_size=3, stride=2, padding=1),
                    nn.InstanceNorm2d(out_features),
                    nn.ReLU(inplace=True),
                ]
                in_features = out_features
            for _ in range(n_residual_blocks):
                layers += [ResidualBlock(out_features)]
            for _ in range(2):
                out_features //= 2
                layers += [
                    nn.Upsample(scale_factor=2),
                    nn.Conv2d(in_features, out_features, kernel_size=3, stride=1, padding=1),
                    nn.InstanceNorm2d(out_features),
                    nn.ReLU(inplace=True),
                ]
                in_features = out_features
            layers += [nn.Conv2d(out_features, input_channels, 7, padding=3, padding_mode='reflect'), nn.Tanh()]
            self.layers = nn.Sequential(*layers)
            self.apply(weights_init_normal)

        def forward(self, x):
            return self.layers(x)

    class ResidualBlock(nn.Module):
        def __init__(self, in_features):
            super().__init__()
            self.block = nn.Sequential(
                nn.Conv2d(in_features, in_features, kernel_size=3, padding=1, padding_mode='reflect'),
                nn.InstanceNorm2d(in_features),
                nn.ReLU(inplace=True),
                nn.Conv2d(in_features, in_features, kernel_size=3, padding=1, padding_mode='reflect'),
                nn.InstanceNorm2d(in_features),
                nn.ReLU(inplace=True),
            )

        def forward(self, x):
            return x + self.block(x)

    class DiscriminatorBlock(nn.Module):
        def __init__(self, in_filters, out_filters, normalize=True):
            super().__init__()
            layers = [nn.Conv2d(in_filters, out_filters, kernel_size=4, stride=2, padding=1)]
            if normalize:
                layers.append(nn.InstanceNorm2d(out_filters))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            self.layers = nn.Sequential(*layers)

        def forward(self, x):
            return self.layers(x)

    class Discriminator(nn.Module):
        def __init__(self, input_shape):
            super().__init__()
            channels, height, width = input_shape
            self.output_shape = (1, height // 2 ** 4, width // 2 ** 4)
            self.layers = nn.Sequential(
                DiscriminatorBlock(channels, 8, normalize=False),
                DiscriminatorBlock(8, 16),
                DiscriminatorBlock(16, 16),
                DiscriminatorBlock(16, 16),
                nn.ZeroPad2d((1, 0, 1, 0)),
                nn.Conv2d(16, 1, kernel_size=4, padding=1)
            )
            self.apply(weights_init_normal)

        def forward(self, img):
            return self.layers(img)

    def weights_init_normal(m):
        classname = m.__class__.__name__
        if classname.find("Conv") != -1:
            torch.nn.init.normal_(m.weight.data, 0.0, 0.02)

    return nn.ModuleDict(dict(generator_xy=GeneratorResNet(3, 1), generator_yx=GeneratorResNet(3, 1),
                              discriminator_x=Discriminator((3, 32, 32)), discriminator_y=Discriminator((3, 32, 32))))


def cycle_gan_program(m, weights, dtype):
    torch, nn = m.torch, m.nn
    import itertools
    import random

    class ReplayBuffer:
        def __init__(self, max_size=50):
            self.max_size = max_size
            self.data = []

        def push_and_pop(self, data):
            data = data.detach()
            res = []
            for element in data:
                if len(self.data) < self.max_size:
                    self.data.append(element)
                    res.append(element)
                else:
                    if random.uniform(0, 1) > 0.5:
                        i = random.randint(0, self.max_size - 1)
                        res.append(self.data[i].clone())
                        self.data[i] = element
                    else:
                        res.append(element)
            return torch.stack(res)


    torch.manual_seed(0)
    random.seed(0)
    models = load(m, make_cycle_gan(m), weights)  # (the same initial weights in both libraries)
    generator_xy, generator_yx = models.generator_xy, models.generator_yx
    discriminator_x, discriminator_y = models.discriminator_x, models.discriminator_y
    dtype = getattr(torch, dtype)
    for model in (generator_xy, generator_yx, discriminator_x, discriminator_y):
        model.to(dtype)  # (their .to(self.device))
    generator_optimizer = torch.optim.Adam(itertools.chain(generator_xy.parameters(), generator_yx.parameters()),
                                           lr=2e-4, betas=(0.5, 0.999))
    discriminator_optimizer = torch.optim.Adam(itertools.chain(discriminator_x.parameters(), discriminator_y.parameters()),
                                               lr=2e-4, betas=(0.5, 0.999))
    epochs, decay_start = 4, 2
    decay_epochs = epochs - decay_start
    generator_lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
        generator_optimizer, lr_lambda=lambda e: 1.0 - max(0, e - decay_start) / decay_epochs)
    discriminator_lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
        discriminator_optimizer, lr_lambda=lambda e: 1.0 - max(0, e - decay_start) / decay_epochs)
    gan_loss, cycle_loss, identity_loss = torch.nn.MSELoss(), torch.nn.L1Loss(), torch.nn.L1Loss()
    gen_x_buffer, gen_y_buffer = ReplayBuffer(3), ReplayBuffer(3)
    data_x, data_y = (torch.rand(2, 2, 3, 32, 32) * 2 - 1).to(dtype), (torch.rand(2, 2, 3, 32, 32) * 2 - 1).to(dtype)
    out = {"g": [], "d": [], "lr": []}
    for epoch in range(epochs):
        for data_x_, data_y_ in zip(data_x, data_y):
            true_labels = torch.ones(data_x_.size(0), *discriminator_x.output_shape, requires_grad=False, dtype=dtype)
            false_labels = torch.zeros(data_x_.size(0), *discriminator_x.output_shape, requires_grad=False, dtype=dtype)
            generator_xy.train()
            generator_yx.train()
            loss_identity = (identity_loss(generator_yx(data_x_), data_x_) + identity_loss(generator_xy(data_y_), data_y_))
            gen_y = generator_xy(data_x_)
            gen_x = generator_yx(data_y_)
            loss_gan = (gan_loss(discriminator_y(gen_y), true_labels) + gan_loss(discriminator_x(gen_x), true_labels))
            loss_cycle = (cycle_loss(generator_yx(gen_y), data_x_) + cycle_loss(generator_xy(gen_x), data_y_))
            loss_generator = (loss_gan + 10.0 * loss_cycle + 5. * loss_identity)
            generator_optimizer.zero_grad()
            loss_generator.backward()
            if "first_grads" not in out:
                out["first_grads"] = [p.grad.clone() for p in generator_xy.parameters()]
                out["first_loss"] = loss_generator.item()
            generator_optimizer.step()
            gen_x = gen_x_buffer.push_and_pop(gen_x)
            gen_y = gen_y_buffer.push_and_pop(gen_y)
            loss_discriminator = (gan_loss(discriminator_x(data_x_), true_labels) +
                                  gan_loss(discriminator_x(gen_x), false_labels) +
                                  gan_loss(discriminator_y(data_y_), true_labels) +
                                  gan_loss(discriminator_y(gen_y), false_labels))
            discriminator_optimizer.zero_grad()
            loss_discriminator.backward()
            discriminator_optimizer.step()
            out["g"].append(loss_generator.item())
            out["d"].append(loss_discriminator.item())
        generator_lr_scheduler.step()
        discriminator_lr_scheduler.step()
        out["lr"].append(generator_lr_scheduler.get_last_lr()[0])
    # (the convolutions' biases before instance norm change nothing and have no gradient in exact arithmetic, so
    # Adam moves them by lr times the sign of rounding noise: left out)
    out["weights"] = [p for name, p in generator_xy.named_parameters() if "weight" in name]
    out["buffer"] = torch.stack(gen_x_buffer.data)
    return out


def test_cycle_gan():
    # (in float64: this generator-into-generator gradient is ill-conditioned, float32 rounding moves the first
    # step's gradients by about 1% in either library, and a 1-ulp change of the initial weights as much)
    weights = weights_of(make_cycle_gan)
    ours, _ = run_both(cycle_gan_program, weights, "float64", rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["lr"], [2e-4, 2e-4, 1e-4, 0.0], atol=1e-12)
    assert ours["buffer"].shape == (3, 3, 32, 32)
    assert ours["g"][-1] < ours["g"][0]


# ----------------------------------------------------------------------------------------------
# labml_nn/helpers/datasets and experiments/nlp_autoregression: character data pipelines (an iterable
# sequential loader, an unbatched dataset with random offsets sampled with replacement and collated by
# transpose_batch) feeding labml's autoregressive transformer with sinusoidal positional encodings
# ----------------------------------------------------------------------------------------------

TEXT = ("First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. First Citizen: You are all "
        "resolved rather to die than to famish? All: Resolved. resolved. First Citizen: First, you know Caius "
        "Marcius is chief enemy to the people. All: We know't, we know't. First Citizen: Let us kill him, and we'll "
        "have corn at our own price.")


def make_nlp_model(m):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)

    def get_positional_encoding(d_model, max_len=5000):
        encodings = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float32).unsqueeze(1)
        two_i = torch.arange(0, d_model, 2, dtype=torch.float32)
        div_term = torch.exp(two_i * -(math.log(10000.0) / d_model))
        encodings[:, 0::2] = torch.sin(position * div_term)
        encodings[:, 1::2] = torch.cos(position * div_term)
        encodings = encodings.unsqueeze(1).requires_grad_(False)
        return encodings

    class EmbeddingsWithPositionalEncoding(nn.Module):
        def __init__(self, d_model, n_vocab, max_len=5000):
            super().__init__()
            self.linear = nn.Embedding(n_vocab, d_model)
            self.d_model = d_model
            self.register_buffer('positional_encodings', get_positional_encoding(d_model, max_len))

        def forward(self, x):
            pe = self.positional_encodings[:x.shape[0]].requires_grad_(False)
            return self.linear(x) * math.sqrt(self.d_model) + pe

    class Encoder(nn.Module):
        def __init__(self, layer, n_layers):
            super().__init__()
            self.layers = t.clone_module_list(layer, n_layers)
            self.norm = nn.LayerNorm([layer.size])

        def forward(self, x, mask):
            for layer in self.layers:
                x = layer(x=x, mask=mask)
            return self.norm(x)

    class AutoregressiveTransformer(nn.Module):
        def __init__(self, encoder, src_embed, generator):
            super().__init__()
            self.src_embed = src_embed
            self.encoder = encoder
            self.generator = generator
            self.mask = None

        def forward(self, x):
            if self.mask is None or self.mask.size(0) != len(x):
                self.mask = t.subsequent_mask(len(x)).to(x.device)
            x = self.src_embed(x)
            x = self.encoder(x, self.mask)
            x = self.generator(x)
            return x, None

    d_model, n_vocab = 16, len(sorted(set(TEXT)))
    layer = t.TransformerLayer(d_model=d_model, self_attn=t.MultiHeadAttention(4, d_model, 0.),
                               feed_forward=t.FeedForward(d_model, 32, 0., nn.GELU(), True, False, False, False),
                               dropout_prob=0.)
    return AutoregressiveTransformer(Encoder(layer, 2), EmbeddingsWithPositionalEncoding(d_model, n_vocab, 64),
                                     nn.Linear(d_model, n_vocab)).double()


def nlp_pipeline_program(m, weights, replacement):
    torch, nn = m.torch, m.nn
    import random

    class TextDataset:
        standard_tokens = []

        def __init__(self, tokenizer, train, valid):
            self.train, self.valid, self.tokenizer = train, valid, tokenizer
            self.n_tokens = len(self.standard_tokens)
            self.stoi = {t: i for i, t in enumerate(self.standard_tokens)}
            tokens = self.tokenizer(self.train) + self.tokenizer(self.valid)
            tokens = sorted(list(set(tokens)))
            for t in tokens:
                self.stoi[t] = self.n_tokens
                self.n_tokens += 1
            self.itos = [''] * self.n_tokens
            for t, n in self.stoi.items():
                self.itos[n] = t

        def text_to_i(self, text):
            tokens = self.tokenizer(text)
            return torch.tensor([self.stoi[s] for s in tokens if s in self.stoi], dtype=torch.long)

    class SequentialDataLoader(m.data.IterableDataset):
        def __init__(self, *, text, dataset, batch_size, seq_len):
            self.seq_len = seq_len
            data = dataset.text_to_i(text)
            n_batch = data.shape[0] // batch_size
            data = data.narrow(0, 0, n_batch * batch_size)
            data = data.view(batch_size, -1).t().contiguous()
            self.data = data

        def __len__(self):
            return self.data.shape[0] // self.seq_len

        def __iter__(self):
            self.idx = 0
            return self

        def __next__(self):
            if self.idx >= self.data.shape[0] - 1:
                raise StopIteration()
            seq_len = min(self.seq_len, self.data.shape[0] - 1 - self.idx)
            i = self.idx + seq_len
            data = self.data[self.idx: i]
            target = self.data[self.idx + 1: i + 1]
            self.idx = i
            return data, target

    class SequentialUnBatchedDataset(m.data.Dataset):
        def __init__(self, *, text, dataset, seq_len, is_random_offset=True):
            self.is_random_offset = is_random_offset
            self.seq_len = seq_len
            self.data = dataset.text_to_i(text)

        def __len__(self):
            return (self.data.shape[0] - 1) // self.seq_len

        def __getitem__(self, idx):
            start = idx * self.seq_len
            assert start + self.seq_len + 1 <= self.data.shape[0]
            if self.is_random_offset:
                start += random.randint(0, min(self.seq_len - 1, self.data.shape[0] - (start + self.seq_len + 1)))
            end = start + self.seq_len
            data = self.data[start: end]
            target = self.data[start + 1: end + 1]
            return data, target

    def transpose_batch(batch):
        transposed_data = list(zip(*batch))
        src = torch.stack(transposed_data[0], dim=1)
        tgt = torch.stack(transposed_data[1], dim=1)
        return src, tgt

    class Accuracy:
        def __init__(self, ignore_index=-1):
            self.ignore_index = ignore_index
            self.correct, self.count = 0, 0

        def __call__(self, output, target):
            output = output.view(-1, output.shape[-1])
            target = target.view(-1)
            pred = output.argmax(dim=-1)
            mask = target == self.ignore_index
            pred.masked_fill_(mask, self.ignore_index)
            n_masked = mask.sum().item()
            self.correct += pred.eq(target).sum().item() - n_masked
            self.count += len(target) - n_masked

    class CrossEntropyLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.loss = nn.CrossEntropyLoss()

        def forward(self, outputs, targets):
            return self.loss(outputs.view(-1, outputs.shape[-1]), targets.view(-1))

    split = int(len(TEXT) * .9)
    text = TextDataset(lambda x: list(x), TEXT[:split], TEXT[split:])
    model = load(m, make_nlp_model(m), weights)
    torch.manual_seed(0)
    random.seed(0)
    dataset = SequentialUnBatchedDataset(text=text.train, dataset=text, seq_len=12)
    sampler = m.data.RandomSampler(dataset, replacement=replacement)
    train_loader = m.data.DataLoader(dataset, batch_size=4, collate_fn=transpose_batch, sampler=sampler)
    valid_loader = SequentialDataLoader(text=text.valid, dataset=text, batch_size=2, seq_len=6)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98), eps=1e-9)
    loss_func, accuracy = CrossEntropyLoss(), Accuracy()
    out = {"losses": [], "batches": []}
    for epoch in range(2):
        model.train()
        for data, target in train_loader:
            output, *_ = model(data)
            loss = loss_func(output, target)
            accuracy(output, target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            optimizer.zero_grad()
            out["losses"].append(loss.item())
            out["batches"].append(data)
    model.eval()
    valid = []
    with torch.no_grad():
        for data, target in valid_loader:
            output, *_ = model(data)
            valid.append((loss_func(output, target).item(), tuple(data.shape)))
    out["valid"] = valid
    out["accuracy"] = accuracy.correct / accuracy.count
    out["n_tokens"], out["len"] = text.n_tokens, (len(dataset), len(valid_loader))
    # greedy sampling from a prompt, as their sample() does
    prompt = "First Citizen"
    data = text.text_to_i(prompt).unsqueeze(-1)
    with torch.no_grad():
        for i in range(8):
            output, *_ = model(data)
            output = output.argmax(dim=-1).squeeze()
            prompt += text.itos[output[-1]]
            data = torch.cat([data, output[-1:].unsqueeze(-1)])
    out["sample"] = prompt
    return out


@pytest.mark.parametrize("replacement", [False, True], ids=["shuffled", "with_replacement"])
def test_nlp_autoregression_pipeline(replacement):
    weights = weights_of(make_nlp_model)
    ours, _ = run_both(nlp_pipeline_program, weights, replacement, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    assert ours["len"] == ((len(TEXT[:int(len(TEXT) * .9)]) - 1) // 12, (len(TEXT) - int(len(TEXT) * .9)) // 2 // 6)
    assert all(shape[1] == 2 for _, shape in ours["valid"]) and ours["sample"].startswith("First Citizen")


# ----------------------------------------------------------------------------------------------
# labml_nn/unet and gan/wasserstein/gradient_penalty: a U-Net (valid-size crops, transposed
# convolutions) as the generator of a WGAN-GP critic step (double backward through it all)
# ----------------------------------------------------------------------------------------------


def make_unet_wgan(m):
    torch, nn = m.torch, m.nn

    def center_crop(img, output_size):  # torchvision.transforms.functional.center_crop's arithmetic
        image_height, image_width = img.shape[-2:]
        crop_height, crop_width = output_size
        crop_top = int(round((image_height - crop_height) / 2.0))
        crop_left = int(round((image_width - crop_width) / 2.0))
        return img[..., crop_top:crop_top + crop_height, crop_left:crop_left + crop_width]

    class DoubleConvolution(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.first = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
            self.act1 = nn.ReLU()
            self.second = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
            self.act2 = nn.ReLU()

        def forward(self, x):
            x = self.first(x)
            x = self.act1(x)
            x = self.second(x)
            return self.act2(x)

    class DownSample(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            return self.pool(x)

    class UpSample(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)

        def forward(self, x):
            return self.up(x)

    class CropAndConcat(nn.Module):
        def forward(self, x, contracting_x):
            contracting_x = center_crop(contracting_x, [x.shape[2], x.shape[3]])
            x = torch.cat([x, contracting_x], dim=1)
            return x

    class UNet(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.down_conv = nn.ModuleList([DoubleConvolution(i, o) for i, o in [(in_channels, 4), (4, 8), (8, 8)]])
            self.down_sample = nn.ModuleList([DownSample() for _ in range(3)])
            self.middle_conv = DoubleConvolution(8, 16)
            self.up_sample = nn.ModuleList([UpSample(i, o) for i, o in [(16, 8), (8, 8), (8, 4)]])
            self.up_conv = nn.ModuleList([DoubleConvolution(i, o) for i, o in [(16, 8), (16, 8), (8, 4)]])
            self.concat = nn.ModuleList([CropAndConcat() for _ in range(3)])
            self.final_conv = nn.Conv2d(4, out_channels, kernel_size=1)

        def forward(self, x):
            pass_through = []
            for i in range(len(self.down_conv)):
                x = self.down_conv[i](x)
                pass_through.append(x)
                x = self.down_sample[i](x)
            x = self.middle_conv(x)
            for i in range(len(self.up_conv)):
                x = self.up_sample[i](x)
                x = self.concat[i](x, pass_through.pop())
                x = self.up_conv[i](x)
            x = self.final_conv(x)
            return x

    critic = nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(8, 16, 4, 2, 1),
                           nn.LeakyReLU(0.2, inplace=True), nn.Flatten(), nn.Linear(16 * 4 * 4, 1))
    return nn.ModuleDict(dict(generator=UNet(1, 1), critic=critic)).double()


def unet_wgan_program(m, weights):
    torch, nn = m.torch, m.nn

    class GradientPenalty(nn.Module):
        def forward(self, x, f):
            batch_size = x.shape[0]
            gradients, *_ = torch.autograd.grad(outputs=f, inputs=x, grad_outputs=f.new_ones(f.shape),
                                                create_graph=True)
            gradients = gradients.reshape(batch_size, -1)
            norm = gradients.norm(2, dim=-1)
            return torch.mean((norm - 1) ** 2)

    class DiscriminatorLoss(nn.Module):
        def forward(self, f_real, f_fake):
            return F.relu(1 - f_real).mean(), F.relu(1 + f_fake).mean()

    F = nn.functional
    models = load(m, make_unet_wgan(m), weights)
    generator, critic = models.generator, models.critic
    rng = np.random.default_rng(21)
    real = torch.tensor(rng.uniform(-1, 1, (4, 1, 16, 16)))  # (the U-Net crops 20x20 noise to 16x16)
    noise = torch.tensor(rng.standard_normal((4, 1, 20, 20)))
    alpha = torch.tensor(rng.uniform(0, 1, (4, 1, 1, 1)))
    c_opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.9))
    g_opt = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.9))
    gradient_penalty, discriminator_loss = GradientPenalty(), DiscriminatorLoss()
    out = {"c": [], "g": [], "gp": []}
    for step in range(3):
        fake = torch.tanh(generator(noise))
        interpolates = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
        loss_true, loss_false = discriminator_loss(critic(real), critic(fake.detach()))
        gp = gradient_penalty(interpolates, critic(interpolates))
        c_loss = loss_true + loss_false + 10 * gp
        c_opt.zero_grad()
        c_loss.backward()
        c_opt.step()
        # the generator's step, with the penalty through the generator itself (double backward through the U-Net)
        fake = torch.tanh(generator(noise))
        g_loss = -critic(fake).mean() + 0.1 * gradient_penalty(noise.requires_grad_(True), generator(noise).sum((1, 2, 3)))
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()
        noise = noise.detach()
        out["c"].append(c_loss.item())
        out["g"].append(g_loss.item())
        out["gp"].append(gp.item())
    out["w"] = generator.up_sample[0].up.weight
    out["fake"] = fake
    return out


def test_unet_wgan_gradient_penalty():
    weights = weights_of(make_unet_wgan)
    ours, _ = run_both(unet_wgan_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["fake"].shape == (4, 1, 16, 16) and all(g >= 0 for g in ours["gp"])


# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/gpt and distillation: GPT's initialisation by apply(_init_weights), its weight-decay
# groups built from named_modules x named_parameters, then a smaller student distilled from it with
# KLDivLoss(log_target=True) on temperature-softened logits
# ----------------------------------------------------------------------------------------------


def gpt_distillation_program(m, weights):
    torch, nn = m.torch, m.nn

    def _init_weights(module):
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            return
        module.weight.data.normal_(mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    model = load(m, make_nlp_model(m), weights)
    torch.manual_seed(0)
    model.apply(_init_weights)
    decay = set()
    for mn, mod in model.named_modules():
        for pn, p in mod.named_parameters():
            fpn = f'{mn}.{pn}' if mn else pn  # full param name
            if fpn.endswith('weight') and isinstance(mod, nn.Linear):
                decay.add(fpn)
    param_dict = {pn: p for pn, p in model.named_parameters()}
    no_decay = set(param_dict.keys()) - decay
    opt_groups = [
        {"params": [param_dict[pn] for pn in sorted(list(decay))], "weight_decay": 0.1},
        {"params": [param_dict[pn] for pn in sorted(list(no_decay))], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(opt_groups, lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    stoi = {c: i for i, c in enumerate(sorted(set(TEXT)))}
    data = torch.tensor([stoi[c] for c in TEXT], dtype=torch.long)
    batch = torch.stack([data[i:i + 17] for i in range(0, 160, 20)], dim=1)  # (seq_len + 1, batch)
    x, y = batch[:-1], batch[1:]
    n_vocab = len(stoi)
    losses = []
    for _ in range(4):
        output, *_ = model(x)
        loss = nn.functional.cross_entropy(output.view(-1, n_vocab), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # distillation: a student with one layer learns the teacher's softened distribution and the labels
    student = make_nlp_model(m)
    student.encoder.layers = student.encoder.layers[:1]
    torch.manual_seed(1)
    student.apply(_init_weights)
    kl_div_loss = nn.KLDivLoss(log_target=True)
    loss_func = nn.CrossEntropyLoss()
    temperature, soft_targets_weight, label_loss_weight = 5., 100., 0.5
    s_opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    model.eval()
    s_losses = []
    for _ in range(4):
        with torch.no_grad():
            large_logits, *_ = model(x)
        output, *_ = student(x)
        soft_targets = nn.functional.log_softmax(large_logits / temperature, dim=-1)
        soft_prob = nn.functional.log_softmax(output / temperature, dim=-1)
        soft_targets_loss = kl_div_loss(soft_prob, soft_targets)
        label_loss = loss_func(output.view(-1, n_vocab), y.reshape(-1))
        loss = soft_targets_weight * soft_targets_loss + label_loss_weight * label_loss
        s_opt.zero_grad()
        loss.backward()
        s_opt.step()
        s_losses.append((loss.item(), soft_targets_loss.item()))
    return {"decay": sorted(decay), "no_decay": sorted(no_decay), "losses": losses, "student": s_losses,
            "emb": model.src_embed.linear.weight,
            "student_layers": len(student.encoder.layers)}


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss:UserWarning")
def test_gpt_weight_decay_groups_and_distillation():
    weights = weights_of(make_nlp_model)
    ours, _ = run_both(gpt_distillation_program, weights, rtol=1e-8, atol=1e-10)
    assert all(n.endswith("weight") and "norm" not in n for n in ours["decay"])
    assert "src_embed.linear.weight" in ours["no_decay"] and "generator.bias" in ours["no_decay"]
    assert ours["losses"][-1] < ours["losses"][0] and ours["student"][-1][0] < ours["student"][0][0]


# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/compressive: the Compressive Transformer over segments, its memories compressed
# by a strided Conv1d and trained by the attention-reconstruction loss (detached weights through F.linear
# and F.layer_norm(x, ln.normalized_shape, ...))
# ----------------------------------------------------------------------------------------------


def make_compressive(m):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)
    positional = make_positional_attention(m)  # for Transformer-XL's relative attention
    RelativeMultiHeadAttention = type(positional[0].xl)

    class Conv1dCompression(nn.Module):
        def __init__(self, compression_rate, d_model):
            super().__init__()
            self.conv = nn.Conv1d(d_model, d_model, kernel_size=compression_rate, stride=compression_rate)

        def forward(self, mem):
            mem = mem.permute(1, 2, 0)
            c_mem = self.conv(mem)
            return c_mem.permute(2, 0, 1)

    class CompressiveTransformerLayer(nn.Module):
        def __init__(self, *, d_model, self_attn, feed_forward, dropout_prob, compress):
            super().__init__()
            self.compress = compress
            self.size = d_model
            self.self_attn = self_attn
            self.feed_forward = feed_forward
            self.dropout = nn.Dropout(dropout_prob)
            self.norm_self_attn = nn.LayerNorm([d_model])
            self.norm_ff = nn.LayerNorm([d_model])

        def concat_memory(self, z, mem, c_mem):
            if mem is None:
                return z
            if c_mem is not None:
                mem = torch.cat((c_mem, mem), dim=0)
            mem = self.norm_self_attn(mem)
            return torch.cat((mem, z), dim=0)

        def forward(self, *, x, mem, c_mem, mask):
            z = self.norm_self_attn(x)
            m_z = self.concat_memory(z, mem, c_mem)
            self_attn = self.self_attn(query=z, key=m_z, value=m_z, mask=mask)
            x = x + self.dropout(self_attn)
            z = self.norm_ff(x)
            ff = self.feed_forward(z)
            x = x + self.dropout(ff)
            return x

    class CompressiveTransformer(nn.Module):
        def __init__(self, layer, n_layers):
            super().__init__()
            self.layers = t.clone_module_list(layer, n_layers)
            self.norm = nn.LayerNorm([layer.size])

        def forward(self, x, mem, c_mem, mask):
            new_mem = []
            for i, layer in enumerate(self.layers):
                new_mem.append(x.detach())
                m = mem[i] if mem else None
                cm = c_mem[i] if c_mem else None
                x = layer(x=x, mem=m, c_mem=cm, mask=mask)
            return self.norm(x), new_mem

    class AutoregressiveModel(nn.Module):
        def __init__(self, n_vocab, d_model, transformer):
            super().__init__()
            self.src_embed = nn.Embedding(n_vocab, d_model)
            self.transformer = transformer
            self.generator = nn.Linear(d_model, n_vocab)
            self.mask_x = None
            self.mask_mem = None

        def forward(self, x, mem, c_mem):
            m_len = (len(mem[0]) if mem else 0) + (len(c_mem[0]) if c_mem else 0)
            if self.mask_x is None or self.mask_x.shape[0] < len(x):
                self.mask_x = t.subsequent_mask(len(x))
            if self.mask_mem is None or self.mask_mem.shape[1] < m_len or self.mask_mem.shape[0] < len(x):
                self.mask_mem = self.mask_x.new_ones(len(x), m_len, 1)
            if m_len:
                mask = torch.cat((self.mask_mem[:len(x), :m_len], self.mask_x[:len(x), :len(x)]), dim=1)
            else:
                mask = self.mask_x[:len(x), :len(x)]
            x = self.src_embed(x)
            res, mem = self.transformer(x, mem, c_mem, mask)
            res = self.generator(res)
            return res, mem

    d_model, heads = 8, 2
    layer = CompressiveTransformerLayer(d_model=d_model, self_attn=RelativeMultiHeadAttention(heads, d_model, 0.),
                                        feed_forward=t.FeedForward(d_model, 16, 0.), dropout_prob=0.,
                                        compress=Conv1dCompression(2, d_model))
    return AutoregressiveModel(9, d_model, CompressiveTransformer(layer, 2)).double()


def compressive_program(m, weights):
    torch, nn, F = m.torch, m.nn, m.F

    class AttentionReconstructionLoss:
        def __init__(self, layers):
            self.layers = layers
            self.loss_func = nn.MSELoss()

        def prepare_for_attn(self, pmha, x):
            head_shape = x.shape[:-1]
            weight = pmha.linear.weight.detach()
            bias = pmha.linear.bias.detach() if pmha.linear.bias is not None else None
            x = F.linear(x, weight, bias)
            x = x.view(*head_shape, pmha.heads, pmha.d_k)
            return x

        def attn(self, layer, query, key, value):
            query = self.prepare_for_attn(layer.query, query)
            key = self.prepare_for_attn(layer.key, key)
            value = self.prepare_for_attn(layer.value, value)
            scores = torch.einsum('ibhd,jbhd->ijbh', query, key)
            scores *= layer.scale
            attn = layer.softmax(scores)
            return torch.einsum("ijbh,jbhd->ibhd", attn, value)

        def norm(self, ln, x):
            weight = ln.weight.detach() if ln.weight is not None else None
            bias = ln.bias.detach() if ln.bias is not None else None
            return F.layer_norm(x, ln.normalized_shape, weight, bias, ln.eps)

        def calc_loss(self, layer, h, mem):
            h = h.detach()
            mem = mem.detach()
            c_mem = layer.compress(mem)
            h = self.norm(layer.norm_self_attn, h)
            mem = self.norm(layer.norm_self_attn, mem)
            c_mem = self.norm(layer.norm_self_attn, c_mem)
            attn_mem = self.attn(layer.self_attn, h, mem, mem)
            attn_cmem = self.attn(layer.self_attn, h, c_mem, c_mem)
            return self.loss_func(attn_cmem, attn_mem)

        def __call__(self, h, mem):
            losses = [self.calc_loss(layer, h[n], mem[n]) for n, layer in enumerate(self.layers)]
            return sum(losses)

    model = load(m, make_compressive(m), weights)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "pos" in name:
                p.copy_(torch.linspace(-0.3, 0.3, p.numel(), dtype=torch.float64).view(p.shape))
    reconstruction = AttentionReconstructionLoss(model.transformer.layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(22)
    segments = torch.tensor(rng.integers(0, 9, (5, 4, 3)))  # 5 segments of 4 tokens, batch 3
    targets = torch.tensor(rng.integers(0, 9, (5, 4, 3)))
    mem_len, c_mem_len, compression_rate = 4, 4, 2
    mem, c_mem = [], []
    out = {"losses": [], "ar": [], "mem_lens": []}
    for data, target in zip(segments, targets):
        output, new_mem = model(data, mem, c_mem)
        # merge the new memories, compressing what overflows mem_len (their merge_compress_memory)
        if mem:
            mem = [torch.cat((m_, x), dim=0) for m_, x in zip(mem, new_mem)]
        else:
            mem = new_mem
        ar_loss = torch.zeros((), dtype=torch.float64)
        if len(mem[0]) > mem_len:
            n_c_mem = (len(mem[0]) - mem_len + compression_rate - 1) // compression_rate
            n_old = n_c_mem * compression_rate
            mem_to_compress = [m_[:n_old] for m_ in mem]
            mem = [m_[n_old:] for m_ in mem]
            new_c_mem = [layer.compress(m_) for m_, layer in zip(mem_to_compress, model.transformer.layers)]
            c_mem = [torch.cat((c, nc), dim=0)[-c_mem_len:] for c, nc in zip(c_mem, new_c_mem)] if c_mem else new_c_mem
            c_mem = [c.detach() for c in c_mem]
            ar_loss = reconstruction(new_mem, mem_to_compress)
        loss = F.cross_entropy(output.view(-1, 9), target.view(-1)) + ar_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        out["losses"].append(loss.item())
        out["ar"].append(ar_loss.item())
        out["mem_lens"].append((len(mem[0]), len(c_mem[0]) if c_mem else 0))
    out["compress_w"] = model.transformer.layers[0].compress.conv.weight
    return out


def test_compressive_transformer():
    weights = weights_of(make_compressive)
    ours, _ = run_both(compressive_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["mem_lens"] == [(4, 0), (4, 2), (4, 4), (4, 4), (4, 4)]
    assert ours["ar"][0] == 0 and all(a > 0 for a in ours["ar"][1:])
