"""torch.utils.data as users write it, run on chainrule's autograd.utils.data and on PyTorch: collation,
DataLoader options, samplers and datasets. Each program's result is compared with PyTorch's where it is
installed, and its expected value is asserted without it."""

import collections

import numpy as np
import pytest

from tests.program_errors import raises_alike
from tests.pytorch_programs import run_both

Point = collections.namedtuple("Point", "x y")


def described(value):
    """A batch as comparable plain values: a tensor becomes ("tensor", dtype name, nested list of values);
    containers keep their type's name."""
    if isinstance(value, np.generic | np.ndarray):
        return ("numpy", str(value.dtype), value.tolist())
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return ("tensor", str(value.dtype).replace("torch.", ""), value.tolist())
    if isinstance(value, dict):
        return (type(value).__name__, {k: described(v) for k, v in value.items()})
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return (type(value).__name__, [described(v) for v in value])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [described(v) for v in value])
    return value


def both(program):
    """Run ``program`` on both libraries: its results (plain values, see ``described``) must be equal."""
    ours, theirs = run_both(program, compare=False)
    if theirs is not None:
        assert ours == theirs, f"ours {ours!r}, PyTorch's {theirs!r}"
    return ours


def tensor_(dtype, values):
    return ("tensor", dtype, values)


# 1. default_collate, default_convert, batch_size=None

def test_collate_nested_dicts_of_tuples_arrays_numbers_strings():
    def program(m):
        samples = [{"pair": (m.torch.full((2,), float(i)), np.int32(i)),
                    "meta": {"id": i, "score": i / 2, "keep": i != 1, "name": f"n{i}"},
                    "array": np.arange(3, dtype=np.float32) + i, "point": Point(i, [i, 1.5])}
                   for i in range(3)]
        return described(m.data.default_collate(samples))

    ours = both(program)
    kind, fields = ours
    assert kind == "dict"
    assert fields["pair"] == ("list", [tensor_("float32", [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]),
                                       tensor_("int32", [0, 1, 2])])
    assert fields["meta"] == ("dict", {"id": tensor_("int64", [0, 1, 2]), "score": tensor_("float64", [0, .5, 1]),
                                       "keep": tensor_("bool", [True, False, True]),
                                       "name": ("list", ["n0", "n1", "n2"])})
    assert fields["array"] == tensor_("float32", [[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    assert fields["point"] == ("Point", [tensor_("int64", [0, 1, 2]),
                                         ("list", [tensor_("int64", [0, 1, 2]), tensor_("float64", [1.5] * 3)])])


@pytest.mark.parametrize("samples, expected", [
    ([1, 2.5], tensor_("float32", [1.0, 2.5])),  # led by an int, typed from them all: not truncated to int64
    ([True, 1], tensor_("int64", [1, 1])),
    ([True, 2.5], tensor_("float32", [1.0, 2.5])),
    ([1.5, 2], tensor_("float64", [1.5, 2.0])),
    ([True, False], tensor_("bool", [True, False])),
    ([np.float32(1), np.float32(2)], tensor_("float32", [1.0, 2.0])),
    ([np.bool_(True), np.bool_(False)], tensor_("bool", [True, False])),
    ([np.array(1.0), np.array(2.0)], tensor_("float64", [1.0, 2.0])),
    ([np.arange(2, dtype=np.uint8)] * 2, tensor_("uint8", [[0, 1], [0, 1]])),
    ([b"a", b"b"], ("list", [b"a", b"b"])),
    ([np.str_("a"), np.str_("b")], ("list", [("numpy", "<U1", "a"), ("numpy", "<U1", "b")])),
])
def test_collate_numbers_and_scalars(samples, expected):
    ours = both(lambda m: described(m.data.default_collate(samples)))
    assert ours == expected


def test_collate_keeps_container_types():
    def program(m):
        ordered = m.data.default_collate([collections.OrderedDict(b=1, a=2)] * 2)
        counts = m.data.default_collate([collections.defaultdict(list, a=1)] * 2)
        return (type(ordered).__name__, list(ordered), type(counts).__name__, counts["missing"],
                type(m.data.default_collate([[1, 2]] * 2)).__name__,
                type(m.data.default_collate([(1, 2)] * 2)).__name__)

    ours = both(program)
    assert ours == ("OrderedDict", ["b", "a"], "defaultdict", [], "list", "list")


@pytest.mark.parametrize("samples, kind, match", [
    ([[1, 2], [3]], RuntimeError, "each element in list of batch should be of equal size"),
    ([(1, 2), (3,)], RuntimeError, "each element in list of batch should be of equal size"),
    ([np.arange(3), np.arange(2)], RuntimeError, "stack expects each tensor to be equal size"),
    ([None, None], TypeError, "default_collate: batch must contain tensors"),
    ([np.array(["a"])] * 2, TypeError, "default_collate: batch must contain tensors"),
])
def test_collate_errors(samples, kind, match):
    raises_alike(lambda m: m.data.default_collate(samples), match, kind=kind)
    raises_alike(lambda m: m.data.default_collate([m.torch.zeros(2), m.torch.zeros(3)]),
                 r"stack expects each tensor to be equal size, but got \[2\] at entry 0 and \[3\] at entry 1",
                 kind=RuntimeError)


def test_default_convert():
    def program(m):
        convert = m.data.default_convert
        return [described(convert(value)) for value in (
            np.arange(3.0), np.float32(2), np.int64(3), np.bool_(True), 3, "abc", np.array(["a"]).tolist(),
            (np.zeros(2, dtype=np.float32), 1, "s"), [np.arange(2), 1], {"a": (np.ones(1),), "b": "x"},
            Point(np.zeros(1, dtype=np.int16), 2))]

    ours = both(program)
    assert ours == [tensor_("float64", [0, 1, 2]), tensor_("float32", 2.0), tensor_("int64", 3),
                    tensor_("bool", True), 3, "abc", ("list", ["a"]),
                    ("list", [tensor_("float32", [0, 0]), 1, "s"]), ("list", [tensor_("int64", [0, 1]), 1]),
                    ("dict", {"a": ("list", [tensor_("float64", [1.0])]), "b": "x"}),
                    ("Point", [tensor_("int16", [0]), 2])]


def test_batch_size_none_converts_each_sample():
    def program(m):
        samples = [(np.full(2, i, dtype=np.float32), i) for i in range(3)]
        loader = m.data.DataLoader(samples, batch_size=None)
        tensors = m.data.DataLoader(m.data.TensorDataset(m.torch.arange(3)), batch_size=None)
        return len(loader), [described(s) for s in loader], [described(s) for s in tensors]

    ours = both(program)
    assert ours[0] == 3
    assert ours[1][2] == ("list", [tensor_("float32", [2.0, 2.0]), 2])
    assert ours[2] == [("list", [tensor_("int64", i)]) for i in range(3)]  # default_convert: a tuple -> list
