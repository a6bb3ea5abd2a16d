# ruff: noqa: B007, E501, F841, UP034  (the programs are kept as their authors wrote them)
"""Adversarial robustness, interpretability and uncertainty as their reference repositories write them, run as
tests/probe11_robust_common.py says. Adversarial: PGD with a random start (Madry et al.; ``torch.autograd.grad(loss,
[x_adv])``, projection by ``torch.min(torch.max(...))``), PGD-L2 as torchattacks writes it (per-sample norms by
``view(n, -1).norm(dim=1)``), TRADES (``KLDivLoss(size_average=False)``, ``model.eval()`` during the attack, its L2
branch's ``optim.SGD`` over the perturbation with ``renorm_``), an adversarial training loop with both,
Carlini-Wagner L2 (one-hot masks, ``optim.Adam`` over a tanh-space perturbation) and DeepFool (per-class gradients,
``x.grad.zero_()`` between ``backward(retain_graph=True)`` calls)."""

import numpy as np

from .probe11_robust_common import cnn64, images, small_cnn
from .pytorch_programs import OURS, assert_same, run_both, weights_of

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
