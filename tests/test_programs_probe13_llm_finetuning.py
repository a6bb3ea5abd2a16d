# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Language-model building blocks as they are written today, run as tests/probe13_llm_common.py says. Fine-tuning:
PEFT's LoRA (rsLoRA, DoRA) injected by ``get_submodule``/``setattr`` into a frozen base, merged and unmerged in
place; GRPO as TRL writes it (sampled groups, eos masks by ``argmax``, group-standardised rewards,
``selective_log_softmax``, k3 KL against a deep-copied reference, PPO's clipped ratio)."""

import math

import numpy as np
import pytest

from . import probe13_llm_common
from .probe13_llm_common import Q_D, Q_FF, Q_H, Q_HD, Q_KV, Q_L, make_qwen, make_small_gpt, qwen_batch
from .pytorch_programs import load, run_both, weights_of

qwen_weights = probe13_llm_common.qwen_weights  # the fixture


# ----------------------------------------------------------------------------------------------
# PEFT's LoRA layer: rsLoRA scaling, DoRA's magnitude over the column norms of the merged weight, adapters
# injected by replacing modules through get_submodule/setattr, frozen base (requires_grad_(False)),
# merge / unmerge in place, and only the adapter's parameters handed to AdamW
# ----------------------------------------------------------------------------------------------


def peft(m):
    torch, nn, F = m.torch, m.nn, m.F

    class LoraLinear(nn.Module):
        def __init__(self, base_layer, r=4, lora_alpha=8, use_rslora=False, use_dora=False):
            super().__init__()
            self.base_layer = base_layer
            self.r = r
            self.scaling = lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r
            self.lora_dropout = nn.Identity()
            self.lora_A = nn.Linear(base_layer.in_features, r, bias=False)
            self.lora_B = nn.Linear(r, base_layer.out_features, bias=False)
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B.weight)
            self.use_dora = use_dora
            self.merged = False
            if use_dora:
                weight_norm = self.get_weight_norm(self.base_layer.weight, self.get_delta_weight().detach())
                self.lora_magnitude_vector = nn.Parameter(weight_norm, requires_grad=True)

        def get_delta_weight(self):
            return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

        @staticmethod
        def get_weight_norm(weight, lora_weight, scaling=1.0):
            weight = weight + scaling * lora_weight
            return torch.linalg.norm(weight, dim=1).to(weight.dtype)

        def merge(self):
            if self.merged:
                return
            delta_weight = self.get_delta_weight()
            if not self.use_dora:
                self.base_layer.weight.data += delta_weight
            else:
                weight_norm = self.get_weight_norm(self.base_layer.weight, delta_weight).detach()
                self._cache_weight_norm = weight_norm
                dora_factor = self.lora_magnitude_vector / weight_norm
                new_weight = dora_factor.view(-1, 1) * (self.base_layer.weight.data + delta_weight)
                self.base_layer.weight.data = new_weight
            self.merged = True

        def unmerge(self):
            if not self.merged:
                return
            delta_weight = self.get_delta_weight()
            if not self.use_dora:
                self.base_layer.weight.data -= delta_weight
            else:
                dora_factor = self.lora_magnitude_vector / self._cache_weight_norm
                self.base_layer.weight.data = self.base_layer.weight.data / dora_factor.view(-1, 1) - delta_weight
            self.merged = False

        def forward(self, x):
            result = self.base_layer(x)
            if self.merged:
                return result
            x = self.lora_dropout(x)
            if not self.use_dora:
                return result + self.lora_B(self.lora_A(x)) * self.scaling
            # DoRA (PEFT's DoraLinearLayer): the norm is detached, as in the paper's section 4.3
            lora_weight = self.lora_B.weight @ self.lora_A.weight
            weight_norm = self.get_weight_norm(self.base_layer.weight, lora_weight.detach(), self.scaling).detach()
            mag_norm_scale = (self.lora_magnitude_vector / weight_norm).view(1, -1)
            lora_result = self.lora_B(self.lora_A(x))
            bias = self.base_layer.bias
            base_result = result - bias if bias is not None else result
            result_dora = (mag_norm_scale - 1) * base_result + mag_norm_scale * lora_result * self.scaling
            return result + result_dora

    def inject(model, target_modules, **kwargs):
        for name, module in list(model.named_modules()):
            if name.split(".")[-1] in target_modules and isinstance(module, nn.Linear):
                parent_name, _, child_name = name.rpartition(".")
                parent = model.get_submodule(parent_name)
                setattr(parent, child_name, LoraLinear(module, **kwargs))
        for n, p in model.named_parameters():
            if "lora_" not in n:
                p.requires_grad_(False)
        return model

    return LoraLinear, inject


def lora_program(m, weights, use_dora, use_rslora, steps=4):
    torch, F = m.torch, m.F
    LoraLinear, inject = peft(m)
    model = load(m, make_qwen(m), weights)
    torch.manual_seed(0)
    model = inject(model, ["q_proj", "v_proj", "down_proj"], r=4, lora_alpha=8, use_dora=use_dora,
                   use_rslora=use_rslora)
    # the same adapter initialisation on both libraries (kaiming draws differ between generators)
    rng = np.random.default_rng(21)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, LoraLinear):
                module.lora_A.weight.copy_(torch.tensor(rng.normal(0, 0.3, module.lora_A.weight.shape),
                                                        dtype=torch.float32))
                if use_dora:  # re-derive the magnitude from the new A (B is zero: the base weight's norms)
                    module.lora_magnitude_vector.copy_(module.get_weight_norm(
                        module.base_layer.weight, module.get_delta_weight()))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = m.optim.AdamW(filter(lambda p: p.requires_grad, model.parameters()), lr=2e-2, weight_decay=0.01)
    ids, attention_mask, labels = (torch.tensor(a) for a in qwen_batch())
    losses = []
    for step in range(steps):
        loss, _ = model(ids, attention_mask, labels=labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    frozen_grads = [p.grad for n, p in model.named_parameters() if not p.requires_grad]
    model.eval()
    with torch.no_grad():
        _, unmerged = model(ids, attention_mask)
        for module in model.modules():
            if isinstance(module, LoraLinear):
                module.merge()
        _, merged = model(ids, attention_mask)
        merged_weight = model.model.layers[0].self_attn.q_proj.base_layer.weight.clone()
        for module in model.modules():
            if isinstance(module, LoraLinear):
                module.unmerge()
        _, unmerged_again = model(ids, attention_mask)
        base_weight = model.model.layers[0].self_attn.q_proj.base_layer.weight.clone()
    return (losses, trainable, n_trainable, all(g is None for g in frozen_grads), unmerged, merged, unmerged_again,
            merged_weight, base_weight)


@pytest.mark.parametrize("use_dora, use_rslora", [(False, False), (False, True), (True, False)])
def test_peft_lora_rslora_dora_merge_unmerge(qwen_weights, use_dora, use_rslora):
    (losses, trainable, n_trainable, frozen_untouched, unmerged, merged, unmerged_again, merged_weight,
     base_weight), _ = run_both(lora_program, qwen_weights, use_dora, use_rslora, rtol=1e-4, atol=1e-5)
    assert frozen_untouched and losses[-1] < losses[0]
    per_layer = (4 * Q_D + Q_H * Q_HD * 4) + (4 * Q_D + Q_KV * Q_HD * 4) + (4 * Q_FF + Q_D * 4)
    if use_dora:
        per_layer += Q_H * Q_HD + Q_KV * Q_HD + Q_D
    assert n_trainable == Q_L * per_layer and all("lora_" in n for n in trainable)
    np.testing.assert_allclose(merged, unmerged, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(unmerged_again, unmerged, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(base_weight, qwen_weights["model.layers.0.self_attn.q_proj.weight"], rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(merged_weight, base_weight)


# ----------------------------------------------------------------------------------------------
# GRPO as TRL writes it: G completions per prompt sampled with a KV cache, a completion mask cut after the
# first eos (argmax of the int mask), rewards standardised within each group (view / repeat_interleave),
# per-token log-probabilities by selective_log_softmax (logsumexp per row), the k3 KL estimate against a
# deep-copied frozen reference, exp(logp - logp.detach()) with PPO's clipped ratio, trained with AdamW
# ----------------------------------------------------------------------------------------------

EOS = 0


def selective_log_softmax(m, logits, index):
    torch = m.torch
    if logits.dtype in [torch.float32, torch.float64]:
        selected_logits = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)
        # loop to reduce peak memory consumption
        logsumexp_values = torch.stack([torch.logsumexp(lg, dim=-1) for lg in logits])
        per_token_logps = selected_logits - logsumexp_values  # log_softmax(x_i) = x_i - logsumexp(x)
    else:
        per_token_logps = []
        for row_logits, row_labels in zip(logits, index):
            row_logps = m.F.log_softmax(row_logits, dim=-1)
            row_per_token_logps = row_logps.gather(dim=-1, index=row_labels.unsqueeze(-1)).squeeze(-1)
            per_token_logps.append(row_per_token_logps)
        per_token_logps = torch.stack(per_token_logps)
    return per_token_logps


def grpo_program(m, weights, num_generations=4, max_completion_length=5, steps=3, beta=0.04, epsilon=0.2):
    import copy
    torch, F = m.torch, m.F
    # (no q/k/v bias: the key bias's gradient is zero but for rounding, which Adam would blow up to steps of lr)
    model = load(m, make_small_gpt(m, attn_bias=False), weights)
    ref_model = copy.deepcopy(model)
    for p in ref_model.parameters():
        p.requires_grad_(False)
    ref_model.eval()
    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2)
    prompts = torch.tensor([[3, 5, 7], [2, 2, 9]])
    g = torch.Generator().manual_seed(17)
    log = []

    def reward(completion, mask):  # the number of 4s before the end, less the length
        return ((completion == 4) * mask).sum(-1).float() - 0.1 * mask.sum(-1).float()

    def get_per_token_logps(model, input_ids, logits_to_keep):
        logits = model(input_ids)[:, :-1, :]
        logits = logits[:, -logits_to_keep:]
        return selective_log_softmax(m, logits / 1.0, input_ids[:, -logits_to_keep:])

    for step in range(steps):
        prompt_ids = prompts.repeat_interleave(num_generations, dim=0)
        with torch.no_grad():
            model.eval()
            cache = [[] for _ in model.h]
            logits = model(prompt_ids, cache)[:, -1]
            completion = []
            for _ in range(max_completion_length):
                token = torch.multinomial(F.softmax(logits, -1), 1, generator=g)
                completion.append(token)
                logits = model(token, cache)[:, -1]
            completion_ids = torch.cat(completion, 1)
            model.train()
        is_eos = completion_ids == EOS
        eos_idx = torch.full((is_eos.size(0),), is_eos.size(1), dtype=torch.long)
        eos_idx[is_eos.any(dim=1)] = is_eos.int().argmax(dim=1)[is_eos.any(dim=1)]
        sequence_indices = torch.arange(is_eos.size(1)).expand(is_eos.size(0), -1)
        completion_mask = (sequence_indices <= eos_idx.unsqueeze(1)).int()
        rewards = reward(completion_ids, completion_mask)
        mean_grouped_rewards = rewards.view(-1, num_generations).mean(dim=1)
        std_grouped_rewards = rewards.view(-1, num_generations).std(dim=1)
        mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
        std_grouped_rewards = std_grouped_rewards.repeat_interleave(num_generations, dim=0)
        advantages = (rewards - mean_grouped_rewards) / (std_grouped_rewards + 1e-4)
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        logits_to_keep = completion_ids.size(1)
        with torch.no_grad():
            ref_per_token_logps = get_per_token_logps(ref_model, input_ids, logits_to_keep)
        per_token_logps = get_per_token_logps(model, input_ids, logits_to_keep)
        per_token_kl = torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1
        old_per_token_logps = per_token_logps.detach()
        coef_1 = torch.exp(per_token_logps - old_per_token_logps)
        coef_2 = torch.clamp(coef_1, 1 - epsilon, 1 + epsilon)
        per_token_loss1 = coef_1 * advantages.unsqueeze(1)
        per_token_loss2 = coef_2 * advantages.unsqueeze(1)
        per_token_loss = -torch.min(per_token_loss1, per_token_loss2)
        per_token_loss = per_token_loss + beta * per_token_kl
        loss = ((per_token_loss * completion_mask).sum(dim=1) / completion_mask.sum(dim=1)).mean()
        optimizer.zero_grad()
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        mean_kl = ((per_token_kl * completion_mask).sum(dim=1) / completion_mask.sum(dim=1)).mean()
        log.append((loss.item(), mean_kl.item(), rewards.mean().item()))
    return log, completion_ids, completion_mask, advantages, [p.detach() for p in model.parameters()]


def test_grpo_group_advantages_kl_and_clipped_ratio():
    weights = weights_of(lambda m: make_small_gpt(m, attn_bias=False), seed=7)
    (log, completion_ids, completion_mask, advantages, params), _ = run_both(grpo_program, weights, rtol=1e-4,
                                                                            atol=1e-5)
    assert log[0][1] == 0.0  # the policy starts as the reference: no KL
    assert log[-1][1] > 0.0
    # the mask keeps each completion up to and with its first eos
    for ids, mask in zip(completion_ids, completion_mask):
        stop = list(ids).index(EOS) + 1 if EOS in ids else len(ids)
        assert list(mask) == [1] * stop + [0] * (len(ids) - stop)
    np.testing.assert_allclose(advantages.reshape(2, 4).mean(1), 0.0, atol=1e-5)  # standardised within groups
