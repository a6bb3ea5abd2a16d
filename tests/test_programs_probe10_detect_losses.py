# ruff: noqa: F841  (the programs are kept as their authors wrote them)
"""Object-detection and audio programs written with plain tensor idioms, as the model repositories write them without
torchvision / torchaudio, run as tests/probe10_detect_common.py says. Detectors' losses: RetinaNet's focal loss
training a head; YOLOv3's loss (targets by argmax of anchor IoU, index assignment, ``scatter_``); DETR's losses on
greedily matched pairs; CenterNet's heatmap loss and peaks (``max_pool2d(3, 1, 1) == heat``, ``topk``, ``//`` and
``%``); SSD's hard negative mining (double sort) and FCOS's targets and centerness."""

import math

import numpy as np

from .probe10_detect_common import generalized_box_iou
from .pytorch_programs import load, run_both, weights_of

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
