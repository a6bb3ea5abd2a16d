"""``autograd.utils._pytree`` as ``torch.utils._pytree``: flattening nested containers into leaves and a spec,
rebuilding them, mapping over several trees at once (with PyTorch's errors when their nesting differs), key
paths, specs as JSON, and containers registered by the program. Each test runs on PyTorch too."""

import importlib
from collections import OrderedDict, defaultdict, deque, namedtuple

import pytest

Point = namedtuple("Point", "x y")


@pytest.fixture(params=["autograd.utils._pytree", pytest.param("torch.utils._pytree", marks=pytest.mark.torch)])
def P(request):  # noqa: N802  (the module, as programs alias it)
    return importlib.import_module(request.param)


pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated")


def test_flatten_and_unflatten_every_builtin_container(P):
    tree = {"p": Point(1, 2), "o": OrderedDict(z=3), "d": defaultdict(int, {"k": 5}), "q": deque([6, 7], maxlen=3),
            "l": [None, (8,)]}
    leaves, spec = P.tree_flatten(tree)
    assert leaves == [1, 2, 3, 5, 6, 7, None, 8]  # (None is a leaf)
    assert (spec.num_leaves, spec.num_nodes, spec.num_children, spec.type, spec.context) == (
        8, 15, 5, dict, ["p", "o", "d", "q", "l"])
    rebuilt = P.tree_unflatten([10 * x if x else x for x in leaves], spec)
    assert rebuilt == {"p": Point(10, 20), "o": OrderedDict(z=30), "d": {"k": 50}, "q": deque([60, 70]),
                       "l": [None, (80,)]}
    assert type(rebuilt["d"]) is defaultdict and rebuilt["d"].default_factory is int and rebuilt["q"].maxlen == 3
    assert repr(P.tree_structure([1, (2, {"b": 3})])) == ("TreeSpec(list, None, [*,\n  TreeSpec(tuple, None, [*,\n"
                                                           "    TreeSpec(dict, ['b'], [*])])])")
    assert P.treespec_pprint(P.tree_structure([1, (2,), {"a": 3}])) == "[*, (*,), {'a': *}]"
    assert P.tree_flatten(5)[0] == [5] and P.tree_structure(5).is_leaf()
    assert P.tree_structure([1, 2]) == P.tree_structure([3, 4]) != P.tree_structure((3, 4))


def test_map_over_trees_of_one_nesting(P):
    assert P.tree_map(lambda x: x * 2, [1, (2, 3)]) == [2, (4, 6)]
    assert P.tree_map(lambda a, b: a + b, {"a": 1, "b": 2}, {"b": 20, "a": 10}) == {"a": 11, "b": 22}
    assert P.tree_map(lambda a, b: a + b, {"a": 1}, OrderedDict(a=5)) == {"a": 6}  # dict types match each other
    assert P.tree_map_only(int, lambda x: -x, [1, "a", 2.0]) == [-1, "a", 2.0]
    assert P.tree_all(lambda x: x > 0, [1, (2,)]) and not P.tree_any(lambda x: x > 5, [1, (2,)])
    assert P.tree_any_only(str, lambda s: s == "a", [1, "a"]) and P.tree_all_only(int, lambda x: x > 0, [1, -2.0])
    assert P.tree_leaves([1, [2]], is_leaf=lambda x: isinstance(x, list) and len(x) == 1) == [1, [2]]
    seen = []
    assert P.tree_map_(seen.append, [1, (2,)]) == [1, (2,)] and seen == [1, 2]
    assert list(P.tree_iter({"a": [1, 2]})) == [1, 2]


@pytest.mark.parametrize("other, message", [
    ({"b": 1}, r"Node keys mismatch; missing key\(s\): \{'a'\}; extra key\(s\): \{'b'\}\."),
    ((1,), r"Node type mismatch; expected <class 'dict'>, but got <class 'tuple'>\."),
    ({"a": 1, "c": 2}, r"Node arity mismatch; expected 1, but got 2\."),
])
def test_trees_of_another_nesting_are_refused(P, other, message):
    with pytest.raises(ValueError, match=message):
        P.tree_map(lambda a, b: a, {"a": 1}, other)


def test_unflatten_needs_as_many_leaves_as_the_spec(P):
    with pytest.raises(ValueError, match="`leaves` has length 1 but the spec refers to a pytree that holds 2 items"):
        P.tree_unflatten([1], P.tree_structure((0, 0)))


def test_key_paths(P):
    tree = {"a": [1, (2, 3)], "p": Point(4, 5)}
    pairs, _ = P.tree_flatten_with_path(tree)
    assert [(P.keystr(path), leaf) for path, leaf in pairs] == [
        ("['a'][0]", 1), ("['a'][1][0]", 2), ("['a'][1][1]", 3), ("['p'].x", 4), ("['p'].y", 5)]
    assert all(P.key_get(tree, path) == leaf for path, leaf in pairs)
    assert P.tree_map_with_path(lambda path, x: P.keystr(path), {"a": [1]}) == {"a": ["['a'][0]"]}


def test_a_spec_round_trips_through_json(P):
    spec = P.tree_structure({"a": [1, (2,)], "o": OrderedDict(x=1)})
    text = P.treespec_dumps(spec)
    assert text.startswith('[1, {"type": "builtins.dict", "context": "[\\"a\\", \\"o\\"]"')
    assert P.treespec_loads(text) == spec


def test_a_registered_container(P):
    class Box:
        def __init__(self, a, b):
            self.a, self.b = a, b

    P.register_pytree_node(Box, lambda box: ([box.a, box.b], None), lambda children, _: Box(*children))
    assert P.tree_leaves({"k": Box(1, [2, 3])}) == [1, 2, 3]
    doubled = P.tree_map(lambda x: 2 * x, Box(1, 2))
    assert type(doubled) is Box and (doubled.a, doubled.b) == (2, 4)
    with pytest.raises(ValueError, match="is already registered as pytree node"):
        P.register_pytree_node(Box, lambda box: ([], None), lambda children, _: Box(0, 0))


def test_torch_func_takes_its_arguments_as_these_pytrees():
    import autograd
    from autograd.func import grad

    params = {"w": autograd.tensor([1.0, 2.0]), "b": Point(autograd.tensor(3.0), autograd.tensor(0.5))}
    grads = grad(lambda p: (p["w"] ** 2).sum() * p["b"].x + p["b"].y)(params)
    assert isinstance(grads["b"], Point) and grads["w"].tolist() == [6.0, 12.0] and float(grads["b"].x) == 5.0


Pair = namedtuple("Pair", "a b")


def test_dumpable_contexts_are_written_as_pytorch_writes_them(P):
    text = P.treespec_dumps(P.tree_structure(defaultdict(list, {"k": 1})))
    assert text == ('[1, {"type": "collections.defaultdict", "context": {"default_factory_module": "builtins", '
                    '"default_factory_name": "list", "dict_context": ["k"]}, "children_spec": [{"type": null, '
                    '"context": null, "children_spec": []}]}]')  # (the context itself, not JSON text of it)
    assert P.treespec_loads(text) == P.tree_structure(defaultdict(list, {"k": 1}))
    with pytest.raises(NotImplementedError, match="Can't serialize TreeSpec of namedtuple class .*Pair.* because we "
                                                  "didn't register a serializated_type_name"):
        P.treespec_dumps(P.tree_structure(Pair(1, 2)))
    P._register_namedtuple(Pair, serialized_type_name="chainrule_tests.Pair")
    text = P.treespec_dumps(P.tree_structure([Pair(1, 2)]))
    assert '"type": "collections.namedtuple", "context": "chainrule_tests.Pair"' in text
    assert P.treespec_loads(text).unflatten([3, 4]) == [Pair(3, 4)]


class Unnamed:
    def __init__(self, a):
        self.a = a


def test_a_container_registered_without_a_name_is_not_dumpable(P):
    if Unnamed not in P.SUPPORTED_NODES:
        P.register_pytree_node(Unnamed, lambda u: ([u.a], None), lambda children, _: Unnamed(*children))
    with pytest.raises(NotImplementedError, match="No registered serialization name for .*Unnamed.* found. "
                                                  "Please update your _register_pytree_node call with a "
                                                  "`serialized_type_name`"):
        P.treespec_dumps(P.tree_structure(Unnamed(1)))


def test_register_dataclass_keeps_none_fields_out_of_the_leaves(P):
    import dataclasses

    @dataclasses.dataclass
    class Output:
        logits: object
        loss: object = None

    P.register_dataclass(Output)
    leaves, spec = P.tree_flatten(Output([1, 2]))
    assert leaves == [1, 2] and spec.context == [["logits"], ["loss"]]
    assert P.tree_unflatten([3, 4], spec) == Output([3, 4])
    assert [P.keystr(k) for k, _ in P.tree_flatten_with_path(Output(1, 2))[0]] == [".logits", ".loss"]
    with pytest.raises(ValueError, match="Missing fields in `field_names`: {'loss'}"):
        P.register_dataclass(Output, field_names=["logits"])
    assert P.tree_map(P.map_only(int)(lambda x: -x), [1, 2.5]) == [-1, 2.5]
    assert P._broadcast_to_and_flatten({"a": 0, "b": None}, P.tree_structure({"a": [1, 2], "b": 3})) == [0, 0, None]


def test_return_types_are_containers_of_their_own_type_keyed_by_position(P):
    T = importlib.import_module(P.__name__.split(".")[0])
    result = T.max(T.tensor([[1.0, 3.0], [2.0, 0.0]]), 0)
    leaves, spec = P.tree_flatten(result)
    assert spec.type is type(result) and spec.context is None and len(leaves) == 2
    assert [P.keystr(k) for k, _ in P.tree_flatten_with_path(result)[0]] == ["[0]", "[1]"]
    assert P.is_structseq(result) and not P.is_namedtuple(result)
    assert type(P.tree_map(lambda t: t * 2, result)) is type(result)
