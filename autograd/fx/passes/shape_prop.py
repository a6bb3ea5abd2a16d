"""``torch.fx.passes.shape_prop``: ``ShapeProp(gm).propagate(*args)`` runs the graph and writes into each node's
``meta["tensor_meta"]`` the shape, dtype, requires_grad and stride of the tensor it computed (a tuple or list of them
for a node computing several), as PyTorch's."""

from collections import namedtuple

from ...tensor import Tensor
from ..interpreter import Interpreter

TensorMetadata = namedtuple("TensorMetadata", ["shape", "dtype", "requires_grad", "stride", "memory_format",
                                               "is_quantized", "qparams"])


def _extract_tensor_metadata(result):
    return TensorMetadata(result.shape, result.dtype, result.requires_grad, result.stride(), None, False, {})


class ShapeProp(Interpreter):
    def run_node(self, n):
        result = super().run_node(n)
        found = []

        def extract(value):
            if isinstance(value, Tensor):
                found.append(True)
                return _extract_tensor_metadata(value)
            if isinstance(value, (list, tuple)):
                items = [extract(item) for item in value]  # (a named tuple, torch.max's, rebuilt by its fields)
                return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
            return value

        meta = extract(result)
        if found:
            n.meta["tensor_meta"] = meta
        n.meta["type"] = type(result)
        return result

    def propagate(self, *args):
        return super().run(*args)


__all__ = ["ShapeProp", "TensorMetadata"]
