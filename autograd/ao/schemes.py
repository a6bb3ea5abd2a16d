"""The names quantization describes tensors with, as PyTorch's: the quantized dtypes (``torch.quint8``,
``torch.qint8``, ``torch.qint32``, ``torch.quint4x2``) and the quantization schemes (``torch.per_tensor_affine``
and the rest).

Nothing here holds quantized tensors: fake quantization keeps float tensors on the integer grid, and these
names say which grid (an observer's range follows its dtype, its scale and zero point its scheme)."""


class qdtype:  # noqa: N801  (a torch.dtype of PyTorch's, for a quantized element type)
    """A quantized element type: its name, whether it is signed, and its width in bits."""

    is_floating_point = False
    is_complex = False
    is_quantized = True

    def __init__(self, name, is_signed, bits):
        self.name, self.is_signed, self.bits = name, is_signed, bits
        self.itemsize = max(bits // 8, 1)

    def __repr__(self):
        return f"torch.{self.name}"

    def __reduce__(self):  # (pickled by name: a qconfig holding one survives copy.deepcopy and torch.save)
        return _dtype_named, (self.name,)


quint8 = qdtype("quint8", False, 8)
qint8 = qdtype("qint8", True, 8)
qint32 = qdtype("qint32", True, 32)
quint4x2 = qdtype("quint4x2", False, 4)
quint2x4 = qdtype("quint2x4", False, 2)
QUANTIZED_DTYPES = {d.name: d for d in (quint8, qint8, qint32, quint4x2, quint2x4)}


def _dtype_named(name):
    return QUANTIZED_DTYPES[name]


class qscheme:  # noqa: N801  (torch.qscheme's name)
    """How a tensor's scale and zero point are laid out: one per tensor or one per channel, affine (any zero
    point) or symmetric (the zero point in the middle of the range)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"torch.{self.name}"

    def __reduce__(self):
        return _scheme_named, (self.name,)


per_tensor_affine = qscheme("per_tensor_affine")
per_channel_affine = qscheme("per_channel_affine")
per_tensor_symmetric = qscheme("per_tensor_symmetric")
per_channel_symmetric = qscheme("per_channel_symmetric")
per_channel_affine_float_qparams = qscheme("per_channel_affine_float_qparams")
SCHEMES = {s.name: s for s in (per_tensor_affine, per_channel_affine, per_tensor_symmetric, per_channel_symmetric,
                               per_channel_affine_float_qparams)}


def _scheme_named(name):
    return SCHEMES[name]


def is_per_tensor(scheme):
    return scheme in (per_tensor_affine, per_tensor_symmetric)


def is_per_channel(scheme):
    return scheme in (per_channel_affine, per_channel_symmetric, per_channel_affine_float_qparams)


def is_symmetric(scheme):
    return scheme in (per_tensor_symmetric, per_channel_symmetric)


def is_float_qparams(scheme):
    return scheme == per_channel_affine_float_qparams
