"""Optimizer hooks: step pre/post hooks (per optimizer and global), state_dict and
load_state_dict hooks; their order, what their return values do, removal; against PyTorch."""

import importlib
import types

import numpy as np
import pytest

import autograd
import optim
import optim.optimizer

OURS = types.SimpleNamespace(lib=autograd, optim=optim, module=optim.optimizer)


def torch_libs():
    torch = pytest.importorskip("torch")
    module = importlib.import_module("torch.optim.optimizer")
    return types.SimpleNamespace(lib=torch, optim=torch.optim, module=module)


def hook_program(L):
    """Every kind of hook on an SGD and a custom optimizer with its own step; returns the events
    seen, the trajectory, and the dicts the hooks produced."""
    events = []
    weight = L.lib.tensor([1.0, -2.0], dtype=L.lib.float64, requires_grad=True)
    optimizer = L.optim.SGD([weight], lr=0.1, momentum=0.5)

    def pre(opt, args, kwargs):
        events.append(("pre", len(args), sorted(kwargs)))

    def pre_replacing(opt, args, kwargs):
        events.append(("pre-replacing", len(args)))
        return args[:1], {}  # drop the closure (args[0] is the optimizer, as in PyTorch)

    def post(opt, args, kwargs):
        events.append(("post", len(args), sorted(kwargs)))

    def global_pre(opt, args, kwargs):
        events.append(("global-pre", type(opt).__name__))

    def global_post(opt, args, kwargs):
        events.append(("global-post", type(opt).__name__))

    handles = [optimizer.register_step_post_hook(post), optimizer.register_step_pre_hook(pre),
               optimizer.register_step_pre_hook(pre_replacing),
               L.module.register_optimizer_step_post_hook(global_post),
               L.module.register_optimizer_step_pre_hook(global_pre)]
    path = []
    try:
        for i in range(3):
            weight.grad = L.lib.tensor([0.5 * i + 1.0, -1.0], dtype=L.lib.float64)

            def closure():
                events.append("closure")  # never called: pre_replacing drops it
                return 0.0

            optimizer.step(closure)
            path.append(weight.detach().numpy().copy())
            if i == 1:
                handles[2].remove()
                handles[3].remove()
    finally:
        for handle in handles:
            handle.remove()
    optimizer.step()  # no hooks left
    events.append("after removal")

    def sd_pre(opt):
        events.append("state_dict-pre")

    def sd_post(opt, state_dict):
        events.append(("state_dict-post", sorted(state_dict)))
        state_dict["extra"] = 1
        return None

    def sd_post_replacing(opt, state_dict):
        events.append("state_dict-post-replacing")
        return {**state_dict, "replaced": True}

    def sd_post_first(opt, state_dict):
        events.append("state_dict-post-first")

    optimizer.register_state_dict_pre_hook(sd_pre)
    optimizer.register_state_dict_post_hook(sd_post)
    optimizer.register_state_dict_post_hook(sd_post_replacing)
    optimizer.register_state_dict_post_hook(sd_post_first, prepend=True)
    saved = optimizer.state_dict()

    def load_pre(opt, state_dict):
        events.append(("load-pre", sorted(state_dict)))
        state_dict.pop("extra")  # a shallow copy: the caller's dict keeps it

    def load_pre_replacing(opt, state_dict):
        events.append("load-pre-replacing")
        new = dict(state_dict)
        new["param_groups"] = [dict(group, lr=0.25) for group in state_dict["param_groups"]]
        return new

    def load_post(opt):
        events.append(("load-post", opt.param_groups[0]["lr"]))

    optimizer.register_load_state_dict_pre_hook(load_pre)
    optimizer.register_load_state_dict_pre_hook(load_pre_replacing)
    optimizer.register_load_state_dict_post_hook(load_post)
    optimizer.load_state_dict(saved)
    return events, np.array(path), sorted(saved), optimizer.param_groups[0]["lr"]


def test_hooks_by_hand():
    events, path, saved_keys, lr = hook_program(OURS)
    step = [("global-pre", "SGD"), ("pre", 2, []), ("pre-replacing", 2), ("post", 1, []), ("global-post", "SGD")]
    assert events == step + step + [  # then pre_replacing and global_post removed: the closure runs
        ("global-pre", "SGD"), ("pre", 2, []), "closure", ("post", 2, []), "after removal",
        "state_dict-pre", "state_dict-post-first", ("state_dict-post", ["param_groups", "state"]),
        "state_dict-post-replacing", ("load-pre", ["extra", "param_groups", "replaced", "state"]),
        "load-pre-replacing", ("load-post", 0.25)]
    assert saved_keys == ["extra", "param_groups", "replaced", "state"]  # the caller's dict kept "extra"
    assert lr == 0.25
    np.testing.assert_allclose(path[0], [1.0 - 0.1, -2.0 + 0.1])


@pytest.mark.torch
def test_hooks_match_torch():
    ours, theirs = hook_program(OURS), hook_program(torch_libs())
    assert ours[0] == theirs[0]
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-15)
    assert ours[2:] == theirs[2:]


def test_a_custom_step_is_hooked_once():
    class Halving(optim.SGD):
        def step(self, closure=None):  # calls the base step: hooks still run once
            with autograd.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.grad.mul_(0.5)
            return super().step(closure)

    class Plain(optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, dict(lr=1.0))

        def step(self, closure=None):
            with autograd.no_grad():
                for p in self.param_groups[0]["params"]:
                    p.sub_(p.grad)

    calls = []
    for make in (Halving, Plain):
        weight = autograd.tensor([1.0], requires_grad=True)
        optimizer = make([weight], lr=1.0) if make is Halving else make([weight])
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
        with optim.optimizer.register_optimizer_step_post_hook(lambda opt, args, kwargs: calls.append("post")):
            weight.grad = autograd.tensor([1.0])
            optimizer.step()
        optimizer.step()
        assert calls == ["pre", "post", "pre"]
        calls.clear()
    assert weight.item() == -1.0


def test_a_bad_pre_hook_result_is_named():
    weight = autograd.tensor([1.0], requires_grad=True)
    optimizer = optim.SGD([weight], lr=1.0)
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: "nonsense")
    weight.grad = autograd.tensor([1.0])
    with pytest.raises(RuntimeError, match=r"must return None or a tuple of \(new_args, new_kwargs\), but got "
                                           "nonsense"):
        optimizer.step()


def test_lbfgs_step_is_hooked():
    weight = autograd.tensor([3.0], dtype=autograd.float64, requires_grad=True)
    optimizer = optim.LBFGS([weight], lr=1.0)
    seen = []
    optimizer.register_step_post_hook(lambda opt, args, kwargs: seen.append(len(args)))

    def closure():
        optimizer.zero_grad()
        loss = ((weight - 1) ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    assert seen == [2] and abs(weight.item() - 1.0) < 1e-8  # (optimizer, closure)
