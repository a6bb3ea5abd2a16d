# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Time-series programs, run as tests/probe14_timeseries_common.py says. Convolutional forecasters: LSTNet (a
``Conv2d`` over time by variables, the skip-GRU by ``view``/``permute``, the highway autoregression) and SCINet's
even/odd splitting (``x[:, ::2]``) with interactive scaling; a parametrized weight-norm TCN trained from
``random_split`` by fractions and a ``SubsetRandomSampler`` (``ReduceLROnPlateau(mode='max', threshold_mode='abs',
cooldown)`` saved and restored, a deepcopy'd best model, a ``torch.save`` checkpoint, ``remove_parametrizations``);
weight norm's forms (an old ``weight_g``/``weight_v`` checkpoint loaded into the parametrization, ``dim=None``,
``dim=1``, ``parametrize.cached()``, deepcopy, ``remove_weight_norm``)."""

import copy
import math

import numpy as np
import pytest

from .probe14_timeseries_common import grads_of, multiseries, params_of
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# LSTNet (laiguokun/LSTNet): Conv2d over (time, variables), GRU, skip-GRU, highway autoregression
# ----------------------------------------------------------------------------------------------


def make_lstnet(m, window=12, n_vars=3, hidRNN=6, hidCNN=5, hidSkip=3, CNN_kernel=4, skip=2, highway_window=3,
                output_fun='sigmoid'):
    torch, nn, F = m.torch, m.nn, m.F

    class Model(nn.Module):
        def __init__(self):
            super(Model, self).__init__()
            self.P = window
            self.m = n_vars
            self.hidR = hidRNN
            self.hidC = hidCNN
            self.hidS = hidSkip
            self.Ck = CNN_kernel
            self.skip = skip
            self.pt = int((self.P - self.Ck) / self.skip)
            self.hw = highway_window
            self.conv1 = nn.Conv2d(1, self.hidC, kernel_size=(self.Ck, self.m))
            self.GRU1 = nn.GRU(self.hidC, self.hidR)
            self.dropout = nn.Dropout(p=0.0)
            if (self.skip > 0):
                self.GRUskip = nn.GRU(self.hidC, self.hidS)
                self.linear1 = nn.Linear(self.hidR + self.skip * self.hidS, self.m)
            else:
                self.linear1 = nn.Linear(self.hidR, self.m)
            if (self.hw > 0):
                self.highway = nn.Linear(self.hw, 1)
            self.output = None
            if (output_fun == 'sigmoid'):
                self.output = torch.sigmoid
            if (output_fun == 'tanh'):
                self.output = torch.tanh

        def forward(self, x):
            batch_size = x.size(0)
            # CNN
            c = x.view(-1, 1, self.P, self.m)
            c = F.relu(self.conv1(c))
            c = self.dropout(c)
            c = torch.squeeze(c, 3)
            # RNN
            r = c.permute(2, 0, 1).contiguous()
            _, r = self.GRU1(r)
            r = self.dropout(torch.squeeze(r, 0))
            # skip-rnn
            if (self.skip > 0):
                s = c[:, :, int(-self.pt * self.skip):].contiguous()
                s = s.view(batch_size, self.hidC, self.pt, self.skip)
                s = s.permute(2, 0, 3, 1).contiguous()
                s = s.view(self.pt, batch_size * self.skip, self.hidC)
                _, s = self.GRUskip(s)
                s = s.view(batch_size, self.skip * self.hidS)
                s = self.dropout(s)
                r = torch.cat((r, s), 1)
            res = self.linear1(r)
            # highway
            if (self.hw > 0):
                z = x[:, -self.hw:, :]
                z = z.permute(0, 2, 1).contiguous().view(-1, self.hw)
                z = self.highway(z)
                z = z.view(-1, self.m)
                res = res + z
            if (self.output):
                res = self.output(res)
            return res

    return Model()


def lstnet(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_lstnet(m), weights).double()
    raw = multiseries(length=40)
    scale = np.max(np.abs(raw), 0)  # LSTNet's normalize=2: each series by its maximum
    dat = torch.from_numpy(raw / scale)
    idx = range(12, 39)
    X = torch.stack([dat[i - 12:i] for i in idx])
    Y = torch.stack([dat[i] for i in idx])
    criterion = nn.L1Loss(reduction='sum')
    evaluateL2 = nn.MSELoss(reduction='sum')
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(3):
        for i in range(0, len(X), 9):
            bx, by = X[i:i + 9], Y[i:i + 9]
            model.zero_grad()
            output = model(bx)
            loss = criterion(output * torch.from_numpy(scale), by * torch.from_numpy(scale))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.)
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        predict = model(X)
    rse = math.sqrt(evaluateL2(predict, Y).item() / len(Y)) / (Y.std() * np.sqrt((len(Y) - 1.0) / len(Y)))
    sigma_p, sigma_g = predict.std(dim=0), Y.std(dim=0)
    mean_p, mean_g = predict.mean(dim=0), Y.mean(dim=0)
    correlation = ((predict - mean_p) * (Y - mean_g)).mean(dim=0) / (sigma_p * sigma_g)
    return dict(losses=losses, params=params_of(model), grads=grads_of(model), rse=rse, corr=correlation.mean())


def test_lstnet():
    ours, _ = run_both(lstnet, weights_of(make_lstnet), rtol=1e-9, atol=1e-11)
    assert len(ours["losses"]) == 9


# ----------------------------------------------------------------------------------------------
# SCINet (cure-lab/SCINet): even/odd splitting by strided slicing, interactive scaling, zip back
# ----------------------------------------------------------------------------------------------


def make_scinet(m, output_len=4, input_len=16, input_dim=3, hid_size=1, num_levels=2, kernel=5, groups=1):
    torch, nn = m.torch, m.nn

    class Splitting(nn.Module):
        def __init__(self):
            super(Splitting, self).__init__()

        def even(self, x):
            return x[:, ::2, :]

        def odd(self, x):
            return x[:, 1::2, :]

        def forward(self, x):
            return (self.even(x), self.odd(x))

    class Interactor(nn.Module):
        def __init__(self, in_planes, splitting=True, kernel=5, dropout=0.0, groups=1, hidden_size=1, INN=True):
            super(Interactor, self).__init__()
            self.modified = INN
            self.kernel_size = kernel
            self.dilation = 1
            self.dropout = dropout
            self.hidden_size = hidden_size
            self.groups = groups
            if self.kernel_size % 2 == 0:
                pad_l = self.dilation * (self.kernel_size - 2) // 2 + 1
                pad_r = self.dilation * (self.kernel_size) // 2 + 1
            else:
                pad_l = self.dilation * (self.kernel_size - 1) // 2 + 1
                pad_r = self.dilation * (self.kernel_size - 1) // 2 + 1
            self.splitting = splitting
            self.split = Splitting()

            def branch():
                prev_size = 1
                size_hidden = self.hidden_size
                return nn.Sequential(
                    nn.ReplicationPad1d((pad_l, pad_r)),
                    nn.Conv1d(in_planes * prev_size, int(in_planes * size_hidden), kernel_size=self.kernel_size,
                              dilation=self.dilation, stride=1, groups=self.groups),
                    nn.LeakyReLU(negative_slope=0.01, inplace=True),
                    nn.Dropout(self.dropout),
                    nn.Conv1d(int(in_planes * size_hidden), in_planes, kernel_size=3, stride=1, groups=self.groups),
                    nn.Tanh())
            self.phi, self.psi, self.U, self.P = branch(), branch(), branch(), branch()

        def forward(self, x):
            if self.splitting:
                (x_even, x_odd) = self.split(x)
            else:
                (x_even, x_odd) = x
            if self.modified:
                x_even = x_even.permute(0, 2, 1)
                x_odd = x_odd.permute(0, 2, 1)
                d = x_odd.mul(torch.exp(self.phi(x_even)))
                c = x_even.mul(torch.exp(self.psi(x_odd)))
                x_even_update = c + self.U(d)
                x_odd_update = d - self.P(c)
                return (x_even_update, x_odd_update)

    class InteractorLevel(nn.Module):
        def __init__(self, in_planes, kernel, dropout, groups, hidden_size, INN):
            super(InteractorLevel, self).__init__()
            self.level = Interactor(in_planes=in_planes, splitting=True, kernel=kernel, dropout=dropout,
                                    groups=groups, hidden_size=hidden_size, INN=INN)

        def forward(self, x):
            (x_even_update, x_odd_update) = self.level(x)
            return (x_even_update, x_odd_update)

    class LevelSCINet(nn.Module):
        def __init__(self, in_planes, kernel_size, dropout, groups, hidden_size, INN):
            super(LevelSCINet, self).__init__()
            self.interact = InteractorLevel(in_planes=in_planes, kernel=kernel_size, dropout=dropout, groups=groups,
                                            hidden_size=hidden_size, INN=INN)

        def forward(self, x):
            (x_even_update, x_odd_update) = self.interact(x)
            return x_even_update.permute(0, 2, 1), x_odd_update.permute(0, 2, 1)  # even: B, T, D odd: B, T, D

    class SCINet_Tree(nn.Module):
        def __init__(self, in_planes, current_level, kernel_size, dropout, groups, hidden_size, INN):
            super().__init__()
            self.current_level = current_level
            self.workingblock = LevelSCINet(in_planes=in_planes, kernel_size=kernel_size, dropout=dropout,
                                            groups=groups, hidden_size=hidden_size, INN=INN)
            if current_level != 0:
                self.SCINet_Tree_odd = SCINet_Tree(in_planes, current_level - 1, kernel_size, dropout, groups,
                                                   hidden_size, INN)
                self.SCINet_Tree_even = SCINet_Tree(in_planes, current_level - 1, kernel_size, dropout, groups,
                                                    hidden_size, INN)

        def zip_up_the_pants(self, even, odd):
            even = even.permute(1, 0, 2)
            odd = odd.permute(1, 0, 2)  # L, B, D
            even_len = even.shape[0]
            odd_len = odd.shape[0]
            mlen = min((odd_len, even_len))
            _ = []
            for i in range(mlen):
                _.append(even[i].unsqueeze(0))
                _.append(odd[i].unsqueeze(0))
            if odd_len < even_len:
                _.append(even[-1].unsqueeze(0))
            return torch.cat(_, 0).permute(1, 0, 2)  # B, L, D

        def forward(self, x):
            x_even_update, x_odd_update = self.workingblock(x)
            if self.current_level == 0:
                return self.zip_up_the_pants(x_even_update, x_odd_update)
            else:
                return self.zip_up_the_pants(self.SCINet_Tree_even(x_even_update),
                                             self.SCINet_Tree_odd(x_odd_update))

    class SCINet(nn.Module):
        def __init__(self):
            super(SCINet, self).__init__()
            self.blocks1 = SCINet_Tree(in_planes=input_dim, current_level=num_levels - 1, kernel_size=kernel,
                                       dropout=0.0, groups=groups, hidden_size=hid_size, INN=True)
            for m_ in self.modules():
                if isinstance(m_, nn.Conv2d):
                    n = m_.kernel_size[0] * m_.kernel_size[1] * m_.out_channels
                    m_.weight.data.normal_(0, math.sqrt(2. / n))
                elif isinstance(m_, nn.BatchNorm2d):
                    m_.weight.data.fill_(1)
                    m_.bias.data.zero_()
                elif isinstance(m_, nn.Linear):
                    m_.bias.data.zero_()
            self.projection1 = nn.Conv1d(input_len, output_len, kernel_size=1, stride=1, bias=False)

        def forward(self, x):
            res1 = x
            x = self.blocks1(x)
            x += res1
            x = self.projection1(x)
            return x

    return SCINet()


def scinet(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, make_scinet(m), weights).double()
    values = torch.tensor(multiseries(length=40))
    windows = values.unfold(0, 20, 2).permute(0, 2, 1)  # [n, 20, C]
    x, y = windows[:, :16], windows[:, 16:]
    optimizer = optim.Adam(model.parameters(), lr=5e-3, betas=(0.9, 0.999), weight_decay=1e-5)
    criterion = nn.L1Loss()
    losses = []
    for step in range(3):
        optimizer.zero_grad()
        pred = model(x)
        loss = criterion(pred, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    grads = grads_of(model)
    # the tree's even/odd split and zip are a permutation: a one-level tree on an identity map
    probe = torch.arange(10.).view(1, 10, 1)
    evens, odds = probe[:, ::2, :], probe[:, 1::2, :]
    zipped = torch.stack((evens, odds), 2).reshape(1, 10, 1)
    return dict(losses=losses, grads=grads, params=params_of(model), zipped=zipped, odd_stride=odds.stride()[1:])


def test_scinet():
    ours, _ = run_both(scinet, weights_of(make_scinet), rtol=1e-9, atol=1e-11)
    np.testing.assert_array_equal(ours["zipped"].ravel(), np.arange(10.0))


# ----------------------------------------------------------------------------------------------
# A TCN with parametrized weight norm, trained from a random_split by fractions and a
# SubsetRandomSampler, with a deepcopy'd best model, ReduceLROnPlateau(mode='max') saved and restored,
# a checkpoint through torch.save, and the parametrization removed for deployment
# ----------------------------------------------------------------------------------------------


def make_tcn(m, num_inputs=3, channels=(6, 6), kernel_size=3, horizon=2):
    torch, nn = m.torch, m.nn
    weight_norm = nn.utils.parametrizations.weight_norm

    class TemporalBlock(nn.Module):
        def __init__(self, n_inputs, n_outputs, kernel_size, stride, dilation):
            super(TemporalBlock, self).__init__()
            self.left_pad = (kernel_size - 1) * dilation
            self.conv1 = weight_norm(nn.Conv1d(n_inputs, n_outputs, kernel_size, stride=stride, dilation=dilation))
            self.conv2 = weight_norm(nn.Conv1d(n_outputs, n_outputs, kernel_size, stride=stride, dilation=dilation))
            self.relu = nn.ReLU()
            self.downsample = nn.Conv1d(n_inputs, n_outputs, 1) if n_inputs != n_outputs else None

        def forward(self, x):
            out = self.relu(self.conv1(nn.functional.pad(x, (self.left_pad, 0))))
            out = self.relu(self.conv2(nn.functional.pad(out, (self.left_pad, 0))))
            res = x if self.downsample is None else self.downsample(x)
            return self.relu(out + res)

    class TCNForecaster(nn.Module):
        def __init__(self):
            super().__init__()
            layers = []
            for i, c in enumerate(channels):
                layers.append(TemporalBlock(num_inputs if i == 0 else channels[i - 1], c, kernel_size, 1, 2 ** i))
            self.tcn = nn.Sequential(*layers)
            self.head = nn.Linear(channels[-1], num_inputs * horizon)
            self.horizon = horizon

        def forward(self, x):  # x: [B, L, C]
            h = self.tcn(x.transpose(1, 2))[:, :, -1]
            return self.head(h).view(x.size(0), self.horizon, -1)

    return TCNForecaster()


def tcn_training(m, weights):
    torch, nn, optim, data = m.torch, m.nn, m.optim, m.data
    import io
    model = load(m, make_tcn(m), weights).double()
    values = torch.tensor(multiseries(length=70))
    w = values.unfold(0, 14, 1).permute(0, 2, 1)
    dataset = data.TensorDataset(w[:, :12], w[:, 12:])
    g = torch.Generator().manual_seed(11)
    train_ds, val_ds = data.random_split(dataset, [0.8, 0.2], generator=g)
    sampler = data.SubsetRandomSampler(list(range(0, len(train_ds), 2)), generator=torch.Generator().manual_seed(5))
    loader = data.DataLoader(train_ds, batch_size=6, sampler=sampler)
    val_loader = data.DataLoader(val_ds, batch_size=100)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode='max', factor=0.3, patience=0, threshold=0.5,
                                                     threshold_mode='abs', cooldown=1)
    best_score, best_model, scores, lrs, seen = -float('inf'), None, [], [], []
    for epoch in range(5):
        model.train()
        for xb, yb in loader:
            seen.append(xb[:, 0, 0].clone())
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(xb), yb)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            vx, vy = next(iter(val_loader))
            score = -nn.functional.l1_loss(model(vx), vy).item()  # higher is better
        scores.append(score)
        scheduler.step(score)
        lrs.append(optimizer.param_groups[0]['lr'])
        if score > best_score:
            best_score, best_model = score, copy.deepcopy(model)
    sched_state = scheduler.state_dict()
    scheduler2 = optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode='max')
    scheduler2.load_state_dict(sched_state)
    buffer = io.BytesIO()
    torch.save({'model': best_model.state_dict(), 'optimizer': optimizer.state_dict(), 'epoch': epoch}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    restored = make_tcn(m).double()
    restored.load_state_dict(checkpoint['model'])
    keys = sorted(checkpoint['model'].keys())
    with torch.no_grad():
        before = restored(vx)
    for block in restored.tcn:
        nn.utils.parametrize.remove_parametrizations(block.conv1, 'weight')
        nn.utils.parametrize.remove_parametrizations(block.conv2, 'weight')
    with torch.no_grad():
        after = restored(vx)
    return dict(split=(len(train_ds), len(val_ds), list(val_ds.indices)), seen=seen, scores=scores, lrs=lrs,
                best=best_score, keys=keys, params=params_of(model), best_params=params_of(best_model),
                before=before, after=after, plain_keys=sorted(restored.state_dict().keys()),
                sched=(scheduler2.best, scheduler2.num_bad_epochs, scheduler2.cooldown_counter, scheduler2.mode))


def test_tcn_parametrized_weight_norm_training():
    ours, _ = run_both(tcn_training, weights_of(make_tcn), rtol=1e-9, atol=1e-11)
    assert ours["split"][:2] == (46, 11)
    np.testing.assert_allclose(ours["before"], ours["after"], rtol=1e-12)
    assert "tcn.0.conv1.parametrizations.weight.original0" in ours["keys"]
    assert "tcn.0.conv1.weight" in ours["plain_keys"]


# ----------------------------------------------------------------------------------------------
# Weight norm as TCN checkpoints meet it: an old ``weight_g``/``weight_v`` checkpoint loaded into the
# parametrization, ``dim=None`` and ``dim=1`` (ConvTranspose1d), ``parametrize.cached()``, deepcopy
# of a parametrized module, and ``remove_weight_norm``
# ----------------------------------------------------------------------------------------------


def weight_norm_forms(m):
    torch, nn = m.torch, m.nn
    w = torch.tensor(np.sin(np.arange(24.0)).reshape(4, 2, 3))

    def fill(mod):
        with torch.no_grad():
            for i, (n, p) in enumerate(sorted(mod.named_parameters())):
                p.copy_(torch.cos(torch.arange(p.numel(), dtype=p.dtype) * 0.9 + i).view_as(p) * 0.6 + 0.1)
        return mod

    out = {}
    old = nn.utils.weight_norm(fill(nn.Conv1d(2, 4, 3).double()))
    with torch.no_grad():
        old.weight_v.copy_(w)
        old.weight_g.mul_(0.5)
    sd = old.state_dict()
    new = nn.utils.parametrizations.weight_norm(fill(nn.Conv1d(2, 4, 3).double()))
    new.load_state_dict(sd)  # the parametrization's pre-hook renames weight_g / weight_v
    out["old_to_new"] = (sorted(sd.keys()), new.weight, new.parametrizations.weight.original0,
                         old.weight)  # (stale: the old hook computes it before each forward)
    lin = nn.utils.parametrizations.weight_norm(fill(nn.Linear(3, 4).double()), dim=None)
    out["dim_none"] = (lin.parametrizations.weight.original0, lin.weight)
    ct = nn.utils.parametrizations.weight_norm(fill(nn.ConvTranspose1d(2, 4, 3).double()), dim=1)
    ct(torch.ones(1, 2, 5, dtype=torch.float64)).sum().backward()
    out["dim1"] = (tuple(ct.parametrizations.weight.original0.shape), ct.parametrizations.weight.original0.grad,
                   ct.parametrizations.weight.original1.grad)
    c = nn.utils.parametrizations.weight_norm(fill(nn.Conv1d(2, 4, 3).double()))
    x = torch.linspace(-1, 1, 28, dtype=torch.float64).view(2, 2, 7)
    with nn.utils.parametrize.cached():
        y = c(x).tanh() + c(x.flip(-1))
    y.pow(2).sum().backward()
    out["cached"] = c.parametrizations.weight.original0.grad
    d = copy.deepcopy(c)
    with torch.no_grad():
        c.parametrizations.weight.original0.mul_(2)
    out["deep"] = (d.weight, c.weight, nn.utils.parametrize.is_parametrized(d, "weight"))
    removed = nn.utils.weight_norm(fill(nn.Conv1d(2, 4, 3).double()), name="weight", dim=0)
    with torch.no_grad():
        removed.weight_v.copy_(w)
    nn.utils.remove_weight_norm(removed)
    out["remove_old"] = (removed.weight, sorted(removed.state_dict().keys()))
    return out


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_weight_norm_forms():
    ours, _ = run_both(weight_norm_forms, rtol=1e-12, atol=1e-12)
    w = np.sin(np.arange(24.0)).reshape(4, 2, 3)
    g = ours["old_to_new"][2]
    np.testing.assert_allclose(ours["old_to_new"][1], g * w / np.linalg.norm(w.reshape(4, -1), axis=1)[:, None, None],
                               rtol=1e-12)
    np.testing.assert_allclose(ours["deep"][1], 2 * ours["deep"][0], rtol=1e-12)
