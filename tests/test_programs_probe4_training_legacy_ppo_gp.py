# ruff: noqa: B007, B008, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch training-loop programs (see tests/pytorch_programs.py), each run unchanged but for its imports on
chainrule and on PyTorch from the same weights, comparing losses, parameters and gradients. The 2017 "Learning
PyTorch with Examples" script (``Variable``, ``dtype = torch.FloatTensor``, ``.type(dtype)``) and a custom layer
written the pre-2018 way (parameters from ``torch.Tensor(sizes)``, then an init); CleanRL's PPO update on a recorded
rollout (orthogonal ``layer_init``, Categorical and Normal policies, GAE, clipped losses, lr annealing);
Gaussian-process regression in float64 (Cholesky, ``cholesky_solve``, ``slogdet``)."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# The 2017 "Learning PyTorch with Examples" script: Variables, `dtype = torch.FloatTensor`,
# `.type(dtype)`, `.data -=` updates and `grad.data.zero_()`, with legacy ByteTensor masks
# ----------------------------------------------------------------------------------------------


def legacy_two_layer_net(m, steps=5):
    torch = m.torch
    from_numpy = torch.from_numpy
    Variable = torch.autograd.Variable
    dtype = torch.FloatTensor
    N, D_in, H, D_out = 8, 5, 6, 2
    rng = np.random.default_rng(13)
    x = Variable(from_numpy(rng.standard_normal((N, D_in))).type(dtype), requires_grad=False)
    y = Variable(from_numpy(rng.standard_normal((N, D_out))).type(dtype), requires_grad=False)
    w1 = Variable(from_numpy(0.3 * rng.standard_normal((D_in, H))).type(dtype), requires_grad=True)
    w2 = Variable(from_numpy(0.3 * rng.standard_normal((H, D_out))).type(dtype), requires_grad=True)
    keep = torch.ByteTensor([1, 0, 1, 1, 1, 0, 1, 1]).bool()  # an old-style mask of the rows to fit
    learning_rate = 1e-2
    losses = []
    for t in range(steps):
        y_pred = x.mm(w1).clamp(min=0).mm(w2)
        loss = (y_pred - y).pow(2)[keep].sum()
        losses.append(loss.data.item())
        loss.backward()
        w1.data -= learning_rate * w1.grad.data
        w2.data -= learning_rate * w2.grad.data
        w1.grad.data.zero_()
        w2.grad.data.zero_()
    kinds = [isinstance(w1, torch.FloatTensor), isinstance(w1, torch.DoubleTensor),
             isinstance(keep, torch.BoolTensor), isinstance(torch.LongTensor(2, 3), torch.LongTensor),
             x.type(), w1.type(torch.DoubleTensor).type(), torch.ShortTensor([1]).type(), torch.HalfTensor(2).type(),
             torch.CharTensor([1]).type(), torch.IntTensor(torch.Size([2])).shape[0]]
    return losses, w1, w2, kinds


def test_legacy_variables_and_typed_tensors():
    (losses, w1, w2, kinds), _ = run_both(legacy_two_layer_net)
    assert losses[-1] < losses[0]
    assert kinds == [True, False, True, True, "torch.FloatTensor", "torch.DoubleTensor", "torch.ShortTensor",
                     "torch.HalfTensor", "torch.CharTensor", 2]


# ----------------------------------------------------------------------------------------------
# A custom layer written the pre-2018 way: parameters from `torch.Tensor(sizes)`, then an init
# ----------------------------------------------------------------------------------------------


def old_style_layer(m):
    torch, nn = m.torch, m.nn
    import math

    class MyLinear(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.weight = nn.Parameter(torch.Tensor(out_features, in_features))
            self.bias = nn.Parameter(torch.Tensor(out_features))  # one size: a float vector of that length
            self.reset_parameters()

        def reset_parameters(self):
            stdv = 1.0 / math.sqrt(self.weight.size(1))
            self.weight.data.uniform_(-stdv, stdv)
            self.bias.data.fill_(0.1)

        def forward(self, x):
            return x @ self.weight.t() + self.bias

    layer = MyLinear(3, 2)
    labels = torch.Tensor([0, 1, 1])  # torch.Tensor of ints is a float tensor (torch.tensor keeps int64)
    return layer.bias, str(layer.bias.dtype).split(".")[-1], str(labels.dtype).split(".")[-1], labels


def test_old_style_parameters_from_torch_tensor_sizes():
    (bias, bias_dtype, labels_dtype, labels), _ = run_both(old_style_layer)
    assert bias.shape == (2,) and bias_dtype == "float32" and labels_dtype == "float32"


# ----------------------------------------------------------------------------------------------
# CleanRL's PPO update on a recorded rollout: orthogonal layer_init, Categorical and Normal
# policies, GAE, clipped surrogate and value losses, minibatch epochs, lr annealing by hand
# ----------------------------------------------------------------------------------------------

OBS, ACTS, STEPS, ENVS = 4, 3, 8, 2


def ppo_agent(m):
    torch, nn = m.torch, m.nn

    def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
        nn.init.orthogonal_(layer.weight, std)
        nn.init.constant_(layer.bias, bias_const)
        return layer

    class Agent(nn.Module):
        def __init__(self):
            super().__init__()
            self.critic = nn.Sequential(layer_init(nn.Linear(OBS, 16)), nn.Tanh(),
                                        layer_init(nn.Linear(16, 1), std=1.0))
            self.actor = nn.Sequential(layer_init(nn.Linear(OBS, 16)), nn.Tanh(),
                                       layer_init(nn.Linear(16, ACTS), std=0.01))
            self.actor_mean = layer_init(nn.Linear(OBS, 2), std=0.01)
            self.actor_logstd = nn.Parameter(torch.zeros(1, 2))

        def get_value(self, x):
            return self.critic(x)

        def get_action_and_value(self, x, action=None, caction=None):
            Categorical, Normal = torch.distributions.Categorical, torch.distributions.Normal
            probs = Categorical(logits=self.actor(x))
            action_mean = self.actor_mean(x)
            action_std = torch.exp(self.actor_logstd.expand_as(action_mean))
            cprobs = Normal(action_mean, action_std)
            logprob = probs.log_prob(action) + cprobs.log_prob(caction).sum(1)
            entropy = probs.entropy() + cprobs.entropy().sum(1)
            return action, logprob, entropy, self.critic(x)

    return Agent()


def ppo_update(m, weights, update_epochs=2, num_minibatches=2, num_updates=2):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    agent = load(m, ppo_agent(m), weights)
    learning_rate, gamma, gae_lambda = 2.5e-3, 0.99, 0.95
    clip_coef, ent_coef, vf_coef, max_grad_norm = 0.2, 0.01, 0.5, 0.5
    optimizer = optim.Adam(agent.parameters(), lr=learning_rate, eps=1e-5)
    rng = np.random.default_rng(16)
    batch_size = STEPS * ENVS
    minibatch_size = batch_size // num_minibatches
    log = []
    for update in range(1, num_updates + 1):
        frac = 1.0 - (update - 1.0) / num_updates
        optimizer.param_groups[0]["lr"] = frac * learning_rate
        # a recorded rollout: observations, actions and rewards come from the environment
        obs = torch.tensor(rng.standard_normal((STEPS, ENVS, OBS)).astype(np.float32))
        actions = torch.tensor(rng.integers(0, ACTS, (STEPS, ENVS)))
        cactions = torch.tensor(rng.standard_normal((STEPS, ENVS, 2)).astype(np.float32))
        rewards = torch.tensor(rng.standard_normal((STEPS, ENVS)).astype(np.float32))
        dones = torch.tensor((rng.random((STEPS, ENVS)) < 0.2).astype(np.float32))
        next_obs = torch.tensor(rng.standard_normal((ENVS, OBS)).astype(np.float32))
        next_done = torch.zeros(ENVS)
        with torch.no_grad():
            _, logprobs, _, values = agent.get_action_and_value(obs.reshape(-1, OBS), actions.reshape(-1),
                                                                cactions.reshape(-1, 2))
            logprobs, values = logprobs.reshape(STEPS, ENVS), values.reshape(STEPS, ENVS)
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards)
            lastgaelam = 0
            for t in reversed(range(STEPS)):
                if t == STEPS - 1:
                    nextnonterminal = 1.0 - next_done
                    nextvalues = next_value
                else:
                    nextnonterminal = 1.0 - dones[t + 1]
                    nextvalues = values[t + 1]
                delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values
        b_obs, b_logprobs = obs.reshape((-1, OBS)), logprobs.reshape(-1)
        b_actions, b_cactions = actions.reshape(-1), cactions.reshape(-1, 2)
        b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
        b_inds = np.arange(batch_size)
        clipfracs = []
        for epoch in range(update_epochs):
            rng.shuffle(b_inds)
            for start in range(0, batch_size, minibatch_size):
                mb_inds = b_inds[start : start + minibatch_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                    b_obs[mb_inds], b_actions.long()[mb_inds], b_cactions[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()
                with torch.no_grad():
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs += [((ratio - 1.0).abs() > clip_coef).float().mean().item()]
                mb_advantages = b_advantages[mb_inds]
                mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()
                newvalue = newvalue.view(-1)
                v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds], -clip_coef, clip_coef)
                v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - ent_coef * entropy_loss + v_loss * vf_coef
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm)
                optimizer.step()
                log.append((loss.item(), pg_loss.item(), v_loss.item(), entropy_loss.item(), approx_kl.item(),
                            old_approx_kl.item()))
        y_pred, y_true = b_values.numpy(), b_returns.numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        log.append((float(explained_var), float(np.mean(clipfracs)), optimizer.param_groups[0]["lr"]))
    return log, [p.detach() for p in agent.parameters()]


def test_cleanrl_ppo_update():
    weights = weights_of(ppo_agent)
    (log, params), _ = run_both(ppo_update, weights, rtol=1e-4, atol=1e-5)
    assert len(log) == 2 * (2 * 2 + 1) and log[-1][2] == 2.5e-3 / 2
    assert all(np.isfinite(entry).all() for entry in log)


# ----------------------------------------------------------------------------------------------
# Gaussian-process regression in float64: the marginal likelihood three ways (Cholesky with
# cholesky_solve, solve + logdet, solve_triangular + slogdet), kernel hyperparameters by Adam
# ----------------------------------------------------------------------------------------------


def gaussian_process(m, steps=10):
    torch, nn, optim = m.torch, m.nn, m.optim
    rng = np.random.default_rng(20)
    X = torch.tensor(rng.uniform(-2, 2, (12, 1)))
    y = torch.sin(2 * X).squeeze(-1) + 0.1 * torch.tensor(rng.standard_normal(12))
    log_ls = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
    log_sf = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
    log_sn = nn.Parameter(torch.tensor(-1.0, dtype=torch.float64))

    def kernel(A, B):
        return log_sf.exp() ** 2 * torch.exp(-0.5 * torch.cdist(A, B) ** 2 / log_ls.exp() ** 2)

    opt = optim.Adam([log_ls, log_sf, log_sn], lr=0.05)
    log = []
    n = len(y)
    for i in range(steps):
        opt.zero_grad()
        K = kernel(X, X) + (log_sn.exp() ** 2 + 1e-6) * torch.eye(n, dtype=torch.float64)
        L = torch.linalg.cholesky(K)
        alpha = torch.cholesky_solve(y.unsqueeze(-1), L)
        const = 0.5 * n * math.log(2 * math.pi)
        nll = 0.5 * (y.unsqueeze(-1) * alpha).sum() + torch.log(torch.diagonal(L)).sum() + const
        nll2 = 0.5 * y @ torch.linalg.solve(K, y) + 0.5 * torch.logdet(K) + const
        v = torch.linalg.solve_triangular(L, y.unsqueeze(-1), upper=False)
        nll3 = 0.5 * (v ** 2).sum() + 0.5 * torch.linalg.slogdet(K).logabsdet + const
        nll.backward()
        opt.step()
        log.append((nll.item(), nll2.item(), nll3.item()))
    with torch.no_grad():
        Xs = torch.linspace(-2, 2, 5, dtype=torch.float64).unsqueeze(-1)
        mean = kernel(Xs, X) @ torch.cholesky_solve(y.unsqueeze(-1), L)
        eigenvalues = torch.linalg.eigh(K).eigenvalues
    return log, [log_ls.detach(), log_sf.detach(), log_sn.detach()], mean, eigenvalues


def test_gaussian_process_marginal_likelihood():
    (log, hypers, mean, eigenvalues), _ = run_both(gaussian_process, rtol=1e-9, atol=1e-11)
    for a, b, c in log:
        np.testing.assert_allclose([b, c], [a, a], rtol=1e-10)  # three ways to the same likelihood
    assert log[-1][0] < log[0][0] and (eigenvalues > 0).all()
    np.testing.assert_allclose(mean[:, 0], np.sin(2 * np.linspace(-2, 2, 5)), atol=0.5)
