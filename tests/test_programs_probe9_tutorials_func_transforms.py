# ruff: noqa: B011, E501, E731, UP008  (the programs are kept as their authors wrote them)
"""PyTorch's official tutorials (pytorch/tutorials: beginner_source, intermediate_source, advanced_source), each run
on chainrule and on PyTorch from the same weights and data, comparing losses, parameters and gradients. torch.func,
forward mode and control flow: the neural tangent kernels tutorial (``vmap(jacrev(fnet_single), (None, 0))`` over
``functional_call``, ``einsum`` contractions 'Naf,Mbf->NMab', 'Naf,Maf->NM', and NTK-vector products by ``vjp`` then
``jvp`` under a double ``vmap`` with the identity basis); the forward-mode AD tutorial (``fwAD.dual_level``,
``make_dual`` of a transposed tangent, ``unpack_dual`` after the level closes, dual tensors set on a module in place
of its parameters by ``delattr``/``setattr`` and through ``functional_call``, a custom Function with only a ``jvp``
checked by ``gradcheck(check_forward_ad=True, check_backward_ad=False)``, ``torch.func.jvp`` with
``functools.partial`` and over a module's parameters); the control-flow operators tutorial (``cond`` on a one-element
bool tensor and on ``isinf(x).any() or isnan(x).any()``, ``while_loop`` over integer tensors, a gradient through
each; its ``scan`` LSTM is a strict expected failure: the tutorial's ``torch._higher_order_ops.scan.scan`` is not
there in PyTorch 2.13 either); the per-sample-gradients tutorial as now written (a CNN's gradients sample by sample
with ``autograd.grad`` and ``torch.stack`` of ``zip(*...)``, then ``vmap(grad(compute_loss), in_dims=(None, None, 0,
0))`` over ``functional_call(model, (params, buffers), ...)``, and its float64 baseline, which copies into a float32
model and so is refused by its first convolution). The model-ensembling tutorial as written (its base model moved to
the 'meta' device)."""

import functools
import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Neural tangent kernels (intermediate_source/neural_tangent_kernels.py)
# ----------------------------------------------------------------------------------------------


def ntk(m, weights=None):
    torch, nn = m.torch, m.nn
    functional_call, vmap, vjp, jvp, jacrev = (torch.func.functional_call, torch.func.vmap, torch.func.vjp,
                                               torch.func.jvp, torch.func.jacrev)

    class CNN(nn.Module):
        def __init__(self):
            super(CNN, self).__init__()
            self.conv1 = nn.Conv2d(3, 4, (3, 3))
            self.conv2 = nn.Conv2d(4, 4, (3, 3))
            self.conv3 = nn.Conv2d(4, 4, (3, 3))
            self.fc = nn.Linear(4 * 2 * 2, 3)

        def forward(self, x):
            x = self.conv1(x)
            x = x.relu()
            x = self.conv2(x)
            x = x.relu()
            x = self.conv3(x)
            x = x.flatten(1)
            x = self.fc(x)
            return x

    net = CNN()
    if weights is None:
        return net
    load(m, net, weights)
    rng = np.random.default_rng(0)
    x_train = torch.tensor(rng.standard_normal((4, 3, 8, 8)), dtype=torch.float64)
    x_test = torch.tensor(rng.standard_normal((3, 3, 8, 8)), dtype=torch.float64)
    net = net.double()
    params = {k: v.detach() for k, v in net.named_parameters()}

    def fnet_single(params, x):
        return functional_call(net, params, (x.unsqueeze(0),)).squeeze(0)

    def empirical_ntk_jacobian_contraction(fnet_single, params, x1, x2, compute='full'):
        jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x1)
        jac1 = jac1.values()
        jac1 = [j.flatten(2) for j in jac1]
        jac2 = vmap(jacrev(fnet_single), (None, 0))(params, x2)
        jac2 = jac2.values()
        jac2 = [j.flatten(2) for j in jac2]
        einsum_expr = None
        if compute == 'full':
            einsum_expr = 'Naf,Mbf->NMab'
        elif compute == 'trace':
            einsum_expr = 'Naf,Maf->NM'
        elif compute == 'diagonal':
            einsum_expr = 'Naf,Maf->NMa'
        else:
            assert False
        result = torch.stack([torch.einsum(einsum_expr, j1, j2) for j1, j2 in zip(jac1, jac2)])
        result = result.sum(0)
        return result

    def empirical_ntk_ntk_vps(func, params, x1, x2, compute='full'):
        def get_ntk(x1, x2):
            def func_x1(params):
                return func(params, x1)

            def func_x2(params):
                return func(params, x2)

            output, vjp_fn = vjp(func_x1, params)

            def get_ntk_slice(vec):
                vjps = vjp_fn(vec)
                _, jvps = jvp(func_x2, (params,), vjps)
                return jvps

            basis = torch.eye(output.numel(), dtype=output.dtype, device=output.device).view(output.numel(), -1)
            return vmap(get_ntk_slice)(basis)

        result = vmap(vmap(get_ntk, (None, 0)), (0, None))(x1, x2)
        if compute == 'full':
            return result
        if compute == 'trace':
            return torch.einsum('NMKK->NM', result)
        if compute == 'diagonal':
            return torch.einsum('NMKK->NMK', result)

    result = empirical_ntk_jacobian_contraction(fnet_single, params, x_train, x_test)
    trace = empirical_ntk_jacobian_contraction(fnet_single, params, x_train, x_test, 'trace')
    diagonal = empirical_ntk_jacobian_contraction(fnet_single, params, x_train, x_test, 'diagonal')
    result_from_jacobian_contraction = empirical_ntk_jacobian_contraction(fnet_single, params, x_test, x_train)
    result_from_ntk_vps = empirical_ntk_ntk_vps(fnet_single, params, x_test, x_train)
    assert torch.allclose(result_from_jacobian_contraction, result_from_ntk_vps, atol=1e-5)
    vps_trace = empirical_ntk_ntk_vps(fnet_single, params, x_test, x_train, 'trace')
    # the kernel by hand, one Jacobian per example by autograd.grad of each output
    def jacobian_rows(x):
        rows = []
        for i in range(x.shape[0]):
            out = net(x[i:i + 1])[0]
            rows.append(torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(out[a], list(net.parameters()), retain_graph=True)])
                                     for a in range(out.shape[0])]))
        return torch.stack(rows)
    J1, J2 = jacobian_rows(x_train), jacobian_rows(x_test)
    by_hand = torch.einsum('naf,mbf->nmab', J1, J2)
    return {"full": result, "trace": trace, "diagonal": diagonal, "vps": result_from_ntk_vps,
            "contraction": result_from_jacobian_contraction, "vps_trace": vps_trace, "by_hand": by_hand}


def test_neural_tangent_kernels():
    ours, _ = run_both(ntk, weights_of(ntk), rtol=1e-9, atol=1e-10)
    assert ours["full"].shape == (4, 3, 3, 3)
    np.testing.assert_allclose(ours["full"], ours["by_hand"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["trace"], np.einsum("nmaa->nm", ours["full"]), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["diagonal"], np.einsum("nmaa->nma", ours["full"]), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["vps"], ours["full"].transpose(1, 0, 3, 2), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["vps_trace"], ours["trace"].T, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Forward-mode automatic differentiation (intermediate_source/forward_ad_usage.py)
# ----------------------------------------------------------------------------------------------


def forward_ad_usage(m, weights):
    torch, nn = m.torch, m.nn
    fwAD = torch.autograd.forward_ad
    functional_call = torch.func.functional_call
    rng = np.random.default_rng(0)
    randn = lambda *shape, dtype=torch.float32: torch.tensor(rng.standard_normal(shape), dtype=dtype)
    results = {}

    primal = randn(10, 10)
    tangent = randn(10, 10)

    def fn(x, y):
        return x ** 2 + y ** 2

    with fwAD.dual_level():
        dual_input = fwAD.make_dual(primal, tangent)
        assert fwAD.unpack_dual(dual_input).tangent is tangent
        dual_input_alt = fwAD.make_dual(primal, tangent.T)
        assert fwAD.unpack_dual(dual_input_alt).tangent is not tangent
        plain_tensor = randn(10, 10)
        dual_output = fn(dual_input, plain_tensor)
        jvp = fwAD.unpack_dual(dual_output).tangent
        results["alt"] = fwAD.unpack_dual(fn(dual_input_alt, plain_tensor)).tangent
    assert fwAD.unpack_dual(dual_output).tangent is None
    results["basic"] = jvp

    model = nn.Linear(5, 5)
    load(m, model, weights)
    input = randn(16, 5)
    params = {name: p for name, p in model.named_parameters()}
    tangents = {name: torch.tensor(rng.random(tuple(p.shape)), dtype=p.dtype) for name, p in params.items()}
    with fwAD.dual_level():
        for name, p in params.items():
            delattr(model, name)
            setattr(model, name, fwAD.make_dual(p, tangents[name]))
        out = model(input)
        jvp = fwAD.unpack_dual(out).tangent
    results["module"] = jvp

    model = nn.Linear(5, 5)
    dual_params = {}
    with fwAD.dual_level():
        for name, p in params.items():
            dual_params[name] = fwAD.make_dual(p, tangents[name])
        out = functional_call(model, dual_params, input)
        jvp2 = fwAD.unpack_dual(out).tangent
    assert torch.allclose(jvp, jvp2)
    results["functional"] = jvp2

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, foo):
            result = torch.exp(foo)
            ctx.result = result
            return result

        @staticmethod
        def jvp(ctx, gI):
            gO = gI * ctx.result
            del ctx.result
            return gO

    fn_ = Fn.apply
    primal = randn(10, 10, dtype=torch.double).requires_grad_()
    tangent = randn(10, 10)
    with fwAD.dual_level():
        dual_input = fwAD.make_dual(primal, tangent)
        dual_output = fn_(dual_input)
        jvp = fwAD.unpack_dual(dual_output).tangent
    results["custom"] = jvp
    results["gradcheck"] = torch.autograd.gradcheck(Fn.apply, (primal,), check_forward_ad=True,
                                                    check_backward_ad=False, check_undefined_grad=False,
                                                    check_batched_grad=False)

    primal0, tangent0, primal1, tangent1 = randn(10, 10), randn(10, 10), randn(10, 10), randn(10, 10)
    primal_out, tangent_out = torch.func.jvp(fn, (primal0, primal1), (tangent0, tangent1))
    results["ft_jvp"] = (primal_out, tangent_out)
    primal, tangent, y = randn(10, 10), randn(10, 10), randn(10, 10)
    new_fn = functools.partial(fn, y=y)
    results["partial"] = torch.func.jvp(new_fn, (primal,), (tangent,))

    model = nn.Linear(5, 5)
    load(m, model, weights)
    params = {k: v.detach() for k, v in model.named_parameters()}
    tangents = {k: torch.tensor(rng.random(tuple(v.shape)), dtype=v.dtype) for k, v in params.items()}

    def func_params_only(params):
        return functional_call(model, params, (input,))

    results["params_jvp"] = torch.func.jvp(func_params_only, (params,), (tangents,))
    results["tangents"] = tangents
    results["input"] = input
    return results


def test_forward_ad_usage_tutorial():
    weights = weights_of(lambda m: m.nn.Linear(5, 5))
    ours, _ = run_both(forward_ad_usage, weights, rtol=1e-6, atol=1e-6)
    W, b = weights["weight"], weights["bias"]
    x = ours["input"]
    tW, tb = ours["tangents"]["weight"], ours["tangents"]["bias"]
    np.testing.assert_allclose(ours["params_jvp"][0], x @ W.T + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["params_jvp"][1], x @ tW.T + tb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["module"], ours["functional"], rtol=1e-6)
    assert ours["gradcheck"] is True


# ----------------------------------------------------------------------------------------------
# Control flow operators (intermediate_source/torch_controlflow_tutorial.py)
# ----------------------------------------------------------------------------------------------


def control_flow(m):
    torch = m.torch
    cond, while_loop = torch.cond, torch.while_loop  # the tutorial imports them from torch._higher_order_ops
    r = {}

    class CondExample(m.nn.Module):
        def forward(self, x):
            pred = (x.sum() > 0).unsqueeze(0)

            def true_fn(t):
                return (t.cos(),)

            def false_fn(t):
                return (t.sin(),)

            out = cond(pred, true_fn, false_fn, (x,))
            return out[0]

    rng = np.random.default_rng(0)
    model = CondExample()
    for sign in (1.0, -1.0):
        xs = torch.tensor(sign * np.abs(rng.standard_normal((3, 3))), dtype=torch.float64, requires_grad=True)
        result = model(xs)
        result_pytorch = xs.cos() if xs.sum() > 0 else xs.sin()
        torch.testing.assert_close(result_pytorch, result)
        result.sum().backward()
        r[f"cond{sign}"] = (xs.detach(), result, xs.grad)

    class CumulativeSumWithWhileLoopExample(m.nn.Module):
        def forward(self, cnt, s):
            def cond_fn(i, s):
                return i < 5

            def body_fn(i, s):
                return (i + 1, s + i)

            cnt_final, cumsum_final = while_loop(cond_fn, body_fn, (cnt, s))
            return cumsum_final

    result = CumulativeSumWithWhileLoopExample()(torch.tensor(0), torch.tensor(0))
    torch.testing.assert_close(torch.cumsum(torch.arange(5), 0)[-1], result)
    r["while"] = result

    min_allowed_value, max_allowed_value = -7, 4

    class AdvancedCondExample(m.nn.Module):
        def forward(self, xs):
            def pred(x):
                return torch.isinf(x).any() or torch.isnan(x).any()

            def true_fn(x):
                no_nans_and_infs = torch.nan_to_num(x, nan=0.0, posinf=100, neginf=-100)
                clamped = torch.clamp(no_nans_and_infs, min=min_allowed_value, max=max_allowed_value)
                return clamped

            def false_fn(x):
                return x.clone()

            return cond(pred(xs), true_fn, false_fn, (xs,))

    model = AdvancedCondExample()
    r["filtered"] = model(torch.tensor([-10., -4, float("nan"), 1, float("inf")]))
    r["unfiltered"] = model(torch.tensor([-10., -4, 1]))
    # Newton's iterations for a square root, differentiated with respect to the operand
    a = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    _, root = while_loop(lambda i, x: i < 6, lambda i, x: (i + 1, 0.5 * (x + a / x)),
                         (torch.tensor(0), torch.tensor(1.0, dtype=torch.float64)))
    root.backward()
    r["newton"] = (root, a.grad)
    return r


def test_control_flow_cond_and_while_loop():
    ours, theirs = run_both(control_flow, compare=False)
    if theirs is not None:
        from .pytorch_programs import assert_same
        # PyTorch 2.13's while_loop does not differentiate through a tensor the body closes over (it gave
        # 2w^2 for d(2w^3)/dw in a probe): only its value is compared, the gradient is checked by hand
        ours_newton, theirs_newton = ours.pop("newton"), theirs.pop("newton")
        assert_same(ours, theirs, rtol=1e-12, atol=1e-12)
        assert ours_newton[0] == pytest.approx(theirs_newton[0], rel=1e-12)
        ours["newton"] = ours_newton
    assert int(ours["while"]) == 10
    np.testing.assert_array_equal(ours["filtered"], [-7., -4., 0., 1., 4.])
    np.testing.assert_array_equal(ours["unfiltered"], [-10., -4., 1.])
    root, grad = ours["newton"]
    assert root == pytest.approx(math.sqrt(2), rel=1e-12)
    assert grad == pytest.approx(1 / (2 * math.sqrt(2)), rel=1e-6)
    x, result, grad = ours["cond1.0"]
    np.testing.assert_allclose(grad, -np.sin(x), rtol=1e-12)
    x, result, grad = ours["cond-1.0"]
    np.testing.assert_allclose(result, np.sin(x), rtol=1e-12)
    np.testing.assert_allclose(grad, np.cos(x), rtol=1e-12)


def scan_lstm(m, weights):
    torch, nn = m.torch, m.nn
    scan = torch._higher_order_ops.scan.scan

    class LSTM_scan_cell(nn.Module):
        def __init__(self, state_dict):
            super(LSTM_scan_cell, self).__init__()
            self.lstm_cell = nn.LSTMCell(4, 5)
            self.lstm_cell.load_state_dict(state_dict)

        def forward(self, init, xs):
            def lstm_combine(carry, x):
                hx, cx = self.lstm_cell(x, carry)
                return (hx, cx.clone()), hx.clone()

            carry, outs = scan(lstm_combine, init, xs, dim=0)
            return carry, outs

    model = LSTM_scan_cell({k: torch.tensor(v) for k, v in weights.items()})
    rng = np.random.default_rng(0)
    xs = torch.tensor(rng.standard_normal((6, 4)), dtype=torch.float32, requires_grad=True)
    init = (torch.zeros(5), torch.zeros(5))
    carry, outs = model(init, xs)
    outs.sum().backward()
    return outs, xs.grad


@pytest.mark.xfail(strict=True, raises=AttributeError,
                   reason="the tutorial's torch._higher_order_ops.scan.scan: PyTorch 2.13's (and so chainrule's) "
                          "torch._higher_order_ops.scan is the function scan itself, which has no attribute scan; "
                          "`from torch._higher_order_ops.scan import scan` works in both")
def test_control_flow_scan_lstm():
    run_both(scan_lstm, weights_of(lambda m: m.nn.LSTMCell(4, 5)), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Per-sample gradients (intermediate_source/per_sample_grads.py)
# ----------------------------------------------------------------------------------------------


def per_sample_grads(m, weights=None):
    torch, nn, F = m.torch, m.nn, m.F
    functional_call, vmap, grad = torch.func.functional_call, torch.func.vmap, torch.func.grad

    class SimpleCNN(nn.Module):
        def __init__(self):
            super(SimpleCNN, self).__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, 1)
            self.conv2 = nn.Conv2d(4, 6, 3, 1)
            self.fc1 = nn.Linear(6 * 3 * 3, 16)
            self.fc2 = nn.Linear(16, 10)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = torch.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    if weights is None:
        return SimpleCNN()

    def loss_fn(predictions, targets):
        return F.nll_loss(predictions, targets)

    batch_size = 6
    rng = np.random.default_rng(0)
    data = torch.tensor(rng.standard_normal((batch_size, 1, 10, 10)), dtype=torch.float32)
    targets = torch.tensor(rng.integers(0, 10, (batch_size,)))
    model = load(m, SimpleCNN(), weights)
    predictions = model(data)
    loss = loss_fn(predictions, targets)
    loss.backward()

    def compute_grad(sample, target):
        sample = sample.unsqueeze(0)
        target = target.unsqueeze(0)
        prediction = model(sample)
        loss = loss_fn(prediction, target)
        return torch.autograd.grad(loss, list(model.parameters()))

    def compute_sample_grads(data, targets):
        sample_grads = [compute_grad(data[i], targets[i]) for i in range(batch_size)]
        sample_grads = zip(*sample_grads)
        sample_grads = [torch.stack(shards) for shards in sample_grads]
        return sample_grads

    per_sample_grads = compute_sample_grads(data, targets)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def compute_loss(params, buffers, sample, target):
        batch = sample.unsqueeze(0)
        targets = target.unsqueeze(0)
        predictions = functional_call(model, (params, buffers), (batch,))
        loss = loss_fn(predictions, targets)
        return loss

    ft_compute_grad = grad(compute_loss)
    ft_compute_sample_grad = vmap(ft_compute_grad, in_dims=(None, None, 0, 0))
    ft_per_sample_grads = ft_compute_sample_grad(params, buffers, data, targets)
    for per_sample_grad, ft_per_sample_grad in zip(per_sample_grads, ft_per_sample_grads.values()):
        assert torch.allclose(per_sample_grad, ft_per_sample_grad, atol=3e-3, rtol=1e-5)

    def compute_grad_fp64(sample, target):
        sample_fp64 = sample.to(torch.float64)
        target_fp64 = target
        model_fp64 = SimpleCNN()
        with torch.no_grad():
            for param_fp32, param_fp64 in zip(model.parameters(), model_fp64.parameters()):
                param_fp64.copy_(param_fp32.to(torch.float64))
        sample_fp64 = sample_fp64.unsqueeze(0)
        target_fp64 = target_fp64.unsqueeze(0)
        prediction = model_fp64(sample_fp64)
        loss = loss_fn(prediction, target_fp64)
        return torch.autograd.grad(loss, list(model_fp64.parameters()))

    try:
        compute_grad_fp64(data[0], targets[0])
        baseline = "no error"
    except Exception as e:
        baseline = type(e).__name__
    return {"manual": per_sample_grads, "vmapped": dict(ft_per_sample_grads), "batch": [p.grad for p in model.parameters()],
            "baseline": baseline, "names": list(ft_per_sample_grads)}


def test_per_sample_grads_tutorial():
    ours, _ = run_both(per_sample_grads, weights_of(lambda m: per_sample_grads(m)), rtol=1e-4, atol=1e-6)
    assert ours["baseline"] == "RuntimeError"  # the tutorial's float64 baseline copies into a float32 model
    for manual, name, batch in zip(ours["manual"], ours["names"], ours["batch"]):
        np.testing.assert_allclose(manual, ours["vmapped"][name], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(manual.mean(0), batch, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Model ensembling (intermediate_source/ensembling.py), as written: its base model on the meta device
# ----------------------------------------------------------------------------------------------


def ensembling(m, all_weights):
    torch, nn, F = m.torch, m.nn, m.F
    stack_module_state, functional_call, vmap = (torch.func.stack_module_state, torch.func.functional_call,
                                                 torch.func.vmap)

    class SimpleMLP(nn.Module):
        def __init__(self):
            super(SimpleMLP, self).__init__()
            self.fc1 = nn.Linear(16, 12)
            self.fc2 = nn.Linear(12, 8)
            self.fc3 = nn.Linear(8, 4)

        def forward(self, x):
            x = x.flatten(1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.fc2(x)
            x = F.relu(x)
            x = self.fc3(x)
            return x

    num_models = len(all_weights)
    rng = np.random.default_rng(0)
    data = torch.tensor(rng.standard_normal((num_models * 2, 1, 4, 4)), dtype=torch.float32)
    minibatches = data.reshape(num_models, 2, 1, 4, 4)
    models = [load(m, SimpleMLP(), w) for w in all_weights]
    predictions_diff_minibatch_loop = [model(minibatch) for model, minibatch in zip(models, minibatches)]
    minibatch = data
    predictions2 = [model(minibatch) for model in models]
    params, buffers = stack_module_state(models)
    import copy
    base_model = copy.deepcopy(models[0])
    base_model = base_model.to('meta')

    def fmodel(params, buffers, x):
        return functional_call(base_model, (params, buffers), (x,))

    predictions1_vmap = vmap(fmodel)(params, buffers, minibatches)
    assert torch.allclose(predictions1_vmap, torch.stack(predictions_diff_minibatch_loop), atol=1e-3, rtol=1e-5)
    predictions2_vmap = vmap(fmodel, in_dims=(0, 0, None))(params, buffers, minibatch)
    assert torch.allclose(predictions2_vmap, torch.stack(predictions2), atol=1e-3, rtol=1e-5)
    return predictions1_vmap, predictions2_vmap


def test_model_ensembling_tutorial_with_a_meta_base_model():
    run_both(ensembling, [ensembling_weights(s) for s in range(3)], rtol=1e-5, atol=1e-6)


def ensembling_weights(seed):
    OURS.torch.manual_seed(seed)
    nn = OURS.nn

    class SimpleMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(16, 12)
            self.fc2 = nn.Linear(12, 8)
            self.fc3 = nn.Linear(8, 4)

    return {k: v.numpy().copy() for k, v in SimpleMLP().state_dict().items()}
