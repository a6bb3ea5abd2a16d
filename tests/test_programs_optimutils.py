"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): SWA and
EMA as PyTorch's swa_utils documentation writes them, per-sample gradients and model ensembling as
the torch.func tutorials do, Adafactor with step hooks, spectral normalisation in a GAN critic."""

import copy

import numpy as np

from .pytorch_programs import load, run_both, weights_of


def make_net(m):
    nn = m.nn  # (no bias before BatchNorm: its gradient is zero, and Adam would follow float32 noise)
    return nn.Sequential(nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def data(m, n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = (x[:, :2] - x[:, 2:]).astype(np.float32)
    dataset = m.data.TensorDataset(m.torch.tensor(x), m.torch.tensor(y))
    return m.data.DataLoader(dataset, batch_size=8, shuffle=False)


def swa_training(m, weights):
    """The swa_utils documentation's loop: cosine annealing, then SWA with SWALR from swa_start."""
    optim, F = m.optim, m.F
    model = load(m, make_net(m), weights)
    loader = data(m)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    swa_model = optim.swa_utils.AveragedModel(model)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    swa_start = 4
    swa_scheduler = optim.swa_utils.SWALR(optimizer, swa_lr=0.05, anneal_epochs=2, anneal_strategy="linear")
    lrs = []
    for epoch in range(8):
        for input, target in loader:
            optimizer.zero_grad()
            F.mse_loss(model(input), target).backward()
            optimizer.step()
        if epoch > swa_start:
            swa_model.update_parameters(model)
            swa_scheduler.step()
        else:
            scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    optim.swa_utils.update_bn(loader, swa_model)
    swa_model.eval()
    x = next(iter(loader))[0]
    return {"lrs": lrs, "out": swa_model(x), "n": swa_model.n_averaged, **swa_model.state_dict()}


def test_swa_training():
    run_both(swa_training, weights_of(make_net), rtol=1e-4, atol=1e-5)


def ema_training(m, weights):
    """EMA of the weights and buffers, as the AveragedModel documentation shows it."""
    optim, F = m.optim, m.F
    model = load(m, make_net(m), weights)
    ema_model = optim.swa_utils.AveragedModel(
        model, multi_avg_fn=optim.swa_utils.get_ema_multi_avg_fn(0.9), use_buffers=True)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    for input, target in data(m):
        optimizer.zero_grad()
        F.mse_loss(model(input), target).backward()
        optimizer.step()
        ema_model.update_parameters(model)
    return dict(ema_model.state_dict())


def test_ema_training():
    run_both(ema_training, weights_of(make_net), rtol=1e-4, atol=1e-5)


def per_sample_gradients(m, weights):
    """The torch.func per-sample-gradients tutorial: vmap over grad of a functional_call."""
    torch, F = m.torch, m.F
    from_func = torch.func
    model = load(m, m.nn.Sequential(m.nn.Linear(4, 8), m.nn.Tanh(), m.nn.Linear(8, 2)), weights)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def compute_loss(params, buffers, sample, target):
        batch = sample.unsqueeze(0)
        targets = target.unsqueeze(0)
        predictions = from_func.functional_call(model, (params, buffers), (batch,))
        return F.mse_loss(predictions, targets)

    ft_compute_grad = from_func.grad(compute_loss)
    ft_compute_sample_grad = from_func.vmap(ft_compute_grad, in_dims=(None, None, 0, 0))
    input, target = next(iter(data(m)))
    return ft_compute_sample_grad(params, buffers, input, target)


def test_per_sample_gradients():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(4, 8), m.nn.Tanh(), m.nn.Linear(8, 2)))
    ours, _ = run_both(per_sample_gradients, weights, rtol=1e-4, atol=1e-6)
    assert ours["0.weight"].shape == (8, 8, 4)


def ensembling(m, all_weights):
    """The torch.func model-ensembling tutorial (the base model stays on the CPU: no meta device here)."""
    torch = m.torch
    models = [load(m, m.nn.Linear(4, 2), w) for w in all_weights]
    params, buffers = torch.func.stack_module_state(models)
    base_model = copy.deepcopy(models[0])

    def fmodel(params, buffers, x):
        return torch.func.functional_call(base_model, (params, buffers), (x,))

    x = next(iter(data(m)))[0]
    predictions = torch.func.vmap(fmodel, in_dims=(0, 0, None))(params, buffers, x)
    return predictions, [model(x) for model in models]


def test_ensembling():
    all_weights = [weights_of(lambda m: m.nn.Linear(4, 2), seed=s) for s in range(3)]
    (stacked, separate), _ = run_both(ensembling, all_weights)
    np.testing.assert_allclose(stacked, np.stack(separate), rtol=1e-6)


def adafactor_with_hooks(m, weights):
    """Adafactor, with a step post-hook logging the gradient norm and a pre-hook clipping."""
    optim, nn, F = m.optim, m.nn, m.F
    model = load(m, make_net(m), weights)
    optimizer = optim.Adafactor(model.parameters(), lr=0.05, weight_decay=0.01)
    norms = []
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: nn.utils.clip_grad_norm_(model.parameters(), 1.0) and None)
    handle = optimizer.register_step_post_hook(
        lambda opt, args, kwargs: norms.append(nn.utils.get_total_norm(
            [p.grad for p in model.parameters()]).item()))
    for epoch in range(2):
        for input, target in data(m):
            optimizer.zero_grad()
            F.mse_loss(model(input), target).backward()
            optimizer.step()
        handle.remove() if epoch == 0 else None
    state = optimizer.state_dict()["state"][0]
    return {"norms": norms, **model.state_dict(), **{f"opt.{k}": v for k, v in state.items()}}


def test_adafactor_with_hooks():
    ours, _ = run_both(adafactor_with_hooks, weights_of(make_net), rtol=1e-4, atol=1e-5)
    assert len(ours["norms"]) == 4 and max(ours["norms"]) <= 1.0 + 1e-5


def spectral_critic(m, weights):
    """A GAN critic with spectral normalisation on every linear layer, a few training steps."""
    torch, nn, optim = m.torch, m.nn, m.optim
    critic = nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
    critic.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    for i in (0, 2):
        critic[i] = nn.utils.spectral_norm(critic[i])
    with torch.no_grad():  # the same starting vectors for both libraries
        for i in (0, 2):
            critic[i].weight_u.copy_(torch.ones_like(critic[i].weight_u) / critic[i].weight_u.numel() ** 0.5)
            critic[i].weight_v.copy_(torch.ones_like(critic[i].weight_v) / critic[i].weight_v.numel() ** 0.5)
    optimizer = optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.999))
    for input, _ in data(m):
        optimizer.zero_grad()
        loss = -critic(input).mean()
        loss.backward()
        optimizer.step()
    return dict(critic.state_dict())


def test_spectral_critic():
    ours, _ = run_both(spectral_critic, weights_of(lambda m: m.nn.Sequential(
        m.nn.Linear(4, 8), m.nn.LeakyReLU(0.2), m.nn.Linear(8, 1))), rtol=1e-4, atol=1e-5)
    assert "0.weight_orig" in ours and "2.weight_v" in ours
