"""``autograd.profiler``: where the time of a program goes, op by op, as ``torch.profiler`` reports it.

    with autograd.profiler.profile(record_shapes=True) as prof:
        with autograd.profiler.record_function("forward"):
            loss = model(x).sum()
        loss.backward()
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=10))

Each op's forward is an event named after the op (``Mul``, ``MatMul``), each node the backward pass
runs is one named as PyTorch names its nodes (``MulBackward0``), and ``record_function`` adds ranges
of the program's own. Events nest: the ops a backward node runs are its children, so a node's *self*
time is its total less theirs, and the table's "Self CPU" column adds up to the wall time recorded.

How: while a profiler records, ``Primitive.apply`` and the nodes' ``chain`` are replaced by timed
versions (and put back after), so a program that is not being profiled pays nothing for this module.
With ``profile_memory=True`` each event also counts the memory it allocated for the tensors it made (an op's
results, a node's gradients; views allocate nothing): ``cpu_memory_usage`` with its children's, and
``self_cpu_memory_usage`` without them, the table's "CPU Mem" and "Self CPU Mem" columns, as PyTorch's (which
also counts its kernels' temporaries, and their frees as negative rows). Only the CPU is measured
(``ProfilerActivity.CUDA`` is accepted and, with no CUDA, records nothing, as PyTorch's does without it);
``schedule``, ``step()``, ``on_trace_ready``, ``export_chrome_trace`` and ``tensorboard_trace_handler`` follow
PyTorch's.
"""

import enum
import functools
import json
import os
import socket
import threading
import time
import warnings
import weakref

from .backend import memory_owner
from .function import BackwardFunction
from .graph import program_stacklevel
from .meta import MetaArray
from .primitive import Primitive


class ProfilerActivity(enum.Enum):
    CPU = 0
    CUDA = 1
    XPU = 2
    MTIA = 3
    PrivateUse1 = 4


class ProfilerAction(enum.Enum):
    """What ``schedule(step)`` asks of the profiler at a step."""

    NONE = 0
    WARMUP = 1
    RECORD = 2
    RECORD_AND_SAVE = 3


def supported_activities():
    return {ProfilerActivity.CPU}


def schedule(*, wait, warmup, active, repeat=0, skip_first=0, skip_first_wait=0):
    """PyTorch's cycle: skip ``skip_first`` steps, then wait, warm up, record ``active`` steps (the last
    of them RECORD_AND_SAVE, when ``on_trace_ready`` runs), ``repeat`` times (0: until the end)."""
    if wait < 0 or warmup < 0 or active <= 0 or repeat < 0 or skip_first < 0:
        raise AssertionError(f"Invalid profiler schedule arguments. Got wait={wait} (need >= 0), warmup={warmup} "
                             f"(need >= 0), active={active} (need > 0), repeat={repeat} (need >= 0), "
                             f"skip_first={skip_first} (need >= 0).")
    if warmup == 0:
        warnings.warn("Profiler won't be using warmup, this can skew profiler results", stacklevel=program_stacklevel())

    def schedule_fn(step):
        if step < 0:
            raise AssertionError(f"Step must be non-negative. Got {step}.")
        if step < skip_first:
            return ProfilerAction.NONE
        step -= skip_first
        if skip_first_wait != 0:
            step += wait
        cycle = wait + warmup + active
        if repeat > 0 and step / cycle >= repeat:
            return ProfilerAction.NONE
        within = step % cycle
        if within < wait:
            return ProfilerAction.NONE
        if within < wait + warmup:
            return ProfilerAction.WARMUP
        return ProfilerAction.RECORD if within < cycle - 1 else ProfilerAction.RECORD_AND_SAVE

    return schedule_fn


def _always_record(step):
    return ProfilerAction.RECORD


# -- events ---------------------------------------------------------------------------------------


class FunctionEvent:
    """One timed call: an op's forward, a backward node, or a ``record_function`` range. Times in µs. ``trace_name``
    is its name in an exported trace (a step's range is ``ProfilerStep*`` in the tables, ``ProfilerStep#N`` there,
    as PyTorch's)."""

    def __init__(self, name, start_ns, thread, input_shapes, parent):
        self.name = self.key = self.trace_name = name
        self.start_ns, self.end_ns = start_ns, None
        self.thread, self.input_shapes = thread, input_shapes
        self.cpu_parent, self.cpu_children = parent, []
        self.count = 1
        self.cpu_memory_usage = self.self_cpu_memory_usage = 0  # bytes (profile_memory: _count_allocations)

    @property
    def cpu_time_total(self):
        return (self.end_ns - self.start_ns) / 1e3

    @property
    def self_cpu_time_total(self):
        return self.cpu_time_total - sum(child.cpu_time_total for child in self.cpu_children)

    cpu_time = cpu_time_total

    def __repr__(self):
        return f"<FunctionEvent {self.name} cpu_time_total={self.cpu_time_total:.3f}us>"


class FunctionEventAvg:
    """The events of one name (and input shapes, when grouped by them) added up: ``key_averages``'s rows."""

    def __init__(self, key, input_shapes):
        self.key, self.input_shapes = key, input_shapes
        self.count = 0
        self.cpu_time_total = self.self_cpu_time_total = 0.0
        self.cpu_memory_usage = self.self_cpu_memory_usage = 0

    def add(self, event):
        self.count += 1
        self.cpu_time_total += event.cpu_time_total
        self.self_cpu_time_total += event.self_cpu_time_total
        self.cpu_memory_usage += event.cpu_memory_usage
        self.self_cpu_memory_usage += event.self_cpu_memory_usage
        return self

    @property
    def cpu_time(self):
        """The average time of one call, µs."""
        return self.cpu_time_total / self.count if self.count else 0.0

    def __repr__(self):
        return (f"<FunctionEventAvg key={self.key} self_cpu_time={self.self_cpu_time_total:.3f}us "
                f"cpu_time={self.cpu_time_total:.3f}us count={self.count}>")


_SORT_KEYS = {"cpu_time", "cpu_time_total", "self_cpu_time_total", "count", "cpu_memory_usage",
              "self_cpu_memory_usage"}


class EventList(list):
    """A list of events (or of their averages) that prints as PyTorch's table."""

    def table(self, sort_by=None, row_limit=100, max_src_column_width=75, max_name_column_width=55,
              max_shapes_column_width=80, header=None, top_level_events_only=False):
        rows = [e for e in self if not top_level_events_only or getattr(e, "cpu_parent", None) is None]
        if sort_by is not None:
            if sort_by not in _SORT_KEYS:
                if sort_by.startswith(("cuda", "device", "self_cuda", "self_device")):
                    rows = list(rows)  # nothing is measured on a device: the order stays
                else:
                    raise AttributeError(f"'FunctionEventAvg' object has no attribute '{sort_by}'")
            else:
                rows = sorted(rows, key=lambda e: getattr(e, sort_by), reverse=True)
        if row_limit is not None and row_limit > 0:
            rows = rows[:row_limit]
        total = sum(e.self_cpu_time_total for e in self) or 1.0
        shapes = any(getattr(e, "input_shapes", None) for e in rows) and isinstance(self, _GroupedByShapes)
        width = min(max_name_column_width, max([len("Name")] + [len(str(e.key)) for e in rows]))
        memory = self.profile_memory
        columns = ["Self CPU %", "Self CPU", "CPU total %", "CPU total", "CPU time avg"] + \
            ["CPU Mem", "Self CPU Mem"] * memory + ["# of Calls"]
        line = "-" * width + "  " + "  ".join("-" * 12 for _ in columns) + ("  " + "-" * 20 if shapes else "")
        out = [] if header is None else [header]
        out += [line, f"{'Name':>{width}}  " + "  ".join(f"{c:>12}" for c in columns)
                + (f"  {'Input Shapes':>20}" if shapes else ""), line]
        for e in rows:
            name = str(e.key)
            name = name if len(name) <= width else name[:width - 3] + "..."
            cells = [f"{100 * e.self_cpu_time_total / total:.2f}%", _duration(e.self_cpu_time_total),
                     f"{100 * e.cpu_time_total / total:.2f}%", _duration(e.cpu_time_total),
                     _duration(e.cpu_time)] + \
                [_memory(e.cpu_memory_usage), _memory(e.self_cpu_memory_usage)] * memory + [str(e.count)]
            row = f"{name:>{width}}  " + "  ".join(f"{c:>12}" for c in cells)
            if shapes:
                row += f"  {str(e.input_shapes or [])[:max_shapes_column_width]:>20}"
            out.append(row)
        out += [line, f"Self CPU time total: {_duration(total)}", ""]
        return "\n".join(out)

    def __str__(self):
        return self.table()

    profile_memory = False  # (set by a profiler that counted memory: the table then shows it)


class _GroupedByShapes(EventList):
    pass


def _memory(nbytes):
    """Bytes as PyTorch's tables show them (1024 to a KB)."""
    for unit, size in (("GB", 1024 ** 3), ("MB", 1024 ** 2), ("KB", 1024)):
        if abs(nbytes) >= size:
            return f"{nbytes / size:.2f} {unit}"
    return f"{nbytes} B"


def _duration(us):
    if us >= 1e6:
        return f"{us / 1e6:.3f}s"
    if us >= 1e3:
        return f"{us / 1e3:.3f}ms"
    return f"{us:.3f}us"


# -- instrumentation: in place only while some profiler records --------------------------------------

_lock = threading.Lock()
_recording = []  # the profilers recording now (one, usually)
_originals = {}  # what the timed versions replaced: restored when the last one stops


def _shapes(values):
    return [list(v.shape) if hasattr(v, "shape") else [] for v in values]


def _timed(name, shapes, call, inputs=()):
    profilers = list(_recording)
    if not profilers:
        return call()
    events = [p._open(name, shapes) for p in profilers]
    result = None
    try:
        result = call()
        return result
    finally:
        for p, event in zip(profilers, events):
            p._close(event, result, inputs)


def _arrays(values):
    """The arrays of the tensors among ``values`` (one value, or a tuple or list of them)."""
    values = values if isinstance(values, (tuple, list)) else (values,)
    return [value._data for value in values if getattr(value, "_data", None) is not None]


def _timed_apply(cls, *inputs, **params):
    return _timed(cls.__name__, _shapes(inputs) if any(p.record_shapes for p in _recording) else None,
                  lambda: _originals["apply"].__func__(cls, *inputs, **params), inputs)


def _timing_chain(original):
    @functools.wraps(original)
    def chain(self, grad, wanted=None):
        return _timed(self.name(), None, lambda: original(self, grad, wanted), (grad,))
    return chain


def _instrument():
    _originals["apply"] = Primitive.__dict__["apply"]
    _originals["chain"] = Primitive.__dict__["chain"]
    _originals["function_chain"] = BackwardFunction.__dict__["chain"]
    Primitive.apply = classmethod(_timed_apply)
    Primitive.apply_replaced += 1  # (a backward's own ops go through apply, timed: apply_in_backward)
    Primitive.chain = _timing_chain(_originals["chain"])
    BackwardFunction.chain = _timing_chain(_originals["function_chain"])


def _restore():
    Primitive.apply = _originals.pop("apply")
    Primitive.apply_replaced -= 1
    Primitive.chain = _originals.pop("chain")
    BackwardFunction.chain = _originals.pop("function_chain")


class record_function:
    """A named range of the program's own in the profile (a context manager or a decorator); costs
    nothing while no profiler records."""

    def __init__(self, name, args=None):
        self.name, self.args = name, args
        self._events = None

    def __enter__(self):
        self._profilers = list(_recording)
        self._events = [p._open(self.name, None) for p in self._profilers]
        return self

    def __exit__(self, *exc_info):
        for p, event in zip(self._profilers, self._events):
            p._close(event)
        return False

    def __call__(self, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with record_function(self.name, self.args):
                return function(*args, **kwargs)
        return wrapper


class profile:
    """PyTorch's profiler: records while active (per ``schedule``), then ``key_averages()``,
    ``events()``, ``export_chrome_trace(path)``; ``step()`` marks a training step."""

    def __init__(self, *, activities=None, schedule=None, on_trace_ready=None, record_shapes=False,
                 profile_memory=False, with_stack=False, with_flops=False, with_modules=False,
                 experimental_config=None, execution_trace_observer=None, acc_events=False, use_cuda=None,
                 custom_trace_id_callback=None, post_processing_timeout_s=None):
        self.activities = set(activities) if activities is not None else supported_activities()
        self.schedule = schedule if schedule is not None else _always_record
        self.on_trace_ready = on_trace_ready
        self.record_shapes = record_shapes
        self.profile_memory = profile_memory
        self.with_stack, self.with_flops, self.with_modules = with_stack, with_flops, with_modules  # (accepted:
        # nothing of these is measured)
        self.step_num = 0
        self.current_action = None
        self._events, self._open_by_thread = [], {}
        self._live = {}  # id -> bytes of the memory allocated while recording, not yet freed (profile_memory)
        self._step_range = None

    # recording on and off

    def _start_recording(self):
        self._events, self._open_by_thread = [], {}
        with _lock:
            if not _recording:
                _instrument()
            _recording.append(self)
        self._begin_step_range()

    def _stop_recording(self):
        self._end_step_range()
        with _lock:
            if self in _recording:
                _recording.remove(self)
                if not _recording:
                    _restore()

    def _records(self):
        return self in _recording

    def _begin_step_range(self):
        if self._records() and self.schedule is not _always_record:
            self._step_range = self._open("ProfilerStep*", None)  # (one row for every step in the tables)
            self._step_range.trace_name = f"ProfilerStep#{self.step_num}"

    def _end_step_range(self):
        if self._step_range is not None:
            self._close(self._step_range)
            self._step_range = None

    def start(self):
        self.current_action = self.schedule(self.step_num)
        if self.current_action in (ProfilerAction.RECORD, ProfilerAction.RECORD_AND_SAVE, ProfilerAction.WARMUP):
            self._start_recording()

    def stop(self):
        if self._records():
            self._stop_recording()
            if self.current_action in (ProfilerAction.RECORD, ProfilerAction.RECORD_AND_SAVE) \
                    and self.on_trace_ready is not None:
                self.on_trace_ready(self)

    def step(self):
        """The next training step: the schedule says whether to record it (and when to hand over a trace)."""
        previous = self.current_action
        self._end_step_range()
        self.step_num += 1
        self.current_action = self.schedule(self.step_num)
        recording = (ProfilerAction.RECORD, ProfilerAction.RECORD_AND_SAVE)
        if previous == ProfilerAction.RECORD_AND_SAVE or (previous in recording and self.current_action not in
                                                          recording):
            self._stop_recording()
            if self.on_trace_ready is not None:
                self.on_trace_ready(self)
        if self.current_action in (*recording, ProfilerAction.WARMUP):
            if not self._records() or previous == ProfilerAction.WARMUP:
                if self._records():
                    self._stop_recording()  # the warm-up's events are not kept
                self._start_recording()
            else:
                self._begin_step_range()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()
        return False

    # events

    def _open(self, name, shapes):
        thread = threading.get_ident()
        stack = self._open_by_thread.setdefault(thread, [])
        event = FunctionEvent(name, time.perf_counter_ns(), thread, shapes, stack[-1] if stack else None)
        if stack:
            stack[-1].cpu_children.append(event)
        stack.append(event)
        return event

    def _close(self, event, result=None, inputs=()):
        event.end_ns = time.perf_counter_ns()
        if self.profile_memory:
            self._count_allocations(event, result, inputs)
        stack = self._open_by_thread.get(event.thread, [])
        if event in stack:
            del stack[stack.index(event):]
        self._events.append(event)

    # memory (profile_memory=True)

    def _count_allocations(self, event, result, inputs):
        """The memory ``event`` allocated: the memory of the tensors it returned, where no tensor showed it before
        (a view's, or an input returned as it is, is not new; what its children made they counted), added to what
        it freed while it ran (``_freed``); its total adds its children's."""
        given = {id(memory_owner(array)) for array in _arrays(inputs)}
        for array in _arrays(result):
            owner = memory_owner(array)
            key = id(owner)
            if key in self._live or key in given or type(owner) is MetaArray:
                continue
            self._live[key] = owner.nbytes
            weakref.finalize(owner, self._freed, key)
            event.self_cpu_memory_usage += owner.nbytes
        event.cpu_memory_usage = event.self_cpu_memory_usage + sum(child.cpu_memory_usage
                                                                   for child in event.cpu_children)

    def _freed(self, key):
        """Memory an event allocated is freed: counted against the event running now on this thread, as PyTorch
        counts a free (or, between events, in a "[memory]" event of its own, as PyTorch's)."""
        nbytes = self._live.pop(key, 0)
        if not nbytes or not self._records():
            return
        stack = self._open_by_thread.get(threading.get_ident())
        if stack:
            stack[-1].self_cpu_memory_usage -= nbytes
            return
        event = FunctionEvent("[memory]", time.perf_counter_ns(), threading.get_ident(), None, None)
        event.end_ns = event.start_ns
        event.cpu_memory_usage = event.self_cpu_memory_usage = -nbytes
        self._events.append(event)

    def events(self):
        """Every finished event, in the order they started."""
        events = EventList(sorted((e for e in self._events if e.end_ns is not None), key=lambda e: e.start_ns))
        events.profile_memory = self.profile_memory
        return events

    def key_averages(self, group_by_input_shape=False, group_by_stack_n=0, group_by_overload_name=False):
        """One row per name (and input shapes): calls, total and self time."""
        rows = {}
        for event in self.events():
            shapes = str(event.input_shapes) if group_by_input_shape else None
            key = (event.name, shapes)
            if key not in rows:
                rows[key] = FunctionEventAvg(event.name, event.input_shapes if group_by_input_shape else None)
            rows[key].add(event)
        averages = (_GroupedByShapes if group_by_input_shape else EventList)(rows.values())
        averages.profile_memory = self.profile_memory
        return averages

    def export_chrome_trace(self, path):
        """The events as Chrome's trace format (chrome://tracing, Perfetto): one complete event each."""
        events = self.events()
        origin = events[0].start_ns if events else 0
        trace = {"traceEvents": [{"name": e.trace_name, "ph": "X", "cat": "cpu_op", "ts": (e.start_ns - origin) / 1e3,
                                  "dur": e.cpu_time_total, "pid": os.getpid(), "tid": e.thread,
                                  "args": {} if e.input_shapes is None else {"Input Dims": e.input_shapes}}
                                 for e in events]}
        with open(path, "w") as file:
            json.dump(trace, file)
        return path


def tensorboard_trace_handler(dir_name, worker_name=None, use_gzip=False):
    """An ``on_trace_ready`` that writes each trace into ``dir_name`` as ``<worker>.<time>.pt.trace.json``."""
    def handler(prof):
        os.makedirs(dir_name, exist_ok=True)
        worker = worker_name or f"{socket.gethostname()}_{os.getpid()}"
        name = os.path.join(dir_name, f"{worker}.{time.time_ns()}.pt.trace.json")
        prof.export_chrome_trace(name)
        if use_gzip:
            import gzip

            with open(name, "rb") as plain, gzip.open(name + ".gz", "wb") as packed:
                packed.write(plain.read())
            os.remove(name)
    return handler
