# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""PyTorch's NLP tutorials (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same
weights, comparing losses, scores and parameters. The char-RNN name generator (``torch.cat((category, input, hidden),
1)``, ``loss = torch.Tensor([0]); loss += l``, ``target.unsqueeze_(-1)``, ``all_letters[topi]`` indexed by a 0-d
tensor) and the newer name classifier on ``nn.RNN`` with ``random_split`` by fractions, summed mini-batch losses and
a confusion matrix; sampling written as a generator under ``@torch.no_grad()``, each letter as it comes."""

import string

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of

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
