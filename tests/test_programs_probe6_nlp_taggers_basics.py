# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""PyTorch's NLP tutorials (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same
weights, comparing losses, scores and parameters. The LSTM tagger's exercise that adds a character-level LSTM (its
last hidden state joins each word's embedding); "Deep learning with PyTorch" (the NLP tutorial's first parts): a
bag-of-words classifier, and the LSTM fed one step at a time against the whole sequence at once."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# The LSTM tagger's exercise: a character-level LSTM's last hidden state joins each word's embedding
# ----------------------------------------------------------------------------------------------

TAG_DATA = [("The dog ate the apple".split(), ["DET", "NN", "V", "DET", "NN"]),
            ("Everybody read that book".split(), ["NN", "V", "DET", "NN"])]


def char_tagger(m):
    torch, nn, F = m.torch, m.nn, m.F
    word_to_ix, char_to_ix = {}, {}
    for sent, _ in TAG_DATA:
        for word in sent:
            word_to_ix.setdefault(word, len(word_to_ix))
            for c in word:
                char_to_ix.setdefault(c, len(char_to_ix))

    class LSTMTagger(nn.Module):
        def __init__(self, embedding_dim, char_dim, char_hidden, hidden_dim, vocab_size, n_chars, tagset_size):
            super(LSTMTagger, self).__init__()
            self.char_hidden = char_hidden
            self.word_embeddings = nn.Embedding(vocab_size, embedding_dim)
            self.char_embeddings = nn.Embedding(n_chars, char_dim)
            self.char_lstm = nn.LSTM(char_dim, char_hidden)
            self.lstm = nn.LSTM(embedding_dim + char_hidden, hidden_dim)
            self.hidden2tag = nn.Linear(hidden_dim, tagset_size)

        def char_repr(self, word):
            chars = torch.tensor([char_to_ix[c] for c in word], dtype=torch.long)
            _, (h_n, _) = self.char_lstm(self.char_embeddings(chars).view(len(word), 1, -1))
            return h_n.view(1, self.char_hidden)

        def forward(self, sentence, words):
            embeds = self.word_embeddings(sentence)
            chars = torch.cat([self.char_repr(w) for w in words], dim=0)
            lstm_in = torch.cat((embeds, chars), 1)
            lstm_out, _ = self.lstm(lstm_in.view(len(sentence), 1, -1))
            tag_space = self.hidden2tag(lstm_out.view(len(sentence), -1))
            return F.log_softmax(tag_space, dim=1)

    model = LSTMTagger(6, 3, 3, 6, len(word_to_ix), len(char_to_ix), 3)
    model.word_to_ix = word_to_ix
    return model


def char_tagger_training(m, weights, epochs=15):
    torch, nn, optim = m.torch, m.nn, m.optim
    tag_to_ix = {"DET": 0, "NN": 1, "V": 2}
    model = load(m, char_tagger(m), weights)
    loss_function = nn.NLLLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.3)
    losses = []
    for epoch in range(epochs):
        for sentence, tags in TAG_DATA:
            model.zero_grad()
            sentence_in = torch.tensor([model.word_to_ix[w] for w in sentence], dtype=torch.long)
            targets = torch.tensor([tag_to_ix[t] for t in tags], dtype=torch.long)
            loss = loss_function(model(sentence_in, sentence), targets)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    char_grad = model.char_embeddings.weight.grad.clone()
    with torch.no_grad():
        scores = model(torch.tensor([model.word_to_ix[w] for w in TAG_DATA[0][0]]), TAG_DATA[0][0])
    return losses, scores, char_grad, [p.detach() for p in model.parameters()]


def test_lstm_tagger_with_character_features():
    weights = weights_of(char_tagger)
    (losses, scores, char_grad, params), _ = run_both(char_tagger_training, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] and np.abs(char_grad).max() > 0
    np.testing.assert_allclose(np.exp(scores).sum(1), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# "Deep learning with PyTorch" (the NLP tutorial's first parts): a bag-of-words classifier, and the
# LSTM fed one step at a time against the whole sequence at once
# ----------------------------------------------------------------------------------------------

BOW_DATA = [("me gusta comer en la cafeteria".split(), "SPANISH"),
            ("Give it to me".split(), "ENGLISH"),
            ("No creo que sea una buena idea".split(), "SPANISH"),
            ("No it is not a good idea to get lost at sea".split(), "ENGLISH")]
BOW_TEST = [("Yo creo que si".split(), "SPANISH"), ("it is lost on me".split(), "ENGLISH")]


def bow_model(m):
    nn, F = m.nn, m.F
    word_to_ix = {}
    for sent, _ in BOW_DATA + BOW_TEST:
        for word in sent:
            if word not in word_to_ix:
                word_to_ix[word] = len(word_to_ix)

    class BoWClassifier(nn.Module):
        def __init__(self, num_labels, vocab_size):
            super(BoWClassifier, self).__init__()
            self.linear = nn.Linear(vocab_size, num_labels)

        def forward(self, bow_vec):
            return F.log_softmax(self.linear(bow_vec), dim=1)

    model = BoWClassifier(2, len(word_to_ix))
    model.word_to_ix = word_to_ix
    return model


def bow_training(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, bow_model(m), weights)
    word_to_ix = model.word_to_ix
    label_to_ix = {"SPANISH": 0, "ENGLISH": 1}

    def make_bow_vector(sentence, word_to_ix):
        vec = torch.zeros(len(word_to_ix))
        for word in sentence:
            vec[word_to_ix[word]] += 1
        return vec.view(1, -1)

    def make_target(label, label_to_ix):
        return torch.LongTensor([label_to_ix[label]])

    with torch.no_grad():
        before = [model(make_bow_vector(instance, word_to_ix)) for instance, label in BOW_TEST]
    creo_before = next(model.parameters())[:, word_to_ix["creo"]].clone()
    loss_function = nn.NLLLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(100):
        for instance, label in BOW_DATA:
            model.zero_grad()
            bow_vec = make_bow_vector(instance, word_to_ix)
            target = make_target(label, label_to_ix)
            log_probs = model(bow_vec)
            loss = loss_function(log_probs, target)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        after = [model(make_bow_vector(instance, word_to_ix)) for instance, label in BOW_TEST]
    return before, after, creo_before, next(model.parameters())[:, word_to_ix["creo"]]


def test_bag_of_words_classifier():
    weights = weights_of(bow_model)
    (before, after, creo_before, creo_after), _ = run_both(bow_training, weights, rtol=1e-4, atol=1e-5)
    assert [a.argmax() for a in after] == [0, 1]  # Spanish, English
    assert creo_after[0] > creo_before[0] and creo_after[1] < creo_before[1]  # "creo" now says Spanish


def lstm_demo(m, inputs, hiddens):
    torch, nn = m.torch, m.nn
    torch.manual_seed(1)
    lstm = nn.LSTM(3, 3)  # Input dim is 3, output dim is 3
    with torch.no_grad():
        for i, p in enumerate(lstm.parameters()):
            p.copy_(torch.tensor(np.random.default_rng(i).standard_normal(tuple(p.shape)).astype(np.float32) * 0.5))
    inputs = [torch.tensor(x) for x in inputs]  # torch.randn(1, 3) in the tutorial
    hidden = (torch.tensor(hiddens[0]), torch.tensor(hiddens[1]))
    outs = []
    for i in inputs:
        # Step through the sequence one element at a time.
        out, hidden = lstm(i.view(1, 1, -1), hidden)
        outs.append(out)
    stepped = (torch.cat(outs), hidden)
    inputs = torch.cat(inputs).view(len(inputs), 1, -1)
    hidden = (torch.tensor(hiddens[0]), torch.tensor(hiddens[1]))  # clean out hidden state
    out, hidden = lstm(inputs, hidden)
    return stepped, (out, hidden)


def test_lstm_step_by_step_equals_the_whole_sequence():
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 3)).astype(np.float32) for _ in range(5)]
    hiddens = [rng.standard_normal((1, 1, 3)).astype(np.float32) for _ in range(2)]
    ((stepped_out, stepped_hidden), (out, hidden)), _ = run_both(lstm_demo, inputs, hiddens)
    np.testing.assert_allclose(stepped_out, out, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stepped_hidden[0], hidden[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[-1], hidden[0][0], rtol=1e-6)
