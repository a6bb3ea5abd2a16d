"""``autograd.utils.benchmark`` as ``torch.utils.benchmark``: a Measurement's statistics and text from given
times, Compare's tables (plain, trimmed to their significant figures, coloured, with variance warnings), and
Timer's replicates of a statement that uses ``torch``. Each test runs on PyTorch too."""

import importlib

import pytest


@pytest.fixture(params=["autograd", pytest.param("torch", marks=pytest.mark.torch)])
def B(request):  # noqa: N802  (the benchmark module)
    importlib.import_module(request.param)
    return importlib.import_module(f"{request.param}.utils.benchmark")


def measurement(B, number, times, **task):
    return B.Measurement(number, times, B.TaskSpec(stmt=task.pop("stmt", "f(x)"), setup=task.pop("setup", "pass"),
                                                   **task))


def test_a_measurement_has_the_statistics_of_its_times(B):
    m = measurement(B, 10, [1e-5, 1.1e-5, 1.3e-5, 0.9e-5, 1.0e-5], label="Batched dot", sub_label="[10]",
                    description="mul/sum")
    assert m.times == pytest.approx([1e-6, 1.1e-6, 1.3e-6, 0.9e-6, 1e-6])
    assert m.median == pytest.approx(1e-6) and m.mean == pytest.approx(1.06e-6) and m.iqr == pytest.approx(1e-7)
    assert (m.significant_figures, m.has_warnings, m.title, m.as_row_name) == (1, False, "Batched dot: [10]", "[10]")
    assert repr(m).split("\n", 1)[1] == ("Batched dot: [10]\nmul/sum\n  Median: 1.00 us\n"
                                         "  IQR:    0.10 us (1.00 to 1.10)\n"
                                         "  5 measurements, 10 runs per measurement, 1 thread")
    single = measurement(B, 100, [2.8e-4], setup="from __main__ import f")
    assert repr(single).split("\n", 1)[1] == ("f(x)\nsetup: from __main__ import f\n  2.80 us\n"
                                              "  1 measurement, 100 runs , 1 thread")
    noisy = measurement(B, 1, [5e-3, 6e-3, 9e-3, 5.5e-3])
    assert noisy.has_warnings and repr(noisy).endswith(
        "  WARNING: Interquartile range is 23.9% of the median measurement.\n"
        "           This could indicate system fluctuation.")
    assert B.select_unit(3e-7) == ("ns", 1e-9) and B.trim_sigfig(3.14159, 2) == pytest.approx(3.1)


def test_compare_lays_out_a_table(B):
    results = [measurement(B, 10, [1e-5, 1.1e-5, 1.3e-5, 0.9e-5, 1.0e-5], label="L", sub_label="[10]",
                           description="a"),
               measurement(B, 1, [5e-3, 6e-3, 9e-3, 5.5e-3], label="L", sub_label="[10]", description="b"),
               measurement(B, 1000, [1.0, 1.01, 1.02, 0.99, 1.0, 1.0], label="L", sub_label="[100]",
                           description="a", num_threads=2)]
    assert str(B.Compare(results)) == (
        "[-------------- L --------------]\n"
        "             |    a     |    b   \n"
        "1 threads: ----------------------\n"
        "      [10]   |    1.0   |  5750.0\n"
        "2 threads: ----------------------\n"
        "      [100]  |  1000.0  |        \n\n"
        "Times are in microseconds (us).\n")
    table = B.Compare(results)
    table.trim_significant_figures()
    table.highlight_warnings()
    assert "  |  6000 (! 24%)" in str(table) and str(table).endswith(
        "(! XX%) Measurement has high variance, where XX is the IQR / median * 100.\n")
    coloured = B.Compare(results)
    coloured.colorize()
    assert "\033[92m\033[1m  1.0 \033[0m\033[0m" in str(coloured)


def test_a_timer_times_a_statement_with_torch_in_its_namespace(B):
    timer = B.Timer(stmt="torch.ones(2) + y", setup="pass", globals={"y": 1}, label="ones", description="add")
    m = timer.timeit(20)
    assert m.number_per_run == 20 and len(m.raw_times) == 1 and m.raw_times[0] > 0 and m.title == "ones"
    blocked = timer.blocked_autorange(min_run_time=0.02)
    assert sum(blocked.raw_times) >= 0.02 and blocked.number_per_run >= 1 and blocked.median > 0
    adaptive = timer.adaptive_autorange(max_run_time=0.05)
    assert len(adaptive.raw_times) >= 1
    with pytest.raises(ValueError, match="global_setup is C\\+\\+ only"):
        B.Timer(stmt="pass", global_setup="int x;")
