"""``torch.fx.GraphModule``: a module whose ``forward`` is the Python code written from a graph.

It holds what the graph reads from its root (the submodules of its ``call_module`` nodes, the parameters, buffers
and constants of its ``get_attr`` nodes), at the same paths, so its ``state_dict`` keeps the root's keys.
``recompile()`` writes the code again after the graph was edited; ``.code`` is that code. Each GraphModule has a
class of its own, as PyTorch's, so that setting its ``forward`` leaves other GraphModules alone."""

import copy
import importlib
import linecache

from .graph import Graph

nn = importlib.import_module("nn")  # (nn is built on autograd: loaded by the program that builds a GraphModule)

_SOURCES = [0]  # (a count: each generated forward's own file name, so tracebacks show its line)


def _copy_attr(from_module, to_module, target):
    """``from_module``'s attribute at the dotted ``target`` set at the same path on ``to_module``, the modules on the
    way made empty ``nn.Module`` s where missing; a tensor that is not a parameter becomes a buffer."""
    *prefix, field = target.split(".")
    for item in prefix:
        found, held = getattr(from_module, item), getattr(to_module, item, None)
        if found is held:  # (a module above it is already there, with all it holds)
            return
        if held is None:
            held = nn.Module()
            setattr(to_module, item, held)
        from_module, to_module = found, held
    value = getattr(from_module, field)
    autograd = importlib.import_module("autograd")
    if isinstance(value, autograd.Tensor) and not isinstance(value, nn.Parameter):
        to_module.register_buffer(field, value)
    else:
        setattr(to_module, field, value)


def _assign_attr(value, to_module, target):
    *prefix, field = target.split(".")
    for item in prefix:
        held = getattr(to_module, item, None)
        if held is None:
            held = nn.Module()
            setattr(to_module, item, held)
        to_module = held
    autograd = importlib.import_module("autograd")
    if isinstance(value, autograd.Tensor) and not isinstance(value, nn.Parameter):
        to_module.register_buffer(field, value)
    else:
        setattr(to_module, field, value)


class GraphModule(nn.Module):
    """``GraphModule(root, graph, class_name="GraphModule")``: ``root`` a module (what the graph reads is copied
    from it) or a dict from dotted paths to modules and tensors."""

    def __new__(cls, *args, **kwargs):
        # a class of its own for each instance (its forward is set on it), below the first class in cls's order
        # that is not such a class of its own (GraphModule, or a program's subclass of it)
        base = next(t for t in cls.__mro__ if not t.__dict__.get("_one_instance's", False))

        class GraphModuleImpl(base):
            pass

        setattr(GraphModuleImpl, "_one_instance's", True)
        return super().__new__(GraphModuleImpl)

    def __init__(self, root, graph, class_name="GraphModule"):
        super().__init__()
        type(self).__name__ = class_name
        if isinstance(root, nn.Module):
            self.training = root.training
            for node in graph.nodes:
                if node.op in ("get_attr", "call_module"):
                    _copy_attr(root, self, node.target)
        elif isinstance(root, dict):
            for node in graph.nodes:
                if node.op in ("get_attr", "call_module"):
                    if node.target not in root:
                        raise RuntimeError(f"Node {node} referenced target {node.target} but that target was not "
                                           "provided in ``root``!")
                    _assign_attr(root[node.target], self, node.target)
        else:
            raise RuntimeError("Unsupported type " + str(root) + " passed for root!")
        self.meta = {}
        self.graph = graph

    @property
    def graph(self):
        return self._graph

    @graph.setter
    def graph(self, graph):
        """A new graph (owned by this module from now on), and the forward written from it."""
        if not isinstance(graph, Graph):
            raise AssertionError(f"Expected a Graph, got {type(graph)}")
        self.__dict__["_graph"] = graph
        graph.owning_module = self
        self.recompile()

    @property
    def code(self):
        """The source of the forward this module runs."""
        return self._code

    def recompile(self):
        """The forward written again from the graph (after a pass edited it)."""
        python_code = self._graph.python_code(root_module="self")
        self.__dict__["_code"] = python_code.src
        _SOURCES[0] += 1
        filename = f"<eval_with_key>.{_SOURCES[0]}"
        linecache.cache[filename] = (len(python_code.src), None, python_code.src.splitlines(True), filename)
        namespace = dict(python_code.globals)
        exec(compile(python_code.src, filename, "exec"), namespace)
        type(self).forward = namespace["forward"]
        return python_code

    def __str__(self):
        module = super().__str__()
        return f"{module}\n\n\n{self._code}"

    def print_readable(self, print_output=True):
        text = f"class {type(self).__name__}(torch.nn.Module):\n" + "".join(
            f"    {line}\n" for line in self._code.strip("\n").splitlines())
        if print_output:
            print(text)
        return text

    def __reduce__(self):
        """Pickled (``torch.save(gm)``) as its module state and its graph, and made again from them: its class is
        its own, which pickle could not find by name."""
        state = {key: value for key, value in self.__dict__.items() if key not in ("_graph", "_code")}
        return _rebuilt, (state, self._graph, type(self).__name__)

    def __deepcopy__(self, memo):
        """A copy with its own class, modules, tensors and graph (PyTorch's copies its graph too)."""
        function, (state, graph, class_name) = self.__reduce__()
        return function(copy.deepcopy(state, memo), copy.deepcopy(graph, memo), class_name)

    def __copy__(self):
        result = GraphModule(self, self._graph)
        result.meta = getattr(self, "meta", {})
        return result

    def add_submodule(self, target, m):
        *prefix, field = target.split(".")
        module = self
        for item in prefix:
            held = getattr(module, item, None)
            if held is None:
                held = nn.Module()
                module.add_module(item, held)
            if not isinstance(held, nn.Module):
                return False
            module = held
        module.add_module(field, m)
        return True

    def delete_submodule(self, target):
        *prefix, field = target.split(".")
        module = self
        for item in prefix:
            if not hasattr(module, item):
                return False
            module = getattr(module, item)
        if not hasattr(module, field):
            return False
        delattr(module, field)
        return True

    def delete_all_unused_submodules(self):
        used = set()
        for node in self._graph.nodes:
            if node.op in ("call_module", "get_attr"):
                parts = node.target.split(".")
                used.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        for name, _ in list(self.named_modules()):
            if name and name not in used:
                self.delete_submodule(name)


def _rebuilt(state, graph, class_name):
    """A GraphModule from a pickled or copied one's state (its attributes, submodules, parameters) and graph."""
    root = nn.Module.__new__(nn.Module)
    root.__setstate__(state)
    rebuilt = GraphModule(root, graph, class_name)
    rebuilt.meta = state.get("meta", {})
    return rebuilt
