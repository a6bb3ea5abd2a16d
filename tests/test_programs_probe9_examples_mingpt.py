# ruff: noqa: B007, F841, UP031  (the programs are kept as their authors wrote them)
"""Programs of the official pytorch/examples repository, run as tests/probe9_examples_common.py says.
``distributed/minGPT-ddp`` (``nn.MultiheadAttention`` given a float ``tril`` mask, which is added to the scores,
weight-decay groups by module type, ``DistributedSampler``, ``set_grad_enabled`` with a disabled ``autocast``,
``@torch.no_grad()`` generation with top-k)."""

import math
from dataclasses import dataclass

from .probe9_examples_common import assert_key_bias_gradients_vanish, assert_same_but_key_biases
from .pytorch_programs import assert_same, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# distributed/minGPT-ddp: GPT on nn.MultiheadAttention with a float tril "mask" (added to the scores,
# as PyTorch reads a float mask), weight-decay groups chosen by module type, a DistributedSampler,
# set_grad_enabled with a disabled autocast, generate() under @torch.no_grad() with top-k
# ----------------------------------------------------------------------------------------------

TEXT = "first citizen: before we proceed any further, hear me speak. all: speak, speak. "

@dataclass
class GPTConfig:
    model_type: str = 'gpt2'
    n_layer: int = None
    n_head: int = None
    n_embd: int =  None
    vocab_size: int = 50257
    block_size: int = 1024
    embd_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    attn_pdrop: float = 0.1

@dataclass
class OptimizerConfig:
    learning_rate: float = 3e-4
    weight_decay: float = 0.1

def mingpt(m, config=None):
    torch, nn, F = m.torch, m.nn, m.F
    config = config or GPTConfig(model_type=None, n_layer=2, n_head=2, n_embd=8, vocab_size=len(set(TEXT)),
                                 block_size=8, embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)

    class MultiheadAttentionLayer(nn.Module):
        def __init__(self, config, device="cpu", dtype=torch.float32):
            super().__init__()
            assert config.n_embd % config.n_head == 0
            self.resid_drop = nn.Dropout(config.resid_pdrop)
            self.c_proj = nn.Linear(config.n_embd, config.n_embd, device=device, dtype=dtype)
            self.register_buffer("mask", torch.tril(torch.ones(config.block_size, config.block_size))
                                 .view(1, 1, config.block_size, config.block_size))
            self.attn = nn.MultiheadAttention(
                embed_dim=config.n_embd,
                num_heads=config.n_head,
                dropout=config.attn_pdrop,
                batch_first=True,
                device=device,
                dtype=dtype
            )

        def forward(self, x):
            _, seq_size, _ = x.size()
            y = self.attn(x, x, x, attn_mask=self.mask[0, 0, :seq_size, :seq_size])[0]
            y = self.resid_drop(self.c_proj(y))
            return y

    class Block(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.ln1 = nn.LayerNorm(config.n_embd)
            self.ln2 = nn.LayerNorm(config.n_embd)
            self.attn = MultiheadAttentionLayer(config)
            self.mlp = nn.Sequential(
                nn.Linear(config.n_embd, 4 * config.n_embd),
                nn.GELU(),
                nn.Linear(4 * config.n_embd, config.n_embd),
                nn.Dropout(config.resid_pdrop),
            )

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            x = x + self.mlp(self.ln2(x))
            return x

    class EmbeddingStem(nn.Module):
        def __init__(self, config, device="cpu", dtype=torch.float32):
            super().__init__()
            self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd, device=device, dtype=dtype)
            self.pos_emb = nn.Parameter(torch.zeros(1, config.block_size, config.n_embd, device=device, dtype=dtype))
            self.drop = nn.Dropout(config.embd_pdrop)
            self.block_size = config.block_size

        def reset_parameters(self):
            self.tok_emb.reset_parameters()

        def forward(self, idx):
            b, t = idx.size()
            assert t <= self.block_size, f"Cannot forward sequence of length {t}, block size is only {self.block_size}"
            token_embeddings = self.tok_emb(idx)
            position_embeddings = self.pos_emb[:, :t, :]
            return self.drop(token_embeddings + position_embeddings)

    class GPT(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.block_size = config.block_size
            self.emb_stem = EmbeddingStem(config)
            self.blocks = nn.Sequential(*[Block(config) for _ in range(config.n_layer)])
            self.ln_f = nn.LayerNorm(config.n_embd)
            self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.apply(self._init_weights)
            for pn, p in self.named_parameters():
                if pn.endswith('c_proj.weight'):
                    p.data.normal_(mean=0.0, std=0.02/math.sqrt(2 * config.n_layer))
            self.n_params = sum(p.numel() for p in self.blocks.parameters())

        def _init_weights(self, module):
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.data.normal_(mean=0.0, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    module.bias.data.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.bias.data.zero_()
                module.weight.data.fill_(1.0)

        def forward(self, idx, targets=None):
            x = self.emb_stem(idx)
            x = self.blocks(x)
            x = self.ln_f(x)
            logits = self.head(x)
            loss = None
            if targets is not None:
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            return logits, loss

        @torch.no_grad()
        def generate(self, idx, max_new_tokens, temperature=1.0, do_sample=False, top_k=None):
            for _ in range(max_new_tokens):
                idx_cond = idx if idx.size(1) <= self.block_size else idx[:, -self.block_size:]
                logits, _ = self(idx_cond)
                logits = logits[:, -1, :] / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, top_k)
                    logits[logits < v[:, [-1]]] = -float('Inf')
                probs = F.softmax(logits, dim=-1)
                if do_sample:
                    idx_next = torch.multinomial(probs, num_samples=1)
                else:
                    _, idx_next = torch.topk(probs, k=1, dim=-1)
                idx = torch.cat((idx, idx_next), dim=1)
            return idx

    return GPT(config)


def create_optimizer(m, model, opt_config):
    torch, nn = m.torch, m.nn
    decay = set()
    no_decay = set()
    whitelist_weight_modules = (nn.Linear, )
    blacklist_weight_modules = (nn.LayerNorm, nn.Embedding)
    for mn, m_ in model.named_modules():
        for pn, p in m_.named_parameters():
            fpn = '%s.%s' % (mn, pn) if mn else pn # full param name
            if pn.endswith('bias'):
                no_decay.add(fpn)
            elif pn.endswith('weight') and isinstance(m_, whitelist_weight_modules):
                decay.add(fpn)
            elif pn.endswith('in_proj_weight'):
                decay.add(fpn)
            elif pn.endswith('weight') and isinstance(m_, blacklist_weight_modules):
                no_decay.add(fpn)
            elif pn.endswith('pos_emb'):
                no_decay.add(fpn)
    param_dict = {pn: p for pn, p in model.named_parameters()}
    inter_params = decay & no_decay
    union_params = decay | no_decay
    assert len(inter_params) == 0, "parameters %s made it into both decay/no_decay sets!" % (str(inter_params), )
    assert len(param_dict.keys() - union_params) == 0, \
        "parameters %s were not separated into either decay/no_decay set!" % (str(param_dict.keys() - union_params), )
    optim_groups = [
        {"params": [param_dict[pn] for pn in sorted(list(decay))], "weight_decay": opt_config.weight_decay},
        {"params": [param_dict[pn] for pn in sorted(list(no_decay))], "weight_decay": 0.0},
    ]
    optimizer = m.optim.AdamW(optim_groups, lr=opt_config.learning_rate, betas=(0.9, 0.95))
    return optimizer, sorted(decay), sorted(no_decay)


def mingpt_ddp(m, weights, epochs=2):
    torch = m.torch
    Dataset, DataLoader = torch.utils.data.Dataset, torch.utils.data.DataLoader
    DistributedSampler = torch.utils.data.distributed.DistributedSampler

    class CharDataset(Dataset):
        def __init__(self, data, block_size):
            chars = sorted(list(set(data)))
            self.stoi = {ch: i for i, ch in enumerate(chars)}
            self.itos = {i: ch for i, ch in enumerate(chars)}
            self.block_size = block_size
            self.vocab_size = len(chars)
            self.data = data

        def __len__(self):
            return len(self.data) - self.block_size

        def __getitem__(self, idx):
            chunk = self.data[idx:idx + self.block_size + 1]
            dix = [self.stoi[s] for s in chunk]
            x = torch.tensor(dix[:-1], dtype=torch.long)
            y = torch.tensor(dix[1:], dtype=torch.long)
            return x, y

    dataset = CharDataset(TEXT, 8)
    model = load(m, mingpt(m), weights)
    optimizer, decay, no_decay = create_optimizer(m, model, OptimizerConfig(learning_rate=3e-3))
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=False)
    dataloader = DataLoader(dataset, batch_size=16, pin_memory=True, shuffle=False, sampler=sampler)
    log = []

    def _run_batch(source, targets, train=True):
        with torch.set_grad_enabled(train), torch.amp.autocast(device_type="cpu", dtype=torch.float16, enabled=False):
            _, loss = model(source, targets)
        if train:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            m.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        return loss.item(), loss.requires_grad

    for epoch in range(epochs):
        dataloader.sampler.set_epoch(epoch)
        for iter, (source, targets) in enumerate(dataloader):
            log.append(_run_batch(source, targets, True))
        log.append(_run_batch(source, targets, False))
    model.eval()
    prompt = torch.tensor([[dataset.stoi[c] for c in "speak"]], dtype=torch.long)
    greedy = model.generate(prompt, 6)
    top_k = model.generate(prompt, 6, temperature=0.5, top_k=3)
    text = "".join(dataset.itos[int(i)] for i in greedy[0])
    grads = {n: p.grad for n, p in model.named_parameters()}
    return log, dict(model.state_dict()), grads, greedy, top_k, text, decay, no_decay, model.n_params


def test_mingpt_ddp():
    ours, theirs = run_both(mingpt_ddp, weights_of(mingpt), compare=False)
    log, state, grads, greedy, top_k, text, decay, no_decay, n_params = ours
    assert [tracked for _, tracked in log] == [True] * 5 + [False] + [True] * 5 + [False]
    # two norms, the MHA's in and out projections, c_proj, the MLP
    per_block = 2 * 2 * 8 + (3 * 8 * 8 + 3 * 8) + 2 * (8 * 8 + 8) + (8 * 32 + 32) + (32 * 8 + 8)
    assert log[-1][0] < log[0][0] and n_params == 2 * per_block
    assert "blocks.0.attn.attn.out_proj.weight" in decay and "emb_stem.pos_emb" in no_decay
    assert greedy.shape == top_k.shape == (1, 11) and text.startswith("speak") and len(text) == 11
    assert_key_bias_gradients_vanish(grads)
    if theirs is not None:
        assert_same(ours[0], theirs[0], 1e-4, 1e-5)
        assert_same(ours[3:], theirs[3:], 1e-4, 1e-5)
        assert_same_but_key_biases(state, theirs[1], 1e-4, 1e-5)
        assert_same_but_key_biases(grads, theirs[2], 1e-4, 1e-5)
