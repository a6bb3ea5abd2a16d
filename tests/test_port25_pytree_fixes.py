"""Focused tests of the pytree fixes made while porting PyTorch's ``test/test_pytree.py`` (beyond what the ported
tests in ``tests/test_ported_pytree.py`` show), and of vmap's in_dims and out_dims read as pytree prefixes: each
runs on chainrule and, where torch is installed, on torch, with the expected values written out."""

import dataclasses
import fractions
import importlib
import time
from collections import OrderedDict, defaultdict, namedtuple
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


# -- vmap reads in_dims and out_dims as pytree prefixes (PyTorch's _broadcast_to_and_flatten) ----------------------

Pt = namedtuple("Pt", "x y")


def test_vmap_in_dims_and_out_dims_are_prefixes_of_any_registered_container(T):
    func = importlib.import_module(f"{T.__name__}.func")
    x, y = T.arange(6.0).reshape(2, 3), T.tensor([1.0, -1.0, 2.0])
    assert func.vmap(lambda p: p.x * p.y, in_dims=(Pt(0, None),))(Pt(x, y)).tolist() == [[0, -1, 4], [3, -4, 10]]
    od = func.vmap(lambda d: d["a"] + d["b"], in_dims=(OrderedDict(a=0, b=None),))({"a": x, "b": y})
    assert od.tolist() == [[1, 0, 4], [4, 3, 7]]
    out = func.vmap(lambda a: Pt(a * 2, a.sum()), out_dims=Pt(1, 0))(x)
    assert type(out) is Pt and out.x.tolist() == [[0, 6], [2, 8], [4, 10]] and out.y.tolist() == [3, 12]


@pytest.mark.parametrize("case, message", [
    ("list for a tuple", r"in_dims has structure TreeSpec\(tuple, None, \[TreeSpec\(list, None, \[\*,\n    \*\]\)\]\) "
                         r"but inputs has structure "
                         r"TreeSpec\(tuple, None, \[TreeSpec\(tuple, None, \[\*,\n    \*\]\)\]\)"),
    ("one too many", r"in_dims has structure TreeSpec\(tuple, None, \[\*,\n  \*\]\) but inputs has structure "
                     r"TreeSpec\(tuple, None, \[\*\]\)\."),
    ("out list for a tuple", r"out_dims has structure TreeSpec\(list, None, \[\*,\n  \*\]\) but outputs has "
                             r"structure TreeSpec\(tuple, None, \[\*,\n  \*\]\)\."),
])
def test_vmap_refuses_dims_of_another_structure_naming_both_specs(T, case, message):
    func = importlib.import_module(f"{T.__name__}.func")
    x = T.ones(2, 3)
    call = {"list for a tuple": lambda: func.vmap(lambda t: t[0] + t[1], in_dims=([0, None],))((x, x[0])),
            "one too many": lambda: func.vmap(lambda a: a, in_dims=(0, 0))(x),
            "out list for a tuple": lambda: func.vmap(lambda a: (a, a.sum()), out_dims=[1, 0])(x)}[case]
    with pytest.raises(ValueError, match="is not compatible with the structure of `(inputs|outputs)`. " + message):
        call()


def test_loading_a_spec_imports_no_module_it_names():
    """PyTorch imports the module a defaultdict's factory (or an enum) names; loading a spec here imports nothing
    and runs no code it names: a factory from a module already imported is found, another refused by name."""
    import sys
    from collections import defaultdict

    from autograd.utils import _pytree as pytree

    spec = pytree.tree_structure(defaultdict(pytree.LeafSpec, {"a": 1}))
    text = pytree.treespec_dumps(spec)
    assert pytree.treespec_loads(text) == spec  # (autograd.utils._pytree is imported: found)
    unimported = "chainrule_never_imported_module"
    assert unimported not in sys.modules
    with pytest.raises(NotImplementedError, match=f"{unimported}.make.*not imported"):
        pytree.treespec_loads(text.replace("autograd.utils._pytree.treespec", unimported).replace("LeafSpec", "make"))
    assert unimported not in sys.modules
