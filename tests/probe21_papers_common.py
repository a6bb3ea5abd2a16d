# ruff: noqa: B007, B008  (the programs are kept as their authors wrote them)
"""What the files of session 21's probe of paper implementations (tests/test_programs_probe21_papers_*.py, one family
of papers each) share: labml's multi-head attention, feed-forward and transformer layer, a few training steps, and a
batch of sequences.

The programs are paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them
(labml_nn/...), rewritten without labml's config and tracker plumbing but keeping the authors' tensor idioms, each
run as a program on chainrule and on PyTorch from the same weights and data (tests/pytorch_programs.py), comparing
forwards, losses, gradients and several optimizer steps (float64 to about 1e-8, float32 to its rounding), with hand
checks in NumPy."""

import copy
import math
from types import SimpleNamespace

import numpy as np

# ----------------------------------------------------------------------------------------------
# labml_nn/transformers: their multi-head attention, feed-forward and layer, shared by what follows
# ----------------------------------------------------------------------------------------------


def labml_transformers(m):
    """labml_nn/transformers/{mha,feed_forward,models,utils}.py and labml_nn/utils as they write them."""
    torch, nn = m.torch, m.nn

    def clone_module_list(module, n):
        return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])

    def subsequent_mask(seq_len):
        mask = torch.tril(torch.ones(seq_len, seq_len)).to(torch.bool).unsqueeze(-1)
        return mask

    class PrepareForMultiHeadAttention(nn.Module):
        def __init__(self, d_model, heads, d_k, bias):
            super().__init__()
            self.linear = nn.Linear(d_model, heads * d_k, bias=bias)
            self.heads = heads
            self.d_k = d_k

        def forward(self, x):
            head_shape = x.shape[:-1]
            x = self.linear(x)
            x = x.view(*head_shape, self.heads, self.d_k)
            return x

    class MultiHeadAttention(nn.Module):
        def __init__(self, heads, d_model, dropout_prob=0.1, bias=True):
            super().__init__()
            self.d_k = d_model // heads
            self.heads = heads
            self.query = PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=bias)
            self.key = PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=bias)
            self.value = PrepareForMultiHeadAttention(d_model, heads, self.d_k, bias=True)
            self.softmax = nn.Softmax(dim=1)
            self.output = nn.Linear(d_model, d_model)
            self.dropout = nn.Dropout(dropout_prob)
            self.scale = 1 / math.sqrt(self.d_k)
            self.attn = None

        def get_scores(self, query, key):
            return torch.einsum('ibhd,jbhd->ijbh', query, key)

        def prepare_mask(self, mask, query_shape, key_shape):
            assert mask.shape[0] == 1 or mask.shape[0] == query_shape[0]
            assert mask.shape[1] == key_shape[0]
            assert mask.shape[2] == 1 or mask.shape[2] == query_shape[1]
            mask = mask.unsqueeze(-1)
            return mask

        def forward(self, *, query, key, value, mask=None):
            seq_len, batch_size, _ = query.shape
            if mask is not None:
                mask = self.prepare_mask(mask, query.shape, key.shape)
            query = self.query(query)
            key = self.key(key)
            value = self.value(value)
            scores = self.get_scores(query, key)
            scores *= self.scale
            if mask is not None:
                scores = scores.masked_fill(mask == 0, float('-inf'))
            attn = self.softmax(scores)
            attn = self.dropout(attn)
            x = torch.einsum("ijbh,jbhd->ibhd", attn, value)
            self.attn = attn.detach()
            x = x.reshape(seq_len, batch_size, -1)
            return self.output(x)

    class FeedForward(nn.Module):
        def __init__(self, d_model, d_ff, dropout=0.1, activation=nn.ReLU(), is_gated=False,
                     bias1=True, bias2=True, bias_gate=True):
            super().__init__()
            self.layer1 = nn.Linear(d_model, d_ff, bias=bias1)
            self.layer2 = nn.Linear(d_ff, d_model, bias=bias2)
            self.dropout = nn.Dropout(dropout)
            self.activation = activation
            self.is_gated = is_gated
            if is_gated:
                self.linear_v = nn.Linear(d_model, d_ff, bias=bias_gate)

        def forward(self, x):
            g = self.activation(self.layer1(x))
            if self.is_gated:
                x = g * self.linear_v(x)
            else:
                x = g
            x = self.dropout(x)
            return self.layer2(x)

    class TransformerLayer(nn.Module):
        def __init__(self, *, d_model, self_attn, src_attn=None, feed_forward, dropout_prob):
            super().__init__()
            self.size = d_model
            self.self_attn = self_attn
            self.src_attn = src_attn
            self.feed_forward = feed_forward
            self.dropout = nn.Dropout(dropout_prob)
            self.norm_self_attn = nn.LayerNorm([d_model])
            if self.src_attn is not None:
                self.norm_src_attn = nn.LayerNorm([d_model])
            self.norm_ff = nn.LayerNorm([d_model])
            self.is_save_ff_input = False

        def forward(self, *, x, mask, src=None, src_mask=None):
            z = self.norm_self_attn(x)
            self_attn = self.self_attn(query=z, key=z, value=z, mask=mask)
            x = x + self.dropout(self_attn)
            if src is not None:
                z = self.norm_src_attn(x)
                attn_src = self.src_attn(query=z, key=src, value=src, mask=src_mask)
                x = x + self.dropout(attn_src)
            z = self.norm_ff(x)
            if self.is_save_ff_input:
                self.ff_input = z.clone()
            ff = self.feed_forward(z)
            x = x + self.dropout(ff)
            return x

    return SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("torch", "nn", "m")})


def train_few(m, model, batches, loss_fn, steps=3, lr=1e-2, optimizer="Adam"):
    """A few optimizer steps; the losses and every parameter's gradient of the first step."""
    opt = getattr(m.optim, optimizer)(model.parameters(), lr=lr)
    losses, first_grads = [], None
    for step in range(steps):
        opt.zero_grad()
        loss = loss_fn(model, *batches)
        loss.backward()
        if first_grads is None:
            first_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        opt.step()
        losses.append(loss.item())
    return losses, first_grads


def sequence_data(seq_len=7, batch=3, d_model=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((seq_len, batch, d_model)), rng.standard_normal((seq_len, batch, d_model))
