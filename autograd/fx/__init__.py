"""``autograd.fx``, PyTorch's ``torch.fx``: a program's graph recorded by symbolic tracing, edited, and run again as
Python code.

``symbolic_trace(module)`` runs the module's forward once on ``Proxy`` values (tracer.py), recording each operation
as a ``Node`` of a ``Graph`` (node.py, graph.py); a ``GraphModule`` (graph_module.py) runs the code written from
that graph, and is written again (``recompile()``) after a pass edits it. ``Interpreter`` runs a graph node by node
and ``Transformer`` rewrites one (interpreter.py). Not built: PyTorch's pytree handling of structured inputs
(``concrete_args`` with dicts or ``PH``), ``split_module`` and the other passes but ``passes.shape_prop``;
``replace_pattern`` (subgraph_rewriter.py) matches one-output patterns.

The package loads on first use (``autograd.fx``); ``wrap`` and ``Proxy`` load with it, and ``GraphModule`` (which
builds on ``nn``) with its first use."""

import importlib

from .graph import Graph
from .node import Node, map_arg
from .proxy import Attribute, Proxy, TraceError
from .tracer import Tracer, symbolic_trace, wrap

_ON_FIRST_USE = {"GraphModule": ".graph_module", "Interpreter": ".interpreter", "Transformer": ".interpreter",
                 "replace_pattern": ".subgraph_rewriter", "passes": ".passes",
                 "subgraph_rewriter": ".subgraph_rewriter"}


def __getattr__(name):
    """GraphModule, Interpreter and Transformer, which build on nn: loaded by the program that uses them."""
    if name in _ON_FIRST_USE:
        module = importlib.import_module(_ON_FIRST_USE[name], __name__)
        value = module if name in ("passes", "subgraph_rewriter") else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ON_FIRST_USE))


__all__ = ["Attribute", "Graph", "GraphModule", "Interpreter", "Node", "Proxy", "TraceError", "Tracer",
           "Transformer", "map_arg", "replace_pattern", "symbolic_trace", "wrap"]
