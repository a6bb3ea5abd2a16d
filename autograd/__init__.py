"""chainrule's autograd: reverse-mode automatic differentiation on NumPy.

``Value`` is the scalar engine of the lecture's first half; ``Tensor`` the
n-dimensional one, with PyTorch's names (``autograd`` plays ``torch``).
"""

# NumPy first, from the package's top: CPython 3.11 keeps its frames in 16 KB chunks and frees a chunk as soon as
# the frame that opened it returns, so an import run some 40 frames deep (NumPy's, reached through our modules'
# imports of each other) can sit on a chunk's edge and map and unmap one for each of its thousands of calls: 330
# mmap/munmap pairs and about 10 ms (a tenth of the whole import) measured here, none from the top.
import numpy  # noqa: F401

from . import (
    _check_ours,  # first of ours: fails, in one clear message, when HIPS autograd's files are mixed into this folder
    _lazy,
    autograd,  # torch.autograd's namespace: grad, backward, Function, functional
    backend,
    creation,  # declares from_numpy, as_tensor and the x.new_* methods
    cuda,
)
from .backend import bfloat16, get_default_dtype, set_default_dtype
from .constants import (  # noqa: E402
    BoolTensor,
    ByteTensor,
    CharTensor,
    DoubleTensor,
    FloatTensor,
    HalfTensor,
    IntTensor,
    LongTensor,
    ShortTensor,
    Size,
    accelerator,
    bool_,
    cdouble,
    cfloat,
    channels_last,
    channels_last_3d,
    complex64,
    complex128,
    contiguous_format,
    dtype,
    e,
    float16,
    float32,
    float64,
    half,
    inf,
    int,
    int8,
    int16,
    int32,
    int64,
    layout,
    memory_format,
    nan,
    newaxis,
    pi,
    preserve_format,
    short,
    sparse_bsc,
    sparse_bsr,
    sparse_coo,
    sparse_csc,
    sparse_csr,
    strided,
    uint8,
    uint16,
    uint32,
    uint64,
)
from .device import device, get_default_device, get_device_module, set_default_device
from .differentiate import grad
from .engine import backpropagate, topological_order
from .errors import OutOfMemoryError  # torch.OutOfMemoryError (also autograd.cuda's)
from .factories import (
    as_tensor,
    empty,
    empty_like,
    eye,
    full,
    full_like,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randint_like,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from .function import Function
from .gradcheck import GradcheckError, gradcheck, gradgradcheck  # eager: the module's name too (see the end)
from .graph import (
    detect_anomaly,
    enable_grad,
    inference_mode,
    is_anomaly_enabled,
    is_grad_enabled,
    is_inference_mode_enabled,
    no_grad,
    set_detect_anomaly,
    set_grad_enabled,
)
from .ops.clamping import clamp
from .ops.elementwise import where
from .ops.joins import cat, stack
from .ops.linalg import matmul
from .primitive import REGISTRY, Primitive
from .random import (
    Generator,
    default_generator,
    get_rng_state,
    initial_seed,
    manual_seed,
    seed,
    set_rng_state,
)
from .ranges import arange, linspace, logspace
from .tensor import Tensor
from .tensor_info import TypedStorage, UntypedStorage, finfo, iinfo
from .warn_once import is_warn_always_enabled, set_warn_always

bool = bool_  # autograd.bool, as torch.bool (inside this module only)
double = float64
float = float32
long = int64

# every op's functional name (autograd.sort, autograd.gather, ...), declared where the op is defined
from .ops import load_deferred as _load_deferred  # noqa: E402
from .ops.deferred import FUNCTIONS as _deferred_functions  # noqa: E402
from .ops.names import FUNCTIONS as _FUNCTIONS  # noqa: E402
from .ops.names import pickled_by_name as _pickled_by_name  # noqa: E402
from .ops.names import refusing_arrays as _refusing_arrays  # noqa: E402

# (each made on first use, by __getattr__ below: wrapping every one at import was about a sixteenth of its cost;
# one imported above as it is gives way to its wrapped form; a name holding another object keeps it)
_OP_FUNCTIONS = {_name: _function for _name, _function in _FUNCTIONS.items()
                 if globals().get(_name, _function) is _function}
for _name in _OP_FUNCTIONS.keys() & globals().keys():
    del globals()[_name]



def is_tensor(obj):
    return isinstance(obj, Tensor)


def numel(input):
    return input.numel()


# What a program may never touch loads on first use (PEP 562), so that `import autograd` stays
# quick: the teaching tools (viz and trace bring graphviz, html and subprocess; Value, the
# scalar engine), the data helpers, data-parallel training, saving and loading, the linalg
# fft and special namespaces, and __version__ (importlib.metadata alone costs about as much as
# autograd's own modules). `autograd.viz.draw(...)`, `from autograd import load`, dir(autograd)
# and `from autograd import *` work as before. (gradcheck stays eager: it is also its module's
# name, and importing autograd.gradcheck anywhere would bind the module over a lazy function.)
__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {
    "Value": ".value:Value",
    "set_printoptions": ".printing:set_printoptions",  # (printing.py loads with the first tensor printed)
    "printing": ".printing",
    "__version__": ".version:__version__",
    "version": ".version",
    "amp": ".amp",
    **_lazy.from_module(".amp", "GradScaler", "autocast", "autocast_decrement_nesting", "autocast_increment_nesting",
                        "clear_autocast_cache", "get_autocast_cpu_dtype", "get_autocast_dtype",
                        "get_autocast_gpu_dtype", "is_autocast_cache_enabled", "is_autocast_cpu_enabled",
                        "is_autocast_enabled", "set_autocast_cache_enabled", "set_autocast_cpu_dtype",
                        "set_autocast_cpu_enabled", "set_autocast_dtype", "set_autocast_enabled",
                        "set_autocast_gpu_dtype"),
    "compile": ".compiler:compile",
    "compiler": ".compiler",
    "_dynamo": "._dynamo",
    "_higher_order_ops": "._higher_order_ops",
    "_inductor": "._inductor",
    "cpu": ".cpu",
    **_lazy.from_module(".control_flow", "cond", "while_loop"),
    # the layers' functions at PyTorch's top level (autograd.conv2d, torch.max_pool2d's signature, ...)
    **_lazy.from_module(".ops.convolution_layers", "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d",
                        "conv_transpose2d", "conv_transpose3d"),
    "convolution": ".ops.convolution_layers:convolution_layer",
    **_lazy.from_module(".ops.pooling_layers", "adaptive_avg_pool1d", "avg_pool1d"),
    "adaptive_max_pool1d": ".ops.pooling_layers:adaptive_max_pool1d_values_and_indices",
    "max_pool1d": ".ops.pooling_layers:max_pool1d_values",
    "max_pool2d": ".ops.pooling_layers:max_pool2d_values",
    "max_pool3d": ".ops.pooling_layers:max_pool3d_values",
    "max_pool1d_with_indices": ".ops.pooling_layers:max_pool1d_values_and_indices",
    "ctc_loss": ".ops.ctc:ctc_loss_by_position",
    "embedding_bag": ".ops.embedding_bags:embedding_bag_by_position",
    **_lazy.from_module(".ops.grid_sampling", "affine_grid_generator", "grid_sampler", "grid_sampler_2d",
                        "grid_sampler_3d"),
    "constant_pad_nd": ".ops.constant_padding:constant_pad_nd",
    **_lazy.from_module(".ops.native_forms", "native_batch_norm", "native_dropout", "native_group_norm",
                        "native_layer_norm"),
    **_lazy.from_module(".ops.recurrent_cells", "gru_cell", "lstm_cell", "rnn_relu_cell", "rnn_tanh_cell"),
    "segment_reduce": ".ops.segments:segment_reduce",
    **_lazy.from_module(".ops.series", "combinations", "cumulative_trapezoid", "trapezoid", "vander"),
    "trapz": ".ops.series:trapezoid",
    "range": ".ops.series:range_inclusive",
    **_lazy.from_module(".ops.grids", "block_diag", "cartesian_prod", "meshgrid", "tril_indices", "triu_indices"),
    **_lazy.from_module(".ops.windows", "bartlett_window", "blackman_window", "hamming_window", "hann_window",
                        "kaiser_window"),
    "gradient": ".ops.finite_differences:gradient",
    **_lazy.from_module(".ops.lowrank", "pca_lowrank", "svd_lowrank"),
    # the *_copy twins of the view ops
    **_lazy.from_module(".ops.view_copies", "alias_copy", "as_strided_copy", "detach_copy", "diagonal_copy",
                        "expand_copy", "permute_copy", "select_copy", "slice_copy", "split_copy",
                        "split_with_sizes_copy", "squeeze_copy", "t_copy", "transpose_copy", "unbind_copy",
                        "unfold_copy", "unsqueeze_copy", "view_as_complex_copy", "view_as_real_copy", "view_copy"),
    "ao": ".ao",  # torch.ao.quantization: observers, fake quantization, QAT
    "quantization": ".ao.quantization",  # (torch.quantization, its older name)
    **_lazy.from_module(".ao.schemes", "per_channel_affine", "per_channel_affine_float_qparams",
                        "per_channel_symmetric", "per_tensor_affine", "per_tensor_symmetric", "qint8", "qint32",
                        "quint4x2", "quint2x4", "quint8", "qscheme"),
    "backends": ".backends",
    "data": ".data",
    "datasets": ".datasets",
    "distributed": ".distributed",
    "distributions": ".distributions",
    "fft": ".fft",
    "func": ".func",
    "fx": ".fx",
    "hub": ".hub",
    "futures": ".futures",
    "Future": ".futures:Future",
    "jit": ".jit",
    "linalg": ".linalg",
    "masked": ".masked",
    "mps": ".mps",
    "quasirandom": ".quasirandom",
    "signal": ".signal",
    **_lazy.from_module(".runtime", "are_deterministic_algorithms_enabled", "get_deterministic_debug_mode",
                        "get_file_path", "get_float32_matmul_precision", "get_num_interop_threads",
                        "get_num_threads", "init_num_threads", "is_anomaly_check_nan_enabled", "is_storage",
                        "is_deterministic_algorithms_warn_only_enabled",
                        "prepare_multiprocessing_environment", "set_anomaly_enabled", "set_default_tensor_type",
                        "set_deterministic_debug_mode", "set_float32_matmul_precision", "set_flush_denormal",
                        "set_num_interop_threads", "set_num_threads", "typename",
                        "use_deterministic_algorithms"),
    **_lazy.from_module(".serialization", "load", "save"),
    "serialization": ".serialization",
    "special": ".special",
    "testing": ".testing",
    "trace": ".trace",
    "transforms": ".transforms",
    "utils": ".utils",
    "multiprocessing": ".multiprocessing",
    "overrides": ".overrides",
    "_C": "._C",
    "library": ".library",
    **_lazy.from_module(".symbolic", "sym_float", "sym_int", "sym_ite", "sym_max", "sym_min", "sym_not", "sym_sqrt",
                        "sym_sum"),
    "sparse": ".sparse",
    "sparse_coo_tensor": ".sparse.coo:sparse_coo_tensor",
    "sparse_csr_tensor": ".sparse.csr:sparse_csr_tensor",
    "hspmm": ".sparse.products:hspmm",
    "smm": ".sparse.products:smm",
    "viz": ".viz",
    "vmap": ".func:vmap",
    "xpu": ".xpu",
    "profiler": ".profiler",
    "_fused_adam_": ".ops.fused_adam:fused_adam_",
    "_fused_adamw_": ".ops.fused_adam:fused_adamw_",
    # the functions of the op modules autograd.ops leaves out (autograd.svd, autograd.lgamma, ...): listed here for
    # dir() and `import *`; __getattr__ below loads them (ops/deferred.py)
    **{name: f".ops.{module}" for name, module in _deferred_functions.items()},
    # and those of the op modules it imports (autograd.exp, autograd.cat, ...): __getattr__ below makes them
    **{name: f"{function.__module__}:{name}" for name, function in _OP_FUNCTIONS.items()},
}, finished_by_caller=True)
_names_on_first_use = __getattr__


def __getattr__(name):
    """torch._foreach_add_ and the rest (one op over a list of tensors, autograd/foreach.py) load with
    the first of them; every other name as the table above says."""
    if name.startswith("_foreach_"):
        from .foreach import FUNCTIONS

        globals().update(FUNCTIONS)
        if name in FUNCTIONS:
            return FUNCTIONS[name]
    if name in _deferred_functions:
        _load_deferred(_deferred_functions[name])
        value = _FUNCTIONS[name]
    elif name in _OP_FUNCTIONS:
        value = _OP_FUNCTIONS[name]
    else:
        value = _names_on_first_use(name)
    # an op's function loaded now (autograd.trapezoid): as its module declared it (taking NumPy's axis= where it
    # takes dim=, names.py), and refusing arrays as the others do
    registered = _FUNCTIONS.get(name)
    if registered is not None and (value is registered or getattr(registered, "__wrapped__", None) is value):
        value = globals()[name] = _pickled_by_name(_refusing_arrays(registered), __name__, name)
    if _lazy.after_load is not None:  # (subclasses take part in calls: overrides.py)
        value = globals()[name] = _lazy.after_load(__name__, name, value)
    return value


# In a process multiprocessing started (a spawned worker: it has unpickled its task with multiprocessing's
# pickler) or a program that imported multiprocessing first, tensors cross process boundaries by their shared
# memory from here on, as after PyTorch's import torch; elsewhere, importing autograd.multiprocessing does it
# (multiprocessing costs about 9 ms to import, more than a program that never starts a process should pay).
import sys as _sys  # noqa: E402  (under a private name: not an attribute programs would find on autograd)

if "multiprocessing.reduction" in _sys.modules:
    from .multiprocessing import reductions as _reductions

    _reductions.init_reductions()
