# ruff: noqa: B007, B023, UP008  (the programs are kept as their authors wrote them)
"""PyTorch's NLP tutorials (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same
weights, comparing losses, scores and parameters. Word models: the n-gram language model and the CBOW exercise ("Word
embeddings: encoding lexical semantics"); pytorch/examples' word_language_model, an RNN LM trained by truncated BPTT
with repackaged hidden states, tied weights, a hand-written SGD step, clipping and learning-rate annealing."""

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Word embeddings: an n-gram language model and CBOW
# ----------------------------------------------------------------------------------------------

CONTEXT_SIZE, EMBEDDING_DIM = 2, 10
SONNET = """When forty winters shall besiege thy brow,
And dig deep trenches in thy beauty's field,
Thy youth's proud livery so gazed on now,
Will be a totter'd weed of small worth held:
Then being asked, where all thy beauty lies,
Where all the treasure of thy lusty days;""".split()
SICP = """We are about to study the idea of a computational process.
Computational processes are abstract beings that inhabit computers.
As they evolve, processes manipulate other abstract things called data.
The evolution of a process is directed by a pattern of rules
called a program. People create programs to direct processes. In effect,
we conjure the spirits of the computer with our spells.""".split()


def ngram_model(m):
    nn, F = m.nn, m.F

    class NGramLanguageModeler(nn.Module):
        def __init__(self, vocab_size, embedding_dim, context_size):
            super(NGramLanguageModeler, self).__init__()
            self.embeddings = nn.Embedding(vocab_size, embedding_dim)
            self.linear1 = nn.Linear(context_size * embedding_dim, 128)
            self.linear2 = nn.Linear(128, vocab_size)

        def forward(self, inputs):
            embeds = self.embeddings(inputs).view((1, -1))
            out = F.relu(self.linear1(embeds))
            out = self.linear2(out)
            log_probs = F.log_softmax(out, dim=1)
            return log_probs

    return NGramLanguageModeler(len(set(SONNET)), EMBEDDING_DIM, CONTEXT_SIZE)


def ngram_training(m, weights, epochs=3):
    torch, nn, optim = m.torch, m.nn, m.optim
    test_sentence = SONNET
    ngrams = [([test_sentence[i - j - 1] for j in range(CONTEXT_SIZE)], test_sentence[i])
              for i in range(CONTEXT_SIZE, len(test_sentence))]
    vocab = set(test_sentence)
    word_to_ix = {word: i for i, word in enumerate(vocab)}
    losses = []
    loss_function = nn.NLLLoss()
    model = load(m, ngram_model(m), weights)
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    for epoch in range(epochs):
        total_loss = 0
        for context, target in ngrams:
            context_idxs = torch.tensor([word_to_ix[w] for w in context], dtype=torch.long)
            model.zero_grad()
            log_probs = model(context_idxs)
            loss = loss_function(log_probs, torch.tensor([word_to_ix[target]], dtype=torch.long))
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
        losses.append(total_loss)
    return losses, model.embeddings.weight[word_to_ix["beauty"]]


def test_ngram_language_model():
    weights = weights_of(ngram_model)
    (losses, beauty), _ = run_both(ngram_training, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] and beauty.shape == (EMBEDDING_DIM,)


def cbow_model(m):
    nn, F = m.nn, m.F

    class CBOW(nn.Module):
        def __init__(self, vocab_size, embedding_dim):
            super().__init__()
            self.embeddings = nn.Embedding(vocab_size, embedding_dim)
            self.linear = nn.Linear(embedding_dim, vocab_size)

        def forward(self, inputs):
            embeds = sum(self.embeddings(inputs)).view(1, -1)  # the exercise's usual answer
            return F.log_softmax(self.linear(embeds), dim=1)

    return CBOW(len(set(SICP)), EMBEDDING_DIM)


def cbow_training(m, weights, epochs=4):
    torch, nn, optim = m.torch, m.nn, m.optim
    CONTEXT_SIZE = 2  # 2 words to the left, 2 to the right
    raw_text = SICP
    vocab = set(raw_text)
    word_to_ix = {word: i for i, word in enumerate(vocab)}
    ix_to_word = {i: word for word, i in word_to_ix.items()}
    data = []
    for i in range(CONTEXT_SIZE, len(raw_text) - CONTEXT_SIZE):
        context = ([raw_text[i - j - 1] for j in range(CONTEXT_SIZE)]
                   + [raw_text[i + j + 1] for j in range(CONTEXT_SIZE)])
        target = raw_text[i]
        data.append((context, target))

    def make_context_vector(context, word_to_ix):
        idxs = [word_to_ix[w] for w in context]
        return torch.tensor(idxs, dtype=torch.long)

    model = load(m, cbow_model(m), weights)
    loss_function = nn.NLLLoss()
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for epoch in range(epochs):
        total_loss = 0
        for context, target in data:
            context_vector = make_context_vector(context, word_to_ix)
            model.zero_grad()
            log_probs = model(context_vector)
            loss = loss_function(log_probs, torch.tensor([word_to_ix[target]]))
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
        losses.append(total_loss / len(data))
    with torch.no_grad():
        guess = ix_to_word[model(make_context_vector(data[0][0], word_to_ix)).argmax().item()]
        right = sum(ix_to_word[torch.argmax(model(make_context_vector(c, word_to_ix))).item()] == t for c, t in data)
    return losses, guess, right / len(data), model.linear.weight.grad


def test_cbow():
    weights = weights_of(cbow_model)
    (losses, guess, accuracy, grad), _ = run_both(cbow_training, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] / 2 and accuracy > 0.5 and isinstance(guess, str)


# ----------------------------------------------------------------------------------------------
# pytorch/examples' word_language_model: an RNN LM trained by truncated BPTT with repackaged hidden
# states, tied weights, a hand-written SGD step, clipping and learning-rate annealing
# ----------------------------------------------------------------------------------------------

CORPUS = ("the cat sat on the mat . the dog sat on the log . a cat and a dog sat on a mat . "
          "the cat saw the dog . the dog saw a cat on the log .").split()


def rnn_lm(m, rnn_type="LSTM", dropout=0.0):
    nn = m.nn

    class RNNModel(nn.Module):
        """Container module with an encoder, a recurrent module, and a decoder."""

        def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
            super(RNNModel, self).__init__()
            self.ntoken = ntoken
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            if rnn_type in ['LSTM', 'GRU']:
                self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
            else:
                nonlinearity = {'RNN_TANH': 'tanh', 'RNN_RELU': 'relu'}[rnn_type]
                self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=dropout)
            self.decoder = nn.Linear(nhid, ntoken)
            if tie_weights:
                if nhid != ninp:
                    raise ValueError('When using the tied flag, nhid must be equal to emsize')
                self.decoder.weight = self.encoder.weight
            self.init_weights()
            self.rnn_type = rnn_type
            self.nhid = nhid
            self.nlayers = nlayers

        def init_weights(self):
            initrange = 0.1
            nn.init.uniform_(self.encoder.weight, -initrange, initrange)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -initrange, initrange)

        def forward(self, input, hidden):
            emb = self.drop(self.encoder(input))
            output, hidden = self.rnn(emb, hidden)
            output = self.drop(output)
            decoded = self.decoder(output)
            decoded = decoded.view(-1, self.ntoken)
            return m.F.log_softmax(decoded, dim=1), hidden

        def init_hidden(self, bsz):
            weight = next(self.parameters())
            if self.rnn_type == 'LSTM':
                return (weight.new_zeros(self.nlayers, bsz, self.nhid),
                        weight.new_zeros(self.nlayers, bsz, self.nhid))
            else:
                return weight.new_zeros(self.nlayers, bsz, self.nhid)

    return RNNModel(rnn_type, len(set(CORPUS)), 8, 8, 2, dropout=dropout, tie_weights=True)


def word_language_model(m, weights, rnn_type="LSTM", epochs=3, bptt=5, clip=0.25):
    torch, nn = m.torch, m.nn
    import math
    words = sorted(set(CORPUS))
    ids = torch.tensor([words.index(w) for w in CORPUS], dtype=torch.int64)

    def batchify(data, bsz):
        nbatch = data.size(0) // bsz
        data = data.narrow(0, 0, nbatch * bsz)
        data = data.view(bsz, -1).t().contiguous()
        return data

    def repackage_hidden(h):
        """Wraps hidden states in new Tensors, to detach them from their history."""
        if isinstance(h, torch.Tensor):
            return h.detach()
        else:
            return tuple(repackage_hidden(v) for v in h)

    def get_batch(source, i):
        seq_len = min(bptt, len(source) - 1 - i)
        data = source[i:i + seq_len]
        target = source[i + 1:i + 1 + seq_len].view(-1)
        return data, target

    train_data = batchify(ids, 4)
    val_data = batchify(ids[:24], 2)
    model = load(m, rnn_lm(m, rnn_type), weights)
    criterion = nn.NLLLoss()
    lr = 5.0

    def evaluate(data_source):
        model.eval()
        total_loss = 0.
        hidden = model.init_hidden(2)
        with torch.no_grad():
            for i in range(0, data_source.size(0) - 1, bptt):
                data, targets = get_batch(data_source, i)
                output, hidden = model(data, hidden)
                hidden = repackage_hidden(hidden)
                total_loss += len(data) * criterion(output, targets).item()
        return total_loss / (len(data_source) - 1)

    log, best_val_loss = [], None
    for epoch in range(1, epochs + 1):
        model.train()
        total_loss = 0.
        hidden = model.init_hidden(4)
        for batch, i in enumerate(range(0, train_data.size(0) - 1, bptt)):
            data, targets = get_batch(train_data, i)
            model.zero_grad()
            hidden = repackage_hidden(hidden)
            output, hidden = model(data, hidden)
            loss = criterion(output, targets)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)  # torch.nn.utils in the original
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
            total_loss += loss.item()
        val_loss = evaluate(val_data)
        if not best_val_loss or val_loss < best_val_loss:
            best_val_loss = val_loss
        else:
            lr /= 4.0  # Anneal the learning rate if no improvement has been seen in the validation dataset.
        log.append((total_loss, val_loss, math.exp(val_loss), lr))
    tied = model.decoder.weight is model.encoder.weight
    return log, [p.detach() for p in model.parameters()], tied, len(list(model.parameters()))


def test_word_language_model():
    for rnn_type in ("LSTM", "GRU", "RNN_RELU"):
        weights = weights_of(lambda m: rnn_lm(m, rnn_type))
        (log, params, tied, n_params), _ = run_both(word_language_model, weights, rnn_type, rtol=1e-4, atol=1e-5)
        assert tied and log[-1][0] < log[0][0], rnn_type
        assert n_params == 1 + 8 + 1  # the embedding (tied: counted once), 2 layers of 4, the decoder's bias
        assert all(lr in (5.0, 1.25, 0.3125) for *_, lr in log)
