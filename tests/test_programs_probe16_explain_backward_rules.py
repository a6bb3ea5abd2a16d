# ruff: noqa: E501, F841  (the programs are kept as their authors wrote them)
"""Model interpretability as PyTorch users and Captum's sources write it, run as tests/probe16_explain_common.py
says. Modified backward passes: guided backprop / deconvnet three ways, full-backward-hook corners (unused outputs,
shared modules, no input needing a gradient, lists returned, a pre-hook blocking a branch), Captum's DeepLift
(model-level hooks doubling the batch, tensor hooks on cloned inputs, the max-pooling rule by ``max_unpool2d``),
DeepLIFT as an ``autograd.Function``; LRP: epsilon and gamma rules by the detach trick against NumPy, as an
``autograd.Function``, and explicitly by ``conv_transpose2d`` / ``max_unpool2d``."""

import numpy as np

from .probe16_explain_common import cnn, images, mlp, tabular
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Guided backpropagation and deconvnet, three ways
# ----------------------------------------------------------------------------------------------


def guided(m, weights):
    import copy

    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, cnn(m), weights).double().eval()
    X = torch.from_numpy(images(2, seed=3))
    out = {}

    # Captum's ModifiedReluGradientAttribution: full backward hooks on every ReLU module, registered by apply
    def attribute(model, x, target, use_relu_grad_output):
        handles = []

        def _backward_hook(module, grad_input, grad_output):
            to_override_grads = grad_output if use_relu_grad_output else grad_input
            if isinstance(to_override_grads, tuple):
                return tuple(F.relu(to_override_grad) for to_override_grad in to_override_grads)
            return F.relu(to_override_grads)

        def _register_hooks(module):
            if isinstance(module, nn.ReLU):  # Captum spells it torch.nn.ReLU (see test_torch_dot_nn_spelling)
                handles.append(module.register_full_backward_hook(_backward_hook))

        model.apply(_register_hooks)
        try:
            x = x.clone().requires_grad_()
            grads = torch.autograd.grad(torch.unbind(model(x)[:, target]), x)[0]
        finally:
            for h in handles:
                h.remove()
        return grads

    out["guided_hooks"] = attribute(model, X, 2, use_relu_grad_output=False)
    out["deconv_hooks"] = attribute(model, X, 2, use_relu_grad_output=True)

    # an autograd.Function swapped in for each ReLU module
    class GuidedBackpropReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input_img):
            positive_mask = (input_img > 0).type_as(input_img)
            output = torch.addcmul(torch.zeros(input_img.size()).type_as(input_img), input_img, positive_mask)
            ctx.save_for_backward(input_img, output)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            input_img, output = ctx.saved_tensors
            positive_mask_1 = (input_img > 0).type_as(grad_output)
            positive_mask_2 = (grad_output > 0).type_as(grad_output)
            grad_input = torch.addcmul(torch.zeros(input_img.size()).type_as(input_img),
                                       torch.addcmul(torch.zeros(input_img.size()).type_as(input_img), grad_output, positive_mask_1),
                                       positive_mask_2)
            return grad_input

    class GuidedBackpropReLUasModule(nn.Module):
        def forward(self, input_img):
            return GuidedBackpropReLU.apply(input_img)

    def recursive_relu_apply(module_top):
        for idx, module in module_top._modules.items():
            recursive_relu_apply(module)
            if module.__class__.__name__ == "ReLU":
                module_top._modules[idx] = GuidedBackpropReLUasModule()

    guided_model = copy.deepcopy(model)
    recursive_relu_apply(guided_model)
    x = X.clone().requires_grad_(True)
    output = guided_model(x)
    one_hot = torch.zeros((1, output.size()[-1]), dtype=torch.float64)
    one_hot[0][2] = 1
    (one_hot * output).sum().backward()
    out["guided_function"] = x.grad
    out["relus_left"] = sum(isinstance(mod, nn.ReLU) for mod in guided_model.modules())

    # tensor hooks: F.relu's output hooked inside a rewritten forward (setattr of a new module)
    class HookedReLU(nn.Module):
        def forward(self, x):
            y = F.relu(x)
            if y.requires_grad:
                y.register_hook(lambda g: g.clamp(min=0))
            return y

    tensor_model = copy.deepcopy(model)
    for name, child in tensor_model.named_children():
        if isinstance(child, nn.ReLU):
            setattr(tensor_model, name, HookedReLU())
    x = X.clone().requires_grad_(True)
    tensor_model(x)[:, 2].sum().backward()
    out["guided_tensor_hooks"] = x.grad
    return out


def test_guided_backprop_and_deconvnet_three_ways():
    ours, _ = run_both(guided, weights_of(cnn), rtol=1e-9, atol=1e-12)
    assert ours["relus_left"] == 0
    # a hook on the ReLU's output clamps the gradient before the ReLU masks it: guided backprop again
    np.testing.assert_allclose(ours["guided_function"], ours["guided_hooks"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours["guided_tensor_hooks"], ours["guided_hooks"], rtol=1e-12, atol=1e-15)
    assert not np.allclose(ours["deconv_hooks"], ours["guided_hooks"])


# ----------------------------------------------------------------------------------------------
# DeepLIFT's rescale rule as an autograd.Function over the input and its reference; DeepLiftShap
# ----------------------------------------------------------------------------------------------


def deeplift_function(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    net = load(m, mlp(m), weights).double().eval()

    class RescaleReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, x_ref):
            y, y_ref = x.clamp(min=0), x_ref.clamp(min=0)
            ctx.save_for_backward(x, x_ref, y, y_ref)
            return y, y_ref

        @staticmethod
        def backward(ctx, grad_y, grad_y_ref):
            x, x_ref, y, y_ref = ctx.saved_tensors
            delta_x = x - x_ref
            multiplier = torch.where(delta_x.abs() > 1e-10, (y - y_ref) / delta_x, (x > 0).to(x.dtype))
            return grad_y * multiplier, grad_y_ref * 0

    def forward_pair(x, x_ref):
        h, h_ref = x, x_ref
        for layer in net:
            if isinstance(layer, nn.ReLU):
                h, h_ref = RescaleReLU.apply(h, h_ref)
            else:
                h, h_ref = layer(h), layer(h_ref)
        return h, h_ref

    X = torch.from_numpy(tabular(4))
    target = torch.tensor([2, 0, 1, 2])

    def deeplift(x, ref):
        x = x.clone().requires_grad_()
        out, out_ref = forward_pair(x, ref)
        sel = out.gather(1, target[:, None]).sum()
        (g,) = torch.autograd.grad(sel, x)
        attr = (x - ref) * g
        delta = attr.detach().sum(1) - (out - out_ref).gather(1, target[:, None]).squeeze(1).detach()
        return attr.detach(), delta

    attr, delta = deeplift(X, torch.zeros_like(X))
    # DeepLiftShap: the mean over a distribution of baselines, each expanded against every input
    rng = np.random.default_rng(5)
    baselines = torch.from_numpy(rng.standard_normal((5, 6)) * 0.3)
    per_base = [deeplift(X, b.expand_as(X)) for b in baselines]
    shap = torch.stack([a for a, _ in per_base]).mean(0)
    shap_delta = shap.sum(1) - (net(X).gather(1, target[:, None]).squeeze(1) - net(baselines)[:, target].mean(0)).detach()
    return {"attr": attr, "delta": delta, "shap": shap, "shap_delta": shap_delta.detach()}


def test_deeplift_rescale_function_and_deepliftshap():
    ours, _ = run_both(deeplift_function, weights_of(mlp, seed=2), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["delta"], 0, atol=1e-12)  # summation to delta, exactly
    np.testing.assert_allclose(ours["shap_delta"], 0, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# LRP by hand: the epsilon rule on Linear layers and the gamma rule on convolutions, through the
# (z * (R / z).detach()).sum().backward() trick, against NumPy
# ----------------------------------------------------------------------------------------------


def lrp_rules(m, weights, conv_weights, eps=1e-2, gamma=0.25):
    torch, nn, F = m.torch, m.nn, m.F
    net = load(m, mlp(m), weights).double().eval()
    X = torch.from_numpy(tabular(4, seed=3))
    linears = [l for l in net if isinstance(l, nn.Linear)]

    # forward, keeping every layer's input
    acts = [X]
    for layer in net:
        acts.append(layer(acts[-1]))
    logits = acts[-1]
    R = (logits * F.one_hot(logits.argmax(1), 3).to(logits.dtype)).detach()
    relevances = [R]
    for layer, a in zip(reversed(list(net)), reversed(acts[:-1])):
        if isinstance(layer, nn.ReLU):
            relevances.append(R)
            continue
        a = a.detach().requires_grad_(True)
        z = layer(a)
        z = z + eps * torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))
        s = (R / z).detach()
        (z * s).sum().backward()
        R = (a * a.grad).detach()
        relevances.append(R)

    # an explicit rule by autograd.grad and a second formulation: a Function whose backward is the rule
    class EpsilonLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, weight, bias):
            z = F.linear(a, weight, bias)
            ctx.save_for_backward(a, weight, z)
            return z

        @staticmethod
        def backward(ctx, relevance):
            a, weight, z = ctx.saved_tensors
            stabilised = z + eps * torch.sign(z) + eps * (z == 0).to(z.dtype)
            return a * ((relevance / stabilised) @ weight), None, None

    a0 = X.clone().requires_grad_(True)
    h = a0
    for layer in net:
        h = EpsilonLinear.apply(h, layer.weight, layer.bias) if isinstance(layer, nn.Linear) else layer(h)
    (R_function,) = torch.autograd.grad(h, a0, grad_outputs=relevances[0])

    # the gamma rule on a conv layer: rho(w) = w + gamma * w.clamp(min=0), as a copy's weights
    conv = load(m, nn.Conv2d(3, 5, 3, padding=1), conv_weights).double()
    Xi = torch.from_numpy(images(1, seed=5))
    a = Xi.clone().requires_grad_(True)
    out = F.relu(conv(a))
    R_out = out.detach()
    rho_w = conv.weight + gamma * conv.weight.clamp(min=0)
    rho_b = conv.bias + gamma * conv.bias.clamp(min=0)
    z = F.conv2d(a, rho_w, rho_b, padding=1) + 1e-9
    (z * (R_out / z).detach()).sum().backward()
    R_conv = (a * a.grad).detach()
    return {"relevances": relevances, "R_function": R_function, "R_conv": R_conv, "R_out": R_out,
            "bias_relevance": R_conv.sum() - R_out.sum(), "conv_weight_grad": conv.weight.grad}


def lrp_by_numpy(weights, eps=1e-2):
    X = tabular(4, seed=3)
    Ws = [weights[f"{i}.weight"] for i in (0, 2, 4)]
    bs = [weights[f"{i}.bias"] for i in (0, 2, 4)]
    acts = [X]
    for i, (W, b) in enumerate(zip(Ws, bs)):
        z = acts[-1] @ W.T.astype(np.float64) + b
        acts.append(np.maximum(z, 0) if i < 2 else z)
    R = acts[-1] * np.eye(3)[acts[-1].argmax(1)]
    for W, b, a in zip(Ws[::-1], bs[::-1], acts[-2::-1]):
        z = a @ W.T.astype(np.float64) + b
        z = z + eps * np.where(z >= 0, 1.0, -1.0)
        R = a * ((R / z) @ W.astype(np.float64))
    return R


def test_lrp_epsilon_and_gamma_rules():
    weights = weights_of(mlp, seed=3)
    ours, _ = run_both(lrp_rules, weights, weights_of(lambda m: m.nn.Conv2d(3, 5, 3, padding=1), seed=4), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["relevances"][-1], lrp_by_numpy(weights), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(ours["R_function"], ours["relevances"][-1], rtol=1e-10, atol=1e-13)
    # relevance is conserved up to what the biases and epsilon absorb
    assert abs(ours["relevances"][-1].sum() - ours["relevances"][0].sum()) < 0.5 * abs(ours["relevances"][0].sum()) + 1


# ----------------------------------------------------------------------------------------------
# What a full backward hook shows in the corners attribution code meets: a module of two inputs (one
# constant) and two outputs (one unused), a module called twice, a first layer whose input needs no
# gradient (PyTorch warns), a whole Sequential
# ----------------------------------------------------------------------------------------------


def full_backward_hook_corners(m):
    torch, nn, F = m.torch, m.nn, m.F
    import warnings

    log = []

    def record(mod, grad_input, grad_output):
        log.append(([None if g is None else g.clone() for g in grad_input],
                    [None if g is None else g.clone() for g in grad_output]))

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x, gate, scale=2.0):
            return self.lin(x) * gate * scale, gate.exp()

    torch.manual_seed(0)
    gated = Gated().double()
    gated.register_full_backward_hook(record)
    x = torch.linspace(-1, 1, 6, dtype=torch.float64).view(2, 3)
    gate = torch.full((2, 3), 0.5, dtype=torch.float64, requires_grad=True)
    main, unused = gated(x, gate, scale=3.0)
    main.pow(2).sum().backward()

    shared = nn.Linear(2, 2).double()
    shared.register_full_backward_hook(record)
    z = torch.tensor([[1.0, -1.0], [0.5, 2.0]], dtype=torch.float64, requires_grad=True)
    torch.tanh(shared(torch.tanh(shared(z)))).sum().backward()

    first = nn.Linear(2, 2).double()
    first.register_full_backward_hook(record)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first(torch.ones(1, 2, dtype=torch.float64)).sum().backward()
    warned = [str(w.message).split(".")[0] for w in caught]

    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).double()
    seq.register_full_backward_hook(record)
    seq(z).sum().backward()

    # guided backprop written with list comprehensions, and a branch blocked by a pre-hook returning None
    guided = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    for mod in guided:
        if isinstance(mod, nn.ReLU):
            mod.register_full_backward_hook(lambda mod, grad_in, grad_out: [g.clamp(min=0) for g in grad_in])
    zg = z.detach().requires_grad_(True)
    guided(zg).sum().backward()
    blocked = nn.Linear(2, 2).double()
    blocked.register_full_backward_pre_hook(lambda mod, grad_output: (None,))
    zb = z.detach().requires_grad_(True)
    (blocked(zb).sum() + (zb ** 2).sum()).backward()
    return {"log": log, "warned": warned, "z_grad": z.grad, "gate_grad": gate.grad, "guided": zg.grad, "blocked": zb.grad,
            "grads": [p.grad for p in list(gated.parameters()) + list(shared.parameters()) + list(seq.parameters())]}


def test_full_backward_hook_corners():
    ours, _ = run_both(full_backward_hook_corners, rtol=1e-12, atol=1e-14)
    assert ours["warned"] == ["Full backward hook is firing when gradients are computed with respect to module "
                              "outputs since no inputs require gradients"]
    log = ours["log"]
    # x needs no gradient: zeros, as PyTorch shows them when another input needs one; the unused output: None
    assert np.all(log[0][0][0] == 0) and log[0][1][1] is None
    assert log[3][0] == [None]  # the first layer's
    assert len(log) == 5


# ----------------------------------------------------------------------------------------------
# LRP written explicitly, as Montavon's tutorial's first version: the z+ rule's backward through
# F.conv_transpose2d, max pooling's relevance routed by F.max_unpool2d (winner takes all) and average
# pooling by the gradient, against the autograd trick
# ----------------------------------------------------------------------------------------------


def lrp_explicit(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    conv1 = load(m, nn.Conv2d(3, 4, 3, padding=1), {k[2:]: v for k, v in weights.items() if k.startswith("0.")}).double()
    conv2 = load(m, nn.Conv2d(4, 5, 3, padding=1), {k[2:]: v for k, v in weights.items() if k.startswith("1.")}).double()
    X = torch.from_numpy(images(2, seed=7))

    a1 = F.relu(conv1(X))
    p1, idx = F.max_pool2d(a1, 2, return_indices=True)
    a2 = F.relu(conv2(p1))
    R2 = a2.detach()

    # z+ rule through conv2, explicitly and by the trick
    wp = conv2.weight.clamp(min=0)
    z = F.conv2d(p1, wp, padding=1) + 1e-9
    s = R2 / z
    c = F.conv_transpose2d(s, wp, padding=1)
    R_p1 = (p1 * c).detach()
    p1g = p1.detach().requires_grad_(True)
    zg = F.conv2d(p1g, wp.detach(), padding=1) + 1e-9
    (zg * (R2 / zg).detach()).sum().backward()
    R_p1_trick = (p1g * p1g.grad).detach()

    # max pooling: the relevance goes to each window's winner
    R_a1 = F.max_unpool2d(R_p1, idx, 2, output_size=a1.shape[-2:])
    a1g = a1.detach().requires_grad_(True)
    pooled = F.max_pool2d(a1g, 2)
    (pooled * (R_p1 / (pooled + 1e-12)).detach()).sum().backward()
    R_a1_trick = (a1g * a1g.grad).detach()

    # average pooling's rule by the gradient, and by hand through repeat_interleave
    zavg = F.avg_pool2d(a1g.detach().requires_grad_(True), 2)
    leaf = zavg.grad_fn is not None
    a1h = a1.detach().requires_grad_(True)
    zavg = F.avg_pool2d(a1h, 2) + 1e-9
    (zavg * (R_p1 / zavg).detach()).sum().backward()
    R_avg = (a1h * a1h.grad).detach()
    by_hand = a1.detach() * (R_p1 / zavg.detach()).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3) / 4
    return {"R_p1": R_p1, "R_p1_trick": R_p1_trick, "R_a1": R_a1, "R_a1_trick": R_a1_trick, "R_avg": R_avg,
            "avg_by_hand": by_hand, "leaf": leaf, "sums": torch.stack([R2.sum(), R_p1.sum(), R_a1.sum(), R_avg.sum()])}


def test_lrp_explicit_conv_transpose_and_max_unpool():
    weights = {"0." + k: v for k, v in weights_of(lambda m: m.nn.Conv2d(3, 4, 3, padding=1), seed=8).items()}
    weights.update({"1." + k: v for k, v in weights_of(lambda m: m.nn.Conv2d(4, 5, 3, padding=1), seed=9).items()})
    ours, _ = run_both(lrp_explicit, weights, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["R_p1"], ours["R_p1_trick"], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(ours["R_a1"], ours["R_a1_trick"], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["R_avg"], ours["avg_by_hand"], rtol=1e-10, atol=1e-13)
    sums = ours["sums"]
    np.testing.assert_allclose(sums[2], sums[1], rtol=1e-10)  # pooling conserves relevance


# ----------------------------------------------------------------------------------------------
# Captum's DeepLift as its sources write it: the model's forward pre-hook joins inputs and baselines into one
# batch and its forward hook keeps the first half of the output; each non-linearity keeps module.input /
# module.output by hooks and gets Captum's _register_backward_hook (a tensor hook on the input, which the
# pre-hook then replaces by a clone, and one on the output); the rescale rule for ReLU / Sigmoid / Tanh and
# the max-pooling rule through F.max_unpool2d with a four-dimensional output_size
# ----------------------------------------------------------------------------------------------


def deeplift_cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(5, 6, 3, padding=1),
                         nn.Tanh(), nn.Flatten(), nn.Linear(6 * 4 * 4, 8), nn.Sigmoid(), nn.Linear(8, 3))


def captum_deeplift(m, weights, eps=1e-10):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, deeplift_cnn(m), weights).double().eval()
    X = torch.from_numpy(images(3, seed=17))
    baselines = torch.full_like(X, 0.5)
    target = torch.tensor([0, 2, 1])

    def _register_backward_hook(module, hook):
        grad_out = {}

        def forward_hook(module, inp, out):
            nonlocal grad_out
            grad_out = {}

            def output_tensor_hook(output_grad):
                grad_out[output_grad.device] = output_grad

            if isinstance(out, tuple):
                assert len(out) == 1, "Backward hooks not supported for module with >1 output"
                out[0].register_hook(output_tensor_hook)
            else:
                out.register_hook(output_tensor_hook)

        def pre_hook(module, inp):
            def input_tensor_hook(input_grad):
                if len(grad_out) == 0:
                    return None
                hook_out = hook(module, input_grad, grad_out[input_grad.device])
                if hook_out is not None:
                    return hook_out[0] if isinstance(hook_out, tuple) else hook_out
                return None

            if isinstance(inp, tuple):
                assert len(inp) == 1, "Backward hooks not supported for module with >1 input"
                inp[0].register_hook(input_tensor_hook)
                return inp[0].clone()
            else:
                inp.register_hook(input_tensor_hook)
                return inp.clone()

        return [module.register_forward_pre_hook(pre_hook), module.register_forward_hook(forward_hook)]

    def _compute_diffs(inputs, outputs):
        input, input_ref = inputs.chunk(2)
        output, output_ref = outputs.chunk(2)
        delta_in = input - input_ref
        delta_out = output - output_ref
        return torch.cat(2 * [delta_in]), torch.cat(2 * [delta_out])

    def nonlinear(module, inputs, outputs, grad_input, grad_output, eps=1e-10):
        delta_in, delta_out = _compute_diffs(inputs, outputs)
        new_grad_inp = torch.where(abs(delta_in) < eps, grad_input, grad_output * delta_out / delta_in)
        return new_grad_inp

    def maxpool2d(module, inputs, outputs, grad_input, grad_output, eps=1e-10):
        with torch.no_grad():
            input, input_ref = inputs.chunk(2)
            output, output_ref = outputs.chunk(2)
            delta_in = input - input_ref
            delta_in = torch.cat(2 * [delta_in])
            _, indices = F.max_pool2d(module.input, module.kernel_size, module.stride, module.padding, module.dilation,
                                      module.ceil_mode, True)
            unpool_grad_out_delta, unpool_grad_out_ref_delta = torch.chunk(
                F.max_unpool2d(grad_output * torch.cat(2 * [output - output_ref]), indices, module.kernel_size,
                               module.stride, module.padding, list(module.input.shape)), 2)
        unpool_grad_out_delta = unpool_grad_out_delta + unpool_grad_out_ref_delta
        unpool_grad_out_delta = torch.cat(2 * [unpool_grad_out_delta])
        new_grad_inp = torch.where(abs(delta_in) < eps, grad_input, unpool_grad_out_delta / delta_in)
        return new_grad_inp

    SUPPORTED_NON_LINEAR = {nn.ReLU: nonlinear, nn.Sigmoid: nonlinear, nn.Tanh: nonlinear, nn.MaxPool2d: maxpool2d}

    def _forward_pre_hook(module, inputs):
        module.input = inputs[0].clone().detach()

    def _forward_hook(module, inputs, outputs):
        module.output = outputs.clone().detach()

    def _backward_hook(module, grad_input, grad_output):
        if not (hasattr(module, "input") and hasattr(module, "output")):
            raise RuntimeError(f"A Module {module} was detected that does not contain some of the input/output attributes "
                               "that are required for DeepLift computations.")
        multipliers = SUPPORTED_NON_LINEAR[type(module)](module, module.input, module.output, grad_input, grad_output, eps=eps)
        del module.input
        del module.output
        return multipliers

    forward_handles, backward_handles = [], []

    def _register_hooks(module):
        if type(module) not in SUPPORTED_NON_LINEAR:
            return
        forward_handles.append(module.register_forward_pre_hook(_forward_pre_hook))
        forward_handles.append(module.register_forward_hook(_forward_hook))
        backward_handles.extend(_register_backward_hook(module, _backward_hook))

    def pre_hook(module, baseline_inputs_add_args):
        inputs, baselines = baseline_inputs_add_args
        return (torch.cat([inputs, baselines]),)

    def forward_hook(module, inputs, outputs):
        return outputs[: outputs.shape[0] // 2]

    model.apply(_register_hooks)
    forward_handles.append(model.register_forward_pre_hook(pre_hook))
    forward_handles.append(model.register_forward_hook(forward_hook))
    inputs = X.clone().requires_grad_()
    try:
        with torch.autograd.set_grad_enabled(True):
            outputs = model(inputs, baselines)  # the pre-hook turns the two arguments into one batch
            selected = torch.gather(outputs, 1, target.reshape(len(outputs), 1))
            gradients = torch.autograd.grad(torch.unbind(selected), inputs)[0]
    finally:
        for handle in forward_handles + backward_handles:
            handle.remove()
    attributions = (inputs - baselines) * gradients
    with torch.no_grad():
        delta = attributions.sum((1, 2, 3)) - (model(X) - model(baselines)).gather(1, target[:, None]).squeeze(1)
    leftover = [hasattr(mod, "input") or hasattr(mod, "output") for mod in model.modules()]
    return {"attributions": attributions.detach(), "delta": delta, "leftover": any(leftover),
            "hooks": sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in model.modules())}


def test_captum_deeplift_with_max_pooling():
    ours, _ = run_both(captum_deeplift, weights_of(deeplift_cnn), rtol=1e-9, atol=1e-12)
    # summation to delta, up to the max-pooling rule (which spreads the input's and reference's winners alike)
    assert np.abs(ours["delta"]).max() < 5e-3
    assert not ours["leftover"] and ours["hooks"] == 0
