# ruff: noqa: B007, E731, F811, F841  (the programs are kept as their authors wrote them)
"""PyTorch's official tutorials (pytorch/tutorials: beginner_source, intermediate_source, advanced_source), each run
on chainrule and on PyTorch from the same weights and data, comparing losses, parameters and gradients. Modules: the
parametrizations tutorial (Symmetric and Skew on a Linear and on a Conv2d's 4-d kernel, the ``parametrizations``
ModuleDict and ``.original``, ``parametrize.cached()`` counting the calls, Skew then a Cayley map by
``torch.linalg.solve`` with a buffer, Skew or Symmetric then ``torch.matrix_exp``, ``right_inverse`` through a chain
when the weight is assigned, ``nn.init.orthogonal_`` of a parametrized weight, a pruning mask by ``torch.bernoulli``,
``remove_parametrizations`` both ways, and training through each); the VGG-from-scratch tutorial (a configurable
feature extractor with LocalResponseNorm, a fully convolutional head with Dropout2d, ``self.apply`` of a
``@torch.no_grad()`` method with xavier and normal inits, top-k accuracy through ``topk(maxk, 1, True, True)``,
``pred.eq(target.view(1, -1).expand_as(pred))`` and ``correct[:k].reshape(-1).float().sum(0, keepdim=True)``,
gradient accumulation with the loss summed as a tensor and compared to floats, ``abs()`` of tensors,
``zero_grad(set_to_none=True)``, ``torch.cuda.empty_cache()`` and ``ReduceLROnPlateau('max', threshold=, eps=)``
stepped on a one-element tensor)."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Parametrizations tutorial (intermediate_source/parametrizations.py)
# ----------------------------------------------------------------------------------------------


def parametrizations(m, weights):
    torch, nn = m.torch, m.nn
    parametrize = nn.utils.parametrize
    rng = np.random.default_rng(0)
    rand = lambda *shape: torch.tensor(rng.random(shape), dtype=torch.float32)
    r = {}

    def fresh_linear():
        return load(m, nn.Linear(3, 3), weights["linear"])

    def symmetric(X):
        return X.triu() + X.triu(1).transpose(-1, -2)

    class Symmetric(nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).transpose(-1, -2)

    layer = fresh_linear()
    parametrize.register_parametrization(layer, "weight", Symmetric())
    A = layer.weight
    assert torch.allclose(A, A.T)
    r["symmetric"] = A

    class Skew(nn.Module):
        def forward(self, X):
            A = X.triu(1)
            return A - A.transpose(-1, -2)

    cnn = nn.Conv2d(in_channels=5, out_channels=8, kernel_size=3)
    load(m, cnn, weights["cnn"])
    parametrize.register_parametrization(cnn, "weight", Skew())
    r["cnn"] = (cnn.weight[0, 1], cnn.weight[2, 2], cnn(rand(2, 5, 6, 6)))

    layer = fresh_linear()
    parametrize.register_parametrization(layer, "weight", Symmetric())
    r["names"] = [n for n, _ in layer.named_parameters()]
    r["kinds"] = (type(layer.parametrizations).__name__, type(layer.parametrizations.weight).__name__,
                  type(layer.parametrizations.weight[0]).__name__, type(layer).__name__)
    symmetric = Symmetric()
    weight_orig = layer.parametrizations.weight.original
    r["dist"] = torch.dist(layer.weight, symmetric(weight_orig))

    calls = []

    class NoisyParametrization(nn.Module):
        def forward(self, X):
            calls.append("Computing the Parametrization")
            return X

    layer = nn.Linear(4, 4)
    parametrize.register_parametrization(layer, "weight", NoisyParametrization())
    foo = layer.weight + layer.weight.T
    bar = layer.weight.sum()
    uncached = len(calls)
    with parametrize.cached():
        foo = layer.weight + layer.weight.T
        bar = layer.weight.sum()
    r["calls"] = (uncached, len(calls) - uncached)

    class CayleyMap(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.register_buffer("Id", torch.eye(n))

        def forward(self, X):
            # (I + X)(I - X)^{-1}
            return torch.linalg.solve(self.Id - X, self.Id + X)

    layer = fresh_linear()
    parametrize.register_parametrization(layer, "weight", Skew())
    parametrize.register_parametrization(layer, "weight", CayleyMap(3))
    X = layer.weight
    r["cayley"] = (X, torch.dist(X.T @ X, torch.eye(3)), [n for n, _ in layer.named_buffers()])

    class MatrixExponential(nn.Module):
        def forward(self, X):
            return torch.matrix_exp(X)

    layer_orthogonal = fresh_linear()
    parametrize.register_parametrization(layer_orthogonal, "weight", Skew())
    parametrize.register_parametrization(layer_orthogonal, "weight", MatrixExponential())
    X = layer_orthogonal.weight
    r["expm_orthogonal"] = (X, torch.dist(X.T @ X, torch.eye(3)))

    layer_spd = fresh_linear()
    parametrize.register_parametrization(layer_spd, "weight", Symmetric())
    parametrize.register_parametrization(layer_spd, "weight", MatrixExponential())
    X = layer_spd.weight
    r["spd"] = (X, torch.dist(X, X.T), (torch.linalg.eigvalsh(X) > 0.).all())

    # training through the chains: the gradient reaches the unconstrained original
    x, y = rand(8, 3), rand(8, 3)
    trained = {}
    for name, layer in (("cayley", fresh_linear()), ("expm", fresh_linear()), ("spd", fresh_linear())):
        parametrize.register_parametrization(layer, "weight", Symmetric() if name == "spd" else Skew())
        parametrize.register_parametrization(layer, "weight", MatrixExponential() if name != "cayley" else CayleyMap(3))
        opt = m.optim.Adam(layer.parameters(), lr=0.05)
        losses = []
        for _ in range(5):
            opt.zero_grad()
            loss = nn.functional.mse_loss(layer(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        trained[name] = (losses, layer.parametrizations.weight.original.detach(),
                         layer.parametrizations.weight.original.grad, layer.weight.detach())
    r["trained"] = trained

    class Skew(nn.Module):
        def forward(self, X):
            A = X.triu(1)
            return A - A.transpose(-1, -2)

        def right_inverse(self, A):
            return A.triu(1)

    layer = fresh_linear()
    parametrize.register_parametrization(layer, "weight", Skew())
    X = rand(3, 3)
    X = X - X.T
    layer.weight = X
    r["right_inverse"] = (torch.dist(layer.weight, X), layer.parametrizations.weight.original)

    class CayleyMap(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.register_buffer("Id", torch.eye(n))

        def forward(self, X):
            # Assume X skew-symmetric
            # (I + X)(I - X)^{-1}
            return torch.linalg.solve(self.Id - X, self.Id + X)

        def right_inverse(self, A):
            # Assume A orthogonal
            # (X - I)(X + I)^{-1}
            return torch.linalg.solve(X + self.Id, self.Id - X)

    layer_orthogonal = fresh_linear()
    parametrize.register_parametrization(layer_orthogonal, "weight", Skew())
    parametrize.register_parametrization(layer_orthogonal, "weight", CayleyMap(3))
    X = torch.tensor(weights["orthogonal"])
    layer_orthogonal.weight = X
    r["cayley_init"] = (torch.dist(layer_orthogonal.weight, X), layer_orthogonal.parametrizations.weight.original)
    torch.manual_seed(0)
    layer_orthogonal.weight = nn.init.orthogonal_(layer_orthogonal.weight)
    W = layer_orthogonal.weight
    r["orthogonal_init"] = torch.dist(W.T @ W, torch.eye(3)) < 1e-5

    class PruningParametrization(nn.Module):
        def __init__(self, X, p_drop=0.2):
            super().__init__()
            mask = torch.full_like(X, 1.0 - p_drop)
            self.mask = torch.bernoulli(mask)

        def forward(self, X):
            return X * self.mask

        def right_inverse(self, A):
            return A

    layer = nn.Linear(3, 4)
    X = torch.rand_like(layer.weight)
    parametrize.register_parametrization(layer, "weight", PruningParametrization(layer.weight))
    layer.weight = X
    mask = layer.parametrizations.weight[0].mask
    r["pruned"] = (torch.equal(layer.weight, X * mask), torch.equal(layer.parametrizations.weight.original, X),
                   set(mask.unique().tolist()) <= {0.0, 1.0})

    layer = fresh_linear()
    parametrize.register_parametrization(layer, "weight", Skew())
    parametrize.remove_parametrizations(layer, "weight")
    r["removed"] = (layer.weight, type(layer.weight).__name__, [n for n, _ in layer.named_parameters()],
                    hasattr(layer, "parametrizations"))
    layer = fresh_linear()
    parametrize.register_parametrization(layer, "weight", Skew())
    parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
    r["removed_original"] = layer.weight
    return r


def test_parametrizations_tutorial():
    rng = np.random.default_rng(3)
    Q = np.linalg.qr(rng.standard_normal((3, 3)))[0].astype(np.float32)
    if np.linalg.det(Q) < 0:
        Q[0] = -Q[0]
    weights = {"linear": weights_of(lambda m: m.nn.Linear(3, 3)), "cnn": weights_of(lambda m: m.nn.Conv2d(5, 8, 3)),
               "orthogonal": Q}
    ours, _ = run_both(parametrizations, weights, rtol=1e-5, atol=1e-5)
    W = weights["linear"]["weight"]
    np.testing.assert_allclose(ours["symmetric"], np.triu(W) + np.triu(W, 1).T)
    assert ours["names"] == ["bias", "parametrizations.weight.original"]
    assert ours["kinds"] == ("ModuleDict", "ParametrizationList", "Symmetric", "ParametrizedLinear")
    assert ours["calls"] == (4, 1)  # one call at registration (checking its shape), then one per access
    assert ours["cayley"][1] < 1e-5 and ours["cayley"][2] == ["parametrizations.weight.1.Id"]
    assert ours["expm_orthogonal"][1] < 1e-5
    assert ours["spd"][1] == 0 and ours["spd"][2]
    for losses, *_ in ours["trained"].values():
        assert losses[-1] < losses[0]
    assert ours["right_inverse"][0] < 1e-6
    np.testing.assert_allclose(ours["cayley_init"][1], np.triu(ours["cayley_init"][1], 1))
    # the tutorial's right_inverse solves (A + I) Y = I - A, which is minus the Cayley inverse, so the
    # weight comes back as the inverse of A, its transpose (in both libraries)
    Q = weights["orthogonal"]
    assert ours["cayley_init"][0] == pytest.approx(np.linalg.norm(Q.T - Q), rel=1e-5)
    assert ours["orthogonal_init"]
    assert ours["pruned"] == (True, True, True)
    S = np.triu(W, 1) - np.triu(W, 1).T
    np.testing.assert_allclose(ours["removed"][0], S)
    assert ours["removed"][1:] == ("Parameter", ["bias", "weight"], False)  # re-registered last
    # Skew has a right_inverse by now, which registration applied to the weight: the original kept is its
    # upper triangle, not the weight as it was before (the tutorial's "Same as Before" holds without one)
    np.testing.assert_allclose(ours["removed_original"], np.triu(W, 1))


# ----------------------------------------------------------------------------------------------
# Pretraining VGG from scratch (beginner_source/Pretraining_Vgg_from_scratch.py)
# ----------------------------------------------------------------------------------------------

Config_channels = {"A_lrn": [8, "LRN", "M", 16, "M", 16, 16, "M"]}
Config_kernel = {"A_lrn": [3, 2, 2, 3, 2, 3, 3, 2]}


def vgg(m, weights=None):
    torch, nn, optim = m.torch, m.nn, m.optim
    xavier_count, last_xavier, except_xavier = 2, 2, None

    def make_feature_extractor(cfg_c, cfg_k):
        feature_extract = []
        in_channels = 3
        i = 1
        for out_channels, kernel in zip(cfg_c, cfg_k):
            if out_channels == "M":
                feature_extract += [nn.MaxPool2d(kernel, 2)]
            elif out_channels == "LRN":
                feature_extract += [nn.LocalResponseNorm(5, k=2), nn.ReLU()]
            elif out_channels == 1:
                feature_extract += [nn.Conv2d(in_channels, out_channels, kernel, stride=1), nn.ReLU()]
            else:
                feature_extract += [nn.Conv2d(in_channels, out_channels, kernel, stride=1, padding=1), nn.ReLU()]
            if isinstance(out_channels, int):
                in_channels = out_channels
            i += 1
        return nn.Sequential(*feature_extract)

    class Model_vgg(nn.Module):
        def __init__(self, version, num_classes):
            conv_5_out_w, conv_5_out_h = 2, 2
            conv_5_out_dim = 16
            conv_1_by_1_1_outchannel = 32
            conv_1_by_1_2_outchannel = 32
            self.num_classes = num_classes
            self.linear_out = 32
            self.xavier_count = xavier_count
            self.last_xavier = last_xavier
            self.except_xavier = except_xavier
            super().__init__()
            self.feature_extractor = make_feature_extractor(Config_channels[version], Config_kernel[version])
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.output_layer = nn.Sequential(
                nn.Conv2d(conv_5_out_dim, conv_1_by_1_1_outchannel, 2),
                nn.ReLU(),
                nn.Dropout2d(p=0.0),  # nn.Dropout2d() in the tutorial: the libraries draw different masks
                nn.Conv2d(conv_1_by_1_1_outchannel, conv_1_by_1_2_outchannel, 1),
                nn.ReLU(),
                nn.Dropout2d(p=0.0),
                nn.Conv2d(conv_1_by_1_2_outchannel, num_classes, 1)
            )
            self.apply(self._init_weights)

        def forward(self, x):
            x = self.feature_extractor(x)
            x = self.output_layer(x)
            x = self.avgpool(x)
            x = torch.flatten(x, start_dim=1)
            return x

        @torch.no_grad()
        def _init_weights(self, m):
            if isinstance(m, nn.Conv2d):
                if self.last_xavier > 0 and (self.except_xavier is None or self.last_xavier != self.except_xavier):
                    nn.init.xavier_uniform_(m.weight)
                elif self.xavier_count > 0:
                    nn.init.xavier_uniform_(m.weight)
                    self.xavier_count -= 1
                else:
                    std = 0.1
                    nn.init.normal_(m.weight, std=std)
                self.last_xavier += 1
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    num_classes = 10
    model = Model_vgg("A_lrn", num_classes)
    if weights is None:
        return model
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})

    def accuracy(output, target, topk=(1,)):
        maxk = max(topk)
        batch_size = target.size(0)
        _, pred = output.topk(maxk, 1, True, True)
        pred = pred.t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        res = []
        for k in topk:
            correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
            res.append(correct_k)
        return res

    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.05, weight_decay=5e-4, momentum=0.9)
    scheduler = optim.lr_scheduler.ReduceLROnPlateau(optimizer, 'max', patience=0, threshold=1e-3, eps=1e-5)
    rng = np.random.default_rng(0)
    batch_size, accum_step, update_count, eval_step, clip = 4, 2, 2, 4, 0.5
    images = rng.standard_normal((4 * batch_size, 3, 16, 16)).astype(np.float32)
    labels = rng.integers(0, num_classes, 4 * batch_size)
    train_loader = [(torch.tensor(images[i:i + batch_size]), torch.tensor(labels[i:i + batch_size]))
                    for i in range(0, len(images), batch_size)]
    val_loader = train_loader[:2]
    grad_clip = 1.0
    history = []
    for e in range(2):
        total_loss = 0
        val_iter = iter(val_loader)
        train_acc = [0, 0]
        train_num = 0
        total_acc = [0, 0]
        count = 0
        for i, data in enumerate(train_loader):
            model.train()
            img, label = data
            img, label = img.to("cpu", non_blocking=True), label.to("cpu", non_blocking=True)
            output = model(img)
            loss = criterion(output, label) / accum_step
            temp_output, temp_label = output.detach().to('cpu'), label.detach().to('cpu')
            temp_acc = accuracy(temp_output, temp_label, (1, 5))
            train_acc = [train_acc[0] + temp_acc[0], train_acc[1] + temp_acc[1]]
            train_num += batch_size
            loss.backward()
            total_loss += loss.detach().to('cpu')
            torch.cuda.empty_cache()
            if i > 0 and i % update_count == 0:
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if total_loss < 7.0:
                    grad_clip = clip
                if i % eval_step != 0:
                    total_loss = 0
            if i > 0 and i % eval_step == 0:
                temp_loss = total_loss
                total_loss = 0
                val_loss = 0
                for j in range(update_count):
                    try:
                        img, label = next(val_iter)
                    except StopIteration:
                        val_iter = iter(val_loader)
                        img, label = next(val_iter)
                    with torch.no_grad():
                        model.eval()
                        output = model(img)
                        temp_acc = accuracy(output.detach(), label, (1, 5))
                        total_acc = [total_acc[0] + temp_acc[0], total_acc[1] + temp_acc[1]]
                        count += batch_size
                        loss = criterion(output, label) / accum_step
                        val_loss += loss.detach().to('cpu')
                if abs(val_loss - temp_loss) > 0.03:
                    grad_clip = clip
        top_1_acc, top_5_acc = 100 * total_acc[0] / max(count, 1), 100 * total_acc[1] / max(count, 1)
        top_1_train, top_5_train = 100 * train_acc[0] / train_num, 100 * train_acc[1] / train_num
        scheduler.step(top_5_train)
        history.append((top_1_train, top_5_train, top_5_acc, optimizer.param_groups[0]["lr"], grad_clip))
    return {"history": history, "params": dict(model.state_dict()),
            "grads": [p.grad is None for p in model.parameters()]}


def test_vgg_from_scratch():
    ours, _ = run_both(vgg, weights_of(lambda m: vgg(m)), rtol=2e-4, atol=2e-5)
    top1, top5, val5, lr, clip = ours["history"][0]
    assert top1.shape == (1,) and 0 <= top1[0] <= top5[0] <= 100
    assert ours["grads"] == [False] * len(ours["grads"])  # the last batch's gradient waits for the next update
    assert ours["history"][1][3] <= 0.05
