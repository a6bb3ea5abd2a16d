"""How a tensor is pickled and deep-copied (a mixin of ``Tensor``, tensor.py): its values, flags and
graph attributes, not its live views; a leaf only; tensors that share memory share the copy of it,
as PyTorch's deepcopy copies each storage once."""

from . import backend
from .backend import xp


def _made_bare(cls):
    """A tensor of class ``cls`` before its state is set: what a deepcopy fills (Tensor's own ``__new__`` with no
    arguments, which is object's; not a subclass's, which may take arguments)."""
    return object.__new__(cls)


class Copying:
    """The copy protocol of ``Tensor`` (its only subclass)."""

    __slots__ = ()

    def __getstate__(self):
        """Pickling and copy.deepcopy keep a tensor's values, flags and graph attributes but not the weak
        set of its live views (a weak set cannot be pickled, and those views are not the copy's)."""
        attributes, slots = object.__getstate__(self)
        if attributes and "_views" in attributes:
            attributes = {name: value for name, value in attributes.items() if name != "_views"}
        return attributes, slots

    def __deepcopy__(self, memo):
        """A copy by the default protocol (``__getstate__``), for a leaf; a tensor computed in a graph is refused,
        as PyTorch refuses it (the copy would have to copy or share the graph). Tensors that share memory and are
        copied by one deepcopy (a tensor and its view, in one container or module) share the copy of it, as
        PyTorch's, which copies each storage once. A subclass's ``__torch_function__`` and an entered mode are asked
        first (given ``Tensor.__deepcopy__``), as PyTorch's (common_subclass's NonWrapperTensor copies its state
        there)."""
        from .overrides import handle_torch_function, has_torch_function_unary

        if has_torch_function_unary(self):
            return handle_torch_function(Copying.__deepcopy__, (self,), self, memo)
        if self.grad_fn is not None:
            raise RuntimeError(
                "Only Tensors created explicitly by the user (graph leaves) support the deepcopy protocol at the "
                f"moment (this tensor of shape {tuple(self.shape)} was made by {self.grad_fn.name()}: deepcopy its "
                "detach(), or the leaves it came from). If you were attempting to deepcopy a module, this may be "
                "because of a torch.nn.utils.weight_norm usage.")
        _refuse_a_class_new_empty_does_not_keep(self)
        array = self._data
        if type(array) is xp.ndarray and array.base is not None and id(array) not in memo:
            _copy_within_memory(array, memo)
        _, _, *state = self.__reduce_ex__(4)  # (made bare: a subclass's own __new__ may want arguments)
        import copy  # (here: a deepcopy has loaded it; `import autograd` need not)

        return copy._reconstruct(self, memo, _made_bare, (type(self),), *state)


def _refuse_a_class_new_empty_does_not_keep(tensor):
    """PyTorch deep-copies a tensor of a subclass into ``tensor.new_empty([])`` run with subclasses'
    ``__torch_function__`` off (as its default one runs every function), and refuses a class whose new_empty then
    gives another class: a subclass with neither a new_empty nor a __deepcopy__ of its own. Ours copies otherwise,
    but refuses the same classes."""
    from .overrides import DisableTorchFunctionSubclass
    from .tensor import Tensor

    if type(tensor) is Tensor:
        return
    with DisableTorchFunctionSubclass():
        made = tensor.new_empty([])
    if type(made) is not type(tensor):
        raise RuntimeError(
            "The default implementation of __deepcopy__() for non-wrapper subclasses only works for subclass types "
            "that implement new_empty() and for which that function returns another instance of the same subclass. "
            "You should either properly implement new_empty() for your subclass or override __deepcopy__() if it is "
            "intended behavior for new_empty() to return an instance of a different type.")


def _copy_within_memory(view, memo):
    """deepcopy's copy of a NumPy view: the same elements of the copy of the memory it shows (copied once per
    deepcopy, the first time a tensor showing it is copied: ``memo`` remembers the copy by the memory's id)."""
    owner = backend.memory_owner(view)
    if not (owner.flags.c_contiguous or owner.flags.f_contiguous):  # (no buffer to lay the view on: a copy of its own)
        return
    owner_copy = memo.get(id(owner))
    if owner_copy is None:
        owner_copy = memo[id(owner)] = owner.copy(order="K")  # (the same layout: the view's steps fit it)
        memo.setdefault(id(memo), []).append(owner)  # (kept alive while the memo holds its id, as deepcopy does)
    memo[id(view)] = backend.view_at(owner_copy, backend.address(view) - backend.address(owner), view.shape,
                                     view.dtype, view.strides)
