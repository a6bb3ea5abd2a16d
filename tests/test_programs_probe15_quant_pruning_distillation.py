# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Model-compression programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same
weights and data, comparing values, gradients and training trajectories (float32, about 1e-5). Magnitude pruning with
``torch.nn.utils.prune`` (``l1_unstructured``, ``ln_structured``, ``global_unstructured``, fine-tuning through
``weight_orig`` and ``weight_mask``, ``remove``); knowledge distillation (``F.kl_div`` of temperature-softened
log-probabilities with ``log_target=True``, ``reduction='batchmean'``, times T²); low-rank factorisation of a trained
layer by ``torch.linalg.svd`` into two layers, fine-tuned; random pruning from a seed (``random_unstructured`` twice,
``random_structured``); Deep Compression's weight sharing (k-means by ``cdist``/``index_add_``/``bincount``,
centroids trained through indexing, ``bucketize``); feature distillation (forward hooks, attention transfer,
``cosine_embedding_loss``)."""

import numpy as np

from .probe15_quant_common import classification_data, cnn, image_data, mlp
from .pytorch_programs import load, run_both, weights_of

try:
    import torch.nn.utils.prune  # noqa: F401  (PyTorch's is a submodule to import; chainrule's loads on first use)
except ImportError:
    pass


# ----------------------------------------------------------------------------------------------
# magnitude pruning with torch.nn.utils.prune
# ----------------------------------------------------------------------------------------------


def pruning(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    prune = nn.utils.prune
    model = load(m, cnn(m), weights)
    conv1, conv2, fc = model[0], model[2], model[5]
    prune.l1_unstructured(conv1, name="weight", amount=0.3)
    prune.ln_structured(conv2, name="weight", amount=0.5, n=2, dim=0)  # half the filters
    prune.global_unstructured([(conv1, "bias"), (fc, "weight")], pruning_method=prune.L1Unstructured, amount=60)
    keys = sorted(model.state_dict().keys())
    x, y = (torch.tensor(a) for a in image_data())
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for step in range(6):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    grad_orig = conv2.weight_orig.grad
    masks = [conv1.weight_mask, conv2.weight_mask, fc.weight_mask]
    sparsity = [float((mk == 0).sum()) / mk.numel() for mk in masks]
    for module, name in ((conv1, "weight"), (conv2, "weight"), (conv1, "bias"), (fc, "weight")):
        prune.remove(module, name)
    return losses, keys, sparsity, grad_orig, model.state_dict(), sorted(model.state_dict().keys())


def test_magnitude_pruning():
    ours, theirs = run_both(pruning, weights_of(cnn), rtol=1e-4, atol=1e-5)
    losses, keys, sparsity, grad_orig, state, final_keys = ours
    assert "0.weight_orig" in keys and "0.weight_mask" in keys and "5.weight_mask" in keys
    assert sparsity[1] == 0.5
    assert (state["2.weight"].reshape(4, -1) == 0).all(1).sum() == 2  # two whole filters stay zero
    assert final_keys == sorted(["0.weight", "0.bias", "2.weight", "2.bias", "5.weight", "5.bias"])


# ----------------------------------------------------------------------------------------------
# knowledge distillation: KL between temperature-softened distributions, times T²
# ----------------------------------------------------------------------------------------------


def teacher_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def student_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4))


def distillation(m, teacher_weights, student_weights, T=4.0, alpha=0.7):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    teacher = load(m, teacher_net(m), teacher_weights)
    student = load(m, student_net(m), student_weights)
    x, y = (torch.tensor(a) for a in classification_data())
    t_opt = optim.Adam(teacher.parameters(), lr=0.01)
    for step in range(10):  # a quick teacher
        t_opt.zero_grad()
        F.cross_entropy(teacher(x), y).backward()
        t_opt.step()
    teacher.eval()
    optimizer = optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    history = []
    for step in range(12):
        with torch.no_grad():
            teacher_logits = teacher(x)
        student_logits = student(x)
        soft_loss = F.kl_div(F.log_softmax(student_logits / T, dim=1), F.log_softmax(teacher_logits / T, dim=1),
                             reduction="batchmean", log_target=True) * (T * T)
        hard_loss = F.cross_entropy(student_logits, y)
        loss = alpha * soft_loss + (1 - alpha) * hard_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((soft_loss.item(), hard_loss.item()))
    # the same soft loss through nn.KLDivLoss on probabilities (log_target=False)
    kl = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(student(x) / T, dim=1), F.softmax(teacher(x) / T, dim=1))
    return history, kl, student.state_dict()


def test_knowledge_distillation():
    ours, theirs = run_both(distillation, weights_of(teacher_net), weights_of(student_net, seed=1), rtol=1e-4,
                            atol=1e-5)
    history = ours[0]
    assert history[-1][0] < history[0][0]  # the student moves towards the teacher


# ----------------------------------------------------------------------------------------------
# low-rank factorisation by SVD, then fine-tuning
# ----------------------------------------------------------------------------------------------


def wide_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(12, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 4))


def low_rank(m, weights, rank=6):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, wide_net(m), weights)
    x, y = (torch.tensor(a) for a in classification_data())
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    for step in range(10):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    layer = model[2]
    W = layer.weight.detach()
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    first = nn.Linear(48, rank, bias=False)
    second = nn.Linear(rank, 48)
    with torch.no_grad():
        root = S[:rank].sqrt()
        first.weight.copy_(root[:, None] * Vh[:rank])
        second.weight.copy_(U[:, :rank] * root)
        second.bias.copy_(layer.bias)
    model[2] = nn.Sequential(first, second)
    product = second.weight @ first.weight  # the best rank-6 approximation of W (sign choices cancel)
    error = torch.linalg.matrix_norm(W - product)
    tail = S[rank:].pow(2).sum().sqrt()  # Eckart–Young: the error is the discarded singular values' norm
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for step in range(8):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    params = sum(p.numel() for p in model.parameters())
    return S, product, error, tail, losses, second.weight @ first.weight, params


def test_low_rank_factorisation():
    ours, theirs = run_both(low_rank, weights_of(wide_net), rtol=2e-4, atol=2e-5)
    S, product, error, tail, losses, tuned, params = ours
    np.testing.assert_allclose(error, tail, rtol=1e-4)
    assert params == 12 * 48 + 48 + 48 * 6 + 6 * 48 + 48 + 48 * 4 + 4


# ----------------------------------------------------------------------------------------------
# random pruning from a seed (the draws and which of them are pruned must be PyTorch's)
# ----------------------------------------------------------------------------------------------


def random_pruning(m):
    torch, nn = m.torch, m.nn
    prune = nn.utils.prune
    lin, conv = nn.Linear(6, 5), nn.Conv2d(2, 4, 3)
    torch.manual_seed(3)
    prune.random_unstructured(lin, "weight", amount=0.4)
    prune.random_structured(conv, "weight", amount=2, dim=0)
    prune.random_unstructured(lin, "weight", amount=0.5)  # half of what is left, drawn among it
    return lin.weight_mask, conv.weight_mask


def test_random_pruning_follows_the_seed():
    ours, theirs = run_both(random_pruning)
    lin_mask, conv_mask = ours
    assert lin_mask.sum() == 30 - 12 - 9 and conv_mask.reshape(4, -1).all(1).sum() == 2


# ----------------------------------------------------------------------------------------------
# weight sharing (Deep Compression): k-means centroids trained through the assignment
# ----------------------------------------------------------------------------------------------


def weight_sharing(m, weights, k=8):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, mlp(m), weights)
    layer = model[2]
    w = layer.weight.detach().flatten()
    centroids = torch.linspace(w.min().item(), w.max().item(), k)  # linear initialisation
    for _ in range(10):
        assign = torch.cdist(w[:, None], centroids[:, None]).argmin(1)
        sums = torch.zeros(k).index_add_(0, assign, w)
        counts = torch.bincount(assign, minlength=k).float()
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    centroids = nn.Parameter(centroids)
    x, y = (torch.tensor(a) for a in classification_data())
    optimizer = optim.SGD([centroids], lr=0.05)
    history = []
    for step in range(5):
        shared = centroids[assign].view_as(layer.weight)  # each centroid's gradient: the sum over its weights
        h = F.relu(F.linear(F.relu(model[0](x)), shared, layer.bias))
        loss = F.cross_entropy(model[4](h), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    levels = torch.bucketize(w, torch.sort(centroids.detach()).values)
    return centroids, assign, history, counts, levels


def test_weight_sharing():
    ours, theirs = run_both(weight_sharing, weights_of(mlp), rtol=1e-4, atol=1e-5)
    centroids, assign, history, counts, levels = ours
    assert counts.sum() == 16 * 16 and set(assign.tolist()) <= set(range(8))


# ----------------------------------------------------------------------------------------------
# feature distillation: intermediate activations matched through forward hooks
# ----------------------------------------------------------------------------------------------


def feature_distillation(m, teacher_weights, student_weights, T=3.0):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    teacher, student = load(m, mlp(m), teacher_weights), load(m, mlp(m), student_weights)
    features = {}
    teacher[2].register_forward_hook(lambda module, inputs, output: features.__setitem__("teacher", output))
    student[2].register_forward_hook(lambda module, inputs, output: features.__setitem__("student", output))
    x, y = (torch.tensor(a) for a in classification_data())
    optimizer = optim.SGD(student.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    history = []
    for step in range(6):
        with torch.no_grad():
            teacher_logits = teacher(x)
        student_logits = student(x)
        attention = lambda f: F.normalize(f.pow(2), dim=1)  # attention transfer on the hidden features
        loss = (F.cross_entropy(student_logits, y)
                + 0.5 * F.mse_loss(attention(features["student"]), attention(features["teacher"]))
                + F.kl_div(F.log_softmax(student_logits / T, 1), F.softmax(teacher_logits / T, 1),
                           reduction="batchmean") * T * T
                + 0.1 * F.cosine_embedding_loss(features["student"], features["teacher"], torch.ones(len(x))))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history, student.state_dict()


def test_feature_distillation():
    ours, theirs = run_both(feature_distillation, weights_of(mlp), weights_of(mlp, seed=2), rtol=1e-4, atol=1e-5)
    assert ours[0][-1] < ours[0][0]
