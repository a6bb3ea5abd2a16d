"""``autograd._dynamo``: the parts of PyTorch's ``torch._dynamo`` that models call to ask about or steer the
compiler (lit-gpt's sampler asks ``torch._dynamo.is_compiling()``; configs set ``torch._dynamo.config``
flags). There is no compiler here (``compiler.py``): nothing is being compiled, and the markers return what
they mark."""

import sys
import types

from .compiler import allow_in_graph, assume_constant_result, disable, is_compiling, reset

__all__ = ["allow_in_graph", "assume_constant_result", "config", "disable", "is_compiling", "mark_dynamic",
           "mark_static", "mark_static_address", "reset"]

# settings a program may write (suppress_errors, cache_size_limit, ...): kept, and read by nothing. A module,
# so that gpt-fast's `import torch._dynamo.config` finds it too
config = types.ModuleType(__name__ + ".config", "torch._dynamo.config: settings kept, and read by nothing")
config.__dict__.update(suppress_errors=False, cache_size_limit=8, capture_scalar_outputs=False, optimize_ddp=True)
sys.modules[config.__name__] = config


def mark_dynamic(tensor, index, *, min=None, max=None):
    """Nothing to mark: no shape is ever specialised."""


def mark_static(tensor, index=None):
    """Nothing to mark: no shape is ever specialised."""


def mark_static_address(tensor, guard=True):
    """Nothing to mark: no address is ever captured."""
