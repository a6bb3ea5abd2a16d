"""``custom_op``'s operators (``CustomOpDef``): a call checked against the schema, run unrecorded, and recorded as an
``autograd.Function`` when an input requires grad; their registrations, and ``torch.ops``' handles of them."""

import functools
import inspect
import numbers
import re
import warnings

from ..device import device
from ..dtype_objects import DTYPE_TYPES
from ..function import Function
from ..graph import bump_version, is_grad_enabled, no_grad, program_stacklevel
from ..tensor import Tensor
from .schema import _schema_parts, _split_schema, infer_schema

_OPS = {}  # "namespace::name" -> CustomOpDef


# -- operators ------------------------------------------------------------------------------------------------


class CustomOpDef:
    """An operator made by ``custom_op``: call it as the function it wraps."""

    _silent_without_formula = False  # (a backward with no registered formula raises: PyTorch's for custom_op)

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
                if op._backward_fn is None and op._silent_without_formula:
                    warnings.warn(f"{op._qualname}: an autograd kernel was not registered to the Autograd key(s) but "
                                  "we are trying to backprop through it. This may lead to silently incorrect "
                                  "behavior. This behavior is deprecated and will be removed in a future version of "
                                  "PyTorch. If your operator is differentiable, please ensure you have registered an "
                                  "autograd kernel to the correct Autograd key (e.g. DispatchKey::Autograd, "
                                  "DispatchKey::CompositeImplicitAutograd).", UserWarning,
                                  stacklevel=program_stacklevel())
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
        return isinstance(value, (*DTYPE_TYPES, numbers.Integral))
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
    from ..backend import memory_owner

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
