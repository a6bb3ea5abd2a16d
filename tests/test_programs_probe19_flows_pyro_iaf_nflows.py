# ruff: noqa: B006, B007, B008  (the programs are kept as their authors wrote them)
"""Normalizing flows and density estimation, run as tests/probe19_flows_common.py says. Pyro's IAF: a
``TransformModule`` (a Transform that is an ``nn.Module``), AutoRegressiveNN masks from a permutation,
``clamp_preserve_gradients``, the cached log-scale, ``Permute``, a sequential inverse; sbi's neural posterior
estimation on nflows: a conditional MAF (degree masks, a context layer, an inverse by one pass per feature), a
non-persistent float64 buffer, a BoxUniform prior and rejection within its support."""

import numpy as np

from .probe19_flows_common import zuko_data
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Pyro's inverse autoregressive flow: a TransformModule (a torch.distributions.Transform that is also an
# nn.Module), AutoRegressiveNN's masks from a permutation, clamp_preserve_gradients, the cached log-scale
# and the cache_size=1 identity check, a sequential inverse over the permutation, Permute's inverse index
# ----------------------------------------------------------------------------------------------


def pyro_modules(m):
    torch, nn, F = m.torch, m.nn, m.F
    dist = m.torch.distributions
    constraints = dist.constraints

    class TransformModule(dist.Transform, nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

        def __hash__(self):
            return super(torch.nn.Module, self).__hash__()

    def clamp_preserve_gradients(x, min, max):
        return x + (x.clamp(min, max) - x).detach()

    def sample_mask_indices(input_dim, hidden_dim, simple=True):
        indices = torch.linspace(1, input_dim, steps=hidden_dim, device="cpu").to(torch.Tensor().device)
        return torch.round(indices)

    def create_mask(input_dim, context_dim, hidden_dims, permutation, output_dim_multiplier):
        var_index = torch.empty(permutation.shape, dtype=torch.get_default_dtype())
        var_index[permutation] = torch.arange(input_dim, dtype=torch.get_default_dtype())
        input_indices = torch.cat((torch.zeros(context_dim), 1 + var_index))
        hidden_indices = [sample_mask_indices(input_dim - 1, h) for h in hidden_dims]
        output_indices = (var_index + 1).repeat(output_dim_multiplier)
        mask_skip = (output_indices.unsqueeze(-1) > input_indices.unsqueeze(0)).type_as(var_index)
        masks = [(hidden_indices[0].unsqueeze(-1) >= input_indices.unsqueeze(0)).type_as(var_index)]
        for i in range(1, len(hidden_dims)):
            masks.append((hidden_indices[i].unsqueeze(-1) >= hidden_indices[i - 1].unsqueeze(0)).type_as(var_index))
        masks.append((output_indices.unsqueeze(-1) > hidden_indices[-1].unsqueeze(0)).type_as(var_index))
        return masks, mask_skip

    class MaskedLinear(nn.Linear):
        def __init__(self, in_features, out_features, mask, bias=True):
            super().__init__(in_features, out_features, bias)
            self.register_buffer("mask", mask.data)

        def forward(self, _input):
            masked_weight = self.weight * self.mask
            return F.linear(_input, masked_weight, self.bias)

    class AutoRegressiveNN(nn.Module):
        def __init__(self, input_dim, hidden_dims, param_dims=[1, 1], permutation=None, skip_connections=False,
                     nonlinearity=nn.ReLU()):
            super().__init__()
            self.input_dim = input_dim
            self.param_dims = param_dims
            self.count_params = len(param_dims)
            self.output_multiplier = sum(param_dims)
            self.all_ones = (torch.tensor(param_dims) == 1).all().item()
            if permutation is None:
                self.permutation = torch.randperm(input_dim, device="cpu").to(torch.Tensor().device)
            else:
                self.permutation = permutation.type(dtype=torch.int64)
            self.masks, self.mask_skip = create_mask(input_dim, 0, hidden_dims, self.permutation,
                                                     self.output_multiplier)
            layers = [MaskedLinear(input_dim, hidden_dims[0], self.masks[0])]
            for i in range(1, len(hidden_dims)):
                layers.append(MaskedLinear(hidden_dims[i - 1], hidden_dims[i], self.masks[i]))
            layers.append(MaskedLinear(hidden_dims[-1], input_dim * self.output_multiplier, self.masks[-1]))
            self.layers = nn.ModuleList(layers)
            self.skip_layer = (MaskedLinear(input_dim, input_dim * self.output_multiplier, self.mask_skip, bias=False)
                               if skip_connections else None)
            self.f = nonlinearity

        def get_permutation(self):
            return self.permutation

        def forward(self, x):
            h = x
            for layer in self.layers[:-1]:
                h = self.f(layer(h))
            h = self.layers[-1](h)
            if self.skip_layer is not None:
                h = h + self.skip_layer(x)
            if self.output_multiplier == 1:
                return h
            h = h.reshape(list(x.size()[:-1]) + [self.output_multiplier, self.input_dim])
            if self.count_params == 1:
                return h
            elif self.all_ones:
                return torch.unbind(h, dim=-2)

    class AffineAutoregressive(TransformModule):
        domain = constraints.real_vector
        codomain = constraints.real_vector
        bijective = True
        autoregressive = True

        def __init__(self, autoregressive_nn, log_scale_min_clip=-5.0, log_scale_max_clip=3.0, sigmoid_bias=2.0,
                     stable=False):
            super().__init__(cache_size=1)
            self.arn = autoregressive_nn
            self._cached_log_scale = None
            self.log_scale_min_clip = log_scale_min_clip
            self.log_scale_max_clip = log_scale_max_clip
            self.sigmoid = nn.Sigmoid()
            self.logsigmoid = nn.LogSigmoid()
            self.sigmoid_bias = sigmoid_bias
            self.stable = stable
            if stable:
                self._call = self._call_stable
                self._inverse = self._inverse_stable

        def _call(self, x):
            mean, log_scale = self.arn(x)
            log_scale = clamp_preserve_gradients(log_scale, self.log_scale_min_clip, self.log_scale_max_clip)
            self._cached_log_scale = log_scale
            scale = torch.exp(log_scale)
            y = scale * x + mean
            return y

        def _inverse(self, y):
            x_size = y.size()[:-1]
            perm = self.arn.permutation
            input_dim = y.size(-1)
            x = [torch.zeros(x_size, device=y.device)] * input_dim
            # NOTE: Inversion is an expensive operation that scales in the dimension of the input
            for idx in perm:
                mean, log_scale = self.arn(torch.stack(x, dim=-1))
                inverse_scale = torch.exp(-clamp_preserve_gradients(log_scale[..., idx], min=self.log_scale_min_clip,
                                                                    max=self.log_scale_max_clip))
                mean = mean[..., idx]
                x[idx] = (y[..., idx] - mean) * inverse_scale
            x = torch.stack(x, dim=-1)
            log_scale = clamp_preserve_gradients(log_scale, min=self.log_scale_min_clip, max=self.log_scale_max_clip)
            self._cached_log_scale = log_scale
            return x

        def log_abs_det_jacobian(self, x, y):
            x_old, y_old = self._cached_x_y
            if x is not x_old or y is not y_old:
                # This call to the parent class Transform will update the cache
                # as well as calling self._call and recalculating y and log_detJ
                self(x)
            if self._cached_log_scale is not None:
                log_scale = self._cached_log_scale
            elif not self.stable:
                _, log_scale = self.arn(x)
                log_scale = clamp_preserve_gradients(log_scale, self.log_scale_min_clip, self.log_scale_max_clip)
            else:
                _, logit_scale = self.arn(x)
                log_scale = self.logsigmoid(logit_scale + self.sigmoid_bias)
            return log_scale.sum(-1)

        def _call_stable(self, x):
            mean, logit_scale = self.arn(x)
            logit_scale = logit_scale + self.sigmoid_bias
            scale = self.sigmoid(logit_scale)
            log_scale = self.logsigmoid(logit_scale)
            self._cached_log_scale = log_scale
            y = scale * x + (1 - scale) * mean
            return y

        def _inverse_stable(self, y):
            x_size = y.size()[:-1]
            perm = self.arn.permutation
            input_dim = y.size(-1)
            x = [torch.zeros(x_size, device=y.device)] * input_dim
            for idx in perm:
                mean, logit_scale = self.arn(torch.stack(x, dim=-1))
                inverse_scale = 1 + torch.exp(-logit_scale[..., idx] - self.sigmoid_bias)
                x[idx] = inverse_scale * y[..., idx] + (1 - inverse_scale) * mean[..., idx]
            self._cached_log_scale = self.logsigmoid(logit_scale + self.sigmoid_bias)
            x = torch.stack(x, dim=-1)
            return x

    class Permute(dist.Transform):
        bijective = True
        volume_preserving = True

        def __init__(self, permutation, *, dim=-1, cache_size=1):
            super().__init__(cache_size=cache_size)
            self.permutation = permutation
            self.dim = dim
            self._inv_permutation = None

        @property
        def event_dim(self):
            return -self.dim

        @constraints.dependent_property(is_discrete=False)
        def domain(self):
            return constraints.independent(constraints.real, -self.dim)

        @constraints.dependent_property(is_discrete=False)
        def codomain(self):
            return constraints.independent(constraints.real, -self.dim)

        @property
        def inv_permutation(self):
            if self._inv_permutation is None:
                result = torch.empty_like(self.permutation, dtype=torch.long)
                result[self.permutation] = torch.arange(self.permutation.size(0), dtype=torch.long,
                                                        device=self.permutation.device)
                self._inv_permutation = result
            return self._inv_permutation

        def _call(self, x):
            return x.index_select(self.dim, self.permutation)

        def _inverse(self, y):
            return y.index_select(self.dim, self.inv_permutation)

        def log_abs_det_jacobian(self, x, y):
            return torch.zeros(x.size()[: -self.event_dim], dtype=x.dtype, layout=x.layout, device=x.device)

    return AutoRegressiveNN, AffineAutoregressive, Permute


PERMS = [np.array([2, 0, 3, 1]), np.array([1, 3, 0, 2])]


def make_iafs(m):
    torch, nn = m.torch, m.nn
    AutoRegressiveNN, AffineAutoregressive, _ = pyro_modules(m)
    return nn.ModuleList([
        AffineAutoregressive(AutoRegressiveNN(4, [12, 12], permutation=torch.tensor(PERMS[0]), skip_connections=True)),
        AffineAutoregressive(AutoRegressiveNN(4, [12], permutation=torch.tensor(PERMS[1])), stable=True),
    ])


def pyro_iaf(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    dist = torch.distributions
    _, _, Permute = pyro_modules(m)
    iafs = load(m, make_iafs(m), weights)
    base = dist.Normal(torch.zeros(4), torch.ones(4))
    flow_dist = dist.TransformedDistribution(base, [iafs[0], Permute(torch.tensor([3, 2, 1, 0])), iafs[1]])
    x = torch.tensor(zuko_data(32, seed=1)[:, [0, 1, 2, 0]] * np.array([1, 1, 1, -0.5], dtype=np.float32))
    optimizer = optim.Adam(iafs.parameters(), lr=5e-3)
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = -flow_dist.log_prob(x).mean()  # density evaluation inverts each IAF dimension by dimension
        loss.backward()
        optimizer.step()
        for t in flow_dist.transforms:  # pyro's clear_cache(): the data tensor is the same object each step
            if t._cache_size:
                t._cached_x_y = None, None
        history.append(loss.item())
    torch.manual_seed(0)
    y = flow_dist.rsample((5,))
    lp_cached = flow_dist.log_prob(y)  # a fresh sample: the caches give back x without inverting
    lp_fresh = flow_dist.log_prob(y.detach().clone())  # a copy: the inverse is computed
    grads = torch.autograd.grad(lp_cached.sum(), list(iafs.parameters()))
    return {"history": history, "y": y, "lp_cached": lp_cached, "lp_fresh": lp_fresh, "grads": grads,
            "es": tuple(flow_dist.event_shape), "bs": tuple(flow_dist.batch_shape)}


def test_pyro_inverse_autoregressive_flow():
    weights = weights_of(make_iafs)
    ours, _ = run_both(pyro_iaf, weights, rtol=2e-4, atol=2e-5)
    assert ours["es"] == (4,) and ours["bs"] == ()
    np.testing.assert_allclose(ours["lp_cached"], ours["lp_fresh"], rtol=1e-4, atol=1e-4)
    assert ours["history"][-1] < ours["history"][0]


def test_pyro_autoregressive_masks_follow_the_permutation():
    AutoRegressiveNN = pyro_modules(OURS)[0]
    arn = AutoRegressiveNN(4, [12, 12], permutation=OURS.torch.tensor(PERMS[0]), skip_connections=True)
    x = OURS.torch.randn(4, requires_grad=True)
    mean, log_scale = arn(x)
    jac = np.stack([OURS.torch.autograd.grad(mean[i], x, retain_graph=True)[0].numpy() for i in range(4)])
    rank = np.empty(4, int)
    rank[PERMS[0]] = np.arange(4)
    # output i depends on input j only where j comes before i in the permutation
    assert (jac[rank[:, None] <= rank[None, :]] == 0).all()
    assert (jac[rank[:, None] > rank[None, :]] != 0).any()


# ----------------------------------------------------------------------------------------------
# Neural posterior estimation as sbi builds it on nflows: a conditional MAF (nflows' MADE with degree
# masks, a context layer added into the first hidden layer, MaskedAffineAutoregressiveTransform's softplus
# scale, an inverse by one autoregressive pass per feature, ReversePermutation by index_select), a
# StandardNormal with a float64 non-persistent log-normaliser buffer, a BoxUniform prior
# (Independent(Uniform)) and sampling within the prior by rejection (support.check)
# ----------------------------------------------------------------------------------------------


def nflows_modules(m):
    torch, nn, F = m.torch, m.nn, m.F

    def tile(x, n):
        x_ = x.reshape(-1)
        x_ = x_.repeat(n)
        x_ = x_.reshape(n, -1)
        x_ = x_.transpose(1, 0)
        x_ = x_.reshape(-1)
        return x_

    def sum_except_batch(x, num_batch_dims=1):
        reduce_dims = list(range(num_batch_dims, x.ndimension()))
        return torch.sum(x, dim=reduce_dims)

    def repeat_rows(x, num_reps):
        shape = x.shape
        x = x.unsqueeze(1)
        x = x.expand(shape[0], num_reps, *shape[1:])
        return x.reshape(shape[0] * num_reps, *shape[1:])

    def split_leading_dim(x, shape):
        new_shape = torch.Size(shape) + x.shape[1:]
        return torch.reshape(x, new_shape)

    def _get_input_degrees(in_features):
        return torch.arange(1, in_features + 1)

    class MaskedLinear(nn.Linear):
        def __init__(self, in_degrees, out_features, autoregressive_features, is_output, bias=True):
            super().__init__(in_features=len(in_degrees), out_features=out_features, bias=bias)
            mask, degrees = self._get_mask_and_degrees(in_degrees, out_features, autoregressive_features, is_output)
            self.register_buffer("mask", mask)
            self.register_buffer("degrees", degrees)

        @classmethod
        def _get_mask_and_degrees(cls, in_degrees, out_features, autoregressive_features, is_output):
            if is_output:
                out_degrees = tile(_get_input_degrees(autoregressive_features),
                                   out_features // autoregressive_features)
                mask = (out_degrees[..., None] > in_degrees).float()
            else:
                max_ = max(1, autoregressive_features - 1)
                min_ = min(1, autoregressive_features - 1)
                out_degrees = torch.arange(out_features) % max_ + min_
                mask = (out_degrees[..., None] >= in_degrees).float()
            return mask, out_degrees

        def forward(self, x):
            return F.linear(x, self.weight * self.mask, self.bias)

    class MaskedFeedforwardBlock(nn.Module):
        def __init__(self, in_degrees, autoregressive_features, activation=F.relu):
            super().__init__()
            features = len(in_degrees)
            self.linear = MaskedLinear(in_degrees=in_degrees, out_features=features,
                                       autoregressive_features=autoregressive_features, is_output=False)
            self.degrees = self.linear.degrees
            self.activation = activation
            self.dropout = nn.Dropout(p=0.0)

        def forward(self, inputs, context=None):
            temps = self.linear(inputs)
            temps = self.activation(temps)
            return self.dropout(temps)

    class MADE(nn.Module):
        def __init__(self, features, hidden_features, context_features=None, num_blocks=2, output_multiplier=1,
                     activation=F.relu):
            super().__init__()
            self.initial_layer = MaskedLinear(in_degrees=_get_input_degrees(features), out_features=hidden_features,
                                              autoregressive_features=features, is_output=False)
            if context_features is not None:
                self.context_layer = nn.Linear(context_features, hidden_features)
            blocks = []
            prev_out_degrees = self.initial_layer.degrees
            for _ in range(num_blocks):
                blocks.append(MaskedFeedforwardBlock(in_degrees=prev_out_degrees, autoregressive_features=features,
                                                     activation=activation))
                prev_out_degrees = blocks[-1].degrees
            self.blocks = nn.ModuleList(blocks)
            self.final_layer = MaskedLinear(in_degrees=prev_out_degrees, out_features=features * output_multiplier,
                                            autoregressive_features=features, is_output=True)

        def forward(self, inputs, context=None):
            temps = self.initial_layer(inputs)
            if context is not None:
                temps += self.context_layer(context)
            for block in self.blocks:
                temps = block(temps, context)
            return self.final_layer(temps)

    class MaskedAffineAutoregressiveTransform(nn.Module):
        def __init__(self, features, hidden_features, context_features=None, num_blocks=2):
            super().__init__()
            self.features = features
            self._epsilon = 1e-3
            self.autoregressive_net = MADE(features=features, hidden_features=hidden_features,
                                           context_features=context_features, num_blocks=num_blocks,
                                           output_multiplier=self._output_dim_multiplier())

        def _output_dim_multiplier(self):
            return 2

        def forward(self, inputs, context=None):
            autoregressive_params = self.autoregressive_net(inputs, context)
            return self._elementwise_forward(inputs, autoregressive_params)

        def inverse(self, inputs, context=None):
            num_inputs = np.prod(inputs.shape[1:])
            outputs = torch.zeros_like(inputs)
            logabsdet = None
            for _ in range(num_inputs):
                autoregressive_params = self.autoregressive_net(outputs, context)
                outputs, logabsdet = self._elementwise_inverse(inputs, autoregressive_params)
            return outputs, logabsdet

        def _unconstrained_scale_and_shift(self, autoregressive_params):
            autoregressive_params = autoregressive_params.view(-1, self.features, self._output_dim_multiplier())
            return autoregressive_params[..., 0], autoregressive_params[..., 1]

        def _elementwise_forward(self, inputs, autoregressive_params):
            unconstrained_scale, shift = self._unconstrained_scale_and_shift(autoregressive_params)
            scale = F.softplus(unconstrained_scale) + self._epsilon
            log_scale = torch.log(scale)
            outputs = scale * inputs + shift
            return outputs, sum_except_batch(log_scale, num_batch_dims=1)

        def _elementwise_inverse(self, inputs, autoregressive_params):
            unconstrained_scale, shift = self._unconstrained_scale_and_shift(autoregressive_params)
            scale = F.softplus(unconstrained_scale) + self._epsilon
            log_scale = torch.log(scale)
            outputs = (inputs - shift) / scale
            return outputs, -sum_except_batch(log_scale, num_batch_dims=1)

    class ReversePermutation(nn.Module):
        def __init__(self, features, dim=1):
            super().__init__()
            self.register_buffer("_permutation", torch.arange(features - 1, -1, -1))
            self._dim = dim

        @property
        def _inverse_permutation(self):
            return torch.argsort(self._permutation)

        def forward(self, inputs, context=None):
            return torch.index_select(inputs, self._dim, self._permutation), inputs.new_zeros(inputs.shape[0])

        def inverse(self, inputs, context=None):
            return torch.index_select(inputs, self._dim, self._inverse_permutation), inputs.new_zeros(inputs.shape[0])

    class CompositeTransform(nn.Module):
        def __init__(self, transforms):
            super().__init__()
            self._transforms = nn.ModuleList(transforms)

        @staticmethod
        def _cascade(inputs, funcs, context):
            batch_size = inputs.shape[0]
            outputs = inputs
            total_logabsdet = inputs.new_zeros(batch_size)
            for func in funcs:
                outputs, logabsdet = func(outputs, context)
                total_logabsdet += logabsdet
            return outputs, total_logabsdet

        def forward(self, inputs, context=None):
            return self._cascade(inputs, self._transforms, context)

        def inverse(self, inputs, context=None):
            funcs = (transform.inverse for transform in self._transforms[::-1])
            return self._cascade(inputs, funcs, context)

    class StandardNormal(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self._shape = torch.Size(shape)
            self.register_buffer("_log_z", torch.tensor(0.5 * np.prod(shape) * np.log(2 * np.pi), dtype=torch.float64),
                                 persistent=False)

        def log_prob(self, inputs, context=None):
            neg_energy = -0.5 * sum_except_batch(inputs ** 2, num_batch_dims=1)
            return neg_energy - self._log_z

        def sample(self, num_samples, context=None):
            if context is None:
                return torch.randn(num_samples, *self._shape, device=self._log_z.device)
            context_size = context.shape[0]
            samples = torch.randn(context_size * num_samples, *self._shape, device=context.device)
            return split_leading_dim(samples, [context_size, num_samples])

    class Flow(nn.Module):
        def __init__(self, transform, distribution, embedding_net=None):
            super().__init__()
            self._transform = transform
            self._distribution = distribution
            self._embedding_net = embedding_net if embedding_net is not None else nn.Identity()

        def log_prob(self, inputs, context=None):
            embedded_context = self._embedding_net(context)
            noise, logabsdet = self._transform(inputs, context=embedded_context)
            log_prob = self._distribution.log_prob(noise, context=embedded_context)
            return log_prob + logabsdet

        def sample(self, num_samples, context):
            embedded_context = self._embedding_net(context)
            noise = self._distribution.sample(num_samples, context=embedded_context)
            noise = noise.reshape(-1, *noise.shape[2:])
            embedded_context = repeat_rows(embedded_context, num_reps=num_samples)
            samples, _ = self._transform.inverse(noise, context=embedded_context)
            return split_leading_dim(samples, [-1, num_samples])

    def build_maf(features, context_features, hidden_features=16, num_transforms=2):
        transforms = []
        for _ in range(num_transforms):
            transforms += [MaskedAffineAutoregressiveTransform(features, hidden_features, context_features),
                           ReversePermutation(features)]
        embedding = nn.Sequential(nn.Linear(context_features, context_features), nn.Tanh())
        return Flow(CompositeTransform(transforms), StandardNormal((features,)), embedding)

    return build_maf


def make_npe(m):
    return nflows_modules(m)(features=2, context_features=3)


def simulate(n, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-2, 2, (n, 2)).astype(np.float32)
    x = np.stack([theta[:, 0] + 0.3 * rng.standard_normal(n), theta[:, 0] * theta[:, 1] + 0.3 * rng.standard_normal(n),
                  np.tanh(theta[:, 1]) + 0.1 * rng.standard_normal(n)], 1).astype(np.float32)
    return theta, x


def npe(m, weights, epochs=3):
    torch, optim, data = m.torch, m.optim, m.data
    D = torch.distributions
    posterior = load(m, make_npe(m), weights)
    prior = D.Independent(D.Uniform(torch.tensor([-2.0, -2.0]), torch.tensor([2.0, 2.0]), validate_args=False), 1,
                          validate_args=False)
    theta, x = (torch.from_numpy(a) for a in simulate(96))
    loader = data.DataLoader(data.TensorDataset(theta, x), batch_size=32, shuffle=False)
    optimizer = optim.Adam(posterior.parameters(), lr=5e-3)
    history = []
    for epoch in range(epochs):
        for theta_batch, x_batch in loader:
            optimizer.zero_grad()
            loss = -posterior.log_prob(theta_batch, context=x_batch).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(posterior.parameters(), max_norm=5.0)
            optimizer.step()
            history.append(loss.item())
    posterior.eval()
    x_o = torch.tensor([[0.5, -0.4, 0.3]])
    with torch.no_grad():
        torch.manual_seed(0)
        samples = posterior.sample(40, context=x_o)[0]
        in_prior = prior.support.check(samples)
        accepted = samples[in_prior]
        lp = posterior.log_prob(samples[:5], context=x_o.expand(5, -1)) + prior.log_prob(samples[:5]) * 0
        round_trip, _ = posterior._transform(samples[:5], context=posterior._embedding_net(x_o.expand(5, -1)))
        torch.manual_seed(0)
        drawn = torch.randn(40, 2)[:5]
    return {"history": history, "samples": samples, "accepted": accepted, "acceptance": in_prior.float().mean(),
            "lp": lp, "noise": round_trip, "drawn": drawn, "state_keys": sorted(posterior.state_dict())}


def test_neural_posterior_estimation_with_nflows_maf():
    weights = weights_of(make_npe)
    ours, _ = run_both(npe, weights, rtol=1e-4, atol=1e-5)
    assert not any("_log_z" in k for k in ours["state_keys"])  # a non-persistent buffer
    np.testing.assert_allclose(ours["noise"], ours["drawn"], atol=1e-5)  # the inverse passes invert the forward
    assert ((ours["accepted"] > -2) & (ours["accepted"] < 2)).all() and 0 < ours["acceptance"] <= 1
    assert ours["history"][-1] < ours["history"][0]
