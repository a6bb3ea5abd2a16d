# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs (see tests/pytorch_programs.py), each run unchanged but for its imports on chainrule and on
PyTorch from the same weights, comparing losses, parameters and gradients. Sequences, graphs and point sets: a TCN
(dilated causal ``Conv1d`` with left ``F.pad`` and ``Chomp1d``, ``nn.utils.weight_norm`` and
``nn.utils.parametrizations.weight_norm``, an old weight-norm checkpoint loaded into the parametrized one); graph
networks by message passing (GCN degree normalisation by ``index_add_``, GraphSAGE with
``scatter_reduce('amax'/'mean', include_self=False)``, GAT's edge softmax by ``scatter_reduce`` and
``scatter_add_``); PointNet (shared MLPs as ``Conv1d(k=1)``, a T-Net with ``bmm``, max pooling over points, its
regulariser)."""

import io

import numpy as np
import pytest

from .pytorch_programs import OURS, assert_same, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A TCN (locuslab/TCN): dilated causal convolutions, Chomp1d, weight_norm both ways
# ----------------------------------------------------------------------------------------------


def tcn_net(m, parametrized=False):
    torch, nn, F = m.torch, m.nn, m.F
    weight_norm = nn.utils.parametrizations.weight_norm if parametrized else nn.utils.weight_norm

    class Chomp1d(nn.Module):
        def __init__(self, chomp_size):
            super().__init__()
            self.chomp_size = chomp_size

        def forward(self, x):
            return x[:, :, :-self.chomp_size].contiguous()

    class TemporalBlock(nn.Module):
        def __init__(self, n_inputs, n_outputs, kernel_size, stride, dilation, padding, dropout=0.0):
            super().__init__()
            self.conv1 = weight_norm(nn.Conv1d(n_inputs, n_outputs, kernel_size, stride=stride,
                                               padding=padding, dilation=dilation))
            self.chomp1 = Chomp1d(padding)
            self.relu1 = nn.ReLU()
            self.dropout1 = nn.Dropout(dropout)
            # the second convolution pads on the left itself (the "causal padding" spelling)
            self.pad = padding
            self.conv2 = weight_norm(nn.Conv1d(n_outputs, n_outputs, kernel_size, stride=stride, dilation=dilation))
            self.net1 = nn.Sequential(self.conv1, self.chomp1, self.relu1, self.dropout1)
            self.downsample = nn.Conv1d(n_inputs, n_outputs, 1) if n_inputs != n_outputs else None
            self.relu = nn.ReLU()

        def forward(self, x):
            out = self.net1(x)
            out = torch.relu(self.conv2(F.pad(out, (self.pad, 0))))
            res = x if self.downsample is None else self.downsample(x)
            return self.relu(out + res)

    class TemporalConvNet(nn.Module):
        def __init__(self, num_inputs, num_channels, kernel_size=2):
            super().__init__()
            layers = []
            for i in range(len(num_channels)):
                dilation_size = 2 ** i
                in_channels = num_inputs if i == 0 else num_channels[i - 1]
                layers += [TemporalBlock(in_channels, num_channels[i], kernel_size, stride=1,
                                         dilation=dilation_size, padding=(kernel_size - 1) * dilation_size)]
            self.network = nn.Sequential(*layers)
            self.linear = nn.Linear(num_channels[-1], 1)

        def forward(self, x):
            return self.linear(self.network(x)[:, :, -1])

    return TemporalConvNet(2, [4, 4, 3], kernel_size=3)


def tcn(m, weights, parametrized=False, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, tcn_net(m, parametrized), weights)
    optimizer = optim.Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.standard_normal((6, 2, 16)).astype(np.float32))
    y = x[:, 0].sum(1, keepdim=True) * 0.1
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # causality: changing the last time step leaves every earlier output unchanged
    with torch.no_grad():
        feats = model.network(x)
        x2 = x.clone()
        x2[:, :, -1] += 1.0
        feats2 = model.network(x2)
    causal = bool(torch.allclose(feats[:, :, :-1], feats2[:, :, :-1]))
    names = [n for n, _ in model.named_parameters()]
    grads = [p.grad for p in model.parameters()]
    block = model.network[0].conv1
    weight = block.weight.detach()  # recomputed from g and v
    return losses, [p.detach() for p in model.parameters()], grads, weight, names, causal, sorted(model.state_dict())


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_tcn_with_weight_norm():
    weights = weights_of(tcn_net)
    ours, _ = run_both(tcn, weights, rtol=1e-5, atol=1e-6)
    losses, params, grads, weight, names, causal, keys = ours
    assert causal and "network.0.conv1.weight_g" in names and "network.0.conv1.weight_v" in names
    assert weight.shape == (4, 2, 3)


def tcn_checkpoint_migration(m, weights):
    """A checkpoint trained under nn.utils.weight_norm (``weight_g``/``weight_v``) loaded into the same net
    built with parametrizations.weight_norm, as HiFi-GAN/EnCodec-era checkpoints are; then the weight norms
    removed for inference (HiFi-GAN's ``remove_weight_norm()``)."""
    torch, nn = m.torch, m.nn
    old = tcn(m, weights, steps=2)  # trains the old-style net
    old_model = load(m, tcn_net(m), weights)
    optimizer = m.optim.SGD(old_model.parameters(), lr=0.1)
    x = torch.tensor(np.random.default_rng(3).standard_normal((2, 2, 16)).astype(np.float32))
    old_model(x).sum().backward()
    optimizer.step()
    buffer = io.BytesIO()
    torch.save(old_model.state_dict(), buffer)
    buffer.seek(0)
    new_model = tcn_net(m, parametrized=True)
    result = new_model.load_state_dict(torch.load(buffer))
    with torch.no_grad():
        same = bool(torch.allclose(new_model(x), old_model(x), rtol=1e-6, atol=1e-7))
    for module in new_model.modules():
        if nn.utils.parametrize.is_parametrized(module):
            nn.utils.parametrize.remove_parametrizations(module, "weight")
    for module in old_model.modules():
        if hasattr(module, "weight_g"):
            nn.utils.remove_weight_norm(module)
    with torch.no_grad():
        out_new, out_old = new_model(x), old_model(x)
    return (old[0], str(result), same, sorted(new_model.state_dict()) == sorted(old_model.state_dict()),
            out_new, out_old)


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_weight_norm_checkpoint_loads_into_parametrized_weight_norm():
    weights = weights_of(tcn_net)
    ours, _ = run_both(tcn_checkpoint_migration, weights, rtol=1e-5, atol=1e-6)
    losses, result, same, same_keys, out_new, out_old = ours
    assert result == "<All keys matched successfully>" and same and same_keys
    np.testing.assert_allclose(out_new, out_old, rtol=1e-5, atol=1e-6)


def test_tcn_with_parametrized_weight_norm():
    weights = weights_of(lambda m: tcn_net(m, parametrized=True))
    ours, _ = run_both(tcn, weights, parametrized=True, rtol=1e-5, atol=1e-6)
    losses, params, grads, weight, names, causal, keys = ours
    assert causal and "network.0.conv1.parametrizations.weight.original0" in names
    assert "network.0.conv1.parametrizations.weight.original1" in keys


# ----------------------------------------------------------------------------------------------
# Graph networks by message passing over an edge list (GCN, GraphSAGE max/mean, GAT), PyG-free
# ----------------------------------------------------------------------------------------------


def gnn_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class GCNConv(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.lin = nn.Linear(in_channels, out_channels, bias=False)
            self.bias = nn.Parameter(torch.zeros(out_channels))

        def forward(self, x, edge_index):
            num_nodes = x.size(0)
            loops = torch.arange(num_nodes, device=x.device).unsqueeze(0).repeat(2, 1)
            edge_index = torch.cat([edge_index, loops], dim=1)
            row, col = edge_index
            deg = torch.zeros(num_nodes, dtype=x.dtype).index_add_(0, col, torch.ones(col.size(0), dtype=x.dtype))
            deg_inv_sqrt = deg.pow(-0.5)
            deg_inv_sqrt[deg_inv_sqrt == float("inf")] = 0
            norm = deg_inv_sqrt[row] * deg_inv_sqrt[col]
            x = self.lin(x)
            out = torch.zeros_like(x).index_add_(0, col, norm.view(-1, 1) * x[row])
            return out + self.bias

    class SAGEConv(nn.Module):
        def __init__(self, in_channels, out_channels, aggr):
            super().__init__()
            self.aggr = aggr
            self.lin_l = nn.Linear(in_channels, out_channels)
            self.lin_r = nn.Linear(in_channels, out_channels, bias=False)

        def forward(self, x, edge_index):
            src, dst = edge_index
            msg = x[src]
            index = dst.unsqueeze(-1).expand_as(msg)
            out = torch.zeros(x.size(0), x.size(1), dtype=x.dtype)
            out = out.scatter_reduce(0, index, msg, reduce=self.aggr, include_self=False)
            return self.lin_l(out) + self.lin_r(x)

    class GATConv(nn.Module):
        def __init__(self, in_channels, out_channels, heads=2):
            super().__init__()
            self.heads, self.out_channels = heads, out_channels
            self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
            self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
            self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
            nn.init.xavier_uniform_(self.att_src)
            nn.init.xavier_uniform_(self.att_dst)

        def forward(self, x, edge_index):
            H, C = self.heads, self.out_channels
            N = x.size(0)
            h = self.lin(x).view(-1, H, C)
            alpha_src = (h * self.att_src).sum(dim=-1)
            alpha_dst = (h * self.att_dst).sum(dim=-1)
            src, dst = edge_index
            e = F.leaky_relu(alpha_src[src] + alpha_dst[dst], 0.2)  # [E, H]
            index = dst.unsqueeze(-1).expand_as(e)
            e_max = torch.full((N, H), float("-inf")).scatter_reduce(0, index, e, "amax", include_self=True)
            e = (e - e_max[dst]).exp()
            denom = torch.zeros(N, H).scatter_add_(0, index, e)
            alpha = e / (denom[dst] + 1e-16)
            out = torch.zeros(N, H, C).index_add_(0, dst, alpha.unsqueeze(-1) * h[src])
            return out.mean(dim=1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = GCNConv(3, 8)
            self.sage_max = SAGEConv(8, 6, "amax")
            self.sage_mean = SAGEConv(8, 6, "mean")
            self.gat = GATConv(12, 4)
            self.classifier = nn.Linear(4, 3)

        def forward(self, x, edge_index):
            x = F.relu(self.conv1(x, edge_index))
            x = F.dropout(x, p=0.5, training=self.training)
            x = torch.cat([self.sage_max(x, edge_index), self.sage_mean(x, edge_index)], dim=-1).relu()
            return self.classifier(F.elu(self.gat(x, edge_index)))

    return Net()


def gnn(m, weights, epochs=5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, gnn_net(m), weights)
    rng = np.random.default_rng(8)
    num_nodes = 10
    edges = [(i, (i + 1) % 9) for i in range(9)] + [(2, 5), (5, 2), (0, 4), (7, 3), (3, 7), (1, 1)]
    edge_index = torch.tensor(edges, dtype=torch.long).t().contiguous()  # node 9 is isolated
    x = torch.tensor(rng.standard_normal((num_nodes, 3)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 3, num_nodes))
    train_mask = torch.zeros(num_nodes, dtype=torch.bool)
    train_mask[:7] = True
    optimizer = optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    model.eval()  # dropout off so both libraries see the same network
    losses = []
    for epoch in range(epochs):
        optimizer.zero_grad()
        out = model(x, edge_index)
        loss = F.cross_entropy(out[train_mask], y[train_mask])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        pred = model(x, edge_index).argmax(dim=1)
        acc = int((pred[~train_mask] == y[~train_mask]).sum()) / int((~train_mask).sum())
        h = F.relu(model.conv1(x, edge_index))
        pooled_max = torch.zeros(2, 8).scatter_reduce(0, torch.tensor([0] * 5 + [1] * 5).unsqueeze(-1).expand(-1, 8),
                                                      h, "amax", include_self=False)
        batch = torch.tensor([0] * 5 + [1] * 5)
        pooled_mean = torch.zeros(2, 8).index_reduce_(0, batch, h, "mean", include_self=False)
        counts = torch.bincount(batch, minlength=2)
        pooled_sum = torch.zeros(2, 8).index_add(0, batch, h)
    return (losses, [p.detach() for p in model.parameters()], [p.grad for p in model.parameters()], pred, acc,
            pooled_max, pooled_mean, pooled_sum / counts.unsqueeze(-1))


@pytest.mark.filterwarnings("ignore:index_reduce\\(\\) is in beta:UserWarning")
def test_message_passing_gcn_sage_and_gat():
    weights = weights_of(gnn_net)
    ours, _ = run_both(gnn, weights, rtol=1e-5, atol=1e-6)
    losses, params, grads, pred, acc, pooled_max, pooled_mean, pooled_avg = ours
    assert losses[-1] < losses[0] and all(np.abs(g).max() > 0 for g in grads)
    np.testing.assert_allclose(pooled_mean, pooled_avg, rtol=1e-6)
    assert pred.shape == (10,)
    # the isolated node (9) receives no message: scatter_reduce(include_self=False) leaves its zeros
    model = load(OURS, gnn_net(OURS), weights).eval()
    x = OURS.torch.ones(10, 8)
    edge_index = OURS.torch.tensor([[0, 1, 2], [1, 1, 3]])
    out = OURS.torch.zeros(10, 8).scatter_reduce(0, edge_index[1].unsqueeze(-1).expand(-1, 8), x[edge_index[0]] * 2,
                                                 "amax", include_self=False)
    assert out[9].abs().sum().item() == 0 and out[1].tolist() == [2.0] * 8


# ----------------------------------------------------------------------------------------------
# PointNet: shared MLPs as Conv1d(k=1), a T-Net with bmm, max pooling over points, its regulariser
# ----------------------------------------------------------------------------------------------


def pointnet_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class STNkd(nn.Module):
        def __init__(self, k=3):
            super().__init__()
            self.conv1 = nn.Conv1d(k, 8, 1)
            self.conv2 = nn.Conv1d(8, 16, 1)
            self.fc1 = nn.Linear(16, 8)
            self.fc2 = nn.Linear(8, k * k)
            self.bn1 = nn.BatchNorm1d(8)
            self.bn2 = nn.BatchNorm1d(16)
            self.bn3 = nn.BatchNorm1d(8)
            self.k = k

        def forward(self, x):
            batchsize = x.size()[0]
            x = F.relu(self.bn1(self.conv1(x)))
            x = F.relu(self.bn2(self.conv2(x)))
            x = torch.max(x, 2, keepdim=True)[0]
            x = x.view(-1, 16)
            x = F.relu(self.bn3(self.fc1(x)))
            x = self.fc2(x)
            iden = torch.from_numpy(np.eye(self.k).flatten().astype(np.float32)).view(1, self.k * self.k).to(x.dtype)
            iden = iden.repeat(batchsize, 1)
            x = x + iden
            return x.view(-1, self.k, self.k)

    class PointNetCls(nn.Module):
        def __init__(self, k=3):
            super().__init__()
            self.stn = STNkd(3)
            self.conv1 = nn.Conv1d(3, 8, 1)
            self.fstn = STNkd(8)
            self.conv2 = nn.Conv1d(8, 16, 1)
            self.bn1 = nn.BatchNorm1d(8)
            self.bn2 = nn.BatchNorm1d(16)
            self.fc = nn.Linear(16, k)

        def forward(self, x):
            trans = self.stn(x)
            x = x.transpose(2, 1)
            x = torch.bmm(x, trans)
            x = x.transpose(2, 1)
            x = F.relu(self.bn1(self.conv1(x)))
            trans_feat = self.fstn(x)
            x = torch.bmm(x.transpose(2, 1), trans_feat).transpose(2, 1)
            x = self.bn2(self.conv2(x))
            x, argmax = torch.max(x, 2)
            return F.log_softmax(self.fc(x), dim=1), trans_feat, argmax

    return PointNetCls()


def pointnet(m, weights, steps=3, dtype="float32"):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, pointnet_net(m), weights).to(getattr(torch, dtype))

    def feature_transform_regularizer(trans):
        d = trans.size()[1]
        I = torch.eye(d, dtype=trans.dtype)[None, :, :]
        return torch.mean(torch.norm(torch.bmm(trans, trans.transpose(2, 1)) - I, dim=(1, 2)))

    rng = np.random.default_rng(13)
    points = torch.tensor(rng.standard_normal((6, 12, 3)).astype(dtype)).transpose(2, 1)
    target = torch.tensor(rng.integers(0, 3, 6))
    optimizer = optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999))
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    losses = []
    for step in range(steps):
        model.train()
        optimizer.zero_grad()
        pred, trans_feat, argmax = model(points)
        loss = F.nll_loss(pred, target) + feature_transform_regularizer(trans_feat) * 0.001
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        pred, _, _ = model(points)
    correct = pred.data.max(1)[1].eq(target.data).cpu().sum().item()
    # a bias feeding a BatchNorm is removed by it: its gradient is zero up to rounding, and Adam's step on
    # it (rounding noise over its own square root) is noise in either library; its gradient is checked apart
    shifted_away = [(name, p) for name, p in model.named_parameters() if name in PRE_NORM_BIASES]
    kept = [(name, p) for name, p in model.named_parameters() if name not in PRE_NORM_BIASES]
    return (losses, [p.detach() for _, p in kept], [p.grad for _, p in kept], argmax, pred, correct,
            [b.clone() for b in model.buffers()], max(p.grad.abs().max().item() for _, p in shifted_away))


PRE_NORM_BIASES = {f"{net}{layer}.bias" for net in ("stn.", "fstn.") for layer in ("conv1", "conv2", "fc1", "bn2")}
PRE_NORM_BIASES |= {"conv1.bias", "conv2.bias"}


def test_pointnet_classifier():
    weights = weights_of(pointnet_net)
    # in float32 the losses and the kept parameters are compared: gradients of size ~3 through two T-nets
    # (bmm, BatchNorm, max) come out 4e-6 apart, as two summation orders do, and eval()'s running
    # statistics see the noise-driven pre-norm biases; in float64 everything agrees to 1e-11
    ours32, theirs32 = run_both(pointnet, weights, compare=False)
    if theirs32 is not None:
        assert_same(ours32[:2], theirs32[:2], rtol=1e-5, atol=1e-6)
    ours, _ = run_both(pointnet, weights, dtype="float64", rtol=1e-8, atol=1e-10)
    losses, params, grads, argmax, pred, correct, buffers, shifted_away = ours
    # (from PyTorch's initial weights for seed 0 the pre-norm biases' largest gradient is 0.0075, in both
    # libraries to 1e-10, compared above: not the rounding noise of a bias a BatchNorm removes entirely)
    assert argmax.shape == (6, 16) and 0 <= correct <= 6 and shifted_away < 0.05
