# ruff: noqa: B007, B023, E741, UP004, UP008, UP032, UP034, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is
a function of the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``, ``data``),
run on chainrule and, where PyTorch is installed, on PyTorch, comparing the numbers.

Training-loop utilities (schedulers, clipping, checkpoints) and regressions the programs found."""


import numpy as np
import pytest

import autograd
import autograd.utils.data
import nn
import nn.functional

from .pytorch_programs import assert_same, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Training-loop utilities: schedulers, gradient clipping, parameter counting, checkpoints
# ----------------------------------------------------------------------------------------------

def schedulers(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    lrs = {}
    for name in ["step", "multistep", "exponential", "cosine", "lambda", "plateau"]:
        model = load(m, nn.Linear(3, 1), weights)
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = {
            "step": lambda: optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5),
            "multistep": lambda: optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 5], gamma=0.1),
            "exponential": lambda: optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9),
            "cosine": lambda: optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=8, eta_min=0.001),
            "lambda": lambda: optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda epoch: 0.95 ** epoch),
            "plateau": lambda: optim.lr_scheduler.ReduceLROnPlateau(optimizer, 'min', patience=1, factor=0.5),
        }[name]()
        x, y = torch.ones(4, 3), torch.zeros(4, 1)
        seen = []
        for epoch in range(8):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            if name == "plateau":
                scheduler.step(1.0)  # a validation loss that never improves
            else:
                scheduler.step()
            seen.append(optimizer.param_groups[0]['lr'])
        if name != "plateau":
            seen.append(scheduler.get_last_lr()[0])
        lrs[name] = seen
    return lrs


def test_schedulers():
    ours, _ = run_both(schedulers, weights_of(lambda m: m.nn.Linear(3, 1)), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours["step"][:6], [0.1, 0.1, 0.05, 0.05, 0.05, 0.025])


def lbfgs_closure(m, weights):
    """LBFGS needs a closure that re-evaluates the loss (the optim docs' pattern)."""
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, nn.Linear(3, 1), weights)
    x = torch.linspace(-1, 1, 30).reshape(10, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    loss_fn = nn.MSELoss()
    optimizer = optim.LBFGS(model.parameters(), lr=1, max_iter=20, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss

    losses = [optimizer.step(closure).item() for _ in range(3)]
    return {"losses": losses, "final": loss_fn(model(x), y).item()}


def test_lbfgs_closure():
    ours, _ = run_both(lbfgs_closure, weights_of(lambda m: m.nn.Linear(3, 1)), rtol=1e-3, atol=1e-6)
    assert ours["final"] < 1e-6


def fine_tuning_param_groups(m, weights):
    """Per-layer learning rates (a backbone and a head), weight decay, nesterov momentum,
    OneCycleLR stepped per batch, and the lr of each group read back."""
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), weights)
    backbone, head = model[0], model[2]
    optimizer = optim.SGD([
        {'params': backbone.parameters(), 'lr': 1e-3},
        {'params': head.parameters()},
    ], lr=1e-2, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[1e-2, 1e-1], total_steps=12)
    x = torch.linspace(-1, 1, 32).reshape(8, 4)
    y = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    lrs, losses = [], []
    for step in range(12):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        lrs.append([group['lr'] for group in optimizer.param_groups])
        losses.append(loss.item())
    return {"lrs": lrs, "losses": losses, "state": model.state_dict()}


def test_fine_tuning_param_groups():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(4, 8), m.nn.ReLU(), m.nn.Linear(8, 2)))
    ours, _ = run_both(fine_tuning_param_groups, weights, rtol=1e-5, atol=1e-7)
    assert max(lr[1] for lr in ours["lrs"]) <= 0.1 + 1e-12 and ours["losses"][-1] < ours["losses"][0]


def gradient_clipping(m, weights):
    torch, nn = m.torch, m.nn
    model = load(m, nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)), weights)
    loss = (model(torch.ones(3, 4) * 10) ** 2).sum() * 100
    loss.backward()
    before = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    total_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    after = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    nn.utils.clip_grad_value_(model.parameters(), clip_value=0.01)
    biggest = max(p.grad.abs().max().item() for p in model.parameters())
    return {"before": before, "total_norm": total_norm, "after": after, "biggest": biggest}


def test_gradient_clipping():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(4, 8), m.nn.Tanh(), m.nn.Linear(8, 2)))
    ours, _ = run_both(gradient_clipping, weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["total_norm"], ours["before"], rtol=1e-6)
    np.testing.assert_allclose(ours["after"], 1.0, rtol=1e-5)
    assert ours["biggest"] <= 0.01


def parameter_counting(m):
    nn = m.nn
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    rnn = nn.LSTM(10, 20, num_layers=2, bidirectional=True)
    emb = nn.Embedding(100, 16)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model[0].weight.requires_grad_(False)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    names = [name for name, _ in model.named_parameters()]
    shapes = {name: tuple(p.shape) for name, p in rnn.named_parameters()}
    buffers = [name for name, _ in model.named_buffers()]
    state = list(model.state_dict().keys())
    return {"total": total, "trainable": trainable, "frozen": frozen, "names": names,
            "rnn": sum(p.numel() for p in rnn.parameters()), "shapes": shapes,
            "emb": sum(p.numel() for p in emb.parameters()), "buffers": buffers, "state": state,
            "children": len(list(model.children())), "modules": len(list(model.modules()))}


def test_parameter_counting():
    ours, _ = run_both(parameter_counting)
    assert ours["total"] == 3 * 8 * 9 + 8 + 16 + 288 * 10 + 10 and ours["frozen"] == 216


def checkpoints(m, weights, path):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 1)), weights)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.linspace(-1, 1, 24).reshape(8, 3), torch.ones(8, 1)
    for epoch in range(3):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
    torch.save({
        'epoch': epoch,
        'model_state_dict': model.state_dict(),
        'optimizer_state_dict': optimizer.state_dict(),
        'loss': loss,
    }, path)
    model2 = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 1))
    optimizer2 = optim.Adam(model2.parameters(), lr=0.5)
    checkpoint = torch.load(path, weights_only=True)
    model2.load_state_dict(checkpoint['model_state_dict'])
    optimizer2.load_state_dict(checkpoint['optimizer_state_dict'])
    epoch2 = checkpoint['epoch']
    loss2 = checkpoint['loss']
    model2.train()
    trajectories = []
    for mod, opt in [(model, optimizer), (model2, optimizer2)]:
        opt.zero_grad()
        nn.functional.mse_loss(mod(x), y).backward()
        opt.step()
        trajectories.append(mod.state_dict())
    model2.eval()
    tensor_path = str(path) + ".t"
    t = torch.arange(6.0).reshape(2, 3)
    torch.save([t, {"a": t[0]}], tensor_path)
    loaded = torch.load(tensor_path)
    return {"epoch": epoch2, "loss": (loss2.item(), loss.item()), "lr": optimizer2.param_groups[0]["lr"],
            "same": trajectories[0], "same2": trajectories[1], "loaded": loaded,
            "eval_out": model2(x), "running_mean": model2[2].running_mean}


def save_load_tutorial(m, weights, path):
    """The 'Save and Load the Model' tutorial: weights through state_dict, then the entire model
    (pickled: torch.load needs weights_only=False, and refuses without it)."""
    torch, nn = m.torch, m.nn
    model = load(m, nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), weights)
    torch.save(model.state_dict(), str(path) + '.weights')
    model2 = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    model2.load_state_dict(torch.load(str(path) + '.weights', weights_only=True))
    model2.eval()
    torch.save(model, path)
    try:
        torch.load(path, weights_only=True)
        refused = False
    except Exception as error:  # PyTorch raises pickle.UnpicklingError
        refused = type(error).__name__ == "UnpicklingError"
    model3 = torch.load(path, weights_only=False)
    x = torch.linspace(-1, 1, 8).reshape(2, 2, 2)
    return {"same": (model2(x), model3(x), model(x)), "refused": refused, "type": type(model3).__name__,
            "children": len(list(model3.children())), "trainable": model3[1].weight.requires_grad}


@pytest.mark.xfail(reason="design: autograd.save refuses whole modules (no pickle); reported to the lead",
                   strict=True)
def test_save_load_tutorial(tmp_path):
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Flatten(), m.nn.Linear(4, 3), m.nn.ReLU(), m.nn.Linear(3, 2)))
    ours, _ = run_both(save_load_tutorial, weights, tmp_path / "model.pth")
    np.testing.assert_array_equal(ours["same"][0], ours["same"][2])
    np.testing.assert_array_equal(ours["same"][1], ours["same"][2])
    assert ours["refused"] and ours["type"] == "Sequential" and ours["trainable"]


def test_checkpoints(tmp_path):
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(3, 4), m.nn.ReLU(), m.nn.BatchNorm1d(4),
                                                   m.nn.Linear(4, 1)))
    ours, _ = run_both(checkpoints, weights, tmp_path / "ckpt.tar", rtol=1e-5, atol=1e-6)
    assert ours["epoch"] == 2 and ours["lr"] == 0.01 and ours["loss"][0] == ours["loss"][1]
    assert_same(ours["same"], ours["same2"], rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# Regressions found by the programs above
# ----------------------------------------------------------------------------------------------

def test_numpy_keyword_aliases():
    """d2l writes y_hat.argmax(axis=1): PyTorch takes NumPy's axis / keepdims for dim / keepdim."""
    x = autograd.tensor([[1.0, 3.0], [4.0, 2.0]])
    assert x.argmax(axis=1).tolist() == [1, 0] and autograd.argmax(x, axis=0).tolist() == [1, 0]
    assert x.max(axis=1).indices.tolist() == [1, 0]
    assert x.std(axis=0, keepdims=True).shape == (1, 2)
    np.testing.assert_allclose(x.softmax(axis=1).sum(1).numpy(), 1, rtol=1e-6)
    with pytest.raises(TypeError, match="alias"):
        x.argmax(dim=1, axis=1)


def test_state_dict_order_and_tied_weights():
    """PyTorch orders a state_dict module by module (parameters, then buffers) and saves a tied
    weight under each of its names, so its checkpoints load here and ours load there."""
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                        "1.running_var", "1.num_batches_tracked", "2.weight", "2.bias"]
    assert list(model.state_dict(prefix="model."))[0] == "model.0.weight"
    assert model.state_dict(keep_vars=True)["0.weight"] is model[0].weight

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(5, 4)
            self.lm_head = nn.Linear(4, 5, bias=False)
            self.wte.weight = self.lm_head.weight  # nanoGPT's weight tying

    tied = Tied()
    assert list(tied.state_dict()) == ["wte.weight", "lm_head.weight"]
    tied.load_state_dict({"wte.weight": np.ones((5, 4), np.float32), "lm_head.weight": np.ones((5, 4), np.float32)})
    assert tied.wte.weight is tied.lm_head.weight and float(tied.wte.weight.sum()) == 20.0


def test_factories_take_size_keyword():
    """torch.zeros(size=(2, 3)) as well as zeros(2, 3) and zeros((2, 3))."""
    for factory in (autograd.zeros, autograd.ones, autograd.empty, autograd.rand, autograd.randn):
        assert factory(size=(2, 3)).shape == (2, 3) and factory(2, 3).shape == (2, 3)
        assert factory([4]).shape == (4,) and factory(size=4).shape == (4,)
        with pytest.raises(TypeError, match="size"):
            factory(2, size=(2, 3))
