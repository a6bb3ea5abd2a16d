# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Energy-based models and gradient-based samplers (see tests/pytorch_programs.py), as their authors write them in
PyTorch, each run on chainrule and on PyTorch from the same seeds, and checked against NumPy by hand or invariants.
Energy-based models: an EBM trained by contrastive divergence with SGLD from a replay buffer (``requires_grad_``,
``autograd.grad`` of an energy sum, ``randn_like`` noise, ``x.data`` updates, ``detach().clamp_``, buffer writes by
index); an image EBM as the UvA deep-learning tutorial writes it (a CNN with Swish, a Sampler of a list of buffered
images, Langevin steps by ``.backward()`` on the inputs with the parameters frozen); JEM (logits as energies,
class-conditional SGLD); discrete EBMs: an RBM by CD-k (the pytorch-rbm recipe) and Gibbs-with-gradients on an Ising
model."""

import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# EBM by contrastive divergence: SGLD from a replay buffer (Du & Mordatch; the JEM/IGEBM recipe)
# ----------------------------------------------------------------------------------------------


def ebm_replay_sgld(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)

    class EnergyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 1))

        def forward(self, x):
            return self.net(x).squeeze(-1)

    f = EnergyNet()
    opt = optim.Adam(f.parameters(), lr=1e-3, betas=(0.0, 0.999))
    buffer = torch.rand(64, 2) * 2 - 1
    data = torch.randn(256, 2) * 0.3 + torch.tensor([0.5, -0.5])

    def sample_buffer(n, reinit_freq=0.05):
        inds = torch.randint(0, buffer.size(0), (n,))
        buffer_samples = buffer[inds]
        random_samples = torch.rand(n, 2) * 2 - 1
        choose_random = (torch.rand(n) < reinit_freq).float()[:, None]
        samples = choose_random * random_samples + (1 - choose_random) * buffer_samples
        return samples, inds

    def sgld(n, steps=10, step_size=1.0, noise=0.01):
        f.eval()
        x_k, inds = sample_buffer(n)
        x_k = torch.autograd.Variable(x_k, requires_grad=True)
        for k in range(steps):
            f_prime = torch.autograd.grad(-f(x_k).sum(), [x_k], retain_graph=True)[0]
            x_k.data += step_size * f_prime + noise * torch.randn_like(x_k)
        f.train()
        final = x_k.detach().clamp_(-1.5, 1.5)
        buffer[inds] = final.cpu()
        return final

    losses, grad_norms = [], []
    for it in range(4):
        x_pos = data[it * 32:(it + 1) * 32]
        x_neg = sgld(32)
        e_pos, e_neg = f(x_pos), f(x_neg)
        loss = -(e_pos.mean() - e_neg.mean()) + 0.1 * (e_pos ** 2 + e_neg ** 2).mean()
        opt.zero_grad()
        loss.backward()
        grad_norms.append(torch.nn.utils.clip_grad_norm_(f.parameters(), 10.0))
        opt.step()
        losses.append(loss.item())
    return dict(losses=losses, buffer=buffer, grad_norms=torch.stack(grad_norms), w=f.net[0].weight)


def test_ebm_replay_sgld():
    ours, _ = run_both(ebm_replay_sgld, rtol=1e-4, atol=1e-5)
    assert np.abs(ours["buffer"]).max() <= 1.5
    assert np.isfinite(ours["losses"]).all()


def ebm_sgld_requires_grad(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(3)
    energy = nn.Sequential(nn.Linear(3, 16), nn.Softplus(), nn.Linear(16, 1))
    x = torch.randn(8, 3)
    trace = []
    for _ in range(5):
        x = x.detach().requires_grad_()
        e = energy(x).sum()
        (g,) = torch.autograd.grad(e, x)
        x = x - 0.1 * g + math.sqrt(2 * 0.1) * 0.05 * torch.randn_like(x)
        x = x.detach().clamp_(-2.0, 2.0)
        trace.append(energy(x).mean().detach())
    return dict(x=x, trace=torch.stack(trace), leaf=x.is_leaf, rg=x.requires_grad)


def test_ebm_sgld_requires_grad():
    ours, _ = run_both(ebm_sgld_requires_grad)
    assert ours["leaf"] is True and ours["rg"] is False
    assert np.abs(ours["x"]).max() <= 2.0


# ----------------------------------------------------------------------------------------------
# An image EBM as the UvA deep-learning tutorial writes it: a CNN with Swish, a Sampler of a list of
# buffered images, Langevin steps by .backward() on the inputs with the parameters frozen
# ----------------------------------------------------------------------------------------------


def uva_image_ebm(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(42)

    class Swish(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)

    class CNNModel(nn.Module):
        def __init__(self, hidden_features=8, out_dim=1):
            super().__init__()
            c_hid1 = hidden_features // 2
            c_hid2 = hidden_features
            self.cnn_layers = nn.Sequential(
                nn.Conv2d(1, c_hid1, kernel_size=3, stride=2, padding=1), Swish(),
                nn.Conv2d(c_hid1, c_hid2, kernel_size=3, stride=2, padding=1), Swish(),
                nn.Flatten(), nn.Linear(c_hid2 * 4, c_hid2), Swish(), nn.Linear(c_hid2, out_dim))

        def forward(self, x):
            return self.cnn_layers(x).squeeze(dim=-1)

    class Sampler:
        def __init__(self, model, img_shape, sample_size, max_len=32):
            self.model, self.img_shape, self.sample_size, self.max_len = model, img_shape, sample_size, max_len
            self.examples = [(torch.rand((1,) + img_shape) * 2 - 1) for _ in range(self.sample_size)]

        def sample_new_exmps(self, steps=8, step_size=10):
            n_new = int(torch.distributions.Binomial(self.sample_size, torch.tensor(0.25)).sample().item())
            rand_imgs = torch.rand((n_new,) + self.img_shape) * 2 - 1
            picks = torch.randint(0, len(self.examples), (self.sample_size - n_new,)).tolist()
            old_imgs = torch.cat([self.examples[i] for i in picks], dim=0)
            inp_imgs = torch.cat([rand_imgs, old_imgs], dim=0).detach()
            inp_imgs = Sampler.generate_samples(self.model, inp_imgs, steps=steps, step_size=step_size)
            self.examples = list(inp_imgs.to(torch.device("cpu")).chunk(self.sample_size, dim=0)) + self.examples
            self.examples = self.examples[:self.max_len]
            return inp_imgs

        @staticmethod
        def generate_samples(model, inp_imgs, steps=8, step_size=10, return_img_per_step=False):
            is_training = model.training
            model.eval()
            for p in model.parameters():
                p.requires_grad = False
            inp_imgs.requires_grad = True
            had_gradients_enabled = torch.is_grad_enabled()
            torch.set_grad_enabled(True)
            noise = torch.randn(inp_imgs.shape, device=inp_imgs.device)
            imgs_per_step = []
            for _ in range(steps):
                noise.normal_(0, 0.005)
                inp_imgs.data.add_(noise.data)
                inp_imgs.data.clamp_(min=-1.0, max=1.0)
                out_imgs = -model(inp_imgs)
                out_imgs.sum().backward()
                inp_imgs.grad.data.clamp_(-0.03, 0.03)
                inp_imgs.data.add_(-step_size * inp_imgs.grad.data)
                inp_imgs.grad.detach_()
                inp_imgs.grad.zero_()
                inp_imgs.data.clamp_(min=-1.0, max=1.0)
                if return_img_per_step:
                    imgs_per_step.append(inp_imgs.clone().detach())
            for p in model.parameters():
                p.requires_grad = True
            model.train(is_training)
            torch.set_grad_enabled(had_gradients_enabled)
            return torch.stack(imgs_per_step, dim=0) if return_img_per_step else inp_imgs

    cnn = CNNModel()
    sampler = Sampler(cnn, img_shape=(1, 8, 8), sample_size=8)
    opt = optim.Adam(cnn.parameters(), lr=1e-3, betas=(0.0, 0.999))
    sched = optim.lr_scheduler.StepLR(opt, 1, gamma=0.97)
    data = torch.tanh(torch.randn(32, 1, 8, 8))
    log = []
    for i in range(3):
        real_imgs = data[i * 8:(i + 1) * 8].clone()
        small_noise = torch.randn_like(real_imgs) * 0.005
        real_imgs.add_(small_noise).clamp_(min=-1.0, max=1.0)
        fake_imgs = sampler.sample_new_exmps(steps=6, step_size=10)
        inp_imgs = torch.cat([real_imgs, fake_imgs], dim=0)
        real_out, fake_out = cnn(inp_imgs).chunk(2, dim=0)
        reg_loss = 0.1 * (real_out ** 2 + fake_out ** 2).mean()
        cdiv_loss = fake_out.mean() - real_out.mean()
        loss = reg_loss + cdiv_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        log.append(torch.stack([loss, reg_loss, cdiv_loss, real_out.mean(), fake_out.mean()]).detach())
    torch.manual_seed(0)
    per_step = Sampler.generate_samples(cnn, torch.rand(2, 1, 8, 8) * 2 - 1, steps=4, step_size=10,
                                        return_img_per_step=True)
    return dict(log=torch.stack(log), per_step=per_step, buffer=torch.cat(sampler.examples), lr=sched.get_last_lr(),
                w=cnn.cnn_layers[0].weight, n=len(sampler.examples), rg=[p.requires_grad for p in cnn.parameters()],
                grad_enabled=torch.is_grad_enabled())


def test_uva_image_ebm():
    ours, _ = run_both(uva_image_ebm, rtol=1e-4, atol=1e-5)
    assert ours["n"] == 32 and ours["per_step"].shape == (4, 2, 1, 8, 8)
    assert np.abs(ours["buffer"]).max() <= 1.0 and all(ours["rg"]) and ours["grad_enabled"] is True
    np.testing.assert_allclose(ours["lr"], [1e-3 * 0.97 ** 3])
    np.testing.assert_allclose(ours["log"][:, 0], ours["log"][:, 1] + ours["log"][:, 2], rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# JEM (Grathwohl et al.): a classifier's logits as energies, class-conditional SGLD from a buffer
# ----------------------------------------------------------------------------------------------


def jem(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(5)
    n_classes, buffer_size, bs = 3, 30, 6

    class F_(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Linear(4, 16), nn.LeakyReLU(0.2), nn.Dropout(0.0), nn.Linear(16, 16),
                                   nn.LeakyReLU(0.2))
            self.class_output = nn.Linear(16, n_classes)

        def classify(self, x):
            return self.class_output(self.f(x)).squeeze()

        def forward(self, x, y=None):
            logits = self.classify(x)
            if y is None:
                return logits.logsumexp(1)
            return torch.gather(logits, 1, y[:, None])

    f = F_()
    replay_buffer = torch.FloatTensor(buffer_size, 4).uniform_(-1, 1)
    opt = optim.SGD(f.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    x_all = torch.randn(24, 4)
    y_all = (x_all[:, 0] > 0).long() + (x_all[:, 1] > 0.5).long()

    def sample_q(y, n_steps=5):
        f.eval()
        inds = torch.randint(0, buffer_size // n_classes, (bs,))
        inds = y.cpu() * (buffer_size // n_classes) + inds
        buffer_samples = replay_buffer[inds]
        random_samples = torch.FloatTensor(bs, 4).uniform_(-1, 1)
        choose_random = (torch.rand(bs) < 0.05).float()[:, None]
        init = choose_random * random_samples + (1 - choose_random) * buffer_samples
        x_k = torch.autograd.Variable(init, requires_grad=True)
        for k in range(n_steps):
            f_prime = torch.autograd.grad(f(x_k, y=y).sum(), [x_k], retain_graph=True)[0]
            x_k.data += 1.0 * f_prime + 0.01 * torch.randn_like(x_k)
        f.train()
        final = x_k.detach()
        replay_buffer[inds] = final
        return final

    hist = []
    for i in range(3):
        x_lab, y_lab = x_all[i * bs:(i + 1) * bs], y_all[i * bs:(i + 1) * bs]
        x_q = sample_q(y_lab)
        fp, fq = f(x_lab, y_lab).mean(), f(x_q, y_lab).mean()
        l_pxy = -(fp - fq)
        l_pyx = F.cross_entropy(f.classify(x_lab), y_lab)
        loss = l_pxy + l_pyx
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(torch.stack([l_pxy, l_pyx]).detach())
        energy = -f(x_lab)
        cond = -f(x_lab, y_lab).squeeze()
    probs = F.softmax(f.classify(x_all), 1)
    return dict(hist=torch.stack(hist), buffer=replay_buffer, energy=energy, cond=cond, probs=probs,
                acc=(probs.argmax(1) == y_all).float().mean())


def test_jem():
    ours, _ = run_both(jem, rtol=1e-4, atol=1e-5)
    # -log sum_y exp f(x)[y] <= -f(x)[y]: the marginal energy lies below each class's
    assert (ours["energy"] <= ours["cond"] + 1e-6).all()
    np.testing.assert_allclose(ours["probs"].sum(1), 1.0, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Discrete EBMs: an RBM by CD-k (the pytorch-rbm recipe) and Gibbs-with-gradients on an Ising model
# ----------------------------------------------------------------------------------------------


def rbm_cd_k(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(3)

    class RBM(nn.Module):
        def __init__(self, n_vis=6, n_hin=4, k=3):
            super().__init__()
            self.W = nn.Parameter(torch.randn(n_hin, n_vis) * 1e-2)
            self.v_bias = nn.Parameter(torch.zeros(n_vis))
            self.h_bias = nn.Parameter(torch.zeros(n_hin))
            self.k = k

        def sample_from_p(self, p):
            return F.relu(torch.sign(p - torch.autograd.Variable(torch.rand(p.size()))))

        def v_to_h(self, v):
            p_h = torch.sigmoid(F.linear(v, self.W, self.h_bias))
            return p_h, self.sample_from_p(p_h)

        def h_to_v(self, h):
            p_v = torch.sigmoid(F.linear(h, self.W.t(), self.v_bias))
            return p_v, self.sample_from_p(p_v)

        def forward(self, v):
            pre_h1, h1 = self.v_to_h(v)
            h_ = h1
            for _ in range(self.k):
                pre_v_, v_ = self.h_to_v(h_)
                pre_h_, h_ = self.v_to_h(v_)
            return v, v_

        def free_energy(self, v):
            vbias_term = v.mv(self.v_bias)
            wx_b = F.linear(v, self.W, self.h_bias)
            hidden_term = wx_b.exp().add(1).log().sum(1)
            return (-hidden_term - vbias_term).mean()

    rbm = RBM()
    train_op = m.optim.SGD(rbm.parameters(), 0.1)
    data = torch.bernoulli(torch.full((32, 6), 0.3))
    losses = []
    for epoch in range(3):
        for i in range(0, 32, 8):
            sample_data = data[i:i + 8]
            v, v1 = rbm(sample_data)
            loss = rbm.free_energy(v) - rbm.free_energy(v1)
            losses.append(loss.item())
            train_op.zero_grad()
            loss.backward()
            train_op.step()
    return dict(losses=losses, W=rbm.W, v1=v1, fe=rbm.free_energy(data))


def test_rbm_cd_k():
    ours, _ = run_both(rbm_cd_k, rtol=1e-5, atol=1e-6)
    assert set(np.unique(ours["v1"])) <= {0.0, 1.0}
    # the free energy of v: -v.b - sum_j softplus(W v + c)_j, by NumPy
    assert np.isfinite(ours["fe"]) and ours["fe"] < 0


def gibbs_with_gradients(m):
    torch = m.torch
    D = torch.distributions
    torch.manual_seed(1)
    dim = 8
    J = torch.randn(dim, dim) * 0.3
    J = (J + J.T) / 2
    J.fill_diagonal_(0)
    b = torch.randn(dim) * 0.1

    def log_p(x):
        return ((x @ J) * x).sum(-1) + x @ b

    def diff_fn(x):
        x = x.clone().requires_grad_()
        lp = log_p(x)
        (g,) = torch.autograd.grad(lp.sum(), x)
        return -(2 * x.detach() - 1) * g, lp.detach()

    x = (torch.rand(5, dim) < 0.5).float()
    accepts = []
    for it in range(12):
        forward_delta, lp_x = diff_fn(x)
        cd_forward = D.OneHotCategorical(logits=forward_delta / 2.0)
        changes = cd_forward.sample()
        lp_forward = cd_forward.log_prob(changes)
        x_delta = (1.0 - x) * changes + x * (1.0 - changes)
        reverse_delta, lp_delta = diff_fn(x_delta)
        lp_reverse = D.OneHotCategorical(logits=reverse_delta / 2.0).log_prob(changes)
        la = lp_delta - lp_x + lp_reverse - lp_forward
        a = (la.exp() > torch.rand_like(la)).float()
        x = x_delta * a[:, None] + x * (1.0 - a[:, None])
        accepts.append(a.mean())
    return dict(x=x, accepts=torch.stack(accepts), la=la, delta=forward_delta)


def test_gibbs_with_gradients():
    ours, _ = run_both(gibbs_with_gradients, rtol=1e-5, atol=1e-6)
    assert set(np.unique(ours["x"])) <= {0.0, 1.0}
    assert 0 < ours["accepts"].mean() <= 1
