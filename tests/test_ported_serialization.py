"""save and load, ported from PyTorch's test/test_serialization.py (its CPU parts that fit chainrule).

Round trips of tensors of every dtype, through file names, paths, file objects and buffers; tensors
that share memory (the same tensor twice, views, tied weights) sharing it again when loaded; nested
containers and state dicts; ``weights_only=True`` refusing objects that are not data; ``map_location``
and ``pickle_protocol``; loading the files ``torch.save`` writes (the tests that write them with
PyTorch need it installed); and the errors. Each test runs on chainrule's `autograd` and, where it is
installed, on PyTorch (fixture `T`).

Left out: storages as objects of their own (``x.storage()``), sparse, quantized, meta and CUDA
tensors, TorchScript archives, ``mmap``, ``skip_data``, custom pickle modules, gzip streams and the
legacy (non-zip) format's files downloaded by PyTorch's suite. chainrule's ``save`` writes no pickle,
so it refuses at save time an object that PyTorch pickles and then refuses to load with
``weights_only=True``.
"""

import collections
import importlib
import io
import os
import pickle
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.ported import DTYPES, dtype_name, raises, same, sample, values


def ours(T):
    return T.__name__ == "autograd"


def nn_of(T):
    return importlib.import_module("nn") if ours(T) else T.nn


def roundtrip(T, obj, **load_kwargs):
    buffer = io.BytesIO()
    T.save(obj, buffer)
    buffer.seek(0)
    return T.load(buffer, **load_kwargs)


def serialization_data(T):
    """_test_serialization_data without storages: two tensors each twice, an int tensor."""
    rng = np.random.default_rng(0)
    a = [T.tensor(rng.standard_normal((5, 5)).astype(np.float32)) for _ in range(2)]
    return [a[i % 2] for i in range(4)] + [T.arange(1, 11).int()]


def check_serialization(T, b, c):
    """_test_serialization_assert: the same values and types, and a tensor saved twice is one tensor."""
    assert len(c) == len(b)
    for got, expected in zip(c, b):
        same(got, values(expected), dtype=dtype_name(expected))
    assert c[0] is c[2] and c[1] is c[3] and c[0] is not c[1]
    c[0].fill_(10)
    same(c[2], np.full((5, 5), 10, np.float32))
    c[1].fill_(20)
    same(c[3], np.full((5, 5), 20, np.float32))


@pytest.mark.parametrize("weights_only", [True, False])
def test_serialization_through_every_kind_of_file(T, weights_only, tmp_path):
    b = serialization_data(T)
    with tempfile.NamedTemporaryFile(dir=tmp_path) as f:  # a real file object
        T.save(b, f)
        f.seek(0)
        check_serialization(T, b, T.load(f, weights_only=weights_only))
    name = str(tmp_path / "data.pt")  # a file name
    T.save(b, name)
    check_serialization(T, b, T.load(name, weights_only=weights_only))
    path = tmp_path / "\u975eASCII\u30d1\u30b9" / "data.pt"  # a path, in a directory named in non-ASCII
    path.parent.mkdir()
    T.save(b, path)
    check_serialization(T, b, T.load(path, weights_only=weights_only))
    check_serialization(T, b, roundtrip(T, b, weights_only=weights_only))  # a buffer


def test_safe_load_basic_types(T, tmp_path):
    data = {"int": 123, "str": "world", "float": 3.14, "bool": False, "none": None, "list": [1, 2.5, "x"],
            "tuple": (1, (2, 3)), 7: "an int key", "bytes": b"\x00\xff"}
    with open(tmp_path / "data.pt", "wb") as f:
        T.save(data, f)
    with open(tmp_path / "data.pt", "rb") as f:
        loaded = T.load(f, weights_only=True)
    assert loaded == data
    assert type(loaded["tuple"]) is tuple and type(loaded["tuple"][1]) is tuple


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_round_trips(T, dtype):
    rng = np.random.default_rng(1)
    for shape in [(), (0,), (3,), (2, 0, 3), (2, 3, 4)]:
        t = sample(T, shape, dtype, rng)
        same(roundtrip(T, t), values(t), dtype=dtype)


def test_save_different_dtype_unallocated(T):
    """Empty tensors of different dtypes saved together load as themselves."""
    for dtype in DTYPES:
        a = T.tensor([], dtype=getattr(T, dtype))
        for other in DTYPES:
            b = T.tensor([], dtype=getattr(T, other))
            a_loaded, b_loaded = roundtrip(T, [a, b])
            same(a_loaded, np.zeros(0, dtype), dtype=dtype)
            same(b_loaded, np.zeros(0, other), dtype=other)


def test_views_share_memory_again_when_loaded(T):
    """A view is saved as part of its base's memory (the storage), so writes show through after loading."""
    x = T.arange(12.0).reshape(3, 4)
    loaded_x, row, column, flat, transposed = roundtrip(T, [x, x[1], x[:, 2], x.reshape(-1)[1:4], x.t()])
    same(row, [4.0, 5.0, 6.0, 7.0])
    same(column, [2.0, 6.0, 10.0])
    same(flat, [1.0, 2.0, 3.0])
    same(transposed, np.arange(12.0).reshape(3, 4).T)
    assert transposed.stride() == (1, 4)
    assert row.data_ptr() == loaded_x.data_ptr() + 4 * 4  # four float32 elements on
    loaded_x.fill_(-1)
    for view in (row, column, flat, transposed):
        same(view, -np.ones(tuple(view.shape)))


def test_a_view_saved_alone_keeps_its_values(T):
    x = T.arange(10.0)
    view = roundtrip(T, x[2:7:2])
    same(view, [2.0, 4.0, 6.0])
    assert view.stride() == (2,)  # the view's layout in the saved memory, as PyTorch's


def test_tied_state_dict_entries_share_memory(T):
    nn = nn_of(T)
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    model[1].weight = model[0].weight  # tied weights
    state = roundtrip(T, model.state_dict())
    assert isinstance(state, collections.OrderedDict)
    assert list(state) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    same(state["1.weight"], values(model[0].weight))
    state["0.weight"].zero_()
    same(state["1.weight"], np.zeros((3, 3), np.float32))
    fresh = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    fresh.load_state_dict(roundtrip(T, model.state_dict()))
    same(fresh[1].weight, values(model[0].weight))


def test_nested_containers(T):
    t = T.arange(4.0)
    obj = {"list": [t, {"inner": (t * 2, [t.int()])}], "od": collections.OrderedDict([("b", 1), ("a", t)]),
           "size": T.Size([2, 3]), "empty": {}, "nothing": []}
    loaded = roundtrip(T, obj)
    assert loaded["list"][0] is loaded["od"]["a"]  # one tensor, once
    same(loaded["list"][1]["inner"][0], [0.0, 2.0, 4.0, 6.0])
    same(loaded["list"][1]["inner"][1][0], [0, 1, 2, 3], dtype="int32")
    assert type(loaded["od"]) is collections.OrderedDict and list(loaded["od"]) == ["b", "a"]
    assert loaded["size"] == (2, 3) and isinstance(loaded["size"], T.Size)
    assert loaded["empty"] == {} and loaded["nothing"] == []


def test_requires_grad_round_trips(T):
    leaf = T.ones(2, requires_grad=True)
    loaded, plain = roundtrip(T, [leaf, T.ones(2)])
    assert loaded.requires_grad and loaded.is_leaf and not plain.requires_grad


def test_optimizer_state_dict_round_trips(T):
    nn = nn_of(T)
    optim = importlib.import_module("optim") if ours(T) else T.optim
    model = nn.Linear(2, 1)
    opt = optim.Adam(model.parameters(), lr=0.1)
    model(T.ones(4, 2)).sum().backward()
    opt.step()
    state = roundtrip(T, opt.state_dict())
    assert state["param_groups"][0]["lr"] == 0.1 and state["param_groups"][0]["params"] == [0, 1]
    same(state["state"][0]["exp_avg"], values(opt.state_dict()["state"][0]["exp_avg"]))
    fresh = optim.Adam(model.parameters(), lr=0.5)
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["lr"] == 0.1


@pytest.mark.parametrize("map_location", ["cpu", "device", {"cuda:0": "cpu"}, "function"])
def test_map_location_on_the_cpu(T, map_location):
    if map_location == "device":
        map_location = T.device("cpu")
    elif map_location == "function":
        map_location = lambda storage, location: storage  # noqa: E731
    loaded = roundtrip(T, T.tensor([[1.0, 2.0], [3.0, 4.0]]), map_location=map_location)
    assert loaded.device == T.device("cpu")
    same(loaded, [[1.0, 2.0], [3.0, 4.0]], dtype="float32")


@pytest.mark.parametrize("protocol", [2, 3])  # (PyTorch's weights_only load reads no protocol 4 or 5 frames)
def test_pickle_protocol(T, protocol):
    x = T.arange(6).reshape(2, 3)
    buffer = io.BytesIO()
    T.save({"x": x}, buffer, pickle_protocol=protocol)
    buffer.seek(0)
    same(T.load(buffer)["x"], np.arange(6).reshape(2, 3), dtype="int64")


def test_pathlike_serialization(T, tmp_path):
    model = nn_of(T).Conv2d(2, 4, kernel_size=3)
    for weights_only in (True, False):
        path = Path(tmp_path) / f"model{weights_only}.pt"
        T.save(model.state_dict(), path)
        state = T.load(path, weights_only=weights_only)
        same(state["weight"], values(model.weight))


def test_serialization_fake_zip(T, tmp_path):
    """A tensor whose bytes look like the start of a zip (and its end record) loads as itself."""
    t = T.tensor([ord("P"), ord("K"), 5, 6] + [0] * 100, dtype=T.uint8)
    with open(tmp_path / "t.pt", "w+b") as f:
        T.save(t, f)
        f.seek(0)
        same(T.load(f), values(t), dtype="uint8")
    same(T.load(tmp_path / "t.pt"), values(t), dtype="uint8")


def test_serialization_save_warnings(T, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        T.save(nn_of(T).Linear(2, 3).state_dict(), tmp_path / "linear.pt")


class FilelikeMock:
    """A file object that records which of its methods are called."""

    def __init__(self, data, has_fileno=True, has_readinto=False):
        if has_readinto:
            self.readinto = self.readinto_opt
        if has_fileno:
            self.fileno = self.fileno_opt
        self.calls = set()
        self.bytesio = io.BytesIO(data)

        def trace(fn, name):
            def result(*args, **kwargs):
                self.calls.add(name)
                return fn(*args, **kwargs)
            return result

        for attr in ["read", "readline", "seek", "tell", "write", "flush"]:
            setattr(self, attr, trace(getattr(self.bytesio, attr), attr))

    def fileno_opt(self):
        raise io.UnsupportedOperation("Not a real file")

    def readinto_opt(self, view):
        self.calls.add("readinto")
        return self.bytesio.readinto(view)


def test_serialization_filelike_api_requirements(T):
    mock = FilelikeMock(b"", has_readinto=False)
    tensor = T.arange(15.0).reshape(3, 5)
    T.save(tensor, mock)
    assert mock.calls <= {"write", "flush"}
    mock.seek(0)
    mock.calls.clear()
    same(T.load(mock), np.arange(15.0).reshape(3, 5))
    assert mock.calls <= {"read", "readline", "seek", "tell", "readinto"}


@pytest.mark.parametrize("make", [lambda x: FilelikeMock(x), lambda x: FilelikeMock(x, has_readinto=True),
                                  lambda x: FilelikeMock(x, has_fileno=False)],
                         ids=["no readinto", "has readinto", "no fileno"])
def test_serialization_filelike_missing_attrs(T, make):
    tensor = T.tensor(np.random.default_rng(2).standard_normal((3, 10)).astype(np.float32))
    f = make(b"")
    T.save(tensor, f)
    f.seek(0)
    same(T.load(make(f.read())), values(tensor))


def test_serialization_filelike_exceptions(T):
    x = T.rand(10)
    raises(AttributeError, "", T.save, "foo", x)  # a tensor is no file
    x.write, x.flush = "bar", "baz"
    raises(TypeError, "", T.save, "foo", x)  # its write is not callable
    x.write, x.flush = str.__add__, str.__mul__
    raises(TypeError, "", T.save, "foo", x)  # its write takes a str
    array = np.zeros((3, 3))
    raises(AttributeError, "", T.save, array, array)


def test_load_error_msg(T):
    resource = FilelikeMock(data=b"data")
    del resource.tell
    del resource.seek
    raises(AttributeError, "You can only torch.load from a file that is seekable. Please pre-load the data into "
           "a buffer like io.BytesIO and try to load from it instead.", T.load, resource, weights_only=False)


def test_load_errors(T, tmp_path):
    raises(FileNotFoundError, "", T.load, tmp_path / "missing.pt")
    raises(pickle.UnpicklingError, "", T.load, io.BytesIO(b"garbage data, not a checkpoint"))
    raises(AttributeError, "attribute", T.load, 3)


class Unsafe:
    def __init__(self, num):
        self.num = num


Point = collections.namedtuple("Point", ["x", "y"])


@pytest.mark.parametrize("obj", [Unsafe(3), [1, Unsafe(4)], {"fn": print}, Point(1, 2)],
                         ids=["object", "in a list", "function", "namedtuple"])
def test_weights_only_refuses_arbitrary_objects(T, obj):
    """Both save them (chainrule as their class's name and their state, no pickle) and refuse to load them with
    weights_only=True unless the class is allowed: no object of the file's choosing comes back."""
    buffer = io.BytesIO()
    try:
        T.save(obj, buffer)
    except TypeError as error:
        assert ours(T) and "cannot store" in str(error)
        return
    buffer.seek(0)
    raises(pickle.UnpicklingError, "Weights only load failed", T.load, buffer, weights_only=True)


def test_safe_globals_allow_a_class(T):
    buffer = io.BytesIO()
    T.save({"p": Point(1, 2)}, buffer)
    buffer.seek(0)
    with T.serialization.safe_globals([Point]):
        assert T.load(buffer, weights_only=True) == {"p": Point(1, 2)}


def test_python_attributes_of_a_tensor(T):
    t = T.zeros(3)
    t.foo, t.pi = "foo", 3.14
    loaded = roundtrip(T, t, weights_only=True)
    assert (loaded.foo, loaded.pi) == ("foo", 3.14)


# --- files written by torch.save, loaded by both ---

@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def written_by_torch(torch, obj, **save_kwargs):
    buffer = io.BytesIO()
    torch.save(obj, buffer, **save_kwargs)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("dtype", DTYPES)
def test_load_tensors_torch_saved(T, torch, dtype):
    rng = np.random.default_rng(3)
    for shape in [(), (0,), (4,), (2, 0, 3), (2, 3, 4)]:
        expected = values(sample(torch, shape, dtype, rng))
        loaded = T.load(written_by_torch(torch, torch.tensor(expected)))
        assert isinstance(loaded, T.Tensor)
        same(loaded, expected, dtype=dtype)


def test_load_views_torch_saved_share_memory(T, torch):
    x = torch.arange(12.0).reshape(3, 4)
    loaded_x, row, transposed, flat = T.load(written_by_torch(torch, [x, x[1], x.t(), x.reshape(-1)[5:9:2]]))
    same(transposed, np.arange(12.0).reshape(3, 4).T, dtype="float32")
    assert transposed.stride() == (1, 4)
    same(flat, [5.0, 7.0])
    loaded_x.fill_(2)
    same(row, np.full(4, 2.0, np.float32))
    same(flat, [2.0, 2.0])


def test_load_state_dict_torch_saved(T, torch):
    torch.manual_seed(0)
    source = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    state = T.load(written_by_torch(torch, source.state_dict()), weights_only=True)
    assert isinstance(state, collections.OrderedDict)
    assert list(state) == list(source.state_dict())
    for key, value in source.state_dict().items():
        same(state[key], value.numpy(), dtype=dtype_name(value))
    model = nn_of(T).Sequential(nn_of(T).Linear(3, 2), nn_of(T).BatchNorm1d(2))
    model.load_state_dict(state)
    same(model[0].weight, source[0].weight.detach().numpy())


def test_load_containers_torch_saved(T, torch):
    t = torch.arange(3)
    obj = {"t": [t, (t, {"n": 1, "s": "x", "f": 2.5, "b": True, "none": None})], "size": torch.Size([2, 3]),
           "dtype": torch.float16, "bytes": b"ab", "set": {1, 2}, "complex": 1 + 2j, 3: "int key"}
    loaded = T.load(written_by_torch(torch, obj), weights_only=True)
    assert loaded["t"][0] is loaded["t"][1][0]
    same(loaded["t"][0], [0, 1, 2], dtype="int64")
    assert loaded["t"][1][1] == {"n": 1, "s": "x", "f": 2.5, "b": True, "none": None}
    assert loaded["size"] == (2, 3) and isinstance(loaded["size"], T.Size)
    assert loaded["dtype"] == T.float16
    assert (loaded["bytes"], loaded["set"], loaded["complex"], loaded[3]) == (b"ab", {1, 2}, 1 + 2j, "int key")


def test_load_parameters_torch_saved(T, torch):
    p = torch.nn.Parameter(torch.ones(2))
    loaded, plain = T.load(written_by_torch(torch, [p, torch.ones(2, requires_grad=True).detach()]))
    assert loaded.requires_grad and not plain.requires_grad
    same(loaded, [1.0, 1.0])


@pytest.mark.parametrize("protocol", [2, 3])
def test_load_torch_saved_to_a_file_and_a_path(T, torch, tmp_path, protocol):
    name = str(tmp_path / "t.pt")
    torch.save({"x": torch.eye(2)}, name, pickle_protocol=protocol)
    same(T.load(name)["x"], np.eye(2, dtype=np.float32))
    same(T.load(Path(name), map_location="cpu")["x"], np.eye(2, dtype=np.float32))
    with open(name, "rb") as f:
        same(T.load(f)["x"], np.eye(2, dtype=np.float32))


@pytest.mark.parametrize("obj", [Unsafe(3), {"fn": os.system}, Point(1, 2)], ids=["object", "function",
                                                                                   "namedtuple"])
def test_load_refuses_arbitrary_objects_torch_saved(T, torch, obj):
    """Loading a file that names a class or a function never runs it."""
    raises(pickle.UnpicklingError, "Weights only load failed", T.load, written_by_torch(torch, obj),
           weights_only=True)


def test_load_legacy_format_torch_saved(T, torch, request):
    if ours(T):
        request.applymarker(pytest.mark.xfail(strict=True, reason="chainrule reads torch.save's zip format only, "
                                                                  "not the legacy one"))
    buffer = written_by_torch(torch, [torch.ones(2)], _use_new_zipfile_serialization=False)
    same(T.load(buffer, weights_only=True)[0], [1.0, 1.0])
