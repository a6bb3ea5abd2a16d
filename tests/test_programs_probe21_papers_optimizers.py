# ruff: noqa: B007, B008, B023, E501  (the programs are kept as their authors wrote them)
"""Paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them (labml_nn/...), run
as tests/probe21_papers_common.py says: optimizers: GenericAdaptiveOptimizer, WeightDecay, Adam, AMSGrad, RAdam,
AdaBelief, Noam (subclasses of ``Optimizer`` with ``@torch.no_grad()`` steps over ``self.state[p]``,
``param.data.addcdiv_``, ``torch.maximum(out=)``, state_dict resume, ``add_param_group``), AdamFP16 (float16
parameters, float32 state, ``param.data =``), AdamWarmupCosineDecay and Sophia."""

import copy
import importlib
import math
import types

import numpy as np
import pytest

from .pytorch_programs import assert_same, load, run_both, weights_of

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
