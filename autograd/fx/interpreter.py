"""``torch.fx.Interpreter`` and ``Transformer``: a GraphModule's graph run node by node.

``Interpreter(module).run(*args)`` evaluates each node in order, by the method named after its op
(``placeholder``, ``get_attr``, ``call_function``, ``call_method``, ``call_module``, ``output``); a subclass
overrides one of them to observe or change what the nodes compute (count operations, record shapes).
``Transformer`` runs the same methods on proxies, so what they return is recorded into a new graph:
``Transformer(module).transform()`` is the rewritten ``GraphModule``."""

from .. import dispatching
from .graph import Graph
from .graph_module import GraphModule
from .node import map_arg
from .proxy import Proxy
from .tracer import GraphAppendingTracer, _Recording


class Interpreter:
    """Runs ``module``'s graph (``graph``, where given, in its place); ``env`` maps each node run to its value."""

    def __init__(self, module, garbage_collect_values=True, graph=None):
        self.module = module
        self.submodules = dict(module.named_modules())
        self.graph = graph if graph is not None else module.graph
        self.env = {}
        self.garbage_collect_values = garbage_collect_values

    def run(self, *args, initial_env=None, enable_io_processing=True):
        """The graph's output for the inputs ``args`` (a placeholder beyond them takes its default)."""
        self.env = dict(initial_env or {})
        self.args_iter = iter(args)
        for node in self.graph.nodes:
            if node in self.env:
                continue
            self.env[node] = self.run_node(node)
            if node.op == "output":
                return self.env[node]
        return None

    def run_node(self, n):
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        return getattr(self, n.op)(n.target, args, kwargs)

    def placeholder(self, target, args, kwargs):
        if target.startswith("*"):  # (``*args``: the rest of the arguments, as PyTorch's)
            return list(self.args_iter)
        try:
            return next(self.args_iter)
        except StopIteration as error:
            if args:
                return args[0]
            raise RuntimeError(f"Expected positional argument for parameter {target}, but one was not passed in!") \
                from error

    def get_attr(self, target, args, kwargs):
        return self.fetch_attr(target)

    def call_function(self, target, args, kwargs):
        return target(*args, **kwargs)

    def call_method(self, target, args, kwargs):
        self_obj, *args_tail = args
        return getattr(self_obj, target)(*args_tail, **kwargs)

    def call_module(self, target, args, kwargs):
        return self.fetch_attr(target)(*args, **kwargs)

    def output(self, target, args, kwargs):
        return args[0]

    def fetch_attr(self, target):
        """The module's attribute at the dotted path ``target``."""
        found = self.module
        for i, atom in enumerate(target.split(".")):
            if not hasattr(found, atom):
                raise RuntimeError(f"Node referenced nonexistent target {'.'.join(target.split('.')[:i + 1])}")
            found = getattr(found, atom)
        return found

    def fetch_args_kwargs_from_env(self, n):
        return self.map_nodes_to_values(n.args, n), self.map_nodes_to_values(n.kwargs, n)

    def map_nodes_to_values(self, args, n):
        def load(node):
            if node not in self.env:
                raise RuntimeError(f"Node {n} referenced nonexistent value {node}! Run Graph.lint() to diagnose "
                                   "such issues")
            return self.env[node]
        return map_arg(args, load)


class Transformer(Interpreter):
    """An Interpreter whose values are proxies of a new graph: each method's result is recorded there (by default
    the node as it was), and ``transform()`` gives the GraphModule of that graph."""

    def __init__(self, module):
        super().__init__(module)
        self.new_graph = Graph()
        self.tracer = GraphAppendingTracer(self.new_graph)
        self.tracer.root = module

    def placeholder(self, target, args, kwargs):
        default = args[0] if args else None
        return Proxy(self.new_graph.placeholder(target, default_value=default), self.tracer)

    def get_attr(self, target, args, kwargs):
        return self.tracer.create_proxy("get_attr", target, args, kwargs)

    def call_module(self, target, args, kwargs):
        return self.tracer.create_proxy("call_module", target, args, kwargs)

    def call_function(self, target, args, kwargs):
        return self.tracer.create_proxy("call_function", target, args, kwargs)

    def call_method(self, target, args, kwargs):
        return self.tracer.create_proxy("call_method", target, args, kwargs)

    def transform(self):
        """The module rewritten by this transformer's methods (library calls made on proxies inside them are
        recorded too)."""
        with _Recording(self.tracer, dispatching._installed):
            result = super().run()
        if result is not None:
            self.new_graph.output(self.tracer.create_arg(result))
        return GraphModule(self.module, self.new_graph)
