"""A distribution written outside the library expands itself as PyTorch's own do: its expand takes the empty
instance from ``Distribution._get_checked_instance`` (which refuses a subclass with its own __init__ that did
not write an expand) and fills in the expanded parameters (on chainrule and on PyTorch, the `T` fixture)."""

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
