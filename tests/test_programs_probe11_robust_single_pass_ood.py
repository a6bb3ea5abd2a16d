# ruff: noqa: B007, E501, E731, F841  (the programs are kept as their authors wrote them)
"""Adversarial robustness, interpretability and uncertainty as their reference repositories write them, run as
tests/probe11_robust_common.py says. Uncertainty in one forward pass, and detecting what is out of distribution:
evidential regression and classification losses (lgamma, digamma, float32 constants beside float64 evidence), SNGP as
y0ast/DUE writes it (both spectral_norm forms, random Fourier features from QR blocks, the precision under no_grad,
``cholesky_ex``, ``cholesky_inverse(out=)``), and out-of-distribution scores (ODIN's ``torch.add(x, -eps,
gradient)``, the Mahalanobis detector, energy, GradNorm)."""

import math

import numpy as np

from .probe11_robust_common import cnn64, images, small_cnn, tabular
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Evidential deep learning: regression (Amini et al.: a DenseNormalGamma head, the NIG NLL with
# lgamma and its evidence regulariser) and classification (Sensoy et al. as dougbrion/pytorch-
# classification-uncertainty writes it: digamma / log / MSE losses, an annealed KL to the uniform
# Dirichlet, float32 constants mixed with float64 evidence)
# ----------------------------------------------------------------------------------------------


def evidential(m, reg_weights, cls_weights, epochs=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    device = None

    class DenseNormalGamma(nn.Module):
        def __init__(self, in_features, out_units=1):
            super().__init__()
            self.dense = nn.Linear(in_features, 4 * out_units)

        def evidence(self, x):
            return F.softplus(x)

        def forward(self, x):
            output = self.dense(x)
            mu, logv, logalpha, logbeta = torch.split(output, output.shape[-1] // 4, dim=-1)
            v = self.evidence(logv)
            alpha = self.evidence(logalpha) + 1
            beta = self.evidence(logbeta)
            return torch.cat([mu, v, alpha, beta], dim=-1)

    def NIG_NLL(y, gamma, v, alpha, beta, reduce=True):
        twoBlambda = 2 * beta * (1 + v)
        nll = 0.5 * torch.log(np.pi / v) \
            - alpha * torch.log(twoBlambda) \
            + (alpha + 0.5) * torch.log(v * (y - gamma) ** 2 + twoBlambda) \
            + torch.lgamma(alpha) \
            - torch.lgamma(alpha + 0.5)
        return torch.mean(nll) if reduce else nll

    def NIG_Reg(y, gamma, v, alpha, beta, reduce=True):
        error = torch.abs(y - gamma)
        evi = 2 * v + alpha
        reg = error * evi
        return torch.mean(reg) if reduce else reg

    def EvidentialRegression(y_true, evidential_output, coeff=1e-2):
        gamma, v, alpha, beta = torch.split(evidential_output, 1, dim=-1)
        loss_nll = NIG_NLL(y_true, gamma, v, alpha, beta)
        loss_reg = NIG_Reg(y_true, gamma, v, alpha, beta)
        return loss_nll + coeff * loss_reg

    rng = np.random.default_rng(21)
    xn = rng.uniform(-4, 4, (48, 1))
    yn = xn ** 3 / 20 + rng.standard_normal((48, 1)) * 0.3
    x, yr = torch.from_numpy(xn), torch.from_numpy(yn)
    reg = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), DenseNormalGamma(16)).double()
    load(m, reg, reg_weights)
    opt = optim.Adam(reg.parameters(), lr=5e-3)
    reg_log = []
    for epoch in range(epochs):
        opt.zero_grad()
        loss = EvidentialRegression(yr, reg(x))
        loss.backward()
        opt.step()
        reg_log.append(loss.item())
    with torch.no_grad():
        mu, v, alpha, beta = torch.split(reg(torch.linspace(-6, 6, 7, dtype=torch.float64).unsqueeze(1)), 1, dim=-1)
        aleatoric = beta / (alpha - 1)
        epistemic = beta / (v * (alpha - 1))

    def relu_evidence(y):
        return F.relu(y)

    def exp_evidence(y):
        return torch.exp(torch.clamp(y, -10, 10))

    def softplus_evidence(y):
        return F.softplus(y)

    def kl_divergence(alpha, num_classes, device=None):
        ones = torch.ones([1, num_classes], dtype=torch.float32, device=device)
        sum_alpha = torch.sum(alpha, dim=1, keepdim=True)
        first_term = (
            torch.lgamma(sum_alpha)
            - torch.lgamma(alpha).sum(dim=1, keepdim=True)
            + torch.lgamma(ones).sum(dim=1, keepdim=True)
            - torch.lgamma(ones.sum(dim=1, keepdim=True))
        )
        second_term = (
            (alpha - ones)
            .mul(torch.digamma(alpha) - torch.digamma(sum_alpha))
            .sum(dim=1, keepdim=True)
        )
        kl = first_term + second_term
        return kl

    def loglikelihood_loss(y, alpha, device=None):
        y = y.to(device)
        alpha = alpha.to(device)
        S = torch.sum(alpha, dim=1, keepdim=True)
        loglikelihood_err = torch.sum((y - (alpha / S)) ** 2, dim=1, keepdim=True)
        loglikelihood_var = torch.sum(
            alpha * (S - alpha) / (S * S * (S + 1)), dim=1, keepdim=True
        )
        loglikelihood = loglikelihood_err + loglikelihood_var
        return loglikelihood

    def mse_loss(y, alpha, epoch_num, num_classes, annealing_step, device=None):
        y = y.to(device)
        alpha = alpha.to(device)
        loglikelihood = loglikelihood_loss(y, alpha, device=device)
        annealing_coef = torch.min(
            torch.tensor(1.0, dtype=torch.float32),
            torch.tensor(epoch_num / annealing_step, dtype=torch.float32),
        )
        kl_alpha = (alpha - 1) * (1 - y) + 1
        kl_div = annealing_coef * kl_divergence(kl_alpha, num_classes, device=device)
        return loglikelihood + kl_div

    def edl_loss(func, y, alpha, epoch_num, num_classes, annealing_step, device=None):
        y = y.to(device)
        alpha = alpha.to(device)
        S = torch.sum(alpha, dim=1, keepdim=True)
        A = torch.sum(y * (func(S) - func(alpha)), dim=1, keepdim=True)
        annealing_coef = torch.min(
            torch.tensor(1.0, dtype=torch.float32),
            torch.tensor(epoch_num / annealing_step, dtype=torch.float32),
        )
        kl_alpha = (alpha - 1) * (1 - y) + 1
        kl_div = annealing_coef * kl_divergence(kl_alpha, num_classes, device=device)
        return A + kl_div

    def edl_mse_loss(output, target, epoch_num, num_classes, annealing_step, device=None):
        evidence = relu_evidence(output)
        alpha = evidence + 1
        loss = torch.mean(mse_loss(target, alpha, epoch_num, num_classes, annealing_step, device=device))
        return loss

    def edl_log_loss(output, target, epoch_num, num_classes, annealing_step, device=None):
        evidence = softplus_evidence(output)
        alpha = evidence + 1
        loss = torch.mean(edl_loss(torch.log, target, alpha, epoch_num, num_classes, annealing_step, device))
        return loss

    def edl_digamma_loss(output, target, epoch_num, num_classes, annealing_step, device=None):
        evidence = exp_evidence(output)
        alpha = evidence + 1
        loss = torch.mean(edl_loss(torch.digamma, target, alpha, epoch_num, num_classes, annealing_step, device))
        return loss

    Xc, yc = tabular(64, seed=3)
    Xc, yc = torch.from_numpy(Xc), torch.from_numpy(yc)
    num_classes = 4
    cls_out = {}
    for name, criterion in (("mse", edl_mse_loss), ("log", edl_log_loss), ("digamma", edl_digamma_loss)):
        model = load(m, nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4)), cls_weights).double()
        optimizer = optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.005)
        losses = []
        for epoch in range(epochs):
            optimizer.zero_grad()
            outputs = model(Xc)
            _, preds = torch.max(outputs, 1)
            y = torch.eye(num_classes)[yc]  # one-hot, float32
            loss = criterion(outputs, y.double(), epoch, num_classes, 10, device)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        with torch.no_grad():
            outputs = model(Xc)
            evidence = relu_evidence(outputs)
            alpha = evidence + 1
            uncertainty = num_classes / torch.sum(alpha, dim=1, keepdim=True)
            prob = alpha / torch.sum(alpha, dim=1, keepdim=True)
        cls_out[name] = (losses, uncertainty, prob, [p.grad for p in model.parameters()])
    # the float32 constants against float64 evidence: the KL's dtype, and its value against Dirichlet's
    alpha64 = torch.from_numpy(np.random.default_rng(4).uniform(0.5, 4, (3, 4)))
    kl = kl_divergence(alpha64, 4)
    return {"reg": (reg_log, mu, aleatoric, epistemic, [p.grad for p in reg.parameters()]), "cls": cls_out,
            "kl": (kl, kl.dtype == torch.float64)}


def cls_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4))


def evidential_net(m):
    nn = m.nn

    class DenseNormalGamma(nn.Module):
        def __init__(self, in_features, out_units=1):
            super().__init__()
            self.dense = nn.Linear(in_features, 4 * out_units)

    return nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), DenseNormalGamma(16))


def test_evidential_regression_and_classification():
    ours, _ = run_both(evidential, weights_of(evidential_net), weights_of(cls_net, seed=3), rtol=1e-8, atol=1e-10)
    kl, dtype = ours["kl"]
    assert dtype is True  # the float32 constants did not narrow the float64 evidence
    # KL(Dir(alpha) || Dir(1)) by SciPy-free hand: lgamma / digamma from math
    alpha = np.random.default_rng(4).uniform(0.5, 4, (3, 4))
    digamma = lambda z: float(OURS.torch.digamma(OURS.torch.tensor(z, dtype=OURS.torch.float64)))
    for row, value in zip(alpha, kl[:, 0]):
        s = row.sum()
        expected = (math.lgamma(s) - sum(math.lgamma(a) for a in row) - math.lgamma(4)
                    + sum((a - 1) * (digamma(a) - digamma(s)) for a in row))
        assert abs(value - expected) < 1e-6  # lgamma(ones.sum()) is float32, as in PyTorch
    reg_log, mu, aleatoric, epistemic, grads = ours["reg"]
    assert (aleatoric > 0).all() and (epistemic > 0).all()


# ----------------------------------------------------------------------------------------------
# SNGP as y0ast/DUE writes it: a spectrally normalised residual feature extractor (the hook form
# nn.utils.spectral_norm and the parametrization), a Johnson-Lindenstrauss projection, random Fourier
# features from orthogonal blocks (torch.linalg.qr), the precision matrix accumulated under no_grad,
# the covariance by cholesky_ex / cholesky_inverse(out=), mean-field logits
# ----------------------------------------------------------------------------------------------


def sngp_model(m):
    torch, nn, F = m.torch, m.nn, m.F

    def random_ortho(n, m):
        q, _ = torch.linalg.qr(torch.randn(n, m))
        return q

    class RandomFourierFeatures(nn.Module):
        def __init__(self, in_dim, num_random_features, feature_scale=None):
            super().__init__()
            if feature_scale is None:
                feature_scale = math.sqrt(num_random_features / 2)
            self.register_buffer("feature_scale", torch.tensor(feature_scale))
            if num_random_features <= in_dim:
                W = random_ortho(in_dim, num_random_features)
            else:
                # generate blocks of orthonormal rows which are not neccesarily orthonormal to each other.
                dim_left = num_random_features
                ws = []
                while dim_left > in_dim:
                    ws.append(random_ortho(in_dim, in_dim))
                    dim_left -= in_dim
                ws.append(random_ortho(in_dim, dim_left))
                W = torch.cat(ws, 1)
            # From: https://github.com/google/edward2/blob/d672c93b179bfcc99dd52228492c53d38cf074ba/edward2/tensorflow/initializers.py#L807-L817
            feature_norm = torch.randn(W.shape) ** 2
            W = W * feature_norm.sum(0).sqrt()
            self.register_buffer("W", W)
            b = torch.empty(num_random_features).uniform_(0, 2 * math.pi)
            self.register_buffer("b", b)

        def forward(self, x):
            k = torch.cos(x @ self.W + self.b)
            k = k / self.feature_scale
            return k

    class FeatureExtractor(nn.Module):
        def __init__(self, in_dim=2, hidden=16, depth=3, dropout=0.0):
            super().__init__()
            self.first = nn.utils.spectral_norm(nn.Linear(in_dim, hidden))
            self.residuals = nn.ModuleList([nn.utils.parametrizations.spectral_norm(nn.Linear(hidden, hidden))
                                            for _ in range(depth)])
            self.dropout = nn.Dropout(dropout)
            self.activation = F.relu

        def forward(self, x):
            x = self.first(x)
            for residual in self.residuals:
                x = self.dropout(self.activation(residual(x))) + x
            return x

    class Laplace(nn.Module):
        def __init__(self, feature_extractor, num_deep_features, num_gp_features, normalize_gp_features,
                     num_random_features, num_outputs, num_data, train_batch_size, ridge_penalty=1.0,
                     feature_scale=None, mean_field_factor=None):
            super().__init__()
            self.feature_extractor = feature_extractor
            self.mean_field_factor = mean_field_factor
            self.ridge_penalty = ridge_penalty
            self.train_batch_size = train_batch_size
            if num_gp_features > 0:
                self.num_gp_features = num_gp_features
                self.register_buffer("random_matrix", torch.normal(0, 0.05, (num_gp_features, num_deep_features)))
                self.jl = lambda x: nn.functional.linear(x, self.random_matrix)
            else:
                self.num_gp_features = num_deep_features
                self.jl = nn.Identity()
            self.normalize_gp_features = normalize_gp_features
            if normalize_gp_features:
                self.normalize = nn.LayerNorm(num_gp_features)
            self.rff = RandomFourierFeatures(num_gp_features, num_random_features, feature_scale)
            self.beta = nn.Linear(num_random_features, num_outputs)
            self.num_data = num_data
            self.train_batch_size = train_batch_size
            precision = torch.eye(num_random_features) * self.ridge_penalty
            self.register_buffer("precision", precision)
            self.recompute_covariance = True
            self.register_buffer("covariance", torch.eye(num_random_features))

        def reset_precision_matrix(self):
            identity = torch.eye(self.precision.shape[0], device=self.precision.device, dtype=self.precision.dtype)
            self.precision = identity * self.ridge_penalty
            self.covariance = identity
            self.recompute_covariance = True

        def mean_field_logits(self, logits, pred_cov):
            # Mean-Field approximation as alternative to MC integration of Gaussian-Softmax
            # Based on: https://arxiv.org/abs/2006.07584
            logits_scale = torch.sqrt(1.0 + torch.diag(pred_cov) * self.mean_field_factor)
            if self.mean_field_factor > 0:
                logits = logits / logits_scale.unsqueeze(-1)
            return logits

        def forward(self, x):
            f = self.feature_extractor(x)
            f_reduc = self.jl(f)
            if self.normalize_gp_features:
                f_reduc = self.normalize(f_reduc)
            k = self.rff(f_reduc)
            pred = self.beta(k)
            if self.training:
                with torch.no_grad():
                    precision_minibatch = k.t() @ k
                    self.precision += precision_minibatch
            else:
                if self.recompute_covariance:
                    with torch.no_grad():
                        eps = 1e-7
                        jitter = eps * torch.eye(self.precision.shape[1], device=self.precision.device,
                                                 dtype=self.precision.dtype)
                        u, info = torch.linalg.cholesky_ex(self.precision + jitter)
                        assert (info == 0).all(), "Precision matrix inversion failed!"
                        torch.cholesky_inverse(u, out=self.covariance)
                    self.recompute_covariance = False
                with torch.no_grad():
                    pred_cov = k @ ((self.covariance @ k.t()) * self.ridge_penalty)
                if self.mean_field_factor is None:
                    return pred, pred_cov
                else:
                    return self.mean_field_logits(pred, pred_cov)
            return pred

    return Laplace(FeatureExtractor(), 16, 8, True, 40, 2, 64, 32, ridge_penalty=1.0, mean_field_factor=math.pi / 8)


def sngp(m, weights, epochs=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, sngp_model(m), weights).double()
    rng = np.random.default_rng(31)
    # two moons, by hand
    t = rng.uniform(0, math.pi, 64)
    labels = rng.integers(0, 2, 64)
    Xn = np.stack([np.cos(t) + labels * 1.0, np.sin(t) * (1 - 2 * labels) + labels * 0.5], 1) + 0.1 * rng.standard_normal((64, 2))
    X, y = torch.from_numpy(Xn), torch.from_numpy(labels)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    log = []
    for epoch in range(epochs):
        model.train()
        model.reset_precision_matrix()  # DUE resets the precision at each epoch's start
        for i in range(0, 64, 32):
            optimizer.zero_grad()
            logits = model(X[i:i + 32])
            loss = F.cross_entropy(logits, y[i:i + 32])
            loss.backward()
            optimizer.step()
            log.append(loss.item())
    model.eval()
    grid = torch.from_numpy(np.stack(np.meshgrid(np.linspace(-2, 3, 4), np.linspace(-2, 2, 3)), -1).reshape(-1, 2))
    with torch.no_grad():
        logits = model(grid)
        probs = logits.softmax(-1)
        uncertainty = -(probs * probs.log()).sum(1)
    # the spectral norms the power iterations reached
    sigmas = [torch.linalg.matrix_norm(model.feature_extractor.first.weight, ord=2)] + [
        torch.linalg.matrix_norm(r.weight, ord=2) for r in model.feature_extractor.residuals]
    return {"log": log, "logits": logits, "uncertainty": uncertainty, "precision": model.precision,
            "covariance": model.covariance, "sigmas": [s.detach() for s in sigmas],
            "params": [p.detach() for p in model.parameters()], "grads": [p.grad for p in model.parameters()]}


def test_sngp_spectral_norm_random_features_precision():
    OURS.torch.manual_seed(0)
    weights = {k: v.astype(np.float64) for k, v in weights_of(sngp_model).items()}
    ours, _ = run_both(sngp, weights, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["covariance"] @ ours["precision"], np.eye(40), atol=1e-6)
    # each layer's largest singular value about 1 (one power iteration per step: 1.117 for the first layer from
    # PyTorch's initial weights for seed 0, in both libraries)
    assert all(abs(s - 1) < 0.15 for s in ours["sigmas"])


# ----------------------------------------------------------------------------------------------
# Out-of-distribution scores: ODIN (facebookresearch/odin: temperature, the input perturbed against
# the gradient's sign by torch.add(input, -eps, gradient)), the Mahalanobis detector (pokaxpoka/
# deep_Mahalanobis_detector: class means, a tied precision, input processing through torch.mm),
# the energy score, and GradNorm (the KL to uniform's gradient norm in the last layer)
# ----------------------------------------------------------------------------------------------


def ood_scores(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    Variable = torch.autograd.Variable
    net1 = cnn64(m, weights).eval()
    Xn, yn = images(12, seed=6)
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)
    criterion = nn.CrossEntropyLoss()
    temper, noiseMagnitude1 = 1000.0, 0.0014

    odin = []
    for j in range(4):
        inputs = Variable(X[j:j + 1], requires_grad=True)
        outputs = net1(inputs)
        nnOutputs = outputs.data.numpy()[0]
        nnOutputs = nnOutputs - np.max(nnOutputs)
        nnOutputs = np.exp(nnOutputs) / np.sum(np.exp(nnOutputs))
        maxIndexTemp = np.argmax(nnOutputs)
        labels = Variable(torch.LongTensor([maxIndexTemp]))
        # Using temperature scaling
        outputs = outputs / temper
        loss = criterion(outputs, labels)
        loss.backward()
        # Normalizing the gradient to binary in {0, 1}
        gradient = torch.ge(inputs.grad.data, 0)
        gradient = (gradient.float() - 0.5) * 2
        # Normalizing the gradient to the same space of image
        gradient[0][0] = (gradient[0][0]) / (63.0 / 255.0)
        # Adding small perturbations to images
        tempInputs = torch.add(inputs.data, -noiseMagnitude1, gradient)
        outputs = net1(Variable(tempInputs))
        outputs = outputs / temper
        # Calculating the confidence after adding perturbations
        nnOutputs = outputs.data.numpy()[0]
        nnOutputs = nnOutputs - np.max(nnOutputs)
        nnOutputs = np.exp(nnOutputs) / np.sum(np.exp(nnOutputs))
        odin.append(np.max(nnOutputs))

    # Mahalanobis: class-conditional means and a tied covariance of the penultimate features
    def intermediate_forward(x):
        return net1[:4](x)  # (n, 6, 4, 4)

    num_classes = 3
    with torch.no_grad():
        feats = intermediate_forward(X).view(len(X), 6, -1).mean(2)
    sample_mean = torch.stack([feats[y == c].mean(0) for c in range(num_classes)])
    centered = feats - sample_mean[y]
    cov = centered.t() @ centered / len(X)
    precision = torch.linalg.pinv(cov + 1e-3 * torch.eye(6, dtype=cov.dtype))

    data = Variable(X[:5], requires_grad=True)
    out_features = intermediate_forward(data)
    out_features = out_features.view(out_features.size(0), out_features.size(1), -1)
    out_features = torch.mean(out_features, 2)
    gaussian_score = 0
    for i in range(num_classes):
        batch_sample_mean = sample_mean[i]
        zero_f = out_features.data - batch_sample_mean
        term_gau = -0.5 * torch.mm(torch.mm(zero_f, precision), zero_f.t()).diag()
        if i == 0:
            gaussian_score = term_gau.view(-1, 1)
        else:
            gaussian_score = torch.cat((gaussian_score, term_gau.view(-1, 1)), 1)
    # Input_processing
    sample_pred = gaussian_score.max(1)[1]
    batch_sample_mean = sample_mean.index_select(0, sample_pred)
    zero_f = out_features - Variable(batch_sample_mean)
    pure_gau = -0.5 * torch.mm(torch.mm(zero_f, Variable(precision)), zero_f.t()).diag()
    loss = torch.mean(-pure_gau)
    loss.backward()
    gradient = torch.ge(data.grad.data, 0)
    gradient = (gradient.float() - 0.5) * 2
    gradient.index_copy_(1, torch.LongTensor([0]), gradient.index_select(1, torch.LongTensor([0])) / (63.0 / 255.0))
    tempInputs = torch.add(data.data, -0.01, gradient)
    with torch.no_grad():
        noise_out_features = intermediate_forward(Variable(tempInputs))
    noise_out_features = noise_out_features.view(noise_out_features.size(0), noise_out_features.size(1), -1)
    noise_out_features = torch.mean(noise_out_features, 2)
    noise_gaussian_score = 0
    for i in range(num_classes):
        batch_sample_mean = sample_mean[i]
        zero_f = noise_out_features.data - batch_sample_mean
        term_gau = -0.5 * torch.mm(torch.mm(zero_f, precision), zero_f.t()).diag()
        if i == 0:
            noise_gaussian_score = term_gau.view(-1, 1)
        else:
            noise_gaussian_score = torch.cat((noise_gaussian_score, term_gau.view(-1, 1)), 1)
    noise_gaussian_score, _ = torch.max(noise_gaussian_score, dim=1)

    # energy score, and GradNorm
    with torch.no_grad():
        energy = -1.0 * torch.logsumexp(net1(X) / 1.0, dim=1)
    logsoftmax = nn.LogSoftmax(dim=-1)
    gradnorms = []
    for i in range(4):
        net1.zero_grad()
        outputs = net1(X[i:i + 1])
        targets = torch.ones((1, num_classes), dtype=torch.float64)
        loss = torch.mean(torch.sum(-targets * logsoftmax(outputs / 1.0), dim=-1))
        loss.backward()
        layer_grad = net1[-1].weight.grad.data
        gradnorms.append(torch.sum(torch.abs(layer_grad)).numpy().item())
    return {"odin": odin, "gaussian": gaussian_score, "mahalanobis": noise_gaussian_score, "energy": energy,
            "gradnorm": gradnorms, "data_grad": data.grad}


def test_odin_mahalanobis_energy_gradnorm():
    ours, _ = run_both(ood_scores, weights_of(small_cnn), rtol=1e-8, atol=1e-10)
    assert (ours["gaussian"] <= 0).all() and (ours["mahalanobis"] <= 0).all()
    assert all(0.3 < s < 0.34 for s in ours["odin"])  # T = 1000 flattens the softmax to about 1/3
