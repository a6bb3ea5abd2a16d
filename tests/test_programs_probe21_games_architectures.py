# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Game-AI and unusual-architecture programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch
from the same weights and data, and checked against NumPy by hand where PyTorch is missing. A capsule network with
dynamic routing (Sabour et al.: ``squash``, routing logits updated over 3 iterations with the softmax over the output
capsules, ``torch.matmul`` on 5-D tensors and the same by ``einsum``, the margin loss, reconstruction masked by
``F.one_hot`` of the argmax of capsule lengths); a growing neural cellular automaton (Mordvintsev et al.: fixed
identity/Sobel filters in a depthwise ``nn.Conv2d(groups=C, padding_mode="circular")`` checked against
``F.pad(mode="circular")`` and a NumPy roll, stochastic update masks from ``torch.rand`` with a ``Generator``, alive
masks by ``F.max_pool2d``, training over a pool of states with per-parameter gradient normalisation by
``register_hook``); a HyperNEAT-style coordinate hypernetwork (a CPPN that paints the weights of a substrate network,
used through ``F.linear`` and ``torch.func.functional_call``, batched with ``vmap``); Conway's Game of Life as
neighbour counts by a circular ``conv2d`` (a glider checked to come back shifted) and a small CNN that learns the
rule."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A capsule network with dynamic routing (Sabour, Frosst & Hinton 2017; gram-ai/capsule-networks' shape)
# ----------------------------------------------------------------------------------------------

NUM_CLASSES = 4


def squash(m, tensor, dim=-1):
    squared_norm = (tensor ** 2).sum(dim=dim, keepdim=True)
    scale = squared_norm / (1 + squared_norm)
    return scale * tensor / m.torch.sqrt(squared_norm + 1e-9)


def make_capsnet(m):
    torch, nn, F = m.torch, m.nn, m.F

    class PrimaryCaps(nn.Module):
        def __init__(self, num_capsules=4, in_channels=8, out_channels=4):
            super().__init__()
            self.capsules = nn.ModuleList([nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2)
                                           for _ in range(num_capsules)])

        def forward(self, x):
            u = [capsule(x).view(x.size(0), -1, 1) for capsule in self.capsules]
            u = torch.cat(u, dim=-1)  # (B, out_channels * H * W, num_capsules)
            return squash(m, u)

    class DigitCaps(nn.Module):
        def __init__(self, num_routes=4 * 3 * 3, in_dim=4, out_dim=6, num_iterations=3):
            super().__init__()
            self.num_iterations = num_iterations
            self.route_weights = nn.Parameter(0.5 * torch.randn(1, num_routes, NUM_CLASSES, out_dim, in_dim))

        def forward(self, x):
            # (1, R, C, D, I) @ (B, R, 1, I, 1) -> (B, R, C, D)
            u_hat = torch.matmul(self.route_weights, x[:, :, None, :, None]).squeeze(-1)
            b_ij = torch.zeros(x.size(0), x.size(1), NUM_CLASSES, 1, dtype=x.dtype)
            for iteration in range(self.num_iterations):
                c_ij = F.softmax(b_ij, dim=2)
                s_j = (c_ij * u_hat).sum(dim=1, keepdim=True)
                v_j = squash(m, s_j)
                if iteration < self.num_iterations - 1:
                    a_ij = (u_hat * v_j).sum(dim=-1, keepdim=True)
                    b_ij = b_ij + a_ij
            return v_j.squeeze(1), c_ij.squeeze(-1), u_hat

    class CapsNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, kernel_size=3)
            self.primary = PrimaryCaps()
            self.digits = DigitCaps()
            self.decoder = nn.Sequential(nn.Linear(6 * NUM_CLASSES, 32), nn.ReLU(inplace=True), nn.Linear(32, 100),
                                         nn.Sigmoid())

        def forward(self, x, y=None):
            v, c, u_hat = self.digits(self.primary(F.relu(self.conv1(x))))
            classes = v.norm(dim=-1)
            if y is None:  # at test time, the longest capsule
                y = F.one_hot(classes.argmax(dim=1), num_classes=NUM_CLASSES)
            reconstructions = self.decoder((v * y[:, :, None].to(v.dtype)).flatten(1))
            return classes, reconstructions, v, c, u_hat

    return CapsNet()


def capsnet(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, make_capsnet(m), weights)
    rng = np.random.default_rng(0)
    prototypes = rng.uniform(0, 1, (NUM_CLASSES, 10, 10)).astype(np.float32)
    labels = torch.tensor(rng.integers(0, NUM_CLASSES, 8))
    images = torch.tensor(np.clip(prototypes[labels.numpy()] + 0.2 * rng.standard_normal((8, 10, 10)), 0, 1)
                          .astype(np.float32)).unsqueeze(1)

    def margin_loss(images, labels, classes, reconstructions):
        left = F.relu(0.9 - classes) ** 2
        right = F.relu(classes - 0.1) ** 2
        margin = labels * left + 0.5 * (1.0 - labels) * right
        reconstruction = F.mse_loss(reconstructions, images.view(images.size(0), -1), reduction="sum")
        return (margin.sum() + 0.0005 * reconstruction) / images.size(0)

    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for step in range(steps):
        onehot = F.one_hot(labels, NUM_CLASSES).float()
        classes, reconstructions, v, c, u_hat = model(images, onehot)
        loss = margin_loss(images, onehot, classes, reconstructions)
        optimizer.zero_grad()
        loss.backward()
        history.append(loss.item())
        optimizer.step()
    u_hat_einsum = torch.einsum("rcdi,bri->brcd", model.digits.route_weights[0], model.primary(
        F.relu(model.conv1(images))))
    model.eval()
    with torch.no_grad():
        classes, reconstructions, v, c, u_hat = model(images)
    return {"history": history, "classes": classes, "reconstructions": reconstructions, "v": v, "c": c,
            "u_hat": u_hat, "u_hat_einsum": u_hat_einsum, "pred": classes.argmax(1),
            "grads": [p.grad for p in model.parameters()], "labels": labels}


def test_capsule_network_dynamic_routing():
    ours, _ = run_both(capsnet, weights_of(make_capsnet), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["u_hat_einsum"], ours["u_hat"], rtol=1e-5, atol=1e-6)
    # the routing coefficients of every input capsule sum to one over the output capsules
    np.testing.assert_allclose(ours["c"].sum(2), 1, rtol=1e-6)
    lengths = np.linalg.norm(ours["v"], axis=-1)
    np.testing.assert_allclose(ours["classes"], lengths, rtol=1e-6)
    assert np.all(lengths < 1)  # squash keeps every capsule shorter than one
    assert ours["history"][-1] < ours["history"][0]
    # at test time the decoder sees only the longest capsule: the others are zeroed by the one-hot mask
    np.testing.assert_array_equal(ours["pred"], lengths.argmax(1))
    assert all(g is not None for g in ours["grads"])


# ----------------------------------------------------------------------------------------------
# Growing neural cellular automata (Mordvintsev et al. 2020, distill.pub), on a torus
# ----------------------------------------------------------------------------------------------

CHANNELS = 8


def make_nca(m, hidden=32):
    torch, nn, F = m.torch, m.nn, m.F

    class CAModel(nn.Module):
        def __init__(self, fire_rate=0.5):
            super().__init__()
            self.fire_rate = fire_rate
            ident = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
            sobel_x = torch.outer(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([-1.0, 0.0, 1.0])) / 8.0
            kernel = torch.stack([ident, sobel_x, sobel_x.T]).repeat(CHANNELS, 1, 1)[:, None]
            self.perceive = nn.Conv2d(CHANNELS, 3 * CHANNELS, 3, padding=1, groups=CHANNELS, bias=False,
                                      padding_mode="circular")
            self.perceive.weight.data.copy_(kernel)
            self.perceive.weight.requires_grad_(False)
            self.fc0 = nn.Conv2d(3 * CHANNELS, hidden, 1)
            self.fc1 = nn.Conv2d(hidden, CHANNELS, 1, bias=False)
            with torch.no_grad():
                self.fc1.weight.zero_()

        def alive(self, x):
            return F.max_pool2d(x[:, 3:4], kernel_size=3, stride=1, padding=1) > 0.1

        def forward(self, x, generator):
            pre_life_mask = self.alive(x)
            dx = self.fc1(F.relu(self.fc0(self.perceive(x))))
            update = torch.rand(x[:, :1].shape, generator=generator) <= self.fire_rate
            x = x + dx * update.float()
            post_life_mask = self.alive(x)
            return x * (pre_life_mask & post_life_mask).float()

    return CAModel()


def nca(m, weights, steps=4, pool_size=6, batch=3, ca_steps=6, side=9):
    torch, F, optim = m.torch, m.F, m.optim
    ca = load(m, make_nca(m), weights)
    for p in ca.parameters():
        if p.requires_grad:  # normalise each parameter's gradient, as the notebook does after backward
            p.register_hook(lambda grad: grad / (grad.norm() + 1e-8))
    g = torch.Generator().manual_seed(0)
    seed = torch.zeros(1, CHANNELS, side, side)
    seed[:, 3:, side // 2, side // 2] = 1.0
    pool = seed.repeat(pool_size, 1, 1, 1)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    disc = (((yy - side // 2) ** 2 + (xx - side // 2) ** 2) <= 9).float()
    target = torch.stack([disc * 0.8, disc * 0.2, disc * 0.5, disc])[None]
    optimizer = optim.Adam([p for p in ca.parameters() if p.requires_grad], lr=2e-3)
    scheduler = optim.lr_scheduler.MultiStepLR(optimizer, [2], 0.3)
    history = []
    for step in range(steps):
        batch_idx = torch.randperm(pool_size, generator=g)[:batch]
        x = pool[batch_idx]
        per_sample = F.mse_loss(x[:, :4], target.expand(batch, -1, -1, -1), reduction="none").mean((1, 2, 3))
        x[per_sample.argmax()] = seed[0]  # the worst sample is reseeded
        for _ in range(ca_steps):
            x = ca(x, g)
        loss = F.mse_loss(x[:, :4], target.expand(batch, -1, -1, -1))
        optimizer.zero_grad()
        loss.backward()
        grad_norms = [p.grad.norm() for p in ca.parameters() if p.requires_grad]
        optimizer.step()
        scheduler.step()
        pool[batch_idx] = x.detach()
        history.append(loss.item())
    probe = pool[:1].clone()
    by_pad = F.conv2d(F.pad(probe, (1, 1, 1, 1), mode="circular"), ca.perceive.weight, groups=CHANNELS)
    return {"history": history, "pool": pool, "grad_norms": grad_norms, "perceived": ca.perceive(probe),
            "by_pad": by_pad, "probe": probe, "alive": ca.alive(pool), "fc0": ca.fc0.weight.detach(),
            "frozen_grad": ca.perceive.weight.grad}


def test_neural_cellular_automaton():
    ours, _ = run_both(nca, weights_of(make_nca), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["perceived"], ours["by_pad"], rtol=1e-6, atol=1e-7)
    # the perception by hand on the torus: identity, then Sobel x and y by NumPy rolls
    probe = ours["probe"][0]
    sobel = np.outer([1, 2, 1], [-1, 0, 1]) / 8.0

    def correlate(image, kernel):
        return sum(kernel[i, j] * np.roll(image, (1 - i, 1 - j), axis=(0, 1)) for i in range(3) for j in range(3))

    by_hand = np.stack([f(probe[c]) for c in range(CHANNELS)
                        for f in (lambda a: a, lambda a: correlate(a, sobel), lambda a: correlate(a, sobel.T))])
    np.testing.assert_allclose(ours["perceived"][0], by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["grad_norms"], 1.0, rtol=1e-5)  # the hook normalised every gradient
    assert ours["frozen_grad"] is None
    # dead cells (no living neighbour in their 3x3) stay all zero
    pool, alive = ours["pool"], ours["alive"][:, 0]
    assert np.all(pool.transpose(1, 0, 2, 3)[:, ~alive] == 0)
    assert np.isfinite(ours["history"]).all()


# ----------------------------------------------------------------------------------------------
# A HyperNEAT-style coordinate hypernetwork: a CPPN paints the weights of a substrate network
# ----------------------------------------------------------------------------------------------


def make_cppn(m, hidden=16):
    torch, nn = m.torch, m.nn

    class Sine(nn.Module):
        def forward(self, x):
            return torch.sin(x)

    class CPPN(nn.Module):
        """Maps a connection's (x1, y1, x2, y2, distance) to its weight and whether it is expressed."""

        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(5, hidden), nn.Tanh(), nn.Linear(hidden, hidden), Sine(),
                                     nn.Linear(hidden, 2))

        def forward(self, src, dst):
            s = src[:, None].expand(-1, dst.shape[0], -1)
            d = dst[None].expand(src.shape[0], -1, -1)
            dist = torch.linalg.vector_norm(s - d, dim=-1, keepdim=True)
            out = self.net(torch.cat([d, s, dist], dim=-1))  # (n_src, n_dst, 2)
            weight, expression = out.unbind(-1)
            return (weight * torch.sigmoid(4 * expression)).T  # (n_dst, n_src), as F.linear wants

    return CPPN()


def hyperneat(m, weights, steps=30):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    cppn = load(m, make_cppn(m), weights)
    grid = lambda n, y: torch.stack([torch.linspace(-1, 1, n), torch.full((n,), y)], dim=-1)
    inputs, hidden, outputs = grid(4, -1.0), grid(6, 0.0), grid(2, 1.0)
    substrate = nn.Sequential(nn.Linear(4, 6, bias=False), nn.Tanh(), nn.Linear(6, 2, bias=False))
    rng = np.random.default_rng(3)
    X = torch.tensor(rng.standard_normal((32, 4)).astype(np.float32))
    y = torch.tensor(((X[:, 0] * X[:, 3]).numpy() > 0).astype(np.int64))
    optimizer = optim.Adam(cppn.parameters(), lr=0.02)
    history = []
    for step in range(steps):
        W1, W2 = cppn(inputs, hidden), cppn(hidden, outputs)
        logits = torch.func.functional_call(substrate, {"0.weight": W1, "2.weight": W2}, (X,))
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    W1, W2 = cppn(inputs, hidden), cppn(hidden, outputs)
    by_linear = F.linear(torch.tanh(F.linear(X, W1)), W2)
    # a population of substrates painted by scaled CPPN outputs, evaluated at once with vmap
    scales = torch.linspace(0.5, 1.5, 3)
    batched = torch.func.vmap(lambda s: torch.func.functional_call(
        substrate, {"0.weight": W1 * s, "2.weight": W2 * s}, (X[:5],)))(scales)
    grads = torch.autograd.grad(batched.square().sum(), list(cppn.parameters()))
    return {"history": history, "W1": W1, "W2": W2, "by_linear": by_linear, "batched": batched, "grads": grads,
            "X": X}


def test_hyperneat_cppn():
    ours, _ = run_both(hyperneat, weights_of(make_cppn), rtol=1e-4, atol=1e-6)
    assert ours["W1"].shape == (6, 4) and ours["W2"].shape == (2, 6)
    X, W1, W2 = ours["X"], ours["W1"], ours["W2"]
    np.testing.assert_allclose(ours["by_linear"], np.tanh(X @ W1.T) @ W2.T, rtol=1e-5, atol=1e-6)
    for i, s in enumerate(np.linspace(0.5, 1.5, 3)):
        np.testing.assert_allclose(ours["batched"][i], np.tanh(X[:5] @ (s * W1).T) @ (s * W2).T, rtol=1e-5,
                                   atol=1e-6)
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# Conway's Game of Life: neighbour counts by a circular conv2d, and a CNN that learns the rule
# ----------------------------------------------------------------------------------------------


def make_life_net(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, padding_mode="circular"), nn.ReLU(),
                         nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 1, 1))


def life(m, weights, steps=25):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    neighbours = torch.ones(1, 1, 3, 3)
    neighbours[0, 0, 1, 1] = 0

    def step(board):
        n = F.conv2d(F.pad(board, (1, 1, 1, 1), mode="circular"), neighbours)
        return ((n == 3) | ((board == 1) & (n == 2))).to(board.dtype)

    glider = torch.zeros(1, 1, 8, 8)
    glider[0, 0, 0, 1] = glider[0, 0, 1, 2] = glider[0, 0, 2, 0] = glider[0, 0, 2, 1] = glider[0, 0, 2, 2] = 1
    trajectory = [glider]
    for _ in range(8):
        trajectory.append(step(trajectory[-1]))
    # the same counts by rolling a board of ints, as a NumPy-minded author would
    board = glider[0, 0].long()
    rolled = sum(torch.roll(board, shifts=(dy, dx), dims=(0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                 if (dy, dx) != (0, 0))

    net = load(m, make_life_net(m), weights)
    g = torch.Generator().manual_seed(5)
    optimizer = optim.Adam(net.parameters(), lr=1e-2)
    history = []
    for i in range(steps):
        boards = (torch.rand(16, 1, 8, 8, generator=g) < 0.35).float()
        loss = F.binary_cross_entropy_with_logits(net(boards), step(boards))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        accuracy = ((net(trajectory[0]) > 0).float() == trajectory[1]).float().mean()
    return {"trajectory": torch.cat(trajectory), "rolled": rolled, "history": history, "accuracy": accuracy}


def test_game_of_life():
    ours, _ = run_both(life, weights_of(make_life_net), rtol=1e-4, atol=1e-6)
    trajectory = ours["trajectory"][:, 0]
    # a glider comes back after 4 generations moved one cell down and one right (on the torus)
    np.testing.assert_array_equal(trajectory[4], np.roll(trajectory[0], (1, 1), axis=(0, 1)))
    np.testing.assert_array_equal(trajectory[8], np.roll(trajectory[0], (2, 2), axis=(0, 1)))
    assert all(board.sum() == 5 for board in trajectory)
    g = trajectory[0].astype(np.int64)
    by_hand = sum(np.roll(g, (dy, dx), axis=(0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
    np.testing.assert_array_equal(ours["rolled"], by_hand)
    assert ours["rolled"].dtype == np.int64
    assert ours["history"][-1] < ours["history"][0]
