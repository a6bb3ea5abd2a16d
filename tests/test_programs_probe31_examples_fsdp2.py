# ruff: noqa: E501  (the programs are kept as their authors write them)
"""pytorch/examples' distributed/FSDP2 (model.py and example.py, in one process), one of the programs session 9's probe
(tests/test_programs_probe9_examples_*.py) left out, each kept as written with sizes shrunk and run as
tests/probe31_examples_common.py says: its toy Transformer built under ``torch.device("meta")``, materialised by
``to_empty`` and ``reset_parameters``, trained with SDPA dropout. It agreed with PyTorch when written (session 31)."""

from dataclasses import dataclass

import numpy as np
import pytest

from .probe31_examples_common import SAME_DROPOUT
from .pytorch_programs import run_both


# ---------------------------------------------------------------- distributed/FSDP2/model.py and example.py (one process)
def fsdp2_model(m, dropout_p=0.0):
    torch, nn, F = m.torch, m.nn, m.F

    @dataclass
    class ModelArgs:
        n_layers: int = 2
        vocab_size: int = 8
        max_seq_len: int = 16
        dim: int = 16
        n_heads: int = 4
        dropout_p: float = 0.1

    class Attention(nn.Module):
        def __init__(self, args: ModelArgs):
            super().__init__()
            assert args.dim % args.n_heads == 0
            self.head_dim = args.dim // args.n_heads
            self.n_heads = args.n_heads
            self.dropout_p = args.dropout_p
            self.resid_dropout = nn.Dropout(args.dropout_p)
            self.wq = nn.Linear(args.dim, args.dim, bias=False)
            self.wk = nn.Linear(args.dim, args.dim, bias=False)
            self.wv = nn.Linear(args.dim, args.dim, bias=False)
            self.wo = nn.Linear(args.dim, args.dim, bias=False)

        def forward(self, x):
            bsz, seq_len, _ = x.size()
            queries, keys, values = self.wq(x), self.wk(x), self.wv(x)
            queries = queries.view(bsz, seq_len, self.n_heads, self.head_dim)
            keys = keys.view(bsz, seq_len, self.n_heads, self.head_dim)
            values = values.view(bsz, seq_len, self.n_heads, self.head_dim)
            queries = queries.transpose(1, 2)
            keys = keys.transpose(1, 2)
            values = values.transpose(1, 2)
            output = F.scaled_dot_product_attention(queries, keys, values, None, self.dropout_p if self.training else 0)
            output = output.transpose(1, 2).contiguous().view(bsz, seq_len, -1)
            return self.resid_dropout(self.wo(output))

        def reset_parameters(self):
            self.wq.reset_parameters()
            self.wk.reset_parameters()
            self.wv.reset_parameters()
            self.wo.reset_parameters()

    class FeedForward(nn.Module):
        def __init__(self, dim, hidden_dim, dropout_p):
            super().__init__()
            self.w1 = nn.Linear(dim, hidden_dim)
            self.gelu = nn.GELU()
            self.w2 = nn.Linear(hidden_dim, dim)
            self.resid_dropout = nn.Dropout(dropout_p)

        def forward(self, x):
            return self.resid_dropout(self.w2(self.gelu(self.w1(x))))

        def reset_parameters(self):
            self.w1.reset_parameters()
            self.w2.reset_parameters()

    class TransformerBlock(nn.Module):
        def __init__(self, args: ModelArgs):
            super().__init__()
            self.attention_norm = nn.LayerNorm(args.dim)
            self.attention = Attention(args)
            self.ffn_norm = nn.LayerNorm(args.dim)
            self.feed_forward = FeedForward(args.dim, hidden_dim=4 * args.dim, dropout_p=args.dropout_p)

        def forward(self, x):
            h = x + self.attention(self.attention_norm(x))
            out = h + self.feed_forward(self.ffn_norm(h))
            return out

        def reset_parameters(self):
            self.attention_norm.reset_parameters()
            self.attention.reset_parameters()
            self.ffn_norm.reset_parameters()
            self.feed_forward.reset_parameters()

    class Transformer(nn.Module):
        def __init__(self, args: ModelArgs):
            super().__init__()
            self.model_args = args
            self.max_seq_len = args.max_seq_len
            self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
            self.pos_embeddings = nn.Embedding(args.max_seq_len, args.dim)
            self.dropout = nn.Dropout(args.dropout_p)
            self.layers = nn.ModuleList()
            for _ in range(args.n_layers):
                self.layers.append(TransformerBlock(args))
            self.norm = nn.LayerNorm(args.dim)
            self.output = nn.Linear(args.dim, args.vocab_size, bias=False)

        def forward(self, tokens):
            _bsz, seq_len = tokens.size()
            assert seq_len <= self.max_seq_len
            h = self.tok_embeddings(tokens)
            pos = torch.arange(0, seq_len, device=tokens.device)
            p = self.pos_embeddings(pos)
            h = h + p
            h = self.dropout(h)
            for layer in self.layers:
                h = layer(h)
            h = self.norm(h)
            output = self.output(h).float()
            return output

        def reset_parameters(self):
            self.tok_embeddings.reset_parameters()
            self.pos_embeddings.reset_parameters()
            self.norm.reset_parameters()
            self.output.reset_parameters()

    torch.manual_seed(0)  # (the example's sizes shrunk; fully_shard and the process group left out)
    vocab_size, batch_size, seq_len = 32, 4, 8
    model_args = ModelArgs(n_layers=2, n_heads=4, vocab_size=vocab_size, max_seq_len=seq_len, dropout_p=dropout_p)
    with torch.device("meta"):
        model = Transformer(model_args)
    on_meta = model.output.weight.is_meta
    device = torch.device("cpu")
    model.to_empty(device=device)
    for layer in model.layers:  # (the example's Transformer.reset_parameters leaves the blocks as to_empty
        layer.reset_parameters()  # left them, uninitialised memory: reset here so that the runs compare)
    model.reset_parameters()
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses, norms = [], []
    for _ in range(3):
        x = torch.randint(0, vocab_size, (batch_size, seq_len), device=device)
        loss = model(x).sum()
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0))
        optim.step()
        optim.zero_grad()
        losses.append(loss.item())
    return on_meta, losses, norms, model.layers[1].attention.wq.weight


@pytest.mark.parametrize("dropout_p", [0.0, 0.1])
def test_fsdp2_transformer_built_on_meta_then_materialised(dropout_p):
    on_meta, losses, norms, wq = run_both(fsdp2_model, dropout_p, compare=SAME_DROPOUT, rtol=1e-4, atol=1e-5)[0]
    assert on_meta and len(losses) == 3 and np.isfinite(losses).all() and all(n > 0 for n in norms)
    assert wq.shape == (16, 16) and np.isfinite(wq).all()

