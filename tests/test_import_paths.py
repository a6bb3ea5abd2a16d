"""The module paths programs import from: ``from torch.distributions.normal import Normal`` runs here as
``from autograd.distributions.normal import Normal`` (torch -> autograd, torch.nn -> nn, torch.optim -> optim),
so each of PyTorch's public submodules a program names must exist under the same name."""

import importlib

import pytest

# (PyTorch's path, a name programs import from it): checked without PyTorch, as on CI
IMPORTED_BY_PROGRAMS = [
    ("torch.distributions.normal", "Normal"),
    ("torch.distributions.categorical", "Categorical"),
    ("torch.distributions.kl", "kl_divergence"),
    ("torch.distributions.lowrank_multivariate_normal", "LowRankMultivariateNormal"),
    ("torch.distributions.multivariate_normal", "MultivariateNormal"),
    ("torch.distributions.transforms", "TanhTransform"),
    ("torch.distributions.constraints", "positive"),
    ("torch.nn.modules.loss", "_Loss"),
    ("torch.nn.modules.batchnorm", "_BatchNorm"),
    ("torch.nn.modules.conv", "_ConvNd"),
    ("torch.nn.modules.utils", "_pair"),
    ("torch.nn.parameter", "Parameter"),
    ("torch.nn.utils.rnn", "pad_sequence"),
    ("torch.nn.utils.parametrize", "register_parametrization"),
    ("torch.optim.lr_scheduler", "LambdaLR"),
    ("torch.optim.optimizer", "Optimizer"),
    ("torch.utils.data.dataloader", "default_collate"),
    ("torch.utils.data.sampler", "WeightedRandomSampler"),
    ("torch.utils.checkpoint", "checkpoint"),
    ("torch.autograd.function", "Function"),
]

# PyTorch's public submodules with no counterpart here, and why (the rest must import)
NOT_BUILT = {
    "torch.nn.backends", "torch.nn.cpp",  # PyTorch's C++ bindings
    "torch.nn.quantizable", "torch.nn.quantized",  # quantized tensors (not built; fake quantization is)
    "torch.nn.modules.linear_cross_entropy", "torch.nn.modules.linear_cross_entropy_options",  # (newest, unused)
    "torch.nn.utils.memory_format",  # memory formats are NumPy strides here
    "torch.utils.data.backward_compatibility", "torch.utils.data.datapipes", "torch.utils.data.graph",
    "torch.utils.data.graph_settings",  # DataPipes: deprecated by PyTorch
    "torch.autograd.profiler_legacy", "torch.autograd.profiler_util",  # the profiler's internals
}


def ours(path):
    """Our module path for PyTorch's: the imports a program changes."""
    for theirs, mine in (("torch.nn", "nn"), ("torch.optim", "optim"), ("torch", "autograd")):
        if path == theirs or path.startswith(theirs + "."):
            return mine + path[len(theirs):]
    raise ValueError(path)


@pytest.mark.parametrize("path, name", IMPORTED_BY_PROGRAMS)
def test_a_program_s_import_path_resolves(path, name):
    module = importlib.import_module(ours(path))
    assert hasattr(module, name), f"{ours(path)} has no {name}"


@pytest.mark.parametrize("package", ["torch.distributions", "torch.nn", "torch.nn.modules", "torch.nn.utils",
                                     "torch.optim", "torch.utils.data", "torch.autograd"])
def test_every_public_submodule_of_pytorch_s_has_a_counterpart(package):
    pkgutil = pytest.importorskip("pkgutil")
    torch_package = pytest.importorskip(package)
    missing = []
    for info in pkgutil.iter_modules(torch_package.__path__):
        path = f"{package}.{info.name}"
        if info.name.startswith("_") or path in NOT_BUILT:
            continue
        try:
            importlib.import_module(ours(path))
        except ModuleNotFoundError:
            missing.append(path)
    assert not missing, f"no counterpart for {missing}"
