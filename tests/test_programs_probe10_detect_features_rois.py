"""Object-detection and audio programs written with plain tensor idioms, as the model repositories write them without
torchvision / torchaudio, run as tests/probe10_detect_common.py says. Detectors' features and data: an FPN top-down
path (``interpolate(size=)``) with ROI max pooling by ``adaptive_max_pool2d``; RoIAlign by ``affine_grid`` +
``grid_sample``; Mask R-CNN's mask loss and semantic segmentation's mIoU; upsampling by scale factors and sizes; DETR
/ YOLO collate functions and a grouped batch sampler."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

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
