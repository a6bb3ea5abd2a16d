"""Pytrees, as ``torch.utils._pytree``: nested containers (tuples, lists, dicts, named tuples, OrderedDicts,
defaultdicts, deques, and any type given to ``register_pytree_node``) whose other values are the leaves.

``tree_flatten(tree)`` gives the leaves in order and a ``TreeSpec``, the shape of the nesting;
``tree_unflatten(leaves, spec)`` puts other leaves in their places. ``tree_map(f, tree)`` is the two
together: the same nesting with f of each leaf, as a program moves a nested batch to a device
(``tree_map(lambda t: t.to(device), batch)``). ``torch.func`` takes its arguments as pytrees too.

A leaf is anything that is not a registered container, None included (PyTorch 2.13's rule). The
``*_with_path`` forms also give each leaf's key path: ``keystr`` writes it as ``['a'][0].x``.
"""

from .nodes import (
    CONSTANT_NODES,
    NO_SERIALIZED_TYPE_NAME_FOUND,
    SERIALIZED_TYPE_TO_PYTHON_TYPE,
    SUPPORTED_NODES,
    SUPPORTED_SERIALIZED_TYPES,
    ConstantNode,
    Context,
    DumpableContext,
    FlattenFn,
    FromDumpableContextFn,
    GetAttrKey,
    MappingKey,
    NodeDef,
    PyTree,
    SequenceKey,
    ToDumpableContextFn,
    UnflattenFn,
    _deregister_pytree_node,
    _register_namedtuple,
    _register_pytree_node,
    is_constant_class,
    is_namedtuple,
    is_namedtuple_class,
    is_namedtuple_instance,
    is_structseq,
    is_structseq_class,
    is_structseq_instance,
    key_get,
    keystr,
    register_constant,
    register_dataclass,
    register_pytree_node,
    tree_is_leaf,
)
from .serialization import treespec_dumps, treespec_loads
from .treespec import (
    LeafSpec,
    PyTreeSpec,
    TreeSpec,
    _broadcast_to_and_flatten,
    arg_tree_leaves,
    map_only,
    tree_all,
    tree_all_only,
    tree_any,
    tree_any_only,
    tree_flatten,
    tree_flatten_with_path,
    tree_iter,
    tree_leaves,
    tree_leaves_with_path,
    tree_map,
    tree_map_,
    tree_map_only,
    tree_map_only_,
    tree_map_with_path,
    tree_structure,
    tree_unflatten,
    treespec_dict,
    treespec_leaf,
    treespec_pprint,
    treespec_tuple,
)

__all__ = ["Context", "DumpableContext", "FlattenFn", "FromDumpableContextFn", "LeafSpec", "PyTree", "PyTreeSpec",
           "ToDumpableContextFn", "TreeSpec", "UnflattenFn", "is_constant_class", "is_namedtuple",
           "is_namedtuple_class", "is_namedtuple_instance", "is_structseq", "is_structseq_class",
           "is_structseq_instance", "key_get", "keystr", "register_constant", "register_dataclass",
           "register_pytree_node", "tree_all", "tree_all_only", "tree_any", "tree_any_only", "tree_flatten",
           "tree_flatten_with_path", "tree_is_leaf", "tree_iter", "tree_leaves", "tree_leaves_with_path", "tree_map",
           "tree_map_", "tree_map_only", "tree_map_only_", "tree_map_with_path", "tree_structure", "tree_unflatten",
           "treespec_dict", "treespec_dumps", "treespec_leaf", "treespec_loads", "treespec_pprint", "treespec_tuple"]


