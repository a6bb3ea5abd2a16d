"""``Parameter``: a tensor that a Module trains (it requires grad, and a Module
that holds it as an attribute lists it in ``parameters()``)."""

from autograd import Tensor


class Parameter(Tensor):
    _prints_as_tensor = True  # its body prints as tensor(...), not Parameter(...), as in PyTorch

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = []
        super().__init__(data._data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
