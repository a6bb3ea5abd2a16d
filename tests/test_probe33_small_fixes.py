"""Small differences from PyTorch 2.13 fixed in session 33, each checked on both libraries (the ``T`` fixture:
chainrule's, then PyTorch's where it is installed): nn.Parameter of data that is not a Tensor, ``capturable`` and
``fused`` at an optimizer's step on the CPU, gradcheck's warning for inputs below double precision, the dtypes of
CPU autocast's composites with a final product (pinv, matrix_power, svd_lowrank), and det's gradient at singular
matrices."""

import importlib

import numpy as np
import pytest

import autograd


def _nn_optim(T):
    """(nn, optim) of the library under test."""
    if T is autograd:
        return importlib.import_module("nn"), importlib.import_module("optim")
    return T.nn, T.optim


# -- nn.Parameter takes a Tensor or None ---------------------------------------------------------------------------


@pytest.mark.parametrize("data, kind", [([1.0, 2.0], "list"), (np.ones(2), "numpy.ndarray"), (1.5, "float"),
                                        ((1, 2), "tuple")], ids=["list", "ndarray", "float", "tuple"])
def test_parameter_of_data_that_is_not_a_tensor_raises_attribute_error(T, data, kind):
    nn, _ = _nn_optim(T)
    with pytest.raises(AttributeError, match=f"^'{kind}' object has no attribute 'detach'"):
        nn.Parameter(data)


def test_parameter_refusal_is_a_type_error_too_and_names_the_way_out():
    nn, _ = _nn_optim(autograd)
    with pytest.raises(TypeError, match=r"not a numpy.ndarray of shape \(2, 3\); write "
                                        r"nn.Parameter\(autograd.tensor\(data\)\)"):
        nn.Parameter(np.zeros((2, 3)))


def test_parameter_of_none_or_a_tensor_still_made(T):
    nn, _ = _nn_optim(T)
    empty = nn.Parameter(None)
    assert tuple(empty.shape) == (0,) and empty.requires_grad and empty.dtype == T.float32
    assert tuple(nn.Parameter().shape) == (0,)
    made = nn.Parameter(T.tensor([1.0, 2.0]), requires_grad=False)
    assert made.tolist() == [1.0, 2.0] and not made.requires_grad


# -- capturable and fused at the step, on the CPU ------------------------------------------------------------------

DEVICES = ["cuda", "xpu", "hpu", "privateuseone"]
CAPTURABLE = [  # (optimizer, its options, the tensors PyTorch's message names, whether its device list has xla)
    ("Adam", {}, "params and state_steps", True),
    ("AdamW", {}, "params and state_steps", True),
    ("Adam", {"foreach": True}, "params and state_steps", False),
    ("RMSprop", {}, "params and state_steps", True),
    ("RMSprop", {"foreach": True}, "params and state_steps", True),
    ("Adadelta", {}, "params and state_steps", False),
    ("Adamax", {}, "params and state_steps", True),
    ("NAdam", {}, "params, mu_products and state_steps", True),
    ("RAdam", {"foreach": True}, "params and state_steps", False),
    ("ASGD", {}, "params, mus, etas, and state_steps", True),
    ("Rprop", {"foreach": True}, "params and state_steps", True),
]


@pytest.mark.parametrize("name, options, tensors, xla", CAPTURABLE,
                         ids=[f"{c[0]}{'-foreach' if c[1] else ''}" for c in CAPTURABLE])
def test_capturable_on_the_cpu_asserts_at_the_step(T, name, options, tensors, xla):
    nn, optim = _nn_optim(T)
    p = nn.Parameter(T.ones(3))
    optimizer = getattr(optim, name)([p], lr=0.1, capturable=True, **options)  # (made: the check is at the step)
    optimizer.step()  # (no gradient yet: nothing to check, nothing changes)
    assert p.tolist() == [1.0, 1.0, 1.0]
    p.grad = T.ones(3)
    devices = DEVICES + ["xla"] * xla
    with pytest.raises(AssertionError, match=f"If capturable=True, {tensors} must be on supported devices: "
                                             f"{devices}.".replace("[", r"\[").replace("]", r"\]")):
        optimizer.step()
    assert p.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_fused_with_capturable_steps_on_the_cpu(T, name):
    """PyTorch's fused path checks its own devices (the CPU among them), not capturable's."""
    nn, optim = _nn_optim(T)
    p = nn.Parameter(T.ones(3))
    optimizer = getattr(optim, name)([p], lr=0.1, fused=True, capturable=True)
    p.grad = T.ones(3)
    optimizer.step()
    expected = 0.9 if name == "Adam" else 1 - 0.1 * 1e-2 - 0.1
    np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "Adagrad"])
def test_fused_refuses_a_complex_parameter_at_the_step(T, name):
    nn, optim = _nn_optim(T)
    p = nn.Parameter(T.ones(2, dtype=T.complex64))
    optimizer = getattr(optim, name)([p], lr=0.1, fused=True)
    optimizer.step()  # (no gradient: nothing checked)
    p.grad = T.ones(2, dtype=T.complex64)
    with pytest.raises(RuntimeError, match=r"`fused=True` requires all the params to be floating point Tensors of "
                                           r"supported devices: \['mps', 'cuda', 'xpu', 'hpu', 'cpu', 'mtia', "
                                           r"'privateuseone'\] but (torch.)?complex64 and cpu"):
        optimizer.step()


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "Adagrad"])
def test_fused_refuses_differentiable_at_construction(T, name):
    nn, optim = _nn_optim(T)
    with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
        getattr(optim, name)([nn.Parameter(T.ones(2))], lr=0.1, fused=True, differentiable=True)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "Adagrad"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_fused_steps_floating_parameters_on_the_cpu(T, name, dtype):
    nn, optim = _nn_optim(T)
    p = nn.Parameter(T.ones(3, dtype=getattr(T, dtype)))
    optimizer = getattr(optim, name)([p], lr=0.1, fused=True)
    p.grad = T.ones(3, dtype=getattr(T, dtype))
    optimizer.step()
    expected = {"Adam": 0.9, "AdamW": 0.899, "SGD": 0.9, "Adagrad": 0.9}[name]
    np.testing.assert_allclose(p.detach().double().numpy(), expected, rtol=1e-3 if dtype == "float16" else 1e-6)


# -- gradcheck of inputs below double precision ---------------------------------------------------------------------


def _gradcheck(T):
    return T.autograd.gradcheck


@pytest.mark.parametrize("dtype, position", [("float32", 0), ("float16", 0), ("complex64", 0), ("float32", 1)])
def test_gradcheck_warns_of_an_input_below_double_precision(T, dtype, position):
    inputs = [T.tensor([0.5, -1.0, 2.0], dtype=T.float64, requires_grad=True) for _ in range(2)]
    inputs[position] = T.tensor([0.5, -1.0, 2.0], dtype=getattr(T, dtype), requires_grad=True)
    with pytest.warns(UserWarning, match=f"Input #{position} requires gradient and is not a double precision "
                                         "floating point or complex. This check will likely fail if all the inputs "
                                         "are not of double precision floating point or complex."):
        assert _gradcheck(T)(lambda x, y: (x * y).sum(), tuple(inputs), eps=1e-2, atol=1e-1)


def test_gradcheck_of_a_float32_input_checks_in_float64_here():
    """Ours copies every input to float64 (and says so in the warning), so a correct gradient passes at the default
    tolerances, where PyTorch's finite differences in float32 would fail it."""
    x = autograd.tensor([0.3, -1.2, 2.5], requires_grad=True)
    with pytest.warns(UserWarning, match="copied to float64 first"):
        assert autograd.autograd.gradcheck(lambda x: (x * x * x).sum(), (x,))


def test_gradcheck_of_float64_inputs_does_not_warn(T, recwarn):
    x = T.tensor([0.3, -1.2], dtype=T.float64, requires_grad=True)
    assert _gradcheck(T)(lambda x: (x * x).sum(), (x,))
    assert not [w for w in recwarn if "double precision" in str(w.message)]


# -- CPU autocast: composites whose last step is a lowered product ---------------------------------------------------

A = (np.random.default_rng(0).standard_normal((4, 4)) + 4 * np.eye(4))
B = np.random.default_rng(1).standard_normal((5, 3))


def _autocast(T, fn, matrix=A, dtype="float32"):
    x = T.tensor(matrix, dtype=getattr(T, dtype), requires_grad=True)
    with T.autocast("cpu", dtype=T.float16):
        out = fn(T, x)
    return x, (out if isinstance(out, tuple) else (out,))


def _dtype_name(t):
    return str(t.dtype).removeprefix("torch.")


@pytest.mark.parametrize("matrix", [A, B], ids=["square", "tall"])
def test_autocast_pinv_is_float16(T, matrix):
    x, (inverse,) = _autocast(T, lambda T, x: T.linalg.pinv(x), matrix)
    assert _dtype_name(inverse) == "float16"
    np.testing.assert_allclose(inverse.detach().double().numpy(), np.linalg.pinv(matrix), atol=2e-3, rtol=2e-3)


def test_autocast_pinv_backward_gives_float32_gradients():
    """(PyTorch 2.13's backward here mixes float16 and float32 in a product and raises: a bug of its own.)"""
    x, (inverse,) = _autocast(autograd, lambda T, x: T.linalg.pinv(x))
    inverse.float().sum().backward()
    assert x.grad.dtype == autograd.float32
    a = np.linalg.pinv(A)  # d Σ A⁻¹ / dA = -A⁻ᵀ 1 1ᵀ A⁻ᵀ
    np.testing.assert_allclose(x.grad.numpy(), -(a.T @ np.ones((4, 4)) @ a.T), rtol=2e-3, atol=2e-3)


def test_autocast_pinv_and_pinverse_keep_their_pytorch_dtypes(T):
    _, (pinverse,) = _autocast(T, lambda T, x: T.pinverse(x))
    _, (float64,) = _autocast(T, lambda T, x: T.linalg.pinv(x), dtype="float64")
    assert _dtype_name(pinverse) == "float32" and _dtype_name(float64) == "float64"


def test_autocast_pinv_of_a_float16_input_is_refused(T):
    with pytest.raises(RuntimeError):
        _autocast(T, lambda T, x: T.linalg.pinv(x), dtype="float16")


@pytest.mark.parametrize("n, dtype", [(-3, "float16"), (-2, "float16"), (-1, "float32"), (0, "float32"),
                                      (1, "float32"), (2, "float16"), (3, "float16")])
@pytest.mark.parametrize("method", [False, True], ids=["linalg", "method"])
def test_autocast_matrix_power_dtype_by_n(T, n, dtype, method):
    _, (power,) = _autocast(T, lambda T, x: x.matrix_power(n) if method else T.linalg.matrix_power(x, n))
    assert _dtype_name(power) == dtype
    np.testing.assert_allclose(power.detach().double().numpy(), np.linalg.matrix_power(A, n), rtol=3e-3, atol=3e-3)


@pytest.mark.parametrize("input_dtype", ["float16", "float32"])
def test_autocast_matrix_power_of_a_negative_power_takes_float16_input(T, input_dtype):
    x, (power,) = _autocast(T, lambda T, x: T.linalg.matrix_power(x, -2), dtype=input_dtype)
    assert _dtype_name(power) == "float16"
    power.float().sum().backward()
    assert _dtype_name(x.grad) == input_dtype


@pytest.mark.parametrize("name", ["svd_lowrank", "pca_lowrank"])
@pytest.mark.parametrize("input_dtype", ["float16", "float32"])
def test_autocast_lowrank_u_is_float16(T, name, input_dtype):
    T.manual_seed(0)
    _, (u, s, v) = _autocast(T, lambda T, x: getattr(T, name)(x, q=3), B, input_dtype)
    assert [_dtype_name(t) for t in (u, s, v)] == ["float16", "float32", "float32"]
    centred = B - B.mean(0) if name == "pca_lowrank" else B
    exact_u, exact_s, exact_vh = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(s.detach().double().numpy(), exact_s, rtol=5e-3)
    np.testing.assert_allclose(np.abs(u.detach().double().numpy()), np.abs(exact_u), atol=5e-3)
    np.testing.assert_allclose(np.abs(v.detach().double().numpy()), np.abs(exact_vh.T), atol=5e-3)


# -- det's gradient at singular matrices --------------------------------------------------------------------------

SINGULAR = {  # matrix, its cofactors (the derivative of det: adj(A)ᵀ)
    "rank1-2x2": ([[1.0, 2.0], [2.0, 4.0]], [[4.0, -2.0], [-2.0, 1.0]]),
    "rank1-3x3": ([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [3.0, 6.0, 9.0]], np.zeros((3, 3))),
    "rank2-3x3": ([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]],
                  [[-3.0, 6.0, -3.0], [6.0, -12.0, 6.0], [-3.0, 6.0, -3.0]]),
    "rank2-diagonal": ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, 0, 0], [0, 0, 0], [0, 0, 1]]),
    "zero": (np.zeros((3, 3)), np.zeros((3, 3))),
}


@pytest.mark.parametrize("case", SINGULAR)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_det_gradient_at_a_singular_matrix_is_the_cofactor_matrix(case, dtype):
    """PyTorch 2.13's first backward gives 0 here (its LU path), its create_graph=True path the cofactors: ours gives
    the cofactors (what finite differences see) in both."""
    matrix, cofactors = SINGULAR[case]
    x = autograd.tensor(np.array(matrix), dtype=getattr(autograd, dtype), requires_grad=True)
    autograd.linalg.det(x).backward()
    assert x.grad.dtype == x.dtype
    np.testing.assert_allclose(x.grad.numpy(), cofactors, atol=1e-5)


@pytest.mark.parametrize("case", ["rank1-2x2", "rank2-3x3"])
def test_det_gradient_at_a_singular_matrix_matches_pytorchs_create_graph_path(T, case):
    matrix, cofactors = SINGULAR[case]
    x = T.tensor(matrix, dtype=T.float64, requires_grad=True)
    (grad,) = T.autograd.grad(T.linalg.det(x), x, create_graph=True)
    np.testing.assert_allclose(grad.detach().numpy(), cofactors, atol=1e-10)


def test_det_gradient_of_a_batch_with_singular_and_regular_matrices():
    regular = np.array([[2.0, 1.0], [1.0, 3.0]])
    batch = np.stack([np.array(SINGULAR["rank1-2x2"][0]), regular, 2 * np.array(SINGULAR["rank1-2x2"][0])])
    x = autograd.tensor(batch, dtype=autograd.float64, requires_grad=True)
    autograd.linalg.det(x).sum().backward()
    expected = [SINGULAR["rank1-2x2"][1], np.linalg.det(regular) * np.linalg.inv(regular).T,
                2 * np.array(SINGULAR["rank1-2x2"][1])]
    np.testing.assert_allclose(x.grad.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("case", ["rank1-2x2", "rank2-3x3", "rank2-diagonal", "zero"])
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_det_gradient_at_a_singular_complex_matrix(case, dtype):
    """PyTorch's convention for a holomorphic function: dL/dA = dL/dd · conj(cof A) (its SVD path's values, which
    its create_graph=True backward gives: checked against PyTorch below)."""
    matrix, cofactors = SINGULAR[case]
    scale, weight = 1 + 0.5j, 0.3 - 0.7j
    x = autograd.tensor(np.array(matrix) * scale, dtype=getattr(autograd, dtype), requires_grad=True)
    (autograd.linalg.det(x) * weight).real.backward()
    n = len(matrix)
    expected = np.conj(weight) * np.conj(np.array(cofactors) * scale ** (n - 1))  # (cof(cA) = cⁿ⁻¹ cof A)
    assert x.grad.dtype == x.dtype
    np.testing.assert_allclose(x.grad.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("case", ["rank1-2x2", "rank2-3x3"])
def test_det_gradient_at_a_singular_complex_matrix_as_pytorchs(T, case):
    matrix, _ = SINGULAR[case]
    x = T.tensor(np.array(matrix) * (1 + 0.5j), dtype=T.complex128, requires_grad=True)
    (grad,) = T.autograd.grad((T.linalg.det(x) * (0.3 - 0.7j)).real, x, create_graph=True)
    theirs = {"rank1-2x2": [[2.6 + 2.2j, -1.3 - 1.1j], [-1.3 - 1.1j, 0.65 + 0.55j]],
              "rank2-3x3": [[-2.775 - 0.675j, 5.55 + 1.35j, -2.775 - 0.675j],
                            [5.55 + 1.35j, -11.1 - 2.7j, 5.55 + 1.35j],
                            [-2.775 - 0.675j, 5.55 + 1.35j, -2.775 - 0.675j]]}[case]  # (PyTorch 2.13's)
    np.testing.assert_allclose(grad.detach().numpy(), theirs, atol=1e-10)


# -- argument checks found by probing (session 33) ------------------------------------------------------------------


def _functional(T):
    return importlib.import_module("nn.functional") if T is autograd else T.nn.functional


@pytest.mark.parametrize("target", [0, 0.3, [0], [0.3]], ids=["int", "float", "int-1d", "float-1d"])
def test_losses_of_0d_scores_raise_pytorchs_error_class(T, target):
    F = _functional(T)
    scores = T.tensor(0.5)
    with pytest.raises(ValueError, match=r"^Expected 1 or more dimensions \(got 0\)"):
        F.nll_loss(scores, T.tensor(target))
    # (PyTorch: RuntimeError for an integer 0-d target, IndexError for the others; ours is both)
    error = RuntimeError if target == 0 else IndexError
    with pytest.raises(error):
        F.cross_entropy(scores, T.tensor(target))


def test_cross_entropy_of_0d_scores_names_the_missing_class_dim():
    F = _functional(autograd)
    with pytest.raises(IndexError, match=r"cross_entropy: the input is 0-d, with no class dim"):
        F.cross_entropy(autograd.tensor(0.5), autograd.tensor(0))


def test_trunc_normal_bounds(T):
    nn, _ = _nn_optim(T)
    with pytest.raises(RuntimeError, match=r"uniform_ expects to return a \[from, to\) range, but found "
                                           r"from=2(.0)? > to=-2(.0)?"):
        nn.init.trunc_normal_(T.empty(3), a=2.0, b=-2.0)
    assert nn.init.trunc_normal_(T.empty(3), a=1.0, b=1.0).tolist() == [1.0, 1.0, 1.0]  # (one point: a)


@pytest.mark.parametrize("nonlinearity", ["linear", "conv2d", "conv_transpose3d", "sigmoid"])
def test_calculate_gain_of_linear_maps_is_the_int_one(T, nonlinearity):
    nn, _ = _nn_optim(T)
    gain = nn.init.calculate_gain(nonlinearity)
    assert gain == 1 and type(gain) is int


@pytest.mark.parametrize("name", ["Adam", "AdamW", "Adamax", "NAdam", "RAdam"])
def test_betas_of_one_coefficient_raise_index_error_at_construction(T, name):
    nn, optim = _nn_optim(T)
    with pytest.raises(IndexError, match="tuple index out of range"):
        getattr(optim, name)([nn.Parameter(T.ones(2))], betas=(0.9,))


@pytest.mark.parametrize("input_shape, bias_shape, dim, target", [((2, 3), (3,), 1, [2, 4]), ((3,), (2,), None, None),
                                                                  ((5, 2, 3), (2, 3), 2, [5, 2, 4])])
def test_linear_with_a_bias_that_does_not_fit_the_output(T, input_shape, bias_shape, dim, target):
    F = _functional(T)
    x, weight, bias = T.ones(*input_shape), T.ones(4, 3), T.ones(*bias_shape)
    with pytest.raises(RuntimeError) as raised:
        F.linear(x, weight, bias)
    if T is autograd:
        message = str(raised.value)
        assert f"The expanded size of the tensor (4) must match the existing size ({bias_shape[-1]})" in message
        assert f"linear: a bias of shape {bias_shape} for an output of shape" in message
        assert "it needs one entry per output feature, shape (4,)" in message
        if target is not None:
            assert f"at non-singleton dimension {dim}.  Target sizes: {target}" in message
    assert F.linear(T.ones(2, 3), weight, T.ones(4)).tolist() == [[4.0] * 4] * 2


def test_softplus_with_beta_zero_is_inf(T):
    """ln(1 + e^(0·x)) / 0 = ln 2 / 0: PyTorch's inf everywhere, not a ZeroDivisionError."""
    F = _functional(T)
    assert F.softplus(T.tensor([-1.0, 0.0, 3.0]), beta=0).tolist() == [float("inf")] * 3
    np.testing.assert_allclose(F.softplus(T.tensor([-1.0, 0.0, 3.0]), beta=2).numpy(),
                               np.log1p(np.exp(2 * np.array([-1.0, 0.0, 3.0]))) / 2, rtol=1e-6)


def _functional_step(T, name):
    return getattr(importlib.import_module(f"{'optim' if T is autograd else 'torch.optim'}.{name}"), name)


@pytest.mark.parametrize("foreach, fused, xla", [(False, None, True), (True, None, False), (False, True, None)])
def test_functional_adam_checks_capturable_as_the_optimizer(T, foreach, fused, xla):
    adam = _functional_step(T, "adam")
    p = T.ones(2)

    def step():
        adam([p], [T.ones(2)], [T.zeros(2)], [T.zeros(2)], [], [T.tensor(0.0)], capturable=True, foreach=foreach,
             fused=fused, amsgrad=False, beta1=0.9, beta2=0.99, lr=0.1, weight_decay=0, eps=1e-8, maximize=False)

    if xla is None:  # (fused: its path steps, capturable or not)
        step()
        np.testing.assert_allclose(p.numpy(), 0.9, rtol=1e-6)
        return
    devices = str(DEVICES + ["xla"] * xla).replace("[", r"\[").replace("]", r"\]")
    with pytest.raises(AssertionError, match=f"If capturable=True, params and state_steps must be on supported "
                                             f"devices: {devices}"):
        step()
    assert p.tolist() == [1.0, 1.0]


def test_functional_rmsprop_checks_capturable(T):
    rmsprop = _functional_step(T, "rmsprop")
    p = T.ones(2)
    with pytest.raises(AssertionError, match="If capturable=True, params and state_steps must be on supported"):
        rmsprop([p], [T.ones(2)], [T.zeros(2)], [], [], [T.tensor(0.0)], capturable=True, lr=0.1, alpha=0.9,
                eps=1e-8, weight_decay=0, momentum=0, centered=False)
    rmsprop([p], [T.ones(2)], [T.zeros(2)], [], [], [T.tensor(0.0)], lr=0.1, alpha=0.9, eps=1e-8, weight_decay=0,
            momentum=0, centered=False)
    np.testing.assert_allclose(p.numpy(), 1 - 0.1 / (np.sqrt(0.1) + 1e-8), rtol=1e-6)


@pytest.mark.parametrize("part", ["logabsdet", "logdet", "sign"])
def test_log_determinant_gradients_at_a_singular_complex_matrix_are_nan(T, part):
    """ln|det A| and its sign at det A = 0: A⁻ᴴ does not exist, so PyTorch's gradient is NaN; here too (it raised)."""
    x = T.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=T.complex128, requires_grad=True)
    value = {"logabsdet": lambda: T.linalg.slogdet(x)[1], "logdet": lambda: T.logdet(x).real,
             "sign": lambda: (T.linalg.slogdet(x)[0] * (0.3 - 0.7j)).real}[part]()
    value.backward()
    assert x.grad.dtype == T.complex128 and np.isnan(x.grad.numpy()).all()


def test_log_determinant_gradient_of_a_batch_with_a_singular_complex_matrix():
    regular = np.array([[2.0, 1j], [0.5, 3.0]])
    x = autograd.tensor(np.stack([np.array([[1.0, 2.0], [2.0, 4.0]]), regular]), dtype=autograd.complex128,
                        requires_grad=True)
    autograd.linalg.slogdet(x)[1].sum().backward()
    assert np.isnan(x.grad.numpy()[0]).all()
    np.testing.assert_allclose(x.grad.numpy()[1], np.linalg.inv(regular).conj().T, rtol=1e-12)


def test_log_determinant_gradient_at_a_singular_real_matrix_is_infinite(T):
    x = T.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=T.float64, requires_grad=True)
    T.linalg.slogdet(x)[1].backward()
    assert np.isinf(x.grad.numpy()).all()  # (cof A / det A; the signs follow the signed zero of det A)
