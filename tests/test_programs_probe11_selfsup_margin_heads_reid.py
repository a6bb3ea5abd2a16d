# ruff: noqa: B007, E501, E701, F841, UP004, UP008  (the programs are kept as their authors wrote them)
"""Self-supervised, contrastive and metric-learning programs as their reference repositories write them, run as
tests/probe11_selfsup_common.py says. Metric learning: ArcFace/CosFace heads (arcface-pytorch) and insightface's
combined margin (acos/cos in place under no_grad); re-ID batch-hard triplet by masks and views with centre loss and
label smoothing."""

import math

import numpy as np
import pytest

from .probe11_selfsup_common import embedder, face_data
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Margin softmax heads: ArcFace and CosFace (ronghuaiyang/arcface-pytorch), insightface's combined margin
# ----------------------------------------------------------------------------------------------


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
