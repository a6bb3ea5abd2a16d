"""The registry of pytree containers: how each type is taken apart into children and a context and put back
together, the key each child is reached by (for the ``*_with_path`` forms), and which values are containers at
all. The builtin containers are registered here; a program adds its own with ``register_pytree_node``,
``register_dataclass`` or ``register_constant``."""

import dataclasses
import sys
import warnings
from collections import OrderedDict, defaultdict, deque, namedtuple
from collections.abc import Callable
from typing import Any, NamedTuple

from ...size import Size

PyTree = Any
Context = Any
FlattenFn = Callable
UnflattenFn = Callable
DumpableContext = Any
ToDumpableContextFn = Callable
FromDumpableContextFn = Callable


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
    _private_register_pytree_node(cls, flatten_fn, unflatten_fn, serialized_type_name=serialized_type_name,
                                  to_dumpable_context=to_dumpable_context,
                                  from_dumpable_context=from_dumpable_context,
                                  flatten_with_keys_fn=flatten_with_keys_fn)


def _register_pytree_node(cls, flatten_fn, unflatten_fn, to_str_fn=None, maybe_from_str_fn=None, *,
                          serialized_type_name=None, to_dumpable_context=None, from_dumpable_context=None,
                          flatten_with_keys_fn=None):
    """PyTorch's older spelling of ``register_pytree_node`` (deprecated): a type registered again is registered
    anew, with a warning, where the public one refuses it."""
    warnings.warn("`torch.utils._pytree._register_pytree_node` is deprecated. Please use "
                  "`torch.utils._pytree.register_pytree_node` instead.", FutureWarning, stacklevel=2)
    if to_str_fn is not None or maybe_from_str_fn is not None:
        warnings.warn("`to_str_fn` and `maybe_from_str_fn` is deprecated. Please use `to_dumpable_context` and "
                      "`from_dumpable_context` instead.", FutureWarning, stacklevel=2)
    _private_register_pytree_node(cls, flatten_fn, unflatten_fn, serialized_type_name=serialized_type_name,
                                  to_dumpable_context=to_dumpable_context,
                                  from_dumpable_context=from_dumpable_context,
                                  flatten_with_keys_fn=flatten_with_keys_fn)


def _private_register_pytree_node(cls, flatten_fn, unflatten_fn, *, serialized_type_name=None,
                                  to_dumpable_context=None, from_dumpable_context=None, flatten_with_keys_fn=None):
    if (to_dumpable_context is None) != (from_dumpable_context is None):
        raise ValueError(f"Both to_dumpable_context and from_dumpable_context for {cls} must be None or registered.")
    if cls in SUPPORTED_NODES:
        warnings.warn(f"{cls} is already registered as pytree node. Overwriting the previous registration.",
                      stacklevel=3)
    SUPPORTED_NODES[cls] = NodeDef(cls, flatten_fn, unflatten_fn, flatten_with_keys_fn)
    name = serialized_type_name or NO_SERIALIZED_TYPE_NAME_FOUND
    SUPPORTED_SERIALIZED_TYPES[cls] = (name, to_dumpable_context, from_dumpable_context)
    SERIALIZED_TYPE_TO_PYTHON_TYPE[name] = cls


def _deregister_pytree_node(cls):
    """Make ``cls`` a leaf again."""
    del SUPPORTED_NODES[cls]
    name = SUPPORTED_SERIALIZED_TYPES.pop(cls)[0]
    SERIALIZED_TYPE_TO_PYTHON_TYPE.pop(name, None)
    CONSTANT_NODES.discard(cls)


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

    _private_register_pytree_node(cls, flatten, unflatten, serialized_type_name=serialized_type_name,
                                  flatten_with_keys_fn=flatten_with_keys)


def _register_namedtuple(cls, *, serialized_type_name):
    """Give the named tuple class ``cls`` a name, so that ``treespec_dumps`` can write a spec holding it (a named
    tuple is a container without this; its spec is only not dumpable)."""
    SUPPORTED_SERIALIZED_TYPES[cls] = (serialized_type_name, None, None)
    SERIALIZED_TYPE_TO_PYTHON_TYPE[serialized_type_name] = cls


CONSTANT_NODES = set()


@dataclasses.dataclass(frozen=True)
class ConstantNode:
    """The context of a constant's spec: the constant itself, given back whole when the spec is unflattened."""

    value: Any


def register_constant(cls):
    """Make ``cls`` a container with no leaves: its instances are kept whole in the spec (``ConstantNode``), so
    that two trees match only where their constants are equal; ``cls`` must define ``__eq__`` and ``__hash__``."""
    if cls.__eq__ is object.__eq__:
        raise TypeError("register_constant(cls) expects `cls` to have a non-default `__eq__` implementation.")
    if cls.__hash__ is None:  # (a class defining __eq__ alone has no __hash__)
        raise TypeError("register_constant(cls) expects `cls` to have a non-default `__hash__` implementation.")
    _private_register_pytree_node(cls, lambda x: ([], ConstantNode(x)), lambda _, context: context.value,
                                  flatten_with_keys_fn=lambda x: ([], ConstantNode(x)))
    CONSTANT_NODES.add(cls)


def is_constant_class(cls):
    return isinstance(cls, type) and cls in CONSTANT_NODES


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
    return [loaded_qualified(context["default_factory_module"], context["default_factory_name"]),
            context["dict_context"]]


def loaded_qualified(module_name, qualname):
    """The object a spec's JSON names by its module and qualified name (``Outer.Inner``: a defaultdict's factory,
    an enum), found in a module the program has already imported. PyTorch imports the module; here loading a
    spec imports nothing and runs no code it names (README: loading never executes code), so a module not yet
    imported is refused, naming it."""
    found = sys.modules.get(module_name)
    if found is None:
        raise NotImplementedError(f"loading this TreeSpec needs {module_name}.{qualname}, from a module that is not "
                                  f"imported: import {module_name} first (loading a spec imports nothing)")
    for name in qualname.split("."):
        found = vars(found).get(name) if hasattr(found, "__dict__") else None
        if found is None:
            raise NotImplementedError(f"loading this TreeSpec needs {module_name}.{qualname}, which is not there")
    return found


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
# A Size comes back a plain tuple, as PyTorch's (its leaves may have been mapped to what a Size cannot hold)
register_pytree_node(Size, lambda s: (list(s), None), lambda children, _: tuple(children),
                     serialized_type_name="torch.Size", flatten_with_keys_fn=lambda s: (_sequence_keys(s), None))


_BUILTIN_TYPES = frozenset((tuple, list, dict, namedtuple, OrderedDict, defaultdict, deque))
_DICT_TYPES = frozenset((dict, OrderedDict, defaultdict))


def is_namedtuple_class(cls):
    """Whether ``cls`` is a named-tuple class (or a subclass of one), as ``collections.namedtuple`` and
    ``typing.NamedTuple`` make them; chainrule's return types, though named tuples underneath, are not."""
    return (isinstance(cls, type) and issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple)
            and all(type(field) is str for field in cls._fields) and callable(getattr(cls, "_make", None))
            and callable(getattr(cls, "_asdict", None)) and not _is_return_type(cls))


def is_namedtuple_instance(obj):
    return is_namedtuple_class(type(obj))


def is_namedtuple(obj):
    """Whether ``obj`` is a named tuple or a named-tuple class."""
    return is_namedtuple_class(obj if isinstance(obj, type) else type(obj))


_SUBCLASSABLE = 1 << 10  # (CPython's Py_TPFLAGS_BASETYPE: a struct sequence type has it clear)


def is_structseq_class(cls):
    """Whether ``cls`` is a C struct sequence (``time.struct_time``, PyTorch's ``torch.return_types``): a tuple
    type made in C with ``n_fields`` and no subclasses. chainrule's return types are taken for them."""
    if _is_return_type(cls):
        return True
    return (isinstance(cls, type) and cls.__bases__ == (tuple,)
            and all(isinstance(getattr(cls, name, None), int)
                    for name in ("n_fields", "n_sequence_fields", "n_unnamed_fields"))
            and not cls.__flags__ & _SUBCLASSABLE)


def _is_return_type(cls):
    """chainrule's ``autograd.return_types``: named tuples standing for PyTorch's struct sequences."""
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
        if _is_return_type(kind):  # (PyTorch registers each return type; a struct_time is a leaf: here on sight)
            register_pytree_node(kind, lambda t: (list(t), None), lambda children, _: kind(*children),
                                 flatten_with_keys_fn=lambda t: (_sequence_keys(t), None))
    return kind


def tree_is_leaf(tree, is_leaf=None):
    """Whether ``tree`` is a leaf: not a registered container (or ``is_leaf`` says so)."""
    if is_leaf is not None and is_leaf(tree):
        return True
    return _node_type(tree) not in SUPPORTED_NODES


