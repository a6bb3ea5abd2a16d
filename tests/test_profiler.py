"""``autograd.profiler`` (and ``autograd.autograd.profiler``): op-by-op timings as torch.profiler reports them."""

import json
import os

import numpy as np
import pytest

import autograd
import nn
from autograd import profiler
from autograd.function import BackwardFunction
from autograd.primitive import Primitive

ORIGINAL_APPLY = Primitive.__dict__["apply"]
ORIGINAL_CHAIN = Primitive.__dict__["chain"]


def run_step():
    a = autograd.tensor(np.ones((3, 3), np.float32), requires_grad=True)
    loss = ((a * 2.0) * a).sum()
    loss.backward()
    return a


def test_events_name_the_ops_and_nodes_and_nest():
    with profiler.profile() as prof:
        with profiler.record_function("step"):
            run_step()
    names = [event.name for event in prof.events()]
    assert names[0] == "step"
    assert {"Scale", "Mul", "Sum", "MulBackward0", "SumBackward0", "Expand"} <= set(names)
    step = prof.events()[0]
    by_name = {}
    for event in prof.events():
        by_name.setdefault(event.name, []).append(event)
    backward_mul = by_name["MulBackward0"][0]
    assert backward_mul.cpu_parent is step  # the backward pass ran inside the range
    assert {child.name for child in backward_mul.cpu_children} == {"Mul"}  # dL/dx = dL/dy · y: the node's own ops
    for event in prof.events():
        assert 0 <= event.self_cpu_time_total <= event.cpu_time_total
    assert step.cpu_time_total >= sum(child.cpu_time_total for child in step.cpu_children)
    # self times add up to the recorded wall time: each microsecond is counted once
    total_self = sum(event.self_cpu_time_total for event in prof.events())
    assert total_self == pytest.approx(step.cpu_time_total, rel=1e-9)


def test_nothing_is_instrumented_outside_a_recording_even_after_an_error():
    assert Primitive.__dict__["apply"] is ORIGINAL_APPLY and Primitive.__dict__["chain"] is ORIGINAL_CHAIN
    with pytest.raises(ValueError, match="inside"):
        with profiler.profile():
            assert Primitive.__dict__["apply"] is not ORIGINAL_APPLY
            raise ValueError("inside")
    assert Primitive.__dict__["apply"] is ORIGINAL_APPLY and Primitive.__dict__["chain"] is ORIGINAL_CHAIN
    assert "chain" in BackwardFunction.__dict__
    with profiler.record_function("alone"):  # no profiler: nothing recorded, nothing raised
        run_step()


def test_key_averages_count_calls_and_group_by_shapes():
    x, y = autograd.ones(2, 3), autograd.ones(4)
    with profiler.profile(record_shapes=True) as prof:
        for _ in range(3):
            x.exp()
        y.exp()
    rows = {row.key: row for row in prof.key_averages()}
    assert rows["Exp"].count == 4
    assert rows["Exp"].cpu_time == pytest.approx(rows["Exp"].cpu_time_total / 4)
    grouped = {(row.key, str(row.input_shapes)): row.count for row in prof.key_averages(group_by_input_shape=True)}
    assert grouped == {("Exp", "[[2, 3]]"): 3, ("Exp", "[[4]]"): 1}
    table = prof.key_averages(group_by_input_shape=True).table(sort_by="count", row_limit=1)
    assert "Self CPU %" in table and "# of Calls" in table and "Input Shapes" in table and "[[2, 3]]" in table
    assert "[[4]]" not in table and table.splitlines()[-1].startswith("Self CPU time total:")
    with pytest.raises(AttributeError, match="no attribute 'speed'"):
        prof.key_averages().table(sort_by="speed")


def test_a_schedule_records_its_active_steps_and_hands_each_trace_over():
    traces = []
    step_schedule = profiler.schedule(wait=1, warmup=1, active=2, repeat=1)
    with profiler.profile(schedule=step_schedule, on_trace_ready=lambda p: traces.append(
            [(e.name, e.trace_name) for e in p.events() if e.name.startswith("ProfilerStep")])) as prof:
        for _ in range(6):
            run_step()
            prof.step()
    # (PyTorch's: one ProfilerStep* row in the tables, each step's number in the trace)
    assert traces == [[("ProfilerStep*", "ProfilerStep#2"), ("ProfilerStep*", "ProfilerStep#3")]]
    actions = [step_schedule(step) for step in range(6)]
    A = profiler.ProfilerAction
    assert actions == [A.NONE, A.WARMUP, A.RECORD, A.RECORD_AND_SAVE, A.NONE, A.NONE]


def test_schedule_matches_pytorchs():
    torch = pytest.importorskip("torch")
    for options in (dict(wait=1, warmup=1, active=2), dict(wait=2, warmup=1, active=3, repeat=2, skip_first=3),
                    dict(wait=5, warmup=1, active=1, skip_first=2, skip_first_wait=1)):
        ours, theirs = profiler.schedule(**options), torch.profiler.schedule(**options)
        assert [ours(s).name for s in range(25)] == [theirs(s).name for s in range(25)]


def test_chrome_trace_and_tensorboard_handler_write_json(tmp_path):
    with profiler.profile(on_trace_ready=profiler.tensorboard_trace_handler(str(tmp_path / "tb"),
                                                                              worker_name="w")) as prof:
        run_step()
    path = prof.export_chrome_trace(str(tmp_path / "trace.json"))
    events = json.load(open(path))["traceEvents"]
    assert {e["name"] for e in events} >= {"Mul", "MulBackward0"}
    assert all(e["ph"] == "X" and e["dur"] >= 0 for e in events)
    (written,) = os.listdir(tmp_path / "tb")
    assert written.startswith("w.") and written.endswith(".pt.trace.json")


def test_record_function_as_a_decorator_and_the_older_spelling():
    @profiler.record_function("forward_pass")
    def forward(model, x):
        return model(x)

    model = nn.Linear(3, 2)
    with autograd.autograd.profiler.profile() as prof:
        forward(model, autograd.ones(1, 3)).sum().backward()
    names = [e.name for e in prof.function_events]
    # (a backward event has PyTorch's node name: the linear layer's AddmmBackward0)
    assert names[0] == "forward_pass" and "AffineMap" in names and "AddmmBackward0" in names
    assert "forward_pass" in str(prof)
    with autograd.autograd.profiler.profile(enabled=False) as off:
        run_step()
    assert list(off.events()) == []


def test_the_same_api_as_pytorchs():
    torch = pytest.importorskip("torch")
    for name in ("profile", "record_function", "schedule", "ProfilerActivity", "ProfilerAction",
                 "tensorboard_trace_handler", "supported_activities"):
        assert hasattr(torch.profiler, name) and hasattr(profiler, name)
    assert {a.name for a in profiler.ProfilerAction} == {"NONE", "WARMUP", "RECORD", "RECORD_AND_SAVE"}
    with profiler.profile(activities=[profiler.ProfilerActivity.CPU, profiler.ProfilerActivity.CUDA]) as prof:
        run_step()
    assert prof.key_averages()  # (CUDA: nothing to record without it, as PyTorch's)


# -- profile_memory=True: what each event allocated and freed, as PyTorch counts it ------------------------

def _memory_of_a_chain(T):
    x = T.ones(4, 4)  # (float32: 64 bytes)
    with T.profiler.profile(profile_memory=True) as prof:
        with T.profiler.record_function("chain"):
            y = (x * 2).exp().t().sum(0)  # x * 2 and its exp are freed inside the range; the sum (16 B) is not
        del y  # (freed between events: a "[memory]" event)
    rows = {row.key: row for row in prof.key_averages()}
    return rows, prof


def test_memory_counts_allocations_and_frees_of_each_event():
    rows, prof = _memory_of_a_chain(autograd)
    assert (rows["chain"].cpu_memory_usage, rows["chain"].self_cpu_memory_usage) == (16, -128)
    assert (rows["Exp"].cpu_memory_usage, rows["Sum"].cpu_memory_usage) == (64, 16)
    assert rows["Permute"].cpu_memory_usage == 0  # (a view allocates nothing)
    assert rows["[memory]"].self_cpu_memory_usage == -16
    table = prof.key_averages().table(sort_by="self_cpu_memory_usage").splitlines()
    assert "CPU Mem" in table[1] and "Self CPU Mem" in table[1]
    named = [line.split()[0] for line in table[3:-2]]
    assert named.index("Exp") < named.index("Sum") < named.index("Permute") < named.index("chain")  # (by self mem)
    assert "64 B" in table[3 + named.index("Exp")] and "-128 B" in table[3 + named.index("chain")]


def test_memory_totals_agree_with_pytorchs():
    torch = pytest.importorskip("torch")
    ours, _ = _memory_of_a_chain(autograd)
    theirs, _ = _memory_of_a_chain(torch)
    for key in ("chain", "[memory]"):
        assert (ours[key].cpu_memory_usage, ours[key].self_cpu_memory_usage) == \
            (theirs[key].cpu_memory_usage, theirs[key].self_cpu_memory_usage)
    assert ours["Exp"].cpu_memory_usage == theirs["aten::exp"].cpu_memory_usage


def test_memory_is_not_counted_or_shown_unless_asked():
    x = autograd.ones(4, 4)
    with autograd.profiler.profile() as prof:
        x.exp()
    (row,) = prof.key_averages()
    assert row.cpu_memory_usage == row.self_cpu_memory_usage == 0
    assert "CPU Mem" not in prof.key_averages().table()
    assert prof.key_averages().table(sort_by="self_cpu_memory_usage")  # (accepted, as PyTorch's)


def test_a_gradient_passed_on_as_it_is_allocates_nothing():
    x = autograd.ones(8, requires_grad=True)  # (float32: 32 bytes)
    y = x * 3
    with autograd.profiler.profile(profile_memory=True) as prof:
        (y + 1).sum().backward()
    rows = {row.key: row for row in prof.key_averages()}
    assert rows["AddBackward0"].self_cpu_memory_usage == 0  # (dL/dy is its incoming gradient, unchanged)
    assert rows["SumBackward0"].cpu_memory_usage == 32  # (the expanded gradient, made by its Expand)
