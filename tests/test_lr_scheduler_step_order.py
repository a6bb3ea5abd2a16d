"""PyTorch's warning when a scheduler's first step comes before the optimizer's: the first lr of the
schedule is then skipped. Once per scheduler, only for the schedulers that step through the base class
(not ReduceLROnPlateau, not CosineAnnealingWarmRestarts), and an optimizer step taken before the
scheduler was made does not count. A wrapper (SAM) that steps only its inner optimizer warns too."""

import warnings

import pytest

import autograd
import optim

from .pytorch_programs import OURS, pytorch


def order_warnings(m, case):
    """The number of step-order warnings a little program raises."""
    torch, lr_scheduler = m.torch, m.optim.lr_scheduler
    p = torch.zeros(2, requires_grad=True)
    optimizer = m.optim.SGD([p], lr=1.0)

    def optimizer_step():
        p.grad = torch.ones(2)
        optimizer.step()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if case == "scheduler first":
            scheduler = lr_scheduler.StepLR(optimizer, 2)
            for _ in range(3):
                scheduler.step()
                optimizer_step()
        elif case == "optimizer first":
            scheduler = lr_scheduler.OneCycleLR(optimizer, 1.0, total_steps=5)
            for _ in range(3):
                optimizer_step()
                scheduler.step()
        elif case == "stepped before the scheduler was made":
            optimizer_step()
            scheduler = lr_scheduler.ExponentialLR(optimizer, 0.9)
            scheduler.step()
        elif case == "plateau and warm restarts":
            lr_scheduler.ReduceLROnPlateau(optimizer).step(1.0)
            lr_scheduler.CosineAnnealingWarmRestarts(optimizer, 3).step()
        elif case == "a second scheduler after a step":
            first = lr_scheduler.StepLR(optimizer, 2)
            optimizer_step()
            first.step()
            second = lr_scheduler.ExponentialLR(optimizer, 0.9)
            second.step()
        elif case == "a wrapper that steps its inner optimizer":
            class Wrapper(m.optim.Optimizer):
                def __init__(self, params, base_optimizer, **kwargs):
                    super().__init__(params, dict(kwargs))
                    self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
                    self.param_groups = self.base_optimizer.param_groups

                def second_step(self):
                    self.base_optimizer.step()

            wrapper = Wrapper([p], m.optim.SGD, lr=0.1)
            scheduler = lr_scheduler.StepLR(wrapper, 1)
            p.grad = torch.ones(2)
            wrapper.second_step()
            scheduler.step()
    return sum("before `optimizer.step()`" in str(w.message) for w in caught)


CASES = {"scheduler first": 1, "optimizer first": 0, "stepped before the scheduler was made": 1,
         "plateau and warm restarts": 0, "a second scheduler after a step": 0,
         "a wrapper that steps its inner optimizer": 1}


@pytest.mark.parametrize("case", CASES)
def test_scheduler_step_before_optimizer_step_warns_once(case):
    assert order_warnings(OURS, case) == CASES[case]
    m = pytorch()
    if m is not None:
        assert order_warnings(m, case) == CASES[case]


def test_the_warning_names_the_order_and_points_at_the_caller():
    p = autograd.zeros(1, requires_grad=True)
    scheduler = optim.lr_scheduler.LambdaLR(optim.SGD([p], lr=1.0), lambda e: 1.0)
    with pytest.warns(UserWarning, match=r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`") as w:
        scheduler.step()
    assert w[0].filename == __file__
