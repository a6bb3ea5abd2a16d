# ruff: noqa: B007, B008, B023, E501, E731, E741, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Model interpretability as PyTorch users and Captum's sources write it (see tests/pytorch_programs.py), each
program run on chainrule and on PyTorch from the same weights and data (float64 unless said), comparing
attributions, values and gradients, and checked by hand (completeness, conservation, agreement between
formulations, NumPy).

Gradients: saliency (all classes at once by ``is_grads_batched``), Captum's integrated gradients (Riemann and
Gauss-Legendre rules, ``torch.unbind`` outputs, two inputs), NoiseTunnel (SmoothGrad, VarGrad), integrated
Hessians (double backward, ``torch.func.hessian`` under vmap, jacrev/jacfwd), LSTM saliency through packing,
layer IG on an embedding (a hook replacing its output; Captum's InterpretableEmbedding swap), forward-mode
directional derivatives through a hook returning a dual tensor.
CAMs and hooks: Grad-CAM++, XGrad-CAM, Layer-CAM, Score-CAM, LayerGradCam, a torchvision-style ResNet's
Grad-CAM and guided Grad-CAM in float32 (in-place ReLU, ``out += identity``), guided backprop / deconvnet three
ways, Captum's DeepLift (model-level hooks doubling the batch, tensor hooks on cloned inputs, the max-pooling
rule by ``max_unpool2d``), DeepLIFT as an ``autograd.Function``, full-backward-hook corners (unused outputs,
shared modules, no input needing a gradient, lists returned, a pre-hook blocking a branch), hook handles
(context managers, prepend, with_kwargs, always_call, pre-hooks replacing inputs).
Perturbations and metrics: occlusion by ``F.unfold``/``F.fold``, feature ablation, Shapley sampling, KernelSHAP
(``linalg.lstsq``), LIME, deletion/insertion curves (stable argsort, ``torch.quantile``), RISE, a meaningful-
perturbation mask, Captum's sensitivity_max / infidelity / FeaturePermutation / KernelShap sampler.
LRP: epsilon and gamma rules by the detach trick against NumPy, as an ``autograd.Function``, and explicitly by
``conv_transpose2d`` / ``max_unpool2d``.
Transformers: ViT attention rollout and gradient rollout (hooks on attn_drop), MultiheadAttention weights, a
tiny GPT's logit lens, activation and attribution patching, direct logit attribution and steering, attention
maps out of TransformerEncoder by a patched ``self_attn.forward``, a sparse autoencoder on hooked activations.
Concepts, data and models: TCAV, CKA / SVCCA / RSA / a ridge probe, TracIn, EK-FAC and TRAK influence, DiCE and
Wachter counterfactuals, ProtoPNet, a neural additive model, TabNet's sparsemax, GNNExplainer, lucent's
Fourier-parameterised feature visualisation, training with explanations (Right for the Right Reasons, GAIN, an
expected-gradients prior) and learnt explainers (L2X with ``gumbel_softmax``, a RelaxedBernoulli mask)."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of


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


# ----------------------------------------------------------------------------------------------
# Perturbation methods: occlusion by F.unfold windows, feature ablation over a feature mask, Shapley value
# sampling, KernelSHAP by weighted least squares, LIME by ridge regression
# ----------------------------------------------------------------------------------------------


def perturbations(m, weights, mlp_weights):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, cnn(m), weights).double().eval()
    X = torch.from_numpy(images(2, seed=4))
    out = {}

    # occlusion: every 3x3 window (stride 1) of every channel at once, through F.unfold / F.fold
    @torch.no_grad()
    def occlusion(x, target, k=3, stride=1, fill=0.0):
        n, c, H, W = x.shape
        cols = F.unfold(x, kernel_size=k, stride=stride)  # (n, c*k*k, L)
        L = cols.shape[-1]
        ones = F.unfold(torch.ones_like(x[:1]), kernel_size=k, stride=stride)
        eye = torch.eye(L, dtype=x.dtype)
        masks = F.fold(ones.unsqueeze(0).mul(eye.view(L, 1, 1, L)).squeeze(1), (H, W), kernel_size=k, stride=stride)
        masks = masks.clamp(max=1)  # (L, c, H, W)
        occluded = torch.where(masks.bool().unsqueeze(0), torch.full_like(x[:, None], fill), x[:, None])
        base = model(x)[:, target]
        scores = model(occluded.flatten(0, 1)).view(n, L, -1)[..., target]
        diff = (base[:, None] - scores)
        counts = F.fold(ones, (H, W), kernel_size=k, stride=stride)
        attribution = torch.einsum("nl,lchw->nchw", diff, masks) / counts
        return attribution, diff, cols.shape

    out["occlusion"] = occlusion(X, 1)

    # feature ablation with a feature mask of 2x2 superpixels shared across channels
    superpixels = torch.arange(16).view(4, 4).repeat_interleave(2, 0).repeat_interleave(2, 1)
    feature_mask = superpixels.expand(1, 3, 8, 8)

    @torch.no_grad()
    def feature_ablation(x, target, mask, baseline=0.5):
        base = model(x)[:, target]
        total = torch.zeros_like(x)
        for fid in range(int(mask.max()) + 1):
            current = (mask == fid).to(x.dtype)
            ablated = x * (1 - current) + baseline * current
            total += (base - model(ablated)[:, target]).view(-1, 1, 1, 1) * current
        return total

    out["ablation"] = feature_ablation(X, 3, feature_mask)

    # Shapley value sampling over 6 tabular features: permutations drawn by NumPy
    net = load(m, mlp(m), mlp_weights).double().eval()
    T = torch.from_numpy(tabular(3))
    rng = np.random.default_rng(11)
    perms = [rng.permutation(6) for _ in range(20)]

    @torch.no_grad()
    def shapley_sampling(x, target, baseline):
        attr = torch.zeros_like(x)
        for perm in perms:
            current = baseline.clone().expand_as(x).clone()
            prev = net(current)[:, target]
            for j in perm.tolist():
                current[:, j] = x[:, j]
                now = net(current)[:, target]
                attr[:, j] += now - prev
                prev = now
        return attr / len(perms)

    baseline = torch.zeros(1, 6, dtype=torch.float64)
    shap = shapley_sampling(T, 0, baseline)
    with torch.no_grad():
        shap_gap = shap.sum(1) - (net(T)[:, 0] - net(baseline)[:, 0])
    out["shapley"] = (shap, shap_gap)

    # KernelSHAP and LIME on the first example: binary coalitions, the Shapley kernel / an exponential kernel
    coalitions = torch.from_numpy(np.random.default_rng(12).integers(0, 2, (64, 6)).astype(np.float64))
    coalitions = torch.cat([coalitions, torch.zeros(1, 6, dtype=torch.float64), torch.ones(1, 6, dtype=torch.float64)])
    with torch.no_grad():
        preds = net(coalitions * T[:1] + (1 - coalitions) * baseline)[:, 0]
    M = 6
    k = coalitions.sum(1)
    shap_kernel = torch.where((k == 0) | (k == M), torch.full_like(k, 1e6),
                              (M - 1) / (torch.tensor([math.comb(M, int(v)) for v in k.tolist()], dtype=torch.float64) * k * (M - k)))
    design = torch.cat([torch.ones(len(coalitions), 1, dtype=torch.float64), coalitions], dim=1)
    sw = shap_kernel.sqrt().unsqueeze(1)
    kernel_shap = torch.linalg.lstsq(design * sw, preds.unsqueeze(1) * sw).solution.squeeze(1)
    distances = 1 - F.cosine_similarity(coalitions, torch.ones(1, 6, dtype=torch.float64), dim=1)
    lime_w = torch.exp(-(distances ** 2) / 0.75 ** 2)
    W = torch.diag(lime_w)
    ridge = design.T @ W @ design + 1.0 * torch.eye(M + 1, dtype=torch.float64)
    lime = torch.linalg.solve(ridge, design.T @ W @ preds)
    out["kernel_shap"] = kernel_shap
    out["lime"] = lime
    return out


def test_occlusion_ablation_shapley_kernelshap_lime():
    ours, _ = run_both(perturbations, weights_of(cnn), weights_of(mlp, seed=1), rtol=1e-8, atol=1e-10)
    attribution, diff, cols_shape = ours["occlusion"]
    assert tuple(cols_shape) == (2, 27, 36) and diff.shape == (2, 36)
    shap, gap = ours["shapley"]
    np.testing.assert_allclose(gap, 0, atol=1e-12)  # every permutation telescopes to f(x) - f(baseline)


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
# Attention rollout (Abnar and Zuidema) and gradient-weighted rollout (Chefer et al.) in a small ViT whose
# attention is caught by hooks on its attn_drop (as vit-explain does with timm models), and through
# nn.MultiheadAttention's own weights
# ----------------------------------------------------------------------------------------------


def tiny_vit(m, dim=16, depth=2, heads=4, patch=4, classes=3):
    torch, nn = m.torch, m.nn

    class Attention(nn.Module):
        def __init__(self, dim, num_heads):
            super().__init__()
            self.num_heads = num_heads
            self.scale = (dim // num_heads) ** -0.5
            self.qkv = nn.Linear(dim, dim * 3)
            self.attn_drop = nn.Dropout(0.0)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x = (attn @ v).transpose(1, 2).reshape(B, N, C)
            return self.proj(x)

    class Block(nn.Module):
        def __init__(self, dim, num_heads):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim)
            self.attn = Attention(dim, num_heads)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.randn(1, 1 + (8 // patch) ** 2, dim) * 0.02)
            self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, classes)

        def forward(self, x):
            x = self.patch_embed(x).flatten(2).transpose(1, 2)
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.norm(x)[:, 0])

    return ViT()


def attention_rollout(m, weights, discard_ratio=0.25):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, tiny_vit(m), weights).double().eval()
    X = torch.from_numpy(images(2, seed=6))

    attentions, attention_gradients = [], []

    def get_attention(module, input, output):
        attentions.append(output.cpu())

    def get_attention_gradient(module, grad_input, grad_output):
        attention_gradients.append(grad_input[0].cpu())

    handles = []
    for name, module in model.named_modules():
        if "attn_drop" in name:
            handles.append(module.register_forward_hook(get_attention))
            handles.append(module.register_full_backward_hook(get_attention_gradient))

    def rollout(attentions, discard_ratio, head_fusion):
        result = torch.eye(attentions[0].size(-1), dtype=attentions[0].dtype)
        with torch.no_grad():
            for attention in attentions:
                if head_fusion == "mean":
                    attention_heads_fused = attention.mean(axis=1)
                elif head_fusion == "max":
                    attention_heads_fused = attention.max(axis=1)[0]
                elif head_fusion == "min":
                    attention_heads_fused = attention.min(axis=1)[0]
                # drop the lowest attentions, but not the class token's
                flat = attention_heads_fused.view(attention_heads_fused.size(0), -1)
                _, indices = flat.topk(int(flat.size(-1) * discard_ratio), -1, False)
                indices = indices[indices != 0]
                flat[0, indices] = 0
                I = torch.eye(attention_heads_fused.size(-1), dtype=flat.dtype)
                a = (attention_heads_fused + 1.0 * I) / 2
                a = a / a.sum(dim=-1, keepdim=True)
                result = torch.matmul(a, result)
        mask = result[0, 0, 1:]
        width = int(mask.size(-1) ** 0.5)
        mask = mask.reshape(width, width)
        return mask / mask.max()

    with torch.no_grad():
        logits = model(X[:1])
    out = {"logits": logits}
    for fusion in ("mean", "max", "min"):
        out["rollout_" + fusion] = rollout([a.clone() for a in attentions], discard_ratio, fusion)

    # gradient-weighted rollout: the class score's gradient through each attention map
    attentions.clear()
    model.zero_grad()
    x = X[:1].clone().requires_grad_(True)
    output = model(x)
    category_mask = torch.zeros(output.size(), dtype=output.dtype)
    category_mask[:, 1] = 1
    loss = (output * category_mask).sum()
    loss.backward()
    result = torch.eye(attentions[0].size(-1), dtype=torch.float64)
    with torch.no_grad():
        for attention, grad in zip(attentions, attention_gradients[::-1]):  # the hooks fire last layer first
            weights_ = grad
            attention_heads_fused = (attention * weights_).mean(axis=1)
            attention_heads_fused[attention_heads_fused < 0] = 0
            I = torch.eye(attention_heads_fused.size(-1), dtype=torch.float64)
            a = (attention_heads_fused + 1.0 * I) / 2
            a = a / a.sum(dim=-1, keepdim=True)
            result = torch.matmul(a, result)
    out["grad_rollout"] = result[0, 0, 1:]
    out["attn_grads"] = attention_gradients
    # the same gradients by tensor hooks on the attention maps (Chefer's attn.register_hook(save_attn_gradients))
    tensor_grads = []
    for h in handles:
        h.remove()

    def save_attn_gradients(mod, i, o):
        o.register_hook(tensor_grads.append)

    handles = [mod.register_forward_hook(save_attn_gradients) for name, mod in model.named_modules() if name.endswith("attn_drop")]
    model(X[:1])[0, 1].backward()
    for h in handles:
        h.remove()
    out["tensor_grads"] = tensor_grads
    out["input_grad"] = x.grad
    return out


def mha_rollout(m, weights):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).double()
    mha.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    x = torch.from_numpy(np.random.default_rng(7).standard_normal((2, 5, 8))).requires_grad_()
    out, weights_per_head = mha(x, x, x, need_weights=True, average_attn_weights=False)
    _, weights_mean = mha(x, x, x, need_weights=True)
    weights_per_head.retain_grad()
    (out.sum() + (weights_per_head * torch.arange(5.0, dtype=torch.float64)).sum()).backward()
    rows = weights_per_head.sum(-1)
    result = torch.eye(5, dtype=torch.float64).expand(2, 5, 5)
    for _ in range(2):
        a = 0.5 * weights_mean.detach() + 0.5 * torch.eye(5, dtype=torch.float64)
        result = a @ result
    return {"per_head": weights_per_head, "mean": weights_mean, "rows": rows, "rollout": result,
            "weights_grad": weights_per_head.grad, "x_grad": x.grad, "in_proj_grad": mha.in_proj_weight.grad}


def test_attention_rollout_in_a_small_vit():
    autograd_weights = weights_of(tiny_vit)
    ours, _ = run_both(attention_rollout, autograd_weights, rtol=1e-8, atol=1e-11)
    for grad_hook, tensor_hook in zip(ours["attn_grads"], ours["tensor_grads"]):
        np.testing.assert_allclose(grad_hook, tensor_hook, rtol=1e-12, atol=1e-15)
    assert ours["rollout_mean"].shape == (2, 2)


def test_multihead_attention_weights_and_rollout():
    weights = weights_of(lambda m: m.nn.MultiheadAttention(8, 2, batch_first=True), seed=5)
    ours, _ = run_both(mha_rollout, weights, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["rows"], 1, rtol=1e-12)
    np.testing.assert_allclose(ours["per_head"].mean(1), ours["mean"], rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# TCAV: concept activation vectors from a linear probe on hooked activations, directional derivatives
# ----------------------------------------------------------------------------------------------


def tcav(m, weights, epochs=40):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, cnn(m), weights).double().eval()
    rng = np.random.default_rng(8)
    # a "striped" concept against random images
    stripes = np.zeros((12, 3, 8, 8))
    stripes[:, :, ::2, :] = 1.0
    concept = torch.from_numpy(stripes * rng.uniform(0.5, 1.0, (12, 1, 1, 1)) + 0.1 * rng.standard_normal((12, 3, 8, 8)))
    random_imgs = torch.from_numpy(rng.uniform(0, 1, (12, 3, 8, 8)))
    layer = model[3]
    store = {}

    def hook(module, inp, out):
        store["act"] = out

    handle = layer.register_forward_hook(hook)
    with torch.no_grad():
        model(concept)
        concept_acts = store["act"].flatten(1)
        model(random_imgs)
        random_acts = store["act"].flatten(1)
    acts = torch.cat([concept_acts, random_acts])
    labels = torch.cat([torch.ones(12), torch.zeros(12)]).double()
    mean, std = acts.mean(0), acts.std(0) + 1e-8
    probe = nn.Linear(acts.shape[1], 1).double()
    with torch.no_grad():
        probe.weight.zero_()
        probe.bias.zero_()
    opt = optim.SGD(probe.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    losses = []
    for _ in range(epochs):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(probe((acts - mean) / std).squeeze(1), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    cav = probe.weight.detach().squeeze(0) / std
    cav = cav / cav.norm()
    accuracy = ((probe((acts - mean) / std).squeeze(1) > 0).double() == labels).double().mean()

    # directional derivatives of each class logit along the CAV, at the hooked layer's output
    test_imgs = torch.from_numpy(images(6, seed=9))
    out = model(test_imgs)
    act = store["act"]
    scores = []
    for c in range(4):
        (g,) = torch.autograd.grad(out[:, c].sum(), act, retain_graph=True)
        dd = g.flatten(1) @ cav
        scores.append((dd > 0).double().mean())
    handle.remove()
    return {"losses": losses, "cav": cav, "accuracy": accuracy, "tcav_scores": torch.stack(scores),
            "hooks_left": len(layer._forward_hooks)}


def test_tcav_concept_vectors_and_scores():
    ours, _ = run_both(tcav, weights_of(cnn), rtol=1e-7, atol=1e-9)
    assert ours["accuracy"] == 1.0 and ours["hooks_left"] == 0
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# TracIn / gradient-dot-product influence: per-example gradients by torch.func against a loop
# ----------------------------------------------------------------------------------------------


def tracin(m, weights, steps=3, lr=0.1):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_func = m.torch.func
    functional_call, grad, vmap = from_func.functional_call, from_func.grad, from_func.vmap
    model = load(m, mlp(m), weights).double()
    rng = np.random.default_rng(10)
    Xtr = torch.from_numpy(rng.standard_normal((10, 6)))
    ytr = torch.from_numpy(rng.integers(0, 3, 10))
    Xte = torch.from_numpy(rng.standard_normal((4, 6)))
    yte = torch.from_numpy(rng.integers(0, 3, 4))

    def loss_fn(params, buffers, x, y):
        logits = functional_call(model, (params, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    per_example = vmap(grad(loss_fn), in_dims=(None, None, 0, 0))

    def flat_grads(X, Y):
        params = {k: v.detach() for k, v in model.named_parameters()}
        buffers = {k: v.detach() for k, v in model.named_buffers()}
        g = per_example(params, buffers, X, Y)
        return torch.cat([v.reshape(len(X), -1) for v in g.values()], dim=1)

    def flat_grads_loop(X, Y):
        rows = []
        for x, y in zip(X, Y):
            model.zero_grad()
            F.cross_entropy(model(x[None]), y[None]).backward()
            rows.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        return torch.stack(rows)

    opt = optim.SGD(model.parameters(), lr=lr)
    influence = torch.zeros(4, 10, dtype=torch.float64)
    self_influence = torch.zeros(10, dtype=torch.float64)
    loops = []
    for step in range(steps):
        gtr, gte = flat_grads(Xtr, ytr), flat_grads(Xte, yte)
        loops.append((flat_grads_loop(Xtr, ytr), gtr))
        influence += lr * gte @ gtr.T
        self_influence += lr * (gtr * gtr).sum(1)
        cos = F.cosine_similarity(gte.unsqueeze(1), gtr.unsqueeze(0), dim=-1)
        opt.zero_grad()
        F.cross_entropy(model(Xtr), ytr).backward()
        opt.step()
    top = influence.topk(3, dim=1)
    return {"influence": influence, "self_influence": self_influence, "cos": cos, "loops": loops,
            "top_values": top.values, "top_indices": top.indices}


def test_tracin_per_example_gradients_by_vmap():
    ours, _ = run_both(tracin, weights_of(mlp, seed=6), rtol=1e-9, atol=1e-12)
    for loop, vmapped in ours["loops"]:
        np.testing.assert_allclose(vmapped, loop, rtol=1e-11, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# Hook handles as attribution libraries use them
# ----------------------------------------------------------------------------------------------


def hook_handles(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, mlp(m), weights).double()
    x = torch.from_numpy(tabular(3, seed=4))
    calls = []
    out = {}

    # a handle as a context manager removes its hook on exit; removing twice is harmless
    with model[0].register_forward_hook(lambda mod, i, o: calls.append("ctx")) as handle:
        model(x)
    model(x)
    handle.remove()
    handle.remove()
    out["ctx_calls"] = list(calls)

    # prepend: the hook registered last runs first
    calls.clear()
    h1 = model[2].register_forward_hook(lambda mod, i, o: calls.append("first"))
    h2 = model[2].register_forward_hook(lambda mod, i, o: calls.append("prepended"), prepend=True)
    model(x)
    h1.remove()
    h2.remove()
    out["order"] = list(calls)

    # Captum's layer-input attribution: a forward pre-hook that replaces the layer's input by a tensor
    # requiring grad, whose gradient is the attribution
    replacement = {}

    def pre_hook(module, inputs):
        replacement["x"] = inputs[0].detach().clone().requires_grad_(True)
        return (replacement["x"],)

    h = model[2].register_forward_pre_hook(pre_hook)
    y = model(x)
    h.remove()
    (layer_in_grad,) = torch.autograd.grad(y[:, 0].sum(), replacement["x"])
    out["layer_in_grad"] = layer_in_grad

    # with_kwargs: the hook sees keyword arguments and may return new args and kwargs
    class Scaled(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, scale=1.0):
            return self.inner(x) * scale

    wrapped = Scaled(model)
    seen = []

    def kw_pre_hook(module, args, kwargs):
        seen.append(sorted(kwargs))
        return args, {**kwargs, "scale": 2.0}

    def kw_hook(module, args, kwargs, output):
        seen.append(kwargs["scale"])
        return output + 1

    ha = wrapped.register_forward_pre_hook(kw_pre_hook, with_kwargs=True)
    hb = wrapped.register_forward_hook(kw_hook, with_kwargs=True)
    out["kw_out"] = wrapped(x, scale=0.5)
    ha.remove()
    hb.remove()
    out["kw_seen"] = seen
    out["plain_out"] = wrapped(x, scale=0.5)

    # always_call: the hook runs even when forward raises
    class Fails(nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    fails = Fails()
    ran = []
    fails.register_forward_hook(lambda mod, i, o: ran.append("always"), always_call=True)
    fails.register_forward_hook(lambda mod, i, o: ran.append("normal"))
    try:
        fails(x)
    except ValueError:
        pass
    out["always"] = ran

    # a full backward pre-hook that scales grad_output, and a full backward hook that sees the result
    model.zero_grad()
    seen_grads = {}

    def bw_pre(module, grad_output):
        return (grad_output[0] * 3,)

    def bw(module, grad_input, grad_output):
        seen_grads["gout"] = grad_output[0]
        seen_grads["gin"] = grad_input[0]

    hp = model[4].register_full_backward_pre_hook(bw_pre)
    hq = model[4].register_full_backward_hook(bw)
    xr = x.clone().requires_grad_(True)
    model(xr).sum().backward()
    hp.remove()
    hq.remove()
    out["scaled_grads"] = (xr.grad, seen_grads["gout"], seen_grads["gin"], model[4].weight.grad)

    # a tensor hook removed before backward does not fire; one removed inside another hook still fires once
    fired = []
    t = x.clone().requires_grad_(True)
    y = (t * 2).sum()
    ht = t.register_hook(lambda g: fired.append("removed"))
    ht.remove()
    holder = {}

    def first(g):
        fired.append("first")
        holder["second"].remove()

    t.register_hook(first)
    holder["second"] = t.register_hook(lambda g: fired.append("second"))
    y.backward()
    out["fired"] = fired
    out["hook_dicts"] = (len(model[0]._forward_hooks), len(model[2]._forward_pre_hooks),
                         len(model[4]._backward_hooks), len(model[4]._backward_pre_hooks))
    return out


def test_hook_handles_as_attribution_libraries_use_them():
    ours, _ = run_both(hook_handles, weights_of(mlp, seed=7), rtol=1e-12, atol=1e-14)
    assert ours["ctx_calls"] == ["ctx"]
    assert ours["order"] == ["prepended", "first"]
    assert ours["kw_seen"] == [["scale"], 2.0]
    assert ours["hook_dicts"] == (0, 0, 0, 0)


# ----------------------------------------------------------------------------------------------
# Feature visualisation as lucent writes it: an image parameterised by its Fourier spectrum
# (view_as_complex, irfftn with norm="ortho"), decorrelated colours, jitter / pad / scale transforms,
# a channel objective read by a forward hook, Adam on the spectrum (float32)
# ----------------------------------------------------------------------------------------------


def rfft2d_freqs(h, w):
    fy = np.fft.fftfreq(h)[:, None]
    if w % 2 == 1:
        fx = np.fft.fftfreq(w)[: w // 2 + 2]
    else:
        fx = np.fft.fftfreq(w)[: w // 2 + 1]
    return np.sqrt(fx * fx + fy * fy)


def feature_visualisation(m, weights, steps=6, dtype="float32"):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    dtype = getattr(torch, dtype)  # (float64: the same program where no rounding hides a difference)
    model = load(m, cnn(m), weights).eval().to(dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    batch, channels, h, w = 1, 3, 8, 8
    freqs = rfft2d_freqs(h, w)
    init_val_size = (batch, channels) + freqs.shape + (2,)
    torch.manual_seed(0)
    spectrum_real_imag_t = (torch.randn(*init_val_size, dtype=torch.float64) * 0.01).to(dtype).requires_grad_(True)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** 1
    scale = torch.tensor(scale).to(dtype)[None, None, ..., None]

    def inner():
        scaled_spectrum_t = scale * spectrum_real_imag_t
        if type(scaled_spectrum_t) is not torch.complex64:  # (always true: a Tensor is no dtype)
            scaled_spectrum_t = torch.view_as_complex(scaled_spectrum_t)
        image = torch.fft.irfftn(scaled_spectrum_t, s=(h, w), norm="ortho")
        image = image[:batch, :channels, :h, :w]
        magic = 4.0
        image = image / magic
        return image

    color_correlation_svd_sqrt = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]]).astype("float32")
    max_norm_svd_sqrt = np.max(np.linalg.norm(color_correlation_svd_sqrt, axis=0))
    color_correlation_normalized = color_correlation_svd_sqrt / max_norm_svd_sqrt

    def _linear_decorrelate_color(tensor):
        t_permute = tensor.permute(0, 2, 3, 1)
        t_permute = torch.matmul(t_permute, torch.tensor(color_correlation_normalized.T).to(dtype))
        return t_permute.permute(0, 3, 1, 2)

    def image_f():
        return torch.sigmoid(_linear_decorrelate_color(inner()))

    offsets = [(1, 0), (0, 2), (2, 1), (1, 1), (0, 0), (2, 2)]
    scales = [1.0, 1.1, 0.9, 1.0, 1.1, 0.9]

    def transform(image, i):
        image = F.pad(image, (2, 2, 2, 2), mode="constant", value=0.5)
        dx, dy = offsets[i]
        image = image[:, :, dx:dx + 10, dy:dy + 10]
        image = F.interpolate(image, scale_factor=scales[i], mode="bilinear", align_corners=True)
        return image

    features = {}
    handle = model[2].register_forward_hook(lambda mod, i, o: features.__setitem__("conv", o))

    def objective():
        return -features["conv"][:, 5].mean()

    optimizer = optim.Adam([spectrum_real_imag_t], lr=5e-2)
    losses = []
    for i in range(steps):
        optimizer.zero_grad()
        model(transform(image_f(), i))
        loss = objective()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    handle.remove()
    return {"losses": losses, "image": image_f().detach(), "spectrum": spectrum_real_imag_t.detach()}


def test_lucent_feature_visualisation():
    ours, _ = run_both(feature_visualisation, weights_of(cnn), dtype="float64", rtol=1e-9, atol=1e-12)
    assert ours["losses"][-1] < ours["losses"][0]
    # float32: Adam divides by the root of tiny second moments, which magnifies the rounding of small gradients
    ours, _ = run_both(feature_visualisation, weights_of(cnn), rtol=5e-3, atol=1e-4)
    assert ours["image"].dtype == np.float32 and ours["image"].shape == (1, 3, 8, 8)


# ----------------------------------------------------------------------------------------------
# Text attributions: layer integrated gradients on an embedding (a forward hook replacing its output,
# Captum's LayerIntegratedGradients) against Captum's older InterpretableEmbedding (the embedding module
# swapped for one that passes precomputed embeddings through)
# ----------------------------------------------------------------------------------------------


def text_model(m):
    torch, nn = m.torch, m.nn

    class TextClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(20, 8, padding_idx=0)
            self.conv = nn.Conv1d(8, 6, 3, padding=1)
            self.fc = nn.Linear(6, 2)

        def forward(self, text):
            embedded = self.embedding(text).permute(0, 2, 1)
            conved = torch.relu(self.conv(embedded))
            pooled = torch.max(conved, dim=2).values
            return self.fc(pooled)

    return TextClassifier()


def text_attributions(m, weights, n_steps=32):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, text_model(m), weights).double().eval()
    tokens = torch.tensor([[3, 7, 11, 2, 5, 0, 0], [9, 1, 4, 4, 13, 17, 6]])
    ref_tokens = torch.zeros_like(tokens)
    target = torch.tensor([1, 0])

    with torch.no_grad():
        inp_emb = model.embedding(tokens)
        ref_emb = model.embedding(ref_tokens)
    alphas = torch.linspace(0, 1, n_steps, dtype=torch.float64)
    scaled = torch.cat([ref_emb + a * (inp_emb - ref_emb) for a in alphas.tolist()]).requires_grad_()

    def layer_forward_hook(module, hook_inputs, hook_outputs=None):
        return scaled

    hook = model.embedding.register_forward_hook(layer_forward_hook)
    try:
        out = model(tokens.repeat(n_steps, 1))
    finally:
        hook.remove()
    sel = out.gather(1, target.repeat(n_steps).unsqueeze(1)).sum()
    (grads,) = torch.autograd.grad(sel, scaled)
    step_sizes = torch.full((n_steps,), 1.0 / (n_steps - 1), dtype=torch.float64)
    step_sizes[0] /= 2
    step_sizes[-1] /= 2
    total = (grads.view(n_steps, *inp_emb.shape) * step_sizes.view(-1, 1, 1, 1)).sum(0)
    attributions = (inp_emb - ref_emb) * total
    per_token = attributions.sum(dim=2)
    per_token = per_token / torch.norm(per_token, dim=1, keepdim=True)

    # InterpretableEmbedding: the embedding swapped out, embeddings fed in directly
    class InterpretableEmbeddingBase(nn.Module):
        def __init__(self, embedding, full_name):
            super().__init__()
            self.num_embeddings = getattr(embedding, "num_embeddings", None)
            self.embedding_dim = getattr(embedding, "embedding_dim", None)
            self.embedding = embedding
            self.full_name = full_name

        def forward(self, *inputs, **kwargs):
            return inputs[0]

        def indices_to_embeddings(self, *input, **kwargs):
            return self.embedding(*input, **kwargs)

    def _get_deep_layer_name(obj, layer_names):
        for layer_name in layer_names.split("."):
            obj = getattr(obj, layer_name)
        return obj

    def _set_deep_layer_value(obj, layer_names, value):
        layer_names = layer_names.split(".")
        for layer_name in layer_names[:-1]:
            obj = getattr(obj, layer_name)
        setattr(obj, layer_names[-1], value)

    embedding_layer = _get_deep_layer_name(model, "embedding")
    interpretable_emb = InterpretableEmbeddingBase(embedding_layer, "embedding")
    _set_deep_layer_value(model, "embedding", interpretable_emb)
    emb = interpretable_emb.indices_to_embeddings(tokens)
    x = torch.cat([ref_emb + a * (emb - ref_emb) for a in alphas.tolist()]).detach().requires_grad_()
    out2 = model(x)
    (grads2,) = torch.autograd.grad(out2.gather(1, target.repeat(n_steps).unsqueeze(1)).sum(), x)
    total2 = (grads2.view(n_steps, *emb.shape) * step_sizes.view(-1, 1, 1, 1)).sum(0)
    _set_deep_layer_value(model, "embedding", interpretable_emb.embedding)
    with torch.no_grad():
        delta = attributions.sum((1, 2)) - (model(tokens) - model(ref_tokens)).gather(1, target[:, None]).squeeze(1)
    return {"attributions": attributions, "per_token": per_token, "swap": (emb - ref_emb) * total2, "delta": delta,
            "embedding_is_back": type(model.embedding).__name__}


def test_layer_integrated_gradients_on_an_embedding():
    ours, _ = run_both(text_attributions, weights_of(text_model), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["swap"], ours["attributions"], rtol=1e-12, atol=1e-14)
    assert ours["embedding_is_back"] == "Embedding"
    assert np.abs(ours["delta"]).max() < 0.05


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
# Mechanistic interpretability in a tiny GPT, as TransformerLens users write it with plain hooks: a cache
# of the residual stream, the logit lens, activation patching (a forward hook writing the clean
# activation into the output in place), attribution patching ((clean - corrupt) x gradient) and direct
# logit attribution; a steering vector added by a forward pre-hook
# ----------------------------------------------------------------------------------------------


def tiny_gpt(m, vocab=11, d=16, heads=2, layers=2, ctx=6):
    torch, nn, F = m.torch, m.nn, m.F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.ln2 = nn.LayerNorm(d)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))
            self.attn_out = nn.Identity()  # hook points, as TransformerLens's HookPoint
            self.mlp_out = nn.Identity()

        def forward(self, x, mask):
            h = self.ln1(x)
            a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
            x = x + self.attn_out(a)
            return x + self.mlp_out(self.mlp(self.ln2(x)))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.zeros(ctx, d))
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.ln_f = nn.LayerNorm(d)
            self.unembed = nn.Linear(d, vocab, bias=False)
            self.resid = nn.ModuleList([nn.Identity() for _ in range(layers + 1)])

        def forward(self, tokens):
            T = tokens.shape[1]
            mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
            x = self.resid[0](self.embed(tokens) + self.pos[:T])
            for i, block in enumerate(self.blocks):
                x = self.resid[i + 1](block(x, mask))
            return self.unembed(self.ln_f(x))

    return GPT()


def mech_interp(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, tiny_gpt(m), weights).double().eval()
    clean = torch.tensor([[1, 4, 2, 7, 4, 2]])
    corrupt = torch.tensor([[1, 5, 2, 7, 5, 2]])
    answer, wrong = 7, 3
    out = {}

    def logit_diff(logits):
        return logits[0, -1, answer] - logits[0, -1, wrong]

    # a cache of every hook point
    cache = {}

    def caching_hook(name):
        def hook(module, inputs, output):
            cache[name] = output.detach()
        return hook

    points = {f"resid.{i}": mod for i, mod in enumerate(model.resid)}
    for i, block in enumerate(model.blocks):
        points[f"attn_out.{i}"] = block.attn_out
        points[f"mlp_out.{i}"] = block.mlp_out
    handles = [mod.register_forward_hook(caching_hook(name)) for name, mod in points.items()]
    with torch.no_grad():
        clean_logits = model(clean)
    clean_cache = dict(cache)
    with torch.no_grad():
        corrupt_logits = model(corrupt)
    for h in handles:
        h.remove()
    out["logit_diffs"] = torch.stack([logit_diff(clean_logits), logit_diff(corrupt_logits)])

    # the logit lens: each layer's residual stream through the final norm and unembedding
    with torch.no_grad():
        out["logit_lens"] = torch.stack([model.unembed(model.ln_f(clean_cache[f"resid.{i}"]))[0, -1].log_softmax(-1)
                                         for i in range(len(model.resid))])

    # direct logit attribution: each component's output along the answer direction, through ln_f's scale
    direction = model.unembed.weight[answer] - model.unembed.weight[wrong]
    final = clean_cache[f"resid.{len(model.blocks)}"][0, -1]
    scale = (final.var(unbiased=False) + model.ln_f.eps).sqrt()
    components = [clean_cache["resid.0"]] + [clean_cache[f"{k}.{i}"] for i in range(len(model.blocks)) for k in ("attn_out", "mlp_out")]
    with torch.no_grad():
        dla = torch.stack([((c[0, -1] - c[0, -1].mean()) / scale * model.ln_f.weight) @ direction for c in components])
        total = dla.sum() + model.ln_f.bias @ direction
    out["dla"] = (dla, total)

    # activation patching: the clean residual stream written into the corrupt run, one position at a time
    def patch_hook(name, pos):
        def hook(module, inputs, output):
            output[:, pos] = clean_cache[name][:, pos]
        return hook

    patched = torch.zeros(len(model.resid), clean.shape[1], dtype=torch.float64)
    for i, mod in enumerate(model.resid):
        for pos in range(clean.shape[1]):
            h = mod.register_forward_hook(patch_hook(f"resid.{i}", pos))
            with torch.no_grad():
                patched[i, pos] = logit_diff(model(corrupt))
            h.remove()
    out["patching"] = (patched - logit_diff(corrupt_logits)) / (logit_diff(clean_logits) - logit_diff(corrupt_logits))

    # attribution patching: gradients of the corrupt run's metric at every hook point, by retain_grad
    kept = {}

    def keep_grad(name):
        def hook(module, inputs, output):
            output.retain_grad()
            kept[name] = output
        return hook

    handles = [mod.register_forward_hook(keep_grad(name)) for name, mod in points.items()]
    model.zero_grad()
    logit_diff(model(corrupt)).backward()
    for h in handles:
        h.remove()
    out["attribution_patching"] = {name: ((clean_cache[name] - kept[name].detach()) * kept[name].grad).sum(-1)[0]
                                   for name in points}

    # steering: a vector added to the residual stream before block 1 by a forward pre-hook on it
    steer = (clean_cache["resid.1"][0, 1] - clean_cache["resid.1"][0, 4]) * 0.5

    def steering_hook(module, args):
        x, mask = args
        return (x + steer, mask)

    h = model.blocks[1].register_forward_pre_hook(steering_hook)
    with torch.no_grad():
        out["steered"] = model(corrupt)[0, -1].softmax(-1)
    h.remove()
    return out


def test_tiny_gpt_logit_lens_patching_attribution():
    ours, _ = run_both(mech_interp, weights_of(tiny_gpt), rtol=1e-8, atol=1e-11)
    # patching the whole final residual stream at the last position restores the clean run
    np.testing.assert_allclose(ours["patching"][-1, -1], 1.0, rtol=1e-10)
    dla, total = ours["dla"]
    np.testing.assert_allclose(total, ours["logit_diffs"][0], rtol=1e-10)  # the components add up to the logit difference


# ----------------------------------------------------------------------------------------------
# A sparse autoencoder on hooked activations, as SAELens / Anthropic's write-ups train it: a tied
# pre-encoder bias initialised at the mean, unit-norm decoder rows, the gradient's component parallel to
# each row removed in place before the step, an L1 penalty weighted by decoder norms, dead features
# counted; then the SAE spliced back in by a forward hook, reconstruction loss measured
# ----------------------------------------------------------------------------------------------


def sparse_autoencoder(m, weights, steps=8):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, mlp(m), weights).double().eval()
    rng = np.random.default_rng(13)
    X = torch.from_numpy(rng.standard_normal((64, 6)))
    acts = []
    h = model[1].register_forward_hook(lambda mod, i, o: acts.append(o.detach()))
    with torch.no_grad():
        model(X)
    h.remove()
    A = acts[0]
    d_in, d_sae = A.shape[1], 24

    class SAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.W_enc = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(d_in, d_sae, dtype=torch.float64)))
            self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=torch.float64))
            self.W_dec = nn.Parameter(self.W_enc.data.T.clone())
            self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=torch.float64))
            with torch.no_grad():
                self.W_dec.data /= torch.norm(self.W_dec.data, dim=1, keepdim=True)

        def encode(self, x):
            return F.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

        def forward(self, x):
            f = self.encode(x)
            return f @ self.W_dec + self.b_dec, f

        @torch.no_grad()
        def remove_gradient_parallel_to_decoder_directions(self):
            parallel_component = torch.einsum("sd,sd->s", self.W_dec.grad, self.W_dec.data)
            self.W_dec.grad -= torch.einsum("s,sd->sd", parallel_component, self.W_dec.data)

        @torch.no_grad()
        def set_decoder_norm_to_unit_norm(self):
            self.W_dec.data /= torch.norm(self.W_dec.data, dim=1, keepdim=True)

    torch.manual_seed(3)
    sae = SAE()
    with torch.no_grad():
        sae.b_dec.data = A.mean(0).clone()
    opt = optim.Adam(sae.parameters(), lr=3e-3, betas=(0.9, 0.999))
    sched = optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 4))
    act_freq = torch.zeros(d_sae, dtype=torch.float64)
    history = []
    for step in range(steps):
        batch = A[(step * 16) % 64:(step * 16) % 64 + 16]
        recon, f = sae(batch)
        mse = (recon - batch).pow(2).sum(-1).mean()
        l1 = (f * sae.W_dec.norm(dim=1)).sum(-1).mean()
        loss = mse + 5e-3 * l1
        opt.zero_grad()
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        nn.utils.clip_grad_norm_(sae.parameters(), 1.0)  # (SAELens: torch.nn.utils, see test_torch_dot_nn_spelling)
        opt.step()
        sched.step()
        sae.set_decoder_norm_to_unit_norm()
        act_freq += (f > 0).double().sum(0)
        history.append((mse.item(), l1.item(), (f > 0).double().sum(-1).mean().item()))

    # splice the SAE in: the hooked activation replaced by its reconstruction
    def splice(module, inputs, output):
        return sae(output)[0]

    with torch.no_grad():
        clean = model(X)
        h = model[1].register_forward_hook(splice)
        spliced = model(X)
        h.remove()
    ce_gap = (F.kl_div(spliced.log_softmax(-1), clean.log_softmax(-1), log_target=True, reduction="batchmean"))
    return {"history": history, "W_dec": sae.W_dec.detach(), "norms": sae.W_dec.norm(dim=1).detach(),
            "dead": (act_freq == 0).sum(), "kl": ce_gap, "lr": sched.get_last_lr()}


def test_sparse_autoencoder_on_hooked_activations():
    ours, _ = run_both(sparse_autoencoder, weights_of(mlp, seed=9), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(ours["norms"], 1.0, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Saliency through an LSTM over padded sequences (pack_padded_sequence), and integrated Hessians
# (Janizek et al.: interactions as the integrated gradient of the integrated gradient) by double backward
# and by torch.func.hessian, beside the input Jacobian by jacrev
# ----------------------------------------------------------------------------------------------


def lstm_saliency(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    from_rnn = nn.utils.rnn

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(12, 5)
            self.lstm = nn.LSTM(5, 7, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(14, 2)

        def forward(self, emb, lengths):
            packed = from_rnn.pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
            _, (h, c) = self.lstm(packed)
            return self.fc(torch.cat([h[-2], h[-1]], dim=1))

    model = Tagger().double()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    tokens = torch.tensor([[3, 5, 7, 0, 0], [1, 2, 3, 4, 5], [9, 8, 0, 0, 0]])
    lengths = torch.tensor([3, 5, 2])
    emb = model.embedding(tokens).detach().requires_grad_(True)
    logits = model(emb, lengths)
    logits[:, 1].sum().backward()
    saliency = emb.grad.norm(dim=-1)
    return {"logits": logits, "saliency": saliency, "padded_grads": emb.grad[0, 3:], "lstm_grad": model.lstm.weight_hh_l0_reverse.grad}


def lstm_weights():
    import autograd

    autograd.manual_seed(0)
    import nn

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(12, 5)
            self.lstm = nn.LSTM(5, 7, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(14, 2)

    return {k: v.numpy().copy() for k, v in Tagger().state_dict().items()}


def integrated_hessians(m, weights, steps=12):
    torch, nn, F = m.torch, m.nn, m.F
    func = m.torch.func
    net = nn.Sequential(nn.Linear(6, 12), nn.Softplus(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))
    net = load(m, net, weights).double().eval()
    x = torch.from_numpy(tabular(1, seed=14))[0]
    baseline = torch.zeros(6, dtype=torch.float64)

    def f(v):
        return net(v.unsqueeze(0))[0, 1]

    # interactions Gamma_ij = (x_i - x'_i)(x_j - x'_j) * sum over alpha, beta of d2f/dxi dxj (x' + alpha beta (x - x')) * alpha beta
    nodes = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    total = torch.zeros(6, 6, dtype=torch.float64)
    grads_first = torch.zeros(6, dtype=torch.float64)
    for a in nodes:
        for b in nodes:
            point = (baseline + a * b * (x - baseline)).requires_grad_(True)
            (g,) = torch.autograd.grad(f(point), point, create_graph=True)
            rows = [torch.autograd.grad(g[i], point, retain_graph=True)[0] for i in range(6)]
            total += torch.stack(rows) * a * b
            grads_first += g.detach() * a
    delta = x - baseline
    interactions = delta[:, None] * delta[None, :] * total / steps ** 2
    # the diagonal gets the first-order term too
    interactions = interactions + torch.diag(delta * grads_first / steps ** 2)

    # the same Hessians by torch.func, batched over the grid with vmap
    ab = (nodes[:, None] * nodes[None, :]).reshape(-1)
    points = baseline + ab[:, None] * (x - baseline)
    hessians = func.vmap(func.hessian(f))(points)
    total_func = (hessians * ab[:, None, None]).sum(0)
    jac = func.jacrev(lambda v: net(v.unsqueeze(0))[0])(x)
    fwd = func.jacfwd(lambda v: net(v.unsqueeze(0))[0])(x)
    with torch.no_grad():
        gap = f(x) - f(baseline)
    return {"interactions": interactions, "total": total, "total_func": total_func, "jac": jac, "jacfwd": fwd,
            "gap": gap}


def test_lstm_saliency_and_integrated_hessians():
    ours, _ = run_both(lstm_saliency, lstm_weights(), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(ours["padded_grads"], 0)  # what the packing leaves out gets no gradient
    ours, _ = run_both(integrated_hessians, weights_of(
        lambda m: m.nn.Sequential(m.nn.Linear(6, 12), m.nn.Softplus(), m.nn.Linear(12, 8), m.nn.Tanh(), m.nn.Linear(8, 3)), seed=10),
        rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["total_func"], ours["total"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["jac"], ours["jacfwd"], rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------------------------------
# Evaluating saliency maps: deletion and insertion curves (pixels ranked by a stable descending argsort,
# ties included, areas by torch.trapezoid), maps clipped at their 99th percentile by torch.quantile; RISE
# (random masks by torch.rand, bilinear upsampling, random shifts); Score-CAM; Captum's LayerGradCam with
# nearest upsampling; a meaningful-perturbation mask optimised by Adam with a Gaussian blur by grouped conv
# ----------------------------------------------------------------------------------------------


def saliency_evaluation(m, weights, steps=8):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, cnn(m), weights).double().eval()
    X = torch.from_numpy(images(2, seed=11))
    target = torch.tensor([1, 3])
    out = {}

    # a saliency map with many ties: |grad| rounded to two decimals
    x = X.clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    sal = x.grad.abs().amax(dim=1)
    sal = torch.round(sal / sal.amax(dim=(1, 2), keepdim=True) * 20) / 20
    q = torch.quantile(sal.flatten(1), 0.99, dim=1, keepdim=True)
    clipped = torch.minimum(sal.flatten(1), q) / q
    out["quantile"] = (q, clipped, torch.quantile(sal.flatten(1), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), dim=1, interpolation="midpoint"))

    @torch.no_grad()
    def deletion_insertion(x, sal, target, mode, n_steps=8):
        n, c, H, W = x.shape
        order = torch.argsort(sal.view(n, -1), dim=1, descending=True, stable=True)
        per_step = (H * W + n_steps - 1) // n_steps
        blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
        start, finish = (x.clone(), blurred) if mode == "del" else (blurred.clone(), x)
        scores = [model(start).softmax(1).gather(1, target[:, None]).squeeze(1)]
        for i in range(n_steps):
            idx = order[:, i * per_step:(i + 1) * per_step]
            flat_start = start.view(n, c, -1)
            flat_finish = finish.reshape(n, c, -1)
            flat_start.scatter_(2, idx.unsqueeze(1).expand(n, c, idx.shape[1]), flat_finish.gather(2, idx.unsqueeze(1).expand(n, c, idx.shape[1])))
            scores.append(model(start).softmax(1).gather(1, target[:, None]).squeeze(1))
        curve = torch.stack(scores, dim=1)
        return curve, torch.trapezoid(curve, dx=1.0 / n_steps, dim=1), order

    out["deletion"] = deletion_insertion(X, sal, target, "del")
    out["insertion"] = deletion_insertion(X, sal, target, "ins")

    # RISE: N random binary grids, upsampled bilinearly with a random shift, weighted by the class score
    torch.manual_seed(1)
    N, s, p1 = 16, 3, 0.5
    cell = math.ceil(8 / s)
    up = (s + 1) * cell
    grid = (torch.rand(N, s, s) < p1).double()
    masks = torch.empty(N, 8, 8, dtype=torch.float64)
    shifts = torch.randint(0, cell, (N, 2))
    for i in range(N):
        big = F.interpolate(grid[i][None, None], size=(up, up), mode="bilinear", align_corners=False)[0, 0]
        x0, y0 = shifts[i].tolist()
        masks[i] = big[x0:x0 + 8, y0:y0 + 8]
    with torch.no_grad():
        preds = torch.stack([model(X[j:j + 1] * masks[:, None]).softmax(1) for j in range(2)])  # (2, N, classes)
    rise = torch.einsum("bnk,nhw->bkhw", preds, masks) / N / p1
    out["rise"] = (masks, rise)

    # Score-CAM: the upsampled, normalised activations as masks, softmax of the target scores as weights
    acts = {}
    h = model[3].register_forward_hook(lambda mod, i, o: acts.__setitem__("a", o))
    with torch.no_grad():
        model(X)
        A = acts["a"]
        h.remove()
        up_acts = F.interpolate(A, size=(8, 8), mode="bilinear", align_corners=False)
        mins = up_acts.flatten(2).min(-1)[0][..., None, None]
        maxs = up_acts.flatten(2).max(-1)[0][..., None, None]
        norm = torch.where(maxs - mins > 0, (up_acts - mins) / (maxs - mins), torch.zeros_like(up_acts))
        cams = []
        for b in range(2):
            masked = X[b:b + 1] * norm[b][:, None]  # (channels, 3, 8, 8)
            scores = model(masked)[:, target[b]]
            cams.append(F.relu((scores.softmax(0)[:, None, None] * A[b]).sum(0)))
    out["scorecam"] = torch.stack(cams)

    # Captum's LayerGradCam: mean gradient over space, summed with the activations, ReLU, nearest upsampling
    saved = {}

    def forward_hook(module, inp, output):
        saved["out"] = output

    h = model[5].register_forward_hook(forward_hook)
    output = model(X)
    h.remove()
    layer_gradients = torch.autograd.grad(torch.unbind(output.gather(1, target[:, None]).squeeze(1)), saved["out"])[0]
    summed_grads = torch.mean(layer_gradients, dim=tuple(x for x in range(2, len(layer_gradients.shape))), keepdim=True)
    scaled_acts = torch.sum(summed_grads * saved["out"], dim=1, keepdim=True)
    scaled_acts = F.relu(scaled_acts)
    out["layer_gradcam"] = F.interpolate(scaled_acts, (8, 8), mode="nearest")

    # a meaningful-perturbation mask: preserve the score with as small a mask as possible, blurred elsewhere
    kernel1d = torch.exp(-torch.arange(-2, 3, dtype=torch.float64) ** 2 / 2.0)
    kernel = (kernel1d[:, None] * kernel1d[None, :])
    kernel = (kernel / kernel.sum()).expand(3, 1, 5, 5)
    blurred = F.conv2d(F.pad(X[:1], (2, 2, 2, 2), mode="replicate"), kernel, groups=3)
    mask_param = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64, requires_grad=True)
    opt = optim.Adam([mask_param], lr=0.1)
    history = []
    for step in range(steps):
        mask = F.interpolate(mask_param.clamp(0, 1), size=(8, 8), mode="bilinear", align_corners=False)
        perturbed = X[:1] * mask + blurred * (1 - mask)
        prob = model(perturbed).softmax(1)[0, target[0]]
        tv = (mask[..., 1:, :] - mask[..., :-1, :]).abs().mean() + (mask[..., :, 1:] - mask[..., :, :-1]).abs().mean()
        loss = 0.05 * mask.abs().mean() + 0.2 * tv - prob
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    out["meaningful"] = (mask_param.detach(), history)
    return out


def test_deletion_insertion_rise_scorecam_layer_gradcam_perturbation_mask():
    ours, _ = run_both(saliency_evaluation, weights_of(cnn), rtol=1e-9, atol=1e-12)
    curve, auc, order = ours["deletion"]
    assert curve.shape == (2, 9)


# ----------------------------------------------------------------------------------------------
# Captum's metrics and sampling: sensitivity_max (uniform noise from the legacy torch.FloatTensor(size)
# constructor), infidelity, FeaturePermutation (torch.randperm over the batch, per feature group),
# KernelShap's coalition sampler (a Categorical over coalition sizes, then torch.randperm)
# ----------------------------------------------------------------------------------------------


def captum_metrics(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    net = load(m, mlp(m), weights).double().eval()
    X = torch.from_numpy(tabular(6, seed=15))
    target = 1

    def saliency(inputs):
        inputs = inputs.detach().requires_grad_()
        (g,) = torch.autograd.grad(torch.unbind(net(inputs)[:, target]), inputs)
        return g

    def input_x_gradient(inputs):
        return inputs * saliency(inputs)

    torch.manual_seed(4)

    def default_perturb_func(inputs, perturb_radius=0.02):
        return inputs + torch.FloatTensor(inputs.size()).uniform_(-perturb_radius, perturb_radius).to(inputs.device)

    def sensitivity_max(explanation_func, inputs, n_perturb_samples=5):
        expl = explanation_func(inputs)
        expl_norm = torch.norm(expl.view(expl.shape[0], -1), p="fro", dim=1, keepdim=True)
        max_sens = torch.zeros(inputs.shape[0], 1, dtype=inputs.dtype)
        for _ in range(n_perturb_samples):
            perturbed = default_perturb_func(inputs)
            diff = explanation_func(perturbed) - expl
            sens = torch.norm(diff.view(diff.shape[0], -1), dim=1, keepdim=True) / expl_norm
            max_sens = torch.max(max_sens, sens)
        return max_sens.squeeze(1)

    out = {"sensitivity": sensitivity_max(saliency, X), "sensitivity_ixg": sensitivity_max(input_x_gradient, X)}

    rng = np.random.default_rng(16)

    def perturb_fn(inputs):
        noise = torch.tensor(rng.normal(0, 0.003, inputs.shape)).float()
        return noise, inputs - noise

    @torch.no_grad()
    def infidelity(attributions, inputs, n_perturb_samples=8, normalize=True):
        inputs_fwd = net(inputs)[:, target]
        dots, diffs = [], []
        for _ in range(n_perturb_samples):
            perturbations, perturbed = perturb_fn(inputs)
            dots.append((attributions * perturbations).sum(1))
            diffs.append(inputs_fwd - net(perturbed)[:, target])
        dots, diffs = torch.stack(dots, 1), torch.stack(diffs, 1)
        if normalize:
            beta = (dots * diffs).mean(1) / (dots * dots).mean(1)
            dots = dots * beta.unsqueeze(1)
        return ((dots - diffs) ** 2).mean(1), str(dots.dtype).split(".")[-1]

    out["infidelity"] = infidelity(input_x_gradient(X), X)

    # FeaturePermutation: each feature group's values shuffled across the batch
    feature_mask = torch.tensor([[0, 0, 1, 1, 2, 2]])

    @torch.no_grad()
    def feature_permutation(inputs, mask):
        base = net(inputs)[:, target]
        attrs = torch.zeros_like(inputs)
        for fid in range(int(mask.max()) + 1):
            perm = torch.randperm(inputs.shape[0])
            current = (mask == fid).to(inputs.dtype)
            permuted = inputs[perm] * current + inputs * (1 - current)
            attrs += (base - net(permuted)[:, target]).unsqueeze(1) * current
        return attrs

    out["permutation"] = feature_permutation(X, feature_mask)

    # KernelShap's sampler: the coalition size from a Categorical over the Shapley kernel's weights
    num_features = 6
    probs = torch.tensor([(num_features - 1) / (k * (num_features - k)) for k in range(1, num_features)])
    dist = torch.distributions.Categorical(probs)
    coalitions = []
    for _ in range(10):
        num_selected = int(dist.sample()) + 1
        rand_vals = torch.randperm(num_features)
        chosen = torch.zeros(num_features, dtype=torch.long)
        chosen[rand_vals[:num_selected]] = 1
        coalitions.append(chosen)
    out["coalitions"] = torch.stack(coalitions)
    out["sizes"] = dist.sample((12,))
    return out


def test_captum_metrics_and_samplers():
    ours, _ = run_both(captum_metrics, weights_of(mlp, seed=11), rtol=1e-6, atol=1e-9)
    assert ours["infidelity"][1] == "float64"  # float32 noise times float64 attributions


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


# ----------------------------------------------------------------------------------------------
# Interpretable-by-design models: ProtoPNet's prototype layer (L2 distances by convolutions, min pooling as
# -max_pool2d(-d), log similarities, cluster and separation costs, the push of each prototype onto its
# nearest training patch), a neural additive model (ExU units, ReLU-n, one network per feature by einsum),
# and TabNet's attentive transformer (sparsemax as an autograd.Function, prior scales, ghost batch norm)
# ----------------------------------------------------------------------------------------------


def protopnet(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class ProtoNet(nn.Module):
        def __init__(self, num_prototypes=6, proto_dim=5, classes=3):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(8, proto_dim, 1), nn.Sigmoid())
            self.prototype_shape = (num_prototypes, proto_dim, 1, 1)
            self.prototype_vectors = nn.Parameter(torch.rand(self.prototype_shape))
            self.ones = nn.Parameter(torch.ones(self.prototype_shape), requires_grad=False)
            self.prototype_class_identity = torch.zeros(num_prototypes, classes)
            for j in range(num_prototypes):
                self.prototype_class_identity[j, j // (num_prototypes // classes)] = 1
            self.last_layer = nn.Linear(num_prototypes, classes, bias=False)
            self.epsilon = 1e-4

        def _l2_convolution(self, x):
            x2 = x ** 2
            x2_patch_sum = F.conv2d(input=x2, weight=self.ones)
            p2 = self.prototype_vectors ** 2
            p2 = torch.sum(p2, dim=(1, 2, 3))
            p2_reshape = p2.view(-1, 1, 1)
            xp = F.conv2d(input=x, weight=self.prototype_vectors)
            intermediate_result = -2 * xp + p2_reshape
            distances = F.relu(x2_patch_sum + intermediate_result)
            return distances

        def distance_2_similarity(self, distances):
            return torch.log((distances + 1) / (distances + self.epsilon))

        def forward(self, x):
            conv_features = self.features(x)
            distances = self._l2_convolution(conv_features)
            min_distances = -F.max_pool2d(-distances, kernel_size=(distances.size()[2], distances.size()[3]))
            min_distances = min_distances.view(-1, self.prototype_shape[0])
            prototype_activations = self.distance_2_similarity(min_distances)
            logits = self.last_layer(prototype_activations)
            return logits, min_distances

        def push_forward(self, x):
            conv_output = self.features(x)
            distances = self._l2_convolution(conv_output)
            return conv_output, distances

    model = ProtoNet().double()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    model.prototype_class_identity = model.prototype_class_identity.double()
    with torch.no_grad():  # the last layer as ProtoPNet initialises it: 1 for the own class, -0.5 elsewhere
        model.last_layer.weight.copy_(1.0 * model.prototype_class_identity.t() - 0.5 * (1 - model.prototype_class_identity.t()))
    X = torch.from_numpy(images(6, seed=18))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    joint = optim.Adam([{"params": model.features.parameters(), "lr": 1e-2}, {"params": [model.prototype_vectors], "lr": 3e-2}])
    history = []
    for step in range(steps):
        output, min_distances = model(X)
        cross_entropy = F.cross_entropy(output, y)
        max_dist = model.prototype_shape[1] * model.prototype_shape[2] * model.prototype_shape[3]
        prototypes_of_correct_class = torch.t(model.prototype_class_identity[:, y])
        inverted_distances, _ = torch.max((max_dist - min_distances) * prototypes_of_correct_class, dim=1)
        cluster_cost = torch.mean(max_dist - inverted_distances)
        prototypes_of_wrong_class = 1 - prototypes_of_correct_class
        inverted_distances_to_nontarget_prototypes, _ = torch.max((max_dist - min_distances) * prototypes_of_wrong_class, dim=1)
        separation_cost = torch.mean(max_dist - inverted_distances_to_nontarget_prototypes)
        avg_separation_cost = torch.sum(min_distances * prototypes_of_wrong_class, dim=1) / torch.sum(prototypes_of_wrong_class, dim=1)
        l1 = (model.last_layer.weight * (1 - torch.t(model.prototype_class_identity))).norm(p=1)
        loss = cross_entropy + 0.8 * cluster_cost - 0.08 * separation_cost + 1e-4 * l1
        joint.zero_grad()
        loss.backward()
        joint.step()
        history.append((loss.item(), cluster_cost.item(), separation_cost.item(), avg_separation_cost.mean().item()))

    # push: each prototype onto its nearest patch among images of its class
    with torch.no_grad():
        conv_output, distances = model.push_forward(X)
        new_protos = torch.empty_like(model.prototype_vectors)
        where = []
        for j in range(model.prototype_shape[0]):
            target_class = torch.argmax(model.prototype_class_identity[j]).item()
            idx = (y == target_class).nonzero().squeeze(1)
            d = distances[idx, j]
            flat = torch.argmin(d.reshape(-1)).item()
            img, row, col = np.unravel_index(flat, d.shape)
            where.append((idx[img].item(), int(row), int(col)))
            new_protos[j] = conv_output[idx[img], :, row:row + 1, col:col + 1]
        model.prototype_vectors.data.copy_(new_protos)
        _, min_after = model(X)
    return {"history": history, "where": where, "min_after": min_after, "protos": model.prototype_vectors.detach()}


def nam_and_tabnet(m, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)

    class ExU(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.weights = nn.Parameter(torch.empty(in_features, out_features))
            self.bias = nn.Parameter(torch.empty(in_features))
            nn.init.trunc_normal_(self.weights, mean=4.0, std=0.5)
            nn.init.trunc_normal_(self.bias, std=0.5)

        def forward(self, inputs, n=1):
            output = (inputs - self.bias).matmul(torch.exp(self.weights))
            output = F.relu(output)
            return torch.clamp(output, 0, n)

    class FeatureNN(nn.Module):
        def __init__(self, hidden=8):
            super().__init__()
            self.exu = ExU(1, hidden)
            self.linear = nn.Linear(hidden, 1)

        def forward(self, x):
            return self.linear(self.exu(x.unsqueeze(1)))

    class NAM(nn.Module):
        def __init__(self, num_inputs):
            super().__init__()
            self.feature_nns = nn.ModuleList([FeatureNN() for _ in range(num_inputs)])
            self._bias = nn.Parameter(torch.zeros(1))

        def forward(self, inputs):
            individual = [fnn(inputs[:, i]) for i, fnn in enumerate(self.feature_nns)]
            conc_out = torch.cat(individual, dim=-1)
            return torch.sum(conc_out, dim=-1) + self._bias, conc_out

    def sparsemax_threshold(input, dim=-1):
        input_srt, _ = torch.sort(input, descending=True, dim=dim)
        input_cumsum = input_srt.cumsum(dim) - 1
        d = input.size(dim)
        rhos = torch.arange(1, d + 1, dtype=input.dtype).view(1, -1)
        support = rhos * input_srt > input_cumsum
        support_size = support.sum(dim=dim).unsqueeze(dim)
        tau = input_cumsum.gather(dim, support_size - 1)
        tau /= support_size.to(input.dtype)
        return tau, support_size

    class SparsemaxFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input, dim=-1):
            ctx.dim = dim
            max_val, _ = input.max(dim=dim, keepdim=True)
            input -= max_val  # same numerical stability trick as for softmax
            tau, supp_size = sparsemax_threshold(input, dim=dim)
            output = torch.clamp(input - tau, min=0)
            ctx.save_for_backward(supp_size, output)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            supp_size, output = ctx.saved_tensors
            dim = ctx.dim
            grad_input = grad_output.clone()
            grad_input[output == 0] = 0
            v_hat = grad_input.sum(dim=dim) / supp_size.to(output.dtype).squeeze()
            v_hat = v_hat.unsqueeze(dim)
            grad_input = torch.where(output != 0, grad_input - v_hat, grad_input)
            return grad_input, None

    class GBN(nn.Module):
        def __init__(self, input_dim, virtual_batch_size=4, momentum=0.01):
            super().__init__()
            self.virtual_batch_size = virtual_batch_size
            self.bn = nn.BatchNorm1d(input_dim, momentum=momentum)

        def forward(self, x):
            chunks = x.chunk(int(np.ceil(x.shape[0] / self.virtual_batch_size)), 0)
            res = [self.bn(x_) for x_ in chunks]
            return torch.cat(res, dim=0)

    class AttentiveTransformer(nn.Module):
        def __init__(self, input_dim, output_dim):
            super().__init__()
            self.fc = nn.Linear(input_dim, output_dim, bias=False)
            self.bn = GBN(output_dim)

        def forward(self, priors, processed_feat):
            x = self.fc(processed_feat)
            x = self.bn(x)
            x = torch.mul(x, priors)
            return SparsemaxFunction.apply(x, -1)

    nam = NAM(4).double()
    att = AttentiveTransformer(5, 4).double()
    head = nn.Linear(4, 1).double()
    rng = np.random.default_rng(19)
    X = torch.from_numpy(rng.standard_normal((12, 4)))
    H = torch.from_numpy(rng.standard_normal((12, 5)))
    y = torch.from_numpy(np.sin(X[:, 0].numpy()) + X[:, 1].numpy() ** 2)
    opt = optim.Adam(list(nam.parameters()) + list(att.parameters()) + list(head.parameters()), lr=1e-2)
    history = []
    for step in range(steps):
        pred, contributions = nam(X)
        priors = torch.ones(12, 4, dtype=torch.float64)
        masks, entropy = [], 0
        for s in range(2):
            M = att(priors, H)
            entropy = entropy + torch.mean(torch.sum(torch.mul(M, torch.log(M + 1e-15)), dim=1))
            priors = torch.mul(1.3 - M, priors)
            masks.append(M)
        tab_pred = head(X * masks[0] + X * masks[1]).squeeze(1)
        loss = F.mse_loss(pred, y) + F.mse_loss(tab_pred, y) + 1e-3 * entropy / 2 + 1e-3 * contributions.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return {"history": history, "contributions": contributions.detach(), "masks": [mk.detach() for mk in masks],
            "running_mean": att.bn.bn.running_mean, "exu_grad": nam.feature_nns[0].exu.weights.grad}


def protopnet_weights():
    """Features near zero-mean, prototypes in [0, 1) (ProtoPNet draws them by torch.rand), the fixed ones."""
    rng = np.random.default_rng(20)
    shapes = {"features.0.weight": (8, 3, 3, 3), "features.0.bias": (8,), "features.3.weight": (5, 8, 1, 1),
              "features.3.bias": (5,), "prototype_vectors": (6, 5, 1, 1), "ones": (6, 5, 1, 1), "last_layer.weight": (3, 6)}
    return {k: np.ones(s) if k == "ones" else rng.uniform(0, 1, s) if k == "prototype_vectors" else rng.standard_normal(s) * 0.3
            for k, s in shapes.items()}


def test_protopnet_prototypes_and_push():
    ours, _ = run_both(protopnet, protopnet_weights(), rtol=1e-8, atol=1e-11)
    # after the push every prototype sits exactly on a patch of an image: its nearest distance is zero
    np.testing.assert_allclose(ours["min_after"].min(0), 0, atol=1e-12)


def test_neural_additive_model_and_tabnet_sparsemax():
    ours, _ = run_both(nam_and_tabnet, rtol=1e-8, atol=1e-11)
    for mask in ours["masks"]:
        np.testing.assert_allclose(mask.sum(1), 1, rtol=1e-12)  # sparsemax: on the simplex
        assert (mask == 0).any()


# ----------------------------------------------------------------------------------------------
# Influence at scale: EK-FAC (Grosse et al.; each Linear's inputs caught by a forward hook and its output
# gradients by a full backward hook, Kronecker factors, torch.linalg.eigh, eigenvalue corrections from
# per-example gradients as outer products) against the exact damped Gauss-Newton inverse, and TRAK (per-
# example gradients by vmap, a seeded random projection, (Phi^T Phi)^-1 by torch.linalg.solve)
# ----------------------------------------------------------------------------------------------


def ekfac_and_trak(m, weights, damping=0.1, proj_dim=16):
    torch, nn, F = m.torch, m.nn, m.F
    func = m.torch.func
    model = load(m, nn.Sequential(nn.Linear(6, 8, bias=False), nn.Tanh(), nn.Linear(8, 3, bias=False)), weights).double()
    rng = np.random.default_rng(21)
    Xtr = torch.from_numpy(rng.standard_normal((20, 6)))
    ytr = torch.from_numpy(rng.integers(0, 3, 20))
    Xq = torch.from_numpy(rng.standard_normal((3, 6)))
    yq = torch.from_numpy(rng.integers(0, 3, 3))
    linears = [mod for mod in model if isinstance(mod, nn.Linear)]
    store = {mod: {} for mod in linears}

    def fwd_hook(mod, inputs, output):
        store[mod]["a"] = inputs[0].detach()

    def bwd_hook(mod, grad_input, grad_output):
        store[mod]["g"] = grad_output[0].detach()

    handles = [h for mod in linears for h in (mod.register_forward_hook(fwd_hook), mod.register_full_backward_hook(bwd_hook))]

    # Kronecker factors from labels sampled from the model's own predictive distribution (the true Fisher)
    torch.manual_seed(5)
    logits = model(Xtr)
    sampled = torch.multinomial(F.softmax(logits, dim=-1).detach(), 1).squeeze(1)
    F.cross_entropy(logits, sampled, reduction="sum").backward()
    factors = {}
    for mod in linears:
        a, g = store[mod]["a"], store[mod]["g"]
        A = a.T @ a / len(a)
        S = g.T @ g / len(g)
        eA, QA = torch.linalg.eigh(A)
        eS, QS = torch.linalg.eigh(S)
        per_example = torch.einsum("bi,bj->bij", g, a)  # each example's weight gradient
        rotated = QS.T @ per_example @ QA
        corrected = (rotated ** 2).mean(0)  # the eigenvalue corrections
        factors[mod] = (QA, QS, corrected, torch.outer(eS, eA))
    for h in handles:
        h.remove()

    def per_example_grads(X, Y):
        params = {k: v.detach() for k, v in model.named_parameters()}

        def loss_fn(p, x, y):
            return F.cross_entropy(func.functional_call(model, p, (x[None],)), y[None])

        return func.vmap(func.grad(loss_fn), in_dims=(None, 0, 0))(params, X, Y)

    gtr, gq = per_example_grads(Xtr, ytr), per_example_grads(Xq, yq)
    names = dict(zip(linears, ["0.weight", "2.weight"]))

    def ihvp(grads, corrected_eigenvalues=True):
        out = []
        for mod in linears:
            QA, QS, corrected, kfac_eigs = factors[mod]
            G = grads[names[mod]]
            rotated = QS.T @ G @ QA
            eig = corrected if corrected_eigenvalues else kfac_eigs
            out.append((QS @ (rotated / (eig + damping)) @ QA.T).flatten(1))
        return torch.cat(out, dim=1)

    flat_tr = torch.cat([gtr[names[mod]].flatten(1) for mod in linears], 1)
    flat_q = torch.cat([gq[names[mod]].flatten(1) for mod in linears], 1)
    ekfac_scores = ihvp(gq) @ flat_tr.T
    kfac_scores = ihvp(gq, corrected_eigenvalues=False) @ flat_tr.T

    # TRAK: projected gradients, the kernel, the scores
    torch.manual_seed(6)
    P = torch.randn(flat_tr.shape[1], proj_dim, dtype=torch.float64) / math.sqrt(proj_dim)
    phi_tr, phi_q = flat_tr @ P, flat_q @ P
    kernel = phi_tr.T @ phi_tr + 1e-3 * torch.eye(proj_dim, dtype=torch.float64)
    with torch.no_grad():
        probs = F.softmax(model(Xtr), -1).gather(1, ytr[:, None]).squeeze(1)
    trak = phi_q @ torch.linalg.solve(kernel, phi_tr.T) * (1 - probs)
    return {"ekfac": ekfac_scores, "kfac": kfac_scores, "trak": trak, "sampled": sampled,
            "factors": [factors[mod][2] for mod in linears]}


def test_ekfac_and_trak_influence():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(6, 8, bias=False), m.nn.Tanh(), m.nn.Linear(8, 3, bias=False)), seed=12)
    # (eigh's eigenvectors are unique up to sign; every score uses each twice, so the signs cancel)
    ours, _ = run_both(ekfac_and_trak, weights, rtol=1e-8, atol=1e-10)
    assert ours["ekfac"].shape == (3, 20) and ours["trak"].shape == (3, 20)


# ----------------------------------------------------------------------------------------------
# Comparing representations: linear and RBF CKA (HSIC with a centring matrix), SVCCA (SVD to 99% of the
# variance, then CCA by QR and SVD), RSA (dissimilarity matrices by torch.corrcoef, Spearman by double
# argsort), and a ridge probe by Cholesky; every quantity against NumPy by hand
# ----------------------------------------------------------------------------------------------


def representation_similarity(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, cnn(m), weights).double().eval()
    X = torch.from_numpy(images(24, seed=22))
    feats = {}
    hooks = [model[i].register_forward_hook(lambda mod, inp, out, i=i: feats.__setitem__(i, out.flatten(1).detach()))
             for i in (1, 3, 6, 9)]
    with torch.no_grad():
        model(X)
    for h in hooks:
        h.remove()

    def centering(K):
        n = K.shape[0]
        H = torch.eye(n, dtype=K.dtype) - torch.ones(n, n, dtype=K.dtype) / n
        return H @ K @ H

    def rbf(X, sigma=None):
        GX = X @ X.T
        KX = torch.diag(GX) - GX + (torch.diag(GX) - GX).T
        if sigma is None:
            mdist = torch.median(KX[KX != 0])
            sigma = math.sqrt(mdist.item())
        KX *= -0.5 / (sigma * sigma)
        return torch.exp(KX)

    def hsic(K, L):
        return torch.sum(centering(K) * centering(L))

    def linear_cka(X, Y):
        return hsic(X @ X.T, Y @ Y.T) / (torch.sqrt(hsic(X @ X.T, X @ X.T)) * torch.sqrt(hsic(Y @ Y.T, Y @ Y.T)))

    def kernel_cka(X, Y):
        return hsic(rbf(X), rbf(Y)) / (torch.sqrt(hsic(rbf(X), rbf(X))) * torch.sqrt(hsic(rbf(Y), rbf(Y))))

    layers = [1, 3, 6, 9]
    cka = torch.tensor([[linear_cka(feats[a], feats[b]).item() for b in layers] for a in layers], dtype=torch.float64)
    kcka = torch.tensor([[kernel_cka(feats[a], feats[b]).item() for b in layers] for a in layers], dtype=torch.float64)

    def svcca(A, B, keep=0.99, eps=1e-10):
        def reduce(Z):
            Z = Z - Z.mean(0, keepdim=True)
            U, S, Vh = torch.linalg.svd(Z, full_matrices=False)
            frac = torch.cumsum(S ** 2, 0) / (S ** 2).sum()
            k = int(torch.searchsorted(frac, torch.tensor([keep], dtype=frac.dtype)).item()) + 1
            return U[:, :k] * S[:k]

        Ra, Rb = reduce(A), reduce(B)
        Qa, _ = torch.linalg.qr(Ra)
        Qb, _ = torch.linalg.qr(Rb)
        rho = torch.linalg.svdvals(Qa.T @ Qb).clamp(max=1.0)
        return rho.mean(), rho.shape[0]

    out = {"cka": cka, "kcka": kcka, "svcca": svcca(feats[3], feats[6])}

    def rdm(Z):
        return 1 - torch.corrcoef(Z)

    def spearman(a, b):
        ra = a.argsort().argsort().to(torch.float64)
        rb = b.argsort().argsort().to(torch.float64)
        return torch.corrcoef(torch.stack([ra, rb]))[0, 1]

    iu = torch.triu_indices(24, 24, offset=1)
    rdms = {l: rdm(feats[l])[iu[0], iu[1]] for l in layers}
    out["rsa"] = torch.stack([spearman(rdms[1], rdms[l]) for l in layers])

    # a ridge probe for the mean intensity, solved by Cholesky
    target = X.mean((1, 2, 3))
    Z = feats[6]
    Zc = torch.cat([Z, torch.ones(len(Z), 1, dtype=Z.dtype)], 1)
    A = Zc.T @ Zc + 0.1 * torch.eye(Zc.shape[1], dtype=Z.dtype)
    L = torch.linalg.cholesky(A)
    w = torch.cholesky_solve((Zc.T @ target)[:, None], L).squeeze(1)
    out["probe_r2"] = 1 - ((Zc @ w - target) ** 2).sum() / ((target - target.mean()) ** 2).sum()
    out["feats"] = {str(k): v for k, v in feats.items()}
    return out


def linear_cka_by_numpy(X, Y):
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    return np.linalg.norm(Y.T @ X) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))


def test_cka_svcca_rsa_and_a_ridge_probe():
    ours, _ = run_both(representation_similarity, weights_of(cnn), rtol=1e-8, atol=1e-11)
    feats = ours["feats"]
    for i, a in enumerate(["1", "3", "6", "9"]):
        for j, b in enumerate(["1", "3", "6", "9"]):
            np.testing.assert_allclose(ours["cka"][i, j], linear_cka_by_numpy(feats[a], feats[b]), rtol=1e-9)
    np.testing.assert_allclose(np.diag(ours["kcka"]), 1, rtol=1e-12)
    assert 0 < ours["svcca"][0] <= 1


# ----------------------------------------------------------------------------------------------
# Counterfactual explanations as DiCE's gradient method writes them: several counterfactuals optimised
# together by Adam, a hinge on the target class's logit, an L1 proximity weighted by the features' median
# absolute deviations, and DPP diversity (torch.det of a 1 / (1 + distance) kernel); Wachter et al.'s single
# counterfactual with a growing lambda
# ----------------------------------------------------------------------------------------------


def counterfactuals(m, weights, steps=25, total_CFs=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    net = load(m, mlp(m), weights).double().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    rng = np.random.default_rng(23)
    data = torch.from_numpy(rng.standard_normal((50, 6)))
    query = data[:1]
    desired = int(net(query).argmin(1))
    mads = (data - data.median(0).values).abs().median(0).values
    feature_weights = 1.0 / mads.clamp(min=1e-3)

    init = query + torch.from_numpy(rng.normal(0, 0.5, (total_CFs, 6)))
    cfs = [init[i:i + 1].clone().requires_grad_(True) for i in range(total_CFs)]
    optimizer = optim.Adam(cfs, lr=0.05)

    def dpp_style(cfs):
        det_entries = torch.ones((total_CFs, total_CFs), dtype=torch.float64)
        for i in range(total_CFs):
            for j in range(total_CFs):
                det_entries[(i, j)] = 1.0 / (1.0 + (torch.abs(cfs[i] - cfs[j]) * feature_weights).sum() / 6)
                if i == j:
                    det_entries[(i, j)] += 0.0001
        return torch.det(det_entries)

    history = []
    for it in range(steps):
        optimizer.zero_grad()
        yloss = 0.0
        for cf in cfs:
            logits = net(cf)
            others = torch.cat([logits[:, :desired], logits[:, desired + 1:]], 1)
            yloss = yloss + F.relu(others.max(1).values - logits[:, desired] + 0.1).sum()
        yloss = yloss / total_CFs
        proximity = sum((torch.abs(cf - query) * feature_weights).sum() for cf in cfs) / (total_CFs * 6)
        diversity = dpp_style(cfs)
        loss = yloss + 0.5 * proximity - 1.0 * diversity
        loss.backward()
        optimizer.step()
        history.append((loss.item(), yloss.item(), diversity.item()))

    # Wachter et al.: argmin_x' lambda (f(x')_t - 1)^2 + d(x, x'), lambda raised until the prediction flips
    x_cf = query.clone().requires_grad_(True)
    opt = optim.SGD([x_cf], lr=0.05)
    lam = 0.1
    lams = []
    for outer in range(4):
        for inner in range(8):
            opt.zero_grad()
            prob = F.softmax(net(x_cf), 1)[0, desired]
            loss = lam * (prob - 1) ** 2 + torch.norm((x_cf - query) * feature_weights, p=1)
            loss.backward()
            opt.step()
        lams.append((lam, prob.item()))
        lam *= 2
    return {"cfs": torch.cat([c.detach() for c in cfs]), "history": history, "wachter": x_cf.detach(), "lams": lams,
            "desired": desired, "mads": mads}


def test_dice_and_wachter_counterfactuals():
    ours, _ = run_both(counterfactuals, weights_of(mlp, seed=13), rtol=1e-8, atol=1e-11)
    assert ours["history"][-1][2] > 0  # the kernel stays positive definite


# ----------------------------------------------------------------------------------------------
# Training with explanations: "Right for the Right Reasons" (Ross et al.: the input gradient of the summed
# log-probabilities, taken with create_graph=True, penalised inside an annotation mask) and GAIN (Li et al.:
# a Grad-CAM made differentiable by create_graph=True, a soft mask by a sigmoid of it, and the masked image's
# score minimised), both differentiating through max pooling, ReLU, convolutions and adaptive pooling twice
# ----------------------------------------------------------------------------------------------


def train_with_explanations(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X = torch.from_numpy(images(6, seed=24))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    annotation = torch.zeros(6, 1, 8, 8, dtype=torch.float64)
    annotation[:, :, :, :3] = 1  # "the left of the image is irrelevant"
    out = {}

    model = load(m, cnn(m), weights).double()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = []
    for step in range(steps):
        x = X.clone().requires_grad_(True)
        logits = model(x)
        log_prob = F.log_softmax(logits, dim=1)
        right_answer = F.nll_loss(log_prob, y)
        (input_grads,) = torch.autograd.grad(log_prob.sum(), x, create_graph=True)
        right_reasons = (annotation * input_grads).pow(2).sum()
        loss = right_answer + 10.0 * right_reasons
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((right_answer.item(), right_reasons.item()))
    out["rrr"] = (history, [p.detach().clone() for p in model.parameters()])

    # GAIN: the attention map's gradient flows back into the network
    model = load(m, cnn(m), weights).double()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    features = model[:7]
    head = model[7:]
    history = []
    for step in range(steps):
        A = features(X)
        logits = head(A)
        score = logits.gather(1, y[:, None]).sum()
        (dA,) = torch.autograd.grad(score, A, create_graph=True)
        weights_c = F.adaptive_avg_pool2d(dA, 1)
        cam = F.relu((weights_c * A).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=(8, 8), mode="bilinear", align_corners=False)
        cam_min = cam.amin(dim=(2, 3), keepdim=True)
        cam_max = cam.amax(dim=(2, 3), keepdim=True)
        cam = (cam - cam_min) / (cam_max - cam_min + 1e-8)
        soft_mask = torch.sigmoid(10.0 * (cam - 0.5))
        masked = X - X * soft_mask
        am_scores = F.softmax(model(masked), dim=1).gather(1, y[:, None])
        loss = F.cross_entropy(logits, y) + 1.0 * am_scores.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((loss.item(), am_scores.mean().item()))
    out["gain"] = (history, [p.detach().clone() for p in model.parameters()])
    return out


def test_right_for_the_right_reasons_and_gain():
    ours, _ = run_both(train_with_explanations, weights_of(cnn), rtol=1e-7, atol=1e-10)
    history, _ = ours["rrr"]
    assert history[-1][0] < history[0][0] and all(h[1] > 0 for h in history)


# ----------------------------------------------------------------------------------------------
# Learnt explainers: an expected-gradients attribution prior (Erion et al.: references drawn by
# torch.randint, interpolation points by torch.rand, attributions with create_graph=True, a smoothness
# penalty on them), and L2X (Chen et al.: a selector whose k-hot mask is a continuous subset sample from
# F.gumbel_softmax's noise, an approximator trained on the masked input) with a RelaxedBernoulli
# (INVASE-style) mask beside it
# ----------------------------------------------------------------------------------------------


def learnt_explainers(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = torch.distributions
    rng = np.random.default_rng(25)
    X = torch.from_numpy(rng.standard_normal((16, 6)))
    y = torch.from_numpy((rng.standard_normal(16) > 0).astype(np.int64) + (rng.standard_normal(16) > 1).astype(np.int64))
    out = {}

    net = load(m, mlp(m), weights).double()
    opt = optim.Adam(net.parameters(), lr=1e-2)
    torch.manual_seed(8)
    history = []
    for step in range(steps):
        refs = X[torch.randint(0, len(X), (len(X),))]
        alphas = torch.rand(len(X), 1, dtype=torch.float64)
        points = (refs + alphas * (X - refs)).requires_grad_(True)
        logits = net(points)
        selected = logits.gather(1, y[:, None]).sum()
        (grads,) = torch.autograd.grad(selected, points, create_graph=True)
        eg = grads * (X - refs)
        prior = (eg[:, 1:] - eg[:, :-1]).abs().mean()  # neighbouring features should agree
        loss = F.cross_entropy(net(X), y) + 0.1 * prior
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((loss.item(), prior.item()))
    out["prior"] = history

    # L2X: continuous subset sampling of k features
    k, tau = 2, 0.5
    selector = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 6)).double()
    approximator = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    with torch.no_grad():
        for i, p in enumerate(list(selector.parameters()) + list(approximator.parameters())):
            p.copy_(torch.from_numpy(np.random.default_rng(30 + i).standard_normal(tuple(p.shape)) * 0.4))
    opt = optim.Adam(list(selector.parameters()) + list(approximator.parameters()), lr=1e-2)
    torch.manual_seed(9)
    history = []
    for step in range(steps):
        logits = selector(X)
        # k samples of a Gumbel-softmax over the features, then their elementwise maximum
        samples = torch.stack([F.gumbel_softmax(logits, tau=tau, hard=False) for _ in range(k)], dim=0)
        mask = samples.max(dim=0).values
        pred = approximator(X * mask)
        teacher = F.softmax(net(X), dim=1).detach()
        loss = F.kl_div(F.log_softmax(pred, dim=1), teacher, reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    with torch.no_grad():
        topk = selector(X).topk(k, dim=1).indices.sort(dim=1).values
        hard = F.gumbel_softmax(selector(X), tau=tau, hard=True)
    out["l2x"] = (history, topk, hard, mask.detach())

    # an INVASE-style relaxed Bernoulli mask, reparameterised
    relaxed = D.RelaxedBernoulli(torch.tensor(0.5, dtype=torch.float64), logits=selector(X))
    torch.manual_seed(10)
    soft = relaxed.rsample()
    (soft * X).sum().backward()
    out["relaxed"] = (soft.detach(), relaxed.log_prob(soft.detach().clamp(1e-6, 1 - 1e-6)).detach(),
                      selector[0].weight.grad)
    return out


def test_expected_gradients_prior_and_l2x():
    ours, _ = run_both(learnt_explainers, weights_of(mlp, seed=14), rtol=1e-8, atol=1e-11)
    history, topk, hard, mask = ours["l2x"]
    np.testing.assert_allclose(hard.sum(1), 1)
    assert ((mask >= 0) & (mask <= 1)).all()


# ----------------------------------------------------------------------------------------------
# GNNExplainer (Ying et al.) on a two-layer GCN written with index_add_ / scatter_add: a learnt sigmoid edge
# mask and feature mask, size and entropy regularisers, Adam; integrated gradients over the edge weights and
# saliency on the node features beside it
# ----------------------------------------------------------------------------------------------


def gnn_explainer(m, epochs=10):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(26)
    N, D = 8, 5
    src = torch.tensor([0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 0, 4])
    dst = torch.tensor([1, 0, 2, 1, 3, 2, 4, 3, 5, 4, 6, 5, 7, 6, 4, 0])
    E = len(src)
    X = torch.from_numpy(rng.standard_normal((N, D)))

    class GCN(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin1 = nn.Linear(D, 8)
            self.lin2 = nn.Linear(8, 3)

        def propagate(self, h, edge_weight):
            ones = torch.ones(N, dtype=h.dtype)
            deg = ones.clone().index_add_(0, dst, edge_weight)  # self loops weigh 1
            norm = deg.pow(-0.5)
            coef = norm[src] * edge_weight * norm[dst]
            out = h * (norm * norm).unsqueeze(1)
            return out.index_add(0, dst, h[src] * coef.unsqueeze(1))

        def forward(self, x, edge_weight):
            h = F.relu(self.propagate(self.lin1(x), edge_weight))
            return self.propagate(self.lin2(h), edge_weight)

    torch.manual_seed(0)
    model = GCN().double()
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.from_numpy(np.random.default_rng(40 + i).standard_normal(tuple(p.shape)) * 0.5))
    for p in model.parameters():
        p.requires_grad_(False)
    node = 3
    full = model(X, torch.ones(E, dtype=torch.float64))
    target = int(full[node].argmax())

    edge_mask = nn.Parameter(torch.from_numpy(rng.standard_normal(E) * 0.1))
    feat_mask = nn.Parameter(torch.full((1, D), 0.1, dtype=torch.float64))
    opt = optim.Adam([edge_mask, feat_mask], lr=0.01)
    coeffs = {"edge_size": 0.005, "edge_ent": 1.0, "feat_size": 1.0, "feat_ent": 0.1}
    EPS = 1e-15
    history = []
    for epoch in range(epochs):
        opt.zero_grad()
        h = X * feat_mask.sigmoid()
        out = model(h, edge_mask.sigmoid())
        log_prob = F.log_softmax(out, dim=-1)
        loss = -log_prob[node, target]
        m_e = edge_mask.sigmoid()
        loss = loss + coeffs["edge_size"] * m_e.sum()
        ent = -m_e * torch.log(m_e + EPS) - (1 - m_e) * torch.log(1 - m_e + EPS)
        loss = loss + coeffs["edge_ent"] * ent.mean()
        m_f = feat_mask.sigmoid()
        loss = loss + coeffs["feat_size"] * m_f.mean()
        ent = -m_f * torch.log(m_f + EPS) - (1 - m_f) * torch.log(1 - m_f + EPS)
        loss = loss + coeffs["feat_ent"] * ent.mean()
        loss.backward()
        opt.step()
        history.append(loss.item())

    # integrated gradients over the edge weights (all-zero graph as the baseline), and feature saliency
    steps = 16
    alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    grads = []
    for a in alphas:
        w = (a * torch.ones(E, dtype=torch.float64)).requires_grad_(True)
        (g,) = torch.autograd.grad(model(X, w)[node, target], w)
        grads.append(g)
    edge_ig = torch.stack(grads).mean(0)
    with torch.no_grad():
        gap = model(X, torch.ones(E, dtype=torch.float64))[node, target] - model(X, torch.zeros(E, dtype=torch.float64))[node, target]
    x = X.clone().requires_grad_(True)
    model(x, torch.ones(E, dtype=torch.float64))[node, target].backward()
    return {"history": history, "edge_mask": edge_mask.detach().sigmoid(), "feat_mask": feat_mask.detach().sigmoid(),
            "edge_ig": edge_ig, "gap": gap, "saliency": x.grad.abs()}


def test_gnn_explainer_and_edge_integrated_gradients():
    ours, _ = run_both(gnn_explainer, rtol=1e-8, atol=1e-11)
    assert abs(ours["edge_ig"].sum() - ours["gap"]) < 0.1 * abs(ours["gap"])  # completeness, up to the midpoint rule
    np.testing.assert_array_equal(ours["saliency"][[6, 7]], 0)  # two layers see two hops: nodes 6 and 7 are farther


# ----------------------------------------------------------------------------------------------
# The most common real-world setting, in float32: a torchvision-style ResNet (BatchNorm in eval, ReLU(inplace=
# True), ``out += identity``) explained by Grad-CAM through a full backward hook on layer4 and a forward hook on
# the last block (the tutorial way), a forward hook on bn2 that keeps its output (which the in-place add then
# changes, as in PyTorch), and Captum-style guided Grad-CAM on top
# ----------------------------------------------------------------------------------------------


def tiny_resnet(m):
    torch, nn = m.torch, m.nn

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            identity = x
            out = self.conv1(x)
            out = self.bn1(out)
            out = self.relu(out)
            out = self.conv2(out)
            out = self.bn2(out)
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            out = self.relu(out)
            return out

    class ResNet(nn.Module):
        def __init__(self, num_classes=4):
            super().__init__()
            self.inplanes = 8
            self.conv1 = nn.Conv2d(3, 8, kernel_size=3, stride=1, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(8, 1)
            self.layer4 = self._make_layer(12, 2, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(12, num_classes)

        def _make_layer(self, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes:
                downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                                           nn.BatchNorm2d(planes))
            layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes
            for _ in range(1, blocks):
                layers.append(BasicBlock(self.inplanes, planes))
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer1(x))
            x = torch.flatten(self.avgpool(x), 1)
            return self.fc(x)

    return ResNet()


def resnet_weights():
    weights = weights_of(tiny_resnet)
    rng = np.random.default_rng(27)
    for k in weights:  # running statistics that are not the identity, as a trained network has
        if k.endswith("running_mean"):
            weights[k] = (rng.standard_normal(weights[k].shape) * 0.1).astype(np.float32)
        elif k.endswith("running_var"):
            weights[k] = rng.uniform(0.5, 1.5, weights[k].shape).astype(np.float32)
    return weights


def resnet_grad_cam(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, tiny_resnet(m), weights).eval()
    X = torch.from_numpy(images(2, seed=28).astype(np.float32))
    gradients, activations, bn2_out = {}, {}, {}

    def backward_hook(module, grad_input, grad_output):
        gradients["value"] = grad_output[0]

    def forward_hook(module, input, output):
        activations["value"] = output

    def keep_bn2(module, input, output):
        bn2_out["value"] = output  # the block's `out += identity` then writes into it

    target_layer = model.layer4
    h1 = target_layer.register_forward_hook(forward_hook)
    h2 = target_layer.register_full_backward_hook(backward_hook)
    h3 = model.layer4[-1].bn2.register_forward_hook(keep_bn2)
    x = X.clone().requires_grad_(True)
    logit = model(x)
    score = logit[:, logit.max(1)[-1]].diag().sum()
    model.zero_grad()
    score.backward(retain_graph=True)
    for h in (h1, h2, h3):
        h.remove()
    b, k, u, v = gradients["value"].size()
    alpha = gradients["value"].view(b, k, -1).mean(2)
    weights_ = alpha.view(b, k, 1, 1)
    saliency_map = (weights_ * activations["value"]).sum(1, keepdim=True)
    saliency_map = F.relu(saliency_map)
    saliency_map = F.interpolate(saliency_map, size=(8, 8), mode="bilinear", align_corners=False)
    saliency_map_min, saliency_map_max = saliency_map.min(), saliency_map.max()
    saliency_map = (saliency_map - saliency_map_min).div(saliency_map_max - saliency_map_min).data

    # guided Grad-CAM: guided backprop by full backward hooks on the ReLU modules (non-in-place copies,
    # as Captum asks), times the CAM
    import copy

    guided_model = copy.deepcopy(model)
    for mod in guided_model.modules():
        if isinstance(mod, nn.ReLU):
            mod.inplace = False
            mod.register_full_backward_hook(lambda mod, gi, go: tuple(F.relu(g) for g in gi))
    xg = X.clone().requires_grad_(True)
    guided_model(xg)[:, 1].sum().backward()
    return {"cam": saliency_map, "activations": activations["value"].detach(), "grads": gradients["value"],
            "bn2_out": bn2_out["value"].detach(), "guided_gradcam": xg.grad * saliency_map,
            "x_grad": x.grad, "fc_grad": model.fc.weight.grad, "conv1_grad": model.conv1.weight.grad}


def test_resnet_grad_cam_float32():
    ours, _ = run_both(resnet_grad_cam, resnet_weights(), rtol=2e-4, atol=1e-6)
    # bn2's kept output went through `out += identity` and the in-place ReLU: the block's output itself
    np.testing.assert_array_equal(ours["bn2_out"], ours["activations"])
    assert ours["cam"].shape == (2, 1, 8, 8)


# ----------------------------------------------------------------------------------------------
# Attention maps out of nn.TransformerEncoder, the way a well-known forum answer does it: each layer's
# self_attn.forward wrapped to force need_weights=True, average_attn_weights=False, and a forward hook on
# self_attn saving output[1] (and calling retain_grad on it, which gets nothing); the maps then rolled out
# ----------------------------------------------------------------------------------------------


def encoder_attention_maps(m, weights):
    torch, nn = m.torch, m.nn
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    encoder = load(m, encoder, weights).double().eval()

    class SaveOutput:
        def __init__(self):
            self.outputs = []

        def __call__(self, module, module_in, module_out):
            module_out[1].retain_grad()
            self.outputs.append(module_out[1])

        def clear(self):
            self.outputs = []

    def patch_attention(m):
        forward_orig = m.forward

        def wrap(*args, **kwargs):
            kwargs["need_weights"] = True
            kwargs["average_attn_weights"] = False
            return forward_orig(*args, **kwargs)

        m.forward = wrap

    save_output = SaveOutput()
    handles = []
    for module in encoder.modules():
        if isinstance(module, nn.MultiheadAttention):
            patch_attention(module)
            handles.append(module.register_forward_hook(save_output))
    x = torch.from_numpy(np.random.default_rng(29).standard_normal((2, 5, 8))).requires_grad_(True)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    out = encoder(x, src_key_padding_mask=mask)
    out[:, 0].sum().backward()
    for h in handles:
        h.remove()
    maps = [o.detach() for o in save_output.outputs]
    # the returned weights are a view made after the output was computed from them: no gradient reaches it
    no_grads = [o.grad is None for o in save_output.outputs]
    result = torch.eye(5, dtype=torch.float64).expand(2, 5, 5)
    for a in maps:
        fused = a.mean(1) + torch.eye(5, dtype=torch.float64)
        result = (fused / fused.sum(-1, keepdim=True)) @ result
    return {"maps": maps, "no_grads": no_grads, "rollout": result, "x_grad": x.grad, "count": len(maps)}


def test_transformer_encoder_attention_maps_by_patched_forward():
    def make(m):
        layer = m.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
        return m.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)

    ours, _ = run_both(encoder_attention_maps, weights_of(make), rtol=1e-9, atol=1e-12)
    assert ours["count"] == 2 and ours["maps"][0].shape == (2, 2, 5, 5) and ours["no_grads"] == [True, True]
    np.testing.assert_array_equal(ours["maps"][1][1, :, :, 3:], 0)  # padded keys get no attention


# ----------------------------------------------------------------------------------------------
# Directional derivatives along a concept direction by forward mode: a forward hook returns the hooked
# activation as a dual tensor (fwAD.make_dual) whose tangent is the direction, and the logits' tangents are
# read by unpack_dual; against the same derivatives by reverse mode
# ----------------------------------------------------------------------------------------------


def forward_mode_directional_derivatives(m, weights):
    torch, nn = m.torch, m.nn
    fwAD = torch.autograd.forward_ad
    model = load(m, cnn(m), weights).double().eval()
    X = torch.from_numpy(images(3))
    direction = torch.from_numpy(np.random.default_rng(31).standard_normal((1, 6, 8, 8)))
    with fwAD.dual_level():
        h = model[1].register_forward_hook(lambda mod, inputs, output: fwAD.make_dual(output.detach(), direction.expand_as(output)))
        out = model(X)
        h.remove()
        primal, tangent = fwAD.unpack_dual(out)
    acts = {}
    h = model[1].register_forward_hook(lambda mod, inputs, output: acts.__setitem__("a", output))
    logits = model(X)
    h.remove()
    reverse = torch.stack([(torch.autograd.grad(logits[:, c].sum(), acts["a"], retain_graph=True)[0] * direction).flatten(1).sum(1)
                           for c in range(4)], dim=1)
    return {"primal": primal, "tangent": tangent, "reverse": reverse, "logits": logits.detach()}


def test_forward_mode_directional_derivatives_through_a_hook():
    ours, _ = run_both(forward_mode_directional_derivatives, weights_of(cnn), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["tangent"], ours["reverse"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["primal"], ours["logits"], rtol=1e-12)
