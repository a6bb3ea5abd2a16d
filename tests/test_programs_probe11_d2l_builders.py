# ruff: noqa: B006, B007, B020, E501, E721, UP034  (the programs are kept as the book writes them)
"""d2l.ai (PyTorch edition) programs, written as the book writes them with its helpers inlined, run on chainrule and
on PyTorch (see tests/pytorch_programs.py), comparing losses, gradients and parameters. Builders' guide (parameter
access by ``state_dict``/``named_parameters``, tied layers whose gradients add, custom init by ``apply`` with
``param.data *= param.data.abs() >= 5``, ``nn.LazyLinear``, ``torch.save``/``load`` of tensors and a state dict);
nested blocks (``add_module``, FixedHiddenMLP, ResNeXt groups, ViT patches); d2l's Module/DataModule/Trainer in small
form where every number comes from the seed (``torch.randn`` data, a shuffled loader, lazy inits, dropout masks,
``Multinomial`` draws of the probability chapter)."""

import io

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# builders' guide
# ----------------------------------------------------------------------------------------------


def builders_guide(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    X = torch.rand(size=(2, 4))
    net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(1))
    net(X)  # the dummy forward that sizes the lazy layers
    shapes = [(name, tuple(param.shape)) for name, param in net.named_parameters()]
    sd_keys = list(net[2].state_dict().keys())

    def init_normal(module):
        if type(module) == nn.Linear:
            nn.init.normal_(module.weight, mean=0, std=0.01)
            nn.init.zeros_(module.bias)

    def my_init(module):
        if type(module) == nn.Linear:
            nn.init.uniform_(module.weight, -10, 10)
            module.weight.data *= module.weight.data.abs() >= 5

    net.apply(init_normal)
    w0 = net[0].weight.data.clone()
    net.apply(my_init)
    w1 = net[0].weight.data.clone()
    net[0].weight.data[:] += 1
    net[0].weight.data[0, 0] = 42

    # tied parameters: the same layer twice, its gradient the sum of both uses
    shared = nn.Linear(8, 8)
    tied = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(), nn.LazyLinear(1))
    tied(X)
    tied[2].weight.data[0, 0] = 100
    same = bool(tied[2].weight.data[0, 0] == tied[4].weight.data[0, 0])
    tied(X).sum().backward()
    shared_grad = tied[2].weight.grad.clone()

    class CenteredLayer(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, X):
            return X - X.mean()

    class MyLinear(nn.Module):
        def __init__(self, in_units, units):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(in_units, units))
            self.bias = nn.Parameter(torch.randn(units,))

        def forward(self, X):
            linear = torch.matmul(X, self.weight.data) + self.bias.data
            return F_relu(linear)

    F_relu = m.F.relu
    centered = CenteredLayer()(torch.tensor([1.0, 2, 3, 4, 5]))
    custom = nn.Sequential(MyLinear(4, 8), MyLinear(8, 1))(X)

    # file I/O
    buf = io.BytesIO()
    x, y = torch.arange(4), torch.zeros(4)
    torch.save([x, y], buf)
    buf.seek(0)
    x2, y2 = torch.load(buf)
    buf = io.BytesIO()
    torch.save({'x': x, 'y': y}, buf)
    buf.seek(0)
    mydict2 = torch.load(buf)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    clone = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(1))
    clone.load_state_dict(torch.load(buf))
    Y_clone = clone(X)
    return dict(shapes=str(shapes), sd_keys=str(sd_keys), w0=w0, w1=w1, w=net[0].weight.data, same=same,
                shared_grad=shared_grad, centered=centered, custom=custom, x2=x2, y2=y2, dx=mydict2['x'],
                match=bool((Y_clone == net(X)).all()))


def test_builders_guide():
    ours, theirs = run_both(builders_guide)
    assert ours["same"] and ours["match"]
    assert ours["shapes"] == "[('0.weight', (8, 4)), ('0.bias', (8,)), ('2.weight', (1, 8)), ('2.bias', (1,))]"
    w1 = ours["w1"]
    assert np.all((w1 == 0) | (np.abs(w1) >= 5))


# ----------------------------------------------------------------------------------------------
# builders' guide, nested: add_module with spaced names, a custom Sequential, FixedHiddenMLP,
# ResNeXt's grouped convolutions, ViT's patch embedding, a transformer decoder's causal valid_lens
# ----------------------------------------------------------------------------------------------


def nested_blocks(m):
    torch, nn, F = m.torch, m.nn, m.F

    def block1():
        return nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(4), nn.ReLU())

    def block2():
        net = nn.Sequential()
        for i in range(4):
            net.add_module(f'block {i}', block1())
        return net

    class MySequential(nn.Module):
        def __init__(self, *args):
            super().__init__()
            for idx, module in enumerate(args):
                self.add_module(str(idx), module)

        def forward(self, X):
            for module in self.children():
                X = module(X)
            return X

    class FixedHiddenMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.rand_weight = torch.rand((20, 20))
            self.linear = nn.LazyLinear(20)

        def forward(self, X):
            X = self.linear(X)
            X = F.relu(X @ self.rand_weight + 1)
            X = self.linear(X)
            while X.abs().sum() > 1:
                X /= 2
            return X.sum()

    torch.manual_seed(0)
    X = torch.rand(size=(2, 4))
    rgnet = nn.Sequential(block2(), nn.LazyLinear(1))
    rgnet(X)
    names = [name for name, _ in rgnet.named_parameters()][:4]
    b = rgnet[0][1][0].bias.data
    chimera = nn.Sequential(MySequential(nn.LazyLinear(20), nn.ReLU()), nn.LazyLinear(20), FixedHiddenMLP())
    chimera(torch.rand(2, 20))

    def init_constant(module):
        if type(module) == nn.Linear:
            nn.init.constant_(module.weight, 1)
            nn.init.zeros_(module.bias)

    def init_xavier(module):
        if type(module) == nn.Linear:
            nn.init.xavier_uniform_(module.weight)

    chimera.apply(init_xavier)
    chimera[1].apply(init_constant)
    Xc = torch.tensor(np.random.default_rng(0).standard_normal((2, 20)).astype(np.float32))
    with torch.no_grad():
        chimera[2].rand_weight.copy_(torch.tensor(np.random.default_rng(1).random((20, 20)).astype(np.float32)))
        for p in chimera.parameters():
            p.copy_(torch.tensor(np.random.default_rng(p.numel()).normal(0, 0.2, tuple(p.shape)).astype(np.float32)))
    out = chimera(Xc)
    out.backward()

    class ResNeXtBlock(nn.Module):
        def __init__(self, num_channels, groups, bot_mul, use_1x1conv=False, strides=1):
            super().__init__()
            bot_channels = int(round(num_channels * bot_mul))
            self.conv1 = nn.LazyConv2d(bot_channels, kernel_size=1, stride=1)
            self.conv2 = nn.LazyConv2d(bot_channels, kernel_size=3, stride=strides, padding=1,
                                       groups=bot_channels // groups)
            self.conv3 = nn.LazyConv2d(num_channels, kernel_size=1, stride=1)
            self.bn1 = nn.LazyBatchNorm2d()
            self.bn2 = nn.LazyBatchNorm2d()
            self.bn3 = nn.LazyBatchNorm2d()
            if use_1x1conv:
                self.conv4 = nn.LazyConv2d(num_channels, kernel_size=1, stride=strides)
                self.bn4 = nn.LazyBatchNorm2d()
            else:
                self.conv4 = None

        def forward(self, X):
            Y = F.relu(self.bn1(self.conv1(X)))
            Y = F.relu(self.bn2(self.conv2(Y)))
            Y = self.bn3(self.conv3(Y))
            if self.conv4:
                X = self.bn4(self.conv4(X))
            return F.relu(Y + X)

    class PatchEmbedding(nn.Module):
        def __init__(self, img_size=8, patch_size=4, num_hiddens=12):
            super().__init__()
            self.num_patches = (img_size // patch_size) ** 2
            self.conv = nn.LazyConv2d(num_hiddens, kernel_size=patch_size, stride=patch_size)

        def forward(self, X):
            return self.conv(X).flatten(2).transpose(1, 2)

    class ViTish(nn.Module):
        def __init__(self, num_hiddens=12, num_classes=3):
            super().__init__()
            self.block = ResNeXtBlock(6, 2, 1, use_1x1conv=True, strides=1)
            self.patch_embedding = PatchEmbedding(8, 4, num_hiddens)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, num_hiddens))
            num_steps = self.patch_embedding.num_patches + 1
            self.pos_embedding = nn.Parameter(torch.randn(1, num_steps, num_hiddens))
            self.attn = nn.MultiheadAttention(num_hiddens, 3, batch_first=True)
            self.head = nn.Sequential(nn.LayerNorm(num_hiddens), nn.Linear(num_hiddens, num_classes))
            self.mlp = nn.Sequential(nn.LazyLinear(24), nn.GELU(), nn.LazyLinear(num_hiddens))

        def forward(self, X, dec_valid_lens):
            X = self.patch_embedding(self.block(X))
            X = torch.cat((self.cls_token.expand(X.shape[0], -1, -1), X), 1)
            X = X + self.pos_embedding
            # the decoder's causal valid_lens, as a mask
            mask = torch.arange(X.shape[1])[None, :] >= dec_valid_lens[:, None]
            X = X + self.attn(X, X, X, attn_mask=mask, need_weights=False)[0]
            X = X + self.mlp(X)
            return self.head(X[:, 0])

    torch.manual_seed(0)
    vit = ViTish()
    imgs = torch.tensor(np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32))
    num_steps = 5
    dec_valid_lens = torch.arange(1, num_steps + 1).repeat(1, 1).reshape(-1)
    vit(imgs, dec_valid_lens)
    with torch.no_grad():
        for p in vit.parameters():
            p.copy_(torch.tensor(np.random.default_rng(p.numel() + 1).normal(0, 0.3, tuple(p.shape)).astype(np.float32)))
    opt = m.optim.SGD(vit.parameters(), 0.1)
    vit_losses = []
    for step in range(3):
        l = F.cross_entropy(vit(imgs, dec_valid_lens), torch.tensor([0, 2]))
        opt.zero_grad()
        l.backward()
        nn.utils.clip_grad_norm_(vit.parameters(), 1.0)
        opt.step()
        vit_losses.append(l.item())
    return dict(names=names, b=b, out=out, grads=[p.grad for p in chimera.parameters()], vit=vit_losses,
                vit_grads={n: p.grad for n, p in vit.named_parameters()}, repeated=torch.arange(1, 4).repeat(2, 1))


def test_nested_blocks():
    ours, _ = run_both(nested_blocks, rtol=1e-4, atol=1e-5)
    assert ours["names"][0] == "0.block 0.0.weight"


# ----------------------------------------------------------------------------------------------
# d2l's Module / DataModule / Trainer in small form, everything drawn from the seed: synthetic data
# by torch.randn, a shuffled TensorDataset loader, lazy default inits, dropout masks, multinomial draws
# ----------------------------------------------------------------------------------------------


def seeded_trainer(m):
    torch, nn, F = m.torch, m.nn, m.F
    data = m.data

    class HyperParameters:
        def save_hyperparameters(self, ignore=[]):
            import inspect
            frame = inspect.currentframe().f_back
            _, _, _, local_vars = inspect.getargvalues(frame)
            self.hparams = {k: v for k, v in local_vars.items() if k not in set(ignore + ['self']) and not k.startswith('_')}
            for k, v in self.hparams.items():
                setattr(self, k, v)

    class Module(nn.Module, HyperParameters):
        def __init__(self):
            super().__init__()

        def loss(self, y_hat, y):
            raise NotImplementedError

        def forward(self, X):
            return self.net(X)

        def training_step(self, batch):
            return self.loss(self(*batch[:-1]), batch[-1])

        def validation_step(self, batch):
            return self.loss(self(*batch[:-1]), batch[-1])

        def configure_optimizers(self):
            return m.optim.SGD(self.parameters(), lr=self.lr)

    class DataModule(HyperParameters):
        def __init__(self, num_workers=0):
            self.save_hyperparameters()

        def get_tensorloader(self, tensors, train, indices=slice(0, None)):
            tensors = tuple(a[indices] for a in tensors)
            dataset = data.TensorDataset(*tensors)
            return data.DataLoader(dataset, self.batch_size, shuffle=train)

        def train_dataloader(self):
            return self.get_tensorloader((self.X, self.y), True, slice(0, self.num_train))

        def val_dataloader(self):
            return self.get_tensorloader((self.X, self.y), False, slice(self.num_train, None))

    class SyntheticRegressionData(DataModule):
        def __init__(self, w, b, noise=0.01, num_train=64, num_val=32, batch_size=16):
            super().__init__()
            self.save_hyperparameters()
            n = num_train + num_val
            self.X = torch.randn(n, len(w))
            noise = torch.randn(n, 1) * noise
            self.y = torch.matmul(self.X, w.reshape((-1, 1))) + b + noise

    class Trainer(HyperParameters):
        def __init__(self, max_epochs, gradient_clip_val=0):
            self.save_hyperparameters()

        def fit(self, model, data):
            self.train_dataloader = data.train_dataloader()
            self.val_dataloader = data.val_dataloader()
            self.model = model
            self.optim = model.configure_optimizers()
            self.epoch = 0
            self.train_batch_idx = 0
            self.val_batch_idx = 0
            self.losses, self.val_losses = [], []
            for self.epoch in range(self.max_epochs):
                self.fit_epoch()

        def fit_epoch(self):
            self.model.train()
            for batch in self.train_dataloader:
                loss = self.model.training_step(batch)
                self.optim.zero_grad()
                with torch.no_grad():  # as the book: backward runs under no_grad, the step writes leaves
                    loss.backward()
                    if self.gradient_clip_val > 0:
                        self.clip_gradients(self.gradient_clip_val, self.model)
                    self.optim.step()
                self.train_batch_idx += 1
                self.losses.append(loss.item())
            self.model.eval()
            for batch in self.val_dataloader:
                with torch.no_grad():
                    self.val_losses.append(self.model.validation_step(batch).item())
                self.val_batch_idx += 1

        def clip_gradients(self, grad_clip_val, model):
            params = [p for p in model.parameters() if p.requires_grad]
            norm = torch.sqrt(sum(torch.sum((p.grad ** 2)) for p in params))
            if norm > grad_clip_val:
                for param in params:
                    param.grad[:] *= grad_clip_val / norm

    class LinearRegressionScratch(Module):
        def __init__(self, num_inputs, lr, sigma=0.01):
            super().__init__()
            self.save_hyperparameters()
            self.w = torch.normal(0, sigma, (num_inputs, 1), requires_grad=True)
            self.b = torch.zeros(1, requires_grad=True)

        def forward(self, X):
            return torch.matmul(X, self.w) + self.b

        def loss(self, y_hat, y):
            l = (y_hat - y) ** 2 / 2
            return l.mean()

        def configure_optimizers(self):
            return SGD([self.w, self.b], self.lr)

    class SGD(HyperParameters):
        def __init__(self, params, lr):
            self.save_hyperparameters()

        def step(self):
            for param in self.params:
                param -= self.lr * param.grad

        def zero_grad(self):
            for param in self.params:
                if param.grad is not None:
                    param.grad.zero_()

    class DropoutMLP(Module):
        def __init__(self, num_outputs, num_hiddens_1, num_hiddens_2, dropout_1, dropout_2, lr):
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(
                nn.Flatten(), nn.LazyLinear(num_hiddens_1), nn.ReLU(), nn.Dropout(dropout_1),
                nn.LazyLinear(num_hiddens_2), nn.ReLU(), nn.Dropout(dropout_2), nn.LazyLinear(num_outputs))

        def loss(self, y_hat, y):
            return F.mse_loss(y_hat, y)

    torch.manual_seed(0)
    d = SyntheticRegressionData(w=torch.tensor([2, -3.4]), b=4.2)
    scratch = LinearRegressionScratch(2, lr=0.2)
    trainer = Trainer(max_epochs=3)
    trainer.fit(scratch, d)
    scratch_result = (trainer.losses, trainer.val_losses, scratch.w.detach(), scratch.b.detach())
    mlp = DropoutMLP(1, 8, 8, 0.5, 0.2, lr=0.05)
    mlp(d.X[:2])
    trainer = Trainer(max_epochs=2, gradient_clip_val=1)
    trainer.fit(mlp, d)
    mlp_result = (trainer.losses, trainer.val_losses, [p.detach() for p in mlp.parameters()])
    # the probability chapter's multinomial draws
    fair_probs = torch.ones([6]) / 6
    one = torch.distributions.multinomial.Multinomial(1, fair_probs).sample()
    counts = torch.distributions.multinomial.Multinomial(10, fair_probs).sample((50,))
    cum_counts = counts.cumsum(dim=0)
    estimates = cum_counts / cum_counts.sum(dim=1, keepdims=True)
    return dict(scratch=scratch_result, mlp=mlp_result, X=d.X, y=d.y, one=one, estimates=estimates)


def test_seeded_trainer():
    ours, _ = run_both(seeded_trainer, rtol=1e-5, atol=1e-6)
    w = ours["scratch"][2]
    np.testing.assert_allclose(w.ravel(), [2, -3.4], atol=0.5)
    assert ours["one"].sum() == 1 and ours["estimates"].shape == (50, 6)
