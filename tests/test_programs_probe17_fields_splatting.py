# ruff: noqa: B007, F841, UP034  (the programs are kept as their authors wrote them)
"""Neural fields and differentiable rendering (see tests/pytorch_programs.py), each run on chainrule and on PyTorch
from the same weights and data, comparing losses, outputs and gradients. Splatting: soft splatting by
``index_put_(accumulate=True)`` and ``scatter_add``; 2D Gaussian splatting of an image; 3D Gaussian splatting's
densification and pruning, which rewrites Adam's state."""

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Differentiable soft splatting: points projected to an image, bilinear weights accumulated by
# index_put_(accumulate=True) and scatter_add_, normalised by the accumulated weight
# ----------------------------------------------------------------------------------------------


def soft_splat(m, steps=4, how="index_put"):
    torch, optim = m.torch, m.optim
    rng = np.random.default_rng(19)
    H, W, N = 6, 7, 30
    points = torch.tensor(rng.uniform(-0.9, 0.9, (N, 3)), requires_grad=True)
    colors = torch.tensor(rng.uniform(0, 1, (N, 3)), requires_grad=True)
    target = torch.tensor(rng.uniform(0, 1, (H, W, 3)))
    optimizer = optim.Adam([{"params": [points], "lr": 1e-2}, {"params": [colors], "lr": 5e-2}])

    def splat(points, colors):
        z = points[:, 2] + 3.0
        u = (points[:, 0] / z * 2.5 + 0.5) * (W - 1)
        v = (points[:, 1] / z * 2.5 + 0.5) * (H - 1)
        u0, v0 = u.floor().long(), v.floor().long()
        image = torch.zeros(H * W, 3, dtype=points.dtype)
        weight = torch.zeros(H * W, dtype=points.dtype)
        depth_w = torch.exp(-z)
        for du in (0, 1):
            for dv in (0, 1):
                ui, vi = u0 + du, v0 + dv
                w = (1 - (u - ui).abs()) * (1 - (v - vi).abs()) * depth_w
                valid = (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
                idx = (vi * W + ui)[valid]
                wv = w[valid]
                if how == "index_put":
                    image.index_put_((idx,), wv[:, None] * colors[valid], accumulate=True)
                    weight.index_put_((idx,), wv, accumulate=True)
                else:
                    image = image.scatter_add(0, idx[:, None].expand(-1, 3), wv[:, None] * colors[valid])
                    weight = weight.scatter_add(0, idx, wv)
        image = image / (weight[:, None] + 1e-4)
        return image.view(H, W, 3), weight.view(H, W)

    history = []
    for step in range(steps):
        image, weight = splat(points, colors)
        loss = ((image - target) ** 2 * (weight > 0)[..., None]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "image": image.detach(), "weight": weight.detach(),
            "grads": (points.grad, colors.grad)}


@pytest.mark.parametrize("how", ["index_put", "scatter_add"])
def test_soft_splatting(how):
    ours, _ = run_both(soft_splat, how=how, rtol=1e-8, atol=1e-10)
    other = run_both(soft_splat, how="scatter_add" if how == "index_put" else "index_put", compare=False)[0]
    np.testing.assert_allclose(ours["image"], other["image"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["grads"][0], other["grads"][0], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# 2D Gaussian splatting fit of an image: covariances from rotation and scale, depth-sorted alpha
# compositing with exclusive transmittance, per-group learning rates
# ----------------------------------------------------------------------------------------------


def gaussians_2d(m, steps=5, N=12, side=8):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(23)
    means = torch.nn.Parameter(torch.tensor(rng.uniform(-0.8, 0.8, (N, 2))))
    log_scales = torch.nn.Parameter(torch.tensor(np.log(rng.uniform(0.1, 0.3, (N, 2)))))
    rotations = torch.nn.Parameter(torch.tensor(rng.uniform(-np.pi, np.pi, N)))
    colors = torch.nn.Parameter(torch.tensor(rng.standard_normal((N, 3)) * 0.5))
    opacities = torch.nn.Parameter(torch.tensor(rng.standard_normal(N) * 0.5))
    depths = torch.tensor(rng.uniform(0, 1, N))
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, side, dtype=torch.float64),
                            torch.linspace(-1, 1, side, dtype=torch.float64), indexing="ij")
    pixels = torch.stack([xs, ys], -1).reshape(-1, 2)
    target = torch.tensor(rng.uniform(0, 1, (side * side, 3)))
    optimizer = optim.Adam([
        {"params": [means], "lr": 1e-2, "name": "xyz"},
        {"params": [log_scales], "lr": 5e-3, "name": "scaling"},
        {"params": [rotations], "lr": 1e-3, "name": "rotation"},
        {"params": [colors], "lr": 2.5e-2, "name": "f_dc"},
        {"params": [opacities], "lr": 5e-2, "name": "opacity"}], lr=0.0, eps=1e-15)

    def render():
        c, s = torch.cos(rotations), torch.sin(rotations)
        R = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
        S = torch.diag_embed(torch.exp(log_scales))
        L = R @ S
        cov = L @ L.transpose(1, 2)
        det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] * cov[:, 1, 0]
        conic = torch.stack([cov[:, 1, 1], -cov[:, 0, 1], cov[:, 0, 0]], -1) / det[:, None]
        order = torch.argsort(depths)
        d = pixels[:, None, :] - means[order][None]  # P x N x 2
        co = conic[order]
        power = -0.5 * (co[:, 0] * d[..., 0] ** 2 + co[:, 2] * d[..., 1] ** 2) - co[:, 1] * d[..., 0] * d[..., 1]
        alpha = torch.clamp(torch.sigmoid(opacities[order]) * torch.exp(power), max=0.99)
        T = torch.cumprod(1 - alpha, dim=1)
        T = torch.cat([torch.ones_like(T[:, :1]), T[:, :-1]], dim=1)
        w = alpha * T
        rgb = w @ torch.sigmoid(colors[order])
        return rgb, T[:, -1] * (1 - alpha[:, -1]), torch.linalg.inv(cov)

    history = []
    for it in range(steps):
        rgb, final_T, cov_inv = render()
        l1 = torch.abs(rgb - target).mean()
        loss = 0.8 * l1 + 0.2 * F.mse_loss(rgb, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "rgb": rgb.detach(), "final_T": final_T.detach(), "cov_inv": cov_inv.detach(),
            "grads": [p.grad for g in optimizer.param_groups for p in g["params"]],
            "names": [g["name"] for g in optimizer.param_groups]}


def test_gaussian_splatting_2d_image_fit():
    ours, _ = run_both(gaussians_2d, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]
    assert np.all((ours["final_T"] > 0) & (ours["final_T"] <= 1))


# ----------------------------------------------------------------------------------------------
# 3D Gaussian splatting's model bookkeeping: quaternions to rotations, covariances, SH degree 0 colour,
# gradients of screen-space means kept by retain_grad, densification by clone / split and pruning that
# rewrites Adam's state (exp_avg, exp_avg_sq) in place of the replaced parameters
# ----------------------------------------------------------------------------------------------


def gs_densify(m, steps=6, N=10):
    torch, nn, optim = m.torch, m.nn, m.optim
    rng = np.random.default_rng(37)
    C0 = 0.28209479177387814

    def inverse_sigmoid(x):
        return torch.log(x / (1 - x))

    def build_rotation(r):
        norm = torch.sqrt(r[:, 0] * r[:, 0] + r[:, 1] * r[:, 1] + r[:, 2] * r[:, 2] + r[:, 3] * r[:, 3])
        q = r / norm[:, None]
        R = torch.zeros((q.size(0), 3, 3), dtype=r.dtype)
        r, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
        R[:, 0, 0] = 1 - 2 * (y * y + z * z)
        R[:, 0, 1] = 2 * (x * y - r * z)
        R[:, 0, 2] = 2 * (x * z + r * y)
        R[:, 1, 0] = 2 * (x * y + r * z)
        R[:, 1, 1] = 1 - 2 * (x * x + z * z)
        R[:, 1, 2] = 2 * (y * z - r * x)
        R[:, 2, 0] = 2 * (x * z - r * y)
        R[:, 2, 1] = 2 * (y * z + r * x)
        R[:, 2, 2] = 1 - 2 * (x * x + y * y)
        return R

    def build_scaling_rotation(s, r):
        L = torch.zeros((s.shape[0], 3, 3), dtype=s.dtype)
        R = build_rotation(r)
        L[:, 0, 0] = s[:, 0]
        L[:, 1, 1] = s[:, 1]
        L[:, 2, 2] = s[:, 2]
        return R @ L

    class GaussianModel:
        def __init__(self):
            self._xyz = nn.Parameter(torch.tensor(rng.uniform(-1, 1, (N, 3))).requires_grad_(True))
            self._features_dc = nn.Parameter(torch.tensor(rng.standard_normal((N, 1, 3)) * 0.3).requires_grad_(True))
            self._scaling = nn.Parameter(torch.tensor(np.log(rng.uniform(0.05, 0.3, (N, 3)))).requires_grad_(True))
            rots = torch.zeros((N, 4), dtype=torch.float64)
            rots[:, 0] = 1
            rots = rots + torch.tensor(rng.standard_normal((N, 4)) * 0.2)
            self._rotation = nn.Parameter(rots.requires_grad_(True))
            self._opacity = nn.Parameter(inverse_sigmoid(0.1 * torch.ones((N, 1), dtype=torch.float64)))
            self.xyz_gradient_accum = torch.zeros((N, 1), dtype=torch.float64)
            self.denom = torch.zeros((N, 1), dtype=torch.float64)
            self.percent_dense = 0.05
            lr = [{'params': [self._xyz], 'lr': 1.6e-2, "name": "xyz"},
                  {'params': [self._features_dc], 'lr': 2.5e-2, "name": "f_dc"},
                  {'params': [self._opacity], 'lr': 5e-2, "name": "opacity"},
                  {'params': [self._scaling], 'lr': 5e-3, "name": "scaling"},
                  {'params': [self._rotation], 'lr': 1e-3, "name": "rotation"}]
            self.optimizer = torch.optim.Adam(lr, lr=0.0, eps=1e-15)

        get_scaling = property(lambda self: torch.exp(self._scaling))
        get_rotation = property(lambda self: torch.nn.functional.normalize(self._rotation))
        get_xyz = property(lambda self: self._xyz)
        get_opacity = property(lambda self: torch.sigmoid(self._opacity))

        def get_covariance(self, scaling_modifier=1):
            L = build_scaling_rotation(scaling_modifier * self.get_scaling, self._rotation)
            actual_covariance = L @ L.transpose(1, 2)
            return actual_covariance

        def update_learning_rate(self, iteration):
            for param_group in self.optimizer.param_groups:
                if param_group["name"] == "xyz":
                    lr = np.exp(np.log(1.6e-2) * (1 - iteration / 10) + np.log(1.6e-4) * iteration / 10)
                    param_group['lr'] = lr
                    return lr

        def replace_tensor_to_optimizer(self, tensor, name):
            optimizable_tensors = {}
            for group in self.optimizer.param_groups:
                if group["name"] == name:
                    stored_state = self.optimizer.state.get(group['params'][0], None)
                    stored_state["exp_avg"] = torch.zeros_like(tensor)
                    stored_state["exp_avg_sq"] = torch.zeros_like(tensor)
                    del self.optimizer.state[group['params'][0]]
                    group["params"][0] = nn.Parameter(tensor.requires_grad_(True))
                    self.optimizer.state[group['params'][0]] = stored_state
                    optimizable_tensors[group["name"]] = group["params"][0]
            return optimizable_tensors

        def reset_opacity(self):
            opacities_new = inverse_sigmoid(torch.min(self.get_opacity, torch.ones_like(self.get_opacity) * 0.01))
            optimizable_tensors = self.replace_tensor_to_optimizer(opacities_new, "opacity")
            self._opacity = optimizable_tensors["opacity"]

        def _prune_optimizer(self, mask):
            optimizable_tensors = {}
            for group in self.optimizer.param_groups:
                stored_state = self.optimizer.state.get(group['params'][0], None)
                if stored_state is not None:
                    stored_state["exp_avg"] = stored_state["exp_avg"][mask]
                    stored_state["exp_avg_sq"] = stored_state["exp_avg_sq"][mask]
                    del self.optimizer.state[group['params'][0]]
                    group["params"][0] = nn.Parameter((group["params"][0][mask].requires_grad_(True)))
                    self.optimizer.state[group['params'][0]] = stored_state
                    optimizable_tensors[group["name"]] = group["params"][0]
                else:
                    group["params"][0] = nn.Parameter(group["params"][0][mask].requires_grad_(True))
                    optimizable_tensors[group["name"]] = group["params"][0]
            return optimizable_tensors

        def prune_points(self, mask):
            valid_points_mask = ~mask
            optimizable_tensors = self._prune_optimizer(valid_points_mask)
            self._xyz = optimizable_tensors["xyz"]
            self._features_dc = optimizable_tensors["f_dc"]
            self._opacity = optimizable_tensors["opacity"]
            self._scaling = optimizable_tensors["scaling"]
            self._rotation = optimizable_tensors["rotation"]
            self.xyz_gradient_accum = self.xyz_gradient_accum[valid_points_mask]
            self.denom = self.denom[valid_points_mask]

        def cat_tensors_to_optimizer(self, tensors_dict):
            optimizable_tensors = {}
            for group in self.optimizer.param_groups:
                assert len(group["params"]) == 1
                extension_tensor = tensors_dict[group["name"]]
                stored_state = self.optimizer.state.get(group['params'][0], None)
                if stored_state is not None:
                    stored_state["exp_avg"] = torch.cat((stored_state["exp_avg"], torch.zeros_like(extension_tensor)),
                                                        dim=0)
                    stored_state["exp_avg_sq"] = torch.cat((stored_state["exp_avg_sq"],
                                                            torch.zeros_like(extension_tensor)), dim=0)
                    del self.optimizer.state[group['params'][0]]
                    group["params"][0] = nn.Parameter(
                        torch.cat((group["params"][0], extension_tensor), dim=0).requires_grad_(True))
                    self.optimizer.state[group['params'][0]] = stored_state
                    optimizable_tensors[group["name"]] = group["params"][0]
                else:
                    group["params"][0] = nn.Parameter(
                        torch.cat((group["params"][0], extension_tensor), dim=0).requires_grad_(True))
                    optimizable_tensors[group["name"]] = group["params"][0]
            return optimizable_tensors

        def densification_postfix(self, new_xyz, new_features_dc, new_opacities, new_scaling, new_rotation):
            d = {"xyz": new_xyz, "f_dc": new_features_dc, "opacity": new_opacities, "scaling": new_scaling,
                 "rotation": new_rotation}
            optimizable_tensors = self.cat_tensors_to_optimizer(d)
            self._xyz = optimizable_tensors["xyz"]
            self._features_dc = optimizable_tensors["f_dc"]
            self._opacity = optimizable_tensors["opacity"]
            self._scaling = optimizable_tensors["scaling"]
            self._rotation = optimizable_tensors["rotation"]
            self.xyz_gradient_accum = torch.zeros((self.get_xyz.shape[0], 1), dtype=torch.float64)
            self.denom = torch.zeros((self.get_xyz.shape[0], 1), dtype=torch.float64)

        def densify_and_split(self, grads, grad_threshold, scene_extent, N=2):
            n_init_points = self.get_xyz.shape[0]
            padded_grad = torch.zeros((n_init_points), dtype=torch.float64)
            padded_grad[:grads.shape[0]] = grads.squeeze()
            selected_pts_mask = torch.where(padded_grad >= grad_threshold, True, False)
            selected_pts_mask = torch.logical_and(
                selected_pts_mask, torch.max(self.get_scaling, dim=1).values > self.percent_dense * scene_extent)
            stds = self.get_scaling[selected_pts_mask].repeat(N, 1)
            means = torch.zeros((stds.size(0), 3), dtype=torch.float64)
            samples = means + 0.5 * stds  # torch.normal(mean=means, std=stds) with a fixed draw
            rots = build_rotation(self._rotation[selected_pts_mask]).repeat(N, 1, 1)
            new_xyz = torch.bmm(rots, samples.unsqueeze(-1)).squeeze(-1) + self.get_xyz[selected_pts_mask].repeat(N, 1)
            new_scaling = torch.log(self.get_scaling[selected_pts_mask].repeat(N, 1) / (0.8 * N))
            new_rotation = self._rotation[selected_pts_mask].repeat(N, 1)
            new_features_dc = self._features_dc[selected_pts_mask].repeat(N, 1, 1)
            new_opacity = self._opacity[selected_pts_mask].repeat(N, 1)
            self.densification_postfix(new_xyz, new_features_dc, new_opacity, new_scaling, new_rotation)
            prune_filter = torch.cat((selected_pts_mask, torch.zeros(N * selected_pts_mask.sum(), dtype=bool)))
            self.prune_points(prune_filter)

        def densify_and_clone(self, grads, grad_threshold, scene_extent):
            selected_pts_mask = torch.where(torch.norm(grads, dim=-1) >= grad_threshold, True, False)
            selected_pts_mask = torch.logical_and(
                selected_pts_mask, torch.max(self.get_scaling, dim=1).values <= self.percent_dense * scene_extent)
            self.densification_postfix(self._xyz[selected_pts_mask], self._features_dc[selected_pts_mask],
                                       self._opacity[selected_pts_mask], self._scaling[selected_pts_mask],
                                       self._rotation[selected_pts_mask])

        def densify_and_prune(self, max_grad, min_opacity, extent):
            grads = self.xyz_gradient_accum / self.denom
            grads[grads.isnan()] = 0.0
            self.densify_and_clone(grads, max_grad, extent)
            self.densify_and_split(grads, max_grad, extent)
            prune_mask = (self.get_opacity < min_opacity).squeeze()
            self.prune_points(prune_mask)

        def add_densification_stats(self, viewspace_point_tensor, update_filter):
            self.xyz_gradient_accum[update_filter] += torch.norm(viewspace_point_tensor.grad[update_filter, :2],
                                                                 dim=-1, keepdim=True)
            self.denom[update_filter] += 1

    gaussians = GaussianModel()
    side = 6
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, side, dtype=torch.float64),
                            torch.linspace(-1, 1, side, dtype=torch.float64), indexing="ij")
    pixels = torch.stack([xs, ys], -1).reshape(-1, 2)
    gt = torch.tensor(rng.uniform(0, 1, (side * side, 3)))

    def render(g):
        xyz = g.get_xyz
        screenspace = xyz[:, :2] / (xyz[:, 2:] + 3.0)
        screenspace.retain_grad()
        cov2d = g.get_covariance()[:, :2, :2] / (xyz[:, 2:, None] + 3.0) ** 2 + 0.01 * torch.eye(2, dtype=xyz.dtype)
        conic = torch.linalg.inv(cov2d)
        d = pixels[:, None] - screenspace[None]
        power = -0.5 * torch.einsum("pni,nij,pnj->pn", d, conic, d)
        alpha = (g.get_opacity.T * torch.exp(power)).clamp(max=0.99)
        order = torch.argsort(xyz[:, 2].detach())
        alpha = alpha[:, order]
        T = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), 1)
        color = torch.clamp_min(C0 * g._features_dc[:, 0] + 0.5, 0.0)[order]
        image = (alpha * T) @ color
        visibility_filter = (alpha > 1 / 255).any(0)[torch.argsort(order)]
        return image, screenspace, visibility_filter

    history, counts = [], []
    for iteration in range(1, steps + 1):
        gaussians.update_learning_rate(iteration)
        image, viewspace_point_tensor, visibility_filter = render(gaussians)
        Ll1 = torch.abs(image - gt).mean()
        loss = Ll1
        loss.backward()
        with torch.no_grad():
            gaussians.add_densification_stats(viewspace_point_tensor, visibility_filter)
            if iteration % 3 == 0:
                gaussians.densify_and_prune(1e-3, 0.005, 1.0)
            if iteration == 4:
                gaussians.reset_opacity()
            gaussians.optimizer.step()
            gaussians.optimizer.zero_grad(set_to_none=True)
        history.append(loss.item())
        counts.append(gaussians.get_xyz.shape[0])
    states = [(g["name"], gaussians.optimizer.state[g["params"][0]]["exp_avg"],
               gaussians.optimizer.state[g["params"][0]]["exp_avg_sq"]) for g in gaussians.optimizer.param_groups
              if g["params"][0] in gaussians.optimizer.state]
    return {"history": history, "counts": counts, "xyz": gaussians.get_xyz.detach(),
            "opacity": gaussians.get_opacity.detach(), "states": states,
            "lrs": [g["lr"] for g in gaussians.optimizer.param_groups]}


def test_gaussian_splatting_densification_rewrites_adam_state():
    ours, _ = run_both(gs_densify, rtol=1e-8, atol=1e-10)
    assert ours["counts"][2] != ours["counts"][1]  # densification changed the number of Gaussians
    assert len(ours["states"]) == 5 and ours["states"][0][1].shape == ours["xyz"].shape
