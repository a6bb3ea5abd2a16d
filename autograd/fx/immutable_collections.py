"""``torch.fx.immutable_collections``: the lists and dicts inside a node's ``args`` and ``kwargs``, which refuse
mutation (the node's ``users`` would not follow it); a pass assigns new arguments (``node.args = ...``) instead."""

_HELP_MUTATION = """If you are attempting to modify the kwargs or args of a torch.fx.Node object,
instead create a new copy of it and assign the copy to the node:

    new_args = ...  # copy and mutate args
    node.args = new_args"""


def _no_mutation(self, *args, **kwargs):
    raise TypeError(f"{type(self).__name__!r} object does not support mutation. {_HELP_MUTATION}")


class immutable_list(list):  # noqa: N801 (PyTorch's name)
    """A list that refuses mutation (hashable, as PyTorch's)."""

    __delitem__ = __iadd__ = __imul__ = __setitem__ = _no_mutation
    append = clear = extend = insert = pop = remove = reverse = sort = _no_mutation

    def __hash__(self):
        return hash(tuple(self))

    def __reduce__(self):  # (pickled and copied by its items, not by appending them)
        return (type(self), (tuple(self),))


class immutable_dict(dict):  # noqa: N801 (PyTorch's name)
    """A dict that refuses mutation (hashable, as PyTorch's)."""

    __delitem__ = __ior__ = __setitem__ = _no_mutation
    clear = pop = popitem = setdefault = update = _no_mutation

    def __hash__(self):
        return hash(frozenset(self.items()))

    def __reduce__(self):
        return (type(self), (tuple(self.items()),))


__all__ = ["immutable_dict", "immutable_list"]
