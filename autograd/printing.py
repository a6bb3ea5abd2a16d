"""How a tensor prints: ``repr(t)``, ``str(t)`` and ``print(t)`` give PyTorch's text, character for
character (dtypes by this project's names: ``dtype=float64`` where PyTorch says ``torch.float64``).

One formatter serves a whole tensor, so that its numbers line up in columns. It looks at the numbers
that will be shown (the nonzero finite ones decide) and picks one of three modes:

- integer mode, when every one is a whole number: ``1.``, ``-3.``, ``nan``;
- fixed mode, ``precision`` digits after the point: ``2.5000``;
- scientific mode, when the largest magnitude is over 1000 times the smallest, over 1e8, or the smallest
  under 1e-4 (or when ``sci_mode=True``): ``1.0000e-05``.

Every number is padded on the left to the widest one. Rows are wrapped to ``linewidth`` characters and
nested rows indented under their bracket. A tensor of more than ``threshold`` elements is summarised:
each dimension keeps its first and last ``edgeitems`` entries around ``...``. The text ends with the
suffixes that say what the numbers do not: the device when it is not the CPU, the size of an empty or
fully elided tensor, the dtype when it is not the one a reader would assume (the default floating dtype,
int64 or bool), and ``grad_fn=<...>`` or ``requires_grad=True``.

``set_printoptions`` changes these settings (PyTorch's, with its profiles); NumPy's own print options are
left alone.
"""

import contextlib
import math

import numpy

from . import backend, dual

_PROFILES = {
    "default": dict(precision=4, threshold=1000, edgeitems=3, linewidth=80),
    "short": dict(precision=2, threshold=1000, edgeitems=2, linewidth=80),
    "full": dict(precision=4, threshold=math.inf, edgeitems=3, linewidth=80),
}


class _Options:
    """The print settings: one set for the process, as PyTorch's."""

    precision = 4
    threshold = 1000
    edgeitems = 3
    linewidth = 80
    sci_mode = None


OPTIONS = _Options()


def set_printoptions(precision=None, threshold=None, edgeitems=None, linewidth=None, profile=None, sci_mode=None):
    """How tensors print, as ``torch.set_printoptions``.

    precision: digits after the point (4); threshold: more elements than this are summarised (1000);
    edgeitems: entries kept at each end of a summarised dimension (3); linewidth: characters per line (80);
    profile: ``'default'``, ``'short'`` (precision 2, edgeitems 2) or ``'full'`` (never summarise), applied
    first so that the other arguments override it; sci_mode: True or False forces scientific notation on
    or off, None lets the numbers decide. As in PyTorch, every call sets ``sci_mode``, back to None when it
    is left out.
    """
    for name, value in _PROFILES.get(profile, {}).items():
        setattr(OPTIONS, name, value)
    for name, value in (("precision", precision), ("threshold", threshold), ("edgeitems", edgeitems),
                        ("linewidth", linewidth)):
        if value is not None:
            setattr(OPTIONS, name, value)
    OPTIONS.sci_mode = sci_mode


def get_printoptions():
    """The current settings, as keyword arguments for ``set_printoptions``."""
    return {name: getattr(OPTIONS, name) for name in ("precision", "threshold", "edgeitems", "linewidth", "sci_mode")}


@contextlib.contextmanager
def printoptions(**options):
    """Print with these settings inside the ``with`` block, and with the old ones after it."""
    old = get_printoptions()
    set_printoptions(**options)
    try:
        yield
    finally:
        set_printoptions(**old)


class _Formatter:
    """Writes each number of one tensor (or of the real or imaginary parts of a complex one) in the
    mode and width chosen from ``values``, a flat array of the numbers that will be shown."""

    def __init__(self, values):
        self.floating = values.dtype.kind == "f"
        self.precision = OPTIONS.precision
        self.int_mode, self.sci_mode, self.width = True, False, 1
        if not self.floating:  # integers and bools print as Python prints them
            self.width = max([self.width, *(len(f"{value}") for value in values.tolist())])
            return
        deciding = values[numpy.isfinite(values) & (values != 0)]
        if deciding.size == 0:  # zeros, nan and inf alone: integer mode
            return
        magnitudes = numpy.abs(deciding).astype(numpy.float64)  # float16 would overflow at 1e8
        smallest, largest = magnitudes.min(), magnitudes.max()
        self.int_mode = bool(numpy.all(deciding == numpy.ceil(deciding)))
        if OPTIONS.sci_mode is None:
            with numpy.errstate(over="ignore"):
                self.sci_mode = bool(largest / smallest > 1000.0 or largest > 1.0e8 or smallest < 1.0e-4)
        else:
            self.sci_mode = OPTIONS.sci_mode
        numbers = deciding.tolist()
        if self.sci_mode:
            self.width = max(len(f"{value:.{self.precision}e}") for value in numbers)
        elif self.int_mode:  # the point added after the digits
            self.width = max(len(f"{value:.0f}") + 1 for value in numbers)
        else:
            self.width = max(len(f"{value:.{self.precision}f}") for value in numbers)

    def format(self, value):
        """``value`` (a Python number) right-aligned in the column width."""
        if not self.floating:
            text = f"{value}"
        elif self.sci_mode:
            text = f"{value:{self.width}.{self.precision}e}"
        elif self.int_mode:
            text = f"{value:.0f}" + ("" if math.isinf(value) or math.isnan(value) else ".")
        else:
            text = f"{value:.{self.precision}f}"
        return text.rjust(self.width)


class _ComplexFormatter:
    """A complex number as its real part, then its imaginary part with its sign and a ``j``, each part
    in the column of its own formatter: ``1.0000+2.0000j``, ``0.-1.j``."""

    def __init__(self, values):
        self.real, self.imag = _Formatter(values.real), _Formatter(values.imag)
        self.width = self.real.width + self.imag.width + 1  # the j

    def format(self, value):
        real = self.real.format(value.real)
        imag = (self.imag.format(value.imag) + "j").lstrip()
        return real + imag if imag[0] in "+-" else real + "+" + imag


def _summarised(array):
    """The numbers that a summarised print shows (each dimension's first and last ``edgeitems``),
    flat: the formatter chooses its mode and width from these alone."""
    edge = OPTIONS.edgeitems
    if array.ndim <= 1:
        if array.ndim == 1 and array.shape[0] > 2 * edge:
            return numpy.concatenate((array[:edge], array[-edge:]))  # (with edge 0: [-0:] is all of it)
        return array.reshape(-1)
    if not edge:
        return array[:0].reshape(-1)
    rows = range(array.shape[0])
    if array.shape[0] > 2 * edge:
        rows = [*range(edge), *range(array.shape[0] - edge, array.shape[0])]
    return numpy.concatenate([_summarised(array[i]) for i in rows])


def _vector(array, indent, summarise, formatter):
    """One dimension: its numbers, as many a line as fit in ``linewidth`` after ``indent``."""
    per_line = max(1, math.floor((OPTIONS.linewidth - indent) / (formatter.width + 2)))  # ", " after each
    edge = OPTIONS.edgeitems
    if summarise and not edge:
        items = ["..."]
    elif summarise and array.shape[0] > 2 * edge:
        items = ([formatter.format(value) for value in array[:edge].tolist()] + [" ..."]
                 + [formatter.format(value) for value in array[-edge:].tolist()])
    else:
        items = [formatter.format(value) for value in array.tolist()]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


def _nested(array, indent, summarise, formatter):
    """The bracketed text of ``array``; its rows start one column right of its bracket, and rows of
    d-dimensional blocks are separated by d - 1 line breaks (one blank line between matrices)."""
    if array.ndim == 0:
        return formatter.format(array.item())
    if array.ndim == 1:
        return _vector(array, indent, summarise, formatter)
    edge, count = OPTIONS.edgeitems, array.shape[0]
    if summarise and count > 2 * edge:
        rows = ([_nested(array[i], indent + 1, summarise, formatter) for i in range(edge)] + ["..."]
                + [_nested(array[i], indent + 1, summarise, formatter) for i in range(count - edge, count)])
    else:
        rows = [_nested(row, indent + 1, summarise, formatter) for row in array]
    return "[" + ("," + "\n" * (array.ndim - 1) + " " * (indent + 1)).join(rows) + "]"


def _body(array, indent):
    """The numbers of a non-empty tensor, laid out (without the ``tensor(`` around them)."""
    summarise = array.size > OPTIONS.threshold
    shown = _summarised(array) if summarise else array.reshape(-1)
    formatter = (_ComplexFormatter if array.dtype.kind == "c" else _Formatter)(shown)
    return _nested(array, indent, summarise, formatter)


def _with_suffixes(text, suffixes, indent, line_length=None):
    """``text`` closed with ``, suffix`` for each suffix, each on a new line (indented under the
    numbers) where it would pass ``linewidth``; ``line_length`` the last line's as PyTorch counts it, where
    the caller knows it better."""
    parts = [text]
    # the length of the last line as PyTorch counts it (two more than its characters, and two
    # more again when there is only one line), so that suffixes break where PyTorch's do
    if line_length is None:
        line_length = len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        # PyTorch's dtype suffix reads ``dtype=torch.float64`` where ours reads ``dtype=float64``: it is
        # measured as PyTorch's, so that the same tensor breaks onto the same lines
        length = len(suffix) + (len("torch.") if suffix.startswith("dtype=") else 0)
        if line_length + length + 2 > OPTIONS.linewidth:
            parts.append(",\n" + " " * indent + suffix)
            line_length = indent + length
        else:
            parts.append(", " + suffix)
            line_length += length + 2
    return "".join(parts) + ")"


def _prefix(tensor):
    """``tensor(`` for a Tensor and a Parameter; a subclass of Tensor prints its class name instead,
    as in PyTorch (``MyTensor([1., 2.])``)."""
    from .tensor import Tensor  # (tensor.py reaches this module only when a tensor is printed)

    cls = type(tensor)
    return "tensor(" if cls is Tensor or cls.__dict__.get("_prints_as_tensor") else f"{cls.__name__}("


def tensor_repr(tensor):
    """PyTorch's text for ``tensor`` (see the module's docstring)."""
    array = backend.to_numpy(tensor._data)  # (not .numpy(), which PyTorch refuses for a tensor needing grad)
    prefix = _prefix(tensor)
    indent = len(prefix)
    suffixes = []
    if tensor.device.type != "cpu":
        suffixes.append(f"device='{tensor.device}'")
    default = backend.get_default_dtype()
    if tensor.is_meta:  # no values to print: the shape always, the dtype where not the default, as PyTorch's
        suffixes.append(f"size={tuple(array.shape)}")
        if array.dtype != default:
            suffixes.append(f"dtype={array.dtype}")
        text = "..."
    elif array.size == 0:  # no numbers to tell the shape or the dtype: both are spelled out
        if array.ndim != 1:
            suffixes.append(f"size={tuple(array.shape)}")
        if array.dtype != default:
            suffixes.append(f"dtype={array.dtype}")
        text = "[]"
    else:
        if not OPTIONS.edgeitems:
            suffixes.append(f"size={tuple(array.shape)}")
        default_complex = numpy.dtype(numpy.complex128 if default == numpy.float64 else numpy.complex64)
        if array.dtype not in (default, default_complex, backend.int64, backend.bool_):
            suffixes.append(f"dtype={array.dtype}")
        text = _body(array, indent)
    if tensor.grad_fn is not None:
        suffixes.append(f"grad_fn={tensor.grad_fn!r}")
    elif tensor.requires_grad:
        suffixes.append("requires_grad=True")
    tangent = dual.tangent_of(tensor)
    if tangent is not None:  # a dual tensor (forward mode): its tangent, printed as a tensor
        suffixes.append(f"tangent={tensor_repr(tangent)}")
    text = _with_suffixes(prefix + text, suffixes, indent)
    if getattr(tensor, "_is_param", False) and prefix != "tensor(":  # a parameter of another class (nn.Parameter
        return f"Parameter({text})"  # of a subclass instance, a subclass of Parameter) says both, as PyTorch's
    return text


def sparse_repr(sparse):
    """PyTorch's text for a sparse COO tensor: its indices and values (numbers only: the dtype is said once, after
    the size), then size, nnz, dtype, layout and the graph."""
    def part(name, tensor, indent):
        array = backend.to_numpy(tensor._data)
        if array.size == 0:
            return f"{name}=tensor([], size={tuple(array.shape)})"
        return f"{name}=tensor({_body(array, indent + len(name) + len('=tensor('))})"

    suffixes = [f"size={tuple(sparse.shape)}", f"nnz={sparse._nnz()}"]
    if sparse.dtype not in (backend.get_default_dtype(), backend.int64, backend.bool_):
        suffixes.append(f"dtype={sparse.dtype}")
    suffixes.append("layout=torch.sparse_coo")
    values = sparse._values_tensor
    if values.grad_fn is not None:
        suffixes.append(f"grad_fn={values.grad_fn!r}")
    elif values.requires_grad:
        suffixes.append("requires_grad=True")
    text = (f"tensor({part('indices', sparse._indices_tensor, len('tensor('))},\n"
            f"       {part('values', values, 7)},\n       {suffixes[0]}")
    return _with_suffixes(text, suffixes[1:], 7, line_length=7 + len(suffixes[0]))  # (the size: on a line of its own)
