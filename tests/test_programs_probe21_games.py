# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Game-AI and unusual-architecture programs (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and data, and checked against NumPy by hand where PyTorch is missing.

AlphaZero on tic-tac-toe (alpha-zero-general's shape: a residual conv tower in float64, policy logits masked by
the legal moves with ``masked_fill(-inf)``, a ``tanh`` value head, MCTS with Dirichlet root noise and visit
counts, temperature sampling by ``torch.multinomial`` with a seeded ``Generator``, the 8 board symmetries by
``torch.rot90`` with negative ``k`` and ``flip``, and the loss ``F.cross_entropy`` with probability targets
*and* ``label_smoothing`` plus MSE), with a symmetry-averaged evaluation whose gradient goes back through
``rot90(k)`` and ``rot90(-k)``, and an arena that draws two distinct moves by ``multinomial`` without
replacement; a capsule network with dynamic routing (Sabour et al.: ``squash``, routing logits updated over 3
iterations with the softmax over the output capsules, ``torch.matmul`` on 5-D tensors and the same by
``einsum``, the margin loss, reconstruction masked by ``F.one_hot`` of the argmax of capsule lengths);
a growing neural cellular automaton (Mordvintsev et al.: fixed identity/Sobel filters in a depthwise
``nn.Conv2d(groups=C, padding_mode="circular")`` checked against ``F.pad(mode="circular")`` and a NumPy roll,
stochastic update masks from ``torch.rand`` with a ``Generator``, alive masks by ``F.max_pool2d``, training
over a pool of states with per-parameter gradient normalisation by ``register_hook``); a HyperNEAT-style
coordinate hypernetwork (a CPPN that paints the weights of a substrate network, used through ``F.linear`` and
``torch.func.functional_call``, batched with ``vmap``); Conway's Game of Life as neighbour counts by a
circular ``conv2d`` (a glider checked to come back shifted) and a small CNN that learns the rule;
Gumbel-softmax actions whose straight-through gradient (``hard=True``) must equal the soft sample's; and
REINFORCE with a learnt baseline over episodes of a hand-written grid world (``Categorical`` sampling,
discounted returns, entropy bonus, ``clip_grad_norm_``); batched self-play over many games at once, a column of
visit counts per game, moves drawn by ``multinomial(policy.T, ...)`` (the exponential race laid out as the
transpose's memory, as PyTorch's ``empty_like``); independent learners keeping their action scores action-major
(one column per agent): ``Categorical(logits=scores.T)``, the Gumbel-max trick by
``empty_like(scores.T).exponential_()`` and ``F.gumbel_softmax`` of the transpose draw as PyTorch's; symmetry
augmentation that edits each ``rot90``/``flip`` copy in place (the identity turn, ``rot90(board, 0)``, included)
and a search batch by ``board.repeat(1, 1, 1, 1)``: each a copy, as PyTorch's.

Strict xfail: ``rand_like`` of a slice of a transpose (``empty_like``'s layout). (``torch.sparse.torch.eye``,
capsule networks' one-hot idiom, ``randint_like`` of a transpose, drawn through its memory order, and
``torch.FloatTensor(array)`` sharing a float32 array's memory were mended with the proposed diffs.)"""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# AlphaZero on tic-tac-toe (alpha-zero-general: self-play with MCTS, symmetries, policy-value net)
# ----------------------------------------------------------------------------------------------


def make_tictactoe_net(m, channels=16, blocks=2):
    torch, nn, F = m.torch, m.nn, m.F

    class ResBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + x)

    class TicTacToeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                      nn.ReLU(inplace=True))
            self.tower = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])
            self.policy_head = nn.Sequential(nn.Conv2d(channels, 2, 1), nn.BatchNorm2d(2), nn.ReLU(inplace=True),
                                             nn.Flatten(), nn.Linear(2 * 9, 9))
            self.value_head = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.BatchNorm2d(1), nn.ReLU(inplace=True),
                                            nn.Flatten(), nn.Linear(9, 32), nn.ReLU(inplace=True), nn.Linear(32, 1))

        def forward(self, x):
            h = self.tower(self.stem(x))
            return self.policy_head(h), torch.tanh(self.value_head(h)).squeeze(-1)

    return TicTacToeNet()


def alphazero(m, weights, episodes=2, num_sims=12, train_steps=3, cpuct=1.0, label_smoothing=0.1):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)  # Dirichlet root noise draws from the global generator
    net = load(m, make_tictactoe_net(m), weights).double()
    g = torch.Generator().manual_seed(1234)  # move sampling, as a self-play worker seeds its own

    LINES = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 3, 6], [1, 4, 7], [2, 5, 8], [0, 4, 8], [2, 4, 6]])

    def game_ended(board):
        """1 / -1 if that player has three in a row, 1e-4 for a draw, 0 while the game goes on."""
        sums = board.flatten()[LINES].sum(1)
        if (sums == 3).any():
            return 1
        if (sums == -3).any():
            return -1
        if not (board == 0).any():
            return 1e-4
        return 0

    def encode(canonical):
        return torch.stack([canonical == 1, canonical == -1, torch.ones_like(canonical, dtype=torch.bool)]).double()

    def predict(canonical):
        net.eval()
        legal = (canonical == 0).flatten()
        with torch.no_grad():
            logits, v = net(encode(canonical).unsqueeze(0))
        logits = logits[0].masked_fill(~legal, float('-inf'))
        return F.softmax(logits, dim=0), v[0].item()

    def key(board):
        return tuple(board.flatten().tolist())

    class MCTS:
        def __init__(self):
            self.Qsa, self.Nsa, self.Ns, self.Ps, self.Es = {}, {}, {}, {}, {}

        def search(self, canonical, root=False):
            s = key(canonical)
            if s not in self.Es:
                self.Es[s] = game_ended(canonical)
            if self.Es[s] != 0:
                return -self.Es[s]
            if s not in self.Ps:
                p, v = predict(canonical)
                self.Ps[s] = p
                self.Ns[s] = 0
                self.Nsa[s] = torch.zeros(9, dtype=torch.float64)
                self.Qsa[s] = torch.zeros(9, dtype=torch.float64)
                return -v
            p = self.Ps[s]
            if root:
                legal = (canonical == 0).flatten()
                alpha = torch.full((int(legal.sum()),), 0.3, dtype=torch.float64)
                noise = torch.distributions.Dirichlet(alpha).sample()
                p = p.clone()
                p[legal] = 0.75 * p[legal] + 0.25 * noise
            u = self.Qsa[s] + cpuct * p * math.sqrt(self.Ns[s] + 1e-8) / (1 + self.Nsa[s])
            u = u.masked_fill(canonical.flatten() != 0, float('-inf'))
            a = int(u.argmax())
            nxt = canonical.clone()
            nxt.view(-1)[a] = 1
            v = self.search(-nxt)
            self.Qsa[s][a] = (self.Nsa[s][a] * self.Qsa[s][a] + v) / (self.Nsa[s][a] + 1)
            self.Nsa[s][a] += 1
            self.Ns[s] += 1
            return -v

        def action_prob(self, canonical, temp=1):
            for i in range(num_sims):
                self.search(canonical, root=True)
            counts = self.Nsa[key(canonical)]
            if temp == 0:
                best = torch.nonzero(counts == counts.max()).flatten()
                probs = torch.zeros(9, dtype=torch.float64)
                probs[best[torch.randint(len(best), (1,), generator=g)]] = 1
                return probs
            counts = counts ** (1.0 / temp)
            return counts / counts.sum()

    def symmetries(planes, pi):
        """The 8 symmetries of the square: rotations by -2..1 quarter turns, each also mirrored."""
        out = []
        pi_board = pi.view(3, 3)
        for k in range(-2, 2):
            for flip in (False, True):
                p = torch.rot90(planes, k, dims=(1, 2))
                q = torch.rot90(pi_board, k)
                if flip:
                    p, q = torch.flip(p, dims=[2]), torch.fliplr(q)
                out.append((p, q.reshape(-1)))
        return out

    examples, visit_totals = [], []
    for episode in range(episodes):
        mcts = MCTS()
        board = torch.zeros(3, 3, dtype=torch.int64)
        player, step, trajectory = 1, 0, []
        while True:
            step += 1
            canonical = board * player
            temp = int(step < 4)
            pi = mcts.action_prob(canonical, temp=temp)
            visit_totals.append(mcts.Ns[key(canonical)])
            for p, q in symmetries(encode(canonical), pi):
                trajectory.append([p, q, player])
            action = torch.multinomial(pi, 1, generator=g).item()
            board.view(-1)[action] = player
            player = -player
            r = game_ended(board * player)
            if r != 0:
                examples += [(p, q, r * ((-1) ** (who != player))) for p, q, who in trajectory]
                break

    planes = torch.stack([e[0] for e in examples])
    target_pis = torch.stack([e[1] for e in examples])
    target_vs = torch.tensor([float(e[2]) for e in examples], dtype=torch.float64)
    optimizer = optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    history = []
    net.train()
    for step in range(train_steps):
        logits, v = net(planes)
        l_pi = F.cross_entropy(logits, target_pis, label_smoothing=label_smoothing)
        l_v = F.mse_loss(v, target_vs)
        loss = l_pi + l_v
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append([l_pi.item(), l_v.item()])

    # a symmetry-averaged evaluation: the policy of each rotated board rotated back, its gradient through both
    net.eval()
    x = encode(torch.tensor([[1, 0, -1], [0, 1, 0], [0, 0, -1]])).unsqueeze(0).requires_grad_()
    averaged = 0
    for k in range(4):
        logits, v = net(torch.rot90(x, k, dims=(2, 3)))
        averaged = averaged + torch.rot90(logits.view(1, 3, 3), -k, dims=(1, 2)) / 4
    occupied = x[0, :2].sum(0).flatten() > 0
    log_policy = F.log_softmax(averaged.flatten().masked_fill(occupied, float('-inf')), dim=0)
    x_grad, = torch.autograd.grad(log_policy[[1, 3, 5]].sum(), x)

    # an arena game's opening: two distinct candidate moves drawn without replacement
    probs, _ = predict(torch.zeros(3, 3, dtype=torch.int64))
    candidates = torch.multinomial(probs, 2, replacement=False, generator=g)
    return {"history": history, "planes": planes, "target_pis": target_pis, "target_vs": target_vs,
            "logits": logits, "visits": visit_totals, "log_policy": log_policy, "x_grad": x_grad,
            "candidates": candidates, "probs": probs, "net": [p.detach() for p in net.parameters()],
            "label_smoothing": label_smoothing, "last_l_pi": l_pi}


def test_alphazero_tictactoe():
    ours, _ = run_both(alphazero, weights_of(make_tictactoe_net), rtol=1e-7, atol=1e-9)
    planes, pis = ours["planes"], ours["target_pis"]
    assert len(planes) % 8 == 0 and np.allclose(pis.sum(1), 1)
    # the policy targets put no mass on occupied squares, in every symmetry of the board
    occupied = (planes[:, 0] + planes[:, 1]).reshape(-1, 9) > 0
    assert np.all(pis[occupied] == 0)
    # each symmetry group holds the 8 distinct transforms of the first board: rot90(k) for k in -2..1, mirrored
    first = planes[0, 0]
    expected = [np.fliplr(np.rot90(first, k)) if flip else np.rot90(first, k) for k in range(-2, 2) for flip in (0, 1)]
    np.testing.assert_array_equal(planes[:8, 0], np.stack(expected))
    assert ours["visits"][0] == 12 - 1  # the first search only expands the root; each later one adds a visit
    assert set(np.unique(np.abs(ours["target_vs"]))) <= {1.0, 1e-4}
    assert ours["history"][-1][0] < ours["history"][0][0]
    assert np.isneginf(ours["log_policy"][[0, 2, 4, 8]]).all() and np.isclose(np.exp(ours["log_policy"]).sum(), 1)
    assert np.all(ours["x_grad"][0, 2] != 0)
    a, b = ours["candidates"]
    assert a != b and ours["probs"][a] > 0 and ours["probs"][b] > 0


def test_cross_entropy_probability_targets_with_label_smoothing_by_hand():
    """The loss AlphaZero trains its policy with: soft targets, smoothed, weighted, on 2-D and 4-D logits."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 9))
    pi = rng.dirichlet(np.full(9, 0.5), 6)
    weight = rng.uniform(0.5, 2, 9)

    def program(m):
        torch, F = m.torch, m.F
        x = torch.tensor(logits, requires_grad=True)
        out = {}
        for reduction in ("mean", "sum", "none"):
            loss = F.cross_entropy(x, torch.tensor(pi), weight=torch.tensor(weight), label_smoothing=0.2,
                                   reduction=reduction)
            grad, = torch.autograd.grad(loss.sum(), x)
            out[reduction] = (loss, grad)
        x4 = torch.tensor(logits.T.reshape(1, 9, 2, 3).copy(), requires_grad=True)
        loss4 = F.cross_entropy(x4, torch.tensor(pi.T.reshape(1, 9, 2, 3).copy()), label_smoothing=0.2)
        out["4d"] = (loss4, torch.autograd.grad(loss4, x4)[0])
        return out

    ours, _ = run_both(program, rtol=1e-10, atol=1e-12)
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    smoothed = 0.8 * pi + 0.2 / 9
    per_row = -(smoothed * weight * log_softmax).sum(1)
    np.testing.assert_allclose(ours["none"][0], per_row, rtol=1e-12)
    assert ours["sum"][0] == pytest.approx(per_row.sum(), rel=1e-12)
    assert ours["mean"][0] == pytest.approx(per_row.mean(), rel=1e-12)  # soft targets: divided by N, not by weights
    softmax = np.exp(log_softmax)
    by_hand = softmax * (smoothed * weight).sum(1, keepdims=True) - smoothed * weight
    np.testing.assert_allclose(ours["sum"][1], by_hand, rtol=1e-10, atol=1e-12)
    assert ours["4d"][0] == pytest.approx(-(smoothed * log_softmax).sum(1).mean(), rel=1e-12)


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


# ----------------------------------------------------------------------------------------------
# Gumbel-softmax actions: the straight-through estimator's gradient is the soft sample's
# ----------------------------------------------------------------------------------------------


def make_gumbel_policy(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(6, 16), nn.ELU(), nn.Linear(16, 5))


def gumbel_policy(m, weights, tau=0.7, steps=5):
    torch, F, optim = m.torch, m.F, m.optim
    policy = load(m, make_gumbel_policy(m), weights)
    rng = np.random.default_rng(2)
    states = torch.tensor(rng.standard_normal((12, 6)).astype(np.float32))
    payoff = torch.tensor(rng.standard_normal((12, 5)).astype(np.float32))  # reward of each discrete action

    def grads_of(hard, dim=-1):
        torch.manual_seed(7)
        logits = policy(states)
        actions = F.gumbel_softmax(logits if dim == -1 else logits.T, tau=tau, hard=hard, dim=dim)
        actions = actions if dim == -1 else actions.T
        reward = (actions * payoff).sum(1).mean()
        return actions, torch.autograd.grad(reward, list(policy.parameters()))

    hard_actions, hard_grads = grads_of(True)
    soft_actions, soft_grads = grads_of(False)
    hard_actions_dim0, _ = grads_of(True, dim=0)
    optimizer = optim.SGD(policy.parameters(), lr=0.5)
    history = []
    for step in range(steps):
        actions = F.gumbel_softmax(policy(states), tau=tau, hard=True)
        reward = (actions * payoff).sum(1).mean()
        optimizer.zero_grad()
        (-reward).backward()
        optimizer.step()
        history.append(reward.item())
    return {"hard": hard_actions, "soft": soft_actions, "hard_grads": hard_grads, "soft_grads": soft_grads,
            "hard_dim0": hard_actions_dim0, "history": history}


def test_gumbel_softmax_straight_through():
    ours, _ = run_both(gumbel_policy, weights_of(make_gumbel_policy), rtol=1e-4, atol=1e-6)
    hard, soft = ours["hard"], ours["soft"]
    assert set(np.unique(hard)) == {0.0, 1.0} and np.all(hard.sum(1) == 1)
    np.testing.assert_array_equal(hard.argmax(1), soft.argmax(1))  # the same noise: hard is soft's argmax
    np.testing.assert_allclose(soft.sum(1), 1, rtol=1e-6)
    for h, s in zip(ours["hard_grads"], ours["soft_grads"]):  # y_hard - y_soft.detach() + y_soft
        np.testing.assert_allclose(h, s, rtol=1e-5, atol=1e-7)
    assert np.all(ours["hard_dim0"].sum(1) == 1)  # one-hot along dim 0 of the transpose: each row here


# ----------------------------------------------------------------------------------------------
# REINFORCE with a learnt baseline on a hand-written grid world
# ----------------------------------------------------------------------------------------------


class GridWorld:
    """A 4x4 grid: start top-left, goal bottom-right (+1), a pit (-1); each step costs 0.04."""

    moves = [(0, 1), (1, 0), (0, -1), (-1, 0)]

    def __init__(self, size=4, pit=(1, 2)):
        self.size, self.pit = size, pit

    def reset(self):
        self.pos = (0, 0)
        return self.pos

    def step(self, action):
        dy, dx = self.moves[action]
        y = min(max(self.pos[0] + dy, 0), self.size - 1)
        x = min(max(self.pos[1] + dx, 0), self.size - 1)
        self.pos = (y, x)
        if self.pos == (self.size - 1, self.size - 1):
            return self.pos, 1.0, True
        if self.pos == self.pit:
            return self.pos, -1.0, True
        return self.pos, -0.04, False


def make_reinforce(m):
    nn = m.nn

    class ActorCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(16, 32), nn.Tanh())
            self.policy = nn.Linear(32, 4)
            self.value = nn.Linear(32, 1)

        def forward(self, x):
            h = self.body(x)
            return self.policy(h), self.value(h).squeeze(-1)

    return ActorCritic()


def reinforce(m, weights, episodes=8, gamma=0.95, max_steps=12):
    torch, F, optim = m.torch, m.F, m.optim
    torch.manual_seed(3)
    model = load(m, make_reinforce(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=3e-2)
    env = GridWorld()
    log = []
    for episode in range(episodes):
        pos = env.reset()
        log_probs, values, rewards, entropies, actions = [], [], [], [], []
        for t in range(max_steps):
            state = F.one_hot(torch.tensor(pos[0] * 4 + pos[1]), 16).float()
            logits, value = model(state)
            dist = torch.distributions.Categorical(logits=logits)
            action = dist.sample()
            pos, reward, done = env.step(action.item())
            log_probs.append(dist.log_prob(action))
            entropies.append(dist.entropy())
            values.append(value)
            rewards.append(reward)
            actions.append(action.item())
            if done:
                break
        returns, R = [], 0.0
        for r in reversed(rewards):
            R = r + gamma * R
            returns.insert(0, R)
        returns = torch.tensor(returns)
        values = torch.stack(values)
        advantage = returns - values.detach()
        policy_loss = -(torch.stack(log_probs) * advantage).sum()
        value_loss = F.smooth_l1_loss(values, returns, reduction="sum")
        loss = policy_loss + 0.5 * value_loss - 0.01 * torch.stack(entropies).sum()
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        log.append({"rewards": rewards, "returns": returns, "actions": actions, "loss": loss, "norm": norm,
                    "log_probs": torch.stack(log_probs).detach(), "entropies": torch.stack(entropies).detach()})
    return log


def test_reinforce_with_baseline():
    ours, _ = run_both(reinforce, weights_of(make_reinforce), rtol=1e-5, atol=1e-6)
    for episode in ours:
        rewards = np.array(episode["rewards"])
        by_hand = [sum(0.95 ** k * r for k, r in enumerate(rewards[i:])) for i in range(len(rewards))]
        np.testing.assert_allclose(episode["returns"], by_hand, rtol=1e-6)
        assert np.all(episode["log_probs"] < 0) and np.all(episode["entropies"] <= np.log(4) + 1e-6)
        assert episode["norm"] >= 0 and set(episode["actions"]) <= {0, 1, 2, 3}


# ----------------------------------------------------------------------------------------------
# Batched self-play: many tic-tac-toe games at once, a column of visit counts per game
# ----------------------------------------------------------------------------------------------


def batched_selfplay(m, weights, games=5, rollouts=16, temperature=1.0):
    torch, F = m.torch, m.F
    net = load(m, make_tictactoe_net(m), weights).double().eval()
    g = torch.Generator().manual_seed(11)
    boards = torch.zeros(games, 9, dtype=torch.int64)
    player = torch.ones(games, dtype=torch.int64)
    finished = torch.zeros(games, dtype=torch.bool)
    lines = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 3, 6], [1, 4, 7], [2, 5, 8], [0, 4, 8], [2, 4, 6]])
    record = []
    for ply in range(9):
        canonical = boards * player[:, None]
        planes = torch.stack([canonical == 1, canonical == -1, torch.ones_like(canonical, dtype=torch.bool)], 1)
        with torch.no_grad():
            logits, values = net(planes.view(games, 3, 3, 3).double())
        legal = canonical == 0
        prior = F.softmax(logits.masked_fill(~legal, float('-inf')), dim=1)
        # a flat "search": rollouts spread over the moves by the prior; the table keeps a column per game
        visits = torch.zeros(9, games, dtype=torch.float64)
        drawn = torch.multinomial(prior, rollouts, replacement=True, generator=g)  # (games, rollouts)
        visits.T.scatter_add_(1, drawn, torch.ones(games, rollouts, dtype=torch.float64))
        policy = visits ** (1 / temperature)
        policy = policy / policy.sum(0)
        move = torch.multinomial(policy.T, 1, generator=g).squeeze(1)
        explore = (visits + 0.5) * legal.T  # every legal move a candidate for the shortlist
        shortlist = torch.multinomial(explore.T, 2, replacement=False, generator=g)
        move = torch.where(finished, torch.zeros_like(move), move)
        boards[torch.arange(games)[~finished], move[~finished]] = player[~finished]
        won = (boards[:, lines].sum(-1).abs() == 3).any(1)
        full = (boards != 0).all(1)
        record.append({"visits": visits.clone(), "move": move, "shortlist": shortlist, "values": values})
        finished = finished | won | full
        player = -player
        if finished.all():
            break
    return {"record": record, "boards": boards, "finished": finished}


def test_batched_selfplay():
    ours, _ = run_both(batched_selfplay, weights_of(make_tictactoe_net))
    assert ours["finished"].all()
    for step in ours["record"]:
        assert np.all(step["visits"].sum(0) == 16)
        a, b = step["shortlist"].T
        assert np.all(a != b)
    boards = ours["boards"]
    assert np.all(np.abs(boards.sum(1)) <= 1)  # the players alternated


# ----------------------------------------------------------------------------------------------
# Independent learners in a shared grid: one column of action scores per agent (action-major)
# ----------------------------------------------------------------------------------------------


def make_column_policy(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 5))


def column_agents(m, weights, agents=6, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    policy = load(m, make_column_policy(m), weights)
    optimizer = optim.Adam(policy.parameters(), lr=1e-2)
    rng = np.random.default_rng(4)
    positions = torch.tensor(rng.integers(0, 5, (agents, 2)).astype(np.float32))
    torch.manual_seed(0)
    log = []
    for step in range(steps):
        obs = torch.cat([positions / 4, (positions - positions.mean(0)) / 4], 1)
        scores = policy(obs).T  # (actions, agents), as the mixer consumes them
        dist = torch.distributions.Categorical(logits=scores.T)
        actions = dist.sample()
        # the Gumbel-max trick on the same layout, and a relaxed one-hot for a differentiable critic
        gumbel_max = (scores.T - torch.empty_like(scores.T).exponential_().log()).argmax(1)
        relaxed = F.gumbel_softmax(scores.T, tau=0.5, hard=True)
        moves = torch.tensor([[0, 1], [1, 0], [0, -1], [-1, 0], [0, 0]], dtype=torch.float32)
        positions = (positions + moves[actions]).clamp(0, 4)
        reward = -(positions - 2).abs().sum(1)
        loss = -(dist.log_prob(actions) * (reward - reward.mean())).mean() - (relaxed * scores.T).sum(1).mean() * 0.01
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append({"actions": actions, "gumbel_max": gumbel_max, "relaxed": relaxed, "probs": dist.probs,
                    "loss": loss, "positions": positions.clone()})
    return log


def test_column_agents():
    ours, _ = run_both(column_agents, weights_of(make_column_policy), rtol=1e-5, atol=1e-6)
    for step in ours:
        np.testing.assert_allclose(step["probs"].sum(1), 1, rtol=1e-6)
        assert set(np.unique(step["relaxed"])) <= {0.0, 1.0} and np.all(step["relaxed"].sum(1) == 1)
        assert step["actions"].shape == (6,) and step["gumbel_max"].shape == (6,)
        assert np.all((step["positions"] >= 0) & (step["positions"] <= 4))


# ----------------------------------------------------------------------------------------------
# Symmetry augmentation that edits each transformed board in place, and an MCTS batch of copies
# ----------------------------------------------------------------------------------------------


def augmented_positions(m, simulations=1):
    torch = m.torch
    rng = np.random.default_rng(6)
    board = torch.tensor(rng.choice([-1.0, 0.0, 1.0], (3, 3, 3)).astype(np.float32))  # (planes, rows, columns)
    views = []
    for k in range(4):
        for flip in (False, True):
            b = torch.rot90(board, k, dims=(1, 2))
            if flip:
                b = torch.flip(b, dims=[2])
            b[2] *= 0.5  # fade the history plane of this augmented copy, in place
            b[0, 0, 0] = k + 10 * flip  # tag the copy
            views.append(b)
    # the search expands a batch of copies of the root, one per simulation, and plays a move on each
    batch = board.repeat(simulations, 1, 1, 1)
    batch[:, 0, 1, 1] = 1.0
    tiled = board[0].tile((1, 1))
    tiled[2, 2] = -5.0
    return {"board": board, "views": torch.stack(views), "batch": batch, "tiled": tiled}


def test_augmented_positions_leave_the_board_alone():
    ours, _ = run_both(augmented_positions)
    board = ours["board"]
    rng = np.random.default_rng(6)
    np.testing.assert_array_equal(board, rng.choice([-1.0, 0.0, 1.0], (3, 3, 3)).astype(np.float32))
    for i, (k, flip) in enumerate((k, f) for k in range(4) for f in (False, True)):
        expected = np.rot90(board, k, axes=(1, 2))
        expected = np.flip(expected, 2).copy() if flip else expected.copy()
        expected[2] *= 0.5
        expected[0, 0, 0] = k + 10 * flip
        np.testing.assert_array_equal(ours["views"][i], expected)
    assert ours["batch"].shape == (1, 3, 3, 3) and ours["batch"][0, 0, 1, 1] == 1.0
    assert ours["tiled"][2, 2] == -5.0


# ----------------------------------------------------------------------------------------------
# Strict expected failures (the fixes belong to files outside this task's)
# ----------------------------------------------------------------------------------------------


def test_capsule_one_hot_by_sparse_torch_eye():
    def program(m):
        torch = m.torch
        labels = torch.tensor([2, 0, 3])
        return torch.sparse.torch.eye(4).index_select(dim=0, index=labels)

    ours, _ = run_both(program)
    np.testing.assert_array_equal(ours, np.eye(4, dtype=np.float32)[[2, 0, 3]])


def test_random_like_a_slice_of_a_transpose():
    def program(m):
        torch = m.torch
        torch.manual_seed(0)
        scores = torch.zeros(6, 8).t()[1:3]
        noise = torch.rand_like(scores)
        torch.manual_seed(0)
        return torch.empty_like(scores).stride(), noise, torch.rand(6, 2).t()

    ours, _ = run_both(program)
    assert ours[0] == (1, 2)  # PyTorch's empty_like strides here
    np.testing.assert_array_equal(ours[1], ours[2])


def test_random_integers_like_a_transpose():
    def program(m):
        torch = m.torch
        torch.manual_seed(0)
        drawn = torch.randint_like(torch.zeros(3, 4).t(), 10)
        torch.manual_seed(0)
        return drawn, torch.randint(0, 10, (3, 4)).t()

    ours, _ = run_both(program)
    np.testing.assert_array_equal(ours[0], ours[1])


def test_a_legacy_constructor_shares_an_array_of_its_dtype():
    def program(m):
        torch = m.torch
        observation = np.zeros(4, dtype=np.float32)  # a gym-style buffer the environment writes in place
        state = torch.FloatTensor(observation)
        observation[:] = [1.0, 2.0, 3.0, 4.0]  # the next step
        weights = torch.FloatTensor(torch.ones(2))
        weights.add_(1.0)
        return state, weights

    ours, _ = run_both(program)
    np.testing.assert_array_equal(ours[0], [1.0, 2.0, 3.0, 4.0])
