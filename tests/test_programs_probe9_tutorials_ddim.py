# ruff: noqa: B006, B007, E501, UP045  (the programs are kept as their authors wrote them)
"""PyTorch's official tutorials (pytorch/tutorials: beginner_source, intermediate_source, advanced_source), each run
on chainrule and on PyTorch from the same weights and data, comparing losses, parameters and gradients. The DDIM
tutorial (a U-Net built from bare ``nn.Module()`` containers, ``getattr(nn, 'SiLU')()``, ``Sequential.insert``,
GroupNorm(32), attention by ``bmm`` over 1x1 convolutions, ``F.pad`` then a stride-2 convolution, nearest
``interpolate``, ``torch.cat(..., axis=1)``; a cosine schedule through ``torch.cumprod``, indexing it by 0-d and 1-d
integer tensors, ``if prev_timestep >= 0`` on a tensor, int32 timesteps times a 0-d int64 tensor, ``getattr(F,
'l1_loss')``, an EMA by ``p_ema.data = ...``, ``clip_grad_norm_``, AdamW, sampling under ``@torch.no_grad()`` and
``torch.quantile`` thresholding with tensor bounds to ``clamp``)."""

import copy
import math

import numpy as np

from .pytorch_programs import OURS, pytorch, weights_of

# ----------------------------------------------------------------------------------------------
# Unconditional image generation with DDIM (advanced_source/DDIM_tutorial.py)
# ----------------------------------------------------------------------------------------------


class SharedDraws:
    """The torch module as the program sees it, but with randn/randn_like/randint drawn from one NumPy
    generator, so that both libraries get the same noise and timesteps (each call is kept as written)."""

    def __init__(self, torch, seed):
        self._torch, self._rng = torch, np.random.default_rng(seed)

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def randn(self, *shape, **kwargs):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return self._torch.tensor(self._rng.standard_normal(tuple(shape)), dtype=self._torch.float32)

    def randn_like(self, x):
        return self.randn(*x.shape)

    def randint(self, low, high, size):
        return self._torch.tensor(self._rng.integers(low, high, size), dtype=self._torch.int64)


def ddim(m, weights=None, tmp_path=None):
    torch, nn = SharedDraws(m.torch, seed=0), m.nn
    from typing import Optional

    MAX_FREQ = 1000

    def get_timestep_embedding(timesteps, embedding_dim):
        assert len(timesteps.shape) == 1
        half_dim = embedding_dim // 2
        emb = math.log(MAX_FREQ) / (half_dim - 1)
        emb = torch.exp(torch.arange(half_dim, dtype=torch.float32) * -emb)
        emb = emb.to(device=timesteps.device)
        emb = timesteps.float()[:, None] * emb[None, :]
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
        if embedding_dim % 2 == 1:  # zero pad
            emb = m.F.pad(emb, (0, 1, 0, 0))
        return emb

    def Normalize(in_channels):
        return nn.GroupNorm(num_groups=32, num_channels=in_channels, eps=1e-6, affine=True)

    def nonlinearity(name):
        return getattr(nn, name)()

    class ResidualBlock(nn.Module):
        def __init__(self, in_chs, out_chs, temb_dim, act='SiLU', dropout=0.2):
            super().__init__()
            self.time_proj = nn.Sequential(nonlinearity(act), nn.Linear(temb_dim, out_chs))
            dims = [in_chs] + 2 * [out_chs]
            blocks = []
            for i in range(1, 3):
                blc = nn.Sequential(Normalize(dims[i - 1]), nonlinearity(act),
                                    nn.Conv2d(dims[i - 1], dims[i], 3, padding=1),)
                if i > 1:
                    blc.insert(2, nn.Dropout(dropout))
                blocks.append(blc)
            self.blocks = nn.ModuleList(blocks)
            self.short_cut = False
            if in_chs != out_chs:
                self.short_cut = True
                self.conv_short = nn.Conv2d(in_chs, out_chs, 1)

        def forward(self, x, temb):
            h = x
            for i, blc in enumerate(self.blocks):
                h = blc(h)
                if i == 0:
                    h = h + self.time_proj(temb)[:, :, None, None]
            if self.short_cut:
                x = self.conv_short(x)
            return x + h

    class AttnBlock(nn.Module):
        def __init__(self, in_channels):
            super().__init__()
            self.in_channels = in_channels
            self.norm = Normalize(in_channels)
            self.q = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
            self.k = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
            self.v = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
            self.proj_out = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)

        def forward(self, x):
            h_ = x
            h_ = self.norm(h_)
            q = self.q(h_)
            k = self.k(h_)
            v = self.v(h_)
            b, c, h, w = q.shape
            q = q.reshape(b, c, h*w)
            q = q.permute(0, 2, 1)   # b,hw,c
            k = k.reshape(b, c, h*w)  # b,c,hw
            w_ = torch.bmm(q, k)     # b,hw,hw    w[b,i,j]=sum_c q[b,i,c]k[b,c,j]
            w_ = w_ * (c**(-0.5))
            w_ = m.F.softmax(w_, dim=2)
            v = v.reshape(b, c, h*w)
            w_ = w_.permute(0, 2, 1)   # b,hw,hw (first hw of k, second of q)
            h_ = torch.bmm(v, w_)
            h_ = h_.reshape(b, c, h, w)
            h_ = self.proj_out(h_)
            return x+h_

    class DownBlock(nn.Module):
        def __init__(self, out_chs, with_conv=True):
            super().__init__()
            self.with_conv = with_conv
            if with_conv:
                self.down_conv = nn.Conv2d(out_chs, out_chs, 3, stride=2)
            else:
                self.down_conv = nn.AvgPool2d(2, 2)

        def _down(self, x):
            if self.with_conv:
                pad = (0, 1, 0, 1)
                x = m.F.pad(x, pad, mode="constant", value=0)
                x = self.down_conv(x)
            else:
                x = self.down_conv(x)
            return x

        def forward(self, x):
            return self._down(x)

    class UpBlock(nn.Module):
        def __init__(self, out_chs, with_conv=True, mode='nearest',):
            super().__init__()
            self.with_conv = with_conv
            self.mode = mode
            if with_conv:
                self.up_conv = nn.Conv2d(out_chs, out_chs, 3, padding=1)

        def _up(self, x):
            x = m.F.interpolate(x, scale_factor=2.0, mode=self.mode)
            if self.with_conv:
                x = self.up_conv(x)
            return x

        def forward(self, x):
            return self._up(x)

    class DiffUnet(nn.Module):
        def __init__(self, chs=32, chs_mult=[2, 2, 4, 4, 8], attn_res=[16, 8, 4], block_depth=2, act='SiLU',
                     temb_dim=256, with_conv=True, res=64, dropout=0.3):
            super().__init__()
            self.chs = chs
            self.conv_in = nn.Conv2d(3, chs, 3, padding=1)
            self.time_proj = nn.Sequential(nn.Linear(chs, temb_dim), nonlinearity(act), nn.Linear(temb_dim, temb_dim))
            chs_mult = [1]+chs_mult
            down_dims = []
            downs = []
            for i in range(1, len(chs_mult)-1):
                in_ch = chs*chs_mult[i-1]
                out_ch = chs*chs_mult[i]
                down = nn.Module()
                down.res = nn.ModuleList([ResidualBlock(in_ch, out_ch, temb_dim, act, dropout)] +
                                         [ResidualBlock(out_ch, out_ch, temb_dim, act, dropout) for _ in range(1, block_depth)])
                attn = AttnBlock(out_ch) if res in attn_res else nn.Identity()
                down.attn = attn
                down.down_blc = DownBlock(out_ch, with_conv)
                downs.append(down)
                down_dims.append(out_ch)
                res = res//2
            self.downs = nn.ModuleList(downs)
            last_ch_dim = chs*chs_mult[-1]
            self.mid_res1 = ResidualBlock(out_ch, last_ch_dim, temb_dim, act, dropout)
            self.mid_attn = AttnBlock(last_ch_dim)
            self.mid_res2 = ResidualBlock(last_ch_dim, last_ch_dim, temb_dim, act, dropout)
            down_dims = down_dims[1:]+[last_ch_dim]
            ups = []
            for i, skip_ch in zip(reversed(range(1, len(chs_mult)-1)), reversed(down_dims)):
                out_ch = chs*chs_mult[i]
                in_ch = out_ch+skip_ch
                up = nn.Module()
                up.res = nn.ModuleList([ResidualBlock(in_ch, out_ch, temb_dim, act, dropout)] +
                                       [ResidualBlock(out_ch*2, out_ch, temb_dim, act, dropout) for _ in range(1, block_depth)])
                attn = AttnBlock(out_ch) if res in attn_res else nn.Identity()
                up.attn = attn
                up.up_blc = UpBlock(skip_ch, with_conv) if i != 0 else nn.Identity()
                ups.append(up)
                res = int(res*2)
            self.ups = nn.ModuleList(ups)
            self.out = nn.Sequential(Normalize(out_ch), nonlinearity(act), nn.Conv2d(out_ch, 3, 3, padding=1))
            self.res = res

        def forward(self, x, timestep):
            t = get_timestep_embedding(timestep, self.chs)
            t = self.time_proj(t)
            h = self.conv_in(x)
            hs = []
            for blc in self.downs:
                for res_block in blc.res:
                    h = res_block(h, t)
                    h = blc.attn(h)
                    hs.append(h)
                h = blc.down_blc(h)
            h = self.mid_res1(h, t)
            h = self.mid_attn(h)
            h = self.mid_res2(h, t)
            for blc in self.ups:
                h = blc.up_blc(h)
                for res_block in blc.res:
                    h = torch.cat([h, hs.pop()], axis=1)
                    h = res_block(h, t)
                    h = blc.attn(h)
            return self.out(h)

    def make_unet():
        # 64 channels in 32 groups: with one channel a group, GroupNorm would cancel the time embedding added
        # before it, leaving time_proj a gradient of rounding noise that Adam scales up to whole steps
        return DiffUnet(chs=32, chs_mult=[2, 2], attn_res=[4], block_depth=1, temb_dim=32, res=8, dropout=0.0)

    if weights is None:
        return make_unet()

    def get_beta_schedule(beta_schedule, *, beta_start, beta_end, num_diffusion_timesteps):
        def alpha_bar(time_step):
            return math.cos((time_step + 0.008) / 1.008 * math.pi / 2) ** 2
        if beta_schedule == "cosv2":
            betas = []
            for i in range(num_diffusion_timesteps):
                t1 = i / num_diffusion_timesteps
                t2 = (i + 1) / num_diffusion_timesteps
                betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), beta_end))
            betas = np.array(betas)
        else:
            raise NotImplementedError(beta_schedule)
        assert betas.shape == (num_diffusion_timesteps,)
        return betas

    class DDIMSampler:
        def __init__(self, schedule_name: str, diff_train_steps: int, beta_start: float = 0.001, beta_end: float = 0.2):
            betas = get_beta_schedule(schedule_name, beta_start=beta_start, beta_end=beta_end,
                                      num_diffusion_timesteps=diff_train_steps)
            self.betas = torch.tensor(betas).to(torch.float32)
            self.alpha = 1 - self.betas
            self.alpha_cumprod = torch.cumprod(self.alpha, dim=0)
            self.timesteps = np.arange(0, diff_train_steps)[::-1]
            self.num_train_steps = diff_train_steps
            self._num_inference_steps = 20
            self.eta = 0

        def _get_variance(self, timestep, prev_timestep):
            alpha_t = self.alpha_cumprod[timestep]
            alpha_prev = self.alpha_cumprod[prev_timestep] if prev_timestep >= 0 else torch.tensor(1.0)
            beta_t = (1 - alpha_t)
            beta_prev = (1 - alpha_prev)
            return (beta_prev / beta_t) / (1 - alpha_t / alpha_prev)

        @staticmethod
        def treshold_sample(sample, threshold: float = 0.9956, max_clip: float = 1):
            batch_size, channels, height, width = sample.shape
            dtype = sample.dtype
            if dtype not in (torch.float32, torch.float64):
                sample = sample.float()
            sample = sample.reshape(batch_size, channels * height * width)
            abs_sample = sample.abs()
            s = torch.quantile(abs_sample, threshold, dim=1)
            s = torch.clamp(s, min=1, max=max_clip)
            s = s.unsqueeze(1)
            sample = torch.clamp(sample, -s, s) / s
            sample = sample.reshape(batch_size, channels, height, width)
            sample = sample.to(dtype)
            return sample

        def set_infer_steps(self, num_steps: int, device):
            self._num_inference_steps = num_steps
            step_ratio = self.num_train_steps // self._num_inference_steps
            timesteps = (np.arange(0, num_steps) * step_ratio).round()[::-1].copy().astype(np.int64)
            self.timesteps = torch.from_numpy(timesteps).to(device)

        @m.torch.no_grad()
        def p_sample(self, x_t, t_now, pred_net):
            prev_timestep = t_now - self.num_train_steps // self._num_inference_steps
            alpha_t = self.alpha_cumprod[t_now]
            alpha_prev = self.alpha_cumprod[prev_timestep] if prev_timestep >= 0 else torch.tensor(1.0)
            var = self._get_variance(t_now, prev_timestep)
            eps = torch.randn_like(x_t).to(x_t.device)
            t_now = (torch.ones((x_t.shape[0],), device=x_t.device, dtype=torch.int32) * t_now).to(x_t.device)
            eta_t = pred_net(x_t, t_now)
            x0_t = (x_t - eta_t * (1 - alpha_t).sqrt()) / alpha_t.sqrt()
            c1 = self.eta * var.sqrt()
            c2 = ((1 - alpha_prev) - c1 ** 2).sqrt()
            x_tminus = alpha_prev.sqrt() * x0_t + c2 * eta_t + c1 * eps
            return x_tminus, x0_t

        def q_sample(self, x_t, timesteps):
            alpha_t = self.alpha_cumprod[timesteps].to(timesteps.device)
            alpha_t = alpha_t.flatten().to(x_t.device)[:, None, None, None]
            eps = torch.randn(*list(x_t.shape)).to(x_t.device)
            x_t = alpha_t.sqrt() * x_t + (1 - alpha_t).sqrt() * eps
            return x_t, eps

    class DiffusionModel:
        def __init__(self, main_net, ema_net=None, num_steps: int = 100, input_res=(32, 32), emma: float = 0.999,
                     noise_sch_name: str = 'cosv2', **noise_sch_kwargs):
            self.device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
            self.eps_net = main_net.to(self.device)
            self.ema_net = ema_net if ema_net is not None else copy.deepcopy(main_net)
            self.ema_net = self.ema_net.to(self.device)
            self.ema_net.eval()
            self.steps = num_steps
            self.res = (3,) + input_res if isinstance(input_res, tuple) else [3] + input_res
            self.num_steps = num_steps
            self.scheduler = DDIMSampler(noise_sch_name, diff_train_steps=num_steps, **noise_sch_kwargs)
            self.emma = emma

        @m.torch.no_grad()
        def generate(self, num_samples: int = 1, num_infer_steps: int = 25, pred_net: Optional[str] = 'ema',
                     return_list: bool = False, x_t=None):
            shape = (num_samples,) + self.res if isinstance(self.res, tuple) else [num_samples] + self.res
            x_t = torch.randn(*shape).to(self.device) if x_t is None else x_t
            self.scheduler.set_infer_steps(num_infer_steps, x_t.device)
            pred_net = getattr(self, pred_net + "_net")
            xs = [x_t.cpu()]
            for step in range(num_infer_steps):
                t = self.scheduler.timesteps[step]
                x_t, _ = self.scheduler.p_sample(x_t, t, pred_net)
                xs.append(x_t.cpu())
            return xs[-1] if not return_list else xs

        @staticmethod
        def transform(img):
            img = img.to(torch.float32) / 127.5
            img = img - 1
            if len(img.shape) == 3:
                img = torch.permute(img, (2, 0, 1))
            else:
                img = torch.permute(img, (0, 3, 1, 2))
            return img

        def train_loss(self, input_batch, loss_type: Optional[str] = 'l1_loss', **losskwargs):
            bs, _, _, _ = input_batch.shape
            t = torch.randint(0, self.num_steps, size=(bs,))
            x_t, eps = self.scheduler.q_sample(input_batch, t)
            t = t.int().to(input_batch.device)
            eps_pred = self.eps_net(x_t, t)
            loss = getattr(m.F, loss_type)(eps_pred, eps, **losskwargs)
            return loss

        def update_emma(self):
            for p_ema, p in zip(self.ema_net.parameters(), self.eps_net.parameters()):
                p_ema.data = (1 - self.emma) * p.data + p_ema.data * self.emma

        def train(self):
            self.eps_net.train()

        def eval(self):
            self.eps_net.eval()

        def parameters(self):
            return self.eps_net.parameters()

        def save(self, file_name: str):
            import os
            if not os.path.exists(file_name):
                os.makedirs(file_name)
            torch.save(self.ema_net.state_dict(), file_name + '/ema.pt')
            torch.save(self.eps_net.state_dict(), file_name + "/eps.pt")

    Unet = make_unet()
    Unet.load_state_dict({k: m.torch.tensor(v) for k, v in weights.items()})
    Model = DiffusionModel(Unet, num_steps=40, input_res=(8, 8), emma=0.9)
    optim = m.optim.AdamW(Unet.parameters(), 5e-4, weight_decay=0.01)  # torch.optim in the tutorial

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (8, 8, 8, 3)).astype(np.uint8)  # NHWC uint8, as images come
    train_ds = [Model.transform(torch.tensor(images[i:i + 4])) for i in (0, 4)]

    def train_epoch(model, train_ds, opt, loss_type='mse_loss', num=5, max_norm=None, **kwargs):
        model.train()
        losses = []
        for i, inputs in enumerate(train_ds):
            opt.zero_grad()
            loss = model.train_loss(inputs, loss_type, **kwargs)
            loss.backward()
            if max_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            opt.step()
            loss = loss.item()
            losses.append(loss)
            model.update_emma()
        return sum(losses) / len(losses)

    losses = [train_epoch(Model, train_ds, optim, 'l1_loss', max_norm=1.0) for _ in range(2)]
    Model.eval()
    with m.torch.no_grad():
        val_loss = Model.train_loss(train_ds[0], 'l1_loss').item()
    Model.save(str(tmp_path))
    xs = Model.generate(2, 4, return_list=True)
    thresholded = DDIMSampler.treshold_sample(xs[-1] * 3)
    return {"losses": losses, "val_loss": val_loss, "eps": dict(Model.eps_net.state_dict()),
            "ema": dict(Model.ema_net.state_dict()), "xs": xs, "thresholded": thresholded,
            "timesteps": Model.scheduler.timesteps, "alpha_cumprod": Model.scheduler.alpha_cumprod,
            "saved": m.torch.load(str(tmp_path) + "/ema.pt")["conv_in.weight"]}


def test_ddim_tutorial(tmp_path):
    weights = weights_of(lambda m: ddim(m))
    (tmp_path / "ours").mkdir()
    (tmp_path / "torch").mkdir()
    ours = ddim(OURS, weights, tmp_path / "ours")
    torch_modules = pytorch()
    from .pytorch_programs import assert_same, plain
    ours = plain(ours)
    if torch_modules is not None:
        theirs = plain(ddim(torch_modules, weights, tmp_path / "torch"))
        # A few weights get a first gradient of rounding noise (1e-9 against 1e-3 elsewhere), which Adam's
        # first step turns into a fraction of lr (5e-4) that differs between the libraries: the weights are
        # compared to a fifth of a step, everything else (losses, samples, schedule) to float32 rounding
        for key in ("eps", "ema"):
            assert_same(ours[key], theirs.pop(key), rtol=1e-4, atol=1e-4, where=key)
        assert_same({k: v for k, v in ours.items() if k not in ("eps", "ema")}, theirs, rtol=2e-4, atol=2e-5)
    assert ours["timesteps"].tolist() == [30, 20, 10, 0]
    assert len(ours["xs"]) == 5 and ours["xs"][-1].shape == (2, 3, 8, 8)
    assert np.abs(ours["thresholded"]).max() <= 1.0
    np.testing.assert_array_equal(ours["saved"], ours["ema"]["conv_in.weight"])
    assert all(np.isfinite(ours["losses"]))
