# ruff: noqa: E501  (the programs are kept as their authors wrote them)
"""Paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them (labml_nn/...), run
as tests/probe21_papers_common.py says: transformers whose attention is replaced or varied: fast weights (DPFP),
Primer EZ, gMLP, AFT-local, Hourglass; FNet with label smoothing."""

import numpy as np

from .probe21_papers_common import labml_transformers, sequence_data, train_few
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/{fast_weights,primer_ez,gmlp,aft,hour_glass}: attention variants
# ----------------------------------------------------------------------------------------------


def make_attention_variants(m):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)

    class DPFP(nn.Module):
        def __init__(self, nu=1, eps=1e-6):
            super().__init__()
            self.nu = nu
            self.relu = nn.ReLU()
            self.eps = eps

        def forward(self, k):
            k = self.dpfp(k)
            return k / (torch.sum(k, dim=-1, keepdim=True) + self.eps)

        def dpfp(self, k):
            x = self.relu(torch.cat([k, -k], dim=-1))
            x_rolled = [x.roll(shifts=i, dims=-1) for i in range(1, self.nu + 1)]
            x_rolled = torch.cat(x_rolled, dim=-1)
            x_repeat = torch.cat([x] * self.nu, dim=-1)
            return x_repeat * x_rolled

    class FastWeightsAttention(nn.Module):
        def __init__(self, heads, d_model, dropout_prob, phi):
            super().__init__()
            self.d_k = d_model // heads
            self.heads = heads
            self.query = t.PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=False)
            self.key = t.PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=False)
            self.value = t.PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=False)
            self.interpolation_weight = nn.Sequential(
                t.PrepareForMultiHeadAttention(d_model, heads, 1, bias=False),
                nn.Sigmoid()
            )
            self.phi = phi
            self.output = nn.Linear(d_model, d_model)
            self.dropout = nn.Dropout(dropout_prob)

        def forward(self, x):
            seq_len = x.shape[0]
            query = self.phi(self.query(x))
            key = self.phi(self.key(x))
            value = self.value(x)
            beta = self.interpolation_weight(x)
            weights = key.new_zeros((key.shape[1], key.shape[2], value.shape[3], key.shape[3]))
            outputs = []
            for i in range(seq_len):
                value_existing = torch.einsum('bhvk,bhk->bhv', weights, key[i])
                weights = weights + torch.einsum('bhv,bhk->bhvk', beta[i] * (value[i] - value_existing), key[i])
                y = torch.einsum('bhvk,bhk->bhv', weights, query[i])
                outputs.append(y.reshape(y.shape[0], -1))
            x = torch.stack(outputs)
            return self.output(x)

    class SquaredReLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x):
            x = self.relu(x)
            return x * x

    class SpatialDepthWiseConvolution(nn.Module):
        def __init__(self, d_k, kernel_size=3):
            super().__init__()
            self.kernel_size = kernel_size
            self.conv = nn.Conv1d(in_channels=d_k, out_channels=d_k, kernel_size=(kernel_size,),
                                  padding=(kernel_size - 1,), groups=d_k)

        def forward(self, x):
            seq_len, batch_size, heads, d_k = x.shape
            x = x.permute(1, 2, 3, 0)
            x = x.view(batch_size * heads, d_k, seq_len)
            x = self.conv(x)
            x = x[:, :, :-(self.kernel_size - 1)]
            x = x.view(batch_size, heads, d_k, seq_len)
            x = x.permute(3, 0, 1, 2)
            return x

    class MultiDConvHeadAttention(t.MultiHeadAttention):
        def __init__(self, heads, d_model, dropout_prob=0.1):
            super().__init__(heads, d_model, dropout_prob)
            self.query = nn.Sequential(self.query, SpatialDepthWiseConvolution(self.d_k))
            self.key = nn.Sequential(self.key, SpatialDepthWiseConvolution(self.d_k))
            self.value = nn.Sequential(self.value, SpatialDepthWiseConvolution(self.d_k))

    class SpacialGatingUnit(nn.Module):
        def __init__(self, d_z, seq_len):
            super().__init__()
            self.norm = nn.LayerNorm([d_z // 2])
            self.weight = nn.Parameter(torch.zeros(seq_len, seq_len).uniform_(-0.01, 0.01), requires_grad=True)
            self.bias = nn.Parameter(torch.ones(seq_len), requires_grad=True)

        def forward(self, z, mask=None):
            seq_len = z.shape[0]
            z1, z2 = torch.chunk(z, 2, dim=-1)
            if mask is not None:
                assert mask.shape[0] == 1 or mask.shape[0] == seq_len
                assert mask.shape[1] == seq_len
                assert mask.shape[2] == 1
                mask = mask[:, :, 0]
            z2 = self.norm(z2)
            weight = self.weight[:seq_len, :seq_len]
            if mask is not None:
                weight = weight * mask
            z2 = torch.einsum('ij,jbd->ibd', weight, z2) + self.bias[:seq_len, None, None]
            return z1 * z2

    class GMLPBlock(nn.Module):
        def __init__(self, d_model, d_ffn, seq_len):
            super().__init__()
            self.norm = nn.LayerNorm([d_model])
            self.activation = nn.GELU()
            self.proj1 = nn.Linear(d_model, d_ffn)
            self.sgu = SpacialGatingUnit(d_ffn, seq_len)
            self.proj2 = nn.Linear(d_ffn // 2, d_model)
            self.size = d_model

        def forward(self, *, x, mask=None):
            shortcut = x
            x = self.norm(x)
            z = self.activation(self.proj1(x))
            z = self.sgu(z, mask)
            z = self.proj2(z)
            return z + shortcut

    class AFTLocal(nn.Module):
        def __init__(self, d_model, seq_len, local_window_size, bias=True):
            super().__init__()
            self.local_window_size = local_window_size
            self.query = nn.Linear(d_model, d_model, bias=bias)
            self.key = nn.Linear(d_model, d_model, bias=bias)
            self.value = nn.Linear(d_model, d_model, bias=bias)
            self.pos_bias = nn.Parameter(torch.zeros(seq_len, seq_len), requires_grad=True)
            self.local_mask = nn.Parameter(self.create_local_mask(seq_len, local_window_size), requires_grad=False)
            self.activation = nn.Sigmoid()
            self.output = nn.Linear(d_model, d_model)

        @staticmethod
        def create_local_mask(seq_len, local_window_size):
            local_mask = torch.ones(seq_len, seq_len, dtype=torch.bool)
            local_mask = torch.tril(local_mask, local_window_size - 1)
            local_mask = torch.triu(local_mask, -(local_window_size - 1))
            return local_mask

        def forward(self, *, query, key, value, mask=None):
            seq_len, _, _ = query.shape
            if mask is not None:
                assert mask.shape[0] == 1 or mask.shape[0] == query.shape[0]
                assert mask.shape[1] == key.shape[0]
                assert mask.shape[2] == 1 or mask.shape[2] == query.shape[1]
            query = self.query(query)
            key = self.key(key)
            value = self.value(value)
            pos_bias = self.pos_bias[:seq_len, :seq_len] * self.local_mask[:seq_len, :seq_len]
            pos_bias = pos_bias.unsqueeze(-1)
            pos_bias.masked_fill_(~mask, float('-inf'))
            max_key = key.max(dim=0, keepdims=True)[0]
            max_pos_bias = pos_bias.max(dim=1, keepdims=True)[0]
            exp_key = torch.exp(key - max_key)
            exp_pos_bias = torch.exp(pos_bias - max_pos_bias)
            num = torch.einsum('ijb,jbd->ibd', exp_pos_bias, exp_key * value)
            den = torch.einsum('ijb,jbd->ibd', exp_pos_bias, exp_key)
            y = self.activation(query) * num / den
            return self.output(y)

    class ShiftRight(nn.Module):
        def __init__(self, shift):
            super().__init__()
            assert shift >= 0
            self.shift = shift

        def forward(self, x):
            if self.shift == 0:
                return x
            prefix = x.new_zeros([self.shift, *x.shape[1:]])
            return torch.cat([prefix, x[:-self.shift]])

    class AvgPoolShortening(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.pool = nn.AvgPool1d(k, ceil_mode=True)

        def forward(self, x):
            return self.pool(x.permute(1, 2, 0)).permute(2, 0, 1)

    class NaiveUpSampling(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x, x_short):
            expanded = torch.repeat_interleave(x_short, self.k, dim=0)
            expanded = expanded[:x.shape[0]]
            return expanded

    class AutoregressiveMask(nn.Module):
        def __init__(self):
            super().__init__()
            self.mask = None

        def forward(self, x):
            if self.mask is None or self.mask.size(0) != len(x):
                self.mask = t.subsequent_mask(len(x)).to(x.device)
            return self.mask

    def transformer_layer(n_heads, d_model, dropout, d_ff):
        return t.TransformerLayer(d_model=d_model, self_attn=t.MultiHeadAttention(n_heads, d_model, dropout),
                                  feed_forward=t.FeedForward(d_model, d_ff, dropout), dropout_prob=dropout)

    class HourGlass(nn.Module):
        def __init__(self, n_heads, d_model, dropout, d_ff, shortening_factors):
            super().__init__()
            self.pre = transformer_layer(n_heads, d_model, dropout, d_ff)
            self.mask = AutoregressiveMask()
            k = shortening_factors[0]
            self.shift_right = ShiftRight(k - 1)
            self.shortening = AvgPoolShortening(k)
            if len(shortening_factors) == 1:
                self.shortened = transformer_layer(n_heads, d_model, dropout, d_ff)
                self.mask_short = AutoregressiveMask()
                self.hour_glass = None
            else:
                self.hour_glass = HourGlass(n_heads, d_model, dropout, d_ff, shortening_factors[1:])
            self.up_sampling = NaiveUpSampling(k)
            self.post = transformer_layer(n_heads, d_model, dropout, d_ff)

        def forward(self, x):
            x = self.pre(x=x, mask=self.mask(x))
            x_short = self.shortening(self.shift_right(x))
            if self.hour_glass is None:
                x_short = self.shortened(x=x_short, mask=self.mask_short(x_short))
            else:
                x_short = self.hour_glass(x_short)
            x = x + self.up_sampling(x, x_short)
            x = self.post(x=x, mask=self.mask(x))
            return x

    class Variants(nn.Module):
        def __init__(self, d_model=8, heads=2, seq_len=7):
            super().__init__()
            self.fast = FastWeightsAttention(heads, d_model, 0., DPFP(nu=2))
            self.primer_attn = MultiDConvHeadAttention(heads, d_model, 0.)
            self.primer_ff = t.FeedForward(d_model, 16, 0., activation=SquaredReLU())
            self.gmlp = GMLPBlock(d_model, 16, seq_len)
            self.aft = AFTLocal(d_model, seq_len, 3)
            self.hour_glass = HourGlass(heads, d_model, 0., 16, [2, 2])
            self.head = nn.Linear(d_model, 1)

        def forward(self, x):
            mask = t.subsequent_mask(x.shape[0])
            parts = {"fast": self.fast(x)}
            parts["primer"] = self.primer_ff(self.primer_attn(query=x, key=x, value=x, mask=mask))
            parts["gmlp"] = self.gmlp(x=x, mask=mask)
            parts["aft"] = self.aft(query=x, key=x, value=x, mask=mask)
            parts["hour_glass"] = self.hour_glass(x)
            return parts

    return Variants().double()


def attention_variants_program(m, weights):
    torch = m.torch
    model = load(m, make_attention_variants(m), weights)
    with torch.no_grad():
        model.aft.pos_bias.copy_(torch.linspace(-1, 1, 49, dtype=torch.float64).view(7, 7))
    x, y = (torch.tensor(a) for a in sequence_data())
    x.requires_grad_()
    parts = model(x)
    out = {"parts": {k: v.detach() for k, v in parts.items()}}
    # each variant's gradient separately (and its input gradient from position 3 alone: all are causal),
    # then a few steps on their sum
    for name, value in parts.items():
        out["grad_" + name] = torch.autograd.grad((value * y).sum(), [p for p in model.parameters() if p.requires_grad],
                                                  retain_graph=True, allow_unused=True)
        out["causal_" + name] = torch.autograd.grad(value[3].sum(), x, retain_graph=True)[0]
    x = x.detach()

    def loss_fn(model, x, y):
        return sum(((v - y) ** 2).mean() for v in model(x).values())

    out["losses"], out["grads"] = train_few(m, model, (x, y), loss_fn, steps=3)
    out["local_mask"] = model.aft.local_mask
    out["local_mask_grad"] = model.aft.local_mask.requires_grad
    return out


def test_attention_variants():
    weights = weights_of(make_attention_variants)
    ours, _ = run_both(attention_variants_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    assert not ours["local_mask_grad"]
    np.testing.assert_array_equal(ours["local_mask"], np.abs(np.subtract.outer(range(7), range(7))) < 3)
    for name in ("fast", "primer", "gmlp", "aft", "hour_glass"):
        assert np.all(np.isfinite(ours["parts"][name])), name
        # (AFT subtracts the maximum key over every position: causal up to its rounding)
        assert np.abs(ours["causal_" + name][4:]).max() < 1e-15 and np.abs(ours["causal_" + name][:4]).max() > 0, name


# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/fnet and label_smoothing_loss: an FNet encoder trained with label smoothing
# ----------------------------------------------------------------------------------------------


def make_fnet(m):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)

    class FNetMix(nn.Module):
        def forward(self, query, key, value, mask=None):
            assert query is key and key is value
            assert mask is None
            x = query
            fft_hidden = torch.fft.fft(x, dim=2)
            fft_seq = torch.fft.fft(fft_hidden, dim=0)
            return torch.real(fft_seq)

    class Classifier(nn.Module):
        def __init__(self, n_vocab=9, d_model=8, n_layers=2, n_classes=6):
            super().__init__()
            self.embed = nn.Embedding(n_vocab, d_model)
            layer = t.TransformerLayer(d_model=d_model, self_attn=FNetMix(), feed_forward=t.FeedForward(d_model, 16, 0.),
                                       dropout_prob=0.)
            self.layers = t.clone_module_list(layer, n_layers)
            self.norm = nn.LayerNorm([d_model])
            self.generator = nn.Linear(d_model, n_classes)

        def forward(self, x):
            x = self.embed(x)
            for layer in self.layers:
                x = layer(x=x, mask=None)
            x = self.norm(x)
            return torch.log_softmax(self.generator(x[0]), dim=-1)

    return Classifier().double()


def fnet_program(m, weights):
    torch, nn = m.torch, m.nn

    class LabelSmoothingLoss(nn.Module):
        def __init__(self, size, padding_idx, smoothing=0.0):
            super().__init__()
            self.loss = nn.KLDivLoss(reduction='sum')
            self.padding_idx = padding_idx
            self.confidence = 1.0 - smoothing
            self.smoothing = smoothing
            self.size = size
            self.true_dist = None

        def forward(self, x, target):
            assert x.shape[1] == self.size
            true_dist = x.clone()
            true_dist.fill_(self.smoothing / (self.size - 2))
            true_dist.scatter_(1, target.unsqueeze(1), self.confidence)
            true_dist[:, self.padding_idx] = 0
            mask = torch.nonzero(target == self.padding_idx, as_tuple=False)
            if mask.dim() > 0:
                true_dist.index_fill_(0, mask.squeeze(), 0.0)
            self.true_dist = true_dist
            return self.loss(x, true_dist.detach())

    smooth_loss = LabelSmoothingLoss(5, 0, 0.4)
    predict = torch.tensor([[0, 0.2, 0.7, 0.1, 0], [0, 0.2, 0.7, 0.1, 0], [0, 0.2, 0.7, 0.1, 0]], dtype=torch.float)
    demo = smooth_loss(predict.log(), torch.tensor([2, 1, 0], dtype=torch.long))
    out = {"demo_dist": smooth_loss.true_dist, "demo": demo}

    model = load(m, make_fnet(m), weights)
    rng = np.random.default_rng(3)
    tokens = torch.tensor(rng.integers(0, 9, (10, 12)))
    labels = torch.tensor(rng.integers(0, 6, 12))
    labels[3] = 0  # the padding class: its row drops out of the loss
    criterion = LabelSmoothingLoss(6, 0, 0.1)
    out["losses"], out["grads"] = train_few(m, model, (tokens, labels), lambda model, x, y: criterion(model(x), y), steps=4)
    out["true_dist"] = criterion.true_dist
    mix = model.layers[0].self_attn
    z = torch.tensor(rng.standard_normal((4, 2, 3)))
    out["mix"] = mix(z, z, z)
    return out


def test_fnet_with_label_smoothing():
    weights = weights_of(make_fnet)
    ours, _ = run_both(fnet_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    e = 0.4 / 3
    np.testing.assert_allclose(ours["demo_dist"], [[0, e, 0.6, e, e], [0, 0.6, e, e, e], [0] * 5], rtol=1e-6)
    td = ours["true_dist"]
    assert np.all(td[3] == 0) and np.all(td[:, 0] == 0)
    np.testing.assert_allclose(td.sum(1)[td.sum(1) > 0], 1.0, rtol=1e-12)
    rng = np.random.default_rng(3)
    rng.integers(0, 9, (10, 12)), rng.integers(0, 6, 12)
    z = rng.standard_normal((4, 2, 3))
    np.testing.assert_allclose(ours["mix"], np.real(np.fft.fft(np.fft.fft(z, axis=2), axis=0)), rtol=1e-12, atol=1e-12)
