# ruff: noqa: B007, B023, E501, E701, E702, F841  (the programs are kept as their authors would write them)
"""nn.Module's protocol as training libraries and research code lean on it, run on chainrule and (where installed)
PyTorch: the global module hooks (forward, forward pre, full backward), state_dict hooks and load_state_dict pre
and post hooks renaming a checkpoint's keys (Hugging Face's and timm's way), strict loading's error text,
get_extra_state, assign=True, meta-device construction with to_empty, skip_init, set_submodule / get_parameter,
ParameterDict, named_modules(remove_duplicate=False), module hooks with kwargs, prepend and always_call, full
backward pre-hooks rewriting grad_output, and a K-FAC preconditioner written with forward-pre and full backward
hooks. Without PyTorch each test checks its values by hand."""

import numpy as np
import pytest

from .probe37_common import F64, arrays, batch, mlp
from .pytorch_programs import OURS, run_both


def global_hooks(m):
    torch, nn = m.torch, m.nn
    model = mlp(m)
    seen = []
    handles = [nn.modules.module.register_module_forward_pre_hook(lambda mod, i: seen.append(("pre", type(mod).__name__))),
               nn.modules.module.register_module_forward_hook(lambda mod, i, o: seen.append(("fwd", type(mod).__name__))),
               nn.modules.module.register_module_full_backward_hook(
                   lambda mod, gi, go: seen.append(("bwd", type(mod).__name__, [None if g is None else tuple(g.shape) for g in gi])))]
    try:
        model(torch.ones(2, 5, requires_grad=True)).sum().backward()
    finally:
        for h in handles:
            h.remove()
    model(torch.ones(1, 5))
    return seen


def test_global_module_hooks():
    seen = run_both(global_hooks)[0]
    assert seen[:4] == [("pre", "Sequential"), ("pre", "Linear"), ("fwd", "Linear"), ("pre", "Tanh")]
    assert [s for s in seen if s[0] == "bwd"] == [("bwd", "Linear", [(2, 8)]), ("bwd", "Tanh", [(2, 8)]),
                                                  ("bwd", "Linear", [(2, 5)]), ("bwd", "Sequential", [(2, 5)])]
    assert len(seen) == 12


def checkpoint_hooks(m):
    torch, nn = m.torch, m.nn
    model = mlp(m)
    saved = {k.replace("0.", "first."): v.clone() + 1 for k, v in model.state_dict().items()}

    def rename(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        for k in list(state_dict):
            if k.startswith(prefix + "first."):
                state_dict[k.replace("first.", "0.")] = state_dict.pop(k)

    model._register_load_state_dict_pre_hook(rename)
    result = model.load_state_dict(saved)
    seen = []

    def post(module, incompatible_keys):
        seen.append((list(incompatible_keys.missing_keys), list(incompatible_keys.unexpected_keys)))
        incompatible_keys.unexpected_keys.clear()

    model.register_load_state_dict_post_hook(post)
    model[0].register_load_state_dict_pre_hook(lambda module, sd, prefix, *rest: seen.append(("pre", prefix)))
    model[2].register_state_dict_post_hook(lambda module, sd, prefix, meta: sd.__setitem__(prefix + "scale", torch.tensor(2.0)))
    model.register_state_dict_pre_hook(lambda module, prefix, keep_vars: seen.append(("sd pre", prefix, keep_vars)))
    sd = model.state_dict()
    sd["junk"] = torch.zeros(1)
    del sd["2.bias"]
    lenient = model.load_state_dict(sd, strict=False)
    sd["0.weight"] = torch.zeros(5, 5)
    try:
        model.load_state_dict(sd)
        message = None
    except RuntimeError as e:
        message = str(e).replace("torch.Size", "Size")  # (the one difference: the Size class's module name)
    return str(result), model[0].weight, seen, sorted(model.state_dict()), str(lenient), message


def test_checkpoint_hooks():
    result, weight, seen, keys, lenient, message = run_both(checkpoint_hooks)[0]
    assert result == "<All keys matched successfully>"
    np.testing.assert_allclose(weight, arrays(mlp(OURS))["0.weight"] + 1, rtol=1e-6)
    assert seen == [("sd pre", "", False), ("pre", "0."), (["2.bias"], ["junk", "2.scale"]), ("pre", "0."),
                    (["2.bias"], ["junk", "2.scale"]), ("sd pre", "", False)]  # (the post hook cleared "junk")
    assert keys == ["0.bias", "0.weight", "2.bias", "2.scale", "2.weight"]
    assert lenient == "_IncompatibleKeys(missing_keys=['2.bias'], unexpected_keys=[])"
    assert message == ('Error(s) in loading state_dict for Sequential:\n\tMissing key(s) in state_dict: "2.bias". \n\t'
                       'size mismatch for 0.weight: copying a param with shape Size([5, 5]) from checkpoint, the shape '
                       'in current model is Size([8, 5]).')


def construction(m):
    torch, nn = m.torch, m.nn

    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.count = 0
            self.register_buffer("scratch", torch.zeros(2), persistent=False)

        def get_extra_state(self):
            return {"count": self.count}

        def set_extra_state(self, state):
            self.count = state["count"]

        def extra_repr(self):
            return f"count={self.count}"

    a = Counter(); a.count = 5
    b = Counter(); b.load_state_dict(a.state_dict())
    with torch.device("meta"):
        big = mlp(m)
    meta_device = str(big[0].weight.device)
    big = big.to_empty(device="cpu")
    skipped = nn.utils.skip_init(nn.Linear, 3, 4)
    model = mlp(m)
    w = torch.full((8, 5), 2.0)
    sd = model.state_dict(); sd["0.weight"] = w
    model.load_state_dict(sd, assign=True)
    assigned = (model[0].weight is w, type(model[0].weight).__name__, model[0].weight.requires_grad)
    model.set_submodule("1", nn.ReLU())
    lin = nn.Linear(2, 2)
    shared = nn.Sequential(lin, lin)
    pd = nn.ParameterDict({"a": nn.Parameter(torch.ones(2)), "b": torch.zeros(3)})
    pd["c"] = nn.Parameter(torch.ones(1))
    return (b.count, sorted(a.state_dict()), str(a), meta_device, tuple(big[0].weight.shape), str(big[0].weight.device),
            tuple(skipped.weight.shape), assigned, str(model), model.get_parameter("2.bias").shape,
            [n for n, _ in shared.named_modules()], [n for n, _ in shared.named_modules(remove_duplicate=False)],
            [n for n, _ in shared.named_parameters(remove_duplicate=False)], [n for n, _ in shared.named_parameters(prefix="model")],
            list(pd.keys()), [n for n, _ in pd.named_parameters()], type(pd["b"]).__name__, str(pd).replace("torch.", ""))


def test_construction_and_state():
    (count, keys, text, meta, shape, device, skipped, assigned, model_text, bias_shape, names, all_names, all_params,
     prefixed, pd_keys, pd_params, pd_type, pd_text) = run_both(construction)[0]
    assert count == 5 and keys == ["_extra_state", "lin.bias", "lin.weight"] and "count=5" in text
    assert meta == "meta" and shape == (8, 5) and device == "cpu" and skipped == (4, 3)
    assert assigned == (False, "Parameter", True) and "(1): ReLU()" in model_text and tuple(bias_shape) == (3,)
    assert names == ["", "0"] and all_names == ["", "0", "1"]
    assert all_params == ["0.weight", "0.bias", "1.weight", "1.bias"] and prefixed == ["model.0.weight", "model.0.bias"]
    assert pd_keys == ["a", "b", "c"] and pd_params == ["a", "b", "c"] and pd_type == "Parameter"


def hooks_in_training(m):
    torch, nn, F = m.torch, m.nn, m.F
    model = mlp(m).double()
    x, y = batch(m)
    x = x.double().requires_grad_()
    seen = []
    model[0].register_full_backward_pre_hook(lambda mod, grad_output: (grad_output[0] * 2,))
    model[2].register_full_backward_hook(lambda mod, grad_input, grad_output: seen.append([g is None for g in grad_input]))
    model[1].register_full_backward_hook(lambda mod, grad_input, grad_output: (grad_input[0].clamp(-0.01, 0.01),))
    model[0].register_forward_hook(lambda mod, args, kwargs, out: out * 1.5, with_kwargs=True)
    model[0].register_forward_pre_hook(lambda mod, args, kwargs: ((args[0] + 1,), kwargs), with_kwargs=True)
    model[2].register_forward_hook(lambda mod, i, o: seen.append("second"))
    model[2].register_forward_hook(lambda mod, i, o: seen.append("first"), prepend=True)
    model[2].register_forward_hook(lambda mod, i, o: seen.append("always"), always_call=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss, x.grad, [p.grad for p in model.parameters()], seen


def test_hooks_in_training():
    loss, x_grad, grads, seen = run_both(hooks_in_training, **F64)[0]
    assert seen == ["first", "second", "always", [False]]
    w = arrays(mlp(OURS))
    x, y = batch(OURS)
    x, y = x.numpy().astype(np.float64), y.numpy()
    pre = 1.5 * ((x + 1) @ w["0.weight"].T + w["0.bias"])  # the hooks' forward, by hand
    h = np.tanh(pre)
    logits = h @ w["2.weight"].T + w["2.bias"]
    p = np.exp(logits - logits.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    assert loss == pytest.approx(-np.log(p[np.arange(16), y]).mean(), rel=1e-12)
    g_logits = (p - np.eye(3)[y]) / 16
    g_h = np.clip((g_logits @ w["2.weight"]) * (1 - h ** 2), -0.01, 0.01)  # Tanh's grad_input clamped by its hook
    np.testing.assert_allclose(grads[0], 2 * 1.5 * g_h.T @ (x + 1), rtol=1e-10)  # doubled by the pre-hook
    np.testing.assert_allclose(x_grad, 2 * 1.5 * g_h @ w["0.weight"], rtol=1e-10)


# ---------------------------------------------------------------- K-FAC by hand (alecwangcq/KFAC-Pytorch's shape)
def kfac(m):
    torch, nn, F = m.torch, m.nn, m.F
    model = mlp(m).double()
    x, y = batch(m)
    x = x.double()
    acts, grad_outs = {}, {}

    def save_input(module, inputs):
        acts[module] = inputs[0].detach()

    def save_grad_output(module, grad_input, grad_output):
        grad_outs[module] = grad_output[0].detach() * grad_output[0].size(0)

    layers = [mod for mod in model.modules() if isinstance(mod, nn.Linear)]
    handles = []
    for layer in layers:
        handles.append(layer.register_forward_pre_hook(save_input))
        handles.append(layer.register_full_backward_hook(save_grad_output))
    m_aa, m_gg = {}, {}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        for layer in layers:
            a = acts[layer]
            a = torch.cat([a, a.new_ones(a.size(0), 1)], 1)
            aa = a.t() @ (a / a.size(0))
            gg = grad_outs[layer].t() @ (grad_outs[layer] / grad_outs[layer].size(0))
            if step == 0:
                m_aa[layer] = torch.diag(aa.new(aa.size(0)).fill_(1))
                m_gg[layer] = torch.diag(gg.new(gg.size(0)).fill_(1))
            m_aa[layer].mul_(0.95).add_(aa * 0.05)
            m_gg[layer].mul_(0.95).add_(gg * 0.05)
            d_a, Q_a = torch.linalg.eigh(m_aa[layer], UPLO='U')
            d_g, Q_g = torch.linalg.eigh(m_gg[layer])
            d_a.mul_((d_a > 1e-6).float())
            d_g.mul_((d_g > 1e-6).float())
            grad = torch.cat([layer.weight.grad, layer.bias.grad.view(-1, 1)], 1)
            v1 = Q_g.t() @ grad @ Q_a
            v2 = v1 / (d_g.unsqueeze(1) * d_a.unsqueeze(0) + 0.01)
            v = Q_g @ v2 @ Q_a.t()
            layer.weight.grad.data.copy_(v[:, :-1])
            layer.bias.grad.data.copy_(v[:, -1])
        vg_sum = sum((l.weight.grad * l.weight.grad * 0.01).sum() + (l.bias.grad * l.bias.grad * 0.01).sum() for l in layers)
        nu = min(1.0, (0.001 / vg_sum).sqrt().item())
        for layer in layers:
            layer.weight.grad.data.mul_(nu)
            layer.bias.grad.data.mul_(nu)
        optimizer.step()
        losses.append(loss.item())
    for h in handles:
        h.remove()
    return losses, [p.detach() for p in model.parameters()], m_aa[layers[0]]


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # (the first layer's input needs no grad)
def test_kfac_with_hooks():
    losses, params, factor = run_both(kfac, **F64)[0]
    x = batch(OURS)[0].numpy().astype(np.float64)
    a = np.concatenate([x, np.ones((16, 1))], 1)  # the first layer's input factor after three steps, by hand
    expected = np.eye(6)
    for _ in range(3):
        expected = 0.95 * expected + 0.05 * a.T @ a / 16
    np.testing.assert_allclose(factor, expected, rtol=1e-12)
    assert losses[2] < losses[0]
