"""Extending PyTorch as tutorials and libraries do (see tests/pytorch_programs.py), each program run on chainrule and
on PyTorch and compared: values, gradients, printed text and errors. Pytrees (``torch.utils._pytree``): a nested
batch of named tuples moved to a dtype with ``tree_map_only``; ``tree_flatten_with_path``/``keystr`` naming
parameters; a model's state dict moved to float64 and an optimizer's state dict cloned with ``tree_map_only``, then
loaded back; a dataclass registered with ``register_pytree_node``; a model's output dataclass given to
``register_dataclass`` (a None field kept out of the leaves), ``map_only``, ``arg_tree_leaves``;
``treespec_dumps``/``loads`` (a defaultdict's context as PyTorch writes it, ``_register_namedtuple``, the error for a
type registered without a name); ``torch.func`` (``functional_call``, ``grad``, ``vmap``, ``jacrev``) on dicts of
parameters and nested inputs."""

import collections
import dataclasses

import numpy as np

from .probe13_extend_common import NS, sub
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Pytrees
# ----------------------------------------------------------------------------------------------


Sample = collections.namedtuple("Sample", ["image", "target"])


@dataclasses.dataclass
class Batch:
    inputs: object
    labels: object
    split: str = "train"


def registered(pytree):
    if Batch not in pytree.SUPPORTED_NODES:
        pytree.register_pytree_node(
            Batch, lambda b: ([b.inputs, b.labels], b.split), lambda children, split: Batch(*children, split),
            serialized_type_name=f"{NS}.Batch",
            flatten_with_keys_fn=lambda b: ([(pytree.GetAttrKey("inputs"), b.inputs),
                                             (pytree.GetAttrKey("labels"), b.labels)], b.split))
    return pytree


def nested_batches(m):
    torch = m.torch
    pytree = registered(sub(m, "utils._pytree"))
    batch = {"samples": [Sample(torch.ones(2, 2, dtype=torch.float64), torch.tensor(1)),
                         Sample(torch.full((2, 2), 3.0, dtype=torch.float64), torch.tensor(0))],
             "weights": (torch.tensor([0.5, 1.5], dtype=torch.float64), None), "name": "b0",
             "extra": Batch({"mask": torch.tensor([True, False])}, torch.tensor([2, 3]))}
    moved = pytree.tree_map_only(torch.Tensor, lambda t: t.to("cpu", torch.float32) if t.is_floating_point() else t,
                                 batch)
    leaves, spec = pytree.tree_flatten(moved)
    dtypes = [str(l.dtype).replace("torch.", "") if isinstance(l, torch.Tensor) else repr(l) for l in leaves]
    paths = [pytree.keystr(path) for path, _ in pytree.tree_flatten_with_path(moved)[0]]
    doubled = pytree.tree_unflatten([l * 2 if isinstance(l, torch.Tensor) else l for l in leaves], spec)
    shapes = pytree.tree_map(lambda t: tuple(t.shape) if isinstance(t, torch.Tensor) else t, batch)
    return dict(dtypes=dtypes, paths=paths, spec=repr(spec), doubled=doubled["samples"][1].image,
                extra=doubled["extra"].labels, shapes=str(shapes), leaves=spec.num_leaves,
                all_tensors=pytree.tree_all_only(torch.Tensor, lambda t: t.numel() > 0, batch))


def test_a_nested_batch_moved_named_and_rebuilt():
    ours, _ = run_both(nested_batches)
    assert ours["paths"][0] == "['samples'][0].image" and ours["paths"][-1] == "['extra'].labels"
    assert ours["dtypes"][:2] == ["float32", "int64"]


def parameter_names(m):
    torch, nn = m.torch, m.nn
    pytree = sub(m, "utils._pytree")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2)))
    state = {"model": dict(model.named_parameters()), "step": 3, "betas": (0.9, 0.999)}
    lines = []
    for path, leaf in pytree.tree_flatten_with_path(state)[0]:
        lines.append(f"{pytree.keystr(path)}: {tuple(leaf.shape) if isinstance(leaf, torch.Tensor) else leaf}")
    return "\n".join(lines)


def test_parameter_names_logged_by_key_path():
    ours, _ = run_both(parameter_names)
    assert ours.splitlines()[0] == "['model']['0.weight']: (4, 3)"


def state_dicts(m):
    torch, nn = m.torch, m.nn
    pytree = sub(m, "utils._pytree")
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    rng = np.random.default_rng(3)
    for p in model.parameters():
        p.data = torch.tensor(rng.standard_normal(tuple(p.shape)).astype(np.float32))
    opt = m.optim.Adam(model.parameters(), lr=0.1)
    x = torch.tensor(rng.standard_normal((5, 3)).astype(np.float32))
    model(x).pow(2).mean().backward()
    opt.step()
    sd64 = pytree.tree_map_only(torch.Tensor, lambda t: t.double() if t.is_floating_point() else t,
                                model.state_dict())
    state = opt.state_dict()
    paths = [pytree.keystr(k) for k, _ in pytree.tree_flatten_with_path(state)[0]]
    restored = m.optim.Adam(model.parameters(), lr=0.1)
    restored.load_state_dict(pytree.tree_map_only(torch.Tensor, lambda t: t.clone(), state))
    model.double().load_state_dict(sd64)
    return dict(kind=type(sd64).__name__, keys=list(sd64), paths=paths, leaves=len(pytree.tree_leaves(state)),
                dtypes=[str(v.dtype).replace("torch.", "") for v in sd64.values()],
                exp_avg=restored.state_dict()["state"][2]["exp_avg"], out=model(x.double()))


def test_state_dicts_mapped_and_loaded_back():
    ours, _ = run_both(state_dicts)
    assert ours["kind"] == "OrderedDict" and ours["paths"][0] == "['state'][0]['step']"


def treespecs(m):
    pytree = registered(sub(m, "utils._pytree"))
    out = []
    Point = collections.namedtuple("Point", ["x", "y"])
    for tree in [{"w": 1, "b": [2, 3], "t": (4,)}, collections.OrderedDict(z=1, a=2),
                 collections.defaultdict(list, {"b": 1, "a": 2}), collections.deque([1, 2], maxlen=3),
                 Batch(1, [2, 3], "val"), {"p": Point(1, 2)}]:
        spec = pytree.tree_structure(tree)
        try:
            text = pytree.treespec_dumps(spec)
            back = pytree.treespec_loads(text)
            out.append((text, back == spec, repr(pytree.tree_unflatten(list(range(spec.num_leaves)), back))))
        except NotImplementedError as e:
            out.append(str(e).replace(__name__, "<module>"))
    pytree._register_namedtuple(Point, serialized_type_name=f"{NS}.Point")
    text = pytree.treespec_dumps(pytree.tree_structure({"p": Point(1, [2])}))
    out.append((text, repr(pytree.treespec_loads(text).unflatten([5, 6]))))

    class Unnamed:
        def __init__(self, a):
            self.a = a

    pytree.register_pytree_node(Unnamed, lambda u: ([u.a], None), lambda children, _: Unnamed(*children))
    try:
        pytree.treespec_dumps(pytree.tree_structure(Unnamed(1)))
    except NotImplementedError as e:
        out.append(str(e).split("No registered")[1][:30])
    return out


def test_treespecs_dumped_and_loaded_as_pytorch_writes_them():
    ours, _ = run_both(treespecs)
    assert '"context": {"default_factory_module": "builtins"' in ours[2][0]
    assert ours[5].startswith("Can't serialize TreeSpec of namedtuple class")
    assert ours[6][1] == "{'p': Point(x=5, y=[6])}"


@dataclasses.dataclass
class ModelOutput:
    logits: object
    loss: object = None
    hidden: object = None


def dataclass_outputs(m):
    torch, nn, F = m.torch, m.nn, m.F
    pytree = sub(m, "utils._pytree")
    if ModelOutput not in pytree.SUPPORTED_NODES:
        pytree.register_dataclass(ModelOutput, serialized_type_name=f"{NS}.ModelOutput")
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]]))
        model.bias.zero_()
    x = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])
    logits = model(x)
    out = ModelOutput(logits, F.cross_entropy(logits, torch.tensor([0, 1])))
    detached = pytree.tree_map(lambda t: t.detach() * 2, out)
    spec = pytree.tree_structure(out)
    half = pytree.map_only(torch.Tensor)(lambda t: t.half())
    top = torch.topk(logits.detach(), 1)  # (a return type: a container keyed by position, as PyTorch's)
    return dict(leaves=len(pytree.tree_leaves(out)), spec=repr(spec), paths=str([pytree.keystr(k) for k, _ in
                pytree.tree_flatten_with_path(out)[0]]), logits=detached.logits, loss=detached.loss,
                top_paths=[pytree.keystr(k) for k, _ in pytree.tree_flatten_with_path(top)[0]],
                top=pytree.tree_map(lambda t: t + 1, top).values, top_spec=repr(pytree.tree_structure(top)),
                hidden=detached.hidden, dumped=pytree.treespec_dumps(spec),
                half=str(pytree.tree_map(half, [out.logits, 1.5])[0].dtype).replace("torch.", ""),
                args=len(pytree.arg_tree_leaves(out, [x], k={"a": x})))


def test_model_outputs_as_registered_dataclasses():
    ours, _ = run_both(dataclass_outputs)
    assert ours["leaves"] == 2 and ours["hidden"] is None and ours["paths"] == "['.logits', '.loss']"


def func_on_pytrees(m):
    torch, nn = m.torch, m.nn
    func = sub(m, "func")
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    rng = np.random.default_rng(1)
    params = {k: torch.tensor(rng.standard_normal(tuple(v.shape)).astype(np.float32))
              for k, v in model.named_parameters()}
    X = torch.tensor(rng.standard_normal((5, 3)).astype(np.float32))
    Y = torch.tensor(rng.standard_normal((5, 2)).astype(np.float32))

    def loss(params, x, y):
        pred = func.functional_call(model, params, (x.unsqueeze(0),))
        return ((pred - y) ** 2).mean()

    per_sample = func.vmap(func.grad(loss), in_dims=(None, 0, 0))(params, X, Y)
    grads, aux = func.grad(lambda p: (loss(p, X[0], Y[0]), p["0.weight"].sum()), has_aux=True)(params)

    def f(inp):
        return {"s": inp["a"].sin() * inp["b"][0], "c": inp["b"][1].cos()}

    inp = {"a": torch.tensor([0.1, 0.2], dtype=torch.float64),
           "b": (torch.tensor(2.0, dtype=torch.float64), torch.tensor([0.3, 0.4], dtype=torch.float64))}
    return per_sample, grads, aux, func.jacrev(f)(inp)


def test_torch_func_takes_pytrees_of_parameters():
    ours, _ = run_both(func_on_pytrees, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours[0]["2.bias"][0], ours[1]["2.bias"], rtol=1e-6)
