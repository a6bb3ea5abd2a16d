"""Fixes found by the language-model programs (tests/test_programs_probe10_llm.py), each checked on
chainrule and on PyTorch (the ``T`` fixture)."""

import warnings

import numpy as np

from tests import ported_nn

nn = ported_nn.nn  # the fixture


def test_softmax_of_rows_masked_with_finfo_min_is_uniform_and_silent(T):
    """Hugging Face masks with finfo(dtype).min: a row masked throughout is uniform, and the maxima that
    sum past the float range must not make NumPy warn of an overflow."""
    for dtype in (T.float32, T.float64):
        x = T.full((4, 3), T.finfo(dtype).min, dtype=dtype)
        x[0, 1] = 2.0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = T.softmax(x, dim=-1)
            lse = T.logsumexp(x, dim=-1)
        np.testing.assert_allclose(y.numpy(), [[0, 1, 0]] + [[1 / 3] * 3] * 3, rtol=1e-6)
        np.testing.assert_allclose(lse.numpy(), [2.0] + [float(T.finfo(dtype).min)] * 3, rtol=1e-6)


def test_train_and_eval_call_each_childs_own_train(T, nn):
    """Module.train(mode) sets its flag and calls train(mode) on each child, as PyTorch's: a subclass's
    override runs (loralib merges its low-rank update there; frozen-BatchNorm models stay in eval)."""
    calls = []

    class Merging(nn.Linear):
        def train(self, mode=True):
            calls.append(mode)
            nn.Linear.train(self, mode)
            if not mode:
                self.weight.data += 1.0
            return self

    class FrozenNorm(nn.BatchNorm1d):
        def train(self, mode=True):
            return super().train(False)  # always in eval: running statistics never update

    model = nn.Sequential(nn.Sequential(Merging(2, 2)), FrozenNorm(2))
    model.weight_before = model[0][0].weight.detach().clone()
    model.eval()
    assert calls == [False] and not model.training and not model[0][0].training
    assert T.equal(model[0][0].weight.detach(), model.weight_before + 1.0)
    model.train()
    assert calls == [False, True] and model.training and model[0][0].training and not model[1].training
    model(T.ones(3, 2) * 5)
    assert model[1].running_mean.tolist() == [0.0, 0.0]


def test_half_float_double_to_and_type_go_through_apply(T, nn):
    """PyTorch's Module.half()/float()/double()/to()/type() all run through _apply, so a subclass that
    overrides it (to keep a rotary cache in float32 while the weights go to float16) is honoured."""

    class RotaryKeptInFloat32(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("inv_freq", 1.0 / (10000 ** (T.arange(0, 4, 2).float() / 4)), persistent=False)
            self.proj = nn.Linear(2, 2)
            self.calls = 0

        def _apply(self, fn, *args, **kwargs):
            self.calls += 1
            inv_freq = self.inv_freq
            super()._apply(fn, *args, **kwargs)
            self.inv_freq = inv_freq
            return self

    model = nn.Sequential(RotaryKeptInFloat32())
    weight = model[0].proj.weight
    for cast, expected in ((lambda: model.half(), T.float16), (lambda: model.double(), T.float64),
                           (lambda: model.float(), T.float32), (lambda: model.to(T.float64), T.float64),
                           (lambda: model.type(T.float16), T.float16)):
        assert cast() is model
        assert model[0].proj.weight.dtype == expected and model[0].inv_freq.dtype == T.float32
    assert model[0].calls == 5 and model[0].proj.weight is weight  # a parameter keeps its object
