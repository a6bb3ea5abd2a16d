"""``torch.fx.Graph``: the nodes of one function in the order they run, and the Python code that runs them.

A graph is a list of ``Node`` s (node.py): its inputs (``placeholder``), the operations, and one ``output``. Passes
edit it (``inserting_after(node)`` then ``call_function(...)``, ``node.replace_all_uses_with``, ``erase_node``,
``eliminate_dead_code``) and ``python_code`` writes it back as the ``forward`` a ``GraphModule`` runs: one line per
node, ``name = target(args)``, each call written as PyTorch writes it (``x + y`` for ``operator.add``,
``torch.relu(x)``, ``self.linear(x)``, ``x.view(-1)``)."""

import builtins
import math
import operator

from .node import Namespace, Node, map_arg, qualified_name, target_to_name

# operator's functions written as Python writes them (``operator.add(a, b)`` is ``a + b``)
_INFIX = {operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/", operator.floordiv: "//",
          operator.mod: "%", operator.pow: "**", operator.matmul: "@", operator.lshift: "<<",
          operator.rshift: ">>", operator.and_: "&", operator.or_: "|", operator.xor: "^", operator.eq: "==",
          operator.ne: "!=", operator.lt: "<", operator.le: "<=", operator.gt: ">", operator.ge: ">="}
_PREFIX = {operator.neg: "-", operator.pos: "+", operator.invert: "~", operator.not_: "not "}


class _InsertPoint:
    """Where ``create_node`` puts the next node: before ``node`` (the graph's root: at the end)."""

    def __init__(self, graph, before):
        self.graph, self.previous = graph, graph._insert_before
        graph._insert_before = before

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.graph._insert_before = self.previous
        return False


class Graph:
    """The nodes of one function (``graph.nodes``, in order) and the operations that build and edit them."""

    def __init__(self, owning_module=None, tracer_cls=None):
        self._root = Node(self, "", "root", "", (), {})
        self._insert_before = self._root
        self._namespace = Namespace()
        self.owning_module = owning_module
        self._tracer_cls = tracer_cls

    def __getstate__(self):  # (pickled and copied without the module owning it: the new one takes it)
        return {key: value for key, value in self.__dict__.items() if key != "owning_module"}

    def __setstate__(self, state):
        self.__dict__.update(state, owning_module=None)

    @property
    def nodes(self):
        """The nodes in order (a list taken now: editing the graph while walking it is safe)."""
        found, node = [], self._root._next
        while node is not self._root:
            found.append(node)
            node = node._next
        return found

    def find_nodes(self, *, op, target=None):
        return [node for node in self.nodes if node.op == op and (target is None or node.target == target)]

    def create_node(self, op, target, args=None, kwargs=None, name=None, type_expr=None):
        """A new node, put at the insertion point, named ``name`` or after its target (numbered where taken)."""
        if op not in ("placeholder", "get_attr", "call_function", "call_method", "call_module", "output"):
            raise AssertionError(f"op {op!r} is not in _legal_ops")  # (PyTorch's class: its check is an assert)
        name = self._namespace.create_name(name if name is not None else target_to_name(target))
        node = Node(self, name, op, target, args or (), kwargs or {}, type_expr)
        self._insert_before.prepend(node)
        return node

    def placeholder(self, name, type_expr=None, default_value=None):
        args = () if default_value is None else (default_value,)
        return self.create_node("placeholder", name, args, type_expr=type_expr)

    def get_attr(self, qualified_name, type_expr=None):
        return self.create_node("get_attr", qualified_name, type_expr=type_expr)

    def call_module(self, module_name, args=None, kwargs=None, type_expr=None):
        return self.create_node("call_module", module_name, args, kwargs, type_expr=type_expr)

    def call_method(self, method_name, args=None, kwargs=None, type_expr=None):
        return self.create_node("call_method", method_name, args, kwargs, type_expr=type_expr)

    def call_function(self, the_function, args=None, kwargs=None, type_expr=None):
        return self.create_node("call_function", the_function, args, kwargs, type_expr=type_expr)

    def output(self, result, type_expr=None):
        return self.create_node("output", "output", (result,), type_expr=type_expr)

    def inserting_before(self, node=None):
        """``with graph.inserting_before(node):`` new nodes go before ``node`` (None: at the graph's start)."""
        return _InsertPoint(self, node if node is not None else self._root._next)

    def inserting_after(self, node=None):
        """``with graph.inserting_after(node):`` new nodes go after ``node`` (None: at the graph's end, as
        PyTorch's)."""
        return _InsertPoint(self, node._next if node is not None else self._root)

    def erase_node(self, to_erase):
        """``to_erase`` taken out of the graph; refused while other nodes still use it, as PyTorch's."""
        if to_erase.users:
            raise RuntimeError(f"Tried to erase Node {to_erase} but it still had {len(to_erase.users)} users in "
                               f"the graph: {to_erase.users}!")
        if to_erase.graph is not self:
            raise RuntimeError(f"Attempting to remove {to_erase} from wrong graph!")
        if to_erase._erased:
            return
        to_erase._remove_from_list()
        to_erase._erased = True
        to_erase._update_args_kwargs((), {})  # (it leaves its inputs' users)

    def eliminate_dead_code(self):
        """The nodes nothing uses and that change nothing (``Node.is_impure``) erased, last first, so that a chain
        of them goes at once; whether any was."""
        changed = False
        for node in reversed(self.nodes):
            if not node.users and not node.is_impure():
                self.erase_node(node)
                changed = True
        return changed

    def node_copy(self, node, arg_transform=lambda node: node):
        """A copy of ``node`` (from another graph) in this one, its node arguments mapped by ``arg_transform``."""
        copied = self.create_node(node.op, node.target, map_arg(node.args, arg_transform),
                                  map_arg(node.kwargs, arg_transform), node.name, node.type)
        copied.meta = dict(node.meta)
        return copied

    def graph_copy(self, other, value_remap):
        """The nodes of ``other`` copied here but its output and those ``value_remap`` maps already; what it
        returned (in this graph's nodes)."""
        for node in other.nodes:
            if node in value_remap:
                continue
            if node.op == "output":
                return map_arg(node.args[0], lambda found: value_remap[found])
            value_remap[node] = self.node_copy(node, lambda found: value_remap[found])
        return None

    def lint(self):
        """Checks that each node's inputs are nodes of this graph placed before it, the names unique, and the
        attributes and submodules the nodes read there in the module owning the graph."""
        seen, names = set(), set()
        for node in self.nodes:
            if node.graph is not self:
                raise RuntimeError(f"Node '{node}' does not belong to this Graph!")
            for input_node in node.all_input_nodes:
                if input_node.graph is not self:
                    raise RuntimeError(f"Argument '{input_node}' of Node '{node}' does not belong to this Graph, but "
                                       "was used as an argument! If you are copying nodes from another graph, make "
                                       "sure to use ``arg_transform`` on node_copy() to remap values\n{self}")
                if input_node not in seen:
                    raise RuntimeError(f"Argument '{input_node}' of Node '{node}' was used before it has been "
                                       f"defined! Please check that Nodes in the graph are topologically ordered\n"
                                       f"{self}")
            if node.name in names:
                raise RuntimeError(f"Node redefined name {node.name}!")
            if self.owning_module is not None and node.op in ("get_attr", "call_module"):
                found = self.owning_module
                atoms = node.target.split(".")
                for i, atom in enumerate(atoms):
                    if not hasattr(found, atom):
                        raise RuntimeError(f"Node {node} target {node.target} references nonexistent attribute "
                                           f"{atom} of {'.'.join(atoms[:i])}")
                    found = getattr(found, atom)
            seen.add(node)
            names.add(node.name)

    def __str__(self):
        lines = ["graph():"] + [f"    {node.format_node()}" for node in self.nodes]
        return "\n".join(lines)

    def print_tabular(self):
        """The nodes as a table (PyTorch's needs the tabulate package; a plain one here when it is missing)."""
        rows = [["opcode", "name", "target", "args", "kwargs"]] + [
            [node.op, node.name, qualified_name(node.target),
             repr(node.args), repr(node.kwargs)] for node in self.nodes]
        try:
            from tabulate import tabulate
        except ImportError:
            widths = [max(len(row[column]) for row in rows) for column in range(5)]
            rows.insert(1, ["-" * width for width in widths])
            print("\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                            for row in rows))
        else:
            print(tabulate(rows[1:], headers=rows[0]))

    def python_code(self, root_module="self"):
        """The graph as the source of ``def forward(self, ...)``, and the globals that source reads."""
        return _write_forward(self, root_module)


class PythonCode:
    """``graph.python_code()``: ``src`` (the function's source) and ``globals`` (what it reads by name)."""

    def __init__(self, src, globals):
        self.src, self.globals = src, globals


def _attribute_path(root_module, target):
    """``self.layer1`` read at the dotted path ``target``, a part that is not a name by getattr
    (``getattr(self.seq, "0")``), as PyTorch writes it."""
    expression = root_module
    for part in target.split("."):
        expression = f"{expression}.{part}" if part.isidentifier() else f'getattr({expression}, "{part}")'
    return expression


def _resolves(module, path, obj):
    for part in path:
        module = getattr(module, part, None)
    return module is not None and module == obj


def _write_forward(graph, root_module):
    import autograd

    namespace = Namespace()
    for node in graph.nodes:
        namespace.used.add(node.name)
    globals_ = {"torch": autograd, "inf": float("inf"), "nan": float("nan"), "NoneType": type(None)}
    named = {}

    def global_name(obj):
        """How the code names ``obj``: ``torch.<name>`` for autograd's functions, a builtin by its name, else a
        global of its own (``relu_1``, never a node's name)."""
        if id(obj) in named:
            return named[id(obj)]
        name = getattr(obj, "__name__", None)
        shown = qualified_name(obj) if callable(obj) and not isinstance(obj, autograd.Tensor) else ""
        if shown.startswith("torch.") and _resolves(autograd, shown.split(".")[1:], obj):
            found = shown  # (torch.nn.functional.gelu: autograd.nn is nn once nn is loaded)
        elif name is not None and vars(builtins).get(name) is obj:
            found = name
        else:
            found = namespace.create_name(name or "fn")
            globals_[found] = obj
        named[id(obj)] = found
        return found

    def expression(value):
        if isinstance(value, Node):
            return value.name
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            inner = ", ".join(expression(item) for item in value)
            return f"({inner},)" if len(value) == 1 else f"({inner})"
        if isinstance(value, list):
            return "[" + ", ".join(expression(item) for item in value) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{expression(key)}: {expression(item)}" for key, item in value.items()) + "}"
        if isinstance(value, slice):
            return f"slice({expression(value.start)}, {expression(value.stop)}, {expression(value.step)})"
        if value is None or isinstance(value, (bool, int, str)):
            return repr(value)
        if isinstance(value, float) and not math.isfinite(value):  # (read from the globals inf and nan)
            return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
        if isinstance(value, float):
            return repr(value)
        if isinstance(value, autograd.dtype) and getattr(autograd, str(value), None) is value:
            return f"torch.{value}"  # (as PyTorch writes a dtype: torch.float64)
        if isinstance(value, autograd.device):  # (and a device: device(type='cpu'), its class a global)
            globals_["device"] = autograd.device
            return repr(value)
        return global_name(value)  # (a dtype, a device, an object: read from the globals)

    def call(args, kwargs):
        return ", ".join([expression(arg) for arg in args] + [f"{key} = {expression(item)}"
                                                             for key, item in kwargs.items()])

    # each value set to None after its last use, as PyTorch's code does (an inference frees activations early)
    last_used_by, seen = {}, set()
    for node in reversed(graph.nodes):
        for input_node in node.all_input_nodes:
            if input_node not in seen and node.op != "output":
                last_used_by.setdefault(node, []).append(input_node)
            seen.add(input_node)
    parameters, body = [root_module], []
    for node in graph.nodes:
        if node.op == "placeholder":
            parameters.append(node.target if not node.args else f"{node.target} = {expression(node.args[0])}")
            if node.name != node.target.lstrip("*"):  # (a parameter named as a builtin: ``input``, node ``input_1``)
                body.append(f"{node.name} = {node.target.lstrip('*')}")
            continue
        if node.op == "output":
            body.append(f"return {expression(node.args[0])}")
            continue
        if node.op == "get_attr":
            value = _attribute_path(root_module, node.target)
        elif node.op == "call_module":
            value = f"{_attribute_path(root_module, node.target)}({call(node.args, node.kwargs)})"
        elif node.op == "call_method":
            value = f"{expression(node.args[0])}.{node.target}({call(node.args[1:], node.kwargs)})"
        elif node.target in _INFIX and len(node.args) == 2 and not node.kwargs:
            value = f"{expression(node.args[0])} {_INFIX[node.target]} {expression(node.args[1])}"
        elif node.target in _PREFIX and len(node.args) == 1 and not node.kwargs:
            value = f"{_PREFIX[node.target]}{expression(node.args[0])}"
        elif node.target is operator.getitem and len(node.args) == 2 and not node.kwargs:
            value = f"{expression(node.args[0])}[{expression(node.args[1])}]"
        elif node.target is getattr and len(node.args) == 2 and isinstance(node.args[1], str) and not node.kwargs:
            value = f"{expression(node.args[0])}.{node.args[1]}"
        else:
            value = f"{global_name(node.target)}({call(node.args, node.kwargs)})"
        freed = last_used_by.get(node, []) + ([node] if not node.users else [])
        body.append(f"{node.name} = {value}" + (f";  {' = '.join(n.name for n in freed)} = None" if freed else ""))
    # a function fx.wrap marked is marked again in the globals of this code, as PyTorch's code does
    wrapped = dict.fromkeys(global_name(node.target) for node in graph.nodes
                            if node.op == "call_function" and node.meta.get("is_wrapped"))
    marks = "".join(f'torch.fx.wrap("{name}")\n' for name in wrapped)
    source = f"\n{marks}\n\ndef forward({', '.join(parameters)}):\n" + "".join(
        f"    {line}\n" for line in body or ["pass"]) + "    "  # (blank lines around it as PyTorch's, to the space)
    return PythonCode(source, globals_)
