# ruff: noqa: E501, E731, F841  (the programs are kept as their authors wrote them)
"""Model interpretability as PyTorch users and Captum's sources write it, run as tests/probe16_explain_common.py
says. Gradients: saliency (all classes at once by ``is_grads_batched``), Captum's integrated gradients (Riemann and
Gauss-Legendre rules, ``torch.unbind`` outputs, two inputs), NoiseTunnel (SmoothGrad, VarGrad), integrated Hessians
(double backward, ``torch.func.hessian`` under vmap, jacrev/jacfwd), LSTM saliency through packing, layer IG on an
embedding (a hook replacing its output; Captum's InterpretableEmbedding swap), forward-mode directional derivatives
through a hook returning a dual tensor."""

import numpy as np

from .probe16_explain_common import cnn, images, mlp, tabular
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Saliency and integrated gradients (Captum's approximation methods)
# ----------------------------------------------------------------------------------------------


def riemann_builders(torch, method):
    def step_sizes(n):
        deltas = [1 / n] * n
        if method == "riemann_trapezoid":
            deltas[0] /= 2
            deltas[-1] /= 2
        return deltas

    def alphas(n):
        if method == "riemann_trapezoid":
            return torch.linspace(0, 1, n).tolist()
        elif method == "riemann_left":
            return torch.linspace(0, 1 - 1 / n, n).tolist()
        elif method == "riemann_middle":
            return torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n).tolist()
        elif method == "riemann_right":
            return torch.linspace(1 / n, 1, n).tolist()

    return step_sizes, alphas


def gauss_legendre_builders():
    def step_sizes(n):
        return list(0.5 * np.polynomial.legendre.leggauss(n)[1])

    def alphas(n):
        return list(0.5 * (1 + np.polynomial.legendre.leggauss(n)[0]))

    return step_sizes, alphas


def saliency_and_ig(m, weights, mlp_weights):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, cnn(m), weights).double().eval()
    X = torch.from_numpy(images())
    out = {}

    # vanilla saliency, the tutorial way: one logit of one image, backward, the channel maximum of |grad|
    x = X[:1].clone()
    x.requires_grad_()
    scores = model(x)
    score_max_index = scores.argmax()
    score_max = scores[0, score_max_index]
    score_max.backward()
    saliency, _ = torch.max(x.grad.data.abs(), dim=1)
    out["saliency"] = (saliency, x.grad.abs().amax(dim=1), score_max_index)

    # every class's saliency at once: batched grad_outputs
    xb = X.clone().requires_grad_(True)
    logits = model(xb)
    eye = torch.eye(4, dtype=logits.dtype).unsqueeze(1).expand(4, len(xb), 4)
    (all_grads,) = torch.autograd.grad(logits, xb, grad_outputs=eye, retain_graph=True, is_grads_batched=True)
    per_class = []
    for c in range(4):
        per_class.append(torch.autograd.grad(logits[:, c].sum(), xb, retain_graph=True)[0])
    out["all_classes"] = (all_grads, torch.stack(per_class))

    # integrated gradients, as Captum's IntegratedGradients._attribute writes them
    def compute_gradients(forward_fn, inputs, target_ind):
        with torch.autograd.set_grad_enabled(True):
            output = forward_fn(*inputs)
            if isinstance(target_ind, int):
                outputs = output[:, target_ind]
            else:
                outputs = torch.gather(output, 1, target_ind.reshape(len(output), 1))
            assert outputs[0].numel() == 1, "Target not provided when necessary, cannot take gradient with respect to multiple outputs."
            grads = torch.autograd.grad(torch.unbind(outputs), inputs)
        return grads

    def _reshape_and_sum(tensor_input, num_steps, num_examples, layer_size):
        return torch.sum(tensor_input.reshape((num_steps, num_examples) + layer_size), dim=0)

    def integrated_gradients(forward_fn, inputs, baselines, target, n_steps=50, method="gausslegendre"):
        if method == "gausslegendre":
            step_sizes_func, alphas_func = gauss_legendre_builders()
        else:
            step_sizes_func, alphas_func = riemann_builders(torch, method)
        step_sizes, alphas = step_sizes_func(n_steps), alphas_func(n_steps)
        scaled_features_tpl = tuple(
            torch.cat([baseline + alpha * (input - baseline) for alpha in alphas], dim=0).requires_grad_()
            for input, baseline in zip(inputs, baselines)
        )
        if isinstance(target, int):
            expanded_target = target
        else:
            expanded_target = target.repeat(n_steps)
        grads = compute_gradients(forward_fn, scaled_features_tpl, expanded_target)
        scaled_grads = [
            grad.contiguous().view(n_steps, -1) * torch.tensor(step_sizes).view(n_steps, 1).to(grad.device)
            for grad in grads
        ]
        total_grads = tuple(
            _reshape_and_sum(scaled_grad, n_steps, grad.shape[0] // n_steps, grad.shape[1:])
            for (scaled_grad, grad) in zip(scaled_grads, grads)
        )
        attributions = tuple(total_grad * (input - baseline) for total_grad, input, baseline in zip(total_grads, inputs, baselines))
        return attributions

    def convergence_delta(forward_fn, attributions, inputs, baselines, target):
        with torch.no_grad():
            start = torch.gather(forward_fn(*baselines), 1, target.view(-1, 1)).squeeze(1)
            end = torch.gather(forward_fn(*inputs), 1, target.view(-1, 1)).squeeze(1)
        row_sums = sum(a.reshape(a.shape[0], -1).sum(1) for a in attributions)
        return row_sums - (end - start)

    target = torch.tensor([0, 3, 1])
    baselines = (torch.zeros_like(X),)
    for method in ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_middle", "riemann_right"):
        (attr,) = integrated_gradients(model, (X,), baselines, target, n_steps=24, method=method)
        out["ig_" + method] = (attr, convergence_delta(model, (attr,), (X,), baselines, target))
    (attr_int,) = integrated_gradients(model, (X,), baselines, 2, n_steps=8)
    out["ig_int_target"] = attr_int

    # two inputs at once: an MLP over the concatenation of two feature groups
    net = load(m, mlp(m), mlp_weights).double().eval()
    forward_two = lambda a, b: net(torch.cat([a, b], dim=1))
    T = torch.from_numpy(tabular())
    a, b = T[:, :4], T[:, 4:]
    two = integrated_gradients(forward_two, (a, b), (torch.full_like(a, 0.1), torch.zeros_like(b)), torch.tensor([0, 1, 2, 0, 1]), n_steps=64)
    out["ig_two"] = (two, convergence_delta(forward_two, two, (a, b), (torch.full_like(a, 0.1), torch.zeros_like(b)), torch.tensor([0, 1, 2, 0, 1])))
    return out


def test_saliency_and_integrated_gradients():
    ours, theirs = run_both(saliency_and_ig, weights_of(cnn), weights_of(mlp, seed=1), rtol=1e-9, atol=1e-11)
    sal, sal2, _ = ours["saliency"]
    np.testing.assert_array_equal(sal, sal2)
    batched, looped = ours["all_classes"]
    np.testing.assert_allclose(batched, looped, rtol=1e-12, atol=1e-15)
    # completeness: Gauss-Legendre converges fastest; the piecewise-linear ReLU net makes every rule close
    assert np.abs(ours["ig_gausslegendre"][1]).max() < 2e-3
    assert np.abs(ours["ig_riemann_trapezoid"][1]).max() < 2e-2
    assert np.abs(ours["ig_two"][1]).max() < 1e-3


# ----------------------------------------------------------------------------------------------
# NoiseTunnel: SmoothGrad, SmoothGrad-squared and VarGrad over seeded noise
# ----------------------------------------------------------------------------------------------


def noise_tunnel(m, weights, nt_samples=6, stdevs=0.2):
    torch = m.torch
    model = load(m, cnn(m), weights).double().eval()
    X = torch.from_numpy(images(2))
    torch.manual_seed(7)

    def add_noise_to_inputs(input, stdev, nt_samples):
        bsz = input.shape[0]
        input_expanded_size = (bsz * nt_samples,) + tuple(input.shape[1:])
        stdev_expanded = torch.tensor(stdev, device=input.device).repeat(input_expanded_size)
        noise = torch.normal(0, stdev_expanded)
        return input.repeat_interleave(nt_samples, dim=0) + noise, noise

    def saliency(inputs, target):
        inputs = inputs.detach().requires_grad_(True)
        out = model(inputs)
        grads = torch.autograd.grad(torch.unbind(out[:, target]), inputs)[0]
        return grads

    noisy, noise = add_noise_to_inputs(X, stdevs, nt_samples)
    grads = saliency(noisy, 1)
    grads_sq = grads * grads
    expected = grads.view((X.shape[0], -1) + tuple(grads.shape[1:])).sum(dim=1) / nt_samples
    expected_sq = grads_sq.view((X.shape[0], -1) + tuple(grads.shape[1:])).sum(dim=1) / nt_samples
    vargrad = expected_sq - expected * expected
    # the same, by an explicit loop over samples and torch.var(unbiased=False)
    looped = torch.stack([saliency(noisy[i::nt_samples], 1) for i in range(nt_samples)])
    return {"noise": noise, "smoothgrad": expected, "smoothgrad_sq": expected_sq, "vargrad": vargrad,
            "var_by_var": looped.var(dim=0, unbiased=False), "dtype": str(noise.dtype).split(".")[-1]}


def test_noise_tunnel_smoothgrad_vargrad():
    # float32 normals differ from PyTorch's vectorised Box-Muller by a few ulps (autograd/mersenne.py)
    ours, _ = run_both(noise_tunnel, weights_of(cnn), rtol=1e-5, atol=1e-7)
    assert ours["dtype"] == "float32"  # the noise is float32 (torch.tensor of a float); the sum promotes
    assert np.all(ours["vargrad"] > -1e-12)


# ----------------------------------------------------------------------------------------------
# Text attributions: layer integrated gradients on an embedding (a forward hook replacing its output,
# Captum's LayerIntegratedGradients) against Captum's older InterpretableEmbedding (the embedding module
# swapped for one that passes precomputed embeddings through)
# ----------------------------------------------------------------------------------------------


def text_model(m):
    torch, nn = m.torch, m.nn

    class TextClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(20, 8, padding_idx=0)
            self.conv = nn.Conv1d(8, 6, 3, padding=1)
            self.fc = nn.Linear(6, 2)

        def forward(self, text):
            embedded = self.embedding(text).permute(0, 2, 1)
            conved = torch.relu(self.conv(embedded))
            pooled = torch.max(conved, dim=2).values
            return self.fc(pooled)

    return TextClassifier()


def text_attributions(m, weights, n_steps=32):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, text_model(m), weights).double().eval()
    tokens = torch.tensor([[3, 7, 11, 2, 5, 0, 0], [9, 1, 4, 4, 13, 17, 6]])
    ref_tokens = torch.zeros_like(tokens)
    target = torch.tensor([1, 0])

    with torch.no_grad():
        inp_emb = model.embedding(tokens)
        ref_emb = model.embedding(ref_tokens)
    alphas = torch.linspace(0, 1, n_steps, dtype=torch.float64)
    scaled = torch.cat([ref_emb + a * (inp_emb - ref_emb) for a in alphas.tolist()]).requires_grad_()

    def layer_forward_hook(module, hook_inputs, hook_outputs=None):
        return scaled

    hook = model.embedding.register_forward_hook(layer_forward_hook)
    try:
        out = model(tokens.repeat(n_steps, 1))
    finally:
        hook.remove()
    sel = out.gather(1, target.repeat(n_steps).unsqueeze(1)).sum()
    (grads,) = torch.autograd.grad(sel, scaled)
    step_sizes = torch.full((n_steps,), 1.0 / (n_steps - 1), dtype=torch.float64)
    step_sizes[0] /= 2
    step_sizes[-1] /= 2
    total = (grads.view(n_steps, *inp_emb.shape) * step_sizes.view(-1, 1, 1, 1)).sum(0)
    attributions = (inp_emb - ref_emb) * total
    per_token = attributions.sum(dim=2)
    per_token = per_token / torch.norm(per_token, dim=1, keepdim=True)

    # InterpretableEmbedding: the embedding swapped out, embeddings fed in directly
    class InterpretableEmbeddingBase(nn.Module):
        def __init__(self, embedding, full_name):
            super().__init__()
            self.num_embeddings = getattr(embedding, "num_embeddings", None)
            self.embedding_dim = getattr(embedding, "embedding_dim", None)
            self.embedding = embedding
            self.full_name = full_name

        def forward(self, *inputs, **kwargs):
            return inputs[0]

        def indices_to_embeddings(self, *input, **kwargs):
            return self.embedding(*input, **kwargs)

    def _get_deep_layer_name(obj, layer_names):
        for layer_name in layer_names.split("."):
            obj = getattr(obj, layer_name)
        return obj

    def _set_deep_layer_value(obj, layer_names, value):
        layer_names = layer_names.split(".")
        for layer_name in layer_names[:-1]:
            obj = getattr(obj, layer_name)
        setattr(obj, layer_names[-1], value)

    embedding_layer = _get_deep_layer_name(model, "embedding")
    interpretable_emb = InterpretableEmbeddingBase(embedding_layer, "embedding")
    _set_deep_layer_value(model, "embedding", interpretable_emb)
    emb = interpretable_emb.indices_to_embeddings(tokens)
    x = torch.cat([ref_emb + a * (emb - ref_emb) for a in alphas.tolist()]).detach().requires_grad_()
    out2 = model(x)
    (grads2,) = torch.autograd.grad(out2.gather(1, target.repeat(n_steps).unsqueeze(1)).sum(), x)
    total2 = (grads2.view(n_steps, *emb.shape) * step_sizes.view(-1, 1, 1, 1)).sum(0)
    _set_deep_layer_value(model, "embedding", interpretable_emb.embedding)
    with torch.no_grad():
        delta = attributions.sum((1, 2)) - (model(tokens) - model(ref_tokens)).gather(1, target[:, None]).squeeze(1)
    return {"attributions": attributions, "per_token": per_token, "swap": (emb - ref_emb) * total2, "delta": delta,
            "embedding_is_back": type(model.embedding).__name__}


def test_layer_integrated_gradients_on_an_embedding():
    ours, _ = run_both(text_attributions, weights_of(text_model), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["swap"], ours["attributions"], rtol=1e-12, atol=1e-14)
    assert ours["embedding_is_back"] == "Embedding"
    assert np.abs(ours["delta"]).max() < 0.05


# ----------------------------------------------------------------------------------------------
# Saliency through an LSTM over padded sequences (pack_padded_sequence), and integrated Hessians
# (Janizek et al.: interactions as the integrated gradient of the integrated gradient) by double backward
# and by torch.func.hessian, beside the input Jacobian by jacrev
# ----------------------------------------------------------------------------------------------


def lstm_saliency(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    from_rnn = nn.utils.rnn

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(12, 5)
            self.lstm = nn.LSTM(5, 7, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(14, 2)

        def forward(self, emb, lengths):
            packed = from_rnn.pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
            _, (h, c) = self.lstm(packed)
            return self.fc(torch.cat([h[-2], h[-1]], dim=1))

    model = Tagger().double()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    tokens = torch.tensor([[3, 5, 7, 0, 0], [1, 2, 3, 4, 5], [9, 8, 0, 0, 0]])
    lengths = torch.tensor([3, 5, 2])
    emb = model.embedding(tokens).detach().requires_grad_(True)
    logits = model(emb, lengths)
    logits[:, 1].sum().backward()
    saliency = emb.grad.norm(dim=-1)
    return {"logits": logits, "saliency": saliency, "padded_grads": emb.grad[0, 3:], "lstm_grad": model.lstm.weight_hh_l0_reverse.grad}


def lstm_weights():
    import autograd

    autograd.manual_seed(0)
    import nn

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(12, 5)
            self.lstm = nn.LSTM(5, 7, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(14, 2)

    return {k: v.numpy().copy() for k, v in Tagger().state_dict().items()}


def integrated_hessians(m, weights, steps=12):
    torch, nn, F = m.torch, m.nn, m.F
    func = m.torch.func
    net = nn.Sequential(nn.Linear(6, 12), nn.Softplus(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))
    net = load(m, net, weights).double().eval()
    x = torch.from_numpy(tabular(1, seed=14))[0]
    baseline = torch.zeros(6, dtype=torch.float64)

    def f(v):
        return net(v.unsqueeze(0))[0, 1]

    # interactions Gamma_ij = (x_i - x'_i)(x_j - x'_j) * sum over alpha, beta of d2f/dxi dxj (x' + alpha beta (x - x')) * alpha beta
    nodes = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    total = torch.zeros(6, 6, dtype=torch.float64)
    grads_first = torch.zeros(6, dtype=torch.float64)
    for a in nodes:
        for b in nodes:
            point = (baseline + a * b * (x - baseline)).requires_grad_(True)
            (g,) = torch.autograd.grad(f(point), point, create_graph=True)
            rows = [torch.autograd.grad(g[i], point, retain_graph=True)[0] for i in range(6)]
            total += torch.stack(rows) * a * b
            grads_first += g.detach() * a
    delta = x - baseline
    interactions = delta[:, None] * delta[None, :] * total / steps ** 2
    # the diagonal gets the first-order term too
    interactions = interactions + torch.diag(delta * grads_first / steps ** 2)

    # the same Hessians by torch.func, batched over the grid with vmap
    ab = (nodes[:, None] * nodes[None, :]).reshape(-1)
    points = baseline + ab[:, None] * (x - baseline)
    hessians = func.vmap(func.hessian(f))(points)
    total_func = (hessians * ab[:, None, None]).sum(0)
    jac = func.jacrev(lambda v: net(v.unsqueeze(0))[0])(x)
    fwd = func.jacfwd(lambda v: net(v.unsqueeze(0))[0])(x)
    with torch.no_grad():
        gap = f(x) - f(baseline)
    return {"interactions": interactions, "total": total, "total_func": total_func, "jac": jac, "jacfwd": fwd,
            "gap": gap}


def test_lstm_saliency_and_integrated_hessians():
    ours, _ = run_both(lstm_saliency, lstm_weights(), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(ours["padded_grads"], 0)  # what the packing leaves out gets no gradient
    ours, _ = run_both(integrated_hessians, weights_of(
        lambda m: m.nn.Sequential(m.nn.Linear(6, 12), m.nn.Softplus(), m.nn.Linear(12, 8), m.nn.Tanh(), m.nn.Linear(8, 3)), seed=10),
        rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["total_func"], ours["total"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["jac"], ours["jacfwd"], rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------------------------------
# Directional derivatives along a concept direction by forward mode: a forward hook returns the hooked
# activation as a dual tensor (fwAD.make_dual) whose tangent is the direction, and the logits' tangents are
# read by unpack_dual; against the same derivatives by reverse mode
# ----------------------------------------------------------------------------------------------


def forward_mode_directional_derivatives(m, weights):
    torch, nn = m.torch, m.nn
    fwAD = torch.autograd.forward_ad
    model = load(m, cnn(m), weights).double().eval()
    X = torch.from_numpy(images(3))
    direction = torch.from_numpy(np.random.default_rng(31).standard_normal((1, 6, 8, 8)))
    with fwAD.dual_level():
        h = model[1].register_forward_hook(lambda mod, inputs, output: fwAD.make_dual(output.detach(), direction.expand_as(output)))
        out = model(X)
        h.remove()
        primal, tangent = fwAD.unpack_dual(out)
    acts = {}
    h = model[1].register_forward_hook(lambda mod, inputs, output: acts.__setitem__("a", output))
    logits = model(X)
    h.remove()
    reverse = torch.stack([(torch.autograd.grad(logits[:, c].sum(), acts["a"], retain_graph=True)[0] * direction).flatten(1).sum(1)
                           for c in range(4)], dim=1)
    return {"primal": primal, "tangent": tangent, "reverse": reverse, "logits": logits.detach()}


def test_forward_mode_directional_derivatives_through_a_hook():
    ours, _ = run_both(forward_mode_directional_derivatives, weights_of(cnn), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["tangent"], ours["reverse"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["primal"], ours["logits"], rtol=1e-12)
