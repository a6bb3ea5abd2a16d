"""``autograd.__version__`` (as ``torch.__version__``): the installed chainrule distribution's version."""

from importlib import metadata

try:
    __version__ = metadata.version("chainrule")
except metadata.PackageNotFoundError:  # a source tree on sys.path that was never pip-installed
    __version__ = "0+unknown"
