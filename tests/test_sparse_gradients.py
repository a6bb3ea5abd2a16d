"""Sparse gradients: ``nn.Embedding(sparse=True)`` and ``nn.EmbeddingBag(sparse=True)`` leave a sparse ``.grad``
(one entry per lookup, the padding index left out), which SGD, Adagrad, LBFGS and ``optim.SparseAdam`` take and
the other optimizers refuse, as PyTorch's. A skip-gram (word2vec) program trained with SparseAdam gives
PyTorch's weights.

Expectations are literal or computed by hand with NumPy (so they hold on CI without PyTorch); the ``T`` tests
run on PyTorch too where it is installed."""

import numpy as np
import pytest

from .pytorch_programs import run_both

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")


def modules(T):
    if T.__name__ == "torch":
        import torch.nn
        import torch.optim

        return torch.nn, torch.optim
    import nn
    import optim

    return nn, optim


def test_an_embeddings_gradient_has_one_entry_per_lookup(T):
    nn, _ = modules(T)
    embedding = nn.Embedding(5, 2, sparse=True)
    (embedding(T.tensor([[1, 3], [1, 0]])) * T.arange(8.0).reshape(2, 2, 2)).sum().backward()
    grad = embedding.weight.grad
    assert grad.is_sparse and grad.layout == T.sparse_coo and grad.shape == (5, 2) and not grad.is_coalesced()
    assert grad._indices().tolist() == [[1, 3, 1, 0]]
    assert grad._values().tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    np.testing.assert_array_equal(grad.to_dense().numpy(), [[6, 7], [4, 6], [0, 0], [2, 3], [0, 0]])


def test_a_tensor_hook_on_the_weight_sees_and_returns_the_sparse_gradient(T):
    """The hook is given .grad's sparse form; a sparse result is stored sparse, a dense one refused."""
    nn, _ = modules(T)
    seen = []

    def halve(grad):
        seen.append(grad.is_sparse)
        return grad * 0.5

    embedding = nn.Embedding(4, 2, sparse=True)
    embedding.weight.register_hook(halve)
    (embedding(T.tensor([2, 0, 2])) * T.arange(6.0).reshape(3, 2)).sum().backward()
    grad = embedding.weight.grad
    assert seen == [True] and grad.is_sparse
    assert grad._indices().tolist() == [[2, 0, 2]]
    np.testing.assert_array_equal(grad.to_dense().numpy(), [[1, 1.5], [0, 0], [2, 3], [0, 0]])
    embedding = nn.Embedding(4, 2, sparse=True)
    embedding.weight.register_hook(lambda grad: grad.to_dense() + 1.0)
    with pytest.raises(RuntimeError, match="has changed the type of value"):
        (embedding(T.tensor([1])) * 3.0).sum().backward()


def test_the_padding_index_has_no_entry_and_frequency_scaling_is_refused(T):
    nn, _ = modules(T)
    embedding = nn.Embedding(5, 2, sparse=True, padding_idx=1)
    embedding(T.tensor([1, 3, 1])).sum().backward()
    assert embedding.weight.grad._indices().tolist() == [[3]]
    scaled = nn.Embedding(5, 2, sparse=True, scale_grad_by_freq=True)
    with pytest.raises(RuntimeError, match="scale_grad_by_freq not supported with sparse gradients"):
        scaled(T.tensor([1, 1])).sum().backward()


def test_a_bags_gradient_is_sparse_with_the_bags_weights(T):
    nn, _ = modules(T)
    mean = nn.EmbeddingBag(5, 2, sparse=True, mode="mean")
    (mean(T.tensor([1, 3, 1, 4]), T.tensor([0, 3])) * T.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    assert mean.weight.grad._indices().tolist() == [[1, 3, 1, 4]]
    np.testing.assert_allclose(mean.weight.grad._values().numpy(), [[1 / 3, 2 / 3]] * 3 + [[3, 4]], rtol=1e-6)
    weighted = nn.EmbeddingBag(5, 2, sparse=True, mode="sum", padding_idx=3)
    bags = weighted(T.tensor([1, 3, 1, 4]), T.tensor([0, 3]), per_sample_weights=T.tensor([1.0, 2.0, 3.0, 4.0]))
    (bags * T.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    assert weighted.weight.grad._indices().tolist() == [[1, 1, 4]]
    assert weighted.weight.grad._values().tolist() == [[1, 2], [3, 6], [12, 16]]


def test_gradients_add_up_sparse_with_sparse_and_dense_with_dense(T):
    nn, _ = modules(T)
    embedding = nn.Embedding(5, 2, sparse=True)
    (embedding(T.tensor([1])).sum() + embedding(T.tensor([2, 1])).sum()).backward()  # two lookups, one pass
    assert embedding.weight.grad.is_sparse and sorted(embedding.weight.grad._indices()[0].tolist()) == [1, 1, 2]
    embedding(T.tensor([4])).sum().backward()  # another pass: still sparse
    assert embedding.weight.grad.is_sparse and embedding.weight.grad._nnz() == 4
    np.testing.assert_array_equal(embedding.weight.grad.to_dense().numpy(), [[0, 0], [2, 2], [1, 1], [0, 0], [1, 1]])
    (embedding.weight ** 2).sum().backward()  # a dense use: the sum is dense
    assert not embedding.weight.grad.is_sparse
    expected = 2 * embedding.weight.detach().numpy() + [[0, 0], [2, 2], [1, 1], [0, 0], [1, 1]]
    np.testing.assert_allclose(embedding.weight.grad.numpy(), expected, rtol=1e-6)
    (grad,) = T.autograd.grad(embedding(T.tensor([3, 3])).sum(), embedding.weight)
    assert grad.is_sparse and grad._indices().tolist() == [[3, 3]]


def test_optimizers_take_sparse_gradients_or_refuse_them(T):
    nn, optim = modules(T)
    embedding = nn.Embedding(5, 2, sparse=True)
    start = embedding.weight.detach().clone()
    sgd = optim.SGD(embedding.parameters(), lr=0.5)
    embedding(T.tensor([1, 3, 1])).sum().backward()
    sgd.step()
    moved = start.numpy().copy()
    moved[1] -= 1.0
    moved[3] -= 0.5
    np.testing.assert_allclose(embedding.weight.detach().numpy(), moved, rtol=1e-6)
    sgd.zero_grad(set_to_none=False)
    assert embedding.weight.grad.is_sparse and embedding.weight.grad._nnz() == 0
    for name, options, message in (("Adam", {}, "Adam does not support sparse gradients, please consider SparseAdam"),
                                   ("AdamW", {}, "Adam does not support sparse gradients"),
                                   ("RMSprop", {}, "RMSprop does not support sparse gradients"),
                                   ("SGD", dict(lr=0.1, weight_decay=0.1), r"add\(sparse, dense\) is not supported"),
                                   ("Adagrad", dict(weight_decay=0.1), "weight_decay option is not compatible")):
        optimizer = getattr(optim, name)(embedding.parameters(), **options)
        optimizer.zero_grad()
        embedding(T.tensor([2])).sum().backward()
        with pytest.raises(RuntimeError, match=message):
            optimizer.step()
    dense = nn.Linear(2, 2)
    sparse_adam = optim.SparseAdam(dense.parameters())
    dense(T.ones(1, 2)).sum().backward()
    with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients, please consider Adam"):
        sparse_adam.step()


def test_sparse_adam_moves_only_the_rows_it_sees(T):
    """Two steps by hand: the row seen only at step 1 keeps its moments and its place at step 2."""
    nn, optim = modules(T)
    T.manual_seed(0)
    embedding = nn.Embedding(4, 3, sparse=True)
    W = embedding.weight.detach().numpy().astype(np.float64).copy()
    optimizer = optim.SparseAdam(embedding.parameters(), lr=0.1, betas=(0.8, 0.9), eps=1e-8)
    m, v = np.zeros_like(W), np.zeros_like(W)
    for step, batch in enumerate(([0, 2, 0], [2, 3]), start=1):
        optimizer.zero_grad()
        (embedding(T.tensor(batch)) ** 2).sum().backward()
        optimizer.step()
        rows = sorted(set(batch))
        g = np.zeros_like(W)
        for row in batch:
            g[row] += 2 * W[row]
        m[rows] += 0.2 * (g[rows] - m[rows])
        v[rows] += 0.1 * (g[rows] ** 2 - v[rows])
        W[rows] -= 0.1 * np.sqrt(1 - 0.9**step) / (1 - 0.8**step) * m[rows] / (np.sqrt(v[rows]) + 1e-8)
    np.testing.assert_allclose(embedding.weight.detach().numpy(), W, rtol=1e-5)
    state = optimizer.state_dict()["state"][0]
    assert state["step"] == 2 and sorted(state) == ["exp_avg", "exp_avg_sq", "step"]
    np.testing.assert_allclose(state["exp_avg"].numpy(), m, rtol=1e-5)
    assert state["exp_avg"][1].abs().sum().item() == 0  # never seen: no moment


def skipgram_program(m, optimizer_name, steps=12):
    """word2vec's skip-gram with negative sampling, as PyTorch tutorials write it: centre and context embeddings
    with sparse=True, logsigmoid of dot products for the true pairs and the sampled negatives, SparseAdam (or
    SGD, Adagrad) steps."""
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(0)
    vocabulary, dim = 30, 8

    class SkipGram(nn.Module):
        def __init__(self):
            super().__init__()
            self.centre = nn.Embedding(vocabulary, dim, sparse=True)
            self.context = nn.Embedding(vocabulary, dim, sparse=True)
            with torch.no_grad():
                self.centre.weight.copy_(torch.tensor(rng.uniform(-0.5, 0.5, (vocabulary, dim)) / dim,
                                                      dtype=torch.float32))
                self.context.weight.copy_(torch.tensor(rng.uniform(-0.5, 0.5, (vocabulary, dim)),
                                                       dtype=torch.float32))

        def forward(self, centre, context, negatives):
            u = self.centre(centre)
            positive = F.logsigmoid((u * self.context(context)).sum(1))
            negative = F.logsigmoid(-torch.bmm(self.context(negatives), u.unsqueeze(2)).squeeze(2)).sum(1)
            return -(positive + negative).mean()

    model = SkipGram()
    optimizer = {"SparseAdam": lambda p: m.optim.SparseAdam(p, lr=0.05),
                 "SGD": lambda p: m.optim.SGD(p, lr=0.5),
                 "Adagrad": lambda p: m.optim.Adagrad(p, lr=0.2)}[optimizer_name](list(model.parameters()))
    losses = []
    for _ in range(steps):
        centre = torch.tensor(rng.integers(0, vocabulary, 16))
        context = torch.tensor((rng.integers(0, 3, 16) + centre.numpy()) % vocabulary)
        negatives = torch.tensor(rng.integers(0, vocabulary, (16, 5)))
        optimizer.zero_grad()
        loss = model(centre, context, negatives)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, model.centre.weight, model.context.weight


@pytest.mark.parametrize("optimizer_name", ["SparseAdam", "SGD", "Adagrad"])
def test_skipgram_with_sparse_embeddings_trains_as_pytorchs(optimizer_name):
    (losses, centre, context), _ = run_both(skipgram_program, optimizer_name, rtol=2e-5, atol=1e-6)
    assert losses[-1] < losses[0]
