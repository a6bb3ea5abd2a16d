"""What the files of session 13's sparse probe (tests/test_programs_probe13_sparse_*.py: GCNs, attention and
recommenders, the sparse API, sparse gradients) share: the autouse fixture ``_pytorch_warns_always`` (each file
imports it), and the graph: ``N`` nodes with ``FEATURES`` features and ``CLASSES`` classes, an edge list
``SRC``/``DST`` with repeats and self-loops, features ``X0``, ``LABELS``, weights ``W1``/``W2``, all drawn once from
one seeded generator, with ``dense_adjacency``, ``normalized_adjacency`` (D^-1/2 (A + I) D^-1/2 written with torch
ops) and ``numpy_normalized``."""

import numpy as np
import pytest

from .pytorch_programs import pytorch


@pytest.fixture(autouse=True)
def _pytorch_warns_always():
    """PyTorch warns of torch.sparse.FloatTensor's deprecation once a process: warned always here, so that the once
    is left to tests/test_sparse.py, which asserts the warning."""
    torch_modules = pytorch()
    if torch_modules is None:
        yield
        return
    before = torch_modules.torch.is_warn_always_enabled()
    torch_modules.torch.set_warn_always(True)
    yield
    torch_modules.torch.set_warn_always(before)


N, FEATURES, CLASSES = 14, 6, 3
_rng = np.random.default_rng(0)
SRC, DST = _rng.integers(0, N, 32), _rng.integers(0, N, 32)  # repeats and self-loops among them
X0 = _rng.standard_normal((N, FEATURES)).astype(np.float32)
LABELS = _rng.integers(0, CLASSES, N)
W1 = (_rng.standard_normal((FEATURES, 8)) * 0.4).astype(np.float32)
W2 = (_rng.standard_normal((8, CLASSES)) * 0.4).astype(np.float32)


def dense_adjacency(loops=True, symmetric=True):
    A = np.zeros((N, N))
    np.add.at(A, (SRC, DST), 1.0)
    if symmetric:
        np.add.at(A, (DST, SRC), 1.0)
    if loops:
        A += np.eye(N)
    return A


def normalized_adjacency(m):
    """D^-1/2 (A + I) D^-1/2 from the edge list, as people write it with torch ops."""
    torch = m.torch
    edge_index = torch.tensor(np.stack([SRC, DST]))
    edge_index = torch.cat([edge_index, edge_index.flip(0)], dim=1)
    self_loops = torch.arange(N).unsqueeze(0).repeat(2, 1)
    edge_index = torch.cat([edge_index, self_loops], dim=1)
    adj = torch.sparse_coo_tensor(edge_index, torch.ones(edge_index.size(1)), (N, N)).coalesce()
    deg = torch.sparse.sum(adj, dim=1).to_dense()
    deg_inv_sqrt = deg.pow(-0.5)
    deg_inv_sqrt[torch.isinf(deg_inv_sqrt)] = 0
    row, col = adj.indices()
    values = deg_inv_sqrt[row] * adj.values() * deg_inv_sqrt[col]
    return torch.sparse_coo_tensor(adj.indices(), values, adj.shape)


def numpy_normalized():
    A = dense_adjacency()
    d = A.sum(1) ** -0.5
    return d[:, None] * A * d[None, :]
