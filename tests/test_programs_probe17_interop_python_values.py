# ruff: noqa: B007, UP031, UP032  (the programs are kept as their authors wrote them)
"""Programs that mix tensors with NumPy and plain Python as real training scripts do (see tests/pytorch_programs.py),
each run on chainrule and on PyTorch and compared, results, Python types and dtypes.
``tolist``/``item``/``int``/``float``/``bool``/``complex`` and ``math.*`` on 0-d tensors with format specs; Python's
builtins over tensors (``sum``, ``max``, ``sorted``, ``zip``, ``reversed``, ``in``, ``divmod``, ``round``, ...);
tensors as dict and set keys; ``pickle`` and ``copy.deepcopy`` of tensors and modules (a best-model snapshot, shared
parameters, views of one storage, NumPy scalars in a checkpoint); the section on where chainrule differed outside the
files a probe may change (strict xfails once, which pass now: a parameter summary reading numel off the shape,
asarray of a tensor)."""

import copy
import io
import math
import pickle

import numpy as np

from .probe17_interop_common import blobs, classifier, kind
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# 5. Python numbers out of tensors: item, tolist, int/float/bool/complex, math, format specs
# ----------------------------------------------------------------------------------------------


def python_numbers(m):
    torch = m.torch
    loss = torch.tensor(0.123456789)
    step = torch.tensor(42)
    grid = torch.tensor([[1.5, 2.0], [3.25, -4.0]])
    values = {
        "item": loss.item(), "item_int": step.item(), "item_bool": torch.tensor(True).item(),
        "tolist": grid.tolist(), "tolist_int": torch.arange(3).view(3, 1).tolist(), "tolist_0d": loss.tolist(),
        "tolist_bool": (grid > 0).tolist(), "tolist_f32": torch.tensor([0.1]).tolist(),
        "int": int(torch.tensor(3.7)), "int_neg": int(torch.tensor(-3.7)), "int_1x1": int(torch.tensor([[5]])),
        "float": float(step), "bool": bool(torch.tensor(0.0)), "bool_1": bool(torch.tensor([2])),
        "complex": complex(torch.tensor(2.0)), "complex_c": complex(torch.tensor(2.0 + 1.0j)),
        "exp": math.exp(loss), "sqrt": math.sqrt(torch.tensor(4)), "log": math.log(grid[0, 0]),
        "floor": math.floor(grid[1, 0]), "ceil": math.ceil(grid[1, 0]), "trunc": math.trunc(grid[1, 1].item() / 3),
        "isfinite": math.isfinite(loss), "isclose": math.isclose(torch.tensor(1.0), 1.0),
        "perplexity": math.exp(min(loss.item() * 20, 100)),
    }
    lines = [
        f"loss {loss:.4f}", f"step {step.item():>8}", f"step {step:>8}", f"step {step:05d}",
        f"lr {torch.tensor(3e-4):.1e}", f"acc {torch.tensor(0.9312):.1%}", f"{loss}", "%.3f" % loss,
        "%d items" % step, "{:.2f}".format(grid[0, 1]), f"{grid.sum().item():+.3f}", f"{grid.mean():8.3f}|",
        f"{torch.tensor([3.0]).item():.2f}",
    ]
    kinds = {k: kind(v) for k, v in values.items()}
    return values, kinds, lines


def test_python_numbers_and_format_specs_from_tensors():
    ours, _ = run_both(python_numbers, rtol=1e-7, atol=0)
    values, kinds, lines = ours
    assert kinds["item"] == "float" and kinds["item_int"] == "int" and kinds["item_bool"] == "bool"
    assert values["int"] == 3 and values["int_neg"] == -3 and values["floor"] == 3 and values["ceil"] == 4
    assert values["tolist_f32"] == [np.float32(0.1).item()]
    assert lines[:4] == ["loss 0.1235", "step       42", "step       42", "step 00042"]
    assert lines[4:6] == ["lr 3.0e-04", "acc 93.1%"] and lines[-1] == "3.00"


# ----------------------------------------------------------------------------------------------
# 6. Python's builtins over tensors
# ----------------------------------------------------------------------------------------------


def python_builtins(m):
    torch = m.torch
    scores = torch.tensor([0.5, 2.0, -1.0, 3.5])
    counts = torch.tensor([7, -7, 3])
    rows = torch.arange(6.0).view(3, 2)
    out = {
        "sum": sum(scores), "sum_start": sum(counts, 10), "sum_rows": sum(rows),
        "max": max(scores), "min": min(scores), "max_0d": max(torch.tensor(3.0), torch.tensor(4.0)),
        "max_key": max(range(4), key=lambda i: scores[i]), "max_mixed": max(0, scores[2]),
        "sorted": sorted(scores), "sorted_items": sorted(s.item() for s in scores),
        "len": len(rows), "iter": [r.sum() for r in rows], "zip": [a * b for a, b in zip(scores, counts)],
        "enumerate": [(i, x) for i, x in enumerate(counts)], "reversed": list(reversed(counts)),
        "in": 2.0 in scores, "not_in": 2.5 in scores, "in_tensor": torch.tensor(3) in counts,
        "divmod": divmod(int(counts[0]), 3),  # (a tensor has no __divmod__ nor __round__ in PyTorch)
        "div_floor": torch.div(counts, 3, rounding_mode="floor"),
        "div_trunc": torch.div(counts, 3, rounding_mode="trunc"),
        "floordiv": counts // 2, "rfloordiv": 7 // torch.tensor([3, -3]), "fmod": torch.fmod(counts, 3),
        "mod": counts % 3, "rmod": 7 % torch.tensor([3, -3]), "rmod_float": 7.5 % torch.tensor([2.0, -2.0]),
        "abs": abs(scores - 1), "round": torch.round(torch.tensor([1.5, 2.5, -0.5])),
        "round_0d": round(torch.tensor(2.5).item()),
        "round_decimals": torch.round(torch.tensor([1.2345, 2.5]), decimals=2),
        "round_item": round(torch.tensor(1.2345).item(), 2),
        "neg_pos": (-counts, +counts), "invert": (~counts, ~(counts > 0)),
        "list_index": [10, 20, 30][torch.tensor(1)], "slice": [10, 20, 30][torch.tensor(1):],
        "range": list(range(torch.tensor(3))), "count": [1, 2, 2].count(torch.tensor(2)),
        "any_all": (any(scores > 3), all(scores > -2)),
    }
    kinds = {k: kind(v) for k, v in out.items() if not isinstance(v, (list, tuple))}
    return out, kinds


def test_python_builtins_over_tensors():
    ours, _ = run_both(python_builtins)
    out, kinds = ours
    assert float(out["sum"]) == 5.0 and kinds["sum"] == "Tensor(float32)" and kinds["in"] == "bool"
    assert out["max_key"] == 3 and out["sorted_items"] == [-1.0, 0.5, 2.0, 3.5] and out["list_index"] == 20
    np.testing.assert_array_equal(out["round"], [2.0, 2.0, -0.0])  # half to even, as Python's round
    np.testing.assert_array_equal(out["div_floor"], [2, -3, 1])
    np.testing.assert_array_equal(out["fmod"], [1, -1, 0])
    np.testing.assert_array_equal(out["rmod"], [1, -2])
    np.testing.assert_array_equal(out["rmod_float"], [1.5, -0.5])


# ----------------------------------------------------------------------------------------------
# 7. tensors as dict and set keys
# ----------------------------------------------------------------------------------------------


def tensors_as_keys(m):
    torch = m.torch
    a, b = torch.tensor(1), torch.tensor(1)
    by_identity = {a: "a", b: "b"}  # hashed by identity: equal values, two keys
    seen = {a, b, a}
    labels = torch.tensor([3, 1, 3, 2, 1, 3])
    counts = {}
    for label in labels:
        counts[label.item()] = counts.get(label.item(), 0) + 1
    vocabulary = {word: torch.tensor(i) for i, word in enumerate(["the", "cat", "sat"])}
    inverse = {v.item(): k for k, v in vocabulary.items()}
    decoded = [inverse[int(i)] for i in torch.tensor([2, 0, 1])]
    params = list(m.nn.Linear(2, 2).parameters())
    groups = {p: i for i, p in enumerate(params)}  # optimizer-style: parameters as keys
    unique_rows = {tuple(row.tolist()) for row in torch.tensor([[1, 2], [1, 2], [3, 4]])}
    return (len(by_identity), by_identity[a], len(seen), a in by_identity, torch.tensor(1) in by_identity,
            sorted(counts.items()), decoded, len(groups), sorted(unique_rows))


def test_tensors_as_dict_and_set_keys():
    ours, _ = run_both(tensors_as_keys)
    assert ours == (2, "a", 2, True, False, [(1, 2), (2, 1), (3, 3)], ["sat", "the", "cat"], 2,
                    [(1, 2), (3, 4)])


# ----------------------------------------------------------------------------------------------
# 8. pickle and copy.deepcopy of tensors and modules
# ----------------------------------------------------------------------------------------------


def pickle_and_deepcopy(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    X, y = blobs()
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    model = load(m, classifier(m), weights)
    optimizer = m.optim.Adam(model.parameters(), lr=0.05)
    best_loss, best_model, best_state = np.inf, None, None
    history = []
    for step in range(6):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        if loss < best_loss:  # a tensor against NumPy's inf
            best_loss = loss.item()
            best_model = copy.deepcopy(model)
            best_state = copy.deepcopy(model.state_dict())
    shipped = pickle.loads(pickle.dumps(best_model))
    shipped_state = pickle.loads(pickle.dumps({k: v.clone() for k, v in best_state.items()}))
    with torch.no_grad():
        model[0].weight.zero_()  # the copies do not follow
    tied = nn.Linear(3, 3)
    pair = nn.Sequential(tied, nn.Tanh(), tied)
    pair_copy = copy.deepcopy(pair)
    leaf = torch.ones(3, requires_grad=True)
    (leaf * 2).sum().backward()
    leaf_copy = copy.deepcopy(leaf)
    pickled = pickle.loads(pickle.dumps(torch.nn.Parameter(torch.ones(2))))
    buffer = io.BytesIO()
    torch.save({"weights": best_state, "losses": np.array(history), "step": np.int64(5)}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=False)
    return (history, shipped(X), shipped_state["0.weight"], best_model[0].weight,
            pair_copy[0] is pair_copy[2], pair_copy[0] is tied, leaf_copy.grad, leaf_copy.requires_grad,
            leaf_copy.is_leaf, type(pickled).__name__, pickled.requires_grad, checkpoint["losses"],
            int(checkpoint["step"]), checkpoint["weights"]["2.bias"])


def test_pickle_and_deepcopy_of_tensors_and_modules():
    ours, _ = run_both(pickle_and_deepcopy, weights_of(classifier), rtol=1e-5, atol=1e-6)
    assert ours[4] is True and ours[5] is False and ours[9] == "Parameter" and ours[10] is True
    np.testing.assert_array_equal(ours[6], [2, 2, 2])
    np.testing.assert_allclose(ours[2], ours[3])


def deepcopy_of_views(m):
    torch = m.torch
    base = torch.arange(6.0)
    window = base[2:4]
    base_copy, window_copy = copy.deepcopy((base, window))  # one memo: the copies share memory, as before
    base_copy.add_(1)
    return window_copy


def test_deepcopy_keeps_views_of_one_storage_together():
    ours, _ = run_both(deepcopy_of_views)
    np.testing.assert_array_equal(ours, [3.0, 4.0])


def numpy_scalars_in_a_checkpoint(m):
    torch = m.torch
    buffer = io.BytesIO()
    torch.save({"epoch": np.int64(7), "best_acc": np.float32(0.875), "losses": np.array([0.5, 0.25])}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=False)
    return {k: kind(v) for k, v in checkpoint.items()}


def test_numpy_scalars_in_a_checkpoint_come_back_as_numpy_scalars():
    ours, _ = run_both(numpy_scalars_in_a_checkpoint)
    assert ours == {"epoch": "np.int64", "best_acc": "np.float32", "losses": "ndarray(float64)"}


# ----------------------------------------------------------------------------------------------
# where chainrule differs outside the files a probe may change (strict xfails)
# ----------------------------------------------------------------------------------------------


def parameter_summary(m, weights):
    torch = m.torch
    model = load(m, classifier(m), weights)
    rows = [(name, tuple(p.shape), p.shape.numel()) for name, p in model.named_parameters()]
    sizes_are_sizes = all(isinstance(p.shape, torch.Size) for p in model.parameters())
    return rows, sum(r[2] for r in rows), sizes_are_sizes


def test_a_parameter_summary_reads_numel_off_the_shape():
    ours, _ = run_both(parameter_summary, weights_of(classifier))
    assert ours[1] == 5 * 16 + 16 + 16 * 3 + 3 and ours[2] is True


def asarray_of_a_tensor(m):
    torch = m.torch
    features = torch.zeros(3)
    same = torch.asarray(features)
    same.add_(1)
    return same is features, features


def test_asarray_of_a_tensor_is_the_tensor_itself():
    ours, _ = run_both(asarray_of_a_tensor)
    assert ours[0] is True
