"""Focused tests of the library fixes made while porting PyTorch's test/test_modules.py (tests/test_ported_modules.py).
Each runs on chainrule and, where it is installed, on PyTorch (fixture `T`)."""

import io

from tests import ported_nn
from tests.ported import same, values

nn = ported_nn.nn  # the fixture


def test_a_lazy_module_drops_its_hook_handles_when_it_becomes_its_plain_class(T, nn):
    module = nn.LazyLinear(2)
    assert hasattr(module, "_initialize_hook") and hasattr(module, "_load_hook")
    x = T.tensor([[1.0, 2.0, 3.0]])
    module(x)
    assert type(module) is nn.Linear
    assert not hasattr(module, "_initialize_hook") and not hasattr(module, "_load_hook")
    # so a checkpoint of the whole module holds no handle: load rebuilds it from the allowed class alone
    buffer = io.BytesIO()
    T.save(module, buffer)
    buffer.seek(0)
    with T.serialization.safe_globals([nn.Linear]):
        loaded = T.load(buffer, weights_only=False)
    same(loaded(x), values(module(x)))
    assert tuple(loaded.weight.shape) == (2, 3)
