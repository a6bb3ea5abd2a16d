"""``autograd.__version__`` (as ``torch.__version__``): the PyTorch release whose API chainrule follows,
with the installed chainrule distribution's version as its local label, ``2.13.0+chainrule.0.1.0``, as a
PyTorch build names itself ``2.13.0+cpu``. Programs pick code paths by it (``torch.__version__ >=
"1.5.0"``, ``version.parse(torch.__version__)``, ``torch.__version__.split(".")``): they take the ones
written for the API they get. ``chainrule`` is the distribution's own version (``chainrule --version``).
``autograd.version`` answers as ``torch.version`` does (``.cuda`` is None on a CPU build, as the scripts
that print their environment read it; under CuPy it is the CUDA runtime's version)."""

from importlib import metadata

from .backend import xp

PYTORCH_API = "2.13.0"  # the release of PyTorch whose names, signatures and numerics chainrule follows
try:
    chainrule = metadata.version("chainrule")
except metadata.PackageNotFoundError:  # a source tree on sys.path that was never pip-installed
    chainrule = "unknown"
__version__ = f"{PYTORCH_API}+chainrule.{chainrule}"

git_version = "unknown"
debug = False
hip = None
cuda = None
if hasattr(xp, "cuda"):  # CuPy: the CUDA runtime it runs on, "12.4" as PyTorch writes it
    _runtime = xp.cuda.runtime.runtimeGetVersion()
    cuda = f"{_runtime // 1000}.{_runtime % 1000 // 10}"
