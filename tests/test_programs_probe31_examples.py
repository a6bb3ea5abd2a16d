# ruff: noqa: E501, E701, E702, E731, E741, B007, B023, F841, UP008, UP031, UP032  (the programs are kept as their authors write them)
"""Programs of the official pytorch/examples repository that session 9's probe (tests/test_programs_probe9_examples.py)
left out, each kept as written (its model classes, training and evaluation functions and idioms) with sizes shrunk,
datasets replaced by seeded random tensors and a few steps only; run on chainrule and, where installed, on PyTorch
under the same seeds, comparing losses, outputs and gradients, and checked without PyTorch against invariants.

mnist (Net with dropout, ``nll_loss``, Adadelta, StepLR, the test loop's ``argmax``/``eq``/``view_as``);
mnist_hogwild's train/test epochs single-process after ``share_memory()``; vae (``randn_like`` reparameterisation,
``binary_cross_entropy`` summed, the closed-form KL); dcgan (``ConvTranspose2d``/``BatchNorm2d`` generator and
discriminator, ``weights_init`` by class name through ``apply``, ``BCELoss`` with ``fill_``-ed labels, ``detach``);
word_language_model's RNNModel as LSTM with tied weights, GRU and RNN_TANH (``batchify``, ``get_batch``,
``repackage_hidden``, ``clip_grad_norm_``, the hand-written SGD ``p.data.add_(p.grad, alpha=-lr)``, a checkpoint
through ``torch.save``/``torch.load``, generate.py's ``multinomial`` sampling with ``input.fill_``);
reinforcement_learning's reinforce.py and actor_critic.py on a tiny pure-Python environment (``Categorical``
sampling, ``torch.tensor`` of a deque and of a list holding a 0-d tensor, ``smooth_l1_loss``); gat's
GraphAttentionLayer with load_cora (``torch.FloatTensor`` of a NumPy array, a sparse diagonal times dense features,
``sparse_coo_tensor`` plus ``eye``, ``where`` of non-edges, ``.mT``); FSDP2's toy Transformer built under
``torch.device("meta")``, materialised by ``to_empty`` and ``reset_parameters``, trained with SDPA dropout;
fx's invert, inline_function, wrap_output_dynamically, custom_tracer and module_tracer examples.
All agreed with PyTorch when written (session 31) but for the arguments a trace through nn.ReLU records (a strict
xfail below); tracing through every layer as custom_tracer.py's LowerReluTracer does found that the activation and
dropout layers ran their function without dispatching (fixed: tests/test_probe31_examples_fixes.py)."""

import io
from collections import deque, namedtuple
from dataclasses import dataclass
from enum import Enum, auto
from types import SimpleNamespace

import numpy as np
import pytest

from .pytorch_programs import OURS, amd_processor, run_both

# dropout's masks are PyTorch's on Intel only (see pytorch_programs.amd_processor)
SAME_DROPOUT = not amd_processor()


# ---------------------------------------------------------------- mnist/main.py
def mnist(m, epochs=2):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    StepLR = optim.lr_scheduler.StepLR
    torch.manual_seed(1)

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, 1)
            self.conv2 = nn.Conv2d(4, 8, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(72, 16)
            self.fc2 = nn.Linear(16, 10)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = torch.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.dropout2(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    log, losses = [], []

    def train(args, model, device, train_loader, optimizer, epoch):
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            if batch_idx % args.log_interval == 0:
                log.append('Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'.format(
                    epoch, batch_idx * len(data), len(train_loader.dataset),
                    100. * batch_idx / len(train_loader), loss.item()))
                losses.append(loss.item())  # the printed loss, unrounded, for comparison

    def test(model, device, test_loader):
        model.eval()
        test_loss = 0
        correct = 0
        with torch.no_grad():
            for data, target in test_loader:
                data, target = data.to(device), target.to(device)
                output = model(data)
                test_loss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
                pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
                correct += pred.eq(target.view_as(pred)).sum().item()
        test_loss /= len(test_loader.dataset)
        return test_loss, correct

    g = torch.Generator().manual_seed(0)
    images = torch.rand(48, 1, 10, 10, generator=g)
    labels = torch.randint(0, 10, (48,), generator=g)
    dataset = m.data.TensorDataset(images, labels)
    train_loader = m.data.DataLoader(dataset, batch_size=16, shuffle=False)
    test_loader = m.data.DataLoader(dataset, batch_size=32)
    args = SimpleNamespace(log_interval=1, lr=1.0, gamma=0.7)
    device = torch.device("cpu")
    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    results = []
    for epoch in range(1, epochs + 1):
        train(args, model, device, train_loader, optimizer, epoch)
        results.append(test(model, device, test_loader))
        scheduler.step()
    return [line.rsplit(" ", 1)[0] for line in log], losses, results, optimizer.param_groups[0]["lr"], model.fc2.weight


def test_mnist():
    log, losses, results, lr, weight = run_both(mnist, compare=SAME_DROPOUT, rtol=1e-4, atol=1e-5)[0]
    assert len(log) == 6 and log[1] == "Train Epoch: 1 [16/48 (33%)]\tLoss:" and len(losses) == 6
    assert lr == pytest.approx(0.49) and all(0 <= c <= 48 for _, c in results) and weight.shape == (10, 16)


# ---------------------------------------------------------------- mnist_hogwild/train.py (one process)
def hogwild(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(1)

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 4, kernel_size=3)
            self.conv2 = nn.Conv2d(4, 6, kernel_size=3)
            self.conv2_drop = nn.Dropout2d()
            self.fc1 = nn.Linear(6, 12)
            self.fc2 = nn.Linear(12, 10)

        def forward(self, x):
            x = F.relu(F.max_pool2d(self.conv1(x), 2))
            x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
            x = x.view(-1, 6)
            x = F.relu(self.fc1(x))
            x = F.dropout(x, training=self.training)
            x = self.fc2(x)
            return F.log_softmax(x, dim=1)

    losses = []

    def train_epoch(epoch, args, model, device, data_loader, optimizer):
        model.train()
        pid = 0
        for batch_idx, (data, target) in enumerate(data_loader):
            optimizer.zero_grad()
            output = model(data.to(device))
            loss = F.nll_loss(output.to(device), target.to(device))
            loss.backward()
            optimizer.step()
            if batch_idx % args.log_interval == 0:
                losses.append(loss.item())

    def test_epoch(model, device, data_loader):
        model.eval()
        test_loss = 0
        correct = 0
        with torch.no_grad():
            for data, target in data_loader:
                output = model(data.to(device))
                test_loss += F.nll_loss(output, target.to(device), reduction='sum').item()  # sum up batch loss
                pred = output.max(1)[1]  # get the index of the max log-probability
                correct += pred.eq(target.to(device)).sum().item()
        test_loss /= len(data_loader.dataset)
        return test_loss, correct

    model = Net()
    model.share_memory()  # gradients are allocated lazily, so they are not shared here
    g = torch.Generator().manual_seed(3)
    dataset = m.data.TensorDataset(torch.randn(40, 1, 10, 10, generator=g), torch.randint(0, 10, (40,), generator=g))
    args = SimpleNamespace(seed=1, log_interval=1, lr=0.01, momentum=0.5, epochs=2)
    torch.manual_seed(args.seed + 0)
    train_loader = m.data.DataLoader(dataset, batch_size=8, shuffle=True)
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    for epoch in range(1, args.epochs + 1):
        train_epoch(epoch, args, model, "cpu", train_loader, optimizer)
    return losses, test_epoch(model, "cpu", m.data.DataLoader(dataset, batch_size=10))


def test_mnist_hogwild_one_process():
    losses, (test_loss, correct) = run_both(hogwild, compare=SAME_DROPOUT, rtol=1e-4, atol=1e-5)[0]
    assert len(losses) == 10 and np.isfinite(losses).all() and test_loss > 0 and 0 <= correct <= 40


# ---------------------------------------------------------------- vae/main.py
def vae(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(1)

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

    model = VAE()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)

    def loss_function(recon_x, x, mu, logvar):
        BCE = F.binary_cross_entropy(recon_x, x.view(-1, 64), reduction='sum')
        KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return BCE + KLD

    data_all = torch.rand(24, 1, 8, 8)
    loader = m.data.DataLoader(m.data.TensorDataset(data_all, torch.zeros(24)), batch_size=8)
    train_losses, test_losses = [], []
    for epoch in range(1, 3):
        model.train()
        train_loss = 0
        for batch_idx, (data, _) in enumerate(loader):
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = loss_function(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
        train_losses.append(train_loss / len(loader.dataset))
        model.eval()
        test_loss = 0
        with torch.no_grad():
            for i, (data, _) in enumerate(loader):
                recon_batch, mu, logvar = model(data)
                test_loss += loss_function(recon_batch, data, mu, logvar).item()
                if i == 0:
                    n = min(data.size(0), 8)
                    comparison = torch.cat([data[:n], recon_batch.view(8, 1, 8, 8)[:n]])
        test_losses.append(test_loss / len(loader.dataset))
        with torch.no_grad():
            sample = torch.randn(4, 4)
            sample = model.decode(sample).cpu()
    return train_losses, test_losses, comparison, sample.view(4, 1, 8, 8)


def test_vae():
    train_losses, test_losses, comparison, sample = run_both(vae, rtol=1e-4, atol=1e-5)[0]
    assert train_losses[1] < train_losses[0] and comparison.shape == (16, 1, 8, 8)
    assert ((sample > 0) & (sample < 1)).all()


# ---------------------------------------------------------------- dcgan/main.py
def dcgan(m, niter=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(999)
    nz, ngf, ndf, nc, ngpu = 8, 4, 4, 3, 1

    def weights_init(m):
        classname = m.__class__.__name__
        if classname.find('Conv') != -1:
            torch.nn.init.normal_(m.weight, 0.0, 0.02)
        elif classname.find('BatchNorm') != -1:
            torch.nn.init.normal_(m.weight, 1.0, 0.02)
            torch.nn.init.zeros_(m.bias)

    class Generator(nn.Module):
        def __init__(self, ngpu):
            super(Generator, self).__init__()
            self.ngpu = ngpu
            self.main = nn.Sequential(
                nn.ConvTranspose2d(     nz, ngf * 4, 4, 1, 0, bias=False),
                nn.BatchNorm2d(ngf * 4),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * 2),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2,      nc, 4, 2, 1, bias=False),
                nn.Tanh()
            )

        def forward(self, input):
            output = self.main(input)
            return output

    class Discriminator(nn.Module):
        def __init__(self, ngpu):
            super(Discriminator, self).__init__()
            self.ngpu = ngpu
            self.main = nn.Sequential(
                nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 2),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False),
                nn.Sigmoid()
            )

        def forward(self, input):
            output = self.main(input)
            return output.view(-1, 1).squeeze(1)

    netG = Generator(ngpu)
    netG.apply(weights_init)
    netD = Discriminator(ngpu)
    netD.apply(weights_init)
    criterion = nn.BCELoss()
    fixed_noise = torch.randn(6, nz, 1, 1)
    real_label = 1
    fake_label = 0
    optimizerD = optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=0.0002, betas=(0.5, 0.999))
    images = torch.rand(12, nc, 16, 16) * 2 - 1
    dataloader = m.data.DataLoader(m.data.TensorDataset(images, torch.zeros(12)), batch_size=6)
    log = []
    for epoch in range(niter):
        for i, data in enumerate(dataloader, 0):
            netD.zero_grad()
            real_cpu = data[0]
            batch_size = real_cpu.size(0)
            label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype)
            output = netD(real_cpu)
            errD_real = criterion(output, label)
            errD_real.backward()
            D_x = output.mean().item()
            noise = torch.randn(batch_size, nz, 1, 1)
            fake = netG(noise)
            label.fill_(fake_label)
            output = netD(fake.detach())
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = output.mean().item()
            errD = errD_real + errD_fake
            optimizerD.step()
            netG.zero_grad()
            label.fill_(real_label)  # fake labels are real for generator cost
            output = netD(fake)
            errG = criterion(output, label)
            errG.backward()
            D_G_z2 = output.mean().item()
            optimizerG.step()
            log.append('[%d/%d][%d/%d] Loss_D: %.4f Loss_G: %.4f D(x): %.4f D(G(z)): %.4f / %.4f'
                       % (epoch, niter, i, len(dataloader), errD.item(), errG.item(), D_x, D_G_z1, D_G_z2))
    with torch.no_grad():
        fake = netG(fixed_noise)
    return log, fake, netD.main[3].running_var


def test_dcgan():
    log, fake, running_var = run_both(dcgan, compare=False)[0]
    assert len(log) == 4 and log[0].startswith("[0/2][0/2] Loss_D: ") and fake.shape == (6, 3, 16, 16)
    assert np.abs(fake).max() <= 1 and (running_var > 0).all()


def test_dcgan_agrees_with_pytorch():
    ours, theirs = run_both(dcgan, compare=False)
    if theirs is not None:
        # the log's numbers are printed to four places: compared as numbers
        numbers = lambda log: np.array([float(t) for line in log for t in line.replace("/", " ").split() if t[0].isdigit() and "." in t])
        np.testing.assert_allclose(numbers(ours[0]), numbers(theirs[0]), atol=2e-4)
        np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- word_language_model/model.py and main.py
def word_language_model(m, rnn_type, tied, epochs=2):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1111)

    class RNNModel(nn.Module):
        """Container module with an encoder, a recurrent module, and a decoder."""

        def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
            super(RNNModel, self).__init__()
            self.ntoken = ntoken
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            if rnn_type in ['LSTM', 'GRU']:
                self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
            else:
                try:
                    nonlinearity = {'RNN_TANH': 'tanh', 'RNN_RELU': 'relu'}[rnn_type]
                except KeyError as e:
                    raise ValueError( """An invalid option for `--model` was supplied,
                                     options are ['LSTM', 'GRU', 'RNN_TANH' or 'RNN_RELU']""") from e
                self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=dropout)
            self.decoder = nn.Linear(nhid, ntoken)
            if tie_weights:
                if nhid != ninp:
                    raise ValueError('When using the tied flag, nhid must be equal to emsize')
                self.decoder.weight = self.encoder.weight
            self.init_weights()
            self.rnn_type = rnn_type
            self.nhid = nhid
            self.nlayers = nlayers

        def init_weights(self):
            initrange = 0.1
            nn.init.uniform_(self.encoder.weight, -initrange, initrange)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -initrange, initrange)

        def forward(self, input, hidden):
            emb = self.drop(self.encoder(input))
            output, hidden = self.rnn(emb, hidden)
            output = self.drop(output)
            decoded = self.decoder(output)
            decoded = decoded.view(-1, self.ntoken)
            return F.log_softmax(decoded, dim=1), hidden

        def init_hidden(self, bsz):
            weight = next(self.parameters())
            if self.rnn_type == 'LSTM':
                return (weight.new_zeros(self.nlayers, bsz, self.nhid),
                        weight.new_zeros(self.nlayers, bsz, self.nhid))
            else:
                return weight.new_zeros(self.nlayers, bsz, self.nhid)

    args = SimpleNamespace(batch_size=4, bptt=5, clip=0.25, log_interval=2, lr=20.0)
    device = torch.device("cpu")
    ntokens = 17
    g = torch.Generator().manual_seed(5)
    corpus_train = torch.randint(0, ntokens, (83,), generator=g)
    corpus_valid = torch.randint(0, ntokens, (41,), generator=g)

    def batchify(data, bsz):
        nbatch = data.size(0) // bsz
        data = data.narrow(0, 0, nbatch * bsz)
        data = data.view(bsz, -1).t().contiguous()
        return data.to(device)

    eval_batch_size = 10
    train_data = batchify(corpus_train, args.batch_size)
    val_data = batchify(corpus_valid, eval_batch_size)
    model = RNNModel(rnn_type, ntokens, 8, 8, 2, 0.2, tied).to(device)
    criterion = nn.NLLLoss()

    def repackage_hidden(h):
        """Wraps hidden states in new Tensors, to detach them from their history."""
        if isinstance(h, torch.Tensor):
            return h.detach()
        else:
            return tuple(repackage_hidden(v) for v in h)

    def get_batch(source, i):
        seq_len = min(args.bptt, len(source) - 1 - i)
        data = source[i:i+seq_len]
        target = source[i+1:i+1+seq_len].view(-1)
        return data, target

    def evaluate(data_source):
        model.eval()
        total_loss = 0.
        hidden = model.init_hidden(eval_batch_size)
        with torch.no_grad():
            for i in range(0, data_source.size(0) - 1, args.bptt):
                data, targets = get_batch(data_source, i)
                output, hidden = model(data, hidden)
                hidden = repackage_hidden(hidden)
                total_loss += len(data) * criterion(output, targets).item()
        return total_loss / (len(data_source) - 1)

    log, norms = [], []

    def train():
        model.train()
        total_loss = 0.
        hidden = model.init_hidden(args.batch_size)
        for batch, i in enumerate(range(0, train_data.size(0) - 1, args.bptt)):
            data, targets = get_batch(train_data, i)
            model.zero_grad()
            hidden = repackage_hidden(hidden)
            output, hidden = model(data, hidden)
            loss = criterion(output, targets)
            loss.backward()
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip))
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
            total_loss += loss.item()
            if batch % args.log_interval == 0 and batch > 0:
                cur_loss = total_loss / args.log_interval
                log.append((epoch, batch, len(train_data) // args.bptt, lr, cur_loss, math.exp(cur_loss)))
                total_loss = 0

    import math
    lr = args.lr
    best_val_loss = None
    val_losses = []
    for epoch in range(1, epochs + 1):
        train()
        val_loss = evaluate(val_data)
        val_losses.append(val_loss)
        if not best_val_loss or val_loss < best_val_loss:
            best_val_loss = val_loss
        else:
            lr /= 4.0
    tied_now = model.decoder.weight is model.encoder.weight
    # main.py's checkpoint, here in memory, and generate.py's sampling loop
    buffer = io.BytesIO()
    with buffer as f:
        torch.save(model.state_dict(), f)
        f.seek(0)
        model = RNNModel(rnn_type, ntokens, 8, 8, 2, 0.2, tied)
        model.load_state_dict(torch.load(f))
    model.rnn.flatten_parameters()
    model.eval()
    hidden = model.init_hidden(1)
    input = torch.randint(ntokens, (1, 1), dtype=torch.long)
    words, temperature = [], 1.0
    with torch.no_grad():  # no tracking history
        for i in range(12):
            output, hidden = model(input, hidden)
            word_weights = output.squeeze().div(temperature).exp().cpu()
            word_idx = torch.multinomial(word_weights, 1)[0]
            input.fill_(word_idx)
            words.append(int(word_idx))
        word_tensor = torch.Tensor([[word_idx]]).long()
    return (log, norms, val_losses, lr, tied_now, len(list(model.parameters())), model.encoder.weight,
            words, word_tensor)


@pytest.mark.parametrize("rnn_type, tied", [("LSTM", True), ("GRU", False), ("RNN_TANH", True)])
def test_word_language_model(rnn_type, tied):
    # SGD at lr 20 through a tanh RNN amplifies float32 rounding: the eighth step's gradient norm 1e-5 apart,
    # the embedding 3e-5; in float64 the two libraries agree to 4e-14 (session 31)
    rtol, atol = (1e-3, 1e-4) if rnn_type == "RNN_TANH" else (1e-4, 1e-5)
    log, norms, val_losses, lr, tied_now, n_params, embedding, words, word_tensor = run_both(
        word_language_model, rnn_type, tied, compare=SAME_DROPOUT, rtol=rtol, atol=atol)[0]
    assert len(words) == 12 and all(0 <= w < 17 for w in words) and word_tensor.dtype == np.int64
    assert word_tensor.shape == (1, 1) and word_tensor[0, 0] == words[-1]
    assert tied_now is tied and len(log) == 2 and len(norms) == 8 and np.isfinite(val_losses).all()
    # nn.Module.parameters() yields a shared (tied) parameter once
    assert n_params == {"LSTM": 10, "GRU": 11, "RNN_TANH": 10}[rnn_type] and embedding.shape == (17, 8)


def test_word_language_model_rejects_an_unknown_model():
    with pytest.raises(ValueError, match="An invalid option for `--model`"):
        word_language_model(OURS, "RNN_SIGMOID", False)


# ---------------------------------------------------------------- reinforcement_learning, on a tiny environment
class TinyCartPole:
    """A pure-Python stand-in for gym's CartPole-v1: a 4-number state drifting with the chosen push; the episode
    ends once the first coordinate leaves [-1, 1] or after 12 steps. Seeded, deterministic."""

    def __init__(self, seed):
        self.rng = np.random.RandomState(seed)

    def reset(self, seed=None):
        self.t = 0
        self.state = self.rng.uniform(-0.05, 0.05, size=4)
        return self.state.copy(), {}

    def step(self, action):
        self.t += 1
        push = 0.1 if action == 1 else -0.1
        x, v, th, w = self.state
        w = w + 0.3 * th + push
        th = th + 0.1 * w
        v = v + push
        x = x + 0.1 * v + 0.2 * th
        self.state = np.array([x, v, th, w])
        terminated = abs(x) > 1.0
        return self.state.copy(), 1.0, terminated, self.t >= 12, {}


def reinforce(m, episodes=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Categorical = torch.distributions.Categorical
    args = SimpleNamespace(gamma=0.99, seed=543)
    env = TinyCartPole(args.seed)
    env.reset(seed=args.seed)
    torch.manual_seed(args.seed)

    class Policy(nn.Module):
        def __init__(self):
            super(Policy, self).__init__()
            self.affine1 = nn.Linear(4, 128)
            self.dropout = nn.Dropout(p=0.6)
            self.affine2 = nn.Linear(128, 2)
            self.saved_log_probs = []
            self.rewards = []

        def forward(self, x):
            x = self.affine1(x)
            x = self.dropout(x)
            x = F.relu(x)
            action_scores = self.affine2(x)
            return F.softmax(action_scores, dim=1)

    policy = Policy()
    optimizer = optim.Adam(policy.parameters(), lr=1e-2)
    eps = np.finfo(np.float32).eps.item()

    def select_action(state):
        state = torch.from_numpy(state).float().unsqueeze(0)
        probs = policy(state)
        m = Categorical(probs)
        action = m.sample()
        policy.saved_log_probs.append(m.log_prob(action))
        return action.item()

    losses = []

    def finish_episode():
        R = 0
        policy_loss = []
        returns = deque()
        for r in policy.rewards[::-1]:
            R = r + args.gamma * R
            returns.appendleft(R)
        returns = torch.tensor(returns)
        returns = (returns - returns.mean()) / (returns.std() + eps)
        for log_prob, R in zip(policy.saved_log_probs, returns):
            policy_loss.append(-log_prob * R)
        optimizer.zero_grad()
        policy_loss = torch.cat(policy_loss).sum()
        policy_loss.backward()
        optimizer.step()
        losses.append((returns.dtype == torch.float32, policy_loss.item()))
        del policy.rewards[:]
        del policy.saved_log_probs[:]

    running_reward = 10
    rewards = []
    for i_episode in range(1, episodes + 1):
        state, _ = env.reset()
        ep_reward = 0
        for t in range(1, 10000):
            action = select_action(state)
            state, reward, terminated, truncated, _ = env.step(action)
            policy.rewards.append(reward)
            ep_reward += reward
            if terminated or truncated:
                break
        running_reward = 0.05 * ep_reward + (1 - 0.05) * running_reward
        rewards.append(ep_reward)
        finish_episode()
    return rewards, losses, running_reward, policy.affine2.weight


def test_reinforce():
    rewards, losses, running_reward, weight = run_both(reinforce, compare=SAME_DROPOUT, rtol=1e-4, atol=1e-5)[0]
    assert len(rewards) == 4 and all(float32 for float32, _ in losses) and weight.shape == (2, 128)


def actor_critic(m, episodes=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Categorical = torch.distributions.Categorical
    args = SimpleNamespace(gamma=0.99, seed=543)
    env = TinyCartPole(args.seed)
    env.reset(seed=args.seed)
    torch.manual_seed(args.seed)
    SavedAction = namedtuple('SavedAction', ['log_prob', 'value'])

    class Policy(nn.Module):
        """
        implements both actor and critic in one model
        """
        def __init__(self):
            super(Policy, self).__init__()
            self.affine1 = nn.Linear(4, 128)
            self.action_head = nn.Linear(128, 2)
            self.value_head = nn.Linear(128, 1)
            self.saved_actions = []
            self.rewards = []

        def forward(self, x):
            x = F.relu(self.affine1(x))
            action_prob = F.softmax(self.action_head(x), dim=-1)
            state_values = self.value_head(x)
            return action_prob, state_values

    model = Policy()
    optimizer = optim.Adam(model.parameters(), lr=3e-2)
    eps = np.finfo(np.float32).eps.item()

    def select_action(state):
        state = torch.from_numpy(state).float()
        probs, state_value = model(state)
        m = Categorical(probs)
        action = m.sample()
        model.saved_actions.append(SavedAction(m.log_prob(action), state_value))
        return action.item()

    losses = []

    def finish_episode():
        R = 0
        saved_actions = model.saved_actions
        policy_losses = []
        value_losses = []
        returns = []
        for r in model.rewards[::-1]:
            R = r + args.gamma * R
            returns.insert(0, R)
        returns = torch.tensor(returns)
        returns = (returns - returns.mean()) / (returns.std() + eps)
        for (log_prob, value), R in zip(saved_actions, returns):
            advantage = R - value.item()
            policy_losses.append(-log_prob * advantage)
            value_losses.append(F.smooth_l1_loss(value, torch.tensor([R])))
        optimizer.zero_grad()
        loss = torch.stack(policy_losses).sum() + torch.stack(value_losses).sum()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        del model.rewards[:]
        del model.saved_actions[:]

    running_reward = 10
    rewards = []
    for i_episode in range(1, episodes + 1):
        state, _ = env.reset()
        ep_reward = 0
        for t in range(1, 10000):
            action = select_action(state)
            state, reward, terminated, truncated, _ = env.step(action)
            model.rewards.append(reward)
            ep_reward += reward
            if terminated or truncated:
                break
        running_reward = 0.05 * ep_reward + (1 - 0.05) * running_reward
        rewards.append(ep_reward)
        finish_episode()
    return rewards, losses, running_reward, model.value_head.weight


def test_actor_critic():
    rewards, losses, running_reward, weight = run_both(actor_critic, rtol=1e-4, atol=1e-5)[0]
    assert len(rewards) == 4 and np.isfinite(losses).all() and weight.shape == (1, 128)


# ---------------------------------------------------------------- gat/main.py
def gat(m, epochs=3):
    torch, nn, F = m.torch, m.nn, m.F
    Adam = m.optim.Adam

    class GraphAttentionLayer(nn.Module):
        def __init__(self, in_features: int, out_features: int, n_heads: int, concat: bool = False, dropout: float = 0.4, leaky_relu_slope: float = 0.2):
            super(GraphAttentionLayer, self).__init__()
            self.n_heads = n_heads
            self.concat = concat
            self.dropout = dropout
            if concat:
                self.out_features = out_features
                assert out_features % n_heads == 0
                self.n_hidden = out_features // n_heads
            else:
                self.n_hidden = out_features
            self.W = nn.Parameter(torch.empty(size=(in_features, self.n_hidden * n_heads)))
            self.a = nn.Parameter(torch.empty(size=(n_heads, 2 * self.n_hidden, 1)))
            self.leakyrelu = nn.LeakyReLU(leaky_relu_slope)
            self.softmax = nn.Softmax(dim=1)
            self.reset_parameters()

        def reset_parameters(self):
            nn.init.xavier_normal_(self.W)
            nn.init.xavier_normal_(self.a)

        def _get_attention_scores(self, h_transformed):
            source_scores = torch.matmul(h_transformed, self.a[:, :self.n_hidden, :])
            target_scores = torch.matmul(h_transformed, self.a[:, self.n_hidden:, :])
            e = source_scores + target_scores.mT
            return self.leakyrelu(e)

        def forward(self,  h, adj_mat):
            n_nodes = h.shape[0]
            h_transformed = torch.mm(h, self.W)
            h_transformed = F.dropout(h_transformed, self.dropout, training=self.training)
            h_transformed = h_transformed.view(n_nodes, self.n_heads, self.n_hidden).permute(1, 0, 2)
            e = self._get_attention_scores(h_transformed)
            connectivity_mask = -9e16 * torch.ones_like(e)
            e = torch.where(adj_mat > 0, e, connectivity_mask)
            attention = F.softmax(e, dim=-1)
            attention = F.dropout(attention, self.dropout, training=self.training)
            h_prime = torch.matmul(attention, h_transformed)
            if self.concat:
                h_prime = h_prime.permute(1, 0, 2).contiguous().view(n_nodes, self.out_features)
            else:
                h_prime = h_prime.mean(dim=0)
            return h_prime

    class GAT(nn.Module):
        def __init__(self, in_features, n_hidden, n_heads, num_classes, concat=False, dropout=0.4, leaky_relu_slope=0.2):
            super(GAT, self).__init__()
            self.gat1 = GraphAttentionLayer(
                in_features=in_features, out_features=n_hidden, n_heads=n_heads,
                concat=concat, dropout=dropout, leaky_relu_slope=leaky_relu_slope
                )
            self.gat2 = GraphAttentionLayer(
                in_features=n_hidden, out_features=num_classes, n_heads=1,
                concat=False, dropout=dropout, leaky_relu_slope=leaky_relu_slope
                )

        def forward(self, input_tensor, adj_mat):
            x = self.gat1(input_tensor, adj_mat)
            x = F.elu(x)
            x = self.gat2(x, adj_mat)
            return F.log_softmax(x, dim=1)

    def load_cora(content_tensor, cites_tensor, device='cpu'):
        # (np.genfromtxt of cora.content and cora.cites replaced by the arrays it gives)
        features = torch.FloatTensor(content_tensor[:, 1:-1].astype(np.int32))
        scale_vector = torch.sum(features, dim=1)
        scale_vector = 1 / scale_vector
        scale_vector[scale_vector == float('inf')] = 0
        scale_vector = torch.diag(scale_vector).to_sparse()
        features = scale_vector @ features
        classes, labels = np.unique(content_tensor[:, -1], return_inverse=True)
        labels = torch.LongTensor(labels)
        idx = content_tensor[:, 0].astype(np.int32)
        idx_map = {id: pos for pos, id in enumerate(idx)}
        edges = np.array(
            list(map(lambda edge: [idx_map[edge[0]], idx_map[edge[1]]],
                cites_tensor)), dtype=np.int32)
        V = len(idx)
        E = edges.shape[0]
        adj_mat = torch.sparse_coo_tensor(edges.T, torch.ones(E), (V, V), dtype=torch.int64)
        adj_mat = torch.eye(V) + adj_mat
        return features.to(device), labels.to(device), adj_mat.to(device)

    log = []

    def train_iter(epoch, model, optimizer, criterion, input, target, mask_train, mask_val, print_every=10):
        model.train()
        optimizer.zero_grad()
        output = model(*input)
        loss = criterion(output[mask_train], target[mask_train])
        loss.backward()
        optimizer.step()
        loss_train, acc_train = test(model, criterion, input, target, mask_train)
        loss_val, acc_val = test(model, criterion, input, target, mask_val)
        if epoch % print_every == 0:
            log.append((loss_train, acc_train, loss_val, acc_val))

    def test(model, criterion, input, target, mask):
        model.eval()
        with torch.no_grad():
            output = model(*input)
            output, target = output[mask], target[mask]
            loss = criterion(output, target)
            acc = (output.argmax(dim=1) == target).float().sum() / len(target)
        return loss.item(), acc.item()

    rng = np.random.RandomState(0)
    V, nfeat = 20, 12
    ids = rng.choice(np.arange(100, 10000), V, replace=False)
    words = (rng.rand(V, nfeat) < 0.3).astype(int)
    words[3] = 0  # a paper without words: its scale is 1/0 = inf, set to 0
    content_tensor = np.array([[str(i)] + [str(w) for w in row] + [["Theory", "Neural_Networks", "Rule_Learning"][i % 3]]
                               for i, row in zip(ids, words)])
    cites_tensor = np.array([[ids[a], ids[b]] for a, b in rng.randint(0, V, size=(30, 2)) if a != b], dtype=np.int32)
    torch.manual_seed(13)
    features, labels, adj_mat = load_cora(content_tensor, cites_tensor)
    idx = torch.randperm(len(labels))
    idx_test, idx_val, idx_train = idx[:5], idx[5:10], idx[10:]
    gat_net = GAT(in_features=features.shape[1], n_hidden=8, n_heads=2, num_classes=labels.max().item() + 1,
                  concat=True, dropout=0.6, leaky_relu_slope=0.2)
    optimizer = Adam(gat_net.parameters(), lr=0.005, weight_decay=5e-4)
    criterion = nn.NLLLoss()
    for epoch in range(epochs):
        train_iter(epoch + 1, gat_net, optimizer, criterion, (features, adj_mat), labels, idx_train, idx_val, 1)
    return log, test(gat_net, criterion, (features, adj_mat), labels, idx_test), features, adj_mat, gat_net.gat1.a


def test_gat_on_a_cora_like_graph():
    log, (loss, acc), features, adj_mat, a = run_both(gat, compare=SAME_DROPOUT, rtol=1e-4, atol=1e-5)[0]
    assert len(log) == 3 and loss > 0 and 0 <= acc <= 1 and a.shape == (2, 8, 1)
    assert adj_mat.dtype == np.float32 and np.diag(adj_mat).min() >= 1 and (features[3] == 0).all()


# ---------------------------------------------------------------- distributed/FSDP2/model.py and example.py (one process)
def fsdp2_model(m, dropout_p=0.0):
    torch, nn, F = m.torch, m.nn, m.F

    @dataclass
    class ModelArgs:
        n_layers: int = 2
        vocab_size: int = 8
        max_seq_len: int = 16
        dim: int = 16
        n_heads: int = 4
        dropout_p: float = 0.1

    class Attention(nn.Module):
        def __init__(self, args: ModelArgs):
            super().__init__()
            assert args.dim % args.n_heads == 0
            self.head_dim = args.dim // args.n_heads
            self.n_heads = args.n_heads
            self.dropout_p = args.dropout_p
            self.resid_dropout = nn.Dropout(args.dropout_p)
            self.wq = nn.Linear(args.dim, args.dim, bias=False)
            self.wk = nn.Linear(args.dim, args.dim, bias=False)
            self.wv = nn.Linear(args.dim, args.dim, bias=False)
            self.wo = nn.Linear(args.dim, args.dim, bias=False)

        def forward(self, x):
            bsz, seq_len, _ = x.size()
            queries, keys, values = self.wq(x), self.wk(x), self.wv(x)
            queries = queries.view(bsz, seq_len, self.n_heads, self.head_dim)
            keys = keys.view(bsz, seq_len, self.n_heads, self.head_dim)
            values = values.view(bsz, seq_len, self.n_heads, self.head_dim)
            queries = queries.transpose(1, 2)
            keys = keys.transpose(1, 2)
            values = values.transpose(1, 2)
            output = F.scaled_dot_product_attention(queries, keys, values, None, self.dropout_p if self.training else 0)
            output = output.transpose(1, 2).contiguous().view(bsz, seq_len, -1)
            return self.resid_dropout(self.wo(output))

        def reset_parameters(self):
            self.wq.reset_parameters()
            self.wk.reset_parameters()
            self.wv.reset_parameters()
            self.wo.reset_parameters()

    class FeedForward(nn.Module):
        def __init__(self, dim, hidden_dim, dropout_p):
            super().__init__()
            self.w1 = nn.Linear(dim, hidden_dim)
            self.gelu = nn.GELU()
            self.w2 = nn.Linear(hidden_dim, dim)
            self.resid_dropout = nn.Dropout(dropout_p)

        def forward(self, x):
            return self.resid_dropout(self.w2(self.gelu(self.w1(x))))

        def reset_parameters(self):
            self.w1.reset_parameters()
            self.w2.reset_parameters()

    class TransformerBlock(nn.Module):
        def __init__(self, args: ModelArgs):
            super().__init__()
            self.attention_norm = nn.LayerNorm(args.dim)
            self.attention = Attention(args)
            self.ffn_norm = nn.LayerNorm(args.dim)
            self.feed_forward = FeedForward(args.dim, hidden_dim=4 * args.dim, dropout_p=args.dropout_p)

        def forward(self, x):
            h = x + self.attention(self.attention_norm(x))
            out = h + self.feed_forward(self.ffn_norm(h))
            return out

        def reset_parameters(self):
            self.attention_norm.reset_parameters()
            self.attention.reset_parameters()
            self.ffn_norm.reset_parameters()
            self.feed_forward.reset_parameters()

    class Transformer(nn.Module):
        def __init__(self, args: ModelArgs):
            super().__init__()
            self.model_args = args
            self.max_seq_len = args.max_seq_len
            self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
            self.pos_embeddings = nn.Embedding(args.max_seq_len, args.dim)
            self.dropout = nn.Dropout(args.dropout_p)
            self.layers = nn.ModuleList()
            for _ in range(args.n_layers):
                self.layers.append(TransformerBlock(args))
            self.norm = nn.LayerNorm(args.dim)
            self.output = nn.Linear(args.dim, args.vocab_size, bias=False)

        def forward(self, tokens):
            _bsz, seq_len = tokens.size()
            assert seq_len <= self.max_seq_len
            h = self.tok_embeddings(tokens)
            pos = torch.arange(0, seq_len, device=tokens.device)
            p = self.pos_embeddings(pos)
            h = h + p
            h = self.dropout(h)
            for layer in self.layers:
                h = layer(h)
            h = self.norm(h)
            output = self.output(h).float()
            return output

        def reset_parameters(self):
            self.tok_embeddings.reset_parameters()
            self.pos_embeddings.reset_parameters()
            self.norm.reset_parameters()
            self.output.reset_parameters()

    torch.manual_seed(0)  # (the example's sizes shrunk; fully_shard and the process group left out)
    vocab_size, batch_size, seq_len = 32, 4, 8
    model_args = ModelArgs(n_layers=2, n_heads=4, vocab_size=vocab_size, max_seq_len=seq_len, dropout_p=dropout_p)
    with torch.device("meta"):
        model = Transformer(model_args)
    on_meta = model.output.weight.is_meta
    device = torch.device("cpu")
    model.to_empty(device=device)
    for layer in model.layers:  # (the example's Transformer.reset_parameters leaves the blocks as to_empty
        layer.reset_parameters()  # left them, uninitialised memory: reset here so that the runs compare)
    model.reset_parameters()
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses, norms = [], []
    for _ in range(3):
        x = torch.randint(0, vocab_size, (batch_size, seq_len), device=device)
        loss = model(x).sum()
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0))
        optim.step()
        optim.zero_grad()
        losses.append(loss.item())
    return on_meta, losses, norms, model.layers[1].attention.wq.weight


@pytest.mark.parametrize("dropout_p", [0.0, 0.1])
def test_fsdp2_transformer_built_on_meta_then_materialised(dropout_p):
    on_meta, losses, norms, wq = run_both(fsdp2_model, dropout_p, compare=SAME_DROPOUT, rtol=1e-4, atol=1e-5)[0]
    assert on_meta and len(losses) == 3 and np.isfinite(losses).all() and all(n > 0 for n in norms)
    assert wq.shape == (16, 16) and np.isfinite(wq).all()


# ---------------------------------------------------------------- fx/invert.py, inline_function.py, wrap_output_dynamically.py,
# custom_tracer.py and module_tracer.py (a small residual network in place of torchvision's resnet18)
def invert_prog(m):
    torch = m.torch; fx = torch.fx
    invert_mapping = {}
    def add_inverse(a, b):
        invert_mapping[a] = b
        invert_mapping[b] = a
    inverses = [(torch.sin, torch.arcsin), (torch.cos, torch.arccos), (torch.tan, torch.arctan), (torch.exp, torch.log)]
    for a, b in inverses:
        add_inverse(a, b)
    def invert(model):
        fx_model = fx.symbolic_trace(model)
        new_graph = fx.Graph()
        env = {}
        for node in reversed(fx_model.graph.nodes):
            if node.op == 'call_function':
                new_node = new_graph.call_function(invert_mapping[node.target], (env[node.name],))
                env[node.args[0].name] = new_node
            elif node.op == 'output':
                new_node = new_graph.placeholder(node.name)
                env[node.args[0].name] = new_node
            elif node.op == 'placeholder':
                new_graph.output(env[node.name])
            else:
                raise RuntimeError("Not implemented")
        new_graph.lint()
        return fx.GraphModule(fx_model, new_graph)
    def f(x):
        return torch.exp(torch.tan(x))
    res = invert(f)
    return res.code.replace("autograd.", "torch."), f(res(torch.arange(5) + 1))

def inline_prog(m):
    torch = m.torch
    from_fx = torch.fx
    class M(m.nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = m.nn.ReLU()
        def forward(self, x):
            return self.relu(x) + 1.0
    mm = from_fx.symbolic_trace(M())
    tracer = torch.fx.proxy.GraphAppendingTracer(mm.graph)
    for node in mm.graph.nodes:
        if (node.op, node.target) == ("call_module", "relu"):
            with mm.graph.inserting_before(node):
                proxy_args = from_fx.node.map_arg(node.args, lambda n: from_fx.Proxy(n, tracer))
                proxy_kwargs = from_fx.node.map_arg(node.kwargs, lambda n: from_fx.Proxy(n, tracer))
                proxy_output = mm.relu(*proxy_args, **proxy_kwargs)
                node.replace_all_uses_with(proxy_output.node)
                mm.graph.erase_node(node)
    mm.recompile()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    return [n.op for n in mm.graph.nodes], mm(x)

def wrap_prog(m):
    torch = m.torch
    from_fx = torch.fx
    class M(m.nn.Module):
        def __init__(self):
            super().__init__()
        def forward(self, x, y):
            y = torch.cat([x, y])
            return y
    traced = from_fx.symbolic_trace(M())
    class ActivationFunction(Enum):
        RELU = auto(); LEAKY_RELU = auto(); PRELU = auto()
    activation_functions = {ActivationFunction.RELU: m.nn.ReLU(), ActivationFunction.LEAKY_RELU: m.nn.LeakyReLU(), ActivationFunction.PRELU: m.nn.PReLU()}
    def wrap_in_activation_function(m_, fn):
        output_node = None
        for n in reversed(m_.graph.nodes):
            if n.op == "output":
                output_node = n
                break
        assert output_node
        assert len(output_node.all_input_nodes) == 1
        wrap_node = output_node.all_input_nodes[0]
        wrap_proxy = from_fx.Proxy(wrap_node)
        fn_impl = activation_functions[fn]
        fn_impl_traced = from_fx.symbolic_trace(fn_impl)
        with traced.graph.inserting_after(wrap_node):
            fn_impl_output_node = fn_impl_traced(wrap_proxy)
            new_args = (fn_impl_output_node.node,)
            output_node.args = new_args
        m_.recompile()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    orig_output = traced(x, y)
    wrap_in_activation_function(traced, ActivationFunction.LEAKY_RELU)
    new_output = traced(x, y)
    torch.testing.assert_close(new_output, m.nn.LeakyReLU()(orig_output))
    return new_output, [n.op for n in traced.graph.nodes]


def custom_tracers(m):
    torch = m.torch; nn = m.nn
    Tracer, symbolic_trace = torch.fx.Tracer, torch.fx.symbolic_trace
    class M1(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()
        def forward(self, x):
            return self.relu(x)
    default_traced = symbolic_trace(M1())
    class LowerReluTracer(Tracer):
        def is_leaf_module(self, m_, qualname):
            if isinstance(m_, nn.ReLU):
                return False
            return super().is_leaf_module(m_, qualname)
    g = LowerReluTracer().trace(M1())
    lowered = [(n.op, n.name, getattr(n.target, "__name__", n.target), n.kwargs) for n in g.nodes]
    class M2(nn.Module):
        def forward(self, a, b):
            return a + b
    class TaggingTracer(Tracer):
        def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
            n = super().create_node(kind, target, args, kwargs, name)
            n.tag = "foo"
            return n
    g2 = TaggingTracer().trace(M2())
    tags = all(getattr(n, "tag", None) == "foo" for n in g2.nodes)
    class ModulePathTracer(torch.fx.Tracer):
        current_module_qualified_name = ''
        node_to_originating_module = {}
        def call_module(self, m_, forward, args, kwargs):
            old_qualname = self.current_module_qualified_name
            try:
                self.current_module_qualified_name = self.path_of_module(m_)
                return super().call_module(m_, forward, args, kwargs)
            finally:
                self.current_module_qualified_name = old_qualname
        def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None):
            proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr)
            self.node_to_originating_module[proxy.node] = self.current_module_qualified_name
            return proxy
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 3, 3, padding=1); self.bn1 = nn.BatchNorm2d(3); self.relu = nn.ReLU(inplace=True)
            self.downsample = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out += self.downsample(x)
            return self.relu(out)
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer1 = nn.Sequential(Block(), Block())
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1)); self.fc = nn.Linear(3, 2)
        def forward(self, x):
            x = self.avgpool(self.layer1(x))
            x = torch.flatten(x, 1)
            return self.fc(x)
    tracer = ModulePathTracer()
    traced = tracer.trace(Net())
    paths = [(str(node), tracer.node_to_originating_module.get(node)) for node in traced.nodes]
    return [(n.op, n.name) for n in default_traced.graph.nodes], lowered, tags, paths


def test_fx_invert():
    code, values = run_both(invert_prog)[0]
    assert "torch.log(output)" in code and "torch.arctan(log)" in code
    np.testing.assert_allclose(values, [1.0, 2.0, 3.0, 4.0, 5.0], rtol=1e-5)


def test_fx_inline_function():
    ops, out = run_both(inline_prog)[0]
    assert ops == ["placeholder", "call_function", "call_function", "output"] and out.min() >= 1.0


def test_fx_wrap_output_dynamically():
    out, ops = run_both(wrap_prog)[0]
    assert out.shape == (10, 3) and ops == ["placeholder", "placeholder", "call_function", "call_function", "output"]


def test_fx_custom_tracers():
    default, lowered, tags, paths = run_both(custom_tracers, compare=False)[0]
    assert default == [("placeholder", "x"), ("call_module", "relu"), ("output", "output")] and tags
    assert [(op, name, target) for op, name, target, _ in lowered] == [
        ("placeholder", "x", "x"), ("call_function", "relu", "relu"), ("output", "output", "output")]
    assert ("add", "layer1.0") in paths and ("layer1_1_downsample_0", "layer1.1.downsample.0") in paths
    assert paths[-1] == ("output", None) and ("flatten", "") in paths


@pytest.mark.xfail(strict=True, reason=(
    "PyTorch's F functions hand __torch_function__ the tensor arguments positionally and the options as keywords "
    "(F.relu(x, False) is recorded as relu(x, inplace=False); nn.MaxPool2d's as max_pool2d(x, 2, stride=2, ...)); "
    "chainrule's dispatch records the call as made, so a trace through a layer records other args and kwargs "
    "(session 31, left open: each F function's form is PyTorch's own)"))
def test_fx_custom_tracers_record_pytorchs_keyword_arguments():
    ours, theirs = run_both(custom_tracers, compare=False)
    lowered = ours[1][1]
    assert lowered[3] == {"inplace": False}  # what PyTorch's trace holds: theirs[1][1][3]
