# ruff: noqa: B007, B008, B023, E701, E731, F841, UP006, UP008, UP030, UP032, UP035, UP045  (the programs are kept as their authors wrote them)
"""Optimizers as research code writes them, subclassing ``torch.optim.Optimizer`` (see
tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and data, comparing
losses, parameters and the optimizer's state. What probe6_optimizers (SAM, lonePatient's Lookahead) and
probe13_optim (PyTorch's own optimizers, their state dicts and schedulers) leave out:

- ASAM (SamsungLabs' wrapper: ``eps`` kept in its own ``defaultdict`` state, written by ``t_w[...] = p[...]``,
  the norm of ``torch.stack`` of per-tensor norms, ascent/descent steps around SGD).
- Lion as lucidrains' foreach version writes it (``_foreach_mul_``, ``_foreach_lerp_``, ``_foreach_sign_``,
  ``_foreach_add_`` with alpha), under a OneCycleLR that cycles its ``betas`` (a custom optimizer's key).
- Sophia-G (Liu et al.): tensor ``step`` counters, the Gauss-Newton-Bartlett Hessian estimate from labels
  sampled from the model's own logits (Gumbel noise from NumPy), ``step(bs=...)``; resumed from its state dict
  mid-run, also from an older version's checkpoint (steps saved as numbers), which its ``__setstate__``
  migrates when ``load_state_dict`` calls it.
- Hugging Face's Adafactor (factored row/column second moments, relative step from the parameter's RMS, update
  clipping, a 0-d Tensor ``alpha``), also on float16 parameters (a float32 copy, ``copy_`` back).
- Shampoo (pytorch-optimizer's: preconditioners per dimension of a conv kernel, inverse roots by ``torch.svd``,
  ``torch.eye(out=)``, ``transpose_``) and a variant taking the roots by ``torch.linalg.eigh``.
- Prodigy (D-Adaptation): ``d`` estimated in Python floats from ``torch.dot(...).item()`` over strided slices.
- Schedule-free AdamW (facebookresearch): ``optimizer.train()``/``eval()`` moving between the y and x
  sequences by ``lerp_``, both its foreach and its single-tensor paths, BatchNorm statistics recomputed.
- Keller Jordan's Muon with an auxiliary Adam (``use_muon`` groups, Newton-Schulz orthogonalisation on a
  custom optimizer; in float32, where the author casts to bfloat16, which chainrule does not build), NovoGrad
  (layer-wise 0-d second moments, ``torch.max(out=)``), a foreach LAMB with
  ``_foreach_norm``/``_foreach_maximum_`` and per-tensor trust ratios, and AdamW subclassed to centralise gradients
  before ``super().step()``.
- timm's Lookahead (slow weights kept in the base optimizer's state, state dict round trip mid-run), step
  hooks, state-dict hooks, ``add_param_group`` and removing a group mid-training.
- AdaBelief as its authors' package writes it (RAdam's rectification buffered per group, amsgrad's
  ``torch.max(out=)``, coupled and fixed weight decay, ``__setstate__``), and hypergradient descent (SGD-HD,
  Adam-HD: the learning rate a Tensor, PyTorch 1's ``add_(Number, Tensor)`` overloads) under StepLR.
- AdaHessian: Hutchinson's Hessian diagonal by ``torch.autograd.grad`` of the ``create_graph`` gradients inside
  the step (spatially averaged over conv kernels), ``grad.detach_()``, ``p.data = ...``.
- SWALR and AveragedModel over a custom optimizer, global step hooks handing its step new keyword arguments.
- SPSA (a zeroth-order optimizer with a loss closure), clipping its estimates with the helpers of
  ``torch.utils._foreach_utils`` (``_group_tensors_by_device_and_dtype``, ``_has_foreach_support``).
- A Shampoo keeping float64 factor matrices in nested state (a dict holding a tuple and a list), which PyTorch's
  load_state_dict casts to the parameter's float32 on resuming.

Every program's forward sums in float32 (conv, matmul) and most updates take a norm, sum or dot, whose summation
order differs between NumPy and PyTorch: chainrule and PyTorch are compared to a tolerance that each test states
with its reason (Shampoo in float64, to 1e-10); a run resumed from a state dict is compared with the straight run
bit for bit (Sophia-G, timm's Lookahead). Found and fixed (tests/test_probe18_optimizers_fixes.py):
``torch.utils._foreach_utils`` was missing; load_state_dict never called the optimizer's ``__setstate__``
(Sophia-G's migration of an old checkpoint); the Tensors inside a dict or tuple of a parameter's state kept
their dtype through load_state_dict (PyTorch casts them to the parameter's); a group added by
``add_param_group`` after LambdaLR, MultiplicativeLR, CyclicLR or CosineAnnealingWarmRestarts was made is
refused at their next step, as PyTorch's (chainrule's stepped on, leaving the new group's lr); PyTorch 1's
``add_(Number, Tensor)`` with a 0-d Tensor number (SGD-HD); a float16 ``F.linear`` of a 2-d non-contiguous input
(a convolution's flattened output here) rounds once, through addmm, as PyTorch's (it rounded twice)."""

import copy
import math
from collections import defaultdict

import numpy as np
import pytest

from .pytorch_programs import assert_same, load, pytorch, run_both, weights_of

TORCH = pytorch()


def net(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 3))


def batches(m, n=6, size=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n * size, 1, 6, 6)).astype(np.float32)
    y = ((X[:, 0, :3].mean((1, 2)) > 0).astype(np.int64) + (X[:, 0, 3:, :3].mean((1, 2)) > 0.1)).astype(np.int64)
    return [(m.torch.tensor(X[i * size:(i + 1) * size]), m.torch.tensor(y[i * size:(i + 1) * size]))
            for i in range(n)]


WEIGHTS = weights_of(net)


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


# ----------------------------------------------------------------------------------------------
# ASAM (SamsungLabs/ASAM)
# ----------------------------------------------------------------------------------------------


def asam_program(m, adaptive=True):
    torch, F, optim = m.torch, m.F, m.optim

    class SAM:
        def __init__(self, optimizer, model, rho=0.5, eta=0.01):
            self.optimizer = optimizer
            self.model = model
            self.rho = rho
            self.eta = eta
            self.state = defaultdict(dict)

        @torch.no_grad()
        def ascent_step(self):
            grads = []
            for n, p in self.model.named_parameters():
                if p.grad is None:
                    continue
                grads.append(torch.norm(p.grad, p=2))
            grad_norm = torch.norm(torch.stack(grads), p=2) + 1.e-16
            for n, p in self.model.named_parameters():
                if p.grad is None:
                    continue
                eps = self.state[p].get("eps")
                if eps is None:
                    eps = torch.clone(p).detach()
                    self.state[p]["eps"] = eps
                eps[...] = p.grad[...]
                eps.mul_(self.rho / grad_norm)
                p.add_(eps)
            self.optimizer.zero_grad()

        @torch.no_grad()
        def descent_step(self):
            for n, p in self.model.named_parameters():
                if p.grad is None:
                    continue
                p.sub_(self.state[p]["eps"])
            self.optimizer.step()
            self.optimizer.zero_grad()

    class ASAM(SAM):
        @torch.no_grad()
        def ascent_step(self):
            wgrads = []
            for n, p in self.model.named_parameters():
                if p.grad is None:
                    continue
                t_w = self.state[p].get("eps")
                if t_w is None:
                    t_w = torch.clone(p).detach()
                    self.state[p]["eps"] = t_w
                if 'weight' in n:
                    t_w[...] = p[...]
                    t_w.abs_().add_(self.eta)
                    p.grad.mul_(t_w)
                wgrads.append(torch.norm(p.grad, p=2))
            wgrad_norm = torch.norm(torch.stack(wgrads), p=2) + 1.e-16
            for n, p in self.model.named_parameters():
                if p.grad is None:
                    continue
                t_w = self.state[p].get("eps")
                if 'weight' in n:
                    p.grad.mul_(t_w)
                eps = t_w
                eps[...] = p.grad[...]
                eps.mul_(self.rho / wgrad_norm)
                p.add_(eps)
            self.optimizer.zero_grad()

    model = load(m, net(m), WEIGHTS)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    minimizer = (ASAM if adaptive else SAM)(optimizer, model, rho=0.5 if adaptive else 0.05, eta=0.01)
    losses = []
    for epoch in range(2):
        for inputs, targets in batches(m):
            # Ascent Step
            predictions = model(inputs)
            batch_loss = F.cross_entropy(predictions, targets)
            batch_loss.mean().backward()
            minimizer.ascent_step()
            # Descent Step
            F.cross_entropy(model(inputs), targets).mean().backward()
            minimizer.descent_step()
            losses.append(batch_loss.item())
    eps = [minimizer.state[p]["eps"] for p in model.parameters()]
    return losses, params_of(model), eps


@pytest.mark.parametrize("adaptive", [True, False])
def test_asam_and_sam_as_samsunglabs_writes_them(adaptive):
    # norms (reductions) enter every step: float32 summation order differs, so not bit-equal
    ours, theirs = run_both(asam_program, adaptive=adaptive, rtol=1e-4, atol=1e-5)
    assert ours[0][-1] < ours[0][0]


# ----------------------------------------------------------------------------------------------
# Lion, lucidrains' foreach version, under OneCycleLR cycling its betas
# ----------------------------------------------------------------------------------------------


def lion_foreach_program(m, steps=12):
    torch, F, optim = m.torch, m.F, m.optim

    def exists(val):
        return val is not None

    class Lion(optim.Optimizer):
        def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, decoupled_weight_decay=False):
            assert lr > 0.
            assert all([0. <= beta <= 1. for beta in betas])
            assert all([hasattr(torch, f'_foreach_{attr}_') for attr in ('mul', 'add', 'sign', 'lerp')]), \
                'this version of torch does not have the prerequisite foreach functions'
            self._init_lr = lr
            self.decoupled_wd = decoupled_weight_decay
            defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay)
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if exists(closure):
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                lr, wd, beta1, beta2, decoupled_wd, init_lr = group['lr'], group['weight_decay'], *group['betas'], \
                    self.decoupled_wd, self._init_lr
                # maybe decoupled weight decay
                if decoupled_wd:
                    wd /= init_lr
                # accumulate List[Tensor] for foreach inplace updates
                params = []
                grads = []
                exp_avgs = []
                for p in filter(lambda p: exists(p.grad), group['params']):
                    grad, state = p.grad, self.state[p]
                    # init state - exponential moving average of gradient values
                    if len(state) == 0:
                        state['exp_avg'] = torch.zeros_like(p)
                    exp_avg = state['exp_avg']
                    params.append(p)
                    grads.append(grad)
                    exp_avgs.append(exp_avg)
                # stepweight decay
                torch._foreach_mul_(params, 1. - lr * wd)
                # weight update
                updates = [t.clone() for t in exp_avgs]
                torch._foreach_lerp_(updates, grads, 1. - beta1)
                torch._foreach_sign_(updates)
                torch._foreach_add_(params, updates, alpha=-lr)
                # decay momentum running average
                torch._foreach_lerp_(exp_avgs, grads, 1. - beta2)
            return loss

    model = load(m, net(m), WEIGHTS)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = Lion([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, weight_decay=1.0,
                     decoupled_weight_decay=True)
    scheduler = optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.3,
                                              base_momentum=0.85, max_momentum=0.95)
    losses, lrs, betas = [], [], []
    data = batches(m)
    for i in range(steps):
        x, y = data[i % len(data)]

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        loss = optimizer.step(closure)
        scheduler.step()
        losses.append(loss.item())
        lrs.append(optimizer.param_groups[0]["lr"])
        betas.append(optimizer.param_groups[1]["betas"])
    exp_avgs = [optimizer.state[p]["exp_avg"] for p in model.parameters()]
    return losses, lrs, betas, params_of(model), exp_avgs


def test_lion_foreach_under_one_cycle_cycling_its_betas():
    # the update is elementwise (sign of a lerp, then lerp), the model's forward sums in float32
    ours, theirs = run_both(lion_foreach_program, rtol=1e-5, atol=1e-6)
    betas = ours[2]
    assert betas[0][0] != betas[3][0] and betas[0][1] == 0.99  # beta1 cycled, beta2 left


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
# Schedule-free AdamW (facebookresearch/schedule_free)
# ----------------------------------------------------------------------------------------------


def schedule_free_program(m, foreach=True, steps=10, resume_at=None):
    torch, F, nn = m.torch, m.F, m.nn

    class AdamWScheduleFree(torch.optim.Optimizer):
        def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, warmup_steps=0,
                     r=0.0, weight_lr_power=2.0, foreach=hasattr(torch, "_foreach_mul_")):
            defaults = dict(lr=lr, betas=betas, eps=eps, r=r, k=0, warmup_steps=warmup_steps, train_mode=False,
                            weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0, weight_lr_power=weight_lr_power,
                            weight_decay=weight_decay, foreach=foreach)
            super().__init__(params, defaults)

        @torch.no_grad()
        def eval(self):
            for group in self.param_groups:
                train_mode = group['train_mode']
                beta1, _ = group['betas']
                if train_mode:
                    for p in group['params']:
                        state = self.state[p]
                        if 'z' in state:
                            # Set p to x
                            p.lerp_(end=state['z'].to(p.device), weight=1 - 1 / beta1)
                    group['train_mode'] = False

        @torch.no_grad()
        def train(self):
            for group in self.param_groups:
                train_mode = group['train_mode']
                beta1, _ = group['betas']
                if not train_mode:
                    for p in group['params']:
                        state = self.state[p]
                        if 'z' in state:
                            # Set p to y
                            p.lerp_(end=state['z'].to(p.device), weight=1 - beta1)
                    group['train_mode'] = True

        @torch.no_grad()
        def step(self, closure=None):
            if not self.param_groups[0]['train_mode']:
                raise Exception("Optimizer was not in train mode when step is called. "
                                "Please insert .train() and .eval() calls on the "
                                "optimizer. See documentation for details.")

            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()

            for group in self.param_groups:
                eps = group['eps']
                beta1, beta2 = group['betas']
                decay = group['weight_decay']
                k = group['k']
                r = group['r']
                warmup_steps = group['warmup_steps']
                weight_lr_power = group['weight_lr_power']

                if k < warmup_steps:
                    sched = (k + 1) / warmup_steps
                else:
                    sched = 1.0

                bias_correction2 = 1 - beta2 ** (k + 1)
                lr = group['lr'] * sched
                group['scheduled_lr'] = lr  # For logging purposes

                lr_max = group['lr_max'] = max(lr, group['lr_max'])

                weight = ((k + 1) ** r) * (lr_max ** weight_lr_power)
                weight_sum = group['weight_sum'] = group['weight_sum'] + weight

                try:
                    ckp1 = weight / weight_sum
                except ZeroDivisionError:
                    ckp1 = 0

                active_p = [p for p in group['params'] if p.grad is not None]

                for p in active_p:
                    if 'z' not in self.state[p]:
                        self.state[p]['z'] = torch.clone(p, memory_format=torch.preserve_format)
                        self.state[p]['exp_avg_sq'] = torch.zeros_like(p, memory_format=torch.preserve_format)

                if group['foreach'] and len(active_p) > 0:
                    y, grad, exp_avg_sq, z = zip(*[(p, p.grad, self.state[p]['exp_avg_sq'], self.state[p]['z'])
                                                   for p in active_p])

                    # Decay the first and second moment running average coefficient
                    torch._foreach_mul_(exp_avg_sq, beta2)
                    torch._foreach_addcmul_(exp_avg_sq, grad, grad, value=1 - beta2)
                    denom = torch._foreach_div(exp_avg_sq, bias_correction2)
                    torch._foreach_sqrt_(denom)
                    torch._foreach_add_(denom, eps)

                    # Normalize grad in-place for memory efficiency
                    torch._foreach_div_(grad, denom)

                    # Weight decay calculated at y
                    if decay != 0:
                        torch._foreach_add_(grad, y, alpha=decay)

                    # These operations update y in-place,
                    # without computing x explicitly.
                    torch._foreach_lerp_(y, z, weight=ckp1)
                    torch._foreach_add_(y, grad, alpha=lr * (beta1 * (1 - ckp1) - 1))

                    # z step
                    torch._foreach_sub_(z, grad, alpha=lr)
                else:
                    for p in active_p:
                        y = p  # Notation to match theory
                        grad = p.grad

                        state = self.state[p]

                        z = state['z']
                        exp_avg_sq = state['exp_avg_sq']

                        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                        denom = exp_avg_sq.div(bias_correction2).sqrt_().add_(eps)

                        # Reuse grad buffer for memory efficiency
                        grad_normalized = grad.div_(denom)

                        # Weight decay calculated at y
                        if decay != 0:
                            grad_normalized.add_(y, alpha=decay)

                        # These operations update y in-place,
                        # without computing x explicitly.
                        y.lerp_(end=z, weight=ckp1)
                        y.add_(grad_normalized, alpha=lr * (beta1 * (1 - ckp1) - 1))

                        # z step
                        z.sub_(grad_normalized, alpha=lr)

                group['k'] = k + 1
            return loss

    def Net():  # no bias before BatchNorm: its gradient is float32 noise, which Adam's step would follow
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 8, bias=False),
                             nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))

    weights = {**{k.replace("5.", "6."): v for k, v in WEIGHTS.items() if k != "3.bias"},
               "4.weight": np.ones(8, np.float32), "4.bias": np.zeros(8, np.float32),
               "4.running_mean": np.zeros(8, np.float32), "4.running_var": np.ones(8, np.float32),
               "4.num_batches_tracked": np.array(0)}

    def build():
        model = load(m, Net(), weights)
        optimizer = AdamWScheduleFree(model.parameters(), lr=5e-3, warmup_steps=4, weight_decay=0.01,
                                      foreach=foreach)
        return model, optimizer

    model, optimizer = build()
    data = batches(m)
    losses, evals = [], []
    for step in range(steps):
        if step == resume_at:
            optimizer.eval()  # the schedule-free README: save the x sequence, as for evaluation
            checkpoint = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
            model, optimizer = build()
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
        model.train()
        optimizer.train()
        x, y = data[step % len(data)]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 3 == 2:
            # BN statistics at x: a few forward passes in train mode with the optimizer in eval
            model.train()
            optimizer.eval()
            with torch.no_grad():
                for xb, _ in data[:3]:
                    model(xb)
            model.eval()
            with torch.no_grad():
                evals.append(sum(F.cross_entropy(model(xb), yb).item() for xb, yb in data))
    optimizer.eval()
    group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    return losses, evals, params_of(model), group, [optimizer.state[p]["z"] for p in model.parameters()]


@pytest.mark.parametrize("foreach", [True, False])
def test_schedule_free_adamw_switches_between_y_and_x(foreach):
    # the elementwise updates are bit-equal, but the model's forward sums in float32 (conv, matmul)
    ours, theirs = run_both(schedule_free_program, foreach=foreach, rtol=1e-5, atol=1e-6)
    group = ours[3]
    assert group["k"] == 10 and group["train_mode"] is False and group["lr_max"] == 5e-3


def test_schedule_free_adamw_resumes_from_x():
    # a checkpoint of the x sequence (optimizer.eval() before saving) continues where it stopped; only
    # the lerp y -> x -> y round trip rounds, so the resumed run agrees to float32 rounding
    straight, _ = run_both(schedule_free_program, rtol=1e-5, atol=1e-6)
    resumed, _ = run_both(schedule_free_program, resume_at=5, rtol=1e-5, atol=1e-6)
    assert_same(resumed, straight, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Muon with an auxiliary Adam (KellerJordan/Muon's SingleDeviceMuonWithAuxAdam)
# ----------------------------------------------------------------------------------------------


def muon_program(m, steps=8):
    torch, F, optim = m.torch, m.F, m.optim

    def zeropower_via_newtonschulz5(G, steps: int):
        """Newton-Schulz iteration to compute the zeroth power / orthogonalization of G. (The author runs it in
        bfloat16, which chainrule does not build: float32 here, as the float32 ports of it do.)"""
        assert G.ndim >= 2  # batched Muon implementation by @scottjmaddox
        a, b, c = (3.4445, -4.7750, 2.0315)
        X = G.float()
        if G.size(-2) > G.size(-1):
            X = X.mT

        # Ensure spectral norm is at most 1
        X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
        # Perform the NS iterations
        for _ in range(steps):
            A = X @ X.mT
            B = b * A + c * A @ A  # quintic computation strategy
            X = a * X + B @ X

        if G.size(-2) > G.size(-1):
            X = X.mT
        return X

    def muon_update(grad, momentum, beta=0.95, ns_steps=5, nesterov=True):
        momentum.lerp_(grad, 1 - beta)
        update = grad.lerp_(momentum, beta) if nesterov else momentum
        if update.ndim == 4:  # for the case of conv filters
            update = update.view(len(update), -1)
        update = zeropower_via_newtonschulz5(update, steps=ns_steps)
        update *= max(1, grad.size(-2) / grad.size(-1))**0.5
        return update

    def adam_update(grad, buf1, buf2, step, betas, eps):
        buf1.lerp_(grad, 1 - betas[0])
        buf2.lerp_(grad.square(), 1 - betas[1])
        buf1c = buf1 / (1 - betas[0]**step)
        buf2c = buf2 / (1 - betas[1]**step)
        return buf1c / (buf2c.sqrt() + eps)

    class SingleDeviceMuonWithAuxAdam(torch.optim.Optimizer):
        """
        Non-distributed variant of MuonWithAuxAdam.
        """
        def __init__(self, param_groups):
            for group in param_groups:
                assert "use_muon" in group
                if group["use_muon"]:
                    # defaults
                    group["lr"] = group.get("lr", 0.02)
                    group["momentum"] = group.get("momentum", 0.95)
                    group["weight_decay"] = group.get("weight_decay", 0)
                    assert set(group.keys()) == set(["params", "lr", "momentum", "weight_decay", "use_muon"])
                else:
                    # defaults
                    group["lr"] = group.get("lr", 3e-4)
                    group["betas"] = group.get("betas", (0.9, 0.95))
                    group["eps"] = group.get("eps", 1e-10)
                    group["weight_decay"] = group.get("weight_decay", 0)
                    assert set(group.keys()) == set(["params", "lr", "betas", "eps", "weight_decay", "use_muon"])
            super().__init__(param_groups, dict())

        @torch.no_grad()
        def step(self, closure=None):

            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()

            for group in self.param_groups:
                if group["use_muon"]:
                    for p in group["params"]:
                        if p.grad is None:
                            # continue
                            p.grad = torch.zeros_like(p)  # Force synchronization
                        state = self.state[p]
                        if len(state) == 0:
                            state["momentum_buffer"] = torch.zeros_like(p)
                        update = muon_update(p.grad, state["momentum_buffer"], beta=group["momentum"])
                        p.mul_(1 - group["lr"] * group["weight_decay"])
                        p.add_(update.reshape(p.shape), alpha=-group["lr"])
                else:
                    for p in group["params"]:
                        if p.grad is None:
                            # continue
                            p.grad = torch.zeros_like(p)  # Force synchronization
                        state = self.state[p]
                        if len(state) == 0:
                            state["exp_avg"] = torch.zeros_like(p)
                            state["exp_avg_sq"] = torch.zeros_like(p)
                            state["step"] = 0
                        state["step"] += 1
                        update = adam_update(p.grad, state["exp_avg"], state["exp_avg_sq"],
                                             state["step"], group["betas"], group["eps"])
                        p.mul_(1 - group["lr"] * group["weight_decay"])
                        p.add_(update, alpha=-group["lr"])

            return loss

    model = load(m, net(m), WEIGHTS)
    hidden_weights = [p for p in model[:4].parameters() if p.ndim >= 2]
    hidden_gains_biases = [p for p in model[:4].parameters() if p.ndim < 2]
    nonhidden_params = [*model[5].parameters()]
    param_groups = [
        dict(params=hidden_weights, use_muon=True, lr=0.02, weight_decay=0.01),
        dict(params=hidden_gains_biases + nonhidden_params, use_muon=False, lr=3e-3, betas=(0.9, 0.95),
             weight_decay=0.01),
    ]
    optimizer = SingleDeviceMuonWithAuxAdam(param_groups)
    losses = []
    data = batches(m)
    for i in range(steps):
        x, y = data[i % len(data)]

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        losses.append(optimizer.step(closure).item())
    buffers = [optimizer.state[p]["momentum_buffer"] for p in hidden_weights]
    return losses, params_of(model), buffers


def test_muon_with_an_auxiliary_adam():
    # Newton-Schulz is five rounds of float32 matmuls on a norm-scaled matrix: summation order differs
    ours, theirs = run_both(muon_program, rtol=1e-4, atol=1e-5)
    assert ours[0][-1] < ours[0][0]


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
# A foreach LAMB with an AMSGrad maximum, and Adam with gradient centralisation
# ----------------------------------------------------------------------------------------------


def foreach_lamb_program(m, steps=8, gradient_centralization=True):
    torch, F, optim = m.torch, m.F, m.optim

    class Lamb(optim.Optimizer):
        """LAMB (You et al.) over lists of tensors, with AMSGrad's running maximum and an optional gradient
        centralisation of every weight of two or more dimensions."""

        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, max_trust=10.0,
                     amsgrad=True, gc=False):
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_trust=max_trust,
                            amsgrad=amsgrad, gc=gc)
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                if not params:
                    continue
                grads = [p.grad for p in params]
                if group["gc"]:
                    for g in grads:
                        if g.dim() > 1:
                            g.add_(-g.mean(dim=tuple(range(1, len(list(g.size())))), keepdim=True))
                for p in params:
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = torch.tensor(0.0)
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                states = [self.state[p] for p in params]
                exp_avgs = [s["exp_avg"] for s in states]
                exp_avg_sqs = [s["exp_avg_sq"] for s in states]
                max_exp_avg_sqs = [s["max_exp_avg_sq"] for s in states]
                steps = [s["step"] for s in states]
                torch._foreach_add_(steps, 1)
                beta1, beta2 = group["betas"]
                step = steps[0].item()

                torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
                torch._foreach_mul_(exp_avg_sqs, beta2)
                torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
                if group["amsgrad"]:
                    torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
                    second = max_exp_avg_sqs
                else:
                    second = exp_avg_sqs
                bias_correction1 = 1 - beta1 ** step
                bias_correction2 = 1 - beta2 ** step
                denom = torch._foreach_sqrt(second)
                torch._foreach_div_(denom, math.sqrt(bias_correction2))
                torch._foreach_add_(denom, group["eps"])
                updates = torch._foreach_div(exp_avgs, denom)
                torch._foreach_div_(updates, bias_correction1)
                if group["weight_decay"] != 0:
                    torch._foreach_add_(updates, params, alpha=group["weight_decay"])

                w_norms = torch._foreach_norm(params)
                u_norms = torch._foreach_norm(updates)
                trust_ratios = [torch.where((w > 0) & (u > 0), (w / u).clamp(max=group["max_trust"]),
                                            torch.ones_like(w)) for w, u in zip(w_norms, u_norms)]
                torch._foreach_mul_(updates, trust_ratios)
                torch._foreach_add_(params, updates, alpha=-group["lr"])
                for p, ratio in zip(params, trust_ratios):
                    self.state[p]["trust_ratio"] = ratio
            return loss

    model = load(m, net(m), WEIGHTS)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    optimizer = Lamb([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=0.02,
                     gc=gradient_centralization)
    losses = []
    data = batches(m)
    for i in range(steps):
        x, y = data[i % len(data)]

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        losses.append(optimizer.step(closure).item())
    states = [dict(optimizer.state[p]) for p in model.parameters()]
    return losses, params_of(model), states


@pytest.mark.parametrize("gradient_centralization", [True, False])
def test_a_foreach_lamb_with_amsgrads_maximum(gradient_centralization):
    # the trust ratios are ratios of float32 norms
    ours, theirs = run_both(foreach_lamb_program, gradient_centralization=gradient_centralization,
                            rtol=1e-4, atol=1e-6)
    assert ours[2][0]["trust_ratio"].shape == () and ours[2][0]["step"] == 8


def adam_gc_program(m, steps=8):
    torch, F, optim = m.torch, m.F, m.optim

    class AdamWGC(optim.AdamW):
        """AdamW on centralised gradients (Yong et al., "Gradient Centralization")."""

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad
                    if len(list(grad.size())) > 1:
                        grad.add_(-grad.mean(dim=tuple(range(1, len(list(grad.size())))), keepdim=True))
            super().step()
            return loss

    model = load(m, net(m), WEIGHTS)
    optimizer = AdamWGC(model.parameters(), lr=3e-3, weight_decay=1e-2)
    losses = []
    data = batches(m)
    for i in range(steps):
        x, y = data[i % len(data)]

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        losses.append(optimizer.step(closure).item())
    conv = model[0].weight
    return losses, params_of(model), optimizer.state[conv]["exp_avg"].sum(dim=(1, 2, 3))


def test_adam_on_centralised_gradients():
    # the centring mean is a float32 reduction
    ours, theirs = run_both(adam_gc_program, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours[2], 0, atol=1e-7)  # every filter's first moment is centred (decay decoupled)


# ----------------------------------------------------------------------------------------------
# timm's Lookahead around AdamW, its slow weights in AdamW's state, saved and resumed mid-run
# ----------------------------------------------------------------------------------------------


def timm_lookahead_program(m, steps=10, resume_at=None):
    torch, F, optim = m.torch, m.F, m.optim
    from collections import OrderedDict
    from typing import Callable, Dict

    from_optimizer = optim.Optimizer

    class Lookahead(from_optimizer):
        def __init__(self, base_optimizer, alpha=0.5, k=6):
            # NOTE super().__init__() not called on purpose
            self._optimizer_step_pre_hooks: Dict[int, Callable] = OrderedDict()
            self._optimizer_step_post_hooks: Dict[int, Callable] = OrderedDict()
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f'Invalid slow update rate: {alpha}')
            if not 1 <= k:
                raise ValueError(f'Invalid lookahead steps: {k}')
            defaults = dict(lookahead_alpha=alpha, lookahead_k=k, lookahead_step=0)
            self._base_optimizer = base_optimizer
            self.param_groups = base_optimizer.param_groups
            self.defaults = base_optimizer.defaults
            self.defaults.update(defaults)
            self.state = defaultdict(dict)
            # manually add our defaults to the param groups
            for name, default in defaults.items():
                for group in self._base_optimizer.param_groups:
                    group.setdefault(name, default)

        @torch.no_grad()
        def update_slow(self, group):
            for fast_p in group["params"]:
                if fast_p.grad is None:
                    continue
                param_state = self._base_optimizer.state[fast_p]
                if 'lookahead_slow_buff' not in param_state:
                    param_state['lookahead_slow_buff'] = torch.empty_like(fast_p)
                    param_state['lookahead_slow_buff'].copy_(fast_p)
                slow = param_state['lookahead_slow_buff']
                slow.add_(fast_p - slow, alpha=group['lookahead_alpha'])
                fast_p.copy_(slow)

        def sync_lookahead(self):
            for group in self._base_optimizer.param_groups:
                self.update_slow(group)

        @torch.no_grad()
        def step(self, closure=None):
            loss = self._base_optimizer.step(closure)
            for group in self._base_optimizer.param_groups:
                group['lookahead_step'] += 1
                if group['lookahead_step'] % group['lookahead_k'] == 0:
                    self.update_slow(group)
            return loss

        def state_dict(self):
            return self._base_optimizer.state_dict()

        def load_state_dict(self, state_dict):
            self._base_optimizer.load_state_dict(state_dict)
            self.param_groups = self._base_optimizer.param_groups

    def build():
        model = load(m, net(m), WEIGHTS)
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        base = optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                           lr=5e-3)
        optimizer = Lookahead(base, alpha=0.5, k=3)
        scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
        return model, optimizer, scheduler

    model, optimizer, scheduler = build()
    data = batches(m)
    losses, lrs = [], []
    for step in range(steps):
        if step == resume_at:
            saved = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                   "scheduler": scheduler.state_dict()})
            model, optimizer, scheduler = build()
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        x, y = data[step % len(data)]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        lrs.append(optimizer.param_groups[0]["lr"])
    optimizer.sync_lookahead()
    sd = optimizer.state_dict()
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return losses, lrs, params_of(model), sd["state"][0], groups


def test_timms_lookahead_keeps_its_slow_weights_in_adamws_state():
    ours, theirs = run_both(timm_lookahead_program, rtol=1e-5, atol=1e-6)
    state, groups = ours[3], ours[4]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq", "lookahead_slow_buff"}
    assert groups[0]["lookahead_step"] == 10 and groups[0]["lookahead_k"] == 3


def test_timms_lookahead_resumes_from_its_base_optimizers_state_dict():
    straight, _ = run_both(timm_lookahead_program, rtol=1e-5, atol=1e-6)
    resumed, _ = run_both(timm_lookahead_program, resume_at=4, rtol=1e-5, atol=1e-6)
    assert_same(resumed, straight, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# Hooks, groups added and removed mid-training, per-group options of a custom optimizer
# ----------------------------------------------------------------------------------------------


def hooks_and_groups_program(m, steps=9):
    torch, F, optim, nn = m.torch, m.F, m.optim, m.nn

    class AdaBeliefLite(optim.Optimizer):
        """AdaBelief's update (Zhuang et al.) with per-group ``rectify`` and ``centralize`` switches."""

        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0, centralize=False):
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, centralize=centralize)
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                beta1, beta2 = group["betas"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad
                    if group["centralize"] and grad.dim() > 1:
                        grad = grad - grad.mean(dim=tuple(range(1, grad.dim())), keepdim=True)
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = 0
                        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        state["exp_avg_var"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["step"] += 1
                    exp_avg, exp_avg_var = state["exp_avg"], state["exp_avg_var"]
                    if group["weight_decay"] != 0:
                        p.mul_(1 - group["lr"] * group["weight_decay"])
                    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                    grad_residual = grad - exp_avg
                    exp_avg_var.mul_(beta2).addcmul_(grad_residual, grad_residual, value=1 - beta2)
                    bias_correction1 = 1 - beta1 ** state["step"]
                    bias_correction2 = 1 - beta2 ** state["step"]
                    denom = (exp_avg_var.add_(group["eps"]).sqrt() / math.sqrt(bias_correction2)).add_(group["eps"])
                    step_size = group["lr"] / bias_correction1
                    p.addcdiv_(exp_avg, denom, value=-step_size)
            return loss

    torch.manual_seed(0)
    model = load(m, net(m), WEIGHTS)
    extra_head = nn.Linear(8, 2)
    with torch.no_grad():
        extra_head.weight.copy_(torch.tensor(np.linspace(-0.3, 0.3, 16, dtype=np.float32).reshape(2, 8)))
        extra_head.bias.zero_()
    optimizer = AdaBeliefLite([{"params": model[0].parameters(), "centralize": True},
                               {"params": model[3:].parameters()}], lr=3e-3, weight_decay=0.01)
    scheduler = optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)  # (chainable: decays groups added later)

    events = []

    def clip_before_step(optimizer, args, kwargs):
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        events.append(("pre", nn.utils.clip_grad_norm_(params, max_norm=1.0).item()))

    def count_after_step(optimizer, args, kwargs):
        events.append(("post", sum(len(s) for s in optimizer.state.values())))

    def tag_state_dict(optimizer, state_dict):
        state_dict["param_groups"][0]["saved_by"] = "hook"
        return state_dict

    def before_saving(optimizer):
        events.append(("saving", len(optimizer.param_groups)))

    def before_loading(optimizer, state_dict):
        state_dict = copy.deepcopy(state_dict)
        for group in state_dict["param_groups"]:
            group.pop("saved_by", None)
        return state_dict

    def after_loading(optimizer):
        events.append(("loaded", [g["lr"] for g in optimizer.param_groups]))

    pre = optimizer.register_step_pre_hook(clip_before_step)
    optimizer.register_step_post_hook(count_after_step)
    optimizer.register_state_dict_pre_hook(before_saving)
    optimizer.register_state_dict_post_hook(tag_state_dict)
    optimizer.register_load_state_dict_pre_hook(before_loading)
    optimizer.register_load_state_dict_post_hook(after_loading)

    data = batches(m)
    losses, saved = [], None
    for step in range(steps):
        x, y = data[step % len(data)]
        if step == 3:  # a second head joins with options of its own
            optimizer.add_param_group({"params": extra_head.parameters(), "lr": 1e-2, "centralize": True,
                                       "betas": (0.8, 0.99)})
        if step == 6:  # ... and leaves again, its state with it
            removed = optimizer.param_groups.pop()
            for p in removed["params"]:
                optimizer.state.pop(p, None)
            pre.remove()
        optimizer.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if len(optimizer.param_groups) == 3:
            hidden = model[:5](x)
            loss = loss + 0.1 * F.cross_entropy(extra_head(hidden), (y > 0).long())
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step == 4:
            saved = optimizer.state_dict()
    fresh = AdaBeliefLite([{"params": model[0].parameters(), "centralize": True},
                           {"params": model[3:].parameters()}, {"params": extra_head.parameters()}])
    fresh.register_load_state_dict_pre_hook(before_loading)
    fresh.load_state_dict(saved)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in fresh.param_groups]
    final = optimizer.state_dict()
    return (losses, events, params_of(model), params_of(extra_head), groups,
            {k: v for k, v in final["param_groups"][0].items()}, sorted(final["state"]))


def test_step_and_state_dict_hooks_with_groups_added_and_removed():
    # the pre-hook's gradient norm and the model's forward are float32 reductions
    ours, theirs = run_both(hooks_and_groups_program, rtol=1e-5, atol=1e-6)
    groups = ours[4]
    assert "saved_by" not in groups[0] and groups[2]["betas"] == (0.8, 0.99) and groups[2]["lr"] != 1e-2
    assert ours[5]["saved_by"] == "hook" and ours[6] == [0, 1, 2, 3, 4, 5]


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
# SPSA (a zeroth-order optimizer) clipping its estimates with torch.utils._foreach_utils' helpers
# ----------------------------------------------------------------------------------------------


def spsa_program(m, steps=4, n=5):
    torch, F, optim = m.torch, m.F, m.optim
    import importlib
    from typing import Dict, List, Optional, Tuple

    Tensor = torch.Tensor
    Optimizer = optim.Optimizer
    _foreach_utils = importlib.import_module(torch.__name__ + ".utils._foreach_utils")
    _group_tensors_by_device_and_dtype = _foreach_utils._group_tensors_by_device_and_dtype
    _has_foreach_support = _foreach_utils._has_foreach_support
    _device_has_foreach_support = _foreach_utils._device_has_foreach_support
    rademacher = np.random.default_rng(3)

    class SPSA(Optimizer):
        def __init__(self, params, lr: float = 2e-3, perturb: float = 1e-3, alpha: float = 0.602,
                     gamma: float = 0.101, A: float = 5.0, n: int = 200, clip_grad_norm: Optional[float] = 2000):
            self.lr = lr
            self.perturb = perturb
            self.alpha = alpha
            self.gamma = gamma
            self.A = A
            self.n = n
            self.clip_grad_norm = clip_grad_norm
            defaults = dict(lr=lr, perturb=perturb, alpha=alpha, gamma=gamma, A=A)
            super().__init__(params, defaults)
            self.flat_params = [p for group in self.param_groups for p in group["params"]]

        @torch.no_grad()
        def step(self, loss_eval):
            loss = loss_eval
            a = self.lr
            c = self.perturb
            theta_flat = self.flat_params
            dtype = theta_flat[0].dtype
            for k in range(self.n):
                ak = a / (k + 1 + self.A) ** self.alpha
                ck = c / (k + 1) ** self.gamma
                deltas = []
                for theta in theta_flat:
                    d = 2 * torch.from_numpy(rademacher.integers(0, 2, size=tuple(theta.shape))).to(dtype=dtype) - 1
                    deltas.append(d)
                    assert torch.all((d == 1) | (d == -1)), "Deltas must be ±1"
                # thetaplus = theta + ck * delta
                for theta, d in zip(theta_flat, deltas):
                    theta.add_(ck * d)
                yplus = loss()
                # thetaminus = theta - ck * delta
                for theta, d in zip(theta_flat, deltas):
                    theta.add_(-2 * ck * d)
                yminus = loss()
                # restore theta
                for theta, d in zip(theta_flat, deltas):
                    theta.add_(ck * d)
                # gradient estimate
                ghat = [(yplus - yminus) / (2 * ck * d) for d in deltas]
                # clip gradients norms
                if self.clip_grad_norm is not None:
                    self._clip_grad_norm(ghat, self.clip_grad_norm)
                assert all([torch.all(torch.isfinite(g)) for g in ghat]), "Non-finite SPSA diff encountered"
                # theta = theta - ak * ghat
                for theta, g in zip(theta_flat, ghat):
                    theta.add_(-ak * g)
            return loss()

        @torch.no_grad()
        def _clip_grad_norm(self, grads, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                            foreach: Optional[bool] = None) -> torch.Tensor:
            max_norm = float(max_norm)
            norm_type = float(norm_type)
            if len(grads) == 0:
                return torch.tensor(0.)
            first_device = grads[0].device
            grouped_grads: Dict[Tuple[torch.device, torch.dtype], Tuple[List[List[Tensor]], List[int]]] \
                = _group_tensors_by_device_and_dtype([grads])  # type: ignore[assignment]

            norms: List[Tensor] = []
            for ((device, _), ([device_grads], _)) in grouped_grads.items():  # type: ignore[assignment]
                if (
                        (foreach is None and _has_foreach_support(device_grads, device))
                        or (foreach and _device_has_foreach_support(device))
                ):
                    norms.extend(torch._foreach_norm(device_grads, norm_type))
                elif foreach:
                    raise RuntimeError(
                        f'foreach=True was passed, but can\'t use the foreach API on {device.type} tensors')
                else:
                    norms.extend([torch.linalg.vector_norm(g, norm_type) for g in device_grads])

            total_norm = torch.linalg.vector_norm(torch.stack([norm.to(first_device) for norm in norms]), norm_type)
            clip_coef = max_norm / (total_norm + 1e-6)
            clip_coef_clamped = torch.clamp(clip_coef, max=1.0)
            for ((device, _), ([device_grads], _)) in grouped_grads.items():  # type: ignore[assignment]
                if (
                        (foreach is None and _has_foreach_support(device_grads, device))
                        or (foreach and _device_has_foreach_support(device))
                ):
                    torch._foreach_mul_(device_grads, clip_coef_clamped.to(device))
                else:
                    clip_coef_clamped_device = clip_coef_clamped.to(device)
                    for g in device_grads:
                        g.mul_(clip_coef_clamped_device)
            return total_norm

    model = load(m, net(m), WEIGHTS).double()  # float64: the estimate divides a loss difference by 2 c_k
    optimizer = SPSA(model.parameters(), lr=0.05, perturb=1e-2, n=n, clip_grad_norm=5.0)
    data = batches(m)
    losses = []
    for i in range(steps):
        x, y = data[i % len(data)]
        losses.append(optimizer.step(lambda: F.cross_entropy(model(x.double()), y)).item())
    support = (_has_foreach_support([torch.ones(1), None], torch.device("cpu")),
               _has_foreach_support(list(model.parameters()), torch.device("cpu")))
    return losses, params_of(model), support


def test_spsa_clips_its_estimates_with_pytorchs_foreach_utils():
    ours, theirs = run_both(spsa_program, rtol=1e-9, atol=1e-11)
    assert ours[2] == (True, False)  # a Parameter is no plain Tensor to torch.utils._foreach_utils


# ----------------------------------------------------------------------------------------------
# Global step hooks replacing a step's arguments, SWALR and AveragedModel over a custom optimizer
# ----------------------------------------------------------------------------------------------


def swa_over_custom_optimizer_program(m, steps=10, swa_start=5):
    torch, F, optim, nn = m.torch, m.F, m.optim, m.nn
    import importlib

    optimizer_module = importlib.import_module(optim.__name__ + ".optimizer")  # from torch.optim.optimizer import
    register_optimizer_step_pre_hook = optimizer_module.register_optimizer_step_pre_hook
    register_optimizer_step_post_hook = optimizer_module.register_optimizer_step_post_hook

    class SGDW(optim.Optimizer):
        """SGD with decoupled weight decay and a closure that it calls under enable_grad."""

        def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=0.0):
            super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

        @torch.no_grad()
        def step(self, closure=None, scale=1.0):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = p.grad.detach().clone()
                    else:
                        buf.mul_(group["momentum"]).add_(p.grad)
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(buf, alpha=-group["lr"] * scale)
            return loss

    model = load(m, net(m), WEIGHTS)
    swa_model = optim.swa_utils.AveragedModel(model)
    optimizer = SGDW(model.parameters(), lr=0.05, weight_decay=1e-3)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    swa_scheduler = optim.swa_utils.SWALR(optimizer, swa_lr=0.02, anneal_epochs=3, anneal_strategy="linear")

    calls = []

    def halve_after_start(optimizer, args, kwargs):
        # a global pre-hook may hand the step new arguments: (args, kwargs), args without the optimizer
        if getattr(optimizer, "in_swa", False):
            return args, {**kwargs, "scale": 0.5}
        return None

    def count(optimizer, args, kwargs):
        calls.append((type(optimizer).__name__, sorted(kwargs)))

    handles = [register_optimizer_step_pre_hook(halve_after_start), register_optimizer_step_post_hook(count)]
    try:
        data = batches(m)
        losses, lrs = [], []
        for epoch in range(steps):
            x, y = data[epoch % len(data)]

            def closure():
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                return loss

            losses.append(optimizer.step(closure).item())
            if epoch >= swa_start:
                optimizer.in_swa = True
                swa_model.update_parameters(model)
                swa_scheduler.step()
            else:
                scheduler.step()
            lrs.append(optimizer.param_groups[0]["lr"])
    finally:
        for handle in handles:
            handle.remove()
    return losses, lrs, params_of(swa_model.module), swa_model.n_averaged, calls[:2] + calls[-1:], \
        optimizer.param_groups[0]["swa_lr"]


def test_swalr_and_global_step_hooks_over_a_custom_optimizer():
    ours, theirs = run_both(swa_over_custom_optimizer_program, rtol=1e-5, atol=1e-6)
    assert ours[3] == 5 and ours[4][-1] == ("SGDW", ["scale"]) and ours[5] == 0.02


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
