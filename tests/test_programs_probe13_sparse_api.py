"""Graph networks on a sparse adjacency and embeddings with sparse gradients, written as PyTorch programs are written
without PyG (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and data;
without PyTorch (CI) each program still checks itself against NumPy. The sparse API those programs touch (nnz,
indices of coalesced and summed tensors, ``t``, products on either side, ``sparse.addmm``, conversions, printing, the
errors for what has no sparse kernel or breaks the invariants); what differs: PyTorch's dense gradient through a
sparse factor of torch.mm / @ / matmul / spmm, and a saved sparse adjacency loaded back; a sparse tensor with a graph
printed as PyTorch's."""

import numpy as np
import pytest

from . import probe13_sparse_common
from .probe13_sparse_common import DST, SRC, X0, N, normalized_adjacency, numpy_normalized
from .pytorch_programs import run_both

_pytorch_warns_always = probe13_sparse_common._pytorch_warns_always  # the fixture (autouse)

pytestmark = [pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled"),
              pytest.mark.filterwarnings("ignore:torch.sparse.SparseTensor.*is deprecated:UserWarning"),
              pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")]


# ----------------------------------------------------------------------------------------------
# the sparse API the programs touch
# ----------------------------------------------------------------------------------------------


def sparse_api(m):
    torch = m.torch
    S = torch.sparse_coo_tensor(torch.tensor(np.stack([SRC[:10], DST[:10]])), torch.arange(1.0, 11.0), (N, N))
    C = S.coalesce()
    summed = S + S.t()  # uncoalesced: PyTorch's entries (see tests/test_probe13_sparse_fixes.py)
    dense = torch.tensor(X0[:, :3].copy())
    scaled = C * torch.arange(float(N)).unsqueeze(1)  # row scales
    return dict(
        nnz=[S._nnz(), C._nnz(), summed._nnz(), (C + C.t())._nnz()],
        coalesced=[S.is_coalesced(), C.is_coalesced(), summed.is_coalesced(), (C + C.t()).is_coalesced()],
        indices=[C.indices(), C.values(), summed._indices(), summed._values()],
        transposed=C.t().to_dense(),
        products=[S @ dense, dense.t() @ S, torch.sparse.addmm(dense, S, dense, beta=0.5, alpha=2.0),
                  torch.mm(S, dense), torch.matmul(S, dense), torch.mv(S, dense[:, 0]), (S @ S).to_dense()],
        sums=[torch.sparse.sum(S), torch.sparse.sum(S, dim=0).to_dense(), S.sum(), scaled.to_dense(),
              torch.sparse.sum(S, dim=(0, 1))],
        conversions=[S.double().to_dense(), S.to(torch.float64).dtype == torch.float64, C.type(),
                     (S / 2).to_dense(), (-S).to_dense(), (S - S).to_dense(), S.select(0, int(SRC[0])).to_dense(),
                     C[int(SRC[1])].to_dense(), C.norm()],
        repr=repr(torch.sparse_coo_tensor(torch.tensor([[0, 1, 1], [2, 0, 2]]), torch.tensor([3.0, 4.0, 5.0]),
                                          (2, 3))),
    )


def test_the_sparse_api_as_pytorchs():
    ours, _ = run_both(sparse_api, rtol=1e-5, atol=1e-5)
    S = np.zeros((N, N))
    np.add.at(S, (SRC[:10], DST[:10]), np.arange(1.0, 11.0))
    np.testing.assert_allclose(ours["products"][0], S @ X0[:, :3], rtol=1e-5, atol=1e-6)
    assert ours["nnz"][1] == np.count_nonzero(S) and ours["coalesced"] == [False, True, False, False]  # (C.t() is not)


def sparse_errors(m):
    torch = m.torch
    S = torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 0]]), torch.tensor([1.0, 2.0]), (2, 2))
    attempts = dict(
        exp=lambda: S.exp(), view=lambda: S.view(4), values=lambda: (S + S.t()).values(),
        sparse_plus_dense=lambda: S + torch.ones(2, 2), max=lambda: S.max(),
        out_of_range=lambda: torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.ones(2), (2,),
                                                     check_invariants=True),
        negative=lambda: torch.sparse_coo_tensor(torch.tensor([[0, -1]]), torch.ones(2), (2,),
                                                 check_invariants=True),
        nnz_mismatch=lambda: torch.sparse_coo_tensor(torch.tensor([[0, 1]]), torch.ones(3), (2,)),
        norm_dim=lambda: S.norm(dim=1),
        leaf_in_place=lambda: torch.sparse_coo_tensor(torch.tensor([[0], [1]]),
                                                      torch.ones(1), (2, 2), requires_grad=True).mul_(2),
    )
    raised = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            raised[name] = "nothing"
        except Exception as error:  # noqa: BLE001 (the kind of error is what is compared)
            raised[name] = type(error).__name__
    return raised


def test_errors_for_what_has_no_sparse_kernel_or_breaks_the_invariants():
    ours, _ = run_both(sparse_errors)
    assert ours["exp"] == "NotImplementedError" and ours["out_of_range"] == "RuntimeError"


# ----------------------------------------------------------------------------------------------
# what differs: PyTorch's dense gradient through a sparse factor of torch.mm / @ / matmul / spmm
# ----------------------------------------------------------------------------------------------

def learned_adjacency(m):
    torch = m.torch
    weights = m.nn.Parameter(torch.tensor(numpy_normalized().astype(np.float32)))  # learnt edge weights
    out = weights.to_sparse() @ torch.tensor(X0)  # made sparse for the product
    (out ** 2).sum().backward()
    return out, weights.grad


def test_a_dense_matrix_made_sparse_gets_pytorchs_dense_gradient_through_matmul():
    (out, grad), theirs = run_both(learned_adjacency, rtol=1e-5, atol=1e-5)
    expected = 2 * out @ X0.T  # the full dL/dW = 2 Y X^T: nonzero where W is 0 too
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)


def saved_adjacency(m, path):
    torch = m.torch
    adj = normalized_adjacency(m).coalesce()
    torch.save({"adj": adj, "features": torch.tensor(X0)}, path)
    loaded = torch.load(path)
    return loaded["adj"].to_dense(), loaded["adj"].is_coalesced(), torch.spmm(loaded["adj"], loaded["features"])


def test_a_saved_sparse_adjacency_loads_back(tmp_path):
    (dense, coalesced, product), _ = run_both(saved_adjacency, str(tmp_path / "graph.pt"))
    np.testing.assert_allclose(dense, numpy_normalized(), rtol=1e-6)
    assert coalesced


def printed_graph_tensor(m):
    torch = m.torch
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], requires_grad=True)
    scores = torch.sparse_coo_tensor(torch.tensor([[0, 1, 1, 2, 0, 2], [1, 0, 2, 1, 1, 2]]), values, (3, 3))
    return repr(scores.coalesce())


def test_a_sparse_tensor_with_a_graph_prints_as_pytorchs():
    ours, _ = run_both(printed_graph_tensor)
    assert ours.endswith("size=(3, 3), nnz=5, layout=torch.sparse_coo, grad_fn=<CoalesceBackward0>)")
