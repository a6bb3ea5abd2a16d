"""CPU autocast to float16, ``autocast("cpu", dtype=float16)``: which ops run in float16, which in float32 and
which at their inputs' widest dtype (PyTorch's CPU policy, aten/src/ATen/autocast_mode.cpp), and the mode that
casts their arguments.

By the names of our public functions and Tensor methods, PyTorch's CPU lists are:

- the autocast dtype (``LOWER``): the matrix products and convolutions (matmul, mm, bmm, addmm, baddbmm, addbmm,
  linear, vecdot, conv1d/2d/3d, conv_transpose1d/2d/3d, conv_tbc, prelu, scaled_dot_product_attention), and
  the functions PyTorch builds from them, which meet the cast inside (einsum, tensordot, multi_dot, chain_matmul,
  inner, cov, corrcoef, affine_grid, matrix_power for n ≥ 2, the tanh and ReLU RNNs and their cells: nn.RNN
  and nn.RNNCell hand their weights to their core with the input, as to PyTorch's _VF.rnn_tanh, to be cast);
  the LSTM and GRU and their cells where their input and states are float16 (PyTorch lowers their products,
  and a float32 input or state promotes the gates back to float32: here they then run in float32);
- float32 (``FP32``): the losses, reductions that lose much in float16 (prod, quantile, trace, cdist), linear
  algebra's factorizations and solvers, the FFTs, 3-d pooling, reflection and replication padding, grid sampling,
  and local_response_norm beyond 3 dimensions (PyTorch's sums its window by avg_pool3d there);
- promote (``PROMOTE``): cat, stack and index_copy, at the widest floating dtype of their tensors;
- float16 results (``PRODUCT_LAST``): the functions PyTorch builds from a float32 factorization and a final
  product, which it lowers: linalg.pinv (an SVD or eigh, then a product; its input is not cast, so a float16 one
  is refused, as PyTorch's), matrix_power for n ≤ -2 (an inverse, then products; n = -1 is the float32 inverse),
  svd_lowrank's and pca_lowrank's U (Q times the small SVD's U; S and V stay float32, and a float16 input is
  taken, as PyTorch's products take it). Here the function runs in float32 (pinv: in its input's dtype) and those
  results are cast once: PyTorch's values to float16's rounding (its products round on the way, these at the end).

Every other op runs in its inputs' dtypes: a float16 activation stays float16 through relu, softmax and a norm, as
PyTorch's CPU autocast leaves them. A tensor is cast when it is floating and not float64 (PyTorch's rule: a
float64 operand of a product is left alone, so it meets a float16 one and the product refuses, as PyTorch's).
The casts are ops of the graph (ToCopyBackward0), so a float32 parameter's gradient is float32; a float32 leaf
that requires grad (a weight) is cast once per outermost block (PyTorch's cache, cleared when the block ends).

How: the first enabled CPU block pushes a ``CpuAutocast`` mode (a TorchFunctionMode), so every public call in the
thread reaches it (overrides.py), and a layer's forward, which calls public functions, has each cast in turn. A
listed op runs on its cast arguments with the mode off, as PyTorch's kernels run below its autocast key; the
functions PyTorch builds from listed products are listed themselves (einsum; F.multi_head_attention_forward, whose
linear maps and products PyTorch casts one by one), so their results have PyTorch's dtypes.
"""

import weakref

from . import amp, backend
from .function_modes import TorchFunctionMode
from .tensor import Tensor

LOWER = frozenset((
    "matmul", "mm", "bmm", "addmm", "baddbmm", "addbmm", "linear", "vecdot", "conv1d", "conv2d", "conv3d",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "conv_tbc", "prelu", "scaled_dot_product_attention",
    "einsum", "tensordot", "multi_dot", "chain_matmul", "inner", "cov", "corrcoef", "affine_grid", "rnn_tanh",
    "rnn_relu", "rnn_tanh_cell", "rnn_relu_cell", "multi_head_attention_forward"))

FP32 = frozenset((
    "avg_pool3d", "max_pool3d", "max_unpool2d", "max_unpool3d", "adaptive_avg_pool3d", "adaptive_max_pool3d",
    "fractional_max_pool2d", "fractional_max_pool3d", "grid_sample", "grid_sampler", "polar", "prod", "quantile",
    "nanquantile", "stft", "cdist", "trace", "view_as_complex", "cholesky", "cholesky_inverse", "cholesky_solve",
    "inverse", "lu_solve", "orgqr", "ormqr", "pinverse", "geqrf", "qr", "svd", "triangular_solve",
    "cond", "matrix_rank", "solve", "svdvals", "eigvals", "eigvalsh", "inv", "householder_product", "tensorinv",
    "tensorsolve", "cholesky_ex", "eig", "eigh", "lstsq", "inv_ex", "fake_quantize_per_tensor_affine",
    "fft", "ifft", "fft2", "ifft2", "fftn", "ifftn", "rfft", "irfft", "rfft2", "irfft2", "rfftn", "irfftn", "hfft",
    "ihfft", "mse_loss", "cosine_embedding_loss", "nll_loss", "hinge_embedding_loss", "poisson_nll_loss",
    "smooth_l1_loss", "cross_entropy", "l1_loss", "huber_loss", "margin_ranking_loss", "soft_margin_loss",
    "triplet_margin_loss", "multi_margin_loss", "ctc_loss", "kl_div", "multilabel_margin_loss",
    "binary_cross_entropy_with_logits", "binary_cross_entropy"))

PROMOTE = frozenset(("cat", "concat", "concatenate", "stack", "index_copy"))

# which results become float16 (None: the result; an int: that item of the tuple), the call running in float32
PRODUCT_LAST = {"pinv": None, "svd_lowrank": 0, "pca_lowrank": 0}

_PADDING_IN_FLOAT32 = {"reflect": (2, 4), "replicate": (2, 4, 6)}  # F.pad's modes PyTorch lists, by len(pad)
_MATRIX_POWERS = ("matrix_power", "tensor_matrix_power")  # (linalg.matrix_power; torch.matrix_power, the method)
_GATED_RECURRENCES = ("lstm", "gru", "lstm_cell", "gru_cell")  # (float16 where the input and states are)


def _all_float16(values):
    """Whether every tensor among ``values`` (through lists, tuples, a PackedSequence's data) is float16."""
    for value in values:
        if isinstance(value, (list, tuple)):
            if not _all_float16(value[:1] if hasattr(value, "batch_sizes") else value):
                return False
        elif isinstance(value, Tensor) and value._data.dtype != backend.float16:
            return False
    return True


def _cast_once(value, dtype):
    """``value.to(dtype)``; a float32 leaf weight's cast to float16 taken from this block's cache (PyTorch's)."""
    if (dtype == backend.float16 and value._data.dtype == backend.float32 and value.requires_grad and value.is_leaf
            and value._base is None and amp.is_autocast_cache_enabled()):
        cache = amp.cast_cache()
        kept = cache.get(id(value))
        if kept is not None and kept[0]() is value:
            return kept[1]
        cast = value.to(dtype)
        cache[id(value)] = (weakref.ref(value), cast)
        return cast
    return value.to(dtype)


def _widest(values, found=None):
    """The widest floating dtype among the eligible tensors of ``values`` (float64 counts: it is not cast, but
    the others are cast up to it)."""
    for value in values:
        if isinstance(value, (list, tuple)):
            found = _widest(value, found)
        elif isinstance(value, Tensor) and value._data.dtype.kind == "f":
            dtype = value._data.dtype
            found = dtype if found is None or dtype.itemsize > found.itemsize else found
    return found


def _policy(name, args, kwargs):
    """The dtype the tensors of a call of ``name`` are cast to; None: the call runs as it is."""
    if name in LOWER:
        return backend.float16
    if name in FP32:
        return backend.float32
    if name in PROMOTE:
        return _widest((*args, *kwargs.values()))
    if name == "pad":
        pad = kwargs.get("pad", args[1] if len(args) > 1 else ())
        mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
        return backend.float32 if len(pad) in _PADDING_IN_FLOAT32.get(mode, ()) else None
    if name in PRODUCT_LAST:
        return None if name == "pinv" else backend.float32
    if name in _MATRIX_POWERS:  # (PyTorch's: products for n ≥ 2; a copy for n = 0, 1; an inverse for n < 0)
        n = _power(args, kwargs)
        return backend.float16 if n >= 2 else backend.float32 if n < 0 else None
    if name in _GATED_RECURRENCES:  # (PyTorch lowers their products, and a float32 input or state promotes the
        return backend.float16 if _all_float16(args[:2]) else backend.float32  # gates' float16 back to float32)
    if name == "local_response_norm":  # (PyTorch's sums the window by avg_pool3d beyond 3 dimensions)
        input = kwargs.get("input", args[0] if args else None)
        return backend.float32 if isinstance(input, Tensor) and input.ndim > 3 else None
    return None


def _power(args, kwargs):
    n = kwargs.get("n", args[1] if len(args) > 1 else 0)
    return n if isinstance(n, int) else 0


def _lowered_results(name, args, kwargs, result):
    """``result`` with the outputs PyTorch's last product gives in float16 cast to it (``PRODUCT_LAST``; matrix_power
    for n ≤ -2, whose inverse is float32 and whose products float16), where they are float32 (a float64 call stays
    float64, as PyTorch's products of float64 operands are not cast). A call writing into ``out`` is left as it is."""
    if name in _MATRIX_POWERS:
        if _power(args, kwargs) > -2:
            return result
        position = None
    elif name in PRODUCT_LAST:
        position = PRODUCT_LAST[name]
    else:
        return result
    if kwargs.get("out") is not None:
        return result
    lowered = result if position is None else result[position]
    if not isinstance(lowered, Tensor) or lowered._data.dtype != backend.float32:
        return result
    lowered = lowered.to(backend.float16)
    return lowered if position is None else (*result[:position], lowered, *result[position + 1:])


class CpuAutocast(TorchFunctionMode):
    """The mode of this thread's enabled CPU autocast blocks: casts the arguments of the listed ops (see above).
    Each call runs with the mode off (as every mode's handler does), as PyTorch's kernels run below its autocast
    key: what an op does inside is not cast again."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if amp.is_autocast_enabled("cpu"):  # (off: an inner autocast(enabled=False) block)
            name = getattr(func, "__name__", None)
            dtype = _policy(name, args, kwargs)
            if dtype is not None:  # (amp's rule for what is cast: floating tensors, float64 excepted)
                args, kwargs = amp._cast(args, "cpu", dtype, _cast_once), amp._cast(kwargs, "cpu", dtype, _cast_once)
            if name in PRODUCT_LAST or name in _MATRIX_POWERS:
                return _lowered_results(name, args, kwargs, func(*args, **kwargs))
        return func(*args, **kwargs)
