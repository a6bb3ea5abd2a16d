# ruff: noqa: B007, B023, E741, E731, F841, E712, UP004, UP008, UP031, E501, B006, B008, B018, E721, UP034, UP039  (the programs are kept as their authors wrote them)
"""Generative models not covered elsewhere (see tests/pytorch_programs.py), each run on chainrule and on PyTorch
from the same weights and the same seeded draws, comparing losses, gradients, samples and short trajectories.

- PixelCNN++ as pclucas14's port writes it: down/right-shifted convolutions by ``nn.ZeroPad2d`` and slicing,
  weight-normed layers (``nn.utils.weight_norm``), ``concat_elu``, gated resnets, the discretised logistic
  mixture likelihood (its hand-written ``log_sum_exp``/``log_prob_from_logits``, ``softplus`` edge cases at
  pixel values 0 and 255 chosen by float masks) and sampling from it (Gumbel-max by ``uniform_``, ``scatter_``
  one-hot, the inverse logistic CDF, clamps).
- A categorical VAE with the Gumbel-softmax (hand-written straight-through and ``F.gumbel_softmax(hard=True)``,
  temperature annealed by NumPy, ``size_average=False``), ``RelaxedOneHotCategorical``.
- Vector quantisers as lucidrains writes them: k-means init by ``cdist``/``bincount``/``scatter_add_``, EMA by
  ``lerp_`` with Laplace smoothing, dead-code expiry, cosine codebooks, residual VQ, orthogonal regularisation;
  FSQ (int32 level buffers, ``atanh``, round_ste) and LFQ (bit masks by ``&``, an entropy loss).
- MAF/MADE, BatchNormFlow, an LU-parametrised matrix and a coupling layer as ikostrikov/pytorch-flows writes them.
- pytorch-vqvae: a quantiser written as two ``autograd.Function``s (``addmm`` distances, ``mark_non_differentiable``,
  a straight-through backward by ``index_add_``) and a class-conditional gated PixelCNN prior sampled by
  ``multinomial``.
- beta-TCVAE's minibatch-stratified estimator and FactorVAE's permuted-latent discriminator (disentangling-vae).
- A VAE with a custom ``Distribution`` subclass as its likelihood (``_get_checked_instance`` in its expand),
  a ``TransformedDistribution`` subclass prior expanded over the batch, KLs registered for them (one chosen
  over an inherited closed form, with PyTorch's ambiguity warning).
- taming-transformers' VQGAN losses (the adaptive weight by ``autograd.grad`` of two losses with respect to the
  decoder's last weight, hinge/vanilla discriminator losses, an NLayerDiscriminator).
- JEM: a classifier as an energy model, SGLD from a replay buffer (``autograd.Variable``, ``x_k.data +=``).
- Sketch-RNN: a bidirectional-LSTM VAE, a bivariate Gaussian mixture by implicit-dim softmaxes, NumPy sampling.
- StyleGAN2 on the CPU (upfirdn2d_native, modulated and grouped transposed convolutions, style mixing, lazy R1
  and path-length regularisation, the EMA generator).
- NVAE reduced to two groups (weight-normalised convolutions with data-dependent init, TorchScript helpers with
  in-place sampling, residual posteriors, the KL balancer, spectral regularisation by power iteration).
- A binary RBM trained by CD-k, and NADE scoring and sampling in one loop."""

import math
import warnings

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

pytestmark = pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")

# ----------------------------------------------------------------------------------------------
# PixelCNN++ (pclucas14/pixel-cnn-pp): shifted convolutions and the discretised logistic mixture
# ----------------------------------------------------------------------------------------------


def pixelcnnpp_utils(m):
    torch, nn, F = m.torch, m.nn, m.F

    def concat_elu(x):
        """ like concatenated ReLU (http://arxiv.org/abs/1603.05201), but then with ELU """
        # Pytorch ordering
        axis = len(x.size()) - 3
        return F.elu(torch.cat([x, -x], dim=axis))

    def log_sum_exp(x):
        """ numerically stable log_sum_exp implementation that prevents overflow """
        # TF ordering
        axis = len(x.size()) - 1
        m, _ = torch.max(x, dim=axis)
        m2, _ = torch.max(x, dim=axis, keepdim=True)
        return m + torch.log(torch.sum(torch.exp(x - m2), dim=axis))

    def log_prob_from_logits(x):
        """ numerically stable log_softmax implementation that prevents overflow """
        # TF ordering
        axis = len(x.size()) - 1
        m, _ = torch.max(x, dim=axis, keepdim=True)
        return x - m - torch.log(torch.sum(torch.exp(x - m), dim=axis, keepdim=True))

    def discretized_mix_logistic_loss(x, l):
        """ log-likelihood for mixture of discretized logistics, assumes the data has been rescaled to [-1,1] interval """
        # Pytorch ordering
        x = x.permute(0, 2, 3, 1)
        l = l.permute(0, 2, 3, 1)
        xs = [int(y) for y in x.size()]
        ls = [int(y) for y in l.size()]

        # here and below: unpacking the params of the mixture of logistics
        nr_mix = int(ls[-1] / 10)
        logit_probs = l[:, :, :, :nr_mix]
        l = l[:, :, :, nr_mix:].contiguous().view(xs + [nr_mix * 3])  # 3 for mean, scale, coef
        means = l[:, :, :, :, :nr_mix]
        log_scales = torch.clamp(l[:, :, :, :, nr_mix:2 * nr_mix], min=-7.)

        coeffs = F.tanh(l[:, :, :, :, 2 * nr_mix:3 * nr_mix])
        # here and below: getting the means and adjusting them based on preceding
        # sub-pixels
        x = x.contiguous()
        x = x.unsqueeze(-1) + torch.zeros(xs + [nr_mix], requires_grad=False)
        m2 = (means[:, :, :, 1, :] + coeffs[:, :, :, 0, :]
              * x[:, :, :, 0, :]).view(xs[0], xs[1], xs[2], 1, nr_mix)

        m3 = (means[:, :, :, 2, :] + coeffs[:, :, :, 1, :] * x[:, :, :, 0, :] +
              coeffs[:, :, :, 2, :] * x[:, :, :, 1, :]).view(xs[0], xs[1], xs[2], 1, nr_mix)

        means = torch.cat((means[:, :, :, 0, :].unsqueeze(3), m2, m3), dim=3)
        centered_x = x - means
        inv_stdv = torch.exp(-log_scales)
        plus_in = inv_stdv * (centered_x + 1. / 255.)
        cdf_plus = F.sigmoid(plus_in)
        min_in = inv_stdv * (centered_x - 1. / 255.)
        cdf_min = F.sigmoid(min_in)
        # log probability for edge case of 0 (before scaling)
        log_cdf_plus = plus_in - F.softplus(plus_in)
        # log probability for edge case of 255 (before scaling)
        log_one_minus_cdf_min = -F.softplus(min_in)
        cdf_delta = cdf_plus - cdf_min  # probability for all other cases
        mid_in = inv_stdv * centered_x
        # log probability in the center of the bin, to be used in extreme cases
        # (not actually used in our code)
        log_pdf_mid = mid_in - log_scales - 2. * F.softplus(mid_in)

        inner_inner_cond = (cdf_delta > 1e-5).float()
        inner_inner_out = inner_inner_cond * torch.log(torch.clamp(cdf_delta, min=1e-12)) + (1. - inner_inner_cond) * (log_pdf_mid - np.log(127.5))
        inner_cond = (x > 0.999).float()
        inner_out = inner_cond * log_one_minus_cdf_min + (1. - inner_cond) * inner_inner_out
        cond = (x < -0.999).float()
        log_probs = cond * log_cdf_plus + (1. - cond) * inner_out
        log_probs = torch.sum(log_probs, dim=3) + log_prob_from_logits(logit_probs)

        return -torch.sum(log_sum_exp(log_probs))

    def to_one_hot(tensor, n, fill_with=1.):
        # we perform one hot encore with respect to the last axis
        one_hot = torch.FloatTensor(tensor.size() + (n,)).zero_()
        one_hot.scatter_(len(tensor.size()), tensor.unsqueeze(-1), fill_with)
        return one_hot

    def sample_from_discretized_mix_logistic(l, nr_mix):
        # Pytorch ordering
        l = l.permute(0, 2, 3, 1)
        ls = [int(y) for y in l.size()]
        xs = ls[:-1] + [3]

        # unpack parameters
        logit_probs = l[:, :, :, :nr_mix]
        l = l[:, :, :, nr_mix:].contiguous().view(xs + [nr_mix * 3])
        # sample mixture indicator from softmax
        temp = torch.FloatTensor(logit_probs.size())
        temp.uniform_(1e-5, 1. - 1e-5)
        temp = logit_probs.data - torch.log(- torch.log(temp))
        _, argmax = temp.max(dim=3)

        one_hot = to_one_hot(argmax, nr_mix)
        sel = one_hot.view(xs[:-1] + [1, nr_mix])
        # select logistic parameters
        means = torch.sum(l[:, :, :, :, :nr_mix] * sel, dim=4)
        log_scales = torch.clamp(torch.sum(
            l[:, :, :, :, nr_mix:2 * nr_mix] * sel, dim=4), min=-7.)
        coeffs = torch.sum(F.tanh(
            l[:, :, :, :, 2 * nr_mix:3 * nr_mix]) * sel, dim=4)
        # sample from logistic & clip to interval
        # we don't actually round to the nearest 8bit value when sampling
        u = torch.FloatTensor(means.size())
        u.uniform_(1e-5, 1. - 1e-5)
        x = means + torch.exp(log_scales) * (torch.log(u) - torch.log(1. - u))
        x0 = torch.clamp(torch.clamp(x[:, :, :, 0], min=-1.), max=1.)
        x1 = torch.clamp(torch.clamp(
            x[:, :, :, 1] + coeffs[:, :, :, 0] * x0, min=-1.), max=1.)
        x2 = torch.clamp(torch.clamp(
            x[:, :, :, 2] + coeffs[:, :, :, 1] * x0 + coeffs[:, :, :, 2] * x1, min=-1.), max=1.)

        out = torch.cat([x0.view(xs[:-1] + [1]), x1.view(xs[:-1] + [1]), x2.view(xs[:-1] + [1])], dim=3)
        # put back in Pytorch ordering
        out = out.permute(0, 3, 1, 2)
        return out

    def down_shift(x, pad=None):
        # Pytorch ordering
        xs = [int(y) for y in x.size()]
        # when downshifting, the last row is removed
        x = x[:, :, :xs[2] - 1, :]
        # padding left, padding right, padding top, padding bottom
        pad = nn.ZeroPad2d((0, 0, 1, 0)) if pad is None else pad
        return pad(x)

    def right_shift(x, pad=None):
        # Pytorch ordering
        xs = [int(y) for y in x.size()]
        # when righshifting, the last column is removed
        x = x[:, :, :, :xs[3] - 1]
        # padding left, padding right, padding top, padding bottom
        pad = nn.ZeroPad2d((1, 0, 0, 0)) if pad is None else pad
        return pad(x)

    return concat_elu, discretized_mix_logistic_loss, sample_from_discretized_mix_logistic, down_shift, right_shift


def make_pixelcnnpp(m, nr_filters=6, nr_logistic_mix=2):
    torch, nn, F = m.torch, m.nn, m.F
    from_torch = m is not OURS
    wn = (__import__("torch.nn.utils", fromlist=["weight_norm"]).weight_norm if from_torch
          else __import__("nn.utils", fromlist=["weight_norm"]).weight_norm)
    concat_elu, _, _, down_shift, right_shift = pixelcnnpp_utils(m)

    class nin(nn.Module):
        def __init__(self, dim_in, dim_out):
            super(nin, self).__init__()
            self.lin_a = wn(nn.Linear(dim_in, dim_out))
            self.dim_out = dim_out

        def forward(self, x):
            """ a network in network layer (1x1 CONV) """
            x = x.permute(0, 2, 3, 1)
            shp = [int(y) for y in x.size()]
            out = self.lin_a(x.contiguous().view(shp[0] * shp[1] * shp[2], shp[3]))
            shp[-1] = self.dim_out
            out = out.view(shp)
            return out.permute(0, 3, 1, 2)

    class down_shifted_conv2d(nn.Module):
        def __init__(self, num_filters_in, num_filters_out, filter_size=(2, 3), stride=(1, 1), shift_output_down=False):
            super(down_shifted_conv2d, self).__init__()
            self.conv = wn(nn.Conv2d(num_filters_in, num_filters_out, filter_size, stride))
            self.shift_output_down = shift_output_down
            self.pad = nn.ZeroPad2d((int((filter_size[1] - 1) / 2),  # pad left
                                     int((filter_size[1] - 1) / 2),  # pad right
                                     filter_size[0] - 1,  # pad top
                                     0))  # pad down
            if shift_output_down:
                self.down_shift = lambda x: down_shift(x, pad=nn.ZeroPad2d((0, 0, 1, 0)))

        def forward(self, x):
            x = self.pad(x)
            x = self.conv(x)
            return self.down_shift(x) if self.shift_output_down else x

    class down_right_shifted_conv2d(nn.Module):
        def __init__(self, num_filters_in, num_filters_out, filter_size=(2, 2), stride=(1, 1), shift_output_right=False):
            super(down_right_shifted_conv2d, self).__init__()
            self.pad = nn.ZeroPad2d((filter_size[1] - 1, 0, filter_size[0] - 1, 0))
            self.conv = wn(nn.Conv2d(num_filters_in, num_filters_out, filter_size, stride=stride))
            self.shift_output_right = shift_output_right
            if shift_output_right:
                self.right_shift = lambda x: right_shift(x, pad=nn.ZeroPad2d((1, 0, 0, 0)))

        def forward(self, x):
            x = self.pad(x)
            x = self.conv(x)
            return self.right_shift(x) if self.shift_output_right else x

    class down_shifted_deconv2d(nn.Module):
        def __init__(self, num_filters_in, num_filters_out, filter_size=(2, 3), stride=(1, 1)):
            super(down_shifted_deconv2d, self).__init__()
            self.deconv = wn(nn.ConvTranspose2d(num_filters_in, num_filters_out, filter_size, stride,
                                                output_padding=1))
            self.filter_size = filter_size
            self.stride = stride

        def forward(self, x):
            x = self.deconv(x)
            xs = [int(y) for y in x.size()]
            return x[:, :, :(xs[2] - self.filter_size[0] + 1),
                     int((self.filter_size[1] - 1) / 2):(xs[3] - int((self.filter_size[1] - 1) / 2))]

    class down_right_shifted_deconv2d(nn.Module):
        def __init__(self, num_filters_in, num_filters_out, filter_size=(2, 2), stride=(1, 1)):
            super(down_right_shifted_deconv2d, self).__init__()
            self.deconv = wn(nn.ConvTranspose2d(num_filters_in, num_filters_out, filter_size, stride, output_padding=1))
            self.filter_size = filter_size
            self.stride = stride

        def forward(self, x):
            x = self.deconv(x)
            xs = [int(y) for y in x.size()]
            x = x[:, :, :(xs[2] - self.filter_size[0] + 1):, :(xs[3] - self.filter_size[1] + 1)]
            return x

    class gated_resnet(nn.Module):
        def __init__(self, num_filters, conv_op, nonlinearity=concat_elu, skip_connection=0):
            super(gated_resnet, self).__init__()
            self.skip_connection = skip_connection
            self.nonlinearity = nonlinearity
            self.conv_input = conv_op(2 * num_filters, num_filters)  # cuz of concat elu

            if skip_connection != 0:
                self.nin_skip = nin(2 * skip_connection * num_filters, num_filters)

            self.dropout = nn.Dropout2d(0.5)
            self.conv_out = conv_op(2 * num_filters, 2 * num_filters)

        def forward(self, og_x, a=None):
            x = self.conv_input(self.nonlinearity(og_x))
            if a is not None:
                x += self.nin_skip(self.nonlinearity(a))
            x = self.nonlinearity(x)
            x = self.dropout(x)
            x = self.conv_out(x)
            a, b = torch.chunk(x, 2, dim=1)
            c3 = a * F.sigmoid(b)
            return og_x + c3

    class PixelCNN(nn.Module):
        """One up pass and one down pass of gated resnets on the u (down-shifted) and ul (down-right-shifted)
        streams, with a strided downsample and a transposed upsample between two resolutions."""

        def __init__(self, nr_filters=nr_filters, nr_logistic_mix=nr_logistic_mix, input_channels=3):
            super(PixelCNN, self).__init__()
            self.nr_filters = nr_filters
            self.input_channels = input_channels
            self.nr_logistic_mix = nr_logistic_mix
            self.right_shift_pad = nn.ZeroPad2d((1, 0, 0, 0))
            self.down_shift_pad = nn.ZeroPad2d((0, 0, 1, 0))

            self.u_init = down_shifted_conv2d(input_channels + 1, nr_filters, filter_size=(2, 3),
                                              shift_output_down=True)
            self.ul_init = nn.ModuleList([down_shifted_conv2d(input_channels + 1, nr_filters, filter_size=(1, 3),
                                                              shift_output_down=True),
                                          down_right_shifted_conv2d(input_channels + 1, nr_filters,
                                                                    filter_size=(2, 1), shift_output_right=True)])
            self.up_u = gated_resnet(nr_filters, down_shifted_conv2d, skip_connection=0)
            self.up_ul = gated_resnet(nr_filters, down_right_shifted_conv2d, skip_connection=1)
            self.downsize_u = down_shifted_conv2d(nr_filters, nr_filters, stride=(2, 2))
            self.downsize_ul = down_right_shifted_conv2d(nr_filters, nr_filters, stride=(2, 2))
            self.upsize_u = down_shifted_deconv2d(nr_filters, nr_filters, stride=(2, 2))
            self.upsize_ul = down_right_shifted_deconv2d(nr_filters, nr_filters, stride=(2, 2))
            self.down_u = gated_resnet(nr_filters, down_shifted_conv2d, skip_connection=1)
            self.down_ul = gated_resnet(nr_filters, down_right_shifted_conv2d, skip_connection=2)
            num_mix = 3 if self.input_channels == 1 else 10
            self.nin_out = nin(nr_filters, num_mix * nr_logistic_mix)
            self.init_padding = None

        def forward(self, x, sample=False):
            # similar as done in the tf repo :
            if self.init_padding is None and not sample:
                xs = [int(y) for y in x.size()]
                padding = torch.ones(xs[0], 1, xs[2], xs[3], requires_grad=False)
                self.init_padding = padding

            if sample:
                xs = [int(y) for y in x.size()]
                padding = torch.ones(xs[0], 1, xs[2], xs[3], requires_grad=False)
                x = torch.cat((x, padding), 1)

            ###      UP PASS    ###
            x = x if sample else torch.cat((x, self.init_padding), 1)
            u_list = [self.u_init(x)]
            ul_list = [self.ul_init[0](x) + self.ul_init[1](x)]
            u_list.append(self.up_u(u_list[-1]))
            ul_list.append(self.up_ul(ul_list[-1], a=u_list[-1]))
            u_list.append(self.downsize_u(u_list[-1]))
            ul_list.append(self.downsize_ul(ul_list[-1]))

            ###    DOWN PASS    ###
            u = u_list.pop()
            ul = ul_list.pop()
            u = self.upsize_u(u)
            ul = self.upsize_ul(ul)
            u = self.down_u(u, u_list.pop())
            ul = self.down_ul(ul, a=torch.cat((u, ul_list.pop()), 1))
            x_out = self.nin_out(F.elu(ul))
            assert len(u_list) == 1 and len(ul_list) == 1
            return x_out

    return PixelCNN()


def pixelcnnpp(m, weights, steps=3):
    torch, F = m.torch, m.F
    _, loss_op, sample_op, _, _ = pixelcnnpp_utils(m)
    model = load(m, make_pixelcnnpp(m), weights)
    rng = np.random.default_rng(16)
    # 8-bit pixels rescaled to [-1, 1], with plenty of exact 0s and 255s (the two edge cases of the likelihood)
    pixels = rng.choice(np.array([0, 0, 17, 128, 200, 255, 255]), size=(6, 3, 4, 4))
    data = (pixels / 127.5 - 1.0).astype(np.float32)
    optimizer = m.optim.Adam(model.parameters(), lr=2e-3)
    scheduler = m.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9995)
    model.eval()  # Dropout2d off: the comparison is of the arithmetic, not of dropout's draws
    losses = []
    for step in range(steps):
        input = torch.from_numpy(data[2 * step:2 * step + 2])
        output = model(input)
        loss = loss_op(input, output)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        deno = 2 * np.log(2.) * np.prod((3, 4, 4))
        losses.append(loss.item() / deno)  # bits per dim
    grads = {n: p.grad for n, p in model.named_parameters()}
    # sampling, pixel by pixel (raster order), the mixture drawn with the default generator
    torch.manual_seed(3)
    with torch.no_grad():
        data_s = torch.zeros(2, 3, 4, 4)
        for i in range(4):
            for j in range(4):
                out = model(data_s, sample=True)
                out_sample = sample_op(out, model.nr_logistic_mix)
                data_s[:, :, i, j] = out_sample.data[:, :, i, j]
    # the network is causal: the gradient of pixel (1, 2)'s parameters reaches only the pixels before it
    x = torch.from_numpy(data[:2]).requires_grad_()
    out = model(x)
    out[0, :, 1, 2].sum().backward()
    return {"losses": losses, "grads": grads, "state": model.state_dict(), "samples": data_s, "out": out,
            "input_grad": x.grad}


def test_pixelcnnpp_discretized_logistic_mixture():
    weights = weights_of(make_pixelcnnpp)
    ours, theirs = run_both(pixelcnnpp, weights, rtol=2e-4, atol=2e-5)
    assert np.all(np.abs(ours["samples"]) <= 1.0)
    assert all(np.isfinite(ours["losses"]))
    reach = np.abs(ours["input_grad"][0]).sum(0) > 0
    assert not reach.reshape(-1)[1 * 4 + 2:].any() and reach.any()


# ----------------------------------------------------------------------------------------------
# A categorical VAE with the Gumbel-softmax (YongfeiYan/Gumbel_Softmax_VAE): hard straight-through samples,
# temperature annealing by NumPy, the KL to a uniform prior; F.gumbel_softmax and RelaxedOneHotCategorical
# ----------------------------------------------------------------------------------------------

latent_dim, categorical_dim = 3, 4


def make_gumbel_vae(m):
    torch, nn, F = m.torch, m.nn, m.F

    def sample_gumbel(shape, eps=1e-20):
        U = torch.rand(shape)
        return -torch.log(-torch.log(U + eps) + eps)

    def gumbel_softmax_sample(logits, temperature):
        y = logits + sample_gumbel(logits.size())
        return F.softmax(y / temperature, dim=-1)

    def gumbel_softmax(logits, temperature, hard=False):
        """
        ST-gumple-softmax
        input: [*, n_class]
        return: flatten --> [*, n_class] an one-hot vector
        """
        y = gumbel_softmax_sample(logits, temperature)

        if not hard:
            return y.view(-1, latent_dim * categorical_dim)

        shape = y.size()
        _, ind = y.max(dim=-1)
        y_hard = torch.zeros_like(y).view(-1, shape[-1])
        y_hard.scatter_(1, ind.view(-1, 1), 1)
        y_hard = y_hard.view(*shape)
        # Set gradients w.r.t. y_hard gradients w.r.t. y
        y_hard = (y_hard - y).detach() + y
        return y_hard.view(-1, latent_dim * categorical_dim)

    class VAE_gumbel(nn.Module):
        def __init__(self, temp, builtin=False):
            super(VAE_gumbel, self).__init__()
            self.fc1 = nn.Linear(64, 32)
            self.fc2 = nn.Linear(32, 16)
            self.fc3 = nn.Linear(16, latent_dim * categorical_dim)
            self.fc4 = nn.Linear(latent_dim * categorical_dim, 16)
            self.fc5 = nn.Linear(16, 32)
            self.fc6 = nn.Linear(32, 64)
            self.relu = nn.ReLU()
            self.sigmoid = nn.Sigmoid()
            self.builtin = builtin

        def encode(self, x):
            h1 = self.relu(self.fc1(x))
            h2 = self.relu(self.fc2(h1))
            return self.relu(self.fc3(h2))

        def decode(self, z):
            h4 = self.relu(self.fc4(z))
            h5 = self.relu(self.fc5(h4))
            return self.sigmoid(self.fc6(h5))

        def forward(self, x, temp, hard):
            q = self.encode(x.view(-1, 64))
            q_y = q.view(q.size(0), latent_dim, categorical_dim)
            if self.builtin:
                z = F.gumbel_softmax(q_y, tau=temp, hard=hard).view(-1, latent_dim * categorical_dim)
            else:
                z = gumbel_softmax(q_y, temp, hard)
            return self.decode(z), F.softmax(q_y, dim=-1).reshape(*q.size())

    return VAE_gumbel(1.0)


def gumbel_vae(m, weights, hard=True, builtin=False, epochs=2):
    torch, F = m.torch, m.F
    model = load(m, make_gumbel_vae(m), weights)
    model.builtin = builtin

    def loss_function(recon_x, x, qy):
        BCE = F.binary_cross_entropy(recon_x, x.view(-1, 64), size_average=False) / x.shape[0]
        log_ratio = torch.log(qy * categorical_dim + 1e-20)
        KLD = torch.sum(qy * log_ratio, dim=-1).mean()
        return BCE + KLD

    rng = np.random.default_rng(5)
    images = (rng.random((24, 1, 8, 8)) > 0.6).astype(np.float32)
    dataset = m.data.TensorDataset(torch.from_numpy(images), torch.zeros(24))
    train_loader = m.data.DataLoader(dataset, batch_size=6, shuffle=True,
                                     generator=torch.Generator().manual_seed(0))
    optimizer = m.optim.Adam(model.parameters(), lr=1e-3)
    temp, temp_min, ANNEAL_RATE = 1.0, 0.5, 0.03
    torch.manual_seed(7)
    history = []
    for epoch in range(epochs):
        model.train()
        train_loss = 0
        for batch_idx, (data, _) in enumerate(train_loader):
            optimizer.zero_grad()
            recon_batch, qy = model(data, temp, hard)
            loss = loss_function(recon_batch, data, qy)
            loss.backward()
            train_loss += loss.item() * len(data)
            optimizer.step()
            if batch_idx % 2 == 1:
                temp = np.maximum(temp * np.exp(-ANNEAL_RATE * batch_idx), temp_min)
        history.append([train_loss / len(train_loader.dataset), float(temp)])
    grads = {n: p.grad for n, p in model.named_parameters()}
    # samples from the prior: one category per latent chosen by NumPy
    M = 5 * latent_dim
    np_y = np.zeros((M, categorical_dim), dtype=np.float32)
    np_y[range(M), np.random.default_rng(1).choice(categorical_dim, M)] = 1
    np_y = np.reshape(np_y, [M // latent_dim, latent_dim, categorical_dim])
    sample = torch.from_numpy(np_y).view(M // latent_dim, latent_dim * categorical_dim)
    model.eval()
    with torch.no_grad():
        sample = model.decode(sample)
    # a relaxed one-hot posterior, reparameterised, and its log density
    logits = model.fc3.bias.detach().view(latent_dim, categorical_dim)
    posterior = torch.distributions.RelaxedOneHotCategorical(torch.tensor(0.5), logits=logits)
    torch.manual_seed(2)
    z = posterior.rsample((2,))
    return {"history": history, "grads": grads, "state": model.state_dict(), "sample": sample,
            "z": z, "log_prob": posterior.log_prob(z)}


@pytest.mark.parametrize("hard,builtin", [(True, False), (False, False), (True, True)])
def test_gumbel_softmax_vae(hard, builtin):
    weights = weights_of(make_gumbel_vae)
    ours, _ = run_both(gumbel_vae, weights, hard=hard, builtin=builtin, rtol=1e-4, atol=1e-5)
    assert ours["history"][-1][1] == pytest.approx(max(np.exp(-0.03) ** 2 * np.exp(-0.03 * 3) ** 2, 0.5))
    np.testing.assert_allclose(ours["z"].sum(-1), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Vector quantisers as lucidrains/vector-quantize-pytorch writes them (without einops): a Euclidean codebook
# initialised by k-means (torch.cdist, bincount, scatter_add_), EMA updates by lerp_ with Laplace smoothing,
# dead codes expired to batch samples, a cosine-similarity codebook, residual VQ, orthogonal regularisation;
# FSQ (int32 level buffers, atanh/tanh bounds, round_ste, the implicit codebook by // and %) and LFQ (bit
# masks by &, an entropy loss)
# ----------------------------------------------------------------------------------------------


def vq_helpers(m):
    torch, F = m.torch, m.F

    def l2norm(t):
        return F.normalize(t, p=2, dim=-1)

    def laplace_smoothing(x, n_categories, eps=1e-5, dim=-1):
        denom = x.sum(dim=dim, keepdim=True)
        return (x + eps) / (denom + n_categories * eps)

    def sample_vectors(samples, num):
        num_samples, device = samples.shape[0], samples.device
        if num_samples >= num:
            indices = torch.randperm(num_samples, device=device)[:num]
        else:
            indices = torch.randint(0, num_samples, (num,), device=device)
        return samples[indices]

    def kmeans(samples, num_clusters, num_iters=10, use_cosine_sim=False):
        dim, dtype = samples.shape[-1], samples.dtype
        means = sample_vectors(samples, num_clusters)
        for _ in range(num_iters):
            if use_cosine_sim:
                dists = samples @ means.t()
            else:
                dists = -torch.cdist(samples, means, p=2)
            buckets = dists.max(dim=-1).indices
            bins = torch.bincount(buckets, minlength=num_clusters)
            zero_mask = bins == 0
            bins_min_clamped = bins.masked_fill(zero_mask, 1)
            new_means = buckets.new_zeros(num_clusters, dim, dtype=dtype)
            new_means.scatter_add_(0, buckets.unsqueeze(-1).expand(-1, dim), samples)
            new_means = new_means / bins_min_clamped[..., None]
            if use_cosine_sim:
                new_means = l2norm(new_means)
            means = torch.where(zero_mask[..., None], means, new_means)
        return means, bins

    def ema_inplace(old, new, decay):
        old.lerp_(new, 1 - decay)

    def orthogonal_loss_fn(t):
        # eq (2) from https://arxiv.org/abs/2112.00384
        n = t.shape[0]
        normed_codes = l2norm(t)
        identity = torch.eye(n, device=t.device)
        cosine_sim = torch.einsum('i d, j d -> i j', normed_codes, normed_codes)
        return ((cosine_sim - identity) ** 2).sum() / (n ** 2)

    return l2norm, laplace_smoothing, sample_vectors, kmeans, ema_inplace, orthogonal_loss_fn


def make_vq_autoencoder(m, dim=4, codebook_size=6):
    torch, nn, F = m.torch, m.nn, m.F
    l2norm, laplace_smoothing, sample_vectors, kmeans, ema_inplace, orthogonal_loss_fn = vq_helpers(m)

    class EuclideanCodebook(nn.Module):
        def __init__(self, dim, codebook_size, kmeans_init=False, kmeans_iters=4, decay=0.8, eps=1e-5,
                     threshold_ema_dead_code=0, use_cosine_sim=False):
            super().__init__()
            self.decay = decay
            init_fn = torch.randn if not kmeans_init else torch.zeros
            embed = init_fn(codebook_size, dim)
            if use_cosine_sim:
                embed = l2norm(embed)
            self.codebook_size = codebook_size
            self.kmeans_iters = kmeans_iters
            self.eps = eps
            self.threshold_ema_dead_code = threshold_ema_dead_code
            self.use_cosine_sim = use_cosine_sim
            self.register_buffer('initted', torch.Tensor([not kmeans_init]))
            self.register_buffer('cluster_size', torch.zeros(codebook_size))
            self.register_buffer('embed', embed)
            self.register_buffer('embed_avg', embed.clone())

        def init_embed_(self, data):
            if self.initted:
                return
            embed, cluster_size = kmeans(data, self.codebook_size, self.kmeans_iters, self.use_cosine_sim)
            self.embed.data.copy_(embed)
            self.embed_avg.data.copy_(embed.clone())
            self.cluster_size.data.copy_(cluster_size)
            self.initted.data.copy_(torch.Tensor([True]))

        def replace(self, samples, mask):
            modified_codebook = torch.where(mask[..., None], sample_vectors(samples, self.codebook_size), self.embed)
            self.embed.data.copy_(modified_codebook)

        def expire_codes_(self, batch_samples):
            if self.threshold_ema_dead_code == 0:
                return
            expired_codes = self.cluster_size < self.threshold_ema_dead_code
            if not torch.any(expired_codes):
                return
            batch_samples = batch_samples.reshape(-1, batch_samples.shape[-1])
            self.replace(batch_samples, mask=expired_codes)

        def forward(self, x):
            shape, dtype = x.shape, x.dtype
            flatten = x.reshape(-1, shape[-1])
            if self.use_cosine_sim:
                flatten = l2norm(flatten)
            self.init_embed_(flatten)
            embed = self.embed.t()
            if self.use_cosine_sim:
                dist = flatten @ embed
            else:
                dist = -(flatten.pow(2).sum(1, keepdim=True) - 2 * flatten @ embed
                         + embed.pow(2).sum(0, keepdim=True))
            embed_ind = dist.max(dim=-1).indices
            embed_onehot = F.one_hot(embed_ind, self.codebook_size).type(dtype)
            embed_ind = embed_ind.view(*shape[:-1])
            quantize = F.embedding(embed_ind, self.embed)
            if self.training:
                ema_inplace(self.cluster_size, embed_onehot.sum(0), self.decay)
                embed_sum = flatten.t() @ embed_onehot
                ema_inplace(self.embed_avg, embed_sum.t(), self.decay)
                cluster_size = laplace_smoothing(self.cluster_size, self.codebook_size, self.eps) * self.cluster_size.sum()
                embed_normalized = self.embed_avg / cluster_size.unsqueeze(1)
                if self.use_cosine_sim:
                    embed_normalized = l2norm(embed_normalized)
                self.embed.data.copy_(embed_normalized)
                self.expire_codes_(x)
            return quantize, embed_ind

    class VectorQuantize(nn.Module):
        def __init__(self, dim, codebook_size, codebook_dim=None, commitment_weight=1., orthogonal_reg_weight=0.,
                     **kwargs):
            super().__init__()
            codebook_dim = codebook_dim if codebook_dim is not None else dim
            requires_projection = codebook_dim != dim
            self.project_in = nn.Linear(dim, codebook_dim) if requires_projection else nn.Identity()
            self.project_out = nn.Linear(codebook_dim, dim) if requires_projection else nn.Identity()
            self.commitment_weight = commitment_weight
            self.orthogonal_reg_weight = orthogonal_reg_weight
            self._codebook = EuclideanCodebook(codebook_dim, codebook_size, **kwargs)

        @property
        def codebook(self):
            return self._codebook.embed

        def forward(self, x):
            device = x.device
            x = self.project_in(x)
            quantize, embed_ind = self._codebook(x)
            if self.training:
                quantize = x + (quantize - x).detach()
            loss = torch.tensor([0.], device=device, requires_grad=self.training)
            if self.training:
                if self.commitment_weight > 0:
                    commit_loss = F.mse_loss(quantize.detach(), x)
                    loss = loss + commit_loss * self.commitment_weight
                if self.orthogonal_reg_weight > 0:
                    orthogonal_reg_loss = orthogonal_loss_fn(self.codebook)
                    loss = loss + orthogonal_reg_loss * self.orthogonal_reg_weight
            quantize = self.project_out(quantize)
            return quantize, embed_ind, loss

    class ResidualVQ(nn.Module):
        """ Follows Algorithm 1. in https://arxiv.org/pdf/2107.03312.pdf """

        def __init__(self, *, num_quantizers, **kwargs):
            super().__init__()
            self.layers = nn.ModuleList([VectorQuantize(**kwargs) for _ in range(num_quantizers)])

        def forward(self, x):
            quantized_out = 0.
            residual = x
            all_losses = []
            all_indices = []
            for layer in self.layers:
                quantized, indices, loss = layer(residual)
                residual = residual - quantized.detach()
                quantized_out = quantized_out + quantized
                all_indices.append(indices)
                all_losses.append(loss)
            all_losses, all_indices = map(torch.stack, (all_losses, all_indices))
            return quantized_out, all_indices, all_losses

    class Autoencoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Conv1d(2, 8, 3, padding=1), nn.GELU(), nn.Conv1d(8, dim, 1))
            self.vq = VectorQuantize(dim, codebook_size, codebook_dim=3, kmeans_init=True,
                                     threshold_ema_dead_code=2, orthogonal_reg_weight=0.1)
            self.cos_vq = VectorQuantize(dim, codebook_size, use_cosine_sim=True, decay=0.9)
            self.rvq = ResidualVQ(num_quantizers=2, dim=dim, codebook_size=codebook_size, kmeans_init=True)
            self.decoder = nn.Sequential(nn.Conv1d(3 * dim, 8, 3, padding=1), nn.GELU(), nn.Conv1d(8, 2, 1))

        def forward(self, x):
            z = self.encoder(x).transpose(1, 2)  # b d n -> b n d
            q1, i1, l1 = self.vq(z)
            q2, i2, l2 = self.cos_vq(z)
            q3, i3, l3 = self.rvq(z)
            q = torch.cat([q1, q2, q3], dim=-1).transpose(1, 2)
            return self.decoder(q), (i1, i2, i3), l1.sum() + l2.sum() + l3.sum()

    return Autoencoder()


def vq_autoencoder(m, weights, steps=4):
    torch, F = m.torch, m.F
    torch.manual_seed(0)  # the codebooks' own init (randn / zeros) is replaced by the weights below
    model = make_vq_autoencoder(m)
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    rng = np.random.default_rng(9)
    series = rng.standard_normal((8, 2, 10)).astype(np.float32).cumsum(-1) * 0.3
    optimizer = m.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    torch.manual_seed(4)  # k-means' and the dead-code replacement's randperm / randint
    history, codes = [], []
    model.train()
    for step in range(steps):
        x = torch.from_numpy(series[2 * step:2 * step + 2])
        recon, indices, vq_loss = model(x)
        loss = F.mse_loss(recon, x) + vq_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append([loss.item(), vq_loss.item()])
        codes.append(torch.cat([i.reshape(-1) for i in indices]))
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    model.eval()
    with torch.no_grad():
        recon, indices, eval_loss = model(torch.from_numpy(series[:2]))
    return {"history": history, "codes": codes, "grads": grads, "state": model.state_dict(), "recon": recon,
            "eval_loss": eval_loss, "initted": bool(model.vq._codebook.initted)}


def test_vq_kmeans_ema_dead_codes_cosine_and_residual():
    weights = weights_of(make_vq_autoencoder)
    ours, _ = run_both(vq_autoencoder, weights, rtol=2e-4, atol=2e-5)
    assert ours["initted"] is True
    assert ours["eval_loss"] == 0
    assert ours["codes"][0].max() < 6


def make_fsq_lfq(m, levels=(8, 5, 4), lfq_codebook_size=16):
    torch, nn, F = m.torch, m.nn, m.F
    int32 = torch.int32

    def round_ste(z):
        """Round with straight through gradients."""
        zhat = z.round()
        return z + (zhat - z).detach()

    class FSQ(nn.Module):
        def __init__(self, levels, dim=None):
            super().__init__()
            _levels = torch.tensor(levels, dtype=int32)
            self.register_buffer("_levels", _levels, persistent=False)
            _basis = torch.cumprod(torch.tensor([1] + levels[:-1]), dim=0, dtype=int32)
            self.register_buffer("_basis", _basis, persistent=False)
            codebook_dim = len(levels)
            self.codebook_dim = codebook_dim
            self.dim = dim if dim is not None else codebook_dim
            has_projections = self.dim != codebook_dim
            self.project_in = nn.Linear(self.dim, codebook_dim) if has_projections else nn.Identity()
            self.project_out = nn.Linear(codebook_dim, self.dim) if has_projections else nn.Identity()
            self.codebook_size = self._levels.prod().item()
            implicit_codebook = self.indices_to_codes(torch.arange(self.codebook_size), project_out=False)
            self.register_buffer("implicit_codebook", implicit_codebook, persistent=False)

        def bound(self, z, eps: float = 1e-3):
            """Bound `z`, an array of shape (..., d)."""
            half_l = (self._levels - 1) * (1 + eps) / 2
            offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
            shift = (offset / half_l).atanh()
            return (z + shift).tanh() * half_l - offset

        def quantize(self, z):
            """Quantizes z, returns quantized zhat, same shape as z."""
            quantized = round_ste(self.bound(z))
            half_width = self._levels // 2  # Renormalize to [-1, 1].
            return quantized / half_width

        def _scale_and_shift(self, zhat_normalized):
            half_width = self._levels // 2
            return (zhat_normalized * half_width) + half_width

        def _scale_and_shift_inverse(self, zhat):
            half_width = self._levels // 2
            return (zhat - half_width) / half_width

        def codes_to_indices(self, zhat):
            """Converts a `code` to an index in the codebook."""
            assert zhat.shape[-1] == self.codebook_dim
            zhat = self._scale_and_shift(zhat)
            return (zhat * self._basis).sum(dim=-1).to(int32)

        def indices_to_codes(self, indices, project_out=True):
            """Inverse of `codes_to_indices`."""
            indices = indices.unsqueeze(-1)
            codes_non_centered = (indices // self._basis) % self._levels
            codes = self._scale_and_shift_inverse(codes_non_centered)
            if project_out:
                codes = self.project_out(codes)
            return codes

        def forward(self, z):
            z = self.project_in(z)
            codes = self.quantize(z)
            indices = self.codes_to_indices(codes)
            out = self.project_out(codes)
            return out, indices

    def log(t, eps=1e-5):
        return t.clamp(min=eps).log()

    def entropy(prob):
        return (-prob * log(prob)).sum(dim=-1)

    class LFQ(nn.Module):
        def __init__(self, dim, codebook_size, entropy_loss_weight=0.1, commitment_loss_weight=0.25,
                     diversity_gamma=1., inv_temperature=100., codebook_scale=1.):
            super().__init__()
            codebook_dim = int(math.log2(codebook_size))
            self.project_in = nn.Linear(dim, codebook_dim)
            self.project_out = nn.Linear(codebook_dim, dim)
            self.codebook_dim = codebook_dim
            self.diversity_gamma = diversity_gamma
            self.inv_temperature = inv_temperature
            self.entropy_loss_weight = entropy_loss_weight
            self.commitment_loss_weight = commitment_loss_weight
            self.codebook_scale = codebook_scale
            self.register_buffer('mask', 2 ** torch.arange(codebook_dim - 1, -1, -1), persistent=False)
            all_codes = torch.arange(codebook_size)
            bits = ((all_codes[..., None].int() & self.mask) != 0).float()
            codebook = bits * codebook_scale * 2 - codebook_scale
            self.register_buffer('codebook', codebook, persistent=False)

        def indices_to_codes(self, indices):
            bits = ((indices[..., None].int() & self.mask) != 0).float()
            return self.project_out(bits * self.codebook_scale * 2 - self.codebook_scale)

        def forward(self, x):
            x = self.project_in(x)
            original_input = x
            codebook_value = torch.ones_like(x) * self.codebook_scale
            quantized = torch.where(x > 0, codebook_value, -codebook_value)
            indices = ((quantized > 0).int() * self.mask.int()).sum(dim=-1)
            if self.training:
                x = x + (quantized - x).detach()
            else:
                x = quantized
            if self.training:
                distance = -2 * torch.einsum('... i d, j d -> ... i j', original_input, self.codebook)
                prob = (-distance * self.inv_temperature).softmax(dim=-1)
                per_sample_entropy = entropy(prob).mean()
                avg_prob = prob.reshape(-1, prob.shape[-1]).mean(dim=0)
                codebook_entropy = entropy(avg_prob).mean()
                entropy_aux_loss = per_sample_entropy - self.diversity_gamma * codebook_entropy
                commit_loss = F.mse_loss(original_input, quantized.detach(), reduction='none').mean()
            else:
                entropy_aux_loss = commit_loss = torch.zeros(())
            aux_loss = entropy_aux_loss * self.entropy_loss_weight + commit_loss * self.commitment_loss_weight
            return self.project_out(x), indices, aux_loss

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(6, 16), nn.SiLU(), nn.Linear(16, 5))
            self.fsq = FSQ(list(levels), dim=5)
            self.lfq = LFQ(5, lfq_codebook_size, inv_temperature=10.)  # 100 (the default) amplifies float32 rounding
            self.dec = nn.Sequential(nn.Linear(10, 16), nn.SiLU(), nn.Linear(16, 6))

        def forward(self, x):
            z = self.enc(x)
            q1, i1 = self.fsq(z)
            q2, i2, aux = self.lfq(z)
            return self.dec(torch.cat([q1, q2], -1)), i1, i2, aux

    return Model()


def fsq_lfq(m, weights, steps=5):
    torch, F = m.torch, m.F
    model = load(m, make_fsq_lfq(m), weights)
    rng = np.random.default_rng(3)
    data = rng.standard_normal((5, 4, 7, 6)).astype(np.float32)
    optimizer = m.optim.Adam(model.parameters(), lr=1e-2)
    history, indices = [], []
    model.train()
    for step in range(steps):
        x = torch.from_numpy(data[step])
        recon, i1, i2, aux = model(x)
        loss = F.mse_loss(recon, x) + aux
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append([loss.item(), aux.item()])
        indices.append([i1, i2])
    grads = {n: p.grad for n, p in model.named_parameters()}
    fsq = model.fsq
    model.eval()
    with torch.no_grad():
        recon, i1, i2, aux = model(torch.from_numpy(data[0]))
        codes = fsq.indices_to_codes(i1, project_out=False)
    return {"history": history, "indices": indices, "grads": grads, "state": model.state_dict(),
            "implicit_codebook": fsq.implicit_codebook, "codebook_size": fsq.codebook_size,
            "basis": fsq._basis, "codes": codes, "round_trip": fsq.codes_to_indices(codes), "i1": i1,
            "lfq_codes": model.lfq.indices_to_codes(i2), "lfq_codebook": model.lfq.codebook,
            "dtypes": [fsq.implicit_codebook.dtype == torch.float32, i1.dtype == torch.int32,
                       i2.dtype == torch.int64, fsq._basis.dtype == torch.int32]}


def test_fsq_and_lookup_free_quantization():
    weights = weights_of(make_fsq_lfq)
    ours, _ = run_both(fsq_lfq, weights, rtol=1e-4, atol=1e-5)
    assert ours["codebook_size"] == 8 * 5 * 4
    np.testing.assert_array_equal(ours["round_trip"], ours["i1"])
    assert ours["dtypes"] == [True] * 4
    np.testing.assert_array_equal(ours["basis"], [1, 8, 40])


# ----------------------------------------------------------------------------------------------
# MAF as ikostrikov/pytorch-flows writes it: MADE with masked F.linear and conditioning inputs, the
# sequential inverse by column assignment, BatchNormFlow (running statistics by mul_/add_, momentum switched
# to refresh them), Reverse by NumPy index arrays, an LU-parametrised invertible matrix (torch.linalg.lu in
# place of scipy's), RealNVP's coupling layer with a mask; log_probs, sampling and the inverse's round trip
# ----------------------------------------------------------------------------------------------


def make_maf(m, num_inputs=4, num_hidden=12, num_cond_inputs=2, num_blocks=2):
    torch, nn, F = m.torch, m.nn, m.F

    def get_mask(in_features, out_features, in_flow_features, mask_type=None):
        """
        mask_type: input | None | output

        See Figure 1 for a better illustration:
        https://arxiv.org/pdf/1502.03509.pdf
        """
        if mask_type == 'input':
            in_degrees = torch.arange(in_features) % in_flow_features
        else:
            in_degrees = torch.arange(in_features) % (in_flow_features - 1)

        if mask_type == 'output':
            out_degrees = torch.arange(out_features) % in_flow_features - 1
        else:
            out_degrees = torch.arange(out_features) % (in_flow_features - 1)

        return (out_degrees.unsqueeze(-1) >= in_degrees.unsqueeze(0)).float()

    class MaskedLinear(nn.Module):
        def __init__(self, in_features, out_features, mask, cond_in_features=None, bias=True):
            super(MaskedLinear, self).__init__()
            self.linear = nn.Linear(in_features, out_features)
            if cond_in_features is not None:
                self.cond_linear = nn.Linear(cond_in_features, out_features, bias=False)
            self.register_buffer('mask', mask)

        def forward(self, inputs, cond_inputs=None):
            output = F.linear(inputs, self.linear.weight * self.mask, self.linear.bias)
            if cond_inputs is not None:
                output += self.cond_linear(cond_inputs)
            return output

    class MADE(nn.Module):
        """ An implementation of MADE
        (https://arxiv.org/abs/1502.03509).
        """

        def __init__(self, num_inputs, num_hidden, num_cond_inputs=None, act='relu', pre_exp_tanh=False):
            super(MADE, self).__init__()
            activations = {'relu': nn.ReLU, 'sigmoid': nn.Sigmoid, 'tanh': nn.Tanh}
            act_func = activations[act]
            input_mask = get_mask(num_inputs, num_hidden, num_inputs, mask_type='input')
            hidden_mask = get_mask(num_hidden, num_hidden, num_inputs)
            output_mask = get_mask(num_hidden, num_inputs * 2, num_inputs, mask_type='output')
            self.joiner = MaskedLinear(num_inputs, num_hidden, input_mask, num_cond_inputs)
            self.trunk = nn.Sequential(act_func(), MaskedLinear(num_hidden, num_hidden, hidden_mask), act_func(),
                                       MaskedLinear(num_hidden, num_inputs * 2, output_mask))

        def forward(self, inputs, cond_inputs=None, mode='direct'):
            if mode == 'direct':
                h = self.joiner(inputs, cond_inputs)
                m, a = self.trunk(h).chunk(2, 1)
                u = (inputs - m) * torch.exp(-a)
                return u, -a.sum(-1, keepdim=True)
            else:
                x = torch.zeros_like(inputs)
                for i_col in range(inputs.shape[1]):
                    h = self.joiner(x, cond_inputs)
                    m, a = self.trunk(h).chunk(2, 1)
                    x[:, i_col] = inputs[:, i_col] * torch.exp(a[:, i_col]) + m[:, i_col]
                return x, -a.sum(-1, keepdim=True)

    class BatchNormFlow(nn.Module):
        """ An implementation of a batch normalization layer from
        Density estimation using Real NVP
        (https://arxiv.org/abs/1605.08803).
        """

        def __init__(self, num_inputs, momentum=0.0, eps=1e-5):
            super(BatchNormFlow, self).__init__()
            self.log_gamma = nn.Parameter(torch.zeros(num_inputs))
            self.beta = nn.Parameter(torch.zeros(num_inputs))
            self.momentum = momentum
            self.eps = eps
            self.register_buffer('running_mean', torch.zeros(num_inputs))
            self.register_buffer('running_var', torch.ones(num_inputs))

        def forward(self, inputs, cond_inputs=None, mode='direct'):
            if mode == 'direct':
                if self.training:
                    self.batch_mean = inputs.mean(0)
                    self.batch_var = (inputs - self.batch_mean).pow(2).mean(0) + self.eps
                    self.running_mean.mul_(self.momentum)
                    self.running_var.mul_(self.momentum)
                    self.running_mean.add_(self.batch_mean.data * (1 - self.momentum))
                    self.running_var.add_(self.batch_var.data * (1 - self.momentum))
                    mean = self.batch_mean
                    var = self.batch_var
                else:
                    mean = self.running_mean
                    var = self.running_var
                x_hat = (inputs - mean) / var.sqrt()
                y = torch.exp(self.log_gamma) * x_hat + self.beta
                return y, (self.log_gamma - 0.5 * torch.log(var)).sum(-1, keepdim=True)
            else:
                if self.training:
                    mean = self.batch_mean
                    var = self.batch_var
                else:
                    mean = self.running_mean
                    var = self.running_var
                x_hat = (inputs - self.beta) / torch.exp(self.log_gamma)
                y = x_hat * var.sqrt() + mean
                return y, (-self.log_gamma + 0.5 * torch.log(var)).sum(-1, keepdim=True)

    class Reverse(nn.Module):
        """ An implementation of a reversing layer from
        Density estimation using Real NVP
        (https://arxiv.org/abs/1605.08803).
        """

        def __init__(self, num_inputs):
            super(Reverse, self).__init__()
            self.perm = np.array(np.arange(0, num_inputs)[::-1])
            self.inv_perm = np.argsort(self.perm)

        def forward(self, inputs, cond_inputs=None, mode='direct'):
            if mode == 'direct':
                return inputs[:, self.perm], torch.zeros(inputs.size(0), 1, device=inputs.device)
            else:
                return inputs[:, self.inv_perm], torch.zeros(inputs.size(0), 1, device=inputs.device)

    class LUInvertibleMM(nn.Module):
        """ An implementation of a invertible matrix multiplication
        layer from Glow: Generative Flow with Invertible 1x1 Convolutions
        (https://arxiv.org/abs/1807.03039).
        """

        def __init__(self, num_inputs):
            super(LUInvertibleMM, self).__init__()
            self.W = torch.Tensor(num_inputs, num_inputs)
            nn.init.orthogonal_(self.W)
            self.L_mask = torch.tril(torch.ones(self.W.size()), -1)
            self.U_mask = self.L_mask.t().clone()

            P, L, U = torch.linalg.lu(self.W)
            self.P = P
            self.L = nn.Parameter(L)
            self.U = nn.Parameter(U)

            S = np.diag(U.numpy())
            sign_S = np.sign(S)
            log_S = np.log(abs(S))
            self.sign_S = torch.from_numpy(sign_S)
            self.log_S = nn.Parameter(torch.from_numpy(log_S))

            self.I = torch.eye(self.L.size(0))

        def forward(self, inputs, cond_inputs=None, mode='direct'):
            L = self.L * self.L_mask + self.I
            U = self.U * self.U_mask + torch.diag(self.sign_S * torch.exp(self.log_S))
            W = self.P @ L @ U

            if mode == 'direct':
                return inputs @ W, self.log_S.sum().unsqueeze(0).unsqueeze(0).repeat(inputs.size(0), 1)
            else:
                return inputs @ torch.inverse(W), -self.log_S.sum().unsqueeze(0).unsqueeze(0).repeat(
                    inputs.size(0), 1)

    class CouplingLayer(nn.Module):
        """ An implementation of a coupling layer
        from RealNVP (https://arxiv.org/abs/1605.08803).
        """

        def __init__(self, num_inputs, num_hidden, mask, num_cond_inputs=None, s_act='tanh', t_act='relu'):
            super(CouplingLayer, self).__init__()
            self.num_inputs = num_inputs
            self.mask = mask
            activations = {'relu': nn.ReLU, 'sigmoid': nn.Sigmoid, 'tanh': nn.Tanh}
            s_act_func = activations[s_act]
            t_act_func = activations[t_act]
            if num_cond_inputs is not None:
                total_inputs = num_inputs + num_cond_inputs
            else:
                total_inputs = num_inputs
            self.scale_net = nn.Sequential(nn.Linear(total_inputs, num_hidden), s_act_func(),
                                           nn.Linear(num_hidden, num_hidden), s_act_func(),
                                           nn.Linear(num_hidden, num_inputs))
            self.translate_net = nn.Sequential(nn.Linear(total_inputs, num_hidden), t_act_func(),
                                               nn.Linear(num_hidden, num_hidden), t_act_func(),
                                               nn.Linear(num_hidden, num_inputs))

            def init(m):
                if isinstance(m, nn.Linear):
                    m.bias.data.fill_(0)
                    nn.init.orthogonal_(m.weight.data)

        def forward(self, inputs, cond_inputs=None, mode='direct'):
            mask = self.mask
            masked_inputs = inputs * mask
            if cond_inputs is not None:
                masked_inputs = torch.cat([masked_inputs, cond_inputs], -1)
            if mode == 'direct':
                log_s = self.scale_net(masked_inputs) * (1 - mask)
                t = self.translate_net(masked_inputs) * (1 - mask)
                s = torch.exp(log_s)
                return inputs * s + t, log_s.sum(-1, keepdim=True)
            else:
                log_s = self.scale_net(masked_inputs) * (1 - mask)
                t = self.translate_net(masked_inputs) * (1 - mask)
                s = torch.exp(-log_s)
                return (inputs - t) * s, -log_s.sum(-1, keepdim=True)

    class FlowSequential(nn.Sequential):
        """ A sequential container for flows.
        In addition to a forward pass it implements a backward pass and
        computes log jacobians.
        """

        def forward(self, inputs, cond_inputs=None, mode='direct', logdets=None):
            """ Performs a forward or backward pass for flow modules.
            Args:
                inputs: a tuple of inputs and logdets
                mode: to run direct computation or inverse
            """
            self.num_inputs = inputs.size(-1)
            if logdets is None:
                logdets = torch.zeros(inputs.size(0), 1, device=inputs.device)
            assert mode in ['direct', 'inverse']
            if mode == 'direct':
                for module in self._modules.values():
                    inputs, logdet = module(inputs, cond_inputs, mode)
                    logdets += logdet
            else:
                for module in reversed(self._modules.values()):
                    inputs, logdet = module(inputs, cond_inputs, mode)
                    logdets += logdet
            return inputs, logdets

        def log_probs(self, inputs, cond_inputs=None):
            u, log_jacob = self(inputs, cond_inputs)
            log_probs = (-0.5 * u.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
            return (log_probs + log_jacob).sum(-1, keepdim=True)

        def sample(self, num_samples=None, noise=None, cond_inputs=None):
            if noise is None:
                noise = torch.Tensor(num_samples, self.num_inputs).normal_()
            device = next(self.parameters()).device
            noise = noise.to(device)
            if cond_inputs is not None:
                cond_inputs = cond_inputs.to(device)
            samples = self.forward(noise, cond_inputs, mode='inverse')[0]
            return samples

    modules = []
    for _ in range(num_blocks):
        modules += [MADE(num_inputs, num_hidden, num_cond_inputs, act='tanh'), BatchNormFlow(num_inputs),
                    Reverse(num_inputs)]
    mask = torch.arange(0, num_inputs) % 2
    mask = mask.float()
    modules += [LUInvertibleMM(num_inputs),
                CouplingLayer(num_inputs, num_hidden, mask, num_cond_inputs, s_act='tanh', t_act='relu')]
    model = FlowSequential(*modules)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.orthogonal_(module.weight)
            if hasattr(module, 'bias') and module.bias is not None:
                module.bias.data.fill_(0)
    return model, BatchNormFlow


def maf(m, steps=4):
    torch = m.torch
    torch.manual_seed(0)  # the orthogonal inits, the LU layer's P and sign_S: both libraries draw the same
    model, BatchNormFlow = make_maf(m)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    x[:, 1] += x[:, 0] ** 2
    x[:, 3] = np.sin(x[:, 2]) + 0.1 * x[:, 3]
    y = rng.standard_normal((32, 2)).astype(np.float32)
    train_loader = m.data.DataLoader(m.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                     batch_size=8, shuffle=False)
    # (pytorch-flows trains with Adam; here SGD: MADE's output biases feed a BatchNormFlow, which cancels them
    # (the shift goes with the batch mean, the log-scale's -a.sum with 0.5*log(var)), so their gradient is
    # float32 rounding alone, and Adam would scale that noise up to steps of lr in either direction)
    optimizer = m.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=1e-6)
    history = []
    model.train()
    for batch_idx, (data, cond_data) in enumerate(train_loader):
        if batch_idx == steps:
            break
        optimizer.zero_grad()
        loss = -model.log_probs(data, cond_data).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    grads = {n: p.grad for n, p in model.named_parameters()}

    for module in model.modules():
        if isinstance(module, BatchNormFlow):
            module.momentum = 0
    with torch.no_grad():
        model(train_loader.dataset.tensors[0], train_loader.dataset.tensors[1])
    for module in model.modules():
        if isinstance(module, BatchNormFlow):
            module.momentum = 1

    model.eval()
    with torch.no_grad():
        test_log_probs = model.log_probs(torch.from_numpy(x[:8]), torch.from_numpy(y[:8]))
        u, logdet = model(torch.from_numpy(x[:8]), torch.from_numpy(y[:8]))
        back = model.sample(noise=u, cond_inputs=torch.from_numpy(y[:8]))
        torch.manual_seed(5)
        samples = model.sample(num_samples=6, cond_inputs=torch.from_numpy(y[:6]))
    null = torch.stack([p.grad for n, p in model.named_parameters() if n.endswith("trunk.3.linear.bias")])
    return {"history": history, "grads": grads, "state": model.state_dict(), "test": test_log_probs,
            "u": u, "logdet": logdet, "back": back, "x": x[:8], "samples": samples, "null": null}


def test_maf_made_batchnorm_flow_lu_and_coupling():
    ours, _ = run_both(maf, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["back"], ours["x"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours["null"][:, [0, 4, 5, 6, 7]], 0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# ritheshkumar95/pytorch-vqvae: a VQ-VAE whose quantiser is a pair of autograd.Functions (distances by addmm
# with alpha/beta, mark_non_differentiable indices, a straight-through backward that index_add_s the codebook's
# gradient), then a class-conditional gated PixelCNN prior over its codes (vertical/horizontal stacks made
# causal by zeroing weight.data inside forward, inplace ReLUs), trained by cross_entropy and sampled code by
# code by multinomial
# ----------------------------------------------------------------------------------------------


def vqvae_functions(m):
    torch = m.torch
    Function = m.torch.autograd.Function

    class VectorQuantization(Function):
        @staticmethod
        def forward(ctx, inputs, codebook):
            with torch.no_grad():
                embedding_size = codebook.size(1)
                inputs_size = inputs.size()
                inputs_flatten = inputs.view(-1, embedding_size)

                codebook_sqr = torch.sum(codebook ** 2, dim=1)
                inputs_sqr = torch.sum(inputs_flatten ** 2, dim=1, keepdim=True)

                # Compute the distances to the codebook
                distances = torch.addmm(codebook_sqr + inputs_sqr,
                                        inputs_flatten, codebook.t(), alpha=-2.0, beta=1.0)

                _, indices_flatten = torch.min(distances, dim=1)
                indices = indices_flatten.view(*inputs_size[:-1])
                ctx.mark_non_differentiable(indices)

                return indices

        @staticmethod
        def backward(ctx, grad_output):
            raise RuntimeError('Trying to call `.grad()` on graph containing '
                               '`VectorQuantization`. The function `VectorQuantization` '
                               'is not differentiable. Use `VectorQuantizationStraightThrough` '
                               'if you want a straight-through estimator of the gradient.')

    class VectorQuantizationStraightThrough(Function):
        @staticmethod
        def forward(ctx, inputs, codebook):
            indices = vq(inputs, codebook)
            indices_flatten = indices.view(-1)
            ctx.save_for_backward(indices_flatten, codebook)
            ctx.mark_non_differentiable(indices_flatten)

            codes_flatten = torch.index_select(codebook, dim=0,
                                               index=indices_flatten)
            codes = codes_flatten.view_as(inputs)

            return (codes, indices_flatten)

        @staticmethod
        def backward(ctx, grad_output, grad_indices):
            grad_inputs, grad_codebook = None, None

            if ctx.needs_input_grad[0]:
                # Straight-through estimator
                grad_inputs = grad_output.clone()
            if ctx.needs_input_grad[1]:
                # Gradient wrt. the codebook
                indices, codebook = ctx.saved_tensors
                embedding_size = codebook.size(1)

                grad_output_flatten = (grad_output.contiguous()
                                       .view(-1, embedding_size))
                grad_codebook = torch.zeros_like(codebook)
                grad_codebook.index_add_(0, indices, grad_output_flatten)

            return (grad_inputs, grad_codebook)

    vq = VectorQuantization.apply
    vq_st = VectorQuantizationStraightThrough.apply
    return vq, vq_st


def make_vqvae_and_prior(m, K=6, dim=4, n_classes=3):
    torch, nn, F = m.torch, m.nn, m.F
    vq, vq_st = vqvae_functions(m)

    def weights_init(m):
        classname = m.__class__.__name__
        if classname.find('Conv') != -1:
            try:
                nn.init.xavier_uniform_(m.weight.data)
                m.bias.data.fill_(0)
            except AttributeError:
                print("Skipping initialization of ", classname)

    class VQEmbedding(nn.Module):
        def __init__(self, K, D):
            super().__init__()
            self.embedding = nn.Embedding(K, D)
            self.embedding.weight.data.uniform_(-1. / K, 1. / K)

        def forward(self, z_e_x):
            z_e_x_ = z_e_x.permute(0, 2, 3, 1).contiguous()
            latents = vq(z_e_x_, self.embedding.weight)
            return latents

        def straight_through(self, z_e_x):
            z_e_x_ = z_e_x.permute(0, 2, 3, 1).contiguous()
            z_q_x_, indices = vq_st(z_e_x_, self.embedding.weight.detach())
            z_q_x = z_q_x_.permute(0, 3, 1, 2).contiguous()

            z_q_x_bar_flatten = torch.index_select(self.embedding.weight,
                                                   dim=0, index=indices)
            z_q_x_bar_ = z_q_x_bar_flatten.view_as(z_e_x_)
            z_q_x_bar = z_q_x_bar_.permute(0, 3, 1, 2).contiguous()

            return z_q_x, z_q_x_bar

    class ResBlock(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.block = nn.Sequential(
                nn.ReLU(True),
                nn.Conv2d(dim, dim, 3, 1, 1, bias=False),
                nn.BatchNorm2d(dim),
                nn.ReLU(True),
                nn.Conv2d(dim, dim, 1, bias=False),
                nn.BatchNorm2d(dim)
            )

        def forward(self, x):
            return x + self.block(x)

    class VectorQuantizedVAE(nn.Module):
        """(The convolutions before a BatchNorm have no bias here: BatchNorm cancels a bias, so its gradient is
        float32 rounding alone, and Adam would scale that noise up to steps of lr in either direction.)"""

        def __init__(self, input_dim, dim, K=512):
            super().__init__()
            self.encoder = nn.Sequential(
                nn.Conv2d(input_dim, dim, 4, 2, 1, bias=False),
                nn.BatchNorm2d(dim),
                nn.ReLU(True),
                nn.Conv2d(dim, dim, 4, 2, 1),
                ResBlock(dim),
            )

            self.codebook = VQEmbedding(K, dim)

            self.decoder = nn.Sequential(
                ResBlock(dim),
                nn.ReLU(True),
                nn.ConvTranspose2d(dim, dim, 4, 2, 1, bias=False),
                nn.BatchNorm2d(dim),
                nn.ReLU(True),
                nn.ConvTranspose2d(dim, input_dim, 4, 2, 1),
                nn.Tanh()
            )

            self.apply(weights_init)

        def encode(self, x):
            z_e_x = self.encoder(x)
            latents = self.codebook(z_e_x)
            return latents

        def decode(self, latents):
            z_q_x = self.codebook.embedding(latents).permute(0, 3, 1, 2)  # (B, D, H, W)
            x_tilde = self.decoder(z_q_x)
            return x_tilde

        def forward(self, x):
            z_e_x = self.encoder(x)
            z_q_x_st, z_q_x = self.codebook.straight_through(z_e_x)
            x_tilde = self.decoder(z_q_x_st)
            return x_tilde, z_e_x, z_q_x

    class GatedActivation(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, x):
            x, y = x.chunk(2, dim=1)
            return F.tanh(x) * F.sigmoid(y)

    class GatedMaskedConv2d(nn.Module):
        def __init__(self, mask_type, dim, kernel, residual=True, n_classes=10):
            super().__init__()
            assert kernel % 2 == 1, print("Kernel size must be odd")
            self.mask_type = mask_type
            self.residual = residual

            self.class_cond_embedding = nn.Embedding(
                n_classes, 2 * dim
            )

            kernel_shp = (kernel // 2 + 1, kernel)  # (ceil(n/2), n)
            padding_shp = (kernel // 2, kernel // 2)
            self.vert_stack = nn.Conv2d(
                dim, dim * 2,
                kernel_shp, 1, padding_shp
            )

            self.vert_to_horiz = nn.Conv2d(2 * dim, 2 * dim, 1)

            kernel_shp = (1, kernel // 2 + 1)
            padding_shp = (0, kernel // 2)
            self.horiz_stack = nn.Conv2d(
                dim, dim * 2,
                kernel_shp, 1, padding_shp
            )

            self.horiz_resid = nn.Conv2d(dim, dim, 1)

            self.gate = GatedActivation()

        def make_causal(self):
            self.vert_stack.weight.data[:, :, -1].zero_()  # Mask final row
            self.horiz_stack.weight.data[:, :, :, -1].zero_()  # Mask final column

        def forward(self, x_v, x_h, h):
            if self.mask_type == 'A':
                self.make_causal()

            h = self.class_cond_embedding(h)
            h_vert = self.vert_stack(x_v)
            h_vert = h_vert[:, :, :x_v.size(-1), :]
            out_v = self.gate(h_vert + h[:, :, None, None])

            h_horiz = self.horiz_stack(x_h)
            h_horiz = h_horiz[:, :, :, :x_h.size(-2)]
            v2h = self.vert_to_horiz(h_vert)

            out = self.gate(v2h + h_horiz + h[:, :, None, None])
            if self.residual:
                out_h = self.horiz_resid(out) + x_h
            else:
                out_h = self.horiz_resid(out)

            return out_v, out_h

    class GatedPixelCNN(nn.Module):
        def __init__(self, input_dim=256, dim=64, n_layers=15, n_classes=10):
            super().__init__()
            self.dim = dim

            # Create embedding layer to embed input
            self.embedding = nn.Embedding(input_dim, dim)

            # Building the PixelCNN layer by layer
            self.layers = nn.ModuleList()

            # Initial block with Mask-A convolution
            # Rest with Mask-B convolutions
            for i in range(n_layers):
                mask_type = 'A' if i == 0 else 'B'
                kernel = 7 if i == 0 else 3
                residual = False if i == 0 else True

                self.layers.append(
                    GatedMaskedConv2d(mask_type, dim, kernel, residual, n_classes)
                )

            # Add the output layer
            self.output_conv = nn.Sequential(
                nn.Conv2d(dim, 16, 1),
                nn.ReLU(True),
                nn.Conv2d(16, input_dim, 1)
            )

            self.apply(weights_init)

        def forward(self, x, label):
            shp = x.size() + (-1, )
            x = self.embedding(x.view(-1)).view(shp)  # (B, H, W, C)
            x = x.permute(0, 3, 1, 2)  # (B, C, W, W)

            x_v, x_h = (x, x)
            for i, layer in enumerate(self.layers):
                x_v, x_h = layer(x_v, x_h, label)

            return self.output_conv(x_h)

        def generate(self, label, shape=(8, 8), batch_size=64):
            param = next(self.parameters())
            x = torch.zeros(
                (batch_size, *shape),
                dtype=torch.int64, device=param.device
            )

            for i in range(shape[0]):
                for j in range(shape[1]):
                    logits = self.forward(x, label)
                    probs = F.softmax(logits[:, :, i, j], -1)
                    x.data[:, i, j].copy_(
                        probs.multinomial(1).squeeze().data
                    )
            return x

    model = VectorQuantizedVAE(1, dim, K)
    prior = GatedPixelCNN(K, 6, n_layers=3, n_classes=n_classes)
    return nn.ModuleDict({"vqvae": model, "prior": prior})


def vqvae_and_prior(m, weights, steps=3, beta=1.0):
    torch, F = m.torch, m.F
    both = load(m, make_vqvae_and_prior(m), weights)
    model, prior = both["vqvae"], both["prior"]
    rng = np.random.default_rng(11)
    images = np.tanh(rng.standard_normal((3, 4, 1, 8, 8))).astype(np.float32)
    labels_all = rng.integers(0, 3, (3, 4))
    optimizer = m.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    model.train()
    for step in range(steps):
        images_b = torch.from_numpy(images[step])
        optimizer.zero_grad()
        x_tilde, z_e_x, z_q_x = model(images_b)
        # Reconstruction loss
        loss_recons = F.mse_loss(x_tilde, images_b)
        # Vector quantization objective
        loss_vq = F.mse_loss(z_q_x, z_e_x.detach())
        # Commitment objective
        loss_commit = F.mse_loss(z_e_x, z_q_x.detach())

        loss = loss_recons + loss_vq + beta * loss_commit
        loss.backward()
        optimizer.step()
        history.append([loss_recons.item(), loss_vq.item(), loss_commit.item()])
    vq_grads = {n: p.grad for n, p in model.named_parameters()}

    # the prior over the (frozen) VQ-VAE's codes
    model.eval()
    prior_optimizer = m.optim.Adam(prior.parameters(), lr=3e-3)
    prior_history = []
    for step in range(steps):
        with torch.no_grad():
            latents = model.encode(torch.from_numpy(images[step]))
            latents = latents.detach()
        labels = torch.from_numpy(labels_all[step])
        logits = prior(latents, labels)
        logits = logits.permute(0, 2, 3, 1).contiguous()
        prior_optimizer.zero_grad()
        loss = F.cross_entropy(logits.view(-1, 6), latents.view(-1))
        loss.backward()
        prior_optimizer.step()
        prior_history.append(loss.item())
    prior_grads = {n: p.grad for n, p in prior.named_parameters()}
    prior.eval()
    torch.manual_seed(8)
    with torch.no_grad():
        label = torch.arange(3).expand(2, 3).contiguous().view(-1)
        sample = prior.generate(label, shape=(2, 2), batch_size=6)
        x_tilde = model.decode(sample)
    return {"history": history, "vq_grads": vq_grads, "prior_history": prior_history, "latents": latents,
            "prior_grads": prior_grads, "state": both.state_dict(), "sample": sample, "x_tilde": x_tilde}


def test_vqvae_functions_and_gated_pixelcnn_prior():
    weights = weights_of(make_vqvae_and_prior)
    ours, _ = run_both(vqvae_and_prior, weights, rtol=2e-4, atol=2e-5)
    # make_causal zeroed the type-A layer's last row and column in place
    np.testing.assert_array_equal(ours["state"]["prior.layers.0.vert_stack.weight"][:, :, -1], 0)
    assert ours["sample"].dtype == np.int64 and ours["sample"].max() < 6


# ----------------------------------------------------------------------------------------------
# Disentangling VAEs as YannDubs/disentangling-vae writes them: beta-TCVAE's minibatch-stratified estimator
# (a log importance-weight matrix written through strided views of W.view(-1), logsumexp over a (B, B, D)
# density matrix), linear annealing; FactorVAE's discriminator on latents permuted per dimension by randperm,
# two backward passes over one graph (retain_graph) before either optimiser steps
# ----------------------------------------------------------------------------------------------


def make_disentangling_vae(m, latent_dim=3):
    torch, nn, F = m.torch, m.nn, m.F

    class EncoderBurgess(nn.Module):
        def __init__(self, img_size, latent_dim=10):
            super(EncoderBurgess, self).__init__()
            hid_channels = 4
            kernel_size = 4
            hidden_dim = 16
            self.latent_dim = latent_dim
            self.img_size = img_size
            self.reshape = (hid_channels, kernel_size // 2, kernel_size // 2)
            n_chan = self.img_size[0]
            cnn_kwargs = dict(stride=2, padding=1)
            self.conv1 = nn.Conv2d(n_chan, hid_channels, kernel_size, **cnn_kwargs)
            self.conv2 = nn.Conv2d(hid_channels, hid_channels, kernel_size, **cnn_kwargs)
            self.lin1 = nn.Linear(np.prod(self.reshape), hidden_dim)
            self.mu_logvar_gen = nn.Linear(hidden_dim, self.latent_dim * 2)

        def forward(self, x):
            batch_size = x.size(0)
            x = torch.relu(self.conv1(x))
            x = torch.relu(self.conv2(x))
            x = x.view((batch_size, -1))
            x = torch.relu(self.lin1(x))
            mu_logvar = self.mu_logvar_gen(x)
            mu, logvar = mu_logvar.view(-1, self.latent_dim, 2).unbind(-1)
            return mu, logvar

    class DecoderBurgess(nn.Module):
        def __init__(self, img_size, latent_dim=10):
            super(DecoderBurgess, self).__init__()
            hid_channels = 4
            kernel_size = 4
            hidden_dim = 16
            self.img_size = img_size
            self.reshape = (hid_channels, kernel_size // 2, kernel_size // 2)
            n_chan = self.img_size[0]
            self.lin1 = nn.Linear(latent_dim, hidden_dim)
            self.lin2 = nn.Linear(hidden_dim, np.prod(self.reshape))
            cnn_kwargs = dict(stride=2, padding=1)
            self.convT1 = nn.ConvTranspose2d(hid_channels, hid_channels, kernel_size, **cnn_kwargs)
            self.convT2 = nn.ConvTranspose2d(hid_channels, n_chan, kernel_size, **cnn_kwargs)

        def forward(self, z):
            batch_size = z.size(0)
            x = torch.relu(self.lin1(z))
            x = torch.relu(self.lin2(x))
            x = x.view(batch_size, *self.reshape)
            x = torch.relu(self.convT1(x))
            x = torch.sigmoid(self.convT2(x))
            return x

    class VAE(nn.Module):
        def __init__(self, img_size, encoder, decoder, latent_dim):
            super(VAE, self).__init__()
            self.latent_dim = latent_dim
            self.img_size = img_size
            self.num_pixels = self.img_size[1] * self.img_size[2]
            self.encoder = encoder(img_size, self.latent_dim)
            self.decoder = decoder(img_size, self.latent_dim)

        def reparameterize(self, mean, logvar):
            if self.training:
                std = torch.exp(0.5 * logvar)
                eps = torch.randn_like(std)
                return mean + std * eps
            else:
                # Reconstruction mode
                return mean

        def forward(self, x):
            latent_dist = self.encoder(x)
            latent_sample = self.reparameterize(*latent_dist)
            reconstruct = self.decoder(latent_sample)
            return reconstruct, latent_dist, latent_sample

        def sample_latent(self, x):
            latent_dist = self.encoder(x)
            latent_sample = self.reparameterize(*latent_dist)
            return latent_sample

    class Discriminator(nn.Module):
        def __init__(self, neg_slope=0.2, latent_dim=10, hidden_units=16):
            super(Discriminator, self).__init__()
            self.neg_slope = neg_slope
            self.leaky_relu = nn.LeakyReLU(self.neg_slope, True)
            self.z_dim = latent_dim
            self.hidden_units = hidden_units
            out_units = 2
            self.lin1 = nn.Linear(self.z_dim, hidden_units)
            self.lin2 = nn.Linear(hidden_units, hidden_units)
            self.lin3 = nn.Linear(hidden_units, out_units)

        def forward(self, z):
            z = self.leaky_relu(self.lin1(z))
            z = self.leaky_relu(self.lin2(z))
            z = self.lin3(z)
            return z

    return nn.ModuleDict({"vae": VAE((1, 8, 8), EncoderBurgess, DecoderBurgess, latent_dim),
                          "discriminator": Discriminator(latent_dim=latent_dim)})


def disentangling_losses(m):
    torch, F = m.torch, m.F

    def linear_annealing(init, fin, step, annealing_steps):
        """Linear annealing of a parameter."""
        if annealing_steps == 0:
            return fin
        assert fin > init
        delta = fin - init
        annealed = min(init + delta * step / annealing_steps, fin)
        return annealed

    def _reconstruction_loss(data, recon_data, distribution="bernoulli"):
        batch_size, n_chan, height, width = recon_data.size()
        if distribution == "bernoulli":
            loss = F.binary_cross_entropy(recon_data, data, reduction="sum")
        elif distribution == "gaussian":
            # loss in [0,255] space but normalized by 255 to not be too big
            loss = F.mse_loss(recon_data * 255, data * 255, reduction="sum") / 255
        elif distribution == "laplace":
            loss = F.l1_loss(recon_data, data, reduction="sum")
            loss = loss * 3  # emperical value to give similar values than bernoulli => use same hyperparam
            loss = loss * (loss != 0)  # masking to avoid nan
        loss = loss / batch_size
        return loss

    def _kl_normal_loss(mean, logvar):
        latent_kl = 0.5 * (-1 - logvar + mean.pow(2) + logvar.exp()).mean(dim=0)
        total_kl = latent_kl.sum()
        return total_kl

    def _permute_dims(latent_sample):
        perm = torch.zeros_like(latent_sample)
        batch_size, dim_z = perm.size()
        for z in range(dim_z):
            pi = torch.randperm(batch_size).to(latent_sample.device)
            perm[:, z] = latent_sample[pi, z]
        return perm

    def log_density_gaussian(x, mu, logvar):
        normalization = - 0.5 * (math.log(2 * math.pi) + logvar)
        inv_var = torch.exp(-logvar)
        log_density = normalization - 0.5 * ((x - mu)**2 * inv_var)
        return log_density

    def matrix_log_density_gaussian(x, mu, logvar):
        batch_size, dim = x.shape
        x = x.view(batch_size, 1, dim)
        mu = mu.view(1, batch_size, dim)
        logvar = logvar.view(1, batch_size, dim)
        return log_density_gaussian(x, mu, logvar)

    def log_importance_weight_matrix(batch_size, dataset_size):
        N = dataset_size
        M = batch_size - 1
        strat_weight = (N - M) / (N * M)
        W = torch.Tensor(batch_size, batch_size).fill_(1 / M)
        W.view(-1)[::M + 1] = 1 / N
        W.view(-1)[1::M + 1] = strat_weight
        W[M - 1, 0] = strat_weight
        return W.log()

    def _get_log_pz_qz_prodzi_qzCx(latent_sample, latent_dist, n_data, is_mss=True):
        batch_size, hidden_dim = latent_sample.shape
        # calculate log q(z|x)
        log_q_zCx = log_density_gaussian(latent_sample, *latent_dist).sum(dim=1)
        # calculate log p(z)
        # mean and log var is 0
        zeros = torch.zeros_like(latent_sample)
        log_pz = log_density_gaussian(latent_sample, zeros, zeros).sum(1)
        mat_log_qz = matrix_log_density_gaussian(latent_sample, *latent_dist)
        if is_mss:
            # use stratification
            log_iw_mat = log_importance_weight_matrix(batch_size, n_data).to(latent_sample.device)
            mat_log_qz = mat_log_qz + log_iw_mat.view(batch_size, batch_size, 1)
        log_qz = torch.logsumexp(mat_log_qz.sum(2), dim=1, keepdim=False)
        log_prod_qzi = torch.logsumexp(mat_log_qz, dim=1, keepdim=False).sum(1)
        return log_pz, log_qz, log_prod_qzi, log_q_zCx

    return (linear_annealing, _reconstruction_loss, _kl_normal_loss, _permute_dims,
            _get_log_pz_qz_prodzi_qzCx, log_importance_weight_matrix)


def disentangling_vae(m, weights, steps=3, rec_dist="bernoulli", is_mss=True):
    torch, F = m.torch, m.F
    (linear_annealing, _reconstruction_loss, _kl_normal_loss, _permute_dims, _get_log_pz_qz_prodzi_qzCx,
     log_importance_weight_matrix) = disentangling_losses(m)
    both = load(m, make_disentangling_vae(m), weights)
    model, discriminator = both["vae"], both["discriminator"]
    rng = np.random.default_rng(4)
    images = (rng.random((3, 8, 1, 8, 8)) > 0.5).astype(np.float32)
    n_data, steps_anneal = 64, 2
    alpha, beta, gamma = 1., 6., 1.

    # beta-TCVAE
    optimizer = m.optim.Adam(model.parameters(), lr=5e-3)
    torch.manual_seed(1)
    model.train()
    tc_history = []
    for n_train_steps in range(steps):
        data = torch.from_numpy(images[n_train_steps])
        recon_batch, latent_dist, latent_sample = model(data)
        batch_size, latent_dim = latent_sample.shape
        rec_loss = _reconstruction_loss(data, recon_batch, distribution=rec_dist)
        log_pz, log_qz, log_prod_qzi, log_q_zCx = _get_log_pz_qz_prodzi_qzCx(latent_sample, latent_dist, n_data,
                                                                              is_mss=is_mss)
        # I[z;x] = KL[q(z,x)||q(x)q(z)] = E_x[KL[q(z|x)||q(z)]]
        mi_loss = (log_q_zCx - log_qz).mean()
        # TC[z] = KL[q(z)||\prod_i z_i]
        tc_loss = (log_qz - log_prod_qzi).mean()
        # dw_kl_loss is KL[q(z)||p(z)] instead of usual KL[q(z|x)||p(z))]
        dw_kl_loss = (log_prod_qzi - log_pz).mean()
        anneal_reg = (linear_annealing(0, 1, n_train_steps, steps_anneal) if model.training else 1)
        # total loss
        loss = rec_loss + (alpha * mi_loss + beta * tc_loss + anneal_reg * gamma * dw_kl_loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tc_history.append([loss.item(), mi_loss.item(), tc_loss.item(), dw_kl_loss.item(), anneal_reg])
    tc_grads = {n: p.grad for n, p in model.named_parameters()}

    # FactorVAE
    optimizer = m.optim.Adam(model.parameters(), lr=5e-3)
    optimizer_d = m.optim.Adam(discriminator.parameters(), lr=5e-4, betas=(0.5, 0.9))
    factor_history = []
    for n_train_steps in range(steps):
        data = torch.from_numpy(images[n_train_steps])
        # factor-vae split data into two batches. In the paper they sample 2 batches
        batch_size = data.size(dim=0)
        half_batch_size = batch_size // 2
        data = data.split(half_batch_size)
        data1 = data[0]
        data2 = data[1]

        # Factor VAE Loss
        recon_batch, latent_dist, latent_sample1 = model(data1)
        rec_loss = _reconstruction_loss(data1, recon_batch, distribution=rec_dist)
        kl_loss = _kl_normal_loss(*latent_dist)
        d_z = discriminator(latent_sample1)
        # We want log(p_true/p_false). If not using logisitc regression but softmax
        # then p_true = exp(logit_true) / Z; p_false = exp(logit_false) / Z
        # so log(p_true/p_false) = logit_true - logit_false
        tc_loss = (d_z[:, 0] - d_z[:, 1]).mean()
        anneal_reg = (linear_annealing(0, 1, n_train_steps, steps_anneal) if model.training else 1)
        vae_loss = rec_loss + kl_loss + anneal_reg * gamma * tc_loss

        # Compute VAE gradients
        optimizer.zero_grad()
        vae_loss.backward(retain_graph=True)

        # Discriminator Loss
        # Get second sample of latent distribution
        latent_sample2 = model.sample_latent(data2)
        z_perm = _permute_dims(latent_sample2).detach()
        d_z_perm = discriminator(z_perm)

        # Calculate total correlation loss
        # for cross entropy the target is the index => need to be long and says
        # that it's first output for d_z and second for perm
        ones = torch.ones(half_batch_size, dtype=torch.long, device=data1.device)
        zeros = torch.zeros_like(ones)
        d_tc_loss = 0.5 * (F.cross_entropy(d_z, zeros) + F.cross_entropy(d_z_perm, ones))

        # Compute discriminator gradients
        optimizer_d.zero_grad()
        d_tc_loss.backward()

        # Update at the end (since pytorch 1.5. complains if update before)
        optimizer.step()
        optimizer_d.step()
        factor_history.append([vae_loss.item(), d_tc_loss.item()])
    factor_grads = {n: p.grad for n, p in both.named_parameters()}
    model.eval()
    with torch.no_grad():
        recon, (mu, logvar), sample = model(torch.from_numpy(images[0]))
    return {"tc_history": tc_history, "tc_grads": tc_grads, "factor_history": factor_history,
            "factor_grads": factor_grads, "state": both.state_dict(), "recon": recon, "mu": mu,
            "log_w": log_importance_weight_matrix(5, 10)}


@pytest.mark.parametrize("rec_dist", ["bernoulli", "laplace"])
def test_beta_tcvae_and_factor_vae(rec_dist):
    weights = weights_of(make_disentangling_vae)
    ours, _ = run_both(disentangling_vae, weights, rec_dist=rec_dist, rtol=2e-4, atol=2e-5)
    # the repository's matrix as written: a stride of M + 1 = batch_size through W.view(-1) walks down the
    # first column (and the second), not the diagonal the paper's stratification means
    N, M = 10, 4
    expected = np.full((5, 5), 1 / M)
    expected.reshape(-1)[::M + 1] = 1 / N
    expected.reshape(-1)[1::M + 1] = (N - M) / (N * M)
    expected[M - 1, 0] = (N - M) / (N * M)
    assert (expected[:, 0] == 1 / N).sum() == 4
    np.testing.assert_allclose(ours["log_w"], np.log(expected), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# A VAE whose likelihood is a distribution of its own: a discretised logistic written as a
# torch.distributions.Distribution subclass (arg_constraints, support, validation, an expand by
# _get_checked_instance), wrapped in Independent, expanded over importance samples, with a KL registered for it
# ----------------------------------------------------------------------------------------------


def make_custom_likelihood_vae(m, z_dim=3):
    nn = m.nn

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Flatten(), nn.Linear(2 * 16, 24), nn.Softplus(), nn.Linear(24, 2 * z_dim))
            self.dec = nn.Sequential(nn.Linear(z_dim, 24), nn.Softplus(), nn.Linear(24, 2 * 2 * 16),
                                     nn.Unflatten(-1, (4, 4, 4)))

    return VAE()


def custom_likelihood_vae(m, weights, steps=4, k=3):
    torch, F = m.torch, m.F
    D = torch.distributions

    class DiscretizedLogistic(D.Distribution):
        """A logistic on [-1, 1] binned to 256 values, the edge bins taking the tails."""
        arg_constraints = {"loc": D.constraints.real, "log_scale": D.constraints.real}
        support = D.constraints.interval(-1.0, 1.0)
        has_rsample = True

        def __init__(self, loc, log_scale, validate_args=None):
            self.loc, self.log_scale = D.utils.broadcast_all(loc, log_scale)
            super().__init__(self.loc.shape, validate_args=validate_args)

        def expand(self, batch_shape, _instance=None):
            new = self._get_checked_instance(DiscretizedLogistic, _instance)
            batch_shape = torch.Size(batch_shape)
            new.loc = self.loc.expand(batch_shape)
            new.log_scale = self.log_scale.expand(batch_shape)
            super(DiscretizedLogistic, new).__init__(batch_shape, validate_args=False)
            new._validate_args = self._validate_args
            return new

        @property
        def mean(self):
            return self.loc

        def log_prob(self, x):
            if self._validate_args:
                self._validate_sample(x)
            centered = x - self.loc
            inv_scale = torch.exp(-self.log_scale)
            plus, minus = inv_scale * (centered + 1 / 255.), inv_scale * (centered - 1 / 255.)
            cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
            return torch.where(x < -0.999, F.logsigmoid(plus),
                               torch.where(x > 0.999, -F.softplus(minus), torch.log(cdf_delta.clamp(min=1e-12))))

        def rsample(self, sample_shape=torch.Size()):
            shape = self._extended_shape(sample_shape)
            u = torch.rand(shape).clamp(1e-5, 1 - 1e-5)
            return (self.loc + self.log_scale.exp() * (torch.log(u) - torch.log1p(-u))).clamp(-1, 1)

    @D.kl.register_kl(DiscretizedLogistic, DiscretizedLogistic)
    def _kl_discretized(p, q):  # (a moment-matching surrogate, to check that the registry dispatches to it)
        return (p.loc - q.loc) ** 2 + (p.log_scale - q.log_scale) ** 2

    class Logistic(D.TransformedDistribution):
        """A logistic prior as torch's LogNormal is written: a TransformedDistribution subclass whose expand sets
        its own parameters, then lets TransformedDistribution.expand fill in the rest."""
        arg_constraints = {"loc": D.constraints.real, "scale": D.constraints.positive}
        has_rsample = True

        def __init__(self, loc, scale, validate_args=None):
            self.loc, self.scale = D.utils.broadcast_all(loc, scale)
            base = D.Uniform(torch.zeros_like(self.loc), torch.ones_like(self.loc))
            transforms = [D.transforms.SigmoidTransform().inv, D.transforms.AffineTransform(self.loc, self.scale)]
            super().__init__(base, transforms, validate_args=validate_args)

        def expand(self, batch_shape, _instance=None):
            new = self._get_checked_instance(Logistic, _instance)
            new.loc = self.loc.expand(batch_shape)
            new.scale = self.scale.expand(batch_shape)
            return super().expand(batch_shape, _instance=new)

        @property
        def mean(self):
            return self.loc

    class MCNormal(D.Normal):
        """A posterior whose KL to any prior is estimated from one reparameterised draw (registered below for
        (MCNormal, Distribution): PyTorch prefers it to the inherited (Normal, Normal) closed form, with a warning)."""

    @D.kl.register_kl(MCNormal, D.Distribution)
    def _kl_monte_carlo(p, q):
        z = p.rsample()
        return p.log_prob(z) - q.log_prob(z)

    model = load(m, make_custom_likelihood_vae(m), weights)
    rng = np.random.default_rng(12)
    pixels = rng.integers(0, 256, (3, 4, 2, 4, 4))
    pixels[:, :, 0, 0, 0] = 0
    pixels[:, :, 1, 3, 3] = 255
    images = (pixels / 127.5 - 1).astype(np.float32)
    optimizer = m.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(6)
    history = []
    for step in range(steps):
        x = torch.from_numpy(images[step % 3])
        mu, log_sigma = model.enc(x).chunk(2, dim=-1)
        qz = D.Independent(D.Normal(mu, log_sigma.exp()), 1)
        pz = D.Independent(D.Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
        z = qz.rsample((k,))  # (k, batch, z_dim)
        loc, log_scale = model.dec(z).chunk(2, dim=-3)
        px = D.Independent(DiscretizedLogistic(loc, log_scale.clamp(min=-7.)), 3)
        log_px = px.log_prob(x.expand(k, *x.shape))
        elbo = log_px - D.kl_divergence(qz, pz)
        if step % 2:  # every other step, a logistic prior of the prior's scale, expanded over the batch
            pz = D.Independent(Logistic(torch.zeros(mu.shape[-1]), torch.ones(mu.shape[-1]) * 0.6).expand(mu.shape), 1)
            assert pz.base_dist.mean.shape == mu.shape
        iwae = torch.logsumexp(log_px + pz.log_prob(z) - qz.log_prob(z), dim=0) - math.log(k)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            kl_mc = D.kl_divergence(MCNormal(mu, log_sigma.exp()), D.Normal(torch.zeros_like(mu), 1.)).sum(-1)
        loss = -iwae.mean() / (2 * 16 * math.log(2.)) + 0.01 * kl_mc.mean()  # bits per dim, and a little MC KL
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append([loss.item(), elbo.mean().item(), kl_mc.mean().item(),
                        sum("Ambiguous kl_divergence(MCNormal, Normal)" in str(w.message) for w in caught)])
    grads = {n: p.grad for n, p in model.named_parameters()}
    with torch.no_grad():
        base = DiscretizedLogistic(loc[0], log_scale[0])
        wide = base.expand((2,) + tuple(base.batch_shape))
        sample = D.Independent(wide, 3).sample()
        kl = D.kl_divergence(base, DiscretizedLogistic(loc[1], log_scale[1]))
    try:
        DiscretizedLogistic(loc[0], log_scale[0]).log_prob(torch.from_numpy(images[0]) * 2)
        refused = False
    except ValueError:
        refused = True
    return {"history": history, "grads": grads, "state": model.state_dict(), "sample": sample, "kl": kl,
            "wide": list(wide.batch_shape), "refused": refused, "px_shape": [list(px.batch_shape), list(px.event_shape)]}


def test_vae_with_a_custom_distribution_likelihood():
    weights = weights_of(make_custom_likelihood_vae)
    ours, _ = run_both(custom_likelihood_vae, weights, rtol=2e-4, atol=5e-5)
    assert ours["wide"] == [2, 4, 2, 4, 4] and ours["refused"] is True
    assert [h[3] for h in ours["history"]] == [1, 0, 0, 0]  # the ambiguity warned once (the choice is memoised)
    assert ours["px_shape"] == [[3, 4], [2, 4, 4]]
    assert np.all(np.abs(ours["sample"]) <= 1)


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


# ----------------------------------------------------------------------------------------------
# StyleGAN2 as rosinality/stylegan2-pytorch writes it on the CPU: upfirdn2d_native (F.pad of a 6-d view, a
# negative-pad crop, a flipped FIR kernel, a strided slice viewed back), Blur/Upsample, equalised layers with
# lr_mul, fused_leaky_relu's CPU path, modulated convolutions (grouped conv2d and grouped conv_transpose2d),
# noise buffers on an empty nn.Module, style mixing through a seeded random.Random, the minibatch-stddev layer
# (mean with keepdims=), ConvLayer setting an attribute before nn.Sequential.__init__; trained one step at a time
# with the logistic loss, lazy R1 and path-length regularisation (autograd.grad with create_graph), requires_grad
# toggling and the EMA accumulate
# ----------------------------------------------------------------------------------------------


def stylegan2_modules(m, size=8, style_dim=8, n_mlp=2, channel=8):
    import random as pyrandom
    from collections import abc

    torch, nn, F = m.torch, m.nn, m.F

    def fused_leaky_relu(input, bias=None, negative_slope=0.2, scale=2 ** 0.5):
        if bias is not None:
            rest_dim = [1] * (input.ndim - bias.ndim - 1)
            return (
                F.leaky_relu(
                    input + bias.view(1, bias.shape[0], *rest_dim), negative_slope=0.2
                )
                * scale
            )
        else:
            return F.leaky_relu(input, negative_slope=0.2) * scale

    class FusedLeakyReLU(nn.Module):
        def __init__(self, channel, bias=True, negative_slope=0.2, scale=2 ** 0.5):
            super().__init__()
            if bias:
                self.bias = nn.Parameter(torch.zeros(channel))
            else:
                self.bias = None
            self.negative_slope = negative_slope
            self.scale = scale

        def forward(self, input):
            return fused_leaky_relu(input, self.bias, self.negative_slope, self.scale)

    def upfirdn2d_native(input, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1):
        _, channel, in_h, in_w = input.shape
        input = input.reshape(-1, in_h, in_w, 1)
        _, in_h, in_w, minor = input.shape
        kernel_h, kernel_w = kernel.shape
        out = input.view(-1, in_h, 1, in_w, 1, minor)
        out = F.pad(out, [0, 0, 0, up_x - 1, 0, 0, 0, up_y - 1])
        out = out.view(-1, in_h * up_y, in_w * up_x, minor)
        out = F.pad(out, [0, 0, max(pad_x0, 0), max(pad_x1, 0), max(pad_y0, 0), max(pad_y1, 0)])
        out = out[:, max(-pad_y0, 0): out.shape[1] - max(-pad_y1, 0), max(-pad_x0, 0): out.shape[2] - max(-pad_x1, 0), :]
        out = out.permute(0, 3, 1, 2)
        out = out.reshape([-1, 1, in_h * up_y + pad_y0 + pad_y1, in_w * up_x + pad_x0 + pad_x1])
        w = torch.flip(kernel, [0, 1]).view(1, 1, kernel_h, kernel_w)
        out = F.conv2d(out, w)
        out = out.reshape(-1, minor, in_h * up_y + pad_y0 + pad_y1 - kernel_h + 1,
                          in_w * up_x + pad_x0 + pad_x1 - kernel_w + 1)
        out = out.permute(0, 2, 3, 1)
        out = out[:, ::down_y, ::down_x, :]
        out_h = (in_h * up_y + pad_y0 + pad_y1 - kernel_h + down_y) // down_y
        out_w = (in_w * up_x + pad_x0 + pad_x1 - kernel_w + down_x) // down_x
        return out.view(-1, channel, out_h, out_w)

    def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
        if not isinstance(up, abc.Iterable):
            up = (up, up)
        if not isinstance(down, abc.Iterable):
            down = (down, down)
        if len(pad) == 2:
            pad = (pad[0], pad[1], pad[0], pad[1])
        return upfirdn2d_native(input, kernel, *up, *down, *pad)

    class PixelNorm(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, input):
            return input * torch.rsqrt(torch.mean(input ** 2, dim=1, keepdim=True) + 1e-8)

    def make_kernel(k):
        k = torch.tensor(k, dtype=torch.float32)
        if k.ndim == 1:
            k = k[None, :] * k[:, None]
        k /= k.sum()
        return k

    class Upsample(nn.Module):
        def __init__(self, kernel, factor=2):
            super().__init__()
            self.factor = factor
            kernel = make_kernel(kernel) * (factor ** 2)
            self.register_buffer("kernel", kernel)
            p = kernel.shape[0] - factor
            pad0 = (p + 1) // 2 + factor - 1
            pad1 = p // 2
            self.pad = (pad0, pad1)

        def forward(self, input):
            out = upfirdn2d(input, self.kernel, up=self.factor, down=1, pad=self.pad)
            return out

    class Blur(nn.Module):
        def __init__(self, kernel, pad, upsample_factor=1):
            super().__init__()
            kernel = make_kernel(kernel)
            if upsample_factor > 1:
                kernel = kernel * (upsample_factor ** 2)
            self.register_buffer("kernel", kernel)
            self.pad = pad

        def forward(self, input):
            out = upfirdn2d(input, self.kernel, pad=self.pad)
            return out

    class EqualConv2d(nn.Module):
        def __init__(self, in_channel, out_channel, kernel_size, stride=1, padding=0, bias=True):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
            self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
            self.stride = stride
            self.padding = padding
            if bias:
                self.bias = nn.Parameter(torch.zeros(out_channel))
            else:
                self.bias = None

        def forward(self, input):
            out = F.conv2d(input, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)
            return out

    class EqualLinear(nn.Module):
        def __init__(self, in_dim, out_dim, bias=True, bias_init=0, lr_mul=1, activation=None):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
            if bias:
                self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init))
            else:
                self.bias = None
            self.activation = activation
            self.scale = (1 / math.sqrt(in_dim)) * lr_mul
            self.lr_mul = lr_mul

        def forward(self, input):
            if self.activation:
                out = F.linear(input, self.weight * self.scale)
                out = fused_leaky_relu(out, self.bias * self.lr_mul)
            else:
                out = F.linear(input, self.weight * self.scale, bias=self.bias * self.lr_mul)
            return out

    class ModulatedConv2d(nn.Module):
        def __init__(self, in_channel, out_channel, kernel_size, style_dim, demodulate=True, upsample=False,
                     blur_kernel=[1, 3, 3, 1]):
            super().__init__()
            self.eps = 1e-8
            self.kernel_size = kernel_size
            self.in_channel = in_channel
            self.out_channel = out_channel
            self.upsample = upsample
            if upsample:
                factor = 2
                p = (len(blur_kernel) - factor) - (kernel_size - 1)
                pad0 = (p + 1) // 2 + factor - 1
                pad1 = p // 2 + 1
                self.blur = Blur(blur_kernel, pad=(pad0, pad1), upsample_factor=factor)
            fan_in = in_channel * kernel_size ** 2
            self.scale = 1 / math.sqrt(fan_in)
            self.padding = kernel_size // 2
            self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
            self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
            self.demodulate = demodulate

        def forward(self, input, style):
            batch, in_channel, height, width = input.shape
            style = self.modulation(style).view(batch, 1, in_channel, 1, 1)
            weight = self.scale * self.weight * style
            if self.demodulate:
                demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
                weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)
            weight = weight.view(batch * self.out_channel, in_channel, self.kernel_size, self.kernel_size)
            if self.upsample:
                input = input.view(1, batch * in_channel, height, width)
                weight = weight.view(batch, self.out_channel, in_channel, self.kernel_size, self.kernel_size)
                weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, self.kernel_size,
                                                        self.kernel_size)
                out = F.conv_transpose2d(input, weight, padding=0, stride=2, groups=batch)
                _, _, height, width = out.shape
                out = out.view(batch, self.out_channel, height, width)
                out = self.blur(out)
            else:
                input = input.view(1, batch * in_channel, height, width)
                out = F.conv2d(input, weight, padding=self.padding, groups=batch)
                _, _, height, width = out.shape
                out = out.view(batch, self.out_channel, height, width)
            return out

    class NoiseInjection(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(1))

        def forward(self, image, noise=None):
            if noise is None:
                batch, _, height, width = image.shape
                noise = image.new_empty(batch, 1, height, width).normal_()
            return image + self.weight * noise

    class ConstantInput(nn.Module):
        def __init__(self, channel, size=4):
            super().__init__()
            self.input = nn.Parameter(torch.randn(1, channel, size, size))

        def forward(self, input):
            batch = input.shape[0]
            out = self.input.repeat(batch, 1, 1, 1)
            return out

    class StyledConv(nn.Module):
        def __init__(self, in_channel, out_channel, kernel_size, style_dim, upsample=False, blur_kernel=[1, 3, 3, 1],
                     demodulate=True):
            super().__init__()
            self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample,
                                        blur_kernel=blur_kernel, demodulate=demodulate)
            self.noise = NoiseInjection()
            self.activate = FusedLeakyReLU(out_channel)

        def forward(self, input, style, noise=None):
            out = self.conv(input, style)
            out = self.noise(out, noise=noise)
            out = self.activate(out)
            return out

    class ToRGB(nn.Module):
        def __init__(self, in_channel, style_dim, upsample=True, blur_kernel=[1, 3, 3, 1]):
            super().__init__()
            if upsample:
                self.upsample = Upsample(blur_kernel)
            self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
            self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

        def forward(self, input, style, skip=None):
            out = self.conv(input, style)
            out = out + self.bias
            if skip is not None:
                skip = self.upsample(skip)
                out = out + skip
            return out

    class Generator(nn.Module):
        def __init__(self, size, style_dim, n_mlp, channel_multiplier=2, blur_kernel=[1, 3, 3, 1], lr_mlp=0.01):
            super().__init__()
            self.size = size
            self.style_dim = style_dim
            layers = [PixelNorm()]
            for i in range(n_mlp):
                layers.append(EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu"))
            self.style = nn.Sequential(*layers)
            self.channels = {4: channel, 8: channel, 16: channel}
            self.input = ConstantInput(self.channels[4])
            self.conv1 = StyledConv(self.channels[4], self.channels[4], 3, style_dim, blur_kernel=blur_kernel)
            self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False)
            self.log_size = int(math.log(size, 2))
            self.num_layers = (self.log_size - 2) * 2 + 1
            self.convs = nn.ModuleList()
            self.upsamples = nn.ModuleList()
            self.to_rgbs = nn.ModuleList()
            self.noises = nn.Module()
            in_channel = self.channels[4]
            for layer_idx in range(self.num_layers):
                res = (layer_idx + 5) // 2
                shape = [1, 1, 2 ** res, 2 ** res]
                self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(*shape))
            for i in range(3, self.log_size + 1):
                out_channel = self.channels[2 ** i]
                self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True,
                                             blur_kernel=blur_kernel))
                self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel))
                self.to_rgbs.append(ToRGB(out_channel, style_dim))
                in_channel = out_channel
            self.n_latent = self.log_size * 2 - 2

        def mean_latent(self, n_latent):
            latent_in = torch.randn(n_latent, self.style_dim, device=self.input.input.device)
            latent = self.style(latent_in).mean(0, keepdim=True)
            return latent

        def forward(self, styles, return_latents=False, inject_index=None, truncation=1, truncation_latent=None,
                    input_is_latent=False, noise=None, randomize_noise=True, random=None):
            if not input_is_latent:
                styles = [self.style(s) for s in styles]
            if noise is None:
                if randomize_noise:
                    noise = [None] * self.num_layers
                else:
                    noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
            if truncation < 1:
                style_t = []
                for style in styles:
                    style_t.append(truncation_latent + truncation * (style - truncation_latent))
                styles = style_t
            if len(styles) < 2:
                inject_index = self.n_latent
                if styles[0].ndim < 3:
                    latent = styles[0].unsqueeze(1).repeat(1, inject_index, 1)
                else:
                    latent = styles[0]
            else:
                if inject_index is None:
                    inject_index = random.randint(1, self.n_latent - 1)
                latent = styles[0].unsqueeze(1).repeat(1, inject_index, 1)
                latent2 = styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)
                latent = torch.cat([latent, latent2], 1)
            out = self.input(latent)
            out = self.conv1(out, latent[:, 0], noise=noise[0])
            skip = self.to_rgb1(out, latent[:, 1])
            i = 1
            for conv1, conv2, noise1, noise2, to_rgb in zip(self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2],
                                                            self.to_rgbs):
                out = conv1(out, latent[:, i], noise=noise1)
                out = conv2(out, latent[:, i + 1], noise=noise2)
                skip = to_rgb(out, latent[:, i + 2], skip)
                i += 2
            image = skip
            if return_latents:
                return image, latent
            else:
                return image, None

    class ConvLayer(nn.Sequential):
        def __init__(self, in_channel, out_channel, kernel_size, downsample=False, blur_kernel=[1, 3, 3, 1], bias=True,
                     activate=True):
            layers = []
            if downsample:
                factor = 2
                p = (len(blur_kernel) - factor) + (kernel_size - 1)
                pad0 = (p + 1) // 2
                pad1 = p // 2
                layers.append(Blur(blur_kernel, pad=(pad0, pad1)))
                stride = 2
                self.padding = 0
            else:
                stride = 1
                self.padding = kernel_size // 2
            layers.append(EqualConv2d(in_channel, out_channel, kernel_size, padding=self.padding, stride=stride,
                                      bias=bias and not activate))
            if activate:
                layers.append(FusedLeakyReLU(out_channel, bias=bias))
            super().__init__(*layers)

    class ResBlock(nn.Module):
        def __init__(self, in_channel, out_channel, blur_kernel=[1, 3, 3, 1]):
            super().__init__()
            self.conv1 = ConvLayer(in_channel, in_channel, 3)
            self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True)
            self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, activate=False, bias=False)

        def forward(self, input):
            out = self.conv1(input)
            out = self.conv2(out)
            skip = self.skip(input)
            out = (out + skip) / math.sqrt(2)
            return out

    class Discriminator(nn.Module):
        def __init__(self, size, channel_multiplier=2, blur_kernel=[1, 3, 3, 1]):
            super().__init__()
            channels = {4: channel, 8: channel, 16: channel}
            convs = [ConvLayer(3, channels[size], 1)]
            log_size = int(math.log(size, 2))
            in_channel = channels[size]
            for i in range(log_size, 2, -1):
                out_channel = channels[2 ** (i - 1)]
                convs.append(ResBlock(in_channel, out_channel, blur_kernel))
                in_channel = out_channel
            self.convs = nn.Sequential(*convs)
            self.stddev_group = 4
            self.stddev_feat = 1
            self.final_conv = ConvLayer(in_channel + 1, channels[4], 3)
            self.final_linear = nn.Sequential(
                EqualLinear(channels[4] * 4 * 4, channels[4], activation="fused_lrelu"),
                EqualLinear(channels[4], 1),
            )

        def forward(self, input):
            out = self.convs(input)
            batch, channel, height, width = out.shape
            group = min(batch, self.stddev_group)
            stddev = out.view(group, -1, self.stddev_feat, channel // self.stddev_feat, height, width)
            stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8)
            stddev = stddev.mean([2, 3, 4], keepdims=True).squeeze(2)
            stddev = stddev.repeat(group, 1, height, width)
            out = torch.cat([out, stddev], 1)
            out = self.final_conv(out)
            out = out.view(batch, -1)
            out = self.final_linear(out)
            return out

    return Generator(size, style_dim, n_mlp), Discriminator(size), upfirdn2d, make_kernel, pyrandom


def make_stylegan2(m):
    generator, discriminator, *_ = stylegan2_modules(m)
    return m.nn.ModuleDict({"g": generator, "d": discriminator})


def stylegan2(m, weights, iters=3, batch=4, latent=8, mixing=0.9, r1=10., path_regularize=2.,
              d_reg_every=2, g_reg_every=2, path_batch_shrink=2):
    torch, F = m.torch, m.F
    autograd = torch.autograd
    import copy
    both = load(m, make_stylegan2(m), weights)
    generator, discriminator = both["g"], both["d"]
    _, _, upfirdn2d, make_kernel, pyrandom = stylegan2_modules(m)
    random = pyrandom.Random(0)
    g_ema = copy.deepcopy(generator)
    g_ema.eval()

    def d_logistic_loss(real_pred, fake_pred):
        real_loss = F.softplus(-real_pred)
        fake_loss = F.softplus(fake_pred)
        return real_loss.mean() + fake_loss.mean()

    def d_r1_loss(real_pred, real_img):
        grad_real, = autograd.grad(outputs=real_pred.sum(), inputs=real_img, create_graph=True)
        grad_penalty = grad_real.pow(2).reshape(grad_real.shape[0], -1).sum(1).mean()
        return grad_penalty

    def g_nonsaturating_loss(fake_pred):
        loss = F.softplus(-fake_pred).mean()
        return loss

    def g_path_regularize(fake_img, latents, mean_path_length, decay=0.01):
        noise = torch.randn_like(fake_img) / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
        grad, = autograd.grad(outputs=(fake_img * noise).sum(), inputs=latents, create_graph=True)
        path_lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))
        path_mean = mean_path_length + decay * (path_lengths.mean() - mean_path_length)
        path_penalty = (path_lengths - path_mean).pow(2).mean()
        return path_penalty, path_mean.detach(), path_lengths

    def make_noise(batch, latent_dim, n_noise):
        if n_noise == 1:
            return torch.randn(batch, latent_dim)
        noises = torch.randn(n_noise, batch, latent_dim).unbind(0)
        return noises

    def mixing_noise(batch, latent_dim, prob):
        if prob > 0 and random.random() < prob:
            return make_noise(batch, latent_dim, 2)
        else:
            return [make_noise(batch, latent_dim, 1)]

    def accumulate(model1, model2, decay=0.999):
        par1 = dict(model1.named_parameters())
        par2 = dict(model2.named_parameters())
        for k in par1.keys():
            par1[k].data.mul_(decay).add_(par2[k].data, alpha=1 - decay)

    def requires_grad(model, flag=True):
        for p in model.parameters():
            p.requires_grad = flag

    g_reg_ratio = g_reg_every / (g_reg_every + 1)
    d_reg_ratio = d_reg_every / (d_reg_every + 1)
    lr = 0.002
    g_optim = m.optim.Adam(generator.parameters(), lr=lr * g_reg_ratio, betas=(0 ** g_reg_ratio, 0.99 ** g_reg_ratio))
    d_optim = m.optim.Adam(discriminator.parameters(), lr=lr * d_reg_ratio, betas=(0 ** d_reg_ratio, 0.99 ** d_reg_ratio))
    rng = np.random.default_rng(31)
    reals = np.tanh(rng.standard_normal((iters, batch, 3, 8, 8))).astype(np.float32)
    torch.manual_seed(4)
    mean_path_length = 0
    history = []
    for i in range(iters):
        real_img = torch.from_numpy(reals[i])
        requires_grad(generator, False)
        requires_grad(discriminator, True)
        noise = mixing_noise(batch, latent, mixing)
        fake_img, _ = generator(noise, random=random)
        fake_pred = discriminator(fake_img)
        real_pred = discriminator(real_img)
        d_loss = d_logistic_loss(real_pred, fake_pred)
        discriminator.zero_grad()
        d_loss.backward()
        d_optim.step()
        d_regularize = i % d_reg_every == 0
        r1_loss = torch.zeros(())
        if d_regularize:
            real_img.requires_grad = True
            real_pred = discriminator(real_img)
            r1_loss = d_r1_loss(real_pred, real_img)
            discriminator.zero_grad()
            (r1 / 2 * r1_loss * d_reg_every + 0 * real_pred[0]).backward()
            d_optim.step()
        requires_grad(generator, True)
        requires_grad(discriminator, False)
        noise = mixing_noise(batch, latent, mixing)
        fake_img, _ = generator(noise, random=random)
        fake_pred = discriminator(fake_img)
        g_loss = g_nonsaturating_loss(fake_pred)
        generator.zero_grad()
        g_loss.backward()
        g_optim.step()
        g_regularize = i % g_reg_every == 0
        path_loss = torch.zeros(())
        if g_regularize:
            path_batch_size = max(1, batch // path_batch_shrink)
            noise = mixing_noise(path_batch_size, latent, mixing)
            fake_img, latents = generator(noise, return_latents=True, random=random)
            path_loss, mean_path_length, path_lengths = g_path_regularize(fake_img, latents, mean_path_length)
            generator.zero_grad()
            weighted_path_loss = path_regularize * g_reg_every * path_loss
            if path_batch_shrink:
                weighted_path_loss += 0 * fake_img[0, 0, 0, 0]
            weighted_path_loss.backward()
            g_optim.step()
        accumulate(g_ema, generator, 0.5 ** (32 / (10 * 1000)))
        history.append([d_loss.item(), r1_loss.item(), g_loss.item(), path_loss.item(), float(mean_path_length)])
    grads = {"g." + n: p.grad for n, p in generator.named_parameters() if p.grad is not None}
    grads.update({"d." + n: p.grad for n, p in discriminator.named_parameters() if p.grad is not None})
    with torch.no_grad():
        mean_latent = g_ema.mean_latent(16)
        sample, _ = g_ema([torch.randn(2, latent)], truncation=0.7, truncation_latent=mean_latent,
                          randomize_noise=False)
    # upfirdn2d against its definition: zero-stuffing, FIR filtering with the flipped kernel, decimation
    x = torch.from_numpy(rng.standard_normal((1, 2, 5, 5)).astype(np.float32))
    k = make_kernel([1, 3, 3, 1])
    fir = {"up": upfirdn2d(x, k * 4, up=2, pad=(2, 1)), "down": upfirdn2d(x, k, down=2, pad=(1, 1)),
           "crop": upfirdn2d(x, k, pad=(-1, 2))}
    return {"history": history, "grads": grads, "state": both.state_dict(), "ema": g_ema.state_dict(),
            "sample": sample, "fir": fir, "x": x}


def fir_reference(x, k, up=1, down=1, pad=(0, 0)):
    """upfirdn2d in NumPy: zero-stuff by up, pad (negative crops), correlate with the flipped kernel (a true
    convolution), keep every down-th sample."""
    n, c, h, w = x.shape
    stuffed = np.zeros((n, c, h * up, w * up), x.dtype)
    stuffed[:, :, ::up, ::up] = x
    p0, p1 = pad
    padded = np.pad(stuffed, ((0, 0), (0, 0), (max(p0, 0), max(p1, 0)), (max(p0, 0), max(p1, 0))))
    padded = padded[:, :, max(-p0, 0):padded.shape[2] - max(-p1, 0), max(-p0, 0):padded.shape[3] - max(-p1, 0)]
    kh, kw = k.shape
    flipped = k[::-1, ::-1]
    out_h, out_w = padded.shape[2] - kh + 1, padded.shape[3] - kw + 1
    out = np.zeros((n, c, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            out[:, :, i, j] = (padded[:, :, i:i + kh, j:j + kw] * flipped).sum((-1, -2))
    return out[:, :, ::down, ::down]


def test_stylegan2_upfirdn_modulated_convs_r1_and_path_length():
    weights = weights_of(make_stylegan2)
    ours, _ = run_both(stylegan2, weights, rtol=5e-4, atol=5e-5)
    k = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
    np.testing.assert_allclose(ours["fir"]["up"], fir_reference(ours["x"], k * 4, up=2, pad=(2, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["fir"]["down"], fir_reference(ours["x"], k, down=2, pad=(1, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["fir"]["crop"], fir_reference(ours["x"], k, pad=(-1, 2)), rtol=1e-5, atol=1e-6)
    assert ours["sample"].shape == (2, 3, 8, 8)


# ----------------------------------------------------------------------------------------------
# NVAE (NVlabs/NVAE), reduced to two latent groups: weight-normalised Conv2D subclasses with data-dependent
# initialisation (``.data =`` on parameters inside the first forward), TorchScript helpers (soft_clamp5 by an
# in-place tanh_, sampling by ``mu.mul(0).normal_()`` then ``mul_``/``add_``), residual posteriors, the
# discretised logistic mixture as NVAE writes it (torch.where, log_softmax, logsumexp, Gumbel-max sampling),
# the KL balancer (coefficients from NumPy scalars times tensors), spectral regularisation by batched power
# iteration on weights grouped by torch.Size keys, and the BatchNorm scale penalty
# ----------------------------------------------------------------------------------------------


def nvae_modules(m, C=6, L=2, num_mix=2):
    torch, nn, F = m.torch, m.nn, m.F

    @torch.jit.script
    def soft_clamp5(x):
        return x.div(5.).tanh_().mul(5.)    # 5. * torch.tanh(x / 5.) <--> soft differentiable clamp between [-5, 5]

    @torch.jit.script
    def sample_normal_jit(mu, sigma):
        eps = mu.mul(0).normal_()
        z = eps.mul_(sigma).add_(mu)
        return z, eps

    @torch.jit.script
    def normalize_weight_jit(log_weight_norm, weight):
        n = torch.exp(log_weight_norm)
        wn = torch.sqrt(torch.sum(weight * weight, dim=[1, 2, 3]))   # norm(w)
        weight = n * weight / (wn.view(-1, 1, 1, 1) + 1e-5)
        return weight

    def norm(t, dim):
        return torch.sqrt(torch.sum(t * t, dim))

    class Normal:
        def __init__(self, mu, log_sigma, temp=1.):
            self.mu = soft_clamp5(mu)
            log_sigma = soft_clamp5(log_sigma)
            self.sigma = torch.exp(log_sigma) + 1e-2      # we don't need this after soft clamp
            if temp != 1.:
                self.sigma *= temp

        def sample(self):
            return sample_normal_jit(self.mu, self.sigma)

        def sample_given_eps(self, eps):
            return eps * self.sigma + self.mu

        def log_p(self, samples):
            normalized_samples = (samples - self.mu) / self.sigma
            log_p = - 0.5 * normalized_samples * normalized_samples - 0.5 * np.log(2 * np.pi) - torch.log(self.sigma)
            return log_p

        def kl(self, normal_dist):
            term1 = (self.mu - normal_dist.mu) / normal_dist.sigma
            term2 = self.sigma / normal_dist.sigma
            return 0.5 * (term1 * term1 + term2 * term2) - 0.5 - torch.log(term2)

    def one_hot(indices, depth, dim):
        indices = indices.unsqueeze(dim)
        size = list(indices.size())
        size[dim] = depth
        y_onehot = torch.zeros(size)
        y_onehot.zero_()
        y_onehot.scatter_(dim, indices, 1)
        return y_onehot

    class DiscMixLogistic:
        def __init__(self, param, num_mix=10, num_bits=8):
            B, C, H, W = param.size()
            self.num_mix = num_mix
            self.logit_probs = param[:, :num_mix, :, :]                                   # B, M, H, W
            l = param[:, num_mix:, :, :].view(B, 3, 3 * num_mix, H, W)                    # B, 3, 3 * M, H, W
            self.means = l[:, :, :num_mix, :, :]                                          # B, 3, M, H, W
            self.log_scales = torch.clamp(l[:, :, num_mix:2 * num_mix, :, :], min=-7.0)   # B, 3, M, H, W
            self.coeffs = torch.tanh(l[:, :, 2 * num_mix:3 * num_mix, :, :])              # B, 3, M, H, W
            self.max_val = 2. ** num_bits - 1

        def log_prob(self, samples):
            assert torch.max(samples) <= 1.0 and torch.min(samples) >= 0.0
            # convert samples to be in [-1, 1]
            samples = 2 * samples - 1.0
            B, C, H, W = samples.size()
            assert C == 3, 'only RGB images are considered.'
            samples = samples.unsqueeze(4)                                                  # B, 3, H , W
            samples = samples.expand(-1, -1, -1, -1, self.num_mix).permute(0, 1, 4, 2, 3)  # B, 3, M, H, W
            mean1 = self.means[:, 0, :, :, :]                                               # B, M, H, W
            mean2 = self.means[:, 1, :, :, :] + \
                self.coeffs[:, 0, :, :, :] * samples[:, 0, :, :, :]                         # B, M, H, W
            mean3 = self.means[:, 2, :, :, :] + \
                self.coeffs[:, 1, :, :, :] * samples[:, 0, :, :, :] + \
                self.coeffs[:, 2, :, :, :] * samples[:, 1, :, :, :]                         # B, M, H, W
            mean1 = mean1.unsqueeze(1)                          # B, 1, M, H, W
            mean2 = mean2.unsqueeze(1)                          # B, 1, M, H, W
            mean3 = mean3.unsqueeze(1)                          # B, 1, M, H, W
            means = torch.cat([mean1, mean2, mean3], dim=1)     # B, 3, M, H, W
            centered = samples - means                          # B, 3, M, H, W
            inv_stdv = torch.exp(- self.log_scales)
            plus_in = inv_stdv * (centered + 1. / self.max_val)
            cdf_plus = torch.sigmoid(plus_in)
            min_in = inv_stdv * (centered - 1. / self.max_val)
            cdf_min = torch.sigmoid(min_in)
            log_cdf_plus = plus_in - F.softplus(plus_in)
            log_one_minus_cdf_min = - F.softplus(min_in)
            cdf_delta = cdf_plus - cdf_min
            mid_in = inv_stdv * centered
            log_pdf_mid = mid_in - self.log_scales - 2. * F.softplus(mid_in)
            log_prob_mid_safe = torch.where(cdf_delta > 1e-5,
                                            torch.log(torch.clamp(cdf_delta, min=1e-10)),
                                            log_pdf_mid - np.log(self.max_val / 2))
            # the original implementation uses samples > 0.999, this ignores the largest possible pixel value (255)
            # which is mapped to 0.9922
            log_probs = torch.where(samples < -0.999, log_cdf_plus, torch.where(samples > 0.99, log_one_minus_cdf_min,
                                                                                log_prob_mid_safe))   # B, 3, M, H, W
            log_probs = torch.sum(log_probs, 1) + F.log_softmax(self.logit_probs, dim=1)  # B, M, H, W
            return torch.logsumexp(log_probs, dim=1)                                      # B, H, W

        def sample(self, t=1.):
            gumbel = -torch.log(- torch.log(torch.Tensor(self.logit_probs.size()).uniform_(1e-5, 1. - 1e-5)))  # B, M, H, W
            sel = one_hot(torch.argmax(self.logit_probs / t + gumbel, 1), self.num_mix, dim=1)          # B, M, H, W
            sel = sel.unsqueeze(1)                                                                 # B, 1, M, H, W
            # select logistic parameters
            means = torch.sum(self.means * sel, dim=2)                                             # B, 3, H, W
            log_scales = torch.sum(self.log_scales * sel, dim=2)                                   # B, 3, H, W
            coeffs = torch.sum(self.coeffs * sel, dim=2)                                           # B, 3, H, W
            # cells from logistic & clip to interval
            # we don't actually round to the nearest 8bit value when sampling
            u = torch.Tensor(means.size()).uniform_(1e-5, 1. - 1e-5)                               # B, 3, H, W
            x = means + torch.exp(log_scales) * t * (torch.log(u) - torch.log(1. - u))             # B, 3, H, W
            x0 = torch.clamp(x[:, 0, :, :], -1, 1.)                                                # B, H, W
            x1 = torch.clamp(x[:, 1, :, :] + coeffs[:, 0, :, :] * x0, -1, 1)                       # B, H, W
            x2 = torch.clamp(x[:, 2, :, :] + coeffs[:, 1, :, :] * x0 + coeffs[:, 2, :, :] * x1, -1, 1)  # B, H, W
            x0 = x0.unsqueeze(1)
            x1 = x1.unsqueeze(1)
            x2 = x2.unsqueeze(1)
            x = torch.cat([x0, x1, x2], 1)
            x = x / 2. + 0.5
            return x

    class Conv2D(nn.Conv2d):
        """Allows for weights as input."""

        def __init__(self, C_in, C_out, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=False,
                     data_init=False, weight_norm=True):
            super(Conv2D, self).__init__(C_in, C_out, kernel_size, stride, padding, dilation, groups, bias)
            self.log_weight_norm = None
            if weight_norm:
                init = norm(self.weight, dim=[1, 2, 3]).view(-1, 1, 1, 1)
                self.log_weight_norm = nn.Parameter(torch.log(init + 1e-2), requires_grad=True)
            self.data_init = data_init
            self.init_done = False
            self.weight_normalized = self.normalize_weight()

        def forward(self, x):
            # do data based initialization
            if self.data_init and not self.init_done:
                with torch.no_grad():
                    weight = self.weight / (norm(self.weight, dim=[1, 2, 3]).view(-1, 1, 1, 1) + 1e-5)
                    bias = None
                    out = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
                    mn = torch.mean(out, dim=[0, 2, 3])
                    st = 5 * torch.std(out, dim=[0, 2, 3])
                    if self.bias is not None:
                        self.bias.data = - mn / (st + 1e-5)
                    self.log_weight_norm.data = -torch.log((st.view(-1, 1, 1, 1) + 1e-5))
                    self.init_done = True
            self.weight_normalized = self.normalize_weight()
            bias = self.bias
            return F.conv2d(x, self.weight_normalized, bias, self.stride, self.padding, self.dilation, self.groups)

        def normalize_weight(self):
            """ applies weight normalization """
            if self.log_weight_norm is not None:
                weight = normalize_weight_jit(self.log_weight_norm, self.weight)
            else:
                weight = self.weight
            return weight

    class Swish(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)

    class AutoEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            # (NVAE's stem has a bias; here its output goes only into a BatchNorm, which cancels a bias: its
            # gradient would be float32 rounding alone)
            self.stem = Conv2D(3, C, 3, padding=1, bias=False, data_init=True)
            self.enc1 = nn.Sequential(nn.BatchNorm2d(C, momentum=0.05), Swish(), Conv2D(C, C, 3, stride=2, padding=1, bias=True))
            self.enc2 = nn.Sequential(nn.BatchNorm2d(C, momentum=0.05), Swish(), Conv2D(C, C, 3, stride=2, padding=1, bias=True))
            self.enc_sampler1 = Conv2D(C, 2 * L, 3, padding=1, bias=True)
            self.dec_z1 = Conv2D(L, C, 1, bias=True)
            self.enc_sampler2 = Conv2D(2 * C, 2 * L, 3, padding=1, bias=True)
            self.dec_sampler2 = nn.Sequential(nn.ELU(), Conv2D(C, 2 * L, 3, padding=1, bias=True))
            self.dec_z2 = Conv2D(C + L, C, 3, padding=1, bias=True)
            self.image_conditional = nn.Sequential(nn.ELU(), Conv2D(C, 10 * num_mix, 3, padding=1, bias=True))
            self.sr_u, self.sr_v = {}, {}
            self.num_power_iter = 2
            self.all_conv_layers = [mod for mod in self.modules() if isinstance(mod, Conv2D)]
            self.all_bn_layers = [mod for mod in self.modules() if isinstance(mod, nn.BatchNorm2d)]

        def forward(self, x):
            s1 = self.enc1(self.stem(2 * x - 1.0))          # 4x4
            s2 = self.enc2(s1)                              # 2x2
            mu_q, log_sig_q = torch.chunk(self.enc_sampler1(s2), 2, dim=1)
            dist = Normal(mu_q, log_sig_q)
            z1, _ = dist.sample()
            log_q_conv = dist.log_p(z1)
            all_q, all_log_q = [dist], [log_q_conv]
            h = F.interpolate(self.dec_z1(z1), scale_factor=2, mode="nearest")
            mu_p, log_sig_p = torch.chunk(self.dec_sampler2(h), 2, dim=1)
            ftr = self.enc_sampler2(torch.cat([s1, h], dim=1))
            mu_q, log_sig_q = torch.chunk(ftr, 2, dim=1)
            dist = Normal(mu_p + mu_q, log_sig_p + log_sig_q)
            z2, _ = dist.sample()
            all_q.append(dist)
            all_log_q.append(dist.log_p(z2))
            all_p = [Normal(torch.zeros_like(z1), torch.zeros_like(z1)), Normal(mu_p, log_sig_p)]
            h = self.dec_z2(torch.cat([h, z2], dim=1))
            logits = self.image_conditional(F.interpolate(h, scale_factor=2, mode="nearest"))
            kl_all = [q.kl(p) for q, p in zip(all_q, all_p)]
            return logits, all_log_q, kl_all

        def decoder_output(self, logits):
            return DiscMixLogistic(logits, num_mix, num_bits=8)

        def spectral_norm_parallel(self):
            """ This method computes spectral normalization for all conv layers in parallel. This method should be called
             after calling the forward method of all the conv layers in each iteration. """
            weights = {}   # a dictionary indexed by the shape of weights
            for l in self.all_conv_layers:
                weight = l.weight_normalized
                weight_mat = weight.view(weight.size(0), -1)
                if weight_mat.shape not in weights:
                    weights[weight_mat.shape] = []
                weights[weight_mat.shape].append(weight_mat)
            loss = 0
            for i in weights:
                weights[i] = torch.stack(weights[i], dim=0)
                with torch.no_grad():
                    num_iter = self.num_power_iter
                    if i not in self.sr_u:
                        num_w, row, col = weights[i].shape
                        self.sr_u[i] = F.normalize(torch.ones(num_w, row).normal_(0, 1), dim=1, eps=1e-3)
                        self.sr_v[i] = F.normalize(torch.ones(num_w, col).normal_(0, 1), dim=1, eps=1e-3)
                        # increase the number of iterations for the first time
                        num_iter = 10 * self.num_power_iter
                    for j in range(num_iter):
                        # Spectral norm of weight equals to `u^T W v`, where `u` and `v`
                        # are the first left and right singular vectors.
                        # This power iteration produces approximations of `u` and `v`.
                        self.sr_v[i] = F.normalize(torch.matmul(self.sr_u[i].unsqueeze(1), weights[i]).squeeze(1),
                                                   dim=1, eps=1e-3)  # bx1xr * bxrxc --> bx1xc --> bxc
                        self.sr_u[i] = F.normalize(torch.matmul(weights[i], self.sr_v[i].unsqueeze(2)).squeeze(2),
                                                   dim=1, eps=1e-3)  # bxrxc * bxcx1 --> bxrx1  --> bxr
                sigma = torch.matmul(self.sr_u[i].unsqueeze(1), torch.matmul(weights[i], self.sr_v[i].unsqueeze(2)))
                loss += torch.sum(sigma)
            return loss

        def batchnorm_loss(self):
            loss = torch.zeros(size=())
            for l in self.all_bn_layers:
                if l.affine:
                    loss += torch.max(torch.abs(l.weight))
            return loss

    return AutoEncoder()


def nvae(m, weights, steps=4, fun="sqrt"):
    torch = m.torch
    model = load(m, nvae_modules(m), weights)

    def kl_balancer_coeff(num_scales, groups_per_scale, fun):
        if fun == 'equal':
            coeff = torch.cat([torch.ones(groups_per_scale[num_scales - i - 1]) for i in range(num_scales)], dim=0)
        elif fun == 'linear':
            coeff = torch.cat([(2 ** i) * torch.ones(groups_per_scale[num_scales - i - 1]) for i in range(num_scales)], dim=0)
        elif fun == 'sqrt':
            coeff = torch.cat([np.sqrt(2 ** i) * torch.ones(groups_per_scale[num_scales - i - 1]) for i in range(num_scales)], dim=0)
        elif fun == 'square':
            coeff = torch.cat([np.square(2 ** i) / groups_per_scale[num_scales - i - 1] * torch.ones(groups_per_scale[num_scales - i - 1]) for i in range(num_scales)], dim=0)
        else:
            raise NotImplementedError
        # convert min to 1.
        coeff /= torch.min(coeff)
        return coeff

    def kl_per_group(kl_all):
        kl_vals = torch.mean(kl_all, dim=0)
        kl_coeff_i = torch.abs(kl_all)
        kl_coeff_i = torch.mean(kl_coeff_i, dim=0, keepdim=True) + 0.01
        return kl_coeff_i, kl_vals

    def kl_balancer(kl_all, kl_coeff=1.0, kl_balance=False, alpha_i=None):
        if kl_balance and kl_coeff < 1.0:
            alpha_i = alpha_i.unsqueeze(0)
            kl_all = torch.stack(kl_all, dim=1)
            kl_coeff_i, kl_vals = kl_per_group(kl_all)
            total_kl = torch.sum(kl_coeff_i)
            kl_coeff_i = kl_coeff_i / alpha_i * total_kl
            kl_coeff_i = kl_coeff_i / torch.mean(kl_coeff_i, dim=1, keepdim=True)
            kl = torch.sum(kl_all * kl_coeff_i.detach(), dim=1)
            # for reporting
            kl_coeffs = kl_coeff_i.squeeze(0)
        else:
            kl_all = torch.stack(kl_all, dim=1)
            kl_vals = torch.mean(kl_all, dim=0)
            kl = torch.sum(kl_all, dim=1)
            kl_coeffs = torch.ones(size=(len(kl_vals),))
        return kl_coeff * kl, kl_coeffs, kl_vals

    def kl_coeff(step, total_step, constant_step, min_kl_coeff):
        return max(min((step - constant_step) / total_step, 1.0), min_kl_coeff)

    alpha_i = kl_balancer_coeff(num_scales=2, groups_per_scale=[1, 1], fun=fun)
    cnn_optimizer = m.optim.Adamax(model.parameters(), 1e-2, weight_decay=3e-4, eps=1e-3)
    rng = np.random.default_rng(41)
    images = (rng.integers(0, 256, (steps, 3, 3, 8, 8)) / 255.).astype(np.float32)
    torch.manual_seed(9)
    history = []
    model.train()
    for global_step in range(steps):
        x = torch.from_numpy(images[global_step])
        cnn_optimizer.zero_grad()
        logits, log_q, kl_all = model(x)
        output = model.decoder_output(logits)
        kl_coeff_now = kl_coeff(global_step, 4, 1, 0.1)
        recon_loss = -output.log_prob(x).sum(dim=[1, 2])
        balanced_kl, kl_coeffs, kl_vals = kl_balancer([k.sum(dim=[1, 2, 3]) for k in kl_all], kl_coeff_now,
                                                      kl_balance=True, alpha_i=alpha_i)
        nelbo_batch = recon_loss + balanced_kl
        loss = torch.mean(nelbo_batch)
        norm_loss = model.spectral_norm_parallel()
        bn_loss = model.batchnorm_loss()
        wdn_coeff = 0.1
        loss += norm_loss * wdn_coeff + bn_loss * wdn_coeff
        loss.backward()
        cnn_optimizer.step()
        history.append([loss.item(), norm_loss.item(), bn_loss.item(), kl_coeff_now] + kl_coeffs.tolist())
    grads = {n: p.grad for n, p in model.named_parameters()}
    model.eval()
    with torch.no_grad():
        logits, _, _ = model(torch.from_numpy(images[0]))
        sample = model.decoder_output(logits).sample(t=0.8)
    return {"history": history, "grads": grads, "state": model.state_dict(), "alpha": alpha_i, "sample": sample,
            "sr_u": {str(tuple(k)): v for k, v in model.sr_u.items()}, "init_done": model.stem.init_done}


@pytest.mark.filterwarnings("ignore:`.*jit.script` is deprecated")
@pytest.mark.parametrize("fun", ["sqrt", "square"])
def test_nvae_weight_norm_data_init_kl_balancing_and_spectral_regularisation(fun):
    weights = weights_of(nvae_modules)
    # (1e-3: the discretised logistic's bin probabilities are differences of two sigmoids 2/255 apart, so in float32
    # its log-likelihood's gradient carries relative errors of about 2e-4 against float64, the same size in
    # PyTorch's and in chainrule's, which four optimiser steps then carry into every layer)
    ours, _ = run_both(nvae, weights, fun=fun, rtol=1e-3, atol=1e-3)
    assert ours["init_done"] is True
    np.testing.assert_allclose(ours["alpha"], [1.0, np.sqrt(2.0)] if fun == "sqrt" else [1.0, 4.0], rtol=1e-6)
    assert np.all((ours["sample"] >= 0) & (ours["sample"] <= 1))


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
