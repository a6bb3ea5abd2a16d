"""The sweep behind tests/test_fix37_signatures.py, against PyTorch itself: every name ours shares with torch
(torch.overrides.get_testing_overrides: torch.*, Tensor.*, nn.functional.*) takes no more arguments by position
than PyTorch's signature (a Python function's own, or its ATen schemas: keyword-only there is keyword-only here);
and each call the fixes refuse, PyTorch refuses with the same class, while each form it takes gives its values."""

import inspect
import warnings

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)

# ours takes more by position than PyTorch, left as they are (see the hand-back of session 37)
MORE_POSITIONAL_KNOWN = {
    "F.batch_norm",  # num_batches_tracked: ours' own extra parameter, after all of PyTorch's
    "Tensor.cuda",  # (its ATen schema is TorchScript's, aten::cuda(self): the Python method takes x.cuda(0, True))
    "Tensor.lu",  # out: the function's; PyTorch's method has none
}


def _shared_names():
    """(label, torch object, ours) for each name both expose."""
    methods = {}
    for name in dir(torch.Tensor):
        try:
            methods.setdefault(id(getattr(torch.Tensor, name)), name)
        except Exception:  # noqa: BLE001 (a property that raises on the class)
            pass
    shared = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        overridable = torch.overrides.get_testing_overrides()
    for function in overridable:
        name = getattr(function, "__name__", None)
        if id(function) in methods:
            kind, name = "Tensor", methods[id(function)]
        elif name and getattr(torch.nn.functional, name, None) is function:
            kind = "F"
        elif name and getattr(torch, name, None) is function:
            kind = "torch"
        else:
            continue
        ours = getattr({"torch": autograd, "F": F, "Tensor": autograd.Tensor}[kind], name, None)
        if name.startswith("__") or ours is None or not callable(ours):
            continue
        shared.append((f"{kind}.{name}", function, ours))
    return shared


def _most_positional(label, function):
    """The most arguments PyTorch takes by position after the tensor of a method (None: unknown, or variadic)."""
    method = label.startswith("Tensor.")
    try:
        parameters = list(inspect.signature(function).parameters.values())[method:]
        if any(p.kind in VARIADIC for p in parameters):
            return None
        return sum(p.kind in POSITIONAL for p in parameters)
    except (TypeError, ValueError):
        pass
    counts = []
    for schema in torch._C._jit_get_schemas_for_operator("aten::" + function.__name__):
        arguments = list(schema.arguments)
        if not any("Tensor" in str(a.type) for a in arguments):  # (TorchScript's number ops)
            continue
        if method:
            if not arguments or arguments[0].name != "self":
                continue
            arguments = arguments[1:]
        counts.append(sum(not a.kwarg_only for a in arguments))
    return max(counts) if counts else None


def _our_positional(label, ours):
    try:
        parameters = list(inspect.signature(ours).parameters.values())[label.startswith("Tensor."):]
    except (TypeError, ValueError):
        return None
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return None
    return [p.name for p in parameters if p.kind in POSITIONAL]


def test_no_shared_name_takes_more_by_position_than_pytorch():
    shared = _shared_names()
    assert len(shared) > 900  # (the sweep reaches every shared name: about a thousand in torch 2.13)
    more = {}
    for label, function, ours in shared:
        most, positional = _most_positional(label, function), _our_positional(label, ours)
        if most is not None and positional is not None and len(positional) > most:
            more[label] = positional[most:]
    assert set(more) == MORE_POSITIONAL_KNOWN, more


def _refused(m, functional):
    """Calls PyTorch refuses (a TypeError), by module m (torch or autograd) and its nn.functional."""
    x = m.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]])
    return {
        "x.sum(True)": lambda: x.sum(True), "x.softmax(True)": lambda: x.softmax(True),
        "x.transpose(True, 0)": lambda: x.transpose(True, 0), "x.sort(True)": lambda: x.sort(True),
        "cat(dim=True)": lambda: m.cat([x, x], True), "x.max(dim=True)": lambda: x.max(dim=True),
        "x.cummax(True)": lambda: x.cummax(True), "x.roll(1, True)": lambda: x.roll(1, True),
        "x.amax(True)": lambda: x.amax(True), "x.flip(True)": lambda: x.flip(True),
        "x.repeat(True, 1)": lambda: x.repeat(True, 1), "F.softmax(x, True)": lambda: functional.softmax(x, True),
        "x.softmax(array)": lambda: x.softmax(np.array(1)), "x.unsqueeze(array)": lambda: x.unsqueeze(np.array(1)),
        "max(x, array)": lambda: m.max(x, np.array(1)), "x.sort(array)": lambda: x.sort(np.array(1)),
        "hann_window(array)": lambda: m.hann_window(np.array(3)),
        "x.max(dim=None)": lambda: x.max(dim=None), "max(x, None)": lambda: m.max(x, None),
        "min(x, dim=None)": lambda: m.min(x, dim=None), "x.max(keepdim=True)": lambda: x.max(keepdim=True),
        "x.max(0, 1)": lambda: x.max(0, 1), "sort(x, 1, stable=True)": lambda: m.sort(x, 1, stable=True),
        "x.sort(1, stable=True)": lambda: x.sort(1, stable=True),
        "argsort(x, 1, stable=True)": lambda: m.argsort(x, 1, stable=True),
        "sort(x, 1, True, True)": lambda: m.sort(x, 1, True, True),
        "median(x, None)": lambda: m.median(x, None), "x.nanmedian(dim=None)": lambda: x.nanmedian(dim=None),
        "prod(x, None)": lambda: m.prod(x, None), "nuclear_norm(x, dim=None)": lambda: m.nuclear_norm(x, dim=None),
        "cat([x], None)": lambda: m.cat([x], None), "x.logsumexp(None)": lambda: x.logsumexp(None),
        "F.cosine_similarity(x, x, None)": lambda: functional.cosine_similarity(x, x, None),
        "F.gelu(x, 'tanh')": lambda: functional.gelu(x, "tanh"),
        "x.var(1, True, False, 1)": lambda: x.var(1, True, False, 1),
        "x.std(1, True, False, 1)": lambda: x.std(1, True, False, 1),
        "x.resize_as_(y, format)": lambda: x.clone().resize_as_(x, m.contiguous_format),
        "x.cpu(format)": lambda: x.cpu(m.preserve_format),
        "F.lp_pool1d(x, 2, [2])": lambda: functional.lp_pool1d(x[None], 2, [2]),
    }


@pytest.mark.parametrize("name", sorted(_refused(autograd, F)))
def test_refused_as_pytorch_refuses(name):
    with pytest.raises(TypeError):
        _refused(torch, torch.nn.functional)[name]()
    with pytest.raises(TypeError):
        _refused(autograd, F)[name]()


def test_upsample_list_scale_factor_refused_as_pytorch():
    with pytest.raises(TypeError):
        torch.nn.Upsample(scale_factor=[2.0])
    with pytest.raises(TypeError):
        nn.Upsample(scale_factor=[2.0])


def _taken(m, functional):
    """Calls PyTorch takes, beside the refused ones, by module m and its nn.functional."""
    x = m.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]])
    return {
        "max(x, int64)": lambda: m.max(x, np.int64(1)).values, "x.sum(int32)": lambda: x.sum(np.int32(0)),
        "x.softmax(0-d tensor)": lambda: x.softmax(m.tensor(1)), "x.flip(0, True)": lambda: x.flip(0, True),
        "std(x, True)": lambda: m.std(x, True), "x.max()": lambda: x.max(),
        "max(x, dim=1, keepdim=True)": lambda: m.max(x, dim=1, keepdim=True).values,
        "sort(x, stable=True, dim=0)": lambda: m.sort(x, stable=True, dim=0, descending=True).values,
        "x.sort(1, True)": lambda: x.sort(1, True).indices,
        "argsort(x, stable=True)": lambda: m.argsort(x, stable=True),
        "x.median()": lambda: x.median(), "x.median(1)": lambda: x.median(1).values, "x.prod()": lambda: x.prod(),
        "prod(x, 1)": lambda: m.prod(x, 1), "nuclear_norm(x, True)": lambda: m.nuclear_norm(x, True),
        "cat([x, x], -1)": lambda: m.cat([x, x], -1),
        "F.cosine_similarity(x, x + 1, 0)": lambda: functional.cosine_similarity(x, x + 1, 0),
        "F.gelu(x, approximate='tanh')": lambda: functional.gelu(x, approximate="tanh"),
        "x.var(1, correction=0)": lambda: x.var(1, correction=0),
        "x.resize_as_(the_template=)": lambda: m.zeros(6).resize_as_(the_template=x),
        "x.expand(implicit=)": lambda: x[0].expand(2, 3, implicit=False),
        "F.lp_pool1d(x, 2, 2, [2])": lambda: functional.lp_pool1d(x[None], 2, 2, [1]),
        "F.lp_pool1d(x, inf, [2])": lambda: functional.lp_pool1d(x[None], float("inf"), [2]),
        "randperm(array)": lambda: m.randperm(np.array(3)).sort().values,
    }


@pytest.mark.filterwarnings("ignore:.*nuclear_norm is deprecated")
@pytest.mark.parametrize("name", sorted(_taken(autograd, F)))
def test_taken_as_pytorch_takes(name):
    expected = _taken(torch, torch.nn.functional)[name]()
    got = _taken(autograd, F)[name]()
    if name.startswith("x.resize_as_"):
        assert tuple(got.shape) == tuple(expected.shape)
        return
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6)
