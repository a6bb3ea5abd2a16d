# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Neural fields and differentiable rendering (see tests/pytorch_programs.py), each run on chainrule and on PyTorch
from the same weights and data, comparing losses, outputs and gradients. Signed distance functions: IGR /
DeepSDF-style SDF fitting with geometric initialisation, a skip connection and ``Softplus(beta=100)``, the eikonal
and normal losses (double backward); IDR's sphere tracing with implicit differentiation and mask loss; SDF normals
and curvature by ``torch.func``; NeuS (weight norm, learnt variance, up-sampling by inverse CDF merged with ``sort``
and advanced indexing)."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# IGR / DeepSDF: geometric initialisation, skip connection, Softplus(beta=100), eikonal loss
# ----------------------------------------------------------------------------------------------


def igr_net(m):
    torch, nn = m.torch, m.nn

    class ImplicitNet(nn.Module):
        def __init__(self, d_in, dims, skip_in=(), geometric_init=True, radius_init=1, beta=100):
            super().__init__()
            dims = [d_in] + dims + [1]
            self.num_layers = len(dims)
            self.skip_in = skip_in
            for layer in range(0, self.num_layers - 1):
                if layer + 1 in skip_in:
                    out_dim = dims[layer + 1] - d_in
                else:
                    out_dim = dims[layer + 1]
                lin = nn.Linear(dims[layer], out_dim)
                if geometric_init:
                    if layer == self.num_layers - 2:
                        torch.nn.init.normal_(lin.weight, mean=np.sqrt(np.pi) / np.sqrt(dims[layer]), std=0.00001)
                        torch.nn.init.constant_(lin.bias, -radius_init)
                    else:
                        torch.nn.init.constant_(lin.bias, 0.0)
                        torch.nn.init.normal_(lin.weight, 0.0, np.sqrt(2) / np.sqrt(out_dim))
                setattr(self, "lin" + str(layer), lin)
            if beta > 0:
                self.activation = nn.Softplus(beta=beta)
            else:
                self.activation = nn.ReLU()

        def forward(self, input):
            x = input
            for layer in range(0, self.num_layers - 1):
                lin = getattr(self, "lin" + str(layer))
                if layer in self.skip_in:
                    x = torch.cat([x, input], -1) / np.sqrt(2)
                x = lin(x)
                if layer < self.num_layers - 2:
                    x = self.activation(x)
            return x

    return ImplicitNet(3, [16, 16, 16, 16], skip_in=(2,))


def igr(m, weights, steps=4):
    torch, optim = m.torch, m.optim
    model = load(m, igr_net(m), weights).double()
    rng = np.random.default_rng(5)
    pts = rng.standard_normal((48, 3))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    normals = torch.from_numpy(pts.copy())
    pnts = torch.from_numpy(pts * 0.8).requires_grad_()
    local_sigma = torch.from_numpy(np.full((48, 1), 0.05))

    def gradient(inputs, outputs):
        d_points = torch.ones_like(outputs, requires_grad=False, device=outputs.device)
        points_grad = torch.autograd.grad(outputs=outputs, inputs=inputs, grad_outputs=d_points,
                                          create_graph=True, retain_graph=True, only_inputs=True)[0][:, -3:]
        return points_grad

    optimizer = optim.Adam([{"params": model.parameters(), "lr": 5e-3, "weight_decay": 0}])
    history = []
    noise = [torch.from_numpy(rng.standard_normal((48, 3))) for _ in range(steps)]
    glob = [torch.from_numpy(rng.uniform(-1.2, 1.2, (12, 3))) for _ in range(steps)]
    for step in range(steps):
        sample_local = pnts.detach() + noise[step] * local_sigma
        nonmnfld_pnts = torch.cat([sample_local, glob[step]], dim=0).requires_grad_()
        mnfld_pred = model(pnts)
        nonmnfld_pred = model(nonmnfld_pnts)
        mnfld_grad = gradient(pnts, mnfld_pred)
        nonmnfld_grad = gradient(nonmnfld_pnts, nonmnfld_pred)
        mnfld_loss = (mnfld_pred.abs()).mean()
        grad_loss = ((nonmnfld_grad.norm(2, dim=-1) - 1) ** 2).mean()
        loss = mnfld_loss + 0.1 * grad_loss
        normals_loss = ((mnfld_grad - normals).abs()).norm(2, dim=1).mean()
        loss = loss + 1.0 * normals_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), mnfld_loss.item(), grad_loss.item(), normals_loss.item()))
    return {"history": history, "grads": [p.grad for p in model.parameters()], "pnts_grad": pnts.grad,
            "sdf": model(torch.zeros(1, 3, dtype=torch.float64)).detach()}


def test_igr_sdf_with_eikonal_and_normal_losses():
    weights = weights_of(igr_net)
    ours, _ = run_both(igr, weights, rtol=1e-8, atol=1e-10)
    # the geometric initialisation gives roughly the SDF of a sphere of radius 1: negative at the centre
    assert ours["sdf"].item() < 0
    assert ours["history"][-1][0] < ours["history"][0][0]


# ----------------------------------------------------------------------------------------------
# NeuS: an SDF network with weight norm and geometric init, a learnt variance, alpha from the
# logistic CDF of the SDF at section ends, normals by autograd.grad, eikonal loss, and up-sampling by
# inverse-CDF (det=True) merged into the sorted samples with torch.sort and advanced indexing
# ----------------------------------------------------------------------------------------------


def neus_net(m):
    torch, nn = m.torch, m.nn

    class SDFNetwork(nn.Module):
        def __init__(self, d_in=3, d_out=5, d_hidden=16, n_layers=3, skip_in=(2,), multires=2, bias=0.5, scale=1,
                     geometric_init=True, weight_norm=True, inside_outside=False):
            super(SDFNetwork, self).__init__()
            dims = [d_in] + [d_hidden for _ in range(n_layers)] + [d_out]
            self.embed_fn_fine = None
            if multires > 0:
                freq_bands = 2. ** torch.linspace(0., multires - 1, multires)
                self.embed_fn_fine = lambda x: torch.cat(
                    [x] + [fn(x * freq) for freq in freq_bands for fn in (torch.sin, torch.cos)], -1)
                dims[0] = d_in * (1 + 2 * multires)
            self.num_layers = len(dims)
            self.skip_in = skip_in
            self.scale = scale
            for l in range(0, self.num_layers - 1):
                if l + 1 in self.skip_in:
                    out_dim = dims[l + 1] - dims[0]
                else:
                    out_dim = dims[l + 1]
                lin = nn.Linear(dims[l], out_dim)
                if geometric_init:
                    if l == self.num_layers - 2:
                        if not inside_outside:
                            torch.nn.init.normal_(lin.weight, mean=np.sqrt(np.pi) / np.sqrt(dims[l]), std=0.0001)
                            torch.nn.init.constant_(lin.bias, -bias)
                    elif multires > 0 and l == 0:
                        torch.nn.init.constant_(lin.bias, 0.0)
                        torch.nn.init.constant_(lin.weight[:, 3:], 0.0)
                        torch.nn.init.normal_(lin.weight[:, :3], 0.0, np.sqrt(2) / np.sqrt(out_dim))
                    elif multires > 0 and l in self.skip_in:
                        torch.nn.init.constant_(lin.bias, 0.0)
                        torch.nn.init.normal_(lin.weight, 0.0, np.sqrt(2) / np.sqrt(out_dim))
                        torch.nn.init.constant_(lin.weight[:, -(dims[0] - 3):], 0.0)
                    else:
                        torch.nn.init.constant_(lin.bias, 0.0)
                        torch.nn.init.normal_(lin.weight, 0.0, np.sqrt(2) / np.sqrt(out_dim))
                if weight_norm:
                    lin = nn.utils.weight_norm(lin)
                setattr(self, "lin" + str(l), lin)
            self.activation = nn.Softplus(beta=100)

        def forward(self, inputs):
            inputs = inputs * self.scale
            if self.embed_fn_fine is not None:
                inputs = self.embed_fn_fine(inputs)
            x = inputs
            for l in range(0, self.num_layers - 1):
                lin = getattr(self, "lin" + str(l))
                if l in self.skip_in:
                    x = torch.cat([x, inputs], 1) / np.sqrt(2)
                x = lin(x)
                if l < self.num_layers - 2:
                    x = self.activation(x)
            return torch.cat([x[:, :1] / self.scale, x[:, 1:]], dim=-1)

        def sdf(self, x):
            return self.forward(x)[:, :1]

        def gradient(self, x):
            x.requires_grad_(True)
            y = self.sdf(x)
            d_output = torch.ones_like(y, requires_grad=False, device=y.device)
            gradients = torch.autograd.grad(outputs=y, inputs=x, grad_outputs=d_output, create_graph=True,
                                            retain_graph=True, only_inputs=True)[0]
            return gradients.unsqueeze(1)

    class SingleVarianceNetwork(nn.Module):
        def __init__(self, init_val):
            super(SingleVarianceNetwork, self).__init__()
            self.register_parameter('variance', nn.Parameter(torch.tensor(init_val)))

        def forward(self, x):
            return torch.ones([len(x), 1]) * torch.exp(self.variance * 10.0)

    class ColorNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3 + 3 + 3 + 4, 16), nn.ReLU(), nn.Linear(16, 3), nn.Sigmoid())

        def forward(self, points, normals, view_dirs, feature_vectors):
            return self.net(torch.cat([points, view_dirs, normals, feature_vectors], dim=-1))

    class NeuS(nn.Module):
        def __init__(self):
            super().__init__()
            self.sdf_network = SDFNetwork()
            self.deviation_network = SingleVarianceNetwork(0.3)
            self.color_network = ColorNetwork()

    return NeuS()


def neus(m, weights, steps=3, n_samples=8, n_importance=4, up_sample_steps=2):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, neus_net(m), weights).double()
    sdf_network, deviation_network, color_network = model.sdf_network, model.deviation_network, \
        model.color_network

    def sample_pdf(bins, weights, n_samples, det=False):
        weights = weights + 1e-5
        pdf = weights / torch.sum(weights, -1, keepdim=True)
        cdf = torch.cumsum(pdf, -1)
        cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)
        u = torch.linspace(0. + 0.5 / n_samples, 1. - 0.5 / n_samples, steps=n_samples, dtype=bins.dtype)
        u = u.expand(list(cdf.shape[:-1]) + [n_samples])
        u = u.contiguous()
        inds = torch.searchsorted(cdf, u, right=True)
        below = torch.max(torch.zeros_like(inds - 1), inds - 1)
        above = torch.min((cdf.shape[-1] - 1) * torch.ones_like(inds), inds)
        inds_g = torch.stack([below, above], -1)
        matched_shape = [inds_g.shape[0], inds_g.shape[1], cdf.shape[-1]]
        cdf_g = torch.gather(cdf.unsqueeze(1).expand(matched_shape), 2, inds_g)
        bins_g = torch.gather(bins.unsqueeze(1).expand(matched_shape), 2, inds_g)
        denom = (cdf_g[..., 1] - cdf_g[..., 0])
        denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
        t = (u - cdf_g[..., 0]) / denom
        samples = bins_g[..., 0] + t * (bins_g[..., 1] - bins_g[..., 0])
        return samples

    def up_sample(rays_o, rays_d, z_vals, sdf, n_importance, inv_s):
        batch_size, n_samples = z_vals.shape
        pts = rays_o[:, None, :] + rays_d[:, None, :] * z_vals[..., :, None]
        radius = torch.linalg.norm(pts, ord=2, dim=-1, keepdim=False)
        inside_sphere = (radius[:, :-1] < 1.0) | (radius[:, 1:] < 1.0)
        sdf = sdf.reshape(batch_size, n_samples)
        prev_sdf, next_sdf = sdf[:, :-1], sdf[:, 1:]
        prev_z_vals, next_z_vals = z_vals[:, :-1], z_vals[:, 1:]
        mid_sdf = (prev_sdf + next_sdf) * 0.5
        cos_val = (next_sdf - prev_sdf) / (next_z_vals - prev_z_vals + 1e-5)
        prev_cos_val = torch.cat([torch.zeros([batch_size, 1], dtype=z_vals.dtype), cos_val[:, :-1]], dim=-1)
        cos_val = torch.stack([prev_cos_val, cos_val], dim=-1)
        cos_val, _ = torch.min(cos_val, dim=-1, keepdim=False)
        cos_val = cos_val.clip(-1e3, 0.0) * inside_sphere
        dist = (next_z_vals - prev_z_vals)
        prev_esti_sdf = mid_sdf - cos_val * dist * 0.5
        next_esti_sdf = mid_sdf + cos_val * dist * 0.5
        prev_cdf = torch.sigmoid(prev_esti_sdf * inv_s)
        next_cdf = torch.sigmoid(next_esti_sdf * inv_s)
        alpha = (prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)
        weights = alpha * torch.cumprod(
            torch.cat([torch.ones([batch_size, 1], dtype=z_vals.dtype), 1. - alpha + 1e-7], -1), -1)[:, :-1]
        z_samples = sample_pdf(z_vals, weights, n_importance, det=True).detach()
        return z_samples

    def cat_z_vals(rays_o, rays_d, z_vals, new_z_vals, sdf):
        batch_size, n_samples = z_vals.shape
        _, n_importance = new_z_vals.shape
        pts = rays_o[:, None, :] + rays_d[:, None, :] * new_z_vals[..., :, None]
        z_vals = torch.cat([z_vals, new_z_vals], dim=-1)
        z_vals, index = torch.sort(z_vals, dim=-1)
        new_sdf = sdf_network.sdf(pts.reshape(-1, 3)).reshape(batch_size, n_importance)
        sdf = torch.cat([sdf, new_sdf], dim=-1)
        xx = torch.arange(batch_size)[:, None].expand(batch_size, n_samples + n_importance).reshape(-1)
        index = index.reshape(-1)
        sdf = sdf[(xx, index)].reshape(batch_size, n_samples + n_importance)
        return z_vals, sdf

    def render_core(rays_o, rays_d, z_vals, cos_anneal_ratio=0.0):
        batch_size, n_samples = z_vals.shape
        dists = z_vals[..., 1:] - z_vals[..., :-1]
        sample_dist = 2.0 / n_samples
        dists = torch.cat([dists, torch.Tensor([sample_dist]).double().expand(dists[..., :1].shape)], -1)
        mid_z_vals = z_vals + dists * 0.5
        pts = rays_o[:, None, :] + rays_d[:, None, :] * mid_z_vals[..., :, None]
        dirs = rays_d[:, None, :].expand(pts.shape)
        pts = pts.reshape(-1, 3)
        dirs = dirs.reshape(-1, 3)
        sdf_nn_output = sdf_network(pts)
        sdf = sdf_nn_output[:, :1]
        feature_vector = sdf_nn_output[:, 1:]
        gradients = sdf_network.gradient(pts).squeeze()
        sampled_color = color_network(pts, gradients, dirs, feature_vector).reshape(batch_size, n_samples, 3)
        inv_s = deviation_network(torch.zeros([1, 3])).clip(1e-6, 1e6)
        inv_s = inv_s.expand(batch_size * n_samples, 1)
        true_cos = (dirs * gradients).sum(-1, keepdim=True)
        iter_cos = -(F.relu(-true_cos * 0.5 + 0.5) * (1.0 - cos_anneal_ratio) +
                     F.relu(-true_cos) * cos_anneal_ratio)
        estimated_next_sdf = sdf + iter_cos * dists.reshape(-1, 1) * 0.5
        estimated_prev_sdf = sdf - iter_cos * dists.reshape(-1, 1) * 0.5
        prev_cdf = torch.sigmoid(estimated_prev_sdf * inv_s)
        next_cdf = torch.sigmoid(estimated_next_sdf * inv_s)
        p = prev_cdf - next_cdf
        c = prev_cdf
        alpha = ((p + 1e-5) / (c + 1e-5)).reshape(batch_size, n_samples).clip(0.0, 1.0)
        pts_norm = torch.linalg.norm(pts, ord=2, dim=-1, keepdim=True).reshape(batch_size, n_samples)
        inside_sphere = (pts_norm < 1.0).float().detach()
        relax_inside_sphere = (pts_norm < 1.2).float().detach()
        weights = alpha * torch.cumprod(
            torch.cat([torch.ones([batch_size, 1], dtype=alpha.dtype), 1. - alpha + 1e-7], -1), -1)[:, :-1]
        weights_sum = weights.sum(dim=-1, keepdim=True)
        color = (sampled_color * weights[:, :, None]).sum(dim=1)
        gradient_error = (torch.linalg.norm(gradients.reshape(batch_size, n_samples, 3), ord=2,
                                            dim=-1) - 1.0) ** 2
        gradient_error = (relax_inside_sphere * gradient_error).sum() / (relax_inside_sphere.sum() + 1e-5)
        return {'color': color, 's_val': 1.0 / inv_s, 'weights': weights, 'weight_sum': weights_sum,
                'gradient_error': gradient_error, 'inside_sphere': inside_sphere}

    rng = np.random.default_rng(29)
    batch_size = 6
    rays_o = torch.tensor(rng.standard_normal((batch_size, 3)) * 0.1 + np.array([0, 0, -1.5]))
    rays_d = torch.tensor(rng.standard_normal((batch_size, 3)) * 0.2 + np.array([0, 0, 1.0]))
    rays_d = rays_d / torch.linalg.norm(rays_d, ord=2, dim=-1, keepdim=True)
    true_rgb = torch.tensor(rng.uniform(0, 1, (batch_size, 3)))
    near, far = torch.full((batch_size, 1), 0.5, dtype=torch.float64), torch.full((batch_size, 1), 2.5,
                                                                                  dtype=torch.float64)
    params_to_train = list(model.parameters())
    optimizer = torch.optim.Adam(params_to_train, lr=5e-4)
    history = []
    for it in range(steps):
        z_vals = torch.linspace(0.0, 1.0, n_samples, dtype=torch.float64)
        z_vals = near + (far - near) * z_vals[None, :]
        with torch.no_grad():
            pts = rays_o[:, None, :] + rays_d[:, None, :] * z_vals[..., :, None]
            sdf = sdf_network.sdf(pts.reshape(-1, 3)).reshape(batch_size, n_samples)
            for i in range(up_sample_steps):
                new_z_vals = up_sample(rays_o, rays_d, z_vals, sdf, n_importance // up_sample_steps, 64 * 2 ** i)
                z_vals, sdf = cat_z_vals(rays_o, rays_d, z_vals, new_z_vals, sdf)
        out = render_core(rays_o, rays_d, z_vals, cos_anneal_ratio=min(1.0, it / 2))
        color_error = out['color'] - true_rgb
        color_fine_loss = F.l1_loss(color_error, torch.zeros_like(color_error), reduction='sum') / batch_size
        eikonal_loss = out['gradient_error']
        loss = color_fine_loss + eikonal_loss * 0.1
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), out['s_val'].mean().item()))
    return {"history": history, "z_vals": z_vals, "weights": out['weights'].detach(),
            "grads": {n: p.grad for n, p in model.named_parameters()}}


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_neus_sdf_volume_rendering():
    weights = weights_of(neus_net)
    assert any(k.endswith("weight_g") for k in weights)
    # inv_s is float32 (torch.ones of the default dtype): its mean is summed in float32
    ours, _ = run_both(neus, weights, rtol=1e-6, atol=1e-10)
    assert np.all(np.diff(ours["z_vals"], axis=-1) >= 0)
    assert ours["grads"]["deviation_network.variance"] != 0


# ----------------------------------------------------------------------------------------------
# An SDF's normals and mean curvature by torch.func (vmap of jacrev / hessian over functional_call),
# an eikonal + curvature loss differentiated by grad_and_value, and the same normals by autograd.grad
# ----------------------------------------------------------------------------------------------


def sdf_func(m, steps=3):
    torch, nn = m.torch, m.nn
    rng = np.random.default_rng(59)
    net = nn.Sequential(nn.Linear(3, 16), nn.Softplus(beta=10), nn.Linear(16, 16), nn.Softplus(beta=10),
                        nn.Linear(16, 1)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape)) * 0.5))
    params = {k: v.detach() for k, v in net.named_parameters()}
    x = torch.tensor(rng.standard_normal((6, 3)))

    def f(params, x):
        return torch.func.functional_call(net, params, (x,)).squeeze(-1)

    def loss_fn(params, x):
        normals = torch.func.vmap(torch.func.jacrev(f, argnums=1), in_dims=(None, 0))(params, x)
        hess = torch.func.vmap(torch.func.hessian(f, argnums=1), in_dims=(None, 0))(params, x)
        mean_curvature = torch.diagonal(hess, dim1=-2, dim2=-1).sum(-1)
        eikonal = ((normals.norm(dim=-1) - 1) ** 2).mean()
        return eikonal + 1e-2 * mean_curvature.abs().mean(), (normals, mean_curvature)

    history = []
    lr = 1e-2
    for step in range(steps):
        grads, (loss, (normals, curvature)) = torch.func.grad_and_value(loss_fn, has_aux=True)(params, x)
        params = {k: v - lr * grads[k] for k, v in params.items()}
        history.append(loss.item())
    xg = x.clone().requires_grad_(True)
    y = torch.func.functional_call(net, params, (xg,))
    (normals_autograd,) = torch.autograd.grad(y.sum(), xg)
    return {"history": history, "normals": normals, "curvature": curvature, "params": params,
            "normals_autograd": normals_autograd,
            "normals_final": torch.func.vmap(torch.func.jacrev(f, argnums=1), in_dims=(None, 0))(params, x)}


def test_sdf_normals_and_curvature_by_torch_func():
    ours, _ = run_both(sdf_func, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["normals_final"], ours["normals_autograd"], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# IDR: sphere tracing under no_grad with boolean-mask updates, the surface point made differentiable by
# implicit differentiation (x = c + (t - (f(x) - f(x).detach()) / (∇f·v)) v), the mask loss on the minimum
# SDF along non-hit rays (BCE with logits of -alpha·sdf), and the eikonal loss
# ----------------------------------------------------------------------------------------------


def idr(m, weights, steps=3, n_rays=8, n_march=30, n_samples=10, alpha=50.0, step_scale=0.5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    implicit_network = load(m, igr_net(m), weights).double()
    rendering_network = nn.Sequential(nn.Linear(9, 16), nn.ReLU(), nn.Linear(16, 3), nn.Tanh()).double()
    rng = np.random.default_rng(79)
    with torch.no_grad():
        for p in rendering_network.parameters():
            p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape)) * 0.3))
    cam_loc = torch.tensor([0.0, 0.0, -2.5], dtype=torch.float64)
    ray_dirs = torch.tensor(rng.standard_normal((n_rays, 3)) * np.array([0.35, 0.35, 0.0]) + np.array([0, 0, 1.0]))
    ray_dirs = F.normalize(ray_dirs, dim=-1)
    object_mask = torch.tensor(rng.uniform(0, 1, n_rays) < 0.6)
    rgb_gt = torch.tensor(rng.uniform(-1, 1, (n_rays, 3)))

    def gradient(x):
        x.requires_grad_(True)
        y = implicit_network(x)[:, :1]
        d_output = torch.ones_like(y, requires_grad=False)
        return torch.autograd.grad(outputs=y, inputs=x, grad_outputs=d_output, create_graph=True,
                                   retain_graph=True, only_inputs=True)[0]

    def sphere_tracing(threshold=5e-5):
        dists = torch.full((n_rays,), 0.5, dtype=torch.float64)
        unfinished = torch.ones(n_rays, dtype=torch.bool)
        for _ in range(n_march):
            points = cam_loc + dists[:, None] * ray_dirs
            sdf = implicit_network(points)[:, 0]
            sdf[~unfinished] = 0
            dists[unfinished] = dists[unfinished] + step_scale * sdf[unfinished]  # (the small net is no true SDF)
            unfinished = unfinished & (sdf.abs() > threshold) & (dists < 5.0)
        points = cam_loc + dists[:, None] * ray_dirs
        network_object_mask = implicit_network(points)[:, 0].abs() < 1e-3
        return points, network_object_mask, dists

    def sample_network(surface_output, surface_sdf_values, surface_points_grad, surface_dists, surface_cam_loc,
                       surface_ray_dirs):
        surface_ray_dirs_0 = surface_ray_dirs.detach()
        surface_points_dot = torch.bmm(surface_points_grad.view(-1, 1, 3),
                                       surface_ray_dirs_0.view(-1, 3, 1)).squeeze(-1)
        surface_dists_theta = surface_dists - (surface_output - surface_sdf_values) / surface_points_dot
        return surface_cam_loc + surface_dists_theta * surface_ray_dirs

    params = list(implicit_network.parameters()) + list(rendering_network.parameters())
    optimizer = optim.Adam(params, lr=1e-4)
    history = []
    for step in range(steps):
        implicit_network.eval()
        with torch.no_grad():
            points, network_object_mask, dists = sphere_tracing()
        implicit_network.train()
        surface_mask = network_object_mask & object_mask
        surface_points = points[surface_mask]
        surface_dists = dists[surface_mask].unsqueeze(-1)
        surface_ray_dirs = ray_dirs[surface_mask]
        surface_cam_loc = cam_loc.expand(surface_points.shape)
        surface_output = implicit_network(surface_points)[:, 0:1]
        surface_sdf_values = surface_output.detach()
        g = gradient(surface_points.clone())
        surface_points_grad = g.clone().detach()
        differentiable_surface_points = sample_network(surface_output, surface_sdf_values, surface_points_grad,
                                                       surface_dists, surface_cam_loc, surface_ray_dirs)
        eik_points = torch.tensor(rng.uniform(-1, 1, (16, 3)))
        grad_theta = gradient(eik_points)
        normals = gradient(differentiable_surface_points)
        rgb = rendering_network(torch.cat([differentiable_surface_points, normals, surface_ray_dirs], -1))
        rgb_loss = F.l1_loss(rgb, rgb_gt[surface_mask], reduction='sum') / float(n_rays)
        # mask loss: the minimum SDF along each ray that missed, pushed positive (or negative, inside the mask)
        t = torch.linspace(0.5, 4.5, n_samples, dtype=torch.float64)
        pts = cam_loc + t[None, :, None] * ray_dirs[:, None, :]
        sdf_along = implicit_network(pts.reshape(-1, 3))[:, 0].reshape(n_rays, n_samples)
        min_sdf, min_idx = sdf_along.min(-1)
        missed = ~surface_mask
        sdf_pred = -alpha * min_sdf[missed]
        gt = object_mask[missed].double()
        mask_loss = (1 / alpha) * F.binary_cross_entropy_with_logits(sdf_pred, gt, reduction='sum') / float(n_rays)
        eikonal_loss = ((grad_theta.norm(2, dim=1) - 1) ** 2).mean()
        loss = rgb_loss + 0.1 * eikonal_loss + 100.0 * mask_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), rgb_loss.item(), eikonal_loss.item(), mask_loss.item(),
                        int(surface_mask.sum())))
    return {"history": history, "dists": dists, "min_idx": min_idx, "hits": network_object_mask,
            "grads": [p.grad for p in params]}


def test_idr_sphere_tracing_with_implicit_differentiation():
    weights = weights_of(igr_net)
    ours, _ = run_both(idr, weights, rtol=1e-7, atol=1e-10)
    assert any(h[4] > 0 for h in ours["history"])  # some rays hit the surface and reach the renderer
    assert all(np.isfinite(g).all() for g in ours["grads"])
