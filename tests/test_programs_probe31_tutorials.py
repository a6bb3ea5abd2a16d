# ruff: noqa: E501, E701, E702, E731, E741, B006, B007, B023, F841, UP008  (the programs are kept as the tutorials write them)
"""Programs from the official PyTorch tutorials (pytorch/tutorials) that earlier probes did not run as written,
each run on chainrule and, where installed, on PyTorch under the same seeds, comparing values and gradients.

custom_function_double_backward (``Exp`` saving its output, ``Cube`` with a differentiable backward,
``gradcheck``/``gradgradcheck``); recipes: warmstarting a model from another (``load_state_dict(strict=False)``
of a partial state dict), "what is a state_dict" (the optimizer's ``state_dict`` after SGD with momentum),
zeroing gradients (``zero_grad()`` leaving ``None``); the tuning guide's ``zero_grad(set_to_none=True)`` with
``torch.no_grad`` inference. Model ensembling (``func.stack_module_state``, a
``to("meta")`` base model, ``functional_call`` under ``vmap`` with ``in_dims``); per-sample gradients (a loop of
``autograd.grad`` against ``vmap(grad(...))``); the module hooks recipe (forward pre-hooks and forward hooks that
replace values, a full backward hook that rescales ``grad_input``, ``remove``); jacobians_hessians (``jacrev``/``jacfwd`` by
``argnums``, batched by ``vmap`` and by summing, ``hessian``, ``vjp`` under ``vmap``, ``jvp``); parametrizations
(a ``Symmetric`` parametrization's gradient to ``original``) and pruning (``random_unstructured``, ``l1_unstructured``
by count, ``global_unstructured``, ``remove``); forward_ad_usage (``make_dual``/``unpack_dual``, a module's parameters swapped for duals by
``delattr``/``setattr``, a custom Function's ``jvp``); neural_tangent_kernels (the Jacobian contraction by
``vmap(jacrev)`` over a parameter dict and ``einsum``); the reproducibility recipe's seeded ``DataLoader`` and the amp recipe on CPU (float16 autocast,
``GradScaler``). All agreed with PyTorch when written (session 31): no fix was needed."""

import numpy as np

from .pytorch_programs import run_both


def double_backward(m):
    torch = m.torch
    torch.manual_seed(0)
    class Exp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            result = torch.exp(x)
            ctx.save_for_backward(result)
            return result
        @staticmethod
        def backward(ctx, grad_out):
            result, = ctx.saved_tensors
            return grad_out * result
    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3
        @staticmethod
        def backward(ctx, grad_out):
            x, = ctx.saved_tensors
            return grad_out * 3 * x ** 2
    x = torch.tensor(0.5, requires_grad=True, dtype=torch.double)
    ok = torch.autograd.gradcheck(Exp.apply, x) and torch.autograd.gradgradcheck(Exp.apply, x)
    ok2 = torch.autograd.gradcheck(Cube.apply, x) and torch.autograd.gradgradcheck(Cube.apply, x)
    y = Cube.apply(x)
    g, = torch.autograd.grad(y, x, create_graph=True)
    gg, = torch.autograd.grad(g, x)
    return ok, ok2, y, g, gg


def warmstart(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.torch.optim
    torch.manual_seed(0)
    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)
        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = x.view(-1, 16 * 5 * 5)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            x = self.fc3(x)
            return x
    netA = Net()
    netB = Net()
    partial = {k: v for k, v in netA.state_dict().items() if not k.startswith("fc3")}
    result = netB.load_state_dict(partial, strict=False)
    missing = sorted(result.missing_keys)
    same = torch.equal(netA.conv1.weight, netB.conv1.weight)
    optimizer = optim.SGD(netB.parameters(), lr=0.001, momentum=0.9)
    x = torch.randn(4, 3, 32, 32); y = torch.tensor([0, 3, 1, 9])
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = nn.CrossEntropyLoss()(netB(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    sd = optimizer.state_dict()
    groups = [(g["lr"], g["momentum"], g["params"]) for g in sd["param_groups"]]
    momentum0 = sd["state"][0]["momentum_buffer"]
    netB.zero_grad()
    nones = all(p.grad is None for p in netB.parameters())
    with torch.no_grad():
        out = netB(x)
    return missing, losses, groups, momentum0, same, nones, out.requires_grad, out


def dqn(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.torch.optim
    torch.manual_seed(0)
    class DQN(nn.Module):
        def __init__(self, n_observations, n_actions):
            super(DQN, self).__init__()
            self.layer1 = nn.Linear(n_observations, 16)
            self.layer2 = nn.Linear(16, 16)
            self.layer3 = nn.Linear(16, n_actions)
        def forward(self, x):
            x = F.relu(self.layer1(x))
            x = F.relu(self.layer2(x))
            return self.layer3(x)
    policy_net = DQN(4, 2); target_net = DQN(4, 2)
    target_net.load_state_dict(policy_net.state_dict())
    optimizer = optim.AdamW(policy_net.parameters(), lr=1e-3, amsgrad=True)
    GAMMA, TAU, B = 0.99, 0.005, 8
    losses = []
    for step in range(4):
        state_batch = torch.randn(B, 4)
        action_batch = torch.randint(0, 2, (B, 1))
        reward_batch = torch.randn(B)
        non_final_mask = torch.tensor([i % 3 != 0 for i in range(B)], dtype=torch.bool)
        non_final_next_states = torch.cat([torch.randn(1, 4) for i in range(B) if i % 3 != 0])
        state_action_values = policy_net(state_batch).gather(1, action_batch)
        next_state_values = torch.zeros(B)
        with torch.no_grad():
            next_state_values[non_final_mask] = target_net(non_final_next_states).max(1).values
        expected_state_action_values = (next_state_values * GAMMA) + reward_batch
        criterion = nn.SmoothL1Loss()
        loss = criterion(state_action_values, expected_state_action_values.unsqueeze(1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(policy_net.parameters(), 100)
        optimizer.step()
        target_net_state_dict = target_net.state_dict()
        policy_net_state_dict = policy_net.state_dict()
        for key in policy_net_state_dict:
            target_net_state_dict[key] = policy_net_state_dict[key]*TAU + target_net_state_dict[key]*(1-TAU)
        target_net.load_state_dict(target_net_state_dict)
        losses.append(loss.item())
    with torch.no_grad():
        action = policy_net(torch.randn(1, 4)).max(1).indices.view(1, 1)
    return losses, action, target_net.layer3.weight


def fgsm(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    def fgsm_attack(image, epsilon, data_grad):
        sign_data_grad = data_grad.sign()
        perturbed_image = image + epsilon*sign_data_grad
        perturbed_image = torch.clamp(perturbed_image, 0, 1)
        return perturbed_image
    def denorm(batch, mean=[0.1307], std=[0.3081]):
        if isinstance(mean, list):
            mean = torch.tensor(mean)
        if isinstance(std, list):
            std = torch.tensor(std)
        return batch * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Dropout(0.25), nn.Flatten(), nn.Linear(4 * 6 * 6, 10), nn.LogSoftmax(dim=1))
    model.eval()
    data = torch.randn(3, 1, 8, 8); target = torch.tensor([1, 2, 3])
    data.requires_grad = True
    output = model(data)
    init_pred = output.max(1, keepdim=True)[1]
    loss = F.nll_loss(output, target)
    model.zero_grad()
    loss.backward()
    data_grad = data.grad.data
    data_denorm = denorm(data)
    perturbed_data = fgsm_attack(data_denorm, 0.1, data_grad)
    perturbed_data_normalized = (perturbed_data - 0.1307) / 0.3081
    output = model(perturbed_data_normalized)
    final_pred = output.max(1, keepdim=True)[1]
    adv_ex = perturbed_data.squeeze().detach().cpu().numpy()
    return init_pred, final_pred, data_grad, adv_ex


def crf_forward(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(1)
    START_TAG, STOP_TAG = "<START>", "<STOP>"
    tag_to_ix = {"B": 0, "I": 1, "O": 2, START_TAG: 3, STOP_TAG: 4}
    tagset_size = len(tag_to_ix)
    def argmax(vec):
        _, idx = torch.max(vec, 1)
        return idx.item()
    def log_sum_exp(vec):
        max_score = vec[0, argmax(vec)]
        max_score_broadcast = max_score.view(1, -1).expand(1, vec.size()[1])
        return max_score + torch.log(torch.sum(torch.exp(vec - max_score_broadcast)))
    transitions = nn.Parameter(torch.randn(tagset_size, tagset_size))
    transitions.data[tag_to_ix[START_TAG], :] = -10000
    transitions.data[:, tag_to_ix[STOP_TAG]] = -10000
    feats = torch.randn(5, tagset_size, requires_grad=True)
    init_alphas = torch.full((1, tagset_size), -10000.)
    init_alphas[0][tag_to_ix[START_TAG]] = 0.
    forward_var = init_alphas
    for feat in feats:
        alphas_t = []
        for next_tag in range(tagset_size):
            emit_score = feat[next_tag].view(1, -1).expand(1, tagset_size)
            trans_score = transitions[next_tag].view(1, -1)
            next_tag_var = forward_var + trans_score + emit_score
            alphas_t.append(log_sum_exp(next_tag_var).view(1))
        forward_var = torch.cat(alphas_t).view(1, -1)
    terminal_var = forward_var + transitions[tag_to_ix[STOP_TAG]]
    alpha = log_sum_exp(terminal_var)
    alpha.backward()
    return alpha, feats.grad, transitions.grad


def ensembling(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    class SimpleMLP(nn.Module):
        def __init__(self):
            super(SimpleMLP, self).__init__()
            self.fc1 = nn.Linear(12, 16)
            self.fc2 = nn.Linear(16, 8)
            self.fc3 = nn.Linear(8, 4)
        def forward(self, x):
            x = x.flatten(1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.fc2(x)
            x = F.relu(x)
            x = self.fc3(x)
            return x
    num_models = 3
    data = torch.randn(5, 6, 2, 6)
    minibatch = data[0]
    models = [SimpleMLP() for _ in range(num_models)]
    predictions2 = [model(minibatch) for model in models]
    params, buffers = torch.func.stack_module_state(models)
    import copy
    base_model = copy.deepcopy(models[0])
    base_model = base_model.to("meta")
    def fmodel(params, buffers, x):
        return torch.func.functional_call(base_model, (params, buffers), (x,))
    predictions2_vmap = torch.func.vmap(fmodel, in_dims=(0, 0, None))(params, buffers, minibatch)
    predictions1_vmap = torch.func.vmap(fmodel)(params, buffers, data[:num_models])
    return torch.stack(predictions2), predictions2_vmap, predictions1_vmap


def per_sample_grads(m):
    torch, nn, F = m.torch, m.nn, m.F
    functional_call, vmap, grad = torch.func.functional_call, torch.func.vmap, torch.func.grad
    torch.manual_seed(0)
    class SimpleCNN(nn.Module):
        def __init__(self):
            super(SimpleCNN, self).__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, 1)
            self.fc1 = nn.Linear(4 * 3 * 3, 5)
        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = torch.flatten(x, 1)
            x = self.fc1(x)
            output = F.log_softmax(x, dim=1)
            return output
    def loss_fn(predictions, targets):
        return F.nll_loss(predictions, targets)
    model = SimpleCNN()
    data = torch.randn(4, 1, 8, 8); targets = torch.randint(5, (4,))
    def compute_grad(sample, target):
        sample = sample.unsqueeze(0)
        target = target.unsqueeze(0)
        prediction = model(sample)
        loss = loss_fn(prediction, target)
        return torch.autograd.grad(loss, list(model.parameters()))
    def compute_sample_grads(data, targets):
        sample_grads = [compute_grad(data[i], targets[i]) for i in range(4)]
        sample_grads = zip(*sample_grads)
        sample_grads = [torch.stack(shards) for shards in sample_grads]
        return sample_grads
    per_sample_grads = compute_sample_grads(data, targets)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    def compute_loss(params, buffers, sample, target):
        batch = sample.unsqueeze(0)
        targets = target.unsqueeze(0)
        predictions = functional_call(model, (params, buffers), (batch,))
        loss = loss_fn(predictions, targets)
        return loss
    ft_compute_grad = grad(compute_loss)
    ft_compute_sample_grad = vmap(ft_compute_grad, in_dims=(None, None, 0, 0))
    ft_per_sample_grads = ft_compute_sample_grad(params, buffers, data, targets)
    return per_sample_grads, [ft_per_sample_grads[k] for k in params]


def module_hooks(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    seen = []
    def forward_pre_hook(module, args):
        return (args[0] * 2,)
    def forward_hook(module, args, output):
        seen.append(output.detach().clone())
        return output + 1
    def backward_hook(module, grad_input, grad_output):
        seen.append(grad_output[0].detach().clone())
        return (grad_input[0] * 0.5,)
    h1 = model[0].register_forward_pre_hook(forward_pre_hook)
    h2 = model[1].register_forward_hook(forward_hook)
    h3 = model[2].register_full_backward_hook(backward_hook)
    x = torch.randn(5, 3, requires_grad=True)
    out = model(x).sum()
    out.backward()
    g = x.grad.clone(); w = model[0].weight.grad.clone()
    for h in (h1, h2, h3):
        h.remove()
    x.grad = None
    model(x).sum().backward()
    return out, g, w, x.grad, seen


def jacobians_hessians(m):
    torch, F = m.torch, m.F
    jacrev, jacfwd, vmap, hessian, vjp, jvp = (torch.func.jacrev, torch.func.jacfwd, torch.func.vmap,
                                              torch.func.hessian, torch.func.vjp, torch.func.jvp)
    torch.manual_seed(0)
    def predict(weight, bias, x):
        return F.linear(x, weight, bias).tanh()
    D = 4
    weight = torch.randn(D, D)
    bias = torch.randn(D)
    x = torch.randn(D)
    jacobian = jacrev(predict, argnums=2)(weight, bias, x)
    jac_fwd = jacfwd(predict, argnums=2)(weight, bias, x)
    ft_jacobian, ft_bias = jacrev(predict, argnums=(0, 1))(weight, bias, x)
    batch_size = 3
    xb = torch.randn(batch_size, D)
    compute_batch_jacobian = vmap(jacrev(predict, argnums=2), in_dims=(None, None, 0))
    batch_jacobian0 = compute_batch_jacobian(weight, bias, xb)
    def predict_with_output_summed(weight, bias, x):
        return predict(weight, bias, x).sum(0)
    batch_jacobian1 = jacrev(predict_with_output_summed, argnums=2)(weight, bias, xb).movedim(1, 0)
    hess_api = hessian(predict, argnums=2)(weight, bias, x)
    hess_fwdrev = jacfwd(jacrev(predict, argnums=2), argnums=2)(weight, bias, x)
    unit_vectors = torch.eye(D)
    _, vjp_fn = vjp(partial_x(predict, weight, bias), x)
    ft_jacobian_vjp, = vmap(vjp_fn)(unit_vectors)
    _, jvp_out = jvp(partial_x(predict, weight, bias), (x,), (unit_vectors[0],))
    return jacobian, jac_fwd, ft_jacobian, ft_bias, batch_jacobian0, batch_jacobian1, hess_api, hess_fwdrev, ft_jacobian_vjp, jvp_out


def partial_x(f, weight, bias):
    return lambda x: f(weight, bias, x)


def parametrize_and_prune(m):
    torch, nn = m.torch, m.nn
    import importlib
    parametrize = importlib.import_module(nn.__name__ + ".utils.parametrize")
    prune = importlib.import_module(nn.__name__ + ".utils.prune")
    torch.manual_seed(0)
    class Symmetric(nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).transpose(-1, -2)
    layer = nn.Linear(3, 3)
    parametrize.register_parametrization(layer, "weight", Symmetric())
    A = layer.weight
    x = torch.randn(2, 3)
    layer(x).pow(2).sum().backward()
    orig_grad = layer.parametrizations.weight.original.grad
    class LeNet(nn.Module):
        def __init__(self):
            super(LeNet, self).__init__()
            self.conv1 = nn.Conv2d(1, 6, 3)
            self.fc1 = nn.Linear(6 * 3 * 3, 10)
        def forward(self, x):
            x = m.F.max_pool2d(m.F.relu(self.conv1(x)), (2, 2))
            x = x.view(-1, int(x.nelement() / x.shape[0]))
            return self.fc1(x)
    model = LeNet()
    module = model.conv1
    prune.random_unstructured(module, name="weight", amount=0.3)
    prune.l1_unstructured(module, name="bias", amount=3)
    names = sorted(n for n, _ in module.named_buffers())
    bias_mask = module.bias_mask
    parameters_to_prune = ((model.conv1, "weight"), (model.fc1, "weight"))
    prune.global_unstructured(parameters_to_prune, pruning_method=prune.L1Unstructured, amount=0.2)
    sparsity = float(torch.sum(model.fc1.weight == 0)) / model.fc1.weight.nelement()
    total = float(torch.sum(model.conv1.weight == 0) + torch.sum(model.fc1.weight == 0))
    prune.remove(module, "weight")
    out = model(torch.randn(2, 1, 8, 8))
    return A, orig_grad, names, bias_mask, sparsity, total, sorted(n for n, _ in module.named_parameters()), out


def forward_ad(m):
    torch, nn, F = m.torch, m.nn, m.F
    fwAD = torch.autograd.forward_ad
    torch.manual_seed(0)
    primal = torch.randn(10, 10)
    tangent = torch.randn(10, 10)
    def fn(x, y):
        return x ** 2 + y ** 2
    plain_tensor = torch.randn(10, 10)
    with fwAD.dual_level():
        dual_input = fwAD.make_dual(primal, tangent)
        dual_output = fn(dual_input, plain_tensor)
        jvp = fwAD.unpack_dual(dual_output).tangent
    model = nn.Linear(5, 5)
    input = torch.randn(16, 5)
    params = {name: p for name, p in model.named_parameters()}
    tangents = {name: torch.rand_like(p) for name, p in params.items()}
    with fwAD.dual_level():
        for name, p in params.items():
            delattr(model, name)
            setattr(model, name, fwAD.make_dual(p, tangents[name]))
        out = model(input)
        jvp_module = fwAD.unpack_dual(out).tangent
    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, foo):
            result = torch.exp(foo)
            ctx.result = result
            return result
        @staticmethod
        def jvp(ctx, gI):
            gO = gI * ctx.result
            del ctx.result
            return gO
    fn2 = Fn.apply
    primal2 = torch.randn(10, 10, dtype=torch.double, requires_grad=True)
    tangent2 = torch.randn(10, 10)
    with fwAD.dual_level():
        dual_input = fwAD.make_dual(primal2, tangent2)
        dual_output = fn2(dual_input)
        jvp_fn = fwAD.unpack_dual(dual_output).tangent
    return jvp, jvp_module, jvp_fn, primal, tangent, primal2, tangent2


def ntk(m):
    torch, nn = m.torch, m.nn
    jacrev, vmap, functional_call = torch.func.jacrev, torch.func.vmap, torch.func.functional_call
    torch.manual_seed(0)
    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, (3, 3))
            self.fc = nn.Linear(4, 3)
        def forward(self, x):
            x = self.conv1(x)
            x = x.relu()
            x = x.mean(dim=(-2, -1))
            return self.fc(x)
    net = CNN()
    x_train = torch.randn(4, 3, 6, 6)
    x_test = torch.randn(2, 3, 6, 6)
    params = {k: v.detach() for k, v in net.named_parameters()}
    def fnet_single(params, x):
        return functional_call(net, params, (x.unsqueeze(0),)).squeeze(0)
    def empirical_ntk_jacobian_contraction(fnet_single, params, x1, x2):
        jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x1)
        jac1 = jac1.values()
        jac1 = [j.flatten(2) for j in jac1]
        jac2 = vmap(jacrev(fnet_single), (None, 0))(params, x2)
        jac2 = jac2.values()
        jac2 = [j.flatten(2) for j in jac2]
        result = torch.stack([torch.einsum("Naf,Mbf->NMab", j1, j2) for j1, j2 in zip(jac1, jac2)])
        return result.sum(0)
    result = empirical_ntk_jacobian_contraction(fnet_single, params, x_train, x_test)
    self_ntk = empirical_ntk_jacobian_contraction(fnet_single, params, x_train, x_train)
    return result, self_ntk


def reproducibility_and_tuning(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    g = torch.Generator()
    g.manual_seed(0)
    def seed_worker(worker_id): pass
    dataset = torch.utils.data.TensorDataset(torch.arange(10.))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, worker_init_fn=seed_worker, generator=g)
    batches = [b[0] for b in loader]
    net = nn.Linear(4, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    with torch.autocast(device_type="cpu", dtype=torch.float16):
        out = net(torch.randn(3, 4))
        loss = out.float().pow(2).mean()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    torch.use_deterministic_algorithms(False)
    return batches, str(out.dtype).split(".")[-1], scaler.get_scale(), net.weight.grad is None, net.weight


def test_custom_function_double_backward():
    ok, ok2, y, g, gg = run_both(double_backward)[0]
    assert ok and ok2
    np.testing.assert_allclose([y, g, gg], [0.125, 0.75, 3.0])


def test_warmstarting_and_state_dict_recipes():
    missing, losses, groups, momentum0, same, nones, requires_grad, out = run_both(warmstart, rtol=1e-4, atol=1e-5)[0]
    assert missing == ["fc3.bias", "fc3.weight"] and same and nones and not requires_grad
    assert groups[0][:2] == (0.001, 0.9) and groups[0][2] == list(range(10)) and momentum0.shape == (6, 3, 5, 5)
    assert out.shape == (4, 10) and losses[-1] < losses[0]


def test_dqn_optimize_model():
    losses, action, w = run_both(dqn, rtol=1e-4, atol=1e-5)[0]
    assert len(losses) == 4 and action.shape == (1, 1) and w.shape == (2, 16)


def test_fgsm_attack():
    init_pred, final_pred, data_grad, adv_ex = run_both(fgsm, rtol=1e-4, atol=1e-5)[0]
    assert adv_ex.shape == (3, 8, 8) and adv_ex.min() >= 0 and adv_ex.max() <= 1 and init_pred.shape == (3, 1)


def test_bilstm_crf_forward_algorithm():
    alpha, feats_grad, transitions_grad = run_both(crf_forward, rtol=1e-4, atol=1e-5)[0]
    np.testing.assert_allclose(feats_grad.sum(1), 1.0, rtol=1e-5)  # the gradient of log Z is the tag marginals


def test_model_ensembling_with_vmap():
    loop, vmapped, different = run_both(ensembling, rtol=1e-5, atol=1e-6)[0]
    np.testing.assert_allclose(loop, vmapped, rtol=1e-5, atol=1e-6)
    assert different.shape == (3, 6, 4)


def test_per_sample_grads():
    loop, vmapped = run_both(per_sample_grads, rtol=1e-4, atol=1e-6)[0]
    for a, b in zip(loop, vmapped):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert loop[0].shape == (4, 4, 1, 3, 3)


def test_module_hooks_recipe():
    out, g, w, g_plain, seen = run_both(module_hooks, rtol=1e-5, atol=1e-6)[0]
    assert len(seen) == 2 and seen[1].shape == (5, 2) and not np.allclose(g, g_plain)


def test_jacobians_and_hessians():
    jac, jac_fwd, wj, bj, b0, b1, h, h2, jv, jvp_out = run_both(jacobians_hessians, rtol=1e-4, atol=1e-6)[0]
    np.testing.assert_allclose(jac, jac_fwd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b0, b1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jv, jac, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jvp_out, jac[:, 0], rtol=1e-5, atol=1e-6)
    assert wj.shape == (4, 4, 4) and bj.shape == (4, 4) and h.shape == (4, 4, 4)


def test_parametrizations_and_pruning():
    A, orig_grad, names, bias_mask, sparsity, total, params, out = run_both(parametrize_and_prune, rtol=1e-5, atol=1e-6)[0]
    np.testing.assert_allclose(A, A.T)
    assert names == ["bias_mask", "weight_mask"] and bias_mask.sum() == 3 and out.shape == (2, 10)
    assert params == ["bias_orig", "weight"] and total >= round(0.2 * (54 + 540))  # the earlier random pruning adds zeros


def test_forward_mode_ad():
    jvp, jvp_module, jvp_fn, primal, tangent, primal2, tangent2 = run_both(forward_ad, rtol=1e-5, atol=1e-6)[0]
    np.testing.assert_allclose(jvp, 2 * primal * tangent, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jvp_fn, tangent2 * np.exp(primal2), rtol=1e-6)
    assert jvp_module.shape == (16, 5)


def test_neural_tangent_kernel():
    result, self_ntk = run_both(ntk, rtol=1e-4, atol=1e-6)[0]
    assert result.shape == (4, 2, 3, 3)
    gram = self_ntk.transpose(0, 2, 1, 3).reshape(12, 12)
    np.testing.assert_allclose(gram, gram.T, rtol=1e-5, atol=1e-6)
    assert np.linalg.eigvalsh(gram.astype(np.float64)).min() > -1e-4  # a kernel is positive semi-definite


def test_reproducibility_and_amp_recipes():
    batches, dtype, scale, none, weight = run_both(reproducibility_and_tuning, rtol=1e-3, atol=1e-4)[0]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10)) and dtype == "float16" and none
