# ruff: noqa: B007, UP008, UP039  (the programs are kept as their authors wrote them)
"""Generative models not covered elsewhere, run as tests/probe16_gen2_common.py says: Sketch-RNN: a
bidirectional-LSTM VAE, a bivariate Gaussian mixture by implicit-dim softmaxes, NumPy sampling."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Sketch-RNN (alexis-jacq/Pytorch-Sketch-RNN): a bidirectional LSTM encoder (torch.normal noise), an LSTM
# decoder started from z, a bivariate Gaussian mixture and pen-state softmaxes by implicit-dim F.softmax, the
# masked mixture likelihood, the KL floor by torch.max against a one-element tensor, nn.utils.clip_grad_norm (the
# deprecated spelling), learning-rate decay through param_groups; then sampling stroke by stroke with NumPy
# (np.random.choice on the mixture weights, multivariate_normal on 0-d tensors)
# ----------------------------------------------------------------------------------------------


class SketchHParams:
    enc_hidden_size = 8
    dec_hidden_size = 12
    Nz = 4
    M = 3
    dropout = 0.9
    batch_size = 3
    eta_min = 0.01
    R = 0.99995
    KL_min = 0.2
    wKL = 0.5
    lr = 1e-3
    lr_decay = 0.9999
    min_lr = 0.00001
    grad_clip = 1.
    temperature = 0.4


Nmax = 6


def make_sketch_rnn(m):
    torch, nn, F = m.torch, m.nn, m.F
    hp = SketchHParams

    class EncoderRNN(nn.Module):
        def __init__(self):
            super(EncoderRNN, self).__init__()
            # bidirectional lstm:
            self.lstm = nn.LSTM(5, hp.enc_hidden_size, dropout=hp.dropout, bidirectional=True)
            # create mu and sigma from lstm's last output:
            self.fc_mu = nn.Linear(2 * hp.enc_hidden_size, hp.Nz)
            self.fc_sigma = nn.Linear(2 * hp.enc_hidden_size, hp.Nz)
            # active dropout:
            self.train()

        def forward(self, inputs, batch_size, hidden_cell=None):
            if hidden_cell is None:
                # then must init with zeros
                hidden = torch.zeros(2, batch_size, hp.enc_hidden_size)
                cell = torch.zeros(2, batch_size, hp.enc_hidden_size)
                hidden_cell = (hidden, cell)
            _, (hidden, cell) = self.lstm(inputs.float(), hidden_cell)
            # hidden is (2, batch_size, hidden_size), we want (batch_size, 2*hidden_size):
            hidden_forward, hidden_backward = torch.split(hidden, 1, 0)
            hidden_cat = torch.cat([hidden_forward.squeeze(0), hidden_backward.squeeze(0)], 1)
            # mu and sigma:
            mu = self.fc_mu(hidden_cat)
            sigma_hat = self.fc_sigma(hidden_cat)
            sigma = torch.exp(sigma_hat / 2.)
            # N ~ N(0,1)
            z_size = mu.size()
            N = torch.normal(torch.zeros(z_size), torch.ones(z_size))
            z = mu + sigma * N
            # mu and sigma_hat are needed for LKL loss
            return z, mu, sigma_hat

    class DecoderRNN(nn.Module):
        def __init__(self):
            super(DecoderRNN, self).__init__()
            # to init hidden and cell from z:
            self.fc_hc = nn.Linear(hp.Nz, 2 * hp.dec_hidden_size)
            # unidirectional lstm:
            self.lstm = nn.LSTM(hp.Nz + 5, hp.dec_hidden_size, dropout=hp.dropout)
            # create proba distribution parameters from hiddens:
            self.fc_params = nn.Linear(hp.dec_hidden_size, 6 * hp.M + 3)

        def forward(self, inputs, z, hidden_cell=None):
            if hidden_cell is None:
                # then we must init from z
                hidden, cell = torch.split(F.tanh(self.fc_hc(z)), hp.dec_hidden_size, 1)
                hidden_cell = (hidden.unsqueeze(0).contiguous(), cell.unsqueeze(0).contiguous())
            outputs, (hidden, cell) = self.lstm(inputs, hidden_cell)
            # in training we feed the lstm with the whole input in one shot
            # and use all outputs contained in 'outputs', while in generate
            # mode we just feed with the last generated sample:
            if self.training:
                y = self.fc_params(outputs.view(-1, hp.dec_hidden_size))
            else:
                y = self.fc_params(hidden.view(-1, hp.dec_hidden_size))
            # separate pen and mixture params:
            params = torch.split(y, 6, 1)
            params_mixture = torch.stack(params[:-1])  # trajectory
            params_pen = params[-1]  # pen up/down
            # identify mixture params:
            pi, mu_x, mu_y, sigma_x, sigma_y, rho_xy = torch.split(params_mixture, 1, 2)
            # preprocess params::
            if self.training:
                len_out = Nmax + 1
            else:
                len_out = 1

            pi = F.softmax(pi.transpose(0, 1).squeeze()).view(len_out, -1, hp.M)
            sigma_x = torch.exp(sigma_x.transpose(0, 1).squeeze()).view(len_out, -1, hp.M)
            sigma_y = torch.exp(sigma_y.transpose(0, 1).squeeze()).view(len_out, -1, hp.M)
            rho_xy = torch.tanh(rho_xy.transpose(0, 1).squeeze()).view(len_out, -1, hp.M)
            mu_x = mu_x.transpose(0, 1).squeeze().contiguous().view(len_out, -1, hp.M)
            mu_y = mu_y.transpose(0, 1).squeeze().contiguous().view(len_out, -1, hp.M)
            q = F.softmax(params_pen).view(len_out, -1, 3)
            return pi, mu_x, mu_y, sigma_x, sigma_y, rho_xy, q, hidden, cell

    return nn.ModuleDict({"encoder": EncoderRNN(), "decoder": DecoderRNN()})


def sketch_rnn(m, weights, epochs=3):
    torch, nn, optim = m.torch, m.nn, m.optim
    hp = SketchHParams
    both = load(m, make_sketch_rnn(m), weights)
    rng = np.random.default_rng(14)
    strokes = np.zeros((epochs + 1, Nmax, hp.batch_size, 5), dtype=np.float32)
    strokes[..., :2] = rng.standard_normal((epochs + 1, Nmax, hp.batch_size, 2)) * 0.5
    pen = rng.integers(0, 2, (epochs + 1, Nmax, hp.batch_size))
    strokes[..., 2] = 1 - pen
    strokes[..., 3] = pen
    lengths_all = rng.integers(2, Nmax + 1, (epochs + 1, hp.batch_size))
    np_random = np.random.RandomState(3)

    def lr_decay(optimizer):
        """Decay learning rate by a factor of lr_decay"""
        for param_group in optimizer.param_groups:
            if param_group['lr'] > hp.min_lr:
                param_group['lr'] *= hp.lr_decay
        return optimizer

    class Model():
        def __init__(self):
            self.encoder = both["encoder"]
            self.decoder = both["decoder"]
            self.encoder_optimizer = optim.Adam(self.encoder.parameters(), hp.lr)
            self.decoder_optimizer = optim.Adam(self.decoder.parameters(), hp.lr)
            self.eta_step = hp.eta_min

        def make_target(self, batch, lengths):
            eos = torch.stack([torch.Tensor([0, 0, 0, 0, 1])] * batch.size()[1]).unsqueeze(0)
            batch = torch.cat([batch, eos], 0)
            mask = torch.zeros(Nmax + 1, batch.size()[1])
            for indice, length in enumerate(lengths):
                mask[:length, indice] = 1
            dx = torch.stack([batch.data[:, :, 0]] * hp.M, 2)
            dy = torch.stack([batch.data[:, :, 1]] * hp.M, 2)
            p1 = batch.data[:, :, 2]
            p2 = batch.data[:, :, 3]
            p3 = batch.data[:, :, 4]
            p = torch.stack([p1, p2, p3], 2)
            return mask, dx, dy, p

        def train(self, epoch):
            self.encoder.train()
            self.decoder.train()
            batch, lengths = torch.from_numpy(strokes[epoch]), lengths_all[epoch]
            # encode:
            z, self.mu, self.sigma = self.encoder(batch, hp.batch_size)
            # create start of sequence:
            sos = torch.stack([torch.Tensor([0, 0, 1, 0, 0])] * hp.batch_size).unsqueeze(0)
            # had sos at the begining of the batch:
            batch_init = torch.cat([sos, batch], 0)
            # expend z to be ready to concatenate with inputs:
            z_stack = torch.stack([z] * (Nmax + 1))
            # inputs is concatenation of z and batch_inputs
            inputs = torch.cat([batch_init, z_stack], 2)
            # decode:
            self.pi, self.mu_x, self.mu_y, self.sigma_x, self.sigma_y, \
                self.rho_xy, self.q, _, _ = self.decoder(inputs, z)
            # prepare targets:
            mask, dx, dy, p = self.make_target(batch, lengths)
            # prepare optimizers:
            self.encoder_optimizer.zero_grad()
            self.decoder_optimizer.zero_grad()
            # update eta for LKL:
            self.eta_step = 1 - (1 - hp.eta_min) * hp.R
            # compute losses:
            LKL = self.kullback_leibler_loss()
            LR = self.reconstruction_loss(mask, dx, dy, p, epoch)
            loss = LR + LKL
            # gradient step
            loss.backward()
            # gradient cliping
            norms = [nn.utils.clip_grad_norm(self.encoder.parameters(), hp.grad_clip),
                     nn.utils.clip_grad_norm(self.decoder.parameters(), hp.grad_clip)]
            # optim step
            self.encoder_optimizer.step()
            self.decoder_optimizer.step()
            # some print and save:
            if epoch % 1 == 0:
                self.encoder_optimizer = lr_decay(self.encoder_optimizer)
                self.decoder_optimizer = lr_decay(self.decoder_optimizer)
            return [loss.item(), LR.item(), LKL.item()] + [float(n) for n in norms]

        def bivariate_normal_pdf(self, dx, dy):
            z_x = ((dx - self.mu_x) / self.sigma_x) ** 2
            z_y = ((dy - self.mu_y) / self.sigma_y) ** 2
            z_xy = (dx - self.mu_x) * (dy - self.mu_y) / (self.sigma_x * self.sigma_y)
            z = z_x + z_y - 2 * self.rho_xy * z_xy
            exp = torch.exp(-z / (2 * (1 - self.rho_xy ** 2)))
            norm = 2 * np.pi * self.sigma_x * self.sigma_y * torch.sqrt(1 - self.rho_xy ** 2)
            return exp / norm

        def reconstruction_loss(self, mask, dx, dy, p, epoch):
            pdf = self.bivariate_normal_pdf(dx, dy)
            LS = -torch.sum(mask * torch.log(1e-5 + torch.sum(self.pi * pdf, 2))) \
                / float(Nmax * hp.batch_size)
            LP = -torch.sum(p * torch.log(self.q)) / float(Nmax * hp.batch_size)
            return LS + LP

        def kullback_leibler_loss(self):
            LKL = -0.5 * torch.sum(1 + self.sigma - self.mu ** 2 - torch.exp(self.sigma)) \
                / float(hp.Nz * hp.batch_size)
            KL_min = torch.Tensor([hp.KL_min]).detach()
            return hp.wKL * self.eta_step * torch.max(LKL, KL_min)

        def conditional_generation(self, epoch):
            batch = torch.from_numpy(strokes[epoch][:, :1])
            # should remove dropouts:
            self.encoder.train(False)
            self.decoder.train(False)
            # encode:
            z, _, _ = self.encoder(batch, 1)
            sos = torch.Tensor([0, 0, 1, 0, 0]).view(1, 1, -1)
            s = sos
            seq_x = []
            seq_y = []
            seq_z = []
            hidden_cell = None
            for i in range(Nmax):
                input = torch.cat([s, z.unsqueeze(0)], 2)
                # decode:
                self.pi, self.mu_x, self.mu_y, self.sigma_x, self.sigma_y, \
                    self.rho_xy, self.q, hidden, cell = \
                    self.decoder(input, z, hidden_cell)
                hidden_cell = (hidden, cell)
                # sample from parameters:
                s, dx, dy, pen_down, eos = self.sample_next_state()
                # ------
                seq_x.append(dx)
                seq_y.append(dy)
                seq_z.append(pen_down)
                if eos:
                    break
            # visualize result:
            x_sample = np.cumsum(seq_x, 0)
            y_sample = np.cumsum(seq_y, 0)
            z_sample = np.array(seq_z)
            return np.stack([x_sample, y_sample, z_sample]).astype(np.float64)

        def sample_next_state(self):

            def adjust_temp(pi_pdf):
                pi_pdf = np.log(pi_pdf) / hp.temperature
                pi_pdf -= pi_pdf.max()
                pi_pdf = np.exp(pi_pdf)
                pi_pdf /= pi_pdf.sum()
                return pi_pdf

            # get mixture indice:
            pi = self.pi.data[0, 0, :].cpu().numpy()
            pi = adjust_temp(pi)
            pi_idx = np_random.choice(hp.M, p=pi)
            # get pen state:
            q = self.q.data[0, 0, :].cpu().numpy()
            q = adjust_temp(q)
            q_idx = np_random.choice(3, p=q)
            # get mixture params:
            mu_x = self.mu_x.data[0, 0, pi_idx]
            mu_y = self.mu_y.data[0, 0, pi_idx]
            sigma_x = self.sigma_x.data[0, 0, pi_idx]
            sigma_y = self.sigma_y.data[0, 0, pi_idx]
            rho_xy = self.rho_xy.data[0, 0, pi_idx]
            x, y = sample_bivariate_normal(mu_x, mu_y, sigma_x, sigma_y, rho_xy, greedy=False)
            next_state = torch.zeros(5)
            next_state[0] = x
            next_state[1] = y
            next_state[q_idx + 2] = 1
            return next_state.view(1, 1, -1), x, y, q_idx == 1, q_idx == 2

    def sample_bivariate_normal(mu_x, mu_y, sigma_x, sigma_y, rho_xy, greedy=False):
        # inputs must be floats
        if greedy:
            return mu_x, mu_y
        mean = [mu_x, mu_y]
        sigma_x *= np.sqrt(hp.temperature)
        sigma_y *= np.sqrt(hp.temperature)
        cov = [[sigma_x * sigma_x, rho_xy * sigma_x * sigma_y],
               [rho_xy * sigma_x * sigma_y, sigma_y * sigma_y]]
        x = np_random.multivariate_normal(mean, cov, 1)
        return x[0][0], x[0][1]

    torch.manual_seed(5)
    model = Model()
    history = [model.train(epoch) for epoch in range(epochs)]
    grads = {n: p.grad for n, p in both.named_parameters()}
    lrs = [model.encoder_optimizer.param_groups[0]["lr"], model.decoder_optimizer.param_groups[0]["lr"]]
    drawing = model.conditional_generation(epochs)
    return {"history": history, "grads": grads, "state": both.state_dict(), "lrs": lrs, "drawing": drawing}


@pytest.mark.filterwarnings("ignore:Implicit dimension choice for softmax")
@pytest.mark.filterwarnings("ignore:.*clip_grad_norm.*deprecated")
def test_sketch_rnn_mixture_density_lstm_and_numpy_sampling():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        weights = weights_of(make_sketch_rnn)
    ours, _ = run_both(sketch_rnn, weights, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(ours["lrs"], [1e-3 * 0.9999 ** 3] * 2, rtol=1e-12)
