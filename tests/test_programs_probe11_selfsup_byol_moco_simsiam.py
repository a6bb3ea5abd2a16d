# ruff: noqa: E721, F841, UP008, UP039  (the programs are kept as their authors wrote them)
"""Self-supervised, contrastive and metric-learning programs as their reference repositories write them, run as
tests/probe11_selfsup_common.py says. Self-supervised with a momentum or stop-gradient branch: BYOL as
lucidrains/byol-pytorch writes it (a forward hook on the penultimate child, a projector made lazily and moved by
``Module.to(tensor)``, a target by ``copy.deepcopy`` registered by ``setattr`` over ``None``), its moving average
three ways (``.data`` reassignment, ``torch._foreach_lerp_`` on state dicts as timm's ModelEmaV3,
``_foreach_mul_``/``_foreach_add_``); MoCo v2 (a queue buffer written by slice, ``einsum('nc,ck->nk')``, shuffle-BN
by a permutation and its ``argsort``, top-k accuracy) and MoCo v3's loss; SimSiam (a frozen bias, a fixed-lr group)."""

import copy
import math
from functools import wraps

import numpy as np
import pytest

from .probe11_selfsup_common import backbone, images
from .pytorch_programs import load, run_both, weights_of


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
