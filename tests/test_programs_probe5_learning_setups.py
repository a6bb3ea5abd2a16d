# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs (see tests/pytorch_programs.py), each run unchanged but for its imports on chainrule and on
PyTorch from the same weights, comparing losses, parameters and gradients. Learning from few examples, pairs and
domains: prototypical networks (an episode's class prototypes, squared Euclidean ``cdist``); a siamese net with
contrastive, triplet and cosine-embedding losses; MAML by ``torch.func.functional_call`` on a BatchNorm CNN (fast
weights as a dict, second and first order); domain-adversarial training (DANN) through a gradient reversal
``autograd.Function``."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Prototypical networks (Snell et al.): an episode's class prototypes, squared Euclidean cdist
# ----------------------------------------------------------------------------------------------


def protonet_net(m):
    nn = m.nn

    def conv_block(in_channels, out_channels):
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels),
                             nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(conv_block(1, 4), conv_block(4, 4), nn.Flatten())


def protonet(m, weights, episodes=3, n_way=3, n_support=2, n_query=2, dtype="float32"):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    encoder = load(m, protonet_net(m), weights).to(getattr(torch, dtype))
    optimizer = optim.Adam(encoder.parameters(), lr=1e-3)
    rng = np.random.default_rng(14)
    log = []
    for episode in range(episodes):
        xs = torch.tensor(rng.standard_normal((n_way, n_support, 1, 8, 8)).astype(dtype))
        xq = torch.tensor(rng.standard_normal((n_way, n_query, 1, 8, 8)).astype(dtype))
        target_inds = torch.arange(0, n_way).view(n_way, 1, 1).expand(n_way, n_query, 1).long()
        x = torch.cat([xs.view(n_way * n_support, *xs.size()[2:]), xq.view(n_way * n_query, *xq.size()[2:])], 0)
        z = encoder(x)
        z_dim = z.size(-1)
        z_proto = z[:n_way * n_support].view(n_way, n_support, z_dim).mean(1)
        zq = z[n_way * n_support:]
        dists = torch.cdist(zq, z_proto) ** 2
        dists_ref = (zq.unsqueeze(1) - z_proto.unsqueeze(0)).pow(2).sum(2)
        log_p_y = F.log_softmax(-dists, dim=1).view(n_way, n_query, -1)
        loss_val = -log_p_y.gather(2, target_inds).squeeze().view(-1).mean()
        _, y_hat = log_p_y.max(2)
        acc_val = torch.eq(y_hat, target_inds.squeeze(2)).float().mean()
        optimizer.zero_grad()
        loss_val.backward()
        optimizer.step()
        log.append((loss_val.item(), acc_val.item(), bool((dists - dists_ref).abs().max() < 1e-4)))
    # each convolution's bias feeds a BatchNorm, which removes it: compared apart, as PointNet's above
    kept = [p for name, p in encoder.named_parameters() if not name.endswith("0.bias")]
    shifted_away = max(p.grad.abs().max().item() for name, p in encoder.named_parameters() if name.endswith("0.bias"))
    return log, [p.detach() for p in kept], [p.grad for p in kept], shifted_away < 1e-5  # others: up to 4


def test_prototypical_networks_episode():
    weights = weights_of(protonet_net)
    # float32 gradients of size ~4 come out 3e-6 apart (summation order); float64 agrees to 1e-14
    run_both(protonet, weights, rtol=1e-5, atol=1e-5)
    ours, _ = run_both(protonet, weights, dtype="float64", rtol=1e-10, atol=1e-12)
    log, params, grads, biases_shifted_away = ours
    assert biases_shifted_away and len(params) == 6
    assert all(entry[2] for entry in log)  # cdist² is the broadcast squared distance


# ----------------------------------------------------------------------------------------------
# Domain-adversarial training (DANN): a gradient reversal autograd.Function
# ----------------------------------------------------------------------------------------------


def dann_net(m):
    nn = m.nn
    return nn.ModuleDict({"features": nn.Sequential(nn.Linear(5, 8), nn.ReLU()), "label": nn.Linear(8, 3),
                          "domain": nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 1))})


def dann(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Function = torch.autograd.Function

    class GradientReversalFn(Function):
        @staticmethod
        def forward(ctx, x, alpha):
            ctx.alpha = alpha
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad_output):
            output = grad_output.neg() * ctx.alpha
            return output, None

    net = load(m, dann_net(m), weights)
    optimizer = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(16)
    xs = torch.tensor(rng.standard_normal((8, 5)).astype(np.float32))
    ys = torch.tensor(rng.integers(0, 3, 8))
    xt = torch.tensor(rng.standard_normal((8, 5)).astype(np.float32) + 0.5)
    log = []
    for step in range(steps):
        p = step / steps
        alpha = 2.0 / (1.0 + np.exp(-10 * p)) - 1
        optimizer.zero_grad()
        f_s, f_t = net["features"](xs), net["features"](xt)
        label_loss = F.cross_entropy(net["label"](f_s), ys)
        reverse = GradientReversalFn.apply(torch.cat([f_s, f_t]), alpha)
        domain_out = net["domain"](reverse).squeeze(1)
        domain_y = torch.cat([torch.zeros(8), torch.ones(8)])
        domain_loss = F.binary_cross_entropy_with_logits(domain_out, domain_y)
        loss = label_loss + domain_loss
        loss.backward()
        optimizer.step()
        log.append((label_loss.item(), domain_loss.item(), type(reverse.grad_fn).__name__.endswith("Backward")))
    # the reversal flips the sign of exactly the domain loss's gradient in the features
    f = net["features"](xs)
    g_plain, = torch.autograd.grad(net["domain"](f).sum(), f)
    f = net["features"](xs)
    g_rev, = torch.autograd.grad(net["domain"](GradientReversalFn.apply(f, 0.5)).sum(), f)
    return log, [p.detach() for p in net.parameters()], [p.grad for p in net.parameters()], g_plain, g_rev


def test_dann_gradient_reversal_function():
    weights = weights_of(dann_net)
    ours, _ = run_both(dann, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, g_plain, g_rev = ours
    np.testing.assert_allclose(g_rev, -0.5 * g_plain, rtol=1e-6)
    assert all(entry[2] for entry in log)


# ----------------------------------------------------------------------------------------------
# Metric learning: a siamese net with contrastive, triplet and cosine-embedding losses
# ----------------------------------------------------------------------------------------------


def siamese_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(6, 12), nn.PReLU(), nn.Linear(12, 4))


def siamese(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    net = load(m, siamese_net(m), weights)

    class ContrastiveLoss(nn.Module):
        def __init__(self, margin=2.0):
            super().__init__()
            self.margin = margin

        def forward(self, output1, output2, label):
            euclidean_distance = F.pairwise_distance(output1, output2, keepdim=True)
            return torch.mean((1 - label) * torch.pow(euclidean_distance, 2)
                              + label * torch.pow(torch.clamp(self.margin - euclidean_distance, min=0.0), 2))

    contrastive = ContrastiveLoss()
    triplet = nn.TripletMarginLoss(margin=1.0, p=2, swap=True)
    cosine_triplet = nn.TripletMarginWithDistanceLoss(distance_function=lambda x, y: 1.0 - F.cosine_similarity(x, y),
                                                      margin=0.3)
    cosine_embedding = nn.CosineEmbeddingLoss(margin=0.2)
    optimizer = optim.Adam(net.parameters(), lr=5e-3)
    rng = np.random.default_rng(18)
    a, p, n = (torch.tensor(rng.standard_normal((8, 6)).astype(np.float32)) for _ in range(3))
    label = torch.tensor(rng.integers(0, 2, (8, 1)).astype(np.float32))
    log = []
    for step in range(steps):
        optimizer.zero_grad()
        ea, ep, en = net(a), net(p), net(n)
        losses = [contrastive(ea, ep, label), triplet(ea, ep, en), cosine_triplet(ea, ep, en),
                  cosine_embedding(ea, ep, 1 - 2 * label.squeeze(1))]
        sum(losses).backward()
        optimizer.step()
        log.append([l.item() for l in losses])
    per_sample = F.triplet_margin_loss(ea, ep, en, reduction="none", eps=1e-6)
    return log, [p.detach() for p in net.parameters()], [p.grad for p in net.parameters()], per_sample


def test_siamese_metric_losses():
    weights = weights_of(siamese_net)
    ours, _ = run_both(siamese, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, per_sample = ours
    assert per_sample.shape == (8,) and all(all(np.isfinite(row)) for row in log)


# ----------------------------------------------------------------------------------------------
# MAML by torch.func.functional_call on a BatchNorm CNN: fast weights as a dict, second and first order
# ----------------------------------------------------------------------------------------------


def maml_cnn(m):
    nn = m.nn
    # no convolution bias before the BatchNorm: it would be removed there, and Adam's step on its
    # zero-up-to-rounding gradient is noise in either library (seen through the running mean)
    return nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


def maml_functional_call(m, weights, second_order=True, iterations=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, maml_cnn(m), weights)
    functional_call = torch.func.functional_call
    meta_opt = optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(22)
    log = []
    for it in range(iterations):
        meta_opt.zero_grad()
        total = 0.0
        for task in range(2):
            xs = torch.tensor(rng.standard_normal((6, 1, 6, 6)).astype(np.float32))
            ys = torch.tensor(rng.integers(0, 3, 6))
            xq = torch.tensor(rng.standard_normal((6, 1, 6, 6)).astype(np.float32))
            yq = torch.tensor(rng.integers(0, 3, 6))
            params = dict(model.named_parameters())
            for _ in range(2):
                loss = F.cross_entropy(functional_call(model, params, (xs,)), ys)
                grads = torch.autograd.grad(loss, params.values(), create_graph=second_order)
                params = {k: p - 0.1 * g for (k, p), g in zip(params.items(), grads)}
            query_loss = F.cross_entropy(functional_call(model, params, (xq,)), yq)
            query_loss.backward()
            total += query_loss.item()
        meta_opt.step()
        log.append(total)
    return log, [p.detach() for p in model.parameters()], [p.grad for p in model.parameters()], [
        b.clone() for b in model.buffers()]


def test_maml_with_functional_call_on_a_batchnorm_cnn():
    weights = weights_of(maml_cnn)
    second, _ = run_both(maml_functional_call, weights, rtol=1e-5, atol=1e-6)
    first, _ = run_both(maml_functional_call, weights, second_order=False, rtol=1e-5, atol=1e-6)
    assert second[0][0] == first[0][0]  # the same first meta-loss, a different meta-gradient
    assert max(np.abs(a - b).max() for a, b in zip(second[2], first[2])) > 1e-5
    assert int(second[3][2]) == 3 * 2 * 3  # BatchNorm counted every support and query batch
