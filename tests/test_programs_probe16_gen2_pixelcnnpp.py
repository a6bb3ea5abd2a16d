# ruff: noqa: E501, F841, UP008  (the programs are kept as their authors wrote them)
"""Generative models not covered elsewhere, run as tests/probe16_gen2_common.py says: PixelCNN++ as pclucas14's port
writes it: down/right-shifted convolutions by ``nn.ZeroPad2d`` and slicing, weight-normed layers
(``nn.utils.weight_norm``), ``concat_elu``, gated resnets, the discretised logistic mixture likelihood (its
hand-written ``log_sum_exp``/``log_prob_from_logits``, ``softplus`` edge cases at pixel values 0 and 255 chosen by
float masks) and sampling from it (Gumbel-max by ``uniform_``, ``scatter_`` one-hot, the inverse logistic CDF,
clamps)."""

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
