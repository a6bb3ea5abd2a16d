"""Pytrees, as ``torch.utils._pytree``: nested containers (tuples, lists, dicts, named tuples, OrderedDicts,
defaultdicts, deques, and any type given to ``register_pytree_node``) whose other values are the leaves.

``tree_flatten(tree)`` gives the leaves in order and a ``TreeSpec``, the shape of the nesting;
``tree_unflatten(leaves, spec)`` puts other leaves in their places. ``tree_map(f, tree)`` is the two
together: the same nesting with f of each leaf, as a program moves a nested batch to a device
(``tree_map(lambda t: t.to(device), batch)``). ``torch.func`` takes its arguments as pytrees too.

A leaf is anything that is not a registered container, None included (PyTorch 2.13's rule). The
``*_with_path`` forms also give each leaf's key path: ``keystr`` writes it as ``['a'][0].x``.
"""

import dataclasses
import functools
import json
import types
from collections import OrderedDict, defaultdict, deque, namedtuple
from collections.abc import Callable
from typing import Any, NamedTuple

PyTree = Any
Context = Any
FlattenFn = Callable
UnflattenFn = Callable
DumpableContext = Any
ToDumpableContextFn = Callable
FromDumpableContextFn = Callable

__all__ = ["Context", "DumpableContext", "FlattenFn", "FromDumpableContextFn", "LeafSpec", "PyTree", "PyTreeSpec",
           "ToDumpableContextFn", "TreeSpec", "UnflattenFn", "is_namedtuple", "is_namedtuple_class",
           "is_namedtuple_instance", "is_structseq", "is_structseq_class", "is_structseq_instance", "key_get",
           "keystr", "register_pytree_node", "tree_all", "tree_all_only", "tree_any", "tree_any_only",
           "tree_flatten", "tree_flatten_with_path", "tree_is_leaf", "tree_iter", "tree_leaves",
           "tree_leaves_with_path", "tree_map", "tree_map_", "tree_map_only", "tree_map_only_",
           "tree_map_with_path", "tree_structure", "treespec_dumps", "treespec_loads", "treespec_pprint"]


# -- key paths -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SequenceKey:
    idx: int

    def __str__(self):
        return f"[{self.idx!r}]"

    def get(self, sequence):
        return sequence[self.idx]


@dataclasses.dataclass(frozen=True)
class MappingKey:
    key: Any

    def __str__(self):
        return f"[{self.key!r}]"

    def get(self, mapping):
        return mapping[self.key]


@dataclasses.dataclass(frozen=True)
class GetAttrKey:
    name: str

    def __str__(self):
        return f".{self.name}"

    def get(self, obj):
        return getattr(obj, self.name)


def keystr(kp):
    """A key path as text: ``['a'][0].x``."""
    return "".join(str(k) for k in kp)


def key_get(obj, kp):
    """The value at key path ``kp`` in ``obj``."""
    for k in kp:
        obj = k.get(obj)
    return obj


# -- the registry: how each container type is taken apart and put together ----------------------------------------


class NodeDef(NamedTuple):
    type: type
    flatten_fn: FlattenFn  # node -> (children, context)
    unflatten_fn: UnflattenFn  # (children, context) -> node
    flatten_with_keys_fn: Callable | None  # node -> ([(key, child)], context)


SUPPORTED_NODES = {}
SUPPORTED_SERIALIZED_TYPES = {}  # type -> (serialized name, to_dumpable_context, from_dumpable_context)
SERIALIZED_TYPE_TO_PYTHON_TYPE = {}
NO_SERIALIZED_TYPE_NAME_FOUND = "NO_SERIALIZED_TYPE_NAME_FOUND"  # (a type registered without a name: not dumpable)


def register_pytree_node(cls, flatten_fn, unflatten_fn, *, serialized_type_name=None, to_dumpable_context=None,
                         from_dumpable_context=None, flatten_with_keys_fn=None):
    """Make ``cls`` a container: ``flatten_fn(node) -> (children, context)``, ``unflatten_fn(children, context)
    -> node`` (and, for the ``_with_path`` forms, ``flatten_with_keys_fn(node) -> ([(key, child)], context)``)."""
    if cls in SUPPORTED_NODES:
        raise ValueError(f"{cls} is already registered as pytree node.")
    if (to_dumpable_context is None) != (from_dumpable_context is None):
        raise ValueError("Both to_dumpable_context and from_dumpable_context must be None or registered.")
    SUPPORTED_NODES[cls] = NodeDef(cls, flatten_fn, unflatten_fn, flatten_with_keys_fn)
    name = serialized_type_name or NO_SERIALIZED_TYPE_NAME_FOUND
    SUPPORTED_SERIALIZED_TYPES[cls] = (name, to_dumpable_context, from_dumpable_context)
    SERIALIZED_TYPE_TO_PYTHON_TYPE[name] = cls


def register_dataclass(cls, *, field_names=None, drop_field_names=None, serialized_type_name=None):
    """Make ``cls``, a dataclass (or a class built from keyword arguments ``field_names``), a container of its
    fields: a field that is None is kept in the spec, not as a leaf, as PyTorch's."""
    drop_field_names = drop_field_names or []
    if not dataclasses.is_dataclass(cls):
        if field_names is None:
            raise ValueError(f"field_names must be specified with a list of all fields used to initialize {cls}, as "
                             "it is not a dataclass.")
    elif field_names is None:
        field_names = [f.name for f in dataclasses.fields(cls) if f.init]
    else:
        init_fields = {f.name for f in dataclasses.fields(cls) if f.init} - set(drop_field_names)
        if init_fields != set(field_names):
            message = "field_names does not include all dataclass fields.\n"
            if missing := init_fields - set(field_names):
                message += (f"Missing fields in `field_names`: {missing}. If you want to include these fields in the "
                            "pytree, please add them to `field_names`, otherwise please add them to "
                            "`drop_field_names`.\n")
            if unexpected := set(field_names) - init_fields:
                message += (f"Unexpected fields in `field_names`: {unexpected}. Please remove these fields, or add "
                            "them to `drop_field_names`.\n")
            raise ValueError(message)

    def flatten(obj):
        present = [name for name in field_names if getattr(obj, name) is not None]
        return [getattr(obj, name) for name in present], [present, [n for n in field_names if n not in present]]

    def unflatten(values, context):
        present, absent = context
        return cls(**dict(zip(present, values, strict=True)), **dict.fromkeys(absent))

    def flatten_with_keys(obj):
        values, (present, _) = flatten(obj)
        return [(GetAttrKey(name), v) for name, v in zip(present, values)], present

    register_pytree_node(cls, flatten, unflatten, serialized_type_name=serialized_type_name,
                         flatten_with_keys_fn=flatten_with_keys)


def _register_namedtuple(cls, *, serialized_type_name):
    """Give the named tuple class ``cls`` a name, so that ``treespec_dumps`` can write a spec holding it (a named
    tuple is a container without this; its spec is only not dumpable)."""
    SUPPORTED_SERIALIZED_TYPES[cls] = (serialized_type_name, None, None)
    SERIALIZED_TYPE_TO_PYTHON_TYPE[serialized_type_name] = cls


def _namedtuple_serialize(cls):
    name = SUPPORTED_SERIALIZED_TYPES.get(cls, (NO_SERIALIZED_TYPE_NAME_FOUND,))[0]
    if name == NO_SERIALIZED_TYPE_NAME_FOUND:
        raise NotImplementedError(f"Can't serialize TreeSpec of namedtuple class {cls} because we didn't register a "
                                  "serializated_type_name. Please register using `_register_namedtuple`.")
    return name


def _namedtuple_deserialize(name):
    if name not in SERIALIZED_TYPE_TO_PYTHON_TYPE:
        raise NotImplementedError(f"Can't deserialize TreeSpec of namedtuple class {name} because we couldn't find "
                                  "a serializated name.")
    return SERIALIZED_TYPE_TO_PYTHON_TYPE[name]


def _defaultdict_serialize(context):
    factory, keys = context
    return {"default_factory_module": factory.__module__, "default_factory_name": factory.__qualname__,
            "dict_context": keys}


def _defaultdict_deserialize(context):
    import builtins

    if context["default_factory_module"] != "builtins":  # (loading names no module it would import)
        raise NotImplementedError("a defaultdict spec whose factory is not a builtin cannot be loaded here")
    return [getattr(builtins, context["default_factory_name"]), context["dict_context"]]


def _sequence_keys(children):
    return [(SequenceKey(i), child) for i, child in enumerate(children)]


register_pytree_node(tuple, lambda t: (list(t), None), lambda children, _: tuple(children),
                     serialized_type_name="builtins.tuple",
                     flatten_with_keys_fn=lambda t: (_sequence_keys(t), None))
register_pytree_node(list, lambda x: (list(x), None), lambda children, _: list(children),
                     serialized_type_name="builtins.list",
                     flatten_with_keys_fn=lambda x: (_sequence_keys(x), None))
register_pytree_node(dict, lambda d: (list(d.values()), list(d)), lambda children, keys: dict(zip(keys, children)),
                     serialized_type_name="builtins.dict",
                     flatten_with_keys_fn=lambda d: ([(MappingKey(k), v) for k, v in d.items()], list(d)))
register_pytree_node(namedtuple, lambda t: (list(t), type(t)), lambda children, cls: cls(*children),
                     serialized_type_name="collections.namedtuple", to_dumpable_context=_namedtuple_serialize,
                     from_dumpable_context=_namedtuple_deserialize,
                     flatten_with_keys_fn=lambda t: ([(GetAttrKey(f), v) for f, v in zip(t._fields, t)], type(t)))
register_pytree_node(OrderedDict, lambda d: (list(d.values()), list(d)),
                     lambda children, keys: OrderedDict(zip(keys, children)),
                     serialized_type_name="collections.OrderedDict",
                     flatten_with_keys_fn=lambda d: ([(MappingKey(k), v) for k, v in d.items()], list(d)))
register_pytree_node(defaultdict, lambda d: (list(d.values()), [d.default_factory, list(d)]),
                     lambda children, context: defaultdict(context[0], zip(context[1], children)),
                     serialized_type_name="collections.defaultdict", to_dumpable_context=_defaultdict_serialize,
                     from_dumpable_context=_defaultdict_deserialize,
                     flatten_with_keys_fn=lambda d: ([(MappingKey(k), v) for k, v in d.items()],
                                                     [d.default_factory, list(d)]))
register_pytree_node(deque, lambda d: (list(d), d.maxlen), lambda children, maxlen: deque(children, maxlen=maxlen),
                     serialized_type_name="collections.deque",
                     flatten_with_keys_fn=lambda d: (_sequence_keys(d), d.maxlen))


_BUILTIN_TYPES = frozenset((tuple, list, dict, namedtuple, OrderedDict, defaultdict, deque))
_DICT_TYPES = frozenset((dict, OrderedDict, defaultdict))


def is_namedtuple_class(cls):
    return (isinstance(cls, type) and issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple)
            and not is_structseq_class(cls))


def is_namedtuple_instance(obj):
    return is_namedtuple_class(type(obj))


def is_namedtuple(obj):
    """Whether ``obj`` is a named tuple or a named-tuple class."""
    return is_namedtuple_class(obj if isinstance(obj, type) else type(obj))


def is_structseq_class(cls):
    """PyTorch's C struct sequences, ``torch.return_types``: chainrule's return types (named tuples underneath)
    are taken for them, as containers of their own type whose keys are positions (``[0]``, not ``.values``)."""
    return isinstance(cls, type) and cls.__module__ == "autograd.return_types" and issubclass(cls, tuple)


def is_structseq_instance(obj):
    return is_structseq_class(type(obj))


def is_structseq(obj):
    return is_structseq_class(obj if isinstance(obj, type) else type(obj))


def _node_type(tree):
    kind = type(tree)
    if kind not in SUPPORTED_NODES:
        if is_namedtuple_class(kind):
            return namedtuple
        if is_structseq_class(kind):  # (PyTorch registers each return type: here on first sight)
            register_pytree_node(kind, lambda t: (list(t), None), lambda children, _: kind(*children),
                                 flatten_with_keys_fn=lambda t: (_sequence_keys(t), None))
    return kind


def tree_is_leaf(tree, is_leaf=None):
    """Whether ``tree`` is a leaf: not a registered container (or ``is_leaf`` says so)."""
    if is_leaf is not None and is_leaf(tree):
        return True
    return _node_type(tree) not in SUPPORTED_NODES


# -- the shape of a tree ----------------------------------------------------------------------------------------


@dataclasses.dataclass(repr=False)
class TreeSpec:
    """The nesting of a pytree: its node type, the context that type needs to rebuild it (a dict's keys, a
    named tuple's class), and a spec for each child. A leaf's spec is ``LeafSpec()``, printed ``*``."""

    type: Any
    context: Context
    children_specs: list

    def __post_init__(self):
        self.num_nodes = 1 + sum(child.num_nodes for child in self.children_specs)
        self.num_leaves = sum(child.num_leaves for child in self.children_specs)
        self.num_children = len(self.children_specs)

    def __repr__(self, indent=0):
        if self.is_leaf():
            return "*"
        children = ""
        if self.children_specs:
            indent += 2
            children = self.children_specs[0].__repr__(indent) + ("," if self.num_children > 1 else "")
            children += ",".join("\n" + " " * indent + child.__repr__(indent) for child in self.children_specs[1:])
        return f"TreeSpec({self.type.__name__}, {self.context}, [{children}])"

    def is_leaf(self):
        return self.num_nodes == 1 and self.num_leaves == 1

    def children(self):
        return list(self.children_specs)

    def child(self, index):
        return self.children_specs[index]

    def flatten_up_to(self, tree):
        """The subtrees of ``tree`` at this spec's leaves (``tree`` must have this nesting above them). The
        containers must match as PyTorch's rules say: a registered type exactly, with its context; the dict
        types one for another, by their keys in any order (the spec's order counts); a deque of any maxlen."""
        if self.is_leaf():
            return [tree]
        kind = _node_type(tree)
        if self.type not in _BUILTIN_TYPES:
            if kind is not self.type:
                raise ValueError(f"Type mismatch; expected {self.type!r}, but got {kind!r}.")
            children, context = SUPPORTED_NODES[kind].flatten_fn(tree)
            self._refuse_other_arity(len(children))
            if context != self.context:
                raise ValueError(f"Node context mismatch for custom node type {self.type!r}.")
        else:
            dicts = self.type in _DICT_TYPES and kind in _DICT_TYPES
            if not dicts and kind is not self.type:
                raise ValueError(f"Node type mismatch; expected {self.type!r}, but got {kind!r}.")
            self._refuse_other_arity(len(tree))
            if dicts:
                keys = self.context[1] if self.type is defaultdict else self.context
                missing, extra = set(keys) - set(tree), set(tree) - set(keys)
                if missing or extra:
                    raise ValueError("Node keys mismatch" + (f"; missing key(s): {missing}" if missing else "") +
                                     (f"; extra key(s): {extra}" if extra else "") + ".")
                children = [tree[key] for key in keys]
            else:
                children, context = SUPPORTED_NODES[kind].flatten_fn(tree)
                if kind is not deque and context != self.context:  # (a deque's maxlen may differ)
                    raise ValueError(f"Node context mismatch for node type {self.type!r}; expected "
                                     f"{self.context!r}, but got {context!r}.")
        return [leaf for spec, child in zip(self.children_specs, children) for leaf in spec.flatten_up_to(child)]

    def _refuse_other_arity(self, count):
        if count != self.num_children:
            raise ValueError(f"Node arity mismatch; expected {self.num_children}, but got {count}.")

    def unflatten(self, leaves):
        leaves = list(leaves)
        if len(leaves) != self.num_leaves:
            raise ValueError(f"treespec.unflatten(leaves): `leaves` has length {len(leaves)} but the spec refers to "
                             f"a pytree that holds {self.num_leaves} items ({self}).")
        return self._rebuild(iter(leaves))

    def _rebuild(self, leaves):
        if self.is_leaf():
            return next(leaves)
        children = [spec._rebuild(leaves) for spec in self.children_specs]
        return SUPPORTED_NODES[self.type].unflatten_fn(children, self.context)


class LeafSpec(TreeSpec):
    """The spec of a leaf."""

    def __init__(self):
        super().__init__(None, None, [])

    def __post_init__(self):
        self.num_nodes, self.num_leaves, self.num_children = 1, 1, 0


PyTreeSpec = TreeSpec


def _flatten(tree, is_leaf, path, keyed):
    """(leaves, or (path, leaf) pairs where ``keyed``; spec)."""
    if tree_is_leaf(tree, is_leaf):
        return [(path, tree) if keyed else tree], LeafSpec()
    node = SUPPORTED_NODES[_node_type(tree)]
    if keyed:
        if node.flatten_with_keys_fn is None:
            raise ValueError(f"Did not find a flatten_with_keys_fn for type: {node.type}. Please pass a "
                             "flatten_with_keys_fn argument to register_pytree_node.")
        pairs, context = node.flatten_with_keys_fn(tree)
    else:
        children, context = node.flatten_fn(tree)
        pairs = [(None, child) for child in children]
    leaves, specs = [], []
    for key, child in pairs:
        child_leaves, spec = _flatten(child, is_leaf, (*path, key) if keyed else path, keyed)
        leaves.extend(child_leaves)
        specs.append(spec)
    return leaves, TreeSpec(node.type, context, specs)


def tree_flatten(tree, is_leaf=None):
    """(the leaves in order, the tree's spec)."""
    return _flatten(tree, is_leaf, (), False)


def tree_flatten_with_path(tree, is_leaf=None):
    """([(key path, leaf)], spec)."""
    return _flatten(tree, is_leaf, (), True)


def tree_unflatten(leaves, treespec):
    """The tree of ``treespec`` with ``leaves`` in its leaves' places."""
    if not isinstance(treespec, TreeSpec):
        raise TypeError(f"tree_unflatten(leaves, treespec): Expected `treespec` to be instance of TreeSpec but got "
                        f"item of type {type(treespec)}.")
    return treespec.unflatten(leaves)


def tree_leaves(tree, is_leaf=None):
    return tree_flatten(tree, is_leaf)[0]


def tree_leaves_with_path(tree, is_leaf=None):
    return tree_flatten_with_path(tree, is_leaf)[0]


def tree_iter(tree, is_leaf=None):
    """The leaves, one at a time."""
    yield from tree_leaves(tree, is_leaf)


def tree_structure(tree, is_leaf=None):
    return tree_flatten(tree, is_leaf)[1]


def tree_map(func, tree, *rests, is_leaf=None):
    """The tree with ``func(leaf, *the leaves at the same place in rests)`` at each leaf."""
    leaves, spec = tree_flatten(tree, is_leaf)
    return spec.unflatten(map(func, leaves, *(spec.flatten_up_to(rest) for rest in rests)))


def tree_map_(func, tree, *rests, is_leaf=None):
    """``func`` called on each leaf for what it does; the tree itself is returned."""
    leaves, spec = tree_flatten(tree, is_leaf)
    for _ in map(func, leaves, *(spec.flatten_up_to(rest) for rest in rests)):
        pass
    return tree


def tree_map_with_path(func, tree, *rests, is_leaf=None):
    """``func(key path, leaf, *rests' leaves)`` at each leaf."""
    pairs, spec = tree_flatten_with_path(tree, is_leaf)
    paths, leaves = zip(*pairs) if pairs else ((), ())
    return spec.unflatten(map(func, paths, leaves, *(spec.flatten_up_to(rest) for rest in rests)))


def _only(types, func):
    """``func`` for leaves of ``types``, the rest passed through."""
    types = tuple(types) if isinstance(types, (tuple, list)) else types

    def wrapped(leaf):
        return func(leaf) if isinstance(leaf, types) else leaf

    return wrapped


def map_only(type_or_types_or_pred, /):
    """A decorator: the function applied only to leaves of the given types (or passing the predicate), the rest
    passed through."""
    if isinstance(type_or_types_or_pred, (type, tuple, types.UnionType)):
        def pred(x):
            return isinstance(x, type_or_types_or_pred)
    elif callable(type_or_types_or_pred):
        pred = type_or_types_or_pred
    else:
        raise TypeError("Argument must be a type, a tuple of types, or a callable.")

    def wrapper(func):
        @functools.wraps(func)
        def wrapped(x):
            return func(x) if pred(x) else x

        return wrapped

    return wrapper


def arg_tree_leaves(*args, **kwargs):
    """The leaves of ``args`` then of ``kwargs``' values, as one list."""
    return [leaf for tree in (*args, *kwargs.values()) for leaf in tree_iter(tree)]


def treespec_leaf():
    return LeafSpec()


def treespec_tuple(iterable=(), /):
    children = list(iterable)
    if any(not isinstance(child, TreeSpec) for child in children):
        raise ValueError(f"Expected a tuple of TreeSpec values, got: {children!r}.")
    return TreeSpec(tuple, None, children)


def treespec_dict(mapping=(), /, **kwargs):
    children = dict(mapping, **kwargs)
    if any(not isinstance(child, TreeSpec) for child in children.values()):
        raise ValueError(f"Expected a dictionary of TreeSpec values, got: {children!r}.")
    return TreeSpec(dict, list(children), list(children.values()))


def _broadcast_to_and_flatten(tree, treespec, is_leaf=None):
    """``tree``, a prefix of ``treespec``'s nesting, with each of its leaves repeated over the leaves it covers
    (as vmap's in_dims are): None if it is no prefix."""
    full = treespec.unflatten([0] * treespec.num_leaves)
    result = []
    try:
        tree_map_(lambda x, subtree: result.extend([x] * tree_structure(subtree, is_leaf).num_leaves), tree, full,
                  is_leaf=is_leaf)
    except ValueError:
        return None
    return result


def tree_map_only(type_or_types, func, tree, is_leaf=None):
    return tree_map(_only(type_or_types, func), tree, is_leaf=is_leaf)


def tree_map_only_(type_or_types, func, tree, is_leaf=None):
    return tree_map_(_only(type_or_types, func), tree, is_leaf=is_leaf)


def tree_all(pred, tree, is_leaf=None):
    return all(map(pred, tree_iter(tree, is_leaf)))


def tree_any(pred, tree, is_leaf=None):
    return any(map(pred, tree_iter(tree, is_leaf)))


def tree_all_only(type_or_types, pred, tree, is_leaf=None):
    types = tuple(type_or_types) if isinstance(type_or_types, (tuple, list)) else type_or_types
    return all(pred(leaf) for leaf in tree_iter(tree, is_leaf) if isinstance(leaf, types))


def tree_any_only(type_or_types, pred, tree, is_leaf=None):
    types = tuple(type_or_types) if isinstance(type_or_types, (tuple, list)) else type_or_types
    return any(pred(leaf) for leaf in tree_iter(tree, is_leaf) if isinstance(leaf, types))


# -- specs as JSON ------------------------------------------------------------------------------------------------

_PROTOCOL = 1


def _spec_to_json(spec):
    if spec.is_leaf():
        return {"type": None, "context": None, "children_spec": []}
    if spec.type not in SUPPORTED_SERIALIZED_TYPES:
        raise NotImplementedError(f"Serializing {spec.type} in pytree is not registered.")
    name, to_dumpable, _ = SUPPORTED_SERIALIZED_TYPES[spec.type]
    if name == NO_SERIALIZED_TYPE_NAME_FOUND:
        raise NotImplementedError(f"No registered serialization name for {spec.type} found. Please update your "
                                  "_register_pytree_node call with a `serialized_type_name` kwarg.")
    if to_dumpable is not None:  # (its dumpable context is written as it is, not as JSON text: PyTorch's format)
        context = to_dumpable(spec.context)
    else:
        try:
            context = json.dumps(spec.context)
        except TypeError as error:
            raise TypeError("Unable to serialize context. Please make the context json dump-able, or register a "
                            "custom serializer using _register_pytree_node.") from error
    return {"type": name, "context": context, "children_spec": [_spec_to_json(child) for child in spec.children_specs]}


def _json_to_spec(data):
    if data["type"] is None and data["context"] is None and not data["children_spec"]:
        return LeafSpec()
    kind = SERIALIZED_TYPE_TO_PYTHON_TYPE.get(data["type"])
    if kind is None:
        raise NotImplementedError(f"Deserializing {data['type']} in pytree is not registered.")
    _, _, from_dumpable = SUPPORTED_SERIALIZED_TYPES[kind]
    context = json.loads(data["context"]) if from_dumpable is None else from_dumpable(data["context"])
    return TreeSpec(kind, context, [_json_to_spec(child) for child in data["children_spec"]])


def treespec_dumps(treespec, protocol=None):
    """The spec as JSON text (PyTorch's format: ``[protocol, {"type", "context", "children_spec"}]``)."""
    protocol = _PROTOCOL if protocol is None else protocol
    if protocol != _PROTOCOL:
        raise ValueError(f"Unknown protocol {protocol}. Available protocols: [{_PROTOCOL}]")
    return json.dumps([protocol, _spec_to_json(treespec)])


def treespec_loads(serialized):
    protocol, data = json.loads(serialized)
    if protocol != _PROTOCOL:
        raise ValueError(f"Unknown protocol {protocol}. Available protocols: [{_PROTOCOL}]")
    return _json_to_spec(data)


def treespec_pprint(treespec):
    """The tree of ``treespec`` with ``*`` at each leaf, as text."""
    return repr(treespec.unflatten([_Star()] * treespec.num_leaves))


class _Star:
    def __repr__(self):
        return "*"
