# ruff: noqa: B007, E501, E731, UP034  (the programs are kept as their authors wrote them)
"""Adversarial robustness, interpretability and uncertainty as their reference repositories write them, run as
tests/probe11_robust_common.py says. Interpretability: integrated gradients (interpolations in one batch, the
trapezoid rule by hand and by ``torch.trapezoid``, completeness), SmoothGrad, input x gradient, a hidden activation's
gradient by a forward hook registering a tensor hook, occlusion with masks from ``F.fold``, layer integrated
gradients by a hook that replaces the layer's output, DeepLIFT's rescale rule by full backward hooks on ReLU modules,
LRP as Montavon et al.'s tutorial writes it (deepcopy'd layers with rho-modified Parameters, the z^B rule), influence
functions (nimarb's grad_z / hvp / LiSSA with create_graph=True)."""

import numpy as np

from .probe11_robust_common import cnn64, images, mlp, small_cnn, tabular
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Attributions by hand, as Captum computes them: integrated gradients (trapezoid rule, the
# completeness check), SmoothGrad, input x gradient, DeepLIFT's rescale rule by full backward hooks
# on the ReLU modules, a hidden activation's gradient by a forward hook that registers a tensor hook,
# occlusion with masks made by F.fold, layer integrated gradients by a forward hook that replaces
# the layer's output
# ----------------------------------------------------------------------------------------------


def attributions(m, cnn_weights, mlp_weights, steps=32):
    torch, nn, F = m.torch, m.nn, m.F
    model = cnn64(m, cnn_weights).eval()
    Xn, yn = images(4)
    X = torch.from_numpy(Xn)
    target = 2
    out = {}

    # integrated gradients: a batch of interpolations between the baseline and the input
    def integrated_gradients(model, x, target, baseline=None, steps=steps):
        if baseline is None:
            baseline = torch.zeros_like(x)
        alphas = torch.linspace(0, 1, steps + 1, dtype=x.dtype)
        interpolated = baseline + alphas.view(-1, 1, 1, 1) * (x - baseline)
        interpolated.requires_grad_(True)
        logits = model(interpolated)
        grads = torch.autograd.grad(logits[:, target].sum(), interpolated)[0]
        avg_grads = ((grads[:-1] + grads[1:]) / 2.0).mean(dim=0)  # trapezoid rule
        trapz = torch.trapezoid(grads, dx=1.0 / steps, dim=0)
        attributions = (x - baseline) * avg_grads
        with torch.no_grad():
            delta = attributions.sum() - (model(x[None])[0, target] - model(baseline[None])[0, target])
        return attributions, trapz, delta

    ig = [integrated_gradients(model, X[i], target) for i in range(2)]
    out["ig"] = ig

    # SmoothGrad: the average gradient over noisy copies (the noise drawn by NumPy, for both libraries)
    noise = np.random.default_rng(3).standard_normal((8,) + Xn.shape) * 0.15

    def smoothgrad(model, x, target, n_samples=8):
        total = torch.zeros_like(x)
        for i in range(n_samples):
            noisy = (x + torch.from_numpy(noise[i])).requires_grad_()
            score = model(noisy).gather(1, torch.full((len(x), 1), target)).sum()
            score.backward()
            total += noisy.grad
        return total / n_samples

    out["smoothgrad"] = smoothgrad(model, X, target)

    # input x gradient, and the gradient of the predicted class
    x = X.clone().requires_grad_(True)
    logits = model(x)
    pred = logits.argmax(dim=1)
    logits[torch.arange(len(x)), pred].sum().backward()
    out["input_x_gradient"] = x * x.grad

    # a hidden activation and its gradient, caught by a forward hook that registers a tensor hook
    store = {}

    def save_activation(module, inputs, output):
        store["activation"] = output.detach()

        def save_grad(grad):
            store["gradient"] = grad

        output.register_hook(save_grad)

    handle = model[3].register_forward_hook(save_activation)
    model.zero_grad()
    score = model(X)[:, target].sum()
    score.backward()
    handle.remove()
    out["hidden"] = (store["activation"], store["gradient"], (store["activation"] * store["gradient"]).sum(dim=(2, 3)))
    out["conv_grad"] = model[2].weight.grad

    # occlusion: slide a 4x4 patch with stride 2, masks built by F.fold from one-hot columns
    def occlusion(model, x, target, k=4, stride=2, baseline=0.0):
        n, c, H, W = x.shape
        L = ((H - k) // stride + 1) * ((W - k) // stride + 1)
        cols = torch.ones(1, c * k * k, 1, dtype=x.dtype) * torch.eye(L, dtype=x.dtype).view(L, 1, L)
        masks = F.fold(cols, (H, W), kernel_size=k, stride=stride)  # (L, c, H, W)
        counts = F.fold(F.unfold(torch.ones(1, c, H, W, dtype=x.dtype), k, stride=stride), (H, W), k, stride=stride)
        with torch.no_grad():
            base = model(x)[:, target]
            occluded = x.unsqueeze(1) * (1 - masks) + baseline * masks  # (n, L, c, H, W)
            scores = model(occluded.view(-1, c, H, W)).view(n, L, -1)[..., target]
            drop = base.unsqueeze(1) - scores  # (n, L)
            attribution = (drop.view(n, L, 1, 1, 1) * masks).sum(1) / counts
        return attribution, drop

    out["occlusion"] = occlusion(model, X, target)
    # the sliding patches themselves, by Tensor.unfold: each window's mean intensity
    patches = X.unfold(2, 4, 2).unfold(3, 4, 2)
    out["patch_means"] = patches.contiguous().view(*patches.shape[:4], -1).mean(-1)

    # layer integrated gradients: a forward hook that replaces the layer's output by interpolations
    def layer_integrated_gradients(model, layer, x, target, steps=16):
        with torch.no_grad():
            acts = {}
            h = layer.register_forward_hook(lambda mod, inp, o: acts.__setitem__("a", o))
            model(x)
            h.remove()
        act = acts["a"]
        baseline = torch.zeros_like(act)
        alphas = torch.linspace(0, 1, steps + 1, dtype=x.dtype)
        scaled = (baseline + alphas.view(-1, 1, 1, 1) * (act - baseline)).requires_grad_()

        def replace_output(module, inputs, output):
            return scaled

        h = layer.register_forward_hook(replace_output)
        logits = model(x.expand(steps + 1, -1, -1, -1))
        h.remove()
        grads = torch.autograd.grad(logits[:, target].sum(), scaled)[0]
        attr = (act - baseline) * torch.trapezoid(grads, dx=1.0 / steps, dim=0)
        with torch.no_grad():
            zeros_out = model[3:](baseline)[0, target]
            full = model(x)[0, target]
        return attr, attr.sum() - (full - zeros_out)

    out["layer_ig"] = layer_integrated_gradients(model, model[2], X[:1], target)

    # DeepLIFT's rescale rule on an MLP: inputs and baselines in one batch, full backward hooks on
    # the ReLU modules replace the gradient by the multipliers delta_out / delta_in
    net = load(m, mlp(m), mlp_weights).double().eval()
    saved = {}

    def forward_hook(module, inputs, output):
        saved[module] = (inputs[0].detach(), output.detach())

    def backward_hook(module, grad_input, grad_output):
        inp, outp = saved[module]
        half = inp.shape[0] // 2
        delta_in = inp[:half] - inp[half:]
        delta_out = outp[:half] - outp[half:]
        multipliers = torch.where(delta_in.abs() < 1e-10, grad_input[0][:half], grad_output[0][:half] * delta_out / delta_in)
        return (torch.cat([multipliers, multipliers]),)

    handles = []
    for module in net.modules():
        if isinstance(module, nn.ReLU):
            handles.append(module.register_forward_hook(forward_hook))
            handles.append(module.register_full_backward_hook(backward_hook))
    baselines = torch.full_like(X, 0.5)
    inputs = torch.cat([X, baselines]).requires_grad_()
    outputs = net(inputs)
    grads = torch.autograd.grad(outputs[:, target].sum(), inputs)[0]
    for h in handles:
        h.remove()
    deeplift = (X - baselines) * grads[: len(X)]
    with torch.no_grad():
        deltas = deeplift.sum(dim=(1, 2, 3)) - (net(X)[:, target] - net(baselines)[:, target])
    out["deeplift"] = (deeplift, deltas)
    return out


def test_integrated_gradients_smoothgrad_deeplift_occlusion_layer_attribution():
    ours, _ = run_both(attributions, weights_of(small_cnn), weights_of(mlp, seed=1), rtol=1e-9, atol=1e-10)
    X = images(4)[0]
    for i, (attr, trapz, delta) in enumerate(ours["ig"]):
        np.testing.assert_allclose(attr, X[i] * trapz, rtol=1e-12, atol=1e-14)  # torch.trapezoid, the rule by hand
        assert abs(delta) < 5e-3  # completeness, up to the trapezoid rule's error
    attr, delta = ours["layer_ig"]
    assert abs(delta) < 5e-3
    deeplift, deltas = ours["deeplift"]
    np.testing.assert_allclose(deltas, 0, atol=1e-10)  # the rescale rule sums to the difference exactly
    activation, gradient, weights = ours["hidden"]
    assert activation.shape == gradient.shape == (4, 6, 4, 4)
    attribution, drop = ours["occlusion"]
    assert attribution.shape == (4, 1, 8, 8) and drop.shape == (4, 9)


# ----------------------------------------------------------------------------------------------
# Layer-wise relevance propagation as Montavon et al.'s tutorial writes it (heatmapping.org): the
# layers copied by copy.deepcopy with rho-modified nn.Parameters, the four steps (z, s = (R/z).data,
# (z*s).sum().backward(), R = A*c), MaxPool replaced by AvgPool, the z^B rule with lb/hb bounds
# ----------------------------------------------------------------------------------------------


def lrp_cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 12, 2), nn.ReLU(), nn.Conv2d(12, 3, 1))


def lrp(m, weights):
    import copy

    torch, nn = m.torch, m.nn
    model = load(m, lrp_cnn(m), weights).double()
    mean, std = 0.45, 0.25
    Xn, _ = images(2, seed=4)
    X = (torch.from_numpy(Xn) - mean) / std

    def newlayer(layer, g):
        layer = copy.deepcopy(layer)
        try:
            layer.weight = nn.Parameter(g(layer.weight))
        except AttributeError:
            pass
        try:
            layer.bias = nn.Parameter(g(layer.bias))
        except AttributeError:
            pass
        return layer

    layers = list(model.children())
    L = len(layers)
    A = [X] + [None] * L
    for l in range(L):
        A[l + 1] = layers[l].forward(A[l])
    scores = A[-1]
    T = torch.from_numpy((1.0 * (np.arange(3) == 1).reshape([1, 3, 1, 1])))
    R = [None] * L + [(A[-1] * T).data]
    for l in range(1, L)[::-1]:
        A[l] = (A[l].data).requires_grad_(True)
        # (the tutorial spells these torch.nn.*: autograd.nn is not reachable yet, see test_torch_dot_nn_spelling)
        if isinstance(layers[l], nn.MaxPool2d):
            layers[l] = nn.AvgPool2d(2)
        if isinstance(layers[l], nn.Conv2d) or isinstance(layers[l], nn.AvgPool2d):
            if l <= 3:
                rho = lambda p: p + 0.25 * p.clamp(min=0)
                incr = lambda z: z + 1e-9
            if 4 <= l <= 6:
                rho = lambda p: p
                incr = lambda z: z + 1e-9 + 0.25 * ((z ** 2).mean() ** .5).data
            if l >= 7:
                rho = lambda p: p
                incr = lambda z: z + 1e-9
            z = incr(newlayer(layers[l], rho).forward(A[l]))  # step 1
            s = (R[l + 1] / z).data  # step 2
            (z * s).sum().backward()
            c = A[l].grad  # step 3
            R[l] = (A[l] * c).data  # step 4
        else:
            R[l] = R[l + 1]
    A[0] = (A[0].data).requires_grad_(True)
    lb = (A[0].data * 0 + (0 - mean) / std).requires_grad_(True)
    hb = (A[0].data * 0 + (1 - mean) / std).requires_grad_(True)
    z = layers[0].forward(A[0]) + 1e-9  # step 1 (a)
    z -= newlayer(layers[0], lambda p: p.clamp(min=0)).forward(lb)  # step 1 (b)
    z -= newlayer(layers[0], lambda p: p.clamp(max=0)).forward(hb)  # step 1 (c)
    s = (R[1] / z).data  # step 2
    (z * s).sum().backward()
    c, cp, cm = A[0].grad, lb.grad, hb.grad  # step 3
    R[0] = (A[0] * c + lb * cp + hb * cm).data  # step 4
    return {"R": R, "scores": scores.data, "layer_grads": [p.grad for p in model.parameters()]}


def test_lrp_tutorial_rules():
    ours, _ = run_both(lrp, weights_of(lrp_cnn), rtol=1e-8, atol=1e-10)
    R = ours["R"]
    assert R[0].shape == (2, 1, 8, 8)
    # the copies took the gradients, not the model: only the first layer, used itself in the z^B rule, has some
    assert [g is None for g in ours["layer_grads"]] == [False, False] + [True] * 6
    # the ReLU layers pass the relevance through unchanged
    for l in (1, 4, 7):
        np.testing.assert_array_equal(R[l], R[l + 1])


# ----------------------------------------------------------------------------------------------
# Influence functions (Koh and Liang, as nimarb/pytorch_influence_functions writes them): grad_z with
# create_graph=True, Hessian-vector products by double backward, the LiSSA recursion for s_test,
# against the exact damped inverse Hessian
# ----------------------------------------------------------------------------------------------


def influence(m, weights, recursion_depth=6, damp=0.2, scale=5.0):
    torch, nn, F, data = m.torch, m.nn, m.F, m.data
    grad = torch.autograd.grad
    model = load(m, nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4)), weights).double()
    Xn, yn = tabular(40, seed=9)
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)
    z_loader = data.DataLoader(data.TensorDataset(X, y), batch_size=40, shuffle=False)

    def calc_loss(y, t):
        y = F.log_softmax(y, dim=1)  # torch.nn.functional in the repository
        loss = F.nll_loss(y, t, weight=None, reduction="mean")
        return loss

    def grad_z(z, t, model):
        model.eval()
        y = model(z)
        loss = calc_loss(y, t)
        params = [p for p in model.parameters() if p.requires_grad]
        return list(grad(loss, params, create_graph=True))

    def hvp(y, w, v):
        if len(w) != len(v):
            raise (ValueError("w and v must have the same length."))
        # First backprop
        first_grads = grad(y, w, retain_graph=True, create_graph=True)
        # Elementwise products
        elemwise_products = 0
        for grad_elem, v_elem in zip(first_grads, v):
            elemwise_products += torch.sum(grad_elem * v_elem)
        # Second backprop
        return_grads = grad(elemwise_products, w, create_graph=True)
        return return_grads

    def s_test(z_test, t_test, model, z_loader, damp=0.01, scale=25.0, recursion_depth=5000):
        v = grad_z(z_test, t_test, model)
        h_estimate = v.copy()
        for i in range(recursion_depth):
            for x, t in z_loader:
                y = model(x)
                loss = calc_loss(y, t)
                params = [p for p in model.parameters() if p.requires_grad]
                hv = hvp(loss, params, h_estimate)
                # Recursively caclulate h_estimate
                h_estimate = [_v + (1 - damp) * _h_e - _hv / scale for _v, _h_e, _hv in zip(v, h_estimate, hv)]
                break
        return [h.detach() / scale for h in h_estimate]

    z_test, t_test = X[:1] + 0.3, y[:1]
    s = s_test(z_test, t_test, model, z_loader, damp=damp, scale=scale, recursion_depth=recursion_depth)
    s_flat = torch.cat([h.reshape(-1) for h in s])
    # the influence of each of the first training points on the test loss
    influences = []
    for i in range(5):
        g = grad_z(X[i:i + 1], y[i:i + 1], model)
        influences.append(-sum(torch.sum(k * j) for k, j in zip(g, s)).item() / len(X))
    # the exact damped inverse, from the full Hessian by torch.autograd.functional.hessian
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    names = [n for n, _ in model.named_parameters()]

    def loss_of(theta):
        params = dict(zip(names, [t.view(s) for t, s in zip(theta.split(sizes), shapes)]))
        return calc_loss(torch.func.functional_call(model, params, (X,)), y)

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    H = torch.autograd.functional.hessian(loss_of, theta)
    v = torch.cat([g.detach().reshape(-1) for g in grad_z(z_test, t_test, model)])
    exact = torch.linalg.solve(H + damp * scale * torch.eye(len(theta), dtype=H.dtype), v)
    return {"s_test": s_flat, "exact": exact, "influences": influences, "H": H, "v": v}


def test_influence_functions_lissa():
    ours, _ = run_both(influence, weights_of(lambda m: m.nn.Sequential(m.nn.Linear(5, 6), m.nn.Tanh(), m.nn.Linear(6, 4)),
                                               seed=4), rtol=1e-8, atol=1e-11)
    # the repository's create_graph=True keeps v and each h_estimate on the graph, so each "hvp" also differentiates
    # through their dependence on the weights (third derivatives): not H h, and its cost doubles each step, on
    # PyTorch as here. The comparison above is the check; here, that it is finite and shaped like the weights.
    assert ours["s_test"].shape == ours["v"].shape == (64,) and np.isfinite(ours["s_test"]).all()
    assert len(ours["influences"]) == 5
