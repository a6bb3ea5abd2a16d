"""Distributions written outside the library, on chainrule and on PyTorch (the `T` fixture): one expands itself as
PyTorch's own do, taking the empty instance from ``Distribution._get_checked_instance`` (which refuses a subclass
with its own __init__ that did not write an expand) and filling in the expanded parameters; KL formulas registered
for them are chosen as PyTorch chooses (the most specific ancestor of p first, a RuntimeWarning where q's order
would choose another)."""

import warnings

import numpy as np
import pytest


def shifted_exponential(T):
    D = T.distributions

    class ShiftedExponential(D.Distribution):
        arg_constraints = {"rate": D.constraints.positive, "shift": D.constraints.real}
        support = D.constraints.real

        def __init__(self, rate, shift, validate_args=None):
            self.rate, self.shift = D.utils.broadcast_all(rate, shift)
            super().__init__(self.rate.shape, validate_args=validate_args)

        def expand(self, batch_shape, _instance=None):
            new = self._get_checked_instance(ShiftedExponential, _instance)
            batch_shape = T.Size(batch_shape)
            new.rate = self.rate.expand(batch_shape)
            new.shift = self.shift.expand(batch_shape)
            super(ShiftedExponential, new).__init__(batch_shape, validate_args=False)
            new._validate_args = self._validate_args
            return new

        def log_prob(self, value):
            return self.rate.log() - self.rate * (value - self.shift)

    class Renamed(ShiftedExponential):  # a custom __init__, and no expand of its own
        def __init__(self, scale):
            super().__init__(1 / scale, T.zeros(()))

    return ShiftedExponential, Renamed


def test_custom_expand_with_get_checked_instance(T):
    ShiftedExponential, Renamed = shifted_exponential(T)
    m = ShiftedExponential(T.tensor([1.0, 2.0]), T.tensor(0.5))
    wide = m.expand((3, 2))
    assert type(wide) is ShiftedExponential and wide.batch_shape == (3, 2)
    np.testing.assert_allclose(wide.log_prob(T.ones(3, 2)).numpy(), np.tile([-0.5, np.log(2.0) - 1.0], (3, 1)),
                               rtol=1e-6)
    assert m.batch_shape == (2,)  # the original is left alone
    independent = T.distributions.Independent(m, 1).expand((4,))  # Independent expands its base through it
    assert independent.batch_shape == (4,) and independent.log_prob(T.ones(4, 2)).shape == (4,)
    with pytest.raises(NotImplementedError, match="Subclass Renamed of ShiftedExponential that defines a custom "
                                                  "__init__ method must also define a custom .expand"):
        Renamed(T.tensor([2.0])).expand((3, 1))


def test_a_transformed_distribution_subclass_keeps_the_fields_its_expand_set(T):
    """LogNormal's pattern: the subclass's expand sets its own parameters expanded, then hands the instance to
    TransformedDistribution.expand, which must not put the unexpanded ones back (they were copied over them)."""
    D = T.distributions

    class Logistic(D.TransformedDistribution):
        arg_constraints = {"loc": D.constraints.real, "scale": D.constraints.positive}

        def __init__(self, loc, scale, validate_args=None):
            self.loc, self.scale = D.utils.broadcast_all(loc, scale)
            base = D.Uniform(T.zeros_like(self.loc), T.ones_like(self.loc))
            transforms = [D.transforms.SigmoidTransform().inv, D.transforms.AffineTransform(self.loc, self.scale)]
            super().__init__(base, transforms, validate_args=validate_args)

        def expand(self, batch_shape, _instance=None):
            new = self._get_checked_instance(Logistic, _instance)
            new.loc, new.scale = self.loc.expand(batch_shape), self.scale.expand(batch_shape)
            return super().expand(batch_shape, _instance=new)

        @property
        def mean(self):
            return self.loc

    class Mixture(D.MixtureSameFamily):
        def expand(self, batch_shape, _instance=None):
            new = self._get_checked_instance(Mixture, _instance)
            new.tag = T.zeros(batch_shape)
            return super().expand(batch_shape, _instance=new)

    wide = Logistic(T.tensor([0.0, 1.0]), T.tensor(2.0)).expand((3, 2))
    assert type(wide) is Logistic and wide.batch_shape == (3, 2)
    assert wide.mean.shape == (3, 2) and wide.scale.shape == (3, 2)
    np.testing.assert_allclose(wide.log_prob(T.zeros(3, 2)).numpy()[:, 0], -np.log(2.0) - 2 * np.log(2.0), rtol=1e-6)
    mixture = Mixture(D.Categorical(logits=T.zeros(2)), D.Normal(T.zeros(2), T.ones(2)))
    mixture.tag = T.zeros(())
    assert mixture.expand((4,)).tag.shape == (4,)


def test_a_registered_kl_is_chosen_by_p_first_and_an_ambiguity_warned(T):
    """(MyNormal, Distribution) against the inherited (Normal, Normal): PyTorch takes p's most specific match,
    the Monte-Carlo-style formula registered for MyNormal, and warns that putting q first would take Normal's."""
    D = T.distributions

    class MyNormal(D.Normal):
        pass

    @D.kl.register_kl(MyNormal, D.Distribution)
    def _kl_my_normal_anything(p, q):
        return T.full(p.batch_shape, 42.0)

    p, q = MyNormal(T.zeros(2), T.ones(2)), D.Normal(T.ones(2), 2 * T.ones(2))
    with pytest.warns(RuntimeWarning, match=r"Ambiguous kl_divergence\(MyNormal, Normal\). "
                                            r"Please register_kl\(MyNormal, Normal\)"):
        np.testing.assert_array_equal(D.kl_divergence(p, q).numpy(), [42.0, 42.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the choice is remembered: warned once per pair of types
        np.testing.assert_array_equal(D.kl_divergence(p, q).numpy(), [42.0, 42.0])

        @D.kl.register_kl(MyNormal, D.Normal)  # a closer pair registered later is found (the memo is cleared)
        def _kl_my_normal_normal(p, q):
            return T.full(p.batch_shape, 7.0)

        np.testing.assert_array_equal(D.kl_divergence(p, q).numpy(), [7.0, 7.0])
    # the other way round only Normal's closed form matches: log(σ_q/σ_p) + (σ_p² + (μ_p - μ_q)²)/(2σ_q²) - ½
    np.testing.assert_allclose(D.kl_divergence(q, p).numpy(), [np.log(0.5) + (4 + 1) / 2 - 0.5] * 2, rtol=1e-6)
    with pytest.warns(RuntimeWarning, match=r"Please register_kl\(MyNormal, Laplace\)"):  # (Normal, Laplace) too
        np.testing.assert_array_equal(D.kl_divergence(p, D.Laplace(T.zeros(2), T.ones(2))).numpy(), [42.0, 42.0])
