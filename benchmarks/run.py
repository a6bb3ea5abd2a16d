"""`make bench`: every benchmark, ratios measured side by side in one run.

These machines are shared and noisy, so each benchmark reports ratios taken in one run,
interleaved (against hand-written NumPy, and PyTorch and micrograd when they are
installed: pip install 'chainrule[reference]'), never absolute targets. The machine's load
is printed first and stored with the figures: compare runs only at similar loads.

    python benchmarks/run.py [--json PATH] [--only NAME ...]

writes every figure to PATH (default benchmarks/results.json); see benchmarks/README.md.
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import deep_chain  # noqa: E402
import import_time  # noqa: E402
import lenet_step  # noqa: E402
import mlp_step  # noqa: E402
import optimizer_step  # noqa: E402
import per_op  # noqa: E402
import recurrent  # noqa: E402
import timing  # noqa: E402
import transformer_step  # noqa: E402
import value_engine  # noqa: E402

BENCHMARKS = {"per_op": per_op, "mlp_step": mlp_step, "lenet_step": lenet_step, "optimizer_step": optimizer_step,
              "value_engine": value_engine, "deep_chain": deep_chain, "recurrent": recurrent,
              "transformer_step": transformer_step, "import_time": import_time}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=os.path.join(timing.HERE, "results.json"), help="where to write the figures")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    args = parser.parse_args(argv)
    torch = timing.optional("torch")
    threads = torch.get_num_threads() if torch is not None else None
    started = time.time()
    load = timing.load()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  load averages (1, 5, 15 min) {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} on {os.cpu_count()} CPUs; Python {platform.python_version()}")
    for name in args.only or BENCHMARKS:
        if torch is not None:
            torch.set_num_threads(threads)  # each benchmark sets the thread count it needs (per_op: 1)
        print(BENCHMARKS[name].report(), flush=True)
    end_load = timing.load()
    print(f"done in {time.time() - started:.0f} s; load averages now {end_load[0]:.2f} {end_load[1]:.2f} "
          f"{end_load[2]:.2f}")
    figures = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
               "seconds": time.time() - started, "load_at_start": load, "load_at_end": end_load,
               "cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
               "torch_threads": threads, "tables": timing.RESULTS}
    with open(args.json, "w") as out:
        json.dump(figures, out, indent=1)
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
