"""chainrule's nn modules against PyTorch's own module database (`module_db`, the ModuleInfo entries PyTorch tests
torch.nn with).

For every ModuleInfo whose class exists in `nn` (same name), its CPU samples (a bounded spread of them, see
FLOAT64_SAMPLES), in float64 and float32, in training and in eval mode: PyTorch's module and ours are built from
the same constructor arguments (tensors converted), cast to the dtype, set to the mode, and PyTorch's state_dict
is loaded into ours (strict). Both run forward on the same inputs, and must agree on
- the outputs (tuples and nested ones too): values, dtypes and shapes;
- every buffer after the call (a norm's running statistics in training mode), and again after a second call;
- the inputs after the call (what an in-place module wrote into them);
- the gradients, with respect to the inputs and to every parameter, of Σ out·w over the floating outputs, for
  the same random w; for a few float64 training samples also the second derivatives (of Σ grad·v, v random).
Each `module_error_inputs_func` case must raise PyTorch's exception class here, at construction or in forward,
where PyTorch raises it (with a message; PyTorch's regex is not asked for). The modules that take `inplace`
also run PyTorch's inplace check.

Randomness: no ModuleInfo sample draws random numbers in forward (the Transformer ones set dropout=0.0, the
FractionalMaxPool ones pass `_random_samples`), so every sample is compared in full, in both modes.

Hand-picked configurations, repr, attributes and initialisation are in tests/test_nn_module_parity.py; this
file walks PyTorch's own samples. Known differences are listed below with their reason (README's "Deliberate
differences"). Needs torch and expecttest (a test-only dependency of `torch.testing._internal`); skips cleanly
without them.
"""

import inspect
import itertools
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")

import autograd  # noqa: E402
import nn  # noqa: E402
import nn.functional  # noqa: E402
from tests.torch_samples import TORCH_TO_NUMPY_DTYPE, Unconvertible, compare_outputs, convert, leaves  # noqa: E402

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.testing._internal.common_modules import ModuleErrorEnum, module_db
except Exception as error:  # a torch build without its test internals
    pytest.skip(f"torch.testing._internal is not usable: {error}", allow_module_level=True)

pytestmark = pytest.mark.torch

# Samples compared per entry: in float64 training mode all, up to FLOAT64_SAMPLES; otherwise a few. Where an
# entry has more, they are spread over its list (PyTorch lists the variants in groups: the spread meets each).
FLOAT64_SAMPLES = 24
SECOND_ORDER_SAMPLES = 4  # of the float64 training ones, with second derivatives too
EVAL_SAMPLES = 6  # float64 eval mode where train and eval differ (ModuleInfo.train_and_eval_differ)
FLOAT32_SAMPLES = 3  # float64 checks the maths; float32 the dtypes and the rounding
SAME_IN_EVAL_SAMPLES = 2  # eval mode, where PyTorch's ModuleInfo says train and eval do not differ
MAX_ERROR_INPUTS = 32  # (all of them, at present)
DTYPES = (torch.float64, torch.float32)

# Entries whose module class nn does not have (reported by test_missing_modules_are_the_known_ones).
MISSING = {}

# Entries whose first forward argument goes through a function in both libraries before the module sees it.
FIRST_INPUT_THROUGH = {
    # README: CTCLoss's gradient with respect to log_probs is the exact derivative; PyTorch's is right only
    # behind a log_softmax (the samples' log_probs are raw numbers). Behind one, the two agree.
    "nn.CTCLoss": lambda log_probs: log_probs.log_softmax(-1),
}

# Disagreements not fixed here, by entry name, with the reason (strict xfails: a fix shows up). None at present.
XFAIL = {}


def _tolerance(dtype):
    """(rtol, atol): float32 sums of a few hundred terms (a transformer layer) round differently in each library."""
    return (1e-7, 1e-9) if np.dtype(dtype) == np.float64 else (1e-4, 1e-5)


def _convert(value, memo):
    """convert(), and a torch.nn.functional function given as an argument (a Transformer layer's activation)
    becomes nn.functional's function of the same name, a TransformerEncoderLayer (TransformerEncoder's
    argument) ours with the same hyperparameters and weights; LinearCrossEntropyLoss's options (its chunked
    path, not built here) are Unconvertible."""
    if isinstance(value, torch.nn.TransformerEncoderLayer):
        return _encoder_layer(value, memo)
    if type(value).__name__ == "LinearCrossEntropyOptions":  # (PyTorch's chunked path: not built here)
        raise Unconvertible("LinearCrossEntropyOptions")
    name = getattr(value, "__name__", None)
    if callable(value) and isinstance(name, str) and getattr(torch.nn.functional, name, None) is value:
        return getattr(nn.functional, name)
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        return type(value)(_convert(v, memo) for v in value)
    if isinstance(value, dict):
        return {k: _convert(v, memo) for k, v in value.items()}
    return convert(value, memo)


def _encoder_layer(theirs, memo):
    dtype = TORCH_TO_NUMPY_DTYPE[theirs.linear1.weight.dtype]
    ours = nn.TransformerEncoderLayer(
        theirs.self_attn.embed_dim, theirs.self_attn.num_heads, theirs.linear1.out_features, theirs.dropout.p,
        _convert(theirs.activation, memo), theirs.norm1.eps, theirs.self_attn.batch_first, theirs.norm_first,
        bias=theirs.linear1.bias is not None, dtype=dtype)
    _load_state(theirs, ours)
    return ours


def _ours_class(info):
    return getattr(nn, info.module_cls.__name__, None)


def _build(info, sample, dtype, training):
    """(PyTorch's module, ours, memo) from the sample's constructor arguments, PyTorch's state loaded into ours."""
    memo = {}
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    ours_args, ours_kwargs = _convert(list(args), memo), _convert(kwargs, memo)
    theirs = info.module_cls(*args, **kwargs).to(dtype).train(training)
    ours = _ours_class(info)(*ours_args, **ours_kwargs).to(TORCH_TO_NUMPY_DTYPE[dtype]).train(training)
    return theirs, ours, memo


def _load_state(theirs, ours):
    state = {name: convert(value.detach().clone(), {}) for name, value in theirs.state_dict().items()}
    ours.load_state_dict(state, strict=True)


def _forward_input(sample):
    """A fresh copy of the forward arguments (leaves that require grad where the sample's do), so that what a
    module writes into them is its own."""
    args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
    copies = {}

    def fresh(value):
        if isinstance(value, torch.Tensor):
            if id(value) not in copies:
                copies[id(value)] = value.detach().clone().requires_grad_(value.requires_grad)
            return copies[id(value)]
        if isinstance(value, (list, tuple)):
            return type(value)(fresh(v) for v in value)
        if isinstance(value, dict):
            return {k: fresh(v) for k, v in value.items()}
        return value

    return fresh(list(args)), fresh(kwargs)


def _upstream(outputs, seed):
    """A random gradient for each floating output, the same arrays for both libraries."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(t.shape)) for t in outputs]


def _agree(names, ours, theirs, targets, where, tolerance):
    """Disagreements between two lists of gradients (None: zeros) of `targets`."""
    problems = []
    for name, a, b, target in zip(names, ours, theirs, targets):
        dtype = TORCH_TO_NUMPY_DTYPE[target.dtype]
        want = np.zeros(tuple(target.shape), dtype) if b is None else b.detach().numpy(force=True)
        got = np.zeros(tuple(target.shape), dtype) if a is None else a.numpy()
        if got.shape != want.shape or got.dtype != want.dtype:
            problems.append(f"{where} {name}: {got.dtype}{got.shape}, PyTorch {want.dtype}{want.shape}")
            continue
        # (a gradient entry is a sum of many products: its rounding error scales with the largest of them,
        # bounded here by the largest entry, not with the entry itself, which may be a near-cancellation)
        scale = max(1.0, float(np.nanmax(np.abs(want), initial=0)))
        rtol, atol = tolerance(dtype)
        if not np.allclose(got, want, rtol=rtol, atol=atol * scale, equal_nan=True):
            problems.append(f"{where} {name}: max |diff| {np.nanmax(np.abs(got - want), initial=0):.3g} "
                            f"(largest entry {scale:.3g})")
    return problems


def _weighted_sum(tensors, weights, library):
    """Σ_k sum(t_k · w_k), in `library` (torch or autograd)."""
    terms = [(t * library.tensor(w, dtype=t.dtype)).sum() for t, w in zip(tensors, weights)]
    return sum(terms[1:], terms[0])


def _gradients(theirs, ours, theirs_out, ours_out, theirs_inputs, memo, where, tolerance, second_order):
    """First derivatives of Σ out·w (w random) with respect to the inputs and parameters; with second_order,
    also the derivatives of Σ grad·v (v random) with respect to the same tensors (double backward)."""
    theirs_float = [t for t in leaves(theirs_out) if isinstance(t, torch.Tensor) and t.dtype.is_floating_point]
    ours_float = [t for t in leaves(ours_out) if isinstance(t, autograd.Tensor) and t.dtype.kind == "f"]
    if len(theirs_float) != len(ours_float):
        return [f"{where}: {len(ours_float)} floating outputs, PyTorch {len(theirs_float)}"]
    differentiable = [k for k, b in enumerate(theirs_float) if b.requires_grad]
    if not differentiable:
        return []
    if not all(ours_float[k].requires_grad for k in differentiable):
        return [f"{where}: an output does not require grad, PyTorch's does"]
    theirs_leaves = list({id(t): t for t in theirs_inputs if t.requires_grad}.values())
    theirs_params = dict(theirs.named_parameters())
    ours_params = dict(ours.named_parameters())
    names = [f"input {i}" for i in range(len(theirs_leaves))] + [f"parameter {name}" for name in theirs_params]
    theirs_targets = theirs_leaves + list(theirs_params.values())
    ours_targets = [memo[id(t)] for t in theirs_leaves] + [ours_params[name] for name in theirs_params]
    w = _upstream([theirs_float[k] for k in differentiable], 1)
    theirs_grads = torch.autograd.grad(_weighted_sum([theirs_float[k] for k in differentiable], w, torch),
                                       theirs_targets, allow_unused=True, create_graph=second_order)
    try:
        ours_grads = autograd.grad(_weighted_sum([ours_float[k] for k in differentiable], w, autograd),
                                   ours_targets, allow_unused=True, create_graph=second_order)
    except Exception as error:
        return [f"{where}: backward raised {type(error).__name__}: {str(error)[:200]}"]
    problems = _agree(names, ours_grads, theirs_grads, theirs_targets, f"{where} grad of", tolerance)
    if problems or not second_order:
        return problems
    chosen = [k for k, b in enumerate(theirs_grads) if b is not None and b.requires_grad]
    if not chosen:
        return []
    v = _upstream([theirs_grads[k] for k in chosen], 2)
    try:
        theirs_second = torch.autograd.grad(_weighted_sum([theirs_grads[k] for k in chosen], v, torch),
                                            theirs_targets, allow_unused=True)
    except RuntimeError as error:  # (PyTorch has no double backward for it)
        return [] if "not implemented" in str(error) else [f"{where}: PyTorch's double backward raised {error}"]
    zero = [k for k in chosen if ours_grads[k] is None or not ours_grads[k].requires_grad]
    pairs = [(ours_grads[k], weights) for k, weights in zip(chosen, v) if k not in zero]
    if not pairs:
        ours_second = [None] * len(ours_targets)
    else:
        try:
            ours_second = autograd.grad(_weighted_sum(*zip(*pairs), autograd), ours_targets, allow_unused=True)
        except Exception as error:
            return [f"{where}: double backward raised {type(error).__name__}: {str(error)[:200]}"]
    return _agree(names, ours_second, theirs_second, theirs_targets, f"{where} second derivative, of", tolerance)


def _buffers(theirs, ours, where, tolerance):
    ours_buffers = dict(ours.named_buffers())
    problems = []
    for name, b in theirs.named_buffers():
        a = ours_buffers.get(name)
        if a is None:
            problems.append(f"{where} buffer {name}: missing")
            continue
        problems += compare_outputs(a, b, f"{where} buffer {name}", tolerance)
    return problems


class _first_through:
    """A module called with fn(first argument) in place of its first argument (its parameters and buffers
    are the module's)."""

    def __init__(self, module, fn):
        self.module, self.fn = module, fn
        self.named_parameters, self.named_buffers = module.named_parameters, module.named_buffers

    def __call__(self, first, *args, **kwargs):
        return self.module(self.fn(first), *args, **kwargs)


def _compare_sample(info, sample, dtype, training, where, second_order=False):
    """The list of disagreements for one sample."""
    try:
        theirs, ours, memo = _build(info, sample, dtype, training)
    except Unconvertible:
        return None
    except Exception as error:
        return [f"{where}: construction raised {type(error).__name__}: {str(error)[:200]}"]
    (theirs_args, theirs_kwargs) = _forward_input(sample)
    try:
        ours_args, ours_kwargs = _convert(theirs_args, memo), _convert(theirs_kwargs, memo)
    except Unconvertible:
        return None
    if info.is_lazy:  # (PyTorch's uninitialised parameters have no values to load: a first call shapes them)
        with torch.no_grad(), autograd.no_grad():
            theirs(*theirs_args, **theirs_kwargs)
            ours(*ours_args, **ours_kwargs)
    try:
        _load_state(theirs, ours)
    except Exception as error:
        return [f"{where}: load_state_dict raised {type(error).__name__}: {str(error)[:200]}"]
    if info.name in FIRST_INPUT_THROUGH:
        through = FIRST_INPUT_THROUGH[info.name]
        theirs, ours = _first_through(theirs, through), _first_through(ours, through)
    # (attention by PyTorch's reference "math" kernel: its CPU flash kernel has no double backward)
    with warnings.catch_warnings(), sdpa_kernel([SDPBackend.MATH]):
        warnings.simplefilter("ignore")
        theirs_out = theirs(*theirs_args, **theirs_kwargs)
    try:
        ours_out = ours(*ours_args, **ours_kwargs)
    except Exception as error:
        return [f"{where}: forward raised {type(error).__name__}: {str(error)[:200]}"]
    tolerance = _tolerance  # (one rule for outputs, buffers and gradients)
    problems = compare_outputs(ours_out, theirs_out, where, tolerance)
    problems += _buffers(theirs, ours, where, tolerance)
    # the inputs after the call (an in-place module writes into its input: ReLU(inplace=True))
    problems += compare_outputs([ours_args, ours_kwargs], [theirs_args, theirs_kwargs], f"{where} input after",
                                tolerance)
    if not problems:
        theirs_inputs = [t for t in leaves([theirs_args, theirs_kwargs]) if isinstance(t, torch.Tensor)]
        problems += _gradients(theirs, ours, theirs_out, ours_out, theirs_inputs, memo, where, tolerance,
                               second_order)
    if not problems and training and list(theirs.named_buffers()):
        # a second call: running statistics move on from the first call's (momentum=None: a cumulative average)
        with torch.no_grad(), autograd.no_grad(), warnings.catch_warnings(), sdpa_kernel([SDPBackend.MATH]):
            warnings.simplefilter("ignore")
            theirs_out, ours_out = theirs(*theirs_args, **theirs_kwargs), ours(*ours_args, **ours_kwargs)
        problems += compare_outputs(ours_out, theirs_out, f"{where} second call", tolerance)
        problems += _buffers(theirs, ours, f"{where} second call", tolerance)
    return problems


def _convertible(sample):
    try:
        _convert([sample.constructor_input.args, sample.constructor_input.kwargs, sample.forward_input.args,
                  sample.forward_input.kwargs], {})
    except Unconvertible:
        return False
    return True


def _spread(items, count):
    return items[::-(-len(items) // count)] if items else items


def _samples(info, dtype, training):
    """The samples compared for one dtype and mode (see FLOAT64_SAMPLES)."""
    samples = [sample for sample in info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                                            training=training) if _convertible(sample)]
    if dtype == torch.float64:
        count = FLOAT64_SAMPLES if training else EVAL_SAMPLES
    else:
        count = FLOAT32_SAMPLES
    if not training and not info.train_and_eval_differ:
        count = min(count, SAME_IN_EVAL_SAMPLES)
    return _spread(samples, count)


COMPARED = [info for info in module_db if _ours_class(info) is not None]


def _param(info):
    marks = []
    if info.name in XFAIL:
        marks.append(pytest.mark.xfail(reason=XFAIL[info.name], strict=True))
    return pytest.param(info, id=info.name, marks=marks)


def test_missing_modules_are_the_known_ones():
    missing = {info.name for info in module_db if _ours_class(info) is None}
    assert missing == set(MISSING), missing


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """PyTorch's thread pool on these tiny tensors only fights the other processes for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.filterwarnings("ignore")  # (both libraries warn alike: KLDivLoss's 'mean', nested tensors)
@pytest.mark.parametrize("info", [_param(info) for info in COMPARED])
def test_module_agrees_with_pytorch(info):
    torch.manual_seed(0)  # the samples' values come from PyTorch's generator: the same every run
    problems = []
    for dtype, training in itertools.product(DTYPES, (True, False)):
        samples = _samples(info, dtype, training)
        # (second derivatives in float64 training mode, where PyTorch's ModuleInfo says it has them)
        second_order = dtype == torch.float64 and training and info.supports_gradgrad
        second_order = {id(sample) for sample in _spread(samples, SECOND_ORDER_SAMPLES)} if second_order else ()
        for n, sample in enumerate(samples):
            where = f"{str(dtype)[6:]} {'train' if training else 'eval'} sample {n} ({sample.desc or 'plain'})"
            found = _compare_sample(info, sample, dtype, training, where, id(sample) in second_order)
            problems += found or []
    assert not problems, f"{info.name}: {len(problems)} disagreements\n" + "\n".join(problems[:16])


def _error_cases(info):
    if info.module_error_inputs_func is None:
        return []
    torch.manual_seed(0)
    return list(itertools.islice(info.module_error_inputs_func(info, device="cpu", dtype=torch.float32,
                                                               requires_grad=False, training=True),
                                 MAX_ERROR_INPUTS))


def _raises(error_type, call):
    """None if call() raises error_type (with a message), else what happened instead."""
    try:
        call()
    except error_type as error:
        return None if str(error) else f"{type(error).__name__} without a message"
    except Exception as error:
        return f"{type(error).__name__}: {str(error)[:160]}"
    return "nothing"


def _error_call(cls, case, convert_args):
    """A function that does what the case says fails: construct, or construct then call."""
    sample = case.module_error_input
    args, kwargs = convert_args(list(sample.constructor_input.args)), convert_args(sample.constructor_input.kwargs)
    if case.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
        return lambda: cls(*args, **kwargs)
    forward_args = convert_args(list(sample.forward_input.args))
    forward_kwargs = convert_args(sample.forward_input.kwargs)
    module = cls(*args, **kwargs)
    return lambda: module(*forward_args, **forward_kwargs)


@pytest.mark.parametrize("info", [pytest.param(info, id=info.name) for info in COMPARED
                                  if info.module_error_inputs_func is not None])
def test_module_error_inputs_raise_pytorchs_exception_class(info):
    """At construction or in forward, as the case says; PyTorch is run too and must raise (its own check)."""
    problems = []
    for n, case in enumerate(_error_cases(info)):
        where = f"error input {n} ({case.module_error_input.desc or 'plain'}, {case.error_on.name}): PyTorch " \
                f"{case.error_type.__name__} /{case.error_regex}/"
        theirs = _raises(case.error_type, _error_call(info.module_cls, case, lambda value: value))
        assert theirs is None, f"{where}: PyTorch raised {theirs}"
        memo = {}
        try:
            call = _error_call(_ours_class(info), case, lambda value, memo=memo: _convert(value, memo))
        except Unconvertible:
            continue
        except Exception as error:
            problems.append(f"{where}, chainrule's constructor raised {type(error).__name__}: {error}")
            continue
        ours = _raises(case.error_type, call)
        if ours is not None:
            problems.append(f"{where}, chainrule {ours}")
    assert not problems, f"{info.name}: {len(problems)} disagreements\n" + "\n".join(problems)


INPLACE = [info for info in COMPARED if "inplace" in inspect.signature(info.module_cls.__init__).parameters]


@pytest.mark.parametrize("info", [pytest.param(info, id=info.name) for info in INPLACE])
def test_inplace_modules_agree_with_pytorch(info):
    """PyTorch's test_check_inplace for ours: the module built with inplace=True, called on a non-leaf copy of
    x, writes its result into that copy and returns it; the values and the gradient for x are the
    out-of-place module's, PyTorch's."""
    torch.manual_seed(0)
    problems = []
    for n, sample in enumerate(_spread(_samples(info, torch.float64, True), 3)):
        where = f"sample {n} ({sample.desc or 'plain'})"
        memo = {}
        args, kwargs = sample.constructor_input.args, {**sample.constructor_input.kwargs, "inplace": True}
        theirs, ours = info.module_cls(*args, **kwargs), _ours_class(info)(*_convert(list(args), memo), **kwargs)
        x = sample.forward_input.args[0].detach().clone().requires_grad_()
        ours_x = convert(x, memo)
        theirs_copy, ours_copy = x * 1, ours_x * 1
        theirs_out, ours_out = theirs(theirs_copy), ours(ours_copy)
        if ours_out is not ours_copy:
            problems.append(f"{where}: the output is not the input written in place")
        problems += compare_outputs([ours_out, ours_copy], [theirs_out, theirs_copy], where, _tolerance)
        (w,) = _upstream([theirs_out], 3)
        (theirs_grad,) = torch.autograd.grad(_weighted_sum([theirs_out], [w], torch), x)
        (ours_grad,) = autograd.grad(_weighted_sum([ours_out], [w], autograd), ours_x)
        problems += _agree(["x"], [ours_grad], [theirs_grad], [x], f"{where} grad of", _tolerance)
    assert not problems, f"{info.name}: {len(problems)} disagreements\n" + "\n".join(problems)
