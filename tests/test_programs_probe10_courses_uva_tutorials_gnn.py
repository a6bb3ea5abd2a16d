# ruff: noqa: B006, B007, E501, E731, F841  (the programs are kept as their authors wrote them)
"""Programs students write in deep-learning courses (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and data, comparing values and gradients. UvA DL notebooks: activation functions as
modules and dead neurons, an optimizer template keyed by parameters, a custom ``_LRScheduler``, SimCLR's InfoNCE with
ranking metrics; a GCN layer by adjacency matmul and a GAT layer."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# UvA DL tutorial 7: a GCN layer by adjacency matmul and a multi-head GAT layer
# ----------------------------------------------------------------------------------------------


def make_gnn(m):
    torch, nn, F = m.torch, m.nn, m.F

    class GCNLayer(nn.Module):
        def __init__(self, c_in, c_out):
            super().__init__()
            self.projection = nn.Linear(c_in, c_out)

        def forward(self, node_feats, adj_matrix):
            num_neighbours = adj_matrix.sum(dim=-1, keepdims=True)
            node_feats = self.projection(node_feats)
            node_feats = torch.bmm(adj_matrix, node_feats)
            node_feats = node_feats / num_neighbours
            return node_feats

    class GATLayer(nn.Module):
        def __init__(self, c_in, c_out, num_heads=1, concat_heads=True, alpha=0.2):
            super().__init__()
            self.num_heads = num_heads
            self.concat_heads = concat_heads
            if self.concat_heads:
                assert c_out % num_heads == 0, "Number of output features must be a multiple of the count of heads."
                c_out = c_out // num_heads
            self.projection = nn.Linear(c_in, c_out * num_heads)
            self.a = nn.Parameter(torch.Tensor(num_heads, 2 * c_out))
            self.leakyrelu = nn.LeakyReLU(alpha)
            nn.init.xavier_uniform_(self.projection.weight.data, gain=1.414)
            nn.init.xavier_uniform_(self.a.data, gain=1.414)

        def forward(self, node_feats, adj_matrix):
            batch_size, num_nodes = node_feats.size(0), node_feats.size(1)
            node_feats = self.projection(node_feats)
            node_feats = node_feats.view(batch_size, num_nodes, self.num_heads, -1)
            edges = adj_matrix.nonzero(as_tuple=False)
            node_feats_flat = node_feats.view(batch_size * num_nodes, self.num_heads, -1)
            edge_indices_row = edges[:, 0] * num_nodes + edges[:, 1]
            edge_indices_col = edges[:, 0] * num_nodes + edges[:, 2]
            a_input = torch.cat([
                torch.index_select(input=node_feats_flat, index=edge_indices_row, dim=0),
                torch.index_select(input=node_feats_flat, index=edge_indices_col, dim=0)
            ], dim=-1)
            attn_logits = torch.einsum('bhc,hc->bh', a_input, self.a)
            attn_logits = self.leakyrelu(attn_logits)
            attn_matrix = attn_logits.new_zeros(adj_matrix.shape + (self.num_heads,)).fill_(-9e15)
            attn_matrix[adj_matrix[..., None].repeat(1, 1, 1, self.num_heads) == 1] = attn_logits.reshape(-1)
            attn_probs = F.softmax(attn_matrix, dim=2)
            node_feats = torch.einsum('bijh,bjhc->bihc', attn_probs, node_feats)
            if self.concat_heads:
                node_feats = node_feats.reshape(batch_size, num_nodes, -1)
            else:
                node_feats = node_feats.mean(dim=2)
            return node_feats, attn_probs

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.gcn = GCNLayer(3, 4)
            self.gat = GATLayer(4, 4, num_heads=2)
            self.gat_mean = GATLayer(4, 2, num_heads=2, concat_heads=False)

        def forward(self, x, adj):
            h = F.relu(self.gcn(x, adj))
            h, attn = self.gat(h, adj)
            out, attn2 = self.gat_mean(F.elu(h), adj)
            return out, attn, attn2

    return Net()


def gnn_layers(m):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, make_gnn(m), weights_of(make_gnn))
    node_feats = torch.arange(8, dtype=torch.float32).view(1, 4, 2)
    node_feats = torch.cat([node_feats, node_feats.sum(-1, keepdim=True) / 10], dim=-1).repeat(2, 1, 1)
    adj_matrix = torch.Tensor([[[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]],
                               [[1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]]])
    out, attn, attn2 = model(node_feats, adj_matrix)
    loss = out.pow(2).sum() + attn.max()
    loss.backward()
    # the GCN by hand with the symmetric normalisation D^-1/2 (A) D^-1/2
    deg = adj_matrix.sum(-1)
    d_inv_sqrt = deg.pow(-0.5)
    d_inv_sqrt[torch.isinf(d_inv_sqrt)] = 0.
    norm_adj = d_inv_sqrt[..., :, None] * adj_matrix * d_inv_sqrt[..., None, :]
    sym = norm_adj @ model.gcn.projection(node_feats)
    return {"out": out, "attn": attn, "attn2": attn2, "sym": sym,
            "grads": {k: v.grad for k, v in model.named_parameters()}}


def test_uva_gcn_and_gat_layers():
    ours, _ = run_both(gnn_layers, rtol=1e-5, atol=1e-6)
    adj = np.array([[[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]],
                    [[1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]]])
    np.testing.assert_allclose(ours["attn"].sum(2), 1, rtol=1e-6)
    assert (ours["attn"][adj == 0] == 0).all()  # no attention across a missing edge
    assert all(g is not None and np.isfinite(g).all() for g in ours["grads"].values())


# ----------------------------------------------------------------------------------------------
# UvA DL tutorials 3, 4, 6 and 17: activation functions written as modules and their dead neurons,
# an optimizer template (state in dicts keyed by parameters) on a pathological curve, a custom
# _LRScheduler (cosine warm-up), and SimCLR's InfoNCE loss with its ranking metrics
# ----------------------------------------------------------------------------------------------


def uva_tutorials(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class ActivationFunction(nn.Module):
        def __init__(self):
            super().__init__()
            self.name = self.__class__.__name__
            self.config = {"name": self.name}

    class Sigmoid(ActivationFunction):
        def forward(self, x):
            return 1 / (1 + torch.exp(-x))

    class LeakyReLU(ActivationFunction):
        def __init__(self, alpha=0.1):
            super().__init__()
            self.config["alpha"] = alpha

        def forward(self, x):
            return torch.where(x > 0, x, self.config["alpha"] * x)

    class ELU(ActivationFunction):
        def forward(self, x):
            return torch.where(x > 0, x, torch.exp(x) - 1)

    class Swish(ActivationFunction):
        def forward(self, x):
            return x * torch.sigmoid(x)

    class ReLU(ActivationFunction):
        def forward(self, x):
            return x * (x > 0).float()

    def get_grads(act_fn, x):
        x = x.clone().requires_grad_()
        out = act_fn(x)
        out.sum().backward()
        return x.grad

    x = torch.linspace(-5, 5, 21)
    act_grads = {cls.__name__: (cls()(x), get_grads(cls(), x)) for cls in (Sigmoid, LeakyReLU, ELU, Swish, ReLU)}

    class BaseNetwork(nn.Module):
        def __init__(self, act_fn, input_size=12, num_classes=3, hidden_sizes=[8, 8, 8]):
            super().__init__()
            layers = []
            layer_sizes = [input_size] + hidden_sizes
            for layer_index in range(1, len(layer_sizes)):
                layers += [nn.Linear(layer_sizes[layer_index - 1], layer_sizes[layer_index]), act_fn]
            layers += [nn.Linear(layer_sizes[-1], num_classes)]
            self.layers = nn.Sequential(*layers)

        def forward(self, x):
            x = x.view(x.size(0), -1)
            return self.layers(x)

    net = BaseNetwork(ReLU())
    rng_w = np.random.default_rng(18)
    net.load_state_dict({k: torch.tensor((rng_w.standard_normal(tuple(v.shape)) / math.sqrt(v.shape[-1])).astype(np.float32))
                         for k, v in net.state_dict().items()})
    with torch.no_grad():
        net.layers[2].bias.fill_(-2.0)  # kill some neurons of the second layer
    imgs = torch.tensor(np.random.default_rng(16).standard_normal((20, 3, 2, 2)).astype(np.float32))
    neurons_dead = [torch.ones(layer.weight.shape[0], dtype=torch.bool) for layer in net.layers[:-1] if isinstance(layer, nn.Linear)]
    net.eval()
    with torch.no_grad():
        h = imgs.view(imgs.size(0), -1)
        layer_index = 0
        for layer in net.layers[:-1]:
            h = layer(h)
            if isinstance(layer, ActivationFunction):
                neurons_dead[layer_index] = torch.logical_and(neurons_dead[layer_index], (h == 0).all(dim=0))
                layer_index += 1
    dead = [t.sum().item() for t in neurons_dead]
    loss = F.cross_entropy(net(imgs), torch.arange(20) % 3)
    net.zero_grad()
    loss.backward()
    weight_grads = {name: params.grad.data.view(-1).cpu().clone().numpy() for name, params in net.named_parameters() if "weight" in name}

    class OptimizerTemplate:
        def __init__(self, params, lr):
            self.params = list(params)
            self.lr = lr

        def zero_grad(self):
            for p in self.params:
                if p.grad is not None:
                    p.grad.detach_()
                    p.grad.zero_()

        @torch.no_grad()
        def step(self):
            for p in self.params:
                if p.grad is None:
                    continue
                self.update_param(p)

    class SGDMomentum(OptimizerTemplate):
        def __init__(self, params, lr, momentum=0.0):
            super().__init__(params, lr)
            self.momentum = momentum
            self.param_momentum = {p: torch.zeros_like(p.data) for p in self.params}

        def update_param(self, p):
            self.param_momentum[p] = (1 - self.momentum) * p.grad + self.momentum * self.param_momentum[p]
            p_update = -self.lr * self.param_momentum[p]
            p.add_(p_update)

    class Adam(OptimizerTemplate):
        def __init__(self, params, lr, beta1=0.9, beta2=0.999, eps=1e-8):
            super().__init__(params, lr)
            self.beta1, self.beta2, self.eps = beta1, beta2, eps
            self.param_step = {p: 0 for p in self.params}
            self.param_momentum = {p: torch.zeros_like(p.data) for p in self.params}
            self.param_2nd_momentum = {p: torch.zeros_like(p.data) for p in self.params}

        def update_param(self, p):
            self.param_step[p] += 1
            self.param_momentum[p] = (1 - self.beta1) * p.grad + self.beta1 * self.param_momentum[p]
            self.param_2nd_momentum[p] = (1 - self.beta2) * (p.grad) ** 2 + self.beta2 * self.param_2nd_momentum[p]
            bias_correction_1 = 1 - self.beta1 ** self.param_step[p]
            bias_correction_2 = 1 - self.beta2 ** self.param_step[p]
            p_2nd_mom = self.param_2nd_momentum[p] / bias_correction_2
            p_mom = self.param_momentum[p] / bias_correction_1
            p_lr = self.lr / (torch.sqrt(p_2nd_mom) + self.eps)
            p_update = -p_lr * p_mom
            p.add_(p_update)

    def pathological_curve_loss(w1, w2):
        x1_loss = torch.tanh(w1) ** 2 + 0.01 * torch.abs(w1)
        x2_loss = torch.sigmoid(w2)
        return x1_loss + x2_loss

    def train_curve(optimizer_func, curve_func=pathological_curve_loss, num_updates=12, init=[5, 5]):  # (lr=10 turns chaotic later: float32 rounding grows)
        weights = nn.Parameter(torch.FloatTensor(init), requires_grad=True)
        optimizer = optimizer_func([weights])
        list_points = []
        for _ in range(num_updates):
            loss = curve_func(weights[0], weights[1])
            list_points.append(torch.cat([weights.data.detach(), loss.unsqueeze(dim=0).detach()], dim=0))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        points = torch.stack(list_points, dim=0).numpy()
        return points

    curves = {"sgd": train_curve(lambda params: SGDMomentum(params, lr=10)),
              "sgd_mom": train_curve(lambda params: SGDMomentum(params, lr=10, momentum=0.9)),
              "adam": train_curve(lambda params: Adam(params, lr=1)),
              "adam_lib": train_curve(lambda params: optim.Adam(params, lr=1))}

    class CosineWarmupScheduler(optim.lr_scheduler._LRScheduler):
        def __init__(self, optimizer, warmup, max_iters):
            self.warmup = warmup
            self.max_num_iters = max_iters
            super().__init__(optimizer)

        def get_lr(self):
            lr_factor = self.get_lr_factor(epoch=self.last_epoch)
            return [base_lr * lr_factor for base_lr in self.base_lrs]

        def get_lr_factor(self, epoch):
            lr_factor = 0.5 * (1 + np.cos(np.pi * epoch / self.max_num_iters))
            if epoch <= self.warmup:
                lr_factor *= epoch * 1.0 / self.warmup
            return lr_factor

    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = optim.Adam([p], lr=1e-3)
    lr_scheduler = CosineWarmupScheduler(optimizer=opt, warmup=5, max_iters=20)
    lrs = []
    for epoch_iter in range(20):
        opt.zero_grad()
        (p ** 2).sum().backward()
        opt.step()
        lr_scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])

    # SimCLR (tutorial 17): InfoNCE and the ranking metrics
    feats = torch.tensor(np.random.default_rng(17).standard_normal((6, 4)).astype(np.float32), requires_grad=True)
    cos_sim = F.cosine_similarity(feats[:, None, :], feats[None, :, :], dim=-1)
    self_mask = torch.eye(cos_sim.shape[0], dtype=torch.bool)
    cos_sim.masked_fill_(self_mask, -9e15)
    pos_mask = self_mask.roll(shifts=cos_sim.shape[0] // 2, dims=0)
    cos_sim = cos_sim / 0.07
    nll = -cos_sim[pos_mask] + torch.logsumexp(cos_sim, dim=-1)
    nll = nll.mean()
    comb_sim = torch.cat([cos_sim[pos_mask][:, None], cos_sim.masked_fill(pos_mask, -9e15)], dim=-1)
    sim_argsort = comb_sim.argsort(dim=-1, descending=True).argmin(dim=-1)
    nll.backward()
    metrics = [(sim_argsort == 0).float().mean().item(), (sim_argsort < 5).float().mean().item(), 1 + sim_argsort.float().mean().item()]
    return {"act": act_grads, "dead": dead, "weight_grads": weight_grads, "curves": curves, "lrs": lrs,
            "nll": nll, "feat_grad": feats.grad, "metrics": metrics}


def test_uva_activations_optimizers_scheduler_simclr():
    ours, _ = run_both(uva_tutorials, rtol=1e-5, atol=1e-6)
    x = np.linspace(-5, 5, 21)
    np.testing.assert_allclose(ours["act"]["ELU"][1], np.where(x > 0, 1, np.exp(x)), rtol=1e-6)
    assert ours["dead"][1] > 0
    np.testing.assert_allclose(ours["curves"]["adam"], ours["curves"]["adam_lib"], rtol=1e-5, atol=1e-6)
    factor = lambda e: 0.5 * (1 + np.cos(np.pi * e / 20)) * (e / 5 if e <= 5 else 1)
    np.testing.assert_allclose(ours["lrs"], [1e-3 * factor(e) for e in range(1, 21)], rtol=1e-9)
