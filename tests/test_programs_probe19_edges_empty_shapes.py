# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Programs that meet special values and degenerate shapes (see tests/pytorch_programs.py), each run on chainrule and
on PyTorch from the same weights and data, comparing values, gradients, parameters and errors, and checked against
values known by hand. Degenerate shapes: Mask R-CNN's mask head over an image without proposals (``ConvTranspose2d``
on an empty batch, torchvision's ``mask_logits.sum() * 0`` loss, SGD with momentum and weight decay); a video
autoencoder (``Conv3d``, ``ConvTranspose3d``) fed a filtered batch with nothing left; a bucketed sequence classifier
whose bucket is empty (``LSTM``, a two-layer bidirectional ``GRU``, ``LSTMCell``/``GRUCell``/``RNNCell`` loops, and
the refusal of a sequence of length 0); a Transformer encoder-decoder stepped on an empty batch and on one with a
fully padded sequence (``TransformerEncoderLayer``, ``TransformerDecoderLayer``, ``MultiheadAttention`` without
weights, its float ``attn_mask``); a LoRA adapter of rank 0 (zero-size parameters under Adam, ``clip_grad_norm_`` of
orders 2 and inf)."""

import warnings

import numpy as np

from tests.program_errors import raises_alike

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Mask R-CNN's mask head: an image without proposals gives an empty batch of ROI features
# ----------------------------------------------------------------------------------------------


def make_mask_head(m):
    nn = m.nn

    class MaskRCNNHeads(nn.Sequential):
        def __init__(self, in_channels=4, layers=(8, 8)):
            blocks = []
            next_feature = in_channels
            for layer_features in layers:
                blocks += [nn.Conv2d(next_feature, layer_features, 3, padding=1), nn.ReLU(inplace=True)]
                next_feature = layer_features
            super().__init__(*blocks)

    class MaskRCNNPredictor(nn.Sequential):
        def __init__(self, in_channels=8, dim_reduced=6, num_classes=3):
            super().__init__()
            self.conv5_mask = nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)
            self.relu = nn.ReLU(inplace=True)
            self.mask_fcn_logits = nn.Conv2d(dim_reduced, num_classes, 1, 1, 0)

    return nn.Sequential(MaskRCNNHeads(), MaskRCNNPredictor())


def maskrcnn_loss(m, mask_logits, labels, mask_targets):
    F = m.F
    if mask_targets.numel() == 0:
        return mask_logits.sum() * 0  # torchvision's: no proposal, a zero loss still connected to the graph
    picked = mask_logits[m.torch.arange(labels.shape[0]), labels]
    return F.binary_cross_entropy_with_logits(picked, mask_targets)


def mask_head(m, weights):
    torch, optim = m.torch, m.optim
    rng = np.random.default_rng(0)
    model = load(m, make_mask_head(m), weights)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    batches = [  # (ROI features, labels, mask targets): the second image has no proposals
        (rng.standard_normal((3, 4, 5, 5)).astype(np.float32), np.array([0, 2, 1]),
         (rng.random((3, 10, 10)) < 0.4).astype(np.float32)),
        (np.zeros((0, 4, 5, 5), np.float32), np.zeros(0, np.int64), np.zeros((0, 10, 10), np.float32)),
        (rng.standard_normal((2, 4, 5, 5)).astype(np.float32), np.array([1, 1]),
         (rng.random((2, 10, 10)) < 0.4).astype(np.float32)),
    ]
    losses, empty = [], {}
    for features, labels, targets in batches:
        mask_logits = model(torch.tensor(features))
        loss = maskrcnn_loss(m, mask_logits, torch.tensor(labels), torch.tensor(targets))
        optimizer.zero_grad()
        loss.backward()
        if features.shape[0] == 0:
            empty = {"logits": mask_logits, "loss": loss,
                     "grads": {k: p.grad.clone() for k, p in model.named_parameters()}}
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "empty": empty, "weights": dict(model.state_dict())}


def test_mask_head_over_an_image_without_proposals():
    weights = weights_of(make_mask_head)
    ours, _ = run_both(mask_head, weights, rtol=1e-5, atol=1e-6)
    assert ours["empty"]["logits"].shape == (0, 3, 10, 10) and ours["losses"][1] == 0.0
    assert all((g == 0).all() for g in ours["empty"]["grads"].values())  # every weight's gradient exists, all 0


# ----------------------------------------------------------------------------------------------
# A video autoencoder fed a filtered batch with nothing left
# ----------------------------------------------------------------------------------------------


def make_video_autoencoder(m):
    nn = m.nn
    return nn.Sequential(nn.Conv3d(2, 4, 3, stride=(1, 2, 2), padding=1), nn.GELU(),
                         nn.Conv3d(4, 4, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU(),
                         nn.ConvTranspose3d(4, 2, (1, 2, 2), stride=(1, 2, 2)))


def video_autoencoder(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(1)
    clips = torch.tensor(rng.standard_normal((5, 2, 3, 6, 6)).astype(np.float32))
    motion = torch.tensor([0.2, 0.05, 0.9, 0.1, 0.3])
    model = load(m, make_video_autoencoder(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for threshold in (0.25, 2.0, 0.0):  # the second threshold keeps no clip
        keep = motion > threshold
        batch = clips[keep]
        recon = model(batch)
        loss = F.mse_loss(recon, batch, reduction="sum") / max(1, batch.shape[0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((tuple(recon.shape), loss.item()))
    return {"shapes": str([h[0] for h in history]), "losses": [h[1] for h in history],
            "weights": dict(model.state_dict())}


def test_video_autoencoder_on_an_empty_batch():
    weights = weights_of(make_video_autoencoder)
    ours, _ = run_both(video_autoencoder, weights, rtol=2e-5, atol=2e-6)
    assert "(0, 2, 3, 6, 6)" in ours["shapes"] and ours["losses"][1] == 0.0


# ----------------------------------------------------------------------------------------------
# A bucketed sequence classifier whose bucket is empty; recurrent cells stepped over no sequences
# ----------------------------------------------------------------------------------------------


def make_bucketed(m):
    nn = m.nn

    class Bucketed(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(3, 5, batch_first=True)
            self.gru = nn.GRU(5, 4, num_layers=2, bidirectional=True, batch_first=True)
            self.cell = nn.LSTMCell(3, 5)
            self.gru_cell = nn.GRUCell(5, 5)
            self.rnn_cell = nn.RNNCell(5, 5, nonlinearity="relu")
            self.head = nn.Linear(8 + 5, 2)

        def forward(self, x):
            y, (h, c) = self.lstm(x)
            z, h_n = self.gru(y)
            hx = cx = x.new_zeros(x.shape[0], 5)
            for t in range(x.shape[1]):
                hx, cx = self.cell(x[:, t], (hx, cx))
                hx = self.rnn_cell(self.gru_cell(hx, hx), hx)
            return self.head(m.torch.cat([z[:, -1], hx], dim=1))

    return Bucketed()


def bucketed(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(2)
    lengths = np.array([3, 3, 6, 6, 6])
    x = rng.standard_normal((5, 6, 3)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1])
    model = load(m, make_bucketed(m), weights)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    out = {}
    for length in (3, 4, 6):  # no sequence has length 4: its bucket is empty
        members = np.nonzero(lengths == length)[0]
        xb = torch.tensor(x[members, :length])
        logits = model(xb)
        loss = F.cross_entropy(logits, torch.tensor(y[members]), reduction="sum")
        optimizer.zero_grad()
        loss.backward()
        out[f"bucket{length}"] = {"logits": logits, "loss": loss,
                                  "grads": {k: p.grad.clone() for k, p in model.named_parameters()}}
        optimizer.step()
    out["weights"] = dict(model.state_dict())
    return out


def test_bucketed_recurrent_classifier_with_an_empty_bucket():
    weights = weights_of(make_bucketed)
    ours, _ = run_both(bucketed, weights, rtol=2e-5, atol=2e-6)
    empty = ours["bucket4"]
    assert empty["logits"].shape == (0, 2) and empty["loss"] == 0.0
    assert all((g == 0).all() for g in empty["grads"].values())


def test_recurrent_layers_refuse_a_sequence_of_length_zero():
    def run(m, make, shape):
        return make(m)(m.torch.zeros(*shape))

    for make, shape in ((lambda m: m.nn.LSTM(3, 4), (0, 2, 3)), (lambda m: m.nn.GRU(3, 4, batch_first=True), (2, 0, 3)),
                        (lambda m: m.nn.RNN(3, 4), (0, 3))):
        raises_alike(run, "Expected sequence length to be larger than 0 in RNN", make, shape, kind=RuntimeError)
    # an empty batch of sequences with steps is not refused
    assert run(OURS, lambda m: m.nn.RNN(3, 4, batch_first=True), (0, 2, 3))[0].shape == (0, 2, 4)


# ----------------------------------------------------------------------------------------------
# A Transformer stepped on an empty batch, and on one with a fully padded sequence
# ----------------------------------------------------------------------------------------------


def make_seq2seq(m):
    nn = m.nn

    class Seq2Seq(nn.Module):
        def __init__(self, d=8):
            super().__init__()
            layer = nn.TransformerEncoderLayer(d, 2, 16, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.decoder = nn.TransformerDecoderLayer(d, 2, 16, dropout=0.0, batch_first=True, norm_first=True)
            self.pool = nn.MultiheadAttention(d, 2, batch_first=True)
            self.out = nn.Linear(d, 3)

        def forward(self, src, tgt, src_pad, tgt_mask):
            # (no mask where nothing is padded: PyTorch's own attention cannot reshape a merged mask of no batch)
            memory = self.encoder(src, src_key_padding_mask=src_pad if src_pad.any() else None)
            h = self.decoder(tgt, memory, tgt_mask=tgt_mask)
            pooled, _ = self.pool(h, h, h, attn_mask=tgt_mask, need_weights=False)
            return self.out(pooled)

    return Seq2Seq()


def seq2seq(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(3)
    model = load(m, make_seq2seq(m), weights)
    # (SGD: Adam would scale the key bias's gradient, exactly 0 but for roundoff, up to whole steps)
    optimizer = optim.SGD(model.parameters(), lr=1e-2)
    tgt_mask = nn.Transformer.generate_square_subsequent_mask(4)
    results = {}
    for name, n in (("empty", 0), ("full", 3)):
        src = torch.tensor(rng.standard_normal((n, 5, 8)).astype(np.float32))
        tgt = torch.tensor(rng.standard_normal((n, 4, 8)).astype(np.float32))
        src_pad = torch.zeros(n, 5, dtype=torch.bool)
        if n:
            src_pad[1, 3:] = True
        labels = torch.tensor(rng.integers(0, 3, (n, 4)))
        logits = model(src, tgt, src_pad, tgt_mask)
        loss = F.cross_entropy(logits.reshape(-1, 3), labels.reshape(-1), reduction="sum")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        results[name] = {"logits": logits, "loss": loss}
    results["weights"] = dict(model.state_dict())
    return results


def test_transformer_on_an_empty_batch():
    weights = weights_of(make_seq2seq)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (PyTorch's notes on nested tensors and mask types)
        ours, _ = run_both(seq2seq, weights, rtol=5e-5, atol=5e-6)
    assert ours["empty"]["logits"].shape == (0, 4, 3) and ours["empty"]["loss"] == 0.0
    assert np.isfinite(ours["full"]["logits"]).all()


def padded_attention(m, weights):
    torch = m.torch
    torch.manual_seed(0)
    mha = m.nn.MultiheadAttention(8, 2, batch_first=True)
    mha.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.standard_normal((3, 4, 8)).astype(np.float32), requires_grad=True)
    pad = torch.tensor([[False, False, True, True], [True, True, True, True], [False, False, False, False]])
    bias = torch.zeros(4, 4).masked_fill(torch.eye(4, dtype=torch.bool), -1.0)  # a float attn_mask beside it
    outs = {}
    for need_weights in (True, False):
        out, w = mha(x, x, x, key_padding_mask=pad, attn_mask=bias, need_weights=need_weights)
        loss = out.nan_to_num().pow(2).sum()  # the fully padded sequence's rows are NaN: kept out of the loss
        x.grad = None
        loss.backward()
        outs[str(need_weights)] = {"out": out, "weights": w, "x_grad": x.grad}
    return outs


def test_attention_with_a_fully_padded_sequence_with_and_without_weights():
    weights = {k: v.numpy().copy() for k, v in OURS.nn.MultiheadAttention(8, 2, batch_first=True).state_dict().items()}
    ours, _ = run_both(padded_attention, weights, rtol=2e-5, atol=2e-6)
    for result in ours.values():
        assert np.isfinite(result["out"][[0, 2]]).all() and np.isfinite(result["x_grad"][[0, 2]]).all()
    # the fully padded sequence: NaN through the explicit softmax of the weights, 0 from PyTorch 2's fused
    # attention (which writes a row with no key left as zeros)
    assert np.isnan(ours["True"]["out"][1]).all() and np.isnan(ours["True"]["weights"][1]).all()
    assert (ours["False"]["out"][1] == 0).all()


# ----------------------------------------------------------------------------------------------
# A LoRA adapter of rank 0: zero-size parameters in the optimiser and in gradient clipping
# ----------------------------------------------------------------------------------------------


def make_lora(m, rank=0):
    nn = m.nn

    class LoRALinear(nn.Module):
        def __init__(self, base, rank, alpha=4):
            super().__init__()
            self.base = base
            self.lora_A = nn.Parameter(m.torch.zeros(rank, base.in_features))
            self.lora_B = nn.Parameter(m.torch.zeros(base.out_features, rank))
            self.scaling = alpha / max(rank, 1)

        def forward(self, x):
            return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling

    return nn.Sequential(LoRALinear(nn.Linear(4, 6), rank), nn.ReLU(), LoRALinear(nn.Linear(6, 2), rank))


def lora(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(6)
    x = torch.tensor(rng.standard_normal((10, 4)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 2, 10))
    model = load(m, make_lora(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.01)
    norms = []
    for step in range(3):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        norms.append(nn.utils.clip_grad_norm_(model.parameters(), 0.5))
        optimizer.step()
    sizes = [tuple(p.shape) for p in model.parameters()]
    states = [tuple(optimizer.state[p]["exp_avg"].shape) for p in model.parameters()]
    return {"norms": norms, "sizes": str(sizes), "states": str(states), "weights": dict(model.state_dict())}


def test_lora_adapter_of_rank_zero():
    weights = weights_of(make_lora)
    ours, _ = run_both(lora, weights, rtol=2e-5, atol=2e-6)
    assert "(0, 4)" in ours["states"] and "(6, 0)" in ours["states"]


def lora_inf_norm(m, weights):
    model = load(m, make_lora(m), weights)
    m.F.cross_entropy(model(m.torch.ones(2, 4)), m.torch.tensor([0, 1])).backward()
    return m.nn.utils.clip_grad_norm_(model.parameters(), 0.5, norm_type="inf")


def test_lora_adapter_of_rank_zero_refuses_the_inf_norm():
    weights = weights_of(make_lora)
    raises_alike(lora_inf_norm, "_foreach_norm cannot compute the infinity norm on an empty tensor", weights,
                 kind=RuntimeError)
