# ruff: noqa: F841, UP008  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is a function of
the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``), run on chainrule and, where PyTorch is
installed, on PyTorch, comparing the numbers. Small versions of well-known training programs: a DCGAN loop (PyTorch's
tutorial, 16x16 images: two optimizers, detach, BCEWithLogits), the spatial transformer tutorial (``affine_grid`` +
``grid_sample`` in a classifier), and gradient accumulation with frozen layers, param groups,
``zero_grad(set_to_none=False)`` and a checkpoint round trip."""

import io

import numpy as np

from .pytorch_programs import load, quickstart_data, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# DCGAN (PyTorch's tutorial, 16x16 images): two optimizers, detach, BCEWithLogits
# ----------------------------------------------------------------------------------------------


def dcgan(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    nz, ngf, ndf = 8, 8, 8
    def weights_init(mod):
        classname = mod.__class__.__name__
        if classname.find('BatchNorm') != -1:
            nn.init.constant_(mod.bias.data, 0)
    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.ConvTranspose2d(nz, ngf * 2, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
                nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False), nn.Tanh())
        def forward(self, x):
            return self.main(x)
    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                nn.Conv2d(1, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False))
        def forward(self, x):
            return self.main(x).view(-1)
    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.G = Generator()
            self.D = Discriminator()
    both = Both()
    both.apply(weights_init)
    if weights is None:
        return both
    load(m, both, weights)
    netG, netD = both.G, both.D
    rng = np.random.default_rng(5)
    real_all = torch.tensor(np.tanh(rng.standard_normal((steps, 6, 1, 16, 16))).astype(np.float32))
    noise_all = torch.tensor(rng.standard_normal((steps, 6, nz, 1, 1)).astype(np.float32))
    criterion = nn.BCEWithLogitsLoss()
    optD = optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real_label, fake_label = 1., 0.
    log = []
    for i in range(steps):
        netD.zero_grad()
        real = real_all[i]
        b = real.size(0)
        label = torch.full((b,), real_label, dtype=torch.float)
        output = netD(real)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = torch.sigmoid(output).mean().item()
        fake = netG(noise_all[i])
        label.fill_(fake_label)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        errD = errD_real + errD_fake
        optD.step()
        netG.zero_grad()
        label.fill_(real_label)
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        optG.step()
        log.append((errD.item(), errG.item(), D_x))
    return log, both.state_dict(), [p.grad for p in netG.parameters()]


def test_dcgan_loop():
    weights = weights_of(lambda m: dcgan(m, None))
    (log, state, g_grads), _ = run_both(dcgan, weights, rtol=1e-4, atol=1e-5)
    assert len(log) == 4 and all(np.isfinite(v).all() for v in log)
    assert 0 < log[0][2] < 1  # D(x) is a probability
    assert int(state["G.main.1.num_batches_tracked"]) == 4  # G runs once a step
    assert int(state["D.main.3.num_batches_tracked"]) == 12  # real, fake.detach(), fake
    assert all(g is not None and np.abs(g).sum() > 0 for g in g_grads)


# ----------------------------------------------------------------------------------------------
# Gradient accumulation, frozen layers, param groups, zero_grad(set_to_none=False), and a
# checkpoint through save/load to a BytesIO that resumes the same trajectory
# ----------------------------------------------------------------------------------------------


def accumulate_resume(m, weights, total=8, resume_at=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    def make():
        return nn.Sequential(nn.Linear(5, 12), nn.BatchNorm1d(12), nn.GELU(), nn.Linear(12, 12), nn.ReLU(),
                             nn.Linear(12, 3))
    model = make()
    if weights is None:
        return model
    rng = np.random.default_rng(7)
    X = torch.tensor(rng.standard_normal((total, 4, 4, 5)).astype(np.float32))
    Y = torch.tensor(rng.integers(0, 3, (total, 4, 4)))
    accum = 4
    def build():
        model = load(m, make(), weights)
        model[0].requires_grad_(False)   # freeze the first layer
        opt = optim.SGD([{"params": model[3].parameters(), "lr": 0.05},
                         {"params": model[5].parameters()},
                         {"params": model[1].parameters(), "weight_decay": 0.0}],
                        lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
        sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        return model, opt, sched
    def train(model, opt, sched, start, stop, log):
        model.train()
        for step in range(start, stop):
            opt.zero_grad(set_to_none=False)
            for micro in range(accum):
                out = model(X[step, micro])
                if micro % 2 == 0:
                    loss = F.cross_entropy(out, Y[step, micro], reduction="sum") / (4 * accum)
                else:
                    loss = F.cross_entropy(out, Y[step, micro], reduction="mean") / accum
                loss.backward()
            log.append((loss.item(), model[3].weight.grad.norm().item(), model[0].weight.grad is None))
            opt.step()
            sched.step()
    model, opt, sched = build()
    full_log = []
    train(model, opt, sched, 0, total, full_log)
    straight = {k: v.clone() for k, v in model.state_dict().items()}
    model, opt, sched = build()
    part_log = []
    train(model, opt, sched, 0, resume_at, part_log)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "step": resume_at}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    model2, opt2, sched2 = build()
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    train(model2, opt2, sched2, ckpt["step"], total, part_log)
    resumed = model2.state_dict()
    same = all(bool(torch.equal(straight[k], resumed[k])) for k in straight)
    frozen_same = bool(torch.equal(resumed["0.weight"], torch.tensor(weights["0.weight"])))
    grads_zero_kept = model2[3].weight.grad is not None
    return full_log, part_log, same, frozen_same, grads_zero_kept, straight, opt2.param_groups[0]["lr"], \
        [g["lr"] for g in opt2.state_dict()["param_groups"]], sorted(ckpt["optimizer"]["state"].keys())


def test_accumulation_freezing_and_resume():
    weights = weights_of(lambda m: accumulate_resume(m, None))
    ours, _ = run_both(accumulate_resume, weights, rtol=1e-4, atol=1e-5)
    full_log, part_log, same, frozen_same, grads_kept, state, lr, group_lrs, state_keys = ours
    assert same and frozen_same and grads_kept
    assert full_log == part_log  # the resumed run logs what the straight run logged, exactly
    assert all(frozen for _, _, frozen in full_log)  # the frozen layer never gets a .grad
    assert lr == 0.1 * 0.5 ** 4 * 0.5 and group_lrs == [0.003125, 0.00625, 0.00625]
    assert state_keys == [0, 1, 2, 3, 4, 5]  # momentum buffers of the six trained tensors only


# ----------------------------------------------------------------------------------------------
# Spatial transformer networks (PyTorch's tutorial): affine_grid + grid_sample in a classifier
# ----------------------------------------------------------------------------------------------


def spatial_transformer(m, weights, steps=6):
    """PyTorch's spatial transformer tutorial (a localisation net predicts an affine map,
    affine_grid + grid_sample warp the input), on 12x12 random 'digits'."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 6, kernel_size=3)
            self.conv2 = nn.Conv2d(6, 8, kernel_size=3)
            self.conv2_drop = nn.Dropout2d(p=0.0)
            self.fc1 = nn.Linear(8 * 1 * 1, 16)
            self.fc2 = nn.Linear(16, 4)
            self.localization = nn.Sequential(
                nn.Conv2d(1, 4, kernel_size=3), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
                nn.Conv2d(4, 6, kernel_size=3), nn.MaxPool2d(2, stride=2), nn.ReLU(True))
            self.fc_loc = nn.Sequential(nn.Linear(6 * 1 * 1, 8), nn.ReLU(True), nn.Linear(8, 3 * 2))
            self.fc_loc[2].weight.data.zero_()
            # the tutorial starts at the identity, which samples exactly at pixel centres: bilinear
            # interpolation has a kink there, and which one-sided derivative the grid gets depends on
            # the last bit of affine_grid's coordinates (NumPy's and PyTorch's linspace differ in it),
            # so the comparison starts a little off the identity
            self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0.013, 0, 1, -0.021], dtype=torch.float))

        def stn(self, x):
            xs = self.localization(x)
            xs = xs.view(-1, 6 * 1 * 1)
            theta = self.fc_loc(xs)
            theta = theta.view(-1, 2, 3)
            grid = F.affine_grid(theta, x.size(), align_corners=False)
            x = F.grid_sample(x, grid, align_corners=False)
            return x, theta

        def forward(self, x):
            x, theta = self.stn(x)
            x = F.relu(F.max_pool2d(self.conv1(x), 2))
            x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
            x = x.view(-1, 8 * 1 * 1)
            x = F.relu(self.fc1(x))
            x = F.dropout(x, training=self.training, p=0.0)
            x = self.fc2(x)
            return F.log_softmax(x, dim=1), theta

    model = Net()
    if weights is None:
        return model
    load(m, model, weights)
    images, labels = quickstart_data(n=64, side=12, classes=4, seed=21)
    x, y = torch.tensor(images), torch.tensor(labels)
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for step in range(steps):
        batch = slice(16 * (step % 4), 16 * (step % 4 + 1))
        optimizer.zero_grad()
        output, theta = model(x[batch])
        loss = F.nll_loss(output, y[batch])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        warped, theta = model.stn(x[:2])
    return losses, theta, warped, {n: p.grad for n, p in model.named_parameters()}


def test_spatial_transformer():
    weights = weights_of(lambda m: spatial_transformer(m, None))
    (losses, theta, warped, grads), _ = run_both(spatial_transformer, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    assert theta.shape == (2, 2, 3) and warped.shape == (2, 1, 12, 12)
    assert np.abs(grads["fc_loc.2.bias"]).sum() > 0  # the localisation net learns through grid_sample
