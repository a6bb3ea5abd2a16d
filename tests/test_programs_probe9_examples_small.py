# ruff: noqa: B007, B023, F841, UP008, UP032  (the programs are kept as their authors wrote them)
"""Programs of the official pytorch/examples repository, run as tests/probe9_examples_common.py says. The small
examples: ``regression/main.py`` (polynomial features by ``torch.cat`` of powers, ``F.smooth_l1_loss``, a
hand-written ``param.data.add_(-0.1 * param.grad)`` step until the loss is small, ``'{:+.2f}'.format`` of 0-d
tensors); ``time_sequence_prediction`` (two ``nn.LSTMCell`` in float64 by ``.double()``, ``input.split(1, dim=1)``,
L-BFGS with a closure, future prediction under ``no_grad``); ``mnist_forward_forward`` (``nn.Linear`` subclass owning
its Adam, overriding ``train``, layer-local goodness losses by ``log1p(exp(...))``, ``overlay_y_on_x`` by indexing
with a ``range``); ``mnist_rnn`` (a batch-first LSTM's last step, ``BatchNorm1d``, ``Dropout2d`` on 2-D input,
Adadelta, StepLR); ``gcn/main.py`` (Kipf and Welling's GCN on a Cora-like graph, loaded as the example loads it)."""

import warnings

import numpy as np
import pytest

from .probe9_examples_common import numbers_parsed
from .pytorch_programs import assert_same, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# regression/main.py: fit a degree-4 polynomial with a single nn.Linear
# ----------------------------------------------------------------------------------------------


def regression(m, W_np, b_np, batches):
    torch, F = m.torch, m.F
    from itertools import count
    POLY_DEGREE = 4
    W_target = torch.from_numpy(W_np)
    b_target = torch.from_numpy(b_np)

    def make_features(x):
        """Builds features i.e. a matrix with columns [x, x^2, x^3, x^4]."""
        x = x.unsqueeze(1)
        return torch.cat([x ** i for i in range(1, POLY_DEGREE+1)], 1)

    def f(x):
        """Approximated function."""
        return x.mm(W_target) + b_target.item()

    def poly_desc(W, b):
        """Creates a string description of a polynomial."""
        result = 'y = '
        for i, w in enumerate(W):
            result += '{:+.2f} x^{} '.format(w, i + 1)
        result += '{:+.2f}'.format(b[0])
        return result

    random_batches = iter(batches)  # torch.randn(batch_size) in the original

    def get_batch(batch_size=32):
        """Builds a batch i.e. (x, f(x)) pair."""
        random = torch.from_numpy(next(random_batches))
        x = make_features(random)
        y = f(x)
        return x, y

    fc = m.nn.Linear(W_target.size(0), 1)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[0.1, -0.2, 0.3, -0.4]]))
        fc.bias.fill_(0.05)
    losses = []
    for batch_idx in count(1):
        batch_x, batch_y = get_batch()
        fc.zero_grad()
        output = F.smooth_l1_loss(fc(batch_x), batch_y)
        loss = output.item()
        output.backward()
        for param in fc.parameters():
            param.data.add_(-0.1 * param.grad)
        losses.append(loss)
        if loss < 1e-3:
            break
    return (losses, batch_idx, poly_desc(fc.weight.view(-1), fc.bias), poly_desc(W_target.view(-1), b_target),
            fc.weight, fc.bias, fc.weight.grad)


def test_polynomial_regression():
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((4, 1)) * 0.5).astype(np.float32)
    b = (rng.standard_normal(1) * 0.5).astype(np.float32)
    batches = [(rng.standard_normal(32) * 0.5).astype(np.float32) for _ in range(200)]
    ours, theirs = run_both(regression, W, b, batches, compare=False)
    if theirs is not None:
        assert_same(numbers_parsed(ours), numbers_parsed(theirs), 1e-4, 1e-6)
    losses, n, learned, actual, weight, bias, grad = ours
    assert losses[-1] < 1e-3 <= min(losses[:-1]) and n == len(losses) < 200
    assert actual == "y = " + "".join(f"{w:+.2f} x^{i + 1} " for i, w in enumerate(W[:, 0])) + f"{b[0]:+.2f}"
    assert learned == "y = " + "".join(f"{w:+.2f} x^{i + 1} " for i, w in enumerate(weight[0])) + f"{bias[0]:+.2f}"


# ----------------------------------------------------------------------------------------------
# time_sequence_prediction: two LSTMCells on sine waves, trained by L-BFGS, predicting the future
# ----------------------------------------------------------------------------------------------


def sequence_model(m, hidden=12):
    torch, nn = m.torch, m.nn

    class Sequence(nn.Module):
        def __init__(self):
            super(Sequence, self).__init__()
            self.lstm1 = nn.LSTMCell(1, hidden)
            self.lstm2 = nn.LSTMCell(hidden, hidden)
            self.linear = nn.Linear(hidden, 1)

        def forward(self, input, future = 0):
            outputs = []
            h_t = torch.zeros(input.size(0), hidden, dtype=torch.double)
            c_t = torch.zeros(input.size(0), hidden, dtype=torch.double)
            h_t2 = torch.zeros(input.size(0), hidden, dtype=torch.double)
            c_t2 = torch.zeros(input.size(0), hidden, dtype=torch.double)

            for input_t in input.split(1, dim=1):
                h_t, c_t = self.lstm1(input_t, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            for i in range(future):# if we should predict the future
                h_t, c_t = self.lstm1(output, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            outputs = torch.cat(outputs, dim=1)
            return outputs

    return Sequence()


def sine_waves(T=5, L=40, N=8):
    """generate_sine_wave.py, smaller."""
    np.random.seed(2)
    x = np.empty((N, L), 'int64')
    x[:] = np.array(range(L)) + np.random.randint(-4 * T, 4 * T, N).reshape(N, 1)
    return np.sin(x / 1.0 / T).astype('float64')


def time_sequence_prediction(m, weights, data, steps=2, future=20):
    torch, nn, optim = m.torch, m.nn, m.optim
    input = torch.from_numpy(data[3:, :-1])
    target = torch.from_numpy(data[3:, 1:])
    test_input = torch.from_numpy(data[:3, :-1])
    test_target = torch.from_numpy(data[:3, 1:])
    seq = sequence_model(m)
    seq.double()
    load(m, seq, weights)
    criterion = nn.MSELoss()
    optimizer = optim.LBFGS(seq.parameters(), lr=0.8)
    log = []
    for i in range(steps):
        losses = []

        def closure():
            optimizer.zero_grad()
            out = seq(input)
            loss = criterion(out, target)
            losses.append(loss.item())
            loss.backward()
            return loss
        optimizer.step(closure)
        with torch.no_grad():
            pred = seq(test_input, future=future)
            loss = criterion(pred[:, :-future], test_target)
            y = pred.detach().numpy()
        log.append((losses, loss.item(), y))
    return (log, [p.detach() for p in seq.parameters()], [p.grad for p in seq.parameters()],
            optimizer.state_dict()['state'][0]['n_iter'], seq.lstm1.weight_ih.dtype == torch.float64,
            pred.requires_grad)


def test_time_sequence_prediction():
    weights = {k: v.astype(np.float64) for k, v in weights_of(sequence_model).items()}
    data = sine_waves()
    # float64 throughout; L-BFGS's 20 inner iterations a step grow rounding differences about 100-fold a step
    (log, params, grads, n_iter, double, tracked), _ = run_both(time_sequence_prediction, weights, data,
                                                               rtol=1e-7, atol=1e-9)
    assert n_iter == 40 and double and not tracked
    (losses1, test1, y1), (losses2, test2, y2) = log
    assert len(losses1) == len(losses2) == 20 and losses2[-1] < losses1[-1] < losses1[0] / 5
    assert y2.shape == (3, 39 + 20) and test2 < test1
    np.testing.assert_allclose(((y2[:, :39] - data[:3, 1:]) ** 2).mean(), test2, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# mnist_forward_forward: Hinton's forward-forward algorithm, each layer trained by its own goodness
# ----------------------------------------------------------------------------------------------


class FFArgs:
    lr = 0.03
    threshold = 2.0
    epochs = 15
    log_interval = 5


def ff_net(m, dims, args=FFArgs):
    torch, nn = m.torch, m.nn
    Adam = m.optim.Adam
    device = torch.device("cpu")

    def overlay_y_on_x(x, y, classes=10):
        x_ = x.clone()
        x_[:, :classes] *= 0.0
        x_[range(x.shape[0]), y] = x.max()
        return x_

    class Net(nn.Module):
        def __init__(self, dims):

            super().__init__()
            self.layers = []
            for d in range(len(dims) - 1):
                self.layers = self.layers + [Layer(dims[d], dims[d + 1]).to(device)]

        def predict(self, x):
            goodness_per_label = []
            for label in range(10):
                h = overlay_y_on_x(x, label)
                goodness = []
                for layer in self.layers:
                    h = layer(h)
                    goodness = goodness + [h.pow(2).mean(1)]
                goodness_per_label += [sum(goodness).unsqueeze(1)]
            goodness_per_label = torch.cat(goodness_per_label, 1)
            return goodness_per_label.argmax(1)

        def train(self, x_pos, x_neg):
            h_pos, h_neg = x_pos, x_neg
            for i, layer in enumerate(self.layers):
                h_pos, h_neg = layer.train(h_pos, h_neg)

    class Layer(nn.Linear):
        def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
            super().__init__(in_features, out_features, bias, device, dtype)
            self.relu = nn.ReLU()
            self.opt = Adam(self.parameters(), lr=args.lr)
            self.threshold = args.threshold
            self.num_epochs = args.epochs
            self.losses = []  # printed every log_interval epochs in the original

        def forward(self, x):
            x_direction = x / (x.norm(2, 1, keepdim=True) + 1e-4)
            return self.relu(torch.mm(x_direction, self.weight.T) + self.bias.unsqueeze(0))

        def train(self, x_pos, x_neg):
            for i in range(self.num_epochs):
                g_pos = self.forward(x_pos).pow(2).mean(1)
                g_neg = self.forward(x_neg).pow(2).mean(1)
                loss = torch.log1p(
                    torch.exp(
                        torch.cat([-g_pos + self.threshold, g_neg - self.threshold])
                    )
                ).mean()
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                self.losses.append(loss.item())
            return self.forward(x_pos).detach(), self.forward(x_neg).detach()

    return Net(dims), overlay_y_on_x


def forward_forward(m, weights, x_np, y_np, y_neg_np):
    torch = m.torch
    net, overlay_y_on_x = ff_net(m, [20, 16, 16])
    with torch.no_grad():
        for layer, (w, b) in zip(net.layers, weights):
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    x_pos = overlay_y_on_x(x, y)
    y_neg = torch.from_numpy(y_neg_np)  # get_y_neg draws a wrong label for each by torch.randint
    x_neg = overlay_y_on_x(x, y_neg)
    net.train(x_pos, x_neg)
    train_error = 1.0 - net.predict(x).eq(y).float().mean().item()
    return ([layer.losses for layer in net.layers], train_error, net.predict(x), x_pos, x_neg,
            [(layer.weight.detach(), layer.bias.detach(), layer.weight.grad) for layer in net.layers],
            len(list(net.parameters())), [layer.training for layer in net.layers])


def test_mnist_forward_forward():
    rng = np.random.default_rng(0)
    prototypes = rng.standard_normal((10, 20)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    x = prototypes[y] + 0.3 * rng.standard_normal((40, 20)).astype(np.float32)
    y_neg = (y + rng.integers(1, 10, 40)) % 10
    weights = [(rng.uniform(-0.2, 0.2, (16, 20)).astype(np.float32), rng.uniform(-0.2, 0.2, 16).astype(np.float32)),
               (rng.uniform(-0.25, 0.25, (16, 16)).astype(np.float32), rng.uniform(-0.25, 0.25, 16).astype(np.float32))]
    ours, _ = run_both(forward_forward, weights, x, y, y_neg, rtol=1e-4, atol=1e-5)
    losses, train_error, predicted, x_pos, x_neg, layers, n_registered, training = ours
    assert all(len(l) == 15 and l[-1] < l[0] for l in losses)
    assert n_registered == 0 and training == [True, True]  # a plain list registers nothing; train() is overridden
    expected_pos = x.copy()
    expected_pos[:, :10] = 0.0
    expected_pos[np.arange(40), y] = x.max()
    np.testing.assert_array_equal(x_pos, expected_pos)
    np.testing.assert_allclose(train_error, 1.0 - (predicted == y).mean(), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# mnist_rnn: an LSTM reading an image row by row
# ----------------------------------------------------------------------------------------------


def rnn_net(m, side=8):
    nn, F = m.nn, m.F

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.rnn = nn.LSTM(input_size=side, hidden_size=12, batch_first=True)
            self.batchnorm = nn.BatchNorm1d(12)
            self.dropout1 = nn.Dropout2d(0.25)
            self.dropout2 = nn.Dropout2d(0.5)
            self.fc1 = nn.Linear(12, 10)
            self.fc2 = nn.Linear(10, 4)

        def forward(self, input):
            # Shape of input is (batch_size,1, side, side); (batch_size, side, side) for a batch-first RNN
            input = input.reshape(-1, side, side)
            output, hidden = self.rnn(input)

            # Get last output of RNN
            output = output[:, -1, :]
            output = self.batchnorm(output)
            output = self.dropout1(output)
            output = self.fc1(output)
            output = F.relu(output)
            output = self.dropout2(output)
            output = self.fc2(output)
            output = F.log_softmax(output, dim=1)
            return output

    return Net()


def mnist_rnn(m, weights, images, labels, epochs=2, dropout=False):
    torch, F, optim = m.torch, m.F, m.optim
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    train_loader = torch.utils.data.DataLoader(dataset, batch_size=8)
    test_loader = torch.utils.data.DataLoader(dataset, batch_size=16)
    model = load(m, rnn_net(m), weights)
    if not dropout:  # the two libraries draw different masks
        model.dropout1.p = model.dropout2.p = 0.0
    optimizer = optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    log = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(1, epochs + 1):
            model.train()
            for batch_idx, (data, target) in enumerate(train_loader):
                optimizer.zero_grad()
                output = model(data)
                loss = F.nll_loss(output, target)
                loss.backward()
                optimizer.step()
                log.append(loss.item())
            model.eval()
            test_loss = 0
            correct = 0
            with torch.no_grad():
                for data, target in test_loader:
                    output = model(data)
                    test_loss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
                    pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
                    correct += pred.eq(target.view_as(pred)).sum().item()
            log.append((test_loss / len(test_loader.dataset), correct))
            scheduler.step()
    dropout2d_warned = any("Received a 2-D input to dropout2d" in str(w.message) for w in caught)
    grads = {n: p.grad for n, p in model.named_parameters()}
    return log, dict(model.state_dict()), grads, dropout2d_warned


def dropout2d_on_rows(m):
    """Dropout2d given (N, features), as mnist_rnn does: PyTorch warns, and drops single elements (no channels)."""
    torch = m.torch
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = m.nn.Dropout2d(0.5)(torch.ones(64, 32))
    return y


def test_mnist_rnn():
    rng = np.random.default_rng(0)
    prototypes = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 4, 32)
    images = prototypes[labels] + 0.5 * rng.standard_normal((32, 1, 8, 8)).astype(np.float32)
    weights = weights_of(rnn_net)
    (log, state, grads, warned), _ = run_both(mnist_rnn, weights, images, labels, rtol=1e-4, atol=1e-5)
    assert warned and log[-1][0] < log[4][0] and state["batchnorm.num_batches_tracked"] == 8
    (log, *_), _ = run_both(mnist_rnn, weights, images, labels, dropout=True, compare=False)
    assert len(log) == 10 and all(np.isfinite(v) for v in log[:4])
    y, _ = run_both(dropout2d_on_rows, compare=False)
    assert set(np.unique(y)) == {0.0, 2.0}
    assert not (y == 0).all(axis=1).any()  # no row dropped whole (by chance: 2^-32 each)
    assert 0.4 < (y == 0).mean() < 0.6


# ----------------------------------------------------------------------------------------------
# gcn/main.py: Kipf and Welling's GCN on a Cora-like graph, loaded as the example loads it
# ----------------------------------------------------------------------------------------------


def cora_like(n_nodes=12, n_features=6, seed=0):
    """What np.genfromtxt gives for cora.content (id, binary features, label: all strings) and cora.cites."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(100, 100 + 3 * n_nodes))[:n_nodes]
    labels = np.array(["Neural_Networks", "Theory", "Genetic_Algorithms"])[np.arange(n_nodes) % 3]
    features = (rng.random((n_nodes, n_features)) < 0.4).astype(np.int32)
    features[3] = 0  # a paper without words: its scale 1/0 is set to 0
    content = np.column_stack([ids.astype(str), features.astype(str), labels])
    cites = np.array([[ids[i], ids[(i + k) % n_nodes]] for i in range(n_nodes) for k in (1, 3)], dtype=np.int32)
    return content, cites


def gcn_net(m, input_dim=6, hidden_dim=8, output_dim=3):
    torch, nn, F = m.torch, m.nn, m.F

    class GraphConv(nn.Module):
        def __init__(self, input_dim, output_dim, use_bias=False):
            super(GraphConv, self).__init__()
            self.kernel = nn.Parameter(torch.Tensor(input_dim, output_dim))
            nn.init.xavier_normal_(self.kernel) # Initialize the weights using Xavier initialization
            self.bias = None
            if use_bias:
                self.bias = nn.Parameter(torch.Tensor(output_dim))
                nn.init.zeros_(self.bias) # Initialize the bias to zeros

        def forward(self, input_tensor, adj_mat):
            support = torch.mm(input_tensor, self.kernel) # Matrix multiplication between input and weight matrix
            output = torch.spmm(adj_mat, support) # Sparse matrix multiplication between adjacency matrix and support
            if self.bias is not None:
                output = output + self.bias
            return output

    class GCN(nn.Module):
        def __init__(self, input_dim, hidden_dim, output_dim, use_bias=True, dropout_p=0.1):
            super(GCN, self).__init__()
            self.gc1 = GraphConv(input_dim, hidden_dim, use_bias=use_bias)
            self.gc2 = GraphConv(hidden_dim, output_dim, use_bias=use_bias)
            self.dropout = nn.Dropout(dropout_p)

        def forward(self, input_tensor, adj_mat):
            x = self.gc1(input_tensor, adj_mat)
            x = F.relu(x) # Apply ReLU activation function
            x = self.dropout(x) # Apply dropout regularization
            x = self.gc2(x, adj_mat)
            return F.log_softmax(x, dim=1)

    return GCN(input_dim, hidden_dim, output_dim, dropout_p=0.0)  # dropout 0.5 in the original: masks differ


def gcn(m, weights, epochs=5):
    torch, nn = m.torch, m.nn

    def load_cora(device='cpu'):
        content_tensor, cites_tensor = cora_like()  # np.genfromtxt of the two files
        features = torch.FloatTensor(content_tensor[:, 1:-1].astype(np.int32)) # Extract feature values
        scale_vector = torch.sum(features, dim=1) # Compute sum of features for each node
        scale_vector = 1 / scale_vector # Compute reciprocal of the sums
        scale_vector[scale_vector == float('inf')] = 0 # Handle division by zero cases
        scale_vector = torch.diag(scale_vector).to_sparse() # Convert the scale vector to a sparse diagonal matrix
        features = scale_vector @ features # Scale the features using the scale vector
        classes, labels = np.unique(content_tensor[:, -1], return_inverse=True)
        labels = torch.LongTensor(labels) # Convert labels to a tensor
        idx = content_tensor[:, 0].astype(np.int32) # Extract node indices
        idx_map = {id: pos for pos, id in enumerate(idx)} # Create a dictionary to map indices to positions
        edges = np.array(
            list(map(lambda edge: [idx_map[edge[0]], idx_map[edge[1]]],
                cites_tensor)), dtype=np.int32)
        V = len(idx) # Number of nodes
        E = edges.shape[0] # Number of edges
        adj_mat = torch.sparse_coo_tensor(edges.T, torch.ones(E), (V, V), dtype=torch.int64)
        adj_mat = torch.eye(V) + adj_mat # Add self-loops to the adjacency matrix
        degree_mat = torch.sum(adj_mat, dim=1) # Compute the sum of each row in the adjacency matrix (degree matrix)
        degree_mat = torch.sqrt(1 / degree_mat) # Compute the reciprocal square root of the degrees
        degree_mat[degree_mat == float('inf')] = 0 # Handle division by zero cases
        degree_mat = torch.diag(degree_mat).to_sparse() # Convert the degree matrix to a sparse diagonal matrix
        adj_mat = degree_mat @ adj_mat @ degree_mat # Apply the renormalization trick
        return features.to_sparse().to(device), labels.to(device), adj_mat.to_sparse().to(device)

    def test(model, criterion, input, target, mask):
        model.eval()
        with torch.no_grad():
            output = model(*input)
            output, target = output[mask], target[mask]
            loss = criterion(output, target)
            acc = (output.argmax(dim=1) == target).float().sum() / len(target)
        return loss.item(), acc.item()

    features, labels, adj_mat = load_cora()
    idx = torch.arange(len(labels))  # torch.randperm in the original
    idx_test, idx_val, idx_train = idx[:3], idx[3:6], idx[6:]
    model = load(m, gcn_net(m), weights)
    optimizer = m.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    criterion = nn.NLLLoss()
    log = []
    for epoch in range(epochs):
        model.train()
        optimizer.zero_grad()
        output = model(features, adj_mat)
        loss = criterion(output[idx_train], labels[idx_train]) # Compute the loss using the training mask
        loss.backward()
        optimizer.step()
        log.append((test(model, criterion, (features, adj_mat), labels, idx_train),
                    test(model, criterion, (features, adj_mat), labels, idx_val)))
    return log, adj_mat.to_dense(), features.to_dense(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled:UserWarning")
def test_gcn_on_a_cora_like_graph():
    ours, _ = run_both(gcn, weights_of(gcn_net), rtol=1e-5, atol=1e-6)
    log, adj_mat, features, grads = ours
    content, cites = cora_like()
    position = {int(i): k for k, i in enumerate(content[:, 0])}
    A = np.eye(len(content))
    for source, target in cites:
        A[position[source], position[target]] += 1
    d = 1 / np.sqrt(A.sum(1))
    np.testing.assert_allclose(adj_mat, d[:, None] * A * d[None, :], rtol=1e-6)  # the renormalisation trick
    words = content[:, 1:-1].astype(np.float64)
    np.testing.assert_allclose(features, words / np.maximum(words.sum(1, keepdims=True), 1), rtol=1e-6)
    assert log[-1][0][0] < log[0][0][0]
