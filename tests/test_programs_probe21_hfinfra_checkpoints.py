# ruff: noqa: B007, E702, F841  (the programs are kept as their authors wrote them)
"""The model infrastructure of Hugging Face transformers-style code, written in plain PyTorch (see
tests/pytorch_programs.py): each program runs on chainrule and on PyTorch and the results must agree; what can be is
also checked by hand, so that the tests assert something where PyTorch is not installed. Checkpoints: an old
checkpoint (``model.`` prefix, ``gamma``/``beta``, a fused qkv split in an overridden ``_load_from_state_dict``, a
tied head left out) saved in two shards by ``torch.save`` and merged from ``torch.load(weights_only=True)``, loaded
with ``strict=False`` and a ``register_load_state_dict_post_hook`` that forgives the tied key, then ``assign=True``;
fine-tuning from a checkpoint with another head as YOLACT loads it (``try: load_state_dict except RuntimeError``: the
tensors that fitted are loaded); ``torch.load(mmap=True)`` into a meta model; transformers'
``_load_state_dict_into_model`` calling ``_load_from_state_dict`` by hand; a ``_version`` bump whose loader renames
old keys; shared tensors grouped by ``untyped_storage().data_ptr()`` as safetensors saving does. transformers'
framework checks around a model's code: T5's ``_shift_right`` behind transformers' ``is_torch_fx_proxy``
(``torch.fx.Proxy``, which nothing is an instance of here); fairseq's checkpoint averaging, loading through a
``map_location`` that calls ``torch.serialization.default_restore_location``; an embedding's Parameter saved and
assigned back to a new model; a bitsandbytes-style Parameter subclass rebuilt from its ``__dict__`` as accelerate
moves it (``Tensor._make_subclass`` makes no view, so that ``__dict__`` is the subclass's own)."""

import collections
import io
import os
import tempfile

import numpy as np

from .pytorch_programs import run_both

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
