"""What a graph node shows of the tensors it saved, as PyTorch's nodes show them: ``grad_fn._saved_self``,
``_saved_other`` and ``_saved_result`` (its inputs and output, read back through any saved-tensor hooks), and the
same as ``SavedTensor`` objects (``grad_fn._raw_saved_self``), whose ``register_hooks(pack_hook, unpack_hook)``
puts one saved tensor through hooks of its own. Reading them after a backward pass has freed them raises, as in
PyTorch. A mixin of ``Primitive`` (primitive.py), which keeps what is saved."""

from .backend import xp
from .saved_tensor_hooks import PackedTensor
from .tensor import Tensor

FREED_GRAPH = (
    "Trying to backward through the graph a second time (or directly access saved tensors after they have "
    "already been freed): the first backward() freed the graph behind {op}. Saved intermediate values of the "
    "graph are freed when you call .backward() or autograd.grad(). Specify retain_graph=True if you need to "
    "backward through the graph a second time or if you need to access saved tensors after calling backward."
)


class SavedTensorViews:
    """The saved-tensor properties of a node (``Primitive``: its ``inputs``, ``output_data``, ``saves_inputs``,
    ``saves_output``, ``packed``, ``_unpacked()`` and ``_output_again()``)."""

    # (Properties, not a __getattr__: a class with __getattr__ loses Python's fast attribute reads.)


    # an op of a tensor and a number that keeps the number (x * 2, x / 2.5: PyTorch's MulBackward0 and DivBackward0
    # of a wrapped number): _saved_other shows it as a 0-d tensor of its own type, _saved_self is None
    saves_number = False

    @property
    def _saved_self(self):
        return None if self.saves_number else self._saved(0)

    @property
    def _saved_other(self):
        return self._saved_number() if self.saves_number else self._saved(1)

    @property
    def _saved_result(self):
        return self._saved("result")

    # The same as SavedTensor objects, whose register_hooks(pack_hook, unpack_hook) puts one saved tensor
    # through hooks of its own (PyTorch's grad_fn._raw_saved_self).

    @property
    def _raw_saved_self(self):
        return self._raw_saved(0)

    @property
    def _raw_saved_other(self):
        return self._raw_saved(1)

    @property
    def _raw_saved_result(self):
        return self._raw_saved("result")

    def _raw_saved(self, position):
        self._refuse_unsaved(position, "_raw")
        return SavedTensor(self, position)

    def _refuse_unsaved(self, position, prefix=""):
        """AttributeError where this op saves nothing at ``position`` (an input's index, or 'result')."""
        name = "_saved_result" if position == "result" else ("_saved_self", "_saved_other")[position]
        saved = self.saves_output if position == "result" else self.saves_inputs
        inputs = self.__dict__.get("inputs")  # (None once a backward pass freed it)
        if not saved or (position != "result" and inputs is not None and position >= len(inputs)):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{prefix}{name}'")

    def _saved_number(self):
        """The number operand as PyTorch saved it, a 0-d tensor of the Python number's own type (int64 for 2,
        float64 for 2.5); where the node was made with the number already an array (a backward's own op), that."""
        if self.__dict__.get("inputs") is None:
            raise RuntimeError(FREED_GRAPH.format(op=self.op_name))
        number = self.__dict__.get("number")
        return Tensor._make(xp.asarray(self.c if number is None else number))

    def _saved(self, position):
        self._refuse_unsaved(position)
        inputs = self.__dict__.get("inputs")
        if inputs is None:
            raise RuntimeError(FREED_GRAPH.format(op=self.op_name))
        if position != "result":
            return (self._unpacked()[0] if self.packed else inputs)[position]
        if self.packed:  # (what the unpack hook gave: a tensor of its own)
            return self._output_again(self._unpacked()[1])
        result = self._output_again(self.output_data)
        result._version_cell = self.output_version  # the output itself, as PyTorch's: its writes are counted here
        return result


def saved_input(position):
    """A node's property showing its input at ``position`` under PyTorch's own name for it (MmBackward0's
    ``_saved_mat2``, the second operand; PowBackward2's ``_saved_exponent``), read as ``_saved_self`` is."""
    return property(lambda node: node._saved(position))


def saved_argument(read, overload=None):
    """A node's property showing an argument it keeps (``read(node)``: a dim, keepdim, the input's sizes) under
    PyTorch's name for it (``_saved_dim``); with ``overload``, only a node of that PyTorch overload has it
    (SumBackward1 and MeanBackward1, the reductions over dims, save them; SumBackward0, the sum of all, does not),
    as PyTorch's other nodes lack it."""

    def value(node):
        if overload is not None and not node.name().endswith(f"Backward{overload}"):
            raise AttributeError(f"'{type(node).__name__}' object ({node.name()}) has no saved argument of this name")
        return read(node)

    return property(value)


class SavedTensor:
    """One tensor a node saved, as PyTorch's ``grad_fn._raw_saved_self``. ``register_hooks(pack_hook,
    unpack_hook)``: the node keeps ``pack_hook(tensor)`` from now on, and backward uses
    ``unpack_hook(packed)`` (``saved_tensors_hooks`` for this one tensor; one pair per saved tensor)."""

    def __init__(self, node, position):
        self.node, self.position = node, position

    def register_hooks(self, pack_hook, unpack_hook):
        if not (callable(pack_hook) and callable(unpack_hook)):
            raise TypeError("register_hooks(pack_hook, unpack_hook) takes two callables, got "
                            f"{type(pack_hook).__name__} and {type(unpack_hook).__name__}")
        node = self.node
        if node.__dict__.get("inputs") is None:
            raise RuntimeError(FREED_GRAPH.format(op=node.op_name))
        saved = node.output_data if self.position == "result" else node.inputs[self.position]
        if type(saved) is PackedTensor:
            raise RuntimeError("Calling register_hooks on a saved tensor whose hooks have already been set. "
                               "Hint: only one pair of hooks is allowed at a time.")
        if self.position == "result":
            node.output_data = PackedTensor(node._output_again(saved), (pack_hook, unpack_hook))
        else:
            node.inputs = tuple(PackedTensor(x, (pack_hook, unpack_hook)) if i == self.position else x
                                for i, x in enumerate(node.inputs))
        node.packed = True
