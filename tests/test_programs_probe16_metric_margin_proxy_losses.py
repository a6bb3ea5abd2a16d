# ruff: noqa: B007, E712, F841, UP008  (the programs are kept as their authors wrote them)
"""Metric-learning and retrieval programs, run as tests/probe16_metric_common.py says. Losses against classes:
large-margin softmax / SphereFace (the multiple-angle formula by tensor exponents, ``(-1) ** k``), ArcFace and
sub-centre ArcFace (``max(axis=2)``, outliers by ``bincount``), AdaCos (``median`` of target angles), CurricularFace
(a running buffer, hard examples rewritten in place); ProxyNCA / ProxyNCA++ with smoothed one-hot targets, N-pair and
angular losses, and memories across batches (pml's CrossBatchMemory written by a modular ``arange`` with
self-comparisons removed in place, XBM's ring buffer, a MoCo queue by ``index_copy_``)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from .probe16_metric_common import clustered, embedder, pml
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Margin-based softmax heads: pytorch-metric-learning's LargeMarginSoftmax / SphereFace (the multiple-angle
# formula), its ArcFace and sub-centre ArcFace (``max(axis=2)``, outliers by ``bincount``), AdaCos
# (4uiiurz1/pytorch-adacos: the scale re-estimated from a median angle) and CurricularFace (HuangYG123: a running
# buffer reassigned, hard negatives rewritten in place)
# ----------------------------------------------------------------------------------------------


def margin_heads(m, num_classes=4, embedding_size=8):
    torch, nn, F = m.torch, m.nn, m.F
    P = pml(m)

    class LargeMarginSoftmaxLoss(nn.Module):
        def __init__(self, num_classes, embedding_size, margin=4, scale=1):
            super().__init__()
            self.distance = P.CosineSimilarity()
            self.margin = margin
            self.num_classes = num_classes
            self.scale = scale
            self.init_margin()
            self.W = nn.Parameter(torch.Tensor(embedding_size, num_classes))
            nn.init.normal_(self.W)  # (its weight_init_func's default)
            self.cross_entropy = nn.CrossEntropyLoss(reduction="none")

        def init_margin(self):
            self.margin = int(self.margin)
            self.max_n = self.margin // 2
            ## For the trigonometric multiple-angle formula ##
            self.n_range = torch.tensor([n for n in range(0, self.max_n + 1)])
            self.margin_choose_n = torch.tensor([float(math.comb(self.margin, 2 * n)) for n in self.n_range])
            self.cos_powers = torch.tensor([self.margin - (2 * n) for n in self.n_range])
            self.alternating = torch.tensor([(-1) ** n for n in self.n_range])

        def get_cos_with_margin(self, cosine):
            cosine = cosine.unsqueeze(1)
            cos_powered = cosine**self.cos_powers
            sin_powered = (1 - cosine**2) ** self.n_range
            terms = self.alternating * self.margin_choose_n * cos_powered * sin_powered  # Equation 7 in the paper
            return torch.sum(terms, dim=1)

        def get_cosine(self, embeddings):
            return self.distance(embeddings, self.W.t())

        def get_angles(self, cosine_of_target_classes):
            angles = torch.acos(torch.clamp(cosine_of_target_classes, -1, 1))
            with torch.no_grad():
                self.avg_angle = np.degrees(torch.mean(angles).item())
            return angles

        def get_target_mask(self, embeddings, labels):
            batch_size = labels.size(0)
            mask = torch.zeros(batch_size, self.num_classes, dtype=embeddings.dtype, device=embeddings.device)
            mask[torch.arange(batch_size), labels] = 1
            return mask

        def modify_cosine_of_target_classes(self, cosine_of_target_classes):
            cos_with_margin = self.get_cos_with_margin(cosine_of_target_classes)
            angles = self.get_angles(cosine_of_target_classes)
            with torch.no_grad():
                k = (angles / (math.pi / self.margin)).floor()  # Equation 6
            return ((-1) ** k) * cos_with_margin - (2 * k)

        def scale_logits(self, logits, embeddings):
            embedding_norms = self.distance.get_norm(embeddings)
            weight_norms = self.distance.get_norm(self.W, dim=0)
            product_of_magnitudes = weight_norms.unsqueeze(0) * embedding_norms.unsqueeze(1)
            return logits * product_of_magnitudes * self.scale

        def cast_types(self, dtype, device):
            self.W.data = self.W.data.to(device=device, dtype=dtype)
            self.n_range = self.n_range.to(device=device, dtype=dtype)
            self.margin_choose_n = self.margin_choose_n.to(device=device, dtype=dtype)
            self.cos_powers = self.cos_powers.to(device=device, dtype=dtype)
            self.alternating = self.alternating.to(device=device, dtype=dtype)

        def forward(self, embeddings, labels):
            dtype, device = embeddings.dtype, embeddings.device
            self.cast_types(dtype, device)
            mask = self.get_target_mask(embeddings, labels)
            cosine = self.get_cosine(embeddings)
            cosine_of_target_classes = cosine[mask == 1]
            modified_cosine_of_target_classes = self.modify_cosine_of_target_classes(cosine_of_target_classes)
            diff = (modified_cosine_of_target_classes - cosine_of_target_classes).unsqueeze(1)
            logits = cosine + (mask * diff)
            logits = self.scale_logits(logits, embeddings)
            unweighted_loss = self.cross_entropy(logits, labels)
            return torch.mean(unweighted_loss)

    class SphereFaceLoss(LargeMarginSoftmaxLoss):
        def scale_logits(self, logits, embeddings):
            embedding_norms = torch.norm(embeddings, p=2, dim=1)
            return logits * embedding_norms.unsqueeze(1) * self.scale

    class ArcFaceLoss(LargeMarginSoftmaxLoss):
        def __init__(self, num_classes, embedding_size, margin=28.6, scale=64):
            super().__init__(num_classes=num_classes, embedding_size=embedding_size, margin=margin, scale=scale)

        def init_margin(self):
            self.margin = np.radians(self.margin)

        def cast_types(self, dtype, device):
            self.W.data = self.W.data.to(device=device, dtype=dtype)

        def modify_cosine_of_target_classes(self, cosine_of_target_classes):
            angles = self.get_angles(cosine_of_target_classes)
            cos_theta_plus_margin = torch.cos(angles + self.margin)
            cos_theta = torch.cos(angles)
            unscaled_logits = torch.where(angles <= np.deg2rad(180) - self.margin, cos_theta_plus_margin,
                                          cos_theta - self.margin * np.sin(self.margin))
            return unscaled_logits

        def scale_logits(self, logits, *_):
            return logits * self.scale

    class SubCenterArcFaceLoss(ArcFaceLoss):
        def __init__(self, *args, margin=28.6, scale=64, sub_centers=3, **kwargs):
            num_classes, embedding_size = kwargs["num_classes"], kwargs["embedding_size"]
            super().__init__(num_classes * sub_centers, embedding_size, margin=margin, scale=scale)
            self.sub_centers = sub_centers
            self.num_classes = num_classes

        def get_cosine(self, embeddings):
            cosine = self.distance(embeddings, self.W.t())
            cosine = cosine.view(-1, self.num_classes, self.sub_centers)
            cosine, _ = cosine.max(axis=2)
            return cosine

        def get_outliers(self, embeddings, labels, threshold=75, return_dominant_centers=True):
            dtype, device = embeddings.dtype, embeddings.device
            self.cast_types(dtype, device)
            cos_threshold = math.cos(np.radians(threshold))
            outliers = []
            dominant_centers = torch.Tensor(self.W.shape[0], self.num_classes).to(dtype=dtype, device=device)
            with torch.no_grad():
                for label in range(self.num_classes):
                    target_samples = labels == label
                    if not target_samples.any():
                        continue
                    target_indices = target_samples.nonzero()
                    target_embeddings = embeddings[target_samples]
                    sub_centers = self.W[:, label * self.sub_centers: (label + 1) * self.sub_centers]
                    distances = self.distance(target_embeddings, sub_centers.t())
                    max_sub_center_idxs = torch.argmax(distances, axis=1)
                    max_sub_center_count = torch.bincount(max_sub_center_idxs)
                    dominant_idx = torch.argmax(max_sub_center_count)
                    dominant_centers[:, label] = sub_centers[:, dominant_idx]
                    dominant_dist = distances[:, dominant_idx]
                    drop_dists = dominant_dist < cos_threshold
                    drop_idxs = target_indices[drop_dists]
                    outliers.extend(drop_idxs.detach().tolist())
            outliers = torch.tensor(outliers, device=device).flatten()
            return outliers if not return_dominant_centers else outliers, dominant_centers

    class AdaCos(nn.Module):
        def __init__(self, num_features, num_classes, m=0.50):
            super(AdaCos, self).__init__()
            self.num_features = num_features
            self.n_classes = num_classes
            self.s = math.sqrt(2) * math.log(num_classes - 1)
            self.m = m
            self.W = nn.Parameter(torch.FloatTensor(num_classes, num_features))
            nn.init.xavier_uniform_(self.W)

        def forward(self, input, label=None):
            x = F.normalize(input)
            W = F.normalize(self.W)
            logits = F.linear(x, W)
            if label is None:
                return logits
            theta = torch.acos(torch.clamp(logits, -1.0 + 1e-7, 1.0 - 1e-7))
            one_hot = torch.zeros_like(logits)
            one_hot.scatter_(1, label.view(-1, 1).long(), 1)
            with torch.no_grad():
                B_avg = torch.where(one_hot < 1, torch.exp(self.s * logits), torch.zeros_like(logits))
                B_avg = torch.sum(B_avg) / input.size(0)
                theta_med = torch.median(theta[one_hot == 1])
                self.s = torch.log(B_avg) / torch.cos(torch.min(math.pi / 4 * torch.ones_like(theta_med), theta_med))
            output = self.s * logits
            return output

    def l2_norm(input, axis=1):
        norm = torch.norm(input, 2, axis, True)
        output = torch.div(input, norm)
        return output

    class CurricularFace(nn.Module):
        def __init__(self, in_features, out_features, m=0.5, s=64.):
            super(CurricularFace, self).__init__()
            self.in_features = in_features
            self.out_features = out_features
            self.m = m
            self.s = s
            self.cos_m = math.cos(m)
            self.sin_m = math.sin(m)
            self.threshold = math.cos(math.pi - m)
            self.mm = math.sin(math.pi - m) * m
            self.kernel = nn.Parameter(torch.Tensor(in_features, out_features))
            self.register_buffer('t', torch.zeros(1))
            nn.init.normal_(self.kernel, std=0.01)

        def forward(self, embbedings, label):
            embbedings = l2_norm(embbedings, axis=1)
            kernel_norm = l2_norm(self.kernel, axis=0)
            cos_theta = torch.mm(embbedings, kernel_norm)
            cos_theta = cos_theta.clamp(-1, 1)  # for numerical stability
            with torch.no_grad():
                origin_cos = cos_theta.clone()
            target_logit = cos_theta[torch.arange(0, embbedings.size(0)), label].view(-1, 1)
            sin_theta = torch.sqrt(1.0 - torch.pow(target_logit, 2))
            cos_theta_m = target_logit * self.cos_m - sin_theta * self.sin_m  # cos(target+margin)
            mask = cos_theta > cos_theta_m
            final_target_logit = torch.where(target_logit > self.threshold, cos_theta_m, target_logit - self.mm)
            hard_example = cos_theta[mask]
            with torch.no_grad():
                self.t = target_logit.mean() * 0.01 + (1 - 0.01) * self.t
            cos_theta[mask] = hard_example * (self.t + hard_example)
            cos_theta.scatter_(1, label.view(-1, 1).long(), final_target_logit)
            output = cos_theta * self.s
            return output, origin_cos * self.s

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = embedder(m, d_out=embedding_size)
            self.large_margin = LargeMarginSoftmaxLoss(num_classes, embedding_size, margin=4, scale=1)
            self.sphereface = SphereFaceLoss(num_classes, embedding_size, margin=3, scale=0.5)
            self.arcface = ArcFaceLoss(num_classes, embedding_size, margin=28.6, scale=16)
            self.subcenter = SubCenterArcFaceLoss(num_classes=num_classes, embedding_size=embedding_size,
                                                  margin=20.0, scale=16, sub_centers=3)
            self.adacos = AdaCos(embedding_size, num_classes)
            self.curricular = CurricularFace(embedding_size, num_classes, m=0.5, s=16.0)

    return Net()


def margin_heads_training(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    net = load(m, margin_heads(m), weights)
    x_np, y_np = clustered(spread=1.2, seed=3)
    x, labels = torch.tensor(x_np), torch.tensor(y_np)
    optimizer = optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    history, scales, ts = [], [], []
    for step in range(steps):
        optimizer.zero_grad()
        emb = net.backbone(x)
        losses = [net.large_margin(emb, labels), net.sphereface(emb, labels), net.arcface(emb, labels),
                  net.subcenter(emb, labels)]
        ada_logits = net.adacos(emb, labels)
        losses.append(F.cross_entropy(ada_logits, labels))
        output, origin = net.curricular(emb, labels)
        losses.append(nn.CrossEntropyLoss()(output, labels))
        sum(losses).backward()
        optimizer.step()
        history.append([l.item() for l in losses])
        scales.append(float(net.adacos.s))
        ts.append(net.curricular.t.clone())
    outliers, dominant = net.subcenter.get_outliers(net.backbone(x).detach(), labels, threshold=40)
    return {"history": history, "adacos_s": scales, "t": ts, "t_in_buffers": dict(net.named_buffers())["curricular.t"],
            "avg_angle": net.arcface.avg_angle, "params": dict(net.named_parameters()),
            "outliers": outliers, "dominant": dominant, "origin": origin}


def test_margin_softmax_heads_of_metric_learning():
    weights = weights_of(margin_heads)
    ours, _ = run_both(margin_heads_training, weights, rtol=1e-4, atol=1e-5)
    assert ours["t"][-1] != 0 and ours["t_in_buffers"] == ours["t"][-1]  # the reassigned tensor is the buffer
    assert ours["adacos_s"][0] != pytest.approx(math.sqrt(2) * math.log(3))
    np.testing.assert_allclose(ours["dominant"].sum(0) != 0, True)


def test_large_margin_cos_of_m_theta_by_the_multiple_angle_formula():
    """Equation 7 of Liu et al. (2016): the binomial sum with tensor exponents is cos(m theta)."""
    torch = OURS.torch
    head = margin_heads(OURS).large_margin
    head.cast_types(torch.float64, "cpu")
    theta = np.linspace(0.05, 3.1, 9)
    got = head.get_cos_with_margin(torch.tensor(np.cos(theta))).numpy()
    np.testing.assert_allclose(got, np.cos(4 * theta), rtol=1e-10, atol=1e-12)
    modified = head.modify_cosine_of_target_classes(torch.tensor(np.cos(theta))).numpy()
    k = np.floor(theta / (np.pi / 4))
    np.testing.assert_allclose(modified, (-1) ** k * np.cos(4 * theta) - 2 * k, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Proxy, NCA, N-pair and angular losses (pytorch-metric-learning; ProxyNCA++ as euwern/proxynca_pp writes it),
# and memories across batches: pml's CrossBatchMemory, XBM's ring buffer (MalongTech/research-xbm) and a
# MoCo-style queue by ``index_copy_`` with a pointer buffer
# ----------------------------------------------------------------------------------------------


def proxy_and_memory_model(m, num_classes=5, embedding_size=8):
    torch, nn, F = m.torch, m.nn, m.F
    P = pml(m)

    class NCALoss(P.BaseMetricLossFunction):
        def __init__(self, softmax_scale=1, **kwargs):
            super().__init__(**kwargs)
            self.softmax_scale = softmax_scale

        def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
            if len(embeddings) <= 1:
                return self.zero_losses()
            if ref_emb is None:
                ref_emb, ref_labels = embeddings, labels
            return self.nca_computation(embeddings, ref_emb, labels, ref_labels, indices_tuple)

        def nca_computation(self, query, reference, query_labels, reference_labels, indices_tuple):
            dtype = query.dtype
            miner_weights = P.convert_to_weights(indices_tuple, query_labels, dtype=dtype)
            mat = self.distance(query, reference)
            if not self.distance.is_inverted:
                mat = -mat
            if query is reference:
                mat.fill_diagonal_(P.neg_inf(dtype))
            same_labels = P.to_dtype(query_labels.unsqueeze(1) == reference_labels.unsqueeze(0), dtype=dtype)
            exp = F.softmax(self.softmax_scale * mat, dim=1)
            exp = torch.sum(exp * same_labels, dim=1)
            non_zero = exp != 0
            loss = -torch.log(exp[non_zero]) * miner_weights[non_zero]
            return {"loss": {"losses": loss, "indices": P.torch_arange_from_size(query)[non_zero],
                             "reduction_type": "element"}}

        def get_default_distance(self):
            return P.LpDistance(power=2)

    class ProxyNCALoss(NCALoss):
        def __init__(self, num_classes, embedding_size, **kwargs):
            super().__init__(**kwargs)
            self.proxies = nn.Parameter(torch.Tensor(num_classes, embedding_size))
            nn.init.normal_(self.proxies)
            self.proxy_labels = torch.arange(num_classes)

        def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
            dtype, device = embeddings.dtype, embeddings.device
            self.proxies.data = self.proxies.data.to(device=device, dtype=dtype)
            return self.nca_computation(embeddings, self.proxies, labels, self.proxy_labels.to(labels.device),
                                        indices_tuple)

    class AngularLoss(P.BaseMetricLossFunction):
        def __init__(self, alpha=40, **kwargs):
            super().__init__(**kwargs)
            self.alpha = torch.tensor(np.radians(alpha))

        def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
            if ref_emb is None:
                ref_emb, ref_labels = embeddings, labels
            a1, p, a2, _ = P.convert_to_pairs(indices_tuple, labels, ref_labels)
            if len(a1) == 0 or len(a2) == 0:
                return self.zero_losses()
            anchors = self.distance.normalize(embeddings[a1])
            positives = self.distance.normalize(ref_emb[p])
            keep_mask = labels[a1].unsqueeze(1) != ref_labels.unsqueeze(0)
            with torch.no_grad():  # set_stats
                centers = (anchors + positives) / 2
                ap_dist = self.distance.pairwise_distance(anchors, positives)
                nc_dist = self.distance.get_norm(centers - ref_emb.unsqueeze(1), dim=2).t()
                angles = torch.atan(ap_dist.unsqueeze(1) / (2 * nc_dist))
                average_angle = torch.sum(angles[keep_mask]) / torch.sum(keep_mask)
                self.average_angle = np.degrees(average_angle.item())
            sq_tan_alpha = torch.tan(self.alpha) ** 2
            ap_dot = torch.sum(anchors * positives, dim=1, keepdim=True)
            ap_matmul_embeddings = torch.matmul((anchors + positives), (ref_emb.unsqueeze(2)))
            ap_matmul_embeddings = ap_matmul_embeddings.squeeze(2).t()
            final_form = (4 * sq_tan_alpha * ap_matmul_embeddings) - (2 * (1 + sq_tan_alpha) * ap_dot)
            losses = P.logsumexp(final_form, keep_mask=keep_mask, add_one=True)
            return {"loss": {"losses": losses, "indices": (a1, p), "reduction_type": "pos_pair"}}

    class NPairsLoss(P.BaseMetricLossFunction):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.cross_entropy = nn.CrossEntropyLoss(reduction="none")

        def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
            a, p, _, _ = P.convert_to_pairs(indices_tuple, labels)
            _, unique_idx = np.unique(labels[a].cpu().numpy(), return_index=True)
            anchor_idx, positive_idx = a[unique_idx], p[unique_idx]
            self.num_pairs = len(anchor_idx)
            if self.num_pairs == 0:
                return self.zero_losses()
            anchors, positives = embeddings[anchor_idx], embeddings[positive_idx]
            targets = torch.arange(self.num_pairs).to(embeddings.device)
            sim_mat = self.distance(anchors, positives)
            if not self.distance.is_inverted:
                sim_mat = -sim_mat
            return {"loss": {"losses": self.cross_entropy(sim_mat, targets), "indices": anchor_idx,
                             "reduction_type": "element"}}

        def get_default_distance(self):
            return P.DotProductSimilarity()

    def pairwise_distance(a, squared=False):
        """Computes the pairwise distance matrix with numerical stability."""
        pairwise_distances_squared = torch.add(
            a.pow(2).sum(dim=1, keepdim=True).expand(a.size(0), -1),
            torch.t(a).pow(2).sum(dim=0, keepdim=True).expand(a.size(0), -1)
        ) - 2 * (torch.mm(a, torch.t(a)))
        # Deal with numerical inaccuracies. Set small negatives to zero.
        pairwise_distances_squared = torch.clamp(pairwise_distances_squared, min=0.0)
        # Get the mask where the zero distances are at.
        error_mask = torch.le(pairwise_distances_squared, 0.0)
        # Optionally take the sqrt.
        if squared:
            pairwise_distances = pairwise_distances_squared
        else:
            pairwise_distances = torch.sqrt(pairwise_distances_squared + error_mask.float() * 1e-16)
        # Undo conditionally adding 1e-16.
        pairwise_distances = torch.mul(pairwise_distances, (error_mask == False).float())
        # Explicitly set diagonals to zero.
        mask_offdiagonals = 1 - torch.eye(*pairwise_distances.size(), device=pairwise_distances.device)
        pairwise_distances = torch.mul(pairwise_distances, mask_offdiagonals)
        return pairwise_distances, error_mask

    def binarize_and_smooth_labels(T, nb_classes, smoothing_const=0):
        T = T.cpu().numpy()
        T = np.eye(nb_classes, dtype=np.int64)[T]  # sklearn.preprocessing.label_binarize
        T = T * (1 - smoothing_const)
        T[T == 0] = smoothing_const / (nb_classes - 1)
        T = torch.FloatTensor(T)
        return T

    class ProxyNCA_prob(nn.Module):
        def __init__(self, nb_classes, sz_embed, scale, smoothing_const=0.0):
            nn.Module.__init__(self)
            self.proxies = nn.Parameter(torch.randn(nb_classes, sz_embed) / 8)
            self.scale = scale
            self.smoothing_const = smoothing_const

        def forward(self, X, T):
            P_ = self.proxies
            P_ = self.scale * F.normalize(P_, p=2, dim=-1)
            X = self.scale * F.normalize(X, p=2, dim=-1)
            D = pairwise_distance(torch.cat([X, P_]), squared=True)[0][:X.size()[0], X.size()[0]:]
            T = binarize_and_smooth_labels(T=T, nb_classes=len(P_), smoothing_const=self.smoothing_const)
            loss = torch.sum(- T * F.log_softmax(-D, -1), -1)
            loss = loss.mean()
            return loss

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = embedder(m, d_out=embedding_size)
            self.nca = NCALoss(softmax_scale=2)
            self.proxy_nca = ProxyNCALoss(num_classes, embedding_size, softmax_scale=1)
            self.proxy_nca_pp = ProxyNCA_prob(num_classes, embedding_size, scale=3)
            self.proxy_nca_smooth = ProxyNCA_prob(num_classes, embedding_size, scale=3, smoothing_const=0.1)
            self.angular = AngularLoss(alpha=40)
            self.npairs = NPairsLoss()
            self.register_buffer("queue", F.normalize(torch.randn(embedding_size, 12), dim=0))
            self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    return SimpleNamespace(Net=Net, P=P)


def proxies_and_memories(m, weights, steps=5, batch=8):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    ns = proxy_and_memory_model(m)
    P = ns.P
    net = load(m, ns.Net(), weights)
    x_np, y_np = clustered(n_classes=5, per_class=8, spread=1.0, seed=11)
    order = np.random.default_rng(1).permutation(len(y_np))
    x_all, y_all = torch.tensor(x_np[order]), torch.tensor(y_np[order])
    xbm_memory = P.CrossBatchMemory(P.ContrastiveLoss(pos_margin=0.1, neg_margin=1.2), 8, memory_size=20)
    xbm_memory_miner = P.CrossBatchMemory(P.TripletMarginLoss(margin=0.3), 8, memory_size=20,
                                          miner=lambda e, l, E, L: P.get_all_pairs_indices(l, L))

    class XBM:
        def __init__(self, size, dim):
            self.K = size
            self.feats = torch.zeros(self.K, dim)
            self.targets = torch.zeros(self.K, dtype=torch.long)
            self.ptr = 0

        @property
        def is_full(self):
            return self.targets[-1].item() != 0

        def get(self):
            if self.is_full:
                return self.feats, self.targets
            else:
                return self.feats[:self.ptr], self.targets[:self.ptr]

        def enqueue_dequeue(self, feats, targets):
            q_size = len(targets)
            if self.ptr + q_size > self.K:
                self.feats[-q_size:] = feats
                self.targets[-q_size:] = targets
                self.ptr = 0
            else:
                self.feats[self.ptr: self.ptr + q_size] = feats
                self.targets[self.ptr: self.ptr + q_size] = targets
                self.ptr += q_size

    def xbm_contrastive(inputs_col, targets_col, inputs_row, target_row, margin=0.5):
        n = inputs_col.size(0)
        sim_mat = torch.matmul(inputs_col, inputs_row.t())
        epsilon = 1e-5
        loss = list()
        neg_count = list()
        for i in range(n):
            pos_pair_ = torch.masked_select(sim_mat[i], targets_col[i] == target_row)
            pos_pair_ = torch.masked_select(pos_pair_, pos_pair_ < 1 - epsilon)
            neg_pair_ = torch.masked_select(sim_mat[i], targets_col[i] != target_row)
            neg_pair = torch.masked_select(neg_pair_, neg_pair_ > margin)
            pos_loss = torch.sum(-pos_pair_ + 1)
            if len(neg_pair) > 0:
                neg_loss = torch.sum(neg_pair)
                neg_count.append(len(neg_pair))
            else:
                neg_loss = 0
            loss.append(pos_loss + neg_loss)
        loss = sum(loss) / n
        return loss

    @torch.no_grad()
    def _dequeue_and_enqueue(keys):
        batch_size = keys.shape[0]
        ptr = int(net.queue_ptr)
        K = net.queue.shape[1]
        idx = torch.arange(ptr, ptr + batch_size) % K
        net.queue.index_copy_(1, idx, keys.T)
        net.queue_ptr[0] = (ptr + batch_size) % K

    xbm = XBM(16, 8)
    optimizer = optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.05)
    history = []
    for step in range(steps):
        s = (step * batch) % len(y_all)
        x, labels = x_all[s:s + batch], y_all[s:s + batch]
        optimizer.zero_grad()
        emb = net.backbone(x)
        feats = F.normalize(emb, dim=1)
        losses = {
            "nca": net.nca(emb, labels), "proxy_nca": net.proxy_nca(emb, labels),
            "proxy_nca_pp": net.proxy_nca_pp(emb, labels), "proxy_nca_smooth": net.proxy_nca_smooth(emb, labels),
            "angular": net.angular(emb, labels), "npairs": net.npairs(emb, labels),
            "cbm_contrastive": xbm_memory(emb, labels), "cbm_triplet": xbm_memory_miner(emb, labels),
        }
        xbm.enqueue_dequeue(feats.detach(), labels.detach() + 1)  # + 1: a zero target marks an empty slot
        xbm_feats, xbm_targets = xbm.get()
        losses["xbm"] = xbm_contrastive(feats, labels + 1, xbm_feats, xbm_targets)
        l_neg = torch.einsum("nc,ck->nk", [feats, net.queue.clone().detach()])
        losses["queue_logsumexp"] = torch.logsumexp(l_neg / 0.2, dim=1).mean()
        sum(losses.values()).backward()
        optimizer.step()
        _dequeue_and_enqueue(feats.detach())
        history.append({k: float(v.detach()) if torch.is_tensor(v) else v for k, v in losses.items()})
    return {"history": history, "params": dict(net.named_parameters()), "buffers": dict(net.named_buffers()),
            "cbm": [xbm_memory.embedding_memory, xbm_memory.label_memory, xbm_memory.queue_idx,
                    xbm_memory.has_been_filled], "xbm": [xbm.feats, xbm.targets, xbm.ptr],
            "angle": net.angular.average_angle}


def test_proxy_losses_and_cross_batch_memories():
    weights = weights_of(lambda m: proxy_and_memory_model(m).Net())
    ours, _ = run_both(proxies_and_memories, weights, rtol=1e-4, atol=1e-5)
    assert ours["cbm"][3] is True and ours["cbm"][2] == (5 * 8) % 20  # wrapped around
    assert ours["buffers"]["queue_ptr"][0] == (5 * 8) % 12
    queue = ours["buffers"]["queue"]
    np.testing.assert_allclose(np.linalg.norm(queue, axis=0), 1, rtol=1e-5)  # every slot rewritten with unit keys
    assert (ours["xbm"][1] != 0).all() and ours["xbm"][2] == 16  # 8, 16, wrapped to 0, 8, 16
    for record in ours["history"]:
        assert all(np.isfinite(v) for v in record.values()) and record["cbm_contrastive"] > 0
