"""PyTorch's names for the node a write by ``x[index] = value`` or through a view leaves on the written tensor:
the basic part of the index makes a view (an integer, None, a bool, a slice short of its dim) and the write goes
through it (``torch::autograd::CopySlices``, as any in-place op on a view); else the index is the whole tensor and
the write is an ``index_put_`` (arrays, lists, masks), a ``fill_`` (a 0-dim value) or a ``copy_``. Each case runs on
chainrule and on PyTorch against the same literal name. And a weight-normed layer's weight, by either API, is
WeightNormInterfaceBackward0 (MulBackward0 with dim=None, as PyTorch multiplies it out there); the rounding ops
are named each by its function (they were all RoundingBackward0), and Tensor.unfold's windows UnfoldBackward0."""

import pytest

COPY_SLICES, COPY = "torch::autograd::CopySlices", "torch::autograd::CopyBackwards"

CASES = {
    "c[:2] = x[:2]": COPY_SLICES, "c[0] = x[0]": COPY_SLICES, "c[..., 1] = x[:, 0]": COPY_SLICES,
    "c[None, 1] = x[0]": COPY_SLICES, "c[0, 1] = x.sum()": COPY_SLICES, "c[1:, idx] = x[:2, :2]": COPY_SLICES,
    "c[0:0] = x.sum()": COPY_SLICES, "c[T.tensor(1)] = 0.0": COPY_SLICES, "c[True] = x": COPY_SLICES,
    "c[T.tensor(True)] = x": COPY_SLICES, "c[None] = x": COPY_SLICES, "c[:, ::2] = 0.0": COPY_SLICES,
    "c[rows, 1:] = 0.0": COPY_SLICES,
    "c[[0, 2]] = x[:2]": "IndexPutBackward0", "c[c > 1] = 0.0": "IndexPutBackward0",
    "c[idx, :] = x[:2]": "IndexPutBackward0", "c[rows, :] = 0.0": "IndexPutBackward0",
    "c[..., [0, 1]] = 0.0": "IndexPutBackward0",
    "c[:] = 0.0": "FillBackward3", "c[...] = x.sum()": "FillBackward3",
    "c[...] = x[0]": COPY, "c[0:10] = x": COPY,
    # in-place ops through views
    "c[:2].copy_(x[:2])": COPY_SLICES, "c[1:].mul_(2)": COPY_SLICES, "c.diagonal().zero_()": COPY_SLICES,
    "c.view(-1)[::4].fill_(-1)": COPY_SLICES,
}


WRITES = [(statement, "graph") for statement in CASES] + [  # a written value from the graph, into a plain tensor
    (statement, "zeros") for statement in CASES if "x" in statement]


@pytest.mark.parametrize("statement, base", WRITES)
def test_setitem_node_names_are_pytorchs(T, statement, base):
    x = T.ones(3, 3, requires_grad=True)
    scope = {"T": T, "x": x, "c": T.zeros(3, 3) if base == "zeros" else x * 2, "idx": T.tensor([0, 1]),
             "rows": T.tensor([True, False, True])}
    exec(statement, scope)
    assert scope["c"].grad_fn.name() == CASES[statement]


def test_the_written_tensor_differentiates_as_before(T):
    x = T.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    c = T.zeros(2, 3)
    c[:, 1:] = x[:, :2] * 3  # CopySlices
    c[T.tensor([0]), 0] = x[1, 2]  # CopySlices (a select, then an index_put_ on it)
    c.diagonal().mul_(2)  # CopySlices
    (c * T.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])).sum().backward()
    assert x.grad.tolist() == [[6.0, 9.0, 0.0], [30.0, 18.0, 2.0]]


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("dim, name", [(0, "WeightNormInterfaceBackward0"), (1, "WeightNormInterfaceBackward0"),
                                       (None, "MulBackward0")])
def test_weight_norm_node_names_are_pytorchs(T, dim, name):
    import importlib

    nn = importlib.import_module("torch.nn" if T.__name__ == "torch" else "nn")
    assert nn.utils.weight_norm(nn.Linear(3, 2), dim=dim).weight.grad_fn.name() == name
    assert nn.utils.parametrizations.weight_norm(nn.Linear(3, 2), dim=dim).weight.grad_fn.name() == name


@pytest.mark.parametrize("expression, name", [
    ("torch.sign(x)", "SignBackward0"), ("torch.sgn(x)", "SgnBackward0"), ("x.floor()", "FloorBackward0"),
    ("torch.ceil(x)", "CeilBackward0"), ("x.trunc()", "TruncBackward0"), ("torch.fix(x)", "TruncBackward0"),
    ("x.round()", "RoundBackward0"), ("x.round(decimals=0)", "RoundBackward1"),
    ("torch.round(x, decimals=2)", "RoundBackward1"), ("x.unfold(0, 1, 1)", "UnfoldBackward0"),
])
def test_rounding_node_names_are_pytorchs(T, expression, name):
    x = T.tensor([1.5, -2.25], requires_grad=True)
    assert eval(expression, {"torch": T, "x": x}).grad_fn.name() == name
