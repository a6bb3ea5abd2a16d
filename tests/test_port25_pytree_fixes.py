"""Focused tests of the pytree fixes made while porting PyTorch's ``test/test_pytree.py`` (beyond what the ported
tests in ``tests/test_ported_pytree.py`` show): each runs on ``autograd.utils._pytree`` and, where torch is
installed, on ``torch.utils._pytree``, with the expected values written out."""

import dataclasses
import fractions
import importlib
import time
from collections import defaultdict
from typing import Any

import pytest


@pytest.fixture(params=["autograd.utils._pytree", pytest.param("torch.utils._pytree", marks=pytest.mark.torch)])
def P(request):  # noqa: N802  (the module, as programs alias it)
    return importlib.import_module(request.param)


pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated")


def test_flatten_with_path_gives_the_spec_flatten_gives(P):
    # (a dataclass's flatten_with_keys_fn gives another context than its flatten_fn: the spec is flatten_fn's)
    @dataclasses.dataclass
    class Output:
        logits: Any
        loss: Any = None

    P.register_dataclass(Output)
    try:
        pairs, spec = P.tree_flatten_with_path(Output([1, 2]))
        assert spec == P.tree_structure(Output([1, 2])) and spec.context == [["logits"], ["loss"]]
        assert [(P.keystr(k), v) for k, v in pairs] == [(".logits[0]", 1), (".logits[1]", 2)]
        assert P.tree_map_with_path(lambda k, v: v * 10, Output([1, 2])) == Output([10, 20])
    finally:
        P._deregister_pytree_node(Output)


def test_a_struct_time_is_a_structseq_but_a_leaf(P):
    now = time.gmtime(0)
    assert P.is_structseq(now) and not P.is_namedtuple(now)
    leaves, spec = P.tree_flatten([now])
    assert leaves == [now] and spec.num_leaves == 1 and spec.child(0).is_leaf()


def test_a_defaultdict_whose_factory_is_no_builtin_reads_back(P):
    spec = P.tree_structure(defaultdict(fractions.Fraction, {"a": 1}))
    loaded = P.treespec_loads(P.treespec_dumps(spec))
    assert loaded == spec and loaded.context[0] is fractions.Fraction
    assert loaded.unflatten([2])["b"] == fractions.Fraction(0)


def test_the_only_forms_refuse_what_is_neither_type_nor_predicate(P):
    with pytest.raises(TypeError, match="Argument must be a type, a tuple of types, or a callable"):
        P.tree_map_only(3, lambda x: x, [1])
    assert P.tree_map_only(int | str, lambda x: x * 2, [1, "a", 0.5]) == [2, "aa", 0.5]


def test_register_pytree_node_refuses_a_type_twice_the_private_form_overwrites_it(P):
    class Pair:
        def __init__(self, a, b):
            self.a, self.b = a, b

    P.register_pytree_node(Pair, lambda p: ([p.a, p.b], None), lambda xs, _: Pair(*xs))
    with pytest.raises(ValueError, match="is already registered as pytree node"):
        P.register_pytree_node(Pair, lambda p: ([p.a], None), lambda xs, _: Pair(xs[0], 0))
    with pytest.warns(FutureWarning), pytest.warns(UserWarning, match="Overwriting the previous registration"):
        P._register_pytree_node(Pair, lambda p: ([p.a], None), lambda xs, _: Pair(xs[0], 0))
    assert P.tree_leaves(Pair(1, 2)) == [1]
    P._deregister_pytree_node(Pair)
    assert P.tree_structure(Pair(1, 2)).is_leaf()
