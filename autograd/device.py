"""Devices, as ``torch.device``: where a tensor's memory lives.

chainrule keeps every tensor of a process on one device, the one its array
module computes on (``autograd.backend.xp``): ``cpu`` under NumPy, ``cuda:N``
(CuPy's current GPU) under CuPy. ``device("cuda")``, ``device("cpu:0")`` and
``device("cuda", 1)`` are all valid names; asking to put a tensor on a device
that is not the served one raises a RuntimeError that says which device is.
"""

from . import backend

# PyTorch's device types, in its order (its error message lists them).
DEVICE_TYPES = ("cpu", "cuda", "ipu", "xpu", "mkldnn", "opengl", "opencl", "ideep", "hip", "ve", "fpga",
                "maia", "xla", "lazy", "vulkan", "mps", "meta", "hpu", "mtia", "privateuseone")


class device:  # noqa: N801  (torch.device's name)
    """A device type and optional index: ``device("cuda:1")``, ``device("cuda", 1)``, ``device("cpu")``.

    It compares equal to a device of the same type and index, and, for
    convenience, to its own string (``device("cpu") == "cpu"``).
    """

    __slots__ = ("type", "index")

    def __init__(self, type, index=None):  # noqa: A002  (torch's argument name)
        if isinstance(type, device):
            if index is not None:
                raise TypeError("device(device, index): the index goes with a device type string")
            type, index = type.type, type.index
        elif isinstance(type, int) and not isinstance(type, bool):  # device(0) is cuda:0, as PyTorch
            type, index = "cuda", type
        elif not isinstance(type, str):
            raise TypeError(f"device() needs a string, a device or an int, got {type!r}")
        elif ":" in type:
            if index is not None:
                raise RuntimeError(f"type (string) must not include an index because index was passed "
                                   f"explicitly: {type}")
            type, _, number = type.partition(":")
            if not number.isdigit() or type not in DEVICE_TYPES:
                raise RuntimeError(f"Invalid device string: '{type}:{number}'")
            index = int(number)
        if type not in DEVICE_TYPES:
            raise RuntimeError(f"Expected one of {', '.join(DEVICE_TYPES)} device type at start of device "
                               f"string: {type}")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
            raise RuntimeError(f"Device index must not be negative, got {index!r}")
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "index", index)

    def __setattr__(self, name, value):
        raise AttributeError(f"device objects are immutable (cannot set {name})")

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except RuntimeError:
                return False
        if not isinstance(other, device):
            return NotImplemented
        return self.type == other.type and self.index == other.index

    def __hash__(self):
        return hash(str(self))

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    def __reduce__(self):
        return device, (self.type, self.index)

    def __enter__(self):
        """``with device("cpu"):`` makes this the factories' default device inside the block (PyTorch's
        device context), and the one before it again after; a device chainrule cannot serve raises
        at once, as ``set_default_device`` does."""
        where = resolve(self)
        _outer_defaults.append(_default)
        set_default_device(where)
        return self

    def __exit__(self, *exception):
        global _default
        _default = _outer_defaults.pop()


def served():
    """The device every tensor of this process lives on (the array module's)."""
    if backend.xp.__name__ == "cupy":
        return device("cuda", backend.xp.cuda.Device().id)
    return device("cpu")


def resolve(requested):
    """The served device for ``requested`` (a device, a string, an int, or None for the default
    device); a RuntimeError naming the device when chainrule cannot put tensors there."""
    if requested is None:
        return _default if _default is not None else served()
    wanted = requested if isinstance(requested, device) else device(requested)
    here = served()
    if wanted.type == here.type and wanted.index in (None, here.index):
        return here
    if wanted.type == "meta":  # shapes without values (meta.py), on any served device
        return META
    if wanted.type == "cpu" and wanted.index in (None, 0) and here.type == "cpu":
        return here
    raise RuntimeError(f"device '{wanted}' is not available: chainrule puts every tensor on {here}, the "
                       f"device of its array module ({backend.xp.__name__}). {_how_to_get(wanted)}")


def legacy_device_checked(requested, data=None, form="torch.Tensor(tensor, device=device)"):
    """PyTorch's legacy constructors (``torch.Tensor(...)``, ``FloatTensor(...)``, ``x.new(...)``) take a device=
    of the served device's type only (the CPU's: a CUDA one is refused, whatever is installed), and none with a
    tensor to alias (``form`` names the call)."""
    if requested is None:
        return
    from .tensor import Tensor  # (the tensor module builds on this one: imported when needed)

    if isinstance(data, Tensor):
        use = "torch.tensor(...) or torch.as_tensor(...)" if form.startswith("torch.") else "torch.as_tensor(...)"
        raise RuntimeError(f"Legacy tensor {'constructor' if form.startswith('torch.') else 'new'} of the form "
                           f"{form} is not supported.  Use {use} instead.")
    wanted = requested if isinstance(requested, device) else device(requested)
    if wanted.type != served().type:
        raise RuntimeError(f"legacy constructor expects device type: {served().type} but device type: {wanted.type} "
                           "was passed")


def _how_to_get(wanted):
    if wanted.type == "cuda" and backend.xp.__name__ != "cupy":
        return ("CUDA needs CuPy: install it and set CHAINRULE_ARRAY_MODULE=cupy before importing autograd; "
                "autograd.cuda.is_available() says whether it is on.")
    return f"Use '{served()}' (autograd.cuda.is_available() says whether CUDA is on)."


META = device("meta")
_default = None
_outer_defaults = []  # the default devices that enclosing `with device(...)` blocks will restore


def set_default_device(requested):
    """The device that factories use when ``device=`` is left out (None: the served one)."""
    global _default
    _default = None if requested is None else resolve(requested)


def get_default_device():
    return resolve(None)


_device = device  # (get_device_module's argument takes PyTorch's name, device)


def get_device_module(device=None):
    """The module of a device type, as ``torch.get_device_module``: ``autograd.cpu`` for "cpu",
    ``autograd.cuda`` for "cuda"; without a device, the accelerator's (cuda, when tensors live on a
    GPU) or else the CPU's. A device type with no module here raises, naming it."""
    import importlib

    if isinstance(device, _device):
        kind = device.type
    elif isinstance(device, str):
        kind = _device(device).type
    elif device is None:
        kind = "cpu" if backend.xp.__name__ == "numpy" else "cuda"
    else:
        raise RuntimeError(f"Invalid value of device '{device}', expect torch.device, str, or None")
    if kind not in ("cpu", "cuda"):
        raise RuntimeError(f"Device '{kind}' does not have a corresponding module registered as 'autograd.{kind}'.")
    return importlib.import_module(f"autograd.{kind}")
