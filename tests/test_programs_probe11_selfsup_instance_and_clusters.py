# ruff: noqa: E501, F841, UP008, UP031  (the programs are kept as their authors wrote them)
"""Self-supervised, contrastive and metric-learning programs as their reference repositories write them, run as
tests/probe11_selfsup_common.py says. Instances, queues and clusters: CLIP's loss with a clamped logit scale, NNCLR's
support queue, lemniscate's memory bank (a Function whose backward edits its gradient and a saved buffer in place),
MSN (``log(p ** -t)``, me-max) and SCAN (masked_select with a broadcast mask, class weights by unique counts)."""

import math

import numpy as np
import pytest

from .probe11_selfsup_common import embedder, face_data, images
from .pytorch_programs import load, run_both, weights_of

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
