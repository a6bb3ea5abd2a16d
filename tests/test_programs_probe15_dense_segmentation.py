# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Dense-prediction and image-synthesis programs, run as tests/probe15_dense_common.py says. Segmentation networks: a
U-Net on odd sizes (grouped ``ConvTranspose2d`` with ``output_padding``, skips centre-cropped or padded, weighted and
label-smoothed cross-entropy with ``ignore_index`` plus soft Dice on ``one_hot().permute``; in channels_last too);
DeepLabV3+ (depthwise-separable dilated convs, ASPP with image pooling, OHEM cross-entropy, pixel-wise distillation
by KL at a temperature, poly LambdaLR, SGD nesterov, channels_last against contiguous); torchvision's FCN
segmentation reference (IntermediateLayerGetter, aux loss, SequentialLR of LinearLR and PolynomialLR, ConfusionMatrix
by ``bincount`` under ``inference_mode``); mmsegmentation's sliding-window inference (in-place adds into slices,
``F.pad`` into the full map, count matrix) with multi-scale flip test-time augmentation and a saliency gradient
through it."""

import numpy as np
import pytest

from .probe15_dense_common import F32, images, masks, seg_head
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A U-Net on odd sizes: ConvTranspose2d (stride 2, output_padding, groups), skips centre-cropped or
# padded, trained by cross-entropy (class weights, ignore_index, label smoothing) plus a soft Dice loss
# ----------------------------------------------------------------------------------------------


def unet(m, in_ch=3, classes=4, base=8):
    nn, torch = m.nn, m.torch

    class DoubleConv(nn.Sequential):
        def __init__(self, cin, cout):
            super().__init__(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class Up(nn.Module):
        def __init__(self, cin, cout, output_padding):
            super().__init__()
            # grouped transposed convolution: each half of the channels upsampled by its own filters
            self.up = nn.ConvTranspose2d(cin, cin // 2, kernel_size=3, stride=2, padding=1,
                                         output_padding=output_padding, groups=2)
            self.conv = DoubleConv(cin, cout)

        @staticmethod
        def center_crop(layer, target_size):
            _, _, h, w = layer.size()
            dy, dx = (h - target_size[0]) // 2, (w - target_size[1]) // 2
            return layer[:, :, dy:(dy + target_size[0]), dx:(dx + target_size[1])]

        def forward(self, x, skip):
            x = self.up(x)
            if x.shape[2:] != skip.shape[2:]:
                if x.shape[2] >= skip.shape[2] and x.shape[3] >= skip.shape[3]:
                    x = self.center_crop(x, skip.shape[2:])
                else:
                    diffY = skip.size()[2] - x.size()[2]
                    diffX = skip.size()[3] - x.size()[3]
                    x = nn.functional.pad(x, [diffX // 2, diffX - diffX // 2, diffY // 2, diffY - diffY // 2])
            return self.conv(torch.cat([skip, x], dim=1))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inc = DoubleConv(in_ch, base)
            self.down1 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(base, base * 2))
            self.down2 = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), DoubleConv(base * 2, base * 4))
            self.up1 = Up(base * 4, base * 2, output_padding=0)
            self.up2 = Up(base * 2, base, output_padding=1)
            self.outc = nn.Conv2d(base, classes, kernel_size=1)

        def forward(self, x):
            x1 = self.inc(x)
            x2 = self.down1(x1)
            x3 = self.down2(x2)
            x = self.up1(x3, x2)
            x = self.up2(x, x1)
            return self.outc(x)

    return UNet()


def dice_loss(m, logits, target, classes, ignore_index=255, eps=1e-6):
    torch, F = m.torch, m.F
    valid = (target != ignore_index).unsqueeze(1)
    probs = F.softmax(logits, dim=1) * valid
    one_hot = F.one_hot(torch.where(valid.squeeze(1), target, 0), classes).permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    intersection = torch.sum(probs * one_hot, dims)
    cardinality = torch.sum(probs + one_hot, dims)
    return 1.0 - (2.0 * intersection / (cardinality + eps)).mean()


def unet_training(m, weights, steps=3, channels_last=False):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, unet(m), weights)
    x = torch.tensor(images((2, 3, 13, 11)))
    y = torch.tensor(masks((2, 13, 11), 4, ignore=255))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    class_weights = torch.tensor([0.5, 1.0, 2.0, 1.5])
    criterion = nn.CrossEntropyLoss(weight=class_weights, ignore_index=255, label_smoothing=0.1)
    optimizer = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)
    history = []
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = criterion(logits, y) + dice_loss(m, logits, y, 4)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    grads = {name: p.grad for name, p in model.named_parameters()}
    return history, pred, model.state_dict(), grads, logits.shape


def test_unet_with_grouped_transposed_convolutions():
    weights = weights_of(unet)
    ours, theirs = run_both(unet_training, weights, **F32)
    history, pred, state, grads, shape = ours
    assert tuple(shape) == (2, 4, 13, 11) and pred.shape == (2, 13, 11)
    assert history[-1] < history[0]
    assert state["up2.up.weight"].shape == (16, 4, 3, 3)  # groups=2: in_channels x out_channels / groups


def test_unet_channels_last_gives_the_same_training():
    weights = weights_of(unet)
    contiguous, _ = run_both(unet_training, weights, **F32)
    last, _ = run_both(unet_training, weights, channels_last=True, **F32)
    for a, b in zip(contiguous[0], last[0]):
        assert a == pytest.approx(b, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# DeepLabV3+: a depthwise-separable dilated backbone, ASPP (dilated branches and an image-pooling branch
# by AdaptiveAvgPool2d(1) upsampled back), a decoder fusing low-level features after bilinear upsampling,
# the model and batch in channels_last; SGD(nesterov) with the poly schedule by LambdaLR, OHEM cross-entropy
# (per-pixel losses thresholded and top-k'd, ignore_index) and pixel-wise distillation from a frozen teacher
# by KL at a temperature
# ----------------------------------------------------------------------------------------------


def deeplab(m, classes=5):
    nn, torch, F = m.nn, m.torch, m.F

    class SeparableConv2d(nn.Sequential):
        def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, dilation=1, bias=False):
            dephtwise_conv = nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                                       dilation=dilation, groups=in_channels, bias=False)
            pointwise_conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=bias)
            super().__init__(dephtwise_conv, pointwise_conv)

    class ASPPConv(nn.Sequential):
        def __init__(self, in_channels, out_channels, dilation):
            super().__init__(SeparableConv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation),
                             nn.BatchNorm2d(out_channels), nn.ReLU())

    class ASPPPooling(nn.Sequential):
        def __init__(self, in_channels, out_channels):
            super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                             nn.BatchNorm2d(out_channels), nn.ReLU())

        def forward(self, x):
            size = x.shape[-2:]
            for mod in self:
                x = mod(x)
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    class ASPP(nn.Module):
        def __init__(self, in_channels, atrous_rates, out_channels=8):
            super().__init__()
            modules = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                                     nn.ReLU())]
            for rate in tuple(atrous_rates):
                modules.append(ASPPConv(in_channels, out_channels, rate))
            modules.append(ASPPPooling(in_channels, out_channels))
            self.convs = nn.ModuleList(modules)
            self.project = nn.Sequential(nn.Conv2d(len(self.convs) * out_channels, out_channels, 1, bias=False),
                                         nn.BatchNorm2d(out_channels), nn.ReLU())

        def forward(self, x):
            res = []
            for conv in self.convs:
                res.append(conv(x))
            res = torch.cat(res, dim=1)
            return self.project(res)

    class DeepLabV3Plus(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                                      nn.ReLU(inplace=True))
            self.low = nn.Sequential(SeparableConv2d(8, 12, stride=2), nn.BatchNorm2d(12), nn.ReLU(inplace=True))
            self.high = nn.Sequential(SeparableConv2d(12, 16, padding=2, dilation=2), nn.BatchNorm2d(16),
                                      nn.ReLU(inplace=True))
            self.aspp = ASPP(16, [1, 2, 3])
            self.low_proj = nn.Sequential(nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
            self.decoder = nn.Sequential(SeparableConv2d(12, 8), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                                         nn.Conv2d(8, num_classes, 1))

        def forward(self, x):
            input_shape = x.shape[-2:]
            low_level = self.stem(x)
            high = self.high(self.low(low_level))
            feature = self.aspp(high)
            feature = F.interpolate(feature, size=low_level.shape[2:], mode="bilinear", align_corners=False)
            out = self.decoder(torch.cat([self.low_proj(low_level), feature], dim=1))
            return F.interpolate(out, size=input_shape, mode="bilinear", align_corners=False)

    return DeepLabV3Plus(classes)


class OhemCrossEntropy:
    """OHEM as the segmentation repositories write it: pixels whose probability of their class is under
    ``thresh`` (at least ``min_kept`` of them, the hardest first) carry the loss."""

    def __init__(self, m, ignore_label=255, thresh=0.7, min_kept=20, weight=None):
        self.m = m
        self.thresh = thresh
        self.min_kept = max(1, min_kept)
        self.ignore_label = ignore_label
        self.criterion = m.nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_label, reduction='none')

    def __call__(self, score, target):
        torch, F = self.m.torch, self.m.F
        pred = F.softmax(score, dim=1)
        pixel_losses = self.criterion(score, target).contiguous().view(-1)
        mask = target.contiguous().view(-1) != self.ignore_label
        tmp_target = target.clone()
        tmp_target[tmp_target == self.ignore_label] = 0
        pred = pred.gather(1, tmp_target.unsqueeze(1))
        pred, ind = pred.contiguous().view(-1,)[mask].contiguous().sort()
        min_value = pred[min(self.min_kept, pred.numel() - 1)]
        threshold = max(min_value, self.thresh)
        pixel_losses = pixel_losses[mask][ind]
        pixel_losses = pixel_losses[pred < threshold]
        return pixel_losses.mean()


def deeplab_training(m, weights, teacher_weights, steps=3, channels_last=True):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, deeplab(m), weights)
    teacher = load(m, deeplab(m), teacher_weights).eval()
    teacher.requires_grad_(False)
    x = torch.tensor(images((2, 3, 20, 20), seed=6))
    target = torch.tensor(masks((2, 20, 20), 5, seed=6, ignore=255))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    params = [{"params": [p for n, p in model.named_parameters() if p.ndim > 1], "weight_decay": 1e-4},
              {"params": [p for n, p in model.named_parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    optimizer = optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True)
    max_iter = 10
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, lambda it: (1 - it / max_iter) ** 0.9)
    ohem = OhemCrossEntropy(m, thresh=0.7, min_kept=50, weight=torch.tensor([1.0, 0.8, 1.2, 1.0, 0.9]))
    T = 2.0
    history = []
    for step in range(steps):
        model.train()
        out = model(x)
        with torch.no_grad():
            soft = teacher(x)
        valid = (target != 255).unsqueeze(1).float()
        kd = F.kl_div(F.log_softmax(out / T, dim=1), F.softmax(soft / T, dim=1), reduction="none")
        kd = (kd * valid).sum() / valid.sum() * T * T
        loss = ohem(out, target) + 0.5 * kd
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        history.append((loss.item(), kd.item(), scheduler.get_last_lr()[0]))
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    grads = {n: p.grad for n, p in model.named_parameters()}
    return history, pred, grads, model.state_dict()


def test_deeplabv3plus_ohem_distillation_channels_last():
    weights, teacher = weights_of(deeplab), weights_of(deeplab, seed=1)
    ours, _ = run_both(deeplab_training, weights, teacher, **F32)
    history, pred, grads, state = ours
    assert pred.shape == (2, 20, 20)
    assert history[-1][2] == pytest.approx(0.05 * (1 - 3 / 10) ** 0.9)
    plain, _ = run_both(deeplab_training, weights, teacher, channels_last=False, **F32)
    np.testing.assert_allclose([h[0] for h in plain[0]], [h[0] for h in history], rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# torchvision's segmentation reference: an FCN whose backbone's features are taken by an
# IntermediateLayerGetter (a ModuleDict walked by named_children, returning an OrderedDict), main and
# auxiliary heads upsampled to the input, the criterion summing both (ignore_index=255), parameters in
# groups, warmup by LinearLR then PolynomialLR under SequentialLR, and evaluation under inference_mode
# with a ConfusionMatrix by bincount (global accuracy, per-class accuracy and IoU)
# ----------------------------------------------------------------------------------------------


def fcn(m, num_classes=4):
    nn, torch, F = m.nn, m.torch, m.F
    from collections import OrderedDict

    class IntermediateLayerGetter(nn.ModuleDict):
        _version = 2
        __annotations__ = {"return_layers": dict}

        def __init__(self, model, return_layers):
            if not set(return_layers).issubset([name for name, _ in model.named_children()]):
                raise ValueError("return_layers are not present in model")
            orig_return_layers = return_layers
            return_layers = {str(k): str(v) for k, v in return_layers.items()}
            layers = OrderedDict()
            for name, module in model.named_children():
                layers[name] = module
                if name in return_layers:
                    del return_layers[name]
                if not return_layers:
                    break
            super().__init__(layers)
            self.return_layers = orig_return_layers

        def forward(self, x):
            out = OrderedDict()
            for name, module in self.items():
                x = module(x)
                if name in self.return_layers:
                    out_name = self.return_layers[name]
                    out[out_name] = x
            return out

    def block(cin, cout, stride, dilation=1):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    backbone = nn.Sequential(OrderedDict([
        ("conv1", block(3, 8, 2)), ("layer1", block(8, 8, 1)), ("layer2", block(8, 12, 2)),
        ("layer3", block(12, 16, 1, dilation=2)), ("layer4", block(16, 16, 1, dilation=4)),
        ("avgpool", nn.AdaptiveAvgPool2d(1)), ("fc", nn.Flatten())]))

    class FCNHead(nn.Sequential):
        def __init__(self, in_channels, channels):
            inter_channels = in_channels // 4
            layers = [
                nn.Conv2d(in_channels, inter_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(inter_channels),
                nn.ReLU(),
                nn.Dropout(0.0),
                nn.Conv2d(inter_channels, channels, 1),
            ]
            super().__init__(*layers)

    class FCN(nn.Module):
        __constants__ = ["aux_classifier"]

        def __init__(self, backbone, classifier, aux_classifier=None):
            super().__init__()
            self.backbone = backbone
            self.classifier = classifier
            self.aux_classifier = aux_classifier

        def forward(self, x):
            input_shape = x.shape[-2:]
            features = self.backbone(x)
            result = OrderedDict()
            x = features["out"]
            x = self.classifier(x)
            x = F.interpolate(x, size=input_shape, mode="bilinear", align_corners=False)
            result["out"] = x
            if self.aux_classifier is not None:
                x = features["aux"]
                x = self.aux_classifier(x)
                x = F.interpolate(x, size=input_shape, mode="bilinear", align_corners=False)
                result["aux"] = x
            return result

    body = IntermediateLayerGetter(backbone, return_layers={"layer4": "out", "layer3": "aux"})
    return FCN(body, FCNHead(16, num_classes), FCNHead(16, num_classes))


class ConfusionMatrix:
    def __init__(self, m, num_classes):
        self.m = m
        self.num_classes = num_classes
        self.mat = None

    def update(self, a, b):
        torch = self.m.torch
        n = self.num_classes
        if self.mat is None:
            self.mat = torch.zeros((n, n), dtype=torch.int64, device=a.device)
        with torch.inference_mode():
            k = (a >= 0) & (a < n)
            inds = n * a[k].to(torch.int64) + b[k]
            self.mat += torch.bincount(inds, minlength=n ** 2).reshape(n, n)

    def compute(self):
        torch = self.m.torch
        h = self.mat.float()
        acc_global = torch.diag(h).sum() / h.sum()
        acc = torch.diag(h) / h.sum(1)
        iu = torch.diag(h) / (h.sum(1) + h.sum(0) - torch.diag(h))
        return acc_global, acc, iu


def fcn_training(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, fcn(m), weights)
    image = torch.tensor(images((2, 3, 16, 18), seed=16))
    target = torch.tensor(masks((2, 16, 18), 4, seed=16, ignore=255))

    def criterion(inputs, target):
        losses = {}
        for name, x in inputs.items():
            losses[name] = nn.functional.cross_entropy(x, target, ignore_index=255)
        if len(losses) == 1:
            return losses["out"]
        return losses["out"] + 0.5 * losses["aux"]

    params_to_optimize = [
        {"params": [p for p in model.backbone.parameters() if p.requires_grad]},
        {"params": [p for p in model.classifier.parameters() if p.requires_grad]},
    ]
    params = [p for p in model.aux_classifier.parameters() if p.requires_grad]
    params_to_optimize.append({"params": params, "lr": 0.02 * 10})
    optimizer = optim.SGD(params_to_optimize, lr=0.02, momentum=0.9, weight_decay=1e-4)
    iters_per_epoch, epochs, warmup_iters = 1, steps, 2
    main_lr_scheduler = optim.lr_scheduler.PolynomialLR(
        optimizer, total_iters=iters_per_epoch * (epochs - warmup_iters), power=0.9)
    warmup_lr_scheduler = optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warmup_iters)
    lr_scheduler = optim.lr_scheduler.SequentialLR(
        optimizer, schedulers=[warmup_lr_scheduler, main_lr_scheduler], milestones=[warmup_iters])
    history, lrs = [], []
    for step in range(steps):
        model.train()
        output = model(image)
        loss = criterion(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lr_scheduler.step()
        history.append(loss.item())
        lrs.append([g["lr"] for g in optimizer.param_groups])
    model.eval()
    confmat = ConfusionMatrix(m, 4)
    with torch.inference_mode():
        output = model(image)["out"]
        confmat.update(target.flatten(), output.argmax(1).flatten())
    acc_global, acc, iu = confmat.compute()
    return history, lrs, confmat.mat, acc_global, acc, iu, list(model.backbone.keys()), model.state_dict()


def test_torchvision_fcn_segmentation_reference():
    weights = weights_of(fcn)
    ours, _ = run_both(fcn_training, weights, **F32)
    history, lrs, mat, acc_global, acc, iu, layers, state = ours
    assert layers == ["conv1", "layer1", "layer2", "layer3", "layer4"]  # avgpool and fc dropped
    assert mat.sum() == (masks((2, 16, 18), 4, seed=16, ignore=255) != 255).sum()
    np.testing.assert_allclose(lrs[0], [0.02 * (0.01 + 0.99 / 2), 0.02 * (0.01 + 0.99 / 2), 0.2 * (0.01 + 0.99 / 2)])


# ----------------------------------------------------------------------------------------------
# mmsegmentation's sliding-window inference: overlapping crops (the last clamped to the border), logits
# accumulated by in-place adds into slices of a preallocated map and by F.pad into the full size, a count
# matrix, then multi-scale and flip test-time augmentation averaging softmaxes resized back by bilinear
# interpolation; the gradient of the averaged prediction with respect to the image (a saliency map)
# ----------------------------------------------------------------------------------------------


def slide_inference(m, model, img, crop_size=(8, 8), stride=(5, 5), num_classes=4):
    torch, F = m.torch, m.F
    h_stride, w_stride = stride
    h_crop, w_crop = crop_size
    batch_size, _, h_img, w_img = img.size()
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = img.new_zeros((batch_size, num_classes, h_img, w_img))
    padded = img.new_zeros((batch_size, num_classes, h_img, w_img))
    count_mat = img.new_zeros((batch_size, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * h_stride
            x1 = w_idx * w_stride
            y2 = min(y1 + h_crop, h_img)
            x2 = min(x1 + w_crop, w_img)
            y1 = max(y2 - h_crop, 0)
            x1 = max(x2 - w_crop, 0)
            crop_img = img[:, :, y1:y2, x1:x2]
            crop_seg_logit = model(crop_img)
            preds[:, :, y1:y2, x1:x2] += crop_seg_logit
            padded = padded + F.pad(crop_seg_logit, (int(x1), int(preds.shape[3] - x2), int(y1),
                                                     int(preds.shape[2] - y2)))
            count_mat[:, :, y1:y2, x1:x2] += 1
    assert (count_mat == 0).sum() == 0
    return preds / count_mat, padded / count_mat, count_mat


def segmentation_tta(m, weights):
    torch, F = m.torch, m.F
    model = load(m, seg_head(m), weights).eval()
    img = torch.tensor(images((1, 3, 13, 17), seed=20), requires_grad=True)
    by_slices, by_pad, counts = slide_inference(m, model, img)
    probs = []
    for scale in (0.75, 1.0, 1.25):
        for flip in (False, True):
            x = F.interpolate(img, scale_factor=scale, mode='bilinear', align_corners=False) if scale != 1.0 else img
            if flip:
                x = x.flip(dims=(3,))
            logits, _, _ = slide_inference(m, model, x)
            if flip:
                logits = logits.flip(dims=(3,))
            logits = F.interpolate(logits, size=img.shape[2:], mode='bilinear', align_corners=False)
            probs.append(logits.softmax(dim=1))
    prob = torch.stack(probs).mean(0)
    pred = prob.argmax(dim=1)
    # the saliency of the predicted class's total probability
    score = prob.gather(1, pred.unsqueeze(1)).sum()
    saliency, = torch.autograd.grad(score, img)
    return by_slices, by_pad, counts, prob, pred, saliency.abs().amax(dim=1)


def test_sliding_window_and_test_time_augmentation():
    weights = weights_of(seg_head)
    ours, _ = run_both(segmentation_tta, weights, rtol=1e-4, atol=1e-5)
    by_slices, by_pad, counts, prob, pred, saliency = ours
    np.testing.assert_allclose(by_slices, by_pad, rtol=1e-6, atol=1e-6)  # the two ways of accumulating agree
    # 13 rows in crops of 8 every 5: rows 0-7 and 5-12, so rows 5-7 are counted twice
    assert counts[0, 0, :, 0].tolist() == [1] * 5 + [2] * 3 + [1] * 5
    np.testing.assert_allclose(prob.sum(1), 1.0, rtol=1e-5)
