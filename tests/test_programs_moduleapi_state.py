"""The ``nn.Module`` API itself, as real programs call it: state dicts (strict, assign, prefix,
keep_vars, their hooks, versions) and the module plumbing (registration, walking the tree, casting,
_apply, printing). Each program runs on chainrule and, where installed, PyTorch, and the results must
agree; the values are also asserted without PyTorch. The hooks: test_programs_moduleapi.py."""

import copy
import warnings

import pytest

from tests.program_errors import raises_alike
from tests.pytorch_programs import run_both

# -- state dicts ------------------------------------------------------------------------------------


def _net(m):
    net = m.nn.Sequential(m.nn.Linear(2, 3), m.nn.BatchNorm1d(3))
    net.register_buffer("scratch", m.torch.zeros(1), persistent=False)
    return net


def state_dict_prefix_keep_vars_metadata(m):
    net = _net(m)
    saved = net.state_dict(prefix="model.", keep_vars=True)
    plain = net.state_dict()
    return (list(saved), dict(saved._metadata), type(saved["model.0.weight"]).__name__,
            saved["model.0.weight"] is net[0].weight, plain["0.weight"].requires_grad,
            [name for name, _ in net.named_buffers()])


def test_state_dict_prefix_keep_vars_metadata_and_non_persistent_buffers():
    ours, _ = run_both(state_dict_prefix_keep_vars_metadata)
    keys = ["model.0.weight", "model.0.bias", "model.1.weight", "model.1.bias", "model.1.running_mean",
            "model.1.running_var", "model.1.num_batches_tracked"]
    versions = {"model": {"version": 1}, "model.0": {"version": 1}, "model.1": {"version": 2}}
    assert ours == (keys, versions, "Parameter", True, False,
                    ["scratch", "1.running_mean", "1.running_var", "1.num_batches_tracked"])


def load_not_strict(m):
    net = _net(m)
    state = net.state_dict()
    del state["0.bias"]
    state.update({"extra": m.torch.zeros(1), "1.new": m.torch.zeros(1), "2.w": m.torch.ones(1),
                  "scratch": m.torch.ones(1)})  # a non-persistent buffer's name is unexpected
    result = net.load_state_dict(state, strict=False)
    return (repr(result), result.missing_keys, result.unexpected_keys, type(result).__name__, result._fields,
            repr(net.load_state_dict(net.state_dict())), net.scratch)


def test_load_state_dict_not_strict_reports_missing_and_unexpected_keys():
    ours, _ = run_both(load_not_strict)
    unexpected = ["extra", "2.w", "scratch", "1.new"]
    assert ours[:6] == (f"_IncompatibleKeys(missing_keys=['0.bias'], unexpected_keys={unexpected})",
                        ["0.bias"], unexpected, "_IncompatibleKeys", ("missing_keys", "unexpected_keys"),
                        "<All keys matched successfully>")
    assert ours[6].tolist() == [0.0]


def test_load_state_dict_error_lists_every_problem():
    def program(m):
        net = _net(m)
        state = net.state_dict()
        del state["0.bias"]
        state.update({"extra": m.torch.zeros(1), "0.weight": m.torch.zeros(4, 2), "1.running_mean": m.torch.zeros(5)})
        net.load_state_dict(state)

    error = raises_alike(program, "Error\\(s\\) in loading state_dict for Sequential", kind=RuntimeError)
    lines = str(error).split("\n\t")
    assert lines[1:3] == ['Missing key(s) in state_dict: "0.bias". ', 'Unexpected key(s) in state_dict: "extra". ']
    assert lines[3].startswith("size mismatch for 0.weight: copying a param with shape ") and "[4, 2]" in lines[3]
    assert lines[4].startswith("size mismatch for 1.running_mean") and lines[4].endswith("[3]).")

    def mismatch_only(m):  # strict=False still refuses a shape mismatch
        m.nn.Linear(2, 2).load_state_dict({"weight": m.torch.zeros(2, 2), "bias": m.torch.zeros(3)}, strict=False)

    raises_alike(mismatch_only, r"size mismatch for bias: copying a param with shape (torch\.)?Size\(\[3\]\) from "
                                r"checkpoint, the shape in current model is (torch\.)?Size\(\[2\]\)\.",
                 kind=RuntimeError)

    def not_a_tensor(m):
        m.nn.Linear(1, 1).load_state_dict({"weight": "x", "bias": m.torch.zeros(1)})

    raises_alike(not_a_tensor, "While copying the parameter named \"weight\", expected torch.Tensor or Tensor-like "
                               "object from checkpoint but received <class 'str'>", kind=RuntimeError)


def load_assign(m):
    layer = m.nn.Linear(2, 2)
    weight = m.torch.ones(2, 2, dtype=m.torch.float64)
    bias = m.nn.Parameter(m.torch.zeros(2), requires_grad=False)
    layer.load_state_dict({"weight": weight, "bias": bias}, assign=True)
    return (type(layer.weight).__name__, layer.weight.requires_grad, str(layer.weight.dtype).replace("torch.", ""),
            layer.bias is bias, layer.bias.requires_grad)


def test_load_state_dict_assign_takes_the_tensors_keeping_requires_grad():
    ours, _ = run_both(load_assign)
    assert ours == ("Parameter", True, "float64", True, True)


def state_dict_hooks(m):
    net, log = _net(m), []

    def post(mod, state, prefix, local_metadata):
        log.append(("post", type(mod).__name__, prefix, sorted(local_metadata)))
        state[prefix + "added"] = m.torch.zeros(1)

    def old_style(mod, state, prefix, local_metadata):
        log.append(("old", prefix))
        return {"replaced": m.torch.zeros(1)}  # respected at the root only

    net[0].register_state_dict_post_hook(post)
    net.register_state_dict_pre_hook(lambda mod, prefix, keep_vars: log.append(("pre", prefix, keep_vars)))
    with_post = list(net.state_dict())
    with net._register_state_dict_hook(old_style):
        at_root = list(net.state_dict())
    net[1]._register_state_dict_hook(old_style)
    below = list(net.state_dict())
    return log, with_post, at_root, below


def test_state_dict_pre_and_post_hooks():
    ours, _ = run_both(state_dict_hooks)
    log, with_post, at_root, below = ours
    assert with_post[:3] == ["0.weight", "0.bias", "0.added"] and at_root == ["replaced"]
    assert below == with_post and log.count(("pre", "", False)) == 3
    assert ("post", "Linear", "0.", ["version"]) in log and ("old", "1.") in log


def load_state_dict_hooks(m):
    net, log = _net(m), []

    def rename(mod, state, prefix, local_metadata, strict, missing, unexpected, errors):
        log.append(("pre", type(mod).__name__, prefix, sorted(local_metadata), strict))
        if prefix + "old_weight" in state:
            state[prefix + "weight"] = state.pop(prefix + "old_weight")

    def forgive(mod, incompatible):
        log.append(("post", type(mod).__name__, list(incompatible.missing_keys), list(incompatible.unexpected_keys)))
        incompatible.unexpected_keys[:] = [k for k in incompatible.unexpected_keys if k != "junk"]

    net[0].register_load_state_dict_pre_hook(rename)
    net.register_load_state_dict_post_hook(forgive)
    net[0].register_load_state_dict_post_hook(forgive)
    state = net.state_dict()
    state["0.old_weight"] = state.pop("0.weight") * 0 + 7
    state["junk"] = m.torch.zeros(1)
    result = net.load_state_dict(state)
    return log, repr(result), net[0].weight


def test_load_state_dict_pre_hook_renames_and_post_hook_forgives():
    ours, _ = run_both(load_state_dict_hooks)
    log, result, weight = ours
    assert log == [("pre", "Linear", "0.", ["version"], True), ("post", "Linear", [], ["junk"]),
                   ("post", "Sequential", [], [])]  # the Linear's hook emptied the shared list
    assert result == "<All keys matched successfully>" and (weight == 7).all()


def version_metadata(m):
    class Versioned(m.nn.Module):
        _version = 3

        def __init__(self):
            super().__init__()
            self.p = m.nn.Parameter(m.torch.zeros(1))

        def _load_from_state_dict(self, state, prefix, local_metadata, *rest):
            seen.append(local_metadata.get("version"))
            super()._load_from_state_dict(state, prefix, local_metadata, *rest)

    seen = []
    net = m.nn.Sequential(Versioned())
    state = net.state_dict()
    net.load_state_dict(state)
    net.load_state_dict(dict(state))  # a plain dict has no metadata: no version
    state._metadata["0"]["version"] = 1  # an old checkpoint
    net.load_state_dict(state)
    return seen


def test_version_metadata_reaches_load_from_state_dict():
    ours, _ = run_both(version_metadata)
    assert ours == [3, None, 1]


# -- plumbing ---------------------------------------------------------------------------------------


def walking_shared(m):
    layer = m.nn.Linear(2, 2)
    net = m.nn.Sequential(layer, layer, m.nn.Sequential(layer))
    net.w = m.nn.Parameter(m.torch.zeros(1))
    net.v = net.w
    return ([n for n, _ in net.named_modules(remove_duplicate=False, prefix="root")],
            [n for n, _ in net.named_modules(prefix="p")],
            [n for n, _ in net.named_parameters(remove_duplicate=False)],
            [n for n, _ in net.named_parameters(recurse=False, remove_duplicate=False)],
            [n for n, _ in net.named_parameters(prefix="x")], [n for n, _ in net.named_children()])


def test_named_modules_and_parameters_with_shared_members():
    ours, _ = run_both(walking_shared)
    assert ours == (["root", "root.0", "root.1", "root.2", "root.2.0"], ["p", "p.0", "p.2"],
                    ["w", "v", "0.weight", "0.bias", "1.weight", "1.bias", "2.0.weight", "2.0.bias"],
                    ["w", "v"], ["x.w", "x.0.weight", "x.0.bias"], ["0", "2"])


def _errors(*calls):
    out = []
    for call in calls:
        try:
            call()
            out.append("ok")
        except Exception as error:  # the class and message of each, compared between the libraries
            out.append(f"{type(error).__name__}: {error}")
    return out


def lookup_errors(m):
    net = m.nn.Sequential(m.nn.Linear(2, 2))
    net[0].register_buffer("buf", m.torch.zeros(1))
    return _errors(lambda: net.get_submodule("1"), lambda: net.get_submodule("0.weight"),
                   lambda: net.get_parameter("0.foo"), lambda: net.get_parameter("0"),
                   lambda: net.get_buffer("0.weight"), lambda: net.get_parameter("1.weight"),
                   lambda: net.get_submodule("0.training"), lambda: net.get_buffer("0.buf"),
                   lambda: net.set_submodule("0.x", m.nn.ReLU(), strict=True),
                   lambda: net.set_submodule("", m.nn.ReLU()), lambda: net.set_submodule("0.weight", m.nn.ReLU()),
                   lambda: net.set_submodule("0.act", m.nn.ReLU()))


def test_get_and_set_submodule_parameter_buffer_errors():
    ours, _ = run_both(lookup_errors)
    assert ours == ["AttributeError: Sequential has no attribute `1`", "AttributeError: `weight` is not an nn.Module",
                    "AttributeError: Linear has no attribute `foo`", "AttributeError: `0` is not an nn.Parameter",
                    "AttributeError: `weight` is not a buffer", "AttributeError: Sequential has no attribute `1`",
                    "AttributeError: `training` is not an nn.Module", "ok",
                    "AttributeError: Linear has no attribute `x`",
                    "ValueError: Cannot set the submodule without a target name!",
                    "AttributeError: `weight` is not an nn.Module", "ok"]


def registration_errors(m):
    module = m.nn.Module()
    module.register_buffer("buf", m.torch.zeros(1))
    module.p = m.nn.Parameter(m.torch.zeros(1))
    errors = _errors(lambda: module.add_module("a.b", m.nn.ReLU()), lambda: module.add_module("", m.nn.ReLU()),
                     lambda: module.add_module(3, m.nn.ReLU()), lambda: module.add_module("x", 3),
                     lambda: module.add_module("training", m.nn.ReLU()),
                     lambda: module.register_module("ok", m.nn.ReLU()),
                     lambda: module.register_buffer("ok", None), lambda: module.register_buffer("p", m.torch.zeros(1)),
                     lambda: module.register_buffer("", None), lambda: module.register_parameter("", None),
                     lambda: setattr(module, "p", m.nn.ReLU()),  # a module over a parameter's name
                     lambda: setattr(module, "buf", m.nn.Parameter(m.torch.ones(1))),  # a Parameter over a buffer
                     lambda: setattr(module, "buf", 3))  # now a parameter: takes a Parameter or None only
    return (errors, sorted(dict(module.named_parameters())), sorted(dict(module.named_buffers())),
            sorted(module._modules))


def test_add_module_and_setattr_registration_errors():
    ours, _ = run_both(registration_errors, compare=False)  # PyTorch's messages name the types more fully
    errors, parameters, buffers, modules = ours
    assert errors[:10] == ['KeyError: \'module name can\\\'t contain ".", got: a.b\'',
                           'KeyError: \'module name can\\\'t be empty string ""\'',
                           "TypeError: module name should be a string. Got int",
                           "TypeError: int is not a Module subclass",
                           "KeyError: \"attribute 'training' already exists\"", "ok",
                           "KeyError: \"attribute 'ok' already exists\"", "KeyError: \"attribute 'p' already exists\"",
                           'KeyError: \'buffer name can\\\'t be empty string ""\'',
                           'KeyError: \'parameter name can\\\'t be empty string ""\'']
    assert errors[10].startswith("TypeError: cannot assign '") and "as parameter 'p'" in errors[10]
    assert errors[11] == "ok" and "as parameter 'buf'" in errors[12]
    assert (parameters, buffers, modules) == (["buf", "p"], [], ["ok"])
    if _ is not None:
        assert [e.split(":")[0] for e in _[0]] == [e.split(":")[0] for e in errors]
        assert _[1:] == ours[1:]


def modes_and_gradients(m):
    net = m.nn.Sequential(m.nn.Linear(2, 2), m.nn.Sequential(m.nn.Dropout(), m.nn.BatchNorm1d(2)))
    same = net.train(False) is net and net.requires_grad_(False) is net
    modes = [module.training for module in net.modules()]
    net.eval()
    net[1].train()
    modes += [module.training for module in net.modules()]
    net.requires_grad_()
    net(m.torch.ones(3, 2)).sum().backward()
    grad = net[0].weight.grad
    net.zero_grad(set_to_none=False)
    kept = net[0].weight.grad is grad
    order = []
    net.apply(lambda module: order.append(type(module).__name__))
    return same, modes, kept, net[0].weight.grad, order


def test_train_requires_grad_zero_grad_and_apply():
    ours, _ = run_both(modes_and_gradients)
    same, modes, kept, grad, order = ours
    assert same and kept and (grad == 0).all()
    assert modes == [False] * 5 + [False, False, True, True, True]
    assert order == ["Linear", "Dropout", "BatchNorm1d", "Sequential", "Sequential"]


def casting_keeps_parameters(m):
    layer = m.nn.Linear(2, 2)
    layer.register_buffer("count", m.torch.zeros(2, dtype=m.torch.int64))
    layer(m.torch.ones(1, 2)).sum().backward()
    weight, grad = layer.weight, layer.weight.grad
    name = lambda t: str(t.dtype).replace("torch.", "")  # noqa: E731
    out = [layer.double() is layer, layer.weight is weight, layer.weight.grad is grad, name(layer.weight),
           name(layer.weight.grad), name(layer.count)]
    layer.half()
    out += [layer.weight is weight, name(layer.weight)]
    layer.to(m.torch.float32)
    out += [layer.weight is weight, name(layer.weight), layer.weight.requires_grad, type(layer.weight).__name__]
    out += [layer.share_memory() is layer, layer.compile()]
    return out


def test_casting_keeps_parameter_objects_and_casts_gradients():
    ours, _ = run_both(casting_keeps_parameters)
    assert ours == [True, True, True, "float64", "float64", "int64", True, "float16", True, "float32", True,
                    "Parameter", True, None]


def private_apply(m):
    net = m.nn.Sequential(m.nn.Linear(2, 2), m.nn.BatchNorm1d(2))
    weight = net[0].weight
    net(m.torch.ones(3, 2)).sum().backward()
    out = net._apply(lambda t: t.abs() * 0 + 2)
    return (out is net, net[0].weight is weight, type(net[0].weight).__name__, net[0].weight, net[0].weight.grad,
            net[1].running_mean, net[1].num_batches_tracked)


def test_private_apply_maps_every_tensor_in_place_of_parameters():
    ours, _ = run_both(private_apply)
    assert ours[:3] == (True, True, "Parameter")
    assert all((t == 2).all() for t in ours[3:])


def test_apply_bumps_the_version_so_a_saved_graph_refuses_backward():
    """Ours refuses the backward of a graph that saved a parameter _apply has since changed;
    PyTorch's ``param.data =`` leaves the version as it was, and backward runs on (not compared)."""
    import autograd
    import nn

    layer = nn.Linear(2, 2)
    loss = layer(autograd.ones(1, 2, requires_grad=True)).pow(2).sum()
    layer._apply(lambda t: t * 2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def reprs(m):
    class Block(m.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = m.nn.Linear(4, 4)
            self.act = m.nn.GELU()

        def extra_repr(self):
            return "custom=1\nsecond"

    class Lines(m.nn.Module):
        def extra_repr(self):
            return "a=1\nb=2"

    net = m.nn.Sequential(Block(), m.nn.ModuleList([Block() for _ in range(3)]),
                          m.nn.ModuleList([m.nn.ReLU() for _ in range(4)]),
                          m.nn.ModuleDict({"a": m.nn.Linear(1, 1), "b": m.nn.Linear(1, 1)}),
                          m.nn.ModuleList([m.nn.Linear(2, 2), m.nn.Linear(2, 2), m.nn.Linear(2, 3)]))
    return repr(net), repr(m.nn.ModuleList()), repr(m.nn.Sequential()), repr(Lines()), repr(m.nn.ModuleDict())


def test_repr_of_nested_containers_with_repeated_blocks():
    ours, _ = run_both(reprs)
    assert ours[0].startswith("Sequential(\n  (0): Block(\n    custom=1\n    second\n    (fc): Linear(")
    assert "(1): ModuleList(\n    (0-2): 3 x Block(\n      custom=1\n      second\n      (fc): Linear(" in ours[0]
    assert "(2): ModuleList(\n    (0-3): 4 x ReLU()\n  )" in ours[0]
    assert "(0-1): 2 x Linear(in_features=2, out_features=2, bias=True)\n    (2): Linear(" in ours[0]
    assert ours[1:] == ("ModuleList()", "Sequential()", "Lines(\n  a=1\n  b=2\n)", "ModuleDict()")


def attributes_and_copies(m):
    class Net(m.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = m.nn.Linear(1, 1)
            self.register_buffer("buf", m.torch.zeros(1))
            self.plain = 3

    net, log = Net(), []
    names = dir(net)
    net.fc.register_forward_hook(lambda mod, a, o: log.append(type(mod).__name__))
    twin = copy.deepcopy(net)
    twin.fc(m.torch.ones(1, 1))
    del net.fc, net.buf
    return ([k in names for k in ("fc", "buf", "plain", "training", "state_dict")], names == sorted(names),
            log, twin.fc.weight is not net.__dict__.get("fc"), sorted(net._modules), sorted(net._buffers),
            hasattr(net, "fc"))


def test_dir_deepcopy_with_hooks_and_delattr():
    ours, _ = run_both(attributes_and_copies)
    assert ours == ([True] * 5, True, ["Linear"], True, [], [], False)


def zero_grad_of_a_graph_gradient(m):
    layer = m.nn.Linear(1, 1)
    layer(m.torch.ones(1, 1)).pow(2).sum().backward(create_graph=True)
    before = layer.weight.grad.requires_grad
    layer.zero_grad(set_to_none=False)
    return before, layer.weight.grad.requires_grad, layer.weight.grad.grad_fn is None, layer.weight.grad


def test_zero_grad_keeping_tensors_cuts_a_create_graph_gradient_from_its_graph():
    ours, _ = run_both(zero_grad_of_a_graph_gradient)
    assert ours[:3] == (True, False, True) and ours[3].tolist() == [[0.0]]


def casting_complex(m):
    layer = m.nn.Linear(1, 1)
    layer.c = m.nn.Parameter(m.torch.zeros(1, dtype=m.torch.complex64))
    name = lambda t: str(t.dtype).replace("torch.", "")  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch: complex modules are a new feature
        layer.to(m.torch.complex128)  # floating and complex tensors
    out = [name(layer.weight), name(layer.c)]
    layer.c = m.nn.Parameter(m.torch.zeros(1, dtype=m.torch.complex64))
    layer.float()  # floating tensors only
    return out + [name(layer.weight), name(layer.c)]


def test_to_a_complex_dtype_casts_complex_tensors_and_float_does_not():
    ours, _ = run_both(casting_complex)
    assert ours == ["complex128", "complex128", "complex128", "complex64"]
