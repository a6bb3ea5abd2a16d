# ruff: noqa: B007, B023, E501, UP008, UP034  (the programs are kept as their authors wrote them)
"""Reinforcement-learning programs, run as tests/probe18_rl_common.py says: planning with a learned model: MuZero
(muzero-general): ``scalar_to_support`` / ``support_to_scalar`` with h(x) and its inverse, ``scatter_`` of two-hot
targets with ``masked_fill_``, hidden-state min-max normalisation with an indexed ``+=``, gradient scaling by
``register_hook`` on hidden states and losses; alpha-zero-general (MCTS in NumPy over a batch-norm policy/value net
in eval mode under no_grad, self-play, its losses); Gumbel MuZero's root policy improvement (Gumbel-top-k, sequential
halving by ``scatter_add_``/``topk``/``gather``, completed Q-values, a KL loss)."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# MuZero (werner-duvaud/muzero-general): support transforms, unrolled dynamics, scaled gradients
# ----------------------------------------------------------------------------------------------


def support_to_scalar(torch, logits, support_size):
    """Transform a categorical representation to a scalar. See paper appendix Network Architecture"""
    # Decode to a scalar
    probabilities = torch.softmax(logits, dim=1)
    support = (
        torch.tensor([x for x in range(-support_size, support_size + 1)])
        .expand(probabilities.shape)
        .float()
        .to(device=probabilities.device)
    )
    x = torch.sum(support * probabilities, dim=1, keepdim=True)
    # Invert the scaling (defined in https://arxiv.org/abs/1805.11593)
    x = torch.sign(x) * (
        ((torch.sqrt(1 + 4 * 0.001 * (torch.abs(x) + 1 + 0.001)) - 1) / (2 * 0.001))
        ** 2
        - 1
    )
    return x


def scalar_to_support(torch, x, support_size):
    """Transform a scalar to a categorical representation with (2 * support_size + 1) categories"""
    # Reduce the scale (defined in https://arxiv.org/abs/1805.11593)
    x = torch.sign(x) * (torch.sqrt(torch.abs(x) + 1) - 1) + 0.001 * x
    # Encode on a vector
    x = torch.clamp(x, -support_size, support_size)
    floor = x.floor()
    prob = x - floor
    logits = torch.zeros(x.shape[0], x.shape[1], 2 * support_size + 1).to(x.device)
    logits.scatter_(2, (floor + support_size).long().unsqueeze(-1), (1 - prob).unsqueeze(-1))
    indexes = floor + support_size + 1
    prob = prob.masked_fill_(2 * support_size < indexes, 0.0)
    indexes = indexes.masked_fill_(2 * support_size < indexes, 0.0)
    logits.scatter_(2, indexes.long().unsqueeze(-1), prob.unsqueeze(-1))
    return logits


def make_muzero(m, observation_size=4, action_space_size=3, encoding_size=6, support_size=5, hidden=16):
    torch, nn = m.torch, m.nn

    def mlp_(input_size, layer_sizes, output_size, output_activation=torch.nn.Identity, activation=torch.nn.ELU):
        sizes = [input_size] + layer_sizes + [output_size]
        layers = []
        for i in range(len(sizes) - 1):
            act = activation if i < len(sizes) - 2 else output_activation
            layers += [torch.nn.Linear(sizes[i], sizes[i + 1]), act()]
        return torch.nn.Sequential(*layers)

    def normalize_encoded_state(encoded_state):
        min_encoded_state = encoded_state.min(1, keepdim=True)[0]
        max_encoded_state = encoded_state.max(1, keepdim=True)[0]
        scale_encoded_state = max_encoded_state - min_encoded_state
        scale_encoded_state[scale_encoded_state < 1e-5] += 1e-5
        encoded_state_normalized = (encoded_state - min_encoded_state) / scale_encoded_state
        return encoded_state_normalized

    class MuZeroFullyConnectedNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.action_space_size = action_space_size
            self.full_support_size = 2 * support_size + 1
            self.representation_network = mlp_(observation_size, [hidden], encoding_size)
            self.dynamics_encoded_state_network = mlp_(encoding_size + self.action_space_size, [hidden], encoding_size)
            self.dynamics_reward_network = mlp_(encoding_size, [hidden], self.full_support_size)
            self.prediction_policy_network = mlp_(encoding_size, [], self.action_space_size)
            self.prediction_value_network = mlp_(encoding_size, [], self.full_support_size)

        def prediction(self, encoded_state):
            policy_logits = self.prediction_policy_network(encoded_state)
            value = self.prediction_value_network(encoded_state)
            return policy_logits, value

        def representation(self, observation):
            encoded_state = self.representation_network(observation.view(observation.shape[0], -1))
            return normalize_encoded_state(encoded_state)

        def dynamics(self, encoded_state, action):
            # Stack encoded_state with a game specific one hot encoded action (See paper appendix Network Architecture)
            action_one_hot = torch.zeros((action.shape[0], self.action_space_size)).to(action.device).float()
            action_one_hot.scatter_(1, action.long(), 1.0)
            x = torch.cat((encoded_state, action_one_hot), dim=1)
            next_encoded_state = self.dynamics_encoded_state_network(x)
            reward = self.dynamics_reward_network(next_encoded_state)
            return normalize_encoded_state(next_encoded_state), reward

        def initial_inference(self, observation):
            encoded_state = self.representation(observation)
            policy_logits, value = self.prediction(encoded_state)
            # reward equal to 0 for consistency
            reward = torch.log(
                (torch.zeros(1, self.full_support_size)
                 .scatter(1, torch.tensor([[self.full_support_size // 2]]).long(), 1.0)
                 .repeat(len(observation), 1).to(observation.device)))
            return value, reward, policy_logits, encoded_state

        def recurrent_inference(self, encoded_state, action):
            next_encoded_state, reward = self.dynamics(encoded_state, action)
            policy_logits, value = self.prediction(next_encoded_state)
            return value, reward, policy_logits, next_encoded_state

    return MuZeroFullyConnectedNetwork()


def muzero_batch(seed, batch=8, unroll=3, actions=3):
    rng = np.random.default_rng(seed)
    observation_batch = rng.standard_normal((batch, 4)).astype(np.float32)
    action_batch = rng.integers(0, actions, (batch, unroll + 1, 1))
    target_value = (5 * rng.standard_normal((batch, unroll + 1))).astype(np.float32)
    target_reward = rng.standard_normal((batch, unroll + 1)).astype(np.float32)
    target_reward[:, 0] = 0
    target_policy = rng.dirichlet(np.ones(actions), (batch, unroll + 1)).astype(np.float32)
    weight_batch = rng.uniform(0.5, 1.0, batch).astype(np.float32)
    gradient_scale_batch = rng.integers(1, unroll + 1, (batch, unroll + 1)).astype(np.float32)
    return observation_batch, action_batch, target_value, target_reward, target_policy, weight_batch, gradient_scale_batch


def muzero_loss_function(torch, value, reward, policy_logits, target_value, target_reward, target_policy):
    # Cross-entropy seems to have a better convergence than MSE
    value_loss = (-target_value * torch.nn.LogSoftmax(dim=1)(value)).sum(1)
    reward_loss = (-target_reward * torch.nn.LogSoftmax(dim=1)(reward)).sum(1)
    policy_loss = (-target_policy * torch.nn.LogSoftmax(dim=1)(policy_logits)).sum(1)
    return value_loss, reward_loss, policy_loss


def muzero_update_weights(m, weights, steps=2, support_size=5, value_loss_weight=0.25, PER_alpha=0.5):
    torch = m.torch
    model = load(m, make_muzero(m), weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    log = []
    for step in range(steps):
        (observation_batch, action_batch, target_value, target_reward, target_policy, weight_batch,
         gradient_scale_batch) = muzero_batch(step)
        target_value_scalar = np.array(target_value, dtype="float32")
        priorities = np.zeros_like(target_value_scalar)
        weight_batch = torch.tensor(weight_batch.copy()).float()
        observation_batch = torch.tensor(np.array(observation_batch)).float()
        action_batch = torch.tensor(action_batch).long()
        target_value = torch.tensor(target_value).float()
        target_reward = torch.tensor(target_reward).float()
        target_policy = torch.tensor(target_policy).float()
        gradient_scale_batch = torch.tensor(gradient_scale_batch).float()
        target_value = scalar_to_support(torch, target_value, support_size)
        target_reward = scalar_to_support(torch, target_reward, support_size)
        ## Generate predictions
        value, reward, policy_logits, hidden_state = model.initial_inference(observation_batch)
        predictions = [(value, reward, policy_logits)]
        for i in range(1, action_batch.shape[1]):
            value, reward, policy_logits, hidden_state = model.recurrent_inference(hidden_state, action_batch[:, i])
            # Scale the gradient at the start of the dynamics function (See paper appendix Training)
            hidden_state.register_hook(lambda grad: grad * 0.5)
            predictions.append((value, reward, policy_logits))
        ## Compute losses
        value_loss, reward_loss, policy_loss = (0, 0, 0)
        value, reward, policy_logits = predictions[0]
        # Ignore reward loss for the first batch step
        current_value_loss, _, current_policy_loss = muzero_loss_function(
            torch, value.squeeze(-1), reward.squeeze(-1), policy_logits, target_value[:, 0], target_reward[:, 0], target_policy[:, 0])
        value_loss += current_value_loss
        policy_loss += current_policy_loss
        # Compute priorities for the prioritized replay (See paper appendix Training)
        pred_value_scalar = support_to_scalar(torch, value, support_size).detach().cpu().numpy().squeeze()
        priorities[:, 0] = np.abs(pred_value_scalar - target_value_scalar[:, 0]) ** PER_alpha
        for i in range(1, len(predictions)):
            value, reward, policy_logits = predictions[i]
            current_value_loss, current_reward_loss, current_policy_loss = muzero_loss_function(
                torch, value.squeeze(-1), reward.squeeze(-1), policy_logits, target_value[:, i], target_reward[:, i], target_policy[:, i])
            # Scale gradient by the number of unroll steps (See paper appendix Training)
            current_value_loss.register_hook(lambda grad: grad / gradient_scale_batch[:, i])
            current_reward_loss.register_hook(lambda grad: grad / gradient_scale_batch[:, i])
            current_policy_loss.register_hook(lambda grad: grad / gradient_scale_batch[:, i])
            value_loss += current_value_loss
            reward_loss += current_reward_loss
            policy_loss += current_policy_loss
            pred_value_scalar = support_to_scalar(torch, value, support_size).detach().cpu().numpy().squeeze()
            priorities[:, i] = np.abs(pred_value_scalar - target_value_scalar[:, i]) ** PER_alpha
        # Scale the value loss, paper recommends by 0.25 (See paper appendix Reanalyze)
        loss = value_loss * value_loss_weight + reward_loss + policy_loss
        # Correct PER bias by using importance-sampling (IS) weights
        loss *= weight_batch
        # Mean over batch dimension (pseudocode do a sum)
        loss = loss.mean()
        optimizer.zero_grad()
        loss.backward()
        grads = [p.grad.clone() for p in model.representation_network.parameters()]
        optimizer.step()
        log.append([loss, value_loss.mean(), reward_loss.mean(), policy_loss.mean(), priorities, grads])
    return log, model.state_dict()


def test_muzero_update_weights():
    ours, _ = run_both(muzero_update_weights, weights_of(make_muzero), rtol=1e-4, atol=1e-5)
    assert ours[0][0][4].shape == (8, 4) and np.all(ours[0][0][4] >= 0)


def muzero_support(m, support_size=10):
    torch = m.torch
    x = torch.tensor([[-150.0, -3.7, -0.2, 0.0], [0.5, 7.25, 99.0, 1000.0]])
    support = scalar_to_support(torch, x, support_size)
    # the two-hot encoding decodes back to the scalar (support_to_scalar takes logits: log of the probabilities)
    decoded = support_to_scalar(torch, torch.log(support.view(-1, 2 * support_size + 1) + 1e-30), support_size)
    logits = torch.randn(3, 2 * support_size + 1, generator=torch.Generator().manual_seed(0), requires_grad=True)
    value = support_to_scalar(torch, logits, support_size)
    (grad,) = torch.autograd.grad(value.sum(), logits)
    return support, decoded.view(2, 4), value, grad


def test_muzero_support_transforms():
    support, decoded, value, grad = run_both(muzero_support, rtol=1e-5, atol=1e-5)[0]
    x = np.array([[-150.0, -3.7, -0.2, 0.0], [0.5, 7.25, 99.0, 1000.0]])
    np.testing.assert_allclose(support.sum(-1), 1.0, rtol=1e-6)
    h = np.sign(x) * (np.sqrt(np.abs(x) + 1) - 1) + 0.001 * x
    np.testing.assert_allclose((support * np.arange(-10, 11)).sum(-1), np.clip(h, -10, 10), rtol=1e-5, atol=1e-6)
    inside = np.abs(h) < 10
    np.testing.assert_allclose(decoded[inside], x[inside], rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# suragnair/alpha-zero-general: a convolutional policy/value net with batch norm, MCTS in NumPy querying it under
# no_grad in eval mode, self-play examples, and its training losses
# ----------------------------------------------------------------------------------------------


class TicTacToe:
    n = 3

    def getInitBoard(self):
        return np.zeros((3, 3), dtype=np.int64)

    def getActionSize(self):
        return 10  # nine squares and a pass

    def getNextState(self, board, player, action):
        if action == 9:
            return board, -player
        b = board.copy()
        b[action // 3, action % 3] = player
        return b, -player

    def getValidMoves(self, board, player):
        valids = np.zeros(10, dtype=np.int64)
        empty = (board.reshape(-1) == 0)
        valids[:9] = empty
        if not empty.any():
            valids[9] = 1
        return valids

    def getGameEnded(self, board, player):
        lines = list(board) + list(board.T) + [board.diagonal(), np.fliplr(board).diagonal()]
        for line in lines:
            if abs(line.sum()) == 3:
                return player * np.sign(line.sum())
        if not (board == 0).any():
            return 1e-4
        return 0

    def getCanonicalForm(self, board, player):
        return player * board

    def stringRepresentation(self, board):
        return board.tobytes()


def make_othello_nnet(m, board_x=3, board_y=3, action_size=10, num_channels=8, dropout=0.0):
    torch, nn, F = m.torch, m.nn, m.F

    class OthelloNNet(nn.Module):
        def __init__(self):
            self.board_x, self.board_y = board_x, board_y
            self.action_size = action_size
            super(OthelloNNet, self).__init__()
            self.conv1 = nn.Conv2d(1, num_channels, 3, stride=1, padding=1)
            self.conv2 = nn.Conv2d(num_channels, num_channels, 3, stride=1, padding=1)
            self.conv3 = nn.Conv2d(num_channels, num_channels, 3, stride=1, padding=1)
            self.bn1 = nn.BatchNorm2d(num_channels)
            self.bn2 = nn.BatchNorm2d(num_channels)
            self.bn3 = nn.BatchNorm2d(num_channels)
            self.fc1 = nn.Linear(num_channels * self.board_x * self.board_y, 32)
            self.fc_bn1 = nn.BatchNorm1d(32)
            self.fc3 = nn.Linear(32, self.action_size)
            self.fc4 = nn.Linear(32, 1)
            self.dropout = dropout

        def forward(self, s):
            s = s.view(-1, 1, self.board_x, self.board_y)  # batch_size x 1 x board_x x board_y
            s = F.relu(self.bn1(self.conv1(s)))  # batch_size x num_channels x board_x x board_y
            s = F.relu(self.bn2(self.conv2(s)))
            s = F.relu(self.bn3(self.conv3(s)))
            s = s.view(-1, num_channels * self.board_x * self.board_y)
            s = F.dropout(F.relu(self.fc_bn1(self.fc1(s))), p=self.dropout, training=self.training)
            pi = self.fc3(s)
            v = self.fc4(s)
            return F.log_softmax(pi, dim=1), torch.tanh(v)

    return OthelloNNet()


class MCTS:
    def __init__(self, game, predict, numMCTSSims=12, cpuct=1.0):
        self.game, self.predict = game, predict
        self.numMCTSSims, self.cpuct = numMCTSSims, cpuct
        self.Qsa, self.Nsa, self.Ns, self.Ps, self.Es, self.Vs = {}, {}, {}, {}, {}, {}

    def getActionProb(self, canonicalBoard, temp=1):
        for i in range(self.numMCTSSims):
            self.search(canonicalBoard)
        s = self.game.stringRepresentation(canonicalBoard)
        counts = [self.Nsa[(s, a)] if (s, a) in self.Nsa else 0 for a in range(self.game.getActionSize())]
        if temp == 0:
            bestAs = np.array(np.argwhere(counts == np.max(counts))).flatten()
            probs = [0] * len(counts)
            probs[bestAs[0]] = 1
            return probs
        counts = [x ** (1. / temp) for x in counts]
        counts_sum = float(sum(counts))
        return [x / counts_sum for x in counts]

    def search(self, canonicalBoard):
        s = self.game.stringRepresentation(canonicalBoard)
        if s not in self.Es:
            self.Es[s] = self.game.getGameEnded(canonicalBoard, 1)
        if self.Es[s] != 0:
            return -self.Es[s]
        if s not in self.Ps:
            self.Ps[s], v = self.predict(canonicalBoard)
            valids = self.game.getValidMoves(canonicalBoard, 1)
            self.Ps[s] = self.Ps[s] * valids  # masking invalid moves
            sum_Ps_s = np.sum(self.Ps[s])
            self.Ps[s] /= sum_Ps_s  # renormalize
            self.Vs[s] = valids
            self.Ns[s] = 0
            return -v
        valids = self.Vs[s]
        cur_best = -float('inf')
        best_act = -1
        for a in range(self.game.getActionSize()):
            if valids[a]:
                if (s, a) in self.Qsa:
                    u = self.Qsa[(s, a)] + self.cpuct * self.Ps[s][a] * math.sqrt(self.Ns[s]) / (1 + self.Nsa[(s, a)])
                else:
                    u = self.cpuct * self.Ps[s][a] * math.sqrt(self.Ns[s] + 1e-8)  # Q = 0 ?
                if u > cur_best:
                    cur_best = u
                    best_act = a
        a = best_act
        next_s, next_player = self.game.getNextState(canonicalBoard, 1, a)
        next_s = self.game.getCanonicalForm(next_s, next_player)
        v = self.search(next_s)
        if (s, a) in self.Qsa:
            self.Qsa[(s, a)] = (self.Nsa[(s, a)] * self.Qsa[(s, a)] + v) / (self.Nsa[(s, a)] + 1)
            self.Nsa[(s, a)] += 1
        else:
            self.Qsa[(s, a)] = v
            self.Nsa[(s, a)] = 1
        self.Ns[s] += 1
        return -v


def alpha_zero(m, weights, episodes=2, epochs=2, batch_size=8):
    torch = m.torch
    nnet = load(m, make_othello_nnet(m), weights)
    game = TicTacToe()

    def predict(board):
        board = torch.FloatTensor(board.astype(np.float64))
        board = board.view(1, 3, 3)
        nnet.eval()
        with torch.no_grad():
            pi, v = nnet(board)
        return torch.exp(pi).data.cpu().numpy()[0], v.data.cpu().numpy()[0][0]

    rng = np.random.default_rng(0)
    trainExamples = []
    for ep in range(episodes):
        mcts = MCTS(game, predict)
        episode = []
        board, curPlayer = game.getInitBoard(), 1
        while True:
            canonicalBoard = game.getCanonicalForm(board, curPlayer)
            pi = mcts.getActionProb(canonicalBoard, temp=1)
            episode.append([canonicalBoard, curPlayer, pi, None])
            action = rng.choice(len(pi), p=pi)
            board, curPlayer = game.getNextState(board, curPlayer, action)
            r = game.getGameEnded(board, curPlayer)
            if r != 0:
                trainExamples += [(x[0], x[2], r * ((-1) ** (x[1] != curPlayer))) for x in episode]
                break
    optimizer = torch.optim.Adam(nnet.parameters(), lr=1e-2)
    log = []
    for epoch in range(epochs):
        nnet.train()
        batch_count = int(len(trainExamples) / batch_size)
        for _ in range(batch_count):
            sample_ids = rng.integers(len(trainExamples), size=batch_size)
            boards, pis, vs = list(zip(*[trainExamples[i] for i in sample_ids]))
            boards = torch.FloatTensor(np.array(boards).astype(np.float64))
            target_pis = torch.FloatTensor(np.array(pis))
            target_vs = torch.FloatTensor(np.array(vs).astype(np.float64))
            out_pi, out_v = nnet(boards)
            l_pi = -torch.sum(target_pis * out_pi) / target_pis.size()[0]
            l_v = torch.sum((target_vs - out_v.view(-1)) ** 2) / target_vs.size()[0]
            total_loss = l_pi + l_v
            optimizer.zero_grad()
            total_loss.backward()
            optimizer.step()
            log.append([l_pi.item(), l_v.item(), max(getattr(nnet, name).bias.grad.abs().max().item() for name in ("conv1", "conv2", "conv3", "fc1"))])
    # a layer's bias right before batch norm gets only rounding for a gradient, which Adam's normalised steps
    # turn into lr-sized moves in either library's own direction (and the running means follow them): compared
    # are the weights that matter, with the bias gradients checked to be rounding
    state = {k: v for k, v in nnet.state_dict().items() if k not in ("conv1.bias", "conv2.bias", "conv3.bias", "fc1.bias") and "running_mean" not in k}
    return [(b, np.asarray(p, dtype=np.float64), float(v)) for b, p, v in trainExamples], [row[:2] for row in log], state, max(row[2] for row in log)


def test_alpha_zero_general():
    ours, _ = run_both(alpha_zero, weights_of(make_othello_nnet), rtol=1e-4, atol=1e-6)
    examples = ours[0]
    assert len(examples) >= 10 and all(abs(sum(p) - 1) < 1e-9 for _, p, _ in examples)
    assert "bn1.num_batches_tracked" in ours[2] and ours[2]["bn1.num_batches_tracked"] == len(ours[1])
    assert ours[3] < 1e-6


# ----------------------------------------------------------------------------------------------
# Gumbel MuZero's root policy improvement (mctx's, in torch): Gumbel-top-k action selection, sequential halving over
# a learnt model's values, completed Q-values with the mixed value, sigma(q), and the improved-policy KL loss
# ----------------------------------------------------------------------------------------------


def make_gumbel_muzero(m, obs_dim=4, num_actions=6):
    nn = m.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.torso = nn.Sequential(nn.Linear(obs_dim, 16), nn.ReLU())
            self.policy = nn.Linear(16, num_actions)
            self.value = nn.Linear(16, 1)
            self.q = nn.Linear(16, num_actions)

        def forward(self, obs):
            h = self.torso(obs)
            return self.policy(h), self.value(h).squeeze(-1), self.q(h)

    return Net()


def gumbel_muzero(m, weights, max_num_considered_actions=4, num_simulations=8, value_scale=0.1, maxvisit_init=50.0, steps=3):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    net = load(m, make_gumbel_muzero(m), weights)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)

    def qtransform_completed_by_mix_value(prior_logits, raw_value, qvalues, visit_counts, epsilon=1e-8):
        probs = torch.softmax(prior_logits, dim=-1)
        sum_visit_counts = visit_counts.sum(-1, keepdim=True)
        weighted_q = (torch.where(visit_counts > 0, probs, torch.zeros_like(probs)) * qvalues).sum(-1, keepdim=True)
        sum_probs = torch.where(visit_counts > 0, probs, torch.zeros_like(probs)).sum(-1, keepdim=True).clamp(min=torch.finfo(probs.dtype).tiny)
        mixed_value = (raw_value.unsqueeze(-1) + sum_visit_counts * weighted_q / sum_probs) / (sum_visit_counts + 1)
        completed = torch.where(visit_counts > 0, qvalues, mixed_value)
        min_value = completed.min(-1, keepdim=True).values
        max_value = completed.max(-1, keepdim=True).values
        completed = (completed - min_value) / torch.clamp(max_value - min_value, min=epsilon)
        max_visit = visit_counts.max(-1, keepdim=True).values
        visit_scale = maxvisit_init + max_visit
        return visit_scale * value_scale * completed

    log = []
    for step in range(steps):
        obs = torch.from_numpy(np.random.default_rng(1100 + step).standard_normal((5, 4)).astype(np.float32))
        prior_logits, raw_value, model_q = net(obs)
        with torch.no_grad():
            B, A = prior_logits.shape
            gumbel = -torch.log(-torch.log(torch.rand(B, A)))
            # Gumbel-top-k: the considered actions
            _, considered = torch.topk(gumbel + prior_logits, max_num_considered_actions, dim=-1)
            visit_counts = torch.zeros(B, A)
            remaining = considered
            sims_per_round = num_simulations // 2
            while remaining.shape[1] > 1:
                visit_counts.scatter_add_(1, remaining, torch.full(remaining.shape, float(sims_per_round // remaining.shape[1] or 1)))
                sigma = qtransform_completed_by_mix_value(prior_logits, raw_value, model_q, visit_counts)
                scores = (gumbel + prior_logits + sigma).gather(1, remaining)
                keep = scores.topk(remaining.shape[1] // 2, dim=-1).indices
                remaining = remaining.gather(1, keep)
            action = remaining.squeeze(-1)
            completed_q = qtransform_completed_by_mix_value(prior_logits, raw_value, model_q, visit_counts)
            improved_policy = torch.softmax(prior_logits + completed_q, dim=-1)
        policy_loss = F.kl_div(F.log_softmax(prior_logits, dim=-1), improved_policy, reduction='batchmean')
        value_target = (improved_policy * model_q).sum(-1).detach()
        value_loss = F.mse_loss(raw_value, value_target)
        loss = policy_loss + 0.25 * value_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append([loss, action, visit_counts, improved_policy])
    return log, net.state_dict()


def test_gumbel_muzero_policy_improvement():
    ours, _ = run_both(gumbel_muzero, weights_of(make_gumbel_muzero), rtol=1e-4, atol=1e-6)
    for loss, action, visit_counts, improved_policy in ours[0]:
        np.testing.assert_allclose(improved_policy.sum(-1), 1, rtol=1e-6)
        assert np.all(visit_counts[np.arange(5), action] > 0)  # the chosen action was among those simulated
