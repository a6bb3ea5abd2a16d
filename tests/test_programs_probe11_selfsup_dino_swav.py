# ruff: noqa: B007, F841, UP008, UP032  (the programs are kept as their authors wrote them)
"""Self-supervised, contrastive and metric-learning programs as their reference repositories write them, run as
tests/probe11_selfsup_common.py says. Self-distillation and online clustering: DINO (multi-crop by
``unique_consecutive``, a weight-normed last layer by either API with a frozen magnitude, a running centre,
teacher-temperature and cosine lr/wd/momentum schedules per group, clipping and the last layer's grads set to None in
epoch one), its teacher by deepcopy; SwAV (Sinkhorn-Knopp in place, prototypes normalised each step, a feature
queue)."""

import copy
import math

import numpy as np
import pytest

from .probe11_selfsup_common import backbone, images
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# DINO (facebookresearch/dino)
# ----------------------------------------------------------------------------------------------


def dino_parts(m, parametrized=False):
    torch, nn, F = m.torch, m.nn, m.F

    class DINOHead(nn.Module):
        def __init__(self, in_dim, out_dim, use_bn=False, norm_last_layer=True, nlayers=3, hidden_dim=2048,
                     bottleneck_dim=256):
            super().__init__()
            nlayers = max(nlayers, 1)
            if nlayers == 1:
                self.mlp = nn.Linear(in_dim, bottleneck_dim)
            else:
                layers = [nn.Linear(in_dim, hidden_dim)]
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
                for _ in range(nlayers - 2):
                    layers.append(nn.Linear(hidden_dim, hidden_dim))
                    if use_bn:
                        layers.append(nn.BatchNorm1d(hidden_dim))
                    layers.append(nn.GELU())
                layers.append(nn.Linear(hidden_dim, bottleneck_dim))
                self.mlp = nn.Sequential(*layers)
            self.apply(self._init_weights)
            if parametrized:
                self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim,
                                                                                  bias=False))
                self.last_layer.parametrizations.weight.original0.data.fill_(1)
                if norm_last_layer:
                    self.last_layer.parametrizations.weight.original0.requires_grad = False
            else:
                self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
                self.last_layer.weight_g.data.fill_(1)
                if norm_last_layer:
                    self.last_layer.weight_g.requires_grad = False

        def _init_weights(self, m):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.constant_(m.bias, 0)

        def forward(self, x):
            x = self.mlp(x)
            x = nn.functional.normalize(x, dim=-1, p=2)
            x = self.last_layer(x)
            return x

    class MultiCropWrapper(nn.Module):
        def __init__(self, backbone, head):
            super(MultiCropWrapper, self).__init__()
            # disable layers dedicated to ImageNet labels classification
            backbone.fc, backbone.head = nn.Identity(), nn.Identity()
            self.backbone = backbone
            self.head = head

        def forward(self, x):
            # convert to list
            if not isinstance(x, list):
                x = [x]
            idx_crops = torch.cumsum(torch.unique_consecutive(
                torch.tensor([inp.shape[-1] for inp in x]),
                return_counts=True,
            )[1], 0)
            start_idx, output = 0, torch.empty(0).to(x[0].device)
            for end_idx in idx_crops:
                _out = self.backbone(torch.cat(x[start_idx: end_idx]))
                # The output is a tuple with XCiT model. See:
                # https://github.com/facebookresearch/xcit/blob/master/xcit.py#L404-L405
                if isinstance(_out, tuple):
                    _out = _out[0]
                # accumulate outputs
                output = torch.cat((output, _out))
                start_idx = end_idx
            # Run the head forward on the concatenated features.
            return self.head(output)

    class DINOLoss(nn.Module):
        def __init__(self, out_dim, ncrops, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, nepochs,
                     student_temp=0.1, center_momentum=0.9):
            super().__init__()
            self.student_temp = student_temp
            self.center_momentum = center_momentum
            self.ncrops = ncrops
            self.register_buffer("center", torch.zeros(1, out_dim))
            # we apply a warm up for the teacher temperature because
            # a too high temperature makes the training instable at the beginning
            self.teacher_temp_schedule = np.concatenate((
                np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs),
                np.ones(nepochs - warmup_teacher_temp_epochs) * teacher_temp
            ))

        def forward(self, student_output, teacher_output, epoch):
            """
            Cross-entropy between softmax outputs of the teacher and student networks.
            """
            student_out = student_output / self.student_temp
            student_out = student_out.chunk(self.ncrops)
            # teacher centering and sharpening
            temp = self.teacher_temp_schedule[epoch]
            teacher_out = F.softmax((teacher_output - self.center) / temp, dim=-1)
            teacher_out = teacher_out.detach().chunk(2)
            total_loss = 0
            n_loss_terms = 0
            for iq, q in enumerate(teacher_out):
                for v in range(len(student_out)):
                    if v == iq:
                        # we skip cases where student and teacher operate on the same view
                        continue
                    loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                    total_loss += loss.mean()
                    n_loss_terms += 1
            total_loss /= n_loss_terms
            self.update_center(teacher_output)
            return total_loss

        @torch.no_grad()
        def update_center(self, teacher_output):
            """
            Update center used for teacher output.
            """
            batch_center = torch.sum(teacher_output, dim=0, keepdim=True)
            batch_center = batch_center / len(teacher_output)
            # ema update
            self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)

    def student_and_teacher():
        student = MultiCropWrapper(backbone(m), DINOHead(16, 12, norm_last_layer=True, hidden_dim=24,
                                                         bottleneck_dim=8))
        teacher = MultiCropWrapper(backbone(m), DINOHead(16, 12, hidden_dim=24, bottleneck_dim=8))
        return student, teacher

    return student_and_teacher, DINOLoss


def dino_student(m, parametrized=False):
    return dino_parts(m, parametrized)[0]()[0]


def dino(m, weights, parametrized, epochs=2, niter_per_ep=2):
    torch, nn = m.torch, m.nn
    student_and_teacher, DINOLoss = dino_parts(m, parametrized)

    def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
        warmup_schedule = np.array([])
        warmup_iters = warmup_epochs * niter_per_ep
        if warmup_epochs > 0:
            warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
        iters = np.arange(epochs * niter_per_ep - warmup_iters)
        schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
        schedule = np.concatenate((warmup_schedule, schedule))
        assert len(schedule) == epochs * niter_per_ep
        return schedule

    def get_params_groups(model):
        regularized = []
        not_regularized = []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            # we do not regularize biases nor Norm parameters
            if name.endswith(".bias") or len(param.shape) == 1:
                not_regularized.append(param)
            else:
                regularized.append(param)
        return [{'params': regularized}, {'params': not_regularized, 'weight_decay': 0.}]

    def clip_gradients(model, clip):
        norms = []
        for name, p in model.named_parameters():
            if p.grad is not None:
                param_norm = p.grad.data.norm(2)
                norms.append(param_norm.item())
                clip_coef = clip / (param_norm + 1e-6)
                if clip_coef < 1:
                    p.grad.data.mul_(clip_coef)
        return norms

    def cancel_gradients_last_layer(epoch, model, freeze_last_layer):
        if epoch >= freeze_last_layer:
            return
        for n, p in model.named_parameters():
            if "last_layer" in n:
                p.grad = None

    student, teacher = student_and_teacher()
    load(m, student, weights)
    # teacher and student start with the same weights
    teacher.load_state_dict(student.state_dict())
    # there is no backpropagation through the teacher, so no need for gradients
    for p in teacher.parameters():
        p.requires_grad = False
    dino_loss = DINOLoss(12, 4, 0.04, 0.07, 1, epochs)
    params_groups = get_params_groups(student)
    optimizer = m.optim.AdamW(params_groups)  # to use with ViTs
    lr_schedule = cosine_scheduler(0.005 * 16 / 256., 1e-6, epochs, niter_per_ep, warmup_epochs=1)
    wd_schedule = cosine_scheduler(0.04, 0.4, epochs, niter_per_ep)
    momentum_schedule = cosine_scheduler(0.9, 1, epochs, niter_per_ep)
    log, last_layer_grads = [], []
    for epoch in range(epochs):
        for it in range(niter_per_ep):
            x = images(m, n=4, side=12, seed=30 + epoch * niter_per_ep + it)
            local = images(m, n=4, side=6, seed=50 + epoch * niter_per_ep + it)
            crops = [x, torch.flip(x, dims=[3]), local, local.flip(2)]
            it = niter_per_ep * epoch + it  # global training iteration
            for i, param_group in enumerate(optimizer.param_groups):
                param_group["lr"] = lr_schedule[it]
                if i == 0:  # only the first group is regularized
                    param_group["weight_decay"] = wd_schedule[it]
            teacher_output = teacher(crops[:2])  # only the 2 global views pass through the teacher
            student_output = student(crops)
            loss = dino_loss(student_output, teacher_output, epoch)
            if not math.isfinite(loss.item()):
                raise RuntimeError("Loss is {}, stopping training".format(loss.item()))
            optimizer.zero_grad()
            loss.backward()
            param_norms = clip_gradients(student, 3.0)
            cancel_gradients_last_layer(epoch, student, 1)
            last_layer_grads.append([p.grad for n, p in student.named_parameters() if "last_layer" in n])
            optimizer.step()
            # EMA update for the teacher
            with torch.no_grad():
                m_ = momentum_schedule[it]  # momentum parameter
                for param_q, param_k in zip(student.parameters(), teacher.parameters()):
                    param_k.data.mul_(m_).add_((1 - m_) * param_q.detach().data)
            log.append((loss.item(), param_norms, [g["lr"] for g in optimizer.param_groups],
                        [g["weight_decay"] for g in optimizer.param_groups]))
    return {"log": log, "student": student.state_dict(), "teacher": teacher.state_dict(),
            "center": dino_loss.center, "last_layer_grads": last_layer_grads,
            "grads": [p.grad for p in student.parameters() if p.grad is not None]}


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("parametrized", [False, True], ids=["weight_norm", "parametrizations"])
def test_dino(parametrized):
    weights = weights_of(lambda m: dino_student(m, parametrized))
    ours, _ = run_both(dino, weights, parametrized, rtol=1e-4, atol=1e-5)
    first, second = [g for g in ours["last_layer_grads"][:2]], ours["last_layer_grads"][2:]
    assert all(g == [] or all(x is None for x in g) for g in first)  # frozen in the first epoch
    assert all(g[-1] is not None for g in second)
    magnitude = "head.last_layer." + ("parametrizations.weight.original0" if parametrized else "weight_g")
    np.testing.assert_array_equal(ours["student"][magnitude], 1)  # the frozen magnitude stayed 1
    assert all(loss > 0 for loss, *_ in ours["log"])
    assert ours["log"][0][3] == [pytest.approx(0.04), 0.0]
    assert ours["center"].shape == (1, 12) and np.abs(ours["center"]).max() > 0


# ----------------------------------------------------------------------------------------------
# SwAV (facebookresearch/swav: multi-crop, a feature queue, Sinkhorn-Knopp, prototypes normalised each step)
# ----------------------------------------------------------------------------------------------


def swav_model(m, output_dim=8, nmb_prototypes=10):
    torch, nn = m.torch, m.nn

    class SwAVNet(nn.Module):
        def __init__(self, normalize=True):
            super().__init__()
            self.l2norm = normalize
            self.net = backbone(m)
            self.net.fc = nn.Identity()
            self.projection_head = nn.Sequential(
                nn.Linear(16, 24), nn.BatchNorm1d(24), nn.ReLU(inplace=True), nn.Linear(24, output_dim))
            self.prototypes = nn.Linear(output_dim, nmb_prototypes, bias=False)

        def forward_backbone(self, x):
            return self.net(x)

        def forward_head(self, x):
            if self.projection_head is not None:
                x = self.projection_head(x)
            if self.l2norm:
                x = nn.functional.normalize(x, dim=1, p=2)
            if self.prototypes is not None:
                return x, self.prototypes(x)
            return x

        def forward(self, inputs):
            if not isinstance(inputs, list):
                inputs = [inputs]
            idx_crops = torch.cumsum(torch.unique_consecutive(
                torch.tensor([inp.shape[-1] for inp in inputs]),
                return_counts=True,
            )[1], 0)
            start_idx = 0
            for end_idx in idx_crops:
                _out = self.forward_backbone(torch.cat(inputs[start_idx: end_idx]))
                if start_idx == 0:
                    output = _out
                else:
                    output = torch.cat((output, _out))
                start_idx = end_idx
            return self.forward_head(output)

    return SwAVNet()


def swav(m, weights, steps=5, epsilon=0.05, sinkhorn_iterations=3, temperature=0.1, queue_length=8,
         crops_for_assign=(0, 1), nmb_crops=(2, 2), freeze_prototypes_niters=2):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, swav_model(m), weights)
    optimizer = m.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-6)

    @torch.no_grad()
    def distributed_sinkhorn(out):
        Q = torch.exp(out / epsilon).t()  # Q is K-by-B for consistency with notations from our paper
        B = Q.shape[1] * 1  # number of samples to assign
        K = Q.shape[0]  # how many prototypes
        # make the matrix sums to 1
        sum_Q = torch.sum(Q)
        Q /= sum_Q
        for it in range(sinkhorn_iterations):
            # normalize each row: total weight per prototype must be 1/K
            sum_of_rows = torch.sum(Q, dim=1, keepdim=True)
            Q /= sum_of_rows
            Q /= K
            # normalize each column: total weight per sample must be 1/B
            Q /= torch.sum(Q, dim=0, keepdim=True)
            Q /= B
        Q *= B  # the colomns must sum to 1 so that Q is an assignment
        return Q.t()

    queue = torch.zeros(len(crops_for_assign), queue_length, 8)
    use_the_queue = False
    log, assignments = [], []
    for iteration in range(steps):
        x = images(m, n=4, seed=80 + iteration)
        small = images(m, n=4, side=6, seed=90 + iteration)
        inputs = [x, x.flip(3) * 0.9, small, small.transpose(2, 3)]
        # normalize the prototypes
        with torch.no_grad():
            w = model.prototypes.weight.data.clone()
            w = nn.functional.normalize(w, dim=1, p=2)
            model.prototypes.weight.copy_(w)
        # ============ multi-res forward passes ... ============
        embedding, output = model(inputs)
        embedding = embedding.detach()
        bs = inputs[0].size(0)
        # ============ swav loss ... ============
        loss = 0
        for i, crop_id in enumerate(crops_for_assign):
            with torch.no_grad():
                out = output[bs * crop_id: bs * (crop_id + 1)].detach()
                # time to use the queue
                if queue is not None:
                    if use_the_queue or not torch.all(queue[i, -1, :] == 0):
                        use_the_queue = True
                        out = torch.cat((torch.mm(
                            queue[i],
                            model.prototypes.weight.t()
                        ), out))
                    # fill the queue
                    queue[i, bs:] = queue[i, :-bs].clone()
                    queue[i, :bs] = embedding[crop_id * bs: (crop_id + 1) * bs]
                # get assignments
                q = distributed_sinkhorn(out)[-bs:]
                assignments.append(q)
            # cluster assignment prediction
            subloss = 0
            for v in np.delete(np.arange(np.sum(nmb_crops)), crop_id):
                x = output[bs * v: bs * (v + 1)] / temperature
                subloss -= torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
            loss += subloss / (np.sum(nmb_crops) - 1)
        loss /= len(crops_for_assign)
        # ============ backward and optim step ... ============
        optimizer.zero_grad()
        loss.backward()
        # cancel gradients for the prototypes
        if iteration < freeze_prototypes_niters:
            for name, p in model.named_parameters():
                if "prototypes" in name:
                    p.grad = None
        optimizer.step()
        log.append((loss.item(), use_the_queue))
    return {"log": log, "assignments": assignments, "queue": queue, "state": model.state_dict(),
            "grads": [p.grad for p in model.parameters()]}


def test_swav():
    weights = weights_of(swav_model)
    # atol 5e-5: the float32 run's own noise here. Against the same program in float64, PyTorch's float32 last
    # gradient is 2.0e-5 off and ours 3.5e-5 (Sinkhorn's exp(scores / 0.05) magnifies each rounding)
    ours, _ = run_both(swav, weights, rtol=1e-4, atol=5e-5)
    assert [used for _, used in ours["log"]] == [False, False, True, True, True]
    for q in ours["assignments"]:
        np.testing.assert_allclose(q.sum(1), 1, rtol=1e-5)  # each sample's assignment is a distribution
    np.testing.assert_allclose(np.linalg.norm(ours["queue"], axis=-1), 1, rtol=1e-5)
    # the prototypes were normalised before the last step, then moved by it
    assert ours["grads"][-1] is not None
    assert not np.allclose(np.linalg.norm(ours["state"]["prototypes.weight"], axis=1), 1)


# ----------------------------------------------------------------------------------------------
# DINO's teacher by copy.deepcopy of a weight-normed student, the loss by F.cross_entropy on soft targets
# ----------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_weight_norm_module_refuses_deepcopy():
    """Why DINO builds its teacher as a second model: the old weight_norm keeps its weight as a computed
    tensor, which neither library deep-copies."""
    def program(m):
        student = dino_student(m, parametrized=False)
        with pytest.raises(RuntimeError, match="deepcopy protocol") as error:
            copy.deepcopy(student)
        return "weight_norm" in str(error.value)

    assert run_both(program)[0] is True


def test_dino_teacher_by_deepcopy():
    parametrized = True
    def program(m, weights, steps=3):
        torch, F = m.torch, m.F
        student = load(m, dino_student(m, parametrized), weights)
        teacher = copy.deepcopy(student)
        for p in teacher.parameters():
            p.requires_grad = False
        optimizer = m.optim.SGD(student.parameters(), lr=0.5, momentum=0.9)
        log = []
        for step in range(steps):
            x = images(m, n=4, seed=120 + step)
            local = images(m, n=4, side=6, seed=130 + step)
            with torch.no_grad():
                targets = F.softmax(teacher([x, x.flip(3)]) / 0.04, dim=-1).chunk(2)
            outputs = (student([x, x.flip(3), local]) / 0.1).chunk(3)
            loss = sum(F.cross_entropy(outputs[v], targets[iq]) for iq in range(2) for v in range(3) if v != iq) / 4
            smoothed = F.cross_entropy(outputs[2], targets[0].argmax(-1), label_smoothing=0.1)
            optimizer.zero_grad()
            (loss + smoothed).backward()
            optimizer.step()
            with torch.no_grad():
                for param_q, param_k in zip(student.parameters(), teacher.parameters()):
                    param_k.data.mul_(0.9).add_((1 - 0.9) * param_q.detach().data)
            log.append((loss.item(), smoothed.item()))
        weight = teacher.head.last_layer.weight
        return {"log": log, "teacher": teacher.state_dict(), "student": student.state_dict(),
                "teacher_weight": weight, "teacher_weight_is_student_weight": weight is student.head.last_layer.weight}

    weights = weights_of(lambda m: dino_student(m, parametrized))
    ours, _ = run_both(program, weights, rtol=1e-4, atol=5e-4)  # (float32 heads reach ~1e3: 1e-4 of it)
    assert not ours["teacher_weight_is_student_weight"]
    # the teacher's weight is recomputed from its own magnitude and direction, not the student's
    v = ours["teacher"]["head.last_layer." + ("parametrizations.weight.original1" if parametrized else "weight_v")]
    np.testing.assert_allclose(ours["teacher_weight"], v / np.linalg.norm(v, axis=1, keepdims=True), rtol=1e-5,
                               atol=1e-6)
