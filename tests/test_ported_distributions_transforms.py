"""PyTorch's test/distributions/test_transforms.py: every transform (and its inverse, cached or not)
inverts itself, is equal only to itself, caches its last value, has the log |det J| of its Jacobian
(here from autograd.functional.jacobian), and composes into TransformedDistributions of the right
batch and event shapes.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import numpy as np
import pytest

from tests.ported import values


def get_transforms(T, cache_size):
    D = T.distributions
    rng = np.random.default_rng(3)

    def randn(*shape):
        return T.tensor(rng.standard_normal(shape), dtype=T.float32)

    def affine(*shape):
        return D.AffineTransform(randn(*shape), randn(*shape), cache_size=cache_size)

    transforms = [
        D.AbsTransform(cache_size=cache_size), D.ExpTransform(cache_size=cache_size),
        D.PowerTransform(exponent=2, cache_size=cache_size),
        D.PowerTransform(exponent=randn(), cache_size=cache_size),
        D.PowerTransform(exponent=randn(), cache_size=cache_size),
        D.SigmoidTransform(cache_size=cache_size), D.TanhTransform(cache_size=cache_size),
        D.AffineTransform(0, 1, cache_size=cache_size), D.AffineTransform(1, -2, cache_size=cache_size),
        affine(5), affine(4, 5),
        D.SoftmaxTransform(cache_size=cache_size), D.SoftplusTransform(cache_size=cache_size),
        D.StickBreakingTransform(cache_size=cache_size), D.LowerCholeskyTransform(cache_size=cache_size),
        D.CorrCholeskyTransform(cache_size=cache_size),
        D.ComposeTransform([affine(4, 5)]),
        D.ComposeTransform([affine(4, 5), D.ExpTransform(cache_size=cache_size)]),
        D.ComposeTransform([D.AffineTransform(0, 1, cache_size=cache_size), affine(4, 5),
                            D.AffineTransform(1, -2, cache_size=cache_size), affine(4, 5)]),
        D.ReshapeTransform((4, 5), (2, 5, 2)),
        D.IndependentTransform(affine(5), 1),
    ]
    return transforms + [t.inv for t in transforms]


COUNT = 42  # len(get_transforms(...))


def transform_at(T, i, cache_size=0):
    if i == COUNT:
        return T.distributions.identity_transform
    return get_transforms(T, cache_size)[i]


def generate_data(T, transform):
    """A value in the transform's domain, as PyTorch's generate_data."""
    D, C = T.distributions, T.distributions.constraints
    rng = np.random.default_rng(1)

    def randn(*shape):
        return T.tensor(rng.standard_normal(shape), dtype=T.float32)

    while isinstance(transform, D.IndependentTransform):
        transform = transform.base_transform
    if isinstance(transform, D.ReshapeTransform):
        return randn(*transform.in_shape)
    if isinstance(transform.inv, D.ReshapeTransform):
        return randn(*transform.inv.out_shape)
    domain = transform.domain
    while isinstance(domain, C.independent) and domain is not C.real_vector:
        domain = domain.base_constraint
    if domain is C.lower_cholesky or transform.codomain is C.lower_cholesky:
        return randn(6, 6)
    if domain is C.real:
        return randn(4, 5)
    if domain is C.real_vector:
        return randn(3, 6)
    if domain is C.positive:
        return randn(4, 5).exp()
    if domain is C.unit_interval:
        return T.tensor(rng.random((4, 5)), dtype=T.float32)
    if isinstance(domain, C.interval):
        return T.tensor(rng.random((4, 5)), dtype=T.float32) * (domain.upper_bound - domain.lower_bound) + \
            domain.lower_bound
    if domain is C.simplex:
        x = randn(4, 5).exp()
        return x / x.sum(-1, True)
    if domain is C.corr_cholesky:
        x = randn(4, 5, 5).tril()
        x = x / x.norm(dim=-1, keepdim=True)
        return x.tril(-1) + T.diag_embed(x.diagonal(dim1=-2, dim2=-1).abs())
    raise ValueError(f"Unsupported domain: {domain}")


ALL = [(i, c) for c in (1, 0) for i in range(COUNT)] + [(COUNT, 0)]


@pytest.mark.parametrize("i, cache_size", ALL)
def test_inv_inv(T, i, cache_size):
    t = transform_at(T, i, cache_size)
    assert t.inv.inv is t


def test_equality(T):
    transforms = get_transforms(T, 0)
    for x in transforms:
        for y in transforms:
            assert (x == y) if x is y else (x != y)
    assert T.distributions.identity_transform == T.distributions.identity_transform.inv


@pytest.mark.parametrize("i, cache_size", ALL)
def test_with_cache(T, i, cache_size):
    t = transform_at(T, i, cache_size)
    if t._cache_size == 0:
        t = t.with_cache(1)
    assert t._cache_size == 1
    x = generate_data(T, t).requires_grad_()
    try:
        y = t(x)
    except NotImplementedError:
        pytest.skip("Not implemented.")
    assert t(x) is y


@pytest.mark.parametrize("test_cached", [True, False])
@pytest.mark.parametrize("i, cache_size", ALL)
def test_forward_inverse(T, i, cache_size, test_cached):
    t = transform_at(T, i, cache_size)
    x = generate_data(T, t).requires_grad_()
    try:
        y = t(x)
    except NotImplementedError:
        pytest.skip("Not implemented.")
    assert tuple(y.shape) == tuple(t.forward_shape(x.shape))
    if test_cached:
        x2 = t.inv(y)
    else:
        try:
            x2 = t.inv(y.clone())  # (past the cache)
        except NotImplementedError:
            pytest.skip("Not implemented.")
    assert tuple(x2.shape) == tuple(t.inverse_shape(y.shape))
    if t.bijective:
        assert T.allclose(x2, x, atol=1e-4, equal_nan=True), f"{t} t.inv(t(-)) error"
    else:
        assert T.allclose(t(x2), y, atol=1e-4, equal_nan=True), f"{t} t(t.inv(t(-))) error"


def test_compose_transform_shapes(T):
    D = T.distributions
    t0, t1, t2 = D.ExpTransform(), D.SoftmaxTransform(), D.LowerCholeskyTransform()
    assert (t0.event_dim, t1.event_dim, t2.event_dim) == (0, 1, 2)
    assert D.ComposeTransform([t0, t1]).event_dim == 1
    assert D.ComposeTransform([t0, t2]).event_dim == 2
    assert D.ComposeTransform([t1, t2]).event_dim == 2


def test_transformed_distribution_shapes(T):
    D = T.distributions
    t0, t1, t2 = D.ExpTransform(), D.SoftmaxTransform(), D.LowerCholeskyTransform()
    b0, b1, b2 = D.Normal(T.zeros(4, 4), T.ones(4, 4)), D.Dirichlet(T.ones(4, 4)), \
        D.Normal(T.zeros(3, 4, 4), T.ones(3, 4, 4))
    TD = D.TransformedDistribution
    cases = [((4, 4), (), b0), ((4,), (4,), b1), ((4, 4), (), TD(b0, [t0])), ((4,), (4,), TD(b0, [t1])),
             ((4,), (4,), TD(b0, [t0, t1])), ((), (4, 4), TD(b0, [t0, t2])), ((4,), (4,), TD(b0, [t1, t0])),
             ((), (4, 4), TD(b0, [t1, t2])), ((), (4, 4), TD(b0, [t2, t0])), ((), (4, 4), TD(b0, [t2, t1])),
             ((4,), (4,), TD(b1, [t0])), ((4,), (4,), TD(b1, [t1])), ((), (4, 4), TD(b1, [t2])),
             ((4,), (4,), TD(b1, [t0, t1])), ((), (4, 4), TD(b1, [t0, t2])), ((4,), (4,), TD(b1, [t1, t0])),
             ((), (4, 4), TD(b1, [t1, t2])), ((), (4, 4), TD(b1, [t2, t0])), ((), (4, 4), TD(b1, [t2, t1])),
             ((3, 4, 4), (), b2), ((3,), (4, 4), TD(b2, [t2])), ((3,), (4, 4), TD(b2, [t0, t2])),
             ((3,), (4, 4), TD(b2, [t1, t2])), ((3,), (4, 4), TD(b2, [t2, t0])), ((3,), (4, 4), TD(b2, [t2, t1]))]
    for batch, event, d in cases:
        assert tuple(d.batch_shape) == batch and tuple(d.event_shape) == event, repr(d)
        try:
            d.log_prob(d.rsample())  # (must not fail)
        except NotImplementedError:
            pass


def reshape_transform(T, t, shape):
    """t with its affine parameters expanded or reshaped to shape (to squash the batch dims)."""
    D = T.distributions
    if isinstance(t, D.AffineTransform):
        if not hasattr(t.loc, "shape"):
            return t
        try:
            return D.AffineTransform(t.loc.expand(shape), t.scale.expand(shape), cache_size=t._cache_size)
        except RuntimeError:
            return D.AffineTransform(t.loc.reshape(shape), t.scale.reshape(shape), cache_size=t._cache_size)
    if isinstance(t, D.ComposeTransform):
        return D.ComposeTransform([reshape_transform(T, p, shape) for p in t.parts], cache_size=t._cache_size)
    if isinstance(t.inv, (D.AffineTransform, D.ComposeTransform)):
        return reshape_transform(T, t.inv, shape).inv
    return t


@pytest.mark.parametrize("i, cache_size", ALL)
def test_jacobian(T, i, cache_size):
    """log_abs_det_jacobian is ln |det| of the Jacobian (its diagonal for elementwise transforms)."""
    D = T.distributions
    utils = __import__(T.__name__ + ".distributions.utils", fromlist=["x"])
    t = transform_at(T, i, cache_size)
    x = generate_data(T, t)
    try:
        actual = t.log_abs_det_jacobian(x, t(x))
    except NotImplementedError:
        pytest.skip("Not implemented.")
    assert tuple(actual.shape) == tuple(x.shape[:x.dim() - t.domain.event_dim])
    t = reshape_transform(T, t, x.shape)
    x_ = x.view((-1,) + tuple(x.shape[x.dim() - t.domain.event_dim:]))
    n = x_.shape[0]
    t = reshape_transform(T, t, x_.shape)
    jacobian = T.autograd.functional.jacobian
    if isinstance(t, D.ReshapeTransform) or isinstance(t.inv, D.ReshapeTransform):
        expected = np.zeros(())
    elif t.domain.event_dim == 0:
        jac = values(jacobian(t, x_))
        jac = jac.reshape(x_.numel(), x_.numel())
        np.testing.assert_allclose(jac, np.diag(np.diag(jac)), atol=1e-6)
        expected = np.log(np.abs(np.diag(jac))).reshape(tuple(x.shape))
    else:
        if isinstance(t, D.CorrCholeskyTransform):
            jac = jacobian(lambda x: utils.tril_matrix_to_vec(t(x), diag=-1), x_)
        elif isinstance(t.inv, D.CorrCholeskyTransform):
            jac = jacobian(lambda x: t(utils.vec_to_tril_matrix(x, diag=-1)), utils.tril_matrix_to_vec(x_, diag=-1))
        elif isinstance(t, D.StickBreakingTransform):
            jac = jacobian(lambda x: t(x)[..., :-1], x_)
        else:
            jac = jacobian(t, x_)
        # (batch, y event, batch, x event): the batches are independent, so keep the diagonal blocks
        jac = values(jac).reshape(n, -1, n, values(jac).shape[-1])
        jac = np.stack([jac[k, :, k, :] for k in range(n)])
        jac = jac[..., :jac.shape[-2]]  # (the inverse stick-breaking's extra zero dim)
        expected = np.linalg.slogdet(jac.astype(np.float64))[1]
    np.testing.assert_allclose(values(actual), np.broadcast_to(expected, tuple(actual.shape)), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("event_dims", [(0,), (1,), (2, 3), (0, 1, 2), (1, 2, 0), (2, 0, 1)], ids=str)
def test_compose_affine(T, event_dims):
    D = T.distributions
    transforms = [D.AffineTransform(T.zeros((1,) * e), 1, event_dim=e) for e in event_dims]
    transform = D.ComposeTransform(transforms)
    assert transform.codomain.event_dim == max(event_dims)
    assert transform.domain.event_dim == max(event_dims)
    base = D.Normal(0, 1)
    if transform.domain.event_dim:
        base = base.expand((1,) * transform.domain.event_dim)
    assert D.TransformedDistribution(base, transform.parts).support.event_dim == max(event_dims)
    base = D.Dirichlet(T.ones(5))
    if transform.domain.event_dim > 1:
        base = base.expand((1,) * (transform.domain.event_dim - 1))
    assert D.TransformedDistribution(base, transforms).support.event_dim == max(1, max(event_dims))


@pytest.mark.parametrize("batch_shape", [(), (6,), (5, 4)], ids=str)
def test_compose_reshape(T, batch_shape):
    D = T.distributions
    transforms = [D.ReshapeTransform((), ()), D.ReshapeTransform((2,), (1, 2)), D.ReshapeTransform((3, 1, 2), (6,)),
                  D.ReshapeTransform((6,), (2, 3))]
    transform = D.ComposeTransform(transforms)
    assert transform.codomain.event_dim == 2 and transform.domain.event_dim == 2
    data = T.randn(batch_shape + (3, 2))
    assert tuple(transform(data).shape) == batch_shape + (2, 3)
    d = D.TransformedDistribution(D.Normal(data, 1), transforms)
    assert tuple(d.batch_shape) == batch_shape and tuple(d.event_shape) == (2, 3)
    assert d.support.event_dim == 2


@pytest.mark.parametrize("sample_shape", [(), (7,)], ids=str)
@pytest.mark.parametrize("transform_dim", [0, 1, 2])
@pytest.mark.parametrize("base_batch_dim", [0, 1, 2])
@pytest.mark.parametrize("base_event_dim", [0, 1, 2])
@pytest.mark.parametrize("num_transforms", [0, 1, 2, 3])
def test_transformed_distribution(T, base_batch_dim, base_event_dim, transform_dim, num_transforms, sample_shape):
    D = T.distributions
    shape = (2, 3, 4, 5)
    base = D.Normal(0, 1).expand(shape[4 - base_batch_dim - base_event_dim:])
    if base_event_dim:
        base = D.Independent(base, base_event_dim)
    transforms = [D.AffineTransform(T.zeros(shape[4 - transform_dim:]), 1), D.ReshapeTransform((4, 5), (20,)),
                  D.ReshapeTransform((3, 20), (6, 10))][:num_transforms]
    transform = D.ComposeTransform(transforms)
    if base_batch_dim + base_event_dim < transform.domain.event_dim:
        with pytest.raises(ValueError):
            D.TransformedDistribution(base, transforms)
        return
    d = D.TransformedDistribution(base, transforms)
    x = d.sample(sample_shape)
    assert tuple(x.shape) == sample_shape + tuple(d.batch_shape) + tuple(d.event_shape)
    assert len(set(values(x).reshape(-1).tolist())) >= 0.9 * x.numel()
    assert tuple(d.log_prob(x).shape) == sample_shape + tuple(d.batch_shape)
    y = x
    while y.dim() > len(d.event_shape):
        y = y[0]
    assert tuple(d.log_prob(y).shape) == tuple(d.batch_shape)


def check_pieces(T, t, pieces, x, y, join, dim):
    """CatTransform / StackTransform t act piece by piece: domain and codomain checks, forward, inverse
    and log |det J| are those of the pieces (x, y split as pieces say), joined along dim."""
    xs, ys = [p[1] for p in pieces], [p[2] for p in pieces]
    parts = [p[0] for p in pieces]
    same = lambda a, b: np.testing.assert_array_equal(values(a), values(b))  # noqa: E731
    same(t.domain.check(x), join([p.domain.check(v) for p, v in zip(parts, xs)], dim=dim))
    same(t(x), join([p(v) for p, v in zip(parts, xs)], dim=dim))
    same(t.codomain.check(y), join([p.codomain.check(v) for p, v in zip(parts, ys)], dim=dim))
    np.testing.assert_allclose(values(t.inv(y)), values(join([p.inv(v) for p, v in zip(parts, ys)], dim=dim)),
                               rtol=1e-6)
    np.testing.assert_allclose(values(t.log_abs_det_jacobian(x, y)),
                               values(join([p.log_abs_det_jacobian(a, b) for p, a, b in zip(parts, xs, ys)],
                                           dim=dim)), rtol=1e-6)


def test_cat_transform(T):
    D = T.distributions
    row = T.arange(1, 101, dtype=T.float32).view(-1, 100)
    x1, x2, x3 = -1 * row, (row - 1) / 100, row
    pieces = [(D.ExpTransform(), x1, row), (D.AffineTransform(1, 100), x2, row), (D.identity_transform, x3, row)]
    t = D.CatTransform([p[0] for p in pieces], dim=0)
    check_pieces(T, t, pieces, T.cat([x1, x2, x3], dim=0), T.cat([row, row, row], dim=0), T.cat, 0)
    # pieces of lengths 1 and 2, the second itself a CatTransform
    inner = D.CatTransform([D.AffineTransform(1, 100), D.identity_transform], dim=0)
    pieces = [(D.ExpTransform(), x1, row), (inner, T.cat([x2, x3]), T.cat([row, row]))]
    t = D.CatTransform([p[0] for p in pieces], dim=0, lengths=[1, 2])
    check_pieces(T, t, pieces, T.cat([x1, x2, x3], dim=0), T.cat([row, row, row], dim=0), T.cat, 0)


def test_cat_event_dim(T):
    D = T.distributions
    t1 = D.AffineTransform(0, 2 * T.ones(2), event_dim=1)
    t2 = D.AffineTransform(0, 2 * T.ones(2), event_dim=1)
    x1, x2 = T.randn(16, 2), T.randn(16, 2)
    t = D.CatTransform([t1, t2], dim=1, lengths=[2, 2])
    x = T.cat([x1, x2], dim=1)
    expected = t1.log_abs_det_jacobian(x1, t1(x1)) + t2.log_abs_det_jacobian(x2, t2(x2))
    np.testing.assert_allclose(values(t.log_abs_det_jacobian(x, t(x))), values(expected), rtol=1e-6)


def test_stack_transform(T):
    D = T.distributions
    row = T.arange(1, 101, dtype=T.float32)
    x1, x2, x3 = -1 * row, (row - 1) / 100, row
    pieces = [(D.ExpTransform(), x1, row), (D.AffineTransform(1, 100), x2, row), (D.identity_transform, x3, row)]
    t = D.StackTransform([p[0] for p in pieces], dim=0)
    check_pieces(T, t, pieces, T.stack([x1, x2, x3], dim=0), T.stack([row, row, row], dim=0), T.stack, 0)
