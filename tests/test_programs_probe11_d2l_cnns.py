# ruff: noqa: B007, E501, UP008  (the programs are kept as the book writes them)
"""d2l.ai (PyTorch edition) programs, written as the book writes them with its helpers inlined, run on chainrule and
on PyTorch (see tests/pytorch_programs.py), comparing losses, gradients and parameters. CNN basics (``corr2d`` by
loops learnt by gradient descent, multi-channel ``corr2d`` by ``torch.stack``, pooling by loops vs ``nn.MaxPool2d``);
batch norm from scratch in a LeNet; NiN/Inception/Residual/DenseNet blocks."""

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# CNN basics: corr2d by loops, learnt kernel, multi-channel, pooling
# ----------------------------------------------------------------------------------------------


def cnn_basics(m):
    torch, nn = m.torch, m.nn

    def corr2d(X, K):
        h, w = K.shape
        Y = torch.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
        for i in range(Y.shape[0]):
            for j in range(Y.shape[1]):
                Y[i, j] = (X[i:i + h, j:j + w] * K).sum()
        return Y

    class Conv2D(nn.Module):
        def __init__(self, kernel_size):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(kernel_size) * 0.3)
            self.bias = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return corr2d(x, self.weight) + self.bias

    X = torch.ones((6, 8))
    X[:, 2:6] = 0
    K = torch.tensor([[1.0, -1.0]])
    Y = corr2d(X, K)
    # learning the kernel with the scratch layer (gradients through item assignment)
    layer = Conv2D(kernel_size=(1, 2))
    losses = []
    for i in range(6):
        Y_hat = layer(X)
        l = (Y_hat - Y) ** 2
        layer.zero_grad()
        l.sum().backward()
        with torch.no_grad():
            layer.weight -= 5e-3 * layer.weight.grad
            layer.bias -= 5e-3 * layer.bias.grad
        losses.append(l.sum().item())
    # and with nn.Conv2d as the book does
    conv2d = nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False)
    with torch.no_grad():
        conv2d.weight.fill_(0.5)
    Xc, Yc = X.reshape((1, 1, 6, 8)), Y.reshape((1, 1, 6, 7))
    for i in range(10):
        Y_hat = conv2d(Xc)
        l = (Y_hat - Yc) ** 2
        conv2d.zero_grad()
        l.sum().backward()
        conv2d.weight.data[:] -= 3e-2 * conv2d.weight.grad

    def corr2d_multi_in(X, K):
        return sum(corr2d(x, k) for x, k in zip(X, K))

    def corr2d_multi_in_out(X, K):
        return torch.stack([corr2d_multi_in(X, k) for k in K], 0)

    def corr2d_multi_in_out_1x1(X, K):
        c_i, h, w = X.shape
        c_o = K.shape[0]
        X = X.reshape((c_i, h * w))
        K = K.reshape((c_o, c_i))
        Y = torch.matmul(K, X)
        return Y.reshape((c_o, h, w))

    Xm = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
                       [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]])
    Km = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])
    Km = torch.stack((Km, Km + 1, Km + 2), 0)
    multi = corr2d_multi_in_out(Xm, Km)
    torch.manual_seed(0)
    X1 = torch.normal(0, 1, (3, 3, 3))
    K1 = torch.normal(0, 1, (2, 3, 1, 1))
    one_by_one = (corr2d_multi_in_out_1x1(X1, K1) - corr2d_multi_in_out(X1, K1)).abs().max()

    def pool2d(X, pool_size, mode='max'):
        p_h, p_w = pool_size
        Y = torch.zeros((X.shape[0] - p_h + 1, X.shape[1] - p_w + 1))
        for i in range(Y.shape[0]):
            for j in range(Y.shape[1]):
                if mode == 'max':
                    Y[i, j] = X[i: i + p_h, j: j + p_w].max()
                elif mode == 'avg':
                    Y[i, j] = X[i: i + p_h, j: j + p_w].mean()
        return Y

    Xp = torch.arange(16, dtype=torch.float32).reshape((1, 1, 4, 4))
    pools = [pool2d(Xm[0], (2, 2)), pool2d(Xm[0], (2, 2), 'avg'), nn.MaxPool2d(3)(Xp),
             nn.MaxPool2d(3, padding=1, stride=2)(Xp), nn.MaxPool2d((2, 3), stride=(2, 3), padding=(0, 1))(Xp)]
    Xp2 = torch.cat((Xp, Xp + 1), 1)
    pools.append(nn.MaxPool2d(3, padding=1, stride=2)(Xp2))
    return dict(Y=Y, losses=losses, weight=layer.weight, bias=layer.bias, conv=conv2d.weight.data, multi=multi,
                one_by_one=one_by_one, pools=pools)


def test_cnn_basics():
    ours, _ = run_both(cnn_basics)
    assert ours["losses"][-1] < ours["losses"][0]
    assert ours["one_by_one"] < 1e-5
    np.testing.assert_allclose(ours["multi"][0], [[56, 72], [104, 120]])


# ----------------------------------------------------------------------------------------------
# batch norm from scratch in LeNet
# ----------------------------------------------------------------------------------------------


def batch_norm_lenet(m):
    torch, nn, F = m.torch, m.nn, m.F

    def batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum):
        if not torch.is_grad_enabled():
            X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
        else:
            assert len(X.shape) in (2, 4)
            if len(X.shape) == 2:
                mean = X.mean(dim=0)
                var = ((X - mean) ** 2).mean(dim=0)
            else:
                mean = X.mean(dim=(0, 2, 3), keepdim=True)
                var = ((X - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
            X_hat = (X - mean) / torch.sqrt(var + eps)
            moving_mean = (1.0 - momentum) * moving_mean + momentum * mean
            moving_var = (1.0 - momentum) * moving_var + momentum * var
        Y = gamma * X_hat + beta
        return Y, moving_mean.data, moving_var.data

    class BatchNorm(nn.Module):
        def __init__(self, num_features, num_dims):
            super().__init__()
            if num_dims == 2:
                shape = (1, num_features)
            else:
                shape = (1, num_features, 1, 1)
            self.gamma = nn.Parameter(torch.ones(shape))
            self.beta = nn.Parameter(torch.zeros(shape))
            self.moving_mean = torch.zeros(shape)
            self.moving_var = torch.ones(shape)

        def forward(self, X):
            if self.moving_mean.device != X.device:
                self.moving_mean = self.moving_mean.to(X.device)
                self.moving_var = self.moving_var.to(X.device)
            Y, self.moving_mean, self.moving_var = batch_norm(
                X, self.gamma, self.beta, self.moving_mean,
                self.moving_var, eps=1e-5, momentum=0.1)
            return Y

    def lenet(bn):
        if bn == 'scratch':
            return nn.Sequential(
                nn.Conv2d(1, 6, kernel_size=5), BatchNorm(6, num_dims=4), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
                nn.Conv2d(6, 16, kernel_size=5), BatchNorm(16, num_dims=4), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
                nn.Flatten(), nn.Linear(16 * 4 * 4, 120), BatchNorm(120, num_dims=2), nn.Sigmoid(),
                nn.Linear(120, 84), BatchNorm(84, num_dims=2), nn.Sigmoid(), nn.Linear(84, 10))
        return nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5), nn.BatchNorm2d(6), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Flatten(), nn.Linear(16 * 4 * 4, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
            nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(), nn.Linear(84, 10))

    rng = np.random.default_rng(0)
    X = torch.tensor(rng.standard_normal((16, 1, 28, 28)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 10, 16))
    out = {}
    for bn in ('scratch', 'nn'):
        torch.manual_seed(0)
        net = lenet(bn)
        for layer in net:
            if type(layer) in (nn.Linear, nn.Conv2d):
                nn.init.xavier_uniform_(layer.weight)
        opt = m.optim.SGD(net.parameters(), lr=0.5)
        losses = []
        for epoch in range(3):
            l = F.cross_entropy(net(X), y)
            opt.zero_grad()
            l.backward()
            opt.step()
            losses.append(l.item())
        with torch.no_grad():
            eval_out = net.eval()(X) if bn == 'nn' else net(X)
        out[bn] = dict(losses=losses, eval=eval_out, w=net[0].weight.data.clone(),
                       gamma=(net[1].gamma if bn == 'scratch' else net[1].weight).data.clone(),
                       mm=(net[1].moving_mean if bn == 'scratch' else net[1].running_mean).reshape(-1))
    return out


def test_batch_norm_lenet():
    ours, _ = run_both(batch_norm_lenet, rtol=1e-4, atol=1e-5)
    # the scratch layer is nn.BatchNorm in training; they differ only in the running variance (biased vs not)
    np.testing.assert_allclose(ours["scratch"]["losses"], ours["nn"]["losses"], rtol=1e-4)
    np.testing.assert_allclose(ours["scratch"]["mm"], ours["nn"]["mm"], rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# modern CNNs: NiN, GoogLeNet's Inception, ResNet's Residual, DenseNet
# ----------------------------------------------------------------------------------------------


def modern_cnns(m):
    torch, nn, F = m.torch, m.nn, m.F

    def nin_block(out_channels, kernel_size, strides, padding):
        return nn.Sequential(
            nn.LazyConv2d(out_channels, kernel_size, strides, padding), nn.ReLU(),
            nn.LazyConv2d(out_channels, kernel_size=1), nn.ReLU(),
            nn.LazyConv2d(out_channels, kernel_size=1), nn.ReLU())

    class Inception(nn.Module):
        def __init__(self, c1, c2, c3, c4, **kwargs):
            super(Inception, self).__init__(**kwargs)
            self.b1_1 = nn.LazyConv2d(c1, kernel_size=1)
            self.b2_1 = nn.LazyConv2d(c2[0], kernel_size=1)
            self.b2_2 = nn.LazyConv2d(c2[1], kernel_size=3, padding=1)
            self.b3_1 = nn.LazyConv2d(c3[0], kernel_size=1)
            self.b3_2 = nn.LazyConv2d(c3[1], kernel_size=5, padding=2)
            self.b4_1 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
            self.b4_2 = nn.LazyConv2d(c4, kernel_size=1)

        def forward(self, x):
            b1 = F.relu(self.b1_1(x))
            b2 = F.relu(self.b2_2(F.relu(self.b2_1(x))))
            b3 = F.relu(self.b3_2(F.relu(self.b3_1(x))))
            b4 = F.relu(self.b4_2(self.b4_1(x)))
            return torch.cat((b1, b2, b3, b4), dim=1)

    class Residual(nn.Module):
        def __init__(self, num_channels, use_1x1conv=False, strides=1):
            super().__init__()
            self.conv1 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1, stride=strides)
            self.conv2 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1)
            if use_1x1conv:
                self.conv3 = nn.LazyConv2d(num_channels, kernel_size=1, stride=strides)
            else:
                self.conv3 = None
            self.bn1 = nn.LazyBatchNorm2d()
            self.bn2 = nn.LazyBatchNorm2d()

        def forward(self, X):
            Y = F.relu(self.bn1(self.conv1(X)))
            Y = self.bn2(self.conv2(Y))
            if self.conv3:
                X = self.conv3(X)
            Y += X
            return F.relu(Y)

    def conv_block(num_channels):
        return nn.Sequential(nn.LazyBatchNorm2d(), nn.ReLU(), nn.LazyConv2d(num_channels, kernel_size=3, padding=1))

    class DenseBlock(nn.Module):
        def __init__(self, num_convs, num_channels):
            super(DenseBlock, self).__init__()
            layer = []
            for i in range(num_convs):
                layer.append(conv_block(num_channels))
            self.net = nn.Sequential(*layer)

        def forward(self, X):
            for blk in self.net:
                Y = blk(X)
                X = torch.cat((X, Y), dim=1)
            return X

    def transition_block(num_channels):
        return nn.Sequential(nn.LazyBatchNorm2d(), nn.ReLU(), nn.LazyConv2d(num_channels, kernel_size=1),
                             nn.AvgPool2d(kernel_size=2, stride=2))

    torch.manual_seed(0)
    net = nn.Sequential(
        nin_block(8, kernel_size=3, strides=1, padding=1), nn.MaxPool2d(3, stride=2),
        Inception(4, (4, 8), (2, 4), 4),
        Residual(12, use_1x1conv=True, strides=2), Residual(12),
        DenseBlock(2, 5), transition_block(10),
        nin_block(5, kernel_size=3, strides=1, padding=1),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.standard_normal((4, 3, 17, 17)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 5, 4))
    net(X)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.tensor(np.random.default_rng(p.numel()).normal(0, 0.3, tuple(p.shape)).astype(np.float32)))
    shapes = []
    Z = X
    for layer in net:
        Z = layer(Z)
        shapes.append(tuple(Z.shape))
    opt = m.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    losses = []
    for step in range(3):
        opt.zero_grad()
        l = F.cross_entropy(net(X), y)
        l.backward()
        opt.step()
        losses.append(l.item())
    net.eval()
    with torch.no_grad():
        eval_out = net(X)
    return dict(shapes=shapes, losses=losses, eval=eval_out,
                grads={name: p.grad for name, p in net.named_parameters()},
                running={k: v for k, v in net.state_dict().items() if 'running' in k})


def test_modern_cnns():
    ours, _ = run_both(modern_cnns, rtol=1e-4, atol=1e-5)
    assert ours["shapes"][2] == (4, 20, 8, 8) and ours["shapes"][-1] == (4, 5)
