# ruff: noqa: F841, UP008  (the programs are kept as their authors wrote them)
"""Course and book programs, run as tests/probe17_courses_common.py says. Deep Learning with PyTorch (Stevens et
al.), part 2: the LunaModel (Conv3d blocks, ``_init_weights`` by ``_calculate_fan_in_and_fan_out``) on 3-D
``affine_grid``/``grid_sample`` augmentation with ``transform_t @= rotation_t``, and the chapter 13 UNet (jvanvugt's,
padded and upconv, unpadded and bilinear with its bridges cropped) trained on dice losses over bool masks with a 2-D
augmentation; ``logMetrics`` (bool masks, precision/recall, ``SummaryWriter`` scalars, PR curve and histograms with
listed bins, chainrule's writer only)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, run_both

METRICS_LABEL_NDX, METRICS_PRED_NDX, METRICS_LOSS_NDX, METRICS_SIZE = 0, 1, 2, 3


def ct_chunks(n=6, shape=(16, 32, 32), seed=0):
    """Stand-ins for the candidate CT chunks: Hounsfield-like noise, a bright blob in the nodules."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*(np.arange(s) - s / 2 for s in shape), indexing="ij")
    blob = np.exp(-(zz ** 2 / 8 + yy ** 2 / 18 + xx ** 2 / 18))
    labels = np.arange(n) % 2
    chunks = rng.normal(-700, 100, (n,) + shape) + labels[:, None, None, None] * 1200 * blob
    return chunks.clip(-1000, 1000).astype(np.float32), labels


def dlwpt_luna_classifier(m):
    """Part 2 (chapters 11 and 12): LunaModel's Conv3d blocks with ``_init_weights``, the 3-D augmentation by
    ``affine_grid``/``grid_sample`` (flips, offsets, scales, a rotation multiplied in by ``@=``, noise), and
    ``computeBatchLoss`` filling a metrics tensor from ``CrossEntropyLoss(reduction='none')``."""
    import random

    torch, nn, F = m.torch, m.nn, m.F

    class LunaBlock(nn.Module):
        def __init__(self, in_channels, conv_channels):
            super().__init__()
            self.conv1 = nn.Conv3d(in_channels, conv_channels, kernel_size=3, padding=1, bias=True)
            self.relu1 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv3d(conv_channels, conv_channels, kernel_size=3, padding=1, bias=True)
            self.relu2 = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool3d(2, 2)

        def forward(self, input_batch):
            block_out = self.conv1(input_batch)
            block_out = self.relu1(block_out)
            block_out = self.conv2(block_out)
            block_out = self.relu2(block_out)
            return self.maxpool(block_out)

    class LunaModel(nn.Module):
        def __init__(self, in_channels=1, conv_channels=4):
            super().__init__()
            self.tail_batchnorm = nn.BatchNorm3d(1)
            self.block1 = LunaBlock(in_channels, conv_channels)
            self.block2 = LunaBlock(conv_channels, conv_channels * 2)
            self.block3 = LunaBlock(conv_channels * 2, conv_channels * 4)
            self.block4 = LunaBlock(conv_channels * 4, conv_channels * 8)
            self.head_linear = nn.Linear(conv_channels * 8 * 1 * 2 * 2, 2)
            self.head_softmax = nn.Softmax(dim=1)
            self._init_weights()

        def _init_weights(self):
            for m in self.modules():
                if type(m) in {nn.Linear, nn.Conv3d, nn.Conv2d, nn.ConvTranspose2d, nn.ConvTranspose3d}:
                    nn.init.kaiming_normal_(m.weight.data, a=0, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:
                        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight.data)
                        bound = 1 / math.sqrt(fan_out)
                        nn.init.normal_(m.bias, -bound, bound)

        def forward(self, input_batch):
            bn_output = self.tail_batchnorm(input_batch)
            block_out = self.block1(bn_output)
            block_out = self.block2(block_out)
            block_out = self.block3(block_out)
            block_out = self.block4(block_out)
            conv_flat = block_out.view(block_out.size(0), -1)
            linear_output = self.head_linear(conv_flat)
            return linear_output, self.head_softmax(linear_output)

    def getCtAugmentedCandidate(augmentation_dict, ct_chunk):
        ct_t = torch.tensor(ct_chunk).unsqueeze(0).unsqueeze(0).to(torch.float32)
        transform_t = torch.eye(4)
        for i in range(3):
            if "flip" in augmentation_dict:
                if random.random() > 0.5:
                    transform_t[i, i] *= -1
            if "offset" in augmentation_dict:
                offset_float = augmentation_dict["offset"]
                random_float = (random.random() * 2 - 1)
                transform_t[i, 3] = offset_float * random_float
            if "scale" in augmentation_dict:
                scale_float = augmentation_dict["scale"]
                random_float = (random.random() * 2 - 1)
                transform_t[i, i] *= 1.0 + scale_float * random_float
        if "rotate" in augmentation_dict:
            angle_rad = random.random() * math.pi * 2
            s = math.sin(angle_rad)
            c = math.cos(angle_rad)
            rotation_t = torch.tensor([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
            transform_t @= rotation_t
        affine_t = F.affine_grid(transform_t[:3].unsqueeze(0).to(torch.float32), ct_t.size(), align_corners=False)
        augmented_chunk = F.grid_sample(ct_t, affine_t, padding_mode="border", align_corners=False).to("cpu")
        if "noise" in augmentation_dict:
            noise_t = torch.randn_like(augmented_chunk)
            noise_t *= augmentation_dict["noise"]
            augmented_chunk += noise_t
        return augmented_chunk[0], transform_t

    augmentation_dict = {"flip": True, "offset": 0.1, "scale": 0.2, "rotate": True, "noise": 25.0}
    chunks, labels = ct_chunks()
    random.seed(4)
    torch.manual_seed(4)
    augmented, transforms = zip(*(getCtAugmentedCandidate(augmentation_dict, c) for c in chunks))
    # the candidate tensors as LunaDataset returns them: HU clamped, (1, D, H, W), a two-class label
    candidates = torch.stack([a.clamp(-1000, 1000) for a in augmented])
    pos_t = torch.tensor([[not lbl, bool(lbl)] for lbl in labels], dtype=torch.long)

    torch.manual_seed(0)
    model = LunaModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.99)
    trnMetrics_g = torch.zeros(METRICS_SIZE, 2 * len(chunks))

    def computeBatchLoss(batch_ndx, batch_tup, batch_size, metrics_g):
        input_t, label_t = batch_tup
        logits_g, probability_g = model(input_t)
        loss_func = nn.CrossEntropyLoss(reduction="none")
        loss_g = loss_func(logits_g, label_t[:, 1])
        start_ndx = batch_ndx * batch_size
        end_ndx = start_ndx + label_t.size(0)
        metrics_g[METRICS_LABEL_NDX, start_ndx:end_ndx] = label_t[:, 1].detach()
        metrics_g[METRICS_PRED_NDX, start_ndx:end_ndx] = probability_g[:, 1].detach()
        metrics_g[METRICS_LOSS_NDX, start_ndx:end_ndx] = loss_g.detach()
        return loss_g.mean()

    model.train()
    batch_size = 3
    for epoch_ndx in range(2):
        for batch_ndx in range(len(chunks) // batch_size):
            sl = slice(batch_ndx * batch_size, (batch_ndx + 1) * batch_size)
            optimizer.zero_grad()
            loss_var = computeBatchLoss(epoch_ndx * 2 + batch_ndx, (candidates[sl], pos_t[sl]), batch_size,
                                        trnMetrics_g)
            loss_var.backward()
            optimizer.step()
    negLabel_mask = trnMetrics_g[METRICS_LABEL_NDX] <= 0.5
    negPred_mask = trnMetrics_g[METRICS_PRED_NDX] <= 0.5
    neg_correct = int((negLabel_mask & negPred_mask).sum())
    return {"augmented": candidates, "transforms": transforms, "metrics": trnMetrics_g, "neg_correct": neg_correct,
            "conv": model.block1.conv1.weight, "bn": model.tail_batchnorm.running_var,
            "head": model.head_linear.weight}


def test_dlwpt_luna_classifier_conv3d_and_3d_augmentation():
    ours, _ = run_both(dlwpt_luna_classifier, rtol=1e-4, atol=1e-5)
    assert ours["augmented"].shape == (6, 1, 16, 32, 32)
    metrics = ours["metrics"]
    np.testing.assert_array_equal(metrics[METRICS_LABEL_NDX], np.tile([0, 1], 6))
    assert np.all((metrics[METRICS_PRED_NDX] > 0) & (metrics[METRICS_PRED_NDX] < 1))


METRICS_TP_NDX, METRICS_FN_NDX, METRICS_FP_NDX = 3, 4, 5


def seg_slices(n=8, side=16, seed=0):
    """Stand-ins for the CT slices around a nodule: 3 context channels, a disc of brighter tissue as the mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    inputs, masks = [], []
    for _ in range(n):
        cy, cx, r = rng.uniform(5, side - 5), rng.uniform(5, side - 5), rng.uniform(2, 4)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        ct = rng.normal(0, 0.3, (3, side, side)) + mask * np.array([0.5, 1.0, 0.5])[:, None, None]
        inputs.append(ct)
        masks.append(mask[None])
    return np.array(inputs, np.float32), np.array(masks)


def unet_classes(m):
    """jvanvugt's UNet as the book vendors it (util/unet.py)."""
    torch, nn, F = m.torch, m.nn, m.F

    class UNetConvBlock(nn.Module):
        def __init__(self, in_size, out_size, padding, batch_norm):
            super(UNetConvBlock, self).__init__()
            block = []
            block.append(nn.Conv2d(in_size, out_size, kernel_size=3, padding=int(padding)))
            block.append(nn.ReLU())
            if batch_norm:
                block.append(nn.BatchNorm2d(out_size))
            block.append(nn.Conv2d(out_size, out_size, kernel_size=3, padding=int(padding)))
            block.append(nn.ReLU())
            if batch_norm:
                block.append(nn.BatchNorm2d(out_size))
            self.block = nn.Sequential(*block)

        def forward(self, x):
            return self.block(x)

    class UNetUpBlock(nn.Module):
        def __init__(self, in_size, out_size, up_mode, padding, batch_norm):
            super(UNetUpBlock, self).__init__()
            if up_mode == "upconv":
                self.up = nn.ConvTranspose2d(in_size, out_size, kernel_size=2, stride=2)
            elif up_mode == "upsample":
                self.up = nn.Sequential(nn.Upsample(mode="bilinear", scale_factor=2),
                                        nn.Conv2d(in_size, out_size, kernel_size=1))
            self.conv_block = UNetConvBlock(in_size, out_size, padding, batch_norm)

        def center_crop(self, layer, target_size):
            _, _, layer_height, layer_width = layer.size()
            diff_y = (layer_height - target_size[0]) // 2
            diff_x = (layer_width - target_size[1]) // 2
            return layer[:, :, diff_y:(diff_y + target_size[0]), diff_x:(diff_x + target_size[1])]

        def forward(self, x, bridge):
            up = self.up(x)
            crop1 = self.center_crop(bridge, up.shape[2:])
            out = torch.cat([up, crop1], 1)
            out = self.conv_block(out)
            return out

    class UNet(nn.Module):
        def __init__(self, in_channels=1, n_classes=2, depth=5, wf=6, padding=False, batch_norm=False,
                     up_mode="upconv"):
            super(UNet, self).__init__()
            assert up_mode in ("upconv", "upsample")
            self.padding = padding
            self.depth = depth
            prev_channels = in_channels
            self.down_path = nn.ModuleList()
            for i in range(depth):
                self.down_path.append(UNetConvBlock(prev_channels, 2 ** (wf + i), padding, batch_norm))
                prev_channels = 2 ** (wf + i)
            self.up_path = nn.ModuleList()
            for i in reversed(range(depth - 1)):
                self.up_path.append(UNetUpBlock(prev_channels, 2 ** (wf + i), up_mode, padding, batch_norm))
                prev_channels = 2 ** (wf + i)
            self.last = nn.Conv2d(prev_channels, n_classes, kernel_size=1)

        def forward(self, x):
            blocks = []
            for i, down in enumerate(self.down_path):
                x = down(x)
                if i != len(self.down_path) - 1:
                    blocks.append(x)
                    x = F.max_pool2d(x, 2)
            for i, up in enumerate(self.up_path):
                x = up(x, blocks[-i - 1])
            return self.last(x)

    class UNetWrapper(nn.Module):
        def __init__(self, **kwargs):
            super().__init__()
            self.input_batchnorm = nn.BatchNorm2d(kwargs["in_channels"])
            self.unet = UNet(**kwargs)
            self.final = nn.Sigmoid()
            self._init_weights()

        def _init_weights(self):
            init_set = {nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear}
            for m in self.modules():
                if type(m) in init_set:
                    nn.init.kaiming_normal_(m.weight.data, mode="fan_out", nonlinearity="relu", a=0)
                    if m.bias is not None:
                        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight.data)
                        bound = 1 / math.sqrt(fan_out)
                        nn.init.normal_(m.bias, -bound, bound)

        def forward(self, input_batch):
            bn_output = self.input_batchnorm(input_batch)
            un_output = self.unet(bn_output)
            fn_output = self.final(un_output)
            return fn_output

    return UNet, UNetWrapper


def dlwpt_segmentation(m):
    """Part 2 (chapter 13): UNetWrapper trained on the dice loss plus eight times the false-negative dice,
    with SegmentationAugmentation (a batch of 2-D affine grids by ``expand``, the label warped as float and
    thresholded back to bool) and the TP/FN/FP metrics from bool masks (``~label_g``)."""
    import random

    torch, nn, F = m.torch, m.nn, m.F
    UNet, UNetWrapper = unet_classes(m)

    class SegmentationAugmentation(nn.Module):
        def __init__(self, flip=None, offset=None, scale=None, rotate=None, noise=None):
            super().__init__()
            self.flip = flip
            self.offset = offset
            self.scale = scale
            self.rotate = rotate
            self.noise = noise

        def forward(self, input_g, label_g):
            transform_t = self._build2dTransformMatrix()
            transform_t = transform_t.expand(input_g.shape[0], -1, -1)
            transform_t = transform_t.to(input_g.device, torch.float32)
            affine_t = F.affine_grid(transform_t[:, :2], input_g.size(), align_corners=False)
            augmented_input_g = F.grid_sample(input_g, affine_t, padding_mode="border", align_corners=False)
            augmented_label_g = F.grid_sample(label_g.to(torch.float32), affine_t, padding_mode="border",
                                              align_corners=False)
            if self.noise:
                noise_t = torch.randn_like(augmented_input_g)
                noise_t *= self.noise
                augmented_input_g += noise_t
            return augmented_input_g, augmented_label_g > 0.5

        def _build2dTransformMatrix(self):
            transform_t = torch.eye(3)
            for i in range(2):
                if self.flip:
                    if random.random() > 0.5:
                        transform_t[i, i] *= -1
                if self.offset:
                    offset_float = self.offset
                    random_float = (random.random() * 2 - 1)
                    transform_t[2, i] = offset_float * random_float
                if self.scale:
                    scale_float = self.scale
                    random_float = (random.random() * 2 - 1)
                    transform_t[i, i] *= 1.0 + scale_float * random_float
            if self.rotate:
                angle_rad = random.random() * math.pi * 2
                s = math.sin(angle_rad)
                c = math.cos(angle_rad)
                rotation_t = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]])
                transform_t @= rotation_t
            return transform_t

    def diceLoss(prediction_g, label_g, epsilon=1):
        diceLabel_g = label_g.sum(dim=[1, 2, 3])
        dicePrediction_g = prediction_g.sum(dim=[1, 2, 3])
        diceCorrect_g = (prediction_g * label_g).sum(dim=[1, 2, 3])
        diceRatio_g = (2 * diceCorrect_g + epsilon) / (dicePrediction_g + diceLabel_g + epsilon)
        return 1 - diceRatio_g

    torch.manual_seed(0)
    segmentation_model = UNetWrapper(in_channels=3, n_classes=1, depth=3, wf=2, padding=True, batch_norm=True,
                                     up_mode="upconv")
    augmentation_model = SegmentationAugmentation(flip=True, offset=0.03, scale=0.2, rotate=True, noise=0.05)
    optimizer = torch.optim.Adam(segmentation_model.parameters())
    inputs, masks = seg_slices()
    input_all, label_all = torch.from_numpy(inputs), torch.from_numpy(masks)
    batch_size = 4
    metrics_g = torch.zeros(6, 2 * len(inputs))

    def computeBatchLoss(batch_ndx, batch_tup, batch_size, metrics_g, classificationThreshold=0.5):
        input_g, label_g = batch_tup
        if segmentation_model.training:
            input_g, label_g = augmentation_model(input_g, label_g)
        prediction_g = segmentation_model(input_g)
        diceLoss_g = diceLoss(prediction_g, label_g)
        fnLoss_g = diceLoss(prediction_g * label_g, label_g)
        start_ndx = batch_ndx * batch_size
        end_ndx = start_ndx + input_g.size(0)
        with torch.no_grad():
            predictionBool_g = (prediction_g[:, 0:1] > classificationThreshold).to(torch.float32)
            tp = (predictionBool_g * label_g).sum(dim=[1, 2, 3])
            fn = ((1 - predictionBool_g) * label_g).sum(dim=[1, 2, 3])
            fp = (predictionBool_g * (~label_g)).sum(dim=[1, 2, 3])
            metrics_g[METRICS_LOSS_NDX, start_ndx:end_ndx] = diceLoss_g
            metrics_g[METRICS_TP_NDX, start_ndx:end_ndx] = tp
            metrics_g[METRICS_FN_NDX, start_ndx:end_ndx] = fn
            metrics_g[METRICS_FP_NDX, start_ndx:end_ndx] = fp
        return diceLoss_g.mean() + fnLoss_g.mean() * 8, label_g

    random.seed(0)
    torch.manual_seed(0)
    segmentation_model.train()
    losses, label_sums = [], []
    for epoch in range(2):
        for batch_ndx in range(len(inputs) // batch_size):
            sl = slice(batch_ndx * batch_size, (batch_ndx + 1) * batch_size)
            optimizer.zero_grad()
            loss_var, label_g = computeBatchLoss(epoch * 2 + batch_ndx, (input_all[sl], label_all[sl]), batch_size,
                                                 metrics_g)
            loss_var.backward()
            optimizer.step()
            losses.append(loss_var.item())
            label_sums.append(label_g.sum(dim=[1, 2, 3]))
    segmentation_model.eval()
    with torch.no_grad():
        prediction = segmentation_model(input_all)
    # the unpadded UNet with bilinear upsampling crops its bridges
    torch.manual_seed(1)
    unpadded = UNet(in_channels=3, n_classes=2, depth=2, wf=2, padding=False, up_mode="upsample")
    out = unpadded(torch.from_numpy(np.pad(inputs, ((0, 0), (0, 0), (4, 4), (4, 4)), mode="reflect")))
    out.logsumexp(1).mean().backward()
    return {"losses": losses, "label_sums": label_sums, "metrics": metrics_g, "prediction": prediction,
            "bn_mean": segmentation_model.input_batchnorm.running_mean,
            "up_weight": segmentation_model.unet.up_path[0].up.weight, "unpadded": out,
            "unpadded_grad": unpadded.down_path[0].block[0].weight.grad}


def test_dlwpt_unet_segmentation_dice():
    ours, _ = run_both(dlwpt_segmentation, rtol=2e-4, atol=2e-5)
    assert ours["unpadded"].shape == (8, 2, 8, 8)
    assert ours["prediction"].shape == (8, 1, 16, 16)
    metrics = ours["metrics"]
    # every labelled pixel of the (augmented) masks is either a true positive or a false negative
    np.testing.assert_array_equal(metrics[METRICS_TP_NDX] + metrics[METRICS_FN_NDX],
                                  np.concatenate(ours["label_sums"]))


def dlwpt_log_metrics(m, log_dir=None):
    """Part 2's ``logMetrics``: bool masks over a metrics tensor (``metrics_t[LOSS, negLabel_mask]``, ``~``, ``&``),
    precision/recall/F1 by NumPy float32 division, and (where a log directory is given) the scalars, the PR curve
    and histograms with a list of bin edges written by ``SummaryWriter``."""
    torch = m.torch
    rng = np.random.default_rng(3)
    metrics_t = torch.zeros(3, 40)
    metrics_t[METRICS_LABEL_NDX] = torch.from_numpy((np.arange(40) % 3 == 0).astype(np.float32))
    metrics_t[METRICS_PRED_NDX] = torch.from_numpy(rng.uniform(0, 1, 40).astype(np.float32))
    metrics_t[METRICS_LOSS_NDX] = torch.from_numpy(rng.exponential(1, 40).astype(np.float32))
    classificationThreshold = 0.5
    negLabel_mask = metrics_t[METRICS_LABEL_NDX] <= classificationThreshold
    negPred_mask = metrics_t[METRICS_PRED_NDX] <= classificationThreshold
    posLabel_mask = ~negLabel_mask
    posPred_mask = ~negPred_mask
    neg_count = int(negLabel_mask.sum())
    pos_count = int(posLabel_mask.sum())
    trueNeg_count = neg_correct = int((negLabel_mask & negPred_mask).sum())
    truePos_count = pos_correct = int((posLabel_mask & posPred_mask).sum())
    falsePos_count = neg_count - neg_correct
    falseNeg_count = pos_count - pos_correct
    metrics_dict = {}
    metrics_dict["loss/all"] = metrics_t[METRICS_LOSS_NDX].mean()
    metrics_dict["loss/neg"] = metrics_t[METRICS_LOSS_NDX, negLabel_mask].mean()
    metrics_dict["loss/pos"] = metrics_t[METRICS_LOSS_NDX, posLabel_mask].mean()
    metrics_dict["correct/all"] = (pos_correct + neg_correct) / np.float32(metrics_t.shape[1]) * 100
    metrics_dict["correct/neg"] = neg_correct / np.float32(neg_count) * 100
    metrics_dict["correct/pos"] = pos_correct / np.float32(pos_count) * 100
    precision = metrics_dict["pr/precision"] = truePos_count / np.float32(truePos_count + falsePos_count)
    recall = metrics_dict["pr/recall"] = truePos_count / np.float32(truePos_count + falseNeg_count)
    metrics_dict["pr/f1_score"] = 2 * (precision * recall) / (precision + recall)
    if log_dir is not None:
        from autograd.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=log_dir)
        for key, value in metrics_dict.items():
            writer.add_scalar(key, value, 40)
        writer.add_pr_curve("pr", metrics_t[METRICS_LABEL_NDX], metrics_t[METRICS_PRED_NDX], 40)
        bins = [x / 50.0 for x in range(51)]
        negHist_mask = negLabel_mask & (metrics_t[METRICS_PRED_NDX] > 0.01)
        posHist_mask = posLabel_mask & (metrics_t[METRICS_PRED_NDX] < 0.99)
        if negHist_mask.any():
            writer.add_histogram("is_neg", metrics_t[METRICS_PRED_NDX, negHist_mask], 40, bins=bins)
        if posHist_mask.any():
            writer.add_histogram("is_pos", metrics_t[METRICS_PRED_NDX, posHist_mask], 40, bins=bins)
        writer.close()
    return {k: float(v) for k, v in metrics_dict.items()}


def test_dlwpt_log_metrics(tmp_path):
    import os

    ours, _ = run_both(dlwpt_log_metrics)
    labels = np.arange(40) % 3 == 0  # 14 positives, 26 negatives
    assert ours["correct/all"] == pytest.approx((ours["correct/neg"] * 26 + ours["correct/pos"] * 14) / 40)
    assert ours["pr/f1_score"] == pytest.approx(2 * ours["pr/precision"] * ours["pr/recall"]
                                                / (ours["pr/precision"] + ours["pr/recall"]))
    assert labels.sum() == 14
    dlwpt_log_metrics(OURS, str(tmp_path))  # the writer: chainrule's own (PyTorch's needs the tensorboard package)
    (event_file,) = [f for f in os.listdir(tmp_path) if f.startswith("events.out.tfevents")]
    written = (tmp_path / event_file).read_bytes()
    for tag in [b"loss/neg", b"pr/f1_score", b"is_neg", b"is_pos", b"pr"]:
        assert tag in written
