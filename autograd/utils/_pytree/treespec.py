"""The shape of a pytree, ``TreeSpec``, and the functions that walk trees: flatten and unflatten (with key paths
or without), map over one tree or several of one nesting, and ask whether all or any leaves pass a test."""

import dataclasses
import functools
import types
from collections import OrderedDict, defaultdict, deque
from typing import Any

from .nodes import _BUILTIN_TYPES, _DICT_TYPES, SUPPORTED_NODES, ConstantNode, Context, _node_type, tree_is_leaf

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

    def __hash__(self):
        """Equal specs hash equal: a context is hashed where PyTorch hashes it (the dict types' keys, a builtin's,
        a constant), a registered type's left out, since it may be unhashable."""
        if self.type is defaultdict:
            context = (self.context[0], tuple(self.context[1]))
        elif self.type in (dict, OrderedDict):
            context = tuple(self.context)
        elif self.type is None or self.type in _BUILTIN_TYPES:
            context = self.context
        elif isinstance(self.context, ConstantNode):
            context = self.context.value
        else:
            context = None
        return hash((self.type, context, tuple(self.children_specs)))

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


def tree_flatten(tree, is_leaf=None):
    """(the leaves in order, the tree's spec)."""
    if tree_is_leaf(tree, is_leaf):
        return [tree], LeafSpec()
    node = SUPPORTED_NODES[_node_type(tree)]
    children, context = node.flatten_fn(tree)
    leaves, specs = [], []
    for child in children:
        child_leaves, spec = tree_flatten(child, is_leaf)
        leaves.extend(child_leaves)
        specs.append(spec)
    return leaves, TreeSpec(node.type, context, specs)


def _key_paths(tree, is_leaf, path=()):
    """(key path, leaf) for each leaf, the keys from each type's ``flatten_with_keys_fn``."""
    if tree_is_leaf(tree, is_leaf):
        yield path, tree
        return
    node = SUPPORTED_NODES[_node_type(tree)]
    if node.flatten_with_keys_fn is None:
        raise ValueError(f"Did not find a flatten_with_keys_fn for type: {node.type}. Please pass a "
                         "flatten_with_keys_fn argument to register_pytree_node.")
    for key, child in node.flatten_with_keys_fn(tree)[0]:
        yield from _key_paths(child, is_leaf, (*path, key))


def tree_flatten_with_path(tree, is_leaf=None):
    """([(key path, leaf)], spec): the spec is ``tree_flatten``'s (its contexts from each type's ``flatten_fn``,
    whatever context its ``flatten_with_keys_fn`` gives)."""
    return list(_key_paths(tree, is_leaf)), tree_structure(tree, is_leaf)


def tree_unflatten(leaves, treespec):
    """The tree of ``treespec`` with ``leaves`` in its leaves' places."""
    if not isinstance(treespec, TreeSpec):
        raise TypeError(f"tree_unflatten(leaves, treespec): Expected `treespec` to be instance of TreeSpec but got "
                        f"item of type {type(treespec)}.")
    return treespec.unflatten(leaves)


def tree_leaves(tree, is_leaf=None):
    return tree_flatten(tree, is_leaf)[0]


def tree_leaves_with_path(tree, is_leaf=None):
    return list(_key_paths(tree, is_leaf))


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


def tree_map_only(type_or_types_or_pred, /, func, tree, is_leaf=None):
    """``tree_map`` of ``func`` at the leaves of the given types (or passing the predicate), the rest kept."""
    return tree_map(map_only(type_or_types_or_pred)(func), tree, is_leaf=is_leaf)


def tree_map_only_(type_or_types_or_pred, /, func, tree, is_leaf=None):
    return tree_map_(map_only(type_or_types_or_pred)(func), tree, is_leaf=is_leaf)


def tree_all(pred, tree, is_leaf=None):
    return all(map(pred, tree_iter(tree, is_leaf)))


def tree_any(pred, tree, is_leaf=None):
    return any(map(pred, tree_iter(tree, is_leaf)))


def tree_all_only(type_or_types, /, pred, tree, is_leaf=None):
    return all(pred(leaf) for leaf in tree_iter(tree, is_leaf) if isinstance(leaf, type_or_types))


def tree_any_only(type_or_types, /, pred, tree, is_leaf=None):
    return any(pred(leaf) for leaf in tree_iter(tree, is_leaf) if isinstance(leaf, type_or_types))


def treespec_pprint(treespec):
    """The tree of ``treespec`` with ``*`` at each leaf, as text."""
    return repr(treespec.unflatten([_Star()] * treespec.num_leaves))


class _Star:
    def __repr__(self):
        return "*"
