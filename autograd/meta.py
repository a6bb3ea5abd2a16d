"""The ``meta`` device: tensors with a shape and a dtype and no values, as PyTorch's.

Programs use it to build a model without memory (``with torch.device("meta"): model = Net()``) and
then give it memory (``model.to_empty(device="cpu")``, ``load_state_dict(..., assign=True)``), or to
keep a skeleton for ``torch.func.functional_call`` (``copy.deepcopy(model).to("meta")``).

A meta tensor's array is a ``MetaArray``: every element is one zero in memory (no memory grows
with the shape) and it is read-only. Its shape and dtype serve what reads only them, and a view of
it (a slice, a transpose, a reshape) is one too; the initialisers' in-place writes do nothing, as
PyTorch's meta kernels do. An op on meta tensors (a causal mask's ``triu`` in a constructor) gives a
meta tensor of the op's shape and dtype: it runs on the zeros, and what it computes is never read.
Reading values (``item()``, ``tolist()``) refuses, as PyTorch's does.
"""

import numpy


class MetaArray(numpy.ndarray):
    """An array with a shape and a dtype and no values (see the module's docstring)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _shape_of(getattr(ufunc, method), ufunc.__name__, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _shape_of(func, func.__name__, args, kwargs)

    def copy(self, order="C"):
        return meta_array(self.shape, self.dtype)

    def astype(self, dtype, *args, **kwargs):
        return meta_array(self.shape, dtype)

    def __deepcopy__(self, memo):
        return self.copy()

    def __reduce__(self):  # (pickled as what it is: a shape and a dtype)
        return meta_array, (self.shape, self.dtype)

    def item(self, *args):
        raise RuntimeError("Tensor.item() cannot be called on meta tensors")

    __bool__ = item  # (bool(t) of a meta tensor asks its one value: PyTorch's item() error)

    def tolist(self):
        raise NotImplementedError("Cannot copy out of meta tensor; no data!")


def meta_array(shape, dtype):
    """The array of a meta tensor of ``shape`` and ``dtype``: one zero, seen at every position. NumPy's, under
    any array module: it holds no memory to put on a GPU, and only NumPy's arrays take a subclass."""
    return numpy.broadcast_to(numpy.zeros((), dtype=dtype), tuple(shape)).view(MetaArray)


def _shape_of(compute, name, args, kwargs):
    """What ``compute`` makes of meta arrays, as meta arrays: it runs on their zeros, and each array it returns
    becomes a meta array of that shape and dtype, so that no value computed from no values is ever read (PyTorch's
    meta kernels infer the shapes instead). A write into a meta array (``out=``) writes nothing."""
    arguments = _bare_all(args)
    keywords = {key: _bare_all(value) for key, value in kwargs.items()}
    if isinstance(keywords.get("out"), tuple):  # (a meta output is read-only: computed into new memory instead)
        keywords["out"] = tuple(None if type(o) is MetaArray else o for o in kwargs["out"])
        if all(o is None for o in keywords["out"]):
            del keywords["out"]
    with numpy.errstate(all="ignore"):
        try:
            result = compute(*arguments, **keywords)
        except Exception as error:  # (zeros in place of values: a solver finds them singular, say)
            raise NotImplementedError(f"'{name}' of a meta tensor: meta tensors have a shape and a dtype but no "
                                      f"values, and this op's shape could not be worked out on them ({error}). Give "
                                      "the tensors memory first: module.to_empty(device='cpu') and initialise them, "
                                      "or load_state_dict(state, assign=True)") from None
    return _meta_all(result)


def _bare_all(value):
    """Meta arrays (alone, or in a tuple or list) as the plain arrays of zeros they are."""
    if type(value) is MetaArray:
        return value.view(numpy.ndarray)
    if isinstance(value, (tuple, list)):
        return type(value)(_bare_all(item) for item in value)
    return value


def _meta_all(value):
    """Arrays (alone, or in a tuple or list) as meta arrays of their shapes and dtypes."""
    if isinstance(value, (numpy.ndarray, numpy.generic)) and type(value) is not MetaArray:
        return meta_array(numpy.shape(value), value.dtype)
    if isinstance(value, (tuple, list)):
        return type(value)(_meta_all(item) for item in value)
    return value
