# ruff: noqa: B007, E501, E702, E731  (the programs are kept as their authors wrote them)
"""Implicit and bilevel differentiation programs (see tests/pytorch_programs.py) as PyTorch users write them, each
run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy and invariants. Neural
implicit surfaces: IGR's SDF network with geometric init, ``weight_norm`` and the eikonal loss, SIREN's Laplacian by
nested ``autograd.grad``, NeuS's variance and sphere tracing."""

import numpy as np
import pytest

from .pytorch_programs import run_both


def igr(m, wn='old'):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
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
                if wn == 'old':
                    lin = nn.utils.weight_norm(lin)
                elif wn == 'new':
                    lin = nn.utils.parametrizations.weight_norm(lin)
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
    def gradient(inputs, outputs):
        d_points = torch.ones_like(outputs, requires_grad=False, device=outputs.device)
        points_grad = torch.autograd.grad(outputs=outputs, inputs=inputs, grad_outputs=d_points,
                                          create_graph=True, retain_graph=True, only_inputs=True)[0][:, -3:]
        return points_grad
    net = ImplicitNet(3, [16, 16, 16], skip_in=(2,)).double()
    opt = torch.optim.Adam([{"params": net.parameters(), "lr": 1e-3}])
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
    g = torch.Generator().manual_seed(0)
    pts = F.normalize(torch.randn(32, 3, generator=g, dtype=torch.float64), dim=-1)
    normals = pts.clone()
    hist = []
    for it in range(3):
        mnfld_pnts = pts.clone().requires_grad_()
        sigma = torch.full((32, 1), 0.1, dtype=torch.float64)
        sample_local = mnfld_pnts + torch.randn(32, 3, generator=g, dtype=torch.float64) * sigma
        sample_global = torch.rand(8, 3, generator=g, dtype=torch.float64) * 2.4 - 1.2
        nonmnfld_pnts = torch.cat([sample_local, sample_global], dim=0)
        mnfld_pred = net(mnfld_pnts)
        nonmnfld_pred = net(nonmnfld_pnts)
        mnfld_grad = gradient(mnfld_pnts, mnfld_pred)
        nonmnfld_grad = gradient(nonmnfld_pnts, nonmnfld_pred)
        mnfld_loss = (mnfld_pred.abs()).mean()
        grad_loss = ((nonmnfld_grad.norm(2, dim=-1) - 1) ** 2).mean()
        normals_loss = ((mnfld_grad - normals).abs()).norm(2, dim=1).mean()
        loss = mnfld_loss + 0.1 * grad_loss + 1.0 * normals_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        hist.append([mnfld_loss.item(), grad_loss.item(), normals_loss.item()])
    probe = torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64, requires_grad=True)
    sdf_grad = gradient(probe, net(probe))
    with torch.no_grad():
        fd = torch.stack([(net(probe + 1e-6 * e) - net(probe - 1e-6 * e)).squeeze() / 2e-6 for e in torch.eye(3, dtype=torch.float64)])
    return {"hist": hist, "state": dict(net.state_dict()), "grads": [p.grad for p in net.parameters()],
            "probe_grad": sdf_grad, "fd": fd}


@pytest.mark.filterwarnings("ignore::FutureWarning")  # (nn.utils.weight_norm's deprecation)
@pytest.mark.parametrize("wn", ["old", "new", None])
def test_igr_sdf_with_eikonal_loss(wn):
    # (rtol 1e-6: weight_norm's g comes from a float32 norm before .double(), where PyTorch's kernel fuses the
    # multiply-adds of a 3-element row and NumPy does not: one unit in the last place of g, 1e-6 after training)
    ours, _ = run_both(igr, wn=wn, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours["probe_grad"][0], ours["fd"], rtol=1e-6, atol=1e-8)
    assert all(np.isfinite(h).all() for h in ours["hist"])


def siren(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    class SineLayer(nn.Module):
        def __init__(self, in_f, out_f, bias=True, is_first=False, omega_0=30):
            super().__init__()
            self.omega_0 = omega_0; self.is_first = is_first; self.in_features = in_f
            self.linear = nn.Linear(in_f, out_f, bias=bias)
            with torch.no_grad():
                if self.is_first:
                    self.linear.weight.uniform_(-1 / self.in_features, 1 / self.in_features)
                else:
                    self.linear.weight.uniform_(-np.sqrt(6 / self.in_features) / self.omega_0, np.sqrt(6 / self.in_features) / self.omega_0)
        def forward(self, input):
            return torch.sin(self.omega_0 * self.linear(input))
    class Siren(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(SineLayer(2, 16, is_first=True), SineLayer(16, 16), nn.Linear(16, 1))
        def forward(self, coords):
            coords = coords.clone().detach().requires_grad_(True)
            output = self.net(coords)
            return output, coords
    def gradient(y, x, grad_outputs=None):
        if grad_outputs is None:
            grad_outputs = torch.ones_like(y)
        return torch.autograd.grad(y, [x], grad_outputs=grad_outputs, create_graph=True)[0]
    def divergence(y, x):
        div = 0.
        for i in range(y.shape[-1]):
            div += torch.autograd.grad(y[..., i], x, torch.ones_like(y[..., i]), create_graph=True)[0][..., i:i + 1]
        return div
    def laplace(y, x):
        return divergence(gradient(y, x), x)
    model = Siren().double()
    lin = torch.linspace(-1, 1, steps=5, dtype=torch.float64)
    mgrid = torch.stack(torch.meshgrid(lin, lin, indexing='ij'), dim=-1).reshape(-1, 2)
    out, coords = model(mgrid)
    img_grad = gradient(out, coords)
    img_lap = laplace(out, coords)
    target_lap = -(coords ** 2).sum(-1, keepdim=True).detach()
    loss = ((img_lap - target_lap) ** 2).mean() + 1e-3 * img_grad.norm(dim=-1).mean()
    loss.backward()
    H = torch.autograd.functional.hessian(lambda c: model.net(c).sum(), mgrid[7:8].clone())
    hessian_trace = H[0, 0, 0, 0] + H[0, 1, 0, 1]
    # NeuS-style: variance net, SDF to alpha, sphere tracing under no_grad
    class SingleVarianceNetwork(nn.Module):
        def __init__(self, init_val):
            super().__init__()
            self.register_parameter('variance', nn.Parameter(torch.tensor(init_val)))
        def forward(self, x):
            return torch.ones([len(x), 1]) * torch.exp(self.variance * 10.0)
    dev = SingleVarianceNetwork(0.3)
    sdf = lambda p: p.norm(dim=-1, keepdim=True) - 0.5
    rays_o = torch.tensor([[0., 0., -2.], [0.3, 0.1, -2.]])
    rays_d = F.normalize(torch.tensor([[0., 0., 1.], [0., 0.05, 1.]]), dim=-1)
    t = torch.zeros(2, 1)
    with torch.no_grad():
        for _ in range(20):
            t = t + sdf(rays_o + t * rays_d)
    p = (rays_o + t * rays_d).requires_grad_()
    s = sdf(p)
    n = torch.autograd.grad(s.sum(), p, create_graph=True)[0]
    inv_s = dev(p).clip(1e-6, 1e6)
    prev_cdf = torch.sigmoid((s + 0.01) * inv_s)
    next_cdf = torch.sigmoid((s - 0.01) * inv_s)
    alpha = ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clip(0.0, 1.0)
    (alpha.sum() + n.sum()).backward()
    return {"loss": loss, "img_grad": img_grad, "img_lap": img_lap, "grads": [q.grad for q in model.parameters()],
            "t": t, "n": n, "alpha": alpha, "variance_grad": dev.variance.grad, "hessian_trace": hessian_trace}


def test_siren_laplacian_and_neus_sphere_tracing():
    ours, _ = run_both(siren, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["img_lap"][7, 0], ours["hessian_trace"], rtol=1e-10)  # nested grads = trace H
    np.testing.assert_allclose(ours["t"][0], [1.5], atol=1e-4)  # sphere tracing along the axis reaches |p| = 0.5
    np.testing.assert_allclose(np.linalg.norm(ours["n"], axis=1), 1, rtol=1e-10)  # an exact SDF's gradient is unit
