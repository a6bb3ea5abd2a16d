# ruff: noqa: B006, B007, B008, B023, E501, E701, E721, E741, E731, F841, UP004, UP008, UP018, UP031, UP032, UP039  (the programs are kept as their authors wrote them)
"""Self-supervised, contrastive and metric-learning programs as their reference repositories write them
(see tests/pytorch_programs.py), each trained a few steps from the same weights on synthetic data on chainrule
and on PyTorch, comparing losses, gradients, parameters and buffers (SimCLR's NT-Xent, Khosla's SupCon and
matmul batch-hard mining are in test_programs_probe6_losses.py).

Self-supervised: BYOL as lucidrains/byol-pytorch writes it (a forward hook on the penultimate child, a
projector made lazily and moved by ``Module.to(tensor)``, a target by ``copy.deepcopy`` registered by
``setattr`` over ``None``), its moving average three ways (``.data`` reassignment, ``torch._foreach_lerp_``
on state dicts as timm's ModelEmaV3, ``_foreach_mul_``/``_foreach_add_``); MoCo v2 (a queue buffer written by
slice, ``einsum('nc,ck->nk')``, shuffle-BN by a permutation and its ``argsort``, top-k accuracy) and MoCo v3's
loss; DINO (multi-crop by ``unique_consecutive``, a weight-normed last layer by either API with a frozen
magnitude, a running centre, teacher-temperature and cosine lr/wd/momentum schedules per group, clipping and
the last layer's grads set to None in epoch one), its teacher by deepcopy, and DINO's ViT (bicubic
positional interpolation with a fractional scale factor, attention maps, k-NN eval with ``resize_``, a
linear probe); DINOv2's losses (iBOT's masked patches through ``index_select(out=buffer[:n])`` and
``buffer[:n].copy_``, Sinkhorn teacher, KoLeo's ``view(-1)[::n + 1].fill_``, lr/wd multiplier groups);
Barlow Twins with its LARS (``diagonal().add_(-1).pow_(2)``, the off-diagonal view; checked against NumPy),
VICReg (a gather as a one-process autograd.Function), SwAV (Sinkhorn-Knopp in place, prototypes normalised
each step, a feature queue), SimSiam (a frozen bias, a fixed-lr group), MAE (einsum patchify, masking by
argsort and gather), MSN (``log(p ** -t)``, me-max), W-MSE (Cholesky whitening as a 1x1 conv2d,
``torch.add(out=buffer)``, writes into ``empty_like``), CLIP's loss with a clamped logit scale, NNCLR's
support queue, lemniscate's memory bank (a Function whose backward edits its gradient and a saved buffer in
place) and SCAN (masked_select with a broadcast mask, class weights by unique counts).

Metric learning: ArcFace/CosFace heads (arcface-pytorch) and insightface's combined margin (acos/cos in place
under no_grad); re-ID batch-hard triplet by masks and views with centre loss and label smoothing; TensorFlow's semi-hard
mining as PyTorch ports write it; SupCon by
logsumexp over -inf; the siamese losses of nn (CosineEmbeddingLoss, MarginRankingLoss,
TripletMarginWithDistanceLoss, TripletMarginLoss, contrastive); prototypical networks by cdist; the
multi-similarity, Proxy-Anchor and SoftTriple losses; pairwise ranking over tied scores (the hinge's corner) and
CosineEmbeddingLoss given 0/1 labels."""

import copy
import math
from functools import wraps

import numpy as np
import pytest

from .pytorch_programs import assert_same, load, run_both, weights_of


def images(m, n=8, side=12, seed=0):
    rng = np.random.default_rng(seed)
    return m.torch.tensor(rng.standard_normal((n, 3, side, side)).astype(np.float32))


def backbone(m, num_classes=10):
    """A small ResNet-like stand-in: its pooled features feed a ``fc`` that self-supervised methods replace."""
    nn = m.nn

    class Net(nn.Module):
        def __init__(self, num_classes=num_classes):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(16)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(16, num_classes)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.avgpool(x)
            x = m.torch.flatten(x, 1)
            return self.fc(x)

    return Net()


def sequential_backbone(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


# ----------------------------------------------------------------------------------------------
# BYOL (lucidrains/byol-pytorch)
# ----------------------------------------------------------------------------------------------


def byol_model(m):
    torch, nn, F = m.torch, m.nn, m.F

    def singleton(cache_key):
        def inner_fn(fn):
            @wraps(fn)
            def wrapper(self, *args, **kwargs):
                instance = getattr(self, cache_key)
                if instance is not None:
                    return instance
                instance = fn(self, *args, **kwargs)
                setattr(self, cache_key, instance)
                return instance
            return wrapper
        return inner_fn

    def get_module_device(module):
        return next(module.parameters()).device

    def set_requires_grad(model, val):
        for p in model.parameters():
            p.requires_grad = val

    def flatten(t):
        return t.reshape(t.shape[0], -1)

    def loss_fn(x, y):
        x = F.normalize(x, dim=-1, p=2)
        y = F.normalize(y, dim=-1, p=2)
        return 2 - 2 * (x * y).sum(dim=-1)

    def MLP(dim, projection_size, hidden_size=4096):
        return nn.Sequential(
            nn.Linear(dim, hidden_size),
            nn.BatchNorm1d(hidden_size),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_size, projection_size)
        )

    class NetWrapper(nn.Module):
        def __init__(self, net, projection_size, projection_hidden_size, layer=-2):
            super().__init__()
            self.net = net
            self.layer = layer
            self.projector = None
            self.projection_size = projection_size
            self.projection_hidden_size = projection_hidden_size
            self.hidden = {}
            self.hook_registered = False

        def _find_layer(self):
            if type(self.layer) == str:
                modules = dict([*self.net.named_modules()])
                return modules.get(self.layer, None)
            elif type(self.layer) == int:
                children = [*self.net.children()]
                return children[self.layer]
            return None

        def _hook(self, _, input, output):
            device = input[0].device
            self.hidden[device] = flatten(output)

        def _register_hook(self):
            layer = self._find_layer()
            assert layer is not None, f'hidden layer ({self.layer}) not found'
            handle = layer.register_forward_hook(self._hook)
            self.hook_registered = True

        @singleton('projector')
        def _get_projector(self, hidden):
            _, dim = hidden.shape
            projector = MLP(dim, self.projection_size, self.projection_hidden_size)
            return projector.to(hidden)

        def get_representation(self, x):
            if self.layer == -1:
                return self.net(x)
            if not self.hook_registered:
                self._register_hook()
            self.hidden.clear()
            _ = self.net(x)
            hidden = self.hidden[x.device]
            self.hidden.clear()
            assert hidden is not None, f'hidden layer {self.layer} never emitted an output'
            return hidden

        def forward(self, x, return_projection=True):
            representation = self.get_representation(x)
            if not return_projection:
                return representation
            projector = self._get_projector(representation)
            projection = projector(representation)
            return projection, representation

    class EMA():
        def __init__(self, beta):
            super().__init__()
            self.beta = beta

        def update_average(self, old, new):
            if old is None:
                return new
            return old * self.beta + (1 - self.beta) * new

    def update_moving_average(ema_updater, ma_model, current_model):
        for current_params, ma_params in zip(current_model.parameters(), ma_model.parameters()):
            old_weight, up_weight = ma_params.data, current_params.data
            ma_params.data = ema_updater.update_average(old_weight, up_weight)

    class BYOL(nn.Module):
        def __init__(self, net, image_size, hidden_layer=-2, projection_size=256, projection_hidden_size=4096,
                     augment_fn=None, augment_fn2=None, moving_average_decay=0.99, use_momentum=True):
            super().__init__()
            self.net = net
            self.augment1 = augment_fn
            self.augment2 = augment_fn2
            self.online_encoder = NetWrapper(net, projection_size, projection_hidden_size, layer=hidden_layer)
            self.use_momentum = use_momentum
            self.target_encoder = None
            self.target_ema_updater = EMA(moving_average_decay)
            self.online_predictor = MLP(projection_size, projection_size, projection_hidden_size)
            device = get_module_device(net)
            self.to(device)
            # send a mock image tensor to instantiate singleton parameters
            self.forward(torch.randn(2, 3, image_size, image_size, device=device))

        @singleton('target_encoder')
        def _get_target_encoder(self):
            target_encoder = copy.deepcopy(self.online_encoder)
            set_requires_grad(target_encoder, False)
            return target_encoder

        def reset_moving_average(self):
            del self.target_encoder
            self.target_encoder = None

        def update_moving_average(self):
            assert self.use_momentum, 'you do not need to update the moving average'
            assert self.target_encoder is not None, 'target encoder has not been created yet'
            update_moving_average(self.target_ema_updater, self.target_encoder, self.online_encoder)

        def forward(self, x, return_embedding=False, return_projection=True):
            assert not (self.training and x.shape[0] == 1), 'you must have greater than 1 sample when training'
            if return_embedding:
                return self.online_encoder(x, return_projection=return_projection)
            image_one, image_two = self.augment1(x), self.augment2(x)
            images = torch.cat((image_one, image_two), dim=0)
            online_projections, _ = self.online_encoder(images)
            online_predictions = self.online_predictor(online_projections)
            online_pred_one, online_pred_two = online_predictions.chunk(2, dim=0)
            with torch.no_grad():
                target_encoder = self._get_target_encoder() if self.use_momentum else self.online_encoder
                target_projections, _ = target_encoder(images)
                target_projections = target_projections.detach()
                target_proj_one, target_proj_two = target_projections.chunk(2, dim=0)
            loss_one = loss_fn(online_pred_one, target_proj_two.detach())
            loss_two = loss_fn(online_pred_two, target_proj_one.detach())
            loss = loss_one + loss_two
            return loss.mean()

    def augment1(x):
        return x

    def augment2(x):
        return torch.flip(x, dims=(3,)) * 0.9 + 0.1

    return BYOL(sequential_backbone(m), image_size=12, hidden_layer=-2, projection_size=8,
                projection_hidden_size=32, augment_fn=augment1, augment_fn2=augment2)


def byol(m, weights, ema, steps=3):
    torch = m.torch
    learner = load(m, byol_model(m), weights)
    # SGD, not the README's Adam: the biases before BatchNorm have gradients of rounding noise only, which
    # Adam would blow up to steps of lr
    opt = m.optim.SGD(learner.parameters(), lr=0.05, momentum=0.9)
    decay = learner.target_ema_updater.beta
    losses = []
    for step in range(steps):
        loss = learner(images(m, seed=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ema == "data":
            learner.update_moving_average()  # update moving average of target encoder
        elif ema == "foreach_lerp":  # timm's ModelEmaV3, on the state dicts (buffers too)
            with torch.no_grad():
                ema_lerp_values, model_lerp_values = [], []
                for ema_v, model_v in zip(learner.target_encoder.state_dict().values(),
                                          learner.online_encoder.state_dict().values()):
                    if ema_v.is_floating_point():
                        ema_lerp_values.append(ema_v)
                        model_lerp_values.append(model_v)
                    else:
                        ema_v.copy_(model_v)
                torch._foreach_lerp_(ema_lerp_values, model_lerp_values, weight=1. - decay)
        else:
            with torch.no_grad():
                ema_params = tuple(learner.target_encoder.parameters())
                model_params = tuple(learner.online_encoder.parameters())
                torch._foreach_mul_(ema_params, decay)
                torch._foreach_add_(ema_params, model_params, alpha=1. - decay)
        losses.append(loss.item())
    grads = {n: p.grad for n, p in learner.named_parameters() if p.grad is not None}
    with torch.no_grad():
        embedding = learner(images(m, seed=9), return_embedding=True)
    return {"losses": losses, "grads": grads, "state": learner.state_dict(), "embedding": embedding,
            "target_requires_grad": [p.requires_grad for p in learner.target_encoder.parameters()]}


@pytest.mark.parametrize("ema", ["data", "foreach_lerp", "foreach_mul_add"])
def test_byol(ema):
    weights = weights_of(byol_model)
    assert any(k.startswith("target_encoder.projector.") for k in weights)  # setattr over None registered it
    ours, _ = run_both(byol, weights, ema, rtol=1e-4, atol=1e-5)
    assert not any(ours["target_requires_grad"])
    assert not any(k.startswith("target_encoder.") for k in ours["grads"])
    assert all(0 <= loss <= 8 for loss in ours["losses"])  # (two views' 2 - 2 cos, each in [0, 4])
    online, target = ours["state"]["online_encoder.net.0.weight"], ours["state"]["target_encoder.net.0.weight"]
    start = weights["online_encoder.net.0.weight"]
    assert not np.allclose(online, start) and not np.allclose(target, start)
    # the target moved a hundredth of the way each step: it stays far nearer its start than the online net
    assert np.abs(target - start).max() < 0.1 * np.abs(online - start).max()


# ----------------------------------------------------------------------------------------------
# MoCo v2 (facebookresearch/moco, single process: the gathers are the identity)
# ----------------------------------------------------------------------------------------------


def moco_model(m, queue=None):
    torch, nn = m.torch, m.nn

    class MoCo(nn.Module):
        def __init__(self, base_encoder, dim=128, K=65536, m=0.999, T=0.07, mlp=False):
            super(MoCo, self).__init__()
            self.K = K
            self.m = m
            self.T = T
            # create the encoders
            # num_classes is the output fc dimension
            self.encoder_q = base_encoder(num_classes=dim)
            self.encoder_k = base_encoder(num_classes=dim)
            if mlp:  # hack: brute-force replacement
                dim_mlp = self.encoder_q.fc.weight.shape[1]
                self.encoder_q.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_q.fc)
                self.encoder_k.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_k.fc)
            for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
                param_k.data.copy_(param_q.data)  # initialize
                param_k.requires_grad = False  # not update by gradient
            # create the queue
            self.register_buffer("queue", torch.randn(dim, K))
            self.queue = nn.functional.normalize(self.queue, dim=0)
            self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

        @torch.no_grad()
        def _momentum_update_key_encoder(self):
            """Momentum update of the key encoder"""
            for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
                param_k.data = param_k.data * self.m + param_q.data * (1. - self.m)

        @torch.no_grad()
        def _dequeue_and_enqueue(self, keys):
            batch_size = keys.shape[0]
            ptr = int(self.queue_ptr)
            assert self.K % batch_size == 0  # for simplicity
            # replace the keys at ptr (dequeue and enqueue)
            self.queue[:, ptr:ptr + batch_size] = keys.T
            ptr = (ptr + batch_size) % self.K  # move pointer
            self.queue_ptr[0] = ptr

        @torch.no_grad()
        def _batch_shuffle_ddp(self, x, idx_shuffle):
            batch_size_this = x.shape[0]
            x_gather = x
            batch_size_all = x_gather.shape[0]
            num_gpus = batch_size_all // batch_size_this
            # index for restoring
            idx_unshuffle = torch.argsort(idx_shuffle)
            # shuffled index for this gpu
            gpu_idx = 0
            idx_this = idx_shuffle.view(num_gpus, -1)[gpu_idx]
            return x_gather[idx_this], idx_unshuffle

        @torch.no_grad()
        def _batch_unshuffle_ddp(self, x, idx_unshuffle):
            batch_size_this = x.shape[0]
            x_gather = x
            batch_size_all = x_gather.shape[0]
            num_gpus = batch_size_all // batch_size_this
            # restored index for this gpu
            gpu_idx = 0
            idx_this = idx_unshuffle.view(num_gpus, -1)[gpu_idx]
            return x_gather[idx_this]

        def forward(self, im_q, im_k, idx_shuffle):
            # compute query features
            q = self.encoder_q(im_q)  # queries: NxC
            q = nn.functional.normalize(q, dim=1)
            # compute key features
            with torch.no_grad():  # no gradient to keys
                self._momentum_update_key_encoder()  # update the key encoder
                # shuffle for making use of BN
                im_k, idx_unshuffle = self._batch_shuffle_ddp(im_k, idx_shuffle)
                k = self.encoder_k(im_k)  # keys: NxC
                k = nn.functional.normalize(k, dim=1)
                # undo shuffle
                k = self._batch_unshuffle_ddp(k, idx_unshuffle)
            # compute logits
            # Einstein sum is more intuitive
            # positive logits: Nx1
            l_pos = torch.einsum('nc,nc->n', [q, k]).unsqueeze(-1)
            # negative logits: NxK
            l_neg = torch.einsum('nc,ck->nk', [q, self.queue.clone().detach()])
            # logits: Nx(1+K)
            logits = torch.cat([l_pos, l_neg], dim=1)
            # apply temperature
            logits /= self.T
            # labels: positive key indicators
            labels = torch.zeros(logits.shape[0], dtype=torch.long)
            # dequeue and enqueue
            self._dequeue_and_enqueue(k)
            return logits, labels

    return MoCo(lambda num_classes: backbone(m, num_classes), dim=8, K=24, m=0.9, T=0.2, mlp=True)


def moco(m, weights, steps=4):
    torch, nn = m.torch, m.nn

    def accuracy(output, target, topk=(1,)):
        """Computes the accuracy over the k top predictions for the specified values of k"""
        with torch.no_grad():
            maxk = max(topk)
            batch_size = target.size(0)
            _, pred = output.topk(maxk, 1, True, True)
            pred = pred.t()
            correct = pred.eq(target.view(1, -1).expand_as(pred))
            res = []
            for k in topk:
                correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
                res.append(correct_k.mul_(100.0 / batch_size))
            return res

    model = load(m, moco_model(m), weights)
    criterion = nn.CrossEntropyLoss()
    optimizer = m.optim.SGD(model.parameters(), 0.03, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(5)
    log = []
    for i in range(steps):
        x = images(m, seed=10 + i)
        im_q, im_k = x, torch.flip(x, dims=[2]) + 0.05 * x
        idx_shuffle = torch.tensor(rng.permutation(8))
        output, target = model(im_q=im_q, im_k=im_k, idx_shuffle=idx_shuffle)
        loss = criterion(output, target)
        acc1, acc5 = accuracy(output, target, topk=(1, 5))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append((loss.item(), acc1[0].item(), acc5[0].item(), int(model.queue_ptr)))
    grads = [p.grad for p in model.encoder_q.parameters()]
    return {"log": log, "grads": grads, "state": model.state_dict(), "logits": output.detach()}


def test_moco_v2():
    weights = weights_of(moco_model)
    np.testing.assert_allclose(np.linalg.norm(weights["queue"], axis=0), 1, rtol=1e-5)
    ours, _ = run_both(moco, weights, rtol=1e-4, atol=1e-5)
    assert [ptr for *_, ptr in ours["log"]] == [8, 16, 0, 8]
    state = ours["state"]
    # the queue holds the normalised keys of the last three batches, each a unit vector
    np.testing.assert_allclose(np.linalg.norm(state["queue"], axis=0), 1, rtol=1e-5)
    assert not np.allclose(state["queue"], weights["queue"])
    np.testing.assert_allclose(ours["logits"][:, 1:] * 0.2, np.clip(ours["logits"][:, 1:] * 0.2, -1, 1))
    assert all(p is not None for p in ours["grads"])
    # the key encoder trails the query encoder by momentum only
    for name in ("conv1.weight", "fc.0.weight"):
        q, k, start = state["encoder_q." + name], state["encoder_k." + name], weights["encoder_q." + name]
        assert 0 < np.abs(k - start).max() < np.abs(q - start).max()


# ----------------------------------------------------------------------------------------------
# DINO (facebookresearch/dino)
# ----------------------------------------------------------------------------------------------


def dino_parts(m, parametrized=False):
    torch, nn, F = m.torch, m.nn, m.F

    class DINOHead(nn.Module):
        def __init__(self, in_dim, out_dim, use_bn=False, norm_last_layer=True, nlayers=3, hidden_dim=2048,
                     bottleneck_dim=256):
            super().__init__()
            nlayers = max(nlayers, 1)
            if nlayers == 1:
                self.mlp = nn.Linear(in_dim, bottleneck_dim)
            else:
                layers = [nn.Linear(in_dim, hidden_dim)]
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
                for _ in range(nlayers - 2):
                    layers.append(nn.Linear(hidden_dim, hidden_dim))
                    if use_bn:
                        layers.append(nn.BatchNorm1d(hidden_dim))
                    layers.append(nn.GELU())
                layers.append(nn.Linear(hidden_dim, bottleneck_dim))
                self.mlp = nn.Sequential(*layers)
            self.apply(self._init_weights)
            if parametrized:
                self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim,
                                                                                  bias=False))
                self.last_layer.parametrizations.weight.original0.data.fill_(1)
                if norm_last_layer:
                    self.last_layer.parametrizations.weight.original0.requires_grad = False
            else:
                self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
                self.last_layer.weight_g.data.fill_(1)
                if norm_last_layer:
                    self.last_layer.weight_g.requires_grad = False

        def _init_weights(self, m):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.constant_(m.bias, 0)

        def forward(self, x):
            x = self.mlp(x)
            x = nn.functional.normalize(x, dim=-1, p=2)
            x = self.last_layer(x)
            return x

    class MultiCropWrapper(nn.Module):
        def __init__(self, backbone, head):
            super(MultiCropWrapper, self).__init__()
            # disable layers dedicated to ImageNet labels classification
            backbone.fc, backbone.head = nn.Identity(), nn.Identity()
            self.backbone = backbone
            self.head = head

        def forward(self, x):
            # convert to list
            if not isinstance(x, list):
                x = [x]
            idx_crops = torch.cumsum(torch.unique_consecutive(
                torch.tensor([inp.shape[-1] for inp in x]),
                return_counts=True,
            )[1], 0)
            start_idx, output = 0, torch.empty(0).to(x[0].device)
            for end_idx in idx_crops:
                _out = self.backbone(torch.cat(x[start_idx: end_idx]))
                # The output is a tuple with XCiT model. See:
                # https://github.com/facebookresearch/xcit/blob/master/xcit.py#L404-L405
                if isinstance(_out, tuple):
                    _out = _out[0]
                # accumulate outputs
                output = torch.cat((output, _out))
                start_idx = end_idx
            # Run the head forward on the concatenated features.
            return self.head(output)

    class DINOLoss(nn.Module):
        def __init__(self, out_dim, ncrops, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, nepochs,
                     student_temp=0.1, center_momentum=0.9):
            super().__init__()
            self.student_temp = student_temp
            self.center_momentum = center_momentum
            self.ncrops = ncrops
            self.register_buffer("center", torch.zeros(1, out_dim))
            # we apply a warm up for the teacher temperature because
            # a too high temperature makes the training instable at the beginning
            self.teacher_temp_schedule = np.concatenate((
                np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs),
                np.ones(nepochs - warmup_teacher_temp_epochs) * teacher_temp
            ))

        def forward(self, student_output, teacher_output, epoch):
            """
            Cross-entropy between softmax outputs of the teacher and student networks.
            """
            student_out = student_output / self.student_temp
            student_out = student_out.chunk(self.ncrops)
            # teacher centering and sharpening
            temp = self.teacher_temp_schedule[epoch]
            teacher_out = F.softmax((teacher_output - self.center) / temp, dim=-1)
            teacher_out = teacher_out.detach().chunk(2)
            total_loss = 0
            n_loss_terms = 0
            for iq, q in enumerate(teacher_out):
                for v in range(len(student_out)):
                    if v == iq:
                        # we skip cases where student and teacher operate on the same view
                        continue
                    loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                    total_loss += loss.mean()
                    n_loss_terms += 1
            total_loss /= n_loss_terms
            self.update_center(teacher_output)
            return total_loss

        @torch.no_grad()
        def update_center(self, teacher_output):
            """
            Update center used for teacher output.
            """
            batch_center = torch.sum(teacher_output, dim=0, keepdim=True)
            batch_center = batch_center / len(teacher_output)
            # ema update
            self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)

    def student_and_teacher():
        student = MultiCropWrapper(backbone(m), DINOHead(16, 12, norm_last_layer=True, hidden_dim=24,
                                                         bottleneck_dim=8))
        teacher = MultiCropWrapper(backbone(m), DINOHead(16, 12, hidden_dim=24, bottleneck_dim=8))
        return student, teacher

    return student_and_teacher, DINOLoss


def dino_student(m, parametrized=False):
    return dino_parts(m, parametrized)[0]()[0]


def dino(m, weights, parametrized, epochs=2, niter_per_ep=2):
    torch, nn = m.torch, m.nn
    student_and_teacher, DINOLoss = dino_parts(m, parametrized)

    def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
        warmup_schedule = np.array([])
        warmup_iters = warmup_epochs * niter_per_ep
        if warmup_epochs > 0:
            warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
        iters = np.arange(epochs * niter_per_ep - warmup_iters)
        schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
        schedule = np.concatenate((warmup_schedule, schedule))
        assert len(schedule) == epochs * niter_per_ep
        return schedule

    def get_params_groups(model):
        regularized = []
        not_regularized = []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            # we do not regularize biases nor Norm parameters
            if name.endswith(".bias") or len(param.shape) == 1:
                not_regularized.append(param)
            else:
                regularized.append(param)
        return [{'params': regularized}, {'params': not_regularized, 'weight_decay': 0.}]

    def clip_gradients(model, clip):
        norms = []
        for name, p in model.named_parameters():
            if p.grad is not None:
                param_norm = p.grad.data.norm(2)
                norms.append(param_norm.item())
                clip_coef = clip / (param_norm + 1e-6)
                if clip_coef < 1:
                    p.grad.data.mul_(clip_coef)
        return norms

    def cancel_gradients_last_layer(epoch, model, freeze_last_layer):
        if epoch >= freeze_last_layer:
            return
        for n, p in model.named_parameters():
            if "last_layer" in n:
                p.grad = None

    student, teacher = student_and_teacher()
    load(m, student, weights)
    # teacher and student start with the same weights
    teacher.load_state_dict(student.state_dict())
    # there is no backpropagation through the teacher, so no need for gradients
    for p in teacher.parameters():
        p.requires_grad = False
    dino_loss = DINOLoss(12, 4, 0.04, 0.07, 1, epochs)
    params_groups = get_params_groups(student)
    optimizer = m.optim.AdamW(params_groups)  # to use with ViTs
    lr_schedule = cosine_scheduler(0.005 * 16 / 256., 1e-6, epochs, niter_per_ep, warmup_epochs=1)
    wd_schedule = cosine_scheduler(0.04, 0.4, epochs, niter_per_ep)
    momentum_schedule = cosine_scheduler(0.9, 1, epochs, niter_per_ep)
    log, last_layer_grads = [], []
    for epoch in range(epochs):
        for it in range(niter_per_ep):
            x = images(m, n=4, side=12, seed=30 + epoch * niter_per_ep + it)
            local = images(m, n=4, side=6, seed=50 + epoch * niter_per_ep + it)
            crops = [x, torch.flip(x, dims=[3]), local, local.flip(2)]
            it = niter_per_ep * epoch + it  # global training iteration
            for i, param_group in enumerate(optimizer.param_groups):
                param_group["lr"] = lr_schedule[it]
                if i == 0:  # only the first group is regularized
                    param_group["weight_decay"] = wd_schedule[it]
            teacher_output = teacher(crops[:2])  # only the 2 global views pass through the teacher
            student_output = student(crops)
            loss = dino_loss(student_output, teacher_output, epoch)
            if not math.isfinite(loss.item()):
                raise RuntimeError("Loss is {}, stopping training".format(loss.item()))
            optimizer.zero_grad()
            loss.backward()
            param_norms = clip_gradients(student, 3.0)
            cancel_gradients_last_layer(epoch, student, 1)
            last_layer_grads.append([p.grad for n, p in student.named_parameters() if "last_layer" in n])
            optimizer.step()
            # EMA update for the teacher
            with torch.no_grad():
                m_ = momentum_schedule[it]  # momentum parameter
                for param_q, param_k in zip(student.parameters(), teacher.parameters()):
                    param_k.data.mul_(m_).add_((1 - m_) * param_q.detach().data)
            log.append((loss.item(), param_norms, [g["lr"] for g in optimizer.param_groups],
                        [g["weight_decay"] for g in optimizer.param_groups]))
    return {"log": log, "student": student.state_dict(), "teacher": teacher.state_dict(),
            "center": dino_loss.center, "last_layer_grads": last_layer_grads,
            "grads": [p.grad for p in student.parameters() if p.grad is not None]}


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("parametrized", [False, True], ids=["weight_norm", "parametrizations"])
def test_dino(parametrized):
    weights = weights_of(lambda m: dino_student(m, parametrized))
    ours, _ = run_both(dino, weights, parametrized, rtol=1e-4, atol=1e-5)
    first, second = [g for g in ours["last_layer_grads"][:2]], ours["last_layer_grads"][2:]
    assert all(g == [] or all(x is None for x in g) for g in first)  # frozen in the first epoch
    assert all(g[-1] is not None for g in second)
    magnitude = "head.last_layer." + ("parametrizations.weight.original0" if parametrized else "weight_g")
    np.testing.assert_array_equal(ours["student"][magnitude], 1)  # the frozen magnitude stayed 1
    assert all(loss > 0 for loss, *_ in ours["log"])
    assert ours["log"][0][3] == [pytest.approx(0.04), 0.0]
    assert ours["center"].shape == (1, 12) and np.abs(ours["center"]).max() > 0


# ----------------------------------------------------------------------------------------------
# Barlow Twins (facebookresearch/barlowtwins, with its LARS optimizer)
# ----------------------------------------------------------------------------------------------


def off_diagonal(x):
    # return a flattened view of the off-diagonal elements of a square matrix
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_model(m, projector="24-24-12", batch_size=8, lambd=0.0051):
    torch, nn = m.torch, m.nn

    class BarlowTwins(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone(m)
            self.backbone.fc = nn.Identity()
            # projector
            sizes = [16] + list(map(int, projector.split('-')))
            layers = []
            for i in range(len(sizes) - 2):
                layers.append(nn.Linear(sizes[i], sizes[i + 1], bias=False))
                layers.append(nn.BatchNorm1d(sizes[i + 1]))
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
            self.projector = nn.Sequential(*layers)
            # normalization layer for the representations z1 and z2
            self.bn = nn.BatchNorm1d(sizes[-1], affine=False)

        def forward(self, y1, y2):
            z1 = self.projector(self.backbone(y1))
            z2 = self.projector(self.backbone(y2))
            # empirical cross-correlation matrix
            c = self.bn(z1).T @ self.bn(z2)
            # sum the cross-correlation matrix between all gpus
            c.div_(batch_size)
            on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
            off_diag = off_diagonal(c).pow_(2).sum()
            loss = on_diag + lambd * off_diag
            return loss

    return BarlowTwins()


def lars(m):
    torch, optim = m.torch, m.optim

    class LARS(optim.Optimizer):
        def __init__(self, params, lr, weight_decay=0, momentum=0.9, eta=0.001,
                     weight_decay_filter=False, lars_adaptation_filter=False):
            defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                            eta=eta, weight_decay_filter=weight_decay_filter,
                            lars_adaptation_filter=lars_adaptation_filter)
            super().__init__(params, defaults)

        def exclude_bias_and_norm(self, p):
            return p.ndim == 1

        @torch.no_grad()
        def step(self):
            for g in self.param_groups:
                for p in g['params']:
                    dp = p.grad
                    if dp is None:
                        continue
                    if not g['weight_decay_filter'] or not self.exclude_bias_and_norm(p):
                        dp = dp.add(p, alpha=g['weight_decay'])
                    if not g['lars_adaptation_filter'] or not self.exclude_bias_and_norm(p):
                        param_norm = torch.norm(p)
                        update_norm = torch.norm(dp)
                        one = torch.ones_like(param_norm)
                        q = torch.where(param_norm > 0.,
                                        torch.where(update_norm > 0,
                                                    (g['eta'] * param_norm / update_norm), one), one)
                        dp = dp.mul(q)
                    param_state = self.state[p]
                    if 'mu' not in param_state:
                        param_state['mu'] = torch.zeros_like(p)
                    mu = param_state['mu']
                    mu.mul_(g['momentum']).add_(dp)
                    p.add_(mu, alpha=-g['lr'])

    return LARS


def barlow_twins(m, weights, epochs=3, loader_len=2):
    torch = m.torch
    model = load(m, barlow_model(m), weights)
    param_weights = []
    param_biases = []
    for param in model.parameters():
        if param.ndim == 1:
            param_biases.append(param)
        else:
            param_weights.append(param)
    parameters = [{'params': param_weights}, {'params': param_biases}]
    optimizer = lars(m)(parameters, lr=0, weight_decay=1.5e-6, weight_decay_filter=True,
                        lars_adaptation_filter=True)

    def adjust_learning_rate(optimizer, step, batch_size=8, learning_rate_weights=0.2, learning_rate_biases=0.0048):
        max_steps = epochs * loader_len
        warmup_steps = 1 * loader_len
        base_lr = batch_size / 256
        if step < warmup_steps:
            lr = base_lr * step / warmup_steps
        else:
            step -= warmup_steps
            max_steps -= warmup_steps
            q = 0.5 * (1 + math.cos(math.pi * step / max_steps))
            end_lr = base_lr * 0.001
            lr = base_lr * q + end_lr * (1 - q)
        optimizer.param_groups[0]['lr'] = lr * learning_rate_weights
        optimizer.param_groups[1]['lr'] = lr * learning_rate_biases

    log = []
    for epoch in range(epochs):
        for step in range(loader_len):
            step = epoch * loader_len + step
            x = images(m, seed=60 + step)
            y1, y2 = x, torch.flip(x, dims=[2, 3]) * 0.8
            adjust_learning_rate(optimizer, step)
            optimizer.zero_grad()
            loss = model.forward(y1, y2)
            loss.backward()
            optimizer.step()
            log.append((loss.item(), optimizer.param_groups[0]['lr'], optimizer.param_groups[1]['lr']))
    grads = [p.grad for p in model.parameters()]
    mu = [optimizer.state[p]['mu'] for p in model.parameters()]
    return {"log": log, "grads": grads, "mu": mu, "state": model.state_dict()}


def test_barlow_twins():
    weights = weights_of(barlow_model)
    ours, _ = run_both(barlow_twins, weights, rtol=1e-4, atol=1e-4)  # gradients up to about 10
    assert ours["log"][0][1] == 0 and ours["log"][1][1] > 0
    assert all(g is not None for g in ours["grads"])


def barlow_loss_pieces(m, seed):
    """The cross-correlation loss with its in-place steps, and the same written out of place."""
    torch = m.torch
    rng = np.random.default_rng(seed)
    z1 = torch.tensor(rng.standard_normal((6, 5)), requires_grad=True)
    z2 = torch.tensor(rng.standard_normal((6, 5)), requires_grad=True)
    bn = m.nn.BatchNorm1d(5, affine=False).double()
    c = bn(z1).T @ bn(z2)
    c.div_(6)
    diagonal_view = torch.diagonal(c)
    on_diag = diagonal_view.add_(-1).pow_(2).sum()
    off_diag = off_diagonal(c).pow_(2).sum()
    loss = on_diag + 0.5 * off_diag
    g1, g2 = torch.autograd.grad(loss, [z1, z2])
    return loss, g1, g2, c.detach()


def test_barlow_in_place_cross_correlation_against_numpy():
    ours, _ = run_both(barlow_loss_pieces, 3, rtol=1e-10, atol=1e-12)
    rng = np.random.default_rng(3)
    z1, z2 = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    norm = lambda z: (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
    c = norm(z1).T @ norm(z2) / 6
    off = ~np.eye(5, dtype=bool)
    expected = ((np.diag(c) - 1) ** 2).sum() + 0.5 * (c[off] ** 2).sum()
    assert ours[0] == pytest.approx(expected, rel=1e-12)
    # c after the in-place steps: its diagonal holds (c_ii - 1)^2, its off-diagonal c_ij^2 were not written back
    after = c.copy()
    np.fill_diagonal(after, (np.diag(c) - 1) ** 2)
    np.testing.assert_allclose(ours[3], after, rtol=1e-12)
    # the loss's gradient with respect to c, taken back through the normalisation by hand
    dc = 2 * (c - np.eye(5)) * np.eye(5) + 0.5 * 2 * c * off

    def bn_backward(z, dy):
        y, std = norm(z), np.sqrt(z.var(0) + 1e-5)
        return (dy - dy.mean(0) - y * (dy * y).mean(0)) / std

    np.testing.assert_allclose(ours[1], bn_backward(z1, norm(z2) @ dc.T / 6), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours[2], bn_backward(z2, norm(z1) @ dc / 6), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# VICReg (facebookresearch/vicreg, the gather as a one-process autograd.Function)
# ----------------------------------------------------------------------------------------------


def vicreg_model(m, mlp="24-24-12"):
    torch, nn, F = m.torch, m.nn, m.F

    def Projector(embedding):
        mlp_spec = f"{embedding}-{mlp}"
        layers = []
        f = list(map(int, mlp_spec.split("-")))
        for i in range(len(f) - 2):
            layers.append(nn.Linear(f[i], f[i + 1]))
            layers.append(nn.BatchNorm1d(f[i + 1]))
            layers.append(nn.ReLU(True))
        layers.append(nn.Linear(f[-2], f[-1], bias=False))
        return nn.Sequential(*layers)

    class FullGatherLayer(torch.autograd.Function):
        """
        Gather tensors from all process and support backward propagation
        for the gradients across processes.
        """

        @staticmethod
        def forward(ctx, x):
            output = [torch.zeros_like(x) for _ in range(1)]  # dist.get_world_size() is 1
            output[0].copy_(x)  # dist.all_gather(output, x)
            return tuple(output)

        @staticmethod
        def backward(ctx, *grads):
            all_gradients = torch.stack(grads)
            return all_gradients[0]  # dist.get_rank() is 0

    class VICReg(nn.Module):
        def __init__(self, batch_size=8, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
            super().__init__()
            self.batch_size, self.sim_coeff, self.std_coeff, self.cov_coeff = batch_size, sim_coeff, std_coeff, cov_coeff
            self.num_features = int(mlp.split("-")[-1])
            self.backbone, self.embedding = backbone(m), 16
            self.backbone.fc = nn.Identity()
            self.projector = Projector(self.embedding)

        def forward(self, x, y):
            x = self.projector(self.backbone(x))
            y = self.projector(self.backbone(y))
            repr_loss = F.mse_loss(x, y)
            x = torch.cat(FullGatherLayer.apply(x), dim=0)
            y = torch.cat(FullGatherLayer.apply(y), dim=0)
            x = x - x.mean(dim=0)
            y = y - y.mean(dim=0)
            std_x = torch.sqrt(x.var(dim=0) + 0.0001)
            std_y = torch.sqrt(y.var(dim=0) + 0.0001)
            std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
            cov_x = (x.T @ x) / (self.batch_size - 1)
            cov_y = (y.T @ y) / (self.batch_size - 1)
            cov_loss = off_diagonal(cov_x).pow_(2).sum().div(
                self.num_features
            ) + off_diagonal(cov_y).pow_(2).sum().div(self.num_features)
            loss = (
                self.sim_coeff * repr_loss
                + self.std_coeff * std_loss
                + self.cov_coeff * cov_loss
            )
            return loss, (repr_loss, std_loss, cov_loss)

    return VICReg()


def vicreg(m, weights, steps=4):
    torch = m.torch
    model = load(m, vicreg_model(m), weights)
    optimizer = lars(m)(model.parameters(), lr=0.05, weight_decay=1e-6, weight_decay_filter=True,
                        lars_adaptation_filter=True)
    log = []
    for step in range(steps):
        x = images(m, seed=70 + step)
        optimizer.zero_grad()
        loss, parts = model.forward(x, x.roll(1, dims=3) + 0.1)
        loss.backward()
        optimizer.step()
        log.append([loss.item()] + [p.item() for p in parts])
    return {"log": log, "grads": [p.grad for p in model.parameters()], "state": model.state_dict()}


def test_vicreg():
    weights = weights_of(vicreg_model)
    ours, _ = run_both(vicreg, weights, rtol=1e-4, atol=1e-5)
    for loss, repr_loss, std_loss, cov_loss in ours["log"]:
        assert loss == pytest.approx(25 * repr_loss + 25 * std_loss + cov_loss, rel=1e-5)
        assert std_loss > 0
    assert all(g is not None for g in ours["grads"])


# ----------------------------------------------------------------------------------------------
# SwAV (facebookresearch/swav: multi-crop, a feature queue, Sinkhorn-Knopp, prototypes normalised each step)
# ----------------------------------------------------------------------------------------------


def swav_model(m, output_dim=8, nmb_prototypes=10):
    torch, nn = m.torch, m.nn

    class SwAVNet(nn.Module):
        def __init__(self, normalize=True):
            super().__init__()
            self.l2norm = normalize
            self.net = backbone(m)
            self.net.fc = nn.Identity()
            self.projection_head = nn.Sequential(
                nn.Linear(16, 24), nn.BatchNorm1d(24), nn.ReLU(inplace=True), nn.Linear(24, output_dim))
            self.prototypes = nn.Linear(output_dim, nmb_prototypes, bias=False)

        def forward_backbone(self, x):
            return self.net(x)

        def forward_head(self, x):
            if self.projection_head is not None:
                x = self.projection_head(x)
            if self.l2norm:
                x = nn.functional.normalize(x, dim=1, p=2)
            if self.prototypes is not None:
                return x, self.prototypes(x)
            return x

        def forward(self, inputs):
            if not isinstance(inputs, list):
                inputs = [inputs]
            idx_crops = torch.cumsum(torch.unique_consecutive(
                torch.tensor([inp.shape[-1] for inp in inputs]),
                return_counts=True,
            )[1], 0)
            start_idx = 0
            for end_idx in idx_crops:
                _out = self.forward_backbone(torch.cat(inputs[start_idx: end_idx]))
                if start_idx == 0:
                    output = _out
                else:
                    output = torch.cat((output, _out))
                start_idx = end_idx
            return self.forward_head(output)

    return SwAVNet()


def swav(m, weights, steps=5, epsilon=0.05, sinkhorn_iterations=3, temperature=0.1, queue_length=8,
         crops_for_assign=(0, 1), nmb_crops=(2, 2), freeze_prototypes_niters=2):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, swav_model(m), weights)
    optimizer = m.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-6)

    @torch.no_grad()
    def distributed_sinkhorn(out):
        Q = torch.exp(out / epsilon).t()  # Q is K-by-B for consistency with notations from our paper
        B = Q.shape[1] * 1  # number of samples to assign
        K = Q.shape[0]  # how many prototypes
        # make the matrix sums to 1
        sum_Q = torch.sum(Q)
        Q /= sum_Q
        for it in range(sinkhorn_iterations):
            # normalize each row: total weight per prototype must be 1/K
            sum_of_rows = torch.sum(Q, dim=1, keepdim=True)
            Q /= sum_of_rows
            Q /= K
            # normalize each column: total weight per sample must be 1/B
            Q /= torch.sum(Q, dim=0, keepdim=True)
            Q /= B
        Q *= B  # the colomns must sum to 1 so that Q is an assignment
        return Q.t()

    queue = torch.zeros(len(crops_for_assign), queue_length, 8)
    use_the_queue = False
    log, assignments = [], []
    for iteration in range(steps):
        x = images(m, n=4, seed=80 + iteration)
        small = images(m, n=4, side=6, seed=90 + iteration)
        inputs = [x, x.flip(3) * 0.9, small, small.transpose(2, 3)]
        # normalize the prototypes
        with torch.no_grad():
            w = model.prototypes.weight.data.clone()
            w = nn.functional.normalize(w, dim=1, p=2)
            model.prototypes.weight.copy_(w)
        # ============ multi-res forward passes ... ============
        embedding, output = model(inputs)
        embedding = embedding.detach()
        bs = inputs[0].size(0)
        # ============ swav loss ... ============
        loss = 0
        for i, crop_id in enumerate(crops_for_assign):
            with torch.no_grad():
                out = output[bs * crop_id: bs * (crop_id + 1)].detach()
                # time to use the queue
                if queue is not None:
                    if use_the_queue or not torch.all(queue[i, -1, :] == 0):
                        use_the_queue = True
                        out = torch.cat((torch.mm(
                            queue[i],
                            model.prototypes.weight.t()
                        ), out))
                    # fill the queue
                    queue[i, bs:] = queue[i, :-bs].clone()
                    queue[i, :bs] = embedding[crop_id * bs: (crop_id + 1) * bs]
                # get assignments
                q = distributed_sinkhorn(out)[-bs:]
                assignments.append(q)
            # cluster assignment prediction
            subloss = 0
            for v in np.delete(np.arange(np.sum(nmb_crops)), crop_id):
                x = output[bs * v: bs * (v + 1)] / temperature
                subloss -= torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
            loss += subloss / (np.sum(nmb_crops) - 1)
        loss /= len(crops_for_assign)
        # ============ backward and optim step ... ============
        optimizer.zero_grad()
        loss.backward()
        # cancel gradients for the prototypes
        if iteration < freeze_prototypes_niters:
            for name, p in model.named_parameters():
                if "prototypes" in name:
                    p.grad = None
        optimizer.step()
        log.append((loss.item(), use_the_queue))
    return {"log": log, "assignments": assignments, "queue": queue, "state": model.state_dict(),
            "grads": [p.grad for p in model.parameters()]}


def test_swav():
    weights = weights_of(swav_model)
    # atol 5e-5: the float32 run's own noise here. Against the same program in float64, PyTorch's float32 last
    # gradient is 2.0e-5 off and ours 3.5e-5 (Sinkhorn's exp(scores / 0.05) magnifies each rounding)
    ours, _ = run_both(swav, weights, rtol=1e-4, atol=5e-5)
    assert [used for _, used in ours["log"]] == [False, False, True, True, True]
    for q in ours["assignments"]:
        np.testing.assert_allclose(q.sum(1), 1, rtol=1e-5)  # each sample's assignment is a distribution
    np.testing.assert_allclose(np.linalg.norm(ours["queue"], axis=-1), 1, rtol=1e-5)
    # the prototypes were normalised before the last step, then moved by it
    assert ours["grads"][-1] is not None
    assert not np.allclose(np.linalg.norm(ours["state"]["prototypes.weight"], axis=1), 1)


# ----------------------------------------------------------------------------------------------
# Margin softmax heads: ArcFace and CosFace (ronghuaiyang/arcface-pytorch), insightface's combined margin
# ----------------------------------------------------------------------------------------------


def embedder(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(6, 16), nn.PReLU(), nn.Linear(16, 8, bias=False), nn.BatchNorm1d(8))


def margin_heads(m):
    torch, nn, F = m.torch, m.nn, m.F
    Parameter = nn.Parameter

    class ArcMarginProduct(nn.Module):
        r"""Implement of large margin arc distance: :
            Args:
                in_features: size of each input sample
                out_features: size of each output sample
                s: norm of input feature
                m: margin
                cos(theta + m)
            """
        def __init__(self, in_features, out_features, s=30.0, m=0.50, easy_margin=False):
            super(ArcMarginProduct, self).__init__()
            self.in_features = in_features
            self.out_features = out_features
            self.s = s
            self.m = m
            self.weight = Parameter(torch.FloatTensor(out_features, in_features))
            nn.init.xavier_uniform_(self.weight)
            self.easy_margin = easy_margin
            self.cos_m = math.cos(m)
            self.sin_m = math.sin(m)
            self.th = math.cos(math.pi - m)
            self.mm = math.sin(math.pi - m) * m

        def forward(self, input, label):
            # --------------------------- cos(theta) & phi(theta) ---------------------------
            cosine = F.linear(F.normalize(input), F.normalize(self.weight))
            sine = torch.sqrt((1.0 - torch.pow(cosine, 2)).clamp(0, 1))
            phi = cosine * self.cos_m - sine * self.sin_m
            if self.easy_margin:
                phi = torch.where(cosine > 0, phi, cosine)
            else:
                phi = torch.where(cosine > self.th, phi, cosine - self.mm)
            # --------------------------- convert label to one-hot ---------------------------
            one_hot = torch.zeros(cosine.size())
            one_hot.scatter_(1, label.view(-1, 1).long(), 1)
            # -------------torch.where(out_i = {x_i if condition_i else y_i) -------------
            output = (one_hot * phi) + ((1.0 - one_hot) * cosine)  # you can use torch.where if your torch.__version__ is 0.4
            output *= self.s
            return output

    class AddMarginProduct(nn.Module):
        r"""Implement of large margin cosine distance: :
        Args:
            in_features: size of each input sample
            out_features: size of each output sample
            s: norm of input feature
            m: margin
            cos(theta) - m
        """

        def __init__(self, in_features, out_features, s=30.0, m=0.40):
            super(AddMarginProduct, self).__init__()
            self.in_features = in_features
            self.out_features = out_features
            self.s = s
            self.m = m
            self.weight = Parameter(torch.FloatTensor(out_features, in_features))
            nn.init.xavier_uniform_(self.weight)

        def forward(self, input, label):
            # --------------------------- cos(theta) & phi(theta) ---------------------------
            cosine = F.linear(F.normalize(input), F.normalize(self.weight))
            phi = cosine - self.m
            # --------------------------- convert label to one-hot ---------------------------
            one_hot = torch.zeros(cosine.size(), device='cpu')
            # one_hot = one_hot.cuda() if cosine.is_cuda else one_hot
            one_hot.scatter_(1, label.view(-1, 1).long(), 1)
            # -------------torch.where(out_i = {x_i if condition_i else y_i) -------------
            output = (one_hot * phi) + ((1.0 - one_hot) * cosine)  # you can use torch.where if your torch.__version__ is 0.4
            output *= self.s
            return output

    class CombinedMarginLoss(nn.Module):
        def __init__(self, s, m1, m2, m3, interclass_filtering_threshold=0):
            super().__init__()
            self.s = s
            self.m1 = m1
            self.m2 = m2
            self.m3 = m3
            self.interclass_filtering_threshold = interclass_filtering_threshold
            # For ArcFace
            self.cos_m = math.cos(self.m2)
            self.sin_m = math.sin(self.m2)
            self.theta = math.cos(math.pi - self.m2)
            self.sinmm = math.sin(math.pi - self.m2) * self.m2
            self.easy_margin = False

        def forward(self, logits, labels):
            index_positive = torch.where(labels != -1)[0]
            if self.interclass_filtering_threshold > 0:
                with torch.no_grad():
                    dirty = logits > self.interclass_filtering_threshold
                    dirty = dirty.float()
                    mask = torch.ones([index_positive.size(0), logits.size(1)], device=logits.device)
                    mask.scatter_(1, labels[index_positive], 0)
                    dirty[index_positive] *= mask
                    tensor_mul = 1 - dirty
                logits = tensor_mul * logits
            target_logit = logits[index_positive, labels[index_positive].view(-1)]
            if self.m1 == 1.0 and self.m3 == 0.0:
                with torch.no_grad():
                    target_logit.arccos_()
                    logits.arccos_()
                    final_target_logit = target_logit + self.m2
                    logits[index_positive, labels[index_positive].view(-1)] = final_target_logit
                    logits.cos_()
                logits = logits * self.s
            elif self.m3 > 0:
                final_target_logit = target_logit - self.m3
                logits[index_positive, labels[index_positive].view(-1)] = final_target_logit
                logits = logits * self.s
            else:
                raise
            return logits

    return ArcMarginProduct, AddMarginProduct, CombinedMarginLoss


def face_model(m, head):
    ArcMarginProduct, AddMarginProduct, _ = margin_heads(m)
    nn = m.nn
    heads = {"arcface": lambda: ArcMarginProduct(8, 5, s=30, m=0.5, easy_margin=False),
             "arcface_easy": lambda: ArcMarginProduct(8, 5, s=30, m=0.5, easy_margin=True),
             "cosface": lambda: AddMarginProduct(8, 5, s=30, m=0.35)}
    return nn.ModuleDict({"backbone": embedder(m), "metric_fc": heads[head]()})


def face_data(m, n=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((5, 6)).astype(np.float32) * 2
    labels = np.arange(n) % 5
    x = centres[labels] + 0.7 * rng.standard_normal((n, 6)).astype(np.float32)
    return m.torch.tensor(x), m.torch.tensor(labels)


def face_training(m, weights, head, steps=4):
    torch, nn = m.torch, m.nn
    model = load(m, face_model(m, head), weights)
    criterion = nn.CrossEntropyLoss()
    optimizer = m.optim.SGD([{'params': model["backbone"].parameters()}, {'params': model["metric_fc"].parameters()}],
                            lr=0.05, weight_decay=5e-4, momentum=0.9)
    log = []
    for step in range(steps):
        data_input, label = face_data(m, seed=step)
        feature = model["backbone"](data_input)
        output = model["metric_fc"](feature, label)
        loss = criterion(output, label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        output = output.data.cpu().numpy()
        output = np.argmax(output, axis=1)
        label = label.data.cpu().numpy()
        acc = np.mean((output == label).astype(int))
        log.append((loss.item(), acc))
    return {"log": log, "grads": [p.grad for p in model.parameters()], "state": model.state_dict()}


@pytest.mark.parametrize("head", ["arcface", "arcface_easy", "cosface"])
def test_margin_softmax_heads(head):
    weights = weights_of(lambda m: face_model(m, head))
    # a scale of 16 on the margins' angles amplifies float32 rounding over the steps: 2e-4 on gradients of ~1
    ours, _ = run_both(face_training, weights, head, rtol=1e-3, atol=5e-4)
    assert all(np.isfinite(g).all() for g in ours["grads"])


def arcface_by_hand(m, s=16.0, margin=0.5):
    """One set of cosines through arcface-pytorch's head (sqrt of 1 - cos^2, the threshold), insightface's
    (acos and cos in place under no_grad, so the gradient is the plain logits'), and CosFace's subtraction
    in place on the graph; with cosines near +-1 where the clamps matter."""
    torch, F = m.torch, m.F
    _, _, CombinedMarginLoss = margin_heads(m)
    rng = np.random.default_rng(1)
    emb = torch.tensor(rng.standard_normal((6, 4)), requires_grad=True)
    weight = torch.tensor(np.concatenate([emb.detach().numpy()[:2], -emb.detach().numpy()[2:3],
                                          rng.standard_normal((2, 4))]), requires_grad=True)
    labels = torch.tensor([0, 1, 2, -1, 3, 4])
    cosine = F.linear(F.normalize(emb), F.normalize(weight)).clamp(-1, 1)
    arc = CombinedMarginLoss(s, 1.0, margin, 0.0)(cosine * 1, labels)
    cos = CombinedMarginLoss(s, 1.0, 0.0, 0.35)(cosine * 1, labels)
    keep = labels != -1
    ce = F.cross_entropy(arc[keep], labels[keep]) + F.cross_entropy(cos[keep], labels[keep])
    grads = torch.autograd.grad(ce, [emb, weight])
    return arc, cos, cosine, grads


def test_insightface_combined_margin_by_hand():
    # acos has an infinite slope at +-1: a last-bit difference in a cosine there moves the angle by 1e-8
    ours, _ = run_both(arcface_by_hand, rtol=1e-7, atol=1e-7)
    arc, cos, cosine, grads = ours
    rows, labels = np.array([0, 1, 2, 4, 5]), np.array([0, 1, 2, 3, 4])
    expected = cosine.copy()
    expected[rows, labels] = np.cos(np.arccos(cosine[rows, labels]) + 0.5)
    np.testing.assert_allclose(arc, 16 * expected, rtol=1e-10, atol=1e-10)
    assert cosine[0, 0] == pytest.approx(1) and cosine[2, 2] == pytest.approx(-1)
    expected = cosine.copy()
    expected[rows, labels] -= 0.35
    np.testing.assert_allclose(cos, 16 * expected, rtol=1e-12, atol=1e-12)
    assert all(np.isfinite(g).all() for g in grads)


# ----------------------------------------------------------------------------------------------
# Re-ID losses (michuanhaohao/reid-strong-baseline): batch-hard triplet by masks and views, centre loss,
# label-smoothed cross-entropy
# ----------------------------------------------------------------------------------------------


def reid_model(m):
    nn = m.nn

    class Baseline(nn.Module):
        def __init__(self, num_classes=4):
            super().__init__()
            self.base = embedder(m)
            self.bottleneck = nn.BatchNorm1d(8)
            self.bottleneck.bias.requires_grad_(False)  # no shift
            self.classifier = nn.Linear(8, num_classes, bias=False)

        def forward(self, x):
            global_feat = self.base(x)
            feat = self.bottleneck(global_feat)  # normalize for angular softmax
            if self.training:
                cls_score = self.classifier(feat)
                return cls_score, global_feat  # global feature for triplet loss
            return feat

    return Baseline()


def reid(m, weights, steps=4, margin=0.3):
    torch, nn = m.torch, m.nn

    def normalize(x, axis=-1):
        x = 1. * x / (torch.norm(x, 2, axis, keepdim=True).expand_as(x) + 1e-12)
        return x

    def euclidean_dist(x, y):
        m, n = x.size(0), y.size(0)
        xx = torch.pow(x, 2).sum(1, keepdim=True).expand(m, n)
        yy = torch.pow(y, 2).sum(1, keepdim=True).expand(n, m).t()
        dist = xx + yy
        dist.addmm_(x, y.t(), beta=1, alpha=-2)
        dist = dist.clamp(min=1e-12).sqrt()  # for numerical stability
        return dist

    def hard_example_mining(dist_mat, labels, return_inds=False):
        assert len(dist_mat.size()) == 2
        assert dist_mat.size(0) == dist_mat.size(1)
        N = dist_mat.size(0)
        # shape [N, N]
        is_pos = labels.expand(N, N).eq(labels.expand(N, N).t())
        is_neg = labels.expand(N, N).ne(labels.expand(N, N).t())
        # `dist_ap` means distance(anchor, positive)
        # both `dist_ap` and `relative_p_inds` with shape [N, 1]
        dist_ap, relative_p_inds = torch.max(
            dist_mat[is_pos].contiguous().view(N, -1), 1, keepdim=True)
        # `dist_an` means distance(anchor, negative)
        # both `dist_an` and `relative_n_inds` with shape [N, 1]
        dist_an, relative_n_inds = torch.min(
            dist_mat[is_neg].contiguous().view(N, -1), 1, keepdim=True)
        # shape [N]
        dist_ap = dist_ap.squeeze(1)
        dist_an = dist_an.squeeze(1)
        if return_inds:
            # shape [N, N]
            ind = (labels.new().resize_as_(labels)
                   .copy_(torch.arange(0, N).long())
                   .unsqueeze(0).expand(N, N))
            # shape [N, 1]
            p_inds = torch.gather(
                ind[is_pos].contiguous().view(N, -1), 1, relative_p_inds.data)
            n_inds = torch.gather(
                ind[is_neg].contiguous().view(N, -1), 1, relative_n_inds.data)
            # shape [N]
            p_inds = p_inds.squeeze(1)
            n_inds = n_inds.squeeze(1)
            return dist_ap, dist_an, p_inds, n_inds
        return dist_ap, dist_an

    class TripletLoss(object):
        """Modified from Tong Xiao's open-reid (https://github.com/Cysu/open-reid).
        Related Triplet Loss theory can be found in paper 'In Defense of the Triplet
        Loss for Person Re-Identification'."""

        def __init__(self, margin=None):
            self.margin = margin
            if margin is not None:
                self.ranking_loss = nn.MarginRankingLoss(margin=margin)
            else:
                self.ranking_loss = nn.SoftMarginLoss()

        def __call__(self, global_feat, labels, normalize_feature=False):
            if normalize_feature:
                global_feat = normalize(global_feat, axis=-1)
            dist_mat = euclidean_dist(global_feat, global_feat)
            dist_ap, dist_an = hard_example_mining(dist_mat, labels)
            y = dist_an.new().resize_as_(dist_an).fill_(1)
            if self.margin is not None:
                loss = self.ranking_loss(dist_an, dist_ap, y)
            else:
                loss = self.ranking_loss(dist_an - dist_ap, y)
            return loss, dist_ap, dist_an

    class CrossEntropyLabelSmooth(nn.Module):
        def __init__(self, num_classes, epsilon=0.1, use_gpu=True):
            super(CrossEntropyLabelSmooth, self).__init__()
            self.num_classes = num_classes
            self.epsilon = epsilon
            self.use_gpu = use_gpu
            self.logsoftmax = nn.LogSoftmax(dim=1)

        def forward(self, inputs, targets):
            log_probs = self.logsoftmax(inputs)
            targets = torch.zeros(log_probs.size()).scatter_(1, targets.unsqueeze(1).data.cpu(), 1)
            if self.use_gpu: targets = targets.cuda()
            targets = (1 - self.epsilon) * targets + self.epsilon / self.num_classes
            loss = (- targets * log_probs).mean(0).sum()
            return loss

    class CenterLoss(nn.Module):
        def __init__(self, num_classes=751, feat_dim=2048, use_gpu=True):
            super(CenterLoss, self).__init__()
            self.num_classes = num_classes
            self.feat_dim = feat_dim
            self.use_gpu = use_gpu
            if self.use_gpu:
                self.centers = nn.Parameter(torch.randn(self.num_classes, self.feat_dim).cuda())
            else:
                self.centers = nn.Parameter(torch.randn(self.num_classes, self.feat_dim))

        def forward(self, x, labels):
            assert x.size(0) == labels.size(0), "features.size(0) is not equal to labels.size(0)"
            batch_size = x.size(0)
            distmat = torch.pow(x, 2).sum(dim=1, keepdim=True).expand(batch_size, self.num_classes) + \
                      torch.pow(self.centers, 2).sum(dim=1, keepdim=True).expand(self.num_classes, batch_size).t()
            distmat.addmm_(x, self.centers.t(), beta=1, alpha=-2)
            classes = torch.arange(self.num_classes).long()
            if self.use_gpu: classes = classes.cuda()
            labels = labels.unsqueeze(1).expand(batch_size, self.num_classes)
            mask = labels.eq(classes.expand(batch_size, self.num_classes))
            dist = distmat * mask.float()
            loss = dist.clamp(min=1e-12, max=1e+12).sum() / batch_size
            return loss

    model = load(m, reid_model(m), weights)
    triplet = TripletLoss(margin)
    soft_triplet = TripletLoss()
    xent = CrossEntropyLabelSmooth(num_classes=4, use_gpu=False)
    center_criterion = CenterLoss(num_classes=4, feat_dim=8, use_gpu=False)
    with torch.no_grad():
        center_criterion.centers.copy_(torch.tensor(np.random.default_rng(3).standard_normal((4, 8)).astype(np.float32)))
    optimizer = m.optim.Adam(model.parameters(), lr=3.5e-4, weight_decay=5e-4)
    optimizer_center = m.optim.SGD(center_criterion.parameters(), lr=0.5)
    center_loss_weight = 0.0005
    rng = np.random.default_rng(4)
    log = []
    for step in range(steps):
        # P x K sampling: 4 identities, 3 images each
        target = torch.tensor(np.repeat(np.arange(4), 3))
        protos = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
        img = torch.tensor(protos[target.numpy()] + 0.8 * rng.standard_normal((12, 6)).astype(np.float32))
        optimizer.zero_grad()
        optimizer_center.zero_grad()
        score, feat = model(img)
        tri, dist_ap, dist_an = triplet(feat, target)
        soft, _, _ = soft_triplet(feat, target, normalize_feature=True)
        loss = xent(score, target) + tri + soft + center_loss_weight * center_criterion(feat, target)
        loss.backward()
        optimizer.step()
        for param in center_criterion.parameters():
            param.grad.data *= (1. / center_loss_weight)
        optimizer_center.step()
        acc = (score.max(1)[1] == target).float().mean()
        log.append((loss.item(), tri.item(), soft.item(), acc.item()))
    dist_mat = euclidean_dist(feat.detach(), feat.detach())
    mined = hard_example_mining(dist_mat, target, return_inds=True)
    model.eval()
    with torch.no_grad():
        eval_feat = model(img)
    # the diagonal, |x|^2 + |x|^2 - 2 x.x clamped at 1e-12 then rooted, is float32 rounding (either library
    # may leave 1e-6 there, and its root 1e-3)
    dist_mat = dist_mat.masked_fill(torch.eye(12, dtype=torch.bool), 0)
    return {"log": log, "grads": [p.grad for p in model.parameters()], "centers": center_criterion.centers,
            "center_grad": center_criterion.centers.grad, "mined": mined, "dist": dist_mat, "eval_feat": eval_feat}


def test_reid_triplet_centre_and_smoothed_losses():
    weights = weights_of(reid_model)
    ours, _ = run_both(reid, weights, rtol=1e-4, atol=1e-5)
    dist_ap, dist_an, p_inds, n_inds = ours["mined"]
    labels = np.repeat(np.arange(4), 3)
    dist = ours["dist"]
    for i in range(12):
        assert labels[p_inds[i]] == labels[i] and labels[n_inds[i]] != labels[i]
        assert dist_ap[i] == pytest.approx(dist[i][labels == labels[i]].max())
        assert dist_an[i] == pytest.approx(dist[i][labels != labels[i]].min())
    assert ours["grads"][-2] is None  # the bottleneck's frozen shift
    assert ours["center_grad"] is not None


# ----------------------------------------------------------------------------------------------
# SupCon by log-sum-exp over -inf-masked logits, and the siamese losses of nn
# ----------------------------------------------------------------------------------------------


def supcon_logsumexp(m, weights, steps=3, temperature=0.1):
    torch, F = m.torch, m.F
    model = load(m, embedder(m), weights)
    optimizer = m.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    log = []
    for step in range(steps):
        x, labels = face_data(m, n=10, seed=40 + step)
        views = torch.cat([x, x + 0.1 * torch.sin(3 * x)])
        labels = labels.repeat(2)
        z = F.normalize(model(views), dim=1)
        logits = z @ z.T / temperature
        self_mask = torch.eye(len(labels), dtype=torch.bool)
        logits_mask = torch.scatter(torch.ones_like(logits), 1, torch.arange(len(labels)).view(-1, 1), 0)
        positives = labels.unsqueeze(0).eq(labels.unsqueeze(1)) & ~self_mask
        # the denominator leaves the anchor out by a -inf logit: its exp is 0, and so is its gradient
        log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, float('-inf')), dim=1, keepdim=True)
        mean_log_prob_pos = (positives * log_prob).sum(1) / positives.sum(1)
        loss = -mean_log_prob_pos.mean()
        # the same by Khosla's logits_mask, multiplying the exponentials
        exp_logits = torch.exp(logits) * logits_mask
        by_mask = -((positives * (logits - torch.log(exp_logits.sum(1, keepdim=True)))).sum(1) /
                    positives.sum(1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append((loss.item(), by_mask.item()))
    return {"log": log, "grads": [p.grad for p in model.parameters()], "state": model.state_dict()}


def test_supcon_by_logsumexp_with_infinite_mask():
    weights = weights_of(embedder)
    ours, _ = run_both(supcon_logsumexp, weights, rtol=1e-4, atol=1e-5)
    for loss, by_mask in ours["log"]:
        assert loss == pytest.approx(by_mask, rel=1e-5)
    assert all(np.isfinite(g).all() for g in ours["grads"])


def siamese(m, weights, steps=4):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, embedder(m), weights)
    cosine_embedding = nn.CosineEmbeddingLoss(margin=0.2)
    ranking = nn.MarginRankingLoss(margin=0.5, reduction='sum')
    by_pairwise = nn.TripletMarginWithDistanceLoss(distance_function=nn.PairwiseDistance(), margin=1.0)
    by_cosine = nn.TripletMarginWithDistanceLoss(
        distance_function=lambda x, y: 1.0 - F.cosine_similarity(x, y), margin=0.4, swap=True, reduction='none')
    triplet_margin = nn.TripletMarginLoss(margin=1.0, p=2, swap=True)

    def contrastive_loss(output1, output2, label, margin=2.0):
        euclidean_distance = F.pairwise_distance(output1, output2, keepdim=True)
        return torch.mean((1 - label) * torch.pow(euclidean_distance, 2) +
                          label * torch.pow(torch.clamp(margin - euclidean_distance, min=0.0), 2))

    optimizer = m.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.99, eps=1e-8, weight_decay=5e-4, momentum=0.9)
    log = []
    for step in range(steps):
        x, labels = face_data(m, n=10, seed=50 + step)
        anchor, positive = x, x + 0.3 * torch.cos(x)
        negative = x.roll(1, 0)
        a, p, n = model(torch.cat([anchor, positive, negative])).chunk(3)
        same = (labels == labels.roll(1, 0)).float()
        target = torch.where(torch.rand(10) >= 0, 1, -1) * 0 + (1 - 2 * same).long() * -1  # 1 similar, -1 not
        losses = {
            "cosine_embedding": cosine_embedding(a, n, target) + cosine_embedding(a, p, torch.ones(10)),
            "ranking": ranking(F.pairwise_distance(a, n), F.pairwise_distance(a, p), torch.ones(10)),
            "pairwise_triplet": by_pairwise(a, p, n),
            "cosine_triplet": by_cosine(a, p, n),
            "triplet": triplet_margin(a, p, n),
            "contrastive": contrastive_loss(a, n, 1 - same.unsqueeze(1)),
        }
        loss = sum(v.mean() for v in losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append({k: v.detach() for k, v in losses.items()})
    return {"log": log, "grads": [p.grad for p in model.parameters()], "state": model.state_dict()}


def test_siamese_losses():
    weights = weights_of(embedder)
    ours, _ = run_both(siamese, weights, rtol=1e-4, atol=1e-5)
    assert ours["log"][0]["cosine_triplet"].shape == (10,)


# ----------------------------------------------------------------------------------------------
# SimSiam (facebookresearch/simsiam: a frozen bias, a predictor group with a fixed lr) and MoCo v3's loss
# ----------------------------------------------------------------------------------------------


def simsiam_model(m, dim=12, pred_dim=6):
    nn = m.nn

    class SimSiam(nn.Module):
        """
        Build a SimSiam model.
        """
        def __init__(self, base_encoder, dim=2048, pred_dim=512):
            super(SimSiam, self).__init__()
            # create the encoder
            # num_classes is the output fc dimension, zero-initialize last BNs
            self.encoder = base_encoder(num_classes=dim)
            # build a 3-layer projector
            prev_dim = self.encoder.fc.weight.shape[1]
            self.encoder.fc = nn.Sequential(nn.Linear(prev_dim, prev_dim, bias=False),
                                            nn.BatchNorm1d(prev_dim),
                                            nn.ReLU(inplace=True),  # first layer
                                            nn.Linear(prev_dim, prev_dim, bias=False),
                                            nn.BatchNorm1d(prev_dim),
                                            nn.ReLU(inplace=True),  # second layer
                                            self.encoder.fc,
                                            nn.BatchNorm1d(dim, affine=False))  # output layer
            self.encoder.fc[6].bias.requires_grad = False  # hack: not use bias as it is followed by BN
            # build a 2-layer predictor
            self.predictor = nn.Sequential(nn.Linear(dim, pred_dim, bias=False),
                                           nn.BatchNorm1d(pred_dim),
                                           nn.ReLU(inplace=True),  # hidden layer
                                           nn.Linear(pred_dim, dim))  # output layer

        def forward(self, x1, x2):
            # compute features for one view
            z1 = self.encoder(x1)  # NxC
            z2 = self.encoder(x2)  # NxC
            p1 = self.predictor(z1)  # NxC
            p2 = self.predictor(z2)  # NxC
            return p1, p2, z1.detach(), z2.detach()

    return SimSiam(lambda num_classes: backbone(m, num_classes), dim, pred_dim)


def simsiam(m, weights, epochs=3, lr=0.05, batch_size=8):
    nn = m.nn
    model = load(m, simsiam_model(m), weights)
    init_lr = lr * batch_size / 256
    criterion = nn.CosineSimilarity(dim=1)
    optim_params = [{'params': model.encoder.parameters(), 'fix_lr': False},
                    {'params': model.predictor.parameters(), 'fix_lr': True}]
    optimizer = m.optim.SGD(optim_params, init_lr, momentum=0.9, weight_decay=1e-4)

    def adjust_learning_rate(optimizer, init_lr, epoch):
        """Decay the learning rate based on schedule"""
        cur_lr = init_lr * 0.5 * (1. + math.cos(math.pi * epoch / epochs))
        for param_group in optimizer.param_groups:
            if 'fix_lr' in param_group and param_group['fix_lr']:
                param_group['lr'] = init_lr
            else:
                param_group['lr'] = cur_lr

    log = []
    for epoch in range(epochs):
        adjust_learning_rate(optimizer, init_lr, epoch)
        x = images(m, seed=100 + epoch)
        p1, p2, z1, z2 = model(x1=x, x2=x.flip(3) + 0.1 * x)
        loss = -(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append((loss.item(), [(g['lr'], g['fix_lr']) for g in optimizer.param_groups]))
    return {"log": log, "grads": [p.grad for p in model.parameters()], "state": model.state_dict(),
            "state_dict_groups": [(g['fix_lr'], g['lr']) for g in optimizer.state_dict()['param_groups']]}


def test_simsiam():
    weights = weights_of(simsiam_model)
    ours, _ = run_both(simsiam, weights, rtol=1e-4, atol=1e-5)
    assert all(-1 <= loss <= 1 for loss, _ in ours["log"])
    assert ours["log"][-1][1][1] == (0.05 * 8 / 256, True)
    names = list(weights)
    assert ours["state"]["encoder.fc.6.bias"].tolist() == weights["encoder.fc.6.bias"].tolist()


def moco_v3_loss(m, weights, steps=3, T=1.0, moco_m=0.99, epochs=3):
    torch, nn = m.torch, m.nn
    base = load(m, moco_model(m), weights)
    base_encoder, momentum_encoder = base.encoder_q, base.encoder_k

    def contrastive_loss(q, k):
        # normalize
        q = nn.functional.normalize(q, dim=1)
        k = nn.functional.normalize(k, dim=1)
        # gather all targets
        # Einstein sum is more intuitive
        logits = torch.einsum('nc,mc->nm', [q, k]) / T
        N = logits.shape[0]  # batch size per GPU
        labels = (torch.arange(N, dtype=torch.long) + N * 0)
        return nn.CrossEntropyLoss()(logits, labels) * (2 * T)

    def adjust_moco_momentum(epoch):
        """Adjust moco momentum based on current epoch"""
        m = 1. - 0.5 * (1. + math.cos(math.pi * epoch / epochs)) * (1. - moco_m)
        return m

    optimizer = m.optim.AdamW(base_encoder.parameters(), lr=1e-3, weight_decay=0.1)
    log = []
    for epoch in range(epochs):
        x = images(m, seed=110 + epoch)
        x1, x2 = x, x.transpose(2, 3)
        moco_momentum = adjust_moco_momentum(epoch)
        q1 = base_encoder(x1)
        q2 = base_encoder(x2)
        with torch.no_grad():  # no gradient
            for param_b, param_m in zip(base_encoder.parameters(), momentum_encoder.parameters()):
                param_m.data = param_m.data * moco_momentum + param_b.data * (1. - moco_momentum)
            k1 = momentum_encoder(x1)
            k2 = momentum_encoder(x2)
        loss = contrastive_loss(q1, k2) + contrastive_loss(q2, k1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append((loss.item(), moco_momentum))
    return {"log": log, "grads": [p.grad for p in base_encoder.parameters()],
            "momentum": momentum_encoder.state_dict()}


def test_moco_v3_loss():
    weights = weights_of(moco_model)
    run_both(moco_v3_loss, weights, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# DINO's teacher by copy.deepcopy of a weight-normed student, the loss by F.cross_entropy on soft targets
# ----------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_weight_norm_module_refuses_deepcopy():
    """Why DINO builds its teacher as a second model: the old weight_norm keeps its weight as a computed
    tensor, which neither library deep-copies."""
    def program(m):
        student = dino_student(m, parametrized=False)
        with pytest.raises(RuntimeError, match="deepcopy protocol") as error:
            copy.deepcopy(student)
        return "weight_norm" in str(error.value)

    assert run_both(program)[0] is True


def test_dino_teacher_by_deepcopy():
    parametrized = True
    def program(m, weights, steps=3):
        torch, F = m.torch, m.F
        student = load(m, dino_student(m, parametrized), weights)
        teacher = copy.deepcopy(student)
        for p in teacher.parameters():
            p.requires_grad = False
        optimizer = m.optim.SGD(student.parameters(), lr=0.5, momentum=0.9)
        log = []
        for step in range(steps):
            x = images(m, n=4, seed=120 + step)
            local = images(m, n=4, side=6, seed=130 + step)
            with torch.no_grad():
                targets = F.softmax(teacher([x, x.flip(3)]) / 0.04, dim=-1).chunk(2)
            outputs = (student([x, x.flip(3), local]) / 0.1).chunk(3)
            loss = sum(F.cross_entropy(outputs[v], targets[iq]) for iq in range(2) for v in range(3) if v != iq) / 4
            smoothed = F.cross_entropy(outputs[2], targets[0].argmax(-1), label_smoothing=0.1)
            optimizer.zero_grad()
            (loss + smoothed).backward()
            optimizer.step()
            with torch.no_grad():
                for param_q, param_k in zip(student.parameters(), teacher.parameters()):
                    param_k.data.mul_(0.9).add_((1 - 0.9) * param_q.detach().data)
            log.append((loss.item(), smoothed.item()))
        weight = teacher.head.last_layer.weight
        return {"log": log, "teacher": teacher.state_dict(), "student": student.state_dict(),
                "teacher_weight": weight, "teacher_weight_is_student_weight": weight is student.head.last_layer.weight}

    weights = weights_of(lambda m: dino_student(m, parametrized))
    ours, _ = run_both(program, weights, rtol=1e-4, atol=5e-4)  # (float32 heads reach ~1e3: 1e-4 of it)
    assert not ours["teacher_weight_is_student_weight"]
    # the teacher's weight is recomputed from its own magnitude and direction, not the student's
    v = ours["teacher"]["head.last_layer." + ("parametrizations.weight.original1" if parametrized else "weight_v")]
    np.testing.assert_allclose(ours["teacher_weight"], v / np.linalg.norm(v, axis=1, keepdims=True), rtol=1e-5,
                               atol=1e-6)


# ----------------------------------------------------------------------------------------------
# MSN's loss (facebookresearch/msn: sharpening, log(p ** -t), the mean-entropy maximisation), and
# prototypical networks by cdist (a support repeated in the query: a distance of exactly zero)
# ----------------------------------------------------------------------------------------------


def msn(m, weights, steps=3, tau=0.1, T=0.25, num_views=2):
    torch = m.torch
    softmax = torch.nn.Softmax(dim=1) if hasattr(torch, "nn") else m.nn.Softmax(dim=1)
    model = load(m, embedder(m), weights)
    prototypes = torch.nn.Parameter(torch.tensor(np.random.default_rng(2).standard_normal((5, 8)).astype(np.float32))) \
        if hasattr(torch, "nn") else m.nn.Parameter(
            torch.tensor(np.random.default_rng(2).standard_normal((5, 8)).astype(np.float32)))
    proto_labels = m.F.one_hot(torch.arange(5), 5).float()

    def sharpen(p, T):
        sharp_p = p**(1./T)
        sharp_p /= torch.sum(sharp_p, dim=1, keepdim=True)
        return sharp_p

    def snn(query, supports, support_labels, temp=tau):
        """ Soft Nearest Neighbours similarity classifier """
        query = m.F.normalize(query)
        supports = m.F.normalize(supports)
        return softmax(query @ supports.T / temp) @ support_labels

    def loss_fn(anchor_views, target_views, prototypes, proto_labels, T=0.25, me_max=True, use_entropy=True):
        # Step 1: compute anchor predictions
        probs = snn(anchor_views, prototypes, proto_labels)
        # Step 2: compute targets for anchor predictions
        with torch.no_grad():
            targets = sharpen(snn(target_views, prototypes, proto_labels), T=T)
            targets = torch.cat([targets for _ in range(num_views)], dim=0)
        # Step 3: compute cross-entropy loss H(targets, queries)
        loss = torch.mean(torch.sum(torch.log(probs**(-targets)), dim=1))
        # Step 4: compute me-max regularizer
        rloss = 0.
        if me_max:
            avg_probs = torch.mean(probs, dim=0)
            rloss = - torch.sum(torch.log(avg_probs**(-avg_probs))) + math.log(float(len(avg_probs)))
        sloss = 0.
        if use_entropy:
            sloss = torch.mean(torch.sum(torch.log(probs**(-probs)), dim=1))
        return loss, rloss, sloss

    optimizer = m.optim.AdamW([{'params': model.parameters()}, {'params': [prototypes], 'lr': 1e-2}], lr=1e-3)
    log = []
    for step in range(steps):
        x, _ = face_data(m, n=6, seed=140 + step)
        anchors = model(torch.cat([x + 0.2 * torch.tanh(x), x - 0.2 * torch.tanh(x)]))
        with torch.no_grad():
            target = model(x)
        ploss, me_max, ent = loss_fn(anchors, target, prototypes, proto_labels)
        loss = ploss + me_max + 0.1 * ent
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append((ploss.item(), me_max.item(), ent.item()))
    return {"log": log, "grads": [p.grad for p in model.parameters()] + [prototypes.grad],
            "prototypes": prototypes}


def test_msn_loss():
    weights = weights_of(embedder)
    ours, _ = run_both(msn, weights, rtol=1e-4, atol=1e-5)
    for ploss, me_max, ent in ours["log"]:
        assert ploss > 0 and ent > 0 and -1e-6 <= me_max <= math.log(5)


def protonet(m, weights, steps=3, n_way=3, n_shot=2, n_query=2):
    torch, F = m.torch, m.F
    model = load(m, embedder(m), weights)
    optimizer = m.optim.Adam(model.parameters(), lr=1e-3)
    log = []
    for step in range(steps):
        x, _ = face_data(m, n=15, seed=150 + step)
        support = x[:n_way * n_shot]  # class c's shots are rows c, c + n_way, ...
        query = torch.cat([x[n_way * n_shot:n_way * n_shot + n_way * n_query], support[:n_way]])
        target = torch.arange(n_way).repeat(n_query + 1)
        z = model(torch.cat([support, query]))
        z_support, z_query = z[:n_way * n_shot], z[n_way * n_shot:]
        z_proto = z_support.view(n_shot, n_way, -1).mean(0)
        dists = torch.cdist(z_query, z_proto)
        log_p_y = F.log_softmax(-dists, dim=1)
        loss = F.nll_loss(log_p_y, target)
        # the nearest support of each query, its distance zero for the repeated ones
        nearest, idx = torch.cdist(z_query, z_support).min(dim=1)
        acc = (log_p_y.argmax(1) == target).float().mean()
        optimizer.zero_grad()
        (loss + nearest.mean()).backward()
        optimizer.step()
        log.append((loss.item(), acc.item(), nearest.detach(), idx))
    return {"log": log, "grads": [p.grad for p in model.parameters()]}


def test_prototypical_network_by_cdist():
    weights = weights_of(embedder)
    ours, _ = run_both(protonet, weights, rtol=1e-4, atol=1e-5)
    for *_, nearest, idx in ours["log"]:
        np.testing.assert_array_equal(nearest[-3:], 0)
        assert idx[-3:].tolist() == [0, 1, 2]
    assert all(np.isfinite(g).all() for g in ours["grads"])


# ----------------------------------------------------------------------------------------------
# Multi-similarity loss (MalongTech/research-ms-loss) and Proxy-Anchor (tjddus9597/Proxy-Anchor-CVPR2020)
# ----------------------------------------------------------------------------------------------


def ms_and_proxy_anchor(m, weights, steps=3):
    torch, nn, F = m.torch, m.nn, m.F

    class MultiSimilarityLoss(nn.Module):
        def __init__(self):
            super(MultiSimilarityLoss, self).__init__()
            self.thresh = 0.5
            self.margin = 0.1
            self.scale_pos = 2.0
            self.scale_neg = 40.0

        def forward(self, feats, labels):
            assert feats.size(0) == labels.size(0), \
                f"feats.size(0): {feats.size(0)} is not equal to labels.size(0): {labels.size(0)}"
            batch_size = feats.size(0)
            sim_mat = torch.matmul(feats, torch.t(feats))
            epsilon = 1e-5
            loss = list()
            for i in range(batch_size):
                pos_pair_ = sim_mat[i][labels == labels[i]]
                pos_pair_ = pos_pair_[pos_pair_ < 1 - epsilon]
                neg_pair_ = sim_mat[i][labels != labels[i]]
                neg_pair = neg_pair_[neg_pair_ + self.margin > min(pos_pair_)]
                pos_pair = pos_pair_[pos_pair_ - self.margin < max(neg_pair_)]
                if len(neg_pair) < 1 or len(pos_pair) < 1:
                    continue
                # weighting step
                pos_loss = 1.0 / self.scale_pos * torch.log(
                    1 + torch.sum(torch.exp(-self.scale_pos * (pos_pair - self.thresh))))
                neg_loss = 1.0 / self.scale_neg * torch.log(
                    1 + torch.sum(torch.exp(self.scale_neg * (neg_pair - self.thresh))))
                loss.append(pos_loss + neg_loss)
            if len(loss) == 0:
                return torch.zeros([], requires_grad=True)
            loss = sum(loss) / batch_size
            return loss

    def binarize(T, nb_classes):
        T = T.cpu().numpy()
        T = np.eye(nb_classes)[T]  # sklearn.preprocessing.label_binarize
        T = torch.DoubleTensor(T)
        return T

    def l2_norm(input):
        input_size = input.size()
        buffer = torch.pow(input, 2)
        normp = torch.sum(buffer, 1).add_(1e-12)
        norm = torch.sqrt(normp)
        _output = torch.div(input, norm.view(-1, 1).expand_as(input))
        output = _output.view(input_size)
        return output

    class Proxy_Anchor(nn.Module):
        def __init__(self, nb_classes, sz_embed, mrg=0.1, alpha=32):
            nn.Module.__init__(self)
            # Proxy Anchor Initialization
            self.proxies = nn.Parameter(torch.randn(nb_classes, sz_embed))
            nn.init.kaiming_normal_(self.proxies, mode='fan_out')
            self.nb_classes = nb_classes
            self.sz_embed = sz_embed
            self.mrg = mrg
            self.alpha = alpha

        def forward(self, X, T):
            P = self.proxies
            cos = F.linear(l2_norm(X), l2_norm(P))  # Calcluate cosine similarity
            P_one_hot = binarize(T=T, nb_classes=self.nb_classes)
            N_one_hot = 1 - P_one_hot
            pos_exp = torch.exp(-self.alpha * (cos - self.mrg))
            neg_exp = torch.exp(self.alpha * (cos + self.mrg))
            with_pos_proxies = torch.nonzero(P_one_hot.sum(dim=0) != 0).squeeze(dim=1)  # The set of positive proxies of data in the batch
            num_valid_proxies = len(with_pos_proxies)  # The number of positive proxies
            P_sim_sum = torch.where(P_one_hot == 1, pos_exp, torch.zeros_like(pos_exp)).sum(dim=0)
            N_sim_sum = torch.where(N_one_hot == 1, neg_exp, torch.zeros_like(neg_exp)).sum(dim=0)
            pos_term = torch.log(1 + P_sim_sum).sum() / num_valid_proxies
            neg_term = torch.log(1 + N_sim_sum).sum() / self.nb_classes
            loss = pos_term + neg_term
            return loss

    # in float64: exp(40 s) and exp(32 cos), with the proxies' lr of 0.1, blow float32 rounding up to 1e-3 in
    # three steps
    model = load(m, embedder(m), weights).double()
    ms = MultiSimilarityLoss()
    criterion = Proxy_Anchor(nb_classes=6, sz_embed=8).double()
    with torch.no_grad():
        criterion.proxies.copy_(torch.tensor(np.random.default_rng(6).standard_normal((6, 8))))
    param_groups = [{'params': model.parameters(), 'lr': 1e-3},
                    {'params': criterion.parameters(), 'lr': float(1e-3) * 100}]
    opt = m.optim.AdamW(param_groups, lr=float(1e-3), weight_decay=1e-4)
    log = []
    for step in range(steps):
        x, y = face_data(m, n=12, seed=160 + step)
        x = x.double()
        feats = F.normalize(model(x))
        ms_loss = ms(feats, y)
        pa_loss = criterion(model(x), y)  # classes 0..4 only: proxy 5 has no positives
        loss = ms_loss + pa_loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 10) if hasattr(torch, "nn") else \
            m.nn.utils.clip_grad_value_(model.parameters(), 10)
        torch.nn.utils.clip_grad_value_(criterion.parameters(), 10) if hasattr(torch, "nn") else \
            m.nn.utils.clip_grad_value_(criterion.parameters(), 10)
        opt.step()
        log.append((ms_loss.item(), pa_loss.item()))
    # every negative far below every positive: no pair is mined
    easy = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0], [-1.0, -1.0]], dtype=torch.float64)
    empty = ms(F.normalize(easy), torch.tensor([0, 0, 1, 1]))
    return {"log": log, "grads": [p.grad for p in model.parameters()], "proxies": criterion.proxies,
            "proxy_grad": criterion.proxies.grad, "empty": empty, "empty_requires_grad": empty.requires_grad}


def test_multi_similarity_and_proxy_anchor():
    weights = weights_of(embedder)
    ours, _ = run_both(ms_and_proxy_anchor, weights, rtol=1e-9, atol=1e-9)  # (float64 gradients of size ~10)
    assert all(ms > 0 and pa > 0 for ms, pa in ours["log"])
    assert ours["empty"] == 0 and ours["empty_requires_grad"]
    assert np.abs(ours["proxy_grad"][5]).max() > 0  # the proxy without positives is pushed by the negatives


# ----------------------------------------------------------------------------------------------
# MAE (facebookresearch/mae: patchify by einsum, random masking by argsort and gather, mask tokens
# restored by gather, the normalised-pixel loss on the masked patches only; timm's blocks stand as
# nn.TransformerEncoderLayer)
# ----------------------------------------------------------------------------------------------


def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
        omega = np.arange(embed_dim // 2, dtype=np.float64)
        omega /= embed_dim / 2.
        omega = 1. / 10000**omega  # (D/2,)
        pos = pos.reshape(-1)  # (M,)
        out = np.einsum('m,d->md', pos, omega)  # (M, D/2), outer product
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, D)

    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0).reshape([2, 1, grid_size, grid_size])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])  # (H*W, D/2)
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])  # (H*W, D/2)
    pos_embed = np.concatenate([emb_h, emb_w], axis=1)
    if cls_token:
        pos_embed = np.concatenate([np.zeros([1, embed_dim]), pos_embed], axis=0)
    return pos_embed


def mae_model(m, img_size=8, patch_size=2, embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8,
              decoder_depth=1, decoder_num_heads=2, norm_pix_loss=True):
    torch, nn = m.torch, m.nn

    class PatchEmbed(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_size = (patch_size, patch_size)
            self.num_patches = (img_size // patch_size) ** 2
            self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

        def forward(self, x):
            return self.proj(x).flatten(2).transpose(1, 2)  # BCHW -> BNC

    def Block(dim, heads):
        return nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, activation="gelu",
                                          batch_first=True, norm_first=True)

    class MaskedAutoencoderViT(nn.Module):
        """ Masked Autoencoder with VisionTransformer backbone
        """
        def __init__(self):
            super().__init__()
            # MAE encoder specifics
            self.patch_embed = PatchEmbed()
            num_patches = self.patch_embed.num_patches
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)  # fixed sin-cos embedding
            self.blocks = nn.ModuleList([Block(embed_dim, num_heads) for i in range(depth)])
            self.norm = nn.LayerNorm(embed_dim)
            # MAE decoder specifics
            self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
            self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim), requires_grad=False)  # fixed sin-cos embedding
            self.decoder_blocks = nn.ModuleList([Block(decoder_embed_dim, decoder_num_heads) for i in range(decoder_depth)])
            self.decoder_norm = nn.LayerNorm(decoder_embed_dim)
            self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * 3, bias=True)  # decoder to patch
            self.norm_pix_loss = norm_pix_loss
            self.initialize_weights()

        def initialize_weights(self):
            # initialization
            # initialize (and freeze) pos_embed by sin-cos embedding
            pos_embed = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], int(self.patch_embed.num_patches**.5), cls_token=True)
            self.pos_embed.data.copy_(torch.from_numpy(pos_embed).float().unsqueeze(0))
            decoder_pos_embed = get_2d_sincos_pos_embed(self.decoder_pos_embed.shape[-1], int(self.patch_embed.num_patches**.5), cls_token=True)
            self.decoder_pos_embed.data.copy_(torch.from_numpy(decoder_pos_embed).float().unsqueeze(0))
            # initialize patch_embed like nn.Linear (instead of nn.Conv2d)
            w = self.patch_embed.proj.weight.data
            torch.nn.init.xavier_uniform_(w.view([w.shape[0], -1])) if hasattr(torch, "nn") else \
                nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
            # timm's trunc_normal_(std=.02) is effectively normal_(std=.02) as cutoff is too big (2.)
            nn.init.normal_(self.cls_token, std=.02)
            nn.init.normal_(self.mask_token, std=.02)
            # initialize nn.Linear and nn.LayerNorm
            self.apply(self._init_weights)

        def _init_weights(self, m):
            if isinstance(m, nn.Linear):
                # we use xavier_uniform following official JAX ViT:
                nn.init.xavier_uniform_(m.weight)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)

        def patchify(self, imgs):
            """
            imgs: (N, 3, H, W)
            x: (N, L, patch_size**2 *3)
            """
            p = self.patch_embed.patch_size[0]
            assert imgs.shape[2] == imgs.shape[3] and imgs.shape[2] % p == 0
            h = w = imgs.shape[2] // p
            x = imgs.reshape(shape=(imgs.shape[0], 3, h, p, w, p))
            x = torch.einsum('nchpwq->nhwpqc', x)
            x = x.reshape(shape=(imgs.shape[0], h * w, p**2 * 3))
            return x

        def unpatchify(self, x):
            """
            x: (N, L, patch_size**2 *3)
            imgs: (N, 3, H, W)
            """
            p = self.patch_embed.patch_size[0]
            h = w = int(x.shape[1]**.5)
            assert h * w == x.shape[1]
            x = x.reshape(shape=(x.shape[0], h, w, p, p, 3))
            x = torch.einsum('nhwpqc->nchpwq', x)
            imgs = x.reshape(shape=(x.shape[0], 3, h * p, h * p))
            return imgs

        def random_masking(self, x, mask_ratio, noise):
            """
            Perform per-sample random masking by per-sample shuffling.
            Per-sample shuffling is done by argsort random noise.
            x: [N, L, D], sequence
            """
            N, L, D = x.shape  # batch, length, dim
            len_keep = int(L * (1 - mask_ratio))
            # noise = torch.rand(N, L, device=x.device)  # noise in [0, 1]: here given, the same to both libraries
            # sort noise for each sample
            ids_shuffle = torch.argsort(noise, dim=1)  # ascend: small is keep, large is remove
            ids_restore = torch.argsort(ids_shuffle, dim=1)
            # keep the first subset
            ids_keep = ids_shuffle[:, :len_keep]
            x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
            # generate the binary mask: 0 is keep, 1 is remove
            mask = torch.ones([N, L], device=x.device)
            mask[:, :len_keep] = 0
            # unshuffle to get the binary mask
            mask = torch.gather(mask, dim=1, index=ids_restore)
            return x_masked, mask, ids_restore

        def forward_encoder(self, x, mask_ratio, noise):
            # embed patches
            x = self.patch_embed(x)
            # add pos embed w/o cls token
            x = x + self.pos_embed[:, 1:, :]
            # masking: length -> length * mask_ratio
            x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
            # append cls token
            cls_token = self.cls_token + self.pos_embed[:, :1, :]
            cls_tokens = cls_token.expand(x.shape[0], -1, -1)
            x = torch.cat((cls_tokens, x), dim=1)
            # apply Transformer blocks
            for blk in self.blocks:
                x = blk(x)
            x = self.norm(x)
            return x, mask, ids_restore

        def forward_decoder(self, x, ids_restore):
            # embed tokens
            x = self.decoder_embed(x)
            # append mask tokens to sequence
            mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
            x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # no cls token
            x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))  # unshuffle
            x = torch.cat([x[:, :1, :], x_], dim=1)  # append cls token
            # add pos embed
            x = x + self.decoder_pos_embed
            # apply Transformer blocks
            for blk in self.decoder_blocks:
                x = blk(x)
            x = self.decoder_norm(x)
            # predictor projection
            x = self.decoder_pred(x)
            # remove cls token
            x = x[:, 1:, :]
            return x

        def forward_loss(self, imgs, pred, mask):
            """
            imgs: [N, 3, H, W]
            pred: [N, L, p*p*3]
            mask: [N, L], 0 is keep, 1 is remove,
            """
            target = self.patchify(imgs)
            if self.norm_pix_loss:
                mean = target.mean(dim=-1, keepdim=True)
                var = target.var(dim=-1, keepdim=True)
                target = (target - mean) / (var + 1.e-6)**.5
            loss = (pred - target) ** 2
            loss = loss.mean(dim=-1)  # [N, L], mean loss per patch
            loss = (loss * mask).sum() / mask.sum()  # mean loss on removed patches
            return loss

        def forward(self, imgs, mask_ratio=0.75, noise=None):
            latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
            pred = self.forward_decoder(latent, ids_restore)  # [N, L, p*p*3]
            loss = self.forward_loss(imgs, pred, mask)
            return loss, pred, mask

    return MaskedAutoencoderViT()


def mae(m, weights, epochs=2, iters=2, blr=1.5e-4, warmup_epochs=1, min_lr=0.):
    torch = m.torch
    model = load(m, mae_model(m), weights)

    def param_groups_weight_decay(model, weight_decay=1e-5, no_weight_decay_list=()):
        no_weight_decay_list = set(no_weight_decay_list)
        decay = []
        no_decay = []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            if param.ndim <= 1 or name.endswith(".bias") or name in no_weight_decay_list:
                no_decay.append(param)
            else:
                decay.append(param)
        return [
            {'params': no_decay, 'weight_decay': 0.},
            {'params': decay, 'weight_decay': weight_decay}]

    lr = blr * 4 / 256 * 100

    def adjust_learning_rate(optimizer, epoch):
        """Decay the learning rate with half-cycle cosine after warmup"""
        if epoch < warmup_epochs:
            lr_ = lr * epoch / warmup_epochs
        else:
            lr_ = min_lr + (lr - min_lr) * 0.5 * \
                (1. + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))
        for param_group in optimizer.param_groups:
            if "lr_scale" in param_group:
                param_group["lr"] = lr_ * param_group["lr_scale"]
            else:
                param_group["lr"] = lr_
        return lr_

    param_groups = param_groups_weight_decay(model, 0.05)
    optimizer = m.optim.AdamW(param_groups, lr=lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(7)
    log = []
    for epoch in range(epochs):
        model.train(True)
        for data_iter_step in range(iters):
            adjust_learning_rate(optimizer, data_iter_step / iters + epoch)
            samples = images(m, n=4, side=8, seed=170 + epoch * iters + data_iter_step)
            noise = torch.tensor(rng.random((4, 16)).astype(np.float32))
            loss, pred, mask = model(samples, mask_ratio=0.75, noise=noise)
            loss_value = loss.item()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            log.append((loss_value, optimizer.param_groups[0]["lr"]))
    reconstruction = model.unpatchify(pred.detach())
    # attention ignores a shift common to a query's scores, so the key bias's gradient is rounding alone, which
    # AdamW makes into steps of lr: the key biases are left out of the comparison
    state, key_biases = model.state_dict(), {}
    for name in [k for k in state if k.endswith("in_proj_bias")]:
        q, k, v = state[name].chunk(3)
        state[name], key_biases[name] = torch.cat([q, v]), k
    return {"log": log, "mask": mask, "reconstruction": reconstruction, "state": state, "key_biases": key_biases,
            "grads": {n: p.grad for n, p in model.named_parameters() if p.requires_grad},
            "roundtrip": model.unpatchify(model.patchify(samples)) - samples,
            "frozen": [n for n, p in model.named_parameters() if not p.requires_grad]}


def test_mae():
    weights = weights_of(mae_model)
    bound = math.sqrt(6 / (16 + 12))  # xavier on the patch projection's (16, 12) view
    assert np.abs(weights["patch_embed.proj.weight"]).max() <= bound
    assert np.abs(weights["patch_embed.proj.weight"]).max() > 1 / math.sqrt(12)  # not Conv2d's own init
    ours, theirs = run_both(mae, weights, compare=False)
    key_biases = ours.pop("key_biases")
    if theirs is not None:
        theirs.pop("key_biases")
        assert_same(ours, theirs, rtol=1e-4, atol=1e-5)
    assert all(np.abs(b).max() < 4 * 1.5e-4 * 4 / 256 * 100 for b in key_biases.values())  # four steps of lr
    for name, grad in ours["grads"].items():
        if name.endswith("in_proj_bias"):
            d = len(grad) // 3
            assert np.abs(grad[d:2 * d]).max() < 1e-5  # the key bias's
    assert ours["frozen"] == ["pos_embed", "decoder_pos_embed"]
    np.testing.assert_array_equal(ours["roundtrip"], 0)
    assert (ours["mask"].sum(1) == 12).all()
    np.testing.assert_array_equal(ours["state"]["pos_embed"], weights["pos_embed"])
    assert ours["log"][0][1] == 0


# ----------------------------------------------------------------------------------------------
# DINO's ViT (facebookresearch/dino vision_transformer.py: positional embeddings interpolated by bicubic
# F.interpolate with a fractional scale_factor for the local crops, the last self-attention), its attention
# maps thresholded as visualize_attention.py does, its k-NN evaluation (eval_knn.py: resize_, scatter_,
# div_().exp_()) and a linear probe on intermediate layers (eval_linear.py)
# ----------------------------------------------------------------------------------------------


def dino_vit(m, img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2):
    torch, nn = m.torch, m.nn
    from functools import partial

    class Mlp(nn.Module):
        def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.):
            super().__init__()
            out_features = out_features or in_features
            hidden_features = hidden_features or in_features
            self.fc1 = nn.Linear(in_features, hidden_features)
            self.act = act_layer()
            self.fc2 = nn.Linear(hidden_features, out_features)
            self.drop = nn.Dropout(drop)

        def forward(self, x):
            x = self.fc1(x)
            x = self.act(x)
            x = self.drop(x)
            x = self.fc2(x)
            x = self.drop(x)
            return x

    class Attention(nn.Module):
        def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0., proj_drop=0.):
            super().__init__()
            self.num_heads = num_heads
            head_dim = dim // num_heads
            self.scale = qk_scale or head_dim ** -0.5
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x = (attn @ v).transpose(1, 2).reshape(B, N, C)
            x = self.proj(x)
            x = self.proj_drop(x)
            return x, attn

    class Block(nn.Module):
        def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False, qk_scale=None, drop=0., attn_drop=0.,
                     drop_path=0., act_layer=nn.GELU, norm_layer=nn.LayerNorm):
            super().__init__()
            self.norm1 = norm_layer(dim)
            self.attn = Attention(
                dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop)
            self.drop_path = nn.Identity()
            self.norm2 = norm_layer(dim)
            mlp_hidden_dim = int(dim * mlp_ratio)
            self.mlp = Mlp(in_features=dim, hidden_features=mlp_hidden_dim, act_layer=act_layer, drop=drop)

        def forward(self, x, return_attention=False):
            y, attn = self.attn(self.norm1(x))
            if return_attention:
                return attn
            x = x + self.drop_path(y)
            x = x + self.drop_path(self.mlp(self.norm2(x)))
            return x

    class PatchEmbed(nn.Module):
        """ Image to Patch Embedding
        """
        def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
            super().__init__()
            num_patches = (img_size // patch_size) * (img_size // patch_size)
            self.img_size = img_size
            self.patch_size = patch_size
            self.num_patches = num_patches
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

        def forward(self, x):
            B, C, H, W = x.shape
            x = self.proj(x).flatten(2).transpose(1, 2)
            return x

    class VisionTransformer(nn.Module):
        """ Vision Transformer """
        def __init__(self, img_size=[224], patch_size=16, in_chans=3, num_classes=0, embed_dim=768, depth=12,
                     num_heads=12, mlp_ratio=4., qkv_bias=False, qk_scale=None, drop_rate=0., attn_drop_rate=0.,
                     drop_path_rate=0., norm_layer=nn.LayerNorm, **kwargs):
            super().__init__()
            self.num_features = self.embed_dim = embed_dim
            self.patch_embed = PatchEmbed(
                img_size=img_size[0], patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
            num_patches = self.patch_embed.num_patches
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
            self.pos_drop = nn.Dropout(p=drop_rate)
            dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]  # stochastic depth decay rule
            self.blocks = nn.ModuleList([
                Block(
                    dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                    drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i], norm_layer=norm_layer)
                for i in range(depth)])
            self.norm = norm_layer(embed_dim)
            # Classifier head
            self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
            nn.init.trunc_normal_(self.pos_embed, std=.02)
            nn.init.trunc_normal_(self.cls_token, std=.02)
            self.apply(self._init_weights)

        def _init_weights(self, m):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)

        def interpolate_pos_encoding(self, x, w, h):
            npatch = x.shape[1] - 1
            N = self.pos_embed.shape[1] - 1
            if npatch == N and w == h:
                return self.pos_embed
            class_pos_embed = self.pos_embed[:, 0]
            patch_pos_embed = self.pos_embed[:, 1:]
            dim = x.shape[-1]
            w0 = w // self.patch_embed.patch_size
            h0 = h // self.patch_embed.patch_size
            # we add a small number to avoid floating point error in the interpolation
            # see discussion at https://github.com/facebookresearch/dino/issues/8
            w0, h0 = w0 + 0.1, h0 + 0.1
            patch_pos_embed = nn.functional.interpolate(
                patch_pos_embed.reshape(1, int(math.sqrt(N)), int(math.sqrt(N)), dim).permute(0, 3, 1, 2),
                scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)),
                mode='bicubic',
            )
            assert int(w0) == patch_pos_embed.shape[-2] and int(h0) == patch_pos_embed.shape[-1]
            patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
            return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)

        def prepare_tokens(self, x):
            B, nc, w, h = x.shape
            x = self.patch_embed(x)  # patch linear embedding
            # add the [CLS] token to the embed patch tokens
            cls_tokens = self.cls_token.expand(B, -1, -1)
            x = torch.cat((cls_tokens, x), dim=1)
            # add positional encoding to each token
            x = x + self.interpolate_pos_encoding(x, w, h)
            return self.pos_drop(x)

        def forward(self, x):
            x = self.prepare_tokens(x)
            for blk in self.blocks:
                x = blk(x)
            x = self.norm(x)
            return x[:, 0]

        def get_last_selfattention(self, x):
            x = self.prepare_tokens(x)
            for i, blk in enumerate(self.blocks):
                if i < len(self.blocks) - 1:
                    x = blk(x)
                else:
                    # return attention of the last block
                    return blk(x, return_attention=True)

        def get_intermediate_layers(self, x, n=1):
            x = self.prepare_tokens(x)
            # we return the output tokens from the `n` last blocks
            output = []
            for i, blk in enumerate(self.blocks):
                x = blk(x)
                if len(self.blocks) - i <= n:
                    output.append(self.norm(x))
            return output

    return VisionTransformer(img_size=[img_size], patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                             num_heads=num_heads, mlp_ratio=2, qkv_bias=True,
                             norm_layer=partial(nn.LayerNorm, eps=1e-6))


def dino_vit_program(m, weights, steps=3, patch_size=4, threshold=0.6):
    torch, nn, F = m.torch, m.nn, m.F
    vit = load(m, dino_vit(m), weights)
    # SGD: AdamW would make the entries of gradients near zero (rounding alone) into steps of lr
    optimizer = m.optim.SGD(vit.parameters(), lr=1e-4, momentum=0.9)
    log = []
    for step in range(steps):
        x = images(m, n=4, side=16, seed=180 + step)
        local = images(m, n=4, side=8, seed=190 + step)
        cls_global = vit(torch.cat([x, x.flip(3)]))
        cls_local = vit(local)  # 2x2 patches: the 4x4 positional grid interpolated by a factor 0.525
        p_global = F.softmax(cls_global.detach() / 0.04, dim=-1).chunk(2)
        loss = sum(torch.sum(-p * F.log_softmax(cls_local / 0.1, dim=-1), dim=-1).mean() for p in p_global)
        loss = loss + torch.sum(-p_global[0] * F.log_softmax(cls_global[4:] / 0.1, dim=-1), dim=-1).mean()
        optimizer.zero_grad()
        loss.backward()
        log.append((loss.item(), vit.pos_embed.grad.clone()))
        optimizer.step()

    # attention maps (visualize_attention.py)
    for p in vit.parameters():
        p.requires_grad = False
    vit.eval()
    img = images(m, n=1, side=16, seed=200)
    w_featmap = img.shape[-2] // patch_size
    h_featmap = img.shape[-1] // patch_size
    attentions = vit.get_last_selfattention(img)
    nh = attentions.shape[1]  # number of head
    # we keep only the output patch attention
    attentions = attentions[0, :, 0, 1:].reshape(nh, -1)
    # we keep only a certain percentage of the mass
    val, idx = torch.sort(attentions)
    val /= torch.sum(val, dim=1, keepdim=True)
    cumval = torch.cumsum(val, dim=1)
    th_attn = cumval > (1 - threshold)
    idx2 = torch.argsort(idx)
    for head in range(nh):
        th_attn[head] = th_attn[head][idx2[head]]
    th_attn = th_attn.reshape(nh, w_featmap, h_featmap).float()
    # interpolate
    th_attn = nn.functional.interpolate(th_attn.unsqueeze(0), scale_factor=patch_size, mode="nearest")[0].cpu().numpy()
    attentions = attentions.reshape(nh, w_featmap, h_featmap)
    attentions = nn.functional.interpolate(attentions.unsqueeze(0), scale_factor=patch_size, mode="nearest")[0].cpu().numpy()

    # k-NN evaluation (eval_knn.py)
    @torch.no_grad()
    def knn_classifier(train_features, train_labels, test_features, test_labels, k, T, num_classes=1000):
        top1, top5, total = 0.0, 0.0, 0
        train_features = train_features.t()
        num_test_images, num_chunks = test_labels.shape[0], 4
        imgs_per_chunk = num_test_images // num_chunks
        retrieval_one_hot = torch.zeros(k, num_classes).to(train_features.device)
        for idx in range(0, num_test_images, imgs_per_chunk):
            # get the features for test images
            features = test_features[
                idx : min((idx + imgs_per_chunk), num_test_images), :
            ]
            targets = test_labels[idx : min((idx + imgs_per_chunk), num_test_images)]
            batch_size = targets.shape[0]
            # calculate the dot product and compute top-k neighbors
            similarity = torch.mm(features, train_features)
            distances, indices = similarity.topk(k, largest=True, sorted=True)
            candidates = train_labels.view(1, -1).expand(batch_size, -1)
            retrieved_neighbors = torch.gather(candidates, 1, indices)
            retrieval_one_hot.resize_(batch_size * k, num_classes).zero_()
            retrieval_one_hot.scatter_(1, retrieved_neighbors.view(-1, 1), 1)
            distances_transform = distances.clone().div_(T).exp_()
            probs = torch.sum(
                torch.mul(
                    retrieval_one_hot.view(batch_size, -1, num_classes),
                    distances_transform.view(batch_size, -1, 1),
                ),
                1,
            )
            _, predictions = probs.sort(1, True)
            # find the predictions that match the target
            correct = predictions.eq(targets.data.view(-1, 1))
            top1 = top1 + correct.narrow(1, 0, 1).sum().item()
            top5 = top5 + correct.narrow(1, 0, min(5, k)).sum().item()  # top5 does not make sense if k < 5
            total += targets.size(0)
        top1 = top1 * 100.0 / total
        top5 = top5 * 100.0 / total
        return top1, top5

    rng = np.random.default_rng(8)
    protos = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    train_labels = torch.tensor(np.arange(12) % 3)
    test_labels = torch.tensor(np.arange(8) % 3)
    train_images = torch.tensor(protos[np.arange(12) % 3] + 0.5 * rng.standard_normal((12, 3, 16, 16)).astype(np.float32))
    test_images = torch.tensor(protos[np.arange(8) % 3] + 0.5 * rng.standard_normal((8, 3, 16, 16)).astype(np.float32))
    with torch.no_grad():
        train_features = nn.functional.normalize(vit(train_images), dim=1, p=2)
        test_features = nn.functional.normalize(vit(test_images), dim=1, p=2)
    knn = knn_classifier(train_features, train_labels, test_features, test_labels, 5, 0.07, num_classes=6)

    # linear probe (eval_linear.py) on the last block's [CLS] token and its mean patch token
    class LinearClassifier(nn.Module):
        """Linear layer to train on top of frozen features"""
        def __init__(self, dim, num_labels=1000):
            super(LinearClassifier, self).__init__()
            self.num_labels = num_labels
            self.linear = nn.Linear(dim, num_labels)
            self.linear.weight.data.normal_(mean=0.0, std=0.01)
            self.linear.bias.data.zero_()

        def forward(self, x):
            # flatten
            x = x.view(x.size(0), -1)
            # linear layer
            return self.linear(x)

    linear_classifier = LinearClassifier(16 * 2, num_labels=3)
    with torch.no_grad():
        linear_classifier.linear.weight.copy_(torch.tensor(rng.standard_normal((3, 32)).astype(np.float32) * 0.01))
    probe_opt = m.optim.SGD(linear_classifier.parameters(), 0.1, momentum=0.9, weight_decay=0)
    for _ in range(2):
        with torch.no_grad():
            intermediate_output = vit.get_intermediate_layers(train_images, 1)
            output = torch.cat([x[:, 0] for x in intermediate_output], dim=-1)
            output = torch.cat((output.unsqueeze(-1), torch.mean(intermediate_output[-1][:, 1:], dim=1).unsqueeze(-1)),
                               dim=-1)
            output = output.reshape(output.shape[0], -1)
        probe_loss = nn.CrossEntropyLoss()(linear_classifier(output), train_labels)
        probe_opt.zero_grad()
        probe_loss.backward()
        probe_opt.step()
    return {"log": log, "attentions": attentions, "th_attn": th_attn, "knn": knn, "probe_loss": probe_loss,
            "probe": linear_classifier.state_dict(), "state": vit.state_dict()}


def test_dino_vit():
    weights = weights_of(dino_vit)
    ours, _ = run_both(dino_vit_program, weights, rtol=1e-4, atol=1e-5)
    assert ours["th_attn"].shape == (2, 16, 16) and set(np.unique(ours["th_attn"])) <= {0.0, 1.0}
    assert all(0 <= v <= 100 for v in ours["knn"])
    assert np.abs(ours["log"][0][1][0, 1:]).max() > 0  # the patch embeddings learn through the interpolation


# ----------------------------------------------------------------------------------------------
# DINOv2's losses (facebookresearch/dinov2): iBOT's masked-patch loss on tokens gathered by index_select into
# new_zeros buffers (``out=`` a slice of one, ``copy_`` into a slice of another), Sinkhorn-Knopp centring of the
# teacher, the KoLeo regulariser (the diagonal filled through ``view(-1)[::n + 1]``), a mask token put in by
# torch.where, parameter groups with lr and wd multipliers, the teacher by _foreach_mul_ / _foreach_add_
# ----------------------------------------------------------------------------------------------


def dinov2(m, weights, steps=3, student_temp=0.1, teacher_temp=0.07):
    torch, nn, F = m.torch, m.nn, m.F
    student = load(m, dino_vit(m), weights)
    teacher = load(m, dino_vit(m), weights)
    for p in teacher.parameters():
        p.requires_grad = False
    mask_token = nn.Parameter(torch.zeros(1, 16))
    ibot_head = nn.Linear(16, 10)
    with torch.no_grad():
        ibot_head.weight.copy_(torch.tensor(np.random.default_rng(9).standard_normal((10, 16)).astype(np.float32) * 0.1))
        ibot_head.bias.zero_()

    def forward_tokens(vit, x, masks=None):
        B, nc, w, h = x.shape
        x = vit.patch_embed(x)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), mask_token.to(x.dtype).unsqueeze(0), x)
        x = torch.cat((vit.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + vit.interpolate_pos_encoding(x, w, h)
        for blk in vit.blocks:
            x = blk(x)
        x_norm = vit.norm(x)
        return {"x_norm_clstoken": x_norm[:, 0], "x_norm_patchtokens": x_norm[:, 1:]}

    class KoLeoLoss(nn.Module):
        """Kozachenko-Leonenko entropic loss regularizer from Sablayrolles et al. - 2018 - Spreading vectors for similarity search"""

        def __init__(self):
            super().__init__()
            self.pdist = nn.PairwiseDistance(2, eps=1e-8)

        def pairwise_NNs_inner(self, x):
            """
            Pairwise nearest neighbors for L2-normalized vectors.
            Uses Torch rather than Faiss to remain on GPU.
            """
            # parwise dot products (= inverse distance)
            dots = torch.mm(x, x.t())
            n = x.shape[0]
            dots.view(-1)[:: (n + 1)].fill_(-1)  # Trick to fill diagonal with -1
            # max inner prod -> min distance
            _, I = torch.max(dots, dim=1)  # noqa: E741
            return I

        def forward(self, student_output, eps=1e-8):
            """
            Args:
                student_output (BxD): backbone output of student
            """
            student_output = F.normalize(student_output, eps=eps, p=2, dim=-1)
            I = self.pairwise_NNs_inner(student_output)  # noqa: E741
            distances = self.pdist(student_output, student_output[I])  # BxD, BxD -> B
            loss = -torch.log(distances + eps).mean()
            return loss

    @torch.no_grad()
    def sinkhorn_knopp_teacher(teacher_output, teacher_temp, n_masked_patches_tensor=None, n_iterations=3):
        teacher_output = teacher_output.float()
        Q = torch.exp(teacher_output / teacher_temp).t()  # Q is K-by-B for consistency with notations from our paper
        B = Q.shape[1] if n_masked_patches_tensor is None else n_masked_patches_tensor
        K = Q.shape[0]  # how many prototypes
        # make the matrix sums to 1
        sum_Q = torch.sum(Q)
        Q /= sum_Q
        for it in range(n_iterations):
            # normalize each row: total weight per prototype must be 1/K
            sum_of_rows = torch.sum(Q, dim=1, keepdim=True)
            Q /= sum_of_rows
            Q /= K
            # normalize each column: total weight per sample must be 1/B
            Q /= torch.sum(Q, dim=0, keepdim=True)
            Q /= B
        Q *= B  # the columns must sum to 1 so that Q is an assignment
        return Q.t()

    def forward_masked(student_patch_tokens_masked, teacher_patch_tokens_masked, student_masks_flat,
                       n_masked_patches=None, masks_weight=None):
        t = teacher_patch_tokens_masked
        s = student_patch_tokens_masked
        loss = torch.sum(t * F.log_softmax(s / student_temp, dim=-1), dim=-1)
        if masks_weight is None:
            masks_weight = (
                (1 / student_masks_flat.sum(-1).clamp(min=1.0))
                .unsqueeze(-1)
                .expand_as(student_masks_flat)[student_masks_flat]
            )
        if n_masked_patches is not None:
            loss = loss[:n_masked_patches]
        loss = loss * masks_weight
        return -loss.sum() / student_masks_flat.shape[0]

    def get_params_groups(model_parts, lr_decay_rate=0.9, patch_embed_lr_mult=0.2):
        groups = []
        for prefix, model in model_parts:
            for name, param in model.named_parameters():
                name = prefix + name
                if not param.requires_grad:
                    continue
                layer_id = int(name.split("blocks.")[1].split(".")[0]) + 1 if "blocks." in name else 0
                d = {"params": param, "is_last_layer": False, "lr_multiplier": lr_decay_rate ** (3 - layer_id),
                     "wd_multiplier": 1.0, "name": name}
                if name.endswith(".bias") or "norm" in name or "gamma" in name:
                    d.update({"wd_multiplier": 0.0})
                if "patch_embed" in name:
                    d.update({"lr_multiplier": d["lr_multiplier"] * patch_embed_lr_mult})
                if "ibot_head" in name:
                    d.update({"is_last_layer": True})
                groups.append(d)
        return groups

    def apply_optim_scheduler(optimizer, lr, wd, last_layer_lr):
        for param_group in optimizer.param_groups:
            is_last_layer = param_group["is_last_layer"]
            lr_multiplier = param_group["lr_multiplier"]
            wd_multiplier = param_group["wd_multiplier"]
            param_group["weight_decay"] = wd * wd_multiplier
            param_group["lr"] = (last_layer_lr if is_last_layer else lr) * lr_multiplier

    koleo = KoLeoLoss()
    groups = get_params_groups([("", student), ("ibot_head.", ibot_head)])
    groups.append({"params": mask_token, "is_last_layer": False, "lr_multiplier": 1.0, "wd_multiplier": 0.0,
                   "name": "mask_token"})
    optimizer = m.optim.AdamW(groups, betas=(0.9, 0.999))
    rng = np.random.default_rng(10)
    log = []
    for step in range(steps):
        x = images(m, n=4, side=16, seed=210 + step)
        masks = torch.tensor(rng.random((4, 16)) < 0.4)
        masks[1] = False  # one image without masked patches
        masks[0, 0] = True
        mask_indices_list = masks.flatten().nonzero().flatten()
        n_masked_patches = mask_indices_list.shape[0]
        upperbound = 4 * 16 // 2
        masks_weight = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
        apply_optim_scheduler(optimizer, lr=1e-3 * (step + 1) / steps, wd=0.04 + 0.01 * step, last_layer_lr=5e-4)
        with torch.no_grad():
            teacher_out = forward_tokens(teacher, x)
            ibot_teacher_patch_tokens = teacher_out["x_norm_patchtokens"]
            _dim = ibot_teacher_patch_tokens.shape[-1]
            buffer_tensor_teacher = ibot_teacher_patch_tokens.new_zeros(upperbound, _dim)
            torch.index_select(
                ibot_teacher_patch_tokens.flatten(0, 1),
                dim=0,
                index=mask_indices_list,
                out=buffer_tensor_teacher[:n_masked_patches],
            )
            teacher_ibot = ibot_head(buffer_tensor_teacher)[:n_masked_patches]
            masked_teacher_ibot_softmaxed_centered = sinkhorn_knopp_teacher(
                teacher_ibot, teacher_temp=teacher_temp, n_masked_patches_tensor=torch.tensor([n_masked_patches]))
        student_out = forward_tokens(student, x, masks=masks)
        ibot_student_patch_tokens = student_out["x_norm_patchtokens"]
        buffer_tensor_patch_tokens = ibot_student_patch_tokens.new_zeros(upperbound, _dim)
        buffer_tensor_patch_tokens[:n_masked_patches].copy_(
            torch.index_select(ibot_student_patch_tokens.flatten(0, 1), dim=0, index=mask_indices_list)
        )
        student_global_masked_patch_tokens_after_head = ibot_head(buffer_tensor_patch_tokens)[:n_masked_patches]
        ibot_loss = forward_masked(student_global_masked_patch_tokens_after_head,
                                   masked_teacher_ibot_softmaxed_centered, student_masks_flat=masks,
                                   n_masked_patches=n_masked_patches, masks_weight=masks_weight)
        koleo_loss = 0.1 * koleo(student_out["x_norm_clstoken"])
        loss = ibot_loss + koleo_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(student.parameters(), 3.0)
        optimizer.step()
        with torch.no_grad():
            teacher_param_list = list(teacher.parameters())
            student_param_list = list(student.parameters())
            torch._foreach_mul_(teacher_param_list, 0.99)
            torch._foreach_add_(teacher_param_list, student_param_list, alpha=1 - 0.99)
        log.append((ibot_loss.item(), koleo_loss.item(), n_masked_patches, buffer_tensor_patch_tokens.requires_grad,
                    masked_teacher_ibot_softmaxed_centered.sum(-1)))
    return {"log": log, "teacher": teacher.state_dict(), "mask_token_grad": mask_token.grad,
            "ibot_head_grad": ibot_head.weight.grad,
            "groups": [(g["name"], g["lr"], g["weight_decay"]) for g in optimizer.param_groups],
            "buffer_tail": buffer_tensor_teacher[n_masked_patches:]}


def test_dinov2_losses():
    weights = weights_of(dino_vit)
    ours, _ = run_both(dinov2, weights, rtol=1e-4, atol=1e-5)
    for ibot, koleo, n_masked, tracked, q_rows in ours["log"]:
        assert tracked and n_masked > 1
        np.testing.assert_allclose(q_rows, 1, rtol=1e-5)  # each patch's assignment is a distribution
    np.testing.assert_array_equal(ours["buffer_tail"], 0)  # index_select wrote into the slice only
    assert np.abs(ours["mask_token_grad"]).max() > 0
    groups = dict((name, (lr, wd)) for name, lr, wd in ours["groups"])
    assert groups["ibot_head.weight"][0] == pytest.approx(5e-4 * 0.9 ** 3)  # the last layer's lr
    assert groups["patch_embed.proj.weight"][0] == pytest.approx(1e-3 * 0.9 ** 3 * 0.2)
    assert groups["blocks.1.norm1.weight"][1] == 0


# ----------------------------------------------------------------------------------------------
# W-MSE (htdt/self-supervised): whitening by a Cholesky factor's inverse (torch.cholesky, triangular_solve)
# applied as a 1x1 conv2d, running statistics by torch.add(out=buffer), whitened sub-batches written into
# torch.empty_like by index
# ----------------------------------------------------------------------------------------------


def wmse_model(m):
    nn = m.nn
    # no biases before BatchNorm or the whitening (which centres): their gradients would be rounding alone,
    # which Adam makes into steps of lr
    return nn.ModuleDict({"model": nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 16), nn.ReLU()),
                          "head": nn.Sequential(nn.Linear(16, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
                                                nn.Linear(16, 4, bias=False))})


@pytest.mark.filterwarnings("ignore:torch.cholesky is deprecated", "ignore:torch.triangular_solve is deprecated")
def test_wmse():
    def program(m, weights, steps=3, w_iter=2, w_size=4):
        torch, nn, F = m.torch, m.nn, m.F
        conv2d = F.conv2d

        class Whitening2d(nn.Module):
            def __init__(self, num_features, momentum=0.01, track_running_stats=True, eps=0):
                super(Whitening2d, self).__init__()
                self.num_features = num_features
                self.momentum = momentum
                self.track_running_stats = track_running_stats
                self.eps = eps
                if self.track_running_stats:
                    self.register_buffer("running_mean", torch.zeros([1, self.num_features, 1, 1]))
                    self.register_buffer("running_variance", torch.eye(self.num_features))

            def forward(self, x):
                x = x.unsqueeze(2).unsqueeze(3)
                m = x.mean(0).view(self.num_features, -1).mean(-1).view(1, -1, 1, 1)
                if not self.training and self.track_running_stats:  # for inference
                    m = self.running_mean
                xn = x - m
                T = xn.permute(1, 0, 2, 3).contiguous().view(self.num_features, -1)
                f_cov = torch.mm(T, T.permute(1, 0)) / (T.shape[-1] - 1)
                eye = torch.eye(self.num_features).type(f_cov.type())
                if not self.training and self.track_running_stats:  # for inference
                    f_cov = self.running_variance
                f_cov_shrinked = (1 - self.eps) * f_cov + self.eps * eye
                inv_sqrt = torch.triangular_solve(eye, torch.cholesky(f_cov_shrinked), upper=False)[0]
                inv_sqrt = inv_sqrt.contiguous().view(self.num_features, self.num_features, 1, 1)
                decorrelated = conv2d(xn, inv_sqrt)
                if self.training and self.track_running_stats:
                    self.running_mean = torch.add(self.momentum * m.detach(), (1 - self.momentum) * self.running_mean,
                                                  out=self.running_mean)
                    self.running_variance = torch.add(self.momentum * f_cov.detach(),
                                                      (1 - self.momentum) * self.running_variance,
                                                      out=self.running_variance)
                return decorrelated.squeeze(2).squeeze(2)

        def norm_mse_loss(x0, x1):
            x0 = F.normalize(x0)
            x1 = F.normalize(x1)
            return 2 - 2 * (x0 * x1).sum(dim=-1).mean()

        nets = load(m, wmse_model(m), weights)
        model, head = nets["model"], nets["head"]
        whitening = Whitening2d(4, eps=0.1)
        optimizer = m.optim.Adam(nets.parameters(), lr=1e-3, weight_decay=1e-6)
        rng = np.random.default_rng(11)
        num_pairs = 1
        log = []
        for step in range(steps):
            x = images(m, n=8, side=6, seed=220 + step)
            samples = [x, x.flip(3) * 0.9]
            bs = len(samples[0])
            h = [model(x) for x in samples]
            h = head(torch.cat(h))
            loss = 0
            for _ in range(w_iter):
                z = torch.empty_like(h)
                perm = torch.tensor(rng.permutation(bs)).view(-1, w_size)  # torch.randperm(bs)
                for idx in perm:
                    for i in range(len(samples)):
                        z[idx + i * bs] = whitening(h[idx + i * bs])
                for i in range(len(samples) - 1):
                    for j in range(i + 1, len(samples)):
                        x0 = z[i * bs: (i + 1) * bs]
                        x1 = z[j * bs: (j + 1) * bs]
                        loss += norm_mse_loss(x0, x1)
            loss /= w_iter * num_pairs
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            log.append(loss.item())
        whitening.eval()
        with torch.no_grad():
            white_eval = whitening(head.eval()(model(samples[0])))
        return {"log": log, "grads": [p.grad for p in nets.parameters()], "running_mean": whitening.running_mean,
                "running_variance": whitening.running_variance, "white_eval": white_eval, "z": z.detach(),
                "type": h.type(), "nets": nets.state_dict()}

    weights = weights_of(wmse_model)
    ours, _ = run_both(program, weights, rtol=1e-4, atol=1e-5)
    assert ours["type"] == "torch.FloatTensor"
    assert ours["running_mean"].shape == (1, 4, 1, 1)
    assert all(0 <= loss <= 4 for loss in ours["log"])
    # each whitened sub-batch of 4 has covariance close to the identity (shrunk by eps = 0.1)
    sub = ours["z"][:4]
    cov = np.cov((sub - sub.mean(0)).T)
    assert np.all(np.linalg.eigvalsh(cov) < 1.0 + 1e-4)


# ----------------------------------------------------------------------------------------------
# CLIP's symmetric contrastive loss (openai/CLIP, mlfoundations/open_clip: a learnt logit scale clamped in
# place, features normalised by .norm(dim=-1, keepdim=True)) and NNCLR's nearest-neighbour positives from
# a support queue (argmax of similarities, the queue written by a slice, the neighbour passed straight through)
# ----------------------------------------------------------------------------------------------


def clip_model(m):
    torch, nn = m.torch, m.nn

    class CLIP(nn.Module):
        def __init__(self, embed_dim=8):
            super().__init__()
            self.visual = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 16), nn.GELU(), nn.Linear(16, embed_dim))
            self.token_embedding = nn.Embedding(20, 12)
            self.transformer = nn.GRU(12, 12, batch_first=True)
            self.ln_final = nn.LayerNorm(12)
            self.text_projection = nn.Parameter(torch.empty(12, embed_dim))
            self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))
            nn.init.normal_(self.text_projection, std=12 ** -0.5)

        def encode_image(self, image):
            return self.visual(image)

        def encode_text(self, text):
            x = self.token_embedding(text)
            x, _ = self.transformer(x)
            x = self.ln_final(x)
            # take features from the eot embedding (eot_token is the highest number in each sequence)
            x = x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection
            return x

        def forward(self, image, text):
            image_features = self.encode_image(image)
            text_features = self.encode_text(text)
            # normalized features
            image_features = image_features / image_features.norm(dim=1, keepdim=True)
            text_features = text_features / text_features.norm(dim=1, keepdim=True)
            # cosine similarity as logits
            logit_scale = self.logit_scale.exp()
            logits_per_image = logit_scale * image_features @ text_features.t()
            logits_per_text = logits_per_image.t()
            # shape = [global_batch_size, global_batch_size]
            return logits_per_image, logits_per_text

    return CLIP()


def clip_and_nnclr(m, weights, steps=4, queue_size=12):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, clip_model(m), weights)
    loss_img = nn.CrossEntropyLoss()
    loss_txt = nn.CrossEntropyLoss()
    optimizer = m.optim.Adam(model.parameters(), lr=5e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)
    rng = np.random.default_rng(12)
    support = torch.tensor(rng.standard_normal((queue_size, 8)).astype(np.float32))
    support = F.normalize(support, dim=1)
    ptr = 0
    log = []
    for step in range(steps):
        images_ = images(m, n=4, side=6, seed=230 + step)
        texts = torch.tensor(np.concatenate([rng.integers(1, 18, (4, 5)), np.full((4, 1), 19)], 1)[:, rng.permutation(6)])
        logits_per_image, logits_per_text = model(images_, texts)
        ground_truth = torch.arange(len(images_), dtype=torch.long)
        clip_loss = (loss_img(logits_per_image, ground_truth) + loss_txt(logits_per_text, ground_truth)) / 2
        # NNCLR on the image features: the nearest neighbour of each view in the support set is its positive
        z1 = F.normalize(model.encode_image(images_), dim=1)
        z2 = F.normalize(model.encode_image(images_.flip(3)), dim=1)
        idx = (z1 @ support.T).argmax(dim=1)
        nn1 = support[idx]
        nn1 = z1 + (nn1 - z1).detach()  # straight through, as some implementations pass the gradient on
        logits = nn1 @ z2.T / 0.1
        nnclr_loss = F.cross_entropy(logits, ground_truth)
        with torch.no_grad():
            support[ptr:ptr + 4] = z2.detach()
            ptr = (ptr + 4) % queue_size
        loss = clip_loss + nnclr_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # clamp the logit scale as open_clip does, and CLIP's later training code on .data
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        torch.clamp(model.logit_scale.data, 0, 4.6052, out=model.logit_scale.data)
        log.append((clip_loss.item(), nnclr_loss.item(), model.logit_scale.item(), idx))
    return {"log": log, "grads": {n: p.grad for n, p in model.named_parameters()}, "support": support,
            "state": model.state_dict()}


def test_clip_and_nnclr():
    weights = weights_of(clip_model)
    assert weights["logit_scale"].dtype == np.float32
    ours, _ = run_both(clip_and_nnclr, weights, rtol=1e-4, atol=1e-5)
    assert all(0 <= scale <= 4.6052 for _, _, scale, _ in ours["log"])
    np.testing.assert_allclose(np.linalg.norm(ours["support"], axis=1), 1, rtol=1e-5)
    assert ours["grads"]["logit_scale"] is not None


# ----------------------------------------------------------------------------------------------
# Pairwise ranking with MarginRankingLoss(margin=0) over pairs that include duplicated documents (their scores
# tie exactly: the hinge's corner), and CosineEmbeddingLoss given 0/1 labels, a common slip PyTorch runs
# ----------------------------------------------------------------------------------------------


def ranking_with_ties(m, weights, steps=4):
    torch, nn = m.torch, m.nn
    model = load(m, nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1)), weights)
    ranking = nn.MarginRankingLoss(margin=0.0)
    cosine = nn.CosineEmbeddingLoss(margin=0.1)
    optimizer = m.optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(13)
    docs = torch.tensor(rng.standard_normal((6, 6)).astype(np.float32))
    docs = torch.cat([docs, docs[:2]])  # documents 6 and 7 repeat 0 and 1
    relevance = torch.tensor([3.0, 2.0, 2.0, 1.0, 0.0, 1.0, 3.0, 2.0])
    first = torch.tensor([0, 1, 2, 3, 0, 1, 6, 4])
    second = torch.tensor([6, 7, 3, 5, 2, 4, 5, 5])  # (0, 6) and (1, 7) tie
    log = []
    for step in range(steps):
        scores = model(docs).squeeze(-1)
        target = torch.sign(relevance[first] - relevance[second])
        target = torch.where(target == 0, torch.ones_like(target), target)  # ties labelled "first ahead"
        loss = ranking(scores[first], scores[second], target)
        embeddings = model[:2](docs)
        same_label = (relevance[first] == relevance[second]).long()  # 0/1, not -1/+1
        slip = cosine(embeddings[first], embeddings[second], same_label)
        optimizer.zero_grad()
        (loss + slip).backward()
        optimizer.step()
        log.append((loss.item(), slip.item(), scores.detach()))
    return {"log": log, "grads": [p.grad for p in model.parameters()]}


def test_ranking_with_tied_scores():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(6, 8), m.nn.Tanh(), m.nn.Linear(8, 1)))
    ours, _ = run_both(ranking_with_ties, weights, rtol=1e-5, atol=1e-6)
    scores = ours["log"][0][2]
    assert scores[0] == scores[6] and scores[1] == scores[7]


# ----------------------------------------------------------------------------------------------
# Instance discrimination with a memory bank (zhirongw/lemniscate.pytorch, Wu et al. 2018): a custom
# autograd.Function whose backward divides the incoming gradient in place, resizes with resize_as_ and
# updates the memory bank (a saved tensor) by index_copy_; kNN evaluation on the memory
# ----------------------------------------------------------------------------------------------


def lemniscate(m, weights, steps=4, n_data=12, dim=8, T=0.1, momentum=0.5):
    torch, nn, F = m.torch, m.nn, m.F
    Function = torch.autograd.Function

    class LinearAverageOp(Function):
        @staticmethod
        def forward(self, x, y, memory, params):
            T = params[0].item()
            batchSize = x.size(0)
            # inner product
            out = torch.mm(x.data, memory.t())
            out.div_(T)  # batchSize * N
            self.save_for_backward(x, memory, y, params)
            return out

        @staticmethod
        def backward(self, gradOutput):
            x, memory, y, params = self.saved_tensors
            batchSize = gradOutput.size(0)
            T = params[0].item()
            momentum = params[1].item()
            # add temperature
            gradOutput.data.div_(T)
            # gradient of linear
            gradInput = torch.mm(gradOutput.data, memory)
            gradInput.resize_as_(x)
            # update the non-parametric data
            weight_pos = memory.index_select(0, y.data.view(-1)).resize_as_(x)
            weight_pos.mul_(momentum)
            weight_pos.add_(torch.mul(x.data, 1 - momentum))
            w_norm = weight_pos.pow(2).sum(1, keepdim=True).pow(0.5)
            updated_weight = weight_pos.div(w_norm)
            memory.index_copy_(0, y, updated_weight)
            return gradInput, None, None, None

    class LinearAverage(nn.Module):
        def __init__(self, inputSize, outputSize, T=0.07, momentum=0.5):
            super(LinearAverage, self).__init__()
            stdv = 1 / math.sqrt(inputSize)
            self.nLem = outputSize
            self.register_buffer('params', torch.tensor([T, momentum]))
            stdv = 1. / math.sqrt(inputSize / 3)
            self.register_buffer('memory', torch.rand(outputSize, inputSize).mul_(2 * stdv).add_(-stdv))

        def forward(self, x, y):
            out = LinearAverageOp.apply(x, y, self.memory, self.params)
            return out

    class Normalize(nn.Module):
        def __init__(self, power=2):
            super(Normalize, self).__init__()
            self.power = power

        def forward(self, x):
            norm = x.pow(self.power).sum(1, keepdim=True).pow(1. / self.power)
            out = x.div(norm)
            return out

    net = load(m, embedder(m), weights)
    l2norm = Normalize(2)
    lemniscate = LinearAverage(dim, n_data, T, momentum)
    rng = np.random.default_rng(14)
    with torch.no_grad():
        lemniscate.memory.copy_(torch.tensor(rng.uniform(-0.5, 0.5, (n_data, dim)).astype(np.float32)))
    criterion = nn.CrossEntropyLoss()
    optimizer = m.optim.SGD(net.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4)
    data, labels = face_data(m, n=n_data, seed=15)
    log = []
    for step in range(steps):
        index = torch.tensor(rng.permutation(n_data)[:6])
        features = l2norm(net(data[index] + 0.05 * step))
        outputs = lemniscate(features, index)
        loss = criterion(outputs, index)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append(loss.item())
    # weighted kNN on the memory bank (lemniscate's test.kNN)
    net.eval()
    with torch.no_grad():
        trainFeatures = lemniscate.memory.t()
        features = l2norm(net(data))
        dist = torch.mm(features, trainFeatures)
        yd, yi = dist.topk(3, dim=1, largest=True, sorted=True)
        candidates = labels.view(1, -1).expand(n_data, -1)
        retrieval = torch.gather(candidates, 1, yi)
        retrieval_one_hot = torch.zeros(n_data * 3, 5)
        retrieval_one_hot.resize_(n_data * 3, 5).zero_()
        retrieval_one_hot.scatter_(1, retrieval.view(-1, 1), 1)
        yd_transform = yd.clone().div_(0.1).exp_()
        probs = torch.sum(torch.mul(retrieval_one_hot.view(n_data, -1, 5), yd_transform.view(n_data, -1, 1)), 1)
        _, predictions = probs.sort(1, True)
    return {"log": log, "memory": lemniscate.memory, "grads": [p.grad for p in net.parameters()],
            "predictions": predictions[:, 0]}


def test_lemniscate_memory_bank():
    weights = weights_of(embedder)
    ours, _ = run_both(lemniscate, weights, rtol=1e-4, atol=1e-5)
    memory = ours["memory"]
    touched = np.abs(np.linalg.norm(memory, axis=1) - 1) < 1e-5  # rows written by backward are unit vectors
    assert touched.sum() >= 6 and not np.allclose(memory, 0)
    assert all(np.isfinite(g).all() for g in ours["grads"])


# ----------------------------------------------------------------------------------------------
# SCAN (wvangansbeke/Unsupervised-Classification): the clustering loss (bmm of softmaxes, BCELoss against
# ones, the entropy of the mean prediction) and self-labelling by confident predictions (masked_select with a
# broadcast (b, 1) mask, class balancing by unique(return_counts=True) and weights written by index)
# ----------------------------------------------------------------------------------------------


def scan(m, weights, steps=4, threshold=0.3):
    torch, nn, F = m.torch, m.nn, m.F
    EPS = 1e-8

    def entropy(x, input_as_probabilities):
        if input_as_probabilities:
            x_ = torch.clamp(x, min=EPS)
            b = x_ * torch.log(x_)
        else:
            b = F.softmax(x, dim=1) * F.log_softmax(x, dim=1)
        if len(b.size()) == 2:  # Sample-wise entropy
            return -b.sum(dim=1).mean()
        elif len(b.size()) == 1:  # Distribution-wise entropy
            return - b.sum()
        else:
            raise ValueError('Input tensor is %d-Dimensional' % (len(b.size())))

    class SCANLoss(nn.Module):
        def __init__(self, entropy_weight=2.0):
            super(SCANLoss, self).__init__()
            self.softmax = nn.Softmax(dim=1)
            self.bce = nn.BCELoss()
            self.entropy_weight = entropy_weight  # Default = 2.0

        def forward(self, anchors, neighbors):
            # Softmax
            b, n = anchors.size()
            anchors_prob = self.softmax(anchors)
            positives_prob = self.softmax(neighbors)
            # Similarity in output space
            similarity = torch.bmm(anchors_prob.view(b, 1, n), positives_prob.view(b, n, 1)).squeeze()
            ones = torch.ones_like(similarity)
            consistency_loss = self.bce(similarity, ones)
            # Entropy loss
            entropy_loss = entropy(torch.mean(anchors_prob, 0), input_as_probabilities=True)
            # Total loss
            total_loss = consistency_loss - self.entropy_weight * entropy_loss
            return total_loss, consistency_loss, entropy_loss

    class MaskedCrossEntropyLoss(nn.Module):
        def __init__(self):
            super(MaskedCrossEntropyLoss, self).__init__()

        def forward(self, input, target, mask, weight, reduction='mean'):
            if not (mask != 0).any():
                raise ValueError('Mask in MaskedCrossEntropyLoss is all zeros.')
            target = torch.masked_select(target, mask)
            b, c = input.size()
            n = target.size(0)
            input = torch.masked_select(input, mask.view(b, 1)).view(n, c)
            return F.cross_entropy(input, target, weight=weight, reduction=reduction)

    class ConfidenceBasedCE(nn.Module):
        def __init__(self, threshold, apply_class_balancing):
            super(ConfidenceBasedCE, self).__init__()
            self.loss = MaskedCrossEntropyLoss()
            self.softmax = nn.Softmax(dim=1)
            self.threshold = threshold
            self.apply_class_balancing = apply_class_balancing

        def forward(self, anchors_weak, anchors_strong):
            # Retrieve target and mask based on weakly augmentated anchors
            weak_anchors_prob = self.softmax(anchors_weak)
            max_prob, target = torch.max(weak_anchors_prob, dim=1)
            mask = max_prob > self.threshold
            b, c = weak_anchors_prob.size()
            target_masked = torch.masked_select(target, mask.squeeze())
            n = target_masked.size(0)
            # Inputs are strongly augmented anchors
            input_ = anchors_strong
            # Class balancing weights
            if self.apply_class_balancing:
                idx, counts = torch.unique(target_masked, return_counts=True)
                freq = 1 / (counts.float() / n)
                weight = torch.ones(c)
                weight[idx] = freq
            else:
                weight = None
            # Loss
            loss = self.loss(input_, target, mask, weight=weight, reduction='mean')
            return loss

    model = load(m, embedder(m), weights)
    head = nn.Linear(8, 4)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(np.random.default_rng(16).standard_normal((4, 8)).astype(np.float32)))
        head.bias.zero_()
    criterion = SCANLoss(entropy_weight=5.0)
    self_label = ConfidenceBasedCE(threshold, apply_class_balancing=True)
    optimizer = m.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-3, weight_decay=1e-4)
    log = []
    for step in range(steps):
        x, _ = face_data(m, n=10, seed=240 + step)
        neighbors = x + 0.1 * torch.cos(3 * x)
        anchors_output = head(model(x))
        neighbors_output = head(model(neighbors))
        total_loss, consistency_loss, entropy_loss = criterion(anchors_output, neighbors_output)
        with torch.no_grad():
            weak = head(model(x))
        strong = head(model(x * 0.8 + 0.1))
        sl_loss = self_label(weak, strong)
        optimizer.zero_grad()
        (total_loss + sl_loss).backward()
        optimizer.step()
        log.append((total_loss.item(), consistency_loss.item(), entropy_loss.item(), sl_loss.item()))
    return {"log": log, "grads": [p.grad for p in list(model.parameters()) + list(head.parameters())]}


def test_scan():
    weights = weights_of(embedder)
    ours, _ = run_both(scan, weights, rtol=1e-4, atol=1e-5)
    for total, consistency, ent, sl in ours["log"]:
        assert total == pytest.approx(consistency - 5.0 * ent, rel=1e-5, abs=1e-6)
        assert 0 <= ent <= math.log(4) + 1e-6 and sl > 0


# ----------------------------------------------------------------------------------------------
# SoftTriple (idstcv/SoftTriple): several centres per class from an uninitialised torch.Tensor(dim, cN*K),
# a bool mask filled by slices, margins put by index with arange, a regulariser over masked centre pairs
# ----------------------------------------------------------------------------------------------


def soft_triple(m, weights, steps=4, la=20, gamma=0.1, tau=0.2, margin=0.01, dim=8, cN=5, K=3):
    torch, nn, F = m.torch, m.nn, m.F
    from math import sqrt
    Parameter, init = nn.Parameter, nn.init

    class SoftTriple(nn.Module):
        def __init__(self, la, gamma, tau, margin, dim, cN, K):
            super(SoftTriple, self).__init__()
            self.la = la
            self.gamma = 1. / gamma
            self.tau = tau
            self.margin = margin
            self.cN = cN
            self.K = K
            self.fc = Parameter(torch.Tensor(dim, cN * K))
            self.weight = torch.zeros(cN * K, cN * K, dtype=torch.bool)
            for i in range(0, cN):
                for j in range(0, K):
                    self.weight[i * K + j, i * K + j + 1:(i + 1) * K] = 1
            init.kaiming_uniform_(self.fc, a=sqrt(5))
            return

        def forward(self, input, target):
            centers = F.normalize(self.fc, p=2, dim=0)
            simInd = input.matmul(centers)
            simStruc = simInd.reshape(-1, self.cN, self.K)
            prob = F.softmax(simStruc * self.gamma, dim=2)
            simClass = torch.sum(prob * simStruc, dim=2)
            marginM = torch.zeros(simClass.shape)
            marginM[torch.arange(0, marginM.shape[0]), target] = self.margin
            lossClassify = F.cross_entropy(self.la * (simClass - marginM), target)
            if self.tau > 0 and self.K > 1:
                simCenter = centers.t().matmul(centers)
                reg = torch.sum(torch.sqrt(2.0 + 1e-5 - 2. * simCenter[self.weight])) / (self.cN * self.K * (self.K - 1.))
                return lossClassify + self.tau * reg
            else:
                return lossClassify

    model = load(m, embedder(m), weights)
    criterion = SoftTriple(la, gamma, tau, margin, dim, cN, K)
    with torch.no_grad():
        criterion.fc.copy_(torch.tensor(np.random.default_rng(17).uniform(-0.5, 0.5, (dim, cN * K)).astype(np.float32)))
    optimizer = m.optim.Adam([{"params": model.parameters(), "lr": 1e-3}, {"params": criterion.parameters(), "lr": 1e-2}],
                             eps=0.01)
    log = []
    for step in range(steps):
        x, y = face_data(m, n=10, seed=250 + step)
        output = F.normalize(model(x), p=2, dim=1)
        loss = criterion(output, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append(loss.item())
    return {"log": log, "mask": criterion.weight, "fc": criterion.fc, "grads": [p.grad for p in model.parameters()]}


def test_soft_triple():
    weights = weights_of(embedder)
    ours, _ = run_both(soft_triple, weights, rtol=1e-4, atol=1e-5)
    assert ours["mask"].sum() == 5 * 3  # each class's three centres: three pairs above the diagonal
    assert all(loss > 0 for loss in ours["log"])


# ----------------------------------------------------------------------------------------------
# Semi-hard triplet mining, TensorFlow's triplet_semihard_loss as PyTorch ports write it: masked maxima and
# minima by products with masks (rows of tied zeros: max/min along a dim give the first), repeat/reshape/t
# tiling, squared cdist with zero distances on the diagonal
# ----------------------------------------------------------------------------------------------


def semihard(m, weights, steps=4, margin=0.5):
    torch = m.torch

    def _masked_maximum(data, mask, dim=1):
        axis_minimums = torch.min(data, dim, keepdim=True)[0]
        masked_maximums = torch.max(torch.mul(data - axis_minimums, mask), dim, keepdim=True)[0] + axis_minimums
        return masked_maximums

    def _masked_minimum(data, mask, dim=1):
        axis_maximums = torch.max(data, dim, keepdim=True)[0]
        masked_minimums = torch.min(torch.mul(data - axis_maximums, mask), dim, keepdim=True)[0] + axis_maximums
        return masked_minimums

    def triplet_semihard_loss(embeddings, labels, margin=1.0):
        labels = labels.view(-1, 1)
        pdist_matrix = torch.cdist(embeddings, embeddings).pow(2)
        adjacency = labels.eq(labels.t())
        adjacency_not = ~adjacency
        batch_size = labels.size(0)
        pdist_matrix_tile = pdist_matrix.repeat(batch_size, 1)
        mask = adjacency_not.repeat(batch_size, 1) & (pdist_matrix_tile > pdist_matrix.t().reshape(-1, 1))
        mask_final = (mask.float().sum(1, keepdim=True) > 0.0).reshape(batch_size, batch_size).t()
        negatives_outside = _masked_minimum(pdist_matrix_tile, mask.float()).reshape(batch_size, batch_size).t()
        negatives_inside = _masked_maximum(pdist_matrix, adjacency_not.float()).repeat(1, batch_size)
        semi_hard_negatives = torch.where(mask_final, negatives_outside, negatives_inside)
        loss_mat = margin + pdist_matrix - semi_hard_negatives
        mask_positives = adjacency.float() - torch.eye(batch_size)
        num_positives = mask_positives.sum()
        triplet_loss = (torch.clamp(loss_mat * mask_positives, min=0.0)).sum() / num_positives
        return triplet_loss

    model = load(m, embedder(m), weights)
    optimizer = m.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    log = []
    for step in range(steps):
        x, y = face_data(m, n=10, seed=260 + step)
        embeddings = m.F.normalize(model(x), dim=1)
        loss = triplet_semihard_loss(embeddings, y, margin)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append(loss.item())
    return {"log": log, "grads": [p.grad for p in model.parameters()]}


def test_semihard_triplet_mining():
    weights = weights_of(embedder)
    ours, _ = run_both(semihard, weights, rtol=1e-4, atol=1e-5)
    assert all(loss >= 0 for loss in ours["log"]) and any(loss > 0 for loss in ours["log"])
