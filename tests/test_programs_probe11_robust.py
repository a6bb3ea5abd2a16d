# ruff: noqa: B007, B008, B023, E501, E731, E741, F841, E721, UP004, UP008, UP031, UP034  (the programs are kept as their authors wrote them)
"""Adversarial robustness, interpretability and uncertainty as their reference repositories write
them (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and
data in float64, comparing values, gradients and parameters.

Adversarial: PGD with a random start (Madry et al.; ``torch.autograd.grad(loss, [x_adv])``, projection
by ``torch.min(torch.max(...))``), PGD-L2 as torchattacks writes it (per-sample norms by
``view(n, -1).norm(dim=1)``), TRADES (``KLDivLoss(size_average=False)``, ``model.eval()`` during the
attack, its L2 branch's ``optim.SGD`` over the perturbation with ``renorm_``), an adversarial training
loop with both, Carlini-Wagner L2 (one-hot masks, ``optim.Adam`` over a tanh-space perturbation) and
DeepFool (per-class gradients, ``x.grad.zero_()`` between ``backward(retain_graph=True)`` calls).
Interpretability: integrated gradients (interpolations in one batch, the trapezoid rule by hand and by
``torch.trapezoid``, completeness), SmoothGrad, input x gradient, a hidden activation's gradient by a forward
hook registering a tensor hook, occlusion with masks from ``F.fold``, layer integrated gradients by a hook that
replaces the layer's output, DeepLIFT's rescale rule by full backward hooks on ReLU modules, LRP as Montavon
et al.'s tutorial writes it (deepcopy'd layers with rho-modified Parameters, the z^B rule), influence functions
(nimarb's grad_z / hvp / LiSSA with create_graph=True).
Uncertainty: MC dropout (``Module.apply`` switching Dropout alone to train, entropy and mutual information),
temperature scaling (gpleiss: ``_ECELoss``, ``optim.LBFGS``; a log-temperature by strong Wolfe), ECE by
``bucketize`` / ``bincount`` / ``histc`` / ``scatter_add_``, a deep ensemble of Gaussian regressors with FGSM
training, a last-layer Laplace approximation (``torch.autograd.functional.hessian`` over (W, b) against the GGN
by einsum, ``linalg.inv`` / ``cholesky`` / ``cholesky_inverse``, the GLM predictive by ``functional.jacobian``,
the prior precision by the marginal likelihood), evidential regression and classification losses (lgamma,
digamma, float32 constants beside float64 evidence), SNGP as y0ast/DUE writes it (both spectral_norm forms,
random Fourier features from QR blocks, the precision under no_grad, ``cholesky_ex``, ``cholesky_inverse(out=)``),
and out-of-distribution scores (ODIN's ``torch.add(x, -eps, gradient)``, the Mahalanobis detector, energy,
GradNorm)."""

import math

import numpy as np

from .pytorch_programs import OURS, assert_same, load, run_both, weights_of


def small_cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1),
                         nn.Tanh(), nn.Flatten(), nn.Linear(6 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 3))


def cnn64(m, weights):
    model = load(m, small_cnn(m), weights).double()
    return model


def images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.05, 0.95, (n, 1, 8, 8))
    y = rng.integers(0, 3, n)
    return X, y


# ----------------------------------------------------------------------------------------------
# PGD (Madry et al.'s random start), PGD-L2 (torchattacks), TRADES (yaodongyu/TRADES) and an
# adversarial training loop that uses them
# ----------------------------------------------------------------------------------------------


def pgd_programs(m, weights, starts=None, epochs=2):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_numpy = torch.from_numpy
    Variable = torch.autograd.Variable
    model = cnn64(m, weights)
    Xn, yn = images()
    X, y = from_numpy(Xn), from_numpy(yn)
    rng = np.random.default_rng(1)
    shared = {"linf": rng.uniform(-1, 1, (epochs + 1,) + Xn.shape), "l2": rng.standard_normal((epochs + 1,) + Xn.shape),
              "l2r": rng.uniform(0, 1, (epochs + 1, len(Xn), 1, 1, 1)), "trades": rng.standard_normal((epochs + 1,) + Xn.shape)}

    def start(kind, i, x, eps):
        if starts is None:  # the authors' own random start
            if kind == "linf":
                return torch.empty_like(x).uniform_(-eps, eps)
            return torch.randn(x.shape, dtype=x.dtype)
        return from_numpy(shared[kind][i] * (eps if kind == "linf" else 1.0))

    def pgd_linf(model, x, y, eps=0.1, alpha=0.03, steps=5, i=0):
        x_adv = x.detach() + start("linf", i, x, eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
        for _ in range(steps):
            x_adv.requires_grad_()
            with torch.enable_grad():
                loss = F.cross_entropy(model(x_adv), y)
            grad = torch.autograd.grad(loss, [x_adv])[0]
            x_adv = x_adv.detach() + alpha * torch.sign(grad.detach())
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
            x_adv = torch.clamp(x_adv, 0.0, 1.0)
        return x_adv

    def pgd_l2(model, images, labels, eps=0.5, alpha=0.2, steps=5, eps_for_division=1e-10, i=0):
        loss = nn.CrossEntropyLoss()
        adv_images = images.clone().detach()
        batch_size = len(images)
        # random start
        delta = start("l2", i, adv_images, eps) if starts is not None else torch.empty_like(adv_images).normal_()
        d_flat = delta.view(adv_images.size(0), -1)
        n = d_flat.norm(p=2, dim=1).view(adv_images.size(0), 1, 1, 1)
        r = torch.zeros_like(n).uniform_(0, 1) if starts is None else from_numpy(shared["l2r"][i])
        delta *= r / n * eps
        adv_images = torch.clamp(adv_images + delta, min=0, max=1).detach()
        for _ in range(steps):
            adv_images.requires_grad = True
            outputs = model(adv_images)
            cost = loss(outputs, labels)
            grad = torch.autograd.grad(cost, adv_images, retain_graph=False, create_graph=False)[0]
            grad_norms = torch.norm(grad.view(batch_size, -1), p=2, dim=1) + eps_for_division
            grad = grad / grad_norms.view(batch_size, 1, 1, 1)
            adv_images = adv_images.detach() + alpha * grad
            delta = adv_images - images
            delta_norms = torch.norm(delta.view(batch_size, -1), p=2, dim=1)
            factor = eps / delta_norms
            factor = torch.min(factor, torch.ones_like(delta_norms))
            delta = delta * factor.view(-1, 1, 1, 1)
            adv_images = torch.clamp(images + delta, min=0, max=1).detach()
        return adv_images

    def trades_loss(model, x_natural, y, optimizer, step_size=0.03, epsilon=0.1, perturb_steps=4, beta=6.0,
                    distance="l_inf", i=0):
        # define KL-loss
        criterion_kl = nn.KLDivLoss(size_average=False)
        model.eval()
        batch_size = len(x_natural)
        # generate adversarial example
        x_adv = x_natural.detach() + 0.001 * start("trades", i, x_natural, epsilon).detach()
        if distance == "l_inf":
            for _ in range(perturb_steps):
                x_adv.requires_grad_()
                with torch.enable_grad():
                    loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1))
                grad = torch.autograd.grad(loss_kl, [x_adv])[0]
                x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
                x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
                x_adv = torch.clamp(x_adv, 0.0, 1.0)
        elif distance == "l_2":
            delta = 0.001 * start("trades", i, x_natural, epsilon).detach()
            delta = Variable(delta.data, requires_grad=True)
            # Setup optimizers
            optimizer_delta = optim.SGD([delta], lr=epsilon / perturb_steps * 2)
            for _ in range(perturb_steps):
                adv = x_natural + delta
                # optimize
                optimizer_delta.zero_grad()
                with torch.enable_grad():
                    loss = (-1) * criterion_kl(F.log_softmax(model(adv), dim=1), F.softmax(model(x_natural), dim=1))
                loss.backward()
                # renorming gradient
                grad_norms = delta.grad.view(batch_size, -1).norm(p=2, dim=1)
                delta.grad.div_(grad_norms.view(-1, 1, 1, 1))
                # avoid nan or inf if gradient is 0
                if (grad_norms == 0).any():
                    delta.grad[grad_norms == 0] = torch.randn_like(delta.grad[grad_norms == 0])
                optimizer_delta.step()
                # projection
                delta.data.add_(x_natural)
                delta.data.clamp_(0, 1).sub_(x_natural)
                delta.data.renorm_(p=2, dim=0, maxnorm=epsilon)
            x_adv = Variable(x_natural + delta, requires_grad=False)
        else:
            x_adv = torch.clamp(x_adv, 0.0, 1.0)
        model.train()
        x_adv = Variable(torch.clamp(x_adv, 0.0, 1.0), requires_grad=False)
        # zero gradient
        optimizer.zero_grad()
        # calculate robust loss
        logits = model(x_natural)
        loss_natural = F.cross_entropy(logits, y)
        loss_robust = (1.0 / batch_size) * criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1))
        loss = loss_natural + beta * loss_robust
        return loss, x_adv

    out = {}
    # the attacks on the untrained model, and their success
    x_linf = pgd_linf(model, X, y)
    x_l2 = pgd_l2(model, X, y)
    with torch.no_grad():
        out["attacks"] = [x_linf, x_l2, model(x_linf).argmax(1), model(x_l2).argmax(1),
                          (x_linf - X).abs().amax(dim=(1, 2, 3)), (x_l2 - X).view(len(X), -1).norm(dim=1)]
    # TRADES (both distances) and Madry's adversarial training, alternating
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    log = []
    for epoch in range(epochs):
        for distance in ("l_inf", "l_2"):
            loss, x_adv = trades_loss(model, X, y, optimizer, distance=distance, i=epoch)
            loss.backward()
            optimizer.step()
            log.append(loss.item())
            out[f"trades_{distance}_{epoch}"] = x_adv
        model.eval()
        x_adv = pgd_linf(model, X, y, i=epoch + 1)
        x_adv2 = pgd_l2(model, X, y, i=epoch + 1)
        model.train()
        optimizer.zero_grad()
        loss = 0.5 * (F.cross_entropy(model(x_adv), y) + F.cross_entropy(model(x_adv2), y))
        loss.backward()
        optimizer.step()
        log.append(loss.item())
    out["log"] = log
    out["params"] = [p.detach() for p in model.parameters()]
    out["grads"] = [p.grad for p in model.parameters()]
    return out


def test_pgd_linf_l2_trades_and_adversarial_training():
    weights = weights_of(small_cnn)
    ours, _ = run_both(pgd_programs, weights, starts="numpy", rtol=1e-9, atol=1e-10)
    X, _ = images()
    x_linf, x_l2 = ours["attacks"][:2]
    assert (x_linf >= 0).all() and (x_linf <= 1).all() and np.abs(x_linf - X).max() <= 0.1 + 1e-12
    assert np.linalg.norm((x_l2 - X).reshape(6, -1), axis=1).max() <= 0.5 + 1e-9
    delta = (ours["trades_l_2_1"] - X).reshape(6, -1)
    assert np.linalg.norm(delta, axis=1).max() <= 0.1 + 1e-9  # renorm_ kept each sample in the L2 ball


def test_pgd_random_starts_stay_in_their_balls():
    """The authors' own random starts (``uniform_``, ``normal_``, ``randn``), on chainrule alone."""
    OURS.torch.manual_seed(0)
    ours = pgd_programs(OURS, weights_of(small_cnn), starts=None, epochs=1)
    X, _ = images()
    x_linf, x_l2 = (a.numpy() for a in ours["attacks"][:2])
    assert np.abs(x_linf - X).max() <= 0.1 + 1e-12 and np.linalg.norm((x_l2 - X).reshape(6, -1), axis=1).max() <= 0.5 + 1e-9
    assert all(np.isfinite(v) for v in ours["log"])


# ----------------------------------------------------------------------------------------------
# Carlini-Wagner L2 (torchattacks' CW: Adam over w in tanh space, one-hot masks) and DeepFool
# (LTS4/DeepFool: per-class gradients by zeroing the input's grad between retained backwards)
# ----------------------------------------------------------------------------------------------


def cw_and_deepfool(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Variable = torch.autograd.Variable
    model = cnn64(m, weights).eval()
    Xn, yn = images()
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)

    class CW:
        def __init__(self, model, c=1, kappa=0, steps=30, lr=0.05):
            self.model, self.c, self.kappa, self.steps, self.lr = model, c, kappa, steps, lr

        def forward(self, images, labels):
            images = images.clone().detach()
            labels = labels.clone().detach()
            # w = torch.zeros_like(images).detach() # Requires 2x times
            w = self.inverse_tanh_space(images).detach()
            w.requires_grad = True
            best_adv_images = images.clone().detach()
            best_L2 = 1e10 * torch.ones((len(images))).double()
            prev_cost = 1e10
            dim = len(images.shape)
            MSELoss = nn.MSELoss(reduction="none")
            Flatten = nn.Flatten()
            optimizer = optim.Adam([w], lr=self.lr)
            costs = []
            for step in range(self.steps):
                # Get adversarial images
                adv_images = self.tanh_space(w)
                # Calculate loss
                current_L2 = MSELoss(Flatten(adv_images), Flatten(images)).sum(dim=1)
                L2_loss = current_L2.sum()
                outputs = self.model(adv_images)
                f_loss = self.f(outputs, labels).sum()
                cost = L2_loss + self.c * f_loss
                optimizer.zero_grad()
                cost.backward()
                optimizer.step()
                costs.append(cost.item())
                # Update adversarial images
                pre = torch.argmax(outputs.detach(), 1)
                condition = (pre != labels).float()
                # filter out images that get either correct predictions or non-decreasing loss,
                # i.e., only images that are both misclassified and loss-decreasing are left
                mask = condition * (best_L2 > current_L2.detach())
                best_L2 = mask * current_L2.detach() + (1 - mask) * best_L2
                mask = mask.view([-1] + [1] * (dim - 1))
                best_adv_images = mask * adv_images.detach() + (1 - mask) * best_adv_images
                # Early stop when loss does not converge.
                if step % max(self.steps // 10, 1) == 0:
                    if cost.item() > prev_cost:
                        return best_adv_images, best_L2, costs, w
                    prev_cost = cost.item()
            return best_adv_images, best_L2, costs, w

        def tanh_space(self, x):
            return 1 / 2 * (torch.tanh(x) + 1)

        def inverse_tanh_space(self, x):
            # torch.atanh is only for torch >= 1.7.0
            # atanh is defined in the range -1 to 1
            return self.atanh(torch.clamp(x * 2 - 1, min=-1, max=1))

        def atanh(self, x):
            return 0.5 * torch.log((1 + x) / (1 - x))

        # f-function in the paper
        def f(self, outputs, labels):
            one_hot_labels = torch.eye(outputs.shape[1]).double()[labels]
            # find the max logit other than the target class, the older repositories by a large negative mask
            other = torch.max((1 - one_hot_labels) * outputs - one_hot_labels * 1e4, dim=1)[0]
            # get the target class's logit
            real = torch.max(one_hot_labels * outputs, dim=1)[0]
            return torch.clamp((real - other), min=-self.kappa)

    cw = CW(model, c=2.0)
    best, best_L2, costs, w = cw.forward(X, y)

    def deepfool(image, net, num_classes=3, overshoot=0.02, max_iter=10):
        f_image = net.forward(Variable(image[None, :, :, :], requires_grad=True)).data.numpy().flatten()
        I = (np.array(f_image)).flatten().argsort()[::-1]
        I = I[0:num_classes]
        label = I[0]
        input_shape = image.numpy().shape
        pert_image = image.clone()
        w = np.zeros(input_shape)
        r_tot = np.zeros(input_shape)
        loop_i = 0
        x = Variable(pert_image[None, :], requires_grad=True)
        fs = net.forward(x)
        k_i = label
        while k_i == label and loop_i < max_iter:
            pert = np.inf
            fs[0, I[0]].backward(retain_graph=True)
            grad_orig = x.grad.data.numpy().copy()
            for k in range(1, num_classes):
                x.grad.zero_()
                fs[0, I[k]].backward(retain_graph=True)
                cur_grad = x.grad.data.numpy().copy()
                # set new w_k and new f_k
                w_k = cur_grad - grad_orig
                f_k = (fs[0, I[k]] - fs[0, I[0]]).data.numpy()
                pert_k = abs(f_k) / np.linalg.norm(w_k.flatten())
                # determine which w_k to use
                if pert_k < pert:
                    pert = pert_k
                    w = w_k
            # compute r_i and r_tot
            # Added 1e-4 for numerical stability
            r_i = (pert + 1e-4) * w / np.linalg.norm(w)
            r_tot = r_tot + r_i
            pert_image = image + (1 + overshoot) * torch.from_numpy(r_tot)
            x = Variable(pert_image, requires_grad=True)
            fs = net.forward(x)
            k_i = np.argmax(fs.data.numpy().flatten())
            loop_i += 1
        r_tot = (1 + overshoot) * r_tot
        return r_tot, loop_i, int(label), int(k_i), pert_image

    fooled = [deepfool(X[i], model) for i in range(3)]
    return {"cw": [best, best_L2, costs, w.detach(), w.grad], "deepfool": fooled}


def test_carlini_wagner_and_deepfool():
    # CW's f = max(real - other, -kappa) has kinks (kappa = 0, ties between the other classes' logits): once a step
    # lands near one, a last-bit difference picks a side and the trajectories part (1e-4 after a few steps). The
    # first steps and DeepFool are compared tightly; the rest of CW's costs only as a trajectory.
    weights = weights_of(small_cnn)
    ours, theirs = run_both(cw_and_deepfool, weights, compare=False)
    if theirs is not None:
        assert_same(ours["cw"][2][:2], theirs["cw"][2][:2], rtol=1e-9, atol=1e-10)
        assert_same(ours["deepfool"], theirs["deepfool"], rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(ours["cw"][2], theirs["cw"][2], rtol=1e-2)
    best, best_L2, costs = ours["cw"][:3]
    assert len(costs) >= 2 and (best >= 0).all() and (best <= 1).all()
    for r_tot, loop_i, label, k_i, pert_image in ours["deepfool"]:
        assert k_i != label or loop_i == 10  # DeepFool stopped when the label changed


# ----------------------------------------------------------------------------------------------
# Attributions by hand, as Captum computes them: integrated gradients (trapezoid rule, the
# completeness check), SmoothGrad, input x gradient, DeepLIFT's rescale rule by full backward hooks
# on the ReLU modules, a hidden activation's gradient by a forward hook that registers a tensor hook,
# occlusion with masks made by F.fold, layer integrated gradients by a forward hook that replaces
# the layer's output
# ----------------------------------------------------------------------------------------------


def mlp(m):
    nn = m.nn
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 20), nn.ReLU(), nn.Linear(20, 12), nn.ReLU(), nn.Linear(12, 3))


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
# Uncertainty: MC dropout (Gal; dropout switched on by Module.apply under eval), temperature scaling
# (gpleiss/temperature_scaling: _ECELoss, LBFGS on the NLL), ECE by torch.bucketize / histc, a deep
# ensemble (Lakshminarayanan et al.: Gaussian NLL heads, a mixture's mean and variance)
# ----------------------------------------------------------------------------------------------


def dropout_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(5, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 32), nn.ReLU(),
                         nn.Dropout(0.3), nn.Linear(32, 4))


def tabular(n=96, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    w = rng.standard_normal((5, 4))
    y = (X @ w + 0.8 * rng.standard_normal((n, 4))).argmax(1)
    return X, y


def mc_dropout_and_calibration(m, weights, masks=None, T=6):
    torch, nn, F, optim, data = m.torch, m.nn, m.F, m.optim, m.data
    model = load(m, dropout_net(m), weights).double()
    Xn, yn = tabular()
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)
    # a little training first, so that the model is overconfident
    opt = optim.Adam(model.parameters(), lr=0.02)
    train_masks = None if masks is None else masks["train"]
    hooks = []
    if masks is not None:  # the same dropout masks on both libraries: a forward hook replaces each Dropout's output
        state = {"pass": 0}

        def fixed_mask(module, inputs, output):
            if not module.training:
                return output
            mask = torch.from_numpy(masks["bank"][state["pass"] % len(masks["bank"])][module.slot][: len(inputs[0])])
            return inputs[0] * mask / (1 - module.p)

        for slot, module in enumerate(mod for mod in model.modules() if isinstance(mod, nn.Dropout)):
            module.slot = slot
            hooks.append(module.register_forward_hook(fixed_mask))
    for step in range(25):
        model.train()
        if masks is not None:
            state["pass"] = step
        opt.zero_grad()
        loss = F.cross_entropy(model(X[:64]), y[:64])
        loss.backward()
        opt.step()

    def enable_dropout(m):
        for each_module in m.modules():
            if each_module.__class__.__name__.startswith("Dropout"):
                each_module.train()

    # MC dropout: eval mode (BatchNorm uses its running statistics), dropout alone switched back on
    model.eval()
    model.apply(lambda mod: mod.train() if type(mod) == nn.Dropout else None)
    modes = [mod.training for mod in model.modules()]
    running_mean = model[1].running_mean.clone()
    with torch.no_grad():
        probs = []
        for t in range(T):
            if masks is not None:
                state["pass"] = 100 + t
            probs.append(F.softmax(model(X[64:]), dim=1))
        probs = torch.stack(probs)  # (T, N, C)
    assert torch.equal(running_mean, model[1].running_mean)
    mean = probs.mean(0)
    predictive_entropy = -(mean * torch.log(mean + 1e-12)).sum(dim=1)
    expected_entropy = -(probs * torch.log(probs + 1e-12)).sum(dim=2).mean(0)
    mutual_info = predictive_entropy - expected_entropy
    variance = probs.var(0, unbiased=False).sum(1)
    model.eval()
    enable_dropout(model)
    modes2 = [mod.training for mod in model.modules()]
    for h in hooks:
        h.remove()
    model.eval()

    # temperature scaling on a validation loader
    class ModelWithTemperature(nn.Module):
        def __init__(self, model):
            super(ModelWithTemperature, self).__init__()
            self.model = model
            self.temperature = nn.Parameter(torch.ones(1, dtype=torch.float64) * 1.5)

        def forward(self, input):
            logits = self.model(input)
            return self.temperature_scale(logits)

        def temperature_scale(self, logits):
            # Expand temperature to match the size of logits
            temperature = self.temperature.unsqueeze(1).expand(logits.size(0), logits.size(1))
            return logits / temperature

        def set_temperature(self, valid_loader):
            nll_criterion = nn.CrossEntropyLoss()
            ece_criterion = _ECELoss()
            # First: collect all the logits and labels for the validation set
            logits_list = []
            labels_list = []
            with torch.no_grad():
                for input, label in valid_loader:
                    logits = self.model(input)
                    logits_list.append(logits)
                    labels_list.append(label)
                logits = torch.cat(logits_list)
                labels = torch.cat(labels_list)
            # Calculate NLL and ECE before temperature scaling
            before_temperature_nll = nll_criterion(logits, labels).item()
            before_temperature_ece = ece_criterion(logits, labels).item()
            # Next: optimize the temperature w.r.t. NLL
            optimizer = optim.LBFGS([self.temperature], lr=0.01, max_iter=50)

            def eval():
                optimizer.zero_grad()
                loss = nll_criterion(self.temperature_scale(logits), labels)
                loss.backward()
                return loss

            optimizer.step(eval)
            # Calculate NLL and ECE after temperature scaling
            after_temperature_nll = nll_criterion(self.temperature_scale(logits), labels).item()
            after_temperature_ece = ece_criterion(self.temperature_scale(logits), labels).item()
            return self, (before_temperature_nll, before_temperature_ece, after_temperature_nll, after_temperature_ece)

    class _ECELoss(nn.Module):
        def __init__(self, n_bins=15):
            super(_ECELoss, self).__init__()
            bin_boundaries = torch.linspace(0, 1, n_bins + 1)
            self.bin_lowers = bin_boundaries[:-1]
            self.bin_uppers = bin_boundaries[1:]

        def forward(self, logits, labels):
            softmaxes = F.softmax(logits, dim=1)
            confidences, predictions = torch.max(softmaxes, 1)
            accuracies = predictions.eq(labels)
            ece = torch.zeros(1, device=logits.device)
            for bin_lower, bin_upper in zip(self.bin_lowers, self.bin_uppers):
                # Calculated |confidence - accuracy| in each bin
                in_bin = confidences.gt(bin_lower.item()) * confidences.le(bin_upper.item())
                prop_in_bin = in_bin.float().mean()
                if prop_in_bin.item() > 0:
                    accuracy_in_bin = accuracies[in_bin].float().mean()
                    avg_confidence_in_bin = confidences[in_bin].mean()
                    ece += torch.abs(avg_confidence_in_bin - accuracy_in_bin) * prop_in_bin
            return ece

    valid_loader = data.DataLoader(data.TensorDataset(X[64:], y[64:]), batch_size=10, shuffle=False)
    scaled, report = ModelWithTemperature(model).set_temperature(valid_loader)

    # the same ECE vectorised: bins by torch.bucketize, counts by bincount / histc, sums by scatter_add_
    def ece_bucketize(logits, labels, n_bins=15):
        confidences, predictions = F.softmax(logits, dim=1).max(1)
        accuracies = predictions.eq(labels).to(logits.dtype)
        boundaries = torch.linspace(0, 1, n_bins + 1, dtype=logits.dtype)
        bins = torch.bucketize(confidences, boundaries[1:-1], right=False)  # (lower, upper] as _ECELoss
        counts = torch.bincount(bins, minlength=n_bins).to(logits.dtype)
        hist = torch.histc(confidences, bins=n_bins, min=0, max=1)
        conf_sum = torch.zeros(n_bins, dtype=logits.dtype).scatter_add_(0, bins, confidences)
        acc_sum = torch.zeros(n_bins, dtype=logits.dtype).index_add_(0, bins, accuracies)
        nonempty = counts > 0
        gaps = (conf_sum[nonempty] / counts[nonempty] - acc_sum[nonempty] / counts[nonempty]).abs()
        return (gaps * counts[nonempty]).sum() / len(labels), counts, hist

    with torch.no_grad():
        logits = model(X[64:])
        ece_vec = ece_bucketize(logits, y[64:])
        ece_loop = _ECELoss()(logits, y[64:])

    # a log-temperature fitted by LBFGS with the strong Wolfe line search
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    lbfgs = optim.LBFGS([log_t], lr=1, max_iter=30, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), y[64:])
        loss.backward()
        return loss

    lbfgs.step(closure)
    return {"modes": (modes, modes2), "probs": probs, "entropy": predictive_entropy, "mi": mutual_info, "var": variance,
            "temperature": scaled.temperature.detach(), "report": report, "ece": (ece_loop, ece_vec),
            "log_t": log_t.detach(), "log_t_grad": log_t.grad, "params": [p.detach() for p in model.parameters()]}


def dropout_masks():
    rng = np.random.default_rng(5)
    return {"train": None, "bank": [[(rng.random((96, 32)) > 0.3).astype(np.float64) for _ in range(2)] for _ in range(200)]}


def test_mc_dropout_temperature_scaling_and_ece():
    ours, _ = run_both(mc_dropout_and_calibration, weights_of(dropout_net), masks=dropout_masks(), rtol=1e-7,
                       atol=1e-10)  # (LBFGS's line search amplifies float64 rounding)
    modes, modes2 = ours["modes"]
    # only the Dropout modules train: Sequential, Linear, BatchNorm1d, ReLU, Dropout, ...
    assert modes == modes2 == [False, False, False, False, True, False, False, True, False]
    assert (ours["mi"] >= -1e-12).all() and (ours["entropy"] >= ours["mi"] - 1e-12).all()
    ece_loop, (ece_vec, counts, hist) = ours["ece"]
    np.testing.assert_allclose(ece_loop, ece_vec, rtol=1e-6)  # _ECELoss accumulates in float32
    np.testing.assert_allclose(counts, hist)
    before_nll, before_ece, after_nll, after_ece = ours["report"]
    assert after_nll <= before_nll
    # the temperature the strong-Wolfe LBFGS found is where the NLL's gradient vanishes
    assert abs(ours["log_t_grad"][0]) < 1e-5


def test_mc_dropout_samples_differ_on_chainrule_alone():
    OURS.torch.manual_seed(0)
    out = mc_dropout_and_calibration(OURS, weights_of(dropout_net))
    probs = out["probs"].numpy()
    assert not np.allclose(probs[0], probs[1]) and (out["mi"].numpy() > 0).any()


# ----------------------------------------------------------------------------------------------
# A deep ensemble of Gaussian regressors (Lakshminarayanan et al.: softplus variance, the Gaussian
# NLL by hand and by nn.GaussianNLLLoss, FGSM examples in training, the mixture's mean and variance)
# and a last-layer Laplace approximation (the Hessian by torch.autograd.functional.hessian, the
# covariance by torch.linalg.inv / cholesky, the probit and Monte-Carlo predictives, the prior
# precision by the marginal likelihood)
# ----------------------------------------------------------------------------------------------


def gaussian_mlp(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(1, 24), nn.Tanh(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 2))


def ensemble(m, weights_list, steps=30):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(7)
    xn = rng.uniform(-3, 3, (40, 1))
    yn = xn ** 3 / 10 + rng.standard_normal((40, 1)) * (0.2 + 0.1 * np.abs(xn))
    x, y = torch.from_numpy(xn), torch.from_numpy(yn)
    x_test = torch.linspace(-5, 5, 11, dtype=torch.float64).unsqueeze(1)

    class GaussianMLP(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            output = self.net(x)
            mean, variance = torch.split(output, 1, dim=1)
            variance = F.softplus(variance) + 1e-6
            return mean, variance

    def nll_criterion(mean, var, y):
        return (torch.log(var) / 2 + (y - mean) ** 2 / (2 * var)).mean()

    members = [GaussianMLP(load(m, gaussian_mlp(m), w).double()) for w in weights_list]
    log = []
    eps = 0.01 * 6  # 1% of the input range
    gnll = nn.GaussianNLLLoss(eps=1e-6)
    for model in members:
        opt = optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-4)
        for step in range(steps):
            # FGSM adversarial examples for the proper scoring rule
            x_ = x.clone().requires_grad_(True)
            mean, var = model(x_)
            loss = nll_criterion(mean, var, y)
            grad_x = torch.autograd.grad(loss, x_, retain_graph=True)[0]
            x_adv = x + eps * grad_x.sign()
            mean_adv, var_adv = model(x_adv.detach())
            total = loss + nll_criterion(mean_adv, var_adv, y)
            opt.zero_grad()
            total.backward()
            opt.step()
        log.append((total.item(), gnll(mean, y, var).item() - loss.item()))
    with torch.no_grad():
        means, variances = zip(*(model(x_test) for model in members))
        means, variances = torch.stack(means), torch.stack(variances)
        mixture_mean = means.mean(0)
        mixture_var = (variances + means.pow(2)).mean(0) - mixture_mean.pow(2)
    return {"log": log, "mean": mixture_mean, "var": mixture_var, "epistemic": means.var(0, unbiased=False),
            "params": [[p.detach() for p in model.parameters()] for model in members]}


def test_deep_ensemble_of_gaussian_regressors():
    weights = [weights_of(gaussian_mlp, seed=s) for s in range(3)]
    ours, _ = run_both(ensemble, weights, rtol=1e-8, atol=1e-10)
    for total, gap in ours["log"]:
        assert abs(gap) < 1e-12  # GaussianNLLLoss without `full` is the NLL by hand
    assert (ours["var"] >= ours["epistemic"] - 1e-12).all()


def laplace(m, weights, prior_precision=1.0, n_samples=200):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    hessian, jacobian = torch.autograd.functional.hessian, torch.autograd.functional.jacobian
    model = load(m, mlp(m), weights).double().eval()
    rng = np.random.default_rng(11)
    Xn = rng.uniform(0, 1, (40, 1, 8, 8))
    yn = rng.integers(0, 3, 40)
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)
    X_test = torch.from_numpy(rng.uniform(0, 1, (5, 1, 8, 8)))
    feature_extractor, last = model[:-1], model[-1]
    # fit the last layer (MAP) a little
    opt = optim.SGD(last.parameters(), lr=0.1)
    with torch.no_grad():
        phi, phi_test = feature_extractor(X), feature_extractor(X_test)
    for step in range(20):
        opt.zero_grad()
        loss = F.cross_entropy(last(phi), y, reduction="sum") / len(y) + 0.5 * prior_precision / len(y) * sum(
            p.pow(2).sum() for p in last.parameters())
        loss.backward()
        opt.step()
    W_map, b_map = last.weight.detach().clone(), last.bias.detach().clone()
    C, D = W_map.shape

    def neg_log_posterior(W, b):
        return F.cross_entropy(phi @ W.T + b, y, reduction="sum") + 0.5 * prior_precision * (W.pow(2).sum() + b.pow(2).sum())

    H_W, H_b = hessian(neg_log_posterior, (W_map, b_map))  # blocks: H_W[0] is (C, D, C, D)
    H = torch.cat([torch.cat([H_W[0].reshape(C * D, C * D), H_W[1].reshape(C * D, C)], 1),
                   torch.cat([H_b[0].reshape(C, C * D), H_b[1]], 1)], 0)
    # the GGN by hand: sum_n (diag(p) - p p^T) kron [phi, 1][phi, 1]^T, in the same (W rows, b) order
    with torch.no_grad():
        p = F.softmax(phi @ W_map.T + b_map, dim=1)
        Lam = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)  # (N, C, C)
        ggn_W = torch.einsum("nij,nk,nl->ikjl", Lam, phi, phi).reshape(C * D, C * D)
        ggn_Wb = torch.einsum("nij,nk->ikj", Lam, phi).reshape(C * D, C)
        ggn_b = Lam.sum(0)
        ggn = torch.cat([torch.cat([ggn_W, ggn_Wb], 1), torch.cat([ggn_Wb.T, ggn_b], 1)], 0)
        ggn = ggn + prior_precision * torch.eye(C * D + C, dtype=ggn.dtype)
    Sigma = torch.linalg.inv(H)
    L = torch.linalg.cholesky(Sigma)
    L_H = torch.linalg.cholesky(H)
    Sigma_chol = torch.cholesky_inverse(L_H)

    # the GLM predictive: the logits' Jacobian with respect to (W, b), then the probit approximation
    def logits_of(w_flat, features):
        return features @ w_flat[: C * D].view(C, D).T + w_flat[C * D:]

    theta_map = torch.cat([W_map.flatten(), b_map])
    J = jacobian(lambda w: logits_of(w, phi_test), theta_map)  # (n_test, C, P)
    f_mu = logits_of(theta_map, phi_test)
    f_var = torch.einsum("ncp,pq,nkq->nck", J, Sigma, J)
    kappa = 1 / torch.sqrt(1.0 + math.pi / 8 * f_var.diagonal(dim1=1, dim2=2))
    probit = torch.softmax(kappa * f_mu, dim=-1)
    # the Monte-Carlo predictive from the posterior samples theta_map + L eps
    eps = torch.from_numpy(np.random.default_rng(12).standard_normal((n_samples, C * D + C)))
    thetas = theta_map + eps @ L.T
    mc = torch.stack([torch.softmax(logits_of(t, phi_test), -1) for t in thetas]).mean(0)

    # the prior precision by the Laplace marginal likelihood, optimised in log space by Adam
    log_prior = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    hyper = optim.Adam([log_prior], lr=0.1)
    lik = F.cross_entropy(phi @ W_map.T + b_map, y, reduction="sum")
    P = C * D + C
    H_lik = H - prior_precision * torch.eye(P, dtype=H.dtype)
    margliks = []
    for step in range(15):
        hyper.zero_grad()
        prec = log_prior.exp()
        post_prec = H_lik + prec * torch.eye(P, dtype=H.dtype)
        log_marglik = -lik - 0.5 * prec * theta_map.pow(2).sum() - 0.5 * (torch.logdet(post_prec) - P * torch.log(prec))
        (-log_marglik).backward()
        hyper.step()
        margliks.append(log_marglik.item())
    return {"H": H, "ggn": ggn, "Sigma": Sigma, "Sigma_chol": Sigma_chol, "L": L, "probit": probit, "mc": mc,
            "f_var": f_var, "margliks": margliks, "log_prior": log_prior.detach(), "log_prior_grad": log_prior.grad}


def test_last_layer_laplace_hessian_glm_predictive_marglik():
    ours, _ = run_both(laplace, weights_of(mlp, seed=2), rtol=1e-8, atol=1e-10)
    # the cross-entropy's Hessian in the last layer is its GGN exactly (the logits are linear in it)
    np.testing.assert_allclose(ours["H"], ours["ggn"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours["Sigma"], ours["Sigma_chol"], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours["L"] @ ours["L"].T, ours["Sigma"], atol=1e-12)
    np.testing.assert_allclose(ours["probit"].sum(-1), 1)
    assert np.abs(ours["probit"] - ours["mc"]).max() < 0.05
    assert ours["margliks"][-1] > ours["margliks"][0]


# ----------------------------------------------------------------------------------------------
# Evidential deep learning: regression (Amini et al.: a DenseNormalGamma head, the NIG NLL with
# lgamma and its evidence regulariser) and classification (Sensoy et al. as dougbrion/pytorch-
# classification-uncertainty writes it: digamma / log / MSE losses, an annealed KL to the uniform
# Dirichlet, float32 constants mixed with float64 evidence)
# ----------------------------------------------------------------------------------------------


def evidential(m, reg_weights, cls_weights, epochs=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    device = None

    class DenseNormalGamma(nn.Module):
        def __init__(self, in_features, out_units=1):
            super().__init__()
            self.dense = nn.Linear(in_features, 4 * out_units)

        def evidence(self, x):
            return F.softplus(x)

        def forward(self, x):
            output = self.dense(x)
            mu, logv, logalpha, logbeta = torch.split(output, output.shape[-1] // 4, dim=-1)
            v = self.evidence(logv)
            alpha = self.evidence(logalpha) + 1
            beta = self.evidence(logbeta)
            return torch.cat([mu, v, alpha, beta], dim=-1)

    def NIG_NLL(y, gamma, v, alpha, beta, reduce=True):
        twoBlambda = 2 * beta * (1 + v)
        nll = 0.5 * torch.log(np.pi / v) \
            - alpha * torch.log(twoBlambda) \
            + (alpha + 0.5) * torch.log(v * (y - gamma) ** 2 + twoBlambda) \
            + torch.lgamma(alpha) \
            - torch.lgamma(alpha + 0.5)
        return torch.mean(nll) if reduce else nll

    def NIG_Reg(y, gamma, v, alpha, beta, reduce=True):
        error = torch.abs(y - gamma)
        evi = 2 * v + alpha
        reg = error * evi
        return torch.mean(reg) if reduce else reg

    def EvidentialRegression(y_true, evidential_output, coeff=1e-2):
        gamma, v, alpha, beta = torch.split(evidential_output, 1, dim=-1)
        loss_nll = NIG_NLL(y_true, gamma, v, alpha, beta)
        loss_reg = NIG_Reg(y_true, gamma, v, alpha, beta)
        return loss_nll + coeff * loss_reg

    rng = np.random.default_rng(21)
    xn = rng.uniform(-4, 4, (48, 1))
    yn = xn ** 3 / 20 + rng.standard_normal((48, 1)) * 0.3
    x, yr = torch.from_numpy(xn), torch.from_numpy(yn)
    reg = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), DenseNormalGamma(16)).double()
    load(m, reg, reg_weights)
    opt = optim.Adam(reg.parameters(), lr=5e-3)
    reg_log = []
    for epoch in range(epochs):
        opt.zero_grad()
        loss = EvidentialRegression(yr, reg(x))
        loss.backward()
        opt.step()
        reg_log.append(loss.item())
    with torch.no_grad():
        mu, v, alpha, beta = torch.split(reg(torch.linspace(-6, 6, 7, dtype=torch.float64).unsqueeze(1)), 1, dim=-1)
        aleatoric = beta / (alpha - 1)
        epistemic = beta / (v * (alpha - 1))

    def relu_evidence(y):
        return F.relu(y)

    def exp_evidence(y):
        return torch.exp(torch.clamp(y, -10, 10))

    def softplus_evidence(y):
        return F.softplus(y)

    def kl_divergence(alpha, num_classes, device=None):
        ones = torch.ones([1, num_classes], dtype=torch.float32, device=device)
        sum_alpha = torch.sum(alpha, dim=1, keepdim=True)
        first_term = (
            torch.lgamma(sum_alpha)
            - torch.lgamma(alpha).sum(dim=1, keepdim=True)
            + torch.lgamma(ones).sum(dim=1, keepdim=True)
            - torch.lgamma(ones.sum(dim=1, keepdim=True))
        )
        second_term = (
            (alpha - ones)
            .mul(torch.digamma(alpha) - torch.digamma(sum_alpha))
            .sum(dim=1, keepdim=True)
        )
        kl = first_term + second_term
        return kl

    def loglikelihood_loss(y, alpha, device=None):
        y = y.to(device)
        alpha = alpha.to(device)
        S = torch.sum(alpha, dim=1, keepdim=True)
        loglikelihood_err = torch.sum((y - (alpha / S)) ** 2, dim=1, keepdim=True)
        loglikelihood_var = torch.sum(
            alpha * (S - alpha) / (S * S * (S + 1)), dim=1, keepdim=True
        )
        loglikelihood = loglikelihood_err + loglikelihood_var
        return loglikelihood

    def mse_loss(y, alpha, epoch_num, num_classes, annealing_step, device=None):
        y = y.to(device)
        alpha = alpha.to(device)
        loglikelihood = loglikelihood_loss(y, alpha, device=device)
        annealing_coef = torch.min(
            torch.tensor(1.0, dtype=torch.float32),
            torch.tensor(epoch_num / annealing_step, dtype=torch.float32),
        )
        kl_alpha = (alpha - 1) * (1 - y) + 1
        kl_div = annealing_coef * kl_divergence(kl_alpha, num_classes, device=device)
        return loglikelihood + kl_div

    def edl_loss(func, y, alpha, epoch_num, num_classes, annealing_step, device=None):
        y = y.to(device)
        alpha = alpha.to(device)
        S = torch.sum(alpha, dim=1, keepdim=True)
        A = torch.sum(y * (func(S) - func(alpha)), dim=1, keepdim=True)
        annealing_coef = torch.min(
            torch.tensor(1.0, dtype=torch.float32),
            torch.tensor(epoch_num / annealing_step, dtype=torch.float32),
        )
        kl_alpha = (alpha - 1) * (1 - y) + 1
        kl_div = annealing_coef * kl_divergence(kl_alpha, num_classes, device=device)
        return A + kl_div

    def edl_mse_loss(output, target, epoch_num, num_classes, annealing_step, device=None):
        evidence = relu_evidence(output)
        alpha = evidence + 1
        loss = torch.mean(mse_loss(target, alpha, epoch_num, num_classes, annealing_step, device=device))
        return loss

    def edl_log_loss(output, target, epoch_num, num_classes, annealing_step, device=None):
        evidence = softplus_evidence(output)
        alpha = evidence + 1
        loss = torch.mean(edl_loss(torch.log, target, alpha, epoch_num, num_classes, annealing_step, device))
        return loss

    def edl_digamma_loss(output, target, epoch_num, num_classes, annealing_step, device=None):
        evidence = exp_evidence(output)
        alpha = evidence + 1
        loss = torch.mean(edl_loss(torch.digamma, target, alpha, epoch_num, num_classes, annealing_step, device))
        return loss

    Xc, yc = tabular(64, seed=3)
    Xc, yc = torch.from_numpy(Xc), torch.from_numpy(yc)
    num_classes = 4
    cls_out = {}
    for name, criterion in (("mse", edl_mse_loss), ("log", edl_log_loss), ("digamma", edl_digamma_loss)):
        model = load(m, nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4)), cls_weights).double()
        optimizer = optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.005)
        losses = []
        for epoch in range(epochs):
            optimizer.zero_grad()
            outputs = model(Xc)
            _, preds = torch.max(outputs, 1)
            y = torch.eye(num_classes)[yc]  # one-hot, float32
            loss = criterion(outputs, y.double(), epoch, num_classes, 10, device)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        with torch.no_grad():
            outputs = model(Xc)
            evidence = relu_evidence(outputs)
            alpha = evidence + 1
            uncertainty = num_classes / torch.sum(alpha, dim=1, keepdim=True)
            prob = alpha / torch.sum(alpha, dim=1, keepdim=True)
        cls_out[name] = (losses, uncertainty, prob, [p.grad for p in model.parameters()])
    # the float32 constants against float64 evidence: the KL's dtype, and its value against Dirichlet's
    alpha64 = torch.from_numpy(np.random.default_rng(4).uniform(0.5, 4, (3, 4)))
    kl = kl_divergence(alpha64, 4)
    return {"reg": (reg_log, mu, aleatoric, epistemic, [p.grad for p in reg.parameters()]), "cls": cls_out,
            "kl": (kl, kl.dtype == torch.float64)}


def cls_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4))


def evidential_net(m):
    nn = m.nn

    class DenseNormalGamma(nn.Module):
        def __init__(self, in_features, out_units=1):
            super().__init__()
            self.dense = nn.Linear(in_features, 4 * out_units)

    return nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), DenseNormalGamma(16))


def test_evidential_regression_and_classification():
    ours, _ = run_both(evidential, weights_of(evidential_net), weights_of(cls_net, seed=3), rtol=1e-8, atol=1e-10)
    kl, dtype = ours["kl"]
    assert dtype is True  # the float32 constants did not narrow the float64 evidence
    # KL(Dir(alpha) || Dir(1)) by SciPy-free hand: lgamma / digamma from math
    alpha = np.random.default_rng(4).uniform(0.5, 4, (3, 4))
    digamma = lambda z: float(OURS.torch.digamma(OURS.torch.tensor(z, dtype=OURS.torch.float64)))
    for row, value in zip(alpha, kl[:, 0]):
        s = row.sum()
        expected = (math.lgamma(s) - sum(math.lgamma(a) for a in row) - math.lgamma(4)
                    + sum((a - 1) * (digamma(a) - digamma(s)) for a in row))
        assert abs(value - expected) < 1e-6  # lgamma(ones.sum()) is float32, as in PyTorch
    reg_log, mu, aleatoric, epistemic, grads = ours["reg"]
    assert (aleatoric > 0).all() and (epistemic > 0).all()


# ----------------------------------------------------------------------------------------------
# SNGP as y0ast/DUE writes it: a spectrally normalised residual feature extractor (the hook form
# nn.utils.spectral_norm and the parametrization), a Johnson-Lindenstrauss projection, random Fourier
# features from orthogonal blocks (torch.linalg.qr), the precision matrix accumulated under no_grad,
# the covariance by cholesky_ex / cholesky_inverse(out=), mean-field logits
# ----------------------------------------------------------------------------------------------


def sngp_model(m):
    torch, nn, F = m.torch, m.nn, m.F

    def random_ortho(n, m):
        q, _ = torch.linalg.qr(torch.randn(n, m))
        return q

    class RandomFourierFeatures(nn.Module):
        def __init__(self, in_dim, num_random_features, feature_scale=None):
            super().__init__()
            if feature_scale is None:
                feature_scale = math.sqrt(num_random_features / 2)
            self.register_buffer("feature_scale", torch.tensor(feature_scale))
            if num_random_features <= in_dim:
                W = random_ortho(in_dim, num_random_features)
            else:
                # generate blocks of orthonormal rows which are not neccesarily orthonormal to each other.
                dim_left = num_random_features
                ws = []
                while dim_left > in_dim:
                    ws.append(random_ortho(in_dim, in_dim))
                    dim_left -= in_dim
                ws.append(random_ortho(in_dim, dim_left))
                W = torch.cat(ws, 1)
            # From: https://github.com/google/edward2/blob/d672c93b179bfcc99dd52228492c53d38cf074ba/edward2/tensorflow/initializers.py#L807-L817
            feature_norm = torch.randn(W.shape) ** 2
            W = W * feature_norm.sum(0).sqrt()
            self.register_buffer("W", W)
            b = torch.empty(num_random_features).uniform_(0, 2 * math.pi)
            self.register_buffer("b", b)

        def forward(self, x):
            k = torch.cos(x @ self.W + self.b)
            k = k / self.feature_scale
            return k

    class FeatureExtractor(nn.Module):
        def __init__(self, in_dim=2, hidden=16, depth=3, dropout=0.0):
            super().__init__()
            self.first = nn.utils.spectral_norm(nn.Linear(in_dim, hidden))
            self.residuals = nn.ModuleList([nn.utils.parametrizations.spectral_norm(nn.Linear(hidden, hidden))
                                            for _ in range(depth)])
            self.dropout = nn.Dropout(dropout)
            self.activation = F.relu

        def forward(self, x):
            x = self.first(x)
            for residual in self.residuals:
                x = self.dropout(self.activation(residual(x))) + x
            return x

    class Laplace(nn.Module):
        def __init__(self, feature_extractor, num_deep_features, num_gp_features, normalize_gp_features,
                     num_random_features, num_outputs, num_data, train_batch_size, ridge_penalty=1.0,
                     feature_scale=None, mean_field_factor=None):
            super().__init__()
            self.feature_extractor = feature_extractor
            self.mean_field_factor = mean_field_factor
            self.ridge_penalty = ridge_penalty
            self.train_batch_size = train_batch_size
            if num_gp_features > 0:
                self.num_gp_features = num_gp_features
                self.register_buffer("random_matrix", torch.normal(0, 0.05, (num_gp_features, num_deep_features)))
                self.jl = lambda x: nn.functional.linear(x, self.random_matrix)
            else:
                self.num_gp_features = num_deep_features
                self.jl = nn.Identity()
            self.normalize_gp_features = normalize_gp_features
            if normalize_gp_features:
                self.normalize = nn.LayerNorm(num_gp_features)
            self.rff = RandomFourierFeatures(num_gp_features, num_random_features, feature_scale)
            self.beta = nn.Linear(num_random_features, num_outputs)
            self.num_data = num_data
            self.train_batch_size = train_batch_size
            precision = torch.eye(num_random_features) * self.ridge_penalty
            self.register_buffer("precision", precision)
            self.recompute_covariance = True
            self.register_buffer("covariance", torch.eye(num_random_features))

        def reset_precision_matrix(self):
            identity = torch.eye(self.precision.shape[0], device=self.precision.device, dtype=self.precision.dtype)
            self.precision = identity * self.ridge_penalty
            self.covariance = identity
            self.recompute_covariance = True

        def mean_field_logits(self, logits, pred_cov):
            # Mean-Field approximation as alternative to MC integration of Gaussian-Softmax
            # Based on: https://arxiv.org/abs/2006.07584
            logits_scale = torch.sqrt(1.0 + torch.diag(pred_cov) * self.mean_field_factor)
            if self.mean_field_factor > 0:
                logits = logits / logits_scale.unsqueeze(-1)
            return logits

        def forward(self, x):
            f = self.feature_extractor(x)
            f_reduc = self.jl(f)
            if self.normalize_gp_features:
                f_reduc = self.normalize(f_reduc)
            k = self.rff(f_reduc)
            pred = self.beta(k)
            if self.training:
                with torch.no_grad():
                    precision_minibatch = k.t() @ k
                    self.precision += precision_minibatch
            else:
                if self.recompute_covariance:
                    with torch.no_grad():
                        eps = 1e-7
                        jitter = eps * torch.eye(self.precision.shape[1], device=self.precision.device,
                                                 dtype=self.precision.dtype)
                        u, info = torch.linalg.cholesky_ex(self.precision + jitter)
                        assert (info == 0).all(), "Precision matrix inversion failed!"
                        torch.cholesky_inverse(u, out=self.covariance)
                    self.recompute_covariance = False
                with torch.no_grad():
                    pred_cov = k @ ((self.covariance @ k.t()) * self.ridge_penalty)
                if self.mean_field_factor is None:
                    return pred, pred_cov
                else:
                    return self.mean_field_logits(pred, pred_cov)
            return pred

    return Laplace(FeatureExtractor(), 16, 8, True, 40, 2, 64, 32, ridge_penalty=1.0, mean_field_factor=math.pi / 8)


def sngp(m, weights, epochs=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, sngp_model(m), weights).double()
    rng = np.random.default_rng(31)
    # two moons, by hand
    t = rng.uniform(0, math.pi, 64)
    labels = rng.integers(0, 2, 64)
    Xn = np.stack([np.cos(t) + labels * 1.0, np.sin(t) * (1 - 2 * labels) + labels * 0.5], 1) + 0.1 * rng.standard_normal((64, 2))
    X, y = torch.from_numpy(Xn), torch.from_numpy(labels)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    log = []
    for epoch in range(epochs):
        model.train()
        model.reset_precision_matrix()  # DUE resets the precision at each epoch's start
        for i in range(0, 64, 32):
            optimizer.zero_grad()
            logits = model(X[i:i + 32])
            loss = F.cross_entropy(logits, y[i:i + 32])
            loss.backward()
            optimizer.step()
            log.append(loss.item())
    model.eval()
    grid = torch.from_numpy(np.stack(np.meshgrid(np.linspace(-2, 3, 4), np.linspace(-2, 2, 3)), -1).reshape(-1, 2))
    with torch.no_grad():
        logits = model(grid)
        probs = logits.softmax(-1)
        uncertainty = -(probs * probs.log()).sum(1)
    # the spectral norms the power iterations reached
    sigmas = [torch.linalg.matrix_norm(model.feature_extractor.first.weight, ord=2)] + [
        torch.linalg.matrix_norm(r.weight, ord=2) for r in model.feature_extractor.residuals]
    return {"log": log, "logits": logits, "uncertainty": uncertainty, "precision": model.precision,
            "covariance": model.covariance, "sigmas": [s.detach() for s in sigmas],
            "params": [p.detach() for p in model.parameters()], "grads": [p.grad for p in model.parameters()]}


def test_sngp_spectral_norm_random_features_precision():
    OURS.torch.manual_seed(0)
    weights = {k: v.astype(np.float64) for k, v in weights_of(sngp_model).items()}
    ours, _ = run_both(sngp, weights, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["covariance"] @ ours["precision"], np.eye(40), atol=1e-6)
    # each layer's largest singular value about 1 (one power iteration per step: 1.117 for the first layer from
    # PyTorch's initial weights for seed 0, in both libraries)
    assert all(abs(s - 1) < 0.15 for s in ours["sigmas"])


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


# ----------------------------------------------------------------------------------------------
# Out-of-distribution scores: ODIN (facebookresearch/odin: temperature, the input perturbed against
# the gradient's sign by torch.add(input, -eps, gradient)), the Mahalanobis detector (pokaxpoka/
# deep_Mahalanobis_detector: class means, a tied precision, input processing through torch.mm),
# the energy score, and GradNorm (the KL to uniform's gradient norm in the last layer)
# ----------------------------------------------------------------------------------------------


def ood_scores(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    Variable = torch.autograd.Variable
    net1 = cnn64(m, weights).eval()
    Xn, yn = images(12, seed=6)
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)
    criterion = nn.CrossEntropyLoss()
    temper, noiseMagnitude1 = 1000.0, 0.0014

    odin = []
    for j in range(4):
        inputs = Variable(X[j:j + 1], requires_grad=True)
        outputs = net1(inputs)
        nnOutputs = outputs.data.numpy()[0]
        nnOutputs = nnOutputs - np.max(nnOutputs)
        nnOutputs = np.exp(nnOutputs) / np.sum(np.exp(nnOutputs))
        maxIndexTemp = np.argmax(nnOutputs)
        labels = Variable(torch.LongTensor([maxIndexTemp]))
        # Using temperature scaling
        outputs = outputs / temper
        loss = criterion(outputs, labels)
        loss.backward()
        # Normalizing the gradient to binary in {0, 1}
        gradient = torch.ge(inputs.grad.data, 0)
        gradient = (gradient.float() - 0.5) * 2
        # Normalizing the gradient to the same space of image
        gradient[0][0] = (gradient[0][0]) / (63.0 / 255.0)
        # Adding small perturbations to images
        tempInputs = torch.add(inputs.data, -noiseMagnitude1, gradient)
        outputs = net1(Variable(tempInputs))
        outputs = outputs / temper
        # Calculating the confidence after adding perturbations
        nnOutputs = outputs.data.numpy()[0]
        nnOutputs = nnOutputs - np.max(nnOutputs)
        nnOutputs = np.exp(nnOutputs) / np.sum(np.exp(nnOutputs))
        odin.append(np.max(nnOutputs))

    # Mahalanobis: class-conditional means and a tied covariance of the penultimate features
    def intermediate_forward(x):
        return net1[:4](x)  # (n, 6, 4, 4)

    num_classes = 3
    with torch.no_grad():
        feats = intermediate_forward(X).view(len(X), 6, -1).mean(2)
    sample_mean = torch.stack([feats[y == c].mean(0) for c in range(num_classes)])
    centered = feats - sample_mean[y]
    cov = centered.t() @ centered / len(X)
    precision = torch.linalg.pinv(cov + 1e-3 * torch.eye(6, dtype=cov.dtype))

    data = Variable(X[:5], requires_grad=True)
    out_features = intermediate_forward(data)
    out_features = out_features.view(out_features.size(0), out_features.size(1), -1)
    out_features = torch.mean(out_features, 2)
    gaussian_score = 0
    for i in range(num_classes):
        batch_sample_mean = sample_mean[i]
        zero_f = out_features.data - batch_sample_mean
        term_gau = -0.5 * torch.mm(torch.mm(zero_f, precision), zero_f.t()).diag()
        if i == 0:
            gaussian_score = term_gau.view(-1, 1)
        else:
            gaussian_score = torch.cat((gaussian_score, term_gau.view(-1, 1)), 1)
    # Input_processing
    sample_pred = gaussian_score.max(1)[1]
    batch_sample_mean = sample_mean.index_select(0, sample_pred)
    zero_f = out_features - Variable(batch_sample_mean)
    pure_gau = -0.5 * torch.mm(torch.mm(zero_f, Variable(precision)), zero_f.t()).diag()
    loss = torch.mean(-pure_gau)
    loss.backward()
    gradient = torch.ge(data.grad.data, 0)
    gradient = (gradient.float() - 0.5) * 2
    gradient.index_copy_(1, torch.LongTensor([0]), gradient.index_select(1, torch.LongTensor([0])) / (63.0 / 255.0))
    tempInputs = torch.add(data.data, -0.01, gradient)
    with torch.no_grad():
        noise_out_features = intermediate_forward(Variable(tempInputs))
    noise_out_features = noise_out_features.view(noise_out_features.size(0), noise_out_features.size(1), -1)
    noise_out_features = torch.mean(noise_out_features, 2)
    noise_gaussian_score = 0
    for i in range(num_classes):
        batch_sample_mean = sample_mean[i]
        zero_f = noise_out_features.data - batch_sample_mean
        term_gau = -0.5 * torch.mm(torch.mm(zero_f, precision), zero_f.t()).diag()
        if i == 0:
            noise_gaussian_score = term_gau.view(-1, 1)
        else:
            noise_gaussian_score = torch.cat((noise_gaussian_score, term_gau.view(-1, 1)), 1)
    noise_gaussian_score, _ = torch.max(noise_gaussian_score, dim=1)

    # energy score, and GradNorm
    with torch.no_grad():
        energy = -1.0 * torch.logsumexp(net1(X) / 1.0, dim=1)
    logsoftmax = nn.LogSoftmax(dim=-1)
    gradnorms = []
    for i in range(4):
        net1.zero_grad()
        outputs = net1(X[i:i + 1])
        targets = torch.ones((1, num_classes), dtype=torch.float64)
        loss = torch.mean(torch.sum(-targets * logsoftmax(outputs / 1.0), dim=-1))
        loss.backward()
        layer_grad = net1[-1].weight.grad.data
        gradnorms.append(torch.sum(torch.abs(layer_grad)).numpy().item())
    return {"odin": odin, "gaussian": gaussian_score, "mahalanobis": noise_gaussian_score, "energy": energy,
            "gradnorm": gradnorms, "data_grad": data.grad}


def test_odin_mahalanobis_energy_gradnorm():
    ours, _ = run_both(ood_scores, weights_of(small_cnn), rtol=1e-8, atol=1e-10)
    assert (ours["gaussian"] <= 0).all() and (ours["mahalanobis"] <= 0).all()
    assert all(0.3 < s < 0.34 for s in ours["odin"])  # T = 1000 flattens the softmax to about 1/3
