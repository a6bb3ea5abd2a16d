"""``autograd.__version__`` (as ``torch.__version__``): the installed chainrule distribution's version;
``autograd.version`` answers as ``torch.version`` does (``.cuda`` is None on a CPU build, as the scripts
that print their environment read it; under CuPy it is the CUDA runtime's version)."""

from importlib import metadata

from .backend import xp

try:
    __version__ = metadata.version("chainrule")
except metadata.PackageNotFoundError:  # a source tree on sys.path that was never pip-installed
    __version__ = "0+unknown"

git_version = "unknown"
debug = False
hip = None
cuda = None
if hasattr(xp, "cuda"):  # CuPy: the CUDA runtime it runs on, "12.4" as PyTorch writes it
    _runtime = xp.cuda.runtime.runtimeGetVersion()
    cuda = f"{_runtime // 1000}.{_runtime % 1000 // 10}"
