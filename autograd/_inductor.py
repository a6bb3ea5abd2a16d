"""``autograd._inductor``: the settings of PyTorch's ``torch._inductor`` that programs write before compiling
(gpt-fast sets ``torch._inductor.config.coordinate_descent_tuning``, ``.triton.unique_kernel_names`` and
``.fx_graph_cache``). There is no compiler here (``compiler.py``): the settings are kept, and read by nothing."""

import sys
import types

__all__ = ["config"]

config = types.ModuleType(__name__ + ".config", "torch._inductor.config: settings kept, and read by nothing")
config.__dict__.update(coordinate_descent_tuning=False, fx_graph_cache=True, freezing=False, max_autotune=False,
                       epilogue_fusion=True, force_fuse_int_mm_with_mul=False, use_mixed_mm=False,
                       triton=types.SimpleNamespace(unique_kernel_names=False, cudagraphs=False,
                                                    cudagraph_trees=True))
sys.modules[config.__name__] = config
