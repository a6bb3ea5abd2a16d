# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Game-AI and unusual-architecture programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch
from the same weights and data, and checked against NumPy by hand where PyTorch is missing. AlphaZero on tic-tac-toe
(alpha-zero-general's shape: a residual conv tower in float64, policy logits masked by the legal moves with
``masked_fill(-inf)``, a ``tanh`` value head, MCTS with Dirichlet root noise and visit counts, temperature sampling
by ``torch.multinomial`` with a seeded ``Generator``, the 8 board symmetries by ``torch.rot90`` with negative ``k``
and ``flip``, and the loss ``F.cross_entropy`` with probability targets *and* ``label_smoothing`` plus MSE), with a
symmetry-averaged evaluation whose gradient goes back through ``rot90(k)`` and ``rot90(-k)``, and an arena that draws
two distinct moves by ``multinomial`` without replacement; batched self-play over many games at once, a column of
visit counts per game, moves drawn by ``multinomial(policy.T, ...)`` (the exponential race laid out as the
transpose's memory, as PyTorch's ``empty_like``); symmetry augmentation that edits each ``rot90``/``flip`` copy in
place (the identity turn, ``rot90(board, 0)``, included) and a search batch by ``board.repeat(1, 1, 1, 1)``: each a
copy, as PyTorch's."""

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
