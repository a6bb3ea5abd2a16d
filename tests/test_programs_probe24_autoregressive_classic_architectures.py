# ruff: noqa: B007, E501, E702, F841  (the programs are kept as their authors wrote them)
"""Autoregressive generative models and classic architectures from papers (see tests/pytorch_programs.py), as PyTorch
users write them, each run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against
invariants that can fail (receptive fields, normalisation, reconstructions, ranges). Classic architectures: capsule
networks (squash, dynamic routing by softmax over routes, margin loss, masked reconstruction; gram-ai's with 5-D
broadcast matmul and ``torch.sparse.torch.eye``); mixture density networks (``MixtureSameFamily`` of ``Categorical``
with ``Independent(Normal)``, ``MultivariateNormal``, ``LogNormal`` and ``LowRankMultivariateNormal``; ``log_prob``
against a hand-written ``logsumexp``, ``sample``, ``mean``, ``variance``, ``cdf``); Highway networks."""

import math

import numpy as np

from .pytorch_programs import run_both


def normal_pdf(x, mu, sigma):
    return math.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def normal_logpdf(x, mu=0.0, sigma=1.0):
    return math.log(normal_pdf(x, mu, sigma))


def normal_cdf(x, mu, sigma):
    return 0.5 * (1 + math.erf((x - mu) / (sigma * math.sqrt(2))))


# ----------------------------------------------------------------------------------------------
# Capsule networks (Sabour et al., 2017): squash, dynamic routing, margin loss, masked reconstruction
# ----------------------------------------------------------------------------------------------


def capsnet(m):
    torch, nn, F = m.torch, m.nn, m.F

    def squash(s, dim=-1):
        sq = (s ** 2).sum(dim=dim, keepdim=True)
        return sq / (1 + sq) * s / torch.sqrt(sq + 1e-8)

    class PrimaryCaps(nn.Module):
        def __init__(self):
            super().__init__()
            self.capsules = nn.ModuleList([nn.Conv2d(16, 4, 3, stride=2) for _ in range(8)])

        def forward(self, x):
            u = [c(x) for c in self.capsules]
            u = torch.stack(u, dim=1)
            u = u.view(x.size(0), 8, -1).transpose(1, 2)
            return squash(u)

    class DigitCaps(nn.Module):
        def __init__(self, in_caps, num_caps=5, in_dim=8, out_dim=12, iters=3):
            super().__init__()
            self.W = nn.Parameter(0.01 * torch.randn(1, in_caps, num_caps, out_dim, in_dim))
            self.iters = iters
            self.num_caps = num_caps

        def forward(self, x):
            B = x.size(0)
            x = x.unsqueeze(2).unsqueeze(4)
            u_hat = torch.matmul(self.W, x).squeeze(-1)
            b_ij = torch.zeros(B, x.size(1), self.num_caps, 1)
            u_hat_detached = u_hat.detach()
            for it in range(self.iters):
                c_ij = F.softmax(b_ij, dim=2)
                if it == self.iters - 1:
                    s_j = (c_ij * u_hat).sum(dim=1, keepdim=True)
                    v_j = squash(s_j)
                else:
                    s_j = (c_ij * u_hat_detached).sum(dim=1, keepdim=True)
                    v_j = squash(s_j)
                    b_ij = b_ij + (u_hat_detached * v_j).sum(dim=-1, keepdim=True)
            return v_j.squeeze(1), c_ij

    def margin_loss(v, labels):
        lengths = v.norm(dim=-1)
        left = F.relu(0.9 - lengths).pow(2)
        right = F.relu(lengths - 0.1).pow(2)
        T = F.one_hot(labels, 5).float()
        return (T * left + 0.5 * (1 - T) * right).sum(dim=1).mean()

    torch.manual_seed(0)
    conv = nn.Conv2d(1, 16, 5)
    prim = PrimaryCaps()
    x = torch.randn(3, 1, 12, 12)
    u = prim(F.relu(conv(x)))
    digit = DigitCaps(u.size(1))
    v, c = digit(u)
    labels = torch.tensor([0, 3, 4])
    loss = margin_loss(v, labels)
    lengths = v.norm(dim=-1)
    _, pred = lengths.max(dim=1)
    masked = (v * F.one_hot(pred, 5).unsqueeze(-1)).view(3, -1)
    decoder = nn.Sequential(nn.Linear(60, 32), nn.ReLU(inplace=True), nn.Linear(32, 144), nn.Sigmoid())
    rec = decoder(masked)
    rloss = F.mse_loss(rec, x.view(3, -1).sigmoid(), reduction='sum')
    total = loss + 0.0005 * rloss
    total.backward()
    return {"v": v, "u": u, "c": c, "loss": loss, "W": digit.W.grad, "conv": conv.weight.grad, "pred": pred,
            "rec": rec}


def test_capsnet():
    ours, _ = run_both(capsnet, rtol=1e-4, atol=1e-5)
    assert np.all(np.linalg.norm(ours["v"], axis=-1) < 1) and np.all(np.linalg.norm(ours["u"], axis=-1) < 1)
    np.testing.assert_allclose(ours["c"].sum(2), 1, rtol=1e-6)  # coupling coefficients: a softmax over routes
    np.testing.assert_array_equal(ours["pred"], np.linalg.norm(ours["v"], axis=-1).argmax(1))


def gramai_capsnet(m):
    torch, nn, F = m.torch, m.nn, m.F
    Variable = torch.autograd.Variable
    NUM_CLASSES, NUM_ROUTING_ITERATIONS = 4, 3

    def softmax(input, dim=1):
        transposed_input = input.transpose(dim, len(input.size()) - 1)
        softmaxed_output = F.softmax(transposed_input.contiguous().view(-1, transposed_input.size(-1)), dim=-1)
        return softmaxed_output.view(*transposed_input.size()).transpose(dim, len(input.size()) - 1)

    class CapsuleLayer(nn.Module):
        def __init__(self, num_capsules, num_route_nodes, in_channels, out_channels, kernel_size=None, stride=None,
                     num_iterations=NUM_ROUTING_ITERATIONS):
            super().__init__()
            self.num_route_nodes = num_route_nodes
            self.num_iterations = num_iterations
            self.num_capsules = num_capsules
            if num_route_nodes != -1:
                self.route_weights = nn.Parameter(torch.randn(num_capsules, num_route_nodes, in_channels, out_channels))
            else:
                self.capsules = nn.ModuleList(
                    [nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=0) for _ in
                     range(num_capsules)])

        def squash(self, tensor, dim=-1):
            squared_norm = (tensor ** 2).sum(dim=dim, keepdim=True)
            scale = squared_norm / (1 + squared_norm)
            return scale * tensor / torch.sqrt(squared_norm)

        def forward(self, x):
            if self.num_route_nodes != -1:
                priors = x[None, :, :, None, :] @ self.route_weights[:, None, :, :, :]
                logits = Variable(torch.zeros(*priors.size()))
                for i in range(self.num_iterations):
                    probs = softmax(logits, dim=2)
                    outputs = self.squash((probs * priors).sum(dim=2, keepdim=True))
                    if i != self.num_iterations - 1:
                        delta_logits = (priors * outputs).sum(dim=-1, keepdim=True)
                        logits = logits + delta_logits
            else:
                outputs = [capsule(x).view(x.size(0), -1, 1) for capsule in self.capsules]
                outputs = torch.cat(outputs, dim=-1)
                outputs = self.squash(outputs)
            return outputs

    class CapsuleNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels=1, out_channels=16, kernel_size=5, stride=1)
            self.primary_capsules = CapsuleLayer(num_capsules=4, num_route_nodes=-1, in_channels=16, out_channels=4,
                                                 kernel_size=3, stride=2)
            self.digit_capsules = CapsuleLayer(num_capsules=NUM_CLASSES, num_route_nodes=4 * 3 * 3, in_channels=4,
                                               out_channels=8)
            self.decoder = nn.Sequential(nn.Linear(8 * NUM_CLASSES, 32), nn.ReLU(inplace=True), nn.Linear(32, 144),
                                         nn.Sigmoid())

        def forward(self, x, y=None):
            x = F.relu(self.conv1(x), inplace=True)
            x = self.primary_capsules(x)
            x = self.digit_capsules(x).squeeze().transpose(0, 1)
            classes = (x ** 2).sum(dim=-1) ** 0.5
            classes = F.softmax(classes, dim=-1)
            if y is None:
                _, max_length_indices = classes.max(dim=1)
                y = Variable(torch.sparse.torch.eye(NUM_CLASSES)).index_select(dim=0, index=max_length_indices.data)
            reconstructions = self.decoder((x * y[:, :, None]).contiguous().view(x.size(0), -1))
            return classes, reconstructions

    class CapsuleLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.reconstruction_loss = nn.MSELoss(reduction='sum')

        def forward(self, images, labels, classes, reconstructions):
            left = F.relu(0.9 - classes, inplace=True) ** 2
            right = F.relu(classes - 0.1, inplace=True) ** 2
            margin_loss = labels * left + 0.5 * (1. - labels) * right
            margin_loss = margin_loss.sum()
            assert torch.numel(images) == torch.numel(reconstructions)
            images = images.view(reconstructions.size()[0], -1)
            reconstruction_loss = self.reconstruction_loss(reconstructions, images)
            return (margin_loss + 0.0005 * reconstruction_loss) / images.size(0)

    torch.manual_seed(0)
    model = CapsuleNet()
    crit = CapsuleLoss()
    opt = torch.optim.Adam(model.parameters())
    x = torch.rand(3, 1, 12, 12)
    labels = torch.tensor([0, 2, 3])
    y = torch.sparse.torch.eye(NUM_CLASSES).index_select(dim=0, index=labels)
    ls = []
    for _ in range(2):
        classes, rec = model(x, y)
        loss = crit(x, y, classes, rec)
        opt.zero_grad(); loss.backward(); opt.step(); ls.append(loss.item())
    classes, rec = model(x)
    return {"ls": ls, "classes": classes, "rec": rec, "g": model.digit_capsules.route_weights.grad, "y": y}


def test_gramai_capsnet():
    ours, _ = run_both(gramai_capsnet, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ours["y"], np.eye(4)[[0, 2, 3]])
    np.testing.assert_allclose(ours["classes"].sum(1), 1, rtol=1e-6)
    assert np.all((ours["rec"] > 0) & (ours["rec"] < 1))


# ----------------------------------------------------------------------------------------------
# Mixture density networks (Bishop, 1994) through torch.distributions, and by hand
# ----------------------------------------------------------------------------------------------


def mdn(m):
    torch, nn, F = m.torch, m.nn, m.F
    D = m.torch.distributions

    class MDN(nn.Module):
        def __init__(self, K=3, dim=2):
            super().__init__()
            self.K, self.dim = K, dim
            self.body = nn.Sequential(nn.Linear(1, 32), nn.Tanh())
            self.pi = nn.Linear(32, K)
            self.mu = nn.Linear(32, K * dim)
            self.sigma = nn.Linear(32, K * dim)

        def forward(self, x):
            h = self.body(x)
            mix = D.Categorical(logits=self.pi(h))
            mu = self.mu(h).view(-1, self.K, self.dim)
            sig = F.softplus(self.sigma(h)).view(-1, self.K, self.dim) + 1e-3
            comp = D.Independent(D.Normal(mu, sig), 1)
            return D.MixtureSameFamily(mix, comp)

    torch.manual_seed(0)
    x = torch.rand(64, 1) * 2 - 1
    y = torch.cat([torch.sin(3 * x), x ** 2], 1) + 0.05 * torch.randn(64, 2)
    model = MDN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for i in range(5):
        dist = model(x)
        loss = -dist.log_prob(y).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    dist = model(x[:4])
    s2 = dist.sample((3,))
    out = {"losses": losses, "s": dist.sample(), "s2": s2, "mean": dist.mean, "var": dist.variance,
           "shapes": (tuple(dist.batch_shape), tuple(dist.event_shape)), "lp2": dist.log_prob(s2),
           "g": model.sigma.weight.grad}
    h = model.body(x)
    logpi = F.log_softmax(model.pi(h), -1)
    mu = model.mu(h).view(-1, 3, 2)
    sig = F.softplus(model.sigma(h)).view(-1, 3, 2) + 1e-3
    lp = D.Normal(mu, sig).log_prob(y.unsqueeze(1)).sum(-1)
    out["hand"] = -torch.logsumexp(logpi + lp, dim=-1).mean()
    out["lib"] = -model(x).log_prob(y).mean()
    mix = D.Categorical(probs=torch.tensor([[0.2, 0.8], [0.5, 0.5]]))
    comp = D.Normal(torch.tensor([[0., 1.], [2., 3.]]), torch.tensor([[1., 0.5], [0.3, 2.]]))
    gm = D.MixtureSameFamily(mix, comp)
    out["u_lp"] = gm.log_prob(torch.tensor([0.5, 2.5]))
    out["u_cdf"] = gm.cdf(torch.tensor([0.5, 2.5]))
    out["u_s"] = gm.sample((4,))
    return out


def test_mdn():
    ours, _ = run_both(mdn, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["hand"], ours["lib"], rtol=1e-5)
    assert ours["shapes"] == ((4,), (2,)) and ours["s2"].shape == (3, 4, 2) and ours["lp2"].shape == (3, 4)
    assert ours["losses"][-1] < ours["losses"][0]
    p = [0.2 * normal_pdf(0.5, 0, 1) + 0.8 * normal_pdf(0.5, 1, 0.5), 0.5 * normal_pdf(2.5, 2, 0.3) + 0.5 * normal_pdf(2.5, 3, 2)]
    np.testing.assert_allclose(ours["u_lp"], np.log(p), rtol=1e-5)
    c = [0.2 * normal_cdf(0.5, 0, 1) + 0.8 * normal_cdf(0.5, 1, 0.5), 0.5 * normal_cdf(2.5, 2, 0.3) + 0.5 * normal_cdf(2.5, 3, 2)]
    np.testing.assert_allclose(ours["u_cdf"], c, rtol=1e-5)


def mdn_families(m):
    torch, nn, F = m.torch, m.nn, m.F
    D = torch.distributions
    torch.manual_seed(0)
    out = {}
    B, K, d = 4, 3, 2
    logits = torch.randn(B, K, requires_grad=True)
    mu = torch.randn(B, K, d, requires_grad=True)
    A = torch.randn(B, K, d, d)
    tril = torch.tril(A, -1) + torch.diag_embed(F.softplus(torch.diagonal(A, dim1=-2, dim2=-1)) + 0.1)
    tril.requires_grad_()
    gm = D.MixtureSameFamily(D.Categorical(logits=logits), D.MultivariateNormal(mu, scale_tril=tril))
    y = torch.randn(B, d)
    lp = gm.log_prob(y)
    lp.sum().backward()
    out["lp"] = lp; out["gl"] = logits.grad; out["gmu"] = mu.grad; out["gt"] = tril.grad
    out["s"] = gm.sample((5,))
    out["mean"] = gm.mean; out["var"] = gm.variance
    out["shapes"] = (tuple(gm.batch_shape), tuple(gm.event_shape), tuple(gm.sample((2, 3)).shape))
    refused = []
    for f in [lambda: gm.rsample(), lambda: gm.entropy(),
              lambda: D.MixtureSameFamily(D.Categorical(logits=torch.randn(3)), D.Normal(torch.zeros(4), 1.0)),
              lambda: D.MixtureSameFamily(torch.randn(3), D.Normal(torch.zeros(3), 1.0)),
              lambda: D.Independent(D.Normal(torch.zeros(3), 1.0), 2)]:
        try:
            f()
            refused.append("ok")
        except (NotImplementedError, ValueError) as e:
            refused.append(type(e).__name__)
    out["refused"] = refused
    um = D.MixtureSameFamily(D.Categorical(probs=torch.tensor([0.3, 0.7])),
                             D.Normal(torch.tensor([-1.0, 2.0]), torch.tensor([0.5, 1.0])))
    lo, hi = torch.tensor(-10.), torch.tensor(10.)
    for _ in range(40):
        mid = (lo + hi) / 2
        if um.cdf(mid) < 0.5:
            lo = mid
        else:
            hi = mid
    out["median"] = mid
    ln = D.MixtureSameFamily(D.Categorical(logits=torch.zeros(2)),
                             D.Independent(D.LogNormal(torch.zeros(2, 3), torch.ones(2, 3)), 1))
    out["ln_s"] = ln.sample((2,))
    out["ln_lp"] = ln.log_prob(torch.ones(3))
    lr = D.LowRankMultivariateNormal(torch.zeros(2, 3), torch.randn(2, 3, 1), torch.ones(2, 3))
    lrm = D.MixtureSameFamily(D.Categorical(logits=torch.zeros(2)), lr)
    out["lr_s"] = lrm.sample((2,))
    out["lr_lp"] = lrm.log_prob(torch.ones(3))
    return out


def test_mdn_families():
    ours, _ = run_both(mdn_families, rtol=1e-5, atol=1e-6)
    assert ours["refused"] == ["NotImplementedError", "NotImplementedError", "ValueError", "ValueError", "ValueError"]
    assert ours["shapes"] == ((4,), (2,), (2, 3, 4, 2))
    med = float(ours["median"])
    np.testing.assert_allclose(0.3 * normal_cdf(med, -1, 0.5) + 0.7 * normal_cdf(med, 2, 1), 0.5, atol=1e-6)
    np.testing.assert_allclose(ours["ln_lp"], 3 * normal_logpdf(0.0), rtol=1e-6)  # log 1 = 0 under both components


# ----------------------------------------------------------------------------------------------
# Highway networks (Srivastava et al., 2015), gates biased towards carrying
# ----------------------------------------------------------------------------------------------


def highway(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Highway(nn.Module):
        def __init__(self, size, num_layers, f):
            super().__init__()
            self.num_layers = num_layers
            self.nonlinear = nn.ModuleList([nn.Linear(size, size) for _ in range(num_layers)])
            self.linear = nn.ModuleList([nn.Linear(size, size) for _ in range(num_layers)])
            self.gate = nn.ModuleList([nn.Linear(size, size) for _ in range(num_layers)])
            for g in self.gate:
                g.bias.data.fill_(-2.0)
            self.f = f

        def forward(self, x):
            for layer in range(self.num_layers):
                gate = torch.sigmoid(self.gate[layer](x))
                nonlinear = self.f(self.nonlinear[layer](x))
                linear = self.linear[layer](x)
                x = gate * nonlinear + (1 - gate) * linear
            return x

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 16), Highway(16, 10, F.relu), nn.Linear(16, 3))
    x = torch.randn(20, 10)
    y = torch.randint(0, 3, (20,))
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-3)
    ls = []
    for _ in range(3):
        loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
        opt.zero_grad(); loss.backward(); opt.step(); ls.append(loss.item())
    glu = F.glu(torch.randn(4, 6), dim=-1)
    return {"ls": ls, "g": net[1].gate[0].weight.grad, "gb": net[1].gate[9].bias.grad, "glu": glu,
            "bias": net[1].gate[5].bias}


def test_highway():
    ours, _ = run_both(highway, rtol=1e-4, atol=1e-5)
    assert ours["ls"][-1] < ours["ls"][0]
    assert np.all(np.abs(ours["bias"] + 2.0) < 0.04)  # three RMSprop steps of lr 1e-3 from -2: ~0.01 each at most
    assert np.abs(ours["g"]).sum() > 0
