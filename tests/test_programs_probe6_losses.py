# ruff: noqa: B007, B023, E741, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""Losses from self-supervised, metric and distillation papers' reference code (see
tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights, comparing losses,
gradients and parameters.

Not already among the program tests: SimCLR's ``info_nce_loss`` as sthalles/SimCLR writes it (labels by
``==`` of two broadcast aranges, ``~mask`` boolean indexing then ``view``, positives by
``similarity_matrix[labels.bool()]``) and as the Lightning tutorial does (``masked_fill_`` of the
diagonal, ``roll`` of the mask to find the positives, ranking accuracy by ``argsort().argmin()``), and
Khosla's SupCon loss (``torch.unbind``, ``mask.repeat``, a ``torch.scatter`` logits mask, max-subtracted
logits); PyTorch's knowledge-distillation tutorial (soft targets written out, a cosine loss on pooled
hidden features by ``F.avg_pool1d`` and ``CosineEmbeddingLoss``); batch-hard triplet mining
(``distances[distances < 0] = 0`` on the graph, a sqrt guarded by an ``eq(0)`` mask); a categorical VAE with
Gumbel-softmax written out (straight-through by ``scatter_`` and ``(y_hard - y).detach() + y``) and the
properties of ``F.gumbel_softmax(hard=True)``; and pytorch-revgrad's gradient reversal, a Function whose
forward returns its input as it is."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of


def encoder(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 5))


def views(m, n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    a = x + 0.1 * rng.standard_normal(x.shape).astype(np.float32)
    b = x * (rng.random(x.shape) > 0.2).astype(np.float32)
    return m.torch.tensor(a), m.torch.tensor(b), m.torch.tensor(rng.integers(0, 3, n))


# ----------------------------------------------------------------------------------------------
# Contrastive losses: SimCLR two ways, SupCon
# ----------------------------------------------------------------------------------------------


def contrastive(m, weights, steps=4, temperature=0.5):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, encoder(m), weights)
    batch_size, n_views = 8, 2

    def info_nce_loss(features):
        labels = torch.cat([torch.arange(batch_size) for i in range(n_views)], dim=0)
        labels = (labels.unsqueeze(0) == labels.unsqueeze(1)).float()
        features = F.normalize(features, dim=1)
        similarity_matrix = torch.matmul(features, features.T)
        # discard the main diagonal from both: labels and similarities matrix
        mask = torch.eye(labels.shape[0], dtype=torch.bool)
        labels = labels[~mask].view(labels.shape[0], -1)
        similarity_matrix = similarity_matrix[~mask].view(similarity_matrix.shape[0], -1)
        # select and combine multiple positives
        positives = similarity_matrix[labels.bool()].view(labels.shape[0], -1)
        # select only the negatives the negatives
        negatives = similarity_matrix[~labels.bool()].view(similarity_matrix.shape[0], -1)
        logits = torch.cat([positives, negatives], dim=1)
        labels = torch.zeros(logits.shape[0], dtype=torch.long)
        logits = logits / temperature
        return logits, labels

    def lightning_nce(feats):
        cos_sim = F.cosine_similarity(feats[:, None, :], feats[None, :, :], dim=-1)
        self_mask = torch.eye(cos_sim.shape[0], dtype=torch.bool, device=cos_sim.device)
        cos_sim.masked_fill_(self_mask, -9e15)
        pos_mask = self_mask.roll(shifts=cos_sim.shape[0] // 2, dims=0)
        cos_sim = cos_sim / temperature
        nll = -cos_sim[pos_mask] + torch.logsumexp(cos_sim, dim=-1)
        nll = nll.mean()
        comb_sim = torch.cat([cos_sim[pos_mask][:, None], cos_sim.masked_fill(pos_mask, -9e15)], dim=-1)
        sim_argsort = comb_sim.argsort(dim=-1, descending=True).argmin(dim=-1)
        return nll, (sim_argsort == 0).float().mean(), (sim_argsort < 5).float().mean(), 1 + sim_argsort.float().mean()

    def supcon(features, labels=None, base_temperature=0.07, temperature=0.07):
        batch_size = features.shape[0]
        if labels is None:
            mask = torch.eye(batch_size, dtype=torch.float32)
        else:
            labels = labels.contiguous().view(-1, 1)
            if labels.shape[0] != batch_size:
                raise ValueError('Num of labels does not match num of features')
            mask = torch.eq(labels, labels.T).float()
        contrast_count = features.shape[1]
        contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
        anchor_feature = contrast_feature
        anchor_count = contrast_count
        anchor_dot_contrast = torch.div(torch.matmul(anchor_feature, contrast_feature.T), temperature)
        # for numerical stability
        logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
        logits = anchor_dot_contrast - logits_max.detach()
        mask = mask.repeat(anchor_count, contrast_count)
        logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(batch_size * anchor_count).view(-1, 1), 0)
        mask = mask * logits_mask
        exp_logits = torch.exp(logits) * logits_mask
        log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
        mask_pos_pairs = mask.sum(1)
        mask_pos_pairs = torch.where(mask_pos_pairs < 1e-6, 1, mask_pos_pairs)
        mean_log_prob_pos = (mask * log_prob).sum(1) / mask_pos_pairs
        loss = - (temperature / base_temperature) * mean_log_prob_pos
        loss = loss.view(anchor_count, batch_size).mean()
        return loss

    criterion = nn.CrossEntropyLoss()
    optimizer = m.optim.Adam(model.parameters(), lr=3e-3)
    log = []
    for step in range(steps):
        a, b, y = views(m, seed=step)
        features = model(torch.cat([a, b], dim=0))
        logits, labels = info_nce_loss(features)
        loss = criterion(logits, labels)
        nll, top1, top5, mean_pos = lightning_nce(features)
        f = F.normalize(features, dim=1)
        sup = supcon(torch.stack([f[:batch_size], f[batch_size:]], dim=1), y)
        simclr_as_supcon = supcon(torch.stack([f[:batch_size], f[batch_size:]], dim=1), temperature=temperature,
                                  base_temperature=temperature)
        optimizer.zero_grad()
        (loss + sup).backward()
        optimizer.step()
        log.append((loss.item(), nll.item(), sup.item(), simclr_as_supcon.item(), top1.item(), top5.item(),
                    mean_pos.item()))
    return log, [p.detach() for p in model.parameters()], logits.shape


def test_simclr_and_supcon_losses():
    weights = weights_of(encoder)
    ours, _ = run_both(contrastive, weights, rtol=1e-4, atol=1e-5)
    log, params, shape = ours
    assert tuple(shape) == (16, 15)
    for loss, nll, sup, simclr, top1, top5, mean_pos in log:
        assert np.isclose(loss, nll, rtol=1e-5) and np.isclose(loss, simclr, rtol=1e-5)  # one loss, three spellings
        assert 0 <= top1 <= top5 <= 1 and 1 <= mean_pos <= 16
    assert log[-1][0] < log[0][0]


# ----------------------------------------------------------------------------------------------
# PyTorch's knowledge-distillation tutorial: soft targets, and a cosine loss on hidden features
# ----------------------------------------------------------------------------------------------


def kd_nets(m):
    nn = m.nn

    class Net(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.features = nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
            self.classifier = nn.Linear(width, 3)

        def forward(self, x):
            hidden = self.features(x)
            return self.classifier(hidden), hidden

    return nn.ModuleDict({"teacher": Net(16), "student": Net(8)})


def distillation(m, weights, epochs=3, T=2, soft_target_loss_weight=0.25, ce_loss_weight=0.75):
    torch, nn, F = m.torch, m.nn, m.F
    nets = load(m, kd_nets(m), weights)
    teacher, student = nets["teacher"], nets["student"]
    ce_loss = nn.CrossEntropyLoss()
    cosine_loss = nn.CosineEmbeddingLoss()
    optimizer = m.optim.Adam(student.parameters(), lr=1e-2)
    teacher.eval()
    student.train()
    log = []
    for epoch in range(epochs):
        for step in range(3):
            inputs, _, labels = views(m, n=12, seed=10 + step)
            optimizer.zero_grad()
            with torch.no_grad():
                teacher_logits, teacher_hidden = teacher(inputs)
            student_logits, student_hidden = student(inputs)
            soft_targets = nn.functional.softmax(teacher_logits / T, dim=-1)
            soft_prob = nn.functional.log_softmax(student_logits / T, dim=-1)
            soft_targets_loss = (torch.sum(soft_targets * (soft_targets.log() - soft_prob)) / soft_prob.size()[0]
                                 * (T ** 2))
            kl = F.kl_div(soft_prob, soft_targets, reduction="batchmean") * T * T
            # the teacher's hidden features pooled to the student's width
            teacher_pooled = F.avg_pool1d(teacher_hidden.unsqueeze(1), 2).squeeze(1)
            hidden_rep_loss = cosine_loss(student_hidden, teacher_pooled, target=torch.ones(inputs.size(0)))
            label_loss = ce_loss(student_logits, labels)
            loss = soft_target_loss_weight * soft_targets_loss + ce_loss_weight * label_loss + 0.5 * hidden_rep_loss
            loss.backward()
            optimizer.step()
            log.append((soft_targets_loss.item(), kl.item(), hidden_rep_loss.item(), loss.item()))
    return log, [p.detach() for p in student.parameters()], [p.grad for p in teacher.parameters()]


def test_distillation_tutorial_soft_targets_and_cosine_loss():
    weights = weights_of(kd_nets)
    ours, _ = run_both(distillation, weights, rtol=1e-4, atol=1e-5)
    log, params, teacher_grads = ours
    assert all(g is None for g in teacher_grads)  # the teacher ran under no_grad
    for soft, kl, hidden, loss in log:
        assert np.isclose(soft, kl, rtol=1e-5, atol=1e-7)
    assert log[-1][2] < log[0][2]


# ----------------------------------------------------------------------------------------------
# Batch-hard triplet mining
# ----------------------------------------------------------------------------------------------


def triplet_mining(m, weights, steps=4, margin=0.5):
    torch, F = m.torch, m.F
    model = load(m, encoder(m), weights)

    def _pairwise_distances(embeddings, squared=False):
        dot_product = torch.matmul(embeddings, embeddings.t())
        square_norm = torch.diag(dot_product)
        distances = square_norm.unsqueeze(0) - 2.0 * dot_product + square_norm.unsqueeze(1)
        distances[distances < 0] = 0
        if not squared:
            mask = distances.eq(0).float()
            distances = distances + mask * 1e-16
            distances = (1.0 - mask) * torch.sqrt(distances)
        return distances

    def _get_anchor_positive_triplet_mask(labels):
        indices_equal = torch.eye(labels.size(0)).bool()
        indices_not_equal = ~indices_equal
        labels_equal = labels.unsqueeze(0) == labels.unsqueeze(1)
        return labels_equal & indices_not_equal

    def _get_anchor_negative_triplet_mask(labels):
        return ~(labels.unsqueeze(0) == labels.unsqueeze(1))

    def batch_hard_triplet_loss(labels, embeddings, margin, squared=False):
        pairwise_dist = _pairwise_distances(embeddings, squared=squared)
        mask_anchor_positive = _get_anchor_positive_triplet_mask(labels).float()
        anchor_positive_dist = mask_anchor_positive * pairwise_dist
        hardest_positive_dist, _ = anchor_positive_dist.max(1, keepdim=True)
        mask_anchor_negative = _get_anchor_negative_triplet_mask(labels).float()
        max_anchor_negative_dist, _ = pairwise_dist.max(1, keepdim=True)
        anchor_negative_dist = pairwise_dist + max_anchor_negative_dist * (1.0 - mask_anchor_negative)
        hardest_negative_dist, _ = anchor_negative_dist.min(1, keepdim=True)
        tl = hardest_positive_dist - hardest_negative_dist + margin
        tl = F.relu(tl)
        triplet_loss = tl.mean()
        return triplet_loss

    optimizer = m.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    log = []
    for step in range(steps):
        a, b, y = views(m, n=10, seed=20 + step)
        embeddings = model(torch.cat([a, a[:2]]))  # two repeated rows: distances of exactly zero
        labels = torch.cat([y, y[:2]])
        loss = batch_hard_triplet_loss(labels, embeddings, margin)
        squared = batch_hard_triplet_loss(labels, embeddings, margin, squared=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append((loss.item(), squared.item()))
    dist = _pairwise_distances(embeddings.detach())
    return log, [p.grad for p in model.parameters()], dist, torch.cdist(embeddings.detach(), embeddings.detach())


def test_batch_hard_triplet_mining():
    weights = weights_of(encoder)
    ours, _ = run_both(triplet_mining, weights, rtol=1e-4, atol=1e-5)
    log, grads, dist, cdist = ours
    assert all(np.isfinite(g).all() for g in grads)  # the sqrt at the zero distances is guarded
    np.testing.assert_allclose(dist, cdist, atol=1e-3)
    assert dist[0, 10] == 0 and dist[1, 11] == 0


# ----------------------------------------------------------------------------------------------
# Gumbel-softmax: a categorical VAE, and F.gumbel_softmax's straight-through estimator
# ----------------------------------------------------------------------------------------------

LATENT_DIM, CATEGORICAL_DIM = 3, 4


def cat_vae(m):
    nn = m.nn

    class VAE_gumbel(nn.Module):
        def __init__(self):
            super(VAE_gumbel, self).__init__()
            self.fc1 = nn.Linear(12, 16)
            self.fc3 = nn.Linear(16, LATENT_DIM * CATEGORICAL_DIM)
            self.fc4 = nn.Linear(LATENT_DIM * CATEGORICAL_DIM, 16)
            self.fc6 = nn.Linear(16, 12)
            self.relu = nn.ReLU()
            self.sigmoid = nn.Sigmoid()

        def encode(self, x):
            return self.fc3(self.relu(self.fc1(x)))

        def decode(self, z):
            return self.sigmoid(self.fc6(self.relu(self.fc4(z))))

    return VAE_gumbel()


def gumbel_vae(m, weights, epochs=2, hard=True, temp=1.0, ANNEAL_RATE=0.03, temp_min=0.5):
    torch, F = m.torch, m.F
    model = load(m, cat_vae(m), weights)
    rng = np.random.default_rng(8)
    data = (rng.random((24, 12)) > 0.5).astype(np.float32)
    uniforms = iter(rng.random((epochs * 3, 8, LATENT_DIM, CATEGORICAL_DIM)).astype(np.float32))

    def sample_gumbel(shape, eps=1e-20):
        U = torch.tensor(next(uniforms))  # torch.rand(shape) in the original
        return -torch.log(-torch.log(U + eps) + eps)

    def gumbel_softmax_sample(logits, temperature):
        y = logits + sample_gumbel(logits.size())
        return F.softmax(y / temperature, dim=-1)

    def gumbel_softmax(logits, temperature, hard=False):
        y = gumbel_softmax_sample(logits, temperature)
        if not hard:
            return y.view(-1, LATENT_DIM * CATEGORICAL_DIM)
        shape = y.size()
        _, ind = y.max(dim=-1)
        y_hard = torch.zeros_like(y).view(-1, shape[-1])
        y_hard.scatter_(1, ind.view(-1, 1), 1)
        y_hard = y_hard.view(*shape)
        y_hard = (y_hard - y).detach() + y
        return y_hard.view(-1, LATENT_DIM * CATEGORICAL_DIM)

    def loss_function(recon_x, x, qy):
        BCE = F.binary_cross_entropy(recon_x, x.view(-1, 12), reduction='sum') / x.shape[0]
        log_ratio = torch.log(qy * CATEGORICAL_DIM + 1e-20)
        KLD = torch.sum(qy * log_ratio, dim=-1).mean()
        return BCE + KLD

    optimizer = m.optim.Adam(model.parameters(), lr=1e-2)
    log = []
    for epoch in range(1, epochs + 1):
        model.train()
        for batch_idx in range(3):
            x = torch.tensor(data[8 * batch_idx:8 * (batch_idx + 1)])
            optimizer.zero_grad()
            q = model.encode(x.view(-1, 12))
            q_y = q.view(q.size(0), LATENT_DIM, CATEGORICAL_DIM)
            z = gumbel_softmax(q_y, temp, hard)
            recon_batch = model.decode(z)
            qy = F.softmax(q_y, dim=-1).reshape(*q.size())
            loss = loss_function(recon_batch, x, qy)
            loss.backward()
            optimizer.step()
            if batch_idx % 2 == 1:
                temp = np.maximum(temp * np.exp(-ANNEAL_RATE * batch_idx), temp_min)
            log.append((loss.item(), float(temp), z.detach()))
    return log, [p.detach() for p in model.parameters()]


def test_categorical_vae_with_straight_through_gumbel_softmax():
    weights = weights_of(cat_vae)
    for hard in (True, False):
        (log, params), _ = run_both(gumbel_vae, weights, hard=hard, rtol=1e-4, atol=1e-5)
        z = log[0][2].reshape(8, LATENT_DIM, CATEGORICAL_DIM)
        np.testing.assert_allclose(z.sum(-1), 1.0, rtol=1e-6)
        if hard:
            assert set(np.unique(z)) <= {0.0, 1.0}
        assert log[-1][1] < 1.0


def gumbel_straight_through(m, seed=0):
    """F.gumbel_softmax(hard=True): a one-hot forward, and the soft sample's gradient backward (the same
    noise drawn again by reseeding)."""
    torch, F = m.torch, m.F
    logits = torch.tensor(np.random.default_rng(1).standard_normal((6, 5)), requires_grad=True)
    w = torch.tensor(np.random.default_rng(2).standard_normal((6, 5)))
    torch.manual_seed(seed)
    hard = F.gumbel_softmax(logits, tau=0.7, hard=True)
    g_hard, = torch.autograd.grad((hard * w).sum(), logits)
    torch.manual_seed(seed)
    soft = F.gumbel_softmax(logits, tau=0.7, hard=False)
    g_soft, = torch.autograd.grad((soft * w).sum(), logits)
    torch.manual_seed(seed)
    other_dim = F.gumbel_softmax(logits, tau=0.7, hard=True, dim=0)
    return {"one_hot": bool(((hard == 0) | (hard == 1)).all()) and bool((hard.sum(-1) == 1).all()),
            "argmax": bool((hard.argmax(-1) == soft.argmax(-1)).all()),
            "grads": bool(torch.allclose(g_hard, g_soft)), "dtype": str(hard.dtype).split(".")[-1],
            "dim0": bool((other_dim.sum(0) == 1).all()),
            "soft_sums": bool(torch.allclose(soft.sum(-1), torch.ones(6, dtype=soft.dtype)))}


def test_gumbel_softmax_hard_is_straight_through():
    ours, theirs = run_both(gumbel_straight_through)  # each library's own noise: the properties compared
    assert ours == {"one_hot": True, "argmax": True, "grads": True, "dtype": "float64", "dim0": True,
                    "soft_sums": True}


# ----------------------------------------------------------------------------------------------
# pytorch-revgrad: a gradient-reversal Function whose forward returns its input unchanged
# ----------------------------------------------------------------------------------------------


def revgrad_model(m, RevGradModule=None):
    nn = m.nn
    reverse = RevGradModule(0.5) if RevGradModule is not None else nn.Identity()  # (no parameters)
    return nn.Sequential(encoder(m), nn.Sequential(reverse, nn.Linear(5, 1)))


def revgrad_program(m, weights, steps=3):
    torch, nn, F = m.torch, m.nn, m.F
    Function = torch.autograd.Function

    class RevGrad(Function):
        @staticmethod
        def forward(ctx, input_, alpha_):
            ctx.save_for_backward(input_, alpha_)
            output = input_
            return output

        @staticmethod
        def backward(ctx, grad_output):  # pragma: no cover
            grad_input = None
            _, alpha_ = ctx.saved_tensors
            if ctx.needs_input_grad[0]:
                grad_input = -grad_output * alpha_
            return grad_input, None

    revgrad = RevGrad.apply

    class RevGradModule(nn.Module):
        def __init__(self, alpha=1., *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._alpha = torch.tensor(alpha, requires_grad=False)

        def forward(self, input_):
            return revgrad(input_, self._alpha)

    model = load(m, revgrad_model(m, RevGradModule), weights)
    net, head = model[0], model[1]
    optimizer = m.optim.SGD(list(net.parameters()) + list(head.parameters()), lr=0.05)
    log = []
    for step in range(steps):
        a, b, y = views(m, seed=30 + step)
        features = net(a)
        reversed_ = head[0](features)
        out = head[1](reversed_).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(out, (y > 0).float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append(loss.item())
    x = torch.ones(3, requires_grad=True)
    y = revgrad(x, torch.tensor(2.0))
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    # a leaf that does not require grad, returned as it is
    c = torch.ones(2)
    d = revgrad(c, torch.tensor(1.0))
    return {"log": log, "x_grad": x.grad, "same_values": bool((y == x).all()), "y_is_x": y is x,
            "y_leaf": y.is_leaf, "y_requires_grad": y.requires_grad, "d_requires_grad": d.requires_grad,
            "grads": [p.grad for p in head.parameters()]}


def test_gradient_reversal_function_returning_its_input():
    weights = weights_of(revgrad_model)
    ours, _ = run_both(revgrad_program, weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["x_grad"], [-2.0, -4.0, -6.0])
    assert ours["same_values"] and not ours["y_is_x"] and not ours["y_leaf"] and ours["y_requires_grad"]
    assert not ours["d_requires_grad"]
