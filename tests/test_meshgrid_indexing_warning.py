"""meshgrid without ``indexing=`` gives 'ij' grids with PyTorch's warning that the argument will be
required (Swin Transformer's ``torch.meshgrid([coords_h, coords_w])``); with it, no warning."""

import warnings

import numpy as np
import pytest

import autograd


def test_meshgrid_without_indexing_warns_and_is_ij():
    with pytest.warns(UserWarning, match="it will be required to pass the indexing argument") as record:
        rows, cols = autograd.meshgrid([autograd.arange(2), autograd.arange(3)])
    assert record[0].filename == __file__
    np.testing.assert_array_equal(rows.numpy(), [[0, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(cols.numpy(), [[0, 1, 2], [0, 1, 2]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        autograd.meshgrid(autograd.arange(2), autograd.arange(3), indexing="xy")


def test_the_default_is_pytorchs():
    torch = pytest.importorskip("torch")
    import inspect

    assert inspect.signature(torch.meshgrid).parameters["indexing"].default is None
    assert inspect.signature(autograd.meshgrid).parameters["indexing"].default is None
