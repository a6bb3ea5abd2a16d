# ruff: noqa: B007, UP008, UP034  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is a function of
the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``, ``data``), run on chainrule and, where
PyTorch is installed, on PyTorch, comparing the numbers. Small models as tutorials write them: "Learning PyTorch with
examples"' dynamic network (control flow and weight sharing in forward), tensor hooks and ``autograd.grad``, a VAE, a
convolutional autoencoder, a Transformer-encoder classifier, a GAN step, and d2l's RNN training epoch (an explicit
state detached between minibatches, grad clipping by ``param.grad[:] *=``)."""

import math
import random

import numpy as np

from .pytorch_programs import load, quickstart_data, run_both, weights_of


def dynamic_net(m):
    """Learning PyTorch with examples: control flow and weight sharing in forward."""
    torch = m.torch

    class DynamicNet(m.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = m.nn.Parameter(torch.tensor(0.1))
            self.b = m.nn.Parameter(torch.tensor(0.2))
            self.c = m.nn.Parameter(torch.tensor(0.0))
            self.d = m.nn.Parameter(torch.tensor(0.0))
            self.e = m.nn.Parameter(torch.tensor(0.0))

        def forward(self, x):
            y = self.a + self.b * x + self.c * x ** 2 + self.d * x ** 3
            for exp in range(4, random.randint(4, 6)):
                y = y + self.e * x ** exp
            return y

        def string(self):
            return (f'y = {self.a.item()} + {self.b.item()} x + {self.c.item()} x^2 + {self.d.item()} x^3 + '
                    f'{self.e.item()} x^4 ? + {self.e.item()} x^5 ?')

    random.seed(0)
    x = torch.linspace(-math.pi, math.pi, 2000)
    y = torch.sin(x)
    model = DynamicNet()
    criterion = m.nn.MSELoss(reduction='sum')
    optimizer = m.optim.SGD(model.parameters(), lr=1e-8, momentum=0.9)
    losses = []
    for t in range(200):
        y_pred = model(x)
        loss = criterion(y_pred, y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"losses": losses[::20], "string": model.string()[:4]}


def test_dynamic_net():
    ours, _ = run_both(dynamic_net, rtol=1e-4, atol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0] and ours["string"] == "y = "


def tensor_hooks_and_grad(m, x_init):
    """Gradient hooks on tensors, retain_grad, torch.autograd.grad with create_graph (a gradient
    penalty as WGAN-GP writes it, the norm taken by hand), and grad accumulation across backward calls."""
    torch, nn = m.torch, m.nn
    x = torch.tensor(x_init, requires_grad=True)
    y = x * 2
    seen = []
    handle = y.register_hook(lambda grad: seen.append(grad.clone()) or grad * 3)
    z = (y ** 2).sum()
    z.backward()
    handle.remove()
    hooked = x.grad.clone()

    D = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    with torch.no_grad():
        for i, p in enumerate(D.parameters()):
            p.copy_(torch.linspace(-0.5, 0.5, p.numel()).reshape(p.shape) * (i + 1))
    real = torch.tensor(x_init.reshape(2, 3))
    alpha = torch.tensor([[0.3], [0.7]])
    interpolates = (alpha * real + ((1 - alpha) * real[[1, 0]]))
    interpolates.requires_grad_(True)
    d_interpolates = D(interpolates)
    gradients = torch.autograd.grad(outputs=d_interpolates, inputs=interpolates,
                                    grad_outputs=torch.ones_like(d_interpolates),
                                    create_graph=True, retain_graph=True, only_inputs=True)[0]
    gradients = gradients.view(gradients.size(0), -1)
    gradient_penalty = ((torch.sqrt((gradients ** 2).sum(dim=1)) - 1) ** 2).mean()
    gradient_penalty.backward()

    w = torch.ones(3, requires_grad=True)
    for _ in range(3):
        (w * torch.tensor([1., 2., 3.])).sum().backward()
    accumulated = w.grad.clone()
    return {"seen": seen, "hooked": hooked, "penalty": gradient_penalty, "D.grad": D[0].weight.grad,
            "accumulated": accumulated}


def test_tensor_hooks_and_grad():
    x = np.array([0.5, -1.0, 2.0, 0.25, 1.5, -0.75], dtype=np.float32)
    ours, _ = run_both(tensor_hooks_and_grad, x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["hooked"], 2 * 3 * 2 * (2 * x), rtol=1e-6)
    np.testing.assert_array_equal(ours["accumulated"], [3.0, 6.0, 9.0])


def vae_example(m, weights):
    """pytorch/examples' vae/main.py: the reparameterisation trick (randn_like), BCE + KL loss."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class VAE(nn.Module):
        def __init__(self):
            super(VAE, self).__init__()
            self.fc1 = nn.Linear(64, 32)
            self.fc21 = nn.Linear(32, 4)
            self.fc22 = nn.Linear(32, 4)
            self.fc3 = nn.Linear(4, 32)
            self.fc4 = nn.Linear(32, 64)

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar):
            std = torch.exp(0.5*logvar)
            eps = torch.randn_like(std)
            return mu + eps*std

        def decode(self, z):
            h3 = F.relu(self.fc3(z))
            return torch.sigmoid(self.fc4(h3))

        def forward(self, x):
            mu, logvar = self.encode(x.view(-1, 64))
            z = self.reparameterize(mu, logvar)
            return self.decode(z), mu, logvar

    def loss_function(recon_x, x, mu, logvar):
        BCE = F.binary_cross_entropy(recon_x, x.view(-1, 64), reduction='sum')
        KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return BCE + KLD

    model = VAE()
    if weights is None:
        return model
    load(m, model, weights)
    torch.manual_seed(0)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    images, _ = quickstart_data(n=64, side=8, classes=2, seed=14)
    data = torch.sigmoid(torch.tensor(images))
    train_losses = []
    for epoch in range(1, 16):
        model.train()
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(recon_batch, data, mu, logvar)
        loss.backward()
        optimizer.step()
        train_losses.append(loss.item() / len(data))
    model.eval()
    with torch.no_grad():
        sample = torch.randn(8, 4)
        sample = model.decode(sample)
    return {"losses": train_losses, "sample": (tuple(sample.view(8, 1, 8, 8).shape), sample.min().item() >= 0)}


def test_vae_example():
    weights = weights_of(lambda m: vae_example(m, None))
    ours, _ = run_both(vae_example, weights, compare=False)
    assert ours["losses"][-1] < ours["losses"][0] and ours["sample"] == ((8, 1, 8, 8), True)


def conv_autoencoder(m, weights):
    """A convolutional autoencoder: Conv2d/ReLU/MaxPool2d down, ConvTranspose2d/Sigmoid up, MSE."""
    torch, nn = m.torch, m.nn

    class Autoencoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(
                nn.Conv2d(1, 4, 3, stride=1, padding=1), nn.ReLU(True), nn.MaxPool2d(2, stride=2),
                nn.Conv2d(4, 8, 3, stride=1, padding=1), nn.ReLU(True), nn.MaxPool2d(2, stride=2))
            self.decoder = nn.Sequential(
                nn.ConvTranspose2d(8, 4, 2, stride=2), nn.ReLU(True),
                nn.ConvTranspose2d(4, 1, 2, stride=2), nn.Sigmoid())

        def forward(self, x):
            return self.decoder(self.encoder(x))

    model = Autoencoder()
    if weights is None:
        return model
    load(m, model, weights)
    images, _ = quickstart_data(n=16, side=8, classes=2, seed=15)
    img = torch.sigmoid(torch.tensor(images))
    criterion = nn.MSELoss()
    optimizer = m.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-5)
    losses = []
    for epoch in range(10):
        output = model(img)
        loss = criterion(output, img)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "code": tuple(model.encoder(img).shape)}


def test_conv_autoencoder():
    weights = weights_of(lambda m: conv_autoencoder(m, None))
    ours, _ = run_both(conv_autoencoder, weights, rtol=1e-4, atol=1e-6)
    assert ours["code"] == (16, 8, 2, 2) and ours["losses"][-1] < ours["losses"][0]


def transformer_encoder_classifier(m):
    """nn.TransformerEncoder over embeddings plus positions, mean-pooled, classified."""
    torch, nn = m.torch, m.nn

    class TransformerClassifier(nn.Module):
        def __init__(self, vocab, d_model=16, nhead=2, num_layers=2, num_classes=2):
            super().__init__()
            self.embedding = nn.Embedding(vocab, d_model)
            self.pos = nn.Parameter(torch.zeros(1, 8, d_model))
            encoder_layer = nn.TransformerEncoderLayer(d_model=d_model, nhead=nhead, dim_feedforward=32,
                                                       dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(encoder_layer, num_layers=num_layers)
            self.fc = nn.Linear(d_model, num_classes)

        def forward(self, x, mask=None):
            h = self.encoder(self.embedding(x) + self.pos[:, :x.size(1)], src_key_padding_mask=mask)
            return self.fc(h.mean(dim=1))

    model = TransformerClassifier(10)
    mha = nn.MultiheadAttention(16, 2, batch_first=True)
    q = torch.randn(2, 5, 16)
    attn_output, attn_weights = mha(q, q, q, need_weights=True)
    x = torch.randint(0, 10, (4, 8))
    return {"logits": tuple(model(x).shape), "attn": (tuple(attn_output.shape), tuple(attn_weights.shape))}


def test_transformer_encoder_classifier():
    ours, _ = run_both(transformer_encoder_classifier)
    assert ours == {"logits": (4, 2), "attn": ((2, 5, 16), (2, 5, 5))}


def gan_step(m, weights_d, weights_g):
    """A DCGAN-style training step: D on real and G(z).detach(), then G through D, BCE losses,
    two Adam optimizers with betas=(0.5, 0.999)."""
    torch, nn, optim = m.torch, m.nn, m.optim
    netD = load(m, nn.Sequential(nn.Linear(4, 16), nn.LeakyReLU(0.2, inplace=True), nn.Linear(16, 1), nn.Sigmoid()),
                weights_d)
    netG = load(m, nn.Sequential(nn.Linear(2, 16), nn.ReLU(True), nn.Linear(16, 4), nn.Tanh()), weights_g)
    criterion = nn.BCELoss()
    optimizerD = optim.Adam(netD.parameters(), lr=2e-3, betas=(0.5, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=2e-3, betas=(0.5, 0.999))
    real_label, fake_label = 1., 0.
    real_cpu = torch.linspace(-0.5, 0.5, 32).reshape(8, 4)
    noise = torch.linspace(-1, 1, 16).reshape(8, 2)
    history = []
    for i in range(10):
        netD.zero_grad()
        b_size = real_cpu.size(0)
        label = torch.full((b_size,), real_label, dtype=torch.float)
        output = netD(real_cpu).view(-1)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach()).view(-1)
        errD_fake = criterion(output, label)
        errD_fake.backward()
        errD = errD_real + errD_fake
        optimizerD.step()
        netG.zero_grad()
        label.fill_(real_label)
        output = netD(fake).view(-1)
        errG = criterion(output, label)
        errG.backward()
        optimizerG.step()
        history.append((errD.item(), errG.item(), D_x))
    return history


def test_gan_step():
    wd = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(4, 16), m.nn.LeakyReLU(0.2), m.nn.Linear(16, 1),
                                              m.nn.Sigmoid()))
    wg = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(2, 16), m.nn.ReLU(), m.nn.Linear(16, 4), m.nn.Tanh()))
    ours, _ = run_both(gan_step, wd, wg, rtol=1e-4, atol=1e-5)
    assert len(ours) == 10 and all(np.isfinite(ours).ravel())


def d2l_rnn_state(m, weights):
    """d2l's RNN training epoch: nn.RNN with an explicit state, one-hot inputs (X.T.long()),
    the state detached between minibatches with detach_(), grad clipping by param.grad[:] *=."""
    torch, nn, F = m.torch, m.nn, m.F

    class RNNModel(nn.Module):
        def __init__(self, rnn_layer, vocab_size):
            super(RNNModel, self).__init__()
            self.rnn = rnn_layer
            self.vocab_size = vocab_size
            self.num_hiddens = self.rnn.hidden_size
            self.num_directions = 1
            self.linear = nn.Linear(self.num_hiddens, self.vocab_size)

        def forward(self, inputs, state):
            X = F.one_hot(inputs.T.long(), self.vocab_size)
            X = X.to(torch.float32)
            Y, state = self.rnn(X, state)
            output = self.linear(Y.reshape((-1, Y.shape[-1])))
            return output, state

        def begin_state(self, device, batch_size=1):
            return torch.zeros((self.num_directions * self.rnn.num_layers, batch_size, self.num_hiddens),
                               device=device)

    net = RNNModel(nn.RNN(8, 16), 8)
    if weights is None:
        return net
    load(m, net, weights)

    def grad_clipping(net, theta):
        params = [p for p in net.parameters() if p.requires_grad]
        norm = torch.sqrt(sum(torch.sum((p.grad ** 2)) for p in params))
        if norm > theta:
            for param in params:
                param.grad[:] *= theta / norm

    corpus = torch.tensor([i % 8 for i in range(200)])
    loss = nn.CrossEntropyLoss()
    updater = m.optim.SGD(net.parameters(), lr=1)
    state = None
    history = []
    for epoch in range(3):
        for i in range(0, 160, 20):
            X = corpus[i:i + 20].reshape(4, 5)
            Y = corpus[i + 1:i + 21].reshape(4, 5)
            if state is None:
                state = net.begin_state(batch_size=X.shape[0], device="cpu")
            else:
                state.detach_()
            y = Y.T.reshape(-1)
            y_hat, state = net(X, state)
            l = loss(y_hat, y.long()).mean()
            updater.zero_grad()
            l.backward()
            grad_clipping(net, 1)
            updater.step()
        history.append(l.item())
    return history


def test_d2l_rnn_state():
    weights = weights_of(lambda m: d2l_rnn_state(m, None))
    ours, _ = run_both(d2l_rnn_state, weights, rtol=1e-3, atol=1e-4)
    assert ours[-1] < ours[0]
