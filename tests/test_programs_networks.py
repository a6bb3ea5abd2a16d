# ruff: noqa: B007, B023, E741, UP004, UP008, UP032, UP034, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is
a function of the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``, ``data``),
run on chainrule and, where PyTorch is installed, on PyTorch, comparing the numbers.

Convolutional and recurrent networks and embeddings, as PyTorch programs write them."""


import numpy as np

from .pytorch_programs import load, quickstart_data, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# CNN (the CIFAR-10 tutorial's Net on random images), RNNs, embeddings
# ----------------------------------------------------------------------------------------------

def mnist_example(m, weights):
    """pytorch/examples' mnist/main.py on random 12x12 'digits': Conv2d/Dropout/max_pool2d/log_softmax,
    F.nll_loss, Adadelta with StepLR, the train/test functions and their log lines."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    StepLR = optim.lr_scheduler.StepLR

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, 1)
            self.conv2 = nn.Conv2d(8, 16, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(256, 32)
            self.fc2 = nn.Linear(32, 4)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = torch.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.dropout2(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    def train(args, model, device, train_loader, optimizer, epoch, log):
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            if batch_idx % args["log_interval"] == 0:
                log.append('Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'.format(
                    epoch, batch_idx * len(data), len(train_loader.dataset),
                    100. * batch_idx / len(train_loader), loss.item()))

    def test(model, device, test_loader, log):
        model.eval()
        test_loss = 0
        correct = 0
        with torch.no_grad():
            for data, target in test_loader:
                data, target = data.to(device), target.to(device)
                output = model(data)
                test_loss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
                pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
                correct += pred.eq(target.view_as(pred)).sum().item()
        test_loss /= len(test_loader.dataset)
        log.append('\nTest set: Average loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)\n'.format(
            test_loss, correct, len(test_loader.dataset),
            100. * correct / len(test_loader.dataset)))
        return test_loss, correct

    args = {"batch_size": 16, "test_batch_size": 32, "epochs": 3, "lr": 1.0, "gamma": 0.7, "log_interval": 4,
            "seed": 1}
    use_cuda = torch.cuda.is_available()
    torch.manual_seed(args["seed"])
    device = torch.device("cuda") if use_cuda else torch.device("cpu")
    train_kwargs = {'batch_size': args["batch_size"]}
    test_kwargs = {'batch_size': args["test_batch_size"]}
    images, labels = quickstart_data(n=160, side=12, classes=4, seed=13)
    dataset1 = m.data.TensorDataset(torch.tensor(images[:128]), torch.tensor(labels[:128]))
    dataset2 = m.data.TensorDataset(torch.tensor(images[128:]), torch.tensor(labels[128:]))
    train_loader = m.data.DataLoader(dataset1, **train_kwargs)
    test_loader = m.data.DataLoader(dataset2, **test_kwargs)
    model = Net().to(device)
    if weights is None:
        return model
    load(m, model, weights)
    optimizer = optim.Adadelta(model.parameters(), lr=args["lr"])
    scheduler = StepLR(optimizer, step_size=1, gamma=args["gamma"])
    log, results = [], []
    for epoch in range(1, args["epochs"] + 1):
        train(args, model, device, train_loader, optimizer, epoch, log)
        results.append(test(model, device, test_loader, log))
        scheduler.step()
    return {"results": results, "log": log[:2]}


def test_mnist_example():
    weights = weights_of(lambda m: mnist_example(m, None))
    ours, _ = run_both(mnist_example, weights, compare=False)
    assert ours["log"][0].startswith("Train Epoch: 1 [0/128 (0%)]\tLoss: ")
    loss, correct = ours["results"][-1]
    assert correct >= 28 and loss < ours["results"][0][0] + 0.1


def modern_device_selection(m):
    """Device lines of current tutorials and examples: torch.accelerator, torch.backends.mps."""
    torch = m.torch
    device = torch.accelerator.current_accelerator().type if torch.accelerator.is_available() else "cpu"
    use_mps = torch.backends.mps.is_available()
    return device, use_mps


def test_modern_device_selection():
    ours, _ = run_both(modern_device_selection)
    assert ours == ("cpu", False)


def cifar_net(m):
    nn, F, torch = m.nn, m.F, m.torch

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = torch.flatten(x, 1)  # flatten all dimensions except batch
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            x = self.fc3(x)
            return x

    return Net()


def cifar_training(m, weights, path):
    torch, nn, optim = m.torch, m.nn, m.optim
    net = load(m, cifar_net(m), weights)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(6)
    images = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 16)
    trainloader = m.data.DataLoader(m.data.TensorDataset(torch.tensor(images), torch.tensor(labels)),
                                    batch_size=4, shuffle=False, num_workers=0)
    losses = []
    for epoch in range(3):
        running_loss = 0.0
        for i, data in enumerate(trainloader, 0):
            inputs, labels_ = data
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels_)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        losses.append(running_loss / len(trainloader))
    torch.save(net.state_dict(), path)
    net = load(m, cifar_net(m), {k: v.numpy() for k, v in torch.load(path).items()})
    correct = 0
    total = 0
    with torch.no_grad():
        for data in trainloader:
            images_, labels_ = data
            outputs = net(images_)
            _, predicted = torch.max(outputs.data, 1)
            total += labels_.size(0)
            correct += (predicted == labels_).sum().item()
    params = sum(p.numel() for p in net.parameters())
    return {"losses": losses, "accuracy": correct / total, "params": params}


def test_cifar_net(tmp_path):
    weights = weights_of(cifar_net)
    ours, _ = run_both(cifar_training, weights, tmp_path / "cifar_net.pth", rtol=2e-3, atol=1e-4)
    assert ours["params"] == 62006
    assert ours["losses"][-1] < ours["losses"][0]


def lstm_tagger(m, weights):
    """The sequence models tutorial: an LSTM part-of-speech tagger."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    def prepare_sequence(seq, to_ix):
        idxs = [to_ix[w] for w in seq]
        return torch.tensor(idxs, dtype=torch.long)

    training_data = [
        ("The dog ate the apple".split(), ["DET", "NN", "V", "DET", "NN"]),
        ("Everybody read that book".split(), ["NN", "V", "DET", "NN"])
    ]
    word_to_ix = {}
    for sent, tags in training_data:
        for word in sent:
            if word not in word_to_ix:
                word_to_ix[word] = len(word_to_ix)
    tag_to_ix = {"DET": 0, "NN": 1, "V": 2}
    EMBEDDING_DIM = 6
    HIDDEN_DIM = 6

    class LSTMTagger(nn.Module):
        def __init__(self, embedding_dim, hidden_dim, vocab_size, tagset_size):
            super(LSTMTagger, self).__init__()
            self.hidden_dim = hidden_dim
            self.word_embeddings = nn.Embedding(vocab_size, embedding_dim)
            self.lstm = nn.LSTM(embedding_dim, hidden_dim)
            self.hidden2tag = nn.Linear(hidden_dim, tagset_size)

        def forward(self, sentence):
            embeds = self.word_embeddings(sentence)
            lstm_out, _ = self.lstm(embeds.view(len(sentence), 1, -1))
            tag_space = self.hidden2tag(lstm_out.view(len(sentence), -1))
            tag_scores = F.log_softmax(tag_space, dim=1)
            return tag_scores

    model = LSTMTagger(EMBEDDING_DIM, HIDDEN_DIM, len(word_to_ix), len(tag_to_ix))
    if weights is None:
        return model
    load(m, model, weights)
    loss_function = nn.NLLLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.5)
    with torch.no_grad():
        inputs = prepare_sequence(training_data[0][0], word_to_ix)
        before = model(inputs)
    for epoch in range(60):
        for sentence, tags in training_data:
            model.zero_grad()
            sentence_in = prepare_sequence(sentence, word_to_ix)
            targets = prepare_sequence(tags, tag_to_ix)
            tag_scores = model(sentence_in)
            loss = loss_function(tag_scores, targets)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        inputs = prepare_sequence(training_data[0][0], word_to_ix)
        tag_scores = model(inputs)
    return {"before": before, "after": tag_scores, "tags": tag_scores.argmax(dim=1).tolist()}


def test_lstm_tagger():
    weights = weights_of(lambda m: lstm_tagger(m, None))
    ours, _ = run_both(lstm_tagger, weights, rtol=1e-3, atol=1e-4)
    assert ours["tags"] == [0, 1, 2, 0, 1]


def char_rnn_classifier(m, weights):
    """'NLP From Scratch: classifying names with a character-level RNN': one-hot letters written
    by chained indexing (tensor[li][0][i] = 1), an RNN cell built from Linear layers, NLLLoss, and
    the update p.data.add_(p.grad.data, alpha=-learning_rate)."""
    torch, nn, F = m.torch, m.nn, m.F
    import string
    all_letters = string.ascii_letters + " .,;'"
    n_letters = len(all_letters)
    category_lines = {"English": ["smith", "jones", "taylor", "brown", "wilson", "walker"],
                      "Italian": ["rossi", "russo", "ferrari", "esposito", "bianchi", "romano"]}
    all_categories = list(category_lines)
    n_categories = len(all_categories)

    def letterToIndex(letter):
        return all_letters.find(letter)

    def letterToTensor(letter):
        tensor = torch.zeros(1, n_letters)
        tensor[0][letterToIndex(letter)] = 1
        return tensor

    def lineToTensor(line):
        tensor = torch.zeros(len(line), 1, n_letters)
        for li, letter in enumerate(line):
            tensor[li][0][letterToIndex(letter)] = 1
        return tensor

    class RNN(nn.Module):
        def __init__(self, input_size, hidden_size, output_size):
            super(RNN, self).__init__()
            self.hidden_size = hidden_size
            self.i2h = nn.Linear(input_size, hidden_size)
            self.h2h = nn.Linear(hidden_size, hidden_size)
            self.h2o = nn.Linear(hidden_size, output_size)
            self.softmax = nn.LogSoftmax(dim=1)

        def forward(self, input, hidden):
            hidden = F.tanh(self.i2h(input) + self.h2h(hidden))
            output = self.h2o(hidden)
            output = self.softmax(output)
            return output, hidden

        def initHidden(self):
            return torch.zeros(1, self.hidden_size)

    n_hidden = 32
    rnn = RNN(n_letters, n_hidden, n_categories)
    if weights is None:
        return rnn
    load(m, rnn, weights)
    criterion = nn.NLLLoss()
    learning_rate = 0.05

    def train(category_tensor, line_tensor):
        hidden = rnn.initHidden()
        rnn.zero_grad()
        for i in range(line_tensor.size()[0]):
            output, hidden = rnn(line_tensor[i], hidden)
        loss = criterion(output, category_tensor)
        loss.backward()
        for p in rnn.parameters():
            p.data.add_(p.grad.data, alpha=-learning_rate)
        return output, loss.item()

    def categoryFromOutput(output):
        category_i = output.argmax(1)[0].item()
        return all_categories[category_i], category_i

    pairs = [(c, line) for c in all_categories for line in category_lines[c]]
    current_loss, all_losses = 0, []
    for epoch in range(15):
        for category, line in pairs:
            category_tensor = torch.tensor([all_categories.index(category)], dtype=torch.long)
            line_tensor = lineToTensor(line)
            output, loss = train(category_tensor, line_tensor)
            current_loss += loss
        all_losses.append(current_loss / len(pairs))
        current_loss = 0

    def evaluate(line_tensor):
        hidden = rnn.initHidden()
        for i in range(line_tensor.size()[0]):
            output, hidden = rnn(line_tensor[i], hidden)
        return output

    with torch.no_grad():
        guesses = [categoryFromOutput(evaluate(lineToTensor(line)))[0] == c for c, line in pairs]
    return {"letter": letterToTensor('J').argmax().item(), "line": lineToTensor('Jones').sum().item(),
            "losses": all_losses, "accuracy": sum(guesses) / len(guesses)}


def test_char_rnn_classifier():
    weights = weights_of(lambda m: char_rnn_classifier(m, None))
    ours, _ = run_both(char_rnn_classifier, weights, rtol=1e-3, atol=1e-4)
    assert ours["letter"] == 35 and ours["line"] == 5.0
    assert ours["losses"][-1] < ours["losses"][0] / 2 and ours["accuracy"] >= 0.9


def gru_classifier(m, weights):
    """A batch-first GRU over padded sequences, classifying by the last hidden state (h_n[-1])."""
    torch, nn = m.torch, m.nn

    class RNNClassifier(nn.Module):
        def __init__(self, vocab_size, embed_dim, hidden_size, num_classes):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
            self.rnn = nn.GRU(embed_dim, hidden_size, num_layers=2, batch_first=True, dropout=0.0)
            self.fc = nn.Linear(hidden_size, num_classes)

        def forward(self, x):
            emb = self.embedding(x)
            output, h_n = self.rnn(emb)
            return self.fc(h_n[-1])

    model = RNNClassifier(10, 8, 16, 2)
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(7)
    x = rng.integers(1, 10, (32, 6))
    y = (x[:, 0] > 5).astype(np.int64)  # the class is told by the first token: the GRU must remember it
    X, Y = torch.tensor(x), torch.tensor(y)
    optimizer = m.optim.Adam(model.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss()
    for epoch in range(40):
        model.train()
        optimizer.zero_grad()
        loss = criterion(model(X), Y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
    model.eval()
    with torch.no_grad():
        acc = (model(X).argmax(dim=1) == Y).float().mean().item()
    return {"loss": loss.item(), "accuracy": acc}


def test_gru_classifier():
    weights = weights_of(lambda m: gru_classifier(m, None))
    ours, _ = run_both(gru_classifier, weights, rtol=2e-3, atol=1e-3)
    assert ours["accuracy"] > 0.9


def embedding_bag_text_classifier(m, weights):
    """The text classification tutorial's model (EmbeddingBag with offsets), and the same model
    written with nn.Embedding and mean pooling over a padded batch."""
    torch, nn = m.torch, m.nn

    class TextClassificationModel(nn.Module):
        def __init__(self, vocab_size, embed_dim, num_class):
            super(TextClassificationModel, self).__init__()
            self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, sparse=False)
            self.fc = nn.Linear(embed_dim, num_class)
            self.init_weights()

        def init_weights(self):
            initrange = 0.5
            self.embedding.weight.data.uniform_(-initrange, initrange)
            self.fc.weight.data.uniform_(-initrange, initrange)
            self.fc.bias.data.zero_()

        def forward(self, text, offsets):
            embedded = self.embedding(text, offsets)
            return self.fc(embedded)

    class MeanPool(nn.Module):
        def __init__(self, vocab_size, embed_dim, num_class):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, embed_dim)
            self.fc = nn.Linear(embed_dim, num_class)

        def forward(self, tokens):
            return self.fc(self.embedding(tokens).mean(dim=1))

    bag, pool = TextClassificationModel(20, 8, 2), MeanPool(20, 8, 2)
    if weights is None:
        return bag
    load(m, bag, weights)
    load(m, pool, weights)
    rng = np.random.default_rng(8)
    tokens = rng.integers(0, 20, (16, 5))
    labels = (tokens < 10).sum(1) > 2
    text = torch.tensor(tokens.reshape(-1))
    offsets = torch.arange(0, 16 * 5, 5)
    label = torch.tensor(labels.astype(np.int64))
    same = (bag(text, offsets) - pool(torch.tensor(tokens))).abs().max().item()
    criterion = nn.CrossEntropyLoss()
    optimizer = m.optim.SGD(bag.parameters(), lr=5)
    scheduler = m.optim.lr_scheduler.StepLR(optimizer, 1.0, gamma=0.1)
    for epoch in range(3):
        for _ in range(5):
            optimizer.zero_grad()
            predicted_label = bag(text, offsets)
            loss = criterion(predicted_label, label)
            loss.backward()
            nn.utils.clip_grad_norm_(bag.parameters(), 0.1)
            optimizer.step()
        scheduler.step()
    acc = (bag(text, offsets).argmax(1) == label).sum().item() / label.size(0)
    return {"same": same, "accuracy": acc, "lr": scheduler.get_last_lr()}


def test_embedding_bag_text_classifier():
    weights = weights_of(lambda m: embedding_bag_text_classifier(m, None))
    ours, _ = run_both(embedding_bag_text_classifier, weights, rtol=1e-4, atol=1e-5)
    assert ours["same"] < 1e-6 and ours["accuracy"] >= 0.75
