"""(h) One training step of a small GPT, as a PyTorch user writes it, against PyTorch (both on one thread):

character-level, vocabulary 65, 4 blocks of pre-norm causal self-attention (4 heads,
``F.scaled_dot_product_attention``) and an MLP with the exact GELU, width 128, context 64, batch 16,
dropout 0.1, cross-entropy, ``optim.AdamW``. The same program runs on both libraries, only its imports
changed; the weights are PyTorch's, loaded into ours, and the two losses are checked equal (with dropout
off) before timing. Unlike the per-op and MLP tables, the arithmetic here is most of the time: what this
row measures is our array kernels (GELU's erf, dropout's masks, the normalizations, attention) beside
PyTorch's vectorised ones, not the engine's cost per node.
"""

import math

import numpy as np
from timing import best_time_fresh, one_thread, optional, table

import autograd

GPT = {"vocabulary": 65, "width": 128, "heads": 4, "blocks": 4, "context": 64, "batch": 16, "dropout": 0.1}


def model(torch, nn, F):
    """The GPT in the library ``torch`` (autograd or torch), ``nn`` and ``F`` its layers and functions."""
    width, heads, context = GPT["width"], GPT["heads"], GPT["context"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width),
                                     nn.Dropout(GPT["dropout"]))

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = (part.view(b, t, heads, d // heads).transpose(1, 2)
                       for part in self.qkv(self.ln1(x)).split(d, dim=2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=GPT["dropout"] if self.training else 0.0)
            x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, d))
            return x + self.mlp(self.ln2(x))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens, self.positions = nn.Embedding(GPT["vocabulary"], width), nn.Embedding(context, width)
            self.blocks = nn.ModuleList([Block() for _ in range(GPT["blocks"])])
            self.ln, self.head = nn.LayerNorm(width), nn.Linear(width, GPT["vocabulary"], bias=False)

        def forward(self, idx, targets):
            x = self.tokens(idx) + self.positions(torch.arange(idx.shape[1]))
            for block in self.blocks:
                x = block(x)
            logits = self.head(self.ln(x))
            return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))

    return Model()


def batch(seed=0):
    rng = np.random.default_rng(seed)
    shape = (GPT["batch"], GPT["context"])
    return rng.integers(0, GPT["vocabulary"], shape), rng.integers(0, GPT["vocabulary"], shape)


def maker(torch, nn, F, optim, state, idx, targets):
    """A fresh model (PyTorch's weights), AdamW and a step for best_time_fresh."""

    def make():
        net = model(torch, nn, F)
        net.load_state_dict(state)
        optimizer = optim.AdamW(net.parameters(), lr=3e-4)
        inputs, labels = torch.tensor(idx), torch.tensor(targets)

        def step():
            loss = net(inputs, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss

        return step

    return make


def eval_loss(torch, nn, F, state, idx, targets):
    net = model(torch, nn, F)
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        return net(torch.tensor(idx), torch.tensor(targets)).item()


def rows(torch):
    import nn
    import nn.functional
    import optim

    idx, targets = batch()
    ours = (autograd, nn, nn.functional)
    if torch is None:  # our own initial weights
        torch_state = None
        state = model(*ours).state_dict()
    else:
        torch.manual_seed(0)
        theirs = (torch, torch.nn, torch.nn.functional)
        torch_state = model(*theirs).state_dict()
        state = {name: value.numpy() for name, value in torch_state.items()}
        # one program, two libraries: the same loss from the same weights
        assert math.isclose(eval_loss(*ours, state, idx, targets), eval_loss(*theirs, torch_state, idx, targets),
                            rel_tol=1e-5)
    makers = {"chainrule": maker(*ours, optim, state, idx, targets)}
    if torch is not None:
        makers["PyTorch"] = maker(*theirs, torch.optim, torch_state, idx, targets)
    seconds = {name: float("inf") for name in makers}
    for _ in range(3):  # interleaved rounds
        for name, make in makers.items():
            seconds[name] = min(seconds[name], best_time_fresh(make, steps=3, repeat=1))
    return seconds


def report():
    torch = optional("torch")
    with one_thread(torch) as note:
        shape = "{blocks} blocks, width {width}, {heads} heads, context {context}, batch {batch}".format(**GPT)
        return "\n".join([table(f"(h) a small GPT's training step ({shape}, GELU, dropout, AdamW), float32",
                                 rows(torch), "PyTorch" if torch is not None else "chainrule"), note])


if __name__ == "__main__":
    print(report())
