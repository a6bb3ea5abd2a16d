# ruff: noqa: B007, E501, F841  (the programs are kept as their authors wrote them)
"""Model interpretability as PyTorch users and Captum's sources write it, run as tests/probe16_explain_common.py
says. Models explained by design or by training: ProtoPNet, a neural additive model, TabNet's sparsemax,
GNNExplainer, training with explanations (Right for the Right Reasons, GAIN, an expected-gradients prior) and learnt
explainers (L2X with ``gumbel_softmax``, a RelaxedBernoulli mask)."""

import numpy as np

from .probe16_explain_common import cnn, images, mlp
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Interpretable-by-design models: ProtoPNet's prototype layer (L2 distances by convolutions, min pooling as
# -max_pool2d(-d), log similarities, cluster and separation costs, the push of each prototype onto its
# nearest training patch), a neural additive model (ExU units, ReLU-n, one network per feature by einsum),
# and TabNet's attentive transformer (sparsemax as an autograd.Function, prior scales, ghost batch norm)
# ----------------------------------------------------------------------------------------------


def protopnet(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class ProtoNet(nn.Module):
        def __init__(self, num_prototypes=6, proto_dim=5, classes=3):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(8, proto_dim, 1), nn.Sigmoid())
            self.prototype_shape = (num_prototypes, proto_dim, 1, 1)
            self.prototype_vectors = nn.Parameter(torch.rand(self.prototype_shape))
            self.ones = nn.Parameter(torch.ones(self.prototype_shape), requires_grad=False)
            self.prototype_class_identity = torch.zeros(num_prototypes, classes)
            for j in range(num_prototypes):
                self.prototype_class_identity[j, j // (num_prototypes // classes)] = 1
            self.last_layer = nn.Linear(num_prototypes, classes, bias=False)
            self.epsilon = 1e-4

        def _l2_convolution(self, x):
            x2 = x ** 2
            x2_patch_sum = F.conv2d(input=x2, weight=self.ones)
            p2 = self.prototype_vectors ** 2
            p2 = torch.sum(p2, dim=(1, 2, 3))
            p2_reshape = p2.view(-1, 1, 1)
            xp = F.conv2d(input=x, weight=self.prototype_vectors)
            intermediate_result = -2 * xp + p2_reshape
            distances = F.relu(x2_patch_sum + intermediate_result)
            return distances

        def distance_2_similarity(self, distances):
            return torch.log((distances + 1) / (distances + self.epsilon))

        def forward(self, x):
            conv_features = self.features(x)
            distances = self._l2_convolution(conv_features)
            min_distances = -F.max_pool2d(-distances, kernel_size=(distances.size()[2], distances.size()[3]))
            min_distances = min_distances.view(-1, self.prototype_shape[0])
            prototype_activations = self.distance_2_similarity(min_distances)
            logits = self.last_layer(prototype_activations)
            return logits, min_distances

        def push_forward(self, x):
            conv_output = self.features(x)
            distances = self._l2_convolution(conv_output)
            return conv_output, distances

    model = ProtoNet().double()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    model.prototype_class_identity = model.prototype_class_identity.double()
    with torch.no_grad():  # the last layer as ProtoPNet initialises it: 1 for the own class, -0.5 elsewhere
        model.last_layer.weight.copy_(1.0 * model.prototype_class_identity.t() - 0.5 * (1 - model.prototype_class_identity.t()))
    X = torch.from_numpy(images(6, seed=18))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    joint = optim.Adam([{"params": model.features.parameters(), "lr": 1e-2}, {"params": [model.prototype_vectors], "lr": 3e-2}])
    history = []
    for step in range(steps):
        output, min_distances = model(X)
        cross_entropy = F.cross_entropy(output, y)
        max_dist = model.prototype_shape[1] * model.prototype_shape[2] * model.prototype_shape[3]
        prototypes_of_correct_class = torch.t(model.prototype_class_identity[:, y])
        inverted_distances, _ = torch.max((max_dist - min_distances) * prototypes_of_correct_class, dim=1)
        cluster_cost = torch.mean(max_dist - inverted_distances)
        prototypes_of_wrong_class = 1 - prototypes_of_correct_class
        inverted_distances_to_nontarget_prototypes, _ = torch.max((max_dist - min_distances) * prototypes_of_wrong_class, dim=1)
        separation_cost = torch.mean(max_dist - inverted_distances_to_nontarget_prototypes)
        avg_separation_cost = torch.sum(min_distances * prototypes_of_wrong_class, dim=1) / torch.sum(prototypes_of_wrong_class, dim=1)
        l1 = (model.last_layer.weight * (1 - torch.t(model.prototype_class_identity))).norm(p=1)
        loss = cross_entropy + 0.8 * cluster_cost - 0.08 * separation_cost + 1e-4 * l1
        joint.zero_grad()
        loss.backward()
        joint.step()
        history.append((loss.item(), cluster_cost.item(), separation_cost.item(), avg_separation_cost.mean().item()))

    # push: each prototype onto its nearest patch among images of its class
    with torch.no_grad():
        conv_output, distances = model.push_forward(X)
        new_protos = torch.empty_like(model.prototype_vectors)
        where = []
        for j in range(model.prototype_shape[0]):
            target_class = torch.argmax(model.prototype_class_identity[j]).item()
            idx = (y == target_class).nonzero().squeeze(1)
            d = distances[idx, j]
            flat = torch.argmin(d.reshape(-1)).item()
            img, row, col = np.unravel_index(flat, d.shape)
            where.append((idx[img].item(), int(row), int(col)))
            new_protos[j] = conv_output[idx[img], :, row:row + 1, col:col + 1]
        model.prototype_vectors.data.copy_(new_protos)
        _, min_after = model(X)
    return {"history": history, "where": where, "min_after": min_after, "protos": model.prototype_vectors.detach()}


def nam_and_tabnet(m, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)

    class ExU(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.weights = nn.Parameter(torch.empty(in_features, out_features))
            self.bias = nn.Parameter(torch.empty(in_features))
            nn.init.trunc_normal_(self.weights, mean=4.0, std=0.5)
            nn.init.trunc_normal_(self.bias, std=0.5)

        def forward(self, inputs, n=1):
            output = (inputs - self.bias).matmul(torch.exp(self.weights))
            output = F.relu(output)
            return torch.clamp(output, 0, n)

    class FeatureNN(nn.Module):
        def __init__(self, hidden=8):
            super().__init__()
            self.exu = ExU(1, hidden)
            self.linear = nn.Linear(hidden, 1)

        def forward(self, x):
            return self.linear(self.exu(x.unsqueeze(1)))

    class NAM(nn.Module):
        def __init__(self, num_inputs):
            super().__init__()
            self.feature_nns = nn.ModuleList([FeatureNN() for _ in range(num_inputs)])
            self._bias = nn.Parameter(torch.zeros(1))

        def forward(self, inputs):
            individual = [fnn(inputs[:, i]) for i, fnn in enumerate(self.feature_nns)]
            conc_out = torch.cat(individual, dim=-1)
            return torch.sum(conc_out, dim=-1) + self._bias, conc_out

    def sparsemax_threshold(input, dim=-1):
        input_srt, _ = torch.sort(input, descending=True, dim=dim)
        input_cumsum = input_srt.cumsum(dim) - 1
        d = input.size(dim)
        rhos = torch.arange(1, d + 1, dtype=input.dtype).view(1, -1)
        support = rhos * input_srt > input_cumsum
        support_size = support.sum(dim=dim).unsqueeze(dim)
        tau = input_cumsum.gather(dim, support_size - 1)
        tau /= support_size.to(input.dtype)
        return tau, support_size

    class SparsemaxFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input, dim=-1):
            ctx.dim = dim
            max_val, _ = input.max(dim=dim, keepdim=True)
            input -= max_val  # same numerical stability trick as for softmax
            tau, supp_size = sparsemax_threshold(input, dim=dim)
            output = torch.clamp(input - tau, min=0)
            ctx.save_for_backward(supp_size, output)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            supp_size, output = ctx.saved_tensors
            dim = ctx.dim
            grad_input = grad_output.clone()
            grad_input[output == 0] = 0
            v_hat = grad_input.sum(dim=dim) / supp_size.to(output.dtype).squeeze()
            v_hat = v_hat.unsqueeze(dim)
            grad_input = torch.where(output != 0, grad_input - v_hat, grad_input)
            return grad_input, None

    class GBN(nn.Module):
        def __init__(self, input_dim, virtual_batch_size=4, momentum=0.01):
            super().__init__()
            self.virtual_batch_size = virtual_batch_size
            self.bn = nn.BatchNorm1d(input_dim, momentum=momentum)

        def forward(self, x):
            chunks = x.chunk(int(np.ceil(x.shape[0] / self.virtual_batch_size)), 0)
            res = [self.bn(x_) for x_ in chunks]
            return torch.cat(res, dim=0)

    class AttentiveTransformer(nn.Module):
        def __init__(self, input_dim, output_dim):
            super().__init__()
            self.fc = nn.Linear(input_dim, output_dim, bias=False)
            self.bn = GBN(output_dim)

        def forward(self, priors, processed_feat):
            x = self.fc(processed_feat)
            x = self.bn(x)
            x = torch.mul(x, priors)
            return SparsemaxFunction.apply(x, -1)

    nam = NAM(4).double()
    att = AttentiveTransformer(5, 4).double()
    head = nn.Linear(4, 1).double()
    rng = np.random.default_rng(19)
    X = torch.from_numpy(rng.standard_normal((12, 4)))
    H = torch.from_numpy(rng.standard_normal((12, 5)))
    y = torch.from_numpy(np.sin(X[:, 0].numpy()) + X[:, 1].numpy() ** 2)
    opt = optim.Adam(list(nam.parameters()) + list(att.parameters()) + list(head.parameters()), lr=1e-2)
    history = []
    for step in range(steps):
        pred, contributions = nam(X)
        priors = torch.ones(12, 4, dtype=torch.float64)
        masks, entropy = [], 0
        for s in range(2):
            M = att(priors, H)
            entropy = entropy + torch.mean(torch.sum(torch.mul(M, torch.log(M + 1e-15)), dim=1))
            priors = torch.mul(1.3 - M, priors)
            masks.append(M)
        tab_pred = head(X * masks[0] + X * masks[1]).squeeze(1)
        loss = F.mse_loss(pred, y) + F.mse_loss(tab_pred, y) + 1e-3 * entropy / 2 + 1e-3 * contributions.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return {"history": history, "contributions": contributions.detach(), "masks": [mk.detach() for mk in masks],
            "running_mean": att.bn.bn.running_mean, "exu_grad": nam.feature_nns[0].exu.weights.grad}


def protopnet_weights():
    """Features near zero-mean, prototypes in [0, 1) (ProtoPNet draws them by torch.rand), the fixed ones."""
    rng = np.random.default_rng(20)
    shapes = {"features.0.weight": (8, 3, 3, 3), "features.0.bias": (8,), "features.3.weight": (5, 8, 1, 1),
              "features.3.bias": (5,), "prototype_vectors": (6, 5, 1, 1), "ones": (6, 5, 1, 1), "last_layer.weight": (3, 6)}
    return {k: np.ones(s) if k == "ones" else rng.uniform(0, 1, s) if k == "prototype_vectors" else rng.standard_normal(s) * 0.3
            for k, s in shapes.items()}


def test_protopnet_prototypes_and_push():
    ours, _ = run_both(protopnet, protopnet_weights(), rtol=1e-8, atol=1e-11)
    # after the push every prototype sits exactly on a patch of an image: its nearest distance is zero
    np.testing.assert_allclose(ours["min_after"].min(0), 0, atol=1e-12)


def test_neural_additive_model_and_tabnet_sparsemax():
    ours, _ = run_both(nam_and_tabnet, rtol=1e-8, atol=1e-11)
    for mask in ours["masks"]:
        np.testing.assert_allclose(mask.sum(1), 1, rtol=1e-12)  # sparsemax: on the simplex
        assert (mask == 0).any()


# ----------------------------------------------------------------------------------------------
# Training with explanations: "Right for the Right Reasons" (Ross et al.: the input gradient of the summed
# log-probabilities, taken with create_graph=True, penalised inside an annotation mask) and GAIN (Li et al.:
# a Grad-CAM made differentiable by create_graph=True, a soft mask by a sigmoid of it, and the masked image's
# score minimised), both differentiating through max pooling, ReLU, convolutions and adaptive pooling twice
# ----------------------------------------------------------------------------------------------


def train_with_explanations(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X = torch.from_numpy(images(6, seed=24))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    annotation = torch.zeros(6, 1, 8, 8, dtype=torch.float64)
    annotation[:, :, :, :3] = 1  # "the left of the image is irrelevant"
    out = {}

    model = load(m, cnn(m), weights).double()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = []
    for step in range(steps):
        x = X.clone().requires_grad_(True)
        logits = model(x)
        log_prob = F.log_softmax(logits, dim=1)
        right_answer = F.nll_loss(log_prob, y)
        (input_grads,) = torch.autograd.grad(log_prob.sum(), x, create_graph=True)
        right_reasons = (annotation * input_grads).pow(2).sum()
        loss = right_answer + 10.0 * right_reasons
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((right_answer.item(), right_reasons.item()))
    out["rrr"] = (history, [p.detach().clone() for p in model.parameters()])

    # GAIN: the attention map's gradient flows back into the network
    model = load(m, cnn(m), weights).double()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    features = model[:7]
    head = model[7:]
    history = []
    for step in range(steps):
        A = features(X)
        logits = head(A)
        score = logits.gather(1, y[:, None]).sum()
        (dA,) = torch.autograd.grad(score, A, create_graph=True)
        weights_c = F.adaptive_avg_pool2d(dA, 1)
        cam = F.relu((weights_c * A).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=(8, 8), mode="bilinear", align_corners=False)
        cam_min = cam.amin(dim=(2, 3), keepdim=True)
        cam_max = cam.amax(dim=(2, 3), keepdim=True)
        cam = (cam - cam_min) / (cam_max - cam_min + 1e-8)
        soft_mask = torch.sigmoid(10.0 * (cam - 0.5))
        masked = X - X * soft_mask
        am_scores = F.softmax(model(masked), dim=1).gather(1, y[:, None])
        loss = F.cross_entropy(logits, y) + 1.0 * am_scores.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((loss.item(), am_scores.mean().item()))
    out["gain"] = (history, [p.detach().clone() for p in model.parameters()])
    return out


def test_right_for_the_right_reasons_and_gain():
    ours, _ = run_both(train_with_explanations, weights_of(cnn), rtol=1e-7, atol=1e-10)
    history, _ = ours["rrr"]
    assert history[-1][0] < history[0][0] and all(h[1] > 0 for h in history)


# ----------------------------------------------------------------------------------------------
# Learnt explainers: an expected-gradients attribution prior (Erion et al.: references drawn by
# torch.randint, interpolation points by torch.rand, attributions with create_graph=True, a smoothness
# penalty on them), and L2X (Chen et al.: a selector whose k-hot mask is a continuous subset sample from
# F.gumbel_softmax's noise, an approximator trained on the masked input) with a RelaxedBernoulli
# (INVASE-style) mask beside it
# ----------------------------------------------------------------------------------------------


def learnt_explainers(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = torch.distributions
    rng = np.random.default_rng(25)
    X = torch.from_numpy(rng.standard_normal((16, 6)))
    y = torch.from_numpy((rng.standard_normal(16) > 0).astype(np.int64) + (rng.standard_normal(16) > 1).astype(np.int64))
    out = {}

    net = load(m, mlp(m), weights).double()
    opt = optim.Adam(net.parameters(), lr=1e-2)
    torch.manual_seed(8)
    history = []
    for step in range(steps):
        refs = X[torch.randint(0, len(X), (len(X),))]
        alphas = torch.rand(len(X), 1, dtype=torch.float64)
        points = (refs + alphas * (X - refs)).requires_grad_(True)
        logits = net(points)
        selected = logits.gather(1, y[:, None]).sum()
        (grads,) = torch.autograd.grad(selected, points, create_graph=True)
        eg = grads * (X - refs)
        prior = (eg[:, 1:] - eg[:, :-1]).abs().mean()  # neighbouring features should agree
        loss = F.cross_entropy(net(X), y) + 0.1 * prior
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((loss.item(), prior.item()))
    out["prior"] = history

    # L2X: continuous subset sampling of k features
    k, tau = 2, 0.5
    selector = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 6)).double()
    approximator = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    with torch.no_grad():
        for i, p in enumerate(list(selector.parameters()) + list(approximator.parameters())):
            p.copy_(torch.from_numpy(np.random.default_rng(30 + i).standard_normal(tuple(p.shape)) * 0.4))
    opt = optim.Adam(list(selector.parameters()) + list(approximator.parameters()), lr=1e-2)
    torch.manual_seed(9)
    history = []
    for step in range(steps):
        logits = selector(X)
        # k samples of a Gumbel-softmax over the features, then their elementwise maximum
        samples = torch.stack([F.gumbel_softmax(logits, tau=tau, hard=False) for _ in range(k)], dim=0)
        mask = samples.max(dim=0).values
        pred = approximator(X * mask)
        teacher = F.softmax(net(X), dim=1).detach()
        loss = F.kl_div(F.log_softmax(pred, dim=1), teacher, reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    with torch.no_grad():
        topk = selector(X).topk(k, dim=1).indices.sort(dim=1).values
        hard = F.gumbel_softmax(selector(X), tau=tau, hard=True)
    out["l2x"] = (history, topk, hard, mask.detach())

    # an INVASE-style relaxed Bernoulli mask, reparameterised
    relaxed = D.RelaxedBernoulli(torch.tensor(0.5, dtype=torch.float64), logits=selector(X))
    torch.manual_seed(10)
    soft = relaxed.rsample()
    (soft * X).sum().backward()
    out["relaxed"] = (soft.detach(), relaxed.log_prob(soft.detach().clamp(1e-6, 1 - 1e-6)).detach(),
                      selector[0].weight.grad)
    return out


def test_expected_gradients_prior_and_l2x():
    ours, _ = run_both(learnt_explainers, weights_of(mlp, seed=14), rtol=1e-8, atol=1e-11)
    history, topk, hard, mask = ours["l2x"]
    np.testing.assert_allclose(hard.sum(1), 1)
    assert ((mask >= 0) & (mask <= 1)).all()


# ----------------------------------------------------------------------------------------------
# GNNExplainer (Ying et al.) on a two-layer GCN written with index_add_ / scatter_add: a learnt sigmoid edge
# mask and feature mask, size and entropy regularisers, Adam; integrated gradients over the edge weights and
# saliency on the node features beside it
# ----------------------------------------------------------------------------------------------


def gnn_explainer(m, epochs=10):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(26)
    N, D = 8, 5
    src = torch.tensor([0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 0, 4])
    dst = torch.tensor([1, 0, 2, 1, 3, 2, 4, 3, 5, 4, 6, 5, 7, 6, 4, 0])
    E = len(src)
    X = torch.from_numpy(rng.standard_normal((N, D)))

    class GCN(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin1 = nn.Linear(D, 8)
            self.lin2 = nn.Linear(8, 3)

        def propagate(self, h, edge_weight):
            ones = torch.ones(N, dtype=h.dtype)
            deg = ones.clone().index_add_(0, dst, edge_weight)  # self loops weigh 1
            norm = deg.pow(-0.5)
            coef = norm[src] * edge_weight * norm[dst]
            out = h * (norm * norm).unsqueeze(1)
            return out.index_add(0, dst, h[src] * coef.unsqueeze(1))

        def forward(self, x, edge_weight):
            h = F.relu(self.propagate(self.lin1(x), edge_weight))
            return self.propagate(self.lin2(h), edge_weight)

    torch.manual_seed(0)
    model = GCN().double()
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.from_numpy(np.random.default_rng(40 + i).standard_normal(tuple(p.shape)) * 0.5))
    for p in model.parameters():
        p.requires_grad_(False)
    node = 3
    full = model(X, torch.ones(E, dtype=torch.float64))
    target = int(full[node].argmax())

    edge_mask = nn.Parameter(torch.from_numpy(rng.standard_normal(E) * 0.1))
    feat_mask = nn.Parameter(torch.full((1, D), 0.1, dtype=torch.float64))
    opt = optim.Adam([edge_mask, feat_mask], lr=0.01)
    coeffs = {"edge_size": 0.005, "edge_ent": 1.0, "feat_size": 1.0, "feat_ent": 0.1}
    EPS = 1e-15
    history = []
    for epoch in range(epochs):
        opt.zero_grad()
        h = X * feat_mask.sigmoid()
        out = model(h, edge_mask.sigmoid())
        log_prob = F.log_softmax(out, dim=-1)
        loss = -log_prob[node, target]
        m_e = edge_mask.sigmoid()
        loss = loss + coeffs["edge_size"] * m_e.sum()
        ent = -m_e * torch.log(m_e + EPS) - (1 - m_e) * torch.log(1 - m_e + EPS)
        loss = loss + coeffs["edge_ent"] * ent.mean()
        m_f = feat_mask.sigmoid()
        loss = loss + coeffs["feat_size"] * m_f.mean()
        ent = -m_f * torch.log(m_f + EPS) - (1 - m_f) * torch.log(1 - m_f + EPS)
        loss = loss + coeffs["feat_ent"] * ent.mean()
        loss.backward()
        opt.step()
        history.append(loss.item())

    # integrated gradients over the edge weights (all-zero graph as the baseline), and feature saliency
    steps = 16
    alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    grads = []
    for a in alphas:
        w = (a * torch.ones(E, dtype=torch.float64)).requires_grad_(True)
        (g,) = torch.autograd.grad(model(X, w)[node, target], w)
        grads.append(g)
    edge_ig = torch.stack(grads).mean(0)
    with torch.no_grad():
        gap = model(X, torch.ones(E, dtype=torch.float64))[node, target] - model(X, torch.zeros(E, dtype=torch.float64))[node, target]
    x = X.clone().requires_grad_(True)
    model(x, torch.ones(E, dtype=torch.float64))[node, target].backward()
    return {"history": history, "edge_mask": edge_mask.detach().sigmoid(), "feat_mask": feat_mask.detach().sigmoid(),
            "edge_ig": edge_ig, "gap": gap, "saliency": x.grad.abs()}


def test_gnn_explainer_and_edge_integrated_gradients():
    ours, _ = run_both(gnn_explainer, rtol=1e-8, atol=1e-11)
    assert abs(ours["edge_ig"].sum() - ours["gap"]) < 0.1 * abs(ours["gap"])  # completeness, up to the midpoint rule
    np.testing.assert_array_equal(ours["saliency"][[6, 7]], 0)  # two layers see two hops: nodes 6 and 7 are farther
