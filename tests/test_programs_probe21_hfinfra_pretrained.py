# ruff: noqa: B007, E702, F841  (the programs are kept as their authors wrote them)
"""The model infrastructure of Hugging Face transformers-style code, written in plain PyTorch (see
tests/pytorch_programs.py): each program runs on chainrule and on PyTorch and the results must agree; what can be is
also checked by hand, so that the tests assert something where PyTorch is not installed. Building and adapting a
model: a ``PreTrainedModel``-like base (``_init_weights`` by ``module.apply`` (a zeroed padding row), tied input and
output embeddings, ``num_parameters(exclude_embeddings=, only_trainable=)``, ``get_memory_footprint``, frozen
parameters, ``resize_token_embeddings`` (``pad_to_multiple_of``, mean resizing through ``linalg.eigvals``, the output
bias padded by ``F.pad``, re-tied)); accelerate's ``init_empty_weights`` (``nn.Module.register_parameter`` wrapped to
put every parameter on the meta device) and ``set_module_tensor_to_device``;
``from_pretrained(low_cpu_mem_usage=True)``: the model built under ``init_empty_weights``, filled by
``set_module_tensor_to_device`` from a headless checkpoint, its missing head moved off the meta device by
``torch.empty`` and initialised, re-tied; PEFT-style LoRA injection by ``get_submodule``/``setattr`` with
``ModulesToSaveWrapper`` and ``__getattr__`` forwarding, merged; training only new token embeddings through a
gradient hook, ``max_norm`` renorming."""

import copy
import io
import math

import numpy as np

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
