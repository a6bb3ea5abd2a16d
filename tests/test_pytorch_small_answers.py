"""Small answers PyTorch gives that programs rely on: ``x == None`` is False, no bool subtraction,
undefined moments are NaN, a LambdaLR's callable objects keep their state through a state_dict."""

import numpy as np
import pytest

import autograd
import optim
from autograd import distributions as D


def test_comparing_with_none_is_a_plain_bool():
    x = autograd.ones(2)
    assert (x == None) is False and (x != None) is True  # noqa: E711  (what `if mask == None:` reads)


@pytest.mark.parametrize(("left", "right", "message"), [
    (lambda: autograd.tensor([True]), lambda: autograd.tensor([False]), "two bool tensors"),
    (lambda: autograd.tensor([True]), lambda: 1, "a bool tensor"),
    (lambda: 1, lambda: autograd.tensor([True]), "a bool tensor"),
    (lambda: autograd.ones(2), lambda: autograd.tensor([True, False]), "a bool tensor"),
    (lambda: autograd.ones(2), lambda: True, "a bool tensor"),
])
def test_subtraction_refuses_bools_as_pytorch(left, right, message):
    with pytest.raises(RuntimeError, match=f"Subtraction, the `-` operator, with {message} is not supported"):
        left() - right()
    assert (autograd.ones(2) - 1).tolist() == [0.0, 0.0]  # numbers and other dtypes still subtract


def test_undefined_moments_are_nan():
    categorical = D.Categorical(autograd.tensor([[0.3, 0.7], [0.5, 0.5]]))
    for value in (categorical.mean, categorical.variance, categorical.stddev):
        assert value.shape == (2,) and np.isnan(value.numpy()).all()
    mode = D.Uniform(autograd.tensor([0.0, 1.0]), 2.0).mode
    assert mode.shape == (2,) and np.isnan(mode.numpy()).all()
    assert D.Bernoulli(autograd.tensor([0.3, 0.7])).param_shape == (2,)
    assert D.Bernoulli(logits=autograd.zeros(3, 1)).param_shape == (3, 1)


class Warmup:
    """A callable schedule with state of its own (PyTorch saves its __dict__ in the state_dict)."""

    def __init__(self, steps):
        self.steps, self.calls = steps, 0

    def __call__(self, epoch):
        self.calls += 1
        return min(1.0, (epoch + 1) / self.steps)


@pytest.mark.parametrize("schedule", ["LambdaLR", "MultiplicativeLR"])
def test_lambda_schedules_save_a_callable_objects_state(schedule):
    def make(lr_lambda):
        optimizer = optim.SGD([autograd.ones(1, requires_grad=True)], lr=0.1)
        return getattr(optim.lr_scheduler, schedule)(optimizer, lr_lambda)

    scheduler = make(Warmup(5))
    for _ in range(3):
        scheduler.step()
    state = scheduler.state_dict()
    calls = scheduler.lr_lambdas[0].calls  # (4 for LambdaLR; MultiplicativeLR's first step calls nothing)
    assert state["lr_lambdas"] == [{"steps": 5, "calls": calls}] and calls >= 3
    resumed = make(Warmup(2))
    resumed.load_state_dict(state)
    assert vars(resumed.lr_lambdas[0]) == {"steps": 5, "calls": calls} and resumed.last_epoch == 3
    assert make(lambda epoch: 0.5).state_dict()["lr_lambdas"] == [None]  # a function's code is not saved


def test_as_pytorch():
    torch = pytest.importorskip("torch")
    assert (torch.ones(2) == None) is False  # noqa: E711
    with pytest.raises(RuntimeError, match="with a bool tensor is not supported"):
        1 - torch.tensor([True])
    assert torch.isnan(torch.distributions.Categorical(torch.tensor([0.3, 0.7])).variance)
    assert torch.isnan(torch.distributions.Uniform(0.0, 2.0).mode)
    optimizer = torch.optim.SGD([torch.ones(1, requires_grad=True)], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, Warmup(5))
    for _ in range(3):
        scheduler.step()
    assert scheduler.state_dict()["lr_lambdas"] == [{"steps": 5, "calls": 4}]


def test_graph_node_and_increment_version():
    from autograd.autograd.graph import Node, increment_version

    class Double(autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, a, b):
            return a * 2 + b * 3

    x = autograd.ones(2, requires_grad=True)
    y = x * x
    first, second = Double.apply(x)
    assert all(isinstance(t.grad_fn, Node) for t in (y, first, second, x.exp()))
    assert not isinstance(x, Node) and x.grad_fn is None
    version = x._version
    increment_version([x])  # a write the engine did not see: y's graph must refuse x now
    assert x._version == version + 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_the_modules_custom_distributions_and_anomaly_code_import():
    from autograd.autograd.anomaly_mode import detect_anomaly, set_detect_anomaly
    from autograd.distributions.utils import broadcast_all, euler_constant, lazy_property, probs_to_logits

    assert detect_anomaly is autograd.autograd.detect_anomaly and callable(set_detect_anomaly)
    loc, scale = broadcast_all(autograd.zeros(3), 1.0)
    assert scale.shape == (3,) and scale.dtype == autograd.float32
    assert euler_constant == pytest.approx(0.5772156649015329)
    np.testing.assert_allclose(probs_to_logits(autograd.tensor([0.5, 0.25]), is_binary=True).numpy(),
                               [0.0, np.log(1 / 3)], rtol=1e-6)

    class Scaled:
        calls = 0

        @lazy_property
        def value(self):
            Scaled.calls += 1
            return 42

    s = Scaled()
    assert s.value == 42 and s.value == 42 and Scaled.calls == 1


def test_inf_and_nan_come_silently_as_in_pytorch_and_a_users_numpy_still_warns():
    import subprocess
    import sys

    program = (
        "import numpy, autograd\n"
        "x = autograd.tensor([0.0, 1.0, -1.0])\n"
        "print((x / x).tolist(), x.log().tolist(), x.sqrt().tolist(), (autograd.tensor([1e30]) * 1e30).tolist())\n"
        "numpy.log(numpy.zeros(1))\n"
    )
    done = subprocess.run([sys.executable, "-W", "default", "-c", program], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[nan, 1.0, 1.0] [-inf, 0.0, nan] [0.0, 1.0, nan] [inf]"
    assert done.stderr.count("RuntimeWarning") == 1 and "<string>:4" in done.stderr  # only the user's own line
