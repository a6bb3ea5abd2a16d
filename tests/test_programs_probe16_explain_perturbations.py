# ruff: noqa: E501, F841  (the programs are kept as their authors wrote them)
"""Model interpretability as PyTorch users and Captum's sources write it, run as tests/probe16_explain_common.py
says. Perturbations and metrics: occlusion by ``F.unfold``/``F.fold``, feature ablation, Shapley sampling, KernelSHAP
(``linalg.lstsq``), LIME; Captum's sensitivity_max / infidelity / FeaturePermutation / KernelShap sampler."""

import math

import numpy as np

from .probe16_explain_common import cnn, images, mlp, tabular
from .pytorch_programs import load, run_both, weights_of

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
