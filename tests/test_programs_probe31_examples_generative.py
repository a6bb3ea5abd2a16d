# ruff: noqa: E501, E731, B007, UP008, UP031  (the programs are kept as their authors write them)
"""pytorch/examples' vae/main.py and dcgan/main.py, two of the programs session 9's probe
(tests/test_programs_probe9_examples_*.py) left out, each kept as written with sizes shrunk and run as
tests/probe31_examples_common.py says: vae (``randn_like`` reparameterisation, ``binary_cross_entropy`` summed, the
closed-form KL); dcgan (``ConvTranspose2d``/``BatchNorm2d`` generator and discriminator, ``weights_init`` by class name
through ``apply``, ``BCELoss`` with ``fill_``-ed labels, ``detach``). Both agreed with PyTorch when written (session
31)."""

import numpy as np

from .pytorch_programs import run_both


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

