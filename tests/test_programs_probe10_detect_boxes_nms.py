# ruff: noqa: B008  (the programs are kept as their authors wrote them)
"""Object-detection and audio programs written with plain tensor idioms, as the model repositories write them without
torchvision / torchaudio, run as tests/probe10_detect_common.py says. Detection's box arithmetic: box IoU / GIoU /
DIoU by broadcasting corners with their gradients; anchor generation (``meshgrid``, ``repeat_interleave``) and Faster
R-CNN's box coder (``clamp(max=log(1000/16))``); greedy NMS (argsort loop, the ``while order.numel()`` form), batched
NMS by the offset trick, soft-NMS and Matrix NMS; RPN anchor labels by ``iou.ge(0.7)`` on exact float32 thresholds;
VOC and COCO average precision (``cumsum``, ``cummax`` envelope, ``searchsorted``, ``trapezoid``)."""

import math

import numpy as np

from .probe10_detect_common import box_area, box_iou, generalized_box_iou
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Box IoU / GIoU / DIoU by broadcasting (torchvision.ops.boxes, DETR's util/box_ops.py)
# ----------------------------------------------------------------------------------------------


def random_boxes(n, seed, scale=10.0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, scale, (n, 2))
    wh = rng.uniform(0.5, scale / 2, (n, 2))
    return np.concatenate([xy, xy + wh], 1)


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
