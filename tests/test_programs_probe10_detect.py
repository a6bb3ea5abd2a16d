# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Object-detection and audio programs (see tests/pytorch_programs.py) written with plain tensor idioms, as
the model repositories write them without torchvision / torchaudio, each run on chainrule and on PyTorch
from the same weights and data, comparing values, gradients and indices.

Detection: box IoU / GIoU / DIoU by broadcasting corners with their gradients; anchor generation
(``meshgrid``, ``repeat_interleave``) and Faster R-CNN's box coder (``clamp(max=log(1000/16))``); greedy NMS
(argsort loop, the ``while order.numel()`` form), batched NMS by the offset trick, soft-NMS and Matrix NMS;
RetinaNet's focal loss training a head; YOLOv3's loss (targets by argmax of anchor IoU, index assignment,
``scatter_``); YOLOv5's ComputeLoss (CIoU, neighbour cells, ``split``, detached IoU objectness), ModelEMA,
its training loop (``add_param_group``, warmup by ``np.interp``, LambdaLR, accumulation, GradScaler) and
fuse_conv_and_bn (``delattr``, forward replaced on the instance, ``nn.utils.fusion``); DETR's losses on
greedily matched pairs; an FPN top-down path (``interpolate(size=)``) with ROI max pooling by
``adaptive_max_pool2d``; RoIAlign by ``affine_grid`` + ``grid_sample``; CenterNet's heatmap loss and peaks
(``max_pool2d(3, 1, 1) == heat``, ``topk``, ``//`` and ``%``); SSD's hard negative mining (double sort) and
FCOS's targets and centerness; RPN anchor labels by ``iou.ge(0.7)`` on exact float32 thresholds; VOC and
COCO average precision (``cumsum``, ``cummax`` envelope, ``searchsorted``, ``trapezoid``); upsampling by
scale factors and sizes; DETR / YOLO collate functions and a grouped batch sampler.

Audio: a power spectrogram by hand (``unfold`` and ``as_strided`` frames, Hann window, ``rfft``) against
``torch.stft`` with each ``pad_mode``; a mel filterbank, log-mel and MFCC by a DCT matrix, deltas by
``conv1d``; SpecAugment masks by ``masked_fill``; frame features (windows, pre-emphasis, ZCR, pitch by
autocorrelation through ``irfft``, ``quantile`` VAD); windowed-sinc resampling and Griffin-Lim (``istft``,
``polar``, ``angle``); a magnitude head through ``polar`` and ``irfft``; a biquad low-pass with a learnt cutoff
(an ``lfilter`` loop writing in place, filtfilt by ``flip``); WaveNet's causal dilated gated stack; a
Conformer block (GLU, depthwise Conv1d, BatchNorm1d, masked attention); HiFi-GAN's weight-normed
generator and multi-period discriminator; Conv-TasNet's ``overlap_and_add`` (``index_add_``) with PIT
SI-SNR; CTC training with greedy decoding (``unique_consecutive``) and CTC's edge cases (impossible
alignments with and without ``zero_infinity``); an RNN-Transducer loss by hand."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Box IoU / GIoU / DIoU by broadcasting (torchvision.ops.boxes, DETR's util/box_ops.py)
# ----------------------------------------------------------------------------------------------


def random_boxes(n, seed, scale=10.0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, scale, (n, 2))
    wh = rng.uniform(0.5, scale / 2, (n, 2))
    return np.concatenate([xy, xy + wh], 1)


def box_area(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(m, boxes1, boxes2):
    torch = m.torch
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])  # [N,M,2]
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])  # [N,M,2]
    wh = (rb - lt).clamp(min=0)  # [N,M,2]
    inter = wh[:, :, 0] * wh[:, :, 1]  # [N,M]
    union = area1[:, None] + area2 - inter
    iou = inter / union
    return iou, union


def generalized_box_iou(m, boxes1, boxes2):
    torch = m.torch
    assert (boxes1[:, 2:] >= boxes1[:, :2]).all()
    assert (boxes2[:, 2:] >= boxes2[:, :2]).all()
    iou, union = box_iou(m, boxes1, boxes2)
    lt = torch.min(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)  # [N,M,2]
    area = wh[:, :, 0] * wh[:, :, 1]
    return iou - (area - union) / area


def distance_box_iou_loss(m, boxes1, boxes2, eps=1e-7):
    # torchvision.ops.distance_box_iou_loss, elementwise pairs
    torch = m.torch
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xkis1 = torch.max(x1, x1g)
    ykis1 = torch.max(y1, y1g)
    xkis2 = torch.min(x2, x2g)
    ykis2 = torch.min(y2, y2g)
    intsct = torch.zeros_like(x1)
    mask = (ykis2 > ykis1) & (xkis2 > xkis1)
    intsct[mask] = (xkis2[mask] - xkis1[mask]) * (ykis2[mask] - ykis1[mask])
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsct + eps
    iou = intsct / union
    xc1 = torch.min(x1, x1g)
    yc1 = torch.min(y1, y1g)
    xc2 = torch.max(x2, x2g)
    yc2 = torch.max(y2, y2g)
    diagonal_distance_squared = ((xc2 - xc1) ** 2) + ((yc2 - yc1) ** 2) + eps
    x_p = (x2 + x1) / 2
    y_p = (y2 + y1) / 2
    x_g = (x1g + x2g) / 2
    y_g = (y1g + y2g) / 2
    centers_distance_squared = ((x_p - x_g) ** 2) + ((y_p - y_g) ** 2)
    loss = 1 - iou + (centers_distance_squared / diagonal_distance_squared)
    return loss.mean(), iou


def box_ious(m):
    torch = m.torch
    a = torch.tensor(random_boxes(5, 0), requires_grad=True)
    b = torch.tensor(random_boxes(4, 1), requires_grad=True)
    iou, _ = box_iou(m, a, b)
    giou = generalized_box_iou(m, a, b)
    (iou.sum() + (1 - giou).pow(2).sum()).backward()
    p = torch.tensor(random_boxes(6, 2), requires_grad=True)
    g = torch.tensor(random_boxes(6, 3))
    dloss, diou = distance_box_iou_loss(m, p, g)
    dloss.backward()
    best_iou, best = iou.max(dim=1)
    return iou, giou, a.grad, b.grad, dloss, diou, p.grad, best_iou, best


def test_box_iou_giou_diou_by_broadcasting():
    (iou, giou, ga, gb, dloss, diou, gp, best_iou, best), _ = run_both(box_ious, rtol=1e-10, atol=1e-12)
    a, b = random_boxes(5, 0), random_boxes(4, 1)
    lt = np.maximum(a[:, None, :2], b[:, :2])
    rb = np.minimum(a[:, None, 2:], b[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    union = box_area(a)[:, None] + box_area(b) - inter
    np.testing.assert_allclose(iou, inter / union, rtol=1e-12)
    assert (giou <= iou + 1e-12).all() and (giou >= -1).all()
    assert best.dtype == np.int64 and (best == np.argmax(iou, 1)).all()
    assert ga.shape == (5, 4) and np.isfinite(gp).all()


# ----------------------------------------------------------------------------------------------
# Anchor generation and box encoding / decoding (torchvision's AnchorGenerator and BoxCoder)
# ----------------------------------------------------------------------------------------------


def anchors_and_coder(m):
    torch = m.torch

    def generate_anchors(scales, aspect_ratios, dtype=torch.float32):
        scales = torch.as_tensor(scales, dtype=dtype)
        aspect_ratios = torch.as_tensor(aspect_ratios, dtype=dtype)
        h_ratios = torch.sqrt(aspect_ratios)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).view(-1)
        hs = (h_ratios[:, None] * scales[None, :]).view(-1)
        base_anchors = torch.stack([-ws, -hs, ws, hs], dim=1) / 2
        return base_anchors.round()

    def grid_anchors(grid_size, stride, base_anchors):
        grid_height, grid_width = grid_size
        shifts_x = torch.arange(0, grid_width, dtype=torch.int32) * stride
        shifts_y = torch.arange(0, grid_height, dtype=torch.int32) * stride
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shift_x = shift_x.reshape(-1)
        shift_y = shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
        return (shifts.view(-1, 1, 4) + base_anchors.view(1, -1, 4)).reshape(-1, 4)

    class BoxCoder:
        def __init__(self, weights, bbox_xform_clip=math.log(1000.0 / 16)):
            self.weights = weights
            self.bbox_xform_clip = bbox_xform_clip

        def encode_single(self, reference_boxes, proposals):
            wx, wy, ww, wh = self.weights
            proposals_x1 = proposals[:, 0].unsqueeze(1)
            proposals_y1 = proposals[:, 1].unsqueeze(1)
            proposals_x2 = proposals[:, 2].unsqueeze(1)
            proposals_y2 = proposals[:, 3].unsqueeze(1)
            reference_boxes_x1 = reference_boxes[:, 0].unsqueeze(1)
            reference_boxes_y1 = reference_boxes[:, 1].unsqueeze(1)
            reference_boxes_x2 = reference_boxes[:, 2].unsqueeze(1)
            reference_boxes_y2 = reference_boxes[:, 3].unsqueeze(1)
            ex_widths = proposals_x2 - proposals_x1
            ex_heights = proposals_y2 - proposals_y1
            ex_ctr_x = proposals_x1 + 0.5 * ex_widths
            ex_ctr_y = proposals_y1 + 0.5 * ex_heights
            gt_widths = reference_boxes_x2 - reference_boxes_x1
            gt_heights = reference_boxes_y2 - reference_boxes_y1
            gt_ctr_x = reference_boxes_x1 + 0.5 * gt_widths
            gt_ctr_y = reference_boxes_y1 + 0.5 * gt_heights
            targets_dx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths
            targets_dy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights
            targets_dw = ww * torch.log(gt_widths / ex_widths)
            targets_dh = wh * torch.log(gt_heights / ex_heights)
            return torch.cat((targets_dx, targets_dy, targets_dw, targets_dh), dim=1)

        def decode_single(self, rel_codes, boxes):
            boxes = boxes.to(rel_codes.dtype)
            widths = boxes[:, 2] - boxes[:, 0]
            heights = boxes[:, 3] - boxes[:, 1]
            ctr_x = boxes[:, 0] + 0.5 * widths
            ctr_y = boxes[:, 1] + 0.5 * heights
            wx, wy, ww, wh = self.weights
            dx = rel_codes[:, 0::4] / wx
            dy = rel_codes[:, 1::4] / wy
            dw = rel_codes[:, 2::4] / ww
            dh = rel_codes[:, 3::4] / wh
            dw = torch.clamp(dw, max=self.bbox_xform_clip)
            dh = torch.clamp(dh, max=self.bbox_xform_clip)
            pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
            pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
            pred_w = torch.exp(dw) * widths[:, None]
            pred_h = torch.exp(dh) * heights[:, None]
            c_to_c_h = torch.tensor(0.5, dtype=pred_ctr_y.dtype, device=pred_h.device) * pred_h
            c_to_c_w = torch.tensor(0.5, dtype=pred_ctr_x.dtype, device=pred_w.device) * pred_w
            pred_boxes1 = pred_ctr_x - c_to_c_w
            pred_boxes2 = pred_ctr_y - c_to_c_h
            pred_boxes3 = pred_ctr_x + c_to_c_w
            pred_boxes4 = pred_ctr_y + c_to_c_h
            return torch.stack((pred_boxes1, pred_boxes2, pred_boxes3, pred_boxes4), dim=2).flatten(1)

    base = generate_anchors((16, 32), (0.5, 1.0, 2.0))
    anchors = grid_anchors((3, 4), 8, base)
    # the anchor index of each grid cell, as RetinaNet's head lays them out
    cell_of_anchor = torch.arange(12).repeat_interleave(base.shape[0])
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    gt = torch.tensor(random_boxes(anchors.shape[0], 4, scale=30.0), dtype=torch.float32) - 5
    proposals = anchors.clone()
    proposals[:, 2:] = torch.max(proposals[:, 2:], proposals[:, :2] + 1)
    targets = coder.encode_single(gt, proposals)
    codes = (targets * 0.9).requires_grad_()
    big = torch.zeros(2, 4)
    big[:, 2:] = 20.0  # dw, dh past the clip: exp(clamp) keeps the boxes finite and gets no gradient
    allcodes = torch.cat([codes, big.requires_grad_()])
    decoded = coder.decode_single(allcodes, torch.cat([proposals, proposals[:2]]))
    decoded.sum().backward()
    roundtrip = coder.decode_single(targets, proposals)
    return base, anchors, anchors.dtype == torch.float32, cell_of_anchor, targets, decoded, codes.grad, roundtrip, gt


def test_anchor_generation_and_box_coder():
    (base, anchors, dtype, cells, targets, decoded, grad, roundtrip, gt), _ = run_both(
        anchors_and_coder, rtol=1e-5, atol=1e-4)
    assert base.shape == (6, 4) and anchors.shape == (72, 4) and dtype
    assert (cells[:6] == 0).all() and (cells[-6:] == 11).all()
    np.testing.assert_allclose(roundtrip, gt, rtol=1e-4, atol=1e-3)
    assert np.isfinite(decoded).all() and grad.shape == (72, 4)


# ----------------------------------------------------------------------------------------------
# Greedy NMS by argsort and masking; batched NMS by the coordinate-offset trick
# ----------------------------------------------------------------------------------------------


def nms_program(m):
    torch = m.torch

    def nms(boxes, scores, iou_threshold):
        order = scores.argsort(descending=True)
        keep = []
        suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool)
        for idx in order.tolist():
            if suppressed[idx]:
                continue
            keep.append(idx)
            ious, _ = box_iou(m, boxes[idx].unsqueeze(0), boxes)
            suppressed |= ious[0] > iou_threshold
        return torch.tensor(keep, dtype=torch.long)

    def nms_while(boxes, scores, iou_threshold):
        # the "while order.numel() > 0" form of many YOLO repositories
        x1, y1, x2, y2 = boxes.unbind(1)
        areas = (x2 - x1) * (y2 - y1)
        _, order = scores.sort(0, descending=True)
        keep = []
        while order.numel() > 0:
            if order.numel() == 1:
                keep.append(order.item())
                break
            i = order[0].item()
            keep.append(i)
            xx1 = x1[order[1:]].clamp(min=x1[i].item())
            yy1 = y1[order[1:]].clamp(min=y1[i].item())
            xx2 = x2[order[1:]].clamp(max=x2[i].item())
            yy2 = y2[order[1:]].clamp(max=y2[i].item())
            inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
            iou = inter / (areas[i] + areas[order[1:]] - inter)
            ids = (iou <= iou_threshold).nonzero().squeeze()
            if ids.numel() == 0:
                break
            order = order[ids + 1]
        return torch.LongTensor(keep)

    def batched_nms(boxes, scores, idxs, iou_threshold):
        if boxes.numel() == 0:
            return torch.empty((0,), dtype=torch.int64)
        max_coordinate = boxes.max()
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
        boxes_for_nms = boxes + offsets[:, None]
        return nms(boxes_for_nms, scores, iou_threshold)

    rng = np.random.default_rng(5)
    centers = rng.uniform(5, 25, (4, 2))
    boxes = []
    for c in centers:  # clusters of overlapping boxes around each centre
        for _ in range(5):
            xy = c + rng.normal(0, 1.0, 2)
            wh = rng.uniform(4, 6, 2)
            boxes.append(np.concatenate([xy - wh / 2, xy + wh / 2]))
    boxes = torch.tensor(np.array(boxes), dtype=torch.float32)
    scores = torch.tensor(rng.uniform(0, 1, len(boxes)), dtype=torch.float32)
    labels = torch.tensor(rng.integers(0, 3, len(boxes)))
    keep = nms(boxes, scores, 0.5)
    keep2 = nms_while(boxes, scores, 0.5)
    keep_b = batched_nms(boxes, scores, labels, 0.5)
    # the post-processing that follows: score threshold, top-k of what was kept
    det_scores = scores[keep_b]
    top_scores, top = det_scores.topk(min(5, keep_b.numel()))
    return keep, keep2, keep_b, labels[keep_b[top]], top_scores, boxes[keep_b[top]]


def test_greedy_and_batched_nms():
    (keep, keep2, keep_b, labels, top_scores, top_boxes), _ = run_both(nms_program)
    assert keep.dtype == np.int64 and (keep == keep2).all()
    assert len(keep_b) >= len(keep) and (np.diff(top_scores) <= 0).all()


# ----------------------------------------------------------------------------------------------
# RetinaNet's focal loss training a classification head (torchvision.ops.sigmoid_focal_loss)
# ----------------------------------------------------------------------------------------------


def sigmoid_focal_loss(m, inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    torch, F = m.torch, m.F
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


def retina_head(m):
    nn = m.nn
    num_anchors, num_classes = 3, 4

    class RetinaNetClassificationHead(nn.Module):
        def __init__(self, in_channels):
            super().__init__()
            conv = []
            for _ in range(2):
                conv.append(nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1))
                conv.append(nn.GroupNorm(4, in_channels))
                conv.append(nn.ReLU())
            self.conv = nn.Sequential(*conv)
            self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, kernel_size=3, stride=1, padding=1)
            prior_probability = 0.01
            nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))

        def forward(self, x):
            cls_logits = self.cls_logits(self.conv(x))
            N, _, H, W = cls_logits.shape
            cls_logits = cls_logits.view(N, -1, num_classes, H, W)
            cls_logits = cls_logits.permute(0, 3, 4, 1, 2)
            return cls_logits.reshape(N, -1, num_classes)

    return RetinaNetClassificationHead(8)


def retina_program(m, weights, steps=4):
    torch, F, optim = m.torch, m.F, m.optim
    head = retina_head(m)
    if weights is None:
        return head
    load(m, head, weights)
    rng = np.random.default_rng(6)
    x = torch.tensor(rng.standard_normal((2, 8, 4, 4)), dtype=torch.float32)
    # matched_idxs: -1 background, -2 ignored (between thresholds), else the class of the matched box
    matched = torch.tensor(rng.integers(-2, 4, (2, 48)))
    opt = optim.SGD(head.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(steps):
        cls_logits = head(x)
        loss = 0
        for logits_per_image, matched_idxs in zip(cls_logits, matched):
            foreground_idxs = matched_idxs >= 0
            num_foreground = foreground_idxs.sum()
            gt_classes_target = torch.zeros_like(logits_per_image)
            gt_classes_target[foreground_idxs, matched_idxs[foreground_idxs]] = 1.0
            valid_idxs_per_image = matched_idxs != -2
            loss = loss + sigmoid_focal_loss(
                m, logits_per_image[valid_idxs_per_image], gt_classes_target[valid_idxs_per_image],
                reduction="sum") / max(1, num_foreground)
        loss = loss / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, head.cls_logits.weight.grad, head.conv[0].weight.grad, head.conv[1].weight.grad


def test_retinanet_focal_loss_head():
    weights = weights_of(lambda m: retina_program(m, None))
    (losses, g_cls, g_conv, g_gn), _ = run_both(retina_program, weights, rtol=1e-4, atol=1e-6)
    assert losses[-1] < losses[0]


def test_sigmoid_focal_loss_against_numpy():
    rng = np.random.default_rng(7)
    x, t = rng.standard_normal(12), rng.integers(0, 2, 12).astype(float)
    (loss, grad), _ = run_both(lambda m: (lambda xi: (sigmoid_focal_loss(m, xi, m.torch.tensor(t), reduction="sum")
                                                      .backward(), xi.grad)[1:] and (sigmoid_focal_loss(
                                                          m, xi.detach(), m.torch.tensor(t)), xi.grad))(
        m.torch.tensor(x, requires_grad=True)), rtol=1e-10, atol=1e-12)
    p = 1 / (1 + np.exp(-x))
    p_t = p * t + (1 - p) * (1 - t)
    expected = -np.log(p_t) * (1 - p_t) ** 2 * (0.25 * t + 0.75 * (1 - t))
    np.testing.assert_allclose(loss, expected, rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# A YOLOv3-style loss: targets assigned by the argmax of anchor IoU, written by index assignment
# ----------------------------------------------------------------------------------------------


def yolo_head(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.LeakyReLU(0.1),
                         nn.Conv2d(8, 3 * (5 + 2), 1))


def yolo_program(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = yolo_head(m)
    if weights is None:
        return model
    load(m, model, weights)
    num_anchors, num_classes, nG = 3, 2, 4
    anchors = torch.tensor([[1.0, 1.5], [2.0, 2.0], [3.0, 1.0]])  # in grid units

    def bbox_wh_iou(wh1, wh2):
        wh2 = wh2.t()
        w1, h1 = wh1[0], wh1[1]
        w2, h2 = wh2[0], wh2[1]
        inter_area = torch.min(w1, w2) * torch.min(h1, h2)
        union_area = (w1 * h1 + 1e-16) + w2 * h2 - inter_area
        return inter_area / union_area

    def build_targets(pred_cls, target, anchors, ignore_thres):
        nB = pred_cls.size(0)
        nA = pred_cls.size(1)
        nC = pred_cls.size(-1)
        nG = pred_cls.size(2)
        obj_mask = torch.zeros(nB, nA, nG, nG, dtype=torch.bool)
        noobj_mask = torch.ones(nB, nA, nG, nG, dtype=torch.bool)
        tx = torch.zeros(nB, nA, nG, nG)
        ty = torch.zeros(nB, nA, nG, nG)
        tw = torch.zeros(nB, nA, nG, nG)
        th = torch.zeros(nB, nA, nG, nG)
        tcls = torch.zeros(nB, nA, nG, nG, nC)
        target_boxes = target[:, 2:6] * nG
        gxy = target_boxes[:, :2]
        gwh = target_boxes[:, 2:]
        ious = torch.stack([bbox_wh_iou(anchor, gwh) for anchor in anchors])
        best_ious, best_n = ious.max(0)
        b, target_labels = target[:, :2].long().t()
        gx, gy = gxy.t()
        gw, gh = gwh.t()
        gi, gj = gxy.long().t()
        obj_mask[b, best_n, gj, gi] = 1
        noobj_mask[b, best_n, gj, gi] = 0
        for i, anchor_ious in enumerate(ious.t()):
            noobj_mask[b[i], anchor_ious > ignore_thres, gj[i], gi[i]] = 0
        tx[b, best_n, gj, gi] = gx - gx.floor()
        ty[b, best_n, gj, gi] = gy - gy.floor()
        tw[b, best_n, gj, gi] = torch.log(gw / anchors[best_n][:, 0] + 1e-16)
        th[b, best_n, gj, gi] = torch.log(gh / anchors[best_n][:, 1] + 1e-16)
        tcls[b, best_n, gj, gi, target_labels] = 1
        tconf = obj_mask.float()
        return obj_mask, noobj_mask, tx, ty, tw, th, tcls, tconf, best_n

    rng = np.random.default_rng(8)
    x = torch.tensor(rng.standard_normal((2, 3, nG, nG)), dtype=torch.float32)
    # rows: image, class, cx, cy, w, h (normalised)
    targets = torch.tensor([[0, 1, 0.30, 0.40, 0.30, 0.40],
                            [0, 0, 0.80, 0.20, 0.70, 0.20],
                            [1, 1, 0.55, 0.60, 0.45, 0.50],
                            [1, 0, 0.10, 0.90, 0.20, 0.22]], dtype=torch.float32)
    mse_loss, bce_loss = nn.MSELoss(), nn.BCELoss()
    opt = optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(steps):
        out = model(x)
        prediction = out.view(2, num_anchors, num_classes + 5, nG, nG).permute(0, 1, 3, 4, 2).contiguous()
        px = torch.sigmoid(prediction[..., 0])
        py = torch.sigmoid(prediction[..., 1])
        pw = prediction[..., 2]
        ph = prediction[..., 3]
        pred_conf = torch.sigmoid(prediction[..., 4])
        pred_cls = torch.sigmoid(prediction[..., 5:])
        obj_mask, noobj_mask, tx, ty, tw, th, tcls, tconf, best_n = build_targets(pred_cls, targets, anchors, 0.5)
        loss_x = mse_loss(px[obj_mask], tx[obj_mask])
        loss_y = mse_loss(py[obj_mask], ty[obj_mask])
        loss_w = mse_loss(pw[obj_mask], tw[obj_mask])
        loss_h = mse_loss(ph[obj_mask], th[obj_mask])
        loss_conf = bce_loss(pred_conf[obj_mask], tconf[obj_mask]) + 100 * bce_loss(pred_conf[noobj_mask],
                                                                                  tconf[noobj_mask])
        loss_cls = bce_loss(pred_cls[obj_mask], tcls[obj_mask])
        loss = loss_x + loss_y + loss_w + loss_h + loss_conf + loss_cls
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # the scatter_ form of one-hot class targets, as other repositories write it
    onehot = torch.zeros(targets.shape[0], num_classes).scatter_(1, targets[:, 1:2].long(), 1.0)
    return (losses, best_n, obj_mask, noobj_mask.sum(), tw, tcls.sum((0, 1)), onehot, model[0].weight.grad,
            model[1].running_var)


def test_yolov3_loss_with_argmax_target_assignment():
    weights = weights_of(lambda m: yolo_program(m, None))
    (losses, best_n, obj, n_noobj, tw, tcls, onehot, g, rv), _ = run_both(yolo_program, weights, rtol=1e-4,
                                                                          atol=1e-5)
    assert losses[-1] < losses[0] and best_n.dtype == np.int64 and obj.sum() == 4
    assert (onehot.argmax(1) == [1, 0, 1, 0]).all()


# ----------------------------------------------------------------------------------------------
# DETR's set losses on greedily matched pairs (L1 + GIoU on boxes, CE with a no-object class)
# ----------------------------------------------------------------------------------------------


def box_cxcywh_to_xyxy(m, x):
    x_c, y_c, w, h = x.unbind(-1)
    b = [(x_c - 0.5 * w), (y_c - 0.5 * h), (x_c + 0.5 * w), (y_c + 0.5 * h)]
    return m.torch.stack(b, dim=-1)


def detr_model(m):
    nn = m.nn

    class MiniDETR(nn.Module):
        def __init__(self, num_queries=6, hidden=16, num_classes=3):
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(3, hidden, 3, stride=2, padding=1), nn.ReLU())
            self.query_embed = nn.Embedding(num_queries, hidden)
            self.attn = nn.MultiheadAttention(hidden, 2, batch_first=True)
            self.class_embed = nn.Linear(hidden, num_classes + 1)
            self.bbox_embed = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 4))

        def forward(self, x):
            feats = self.backbone(x).flatten(2).transpose(1, 2)  # [B, HW, C]
            q = self.query_embed.weight.unsqueeze(0).repeat(x.shape[0], 1, 1)
            hs, _ = self.attn(q, feats, feats)
            return {"pred_logits": self.class_embed(hs), "pred_boxes": self.bbox_embed(hs).sigmoid()}

    return MiniDETR()


def detr_program(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    model = detr_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    num_classes, eos_coef = 3, 0.1
    empty_weight = torch.ones(num_classes + 1)
    empty_weight[-1] = eos_coef
    rng = np.random.default_rng(9)
    x = torch.tensor(rng.standard_normal((2, 3, 8, 8)), dtype=torch.float32)
    targets = [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]])},
               {"labels": torch.tensor([1, 1, 0]),
                "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.2, 0.8, 0.1, 0.2], [0.8, 0.2, 0.2, 0.2]])}]

    @torch.no_grad()
    def greedy_matcher(outputs, targets):
        bs, num_queries = outputs["pred_logits"].shape[:2]
        out_prob = outputs["pred_logits"].flatten(0, 1).softmax(-1)
        out_bbox = outputs["pred_boxes"].flatten(0, 1)
        tgt_ids = torch.cat([v["labels"] for v in targets])
        tgt_bbox = torch.cat([v["boxes"] for v in targets])
        cost_class = -out_prob[:, tgt_ids]
        cost_bbox = torch.cdist(out_bbox, tgt_bbox, p=1)
        cost_giou = -generalized_box_iou(m, box_cxcywh_to_xyxy(m, out_bbox), box_cxcywh_to_xyxy(m, tgt_bbox))
        C = 5 * cost_bbox + cost_class + 2 * cost_giou
        C = C.view(bs, num_queries, -1)
        sizes = [len(v["boxes"]) for v in targets]
        indices = []
        for i, c in enumerate(C.split(sizes, -1)):
            c = c[i].clone()
            rows, cols = [], []
            for _ in range(sizes[i]):  # greedy: the cheapest remaining (query, target) pair each time
                flat = c.argmin()
                r, col = flat // c.shape[1], flat % c.shape[1]
                rows.append(r)
                cols.append(col)
                c[r, :] = float("inf")
                c[:, col] = float("inf")
            indices.append((torch.stack(rows), torch.stack(cols)))
        return [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in indices]

    def _get_src_permutation_idx(indices):
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for (src, _) in indices])
        return batch_idx, src_idx

    opt = optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    losses = []
    for _ in range(steps):
        outputs = model(x)
        indices = greedy_matcher(outputs, targets)
        idx = _get_src_permutation_idx(indices)
        src_logits = outputs["pred_logits"]
        target_classes_o = torch.cat([t["labels"][J] for t, (_, J) in zip(targets, indices)])
        target_classes = torch.full(src_logits.shape[:2], num_classes, dtype=torch.int64)
        target_classes[idx] = target_classes_o
        loss_ce = F.cross_entropy(src_logits.transpose(1, 2), target_classes, empty_weight)
        num_boxes = sum(len(t["labels"]) for t in targets)
        src_boxes = outputs["pred_boxes"][idx]
        target_boxes = torch.cat([t["boxes"][i] for t, (_, i) in zip(targets, indices)], dim=0)
        loss_bbox = F.l1_loss(src_boxes, target_boxes, reduction="none").sum() / num_boxes
        loss_giou = (1 - torch.diag(generalized_box_iou(m, box_cxcywh_to_xyxy(m, src_boxes),
                                                        box_cxcywh_to_xyxy(m, target_boxes)))).sum() / num_boxes
        loss = loss_ce + 5 * loss_bbox + 2 * loss_giou
        opt.zero_grad()
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        losses.append([loss_ce.item(), loss_bbox.item(), loss_giou.item()])
    return losses, [i for pair in indices for i in pair], target_classes, model.query_embed.weight.grad


def test_detr_losses_with_greedy_matching():
    weights = weights_of(lambda m: detr_program(m, None))
    (losses, indices, target_classes, g), _ = run_both(detr_program, weights, rtol=1e-4, atol=1e-5)
    assert all(i.dtype == np.int64 for i in indices) and (target_classes < 4).all()
    assert (target_classes != 3).sum() == 5


# ----------------------------------------------------------------------------------------------
# An FPN top-down path, then ROI max pooling of crops by adaptive_max_pool2d
# ----------------------------------------------------------------------------------------------


def fpn_model(m):
    nn, F = m.nn, m.F

    class FeaturePyramidNetwork(nn.Module):
        def __init__(self, in_channels_list, out_channels):
            super().__init__()
            self.inner_blocks = nn.ModuleList()
            self.layer_blocks = nn.ModuleList()
            for in_channels in in_channels_list:
                self.inner_blocks.append(nn.Conv2d(in_channels, out_channels, 1))
                self.layer_blocks.append(nn.Conv2d(out_channels, out_channels, 3, padding=1))

        def forward(self, x):
            last_inner = self.inner_blocks[-1](x[-1])
            results = [self.layer_blocks[-1](last_inner)]
            for idx in range(len(x) - 2, -1, -1):
                inner_lateral = self.inner_blocks[idx](x[idx])
                feat_shape = inner_lateral.shape[-2:]
                inner_top_down = F.interpolate(last_inner, size=feat_shape, mode="nearest")
                last_inner = inner_lateral + inner_top_down
                results.insert(0, self.layer_blocks[idx](last_inner))
            # LastLevelMaxPool
            results.append(F.max_pool2d(results[-1], 1, 2, 0))
            return results

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.c2 = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
            self.c3 = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())
            self.c4 = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())
            self.fpn = FeaturePyramidNetwork([4, 6, 8], 5)

        def forward(self, x):
            c2 = self.c2(x)
            c3 = self.c3(c2)
            c4 = self.c4(c3)
            return self.fpn([c2, c3, c4])

    return Backbone()


def fpn_program(m, weights):
    torch, F = m.torch, m.F
    model = fpn_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(10)
    x = torch.tensor(rng.standard_normal((2, 3, 22, 18)), dtype=torch.float32)  # odd sizes: 11x9, 6x5, 3x3
    feats = model(x)
    p2 = feats[0]
    # ROI pooling: each box (image, x1, y1, x2, y2 in input pixels) cropped from P2 (stride 2) and pooled to 3x3
    rois = torch.tensor([[0, 0.0, 0.0, 12.0, 10.0], [0, 4.0, 6.0, 18.0, 20.0], [1, 2.0, 2.0, 9.0, 17.0]])
    spatial_scale = 1 / 2
    pooled = []
    for roi in rois:
        b = int(roi[0].item())
        x1, y1, x2, y2 = (roi[1:] * spatial_scale).round().long().tolist()
        crop = p2[b:b + 1, :, y1:y2 + 1, x1:x2 + 1]
        pooled.append(F.adaptive_max_pool2d(crop, (3, 3)))
    pooled = torch.cat(pooled)
    _, argmax = F.adaptive_max_pool2d(p2[:1, :, :5, :7], (2, 3), return_indices=True)
    loss = sum(f.pow(2).mean() for f in feats) + pooled.flatten(1).sum(1).pow(2).mean()
    loss.backward()
    return ([tuple(f.shape) for f in feats], feats[1], feats[3], pooled, argmax, model.fpn.inner_blocks[0].weight.grad,
            model.c2[0].weight.grad)


def test_fpn_top_down_and_roi_max_pooling():
    weights = weights_of(lambda m: fpn_program(m, None))
    (shapes, p3, p5, pooled, argmax, g_inner, g_c2), _ = run_both(fpn_program, weights, rtol=1e-4, atol=1e-5)
    assert shapes == [(2, 5, 11, 9), (2, 5, 6, 5), (2, 5, 3, 3), (2, 5, 2, 2)]
    assert pooled.shape == (3, 5, 3, 3) and argmax.dtype == np.int64


# ----------------------------------------------------------------------------------------------
# CenterNet: the penalty-reduced focal loss on a heatmap, then peaks by max_pool2d and topk
# ----------------------------------------------------------------------------------------------


def centernet_program(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2 + 2, 1))
    if weights is None:
        return model
    load(m, model, weights)
    model[2].bias.data[:2].fill_(-2.19)
    H = W = 8
    num_classes = 2
    rng = np.random.default_rng(11)
    x = torch.tensor(rng.standard_normal((2, 3, H, W)), dtype=torch.float32)
    centers = [[(2, 3, 0), (6, 5, 1)], [(4, 4, 1)]]  # (cx, cy, class) per image

    def gaussian_radius_heatmap(sigma=1.0):
        hm = torch.zeros(2, num_classes, H, W)
        ys = torch.arange(H, dtype=torch.float32).view(-1, 1)
        xs = torch.arange(W, dtype=torch.float32).view(1, -1)
        for b, objs in enumerate(centers):
            for cx, cy, c in objs:
                g = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma * sigma))
                hm[b, c] = torch.max(hm[b, c], g)
        return hm

    gt = gaussian_radius_heatmap()

    def _neg_loss(pred, gt):
        pos_inds = gt.eq(1).float()
        neg_inds = gt.lt(1).float()
        neg_weights = torch.pow(1 - gt, 4)
        pos_loss = torch.log(pred) * torch.pow(1 - pred, 2) * pos_inds
        neg_loss = torch.log(1 - pred) * torch.pow(pred, 2) * neg_weights * neg_inds
        num_pos = pos_inds.float().sum()
        pos_loss = pos_loss.sum()
        neg_loss = neg_loss.sum()
        if num_pos == 0:
            return -neg_loss
        return -(pos_loss + neg_loss) / num_pos

    def _sigmoid(x):
        return torch.clamp(x.sigmoid_(), min=1e-4, max=1 - 1e-4)

    opt = optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(steps):
        out = model(x)
        hm = _sigmoid(out[:, :num_classes].clone())
        loss = _neg_loss(hm, gt) + 0.1 * F.l1_loss(out[:, num_classes:], torch.zeros_like(out[:, num_classes:]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())

    def _nms(heat, kernel=3):
        pad = (kernel - 1) // 2
        hmax = F.max_pool2d(heat, (kernel, kernel), stride=1, padding=pad)
        keep = (hmax == heat).float()
        return heat * keep

    def _topk(scores, K=5):
        batch, cat, height, width = scores.size()
        topk_scores, topk_inds = torch.topk(scores.view(batch, cat, -1), K)
        topk_inds = topk_inds % (height * width)
        topk_ys = (topk_inds / width).int().float()
        topk_xs = (topk_inds % width).int().float()
        topk_score, topk_ind = torch.topk(topk_scores.view(batch, -1), K)
        topk_clses = (topk_ind // K).int()
        topk_inds = topk_inds.view(batch, -1, 1).gather(1, topk_ind.unsqueeze(2)).view(batch, K)
        topk_ys = topk_ys.view(batch, -1, 1).gather(1, topk_ind.unsqueeze(2)).view(batch, K)
        topk_xs = topk_xs.view(batch, -1, 1).gather(1, topk_ind.unsqueeze(2)).view(batch, K)
        return topk_score, topk_inds, topk_clses, topk_ys, topk_xs

    with torch.no_grad():
        peaks = _nms(gt + 0.01 * torch.tensor(rng.uniform(0, 1, gt.shape), dtype=torch.float32))
        scores, inds, clses, ys, xs = _topk(peaks, K=3)
        heat = _nms(torch.sigmoid(model(x)[:, :num_classes]))
    return losses, scores, inds, clses, ys, xs, heat, model[0].weight.grad


def test_centernet_focal_loss_and_heatmap_peaks():
    weights = weights_of(lambda m: centernet_program(m, None))
    (losses, scores, inds, clses, ys, xs, heat, g), _ = run_both(centernet_program, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] and inds.dtype == np.int64 and clses.dtype == np.int32
    # the three objects of image 0's top-3 include both of its centres, found by class and position
    found = {(int(c), int(x), int(y)) for c, x, y in zip(clses[0], xs[0], ys[0])}
    assert {(0, 2, 3), (1, 6, 5)} <= found
    assert (int(clses[1][0]), int(xs[1][0]), int(ys[1][0])) == (1, 4, 4)


# ----------------------------------------------------------------------------------------------
# A power spectrogram by hand (unfold / as_strided frames, Hann window, rfft) against torch.stft
# ----------------------------------------------------------------------------------------------


def audio_signal(n=200, batch=2, seed=12):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 1000.0
    return np.stack([np.sin(2 * np.pi * f * t) + 0.1 * rng.standard_normal(n) for f in (60.0, 220.0)[:batch]])


def spectrogram_program(m):
    torch, F = m.torch, m.F
    n_fft, hop = 32, 8
    x = torch.tensor(audio_signal(), requires_grad=True)
    window = torch.hann_window(n_fft, dtype=torch.float64)
    # by hand, center=True with reflect padding, as librosa and torchaudio do
    padded = F.pad(x.unsqueeze(1), (n_fft // 2, n_fft // 2), mode="reflect").squeeze(1)
    frames = padded.unfold(-1, n_fft, hop)  # [B, n_frames, n_fft]
    spec = torch.fft.rfft(frames * window, dim=-1)
    power = spec.abs() ** 2
    power = power.transpose(1, 2)  # [B, freq, time]
    # frames by as_strided on a contiguous 1-D signal
    sig = padded[0].contiguous()
    n_frames = 1 + (sig.shape[0] - n_fft) // hop
    strided = sig.as_strided((n_frames, n_fft), (hop, 1))
    power_strided = torch.fft.rfft(strided * window).abs().pow(2).T
    stft = torch.stft(x, n_fft, hop_length=hop, window=window, center=True, pad_mode="reflect", return_complex=True)
    stft_power = stft.abs() ** 2
    results = [power, power_strided, stft_power]
    for pad_mode in ("constant", "replicate", "circular"):
        s = torch.stft(x, n_fft, hop_length=hop, win_length=24, window=torch.hann_window(24, dtype=torch.float64),
                       center=True, pad_mode=pad_mode, normalized=True, return_complex=True)
        results.append(s.abs())
    nocenter = torch.stft(x, n_fft, hop_length=hop, window=window, center=False, onesided=True, return_complex=True)
    results.append(torch.view_as_real(nocenter))
    loss = power.log1p().mean() + sum(r.mean() for r in results[3:])
    loss.backward()
    results.append(x.grad)
    return results


def test_spectrogram_by_hand_and_stft_pad_modes():
    results, _ = run_both(spectrogram_program, rtol=1e-9, atol=1e-10)
    power, power_strided, stft_power = results[:3]
    assert power.shape == (2, 17, 26)
    np.testing.assert_allclose(power, stft_power, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(power_strided, stft_power[0], rtol=1e-10, atol=1e-10)
    # the 60 Hz tone's power peaks in the bin nearest 60 / (1000 / 32), the 220 Hz one nearest 7
    assert np.argmax(power[0].mean(1)) == 2 and np.argmax(power[1].mean(1)) == 7


# ----------------------------------------------------------------------------------------------
# A mel filterbank by hand, log-mel by clamp(min=1e-10).log10(), MFCC by a DCT matrix
# ----------------------------------------------------------------------------------------------


def mel_program(m):
    torch = m.torch
    sample_rate, n_fft, n_mels, n_mfcc = 1000, 32, 8, 5

    def hz_to_mel(freq):
        return 2595.0 * math.log10(1.0 + (freq / 700.0))

    def mel_to_hz(mels):
        return 700.0 * (10 ** (mels / 2595.0) - 1.0)

    def melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate):
        all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
        m_min = hz_to_mel(f_min)
        m_max = hz_to_mel(f_max)
        m_pts = torch.linspace(m_min, m_max, n_mels + 2, dtype=torch.float64)
        f_pts = mel_to_hz(m_pts)
        f_diff = f_pts[1:] - f_pts[:-1]  # (n_mels + 1)
        slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
        zero = torch.zeros(1, dtype=torch.float64)
        down_slopes = (-1.0 * slopes[:, :-2]) / f_diff[:-1]  # (n_freqs, n_mels)
        up_slopes = slopes[:, 2:] / f_diff[1:]  # (n_freqs, n_mels)
        fb = torch.max(zero, torch.min(down_slopes, up_slopes))
        # slaney normalisation
        enorm = 2.0 / (f_pts[2: n_mels + 2] - f_pts[:n_mels])
        return fb * enorm.unsqueeze(0)

    def create_dct(n_mfcc, n_mels, norm="ortho"):
        n = torch.arange(float(n_mels), dtype=torch.float64)
        k = torch.arange(float(n_mfcc), dtype=torch.float64).unsqueeze(1)
        dct = torch.cos(math.pi / float(n_mels) * (n + 0.5) * k)  # size (n_mfcc, n_mels)
        if norm is None:
            dct *= 2.0
        else:
            dct[0] *= 1.0 / math.sqrt(2.0)
            dct *= math.sqrt(2.0 / float(n_mels))
        return dct.t()

    fb = melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate)
    dct = create_dct(n_mfcc, n_mels)
    x = torch.tensor(audio_signal(), requires_grad=True)
    spec = torch.stft(x, n_fft, hop_length=8, window=torch.hann_window(n_fft, dtype=torch.float64),
                      return_complex=True).abs().pow(2.0)
    mel = torch.matmul(spec.transpose(-1, -2), fb).transpose(-1, -2)  # [B, n_mels, time]
    log_mel = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    log_mel = torch.max(log_mel, log_mel.amax(dim=(-2, -1), keepdim=True) - 80.0)  # top_db
    mfcc = torch.matmul(log_mel.transpose(-1, -2), dct).transpose(-1, -2)
    # cepstral mean and variance normalisation, then delta features by a conv1d stencil
    mfcc_n = (mfcc - mfcc.mean(-1, keepdim=True)) / (mfcc.std(-1, keepdim=True) + 1e-5)
    kernel = torch.tensor([[[-2.0, -1.0, 0.0, 1.0, 2.0]]], dtype=torch.float64).repeat(n_mfcc, 1, 1) / 10
    delta = m.F.conv1d(m.F.pad(mfcc_n, (2, 2), mode="replicate"), kernel, groups=n_mfcc)
    (mfcc_n.pow(2).mean() + delta.abs().mean()).backward()
    return fb, dct, log_mel, mfcc, delta, x.grad


def test_mel_filterbank_log_mel_and_mfcc():
    (fb, dct, log_mel, mfcc, delta, grad), _ = run_both(mel_program, rtol=1e-8, atol=1e-9)
    assert fb.shape == (17, 8) and (fb >= 0).all()
    np.testing.assert_allclose(dct.T @ dct, np.eye(5), atol=1e-12)  # orthonormal columns
    assert mfcc.shape == (2, 5, 26) and delta.shape == (2, 5, 26) and np.isfinite(grad).all()


# ----------------------------------------------------------------------------------------------
# SpecAugment: time and frequency masks by masked_fill
# ----------------------------------------------------------------------------------------------


def specaugment_program(m):
    torch = m.torch
    rng = np.random.default_rng(13)
    spec = torch.tensor(rng.standard_normal((3, 10, 20)), dtype=torch.float32, requires_grad=True)

    def mask_along_axis_iid(specgrams, mask_param, mask_value, axis, draws):
        value = torch.tensor(draws[0], dtype=specgrams.dtype) * mask_param
        min_value = torch.tensor(draws[1], dtype=specgrams.dtype) * (specgrams.size(axis) - value)
        mask_start = min_value.long()[..., None, None]
        mask_end = (min_value.long() + value.long())[..., None, None]
        mask = torch.arange(0, specgrams.size(axis), dtype=specgrams.dtype)
        specgrams = specgrams.transpose(axis, -1)
        specgrams = specgrams.masked_fill((mask >= mask_start) & (mask < mask_end), mask_value)
        return specgrams.transpose(axis, -1)

    freq_draws = rng.uniform(0, 1, (2, 3))
    time_draws = rng.uniform(0, 1, (2, 3))
    out = mask_along_axis_iid(spec, 4, 0.0, 1, freq_draws)
    out = mask_along_axis_iid(out, 6, spec.mean().item(), 2, time_draws)
    # the simpler in-place form with python ints, as in many ASR repositories
    aug = spec.detach().clone()
    for b in range(aug.shape[0]):
        f = int(freq_draws[0, b] * 4)
        f0 = int(freq_draws[1, b] * (aug.shape[1] - f))
        aug[b, f0:f0 + f, :] = 0
    (out * torch.arange(20.0)).sum().backward()
    return out, aug, spec.grad, (out == 0).sum(), (spec.grad == 0).all(dim=2)


def test_specaugment_masks():
    (out, aug, grad, n_zero, freq_masked), _ = run_both(specaugment_program)
    assert n_zero > 0 and freq_masked.any()


# ----------------------------------------------------------------------------------------------
# WaveNet: causal dilated Conv1d (padded on the left), gated units, residual and skip sums
# ----------------------------------------------------------------------------------------------


def mu_law_encoding(x, quantization_channels):
    mu = quantization_channels - 1.0
    x_mu = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return ((x_mu + 1) / 2 * mu + 0.5).astype(np.int64)


def wavenet_model(m):
    nn, F = m.nn, m.F

    class CausalConv1d(nn.Conv1d):
        def __init__(self, in_channels, out_channels, kernel_size, dilation=1):
            super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
            self.left_padding = (kernel_size - 1) * dilation

        def forward(self, x):
            return super().forward(F.pad(x, (self.left_padding, 0)))

    class ResidualBlock(nn.Module):
        def __init__(self, res_channels, skip_channels, dilation):
            super().__init__()
            self.dilated = CausalConv1d(res_channels, 2 * res_channels, 2, dilation=dilation)
            self.conv_res = nn.Conv1d(res_channels, res_channels, 1)
            self.conv_skip = nn.Conv1d(res_channels, skip_channels, 1)

        def forward(self, x):
            filt, gate = self.dilated(x).chunk(2, dim=1)
            gated = torch_tanh(filt) * torch_sigmoid(gate)
            return self.conv_res(gated) + x, self.conv_skip(gated)

    torch_tanh, torch_sigmoid = m.torch.tanh, m.torch.sigmoid

    class WaveNet(nn.Module):
        def __init__(self, classes=16, res=8, skip=12, dilations=(1, 2, 4, 8, 1, 2)):
            super().__init__()
            self.embed = nn.Embedding(classes, res)
            self.causal = CausalConv1d(res, res, 2)
            self.blocks = nn.ModuleList(ResidualBlock(res, skip, d) for d in dilations)
            self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(skip, skip, 1), nn.ReLU(), nn.Conv1d(skip, classes, 1))

        @property
        def receptive_field(self):
            return 1 + sum(b.dilated.left_padding for b in self.blocks) + self.causal.left_padding

        def forward(self, x):
            h = self.causal(self.embed(x).transpose(1, 2))
            skip_sum = 0
            for block in self.blocks:
                h, skip = block(h)
                skip_sum = skip_sum + skip
            return self.head(skip_sum)

    return WaveNet()


def wavenet_program(m, weights, steps=4):
    torch, F, optim = m.torch, m.F, m.optim
    model = wavenet_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    wave = np.sin(np.arange(2 * 41) * 0.3).reshape(2, 41) * 0.8
    q = torch.tensor(mu_law_encoding(wave, 16))
    inputs, targets = q[:, :-1], q[:, 1:]
    opt = optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        logits = model(inputs)  # [B, classes, T]
        loss = F.cross_entropy(logits, targets)
        opt.zero_grad()
        loss.backward()
        m.nn.utils.clip_grad_norm_(
            model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    # causality: changing a later sample leaves earlier outputs alone
    x2 = inputs.clone()
    x2[:, 30] = (x2[:, 30] + 5) % 16
    with torch.no_grad():
        a, b = model(inputs), model(x2)
    unchanged = torch.allclose(a[..., :30], b[..., :30])
    # sampling by argmax, one step at a time over the receptive field
    gen = inputs[:1, :model.receptive_field].clone()
    with torch.no_grad():
        for _ in range(5):
            nxt = model(gen[:, -model.receptive_field:])[:, :, -1].argmax(1, keepdim=True)
            gen = torch.cat([gen, nxt], dim=1)
    return losses, unchanged, (a[..., 30:] - b[..., 30:]).abs().sum() > 0, gen, model.blocks[0].dilated.weight.grad


def test_wavenet_causal_dilated_gated_stack():
    weights = weights_of(lambda m: wavenet_program(m, None))
    (losses, unchanged, changed, gen, g), _ = run_both(wavenet_program, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] and unchanged and changed and gen.shape == (1, 25)


# ----------------------------------------------------------------------------------------------
# A Conformer convolution module: pointwise conv, GLU, depthwise conv, BatchNorm1d, SiLU
# ----------------------------------------------------------------------------------------------


def conformer_model(m):
    nn = m.nn

    class ConvolutionModule(nn.Module):
        def __init__(self, input_dim, num_channels, depthwise_kernel_size, dropout=0.0):
            super().__init__()
            self.layer_norm = nn.LayerNorm(input_dim)
            self.sequential = nn.Sequential(
                nn.Conv1d(input_dim, 2 * num_channels, 1, stride=1, padding=0),
                nn.GLU(dim=1),
                nn.Conv1d(num_channels, num_channels, depthwise_kernel_size, stride=1,
                          padding=(depthwise_kernel_size - 1) // 2, groups=num_channels),
                nn.BatchNorm1d(num_channels),
                nn.SiLU(),
                nn.Conv1d(num_channels, input_dim, kernel_size=1, stride=1, padding=0),
                nn.Dropout(dropout),
            )

        def forward(self, input):
            x = self.layer_norm(input)
            x = x.transpose(1, 2)
            x = self.sequential(x)
            return x.transpose(1, 2)

    class FeedForward(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))

        def forward(self, x):
            return self.net(x)

    class ConformerBlock(nn.Module):
        def __init__(self, d=8, heads=2):
            super().__init__()
            self.ffn1 = FeedForward(d)
            self.attn_norm = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.conv = ConvolutionModule(d, d, 5)
            self.ffn2 = FeedForward(d)
            self.final_norm = nn.LayerNorm(d)

        def forward(self, x, key_padding_mask):
            x = x + 0.5 * self.ffn1(x)
            h = self.attn_norm(x)
            x = x + self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0]
            x = x + self.conv(x)
            x = x + 0.5 * self.ffn2(x)
            return self.final_norm(x)

    return ConformerBlock()


def conformer_program(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    model = conformer_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(14)
    x = torch.tensor(rng.standard_normal((3, 12, 8)), dtype=torch.float32)
    lengths = torch.tensor([12, 9, 7])
    key_padding_mask = torch.arange(12).expand(3, 12) >= lengths[:, None]
    target = torch.tensor(rng.standard_normal((3, 12, 8)), dtype=torch.float32)
    # SGD, not Adam: the depthwise conv's bias (before BatchNorm) and the attention's key bias have gradient 0
    # in exact arithmetic, and Adam would blow their rounding noise (1e-8) up to full steps of lr
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    losses = []
    model.train()
    for _ in range(steps):
        out = model(x, key_padding_mask)
        valid = ~key_padding_mask
        loss = F.mse_loss(out[valid], target[valid])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    bn = model.conv.sequential[3]
    model.eval()
    with torch.no_grad():
        ev = model(x, key_padding_mask)
    return (losses, model.conv.sequential[2].weight.grad, model.conv.sequential[0].weight.grad, bn.running_mean,
            bn.running_var, bn.num_batches_tracked, ev[~key_padding_mask])


def test_conformer_convolution_module():
    weights = weights_of(lambda m: conformer_program(m, None))
    (losses, g_dw, g_pw, rm, rv, nbt, ev), _ = run_both(conformer_program, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] and g_dw.shape == (8, 1, 5) and int(nbt) == 3


# ----------------------------------------------------------------------------------------------
# CTC training with F.ctc_loss on log_softmax outputs, greedy decoding by argmax + unique_consecutive
# ----------------------------------------------------------------------------------------------


def ctc_model(m):
    nn = m.nn

    class SpeechRecognizer(nn.Module):
        def __init__(self, n_feats=6, hidden=12, n_class=5):
            super().__init__()
            self.cnn = nn.Conv1d(n_feats, hidden, 3, padding=1)
            self.rnn = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
            self.classifier = nn.Linear(2 * hidden, n_class)

        def forward(self, x):
            x = m.F.gelu(self.cnn(x)).transpose(1, 2)  # [B, T, hidden]
            x, _ = self.rnn(x)
            return self.classifier(x)

    return SpeechRecognizer()


def ctc_program(m, weights, steps=6):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = ctc_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(15)
    B, T = 3, 14
    labels = [[1, 2, 2, 3], [4, 1], [3, 3, 4]]
    # each label is a feature prototype held for 2-3 frames, with blanks (noise) between
    protos = rng.standard_normal((5, 6))
    feats = 0.1 * rng.standard_normal((B, 6, T))
    for b, lab in enumerate(labels):
        t = 1
        for c in lab:
            feats[b, :, t:t + 2] += protos[c][:, None]
            t += 3
    x = torch.tensor(feats, dtype=torch.float32)
    targets = torch.tensor([c for lab in labels for c in lab])  # concatenated form
    target_lengths = torch.tensor([len(lab) for lab in labels])
    input_lengths = torch.tensor([14, 10, 12])
    criterion = nn.CTCLoss(blank=0, zero_infinity=True)
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-2, total_steps=steps, anneal_strategy="linear")
    losses = []
    for _ in range(steps):
        output = F.log_softmax(model(x), dim=2)  # [B, T, C]
        output = output.transpose(0, 1)  # [T, B, C]
        loss = criterion(output, targets, input_lengths, target_lengths)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    # padded-targets form and per-sample losses agree with the concatenated one
    padded = torch.zeros(B, 4, dtype=torch.long)
    for b, lab in enumerate(labels):
        padded[b, :len(lab)] = torch.tensor(lab)
    with torch.no_grad():
        lp = F.log_softmax(model(x), dim=2).transpose(0, 1)
        per = F.ctc_loss(lp, padded, input_lengths, target_lengths, reduction="none")
        per_cat = F.ctc_loss(lp, targets, input_lengths, target_lengths, reduction="sum")

    def greedy_decode(log_probs, lengths, blank=0):
        arg_maxes = torch.argmax(log_probs, dim=2).transpose(0, 1)  # [B, T]
        decodes = []
        for i, args in enumerate(arg_maxes):
            collapsed = torch.unique_consecutive(args[:lengths[i]])
            decodes.append(collapsed[collapsed != blank].tolist())
        return decodes, arg_maxes

    decodes, arg_maxes = greedy_decode(lp, input_lengths)
    return losses, per, per_cat, arg_maxes, decodes, model.rnn.weight_hh_l0_reverse.grad, model.cnn.weight.grad


def test_ctc_training_and_greedy_decoding():
    weights = weights_of(lambda m: ctc_program(m, None))
    (losses, per, per_cat, arg_maxes, decodes, g_rnn, g_cnn), _ = run_both(ctc_program, weights, rtol=1e-4,
                                                                           atol=1e-5)
    assert losses[-1] < losses[0] and arg_maxes.dtype == np.int64
    np.testing.assert_allclose(per.sum(), per_cat, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# YOLOv5's ComputeLoss (CIoU, neighbour-cell targets, objectness from detached IoU) and ModelEMA
# ----------------------------------------------------------------------------------------------


def bbox_iou(m, box1, box2, xywh=True, CIoU=False, eps=1e-7):
    torch = m.torch
    if xywh:  # transform from xywh to xyxy
        (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.chunk(4, -1), box2.chunk(4, -1)
        w1_, h1_, w2_, h2_ = w1 / 2, h1 / 2, w2 / 2, h2 / 2
        b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1_, x1 + w1_, y1 - h1_, y1 + h1_
        b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2_, x2 + w2_, y2 - h2_, y2 + h2_
    else:
        b1_x1, b1_y1, b1_x2, b1_y2 = box1.chunk(4, -1)
        b2_x1, b2_y1, b2_x2, b2_y2 = box2.chunk(4, -1)
        w1, h1 = b1_x2 - b1_x1, (b1_y2 - b1_y1).clamp(eps)
        w2, h2 = b2_x2 - b2_x1, (b2_y2 - b2_y1).clamp(eps)
    inter = (b1_x2.minimum(b2_x2) - b1_x1.maximum(b2_x1)).clamp(0) * \
            (b1_y2.minimum(b2_y2) - b1_y1.maximum(b2_y1)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if CIoU:
        cw = b1_x2.maximum(b2_x2) - b1_x1.minimum(b2_x1)  # convex (smallest enclosing box) width
        ch = b1_y2.maximum(b2_y2) - b1_y1.minimum(b2_y1)  # convex height
        c2 = cw ** 2 + ch ** 2 + eps  # convex diagonal squared
        rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4  # center dist ** 2
        v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
        with torch.no_grad():
            alpha = v / (v - iou + (1 + eps))
        return iou - (rho2 / c2 + v * alpha)  # CIoU
    return iou


def yolov5_model(m):
    nn = m.nn

    class Detect(nn.Module):
        def __init__(self, nc=2, anchors=((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119)), ch=(4, 6)):
            super().__init__()
            self.nc = nc
            self.no = nc + 5
            self.nl = len(anchors)
            self.na = len(anchors[0]) // 2
            self.register_buffer("anchors", m.torch.tensor(anchors).float().view(self.nl, -1, 2))
            self.stride = m.torch.tensor([8.0, 16.0])
            self.anchors /= self.stride.view(-1, 1, 1)
            self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)

        def forward(self, x):
            for i in range(self.nl):
                x[i] = self.m[i](x[i])
                bs, _, ny, nx = x[i].shape
                x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            return x

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.b1 = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.SiLU(),
                                    nn.Conv2d(4, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.SiLU(),
                                    nn.Conv2d(4, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.SiLU())
            self.b2 = nn.Sequential(nn.Conv2d(4, 6, 3, 2, 1, bias=False), nn.BatchNorm2d(6), nn.SiLU())
            self.detect = Detect()

        def forward(self, x):
            p3 = self.b1(x)
            p4 = self.b2(p3)
            return self.detect([p3, p4])

    return Model()


def smooth_BCE(eps=0.1):
    return 1.0 - 0.5 * eps, 0.5 * eps


def yolov5_program(m, weights, steps=3, float_check="dtype"):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = yolov5_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    from copy import deepcopy

    class ModelEMA:
        def __init__(self, model, decay=0.9999, tau=2000, updates=0):
            self.ema = deepcopy(model).eval()
            self.updates = updates
            self.decay = lambda x: decay * (1 - math.exp(-x / tau))
            for p in self.ema.parameters():
                p.requires_grad_(False)

        def update(self, model):
            self.updates += 1
            d = self.decay(self.updates)
            msd = model.state_dict()
            for k, v in self.ema.state_dict().items():
                if (v.dtype.is_floating_point if float_check == "dtype" else v.is_floating_point()):
                    v *= d
                    v += (1 - d) * msd[k].detach()

    class ComputeLoss:
        def __init__(self, model, autobalance=False):
            h = {"cls_pw": 1.0, "obj_pw": 1.0, "box": 0.05, "cls": 0.5, "obj": 1.0, "anchor_t": 4.0}
            self.BCEcls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([h["cls_pw"]]))
            self.BCEobj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([h["obj_pw"]]))
            self.cp, self.cn = smooth_BCE(eps=0.1)
            det = model.detect
            self.balance = [4.0, 1.0]
            self.gr, self.hyp = 1.0, h
            self.na, self.nc, self.nl, self.anchors = det.na, det.nc, det.nl, det.anchors
            self.sort_obj_iou = True

        def __call__(self, p, targets):
            lcls = torch.zeros(1)
            lbox = torch.zeros(1)
            lobj = torch.zeros(1)
            tcls, tbox, indices, anchors = self.build_targets(p, targets)
            for i, pi in enumerate(p):
                b, a, gj, gi = indices[i]
                tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype)
                n = b.shape[0]
                if n:
                    pxy, pwh, _, pcls = pi[b, a, gj, gi].split((2, 2, 1, self.nc), 1)
                    pxy = pxy.sigmoid() * 2 - 0.5
                    pwh = (pwh.sigmoid() * 2) ** 2 * anchors[i]
                    pbox = torch.cat((pxy, pwh), 1)
                    iou = bbox_iou(m, pbox, tbox[i], CIoU=True).squeeze()
                    lbox += (1.0 - iou).mean()
                    iou = iou.detach().clamp(0).type(tobj.dtype)
                    if self.sort_obj_iou:
                        j = iou.argsort()
                        b, a, gj, gi, iou = b[j], a[j], gj[j], gi[j], iou[j]
                    if self.gr < 1:
                        iou = (1.0 - self.gr) + self.gr * iou
                    tobj[b, a, gj, gi] = iou
                    if self.nc > 1:
                        t = torch.full_like(pcls, self.cn)
                        t[range(n), tcls[i]] = self.cp
                        lcls += self.BCEcls(pcls, t)
                obji = self.BCEobj(pi[..., 4], tobj)
                lobj += obji * self.balance[i]
            lbox *= self.hyp["box"]
            lobj *= self.hyp["obj"]
            lcls *= self.hyp["cls"]
            bs = tobj.shape[0]
            return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()

        def build_targets(self, p, targets):
            na, nt = self.na, targets.shape[0]
            tcls, tbox, indices, anch = [], [], [], []
            gain = torch.ones(7)
            ai = torch.arange(na).float().view(na, 1).repeat(1, nt)
            targets = torch.cat((targets.repeat(na, 1, 1), ai[..., None]), 2)
            g = 0.5
            off = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]]).float() * g
            for i in range(self.nl):
                anchors, shape = self.anchors[i], p[i].shape
                gain[2:6] = torch.tensor(shape)[[3, 2, 3, 2]]
                t = targets * gain
                if nt:
                    r = t[..., 4:6] / anchors[:, None]
                    j = torch.max(r, 1 / r).max(2)[0] < self.hyp["anchor_t"]
                    t = t[j]
                    gxy = t[:, 2:4]
                    gxi = gain[[2, 3]] - gxy
                    j, k = ((gxy % 1 < g) & (gxy > 1)).T
                    l, m_ = ((gxi % 1 < g) & (gxi > 1)).T
                    j = torch.stack((torch.ones_like(j), j, k, l, m_))
                    t = t.repeat((5, 1, 1))[j]
                    offsets = (torch.zeros_like(gxy)[None] + off[:, None])[j]
                else:
                    t = targets[0]
                    offsets = 0
                bc, gxy, gwh, a = t.chunk(4, 1)
                a, (b, c) = a.long().view(-1), bc.long().T
                gij = (gxy - offsets).long()
                gi, gj = gij.T
                indices.append((b, a, gj.clamp_(0, shape[2] - 1), gi.clamp_(0, shape[3] - 1)))
                tbox.append(torch.cat((gxy - gij, gwh), 1))
                anch.append(anchors[a])
                tcls.append(c)
            return tcls, tbox, indices, anch

    rng = np.random.default_rng(16)
    imgs = torch.tensor(rng.standard_normal((2, 3, 32, 32)), dtype=torch.float32)
    # image, class, x, y, w, h (normalised)
    targets = torch.tensor([[0, 0, 0.30, 0.35, 0.30, 0.40], [0, 1, 0.74, 0.22, 0.50, 0.30],
                            [1, 1, 0.52, 0.61, 0.90, 0.80], [1, 0, 0.12, 0.88, 0.16, 0.20]])
    compute_loss = ComputeLoss(model)
    ema = ModelEMA(model, decay=0.9, tau=1)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    losses, items = [], []
    model.train()
    for _ in range(steps):
        pred = model(imgs)
        loss, loss_items = compute_loss(pred, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
        losses.append(loss.item())
        items.append(loss_items)
    tcls, tbox, indices, anch = compute_loss.build_targets(pred, targets)

    def clip_boxes(boxes, shape):
        boxes[..., 0].clamp_(0, shape[1])  # x1
        boxes[..., 1].clamp_(0, shape[0])  # y1
        boxes[..., 2].clamp_(0, shape[1])  # x2
        boxes[..., 3].clamp_(0, shape[0])  # y2

    def xywh2xyxy(x):
        y = x.clone()
        y[..., 0] = x[..., 0] - x[..., 2] / 2
        y[..., 1] = x[..., 1] - x[..., 3] / 2
        y[..., 2] = x[..., 0] + x[..., 2] / 2
        y[..., 3] = x[..., 1] + x[..., 3] / 2
        return y

    boxes = xywh2xyxy(targets[:, 2:] * 32)
    clip_boxes(boxes, (24, 20))
    ema_sd = ema.ema.state_dict()
    return (losses, items, [t for ind in indices for t in ind], tbox, tcls, anch, model.detect.m[0].weight.grad,
            model.b1[0].weight.grad, ema_sd["b1.1.running_mean"], ema_sd["detect.m[1].bias".replace("[1]", ".1")],
            ema_sd["b1.1.num_batches_tracked"], boxes)


@pytest.mark.parametrize("float_check", ["dtype", "tensor"])
def test_yolov5_compute_loss_and_model_ema(float_check):
    weights = weights_of(lambda m: yolov5_program(m, None))
    (losses, items, indices, tbox, tcls, anch, g_det, g_b1, ema_rm, ema_bias, ema_nbt, boxes), _ = run_both(
        yolov5_program, weights, rtol=1e-4, atol=1e-5, float_check=float_check)
    assert losses[-1] < losses[0] and all(i.dtype == np.int64 for i in indices)
    assert boxes[:, [0, 2]].max() <= 20 and boxes[:, [1, 3]].max() <= 24 and boxes.min() >= 0
    assert int(ema_nbt) == 0 and not np.allclose(ema_rm, 0)


# ----------------------------------------------------------------------------------------------
# RoIAlign by hand: bilinear samples by affine_grid + grid_sample, averaged per bin (Mask R-CNN)
# ----------------------------------------------------------------------------------------------


def roi_align_program(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(17)
    feat = torch.tensor(rng.standard_normal((2, 3, 9, 11)), requires_grad=True)
    rois = torch.tensor([[0, 1.2, 0.7, 8.3, 6.1], [1, 0.0, 0.0, 10.0, 8.0], [0, 3.5, 2.25, 5.0, 7.75],
                         [1, -1.0, 2.0, 4.0, 12.0]], dtype=torch.float64)
    out_size, sampling = 2, 2
    H, W = feat.shape[-2:]

    def roi_align(feat, rois, output_size, sampling_ratio, spatial_scale=1.0, aligned=True):
        # one bilinear grid per roi: the affine map from [-1, 1]^2 of the output to the box in normalised coords
        n = rois.shape[0]
        offset = 0.5 if aligned else 0.0
        x1 = rois[:, 1] * spatial_scale - offset
        y1 = rois[:, 2] * spatial_scale - offset
        x2 = rois[:, 3] * spatial_scale - offset
        y2 = rois[:, 4] * spatial_scale - offset
        # pixel centres at integers: normalised x = (2x + 1) / W - 1 with align_corners=False
        cx = ((x1 + x2) / 2 * 2 + 1) / W - 1
        cy = ((y1 + y2) / 2 * 2 + 1) / H - 1
        theta = torch.zeros(n, 2, 3, dtype=feat.dtype)
        theta[:, 0, 0] = (x2 - x1) / W
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = (y2 - y1) / H
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, (n, feat.shape[1], output_size * sampling_ratio, output_size * sampling_ratio),
                             align_corners=False)
        crops = F.grid_sample(feat[rois[:, 0].long()], grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False)
        return F.avg_pool2d(crops, sampling_ratio)

    pooled = roi_align(feat, rois, out_size, sampling)
    border = F.grid_sample(feat, torch.tensor(rng.uniform(-1.3, 1.3, (2, 3, 4, 2))), mode="bilinear",
                           padding_mode="border", align_corners=True)
    nearest = F.grid_sample(feat, torch.tensor(rng.uniform(-1.1, 1.1, (2, 3, 4, 2))), mode="nearest",
                            padding_mode="reflection", align_corners=False)
    (pooled.pow(2).sum() + border.sum() + nearest.sum()).backward()
    return pooled, border, nearest, feat.grad


def test_roi_align_by_grid_sample():
    (pooled, border, nearest, grad), _ = run_both(roi_align_program, rtol=1e-9, atol=1e-10)
    assert pooled.shape == (4, 3, 2, 2) and np.isfinite(grad).all()


# ----------------------------------------------------------------------------------------------
# Resampling by a windowed-sinc kernel (torchaudio.functional.resample by hand), Griffin-Lim
# ----------------------------------------------------------------------------------------------


def resample_program(m):
    torch, F = m.torch, m.F

    def _get_sinc_resample_kernel(orig_freq, new_freq, gcd, lowpass_filter_width=6, rolloff=0.99, dtype=None):
        orig_freq = int(orig_freq) // gcd
        new_freq = int(new_freq) // gcd
        base_freq = min(orig_freq, new_freq)
        base_freq *= rolloff
        width = math.ceil(lowpass_filter_width * orig_freq / base_freq)
        idx = torch.arange(-width, width + orig_freq, dtype=dtype)[None, None] / orig_freq
        t = torch.arange(0, -new_freq, -1, dtype=dtype)[:, None, None] / new_freq + idx
        t *= base_freq
        t = t.clamp_(-lowpass_filter_width, lowpass_filter_width)
        window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
        t *= math.pi
        scale = base_freq / orig_freq
        kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
        kernels *= window * scale
        return kernels, width

    def _apply_sinc_resample_kernel(waveform, orig_freq, new_freq, gcd, kernel, width):
        orig_freq = int(orig_freq) // gcd
        new_freq = int(new_freq) // gcd
        shape = waveform.size()
        waveform = waveform.view(-1, shape[-1])
        num_wavs, length = waveform.shape
        waveform = F.pad(waveform, (width, width + orig_freq))
        resampled = F.conv1d(waveform[:, None], kernel, stride=orig_freq)
        resampled = resampled.transpose(1, 2).reshape(num_wavs, -1)
        target_length = torch.ceil(torch.as_tensor(new_freq * length / orig_freq)).long()
        resampled = resampled[..., :target_length]
        return resampled.view(shape[:-1] + resampled.shape[-1:])

    x = torch.tensor(audio_signal(n=120), requires_grad=True)
    gcd = math.gcd(1000, 600)
    kernel, width = _get_sinc_resample_kernel(1000, 600, gcd, dtype=torch.float64)
    down = _apply_sinc_resample_kernel(x, 1000, 600, gcd, kernel, width)
    kernel_up, width_up = _get_sinc_resample_kernel(600, 1000, gcd, dtype=torch.float64)
    up = _apply_sinc_resample_kernel(down, 600, 1000, gcd, kernel_up, width_up)
    (down.pow(2).sum() + up.sum()).backward()

    # Griffin-Lim: phase recovered from a magnitude by alternating istft / stft with momentum
    n_fft, hop = 32, 8
    window = torch.hann_window(n_fft, dtype=torch.float64)
    target = torch.stft(x.detach(), n_fft, hop, window=window, return_complex=True).abs()
    g = torch.Generator().manual_seed(0)
    angles = torch.tensor(np.exp(2j * np.pi * np.random.default_rng(18).uniform(0, 1, target.shape)))
    tprev = torch.tensor(0.0, dtype=angles.dtype)
    errors = []
    for _ in range(8):
        inverse = torch.istft(target * angles, n_fft=n_fft, hop_length=hop, window=window, length=120)
        rebuilt = torch.stft(inverse, n_fft=n_fft, hop_length=hop, window=window, center=True, pad_mode="reflect",
                             normalized=False, onesided=True, return_complex=True)
        angles = rebuilt
        angles = angles - tprev.mul_(0.99 / (1 + 0.99))
        angles = angles.div(angles.abs().add(1e-16))
        tprev = rebuilt
        errors.append((rebuilt.abs() - target).pow(2).mean().item())
    phase = torch.angle(angles)
    polar = torch.polar(target, phase)
    waveform = torch.istft(polar, n_fft=n_fft, hop_length=hop, window=window, length=120)
    return kernel, down, up, x.grad, errors, waveform, torch.fft.rfftfreq(n_fft, d=1 / 1000)


def test_sinc_resample_and_griffin_lim():
    (kernel, down, up, grad, errors, waveform, freqs), _ = run_both(resample_program, rtol=1e-8, atol=1e-9)
    assert kernel.shape == (3, 1, 27) and down.shape == (2, 72) and up.shape == (2, 120)
    assert errors[-1] < errors[0]
    np.testing.assert_allclose(freqs, np.arange(17) * 1000 / 32)


# ----------------------------------------------------------------------------------------------
# CTC edge cases: an impossible alignment under zero_infinity, int32 targets, float64 log-probs
# ----------------------------------------------------------------------------------------------


def ctc_edges_program(m, zero_infinity):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(19)
    T, B, C = 6, 3, 4
    logits = torch.tensor(rng.standard_normal((T, B, C)), requires_grad=True)
    log_probs = logits.log_softmax(2)
    # sample 1 needs 5 labels with a repeat (at least 6 frames) but has 4: its loss is infinite
    targets = torch.tensor([[1, 2, 0, 0, 0], [3, 3, 1, 2, 1], [2, 0, 0, 0, 0]], dtype=torch.int32)
    input_lengths = torch.tensor([6, 4, 5], dtype=torch.int32)
    target_lengths = torch.tensor([2, 5, 1], dtype=torch.int32)
    per = F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="none",
                     zero_infinity=zero_infinity)
    mean = F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
                      zero_infinity=zero_infinity)
    if zero_infinity:
        mean.backward()
        return per, mean, logits.grad
    # the finite samples' gradient, and blank as the last class
    per[[0, 2]].sum().backward()
    last = F.ctc_loss(log_probs, targets - 1 + (targets == 0).int() * C, [6, 4, 5], (2, 5, 1), blank=C - 1,
                      reduction="none")
    return per, mean, logits.grad, last


def test_ctc_impossible_alignment_and_zero_infinity():
    (per, mean, grad), _ = run_both(ctc_edges_program, True, rtol=1e-9, atol=1e-10)
    assert per[1] == 0 and np.isfinite(mean) and (grad[:, 1] == 0).all()
    (per, mean, grad, last), _ = run_both(ctc_edges_program, False, rtol=1e-9, atol=1e-10)
    # PyTorch's gradient is NaN on the impossible sample's 4 frames even though only the others were summed
    assert np.isinf(per[1]) and np.isinf(mean) and np.isnan(grad[:4, 1]).all() and (grad[4:, 1] == 0).all()
    assert np.isfinite(grad[:, [0, 2]]).all() and np.isinf(last[1]) and np.isfinite(last[[0, 2]]).all()


# ----------------------------------------------------------------------------------------------
# Average precision (VOC all-points and COCO 101-point) from sorted detections, by cumsum and cummax
# ----------------------------------------------------------------------------------------------


def average_precision_program(m):
    torch = m.torch
    rng = np.random.default_rng(20)
    gt = torch.tensor(random_boxes(6, 21, scale=20.0), dtype=torch.float32)
    gt_labels = torch.tensor([0, 1, 0, 2, 1, 0])
    noisy = gt.repeat(2, 1) + torch.tensor(rng.normal(0, 1.5, (12, 4)), dtype=torch.float32)
    det_boxes = torch.cat([noisy, torch.tensor(random_boxes(4, 22, scale=20.0), dtype=torch.float32)])
    det_boxes = torch.cat([det_boxes[:, :2], torch.max(det_boxes[:, 2:], det_boxes[:, :2] + 0.5)], 1)
    det_scores = torch.tensor(rng.uniform(0, 1, 16), dtype=torch.float32)
    det_labels = torch.cat([gt_labels.repeat(2), torch.tensor([0, 1, 2, 0])])
    aps_voc, aps_coco, counts = [], [], []
    for c in det_labels.unique(sorted=True):
        dmask, gmask = det_labels == c, gt_labels == c
        boxes, scores, gts = det_boxes[dmask], det_scores[dmask], gt[gmask]
        order = torch.argsort(scores, descending=True, stable=True)
        boxes, scores = boxes[order], scores[order]
        iou, _ = box_iou(m, boxes, gts)
        matched = torch.zeros(gts.shape[0], dtype=torch.bool)
        tp = torch.zeros(boxes.shape[0])
        for i in range(boxes.shape[0]):
            best_iou, j = iou[i].max(0)
            if best_iou >= 0.5 and not matched[j]:
                tp[i] = 1
                matched[j] = True
        fp = 1 - tp
        tp_cum, fp_cum = tp.cumsum(0), fp.cumsum(0)
        recall = tp_cum / gts.shape[0]
        precision = tp_cum / (tp_cum + fp_cum).clamp(min=torch.finfo(torch.float32).eps)
        # VOC: the precision envelope (max to the right) integrated over recall changes
        mrec = torch.cat([torch.tensor([0.0]), recall, torch.tensor([1.0])])
        mpre = torch.cat([torch.tensor([1.0]), precision, torch.tensor([0.0])])
        mpre = torch.flip(torch.cummax(torch.flip(mpre, dims=[0]), dim=0)[0], dims=[0])
        i = torch.where(mrec[1:] != mrec[:-1])[0]
        aps_voc.append(((mrec[i + 1] - mrec[i]) * mpre[i + 1]).sum())
        # COCO: precision read at 101 recall thresholds by searchsorted
        rec_thrs = torch.linspace(0.0, 1.0, 101)
        envelope = mpre[1:-1]
        inds = torch.searchsorted(recall, rec_thrs, side="left")
        q = torch.zeros(101)
        valid = inds < recall.shape[0]
        q[valid] = envelope[inds[valid]]
        aps_coco.append(q.mean())
        counts.append(torch.bincount(tp.long(), minlength=2))
    ap_voc, ap_coco = torch.stack(aps_voc), torch.stack(aps_coco)
    # also torch.trapezoid over the envelope, as some repositories integrate it
    trap = torch.trapezoid(mpre, mrec)
    return ap_voc, ap_coco, ap_voc.mean(), torch.stack(counts), trap, det_labels.unique(return_counts=True)


def test_average_precision_voc_and_coco():
    (ap_voc, ap_coco, mAP, counts, trap, (labels, n)), _ = run_both(average_precision_program, rtol=1e-6,
                                                                    atol=1e-7)
    assert ap_voc.shape == (3,) and ((0 <= ap_voc) & (ap_voc <= 1)).all() and counts.sum() == 16
    assert (labels == [0, 1, 2]).all() and n.sum() == 16


# ----------------------------------------------------------------------------------------------
# SSD's MultiBox loss with hard negative mining (double sort), FCOS's targets and centerness
# ----------------------------------------------------------------------------------------------


def ssd_fcos_program(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(23)
    num, num_priors, num_classes = 2, 20, 4
    conf_data = torch.tensor(rng.standard_normal((num, num_priors, num_classes)), requires_grad=True)
    loc_data = torch.tensor(rng.standard_normal((num, num_priors, 4)), requires_grad=True)
    # few positives, as in SSD: the hard negatives are then all of positive loss (PyTorch's unstable sort puts the
    # zeroed positives' ties in an order of its own, which a program cannot rely on)
    conf_t = torch.zeros(num, num_priors, dtype=torch.long)
    conf_t[0, [2, 7, 11]] = torch.tensor([1, 3, 2])
    conf_t[1, [0, 5, 6, 13]] = torch.tensor([2, 2, 1, 3])
    loc_t = torch.tensor(rng.standard_normal((num, num_priors, 4)))
    negpos_ratio = 3

    def log_sum_exp(x):
        x_max = x.data.max()
        return torch.log(torch.sum(torch.exp(x - x_max), 1, keepdim=True)) + x_max

    pos = conf_t > 0
    num_pos = pos.sum(dim=1, keepdim=True)
    pos_idx = pos.unsqueeze(pos.dim()).expand_as(loc_data)
    loc_p = loc_data[pos_idx].view(-1, 4)
    loc_tt = loc_t[pos_idx].view(-1, 4)
    loss_l = F.smooth_l1_loss(loc_p, loc_tt, reduction="sum")
    batch_conf = conf_data.view(-1, num_classes)
    loss_c = log_sum_exp(batch_conf) - batch_conf.gather(1, conf_t.view(-1, 1))
    loss_c = loss_c.view(num, -1)
    loss_c[pos] = 0  # filter out pos boxes for now
    _, loss_idx = loss_c.sort(1, descending=True)
    _, idx_rank = loss_idx.sort(1)
    num_neg = torch.clamp(negpos_ratio * num_pos, max=pos.size(1) - 1)
    neg = idx_rank < num_neg.expand_as(idx_rank)
    pos_idx = pos.unsqueeze(2).expand_as(conf_data)
    neg_idx = neg.unsqueeze(2).expand_as(conf_data)
    conf_p = conf_data[(pos_idx + neg_idx).gt(0)].view(-1, num_classes)
    targets_weighted = conf_t[(pos + neg).gt(0)]
    loss_cc = F.cross_entropy(conf_p, targets_weighted, reduction="sum")
    N = num_pos.data.sum()
    (loss_l / N + loss_cc / N).backward()

    # FCOS: each location's regression targets (l, t, r, b) to every box, the smallest box containing it
    INF = 100000000
    xs, ys = torch.meshgrid(torch.arange(0, 32, 8.0) + 4, torch.arange(0, 32, 8.0) + 4, indexing="xy")
    locations = torch.stack((xs.reshape(-1), ys.reshape(-1)), dim=1)
    bboxes = torch.tensor([[0.0, 0.0, 20.0, 18.0], [10.0, 6.0, 31.0, 30.0], [2.0, 22.0, 9.0, 31.0]])
    labels = torch.tensor([1, 2, 3])
    area = (bboxes[:, 2] - bboxes[:, 0]) * (bboxes[:, 3] - bboxes[:, 1])
    l = locations[:, 0][:, None] - bboxes[:, 0][None]
    t = locations[:, 1][:, None] - bboxes[:, 1][None]
    r = bboxes[:, 2][None] - locations[:, 0][:, None]
    b = bboxes[:, 3][None] - locations[:, 1][:, None]
    reg_targets_per_im = torch.stack([l, t, r, b], dim=2)
    is_in_boxes = reg_targets_per_im.min(dim=2)[0] > 0
    max_reg_targets_per_im = reg_targets_per_im.max(dim=2)[0]
    is_cared_in_the_level = (max_reg_targets_per_im >= 0) & (max_reg_targets_per_im <= 64)
    locations_to_gt_area = area[None].repeat(len(locations), 1)
    locations_to_gt_area[is_in_boxes == 0] = INF
    locations_to_gt_area[is_cared_in_the_level == 0] = INF
    locations_to_min_area, locations_to_gt_inds = locations_to_gt_area.min(dim=1)
    reg_targets = reg_targets_per_im[range(len(locations)), locations_to_gt_inds]
    labels_per_im = labels[locations_to_gt_inds]
    labels_per_im[locations_to_min_area == INF] = 0
    left_right = reg_targets[:, [0, 2]]
    top_bottom = reg_targets[:, [1, 3]]
    centerness = (left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0]) * \
                 (top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0])
    centerness = torch.sqrt(centerness.clamp(min=0))
    return (loss_l, loss_cc, neg, idx_rank.masked_fill(pos, -1), conf_data.grad, loc_data.grad, labels_per_im,
            reg_targets, centerness, locations_to_gt_inds)


def test_ssd_hard_negative_mining_and_fcos_targets():
    (loss_l, loss_c, neg, idx_rank, g_conf, g_loc, labels, reg, centerness, inds), _ = run_both(
        ssd_fcos_program, rtol=1e-6, atol=1e-7)  # SSD in float64, FCOS in float32
    assert idx_rank.dtype == np.int64 and (idx_rank[0] == -1).sum() == 3 and (idx_rank[1] < 16).all()
    assert labels.shape == (16,) and set(labels.tolist()) <= {0, 1, 2, 3}


# ----------------------------------------------------------------------------------------------
# HiFi-GAN: weight-normed ConvTranspose1d generator with MRF blocks, a multi-period discriminator
# ----------------------------------------------------------------------------------------------


def hifigan_models(m, parametrized):
    nn, F = m.nn, m.F
    weight_norm = nn.utils.parametrizations.weight_norm if parametrized else nn.utils.weight_norm
    LRELU_SLOPE = 0.1

    def get_padding(kernel_size, dilation=1):
        return int((kernel_size * dilation - dilation) / 2)

    def init_weights(mod, mean=0.0, std=0.01):
        if mod.__class__.__name__.find("Conv") != -1:
            mod.weight.data.normal_(mean, std)

    class ResBlock(nn.Module):
        def __init__(self, channels, kernel_size=3, dilation=(1, 3)):
            super().__init__()
            self.convs = nn.ModuleList([weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d,
                                                              padding=get_padding(kernel_size, d)))
                                        for d in dilation])

        def forward(self, x):
            for c in self.convs:
                xt = F.leaky_relu(x, LRELU_SLOPE)
                xt = c(xt)
                x = xt + x
            return x

    class Generator(nn.Module):
        def __init__(self, in_ch=4, up_rates=(2, 2), up_kernels=(4, 4), ch=8):
            super().__init__()
            self.conv_pre = weight_norm(nn.Conv1d(in_ch, ch, 7, 1, padding=3))
            self.ups = nn.ModuleList()
            for i, (u, k) in enumerate(zip(up_rates, up_kernels)):
                self.ups.append(weight_norm(nn.ConvTranspose1d(ch // (2 ** i), ch // (2 ** (i + 1)), k, u,
                                                               padding=(k - u) // 2)))
            self.resblocks = nn.ModuleList()
            for i in range(len(self.ups)):
                c = ch // (2 ** (i + 1))
                for k, d in zip((3, 5), ((1, 3), (1, 2))):
                    self.resblocks.append(ResBlock(c, k, d))
            self.conv_post = weight_norm(nn.Conv1d(c, 1, 7, 1, padding=3))
            self.ups.apply(init_weights)
            self.num_kernels = 2

        def forward(self, x):
            x = self.conv_pre(x)
            for i, up in enumerate(self.ups):
                x = F.leaky_relu(x, LRELU_SLOPE)
                x = up(x)
                xs = None
                for j in range(self.num_kernels):
                    if xs is None:
                        xs = self.resblocks[i * self.num_kernels + j](x)
                    else:
                        xs += self.resblocks[i * self.num_kernels + j](x)
                x = xs / self.num_kernels
            x = F.leaky_relu(x)
            x = self.conv_post(x)
            return torch_tanh(x)

    torch_tanh = m.torch.tanh

    class DiscriminatorP(nn.Module):
        def __init__(self, period, kernel_size=5, stride=3):
            super().__init__()
            self.period = period
            self.convs = nn.ModuleList([
                weight_norm(nn.Conv2d(1, 4, (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
                weight_norm(nn.Conv2d(4, 8, (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
            ])
            self.conv_post = weight_norm(nn.Conv2d(8, 1, (3, 1), 1, padding=(1, 0)))

        def forward(self, x):
            fmap = []
            b, c, t = x.shape
            if t % self.period != 0:  # pad first
                n_pad = self.period - (t % self.period)
                x = F.pad(x, (0, n_pad), "reflect")
                t = t + n_pad
            x = x.view(b, c, t // self.period, self.period)
            for l in self.convs:
                x = l(x)
                x = F.leaky_relu(x, LRELU_SLOPE)
                fmap.append(x)
            x = self.conv_post(x)
            fmap.append(x)
            x = m.torch.flatten(x, 1, -1)
            return x, fmap

    class MultiPeriodDiscriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.discriminators = nn.ModuleList([DiscriminatorP(2), DiscriminatorP(3), DiscriminatorP(5)])

        def forward(self, y, y_hat):
            y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
            for d in self.discriminators:
                y_d_r, fmap_r = d(y)
                y_d_g, fmap_g = d(y_hat)
                y_d_rs.append(y_d_r)
                fmap_rs.append(fmap_r)
                y_d_gs.append(y_d_g)
                fmap_gs.append(fmap_g)
            return y_d_rs, y_d_gs, fmap_rs, fmap_gs

    return nn.ModuleDict({"generator": Generator(), "mpd": MultiPeriodDiscriminator()})


def hifigan_program(m, weights, parametrized, steps=2):
    torch, F, optim = m.torch, m.F, m.optim
    models = hifigan_models(m, parametrized)
    if weights is None:
        return models
    load(m, models, weights)
    generator, mpd = models["generator"], models["mpd"]

    def feature_loss(fmap_r, fmap_g):
        loss = 0
        for dr, dg in zip(fmap_r, fmap_g):
            for rl, gl in zip(dr, dg):
                loss += torch.mean(torch.abs(rl - gl))
        return loss * 2

    def discriminator_loss(disc_real_outputs, disc_generated_outputs):
        loss = 0
        for dr, dg in zip(disc_real_outputs, disc_generated_outputs):
            loss += torch.mean((1 - dr) ** 2) + torch.mean(dg ** 2)
        return loss

    def generator_loss(disc_outputs):
        loss = 0
        for dg in disc_outputs:
            loss += torch.mean((1 - dg) ** 2)
        return loss

    rng = np.random.default_rng(24)
    mel = torch.tensor(rng.standard_normal((2, 4, 10)), dtype=torch.float32)
    y = torch.tensor(audio_signal(n=40, seed=25)[:, None] * 0.5, dtype=torch.float32)
    optim_g = optim.AdamW(generator.parameters(), 2e-4, betas=(0.8, 0.99))
    optim_d = optim.AdamW(mpd.parameters(), 2e-4, betas=(0.8, 0.99))
    scheduler_g = optim.lr_scheduler.ExponentialLR(optim_g, gamma=0.999)
    history = []
    for _ in range(steps):
        y_g_hat = generator(mel)
        optim_d.zero_grad()
        y_df_hat_r, y_df_hat_g, _, _ = mpd(y, y_g_hat.detach())
        loss_disc_all = discriminator_loss(y_df_hat_r, y_df_hat_g)
        loss_disc_all.backward()
        optim_d.step()
        optim_g.zero_grad()
        y_df_hat_r, y_df_hat_g, fmap_f_r, fmap_f_g = mpd(y, y_g_hat)
        loss_gen_all = generator_loss(y_df_hat_g) + feature_loss(fmap_f_r, fmap_f_g) + \
            F.l1_loss(y_g_hat, y) * 45
        loss_gen_all.backward()
        optim_g.step()
        scheduler_g.step()
        history.append([loss_disc_all.item(), loss_gen_all.item()])
    grads = {k: p.grad for k, p in generator.named_parameters() if p.grad is not None}
    return history, y_g_hat, grads, sorted(grads)


@pytest.mark.filterwarnings("ignore:.*weight_norm. is deprecated:FutureWarning")
@pytest.mark.parametrize("parametrized", [False, True])
def test_hifigan_weight_norm_generator_and_period_discriminator(parametrized):
    weights = weights_of(lambda m: hifigan_program(m, None, parametrized))
    (history, audio, grads, names), _ = run_both(hifigan_program, weights, parametrized, rtol=1e-4, atol=1e-6)
    assert audio.shape == (2, 1, 40) and len(names) == 3 * (1 + 2 + 4 * 2 + 1)  # weight_g, weight_v, bias of 12 convs


# ----------------------------------------------------------------------------------------------
# An RNN-Transducer loss by hand (the alpha lattice in log space), trained through a joint network
# ----------------------------------------------------------------------------------------------


def transducer_model(m):
    nn = m.nn

    class Transducer(nn.Module):
        def __init__(self, n_feats=5, vocab=4, hidden=8, joint=10):
            super().__init__()
            self.encoder = nn.LSTM(n_feats, hidden, batch_first=True)
            self.embed = nn.Embedding(vocab, hidden, padding_idx=0)  # 0 is the blank, also the start token
            self.predictor = nn.GRU(hidden, hidden, batch_first=True)
            self.joint_enc = nn.Linear(hidden, joint)
            self.joint_pred = nn.Linear(hidden, joint, bias=False)
            self.out = nn.Linear(joint, vocab)

        def forward(self, x, y):
            enc, _ = self.encoder(x)  # [B, T, H]
            y_in = m.F.pad(y, (1, 0), value=0)  # prepend the start (blank) token
            pred, _ = self.predictor(self.embed(y_in))  # [B, U+1, H]
            joint = self.joint_enc(enc).unsqueeze(2) + self.joint_pred(pred).unsqueeze(1)  # [B, T, U+1, J]
            return self.out(m.torch.tanh(joint)).log_softmax(dim=-1)

    return Transducer()


def rnnt_loss(m, log_probs, targets, logit_lengths, target_lengths, blank=0):
    torch = m.torch
    losses = []
    for b in range(log_probs.shape[0]):
        T, U = int(logit_lengths[b]), int(target_lengths[b])
        lp = log_probs[b]
        blank_lp = lp[:T, :U + 1, blank]  # [T, U+1]
        emit_lp = lp[:T, :U].gather(2, targets[b, :U].view(1, U, 1).expand(T, U, 1)).squeeze(2)  # [T, U]
        alpha = [[None] * (U + 1) for _ in range(T)]
        alpha[0][0] = torch.zeros((), dtype=lp.dtype)
        for t in range(T):
            for u in range(U + 1):
                if t == 0 and u == 0:
                    continue
                terms = []
                if t > 0:
                    terms.append(alpha[t - 1][u] + blank_lp[t - 1, u])
                if u > 0:
                    terms.append(alpha[t][u - 1] + emit_lp[t, u - 1])
                alpha[t][u] = torch.logsumexp(torch.stack(terms), dim=0)
        losses.append(-(alpha[T - 1][U] + blank_lp[T - 1, U]))
    return torch.stack(losses)


def transducer_program(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    model = transducer_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(26)
    x = torch.tensor(rng.standard_normal((2, 6, 5)), dtype=torch.float32)
    y = torch.tensor([[1, 3, 2], [2, 2, 0]])
    x_lens = torch.tensor([6, 4])
    y_lens = torch.tensor([3, 2])

    opt = optim.Adam(model.parameters(), lr=0.01)
    history = []
    for _ in range(steps):
        log_probs = model(x, y)
        loss = rnnt_loss(m, log_probs, y, x_lens, y_lens).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())

    # greedy decoding: at each frame emit until blank (at most 2 symbols per frame)
    @torch.no_grad()
    def greedy(x, length):
        enc, _ = model.encoder(x)
        hyp, hidden = [], None
        token = torch.zeros(1, 1, dtype=torch.long)
        pred, hidden = model.predictor(model.embed(token), hidden)
        for t in range(length):
            for _ in range(2):
                logits = model.out(torch.tanh(model.joint_enc(enc[:, t]) + model.joint_pred(pred[:, -1])))
                k = logits.argmax(-1).item()
                if k == 0:
                    break
                hyp.append(k)
                pred, hidden = model.predictor(model.embed(torch.tensor([[k]])), hidden)
        return hyp

    return history, model.joint_pred.weight.grad, model.encoder.weight_ih_l0.grad, greedy(x[:1], 6)


def test_rnn_transducer_loss_by_hand():
    weights = weights_of(lambda m: transducer_program(m, None))
    (history, g_joint, g_enc, hyp), _ = run_both(transducer_program, weights, rtol=1e-4, atol=1e-6)
    assert history[-1] < history[0] and all(0 < k < 4 for k in hyp)


def test_rnn_transducer_loss_against_a_path_sum():
    # T=2 frames, U=1 label: two paths through the lattice, (blank, emit, blank) and (emit, blank, blank)
    lp = np.log(np.random.default_rng(27).dirichlet(np.ones(3), (1, 2, 2)))
    (loss, grad), _ = run_both(lambda m: (lambda t: (rnnt_loss(m, t, m.torch.tensor([[2]]), [2], [1]),
                                                      m.torch.autograd.grad(rnnt_loss(m, t, m.torch.tensor([[2]]),
                                                                                      [2], [1]).sum(), t)[0]))(
        m.torch.tensor(lp, requires_grad=True)), rtol=1e-12, atol=1e-14)
    expected = -np.logaddexp(lp[0, 0, 0, 0] + lp[0, 1, 0, 2] + lp[0, 1, 1, 0],
                             lp[0, 0, 0, 2] + lp[0, 0, 1, 0] + lp[0, 1, 1, 0])
    np.testing.assert_allclose(loss, [expected], rtol=1e-12)
    assert grad[0, 0, 1, 1] == 0 and grad[0, 1, 1, 0] == -1  # an unused entry; the last blank is on both paths


# ----------------------------------------------------------------------------------------------
# Frame-level audio features: windows, pre-emphasis, energy, ZCR, pitch by autocorrelation, VAD
# ----------------------------------------------------------------------------------------------


def features_program(m):
    torch, F = m.torch, m.F
    sr, frame, hop = 1000, 40, 20
    x = torch.tensor(audio_signal(n=240), dtype=torch.float32, requires_grad=True)
    windows = [torch.hann_window(frame), torch.hann_window(frame, periodic=False), torch.hamming_window(frame),
               torch.hamming_window(frame, periodic=False, alpha=0.5, beta=0.5), torch.blackman_window(frame),
               torch.bartlett_window(frame), torch.kaiser_window(frame, periodic=False, beta=8.0),
               torch.signal.windows.gaussian(frame, std=7.0) if hasattr(torch, "signal") else None]
    windows = [w for w in windows if w is not None]
    emphasized = torch.cat([x[:, :1], x[:, 1:] - 0.97 * x[:, :-1]], dim=1)
    frames = emphasized.unfold(1, frame, hop) * torch.hamming_window(frame)  # [B, n, frame]
    rms = frames.pow(2).mean(-1).sqrt()
    db = 20 * torch.log10(rms.clamp(min=1e-5))
    zcr = (torch.sign(frames[..., 1:]) != torch.sign(frames[..., :-1])).float().mean(-1)
    # autocorrelation by the Wiener-Khinchin theorem, pitch as the best lag between 2 and 20 ms
    spec = torch.fft.rfft(frames, n=2 * frame)
    raw = torch.fft.rfft(x.unfold(1, frame, hop), n=2 * frame)  # pitch from the signal before pre-emphasis
    acf = torch.fft.irfft(raw.abs() ** 2, n=2 * frame)[..., :frame]
    acf = acf / acf[..., :1]
    min_lag, max_lag = 10, 25
    lag = acf[..., min_lag:max_lag].argmax(-1) + min_lag
    pitch = sr / lag.float()
    power = spec.abs().pow(2)
    freqs = torch.fft.rfftfreq(2 * frame, d=1 / sr)
    centroid = (power * freqs).sum(-1) / power.sum(-1)
    rolloff_bin = (power.cumsum(-1) >= 0.85 * power.sum(-1, keepdim=True)).float().argmax(-1)
    floor = torch.quantile(db, 0.2, dim=1, keepdim=True)
    voiced = db > floor + 3
    med = db.median(dim=1)
    twosided = torch.stft(x, 16, hop_length=4, onesided=False, return_complex=True, window=torch.ones(16))
    (db.sum() + centroid.sum() * 1e-3 + twosided.abs().mean()).backward()
    return (windows, rms, db, zcr, lag, pitch, centroid, rolloff_bin, floor, voiced, med, twosided.shape[1],
            x.grad)


def test_frame_features_windows_and_pitch():
    results, _ = run_both(features_program, rtol=1e-5, atol=1e-5)
    windows, lag, pitch, twosided_bins = results[0], results[4], results[5], results[11]
    assert twosided_bins == 16 and lag.dtype == np.int64
    # the 60 Hz signal's pitch lag is about 1000 / 60 = 16.7 samples, the 220 Hz one's 3 periods (13.6)
    assert np.median(lag[0]) in (16, 17) and np.median(lag[1]) == 14
    np.testing.assert_allclose(windows[0].numpy() if hasattr(windows[0], "numpy") else windows[0],
                               0.5 - 0.5 * np.cos(2 * np.pi * np.arange(40) / 40), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Upsampling as detectors and vocoders write it: nn.Upsample, interpolate by scale factors
# ----------------------------------------------------------------------------------------------


def upsampling_program(m):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(28)
    x = torch.tensor(rng.standard_normal((1, 2, 5, 7)), requires_grad=True)
    wav = torch.tensor(rng.standard_normal((2, 3, 9)), requires_grad=True)
    outs = [
        nn.Upsample(scale_factor=2, mode="nearest")(x),  # YOLOv3/v5's neck
        F.interpolate(x, scale_factor=1.5, mode="nearest"),
        F.interpolate(x, scale_factor=(1.7, 0.6), mode="nearest", recompute_scale_factor=True),
        F.interpolate(x, scale_factor=1.5, mode="nearest-exact"),
        F.interpolate(x, size=(8, 11), mode="nearest-exact"),
        F.interpolate(x, size=(3, 4), mode="nearest"),  # downsampling
        F.interpolate(x, scale_factor=2.5, mode="bilinear", align_corners=False),
        F.interpolate(x, scale_factor=0.6, mode="bilinear", align_corners=False, recompute_scale_factor=False),
        F.interpolate(x, size=(9, 13), mode="bilinear", align_corners=True),
        F.interpolate(x, scale_factor=1.3, mode="bicubic", align_corners=False),
        F.interpolate(wav, scale_factor=3, mode="linear", align_corners=False),
        F.interpolate(wav, size=20, mode="linear", align_corners=True),
        F.interpolate(wav, scale_factor=2.5, mode="nearest"),
        F.upsample_nearest(x, scale_factor=3) if hasattr(F, "upsample_nearest") else None,
    ]
    outs = [o for o in outs if o is not None]
    loss = sum((o * torch.arange(o.numel(), dtype=o.dtype).view(o.shape).sin()).sum() for o in outs)
    loss.backward()
    return [o.shape for o in outs], outs, x.grad, wav.grad


@pytest.mark.filterwarnings("ignore:.*upsample.* is deprecated")
def test_upsampling_by_scale_factors_and_sizes():
    (shapes, outs, gx, gw), _ = run_both(upsampling_program, rtol=1e-10, atol=1e-12)
    assert list(shapes[0]) == [1, 2, 10, 14] and list(shapes[2]) == [1, 2, 8, 4]


# ----------------------------------------------------------------------------------------------
# Soft-NMS (Gaussian decay) and Matrix NMS (SOLOv2) over boxes
# ----------------------------------------------------------------------------------------------


def soft_matrix_nms_program(m):
    torch = m.torch
    rng = np.random.default_rng(29)
    centres = rng.uniform(4, 16, (3, 2))
    boxes = []
    for c in centres:
        for _ in range(4):
            xy = c + rng.normal(0, 1.0, 2)
            wh = rng.uniform(3, 6, 2)
            boxes.append(np.concatenate([xy - wh / 2, xy + wh / 2]))
    boxes = torch.tensor(np.array(boxes))
    scores = torch.tensor(rng.uniform(0.3, 1.0, len(boxes)))
    labels = torch.tensor(rng.integers(0, 2, len(boxes)))

    def soft_nms(boxes, scores, sigma=0.5, score_thresh=0.05):
        scores = scores.clone()
        idxs = torch.arange(boxes.shape[0])
        keep, kept_scores = [], []
        while idxs.numel() > 0:
            top = torch.argmax(scores[idxs])
            i = idxs[top]
            keep.append(i.item())
            kept_scores.append(scores[i].item())
            idxs = torch.cat([idxs[:top], idxs[top + 1:]])
            if idxs.numel() == 0:
                break
            ious, _ = box_iou(m, boxes[i].unsqueeze(0), boxes[idxs])
            scores[idxs] = scores[idxs] * torch.exp(-(ious[0] ** 2) / sigma)
            idxs = idxs[scores[idxs] > score_thresh]
        return torch.tensor(keep), torch.tensor(kept_scores)

    def matrix_nms(boxes, labels, scores, kernel="gaussian", sigma=2.0):
        sort_inds = torch.argsort(scores, descending=True)
        boxes, labels, scores = boxes[sort_inds], labels[sort_inds], scores[sort_inds]
        n = len(labels)
        iou_matrix, _ = box_iou(m, boxes, boxes)
        iou_matrix = iou_matrix.triu(diagonal=1)
        cate_label_x = labels.expand(n, n)
        label_matrix = (cate_label_x == cate_label_x.transpose(1, 0)).float().triu(diagonal=1)
        decay_iou = iou_matrix * label_matrix
        compensate_iou, _ = decay_iou.max(0)
        compensate_iou = compensate_iou.expand(n, n).transpose(1, 0)
        if kernel == "gaussian":
            decay_matrix = torch.exp(-1 * sigma * (decay_iou ** 2))
            compensate_matrix = torch.exp(-1 * sigma * (compensate_iou ** 2))
            decay_coefficient, _ = (decay_matrix / compensate_matrix).min(0)
        else:
            decay_matrix = (1 - decay_iou) / (1 - compensate_iou)
            decay_coefficient, _ = decay_matrix.min(0)
        return sort_inds, scores * decay_coefficient

    keep, kept_scores = soft_nms(boxes, scores)
    order_g, decayed_g = matrix_nms(boxes, labels, scores)
    order_l, decayed_l = matrix_nms(boxes, labels, scores, kernel="linear")
    return keep, kept_scores, order_g, decayed_g, decayed_l


def test_soft_nms_and_matrix_nms():
    (keep, kept_scores, order, decayed_g, decayed_l), _ = run_both(soft_matrix_nms_program, rtol=1e-10,
                                                                   atol=1e-12)
    assert sorted(keep.tolist()) == list(range(12)) and (decayed_g <= np.sort(decayed_g)[::-1][0] + 1e-12).all()


# ----------------------------------------------------------------------------------------------
# A magnitude-and-phase synthesiser: a linear head predicts magnitudes (negative ones too), torch.polar
# with the phase, then the inverse FFT (polar's magnitude derivative is PyTorch's: sign(r) e^(iθ))
# ----------------------------------------------------------------------------------------------


def polar_synth_program(m, steps=5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    rng = np.random.default_rng(30)
    head = nn.Linear(6, 9).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor(rng.standard_normal((9, 6)) * 0.5))
        head.bias.copy_(torch.tensor(rng.standard_normal(9) * 0.2))
    cond = torch.tensor(rng.standard_normal((4, 6)))
    phase = torch.tensor(rng.uniform(-np.pi, np.pi, (4, 9)))
    target = torch.tensor(audio_signal(n=16, batch=2, seed=31).repeat(2, 0))
    opt = optim.SGD(head.parameters(), lr=0.05)
    losses, grads = [], []
    for _ in range(steps):
        magnitude = head(cond)
        magnitude = magnitude.masked_fill(torch.arange(9) == 8, 0.0)  # the Nyquist bin silenced
        spectrum = torch.polar(magnitude, phase)
        frames = torch.fft.irfft(spectrum, n=16)
        loss = F.mse_loss(frames, target)
        opt.zero_grad()
        loss.backward()
        grads.append(head.weight.grad.clone())
        opt.step()
        losses.append(loss.item())
    return losses, grads, head.bias.detach(), (magnitude < 0).sum()


def test_polar_synthesiser_with_negative_magnitudes():
    (losses, grads, bias, negative), _ = run_both(polar_synth_program, rtol=1e-10, atol=1e-12)
    # (PyTorch's gradient points the wrong way for the negative magnitudes, so the loss need not fall)
    assert negative > 0 and np.isfinite(losses).all() and np.abs(grads[0]).sum() > 0


# ----------------------------------------------------------------------------------------------
# YOLOv5's training loop: three parameter groups (BN weights, decayed weights, biases) added by
# add_param_group, warmup of lr and momentum by np.interp, LambdaLR, gradient accumulation, GradScaler
# ----------------------------------------------------------------------------------------------


def yolov5_train_program(m, weights, epochs=3, batches=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = yolov5_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    hyp = {"lr0": 0.01, "lrf": 0.1, "momentum": 0.937, "weight_decay": 5e-4, "warmup_epochs": 1.0,
           "warmup_momentum": 0.8, "warmup_bias_lr": 0.1}
    g = [], [], []  # optimizer parameter groups
    bn = tuple(v for k, v in nn.__dict__.items() if "Norm" in k)  # normalization layers, i.e. BatchNorm2d()
    for v in model.modules():
        for p_name, p in v.named_parameters(recurse=False):
            if p_name == "bias":  # bias (no decay)
                g[2].append(p)
            elif p_name == "weight" and isinstance(v, bn):  # weight (no decay)
                g[1].append(p)
            else:
                g[0].append(p)  # weight (with decay)
    optimizer = optim.SGD(g[2], lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)
    optimizer.add_param_group({"params": g[0], "weight_decay": hyp["weight_decay"]})
    optimizer.add_param_group({"params": g[1], "weight_decay": 0.0})
    lf = lambda x: (1 - x / epochs) * (1.0 - hyp["lrf"]) + hyp["lrf"]  # linear
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lf)
    amp = m.torch.amp if hasattr(m.torch, "amp") else None
    scaler = amp.GradScaler("cpu", enabled=False)
    rng = np.random.default_rng(32)
    imgs = torch.tensor(rng.standard_normal((batches, 2, 3, 32, 32)), dtype=torch.float32)
    nw = max(round(hyp["warmup_epochs"] * batches), 3)
    accumulate, last_opt_step = 2, -1
    history = []
    for epoch in range(epochs):
        model.train()
        optimizer.zero_grad()
        for i in range(batches):
            ni = i + batches * epoch
            if ni <= nw:
                xi = [0, nw]
                for j, x in enumerate(optimizer.param_groups):
                    x["lr"] = np.interp(ni, xi, [hyp["warmup_bias_lr"] if j == 0 else 0.0,
                                                 x["initial_lr"] * lf(epoch)])
                    if "momentum" in x:
                        x["momentum"] = np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]])
            pred = model(imgs[i])
            loss = sum(p[..., 4].sigmoid().mean() + p[..., :4].pow(2).mean() * 0.1 for p in pred)
            scaler.scale(loss).backward()
            if ni - last_opt_step >= accumulate:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
                last_opt_step = ni
            history.append([x["lr"] for x in optimizer.param_groups] + [loss.item()])
        scheduler.step()
    return (history, [len(x["params"]) for x in optimizer.param_groups], model.detect.m[1].bias.detach(),
            model.b1[1].weight.detach(), model.b2[0].weight.detach(), scheduler.get_last_lr())


def test_yolov5_training_loop_param_groups_and_warmup():
    weights = weights_of(lambda m: yolov5_train_program(m, None))
    (history, sizes, bias, bn_weight, conv_weight, last_lr), _ = run_both(yolov5_train_program, weights, rtol=1e-4,
                                                                          atol=1e-6)
    assert sizes == [6, 6, 4] and len(history) == 6  # biases (BN and detect), conv weights, BN weights
    np.testing.assert_allclose(last_lr, [0.01 * 0.1] * 3, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# YOLO's fuse_conv_and_bn for inference: a new Conv2d from the conv and BN's running statistics,
# delattr of the BN, forward replaced on the instance; and torch.nn.utils.fusion's version
# ----------------------------------------------------------------------------------------------


def fuse_program(m, weights):
    torch, nn = m.torch, m.nn

    class Conv(nn.Module):
        def __init__(self, c1, c2, k=1, s=1, g=1):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=False)
            self.bn = nn.BatchNorm2d(c2)
            self.act = nn.SiLU()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

        def forward_fuse(self, x):
            return self.act(self.conv(x))

    model = nn.Sequential(Conv(3, 4, 3, 2), Conv(4, 4, 3, 1, g=2), Conv(4, 6, 1))
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(33)
    with torch.no_grad():  # running statistics as after training
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(torch.tensor(rng.standard_normal(mod.num_features) * 0.2))
                mod.running_var.copy_(torch.tensor(rng.uniform(0.5, 2.0, mod.num_features)))
                mod.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, mod.num_features)))
                mod.bias.copy_(torch.tensor(rng.standard_normal(mod.num_features) * 0.1))

    def fuse_conv_and_bn(conv, bn):
        fusedconv = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                              padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                              bias=True).requires_grad_(False).to(conv.weight.device)
        w_conv = conv.weight.clone().view(conv.out_channels, -1)
        w_bn = torch.diag(bn.weight.div(torch.sqrt(bn.eps + bn.running_var)))
        fusedconv.weight.copy_(torch.mm(w_bn, w_conv).view(fusedconv.weight.shape))
        b_conv = torch.zeros(conv.weight.shape[0], device=conv.weight.device) if conv.bias is None else conv.bias
        b_bn = bn.bias - bn.weight.mul(bn.running_mean).div(torch.sqrt(bn.running_var + bn.eps))
        fusedconv.bias.copy_(torch.mm(w_bn, b_conv.reshape(-1, 1)).reshape(-1) + b_bn)
        return fusedconv

    x = torch.tensor(rng.standard_normal((2, 3, 9, 9)), dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        before = model(x)
    # torch.nn.utils.fusion's function on a copy of the first block
    from copy import deepcopy
    first = deepcopy(model[0])
    fused_util = nn.utils.fusion.fuse_conv_bn_eval(first.conv, first.bn)
    for mod in model.modules():
        if isinstance(mod, Conv) and hasattr(mod, "bn"):
            mod.conv = fuse_conv_and_bn(mod.conv, mod.bn)
            delattr(mod, "bn")
            mod.forward = mod.forward_fuse
    with torch.no_grad():
        after = model(x)
    n_params = sum(p.numel() for p in model.parameters())
    return before, after, fused_util.weight.detach(), fused_util.bias.detach(), n_params, sorted(model.state_dict())


def test_fuse_conv_and_bn_for_inference():
    weights = weights_of(lambda m: fuse_program(m, None))
    (before, after, w, b, n_params, keys), _ = run_both(fuse_program, weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)
    assert n_params == (4 * 3 * 9 + 4) + (4 * 2 * 9 + 4) + (6 * 4 + 6) and not any(".bn." in k for k in keys)


# ----------------------------------------------------------------------------------------------
# Differentiable DSP: a biquad low-pass (torchaudio's coefficients) with a learnt cutoff, run by an
# lfilter loop writing y[..., t] in place, forwards then backwards (filtfilt by flip)
# ----------------------------------------------------------------------------------------------


def biquad_program(m, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    sample_rate = 1000

    def lowpass_coefficients(cutoff_freq, Q=0.707):
        w0 = 2 * math.pi * cutoff_freq / sample_rate
        alpha = torch.sin(w0) / 2 / Q
        b0 = (1 - torch.cos(w0)) / 2
        b1 = 1 - torch.cos(w0)
        b2 = b0
        a0 = 1 + alpha
        a1 = -2 * torch.cos(w0)
        a2 = 1 - alpha
        return torch.stack([b0, b1, b2]) / a0, torch.stack([a0, a1, a2]) / a0

    def lfilter(waveform, b, a):
        n = waveform.shape[-1]
        y = torch.zeros_like(waveform)
        padded = F.pad(waveform, (2, 0))
        y_prev1 = torch.zeros_like(waveform[..., 0])
        y_prev2 = torch.zeros_like(waveform[..., 0])
        for t in range(n):
            x_win = padded[..., t:t + 3].flip(-1)  # x[t], x[t-1], x[t-2]
            out = (x_win * b).sum(-1) - a[1] * y_prev1 - a[2] * y_prev2
            y[..., t] = out
            y_prev2, y_prev1 = y_prev1, out
        return y

    def filtfilt(waveform, b, a):
        forward = lfilter(waveform, b, a)
        return lfilter(forward.flip(-1), b, a).flip(-1)

    x = torch.tensor(audio_signal(n=60), dtype=torch.float64)
    target_b, target_a = lowpass_coefficients(torch.tensor(100.0, dtype=torch.float64))
    target = filtfilt(x, target_b, target_a)

    class LearntLowpass(nn.Module):
        def __init__(self):
            super().__init__()
            self.log_cutoff = nn.Parameter(torch.tensor(math.log(250.0), dtype=torch.float64))

        def forward(self, x):
            b, a = lowpass_coefficients(self.log_cutoff.exp())
            return filtfilt(x, b, a)

    model = LearntLowpass()
    opt = optim.Adam(model.parameters(), lr=0.1)
    history = []
    for _ in range(steps):
        loss = F.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        history.append((loss.item(), model.log_cutoff.grad.item(), model.log_cutoff.exp().item()))
        opt.step()
    return history, target


def test_biquad_lowpass_with_a_learnt_cutoff():
    (history, target), _ = run_both(biquad_program, rtol=1e-8, atol=1e-10)
    assert history[-1][0] < history[0][0] and history[-1][2] < history[0][2]  # the cutoff falls towards 100 Hz
    # the 60 Hz tone passes a 100 Hz low-pass, the 220 Hz one is damped
    assert np.abs(target[0, 20:40]).max() > 3 * np.abs(target[1, 20:40]).max()


# ----------------------------------------------------------------------------------------------
# Detection data pipelines: DETR's collate into a padded NestedTensor with a mask, YOLO's collate
# that writes each label's image index, and a sampler grouping images by aspect ratio
# ----------------------------------------------------------------------------------------------


def detection_data_program(m):
    torch, data = m.torch, m.data
    rng = np.random.default_rng(34)
    sizes = [(5, 7), (6, 4), (5, 5), (7, 6), (4, 7)]
    images = [rng.standard_normal((3, h, w)).astype(np.float32) for h, w in sizes]
    labels = [rng.uniform(0, 1, (k, 5)).astype(np.float32) for k in (2, 0, 3, 1, 2)]

    class DetectionDataset(data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, idx):
            img = torch.from_numpy(images[idx])
            boxes = torch.from_numpy(labels[idx][:, 1:])
            target = {"boxes": boxes, "labels": torch.from_numpy(labels[idx][:, 0] * 3).long(),
                      "image_id": torch.tensor([idx]), "orig_size": torch.as_tensor([int(img.shape[1]),
                                                                                    int(img.shape[2])])}
            return img, target

    def _max_by_axis(the_list):
        maxes = the_list[0]
        for sublist in the_list[1:]:
            for index, item in enumerate(sublist):
                maxes[index] = max(maxes[index], item)
        return maxes

    def nested_tensor_from_tensor_list(tensor_list):
        max_size = _max_by_axis([list(img.shape) for img in tensor_list])
        batch_shape = [len(tensor_list)] + max_size
        b, c, h, w = batch_shape
        dtype = tensor_list[0].dtype
        tensor = torch.zeros(batch_shape, dtype=dtype)
        mask = torch.ones((b, h, w), dtype=torch.bool)
        for img, pad_img, m_ in zip(tensor_list, tensor, mask):
            pad_img[: img.shape[0], : img.shape[1], : img.shape[2]].copy_(img)
            m_[: img.shape[1], : img.shape[2]] = False
        return tensor, mask

    def detr_collate_fn(batch):
        batch = list(zip(*batch))
        batch[0] = nested_tensor_from_tensor_list(batch[0])
        return tuple(batch)

    class YoloDataset(DetectionDataset):
        def __getitem__(self, idx):
            img, target = super().__getitem__(idx)
            labels_out = torch.zeros((len(target["labels"]), 6))
            labels_out[:, 1] = target["labels"].float()
            labels_out[:, 2:] = target["boxes"]
            return img[:, :4, :4], labels_out

        @staticmethod
        def collate_fn(batch):
            im, label = zip(*batch)
            for i, lb in enumerate(label):
                lb[:, 0] = i  # add target image index for build_targets()
            return torch.stack(im, 0), torch.cat(label, 0)

    detr_loader = data.DataLoader(DetectionDataset(), batch_size=2, shuffle=False, collate_fn=detr_collate_fn)
    detr_batches = []
    for (samples, mask), targets in detr_loader:
        detr_batches.append([samples, mask, [t["boxes"] for t in targets], [t["image_id"] for t in targets]])
    # a batch sampler over aspect-ratio groups (DETR / torchvision's GroupedBatchSampler, simplified)
    groups = [0 if h <= w else 1 for h, w in sizes]

    class GroupedBatchSampler(data.Sampler):
        def __init__(self, sampler, group_ids, batch_size):
            self.sampler, self.group_ids, self.batch_size = sampler, group_ids, batch_size

        def __iter__(self):
            buffers = {}
            for idx in self.sampler:
                g = self.group_ids[idx]
                buffers.setdefault(g, []).append(idx)
                if len(buffers[g]) == self.batch_size:
                    yield buffers.pop(g)
            yield from buffers.values()

        def __len__(self):
            return len(self.sampler)

    grouped = data.DataLoader(DetectionDataset(), batch_sampler=GroupedBatchSampler(
        data.SequentialSampler(range(5)), groups, 2), collate_fn=detr_collate_fn)
    grouped_ids = [[int(t["image_id"]) for t in targets] for _, targets in grouped]
    yolo_loader = data.DataLoader(YoloDataset(), batch_size=3, collate_fn=YoloDataset.collate_fn, drop_last=True)
    yolo = [(imgs, lbls) for imgs, lbls in yolo_loader]
    shuffled = data.DataLoader(DetectionDataset(), batch_size=2, shuffle=True, collate_fn=detr_collate_fn,
                               generator=torch.Generator().manual_seed(0))
    seen = sorted(int(t["image_id"]) for _, targets in shuffled for t in targets)
    return detr_batches, grouped_ids, yolo, seen


def test_detection_collate_functions_and_grouped_batches():
    (detr, grouped, yolo, seen), _ = run_both(detection_data_program)
    (samples, mask, boxes, ids) = detr[0]
    assert samples.shape == (2, 3, 6, 7) and mask[1, :, 4:].all() and not mask[0, :5, :7].any()
    assert grouped == [[0, 2], [1, 3], [4]] and len(yolo) == 1 and seen == [0, 1, 2, 3, 4]
    assert (yolo[0][1][:, 0] == [0, 0, 2, 2, 2]).all()


# ----------------------------------------------------------------------------------------------
# Conv-TasNet pieces: a strided Conv1d encoder, masks, overlap_and_add by index_add_, and the
# permutation-invariant SI-SNR loss
# ----------------------------------------------------------------------------------------------


def overlap_and_add(m, signal, frame_step):
    torch = m.torch
    outer_dimensions = signal.size()[:-2]
    frames, frame_length = signal.size()[-2:]
    subframe_length = math.gcd(frame_length, frame_step)  # gcd=Greatest Common Divisor
    subframe_step = frame_step // subframe_length
    subframes_per_frame = frame_length // subframe_length
    output_size = frame_step * (frames - 1) + frame_length
    output_subframes = output_size // subframe_length
    subframe_signal = signal.view(*outer_dimensions, -1, subframe_length)
    frame = torch.arange(0, output_subframes).unfold(0, subframes_per_frame, subframe_step)
    frame = frame.clone().detach().to(signal.device).long()
    frame = frame.contiguous().view(-1)
    result = signal.new_zeros(*outer_dimensions, output_subframes, subframe_length)
    result.index_add_(-2, frame, subframe_signal)
    result = result.view(*outer_dimensions, -1)
    return result


def tasnet_model(m):
    nn, F = m.nn, m.F

    class TinyTasNet(nn.Module):
        def __init__(self, L=4, N=8, C=2):
            super().__init__()
            self.L, self.N, self.C = L, N, C
            self.conv1d_U = nn.Conv1d(1, N, kernel_size=L, stride=L // 2, bias=False)
            self.separator = nn.Sequential(nn.GroupNorm(1, N), nn.Conv1d(N, N, 1), nn.PReLU(),
                                           nn.Conv1d(N, N, 3, padding=2, dilation=2, groups=N),
                                           nn.Conv1d(N, C * N, 1))
            self.basis_signals = nn.Linear(N, L, bias=False)

        def forward(self, mixture):
            mixture_w = F.relu(self.conv1d_U(mixture.unsqueeze(1)))  # [M, N, K]
            M, N, K = mixture_w.size()
            score = self.separator(mixture_w).view(M, self.C, N, K)
            est_mask = F.softmax(score, dim=1)
            source_w = mixture_w.unsqueeze(1) * est_mask  # [M, C, N, K]
            source_w = source_w.transpose(2, 3)  # [M, C, K, N]
            est_source = self.basis_signals(source_w)  # [M, C, K, L]
            return overlap_and_add(m, est_source, self.L // 2)  # M x C x T

    return TinyTasNet()


def tasnet_program(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    from itertools import permutations
    model = tasnet_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    EPS = 1e-8

    def cal_si_snr_with_pit(source, estimate_source, source_lengths):
        B, C, T = source.size()
        mask = (torch.arange(T)[None, :] < source_lengths[:, None]).unsqueeze(1).to(source.dtype)  # [B, 1, T]
        estimate_source = estimate_source * mask
        num_samples = source_lengths.view(-1, 1, 1).float()
        mean_target = torch.sum(source, dim=2, keepdim=True) / num_samples
        mean_estimate = torch.sum(estimate_source, dim=2, keepdim=True) / num_samples
        zero_mean_target = (source - mean_target) * mask
        zero_mean_estimate = (estimate_source - mean_estimate) * mask
        s_target = torch.unsqueeze(zero_mean_target, dim=1)  # [B, 1, C, T]
        s_estimate = torch.unsqueeze(zero_mean_estimate, dim=2)  # [B, C, 1, T]
        pair_wise_dot = torch.sum(s_estimate * s_target, dim=3, keepdim=True)  # [B, C, C, 1]
        s_target_energy = torch.sum(s_target ** 2, dim=3, keepdim=True) + EPS  # [B, 1, C, 1]
        pair_wise_proj = pair_wise_dot * s_target / s_target_energy  # [B, C, C, T]
        e_noise = s_estimate - pair_wise_proj  # [B, C, C, T]
        pair_wise_si_snr = torch.sum(pair_wise_proj ** 2, dim=3) / (torch.sum(e_noise ** 2, dim=3) + EPS)
        pair_wise_si_snr = 10 * torch.log10(pair_wise_si_snr + EPS)  # [B, C, C]
        perms = source.new_tensor(list(permutations(range(C))), dtype=torch.long)
        index = torch.unsqueeze(perms, 2)
        perms_one_hot = source.new_zeros((*perms.size(), C)).scatter_(2, index, 1)
        snr_set = torch.einsum("bij,pij->bp", [pair_wise_si_snr, perms_one_hot])
        max_snr_idx = torch.argmax(snr_set, dim=1)  # [B]
        max_snr, _ = torch.max(snr_set, dim=1, keepdim=True)
        max_snr /= C
        return max_snr, perms, max_snr_idx

    rng = np.random.default_rng(35)
    sources = torch.tensor(np.stack([audio_signal(n=30, seed=36), audio_signal(n=30, seed=37)[::-1].copy()]),
                           dtype=torch.float32)  # [B, C, T]
    mixture = sources.sum(1)
    lengths = torch.tensor([30, 24])
    opt = optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(steps):
        est = model(mixture)
        max_snr, perms, max_snr_idx = cal_si_snr_with_pit(sources, est, lengths)
        loss = 0 - torch.mean(max_snr)
        opt.zero_grad()
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), 5)
        opt.step()
        history.append(loss.item())
    reorder = torch.index_select(perms, dim=0, index=max_snr_idx)
    return history, est, reorder, model.conv1d_U.weight.grad, model.separator[2].weight.grad


def test_conv_tasnet_overlap_add_and_pit_si_snr():
    weights = weights_of(lambda m: tasnet_program(m, None))
    (history, est, reorder, g_enc, g_prelu), _ = run_both(tasnet_program, weights, rtol=1e-4, atol=1e-5)
    assert est.shape == (2, 2, 30) and history[-1] < history[0] and reorder.dtype == np.int64


def test_overlap_and_add_against_numpy():
    frames = np.random.default_rng(38).standard_normal((2, 5, 6))
    (out, grad), _ = run_both(lambda m: (lambda f: (overlap_and_add(m, f, 4), m.torch.autograd.grad(
        overlap_and_add(m, f, 4).pow(2).sum(), f)[0]))(m.torch.tensor(frames, requires_grad=True)),
        rtol=1e-12, atol=1e-12)
    expected = np.zeros((2, 22))
    for k in range(5):
        expected[:, 4 * k:4 * k + 6] += frames[:, k]
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    assert grad.shape == (2, 5, 6)


# ----------------------------------------------------------------------------------------------
# RPN anchor labelling by IoU thresholds in the method forms (iou.ge(0.7), iou.lt(0.3)), on integer boxes
# whose IoUs land exactly on the thresholds in float32
# ----------------------------------------------------------------------------------------------


def rpn_labels_program(m):
    torch = m.torch
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    anchors = torch.tensor([[0.0, 0.0, 10.0, 7.0],     # IoU 0.7 with the first box
                            [0.0, 0.0, 10.0, 3.0],     # 0.3
                            [0.0, 0.0, 10.0, 5.0],     # 0.5
                            [20.0, 0.0, 30.0, 10.0],   # 1.0 with the second
                            [20.0, 0.0, 29.0, 10.0],   # 0.9
                            [12.0, 0.0, 18.0, 10.0]])  # 0
    iou, _ = box_iou(m, anchors, gt)
    matched_vals, matches = iou.max(dim=1)
    labels = torch.full((anchors.shape[0],), -1.0)
    labels[matched_vals.lt(0.3)] = 0.0
    labels[matched_vals.ge(0.7)] = 1.0
    between = torch.logical_and(torch.ge(matched_vals, 0.3), torch.lt(matched_vals, 0.7))
    positive = torch.where(labels.eq(1))[0]
    negative = torch.where(labels.eq(0))[0]
    return iou, labels, between, positive, negative, matches


def test_rpn_anchor_labels_at_exact_float32_thresholds():
    (iou, labels, between, positive, negative, matches), _ = run_both(rpn_labels_program)
    # float32's 0.7 and 0.3 are the thresholds' own values: the 0.7 anchor is positive, the 0.3 one ignored
    assert labels.tolist() == [1, -1, -1, 1, 1, 0] and positive.tolist() == [0, 3, 4]
    assert between.tolist() == [False, True, True, False, False, False]


# ----------------------------------------------------------------------------------------------
# Mask R-CNN's mask loss (the logits of each ROI's own class) and semantic segmentation's loss and
# mIoU: uint8 label maps with 255 ignored, a confusion matrix by bincount, nanmean over classes
# ----------------------------------------------------------------------------------------------


def segmentation_program(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(39)
    num_classes = 4
    # Mask R-CNN: per-ROI logits for every class, the loss on the labelled class's channel only
    mask_logits = torch.tensor(rng.standard_normal((3, num_classes, 6, 6)), dtype=torch.float32, requires_grad=True)
    labels = torch.tensor([2, 0, 3])
    gt_masks = torch.tensor(rng.uniform(0, 1, (3, 1, 12, 12)) > 0.5).float()
    boxes = torch.tensor([[0.0, 0.0, 6.0, 6.0], [3.0, 3.0, 12.0, 12.0], [2.0, 4.0, 10.0, 8.0]])
    # targets resized to the mask head's 6x6 by crop + bilinear interpolate (the roi_align of project_masks)
    crops = [F.interpolate(gt_masks[i:i + 1, :, int(b[1]):int(b[3]), int(b[0]):int(b[2])], size=(6, 6),
                           mode="bilinear", align_corners=False) for i, b in enumerate(boxes)]
    mask_targets = torch.cat(crops)[:, 0]
    mask_loss = F.binary_cross_entropy_with_logits(mask_logits[torch.arange(labels.shape[0]), labels], mask_targets)
    mask_loss.backward()
    # semantic segmentation: uint8 label maps as loaded from PNGs, 255 = ignore
    logits = torch.tensor(rng.standard_normal((2, num_classes, 5, 5)), dtype=torch.float32, requires_grad=True)
    label_png = rng.integers(0, num_classes, (2, 5, 5)).astype(np.uint8)
    label_png[:, 0, :] = 255
    target = torch.from_numpy(label_png)
    seg_loss = F.cross_entropy(logits, target.long(), ignore_index=255)
    seg_loss.backward()
    pred = logits.argmax(1)
    valid = target != 255
    hist = torch.bincount(num_classes * target[valid].long() + pred[valid], minlength=num_classes ** 2)
    hist = hist.reshape(num_classes, num_classes).float()
    iou = torch.diag(hist) / (hist.sum(1) + hist.sum(0) - torch.diag(hist))
    miou = torch.nanmean(iou)
    acc = torch.diag(hist).sum() / hist.sum()
    return mask_loss, mask_logits.grad, seg_loss, logits.grad, hist, iou, miou, acc, valid.sum()


def test_mask_rcnn_mask_loss_and_segmentation_miou():
    (mask_loss, g_mask, seg_loss, g_seg, hist, iou, miou, acc, n_valid), _ = run_both(segmentation_program,
                                                                                       rtol=1e-5, atol=1e-6)
    assert n_valid == 40 and hist.sum() == 40 and 0 <= miou <= 1
    assert (g_mask[[0, 0, 0], [0, 1, 3]] == 0).all() and (g_seg[:, :, 0] == 0).all()  # other classes, ignored rows
