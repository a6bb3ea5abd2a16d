"""``torch.fx.Node``: one operation of a ``Graph``, and the names nodes get.

A node is one of six kinds (``op``): ``placeholder`` (an input of the function, ``target`` its parameter's name),
``get_attr`` (a parameter, buffer or constant read from the module, ``target`` its dotted path),
``call_function`` (``target`` a Python callable: ``autograd.relu``, ``operator.add``), ``call_method`` (``target``
a method's name, called on ``args[0]``), ``call_module`` (``target`` a submodule's dotted path) and ``output``
(what the function returns, ``args[0]``). Its ``args`` and ``kwargs`` hold other nodes (its inputs) and constants;
each node knows the nodes that use it (``users``), which the graph keeps up to date as arguments change."""

import builtins
import keyword
import operator
import re
import sys

from .immutable_collections import immutable_dict, immutable_list


def map_arg(value, function):
    """``value`` with every Node inside it (through tuples, lists, dicts and slices) replaced by ``function(node)``."""
    if isinstance(value, Node):
        return function(value)
    if isinstance(value, tuple):
        items = [map_arg(item, function) for item in value]
        make = getattr(type(value), "_make", None)  # (a named tuple keeps its class)
        return make(items) if make is not None else tuple(items)
    if isinstance(value, list):
        return [map_arg(item, function) for item in value]
    if isinstance(value, dict):
        return {key: map_arg(item, function) for key, item in value.items()}
    if isinstance(value, slice):
        return slice(map_arg(value.start, function), map_arg(value.stop, function), map_arg(value.step, function))
    return value


def _frozen(value):
    """``value`` with its lists and dicts (through tuples) made immutable_list and immutable_dict."""
    if isinstance(value, tuple):
        items = [_frozen(item) for item in value]
        make = getattr(type(value), "_make", None)
        return make(items) if make is not None else tuple(items)
    if isinstance(value, list):
        return immutable_list(_frozen(item) for item in value)
    if isinstance(value, dict):
        return immutable_dict((key, _frozen(item)) for key, item in value.items())
    return value


def _nodes_in(value):
    """The nodes inside ``value``, in order, each once."""
    found = {}
    map_arg(value, lambda node: found.setdefault(node))
    return list(found)


class Node:
    """One operation of a graph: ``op``, ``target``, ``args``, ``kwargs``, a unique ``name`` (the variable the
    generated code assigns), ``users`` (the nodes whose arguments hold it, as dict keys) and ``meta`` (free for
    passes: ShapeProp writes ``meta["tensor_meta"]``)."""

    def __init__(self, graph, name, op, target, args, kwargs, return_type=None):
        if op == "call_function" and not callable(target):
            raise ValueError(f"Node [graph = {graph}, name = '{name}'] target {target} has type "
                             f"{type(target).__name__} but a Callable is expected")
        if op != "call_function" and not isinstance(target, str):
            raise ValueError(f"Node [graph = {graph}, name = '{name}'] target {target} has type "
                             f"{type(target).__name__} but a str is expected")
        self.graph, self.name, self.op, self.target = graph, name, op, target
        self.users = {}
        self.meta = {}
        self.type = return_type
        self._input_nodes = []
        self._args, self._kwargs = (), {}
        self._prev = self._next = self  # (the graph's nodes are a ring around its root)
        self._erased = False
        self._update_args_kwargs(args, kwargs)

    @property
    def args(self):
        return self._args

    @args.setter
    def args(self, value):
        self._update_args_kwargs(value, self._kwargs)

    @property
    def kwargs(self):
        return self._kwargs

    @kwargs.setter
    def kwargs(self, value):
        self._update_args_kwargs(self._args, value)

    def _update_args_kwargs(self, args, kwargs):
        """New arguments: this node leaves the ``users`` of the inputs it had and joins those of its new ones. The
        lists and dicts inside them are made immutable (``node.kwargs["k"] = v`` raises), as PyTorch's."""
        for old in self._input_nodes:
            old.users.pop(self, None)
        self._args, self._kwargs = _frozen(tuple(args)), _frozen(dict(kwargs))
        self._input_nodes = _nodes_in((args, kwargs))
        for new in self._input_nodes:
            new.users.setdefault(self)

    @property
    def stack_trace(self):
        """Where the program made this node (``meta["stack_trace"]``; None: chainrule's tracer records none, as
        PyTorch's by default)."""
        return self.meta.get("stack_trace")

    @stack_trace.setter
    def stack_trace(self, trace):
        self.meta["stack_trace"] = trace

    @property
    def all_input_nodes(self):
        """The nodes among this node's arguments, in order, each once."""
        return list(self._input_nodes)

    @property
    def next(self):
        return self._next

    @property
    def prev(self):
        return self._prev

    def prepend(self, node):
        """``node`` moved (or put) just before this one."""
        if node is self:
            return
        node._remove_from_list()
        previous = self._prev
        previous._next, node._prev, node._next, self._prev = node, previous, self, node

    def append(self, node):
        """``node`` moved (or put) just after this one."""
        self._next.prepend(node)

    def _remove_from_list(self):
        self._prev._next, self._next._prev = self._next, self._prev
        self._prev = self._next = self

    def replace_all_uses_with(self, replace_with, delete_user_cb=lambda user: True, *, propagate_meta=False):
        """Every user of this node takes ``replace_with`` in its place (those ``delete_user_cb`` accepts); the users
        changed, as a list."""
        if propagate_meta:
            for key, value in self.meta.items():
                replace_with.meta.setdefault(key, value)
        changed = [user for user in list(self.users) if delete_user_cb(user)]
        for user in changed:
            user.replace_input_with(self, replace_with)
        return changed

    def replace_input_with(self, old_input, new_input):
        swap = lambda node: new_input if node is old_input else node  # noqa: E731
        self._update_args_kwargs(map_arg(self._args, swap), map_arg(self._kwargs, swap))

    def update_arg(self, index, value):
        args = list(self._args)
        args[index] = value
        self.args = args

    def update_kwarg(self, key, value):
        self.kwargs = {**self._kwargs, key: value}

    def is_impure(self):
        """Whether dead-code elimination must keep this node though nothing uses it: an input, the output, a
        submodule's call (it may change state) or an in-place method or function."""
        if self.op in ("placeholder", "output", "call_module"):
            return True
        name = self.target if self.op == "call_method" else getattr(self.target, "__name__", "")
        return (name.endswith("_") and not name.endswith("__")) or name in ("_assert", "_assert_is_none")

    def format_node(self):
        if self.op == "placeholder":
            default = f"(default={self.args[0]!r})" if self.args else ""
            return f"%{self.name} : [num_users={len(self.users)}] = placeholder[target={self.target}]{default}"
        if self.op == "output":
            return f"return {_format(self.args[0]).replace('%', '')}"
        if self.op == "get_attr":  # (PyTorch prints no arguments for an attribute read)
            return f"%{self.name} : [num_users={len(self.users)}] = get_attr[target={self.target}]"
        return (f"%{self.name} : [num_users={len(self.users)}] = {self.op}[target={qualified_name(self.target)}]"
                f"(args = {_format(self.args)}, kwargs = {_format(self.kwargs)})")

    def __repr__(self):
        return self.name


def _format(value):
    """Arguments as PyTorch prints them: nodes as ``%name``, a dict's string keys bare (``{dim: 1}``)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key if isinstance(key, str) else _format(key)}: {_format(item)}"
                               for key, item in value.items()) + "}"
    return repr(map_arg(value, lambda node: _Percent(node.name)))


class _Percent:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"%{self.name}"


def qualified_name(target):
    """A function target as PyTorch names it: ``torch.relu`` (one of autograd's), ``torch.nn.functional.gelu``,
    ``operator.add``, ``getattr`` (a builtin), else its module and name."""
    if isinstance(target, str):
        return target
    name = getattr(target, "__name__", None)
    if name is None:
        return repr(target)
    if vars(builtins).get(name) is target:
        return name
    if getattr(operator, name, None) is target:
        return f"operator.{name}"
    for module_name, shown in (("autograd", "torch"), ("nn.functional", "torch.nn.functional")):
        module = sys.modules.get(module_name)
        if module is not None and getattr(module, name, None) == target:  # (== : a dispatching wrapper is equal)
            return f"{shown}.{name}"
    return f"{getattr(target, '__module__', None)}.{getattr(target, '__qualname__', name)}"


def _snake_case(name):
    """``MyModule`` → ``my_module``, as PyTorch names a node after a target written in CamelCase."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def target_to_name(target):
    """The name a node of ``target`` is given before numbering: a function's name (``add``, ``relu``), a method's
    or a submodule's path with its dots made underscores (``layer1_0_conv1``), a magic method's without its
    underscores."""
    if callable(target):
        name = target.__name__
    else:
        name = target
        if name.startswith("__") and name.endswith("__"):
            name = name[2:-2]
    return _snake_case(name)


# names a node never takes: Python's builtins and the names generated code reads (PyTorch's "custom builtins")
_RESERVED = set(vars(builtins)) | {"inf", "nan", "NoneType", "torch", "device", "fx_pytree", "pytree"}


class Namespace:
    """The names given in one graph (or one generated function): each candidate made a Python identifier and, where
    taken, a keyword or a builtin's name, numbered as PyTorch numbers them (``add``, ``add_1``, ``add_2``; ``sum_1``
    first, ``sum`` being a builtin)."""

    _numbered = re.compile(r"(.*)_(\d+)$")

    def __init__(self):
        self.used = set()
        self.counts = {}

    def create_name(self, candidate):
        candidate = re.sub(r"[^0-9a-zA-Z_]+", "_", candidate) or "_unnamed"
        if candidate[0].isdigit():
            candidate = f"_{candidate}"
        match = self._numbered.match(candidate)
        base, number = (candidate, None) if match is None else (match.group(1), int(match.group(2)))
        if number is not None:
            candidate = f"{base}_{number}"
        if not number:
            number = self.counts.get(base, 0)
        while candidate in self.used or keyword.iskeyword(candidate) or candidate in _RESERVED:
            number += 1
            candidate = f"{base}_{number}"
        self.used.add(candidate)
        self.counts[base] = number
        return candidate
