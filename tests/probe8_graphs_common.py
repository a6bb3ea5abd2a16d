"""What the files of session 8's graph-network probe (tests/test_programs_probe8_graphs_*.py: dense adjacencies, edge
lists) share: ``undirected``, an edge list made symmetric."""


def undirected(edges):
    return edges + [(j, i) for i, j in edges]
