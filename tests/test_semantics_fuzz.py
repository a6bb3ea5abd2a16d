"""No silent wrong gradient: random programs mixing in-place ops, views, setitem, hooks,
retain_grad, dtype mixes and create_graph run on chainrule and on PyTorch, and every value
and gradient must agree. Where PyTorch refuses a program (an in-place change of a tensor its
graph saved), chainrule must either refuse it too or give PyTorch's answer for the values it
computed (it keeps copies where PyTorch keeps references)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd

pytestmark = pytest.mark.torch

STEPS = st.sampled_from(["residual", "view_mul", "column_add", "setitem", "relu", "hook", "retain",
                         "to_double", "to_float", "mul_other", "clamp", "sigmoid", "fill_row", "copy_row"])


def _run(lib, program, w0, v0, dtype_name, second_order):
    dtype = getattr(lib, dtype_name)
    w = lib.tensor(w0, dtype=dtype, requires_grad=True)
    v = lib.tensor(v0, dtype=dtype, requires_grad=True)
    h = w * 1.5
    retained = []
    for step in program:
        if step == "residual":
            h += h.tanh()
        elif step == "view_mul":
            row = h[1]
            row.mul_(v)
        elif step == "column_add":
            h[:, 2] += w[0, 2]
        elif step == "setitem":
            h[0] = v * 2
        elif step == "relu":
            h = h.relu()
        elif step == "hook":
            h.register_hook(lambda g: g * 0.5)
        elif step == "retain":
            h.retain_grad()
            retained.append(h)
        elif step == "to_double":
            h = h.double()
        elif step == "to_float":
            h = h.float()
        elif step == "mul_other":
            h = h * v.double()
        elif step == "clamp":
            h = h.clamp(-1.0, 1.0)
        elif step == "sigmoid":
            h.sigmoid_()
        elif step == "fill_row":
            h[2].fill_(0.25)
        elif step == "copy_row":
            h[1].copy_(w[2] * v)
    loss = (h * h).sum()
    if second_order:
        (gw,) = (lib.autograd.grad if lib is not autograd else autograd.grad)(loss, [w], create_graph=True)
        loss = loss + (gw * gw).sum()
    loss.backward()
    out = {"loss": loss.item(), "h": h.detach().numpy().copy(),
           "w.grad": w.grad.numpy().copy(), "w.grad.dtype": str(w.grad.dtype).replace("torch.", "")}
    out["v.grad"] = None if v.grad is None else v.grad.numpy().copy()
    for i, t in enumerate(retained):
        out[f"retained{i}"] = None if t.grad is None else t.grad.numpy().copy()
    return out


@settings(max_examples=60)
@given(program=st.lists(STEPS, min_size=1, max_size=6), seed=st.integers(0, 2**16),
       dtype=st.sampled_from(["float32", "float64"]), second_order=st.booleans())
def test_random_programs_match_pytorch(program, seed, dtype, second_order):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    w0, v0 = rng.uniform(-1, 1, (3, 4)), rng.uniform(-1, 1, 4)
    try:
        theirs = _run(torch, program, w0, v0, dtype, second_order)
    except RuntimeError:
        return  # PyTorch refuses this program (see the module docstring)
    ours = _run(autograd, program, w0, v0, dtype, second_order)
    tolerance = 1e-4 if dtype == "float32" or "to_float" in program else 1e-9
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if value is None or isinstance(value, str):
            assert ours[key] == value, (key, program)
        else:
            np.testing.assert_allclose(ours[key], value, rtol=tolerance, atol=tolerance, err_msg=f"{key} {program}")
