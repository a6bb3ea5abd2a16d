"""What the files of session 10's detection and audio probe (tests/test_programs_probe10_detect_*.py, one family of
programs each) share: boxes' areas, IoU and generalised IoU by broadcasting corners, and a test audio signal.

The programs (see tests/pytorch_programs.py) are written with plain tensor idioms, as the model repositories write
them without torchvision / torchaudio, each run on chainrule and on PyTorch from the same weights and data, comparing
values, gradients and indices."""

import numpy as np


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


def audio_signal(n=200, batch=2, seed=12):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 1000.0
    return np.stack([np.sin(2 * np.pi * f * t) + 0.1 * rng.standard_normal(n) for f in (60.0, 220.0)[:batch]])
