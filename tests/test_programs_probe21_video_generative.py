# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Video and spatio-temporal programs, run as tests/probe21_video_common.py says. Autoencoding, prediction and
generation: a video autoencoder over ``MaxPool3d(return_indices=True)`` / ``nn.MaxUnpool3d`` (its default output
size, and a full ``Size`` as ``output_size``) with grouped ``ConvTranspose3d`` and ``output_padding``, and
``Dropout3d`` on an unbatched clip; a ConvLSTM encoder-forecaster (gates by ``torch.split``) trained with scheduled
sampling (``torch.bernoulli`` with a seeded ``torch.Generator``); VideoMAE's tube masking (boolean-mask indexing,
patch targets normalised per patch); MoCoGAN (a ``GRUCell`` over motion codes, spectrally normalised
``Conv3d``/``Conv2d`` discriminators, the hinge loss)."""

import numpy as np

from .probe21_video_common import clips
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A video autoencoder over max-pooling switches (MaxUnpool3d) and grouped transposed convolutions
# ----------------------------------------------------------------------------------------------


def switch_autoencoder(m):
    nn = m.nn

    class SwitchAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1 = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.ReLU())
            self.pool1 = nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2), return_indices=True)
            self.enc2 = nn.Sequential(nn.Conv3d(8, 8, 3, padding=1, groups=2), nn.ReLU())
            self.pool2 = nn.MaxPool3d(kernel_size=(2, 3, 3), stride=(2, 2, 2), padding=(0, 1, 1), return_indices=True)
            self.unpool2 = nn.MaxUnpool3d(kernel_size=(2, 3, 3), stride=(2, 2, 2), padding=(0, 1, 1))
            self.dec2 = nn.Sequential(nn.ConvTranspose3d(8, 8, 3, padding=1, groups=4), nn.ReLU())
            self.unpool1 = nn.MaxUnpool3d((1, 2, 2))
            self.dec1 = nn.ConvTranspose3d(8, 3, 3, padding=1)
            # a learnt 2x temporal/spatial upsampler for the coarse code: output_padding makes 2x exact
            self.up = nn.ConvTranspose3d(8, 4, kernel_size=3, stride=2, padding=1, output_padding=1, groups=4)
            self.drop = nn.Dropout3d(0.5)

        def forward(self, x):
            h1 = self.enc1(x)
            p1, i1 = self.pool1(h1)
            h2 = self.enc2(p1)
            p2, i2 = self.pool2(h2)
            # the default size, (2 - 1) * 2 - 2 * 1 + 3 = 3, would not hold the 4 wide input: the full size is given
            d2 = self.unpool2(p2, i2, output_size=h2.size())
            d2 = self.dec2(d2)
            d1 = self.unpool1(d2, i1)  # the default size, (4 - 1) * 2 + 2 = 8, is the input's
            return self.dec1(self.drop(d1)), self.up(p2)

    return SwitchAE()


def switch_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, switch_autoencoder(m), weights).double()
    x = torch.from_numpy(clips(n=2, frames=4, side=8, seed=2))
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    model.drop.eval()  # the masks are drawn differently by the two libraries
    history = []
    for step in range(3):
        optimizer.zero_grad()
        recon, up = model(x)
        loss = F.mse_loss(recon, x) + 0.1 * up.pow(2).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    recon, up = model(x)
    _, i1 = model.pool1(model.enc1(x))
    return {"history": history, "recon": recon, "up": up, "indices": i1,
            "grad": model.dec2[0].weight.grad, "up_grad": model.up.weight.grad}


def test_switch_autoencoder_with_max_unpool3d_default_size_and_grouped_transposed_conv():
    weights = weights_of(switch_autoencoder)
    ours, _ = run_both(switch_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["recon"].shape == (2, 3, 4, 8, 8)
    assert ours["up"].shape == (2, 4, 4, 4, 4)  # (2 - 1) * 2 - 2 + 3 + 1 = 4


def test_dropout3d_on_an_unbatched_clip_drops_whole_channels_by_hand():
    """A 4-D input to Dropout3d is one clip (C, T, H, W): each channel is kept whole (scaled by 1 / (1 - p)) or
    zeroed whole, as PyTorch treats it since 2.0 (no batch dimension)."""
    torch, nn = OURS.torch, OURS.nn
    torch.manual_seed(0)
    drop = nn.Dropout3d(p=0.5)
    x = torch.ones(16, 2, 3, 3)
    y = drop(x).numpy()
    per_channel = y.reshape(16, -1)
    assert set(np.unique(per_channel)) <= {0.0, 2.0}
    assert (per_channel.min(1) == per_channel.max(1)).all()  # whole channels
    assert 0 < (per_channel[:, 0] == 0).sum() < 16
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())


# ----------------------------------------------------------------------------------------------
# ConvLSTM video prediction: teacher forcing and scheduled sampling
# ----------------------------------------------------------------------------------------------


def convlstm_model(m):
    torch, nn = m.torch, m.nn

    class ConvLSTMCell(nn.Module):
        def __init__(self, input_dim, hidden_dim, kernel_size, bias=True):
            super().__init__()
            self.input_dim = input_dim
            self.hidden_dim = hidden_dim
            self.padding = kernel_size[0] // 2, kernel_size[1] // 2
            self.conv = nn.Conv2d(in_channels=self.input_dim + self.hidden_dim, out_channels=4 * self.hidden_dim,
                                  kernel_size=kernel_size, padding=self.padding, bias=bias)

        def forward(self, input_tensor, cur_state):
            h_cur, c_cur = cur_state
            combined = torch.cat([input_tensor, h_cur], dim=1)
            combined_conv = self.conv(combined)
            cc_i, cc_f, cc_o, cc_g = torch.split(combined_conv, self.hidden_dim, dim=1)
            i = torch.sigmoid(cc_i)
            f = torch.sigmoid(cc_f)
            o = torch.sigmoid(cc_o)
            g = torch.tanh(cc_g)
            c_next = f * c_cur + i * g
            h_next = o * torch.tanh(c_next)
            return h_next, c_next

        def init_hidden(self, batch_size, image_size):
            height, width = image_size
            return (torch.zeros(batch_size, self.hidden_dim, height, width, device=self.conv.weight.device,
                                dtype=self.conv.weight.dtype),
                    torch.zeros(batch_size, self.hidden_dim, height, width, device=self.conv.weight.device,
                                dtype=self.conv.weight.dtype))

    class Seq2Seq(nn.Module):
        def __init__(self, hidden=(6, 6)):
            super().__init__()
            self.encoder = nn.ModuleList([ConvLSTMCell(1, hidden[0], (3, 3)), ConvLSTMCell(hidden[0], hidden[1], (3, 3))])
            self.decoder = nn.ModuleList([ConvLSTMCell(1, hidden[0], (3, 3)), ConvLSTMCell(hidden[0], hidden[1], (3, 3))])
            self.out = nn.Conv2d(hidden[1], 1, kernel_size=1)

        def step(self, cells, frame, states):
            x = frame
            new_states = []
            for cell, state in zip(cells, states):
                h, c = cell(x, state)
                new_states.append((h, c))
                x = h
            return x, new_states

        def forward(self, inputs, future, targets=None, teacher_forcing_ratio=0.0, generator=None):
            b, seq_len, _, h, w = inputs.size()  # (B, T, C, H, W), batch_first
            states = [cell.init_hidden(b, (h, w)) for cell in self.encoder]
            for t in range(seq_len):
                _, states = self.step(self.encoder, inputs[:, t], states)
            frame = inputs[:, -1]
            outputs = []
            for t in range(future):
                top, states = self.step(self.decoder, frame, states)
                prediction = torch.sigmoid(self.out(top))
                outputs.append(prediction)
                if targets is not None:
                    # scheduled sampling, per example: the true frame with probability teacher_forcing_ratio
                    use_truth = torch.bernoulli(torch.full((b, 1, 1, 1), teacher_forcing_ratio, dtype=inputs.dtype),
                                                generator=generator)
                    frame = use_truth * targets[:, t] + (1 - use_truth) * prediction
                else:
                    frame = prediction
            return torch.stack(outputs, dim=1)

    return Seq2Seq()


def moving_squares(n=3, frames=6, side=8, seed=0):
    rng = np.random.default_rng(seed)
    video = np.zeros((n, frames, 1, side, side))
    for b in range(n):
        y, x = rng.integers(0, side - 2, 2)
        dy, dx = rng.choice([-1, 1], 2)
        for t in range(frames):
            video[b, t, 0, y:y + 2, x:x + 2] = 1.0
            if not 0 <= y + dy <= side - 2:
                dy = -dy
            if not 0 <= x + dx <= side - 2:
                dx = -dx
            y, x = y + dy, x + dx
    return video


def convlstm_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, convlstm_model(m), weights).double()
    video = torch.from_numpy(moving_squares())
    inputs, targets = video[:, :3], video[:, 3:]
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(1234)
    history, ratios = [], []
    for step in range(4):
        ratio = max(0.0, 1.0 - step / 3)  # linear decay: teacher forcing, then the model's own frames
        ratios.append(ratio)
        optimizer.zero_grad()
        predictions = model(inputs, future=3, targets=targets, teacher_forcing_ratio=ratio, generator=generator)
        loss = F.binary_cross_entropy(predictions, targets)
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        rollout = model(inputs, future=3)
    return {"history": history, "rollout": rollout, "grad": model.encoder[0].conv.weight.grad,
            "next_draw": torch.rand(2, generator=generator)}


def test_convlstm_seq2seq_with_scheduled_sampling():
    weights = weights_of(convlstm_model)
    ours, _ = run_both(convlstm_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["rollout"].shape == (3, 3, 1, 8, 8)


def test_scheduled_sampling_at_ratio_one_is_teacher_forcing_by_hand():
    """At a ratio of 1 every draw keeps the true frame: the predictions are those of feeding the targets."""
    torch = OURS.torch
    model = load(OURS, convlstm_model(OURS), weights_of(convlstm_model)).double()
    video = torch.from_numpy(moving_squares())
    inputs, targets = video[:, :3], video[:, 3:]
    with torch.no_grad():
        sampled = model(inputs, 3, targets, 1.0, torch.Generator().manual_seed(0)).numpy()
        free = model(inputs, 3).numpy()
        states = [cell.init_hidden(3, (8, 8)) for cell in model.encoder]
        for t in range(3):
            _, states = model.step(model.encoder, inputs[:, t], states)
        fed = []
        for frame in [inputs[:, -1], targets[:, 0], targets[:, 1]]:
            top, states = model.step(model.decoder, frame, states)
            fed.append(torch.sigmoid(model.out(top)).numpy())
    np.testing.assert_allclose(sampled, np.stack(fed, 1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sampled[:, 0], free[:, 0])  # the first prediction comes before any feeding
    assert not np.allclose(sampled[:, 1:], free[:, 1:])


# ----------------------------------------------------------------------------------------------
# VideoMAE: tube masking and normalised-pixel reconstruction
# ----------------------------------------------------------------------------------------------


def videomae(m):
    torch, nn = m.torch, m.nn

    def get_sinusoid_encoding_table(n_position, d_hid):
        def get_position_angle_vec(position):
            return [position / np.power(10000, 2 * (hid_j // 2) / d_hid) for hid_j in range(d_hid)]

        sinusoid_table = np.array([get_position_angle_vec(pos_i) for pos_i in range(n_position)])
        sinusoid_table[:, 0::2] = np.sin(sinusoid_table[:, 0::2])
        sinusoid_table[:, 1::2] = np.cos(sinusoid_table[:, 1::2])
        return torch.tensor(sinusoid_table, dtype=torch.float, requires_grad=False).unsqueeze(0)

    class PatchEmbed(nn.Module):
        def __init__(self, img_size=8, patch_size=4, in_chans=3, embed_dim=16, num_frames=4, tubelet_size=2):
            super().__init__()
            self.tubelet_size = int(tubelet_size)
            self.num_patches = (img_size // patch_size) ** 2 * (num_frames // self.tubelet_size)
            self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=(self.tubelet_size, patch_size, patch_size),
                                  stride=(self.tubelet_size, patch_size, patch_size))

        def forward(self, x):
            return self.proj(x).flatten(2).transpose(1, 2)

    class PretrainVisionTransformer(nn.Module):
        def __init__(self, embed_dim=16, decoder_dim=8, patch_size=4, tubelet_size=2):
            super().__init__()
            self.patch_embed = PatchEmbed(embed_dim=embed_dim, tubelet_size=tubelet_size)
            num_patches = self.patch_embed.num_patches
            self.register_buffer("pos_embed", get_sinusoid_encoding_table(num_patches, embed_dim), persistent=False)
            layer = nn.TransformerEncoderLayer(embed_dim, nhead=2, dim_feedforward=32, dropout=0.0, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
            self.encoder_to_decoder = nn.Linear(embed_dim, decoder_dim, bias=False)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
            self.register_buffer("decoder_pos", get_sinusoid_encoding_table(num_patches, decoder_dim), persistent=False)
            self.decoder = nn.Sequential(nn.LayerNorm(decoder_dim), nn.Linear(decoder_dim, decoder_dim), nn.GELU(),
                                         nn.Linear(decoder_dim, 3 * tubelet_size * patch_size ** 2))
            nn.init.trunc_normal_(self.mask_token, std=.02)

        def forward(self, x, mask):
            # mask: (B, N) bool, True where masked; the same count in every row
            x = self.patch_embed(x)
            B, _, C = x.shape
            x = x + self.pos_embed.type_as(x).to(x.device).clone().detach()
            x_vis = x[~mask].reshape(B, -1, C)
            x_vis = self.encoder_to_decoder(self.encoder(x_vis))
            B, N, C = x_vis.shape
            expand_pos_embed = self.decoder_pos.expand(B, -1, -1).type_as(x).to(x.device).clone().detach()
            pos_emd_vis = expand_pos_embed[~mask].reshape(B, -1, C)
            pos_emd_mask = expand_pos_embed[mask].reshape(B, -1, C)
            x_full = torch.cat([x_vis + pos_emd_vis, self.mask_token + pos_emd_mask], dim=1)
            return self.decoder(x_full)[:, -pos_emd_mask.shape[1]:]  # only the masked tokens

    return PretrainVisionTransformer()


class TubeMaskingGenerator:
    """The same spatial mask on every temporal slice (tube masking), drawn by a seeded NumPy generator."""

    def __init__(self, input_size, mask_ratio, rng):
        self.frames, self.height, self.width = input_size
        self.num_patches_per_frame = self.height * self.width
        self.num_masks_per_frame = int(mask_ratio * self.num_patches_per_frame)
        self.rng = rng

    def __call__(self):
        mask_per_frame = np.hstack([np.zeros(self.num_patches_per_frame - self.num_masks_per_frame),
                                    np.ones(self.num_masks_per_frame)])
        self.rng.shuffle(mask_per_frame)
        return np.tile(mask_per_frame, (self.frames, 1)).flatten()


def videomae_targets(m, videos, patch_size=4, tubelet=2, normlize_target=True):
    torch = m.torch
    mean = torch.as_tensor((0.485, 0.456, 0.406), dtype=videos.dtype)[None, :, None, None, None]
    std = torch.as_tensor((0.229, 0.224, 0.225), dtype=videos.dtype)[None, :, None, None, None]
    unnorm_videos = videos * std + mean
    B, C, T, H, W = unnorm_videos.shape
    p0, p1, p2 = tubelet, patch_size, patch_size
    # rearrange 'b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c'
    x = unnorm_videos.reshape(B, C, T // p0, p0, H // p1, p1, W // p2, p2)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(B, (T // p0) * (H // p1) * (W // p2), p0 * p1 * p2, C)
    if normlize_target:
        x = (x - x.mean(dim=-2, keepdim=True)) / (x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return x.flatten(2)  # 'b n p c -> b n (p c)'


def videomae_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, videomae(m), weights).double()
    videos = torch.from_numpy(clips(n=2, frames=4, seed=8))
    generator = TubeMaskingGenerator((2, 2, 2), 0.5, np.random.default_rng(0))
    bool_masked_pos = torch.from_numpy(np.stack([generator(), generator()])).to(torch.bool)
    optimizer = optim.AdamW(model.parameters(), lr=1.5e-4 * 2 / 256 * 100, betas=(0.9, 0.95), weight_decay=0.05)
    history = []
    for step in range(3):
        with torch.no_grad():
            videos_patch = videomae_targets(m, videos)
            B, _, C = videos_patch.shape
            labels = videos_patch[bool_masked_pos].reshape(B, -1, C)
        outputs = model(videos, bool_masked_pos)
        loss = F.mse_loss(outputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "labels": labels, "mask_token_grad": model.mask_token.grad,
            "proj_grad": model.patch_embed.proj.weight.grad}


def test_videomae_tube_masking_reconstruction():
    weights = weights_of(videomae)
    ours, _ = run_both(videomae_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["labels"].shape == (2, 4, 96)  # half of 8 tubes masked, 2 x 4 x 4 pixels x 3 channels each
    assert np.abs(ours["mask_token_grad"]).sum() > 0


def test_tube_targets_are_normalised_per_patch_by_hand():
    torch = OURS.torch
    videos = torch.from_numpy(clips(n=1, frames=4, seed=9))
    targets = videomae_targets(OURS, videos).numpy()  # (1, 8, 96): (p0 p1 p2) then c
    by_channel = targets.reshape(1, 8, 32, 3)
    np.testing.assert_allclose(by_channel.mean(2), 0, atol=1e-12)
    np.testing.assert_allclose(by_channel.std(2, ddof=1), 1, rtol=1e-3)  # the 1e-6 beside a std of ~0.02
    # the first tube is frames 0-1, rows 0-3, columns 0-3; its first pixel (t, h, w) = (0, 0, 0)
    raw = videos.numpy()[0, :, :2, :4, :4] * np.array([0.229, 0.224, 0.225])[:, None, None, None] \
        + np.array([0.485, 0.456, 0.406])[:, None, None, None]
    patch = raw.reshape(3, 32).T
    np.testing.assert_allclose(by_channel[0, 0], (patch - patch.mean(0)) / (patch.std(0, ddof=1) + 1e-6), rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# MoCoGAN: content and motion latents (a GRUCell over time), a per-frame generator, a spectrally normalised
# Conv3d video discriminator and an image discriminator, trained by the hinge loss
# ----------------------------------------------------------------------------------------------


def mocogan(m):
    torch, nn = m.torch, m.nn
    SN = nn.utils.spectral_norm

    class VideoGenerator(nn.Module):
        def __init__(self, dim_z_content=4, dim_z_motion=3, video_length=4):
            super().__init__()
            self.dim_z_content, self.dim_z_motion, self.video_length = dim_z_content, dim_z_motion, video_length
            self.recurrent = nn.GRUCell(dim_z_motion, dim_z_motion)
            dim_z = dim_z_content + dim_z_motion
            self.main = nn.Sequential(
                nn.ConvTranspose2d(dim_z, 8, 4, 1, 0, bias=False), nn.BatchNorm2d(8), nn.ReLU(True),
                nn.ConvTranspose2d(8, 4, 4, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(True),
                nn.ConvTranspose2d(4, 3, 3, 1, 1, bias=False), nn.Tanh())

        def sample_z_m(self, num_samples, eps):
            h_t = [torch.zeros(num_samples, self.dim_z_motion, dtype=eps.dtype)]
            for frame_num in range(self.video_length):
                h_t.append(self.recurrent(eps[:, frame_num], h_t[-1]))
            z_m_t = [h_k.view(-1, 1, self.dim_z_motion) for h_k in h_t]
            return torch.cat(z_m_t[1:], dim=1).view(-1, self.dim_z_motion)

        def forward(self, z_content, eps):
            num_samples = z_content.shape[0]
            z_c = z_content.repeat_interleave(self.video_length, dim=0)  # the same content for every frame
            z = torch.cat([z_c, self.sample_z_m(num_samples, eps)], dim=1)
            h = self.main(z.view(z.size(0), z.size(1), 1, 1))
            h = h.view(num_samples, self.video_length, 3, h.size(2), h.size(3))
            return h.permute(0, 2, 1, 3, 4)  # (B, C, T, H, W)

    class VideoDiscriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                SN(nn.Conv3d(3, 8, 4, stride=(1, 2, 2), padding=(0, 1, 1), bias=False)), nn.LeakyReLU(0.2, inplace=True),
                SN(nn.Conv3d(8, 8, (1, 4, 4), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)), nn.LeakyReLU(0.2, inplace=True),
                SN(nn.Conv3d(8, 1, (1, 2, 2), stride=1, bias=False)))

        def forward(self, video):
            return self.main(video).flatten(1).mean(1)

    class ImageDiscriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(SN(nn.Conv2d(3, 8, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True),
                                      SN(nn.Conv2d(8, 1, 4, 1, 0)))

        def forward(self, image):
            return self.main(image).flatten()

    class MoCoGAN(nn.Module):
        def __init__(self):
            super().__init__()
            self.generator = VideoGenerator()
            self.video_discriminator = VideoDiscriminator()
            self.image_discriminator = ImageDiscriminator()

    return MoCoGAN()


def mocogan_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    gan = load(m, mocogan(m), weights).double()
    G, DV, DI = gan.generator, gan.video_discriminator, gan.image_discriminator
    real = torch.from_numpy(np.tanh(clips(n=2, frames=4, side=8, seed=14)))
    rng = np.random.default_rng(15)
    opt_g = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999), weight_decay=1e-5)
    opt_d = optim.Adam(list(DV.parameters()) + list(DI.parameters()), lr=2e-4, betas=(0.5, 0.999))
    history = []
    for step in range(2):
        z_content = torch.from_numpy(rng.standard_normal((2, 4)))
        eps = torch.from_numpy(rng.standard_normal((2, 4, 3)))
        frame_index = int(rng.integers(0, 4))
        # discriminators: hinge loss on real and generated videos and on single frames
        fake = G(z_content, eps)
        opt_d.zero_grad()
        d_loss = (F.relu(1.0 - DV(real)).mean() + F.relu(1.0 + DV(fake.detach())).mean()
                  + F.relu(1.0 - DI(real[:, :, frame_index])).mean() + F.relu(1.0 + DI(fake.detach()[:, :, frame_index])).mean())
        d_loss.backward()
        opt_d.step()
        # generator
        opt_g.zero_grad()
        g_loss = -DV(fake).mean() - DI(fake[:, :, frame_index]).mean()
        g_loss.backward()
        opt_g.step()
        history.append((d_loss.item(), g_loss.item()))
    return {"history": history, "fake": fake, "gru_grad": G.recurrent.weight_hh.grad,
            "sn_u": DV.main[0].weight_u, "sn_grad": DV.main[0].weight_orig.grad}


def test_mocogan_with_spectrally_normalised_conv3d_discriminator():
    weights = weights_of(mocogan)
    ours, _ = run_both(mocogan_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["fake"].shape == (2, 3, 4, 8, 8)


def test_spectral_norm_of_a_conv3d_converges_to_unit_norm_by_hand():
    """Each training-mode forward runs one power iteration: after enough of them the normalised Conv3d weight,
    flattened to (out, in * kt * kh * kw), has a largest singular value of 1."""
    torch = OURS.torch
    gan = load(OURS, mocogan(OURS), weights_of(mocogan)).double()
    conv = gan.video_discriminator.main[0]
    video = torch.zeros(1, 3, 4, 8, 8, dtype=torch.float64)
    for _ in range(60):
        conv(video)
    sigma = np.linalg.svd(conv.weight.detach().numpy().reshape(8, -1), compute_uv=False)[0]
    np.testing.assert_allclose(sigma, 1.0, rtol=1e-6)  # 1.14 after one iteration, 1.0001 after 30
