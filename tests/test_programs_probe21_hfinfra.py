# ruff: noqa: B007, B008, B023, E702, E731, F841, UP004, UP008  (the programs are kept as their authors wrote them)
"""The model infrastructure of Hugging Face transformers-style code, written in plain PyTorch (see
tests/pytorch_programs.py): each program runs on chainrule and on PyTorch and the results must agree; what can
be is also checked by hand, so that the tests assert something where PyTorch is not installed.

A ``PreTrainedModel``-like base: ``_init_weights`` by ``module.apply`` (a zeroed padding row), tied input and
output embeddings, ``num_parameters(exclude_embeddings=, only_trainable=)``, ``get_memory_footprint``, frozen
parameters, ``resize_token_embeddings`` (``pad_to_multiple_of``, mean resizing through ``linalg.eigvals``, the
output bias padded by ``F.pad``, re-tied). Checkpoint loading: an old checkpoint (``model.`` prefix, ``gamma``/
``beta``, a fused qkv split in an overridden ``_load_from_state_dict``, a tied head left out) saved in two shards
by ``torch.save`` and merged from ``torch.load(weights_only=True)``, loaded with ``strict=False`` and a
``register_load_state_dict_post_hook`` that forgives the tied key, then ``assign=True``; fine-tuning from a
checkpoint with another head as YOLACT loads it (``try: load_state_dict except RuntimeError``: the tensors that
fitted are loaded); accelerate's ``init_empty_weights`` (``nn.Module.register_parameter`` wrapped to put every
parameter on the meta device) and ``set_module_tensor_to_device``; ``torch.load(mmap=True)`` into a meta model;
transformers' ``_load_state_dict_into_model`` calling ``_load_from_state_dict`` by hand; a ``_version`` bump whose
loader renames old keys; shared tensors grouped by ``untyped_storage().data_ptr()`` as safetensors saving does;
PEFT-style LoRA injection by ``get_submodule``/``setattr`` with ``ModulesToSaveWrapper`` and ``__getattr__``
forwarding, merged; training only new token embeddings through a gradient hook, ``max_norm`` renorming.
``from_pretrained(low_cpu_mem_usage=True)``: the model built under ``init_empty_weights``, filled by
``set_module_tensor_to_device`` from a headless checkpoint, its missing head moved off the meta device by
``torch.empty`` and initialised, re-tied.
Attention masks: extended padding masks ``(1 - mask) * finfo.min`` in float16 and float32, ``_expand_mask`` and
``_make_causal_mask`` with a past, a sliding window, the 4-D mask from ``cache_position`` (``*=`` by a boolean
tensor, which leaves -0.0), position ids from ``cumsum`` under left padding, SDPA with boolean, float and
``is_causal`` masks, a decoder passing its padding mask with ``is_causal=True``, a MultiheadAttention
subclass canonicalising its masks by ``F._canonical_mask``. Generation: the watermarking
processor (``randperm`` on a seeded ``Generator``), repetition penalty, temperature, top-k, top-p, epsilon and
eta warpers, ``multinomial``; beam search in its legacy form
(``topk`` over flattened beams, ``index_select`` of a KV cache) and its vectorised form (``take_along_dim``
gathers); contrastive search's degeneration penalty; ``DynamicCache``'s ``cat``, reorder, crop and
``repeat_interleave``; stopping criteria by ``isin``. Gradient checkpointing of Hugging Face layers returning
tuples with ``None``, under both variants, with dropout, frozen embeddings and ``enable_input_require_grads``'
forward hook, against the unchecked model. T5's ``_shift_right`` behind transformers' ``is_torch_fx_proxy``
(``torch.fx.Proxy``, which nothing is an instance of here). fairseq's checkpoint averaging, loading through a
``map_location`` that calls ``torch.serialization.default_restore_location``. An embedding's Parameter saved
and assigned back to a new model (a strict xfail: it loads as a Tensor); a bitsandbytes-style Parameter subclass rebuilt
from its ``__dict__`` as accelerate moves it (``Tensor._make_subclass`` makes no view, so that ``__dict__`` is the
subclass's own)."""

import collections
import copy
import functools
import importlib
import io
import math
import os
import tempfile
import warnings

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# A PreTrainedModel-like base
# ----------------------------------------------------------------------------------------------


def pretrained_base(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Config:
        vocab_size = 11; hidden_size = 8; num_layers = 2; initializer_range = 0.02; tie_word_embeddings = True
        pad_token_id = 0

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.ln = nn.LayerNorm(c.hidden_size)
            self.fc = nn.Linear(c.hidden_size, c.hidden_size)
        def forward(self, x):
            return x + self.fc(self.ln(x)).tanh()

    class PreTrainedModel(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
        def post_init(self):
            self.apply(self._init_weights)
            self.tie_weights()
        def _init_weights(self, module):
            std = self.config.initializer_range
            if isinstance(module, nn.Linear):
                module.weight.data.normal_(mean=0.0, std=std)
                if module.bias is not None:
                    module.bias.data.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.data.normal_(mean=0.0, std=std)
                if module.padding_idx is not None:
                    module.weight.data[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                module.bias.data.zero_()
                module.weight.data.fill_(1.0)
        def get_output_embeddings(self):
            return None
        def tie_weights(self):
            out = self.get_output_embeddings()
            if out is not None and self.config.tie_word_embeddings:
                self._tie_or_clone_weights(out, self.get_input_embeddings())
        def _tie_or_clone_weights(self, output_embeddings, input_embeddings):
            output_embeddings.weight = input_embeddings.weight
            if getattr(output_embeddings, "bias", None) is not None:
                output_embeddings.bias.data = nn.functional.pad(
                    output_embeddings.bias.data,
                    (0, output_embeddings.weight.shape[0] - output_embeddings.bias.shape[0]),
                    "constant", 0)
            if hasattr(output_embeddings, "out_features") and hasattr(input_embeddings, "num_embeddings"):
                output_embeddings.out_features = input_embeddings.num_embeddings
        def num_parameters(self, only_trainable=False, exclude_embeddings=False):
            if exclude_embeddings:
                embedding_param_names = [f"{name}.weight" for name, module_type in self.named_modules()
                                         if isinstance(module_type, nn.Embedding)]
                total_parameters = [p for name, p in self.named_parameters() if name not in embedding_param_names]
            else:
                total_parameters = list(self.parameters())
            return sum(p.numel() for p in total_parameters if p.requires_grad or not only_trainable)
        def get_memory_footprint(self, return_buffers=True):
            mem = sum([param.nelement() * param.element_size() for param in self.parameters()])
            if return_buffers:
                mem += sum([buf.nelement() * buf.element_size() for buf in self.buffers()])
            return mem
        @property
        def dtype(self):
            return next(self.parameters()).dtype
        def _get_resized_embeddings(self, old_embeddings, new_num_tokens=None, pad_to_multiple_of=None,
                                    mean_resizing=True):
            if pad_to_multiple_of is not None:
                new_num_tokens = ((new_num_tokens + pad_to_multiple_of - 1) // pad_to_multiple_of) * pad_to_multiple_of
            old_num_tokens, old_embedding_dim = old_embeddings.weight.size()
            if old_num_tokens == new_num_tokens:
                return old_embeddings
            new_embeddings = nn.Embedding(new_num_tokens, old_embedding_dim, device=old_embeddings.weight.device,
                                          dtype=old_embeddings.weight.dtype)
            if new_num_tokens > old_num_tokens and not mean_resizing:
                self._init_weights(new_embeddings)
            elif new_num_tokens > old_num_tokens and mean_resizing:
                added_num_tokens = new_num_tokens - old_num_tokens
                self._init_added_embeddings_weights_with_mean(old_embeddings, new_embeddings, old_embedding_dim,
                                                              old_num_tokens, added_num_tokens)
            n = min(old_num_tokens, new_num_tokens)
            new_embeddings.weight.data[:n, :] = old_embeddings.weight.data[:n, :]
            old_embeddings.weight.data = new_embeddings.weight.data
            old_embeddings.num_embeddings = new_embeddings.weight.data.shape[0]
            if old_embeddings.padding_idx is not None and (new_num_tokens - 1) < old_embeddings.padding_idx:
                old_embeddings.padding_idx = None
            return old_embeddings
        def _init_added_embeddings_weights_with_mean(self, old_embeddings, new_embeddings, old_embedding_dim,
                                                     old_num_tokens, added_num_tokens):
            old_embeddings_weight = old_embeddings.weight.data.to(torch.float32)
            mean_embeddings = torch.mean(old_embeddings_weight, axis=0)
            old_centered_embeddings = old_embeddings_weight - mean_embeddings
            covariance = old_centered_embeddings.T @ old_centered_embeddings / old_num_tokens
            epsilon = 1e-9
            is_covariance_psd = self._check_psd(covariance, epsilon)  # our variant
            if is_covariance_psd:
                distribution = torch.distributions.multivariate_normal.MultivariateNormal(
                    mean_embeddings, covariance_matrix=epsilon * covariance)
                new_embeddings.weight.data[-1 * added_num_tokens:, :] = distribution.sample(
                    sample_shape=(added_num_tokens,)).to(old_embeddings.weight.dtype)
            else:
                new_embeddings.weight.data[-1 * added_num_tokens:, :] = (
                    mean_embeddings[None, :].repeat(added_num_tokens, 1).to(old_embeddings.weight.dtype))
        def _check_psd(self, covariance, epsilon):
            eigenvalues = torch.linalg.eigvals(covariance)
            return bool((covariance == covariance.T).all() and not torch.is_complex(eigenvalues)
                        and (eigenvalues > 0).all())
        def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
            old = self.get_input_embeddings()
            new = self._get_resized_embeddings(old, new_num_tokens, pad_to_multiple_of, mean_resizing)
            self.set_input_embeddings(new)
            if self.get_output_embeddings() is not None and not self.config.tie_word_embeddings:
                pass
            self.config.vocab_size = new.weight.shape[0]
            self.tie_weights()
            return new

    class LM(PreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
            self.layers = nn.ModuleList([Block(config) for _ in range(config.num_layers)])
            self.norm = nn.LayerNorm(config.hidden_size)
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=True)
            self.register_buffer("position_ids", torch.arange(16).expand((1, -1)), persistent=False)
            self.post_init()
        def get_input_embeddings(self):
            return self.embed_tokens
        def set_input_embeddings(self, value):
            self.embed_tokens = value
        def get_output_embeddings(self):
            return self.lm_head
        def forward(self, ids, labels=None):
            h = self.embed_tokens(ids)
            for layer in self.layers:
                h = layer(h)
            logits = self.lm_head(self.norm(h))
            loss = None
            if labels is not None:
                shift_logits = logits[..., :-1, :].contiguous()
                shift_labels = labels[..., 1:].contiguous()
                loss = F.cross_entropy(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1),
                                       ignore_index=-100)
            return loss, logits

    torch.manual_seed(0)
    model = LM(Config())
    out = {}
    out["tied"] = model.lm_head.weight is model.embed_tokens.weight
    out["pad_row"] = model.embed_tokens.weight[0].detach().clone()
    out["n_params"] = model.num_parameters()
    out["n_no_emb"] = model.num_parameters(exclude_embeddings=True)
    out["names"] = [n for n, _ in model.named_parameters()]
    out["names_dup"] = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    out["footprint"] = model.get_memory_footprint()
    out["sd_keys"] = list(model.state_dict().keys())
    out["dtype"] = str(model.dtype).split(".")[-1]
    # freeze embeddings and first layer
    model.get_input_embeddings().requires_grad_(False)
    for p in model.layers[0].parameters():
        p.requires_grad = False
    out["trainable"] = model.num_parameters(only_trainable=True)
    ids = torch.tensor([[3, 4, 5, 6, 0], [7, 8, 9, 10, 2]])
    labels = ids.masked_fill(ids == 0, -100)
    loss, logits = model(ids, labels)
    loss.backward()
    out["loss"] = loss
    out["grads"] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    out["grad_none"] = [n for n, p in model.named_parameters() if p.grad is None]
    # resize
    model.get_input_embeddings().requires_grad_(True)
    torch.manual_seed(1)
    new = model.resize_token_embeddings(14, pad_to_multiple_of=8)
    out["new_shape"] = tuple(new.weight.shape)
    out["still_tied"] = model.lm_head.weight is model.embed_tokens.weight
    out["bias_shape"] = tuple(model.lm_head.bias.shape)
    out["out_features"] = model.lm_head.out_features
    out["num_embeddings"] = model.embed_tokens.num_embeddings
    out["new_rows_close_to_mean"] = (new.weight[11:] - new.weight[:11].mean(0)).abs().max().item() < 1e-3
    out["old_rows"] = new.weight[:11].detach().clone()
    loss2, logits2 = model(ids, labels)
    out["logits2"] = logits2
    out["loss2"] = loss2
    model.resize_token_embeddings(12, mean_resizing=False)
    out["shrunk"] = tuple(model.lm_head.weight.shape), model.lm_head.bias.shape[0]
    return out



def test_pretrained_model_base_ties_counts_freezes_and_resizes():
    ours, _ = run_both(pretrained_base)
    V, D, L = 11, 8, 2
    per_layer = 2 * D + D * D + D
    assert ours["tied"] and ours["still_tied"]
    np.testing.assert_array_equal(ours["pad_row"], np.zeros(D))
    assert ours["n_params"] == V * D + L * per_layer + 2 * D + V  # the tied head's weight counted once
    assert ours["n_no_emb"] == ours["n_params"] - V * D
    assert ours["names"] == ["embed_tokens.weight"] + [f"layers.{i}.{n}" for i in range(L) for n in
                             ("ln.weight", "ln.bias", "fc.weight", "fc.bias")] + ["norm.weight", "norm.bias",
                                                                                  "lm_head.bias"]
    assert ours["names_dup"] == ours["names"][:-1] + ["lm_head.weight", "lm_head.bias"]
    assert ours["footprint"] == 4 * ours["n_params"] + 8 * 16  # float32 parameters, the int64 position ids
    assert "position_ids" not in ours["sd_keys"] and "lm_head.weight" in ours["sd_keys"]
    assert ours["trainable"] == ours["n_params"] - V * D - per_layer
    assert ours["grad_none"] == ["embed_tokens.weight"] + [f"layers.0.{n}" for n in
                                                           ("ln.weight", "ln.bias", "fc.weight", "fc.bias")]
    assert ours["new_shape"] == (16, D) and ours["bias_shape"] == (16,) and ours["out_features"] == 16
    assert ours["num_embeddings"] == 16 and ours["new_rows_close_to_mean"]
    assert ours["shrunk"] == ((12, D), 12)
    assert np.isfinite(ours["logits2"]).all() and ours["logits2"].shape == (2, 5, 16)


# ----------------------------------------------------------------------------------------------
# Loading checkpoints
# ----------------------------------------------------------------------------------------------


def loading(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Norm(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))
            self.bias = nn.Parameter(torch.zeros(d))
            self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d)), persistent=False)
        def forward(self, x):
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias)

    class Attn(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.q_proj = nn.Linear(d, d); self.k_proj = nn.Linear(d, d); self.v_proj = nn.Linear(d, d)
        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                                  unexpected_keys, error_msgs):
            # old checkpoints hold one fused qkv matrix
            fused = prefix + "qkv.weight"
            if fused in state_dict:
                q, k, v = state_dict.pop(fused).chunk(3, dim=0)
                state_dict[prefix + "q_proj.weight"] = q
                state_dict[prefix + "k_proj.weight"] = k
                state_dict[prefix + "v_proj.weight"] = v
                qb, kb, vb = state_dict.pop(prefix + "qkv.bias").chunk(3)
                state_dict[prefix + "q_proj.bias"] = qb
                state_dict[prefix + "k_proj.bias"] = kb
                state_dict[prefix + "v_proj.bias"] = vb
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                          unexpected_keys, error_msgs)

    class Model(nn.Module):
        def __init__(self, d=6):
            super().__init__()
            self.embed = nn.Embedding(10, d)
            self.attn = Attn(d)
            self.norm = Norm(d)
            self.head = nn.Linear(d, 10, bias=False)
            self.head.weight = self.embed.weight
        def forward(self, ids):
            x = self.embed(ids)
            x = x + self.attn.q_proj(x) * self.attn.k_proj(x).sigmoid() + self.attn.v_proj(x)
            return self.head(self.norm(x))

    torch.manual_seed(0)
    src = Model()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    out = {}
    sd = src.state_dict()
    out["keys"] = list(sd)
    out["persistent"] = "norm.inv_freq" in sd
    # old-style checkpoint: "model." prefix, gamma/beta, fused qkv, tied head omitted
    old = collections.OrderedDict()
    for k, v in sd.items():
        if k.startswith("attn.") and "_proj" in k:
            continue
        if k == "head.weight":
            continue
        k = k.replace("norm.weight", "norm.gamma").replace("norm.bias", "norm.beta")
        old["model." + k] = v.clone()
    old["model.attn.qkv.weight"] = torch.cat([sd["attn.q_proj.weight"], sd["attn.k_proj.weight"],
                                              sd["attn.v_proj.weight"]])
    old["model.attn.qkv.bias"] = torch.cat([sd["attn.q_proj.bias"], sd["attn.k_proj.bias"], sd["attn.v_proj.bias"]])
    old["model.extra.counter"] = torch.tensor(3)
    # save as two shards with an index, through torch.save / torch.load(weights_only=True)
    keys = list(old)
    shards = [collections.OrderedDict((k, old[k]) for k in keys[:4]),
              collections.OrderedDict((k, old[k]) for k in keys[4:])]
    index = {"weight_map": {}}
    blobs = []
    for i, shard in enumerate(shards):
        buf = io.BytesIO()
        torch.save(shard, buf)
        blobs.append(buf.getvalue())
        for k in shard:
            index["weight_map"][k] = i

    def fix_key(key):
        if key.startswith("model."):
            key = key[len("model."):]
        if "gamma" in key:
            key = key.replace("gamma", "weight")
        if "beta" in key:
            key = key.replace("beta", "bias")
        return key

    merged = {}
    for i in sorted(set(index["weight_map"].values())):
        shard = torch.load(io.BytesIO(blobs[i]), map_location="cpu", weights_only=True)
        merged.update({fix_key(k): v for k, v in shard.items()})
    out["merged_keys"] = sorted(merged)

    dst = Model()
    calls = []
    def post_hook(module, incompatible_keys):
        calls.append((list(incompatible_keys.missing_keys), list(incompatible_keys.unexpected_keys)))
        # tied weights are never in a checkpoint: forgive them
        if "head.weight" in incompatible_keys.missing_keys:
            incompatible_keys.missing_keys.remove("head.weight")
    dst.register_load_state_dict_post_hook(post_hook)
    result = dst.load_state_dict(merged, strict=False)
    out["result"] = (result.missing_keys, result.unexpected_keys)
    out["result_type"] = type(result).__name__
    out["result_fields"] = result._fields
    out["repr"] = repr(result)
    out["calls"] = calls
    out["still_tied"] = dst.head.weight is dst.embed.weight
    ids = torch.tensor([[1, 2, 3], [4, 5, 9]])
    out["same_logits"] = torch.equal(dst(ids), src(ids))
    out["logits"] = dst(ids)
    # strict load now errors on the unexpected key
    try:
        Model().load_state_dict(merged)
    except RuntimeError as e:
        out["strict_error"] = str(e).splitlines()[0]
    # inv_freq: non-persistent buffer survives loading and is not in the state dict
    out["inv_freq"] = dst.norm.inv_freq
    # assign=True takes the checkpoint's tensors
    fresh = Model()
    shard0 = torch.load(io.BytesIO(blobs[0]), weights_only=True)
    src_sd = {k: v.clone() for k, v in src.state_dict().items()}
    r = fresh.load_state_dict(src_sd, assign=True)
    out["assign_is"] = fresh.embed.weight.data_ptr() == src_sd["embed.weight"].data_ptr()
    out["assign_param"] = type(fresh.embed.weight).__name__, fresh.embed.weight.requires_grad
    out["assign_tied"] = fresh.head.weight is fresh.embed.weight
    out["assign_r"] = (r.missing_keys, r.unexpected_keys)
    return out



def test_old_checkpoint_remapped_from_shards_and_loaded():
    ours, _ = run_both(loading)
    assert ours["merged_keys"] == ["attn.qkv.bias", "attn.qkv.weight", "embed.weight", "extra.counter",
                                   "norm.bias", "norm.weight"]
    assert ours["calls"] == [(["head.weight"], ["extra.counter"])]
    assert ours["result"] == ([], ["extra.counter"]) and ours["result_type"] == "_IncompatibleKeys"
    assert ours["result_fields"] == ("missing_keys", "unexpected_keys")
    assert ours["repr"] == "_IncompatibleKeys(missing_keys=[], unexpected_keys=['extra.counter'])"
    assert ours["still_tied"] and ours["same_logits"] and not ours["persistent"]
    assert ours["strict_error"] == "Error(s) in loading state_dict for Model:"
    np.testing.assert_allclose(ours["inv_freq"], 1.0 / 10000 ** (np.arange(0, 6, 2) / 6), rtol=1e-6)
    assert ours["assign_is"] and ours["assign_param"] == ("Parameter", True)
    assert not ours["assign_tied"]  # assign puts the checkpoint's two tensors in place of the one shared
    assert ours["assign_r"] == ([], [])


def finetune_from_checkpoint(m, capture):
    """A detector fine-tuned on fewer classes from a checkpoint, loaded as YOLACT's ``load_weights`` loads it."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class Net(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
            self.head = nn.Linear(4, num_classes)

        def forward(self, x):
            return self.head(self.backbone(x).mean((2, 3)))

        def load_weights(self, path):
            state_dict = torch.load(path)
            for key in list(state_dict.keys()):
                if key.startswith("module."):
                    state_dict[key[7:]] = state_dict.pop(key)
            try:
                self.load_state_dict(state_dict)
            except RuntimeError as e:
                print('Ignoring "' + str(e) + '"')

    torch.manual_seed(0)
    pretrained = Net(num_classes=5)
    with torch.no_grad():
        for p in pretrained.parameters():
            p.add_(0.5)
        pretrained.backbone[1].running_mean.fill_(0.25)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "yolact_base.pth")
        torch.save({"module." + k: v for k, v in pretrained.state_dict().items()}, path)
        torch.manual_seed(1)
        model = Net(num_classes=3)
        model.load_weights(path)
    loaded = [torch.equal(a, b) for a, b in zip(model.backbone.state_dict().values(),
                                                  pretrained.backbone.state_dict().values())]
    x = torch.linspace(-1, 1, 2 * 3 * 5 * 5).reshape(2, 3, 5, 5)
    y = torch.tensor([0, 2])
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"loaded": loaded, "head_kept": model.head.weight.shape[0], "losses": losses,
            "backbone": model.backbone[0].weight, "running_mean": model.backbone[1].running_mean,
            "printed": capture()}


def test_finetuning_from_a_checkpoint_with_another_head(capsys):
    def capture():
        return capsys.readouterr().out.splitlines()[0][:60]

    ours, _ = run_both(finetune_from_checkpoint, capture)
    assert ours["loaded"] == [True] * 7  # weight, bias, BatchNorm's five: all there before the first step
    assert ours["head_kept"] == 3
    assert ours["printed"] == 'Ignoring "Error(s) in loading state_dict for Net:'
    assert ours["losses"][-1] < ours["losses"][0]


def init_empty_weights(m):
    torch, nn = m.torch, m.nn
    import contextlib
    @contextlib.contextmanager
    def init_on_device(device, include_buffers=False):
        old_register_parameter = nn.Module.register_parameter
        if include_buffers:
            old_register_buffer = nn.Module.register_buffer
        def register_empty_parameter(module, name, param):
            old_register_parameter(module, name, param)
            if param is not None:
                param_cls = type(module._parameters[name])
                kwargs = module._parameters[name].__dict__
                kwargs["requires_grad"] = param.requires_grad
                module._parameters[name] = param_cls(module._parameters[name].to(device), **kwargs)
        def register_empty_buffer(module, name, buffer, persistent=True):
            old_register_buffer(module, name, buffer, persistent=persistent)
            if buffer is not None:
                module._buffers[name] = module._buffers[name].to(device)
        try:
            nn.Module.register_parameter = register_empty_parameter
            if include_buffers:
                nn.Module.register_buffer = register_empty_buffer
            yield
        finally:
            nn.Module.register_parameter = old_register_parameter
            if include_buffers:
                nn.Module.register_buffer = old_register_buffer
    with init_on_device(torch.device("meta"), include_buffers=True):
        model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    devs = [str(p.device) for p in model.parameters()] + [str(b.device) for b in model.buffers()]
    types = [type(p).__name__ for p in model.parameters()]
    # set_module_tensor_to_device
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    for name, value in ref.state_dict().items():
        module_name, _, tensor_name = name.rpartition(".")
        module = model.get_submodule(module_name)
        if tensor_name in module._parameters:
            old_value = module._parameters[tensor_name]
            param_cls = type(old_value)
            module._parameters[tensor_name] = param_cls(value.to("cpu"), requires_grad=old_value.requires_grad)
        else:
            module._buffers[tensor_name] = value.clone()
    model.eval()
    x = torch.arange(6.0).view(2, 3)
    return devs, types, model(x), [str(p.device) for p in model.parameters()], model[1].num_batches_tracked



def test_init_empty_weights_and_set_module_tensor_to_device():
    ours, _ = run_both(init_empty_weights)
    devices, types, out, after, tracked = ours
    assert devices == ["meta"] * 9 and types == ["Parameter"] * 6 and after == ["cpu"] * 6
    assert out.shape == (2, 2) and np.isfinite(out).all() and tracked == 0


def mmap_load(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "pytorch_model.bin")
        torch.save(lin.state_dict(), path)
        sd = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
        meta_lin = nn.Linear(4, 3, device="meta")
        r = meta_lin.load_state_dict(sd, assign=True)
        out = meta_lin(torch.ones(2, 4))
        dev = str(meta_lin.weight.device)
        del sd
    return out, dev, r.missing_keys



def test_mmap_loaded_checkpoint_assigned_into_a_meta_model():
    (out, device, missing), _ = run_both(mmap_load)
    assert device == "cpu" and missing == [] and out.shape == (2, 3)



def hf_manual_load(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    src = nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3), nn.Sequential(nn.Linear(3, 2)))
    state_dict = src.state_dict()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3), nn.Sequential(nn.Linear(3, 2)))
    metadata = getattr(state_dict, "_metadata", None)
    state_dict = state_dict.copy()
    if metadata is not None:
        state_dict._metadata = metadata
    error_msgs = []
    state_dict["2.0.weight"] = torch.zeros(5, 5)
    def load(module, state_dict, prefix="", assign_to_params_buffers=False):
        local_metadata = {} if metadata is None else metadata.get(prefix[:-1], {})
        local_metadata["assign_to_params_buffers"] = assign_to_params_buffers
        args = (state_dict, prefix, local_metadata, True, [], [], error_msgs)
        if len([key for key in state_dict if key.startswith(prefix)]) > 0:
            module._load_from_state_dict(*args)
        for name, child in module._modules.items():
            if child is not None:
                load(child, state_dict, prefix + name + ".", assign_to_params_buffers)
    load(model, state_dict)
    error_msgs = [e.replace("torch.Size", "Size") for e in error_msgs]  # (the libraries name Size apart)
    return (error_msgs, model[0].weight, model[2][0].bias, model[2][0].weight, sorted(metadata),
            metadata[""], metadata["1"], type(state_dict).__name__)

def versioned(m):
    torch, nn = m.torch, m.nn
    class Block(nn.Module):
        _version = 2
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(2))
        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                  error_msgs):
            version = local_metadata.get("version", None)
            if version is None or version < 2:
                old = prefix + "gamma"
                if old in state_dict:
                    state_dict[prefix + "scale"] = state_dict.pop(old)
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                          error_msgs)
    model = nn.Sequential(Block(), Block())
    sd = model.state_dict()
    meta = {k: dict(v) for k, v in sd._metadata.items()}
    old = collections.OrderedDict({"0.gamma": torch.full((2,), 3.0), "1.scale": torch.full((2,), 4.0)})
    old._metadata = {"0": {"version": 1}, "1": {"version": 2}}
    r = model.load_state_dict(old)
    return meta, repr(r), model[0].scale, model[1].scale

def shared_names(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    big = torch.zeros(4, 6)
    emb = nn.Embedding(4, 6); head = nn.Linear(6, 4, bias=False); head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head})
    model.register_buffer("part", big[1:3])
    model.register_buffer("whole", big)
    sd = model.state_dict()
    def storage_ptr(tensor):
        return tensor.untyped_storage().data_ptr()
    def _end_ptr(tensor):
        if tensor.nelement():
            stop = tensor.view(-1)[-1].data_ptr() + tensor.element_size()
        else:
            stop = tensor.data_ptr()
        return stop
    def storage_size(tensor):
        return tensor.untyped_storage().nbytes()
    def _find_shared_tensors(state_dict):
        tensors = collections.defaultdict(set)
        for k, v in state_dict.items():
            if v.device != torch.device("meta") and storage_ptr(v) != 0 and storage_size(v) != 0:
                tensors[(v.device, storage_ptr(v), storage_size(v))].add(k)
        return sorted(sorted(names) for names in tensors.values())
    def _find_disjoint(groups, state_dict):
        shared, disjoint = [], set()
        for names in groups:
            if len(names) < 2:
                continue
            areas = sorted((state_dict[n].data_ptr(), _end_ptr(state_dict[n]), n) for n in names)
            _, last_stop, last_name = areas[0]
            ok = True
            for start, stop, name in areas[1:]:
                if start < last_stop:
                    ok = False
                    break
                last_stop = stop
            if ok:
                disjoint |= set(names)
            else:
                shared.append(names)
        return shared, sorted(disjoint)
    groups = _find_shared_tensors(sd)
    offsets = (sd["part"].data_ptr() - sd["whole"].data_ptr(), _end_ptr(sd["part"]) - sd["whole"].data_ptr(),
               storage_size(sd["part"]), sd["part"].storage_offset(), big.t()[1].data_ptr() - big.data_ptr())
    return groups, _find_disjoint(groups, sd), offsets

def peft_like(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    class Base(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(7, 4)
            self.q = nn.Linear(4, 4)
            self.v = nn.Linear(4, 4)
            self.classifier = nn.Linear(4, 2)
        def forward(self, ids):
            h = self.embed(ids)
            h = h + self.q(h).tanh() * self.v(h)
            return self.classifier(h.mean(1))
    class LoraLinear(nn.Module):
        def __init__(self, base, r=2, alpha=4):
            super().__init__()
            self.base_layer = base
            self.lora_A = nn.ModuleDict({"default": nn.Linear(base.in_features, r, bias=False)})
            self.lora_B = nn.ModuleDict({"default": nn.Linear(r, base.out_features, bias=False)})
            self.scaling = {"default": alpha / r}
            nn.init.kaiming_uniform_(self.lora_A["default"].weight, a=math.sqrt(5))
            nn.init.normal_(self.lora_B["default"].weight, std=0.1)
        def forward(self, x):
            return self.base_layer(x) + self.lora_B["default"](self.lora_A["default"](x)) * self.scaling["default"]
    class ModulesToSaveWrapper(nn.Module):
        def __init__(self, module_to_save):
            super().__init__()
            self.original_module = module_to_save
            self.modules_to_save = nn.ModuleDict({"default": copy.deepcopy(module_to_save)})
            self.original_module.requires_grad_(False)
        def forward(self, *args, **kwargs):
            return self.modules_to_save["default"](*args, **kwargs)
        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.modules_to_save["default"], name)
    class PeftModel(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.base_model = model
        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                if name == "base_model":
                    raise
                return getattr(self.base_model, name)
        def forward(self, *a, **k):
            return self.base_model(*a, **k)
    base = Base()
    base_head = base.classifier.weight.detach().clone()
    for n, p in base.named_parameters():
        p.requires_grad = False
    for name in ["q", "v"]:
        parent_name, _, child_name = name.rpartition(".")
        parent = base.get_submodule(parent_name)
        target = getattr(parent, child_name)
        setattr(parent, child_name, LoraLinear(target))
    base.classifier = ModulesToSaveWrapper(base.classifier)
    model = PeftModel(base)
    out = {}
    out["trainable"] = [n for n, p in model.named_parameters() if p.requires_grad]
    out["all"] = sum(p.numel() for p in model.parameters())
    out["fwd_attr"] = model.classifier.out_features  # through both __getattr__
    out["embed_via"] = model.embed.num_embeddings
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        loss = F.cross_entropy(model(ids), torch.tensor([0, 1]))
        loss.backward()
        opt.step()
    out["loss"] = loss
    sd = model.state_dict()
    peft_sd = {k: v for k, v in sd.items() if "lora_" in k or "modules_to_save" in k}
    out["peft_keys"] = sorted(peft_sd)
    fresh_base = Base()
    # merge
    for name in ["q", "v"]:
        lora = getattr(model.base_model, name)
        delta = lora.lora_B["default"].weight @ lora.lora_A["default"].weight * lora.scaling["default"]
        merged = nn.Linear(4, 4)
        merged.weight.data = lora.base_layer.weight.data + delta
        merged.bias.data = lora.base_layer.bias.data.clone()
        setattr(fresh_base, name, merged)
    fresh_base.embed.weight.data.copy_(model.base_model.embed.weight.data)
    fresh_base.classifier.load_state_dict(model.base_model.classifier.modules_to_save["default"].state_dict())
    out["merged_same"] = (fresh_base(ids) - model(ids)).abs().max()
    out["original_head"] = model.base_model.classifier.original_module.weight
    out["base_head"] = base_head
    return out

def embedding_tricks(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    w = torch.randn(6, 3)
    emb = nn.Embedding.from_pretrained(w, freeze=True, padding_idx=0)
    out = {"frozen": emb.weight.requires_grad, "pad": emb.padding_idx}
    emb2 = nn.Embedding.from_pretrained(w.clone(), freeze=False)
    # train only new tokens 4, 5
    trainable = torch.zeros(6, 1); trainable[4:] = 1
    h = emb2.weight.register_hook(lambda grad: grad * trainable)
    opt = torch.optim.AdamW(emb2.parameters(), lr=0.1, weight_decay=0.0)
    for _ in range(2):
        opt.zero_grad()
        emb2(torch.tensor([[1, 4, 5, 2]])).pow(2).sum().backward()
        opt.step()
    out["changed"] = (emb2.weight != w).any(1)
    out["w"] = emb2.weight
    out["grad"] = emb2.weight.grad
    h.remove()
    e3 = nn.Embedding(5, 2, max_norm=1.0)
    with torch.no_grad():
        e3.weight.mul_(10)
    o = e3(torch.tensor([1, 1, 3]))
    out["renorm"] = e3.weight.norm(dim=1)
    out["o"] = o
    return out



def test_transformers_load_state_dict_into_model_by_hand():
    """_load_state_dict_into_model: each module's _load_from_state_dict called directly, with the metadata's
    version and assign_to_params_buffers, collecting error messages instead of raising."""
    error_msgs, first, bias, weight, meta_keys, root, norm, kind = run_both(hf_manual_load)[0]
    assert error_msgs == ["size mismatch for 2.0.weight: copying a param with shape Size([5, 5]) from checkpoint, "
                          "the shape in current model is Size([2, 3])."]
    assert meta_keys == ["", "0", "1", "2", "2.0"] and root == norm == {"version": 1, "assign_to_params_buffers": False}
    assert kind == "OrderedDict" and weight.shape == (2, 3)


def test_versioned_load_from_state_dict_renames_old_keys():
    meta, result, first, second = run_both(versioned)[0]
    assert meta == {"": {"version": 1}, "0": {"version": 2}, "1": {"version": 2}}
    assert result == "<All keys matched successfully>"
    np.testing.assert_array_equal(first, [3.0, 3.0])
    np.testing.assert_array_equal(second, [4.0, 4.0])


def test_shared_tensors_found_by_storage_as_safetensors_saving_does():
    groups, (shared, disjoint), offsets = run_both(shared_names)[0]
    assert groups == [["emb.weight", "head.weight"], ["part", "whole"]]
    assert shared == [["emb.weight", "head.weight"], ["part", "whole"]] and disjoint == []
    assert tuple(offsets) == (24, 72, 96, 6, 4)


def test_peft_style_lora_injection_modules_to_save_and_merge():
    ours, _ = run_both(peft_like)
    assert ours["trainable"] == ["base_model.q.lora_A.default.weight", "base_model.q.lora_B.default.weight",
                                 "base_model.v.lora_A.default.weight", "base_model.v.lora_B.default.weight"]
    assert ours["fwd_attr"] == 2 and ours["embed_via"] == 7 and ours["all"] == 28 + 2 * 20 + 2 * 16 + 2 * 10
    assert ours["merged_same"] < 1e-6
    assert len(ours["peft_keys"]) == 4 + 2  # the LoRA factors, the copied head
    np.testing.assert_array_equal(ours["original_head"], ours["base_head"])  # frozen, not trained


def test_training_only_new_token_embeddings_through_a_gradient_hook():
    ours, _ = run_both(embedding_tricks)
    assert not ours["frozen"] and ours["pad"] == 0
    np.testing.assert_array_equal(ours["changed"], [False, False, False, False, True, True])
    np.testing.assert_array_equal(ours["grad"][:4], np.zeros((4, 3)))
    np.testing.assert_allclose(ours["renorm"][[1, 3]], [1.0, 1.0], rtol=1e-5)  # max_norm renormed the rows looked up
    assert (ours["renorm"][[0, 2, 4]] > 1.5).all()


# ----------------------------------------------------------------------------------------------
# Attention masks
# ----------------------------------------------------------------------------------------------


def masks_fp16(m):
    torch = m.torch
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    out = {}
    for dtype in (torch.float16, torch.float32):
        mn = torch.finfo(dtype).min
        ext = mask[:, None, None, :].to(dtype=dtype)
        ext = (1.0 - ext) * mn
        causal = torch.triu(torch.full((4, 4), mn, dtype=dtype), diagonal=1)
        comb = ext + causal[None, None]
        out[str(dtype).split(".")[-1]] = (ext.float(), comb.float(), comb.dtype == dtype, torch.isinf(comb).sum())
        scores = torch.zeros(2, 1, 4, 4, dtype=dtype) + comb
        out[str(dtype).split(".")[-1] + "_softmax"] = scores.float().softmax(-1)
        out[str(dtype).split(".")[-1] + "_softmax_float32"] = torch.softmax(scores, dim=-1, dtype=torch.float32)
    return out

def expand_mask(m):
    torch = m.torch
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    dtype = torch.float16
    bsz, src_len = mask.size()
    tgt_len = 3
    expanded_mask = mask[:, None, None, :].expand(bsz, 1, tgt_len, src_len).to(dtype)
    inverted_mask = 1.0 - expanded_mask
    r = inverted_mask.masked_fill(inverted_mask.to(torch.bool), torch.finfo(dtype).min)
    # _make_causal_mask
    input_ids_shape = (2, 3); past_key_values_length = 2
    mask2 = torch.full((tgt_len, tgt_len), torch.finfo(dtype).min)
    mask_cond = torch.arange(mask2.size(-1))
    mask2.masked_fill_(mask_cond < (mask_cond + 1).view(mask2.size(-1), 1), 0)
    mask2 = mask2.to(dtype)
    mask2 = torch.cat([torch.zeros(tgt_len, past_key_values_length, dtype=dtype), mask2], dim=-1)
    causal = mask2[None, None, :, :].expand(bsz, 1, tgt_len, tgt_len + past_key_values_length)
    comb = causal.masked_fill(r.bool(), torch.finfo(dtype).min)
    # sliding window
    diagonal = past_key_values_length - 2 + 1
    context_mask = torch.tril(torch.ones_like(mask2, dtype=torch.bool), diagonal=diagonal)
    mask3 = mask2.masked_fill(context_mask, torch.finfo(dtype).min)
    return (r, causal, comb, mask3, r.dtype == dtype, str(torch.finfo(dtype).min), torch.finfo(dtype).eps,
            torch.finfo(torch.bfloat16).tiny)

def position_ids_program(m):
    torch = m.torch
    attention_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 0, 1]])
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids.masked_fill_(attention_mask == 0, 1)
    cache_position = torch.arange(2, 5)
    p2 = position_ids[:, -3:]
    return position_ids, p2, position_ids.dtype == torch.int64, attention_mask.cumsum(-1).dtype == torch.int64

def sdpa_masks(m):
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 2, 4, 3, generator=g)
    k = torch.randn(2, 2, 6, 3, generator=g)
    v = torch.randn(2, 2, 6, 3, generator=g)
    pad = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]).bool()
    b = pad[:, None, None, :]
    causal = torch.ones(4, 6, dtype=torch.bool).tril(diagonal=2)
    both = b & causal
    fl = torch.zeros(2, 1, 4, 6).masked_fill(~both, float("-inf"))
    o1 = F.scaled_dot_product_attention(q, k, v, attn_mask=both)
    o2 = F.scaled_dot_product_attention(q, k, v, attn_mask=fl)
    o3 = F.scaled_dot_product_attention(q, k[:, :, :4], v[:, :, :4], is_causal=True)
    o4 = F.scaled_dot_product_attention(q, k, v, attn_mask=both, scale=0.3)
    # float mask with finfo.min, fully masked row
    fm = torch.zeros(2, 1, 4, 6).masked_fill(~both, torch.finfo(torch.float32).min)
    fm[0, 0, 0] = torch.finfo(torch.float32).min
    o5 = F.scaled_dot_product_attention(q, k, v, attn_mask=fm)
    # 2D bool mask broadcast
    o6 = F.scaled_dot_product_attention(q, k, v, attn_mask=causal)
    return o1, o2, o3, o4, o5, o6



def test_extended_and_causal_masks_in_float16_and_float32():
    ours, _ = run_both(masks_fp16)
    for name, lowest in (("float16", -65504.0), ("float32", float(np.finfo(np.float32).min))):
        ext, comb, kept_dtype, infinities = ours[name]
        np.testing.assert_array_equal(ext[:, 0, 0], [[0, 0, 0, lowest], [0, 0, 0, 0]])
        assert kept_dtype and infinities == 3  # finfo.min + finfo.min overflows: the padded key above the diagonal
        assert np.isneginf(comb[0, 0, :3, 3]).all() and comb[0, 0, 3, 3] == lowest and comb[0, 0, 0, 1] == lowest
        np.testing.assert_allclose(ours[name + "_softmax"][1, 0, 1], [0.5, 0.5, 0, 0], atol=1e-6)
        np.testing.assert_allclose(ours[name + "_softmax_float32"][0, 0, 3], [1 / 3, 1 / 3, 1 / 3, 0], atol=1e-6)


def test_expand_mask_causal_mask_with_a_past_and_a_sliding_window():
    r, causal, comb, window, kept, lowest, eps, tiny = run_both(expand_mask)[0]
    assert kept and lowest == "-65504.0" and eps == pytest.approx(2 ** -10) and tiny == pytest.approx(2 ** -126)
    np.testing.assert_array_equal(r[0, 0, 0] == 0, [False, False, True, True, True])
    np.testing.assert_array_equal(causal[0, 0] == 0, np.tril(np.ones((3, 5), bool), 2))
    np.testing.assert_array_equal(comb[0, 0] == 0, np.tril(np.ones((3, 5), bool), 2) & [0, 0, 1, 1, 1])


def test_position_ids_under_left_padding():
    position_ids, last, is_long, cumsum_long = run_both(position_ids_program)[0]
    np.testing.assert_array_equal(position_ids, [[1, 1, 0, 1, 2], [0, 1, 2, 3, 4], [1, 0, 1, 1, 2]])
    assert is_long and cumsum_long


def test_sdpa_with_boolean_float_and_causal_masks():
    o1, o2, o3, o4, o5, o6 = run_both(sdpa_masks)[0]
    np.testing.assert_allclose(o1, o2, rtol=1e-6, atol=1e-7)  # a boolean mask is a float mask of 0 and -inf
    assert np.isfinite(o5).all() and o3.shape == o1.shape == o6.shape


def hf_causal_cache_position(m):
    torch = m.torch
    out = {}
    for dtype in (torch.float16, torch.float32):
        min_dtype = torch.finfo(dtype).min
        sequence_length, target_length, batch_size = 3, 6, 2
        cache_position = torch.arange(2, 5)
        attention_mask = torch.tensor([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
        causal_mask = torch.full((sequence_length, target_length), fill_value=min_dtype, dtype=dtype)
        if sequence_length != 1:
            causal_mask = torch.triu(causal_mask, diagonal=1)
        causal_mask *= torch.arange(target_length) > cache_position.reshape(-1, 1)
        cm0 = causal_mask.clone()
        signbits = torch.signbit(causal_mask)
        causal_mask = causal_mask[None, None, :, :].expand(batch_size, 1, -1, -1)
        causal_mask = causal_mask.clone()
        mask_length = attention_mask.shape[-1]
        padding_mask = causal_mask[:, :, :, :mask_length] + attention_mask[:, None, None, :]
        pdt = padding_mask.dtype == dtype
        padding_mask = padding_mask == 0
        causal_mask[:, :, :, :mask_length] = causal_mask[:, :, :, :mask_length].masked_fill(padding_mask, min_dtype)
        out[str(dtype).split(".")[-1]] = (cm0.float(), signbits, pdt, causal_mask.float(), padding_mask)
    return out



def test_causal_mask_from_cache_position_as_transformers_builds_it():
    ours, _ = run_both(hf_causal_cache_position)
    for name, lowest in (("float16", -65504.0), ("float32", float(np.finfo(np.float32).min))):
        before, signbits, kept_dtype, mask, padding = ours[name]
        future = np.arange(6) > np.arange(2, 5)[:, None]
        np.testing.assert_array_equal(before, np.where(future, lowest, 0.0))
        np.testing.assert_array_equal(signbits, np.triu(np.ones((3, 6), bool), 1))  # -0.0 where finfo.min * False
        assert kept_dtype
        masked = future | (np.array([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]) == 0)[:, None]
        np.testing.assert_array_equal(mask[:, 0] == lowest, masked)
        np.testing.assert_array_equal(padding[:, 0], ~future[None] & masked)



def causal_lm_padding_mask_with_is_causal(m, combine):
    """A decoder whose attention passes the padding mask and is_causal=True together (PyTorch's CPU flash kernel
    applies both), trained one step; ``combine`` builds the one mask by hand instead."""
    torch, nn, F = m.torch, m.nn, m.F

    class SelfAttention(nn.Module):
        def __init__(self, d=8, heads=2):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(d, 3 * d)
            self.out = nn.Linear(d, d)

        def forward(self, x, padding_mask):
            B, T, C = x.shape
            q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
            keep = padding_mask[:, None, None, :].bool()
            if combine:
                causal = torch.ones(T, T, dtype=torch.bool).tril()
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep & causal)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, is_causal=True)
            return self.out(y.transpose(1, 2).reshape(B, T, C))

    torch.manual_seed(0)
    emb, attn, head = nn.Embedding(10, 8), SelfAttention(), nn.Linear(8, 10)
    params = [*emb.parameters(), *attn.parameters(), *head.parameters()]
    optimizer = m.optim.SGD(params, lr=0.5)
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 0, 0]])
    padding_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    labels = ids.masked_fill(padding_mask == 0, -100)
    losses = []
    for step in range(2):
        optimizer.zero_grad()
        logits = head(attn(emb(ids), padding_mask))
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, 10), labels[:, 1:].reshape(-1), ignore_index=-100)
        loss.backward()
        optimizer.step()
        losses.append(loss)
    return losses, [p.detach().clone() for p in params]


def test_sdpa_with_a_padding_mask_and_is_causal_together():
    ours, _ = run_both(causal_lm_padding_mask_with_is_causal, False)
    by_hand, _ = run_both(causal_lm_padding_mask_with_is_causal, True)
    for a, b in zip(ours[0] + ours[1], by_hand[0] + by_hand[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def mha_subclass_replicating_mask_canonicalisation(m):
    """An nn.MultiheadAttention subclass whose forward replicates the upstream mask canonicalisation
    (``F._canonical_mask`` with ``F._none_or_dtype``) before adding a learnt per-key bias."""
    torch, nn, F = m.torch, m.nn, m.F

    class BiasedAttention(nn.MultiheadAttention):
        def __init__(self, embed_dim, num_heads, src_len):
            super().__init__(embed_dim, num_heads, batch_first=True)
            self.key_bias = nn.Parameter(torch.linspace(-0.5, 0.5, src_len))

        def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
            key_padding_mask = F._canonical_mask(
                mask=key_padding_mask,
                mask_name="key_padding_mask",
                other_type=F._none_or_dtype(attn_mask),
                other_name="attn_mask",
                target_type=query.dtype,
            )
            attn_mask = F._canonical_mask(
                mask=attn_mask,
                mask_name="attn_mask",
                other_type=None,
                other_name="",
                target_type=query.dtype,
                check_other=False,
            )
            attn_mask = attn_mask + self.key_bias
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                                   need_weights=True)

    torch.manual_seed(0)
    attention = BiasedAttention(4, 2, 3)
    x = torch.randn(2, 3, 4)
    causal = torch.ones(3, 3, dtype=torch.bool).triu(1)
    padding = torch.tensor([[False, False, True], [False, False, False]])
    out, weights = attention(x, x, x, key_padding_mask=padding, attn_mask=causal)
    out.sum().backward()
    return out, weights, attention.key_bias.grad


def test_multihead_attention_subclass_canonicalising_its_masks():
    out, weights, grad = run_both(mha_subclass_replicating_mask_canonicalisation)[0]
    assert (weights[:, np.triu_indices(3, 1)[0], np.triu_indices(3, 1)[1]] == 0).all()  # causal
    assert (weights[0, :, 2] == 0).all() and np.allclose(weights.sum(-1), 1)  # the padded key
    assert np.isfinite(grad).all() and grad[2] != 0

# ----------------------------------------------------------------------------------------------
# Generation utilities
# ----------------------------------------------------------------------------------------------


def watermark(m):
    torch = m.torch
    vocab_size = 20; gamma = 0.25; delta = 2.0; hash_key = 15485863
    rng = torch.Generator(device="cpu")
    table_size = 1_000_003
    fixed_table = torch.randperm(table_size, generator=rng.manual_seed(hash_key), device="cpu")
    def _get_greenlist_ids(input_seq):
        prev_token = input_seq[-1].item()
        rng.manual_seed(hash_key * prev_token)
        vocab_permutation = torch.randperm(vocab_size, device="cpu", generator=rng)
        greenlist_size = int(vocab_size * gamma)
        return vocab_permutation[:greenlist_size]
    input_ids = torch.tensor([[3, 5, 7], [1, 2, 19]])
    scores = torch.zeros(2, vocab_size)
    scores_processed = scores.clone()
    for b_idx, input_seq in enumerate(input_ids):
        greenlist_ids = _get_greenlist_ids(input_seq)
        scores_processed[b_idx, greenlist_ids] = scores_processed[b_idx, greenlist_ids] + delta
    return fixed_table[:10], fixed_table[-5:], scores_processed

def sampling(m):
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 12, generator=g)
    input_ids = torch.randint(0, 12, (3, 4), generator=g)
    scores = logits.clone()
    # repetition penalty
    score = torch.gather(scores, 1, input_ids)
    score = torch.where(score < 0, score * 1.3, score / 1.3)
    scores = scores.scatter(1, input_ids, score)
    scores = scores / 0.7
    # top-k
    top_k = 5
    indices_to_remove = scores < torch.topk(scores, top_k)[0][..., -1, None]
    scores = scores.masked_fill(indices_to_remove, -float("inf"))
    # top-p
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)
    cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_indices_to_remove = cumulative_probs <= (1 - 0.8)
    sorted_indices_to_remove[..., -1:] = 0
    indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
    scores = scores.masked_fill(indices_to_remove, -float("inf"))
    # epsilon, eta
    probs = scores.softmax(dim=-1)
    eps_remove = probs < 3e-2
    top_k2 = min(1, scores.size(-1))
    eps_remove = eps_remove & (scores < torch.topk(scores, top_k2)[0][..., -1, None])
    entropy = torch.distributions.Categorical(logits=logits).entropy()
    eta = torch.min(torch.tensor(0.1), torch.sqrt(torch.tensor(0.1)) * torch.exp(-entropy))[..., None]
    eta_remove = F.softmax(logits, -1) < eta
    torch.manual_seed(3)
    next_tokens = torch.multinomial(probs, num_samples=1).squeeze(1)
    torch.manual_seed(3)
    nt2 = torch.multinomial(probs, num_samples=2, replacement=True)
    return scores, eps_remove, entropy, eta, eta_remove, next_tokens, nt2

def beam_search_hf(m):
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(1)
    V, B, K = 9, 2, 3
    W = torch.randn(V, V, generator=g)
    def model_step(ids):  # logits for next token depend on last token
        return W[ids[:, -1]]
    input_ids = torch.tensor([[1, 2], [3, 4]]).repeat_interleave(K, dim=0)
    beam_scores = torch.zeros(B, K)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.view(-1)
    cur_len = 2
    finished = []
    for step in range(4):
        logits = model_step(input_ids)
        next_token_scores = F.log_softmax(logits, dim=-1)
        next_token_scores = next_token_scores + beam_scores[:, None].expand_as(next_token_scores)
        next_token_scores = next_token_scores.view(B, K * V)
        next_token_scores, next_tokens = torch.topk(next_token_scores, 2 * K, dim=1, largest=True, sorted=True)
        next_indices = torch.div(next_tokens, V, rounding_mode="floor")
        next_tokens = next_tokens % V
        beam_idx = (next_indices + torch.arange(B)[:, None] * K)[:, :K].reshape(-1)
        beam_scores = next_token_scores[:, :K].reshape(-1)
        beam_tokens = next_tokens[:, :K].reshape(-1)
        input_ids = torch.cat([input_ids[beam_idx, :], beam_tokens.unsqueeze(-1)], dim=-1)
        cur_len += 1
        length_penalty = 1.2
        finished.append(beam_scores / (cur_len ** length_penalty))
    # new-style vectorized: take_along_dim / gather beams
    seqs = input_ids.view(B, K, -1)
    order = torch.argsort(beam_scores.view(B, K), dim=1, descending=True)
    best = torch.take_along_dim(seqs, order[:, :, None], dim=1)
    return input_ids, beam_scores, finished, best, order

def contrastive(m):
    torch = m.torch
    g = torch.Generator().manual_seed(2)
    context_hidden = torch.randn(6, 5, 4, generator=g)  # batch*top_k, seq, hidden
    next_hidden = torch.randn(6, 1, 4, generator=g)
    next_top_k_probs = torch.rand(2, 3, generator=g).view(-1)
    alpha, beam_width = 0.6, 3
    norm_context_hidden = context_hidden / context_hidden.norm(dim=2, keepdim=True)
    norm_next_hidden = next_hidden / next_hidden.norm(dim=2, keepdim=True)
    cosine_matrix = torch.matmul(norm_context_hidden, norm_next_hidden.transpose(1, 2)).squeeze(-1)
    degeneration_penalty, _ = torch.max(cosine_matrix, dim=-1)
    contrastive_score = (1.0 - alpha) * next_top_k_probs - alpha * degeneration_penalty
    contrastive_score = torch.stack(torch.split(contrastive_score, beam_width))
    _, selected_idx = contrastive_score.max(dim=-1)
    cs = torch.nn.functional.cosine_similarity(context_hidden, next_hidden, dim=-1)
    return cosine_matrix, degeneration_penalty, contrastive_score, selected_idx, cs

def dynamic_cache(m):
    torch = m.torch
    g = torch.Generator().manual_seed(3)
    key_cache, value_cache = [], []
    def update(k, v, layer_idx):
        if len(key_cache) <= layer_idx:
            key_cache.append(k); value_cache.append(v)
        else:
            key_cache[layer_idx] = torch.cat([key_cache[layer_idx], k], dim=-2)
            value_cache[layer_idx] = torch.cat([value_cache[layer_idx], v], dim=-2)
        return key_cache[layer_idx], value_cache[layer_idx]
    for step in range(3):
        for layer in range(2):
            n = 1 + (step == 0) * 2
            update(torch.randn(2, 2, n, 3, generator=g), torch.randn(2, 2, n, 3, generator=g), layer)
    seq_len = key_cache[0].shape[-2]
    # reorder for beams
    beam_idx = torch.tensor([1, 1])
    for i in range(2):
        key_cache[i] = key_cache[i].index_select(0, beam_idx)
        value_cache[i] = value_cache[i].index_select(0, beam_idx)
    # crop
    for i in range(2):
        key_cache[i] = key_cache[i][..., :4, :]
    # batch_repeat_interleave
    rep = [k.repeat_interleave(3, dim=0) for k in key_cache]
    sel = [k[torch.tensor([0, 4]), ...] for k in rep]
    legacy = tuple((key_cache[i], value_cache[i]) for i in range(2))
    return seq_len, key_cache, rep[0].shape, sel, legacy[1][1]

def stopping(m):
    torch = m.torch
    input_ids = torch.tensor([[5, 6, 2, 0], [1, 2, 3, 4], [7, 7, 7, 9]])
    eos = torch.tensor([2, 9])
    max_length = 6
    cur_len = input_ids.shape[-1]
    is_done = torch.full((input_ids.shape[0],), cur_len >= max_length, dtype=torch.bool)
    is_done = is_done | torch.isin(input_ids[:, -1], eos)
    unfinished = torch.tensor([1, 1, 1])
    pad = 0
    next_tokens = torch.tensor([4, 3, 8])
    next_tokens = next_tokens * unfinished + pad * (1 - unfinished)
    unfinished = unfinished & ~is_done
    # StopStringCriteria-ish: check suffix matches
    stop = torch.tensor([3, 4])
    ends = (input_ids[:, -2:] == stop).all(dim=-1)
    return is_done, next_tokens, unfinished, ends, torch.any(is_done).item(), is_done.all()

def take_along(m):
    torch = m.torch
    seqs = torch.arange(2 * 3 * 5).view(2, 3, 5)
    idx = torch.tensor([[2, 0, 0, 1], [1, 1, 2, 0]])
    gi = idx
    for _ in range(len(seqs.shape) - 2):
        gi = gi.unsqueeze(-1)
    g = torch.take_along_dim(input=seqs, indices=gi, dim=1)
    scores = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    g2 = torch.take_along_dim(scores, torch.tensor([[[0], [3], [1]]]), dim=2)  # batch broadcast
    g3 = torch.take_along_dim(scores, torch.tensor([5, 0]))  # flattened
    return g, g2, g3

def beam_vectorized(m):
    torch, F = m.torch, m.F
    gen = torch.Generator().manual_seed(4)
    B, K, V, L = 2, 2, 7, 6
    W = torch.randn(V, V, generator=gen)
    running_sequences = torch.zeros(B, K, L, dtype=torch.long)
    running_sequences[:, :, 0] = torch.tensor([[1], [3]])
    running_beam_scores = torch.zeros(B, K); running_beam_scores[:, 1:] = -1e9
    sequences = torch.full((B, K, L), 0, dtype=torch.long)
    beam_scores = torch.full((B, K), -1e9)
    is_sent_finished = torch.zeros(B, K, dtype=torch.bool)
    eos = 2
    def gather_beams(tensor, beam_indices):
        gather_indices = beam_indices
        for _ in range(len(tensor.shape) - 2):
            gather_indices = gather_indices.unsqueeze(-1)
        return torch.take_along_dim(input=tensor, indices=gather_indices, dim=1)
    for cur_len in range(1, L):
        logits = W[running_sequences[:, :, cur_len - 1].reshape(-1)]
        log_probs = F.log_softmax(logits, dim=-1).view(B, K, V)
        log_probs = log_probs + running_beam_scores[:, :, None]
        log_probs = log_probs.reshape(B, K * V)
        beams_to_keep = 2 * K
        topk_log_probs, topk_indices = torch.topk(log_probs, k=beams_to_keep)
        topk_current_beam_indices = topk_indices // V
        topk_running_sequences = gather_beams(running_sequences, topk_current_beam_indices)
        topk_running_tokens = topk_indices % V
        topk_running_sequences[:, :, cur_len] = topk_running_tokens
        did_finish = topk_running_tokens == eos
        # running: keep non-finished
        running_topk = topk_log_probs + did_finish.to(torch.float32) * -1e9
        next_scores, next_idx = torch.topk(running_topk, k=K)
        running_sequences = gather_beams(topk_running_sequences, next_idx)
        running_beam_scores = next_scores
        # finished
        lp = topk_log_probs / ((cur_len + 1 - 1) ** 1.1)
        lp = lp + torch.logical_not(did_finish).to(torch.float32) * -1e9
        merged_sequences = torch.cat((sequences, topk_running_sequences), dim=1)
        merged_scores = torch.cat((beam_scores, lp), dim=1)
        merged_done = torch.cat((is_sent_finished, did_finish), dim=1)
        s, i = torch.topk(merged_scores, k=K)
        sequences = gather_beams(merged_sequences, i)
        beam_scores = s
        is_sent_finished = gather_beams(merged_done, i)
    return sequences, beam_scores, running_sequences, running_beam_scores, is_sent_finished

def isin_stops(m):
    torch = m.torch
    eos = torch.tensor([2, 7])
    ids = torch.tensor([[1, 5, 2], [3, 4, 7], [1, 1, 1]])
    is_done = torch.isin(ids[:, -1], eos)
    unfinished = torch.ones(3, dtype=torch.long)
    unfinished = unfinished & ~is_done
    this_peer_finished = unfinished.max() == 0
    r2 = torch.isin(ids, eos, invert=True)
    r3 = torch.isin(ids, 7)
    r4 = torch.isin(2, eos)
    return is_done, unfinished, this_peer_finished, r2, r3, r4, unfinished.dtype == torch.int64



def test_watermark_and_sampling_warpers():
    fixed_head, fixed_tail, watermarked = run_both(watermark)[0]
    assert len(set(fixed_head) | set(fixed_tail)) == 15 and max(fixed_head.max(), fixed_tail.max()) < 1_000_003
    np.testing.assert_array_equal((watermarked == 2.0).sum(1), [5, 5])
    assert set(np.unique(watermarked)) == {0.0, 2.0}
    scores, eps_remove, entropy, eta, eta_remove, next_tokens, two = run_both(sampling)[0]
    assert np.isfinite(scores[np.arange(3), next_tokens]).all()
    assert np.isfinite(np.take_along_axis(scores, two, 1)).all()
    assert (np.isfinite(scores).sum(1) <= 5).all()  # top-k 5, then top-p
    probs = np.exp(scores - scores.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_array_equal(eps_remove, (probs < 3e-2) & (scores < scores.max(1, keepdims=True)))
    assert (entropy > 0).all() and (eta <= 0.1).all()


def legacy_beam_scores_by_hand(m):
    """The log-probability of each sequence the legacy beam search kept, by the same toy model."""
    torch = m.torch
    W = torch.randn(9, 9, generator=torch.Generator().manual_seed(1))
    return W


def test_beam_search_legacy_and_vectorised():
    input_ids, beam_scores, finished, best, order = run_both(beam_search_hf)[0]
    W = run_both(legacy_beam_scores_by_hand)[0].astype(np.float64)
    log_probs = W - np.log(np.exp(W).sum(1, keepdims=True))
    by_hand = [sum(log_probs[seq[t - 1], seq[t]] for t in range(2, 6)) for seq in input_ids]
    np.testing.assert_allclose(beam_scores, by_hand, rtol=1e-5)
    assert (np.diff(beam_scores.reshape(2, 3), axis=1) <= 0).all()  # each batch's beams best first
    np.testing.assert_allclose(finished[-1], beam_scores / 6 ** 1.2, rtol=1e-6)
    np.testing.assert_array_equal(best[:, 0], input_ids.reshape(2, 3, -1)[:, 0])
    g, g2, g3 = run_both(take_along)[0]
    seqs = np.arange(30).reshape(2, 3, 5)
    np.testing.assert_array_equal(g, np.take_along_axis(seqs, np.array([[2, 0, 0, 1], [1, 1, 2, 0]])[..., None], 1))
    sequences, scores, running, running_scores, done = run_both(beam_vectorized)[0]
    assert sequences.shape == (2, 2, 6) and running.shape == (2, 2, 6)
    assert (np.diff(running_scores, axis=1) <= 0).all()


def test_contrastive_search_cache_and_stopping():
    cosine, penalty, score, selected, cs = run_both(contrastive)[0]
    np.testing.assert_allclose(cs, cosine, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(penalty, cosine.max(-1), rtol=1e-6)
    np.testing.assert_array_equal(selected, score.argmax(-1))
    seq_len, keys, repeated_shape, selected_rows, last_value = run_both(dynamic_cache)[0]
    assert seq_len == 5 and tuple(repeated_shape) == (6, 2, 4, 3)
    np.testing.assert_array_equal(keys[0][0], keys[0][1])  # both rows are beam 1's after the reorder
    np.testing.assert_array_equal(selected_rows[0][0], selected_rows[0][1])
    is_done, next_tokens, unfinished, ends, any_done, all_done = run_both(stopping)[0]
    np.testing.assert_array_equal(is_done, [False, False, True])
    np.testing.assert_array_equal(unfinished, [1, 1, 0])
    np.testing.assert_array_equal(ends, [False, True, False])
    assert any_done and not all_done
    done, unfinished, finished_peer, not_eos, is_seven, scalar, is_long = run_both(isin_stops)[0]
    np.testing.assert_array_equal(done, [True, True, False])
    np.testing.assert_array_equal(unfinished, [0, 0, 1])
    assert not finished_peer and scalar and is_long


# ----------------------------------------------------------------------------------------------
# Gradient checkpointing
# ----------------------------------------------------------------------------------------------


def checkpointed_stack(m):
    torch, nn = m.torch, m.nn
    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 8); self.fc2 = nn.Linear(8, 4); self.drop = nn.Dropout(0.3)
        def forward(self, x, mask=None, output_attentions=False):
            h = self.drop(torch.relu(self.fc1(x)))
            if mask is not None:
                h = h * mask
            out = x + self.fc2(h)
            return (out, None, h.sum()) if output_attentions else (out,)
    torch.manual_seed(0)
    emb = nn.Embedding(5, 4)
    layers = nn.ModuleList([Layer() for _ in range(3)])
    return emb, layers

def hf_gradient_checkpointing(m, reentrant, freeze_emb, input_grads):
    torch, nn = m.torch, m.nn
    checkpoint = importlib.import_module(m.torch.__name__ + ".utils.checkpoint").checkpoint
    emb, layers = checkpointed_stack(m)
    if freeze_emb:
        emb.weight.requires_grad_(False)
    if input_grads:
        def make_inputs_require_grads(module, input, output):
            output.requires_grad_(True)
        emb.register_forward_hook(make_inputs_require_grads)
    ids = torch.tensor([[1, 2, 3], [4, 0, 1]])
    mask = torch.ones(2, 3, 8)
    res = {}
    for use_ckpt in (False, True):
        torch.manual_seed(5)
        for p in list(emb.parameters()) + list(layers.parameters()):
            p.grad = None
        h = emb(ids)
        extras = []
        for layer in layers:
            if use_ckpt:
                fn = functools.partial(checkpoint, use_reentrant=reentrant)
                outs = fn(layer.__call__, h, mask, True)
            else:
                outs = layer(h, mask, True)
            h = outs[0]
            extras.append(outs[2])
        loss = h.pow(2).mean() + sum(extras) * 0.01
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            loss.backward()
        res[use_ckpt] = (loss, [p.grad for p in list(emb.parameters()) + list(layers.parameters())])
    return res

def ckpt_tuple(m):
    torch, nn = m.torch, m.nn
    cp = importlib.import_module(torch.__name__ + ".utils.checkpoint")
    torch.manual_seed(0)
    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.drop = nn.Dropout(0.5)
        def forward(self, hidden_states, attention_mask=None, past_key_value=None, output_attentions=False,
                    use_cache=False):
            h = self.drop(self.fc(hidden_states)).tanh()
            if attention_mask is not None:
                h = h * attention_mask
            present = (h.detach()[:, :1], 3) if use_cache else None
            attn = h.softmax(-1) if output_attentions else None
            return (h + hidden_states, attn, present)
    layers = nn.ModuleList([Layer() for _ in range(2)])
    x = torch.randn(2, 4, 3, requires_grad=True)
    mask = torch.ones(2, 4, 1)
    res = {}
    for mode in ("plain", "reent", "nonreent"):
        torch.manual_seed(7)
        layers.zero_grad(); x.grad = None
        h = x
        attns = []
        for layer in layers:
            if mode == "plain":
                outs = layer(h, mask, None, True, False)
            else:
                fn = functools.partial(cp.checkpoint, use_reentrant=(mode == "reent"))
                outs = fn(functools.partial(layer.__call__, use_cache=False), h, mask, None, True)
            h = outs[0]
            attns.append(outs[1])
        loss = h.sum() + sum(a[..., 0].sum() for a in attns)
        loss.backward()
        res[mode] = (loss, x.grad, [p.grad for p in layers.parameters()], outs[2] is None)
    return res



@pytest.mark.parametrize("reentrant, freeze_emb, input_grads", [
    (False, False, False), (False, True, False), (False, True, True), (True, False, False), (True, True, True)])
def test_gradient_checkpointing_as_transformers_enables_it(reentrant, freeze_emb, input_grads):
    """``gradient_checkpointing_enable``: ``functools.partial(checkpoint, use_reentrant=...)`` around each layer's
    ``__call__``; with frozen embeddings the reentrant variant needs ``enable_input_require_grads``' hook (without
    it PyTorch's gives the layers no gradients: autograd/utils/checkpoint.py's deliberate difference)."""
    ours, _ = run_both(hf_gradient_checkpointing, reentrant, freeze_emb, input_grads)
    (plain_loss, plain_grads), (ckpt_loss, ckpt_grads) = ours[False], ours[True]
    assert plain_loss == ckpt_loss  # dropout drew the same masks
    for a, b in zip(plain_grads, ckpt_grads):
        if freeze_emb and a is None:
            assert b is None
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert (plain_grads[0] is None) == freeze_emb


def test_checkpointed_layers_returning_tuples_with_none():
    ours, _ = run_both(ckpt_tuple)
    for mode in ("reent", "nonreent"):
        assert ours[mode][0] == pytest.approx(ours["plain"][0], rel=1e-6)
        for a, b in zip([ours["plain"][1]] + ours["plain"][2], [ours[mode][1]] + ours[mode][2]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert ours[mode][3]


# ----------------------------------------------------------------------------------------------
# from_pretrained(low_cpu_mem_usage=True): an empty model on the meta device, filled from the checkpoint
# ----------------------------------------------------------------------------------------------


def low_cpu_mem_usage_loading(m):
    torch, nn, F = m.torch, m.nn, m.F
    import contextlib

    @contextlib.contextmanager
    def init_empty_weights():
        old_register_parameter = nn.Module.register_parameter

        def register_empty_parameter(module, name, param):
            old_register_parameter(module, name, param)
            if param is not None:
                param_cls = type(module._parameters[name])
                kwargs = module._parameters[name].__dict__
                kwargs["requires_grad"] = param.requires_grad
                module._parameters[name] = param_cls(module._parameters[name].to(torch.device("meta")), **kwargs)

        try:
            nn.Module.register_parameter = register_empty_parameter
            yield
        finally:
            nn.Module.register_parameter = old_register_parameter

    def set_module_tensor_to_device(module, tensor_name, device, value=None, dtype=None):
        if "." in tensor_name:
            splits = tensor_name.split(".")
            for split in splits[:-1]:
                module = getattr(module, split)
            tensor_name = splits[-1]
        old_value = getattr(module, tensor_name)
        if old_value.device == torch.device("meta") and device not in ["meta", torch.device("meta")] and value is None:
            raise ValueError(f"{tensor_name} is on the meta device, we need a `value` to put in on {device}.")
        if value is not None:
            if dtype is None:
                value = value.to(old_value.dtype)
            elif not str(value.dtype).endswith(("int8", "bool")):
                value = value.to(dtype)
        with torch.no_grad():
            new_value = old_value.to(device) if value is None else value.to(device)
            if tensor_name in module._buffers:
                module._buffers[tensor_name] = new_value
            else:
                param_cls = type(module._parameters[tensor_name])
                module._parameters[tensor_name] = param_cls(new_value, requires_grad=old_value.requires_grad)

    class Classifier(nn.Module):
        def __init__(self, vocab=9, d=6, labels=3):
            super().__init__()
            self.embeddings = nn.Embedding(vocab, d, padding_idx=0)
            self.encoder = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d))
            self.register_buffer("token_type_ids", torch.zeros(1, 5, dtype=torch.long), persistent=False)
            self.lm_head = nn.Linear(d, vocab, bias=False)
            self.score = nn.Linear(d, labels)
            self.lm_head.weight = self.embeddings.weight

        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                module.weight.data.normal_(mean=0.0, std=0.02)
                if module.bias is not None:
                    module.bias.data.zero_()

        def forward(self, ids):
            h = self.encoder(self.embeddings(ids))
            return self.score(h[:, 0]), self.lm_head(h)

    torch.manual_seed(0)
    pretrained = Classifier()
    checkpoint = {k: v.clone() for k, v in pretrained.state_dict().items()
                  if not k.startswith(("score.", "lm_head."))}  # a base model's checkpoint: no head
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    state_dict = torch.load(buffer, map_location="cpu", weights_only=True)

    with init_empty_weights():
        model = Classifier()
    on_meta = sorted({str(p.device) for p in model.parameters()})
    expected_keys = list(model.state_dict().keys())
    loaded_keys = list(state_dict.keys())
    missing_keys = sorted(set(expected_keys) - set(loaded_keys) - {"lm_head.weight"})
    for name, param in state_dict.items():
        set_module_tensor_to_device(model, name, "cpu", value=param, dtype=torch.float32)
    # _move_missing_keys_from_meta_to_cpu, then _initialize_missing_keys
    for key in missing_keys:
        set_module_tensor_to_device(model, key, "cpu", value=torch.empty(*model.get_parameter(key).size()))
    torch.manual_seed(1)
    for name, module in model.named_modules():
        if any(key.startswith(name + ".") for key in missing_keys) and name:
            model._init_weights(module)
    model.lm_head.weight = model.embeddings.weight  # tie_weights
    model.eval()
    ids = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 1, 0]])
    with torch.no_grad():
        logits, lm_logits = model(ids)
        _, reference_lm = pretrained.eval()(ids)
    return {"on_meta": on_meta, "missing": missing_keys, "devices": sorted({str(p.device) for p in model.parameters()}),
            "logits": logits, "lm_same": torch.equal(lm_logits, reference_lm), "score_bias": model.score.bias,
            "tied": model.lm_head.weight is model.embeddings.weight, "buffer": model.token_type_ids.device.type}


def test_low_cpu_mem_usage_loading_through_the_meta_device():
    ours, _ = run_both(low_cpu_mem_usage_loading)
    assert ours["on_meta"] == ["meta"] and ours["devices"] == ["cpu"]
    assert ours["missing"] == ["score.bias", "score.weight"]
    assert ours["lm_same"] and ours["tied"] and ours["buffer"] == "cpu"
    np.testing.assert_array_equal(ours["score_bias"], np.zeros(3))
    assert ours["logits"].shape == (2, 3) and np.abs(ours["logits"]).max() < 0.5


# ----------------------------------------------------------------------------------------------
# transformers' framework checks around a model's code
# ----------------------------------------------------------------------------------------------


def t5_shift_right(m):
    """T5PreTrainedModel._shift_right, with transformers' is_torch_fx_proxy as 4.3x wrote it (no try)."""
    torch = m.torch

    def is_torch_fx_proxy(x):
        import importlib

        fx = importlib.import_module(torch.__name__ + ".fx")
        return isinstance(x, fx.Proxy)

    def _shift_right(input_ids, decoder_start_token_id=0, pad_token_id=0):
        if is_torch_fx_proxy(input_ids):
            shifted_input_ids = torch.full(input_ids.shape[:-1] + (1,), decoder_start_token_id)
            shifted_input_ids = torch.cat([shifted_input_ids, input_ids[..., :-1]], dim=-1)
        else:
            shifted_input_ids = input_ids.new_zeros(input_ids.shape)
            shifted_input_ids[..., 1:] = input_ids[..., :-1].clone()
            shifted_input_ids[..., 0] = decoder_start_token_id
        shifted_input_ids.masked_fill_(shifted_input_ids == -100, pad_token_id)
        return shifted_input_ids

    return _shift_right(torch.tensor([[5, 6, -100, -100], [7, 8, 9, 1]]))


def test_t5_shift_right_asks_whether_its_input_is_an_fx_proxy():
    shifted, _ = run_both(t5_shift_right)
    np.testing.assert_array_equal(shifted, [[0, 5, 6, 0], [0, 7, 8, 9]])


def fairseq_checkpoint_average(m):
    """fairseq's scripts/average_checkpoints.py: every checkpoint read onto the CPU by a map_location that calls
    torch.serialization.default_restore_location, the parameters averaged."""
    torch, nn = m.torch, m.nn
    states = []
    with tempfile.TemporaryDirectory() as d:
        for seed in range(3):
            torch.manual_seed(seed)
            path = os.path.join(d, f"checkpoint{seed}.pt")
            torch.save({"model": nn.Linear(3, 2).state_dict(), "args": None}, path)
            with open(path, "rb") as f:
                states.append(torch.load(f, map_location=(
                    lambda s, _: torch.serialization.default_restore_location(s, "cpu"))))
    new_state = dict(states[0])
    averaged = collections.OrderedDict()
    for state in states:
        for k, p in state["model"].items():
            p = p.float() if isinstance(p, torch.HalfTensor) else p
            averaged[k] = p.clone() if k not in averaged else averaged[k] + p
    for k, v in averaged.items():
        averaged[k] = v.div_(len(states))
    new_state["model"] = averaged
    return new_state["model"], [s["model"]["bias"] for s in states]


def test_fairseq_averages_checkpoints_loaded_through_default_restore_location():
    averaged, biases = run_both(fairseq_checkpoint_average)[0]
    np.testing.assert_allclose(averaged["bias"], np.mean(biases, axis=0), rtol=1e-6)


def embedding_weight_saved_and_assigned_back(m):
    """Pretrained word vectors kept as the embedding's Parameter itself, saved, and assigned back to a new model."""
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    trained = nn.Embedding(6, 3)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "embeddings.pt")
        torch.save(trained.weight, path)
        fresh = nn.Embedding(6, 3)
        fresh.weight = torch.load(path)
    return type(fresh.weight).__name__, fresh.weight.requires_grad, fresh(torch.tensor([1, 5]))


def test_an_embedding_parameter_saved_and_assigned_back():
    kind, requires_grad, looked_up = run_both(embedding_weight_saved_and_assigned_back)[0]
    assert kind == "Parameter" and requires_grad and looked_up.shape == (2, 3)


def quantized_parameter_moved_as_accelerate_moves_it(m):
    """A bitsandbytes-style Parameter subclass (Params4bit: ``Tensor._make_subclass`` plus its own attributes)
    moved the way accelerate's init_empty_weights moves a parameter: its class rebuilt from its ``__dict__``."""
    torch, nn = m.torch, m.nn

    class Params4bit(nn.Parameter):
        def __new__(cls, data=None, requires_grad=False, quant_state=None, blocksize=64, module=None):
            if data is None:
                data = torch.empty(0)
            self = torch.Tensor._make_subclass(cls, data, requires_grad)
            self.blocksize = blocksize
            self.quant_state = quant_state
            self.module = module
            return self

    torch.manual_seed(0)
    linear = nn.Linear(4, 2)
    linear.weight = Params4bit(linear.weight.data, requires_grad=False, blocksize=32)
    param = linear._parameters["weight"]
    kwargs = param.__dict__
    attributes = sorted(kwargs)
    moved = type(param)(param.to(torch.device("meta")), **kwargs)
    return attributes, type(moved).__name__, moved.blocksize, str(moved.device), linear(torch.ones(1, 4))


def test_a_quantized_parameter_rebuilt_from_its_dict():
    attributes, kind, blocksize, device, out = run_both(quantized_parameter_moved_as_accelerate_moves_it)[0]
    assert attributes == ["blocksize", "module", "quant_state"] and kind == "Params4bit" and blocksize == 32
    assert device == "meta" and out.shape == (1, 2)
