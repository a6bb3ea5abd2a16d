# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Real PyTorch programs (see tests/pytorch_programs.py), each run unchanged but for its imports on chainrule and on
PyTorch from the same weights, comparing losses, parameters and gradients. Reinforcement learning: a DQN update (a
replay buffer of tuples, ``Q(s).gather(1, a)``, a target network synced by ``load_state_dict``, ``max(1)[0]``,
``smooth_l1_loss``, ``clip_grad_norm_``, an epsilon-greedy policy); TRPO's natural-gradient step (flat gradients,
Fisher-vector products by double backward of the KL, conjugate gradient, a backtracking line search through
``vector_to_parameters``)."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# DQN: a replay buffer, Q(s).gather(1, a), a target network, Huber loss, gradient clipping
# ----------------------------------------------------------------------------------------------


def dqn_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))


def dqn(m, weights, steps=8, batch_size=8, gamma=0.99):
    import random
    from collections import deque, namedtuple

    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Transition = namedtuple("Transition", ("state", "action", "next_state", "reward"))

    class ReplayMemory:
        def __init__(self, capacity):
            self.memory = deque([], maxlen=capacity)

        def push(self, *args):
            self.memory.append(Transition(*args))

        def sample(self, batch_size):
            return random.sample(self.memory, batch_size)

        def __len__(self):
            return len(self.memory)

    policy_net = load(m, dqn_net(m), weights)
    target_net = dqn_net(m)
    target_net.load_state_dict(policy_net.state_dict())
    optimizer = optim.AdamW(policy_net.parameters(), lr=1e-3, amsgrad=True)
    memory = ReplayMemory(100)
    rng = np.random.default_rng(3)
    random.seed(7)

    def select_action(state, eps):
        if rng.uniform() > eps:
            with torch.no_grad():
                return policy_net(state).max(1).indices.view(1, 1)
        return torch.tensor([[int(rng.integers(0, 3))]], dtype=torch.long)

    state = torch.tensor(rng.standard_normal(4).astype(np.float32)).unsqueeze(0)
    for i in range(40):
        action = select_action(state, eps=0.5)
        reward = torch.tensor([float(rng.standard_normal())])
        terminated = i % 9 == 8
        observation = rng.standard_normal(4).astype(np.float32)
        next_state = None if terminated else torch.tensor(observation, dtype=torch.float32).unsqueeze(0)
        memory.push(state, action, next_state, reward)
        state = next_state if next_state is not None else torch.tensor(-observation).unsqueeze(0)

    losses, norms = [], []
    for step in range(steps):
        transitions = memory.sample(batch_size)
        batch = Transition(*zip(*transitions))
        non_final_mask = torch.tensor(tuple(map(lambda s: s is not None, batch.next_state)), dtype=torch.bool)
        non_final_next_states = torch.cat([s for s in batch.next_state if s is not None])
        state_batch = torch.cat(batch.state)
        action_batch = torch.cat(batch.action)
        reward_batch = torch.cat(batch.reward)
        state_action_values = policy_net(state_batch).gather(1, action_batch)
        next_state_values = torch.zeros(batch_size)
        with torch.no_grad():
            next_state_values[non_final_mask] = target_net(non_final_next_states).max(1)[0]
        expected_state_action_values = (next_state_values * gamma) + reward_batch
        criterion = nn.SmoothL1Loss()
        loss = criterion(state_action_values, expected_state_action_values.unsqueeze(1))
        optimizer.zero_grad()
        loss.backward()
        norms.append(float(nn.utils.clip_grad_norm_(policy_net.parameters(), 0.5)))
        nn.utils.clip_grad_value_(policy_net.parameters(), 100)
        optimizer.step()
        losses.append(loss.item())
        # soft update of the target network, as the tutorial does
        target_net_state_dict = target_net.state_dict()
        policy_net_state_dict = policy_net.state_dict()
        for key in policy_net_state_dict:
            target_net_state_dict[key] = policy_net_state_dict[key] * 0.05 + target_net_state_dict[key] * (1 - 0.05)
        target_net.load_state_dict(target_net_state_dict)
        if step == 4:  # and a hard sync
            target_net.load_state_dict(policy_net.state_dict())
    errors = torch.tensor([0.0, 0.5, 3.0])
    huber = [F.smooth_l1_loss(errors, torch.zeros(3), reduction="none", beta=b) for b in (1.0, 0.0, 2.0)]
    huber.append(F.huber_loss(errors, torch.zeros(3), reduction="none", delta=2.0))
    return (losses, norms, [p.detach() for p in policy_net.parameters()], [p.grad for p in policy_net.parameters()],
            [p.detach() for p in target_net.parameters()], huber)


def test_dqn_replay_target_network_and_huber_loss():
    weights = weights_of(dqn_net)
    ours, _ = run_both(dqn, weights, rtol=1e-5, atol=1e-6)
    losses, norms, params, grads, target, huber = ours
    assert all(np.isfinite(losses)) and len(norms) == 8
    np.testing.assert_allclose(huber[0], [0.0, 0.125, 2.5])
    np.testing.assert_allclose(huber[1], [0.0, 0.5, 3.0])
    np.testing.assert_allclose(huber[3], 2 * huber[2])


# ----------------------------------------------------------------------------------------------
# TRPO's natural-gradient step: flat gradients, Fisher-vector products by double backward of the KL,
# conjugate gradient, a backtracking line search through vector_to_parameters
# ----------------------------------------------------------------------------------------------


def trpo_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))


def trpo(m, weights, max_kl=1e-2, damping=1e-1, iterations=2):
    torch, nn, F = m.torch, m.nn, m.F
    from_vec, to_vec = nn.utils.vector_to_parameters, nn.utils.parameters_to_vector
    policy = load(m, trpo_net(m), weights)
    rng = np.random.default_rng(15)
    states = torch.tensor(rng.standard_normal((20, 4)).astype(np.float32))
    actions = torch.tensor(rng.integers(0, 3, 20))
    advantages = torch.tensor(rng.standard_normal(20).astype(np.float32))
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    def get_kl():
        logits = policy(states)
        log_p = F.log_softmax(logits, dim=1)
        log_p_old = log_p.detach()
        return (log_p_old.exp() * (log_p_old - log_p)).sum(1, keepdim=True).mean()

    def Fvp(v):
        kl = get_kl()
        grads = torch.autograd.grad(kl, policy.parameters(), create_graph=True)
        flat_grad_kl = torch.cat([grad.view(-1) for grad in grads])
        kl_v = (flat_grad_kl * v).sum()
        grads = torch.autograd.grad(kl_v, policy.parameters())
        flat_grad_grad_kl = torch.cat([grad.contiguous().view(-1) for grad in grads]).data
        return flat_grad_grad_kl + v * damping

    def conjugate_gradients(Avp, b, nsteps, residual_tol=1e-10):
        x = torch.zeros(b.size())
        r = b.clone()
        p = b.clone()
        rdotr = torch.dot(r, r)
        for i in range(nsteps):
            _Avp = Avp(p)
            alpha = rdotr / torch.dot(p, _Avp)
            x += alpha * p
            r -= alpha * _Avp
            new_rdotr = torch.dot(r, r)
            betta = new_rdotr / rdotr
            p = r + betta * p
            rdotr = new_rdotr
            if rdotr < residual_tol:
                break
        return x

    fixed_log_prob = F.log_softmax(policy(states), 1).gather(1, actions[:, None]).squeeze(1).detach()

    def get_loss(volatile=False):
        with torch.set_grad_enabled(not volatile):
            log_prob = F.log_softmax(policy(states), 1).gather(1, actions[:, None]).squeeze(1)
            return (-advantages * torch.exp(log_prob - fixed_log_prob)).mean()

    log = []
    for it in range(iterations):
        loss = get_loss()
        grads = torch.autograd.grad(loss, policy.parameters())
        loss_grad = torch.cat([grad.view(-1) for grad in grads]).data
        stepdir = conjugate_gradients(Fvp, -loss_grad, 10)
        shs = 0.5 * (stepdir * Fvp(stepdir)).sum(0, keepdim=True)
        lm = torch.sqrt(shs / max_kl)
        fullstep = stepdir / lm[0]
        neggdotstepdir = (-loss_grad * stepdir).sum(0, keepdim=True)
        prev_params = to_vec(policy.parameters())
        fval = get_loss(True).data
        accepted = None
        for _n_backtracks, stepfrac in enumerate(0.5 ** np.arange(10)):
            xnew = prev_params + stepfrac * fullstep
            from_vec(xnew, policy.parameters())
            newfval = get_loss(True).data
            actual_improve = fval - newfval
            expected_improve = neggdotstepdir * stepfrac
            ratio = actual_improve / expected_improve
            if ratio.item() > 0.1 and actual_improve.item() > 0:
                accepted = _n_backtracks
                break
        else:
            from_vec(prev_params, policy.parameters())
        log.append((loss.item(), float(lm[0]), accepted, float(stepdir.norm())))
    return log, [p.detach() for p in policy.parameters()], stepdir, loss_grad


def test_trpo_natural_gradient_step():
    weights = weights_of(trpo_net)
    ours, _ = run_both(trpo, weights, rtol=1e-4, atol=1e-6)
    log, params, stepdir, loss_grad = ours
    assert log[0][2] is not None and log[1][0] < log[0][0]
