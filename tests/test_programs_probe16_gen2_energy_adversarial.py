# ruff: noqa: B007, B018, E721, F841, UP008  (the programs are kept as their authors wrote them)
"""Generative models not covered elsewhere, run as tests/probe16_gen2_common.py says: energies and discriminators:
taming-transformers' VQGAN losses (the adaptive weight by ``autograd.grad`` of two losses with respect to the
decoder's last weight, hinge/vanilla discriminator losses, an NLayerDiscriminator); JEM: a classifier as an energy
model, SGLD from a replay buffer (``autograd.Variable``, ``x_k.data +=``); a binary RBM trained by CD-k, and NADE
scoring and sampling in one loop."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# taming-transformers' VQGAN losses: the adaptive discriminator weight from autograd.grad of two losses with
# respect to the decoder's last weight (retain_graph), its norm ratio clamped and detached, adopt_weight's
# delayed start, hinge and vanilla discriminator losses, an NLayerDiscriminator (BatchNorm, inplace LeakyReLU,
# weights_init by class name), VectorQuantizer2 (einsum distances, legacy loss), two Adam optimisers
# ----------------------------------------------------------------------------------------------


def make_vqgan(m, n_e=8, e_dim=4):
    torch, nn, F = m.torch, m.nn, m.F

    def weights_init(m):
        classname = m.__class__.__name__
        if classname.find('Conv') != -1:
            nn.init.normal_(m.weight.data, 0.0, 0.02)
        elif classname.find('BatchNorm') != -1:
            nn.init.normal_(m.weight.data, 1.0, 0.02)
            nn.init.constant_(m.bias.data, 0)

    class NLayerDiscriminator(nn.Module):
        """Defines a PatchGAN discriminator as in Pix2Pix
            --> see https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix/blob/master/models/networks.py
        """

        def __init__(self, input_nc=3, ndf=64, n_layers=3, use_actnorm=False):
            super(NLayerDiscriminator, self).__init__()
            norm_layer = nn.BatchNorm2d
            if type(norm_layer) == functools.partial:  # no need to use bias as BatchNorm2d has affine parameters
                use_bias = norm_layer.func != nn.BatchNorm2d
            else:
                use_bias = norm_layer != nn.BatchNorm2d

            kw = 4
            padw = 1
            sequence = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
            nf_mult = 1
            nf_mult_prev = 1
            for n in range(1, n_layers):  # gradually increase the number of filters
                nf_mult_prev = nf_mult
                nf_mult = min(2 ** n, 8)
                sequence += [
                    nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw, bias=use_bias),
                    norm_layer(ndf * nf_mult),
                    nn.LeakyReLU(0.2, True)
                ]

            nf_mult_prev = nf_mult
            nf_mult = min(2 ** n_layers, 8)
            sequence += [
                nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw, bias=use_bias),
                norm_layer(ndf * nf_mult),
                nn.LeakyReLU(0.2, True)
            ]

            sequence += [
                nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw)]  # output 1 channel prediction map
            self.main = nn.Sequential(*sequence)

        def forward(self, input):
            """Standard forward."""
            return self.main(input)

    class VectorQuantizer2(nn.Module):
        def __init__(self, n_e, e_dim, beta, legacy=True):
            super().__init__()
            self.n_e = n_e
            self.e_dim = e_dim
            self.beta = beta
            self.legacy = legacy
            self.embedding = nn.Embedding(self.n_e, self.e_dim)
            self.embedding.weight.data.uniform_(-1.0 / self.n_e, 1.0 / self.n_e)

        def forward(self, z):
            z = z.permute(0, 2, 3, 1).contiguous()
            z_flattened = z.view(-1, self.e_dim)
            # distances from z to embeddings e_j (z - e)^2 = z^2 + e^2 - 2 e * z
            d = torch.sum(z_flattened ** 2, dim=1, keepdim=True) + \
                torch.sum(self.embedding.weight**2, dim=1) - 2 * \
                torch.einsum('bd,dn->bn', z_flattened, self.embedding.weight.permute(1, 0))

            min_encoding_indices = torch.argmin(d, dim=1)
            z_q = self.embedding(min_encoding_indices).view(z.shape)
            perplexity = None
            min_encodings = None

            # compute loss for embedding
            if not self.legacy:
                loss = self.beta * torch.mean((z_q.detach() - z) ** 2) + torch.mean((z_q - z.detach()) ** 2)
            else:
                loss = torch.mean((z_q.detach() - z) ** 2) + self.beta * torch.mean((z_q - z.detach()) ** 2)

            # preserve gradients
            z_q = z + (z_q - z).detach()

            # reshape back to match original input shape
            z_q = z_q.permute(0, 3, 1, 2).contiguous()
            return z_q, loss, (perplexity, min_encodings, min_encoding_indices)

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_in = nn.Conv2d(e_dim, 8, 3, padding=1)
            self.norm = nn.GroupNorm(2, 8, eps=1e-6, affine=True)
            self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
            self.conv_out = nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, z):
            h = self.conv_in(z)
            h = self.up(h)
            h = self.norm(h)
            h = h * torch.sigmoid(h)
            return self.conv_out(h)

    class VQModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1))
            self.quant_conv = nn.Conv2d(8, e_dim, 1)
            self.quantize = VectorQuantizer2(n_e, e_dim, beta=0.25)
            self.post_quant_conv = nn.Conv2d(e_dim, e_dim, 1)
            self.decoder = Decoder()
            self.discriminator = NLayerDiscriminator(input_nc=3, ndf=4, n_layers=2).apply(weights_init)

        def encode(self, x):
            h = self.encoder(x)
            h = self.quant_conv(h)
            quant, emb_loss, info = self.quantize(h)
            return quant, emb_loss, info

        def decode(self, quant):
            quant = self.post_quant_conv(quant)
            dec = self.decoder(quant)
            return dec

        def forward(self, input):
            quant, diff, _ = self.encode(input)
            dec = self.decode(quant)
            return dec, diff

        def get_last_layer(self):
            return self.decoder.conv_out.weight

    import functools
    return VQModel()


def vqgan(m, weights, steps=4, disc_loss="hinge"):
    torch, F = m.torch, m.F

    def hinge_d_loss(logits_real, logits_fake):
        loss_real = torch.mean(F.relu(1. - logits_real))
        loss_fake = torch.mean(F.relu(1. + logits_fake))
        d_loss = 0.5 * (loss_real + loss_fake)
        return d_loss

    def vanilla_d_loss(logits_real, logits_fake):  # (torch.nn.functional.softplus in the repository: autograd.nn
        d_loss = 0.5 * (                            # is not reachable, see test_torch_dot_nn_spelling)
            torch.mean(F.softplus(-logits_real)) +
            torch.mean(F.softplus(logits_fake)))
        return d_loss

    def adopt_weight(weight, global_step, threshold=0, value=0.):
        if global_step < threshold:
            weight = value
        return weight

    discriminator_weight, disc_factor, discriminator_iter_start, codebook_weight = 0.8, 1.0, 1, 1.0
    disc_loss_fn = hinge_d_loss if disc_loss == "hinge" else vanilla_d_loss

    def calculate_adaptive_weight(nll_loss, g_loss, last_layer=None):
        nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
        g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
        d_weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
        d_weight = torch.clamp(d_weight, 0.0, 1e4).detach()
        d_weight = d_weight * discriminator_weight
        return d_weight

    model = load(m, make_vqgan(m), weights)
    gen_params = [p for n, p in model.named_parameters() if not n.startswith("discriminator.")]
    lr = 4.5e-4
    opt_ae = m.optim.Adam(gen_params, lr=lr, betas=(0.5, 0.9))
    opt_disc = m.optim.Adam(model.discriminator.parameters(), lr=lr, betas=(0.5, 0.9))
    rng = np.random.default_rng(21)
    images = np.tanh(rng.standard_normal((steps, 2, 3, 16, 16))).astype(np.float32)
    history = []
    model.train()
    for global_step in range(steps):
        inputs = torch.from_numpy(images[global_step])
        xrec, qloss = model(inputs)
        # autoencoder (optimizer_idx 0)
        rec_loss = torch.abs(inputs.contiguous() - xrec.contiguous())
        nll_loss = torch.mean(rec_loss)
        logits_fake = model.discriminator(xrec.contiguous())
        g_loss = -torch.mean(logits_fake)
        try:
            d_weight = calculate_adaptive_weight(nll_loss, g_loss, last_layer=model.get_last_layer())
        except RuntimeError:
            d_weight = torch.tensor(0.0)
        factor = adopt_weight(disc_factor, global_step, threshold=discriminator_iter_start)
        aeloss = nll_loss + d_weight * factor * g_loss + codebook_weight * qloss.mean()
        opt_ae.zero_grad()
        aeloss.backward()
        opt_ae.step()
        # discriminator (optimizer_idx 1)
        logits_real = model.discriminator(inputs.contiguous().detach())
        logits_fake = model.discriminator(xrec.contiguous().detach())
        factor = adopt_weight(disc_factor, global_step, threshold=discriminator_iter_start)
        discloss = factor * disc_loss_fn(logits_real, logits_fake)
        opt_disc.zero_grad()
        discloss.backward()
        opt_disc.step()
        history.append([aeloss.item(), discloss.item(), float(d_weight), nll_loss.item(), g_loss.item()])
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    model.eval()
    with torch.no_grad():
        xrec, qloss = model(torch.from_numpy(images[0]))
        _, _, (_, _, indices) = model.encode(torch.from_numpy(images[0]))
    return {"history": history, "grads": grads, "state": model.state_dict(), "xrec": xrec, "indices": indices}


@pytest.mark.parametrize("disc_loss", ["hinge", "vanilla"])
def test_vqgan_adaptive_weight_and_discriminator(disc_loss):
    weights = weights_of(make_vqgan)
    ours, _ = run_both(vqgan, weights, disc_loss=disc_loss, rtol=2e-4, atol=2e-5)
    assert ours["history"][0][1] == 0  # the discriminator starts at step 1 (adopt_weight)
    assert ours["history"][1][2] > 0


# ----------------------------------------------------------------------------------------------
# JEM (wgrathwohl/JEM): a classifier read as an energy model (logsumexp of the logits, gather for p(x, y)),
# short-run SGLD from a replay buffer (autograd.Variable, autograd.grad of the energy with respect to the
# samples, ``x_k.data +=`` on a leaf that requires grad, reinitialisation by a float mask of rand < p,
# class-conditional buffer indices, the buffer written back by index assignment)
# ----------------------------------------------------------------------------------------------


def make_jem(m, n_classes=3, n_ch=1):
    t, nn = m.torch, m.nn

    class TinyWRN(nn.Module):
        def __init__(self, last_dim=12):
            super().__init__()
            self.conv1 = nn.Conv2d(n_ch, 6, 3, padding=1)
            self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
            self.conv3 = nn.Conv2d(6, last_dim, 3, stride=2, padding=1)
            self.lrelu = nn.LeakyReLU(0.2)
            self.last_dim = last_dim

        def forward(self, x):
            out = self.conv1(x)
            out = out + self.conv2(self.lrelu(out))
            out = self.lrelu(self.conv3(self.lrelu(out)))
            out = m.F.avg_pool2d(out, 4)
            return out.view(out.size(0), -1)

    class F(nn.Module):
        def __init__(self, n_classes=10):
            super(F, self).__init__()
            self.f = TinyWRN()
            self.energy_output = nn.Linear(self.f.last_dim, 1)
            self.class_output = nn.Linear(self.f.last_dim, n_classes)

        def forward(self, x, y=None):
            penult_z = self.f(x)
            return self.energy_output(penult_z).squeeze()

        def classify(self, x):
            penult_z = self.f(x)
            return self.class_output(penult_z).squeeze()

    class CCF(F):
        def __init__(self, n_classes=10):
            super(CCF, self).__init__(n_classes=n_classes)

        def forward(self, x, y=None):
            logits = self.classify(x)
            if y is None:
                return logits.logsumexp(1)
            else:
                return t.gather(logits, 1, y[:, None])

    return CCF(n_classes=n_classes)


def jem(m, weights, steps=3, n_classes=3, im_sz=8, n_ch=1, batch_size=4, buffer_size=24, n_steps=5,
        sgld_lr=1.0, sgld_std=1e-2, reinit_freq=0.25):
    t, nn = m.torch, m.nn
    f = load(m, make_jem(m), weights)

    def init_random(bs):
        return t.FloatTensor(bs, n_ch, im_sz, im_sz).uniform_(-1, 1)

    def sample_p_0(replay_buffer, bs, y=None):
        if len(replay_buffer) == 0:
            return init_random(bs), []
        buffer_size = len(replay_buffer) if y is None else len(replay_buffer) // n_classes
        inds = t.randint(0, buffer_size, (bs,))
        # if cond, convert inds to class conditional inds
        if y is not None:
            inds = y.cpu() * buffer_size + inds
        buffer_samples = replay_buffer[inds]
        random_samples = init_random(bs)
        choose_random = (t.rand(bs) < reinit_freq).float()[:, None, None, None]
        samples = choose_random * random_samples + (1 - choose_random) * buffer_samples
        return samples, inds

    def sample_q(f, replay_buffer, y=None, n_steps=n_steps):
        """this func takes in replay_buffer now so we have the option to sample from
        scratch (i.e. replay_buffer==[]).  See test_wrn_ebm.py for example.
        """
        f.eval()
        # get batch size
        bs = batch_size if y is None else y.size(0)
        # generate initial samples and buffer inds of those samples (if buffer is used)
        init_sample, buffer_inds = sample_p_0(replay_buffer, bs=bs, y=y)
        x_k = t.autograd.Variable(init_sample, requires_grad=True)
        # sgld
        for k in range(n_steps):
            f_prime = t.autograd.grad(f(x_k, y=y).sum(), [x_k], retain_graph=True)[0]
            x_k.data += sgld_lr * f_prime + sgld_std * t.randn_like(x_k)
        f.train()
        final_samples = x_k.detach()
        # update replay buffer
        if len(replay_buffer) > 0:
            replay_buffer[buffer_inds] = final_samples.cpu()
        return final_samples

    rng = np.random.default_rng(8)
    x_all = np.tanh(rng.standard_normal((steps, batch_size, n_ch, im_sz, im_sz)) * 2).astype(np.float32)
    y_all = rng.integers(0, n_classes, (steps, batch_size))
    t.manual_seed(2)
    replay_buffer = init_random(buffer_size)
    optim = m.optim.Adam(f.parameters(), lr=1e-3, betas=[.9, .999], weight_decay=0.0)
    history = []
    for step in range(steps):
        x_p_d = x_lab = t.from_numpy(x_all[step])
        y_lab = t.from_numpy(y_all[step])
        L = 0.
        # maximize log p(x)
        x_q = sample_q(f, replay_buffer)  # sample from log-sumexp
        fp_all = f(x_p_d)
        fq_all = f(x_q)
        fp = fp_all.mean()
        fq = fq_all.mean()
        l_p_x = -(fp - fq)
        L += l_p_x
        # maximize log p(y | x)
        logits = f.classify(x_lab)
        l_p_y_given_x = nn.CrossEntropyLoss()(logits, y_lab)
        L += l_p_y_given_x
        # maximize log p(x, y)
        x_q_lab = sample_q(f, replay_buffer, y=y_lab)
        fp, fq = f(x_lab, y_lab).mean(), f(x_q_lab, y_lab).mean()
        l_p_x_y = -(fp - fq)
        L += 0.5 * l_p_x_y
        # break if the loss diverged...easier for poppa to run experiments this way
        if L.abs().item() > 1e8:
            1 / 0
        optim.zero_grad()
        L.backward()
        optim.step()
        history.append([L.item(), l_p_x.item(), l_p_y_given_x.item(), l_p_x_y.item()])
    grads = {n: p.grad for n, p in f.named_parameters()}
    # sampling from scratch (an empty buffer)
    samples = sample_q(f, [], y=t.arange(n_classes), n_steps=3)
    return {"history": history, "grads": grads, "state": f.state_dict(), "buffer": replay_buffer,
            "samples": samples}


def test_jem_sgld_replay_buffer():
    weights = weights_of(make_jem)
    ours, _ = run_both(jem, weights, rtol=2e-4, atol=2e-5)
    assert ours["buffer"].shape == (24, 1, 8, 8) and ours["samples"].shape == (3, 1, 8, 8)


# ----------------------------------------------------------------------------------------------
# Two older generative models: a binary RBM trained by CD-k on the free energy (Gibbs sampling by
# relu(sign(p - rand)), data.bernoulli(), Tensor.mv), and NADE as EugenHotaj/pytorch-generative writes it
# (a column-by-column loop over Parameter slices, Bernoulli(probs=).sample() chosen by torch.where for missing
# pixels, so one forward both scores and samples)
# ----------------------------------------------------------------------------------------------


def make_rbm_and_nade(m, n_vis=16, n_hin=6):
    torch, nn, F = m.torch, m.nn, m.F
    distributions = torch.distributions

    class RBM(nn.Module):
        def __init__(self, n_vis=784, n_hin=500, k=5):
            super(RBM, self).__init__()
            self.W = nn.Parameter(torch.randn(n_hin, n_vis) * 1e-2)
            self.v_bias = nn.Parameter(torch.zeros(n_vis))
            self.h_bias = nn.Parameter(torch.zeros(n_hin))
            self.k = k

        def sample_from_p(self, p):
            return F.relu(torch.sign(p - torch.rand(p.size())))

        def v_to_h(self, v):
            p_h = F.sigmoid(F.linear(v, self.W, self.h_bias))
            sample_h = self.sample_from_p(p_h)
            return p_h, sample_h

        def h_to_v(self, h):
            p_v = F.sigmoid(F.linear(h, self.W.t(), self.v_bias))
            sample_v = self.sample_from_p(p_v)
            return p_v, sample_v

        def forward(self, v):
            pre_h1, h1 = self.v_to_h(v)
            h_ = h1
            for _ in range(self.k):
                pre_v_, v_ = self.h_to_v(h_)
                pre_h_, h_ = self.v_to_h(v_)
            return v, v_

        def free_energy(self, v):
            vbias_term = v.mv(self.v_bias)
            wx_b = F.linear(v, self.W, self.h_bias)
            hidden_term = wx_b.exp().add(1).log().sum(1)
            return (-hidden_term - vbias_term).mean()

    class NADE(nn.Module):
        """The Neural Autoregressive Distribution Estimator (NADE) model."""

        def __init__(self, input_dim, hidden_dim):
            super().__init__()
            self._input_dim = input_dim
            self._hidden_dim = hidden_dim
            self._in_W = nn.Parameter(torch.zeros(hidden_dim, self._input_dim))
            self._in_b = nn.Parameter(torch.zeros(hidden_dim))
            self._h_W = nn.Parameter(torch.zeros(self._input_dim, hidden_dim))
            self._h_b = nn.Parameter(torch.zeros(self._input_dim))
            nn.init.kaiming_normal_(self._in_W)
            nn.init.kaiming_normal_(self._h_W)

        def _forward(self, x):
            p_hat, x_hat = [], []
            batch_size = 1 if x is None else x.shape[0]
            a = self._in_b.expand(batch_size, -1)
            for i in range(self._input_dim):
                h = torch.relu(a)
                p_i = torch.sigmoid(h @ self._h_W[i: i + 1, :].t() + self._h_b[i: i + 1])
                p_hat.append(p_i)
                x_i = x[:, i: i + 1]
                x_i = torch.where(x_i < 0, distributions.Bernoulli(probs=p_i).sample(), x_i)
                x_hat.append(x_i)
                # We do not need to add self._in_b[i:i+1] when computing the last input.
                if i < self._input_dim - 1:
                    a = a + x_i @ self._in_W[:, i: i + 1].t()
            return torch.cat(p_hat, dim=1), torch.cat(x_hat, dim=1)

        def forward(self, x):
            return self._forward(x)[0]

        def sample(self, n_samples=None, conditioned_on=None):
            with torch.no_grad():
                if conditioned_on is None:
                    conditioned_on = -torch.ones(n_samples, self._input_dim)
                return self._forward(conditioned_on)[1]

    return nn.ModuleDict({"rbm": RBM(n_vis, n_hin, k=2), "nade": NADE(n_vis, n_hin)})


def rbm_and_nade(m, weights, epochs=2):
    torch, F = m.torch, m.F
    both = load(m, make_rbm_and_nade(m), weights)
    rbm, nade = both["rbm"], both["nade"]
    rng = np.random.default_rng(17)
    data = rng.random((2, 3, 8, 16)).astype(np.float32) ** 2
    torch.manual_seed(23)
    train_op = m.optim.SGD(rbm.parameters(), 0.1)
    rbm_losses = []
    for epoch in range(epochs):
        for batch in data[epoch]:
            batch = torch.from_numpy(batch).view(-1, 16)
            sample_data = batch.bernoulli()
            v, v1 = rbm(sample_data)
            loss = rbm.free_energy(v) - rbm.free_energy(v1)
            rbm_losses.append(loss.item())
            train_op.zero_grad()
            loss.backward()
            train_op.step()
    optimizer = m.optim.Adam(nade.parameters(), lr=1e-2)
    nade_losses = []
    for batch in data[0]:
        x = torch.from_numpy((batch > 0.3).astype(np.float32))
        preds = nade(x)
        loss = F.binary_cross_entropy(preds, x, reduction="none").sum(dim=1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        nade_losses.append(loss.item())
    partial = -torch.ones(3, 16)
    partial[:, :8] = 1.0
    return {"rbm": rbm_losses, "nade": nade_losses, "grads": {n: p.grad for n, p in both.named_parameters()},
            "state": both.state_dict(), "samples": nade.sample(4), "completed": nade.sample(conditioned_on=partial)}


def test_rbm_contrastive_divergence_and_nade():
    weights = weights_of(make_rbm_and_nade)
    ours, _ = run_both(rbm_and_nade, weights, rtol=1e-4, atol=1e-5)
    assert set(np.unique(ours["samples"])) <= {0.0, 1.0}
    np.testing.assert_array_equal(ours["completed"][:, :8], 1.0)
