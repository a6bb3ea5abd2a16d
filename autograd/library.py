"""Custom operators, as ``torch.library``: a Python function made an operator of the library's namespace.

    @autograd.library.custom_op("mylib::numpy_sin", mutates_args=())
    def numpy_sin(x: Tensor) -> Tensor:
        return autograd.from_numpy(np.sin(x.numpy()))

    numpy_sin.register_autograd(backward, setup_context=setup_context)

The function runs as one opaque step: its own operations are not recorded (it may leave the library, as
through NumPy above), so its derivative comes from ``register_autograd``: ``setup_context(ctx, inputs,
output)`` keeps what backward needs and ``backward(ctx, *grads)`` gives dL/dinput for each input, as an
``autograd.Function`` does (it is one underneath). Without it, a backward through the operator raises
PyTorch's error instead of silently giving no gradient. Only the positional arguments are differentiated (a
keyword-only one reaches ``setup_context(ctx, inputs, keyword_only_inputs, output)``), and a list of tensors is
differentiated tensor by tensor. The function's type annotations are its schema (``(Tensor x) -> Tensor``),
each call's arguments checked against it; an output may not be, or share memory with, an input.

The operator is also ``autograd.ops.mylib.numpy_sin`` (PyTorch's ``torch.ops.mylib.numpy_sin``), and
``autograd.ops.aten.<name>`` reaches the library's own functions by their ATen names. ``register_fake``
keeps a function giving an output's shape and dtype (``opcheck`` compares it with the real output), and
``register_kernel`` replaces the function on a device. ``register_vmap``'s rule is kept and unused:
``autograd.func.vmap`` calls the operator once per example (what PyTorch does without a rule), which a correct
rule agrees with. What compilation would use (``register_autocast``, ``register_torch_dispatch``) is kept and
unused too: nothing here compiles.

The older API defines an operator by its schema text and registers kernels per dispatch key:
``Library("mylib", "DEF").define("f(Tensor x) -> Tensor")``, then ``lib.impl("f", kernel, "CPU")`` (or
``torch.library.define`` / ``torch.library.impl``).
"""

import ast
import collections.abc
import functools
import inspect
import numbers
import operator
import re
import types
import typing
import warnings

from .device import device
from .function import Function
from .graph import bump_version, is_grad_enabled, no_grad
from .tensor import Tensor

_OPS = {}  # "namespace::name" -> CustomOpDef
_SCALAR = "Scalar"


# -- schemas --------------------------------------------------------------------------------------------------


def _origin(annotation):
    return typing.get_origin(annotation), typing.get_args(annotation)


def _optional_of(annotation):
    """T for Optional[T] (or T | None), else None."""
    origin, args = _origin(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = tuple(a for a in args if a is not type(None))
        return functools.reduce(operator.or_, rest)
    return None


def _sequence_of(annotation):
    origin, args = _origin(annotation)
    if origin in (list, collections.abc.Sequence) and len(args) == 1:
        return args[0]
    return None


def _scalar_union(annotation):
    origin, args = _origin(annotation)
    return origin in (typing.Union, types.UnionType) and set(args) == {int, float, bool}


def _base_type(annotation):
    if annotation is Tensor:
        return "Tensor"
    if _scalar_union(annotation):
        return _SCALAR
    return {int: "SymInt", float: "float", bool: "bool", str: "str", device: "Device"}.get(
        annotation, "ScalarType" if _is_dtype(annotation) else None)


def _is_dtype(annotation):
    from . import dtype  # (autograd.dtype: what a dtype is)

    return annotation is dtype


def _schema_type(annotation):
    """The schema's word for a parameter annotation (Tensor, SymInt[], float?, ...), or None."""
    inner = _optional_of(annotation)
    if inner is not None:
        word = _schema_type(inner)
        unsupported = word is None or word.endswith("?") or word in ("Tensor[]", "Tensor?[]", "Scalar[]")
        return None if unsupported else word + "?"  # (PyTorch has no optional list of tensors or of numbers)
    element = _sequence_of(annotation)
    if element is not None:
        optional = _optional_of(element)
        if optional is Tensor:
            return "Tensor?[]"
        word = _base_type(element)
        return None if word in (None, "str", "Device", "ScalarType") else word + "[]"
    return _base_type(annotation)


def _return_type(annotation, error):
    if annotation is None or annotation is type(None):
        return "()"
    if annotation is inspect.Parameter.empty:
        error("No return type annotation was provided. Please add one.")
    origin, args = _origin(annotation)
    if origin is tuple:
        words = ", ".join(_return_type(a, error) for a in args)
        return f"(({words}))" if len(args) == 1 else f"({words})"  # (a tuple of one: PyTorch's double brackets)
    word = _schema_type(annotation)
    if word is None:
        error(f"Return has unsupported type {annotation}.")
    return word


def _default_text(value):
    if isinstance(value, (str, device)):
        return f'"{value}"'
    return str(value).removeprefix("torch.") if value is not None else "None"


def infer_schema(prototype_function, /, *, mutates_args, op_name=None):
    """The schema of ``prototype_function`` from its annotations, as PyTorch writes it:
    ``(Tensor(a0!) x, SymInt[] box, float s=1.0) -> Tensor`` (``op_name`` first if given). ``mutates_args``
    names the arguments it writes ("unknown": every tensor argument)."""
    signature = inspect.signature(prototype_function)

    def error(what):
        raise ValueError(f"infer_schema(func): {what} Got func with signature {signature})")

    hints = typing.get_type_hints(prototype_function)
    parts, keyword_only = [], False
    for index, (name, parameter) in enumerate(signature.parameters.items()):
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            error("We do not support positional-only args, varargs, or varkwargs.")
        if parameter.annotation is inspect.Parameter.empty:
            error(f"Parameter {name} must have a type annotation.")
        annotation = hints.get(name, parameter.annotation)
        word = _schema_type(annotation)
        if word is None:
            error(f"Parameter {name} has unsupported type {annotation}. The valid types are: Tensor, int, float, "
                  "bool, str, int | float | bool, dtype, device, their Optional forms, and Sequences of Tensor, int, "
                  "float, bool and int | float | bool.")
        mutated = (mutates_args == "unknown" and word.startswith("Tensor")) or (
            mutates_args != "unknown" and name in mutates_args)
        if mutated:
            if not word.startswith("Tensor"):
                error(f"Parameter {name} is in mutable_args but only Tensors or collections of Tensors can be "
                      "mutated")
            word = f"Tensor(a{index}!)" + word[len("Tensor"):]  # (the alias set is named by position, as PyTorch's)
        if parameter.kind is parameter.KEYWORD_ONLY and not keyword_only:
            parts.append("*")
            keyword_only = True
        text = f"{word} {name}"
        if parameter.default is not inspect.Parameter.empty:
            from . import dtype

            if not isinstance(parameter.default, (type(None), int, float, bool, str, device, dtype)):
                error(f"Parameter {name} has an unsupported default value type {type(parameter.default)}. "
                      "Please file an issue on GitHub so we can prioritize this.")
            text += f"={_default_text(parameter.default)}"
        parts.append(text)
    if mutates_args != "unknown":
        unknown = set(mutates_args) - set(signature.parameters)
        if unknown:
            error(f"{unknown} in mutates_args were not found in the custom op's signature. mutates_args should "
                  "contain the names of all args that the custom op mutates, or just the string 'unknown' if you "
                  "don't know.")
    returns = _return_type(hints.get("return", signature.return_annotation), error)
    return f"{op_name or ''}({', '.join(parts)}) -> {returns}"


# -- operators ------------------------------------------------------------------------------------------------


class CustomOpDef:
    """An operator made by ``custom_op``: call it as the function it wraps."""

    def __init__(self, namespace, name, schema, fn, mutates_args):
        self._namespace, self._name, self._schema, self._init_fn = namespace, name, schema, fn
        self._mutates_args = mutates_args
        self._signature = inspect.signature(fn)
        self._kernels = {}  # device type -> function
        self._fake_fn = self._backward_fn = self._setup_context_fn = self._vmap_fn = None
        self._autocast = {}
        self._torch_dispatch = {}
        self._function = self._packet = None
        self.__name__ = name
        self.__doc__ = fn.__doc__

    def __repr__(self):
        return f"<CustomOpDef({self._qualname})>"

    @property
    def _qualname(self):
        return f"{self._namespace}::{self._name}"

    def _declaration(self):
        overload = getattr(self, "_overload", "default")  # (an operator defined by schema may be an overload)
        return f"{self._qualname}{'' if overload == 'default' else '.' + overload}{self._schema}"

    # registrations, as decorators or calls
    def register_kernel(self, device_types, fn=None, /):
        def register(fn):
            for kind in [device_types] if isinstance(device_types, str) or device_types is None else device_types:
                self._kernels[kind] = fn
            return fn

        return register if fn is None else register(fn)

    def register_fake(self, fn, /):
        self._fake_fn = fn
        return fn

    def register_autograd(self, backward, /, *, setup_context=None):
        """``backward(ctx, *grads)``: dL/dinput for each input (None where there is none); ``setup_context(ctx,
        inputs, output)`` keeps what it needs (``ctx.save_for_backward``, attributes). An operator that writes an
        argument has none, as PyTorch's."""
        if "!)" in self._schema:
            raise RuntimeError(f"Cannot register autograd formula for non-functional operator {self!r} with schema "
                               f"{self._declaration()}. Please create a functional operator and register an autograd "
                               "formula for that.")
        self._backward_fn, self._setup_context_fn = backward, setup_context

    def register_vmap(self, func=None, /):
        def register(func):
            self._vmap_fn = func
            return func

        return register if func is None else register(func)

    def register_autocast(self, device_type, cast_inputs):
        self._autocast[device_type] = cast_inputs

    def register_torch_dispatch(self, torch_dispatch_class, fn=None, /):
        def register(fn):
            self._torch_dispatch[torch_dispatch_class] = fn
            return fn

        return register if fn is None else register(fn)

    def set_kernel_enabled(self, device_type, enabled=True):
        raise NotImplementedError("set_kernel_enabled: kernels here are plain functions, replaced by register_kernel")

    # calling
    def _bound(self, args, kwargs):
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as error:
            positional = sum(p.kind is not p.KEYWORD_ONLY for p in self._signature.parameters.values())
            if len(args) > positional:
                raise RuntimeError(f"{self._qualname}() expected at most {positional} argument(s) but received "
                                   f"{len(args)} argument(s). Declaration: {self._declaration()}") from None
            missing = next((n for n in self._signature.parameters if n not in
                            self._signature.bind_partial(*args, **kwargs).arguments and
                            self._signature.parameters[n].default is inspect.Parameter.empty), None)
            if missing is not None:
                raise RuntimeError(f"{self._qualname}() is missing value for argument '{missing}'. Declaration: "
                                   f"{self._declaration()}") from None
            raise RuntimeError(f"{self._qualname}(): {error}. Declaration: {self._declaration()}") from None
        bound.apply_defaults()
        for position, ((name, value), word) in enumerate(zip(bound.arguments.items(), self._argument_types)):
            if not _accepts(word, value):
                raise RuntimeError(f"{self._qualname}() Expected a value of type '{_type_name(word)}' for argument "
                                   f"'{name}' but instead found type '{type(value).__name__}'.\nPosition: "
                                   f"{position}\nValue: {value!r}\nDeclaration: {self._declaration()}")
        return bound.arguments

    @functools.cached_property
    def _argument_types(self):
        """The schema's word for each argument, without its alias set: Tensor, float?, SymInt[], ..."""
        parts = [p for p in _schema_parts(_split_schema(self._schema)[1]) if p != "*"]
        return [re.sub(r"\(\w+!?\)", "", part.partition("=")[0].rpartition(" ")[0]) for part in parts]

    def _kernel(self, arguments):
        tensors = [v for v in arguments.values() if isinstance(v, Tensor)]
        kind = tensors[0].device.type if tensors else "cpu"
        return self._kernels.get(kind, self._kernels.get(None, self._init_fn))

    def _run(self, arguments):
        """The kernel on ``arguments``, unrecorded, its outputs checked not to alias its inputs. Each argument the
        schema says it writes counts one write (its version, and its views'), however the kernel wrote it: through
        NumPy, a tensor saved for backward before is then known to have changed, as PyTorch's."""
        written = list(_tensors_in(v for name, v in arguments.items() if self._writes(name)))
        versions = [x._version_cell[1] for x in written]
        with no_grad():
            output = self._called(self._kernel(arguments), arguments)
        for x, version in zip(written, versions):
            bump_version(x)
            x._version_cell[1] = version + 1  # (one write, as PyTorch's count, whatever the kernel did within)
        inputs = [v for v in _tensors_in(arguments.values())]
        outputs = list(_tensors_in(output if isinstance(output, (tuple, list)) else [output]))
        for k, y in enumerate(outputs):
            if any(_shares_memory(y, x) for x in inputs + outputs[:k]):
                raise RuntimeError(
                    f"{self._name} (with implementation in {self._init_fn.__module__}): The output of this custom "
                    "operator (1) must not also be an input to this custom operator and (2) may not alias any "
                    "inputs to this custom operator or other returns. The most common way to trigger this error "
                    "is if we have y = custom_op(x) and y and x are the same Tensor. Please instead return a clone "
                    "of the offending output tensor(s) (e.g. return x.clone()) or refactor the custom operator to "
                    "not return y.")
        return output

    def __call__(self, *args, **kwargs):
        arguments = self._bound(args, kwargs)
        positional = [v for name, v in arguments.items() if name not in self._keyword_only]
        if is_grad_enabled() and any(x.requires_grad for x in _tensors_in(positional)):
            keyword_only = {name: arguments[name] for name in self._keyword_only}
            call = _Call(positional, keyword_only)
            return call.rebuilt_output(self._autograd_function().apply(*call.flat_inputs, call))
        return self._run(arguments)

    def _called(self, function, arguments):
        """``function`` (a kernel, the fake function) on ``arguments``: the positional ones by position (a kernel's
        parameters may be named otherwise than the schema's), the keyword-only ones by name."""
        return function(*(v for name, v in arguments.items() if name not in self._keyword_only),
                        **{name: arguments[name] for name in self._keyword_only})

    def _writes(self, name):
        if self._mutates_args == "unknown":
            return True  # (every tensor argument may be written)
        return name in self._mutates_args

    @functools.cached_property
    def _keyword_only(self):
        return [name for name, p in self._signature.parameters.items() if p.kind is p.KEYWORD_ONLY]

    def _autograd_function(self):
        """The autograd.Function the operator runs as when an input requires grad (made once). It takes the
        positional arguments with each list of tensors spread out (each tensor its own input, as PyTorch's), and
        last the call's ``_Call`` (the lists' lengths, the keyword-only arguments)."""
        if self._function is None:
            op, names = self, [n for n in self._signature.parameters if n not in self._keyword_only]

            def forward(*values):
                call = values[-1]
                arguments = dict(zip(names, call.grouped(values[:-1])), **call.keyword_only)
                return call.flat_output(op._run(arguments))

            def setup_context(ctx, inputs, output):
                call = ctx._custom_op_call = inputs[-1]
                if op._setup_context_fn is None:
                    return
                inputs, output = tuple(call.grouped(inputs[:-1])), call.rebuilt_output(output)
                if op._keyword_only:
                    op._setup_context_fn(ctx=ctx, inputs=inputs, keyword_only_inputs=call.keyword_only,
                                         output=output)
                else:
                    op._setup_context_fn(ctx=ctx, inputs=inputs, output=output)

            def backward(ctx, *grads):
                if op._backward_fn is None and isinstance(op, _DefinedOperator):
                    warnings.warn(f"{op._qualname}: an autograd kernel was not registered to the Autograd key(s) but "
                                  "we are trying to backprop through it. This may lead to silently incorrect "
                                  "behavior. This behavior is deprecated and will be removed in a future version of "
                                  "PyTorch. If your operator is differentiable, please ensure you have registered an "
                                  "autograd kernel to the correct Autograd key (e.g. DispatchKey::Autograd, "
                                  "DispatchKey::CompositeImplicitAutograd).", UserWarning, stacklevel=2)
                    return (None,) * len(ctx.needs_input_grad)  # (PyTorch's old behaviour: no gradient)
                if op._backward_fn is None:
                    raise RuntimeError(f"Trying to backward through {op._namespace}.{op._name}.default but no "
                                       "autograd formula was registered. Please use register_autograd to add one.")
                call, needs_input_grad = ctx._custom_op_call, ctx.needs_input_grad
                ctx.needs_input_grad = tuple(call.grouped(needs_input_grad[:-1]))  # (what the user's inputs were)
                try:
                    result = op._backward_fn(ctx, *call.grouped_output(grads))
                finally:
                    ctx.needs_input_grad = needs_input_grad
                return (*call.flat_grads(result if isinstance(result, tuple) else (result,)), None)

            name = f"GeneratedBackwardFor_{self._namespace}_{self._name}_default"
            self._function = type(name, (Function,), {"forward": staticmethod(forward),
                                                      "setup_context": staticmethod(setup_context),
                                                      "backward": staticmethod(backward)})
        return self._function


class _Call:
    """One call of an operator through its autograd.Function: its positional arguments with each list of
    tensors spread out (``lengths``: each argument's list length, None for one that is no list), its keyword-only
    arguments, and how its output's lists were spread out likewise."""

    def __init__(self, positional, keyword_only):
        self.lengths = [len(v) if _is_tensor_list(v) else None for v in positional]
        self.flat_inputs = [x for v, n in zip(positional, self.lengths) for x in (v if n is not None else [v])]
        self.keyword_only = keyword_only
        self.output_lengths = self.output_is_tuple = None

    @staticmethod
    def _grouped(flat, lengths):
        flat = iter(flat)
        return [next(flat) if n is None else [next(flat) for _ in range(n)] for n in lengths]

    def grouped(self, flat):
        return self._grouped(flat, self.lengths)

    def flat_output(self, output):
        self.output_is_tuple = isinstance(output, tuple)
        outputs = output if self.output_is_tuple else (output,)
        self.output_lengths = [len(y) if isinstance(y, list) else None for y in outputs]
        return tuple(x for y, n in zip(outputs, self.output_lengths) for x in (y if n is not None else [y]))

    def grouped_output(self, flat):
        return self._grouped(flat, self.output_lengths)

    def rebuilt_output(self, flat):
        outputs = self.grouped_output(flat if isinstance(flat, tuple) else (flat,))
        return tuple(outputs) if self.output_is_tuple else outputs[0]

    def flat_grads(self, grads):
        """The gradients backward gave for the user's inputs, spread out as the inputs were (None for a list: a
        None for each of its tensors)."""
        if len(grads) > len(self.lengths) and all(g is None for g in grads[len(self.lengths):]):
            grads = grads[:len(self.lengths)]
        left_out = self.grouped(self.flat_inputs)[len(grads):]
        if len(grads) < len(self.lengths) and next(_tensors_in(left_out), None) is None:
            # (PyTorch's dispatcher drops trailing arguments left at their defaults, so a backward may give no
            # gradient for them: none is needed, they are no tensors)
            grads = (*grads, *[None] * (len(self.lengths) - len(grads)))
        if len(grads) != len(self.lengths):
            return grads  # (the Function then raises PyTorch's "returned an incorrect number of gradients")
        flat = []
        for g, n in zip(grads, self.lengths):
            if n is None:
                flat.append(g)
            elif g is None:
                flat.extend([None] * n)
            elif len(g) != n:
                raise RuntimeError(f"Expected the return from backward to be of the same structure as the inputs: "
                                   f"a list of {len(g)} gradients for a list of {n} tensors")
            else:
                flat.extend(g)
        return flat


def _is_tensor_list(value):
    return isinstance(value, (list, tuple)) and any(isinstance(x, Tensor) for x in value)


def _accepts(word, value):
    """Whether ``value`` may be passed for an argument of the schema type ``word``, by PyTorch's rules (a number for
    a float, a one-element tensor for a number, a tuple for a list, ...)."""
    if word.endswith("?"):
        return value is None or _accepts(word[:-1], value)
    if word.endswith("[]"):
        return isinstance(value, (list, tuple)) and all(_accepts(word[:-2], v) for v in value)
    is_number = isinstance(value, Tensor) and value.ndim == 0
    if word == "Tensor":
        return isinstance(value, Tensor)
    if word == "float":
        return isinstance(value, numbers.Real) or is_number
    if word in ("SymInt", "int"):  # (a schema written by hand says int)
        return isinstance(value, numbers.Integral) or is_number
    if word == "bool":
        return value is None or isinstance(value, numbers.Real) or is_number
    if word == "Scalar":
        return isinstance(value, numbers.Number)
    if word == "str":
        return isinstance(value, str)
    if word == "Device":
        return isinstance(value, (device, str))
    if word == "ScalarType":
        from . import dtype

        return isinstance(value, (dtype, numbers.Integral))
    return True  # (a type this library does not check)


def _type_name(word):
    """PyTorch's name for a schema type in its argument errors: Optional[List[int]], number, ..."""
    if word.endswith("?"):
        return f"Optional[{_type_name(word[:-1])}]"
    if word.endswith("[]"):
        return f"List[{_type_name(word[:-2])}]"
    return {"SymInt": "int", "Scalar": "number", "ScalarType": "int"}.get(word, word)


def _tensors_in(values):
    for v in values:
        if isinstance(v, Tensor):
            yield v
        elif isinstance(v, (list, tuple)):
            yield from (x for x in v if isinstance(x, Tensor))


def _shares_memory(a, b):
    from .backend import memory_owner

    return a is b or (a.numel() and b.numel() and memory_owner(a._data) is memory_owner(b._data))


def custom_op(name, fn=None, /, *, mutates_args, device_types=None, schema=None):
    """``fn`` (or the decorated function) as the operator ``name`` ("namespace::name"): see the module's
    docstring. ``mutates_args``: the arguments it writes in place (``()`` for none, "unknown" if not known)."""
    namespace, separator, short = name.partition("::")
    if not separator or not namespace or not short:
        raise ValueError(f"custom_op(name, ...): expected a qualified name 'namespace::name', got {name!r}")
    if mutates_args != "unknown" and isinstance(mutates_args, str):
        raise ValueError("mutates_args must be a tuple of argument names (a str names them one letter at a "
                         f"time): got {mutates_args!r}")

    def make(fn):
        # (a name defined again, as a notebook cell run twice does, is the new function's: PyTorch's too)
        text = schema if schema is not None else infer_schema(fn, mutates_args=mutates_args)
        keyword_only = _schema_parts(_split_schema(text)[1])
        if "*" in keyword_only and any(p.startswith("Tensor") for p in keyword_only[keyword_only.index("*"):]):
            raise NotImplementedError(f"custom_op with kwarg-only Tensor args. Please make your tensors not "
                                      f"kwarg-only. Got: {short}{text}")
        op = CustomOpDef(namespace, short, text, fn, mutates_args)
        if device_types is not None:
            op.register_kernel(device_types, fn)
        _OPS[name] = op
        return op

    return make if fn is None else make(fn)


# -- operators defined by their schema: torch.library.Library ------------------------------------------------


class _DefinedOperator(CustomOpDef):
    """An operator given by its schema text (``Library.define``), its kernels registered after (``Library.impl``).
    A kernel for a device ("CPU", "CompositeExplicitAutograd") runs as one opaque step, as a custom_op's does (its
    gradient from ``register_autograd``; without one, backward warns and gives none, as PyTorch's fallback); a
    "CompositeImplicitAutograd" or "Autograd" kernel is differentiated through its own operations."""

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


def _schema_parts(text):
    """The top-level comma-separated parts of a schema's argument list (a part may hold brackets: Tensor(a!))."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [part for part in parts if part]


def _split_schema(schema):
    """(name, argument text, return text) of ``name(arguments) -> returns`` (name may be empty)."""
    open_at = schema.find("(")
    depth = 0
    for i in range(open_at, len(schema)):
        depth += {"(": 1, ")": -1}.get(schema[i], 0)
        if depth == 0:
            rest = schema[i + 1:].strip()
            if open_at < 0 or not rest.startswith("->"):
                break
            return schema[:open_at].strip(), schema[open_at + 1:i], rest[2:].strip()
    raise _schema_error(schema)


def _schema_error(schema):
    return ValueError(f'define(qualname, schema, ...): expected schema to look like e.g. "(Tensor x) -> Tensor" '
                      f'but got "{schema}"')


def _default_value(text):
    """The value a schema's default text stands for: a number, True, None, "a string", [1, 2], float32."""
    import autograd

    if text.startswith('"') or text.startswith("'"):
        return text[1:-1]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = getattr(autograd, text, None)  # (a ScalarType default: float32)
        if isinstance(value, autograd.dtype):
            return value
        raise ValueError(f"the schema's default {text!r} is not a value this library reads") from None


def _signature_of(schema, qualname):
    """The Python signature an operator's schema text gives, and the names of the arguments it writes (a)!."""
    _, arguments, _ = _split_schema(schema)
    parameters, mutated, kind = [], [], inspect.Parameter.POSITIONAL_OR_KEYWORD
    for part in _schema_parts(arguments):
        if part == "*":
            kind = inspect.Parameter.KEYWORD_ONLY
            continue
        declaration, _, default = part.partition("=")
        type_text, _, name = declaration.strip().rpartition(" ")
        if not type_text:
            raise ValueError(f"{qualname}: the schema's argument {part!r} has no type")
        if "!" in type_text:
            mutated.append(name)
        parameters.append(inspect.Parameter(name, kind, default=_default_value(default.strip()) if default else
                                            inspect.Parameter.empty))
    return inspect.Signature(parameters), mutated


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


def _op(op):
    if isinstance(op, CustomOpDef):
        return op
    if isinstance(op, OpOverloadPacket | OpOverload):
        return op._op
    if isinstance(op, str) and op in _OPS:
        return _OPS[op]
    raise ValueError(f"{op!r} is not an operator made by autograd.library.custom_op")


def register_kernel(op, device_types, func=None, /, *, lib=None):
    return _op(op).register_kernel(device_types, func)


def register_fake(op, func=None, /, *, lib=None, _stacklevel=1, allow_override=False):
    def register(func):
        return _op(op).register_fake(func)

    return register if func is None else register(func)


impl_abstract = register_fake


def register_autograd(op, backward, /, *, setup_context=None, lib=None):
    _op(op).register_autograd(backward, setup_context=setup_context)


def register_vmap(op, func=None, /, *, lib=None):
    return _op(op).register_vmap(func)


def register_torch_dispatch(op, torch_dispatch_class, func=None, /, *, lib=None):
    """Kept and unused, as the method: nothing here dispatches on tensor subclasses' modes."""
    return _op(op).register_torch_dispatch(torch_dispatch_class, func)


def register_autocast(op, device_type, cast_inputs, /, *, lib=None):
    _op(op).register_autocast(device_type, cast_inputs)


def get_ctx():
    """What a fake function is given to make data-dependent sizes (PyTorch's FakeTensor context): nothing
    traces here, so none is given."""
    raise RuntimeError("get_ctx() is only valid while tracing with fake tensors, which chainrule does not do")


# -- torch.ops ------------------------------------------------------------------------------------------------


class OpOverload:
    """``autograd.ops.mylib.op.default``: the operator itself."""

    def __init__(self, op, packet, overload="default"):
        self._op, self.overloadpacket, self._overloadname = op, packet, overload

    def __call__(self, *args, **kwargs):
        return self._op(*args, **kwargs)

    def name(self):
        return self._op._qualname + ("" if self._overloadname == "default" else f".{self._overloadname}")

    def __str__(self):
        return f"{self._op._namespace}.{self._op._name}.{self._overloadname}"

    def __repr__(self):
        return f"<OpOverload(op='{self._op._namespace}.{self._op._name}', overload='{self._overloadname}')>"


class OpOverloadPacket:
    """``autograd.ops.mylib.op``: the operator, its overloads by name (``.default``; an operator defined by
    schema may have others, ``.Tensor``, ``.Scalar``: a call goes to the first whose schema its arguments fit)."""

    def __init__(self, op, overloads=None):
        self._overloads = overloads or {"default": op}
        self._op = self._overloads.get("default", next(iter(self._overloads.values())))
        for overload, overload_op in self._overloads.items():
            setattr(self, overload, OpOverload(overload_op, self, overload))
        self._qualified_op_name = self._op._qualname

    def __getattr__(self, overload):
        if overload.startswith("_"):
            raise AttributeError(overload)
        raise AttributeError(f"The underlying op of '{self}' has no overload name '{overload}'")

    def __call__(self, *args, **kwargs):
        if len(self._overloads) == 1:
            return self._op(*args, **kwargs)
        errors = []
        for op in self._overloads.values():
            try:
                op._bound(args, kwargs)
            except RuntimeError as error:
                errors.append(str(error))
                continue
            return op(*args, **kwargs)
        raise RuntimeError("Overloaded torch operator invoked from Python failed to match any schema:\n" +
                           "\n\n".join(errors))

    def overloads(self):
        return list(self._overloads)

    def __str__(self):
        return f"{self._op._namespace}.{self._op._name}"

    def __repr__(self):
        return f"<OpOverloadPacket(op='{self}')>"


class _AtenPacket:
    """``autograd.ops.aten.add`` (and each overload: ``.Tensor``, ``.Scalar``, ``.default``, ...): the library's
    function of that name (an in-place name, ``add_``, the tensor method)."""

    def __init__(self, name, function):
        self._name, self._function = name, function

    def __call__(self, *args, **kwargs):
        return self._function(*args, **kwargs)

    def __getattr__(self, overload):
        if overload.startswith("__"):
            raise AttributeError(overload)
        return self

    def __repr__(self):
        return f"aten.{self._name}"


class _OpNamespace:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, op_name):
        if op_name.startswith("__"):
            raise AttributeError(op_name)
        if self._name == "aten":
            return _aten(op_name)
        qualname = f"{self._name}::{op_name}"
        overloads = {key.partition(".")[2] or "default": op for key, op in _OPS.items()
                     if key.partition(".")[0] == qualname}
        if not overloads:
            raise AttributeError(f"'_OpNamespace' '{self._name}' object has no attribute '{op_name}'")
        first = next(iter(overloads.values()))
        if first._packet is None or first._packet._overloads != overloads:  # (one packet per operator, as
            first._packet = OpOverloadPacket(first, overloads)  # PyTorch's, until an overload is added)
        return first._packet

    def __repr__(self):
        return f"<module 'torch.ops.{self._name}'>"


def _softmax(name):
    """aten's _softmax / _log_softmax: (input, dim, half_to_float), the last ignored (nothing here computes in
    half)."""
    def function(input, dim, half_to_float=False):  # noqa: A002  (ATen's name)
        import autograd

        return getattr(autograd, name)(input, dim)

    return function


_ATEN_ONLY = {"_softmax": _softmax("softmax"), "_log_softmax": _softmax("log_softmax")}


def _aten(name):
    import autograd

    function = getattr(autograd, name, None) or _ATEN_ONLY.get(name)
    if function is None and hasattr(Tensor, name):  # (a method only: view, expand, add_, ...)
        def function(self, *args, **kwargs):
            return getattr(self, name)(*args, **kwargs)
    if function is None or not callable(function):
        raise AttributeError(f"'_OpNamespace' 'aten' object has no attribute '{name}'")
    return _AtenPacket(name, function)


def op_namespace(name):
    """``autograd.ops.<name>``: the operators of namespace ``name`` (AttributeError if it has none)."""
    if name == "aten" or any(qualname.startswith(name + "::") for qualname in _OPS):
        return _OpNamespace(name)
    raise AttributeError(f"module 'autograd.ops' has no attribute '{name}'")


# -- checking an operator -------------------------------------------------------------------------------------


def opcheck(op, args, kwargs=None, *, test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                                  "test_aot_dispatch_dynamic"),
            raise_exception=True, rtol=None, atol=None):
    """Checks of a custom operator on ``args``: that it writes only the arguments its schema says (test_schema),
    that an input requiring grad makes its outputs part of the graph (test_autograd_registration),
    that its fake function gives the real output's shapes and dtypes (test_faketensor), and that it runs
    forward and backward as a compiler would trace it (test_aot_dispatch_dynamic: nothing compiles here, so this
    is the fake function's check and a backward through the registered formula). Returns {test: "SUCCESS" or the
    error}; raises the first failure with ``raise_exception``."""
    op = _op(op)
    kwargs = kwargs or {}
    tests = [test_utils] if isinstance(test_utils, str) else list(test_utils)
    results = {}
    for test in tests:
        check = {"test_schema": _check_schema, "test_autograd_registration": _check_autograd,
                 "test_faketensor": _check_fake, "test_aot_dispatch_dynamic": _check_traced}.get(test)
        if check is None:
            raise ValueError(f"opcheck: test_utils has {test!r}, which is not run here (test_schema, "
                             "test_autograd_registration, test_faketensor, test_aot_dispatch_dynamic are)")
        try:
            check(op, args, kwargs)
            results[test] = "SUCCESS"
        except Exception as error:  # noqa: BLE001  (each failure is the test's result)
            if raise_exception:
                raise OpCheckError(f"opcheck(op, ...): {test} failed with {error}") from error
            results[test] = error
    return results


class OpCheckError(Exception):
    pass


def _cloned(values):
    return [v.detach().clone() if isinstance(v, Tensor) else
            [x.detach().clone() if isinstance(x, Tensor) else x for x in v] if isinstance(v, list) else v
            for v in values]


def _check_schema(op, args, kwargs):
    arguments = op._bound(tuple(_cloned(args)), dict(zip(kwargs, _cloned(kwargs.values()))))
    before = {name: v.detach().clone() for name, v in arguments.items() if isinstance(v, Tensor)}
    op._run(arguments)
    declared = set(before) if op._mutates_args == "unknown" else set(op._mutates_args)
    for name, old in before.items():
        changed = not bool((arguments[name] == old).all()) if old.numel() else False
        if changed and name not in declared:
            raise RuntimeError(f"Argument {name} is not defined as mutable but was mutated")


def _check_autograd(op, args, kwargs):
    """An input that requires grad makes the output a node of the graph (whose backward raises PyTorch's error
    if no formula was registered): no output silently leaves the graph."""
    arguments = op._bound(args, kwargs)
    if is_grad_enabled() and any(x.requires_grad for x in _tensors_in(arguments.values())):
        output = op(**arguments)
        for y in _tensors_in(output if isinstance(output, (tuple, list)) else [output]):
            if y.dtype.kind in "fc" and y.grad_fn is None:
                raise RuntimeError(f"{op._qualname}: an input requires grad but an output is not in the graph")


def _check_traced(op, args, kwargs):
    """What tracing the operator for compilation needs: its fake function, and (where an input requires grad) a
    backward through its formula, given ones for each floating output."""
    _check_fake(op, args, kwargs)
    arguments = op._bound(args, kwargs)
    if not (is_grad_enabled() and any(x.requires_grad for x in _tensors_in(arguments.values()))):
        return
    output = op(**arguments)
    outputs = [y for y in _tensors_in(output if isinstance(output, (tuple, list)) else [output]) if y.requires_grad]
    if outputs:
        from .autograd import grad
        from .factories import ones_like

        inputs = [x for x in _tensors_in(arguments.values()) if x.requires_grad]
        grad(outputs, inputs, [ones_like(y) for y in outputs], allow_unused=True)


def _check_fake(op, args, kwargs):
    if op._fake_fn is None and op._schema.endswith("-> ()") and "!)" in op._schema:
        return  # (an operator that only writes its arguments has an obvious fake function, which PyTorch makes)
    if op._fake_fn is None:
        raise RuntimeError(f"There was no fake impl registered for {op!r}. This is necessary for torch.compile/"
                           f"export/fx tracing to work. Please use `{op._init_fn.__name__}.register_fake` to add an "
                           "fake impl.")
    arguments = op._bound(args, kwargs)
    with no_grad():
        fake = op._called(op._fake_fn, arguments)
        real = op._run(arguments)
    fakes = list(_tensors_in(fake if isinstance(fake, (tuple, list)) else [fake]))
    reals = list(_tensors_in(real if isinstance(real, (tuple, list)) else [real]))
    if len(fakes) != len(reals):
        raise RuntimeError(f"{op._qualname}: the fake function gives {len(fakes)} tensors, the operator {len(reals)}")
    for i, (f, r) in enumerate(zip(fakes, reals)):
        if tuple(f.shape) != tuple(r.shape) or f.dtype != r.dtype:
            raise RuntimeError(f"When comparing the output of {op._namespace}.{op._name}.default on FakeTensor and "
                               f"concrete Tensors, found mismatched tensor metadata: output {i} of the fake function "
                               f"has shape {tuple(f.shape)} and dtype {f.dtype}, the operator's {tuple(r.shape)} and "
                               f"{r.dtype}")


__all__ = ["CustomOpDef", "Library", "custom_op", "define", "fallthrough_kernel", "get_ctx", "impl", "impl_abstract",
           "infer_schema", "opcheck", "register_autocast",
           "register_autograd", "register_fake", "register_kernel", "register_torch_dispatch", "register_vmap"]
