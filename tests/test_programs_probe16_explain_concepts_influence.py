# ruff: noqa: B007, E501, F841  (the programs are kept as their authors wrote them)
"""Model interpretability as PyTorch users and Captum's sources write it, run as tests/probe16_explain_common.py
says. Concepts, data and representations: TCAV, lucent's Fourier-parameterised feature visualisation, CKA / SVCCA /
RSA / a ridge probe, TracIn, EK-FAC and TRAK influence, DiCE and Wachter counterfactuals."""

import math

import numpy as np

from .probe16_explain_common import cnn, images, mlp
from .pytorch_programs import load, run_both, weights_of

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
