"""The examples in PyTorch's own docstrings (``>>>`` blocks of torch/_torch_docs.py, _tensor_docs.py, functional.py,
nn/functional.py, nn/modules, linalg and special), run on chainrule, as tests/docexamples_common.py says: each a
program over the modules whose result must equal the literal expected in tests/docexamples_expected.py and, where
PyTorch is installed, PyTorch's result. Tensor attributes, torch.testing, parametrizations (fixed: dim_order's
ambiguity_check, assert_close's types and callable msg, assigning through a parametrization without right_inverse)."""

import numpy as np
import pytest

from .docexamples_common import AREAS, check, example, fill, raised

# ----------------------------------------------------------------------------------------------
# tensor attributes, torch.testing, parametrizations (fixed: dim_order's ambiguity_check, assert_close's
# types and callable msg, assigning through a parametrization without right_inverse)
# ----------------------------------------------------------------------------------------------


@example("attributes")
def dim_order(m):
    torch = m.torch
    x = torch.empty((1, 2, 3, 4))
    return (torch.empty((2, 3, 5, 7)).dim_order(), torch.empty((2, 3, 5, 7)).transpose(1, 2).dim_order(),
            torch.empty((2, 3, 5, 7)).permute(0, 2, 3, 1).dim_order(), x.dim_order(),
            raised(x.dim_order, ambiguity_check=True),
            x.dim_order(ambiguity_check=[torch.contiguous_format, torch.channels_last]),
            raised(x.dim_order, ambiguity_check="ILLEGAL"),
            torch.empty((2, 3, 5, 7)).transpose(1, 2).dim_order(ambiguity_check=True))


@example("attributes")
def assert_close(m):
    torch = m.torch
    expected = torch.tensor([1.0, 2.0, 3.0])
    actual = expected.clone()
    torch.testing.assert_close(m.nn.Parameter(actual), expected)
    torch.testing.assert_close([torch.tensor([1.0]), 2.0, np.array(3.0)], (torch.tensor([1.0]), 2.0, np.array(3.0)))
    torch.testing.assert_close(1.0, 1, check_dtype=False)
    different = torch.tensor([1.0, 4.0, 5.0])
    return (raised(torch.testing.assert_close, m.nn.Parameter(actual), expected, allow_subclasses=False)[0],
            raised(torch.testing.assert_close, actual.numpy(), expected)[0],
            raised(torch.testing.assert_close, torch.tensor(float("nan")), torch.tensor(float("nan")))[0],
            raised(torch.testing.assert_close, different, expected, msg="Argh, the tensors are not close!"),
            raised(torch.testing.assert_close, different, expected, msg=lambda msg: f"Header\n\n{msg}\n\nFooter"),
            raised(torch.testing.assert_close, 1e-9, 1e-10, rtol=0, atol=0)[0])


@example("attributes")
def parametrization_assignment(m):
    torch, nn = m.torch, m.nn
    P = nn.utils.parametrize

    class Symmetric(nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).T  # Return a symmetric matrix

    class SymmetricWithInverse(Symmetric):
        def right_inverse(self, A):
            return A.triu()

    A = torch.arange(25.0).reshape(5, 5)
    A = A + A.T  # A is now symmetric
    plain = fill(m, nn.Linear(5, 5))
    P.register_parametrization(plain, "weight", Symmetric())
    refused = raised(setattr, plain, "weight", A)
    invertible = nn.Linear(5, 5)
    P.register_parametrization(invertible, "weight", SymmetricWithInverse())
    invertible.weight = A
    return plain.weight, refused, torch.allclose(invertible.weight, A), torch.allclose(plain.weight, plain.weight.T)


@pytest.mark.parametrize("name", list(AREAS["attributes"]))
def test_attributes_testing_parametrizations(name):
    check("attributes", name)
