# ruff: noqa: B007, E731  (the programs are kept as their authors wrote them)
"""Diffusion models, flows, score matching and flow matching, run as tests/probe13_diffusion_common.py says. EMA of
weights: ema-pytorch's ``_foreach_lerp_``/``_foreach_copy_`` and ``lerp_`` loop (buffers too, names kept out),
Karras' power-function EMA by ``_foreach_mul_``/``_foreach_add_``, ``AveragedModel`` with ``get_ema_multi_avg_fn``
(``use_buffers``), a custom ``avg_fn`` and ``update_bn``; and (a strict xfail) an EMA over the state dict filtered by
``dtype.is_floating_point``."""

import copy

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# EMA of weights: ema-pytorch's foreach updates, Karras' power-function EMA, and swa_utils.AveragedModel
# ----------------------------------------------------------------------------------------------


def make_bn_net(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.SiLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


def ema_program(m, weights, steps=6):
    torch, nn, F = m.torch, m.nn, m.F
    AveragedModel, get_ema_multi_avg_fn = m.optim.swa_utils.AveragedModel, m.optim.swa_utils.get_ema_multi_avg_fn
    model = load(m, make_bn_net(m), weights)

    class EMA(nn.Module):  # lucidrains' ema-pytorch, its update path
        def __init__(self, model, beta=0.99, update_after_step=1, update_every=1, inv_gamma=1.0, power=2 / 3,
                     min_value=0.0, use_foreach=True, param_or_buffer_names_no_ema=()):
            super().__init__()
            self.beta = beta
            self.online_model = [model]
            self.ema_model = copy.deepcopy(model)
            self.ema_model.requires_grad_(False)
            self.parameter_names = {name for name, param in self.ema_model.named_parameters()
                                    if torch.is_floating_point(param) or torch.is_complex(param)}
            self.buffer_names = {name for name, buffer in self.ema_model.named_buffers()
                                 if torch.is_floating_point(buffer) or torch.is_complex(buffer)}
            self.update_every = update_every
            self.update_after_step = update_after_step
            self.inv_gamma, self.power, self.min_value = inv_gamma, power, min_value
            self.param_or_buffer_names_no_ema = param_or_buffer_names_no_ema
            self.use_foreach = use_foreach
            self.register_buffer("initted", torch.tensor(False))
            self.register_buffer("step", torch.tensor(0))

        @property
        def model(self):
            return self.online_model[0]

        def get_params_iter(self, model):
            for name, param in model.named_parameters():
                if name not in self.parameter_names:
                    continue
                yield name, param

        def get_buffers_iter(self, model):
            for name, buffer in model.named_buffers():
                if name not in self.buffer_names:
                    continue
                yield name, buffer

        def copy_params_from_model_to_ema(self):
            copy_ = lambda tgt, src: tgt.copy_(src)
            for (_, ma_params), (_, current_params) in zip(self.get_params_iter(self.ema_model),
                                                           self.get_params_iter(self.model)):
                copy_(ma_params.data, current_params.data)
            for (_, ma_buffers), (_, current_buffers) in zip(self.get_buffers_iter(self.ema_model),
                                                             self.get_buffers_iter(self.model)):
                copy_(ma_buffers.data, current_buffers.data)

        def get_current_decay(self):
            epoch = (self.step - self.update_after_step - 1).clamp(min=0.)
            value = 1 - (1 + epoch / self.inv_gamma) ** - self.power
            if epoch.item() <= 0:
                return 0.
            return value.clamp(min=self.min_value, max=self.beta).item()

        def update(self):
            step = self.step.item()
            self.step += 1
            if (step % self.update_every) != 0:
                return
            if step <= self.update_after_step:
                self.copy_params_from_model_to_ema()
                return
            if not self.initted.item():
                self.copy_params_from_model_to_ema()
                self.initted.data.copy_(torch.tensor(True))
            self.update_moving_average(self.ema_model, self.model)

        @torch.no_grad()
        def update_moving_average(self, ma_model, current_model):
            current_decay = self.get_current_decay()
            tensors_to_copy = []
            tensors_to_lerp = []
            for (name, current_params), (_, ma_params) in zip(self.get_params_iter(current_model),
                                                              self.get_params_iter(ma_model)):
                if name in self.param_or_buffer_names_no_ema:
                    tensors_to_copy.append((ma_params.data, current_params.data))
                    continue
                tensors_to_lerp.append((ma_params.data, current_params.data))
            for (name, current_buffer), (_, ma_buffer) in zip(self.get_buffers_iter(current_model),
                                                              self.get_buffers_iter(ma_model)):
                tensors_to_lerp.append((ma_buffer.data, current_buffer.data))
            if len(tensors_to_copy) > 0:
                tgt_copy, src_copy = zip(*tensors_to_copy)
                torch._foreach_copy_(tgt_copy, src_copy)
            if len(tensors_to_lerp) > 0:
                tgt_lerp, src_lerp = zip(*tensors_to_lerp)
                if self.use_foreach:
                    torch._foreach_lerp_(tgt_lerp, src_lerp, 1. - current_decay)
                else:
                    for tgt, src in zip(tgt_lerp, src_lerp):
                        tgt.lerp_(src, 1. - current_decay)

        def __call__(self, *args, **kwargs):
            return self.ema_model(*args, **kwargs)

    ema = EMA(model, beta=0.9, update_after_step=1, param_or_buffer_names_no_ema=("4.bias",))
    ema_loop = EMA(model, beta=0.9, update_after_step=1, use_foreach=False, param_or_buffer_names_no_ema=("4.bias",))

    # Karras et al.'s power-function EMA (post-hoc EMA): beta = (1 - 1/t) ** (gamma + 1), by _foreach_mul_/_add_
    karras_model = copy.deepcopy(model).requires_grad_(False)
    gamma = 6.94

    @torch.no_grad()
    def karras_update(step):
        beta = (1. - 1. / step) ** (gamma + 1.)
        ema_params = list(karras_model.parameters())
        online = [p.detach() for p in model.parameters()]
        torch._foreach_mul_(ema_params, beta)
        torch._foreach_add_(ema_params, online, alpha=1. - beta)
        for ema_b, b in zip(karras_model.buffers(), model.buffers()):
            ema_b.copy_(b)

    swa_ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.95), use_buffers=True)

    def avg_fn(averaged_param, model_param, num_averaged):
        return 0.8 * averaged_param + 0.2 * model_param

    swa_custom = AveragedModel(model, avg_fn=avg_fn)
    swa_mean = AveragedModel(model)

    rng = np.random.default_rng(5)
    optimizer = m.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    losses = []
    for step in range(1, steps + 1):
        x = torch.from_numpy(rng.standard_normal((8, 1, 4, 4)).astype(np.float32))
        y = torch.from_numpy(rng.integers(0, 3, 8))
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        ema.update()
        ema_loop.update()
        karras_update(step)
        swa_ema.update_parameters(model)
        swa_custom.update_parameters(model)
        swa_mean.update_parameters(model)

    probe = torch.from_numpy(rng.standard_normal((4, 1, 4, 4)).astype(np.float32))
    ema.ema_model.eval()
    swa_ema.eval()
    with torch.no_grad():
        outputs = {"ema": ema(probe), "swa_ema": swa_ema(probe), "karras": karras_model.eval()(probe)}
    # update_bn recomputes the BatchNorm statistics of the plain average from data
    loader = [torch.from_numpy(rng.standard_normal((8, 1, 4, 4)).astype(np.float32)) for _ in range(3)]
    m.optim.swa_utils.update_bn(loader, swa_mean)
    return {"losses": losses, "decay": ema.get_current_decay(), "step": ema.step,
            "ema": ema.ema_model.state_dict(), "ema_loop": ema_loop.ema_model.state_dict(),
            "karras": karras_model.state_dict(), "swa_ema": swa_ema.state_dict(),
            "swa_custom": swa_custom.state_dict(), "swa_mean": swa_mean.state_dict(), "outputs": outputs,
            "model": model.state_dict()}


def test_ema_foreach_lerp_power_ema_and_averaged_models():
    weights = weights_of(make_bn_net)
    ours, _ = run_both(ema_program, weights, rtol=1e-5, atol=1e-6)
    for name in ours["ema"]:
        np.testing.assert_allclose(ours["ema"][name], ours["ema_loop"][name], rtol=1e-6, atol=1e-7, err_msg=name)
    # names the EMA keeps out follow the online model exactly, as do integer buffers
    np.testing.assert_array_equal(ours["ema"]["4.bias"], ours["model"]["4.bias"])
    assert ours["step"] == 6 and ours["decay"] == pytest.approx(1 - (1 + 4) ** (-2 / 3), rel=1e-6)
    assert ours["swa_ema"]["n_averaged"] == 6 and ours["swa_mean"]["n_averaged"] == 6
    # buffers averaged too (use_buffers=True), an integer one by copy_ of its blend: int(1 * 0.95 + k * 0.05) stays 1
    assert ours["swa_ema"]["module.1.num_batches_tracked"] == 1
    assert ours["swa_mean"]["module.1.num_batches_tracked"] == 3  # update_bn's three batches


# ----------------------------------------------------------------------------------------------
# An EMA over the state dict that skips integer buffers by ``dtype.is_floating_point`` (a torch.dtype's
# property, as EMA teachers and many training loops test it)
# ----------------------------------------------------------------------------------------------


def state_dict_ema(m, weights):
    torch = m.torch
    model = load(m, make_bn_net(m), weights)
    teacher = copy.deepcopy(model)
    rng = np.random.default_rng(1)
    model.train()
    for step in range(3):
        model(torch.from_numpy(rng.standard_normal((8, 1, 4, 4)).astype(np.float32))).sum().backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
        student = model.state_dict()
        with torch.no_grad():
            momentum = 0.9
            for name, param in teacher.state_dict().items():
                if param.dtype.is_floating_point:
                    param.mul_(momentum).add_((1.0 - momentum) * student[name].detach())
    return teacher.state_dict()


def test_state_dict_ema_filters_by_dtype_is_floating_point():
    weights = weights_of(make_bn_net)
    ours, _ = run_both(state_dict_ema, weights)
    assert ours["1.num_batches_tracked"] == 0  # the integer buffer is left alone
