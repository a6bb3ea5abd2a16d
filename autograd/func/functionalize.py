"""``functionalize``: a function whose outputs never alias its inputs (see its docstring)."""

import functools

from ..backend import xp
from ..tensor import Tensor
from ..utils._pytree import tree_flatten, tree_unflatten


def functionalize(func, *, remove="mutations"):
    """PyTorch's ``torch.func.functionalize``: a function with ``func``'s semantics whose outputs never
    alias its inputs. PyTorch rewrites the program without its in-place ops (for compilers) and copies
    any change of an input back to it; in eager execution the values, the gradients and the inputs'
    changes are those of running ``func`` itself, so that is what runs here, and an output that shares
    memory with an input (a view of it) is returned as a copy, as PyTorch's is."""
    if remove not in ("mutations", "mutations_and_views"):
        raise RuntimeError(
            f"functionalize(f, remove='mutations'): received invalid argument for remove={remove}. Valid options "
            "are:\n     remove='mutations': all inplace and out= operators will be removed from the program, and "
            "replaced with their out-of-place equivalents.\n     remove='mutations_and_views': In addition to the "
            "above, all aliasing operators {view} will be replaced with their non-aliasing counterparts, "
            "{view}_copy.\n")

    @functools.wraps(func)
    def functionalized(*args, **kwargs):
        inputs = [x._data for x in tree_flatten((args, kwargs))[0] if isinstance(x, Tensor)]
        leaves, spec = tree_flatten(func(*args, **kwargs))
        return tree_unflatten([x.clone() if isinstance(x, Tensor) and any(xp.may_share_memory(x._data, i)
                                                                          for i in inputs) else x
                               for x in leaves], spec)

    return functionalized
