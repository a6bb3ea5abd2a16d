"""Specs as JSON, in PyTorch's format (``treespec_dumps`` / ``treespec_loads``), so that a spec written by one
library reads back in the other: ``[protocol, {"type", "context", "children_spec"}]``, each node's type by its
registered name and its context as JSON text (or as its type's dumpable context, written as it is). An enum in
a context (a dict keyed by one) is written ``{"__enum__": true, "fqn": "module:Class", "name": ...}``."""

import enum
import json

from .nodes import (
    NO_SERIALIZED_TYPE_NAME_FOUND,
    SERIALIZED_TYPE_TO_PYTHON_TYPE,
    SUPPORTED_SERIALIZED_TYPES,
    loaded_qualified,
)
from .treespec import LeafSpec, TreeSpec

_PROTOCOL = 1


class _EnumEncoder(json.JSONEncoder):
    def default(self, obj):
        if isinstance(obj, enum.Enum):
            return {"__enum__": True, "fqn": f"{type(obj).__module__}:{type(obj).__qualname__}", "name": obj.name}
        return super().default(obj)


def _enum_object_hook(obj):
    if "__enum__" in obj:
        module, _, qualname = obj["fqn"].partition(":")
        return loaded_qualified(module, qualname)[obj["name"]]
    return obj


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
            context = json.dumps(spec.context, cls=_EnumEncoder)
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
    if from_dumpable is None:
        context = json.loads(data["context"], object_hook=_enum_object_hook)
    else:
        context = from_dumpable(data["context"])
    return TreeSpec(kind, context, [_json_to_spec(child) for child in data["children_spec"]])


def treespec_dumps(treespec, protocol=None):
    """The spec as JSON text (PyTorch's format: ``[protocol, {"type", "context", "children_spec"}]``)."""
    if not isinstance(treespec, TreeSpec):
        raise TypeError(f"Expected `treespec` to be an instance of PyTreeSpec but got item of type {type(treespec)}.")
    protocol = _PROTOCOL if protocol is None else protocol
    if protocol != _PROTOCOL:
        raise ValueError(f"Unknown protocol {protocol}. Available protocols: [{_PROTOCOL}]")
    return json.dumps([protocol, _spec_to_json(treespec)], cls=_EnumEncoder)


def treespec_loads(serialized):
    protocol, data = json.loads(serialized)
    if protocol != _PROTOCOL:
        raise ValueError(f"Unknown protocol {protocol}. Available protocols: [{_PROTOCOL}]")
    return _json_to_spec(data)


