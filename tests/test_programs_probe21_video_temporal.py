# ruff: noqa: B007, E501, F402  (the programs are kept as their authors wrote them)
"""Video and spatio-temporal programs, run as tests/probe21_video_common.py says. Time itself: MoViNet-style causal
``Conv3d`` (time padded on the left by ``F.pad``, a cumulative-average squeeze-excitation) whose chunked streaming
with cached buffers equals the whole clip; MS-TCN action segmentation (dilated ``Conv1d`` stages, masks of padded
frames, the truncated smoothing loss, ``ignore_index``); temporal cycle-consistency (soft nearest neighbours,
cycle-back regression with its variance); a clip-sampling data pipeline (TSN segment jitter, seeded ``DataLoader``
shuffling, ``WeightedRandomSampler``, ``random_split`` by fractions)."""

import numpy as np

from .probe21_video_common import clips
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# MoViNet-style causal convolutions: streaming frame by frame with a cached buffer
# ----------------------------------------------------------------------------------------------


def causal_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class CausalConv3d(nn.Module):
        """Pads time on the left only, so an output frame sees only the present and the past; in streaming mode
        the padding is the previous call's last frames instead of zeros."""

        def __init__(self, in_channels, out_channels, kernel_size, stride=(1, 1, 1), dilation=(1, 1, 1), groups=1):
            super().__init__()
            self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation,
                                  padding=(0, dilation[1] * (kernel_size[1] // 2), dilation[2] * (kernel_size[2] // 2)),
                                  groups=groups)
            self.time_pad = dilation[0] * (kernel_size[0] - 1)
            self.stream_buffer = None

        def reset(self):
            self.stream_buffer = None

        def forward(self, x, stream=False):
            if not stream:
                return self.conv(F.pad(x, (0, 0, 0, 0, self.time_pad, 0)))
            if self.stream_buffer is None:
                self.stream_buffer = torch.zeros_like(x[:, :, :1]).repeat(1, 1, self.time_pad, 1, 1)
            x = torch.cat([self.stream_buffer, x], dim=2)
            self.stream_buffer = x[:, :, -self.time_pad:].detach()
            return self.conv(x)

    class CausalModule(nn.Module):
        """The cumulative average over time (MoViNet's causal squeeze-excitation) by cumsum / frame count."""

        def __init__(self, channels):
            super().__init__()
            self.fc = nn.Conv3d(channels, channels, 1)
            self.sum_state = None
            self.count = 0

        def reset(self):
            self.sum_state, self.count = None, 0

        def forward(self, x, stream=False):
            frame_means = x.mean(dim=(3, 4), keepdim=True)
            cumsum = frame_means.cumsum(dim=2)
            if stream and self.sum_state is not None:
                cumsum = cumsum + self.sum_state
            counts = torch.arange(1, x.shape[2] + 1, dtype=x.dtype).view(1, 1, -1, 1, 1)
            if stream:
                counts = counts + self.count
                self.sum_state = cumsum[:, :, -1:].detach()
                self.count += x.shape[2]
            return x * torch.sigmoid(self.fc(cumsum / counts))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = CausalConv3d(3, 8, (3, 3, 3), stride=(1, 2, 2))
            self.c2 = CausalConv3d(8, 8, (3, 3, 3), dilation=(2, 1, 1), groups=8)
            self.se = CausalModule(8)
            self.head = nn.Conv3d(8, 2, 1)

        def reset(self):
            for module in self.modules():
                if module is not self and hasattr(module, "reset"):
                    module.reset()

        def forward(self, x, stream=False):
            x = F.hardswish(self.c1(x, stream))
            x = self.se(F.hardswish(self.c2(x, stream)), stream)
            return self.head(x).mean(dim=(3, 4))  # per-frame logits (B, classes, T)

    return Net()


def causal_streaming(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, causal_net(m), weights).double()
    x = torch.from_numpy(clips(n=2, frames=6, seed=4))
    optimizer = optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9)
    labels = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        whole = model(x)
        model.reset()
        streamed = torch.cat([model(chunk, stream=True) for chunk in x.split([1, 2, 3], dim=2)], dim=2)
        model.reset()
        prefix = model(x[:, :, :3])
    return {"history": history, "whole": whole, "streamed": streamed, "prefix": prefix}


def test_causal_conv3d_streaming_equals_the_whole_clip():
    weights = weights_of(causal_net)
    ours, _ = run_both(causal_streaming, weights, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["streamed"], ours["whole"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["prefix"], ours["whole"][:, :, :3], rtol=1e-10, atol=1e-12)  # causal


# ----------------------------------------------------------------------------------------------
# MS-TCN action segmentation: dilated temporal convolutions, masks of padded frames, the truncated smoothing loss
# ----------------------------------------------------------------------------------------------


def ms_tcn(m):
    torch, nn, F = m.torch, m.nn, m.F

    class DilatedResidualLayer(nn.Module):
        def __init__(self, dilation, in_channels, out_channels):
            super().__init__()
            self.conv_dilated = nn.Conv1d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
            self.conv_1x1 = nn.Conv1d(out_channels, out_channels, 1)
            self.dropout = nn.Dropout()

        def forward(self, x, mask):
            out = F.relu(self.conv_dilated(x))
            out = self.conv_1x1(out)
            out = self.dropout(out)
            return (x + out) * mask[:, 0:1, :]

    class SingleStageModel(nn.Module):
        def __init__(self, num_layers, num_f_maps, dim, num_classes):
            super().__init__()
            self.conv_1x1 = nn.Conv1d(dim, num_f_maps, 1)
            self.layers = nn.ModuleList([DilatedResidualLayer(2 ** i, num_f_maps, num_f_maps) for i in range(num_layers)])
            self.conv_out = nn.Conv1d(num_f_maps, num_classes, 1)

        def forward(self, x, mask):
            out = self.conv_1x1(x)
            for layer in self.layers:
                out = layer(out, mask)
            return self.conv_out(out) * mask[:, 0:1, :]

    class MultiStageModel(nn.Module):
        def __init__(self, num_stages=3, num_layers=3, num_f_maps=8, dim=6, num_classes=3):
            super().__init__()
            self.stage1 = SingleStageModel(num_layers, num_f_maps, dim, num_classes)
            self.stages = nn.ModuleList([SingleStageModel(num_layers, num_f_maps, num_classes, num_classes)
                                         for s in range(num_stages - 1)])

        def forward(self, x, mask):
            out = self.stage1(x, mask)
            outputs = out.unsqueeze(0)
            for s in self.stages:
                out = s(F.softmax(out, dim=1) * mask[:, 0:1, :], mask)
                outputs = torch.cat((outputs, out.unsqueeze(0)), dim=0)
            return outputs

    return MultiStageModel()


def segmentation_batch(m, lengths=(12, 9), dim=6, num_classes=3, seed=12):
    """Frame features of videos of different lengths padded to the longest, with labels -100 and a 0 mask there
    (as MS-TCN's BatchGenerator pads)."""
    torch = m.torch
    rng = np.random.default_rng(seed)
    longest = max(lengths)
    batch_input = np.zeros((len(lengths), dim, longest))
    batch_target = np.full((len(lengths), longest), -100, dtype=np.int64)
    mask = np.zeros((len(lengths), num_classes, longest))
    for i, length in enumerate(lengths):
        cuts = np.sort(rng.choice(np.arange(2, length - 1), num_classes - 1, replace=False))
        labels = np.searchsorted(cuts, np.arange(length), side="right")
        batch_target[i, :length] = labels
        batch_input[i, :, :length] = 0.5 * rng.standard_normal((dim, length)) + labels[None]
        mask[i, :, :length] = 1
    return torch.from_numpy(batch_input), torch.from_numpy(batch_target), torch.from_numpy(mask)


def ms_tcn_training(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, ms_tcn(m), weights).double()
    model.eval()  # the dropout masks are drawn differently: the graph and the losses are what is compared
    ce = nn.CrossEntropyLoss(ignore_index=-100)
    mse = nn.MSELoss(reduction='none')
    batch_input, batch_target, mask = segmentation_batch(m)
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    num_classes = 3
    history = []
    for step in range(3):
        optimizer.zero_grad()
        predictions = model(batch_input, mask)
        loss = 0
        for p in predictions:
            loss += ce(p.transpose(2, 1).contiguous().view(-1, num_classes), batch_target.view(-1))
            loss += 0.15 * torch.mean(torch.clamp(mse(F.log_softmax(p[:, :, 1:], dim=1),
                                                      F.log_softmax(p.detach()[:, :, :-1], dim=1)), min=0, max=16)
                                      * mask[:, :, 1:])
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        predictions = model(batch_input, mask)
        _, predicted = torch.max(predictions[-1].data, 1)
        correct = ((predicted == batch_target).float() * mask[:, 0, :].squeeze(1)).sum().item()
        total = torch.sum(mask[:, 0, :]).item()
    return {"history": history, "predictions": predictions, "accuracy": correct / total,
            "grad": model.stage1.layers[2].conv_dilated.weight.grad}


def test_ms_tcn_action_segmentation_with_padded_videos():
    weights = weights_of(ms_tcn)
    ours, _ = run_both(ms_tcn_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["predictions"].shape == (3, 2, 3, 12)
    np.testing.assert_array_equal(ours["predictions"][:, 1, :, 9:], 0)  # masked frames of the shorter video


def test_padding_reaches_a_stage_only_through_its_receptive_field_by_hand():
    """The stage's first 1x1 convolution is not masked, so a padded frame holds its bias, which the dilated layers
    (dilations 1, 2, 4: a reach of 7 frames) carry back into the video: padding a 9-frame video to 12 changes the
    first stage's outputs only within 7 frames of its end."""
    torch = OURS.torch
    model = load(OURS, ms_tcn(OURS), weights_of(ms_tcn)).double().eval()
    batch_input, _, mask = segmentation_batch(OURS)
    with torch.no_grad():
        padded = model.stage1(batch_input[1:], mask[1:])[0, :, :9].numpy()
        alone = model.stage1(batch_input[1:, :, :9], mask[1:, :, :9])[0].numpy()
    np.testing.assert_allclose(padded[:, :2], alone[:, :2], rtol=1e-12, atol=1e-12)
    assert not np.allclose(padded[:, 2:], alone[:, 2:])


# ----------------------------------------------------------------------------------------------
# Temporal cycle-consistency (TCC): soft nearest neighbours between two videos and cycle-back regression
# ----------------------------------------------------------------------------------------------


def tcc_encoder(m):
    nn = m.nn
    return nn.Sequential(nn.Conv3d(3, 8, (3, 3, 3), padding=(1, 1, 1)), nn.BatchNorm3d(8), nn.ReLU(),
                         nn.AdaptiveMaxPool3d((None, 1, 1)), nn.Flatten(2), nn.Conv1d(8, 8, 1))


def pairwise_l2_distance(m, embs1, embs2):
    torch = m.torch
    norm1 = torch.sum(torch.square(embs1), dim=1).reshape(-1, 1)
    norm2 = torch.sum(torch.square(embs2), dim=1).reshape(1, -1)
    return torch.maximum(norm1 + norm2 - 2.0 * torch.matmul(embs1, embs2.t()), torch.tensor(0.0, dtype=embs1.dtype))


def get_scaled_similarity(m, embs1, embs2, similarity_type, temperature):
    channels = embs1.shape[1]
    if similarity_type == 'cosine':
        similarity = m.torch.matmul(embs1, embs2.t())
    else:
        similarity = -1.0 * pairwise_l2_distance(m, embs1, embs2)
    return similarity / channels / temperature


def align_pair_of_sequences(m, embs1, embs2, similarity_type, temperature):
    torch, F = m.torch, m.F
    max_num_steps = embs1.shape[0]
    sim_12 = get_scaled_similarity(m, embs1, embs2, similarity_type, temperature)
    softmaxed_sim_12 = F.softmax(sim_12, dim=1)
    nn_embs = torch.matmul(softmaxed_sim_12, embs2)  # soft nearest neighbours of embs1 in embs2
    sim_21 = get_scaled_similarity(m, nn_embs, embs1, similarity_type, temperature)
    logits = sim_21
    labels = F.one_hot(torch.arange(max_num_steps), max_num_steps).to(embs1.dtype)
    return logits, labels


def regression_loss(m, logits, labels, num_steps, steps, seq_lens, loss_type, normalize_indices, variance_lambda):
    """TCC's cycle-back regression: the cycled-back soft index should land on the frame's own index, weighted by
    the inverse of its variance ('regression_mse_var')."""
    torch = m.torch
    if normalize_indices:
        float_seq_lens = seq_lens.to(logits.dtype)
        tile_seq_lens = float_seq_lens.unsqueeze(1).repeat(1, num_steps)
        steps = steps.to(logits.dtype) / tile_seq_lens
    else:
        steps = steps.to(logits.dtype)
    beta = torch.softmax(logits, dim=1)
    true_time = torch.sum(steps * labels, dim=1)
    pred_time = torch.sum(steps * beta, dim=1)
    if loss_type in ['regression_mse', 'regression_mse_var']:
        if 'var' in loss_type:
            pred_time_tiled = pred_time.unsqueeze(1).repeat(1, num_steps)
            pred_time_variance = torch.sum(torch.square(steps - pred_time_tiled) * beta, dim=1)
            pred_time_log_var = torch.log(pred_time_variance)
            squared_error = torch.square(true_time - pred_time)
            return torch.mean(torch.exp(-pred_time_log_var) * squared_error + variance_lambda * pred_time_log_var)
        return torch.mean(torch.square(true_time - pred_time))
    raise ValueError(f'Unidentified loss_type {loss_type}')


def tcc_training(m, weights):
    torch, optim = m.torch, m.optim
    model = load(m, tcc_encoder(m), weights).double()
    videos = torch.from_numpy(clips(n=2, frames=6, seed=13))
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    num_steps = 6
    steps = torch.arange(num_steps).unsqueeze(0)
    seq_lens = torch.tensor([num_steps])
    history = []
    for step in range(3):
        optimizer.zero_grad()
        embs = model(videos).transpose(1, 2)  # (B, T, D)
        loss = 0
        for i, j in [(0, 1), (1, 0)]:
            for similarity_type, loss_type in [('l2', 'regression_mse_var'), ('cosine', 'regression_mse')]:
                logits, labels = align_pair_of_sequences(m, embs[i], embs[j], similarity_type, temperature=0.1)
                loss = loss + regression_loss(m, logits, labels, num_steps, steps.repeat(num_steps, 1),
                                              seq_lens.repeat(num_steps), loss_type, True, 0.001)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "embs": embs, "grad": model[0].weight.grad}


def test_temporal_cycle_consistency():
    weights = weights_of(tcc_encoder)
    ours, _ = run_both(tcc_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["embs"].shape == (2, 6, 8)


def test_a_video_cycles_back_to_itself_at_low_temperature_by_hand():
    """Aligning a sequence of well-separated embeddings with itself at a low temperature, the soft nearest
    neighbour of each step is itself and the cycle lands back on it: logits peak on the diagonal."""
    torch = OURS.torch
    embs = torch.from_numpy(np.eye(5) * 3.0)
    logits, labels = align_pair_of_sequences(OURS, embs, embs, 'l2', temperature=0.01)
    np.testing.assert_array_equal(logits.numpy().argmax(1), np.arange(5))
    np.testing.assert_array_equal(labels.numpy(), np.eye(5))


# ----------------------------------------------------------------------------------------------
# A clip-sampling data pipeline: TSN's segment jitter, uniform test-time sampling, seeded samplers
# ----------------------------------------------------------------------------------------------


VIDEO_LENGTHS = [9, 12, 7, 16, 10]


def video_pipeline(m):
    torch, data = m.torch, m.data
    videos = [np.random.default_rng(i).standard_normal((n, 3, 2, 2)).astype(np.float32)
              for i, n in enumerate(VIDEO_LENGTHS)]

    class VideoDataset(data.Dataset):
        def __init__(self, videos, num_segments=4, train=True):
            self.videos, self.num_segments, self.train = videos, num_segments, train

        def __len__(self):
            return len(self.videos)

        def __getitem__(self, idx):
            video = torch.from_numpy(self.videos[idx])  # (T, C, H, W)
            num_frames = video.shape[0]
            if self.train:  # one random frame from each of num_segments equal segments
                average_duration = num_frames / self.num_segments
                offsets = (torch.arange(self.num_segments) * average_duration
                           + torch.rand(self.num_segments) * average_duration).long()
            else:  # the segments' centres
                offsets = torch.linspace(0, num_frames - 1, self.num_segments).round().long()
            clip = video.index_select(0, offsets)
            if self.train and torch.rand(1).item() < 0.5:
                clip = clip.flip(-1)  # horizontal flip of the whole clip
            return clip.permute(1, 0, 2, 3), offsets  # (C, T, H, W)

    torch.manual_seed(3)
    loader = data.DataLoader(VideoDataset(videos), batch_size=2, shuffle=True,
                             generator=torch.Generator().manual_seed(7))
    batches = []
    for epoch in range(2):
        for clips, offsets in loader:
            batches.append((clips, offsets))
    test_loader = data.DataLoader(VideoDataset(videos, train=False), batch_size=3)
    test_offsets = torch.cat([offsets for _, offsets in test_loader])
    # class-balanced clip sampling by weights, and a seeded train/val split
    sampler = data.WeightedRandomSampler([0.1, 0.5, 0.2, 0.1, 0.1], num_samples=8, replacement=True,
                                         generator=torch.Generator().manual_seed(1))
    train_set, val_set = data.random_split(range(len(videos)), [0.6, 0.4], generator=torch.Generator().manual_seed(42))
    return {"batches": batches, "test_offsets": test_offsets, "weighted": torch.tensor(list(sampler)),
            "split": [list(train_set), list(val_set)]}


def test_clip_sampling_pipeline():
    ours, _ = run_both(video_pipeline)
    for clips, offsets in ours["batches"]:
        assert clips.shape[1:] == (3, 4, 2, 2)
        assert (np.diff(offsets, axis=1) >= 0).all()  # frames in temporal order
    lengths = np.array(VIDEO_LENGTHS)
    # uniform test-time sampling by hand: round(linspace(0, T - 1, 4))
    expected = np.concatenate([np.round(np.linspace(0, n - 1, 4)) for n in lengths]).reshape(5, 4)
    np.testing.assert_array_equal(ours["test_offsets"], expected)
    assert sorted(ours["split"][0] + ours["split"][1]) == list(range(5)) and len(ours["split"][0]) == 3
