"""``fx.replace_pattern`` and ``fx.passes.shape_prop.ShapeProp`` (``torch.fx``, chainrule's ``autograd.fx``),
ported from PyTorch's test/fx/test_subgraph_rewriter.py and test/test_fx.py: patterns replaced once or several times,
argument order kept, whole-graph and traced-module patterns, the matches returned, and shapes propagated.

Each test runs on chainrule and, where it is installed, on PyTorch (fixture `T`); the expectations are literals or
the traced program run eagerly.
"""

import importlib

import numpy as np

from tests import ported_fx, ported_nn
from tests.ported import close, same
from tests.ported_fx import linear_relu

fx, nn = ported_fx.fx, ported_nn.nn  # the fixtures


# --- ShapeProp ---------------------------------------------------------------------------------------------

def test_shape_prop(T, fx, nn):
    shape_prop = importlib.import_module(T.__name__ + ".fx.passes.shape_prop")
    gm = fx.symbolic_trace(linear_relu(T, nn))
    x = T.ones(5, 4)
    shape_prop.ShapeProp(gm).propagate(x)
    metas = {n.name: n.meta["tensor_meta"] for n in gm.graph.nodes if n.op != "output"}
    assert tuple(metas["x"].shape) == (5, 4)
    assert tuple(metas["linear"].shape) == (5, 3)
    assert metas["relu"].dtype == T.float32
    assert metas["relu"].requires_grad is True
    assert metas["x"].requires_grad is False
    assert metas["x"].stride == (4, 1)


def test_shape_prop_tuple_outputs(T, fx):
    shape_prop = importlib.import_module(T.__name__ + ".fx.passes.shape_prop")
    gm = fx.symbolic_trace(lambda x: T.max(x, 1))
    shape_prop.ShapeProp(gm).propagate(T.ones(3, 2))
    meta = next(n for n in gm.graph.nodes if n.name == "max_1").meta["tensor_meta"]
    assert tuple(meta[0].shape) == (3,)
    assert meta[1].dtype == T.int64


# --- replace_pattern (test/fx/test_subgraph_rewriter.py) ------------------------------------------------------

def test_subgraph_rewriter_preserves_logic(T, fx, nn):
    class M(nn.Module):
        def forward(self, x):
            val = T.neg(x) + T.relu(x)
            return T.add(val, val)

    def pattern(x):
        return T.neg(x) + T.relu(x)

    def comparison(x):
        val = T.neg(x) + T.relu(x)
        return T.add(val, val)
    traced = fx.symbolic_trace(M())
    x = T.tensor([-2.0, 3.0])
    fx.replace_pattern(traced, pattern, pattern)
    traced.graph.lint()
    same(traced(x), comparison(x).numpy())


def test_subgraph_rewriter_with_oneliner_pattern(T, fx, nn):
    class M(nn.Module):
        def forward(self, x):
            val = T.neg(x)
            return T.add(val, val)
    traced = fx.symbolic_trace(M())
    matches = fx.replace_pattern(traced, lambda x: T.neg(x), lambda x: T.relu(x))
    assert len(matches) == 1
    traced.graph.lint()
    same(traced(T.tensor([-2.0, 3.0])), [0.0, 6.0])


def test_subgraph_rewriter_single_pattern_match(T, fx, nn):
    class M(nn.Module):
        def forward(self, x):
            val = T.neg(x) + T.relu(x)
            return T.add(val, val)

    def pattern(x):
        return T.neg(x) + T.relu(x)

    def replacement(x):
        return T.relu(x)
    traced = fx.symbolic_trace(M())
    fx.replace_pattern(traced, pattern, replacement)
    traced.graph.lint()
    same(traced(T.tensor([-2.0, 3.0])), [0.0, 6.0])


def test_subgraph_rewriter_multiple_pattern_match(T, fx, nn):
    class M(nn.Module):
        def forward(self, x, w1, w2):
            m1 = T.cat([w1, w2]).sum()
            m2 = T.cat([w1, w2]).sum()
            return x + T.max(m1) + T.max(m2)

    def pattern(w1, w2):
        return T.cat([w1, w2]).sum()

    def replacement(w1, w2):
        return T.stack([w1, w2])
    traced = fx.symbolic_trace(M())
    matches = fx.replace_pattern(traced, pattern, replacement)
    assert len(matches) == 2
    traced.graph.lint()
    x, w1, w2 = T.tensor([1.0]), T.tensor([2.0, 5.0]), T.tensor([3.0, 4.0])
    same(traced(x, w1, w2), [11.0])


def test_subgraph_rewriter_graph_argument_order(T, fx, nn):
    class M(nn.Module):
        def forward(self, x, y):
            return T.mm(x, y)

    def pattern(x, y):
        return T.mm(x, y)

    def replacement(x, y):
        return T.mm(y.t(), x.t()).t()  # the same product
    traced = fx.symbolic_trace(M())
    fx.replace_pattern(traced, pattern, replacement)
    traced.graph.lint()
    x, y = T.tensor([[1.0, 2.0]]), T.tensor([[3.0], [4.0]])
    same(traced(x, y), [[11.0]])


def test_subgraph_rewriter_correct_output_replacement(T, fx, nn):
    class M(nn.Module):
        def forward(self, x, y):
            val = T.neg(y) + T.relu(x)
            return T.add(val, val)

    def pattern(x):
        return T.relu(x)

    def replacement(x):
        return T.neg(x)
    traced = fx.symbolic_trace(M())
    fx.replace_pattern(traced, pattern, replacement)
    traced.graph.lint()
    x, y = T.tensor([1.0, -2.0]), T.tensor([3.0, 1.0])
    same(traced(x, y), 2 * (-np.array([3.0, 1.0]) - np.array([1.0, -2.0])))


def test_subgraph_rewriter_traced_as_callable(T, fx, nn):
    class M(nn.Module):
        def forward(self, x):
            val = T.neg(x) + T.relu(x)
            return T.add(val, val)

    class Pattern(nn.Module):
        def forward(self, x):
            return T.neg(x) + T.relu(x)

    class Replacement(nn.Module):
        def forward(self, x):
            return T.sigmoid(x)
    traced = fx.symbolic_trace(M())
    fx.replace_pattern(traced, fx.symbolic_trace(Pattern()), fx.symbolic_trace(Replacement()))
    traced.graph.lint()
    close(traced(T.tensor([0.0])), [1.0])


def test_subgraph_rewriter_pattern_is_entire_graph(T, fx, nn):
    class M(nn.Module):
        def forward(self, x):
            a = T.neg(x)
            return T.add(a, a)

    def pattern(x):
        a = T.neg(x)
        return T.add(a, a)

    def replacement(x):
        a = T.sigmoid(x)
        return T.cat([a, a])
    traced = fx.symbolic_trace(M())
    fx.replace_pattern(traced, pattern, replacement)
    traced.graph.lint()
    close(traced(T.tensor([0.0])), [0.5, 0.5])


def test_subgraph_rewriter_no_match(T, fx):
    traced = fx.symbolic_trace(lambda x: T.relu(x) + 1)
    assert fx.replace_pattern(traced, lambda x: T.sigmoid(x), lambda x: T.neg(x)) == []
    same(traced(T.tensor([-1.0])), [1.0])


def test_subgraph_rewriter_match_object(T, fx):
    traced = fx.symbolic_trace(lambda x: T.neg(x) * 2)
    (match,) = fx.replace_pattern(traced, lambda x: T.neg(x), lambda x: T.relu(x))
    anchor = match.anchor
    assert anchor.name == "neg"
    assert {k.name: v.name for k, v in match.nodes_map.items()} == {"neg": "neg", "x": "x"}


def test_subgraph_rewriter_internal_node_used_outside_refused(T, fx):
    # a match whose inner value is read elsewhere is not replaced
    def f(x):
        a = T.neg(x)
        return T.relu(a), a * 2
    traced = fx.symbolic_trace(f)
    assert fx.replace_pattern(traced, lambda x: T.relu(T.neg(x)), lambda x: x) == []
