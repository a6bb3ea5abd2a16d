"""Ported from PyTorch's test/test_expanded_weights.py: ``nn.utils._per_sample_grad.call_for_per_sample_grads``
(Expanded Weights) on the modules it supports, each parameter's ``grad_sample`` compared with the gradients of
a loop over single samples (PyTorch's _do_test), a module called twice (its _do_test_multi_input), the small
convnet with 'sum' and 'mean' losses, how the batch size is found, and the refusals. Run on chainrule and on
PyTorch (``T``); the loop is each library's own, and the sum of the rows is the whole batch's ``.grad``.

Not ported: the ExpandedWeight tensor subclass and its helpers (forward_helper, standard_kwargs, ...), which are
PyTorch's implementation; here the per-sample gradients come from vmap over functional_call instead."""

import importlib

import numpy as np
import pytest


def _nn(T):
    return importlib.import_module("torch.nn" if T.__name__ == "torch" else "nn")


def _per_sample(T):
    return importlib.import_module(f"{_nn(T).__name__}.utils._per_sample_grad").call_for_per_sample_grads


def _loop_grads(T, module, samples, batch_first=True):
    """Each parameter's gradients of module(one sample).sum(), stacked over the samples."""
    params = [p for p in module.parameters() if p.requires_grad]
    rows = []
    for i in range(samples.shape[0 if batch_first else 1]):
        one = samples[i:i + 1] if batch_first else samples[:, i:i + 1]
        out = module(one)
        out = out[0] if isinstance(out, tuple) else out
        rows.append(T.autograd.grad(out.sum(), params))
    return [np.stack([row[k].numpy() for row in rows]) for k in range(len(params))]


def _check_module(T, make, make_input, batch_first=True, twice=False):
    """grad_sample of every trainable parameter equals the loop's rows (twice those rows for a module called
    twice), and sums to the batch's .grad; the wrapped forward gives the module's own output."""
    nn = _nn(T)
    T.manual_seed(0)
    module = make(nn).double()
    samples = make_input()
    wrapped = module
    if twice:
        class Twice(nn.Module):
            def __init__(self):
                super().__init__()
                self.module = module

            def forward(self, x):
                return self.module(x) + self.module(x)

        wrapped = Twice()
    out = _per_sample(T)(wrapped, batch_first=batch_first)(samples)
    out = out[0] if isinstance(out, tuple) else out
    plain = module(samples)
    plain = plain[0] if isinstance(plain, tuple) else plain
    np.testing.assert_allclose(out.detach().numpy(), (2 if twice else 1) * plain.detach().numpy(), rtol=1e-12)
    out.sum().backward()
    params = [p for p in module.parameters() if p.requires_grad]
    got = [p.grad_sample.numpy() for p in params]
    assert all(p.grad is None for p in params)
    for p in params:
        del p.grad_sample
    expected = _loop_grads(T, module, samples, batch_first)
    for g, e, p in zip(got, expected, params):
        assert g.shape == (samples.shape[0 if batch_first else 1], *p.shape)
        np.testing.assert_allclose(g, (2 if twice else 1) * e, rtol=1e-9, atol=1e-12)
    module.zero_grad()
    plain.sum().backward()
    for g, p in zip(got, params):
        np.testing.assert_allclose(g.sum(0), (2 if twice else 1) * p.grad.numpy(), rtol=1e-9, atol=1e-12)
    return got


def _randn(T, *shape):
    return lambda: T.randn(*shape, dtype=T.float64)


MODULES = {  # name: (constructor, input, batch_first)
    "Linear": (lambda nn: nn.Linear(4, 3), lambda T: _randn(T, 5, 4), True),
    "Linear_3d_input": (lambda nn: nn.Linear(4, 3), lambda T: _randn(T, 3, 2, 4), True),
    "Linear_no_bias": (lambda nn: nn.Linear(4, 2, bias=False), lambda T: _randn(T, 3, 4), True),
    "Conv1d_stride_padding": (lambda nn: nn.Conv1d(2, 3, 3, stride=2, padding=1), lambda T: _randn(T, 4, 2, 7), True),
    "Conv1d_same_dilation": (lambda nn: nn.Conv1d(2, 3, 3, padding="same", dilation=2), lambda T: _randn(T, 3, 2, 7),
                             True),
    "Conv2d_groups": (lambda nn: nn.Conv2d(4, 4, 3, groups=2, padding=1), lambda T: _randn(T, 3, 4, 5, 5), True),
    "Conv2d_valid_no_bias": (lambda nn: nn.Conv2d(2, 4, (2, 3), padding="valid", bias=False),
                             lambda T: _randn(T, 3, 2, 5, 5), True),
    "Conv3d": (lambda nn: nn.Conv3d(2, 2, 2, stride=(1, 2, 1)), lambda T: _randn(T, 2, 2, 4, 4, 3), True),
    "Embedding": (lambda nn: nn.Embedding(6, 3), lambda T: lambda: T.tensor([[0, 1, 1], [2, 5, 5], [4, 3, 0]]), True),
    "LayerNorm": (lambda nn: nn.LayerNorm((3, 4)), lambda T: _randn(T, 4, 2, 3, 4), True),
    "GroupNorm": (lambda nn: nn.GroupNorm(2, 4), lambda T: _randn(T, 3, 4, 5), True),
    "InstanceNorm1d_affine": (lambda nn: nn.InstanceNorm1d(3, affine=True), lambda T: _randn(T, 4, 3, 6), True),
    "InstanceNorm2d_affine": (lambda nn: nn.InstanceNorm2d(3, affine=True), lambda T: _randn(T, 3, 3, 3, 3), True),
    "RNN_batch_first": (lambda nn: nn.RNN(3, 4, batch_first=True), lambda T: _randn(T, 4, 5, 3), True),
    "RNN_seq_first": (lambda nn: nn.RNN(3, 4), lambda T: _randn(T, 5, 4, 3), False),
    "LSTM_two_layers": (lambda nn: nn.LSTM(3, 4, num_layers=2, batch_first=True), lambda T: _randn(T, 3, 5, 3), True),
    "GRU_bidirectional": (lambda nn: nn.GRU(3, 2, bidirectional=True, batch_first=True),
                          lambda T: _randn(T, 3, 4, 3), True),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_per_sample_grads_match_a_loop_over_samples(T, name):
    make, make_input, batch_first = MODULES[name]
    got = _check_module(T, make, make_input(T), batch_first)
    if name == "Linear":  # d(sum of W x + b)/db = 1 for each sample and output
        np.testing.assert_array_equal(got[1], np.ones((5, 3)))
    if name == "Embedding":  # each sample's gradient counts its own tokens: row 5 of sample 1 twice
        np.testing.assert_array_equal(got[0][1, 5], [2.0, 2.0, 2.0])
        np.testing.assert_array_equal(got[0][1, 0], [0.0, 0.0, 0.0])


@pytest.mark.parametrize("name", ["Linear", "Conv2d_groups", "Embedding", "LayerNorm", "GroupNorm"])
def test_per_sample_grads_of_a_module_called_twice_add_up(T, name):
    make, make_input, batch_first = MODULES[name]
    _check_module(T, make, make_input(T), batch_first, twice=True)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_small_convnet_against_a_loop(T, reduction):
    """PyTorch's test_small_model, smaller: a convnet with pooling, flatten and a linear head under cross
    entropy; with 'mean' the rows are scaled back by the batch size, so they are still each sample's."""
    nn = _nn(T)
    T.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(4, 3)).double()
    x, y = T.randn(4, 2, 6, 6, dtype=T.float64), T.tensor([0, 2, 1, 2])
    criterion = nn.CrossEntropyLoss(reduction=reduction)
    criterion(_per_sample(T)(model, loss_reduction=reduction)(x), y).backward()
    got = [p.grad_sample.numpy() for p in model.parameters()]
    for p in model.parameters():
        del p.grad_sample
    for i in range(4):
        grads = T.autograd.grad(criterion(model(x[i:i + 1]), y[i:i + 1]), list(model.parameters()))
        for g, e in zip(got, grads):
            np.testing.assert_allclose(g[i], e.numpy(), rtol=1e-8, atol=1e-12)


def test_batch_size_is_read_from_args_and_kwargs(T):
    """PyTorch's test_per_sample_api_compute_batch_size: every tensor in args and kwargs gives the batch size
    (the first dim, the second where not batch_first); two sizes are refused, and no tensor at all."""
    nn = _nn(T)
    call_for_per_sample_grads = _per_sample(T)

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(5, 5)

        def forward(self, a, b):
            return self.linear(a) + self.linear(b)

    module = TwoInputs()
    a, b = T.randn(4, 5), T.randn(4, 5)
    call_for_per_sample_grads(module)(a, b).sum().backward()
    assert module.linear.weight.grad_sample.shape == (4, 5, 5)
    module.linear.weight.grad_sample = module.linear.bias.grad_sample = None
    call_for_per_sample_grads(module)(a, b=b).sum().backward()
    assert module.linear.bias.grad_sample.shape == (4, 5)
    np.testing.assert_allclose(module.linear.bias.grad_sample.numpy(), 2 * np.ones((4, 5)))
    module.linear.weight.grad_sample = module.linear.bias.grad_sample = None
    with pytest.raises(RuntimeError, match="found at least one input with batch size 4 and one with batch size 5"):
        call_for_per_sample_grads(module)(a, T.randn(5, 5))
    with pytest.raises(RuntimeError, match="found at least one input with batch size 4 and one with batch size 3"):
        call_for_per_sample_grads(module, batch_first=False)(T.randn(2, 4, 5), T.randn(2, 3, 5))
    with pytest.raises(RuntimeError, match="Unable to find a tensor in the passed args and kwargs"):
        call_for_per_sample_grads(module)(3, b=[1.0])


def test_per_sample_api_failing(T):
    nn = _nn(T)
    call_for_per_sample_grads = _per_sample(T)
    module = nn.Linear(10, 10)
    x = T.randn(8, 10)
    with pytest.raises(RuntimeError, match="Module passed must be nn.Module, got str"):
        call_for_per_sample_grads("fail")
    with pytest.raises(RuntimeError, match="Batch size passed must be None or an integer, got float"):
        call_for_per_sample_grads(module, batch_size=6.4)
    with pytest.raises(RuntimeError, match="Batch size must be positive, got -64"):
        call_for_per_sample_grads(module, batch_size=-64)
    with pytest.raises(RuntimeError, match="Expected loss_reduction argument to be sum or mean, got other"):
        call_for_per_sample_grads(module, loss_reduction="other")
    call_for_per_sample_grads(module, batch_size=8)(x).sum().backward()  # fills grad_sample
    with pytest.raises(RuntimeError, match="incorrect for multiple calls without clearing gradients"):
        call_for_per_sample_grads(module, batch_size=8)
    with pytest.raises(RuntimeError, match="cannot handle function batch_norm"):
        call_for_per_sample_grads(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))(T.randn(4, 3))


def test_frozen_parameters_get_no_grad_sample(T):
    nn = _nn(T)
    T.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    x = T.randn(5, 3, requires_grad=True)
    _per_sample(T)(model)(x).sum().backward()
    assert getattr(model[0].weight, "grad_sample", None) is None and model[0].weight.grad is None
    assert model[0].bias.grad_sample.shape == (5, 4) and model[2].weight.grad_sample.shape == (5, 2, 4)
    assert x.grad.shape == (5, 3)  # the input's own gradient is the ordinary one


@pytest.mark.xfail(strict=True, reason="a BatchNorm with frozen parameters in training mode normalises over the "
                                       "whole batch in PyTorch's Expanded Weights; chainrule maps the module over "
                                       "single samples, where batch norm has one value per channel and refuses")
def test_frozen_batch_norm_in_training_mixes_the_batch():
    import autograd as T

    nn = _nn(T)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4).requires_grad_(False)).double()
    _per_sample(T)(model)(T.randn(5, 4, dtype=T.float64)).sum().backward()
    assert model[0].weight.grad_sample.shape == (5, 4, 4)


def test_embedding_padding_idx_row_has_no_per_sample_gradient(T):
    """chainrule's rows are each sample's own gradient, where the padding row gets none (as .grad). PyTorch's
    Expanded Weights scatters every token, the padding one too, so its rows there count the padding tokens
    (a difference from its own loop, kept as PyTorch's here only in this assertion)."""
    nn = _nn(T)
    T.manual_seed(0)
    embedding = nn.Embedding(6, 3, padding_idx=0).double()
    tokens = T.tensor([[0, 1, 1], [2, 0, 0]])
    _per_sample(T)(embedding)(tokens).sum().backward()
    padding_rows = embedding.weight.grad_sample[:, 0].numpy()
    expected_padding_rows = [[1.0] * 3, [2.0] * 3] if T.__name__ == "torch" else np.zeros((2, 3))
    np.testing.assert_array_equal(padding_rows, expected_padding_rows)
    np.testing.assert_array_equal(embedding.weight.grad_sample[:, 1].numpy(), [[2.0] * 3, [0.0] * 3])
