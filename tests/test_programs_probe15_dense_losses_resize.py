# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Dense-prediction and image-synthesis programs, run as tests/probe15_dense_common.py says. Segmentation losses with
their gradients (Lovasz-softmax and hinge with in-place slice assignment, focal with per-class alpha, focal Tversky,
log-cosh Dice, boundary-weighted CE by max-pool morphology) and training on their sum; multi-scale training with
random scale factors and every ``F.interpolate`` mode / ``nn.Upsample`` with gradients."""

import numpy as np
import pytest

from .probe15_dense_common import F32, images, masks, seg_head
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Segmentation losses on one-hot masks made by F.one_hot + permute, as their repositories write them:
# Lovasz-softmax and Lovasz hinge (Berman et al.: errors sorted, the Jaccard gradient by cumsum with a
# slice assigned in place, torch.autograd.Variable), focal loss with per-class alpha by gather, focal
# Tversky, a log-cosh Dice, a boundary-weighted cross-entropy (edges by max_pool2d of the one-hot mask),
# each differentiated, and a small head trained on their sum by Adam
# ----------------------------------------------------------------------------------------------


def lovasz_grad(gt_sorted):
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.float().cumsum(0)
    union = gts + (1 - gt_sorted).float().cumsum(0)
    jaccard = 1. - intersection / union
    if p > 1:  # cover 1-pixel case
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def lovasz_softmax_flat(m, probas, labels, classes='present'):
    torch = m.torch
    Variable = torch.autograd.Variable
    if probas.numel() == 0:
        return probas * 0.
    C = probas.size(1)
    losses = []
    class_to_sum = list(range(C)) if classes in ['all', 'present'] else classes
    for c in class_to_sum:
        fg = (labels == c).float()
        if (classes == 'present' and fg.sum() == 0):
            continue
        class_pred = probas[:, c]
        errors = (Variable(fg) - class_pred).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        perm = perm.data
        fg_sorted = fg[perm]
        losses.append(torch.dot(errors_sorted, Variable(lovasz_grad(fg_sorted))))
    return sum(losses) / len(losses)


def flatten_probas(probas, labels, ignore=None):
    B, C, H, W = probas.size()
    probas = probas.permute(0, 2, 3, 1).contiguous().view(-1, C)
    labels = labels.view(-1)
    if ignore is None:
        return probas, labels
    valid = (labels != ignore)
    vprobas = probas[valid.nonzero().squeeze()]
    vlabels = labels[valid]
    return vprobas, vlabels


def lovasz_hinge_flat(m, logits, labels):
    torch, F = m.torch, m.F
    if len(labels) == 0:
        return logits.sum() * 0.
    signs = 2. * labels.float() - 1.
    errors = (1. - logits * torch.autograd.Variable(signs))
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    perm = perm.data
    gt_sorted = labels[perm]
    grad = lovasz_grad(gt_sorted)
    loss = torch.dot(F.relu(errors_sorted), torch.autograd.Variable(grad))
    return loss


def focal_loss(m, logits, target, alpha, gamma=2.0, ignore_index=255):
    torch, F = m.torch, m.F
    valid = target != ignore_index
    safe = target.masked_fill(~valid, 0)
    logpt = F.log_softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    pt = logpt.exp()
    at = alpha.gather(0, safe.view(-1)).view_as(safe)
    loss = -at * (1 - pt) ** gamma * logpt
    return loss[valid].mean()


def focal_tversky(m, probs, one_hot, alpha=0.7, beta=0.3, gamma=4 / 3, smooth=1.0):
    torch = m.torch
    dims = (0,) + tuple(range(2, probs.ndim))
    tp = torch.sum(probs * one_hot, dims)
    fn = torch.sum(one_hot * (1 - probs), dims)
    fp = torch.sum((1 - one_hot) * probs, dims)
    tversky = (tp + smooth) / (tp + alpha * fn + beta * fp + smooth)
    return torch.pow(1 - tversky, 1 / gamma).mean()


def log_cosh_dice(m, probs, one_hot, smooth=1.0):
    torch = m.torch
    inter = (probs * one_hot).sum(dim=(2, 3))
    dice = (2 * inter + smooth) / (probs.sum(dim=(2, 3)) + one_hot.sum(dim=(2, 3)) + smooth)
    return torch.log(torch.cosh(1 - dice.mean()))


def boundary_weighted_ce(m, logits, target, one_hot, weight=4.0):
    F = m.F
    # a pixel lies on a boundary when a 3x3 max pool of its one-hot mask differs from the mask itself
    dilated = F.max_pool2d(one_hot, kernel_size=3, stride=1, padding=1)
    eroded = -F.max_pool2d(-one_hot, kernel_size=3, stride=1, padding=1)
    boundary = (dilated - eroded).amax(dim=1)
    pixel = F.cross_entropy(logits, target, reduction='none')
    return ((1 + weight * boundary) * pixel).sum() / (1 + weight * boundary).sum()


def segmentation_losses(m, logits_array, target_array, binary_logits_array):
    torch, F = m.torch, m.F
    classes = logits_array.shape[1]
    logits = torch.tensor(logits_array, requires_grad=True)
    binary_logits = torch.tensor(binary_logits_array, requires_grad=True)
    target = torch.tensor(target_array)
    probs = F.softmax(logits, dim=1)
    vprobas, vlabels = flatten_probas(probs, target, ignore=255)
    valid_target = torch.where(target == 255, torch.zeros_like(target), target)
    one_hot = F.one_hot(valid_target, num_classes=classes).permute(0, 3, 1, 2).float()
    losses = {
        "lovasz_softmax": lovasz_softmax_flat(m, vprobas, vlabels),
        "lovasz_softmax_all": lovasz_softmax_flat(m, vprobas, vlabels, classes='all'),
        "lovasz_hinge": lovasz_hinge_flat(m, binary_logits.view(-1), (valid_target > 1).long().view(-1)),
        "focal": focal_loss(m, logits, target, torch.tensor([0.25, 0.5, 0.75, 1.0][:classes])),
        "focal_tversky": focal_tversky(m, probs, one_hot),
        "log_cosh_dice": log_cosh_dice(m, probs, one_hot),
        "boundary_ce": boundary_weighted_ce(m, logits, valid_target, one_hot),
    }
    grads = {}
    for name, loss in losses.items():
        inputs = [binary_logits] if name == "lovasz_hinge" else [logits]
        grads[name] = torch.autograd.grad(loss, inputs, retain_graph=True)[0]
    return {k: v.detach() for k, v in losses.items()}, grads


def segmentation_losses_training(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, seg_head(m), weights)
    x = torch.tensor(images((2, 3, 10, 12), seed=7))
    target = torch.tensor(masks((2, 10, 12), 4, seed=7, ignore=255))
    valid_target = torch.where(target == 255, torch.zeros_like(target), target)
    one_hot = F.one_hot(valid_target, num_classes=4).permute(0, 3, 1, 2).float()
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    history = []
    for step in range(steps):
        logits = model(x)
        probs = F.softmax(logits, dim=1)
        loss = (lovasz_softmax_flat(m, *flatten_probas(probs, target, ignore=255))
                + focal_loss(m, logits, target, torch.tensor([0.25, 0.5, 0.75, 1.0]))
                + focal_tversky(m, probs, one_hot) + boundary_weighted_ce(m, logits, valid_target, one_hot))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history, {n: p.grad for n, p in model.named_parameters()}, model.state_dict()


def test_segmentation_losses_and_their_gradients():
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((2, 4, 6, 7)).astype(np.float32)
    target = masks((2, 6, 7), 3, seed=8, ignore=255)  # class 3 absent: 'present' skips it, 'all' does not
    binary = rng.standard_normal((2, 6, 7)).astype(np.float32)
    ours, _ = run_both(segmentation_losses, logits, target, binary, rtol=1e-5, atol=1e-6)
    losses, grads = ours
    assert losses["lovasz_softmax_all"] != pytest.approx(losses["lovasz_softmax"])
    assert all(np.isfinite(g).all() for g in grads.values())


def test_lovasz_grad_by_hand():
    torch = OURS.torch
    # sorted ground truth 1, 0, 1 (two positives): after each pixel the intersection left is 1, 1, 0 and the
    # union 2, 3, 3, so the Jaccard losses are 1/2, 2/3, 1; their successive differences (the right side read
    # before the slice is written)
    g = lovasz_grad(torch.tensor([1.0, 0.0, 1.0])).numpy()
    np.testing.assert_allclose(g, [0.5, 1 / 6, 1 / 3], rtol=1e-6)
    errors = torch.tensor([0.9, 0.2, 0.4, 0.1], requires_grad=True)
    loss = lovasz_softmax_flat(OURS, torch.stack([1 - errors, errors], dim=1), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert np.isfinite(errors.grad.numpy()).all() and loss.item() > 0


def test_segmentation_losses_training():
    weights = weights_of(seg_head)
    ours, _ = run_both(segmentation_losses_training, weights, **F32)
    assert ours[0][-1] < ours[0][0]


# ----------------------------------------------------------------------------------------------
# Resizing as the training loops write it: multi-scale training with random scale factors (some keep the
# size of a small map: floor(12 * 1.05) = 12), image by bilinear and mask by nearest; a feature pyramid fused
# by every interpolation mode (nearest, nearest-exact, bilinear and bicubic with align_corners both ways,
# area, antialiased downsampling, scale_factor with recompute_scale_factor, nn.Upsample, size=) with the
# gradient of each
# ----------------------------------------------------------------------------------------------


def resize_head(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 1))


def multiscale_training(m, weights, scales=(1.05, 0.75, 1.3, 1.0, 0.9)):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, resize_head(m), weights)
    image = torch.tensor(images((2, 3, 12, 14), seed=9))
    mask = torch.tensor(masks((2, 12, 14), 3, seed=9))
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    history, shapes = [], []
    for s in scales:
        x = F.interpolate(image, scale_factor=s, mode='bilinear', align_corners=False, recompute_scale_factor=False)
        y = F.interpolate(mask[:, None].float(), size=x.shape[-2:], mode='nearest').squeeze(1).long()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        shapes.append(tuple(x.shape[-2:]))
    return history, shapes, model.state_dict()


def every_resize(m):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(10)
    p3 = torch.tensor(rng.standard_normal((2, 3, 5, 6)).astype(np.float32), requires_grad=True)
    p2 = torch.tensor(rng.standard_normal((2, 3, 10, 12)).astype(np.float32), requires_grad=True)
    big = torch.tensor(rng.standard_normal((2, 3, 21, 17)).astype(np.float32), requires_grad=True)
    outs = {
        "nearest": F.interpolate(p3, size=p2.shape[-2:], mode="nearest"),
        "nearest-exact": F.interpolate(p3, scale_factor=1.9, mode="nearest-exact"),
        "bilinear": F.interpolate(p3, size=(10, 12), mode="bilinear", align_corners=False),
        "bilinear-ac": F.interpolate(p3, scale_factor=2, mode="bilinear", align_corners=True),
        "bicubic": F.interpolate(p3, size=(11, 9), mode="bicubic", align_corners=False),
        "bicubic-ac": F.interpolate(p3, scale_factor=(1.5, 2.5), mode="bicubic", align_corners=True),
        "bilinear-rsf": F.interpolate(p3, scale_factor=1.7, mode="bilinear", recompute_scale_factor=True),
        "bilinear-kept": F.interpolate(p3, scale_factor=1.1, mode="bilinear"),  # 5 and 6 rows kept, 6 cols
        "nearest-doubled": F.interpolate(p3, scale_factor=2.1, mode="nearest"),  # 10 = 2 * 5 rows: o // 2
        "nearest-exact-kept": F.interpolate(p3, scale_factor=1.1, mode="nearest-exact"),  # sizes kept, resampled
        "area": F.interpolate(big, size=(5, 6), mode="area"),
        "bilinear-aa": F.interpolate(big, size=(5, 6), mode="bilinear", antialias=True),
        "bicubic-aa": F.interpolate(big, scale_factor=0.3, mode="bicubic", antialias=True),
        "bilinear-aa-ac": F.interpolate(big, size=(7, 4), mode="bilinear", antialias=True, align_corners=True),
        "upsample": nn.Upsample(scale_factor=2, mode="nearest")(p3),
        "upsample-bilinear2d": nn.UpsamplingBilinear2d(size=(9, 7))(p3),
        "upsample-nearest2d": nn.UpsamplingNearest2d(scale_factor=3)(p3),
        "linear": F.interpolate(p3.flatten(2), size=40, mode="linear", align_corners=False),
        "trilinear": F.interpolate(p3.unsqueeze(2), scale_factor=(2, 1.5, 0.5), mode="trilinear"),
    }
    # an FPN top-down fusion: the coarse level upsampled to the fine one's size and added
    fused = p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest")
    outs["fpn"] = fused
    rng = np.random.default_rng(11)
    total = sum((o * torch.tensor(rng.standard_normal(tuple(o.shape)).astype(np.float32))).sum() for o in outs.values())
    total.backward()
    return {k: v.detach() for k, v in outs.items()}, p3.grad, p2.grad, big.grad


def test_multiscale_training_with_random_scale_factors():
    weights = weights_of(resize_head)
    ours, _ = run_both(multiscale_training, weights, **F32)
    assert ours[1] == [(12, 14), (9, 10), (15, 18), (12, 14), (10, 12)]


def test_every_resize_mode_and_its_gradient():
    ours, _ = run_both(every_resize, rtol=1e-5, atol=1e-5)
    outs = ours[0]
    assert outs["nearest"].shape == (2, 3, 10, 12) and outs["bicubic-aa"].shape == (2, 3, 6, 5)
    # floor(5 * 1.1) = 5, floor(6 * 1.1) = 6: the input itself (which nearest x2 shows at its even positions)
    np.testing.assert_array_equal(outs["bilinear-kept"], outs["nearest"][:, :, ::2, ::2])
    # nearest x2 repeats each pixel twice along both dims
    np.testing.assert_array_equal(outs["upsample"], outs["upsample"][:, :, ::2, ::2].repeat(2, 2).repeat(2, 3))
