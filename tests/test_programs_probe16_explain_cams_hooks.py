# ruff: noqa: B007, E501, F841  (the programs are kept as their authors wrote them)
"""Model interpretability as PyTorch users and Captum's sources write it, run as tests/probe16_explain_common.py
says. CAMs and hooks: Grad-CAM++, XGrad-CAM, Layer-CAM; a torchvision-style ResNet's Grad-CAM and guided Grad-CAM in
float32 (in-place ReLU, ``out += identity``); Score-CAM, LayerGradCam and the deletion/insertion curves (stable
argsort, ``torch.quantile``), RISE and a meaningful-perturbation mask that evaluate saliency maps; hook handles
(context managers, prepend, with_kwargs, always_call, pre-hooks replacing inputs)."""

import math

import numpy as np

from .probe16_explain_common import cnn, images, mlp, tabular
from .pytorch_programs import load, run_both, weights_of

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
