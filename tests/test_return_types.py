"""The named tuples ops return (PyTorch's torch.return_types): their type names, fields, printing, pickling and
isinstance, on chainrule and PyTorch alike."""

import pickle

import numpy as np
import pytest

CASES = {  # expression: (type name, fields)
    "x.max(1)": ("max", ("values", "indices")), "x.min(0)": ("min", ("values", "indices")),
    "x.sort(1)": ("sort", ("values", "indices")), "x.topk(1)": ("topk", ("values", "indices")),
    "x.median(1)": ("median", ("values", "indices")), "x.kthvalue(1, 1)": ("kthvalue", ("values", "indices")),
    "x.cummax(0)": ("cummax", ("values", "indices")), "torch.aminmax(x)": ("aminmax", ("min", "max")),
    "torch.linalg.svd(x)": ("linalg_svd", ("U", "S", "Vh")), "torch.linalg.qr(x)": ("linalg_qr", ("Q", "R")),
    "torch.linalg.slogdet(x)": ("linalg_slogdet", ("sign", "logabsdet")), "torch.frexp(x)": ("frexp",
                                                                                              ("mantissa", "exponent")),
    "torch.linalg.eigh(x @ x.mT)": ("linalg_eigh", ("eigenvalues", "eigenvectors")),
}


@pytest.mark.parametrize("expression", list(CASES))
def test_return_types_are_pytorchs(T, expression):
    x = T.tensor([[1.0, 5.0], [3.0, 2.0]])
    result = eval(expression, {"torch": T, "x": x})
    name, fields = CASES[expression]
    assert type(result).__name__ == name and len(result) == len(fields)
    assert isinstance(result, tuple) and isinstance(result, getattr(T.return_types, name))
    first = result[0]
    assert all(getattr(result, field) is value for field, value in zip(fields, result))
    text = repr(result)
    assert text.startswith(f"{T.__name__}.return_types.{name}(\n{fields[0]}=") and text.endswith(")")
    assert text.count("\n") >= len(fields)
    again = pickle.loads(pickle.dumps(result))
    assert type(again) is type(result)
    np.testing.assert_array_equal(again[0].numpy(), first.numpy())
