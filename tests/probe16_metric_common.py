"""What the files of session 16's metric-learning probe (tests/test_programs_probe16_metric_*.py, one family of
methods each) share: the small embedder and the clustered data most programs train on, the float64 runner of the
few-shot and open-reid programs, and pytorch-metric-learning's machinery written out as its sources write it
(distances with ``normalize``/``power``/``is_inverted``, the threshold reducer, ``lmu.logsumexp`` with a keep mask
over ``finfo.min``, all pairs and all triplets by ``torch.where`` of a 3-D product, the batch-hard miner's masked
``min``/``max`` over ``finfo`` fills, its losses and its cross-batch memory), which several files' programs build on.

The programs (see tests/pytorch_programs.py) follow pytorch-metric-learning's sources and papers' reference code,
each trained a few steps from the same weights on synthetic data on chainrule and on PyTorch, comparing losses,
gradients and parameters, and checked against NumPy by hand. Not already among the program tests:
test_programs_probe11_selfsup_*.py has ArcFace/CosFace heads, re-ID batch-hard with centre loss, semi-hard mining,
SupCon, multi-similarity, Proxy-Anchor, SoftTriple; probe6 has SimCLR and Moindrot's batch-hard."""

from types import SimpleNamespace

import numpy as np


def embedder(m, d_in=6, hidden=16, d_out=8):
    nn = m.nn
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


def clustered(n_classes=4, per_class=4, d=6, seed=0, spread=0.8):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, d))
    labels = np.repeat(np.arange(n_classes), per_class)
    x = centres[labels] + spread * rng.standard_normal((len(labels), d))
    return x.astype(np.float32), labels


def pml(m):
    torch, nn, F = m.torch, m.nn, m.F  # (``torch.nn.functional`` in its sources)

    def neg_inf(dtype):
        return torch.finfo(dtype).min

    def pos_inf(dtype):
        return torch.finfo(dtype).max

    def small_val(dtype):
        return torch.finfo(dtype).tiny

    def to_dtype(x, tensor=None, dtype=None):
        dt = dtype if dtype is not None else tensor.dtype
        if x.dtype != dt:
            x = x.type(dt)
        return x

    def torch_arange_from_size(input, size_dim=0):
        return torch.arange(input.size(size_dim), device=input.device)

    # -- lmu --
    def logsumexp(x, keep_mask=None, add_one=True, dim=1):
        if keep_mask is not None:
            x = x.masked_fill(~keep_mask, neg_inf(x.dtype))
        if add_one:
            zeros = torch.zeros(x.size(dim - 1), dtype=x.dtype, device=x.device).unsqueeze(dim)
            x = torch.cat([x, zeros], dim=dim)
        output = torch.logsumexp(x, dim=dim, keepdim=True)
        if keep_mask is not None:
            output = output.masked_fill(~torch.any(keep_mask, dim=dim, keepdim=True), 0)
        return output

    def get_matches_and_diffs(labels, ref_labels=None):
        if ref_labels is None:
            ref_labels = labels
        labels1 = labels.unsqueeze(1)
        labels2 = ref_labels.unsqueeze(0)
        matches = (labels1 == labels2).byte()
        diffs = matches ^ 1
        if ref_labels is labels:
            matches.fill_diagonal_(0)
        return matches, diffs

    def get_all_pairs_indices(labels, ref_labels=None):
        matches, diffs = get_matches_and_diffs(labels, ref_labels)
        a1_idx, p_idx = torch.where(matches)
        a2_idx, n_idx = torch.where(diffs)
        return a1_idx, p_idx, a2_idx, n_idx

    def convert_to_pairs(indices_tuple, labels, ref_labels=None):
        if indices_tuple is None:
            return get_all_pairs_indices(labels, ref_labels)
        elif len(indices_tuple) == 4:
            return indices_tuple
        else:
            a, p, n = indices_tuple
            return a, p, a, n

    def get_all_triplets_indices(labels, ref_labels=None):
        all_matches, all_diffs = get_matches_and_diffs(labels, ref_labels)
        triplets = all_matches.unsqueeze(2) * all_diffs.unsqueeze(1)
        return torch.where(triplets)

    def convert_to_triplets(indices_tuple, labels, ref_labels=None, t_per_anchor=100):
        if indices_tuple is None:
            return get_all_triplets_indices(labels, ref_labels)
        elif len(indices_tuple) == 3:
            return indices_tuple
        else:
            a1, p, a2, n = indices_tuple
            p_idx, n_idx = torch.where(a1.unsqueeze(1) == a2)
            return a1[p_idx], p[p_idx], n[n_idx]

    def convert_to_weights(indices_tuple, labels, dtype):
        weights = torch.zeros(labels.shape[0], device=labels.device)
        weights = to_dtype(weights, dtype=dtype)
        if (indices_tuple is None) or (all(len(x) == 0 for x in indices_tuple)):
            return weights + 1
        indices = torch.cat(indices_tuple, dim=0)
        indices, counts = torch.unique(indices, return_counts=True)
        weights[indices] = to_dtype(counts, dtype=dtype) / torch.max(counts)
        return weights

    def not_self_comparisons(a, p, s, e, curr_batch_idx, ref_size):
        curr_batch = torch.any(p.unsqueeze(1) == curr_batch_idx, dim=1)
        a_c = a[curr_batch]
        p_c = p[curr_batch]
        p_c -= s
        if e <= s:
            p_c[p_c <= e - s] += ref_size
        without_self_comparisons = curr_batch.clone()
        without_self_comparisons[torch.where(curr_batch)[0][a_c == p_c]] = False
        return without_self_comparisons | ~curr_batch

    def remove_self_comparisons(indices_tuple, curr_batch_idx, ref_size):
        s, e = curr_batch_idx[0], curr_batch_idx[-1]
        a1, p, a2, n = indices_tuple
        keep_mask = not_self_comparisons(a1, p, s, e, curr_batch_idx, ref_size)
        a1 = a1[keep_mask]
        p = p[keep_mask]
        assert len(a1) == len(p)
        return a1, p, a2, n

    # -- distances --
    class BaseDistance(nn.Module):
        def __init__(self, normalize_embeddings=True, p=2, power=1, is_inverted=False):
            super().__init__()
            self.normalize_embeddings = normalize_embeddings
            self.p = p
            self.power = power
            self.is_inverted = is_inverted

        def forward(self, query_emb, ref_emb=None):
            query_emb_normalized = self.maybe_normalize(query_emb)
            if ref_emb is None:
                ref_emb = query_emb
                ref_emb_normalized = query_emb_normalized
            else:
                ref_emb_normalized = self.maybe_normalize(ref_emb)
            mat = self.compute_mat(query_emb_normalized, ref_emb_normalized)
            if self.power != 1:
                mat = mat**self.power
            assert mat.size() == torch.Size((query_emb.size(0), ref_emb.size(0)))
            return mat

        def smallest_dist(self, *args, **kwargs):
            if self.is_inverted:
                return torch.max(*args, **kwargs)
            return torch.min(*args, **kwargs)

        def margin(self, x, y):
            if self.is_inverted:
                return y - x
            return x - y

        def normalize(self, embeddings, dim=1, **kwargs):
            return F.normalize(embeddings, p=self.p, dim=dim, **kwargs)

        def maybe_normalize(self, embeddings, dim=1, **kwargs):
            if self.normalize_embeddings:
                return self.normalize(embeddings, dim=dim, **kwargs)
            return embeddings

        def get_norm(self, embeddings, dim=1, **kwargs):
            return torch.norm(embeddings, p=self.p, dim=dim, **kwargs)

    class LpDistance(BaseDistance):
        def compute_mat(self, query_emb, ref_emb):
            return torch.cdist(query_emb, ref_emb, p=self.p)

        def pairwise_distance(self, query_emb, ref_emb):
            return F.pairwise_distance(query_emb, ref_emb, p=self.p)

    class DotProductSimilarity(BaseDistance):
        def __init__(self, **kwargs):
            super().__init__(is_inverted=True, **kwargs)

        def compute_mat(self, query_emb, ref_emb):
            return torch.matmul(query_emb, ref_emb.t())

    class CosineSimilarity(DotProductSimilarity):
        def __init__(self, **kwargs):
            super().__init__(normalize_embeddings=True, **kwargs)

    # -- reducers --
    class AvgNonZeroReducer(nn.Module):
        low = 0

        def forward(self, loss_dict, embeddings, labels):
            assert len(loss_dict) == 1
            loss_info = loss_dict[list(loss_dict.keys())[0]]
            losses, reduction_type = loss_info["losses"], loss_info["reduction_type"]
            if (not torch.is_tensor(losses)) and (losses == 0):
                return torch.sum(embeddings * 0)
            if reduction_type == "already_reduced":
                return losses
            low_condition = losses > self.low
            losses = losses[low_condition]
            if len(losses) >= 1:
                return torch.mean(losses)
            return torch.sum(embeddings * 0)

    class MeanReducer(AvgNonZeroReducer):
        def forward(self, loss_dict, embeddings, labels):
            loss_info = loss_dict[list(loss_dict.keys())[0]]
            losses = loss_info["losses"]
            if (not torch.is_tensor(losses)) and (losses == 0):
                return torch.sum(embeddings * 0)
            if losses.ndim == 0:
                return losses
            return torch.mean(losses)

    # -- losses --
    class BaseMetricLossFunction(nn.Module):
        def __init__(self, distance=None, reducer=None):
            super().__init__()
            self.distance = self.get_default_distance() if distance is None else distance
            self.reducer = self.get_default_reducer() if reducer is None else reducer

        def get_default_distance(self):
            return LpDistance(p=2)

        def get_default_reducer(self):
            return MeanReducer()

        def zero_losses(self):
            return {name: {"losses": 0, "indices": None, "reduction_type": "already_reduced"}
                    for name in self._sub_loss_names()}

        def _sub_loss_names(self):
            return ["loss"]

        def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
            loss_dict = self.compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
            total = 0
            for name, info in loss_dict.items():
                total = total + self.reducer({name: info}, embeddings, labels)
            return total

    class GenericPairLoss(BaseMetricLossFunction):
        def __init__(self, mat_based_loss, **kwargs):
            super().__init__(**kwargs)
            self.loss_method = self.mat_based_loss if mat_based_loss else self.pair_based_loss

        def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
            indices_tuple = convert_to_pairs(indices_tuple, labels, ref_labels)
            if all(len(x) <= 1 for x in indices_tuple):
                return self.zero_losses()
            mat = self.distance(embeddings, ref_emb)
            return self.loss_method(mat, indices_tuple)

        def mat_based_loss(self, mat, indices_tuple):
            a1, p, a2, n = indices_tuple
            pos_mask, neg_mask = torch.zeros_like(mat), torch.zeros_like(mat)
            pos_mask[a1, p] = 1
            neg_mask[a2, n] = 1
            return self._compute_loss(mat, pos_mask, neg_mask)

        def pair_based_loss(self, mat, indices_tuple):
            a1, p, a2, n = indices_tuple
            pos_pair, neg_pair = [], []
            if len(a1) > 0:
                pos_pair = mat[a1, p]
            if len(a2) > 0:
                neg_pair = mat[a2, n]
            return self._compute_loss(pos_pair, neg_pair, indices_tuple)

    class ContrastiveLoss(GenericPairLoss):
        def __init__(self, pos_margin=0, neg_margin=1, **kwargs):
            super().__init__(mat_based_loss=False, **kwargs)
            self.pos_margin = pos_margin
            self.neg_margin = neg_margin

        def _compute_loss(self, pos_pair_dist, neg_pair_dist, indices_tuple):
            pos_loss, neg_loss = 0, 0
            if len(pos_pair_dist) > 0:
                pos_loss = F.relu(self.distance.margin(pos_pair_dist, self.pos_margin))
            if len(neg_pair_dist) > 0:
                neg_loss = F.relu(self.distance.margin(self.neg_margin, neg_pair_dist))
            return {"pos_loss": {"losses": pos_loss, "indices": indices_tuple[:2], "reduction_type": "pos_pair"},
                    "neg_loss": {"losses": neg_loss, "indices": indices_tuple[2:], "reduction_type": "neg_pair"}}

        def get_default_reducer(self):
            return AvgNonZeroReducer()

        def _sub_loss_names(self):
            return ["pos_loss", "neg_loss"]

    class TripletMarginLoss(BaseMetricLossFunction):
        def __init__(self, margin=0.05, swap=False, smooth_loss=False, **kwargs):
            super().__init__(**kwargs)
            self.margin = margin
            self.swap = swap
            self.smooth_loss = smooth_loss

        def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
            indices_tuple = convert_to_triplets(indices_tuple, labels, ref_labels, t_per_anchor="all")
            anchor_idx, positive_idx, negative_idx = indices_tuple
            if len(anchor_idx) == 0:
                return self.zero_losses()
            mat = self.distance(embeddings, ref_emb)
            ap_dists = mat[anchor_idx, positive_idx]
            an_dists = mat[anchor_idx, negative_idx]
            if self.swap:
                pn_dists = mat[positive_idx, negative_idx]
                an_dists = self.distance.smallest_dist(an_dists, pn_dists)
            current_margins = self.distance.margin(ap_dists, an_dists)
            violation = current_margins + self.margin
            if self.smooth_loss:
                loss = F.softplus(violation)
            else:
                loss = F.relu(violation)
            return {"loss": {"losses": loss, "indices": indices_tuple, "reduction_type": "triplet"}}

        def get_default_reducer(self):
            return AvgNonZeroReducer()

    class CircleLoss(GenericPairLoss):
        def __init__(self, m=0.4, gamma=80, **kwargs):
            super().__init__(mat_based_loss=True, **kwargs)
            self.m = m
            self.gamma = gamma
            self.soft_plus = nn.Softplus(beta=1)
            self.op = 1 + self.m
            self.on = -self.m
            self.delta_p = 1 - self.m
            self.delta_n = self.m

        def _compute_loss(self, mat, pos_mask, neg_mask):
            pos_mask_bool = pos_mask.bool()
            neg_mask_bool = neg_mask.bool()
            anchor_positive = mat[pos_mask_bool]
            anchor_negative = mat[neg_mask_bool]
            new_mat = torch.zeros_like(mat)
            new_mat[pos_mask_bool] = (-self.gamma * torch.relu(self.op - anchor_positive.detach())
                                      * (anchor_positive - self.delta_p))
            new_mat[neg_mask_bool] = (self.gamma * torch.relu(anchor_negative.detach() - self.on)
                                      * (anchor_negative - self.delta_n))
            logsumexp_pos = logsumexp(new_mat, keep_mask=pos_mask_bool, add_one=False, dim=1)
            logsumexp_neg = logsumexp(new_mat, keep_mask=neg_mask_bool, add_one=False, dim=1)
            losses = self.soft_plus(logsumexp_pos + logsumexp_neg)
            zero_rows = torch.where((torch.sum(pos_mask, dim=1) == 0) | (torch.sum(neg_mask, dim=1) == 0))[0]
            final_mask = torch.ones_like(losses)
            final_mask[zero_rows] = 0
            losses = losses * final_mask
            return {"loss": {"losses": losses, "indices": torch_arange_from_size(new_mat), "reduction_type": "element"}}

        def get_default_reducer(self):
            return AvgNonZeroReducer()

        def get_default_distance(self):
            return CosineSimilarity()

    class LiftedStructureLoss(GenericPairLoss):
        def __init__(self, neg_margin=1, pos_margin=0, **kwargs):
            super().__init__(mat_based_loss=False, **kwargs)
            self.neg_margin = neg_margin
            self.pos_margin = pos_margin

        def _compute_loss(self, pos_pairs, neg_pairs, indices_tuple):
            a1, p, a2, _ = indices_tuple
            if len(a1) > 0 and len(a2) > 0:
                pos_pairs = pos_pairs.unsqueeze(1)
                dtype = pos_pairs.dtype
                n_per_p = to_dtype((a2.unsqueeze(0) == a1.unsqueeze(1)) | (a2.unsqueeze(0) == p.unsqueeze(1)),
                                   dtype=dtype)
                neg_pairs = neg_pairs * n_per_p
                keep_mask = ~(n_per_p == 0)
                remaining_pos_margin = self.distance.margin(pos_pairs, self.pos_margin)
                remaining_neg_margin = self.distance.margin(self.neg_margin, neg_pairs)
                neg_pairs_loss = logsumexp(remaining_neg_margin, keep_mask=keep_mask, add_one=False, dim=1)
                loss_per_pos_pair = neg_pairs_loss + remaining_pos_margin
                loss_per_pos_pair = torch.relu(loss_per_pos_pair) ** 2
                loss_per_pos_pair /= 2  # divide by 2 since each positive pair will be counted twice
                return {"loss": {"losses": loss_per_pos_pair, "indices": (a1, p), "reduction_type": "pos_pair"}}
            return self.zero_losses()

    class GeneralizedLiftedStructureLoss(GenericPairLoss):
        def __init__(self, neg_margin=1, pos_margin=0, **kwargs):
            super().__init__(mat_based_loss=True, **kwargs)
            self.neg_margin = neg_margin
            self.pos_margin = pos_margin

        def _compute_loss(self, mat, pos_mask, neg_mask):
            remaining_pos_margin = self.distance.margin(mat, self.pos_margin)
            remaining_neg_margin = self.distance.margin(self.neg_margin, mat)
            pos_loss = logsumexp(remaining_pos_margin, keep_mask=pos_mask.bool(), add_one=False)
            neg_loss = logsumexp(remaining_neg_margin, keep_mask=neg_mask.bool(), add_one=False)
            return {"loss": {"losses": torch.relu(pos_loss + neg_loss), "indices": torch_arange_from_size(mat),
                             "reduction_type": "element"}}

    class NTXentLoss(GenericPairLoss):
        def __init__(self, temperature=0.07, **kwargs):
            super().__init__(mat_based_loss=False, **kwargs)
            self.temperature = temperature

        def _compute_loss(self, pos_pairs, neg_pairs, indices_tuple):
            a1, p, a2, _ = indices_tuple
            if len(a1) > 0 and len(a2) > 0:
                dtype = neg_pairs.dtype
                if not self.distance.is_inverted:
                    pos_pairs = -pos_pairs
                    neg_pairs = -neg_pairs
                pos_pairs = pos_pairs.unsqueeze(1) / self.temperature
                neg_pairs = neg_pairs / self.temperature
                n_per_p = to_dtype(a2.unsqueeze(0) == a1.unsqueeze(1), dtype=dtype)
                neg_pairs = neg_pairs * n_per_p
                neg_pairs[n_per_p == 0] = neg_inf(dtype)
                max_val = torch.max(pos_pairs, torch.max(neg_pairs, dim=1, keepdim=True)[0]).detach()
                numerator = torch.exp(pos_pairs - max_val).squeeze(1)
                denominator = torch.sum(torch.exp(neg_pairs - max_val), dim=1) + numerator
                log_exp = torch.log((numerator / denominator) + small_val(dtype))
                return {"loss": {"losses": -log_exp, "indices": (a1, p), "reduction_type": "pos_pair"}}
            return self.zero_losses()

        def get_default_distance(self):
            return CosineSimilarity()

    class FastAPLoss(BaseMetricLossFunction):
        def __init__(self, num_bins=10, **kwargs):
            super().__init__(**kwargs)
            self.num_bins = int(num_bins)
            self.num_edges = self.num_bins + 1

        def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
            dtype, device = embeddings.dtype, embeddings.device
            miner_weights = convert_to_weights(indices_tuple, labels, dtype=dtype)
            N = labels.size(0)
            a1_idx, p_idx, a2_idx, n_idx = get_all_pairs_indices(labels)
            I_pos = torch.zeros(N, N, dtype=dtype, device=device)
            I_neg = torch.zeros(N, N, dtype=dtype, device=device)
            I_pos[a1_idx, p_idx] = 1
            I_neg[a2_idx, n_idx] = 1
            N_pos = torch.sum(I_pos, dim=1)
            safe_N = N_pos > 0
            if torch.sum(safe_N) == 0:
                return self.zero_losses()
            dist_mat = self.distance(embeddings)
            histogram_max = 2**self.distance.power
            histogram_delta = histogram_max / self.num_bins
            mid_points = torch.linspace(0.0, histogram_max, steps=self.num_edges, device=device,
                                        dtype=dtype).view(-1, 1, 1)
            pulse = F.relu(1 - torch.abs(dist_mat - mid_points) / histogram_delta)
            pos_hist = torch.t(torch.sum(pulse * I_pos, dim=2))
            neg_hist = torch.t(torch.sum(pulse * I_neg, dim=2))
            total_pos_hist = torch.cumsum(pos_hist, dim=1)
            total_hist = torch.cumsum(pos_hist + neg_hist, dim=1)
            h_pos_product = pos_hist * total_pos_hist
            safe_H = (h_pos_product > 0) & (total_hist > 0)
            if torch.sum(safe_H) > 0:
                FastAP = torch.zeros_like(pos_hist, device=device)
                FastAP[safe_H] = h_pos_product[safe_H] / total_hist[safe_H]
                FastAP = torch.sum(FastAP, dim=1)
                FastAP = FastAP[safe_N] / N_pos[safe_N]
                FastAP = (1 - FastAP) * miner_weights[safe_N]
                return {"loss": {"losses": FastAP, "indices": torch.where(safe_N)[0], "reduction_type": "element"}}
            return self.zero_losses()

        def get_default_distance(self):
            return LpDistance(power=2)

    def filter_pairs(*tensors):
        t = torch.stack(tensors)
        t, _ = torch.sort(t, dim=0)
        t = torch.unique(t, dim=1)
        return t.tolist()

    class HistogramLoss(BaseMetricLossFunction):
        def __init__(self, n_bins=None, delta=None, **kwargs):
            super().__init__(**kwargs)
            if delta is None and n_bins is None:
                n_bins = 100
            self.delta = delta if delta is not None else 2 / n_bins

        def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
            indices_tuple = convert_to_triplets(indices_tuple, labels, ref_labels, t_per_anchor="all")
            anchor_idx, positive_idx, negative_idx = indices_tuple
            if len(anchor_idx) == 0:
                return self.zero_losses()
            mat = self.distance(embeddings, ref_emb)
            anchor_positive_idx = filter_pairs(anchor_idx, positive_idx)
            anchor_negative_idx = filter_pairs(anchor_idx, negative_idx)
            ap_dists = mat[anchor_positive_idx]
            an_dists = mat[anchor_negative_idx]
            p_pos = self.compute_density(ap_dists)
            phi = torch.cumsum(p_pos, dim=0)
            p_neg = self.compute_density(an_dists)
            return {"loss": {"losses": torch.sum(p_neg * phi), "indices": None, "reduction_type": "already_reduced"}}

        def compute_density(self, distances):
            size = distances.size(0)
            r_star = torch.floor((distances.float() + 1) / self.delta)
            r_star = r_star.to(device=distances.device, dtype=torch.long)
            delta_ijr_a = (distances + 1 - r_star * self.delta) / self.delta
            delta_ijr_b = ((r_star + 1) * self.delta - 1 - distances) / self.delta
            delta_ijr_a = to_dtype(delta_ijr_a, tensor=distances)
            delta_ijr_b = to_dtype(delta_ijr_b, tensor=distances)
            density = torch.zeros(round(1 + 2 / self.delta))
            density = density.to(device=distances.device, dtype=distances.dtype)
            density.scatter_add_(0, r_star + 1, delta_ijr_a)
            density.scatter_add_(0, r_star, delta_ijr_b)
            return density / size

        def get_default_distance(self):
            return CosineSimilarity()

    # -- miners --
    class BatchHardMiner(nn.Module):
        def __init__(self, distance=None):
            super().__init__()
            self.distance = LpDistance() if distance is None else distance

        def forward(self, embeddings, labels, ref_emb=None, ref_labels=None):
            with torch.no_grad():
                if ref_emb is None:
                    ref_emb, ref_labels = embeddings, labels
                return self.mine(embeddings, labels, ref_emb, ref_labels)

        def mine(self, embeddings, labels, ref_emb, ref_labels):
            mat = self.distance(embeddings, ref_emb)
            a1_idx, p_idx, a2_idx, n_idx = get_all_pairs_indices(labels, ref_labels)
            a = torch.arange(mat.size(0), device=mat.device)
            hard_pos = self.get_min_per_row if self.distance.is_inverted else self.get_max_per_row
            hard_neg = self.get_max_per_row if self.distance.is_inverted else self.get_min_per_row
            (positive_dists, positive_indices), a1p_keep = hard_pos(mat, a1_idx, p_idx)
            (negative_dists, negative_indices), a2n_keep = hard_neg(mat, a2_idx, n_idx)
            a_keep_idx = torch.where(a1p_keep & a2n_keep)
            a = a[a_keep_idx]
            p = positive_indices[a_keep_idx]
            n = negative_indices[a_keep_idx]
            return a, p, n

        def get_max_per_row(self, *args, **kwargs):
            return self.get_x_per_row("max", *args, **kwargs)

        def get_min_per_row(self, *args, **kwargs):
            return self.get_x_per_row("min", *args, **kwargs)

        def get_x_per_row(self, xtype, mat, anchor_idx, other_idx):
            inf = pos_inf(mat.dtype) if xtype == "min" else neg_inf(mat.dtype)
            mask = torch.ones_like(mat) * inf
            mask[anchor_idx, other_idx] = 1
            non_inf_rows = torch.any(mask != inf, dim=1)
            mat = mat.clone()
            mat[mask == inf] = inf
            dist_fn = torch.min if xtype == "min" else torch.max
            return dist_fn(mat, dim=1), non_inf_rows

    class TripletMarginMiner(nn.Module):
        def __init__(self, margin=0.2, type_of_triplets="all", distance=None):
            super().__init__()
            self.margin = margin
            self.type_of_triplets = type_of_triplets
            self.distance = LpDistance() if distance is None else distance

        def forward(self, embeddings, labels):
            with torch.no_grad():
                anchor_idx, positive_idx, negative_idx = get_all_triplets_indices(labels)
                mat = self.distance(embeddings)
                ap_dist = mat[anchor_idx, positive_idx]
                an_dist = mat[anchor_idx, negative_idx]
                triplet_margin = ap_dist - an_dist if self.distance.is_inverted else an_dist - ap_dist
                threshold_condition = triplet_margin <= self.margin
                if self.type_of_triplets == "hard":
                    threshold_condition &= triplet_margin <= 0
                elif self.type_of_triplets == "semihard":
                    threshold_condition &= triplet_margin > 0
                return (anchor_idx[threshold_condition], positive_idx[threshold_condition],
                        negative_idx[threshold_condition])

    class CrossBatchMemory(nn.Module):
        def __init__(self, loss, embedding_size, memory_size=1024, miner=None):
            super().__init__()
            self.loss = loss
            self.miner = miner
            self.embedding_size = embedding_size
            self.memory_size = memory_size
            self.reset_queue()

        def forward(self, embeddings, labels, indices_tuple=None, enqueue_mask=None):
            if enqueue_mask is not None:
                assert len(enqueue_mask) == len(embeddings)
            else:
                assert len(embeddings) <= len(self.embedding_memory)
            device = embeddings.device
            labels = labels.to(device)
            self.embedding_memory = self.embedding_memory.to(device=device, dtype=embeddings.dtype)
            self.label_memory = self.label_memory.to(device=device, dtype=labels.dtype)
            if enqueue_mask is not None:
                emb_for_queue = embeddings[enqueue_mask]
                labels_for_queue = labels[enqueue_mask]
                embeddings = embeddings[~enqueue_mask]
                labels = labels[~enqueue_mask]
                do_remove_self_comparisons = False
            else:
                emb_for_queue = embeddings
                labels_for_queue = labels
                do_remove_self_comparisons = True
            queue_batch_size = len(emb_for_queue)
            self.add_to_memory(emb_for_queue, labels_for_queue, queue_batch_size)
            if not self.has_been_filled:
                E_mem = self.embedding_memory[: self.queue_idx]
                L_mem = self.label_memory[: self.queue_idx]
            else:
                E_mem = self.embedding_memory
                L_mem = self.label_memory
            if self.miner:
                indices_tuple = self.miner(embeddings, labels, E_mem, L_mem)
            else:
                indices_tuple = get_all_pairs_indices(labels, L_mem)
            if do_remove_self_comparisons:
                indices_tuple = remove_self_comparisons(indices_tuple, self.curr_batch_idx, self.memory_size)
            return self.loss(embeddings, labels, indices_tuple, E_mem, L_mem)

        def add_to_memory(self, embeddings, labels, batch_size):
            self.curr_batch_idx = (torch.arange(self.queue_idx, self.queue_idx + batch_size, device=labels.device)
                                   % self.memory_size)
            self.embedding_memory[self.curr_batch_idx] = embeddings.detach()
            self.label_memory[self.curr_batch_idx] = labels.detach()
            prev_queue_idx = self.queue_idx
            self.queue_idx = (self.queue_idx + batch_size) % self.memory_size
            if (not self.has_been_filled) and (self.queue_idx <= prev_queue_idx):
                self.has_been_filled = True

        def reset_queue(self):
            self.register_buffer("embedding_memory", torch.zeros(self.memory_size, self.embedding_size))
            self.register_buffer("label_memory", torch.zeros(self.memory_size).long())
            self.has_been_filled = False
            self.queue_idx = 0

    return SimpleNamespace(**{k: v for k, v in locals().items() if not k.startswith("_")})


def in_float64(program):
    """Run ``program(m, ...)`` with float64 as the default dtype (restored after). These networks put a
    convolution's bias before a BatchNorm, so its gradient is rounding noise, which Adam scales to ±lr: in
    float32 that noise (different between any two implementations) decides the update."""
    def run(m, *args, **kwargs):
        previous = m.torch.get_default_dtype()
        m.torch.set_default_dtype(m.torch.float64)
        try:
            return program(m, *args, **kwargs)
        finally:
            m.torch.set_default_dtype(previous)
    return run
