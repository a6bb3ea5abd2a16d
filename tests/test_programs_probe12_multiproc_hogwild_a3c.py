# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Programs that use processes and DataLoader workers, as their authors write them in PyTorch (see
tests/pytorch_programs.py), run on chainrule and on PyTorch from the same seeds and compared. Processes
(autograd.multiprocessing), run one after another, so the numbers are deterministic and compared with PyTorch's; the
functions children run are at module level, so that a spawned child can import them: pytorch/examples' mnist_hogwild
shrunk (fork and spawn, the model and the dataset sent to the children); A3C with a SharedAdam whose state is
``share_memory_()``'d and a shared global model that workers update through ``ensure_shared_grads``."""

import math

import numpy as np
import pytest

from .probe12_multiproc_common import images, modules, multiprocessing_of, posix_only
from .pytorch_programs import OURS, pytorch, same_dropout_masks

# ----------------------------------------------------------------------------------------------
# Processes: autograd.multiprocessing as torch.multiprocessing
# ----------------------------------------------------------------------------------------------


def hogwild_net_class(m):
    """pytorch/examples' mnist_hogwild Net, shrunk to 10x10 images and 3 classes."""
    nn, F = m.nn, m.F

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 4, kernel_size=3)
            self.conv2 = nn.Conv2d(4, 8, kernel_size=3)
            self.conv2_drop = nn.Dropout2d()
            self.fc1 = nn.Linear(8, 16)
            self.fc2 = nn.Linear(16, 3)

        def forward(self, x):
            x = F.relu(F.max_pool2d(self.conv1(x), 2))
            x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
            x = x.view(-1, 8)
            x = F.relu(self.fc1(x))
            x = F.dropout(x, training=self.training)
            x = self.fc2(x)
            return F.log_softmax(x, dim=1)

    return Net


HogwildNet = hogwild_net_class(OURS)  # (at module level: a spawned child unpickles the model by its class's name)
HogwildNet.__qualname__ = "HogwildNet"


def hogwild_train(rank, name, model, dataset, seed, epochs):
    """mnist_hogwild's train(): its own loader and optimizer on the shared model."""
    m = modules(name)
    torch, F = m.torch, m.F
    torch.manual_seed(seed + rank)
    train_loader = m.data.DataLoader(dataset, batch_size=8, shuffle=True, num_workers=0)
    optimizer = m.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    for epoch in range(1, epochs + 1):
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()


def hogwild(name, method, num_processes=2):
    m = modules(name)
    torch, F = m.torch, m.F
    mp = multiprocessing_of(m)
    torch.manual_seed(1)
    model = HogwildNet() if m is OURS else hogwild_net_class(m)()
    model.share_memory()  # gradients are allocated lazily, so they are not shared here
    X, y = images(n=24, side=10)
    dataset = m.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(y))
    context = mp.get_context(method)
    for rank in range(num_processes):  # (one after another, for numbers that repeat)
        p = context.Process(target=hogwild_train, args=(rank, name, model, dataset, 1, 2))
        p.start()
        p.join()
        assert p.exitcode == 0
    model.eval()
    with torch.no_grad():
        output = model(dataset.tensors[0])
        test_loss = F.nll_loss(output, dataset.tensors[1], reduction="sum").item()
        correct = output.max(1)[1].eq(dataset.tensors[1]).sum().item()
    return [p.detach().clone() for p in model.parameters()], test_loss, correct


@posix_only
@pytest.mark.skipif(not same_dropout_masks(), reason="PyTorch's dropout masks are not chainrule's here")
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_mnist_hogwild(method):
    ours = hogwild("autograd", method)
    # the same training in this process on an unshared model: what the children must have left in the parent's
    OURS.torch.manual_seed(1)
    model = HogwildNet()
    X, y = images(n=24, side=10)
    dataset = OURS.data.TensorDataset(OURS.torch.from_numpy(X), OURS.torch.from_numpy(y))
    for rank in range(2):
        hogwild_train(rank, "autograd", model, dataset, 1, 2)
    for got, expected in zip(ours[0], model.parameters()):
        np.testing.assert_allclose(got.numpy(), expected.detach().numpy(), rtol=1e-6, atol=1e-7)
    if pytorch() is not None:
        theirs = hogwild("torch", "fork")  # (a spawned PyTorch child takes seconds to import torch)
        for got, expected in zip(ours[0], theirs[0]):
            np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
        assert ours[1:] == pytest.approx(theirs[1:], rel=1e-4)


class ChainEnv:
    """A toy environment for A3C: walk a chain of 5 cells, reward 1 at the right end (the state: a one-hot of
    the cell, with NumPy noise from the worker's own seed)."""

    def __init__(self, seed):
        self.rng = np.random.RandomState(seed)
        self.length = 5

    def observation(self):
        obs = np.zeros(self.length, dtype=np.float32)
        obs[self.position] = 1
        return obs + 0.01 * self.rng.randn(self.length).astype(np.float32)

    def reset(self):
        self.position, self.t = 0, 0
        return self.observation()

    def step(self, action):
        self.position = max(0, min(self.length - 1, self.position + (1 if action == 1 else -1)))
        self.t += 1
        done = self.position == self.length - 1 or self.t >= 12
        return self.observation(), float(self.position == self.length - 1), done


def a3c_classes(m):
    """ikostrikov/pytorch-a3c's ActorCritic (an MLP here) and SharedAdam (its state in shared memory); the
    SharedAdam steps by its own code (custom_step) or by Adam's."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class ActorCritic(nn.Module):
        def __init__(self, num_inputs, num_actions):
            super(ActorCritic, self).__init__()
            self.fc = nn.Linear(num_inputs, 16)
            self.critic_linear = nn.Linear(16, 1)
            self.actor_linear = nn.Linear(16, num_actions)

        def forward(self, inputs):
            x = torch.tanh(self.fc(inputs))
            return self.critic_linear(x), self.actor_linear(x)

    class SharedAdam(optim.Adam):
        """Implements Adam algorithm with shared states."""

        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, custom_step=True):
            super(SharedAdam, self).__init__(params, lr, betas, eps, weight_decay)
            self.custom_step = custom_step
            for group in self.param_groups:
                for p in group['params']:
                    state = self.state[p]
                    state['step'] = torch.zeros(()) if custom_step else torch.tensor(0.0)
                    state['exp_avg'] = p.data.new().resize_as_(p.data).zero_()
                    state['exp_avg_sq'] = p.data.new().resize_as_(p.data).zero_()

        def share_memory(self):
            for group in self.param_groups:
                for p in group['params']:
                    state = self.state[p]
                    state['step'].share_memory_()
                    state['exp_avg'].share_memory_()
                    state['exp_avg_sq'].share_memory_()

        def step(self, closure=None):
            if not self.custom_step:
                return super(SharedAdam, self).step(closure)
            loss = None
            if closure is not None:
                loss = closure()
            for group in self.param_groups:
                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad.data
                    state = self.state[p]
                    exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
                    beta1, beta2 = group['betas']
                    state['step'] += 1
                    if group['weight_decay'] != 0:
                        grad = grad.add(p.data, alpha=group['weight_decay'])
                    # Decay the first and second moment running average coefficient
                    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    denom = exp_avg_sq.sqrt().add_(group['eps'])
                    bias_correction1 = 1 - beta1 ** state['step'].item()
                    bias_correction2 = 1 - beta2 ** state['step'].item()
                    step_size = group['lr'] * math.sqrt(bias_correction2) / bias_correction1
                    p.data.addcdiv_(exp_avg, denom, value=-step_size)
            return loss

    return ActorCritic, SharedAdam


ActorCritic, SharedAdam = a3c_classes(OURS)  # (module level: a spawned child unpickles them by name)
ActorCritic.__qualname__, SharedAdam.__qualname__ = "ActorCritic", "SharedAdam"


def ensure_shared_grads(model, shared_model):
    for param, shared_param in zip(model.parameters(), shared_model.parameters()):
        if shared_param.grad is not None:
            return
        shared_param._grad = param.grad


def a3c_train(rank, name, shared_model, counter, lock, optimizer, seed=1, episodes=3, num_steps=6):
    """ikostrikov/pytorch-a3c's train(): a local model synchronised with the shared one, n-step returns with
    GAE, and the local gradients handed to the shared model for the shared optimizer's step."""
    m = modules(name)
    torch, F = m.torch, m.F
    torch.manual_seed(seed + rank)
    env = ChainEnv(seed + rank)
    model = type(shared_model)(5, 2)
    model.train()
    state = torch.from_numpy(env.reset())
    done = True
    gamma, gae_lambda, entropy_coef, value_loss_coef, max_grad_norm = 0.99, 1.0, 0.01, 0.5, 50
    for episode in range(episodes):
        model.load_state_dict(shared_model.state_dict())  # Sync with the shared model
        values, log_probs, rewards, entropies = [], [], [], []
        for step in range(num_steps):
            value, logit = model(state.unsqueeze(0))
            prob = F.softmax(logit, dim=-1)
            log_prob = F.log_softmax(logit, dim=-1)
            entropy = -(log_prob * prob).sum(1, keepdim=True)
            entropies.append(entropy)
            action = prob.multinomial(num_samples=1).detach()
            log_prob = log_prob.gather(1, action)
            state, reward, done = env.step(action.numpy()[0, 0])
            with lock:
                counter.value += 1
            if done:
                state = env.reset()
            state = torch.from_numpy(state)
            values.append(value)
            log_probs.append(log_prob)
            rewards.append(reward)
            if done:
                break
        R = torch.zeros(1, 1)
        if not done:
            value, _ = model(state.unsqueeze(0))
            R = value.detach()
        values.append(R)
        policy_loss = 0
        value_loss = 0
        gae = torch.zeros(1, 1)
        for i in reversed(range(len(rewards))):
            R = gamma * R + rewards[i]
            advantage = R - values[i]
            value_loss = value_loss + 0.5 * advantage.pow(2)
            # Generalized Advantage Estimation
            delta_t = rewards[i] + gamma * values[i + 1] - values[i]
            gae = gae * gamma * gae_lambda + delta_t
            policy_loss = policy_loss - log_probs[i] * gae.detach() - entropy_coef * entropies[i]
        optimizer.zero_grad()
        (policy_loss + value_loss_coef * value_loss).backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        ensure_shared_grads(model, shared_model)
        optimizer.step()


def a3c(name, method, custom_step, num_processes=2):
    m = modules(name)
    torch = m.torch
    mp = multiprocessing_of(m)
    torch.manual_seed(1)
    classes = (ActorCritic, SharedAdam) if m is OURS else a3c_classes(m)
    shared_model = classes[0](5, 2)
    shared_model.share_memory()
    optimizer = classes[1](shared_model.parameters(), lr=0.01, custom_step=custom_step)
    optimizer.share_memory()
    context = mp.get_context(method)
    counter = context.Value('i', 0)
    lock = context.Lock()
    for rank in range(num_processes):
        p = context.Process(target=a3c_train, args=(rank, name, shared_model, counter, lock, optimizer))
        p.start()
        p.join()
        assert p.exitcode == 0
    state = [optimizer.state[p] for p in shared_model.parameters()]
    return ([p.detach().clone() for p in shared_model.parameters()], counter.value,
            [s['step'].item() for s in state], [s['exp_avg'].clone() for s in state],
            [s['exp_avg_sq'].clone() for s in state], [s['exp_avg'].is_shared() for s in state])


@posix_only  # (not spawn: a spawned worker gets the optimizer pickled, which keeps its defaults, state and groups only,
# as PyTorch's, so SharedAdam's own custom_step is not there, in either library: test_ported_optim_rest)
@pytest.mark.parametrize("method, custom_step", [("fork", True), ("fork", False)])
def test_a3c_with_a_shared_adam(method, custom_step):
    ours = a3c("autograd", method, custom_step)
    assert ours[2] == [6.0] * 6  # 2 workers x 3 episodes, counted in the shared step tensors
    assert ours[5] == [True] * 6
    assert all(np.abs(s).sum() > 0 for s in ours[3])
    if pytorch() is not None:
        theirs = a3c("torch", "fork", custom_step)
        assert ours[1:3] == theirs[1:3]
        for a, b in zip(ours[0] + ours[3] + ours[4], theirs[0] + theirs[3] + theirs[4]):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
