# ruff: noqa: E731  (the programs are kept as their authors write them)
"""Graph networks on a sparse adjacency and embeddings with sparse gradients, written as PyTorch programs are written
without PyG (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and data;
without PyTorch (CI) each program still checks itself against NumPy. Sparse gradients: word2vec's skip-gram with
``nn.Embedding(sparse=True)`` trained by SGD (momentum, Nesterov), Adagrad and SparseAdam, with gradients accumulated
over several backward calls and ``zero_grad(set_to_none=False)`` (the sparse .grad's entries compared too), and its
sparse gradient by hand; ``clip_grad_norm_`` refusing a sparse gradient; a hook on a sparse embedding sees the sparse
gradient; fastText's ``EmbeddingBag(sparse=True)`` with SparseAdam for the bag and Adam for the classifier,
SparseAdam resumed from its state_dict."""

import numpy as np
import pytest

from . import probe13_sparse_common
from .probe13_sparse_common import CLASSES
from .pytorch_programs import run_both

_pytorch_warns_always = probe13_sparse_common._pytorch_warns_always  # the fixture (autouse)

pytestmark = [pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled"),
              pytest.mark.filterwarnings("ignore:torch.sparse.SparseTensor.*is deprecated:UserWarning"),
              pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")]


# ----------------------------------------------------------------------------------------------
# word2vec skip-gram with sparse embeddings: SGD, Adagrad, SparseAdam; accumulation; zero_grad
# ----------------------------------------------------------------------------------------------

VOCAB, EMBED = 24, 5
_w2v = np.random.default_rng(2)
U0 = (_w2v.standard_normal((VOCAB, EMBED)) * 0.3).astype(np.float32)
V0 = (_w2v.standard_normal((VOCAB, EMBED)) * 0.3).astype(np.float32)
BATCHES = [(_w2v.integers(0, VOCAB, 8), _w2v.integers(0, VOCAB, 8), _w2v.integers(0, VOCAB, (8, 4)))
           for _ in range(6)]


def skipgram_model(m):
    nn, F = m.nn, m.F

    class SkipGramModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.u_embeddings = nn.Embedding(VOCAB, EMBED, sparse=True)
            self.v_embeddings = nn.Embedding(VOCAB, EMBED, sparse=True)
            self.u_embeddings.weight.data.copy_(m.torch.tensor(U0))
            self.v_embeddings.weight.data.copy_(m.torch.tensor(V0))

        def forward(self, pos_u, pos_v, neg_v):
            emb_u = self.u_embeddings(pos_u)
            emb_v = self.v_embeddings(pos_v)
            emb_neg_v = self.v_embeddings(neg_v)
            score = F.logsigmoid(torch_clamp(m, (emb_u * emb_v).sum(dim=1)))
            neg_score = F.logsigmoid(-torch_clamp(m, m.torch.bmm(emb_neg_v, emb_u.unsqueeze(2)).squeeze()))
            return -(score + neg_score.sum(dim=1)).mean()

    return SkipGramModel()


def torch_clamp(m, x):
    return m.torch.clamp(x, max=10, min=-10)


def train_skipgram(m, make_optimizer, accumulate=1, set_to_none=True):
    torch = m.torch
    model = skipgram_model(m)
    optimizer = make_optimizer(m, model)
    losses, structure = [], []
    for k, (u, v, neg) in enumerate(BATCHES):
        loss = model(torch.tensor(u), torch.tensor(v), torch.tensor(neg)) / accumulate
        loss.backward()
        losses.append(loss.item())
        if (k + 1) % accumulate == 0:
            grad = model.v_embeddings.weight.grad
            structure.append([grad._nnz(), grad._indices(), grad.to_dense()])
            optimizer.step()
            optimizer.zero_grad(set_to_none=set_to_none)
    return losses, model.u_embeddings.weight, model.v_embeddings.weight, structure


OPTIMIZERS = {
    "sgd": lambda m, model: m.optim.SGD(model.parameters(), lr=0.5),
    "sgd_momentum": lambda m, model: m.optim.SGD(model.parameters(), lr=0.3, momentum=0.9),
    "sgd_nesterov": lambda m, model: m.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, nesterov=True),
    "adagrad": lambda m, model: m.optim.Adagrad(model.parameters(), lr=0.3, lr_decay=0.01,
                                                initial_accumulator_value=0.1),
    "sparse_adam": lambda m, model: m.optim.SparseAdam(list(model.parameters()), lr=0.05),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("accumulate,set_to_none", [(1, True), (2, False)])
def test_skipgram_trains_with_sparse_gradients(name, accumulate, set_to_none):
    (losses, *_), _ = run_both(train_skipgram, OPTIMIZERS[name], accumulate, set_to_none, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(losses))


def sparse_gradient_by_hand():
    """dL/dV of the first batch, by the chain rule in NumPy (float64)."""
    u, v, neg = BATCHES[0]
    sig = lambda x: 1 / (1 + np.exp(-x))
    U, V = U0.astype(np.float64), V0.astype(np.float64)
    eu, ev, en = U[u], V[v], V[neg]
    grad = np.zeros_like(V)
    pos = (eu * ev).sum(1)
    np.add.at(grad, v, -(1 - sig(pos))[:, None] * eu / len(u))
    negs = np.einsum("bkd,bd->bk", en, eu)
    np.add.at(grad, neg.reshape(-1), (sig(negs)[..., None] * eu[:, None, :] / len(u)).reshape(-1, EMBED))
    return grad


def test_the_sparse_gradient_by_hand():
    (_, _, _, structure), _ = run_both(train_skipgram, OPTIMIZERS["sgd"], 1, True)
    nnz, indices, dense = structure[0]
    np.testing.assert_allclose(dense, sparse_gradient_by_hand(), rtol=1e-4, atol=1e-6)
    assert nnz <= 8 + 32 and set(indices[0]) == set(BATCHES[0][1]) | set(BATCHES[0][2].reshape(-1))


def clip_sparse(m):
    torch = m.torch
    model = skipgram_model(m)
    u, v, neg = BATCHES[0]
    model(torch.tensor(u), torch.tensor(v), torch.tensor(neg)).backward()
    try:
        m.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        return "clipped"
    except NotImplementedError as error:
        return "linalg_vector_norm" in str(error) and "SparseCPU" in str(error)


def test_clip_grad_norm_refuses_sparse_gradients():
    ours, _ = run_both(clip_sparse)
    assert ours is True


# ----------------------------------------------------------------------------------------------
# fastText: EmbeddingBag(sparse=True) with SparseAdam, the classifier with Adam; SparseAdam resumed
# ----------------------------------------------------------------------------------------------


def fasttext(m, resume_at=None, mode="mean"):
    torch, nn, F = m.torch, m.nn, m.F

    class TextClassificationModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.EmbeddingBag(VOCAB, EMBED, mode=mode, sparse=True)
            self.fc = nn.Linear(EMBED, CLASSES)
            self.embedding.weight.data.copy_(torch.tensor(U0))
            self.fc.weight.data.copy_(torch.tensor(V0[:CLASSES]))
            self.fc.bias.data.zero_()

        def forward(self, text, offsets, per_sample_weights=None):
            return self.fc(self.embedding(text, offsets, per_sample_weights=per_sample_weights))

    model = TextClassificationModel()
    sparse_optimizer = m.optim.SparseAdam(list(model.embedding.parameters()), lr=0.05)
    dense_optimizer = m.optim.Adam(model.fc.parameters(), lr=0.05)
    losses = []
    for k, (u, _, neg) in enumerate(BATCHES):
        if k == resume_at:
            saved = sparse_optimizer.state_dict()
            sparse_optimizer = m.optim.SparseAdam(list(model.embedding.parameters()), lr=0.05)
            sparse_optimizer.load_state_dict(saved)
        text = torch.tensor(neg.reshape(-1))
        offsets = torch.tensor([0, 3, 10, 11, 20, 26])
        weights = torch.tensor(np.linspace(0.2, 1.0, 32).astype(np.float32)) if mode == "sum" else None
        sparse_optimizer.zero_grad()
        dense_optimizer.zero_grad()
        loss = F.cross_entropy(model(text, offsets, weights), torch.tensor(u[:6] % CLASSES))
        loss.backward()
        sparse_optimizer.step()
        dense_optimizer.step()
        losses.append(loss.item())
    state = sparse_optimizer.state_dict()["state"][0]
    return losses, model.embedding.weight, model.fc.weight, state["exp_avg_sq"], state["step"]


@pytest.mark.parametrize("mode", ["mean", "sum"])
def test_fasttext_with_sparse_adam_and_adam(mode):
    (losses, *_, step), _ = run_both(fasttext, None, mode, rtol=1e-5, atol=1e-6)
    assert step == len(BATCHES)


def test_sparse_adam_resumed_from_its_state_dict_gives_the_same_weights():
    straight, _ = run_both(fasttext, None)
    resumed, _ = run_both(fasttext, 3)
    np.testing.assert_array_equal(resumed[1], straight[1])
    assert resumed[4] == straight[4] == len(BATCHES)


def hooked_sparse_embedding(m):
    torch = m.torch
    model = skipgram_model(m)
    model.u_embeddings.weight.register_hook(lambda grad: grad * 0.5)  # a gradient scaled by a tensor hook
    optimizer = m.optim.SparseAdam(list(model.parameters()), lr=0.05)
    for u, v, neg in BATCHES[:3]:
        optimizer.zero_grad()
        model(torch.tensor(u), torch.tensor(v), torch.tensor(neg)).backward()
        optimizer.step()
    return model.u_embeddings.weight, model.u_embeddings.weight.grad.is_sparse


def test_a_hook_on_a_sparse_embedding_sees_the_sparse_gradient():
    (weight, sparse), _ = run_both(hooked_sparse_embedding)
    assert sparse
