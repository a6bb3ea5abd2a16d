"""PyTorch's ``test/test_pytree.py`` (the Python pytree, ``torch.utils._pytree``), ported: what
``tests/test_pytree.py`` does not already cover. Each test runs on ``autograd.utils._pytree`` and, where torch is
installed, on ``torch.utils._pytree``; the expected values are written out, so the chainrule half checks them
without torch. (The C++ pytree, ``torch.utils._cxx_pytree``, is not ported.)"""

import dataclasses
import enum
import importlib
import json
import time
import warnings
from collections import OrderedDict, UserDict, defaultdict, deque, namedtuple
from typing import Any, NamedTuple

import numpy as np
import pytest


@pytest.fixture(params=["autograd.utils._pytree", pytest.param("torch.utils._pytree", marks=pytest.mark.torch)])
def P(request):  # noqa: N802  (the module, as programs alias it)
    return importlib.import_module(request.param)


def engine(P):  # noqa: N803
    """``autograd`` or ``torch``: the library whose pytree ``P`` is."""
    return importlib.import_module(P.__name__.split(".")[0])


pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated")


class Colour(enum.Enum):
    RED = enum.auto()


def leaves_of(P, count):  # noqa: N803
    return [P.treespec_leaf() for _ in range(count)]


# -- flatten and unflatten, container by container -------------------------------------------------------------


def test_a_leaf_flattens_to_itself(P):
    T = engine(P)
    for leaf in (1, 1.0, None, bool, T.ones(3, 3)):
        values, spec = P.tree_flatten(leaf)
        assert values == [leaf] and values[0] is leaf
        assert spec == P.treespec_leaf() and spec.is_leaf() and (spec.num_leaves, spec.num_nodes) == (1, 1)
        assert P.tree_unflatten(values, spec) is leaf


def test_each_builtin_container_has_the_spec_pytorch_builds(P):
    T = engine(P)
    cases = [
        ((), tuple, None), ((1.0, 2), tuple, None), ([], list, None), ([1.0, 2, 10], list, None),
        ({}, dict, []), ({1: "x", "a": 2}, dict, [1, "a"]),
        (OrderedDict([("b", 1), ("a", 3.5)]), OrderedDict, ["b", "a"]),
        (defaultdict(list), defaultdict, [list, []]),
        (defaultdict(int, {"b": 1, "a": 2}), defaultdict, [int, ["b", "a"]]),
        (deque([]), deque, None), (deque([1.0, 2], maxlen=8), deque, 8),
    ]
    for tree, kind, context in cases:
        values, spec = P.tree_flatten(tree)
        assert isinstance(values, list) and values == list(tree.values() if isinstance(tree, dict) else tree)
        assert spec == P.TreeSpec(kind, context, leaves_of(P, len(tree)))
        rebuilt = P.tree_unflatten(values, spec)
        assert type(rebuilt) is kind and rebuilt == tree
        if kind is defaultdict:
            assert rebuilt.default_factory is tree.default_factory
        if kind is deque:
            assert rebuilt.maxlen == tree.maxlen
    values, spec = P.tree_flatten([T.tensor([1.0, 2.0]), 2])
    assert spec == P.TreeSpec(list, None, leaves_of(P, 2)) and values[0].tolist() == [1.0, 2.0]


def test_a_namedtuple_spec_holds_namedtuple_and_its_class(P):
    Point = namedtuple("Point", ["x", "y"])
    values, spec = P.tree_flatten(Point(1.0, 2))
    assert values == [1.0, 2] and spec == P.TreeSpec(namedtuple, Point, leaves_of(P, 2))
    rebuilt = P.tree_unflatten([3, 4], spec)
    assert type(rebuilt) is Point and rebuilt == (3, 4)


@pytest.mark.parametrize("op", ["max", "min"])
def test_return_types_flatten_to_tensors_and_back(P, op):
    T = engine(P)
    x = T.tensor([[1.0, 5.0, -2.0], [4.0, 0.0, 3.0], [2.0, 6.0, 1.0]])
    expected = getattr(T, op)(x, dim=0)
    values, spec = P.tree_flatten(expected)
    assert all(isinstance(v, T.Tensor) for v in values) and len(values) == 2
    result = P.tree_unflatten(values, spec)
    assert type(result) is type(expected)
    want = {"max": ([4.0, 6.0, 3.0], [1, 2, 1]), "min": ([1.0, 0.0, -2.0], [0, 1, 0])}[op]
    assert (result.values.tolist(), result.indices.tolist()) == want


def test_nested_trees_round_trip(P):
    T = engine(P)
    t = T.ones(3)
    for tree, count in [([()], 0), (([],), 0), ({"a": ()}, 0), ({"a": 0, "b": [{"c": 1}]}, 2),
                        ({"a": 0, "b": [1, {"c": 2}, t], "c": ((7, 8), 1)}, 7)]:
        values, spec = P.tree_flatten(tree)
        assert len(values) == spec.num_leaves == count
        assert P.tree_unflatten(values, spec) == tree


def test_is_leaf_stops_flattening_one_level_down(P):
    for tree, one_level in [([()], [()]), (([],), [[]]), ({"a": ()}, [()]),
                            ({"a": 0, "b": [{"c": 1}]}, [0, [{"c": 1}]]),
                            ({"a": 0, "b": [1, {"c": 2}], "c": ((5, 6), 1)}, [0, [1, {"c": 2}], ((5, 6), 1)])]:
        values, spec = P.tree_flatten(tree, is_leaf=lambda x, tree=tree: x is not tree)
        assert values == one_level
        assert len(values) == spec.num_nodes - 1 == spec.num_leaves == spec.num_children
        assert spec == P.tree_structure(P.tree_unflatten([0] * spec.num_leaves, spec))
        assert P.tree_unflatten(values, spec) == tree


def test_an_unregistered_mapping_is_a_leaf_until_registered(P):
    class MyDict(UserDict):
        pass

    d = MyDict(a=1, b=2, c=3)
    values, spec = P.tree_flatten(d)
    assert values == [d] and values[0] is d and spec.is_leaf() and P.tree_unflatten(values, spec) is d
    P.register_pytree_node(MyDict, lambda d: (list(d.values()), list(d.keys())),
                           lambda values, keys: MyDict(zip(keys, values)))
    values, spec = P.tree_flatten(d)
    assert values == [1, 2, 3] and spec.context == ["a", "b", "c"]
    rebuilt = P.tree_unflatten([4, 5, 6], spec)
    assert type(rebuilt) is MyDict and dict(rebuilt) == {"a": 4, "b": 5, "c": 6}


# -- mapping -----------------------------------------------------------------------------------------------------

MAP_CASES = [[()], ([],), {"a": ()}, {"a": 1, "b": [{"c": 2}]}, {"a": 0, "b": [2, {"c": 3}, 4], "c": (5, 6)}]


def test_tree_map_and_its_inverse(P):
    for tree in MAP_CASES:
        tripled = P.tree_map(lambda x: x * 3, tree)
        assert sum(P.tree_leaves(tripled)) == 3 * sum(P.tree_leaves(tree))
        assert P.tree_map(lambda x: x // 3, tripled) == tree
    assert P.tree_map(lambda x: x * 3, MAP_CASES[-1]) == {"a": 0, "b": [6, {"c": 9}, 12], "c": (15, 18)}


def test_tree_map_over_trees_whose_leaves_are_subtrees_of_the_first(P):
    def f(x, y, z):
        return x, [y, (z, 0)]

    for tree in MAP_CASES:
        tree_y = P.tree_map(lambda x: (x + 1,), tree)
        tree_z = P.tree_map(lambda x: {"a": x * 2, "b": 2}, tree)
        assert P.tree_map(f, tree, tree_y, tree_z) == P.tree_map(lambda x: f(x, (x + 1,), {"a": x * 2, "b": 2}), tree)
    assert P.tree_map(f, [1], [(2,)], [{"a": 2, "b": 2}]) == [(1, [(2,), ({"a": 2, "b": 2}, 0)])]


def test_tree_map_keeps_each_dict_types_key_order(P):
    for tree in ({"b": 2, "a": 1, "c": 3}, OrderedDict([("b", 2), ("a", 1), ("c", 3)]),
                 defaultdict(int, {"b": 2, "a": 1, "c": 3})):
        result = P.tree_map(lambda x: x, tree)
        assert list(result.items()) == [("b", 2), ("a", 1), ("c", 3)] and type(result) is type(tree)


def test_tree_map_only_takes_a_predicate_too(P):
    assert P.tree_map_only(int, lambda x: x + 2, [0, "a"]) == [2, "a"]
    assert P.tree_map_only(lambda x: x == 0, lambda x: x + 2, [0, 1]) == [2, 1]
    assert P.tree_map_only((int, str), lambda x: x * 2, [1, "a", 1.5]) == [2, "aa", 1.5]
    seen = []
    P.tree_map_only_(lambda x: x > 1, seen.append, [1, 2, 3])
    assert seen == [2, 3]


def test_tree_all_and_any(P):
    assert P.tree_all(lambda x: x % 2, [1, 3]) and not P.tree_all(lambda x: x % 2, [0, 1])
    assert P.tree_any(lambda x: x % 2, [0, 1]) and not P.tree_any(lambda x: x % 2, [0, 2])
    assert P.tree_all_only(int, lambda x: x % 2, [1, 3, "a"]) and not P.tree_all_only(int, lambda x: x % 2, [0, 1, "a"])
    assert P.tree_any_only(int, lambda x: x % 2, [0, 1, "a"]) and not P.tree_any_only(int, lambda x: x % 2, [0, 2, "a"])


@pytest.mark.parametrize("tree, to_tree, expected", [
    (1, (), []),
    ((1,), (0,), [1]), ([1], [0], [1]), ((1, 2, 3), (0, 0, 0), [1, 2, 3]), ({"a": 1, "b": 2}, {"a": 0, "b": 0}, [1, 2]),
    ([1], (0,), None), ((1,), [0], None), ((1, 2, 3), (0, 0), None), ({"a": 1, "b": 2}, {"a": 0}, None),
    ({"a": 1, "b": 2}, {"a": 0, "c": 0}, None), ({"a": 1, "b": 2}, {"a": 0, "b": 0, "c": 0}, None),
    ((1, [2, 3]), (0, [0, 0]), [1, 2, 3]), ((1, [(2, 3), 4]), (0, [(0, 0), 0]), [1, 2, 3, 4]),
    ((1, [2, 3]), (0, (0, 0)), None), ((1, [2, 3]), (0, [0, 0, 0]), None),
    (1, (0, 0, 0), [1, 1, 1]), (1, [0, 0, 0], [1, 1, 1]), (1, {"a": 0, "b": 0}, [1, 1]),
    (1, (0, [0, [0]], 0), [1, 1, 1, 1]), (1, (0, [0, [0, [], [[[0]]]]], 0), [1, 1, 1, 1, 1]),
    ((1, 2), ([0, 0, 0], [0, 0]), [1, 1, 1, 2, 2]), ((1, 2), ([0, [0, 0], 0], [0, 0]), [1, 1, 1, 1, 2, 2]),
    (([1, 2, 3], 4), ([0, [0, 0], 0], [0, 0]), [1, 2, 2, 3, 4, 4]),
])
def test_broadcast_to_and_flatten(P, tree, to_tree, expected):
    assert P._broadcast_to_and_flatten(tree, P.tree_structure(to_tree)) == expected


# -- named tuples and struct sequences ---------------------------------------------------------------------------

Direct1 = namedtuple("Direct1", ["x", "y"])


class Direct2(NamedTuple):
    x: int
    y: int


class Indirect1(Direct1):
    pass


class Indirect2(Direct2):
    pass


class FakeStructSeq(tuple):  # (a tuple with struct-sequence attributes, but a Python class one may subclass)
    n_fields = n_sequence_fields = 2
    n_unnamed_fields = 0
    __slots__ = ()


def test_what_is_a_namedtuple(P):
    for cls in (Direct1, Direct2, Indirect1, Indirect2):
        assert P.is_namedtuple(cls(0, 1)) and P.is_namedtuple(cls) and P.is_namedtuple_class(cls)
        assert P.is_namedtuple_instance(cls(0, 1)) and not P.is_namedtuple_class(cls(0, 1))
    for other in (time.gmtime(), (0, 1), [0, 1], {0: 1}, {0, 1}, 1, time.struct_time, tuple, list):
        assert not P.is_namedtuple(other)
    for cls in (time.struct_time, tuple, list):
        assert not P.is_namedtuple_class(cls)


def test_what_is_a_structseq(P):
    T = engine(P)
    assert P.is_structseq(time.gmtime()) and P.is_structseq(time.struct_time)
    assert P.is_structseq_class(time.struct_time) and P.is_structseq_instance(time.gmtime())
    for other in (FakeStructSeq((0, 1)), FakeStructSeq, Direct1(0, 1), Direct2, (0, 1), tuple, [0, 1], {0: 1}, 1):
        assert not P.is_structseq(other)
    result = T.max(T.tensor([[1.0, 2.0]]), 1)
    kind = type(result)
    assert P.is_structseq(result) and P.is_structseq_class(kind) and not P.is_structseq_class(result)
    assert not P.is_namedtuple(result) and not P.is_namedtuple_class(kind)


def test_a_namedtuple_subclass_round_trips_through_json(P):
    class Point2(NamedTuple):
        x: int
        y: int

    class Point3(Point2):
        pass

    for cls in (Point2, Point3):
        P._register_namedtuple(cls, serialized_type_name=f"chainrule_tests.ported_pytree.{cls.__name__}")
        spec = P.tree_structure(cls(1, 2))
        assert spec.type is namedtuple and spec.context is cls
        loaded = P.treespec_loads(P.treespec_dumps(spec))
        assert loaded == spec and type(loaded.unflatten([5, 6])) is cls


# -- specs: equality, repr, JSON ---------------------------------------------------------------------------------


def test_treespec_equality_and_repr(P):
    assert P.treespec_leaf() == P.treespec_leaf()
    assert P.TreeSpec(list, None, []) == P.TreeSpec(list, None, [])
    assert P.TreeSpec(list, None, [P.treespec_leaf()]) == P.TreeSpec(list, None, [P.treespec_leaf()])
    assert not P.TreeSpec(tuple, None, []) == P.TreeSpec(list, None, [])
    assert P.TreeSpec(tuple, None, []) != P.TreeSpec(list, None, [])
    assert P.TreeSpec(dict, ["a"], leaves_of(P, 1)) != P.TreeSpec(dict, ["b"], leaves_of(P, 1))
    assert repr(P.tree_structure((0, [0, 0, [0]]))) == (
        "TreeSpec(tuple, None, [*,\n  TreeSpec(list, None, [*,\n    *,\n    TreeSpec(list, None, [*])])])")
    assert repr(P.treespec_leaf()) == "*"


def test_a_spec_is_hashable_as_its_contents(P):
    assert hash(P.tree_structure([1, {"a": 2}])) == hash(P.tree_structure([3, {"a": 4}]))
    assert len({P.tree_structure((1, 2)), P.tree_structure((3, 4)), P.tree_structure([1, 2])}) == 2


def spec_cases(P):  # noqa: N803
    leaf = P.treespec_leaf()
    return [
        P.TreeSpec(list, None, []), P.TreeSpec(tuple, None, []), P.TreeSpec(dict, [], []),
        P.TreeSpec(list, None, [leaf]), P.TreeSpec(tuple, None, [leaf, leaf, leaf]),
        P.TreeSpec(dict, ["a", "b", "c"], [leaf, leaf, leaf]),
        P.TreeSpec(OrderedDict, ["a", "b", "c"], [P.TreeSpec(tuple, None, [leaf, leaf]), leaf,
                                                  P.TreeSpec(dict, ["a", "b", "c"], [leaf, leaf, leaf])]),
        P.TreeSpec(list, None, [P.TreeSpec(tuple, None, [leaf, leaf, P.TreeSpec(list, None, [leaf, leaf])])]),
        P.TreeSpec(defaultdict, [list, ["a", "b", "c"]], [P.TreeSpec(list, None, [leaf, leaf]),
                                                          P.TreeSpec(list, None, [leaf, leaf]),
                                                          P.TreeSpec(dict, [], [])]),
        P.TreeSpec(deque, 5, [leaf, P.TreeSpec(deque, None, [leaf])]),
    ]


def test_specs_round_trip_through_json(P):
    for spec in spec_cases(P):
        assert spec == P.tree_structure(P.tree_unflatten([0] * spec.num_leaves, spec))
        text = P.treespec_dumps(spec)
        assert isinstance(text, str) and P.treespec_loads(text) == spec


def test_a_saved_spec_reads_back(P):
    leaf = P.treespec_leaf()
    spec = P.TreeSpec(OrderedDict, [1, 2, 3], [P.TreeSpec(tuple, None, [leaf, leaf]), leaf,
                                               P.TreeSpec(dict, [4, 5, 6], [leaf, leaf, leaf])])
    null = '{"type": null, "context": null, "children_spec": []}'
    saved = (f'[1, {{"type": "collections.OrderedDict", "context": "[1, 2, 3]", "children_spec": [{{"type": '
             f'"builtins.tuple", "context": "null", "children_spec": [{null}, {null}]}}, {null}, {{"type": '
             f'"builtins.dict", "context": "[4, 5, 6]", "children_spec": [{null}, {null}, {null}]}}]}}]')
    assert P.treespec_dumps(spec) == saved and P.treespec_loads(saved) == spec


def test_enum_keys_and_contexts_are_written_and_read_back(P):
    spec = P.tree_structure({Colour.RED: 5})
    text = P.treespec_dumps(spec)
    context = json.loads(json.loads(text)[1]["context"])
    assert context == [{"__enum__": True, "fqn": f"{Colour.__module__}:Colour", "name": "RED"}]
    assert P.treespec_loads(text) == spec and P.treespec_loads(text).context == [Colour.RED]
    leaf = P.treespec_leaf()
    assert isinstance(P.treespec_dumps(P.TreeSpec(defaultdict, [list, [Colour.RED]], [P.TreeSpec(list, None, [leaf])])),
                      str)
    assert isinstance(P.treespec_dumps(P.TreeSpec(dict, Colour.RED, [leaf])), str)


def test_serialization_errors(P):
    with pytest.raises(TypeError):
        P.treespec_dumps("random_blurb")
    Point = namedtuple("Point", ["x", "y"])
    spec = P.tree_structure(Point(1, 2))
    with pytest.raises(NotImplementedError, match="Please register using `_register_namedtuple`"):
        P.treespec_dumps(spec)
    P._register_namedtuple(Point, serialized_type_name="chainrule_tests.ported_pytree.bad_protocol.Point")
    with pytest.raises(ValueError, match="Unknown protocol"):
        P.treespec_dumps(spec, -1)
    _, data = json.loads(P.treespec_dumps(spec))
    with pytest.raises(ValueError, match="Unknown protocol"):
        P.treespec_loads(json.dumps((-1, data)))


def test_a_custom_type_with_its_own_dumpable_context(P):
    class Dummy:
        def __init__(self, x, y):
            self.x, self.y = x, y

    class HalfDumpable(Dummy):  # (PyTorch has registered a type by the time it refuses it: a type of its own)
        pass

    with pytest.raises(ValueError, match="Both to_dumpable_context and from_dumpable_context"):
        P.register_pytree_node(HalfDumpable, lambda d: ([d.x, d.y], None), lambda xs, _: Dummy(*xs),
                               serialized_type_name="chainrule_tests.ported_pytree.HalfDumpable",
                               to_dumpable_context=lambda context: "moo")
    P.register_pytree_node(Dummy, lambda d: ([d.x, d.y], None), lambda xs, _: Dummy(*xs),
                           serialized_type_name="chainrule_tests.ported_pytree.Dummy",
                           to_dumpable_context=lambda context: "moo", from_dumpable_context=lambda dumpable: None)
    spec = P.tree_structure(Dummy(1, 2))
    text = P.treespec_dumps(spec, 1)
    assert '"context": "moo"' in text and P.treespec_loads(text) == spec

    class Undumpable:
        def __init__(self, x):
            self.x = x

    P.register_pytree_node(Undumpable, lambda d: ([d.x], None), lambda xs, _: Undumpable(*xs),
                           serialized_type_name="chainrule_tests.ported_pytree.Undumpable",
                           to_dumpable_context=lambda context: Undumpable, from_dumpable_context=lambda dumpable: None)
    with pytest.raises(TypeError, match="Object of type type is not JSON serializable"):
        P.treespec_dumps(P.tree_structure(Undumpable(1)))


# -- registration ------------------------------------------------------------------------------------------------


def test_the_underscored_register_warns_it_is_deprecated(P):
    class Dummy:
        def __init__(self, x, y):
            self.x, self.y = x, y

    with pytest.warns(FutureWarning, match="_register_pytree_node"):
        P._register_pytree_node(Dummy, lambda d: ([d.x, d.y], None), lambda xs, _: Dummy(*xs))
    assert P.tree_leaves(Dummy(1, [2])) == [1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.warns(UserWarning, match="already registered"):
            P._register_pytree_node(Dummy, lambda d: ([d.x, d.y], None), lambda xs, _: Dummy(*xs))


def test_register_dataclass_and_deregister(P):
    T = engine(P)

    @dataclasses.dataclass
    class Data:
        a: Any
        b: str = "moo"
        c: Any = None
        d: str = dataclasses.field(init=False, default="")

    P.register_dataclass(Data)
    old = Data(T.tensor(3), "b", "c")
    old.d = "d"
    leaves, spec = P.tree_flatten(old)
    assert [int(leaves[0]), *leaves[1:]] == [3, "b", "c"]  # (d is no init field: it is dropped)
    new = P.tree_map(lambda x: x, old)
    assert (int(new.a), new.b, new.c, new.d) == (3, "b", "c", "")
    P._deregister_pytree_node(Data)
    assert P.tree_leaves(old) == [old]
    with pytest.raises(ValueError, match="Missing fields"):
        P.register_dataclass(Data, field_names=["a", "b"])
    with pytest.raises(ValueError, match="Unexpected fields"):
        P.register_dataclass(Data, field_names=["a", "b", "e"])
    with pytest.raises(ValueError, match="Unexpected fields"):
        P.register_dataclass(Data, field_names=["a", "b", "c", "d"])
    P.register_dataclass(Data, field_names=["a"], drop_field_names=["b", "c"])
    new = P.tree_map(lambda x: x + 1, Data(T.tensor(3), "b", "c"))
    assert (int(new.a), new.b, new.c) == (4, "moo", None)
    P._deregister_pytree_node(Data)


def test_register_dataclass_of_a_plain_class_needs_field_names(P):
    T = engine(P)

    class Custom:
        def __init__(self, x, y):
            self.x, self.y = x, y

    with pytest.raises(ValueError, match="field_names must be specified"):
        P.register_dataclass(Custom)
    P.register_dataclass(Custom, field_names=["x", "y"])
    try:
        mapped = P.tree_map(lambda x: x + 1, Custom(T.tensor(0), T.tensor(1)))
        assert (int(mapped.x), int(mapped.y)) == (1, 2)
    finally:
        P._deregister_pytree_node(Custom)


def test_register_constant(P):
    @dataclasses.dataclass(unsafe_hash=True)
    class Config:
        norm: str

    P.register_constant(Config)
    config = Config("l1")
    elements, spec = P.tree_flatten([config, 2])
    assert elements == [2] and spec.child(0).context.value == config
    assert P.tree_unflatten([3], spec) == [config, 3] and P.is_constant_class(Config)

    class NoEq:
        pass

    class NoHash:
        def __eq__(self, other):
            return True

    with pytest.raises(TypeError, match=r"register_constant\(cls\) expects `cls` to have a non-default `__eq__`"):
        P.register_constant(NoEq)
    with pytest.raises(TypeError, match=r"register_constant\(cls\) expects `cls` to have a non-default `__hash__`"):
        P.register_constant(NoHash)


# -- key paths ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Custom3:
    x: Any
    y: Any
    z: Any


def register_custom3(P):  # noqa: N803
    if Custom3 not in P.SUPPORTED_NODES:
        P.register_pytree_node(Custom3, flatten_fn=lambda f: ([f.x, f.y], f.z),
                               unflatten_fn=lambda xy, z: Custom3(xy[0], xy[1], z),
                               flatten_with_keys_fn=lambda f: ((("x", f.x), ("y", f.y)), f.z))


class Named3(NamedTuple):
    x: Any
    y: int
    z: str


def test_tree_map_with_path_gives_keys_with_their_fields(P):
    tree = [{i: i for i in range(10)}]
    assert P.tree_map_with_path(lambda kp, val: val - kp[1].key + kp[0].idx, tree) == [dict.fromkeys(range(10), 0)]
    register_custom3(P)
    tree1 = [Custom3(x=12, y={"cin": [1, 4, 10], "bar": 18}, z="leaf"), 5]
    tree2 = [Custom3(x=2, y={"cin": [2, 2, 2], "bar": 2}, z="leaf"), 2]
    both = P.tree_map_with_path(lambda kp, a, b: a + b, tree1, tree2)
    assert both == P.tree_map(lambda a: a + 2, tree1) == [Custom3(14, {"cin": [3, 6, 12], "bar": 20}, "leaf"), 7]


def test_flatten_with_path_round_trips_and_agrees_with_leaves_with_path(P):
    register_custom3(P)
    for tree in [(None,), ["hello", [1, 2], {"foo": [3]}], [Named3(x=np.float32(0.5), y=1, z="foo")],
                 [Custom3(x=12, y={"cin": [1, 4, 10], "bar": 18}, z="leaf"), 5]]:
        pairs, spec = P.tree_flatten_with_path(tree)
        assert P.tree_unflatten([leaf for _, leaf in pairs], spec) == tree
        assert P.tree_leaves_with_path(tree) == pairs
        assert [leaf for _, leaf in pairs] == P.tree_leaves(tree)
    pairs, _ = P.tree_flatten_with_path([Custom3(x=12, y={"cin": [1]}, z="leaf")])
    assert [(P.keystr(kp), leaf) for kp, leaf in pairs] == [("[0]x", 12), ("[0]y['cin'][0]", 1)]


def test_flatten_with_path_stops_at_is_leaf(P):
    leaf_dict = {"foo": [3]}
    pairs, _ = P.tree_flatten_with_path((["hello", [1, 2], leaf_dict],), is_leaf=lambda x: isinstance(x, dict))
    assert pairs[-1][1] is leaf_dict and len(pairs) == 4


def test_keystr_and_key_get(P):
    class Named(NamedTuple):
        x: str
        y: int

    tree = (["hello", [1, 2], {"foo": [3], "bar": [Named(x="baz", y=10)]}],)
    flat, _ = P.tree_flatten_with_path(tree)
    assert [f"{P.keystr(kp)}: {val}" for kp, val in flat] == [
        "[0][0]: hello", "[0][1][0]: 1", "[0][1][1]: 2", "[0][2]['foo'][0]: 3", "[0][2]['bar'][0].x: baz",
        "[0][2]['bar'][0].y: 10"]
    assert all(P.key_get(tree, kp) == val for kp, val in flat)


def test_flatten_and_flatten_with_keys_agree_for_every_builtin(P):
    T = engine(P)
    examples = {list: [1, 2, 3], tuple: (1, 2, 3), dict: {"foo": 1, "bar": 2}, namedtuple: Direct1(1, 2),
                OrderedDict: OrderedDict([("foo", 1), ("bar", 2)]), defaultdict: defaultdict(int, {"foo": 1, "bar": 2}),
                deque: deque([1, 2, 3]), T.Size: T.Size([1, 2, 3])}
    for kind, example in examples.items():
        assert kind in P.SUPPORTED_NODES
        with_path, spec1 = P.tree_flatten_with_path(example)
        flat, spec2 = P.tree_flatten(example)
        assert flat == [leaf for _, leaf in with_path] and spec1 == spec2
    size_leaves, size_spec = P.tree_flatten(T.Size([4, 5]))
    assert size_leaves == [4, 5] and P.tree_unflatten([6, 7], size_spec) == (6, 7)  # (a tuple, not a Size)
