# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Generative models not covered elsewhere, run as tests/probe16_gen2_common.py says: pytorch-vqvae: a quantiser
written as two ``autograd.Function``s (``addmm`` distances, ``mark_non_differentiable``, a straight-through backward
by ``index_add_``) and a class-conditional gated PixelCNN prior sampled by ``multinomial``."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

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
