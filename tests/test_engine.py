"""The shared backward driver: order, accumulation, freeing, modes, hooks, anomalies."""

import numpy as np
import pytest

import autograd
from autograd import Tensor, Value
from autograd.engine import topological_order


def test_topological_order_puts_every_node_before_its_parents():
    a, b = Value(1.0), Value(2.0)
    c = a * b
    d = c + a
    e = d * c
    order = topological_order([e])
    position = {id(node): i for i, node in enumerate(order)}
    for node in order:
        for parent in node.parents:
            assert position[id(node)] < position[id(parent)]
    assert len(order) == 5  # a, b, c, d, e: each node once although a and c are reused


def test_reused_node_accumulates_gradient():
    x = Tensor([2.0, 3.0], requires_grad=True)
    y = x * x + x  # x used three times
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array([2.0, 3.0]) + 1)


def test_a_node_used_many_times_sums_its_shares_into_one_buffer():
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = Tensor(np.array([0.5, -1.0]), requires_grad=True)
    for step in range(1, 6):  # w gets five shares: the first sum is a new buffer, the rest go in in place
        h = (h * w + 0.1 * step).tanh()
    (h * h).sum().backward()
    hs = [np.array([0.5, -1.0])]
    for step in range(1, 6):
        hs.append(np.tanh(hs[-1] * np.array([1.0, 2.0]) + 0.1 * step))
    dh, dw = 2 * hs[-1], np.zeros(2)
    for step in range(5, 0, -1):
        da = dh * (1 - hs[step] ** 2)
        dw += da * hs[step - 1]
        dh = da * np.array([1.0, 2.0])
    np.testing.assert_allclose(w.grad.numpy(), dw, rtol=1e-12)


@pytest.mark.parametrize("direct_first", [True, False])
def test_a_summed_gradient_passed_on_unchanged_is_not_added_into(direct_first):
    """A node's summed gradient that its op hands on as it is (x + 1, a + b) reaches a parent
    that gets other shares too: that sum must be a new buffer, or the node's retained .grad,
    the other parent's share and hooks' arguments would all change."""
    x = Tensor([1.0, 2.0], requires_grad=True)
    n = x + 1.0  # Shift: dL/dx = dL/dn, the same tensor
    n.retain_grad()
    seen = []
    n.register_hook(seen.append)  # keeps the very tensor it was given
    other = Tensor([0.0, 0.0], requires_grad=True)
    m = n + other  # Add: the same gradient to n and to other
    terms = [(n * 2.0).sum(), (n * 3.0).sum(), (m * 7.0).sum()]
    terms.insert(0 if direct_first else 3, (x * 5.0).sum())
    loss = terms[0]
    for term in terms[1:]:  # (the order of the terms decides which share reaches x first)
        loss = loss + term
    loss.backward()
    np.testing.assert_allclose(n.grad.numpy(), [12.0, 12.0])
    np.testing.assert_allclose(seen[0].numpy(), [12.0, 12.0])
    np.testing.assert_allclose(other.grad.numpy(), [7.0, 7.0])
    np.testing.assert_allclose(x.grad.numpy(), [17.0, 17.0])


def test_leaf_gradients_accumulate_across_backward_calls():
    x = Tensor([1.0, -2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 6.0])


def test_same_gradient_sent_to_two_leaves_is_not_shared():
    a = Tensor([1.0, 2.0], requires_grad=True)
    b = Tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad.mul_(10)
    np.testing.assert_allclose(b.grad.numpy(), [1.0, 1.0])


def test_deep_tensor_chain_backpropagates_without_recursion():
    x = Tensor(np.ones(3), requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.ones(3))


def test_deep_value_chain_backpropagates_without_recursion():
    x = Value(0.5)
    y = x
    for _ in range(100_000):
        y = y + 0.0
    y.backward()
    assert x.grad == 1.0


def test_second_backward_through_freed_graph_names_retain_graph():
    x = Tensor([1.0, 2.0], requires_grad=True)
    loss = (x.exp() * 2).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        loss.backward()


# A second backward() without retain_graph: PyTorch raises only where the pass reaches a node
# that saved a tensor (an input, the output, an index, a mask, a scalar operand); through nodes
# that saved none (add, sum, reshape, a slice, cat) it runs again and the gradients add up.
SECOND_BACKWARD = [  # (loss of x, whether PyTorch runs a second backward through it)
    ("(x + 1).sum()", True), ("x.sum()", True), ("x.mean()", True), ("x[1:].sum()", True),
    ("(x - x.flip(0)).reshape(2, 2).sum()", True), ("lib.cat([x, x]).sum()", True), ("x.cumsum(0).sum()", True),
    ("x.double().sum()", True), ("x.expand(2, 4).sum()", True), ("(-x).clone().sum()", True),
    ("(x * 2).sum()", False), ("(x / 2).sum()", False), ("(x * x).sum()", False), ("x.exp().sum()", False),
    ("(x * x + 1).sum()", False), ("lib.where(x > 2, x, 0.0).sum()", False), ("x.masked_fill(x > 2, 0.0).sum()", False),
    ("x[lib.tensor([0, 1])].sum()", False), ("x.index_select(0, lib.tensor([0, 1])).sum()", False),
    ("lib.zeros(4).scatter_add(0, lib.tensor([0, 1, 1, 2]), x).sum()", False),
]


def _second_backward(lib, program):
    """x.grad after two backward() calls of one graph, or the error the second one raised."""
    x = lib.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    loss = eval(program, {"lib": lib, "x": x})
    loss.backward()
    once = x.grad.clone()
    try:
        loss.backward()
    except RuntimeError as error:
        return once, error
    return once, x.grad


@pytest.mark.parametrize(("program", "runs_again"), SECOND_BACKWARD)
def test_second_backward_runs_again_only_through_nodes_that_saved_nothing(program, runs_again):
    once, twice = _second_backward(autograd, program)
    if runs_again:
        np.testing.assert_array_equal(twice.numpy(), 2 * once.numpy())
    else:
        assert isinstance(twice, RuntimeError) and "retain_graph=True" in str(twice)


@pytest.mark.parametrize(("program", "runs_again"), SECOND_BACKWARD)
def test_second_backward_runs_again_where_pytorchs_does(program, runs_again):
    torch = pytest.importorskip("torch")
    assert not isinstance(_second_backward(torch, program)[1], RuntimeError) == runs_again


def test_a_node_that_saved_nothing_keeps_no_data_alive():
    import gc
    import weakref

    w = autograd.ones(3, requires_grad=True)
    batch = autograd.randn(3)
    loss = (batch + w).sum()  # Add saves no values: it remembers the batch's shape, not the batch
    loss.backward()
    kept = weakref.ref(batch)
    del batch
    gc.collect()
    assert kept() is None and loss.grad_fn.parents  # the graph is still there for a second backward
    loss.backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 2.0, 2.0])


def test_retain_graph_allows_a_second_backward():
    x = Tensor([1.0, 2.0], requires_grad=True)
    loss = (x.exp() * 2).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * np.exp([1.0, 2.0]), rtol=1e-6)


def test_backward_frees_saved_arrays():
    x = Tensor(np.ones(4), requires_grad=True)
    y = x.exp()
    node = y.grad_fn
    y.sum().backward()
    assert node.inputs is None and node.output_data is None


def test_non_scalar_backward_without_gradient_names_the_shape():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"non-scalar output of shape \(2, 3\)"):
        (x * 2).backward()


def test_backward_with_gradient_of_wrong_shape():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"Mismatch in shape: grad_output\[0\] has a shape of Size\(\[3\]\) "
                                           r"and output\[0\] has a shape of Size\(\[2, 3\]\)"):
        (x * 2).backward(Tensor(np.ones(3)))


def test_backward_with_explicit_gradient_is_a_vector_jacobian_product():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    v = Tensor([1.0, 0.5, -1.0])
    (x * x).backward(v)
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() * v.numpy())
    np.testing.assert_allclose(v.numpy(), [1.0, 0.5, -1.0])  # the user's gradient is untouched


def test_backward_of_tensor_that_does_not_require_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).sum().backward()


def test_inplace_change_of_saved_tensor_is_detected_at_backward():
    w = Tensor([1.0, 2.0], requires_grad=True)
    x = Tensor([3.0, 4.0])
    y = (w * x).sum()
    x.add_(1.0)
    with pytest.raises(RuntimeError, match=r"shape \(2,\) that Mul saved .* changed in place"):
        y.backward()


def test_inplace_change_through_a_view_is_detected():
    w = Tensor([1.0, 2.0], requires_grad=True)
    x = Tensor([[3.0, 4.0], [5.0, 6.0]])
    row = x[0]
    y = (w * row).sum()
    x.mul_(2.0)
    with pytest.raises(RuntimeError, match="changed in place"):
        y.backward()


def test_inplace_change_of_a_parameter_under_no_grad_is_detected():
    w = Tensor([1.0, 2.0], requires_grad=True)
    y = w.sin().sum()  # sin saves w (exp would save only its output, and backward would work)
    with autograd.no_grad():
        w -= 0.1
    with pytest.raises(RuntimeError, match="changed in place"):
        y.backward()


@pytest.mark.parametrize("product", ["mul", "matmul", "linear", "einsum"])
def test_a_factor_changed_in_place_is_refused_only_where_a_gradient_reads_it(T, product):
    """PyTorch saves a product's factor only for the other factor's gradient: with x needing none, w may be
    changed in place before backward (dL/dw reads x); changing x, or w where x needs a gradient, refuses."""
    import nn.functional as F_ours

    def f(x, w):
        if product == "mul":
            return x * w
        if product == "matmul":
            return x @ w.T
        if product == "einsum":
            return T.einsum("ij,kj->ik", x, w)
        linear = F_ours.linear if T is autograd else __import__("torch").nn.functional.linear
        return linear(x, w, T.zeros(2))

    x_values, w_values = [[1.0, 2.0], [3.0, 4.0]], [[0.5, -1.0], [2.0, 0.25]]
    x, w = T.tensor(x_values), T.tensor(w_values, requires_grad=True)
    y = f(x, w)
    with T.no_grad():
        w.mul_(2.0)  # not read by any gradient to come
    y.sum().backward()
    expected = np.array(x_values) if product == "mul" else np.tile(np.sum(x_values, 0), (2, 1))
    np.testing.assert_allclose(w.grad.numpy(), expected)
    x, w = T.tensor(x_values), T.tensor(w_values, requires_grad=True)
    y = f(x, w)
    x.add_(1.0)  # read by dL/dw
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    x, w = T.tensor(x_values, requires_grad=True), T.tensor(w_values, requires_grad=True)
    y = f(x, w)
    with T.no_grad():
        w.mul_(2.0)  # read by dL/dx now
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    x = T.tensor(x_values, requires_grad=True)
    squared = f(x, x)
    with T.no_grad():
        x.mul_(3.0)  # x and x: each factor read by the other's gradient
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        squared.sum().backward()


def test_a_dividend_changed_in_place_is_refused_only_where_the_divisor_needs_a_gradient(T):
    """z = x / y: x is read only by dL/dy, y by both gradients (PyTorch's DivBackward0 saves so)."""
    x, y = T.tensor([1.0, 2.0], requires_grad=True), T.tensor([4.0, 8.0])
    z = x / y
    with T.no_grad():
        x.mul_(3.0)
    z.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.25, 0.125])
    x, y = T.tensor([1.0, 2.0]), T.tensor([4.0, 8.0], requires_grad=True)
    z = x / y
    with T.no_grad():
        x.mul_(3.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()


def test_inplace_on_leaf_requiring_grad_outside_no_grad_is_refused():
    w = Tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"in-place operation \(a tensor of shape \(1,\)\)"):
        w += 1.0


def test_no_grad_records_nothing_and_restores_mode():
    x = Tensor([1.0], requires_grad=True)
    with autograd.no_grad():
        y = x * 2
        assert not autograd.is_grad_enabled()
        with autograd.enable_grad():
            z = x * 2
    assert autograd.is_grad_enabled()
    assert y.grad_fn is None and not y.requires_grad
    assert z.grad_fn is not None


def test_no_grad_as_decorator():
    @autograd.no_grad()
    def evaluate(x):
        return x * 2

    assert evaluate(Tensor([1.0], requires_grad=True)).grad_fn is None
    assert autograd.is_grad_enabled()


def test_set_grad_enabled_as_call_and_context():
    with autograd.set_grad_enabled(False):
        assert not autograd.is_grad_enabled()
    assert autograd.is_grad_enabled()


def test_hooks_see_and_replace_gradients():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x * 3
    seen = []
    y.register_hook(lambda g: seen.append(g.numpy().copy()))
    handle = x.register_hook(lambda g: g * 10)
    y.sum().backward()
    np.testing.assert_allclose(seen[0], [1.0, 1.0])
    np.testing.assert_allclose(x.grad.numpy(), [30.0, 30.0])
    handle.remove()
    x.grad = None
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_retain_grad_keeps_intermediate_gradient():
    x = Tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    h.retain_grad()
    other = x * 5
    (h * h + other).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * h.numpy())
    with pytest.warns(UserWarning, match="not a leaf Tensor"):  # as PyTorch's: it stays None
        assert other.grad is None


def test_grad_returns_gradients_without_touching_dot_grad():
    x = Tensor([1.0, 2.0], requires_grad=True)
    (g,) = autograd.grad((x**3).sum(), x)
    np.testing.assert_allclose(g.numpy(), 3 * x.numpy() ** 2)
    assert x.grad is None


def test_grad_of_non_leaf_input():
    x = Tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    (g,) = autograd.grad((h * h).sum(), h)
    np.testing.assert_allclose(g.numpy(), 2 * h.numpy())


def test_grad_unused_input_needs_allow_unused():
    x = Tensor([1.0], requires_grad=True)
    z = Tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="allow_unused=True"):
        autograd.grad((x * 2).sum(), [x, z])
    gx, gz = autograd.grad((x * 2).sum(), [x, z], allow_unused=True)
    assert gz is None and gx.item() == 2.0


def test_hessian_vector_product_matches_finite_differences():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 3))
    x = Tensor(rng.standard_normal(3), requires_grad=True)
    v = rng.standard_normal(3)

    def f(x):
        return ((Tensor(a) @ x).tanh() ** 2).sum()

    (g,) = autograd.grad(f(x), x, create_graph=True)
    (hv,) = autograd.grad((g * Tensor(v)).sum(), x)
    eps = 1e-5

    def gradient_at(point):
        p = Tensor(point, requires_grad=True)
        return autograd.grad(f(p), p)[0].numpy()

    numeric = (gradient_at(x.numpy() + eps * v) - gradient_at(x.numpy() - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hv.numpy(), numeric, rtol=1e-6, atol=1e-8)


def test_second_derivative_of_tanh():
    x = Tensor([0.3, -1.2], dtype=np.float64, requires_grad=True)
    (dy,) = autograd.grad(x.tanh().sum(), x, create_graph=True)
    (d2y,) = autograd.grad(dy.sum(), x)
    t = np.tanh(x.numpy())
    np.testing.assert_allclose(dy.detach().numpy(), 1 - t**2)
    np.testing.assert_allclose(d2y.numpy(), -2 * t * (1 - t**2))


def test_products_in_backward_are_recorded_only_under_create_graph():
    """Mul's and Scale's derivatives are products again: nodes under create_graph, plain arrays otherwise.
    Both passes give the same first derivative, and only the recorded one has a second."""
    x = Tensor([0.5, -2.0, 3.0], dtype=np.float64, requires_grad=True)
    y = Tensor([1.5, 0.25, -1.0], dtype=np.float64, requires_grad=True)

    M = Tensor([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.0]], dtype=np.float64)

    def f():  # 3 x² y, and products, tanh and relu whose derivatives are ops again (MatMul, TanhGrad, ReluGrad)
        return (x * y * 3.0 * x).sum() + (((x * y).reshape(1, 3) @ M).tanh().relu() * 0.0).sum()

    plain_x, plain_y = autograd.grad(f(), (x, y))
    assert plain_x.grad_fn is None and not plain_x.requires_grad and plain_x.dtype == autograd.float64
    recorded_x, recorded_y = autograd.grad(f(), (x, y), create_graph=True)
    assert recorded_x.requires_grad and recorded_x.grad_fn is not None
    np.testing.assert_array_equal(plain_x.numpy(), recorded_x.detach().numpy())
    np.testing.assert_array_equal(plain_y.numpy(), recorded_y.detach().numpy())
    u = Tensor([[0.3, -0.2]], dtype=np.float64, requires_grad=True)
    for create_graph in (False, True):
        (gu,) = autograd.grad((u @ M.T).tanh().relu().sum(), u, create_graph=create_graph)
        t = np.tanh(u.numpy() @ M.numpy().T)
        np.testing.assert_allclose(gu.detach().numpy(), ((t > 0) * (1 - t**2)) @ M.numpy())
        assert (gu.grad_fn is not None) == create_graph
    np.testing.assert_allclose(plain_x.numpy(), 6 * x.numpy() * y.numpy())
    np.testing.assert_allclose(plain_y.numpy(), 3 * x.numpy() ** 2)
    d2_xx, d2_xy = autograd.grad(recorded_x.sum(), (x, y))  # d/dx and d/dy of Σ 6xy
    np.testing.assert_allclose(d2_xx.numpy(), 6 * y.numpy())
    np.testing.assert_allclose(d2_xy.numpy(), 6 * x.numpy())
    broadcast = Tensor([[1.0], [2.0]], requires_grad=True)  # a broadcast factor: its share summed back
    (broadcast * Tensor([1.0, 2.0, 3.0]) * 0.5).sum().backward()
    np.testing.assert_array_equal(broadcast.grad.numpy(), [[3.0], [3.0]])
    assert broadcast.grad.dtype == autograd.float32


def test_gradient_penalty_trains_through_create_graph():
    w = Tensor([[0.5, -0.3], [0.2, 0.8]], dtype=np.float64, requires_grad=True)
    x = Tensor([[1.0, 2.0]], dtype=np.float64, requires_grad=True)
    out = (x @ w).tanh().sum()
    (gx,) = autograd.grad(out, x, create_graph=True)
    penalty = (gx * gx).sum()
    penalty.backward()
    assert w.grad is not None and np.all(np.isfinite(w.grad.numpy()))

    def penalty_of(w_values):
        wt = Tensor(w_values, requires_grad=True)
        xt = Tensor(x.numpy(), requires_grad=True)
        (g,) = autograd.grad((xt @ wt).tanh().sum(), xt)
        return float((g.numpy() ** 2).sum())

    eps = 1e-6
    numeric = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            step = np.zeros((2, 2))
            step[i, j] = eps
            numeric[i, j] = (penalty_of(w.numpy() + step) - penalty_of(w.numpy() - step)) / (2 * eps)
    np.testing.assert_allclose(w.grad.numpy(), numeric, rtol=1e-5, atol=1e-8)


def test_anomaly_mode_names_the_node_that_returned_nan_and_the_user_line():
    x = Tensor([0.0, 1.0], requires_grad=True)
    with autograd.detect_anomaly():
        y = x.log()  # -inf in the forward pass: allowed, as in PyTorch (a mask of -inf is common)
        with pytest.raises(RuntimeError, match=r"Function 'LogBackward0' returned nan values in its 0th output"
                                               r".*test_engine.py"):
            (y * 0).sum().backward()  # 0 / 0 in Log's backward


def test_anomaly_mode_lets_an_infinite_gradient_through_and_refuses_nan():
    x = Tensor([0.0, 1.0], requires_grad=True)
    with autograd.detect_anomaly():
        x.sqrt().sum().backward()  # an infinite derivative at 0: the right answer, as PyTorch keeps it
        np.testing.assert_array_equal(x.grad.numpy(), [np.inf, 0.5])
        negative = Tensor([-1.0], requires_grad=True)
        with pytest.raises(RuntimeError, match="Function 'SqrtBackward0' returned nan"):
            negative.sqrt().sum().backward()


def test_anomaly_mode_matches_pytorchs_outcomes():
    torch = pytest.importorskip("torch")

    def outcome(lib, values, program):
        x = lib.tensor(values, requires_grad=True)
        with lib.autograd.detect_anomaly():
            try:
                program(x).sum().backward()
            except RuntimeError as error:
                return str(error).split(" returned")[0]
        return x.grad.tolist()

    import warnings

    programs = [([0.0, 1.0], lambda x: x.log() * 0), ([0.0, 4.0], lambda x: x.sqrt()),
                ([-1.0, 4.0], lambda x: x.sqrt()),
                ([1.0, 2.0], lambda x: x.masked_fill(x > 1, float("-inf")).softmax(0))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (PyTorch warns that anomaly mode is on, and prints the forward trace)
        for values, program in programs:
            assert outcome(autograd, values, program) == outcome(torch, values, program)


def test_anomaly_mode_off_lets_nan_through():
    x = Tensor([-1.0], requires_grad=True)
    with np.errstate(invalid="ignore"):
        assert np.isnan(x.log().item())


def test_reading_grad_warns_only_for_a_computed_tensor_that_does_not_retain_it():
    import warnings

    x = Tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    kept = x * 3
    kept.retain_grad()
    (h + kept).sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leaf and a retained tensor: no warning
        np.testing.assert_allclose(x.grad.numpy(), [5.0, 5.0])
        np.testing.assert_allclose(kept.grad.numpy(), [1.0, 1.0])
    with pytest.warns(UserWarning, match="retain_grad"):
        assert h.grad is None


def test_backward_of_a_tensor_outside_the_graph_says_pytorchs_words(T):
    """PyTorch's message starts "element 0 of tensors does not require grad and does not have a grad_fn" (programs
    and tests match it); chainrule's goes on to say why it may be so."""
    with pytest.raises(RuntimeError, match="element 0 of tensors does not require grad and does not have a grad_fn"):
        T.ones(2).sum().backward()
    with pytest.raises(RuntimeError, match="element 0 of tensors does not require grad"):
        T.autograd.grad(T.ones(2).sum(), [T.ones(2, requires_grad=True)])
