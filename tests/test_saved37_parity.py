"""What a node counts as saved, against what PyTorch's node saves, seen through an input written in place between
the forward and the backward: where PyTorch's node saved it the backward refuses ("modified by an inplace
operation"), where it did not the backward runs, and ours must do the same. Where ours runs after a write, its
gradients must be those of the graph as it was before the write (the node kept what it reads, or reads nothing).

The cases: a convolution's bias and batch, group and instance norm's β, which PyTorch's nodes do not keep (layer
norm's does); copysign's y, ldexp's x (its e kept for dL/dx), ndtri's x, linalg.solve's and solve_triangular's B
(not kept); lerp's start and end (kept only for dL/dweight); div with rounding (y kept, x for dL/dy), fmin (both),
addcdiv (tensor2, and tensor1 for dL/dtensor2). Each is checked against PyTorch's rule written down here (without
torch), and against torch itself where it is installed. Then what the session-37 sweep found besides:
unsafe_chunk's pieces are no views (writing the input no longer raises TypeError), diff with n = 0 returns a new
tensor, lu_solve keeps its pivots."""

import itertools

import numpy as np
import pytest

import autograd
import nn  # noqa: F401  (autograd.nn)

MESSAGE = "one of the variables needed for gradient computation has been modified by an inplace operation"


def _arrays(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for shape in shapes]


def _well_conditioned(n, seed=1):
    return np.random.default_rng(seed).standard_normal((n, n)) * 0.3 + 3 * np.eye(n)


CASES = {  # name: (call(module, F, *tensors), arrays, PyTorch's saved positions given the positions requiring grad)
    "conv2d": (lambda M, F, x, w, b: F.conv2d(x, w, b, padding=1), _arrays((2, 3, 5, 5), (4, 3, 3, 3), (4,)),
               lambda wanted: {0, 1}),
    "conv2d_depthwise": (lambda M, F, x, w, b: F.conv2d(x, w, b, groups=3), _arrays((2, 3, 5, 5), (3, 1, 3, 3), (3,)),
                         lambda wanted: {0, 1}),
    "conv1d": (lambda M, F, x, w, b: F.conv1d(x, w, b), _arrays((2, 3, 7), (4, 3, 3), (4,)), lambda wanted: {0, 1}),
    "conv_transpose2d": (lambda M, F, x, w, b: F.conv_transpose2d(x, w, b, stride=2),
                         _arrays((2, 3, 4, 4), (3, 2, 3, 3), (2,)), lambda wanted: {0, 1}),
    "batch_norm": (lambda M, F, x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                   _arrays((4, 3, 5), (3,), (3,)), lambda wanted: {0, 1}),
    "batch_norm_eval": (lambda M, F, x, w, b: F.batch_norm(x, M.zeros(3, dtype=M.float64), M.ones(3, dtype=M.float64),
                                                           w, b), _arrays((4, 3, 5), (3,), (3,)),
                        lambda wanted: {0, 1}),
    "group_norm": (lambda M, F, x, w, b: F.group_norm(x, 2, w, b), _arrays((2, 4, 5), (4,), (4,)),
                   lambda wanted: {0, 1}),
    "layer_norm": (lambda M, F, x, w, b: F.layer_norm(x, (5,), w, b), _arrays((2, 3, 5), (5,), (5,)),
                   lambda wanted: {0, 1, 2}),
    "instance_norm": (lambda M, F, x, b: F.instance_norm(x, None, None, None, b), _arrays((2, 3, 5), (3,)),
                      lambda wanted: {0}),
    "copysign": (lambda M, F, x, y: M.copysign(x, y), _arrays((5,), (5,)),
                 lambda wanted: {0} if 0 in wanted else set()),
    "lerp": (lambda M, F, start, end, weight: M.lerp(start, end, weight), _arrays((5,), (5,), (5,)),
             lambda wanted: {2} | ({0, 1} if 2 in wanted else set())),
    "lerp_number": (lambda M, F, start, end: M.lerp(start, end, 0.3), _arrays((5,), (5,)), lambda wanted: set()),
    "ldexp": (lambda M, F, x: M.ldexp(x, M.tensor([1, 2, 3, 0, 5])), _arrays((5,)), lambda wanted: set()),
    "ldexp_float": (lambda M, F, x, e: M.ldexp(x, e), _arrays((5,), (5,)),
                    lambda wanted: {1} if 0 in wanted else set()),
    "ndtri": (lambda M, F, x: M.special.ndtri(x), [np.array([0.1, 0.3, 0.5, 0.7, 0.95])], lambda wanted: set()),
    "div_trunc": (lambda M, F, x, y: M.div(x, y, rounding_mode="trunc"), _arrays((5,), (5,)),
                  lambda wanted: {1} | ({0} if 1 in wanted else set())),
    "div_floor": (lambda M, F, x, y: M.div(x, y, rounding_mode="floor"), _arrays((5,), (5,)),
                  lambda wanted: {1} | ({0} if 1 in wanted else set())),
    "fmin": (lambda M, F, x, y: M.fmin(x, y), _arrays((5,), (5,)), lambda wanted: {0, 1}),
    "addcdiv": (lambda M, F, x, t1, t2: M.addcdiv(x, t1, t2, value=0.5), _arrays((5,), (5,), (5,)),
                lambda wanted: {2} | ({1} if 2 in wanted else set())),
    "solve": (lambda M, F, A, B: M.linalg.solve(A, B), [_well_conditioned(3), *_arrays((3, 2))],
              lambda wanted: {0}),
    "solve_triangular": (lambda M, F, A, B: M.linalg.solve_triangular(A, B, upper=True),
                         [_well_conditioned(3), *_arrays((3, 2))], lambda wanted: {0}),
}


def _run(M, name, wanted, written):
    """("raised", error) or ("grads", arrays, one per input requiring grad) for CASES[name] on module M, with
    input ``written`` (None: none) changed in place (+0.5) after the forward."""
    call, arrays, _ = CASES[name]
    leaves = [M.tensor(a.copy(), requires_grad=k in wanted) for k, a in enumerate(arrays)]
    passed = [leaf * 1 for leaf in leaves]  # (non-leaves: writable in place)
    y = call(M, M.nn.functional, *passed)
    weights = M.tensor(np.random.default_rng(9).standard_normal(tuple(y.shape)))
    if written is not None:
        passed[written].add_(0.5)
    try:
        grads = M.autograd.grad((y * weights).sum(), [leaves[k] for k in sorted(wanted)])
    except RuntimeError as error:
        return "raised", error
    return "grads", [g.detach().numpy() for g in grads]


def _settings():
    for name, (_, arrays, _) in CASES.items():
        positions = range(len(arrays))
        for count in range(1, len(arrays) + 1):
            for wanted in itertools.combinations(positions, count):
                yield name, frozenset(wanted)


SETTINGS = list(_settings())


@pytest.mark.parametrize("name, wanted", SETTINGS, ids=[f"{n}-{sorted(w)}" for n, w in SETTINGS])
def test_refused_where_pytorch_saves_and_otherwise_the_unwritten_gradients(name, wanted):
    saved = CASES[name][2](wanted)
    unwritten = _run(autograd, name, wanted, None)
    assert unwritten[0] == "grads"
    for written in range(len(CASES[name][1])):
        result = _run(autograd, name, wanted, written)
        if written in saved:
            assert result[0] == "raised", (name, sorted(wanted), written)
            assert MESSAGE in str(result[1]) and "is at version 1; expected version 0 instead" in str(result[1])
        else:
            assert result[0] == "grads", (name, sorted(wanted), written, result)
            for got, expected in zip(result[1], unwritten[1]):
                np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name, wanted", SETTINGS, ids=[f"{n}-{sorted(w)}" for n, w in SETTINGS])
def test_as_pytorch_refuses_or_runs_with_its_gradients(name, wanted):
    torch = pytest.importorskip("torch")
    for written in [None, *range(len(CASES[name][1]))]:
        ours, theirs = _run(autograd, name, wanted, written), _run(torch, name, wanted, written)
        assert ours[0] == theirs[0], (name, sorted(wanted), written, ours, theirs)
        if ours[0] == "grads":
            for got, expected in zip(ours[1], theirs[1]):
                np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-10)


def test_instance_norm_weight_is_still_refused_where_pytorch_reads_a_copy():
    """Ours reads γ for dL/dx; PyTorch's instance norm repeats γ over the batch first and saves the copy: a γ
    written after the forward is refused here (never read silently), where PyTorch runs."""
    x, w = autograd.randn(2, 3, 5, requires_grad=True), autograd.randn(3, requires_grad=True)
    weight = w * 1
    y = autograd.nn.functional.instance_norm(x * 1, weight=weight)
    weight.add_(0.5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_a_bias_updated_in_place_between_forward_and_backward():
    """The program of the brief: a convolution and a batch norm, their biases moved by an optimiser-like step
    under no_grad before the backward: PyTorch runs it, and so does ours, with the unwritten graph's gradients."""
    rng = np.random.default_rng(3)
    conv, norm = autograd.nn.Conv2d(2, 3, 3).double(), autograd.nn.BatchNorm2d(3).double()
    x = autograd.tensor(rng.standard_normal((2, 2, 6, 6)), requires_grad=True)
    loss = norm(conv(x)).pow(2).sum()
    expected = autograd.autograd.grad(loss, [x, conv.weight, norm.weight], retain_graph=True)
    with autograd.no_grad():
        conv.bias.add_(1.0)
        norm.bias.sub_(0.25)
    got = autograd.autograd.grad(loss, [x, conv.weight, norm.weight])
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g.numpy(), e.numpy())


def test_writing_the_input_of_unsafe_chunk():
    """unsafe_chunk's pieces are no views of the input (PyTorch's unsafe form): writing the input after it used to
    raise TypeError (the pieces were still listed as views to re-derive); now the pieces keep their graph."""
    x = autograd.tensor(np.arange(12.0).reshape(4, 3), requires_grad=True)
    source = x * 1
    pieces = autograd.unsafe_chunk(source, 2)
    source.add_(1)
    assert pieces[0].grad_fn is not source.grad_fn and pieces[0]._base is None
    (pieces[0] * 2 + pieces[1] * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[2.0] * 3, [2.0] * 3, [3.0] * 3, [3.0] * 3])
    source = x * 1
    splits = autograd.unsafe_split(source, 1)
    source.mul_(2)
    sum(p.sum() * k for k, p in enumerate(splits)).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[2.0] * 3, [3.0] * 3, [5.0] * 3, [6.0] * 3])


def test_diff_of_order_zero_is_a_new_tensor():
    """PyTorch's diff(x, n=0) returns a copy: writing it leaves x alone (ours returned x itself)."""
    x = autograd.tensor([1.0, 2.0, 4.0], requires_grad=True)
    source = x * 1
    y = autograd.diff(source, n=0)
    assert y is not source
    y.mul_(3)
    np.testing.assert_array_equal(source.detach().numpy(), [1.0, 2.0, 4.0])
    np.testing.assert_array_equal(y.detach().numpy(), [3.0, 6.0, 12.0])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0, 3.0])


def test_lu_solve_keeps_its_pivots():
    """PyTorch's LinalgLuSolveBackward0 saves the pivots: writing them after the forward refuses the backward."""
    A = autograd.tensor(_well_conditioned(3), requires_grad=True)
    LU, pivots = autograd.linalg.lu_factor(A)
    X = autograd.linalg.lu_solve(LU, pivots, autograd.tensor(_arrays((3, 2))[0]))
    pivots.zero_()
    with pytest.raises(RuntimeError, match=r"\[torch.IntTensor \[3\]\] is at version 1; expected version 0"):
        X.sum().backward()


def test_triangular_solve_keeps_b():
    """torch.triangular_solve(b, A)'s TriangularSolveBackward0 saves b (linalg.solve_triangular's node does not):
    writing b after the forward refuses the backward; writing A's copy, the second result, does not."""
    A = autograd.tensor(np.triu(_well_conditioned(3)), requires_grad=True)
    b = autograd.tensor(_arrays((3, 2))[0], requires_grad=True)
    rhs = b * 1
    with pytest.warns(UserWarning, match="triangular_solve is deprecated"):
        solution, copy = autograd.triangular_solve(rhs, A)
    copy.add_(1)
    rhs.add_(1)
    with pytest.raises(RuntimeError, match=r"\[torch.DoubleTensor \[3, 2\]\], which is output 0 of Add, is at "
                                           "version 1; expected version 0"):
        solution.sum().backward()
