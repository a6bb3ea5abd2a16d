"""Operators defined by their schema text, PyTorch's older API: ``Library("mylib", "DEF").define(schema)`` and
``lib.impl(name, kernel, dispatch_key)``, or ``torch.library.define`` / ``impl``."""


from .operators import _OPS, CustomOpDef, OpOverload, _op
from .schema import _schema_error, _signature_of, _split_schema

# -- operators defined by their schema: torch.library.Library ------------------------------------------------


class _DefinedOperator(CustomOpDef):
    """An operator given by its schema text (``Library.define``), its kernels registered after (``Library.impl``).
    A kernel for a device ("CPU", "CompositeExplicitAutograd") runs as one opaque step, as a custom_op's does (its
    gradient from ``register_autograd``; without one, backward warns and gives none, as PyTorch's fallback); a
    "CompositeImplicitAutograd" or "Autograd" kernel is differentiated through its own operations."""

    _silent_without_formula = True  # (PyTorch's old fallback: backward warns and gives no gradient)

    def __init__(self, namespace, name, schema, overload="default"):
        signature, mutated = _signature_of(schema, f"{namespace}::{name}")
        self._overload = overload

        def missing_kernel(*args, **kwargs):
            raise NotImplementedError(f"Could not run '{namespace}::{name}' with arguments from the 'CPU' backend. "
                                      "This could be because the operator doesn't exist for this backend.")

        missing_kernel.__signature__ = signature
        super().__init__(namespace, name, schema, missing_kernel, tuple(mutated))
        self._composite = None  # a kernel that autograd records through

    def __repr__(self):  # (PyTorch names it by its overload)
        return f"{self._namespace}.{self._name}.{self._overload}"

    def __call__(self, *args, **kwargs):
        if self._composite is not None:
            return self._called(self._composite, self._bound(args, kwargs))
        return super().__call__(*args, **kwargs)

    def _impl(self, fn, dispatch_key):
        if dispatch_key in ("", "CompositeImplicitAutograd", "Autograd", "AutogradCPU"):
            self._composite = fn
        elif dispatch_key == "Meta":
            self._fake_fn = fn
        else:
            self.register_kernel(_DISPATCH_KEY_DEVICES.get(dispatch_key, dispatch_key.lower()), fn)


_DISPATCH_KEY_DEVICES = {"CompositeExplicitAutograd": None, "CPU": "cpu", "CUDA": "cuda", "MPS": "mps"}


_RESERVED_NAMESPACES = ("prim",)


class Library:
    """``torch.library.Library(ns, kind)``: where operators of namespace ``ns`` are defined ("DEF", "FRAGMENT":
    ``define(schema)``) and given kernels ("IMPL" too: ``impl(name, fn, dispatch_key)``)."""

    def __init__(self, ns, kind, dispatch_key=""):
        if kind not in ("IMPL", "DEF", "FRAGMENT"):
            raise ValueError(f"Unsupported kind: {kind}")
        if ns in _RESERVED_NAMESPACES and kind in ("DEF", "FRAGMENT"):
            raise ValueError(f"{ns} is a reserved namespace. Please try creating a library with another name.")
        self.ns, self.kind, self.dispatch_key = ns, kind, dispatch_key
        self._op_defs, self._op_impls = set(), set()

    def __repr__(self):
        return f"Library(kind={self.kind}, ns={self.ns}, dispatch_key={self.dispatch_key})>"

    def define(self, schema, alias_analysis="", *, tags=()):
        """Define the operator ``schema`` ("name(Tensor x, float s=1.0) -> Tensor") in this namespace; returns
        its name."""
        if alias_analysis not in ("", "FROM_SCHEMA", "CONSERVATIVE"):
            raise RuntimeError(f"Invalid alias_analysis type {alias_analysis}")
        full_name, arguments, returns = _split_schema(schema)
        qualname = f"{self.ns}::{full_name}"  # (with its overload's name, "scale.Tensor", where it has one)
        if qualname in _OPS:
            raise RuntimeError(f"Tried to register an operator ({qualname}{schema[len(full_name):]}) with the same "
                               "name and overload name multiple times. Each overload's schema should only be "
                               "registered with a single call to def().")
        name, _, overload = full_name.partition(".")
        _OPS[qualname] = _DefinedOperator(self.ns, name, f"({arguments}) -> {returns}", overload or "default")
        self._op_defs.add(qualname)
        return name

    def impl(self, op_name, fn, dispatch_key="", *, with_keyset=False, allow_override=True):
        """``fn`` as the operator's kernel for ``dispatch_key`` (a device's "CPU", "CompositeExplicitAutograd" for
        every device, "CompositeImplicitAutograd" (the default) for a kernel autograd differentiates, "Meta")."""
        if not callable(fn):
            raise TypeError(f"Input function is required to be a callable but found type {type(fn)}")
        key = dispatch_key or self.dispatch_key
        name = op_name.name() if isinstance(op_name, OpOverload) else str(op_name)
        qualname = name if "::" in name else f"{self.ns}::{name}"
        if not allow_override and (qualname, key) in self._op_impls:
            raise RuntimeError(f"This is not allowed since there's already a kernel registered from python "
                               f"overriding {qualname.split('::')[-1]}'s behavior for {key} dispatch key and "
                               f"{self.ns} namespace.")
        op = _OPS.get(qualname.removesuffix(".default"))
        if not isinstance(op, _DefinedOperator):
            raise RuntimeError(f"impl: {qualname} is not an operator defined with Library.define here")
        op._impl(fn, key)
        self._op_impls.add((qualname, key))

    def _register_fake(self, op_name, fn, _stacklevel=1, *, allow_override=True):
        _op(f"{self.ns}::{op_name}").register_fake(fn)


_keep_alive = []  # the Library objects define and impl make (PyTorch keeps them so)


def define(qualname, schema, *, lib=None, tags=()):
    """Define the operator ``qualname`` ("namespace::name") with ``schema`` ("(Tensor x) -> Tensor"). (The old
    form, ``define(lib, "name(Tensor x) -> Tensor")``, decorates its function as the operator's kernel.)"""
    if isinstance(qualname, Library):
        lib = qualname

        def wrap(f):
            lib.impl(lib.define(schema), f)
            return f

        return wrap
    if not isinstance(qualname, str):
        raise ValueError(f"define(qualname, schema): expected qualname to be instance of str, got {type(qualname)}")
    namespace, _, name = qualname.partition("::")
    if lib is None:
        lib = Library(namespace, "FRAGMENT")
        _keep_alive.append(lib)
    if not schema.lstrip().startswith("("):  # (the name is qualname's: the schema has none)
        raise _schema_error(schema)
    _split_schema(schema)
    lib.define(name + schema, tags=tags)


def impl(qualname, types, func=None, *, lib=None):
    """Register ``func`` as the kernel of ``qualname`` for ``types`` (device types: "cpu", "cuda", "default" for
    all; or dispatch keys); a decorator without ``func``. (The old form, ``impl(lib, name, dispatch_key)``,
    decorates.)"""
    if isinstance(qualname, Library):
        lib, name, dispatch_key = qualname, types, func or ""

        def wrap(f):
            lib.impl(name, f, dispatch_key)
            return f

        return wrap
    keys = [types] if isinstance(types, str) else list(types)
    keys = ["CompositeExplicitAutograd" if key == "default" else key.upper() if key.islower() else key
            for key in keys]

    def register(func):
        use = lib
        if use is None:
            use = Library(qualname.partition("::")[0], "FRAGMENT")
            _keep_alive.append(use)
        for key in keys:
            use.impl(qualname, func, key)

    return register if func is None else register(func)


def fallthrough_kernel():
    """A dummy function to pass to ``Library.impl`` in order to register a fallthrough."""
    raise NotImplementedError("fallthrough_kernel() should never be called.")
