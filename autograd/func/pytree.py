"""Pytrees, as ``torch.func`` takes its arguments: a Tensor (or any other leaf), or tuples, lists and dicts of
pytrees. ``tree_flatten`` gives the leaves in order and a spec; ``tree_unflatten`` puts other leaves in their
places."""

def tree_flatten(tree):
    """(the leaves in order, a spec to rebuild the tree with other leaves)."""
    if isinstance(tree, (tuple, list)):
        pairs = [tree_flatten(item) for item in tree]
        return [leaf for leaves, _ in pairs for leaf in leaves], (type(tree), [spec for _, spec in pairs])
    if isinstance(tree, dict):
        pairs = [tree_flatten(item) for item in tree.values()]
        return [leaf for leaves, _ in pairs for leaf in leaves], (dict, (list(tree), [spec for _, spec in pairs]))
    return [tree], None


def tree_unflatten(leaves, spec):
    leaves = iter(leaves)
    return _rebuild(leaves, spec)


def _rebuild(leaves, spec):
    if spec is None:
        return next(leaves)
    kind, children = spec
    if kind is dict:
        keys, specs = children
        return {key: _rebuild(leaves, s) for key, s in zip(keys, specs)}
    items = [_rebuild(leaves, s) for s in children]
    return kind(items) if kind is list else tuple(items) if kind is tuple else kind(*items)

