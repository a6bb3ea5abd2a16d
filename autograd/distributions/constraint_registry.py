"""``biject_to(constraint)`` and ``transform_to(constraint)``: a transform from unconstrained real
numbers onto a constraint's set, for optimising a constrained parameter through an unconstrained
one (``scale = transform_to(constraints.positive)(raw)``). ``biject_to`` gives bijections (for
changes of variables, HMC); ``transform_to`` may give a simpler map that is not one (softmax onto
the simplex). ``register`` adds a factory for a constraint type or instance, as PyTorch's.
"""

from . import constraints, transforms

__all__ = ["ConstraintRegistry", "biject_to", "transform_to"]


class ConstraintRegistry:
    def __init__(self):
        self._registry = {}

    def register(self, constraint, factory=None):
        """``registry.register(constraints.positive, factory)`` or as a decorator; the factory takes
        the constraint and returns a Transform."""
        if factory is None:
            return lambda factory: self.register(constraint, factory)
        if isinstance(constraint, constraints.Constraint):
            constraint = type(constraint)
        if not isinstance(constraint, type) or not issubclass(constraint, constraints.Constraint):
            raise TypeError(f"Expected constraint to be either a Constraint subclass or instance, but got "
                            f"{constraint}")
        self._registry[constraint] = factory
        return factory

    def __call__(self, constraint):
        try:
            factory = self._registry[type(constraint)]
        except KeyError:
            raise NotImplementedError(f"Cannot transform {type(constraint).__name__} constraints") from None
        return factory(constraint)


biject_to = ConstraintRegistry()
transform_to = ConstraintRegistry()


def _to_real(constraint):
    return transforms.identity_transform


def _to_independent(registry):
    def factory(constraint):
        base = registry(constraint.base_constraint)
        return transforms.IndependentTransform(base, constraint.reinterpreted_batch_ndims)
    return factory


def _to_greater_than(constraint):
    return transforms.ComposeTransform([transforms.ExpTransform(),
                                        transforms.AffineTransform(constraint.lower_bound, 1)])


def _to_less_than(constraint):
    return transforms.ComposeTransform([transforms.ExpTransform(),
                                        transforms.AffineTransform(constraint.upper_bound, -1)])


def _to_interval(constraint):
    lower, upper = constraint.lower_bound, constraint.upper_bound
    numbers = isinstance(lower, (int, float)) and isinstance(upper, (int, float))
    if numbers and lower == 0 and upper == 1:
        return transforms.SigmoidTransform()
    return transforms.ComposeTransform([transforms.SigmoidTransform(),
                                        transforms.AffineTransform(lower, upper - lower)])


for registry in (biject_to, transform_to):
    registry.register(constraints.real, _to_real)
    registry.register(constraints.independent, _to_independent(registry))
    # (by type, as PyTorch's: positive is a greater_than(0.0), so it maps by exp then a shift by 0)
    registry.register(constraints.greater_than, _to_greater_than)
    registry.register(constraints.greater_than_eq, _to_greater_than)
    registry.register(constraints.less_than, _to_less_than)
    registry.register(constraints.interval, _to_interval)
    registry.register(constraints.half_open_interval, _to_interval)


def _to_cat(registry):
    def factory(constraint):  # each slice along dim by its own constraint's transform
        return transforms.CatTransform([registry(c) for c in constraint.cseq], constraint.dim, constraint.lengths)
    return factory


def _to_stack(registry):
    def factory(constraint):
        return transforms.StackTransform([registry(c) for c in constraint.cseq], constraint.dim)
    return factory


for registry in (biject_to, transform_to):
    registry.register(constraints.cat, _to_cat(registry))
    registry.register(constraints.stack, _to_stack(registry))
    registry.register(constraints.corr_cholesky, lambda constraint: transforms.CorrCholeskyTransform())
biject_to.register(constraints.simplex, lambda constraint: transforms.StickBreakingTransform())
transform_to.register(constraints.simplex, lambda constraint: transforms.SoftmaxTransform())
transform_to.register(constraints.lower_cholesky, lambda constraint: transforms.LowerCholeskyTransform())
transform_to.register(constraints.positive_definite, lambda constraint: transforms.PositiveDefiniteTransform())
transform_to.register(constraints.positive_semidefinite, lambda constraint: transforms.PositiveDefiniteTransform())
