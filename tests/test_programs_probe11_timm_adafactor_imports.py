# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""timm's building blocks and training recipe, run as tests/probe11_timm_common.py says. timm's Adafactor (relative
step, no lr); the names timm imports at import time (``torch.hub.HASH_REGEX``/``urlparse``,
``torch.jit.annotations``) and a checkpoint holding the run's ``argparse.Namespace``."""

import math

from .probe11_timm_common import data
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# timm's Adafactor (from fairseq), with no lr given: its relative step sizes the update, and the
# optimizer base class must take lr=None as PyTorch's does
# ----------------------------------------------------------------------------------------------


def timm_adafactor(m):
    torch = m.torch

    class Adafactor(m.optim.Optimizer):

        def __init__(
                self,
                params,
                lr=None,
                eps = 1e-30,
                eps_scale = 1e-3,
                clip_threshold = 1.0,
                decay_rate = -0.8,
                betas=None,
                weight_decay = 0.0,
                scale_parameter = True,
                warmup_init = False,
                min_dim_size_to_factor = 16,
                caution = False,
        ):
            relative_step = not lr
            if warmup_init and not relative_step:
                raise ValueError('warmup_init requires relative_step=True')

            beta1 = None if betas is None else betas[0]   # make it compat with standard betas arg
            defaults = dict(
                lr=lr,
                eps=eps,
                eps_scale=eps_scale,
                clip_threshold=clip_threshold,
                decay_rate=decay_rate,
                beta1=beta1,
                weight_decay=weight_decay,
                scale_parameter=scale_parameter,
                relative_step=relative_step,
                warmup_init=warmup_init,
                min_dim_size_to_factor=min_dim_size_to_factor,
                caution=caution,
            )
            super(Adafactor, self).__init__(params, defaults)

        def __setstate__(self, state):
            super().__setstate__(state)
            for group in self.param_groups:
                group.setdefault('caution', False)
                group.setdefault('min_dim_size_to_factor', 16)

        @staticmethod
        def _get_lr(param_group, param_state):
            if param_group['relative_step']:
                min_step = 1e-6 * param_state['step'] if param_group['warmup_init'] else 1e-2
                lr_t = min(min_step, 1.0 / math.sqrt(param_state['step']))
                param_scale = 1.0
                if param_group['scale_parameter']:
                    param_scale = max(param_group['eps_scale'], param_state['RMS'])
                param_group['lr'] = lr_t * param_scale
            return param_group['lr']

        @staticmethod
        def _get_options(param_group, param_shape, min_size_to_factor=16):
            use_first_moment = param_group['beta1'] is not None
            factored = None
            ndim = len(param_shape)
            # Use a simple heuristic to pick factorization row & col, note other PyTorch impl tend to
            # always use -2, -1 BUT this will not pick correct dims for convolutions. This is a simple
            # approach that should work in most cases, compare to the slightly more involved approach
            # in AdafactorBigVision that sorts dims by size, please report if wrong dims chosen.
            if ndim > 2 and param_shape[0] > min_size_to_factor and param_shape[1] > min_size_to_factor:
                # nD convs in torch are ND + 2 dim weights with leading in/out chs
                factored = 0, 1
            elif ndim >= 2 and param_shape[-2] > min_size_to_factor and param_shape[-1] > min_size_to_factor:
                # if the criteria above didn't match, test trailing dims for eligibility as per original impl
                factored = ndim - 2, ndim - 1

            return factored, use_first_moment

        @staticmethod
        def _rms(tensor):
            return tensor.norm(2) / (tensor.numel() ** 0.5)

        def _approx_sq_grad(self, exp_avg_sq_row, exp_avg_sq_col, dim_col, dim_row):
            # from our dim heuristic, always dim_col < dim_row, so col reduction dim for factored row = dim_col
            r_factor = (exp_avg_sq_row / exp_avg_sq_row.mean(dim=dim_col, keepdim=True)).rsqrt_().unsqueeze(dim_row)
            c_factor = exp_avg_sq_col.unsqueeze(dim_col).rsqrt()
            return torch.mul(r_factor, c_factor)

        @torch.no_grad()
        def step(self, closure=None):
            """Performs a single optimization step.
            Arguments:
                closure (callable, optional): A closure that reevaluates the model and returns the loss.
            """
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()

            for group in self.param_groups:
                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad
                    if grad.dtype in {torch.float16, torch.bfloat16}:
                        grad = grad.float()
                    if grad.is_sparse:
                        raise RuntimeError('Adafactor does not support sparse gradients.')

                    state = self.state[p]

                    factored_dims, use_first_moment = self._get_options(
                        group,
                        grad.shape,
                        min_size_to_factor=group['min_dim_size_to_factor'],
                    )
                    # State Initialization
                    if len(state) == 0:
                        state['step'] = 0

                        if use_first_moment:
                            # Exponential moving average of gradient values
                            state['exp_avg'] = torch.zeros_like(grad)
                        if factored_dims is not None:
                            dim_col, dim_row = factored_dims
                            def _remove_dim(shape, dim):
                                return shape[:dim] + shape[dim + 1:]
                            state['exp_avg_sq_row'] = torch.zeros(_remove_dim(grad.shape, dim_row)).to(grad)
                            state['exp_avg_sq_col'] = torch.zeros(_remove_dim(grad.shape, dim_col)).to(grad)
                        else:
                            state['exp_avg_sq'] = torch.zeros_like(grad)

                        state['RMS'] = 0
                    else:
                        if use_first_moment:
                            state['exp_avg'] = state['exp_avg'].to(grad)
                        if factored_dims is not None:
                            state['exp_avg_sq_row'] = state['exp_avg_sq_row'].to(grad)
                            state['exp_avg_sq_col'] = state['exp_avg_sq_col'].to(grad)
                        else:
                            state['exp_avg_sq'] = state['exp_avg_sq'].to(grad)

                    p_fp32 = p
                    if p.dtype in {torch.float16, torch.bfloat16}:
                        p_fp32 = p_fp32.float()

                    state['step'] += 1
                    state['RMS'] = self._rms(p_fp32)
                    lr_t = self._get_lr(group, state)

                    beta2t = 1.0 - math.pow(state['step'], group['decay_rate'])
                    update = grad ** 2 + group['eps']
                    if factored_dims is not None:
                        dim_col, dim_row = factored_dims
                        exp_avg_sq_row = state['exp_avg_sq_row']
                        exp_avg_sq_col = state['exp_avg_sq_col']

                        exp_avg_sq_row.mul_(beta2t).add_(update.mean(dim=dim_row), alpha=1.0 - beta2t)
                        exp_avg_sq_col.mul_(beta2t).add_(update.mean(dim=dim_col), alpha=1.0 - beta2t)

                        # Approximation of exponential moving average of square of gradient
                        update = self._approx_sq_grad(exp_avg_sq_row, exp_avg_sq_col, dim_col, dim_row)
                        update.mul_(grad)
                    else:
                        exp_avg_sq = state['exp_avg_sq']

                        exp_avg_sq.mul_(beta2t).add_(update, alpha=1.0 - beta2t)
                        update = exp_avg_sq.rsqrt().mul_(grad)

                    update.div_((self._rms(update) / group['clip_threshold']).clamp_(min=1.0))
                    update.mul_(lr_t)

                    if use_first_moment:
                        exp_avg = state['exp_avg']
                        exp_avg.mul_(group['beta1']).add_(update, alpha=1 - group['beta1'])
                        if group['caution']:
                            # Apply caution as per 'Cautious Optimizers' - https://arxiv.org/abs/2411.16085
                            mask = (exp_avg * grad > 0).to(grad.dtype)
                            mask.div_(mask.mean().clamp_(min=1e-3))
                            update = exp_avg * mask
                        else:
                            update = exp_avg

                    if group['weight_decay'] != 0:
                        p_fp32.add_(p_fp32, alpha=-group['weight_decay'] * lr_t)

                    p_fp32.add_(-update)
                    if p.dtype in {torch.float16, torch.bfloat16}:
                        p.copy_(p_fp32)

            return loss

    return Adafactor


def adafactor_training(m, lr=None, betas=None, steps=4):
    torch, nn, F = m.torch, m.nn, m.F
    model = nn.Sequential(nn.Linear(20, 18), nn.GELU(), nn.Linear(18, 3))
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.tensor(data(*p.shape, seed=i) * 0.2))
    optimizer = timm_adafactor(m)(model.parameters(), lr=lr, betas=betas, weight_decay=0.01)
    x = torch.tensor(data(8, 20, seed=7))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    losses, lrs = [], []
    for step in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        lrs.append(optimizer.param_groups[0]["lr"])
    first = optimizer.state[model[0].weight]
    return losses, lrs, [p.detach() for p in model.parameters()], first["exp_avg_sq_row"], first["exp_avg_sq_col"]


def test_timm_adafactor_relative_step():
    (losses, lrs, params, row, col), _ = run_both(adafactor_training, rtol=1e-4, atol=1e-6)
    assert losses[-1] < losses[0] and row.shape == (18,) and col.shape == (20,)  # factored over Linear(20, 18)
    assert all(0 < lr < 1e-2 for lr in lrs)  # min(1e-2, 1/sqrt(step)) scaled by the weights' RMS
    run_both(adafactor_training, lr=1e-2, betas=(0.9, 0.999), rtol=1e-4, atol=1e-6)


def torch_hub_names(m):
    """timm/models/_hub.py, at import time: ``from torch.hub import HASH_REGEX, download_url_to_file, urlparse``
    (the hash suffix of a checkpoint's file name checked after a download)."""
    hub = m.torch.hub
    HASH_REGEX, urlparse = hub.HASH_REGEX, hub.urlparse
    filename = urlparse("https://download.pytorch.org/models/resnet18-f37072fd.pth").path.rsplit("/", 1)[-1]
    return filename, HASH_REGEX.search(filename).group(1), callable(hub.download_url_to_file)


def test_torch_hub_names_timm_imports():
    ours, _ = run_both(torch_hub_names)
    assert ours == ("resnet18-f37072fd.pth", "f37072fd", True)


def jit_annotations(m):
    """timm/models/densenet.py, at import time: ``from torch.jit.annotations import List``."""
    import importlib
    import typing

    annotations = importlib.import_module(m.torch.__name__ + ".jit.annotations")
    return annotations.Any is typing.Any and annotations.Optional is typing.Optional and hasattr(annotations, "List")


def test_jit_annotations_module():
    ours, _ = run_both(jit_annotations)
    assert ours is True


def checkpoint_with_args(m, path):
    """torchvision's references (train.py: ``checkpoint = {"model": ..., "optimizer": ..., "lr_scheduler": ...,
    "epoch": epoch, "args": args}`` then ``utils.save_on_master(checkpoint, ...)``) and timm's CheckpointSaver
    both save the argparse Namespace of the run beside the weights."""
    import argparse

    torch, nn, optim = m.torch, m.nn, m.optim
    model = nn.Linear(3, 2)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    lr_scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
    args = argparse.Namespace(model="resnet18", lr=0.1, epochs=90, label_smoothing=0.1, mixup_alpha=0.2)
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "lr_scheduler": lr_scheduler.state_dict(), "epoch": 3, "args": args}
    torch.save(checkpoint, path)
    loaded = torch.load(path, map_location="cpu", weights_only=False)
    return vars(loaded["args"]), loaded["epoch"], sorted(loaded["model"])


def test_checkpoint_with_argparse_namespace(tmp_path):
    ours, _ = run_both(checkpoint_with_args, tmp_path / "checkpoint.pth")
    assert ours[0]["model"] == "resnet18" and ours[1] == 3 and ours[2] == ["bias", "weight"]
