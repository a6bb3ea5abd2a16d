import importlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", deadline=None, derandomize=True, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_collection_modifyitems(config, items):
    """Tests marked `torch` skip cleanly where PyTorch is not installed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        skip = pytest.mark.skip(reason="PyTorch is not installed (pip install 'chainrule[reference]')")
        for item in items:
            if "torch" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(params=["autograd", pytest.param("torch", marks=pytest.mark.torch)])
def T(request):
    """The library under test in the tests ported from PyTorch's suite (tests/test_ported_*.py): chainrule's
    `autograd`, then PyTorch itself (skipped where it is not installed), against the same expectations."""
    return importlib.import_module(request.param)


@pytest.fixture
def warn_always(T):
    """Every warning each time (PyTorch gives some of these once per process),
    in the library under test `T`."""
    before = T.is_warn_always_enabled()
    T.set_warn_always(True)
    yield
    T.set_warn_always(before)


@pytest.fixture(autouse=True)
def _subclass_protocol_scoped_to_its_test():
    """A subclass of Tensor that takes part in calls switches every function and method to a dispatching wrapper
    for the rest of the process (autograd/overrides.py). A program keeps it; here each test gets the plain
    functions again, so the suite runs the path a program without subclasses runs (test files that define a
    subclass at their top level would otherwise switch the whole run, at collection)."""
    yield
    import sys

    overrides = sys.modules.get("autograd.overrides")
    if overrides is not None and overrides._installed:
        overrides.uninstall()


@pytest.fixture(autouse=True)
def _pytorch_distribution_validation_restored():
    """torch.compile imports torch._dynamo, which turns PyTorch's distribution validation off for the whole
    process: a later test comparing the libraries' refusals would see PyTorch's validation off and ours on."""
    import sys

    torch = sys.modules.get("torch")
    validate = torch.distributions.Distribution._validate_args if torch is not None else None
    yield
    if torch is not None:
        torch.distributions.Distribution.set_default_validate_args(validate)


@pytest.fixture(autouse=True)
def _pytorch_backend_flags_unfrozen():
    """PyTorch's test internals (torch.testing._internal.common_utils, which the OpInfo, module and optimizer
    database tests import) freeze torch.backends' flags for the whole process when imported (disable_global_flags):
    a later program setting torch.backends.cudnn.benchmark = True would then raise on PyTorch's side only."""
    import sys

    backends = sys.modules.get("torch.backends")
    if backends is not None and backends.flags_frozen():
        # (the switch disable_global_flags turns, a global of the functions' module: PyTorch has no setter back)
        backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
    yield


@pytest.fixture(autouse=True)
def _default_dtype_and_threads_restored():
    """A test that sets the default dtype (either library's) or PyTorch's thread count without putting it back
    would change what every later test makes: each test gets back the ones it started with."""
    import sys

    import autograd

    torch = sys.modules.get("torch")
    ours = autograd.get_default_dtype()
    theirs = (torch.get_default_dtype(), torch.get_num_threads()) if torch is not None else None
    yield
    if autograd.get_default_dtype() is not ours:
        autograd.set_default_dtype(ours)
    if theirs is None and "torch" in sys.modules:  # (the test imported PyTorch: its default is float32)
        torch = sys.modules["torch"]
        theirs = (torch.float32, torch.get_num_threads())
    if theirs is not None:
        if torch.get_default_dtype() is not theirs[0]:
            torch.set_default_dtype(theirs[0])
        if torch.get_num_threads() != theirs[1]:
            torch.set_num_threads(theirs[1])
