"""A new user's first hour: short programs that each make one mistake people really make, run as
tests/probe10_mistakes_common.py says. Optimisers, schedulers and modules: a consumed parameters generator,
parameters without the call, lr as a string, a non-leaf tensor given to the optimiser, the scheduler stepped before
the optimiser, a layer added after the optimiser; registering before ``super().__init__()``, a plain list of layers,
a plain tensor attribute or one assigned over a parameter, BatchNorm on a batch of one in training and in eval, a
validation pass without ``eval()``; a softmax layer without dim and ``F.upsample``'s deprecation."""

import numpy as np
import pytest

from tests.program_errors import raises_alike
from tests.pytorch_programs import load, weights_of

from .probe10_mistakes_common import ROWS, _same, warns_alike

# -- optimisers and schedulers ----------------------------------------------------------------------------


def test_a_parameters_generator_consumed_before_the_optimizer():
    def program(m):
        model = m.nn.Linear(4, 2)
        params = model.parameters()
        print_count = sum(p.numel() for p in params)  # counting uses the generator up
        return m.optim.SGD(params, lr=0.1), print_count

    raises_alike(program, "optimizer got an empty parameter list", kind=ValueError)


def test_model_parameters_without_the_call():
    def program(m):
        return m.optim.Adam(m.nn.Linear(4, 2).parameters, lr=1e-3)

    raises_alike(program, "'method' object is not iterable", kind=TypeError)


def test_a_learning_rate_read_from_a_config_as_a_string():
    def program(m):
        config = {"lr": "1e-3"}  # YAML reads 1e-3 as a string
        return m.optim.SGD(m.nn.Linear(4, 2).parameters(), lr=config["lr"])

    error = raises_alike(program, "str", kind=TypeError)
    assert "learning rate" in str(error) and "'1e-3'" in str(error)


def test_a_non_leaf_tensor_given_to_the_optimizer():
    def program(m):
        w = m.torch.randn(3, requires_grad=True) * 0.01
        return m.optim.SGD([w], lr=0.1)

    raises_alike(program, "can't optimize a non-leaf Tensor", kind=ValueError)


def test_scheduler_step_before_optimizer_step_warns_and_skips_the_first_lr():
    def program(m):
        model = m.nn.Linear(2, 1)
        optimizer = m.optim.SGD(model.parameters(), lr=0.1)
        scheduler = m.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        lrs = []
        for _ in range(3):
            scheduler.step()  # the old order
            optimizer.zero_grad()
            model(m.torch.ones(1, 2)).sum().backward()
            optimizer.step()
            lrs.append(optimizer.param_groups[0]["lr"])
        return lrs

    np.testing.assert_allclose(warns_alike(program, r"lr_scheduler.step\(\)` before `optimizer.step\(\)"),
                               [0.05, 0.025, 0.0125])


def test_a_layer_added_after_the_optimizer_is_never_trained():
    def program(m):
        class Net(m.nn.Module):
            def __init__(self):
                super().__init__()
                self.body = m.nn.Linear(2, 2)

            def forward(self, x):
                return self.head(self.body(x))

        model = Net()
        optimizer = m.optim.SGD(model.parameters(), lr=0.1)
        model.head = m.nn.Linear(2, 1)  # added later: not in the optimizer
        before = model.head.weight.detach().clone()
        model(m.torch.ones(3, 2)).sum().backward()
        optimizer.step()
        return bool((model.head.weight == before).all()), model.head.weight.grad is not None

    assert _same(program) == (True, True)


# -- modules ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "register"), [
    ("buffer", lambda m, self: self.register_buffer("scale", m.torch.ones(1))),
    ("parameter", lambda m, self: self.register_parameter("w", m.nn.Parameter(m.torch.ones(1)))),
    ("module", lambda m, self: setattr(self, "fc", m.nn.Linear(1, 1))),
])
def test_registering_before_super_init(kind, register):
    def program(m):
        class Net(m.nn.Module):
            def __init__(self):
                register(m, self)
                super().__init__()

        return Net()

    raises_alike(program, f"cannot assign {kind}s? before Module.__init__\\(\\) call", kind=AttributeError)


def test_layers_kept_in_a_plain_list_are_invisible_to_parameters_and_state_dict():
    def program(m):
        class Net(m.nn.Module):
            def __init__(self, container):
                super().__init__()
                self.layers = container([m.nn.Linear(2, 2), m.nn.Linear(2, 1)])

        return [(len(list(Net(c).parameters())), len(Net(c).state_dict())) for c in (list, m.nn.ModuleList)]

    assert _same(program) == [(0, 0), (4, 4)]


def test_a_plain_tensor_attribute_is_no_parameter():
    def program(m):
        class Scale(m.nn.Module):
            def __init__(self):
                super().__init__()
                self.gain = m.torch.ones(3, requires_grad=True)  # not nn.Parameter
                self.fc = m.nn.Linear(3, 1)

        return [name for name, _ in Scale().named_parameters()]

    assert _same(program) == ["fc.weight", "fc.bias"]


def test_a_plain_tensor_assigned_over_a_parameter():
    def program(m):
        layer = m.nn.Linear(2, 2)
        layer.weight = m.torch.eye(2)

    raises_alike(program, r"cannot assign 'torch.FloatTensor' as parameter 'weight' \(torch.nn.Parameter or None",
                 kind=TypeError)


def test_batchnorm_in_training_on_a_batch_of_one():
    def program(m):
        model = m.nn.Sequential(m.nn.Linear(3, 4), m.nn.BatchNorm1d(4))
        return model(m.torch.ones(1, 3))  # a single example, model.eval() forgotten

    raises_alike(program, r"Expected more than 1 value per channel when training, got input size .*\[1, 4\]|"
                          r"\(1, 4\)", kind=ValueError)


def test_batchnorm_in_eval_on_a_batch_of_one():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(3, 4), m.nn.BatchNorm1d(4)))

    def program(m):
        model = load(m, m.nn.Sequential(m.nn.Linear(3, 4), m.nn.BatchNorm1d(4)), weights)
        model(m.torch.tensor(ROWS.astype(np.float32)))  # one training batch
        model.eval()
        return model(m.torch.ones(1, 3)), model[1].running_mean

    out, running_mean = _same(program, rtol=1e-5, atol=1e-6)
    hidden = ROWS.astype(np.float32) @ weights["0.weight"].T + weights["0.bias"]
    np.testing.assert_allclose(running_mean, 0.1 * hidden.mean(0), rtol=1e-5, atol=1e-7)
    assert out.shape == (1, 4)


def test_a_validation_pass_without_eval_moves_the_running_statistics():
    def program(m):  # no_grad() stops gradients, not BatchNorm's training mode; momentum=0.9 as Keras means 0.1
        model = m.nn.Sequential(m.nn.Linear(3, 3, bias=False), m.nn.BatchNorm1d(3, momentum=0.9))
        with m.torch.no_grad():
            model[0].weight.copy_(m.torch.eye(3))
            model(m.torch.tensor(ROWS.astype(np.float32)))  # "validation", model.eval() forgotten
        return model[1].running_mean, model[1].running_var, model[1].num_batches_tracked

    running_mean, running_var, batches = _same(program)
    np.testing.assert_allclose(running_mean, 0.9 * ROWS.mean(0), rtol=1e-5)
    np.testing.assert_allclose(running_var, 0.1 + 0.9 * ROWS.var(0, ddof=1), rtol=1e-5)
    assert batches == 1

def test_softmax_layer_without_dim_warns():
    def program(m):
        return m.nn.Softmax()(m.torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]))

    warns_alike(program, "Implicit dimension choice for softmax has been deprecated")


def test_f_upsample_warns_that_it_is_deprecated():
    def program(m):
        return m.F.upsample(m.torch.arange(4.0).reshape(1, 1, 2, 2), scale_factor=2)

    warns_alike(program, "`nn.functional.upsample` is deprecated. Use `nn.functional.interpolate`")
