# ruff: noqa: B007, E731, F841, UP039  (the programs are kept as their authors wrote them)
"""Language-model code as it is written today, run as tests/probe10_llm_common.py says. Fine-tuning by few or small
weights: LoRA as loralib writes it (merging in an overridden ``train()``) and as minLoRA does
(``register_parametrization``); int8 / NF4 weight quantization and straight-through quantization-aware training."""

import io
import math

import numpy as np

from . import probe10_llm_common
from .probe10_llm_common import L, llama_batches, make_llama
from .pytorch_programs import load, run_both, weights_of

llama_weights = probe10_llm_common.llama_weights  # the fixture


# ----------------------------------------------------------------------------------------------
# LoRA as microsoft/loralib writes it (a Linear subclass that also inherits LoRALayer, base weight
# frozen by requires_grad = False, lora_A/lora_B from weight.new_zeros, `result +=` the low-rank
# path, train()/eval() merging into weight.data, mark_only_lora_as_trainable, lora_state_dict saved
# to a BytesIO and loaded with strict=False), put into the LLaMA above by setattr; and minLoRA's
# (cccntu/minLoRA) parametrize.register_parametrization version applied by model.apply(partial(...)),
# trained with only the LoRA parameters in the optimizer and merged by remove_parametrizations
# ----------------------------------------------------------------------------------------------


def loralib(m):
    torch, nn, F = m.torch, m.nn, m.F

    class LoRALayer():
        def __init__(self, r, lora_alpha, lora_dropout, merge_weights):
            self.r = r
            self.lora_alpha = lora_alpha
            if lora_dropout > 0.:
                self.lora_dropout = nn.Dropout(p=lora_dropout)
            else:
                self.lora_dropout = lambda x: x
            self.merged = False
            self.merge_weights = merge_weights

    class Linear(nn.Linear, LoRALayer):
        def __init__(self, in_features, out_features, r=0, lora_alpha=1, lora_dropout=0., fan_in_fan_out=False,
                     merge_weights=True, **kwargs):
            nn.Linear.__init__(self, in_features, out_features, **kwargs)
            LoRALayer.__init__(self, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                               merge_weights=merge_weights)
            self.fan_in_fan_out = fan_in_fan_out
            if r > 0:
                self.lora_A = nn.Parameter(self.weight.new_zeros((r, in_features)))
                self.lora_B = nn.Parameter(self.weight.new_zeros((out_features, r)))
                self.scaling = self.lora_alpha / self.r
                self.weight.requires_grad = False
            self.reset_parameters()
            if fan_in_fan_out:
                self.weight.data = self.weight.data.transpose(0, 1)

        def reset_parameters(self):
            nn.Linear.reset_parameters(self)
            if hasattr(self, 'lora_A'):
                nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
                nn.init.zeros_(self.lora_B)

        def train(self, mode: bool = True):
            def T(w):
                return w.transpose(0, 1) if self.fan_in_fan_out else w
            nn.Linear.train(self, mode)
            if mode:
                if self.merge_weights and self.merged:
                    if self.r > 0:
                        self.weight.data -= T(self.lora_B @ self.lora_A) * self.scaling
                    self.merged = False
            else:
                if self.merge_weights and not self.merged:
                    if self.r > 0:
                        self.weight.data += T(self.lora_B @ self.lora_A) * self.scaling
                    self.merged = True

        def forward(self, x):
            def T(w):
                return w.transpose(0, 1) if self.fan_in_fan_out else w
            if self.r > 0 and not self.merged:
                result = F.linear(x, T(self.weight), bias=self.bias)
                result += (self.lora_dropout(x) @ self.lora_A.transpose(0, 1) @ self.lora_B.transpose(0, 1)) * \
                    self.scaling
                return result
            else:
                return F.linear(x, T(self.weight), bias=self.bias)

    def mark_only_lora_as_trainable(model, bias='none'):
        for n, p in model.named_parameters():
            if 'lora_' not in n:
                p.requires_grad = False

    def lora_state_dict(model, bias='none'):
        my_state_dict = model.state_dict()
        return {k: my_state_dict[k] for k in my_state_dict if 'lora_' in k}

    return Linear, mark_only_lora_as_trainable, lora_state_dict


def lora_values(model, seed=11):
    """The LoRA factors set from NumPy, B too (loralib starts it at zero), so both libraries start alike."""
    rng = np.random.default_rng(seed)
    return {n: (0.3 * rng.standard_normal(tuple(p.shape))).astype(np.float32)
            for n, p in model.named_parameters() if "lora_" in n}


def set_lora(m, model, values):
    with m.torch.no_grad():
        for n, p in model.named_parameters():
            if n in values:
                p.copy_(m.torch.from_numpy(values[n]))


def loralib_program(m, weights, steps=3):
    torch, nn = m.torch, m.nn
    Linear, mark_only_lora_as_trainable, lora_state_dict = loralib(m)
    model = load(m, make_llama(m), weights)
    for layer in model.layers:
        for name in ("q_proj", "v_proj"):
            old = getattr(layer.self_attn, name)
            new = Linear(old.in_features, old.out_features, r=2, lora_alpha=4, bias=False)
            new.weight.data.copy_(old.weight.data)
            setattr(layer.self_attn, name, new)
    mark_only_lora_as_trainable(model)
    set_lora(m, model, lora_values(model))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    optimizer = m.optim.AdamW(filter(lambda p: p.requires_grad, model.parameters()), lr=1e-2)
    ids, labels = (torch.tensor(a) for a in llama_batches())
    frozen_before = model.layers[0].self_attn.q_proj.weight.detach().clone()
    losses = []
    for step in range(steps):
        loss, _ = model(ids, labels=labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert model.layers[0].self_attn.q_proj.weight.grad is None
    assert torch.equal(model.layers[0].self_attn.q_proj.weight, frozen_before)
    _, unmerged = model(ids)
    model.eval()  # merges B @ A into the frozen weight
    merged_flags = [layer.self_attn.q_proj.merged for layer in model.layers]
    _, merged = model(ids)
    merged_weight = model.layers[0].self_attn.q_proj.weight.detach().clone()
    model.train()  # and takes it out again
    unmerged_weight = model.layers[0].self_attn.q_proj.weight.detach().clone()
    buffer = io.BytesIO()
    torch.save(lora_state_dict(model), buffer)
    buffer.seek(0)
    adapters = torch.load(buffer, weights_only=True)
    fresh = load(m, make_llama(m), weights)
    for layer in fresh.layers:
        for name in ("q_proj", "v_proj"):
            old = getattr(layer.self_attn, name)
            new = Linear(old.in_features, old.out_features, r=2, lora_alpha=4, bias=False)
            new.weight.data.copy_(old.weight.data)
            setattr(layer.self_attn, name, new)
    result = fresh.load_state_dict(adapters, strict=False)
    _, reloaded = fresh(ids)
    return (losses, trainable, unmerged, merged, merged_flags, merged_weight - unmerged_weight,
            sorted(adapters), len(result.missing_keys), list(result.unexpected_keys), reloaded)


def test_loralib_linear_in_llama(llama_weights):
    ours, _ = run_both(loralib_program, llama_weights, rtol=1e-4, atol=1e-5)
    (losses, trainable, unmerged, merged, merged_flags, delta, adapter_keys, n_missing, unexpected,
     reloaded) = ours
    assert losses[-1] < losses[0] and merged_flags == [True, True]
    assert trainable == adapter_keys and len(trainable) == 8 and unexpected == []
    np.testing.assert_allclose(merged, unmerged, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(reloaded, unmerged, rtol=1e-5, atol=1e-6)
    assert np.abs(delta).max() > 1e-3


def minlora(m):
    torch, nn = m.torch, m.nn
    parametrize = nn.utils.parametrize
    from functools import partial

    class LoRAParametrization(nn.Module):
        def __init__(self, fan_in, fan_out, fan_in_fan_out=False, rank=4, lora_dropout_p=0.0, lora_alpha=1):
            super().__init__()
            self.swap = (lambda x: (x[1], x[0])) if fan_in_fan_out else (lambda x: x)
            self.lora_A = nn.Parameter(torch.zeros(self.swap((rank, fan_in))))
            self.lora_B = nn.Parameter(torch.zeros(self.swap((fan_out, rank))))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.lora_alpha, self.rank = lora_alpha, rank
            self.scaling = lora_alpha / rank
            self.lora_dropout = nn.Dropout(p=lora_dropout_p) if lora_dropout_p > 0 else lambda x: x
            self.dropout_fn = self._dropout if lora_dropout_p > 0 else lambda x: x
            self.register_buffer("lora_dropout_mask", torch.ones(self.swap((1, fan_in)), dtype=self.lora_A.dtype))
            self.forward_fn = self.lora_forward

        def _dropout(self, A):
            return A * self.lora_dropout(self.lora_dropout_mask)

        def lora_forward(self, X):
            return X + torch.matmul(*self.swap((self.lora_B, self.dropout_fn(self.lora_A)))).view(X.shape) * \
                self.scaling

        def forward(self, X):
            return self.forward_fn(X)

        def disable_lora(self):
            self.forward_fn = lambda x: x

        def enable_lora(self):
            self.forward_fn = self.lora_forward

        @classmethod
        def from_linear(cls, layer, rank=4, lora_dropout_p=0.0, lora_alpha=1):
            fan_out, fan_in = layer.weight.shape
            return cls(fan_in, fan_out, fan_in_fan_out=False, rank=rank, lora_dropout_p=lora_dropout_p,
                       lora_alpha=lora_alpha)

    default_lora_config = {nn.Linear: {"weight": partial(LoRAParametrization.from_linear, rank=2, lora_alpha=2)}}

    def apply_lora(layer, register=True, merge=False, lora_config=default_lora_config):
        if register:
            if type(layer) in lora_config:
                for attr_name, parametrization in lora_config[type(layer)].items():
                    parametrize.register_parametrization(layer, attr_name, parametrization(layer))
        else:  # this will remove all parametrizations, use with caution
            if hasattr(layer, "parametrizations"):
                for attr_name in list(layer.parametrizations.keys()):
                    parametrize.remove_parametrizations(layer, attr_name, leave_parametrized=merge)

    def add_lora(model, lora_config=default_lora_config):
        model.apply(partial(apply_lora, lora_config=lora_config))

    def merge_lora(model):
        model.apply(partial(apply_lora, register=False, merge=True))

    def apply_to_lora(fn):
        def apply_fn(layer):
            if isinstance(layer, LoRAParametrization):
                fn(layer)
        return apply_fn

    disable_lora = lambda model: model.apply(apply_to_lora(lambda x: x.disable_lora()))
    enable_lora = lambda model: model.apply(apply_to_lora(lambda x: x.enable_lora()))

    def name_is_lora(name):
        return (len(name.split(".")) >= 4 and (name.split(".")[-4]) == "parametrizations"
                and name.split(".")[-1] in ["lora_A", "lora_B"])

    def get_lora_params(model):
        for n, p in model.named_parameters():
            if name_is_lora(n):
                yield p

    return add_lora, merge_lora, disable_lora, enable_lora, get_lora_params


def minlora_program(m, weights, steps=3):
    torch = m.torch
    add_lora, merge_lora, disable_lora, enable_lora, get_lora_params = minlora(m)
    model = load(m, make_llama(m), weights)
    ids, labels = (torch.tensor(a) for a in llama_batches())
    with torch.no_grad():
        _, base = model(ids)
    add_lora(model)
    set_lora(m, model, lora_values(model, seed=12))
    names = [n for n, _ in model.named_parameters() if "lora" in n]
    parameters = [{"params": list(get_lora_params(model))}]
    optimizer = m.optim.AdamW(parameters, lr=1e-2)
    losses = []
    for step in range(steps):
        loss, _ = model(ids, labels=labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        _, adapted = model(ids)
        disable_lora(model)
        _, disabled = model(ids)
        enable_lora(model)
        merge_lora(model)
        _, merged = model(ids)
    return (losses, names, base, adapted, disabled, merged, sorted(model.state_dict()) == sorted(weights),
            type(model.lm_head).__name__)


def test_minlora_parametrization_in_llama(llama_weights):
    ours, _ = run_both(minlora_program, llama_weights, rtol=1e-4, atol=1e-5)
    losses, names, base, adapted, disabled, merged, same_keys, head_type = ours
    assert losses[-1] < losses[0] and len(names) == 2 * (7 * L + 1)
    np.testing.assert_allclose(disabled, base, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(merged, adapted, rtol=1e-4, atol=1e-5)
    assert same_keys and head_type == "Linear"


# ----------------------------------------------------------------------------------------------
# Weight quantization as LLM fine-tuning code writes it in plain PyTorch: absmax int8 rows, QLoRA's NF4 code
# book over blocks (argmin against the code, two 4-bit indices packed in a uint8 by shifts and masks, unpacked
# and looked up), and quantization-aware training through a straight-through estimator (x + (q - x).detach())
# ----------------------------------------------------------------------------------------------

NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020725250244,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]


def quantization_program(m, weights, steps=4):
    torch, nn, F = m.torch, m.nn, m.F

    def quantize_int8(w):
        scale = w.abs().amax(dim=-1, keepdim=True) / 127
        return torch.round(w / scale).to(torch.int8), scale

    def quantize_nf4(w, blocksize=8):
        blocks = w.reshape(-1, blocksize)
        absmax = blocks.abs().max(dim=-1, keepdim=True).values
        code = torch.tensor(NF4)
        idx = (blocks.div(absmax).unsqueeze(-1) - code).abs().argmin(dim=-1).to(torch.uint8)
        packed = (idx[:, ::2] << 4) | idx[:, 1::2]
        return packed, absmax

    def dequantize_nf4(packed, absmax, shape):
        idx = torch.stack([packed >> 4, packed & 0xF], dim=-1).view(packed.shape[0], -1)
        return (torch.tensor(NF4)[idx.long()] * absmax).view(shape)

    class FakeQuantLinear(nn.Linear):
        """4-bit weights in the forward pass, full-precision gradients (the straight-through estimator)."""

        def forward(self, x):
            w = self.weight
            scale = w.detach().abs().amax(dim=1, keepdim=True) / 7
            w_q = w + ((w / scale).round().clamp(-8, 7) * scale - w).detach()
            return F.linear(x, w_q, self.bias)

    model = nn.Sequential(FakeQuantLinear(8, 16), nn.GELU(), FakeQuantLinear(16, 4))
    load(m, model, weights)
    rng = np.random.default_rng(13)
    x = torch.tensor(rng.standard_normal((32, 8)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 4, 32))
    optimizer = m.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    losses = []
    for step in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    w = model[0].weight.detach()
    q, scale = quantize_int8(w)
    packed, absmax = quantize_nf4(w)
    nf4 = dequantize_nf4(packed, absmax, w.shape)
    return losses, model[0].weight.grad, q, q.float() * scale, packed, nf4, w


def test_weight_quantization_int8_nf4_and_qat():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(8, 16), m.nn.GELU(), m.nn.Linear(16, 4)))
    ours, _ = run_both(quantization_program, weights, rtol=1e-5, atol=1e-6)
    losses, grad, q, int8, packed, nf4, w = ours
    assert q.dtype == np.int8 and packed.dtype == np.uint8 and packed.shape == (16, 4)
    assert losses[-1] < losses[0]
    row_max = np.abs(w).max(axis=1, keepdims=True)
    assert np.all(np.abs(int8 - w) <= row_max / 254 + 1e-6)  # within half a step of each row's scale
    block_max = np.abs(w).reshape(-1, 8).max(axis=1, keepdims=True)
    assert np.all(np.abs(nf4 - w).reshape(-1, 8) <= 0.17 * block_max)  # within half NF4's widest gap
