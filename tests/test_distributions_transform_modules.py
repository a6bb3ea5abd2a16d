"""Transforms as flows use them: a ``Transform`` that is also an ``nn.Module`` (Pyro's TransformModule), and
``biject_to``/``transform_to`` of ``constraints.cat``/``constraints.stack`` (one transform per slice), on
chainrule and on PyTorch (the ``T`` fixture) against the same expectations."""

import importlib

import numpy as np


def test_transform_that_is_a_module_registers_its_parameters(T):
    nn = importlib.import_module("nn" if T.__name__ == "autograd" else "torch.nn")
    dist = T.distributions

    class Scale(dist.Transform, nn.Module):
        domain = codomain = dist.constraints.real
        bijective = True

        def __init__(self):
            super().__init__(cache_size=1)  # Transform.__init__ goes on to nn.Module.__init__
            self.log_scale = nn.Parameter(T.tensor([0.5, -1.0]))

        def __hash__(self):
            return super(nn.Module, self).__hash__()

        def _call(self, x):
            return x * self.log_scale.exp()

        def _inverse(self, y):
            return y / self.log_scale.exp()

        def log_abs_det_jacobian(self, x, y):
            return self.log_scale.expand_as(x)

    t = Scale()
    assert [name for name, _ in t.named_parameters()] == ["log_scale"]
    d = dist.TransformedDistribution(dist.Normal(T.zeros(2), T.ones(2)), [t])
    x = T.tensor([1.0, 2.0])
    lp = d.log_prob(x)
    lp.sum().backward()
    z = np.array([1.0, 2.0]) / np.exp([0.5, -1.0])
    np.testing.assert_allclose(lp.detach().numpy(), -0.5 * z ** 2 - 0.5 * np.log(2 * np.pi) - [0.5, -1.0], rtol=1e-6)
    np.testing.assert_allclose(t.log_scale.grad.numpy(), z ** 2 - 1, rtol=1e-6)
    y = t(x)
    assert t.inv(y) is x  # cache_size=1 still works


def test_biject_to_cat_and_stack(T):
    dist = T.distributions
    C = dist.constraints
    x = T.tensor([[0.3, -1.2, 0.7], [2.0, 0.1, -0.4]], dtype=T.float64)
    for registry in (dist.biject_to, dist.transform_to):
        cat = registry(C.cat([C.positive, C.interval(-1.0, 1.0)], dim=-1, lengths=[1, 2]))
        assert isinstance(cat, dist.transforms.CatTransform)
        y = cat(x)
        expected = np.concatenate([np.exp(x[:, :1].numpy()), np.tanh(x[:, 1:].numpy() / 2)], axis=-1)
        np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12)
        np.testing.assert_allclose(cat.inv(y).numpy(), x.numpy(), rtol=1e-12)
        assert C.cat([C.positive, C.interval(-1.0, 1.0)], dim=-1, lengths=[1, 2]).check(y).all()
        stack = registry(C.stack([C.positive, C.unit_interval], dim=0))
        assert isinstance(stack, dist.transforms.StackTransform)
        y = stack(x)
        np.testing.assert_allclose(y.numpy(), [np.exp(x[0].numpy()), 1 / (1 + np.exp(-x[1].numpy()))], rtol=1e-12)
        ld = stack.log_abs_det_jacobian(x, y)
        np.testing.assert_allclose(ld.numpy(), [x[0].numpy(), np.log(y[1].numpy() * (1 - y[1].numpy()))], rtol=1e-12)


def test_pickled_transform_leaves_out_its_inverse(T):
    import pickle

    tr = T.distributions.transforms
    t = tr.ComposeTransform([tr.ExpTransform(), tr.AffineTransform(1.0, 2.0)])
    assert t.inv.inv is t  # the inverse made on demand refers back: a cycle pickle need not keep
    back = pickle.loads(pickle.dumps(t))
    assert back._inv is None
    np.testing.assert_allclose(back.inv(back(T.tensor([0.5]))).numpy(), [0.5], rtol=1e-6)


def test_pickled_inverse_keeps_what_it_inverts():
    import pickle

    import autograd

    inverse = pickle.loads(pickle.dumps(autograd.distributions.transforms.ExpTransform().inv))
    # (PyTorch's Transform.__getstate__ drops _inv here too, leaving an inverse of nothing)
    np.testing.assert_allclose(inverse(autograd.tensor([1.0, np.e])).numpy(), [0.0, 1.0], atol=1e-7)


def test_compose_transform_that_is_a_module_list(T):
    nn = importlib.import_module("nn" if T.__name__ == "autograd" else "torch.nn")
    dist = T.distributions

    class Shift(dist.Transform, nn.Module):
        domain = codomain = dist.constraints.real
        bijective = True

        def __init__(self, b):
            super().__init__(cache_size=1)
            self.b = nn.Parameter(T.tensor([b]))

        def __hash__(self):
            return super(nn.Module, self).__hash__()

        def _call(self, x):
            return x + self.b

        def _inverse(self, y):
            return y - self.b

        def log_abs_det_jacobian(self, x, y):
            return T.zeros_like(x)

    class ComposeTransformModule(dist.ComposeTransform, nn.ModuleList):  # as Pyro writes it
        def __init__(self, parts, cache_size=0):
            super().__init__(parts, cache_size=cache_size)
            for part in parts:
                self.append(part)

        def __hash__(self):
            return super(nn.Module, self).__hash__()

    flow = ComposeTransformModule([Shift(0.5), Shift(-2.0)])
    assert len(flow) == 2 and [name for name, _ in flow.named_parameters()] == ["0.b", "1.b"]
    d = dist.TransformedDistribution(dist.Normal(T.zeros(1), T.ones(1)), flow)
    d.log_prob(T.tensor([1.0])).sum().backward()
    # z = x - 0.5 + 2 = 2.5: d log N(z) / db_k = z for each shift
    np.testing.assert_allclose([p.grad.item() for p in flow.parameters()], [2.5, 2.5], rtol=1e-6)
