"""Fixes found by the privacy programs (tests/test_programs_probe23_privacy_*.py), each checked against PyTorch where it
is installed and against what PyTorch is known to do always.

- A custom Function's output that shows one of its inputs (returned as-is, or a view made in forward) refuses a
  recorded in-place write, as PyTorch's IN_CUSTOM_FUNCTION view does (MULTI_OUTPUT_NODE's message where the Function
  had several differentiable outputs); so does a view of such an output, named by its own view op. Under no_grad, on
  a detached or cloned copy, on a non-differentiable output or on an output forward wrote in place (mark_dirty),
  the write goes through.
- The same for the tensors a module's full backward hooks pass through their gate (PyTorch's BackwardHookFunction):
  Opacus's well-known error for a ``ReLU(inplace=True)`` after (or inside) a hooked module. The deprecated
  ``register_backward_hook`` wraps nothing in PyTorch, and refuses nothing here.
- A full backward hook's grad_output showed zeros for a module output that needs no gradient (a detached one, or
  one computed from inputs that need none): PyTorch shows None there (zeros only in grad_input).
- ``nn.utils._per_sample_grad.call_for_per_sample_grads`` (PyTorch's Expanded Weights) was missing: per-sample
  gradients in ``p.grad_sample`` after one backward pass, ``p.grad`` left None, with PyTorch's refusals.
- ``optim.LBFGS`` without a line search took ``float()`` of the closure's loss inside ``enable_grad`` on its
  fixed-step path, so it warned "Converting a tensor with requires_grad=True to a scalar" where PyTorch's does not.
"""

import importlib
import warnings

import numpy as np
import pytest

from .pytorch_programs import OURS, assert_same, plain, pytorch

CUSTOM = "is a view and is being modified inplace. This view was created inside a custom Function"
MULTI = "is a view and is being modified inplace. This view is the output of a function that returns multiple views"


def _both():
    modules = [OURS]
    theirs = pytorch()
    if theirs is not None:
        modules.append(theirs)
    return modules


def _functions(torch):
    class Same(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, g):
            return g

    class ViewAs(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, g):
            return g

    class Pair(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            return x, y

        @staticmethod
        def backward(ctx, g, h):
            return g, h

    class WithIndices(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            i = torch.zeros(3)
            ctx.mark_non_differentiable(i)
            return x, i

        @staticmethod
        def backward(ctx, g, h):
            return g

    class Transposed(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            return w.t()

        @staticmethod
        def backward(ctx, g):
            return None, None

    class Doubled(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.mark_dirty(x)
            return x.mul_(2)

        @staticmethod
        def backward(ctx, g):
            return 2 * g

    return Same, ViewAs, Pair, WithIndices, Transposed, Doubled


@pytest.mark.parametrize("m", _both(), ids=lambda m: m.torch.__name__)
def test_in_place_write_to_a_custom_functions_view_output_is_refused(m):
    torch = m.torch
    Same, ViewAs, Pair, WithIndices, Transposed, Doubled = _functions(torch)
    a = torch.randn(3, requires_grad=True)
    for function in (Same, ViewAs):
        y = function.apply(a * 2)
        with pytest.raises(RuntimeError, match=f"Output 0 of {function.__name__} {CUSTOM}"):
            y.relu_()
        with pytest.raises(RuntimeError, match=f"Output 0 of Select {CUSTOM}"):  # (written through the view y[0])
            y[0] = 1.0
        with pytest.raises(RuntimeError, match=f"Output 0 of {function.__name__} {CUSTOM}"):
            y[torch.tensor([0, 2])] = 1.0  # (an advanced index writes y itself: index_put_)
    u, v = Pair.apply(a * 2, a * 3)
    with pytest.raises(RuntimeError, match=f"Output 1 of Pair {MULTI}"):
        v.add_(1)
    y, i = WithIndices.apply(a * 2)  # one differentiable output: the single-output message
    with pytest.raises(RuntimeError, match=f"Output 0 of WithIndices {CUSTOM}"):
        y.add_(1)
    i.add_(1)  # (a non-differentiable output takes writes)
    t = Transposed.apply(torch.randn(3, 3, requires_grad=True) * 1, torch.randn(3, 3))  # a view of an input
    with pytest.raises(RuntimeError, match=f"Output 0 of Transposed {CUSTOM}"):
        t.mul_(2)
    with pytest.raises(RuntimeError, match=f"Output 0 of Select {CUSTOM}"):  # a view of it: named by its view op
        t[0].mul_(2)
    t.clone().mul_(2)
    with torch.no_grad():
        t.mul_(2)
    b = a * 1
    d = Doubled.apply(b)  # changed in place by forward (mark_dirty): not a view, so it takes writes
    d.add_(1)
    d.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), np.full(3, 2.0))


@pytest.mark.parametrize("m", _both(), ids=lambda m: m.torch.__name__)
def test_in_place_write_to_what_a_full_backward_hook_gates_is_refused(m):
    torch, nn = m.torch, m.nn
    x = torch.randn(2, 3, requires_grad=True)
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(inplace=True), nn.Linear(3, 2))
    model[0].register_full_backward_hook(lambda mod, gi, go: None)
    with pytest.raises(RuntimeError, match=f"Output 0 of BackwardHookFunction {CUSTOM}"):
        model(x)
    relu = nn.ReLU(inplace=True)  # its input passes through the gate too
    relu.register_full_backward_hook(lambda mod, gi, go: None)
    with pytest.raises(RuntimeError, match=f"Output 0 of BackwardHookFunction {CUSTOM}"):
        relu(x * 1)
    lin = nn.Linear(3, 3)
    lin.register_full_backward_pre_hook(lambda mod, go: None)
    with pytest.raises(RuntimeError, match=f"Output 0 of Slice {CUSTOM}"):
        lin(x)[:, :2].relu_()

    class Two(nn.Module):
        def forward(self, a, b, c):
            return a * 2, b * 3

    two = Two()
    two.register_full_backward_hook(lambda mod, gi, go: None)
    out = two(torch.randn(2), x, torch.randn(2))
    with pytest.raises(RuntimeError, match=f"Output 1 of BackwardHookFunction {CUSTOM}"):
        out[1].add_(1)  # (index among the tensors passed; one of them differentiable: the single-output message)
    out[0].add_(1)  # needs no gradient: not gated
    y = lin(x)
    with torch.no_grad():
        y.add_(1)
    y.detach().add_(1)
    hooked = nn.Linear(3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the deprecated hook's own warnings)
        hooked.register_backward_hook(lambda mod, gi, go: None)
        hooked(x).relu_().sum().backward()  # the deprecated hook wraps nothing
    assert x.grad.shape == (2, 3)


def _dlg_like(m):
    """A gradient-matching closure (create_graph) minimised by LBFGS without a line search."""
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2)).double()
    target = [g.detach() for g in torch.autograd.grad(net(torch.ones(1, 3, dtype=torch.float64)).sum(),
                                                      net.parameters())]
    dummy = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    opt = optim.LBFGS([dummy], lr=0.5, max_iter=4)

    def closure():
        opt.zero_grad()
        grads = torch.autograd.grad(net(dummy).sum(), net.parameters(), create_graph=True)
        diff = sum(((g - t) ** 2).sum() for g, t in zip(grads, target))
        diff.backward()
        return diff

    losses = [opt.step(closure).item() for _ in range(3)]
    return losses, dummy.detach().numpy().copy()


def test_lbfgs_without_line_search_does_not_warn_of_float_on_a_loss_that_requires_grad():
    results = []
    for m in _both():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            results.append(_dlg_like(m))
    losses, dummy = results[0]
    assert losses[-1] < losses[0]
    if len(results) == 2:
        np.testing.assert_allclose(losses, results[1][0], rtol=1e-10)
        np.testing.assert_allclose(dummy, results[1][1], rtol=1e-9, atol=1e-12)


def _expanded_weights(m):
    """call_for_per_sample_grads over a model of Embedding, Conv2d, GroupNorm, LayerNorm (its weight frozen) and
    Linear, with a keyword argument; then with loss_reduction="mean"; and its refusals."""
    torch, nn, F = m.torch, m.nn, m.F
    expanded_weights = importlib.import_module(f"{nn.__name__}.utils._per_sample_grad")
    call_for_per_sample_grads = expanded_weights.call_for_per_sample_grads
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.conv = nn.Conv2d(1, 3, 3, padding=1)
            self.gn = nn.GroupNorm(1, 3)
            self.ln = nn.LayerNorm(4)
            self.fc = nn.Linear(3 * 4 * 4 + 4, 2)

        def forward(self, img, tok, scale=1.0):
            e = self.ln(self.emb(tok)).mean(1)
            c = F.relu(self.gn(self.conv(img))).flatten(1)
            return self.fc(torch.cat([c, e], 1)) * scale

    net = Net()
    net.ln.weight.requires_grad_(False)
    img, tok, y = torch.randn(5, 1, 4, 4), torch.randint(0, 10, (5, 3)), torch.randint(0, 2, (5,))
    out = call_for_per_sample_grads(net)(img, tok, scale=2.0)
    F.cross_entropy(out, y, reduction="sum").backward()
    result = {"out": out.detach(), "summed": {n: p.grad_sample for n, p in net.named_parameters() if p.requires_grad},
              "grads_none": all(p.grad is None for p in net.parameters()),
              "frozen": getattr(net.ln.weight, "grad_sample", None) is None}
    with pytest.raises(RuntimeError, match="Current Expanded Weights accumulates the gradients"):
        call_for_per_sample_grads(net)
    for p in net.parameters():
        p.grad_sample = None
    F.cross_entropy(call_for_per_sample_grads(net, batch_size=5, loss_reduction="mean")(img, tok), y).backward()
    result["mean"] = {n: p.grad_sample for n, p in net.named_parameters() if p.requires_grad}
    for p in net.parameters():
        p.grad_sample = None
    result["loop"] = {}
    for b in range(5):
        net.zero_grad()
        F.cross_entropy(net(img[b:b + 1], tok[b:b + 1]), y[b:b + 1]).backward()
        for n, p in net.named_parameters():
            if p.requires_grad:
                result["loop"].setdefault(n, []).append(p.grad.clone())
    with pytest.raises(RuntimeError, match="Expected loss_reduction argument to be sum or mean, got none"):
        call_for_per_sample_grads(net, loss_reduction="none")
    with pytest.raises(RuntimeError, match="Batch size must be positive, got 0"):
        call_for_per_sample_grads(net, batch_size=0)
    with pytest.raises(RuntimeError, match="Batch size passed must be None or an integer, got float"):
        call_for_per_sample_grads(net, batch_size=2.0)
    with pytest.raises(RuntimeError, match="found at least one input with batch size 5 and one with batch size 3"):
        call_for_per_sample_grads(net)(img, tok[:3])
    with pytest.raises(RuntimeError, match="Unable to find a tensor in the passed args and kwargs"):
        call_for_per_sample_grads(net)()
    with pytest.raises(RuntimeError, match="cannot handle function batch_norm"):
        call_for_per_sample_grads(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))(torch.randn(4, 3))
    return result


def test_call_for_per_sample_grads():
    ours = plain(_expanded_weights(OURS))
    theirs = pytorch()
    if theirs is not None:
        assert_same(ours, plain(_expanded_weights(theirs)), rtol=1e-5, atol=1e-6)
    assert ours["grads_none"] and ours["frozen"] and "ln.weight" not in ours["summed"]
    for name, rows in ours["loop"].items():  # each row is that sample's own gradient (the loop's, scaled by 2)
        np.testing.assert_allclose(ours["mean"][name], np.stack(rows), rtol=1e-4, atol=1e-6)
        assert ours["summed"][name].shape == (5, *rows[0].shape)


def _hooked_outputs(m):
    torch, nn = m.torch, m.nn
    seen = []

    class Two(nn.Module):
        def forward(self, a, b):
            return a * b, b * 2, (a * 0).detach()

    two = Two()
    two.register_full_backward_pre_hook(lambda mod, go: seen.append(("pre", go)))
    two.register_full_backward_hook(lambda mod, gi, go: seen.append(("full", gi, go)))
    x, w = torch.ones(3, requires_grad=True), torch.full((3,), 5.0)
    product, doubled, detached = two(x, w)
    product.sum().backward()
    return seen


def test_full_backward_hooks_show_none_for_outputs_that_need_no_gradient():
    """grad_output holds None for an output that needs no gradient (PyTorch's BackwardHookFunction marks it
    non-differentiable); grad_input holds zeros for an input that needs none. Before, both sides showed zeros."""
    for m in _both():
        (pre, grad_output), (full, grad_input, grad_output_again) = _hooked_outputs(m)
        assert grad_output[1] is None and grad_output[2] is None
        assert grad_output_again[1] is None and grad_output_again[2] is None
        np.testing.assert_array_equal(grad_output[0].numpy(), np.ones(3))
        np.testing.assert_array_equal(grad_input[0].numpy(), np.full(3, 5.0))
        np.testing.assert_array_equal(grad_input[1].numpy(), np.zeros(3))


FORWARD_BODIES = {  # what forward returns -> whether an in-place write to the output is refused (PyTorch 2.13)
    "x.detach()": (lambda x, w: x.detach(), False),  # (shares memory, but is no view in PyTorch's autograd)
    "w.detach()": (lambda x, w: w.detach(), False),
    "x.clone()": (lambda x, w: x.clone(), False),
    "x + 0": (lambda x, w: x + 0, False),
    "x.float()": (lambda x, w: x.float(), True),  # (x itself)
    "x.contiguous()": (lambda x, w: x.contiguous(), True),
    "x.reshape(-1)": (lambda x, w: x.reshape(-1), True),
    "x.squeeze()": (lambda x, w: x.squeeze(), True),
    "x.expand(3)": (lambda x, w: x.expand(3), True),
    "w": (lambda x, w: w, True),  # (an input that needs no gradient, returned as it is)
}


@pytest.mark.parametrize("m", _both(), ids=lambda m: m.torch.__name__)
@pytest.mark.parametrize("body", sorted(FORWARD_BODIES))
def test_which_custom_function_outputs_refuse_in_place_writes(m, body):
    torch = m.torch
    returns, refused = FORWARD_BODIES[body]

    class Forward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            return returns(x, w)

        @staticmethod
        def backward(ctx, g):
            return g, None

    y = Forward.apply(torch.randn(3, requires_grad=True) * 2, torch.randn(3))
    if refused:
        with pytest.raises(RuntimeError, match=f"Output 0 of Forward {CUSTOM}"):
            y.add_(1)
    else:
        y.add_(1)
