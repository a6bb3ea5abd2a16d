# ruff: noqa: B007, E501, UP008, UP030, UP032  (the programs are kept as their authors wrote them)
"""Reinforcement-learning programs, run as tests/probe18_rl_common.py says: second-order policy updates: ACKTR's
K-FAC optimiser (biases split into modules, forward pre-hooks and both kinds of backward hooks, ``unfold`` patches,
``linalg.eigh``, an ``Optimizer`` subclass with empty defaults wrapping SGD); MAML-RL (functional ``F.linear`` over
an OrderedDict of adapted parameters, TRPO's Hessian-vector products through the adaptation, conjugate gradient, a
line search by ``vector_to_parameters``)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# ikostrikov/pytorch-a2c-ppo-acktr-gail: ACKTR's K-FAC optimiser (biases split into AddBias modules, forward
# pre-hooks and backward hooks collecting Kronecker factors, eigendecompositions, a KL-clipped SGD step), and
# PPO's minibatches from BatchSampler(SubsetRandomSampler)
# ----------------------------------------------------------------------------------------------


def kfac_module(torch, nn, optim, F, legacy_hooks=False):
    class AddBias(nn.Module):
        def __init__(self, bias):
            super(AddBias, self).__init__()
            self._bias = nn.Parameter(bias.unsqueeze(1))

        def forward(self, x):
            if x.dim() == 2:
                bias = self._bias.t().view(1, -1)
            else:
                bias = self._bias.t().view(1, -1, 1, 1)
            return x + bias

    def _extract_patches(x, kernel_size, stride, padding):
        if padding[0] + padding[1] > 0:
            x = F.pad(x, (padding[1], padding[1], padding[0], padding[0])).data  # Actually check dims
        x = x.unfold(2, kernel_size[0], stride[0])
        x = x.unfold(3, kernel_size[1], stride[1])
        x = x.transpose_(1, 2).transpose_(2, 3).contiguous()
        x = x.view(x.size(0), x.size(1), x.size(2), x.size(3) * x.size(4) * x.size(5))
        return x

    def compute_cov_a(a, classname, layer_info, fast_cnn):
        batch_size = a.size(0)
        if classname == 'Conv2d':
            if fast_cnn:
                a = _extract_patches(a, *layer_info)
                a = a.view(a.size(0), -1, a.size(-1))
                a = a.mean(1)
            else:
                a = _extract_patches(a, *layer_info)
                a = a.view(-1, a.size(-1)).div_(a.size(1)).div_(a.size(2))
        elif classname == 'AddBias':
            is_cuda = a.is_cuda
            a = torch.ones(a.size(0), 1)
            if is_cuda:
                a = a.cuda()
        return a.t() @ (a / batch_size)

    def compute_cov_g(g, classname, layer_info, fast_cnn):
        batch_size = g.size(0)
        if classname == 'Conv2d':
            if fast_cnn:
                g = g.view(g.size(0), g.size(1), -1)
                g = g.sum(-1)
            else:
                g = g.transpose(1, 2).transpose(2, 3).contiguous()
                g = g.view(-1, g.size(-1)).mul_(g.size(1)).mul_(g.size(2))
        elif classname == 'AddBias':
            g = g.view(g.size(0), g.size(1), -1)
            g = g.sum(-1)
        g_ = g * batch_size
        return g_.t() @ (g_ / g.size(0))

    def update_running_stat(aa, m_aa, momentum):
        # Do the trick to keep aa unchanged and not create any additional tensors
        m_aa *= momentum / (1 - momentum)
        m_aa += aa
        m_aa *= (1 - momentum)

    class SplitBias(nn.Module):
        def __init__(self, module):
            super(SplitBias, self).__init__()
            self.module = module
            self.add_bias = AddBias(module.bias.data)
            self.module.bias = None

        def forward(self, input):
            x = self.module(input)
            x = self.add_bias(x)
            return x

    class KFACOptimizer(optim.Optimizer):
        def __init__(self, model, lr=0.25, momentum=0.9, stat_decay=0.99, kl_clip=0.001, damping=1e-2,
                     weight_decay=0, fast_cnn=False, Ts=1, Tf=10):
            defaults = dict()

            def split_bias(module):
                for mname, child in module.named_children():
                    if hasattr(child, 'bias') and child.bias is not None:
                        module._modules[mname] = SplitBias(child)
                    else:
                        split_bias(child)

            split_bias(model)
            super(KFACOptimizer, self).__init__(model.parameters(), defaults)
            self.known_modules = {'Linear', 'Conv2d', 'AddBias'}
            self.modules = []
            self.grad_outputs = {}
            self.model = model
            self._prepare_model()
            self.steps = 0
            self.m_aa, self.m_gg = {}, {}
            self.Q_a, self.Q_g = {}, {}
            self.d_a, self.d_g = {}, {}
            self.momentum = momentum
            self.stat_decay = stat_decay
            self.lr = lr
            self.kl_clip = kl_clip
            self.damping = damping
            self.weight_decay = weight_decay
            self.fast_cnn = fast_cnn
            self.Ts = Ts
            self.Tf = Tf
            self.optim = optim.SGD(model.parameters(), lr=self.lr * (1 - self.momentum), momentum=self.momentum)

        def _save_input(self, module, input):
            if torch.is_grad_enabled() and self.steps % self.Ts == 0:
                classname = module.__class__.__name__
                layer_info = None
                if classname == 'Conv2d':
                    layer_info = (module.kernel_size, module.stride, module.padding)
                aa = compute_cov_a(input[0].data, classname, layer_info, self.fast_cnn)
                # Initialize buffers
                if self.steps == 0:
                    self.m_aa[module] = aa.clone()
                update_running_stat(aa, self.m_aa[module], self.stat_decay)

        def _save_grad_output(self, module, grad_input, grad_output):
            # Accumulate statistics for Fisher matrices
            if self.acc_stats:
                classname = module.__class__.__name__
                layer_info = None
                if classname == 'Conv2d':
                    layer_info = (module.kernel_size, module.stride, module.padding)
                gg = compute_cov_g(grad_output[0].data, classname, layer_info, self.fast_cnn)
                # Initialize buffers
                if self.steps == 0:
                    self.m_gg[module] = gg.clone()
                update_running_stat(gg, self.m_gg[module], self.stat_decay)

        def _prepare_model(self):
            for module in self.model.modules():
                classname = module.__class__.__name__
                if classname in self.known_modules:
                    assert not ((classname in ['Linear', 'Conv2d']) and module.bias is not None), \
                        "You must have a bias as a separate layer"
                    self.modules.append(module)
                    module.register_forward_pre_hook(self._save_input)
                    if legacy_hooks:  # the repository's own call (deprecated since)
                        module.register_backward_hook(self._save_grad_output)
                    else:
                        module.register_full_backward_hook(self._save_grad_output)

        def step(self):
            updates = {}
            for i, m in enumerate(self.modules):
                assert len(list(m.parameters())) == 1, "Can handle only one parameter at the moment"
                classname = m.__class__.__name__
                p = next(m.parameters())
                la = self.damping + self.weight_decay
                if self.steps % self.Tf == 0:
                    self.d_a[m], self.Q_a[m] = torch.linalg.eigh(self.m_aa[m], UPLO='U')
                    self.d_g[m], self.Q_g[m] = torch.linalg.eigh(self.m_gg[m], UPLO='U')
                    self.d_a[m].mul_((self.d_a[m] > 1e-6).float())
                    self.d_g[m].mul_((self.d_g[m] > 1e-6).float())
                if classname == 'Conv2d':
                    p_grad_mat = p.grad.data.view(p.grad.data.size(0), -1)
                else:
                    p_grad_mat = p.grad.data
                v1 = self.Q_g[m].t() @ p_grad_mat @ self.Q_a[m]
                v2 = v1 / (self.d_g[m].unsqueeze(1) * self.d_a[m].unsqueeze(0) + la)
                v = self.Q_g[m] @ v2 @ self.Q_a[m].t()
                v = v.view(p.grad.data.size())
                updates[p] = v
            vg_sum = 0
            for p in self.model.parameters():
                v = updates[p]
                vg_sum += (v * p.grad.data * self.lr * self.lr).sum()
            nu = min(1, math.sqrt(self.kl_clip / vg_sum))
            for p in self.model.parameters():
                v = updates[p]
                p.grad.data.copy_(v)
                p.grad.data.mul_(nu)
            self.optim.step()
            self.steps += 1

    return KFACOptimizer


def make_acktr_policy(m):
    nn = m.nn

    class Policy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU())
            self.fc = nn.Sequential(nn.Linear(4 * 3 * 3, 16), nn.Tanh())
            self.critic_linear = nn.Linear(16, 1)
            self.dist_linear = nn.Linear(16, 3)

        def forward(self, x):
            x = self.conv(x).flatten(1)
            x = self.fc(x)
            return self.critic_linear(x), self.dist_linear(x)

    return Policy()


def acktr(m, weights, updates=3, value_loss_coef=0.5, entropy_coef=0.01, fast_cnn=False, legacy_hooks=False):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    KFACOptimizer = kfac_module(torch, nn, m.optim, F, legacy_hooks)
    actor_critic = load(m, make_acktr_policy(m), weights)
    optimizer = KFACOptimizer(actor_critic, fast_cnn=fast_cnn, Tf=2)
    log = []
    for step in range(updates):
        rng = np.random.default_rng(400 + step)
        obs = torch.from_numpy(rng.standard_normal((10, 2, 6, 6)).astype(np.float32))
        actions = torch.from_numpy(rng.integers(0, 3, (10, 1)))
        returns = torch.from_numpy(rng.standard_normal((10, 1)).astype(np.float32))
        values, logits = actor_critic(obs)
        dist = torch.distributions.Categorical(logits=logits)
        action_log_probs = dist.log_prob(actions.squeeze(-1)).unsqueeze(-1)
        dist_entropy = dist.entropy().mean()
        advantages = returns - values
        value_loss = advantages.pow(2).mean()
        action_loss = -(advantages.detach() * action_log_probs).mean()
        if optimizer.steps % optimizer.Ts == 0:
            # Compute fisher, see Martens 2014
            actor_critic.zero_grad()
            pg_fisher_loss = -action_log_probs.mean()
            value_noise = torch.randn(values.size())
            sample_values = values + value_noise
            vf_fisher_loss = -(values - sample_values.detach()).pow(2).mean()
            fisher_loss = pg_fisher_loss + vf_fisher_loss
            optimizer.acc_stats = True
            fisher_loss.backward(retain_graph=True)
            optimizer.acc_stats = False
        optimizer.zero_grad()
        (value_loss * value_loss_coef + action_loss - dist_entropy * entropy_coef).backward()
        optimizer.step()
        log.append([value_loss, action_loss, dist_entropy])
    factors = [(optimizer.m_aa[mod], optimizer.m_gg[mod]) for mod in optimizer.modules]
    return log, factors, actor_critic.state_dict()


@pytest.mark.filterwarnings("ignore:Full backward hook is firing", "ignore:Using a non-full backward hook", "ignore:register_backward_hook is deprecated")
@pytest.mark.parametrize("fast_cnn, legacy_hooks", [(False, False), (True, False), (False, True)])
def test_acktr_kfac(fast_cnn, legacy_hooks):
    ours, _ = run_both(acktr, weights_of(make_acktr_policy), rtol=1e-4, atol=1e-6, fast_cnn=fast_cnn,
                       legacy_hooks=legacy_hooks)
    assert len(ours[1]) == 8  # conv, its bias, fc, its bias, and both heads with theirs
    keys = set(ours[2])
    assert "conv.0.add_bias._bias" in keys and "conv.0.module.weight" in keys


# ----------------------------------------------------------------------------------------------
# tristandeleu/pytorch-maml-rl: a normal MLP policy called with an OrderedDict of adapted parameters, the inner
# update by autograd.grad(create_graph=True), and the outer TRPO step (Hessian-vector products of the KL through
# the adaptation, conjugate gradient, a backtracking line search by vector_to_parameters)
# ----------------------------------------------------------------------------------------------


def make_maml_policy(m, input_size=4, output_size=2, hidden_sizes=(16,), min_log_std=1e-6):
    torch, nn, F = m.torch, m.nn, m.F
    from collections import OrderedDict
    Independent, Normal = torch.distributions.Independent, torch.distributions.Normal

    class NormalMLPPolicy(nn.Module):
        def __init__(self):
            super(NormalMLPPolicy, self).__init__()
            self.input_size, self.output_size = input_size, output_size
            self.hidden_sizes = hidden_sizes
            self.nonlinearity = torch.tanh
            self.min_log_std = math.log(min_log_std)
            self.num_layers = len(hidden_sizes) + 1
            layer_sizes = (input_size,) + hidden_sizes
            for i in range(1, self.num_layers):
                self.add_module('layer{0}'.format(i), nn.Linear(layer_sizes[i - 1], layer_sizes[i]))
            self.mu = nn.Linear(layer_sizes[-1], output_size)
            self.sigma = nn.Parameter(torch.Tensor(output_size))
            self.sigma.data.fill_(math.log(1.0))

        def update_params(self, loss, params=None, step_size=0.5, first_order=False):
            if params is None:
                params = OrderedDict(self.named_parameters())
            grads = torch.autograd.grad(loss, params.values(), create_graph=not first_order)
            updated_params = OrderedDict()
            for (name, param), grad in zip(params.items(), grads):
                updated_params[name] = param - step_size * grad
            return updated_params

        def forward(self, input, params=None):
            if params is None:
                params = OrderedDict(self.named_parameters())
            output = input
            for i in range(1, self.num_layers):
                output = F.linear(output, weight=params['layer{0}.weight'.format(i)], bias=params['layer{0}.bias'.format(i)])
                output = self.nonlinearity(output)
            mu = F.linear(output, weight=params['mu.weight'], bias=params['mu.bias'])
            scale = torch.exp(torch.clamp(params['sigma'], min=self.min_log_std))
            return Independent(Normal(loc=mu, scale=scale), 1)

    return NormalMLPPolicy()


def maml_trpo(m, weights, num_tasks=2, max_kl=1e-2, cg_iters=5, cg_damping=1e-2, ls_max_steps=5, ls_backtrack_ratio=0.5):
    torch = m.torch
    parameters_to_vector, vector_to_parameters = torch.nn.utils.parameters_to_vector, torch.nn.utils.vector_to_parameters
    kl_divergence = torch.distributions.kl.kl_divergence
    Independent, Normal = torch.distributions.Independent, torch.distributions.Normal
    policy = load(m, make_maml_policy(m), weights)

    def weighted_mean(tensor, lengths=None):
        if lengths is None:
            return torch.mean(tensor)
        for i, length in enumerate(lengths):
            tensor[length:, i].fill_(0.)
        extra_dims = (1,) * (tensor.dim() - 2)
        lengths = torch.as_tensor(lengths, dtype=torch.float32)
        out = torch.sum(tensor, dim=0)
        out.div_(lengths.view(-1, *extra_dims))
        return out

    def detach_distribution(pi):
        if isinstance(pi, Independent):
            distribution = Independent(detach_distribution(pi.base_dist), pi.reinterpreted_batch_ndims)
        elif isinstance(pi, Normal):
            distribution = Normal(loc=pi.loc.detach(), scale=pi.scale.detach())
        else:
            raise NotImplementedError('Only `Categorical`, `Independent` and `Normal` policies are valid policies.')
        return distribution

    def conjugate_gradient(f_Ax, b, cg_iters=10, residual_tol=1e-10):
        p = b.clone().detach()
        r = b.clone().detach()
        x = torch.zeros_like(b).float()
        rdotr = torch.dot(r, r)
        for i in range(cg_iters):
            z = f_Ax(p).detach()
            v = rdotr / torch.dot(p, z)
            x += v * p
            r -= v * z
            newrdotr = torch.dot(r, r)
            mu = newrdotr / rdotr
            p = r + mu * p
            rdotr = newrdotr
            if rdotr.item() < residual_tol:
                break
        return x.detach()

    def episodes(task, kind):
        rng = np.random.default_rng(1000 + 10 * task + kind)
        T, B = 6, 3
        observations = torch.from_numpy(rng.standard_normal((T, B, 4)).astype(np.float32))
        actions = torch.from_numpy(rng.standard_normal((T, B, 2)).astype(np.float32))
        advantages = torch.from_numpy(rng.standard_normal((T, B)).astype(np.float32))
        lengths = [6, 4, 5]
        return observations, actions, advantages, lengths

    def reinforce_loss(params, obs, act, adv, lengths):
        pi = policy(obs.view((-1, *obs.shape[2:])), params=params)
        log_probs = pi.log_prob(act.view((-1, *act.shape[2:])))
        log_probs = log_probs.view(len(obs), obs.shape[1])
        losses = -weighted_mean(log_probs * adv, lengths=lengths)
        return losses.mean()

    def adapt(task):
        params = None
        inner_loss = reinforce_loss(params, *episodes(task, 0))
        params = policy.update_params(inner_loss, params=params, step_size=0.1, first_order=False)
        return params

    def surrogate_loss(task, params, old_pi=None):
        obs, act, adv, lengths = episodes(task, 1)
        pi = policy(obs, params=params)
        if old_pi is None:
            old_pi = detach_distribution(pi)
        log_ratio = pi.log_prob(act) - old_pi.log_prob(act)
        ratio = torch.exp(log_ratio)
        losses = -weighted_mean(ratio * adv, lengths=lengths)
        mask = torch.as_tensor(np.array([[t < l for l in lengths] for t in range(6)]), dtype=torch.float32)
        kls = (kl_divergence(pi, old_pi) * mask).sum(0) / mask.sum(0)
        return losses.mean(), kls.mean(), old_pi

    def hessian_vector_product(kl, damping=1e-2):
        grads = torch.autograd.grad(kl, policy.parameters(), create_graph=True)
        flat_grad_kl = parameters_to_vector(grads)

        def _product(vector, retain_graph=True):
            grad_kl_v = torch.dot(flat_grad_kl, vector)
            grad2s = torch.autograd.grad(grad_kl_v, policy.parameters(), retain_graph=retain_graph)
            flat_grad2_kl = parameters_to_vector(grad2s)
            return flat_grad2_kl + damping * vector
        return _product

    adapted = [adapt(task) for task in range(num_tasks)]
    results = [surrogate_loss(task, params) for task, params in enumerate(adapted)]
    old_losses = [r[0] for r in results]
    old_kls = [r[1] for r in results]
    old_pis = [r[2] for r in results]
    old_loss = sum(old_losses) / num_tasks
    grads = torch.autograd.grad(old_loss, policy.parameters(), retain_graph=True)
    grads = parameters_to_vector(grads)
    old_kl = sum(old_kls) / num_tasks
    hessian_vector_product_ = hessian_vector_product(old_kl, damping=cg_damping)
    stepdir = conjugate_gradient(hessian_vector_product_, grads, cg_iters=cg_iters)
    shs = 0.5 * torch.dot(stepdir, hessian_vector_product_(stepdir, retain_graph=False))
    lagrange_multiplier = torch.sqrt(shs / max_kl)
    step = stepdir / lagrange_multiplier
    old_params = parameters_to_vector(policy.parameters())
    step_size = 1.0
    accepted = None
    for s in range(ls_max_steps):
        vector_to_parameters(old_params - step_size * step, policy.parameters())
        new = [surrogate_loss(task, adapt(task), old_pi=old_pis[task]) for task in range(num_tasks)]
        improve = (sum(r[0] for r in new) / num_tasks) - old_loss
        kl = sum(r[1] for r in new) / num_tasks
        if (improve.item() < 0.0) and (kl.item() < max_kl):
            accepted = s
            break
        step_size *= ls_backtrack_ratio
    else:
        vector_to_parameters(old_params, policy.parameters())
    return old_loss, grads, stepdir, shs, accepted, policy.state_dict()


def test_maml_rl_trpo():
    ours, _ = run_both(maml_trpo, weights_of(make_maml_policy), rtol=1e-3, atol=1e-5)
    assert ours[4] is not None
