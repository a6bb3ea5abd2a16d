# ruff: noqa: F841  (the programs are kept as their authors wrote them)
"""Spiking and other dynamical, biologically inspired networks as snnTorch, SpikingJelly, Norse, BindsNET and papers'
reference code write them, run as tests/probe22_spiking_common.py says. Surrogate gradients: heaviside forwards (``(x
> 0).float()``, ``(x >= 0).to(x)``, ``torch.heaviside``) with arctan, fast-sigmoid, triangle, straight-through,
piecewise-leaky and user-supplied backwards in ``autograd.Function``s (``ctx.save_for_backward``,
``ctx.needs_input_grad``, ``mark_non_differentiable``, ``set_materialize_grads``, ``mark_dirty``,
``once_differentiable``, ``setup_context`` with ``vmap``/``func.grad``); forward-mode JVPs through a surrogate, and
``torch.heaviside`` without a surrogate failing at backward."""

import math

import numpy as np
import pytest

from .probe22_spiking_common import dtype_name
from .pytorch_programs import run_both

pytestmark = [pytest.mark.filterwarnings(r"ignore:.*jit\.script.* is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")]


# ----------------------------------------------------------------------------------------------
# surrogate gradients
# ----------------------------------------------------------------------------------------------


def surrogates(m):
    torch, nn, F = m.torch, m.nn, m.F

    class ATan(torch.autograd.Function):
        @staticmethod
        def forward(ctx, mem, alpha=2.0):
            spk = (mem > 0).float()
            ctx.save_for_backward(mem)
            ctx.alpha = alpha
            return spk

        @staticmethod
        def backward(ctx, grad_output):
            (mem,) = ctx.saved_tensors
            grad = ctx.alpha / 2 / (1 + (math.pi / 2 * ctx.alpha * mem).pow_(2)) * grad_output
            return grad, None

    class FastSigmoid(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input_, slope=25):
            ctx.save_for_backward(input_)
            ctx.slope = slope
            out = (input_ > 0).float()
            return out

        @staticmethod
        def backward(ctx, grad_output):
            (input_,) = ctx.saved_tensors
            grad_input = grad_output.clone()
            grad = grad_input / (ctx.slope * torch.abs(input_) + 1.0) ** 2
            return grad, None

    class Triangle(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, threshold=1.0):
            ctx.save_for_backward(x)
            ctx.threshold = threshold
            return torch.heaviside(x, torch.tensor(0.0))

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            grad = g.clone() * ctx.threshold
            grad[x >= 0] = -grad[x >= 0]
            grad = grad * (x.abs() < ctx.threshold)
            return grad, None

    class STE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return (x >= 0).to(x)

        @staticmethod
        def backward(ctx, g):
            if ctx.needs_input_grad[0]:
                return g
            return None

    class CustomSurrogate(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input_, custom_surrogate_function):
            out = (input_ > 0).float()
            ctx.save_for_backward(input_, out)
            ctx.custom_surrogate_function = custom_surrogate_function
            return out

        @staticmethod
        def backward(ctx, grad_output):
            input_, out = ctx.saved_tensors
            grad = ctx.custom_surrogate_function(input_, grad_output.clone(), out)
            return grad, None

    class PiecewiseLeakyReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w=1, c=0.01):
            if x.requires_grad:
                ctx.save_for_backward(x)
                ctx.w = w
                ctx.c = c
            return (x >= 0).to(x)

        @staticmethod
        def backward(ctx, grad_output):
            grad_x = None
            if ctx.needs_input_grad[0]:
                w, c = ctx.w, ctx.c
                x = ctx.saved_tensors[0]
                mask_width = (x.abs() < w)
                mask_c = mask_width.logical_not()
                grad_x = x.masked_fill(mask_width, 1 / (2 * w)).masked_fill(mask_c, c) * grad_output
            return grad_x, None, None

    def exp_surrogate(input_, grad_input, spikes):
        return grad_input * torch.exp(-input_.abs()) * (1 + spikes)

    torch.manual_seed(0)
    x = torch.randn(5, 7, requires_grad=True)
    out = {}
    for name, fn in [("atan", lambda x: ATan.apply(x, 2.0)), ("fast_sigmoid", lambda x: FastSigmoid.apply(x)),
                     ("triangle", lambda x: Triangle.apply(x, 1.5)), ("ste", STE.apply),
                     ("custom", lambda x: CustomSurrogate.apply(x, exp_surrogate)),
                     ("piecewise", lambda x: PiecewiseLeakyReLU.apply(x, 0.5, 0.05))]:
        x.grad = None
        s = fn(x)
        (s * torch.arange(7.0)).sum().backward()
        out[name] = (s, x.grad.clone(), s.requires_grad, dtype_name(s.dtype))
    unrecorded = PiecewiseLeakyReLU.apply(torch.randn(3))
    out["unrecorded"] = (unrecorded, unrecorded.requires_grad)
    return x, out


def test_surrogate_functions_against_numpy():
    ours, _ = run_both(surrogates)
    x, out = ours
    step = np.arange(7.0)
    want = {
        "atan": 2.0 / 2 / (1 + (math.pi / 2 * 2.0 * x) ** 2),
        "fast_sigmoid": 1 / (25 * np.abs(x) + 1) ** 2,
        "triangle": np.where(x >= 0, -1.5, 1.5) * (np.abs(x) < 1.5),
        "ste": np.ones_like(x),
        "custom": np.exp(-np.abs(x)) * (1 + (x > 0)),
        "piecewise": np.where(np.abs(x) < 0.5, 1.0, 0.05),
    }
    for name, local in want.items():
        spikes, grad, requires_grad, dtype = out[name]
        np.testing.assert_array_equal(spikes, (x >= 0) if name in ("ste", "triangle", "piecewise") else (x > 0))
        np.testing.assert_allclose(grad, local * step, rtol=1e-5, atol=1e-7, err_msg=name)
        assert requires_grad and dtype == "float32"
    assert out["unrecorded"][1] is False


def func_transforms(m):
    torch = m.torch

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(x, alpha):
            return (x >= 0).to(x.dtype)

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, alpha = inputs
            ctx.save_for_backward(x)
            ctx.alpha = alpha

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g * ctx.alpha / (1 + (ctx.alpha * x).abs()) ** 2, None

        @staticmethod
        def vmap(info, in_dims, x, alpha):
            return Spike.apply(x, alpha), in_dims[0]
    torch.manual_seed(0)
    W = torch.randn(4, 3, dtype=torch.float64)

    def lif(W, x):
        mem = torch.zeros(4, dtype=torch.float64)
        cnt = 0
        for t in range(x.shape[0]):
            mem = 0.8 * mem + W @ x[t]
            s = Spike.apply(mem - 0.5, 5.0)
            mem = mem - s * 0.5
            cnt = cnt + s
        return (cnt * torch.arange(4.0, dtype=torch.float64)).sum()
    xs = torch.rand(5, 6, 3, dtype=torch.float64)
    per_sample = torch.func.vmap(torch.func.grad(lif), in_dims=(None, 0))(W, xs)
    jac = torch.func.jacrev(lambda W: torch.stack([lif(W, xi) for xi in xs]))(W)
    jf = torch.autograd.functional.jacobian(lambda W: torch.stack([lif(W, xi) for xi in xs]), W)
    return dict(ps=per_sample, jac=jac, jf=jf)

def grad_scale_identity(m):
    torch = m.torch

    class GradScale(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, scale):
            ctx.scale = scale
            return x

        @staticmethod
        def backward(ctx, g):
            return g * ctx.scale, None

    class InplaceReset(torch.autograd.Function):
        @staticmethod
        def forward(ctx, mem, thr):
            spk = (mem > thr).to(mem.dtype)
            mem.sub_(spk * thr)
            ctx.mark_dirty(mem)
            ctx.mark_non_differentiable(spk)
            ctx.save_for_backward(spk)
            return mem, spk

        @staticmethod
        def backward(ctx, g_mem, g_spk):
            return g_mem, None
    x = torch.tensor([0.5, 1.5, 2.5], requires_grad=True)
    y = GradScale.apply(x, 0.5)
    same = y is x
    z = x * 2
    mem, spk = InplaceReset.apply(z, 1.0)
    (y.sum() + (mem * torch.tensor([1.0, 2.0, 3.0])).sum()).backward()
    return dict(g=x.grad, same=same, mem=mem, spk=spk, zs=z is mem, name=mem.grad_fn.name(),
                v=z._version > 0)


def fn_multi_out(m, materialize):
    torch = m.torch
    infos = []

    class LIFStep(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, mem, beta):
            mem = beta * mem + x
            spk = (mem > 1.0).float()
            mem_out = mem - spk
            ctx.save_for_backward(mem)
            ctx.beta = beta
            ctx.mark_non_differentiable(spk)
            ctx.set_materialize_grads(materialize)
            return mem_out, spk

        @staticmethod
        def backward(ctx, g_mem, g_spk):
            mem, = ctx.saved_tensors
            info = (g_spk is None, None if g_spk is None else float(g_spk.abs().sum()))
            infos.append(info)
            sg = 1 / (1 + (math.pi * (mem - 1)).pow(2))
            g = g_mem * (1 - sg)
            return g, g * ctx.beta, None
    torch.manual_seed(0)
    x = torch.rand(6, 3, requires_grad=True) * 1.0
    x.retain_grad()
    mem = torch.zeros(3, requires_grad=True)
    spks = []
    m_ = mem
    for t in range(6):
        m_, s = LIFStep.apply(x[t], m_, 0.9)
        spks.append(s)
    (m_.sum() + torch.stack(spks).sum()).backward()
    return dict(infos=infos, gx=x.grad, gm=mem.grad, s_rg=spks[0].requires_grad, spks=torch.stack(spks))

def function_errors(m):
    torch = m.torch
    out = {}

    class TooFew(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha):
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            return g

    class NonNoneForFloat(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha):
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            return g, torch.ones(())

    class BadShape(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            return g.sum(0)

    class WrongDtype(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return (x > 0).to(x.dtype)

        @staticmethod
        def backward(ctx, g):
            return g.double() * 2

    class SavedModified(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g * x

    class BroadcastGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            return g[0:1]  # (1, n) for an (k, n) input
    x = torch.randn(3, 4, requires_grad=True)
    for name, f in [("few", lambda: TooFew.apply(x, 2.0)), ("nonnone", lambda: NonNoneForFloat.apply(x, 2.0)),
                    ("shape", lambda: BadShape.apply(x)), ("bcast", lambda: BroadcastGrad.apply(x))]:
        try:
            x.grad = None
            f().sum().backward()
            out[name] = ("ok", x.grad)
        except Exception as e:
            out[name] = (type(e).__name__, str(e)[:100])
    x.grad = None
    WrongDtype.apply(x).sum().backward()
    out["dtype"] = (dtype_name(x.grad.dtype), x.grad)
    try:
        y = x * 1.0
        s = SavedModified.apply(y)
        y.add_(1)
        s.sum().backward()
        out["saved"] = "ok"
    except Exception as e:
        out["saved"] = type(e).__name__
    return out


def test_per_sample_gradients_and_jacobians_through_a_surrogate():
    ours, _ = run_both(func_transforms, rtol=1e-8, atol=1e-10)
    assert ours["ps"].shape == (5, 4, 3)
    np.testing.assert_allclose(ours["jac"], ours["jf"], rtol=1e-12)
    np.testing.assert_allclose(ours["jac"], ours["ps"], rtol=1e-12)  # one sample's gradient is its row


def test_function_forward_returning_its_input_and_marking_it_dirty():
    ours, _ = run_both(grad_scale_identity)
    assert not ours["same"] and ours["zs"] and ours["v"] and ours["name"] == "InplaceResetBackward"
    np.testing.assert_allclose(ours["g"], [0.5 + 2, 0.5 + 4, 0.5 + 6])
    np.testing.assert_allclose(ours["mem"], [1.0, 2.0, 4.0])
    np.testing.assert_allclose(ours["spk"], [0.0, 1.0, 1.0])


@pytest.mark.parametrize("materialize", [True, False])
def test_lif_function_with_a_non_differentiable_spike_output(materialize):
    ours, _ = run_both(fn_multi_out, materialize)
    infos = ours["infos"]
    assert len(infos) == 6 and not ours["s_rg"]
    # the spikes' gradient is zeros when grads are materialised, None when not
    assert all(info == ((False, 0.0) if materialize else (True, None)) for info in infos)


def test_function_backward_protocol_errors():
    ours, _ = run_both(function_errors)
    assert ours["few"][0] == "RuntimeError" and "incorrect number of gradients (expected 2, got 1)" in ours["few"][1]
    assert ours["nonnone"][0] == "RuntimeError" and "different than None at position 2" in ours["nonnone"][1]
    assert ours["shape"][0] == "RuntimeError" and "invalid gradient at index 0 - got [4]" in ours["shape"][1]
    assert ours["bcast"][0] == "RuntimeError"  # (a gradient that would broadcast to its input's shape is refused too)
    assert ours["dtype"][0] == "float32" and np.all(ours["dtype"][1] == 2)
    assert ours["saved"] == "RuntimeError"


def forward_ad_lif(m):
    torch = m.torch
    import importlib
    fwAD = importlib.import_module(m.torch.__name__ + ".autograd.forward_ad")

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return (x > 0).to(x.dtype)

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, = inputs
            ctx.save_for_backward(x)
            ctx.x = x

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g / (1 + 5 * x.abs()) ** 2

        @staticmethod
        def jvp(ctx, t):
            x = ctx.x
            return t / (1 + 5 * x.abs()) ** 2
    torch.manual_seed(0)
    W = torch.randn(3, 2, dtype=torch.float64)
    x = torch.rand(6, 2, dtype=torch.float64)
    tangent = torch.randn(3, 2, dtype=torch.float64)

    def run_(W):
        mem = torch.zeros(3, dtype=torch.float64)
        cnt = 0
        for t in range(6):
            mem = 0.8 * mem + W @ x[t]
            s = Spike.apply(mem - 0.4)
            mem = mem - s * 0.4
            cnt = cnt + s * (t + 1)
        return cnt.sum() + mem.sum()
    with fwAD.dual_level():
        dual = fwAD.make_dual(W, tangent)
        out = run_(dual)
        primal, jvp_ = fwAD.unpack_dual(out)
    Wr = W.clone().requires_grad_()
    run_(Wr).backward()
    _, jvp2 = torch.func.jvp(run_, (W,), (tangent,))
    return dict(primal=primal, jvp=jvp_, jvp2=jvp2, vjp_dot=(Wr.grad * tangent).sum())


def test_forward_mode_jvp_through_a_surrogate():
    ours, _ = run_both(forward_ad_lif, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["jvp"], ours["vjp_dot"], rtol=1e-10)
    np.testing.assert_allclose(ours["jvp2"], ours["vjp_dot"], rtol=1e-10)


def heaviside_without_a_surrogate(m):
    """The first attempt of many a tutorial: a LIF layer spiking through torch.heaviside, which has no derivative, so
    training it fails at backward (and the surrogate of the next cell of the notebook mends it)."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    fc = nn.Linear(4, 3)
    x = torch.rand(5, 2, 4) * 2
    mem = torch.zeros(2, 3)
    spikes = []
    for t in range(5):
        mem = 0.9 * mem + fc(x[t])
        spk = torch.heaviside(mem - 1.0, torch.tensor(0.0))
        mem = mem - spk
        spikes.append(spk)
    spk_rec = torch.stack(spikes)
    loss = F.mse_loss(spk_rec.mean(0), torch.full((2, 3), 0.5)) + 0.01 * mem.pow(2).mean()
    try:
        loss.backward()
        error = None
    except RuntimeError as e:
        error = str(e)
    return dict(spk_rec=spk_rec, requires_grad=spk_rec.requires_grad, error=error, grad=fc.weight.grad is None)


def test_heaviside_without_a_surrogate_fails_at_backward():
    ours, _ = run_both(heaviside_without_a_surrogate)
    assert ours["requires_grad"] and ours["grad"]
    assert ours["error"] == "derivative for aten::heaviside is not implemented"
    assert set(np.unique(ours["spk_rec"])) <= {0.0, 1.0}
