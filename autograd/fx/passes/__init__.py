"""``torch.fx.passes``: ``shape_prop`` (each node's tensor's shape and dtype, recorded by running the graph)."""
