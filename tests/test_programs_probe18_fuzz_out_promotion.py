"""Differential fuzzing of the state around the ops rather than their maths (op values and gradients are fuzzed in
tests/test_ops*.py and tests/test_fuzz*.py): the SAME small random program is built on chainrule and on PyTorch, and
the values, gradients, dtypes and shapes (and the class of any error) must agree (how: tests/probe18_fuzz_common.py).
``out=`` variants (``add``, ``matmul``, ``mm``, ``bmm``, ``cat``, ``sum``, ``max``, ``sort``, ``where``, ...; into
views, transposes and their own input; resized outputs and PyTorch's warning), and dtype promotion with 0-d tensors
and Python numbers beside int/bool/float16/float64 tensors, in a graph and in place."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import nn  # noqa: F401  (registers autograd.nn)

from .probe18_fuzz_common import FUZZ, TORCH, agree

# -- out= and dtype promotion ------------------------------------------------------------------------


def _a(T):
    return T.tensor(np.linspace(-1, 1, 12).reshape(3, 4))


OUT_PROGRAMS = {
    "add": (lambda T: (lambda c: (T.add(_a(T), _a(T), alpha=3, out=c) is c, c))(T.empty(3, 4, dtype=T.float64)),
            lambda a: 4 * a),
    "add_into_float32": (lambda T: (lambda c: (T.add(_a(T), 1, out=c), c))(T.empty(3, 4, dtype=T.float32)),
                         lambda a: a + 1),
    "add_into_a_view": (lambda T: (lambda buf: (T.add(_a(T), 1, out=buf[1]), buf))(T.zeros(2, 3, 4, dtype=T.float64)),
                        lambda a: a + 1),
    "add_into_a_transpose": (lambda T: (lambda c: (T.add(_a(T), 1, out=c), c))(T.zeros(4, 3, dtype=T.float64).t()),
                             lambda a: a + 1),
    "add_resized": (lambda T: (lambda c: (T.add(_a(T), _a(T), out=c), c))(T.empty(2, dtype=T.float64)),
                    lambda a: 2 * a),
    "add_resized_from_empty": (lambda T: (lambda c: (T.add(_a(T), 1, out=c), c))(T.empty(0, dtype=T.float64)),
                               lambda a: a + 1),
    "matmul": (lambda T: (lambda c: (T.matmul(_a(T), _a(T).t(), out=c), c))(T.empty(3, 3, dtype=T.float64)),
               lambda a: a @ a.T),
    "matmul_resized": (lambda T: (lambda c: (T.matmul(_a(T), _a(T).t(), out=c), c))(T.empty(1, dtype=T.float64)),
                       lambda a: a @ a.T),
    "matmul_vector": (lambda T: (lambda c: (T.matmul(_a(T), _a(T)[0], out=c), c))(T.empty(3, dtype=T.float64)),
                      lambda a: a @ a[0]),
    "cat": (lambda T: (lambda c: (T.cat([_a(T), _a(T) * 2], out=c), c))(T.empty(6, 4, dtype=T.float64)),
            lambda a: np.concatenate([a, 2 * a])),
    "cat_resized": (lambda T: (lambda c: (T.cat([_a(T), _a(T)], 1, out=c), c))(T.empty(5, dtype=T.float64)),
                    lambda a: np.concatenate([a, a], 1)),
    "cat_into_float32": (lambda T: (lambda c: (T.cat([_a(T), _a(T)], out=c), c))(T.empty(6, 4, dtype=T.float32)),
                         lambda a: np.concatenate([a, a])),
    "sum_resized": (lambda T: (lambda c: (T.sum(_a(T), 0, out=c), c))(T.empty(7, dtype=T.float64)),
                    lambda a: a.sum(0)),
    "max_values_indices": (lambda T: (lambda v, i: (T.max(_a(T), 1, out=(v, i)), v, i))(
        T.empty(3, dtype=T.float64), T.empty(3, dtype=T.int64)), lambda a: a.max(1)),
    "clamp": (lambda T: (lambda c: (T.clamp(_a(T), -0.5, 0.5, out=c), c))(T.empty(3, 4, dtype=T.float64)),
              lambda a: np.clip(a, -0.5, 0.5)),
}


A0 = np.linspace(-1, 1, 12).reshape(3, 4)
OUT_PROGRAMS.update({
    "mm_into_a_transpose": (lambda T: (lambda c: (T.mm(_a(T), _a(T).t(), out=c), c))(T.full((3, 3), 7.0,
                                                                                          dtype=T.float64).t()),
                            lambda a: a @ a.T),
    "bmm": (lambda T: (lambda c: (T.bmm(_a(T).view(3, 2, 2), _a(T).view(3, 2, 2), out=c), c))(
        T.empty(3, 2, 2, dtype=T.float64)), lambda a: a.reshape(3, 2, 2) @ a.reshape(3, 2, 2)),
    "index_select": (lambda T: (lambda c: (T.index_select(_a(T), 0, T.tensor([2, 0]), out=c), c))(
        T.empty(2, 4, dtype=T.float64)), lambda a: a[[2, 0]]),
    "gather": (lambda T: (lambda c: (T.gather(_a(T), 1, T.tensor([[0, 1], [2, 3], [1, 1]]), out=c), c))(
        T.empty(3, 2, dtype=T.float64)), lambda a: np.take_along_axis(a, np.array([[0, 1], [2, 3], [1, 1]]), 1)),
    "cumsum_into_float32": (lambda T: (lambda c: (T.cumsum(_a(T), 1, out=c), c))(T.empty(3, 4, dtype=T.float32)),
                            lambda a: a.cumsum(1)),
    "mean_keepdim_resized": (lambda T: (lambda c: (T.mean(_a(T), 0, keepdim=True, out=c), c))(
        T.empty(4, dtype=T.float64)), lambda a: a.mean(0, keepdims=True)),
    "sort_values_indices": (lambda T: (lambda v, i: (T.sort(_a(T).flip(1), 1, out=(v, i)), v, i))(
        T.empty(3, 4, dtype=T.float64), T.empty(3, 4, dtype=T.int64)), lambda a: a),
    "addmm": (lambda T: (lambda c: (T.addmm(_a(T)[:, :3], _a(T), _a(T).t(), beta=0.5, alpha=2, out=c), c))(
        T.empty(3, 3, dtype=T.float64)), lambda a: 0.5 * a[:, :3] + 2 * a @ a.T),
    "mul_broadcast_into_a_view": (lambda T: (lambda buf: (T.mul(_a(T)[:, :1], _a(T)[0], out=buf[1]), buf[1]))(
        T.zeros(2, 3, 4, dtype=T.float64)), lambda a: a[:, :1] * a[0]),
    "sub_into_its_input": (lambda T: (lambda a: (T.sub(a, 1, out=a), a))(_a(T)), lambda a: a - 1),
    "where": (lambda T: (lambda c: (T.where(_a(T) > 0, _a(T), _a(T) * 2, out=c), c))(
        T.empty(3, 4, dtype=T.float64)), lambda a: np.where(a > 0, a, 2 * a)),
    "matmul_of_vectors_into_0d": (lambda T: (lambda c: (T.matmul(_a(T)[0], _a(T)[1], out=c), c))(
        T.empty((), dtype=T.float64)), lambda a: a[0] @ a[1]),
})


@pytest.mark.parametrize("name", sorted(OUT_PROGRAMS))
def test_out_variants(name):
    program, expected = OUT_PROGRAMS[name]
    result = agree(lambda T: program(T)[1:], tolerance=1e-6, warns="resized" in name)
    written = result[0][3][1] if name == "add_into_a_view" else result[0][3]
    np.testing.assert_allclose(written, expected(A0), rtol=1e-3 if "16" in name else 1e-6, atol=1e-12)


@pytest.mark.parametrize("program", [
    lambda T: T.add(_a(T), 1, out=T.empty(3, 4, dtype=T.int64)),                     # float into int64
    lambda T: T.exp(_a(T), out=T.empty(3, 4, dtype=T.int64)),
    lambda T: T.add(_a(T).requires_grad_(), 1, out=T.empty(3, 4, dtype=T.float64)),   # out= refuses a graph
    lambda T: T.cat([T.tensor([1, 2]), T.tensor([0.5])], out=T.empty(3, dtype=T.int64)),
    lambda T: T.where(_a(T) > 0, _a(T), _a(T) * 2, out=T.empty(3, 4, dtype=T.float16)),  # where casts into no other
    lambda T: T.add(_a(T), 1, out=T.zeros(4, dtype=T.float64).expand(3, 4)),           # out= an expanded tensor
])
def test_out_variants_refused_as_pytorch_refuses_them(program):
    if TORCH is None:
        with pytest.raises((RuntimeError, TypeError)):
            program(autograd)
    else:
        agree(program)


SCALARS = {"int": 3, "float": 2.5, "bool": True, "0d_int64": ("int64", 3), "0d_float64": ("float64", 2.5),
           "0d_float16": ("float16", 2.5), "0d_bool": ("bool", True), "0d_int32": ("int32", 3)}
TENSOR_DTYPES = ["bool", "uint8", "int32", "int64", "float16", "float32", "float64"]
BINARY = {"add": lambda a, b: a + b, "radd": lambda a, b: b + a, "mul": lambda a, b: a * b,
          "truediv": lambda a, b: a / b, "rtruediv": lambda a, b: b / a, "pow": lambda a, b: a ** b,
          "where": lambda a, b: autograd.where(a > 0, a, b) if isinstance(a, autograd.Tensor)
          else __import__("torch").where(a > 0, a, b)}


@FUZZ
@given(dtype=st.sampled_from(TENSOR_DTYPES), scalar=st.sampled_from(sorted(SCALARS)),
       op=st.sampled_from(sorted(BINARY)), out=st.booleans())
def test_promotion_beside_0d_tensors_and_numbers_in_a_graph(dtype, scalar, op, out):
    """The result dtype of a tensor with a 0-d tensor or a Python number (a dimensioned tensor's category
    wins, then the 0-d's), its gradient's dtype (the leaf's own), and out= into float64."""
    def program(T):
        if dtype == "bool":
            a = T.tensor([True, False, True])
        else:
            a = T.tensor([1.0, 2.0, 0.5], dtype=getattr(T, dtype))
            if dtype.startswith("float"):
                a.requires_grad_()
        b = SCALARS[scalar]
        if isinstance(b, tuple):
            b = T.tensor(b[1], dtype=getattr(T, b[0]))
        if op == "where" and not isinstance(b, T.Tensor):
            b = T.tensor(b)
        if op == "pow" and dtype in ("bool", "uint8", "int32", "int64") and not isinstance(b, float) \
                and not (isinstance(b, T.Tensor) and b.dtype.is_floating_point if T is not autograd
                         else isinstance(b, T.Tensor) and b.dtype.kind == "f"):
            return None  # (integer powers: the values are fuzzed elsewhere)
        if op == "pow" and scalar == "0d_bool" and dtype.startswith("float"):
            return None  # (PyTorch's backward refuses a bool exponent: it subtracts 1 from it; chainrule's gives 1)
        y = BINARY[op](a, b)
        result = (y,)
        if a.requires_grad and y.dtype != T.bool:
            result += T.autograd.grad(y.sum(), a)
        if out and not a.requires_grad:
            buffer = T.empty(3, dtype=T.float64)
            if op in ("add", "mul") and not (dtype == "bool" and scalar in ("bool", "0d_bool")):
                getattr(T, op)(a, b, out=buffer)
                result += (buffer,)
        return result

    agree(program, tolerance=2e-3)
    if TORCH is None and dtype == "float64" and op in ("add", "mul"):
        value = autograd.tensor([1.0, 2.0, 0.5], dtype=autograd.float64)
        assert BINARY[op](value, 3).dtype == autograd.float64


IN_PLACE_PROMOTING = {
    "add_": lambda x, b: x.add_(b), "sub_": lambda x, b: x.sub_(b), "mul_": lambda x, b: x.mul_(b),
    "div_": lambda x, b: x.div_(b), "clamp_min_": lambda x, b: x.clamp_min_(b), "fmod_": lambda x, b: x.fmod_(b),
    "remainder_": lambda x, b: x.remainder_(b), "pow_": lambda x, b: x.pow_(b), "copy_": lambda x, b: x.copy_(b),
    "masked_fill_": lambda x, b: x.masked_fill_(x > 1, b), "fill_": lambda x, b: x.fill_(b),
}
OUT_OF_PLACE = {"add_": "add", "sub_": "sub", "mul_": "mul", "div_": "div", "clamp_min_": "clamp_min", "fmod_": "fmod",
                "remainder_": "remainder", "pow_": "pow"}


@FUZZ
@given(dtype=st.sampled_from(["uint8", "int32", "int64", "float16", "float32", "float64"]),
       other=st.sampled_from(["0d_float64", "0d_float16", "0d_int64", "0d_bool", "float", "int", "bool", "1d_float64"]),
       op=st.sampled_from(sorted(IN_PLACE_PROMOTING)))
def test_in_place_ops_keep_their_dtype_beside_0d_tensors_and_numbers(dtype, other, op):
    """An in-place op computes in the promoted dtype, then casts into the tensor's own, or refuses a result of a
    higher category (a float into integers). Without PyTorch: the out-of-place result cast, or a refusal."""
    def operand(T):
        if other.startswith("0d_"):
            kind = other[3:]
            return T.tensor({"float64": 2.5, "float16": 2.5, "int64": 3, "bool": True}[kind], dtype=getattr(T, kind))
        if other == "1d_float64":
            return T.tensor([2.5, 1.5, 0.5], dtype=T.float64)
        return {"float": 2.5, "int": 3, "bool": True}[other]

    def program(T):
        x = T.tensor([1, 2, 3], dtype=getattr(T, dtype))
        return IN_PLACE_PROMOTING[op](x, operand(T))

    if op == "fill_" and other == "1d_float64":
        result = agree(program, refused=RuntimeError)
        assert result is None
        return
    result = agree(program, tolerance=1e-3, refused=RuntimeError)
    if result is not None:
        assert result[1] == dtype
        if op in OUT_OF_PLACE:
            x = autograd.tensor([1, 2, 3], dtype=getattr(autograd, dtype))
            expected = getattr(autograd, OUT_OF_PLACE[op])(x, operand(autograd)).to(x.dtype)
            np.testing.assert_allclose(result[3].astype(float), expected.numpy().astype(float), rtol=1e-3)


def test_promotion_with_a_0d_tensor_by_hand():
    """Without PyTorch too: the categories by hand."""
    i32, f16 = autograd.tensor([1, 2], dtype=autograd.int32), autograd.tensor([1.0, 2.0], dtype=autograd.float16)
    assert (i32 + autograd.tensor(2.5, dtype=autograd.float64)).dtype == autograd.float64  # higher category: the 0-d's
    assert (i32 + 2.5).dtype == autograd.float32  # a Python float: the default dtype
    assert (i32 + autograd.tensor(3, dtype=autograd.int64)).dtype == autograd.int32  # same category: the tensor's
    assert (f16 * autograd.tensor(2.5, dtype=autograd.float64)).dtype == autograd.float16
    assert (f16 * 2.5).dtype == autograd.float16 and (i32 * 2.5).dtype == autograd.float32
    assert (autograd.tensor([True]) + autograd.tensor(3, dtype=autograd.uint8)).dtype == autograd.uint8
    assert (autograd.tensor([True]) + True).dtype == autograd.bool
