"""Hooks on the tensors a node saves for backward, as PyTorch's ``torch.autograd.graph``: ``saved_tensors_hooks``
(pack when saved, unpack when used), ``disable_saved_tensors_hooks``, and ``allow_mutation_on_saved_tensors`` (a
copy of a saved tensor kept before the write door changes it). Their settings are modes of graph.py, per thread;
``PackedTensor`` is what a node keeps of a tensor it saved through them."""

import weakref

from .graph import ModeSwitch, modes


class saved_tensors_hooks(ModeSwitch):
    """Within the block, every tensor a recorded op saves for backward passes through the hooks
    (PyTorch's ``torch.autograd.graph.saved_tensors_hooks``): ``pack_hook(tensor)`` when it is
    saved, whose result the node keeps instead, and ``unpack_hook(packed)`` when backward needs it,
    which must give back a tensor of the same values (offloading, compression, counting). The
    innermost block's hooks apply. The version check that refuses a saved tensor changed in
    place applies to what was saved; the hooks take over from there."""

    def __init__(self, pack_hook, unpack_hook):
        super().__init__(saved_tensor_hooks=(pack_hook, unpack_hook))

    def __enter__(self):
        if modes.saved_tensor_hooks_refused is not None:
            raise RuntimeError(modes.saved_tensor_hooks_refused)
        return super().__enter__()


class disable_saved_tensors_hooks(ModeSwitch):
    """Within the block, saved-tensor hooks are off, and entering a saved_tensors_hooks block
    raises ``error_message`` (PyTorch's, for code that must not have its saved tensors moved)."""

    def __init__(self, error_message):
        super().__init__(saved_tensor_hooks=None, saved_tensor_hooks_refused=error_message)


class allow_mutation_on_saved_tensors(saved_tensors_hooks):
    """Within the block a tensor saved for backward may be changed in place (PyTorch's
    ``torch.autograd.graph.allow_mutation_on_saved_tensors``): before the first write to its memory,
    the write door keeps a copy of what was saved (``preserve_saved``), and backward uses the copy.
    The saved tensors pass through the block's own saved-tensor hooks, so the backward pass must
    run inside the block too: after it, unpacking raises, as in PyTorch."""

    open_blocks = 0  # blocks open in any thread: until one is, the write door asks nothing more

    def __init__(self):
        super().__init__(self._pack, self._unpack)
        self.settings += (("saved_mutation", self),)
        self.saved_in = {}  # id of a version cell (a memory and its views) -> (the cell, weak set of saved tensors)
        self.purge_at = 64  # entries whose saved tensors are all gone (their graph freed) are dropped from here on
        self.closed = False

    def __enter__(self):
        if modes.saved_mutation is not None:
            raise RuntimeError("allow_mutation_on_saved_tensors contexts cannot be nested")
        super().__enter__()
        allow_mutation_on_saved_tensors.open_blocks += 1
        return self

    def __exit__(self, *exc_info):
        allow_mutation_on_saved_tensors.open_blocks -= 1
        self.closed = True
        self.saved_in.clear()
        return super().__exit__(*exc_info)

    def _pack(self, tensor):
        saved = _SavedForMutation(tensor)
        cell = tensor._version_cell
        self.saved_in.setdefault(id(cell), (cell, weakref.WeakSet()))[1].add(saved)
        if len(self.saved_in) > self.purge_at:  # (a training loop in one block keeps nothing of past steps)
            self.saved_in = {key: entry for key, entry in self.saved_in.items() if entry[1]}
            self.purge_at = 2 * len(self.saved_in) + 64
        return saved

    def _unpack(self, saved):
        if self.closed:
            raise AssertionError("Trying to backward outside of the 'allow_mutation_on_saved_tensors' context in "
                                 "which the graph was originally recorded.")
        return saved.tensor if saved.original is None else saved.original

    def preserve(self, tensor):
        """Before ``tensor``'s memory is written: a copy of every saved tensor that shares it."""
        entry = self.saved_in.get(id(tensor._version_cell))
        if entry is not None:
            for saved in entry[1]:
                if saved.original is None:
                    saved.original = saved.tensor._make(saved.tensor._data.copy())


class _SavedForMutation:
    """A tensor saved inside ``allow_mutation_on_saved_tensors``, and the copy taken before it changed.
    What backward reads of it never changes, so its version is fixed."""

    __slots__ = ("tensor", "original", "__weakref__")
    _version_cell = (0, 0)

    def __init__(self, tensor):
        self.tensor, self.original = tensor, None


def preserve_saved(tensor):
    """Called by the write door before it writes ``tensor`` (only while some block is open)."""
    block = modes.saved_mutation
    if block is not None:
        block.preserve(tensor)


class PackedTensor:
    """A tensor a node saved, as the pack hook gave it back; ``unpacked()`` is the tensor again,
    with the saved one's place in the graph (``requires_grad``, ``grad_fn``) and version."""

    __slots__ = ("packed", "unpack", "shape", "dtype", "requires_grad", "grad_fn", "leaf", "_version_cell")

    def __init__(self, tensor, hooks):
        pack, self.unpack = hooks
        writes = tensor._version_cell[1]
        self.packed = pack(tensor)
        if tensor._version_cell[1] != writes:
            raise RuntimeError("A saved tensor pack hook is modifying its input in place. Tensors provided as input "
                               "to pack hook can not be modified by in-place operations as this can lead to "
                               "unexpected side-effects. Please open an issue if you need to perform in-place "
                               "operations on the input to a pack hook.")
        self.shape, self.dtype = tensor.shape, tensor.dtype
        self.requires_grad, self.grad_fn = tensor.requires_grad, tensor.grad_fn
        self.leaf = tensor if tensor.requires_grad and tensor.grad_fn is None else None  # (the node's parent)
        # (a tensor saved under allow_mutation_on_saved_tensors is copied before it changes: no version to check)
        self._version_cell = self.packed._version_cell if type(self.packed) is _SavedForMutation \
            else tensor._version_cell

    def unpacked(self):
        tensor = self.unpack(self.packed)
        if tensor is self.leaf or (tensor.grad_fn is self.grad_fn and self.leaf is None
                                   and tensor.requires_grad == self.requires_grad):
            return tensor  # the saved tensor itself, or one standing where it stood
        if self.leaf is not None and modes.grad_enabled:  # a recorded backward (create_graph): the
            # unpacked values, hanging on the leaf they stand for (their derivative by it is 1)
            return self.leaf + (tensor.detach() - self.leaf.detach())
        again = type(tensor)._make(tensor._data)
        again.requires_grad, again.grad_fn = self.requires_grad, self.grad_fn
        return again
