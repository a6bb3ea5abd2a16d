# ruff: noqa: B007, B008, B023, E501, E731, E741, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Model interpretability as PyTorch users and Captum's sources write it (see tests/pytorch_programs.py), each
program run on chainrule and on PyTorch from the same weights and data in float64, comparing attributions,
values and gradients, and checked by hand (completeness, conservation, agreement between formulations).

Saliency (``x.grad.abs().amax(dim=1)``, all classes at once by ``autograd.grad(is_grads_batched=True)``);
integrated gradients as Captum writes them (``torch.cat`` of scaled inputs, Riemann left/right/middle/trapezoid
step sizes as a float32 ``torch.tensor`` beside float64 gradients, Gauss-Legendre nodes from NumPy,
``torch.autograd.grad(torch.unbind(outputs), inputs)``, two inputs at once); NoiseTunnel's SmoothGrad,
SmoothGrad-squared and VarGrad (``repeat_interleave``, ``torch.normal(0, stdevs)`` after ``manual_seed``);
Grad-CAM++, XGrad-CAM and Layer-CAM as pytorch-grad-cam gathers them (a forward hook registering a tensor hook,
``retain_grad``, ``register_full_backward_hook``); guided backpropagation and deconvnet three ways (Captum's
full backward hooks on ReLU modules returning ``F.relu(grad)``, an ``autograd.Function`` swapped in by
``setattr``, tensor hooks); DeepLIFT's rescale rule as an ``autograd.Function`` over input and reference, and
DeepLiftShap; occlusion by ``F.unfold`` windows, feature ablation over a feature mask, Shapley value sampling,
KernelSHAP by weighted ``linalg.lstsq`` and LIME by ridge ``linalg.solve``; LRP's epsilon and gamma rules by
the ``(z * (R / z).detach()).sum().backward()`` trick against NumPy by hand; attention rollout and Chefer's
gradient-weighted rollout in a small ViT (attention caught by hooks on its ``attn_drop``, ``attn.register_hook``)
and through ``nn.MultiheadAttention(need_weights=True, average_attn_weights=False)``; TCAV (a linear probe on
hooked activations, directional derivatives); TracIn / gradient-dot-product influence with ``torch.func``'s
``functional_call``, ``grad`` and ``vmap`` against a loop; and hook-handle semantics (handles as context
managers, removal twice, ``prepend``, ``with_kwargs``, ``always_call``, pre-hooks that replace inputs,
``register_full_backward_pre_hook``)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, assert_same, load, run_both, weights_of


def cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(8, 10, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(10, 4))


def mlp(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


def images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, (n, 3, 8, 8))


def tabular(n=5, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 6))


# ----------------------------------------------------------------------------------------------
# Saliency and integrated gradients (Captum's approximation methods)
# ----------------------------------------------------------------------------------------------


def riemann_builders(torch, method):
    def step_sizes(n):
        deltas = [1 / n] * n
        if method == "riemann_trapezoid":
            deltas[0] /= 2
            deltas[-1] /= 2
        return deltas

    def alphas(n):
        if method == "riemann_trapezoid":
            return torch.linspace(0, 1, n).tolist()
        elif method == "riemann_left":
            return torch.linspace(0, 1 - 1 / n, n).tolist()
        elif method == "riemann_middle":
            return torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n).tolist()
        elif method == "riemann_right":
            return torch.linspace(1 / n, 1, n).tolist()

    return step_sizes, alphas


def gauss_legendre_builders():
    def step_sizes(n):
        return list(0.5 * np.polynomial.legendre.leggauss(n)[1])

    def alphas(n):
        return list(0.5 * (1 + np.polynomial.legendre.leggauss(n)[0]))

    return step_sizes, alphas


def saliency_and_ig(m, weights, mlp_weights):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, cnn(m), weights).double().eval()
    X = torch.from_numpy(images())
    out = {}

    # vanilla saliency, the tutorial way: one logit of one image, backward, the channel maximum of |grad|
    x = X[:1].clone()
    x.requires_grad_()
    scores = model(x)
    score_max_index = scores.argmax()
    score_max = scores[0, score_max_index]
    score_max.backward()
    saliency, _ = torch.max(x.grad.data.abs(), dim=1)
    out["saliency"] = (saliency, x.grad.abs().amax(dim=1), score_max_index)

    # every class's saliency at once: batched grad_outputs
    xb = X.clone().requires_grad_(True)
    logits = model(xb)
    eye = torch.eye(4, dtype=logits.dtype).unsqueeze(1).expand(4, len(xb), 4)
    (all_grads,) = torch.autograd.grad(logits, xb, grad_outputs=eye, retain_graph=True, is_grads_batched=True)
    per_class = []
    for c in range(4):
        per_class.append(torch.autograd.grad(logits[:, c].sum(), xb, retain_graph=True)[0])
    out["all_classes"] = (all_grads, torch.stack(per_class))

    # integrated gradients, as Captum's IntegratedGradients._attribute writes them
    def compute_gradients(forward_fn, inputs, target_ind):
        with torch.autograd.set_grad_enabled(True):
            output = forward_fn(*inputs)
            if isinstance(target_ind, int):
                outputs = output[:, target_ind]
            else:
                outputs = torch.gather(output, 1, target_ind.reshape(len(output), 1))
            assert outputs[0].numel() == 1, "Target not provided when necessary, cannot take gradient with respect to multiple outputs."
            grads = torch.autograd.grad(torch.unbind(outputs), inputs)
        return grads

    def _reshape_and_sum(tensor_input, num_steps, num_examples, layer_size):
        return torch.sum(tensor_input.reshape((num_steps, num_examples) + layer_size), dim=0)

    def integrated_gradients(forward_fn, inputs, baselines, target, n_steps=50, method="gausslegendre"):
        if method == "gausslegendre":
            step_sizes_func, alphas_func = gauss_legendre_builders()
        else:
            step_sizes_func, alphas_func = riemann_builders(torch, method)
        step_sizes, alphas = step_sizes_func(n_steps), alphas_func(n_steps)
        scaled_features_tpl = tuple(
            torch.cat([baseline + alpha * (input - baseline) for alpha in alphas], dim=0).requires_grad_()
            for input, baseline in zip(inputs, baselines)
        )
        if isinstance(target, int):
            expanded_target = target
        else:
            expanded_target = target.repeat(n_steps)
        grads = compute_gradients(forward_fn, scaled_features_tpl, expanded_target)
        scaled_grads = [
            grad.contiguous().view(n_steps, -1) * torch.tensor(step_sizes).view(n_steps, 1).to(grad.device)
            for grad in grads
        ]
        total_grads = tuple(
            _reshape_and_sum(scaled_grad, n_steps, grad.shape[0] // n_steps, grad.shape[1:])
            for (scaled_grad, grad) in zip(scaled_grads, grads)
        )
        attributions = tuple(total_grad * (input - baseline) for total_grad, input, baseline in zip(total_grads, inputs, baselines))
        return attributions

    def convergence_delta(forward_fn, attributions, inputs, baselines, target):
        with torch.no_grad():
            start = torch.gather(forward_fn(*baselines), 1, target.view(-1, 1)).squeeze(1)
            end = torch.gather(forward_fn(*inputs), 1, target.view(-1, 1)).squeeze(1)
        row_sums = sum(a.reshape(a.shape[0], -1).sum(1) for a in attributions)
        return row_sums - (end - start)

    target = torch.tensor([0, 3, 1])
    baselines = (torch.zeros_like(X),)
    for method in ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_middle", "riemann_right"):
        (attr,) = integrated_gradients(model, (X,), baselines, target, n_steps=24, method=method)
        out["ig_" + method] = (attr, convergence_delta(model, (attr,), (X,), baselines, target))
    (attr_int,) = integrated_gradients(model, (X,), baselines, 2, n_steps=8)
    out["ig_int_target"] = attr_int

    # two inputs at once: an MLP over the concatenation of two feature groups
    net = load(m, mlp(m), mlp_weights).double().eval()
    forward_two = lambda a, b: net(torch.cat([a, b], dim=1))
    T = torch.from_numpy(tabular())
    a, b = T[:, :4], T[:, 4:]
    two = integrated_gradients(forward_two, (a, b), (torch.full_like(a, 0.1), torch.zeros_like(b)), torch.tensor([0, 1, 2, 0, 1]), n_steps=64)
    out["ig_two"] = (two, convergence_delta(forward_two, two, (a, b), (torch.full_like(a, 0.1), torch.zeros_like(b)), torch.tensor([0, 1, 2, 0, 1])))
    return out


def test_saliency_and_integrated_gradients():
    ours, theirs = run_both(saliency_and_ig, weights_of(cnn), weights_of(mlp, seed=1), rtol=1e-9, atol=1e-11)
    sal, sal2, _ = ours["saliency"]
    np.testing.assert_array_equal(sal, sal2)
    batched, looped = ours["all_classes"]
    np.testing.assert_allclose(batched, looped, rtol=1e-12, atol=1e-15)
    # completeness: Gauss-Legendre converges fastest; the piecewise-linear ReLU net makes every rule close
    assert np.abs(ours["ig_gausslegendre"][1]).max() < 2e-3
    assert np.abs(ours["ig_riemann_trapezoid"][1]).max() < 2e-2
    assert np.abs(ours["ig_two"][1]).max() < 1e-3


# ----------------------------------------------------------------------------------------------
# NoiseTunnel: SmoothGrad, SmoothGrad-squared and VarGrad over seeded noise
# ----------------------------------------------------------------------------------------------


def noise_tunnel(m, weights, nt_samples=6, stdevs=0.2):
    torch = m.torch
    model = load(m, cnn(m), weights).double().eval()
    X = torch.from_numpy(images(2))
    torch.manual_seed(7)

    def add_noise_to_inputs(input, stdev, nt_samples):
        bsz = input.shape[0]
        input_expanded_size = (bsz * nt_samples,) + tuple(input.shape[1:])
        stdev_expanded = torch.tensor(stdev, device=input.device).repeat(input_expanded_size)
        noise = torch.normal(0, stdev_expanded)
        return input.repeat_interleave(nt_samples, dim=0) + noise, noise

    def saliency(inputs, target):
        inputs = inputs.detach().requires_grad_(True)
        out = model(inputs)
        grads = torch.autograd.grad(torch.unbind(out[:, target]), inputs)[0]
        return grads

    noisy, noise = add_noise_to_inputs(X, stdevs, nt_samples)
    grads = saliency(noisy, 1)
    grads_sq = grads * grads
    expected = grads.view((X.shape[0], -1) + tuple(grads.shape[1:])).sum(dim=1) / nt_samples
    expected_sq = grads_sq.view((X.shape[0], -1) + tuple(grads.shape[1:])).sum(dim=1) / nt_samples
    vargrad = expected_sq - expected * expected
    # the same, by an explicit loop over samples and torch.var(unbiased=False)
    looped = torch.stack([saliency(noisy[i::nt_samples], 1) for i in range(nt_samples)])
    return {"noise": noise, "smoothgrad": expected, "smoothgrad_sq": expected_sq, "vargrad": vargrad,
            "var_by_var": looped.var(dim=0, unbiased=False), "dtype": str(noise.dtype).split(".")[-1]}


def test_noise_tunnel_smoothgrad_vargrad():
    # float32 normals differ from PyTorch's vectorised Box-Muller by a few ulps (autograd/mersenne.py)
    ours, _ = run_both(noise_tunnel, weights_of(cnn), rtol=1e-5, atol=1e-7)
    assert ours["dtype"] == "float32"  # the noise is float32 (torch.tensor of a float); the sum promotes
    assert np.all(ours["vargrad"] > -1e-12)


# ----------------------------------------------------------------------------------------------
# Grad-CAM++, XGrad-CAM and Layer-CAM, as pytorch-grad-cam gathers activations and gradients
# ----------------------------------------------------------------------------------------------


def cams(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, cnn(m), weights).double().eval()
    X = torch.from_numpy(images(3, seed=2))

    class ActivationsAndGradients:
        def __init__(self, model, target_layers):
            self.model = model
            self.gradients = []
            self.activations = []
            self.handles = []
            for target_layer in target_layers:
                self.handles.append(target_layer.register_forward_hook(self.save_activation))
                self.handles.append(target_layer.register_forward_hook(self.save_gradient))

        def save_activation(self, module, input, output):
            self.activations.append(output.cpu().detach())

        def save_gradient(self, module, input, output):
            if not hasattr(output, "requires_grad") or not output.requires_grad:
                return

            def _store_grad(grad):
                self.gradients = [grad.cpu().detach()] + self.gradients

            output.register_hook(_store_grad)

        def __call__(self, x):
            self.gradients = []
            self.activations = []
            return self.model(x)

        def release(self):
            for handle in self.handles:
                handle.remove()

    target_layer = model[5]
    ag = ActivationsAndGradients(model, [target_layer])
    outputs = ag(X)
    targets = outputs.argmax(dim=1)
    model.zero_grad()
    loss = sum(outputs[i, t] for i, t in enumerate(targets))
    loss.backward(retain_graph=True)
    activations, grads = ag.activations[0], ag.gradients[0]
    ag.release()

    def scale_cam(cam, size):
        cam = cam - cam.amin(dim=(1, 2), keepdim=True)
        cam = cam / (1e-7 + cam.amax(dim=(1, 2), keepdim=True))
        return F.interpolate(cam.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)

    # Grad-CAM
    weights_gc = grads.mean(dim=(2, 3))
    gradcam = F.relu((weights_gc[:, :, None, None] * activations).sum(1))
    # Grad-CAM++
    grads_power_2 = grads ** 2
    grads_power_3 = grads_power_2 * grads
    sum_activations = torch.sum(activations, dim=(2, 3))
    eps = 0.000001
    aij = grads_power_2 / (2 * grads_power_2 + sum_activations[:, :, None, None] * grads_power_3 + eps)
    aij = torch.where(grads != 0, aij, torch.zeros_like(aij))
    weights_pp = torch.clamp(grads, min=0) * aij
    weights_pp = torch.sum(weights_pp, dim=(2, 3))
    gradcampp = F.relu((weights_pp[:, :, None, None] * activations).sum(1))
    # XGrad-CAM
    sum_act = activations.sum(dim=(2, 3))
    weights_x = (grads * activations / (sum_act[:, :, None, None] + 1e-7)).sum(dim=(2, 3))
    xgradcam = F.relu((weights_x[:, :, None, None] * activations).sum(1))
    # Layer-CAM
    layercam = F.relu((F.relu(grads) * activations).sum(1))

    # the same gradient by retain_grad on the layer's output, and by a full backward hook on the layer
    caught = {}
    h = target_layer.register_full_backward_hook(lambda mod, gin, gout: caught.__setitem__("gout", gout[0]))

    def keep_output(mod, inp, o):
        o.retain_grad()
        caught["out"] = o

    h2 = target_layer.register_forward_hook(keep_output)
    model.zero_grad()
    outputs2 = model(X)
    outputs2.gather(1, targets[:, None]).sum().backward()
    h.remove()
    h2.remove()
    return {"targets": targets, "acts": activations, "grads": grads, "gradcam": scale_cam(gradcam, (8, 8)),
            "gradcampp": scale_cam(gradcampp, (8, 8)), "xgradcam": scale_cam(xgradcam, (8, 8)),
            "layercam": scale_cam(layercam, (8, 8)), "retained": caught["out"].grad, "hooked": caught["gout"],
            "param_grad": model[5].weight.grad, "hooks_left": len(target_layer._forward_hooks) + len(target_layer._backward_hooks)}


def test_grad_cam_plus_plus_xgrad_layer_cam():
    ours, _ = run_both(cams, weights_of(cnn), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(ours["retained"], ours["grads"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours["hooked"], ours["grads"], rtol=1e-12, atol=1e-15)
    assert ours["hooks_left"] == 0


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
