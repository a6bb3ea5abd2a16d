"""An operator's schema (``(Tensor x, SymInt[] box) -> Tensor``): inferred from a function's annotations
(``infer_schema``), read from its text (``Library.define``), and each call's arguments checked against it."""

import ast
import collections.abc
import functools
import inspect
import operator
import types
import typing

from ..device import device
from ..tensor import Tensor

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
    from .. import dtype  # (autograd.dtype: what a dtype is)

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
            from .. import dtype

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
