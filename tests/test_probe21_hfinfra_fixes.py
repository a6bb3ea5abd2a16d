"""Fixes found by the model-infrastructure programs of tests/test_programs_probe21_hfinfra_*.py, each checked on
chainrule and on PyTorch (the ``T`` fixture)."""

import contextlib
import importlib
import warnings

import numpy as np
import pytest

from tests import ported_nn

nn = ported_nn.nn  # the fixture


@contextlib.contextmanager
def registrations_through(nn, seen):
    """nn.Module.register_parameter / register_buffer wrapped, as accelerate's init_empty_weights wraps them."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(module, name, param):
        seen.append(("parameter", type(module).__name__, name))
        register_parameter(module, name, param)

    def buffer(module, name, tensor, persistent=True):
        seen.append(("buffer", type(module).__name__, name, persistent))
        register_buffer(module, name, tensor, persistent=persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


def test_assigning_a_parameter_or_buffer_goes_through_register_parameter_and_register_buffer(T, nn):
    seen = []
    with registrations_through(nn, seen):
        linear = nn.Linear(2, 3)  # its __init__ assigns self.weight = Parameter(...), self.bias = Parameter(...)
        holder = nn.Module()
        holder.register_buffer("steps", T.zeros(1), persistent=False)
        holder.steps = T.ones(1)  # an existing buffer's new tensor: register_buffer again, keeping persistence
        holder.scale = 2.0
        holder.scale = nn.Parameter(T.ones(2))  # a plain attribute gives way to the parameter
        holder.scale = None
    assert seen == [("parameter", "Linear", "weight"), ("parameter", "Linear", "bias"),
                    ("buffer", "Module", "steps", False), ("buffer", "Module", "steps", False),
                    ("parameter", "Module", "scale"), ("parameter", "Module", "scale")]
    assert [name for name, _ in linear.named_parameters()] == ["weight", "bias"]
    assert list(holder.state_dict()) == [] and holder.steps.tolist() == [1.0]
    assert holder.scale is None and "scale" in holder._parameters
    with pytest.raises(TypeError, match="cannot assign 'int' as parameter 'scale'"):
        holder.scale = 3


def test_init_empty_weights_puts_every_parameter_on_the_meta_device(T, nn):
    """accelerate.init_empty_weights: each parameter a layer registers is replaced by its meta copy."""
    register_parameter = nn.Module.register_parameter

    def register_empty_parameter(module, name, param):
        register_parameter(module, name, param)
        if param is not None:
            param_cls = type(module._parameters[name])
            kwargs = module._parameters[name].__dict__
            kwargs["requires_grad"] = param.requires_grad
            module._parameters[name] = param_cls(module._parameters[name].to(T.device("meta")), **kwargs)

    nn.Module.register_parameter = register_empty_parameter
    try:
        model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Embedding(5, 4))
    finally:
        nn.Module.register_parameter = register_parameter
    assert [str(p.device) for p in model.parameters()] == ["meta"] * 5
    assert all(type(p) is nn.Parameter and p.requires_grad for p in model.parameters())
    assert model[0].weight.shape == (4, 3)


def failed_load(T, nn):
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 3))
    with T.no_grad():
        for p in net.parameters():
            p.fill_(1.0)
    state = {"0.weight": T.full((2, 2), 5.0), "0.bias": T.full((2,), 5.0), "1.weight": T.zeros(4, 2),
             "1.bias": T.full((3,), 7.0)}
    with pytest.raises(RuntimeError, match=r"size mismatch for 1.weight"):
        net.load_state_dict(state)
    without_1_weight = {k: v for k, v in state.items() if k != "1.weight"}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "1.weight"'):
        net.load_state_dict({**without_1_weight, "0.weight": T.full((2, 2), 9.0)}, assign=True)
    return net


def test_a_load_that_raises_has_copied_what_fitted(T, nn):
    """As PyTorch's: the error is raised after the tensors that fitted were copied (or, with assign, taken)."""
    net = failed_load(T, nn)
    np.testing.assert_array_equal(net[0].weight.detach().numpy(), np.full((2, 2), 9.0))
    np.testing.assert_array_equal(net[0].bias.detach().numpy(), [5.0, 5.0])
    np.testing.assert_array_equal(net[1].weight.detach().numpy(), np.ones((3, 2)))
    np.testing.assert_array_equal(net[1].bias.detach().numpy(), [7.0, 7.0, 7.0])


def test_a_register_buffer_override_without_persistent_is_called_without_it(T, nn):
    seen = []

    class Legacy(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", T.zeros(1))
            nn.Module.register_buffer(self, "scratch", T.zeros(1), persistent=False)

        def register_buffer(self, name, tensor):  # written before PyTorch had persistent
            seen.append(name)
            super().register_buffer(name, tensor)

    module = Legacy()
    module.count = T.ones(1)
    assert seen == ["count", "count"] and module.count.tolist() == [1.0] and list(module.state_dict()) == ["count"]
    with pytest.raises(RuntimeError, match="Registering a non-persistent buffer on a Module subclass that implements "
                                           r"register_buffer\(\) without the persistent argument is not allowed"):
        module.scratch = T.ones(1)


F = ported_nn.F  # the fixture

SDPA_CASES = {  # name: (query, key, value shapes, mask shape, keywords): where PyTorch's CPU flash kernel runs
    "4-D, 2-D mask": ((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4), (3, 5), {}),
    "4-D, 4-D mask": ((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4), (2, 1, 3, 5), {}),
    "grouped query": ((1, 4, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4), (1, 4, 3, 5), {"enable_gqa": True}),
    "float mask": ((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4), (3, 5), {"float_mask": True}),
}
SDPA_REFUSED = {  # where the math kernel runs: it refuses an attn_mask with is_causal
    "3-D": ((2, 3, 4), (2, 5, 4), (2, 5, 4), (3, 5), {}),
    "dropout": ((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4), (3, 5), {"dropout_p": 0.5}),
    "value head size": ((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 6), (3, 5), {}),
    "3-D mask": ((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4), (1, 3, 5), {}),
    "mask with grad": ((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4), (3, 5), {"float_mask": True, "mask_grad": True}),
    "math kernel only": ((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4), (3, 5), {"math": True}),
}


def sdpa_causal_with_mask(T, F, q_shape, k_shape, v_shape, mask_shape, options):
    options = dict(options)
    generator = np.random.default_rng(0)
    q, k, v = (T.tensor(generator.standard_normal(shape).astype(np.float32)) for shape in (q_shape, k_shape, v_shape))
    keep = generator.random(mask_shape) > 0.3
    if options.pop("float_mask", False):
        mask = T.tensor(np.where(keep, 0.0, -2.0).astype(np.float32), requires_grad=options.pop("mask_grad", False))
    else:
        mask = T.tensor(keep)
    backends = importlib.import_module(F.__name__.rpartition(".")[0] + ".attention")
    kernel = (backends.sdpa_kernel(backends.SDPBackend.MATH) if options.pop("math", False)
              else contextlib.nullcontext())
    with kernel:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=True, **options), q, k, v, mask


@pytest.mark.parametrize("case", list(SDPA_CASES))
def test_sdpa_applies_an_attn_mask_with_is_causal_where_the_cpu_flash_kernel_runs(T, F, case):
    out, q, k, v, mask = sdpa_causal_with_mask(T, F, *SDPA_CASES[case])
    L, S = q.shape[-2], k.shape[-2]
    causal = T.ones(L, S, dtype=T.bool).tril()
    both = causal & mask if mask.dtype == T.bool else mask.masked_fill(~causal, float("-inf"))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=both, enable_gqa=q.shape[1] != k.shape[1])
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", list(SDPA_REFUSED))
def test_sdpa_refuses_an_attn_mask_with_is_causal_where_the_math_kernel_runs(T, F, case):
    with pytest.raises(RuntimeError, match="Explicit attn_mask should not be set when is_causal=True"):
        sdpa_causal_with_mask(T, F, *SDPA_REFUSED[case])


def test_sdpa_refuses_a_mask_that_would_broadcast_the_scores_larger(T, F):
    """A (batch, L, S) mask lines its batch up with the heads: PyTorch adds it into the scores in place, and refuses."""
    q, k = T.ones(2, 1, 2, 4), T.ones(2, 1, 3, 4)
    v = T.arange(24.0).reshape(2, 1, 3, 4)
    for mask in (T.zeros(2, 2, 3), T.ones(3, 2, 3, dtype=T.bool)):
        wide = [mask.shape[0] if i == 1 else n for i, n in enumerate((2, 1, 2, 3))]
        with pytest.raises(RuntimeError, match=rf"output with shape \[2, 1, 2, 3\] doesn't match the broadcast shape "
                                               rf"\[{', '.join(map(str, wide))}\]"):
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert F.scaled_dot_product_attention(q, k, v, attn_mask=T.zeros(2, 1, 1, 3)).shape == (2, 1, 2, 4)


def test_canonical_mask_and_none_or_dtype_as_attention_modules_copied_from_pytorch_call_them(T, F):
    padding = T.tensor([[False, True, False]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        canonical = F._canonical_mask(mask=padding, mask_name="key_padding_mask", other_type=T.float32,
                                      other_name="attn_mask", target_type=T.float64)
        unchecked = F._canonical_mask(mask=padding, mask_name="attn_mask", other_type=T.float32, other_name="",
                                      target_type=T.float32, check_other=False)
    assert [str(w.message) for w in caught] == [
        "Support for mismatched key_padding_mask and attn_mask is deprecated. Use same type for both instead."]
    np.testing.assert_array_equal(canonical.numpy(), [[0.0, -np.inf, 0.0]])
    assert canonical.dtype == T.float64 and unchecked.dtype == T.float32
    floats = T.zeros(1, 3)
    assert F._canonical_mask(floats, "attn_mask", None, "", T.float64) is floats
    assert F._canonical_mask(None, "attn_mask", None, "", T.float32) is None
    with pytest.raises(AssertionError, match="only bool and floating types of attn_mask are supported"):
        F._canonical_mask(T.ones(1, 3, dtype=T.int64), "attn_mask", None, "", T.float32)
    assert F._none_or_dtype(None) is None and F._none_or_dtype(padding) == T.bool
    with pytest.raises(RuntimeError, match=r"input to _none_or_dtype\(\) must be None or torch.Tensor"):
        F._none_or_dtype(3)


def test_checkpoint_function_applied_directly(T, nn):
    """``torch.utils.checkpoint.CheckpointFunction.apply(run_function, preserve_rng_state, *args)``: the reentrant
    checkpoint, replaying dropout's mask."""
    checkpoint = importlib.import_module(T.__name__ + ".utils.checkpoint")
    T.manual_seed(0)
    block = nn.Sequential(nn.Linear(3, 5), nn.Dropout(0.5), nn.Tanh(), nn.Linear(5, 2))
    x = T.tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), requires_grad=True)
    grads = []
    for checkpointed in (False, True):
        T.manual_seed(3)
        block.zero_grad()
        x.grad = None
        y = checkpoint.CheckpointFunction.apply(block, 1, x) if checkpointed else block(x)
        (y ** 2).sum().backward()
        grads.append([x.grad.numpy().copy()] + [p.grad.numpy().copy() for p in block.parameters()])
    for plain, checkpointed in zip(*grads):
        np.testing.assert_allclose(checkpointed, plain, rtol=1e-6, atol=1e-7)


def test_a_custom_repr_built_with_addindent(T, nn):
    """A module printing its children with extra facts, Module.__repr__'s way, through module._addindent."""
    module_module = importlib.import_module(nn.__name__ + ".modules.module")

    class Annotated(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(2, 3), nn.ReLU())

        def __repr__(self):
            lines = [f"({name}) [{sum(p.numel() for p in child.parameters())} params]: "
                     + module_module._addindent(repr(child), 2) for name, child in self.named_children()]
            return "Annotated(\n  " + "\n  ".join(lines) + "\n)"

    assert repr(Annotated()) == ("Annotated(\n  (body) [9 params]: Sequential(\n    (0): Linear(in_features=2, "
                                 "out_features=3, bias=True)\n    (1): ReLU()\n  )\n)")
    assert module_module._addindent("one line", 4) == "one line"


def test_a_generator_cloned_in_its_state_draws_the_same(T):
    generator = T.Generator().manual_seed(11)
    T.rand(5, generator=generator)
    clone = generator.clone_state()
    assert T.equal(T.rand(7, generator=clone), T.rand(7, generator=generator))
    assert clone is not generator


def test_a_subclass_made_by_make_subclass_keeps_only_its_own_attributes(T):
    class Int8Params(T.nn.Parameter):  # (bitsandbytes' shape: __new__ through _make_subclass, attributes after)
        def __new__(cls, data, requires_grad=False, has_fp16_weights=False):
            made = T.Tensor._make_subclass(cls, data, requires_grad)
            made.has_fp16_weights = has_fp16_weights
            return made

    weight = Int8Params(T.ones(2, 3), has_fp16_weights=True)
    assert weight.__dict__ == {"has_fp16_weights": True}
    rebuilt = Int8Params(weight.data * 2, requires_grad=False, **weight.__dict__)  # (accelerate's rebuild)
    assert rebuilt.has_fp16_weights and T.equal(rebuilt.data, T.full((2, 3), 2.0))
    source = T.ones(2)
    shared = Int8Params(source)
    source.add_(1)
    assert T.equal(shared.data, T.full((2,), 2.0))  # (the memory is data's)
