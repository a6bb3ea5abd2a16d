"""Chi2(df): the sum of the squares of df standard normals; Gamma(df/2, rate ½)."""

from . import constraints
from .distribution import broadcast_all
from .gamma import Gamma


class Chi2(Gamma):
    arg_constraints = {"df": constraints.positive}

    def __init__(self, df, validate_args=None):
        (df,) = broadcast_all(df)
        super().__init__(0.5 * df, 0.5, validate_args=validate_args)

    @property
    def df(self):
        return self.concentration * 2
