"""`import autograd, nn, optim` loads only what a training loop of an MLP needs. The teaching
tools (graphviz, the trace, viz, Value), the datasets and transforms, data-parallel training,
the layers beyond the MLP's, saving and loading, __version__ (importlib.metadata) and
numpy.random load on first use (PEP 562), and then work as before: every public name is
where it was, in dir(), in `__all__` and `from ... import *`, and pickles as before."""

import json
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest

# what `import autograd, nn, optim` leaves out (each loads on first use)
LAZY = ["graphviz", "html", "importlib.metadata", "numpy.polynomial", "numpy.random",
        "autograd.viz", "autograd.trace", "autograd.value", "autograd.datasets", "autograd.transforms",
        "autograd.data", "autograd.utils", "autograd.utils.data", "autograd.distributed", "autograd.serialization",
        "autograd.version",
        "autograd.linalg", "autograd.special", "autograd.autograd.functional", "autograd.jit", "autograd.futures",
        "autograd.cpu", "autograd.masked", "autograd.fx", "nn.grad", "nn.cross_map_lrn",
        "nn.attention", "nn.conv", "nn.ctc", "nn.functional_conv", "nn.interpolation", "nn.lecture", "nn.padding",
        "nn.parallel", "nn.pooling", "nn.recurrent_layers", "nn.rnn", "nn.sparse", "nn.sync_batchnorm",
        "nn.transformer", "nn.utils", "nn.normalization", "nn.dropout", "optim.lr_scheduler", "optim.adagrad",
        "optim.rmsprop", "optim.pytorch_helpers",
        # the op modules autograd.ops leaves out (autograd/ops/deferred.py)
        "autograd.ops.lu", "autograd.ops.decompositions", "autograd.ops.svd", "autograd.ops.inverses",
        "autograd.ops.householder", "autograd.ops.triangular", "autograd.ops.matrix_exp", "autograd.ops.gamma",
        "autograd.ops.bessel", "autograd.ops.zeta", "autograd.ops.incomplete_gamma", "autograd.ops.standard_gamma",
        "autograd.ops.dirichlet_draw", "autograd.ops.dlpack", "autograd.ops.hashing", "autograd.ops.quantization",
        "autograd.ops.short_time_fourier", "autograd.ops.fourier", "autograd.ops.scaled_products",
        "autograd.ops.pooling", "autograd.ops.convolution", "autograd.ops.cumulative", "autograd.ops.splitting",
        "autograd.ops.diagonals", "autograd.ops.statistics", "autograd.ops.regions", "autograd.ops.masking",
        "autograd.ops.reshaping_in_place", "autograd.ops.sorting", "autograd.ops.tie_orders",
        "autograd.ops.contractions", "autograd.ops.sampling", "autograd.ops.norms", "autograd.ops.half_linalg",
        "autograd.ops.distances", "autograd.ops.normalization", "autograd.ops.numbers", "autograd.ops.bilinear",
        "autograd.ops.embedding", "autograd.ops.pixel_shuffle", "autograd.ops.runtime_checks", "autograd.ops.strided",
        "autograd.ops.hardswish", "autograd.ops.activations", "autograd.ops.piecewise_linear",
        "autograd.ops.gelu_tanh", "autograd.ops.mish", "autograd.ops.arranging", "autograd.ops.extrema",
        "autograd.ops.index_vectors",
        "autograd.ops.normal_tails", "autograd.ops.indexing", "autograd.printing",
        "autograd.dispatching"]
PACKAGES = ["autograd", "autograd.autograd", "nn", "nn.functional", "optim"]  # the ones with names on first use


def run_fresh(code):
    """What ``code``, run in a fresh interpreter, prints last (as JSON)."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def loaded_after(code):
    """The LAZY modules in sys.modules after running ``code`` in a fresh interpreter, less those
    that ``import numpy`` loads by itself (NumPy 1.x imports numpy.random)."""
    script = "import sys, json\n{}\nprint(json.dumps([m for m in {!r} if m in sys.modules]))"
    by_numpy = set(run_fresh(script.format("import numpy", LAZY)))
    return [m for m in run_fresh(script.format(code, LAZY)) if m not in by_numpy]


def test_import_loads_none_of_them():
    assert loaded_after("import autograd, nn, optim") == []


@pytest.mark.parametrize("code, expected", [
    ("import autograd; autograd.viz", ["graphviz", "autograd.viz", "autograd.value"]),
    ("from autograd import viz", ["graphviz", "autograd.viz", "autograd.value"]),
    ("import autograd.trace", ["graphviz", "html", "autograd.viz", "autograd.trace", "autograd.value"]),
    ("import autograd; autograd.datasets", ["autograd.datasets"]),
    ("from autograd import transforms", ["autograd.transforms"]),
    ("import autograd; autograd.__version__", ["importlib.metadata", "autograd.version"]),
    ("import autograd; autograd.rand(2)", ["numpy.random"]),
    ("import autograd; autograd.linalg.norm", ["autograd.linalg", "autograd.ops.lu", "autograd.ops.decompositions",
                                                "autograd.ops.svd", "autograd.ops.inverses", "autograd.ops.householder",
                                                "autograd.ops.triangular", "autograd.ops.matrix_exp",
                                                "autograd.ops.cumulative", "autograd.ops.splitting",
                                                "autograd.ops.diagonals", "autograd.ops.sorting",
                                                "autograd.ops.tie_orders", "autograd.ops.contractions",
                                                "autograd.ops.norms", "autograd.ops.half_linalg",
                                                "autograd.ops.arranging", "autograd.ops.extrema",
                                                "autograd.ops.index_vectors", "autograd.ops.indexing"]),
    ("import nn; nn.SyncBatchNorm", ["autograd.distributed", "autograd.serialization", "nn.sync_batchnorm",
                                     "nn.normalization", "autograd.ops.normalization"]),
    ("from nn.parallel import DistributedDataParallel", ["autograd.distributed", "autograd.serialization",
                                                         "nn.parallel"]),
    # (zero padding: autograd.constant_pad_nd)
    ("import nn; nn.Conv2d", ["nn.conv", "nn.functional_conv", "autograd.ops.pooling", "autograd.ops.convolution"]),
    ("from nn import LSTM", ["nn.rnn", "nn.recurrent_layers", "nn.utils", "autograd.ops.splitting"]),
    ("import autograd; autograd.eye(2).svd()", ["autograd.ops.svd", "autograd.ops.decompositions",
                                                "autograd.ops.inverses", "autograd.ops.triangular",
                                                "autograd.ops.cumulative", "autograd.ops.splitting",
                                                "autograd.ops.norms", "autograd.ops.half_linalg",
                                                "autograd.ops.arranging", "autograd.ops.extrema",
                                                "autograd.ops.index_vectors", "autograd.ops.indexing"]),
    ("import autograd; autograd.Tensor.lgamma", ["autograd.ops.gamma"]),
    ("import autograd; autograd.arange(3).sort()", ["autograd.ops.sorting", "autograd.ops.tie_orders",
                                                    "autograd.ops.indexing"]),
    ("import nn; nn.functional.pad", ["nn.padding"]),
    ("import optim; optim.lr_scheduler.StepLR", ["optim.lr_scheduler", "optim.pytorch_helpers"]),
    ("import optim; optim.RMSprop", ["optim.rmsprop"]),
    ("from optim import Adagrad", ["optim.adagrad"]),
    # (fused Adam: utils._foreach_utils, not the data pipeline)
    ("import autograd, nn, optim; m = nn.Linear(2, 2); m(autograd.ones(1, 2)).sum().backward()\n"
     "optim.Adam(m.parameters(), fused=True).step()",
     ["numpy.random", "autograd.ops.sampling", "autograd.utils", "optim.pytorch_helpers"]),
    ("from optim.optimizer import _use_grad_for_differentiable", ["optim.pytorch_helpers"]),
    ("import nn; nn.Dropout", ["nn.dropout"]),
    ("from nn import LayerNorm", ["nn.normalization"]),  # (autograd.ops.normalization: with the first call)
    ("import nn; nn.functional.layer_norm", ["autograd.ops.normalization"]),
    ("import autograd, nn; nn.functional.normalize(autograd.ones(2, 2))",
     ["autograd.ops.norms", "autograd.ops.half_linalg", "autograd.ops.distances", "autograd.ops.arranging",
      "autograd.ops.extrema", "autograd.ops.index_vectors", "autograd.ops.indexing"]),
    ("import autograd; autograd.ones(2).norm()", ["autograd.ops.norms", "autograd.ops.half_linalg",
                                                  "autograd.ops.extrema"]),
    # (nn.sparse holds EmbeddingBag: embedding_bags sorts)
    ("import nn; nn.Embedding", ["nn.sparse", "autograd.ops.embedding", "autograd.ops.sorting",
                                 "autograd.ops.tie_orders", "autograd.ops.indexing"]),
    ("import nn; nn.functional.embedding", ["autograd.ops.embedding"]),
    ("import autograd; autograd.ones(2).frexp()", ["autograd.ops.numbers"]),
    ("import autograd; autograd._check(True)", ["autograd.ops.runtime_checks"]),
    ("import nn; nn.functional.pixel_shuffle", ["autograd.ops.pixel_shuffle"]),
    ("import autograd; autograd.arange(4).as_strided((2,), (2,))", ["autograd.ops.strided"]),
    ("import autograd; autograd.empty_strided((2, 2), (1, 2))", ["autograd.ops.strided"]),
    ("import autograd, nn; nn.Hardswish()(autograd.ones(2))",
     ["autograd.ops.hardswish", "autograd.ops.piecewise_linear"]),
    ("import autograd; autograd.arange(3).flip(0)", ["autograd.ops.arranging", "autograd.ops.index_vectors",
                                                     "autograd.ops.indexing"]),
    ("import autograd; autograd.ones(2, 3).amax(1)", ["autograd.ops.extrema"]),
    ("import autograd; autograd.ones(2, 2).gather(1, autograd.zeros(2, 1, dtype=autograd.int64))",
     ["autograd.ops.indexing"]),
    ("import autograd; autograd.ones(3).index_select(0, autograd.tensor([0]))",
     ["autograd.ops.index_vectors", "autograd.ops.indexing"]),
    ("import autograd; autograd.ones(2).erfinv()", ["autograd.ops.normal_tails"]),
    ("import autograd; x = autograd.zeros(3); x[autograd.tensor([True, False, True])] = 1.0", []),
    ("import autograd; autograd.selu(autograd.ones(2))", ["autograd.ops.activations", "autograd.ops.piecewise_linear"]),
    ("import autograd, nn; nn.functional.gelu(autograd.ones(2))",
     ["autograd.ops.activations", "autograd.ops.piecewise_linear"]),
    ("import autograd, nn; nn.functional.gelu(autograd.ones(2), approximate='tanh')", ["autograd.ops.gelu_tanh"]),
    ("import autograd, nn; nn.functional.leaky_relu(autograd.ones(2))", ["autograd.ops.piecewise_linear"]),
    ("import nn; nn.functional.SELU_ALPHA", ["autograd.ops.activations", "autograd.ops.piecewise_linear"]),
    ("import autograd, nn; nn.ReLU()(autograd.ones(2)); nn.Sigmoid()(autograd.ones(2))", []),
    ("import autograd, nn; nn.functional.bilinear(autograd.ones(1, 2), autograd.ones(1, 2), autograd.ones(1, 2, 2))",
     ["autograd.ops.bilinear"]),
])
def test_first_use_loads_the_tool(code, expected):
    assert loaded_after(code) == [m for m in LAZY if m in expected]


LAZY_NAMES = """
import importlib, inspect, json, sys
packages = [importlib.import_module(name) for name in {packages!r}]
loaded = set(sys.modules)
report = {{}}
for package in packages:  # the names dir() lists that the package does not hold yet: loaded on first use
    for name in sorted(set(dir(package)) - set(vars(package))):
        value = getattr(package, name)
        # (a wrapper's home is its op's: autograd.<name> is named for pickle, ops/names.py's pickled_by_name)
        source = inspect.unwrap(value) if callable(value) and not isinstance(value, type) else value
        home = getattr(source, "__module__", None) or getattr(value, "__name__", None)
        report[f"{{package.__name__}}.{{name}}"] = [home, home in loaded, name in vars(package)]
print(json.dumps(report))
"""


def test_every_name_on_first_use_resolves_loads_its_module_and_stays():
    report = run_fresh(LAZY_NAMES.format(packages=PACKAGES))
    assert {"autograd.viz", "autograd.Value", "autograd.load", "autograd.__version__", "nn.Conv2d", "nn.LSTM",
            "nn.Embedding", "nn.functional.conv2d", "autograd.autograd.functional", "optim.lr_scheduler"} <= set(report)
    import autograd
    from autograd.ops import deferred
    from autograd.ops.names import FUNCTIONS

    made_on_first_use = []  # autograd.<op> of an op module loaded at import: only its wrapper is made then
    for name, (home, was_loaded, kept) in report.items():
        package, _, attribute = name.rpartition(".")
        if package == "autograd" and attribute in FUNCTIONS and attribute not in deferred.FUNCTIONS:
            made_on_first_use.append(attribute)
        elif home is not None and home.split(".")[0] in ("autograd", "nn", "optim"):
            assert not was_loaded, f"{name} comes from {home}, which `import` had already loaded"
        assert kept, f"{name} was not kept in its package after the first use"
    assert {"exp", "relu", "sum", "mean", "reshape", "clamp", "matmul"} <= set(made_on_first_use)
    assert autograd.exp.__module__ == "autograd" and autograd.exp.__qualname__ == "exp"  # (pickled by that name)


def test_lazy_names_are_the_modules_and_objects():
    import importlib

    import autograd
    import nn
    import optim

    for name in ("viz", "trace", "datasets", "transforms", "utils", "data", "distributed", "linalg", "special"):
        assert getattr(autograd, name) is importlib.import_module(f"autograd.{name}")
        assert name in dir(autograd)
    assert autograd.utils.data.DataLoader.__name__ == "DataLoader"
    assert autograd.Value is importlib.import_module("autograd.value").Value
    assert autograd.load is importlib.import_module("autograd.serialization").load
    assert autograd.linalg.norm(autograd.tensor([3.0, 4.0])).item() == 5.0
    assert autograd.autograd.functional.jacobian is importlib.import_module("autograd.autograd.functional").jacobian
    assert nn.Conv2d is importlib.import_module("nn.conv").Conv2d
    # (==: once a subclass of Tensor that takes part in calls is defined, F's functions are dispatching wrappers,
    # equal to the functions they wrap: autograd/overrides.py)
    assert nn.functional.conv2d == importlib.import_module("nn.functional_conv").conv2d
    assert optim.lr_scheduler.StepLR.__name__ == "StepLR"


def test_nn_functional_gives_every_public_function_of_its_files():
    """F.conv2d, F.pad, F.ctc_loss, ...: each file's public functions, but its helpers."""
    import importlib
    import inspect

    import nn.functional as F

    missing = set()
    for source in ("attention", "ctc", "functional_conv", "interpolation", "losses", "padding", "sparse"):
        module = importlib.import_module(f"nn.{source}")
        missing |= {name for name, value in vars(module).items() if inspect.isfunction(value)
                    and value.__module__ == module.__name__ and not name.startswith("_") and name not in dir(F)}
    assert missing == set()


@pytest.mark.parametrize("package", PACKAGES + ["autograd.linalg", "autograd.special", "optim.lr_scheduler",
                                                "autograd.utils.data", "autograd.autograd.functional"])
def test_every_public_name_resolves(package):
    """Every name of ``__all__`` where a module defines it, and every name dir() lists (None only
    where it is the value: autograd.newaxis, as torch.newaxis)."""
    import importlib

    module = importlib.import_module(package)
    names = set(dir(module)) | set(getattr(module, "__all__", ()))
    for name in sorted(names):
        assert getattr(module, name) is not None or name.startswith("_") or name == "newaxis", f"{package}.{name}"
    for name in getattr(module, "__all__", ()):
        assert not name.startswith("_")


@pytest.mark.parametrize("package", ["autograd", "nn", "optim", "nn.functional"])
def test_import_star_takes_every_public_name(package):
    import importlib

    module = importlib.import_module(package)
    namespace = {}
    exec(f"from {package} import *", namespace)  # noqa: S102
    # every public name but the submodules that later imports bound as attributes (nn.conv, ...)
    public = {name for name in dir(module) if not name.startswith("_")
              and not (isinstance(getattr(module, name), types.ModuleType) and name not in module.__all__)}
    assert public <= set(namespace)
    assert set(namespace) - {"__builtins__"} == set(module.__all__)
    for name in public:
        assert namespace[name] is getattr(module, name)


def test_import_star_from_nn_in_a_fresh_interpreter():
    code = ("import json\nfrom nn import *\nprint(json.dumps([Conv2d.__module__, LSTM.__module__, Linear.__module__,"
            " Embedding.__module__, MaxPool2d.__module__, functional.pad.__module__]))")
    assert run_fresh(code) == ["nn.conv", "nn.rnn", "nn.linear", "nn.sparse", "nn.pooling", "nn.padding"]


def test_tensor_methods_and_functions_exist_from_the_start():
    """Every op's Tensor method and autograd.<name> function is there right after `import autograd`."""
    code = """
import json
import autograd
from autograd.ops.names import FUNCTIONS, INPLACE, METHODS
print(json.dumps([[n for n in list(METHODS) + list(INPLACE) if not hasattr(autograd.Tensor, n)],
                  [n for n in FUNCTIONS if not hasattr(autograd, n)], len(METHODS), len(FUNCTIONS)]))
"""
    missing_methods, missing_functions, methods, functions = run_fresh(code)
    assert missing_methods == [] and missing_functions == []
    assert methods > 250 and functions > 250


def test_unknown_name_is_an_attribute_error():
    import autograd
    import nn
    import nn.functional
    import optim

    for module, name in ((autograd, "no_such_thing"), (nn, "no_such_layer"), (nn.functional, "no_such_function"),
                         (optim, "no_such_optimizer"), (autograd.autograd, "no_such_tool")):
        with pytest.raises(AttributeError, match=f"module '{module.__name__}' has no attribute '{name}'"):
            getattr(module, name)
        assert not hasattr(module, name)


def test_lazy_nn_names():
    import nn
    from nn.parallel import DistributedDataParallel
    from nn.sync_batchnorm import SyncBatchNorm

    assert nn.SyncBatchNorm is SyncBatchNorm
    assert nn.parallel.DistributedDataParallel is DistributedDataParallel
    assert {"SyncBatchNorm", "parallel", "Conv2d", "LSTM", "Embedding", "utils"} <= set(dir(nn))


def test_models_of_lazy_layers_pickle_and_load_in_a_fresh_interpreter(tmp_path):
    """A pickled model names its classes' modules (nn.conv, nn.rnn), which unpickling imports;
    a state_dict saved with autograd.save loads into a model built in another interpreter."""
    import autograd
    import nn

    autograd.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
    x = autograd.randn(1, 1, 4, 4)
    expected = model(x).tolist()
    with open(tmp_path / "model.pkl", "wb") as file:
        pickle.dump(model, file)
    autograd.save(model.state_dict(), tmp_path / "weights.pt")
    autograd.save(x, tmp_path / "x.pt")
    code = f"""
import json, pickle
with open({str(tmp_path / "model.pkl")!r}, "rb") as file:
    unpickled = pickle.load(file)
import autograd, nn
x = autograd.load({str(tmp_path / "x.pt")!r})
autograd.manual_seed(1)
rebuilt = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
rebuilt.load_state_dict(autograd.load({str(tmp_path / "weights.pt")!r}))
print(json.dumps([unpickled(x).tolist(), rebuilt(x).tolist()]))
"""
    from_pickle, from_state_dict = run_fresh(code)
    np.testing.assert_allclose(from_pickle, expected, rtol=1e-6)
    np.testing.assert_allclose(from_state_dict, expected, rtol=1e-6)


def test_the_default_generator_made_on_first_draw_is_seeded_as_before():
    import autograd
    from autograd.random import DEFAULT_SEED, Generator

    words = np.random.MT19937()
    words._legacy_seeding(DEFAULT_SEED & 0xFFFFFFFF)  # (PyTorch's default seed, as its mt19937 takes it)
    pairs = words.random_raw(6)
    reference = (((pairs[0::2] << np.uint64(32)) | pairs[1::2]) & np.uint64(2**53 - 1)) * 2.0**-53
    np.testing.assert_array_equal(Generator().numpy.random(3), reference)
    fresh = run_fresh("import json, autograd\nprint(json.dumps(autograd.rand(3, dtype=autograd.float64).tolist()))")
    np.testing.assert_array_equal(fresh, autograd.rand(3, generator=Generator(), dtype=autograd.float64).numpy())
    g = Generator().manual_seed(5)
    state = g.get_state()  # before any draw: the state of the seed
    first = autograd.rand(4, generator=g)
    g.set_state(state)
    assert autograd.rand(4, generator=g).tolist() == first.tolist()
    assert autograd.rand(4, generator=Generator().manual_seed(5)).tolist() == first.tolist()


def test_erf_is_right_and_loads_nothing():
    import math

    import autograd

    x = np.linspace(-7, 7, 57)
    expected = [math.erf(v) for v in x]
    np.testing.assert_allclose(autograd.erf(autograd.tensor(x)).numpy(), expected, rtol=1e-14, atol=1e-15)
    # (Cody's rational approximations: fixed coefficients, no table fitted with numpy.polynomial on first use)
    assert loaded_after("import autograd; autograd.erf(autograd.ones(2))") == []


def test_save_and_load_after_lazy_json(tmp_path):
    import autograd

    path = tmp_path / "t.pt"
    autograd.save({"w": autograd.arange(3.0)}, path)
    assert autograd.load(path)["w"].tolist() == [0.0, 1.0, 2.0]


def test_version_on_first_use():
    import importlib.metadata

    import autograd

    assert autograd.__version__ == f"2.13.0+chainrule.{importlib.metadata.version('chainrule')}"
    assert run_fresh("import json, autograd\nprint(json.dumps(autograd.__version__))") == autograd.__version__


def test_version_module_answers_as_torch_version():
    import autograd

    assert autograd.version.__version__ == autograd.__version__ and autograd.version.debug is False
    assert autograd.version.cuda is None or autograd.backend.xp.__name__ == "cupy"  # a CPU build says None


def test_autograd_imports_nothing_built_on_it():
    """Arrows point down: no module of autograd imports nn, optim or the command-line application, at its top
    or inside a function (what nn builds for autograd's names it registers there: autograd.ao.quantization)."""
    import ast
    import pathlib

    above = {"nn", "optim", "chainrule"}
    root = pathlib.Path(__file__).parent.parent / "autograd"
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module or ""]
            else:
                continue
            found += [f"{path.relative_to(root.parent)}:{node.lineno} {m}" for m in modules
                      if m.split(".")[0] in above]
    assert not found, found


def test_names_nn_holds_for_autograd_read_once_nn_is_imported():
    """autograd.ao.quantization's modules are nn's: before `import nn` a name says to import it, after it the
    name is nn's own object, as torch.ao.quantization's is."""
    report = run_fresh("import json, autograd\n"
                       "try:\n    autograd.ao.quantization.QuantStub\n    before = 'read'\n"
                       "except AttributeError as error:\n    before = str(error)\n"
                       "import nn, nn.quantization\n"
                       "print(json.dumps([before, autograd.ao.quantization.QuantStub is nn.quantization.QuantStub,\n"
                       "                  autograd.quantization.prepare_qat is nn.quantization.prepare_qat,\n"
                       "                  autograd.ao.nn.qat is nn.qat]))")
    assert "import nn first" in report[0] and report[1:] == [True, True, True]


def test_torch_dot_nn_reads_once_nn_and_optim_are_imported():
    """autograd.nn and autograd.optim (torch.nn, torch.optim in a program that imports torch alone) are the
    packages themselves, registered as they are imported; before, the name says to import them."""
    report = run_fresh("import json, autograd\n"
                       "try:\n    autograd.optim\n    before = 'read'\n"
                       "except AttributeError as error:\n    before = str(error)\n"
                       "import nn, optim\n"
                       "print(json.dumps([before, autograd.nn is nn, autograd.optim is optim,\n"
                       "                  autograd.nn.functional.relu is nn.functional.relu]))")
    assert "import optim first" in report[0] and report[1:] == [True, True, True]


DECLARED_BY_EACH = """
import json, sys
import autograd
from autograd.ops import deferred, names
from autograd import return_types

declared = {}  # each deferred module: {kind: the names its own body declares}


def record(kind, name, depth=2):  # (the frame that declares: the module's body)
    module = sys._getframe(depth).f_globals["__name__"].rpartition(".")[2]
    declared.setdefault(module, {}).setdefault(kind, set()).add(name)


plain_names, plain_return_type = names.names, return_types.return_type


def spying_names(*method_names, function=True, method=True, inplace=None, functions=()):
    register = plain_names(*method_names, function=function, method=method, inplace=inplace, functions=functions)

    def spy(op):
        for name in method_names:
            if method:
                record("methods", name)
            if function and not name.startswith("_"):
                record("functions", name)
        for name in functions:
            record("functions", name)
        for name in (inplace,) if isinstance(inplace, str) else (inplace or ()):
            record("inplace", name)
        return register(op)
    return spy


def spying_return_type(name, fields, *, has_out=True):
    record("return_types", name)
    if has_out:
        record("return_types", name + "_out")
    return plain_return_type(name, fields, has_out=has_out)


names.names, return_types.return_type = spying_names, spying_return_type
assert not [m for m in deferred.MODULES if "autograd.ops." + m in sys.modules]
deferred_modules = list(deferred.MODULES)
autograd.ops.load_every_deferred()
print(json.dumps({m: {kind: sorted(found) for kind, found in declared.get(m, {}).items()} for m in deferred_modules}))
"""


def test_the_table_of_deferred_modules_lists_what_each_declares():
    """autograd/ops/deferred.py names, for each module autograd.ops leaves out, the methods, in-place methods,
    functions and return types its own body declares: no more, no fewer (a name added to one goes there too)."""
    from autograd.ops import deferred

    listed = {module: {kind: sorted(names.split()) for kind, names in kinds.items()}
              for module, kinds in deferred.MODULES.items()}
    assert run_fresh(DECLARED_BY_EACH) == listed


FIRST_USES = {  # each in a fresh interpreter: what loads, and what it gives
    "x.svd()": ("import autograd; x = autograd.eye(3) * 2\nresult = [x.svd().S.tolist()]", [[2.0, 2.0, 2.0]]),
    "Tensor.lgamma": ("import autograd\nf = autograd.Tensor.lgamma\n"
                      "result = [f.__name__, f(autograd.tensor([3.0])).tolist()]", ["lgamma", [0.6931471824645996]]),
    "autograd.cumsum": ("import autograd\nresult = autograd.cumsum(autograd.arange(4.0), 0).tolist()",
                        [0.0, 1.0, 3.0, 6.0]),
    "from autograd import det": ("from autograd import det, eye\nresult = det(eye(2) * 3).item()", 9.0),
    "x.chunk": ("import autograd\nresult = [c.tolist() for c in autograd.arange(4).chunk(2)]", [[0, 1], [2, 3]]),
    "x.masked_fill_": ("import autograd\nx = autograd.zeros(3)\nx.masked_fill_(x == 0, 1.5)\n"
                       "result = x.tolist()", [1.5, 1.5, 1.5]),
    "return_types.linalg_slogdet": ("from autograd.return_types import linalg_slogdet\n"
                                    "result = [linalg_slogdet.__name__, list(linalg_slogdet._fields)]",
                                    ["linalg_slogdet", ["sign", "logabsdet"]]),
    "hasattr(Tensor, 'tril_')": ("import autograd\nresult = [hasattr(autograd.Tensor, 'tril_'), "
                                 "type(autograd.Tensor.__dict__['tril_']).__name__]", [True, "function"]),
    "autograd.ops.zeta": ("import autograd\nresult = autograd.ops.zeta.__name__", "autograd.ops.zeta"),
    "x.gather": ("import autograd\nresult = autograd.tensor([[1, 2], [3, 4]]).gather(1, autograd.tensor([[1], [0]]))"
                 ".tolist()", [[2], [3]]),
    "x.amax": ("import autograd\nresult = autograd.tensor([[1.0, 5.0], [7.0, 2.0]]).amax(1).tolist()", [5.0, 7.0]),
    "x.index_select": ("import autograd\nresult = autograd.tensor([4, 5, 6]).index_select(0, autograd.tensor([2, 0]))"
                       ".tolist()", [6, 4]),
    "special.ndtri": ("import autograd\nresult = autograd.special.ndtri(autograd.tensor([0.5, 0.975], "
                      "dtype=autograd.float64)).tolist()", [0.0, 1.9599639845400538]),
    "x.repeat": ("import autograd\nresult = autograd.tensor([1, 2]).repeat(2).tolist()", [1, 2, 1, 2]),
    "autograd.movedim": ("import autograd\nresult = list(autograd.movedim(autograd.zeros(2, 3), 0, 1).shape)", [3, 2]),
    "F.hardshrink": ("import autograd, nn\nx = autograd.tensor([-1.0, 0.25, 2.0])\n"
                     "result = [nn.functional.hardshrink(x).tolist(), x.hardshrink(0.1).tolist()]",
                     [[-1.0, 0.0, 2.0], [-1.0, 0.25, 2.0]]),
    "F.selu": ("import autograd, nn\n"
               "result = nn.functional.selu(autograd.tensor([1.0], dtype=autograd.float64)).item()",
               1.0507009873554805),
    "F.prelu": ("import autograd, nn\nresult = nn.functional.prelu(autograd.tensor([-2.0, 3.0]), "
                "autograd.tensor([0.25])).tolist()", [-0.5, 3.0]),
}


@pytest.mark.parametrize("use", sorted(FIRST_USES))
def test_a_deferred_name_works_at_its_first_use(use):
    code, expected = FIRST_USES[use]
    assert run_fresh(f"import json\n{code}\nprint(json.dumps(result))") == expected


def test_deferred_names_are_listed_before_they_load():
    from autograd.ops import deferred

    code = ("import json, autograd\nfrom autograd import return_types\n"
            "print(json.dumps([sorted(set(dir(autograd.Tensor))), sorted(set(dir(autograd)) & set(autograd.__all__)),"
            " dir(return_types)]))")
    tensor_names, autograd_names, return_type_names = run_fresh(code)
    assert set(deferred.METHODS) | set(deferred.INPLACE) <= set(tensor_names)
    assert {name for name in deferred.FUNCTIONS if not name.startswith("_")} <= set(autograd_names)
    assert set(deferred.RETURN_TYPES) <= set(return_type_names)


def test_every_deferred_name_resolves_to_what_its_module_declares():
    import autograd
    from autograd.ops import deferred
    from autograd.ops.names import FUNCTIONS, INPLACE, METHODS

    for name in deferred.METHODS:
        assert getattr(autograd.Tensor, name) is METHODS[name], name
    for name in deferred.INPLACE:
        assert getattr(autograd.Tensor, name).__name__ == name and name in INPLACE
    for name in deferred.FUNCTIONS:
        assert inspect_unwrapped(getattr(autograd, name)) is inspect_unwrapped(FUNCTIONS[name]), name
    for name in deferred.RETURN_TYPES:
        assert getattr(autograd.return_types, name).__name__ == name


def inspect_unwrapped(function):
    import inspect

    return inspect.unwrap(function)


def test_a_deferred_return_type_unpickles_in_a_fresh_interpreter(tmp_path):
    import autograd

    result = autograd.linalg.slogdet(autograd.eye(2) * 2)
    with open(tmp_path / "result.pkl", "wb") as file:
        pickle.dump(result, file)
    code = (f"import json, pickle\nwith open({str(tmp_path / 'result.pkl')!r}, 'rb') as file:\n"
            "    result = pickle.load(file)\nimport autograd\n"
            "print(json.dumps([type(result).__name__, isinstance(result, autograd.return_types.linalg_slogdet),"
            " result.logabsdet.item()]))")
    assert run_fresh(code) == ["linalg_slogdet", True, pytest.approx(np.log(4.0))]


def test_a_subclass_defined_before_a_deferred_method_is_asked_for_it():
    """A class taking part in calls (__torch_function__) defined before any deferred module loads: their methods
    dispatch as the others (dispatching.install loads them first)."""
    code = """
import json, autograd
seen = []
class Logged(autograd.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        seen.append(func.__name__)
        return super().__torch_function__(func, types, args, kwargs or {})
x = autograd.eye(2).as_subclass(Logged)
x.det(); x.cumsum(0); autograd.tril(x)
print(json.dumps(seen))
"""
    assert {"det", "cumsum", "tril"} <= set(run_fresh(code))


def test_layers_and_functions_of_deferred_modules_pickle_in_a_fresh_interpreter(tmp_path):
    """A model of layers that load on first use (LayerNorm, Dropout), a function of a deferred op module
    (F.layer_norm, pickled by its module and name) and an optimizer loaded on first use (RMSprop) unpickle in an
    interpreter that imported none of them, and compute as before."""
    import autograd
    import nn
    import optim

    autograd.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Dropout(0.0))
    optimizer = optim.RMSprop(model.parameters(), lr=0.1)
    x = autograd.randn(2, 3)
    model(x).sum().backward()
    optimizer.step()
    expected = [model(x).tolist(), nn.functional.layer_norm(x, (3,)).tolist(), x.norm().item()]
    with open(tmp_path / "objects.pkl", "wb") as file:
        pickle.dump([model, nn.functional.layer_norm, x, type(optimizer)], file)
    code = f"""
import json, pickle, sys
with open({str(tmp_path / "objects.pkl")!r}, "rb") as file:
    model, layer_norm, x, optimizer_class = pickle.load(file)
print(json.dumps([model(x).tolist(), layer_norm(x, (3,)).tolist(), x.norm().item(), optimizer_class.__name__]))
"""
    from_model, from_function, norm, optimizer_name = run_fresh(code)
    np.testing.assert_allclose(from_model, expected[0], rtol=1e-6)
    np.testing.assert_allclose(from_function, expected[1], rtol=1e-6)
    assert norm == pytest.approx(expected[2]) and optimizer_name == "RMSprop"


def test_op_functions_made_on_first_use_pickle_by_their_names(tmp_path):
    """autograd.<op> of an op module loaded at import is made (wrapped, ops/names.py) on its first use, then kept:
    it pickles as autograd.<op>, and unpickles in a fresh interpreter as that interpreter's autograd.<op>."""
    import autograd

    functions = [autograd.flip, autograd.relu, autograd.matmul, autograd.clamp]
    assert [(f.__module__, f.__qualname__) for f in functions] == [("autograd", n) for n in
                                                                   ("flip", "relu", "matmul", "clamp")]
    assert all(vars(autograd)[f.__qualname__] is f for f in functions)
    with open(tmp_path / "functions.pkl", "wb") as file:
        pickle.dump(functions, file)
    code = (f"import json, pickle\nwith open({str(tmp_path / 'functions.pkl')!r}, 'rb') as file:\n"
            "    functions = pickle.load(file)\nimport autograd\n"
            "print(json.dumps([f is getattr(autograd, f.__qualname__) for f in functions]"
            " + [functions[1](autograd.tensor([-1.0, 2.0])).tolist()]))")
    assert run_fresh(code) == [True, True, True, True, [0.0, 2.0]]
