"""``torch.fx.subgraph_rewriter.replace_pattern`` (also ``torch.fx.replace_pattern``): every place a GraphModule's
graph computes what ``pattern`` computes, rewritten to compute what ``replacement`` does.

Both are traced (functions or modules). A match is anchored at a node computing the pattern's output and found by
walking back through the arguments: a pattern's placeholder matches any value (the same one wherever it is used), any
other pattern node a node of the same op and target whose arguments match in turn (constants equal). The nodes a
match covers, but its anchor, may be used only inside the match. Matches do not overlap; each is replaced by a copy
of the replacement's graph, its placeholders taking the values the pattern's matched."""

from collections import namedtuple

from .graph_module import GraphModule
from .node import Node
from .tracer import symbolic_trace

Match = namedtuple("Match", ["anchor", "nodes_map"])


def _graph_of(function_or_module):
    return function_or_module.graph if isinstance(function_or_module, GraphModule) else \
        symbolic_trace(function_or_module).graph


def _matches(pattern_value, value, nodes_map):
    """Whether ``value`` (an argument in the graph) matches ``pattern_value``, extending ``nodes_map`` (pattern node →
    graph value); on failure ``nodes_map`` may hold partial entries (the caller copies it)."""
    if isinstance(pattern_value, Node):
        if pattern_value in nodes_map:
            return nodes_map[pattern_value] is value
        if pattern_value.op == "placeholder":
            nodes_map[pattern_value] = value
            return True
        if not isinstance(value, Node) or value.op != pattern_value.op or value.target != pattern_value.target:
            return False
        if len(value.args) != len(pattern_value.args) or set(value.kwargs) != set(pattern_value.kwargs):
            return False
        nodes_map[pattern_value] = value
        return all(_matches(p, v, nodes_map) for p, v in zip(pattern_value.args, value.args)) and all(
            _matches(pattern_value.kwargs[key], value.kwargs[key], nodes_map) for key in pattern_value.kwargs)
    if isinstance(pattern_value, (list, tuple)):
        return isinstance(value, (list, tuple)) and len(value) == len(pattern_value) and all(
            _matches(p, v, nodes_map) for p, v in zip(pattern_value, value))
    if isinstance(pattern_value, dict):
        return isinstance(value, dict) and value.keys() == pattern_value.keys() and all(
            _matches(pattern_value[key], value[key], nodes_map) for key in pattern_value)
    return not isinstance(value, Node) and type(value) is type(pattern_value) and value == pattern_value


def replace_pattern(gm, pattern, replacement):
    """Rewrites ``gm`` in place (and recompiles it); the matches replaced, as ``Match(anchor, nodes_map)`` (the
    pattern's output node, and a dict from the pattern's nodes to those they matched)."""
    graph = gm.graph
    pattern_graph = _graph_of(pattern)
    pattern_nodes = pattern_graph.nodes
    pattern_placeholders = [node for node in pattern_nodes if node.op == "placeholder"]
    pattern_anchor = next(node for node in pattern_nodes if node.op == "output").args[0]
    if not isinstance(pattern_anchor, Node):
        raise ValueError("replace_pattern: the pattern must return one value computed from its inputs")
    matches, taken = [], set()
    for node in graph.nodes:
        if node.op in ("placeholder", "output") or node in taken:
            continue
        nodes_map = {}
        if not _matches(pattern_anchor, node, nodes_map):
            continue
        covered = [nodes_map[p] for p in pattern_nodes if p.op not in ("placeholder", "output")]
        if any(n in taken for n in covered) or any(
                user not in covered for n in covered if n is not node for user in n.users):
            continue
        taken.update(covered)
        matches.append(Match(pattern_anchor, nodes_map))
    replacement_graph = _graph_of(replacement)
    replacement_placeholders = [node for node in replacement_graph.nodes if node.op == "placeholder"]
    for _, nodes_map in matches:
        anchor = nodes_map[pattern_anchor]
        value_remap = {placeholder: nodes_map[pattern_placeholder] for placeholder, pattern_placeholder in
                       zip(replacement_placeholders, pattern_placeholders)}
        position = {node: i for i, node in enumerate(graph.nodes)}
        with graph.inserting_before(min(anchor.users, key=position.get)):  # (before its first user, as PyTorch's)
            result = graph.graph_copy(replacement_graph, value_remap)
        anchor.replace_all_uses_with(result)
        for pattern_node in reversed(pattern_nodes):
            matched = nodes_map.get(pattern_node)
            if pattern_node.op not in ("placeholder", "output") and isinstance(matched, Node) and not matched.users:
                graph.erase_node(matched)
    gm.recompile()
    return matches
