# ruff: noqa: B007, E702, UP008, UP018  (the programs are kept as their authors wrote them)
"""Programs of the official pytorch/examples repository, run as tests/probe9_examples_common.py says. Language:
``word_language_model``'s ``TransformerModel`` (a subclass of ``nn.Transformer`` replacing its decoder,
``PositionalEncoding`` buffer, ``log(tril(ones))`` causal mask, truncated-BPTT batches, ``clip_grad_norm_``, a
hand-written SGD step or AdamW, greedy generation with ``model(input, False)``); ``language_translation``'s
``Translator`` (a full ``nn.Transformer`` with a bool source mask, a float causal target mask, bool padding masks,
``pad_sequence`` collation, ``CrossEntropyLoss(ignore_index=pad)``, greedy decoding with ``type_as`` and ``fill_``);
``legacy/snli`` (a ``Linear`` flattening leading dims through a cooperative mixin ``class Linear(Bottle,
nn.Linear)``, a bidirectional two-layer LSTM's last states, one ReLU module listed thrice in a Sequential)."""

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from .probe9_examples_common import assert_key_bias_gradients_vanish, assert_same_but_key_biases, numbers_parsed
from .pytorch_programs import assert_same, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# word_language_model's TransformerModel (the RNN models are in test_programs_probe6_nlp_*.py)
# ----------------------------------------------------------------------------------------------

CORPUS = ("the cat sat on the mat . the dog sat on the log . a cat and a dog sat on a mat . "
          "the cat saw the dog . the dog saw a cat on the log .").split()


def transformer_lm(m):
    torch, nn, F = m.torch, m.nn, m.F

    class PositionalEncoding(nn.Module):
        def __init__(self, d_model, dropout=0.1, max_len=5000):
            super(PositionalEncoding, self).__init__()
            self.dropout = nn.Dropout(p=dropout)

            pe = torch.zeros(max_len, d_model)
            position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
            div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
            pe[:, 0::2] = torch.sin(position * div_term)
            pe[:, 1::2] = torch.cos(position * div_term)
            pe = pe.unsqueeze(0).transpose(0, 1)
            self.register_buffer('pe', pe)

        def forward(self, x):
            x = x + self.pe[:x.size(0), :]
            return self.dropout(x)

    class TransformerModel(nn.Transformer):
        """Container module with an encoder, a recurrent or transformer module, and a decoder."""

        def __init__(self, ntoken, ninp, nhead, nhid, nlayers, dropout=0.5):
            super(TransformerModel, self).__init__(d_model=ninp, nhead=nhead, dim_feedforward=nhid,
                                                   num_encoder_layers=nlayers)
            self.model_type = 'Transformer'
            self.src_mask = None
            self.pos_encoder = PositionalEncoding(ninp, dropout)

            self.input_emb = nn.Embedding(ntoken, ninp)
            self.ninp = ninp
            self.decoder = nn.Linear(ninp, ntoken)

            self.init_weights()

        def _generate_square_subsequent_mask(self, sz):
            return torch.log(torch.tril(torch.ones(sz,sz)))

        def init_weights(self):
            initrange = 0.1
            nn.init.uniform_(self.input_emb.weight, -initrange, initrange)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -initrange, initrange)

        def forward(self, src, has_mask=True):
            if has_mask:
                device = src.device
                if self.src_mask is None or self.src_mask.size(0) != len(src):
                    mask = self._generate_square_subsequent_mask(len(src)).to(device)
                    self.src_mask = mask
            else:
                self.src_mask = None

            src = self.input_emb(src) * math.sqrt(self.ninp)
            src = self.pos_encoder(src)
            output = self.encoder(src, mask=self.src_mask)
            output = self.decoder(output)
            return F.log_softmax(output, dim=-1)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
        model = TransformerModel(len(set(CORPUS)), 8, 2, 16, 2, dropout=0.0)
    # nn.Transformer's own dropout (0.1) is no argument of TransformerModel; off here, as the two libraries
    # draw different masks
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(module, nn.MultiheadAttention):
            module.dropout = 0.0
    return model


def word_language_model_transformer(m, weights, use_optimizer, epochs=3, bptt=5, clip=0.25):
    torch, nn = m.torch, m.nn
    words = sorted(set(CORPUS))
    ids = torch.tensor([words.index(w) for w in CORPUS], dtype=torch.int64)
    ntokens = len(words)

    def batchify(data, bsz):
        nbatch = data.size(0) // bsz
        data = data.narrow(0, 0, nbatch * bsz)
        data = data.view(bsz, -1).t().contiguous()
        return data

    def get_batch(source, i):
        seq_len = min(bptt, len(source) - 1 - i)
        data = source[i:i+seq_len]
        target = source[i+1:i+1+seq_len].view(-1)
        return data, target

    train_data = batchify(ids, 4)
    val_data = batchify(ids[:24], 2)
    model = load(m, transformer_lm(m), weights)
    criterion = nn.NLLLoss()
    lr = 0.01 if use_optimizer else 5.0
    if use_optimizer:
        optimizer = m.optim.AdamW(model.parameters(), lr=lr)

    def evaluate(data_source):
        model.eval()
        total_loss = 0.
        with torch.no_grad():
            for i in range(0, data_source.size(0) - 1, bptt):
                data, targets = get_batch(data_source, i)
                output = model(data)
                output = output.view(-1, ntokens)
                total_loss += len(data) * criterion(output, targets).item()
        return total_loss / (len(data_source) - 1)

    log, best_val_loss = [], None
    for epoch in range(1, epochs + 1):
        model.train()
        total_loss = 0.
        for batch, i in enumerate(range(0, train_data.size(0) - 1, bptt)):
            data, targets = get_batch(train_data, i)
            if use_optimizer:
                optimizer.zero_grad()
            else:
                model.zero_grad()
            output = model(data)
            output = output.view(-1, ntokens)
            loss = criterion(output, targets)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)  # torch.nn.utils in the original
            if use_optimizer:
                optimizer.step()
            else:
                for p in model.parameters():
                    p.data.add_(p.grad, alpha=-lr)
            total_loss += loss.item()
        val_loss = evaluate(val_data)
        if not best_val_loss or val_loss < best_val_loss:
            best_val_loss = val_loss
        else:
            lr /= 4.0
        log.append((total_loss, val_loss, math.exp(val_loss), lr))

    # generate.py, greedy where it draws by torch.multinomial (the two libraries draw differently)
    model.eval()
    input = torch.tensor([[words.index("the")]], dtype=torch.long)
    generated = []
    with torch.no_grad():
        for i in range(6):
            output = model(input, False)
            word_weights = output[-1].squeeze().div(0.8).exp().cpu()
            word_idx = torch.argmax(word_weights)
            word_tensor = torch.Tensor([[word_idx]]).long()
            input = torch.cat([input, word_tensor], 0)
            generated.append(words[word_idx])
    state = {k: v for k, v in model.state_dict().items() if k != "pos_encoder.pe"}
    grads = {n: p.grad for n, p in model.named_parameters()}
    return log, state, grads, generated, word_weights, input, model.src_mask is None, len(state)


@pytest.mark.parametrize("use_optimizer", [False, True], ids=["sgd_by_hand", "adamw"])
def test_word_language_model_transformer(use_optimizer):
    weights = weights_of(transformer_lm)
    ours, theirs = run_both(word_language_model_transformer, weights, use_optimizer, compare=False)
    log, state, grads, generated, word_weights, input, unmasked, n_state = ours
    assert n_state == 2 * 12 + 2 + 2 + 1  # two encoder layers, the encoder's norm, decoder Linear, embedding
    assert unmasked and input.shape == (7, 1) and len(generated) == 6
    np.testing.assert_allclose((word_weights ** 0.8).sum(), 1.0, rtol=1e-5)  # exp(log_softmax / 0.8) ** 0.8: a softmax
    assert log[-1][1] < log[0][1]  # the validation loss
    assert_key_bias_gradients_vanish(grads)
    if theirs is not None:
        assert_same(ours[0], theirs[0], 1e-4, 1e-5)
        assert_same(ours[3:], theirs[3:], 1e-4, 1e-5)
        assert_same_but_key_biases(state, theirs[1], 1e-4, 1e-5)
        assert_same_but_key_biases(grads, theirs[2], 1e-4, 1e-5)


# ----------------------------------------------------------------------------------------------
# language_translation: a sequence-to-sequence nn.Transformer with padding masks and greedy decoding
# ----------------------------------------------------------------------------------------------

PAD, BOS, EOS = 1, 2, 3
SRC_VOCAB, TGT_VOCAB = 9, 10


def translator(m, dropout=0.0):
    torch, nn = m.torch, m.nn

    class PositionalEncoding(nn.Module):
        def __init__(
            self,
            emb_size,
            dropout,
            maxlen=5000
        ):
            super(PositionalEncoding, self).__init__()
            den = torch.exp(- torch.arange(0, emb_size, 2)* math.log(10000) / emb_size)
            pos = torch.arange(0, maxlen).reshape(maxlen, 1)
            pos_embedding = torch.zeros((maxlen, emb_size))
            pos_embedding[:, 0::2] = torch.sin(pos * den)
            pos_embedding[:, 1::2] = torch.cos(pos * den)
            pos_embedding = pos_embedding.unsqueeze(-2)

            self.dropout = nn.Dropout(dropout)
            self.register_buffer('pos_embedding', pos_embedding)

        def forward(self, token_embedding):
            return self.dropout(token_embedding + self.pos_embedding[:token_embedding.size(0), :])

    class Translator(nn.Module):
        def __init__(
                self,
                num_encoder_layers,
                num_decoder_layers,
                embed_size,
                num_heads,
                src_vocab_size,
                tgt_vocab_size,
                dim_feedforward,
                dropout
            ):
            super(Translator, self).__init__()

            # Output of embedding must be equal (embed_size)
            self.src_embedding = nn.Embedding(src_vocab_size, embed_size)
            self.tgt_embedding = nn.Embedding(tgt_vocab_size, embed_size)

            self.pos_enc = PositionalEncoding(embed_size, dropout)

            self.transformer = nn.Transformer(
                d_model=embed_size,
                nhead=num_heads,
                num_encoder_layers=num_encoder_layers,
                num_decoder_layers=num_decoder_layers,
                dim_feedforward=dim_feedforward,
                dropout=dropout
            )

            self.ff = nn.Linear(embed_size, tgt_vocab_size)

            self._init_weights()

        def _init_weights(self):
            for p in self.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

        def forward(self, src, trg, src_mask, tgt_mask, src_padding_mask, tgt_padding_mask, memory_key_padding_mask):

            src_emb = self.pos_enc(self.src_embedding(src))
            tgt_emb = self.pos_enc(self.tgt_embedding(trg))

            outs = self.transformer(
                src_emb,
                tgt_emb,
                src_mask,
                tgt_mask,
                None,
                src_padding_mask,
                tgt_padding_mask,
                memory_key_padding_mask
            )

            return self.ff(outs)

        def encode(self, src, src_mask):
            embed = self.src_embedding(src)
            pos_enc = self.pos_enc(embed)
            return self.transformer.encoder(pos_enc, src_mask)

        def decode(self, tgt, memory, tgt_mask):
            embed = self.tgt_embedding(tgt)
            pos_enc = self.pos_enc(embed)
            return self.transformer.decoder(pos_enc, memory, tgt_mask)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
        return Translator(2, 2, 8, 2, SRC_VOCAB, TGT_VOCAB, 16, dropout)  # 5, 5, 512, 8, ..., 512, 0.1 by default


def translation_pairs():
    """A made-up language pair: the target is the source reversed, each token shifted by one."""
    rng = np.random.default_rng(1)
    pairs = []
    for n in (3, 5, 4, 2, 5, 3):
        src = [int(t) for t in rng.integers(4, SRC_VOCAB, n)]
        pairs.append((src, [t + 1 for t in reversed(src)]))
    return pairs


def language_translation(m, weights, pairs, epochs=3):
    torch, nn = m.torch, m.nn
    DEVICE = torch.device("cpu")

    def generate_square_subsequent_mask(size, device):
        mask = (torch.triu(torch.ones((size, size), device=device)) == 1).transpose(0, 1)
        mask = mask.float().masked_fill(mask == 0, float('-inf')).masked_fill(mask == 1, float(0.0))
        return mask

    def create_mask(src, tgt, pad_idx, device):
        src_seq_len = src.shape[0]
        tgt_seq_len = tgt.shape[0]
        tgt_mask = generate_square_subsequent_mask(tgt_seq_len, device)
        src_mask = torch.zeros((src_seq_len, src_seq_len),device=device).type(torch.bool)
        src_padding_mask = (src == pad_idx).transpose(0, 1)
        tgt_padding_mask = (tgt == pad_idx).transpose(0, 1)
        return src_mask, tgt_mask, src_padding_mask, tgt_padding_mask

    def collate_fn(batch):  # data.py: <bos> tokens <eos>, padded by pad_sequence
        src_batch, tgt_batch = [], []
        for src_sample, tgt_sample in batch:
            src_batch.append(torch.cat([torch.tensor([BOS]), torch.tensor(src_sample), torch.tensor([EOS])]))
            tgt_batch.append(torch.cat([torch.tensor([BOS]), torch.tensor(tgt_sample), torch.tensor([EOS])]))
        src_batch = nn.utils.rnn.pad_sequence(src_batch, padding_value=PAD)
        tgt_batch = nn.utils.rnn.pad_sequence(tgt_batch, padding_value=PAD)
        return src_batch, tgt_batch

    train_dl = torch.utils.data.DataLoader(pairs, batch_size=3, collate_fn=collate_fn)
    model = load(m, translator(m), weights).to(DEVICE)
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD)
    optim = m.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.98), eps=1e-9)  # lr=1e-4 in the original

    def train(model, train_dl, loss_fn, optim):
        losses = 0
        model.train()
        for src, tgt in train_dl:
            src = src.to(DEVICE)
            tgt = tgt.to(DEVICE)
            tgt_input = tgt[:-1, :]
            src_mask, tgt_mask, src_padding_mask, tgt_padding_mask = create_mask(src, tgt_input, PAD, DEVICE)
            logits = model(src, tgt_input, src_mask, tgt_mask,src_padding_mask, tgt_padding_mask, src_padding_mask)
            optim.zero_grad()
            tgt_out = tgt[1:, :]
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1))
            loss.backward()
            optim.step()
            losses += loss.item()
        return losses / len(list(train_dl))

    def validate(model, valid_dl, loss_fn):
        losses = 0
        model.eval()
        for src, tgt in valid_dl:
            tgt_input = tgt[:-1, :]
            src_mask, tgt_mask, src_padding_mask, tgt_padding_mask = create_mask(src, tgt_input, PAD, DEVICE)
            logits = model(src, tgt_input, src_mask, tgt_mask,src_padding_mask, tgt_padding_mask, src_padding_mask)
            tgt_out = tgt[1:, :]
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1))
            losses += loss.item()
        return losses / len(list(valid_dl))

    def greedy_decode(model, src, src_mask, max_len, start_symbol, end_symbol):
        src = src.to(DEVICE)
        src_mask = src_mask.to(DEVICE)
        memory = model.encode(src, src_mask)
        ys = torch.ones(1, 1).fill_(start_symbol).type(torch.long).to(DEVICE)
        for _ in range(max_len-1):
            memory = memory.to(DEVICE)
            tgt_mask = (generate_square_subsequent_mask(ys.size(0), DEVICE).type(torch.bool)).to(DEVICE)
            out = model.decode(ys, memory, tgt_mask)
            out = out.transpose(0, 1)
            prob = model.ff(out[:, -1])
            _, next_word = torch.max(prob, dim=1)
            next_word = next_word.item()
            ys = torch.cat([ys, torch.ones(1, 1).type_as(src.data).fill_(next_word)], dim=0)
            if next_word == end_symbol:
                break
        return ys

    log = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a float target mask with a bool padding mask: PyTorch's deprecation
        for epoch in range(1, epochs + 1):
            train_loss = train(model, train_dl, loss_fn, optim)
            grads = {n: p.grad for n, p in model.named_parameters()}
            log.append((train_loss, validate(model, train_dl, loss_fn)))
        model.eval()  # inference()
        src = torch.cat([torch.tensor([BOS]), torch.tensor(pairs[0][0]), torch.tensor([EOS])]).view(-1, 1)
        num_tokens = src.shape[0]
        src_mask = (torch.zeros(num_tokens, num_tokens)).type(torch.bool)
        tgt_tokens = greedy_decode(
            model, src, src_mask, max_len=num_tokens+5, start_symbol=BOS, end_symbol=EOS
        ).flatten()
    state = {k: v for k, v in model.state_dict().items() if k != "pos_enc.pos_embedding"}
    return log, state, grads, [int(t) for t in tgt_tokens.cpu().numpy()], tgt_tokens.dtype == torch.int64


def test_language_translation():
    ours, theirs = run_both(language_translation, weights_of(translator), translation_pairs(), compare=False)
    log, state, grads, tokens, is_long = ours
    assert log[-1][0] < log[0][0] and log[-1][1] < log[0][1]
    assert is_long and tokens[0] == BOS and 1 < len(tokens) <= 5 + 2 + 5 - 1 + 1
    assert EOS not in tokens[:-1] and all(0 <= t < TGT_VOCAB for t in tokens)
    assert_key_bias_gradients_vanish(grads)
    if theirs is not None:
        assert_same(ours[0], theirs[0], 1e-5, 1e-6)
        assert_same(ours[3:], theirs[3:], 0, 0)
        assert_same_but_key_biases(state, theirs[1], 1e-4, 1e-5)
        assert_same_but_key_biases(grads, theirs[2], 1e-4, 1e-5)


# ----------------------------------------------------------------------------------------------
# legacy/snli: premise and hypothesis through one bidirectional 2-layer LSTM encoder; a Linear that
# flattens its leading dims by a cooperative-inheritance mixin (class Linear(Bottle, nn.Linear))
# ----------------------------------------------------------------------------------------------

SNLI = SimpleNamespace(n_embed=12, d_embed=6, d_proj=5, projection=True, d_hidden=4, n_layers=2, dp_ratio=0.0,
                       birnn=True, d_out=3, fix_emb=False)
SNLI.n_cells = SNLI.n_layers * 2

def snli_classifier(m, config=SNLI):
    torch, nn = m.torch, m.nn

    class Bottle(nn.Module):

        def forward(self, input):
            if len(input.size()) <= 2:
                return super(Bottle, self).forward(input)
            size = input.size()[:2]
            out = super(Bottle, self).forward(input.view(size[0]*size[1], -1))
            return out.view(size[0], size[1], -1)

    class Linear(Bottle, nn.Linear):
        pass

    class Encoder(nn.Module):

        def __init__(self, config):
            super(Encoder, self).__init__()
            self.config = config
            input_size = config.d_proj if config.projection else config.d_embed
            dropout = 0 if config.n_layers == 1 else config.dp_ratio
            self.rnn = nn.LSTM(input_size=input_size, hidden_size=config.d_hidden,
                            num_layers=config.n_layers, dropout=dropout,
                            bidirectional=config.birnn)

        def forward(self, inputs):
            batch_size = inputs.size()[1]
            state_shape = self.config.n_cells, batch_size, self.config.d_hidden
            h0 = c0 = inputs.new_zeros(state_shape)
            outputs, (ht, ct) = self.rnn(inputs, (h0, c0))
            return ht[-1] if not self.config.birnn else ht[-2:].transpose(0, 1).contiguous().view(batch_size, -1)

    class SNLIClassifier(nn.Module):

        def __init__(self, config):
            super(SNLIClassifier, self).__init__()
            self.config = config
            self.embed = nn.Embedding(config.n_embed, config.d_embed)
            self.projection = Linear(config.d_embed, config.d_proj)
            self.encoder = Encoder(config)
            self.dropout = nn.Dropout(p=config.dp_ratio)
            self.relu = nn.ReLU()
            seq_in_size = 2*config.d_hidden
            if self.config.birnn:
                seq_in_size *= 2
            lin_config = [seq_in_size]*2
            self.out = nn.Sequential(
                Linear(*lin_config),
                self.relu,
                self.dropout,
                Linear(*lin_config),
                self.relu,
                self.dropout,
                Linear(*lin_config),
                self.relu,
                self.dropout,
                Linear(seq_in_size, config.d_out))

        def forward(self, batch):
            prem_embed = self.embed(batch.premise)
            hypo_embed = self.embed(batch.hypothesis)
            if self.config.fix_emb:
                prem_embed = prem_embed.detach()
                hypo_embed = hypo_embed.detach()
            if self.config.projection:
                prem_embed = self.relu(self.projection(prem_embed))
                hypo_embed = self.relu(self.projection(hypo_embed))
            premise = self.encoder(prem_embed)
            hypothesis = self.encoder(hypo_embed)
            scores = self.out(torch.cat([premise, hypothesis], 1))
            return scores

    return SNLIClassifier(config)


def snli_batches(n_batches=4, batch_size=5):
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(n_batches):
        length = int(rng.integers(3, 7))
        premise = rng.integers(0, SNLI.n_embed, (length, batch_size))
        hypothesis = premise.copy()
        label = rng.integers(0, 3, batch_size)
        # entailment: the same sentence; contradiction: reversed; neutral: other words
        hypothesis[:, label == 1] = premise[::-1, label == 1]
        hypothesis[:, label == 2] = rng.integers(0, SNLI.n_embed, (length, int((label == 2).sum())))
        batches.append((premise, hypothesis, label))
    return batches


def snli(m, weights, batches, epochs=3):
    torch, nn = m.torch, m.nn
    model = load(m, snli_classifier(m), weights)
    criterion = nn.CrossEntropyLoss()
    opt = m.optim.Adam(model.parameters(), lr=0.01)
    log_template = ' '.join('{:>5.0f},{:>9.0f},{:>8.6f},{:12.4f}'.split(','))
    log = []
    iterations = 0
    for epoch in range(epochs):
        n_correct, n_total = 0, 0
        for batch_idx, (p, h, l) in enumerate(batches):
            batch = SimpleNamespace(premise=torch.from_numpy(p), hypothesis=torch.from_numpy(h),
                                    label=torch.from_numpy(l), batch_size=len(l))
            model.train(); opt.zero_grad()
            iterations += 1
            answer = model(batch)
            n_correct += (torch.max(answer, 1)[1].view(batch.label.size()) == batch.label).sum().item()
            n_total += batch.batch_size
            train_acc = 100. * n_correct/n_total
            loss = criterion(answer, batch.label)
            loss.backward(); opt.step()
        log.append(log_template.format(epoch, iterations, loss.item(), train_acc))
    n_modules = len(list(model.out.modules()))
    return log, dict(model.state_dict()), {n: p.grad for n, p in model.named_parameters()}, n_modules, answer


def test_snli_classifier():
    weights = weights_of(snli_classifier)
    assert "encoder.rnn.weight_hh_l1_reverse" in weights and "out.9.weight" in weights
    ours, theirs = run_both(snli, weights, snli_batches(), compare=False)
    if theirs is not None:
        assert_same(numbers_parsed(ours), numbers_parsed(theirs), 1e-4, 1e-5)
    log, state, grads, n_modules, answer = ours
    assert n_modules == 1 + 4 + 2  # Sequential, 4 Linears, the ReLU and the Dropout (each listed once)
    assert answer.shape == (5, 3) and len(log) == 3
    losses = [float(line.split()[2]) for line in log]
    assert losses[-1] < losses[0] and all(len(line) == 5 + 1 + 9 + 1 + 8 + 1 + 12 for line in log)
