# ruff: noqa: B007, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""Programs of the official pytorch/examples repository, run as tests/probe9_examples_common.py says. Images to
images: ``fast_neural_style``'s ``TransformerNet`` (``ReflectionPad2d``, ``InstanceNorm2d(affine=True)``, nearest
``interpolate``, residual blocks) trained through a frozen VGG-like feature net returning a namedtuple, gram matrices
by ``bmm``, ``normalize_batch`` by ``new_tensor`` and an in-place ``div_`` on the network's output;
``super_resolution`` (``orthogonal_`` init with ``calculate_gain``, ``PixelShuffle``, PSNR, a state_dict checkpoint
through ``torch.save``/``torch.load``)."""

import io
import math
from collections import namedtuple
from math import log10

import numpy as np
import pytest

from .pytorch_programs import assert_same, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# fast_neural_style: TransformerNet trained with content and style (gram matrix) losses
# ----------------------------------------------------------------------------------------------


def transformer_net(m):
    torch, nn = m.torch, m.nn

    class ConvLayer(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride):
            super(ConvLayer, self).__init__()
            reflection_padding = kernel_size // 2
            self.reflection_pad = nn.ReflectionPad2d(reflection_padding)
            self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

        def forward(self, x):
            out = self.reflection_pad(x)
            out = self.conv2d(out)
            return out

    class ResidualBlock(nn.Module):
        """ResidualBlock
        introduced in: https://arxiv.org/abs/1512.03385
        """

        def __init__(self, channels):
            super(ResidualBlock, self).__init__()
            self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
            self.in1 = nn.InstanceNorm2d(channels, affine=True)
            self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
            self.in2 = nn.InstanceNorm2d(channels, affine=True)
            self.relu = nn.ReLU()

        def forward(self, x):
            residual = x
            out = self.relu(self.in1(self.conv1(x)))
            out = self.in2(self.conv2(out))
            out = out + residual
            return out

    class UpsampleConvLayer(nn.Module):
        """Upsamples the input and then does a convolution."""

        def __init__(self, in_channels, out_channels, kernel_size, stride, upsample=None):
            super(UpsampleConvLayer, self).__init__()
            self.upsample = upsample
            reflection_padding = kernel_size // 2
            self.reflection_pad = nn.ReflectionPad2d(reflection_padding)
            self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

        def forward(self, x):
            x_in = x
            if self.upsample:
                x_in = m.F.interpolate(x_in, mode='nearest', scale_factor=self.upsample)
            out = self.reflection_pad(x_in)
            out = self.conv2d(out)
            return out

    class TransformerNet(nn.Module):  # 32/64/128 channels and five residual blocks in the original
        def __init__(self):
            super(TransformerNet, self).__init__()
            self.conv1 = ConvLayer(3, 4, kernel_size=9, stride=1)
            self.in1 = nn.InstanceNorm2d(4, affine=True)
            self.conv2 = ConvLayer(4, 6, kernel_size=3, stride=2)
            self.in2 = nn.InstanceNorm2d(6, affine=True)
            self.conv3 = ConvLayer(6, 8, kernel_size=3, stride=2)
            self.in3 = nn.InstanceNorm2d(8, affine=True)
            self.res1 = ResidualBlock(8)
            self.res2 = ResidualBlock(8)
            self.deconv1 = UpsampleConvLayer(8, 6, kernel_size=3, stride=1, upsample=2)
            self.in4 = nn.InstanceNorm2d(6, affine=True)
            self.deconv2 = UpsampleConvLayer(6, 4, kernel_size=3, stride=1, upsample=2)
            self.in5 = nn.InstanceNorm2d(4, affine=True)
            self.deconv3 = ConvLayer(4, 3, kernel_size=9, stride=1)
            self.relu = nn.ReLU()

        def forward(self, X):
            y = self.relu(self.in1(self.conv1(X)))
            y = self.relu(self.in2(self.conv2(y)))
            y = self.relu(self.in3(self.conv3(y)))
            y = self.res1(y)
            y = self.res2(y)
            y = self.relu(self.in4(self.deconv1(y)))
            y = self.relu(self.in5(self.deconv2(y)))
            y = self.deconv3(y)
            return y

    return TransformerNet()


def small_vgg(m):
    """A stand-in for the pretrained VGG16 cut into slices, frozen as Vgg16(requires_grad=False) is."""
    nn = m.nn

    class Vgg(nn.Module):
        def __init__(self, requires_grad=False):
            super(Vgg, self).__init__()
            features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=True),
                                     nn.MaxPool2d(kernel_size=2, stride=2),
                                     nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True))
            self.slice1 = nn.Sequential()
            self.slice2 = nn.Sequential()
            for x in range(4):
                self.slice1.add_module(str(x), features[x])
            for x in range(4, 7):
                self.slice2.add_module(str(x), features[x])
            if not requires_grad:
                for param in self.parameters():
                    param.requires_grad = False

        def forward(self, X):
            h = self.slice1(X)
            h_relu1_2 = h
            h = self.slice2(h)
            h_relu2_2 = h
            vgg_outputs = namedtuple("VggOutputs", ['relu1_2', 'relu2_2'])
            out = vgg_outputs(h_relu1_2, h_relu2_2)
            return out

    return Vgg()


def fast_neural_style(m, tnet_weights, vgg_weights, images, style_image, content_weight=1e5, style_weight=1e10):
    torch = m.torch

    def gram_matrix(y):
        (b, ch, h, w) = y.size()
        features = y.view(b, ch, w * h)
        features_t = features.transpose(1, 2)
        gram = features.bmm(features_t) / (ch * h * w)
        return gram

    def normalize_batch(batch):
        # normalize using imagenet mean and std
        mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
        std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
        batch = batch.div_(255.0)
        return (batch - mean) / std

    transformer = load(m, transformer_net(m), tnet_weights)
    optimizer = m.optim.Adam(transformer.parameters(), 1e-3)
    mse_loss = m.nn.MSELoss()
    vgg = load(m, small_vgg(m), vgg_weights)
    batch_size = 2
    style = torch.from_numpy(style_image).mul(255)  # style_transform: ToTensor, then x.mul(255)
    style = style.repeat(batch_size, 1, 1, 1)
    features_style = vgg(normalize_batch(style))
    gram_style = [gram_matrix(y) for y in features_style]

    log = []
    transformer.train()
    for batch_id in range(len(images) // batch_size):
        x = torch.from_numpy(images[batch_id * batch_size:(batch_id + 1) * batch_size]).mul(255)
        n_batch = len(x)
        optimizer.zero_grad()

        y = transformer(x)

        y = normalize_batch(y)
        x = normalize_batch(x)

        features_y = vgg(y)
        features_x = vgg(x)

        content_loss = content_weight * mse_loss(features_y.relu2_2, features_x.relu2_2)

        style_loss = 0.
        for ft_y, gm_s in zip(features_y, gram_style):
            gm_y = gram_matrix(ft_y)
            style_loss += mse_loss(gm_y, gm_s[:n_batch, :, :])
        style_loss *= style_weight

        total_loss = content_loss + style_loss
        total_loss.backward()
        optimizer.step()
        log.append((content_loss.item(), style_loss.item()))
        if batch_id == 0:
            first_grads = {n: p.grad.clone() for n, p in transformer.named_parameters()}

    transformer.eval()  # stylize()
    with torch.no_grad():
        output = transformer(torch.from_numpy(images[:1]).mul(255)).cpu()
    img = output[0].clone().clamp(0, 255).numpy()  # save_image
    img = img.transpose(1, 2, 0).astype("uint8")
    frozen = all(not p.requires_grad and p.grad is None for p in vgg.parameters())
    return log, dict(transformer.state_dict()), first_grads, output, img, frozen, gram_style


# the parameters that only shift a channel an instance norm then centres: their gradient is rounding noise
STYLE_NULL = {f"{name}.conv2d.bias" for name in ("conv1", "conv2", "conv3", "res1.conv1", "res1.conv2", "res2.conv1",
                                                 "res2.conv2", "deconv1", "deconv2")}
STYLE_NULL |= {"res1.in2.bias", "res2.in2.bias"}  # a residual block's output shift: centred by the next norm


def test_fast_neural_style():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (4, 3, 12, 12)).astype(np.float32)
    style_image = rng.uniform(0, 1, (1, 3, 12, 12)).astype(np.float32)
    ours, theirs = run_both(fast_neural_style, weights_of(transformer_net), weights_of(small_vgg), images, style_image,
                            compare=False)
    log, state, grads, output, img, frozen, gram_style = ours
    assert frozen and img.shape == (12, 12, 3) and img.dtype == np.uint8 and output.shape == (1, 3, 12, 12)
    assert [g.shape for g in gram_style] == [(2, 4, 4), (2, 6, 6)]
    np.testing.assert_allclose(gram_style[0][0], gram_style[0][0].T, rtol=1e-6)
    largest = max(np.abs(g).max() for g in grads.values())
    assert {n for n, g in grads.items() if np.abs(g).max() < 1e-6 * largest} == STYLE_NULL
    if theirs is not None:
        kept = lambda params: {n: v for n, v in params.items() if n not in STYLE_NULL}
        assert_same(log, theirs[0], 1e-5, 0)
        assert_same(kept(state), kept(theirs[1]), 1e-4, 1e-5)
        # float32 gradients of up to 1e5 (a style weight of 1e10), summed from terms larger still
        assert_same(kept(grads), kept(theirs[2]), 1e-4, 1e-5 * largest)
        assert_same(ours[3:], theirs[3:], 1e-4, 1e-3)


# ----------------------------------------------------------------------------------------------
# super_resolution: an ESPCN-style sub-pixel network
# ----------------------------------------------------------------------------------------------


def sr_net(m, upscale_factor=2):
    nn = m.nn
    init = nn.init

    class Net(nn.Module):  # 64/64/32 channels in the original
        def __init__(self, upscale_factor):
            super(Net, self).__init__()

            self.relu = nn.ReLU()
            self.conv1 = nn.Conv2d(1, 16, (5, 5), (1, 1), (2, 2))
            self.conv2 = nn.Conv2d(16, 16, (3, 3), (1, 1), (1, 1))
            self.conv3 = nn.Conv2d(16, 8, (3, 3), (1, 1), (1, 1))
            self.conv4 = nn.Conv2d(8, upscale_factor ** 2, (3, 3), (1, 1), (1, 1))
            self.pixel_shuffle = nn.PixelShuffle(upscale_factor)

            self._initialize_weights()

        def forward(self, x):
            x = self.relu(self.conv1(x))
            x = self.relu(self.conv2(x))
            x = self.relu(self.conv3(x))
            x = self.pixel_shuffle(self.conv4(x))
            return x

        def _initialize_weights(self):
            init.orthogonal_(self.conv1.weight, init.calculate_gain('relu'))
            init.orthogonal_(self.conv2.weight, init.calculate_gain('relu'))
            init.orthogonal_(self.conv3.weight, init.calculate_gain('relu'))
            init.orthogonal_(self.conv4.weight)

    return Net(upscale_factor)


def super_resolution(m, weights, hr_images, upscale_factor=2, epochs=2):
    torch, nn, optim, F = m.torch, m.nn, m.optim, m.F
    DataLoader, TensorDataset = torch.utils.data.DataLoader, torch.utils.data.TensorDataset
    target = torch.from_numpy(hr_images)
    input = F.avg_pool2d(target, upscale_factor)  # for PIL's bicubic Resize(crop_size // upscale_factor)
    train_set = TensorDataset(input[:6], target[:6])
    test_set = TensorDataset(input[6:], target[6:])
    training_data_loader = DataLoader(dataset=train_set, batch_size=3, shuffle=False)
    testing_data_loader = DataLoader(dataset=test_set, batch_size=2, shuffle=False)
    model = load(m, sr_net(m, upscale_factor), weights)
    criterion = nn.MSELoss()
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    log = []
    for epoch in range(1, epochs + 1):
        epoch_loss = 0
        for iteration, batch in enumerate(training_data_loader, 1):
            input, target = batch[0], batch[1]
            optimizer.zero_grad()
            loss = criterion(model(input), target)
            epoch_loss += loss.item()
            loss.backward()
            optimizer.step()
        avg_psnr = 0
        with torch.no_grad():
            for batch in testing_data_loader:
                input, target = batch[0], batch[1]
                prediction = model(input)
                mse = criterion(prediction, target)
                psnr = 10 * log10(1 / mse.item())
                avg_psnr += psnr
        log.append((epoch_loss / len(training_data_loader), avg_psnr / len(testing_data_loader)))
    buffer = io.BytesIO()  # checkpoint(): through a file and back, a state_dict (not the pickled module)
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = sr_net(m, upscale_factor)
    restored.load_state_dict(torch.load(buffer))
    # super_resolve.py on one 16x16 luminance image
    input = torch.from_numpy(hr_images[0, 0]).view(1, -1, 16, 16)
    out = restored(input)
    out_img_y = out[0].detach().numpy()
    out_img_y *= 255.0
    out_img_y = out_img_y.clip(0, 255)
    grads = {n: p.grad for n, p in model.named_parameters()}
    return log, dict(model.state_dict()), grads, np.uint8(out_img_y[0]), out


def orthogonal_weights(m):
    """Net._initialize_weights: each weight, flattened to (out, in*kh*kw), has orthonormal rows times the gain."""
    m.torch.manual_seed(0)
    net = sr_net(m, 2)
    grams = []
    relu = math.sqrt(2)
    for conv, gain in ((net.conv1, relu), (net.conv2, relu), (net.conv3, relu), (net.conv4, 1.0)):
        w = conv.weight.detach().reshape(conv.weight.shape[0], -1)
        grams.append((w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w) / gain ** 2)
    init = m.nn.init
    return grams, init.calculate_gain('relu'), init.calculate_gain('leaky_relu', 0.2), init.calculate_gain('tanh')


def test_super_resolution():
    rng = np.random.default_rng(0)
    rows, cols = np.meshgrid(np.linspace(0, 1, 16), np.linspace(0, 1, 16), indexing="ij")
    frequencies = rng.uniform(2, 6, 8)
    hr = np.stack([0.5 + 0.4 * np.sin(f * 6 * rows) * np.cos(5 * cols) for f in frequencies])[:, None]
    hr = np.clip(hr + 0.05 * rng.standard_normal(hr.shape), 0, 1).astype(np.float32)
    ours, _ = run_both(super_resolution, weights_of(sr_net), hr, rtol=1e-4, atol=1e-4)
    log, state, grads, img, out = ours
    np.testing.assert_array_equal(img, np.uint8(out[0, 0].clip(0, 255)))  # .numpy() shared out's memory: *= 255
    assert out.shape == (1, 1, 32, 32) and img.shape == (32, 32) and log[1][0] < log[0][0]
    (grams, relu, leaky, tanh), _ = run_both(orthogonal_weights, compare=False)
    for gram in grams:
        np.testing.assert_allclose(gram, np.eye(len(gram)), atol=1e-5)
    assert (relu, leaky, tanh) == pytest.approx((math.sqrt(2), math.sqrt(2 / 1.04), 5 / 3))
