# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Course and book programs, run as tests/probe17_courses_common.py says. UvA deep learning tutorials: tutorial 10's
adversarial patch (a tanh-squashed Parameter pasted by slice assignment at NumPy-random offsets, SGD with momentum
against a frozen net) and tutorial 16's ProtoMAML (prototype-initialised output layer, inner loop on a ``deepcopy``
with ``.data -=`` updates, the ``(w - init).detach() + init`` re-attachment, ``p_global.grad += p_local.grad``)."""

import numpy as np

from .probe17_courses_common import shapes_images
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# UvA tutorials 10 (adversarial patches) and 16 (ProtoMAML)
# ----------------------------------------------------------------------------------------------


def uva_adversarial_patch(m):
    """Tutorial 10: a patch Parameter squashed by tanh into the normalised image range, pasted by slice assignment
    at random offsets into each image of a batch, trained by SGD with momentum to make a frozen classifier
    answer one class; its top-5 success measured under ``no_grad``."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    NORM_MEAN = np.array([0.485, 0.456, 0.406])
    NORM_STD = np.array([0.229, 0.224, 0.225])
    TENSOR_MEANS, TENSOR_STD = torch.FloatTensor(NORM_MEAN)[:, None, None], torch.FloatTensor(NORM_STD)[:, None, None]

    def patch_forward(patch):
        patch = (torch.tanh(patch) + 1 - 2 * TENSOR_MEANS) / (2 * TENSOR_STD)
        return patch

    def place_patch(img, patch):
        for i in range(img.shape[0]):
            h_offset = np.random.randint(0, img.shape[2] - patch.shape[1] - 1)
            w_offset = np.random.randint(0, img.shape[3] - patch.shape[2] - 1)
            img[i, :, h_offset:h_offset + patch.shape[1], w_offset:w_offset + patch.shape[2]] = patch_forward(patch)
        return img

    torch.manual_seed(0)
    pretrained_model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                     nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(16, 10))
    pretrained_model.eval()
    for p in pretrained_model.parameters():
        p.requires_grad = False
    imgs, _ = shapes_images(n=16)
    imgs = torch.from_numpy(imgs)

    def patch_attack(model, target_class, patch_size=4, num_epochs=3):
        patch = nn.Parameter(torch.zeros(3, patch_size, patch_size), requires_grad=True)
        optimizer = optim.SGD([patch], lr=1e-1, momentum=0.8)
        loss_module = nn.CrossEntropyLoss()
        losses = []
        for epoch in range(num_epochs):
            for start in range(0, 16, 8):
                img = imgs[start:start + 8].clone()
                img = place_patch(img, patch)
                pred = model(img)
                labels = torch.zeros(img.shape[0], dtype=torch.long).fill_(target_class)
                loss = loss_module(pred, labels)
                optimizer.zero_grad()
                loss.mean().backward()
                optimizer.step()
                losses.append(loss.item())
        return patch.data, losses

    def eval_patch(model, patch, target_class):
        model.eval()
        tp, tp_5, counter = 0., 0., 0.
        with torch.no_grad():
            img = place_patch(imgs.clone(), patch)
            pred = model(img)
            tp += torch.logical_and(pred.argmax(dim=-1) == target_class, torch.ones(16, dtype=torch.bool)).sum()
            tp_5 += torch.logical_and((pred.topk(5, dim=-1)[1] == target_class).any(dim=-1),
                                      torch.ones(16, dtype=torch.bool)).sum()
            counter += 16
        return (tp / counter).item(), (tp_5 / counter).item()

    np.random.seed(0)
    patch, losses = patch_attack(pretrained_model, target_class=3)
    np.random.seed(1)
    acc, top5 = eval_patch(pretrained_model, patch, target_class=3)
    pasted = patch_forward(patch)
    return {"patch": patch, "losses": losses, "acc": acc, "top5": top5, "pasted": pasted}


def test_uva_adversarial_patch():
    ours, _ = run_both(uva_adversarial_patch, rtol=2e-4, atol=2e-5)
    assert ours["losses"][-1] < ours["losses"][0]
    mean, std = np.array([0.485, 0.456, 0.406])[:, None, None], np.array([0.229, 0.224, 0.225])[:, None, None]
    np.testing.assert_allclose(ours["pasted"], (np.tanh(ours["patch"]) + 1 - 2 * mean) / (2 * std), rtol=1e-5)


def uva_protomaml(m):
    """Tutorial 16's ProtoMAML: prototypes (``torch.unique(...).sort()``, ``torch.where(targets == c)[0]``) as the
    output layer's initialisation, an inner loop on a ``deepcopy`` of the network with SGD and ``.data -=`` updates
    of detached output weights, the straight-through re-attachment ``(w - init).detach() + init``, and the
    first-order outer gradient ``p_global.grad += p_local.grad`` over tasks, stepped by AdamW."""
    from copy import deepcopy

    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    def calculate_prototypes(features, targets):
        classes, _ = torch.unique(targets).sort()
        prototypes = []
        for c in classes:
            p = features[torch.where(targets == c)[0]].mean(dim=0)
            prototypes.append(p)
        prototypes = torch.stack(prototypes, dim=0)
        return prototypes, classes

    def split_batch(imgs, targets):
        support_imgs, query_imgs = imgs.chunk(2, dim=0)
        support_targets, query_targets = targets.chunk(2, dim=0)
        return support_imgs, query_imgs, support_targets, query_targets

    class ProtoMAML(nn.Module):
        def __init__(self, proto_dim, lr, lr_inner, lr_output, num_inner_steps):
            super().__init__()
            self.lr, self.lr_inner, self.lr_output, self.num_inner_steps = lr, lr_inner, lr_output, num_inner_steps
            self.model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                       nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, proto_dim))

        def run_model(self, local_model, output_weight, output_bias, imgs, labels):
            feats = local_model(imgs)
            preds = F.linear(feats, output_weight, output_bias)
            loss = F.cross_entropy(preds, labels)
            acc = (preds.argmax(dim=1) == labels).float()
            return loss, preds, acc

        def adapt_few_shot(self, support_imgs, support_targets):
            support_feats = self.model(support_imgs)
            prototypes, classes = calculate_prototypes(support_feats, support_targets)
            support_labels = (classes[None, :] == support_targets[:, None]).long().argmax(dim=-1)
            local_model = deepcopy(self.model)
            local_model.train()
            local_optim = optim.SGD(local_model.parameters(), lr=self.lr_inner)
            local_optim.zero_grad()
            init_weight = 2 * prototypes
            init_bias = -torch.norm(prototypes, dim=1) ** 2
            output_weight = init_weight.detach().requires_grad_()
            output_bias = init_bias.detach().requires_grad_()
            for _ in range(self.num_inner_steps):
                loss, _, _ = self.run_model(local_model, output_weight, output_bias, support_imgs, support_labels)
                loss.backward()
                local_optim.step()
                output_weight.data -= self.lr_output * output_weight.grad
                output_bias.data -= self.lr_output * output_bias.grad
                local_optim.zero_grad()
                output_weight.grad.fill_(0)
                output_bias.grad.fill_(0)
            output_weight = (output_weight - init_weight).detach() + init_weight
            output_bias = (output_bias - init_bias).detach() + init_bias
            return local_model, output_weight, output_bias, classes

        def outer_loop(self, batch, optimizer, mode="train"):
            accuracies, losses = [], []
            self.model.zero_grad()
            for task_batch in batch:
                imgs, targets = task_batch
                support_imgs, query_imgs, support_targets, query_targets = split_batch(imgs, targets)
                local_model, output_weight, output_bias, classes = self.adapt_few_shot(support_imgs, support_targets)
                query_labels = (classes[None, :] == query_targets[:, None]).long().argmax(dim=-1)
                loss, preds, acc = self.run_model(local_model, output_weight, output_bias, query_imgs, query_labels)
                if mode == "train":
                    loss.backward()
                    for p_global, p_local in zip(self.model.parameters(), local_model.parameters()):
                        p_global.grad += p_local.grad
                accuracies.append(acc.mean().detach())
                losses.append(loss.detach())
            if mode == "train":
                optimizer.step()
                optimizer.zero_grad()
            return sum(losses) / len(losses), sum(accuracies) / len(accuracies)

    images, labels = shapes_images(n=48)
    tasks = []
    for t in range(3):  # 2-way 3-shot tasks, support and query halves with the same class order
        classes = [t % 4, (t + 1) % 4]
        idx = [np.flatnonzero(labels == c)[:6] for c in classes]
        order = np.concatenate([np.concatenate([i[:3] for i in idx]), np.concatenate([i[3:6] for i in idx])])
        tasks.append((torch.from_numpy(images[order]), torch.from_numpy(labels[order] * 7)))  # (labels 0/7/14/21)
    torch.manual_seed(42)
    protomaml = ProtoMAML(proto_dim=6, lr=1e-3, lr_inner=0.1, lr_output=0.1, num_inner_steps=2)
    optimizer = optim.AdamW(protomaml.parameters(), lr=1e-3)
    history = []
    for step in range(3):
        protomaml.train()
        history.append(protomaml.outer_loop(tasks, optimizer))
    protomaml.eval()
    val = protomaml.outer_loop(tasks[:1], optimizer, mode="val")
    return {"history": history, "val": val, "conv": protomaml.model[0].weight, "head": protomaml.model[-1].bias,
            "running_var": protomaml.model[1].running_var}


def test_uva_protomaml():
    ours, _ = run_both(uva_protomaml, rtol=2e-4, atol=2e-5)
    assert len(ours["history"]) == 3
    assert 0 <= ours["val"][1] <= 1
