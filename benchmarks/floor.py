"""Issue 12's unmet rows against their floors: how much of chainrule's time is NumPy's own call cost.

For each row, in one run, interleaved rounds, the best round kept, process time (time.process_time):

- (a) "NumPy floor": exactly the NumPy calls chainrule's forward and backward make for that workload (found by
  tracing every line chainrule runs, ``floor.py --trace``), with the same arguments, called back to back from a flat
  function: no engine, no Python around them. No library built on these calls can be faster.
- (b) "minimal engine": the smallest reverse-mode engine that runs that workload (minimal_engine.py): each op appends a
  closure to a tape, backward runs the tape reversed and sums the shares in a dict; the same NumPy calls as (a). The
  distance (b) - (a) is what any Python graph costs; chainrule's distance from (b) is what its semantics and its
  generality cost (grad modes, version counters, hooks, views, dtype and shape checks, freeing what was saved...).
- (c) chainrule, and PyTorch with one thread.

Then, with ``--profile``, cProfile of chainrule on each row (10^4 repetitions for the small rows), the functions
with the most own time: where chainrule's excess over (b) goes.

    python benchmarks/floor.py [--rounds N] [--only ROW ...] [--profile] [--clock wall] [--trace ROW]

Not part of ``make bench`` (about a minute and a half; two and a half with --profile). Rows: softmax log_softmax
relu sum matmul chain recurrent deep_chain mlp32. PyTorch and NumPy's BLAS (with threadpoolctl; otherwise set
OPENBLAS_NUM_THREADS=1) run on one thread, as Python runs our ops.
"""

import argparse
import cProfile
import gc
import linecache
import os
import pstats
import sys
import time

import numpy as np
from minimal_engine import (
    F32,
    ONE,
    ZERO,
    Mini,
    add,
    backward,
    log_softmax,
    matmul,
    mean,
    mul,
    neg,
    pick,
    relu,
    relu_large,
    scale,
    softmax,
    tanh,
    total,
)
from timing import load, one_thread, optional

import autograd

# -- the rows: each (a) the NumPy floor, (b) the minimal engine, (c) chainrule, PyTorch ---------------------------


def _arrays(count, shape=(16, 16), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(F32) for _ in range(count)]


def _floor_softmax(x, g):
    e = x - np.maximum.reduce(x, 1, None, None, True)
    np.exp(e, out=e)
    e /= np.add.reduce(e, 1, None, None, True)
    z = g * e
    z -= e * np.add.reduce(z, 1, None, None, True)
    return z


def _floor_log_softmax(x, g):
    y = x - np.maximum.reduce(x, 1, None, None, True)
    y -= np.log(np.add.reduce(np.exp(y), 1, None, None, True))
    z = np.exp(y)
    z *= np.add.reduce(g, 1, None, None, True)
    return np.subtract(g, z, out=z)


def _floor_relu(x, g):
    y = np.maximum(ZERO, x)
    return np.where(y <= 0, np.zeros((), g.dtype), g)


def _floor_sum(x, g):
    np.add.reduce(x, (0, 1), None, None, False)
    seed = np.array(1, x.dtype)
    spread = np.empty(x.shape, dtype=x.dtype)
    spread[...] = seed
    return spread


def _floor_matmul(x, y, g):
    x @ y  # noqa: B018
    return g @ y.swapaxes(-1, -2), x.swapaxes(-1, -2) @ g


def single_op_row(name, torch):
    """{candidate: function} for one op forward and backward on 16x16 float32 (upstream gradient all ones)."""
    x, y = _arrays(2)
    ones = np.ones((16, 16), F32)
    floors = {"softmax": lambda: _floor_softmax(x, ones), "log_softmax": lambda: _floor_log_softmax(x, ones),
              "relu": lambda: _floor_relu(x, ones), "sum": lambda: _floor_sum(x, ones),
              "matmul": lambda: _floor_matmul(x, y, ones)}
    minis = {"softmax": lambda a, b: softmax(a, 1), "log_softmax": lambda a, b: log_softmax(a, 1),
             "relu": lambda a, b: relu(a), "sum": lambda a, b: total(a), "matmul": matmul}
    ma, mb = Mini(x, True), Mini(y, True)

    def minimal():
        ma.grad = mb.grad = None
        out = minis[name](ma, mb)
        backward(out, np.array(1, F32) if name == "sum" else ones)

    candidates = {"(a) NumPy floor": floors[name], "(b) minimal engine": minimal}
    ops = {"softmax": lambda a, b: a.softmax(1), "log_softmax": lambda a, b: a.log_softmax(1),
           "relu": lambda a, b: a.relu(), "sum": lambda a, b: a.sum(), "matmul": lambda a, b: a @ b}
    for label, library in (("chainrule", autograd), ("PyTorch", torch)):
        if library is None:
            continue
        a, b = (library.tensor(v, requires_grad=True) for v in (x, y))
        g = library.ones(16, 16)

        def run(a=a, b=b, g=g):
            a.grad = b.grad = None
            out = ops[name](a, b)
            out.backward() if name == "sum" else out.backward(g)

        candidates[label] = run
    return candidates


def _floor_chain(x, y, z):
    s = x * y + z
    r = np.maximum(ZERO, s)
    np.add.reduce(r, (0, 1), None, None, False)
    spread = np.empty(r.shape, dtype=r.dtype)
    spread[...] = np.array(1, r.dtype)  # the seed
    g = np.where(r <= 0, np.zeros((), F32), spread)  # relu's backward; add hands g to both its inputs
    return g * y, g * x, g


def chain_row(torch):
    """((a*b + c).relu()).sum() forward and backward."""
    x, y, z = _arrays(3)
    ma, mb, mc = (Mini(v, True) for v in (x, y, z))

    def minimal():
        ma.grad = mb.grad = mc.grad = None
        backward(total(relu(add(mul(ma, mb), mc))), np.array(1, F32))

    candidates = {"(a) NumPy floor": lambda: _floor_chain(x, y, z), "(b) minimal engine": minimal}
    for label, library in (("chainrule", autograd), ("PyTorch", torch)):
        if library is None:
            continue
        a, b, c = (library.tensor(v, requires_grad=True) for v in (x, y, z))

        def run(a=a, b=b, c=c):
            a.grad = b.grad = c.grad = None
            ((a * b + c).relu()).sum().backward()

        candidates[label] = run
    return candidates


def recurrent_row(torch):
    """recurrent.py's loop: 200 steps of h = tanh(h @ W + x_t @ U + b), hidden 32, batch 8, loss and backward."""
    import recurrent

    weights, xs = recurrent.loop_data()
    W, U, b = weights
    steps, shape = recurrent.LOOP["steps"], (recurrent.LOOP["batch"], recurrent.LOOP["hidden"])
    count = F32(shape[0] * shape[1])

    def numpy_floor():
        h = np.asarray(np.asarray(np.zeros(shape, dtype=F32).astype(F32, copy=False)), dtype=F32)  # autograd.zeros
        hs = [h]
        for t in range(steps):
            h = np.tanh(h @ W + xs[t] @ U + b)
            hs.append(h)
        loss = np.add.reduce(h * h, (0, 1), None, None, False) / count
        spread = np.empty(shape, dtype=F32)  # mean's backward
        spread[...] = np.array(1, F32)
        np.divide(spread, count, out=spread)
        dh = spread * h + spread * h  # h * h's two shares, summed
        dW = dU = db = None
        for t in range(steps - 1, -1, -1):
            y = hs[t + 1]
            da = ONE - y * y
            da *= dh
            share_b = np.add.reduce(da, (0,), None, None, False)
            share_u = xs[t].swapaxes(-1, -2) @ da
            share_w = hs[t].swapaxes(-1, -2) @ da
            if t:
                dh = da @ W.swapaxes(-1, -2)
            if dW is None:
                dW, dU, db = share_w, share_u, share_b
            elif t == steps - 2:  # the second share: a new buffer, the rest in place
                dW, dU, db = dW + share_w, dU + share_u, db + share_b
            else:
                dW += share_w
                dU += share_u
                db += share_b
        return loss, dW

    mW, mU, mb = (Mini(w, True) for w in weights)

    def minimal():
        mW.grad = mU.grad = mb.grad = None
        h = Mini(np.zeros(shape, dtype=F32))
        for t in range(steps):
            h = tanh(add(add(matmul(h, mW), matmul(Mini(xs[t]), mU)), mb))
        loss = mean(mul(h, h))
        backward(loss, np.array(1, F32))
        return loss.data, mW.grad

    candidates = {"(a) NumPy floor": numpy_floor, "(b) minimal engine": minimal,
                  "chainrule": recurrent.loop_chainrule(weights, xs)}
    if torch is not None:
        candidates["PyTorch"] = recurrent.loop_torch(torch, weights, xs)
    candidates["NumPy by hand (recurrent.py)"] = recurrent.loop_numpy(weights, xs)
    reference = candidates["NumPy by hand (recurrent.py)"]()
    for name in ("(a) NumPy floor", "(b) minimal engine"):  # the same loss and dL/dW as the others
        loss, grad_w = candidates[name]()
        np.testing.assert_allclose(loss, reference[0], rtol=1e-4)
        np.testing.assert_allclose(grad_w, reference[1], rtol=1e-3, atol=1e-7)
    return candidates


MLP_STEPS = 10  # steps per timed run, each run from a fresh start (mlp_step.py's best_time_fresh)


def mlp32_row(torch):
    """mlp_step.py's raw step at batch 32: MLP 784-256-128-10, ReLU, log_softmax, [rows, y], mean, Adam on the
    arrays (the same update for every candidate)."""
    import mlp_step

    weights = mlp_step.initial_weights()
    x, labels = mlp_step.batch(32)
    rows = np.arange(len(labels))
    count = F32(len(labels))

    def numpy_floor_step():
        params = [w.copy() for w in weights]
        adam = mlp_step.Adam(params)

        def step():
            w1, b1, w2, b2, w3, b3 = params
            s1 = x @ w1 + b1
            r1 = np.maximum(ZERO, s1)
            s2 = r1 @ w2 + b2
            r2 = np.maximum(ZERO, s2)
            logits = r2 @ w3 + b3
            y = logits - np.maximum.reduce(logits, 1, None, None, True)  # log_softmax
            y -= np.log(np.add.reduce(np.exp(y), 1, None, None, True))
            picked = y[rows, labels]
            loss = -(np.add.reduce(picked, (0,), None, None, False) / count)
            spread = np.empty(picked.shape, dtype=F32)  # neg's, mean's backward
            spread[...] = -np.array(1, F32)
            np.divide(spread, count, out=spread)
            g = np.zeros(y.shape, dtype=F32)  # the index's
            np.size(spread)
            np.add.at(g, (rows, labels), spread)
            z = np.exp(y)  # log_softmax's
            z *= np.add.reduce(g, 1, None, None, True)
            g = np.subtract(g, z, out=z)
            grads = [None] * 6
            grads[5] = np.add.reduce(g, (0,), None, None, False)
            grads[4] = r2.swapaxes(-1, -2) @ g
            g = g @ w3.swapaxes(-1, -2)
            g = g * (r2 > 0)  # relu's, with its check
            np.isfinite(np.vdot(g.ravel("K"), r2.ravel("K")))
            grads[3] = np.add.reduce(g, (0,), None, None, False)
            grads[2] = r1.swapaxes(-1, -2) @ g
            g = g @ w2.swapaxes(-1, -2)
            g = g * (r1 > 0)
            np.isfinite(np.vdot(g.ravel("K"), r1.ravel("K")))
            grads[1] = np.add.reduce(g, (0,), None, None, False)
            grads[0] = x.swapaxes(-1, -2) @ g
            adam.step(params, grads)
            return loss

        return step

    def minimal_step():
        params = [Mini(w.copy(), True) for w in weights]
        adam = mlp_step.Adam([p.data for p in params])
        inputs = Mini(x)

        def step():
            w1, b1, w2, b2, w3, b3 = params
            h1 = relu_large(add(matmul(inputs, w1), b1))
            h2 = relu_large(add(matmul(h1, w2), b2))
            loss = neg(mean(pick(log_softmax(add(matmul(h2, w3), b3), 1), rows, labels)))
            for p in params:
                p.grad = None
            backward(loss, np.array(1, F32))
            adam.step([p.data for p in params], [p.grad for p in params])
            return loss.data

        return step

    makers = {"(a) NumPy floor": numpy_floor_step, "(b) minimal engine": minimal_step,
              "chainrule": lambda: mlp_step.chainrule_step(weights, x, labels),
              "NumPy by hand (mlp_step.py)": lambda: mlp_step.numpy_step(weights, x, labels)}
    if torch is not None:
        makers["PyTorch"] = lambda: mlp_step.torch_step(torch, weights, x, labels)
    reference = makers["NumPy by hand (mlp_step.py)"]()
    for name in ("(a) NumPy floor", "(b) minimal engine"):  # the same losses, step by step
        check, expected = makers[name](), makers["NumPy by hand (mlp_step.py)"]()
        for _ in range(3):
            np.testing.assert_allclose(float(check()), float(expected()), rtol=1e-4)
    del reference

    def fresh(make):
        def one(profile=None):
            step = make()
            step()  # warm up
            if profile is not None:
                profile.enable()
            start = CLOCK()
            for _ in range(MLP_STEPS):
                step()
            seconds = (CLOCK() - start) / MLP_STEPS
            if profile is not None:
                profile.disable()
            return seconds

        return one

    return {name: fresh(make) for name, make in makers.items()}


DEPTH = 100_000


def deep_chain_row(torch):
    """deep_chain.py's Tensor chain: 10^5 multiplications x = x * 1.00001 of 4 elements, then a sum; the
    backward alone is timed (each candidate builds its graph untimed)."""
    c = np.asarray(1.00001, dtype=F32)  # chainrule's Scale holds the number as a 0-d array of x's dtype

    def numpy_floor():
        spread = np.empty(4, dtype=F32)  # sum's backward
        spread[...] = np.array(1, F32)
        g = spread
        for _ in range(DEPTH):
            g = g * c
        return g

    def minimal_graph():
        x = Mini(np.ones(4, F32), True)
        y = x
        for _ in range(DEPTH):
            y = scale(y, c)
        return x, total(y)

    def library_graph(library):
        def build():
            x = library.ones(4, requires_grad=True)
            y = x
            for _ in range(DEPTH):
                y = y * 1.00001
            return x, y.sum()

        return build

    def timed_backward(build, run):
        def one(profile=None):
            graph = build()
            if profile is not None:
                profile.enable()
            start = CLOCK()
            run(graph)
            seconds = CLOCK() - start
            if profile is not None:
                profile.disable()
            return seconds

        return one

    candidates = {"(a) NumPy floor": timed_backward(lambda: None, lambda graph: numpy_floor()),
                  "(b) minimal engine": timed_backward(minimal_graph,
                                                       lambda graph: backward(graph[1], np.array(1, F32))),
                  "chainrule": timed_backward(library_graph(autograd), lambda graph: graph[1].backward())}
    if torch is not None:
        candidates["PyTorch"] = timed_backward(library_graph(torch), lambda graph: graph[1].backward())
    return candidates


ROWS = {"softmax": lambda torch: single_op_row("softmax", torch),
        "log_softmax": lambda torch: single_op_row("log_softmax", torch),
        "relu": lambda torch: single_op_row("relu", torch), "sum": lambda torch: single_op_row("sum", torch),
        "matmul": lambda torch: single_op_row("matmul", torch), "chain": chain_row, "recurrent": recurrent_row,
        "deep_chain": deep_chain_row, "mlp32": mlp32_row}
SELF_TIMED = {"deep_chain", "mlp32"}  # candidates time themselves (the backward alone; steps from a fresh start)
CLOCK = time.process_time  # --clock wall: time.perf_counter, as make bench


# -- timing --------------------------------------------------------------------------------------------------------


def _seconds_per_call(fn, budget):
    """Process seconds per call of fn, over as many calls as fill about ``budget`` seconds."""
    number, start = 0, CLOCK()
    while True:
        fn()
        number += 1
        elapsed = CLOCK() - start
        if elapsed >= budget:
            return elapsed / number


def interleaved(candidates, rounds, budget, self_timed=False):
    """{name: seconds}: the best round of each, the candidates taking turns round by round."""
    best = dict.fromkeys(candidates, float("inf"))
    for fn in candidates.values():  # warm up
        fn()
    for _ in range(rounds):
        for name, fn in candidates.items():
            best[name] = min(best[name], fn() if self_timed else _seconds_per_call(fn, budget))
    return best


def report_row(name, seconds):
    floor, minimal, ours = seconds["(a) NumPy floor"], seconds["(b) minimal engine"], seconds["chainrule"]
    unit, scale = ("s", 1) if name == "deep_chain" else ("us", 1e6)
    lines = [f"{name}   (load {' '.join(f'{v:.2f}' for v in load())})"]
    for label, value in seconds.items():
        lines.append(f"    {label:30s} {value * scale:11.2f} {unit}   {value / ours:5.2f}x chainrule"
                     + (f"   chainrule = {ours / value:4.2f}x this" if label == "PyTorch" else ""))
    lines.append(f"    of chainrule's time: NumPy calls {floor / ours:5.1%}, the minimal engine's Python "
                 f"{(minimal - floor) / ours:5.1%}, chainrule's excess over (b) {(ours - minimal) / ours:5.1%} "
                 f"({(ours - minimal) * scale:.2f} {unit})")
    if "PyTorch" in seconds:
        torch_seconds = seconds["PyTorch"]
        lines.append(f"    floors vs PyTorch: (a) {floor / torch_seconds:4.2f}x, (b) {minimal / torch_seconds:4.2f}x")
    return "\n".join(lines)


# -- where chainrule's excess goes ------------------------------------------------------------------------------


def profile_row(name, top=8):
    """cProfile of chainrule on the row: the functions with the most own time, per repetition. cProfile slows each
    Python call several times over, so each figure is also given scaled to the row's unprofiled time. A NumPy
    operator (x * y) or a call of a NumPy function that is no builtin (np.where, np.zeros...) counts in its caller's
    own time: the ops' forward and backward functions hold their NumPy work."""
    candidate = ROWS[name](None)["chainrule"]
    self_timed = name in SELF_TIMED
    repetitions = {"recurrent": 20, "deep_chain": 3, "mlp32": 20}.get(name, 10_000)
    unprofiled = min(candidate() for _ in range(3)) if self_timed else _seconds_per_call(candidate, 0.2)
    profile = cProfile.Profile()
    if self_timed:  # the candidate profiles only what it times
        for _ in range(repetitions):
            candidate(profile)
        if name == "mlp32":
            repetitions *= MLP_STEPS
    else:
        profile.enable()
        for _ in range(repetitions):
            candidate()
        profile.disable()
    stats = pstats.Stats(profile).stats
    every = sum(s[2] for s in stats.values()) / repetitions
    scale = unprofiled / every
    lines = [f"{name}: chainrule under cProfile, {repetitions} repetitions: {every * 1e6:.1f} us profiled, "
             f"{unprofiled * 1e6:.1f} us unprofiled; own time per repetition (profiled, scaled to unprofiled)"]
    for (filename, line, function), (_, calls, own, _, _) in sorted(stats.items(), key=lambda item: -item[1][2])[:top]:
        where = f"{os.path.relpath(filename, ROOT) if filename.startswith(ROOT) else filename}:{line}({function})"
        own /= repetitions
        lines.append(f"    {own * 1e6:10.2f} us {own * scale * 1e6:10.2f} us {own / every:6.1%} "
                     f"{calls / repetitions:9.1f} calls  {where}")
    return "\n".join(lines)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def trace_row(name):
    """Every line chainrule runs for one repetition of the row (after two untimed ones): where its NumPy calls
    are, to check (a) against."""
    candidate = ROWS[name](None)["chainrule"]
    candidate()
    candidate()
    library = os.path.join(ROOT, "autograd")

    def tracer(frame, event, arg):
        if not frame.f_code.co_filename.startswith(library):
            return None
        if event == "line":
            filename = frame.f_code.co_filename
            print(f"{os.path.relpath(filename, ROOT)}:{frame.f_lineno} {frame.f_code.co_name}: "
                  f"{linecache.getline(filename, frame.f_lineno).strip()}")
        return tracer

    sys.settrace(tracer)
    candidate()
    sys.settrace(None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--profile", action="store_true", help="also profile chainrule on each row")
    parser.add_argument("--trace", choices=ROWS, help="print every line chainrule runs for one repetition of ROW")
    parser.add_argument("--clock", choices=("process", "wall"), default="process",
                        help="process time (default) or wall time (time.perf_counter, as make bench)")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "process" else time.perf_counter
    if args.trace:
        trace_row(args.trace)
        return
    torch = optional("torch")
    gc.freeze()  # PyTorch's 170,000 objects out of the collector's sight: each full collection the minimal engine's
    # forward triggers would walk them (12 of its 21 ms per recurrent step; chainrule's step measured the same with
    # the collector on and off, so freezing changes only the floor (b), toward what it is without PyTorch loaded)
    with one_thread(torch) as note:
        print(f"issue 12's unmet rows: (a) NumPy's calls alone, (b) a minimal tape engine, (c) chainrule, PyTorch; "
              f"best of interleaved rounds, {args.clock} time\n{note}")
        for name in args.only:
            candidates = ROWS[name](torch)
            budget = 0.3 if name == "recurrent" else 0.02  # (short runs, many rounds: the best is the least disturbed)
            rounds = 3 if name == "deep_chain" else args.rounds
            print(report_row(name, interleaved(candidates, rounds, budget, self_timed=name in SELF_TIMED)), flush=True)
        if args.profile:
            for name in args.only:
                print(profile_row(name), flush=True)


if __name__ == "__main__":
    main()
