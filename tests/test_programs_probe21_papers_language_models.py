# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them (labml_nn/...), run
as tests/probe21_papers_common.py says: language models: the NLP data pipelines, GPT's weight-decay groups with
distillation."""

import math

import pytest

from .probe21_papers_common import labml_transformers
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# labml_nn/helpers/datasets and experiments/nlp_autoregression: character data pipelines (an iterable
# sequential loader, an unbatched dataset with random offsets sampled with replacement and collated by
# transpose_batch) feeding labml's autoregressive transformer with sinusoidal positional encodings
# ----------------------------------------------------------------------------------------------

TEXT = ("First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. First Citizen: You are all "
        "resolved rather to die than to famish? All: Resolved. resolved. First Citizen: First, you know Caius "
        "Marcius is chief enemy to the people. All: We know't, we know't. First Citizen: Let us kill him, and we'll "
        "have corn at our own price.")


def make_nlp_model(m):
    torch, nn = m.torch, m.nn
    t = labml_transformers(m)

    def get_positional_encoding(d_model, max_len=5000):
        encodings = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float32).unsqueeze(1)
        two_i = torch.arange(0, d_model, 2, dtype=torch.float32)
        div_term = torch.exp(two_i * -(math.log(10000.0) / d_model))
        encodings[:, 0::2] = torch.sin(position * div_term)
        encodings[:, 1::2] = torch.cos(position * div_term)
        encodings = encodings.unsqueeze(1).requires_grad_(False)
        return encodings

    class EmbeddingsWithPositionalEncoding(nn.Module):
        def __init__(self, d_model, n_vocab, max_len=5000):
            super().__init__()
            self.linear = nn.Embedding(n_vocab, d_model)
            self.d_model = d_model
            self.register_buffer('positional_encodings', get_positional_encoding(d_model, max_len))

        def forward(self, x):
            pe = self.positional_encodings[:x.shape[0]].requires_grad_(False)
            return self.linear(x) * math.sqrt(self.d_model) + pe

    class Encoder(nn.Module):
        def __init__(self, layer, n_layers):
            super().__init__()
            self.layers = t.clone_module_list(layer, n_layers)
            self.norm = nn.LayerNorm([layer.size])

        def forward(self, x, mask):
            for layer in self.layers:
                x = layer(x=x, mask=mask)
            return self.norm(x)

    class AutoregressiveTransformer(nn.Module):
        def __init__(self, encoder, src_embed, generator):
            super().__init__()
            self.src_embed = src_embed
            self.encoder = encoder
            self.generator = generator
            self.mask = None

        def forward(self, x):
            if self.mask is None or self.mask.size(0) != len(x):
                self.mask = t.subsequent_mask(len(x)).to(x.device)
            x = self.src_embed(x)
            x = self.encoder(x, self.mask)
            x = self.generator(x)
            return x, None

    d_model, n_vocab = 16, len(sorted(set(TEXT)))
    layer = t.TransformerLayer(d_model=d_model, self_attn=t.MultiHeadAttention(4, d_model, 0.),
                               feed_forward=t.FeedForward(d_model, 32, 0., nn.GELU(), True, False, False, False),
                               dropout_prob=0.)
    return AutoregressiveTransformer(Encoder(layer, 2), EmbeddingsWithPositionalEncoding(d_model, n_vocab, 64),
                                     nn.Linear(d_model, n_vocab)).double()


def nlp_pipeline_program(m, weights, replacement):
    torch, nn = m.torch, m.nn
    import random

    class TextDataset:
        standard_tokens = []

        def __init__(self, tokenizer, train, valid):
            self.train, self.valid, self.tokenizer = train, valid, tokenizer
            self.n_tokens = len(self.standard_tokens)
            self.stoi = {t: i for i, t in enumerate(self.standard_tokens)}
            tokens = self.tokenizer(self.train) + self.tokenizer(self.valid)
            tokens = sorted(list(set(tokens)))
            for t in tokens:
                self.stoi[t] = self.n_tokens
                self.n_tokens += 1
            self.itos = [''] * self.n_tokens
            for t, n in self.stoi.items():
                self.itos[n] = t

        def text_to_i(self, text):
            tokens = self.tokenizer(text)
            return torch.tensor([self.stoi[s] for s in tokens if s in self.stoi], dtype=torch.long)

    class SequentialDataLoader(m.data.IterableDataset):
        def __init__(self, *, text, dataset, batch_size, seq_len):
            self.seq_len = seq_len
            data = dataset.text_to_i(text)
            n_batch = data.shape[0] // batch_size
            data = data.narrow(0, 0, n_batch * batch_size)
            data = data.view(batch_size, -1).t().contiguous()
            self.data = data

        def __len__(self):
            return self.data.shape[0] // self.seq_len

        def __iter__(self):
            self.idx = 0
            return self

        def __next__(self):
            if self.idx >= self.data.shape[0] - 1:
                raise StopIteration()
            seq_len = min(self.seq_len, self.data.shape[0] - 1 - self.idx)
            i = self.idx + seq_len
            data = self.data[self.idx: i]
            target = self.data[self.idx + 1: i + 1]
            self.idx = i
            return data, target

    class SequentialUnBatchedDataset(m.data.Dataset):
        def __init__(self, *, text, dataset, seq_len, is_random_offset=True):
            self.is_random_offset = is_random_offset
            self.seq_len = seq_len
            self.data = dataset.text_to_i(text)

        def __len__(self):
            return (self.data.shape[0] - 1) // self.seq_len

        def __getitem__(self, idx):
            start = idx * self.seq_len
            assert start + self.seq_len + 1 <= self.data.shape[0]
            if self.is_random_offset:
                start += random.randint(0, min(self.seq_len - 1, self.data.shape[0] - (start + self.seq_len + 1)))
            end = start + self.seq_len
            data = self.data[start: end]
            target = self.data[start + 1: end + 1]
            return data, target

    def transpose_batch(batch):
        transposed_data = list(zip(*batch))
        src = torch.stack(transposed_data[0], dim=1)
        tgt = torch.stack(transposed_data[1], dim=1)
        return src, tgt

    class Accuracy:
        def __init__(self, ignore_index=-1):
            self.ignore_index = ignore_index
            self.correct, self.count = 0, 0

        def __call__(self, output, target):
            output = output.view(-1, output.shape[-1])
            target = target.view(-1)
            pred = output.argmax(dim=-1)
            mask = target == self.ignore_index
            pred.masked_fill_(mask, self.ignore_index)
            n_masked = mask.sum().item()
            self.correct += pred.eq(target).sum().item() - n_masked
            self.count += len(target) - n_masked

    class CrossEntropyLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.loss = nn.CrossEntropyLoss()

        def forward(self, outputs, targets):
            return self.loss(outputs.view(-1, outputs.shape[-1]), targets.view(-1))

    split = int(len(TEXT) * .9)
    text = TextDataset(lambda x: list(x), TEXT[:split], TEXT[split:])
    model = load(m, make_nlp_model(m), weights)
    torch.manual_seed(0)
    random.seed(0)
    dataset = SequentialUnBatchedDataset(text=text.train, dataset=text, seq_len=12)
    sampler = m.data.RandomSampler(dataset, replacement=replacement)
    train_loader = m.data.DataLoader(dataset, batch_size=4, collate_fn=transpose_batch, sampler=sampler)
    valid_loader = SequentialDataLoader(text=text.valid, dataset=text, batch_size=2, seq_len=6)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98), eps=1e-9)
    loss_func, accuracy = CrossEntropyLoss(), Accuracy()
    out = {"losses": [], "batches": []}
    for epoch in range(2):
        model.train()
        for data, target in train_loader:
            output, *_ = model(data)
            loss = loss_func(output, target)
            accuracy(output, target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            optimizer.zero_grad()
            out["losses"].append(loss.item())
            out["batches"].append(data)
    model.eval()
    valid = []
    with torch.no_grad():
        for data, target in valid_loader:
            output, *_ = model(data)
            valid.append((loss_func(output, target).item(), tuple(data.shape)))
    out["valid"] = valid
    out["accuracy"] = accuracy.correct / accuracy.count
    out["n_tokens"], out["len"] = text.n_tokens, (len(dataset), len(valid_loader))
    # greedy sampling from a prompt, as their sample() does
    prompt = "First Citizen"
    data = text.text_to_i(prompt).unsqueeze(-1)
    with torch.no_grad():
        for i in range(8):
            output, *_ = model(data)
            output = output.argmax(dim=-1).squeeze()
            prompt += text.itos[output[-1]]
            data = torch.cat([data, output[-1:].unsqueeze(-1)])
    out["sample"] = prompt
    return out


@pytest.mark.parametrize("replacement", [False, True], ids=["shuffled", "with_replacement"])
def test_nlp_autoregression_pipeline(replacement):
    weights = weights_of(make_nlp_model)
    ours, _ = run_both(nlp_pipeline_program, weights, replacement, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    assert ours["len"] == ((len(TEXT[:int(len(TEXT) * .9)]) - 1) // 12, (len(TEXT) - int(len(TEXT) * .9)) // 2 // 6)
    assert all(shape[1] == 2 for _, shape in ours["valid"]) and ours["sample"].startswith("First Citizen")


# ----------------------------------------------------------------------------------------------
# labml_nn/transformers/gpt and distillation: GPT's initialisation by apply(_init_weights), its weight-decay
# groups built from named_modules x named_parameters, then a smaller student distilled from it with
# KLDivLoss(log_target=True) on temperature-softened logits
# ----------------------------------------------------------------------------------------------


def gpt_distillation_program(m, weights):
    torch, nn = m.torch, m.nn

    def _init_weights(module):
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            return
        module.weight.data.normal_(mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    model = load(m, make_nlp_model(m), weights)
    torch.manual_seed(0)
    model.apply(_init_weights)
    decay = set()
    for mn, mod in model.named_modules():
        for pn, p in mod.named_parameters():
            fpn = f'{mn}.{pn}' if mn else pn  # full param name
            if fpn.endswith('weight') and isinstance(mod, nn.Linear):
                decay.add(fpn)
    param_dict = {pn: p for pn, p in model.named_parameters()}
    no_decay = set(param_dict.keys()) - decay
    opt_groups = [
        {"params": [param_dict[pn] for pn in sorted(list(decay))], "weight_decay": 0.1},
        {"params": [param_dict[pn] for pn in sorted(list(no_decay))], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(opt_groups, lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    stoi = {c: i for i, c in enumerate(sorted(set(TEXT)))}
    data = torch.tensor([stoi[c] for c in TEXT], dtype=torch.long)
    batch = torch.stack([data[i:i + 17] for i in range(0, 160, 20)], dim=1)  # (seq_len + 1, batch)
    x, y = batch[:-1], batch[1:]
    n_vocab = len(stoi)
    losses = []
    for _ in range(4):
        output, *_ = model(x)
        loss = nn.functional.cross_entropy(output.view(-1, n_vocab), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # distillation: a student with one layer learns the teacher's softened distribution and the labels
    student = make_nlp_model(m)
    student.encoder.layers = student.encoder.layers[:1]
    torch.manual_seed(1)
    student.apply(_init_weights)
    kl_div_loss = nn.KLDivLoss(log_target=True)
    loss_func = nn.CrossEntropyLoss()
    temperature, soft_targets_weight, label_loss_weight = 5., 100., 0.5
    s_opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    model.eval()
    s_losses = []
    for _ in range(4):
        with torch.no_grad():
            large_logits, *_ = model(x)
        output, *_ = student(x)
        soft_targets = nn.functional.log_softmax(large_logits / temperature, dim=-1)
        soft_prob = nn.functional.log_softmax(output / temperature, dim=-1)
        soft_targets_loss = kl_div_loss(soft_prob, soft_targets)
        label_loss = loss_func(output.view(-1, n_vocab), y.reshape(-1))
        loss = soft_targets_weight * soft_targets_loss + label_loss_weight * label_loss
        s_opt.zero_grad()
        loss.backward()
        s_opt.step()
        s_losses.append((loss.item(), soft_targets_loss.item()))
    return {"decay": sorted(decay), "no_decay": sorted(no_decay), "losses": losses, "student": s_losses,
            "emb": model.src_embed.linear.weight,
            "student_layers": len(student.encoder.layers)}


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss:UserWarning")
def test_gpt_weight_decay_groups_and_distillation():
    weights = weights_of(make_nlp_model)
    ours, _ = run_both(gpt_distillation_program, weights, rtol=1e-8, atol=1e-10)
    assert all(n.endswith("weight") and "norm" not in n for n in ours["decay"])
    assert "src_embed.linear.weight" in ours["no_decay"] and "generator.bias" in ours["no_decay"]
    assert ours["losses"][-1] < ours["losses"][0] and ours["student"][-1][0] < ours["student"][0][0]
