# ruff: noqa: B007, B023, E741, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs (see tests/pytorch_programs.py), each run unchanged but for its imports on
chainrule and on PyTorch from the same weights, comparing losses, parameters and gradients.

What the other program tests do not already cover: a DDPM training step on 2-D toy data (sinusoidal
time embeddings, a noise schedule held in buffers, ``alphas_cumprod.gather(-1, t)``, MSE on the
predicted noise) and its ancestral sampling loop drawn from a ``torch.Generator``; a DQN update (a replay
buffer of tuples, ``Q(s).gather(1, a)``, a target network synced by ``load_state_dict``, ``max(1)[0]``,
``smooth_l1_loss``, ``clip_grad_norm_``, an epsilon-greedy policy); a TCN (dilated causal ``Conv1d``
with left ``F.pad`` and ``Chomp1d``, ``nn.utils.weight_norm`` and
``nn.utils.parametrizations.weight_norm``); neural style transfer (an input image optimised by
``optim.LBFGS`` with a closure, Gram matrices, content and style losses as layers inserted into a
truncated ``nn.Sequential``); and graph networks by message passing (GCN degree normalisation by
``index_add_``, GraphSAGE with ``scatter_reduce('amax'/'mean', include_self=False)``, GAT's edge softmax
by ``scatter_reduce`` and ``scatter_add_``)."""

import io
import math

import numpy as np
import pytest

from .pytorch_programs import OURS, assert_same, load, run_both, weights_of
from .test_programs_probe4_sequence import comparable

# ----------------------------------------------------------------------------------------------
# DDPM on 2-D toy data: the training step and the sampling loop
# ----------------------------------------------------------------------------------------------


def ddpm_net(m):
    torch, nn = m.torch, m.nn

    class SinusoidalPosEmb(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.dim = dim

        def forward(self, x):
            half_dim = self.dim // 2
            emb = math.log(10000) / (half_dim - 1)
            emb = torch.exp(torch.arange(half_dim, device=x.device) * -emb)
            emb = x[:, None] * emb[None, :]
            return torch.cat((emb.sin(), emb.cos()), dim=-1)

    class Denoiser(nn.Module):
        def __init__(self, dim=16):
            super().__init__()
            self.time_mlp = nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
            self.inp = nn.Linear(2, dim)
            self.mid = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())
            self.out = nn.Linear(dim, 2)

        def forward(self, x, t):
            h = self.inp(x) + self.time_mlp(t.float())
            return self.out(self.mid(h))

    return Denoiser()


def ddpm(m, weights, steps=5, T=20):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    def extract(a, t, x_shape):
        b, *_ = t.shape
        out = a.gather(-1, t)
        return out.reshape(b, *((1,) * (len(x_shape) - 1)))

    class GaussianDiffusion(nn.Module):
        def __init__(self, model, timesteps):
            super().__init__()
            self.model = model
            self.num_timesteps = timesteps
            betas = torch.linspace(1e-4, 0.2, timesteps, dtype=torch.float64)
            alphas = 1.0 - betas
            alphas_cumprod = torch.cumprod(alphas, dim=0)
            alphas_cumprod_prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)
            register_buffer = lambda name, val: self.register_buffer(name, val.to(torch.float32))
            register_buffer("betas", betas)
            register_buffer("alphas_cumprod", alphas_cumprod)
            register_buffer("alphas_cumprod_prev", alphas_cumprod_prev)
            register_buffer("sqrt_alphas_cumprod", torch.sqrt(alphas_cumprod))
            register_buffer("sqrt_one_minus_alphas_cumprod", torch.sqrt(1.0 - alphas_cumprod))
            register_buffer("sqrt_recip_alphas", torch.sqrt(1.0 / alphas))
            posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
            register_buffer("posterior_variance", posterior_variance)
            register_buffer("posterior_log_variance_clipped", torch.log(posterior_variance.clamp(min=1e-20)))

        def q_sample(self, x_start, t, noise):
            return (extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                    + extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

        def p_losses(self, x_start, t, noise):
            x_noisy = self.q_sample(x_start, t, noise)
            predicted = self.model(x_noisy, t)
            return F.mse_loss(predicted, noise)

        @torch.no_grad()
        def p_sample(self, x, t_index, generator):
            t = torch.full((x.shape[0],), t_index, dtype=torch.long)
            betas_t = extract(self.betas, t, x.shape)
            sqrt_one_minus = extract(self.sqrt_one_minus_alphas_cumprod, t, x.shape)
            model_mean = extract(self.sqrt_recip_alphas, t, x.shape) * (x - betas_t * self.model(x, t) / sqrt_one_minus)
            if t_index == 0:
                return model_mean
            noise = torch.randn(x.shape, generator=generator)
            return model_mean + (0.5 * extract(self.posterior_log_variance_clipped, t, x.shape)).exp() * noise

        @torch.no_grad()
        def sample(self, n, generator):
            x = torch.randn((n, 2), generator=generator)
            for i in reversed(range(self.num_timesteps)):
                x = self.p_sample(x, i, generator)
            return x

    model = load(m, ddpm_net(m), weights)
    diffusion = GaussianDiffusion(model, T)
    optimizer = optim.AdamW(diffusion.parameters(), lr=3e-3, weight_decay=1e-2)
    rng = np.random.default_rng(5)
    theta = rng.uniform(0, 2 * np.pi, 64)
    data = np.stack([np.cos(theta), np.sin(theta)], 1) + 0.05 * rng.standard_normal((64, 2))
    data = data.astype(np.float32)
    losses = []
    for step in range(steps):
        x0 = torch.tensor(data[16 * (step % 4):16 * (step % 4 + 1)])
        t = torch.tensor(rng.integers(0, T, 16)).long()
        noise = torch.tensor(rng.standard_normal((16, 2)).astype(np.float32))
        loss = diffusion.p_losses(x0, t, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad.clone() for p in diffusion.parameters()]
        optimizer.step()
        losses.append(loss.item())
    generator = torch.Generator().manual_seed(0)
    samples_shape = tuple(diffusion.sample(4, generator).shape)
    buffers = sorted(name for name, _ in diffusion.named_buffers())
    # the sampling loop itself, from noise given to both libraries
    x = torch.tensor(rng.standard_normal((8, 2)).astype(np.float32))
    with torch.no_grad():
        for i in reversed(range(T)):
            t = torch.full((8,), i, dtype=torch.long)
            eps = diffusion.model(x, t)
            x = extract(diffusion.sqrt_recip_alphas, t, x.shape) * (
                x - extract(diffusion.betas, t, x.shape) * eps
                / extract(diffusion.sqrt_one_minus_alphas_cumprod, t, x.shape))
            if i > 0:
                z = torch.tensor(rng.standard_normal((8, 2)).astype(np.float32))
                x = x + extract(diffusion.posterior_variance, t, x.shape).sqrt() * z
    return (losses, grads, [p.detach() for p in diffusion.parameters()], diffusion.posterior_log_variance_clipped,
            diffusion.alphas_cumprod_prev, x, samples_shape, buffers, diffusion.betas.dtype == torch.float32)


def test_ddpm_training_step_and_sampling():
    weights = weights_of(ddpm_net)
    ours, _ = run_both(ddpm, weights, rtol=1e-5, atol=1e-6)
    losses, grads, params, logvar, prev, x, samples_shape, buffers, is_f32 = ours
    assert samples_shape == (4, 2) and is_f32 and len(buffers) == 8
    assert prev[0] == 1.0 and np.all(np.isfinite(logvar)) and np.all(np.isfinite(x))
    assert all(np.abs(g).max() > 0 for g in grads)


# ----------------------------------------------------------------------------------------------
# DQN: a replay buffer, Q(s).gather(1, a), a target network, Huber loss, gradient clipping
# ----------------------------------------------------------------------------------------------


def dqn_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))


def dqn(m, weights, steps=8, batch_size=8, gamma=0.99):
    import random
    from collections import deque, namedtuple

    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Transition = namedtuple("Transition", ("state", "action", "next_state", "reward"))

    class ReplayMemory:
        def __init__(self, capacity):
            self.memory = deque([], maxlen=capacity)

        def push(self, *args):
            self.memory.append(Transition(*args))

        def sample(self, batch_size):
            return random.sample(self.memory, batch_size)

        def __len__(self):
            return len(self.memory)

    policy_net = load(m, dqn_net(m), weights)
    target_net = dqn_net(m)
    target_net.load_state_dict(policy_net.state_dict())
    optimizer = optim.AdamW(policy_net.parameters(), lr=1e-3, amsgrad=True)
    memory = ReplayMemory(100)
    rng = np.random.default_rng(3)
    random.seed(7)

    def select_action(state, eps):
        if rng.uniform() > eps:
            with torch.no_grad():
                return policy_net(state).max(1).indices.view(1, 1)
        return torch.tensor([[int(rng.integers(0, 3))]], dtype=torch.long)

    state = torch.tensor(rng.standard_normal(4).astype(np.float32)).unsqueeze(0)
    for i in range(40):
        action = select_action(state, eps=0.5)
        reward = torch.tensor([float(rng.standard_normal())])
        terminated = i % 9 == 8
        observation = rng.standard_normal(4).astype(np.float32)
        next_state = None if terminated else torch.tensor(observation, dtype=torch.float32).unsqueeze(0)
        memory.push(state, action, next_state, reward)
        state = next_state if next_state is not None else torch.tensor(-observation).unsqueeze(0)

    losses, norms = [], []
    for step in range(steps):
        transitions = memory.sample(batch_size)
        batch = Transition(*zip(*transitions))
        non_final_mask = torch.tensor(tuple(map(lambda s: s is not None, batch.next_state)), dtype=torch.bool)
        non_final_next_states = torch.cat([s for s in batch.next_state if s is not None])
        state_batch = torch.cat(batch.state)
        action_batch = torch.cat(batch.action)
        reward_batch = torch.cat(batch.reward)
        state_action_values = policy_net(state_batch).gather(1, action_batch)
        next_state_values = torch.zeros(batch_size)
        with torch.no_grad():
            next_state_values[non_final_mask] = target_net(non_final_next_states).max(1)[0]
        expected_state_action_values = (next_state_values * gamma) + reward_batch
        criterion = nn.SmoothL1Loss()
        loss = criterion(state_action_values, expected_state_action_values.unsqueeze(1))
        optimizer.zero_grad()
        loss.backward()
        norms.append(float(nn.utils.clip_grad_norm_(policy_net.parameters(), 0.5)))
        nn.utils.clip_grad_value_(policy_net.parameters(), 100)
        optimizer.step()
        losses.append(loss.item())
        # soft update of the target network, as the tutorial does
        target_net_state_dict = target_net.state_dict()
        policy_net_state_dict = policy_net.state_dict()
        for key in policy_net_state_dict:
            target_net_state_dict[key] = policy_net_state_dict[key] * 0.05 + target_net_state_dict[key] * (1 - 0.05)
        target_net.load_state_dict(target_net_state_dict)
        if step == 4:  # and a hard sync
            target_net.load_state_dict(policy_net.state_dict())
    errors = torch.tensor([0.0, 0.5, 3.0])
    huber = [F.smooth_l1_loss(errors, torch.zeros(3), reduction="none", beta=b) for b in (1.0, 0.0, 2.0)]
    huber.append(F.huber_loss(errors, torch.zeros(3), reduction="none", delta=2.0))
    return (losses, norms, [p.detach() for p in policy_net.parameters()], [p.grad for p in policy_net.parameters()],
            [p.detach() for p in target_net.parameters()], huber)


def test_dqn_replay_target_network_and_huber_loss():
    weights = weights_of(dqn_net)
    ours, _ = run_both(dqn, weights, rtol=1e-5, atol=1e-6)
    losses, norms, params, grads, target, huber = ours
    assert all(np.isfinite(losses)) and len(norms) == 8
    np.testing.assert_allclose(huber[0], [0.0, 0.125, 2.5])
    np.testing.assert_allclose(huber[1], [0.0, 0.5, 3.0])
    np.testing.assert_allclose(huber[3], 2 * huber[2])


# ----------------------------------------------------------------------------------------------
# A TCN (locuslab/TCN): dilated causal convolutions, Chomp1d, weight_norm both ways
# ----------------------------------------------------------------------------------------------


def tcn_net(m, parametrized=False):
    torch, nn, F = m.torch, m.nn, m.F
    weight_norm = nn.utils.parametrizations.weight_norm if parametrized else nn.utils.weight_norm

    class Chomp1d(nn.Module):
        def __init__(self, chomp_size):
            super().__init__()
            self.chomp_size = chomp_size

        def forward(self, x):
            return x[:, :, :-self.chomp_size].contiguous()

    class TemporalBlock(nn.Module):
        def __init__(self, n_inputs, n_outputs, kernel_size, stride, dilation, padding, dropout=0.0):
            super().__init__()
            self.conv1 = weight_norm(nn.Conv1d(n_inputs, n_outputs, kernel_size, stride=stride,
                                               padding=padding, dilation=dilation))
            self.chomp1 = Chomp1d(padding)
            self.relu1 = nn.ReLU()
            self.dropout1 = nn.Dropout(dropout)
            # the second convolution pads on the left itself (the "causal padding" spelling)
            self.pad = padding
            self.conv2 = weight_norm(nn.Conv1d(n_outputs, n_outputs, kernel_size, stride=stride, dilation=dilation))
            self.net1 = nn.Sequential(self.conv1, self.chomp1, self.relu1, self.dropout1)
            self.downsample = nn.Conv1d(n_inputs, n_outputs, 1) if n_inputs != n_outputs else None
            self.relu = nn.ReLU()

        def forward(self, x):
            out = self.net1(x)
            out = torch.relu(self.conv2(F.pad(out, (self.pad, 0))))
            res = x if self.downsample is None else self.downsample(x)
            return self.relu(out + res)

    class TemporalConvNet(nn.Module):
        def __init__(self, num_inputs, num_channels, kernel_size=2):
            super().__init__()
            layers = []
            for i in range(len(num_channels)):
                dilation_size = 2 ** i
                in_channels = num_inputs if i == 0 else num_channels[i - 1]
                layers += [TemporalBlock(in_channels, num_channels[i], kernel_size, stride=1,
                                         dilation=dilation_size, padding=(kernel_size - 1) * dilation_size)]
            self.network = nn.Sequential(*layers)
            self.linear = nn.Linear(num_channels[-1], 1)

        def forward(self, x):
            return self.linear(self.network(x)[:, :, -1])

    return TemporalConvNet(2, [4, 4, 3], kernel_size=3)


def tcn(m, weights, parametrized=False, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, tcn_net(m, parametrized), weights)
    optimizer = optim.Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.standard_normal((6, 2, 16)).astype(np.float32))
    y = x[:, 0].sum(1, keepdim=True) * 0.1
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # causality: changing the last time step leaves every earlier output unchanged
    with torch.no_grad():
        feats = model.network(x)
        x2 = x.clone()
        x2[:, :, -1] += 1.0
        feats2 = model.network(x2)
    causal = bool(torch.allclose(feats[:, :, :-1], feats2[:, :, :-1]))
    names = [n for n, _ in model.named_parameters()]
    grads = [p.grad for p in model.parameters()]
    block = model.network[0].conv1
    weight = block.weight.detach()  # recomputed from g and v
    return losses, [p.detach() for p in model.parameters()], grads, weight, names, causal, sorted(model.state_dict())


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_tcn_with_weight_norm():
    weights = weights_of(tcn_net)
    ours, _ = run_both(tcn, weights, rtol=1e-5, atol=1e-6)
    losses, params, grads, weight, names, causal, keys = ours
    assert causal and "network.0.conv1.weight_g" in names and "network.0.conv1.weight_v" in names
    assert weight.shape == (4, 2, 3)


def tcn_checkpoint_migration(m, weights):
    """A checkpoint trained under nn.utils.weight_norm (``weight_g``/``weight_v``) loaded into the same net
    built with parametrizations.weight_norm, as HiFi-GAN/EnCodec-era checkpoints are; then the weight norms
    removed for inference (HiFi-GAN's ``remove_weight_norm()``)."""
    torch, nn = m.torch, m.nn
    old = tcn(m, weights, steps=2)  # trains the old-style net
    old_model = load(m, tcn_net(m), weights)
    optimizer = m.optim.SGD(old_model.parameters(), lr=0.1)
    x = torch.tensor(np.random.default_rng(3).standard_normal((2, 2, 16)).astype(np.float32))
    old_model(x).sum().backward()
    optimizer.step()
    buffer = io.BytesIO()
    torch.save(old_model.state_dict(), buffer)
    buffer.seek(0)
    new_model = tcn_net(m, parametrized=True)
    result = new_model.load_state_dict(torch.load(buffer))
    with torch.no_grad():
        same = bool(torch.allclose(new_model(x), old_model(x), rtol=1e-6, atol=1e-7))
    for module in new_model.modules():
        if nn.utils.parametrize.is_parametrized(module):
            nn.utils.parametrize.remove_parametrizations(module, "weight")
    for module in old_model.modules():
        if hasattr(module, "weight_g"):
            nn.utils.remove_weight_norm(module)
    with torch.no_grad():
        out_new, out_old = new_model(x), old_model(x)
    return (old[0], str(result), same, sorted(new_model.state_dict()) == sorted(old_model.state_dict()),
            out_new, out_old)


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_weight_norm_checkpoint_loads_into_parametrized_weight_norm():
    weights = weights_of(tcn_net)
    ours, _ = run_both(tcn_checkpoint_migration, weights, rtol=1e-5, atol=1e-6)
    losses, result, same, same_keys, out_new, out_old = ours
    assert result == "<All keys matched successfully>" and same and same_keys
    np.testing.assert_allclose(out_new, out_old, rtol=1e-5, atol=1e-6)


def test_tcn_with_parametrized_weight_norm():
    weights = weights_of(lambda m: tcn_net(m, parametrized=True))
    ours, _ = run_both(tcn, weights, parametrized=True, rtol=1e-5, atol=1e-6)
    losses, params, grads, weight, names, causal, keys = ours
    assert causal and "network.0.conv1.parametrizations.weight.original0" in names
    assert "network.0.conv1.parametrizations.weight.original1" in keys


# ----------------------------------------------------------------------------------------------
# Neural style transfer (the PyTorch tutorial): LBFGS on the input image, Gram matrices, loss layers
# ----------------------------------------------------------------------------------------------


def style_cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1))


def style_transfer(m, weights, num_steps=4, dtype="float32", max_iter=20):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    cnn = load(m, style_cnn(m), weights).eval().to(getattr(torch, dtype))
    for p in cnn.parameters():
        p.requires_grad_(False)

    class ContentLoss(nn.Module):
        def __init__(self, target):
            super().__init__()
            self.target = target.detach()

        def forward(self, input):
            self.loss = F.mse_loss(input, self.target)
            return input

    def gram_matrix(input):
        a, b, c, d = input.size()
        features = input.view(a * b, c * d)
        G = torch.mm(features, features.t())
        return G.div(a * b * c * d)

    class StyleLoss(nn.Module):
        def __init__(self, target_feature):
            super().__init__()
            self.target = gram_matrix(target_feature).detach()

        def forward(self, input):
            G = gram_matrix(input)
            self.loss = F.mse_loss(G, self.target)
            return input

    class Normalization(nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.mean = torch.tensor(mean, dtype=getattr(torch, dtype)).view(-1, 1, 1)
            self.std = torch.tensor(std, dtype=getattr(torch, dtype)).view(-1, 1, 1)

        def forward(self, img):
            return (img - self.mean) / self.std

    rng = np.random.default_rng(4)
    style_img = torch.tensor(rng.uniform(0, 1, (1, 3, 8, 8)).astype(dtype))
    content_img = torch.tensor(rng.uniform(0, 1, (1, 3, 8, 8)).astype(dtype))
    content_layers, style_layers = ["conv_3"], ["conv_1", "conv_2", "conv_3", "conv_4"]
    normalization = Normalization([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    content_losses, style_losses = [], []
    model = nn.Sequential(normalization)
    i = 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            i += 1
            name = f"conv_{i}"
        elif isinstance(layer, nn.ReLU):
            name = f"relu_{i}"
            layer = nn.ReLU(inplace=False)
        elif isinstance(layer, nn.MaxPool2d):
            name = f"pool_{i}"
        else:
            raise RuntimeError(f"Unrecognized layer: {layer.__class__.__name__}")
        model.add_module(name, layer)
        if name in content_layers:
            target = model(content_img).detach()
            content_loss = ContentLoss(target)
            model.add_module(f"content_loss_{i}", content_loss)
            content_losses.append(content_loss)
        if name in style_layers:
            target_feature = model(style_img).detach()
            style_loss = StyleLoss(target_feature)
            model.add_module(f"style_loss_{i}", style_loss)
            style_losses.append(style_loss)
    for i in range(len(model) - 1, -1, -1):
        if isinstance(model[i], (ContentLoss, StyleLoss)):
            break
    model = model[:(i + 1)]

    input_img = content_img.clone()
    input_img.requires_grad_(True)
    model.eval()
    model.requires_grad_(False)
    optimizer = optim.LBFGS([input_img], max_iter=max_iter)
    style_weight, content_weight = 1e4, 1
    log = []
    run = [0]
    while run[0] <= num_steps:
        def closure():
            with torch.no_grad():
                input_img.clamp_(0, 1)
            optimizer.zero_grad()
            model(input_img)
            style_score = sum(sl.loss for sl in style_losses) * style_weight
            content_score = sum(cl.loss for cl in content_losses) * content_weight
            loss = style_score + content_score
            loss.backward()
            run[0] += 1
            log.append((style_score.item(), content_score.item()))
            return style_score + content_score

        optimizer.step(closure)
    with torch.no_grad():
        input_img.clamp_(0, 1)
    names = [name for name, _ in model.named_children()]
    return log, input_img.detach(), input_img.grad, names, len(optimizer.state_dict()["state"])


def test_neural_style_transfer_with_lbfgs():
    weights = weights_of(style_cnn)
    # LBFGS's 20 inner iterations amplify float32 rounding (2e-4 apart by the 20th loss; in float64 the
    # two libraries agree to 1e-12): the whole run is compared in float64, a short one in float32, whose first
    # loss already differs in its 7th digit (convolutions and Gram matrices summed in other orders): its image
    # gradient (largest 0.3) agrees to 2e-6
    run_both(style_transfer, weights, max_iter=3, rtol=1e-4, atol=1e-5)
    ours, _ = run_both(style_transfer, weights, dtype="float64", rtol=1e-10, atol=1e-12)
    log, img, grad, names, n_state = ours
    assert names[-1] == "style_loss_4" and "content_loss_3" in names and n_state == 1
    assert len(log) > 5 and log[-1][0] < log[0][0]
    assert img.min() >= 0 and img.max() <= 1


# ----------------------------------------------------------------------------------------------
# Graph networks by message passing over an edge list (GCN, GraphSAGE max/mean, GAT), PyG-free
# ----------------------------------------------------------------------------------------------


def gnn_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class GCNConv(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.lin = nn.Linear(in_channels, out_channels, bias=False)
            self.bias = nn.Parameter(torch.zeros(out_channels))

        def forward(self, x, edge_index):
            num_nodes = x.size(0)
            loops = torch.arange(num_nodes, device=x.device).unsqueeze(0).repeat(2, 1)
            edge_index = torch.cat([edge_index, loops], dim=1)
            row, col = edge_index
            deg = torch.zeros(num_nodes, dtype=x.dtype).index_add_(0, col, torch.ones(col.size(0), dtype=x.dtype))
            deg_inv_sqrt = deg.pow(-0.5)
            deg_inv_sqrt[deg_inv_sqrt == float("inf")] = 0
            norm = deg_inv_sqrt[row] * deg_inv_sqrt[col]
            x = self.lin(x)
            out = torch.zeros_like(x).index_add_(0, col, norm.view(-1, 1) * x[row])
            return out + self.bias

    class SAGEConv(nn.Module):
        def __init__(self, in_channels, out_channels, aggr):
            super().__init__()
            self.aggr = aggr
            self.lin_l = nn.Linear(in_channels, out_channels)
            self.lin_r = nn.Linear(in_channels, out_channels, bias=False)

        def forward(self, x, edge_index):
            src, dst = edge_index
            msg = x[src]
            index = dst.unsqueeze(-1).expand_as(msg)
            out = torch.zeros(x.size(0), x.size(1), dtype=x.dtype)
            out = out.scatter_reduce(0, index, msg, reduce=self.aggr, include_self=False)
            return self.lin_l(out) + self.lin_r(x)

    class GATConv(nn.Module):
        def __init__(self, in_channels, out_channels, heads=2):
            super().__init__()
            self.heads, self.out_channels = heads, out_channels
            self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
            self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
            self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
            nn.init.xavier_uniform_(self.att_src)
            nn.init.xavier_uniform_(self.att_dst)

        def forward(self, x, edge_index):
            H, C = self.heads, self.out_channels
            N = x.size(0)
            h = self.lin(x).view(-1, H, C)
            alpha_src = (h * self.att_src).sum(dim=-1)
            alpha_dst = (h * self.att_dst).sum(dim=-1)
            src, dst = edge_index
            e = F.leaky_relu(alpha_src[src] + alpha_dst[dst], 0.2)  # [E, H]
            index = dst.unsqueeze(-1).expand_as(e)
            e_max = torch.full((N, H), float("-inf")).scatter_reduce(0, index, e, "amax", include_self=True)
            e = (e - e_max[dst]).exp()
            denom = torch.zeros(N, H).scatter_add_(0, index, e)
            alpha = e / (denom[dst] + 1e-16)
            out = torch.zeros(N, H, C).index_add_(0, dst, alpha.unsqueeze(-1) * h[src])
            return out.mean(dim=1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = GCNConv(3, 8)
            self.sage_max = SAGEConv(8, 6, "amax")
            self.sage_mean = SAGEConv(8, 6, "mean")
            self.gat = GATConv(12, 4)
            self.classifier = nn.Linear(4, 3)

        def forward(self, x, edge_index):
            x = F.relu(self.conv1(x, edge_index))
            x = F.dropout(x, p=0.5, training=self.training)
            x = torch.cat([self.sage_max(x, edge_index), self.sage_mean(x, edge_index)], dim=-1).relu()
            return self.classifier(F.elu(self.gat(x, edge_index)))

    return Net()


def gnn(m, weights, epochs=5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, gnn_net(m), weights)
    rng = np.random.default_rng(8)
    num_nodes = 10
    edges = [(i, (i + 1) % 9) for i in range(9)] + [(2, 5), (5, 2), (0, 4), (7, 3), (3, 7), (1, 1)]
    edge_index = torch.tensor(edges, dtype=torch.long).t().contiguous()  # node 9 is isolated
    x = torch.tensor(rng.standard_normal((num_nodes, 3)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 3, num_nodes))
    train_mask = torch.zeros(num_nodes, dtype=torch.bool)
    train_mask[:7] = True
    optimizer = optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    model.eval()  # dropout off so both libraries see the same network
    losses = []
    for epoch in range(epochs):
        optimizer.zero_grad()
        out = model(x, edge_index)
        loss = F.cross_entropy(out[train_mask], y[train_mask])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        pred = model(x, edge_index).argmax(dim=1)
        acc = int((pred[~train_mask] == y[~train_mask]).sum()) / int((~train_mask).sum())
        h = F.relu(model.conv1(x, edge_index))
        pooled_max = torch.zeros(2, 8).scatter_reduce(0, torch.tensor([0] * 5 + [1] * 5).unsqueeze(-1).expand(-1, 8),
                                                      h, "amax", include_self=False)
        batch = torch.tensor([0] * 5 + [1] * 5)
        pooled_mean = torch.zeros(2, 8).index_reduce_(0, batch, h, "mean", include_self=False)
        counts = torch.bincount(batch, minlength=2)
        pooled_sum = torch.zeros(2, 8).index_add(0, batch, h)
    return (losses, [p.detach() for p in model.parameters()], [p.grad for p in model.parameters()], pred, acc,
            pooled_max, pooled_mean, pooled_sum / counts.unsqueeze(-1))


@pytest.mark.filterwarnings("ignore:index_reduce\\(\\) is in beta:UserWarning")
def test_message_passing_gcn_sage_and_gat():
    weights = weights_of(gnn_net)
    ours, _ = run_both(gnn, weights, rtol=1e-5, atol=1e-6)
    losses, params, grads, pred, acc, pooled_max, pooled_mean, pooled_avg = ours
    assert losses[-1] < losses[0] and all(np.abs(g).max() > 0 for g in grads)
    np.testing.assert_allclose(pooled_mean, pooled_avg, rtol=1e-6)
    assert pred.shape == (10,)
    # the isolated node (9) receives no message: scatter_reduce(include_self=False) leaves its zeros
    model = load(OURS, gnn_net(OURS), weights).eval()
    x = OURS.torch.ones(10, 8)
    edge_index = OURS.torch.tensor([[0, 1, 2], [1, 1, 3]])
    out = OURS.torch.zeros(10, 8).scatter_reduce(0, edge_index[1].unsqueeze(-1).expand(-1, 8), x[edge_index[0]] * 2,
                                                 "amax", include_self=False)
    assert out[9].abs().sum().item() == 0 and out[1].tolist() == [2.0] * 8


# ----------------------------------------------------------------------------------------------
# The spatial transformer tutorial: a localisation net, affine_grid, grid_sample
# ----------------------------------------------------------------------------------------------


def stn_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, kernel_size=3)
            self.fc1 = nn.Linear(4 * 3 * 3, 3)
            self.localization = nn.Sequential(nn.Conv2d(1, 4, kernel_size=3), nn.MaxPool2d(2, stride=2), nn.ReLU(True))
            self.fc_loc = nn.Sequential(nn.Linear(4 * 3 * 3, 8), nn.ReLU(True), nn.Linear(8, 3 * 2))
            self.fc_loc[2].weight.data.zero_()
            # the tutorial starts from the identity, whose grid points fall on pixel centres: the kinks of
            # bilinear sampling, where the gradient in the grid is one-sided by each library's rounding of
            # the base grid (PyTorch's own is off the centres by an ulp at most sizes). A slight shift
            # keeps the points off the kinks.
            self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0.03, 0, 1, -0.02], dtype=torch.float))

        def stn(self, x, align_corners, mode, padding_mode):
            xs = self.localization(x)
            xs = xs.view(-1, 4 * 3 * 3)
            theta = self.fc_loc(xs)
            theta = theta.view(-1, 2, 3)
            grid = F.affine_grid(theta, x.size(), align_corners=align_corners)
            return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)

        def forward(self, x, align_corners=False, mode="bilinear", padding_mode="zeros"):
            x = self.stn(x, align_corners, mode, padding_mode)
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = x.view(-1, 4 * 3 * 3)
            return F.log_softmax(self.fc1(x), dim=1)

    return Net()


def spatial_transformer(m, weights, steps=4, dtype="float32", **kwargs):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, stn_net(m), weights).to(getattr(torch, dtype))
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    rng = np.random.default_rng(12)
    data = torch.tensor(rng.standard_normal((5, 1, 8, 8)).astype(dtype))
    target = torch.tensor(rng.integers(0, 3, 5))
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        output = model(data, **kwargs)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        warped = model.stn(data, kwargs.get("align_corners", False), kwargs.get("mode", "bilinear"),
                           kwargs.get("padding_mode", "zeros"))
    # float32 grids one rounding apart sample the image (W/2)·|∇image| ≈ 10x further apart: the warped
    # images are compared in float64 (1e-15 apart), the training in float32 too
    return losses, [p.detach() for p in model.parameters()], [p.grad for p in model.parameters()], (
        warped if dtype == "float64" else None)


def test_spatial_transformer_network():
    weights = weights_of(stn_net)
    run_both(spatial_transformer, weights, rtol=1e-5, atol=1e-6)
    ours, _ = run_both(spatial_transformer, weights, dtype="float64", rtol=1e-10, atol=1e-12)
    losses, params, grads, warped = ours
    assert np.abs(grads[-1]).max() > 0 and warped.shape == (5, 1, 8, 8)  # theta's bias learns through grid_sample
    for kwargs in (dict(align_corners=True, padding_mode="border"), dict(padding_mode="reflection"),
                   dict(mode="nearest", align_corners=True), dict(mode="bicubic")):
        run_both(spatial_transformer, weights, dtype="float64", rtol=1e-10, atol=1e-12, **kwargs)


# ----------------------------------------------------------------------------------------------
# NeRF's volume rendering: positional encoding, cumprod transmittance, hierarchical sampling
# ----------------------------------------------------------------------------------------------


def nerf_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(3 + 3 * 2 * 3, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


def nerf(m, weights, steps=3, N_samples=8, N_importance=6):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, nerf_net(m), weights)

    def embed(x, multires=3):
        out = [x]
        for freq in 2.0 ** torch.linspace(0.0, multires - 1, multires):
            for p_fn in (torch.sin, torch.cos):
                out.append(p_fn(x * freq))
        return torch.cat(out, -1)

    def raw2outputs(raw, z_vals, rays_d):
        raw2alpha = lambda raw, dists, act_fn=F.relu: 1.0 - torch.exp(-act_fn(raw) * dists)
        dists = z_vals[..., 1:] - z_vals[..., :-1]
        dists = torch.cat([dists, torch.Tensor([1e10]).expand(dists[..., :1].shape)], -1)
        dists = dists * torch.norm(rays_d[..., None, :], dim=-1)
        rgb = torch.sigmoid(raw[..., :3])
        alpha = raw2alpha(raw[..., 3], dists)
        transmittance = torch.cumprod(torch.cat([torch.ones((alpha.shape[0], 1)), 1.0 - alpha + 1e-10], -1), -1)
        weights = alpha * transmittance[:, :-1]
        rgb_map = torch.sum(weights[..., None] * rgb, -2)
        depth_map = torch.sum(weights * z_vals, -1)
        disp_map = 1.0 / torch.max(1e-10 * torch.ones_like(depth_map), depth_map / torch.sum(weights, -1))
        acc_map = torch.sum(weights, -1)
        return rgb_map, disp_map, acc_map, weights, depth_map

    def sample_pdf(bins, weights, N_samples, u):
        weights = weights + 1e-5
        pdf = weights / torch.sum(weights, -1, keepdim=True)
        cdf = torch.cumsum(pdf, -1)
        cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)
        u = u.contiguous()
        inds = torch.searchsorted(cdf, u, right=True)
        below = torch.max(torch.zeros_like(inds - 1), inds - 1)
        above = torch.min((cdf.shape[-1] - 1) * torch.ones_like(inds), inds)
        inds_g = torch.stack([below, above], -1)
        matched_shape = [inds_g.shape[0], inds_g.shape[1], cdf.shape[-1]]
        cdf_g = torch.gather(cdf.unsqueeze(1).expand(matched_shape), 2, inds_g)
        bins_g = torch.gather(bins.unsqueeze(1).expand(matched_shape), 2, inds_g)
        denom = cdf_g[..., 1] - cdf_g[..., 0]
        denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
        t = (u - cdf_g[..., 0]) / denom
        return bins_g[..., 0] + t * (bins_g[..., 1] - bins_g[..., 0])

    rng = np.random.default_rng(21)
    N_rays = 6
    rays_o = torch.tensor(rng.standard_normal((N_rays, 3)).astype(np.float32))
    rays_d = torch.tensor(rng.standard_normal((N_rays, 3)).astype(np.float32))
    target = torch.tensor(rng.uniform(0, 1, (N_rays, 3)).astype(np.float32))
    near, far = 2.0, 6.0
    optimizer = optim.Adam(model.parameters(), lr=5e-3, betas=(0.9, 0.999))
    img2mse = lambda x, y: torch.mean((x - y) ** 2)
    mse2psnr = lambda x: -10.0 * torch.log(x) / torch.log(torch.Tensor([10.0]))
    log = []
    for step in range(steps):
        t_vals = torch.linspace(0.0, 1.0, steps=N_samples)
        z_vals = near * (1.0 - t_vals) + far * t_vals
        z_vals = z_vals.expand([N_rays, N_samples])
        mids = 0.5 * (z_vals[..., 1:] + z_vals[..., :-1])
        upper = torch.cat([mids, z_vals[..., -1:]], -1)
        lower = torch.cat([z_vals[..., :1], mids], -1)
        t_rand = torch.tensor(rng.uniform(0, 1, z_vals.shape).astype(np.float32))
        z_vals = lower + (upper - lower) * t_rand
        pts = rays_o[..., None, :] + rays_d[..., None, :] * z_vals[..., :, None]
        raw = model(embed(pts.reshape(-1, 3))).reshape(N_rays, N_samples, 4)
        rgb_map, disp_map, acc_map, weights, depth_map = raw2outputs(raw, z_vals, rays_d)
        z_vals_mid = 0.5 * (z_vals[..., 1:] + z_vals[..., :-1])
        u = torch.tensor(rng.uniform(0, 1, (N_rays, N_importance)).astype(np.float32))
        z_samples = sample_pdf(z_vals_mid, weights[..., 1:-1], N_importance, u).detach()
        z_vals, _ = torch.sort(torch.cat([z_vals, z_samples], -1), -1)
        pts = rays_o[..., None, :] + rays_d[..., None, :] * z_vals[..., :, None]
        raw = model(embed(pts.reshape(-1, 3))).reshape(N_rays, N_samples + N_importance, 4)
        rgb_fine, disp_fine, acc_fine, _, _ = raw2outputs(raw, z_vals, rays_d)
        optimizer.zero_grad()
        img_loss = img2mse(rgb_fine, target)
        loss = img_loss + img2mse(rgb_map, target)
        psnr = mse2psnr(img_loss)
        loss.backward()
        optimizer.step()
        log.append((loss.item(), psnr.item()))
    return (log, [p.detach() for p in model.parameters()], [p.grad for p in model.parameters()], z_samples,
            disp_fine.detach(), acc_fine.detach())


# a ray whose densities all ReLU to 0 has depth/acc = 0/0 = NaN disparity, silently in PyTorch; NumPy
# warns from Divide's forward (autograd/ops/elementwise.py, the lead's file: see the report)
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_nerf_volume_rendering_and_hierarchical_sampling():
    weights = weights_of(nerf_net)
    ours, _ = run_both(nerf, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, z_samples, disp, acc = ours
    assert np.all((z_samples >= 2.0) & (z_samples <= 6.0)) and np.all(acc <= 1 + 1e-6)
    assert all(np.isfinite(g).all() for g in grads) and np.isnan(disp).any()


# ----------------------------------------------------------------------------------------------
# VQ-VAE: nearest-codebook quantisation, the straight-through estimator, EMA codebook updates
# ----------------------------------------------------------------------------------------------


def vqvae_net(m):
    nn = m.nn

    class VQVAE(nn.Module):
        def __init__(self, num_embeddings=6, embedding_dim=3):
            super().__init__()
            self.encoder = nn.Sequential(nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.ReLU(),
                                         nn.Conv2d(8, embedding_dim, 1))
            self.embedding = nn.Embedding(num_embeddings, embedding_dim)
            self.embedding.weight.data.uniform_(-1 / num_embeddings, 1 / num_embeddings)
            self.decoder = nn.Sequential(nn.ConvTranspose2d(embedding_dim, 8, 4, stride=2, padding=1), nn.ReLU(),
                                         nn.Conv2d(8, 1, 3, padding=1))
            self.register_buffer("ema_cluster_size", m.torch.zeros(num_embeddings))
            self.register_buffer("ema_w", self.embedding.weight.data.clone())

    return VQVAE()


def vqvae(m, weights, steps=4, commitment_cost=0.25, decay=0.9, epsilon=1e-5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, vqvae_net(m), weights)
    emb = model.embedding

    def quantize(inputs, ema):
        inputs = inputs.permute(0, 2, 3, 1).contiguous()
        input_shape = inputs.shape
        flat_input = inputs.view(-1, emb.embedding_dim)
        distances = (torch.sum(flat_input ** 2, dim=1, keepdim=True) + torch.sum(emb.weight ** 2, dim=1)
                     - 2 * torch.matmul(flat_input, emb.weight.t()))
        encoding_indices = torch.argmin(distances, dim=1).unsqueeze(1)
        encodings = torch.zeros(encoding_indices.shape[0], emb.num_embeddings, device=inputs.device)
        encodings.scatter_(1, encoding_indices, 1)
        quantized = torch.matmul(encodings, emb.weight).view(input_shape)
        if ema and model.training:
            model.ema_cluster_size = model.ema_cluster_size * decay + (1 - decay) * torch.sum(encodings, 0)
            n = torch.sum(model.ema_cluster_size.data)
            model.ema_cluster_size = ((model.ema_cluster_size + epsilon) / (n + emb.num_embeddings * epsilon) * n)
            dw = torch.matmul(encodings.t(), flat_input)
            model.ema_w = nn.Parameter(model.ema_w * decay + (1 - decay) * dw)
            emb.weight = nn.Parameter(model.ema_w / model.ema_cluster_size.unsqueeze(1))
            e_latent_loss = F.mse_loss(quantized.detach(), inputs)
            loss = commitment_cost * e_latent_loss
        else:
            e_latent_loss = F.mse_loss(quantized.detach(), inputs)
            q_latent_loss = F.mse_loss(quantized, inputs.detach())
            loss = q_latent_loss + commitment_cost * e_latent_loss
        quantized = inputs + (quantized - inputs).detach()
        avg_probs = torch.mean(encodings, dim=0)
        perplexity = torch.exp(-torch.sum(avg_probs * torch.log(avg_probs + 1e-10)))
        return loss, quantized.permute(0, 3, 1, 2).contiguous(), perplexity, encoding_indices

    rng = np.random.default_rng(6)
    x = torch.tensor(rng.uniform(0, 1, (4, 1, 8, 8)).astype(np.float32))
    optimizer = optim.Adam(model.parameters(), lr=1e-2, amsgrad=False)
    log = []
    for step in range(steps):
        optimizer.zero_grad()
        vq_loss, quantized, perplexity, indices = quantize(model.encoder(x), ema=False)
        recon = model.decoder(quantized)
        loss = F.mse_loss(recon, x) + vq_loss
        loss.backward()
        optimizer.step()
        log.append((loss.item(), perplexity.item()))
    grads = [p.grad for p in model.parameters()]
    # the EMA variant replaces the codebook by hand (a fresh Parameter, not in the optimizer)
    with torch.no_grad():
        _, _, _, ema_indices = quantize(model.encoder(x), ema=True)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    return log, [p.detach() for p in model.parameters()], grads, indices, ema_indices, sd


def test_vqvae_straight_through_and_ema_codebook():
    weights = weights_of(vqvae_net)
    ours, _ = run_both(vqvae, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, indices, ema_indices, sd = ours
    assert grads[4].shape == (6, 3) and np.abs(grads[4]).max() > 0  # the codebook learns by q_latent_loss
    assert np.abs(grads[0]).max() > 0  # and the encoder through the straight-through estimator
    assert set(sd) >= {"ema_cluster_size", "ema_w", "embedding.weight"}


# ----------------------------------------------------------------------------------------------
# PointNet: shared MLPs as Conv1d(k=1), a T-Net with bmm, max pooling over points, its regulariser
# ----------------------------------------------------------------------------------------------


def pointnet_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class STNkd(nn.Module):
        def __init__(self, k=3):
            super().__init__()
            self.conv1 = nn.Conv1d(k, 8, 1)
            self.conv2 = nn.Conv1d(8, 16, 1)
            self.fc1 = nn.Linear(16, 8)
            self.fc2 = nn.Linear(8, k * k)
            self.bn1 = nn.BatchNorm1d(8)
            self.bn2 = nn.BatchNorm1d(16)
            self.bn3 = nn.BatchNorm1d(8)
            self.k = k

        def forward(self, x):
            batchsize = x.size()[0]
            x = F.relu(self.bn1(self.conv1(x)))
            x = F.relu(self.bn2(self.conv2(x)))
            x = torch.max(x, 2, keepdim=True)[0]
            x = x.view(-1, 16)
            x = F.relu(self.bn3(self.fc1(x)))
            x = self.fc2(x)
            iden = torch.from_numpy(np.eye(self.k).flatten().astype(np.float32)).view(1, self.k * self.k).to(x.dtype)
            iden = iden.repeat(batchsize, 1)
            x = x + iden
            return x.view(-1, self.k, self.k)

    class PointNetCls(nn.Module):
        def __init__(self, k=3):
            super().__init__()
            self.stn = STNkd(3)
            self.conv1 = nn.Conv1d(3, 8, 1)
            self.fstn = STNkd(8)
            self.conv2 = nn.Conv1d(8, 16, 1)
            self.bn1 = nn.BatchNorm1d(8)
            self.bn2 = nn.BatchNorm1d(16)
            self.fc = nn.Linear(16, k)

        def forward(self, x):
            trans = self.stn(x)
            x = x.transpose(2, 1)
            x = torch.bmm(x, trans)
            x = x.transpose(2, 1)
            x = F.relu(self.bn1(self.conv1(x)))
            trans_feat = self.fstn(x)
            x = torch.bmm(x.transpose(2, 1), trans_feat).transpose(2, 1)
            x = self.bn2(self.conv2(x))
            x, argmax = torch.max(x, 2)
            return F.log_softmax(self.fc(x), dim=1), trans_feat, argmax

    return PointNetCls()


def pointnet(m, weights, steps=3, dtype="float32"):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, pointnet_net(m), weights).to(getattr(torch, dtype))

    def feature_transform_regularizer(trans):
        d = trans.size()[1]
        I = torch.eye(d, dtype=trans.dtype)[None, :, :]
        return torch.mean(torch.norm(torch.bmm(trans, trans.transpose(2, 1)) - I, dim=(1, 2)))

    rng = np.random.default_rng(13)
    points = torch.tensor(rng.standard_normal((6, 12, 3)).astype(dtype)).transpose(2, 1)
    target = torch.tensor(rng.integers(0, 3, 6))
    optimizer = optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999))
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    losses = []
    for step in range(steps):
        model.train()
        optimizer.zero_grad()
        pred, trans_feat, argmax = model(points)
        loss = F.nll_loss(pred, target) + feature_transform_regularizer(trans_feat) * 0.001
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        pred, _, _ = model(points)
    correct = pred.data.max(1)[1].eq(target.data).cpu().sum().item()
    # a bias feeding a BatchNorm is removed by it: its gradient is zero up to rounding, and Adam's step on
    # it (rounding noise over its own square root) is noise in either library; its gradient is checked apart
    shifted_away = [(name, p) for name, p in model.named_parameters() if name in PRE_NORM_BIASES]
    kept = [(name, p) for name, p in model.named_parameters() if name not in PRE_NORM_BIASES]
    return (losses, [p.detach() for _, p in kept], [p.grad for _, p in kept], argmax, pred, correct,
            [b.clone() for b in model.buffers()], max(p.grad.abs().max().item() for _, p in shifted_away))


PRE_NORM_BIASES = {f"{net}{layer}.bias" for net in ("stn.", "fstn.") for layer in ("conv1", "conv2", "fc1", "bn2")}
PRE_NORM_BIASES |= {"conv1.bias", "conv2.bias"}


def test_pointnet_classifier():
    weights = weights_of(pointnet_net)
    # in float32 the losses and the kept parameters are compared: gradients of size ~3 through two T-nets
    # (bmm, BatchNorm, max) come out 4e-6 apart, as two summation orders do, and eval()'s running
    # statistics see the noise-driven pre-norm biases; in float64 everything agrees to 1e-11
    ours32, theirs32 = run_both(pointnet, weights, compare=False)
    if theirs32 is not None:
        assert_same(ours32[:2], theirs32[:2], rtol=1e-5, atol=1e-6)
    ours, _ = run_both(pointnet, weights, dtype="float64", rtol=1e-8, atol=1e-10)
    losses, params, grads, argmax, pred, correct, buffers, shifted_away = ours
    # (from PyTorch's initial weights for seed 0 the pre-norm biases' largest gradient is 0.0075, in both
    # libraries to 1e-10, compared above: not the rounding noise of a bias a BatchNorm removes entirely)
    assert argmax.shape == (6, 16) and 0 <= correct <= 6 and shifted_away < 0.05


# ----------------------------------------------------------------------------------------------
# Prototypical networks (Snell et al.): an episode's class prototypes, squared Euclidean cdist
# ----------------------------------------------------------------------------------------------


def protonet_net(m):
    nn = m.nn

    def conv_block(in_channels, out_channels):
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels),
                             nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(conv_block(1, 4), conv_block(4, 4), nn.Flatten())


def protonet(m, weights, episodes=3, n_way=3, n_support=2, n_query=2, dtype="float32"):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    encoder = load(m, protonet_net(m), weights).to(getattr(torch, dtype))
    optimizer = optim.Adam(encoder.parameters(), lr=1e-3)
    rng = np.random.default_rng(14)
    log = []
    for episode in range(episodes):
        xs = torch.tensor(rng.standard_normal((n_way, n_support, 1, 8, 8)).astype(dtype))
        xq = torch.tensor(rng.standard_normal((n_way, n_query, 1, 8, 8)).astype(dtype))
        target_inds = torch.arange(0, n_way).view(n_way, 1, 1).expand(n_way, n_query, 1).long()
        x = torch.cat([xs.view(n_way * n_support, *xs.size()[2:]), xq.view(n_way * n_query, *xq.size()[2:])], 0)
        z = encoder(x)
        z_dim = z.size(-1)
        z_proto = z[:n_way * n_support].view(n_way, n_support, z_dim).mean(1)
        zq = z[n_way * n_support:]
        dists = torch.cdist(zq, z_proto) ** 2
        dists_ref = (zq.unsqueeze(1) - z_proto.unsqueeze(0)).pow(2).sum(2)
        log_p_y = F.log_softmax(-dists, dim=1).view(n_way, n_query, -1)
        loss_val = -log_p_y.gather(2, target_inds).squeeze().view(-1).mean()
        _, y_hat = log_p_y.max(2)
        acc_val = torch.eq(y_hat, target_inds.squeeze(2)).float().mean()
        optimizer.zero_grad()
        loss_val.backward()
        optimizer.step()
        log.append((loss_val.item(), acc_val.item(), bool((dists - dists_ref).abs().max() < 1e-4)))
    # each convolution's bias feeds a BatchNorm, which removes it: compared apart, as PointNet's above
    kept = [p for name, p in encoder.named_parameters() if not name.endswith("0.bias")]
    shifted_away = max(p.grad.abs().max().item() for name, p in encoder.named_parameters() if name.endswith("0.bias"))
    return log, [p.detach() for p in kept], [p.grad for p in kept], shifted_away < 1e-5  # others: up to 4


def test_prototypical_networks_episode():
    weights = weights_of(protonet_net)
    # float32 gradients of size ~4 come out 3e-6 apart (summation order); float64 agrees to 1e-14
    run_both(protonet, weights, rtol=1e-5, atol=1e-5)
    ours, _ = run_both(protonet, weights, dtype="float64", rtol=1e-10, atol=1e-12)
    log, params, grads, biases_shifted_away = ours
    assert biases_shifted_away and len(params) == 6
    assert all(entry[2] for entry in log)  # cdist² is the broadcast squared distance


# ----------------------------------------------------------------------------------------------
# TRPO's natural-gradient step: flat gradients, Fisher-vector products by double backward of the KL,
# conjugate gradient, a backtracking line search through vector_to_parameters
# ----------------------------------------------------------------------------------------------


def trpo_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))


def trpo(m, weights, max_kl=1e-2, damping=1e-1, iterations=2):
    torch, nn, F = m.torch, m.nn, m.F
    from_vec, to_vec = nn.utils.vector_to_parameters, nn.utils.parameters_to_vector
    policy = load(m, trpo_net(m), weights)
    rng = np.random.default_rng(15)
    states = torch.tensor(rng.standard_normal((20, 4)).astype(np.float32))
    actions = torch.tensor(rng.integers(0, 3, 20))
    advantages = torch.tensor(rng.standard_normal(20).astype(np.float32))
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    def get_kl():
        logits = policy(states)
        log_p = F.log_softmax(logits, dim=1)
        log_p_old = log_p.detach()
        return (log_p_old.exp() * (log_p_old - log_p)).sum(1, keepdim=True).mean()

    def Fvp(v):
        kl = get_kl()
        grads = torch.autograd.grad(kl, policy.parameters(), create_graph=True)
        flat_grad_kl = torch.cat([grad.view(-1) for grad in grads])
        kl_v = (flat_grad_kl * v).sum()
        grads = torch.autograd.grad(kl_v, policy.parameters())
        flat_grad_grad_kl = torch.cat([grad.contiguous().view(-1) for grad in grads]).data
        return flat_grad_grad_kl + v * damping

    def conjugate_gradients(Avp, b, nsteps, residual_tol=1e-10):
        x = torch.zeros(b.size())
        r = b.clone()
        p = b.clone()
        rdotr = torch.dot(r, r)
        for i in range(nsteps):
            _Avp = Avp(p)
            alpha = rdotr / torch.dot(p, _Avp)
            x += alpha * p
            r -= alpha * _Avp
            new_rdotr = torch.dot(r, r)
            betta = new_rdotr / rdotr
            p = r + betta * p
            rdotr = new_rdotr
            if rdotr < residual_tol:
                break
        return x

    fixed_log_prob = F.log_softmax(policy(states), 1).gather(1, actions[:, None]).squeeze(1).detach()

    def get_loss(volatile=False):
        with torch.set_grad_enabled(not volatile):
            log_prob = F.log_softmax(policy(states), 1).gather(1, actions[:, None]).squeeze(1)
            return (-advantages * torch.exp(log_prob - fixed_log_prob)).mean()

    log = []
    for it in range(iterations):
        loss = get_loss()
        grads = torch.autograd.grad(loss, policy.parameters())
        loss_grad = torch.cat([grad.view(-1) for grad in grads]).data
        stepdir = conjugate_gradients(Fvp, -loss_grad, 10)
        shs = 0.5 * (stepdir * Fvp(stepdir)).sum(0, keepdim=True)
        lm = torch.sqrt(shs / max_kl)
        fullstep = stepdir / lm[0]
        neggdotstepdir = (-loss_grad * stepdir).sum(0, keepdim=True)
        prev_params = to_vec(policy.parameters())
        fval = get_loss(True).data
        accepted = None
        for _n_backtracks, stepfrac in enumerate(0.5 ** np.arange(10)):
            xnew = prev_params + stepfrac * fullstep
            from_vec(xnew, policy.parameters())
            newfval = get_loss(True).data
            actual_improve = fval - newfval
            expected_improve = neggdotstepdir * stepfrac
            ratio = actual_improve / expected_improve
            if ratio.item() > 0.1 and actual_improve.item() > 0:
                accepted = _n_backtracks
                break
        else:
            from_vec(prev_params, policy.parameters())
        log.append((loss.item(), float(lm[0]), accepted, float(stepdir.norm())))
    return log, [p.detach() for p in policy.parameters()], stepdir, loss_grad


def test_trpo_natural_gradient_step():
    weights = weights_of(trpo_net)
    ours, _ = run_both(trpo, weights, rtol=1e-4, atol=1e-6)
    log, params, stepdir, loss_grad = ours
    assert log[0][2] is not None and log[1][0] < log[0][0]


# ----------------------------------------------------------------------------------------------
# Domain-adversarial training (DANN): a gradient reversal autograd.Function
# ----------------------------------------------------------------------------------------------


def dann_net(m):
    nn = m.nn
    return nn.ModuleDict({"features": nn.Sequential(nn.Linear(5, 8), nn.ReLU()), "label": nn.Linear(8, 3),
                          "domain": nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 1))})


def dann(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Function = torch.autograd.Function

    class GradientReversalFn(Function):
        @staticmethod
        def forward(ctx, x, alpha):
            ctx.alpha = alpha
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad_output):
            output = grad_output.neg() * ctx.alpha
            return output, None

    net = load(m, dann_net(m), weights)
    optimizer = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(16)
    xs = torch.tensor(rng.standard_normal((8, 5)).astype(np.float32))
    ys = torch.tensor(rng.integers(0, 3, 8))
    xt = torch.tensor(rng.standard_normal((8, 5)).astype(np.float32) + 0.5)
    log = []
    for step in range(steps):
        p = step / steps
        alpha = 2.0 / (1.0 + np.exp(-10 * p)) - 1
        optimizer.zero_grad()
        f_s, f_t = net["features"](xs), net["features"](xt)
        label_loss = F.cross_entropy(net["label"](f_s), ys)
        reverse = GradientReversalFn.apply(torch.cat([f_s, f_t]), alpha)
        domain_out = net["domain"](reverse).squeeze(1)
        domain_y = torch.cat([torch.zeros(8), torch.ones(8)])
        domain_loss = F.binary_cross_entropy_with_logits(domain_out, domain_y)
        loss = label_loss + domain_loss
        loss.backward()
        optimizer.step()
        log.append((label_loss.item(), domain_loss.item(), type(reverse.grad_fn).__name__.endswith("Backward")))
    # the reversal flips the sign of exactly the domain loss's gradient in the features
    f = net["features"](xs)
    g_plain, = torch.autograd.grad(net["domain"](f).sum(), f)
    f = net["features"](xs)
    g_rev, = torch.autograd.grad(net["domain"](GradientReversalFn.apply(f, 0.5)).sum(), f)
    return log, [p.detach() for p in net.parameters()], [p.grad for p in net.parameters()], g_plain, g_rev


def test_dann_gradient_reversal_function():
    weights = weights_of(dann_net)
    ours, _ = run_both(dann, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, g_plain, g_rev = ours
    np.testing.assert_allclose(g_rev, -0.5 * g_plain, rtol=1e-6)
    assert all(entry[2] for entry in log)


# ----------------------------------------------------------------------------------------------
# A sparse mixture of experts: top-k gating with noise, dispatch by index, load-balancing loss
# ----------------------------------------------------------------------------------------------


def moe_net(m):
    nn = m.nn

    class MoE(nn.Module):
        def __init__(self, d=6, num_experts=4, k=2):
            super().__init__()
            self.k, self.num_experts = k, num_experts
            self.gate = nn.Linear(d, num_experts, bias=False)
            self.noise = nn.Linear(d, num_experts, bias=False)
            self.experts = nn.ModuleList([nn.Sequential(nn.Linear(d, 8), nn.GELU(approximate="tanh"), nn.Linear(8, d))
                                          for _ in range(num_experts)])

    return MoE()


def moe(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, moe_net(m), weights)

    def forward(x, eps):
        clean = model.gate(x)
        noisy = clean + eps * F.softplus(model.noise(x))
        top_logits, top_indices = noisy.topk(min(model.k + 1, model.num_experts), dim=1)
        top_k_logits, top_k_indices = top_logits[:, :model.k], top_indices[:, :model.k]
        top_k_gates = F.softmax(top_k_logits, dim=1)
        zeros = torch.zeros_like(noisy, requires_grad=True)
        gates = zeros.scatter(1, top_k_indices, top_k_gates)
        out = torch.zeros_like(x)
        for e, expert in enumerate(model.experts):
            token_idx, slot = torch.where(top_k_indices == e)
            if token_idx.numel() == 0:
                continue
            y = expert(x[token_idx]) * top_k_gates[token_idx, slot].unsqueeze(-1)
            out.index_add_(0, token_idx, y)
        importance = gates.sum(0)
        load = (gates > 0).sum(0).float()
        cv_squared = lambda v: v.float().var() / (v.float().mean() ** 2 + 1e-10)
        # Switch-style auxiliary loss: fraction of tokens per expert times mean router probability
        probs = F.softmax(clean, dim=-1)
        tokens_per_expert = F.one_hot(top_k_indices[:, 0], model.num_experts).float().mean(0)
        aux = model.num_experts * (tokens_per_expert * probs.mean(0)).sum()
        return out, cv_squared(importance) + cv_squared(load), aux, top_k_indices

    optimizer = optim.AdamW(model.parameters(), lr=5e-3)
    rng = np.random.default_rng(17)
    x = torch.tensor(rng.standard_normal((10, 6)).astype(np.float32))
    target = torch.tensor(rng.standard_normal((10, 6)).astype(np.float32))
    log = []
    for step in range(steps):
        eps = torch.tensor(rng.standard_normal((10, 4)).astype(np.float32))
        out, balance, aux, indices = forward(x, eps)
        loss = F.mse_loss(out, target) + 0.01 * balance + 0.01 * aux
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append((loss.item(), balance.item(), aux.item()))
    return log, [p.detach() for p in model.parameters()], [p.grad for p in model.parameters()], indices


def test_mixture_of_experts_top_k_routing():
    weights = weights_of(moe_net)
    ours, _ = run_both(moe, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, indices = ours
    assert indices.shape == (10, 2) and np.abs(grads[0]).max() > 0 and np.abs(grads[1]).max() > 0


# ----------------------------------------------------------------------------------------------
# Metric learning: a siamese net with contrastive, triplet and cosine-embedding losses
# ----------------------------------------------------------------------------------------------


def siamese_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(6, 12), nn.PReLU(), nn.Linear(12, 4))


def siamese(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    net = load(m, siamese_net(m), weights)

    class ContrastiveLoss(nn.Module):
        def __init__(self, margin=2.0):
            super().__init__()
            self.margin = margin

        def forward(self, output1, output2, label):
            euclidean_distance = F.pairwise_distance(output1, output2, keepdim=True)
            return torch.mean((1 - label) * torch.pow(euclidean_distance, 2)
                              + label * torch.pow(torch.clamp(self.margin - euclidean_distance, min=0.0), 2))

    contrastive = ContrastiveLoss()
    triplet = nn.TripletMarginLoss(margin=1.0, p=2, swap=True)
    cosine_triplet = nn.TripletMarginWithDistanceLoss(distance_function=lambda x, y: 1.0 - F.cosine_similarity(x, y),
                                                      margin=0.3)
    cosine_embedding = nn.CosineEmbeddingLoss(margin=0.2)
    optimizer = optim.Adam(net.parameters(), lr=5e-3)
    rng = np.random.default_rng(18)
    a, p, n = (torch.tensor(rng.standard_normal((8, 6)).astype(np.float32)) for _ in range(3))
    label = torch.tensor(rng.integers(0, 2, (8, 1)).astype(np.float32))
    log = []
    for step in range(steps):
        optimizer.zero_grad()
        ea, ep, en = net(a), net(p), net(n)
        losses = [contrastive(ea, ep, label), triplet(ea, ep, en), cosine_triplet(ea, ep, en),
                  cosine_embedding(ea, ep, 1 - 2 * label.squeeze(1))]
        sum(losses).backward()
        optimizer.step()
        log.append([l.item() for l in losses])
    per_sample = F.triplet_margin_loss(ea, ep, en, reduction="none", eps=1e-6)
    return log, [p.detach() for p in net.parameters()], [p.grad for p in net.parameters()], per_sample


def test_siamese_metric_losses():
    weights = weights_of(siamese_net)
    ours, _ = run_both(siamese, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, per_sample = ours
    assert per_sample.shape == (8,) and all(all(np.isfinite(row)) for row in log)


# ----------------------------------------------------------------------------------------------
# The parametrizations tutorial's caching: a constrained recurrent kernel computed once per forward
# ----------------------------------------------------------------------------------------------


def cached_rnn_net(m):
    nn = m.nn
    return nn.ModuleDict({"cell": nn.RNNCell(3, 4), "head": nn.Linear(4, 2)})


def cached_rnn(m, weights, steps=3, use_cache=True):
    import contextlib

    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    parametrize = nn.utils.parametrize
    net = load(m, cached_rnn_net(m), weights)

    class Skew(nn.Module):
        calls = 0

        def forward(self, X):
            Skew.calls += 1
            A = X.triu(1)
            return A - A.transpose(-1, -2)

    class MatrixExponential(nn.Module):
        def forward(self, X):
            return torch.matrix_exp(X)

    parametrize.register_parametrization(net["cell"], "weight_hh", Skew())
    parametrize.register_parametrization(net["cell"], "weight_hh", MatrixExponential())
    optimizer = optim.Adam(net.parameters(), lr=1e-2)
    rng = np.random.default_rng(19)
    xs = torch.tensor(rng.standard_normal((6, 5, 3)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 2, 5))
    log = []
    for step in range(steps):
        optimizer.zero_grad()
        Skew.calls = 0
        with parametrize.cached() if use_cache else contextlib.nullcontext():
            h = torch.zeros(5, 4)
            for x in xs:
                h = net["cell"](x, h)
            loss = F.cross_entropy(net["head"](h), y)
        loss.backward()
        optimizer.step()
        log.append((loss.item(), Skew.calls))
    W = net["cell"].weight_hh.detach()
    orthogonal = bool(torch.allclose(W @ W.T, torch.eye(4), atol=1e-5))
    return log, [p.detach() for p in net.parameters()], [p.grad for p in net.parameters()], orthogonal


def test_parametrize_cached_recurrent_kernel():
    weights = weights_of(cached_rnn_net)
    ours, _ = run_both(cached_rnn, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, orthogonal = ours
    assert [calls for _, calls in log] == [1, 1, 1] and orthogonal  # once per forward, not per time step
    uncached = cached_rnn(OURS, weights, use_cache=False)
    assert [calls for _, calls in uncached[0]] == [6, 6, 6]
    for a, b in zip(grads, uncached[2]):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Third-party layers as timm and others write them: ``from torch.nn.modules.utils import _pair``,
# TF-"SAME" padding, a locally connected layer by unfold, and attention pinned to the math kernel
# ----------------------------------------------------------------------------------------------


def third_party_net(m):
    torch, nn, F = m.torch, m.nn, m.F
    _pair = nn.modules.utils._pair
    _reverse_repeat_tuple = nn.modules.utils._reverse_repeat_tuple

    def get_same_padding(x, k, s, d):
        return max((math.ceil(x / s) - 1) * s + (k - 1) * d + 1 - x, 0)

    def pad_same(x, k, s, d, value=0):
        ih, iw = x.size()[-2:]
        pad_h, pad_w = get_same_padding(ih, k[0], s[0], d[0]), get_same_padding(iw, k[1], s[1], d[1])
        return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=value)

    class Conv2dSame(nn.Conv2d):
        """timm's Tensorflow-like 'SAME' convolution for a dynamic image size."""

        def forward(self, x):
            x = pad_same(x, self.kernel_size, self.stride, self.dilation)
            return F.conv2d(x, self.weight, self.bias, self.stride, (0, 0), self.dilation, self.groups)

    class LocallyConnected2d(nn.Module):
        def __init__(self, in_channels, out_channels, output_size, kernel_size, stride, bias=True):
            super().__init__()
            output_size = _pair(output_size)
            self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, output_size[0], output_size[1],
                                                   kernel_size ** 2) * 0.1)
            self.bias = nn.Parameter(torch.zeros(1, out_channels, output_size[0], output_size[1])) if bias else None
            self.kernel_size = _pair(kernel_size)
            self.stride = _pair(stride)

        def forward(self, x):
            kh, kw = self.kernel_size
            dh, dw = self.stride
            x = x.unfold(2, kh, dh).unfold(3, kw, dw)
            x = x.contiguous().view(*x.size()[:-2], -1)
            out = (x.unsqueeze(1) * self.weight).sum([2, -1])
            if self.bias is not None:
                out += self.bias
            return out

    class ReflectConv(nn.Conv2d):
        """A convolution padded by F.pad from its own (padH, padW), as nn.Conv2d's padding_mode does."""

        def forward(self, x):
            pad = _reverse_repeat_tuple(self.padding, 2)
            return F.conv2d(F.pad(x, pad, mode="reflect"), self.weight, self.bias, self.stride, _pair(0))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.same = Conv2dSame(2, 4, 3, stride=2)
            self.local = LocallyConnected2d(4, 3, output_size=3, kernel_size=2, stride=1)
            self.reflect = ReflectConv(3, 4, 3, padding=(1, 1))
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            x = F.gelu(self.same(x))
            x = F.gelu(self.local(x))
            x = self.reflect(x)
            tokens = x.flatten(2).transpose(1, 2)
            tokens = tokens + self.attn(tokens, tokens, tokens, need_weights=False)[0]
            return self.head(tokens.mean(1))

    return Net()


def third_party_layers(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_attention = __import__(m.nn.__name__ + ".attention", fromlist=["SDPBackend", "sdpa_kernel"])
    SDPBackend, sdpa_kernel = from_attention.SDPBackend, from_attention.sdpa_kernel
    model = load(m, third_party_net(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(20)
    x = torch.tensor(rng.standard_normal((3, 2, 7, 7)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 2, 3))
    log = []
    for step in range(steps):
        optimizer.zero_grad()
        with sdpa_kernel(SDPBackend.MATH):  # the math kernel, the one with a double backward
            x_in = x.clone().requires_grad_(True)
            loss = F.cross_entropy(model(x_in), y)
            g, = torch.autograd.grad(loss, x_in, create_graph=True)
            (loss + 0.1 * g.pow(2).sum()).backward()  # an input-gradient penalty
        optimizer.step()
        log.append(loss.item())
    refused = None
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):  # no such kernel on a CPU
        try:
            model(x)
        except RuntimeError as error:
            refused = str(error)
    shapes = (tuple(model.same(x).shape), nn.modules.utils._pair(3), nn.modules.utils._triple((1, 2, 3)))
    kept, key_bias_grads = comparable(model, 4)  # less the attention's key bias (noise under Adam)
    grads = [p.grad for name, p in model.named_parameters() if name != "attn.in_proj_bias"]
    return log, kept, grads, refused, shapes, max(key_bias_grads) < 1e-6


def test_third_party_layers_with_modules_utils_and_sdpa_kernel():
    weights = weights_of(third_party_net)
    ours, _ = run_both(third_party_layers, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, refused, shapes, key_bias_gradient_zero = ours
    assert key_bias_gradient_zero
    assert shapes == ((3, 4, 4, 4), (3, 3), (1, 2, 3)) and refused.startswith("No viable backend")


# ----------------------------------------------------------------------------------------------
# MAML by torch.func.functional_call on a BatchNorm CNN: fast weights as a dict, second and first order
# ----------------------------------------------------------------------------------------------


def maml_cnn(m):
    nn = m.nn
    # no convolution bias before the BatchNorm: it would be removed there, and Adam's step on its
    # zero-up-to-rounding gradient is noise in either library (seen through the running mean)
    return nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


def maml_functional_call(m, weights, second_order=True, iterations=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, maml_cnn(m), weights)
    functional_call = torch.func.functional_call
    meta_opt = optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(22)
    log = []
    for it in range(iterations):
        meta_opt.zero_grad()
        total = 0.0
        for task in range(2):
            xs = torch.tensor(rng.standard_normal((6, 1, 6, 6)).astype(np.float32))
            ys = torch.tensor(rng.integers(0, 3, 6))
            xq = torch.tensor(rng.standard_normal((6, 1, 6, 6)).astype(np.float32))
            yq = torch.tensor(rng.integers(0, 3, 6))
            params = dict(model.named_parameters())
            for _ in range(2):
                loss = F.cross_entropy(functional_call(model, params, (xs,)), ys)
                grads = torch.autograd.grad(loss, params.values(), create_graph=second_order)
                params = {k: p - 0.1 * g for (k, p), g in zip(params.items(), grads)}
            query_loss = F.cross_entropy(functional_call(model, params, (xq,)), yq)
            query_loss.backward()
            total += query_loss.item()
        meta_opt.step()
        log.append(total)
    return log, [p.detach() for p in model.parameters()], [p.grad for p in model.parameters()], [
        b.clone() for b in model.buffers()]


def test_maml_with_functional_call_on_a_batchnorm_cnn():
    weights = weights_of(maml_cnn)
    second, _ = run_both(maml_functional_call, weights, rtol=1e-5, atol=1e-6)
    first, _ = run_both(maml_functional_call, weights, second_order=False, rtol=1e-5, atol=1e-6)
    assert second[0][0] == first[0][0]  # the same first meta-loss, a different meta-gradient
    assert max(np.abs(a - b).max() for a, b in zip(second[2], first[2])) > 1e-5
    assert int(second[3][2]) == 3 * 2 * 3  # BatchNorm counted every support and query batch
