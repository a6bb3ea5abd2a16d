# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Course and book programs, run as tests/probe17_courses_common.py says. Sebastian Raschka's "Build a Large Language
Model (From Scratch)", fine-tuning: chapter 6's classifier (everything frozen, a new ``out_head``, the last block and
final norm unfrozen, last-token logits, accuracy loaders); chapter 7's ``custom_collate_fn`` (pad, mask all but the
first end token to -100 through ``nonzero``) under ``functools.partial``, and the DPO bonus (``compute_logprobs`` by
``gather`` under a selection mask, ``logsigmoid`` loss against a frozen reference); appendix E's LoRA
(``kaiming_uniform_(a=sqrt(5))`` on an (in, rank) matrix, ``replace_linear_with_lora`` by
``named_children``/``setattr``)."""

import math
from functools import partial

import numpy as np
import pytest

from .probe17_courses_common import GPT2_CONFIG, calc_loss_batch, gpt2_params, llm_modules, load_weights_into_gpt
from .pytorch_programs import run_both

SPAM_PAD = 49


def spam_data(n=48, seed=0):
    """Token lists of varying length; 'spam' (label 1) holds the token 7."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        length = int(rng.integers(4, 11))
        toks = rng.integers(8, 40, length).tolist()
        label = i % 2
        if label:
            toks[int(rng.integers(0, length))] = 7
        texts.append(toks)
        labels.append(label)
    return texts, labels


def spam_loaders(m, batch_size=8):
    torch, data = m.torch, m.data

    class SpamDataset(data.Dataset):
        def __init__(self, texts, labels, max_length=None, pad_token_id=SPAM_PAD):
            self.encoded_texts = texts
            self.labels = labels
            if max_length is None:
                self.max_length = self._longest_encoded_length()
            else:
                self.max_length = max_length
                self.encoded_texts = [encoded_text[:self.max_length] for encoded_text in self.encoded_texts]
            self.encoded_texts = [encoded_text + [pad_token_id] * (self.max_length - len(encoded_text))
                                  for encoded_text in self.encoded_texts]

        def __getitem__(self, index):
            encoded = self.encoded_texts[index]
            label = self.labels[index]
            return (torch.tensor(encoded, dtype=torch.long), torch.tensor(label, dtype=torch.long))

        def __len__(self):
            return len(self.labels)

        def _longest_encoded_length(self):
            max_length = 0
            for encoded_text in self.encoded_texts:
                encoded_length = len(encoded_text)
                if encoded_length > max_length:
                    max_length = encoded_length
            return max_length

    texts, labels = spam_data()
    train_dataset = SpamDataset(texts[:32], labels[:32])
    val_dataset = SpamDataset(texts[32:], labels[32:], max_length=train_dataset.max_length)
    torch.manual_seed(123)
    train_loader = data.DataLoader(train_dataset, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True)
    val_loader = data.DataLoader(val_dataset, batch_size=batch_size, num_workers=0, drop_last=False)
    return train_loader, val_loader, train_dataset.max_length


def calc_accuracy_loader(m, data_loader, model, device="cpu", num_batches=None):
    torch = m.torch
    model.eval()
    correct_predictions, num_examples = 0, 0
    if num_batches is None:
        num_batches = len(data_loader)
    else:
        num_batches = min(num_batches, len(data_loader))
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i < num_batches:
            input_batch, target_batch = input_batch.to(device), target_batch.to(device)
            with torch.no_grad():
                logits = model(input_batch)[:, -1, :]
            predicted_labels = torch.argmax(logits, dim=-1)
            num_examples += predicted_labels.shape[0]
            correct_predictions += (predicted_labels == target_batch).sum().item()
        else:
            break
    return correct_predictions / num_examples


def calc_loss_batch_cls(m, input_batch, target_batch, model, device="cpu"):
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)[:, -1, :]
    return m.torch.nn.functional.cross_entropy(logits, target_batch)


def pretrained_gpt(m):
    GPTModel = llm_modules(m)[3]
    m.torch.manual_seed(123)
    model = GPTModel(GPT2_CONFIG)
    load_weights_into_gpt(m, model, gpt2_params(GPT2_CONFIG))
    model.eval()
    return model


def train_classifier_simple(m, model, train_loader, val_loader, optimizer, num_epochs, eval_freq=3):
    torch = m.torch
    train_losses, val_losses, train_accs, val_accs = [], [], [], []
    examples_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = calc_loss_batch_cls(m, input_batch, target_batch, model)
            loss.backward()
            optimizer.step()
            examples_seen += input_batch.shape[0]
            global_step += 1
            if global_step % eval_freq == 0:
                model.eval()
                with torch.no_grad():
                    train_losses.append(sum(calc_loss_batch_cls(m, x, y, model).item() for x, y in train_loader))
                    val_losses.append(sum(calc_loss_batch_cls(m, x, y, model).item() for x, y in val_loader))
                model.train()
        train_accs.append(calc_accuracy_loader(m, train_loader, model))
        val_accs.append(calc_accuracy_loader(m, val_loader, model))
    return train_losses, val_losses, train_accs, val_accs, examples_seen


def spam_classifier(m):
    """Chapter 6: fine-tuning the last block, the final norm and a new two-class head."""
    torch = m.torch
    model = pretrained_gpt(m)
    train_loader, val_loader, max_length = spam_loaders(m)
    frozen_before = {k: v.clone() for k, v in model.state_dict().items()}
    for param in model.parameters():
        param.requires_grad = False
    torch.manual_seed(123)
    num_classes = 2
    model.out_head = torch.nn.Linear(in_features=GPT2_CONFIG["emb_dim"], out_features=num_classes)
    for param in model.trf_blocks[-1].parameters():
        param.requires_grad = True
    for param in model.final_norm.parameters():
        param.requires_grad = True
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    initial_acc = calc_accuracy_loader(m, val_loader, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.1)
    history = train_classifier_simple(m, model, train_loader, val_loader, optimizer, num_epochs=3)
    unchanged = all(torch.equal(model.state_dict()[k], v) for k, v in frozen_before.items()
                    if k.startswith("trf_blocks.0.") or k.startswith("tok_emb"))
    frozen_grads = [model.trf_blocks[0].att.W_query.weight.grad, model.tok_emb.weight.grad]

    def classify_review(text_ids, model, max_length=None, pad_token_id=SPAM_PAD):
        model.eval()
        input_ids = list(text_ids)
        supported_context_length = model.pos_emb.weight.shape[0]
        input_ids = input_ids[:min(max_length, supported_context_length)]
        input_ids += [pad_token_id] * (max_length - len(input_ids))
        input_tensor = torch.tensor(input_ids).unsqueeze(0)
        with torch.no_grad():
            logits = model(input_tensor)[:, -1, :]
        predicted_label = torch.argmax(logits, dim=-1).item()
        return "spam" if predicted_label == 1 else "not spam"

    verdicts = [classify_review([9, 7, 20, 11], model, max_length), classify_review([9, 12, 20, 11], model, max_length)]
    return {"trainable": trainable, "initial_acc": initial_acc, "history": history, "unchanged": unchanged,
            "frozen_grads": frozen_grads, "verdicts": verdicts, "head": model.out_head.weight,
            "last_block": model.trf_blocks[-1].ff.layers[0].weight}


def test_llms_from_scratch_spam_classifier():
    ours, _ = run_both(spam_classifier, rtol=2e-4, atol=2e-5)
    d = 16
    assert ours["trainable"] == (4 * d * d + 4 * d + 2 * d * 4 * d + 5 * d + 4 * d) + 2 * d + (2 * d + 2)
    assert ours["unchanged"] is True and ours["frozen_grads"] == [None, None]
    train_losses, val_losses, train_accs, val_accs, examples_seen = ours["history"]
    assert examples_seen == 3 * 32
    assert train_losses[-1] < train_losses[0]


def lora_classifier(m):
    """Appendix E: LoRA over every Linear of the spam classifier, everything else frozen."""
    torch = m.torch
    model = pretrained_gpt(m)
    torch.manual_seed(123)
    model.out_head = torch.nn.Linear(in_features=GPT2_CONFIG["emb_dim"], out_features=2)
    train_loader, val_loader, max_length = spam_loaders(m)

    class LoRALayer(torch.nn.Module):
        def __init__(self, in_dim, out_dim, rank, alpha):
            super().__init__()
            self.A = torch.nn.Parameter(torch.empty(in_dim, rank))
            torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
            self.B = torch.nn.Parameter(torch.zeros(rank, out_dim))
            self.alpha = alpha

        def forward(self, x):
            x = self.alpha * (x @ self.A @ self.B)
            return x

    class LinearWithLoRA(torch.nn.Module):
        def __init__(self, linear, rank, alpha):
            super().__init__()
            self.linear = linear
            self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha)

        def forward(self, x):
            return self.linear(x) + self.lora(x)

    def replace_linear_with_lora(model, rank, alpha):
        for name, module in model.named_children():
            if isinstance(module, torch.nn.Linear):
                setattr(model, name, LinearWithLoRA(module, rank, alpha))
            else:
                replace_linear_with_lora(module, rank, alpha)

    total_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for param in model.parameters():
        param.requires_grad = False
    frozen = sum(p.numel() for p in model.parameters() if p.requires_grad)
    x, _ = next(iter(val_loader))
    with torch.no_grad():
        before = model(x)[:, -1, :]
    torch.manual_seed(123)
    replace_linear_with_lora(model, rank=4, alpha=8)
    lora_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        after = model(x)[:, -1, :]
    A_bound = model.trf_blocks[0].att.W_query.lora.A.abs().max()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.1)
    history = train_classifier_simple(m, model, train_loader, val_loader, optimizer, num_epochs=2)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return {"total_params": total_params, "frozen": frozen, "lora_params": lora_params, "before": before,
            "after": after, "A_bound": A_bound, "history": history, "names": names[:4],
            "B": model.trf_blocks[1].ff.layers[2].lora.B, "A": model.out_head.lora.A}


def test_llms_from_scratch_lora():
    ours, _ = run_both(lora_classifier, rtol=2e-4, atol=2e-5)
    assert ours["frozen"] == 0
    np.testing.assert_array_equal(ours["before"], ours["after"])  # B starts at zero
    d, r = 16, 4
    per_block = 4 * (d * r + r * d) + (d * r + r * 4 * d) + (4 * d * r + r * d)
    assert ours["lora_params"] == 2 * per_block + (d * r + r * 2)  # the out_head is Linear(16, 2)
    assert ours["A_bound"] <= 1 / math.sqrt(r)  # kaiming_uniform_(a=sqrt(5)) on (in, rank): fan_in is rank
    assert ours["names"][0] == "trf_blocks.0.att.W_query.lora.A"
    assert np.abs(ours["B"]).max() > 0  # trained from zero


INSTRUCTION_PAD = 49


def custom_collate_fn(m, batch, pad_token_id=INSTRUCTION_PAD, ignore_index=-100, allowed_max_length=None,
                      device="cpu"):
    torch = m.torch
    batch_max_length = max(len(item) + 1 for item in batch)
    inputs_lst, targets_lst = [], []
    for item in batch:
        new_item = item.copy()
        new_item += [pad_token_id]
        padded = new_item + [pad_token_id] * (batch_max_length - len(new_item))
        inputs = torch.tensor(padded[:-1])
        targets = torch.tensor(padded[1:])
        mask = targets == pad_token_id
        indices = torch.nonzero(mask).squeeze()
        if indices.numel() > 1:
            targets[indices[1:]] = ignore_index
        if allowed_max_length is not None:
            inputs = inputs[:allowed_max_length]
            targets = targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    inputs_tensor = torch.stack(inputs_lst).to(device)
    targets_tensor = torch.stack(targets_lst).to(device)
    return inputs_tensor, targets_tensor


def instruction_finetuning(m):
    """Chapter 7: the collate function under ``partial``, and a few fine-tuning steps with ignored targets."""
    torch, data = m.torch, m.data
    inputs_1, inputs_2, inputs_3 = [0, 1, 2, 3, 4], [5, 6], [7, 8, 9]
    demo = custom_collate_fn(m, (inputs_1, inputs_2, inputs_3))
    truncated = custom_collate_fn(m, (inputs_1, inputs_2, inputs_3), allowed_max_length=3)
    logits_1 = torch.tensor([[-1.0, 1.0], [-0.5, 1.5]])
    targets_1 = torch.tensor([0, 1])
    loss_1 = torch.nn.functional.cross_entropy(logits_1, targets_1)
    logits_2 = torch.tensor([[-1.0, 1.0], [-0.5, 1.5], [-0.5, 1.5]])
    targets_3 = torch.tensor([0, 1, -100])
    loss_3 = torch.nn.functional.cross_entropy(logits_2, targets_3)

    class InstructionDataset(data.Dataset):
        def __init__(self, items):
            self.encoded_texts = items

        def __getitem__(self, index):
            return self.encoded_texts[index]

        def __len__(self):
            return len(self.encoded_texts)

    rng = np.random.default_rng(3)
    items = [rng.integers(0, 40, int(rng.integers(3, 12))).tolist() for _ in range(24)]
    customized_collate_fn = partial(custom_collate_fn, m, device="cpu", allowed_max_length=12)
    torch.manual_seed(123)
    train_loader = data.DataLoader(InstructionDataset(items), batch_size=4, collate_fn=customized_collate_fn,
                                   shuffle=True, drop_last=True, num_workers=0)
    model = pretrained_gpt(m)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    losses, shapes = [], []
    model.train()
    for input_batch, target_batch in train_loader:
        optimizer.zero_grad()
        loss = calc_loss_batch(m, input_batch, target_batch, model)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        shapes.append(tuple(input_batch.shape))
    return {"demo": demo, "truncated": truncated, "loss_1": loss_1, "loss_3": loss_3, "losses": losses,
            "shapes": shapes, "wte": model.tok_emb.weight}


def test_llms_from_scratch_instruction_collate():
    ours, _ = run_both(instruction_finetuning, rtol=2e-4, atol=2e-5)
    inputs, targets = ours["demo"]
    P = INSTRUCTION_PAD
    np.testing.assert_array_equal(inputs, [[0, 1, 2, 3, 4], [5, 6, P, P, P], [7, 8, 9, P, P]])
    np.testing.assert_array_equal(targets, [[1, 2, 3, 4, P], [6, P, -100, -100, -100], [8, 9, P, -100, -100]])
    assert ours["truncated"][0].shape == (3, 3)
    assert ours["loss_1"] == pytest.approx(ours["loss_3"])
    assert all(s[1] <= 12 for s in ours["shapes"])


def dpo_collate_fn(m, batch, pad_token_id=INSTRUCTION_PAD, allowed_max_length=None, mask_prompt_tokens=True,
                   device="cpu"):
    torch = m.torch
    batch_data = {"prompt": [], "chosen": [], "rejected": [], "rejected_mask": [], "chosen_mask": []}
    max_length_common = 0
    if batch:
        for key in ["chosen", "rejected"]:
            current_max = max(len(item[key]) + 1 for item in batch)
            max_length_common = max(max_length_common, current_max)
    for item in batch:
        prompt = torch.tensor(item["prompt"])
        batch_data["prompt"].append(prompt)
        for key in ["chosen", "rejected"]:
            sequence = item[key]
            padded = sequence + [pad_token_id] * (max_length_common - len(sequence))
            mask = torch.ones(len(padded)).bool()
            mask[len(sequence):] = False
            if mask_prompt_tokens:
                mask[:prompt.shape[0] + 2] = False
            batch_data[key].append(torch.tensor(padded))
            batch_data[f"{key}_mask"].append(mask)
    for key in ["chosen", "rejected", "chosen_mask", "rejected_mask"]:
        tensor_stack = torch.stack(batch_data[key])
        if allowed_max_length is not None:
            tensor_stack = tensor_stack[:, :allowed_max_length]
        batch_data[key] = tensor_stack.to(device)
    return batch_data


def dpo(m):
    """The chapter 7 bonus: direct preference optimisation against a frozen copy of the model."""
    torch, F, data = m.torch, m.F, m.data
    policy_model = pretrained_gpt(m)
    reference_model = llm_modules(m)[3](GPT2_CONFIG)
    reference_model.load_state_dict(policy_model.state_dict())
    reference_model.eval()

    def compute_dpo_loss(model_chosen_logprobs, model_rejected_logprobs, reference_chosen_logprobs,
                         reference_rejected_logprobs, beta=0.1):
        model_logratios = model_chosen_logprobs - model_rejected_logprobs
        reference_logratios = reference_chosen_logprobs - reference_rejected_logprobs
        logits = model_logratios - reference_logratios
        losses = -F.logsigmoid(beta * logits)
        chosen_rewards = (model_chosen_logprobs - reference_chosen_logprobs).detach()
        rejected_rewards = (model_rejected_logprobs - reference_rejected_logprobs).detach()
        return losses.mean(), chosen_rewards.mean(), rejected_rewards.mean()

    def compute_logprobs(logits, labels, selection_mask=None):
        labels = labels[:, 1:].clone()
        logits = logits[:, :-1, :]
        log_probs = F.log_softmax(logits, dim=-1)
        selected_log_probs = torch.gather(input=log_probs, dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)
        if selection_mask is not None:
            mask = selection_mask[:, 1:].clone()
            selected_log_probs = selected_log_probs * mask
            avg_log_prob = selected_log_probs.sum(-1) / mask.sum(-1)
            return avg_log_prob
        else:
            return selected_log_probs.mean(-1)

    def compute_dpo_loss_batch(batch, policy_model, reference_model, beta):
        policy_chosen_log_probas = compute_logprobs(logits=policy_model(batch["chosen"]), labels=batch["chosen"],
                                                    selection_mask=batch["chosen_mask"])
        policy_rejected_log_probas = compute_logprobs(logits=policy_model(batch["rejected"]),
                                                      labels=batch["rejected"], selection_mask=batch["rejected_mask"])
        with torch.no_grad():
            ref_chosen_log_probas = compute_logprobs(logits=reference_model(batch["chosen"]), labels=batch["chosen"],
                                                     selection_mask=batch["chosen_mask"])
            ref_rejected_log_probas = compute_logprobs(logits=reference_model(batch["rejected"]),
                                                       labels=batch["rejected"], selection_mask=batch["rejected_mask"])
        return compute_dpo_loss(policy_chosen_log_probas, policy_rejected_log_probas, ref_chosen_log_probas,
                                ref_rejected_log_probas, beta=beta)

    rng = np.random.default_rng(5)
    items = []
    for _ in range(16):
        prompt = rng.integers(0, 40, int(rng.integers(2, 5))).tolist()
        chosen = prompt + [1, 2] + [3, 6, 9][: int(rng.integers(1, 4))]
        rejected = prompt + [1, 2] + rng.integers(10, 40, int(rng.integers(1, 5))).tolist()
        items.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    torch.manual_seed(123)
    loader = data.DataLoader(items, batch_size=4, shuffle=True, drop_last=True,
                             collate_fn=partial(dpo_collate_fn, m, allowed_max_length=14))
    optimizer = torch.optim.AdamW(policy_model.parameters(), lr=1e-3, weight_decay=0.01)
    history = []
    for epoch in range(2):
        policy_model.train()
        for batch in loader:
            optimizer.zero_grad()
            loss, chosen_rewards, rejected_rewards = compute_dpo_loss_batch(batch, policy_model, reference_model, 0.1)
            loss.backward()
            optimizer.step()
            history.append((loss.item(), chosen_rewards.item(), rejected_rewards.item()))
    first = dpo_collate_fn(m, items[:2])
    return {"history": history, "first": first, "wte": policy_model.tok_emb.weight,
            "ref_untouched": reference_model.tok_emb.weight}


def test_llms_from_scratch_dpo():
    ours, _ = run_both(dpo, rtol=2e-4, atol=2e-5)
    assert ours["history"][0][0] == pytest.approx(math.log(2), abs=1e-6)  # the policy is the reference at first
    assert ours["history"][-1][1] > ours["history"][-1][2]  # chosen rewarded over rejected
    np.testing.assert_array_equal(ours["ref_untouched"], gpt2_params(GPT2_CONFIG)["wte"])
    first = ours["first"]
    assert first["chosen_mask"].dtype == bool
    assert not first["chosen_mask"][:, :4].any()  # the prompt and two more tokens are masked
