"""Hook registries with handles (``torch.utils.hooks``; also autograd.utils.hooks): what tensor,
node, module, optimizer and state-dict hooks share. A registry is a dict {handle id: hook} in
calling order."""

import itertools


class RemovableHandle:
    """What ``register_*_hook`` returns: ``remove()`` unregisters the hook (also as a
    context manager). ``extra`` dicts or sets keep per-hook flags (with_kwargs, ...)."""

    _ids = itertools.count()

    def __init__(self, hooks, *extra):
        self.id = next(RemovableHandle._ids)
        self.hooks, self.extra = hooks, extra

    def remove(self):
        self.hooks.pop(self.id, None)
        for flags in self.extra:
            flags.discard(self.id) if isinstance(flags, set) else flags.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def add_hook(hooks, hook, prepend=False, *extra):
    """Put ``hook`` in the ordered dict ``hooks`` (first if prepend) and return its handle."""
    handle = RemovableHandle(hooks, *extra)
    hooks[handle.id] = hook
    if prepend:
        hooks_in_order = {handle.id: hook, **{k: v for k, v in hooks.items() if k != handle.id}}
        hooks.clear()
        hooks.update(hooks_in_order)
    return handle
