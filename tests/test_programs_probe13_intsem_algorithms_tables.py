# ruff: noqa: B007, B023  (the programs are kept as their authors wrote them)
"""Integer, bool and uint8 programs, run as tests/probe13_intsem_common.py says. Counting, algorithms and promotion:
counting and metrics (confusion matrices by ``bincount``, ties of ``argmax``/``max(dim)``/``mode``, sums, products
and cumulative sums of bool and int8 promoting to int64, mean of integers refused); integer algorithms (a sieve on
bools, the game of life on uint8, popcount, Gray codes, bit reversal, powmod, Collatz, base conversion, run lengths,
counting sort, segment reductions, connected components by ``scatter_reduce``); and tables swept over every dtype
pair: the result dtypes of tensor-op-tensor, tensor-op-0-d-tensor and tensor-op-number under PyTorch's promotion,
in-place ops that would need a wider dtype, ``result_type``, ``promote_types``, ``can_cast``, conversions (``item``,
``tolist``, ``int``, ``float``, ``bool``, ``__index__``)."""

import operator

import numpy as np

from .probe13_intsem_common import outcome, typed
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Counting and metrics
# ----------------------------------------------------------------------------------------------


def counting(m):
    torch = m.torch
    out = {}
    num_classes = 4
    target = torch.tensor([0, 1, 2, 3, 1, 2, 2, 0, 3, 3, 1])
    logits = torch.tensor([[3, 1, 3, 0], [2, 5, 5, 1], [0, 1, 4, 4], [1, 1, 1, 1], [0, 7, 2, 7], [0, 0, 9, 1],
                           [2, 2, 2, 3], [6, 1, 6, 6], [0, 0, 0, 8], [1, 2, 3, 3], [4, 4, 1, 0]])
    pred = logits.argmax(dim=1)  # (ties: the first maximum)
    out["pred"] = typed(pred)
    values, indices = logits.max(dim=1)
    out["max_dim"] = (typed(values), typed(indices))
    out["min_dim"] = tuple(typed(t) for t in logits.min(dim=0))
    out["argmin"] = typed(logits.argmin(dim=1))
    out["mode"] = tuple(typed(t) for t in torch.mode(logits, dim=1))
    out["mode_all"] = tuple(typed(t) for t in logits.flatten().mode())
    out["median"] = tuple(typed(t) for t in logits.median(dim=1))
    out["kthvalue"] = tuple(typed(t) for t in logits.kthvalue(2, dim=1))
    confusion = torch.bincount(num_classes * target + pred, minlength=num_classes ** 2).reshape(num_classes,
                                                                                                 num_classes)
    out["confusion"] = typed(confusion)
    tp = confusion.diag()
    out["iou"] = typed(tp / (confusion.sum(0) + confusion.sum(1) - tp))
    out["recall"] = typed(tp.float() / confusion.sum(1))
    out["accuracy"] = typed((pred == target).float().mean())
    out["accuracy_item"] = (pred == target).sum().item() / len(target)
    out["correct_dtype"] = typed((pred == target).sum())
    out["per_class"] = typed(torch.zeros(num_classes, dtype=torch.long).index_add_(0, target, (pred == target).long()))
    out["scatter_counts"] = typed(torch.zeros(num_classes, dtype=torch.int32).scatter_add_(
        0, target, torch.ones_like(target, dtype=torch.int32)))
    out["histc"] = typed(torch.histc(target.float(), bins=4, min=0, max=3))
    # reductions of bools and small integers promote to int64
    flags = logits > 2
    out["bool_sum"] = typed(flags.sum())
    out["bool_sum_dim"] = typed(flags.sum(dim=1))
    out["bool_cumsum"] = typed(flags.cumsum(dim=1))
    out["bool_prod"] = typed(flags.prod(dim=1))
    out["bool_any_all"] = (typed(flags.any(dim=1)), typed(flags.all(dim=0)))
    out["count_nonzero"] = typed(torch.count_nonzero(logits, dim=0))
    small = logits.to(torch.int8) * 40  # wraps in int8
    out["int8"] = typed(small)
    out["int8_sum"] = typed(small.sum())
    out["int8_cumsum"] = typed(small.cumsum(0))
    out["int8_cumprod"] = typed(torch.tensor([100] * 10, dtype=torch.int8).cumprod(0))  # wraps past int64
    out["int8_prod"] = typed(torch.tensor([100] * 10, dtype=torch.int8).prod())
    out["uint8_sum_dtype"] = typed(logits.to(torch.uint8).sum(dtype=torch.uint8))
    out["int_mean"] = outcome(lambda: logits.mean())
    out["int_mean_dtype"] = typed(logits.mean(dtype=torch.float64))
    out["int_float_mean"] = typed(logits.float().mean(dim=0))
    out["int_std"] = outcome(lambda: logits.std())
    out["int_quantile"] = outcome(lambda: torch.quantile(logits, 0.5))
    out["int_nanmean"] = outcome(lambda: logits.nanmean())
    out["uniq_counts"] = tuple(typed(t) for t in torch.unique(logits, return_counts=True))
    out["uniq_dim"] = typed(torch.unique(logits[:, :2], dim=0))
    out["unique_consecutive"] = tuple(typed(t) for t in torch.unique_consecutive(target.sort().values,
                                                                                 return_counts=True))
    out["sort_bool"] = tuple(typed(t) for t in flags[0].sort(stable=True))
    out["sort_desc_stable"] = tuple(typed(t) for t in logits[1].sort(descending=True, stable=True))
    out["topk"] = tuple(typed(t) for t in torch.tensor([5, 1, 9, 3, 7]).topk(3))
    out["cummax"] = tuple(typed(t) for t in torch.tensor([1, 3, 3, 2, 5, 5]).cummax(0))
    return out


def test_counting_and_metrics():
    ours, _ = run_both(counting, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ours["pred"][1], [0, 1, 2, 0, 1, 2, 3, 0, 3, 2, 0])  # the first maximum
    assert ours["int_mean"][:2] == ("error", "RuntimeError")
    assert ours["bool_sum"][0] == ours["int8_sum"][0] == ours["int8_cumprod"][0] == "int64"
    assert ours["int8_prod"][1] == np.int64(100) ** 10  # (wrapped, as NumPy's int64 wraps)
    assert ours["confusion"][1].sum() == 11


# ----------------------------------------------------------------------------------------------
# Integer algorithms written with tensors (the vectorised kind found in puzzles, simulations and hashing)
# ----------------------------------------------------------------------------------------------


def integer_algorithms(m):
    torch, F = m.torch, m.F
    out = {}

    # sieve of Eratosthenes on a bool tensor (a 0-d bool read by `if`, strided writes of False)
    n = 100
    is_prime = torch.ones(n + 1, dtype=torch.bool)
    is_prime[:2] = False
    for i in range(2, int(n ** 0.5) + 1):
        if is_prime[i]:
            is_prime[i * i::i] = False
    primes = torch.nonzero(is_prime).flatten()
    out["primes"] = typed(primes)
    out["n_primes"] = int(is_prime.sum())

    # Conway's game of life on uint8, neighbours by torch.roll and by a convolution
    rng = np.random.default_rng(4)
    board = torch.from_numpy((rng.random((12, 12)) < 0.35).astype(np.uint8))
    kernel = torch.ones(1, 1, 3, 3)
    kernel[0, 0, 1, 1] = 0
    for step in range(4):
        neighbours = sum(torch.roll(board, (i, j), (0, 1)) for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0))
        by_conv = F.conv2d(F.pad(board.float()[None, None], (1, 1, 1, 1), mode="circular"), kernel)[0, 0]
        assert torch.equal(neighbours.float(), by_conv)
        board = ((neighbours == 3) | (board.bool() & (neighbours == 2))).to(torch.uint8)
    out["life"] = typed(board)
    out["neighbours"] = typed(neighbours)

    # bits: popcount, Gray code, bit reversal (FFT order), a Knuth multiplicative hash that wraps uint32 in int64
    x = torch.arange(16)
    out["popcount"] = typed(((x.unsqueeze(-1) >> torch.arange(4)) & 1).sum(-1))
    gray = x ^ (x >> 1)
    out["gray"] = typed(gray)
    decoded = gray.clone()
    shift = gray >> 1
    while shift.any():
        decoded ^= shift
        shift >>= 1
    out["gray_decoded"] = typed(decoded)
    rev = torch.zeros_like(x)
    for b in range(4):
        rev |= ((x >> b) & 1) << (3 - b)
    out["bit_reversed"] = typed(rev)
    keys = torch.tensor([1, 2, 3, 1000, 123456789, 2 ** 40 + 7])
    out["knuth"] = typed(((keys * 2654435761) & 0xFFFFFFFF) >> 22)
    out["knuth_int32"] = typed((keys.to(torch.int32) * -1640531535) >> 22)  # (int32 wraps)

    # modular exponentiation by squaring (products below 2**62), Collatz lengths, gcd and lcm, base 7 digits
    p = 1_000_000_007
    base, exponent, result = torch.tensor([2, 3, 10, 123456]), torch.tensor([10, 100, 1000, 65537]), torch.ones(4,
                                                                                                           dtype=torch.long)
    base = base % p
    while (exponent > 0).any():
        odd = (exponent % 2) == 1
        result = torch.where(odd, (result * base) % p, result)
        base = (base * base) % p
        exponent = exponent // 2
    out["powmod"] = typed(result)
    start = torch.arange(1, 30)
    value, steps = start.clone(), torch.zeros_like(start)
    while (value != 1).any():
        active = value != 1
        value = torch.where(active, torch.where(value % 2 == 0, value // 2, 3 * value + 1), value)
        steps += active.long()
    out["collatz"] = typed(steps)
    a, b = torch.tensor([12, -18, 0, 7, 2 ** 40]), torch.tensor([8, 27, 5, 0, 2 ** 20 * 3])
    out["gcd"] = typed(torch.gcd(a, b))
    out["lcm"] = typed(torch.lcm(a[:4], b[:4]))
    digits, number = [], torch.tensor([0, 6, 7, 49, 12345, -50])
    for _ in range(6):
        digits.append(torch.remainder(number, 7))
        number = torch.div(number, 7, rounding_mode="floor")
    out["base7"] = typed(torch.stack(digits[::-1], dim=1))

    # run-length encoding, counting sort, ranks, segment reductions, connected components by label propagation
    runs = torch.tensor([3, 3, 3, 1, 1, 4, 3, 3, 0, 0, 0, 0])
    values, counts = torch.unique_consecutive(runs, return_counts=True)
    out["rle"] = (typed(values), typed(counts), typed(torch.repeat_interleave(values, counts)))
    out["run_starts"] = typed(torch.cumsum(counts, 0) - counts)
    counts_by_value = torch.bincount(runs, minlength=5)
    out["counting_sort"] = typed(torch.repeat_interleave(torch.arange(5), counts_by_value))
    out["ranks"] = typed(runs.argsort(stable=True).argsort())
    segments = torch.tensor([0, 0, 1, 1, 1, 3])
    data = torch.tensor([5, -2, 7, 7, 1, 9])
    out["segment_sum"] = typed(torch.zeros(4, dtype=torch.long).index_add_(0, segments, data))
    out["segment_max"] = typed(torch.full((4,), -100).scatter_reduce(0, segments, data, "amax", include_self=False))
    out["segment_min_int32"] = typed(torch.zeros(4, dtype=torch.int32).scatter_reduce(
        0, segments, data.int(), "amin", include_self=False))
    edges = torch.tensor([[0, 1], [1, 2], [3, 4], [5, 5], [6, 4], [7, 8], [2, 0]])
    labels = torch.arange(9)
    while True:
        new = labels.clone()
        new = new.scatter_reduce(0, edges[:, 0], labels[edges[:, 1]], "amin")
        new = new.scatter_reduce(0, edges[:, 1], labels[edges[:, 0]], "amin")
        if torch.equal(new, labels):
            break
        labels = new
    out["components"] = typed(labels)
    out["n_components"] = len(torch.unique(labels))
    return out


def test_integer_algorithms():
    ours, _ = run_both(integer_algorithms, rtol=0, atol=0)
    np.testing.assert_array_equal(ours["primes"][1][:10], [2, 3, 5, 7, 11, 13, 17, 19, 23, 29])
    assert ours["n_primes"] == 25
    np.testing.assert_array_equal(ours["gray_decoded"][1], np.arange(16))
    np.testing.assert_array_equal(ours["powmod"][1], [pow(2, 10, 1_000_000_007), pow(3, 100, 1_000_000_007),
                                                      pow(10, 1000, 1_000_000_007), pow(123456, 65537, 1_000_000_007)])
    np.testing.assert_array_equal(ours["base7"][1][:, -2:], [[0, 0], [0, 6], [1, 0], [0, 0], [6, 4], [6, 6]])
    np.testing.assert_array_equal(ours["gcd"][1], [4, 9, 5, 7, 2 ** 20])
    assert ours["life"][0] == "uint8" and ours["n_components"] == 4


# ----------------------------------------------------------------------------------------------
# Tables over every dtype pair: result dtypes under PyTorch's promotion, in-place refusals, conversions
# ----------------------------------------------------------------------------------------------

DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]
BINARY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
          "//": operator.floordiv, "%": operator.mod, "**": operator.pow, "&": operator.and_, "|": operator.or_,
          "^": operator.xor, "<<": operator.lshift, ">>": operator.rshift, "==": operator.eq, "<": operator.lt}
INPLACE = {"add_": None, "sub_": None, "mul_": None, "div_": None, "floor_divide_": None, "remainder_": None,
           "pow_": None, "bitwise_and_": None, "bitwise_or_": None, "clamp_min_": None}


def promotion_tables(m):
    torch = m.torch
    values = {"bool": [True, False, True], "uint8": [3, 200, 7], "int8": [-3, 100, 7], "int16": [-300, 2, 7],
              "int32": [-70000, 2, 7], "int64": [-5, 2 ** 40, 7], "float16": [-1.5, 2.0, 7.25],
              "float32": [-1.5, 2.0, 1e-3], "float64": [-1.5, 2.0, 1e-3]}
    positive = {"bool": [True, True, True], "uint8": [3, 2, 1], "int8": [3, 2, 1], "int16": [3, 2, 1],
                "int32": [3, 2, 1], "int64": [3, 2, 1], "float16": [3.0, 2.0, 0.5], "float32": [3.0, 2.0, 0.5],
                "float64": [3.0, 2.0, 0.5]}

    def make(name, data):
        return torch.tensor(data, dtype=getattr(torch, name))

    out = {}
    for a in DTYPES:
        x = make(a, values[a])
        for b in DTYPES:
            y, y0 = make(b, positive[b]), make(b, positive[b][0])
            for op, f in BINARY.items():
                out[f"{a} {op} {b}"] = outcome(lambda: f(x, y))
                out[f"{a} {op} 0-d {b}"] = outcome(lambda: f(x, y0))
                out[f"0-d {b} {op} {a}"] = outcome(lambda: f(y0, x))
            out[f"promote {a} {b}"] = str(torch.promote_types(getattr(torch, a), getattr(torch, b))).rsplit(".")[-1]
            out[f"can_cast {a} {b}"] = torch.can_cast(getattr(torch, a), getattr(torch, b))
            out[f"result_type {a} 0-d {b}"] = str(torch.result_type(x, y0)).rsplit(".")[-1]
            for method in INPLACE:
                out[f"{a}.{method}({b})"] = outcome(lambda: getattr(x.clone(), method)(y))
                out[f"{a}.{method}(0-d {b})"] = outcome(lambda: getattr(x.clone(), method)(y0))
        for number in (2, -3, 2.5, True, 300):
            for op, f in BINARY.items():
                out[f"{a} {op} {number!r}"] = outcome(lambda: f(x, number))
                out[f"{number!r} {op} {a}"] = outcome(lambda: f(number, x))
            out[f"result_type {a} {number!r}"] = str(torch.result_type(x, number)).rsplit(".")[-1]
            for method in INPLACE:
                out[f"{a}.{method}({number!r})"] = outcome(lambda: getattr(x.clone(), method)(number))
            out[f"{a}.clamp_({number!r}, None)"] = outcome(lambda: x.clone().clamp_(number, None))
            out[f"{a}.clamp_(None, {number!r})"] = outcome(lambda: x.clone().clamp_(None, number))
            out[f"{a}.fill_({number!r})"] = outcome(lambda: x.clone().fill_(number))
            out[f"{a}.masked_fill({number!r})"] = outcome(lambda: x.masked_fill(torch.tensor([True, False, True]),
                                                                                number))
            out[f"where({a}, {number!r})"] = outcome(lambda: torch.where(x > 1, x, number))
            out[f"full {number!r} {a}"] = outcome(lambda: torch.full((2,), number, dtype=x.dtype))
        out[f"div floor {a}"] = outcome(lambda: torch.div(x, -2, rounding_mode="floor"))
        out[f"div trunc {a}"] = outcome(lambda: torch.div(x, -2, rounding_mode="trunc"))
        out[f"fmod {a}"] = outcome(lambda: torch.fmod(x, -2))
        out[f"-{a}"] = outcome(lambda: -x)
        out[f"~{a}"] = outcome(lambda: ~x)[:2]  # (the class; the message of ~float: test_invert_of_floats_says_why)
        out[f"abs {a}"] = outcome(lambda: x.abs())
        out[f"sum {a}"] = outcome(lambda: x.sum())
        out[f"cumsum {a}"] = outcome(lambda: x.cumsum(0))
        out[f"prod {a}"] = outcome(lambda: x.prod())
        out[f"mean {a}"] = outcome(lambda: x.mean())
        out[f"sqrt {a}"] = outcome(lambda: x.sqrt())
        out[f"pow -1 {a}"] = outcome(lambda: x ** -1)
        out[f"pow 0-d -1 {a}"] = outcome(lambda: x ** torch.tensor(-1))
        out[f"max {a}"] = outcome(lambda: x.max())
        out[f"argmax {a}"] = outcome(lambda: x.argmax())
        out[f"sort {a}"] = outcome(lambda: x.sort().values)
        out[f"unique {a}"] = outcome(lambda: torch.unique(x))
        out[f"item {a}"] = (type(x[0].item()).__name__, x[0].item())
        out[f"tolist {a}"] = [type(v).__name__ for v in x.tolist()]
        out[f"int {a}"] = outcome(lambda: int(x[1]))
        out[f"float {a}"] = outcome(lambda: float(x[1]))
        out[f"bool {a}"] = outcome(lambda: bool(x[0]))
        out[f"index {a}"] = outcome(lambda: operator.index(x[2]))
        for target in DTYPES:
            out[f"{a}.to({target})"] = outcome(lambda: x.to(getattr(torch, target)))
    return out


def test_promotion_and_inplace_tables():
    ours, theirs = run_both(promotion_tables, rtol=1e-3, atol=1e-6)
    assert ours["uint8 + int8"][0] == "int16" and ours["uint8 + 0-d int64"][0] == "uint8"
    assert ours["int32 / int32"][0] == "float32" and ours["bool + bool"][0] == "bool"
    assert ours["int64.add_(2.5)"] == ("error", "RuntimeError", "can't be cast to the desired output type")
    assert ours["int64 ** -3"] == ("error", "RuntimeError", "Integers to negative integer powers")
    assert ours["mean int64"] == ("error", "RuntimeError", "could not infer output dtype")
    assert ours["uint8.clamp_(-3, None)"][0] == "uint8" and (ours["uint8.clamp_(-3, None)"][1] == 253).all()
    assert ours["promote uint8 int8"] == "int16" and ours["can_cast float32 int64"] is False
