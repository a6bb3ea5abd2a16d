# ruff: noqa: B007, B023, E741, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""PyTorch's NLP tutorials (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from
the same weights, comparing losses, scores and parameters.

Not already among the program tests: the Bi-LSTM CRF ("Advanced: making dynamic decisions"), its forward
algorithm written with a scalar ``log_sum_exp`` over ``max_score.view(1, -1).expand(...)`` and its Viterbi
decode by ``torch.max(vec, 1)``; the n-gram language model and the CBOW exercise ("Word embeddings:
encoding lexical semantics"); the LSTM tagger's exercise that adds a character-level LSTM; the
char-RNN name generator (``torch.cat((category, input, hidden), 1)``, ``loss = torch.Tensor([0]);
loss += l``, ``target.unsqueeze_(-1)``, ``all_letters[topi]`` indexed by a 0-d tensor) and the newer
name classifier on ``nn.RNN`` with ``random_split`` by fractions, summed mini-batch losses and a
confusion matrix."""

import string

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Bi-LSTM CRF
# ----------------------------------------------------------------------------------------------

START_TAG, STOP_TAG = "<START>", "<STOP>"
CRF_DATA = [("the wall street journal reported today that apple corporation made money".split(),
             "B I I I O O O B I O O".split()),
            ("georgia tech is a university in georgia".split(), "B I O O O O B".split())]
CRF_WORDS = {}
for _sentence, _ in CRF_DATA:
    for _word in _sentence:
        CRF_WORDS.setdefault(_word, len(CRF_WORDS))
CRF_TAGS = {"B": 0, "I": 1, "O": 2, START_TAG: 3, STOP_TAG: 4}


def bilstm_crf(m, hidden_init=None):
    torch, nn = m.torch, m.nn

    def argmax(vec):
        # return the argmax as a python int
        _, idx = torch.max(vec, 1)
        return idx.item()

    # Compute log sum exp in a numerically stable way for the forward algorithm
    def log_sum_exp(vec):
        max_score = vec[0, argmax(vec)]
        max_score_broadcast = max_score.view(1, -1).expand(1, vec.size()[1])
        return max_score + torch.log(torch.sum(torch.exp(vec - max_score_broadcast)))

    class BiLSTM_CRF(nn.Module):
        def __init__(self, vocab_size, tag_to_ix, embedding_dim, hidden_dim):
            super(BiLSTM_CRF, self).__init__()
            self.embedding_dim = embedding_dim
            self.hidden_dim = hidden_dim
            self.vocab_size = vocab_size
            self.tag_to_ix = tag_to_ix
            self.tagset_size = len(tag_to_ix)
            self.word_embeds = nn.Embedding(vocab_size, embedding_dim)
            self.lstm = nn.LSTM(embedding_dim, hidden_dim // 2, num_layers=1, bidirectional=True)
            self.hidden2tag = nn.Linear(hidden_dim, self.tagset_size)
            self.transitions = nn.Parameter(torch.randn(self.tagset_size, self.tagset_size))
            self.transitions.data[tag_to_ix[START_TAG], :] = -10000
            self.transitions.data[:, tag_to_ix[STOP_TAG]] = -10000
            self.hidden = self.init_hidden()

        def init_hidden(self):
            # the tutorial draws torch.randn here; the same draw for both libraries instead
            if hidden_init is None:
                return (torch.zeros(2, 1, self.hidden_dim // 2), torch.zeros(2, 1, self.hidden_dim // 2))
            return (torch.tensor(hidden_init[0]), torch.tensor(hidden_init[1]))

        def _forward_alg(self, feats):
            init_alphas = torch.full((1, self.tagset_size), -10000.)
            init_alphas[0][self.tag_to_ix[START_TAG]] = 0.
            forward_var = init_alphas
            for feat in feats:
                alphas_t = []
                for next_tag in range(self.tagset_size):
                    emit_score = feat[next_tag].view(1, -1).expand(1, self.tagset_size)
                    trans_score = self.transitions[next_tag].view(1, -1)
                    next_tag_var = forward_var + trans_score + emit_score
                    alphas_t.append(log_sum_exp(next_tag_var).view(1))
                forward_var = torch.cat(alphas_t).view(1, -1)
            terminal_var = forward_var + self.transitions[self.tag_to_ix[STOP_TAG]]
            alpha = log_sum_exp(terminal_var)
            return alpha

        def _get_lstm_features(self, sentence):
            self.hidden = self.init_hidden()
            embeds = self.word_embeds(sentence).view(len(sentence), 1, -1)
            lstm_out, self.hidden = self.lstm(embeds, self.hidden)
            lstm_out = lstm_out.view(len(sentence), self.hidden_dim)
            lstm_feats = self.hidden2tag(lstm_out)
            return lstm_feats

        def _score_sentence(self, feats, tags):
            score = torch.zeros(1)
            tags = torch.cat([torch.tensor([self.tag_to_ix[START_TAG]], dtype=torch.long), tags])
            for i, feat in enumerate(feats):
                score = score + self.transitions[tags[i + 1], tags[i]] + feat[tags[i + 1]]
            score = score + self.transitions[self.tag_to_ix[STOP_TAG], tags[-1]]
            return score

        def _viterbi_decode(self, feats):
            backpointers = []
            init_vvars = torch.full((1, self.tagset_size), -10000.)
            init_vvars[0][self.tag_to_ix[START_TAG]] = 0
            forward_var = init_vvars
            for feat in feats:
                bptrs_t = []
                viterbivars_t = []
                for next_tag in range(self.tagset_size):
                    next_tag_var = forward_var + self.transitions[next_tag]
                    best_tag_id = argmax(next_tag_var)
                    bptrs_t.append(best_tag_id)
                    viterbivars_t.append(next_tag_var[0][best_tag_id].view(1))
                forward_var = (torch.cat(viterbivars_t) + feat).view(1, -1)
                backpointers.append(bptrs_t)
            terminal_var = forward_var + self.transitions[self.tag_to_ix[STOP_TAG]]
            best_tag_id = argmax(terminal_var)
            path_score = terminal_var[0][best_tag_id]
            best_path = [best_tag_id]
            for bptrs_t in reversed(backpointers):
                best_tag_id = bptrs_t[best_tag_id]
                best_path.append(best_tag_id)
            start = best_path.pop()
            assert start == self.tag_to_ix[START_TAG]  # Sanity check
            best_path.reverse()
            return path_score, best_path

        def neg_log_likelihood(self, sentence, tags):
            feats = self._get_lstm_features(sentence)
            forward_score = self._forward_alg(feats)
            gold_score = self._score_sentence(feats, tags)
            return forward_score - gold_score

        def forward(self, sentence):
            lstm_feats = self._get_lstm_features(sentence)
            score, tag_seq = self._viterbi_decode(lstm_feats)
            return score, tag_seq

    return BiLSTM_CRF(len(CRF_WORDS), CRF_TAGS, 5, 4)


def bilstm_crf_training(m, weights, hidden_init, epochs=6):
    torch, optim = m.torch, m.optim

    def prepare_sequence(seq, to_ix):
        idxs = [to_ix[w] for w in seq]
        return torch.tensor(idxs, dtype=torch.long)

    model = load(m, bilstm_crf(m, hidden_init), weights)
    optimizer = optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4)
    with torch.no_grad():
        precheck_sent = prepare_sequence(CRF_DATA[0][0], CRF_WORDS)
        precheck_tags = torch.tensor([CRF_TAGS[t] for t in CRF_DATA[0][1]], dtype=torch.long)
        before = model(precheck_sent)
        nll_before = model.neg_log_likelihood(precheck_sent, precheck_tags)
    losses = []
    for epoch in range(epochs):
        for sentence, tags in CRF_DATA:
            model.zero_grad()
            sentence_in = prepare_sequence(sentence, CRF_WORDS)
            targets = torch.tensor([CRF_TAGS[t] for t in tags], dtype=torch.long)
            loss = model.neg_log_likelihood(sentence_in, targets)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    grads = [p.grad.clone() for p in model.parameters()]
    with torch.no_grad():
        after = model(precheck_sent)
    return {"before": before, "nll_before": nll_before, "losses": losses, "after": after, "grads": grads,
            "transitions": model.transitions.detach()}


def test_bilstm_crf():
    weights = weights_of(bilstm_crf)
    rng = np.random.default_rng(1)
    hidden = [rng.standard_normal((2, 1, 2)).astype(np.float32) for _ in range(2)]
    ours, _ = run_both(bilstm_crf_training, weights, hidden, rtol=1e-4, atol=1e-4)
    assert ours["losses"][-1] < ours["losses"][0]
    assert len(ours["after"][1]) == len(CRF_DATA[0][0]) and all(0 <= t < 3 for t in ours["after"][1])
    assert ours["nll_before"].shape == (1,) and ours["nll_before"][0] > 0  # the gold path is one of many
    # never into START nor out of STOP: those rows and columns get no gradient but weight decay's
    assert (ours["transitions"][CRF_TAGS[START_TAG], :] < -9000).all()


def test_crf_partition_function_is_the_sum_over_all_paths():
    """The forward algorithm against brute force over every tag sequence of a 3-word sentence."""
    import itertools

    model = bilstm_crf(OURS)
    feats = OURS.torch.tensor(np.random.default_rng(0).standard_normal((3, 5)).astype(np.float64))
    model.double()
    alpha = model._forward_alg(feats).item()
    T = model.transitions.detach().numpy()
    f = feats.numpy()
    scores = []
    for path in itertools.product(range(5), repeat=3):
        s, prev = 0.0, CRF_TAGS[START_TAG]
        for i, tag in enumerate(path):
            s += T[tag, prev] + f[i, tag]
            prev = tag
        scores.append(s + T[CRF_TAGS[STOP_TAG], prev])
    assert np.isclose(alpha, np.logaddexp.reduce(scores), rtol=1e-9)
    score, path = model._viterbi_decode(feats)
    assert np.isclose(score.item(), max(scores)) and len(path) == 3


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
# Char-RNN: generating names, and classifying them with nn.RNN
# ----------------------------------------------------------------------------------------------

ALL_LETTERS = string.ascii_letters + " .,;'-"
N_LETTERS = len(ALL_LETTERS) + 1  # Plus EOS marker
CATEGORY_LINES = {"English": ["Smith", "Jones", "Taylor", "Brown", "Wilson", "Walker", "Wright"],
                  "Italian": ["Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo"],
                  "Russian": ["Ivanov", "Smirnov", "Popov", "Petrov", "Sokolov", "Volkov", "Pavlov"]}
ALL_CATEGORIES = list(CATEGORY_LINES)
N_CATEGORIES = len(ALL_CATEGORIES)


def generator_rnn(m, p_drop=0.1):
    torch, nn = m.torch, m.nn

    class RNN(nn.Module):
        def __init__(self, input_size, hidden_size, output_size):
            super(RNN, self).__init__()
            self.hidden_size = hidden_size
            self.i2h = nn.Linear(N_CATEGORIES + input_size + hidden_size, hidden_size)
            self.i2o = nn.Linear(N_CATEGORIES + input_size + hidden_size, output_size)
            self.o2o = nn.Linear(hidden_size + output_size, output_size)
            self.dropout = nn.Dropout(p_drop)
            self.softmax = nn.LogSoftmax(dim=1)

        def forward(self, category, input, hidden):
            input_combined = torch.cat((category, input, hidden), 1)
            hidden = self.i2h(input_combined)
            output = self.i2o(input_combined)
            output_combined = torch.cat((hidden, output), 1)
            output = self.o2o(output_combined)
            output = self.dropout(output)
            output = self.softmax(output)
            return output, hidden

        def initHidden(self):
            return torch.zeros(1, self.hidden_size)

    return RNN(N_LETTERS, 32, N_LETTERS)


def name_generation(m, weights, p_drop=0.0, epochs=4):
    torch, nn = m.torch, m.nn
    all_letters, n_letters, all_categories = ALL_LETTERS, N_LETTERS, ALL_CATEGORIES
    rnn = load(m, generator_rnn(m, p_drop), weights)

    def categoryTensor(category):
        li = all_categories.index(category)
        tensor = torch.zeros(1, N_CATEGORIES)
        tensor[0][li] = 1
        return tensor

    def inputTensor(line):
        tensor = torch.zeros(len(line), 1, n_letters)
        for li in range(len(line)):
            letter = line[li]
            tensor[li][0][all_letters.find(letter)] = 1
        return tensor

    def targetTensor(line):
        letter_indexes = [all_letters.find(line[li]) for li in range(1, len(line))]
        letter_indexes.append(n_letters - 1)  # EOS
        return torch.LongTensor(letter_indexes)

    criterion = nn.NLLLoss()
    learning_rate = 0.05

    def train(category_tensor, input_line_tensor, target_line_tensor):
        target_line_tensor.unsqueeze_(-1)
        hidden = rnn.initHidden()
        rnn.zero_grad()
        loss = torch.Tensor([0])  # you can also just simply use ``loss = 0``
        for i in range(input_line_tensor.size(0)):
            output, hidden = rnn(category_tensor, input_line_tensor[i], hidden)
            l = criterion(output, target_line_tensor[i])
            loss += l
        loss.backward()
        for p in rnn.parameters():
            p.data.add_(p.grad.data, alpha=-learning_rate)
        return output, loss.item() / input_line_tensor.size(0)

    max_length = 8

    def sample(category, start_letter='A'):
        with torch.no_grad():  # no need to track history in sampling
            category_tensor = categoryTensor(category)
            input = inputTensor(start_letter)
            hidden = rnn.initHidden()
            output_name = start_letter
            for i in range(max_length):
                output, hidden = rnn(category_tensor, input[0], hidden)
                topv, topi = output.topk(1)
                topi = topi[0][0]
                if topi == n_letters - 1:
                    break
                else:
                    letter = all_letters[topi]
                    output_name += letter
                input = inputTensor(letter)
            return output_name

    pairs = [(c, line) for c in all_categories for line in CATEGORY_LINES[c]]
    all_losses = []
    for epoch in range(epochs):
        total_loss = 0
        for category, line in pairs:
            output, loss = train(categoryTensor(category), inputTensor(line), targetTensor(line))
            total_loss += loss
        all_losses.append(total_loss / len(pairs))
    rnn.eval()
    samples = [sample(c, s) for c in all_categories for s in "RSP"]
    return all_losses, samples, [p.detach() for p in rnn.parameters()]


def test_char_rnn_name_generation():
    weights = weights_of(generator_rnn)
    (losses, samples, params), _ = run_both(name_generation, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] and all(s[0] in "RSP" and len(s) <= 9 for s in samples)
    # with the tutorial's dropout (each library its own draws) on chainrule alone
    losses, samples, _ = name_generation(OURS, weights, p_drop=0.1)
    assert losses[-1] < losses[0]


def rnn_classifier(m):
    nn = m.nn

    class CharRNN(nn.Module):
        def __init__(self, input_size, hidden_size, output_size):
            super(CharRNN, self).__init__()
            self.rnn = nn.RNN(input_size, hidden_size)
            self.h2o = nn.Linear(hidden_size, output_size)
            self.softmax = nn.LogSoftmax(dim=1)

        def forward(self, line_tensor):
            rnn_out, hidden = self.rnn(line_tensor)
            output = self.h2o(hidden[0])
            output = self.softmax(output)
            return output

    return CharRNN(N_LETTERS, 16, N_CATEGORIES)


def name_classification(m, weights, n_epoch=6, n_batch_size=5, learning_rate=0.15):
    torch, nn = m.torch, m.nn
    Dataset = m.data.Dataset

    def lineToTensor(line):
        tensor = torch.zeros(len(line), 1, N_LETTERS)
        for li, letter in enumerate(line):
            tensor[li][0][ALL_LETTERS.find(letter)] = 1
        return tensor

    class NamesDataset(Dataset):
        def __init__(self):
            self.data, self.data_tensors, self.labels, self.labels_tensors = [], [], [], []
            labels_set = set()
            for label, lines in CATEGORY_LINES.items():
                labels_set.add(label)
                for name in lines:
                    self.data.append(name)
                    self.data_tensors.append(lineToTensor(name))
                    self.labels.append(label)
            self.labels_uniq = sorted(labels_set)
            for idx in range(len(self.labels)):
                temp_tensor = torch.tensor([self.labels_uniq.index(self.labels[idx])], dtype=torch.long)
                self.labels_tensors.append(temp_tensor)

        def __len__(self):
            return len(self.data)

        def __getitem__(self, idx):
            return self.labels_tensors[idx], self.data_tensors[idx], self.labels[idx], self.data[idx]

    alldata = NamesDataset()
    train_set, test_set = m.data.random_split(alldata, [.85, .15], generator=torch.Generator().manual_seed(2024))
    split_sizes = (len(train_set), len(test_set))
    training_data = alldata  # each library draws its own split: train on all of it, in a fixed order
    rnn = load(m, rnn_classifier(m), weights)
    criterion = nn.NLLLoss()
    rnn.train()
    optimizer = m.optim.SGD(rnn.parameters(), lr=learning_rate)  # torch.optim.SGD in the tutorial
    order = np.random.default_rng(3)
    all_losses = []
    for iter in range(1, n_epoch + 1):
        rnn.zero_grad()
        batches = list(range(len(training_data)))
        order.shuffle(batches)
        batches = np.array_split(batches, len(batches) // n_batch_size)
        current_loss = 0
        for idx, batch in enumerate(batches):
            batch_loss = 0
            for i in batch:
                (label_tensor, text_tensor, label, text) = training_data[i]
                output = rnn.forward(text_tensor)
                loss = criterion(output, label_tensor)
                batch_loss += loss
            batch_loss.backward()
            nn.utils.clip_grad_norm_(rnn.parameters(), 3)
            optimizer.step()
            optimizer.zero_grad()
            current_loss += batch_loss.item() / len(batch)
        all_losses.append(current_loss / len(batches))

    def label_from_output(output, output_labels):
        top_n, top_i = output.topk(1)
        label_i = top_i[0].item()
        return output_labels[label_i], label_i

    classes = alldata.labels_uniq
    confusion = torch.zeros(len(classes), len(classes))
    rnn.eval()
    with torch.no_grad():
        for i in range(len(alldata)):
            (label_tensor, text_tensor, label, text) = alldata[i]
            output = rnn(text_tensor)
            guess, guess_i = label_from_output(output, classes)
            label_i = classes.index(label)
            confusion[label_i][guess_i] += 1
    for i in range(len(classes)):
        denom = confusion[i].sum()
        if denom > 0:
            confusion[i] = confusion[i] / denom
    return all_losses, confusion, split_sizes, [p.detach() for p in rnn.parameters()]


def test_char_rnn_name_classification_with_nn_rnn():
    weights = weights_of(rnn_classifier)
    (losses, confusion, sizes, params), _ = run_both(name_classification, weights, rtol=1e-4, atol=1e-5)
    assert sizes == (18, 3)  # 0.85 * 21 floors to 17, and the one left over goes to the first part
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(confusion.sum(1), 1.0, rtol=1e-6)
    assert np.trace(confusion) > 1.5  # better than chance (1.0)


# ----------------------------------------------------------------------------------------------
# The batched CRF of the pytorch-crf package (kmkurn/pytorch-crf), on top of a BiLSTM
# ----------------------------------------------------------------------------------------------


def crf_tagger(m):
    torch, nn = m.torch, m.nn

    class CRF(nn.Module):
        def __init__(self, num_tags, batch_first=False):
            if num_tags <= 0:
                raise ValueError(f'invalid number of tags: {num_tags}')
            super().__init__()
            self.num_tags = num_tags
            self.batch_first = batch_first
            self.start_transitions = nn.Parameter(torch.empty(num_tags))
            self.end_transitions = nn.Parameter(torch.empty(num_tags))
            self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
            self.reset_parameters()

        def reset_parameters(self):
            nn.init.uniform_(self.start_transitions, -0.1, 0.1)
            nn.init.uniform_(self.end_transitions, -0.1, 0.1)
            nn.init.uniform_(self.transitions, -0.1, 0.1)

        def forward(self, emissions, tags, mask=None, reduction='sum'):
            if reduction not in ('none', 'sum', 'mean', 'token_mean'):
                raise ValueError(f'invalid reduction: {reduction}')
            if mask is None:
                mask = torch.ones_like(tags, dtype=torch.uint8)
            if self.batch_first:
                emissions = emissions.transpose(0, 1)
                tags = tags.transpose(0, 1)
                mask = mask.transpose(0, 1)
            numerator = self._compute_score(emissions, tags, mask)
            denominator = self._compute_normalizer(emissions, mask)
            llh = numerator - denominator
            if reduction == 'none':
                return llh
            if reduction == 'sum':
                return llh.sum()
            if reduction == 'mean':
                return llh.mean()
            assert reduction == 'token_mean'
            return llh.sum() / mask.float().sum()

        def decode(self, emissions, mask=None):
            if mask is None:
                mask = emissions.new_ones(emissions.shape[:2], dtype=torch.uint8)
            if self.batch_first:
                emissions = emissions.transpose(0, 1)
                mask = mask.transpose(0, 1)
            return self._viterbi_decode(emissions, mask)

        def _compute_score(self, emissions, tags, mask):
            seq_length, batch_size = tags.shape
            mask = mask.float()
            score = self.start_transitions[tags[0]]
            score += emissions[0, torch.arange(batch_size), tags[0]]
            for i in range(1, seq_length):
                score += self.transitions[tags[i - 1], tags[i]] * mask[i]
                score += emissions[i, torch.arange(batch_size), tags[i]] * mask[i]
            seq_ends = mask.long().sum(dim=0) - 1
            last_tags = tags[seq_ends, torch.arange(batch_size)]
            score += self.end_transitions[last_tags]
            return score

        def _compute_normalizer(self, emissions, mask):
            seq_length = emissions.size(0)
            score = self.start_transitions + emissions[0]
            for i in range(1, seq_length):
                broadcast_score = score.unsqueeze(2)
                broadcast_emissions = emissions[i].unsqueeze(1)
                next_score = broadcast_score + self.transitions + broadcast_emissions
                next_score = torch.logsumexp(next_score, dim=1)
                score = torch.where(mask[i].unsqueeze(1), next_score, score)
            score += self.end_transitions
            return torch.logsumexp(score, dim=1)

        def _viterbi_decode(self, emissions, mask):
            seq_length, batch_size = mask.shape
            score = self.start_transitions + emissions[0]
            history = []
            for i in range(1, seq_length):
                broadcast_score = score.unsqueeze(2)
                broadcast_emission = emissions[i].unsqueeze(1)
                next_score = broadcast_score + self.transitions + broadcast_emission
                next_score, indices = next_score.max(dim=1)
                score = torch.where(mask[i].unsqueeze(1), next_score, score)
                history.append(indices)
            score += self.end_transitions
            seq_ends = mask.long().sum(dim=0) - 1
            best_tags_list = []
            for idx in range(batch_size):
                _, best_last_tag = score[idx].max(dim=0)
                best_tags = [best_last_tag.item()]
                for hist in reversed(history[:seq_ends[idx]]):
                    best_last_tag = hist[idx][best_tags[-1]]
                    best_tags.append(best_last_tag.item())
                best_tags.reverse()
                best_tags_list.append(best_tags)
            return best_tags_list

    class BiLSTMCRF(nn.Module):
        def __init__(self, vocab_size, num_tags, embedding_dim=6, hidden_dim=8):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
            self.lstm = nn.LSTM(embedding_dim, hidden_dim // 2, bidirectional=True, batch_first=True)
            self.hidden2tag = nn.Linear(hidden_dim, num_tags)
            self.crf = CRF(num_tags, batch_first=True)

        def forward(self, x):
            return self.hidden2tag(self.lstm(self.embedding(x))[0])

    return BiLSTMCRF(len(CRF_WORDS) + 1, 3)


def crf_training(m, weights, mask_dtype="bool", epochs=6):
    torch = m.torch
    model = load(m, crf_tagger(m), weights)
    tag_ix = {"B": 0, "I": 1, "O": 2}
    longest = max(len(s) for s, _ in CRF_DATA)
    x = torch.zeros(len(CRF_DATA), longest, dtype=torch.long)
    tags = torch.zeros(len(CRF_DATA), longest, dtype=torch.long)
    for b, (sentence, labels) in enumerate(CRF_DATA):
        x[b, :len(sentence)] = torch.tensor([CRF_WORDS[w] + 1 for w in sentence])
        tags[b, :len(labels)] = torch.tensor([tag_ix[t] for t in labels])
    mask = (x != 0).to(getattr(torch, mask_dtype))
    optimizer = m.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for epoch in range(epochs):
        optimizer.zero_grad()
        loss = -model.crf(model(x), tags, mask=mask, reduction="mean")
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        emissions = model(x)
        decoded = model.crf.decode(emissions, mask=mask)
        per_sequence = model.crf(emissions, tags, mask=mask, reduction="none")
        token_mean = model.crf(emissions, tags, mask=mask, reduction="token_mean")
        n = len(CRF_DATA[0][0])  # no padding: the package's default mask, all ones in uint8
        default = None if mask_dtype == "uint8" else torch.ones(1, n, dtype=torch.bool)
        unmasked = model.crf(emissions[:1, :n], tags[:1, :n], mask=default)
    return {"losses": losses, "decoded": decoded, "per_sequence": per_sequence, "token_mean": token_mean,
            "unmasked": unmasked, "grads": [p.grad for p in model.parameters()]}


def test_pytorch_crf_with_a_bool_mask():
    weights = weights_of(crf_tagger)
    ours, _ = run_both(crf_training, weights, rtol=1e-4, atol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0]
    assert [len(d) for d in ours["decoded"]] == [len(s) for s, _ in CRF_DATA]
    assert np.isclose(ours["per_sequence"].sum() / 18, ours["token_mean"], rtol=1e-6)
    assert np.isclose(ours["unmasked"], ours["per_sequence"][0], rtol=1e-5)  # the first sentence is the longest
    assert (ours["per_sequence"] < 0).all()  # log-likelihoods


def test_pytorch_crf_with_its_default_uint8_mask():
    weights = weights_of(crf_tagger)
    ours, _ = run_both(crf_training, weights, mask_dtype="uint8", rtol=1e-4, atol=1e-5)
    bools = crf_training(OURS, weights)
    np.testing.assert_allclose(ours["losses"], bools["losses"], rtol=1e-6)
    with pytest.warns(UserWarning, match="where received a uint8 condition tensor"):
        OURS.torch.where(OURS.torch.tensor([1, 0], dtype=OURS.torch.uint8), 1.0, 0.0)


# ----------------------------------------------------------------------------------------------
# Sampling written as a generator under @torch.no_grad(): each letter as it comes
# ----------------------------------------------------------------------------------------------


def streamed_names(m, weights, start_letters="RSP"):
    torch = m.torch
    rnn = load(m, generator_rnn(m, 0.0), weights)
    rnn.eval()

    def category_tensor(category):
        tensor = torch.zeros(1, N_CATEGORIES)
        tensor[0][ALL_CATEGORIES.index(category)] = 1
        return tensor

    def letter_tensor(letter):
        tensor = torch.zeros(1, N_LETTERS)
        tensor[0][ALL_LETTERS.find(letter)] = 1
        return tensor

    @torch.no_grad()
    def stream(category, start_letter, max_length=6):
        hidden = rnn.initHidden()
        input = letter_tensor(start_letter)
        for i in range(max_length):
            output, hidden = rnn(category_tensor(category), input, hidden)
            topv, topi = output.topk(1)
            yield output, topi.item()
            if topi.item() == N_LETTERS - 1:
                return
            input = letter_tensor(ALL_LETTERS[topi.item()])

    names, recorded = [], []
    for category in ALL_CATEGORIES:
        for start in start_letters:
            name = start
            for output, index in stream(category, start):
                recorded.append(output.requires_grad or output.grad_fn is not None)
                if index < len(ALL_LETTERS):
                    name += ALL_LETTERS[index]
            names.append(name)
    return names, any(recorded), torch.is_grad_enabled()


def test_a_sampling_generator_under_no_grad_records_nothing():
    weights = weights_of(generator_rnn)
    (names, recorded, enabled_after), _ = run_both(streamed_names, weights)
    assert not recorded and enabled_after and all(len(n) >= 1 for n in names)


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
