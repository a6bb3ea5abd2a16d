# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""Recommender, tabular and time-series programs as their reference repositories write them, run as
tests/probe11_tabular_common.py says. Tabular: TabNet's sparsemax and entmax-1.5 by hand (sort, cumsum, gather of the
threshold) as ``autograd.Function``s (one writing ``input -= max`` into its caller's tensor), entmax-bisect with a
learnt alpha, ghost batch norm by ``chunk``, the GLU feature transformer and the attentive transformer's prior."""

import numpy as np
import pytest

from .probe11_tabular_common import params_of, tabnet_functions
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# TabNet (Arik & Pfister 2019, dreamquark-ai/tabnet): sparsemax / entmax by hand, ghost batch norm
# ----------------------------------------------------------------------------------------------


def sparse_maps(m):
    torch = m.torch
    Sparsemax, Entmax15 = tabnet_functions(m)
    rng = np.random.default_rng(9)
    z = torch.from_numpy(rng.standard_normal((5, 7)) * 2)
    # the Function (its hand-written backward), and the same maths left to autograd
    x1 = z.clone().requires_grad_(True)
    a = x1 * 1.0
    p = Sparsemax.apply(a, -1)
    w = torch.from_numpy(rng.standard_normal((5, 7)))
    (p * w).sum().backward()
    x2 = z.clone().requires_grad_(True)
    shifted = x2 - x2.max(dim=-1, keepdim=True)[0]
    tau, _ = Sparsemax._threshold_and_support(shifted, dim=-1)
    (torch.clamp(shifted - tau, min=0) * w).sum().backward()
    # entmax over dim 0 of a 3-D input
    x3 = torch.from_numpy(rng.standard_normal((6, 2, 3)) * 3).requires_grad_(True)
    e = Entmax15.apply(x3, 0)
    (e * torch.from_numpy(rng.standard_normal((6, 2, 3)))).sum().backward()
    return {"sparsemax": p, "shifted_in_place": a.detach(), "grad": x1.grad, "grad_autograd": x2.grad,
            "entmax": e, "entmax_grad": x3.grad}


def test_sparsemax_and_entmax():
    ours, _ = run_both(sparse_maps, rtol=1e-10, atol=1e-12)
    p = ours["sparsemax"]
    np.testing.assert_allclose(p.sum(-1), 1, rtol=1e-12)
    assert (p == 0).any() and (p >= 0).all()
    # forward wrote ``input -= max_val`` into the caller's tensor, as PyTorch's Function does
    z = np.random.default_rng(9).standard_normal((5, 7)) * 2
    np.testing.assert_allclose(ours["shifted_in_place"], z - z.max(-1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(ours["grad"], ours["grad_autograd"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["entmax"].sum(0), 1, rtol=1e-12)


def entmax_bisect(m):
    """entmax's EntmaxBisectFunction (deep-spin/entmax): classmethod forward / backward, a learnt alpha
    whose gradient comes back in the expanded shape (reduced to alpha's own by autograd), in-place bisection."""
    torch = m.torch
    Function = torch.autograd.Function

    class EntmaxBisectFunction(Function):
        @classmethod
        def _gp(cls, x, alpha): return x ** (alpha - 1)
        @classmethod
        def _gp_inv(cls, y, alpha): return y ** (1 / (alpha - 1))
        @classmethod
        def _p(cls, X, alpha): return cls._gp_inv(torch.clamp(X, min=0), alpha)
        @classmethod
        def forward(cls, ctx, X, alpha=1.5, dim=-1, n_iter=50, ensure_sum_one=True):
            if not isinstance(alpha, torch.Tensor):
                alpha = torch.tensor(alpha, dtype=X.dtype, device=X.device)
            alpha_shape = list(X.shape)
            alpha_shape[dim] = 1
            alpha = alpha.expand(*alpha_shape)
            ctx.alpha = alpha
            ctx.dim = dim
            d = X.shape[dim]
            X = X * (alpha - 1)
            max_val, _ = X.max(dim=dim, keepdim=True)
            tau_lo = max_val - cls._gp(1, alpha)
            tau_hi = max_val - cls._gp(1 / d, alpha)
            f_lo = cls._p(X - tau_lo, alpha).sum(dim) - 1
            dm = tau_hi - tau_lo
            for it in range(n_iter):
                dm /= 2
                tau_m = tau_lo + dm
                p_m = cls._p(X - tau_m, alpha)
                f_m = p_m.sum(dim) - 1
                mask = (f_m * f_lo >= 0).unsqueeze(dim)
                tau_lo = torch.where(mask, tau_m, tau_lo)
            if ensure_sum_one:
                p_m /= p_m.sum(dim=dim).unsqueeze(dim=dim)
            ctx.save_for_backward(p_m)
            return p_m
        @classmethod
        def backward(cls, ctx, dY):
            Y, = ctx.saved_tensors
            gppr = torch.where(Y > 0, Y ** (2 - ctx.alpha), Y.new_zeros(1))
            dX = dY * gppr
            q = dX.sum(ctx.dim) / gppr.sum(ctx.dim)
            q = q.unsqueeze(ctx.dim)
            dX -= q * gppr
            d_alpha = None
            if ctx.needs_input_grad[1]:
                S = torch.where(Y > 0, Y * torch.log(Y), Y.new_zeros(1))
                ent = S.sum(ctx.dim).unsqueeze(ctx.dim)
                Y_skewed = gppr / gppr.sum(ctx.dim).unsqueeze(ctx.dim)
                d_alpha = dY * (Y - Y_skewed) / ((ctx.alpha - 1) ** 2)
                d_alpha -= dY * (S - Y_skewed * ent) / (ctx.alpha - 1)
                d_alpha = d_alpha.sum(ctx.dim).unsqueeze(ctx.dim)
            return dX, d_alpha, None, None, None
    out = {}
    X = torch.tensor(np.random.default_rng(0).standard_normal((3, 6)), requires_grad=True)
    w = torch.tensor(np.random.default_rng(1).standard_normal((3, 6)))
    for name, alpha in (("scalar", torch.tensor(1.3, dtype=torch.float64, requires_grad=True)),
                        ("one", torch.tensor([1.7], dtype=torch.float64, requires_grad=True)),
                        ("rows", torch.tensor([[1.2], [1.5], [2.0]], dtype=torch.float64, requires_grad=True)),
                        ("number", 1.5)):
        y = EntmaxBisectFunction.apply(X, alpha, -1, 30)
        inputs = [X] + ([alpha] if isinstance(alpha, torch.Tensor) else [])
        out[name] = [y, *torch.autograd.grad((y * w).sum(), inputs)]
    return out


def test_entmax_bisect_learnt_alpha():
    ours, _ = run_both(entmax_bisect, rtol=1e-9, atol=1e-12)
    for name, (y, *grads) in ours.items():
        np.testing.assert_allclose(y.sum(-1), 1, rtol=1e-12)
    assert ours["scalar"][2].shape == () and ours["one"][2].shape == (1,) and ours["rows"][2].shape == (3, 1)
    # alpha = 2 is sparsemax: the bisection's answer for the third row
    z = np.random.default_rng(0).standard_normal((3, 6))[2]
    s = np.sort(z)[::-1]
    k = np.arange(1, 7)
    support = 1 + k * s > np.cumsum(s)
    tau = (np.cumsum(s)[support][-1] - 1) / k[support][-1]
    np.testing.assert_allclose(ours["rows"][0][2], np.maximum(z - tau, 0), atol=1e-8)


def make_tabnet(m, input_dim=6, output_dim=3, n_d=4, n_a=4, n_steps=2, gamma=1.3, virtual_batch_size=8,
                mask_type="sparsemax"):
    torch, nn = m.torch, m.nn
    Sparsemax, Entmax15 = tabnet_functions(m)

    def initialize_non_glu(module, input_dim, output_dim):
        gain_value = np.sqrt((input_dim + output_dim) / np.sqrt(4 * input_dim))
        nn.init.xavier_normal_(module.weight, gain=gain_value)

    def initialize_glu(module, input_dim, output_dim):
        gain_value = np.sqrt((input_dim + output_dim) / np.sqrt(input_dim))
        nn.init.xavier_normal_(module.weight, gain=gain_value)

    class GBN(nn.Module):
        def __init__(self, input_dim, virtual_batch_size=128, momentum=0.01):
            super(GBN, self).__init__()
            self.input_dim = input_dim
            self.virtual_batch_size = virtual_batch_size
            self.bn = nn.BatchNorm1d(self.input_dim, momentum=momentum)

        def forward(self, x):
            chunks = x.chunk(int(np.ceil(x.shape[0] / self.virtual_batch_size)), 0)
            res = [self.bn(x_) for x_ in chunks]
            return torch.cat(res, dim=0)

    class GLU_Layer(nn.Module):
        def __init__(self, input_dim, output_dim, fc=None, virtual_batch_size=128, momentum=0.02):
            super(GLU_Layer, self).__init__()
            self.output_dim = output_dim
            if fc:
                self.fc = fc
            else:
                self.fc = nn.Linear(input_dim, 2 * output_dim, bias=False)
            initialize_glu(self.fc, input_dim, 2 * output_dim)
            self.bn = GBN(2 * output_dim, virtual_batch_size=virtual_batch_size, momentum=momentum)

        def forward(self, x):
            x = self.fc(x)
            x = self.bn(x)
            out = torch.mul(x[:, : self.output_dim], torch.sigmoid(x[:, self.output_dim:]))
            return out

    class GLU_Block(nn.Module):
        def __init__(self, input_dim, output_dim, n_glu=2, first=False, shared_layers=None,
                     virtual_batch_size=128, momentum=0.02):
            super(GLU_Block, self).__init__()
            self.first = first
            self.shared_layers = shared_layers
            self.n_glu = n_glu
            self.glu_layers = nn.ModuleList()
            params = {"virtual_batch_size": virtual_batch_size, "momentum": momentum}
            fc = shared_layers[0] if shared_layers else None
            self.glu_layers.append(GLU_Layer(input_dim, output_dim, fc=fc, **params))
            for glu_id in range(1, self.n_glu):
                fc = shared_layers[glu_id] if shared_layers else None
                self.glu_layers.append(GLU_Layer(output_dim, output_dim, fc=fc, **params))

        def forward(self, x):
            scale = torch.sqrt(torch.FloatTensor([0.5]).to(x.device))
            if self.first:  # the first layer of the block has no scale multiplication
                x = self.glu_layers[0](x)
                layers_left = range(1, self.n_glu)
            else:
                layers_left = range(self.n_glu)
            for glu_id in layers_left:
                x = torch.add(x, self.glu_layers[glu_id](x))
                x = x * scale
            return x

    class FeatTransformer(nn.Module):
        def __init__(self, input_dim, output_dim, shared_layers, n_glu_independent, virtual_batch_size=128,
                     momentum=0.02):
            super(FeatTransformer, self).__init__()
            params = {"n_glu": len(shared_layers), "virtual_batch_size": virtual_batch_size, "momentum": momentum}
            self.shared = GLU_Block(input_dim, output_dim, first=True, shared_layers=shared_layers, **params)
            params["n_glu"] = n_glu_independent
            self.specifics = GLU_Block(output_dim, output_dim, first=False, **params)

        def forward(self, x):
            x = self.shared(x)
            x = self.specifics(x)
            return x

    class AttentiveTransformer(nn.Module):
        def __init__(self, input_dim, group_dim, virtual_batch_size=128, momentum=0.02, mask_type="sparsemax"):
            super(AttentiveTransformer, self).__init__()
            self.fc = nn.Linear(input_dim, group_dim, bias=False)
            initialize_non_glu(self.fc, input_dim, group_dim)
            self.bn = GBN(group_dim, virtual_batch_size=virtual_batch_size, momentum=momentum)
            self.mask_type = mask_type

        def forward(self, priors, processed_feat):
            x = self.fc(processed_feat)
            x = self.bn(x)
            x = torch.mul(x, priors)
            if self.mask_type == "sparsemax":
                x = Sparsemax.apply(x, -1)
            else:
                x = Entmax15.apply(x, -1)
            return x

    class TabNetEncoder(nn.Module):
        def __init__(self):
            super(TabNetEncoder, self).__init__()
            self.n_d, self.n_a, self.n_steps, self.gamma = n_d, n_a, n_steps, gamma
            self.epsilon = 1e-15
            self.initial_bn = nn.BatchNorm1d(input_dim, momentum=0.01)
            shared_feat_transform = nn.ModuleList()
            for i in range(2):
                if i == 0:
                    shared_feat_transform.append(nn.Linear(input_dim, 2 * (n_d + n_a), bias=False))
                else:
                    shared_feat_transform.append(nn.Linear(n_d + n_a, 2 * (n_d + n_a), bias=False))
            self.initial_splitter = FeatTransformer(input_dim, n_d + n_a, shared_feat_transform, 2,
                                                    virtual_batch_size, 0.02)
            self.feat_transformers = nn.ModuleList()
            self.att_transformers = nn.ModuleList()
            for step in range(n_steps):
                self.feat_transformers.append(FeatTransformer(input_dim, n_d + n_a, shared_feat_transform, 2,
                                                              virtual_batch_size, 0.02))
                self.att_transformers.append(AttentiveTransformer(n_a, input_dim, virtual_batch_size, 0.02,
                                                                  mask_type))

        def forward(self, x, prior=None):
            x = self.initial_bn(x)
            bs = x.shape[0]
            if prior is None:
                prior = torch.ones((bs, input_dim)).to(x.device).to(x.dtype)
            M_loss = 0
            att = self.initial_splitter(x)[:, self.n_d:]
            steps_output = []
            for step in range(self.n_steps):
                M = self.att_transformers[step](prior, att)
                M_loss += torch.mean(torch.sum(torch.mul(M, torch.log(M + self.epsilon)), dim=1))
                prior = torch.mul(self.gamma - M, prior)
                masked_x = torch.mul(M, x)
                out = self.feat_transformers[step](masked_x)
                d = nn.ReLU()(out[:, : self.n_d])
                steps_output.append(d)
                att = out[:, self.n_d:]
            M_loss /= self.n_steps
            return steps_output, M_loss

    class TabNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = TabNetEncoder()
            self.final_mapping = nn.Linear(n_d, output_dim, bias=False)
            initialize_non_glu(self.final_mapping, n_d, output_dim)

        def forward(self, x):
            steps_output, M_loss = self.encoder(x)
            res = torch.sum(torch.stack(steps_output, dim=0), dim=0)
            return self.final_mapping(res), M_loss

    return TabNet()


@pytest.mark.parametrize("mask_type", ["sparsemax", "entmax"])
def test_tabnet(mask_type):
    def program(m, weights):
        torch, nn, optim = m.torch, m.nn, m.optim
        model = load(m, make_tabnet(m, mask_type=mask_type), weights).double()
        rng = np.random.default_rng(10)
        X = torch.from_numpy(rng.standard_normal((20, 6)))  # 20 rows: ghost batches of 7, 7 and 6
        y = torch.from_numpy(rng.integers(0, 3, 20))
        optimizer = optim.Adam(model.parameters(), lr=2e-2)
        lambda_sparse = 1e-3
        losses = []
        for step in range(3):
            optimizer.zero_grad()
            output, M_loss = model(X)
            loss = nn.functional.cross_entropy(output, y) - lambda_sparse * M_loss
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            out, _ = model(X[:5])
        return {"losses": losses, "grads": grads, "params": params_of(model), "eval": out,
                "buffers": {k: v for k, v in model.state_dict().items() if "running" in k}}

    run_both(program, weights_of(lambda m: make_tabnet(m, mask_type=mask_type)), rtol=1e-8, atol=1e-10)
