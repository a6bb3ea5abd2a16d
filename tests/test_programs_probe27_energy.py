# ruff: noqa: B007, B008, B023, E741, E731, F841, N806, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Energy-based models and gradient-based samplers (see tests/pytorch_programs.py), as their authors write them in
PyTorch, each run on chainrule and on PyTorch from the same seeds, and checked against NumPy by hand or invariants.

An EBM trained by contrastive divergence with SGLD from a replay buffer (``requires_grad_``, ``autograd.grad`` of
an energy sum, ``randn_like`` noise, ``x.data`` updates, ``detach().clamp_``, buffer writes by index); Hamiltonian
Monte Carlo of vectorised chains (leapfrog, Metropolis by ``rand``/``where``) on a ``MultivariateNormal``; a small
NUTS (Hoffman and Gelman's naive recursion with a slice variable); denoising and sliced score matching (second
derivatives by ``create_graph=True``, Hutchinson's trace with Rademacher probes, the exact trace by a loop of
gradients); Stein variational gradient descent (RBF kernel by ``cdist``, the median heuristic, the kernel's
gradient by autograd and by hand); unadjusted and Metropolis-adjusted Langevin on ``torch.distributions``; annealed
importance sampling (``logsumexp`` weights, the log normaliser of a Gaussian); JEM (logits as energies,
class-conditional SGLD)."""

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
# Hamiltonian Monte Carlo: vectorised chains, leapfrog, Metropolis by rand/where
# ----------------------------------------------------------------------------------------------


def hmc_chains(m):
    torch = m.torch
    D = torch.distributions
    torch.manual_seed(0)
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    target = D.MultivariateNormal(torch.zeros(2), covariance_matrix=cov)

    def log_prob_and_grad(q):
        q = q.detach().requires_grad_(True)
        lp = target.log_prob(q)
        (g,) = torch.autograd.grad(lp.sum(), q)
        return lp.detach(), g

    def leapfrog(q, p, step, n_steps):
        _, g = log_prob_and_grad(q)
        p = p + 0.5 * step * g
        for i in range(n_steps):
            q = q + step * p
            _, g = log_prob_and_grad(q)
            if i != n_steps - 1:
                p = p + step * g
        p = p + 0.5 * step * g
        return q, -p

    n_chains = 16
    q = torch.randn(n_chains, 2) * 3
    samples, accepts = [], []
    for it in range(30):
        p0 = torch.randn_like(q)
        lp0, _ = log_prob_and_grad(q)
        q_new, p_new = leapfrog(q, p0, 0.25, 8)
        lp1, _ = log_prob_and_grad(q_new)
        h0 = -lp0 + 0.5 * (p0 ** 2).sum(-1)
        h1 = -lp1 + 0.5 * (p_new ** 2).sum(-1)
        log_accept = torch.clamp(h0 - h1, max=0.0)
        accept = torch.log(torch.rand(n_chains)) < log_accept
        q = torch.where(accept.unsqueeze(-1), q_new, q)
        accepts.append(accept.float().mean())
        samples.append(q.clone())
    s = torch.stack(samples[10:]).reshape(-1, 2)
    return dict(q=q, rate=torch.stack(accepts), mean=s.mean(0), cov=torch.cov(s.T), is_bool=accept.dtype == torch.bool)


def test_hmc_chains():
    ours, _ = run_both(hmc_chains, rtol=1e-4, atol=1e-5)
    assert ours["is_bool"] is True
    assert ours["rate"].mean() > 0.5
    np.testing.assert_allclose(ours["cov"], [[1.0, 0.8], [0.8, 1.0]], atol=0.45)


def hmc_energy_conservation(m):
    torch = m.torch
    torch.manual_seed(1)
    prec = torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=torch.float64)

    def U(q):
        return 0.5 * torch.einsum("...i,ij,...j->...", q, prec, q)

    def grad_U(q):
        q = q.detach().requires_grad_()
        return torch.autograd.grad(U(q).sum(), q)[0]

    q = torch.randn(4, 2, dtype=torch.float64)
    p = torch.randn(4, 2, dtype=torch.float64)
    H0 = U(q) + 0.5 * (p * p).sum(-1)
    eps = 0.01
    for _ in range(100):
        p = p - eps / 2 * grad_U(q)
        q = q + eps * p
        p = p - eps / 2 * grad_U(q)
    H1 = U(q) + 0.5 * (p * p).sum(-1)
    return dict(H0=H0, H1=H1, q=q, g=grad_U(q))


def test_hmc_energy_conservation():
    ours, _ = run_both(hmc_energy_conservation, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["H1"], ours["H0"], rtol=1e-3)
    prec = np.array([[2.0, 0.3], [0.3, 0.5]])
    np.testing.assert_allclose(ours["g"], ours["q"] @ prec, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# NUTS (Hoffman & Gelman, Algorithm 2, naive): recursive doubling with a slice variable
# ----------------------------------------------------------------------------------------------


def naive_nuts(m):
    torch = m.torch
    torch.manual_seed(2)
    mu = torch.tensor([1.0, -1.0], dtype=torch.float64)
    scale = torch.tensor([1.0, 0.5], dtype=torch.float64)
    dist = torch.distributions.Independent(torch.distributions.Normal(mu, scale), 1)

    def logp_grad(theta):
        theta = theta.detach().requires_grad_(True)
        lp = dist.log_prob(theta)
        g, = torch.autograd.grad(lp, theta)
        return lp.item(), g

    def leapfrog(theta, r, eps):
        _, g = logp_grad(theta)
        r = r + 0.5 * eps * g
        theta = theta + eps * r
        lp, g = logp_grad(theta)
        r = r + 0.5 * eps * g
        return theta, r, lp

    def build_tree(theta, r, logu, v, j, eps):
        if j == 0:
            theta1, r1, lp1 = leapfrog(theta, r, v * eps)
            joint = lp1 - 0.5 * torch.dot(r1, r1).item()
            n1 = int(logu <= joint)
            s1 = int(logu < joint + 1000.0)
            return theta1, r1, theta1, r1, [theta1], n1, s1
        tm, rm, tp, rp, C, n1, s1 = build_tree(theta, r, logu, v, j - 1, eps)
        if v == -1:
            tm, rm, _, _, C2, n2, s2 = build_tree(tm, rm, logu, v, j - 1, eps)
        else:
            _, _, tp, rp, C2, n2, s2 = build_tree(tp, rp, logu, v, j - 1, eps)
        d = tp - tm
        s = s1 * s2 * int(torch.dot(d, rm).item() >= 0) * int(torch.dot(d, rp).item() >= 0)
        return tm, rm, tp, rp, C + C2, n1 + n2, s

    theta = torch.zeros(2, dtype=torch.float64)
    draws, depths = [], []
    for it in range(12):
        r0 = torch.randn(2, dtype=torch.float64)
        lp0, _ = logp_grad(theta)
        logu = lp0 - 0.5 * torch.dot(r0, r0).item() + torch.log(torch.rand(1, dtype=torch.float64)).item()
        tm, rm, tp, rp, j, C, n, s = theta, r0, theta, r0, 0, [theta], 1, 1
        while s == 1 and j < 5:
            v = 1 if torch.rand(1).item() < 0.5 else -1
            if v == -1:
                tm, rm, _, _, C2, n2, s2 = build_tree(tm, rm, logu, v, j, 0.3)
            else:
                _, _, tp, rp, C2, n2, s2 = build_tree(tp, rp, logu, v, j, 0.3)
            if s2 == 1:
                C = C + C2
            n = n + n2
            d = tp - tm
            s = s2 * int(torch.dot(d, rm).item() >= 0) * int(torch.dot(d, rp).item() >= 0)
            j += 1
        # uniform choice among the slice's members
        lps = torch.tensor([logp_grad(c)[0] for c in C], dtype=torch.float64)
        rs = torch.stack(C)
        ok = torch.nonzero(lps >= logu - 50).flatten()
        idx = ok[torch.randint(len(ok), (1,))].item()
        theta = rs[idx]
        draws.append(theta)
        depths.append(j)
    return dict(draws=torch.stack(draws), depths=depths)


def test_naive_nuts():
    ours, _ = run_both(naive_nuts, rtol=1e-10, atol=1e-12)
    assert ours["draws"].shape == (12, 2) and np.isfinite(ours["draws"]).all()
    assert 1 <= min(ours["depths"]) and max(ours["depths"]) <= 5


# ----------------------------------------------------------------------------------------------
# Score matching: denoising (Vincent), sliced (Song et al.) with Rademacher probes, exact trace
# ----------------------------------------------------------------------------------------------


def score_matching(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(0)
    score = nn.Sequential(nn.Linear(2, 32), nn.Softplus(), nn.Linear(32, 32), nn.Softplus(), nn.Linear(32, 2))
    opt = optim.SGD(score.parameters(), lr=0.01, momentum=0.9)
    data = torch.randn(64, 2) @ torch.tensor([[1.0, 0.0], [0.5, 0.5]])

    def dsm_loss(x, sigma=0.1):
        noise = torch.randn_like(x)
        x_tilde = x + sigma * noise
        target = -noise / sigma
        return 0.5 * ((score(x_tilde) - target) ** 2).sum(dim=-1).mean()

    def ssm_loss(x, n_particles=2):
        dup = x.unsqueeze(0).expand(n_particles, *x.shape).contiguous().view(-1, *x.shape[1:])
        dup.requires_grad_(True)
        vectors = torch.randint(0, 2, dup.shape).float() * 2 - 1  # Rademacher
        s = score(dup)
        gradv = torch.sum(s * vectors)
        loss1 = torch.sum(s * vectors, dim=-1) ** 2 * 0.5
        grad2 = torch.autograd.grad(gradv, dup, create_graph=True)[0]
        loss2 = torch.sum(vectors * grad2, dim=-1)
        return (loss1 + loss2).view(n_particles, -1).mean(dim=0).mean()

    def exact_sm_loss(x):
        x = x.requires_grad_(True)
        s = score(x)
        trace = torch.zeros(x.shape[0])
        for i in range(x.shape[1]):
            trace = trace + torch.autograd.grad(s[:, i].sum(), x, create_graph=True)[0][:, i]
        return (0.5 * s.pow(2).sum(-1) + trace).mean()

    hist = []
    for step in range(3):
        for loss_fn in (dsm_loss, ssm_loss, exact_sm_loss):
            opt.zero_grad()
            loss = loss_fn(data.clone())
            loss.backward()
            opt.step()
            hist.append(loss.detach())
    grads = [p.grad.clone() for p in score.parameters()]
    return dict(hist=torch.stack(hist), grads=grads, w=score[2].weight)


def test_score_matching():
    ours, _ = run_both(score_matching, rtol=1e-4, atol=1e-5)
    assert np.isfinite(ours["hist"]).all()


def hutchinson_vs_exact(m):
    torch = m.torch
    torch.manual_seed(4)
    W = torch.randn(3, 3, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    s = torch.tanh(x @ W)  # a score field; its Jacobian is diag(1 - s^2) W^T per row
    exact = torch.stack([torch.autograd.grad(s[:, i].sum(), x, create_graph=True)[0][:, i] for i in range(3)], 1)
    exact = exact.sum(1)
    est = torch.zeros(5, dtype=torch.float64)
    n = 2000
    v = torch.randint(0, 2, (n, 5, 3), dtype=torch.float64) * 2 - 1
    for k in range(n // 500):
        vk = v[k * 500:(k + 1) * 500]
        xs = x.detach().unsqueeze(0).repeat(500, 1, 1).requires_grad_()
        ss = torch.tanh(xs @ W)
        (jv,) = torch.autograd.grad((ss * vk).sum(), xs)
        est = est + (jv * vk).sum(-1).sum(0)
    est = est / n
    gx, = torch.autograd.grad(exact.sum(), x)
    return dict(exact=exact, est=est, gx=gx, s=s, W=W)


def test_hutchinson_vs_exact():
    ours, _ = run_both(hutchinson_vs_exact, rtol=1e-10, atol=1e-12)
    W, s = ours["W"], ours["s"]
    # d s_i / d x_i = (1 - s_i^2) W_ii
    np.testing.assert_allclose(ours["exact"], ((1 - s ** 2) * np.diag(W)).sum(1), rtol=1e-12)
    np.testing.assert_allclose(ours["est"], ours["exact"], atol=0.15)


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
# Stein variational gradient descent (Liu & Wang): RBF kernel by cdist, the median heuristic
# ----------------------------------------------------------------------------------------------


def svgd(m):
    torch = m.torch
    D = torch.distributions
    torch.manual_seed(4)
    target = D.MixtureSameFamily(D.Categorical(torch.tensor([0.3, 0.7])),
                                 D.Normal(torch.tensor([-2.0, 2.0]), torch.tensor([1.0, 1.0])))

    class RBF:
        def __call__(self, X, Y):
            XY = torch.cdist(X, Y) ** 2
            h = torch.median(XY.detach()) / (2 * math.log(X.size(0) + 1))
            self.h = h
            return torch.exp(-0.5 * XY / h)

    K_fn = RBF()
    X = (torch.randn(16, 1) * 0.5).double()
    opt = m.optim.Adagrad([X], lr=0.5)
    for it in range(6):
        Xd = X.detach().requires_grad_(True)
        log_prob = target.log_prob(Xd.squeeze(-1).float()).sum()
        score_func = torch.autograd.grad(log_prob, Xd)[0]
        K_XX = K_fn(Xd, Xd.detach())
        grad_K = -torch.autograd.grad(K_XX.sum(), Xd)[0]
        phi = (K_XX.detach().matmul(score_func) + grad_K) / Xd.size(0)
        by_hand = (Xd.detach() * K_XX.sum(1, keepdim=True) - K_XX.matmul(Xd.detach())).detach() / K_fn.h
        opt.zero_grad()
        X.grad = -phi
        opt.step()
    return dict(X=X, phi=phi, grad_K=grad_K, by_hand=by_hand, h=K_fn.h,
                dtypes=[score_func.dtype == torch.float64, X.dtype == torch.float64])


def test_svgd():
    ours, _ = run_both(svgd, rtol=1e-6, atol=1e-8)
    assert ours["dtypes"] == [True, True]
    # the repulsive term -d/dx_i sum_j k(x_i, x_j) is the closed form sum_j k(x_i, x_j)(x_i - x_j)/h
    np.testing.assert_allclose(ours["grad_K"], ours["by_hand"], rtol=1e-10, atol=1e-12)


def kernel_stein_discrepancy(m):
    torch = m.torch
    D = torch.distributions
    torch.manual_seed(1)
    X = torch.randn(6, 2, dtype=torch.float64)
    X[2] = X[0]  # a repeated particle: cdist's gradient at distance 0
    target = D.MultivariateNormal(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    Xg = X.clone().requires_grad_()
    s = torch.autograd.grad(target.log_prob(Xg).sum(), Xg)[0]
    x, y = X.clone().requires_grad_(), X.clone().requires_grad_()
    K = (1.0 + torch.cdist(x, y) ** 2) ** -0.5  # inverse multiquadric
    dKx = torch.autograd.grad(K.sum(), x, create_graph=True)[0]
    try:  # cdist's backward has no derivative of its own, in PyTorch as here
        torch.autograd.grad(dKx.sum(), y)
        mixed = "differentiable"
    except NotImplementedError as e:
        mixed = str(e)
    diff = x[:, None, :] - y[None, :, :]
    r2 = (diff ** 2).sum(-1)
    Kb = (1.0 + r2) ** -0.5
    gradx = -(1.0 + r2)[..., None] ** -1.5 * diff
    trace = 0
    for i in range(2):
        trace = trace + torch.autograd.grad(gradx[..., i].sum(), y, retain_graph=True, create_graph=True)[0][:, i]
    u = Kb * (s @ s.T) - (s[:, None, :] * gradx).sum(-1) + (s[None, :, :] * gradx).sum(-1)
    u = u - torch.diag(torch.diag(u))
    ksd = u.sum() / (6 * 5)
    (gx,) = torch.autograd.grad(ksd, x)
    return dict(K=K, Kb=Kb, dKx=dKx, mixed=mixed, trace=trace, ksd=ksd, gx=gx, s=s, X=X)


def test_kernel_stein_discrepancy():
    ours, _ = run_both(kernel_stein_discrepancy, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["K"], ours["Kb"], rtol=1e-12)
    assert ours["mixed"] == "the derivative for '_cdist_backward' is not implemented."
    np.testing.assert_allclose(ours["s"], -ours["X"], rtol=1e-12)
    X = ours["X"]
    r2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    # sum_i d2k/dx_i dy_i = sum_j [2/(1+r2)^1.5 - 3 r2/(1+r2)^2.5] over the particles x_j
    np.testing.assert_allclose(ours["trace"], (2 / (1 + r2) ** 1.5 - 3 * r2 / (1 + r2) ** 2.5).sum(0), rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Annealed importance sampling (Neal) with MALA transitions; the log normaliser of a Gaussian
# ----------------------------------------------------------------------------------------------


def annealed_importance_sampling(m):
    torch = m.torch
    D = torch.distributions
    torch.manual_seed(0)
    p0 = D.Normal(torch.zeros(2), 3 * torch.ones(2))

    def log_f1(x):  # unnormalised N(1, 0.5^2 I): Z = 2 pi 0.25
        return -0.5 * ((x - 1.0) ** 2 / 0.25).sum(-1)

    betas = torch.linspace(0, 1, 25)
    n, tau = 200, 0.05
    x = p0.sample((n,))
    logw = torch.zeros(n)
    accepted = []
    for b0, b1 in zip(betas[:-1], betas[1:]):
        logw = logw + (b1 - b0) * (log_f1(x) - p0.log_prob(x).sum(-1))

        def log_target(z):
            return (1 - b1) * p0.log_prob(z).sum(-1) + b1 * log_f1(z)

        for _ in range(2):
            x = x.detach().requires_grad_()
            lt = log_target(x)
            (g,) = torch.autograd.grad(lt.sum(), x)
            prop = (x + tau * g + math.sqrt(2 * tau) * torch.randn_like(x)).detach().requires_grad_()
            lp = log_target(prop)
            (gp,) = torch.autograd.grad(lp.sum(), prop)
            lq_fwd = -((prop - x - tau * g) ** 2).sum(-1) / (4 * tau)
            lq_bwd = -((x - prop - tau * gp) ** 2).sum(-1) / (4 * tau)
            log_alpha = (lp - lt + lq_bwd - lq_fwd).detach()
            accept = torch.rand(n).log() < log_alpha
            accepted.append(accept.float().mean())
            x = torch.where(accept[:, None], prop, x).detach()
    log_Z = torch.logsumexp(logw, 0) - math.log(n)
    ess = torch.exp(2 * torch.logsumexp(logw, 0) - torch.logsumexp(2 * logw, 0))
    return dict(log_Z=log_Z, ess=ess, mean=x.mean(0), rate=torch.stack(accepted).mean(), w=torch.softmax(logw, 0))


def test_annealed_importance_sampling():
    ours, _ = run_both(annealed_importance_sampling, rtol=1e-4, atol=1e-5)
    assert abs(float(ours["log_Z"]) - math.log(2 * math.pi * 0.25)) < 0.2
    assert 1 <= float(ours["ess"]) <= 200 and float(ours["rate"]) > 0.5
    np.testing.assert_allclose(ours["w"].sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(ours["mean"], [1.0, 1.0], atol=0.2)


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


# ----------------------------------------------------------------------------------------------
# MALA on torch.distributions targets, and a checkpoint of an EBM with its replay buffer in a deque
# ----------------------------------------------------------------------------------------------


def mala_distributions(m):
    torch = m.torch
    D = torch.distributions
    torch.manual_seed(2)
    targets = [D.Independent(D.StudentT(torch.tensor([3.0, 5.0]), torch.zeros(2), torch.ones(2)), 1),
               D.MultivariateNormal(torch.tensor([1.0, -1.0]), scale_tril=torch.tensor([[1.0, 0.0], [0.5, 0.5]])),
               D.Independent(D.Gamma(torch.tensor([2.0, 3.0]), torch.tensor([1.0, 2.0])), 1)]
    out = []
    for target in targets:
        x = target.sample((10,)).clone()
        tau = 0.05
        rate = 0.0
        for step in range(15):
            x = x.detach().requires_grad_(True)
            lp = target.log_prob(x)
            (g,) = torch.autograd.grad(lp.sum(), x)
            mean = x + tau * g
            prop = (mean + math.sqrt(2 * tau) * torch.randn_like(x)).detach()
            if isinstance(target.base_dist if hasattr(target, "base_dist") else target, D.Gamma):
                prop = prop.abs()  # a reflection keeps the chain in the support
            prop.requires_grad_(True)
            lp_p = target.log_prob(prop)
            (g_p,) = torch.autograd.grad(lp_p.sum(), prop)
            q_fwd = D.Normal(mean, math.sqrt(2 * tau)).log_prob(prop).sum(-1)
            q_bwd = D.Normal(prop + tau * g_p, math.sqrt(2 * tau)).log_prob(x).sum(-1)
            log_alpha = lp_p - lp + q_bwd - q_fwd
            accept = torch.rand(10) < log_alpha.exp()
            x = torch.where(accept.unsqueeze(-1), prop, x)
            rate += accept.float().mean().item() / 15
        out.append(dict(x=x, rate=rate))
    return out


def test_mala_distributions():
    ours, _ = run_both(mala_distributions, rtol=1e-4, atol=1e-5)
    assert all(r["rate"] > 0.5 for r in ours)
    assert (ours[2]["x"] > 0).all()


def ebm_checkpoint(m):
    import collections
    import io

    torch, nn = m.torch, m.nn
    torch.manual_seed(6)
    f = nn.Sequential(nn.Linear(2, 8), nn.SiLU(), nn.Linear(8, 1))
    buffer = collections.deque(maxlen=4)
    for i in range(6):
        buffer.append(torch.rand(3, 2) * 2 - 1)
    opt = m.optim.Adam(f.parameters(), lr=1e-3)
    f(torch.cat(list(buffer))).sum().backward()
    opt.step()
    file = io.BytesIO()
    torch.save({"model": f.state_dict(), "optimizer": opt.state_dict(), "buffer": buffer, "step": 6}, file)
    file.seek(0)
    try:
        torch.load(file)
        refused = "loaded"
    except Exception as e:  # a deque is no allowed global of a weights-only load
        refused = type(e).__name__
    file.seek(0)
    ckpt = torch.load(file, weights_only=False)
    g = nn.Sequential(nn.Linear(2, 8), nn.SiLU(), nn.Linear(8, 1))
    g.load_state_dict(ckpt["model"])
    restored = ckpt["buffer"]
    return dict(refused=refused, maxlen=restored.maxlen, kind=type(restored).__name__, buffer=torch.cat(list(restored)),
                same=torch.equal(g(torch.cat(list(restored))), f(torch.cat(list(buffer)))), step=ckpt["step"],
                exp_avg=ckpt["optimizer"]["state"][0]["exp_avg"])


def test_ebm_checkpoint():
    ours, _ = run_both(ebm_checkpoint)
    assert ours["refused"] == "UnpicklingError" and ours["kind"] == "deque" and ours["maxlen"] == 4
    assert ours["same"] is True and ours["buffer"].shape == (12, 2) and ours["step"] == 6


# ----------------------------------------------------------------------------------------------
# Chains vectorised by torch.func.vmap (randomness="different"), and an old Riemannian-HMC metric
# that tries torch.symeig (removed in PyTorch 1.9: a RuntimeError) before linalg.eigh
# ----------------------------------------------------------------------------------------------


def vmap_hmc(m):
    import importlib

    torch = m.torch
    func = importlib.import_module(torch.__name__ + ".func")
    torch.manual_seed(0)
    prec = torch.tensor([[2.0, 0.5], [0.5, 1.0]])

    def logp(q):
        return -0.5 * q @ prec @ q

    grad_logp = func.grad(logp)

    def step(q):
        p = torch.randn_like(q)
        q_new, p_new = q, p + 0.5 * 0.2 * grad_logp(q)
        for i in range(5):
            q_new = q_new + 0.2 * p_new
            p_new = p_new + (0.2 if i < 4 else 0.1) * grad_logp(q_new)
        h0 = -logp(q) + 0.5 * (p * p).sum()
        h1 = -logp(q_new) + 0.5 * (p_new * p_new).sum()
        accept = torch.log(torch.rand(())) < (h0 - h1)
        return torch.where(accept, q_new, q), accept

    qs = torch.randn(6, 2)
    rates = []
    for _ in range(5):
        qs, accept = func.vmap(step, randomness="different")(qs)
        rates.append(accept.float().mean())
    g = func.vmap(grad_logp)(qs)
    return dict(qs=qs, rates=torch.stack(rates), g=g, is_bool=accept.dtype == torch.bool)


def test_vmap_hmc():
    ours, _ = run_both(vmap_hmc)
    assert ours["is_bool"] is True and ours["qs"].shape == (6, 2)
    np.testing.assert_allclose(ours["g"], -ours["qs"] @ np.array([[2.0, 0.5], [0.5, 1.0]]), rtol=1e-5, atol=1e-6)


def softabs_metric(m):
    torch = m.torch
    torch.manual_seed(3)
    H0 = torch.randn(3, 3, dtype=torch.float64)
    H = (H0 + H0.T).requires_grad_()
    try:
        L, Q = torch.symeig(H, eigenvectors=True)
        route = "symeig"
    except RuntimeError as e:
        L, Q = torch.linalg.eigh(H)
        route = "eigh: " + str(e).splitlines()[0]
    lam = L / torch.tanh(1e6 * L)  # SoftAbs: |L| smoothed
    G = Q @ torch.diag_embed(lam) @ Q.T
    log_det = torch.logdet(G)
    (g,) = torch.autograd.grad(log_det, H)
    return dict(route=route, lam=lam, G=G, log_det=log_det, g=g, H=H)


def test_softabs_metric():
    ours, _ = run_both(softabs_metric, rtol=1e-10, atol=1e-12)
    assert ours["route"] == "eigh: This function was deprecated since version 1.9 and is now removed. The default " \
                            "behavior has changed from using the upper triangular portion of the matrix by default " \
                            "to using the lower triangular portion."
    np.testing.assert_allclose(ours["lam"], np.abs(np.linalg.eigvalsh(ours["H"])), rtol=1e-10)
    np.testing.assert_allclose(ours["log_det"], np.log(np.abs(np.linalg.eigvalsh(ours["H"]))).sum(), rtol=1e-10)
