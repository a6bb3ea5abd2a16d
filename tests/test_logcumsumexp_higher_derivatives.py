"""logcumsumexp differentiated twice with create_graph where dL/dy is a constant (a weighted sum): the
recorded first derivative must be the shifted one, not ln(dL/dy) (ln 0 = -inf gave NaN through e^(-inf + inf))."""

import numpy as np


def test_second_derivative_of_logcumsumexp_matches_log_cumsum_exp(T):
    rng = np.random.default_rng(0)
    x0 = np.abs(rng.standard_normal((6, 3))) + 0.3
    w = T.tensor(rng.standard_normal((6, 3)))  # signs of both kinds, so both halves of dL/dy are partly 0
    v = T.tensor(rng.standard_normal((6, 3)))
    results = []
    for f in (lambda x: T.logcumsumexp(x, 0), lambda x: T.log(T.cumsum(T.exp(x), 0))):
        x = T.tensor(x0, requires_grad=True)
        (g,) = T.autograd.grad((f(x) * w).sum(), x, create_graph=True)
        (g2,) = T.autograd.grad((g * v).sum(), x)
        results.append((g.detach().numpy(), g2.numpy()))
    (g, g2), (g_ref, g2_ref) = results
    assert np.all(np.isfinite(g2))
    np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g2, g2_ref, rtol=1e-10, atol=1e-12)
