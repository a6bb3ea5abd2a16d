# ruff: noqa: F841, UP008, UP032  (the programs are kept as their authors wrote them)
"""Metric-learning and retrieval programs, run as tests/probe16_metric_common.py says. Training machinery: pml's
trainers, condensed (TrainWithClassifier over models, optimizers, schedulers and gradient clippers kept in dicts, a
frozen BatchNorm, RegularFace and an Lp embedding regulariser), checkpointed with ``torch.save`` and resumed into
fresh objects that continue as the uninterrupted run does; the original RAdam as written for PyTorch 1 (``addcmul_(1
- beta2, grad, grad)``, the number-first overloads, fp32 copies, a step-size cache) across its warm-up into the
rectified update."""

import math
import warnings

import numpy as np
import pytest

from .probe16_metric_common import clustered, embedder, pml
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# pml's trainers, condensed: TrainWithClassifier over models / optimizers / schedulers / gradient clippers kept in
# dicts (a trunk whose fc is replaced by Identity, its BatchNorm frozen by ``Module.apply`` on class names), a
# miner, loss weights, RegularFace on the classifier's weights and an Lp embedding regulariser; checkpointed with
# ``torch.save`` to a buffer and resumed into fresh objects, which must continue as the uninterrupted run does
# ----------------------------------------------------------------------------------------------


def trainer_parts(m):
    torch, nn = m.torch, m.nn

    class Trunk(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU())
            self.fc = nn.Linear(12, 3)  # an ImageNet head, dropped

        def forward(self, x):
            return self.fc(self.features(x))

    class MLP(nn.Module):
        # layer_sizes[0] is the dimension of the input
        # layer_sizes[-1] is the dimension of the output
        def __init__(self, layer_sizes, final_relu=False):
            super().__init__()
            layer_list = []
            layer_sizes = [int(x) for x in layer_sizes]
            num_layers = len(layer_sizes) - 1
            final_relu_layer = num_layers if final_relu else num_layers - 1
            for i in range(len(layer_sizes) - 1):
                input_size = layer_sizes[i]
                curr_size = layer_sizes[i + 1]
                if i < final_relu_layer:
                    layer_list.append(nn.ReLU(inplace=False))
                layer_list.append(nn.Linear(input_size, curr_size))
            self.net = nn.Sequential(*layer_list)
            self.last_linear = self.net[-1]

        def forward(self, x):
            return self.net(x)

    trunk = Trunk()
    trunk_output_size = trunk.fc.in_features
    trunk.fc = nn.Identity()
    embedder = MLP([trunk_output_size, 8])
    classifier = MLP([8, 4])
    return {"trunk": trunk, "embedder": embedder, "classifier": classifier}


def trainer_program(m, weights, epochs=2, resume_after=None):
    import io
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    P = pml(m)

    def set_layers_to_eval(layer_name):
        def set_to_eval(m):
            classname = m.__class__.__name__
            if classname.find(layer_name) != -1:
                m.eval()
        return set_to_eval

    def regular_face(weights):
        num_classes = weights.size(0)
        distance = P.CosineSimilarity()
        cos = distance(weights)
        with torch.no_grad():
            cos1 = cos.clone()
            cos1.fill_diagonal_(P.neg_inf(weights.dtype))
            _, indices = distance.smallest_dist(cos1, dim=1)
            mask = torch.zeros((num_classes, num_classes), dtype=weights.dtype)
            row_nums = torch.arange(num_classes, dtype=torch.long)
            mask[row_nums, indices] = 1
        return torch.mean(torch.sum(cos * mask, dim=1))

    def lp_regularizer(embeddings, p=2, power=2):
        reg = torch.norm(embeddings, p=p, dim=1)
        if power != 1:
            reg = reg**power
        return torch.mean(reg)

    def build():
        models = trainer_parts(m)
        for name, model in models.items():
            model.load_state_dict({k[len(name) + 1:]: torch.tensor(v) for k, v in weights.items()
                                   if k.startswith(name + ".")})
        optimizers = {
            "trunk_optimizer": optim.SGD(models["trunk"].parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4),
            "embedder_optimizer": optim.Adam(models["embedder"].parameters(), lr=0.01, betas=(0.8, 0.95)),
            "classifier_optimizer": optim.RMSprop(models["classifier"].parameters(), lr=0.005, alpha=0.9),
        }
        schedulers = {
            "trunk_scheduler_by_iteration": optim.lr_scheduler.StepLR(optimizers["trunk_optimizer"], step_size=2,
                                                                      gamma=0.5),
            "embedder_scheduler_by_epoch": optim.lr_scheduler.CosineAnnealingLR(optimizers["embedder_optimizer"],
                                                                               T_max=3, eta_min=1e-3),
        }
        clippers = {
            "trunk_grad_clipper": lambda: nn.utils.clip_grad_norm_(models["trunk"].parameters(), 0.5),
            "embedder_grad_clipper": lambda: nn.utils.clip_grad_value_(models["embedder"].parameters(), 0.05),
        }
        return models, optimizers, schedulers, clippers

    models, optimizers, schedulers, clippers = build()
    loss_funcs = {"metric_loss": P.CircleLoss(m=0.3, gamma=8), "classifier_loss": nn.CrossEntropyLoss()}
    miner = P.TripletMarginMiner(margin=0.5, type_of_triplets="all", distance=P.CosineSimilarity())
    loss_weights = {"metric_loss": 1, "classifier_loss": 0.5, "regular_face": 0.1, "embedding_reg": 0.01}
    x_np, y_np = clustered(n_classes=4, per_class=6, spread=1.0, seed=4)
    dataset = m.data.TensorDataset(torch.tensor(x_np), torch.tensor(y_np))
    loader = m.data.DataLoader(dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3),
                               drop_last=True)
    log = []

    def set_to_train():
        for model in models.values():
            model.train()
        models["trunk"].apply(set_layers_to_eval("BatchNorm"))  # freeze_trunk_batchnorm

    def state():
        return {"models": {k: v.state_dict() for k, v in models.items()},
                "optimizers": {k: v.state_dict() for k, v in optimizers.items()},
                "schedulers": {k: v.state_dict() for k, v in schedulers.items()}}

    for epoch in range(1, epochs + 1):
        if resume_after is not None and epoch == resume_after + 1:
            buffer = io.BytesIO()
            torch.save(state(), buffer)
            buffer.seek(0)
            checkpoint = torch.load(buffer, weights_only=True)
            models, optimizers, schedulers, clippers = build()  # fresh objects, then the checkpoint
            for k, v in checkpoint["models"].items():
                models[k].load_state_dict(v)
            for k, v in checkpoint["optimizers"].items():
                optimizers[k].load_state_dict(v)
            for k, v in checkpoint["schedulers"].items():
                schedulers[k].load_state_dict(v)
        set_to_train()
        for data, labels in loader:
            for v in models.values():
                v.zero_grad()
            for v in optimizers.values():
                v.zero_grad()
            embeddings = models["embedder"](models["trunk"](data))
            logits = models["classifier"](embeddings)
            indices_tuple = miner(embeddings, labels)
            losses = {"metric_loss": loss_funcs["metric_loss"](embeddings, labels, indices_tuple),
                      "classifier_loss": loss_funcs["classifier_loss"](logits, labels),
                      "regular_face": regular_face(models["classifier"].last_linear.weight),
                      "embedding_reg": lp_regularizer(embeddings)}
            total_loss = sum(losses[k] * loss_weights[k] for k in losses)
            total_loss.backward()
            norms = [v() for v in clippers.values()]
            for v in optimizers.values():
                v.step()
            for k, v in schedulers.items():
                if k.endswith("_scheduler_by_iteration"):
                    v.step()
            log.append([total_loss.item()] + [float(n) if n is not None else None for n in norms])
        for k, v in schedulers.items():
            if k.endswith("_scheduler_by_epoch"):
                v.step()
    return {"log": log, "state": {k: dict(v.state_dict()) for k, v in models.items()},
            "lrs": {k: [g["lr"] for g in v.param_groups] for k, v in optimizers.items()},
            "bn_training": models["trunk"].features[1].training}


def test_metric_trainer_with_classifier_and_resume():
    weights = {f"{name}.{k}": v.numpy().copy() for name, model in
               (OURS.torch.manual_seed(0) and trainer_parts(OURS)).items() for k, v in model.state_dict().items()}
    ours, _ = run_both(trainer_program, weights, epochs=3, rtol=1e-4, atol=1e-6)
    resumed, _ = run_both(trainer_program, weights, epochs=3, resume_after=2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose([r[0] for r in resumed["log"]], [r[0] for r in ours["log"]], rtol=1e-6)
    assert ours["bn_training"] is False
    bn = ours["state"]["trunk"]
    np.testing.assert_array_equal(bn["features.1.running_mean"], weights["trunk.features.1.running_mean"])
    assert bn["features.1.num_batches_tracked"] == 0  # frozen: never updated
    assert ours["lrs"]["trunk_optimizer"][0] == pytest.approx(0.05 * 0.5 ** (9 // 2))


# ----------------------------------------------------------------------------------------------
# The original RAdam (LiyuanLucasLiu/RAdam, a common optimiser of metric-learning repositories of 2019-2020), as
# written for PyTorch 1: ``addcmul_(1 - beta2, grad, grad)``, ``add_(1 - beta1, grad)``, ``addcdiv_(-step, m, d)``
# with the number first, fp32 copies by ``.data.float()`` and ``type_as``, a step-size cache in the param group;
# eight steps cross from its SGD-like warm-up to the rectified update, training a ProxyNCA-style loss
# ----------------------------------------------------------------------------------------------


def radam_program(m, weights, steps=8):
    torch, nn, F = m.torch, m.nn, m.F
    Optimizer = m.optim.Optimizer

    class RAdam(Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, degenerated_to_sgd=True):
            if not 0.0 <= lr:
                raise ValueError("Invalid learning rate: {}".format(lr))
            if not 0.0 <= eps:
                raise ValueError("Invalid epsilon value: {}".format(eps))
            if not 0.0 <= betas[0] < 1.0:
                raise ValueError("Invalid beta parameter at index 0: {}".format(betas[0]))
            if not 0.0 <= betas[1] < 1.0:
                raise ValueError("Invalid beta parameter at index 1: {}".format(betas[1]))
            self.degenerated_to_sgd = degenerated_to_sgd
            if isinstance(params, (list, tuple)) and len(params) > 0 and isinstance(params[0], dict):
                for param in params:
                    if 'betas' in param and (param['betas'][0] != betas[0] or param['betas'][1] != betas[1]):
                        param['buffer'] = [[None, None, None] for _ in range(10)]
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                            buffer=[[None, None, None] for _ in range(10)])
            super(RAdam, self).__init__(params, defaults)

        def __setstate__(self, state):
            super(RAdam, self).__setstate__(state)

        def step(self, closure=None):
            loss = None
            if closure is not None:
                loss = closure()
            for group in self.param_groups:
                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad.data.float()
                    if grad.is_sparse:
                        raise RuntimeError('RAdam does not support sparse gradients')
                    p_data_fp32 = p.data.float()
                    state = self.state[p]
                    if len(state) == 0:
                        state['step'] = 0
                        state['exp_avg'] = torch.zeros_like(p_data_fp32)
                        state['exp_avg_sq'] = torch.zeros_like(p_data_fp32)
                    else:
                        state['exp_avg'] = state['exp_avg'].type_as(p_data_fp32)
                        state['exp_avg_sq'] = state['exp_avg_sq'].type_as(p_data_fp32)
                    exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
                    beta1, beta2 = group['betas']
                    exp_avg_sq.mul_(beta2).addcmul_(1 - beta2, grad, grad)
                    exp_avg.mul_(beta1).add_(1 - beta1, grad)
                    state['step'] += 1
                    buffered = group['buffer'][int(state['step'] % 10)]
                    if state['step'] == buffered[0]:
                        N_sma, step_size = buffered[1], buffered[2]
                    else:
                        buffered[0] = state['step']
                        beta2_t = beta2 ** state['step']
                        N_sma_max = 2 / (1 - beta2) - 1
                        N_sma = N_sma_max - 2 * state['step'] * beta2_t / (1 - beta2_t)
                        buffered[1] = N_sma
                        # more conservative since it's an approximated value
                        if N_sma >= 5:
                            step_size = math.sqrt(
                                (1 - beta2_t) * (N_sma - 4) / (N_sma_max - 4) * (N_sma - 2) / N_sma * N_sma_max / (
                                    N_sma_max - 2)) / (1 - beta1 ** state['step'])
                        elif self.degenerated_to_sgd:
                            step_size = 1.0 / (1 - beta1 ** state['step'])
                        else:
                            step_size = -1
                        buffered[2] = step_size
                    # more conservative since it's an approximated value
                    if N_sma >= 5:
                        if group['weight_decay'] != 0:
                            p_data_fp32.add_(-group['weight_decay'] * group['lr'], p_data_fp32)
                        denom = exp_avg_sq.sqrt().add_(group['eps'])
                        p_data_fp32.addcdiv_(-step_size * group['lr'], exp_avg, denom)
                        p.data.copy_(p_data_fp32)
                    elif step_size > 0:
                        if group['weight_decay'] != 0:
                            p_data_fp32.add_(-group['weight_decay'] * group['lr'], p_data_fp32)
                        p_data_fp32.add_(-step_size * group['lr'], exp_avg)
                        p.data.copy_(p_data_fp32)
            return loss

    class ProxyNCA(nn.Module):
        def __init__(self, nb_classes, sz_embed, smoothing_const=0.1, scaling_x=1, scaling_p=3):
            nn.Module.__init__(self)  # (torch.nn.Module.__init__(self) in the original)
            # initialize proxies s.t. norm of each proxy ~1 through div by 8
            # i.e. proxies.norm(2, dim=1)) should be close to [1,1,...,1]
            self.proxies = nn.Parameter(torch.randn(nb_classes, sz_embed) / 8)
            self.smoothing_const = smoothing_const
            self.scaling_x = scaling_x
            self.scaling_p = scaling_p

        def forward(self, X, T):
            P = F.normalize(self.proxies, p=2, dim=-1) * self.scaling_p
            X = F.normalize(X, p=2, dim=-1) * self.scaling_x
            D = torch.cdist(X, P) ** 2
            T = F.one_hot(T, len(P)).float() * (1 - self.smoothing_const)
            T[T == 0] = self.smoothing_const / (len(P) - 1)
            # note that compared to proxy nca, positive included in denominator
            loss = torch.sum(-T * F.log_softmax(-D, -1), -1)
            return loss.mean()

    torch.manual_seed(0)  # the proxies' randn: the same numbers on both
    model = load(m, embedder(m), weights)
    criterion = ProxyNCA(4, 8)
    optimizer = RAdam([{"params": model.parameters()}, {"params": criterion.parameters(), "lr": 0.05}], lr=0.01,
                      weight_decay=1e-4)
    x_np, y_np = clustered(spread=1.0, seed=13)
    x, y = torch.tensor(x_np), torch.tensor(y_np)
    log = []
    for step in range(steps):
        def closure():
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            return loss
        loss = optimizer.step(closure)
        log.append([loss.item(), optimizer.param_groups[0]["buffer"][(step + 1) % 10][1]])
    return {"log": log, "params": [p.detach() for p in model.parameters()], "proxies": criterion.proxies.detach(),
            "state": [optimizer.state[p]["exp_avg_sq"] for p in criterion.parameters()]}


def test_original_radam_with_pytorch1_overloads():
    weights = weights_of(embedder)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "This overload of")
        ours, _ = run_both(radam_program, weights, rtol=1e-5, atol=1e-7)
    n_sma = [row[1] for row in ours["log"]]
    assert n_sma[0] < 5 <= n_sma[-1]  # both branches ran
