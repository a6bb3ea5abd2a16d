"""``opcheck``: the checks PyTorch runs on a custom operator (its schema's writes, its autograd, its fake function, a
backward through its formula)."""


from ..graph import is_grad_enabled, no_grad
from ..tensor import Tensor
from .operators import _op, _tensors_in

# -- checking an operator -------------------------------------------------------------------------------------


def opcheck(op, args, kwargs=None, *, test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                                  "test_aot_dispatch_dynamic"),
            raise_exception=True, rtol=None, atol=None):
    """Checks of a custom operator on ``args``: that it writes only the arguments its schema says (test_schema),
    that an input requiring grad makes its outputs part of the graph (test_autograd_registration),
    that its fake function gives the real output's shapes and dtypes (test_faketensor), and that it runs
    forward and backward as a compiler would trace it (test_aot_dispatch_dynamic: nothing compiles here, so this
    is the fake function's check and a backward through the registered formula). Returns {test: "SUCCESS" or the
    error}; raises the first failure with ``raise_exception``."""
    op = _op(op)
    kwargs = kwargs or {}
    tests = [test_utils] if isinstance(test_utils, str) else list(test_utils)
    results = {}
    for test in tests:
        check = {"test_schema": _check_schema, "test_autograd_registration": _check_autograd,
                 "test_faketensor": _check_fake, "test_aot_dispatch_dynamic": _check_traced}.get(test)
        if check is None:
            raise ValueError(f"opcheck: test_utils has {test!r}, which is not run here (test_schema, "
                             "test_autograd_registration, test_faketensor, test_aot_dispatch_dynamic are)")
        try:
            check(op, args, kwargs)
            results[test] = "SUCCESS"
        except Exception as error:  # noqa: BLE001  (each failure is the test's result)
            if raise_exception:
                raise OpCheckError(f"opcheck(op, ...): {test} failed with {error}") from error
            results[test] = error
    return results


class OpCheckError(Exception):
    pass


def _cloned(values):
    return [v.detach().clone() if isinstance(v, Tensor) else
            [x.detach().clone() if isinstance(x, Tensor) else x for x in v] if isinstance(v, list) else v
            for v in values]


def _check_schema(op, args, kwargs):
    arguments = op._bound(tuple(_cloned(args)), dict(zip(kwargs, _cloned(kwargs.values()))))
    before = {name: v.detach().clone() for name, v in arguments.items() if isinstance(v, Tensor)}
    op._run(arguments)
    declared = set(before) if op._mutates_args == "unknown" else set(op._mutates_args)
    for name, old in before.items():
        changed = not bool((arguments[name] == old).all()) if old.numel() else False
        if changed and name not in declared:
            raise RuntimeError(f"Argument {name} is not defined as mutable but was mutated")


def _check_autograd(op, args, kwargs):
    """An input that requires grad makes the output a node of the graph (whose backward raises PyTorch's error
    if no formula was registered): no output silently leaves the graph."""
    arguments = op._bound(args, kwargs)
    if is_grad_enabled() and any(x.requires_grad for x in _tensors_in(arguments.values())):
        output = op(**arguments)
        for y in _tensors_in(output if isinstance(output, (tuple, list)) else [output]):
            if y.dtype.kind in "fc" and y.grad_fn is None:
                raise RuntimeError(f"{op._qualname}: an input requires grad but an output is not in the graph")


def _check_traced(op, args, kwargs):
    """What tracing the operator for compilation needs: its fake function, and (where an input requires grad) a
    backward through its formula, given ones for each floating output."""
    _check_fake(op, args, kwargs)
    arguments = op._bound(args, kwargs)
    if not (is_grad_enabled() and any(x.requires_grad for x in _tensors_in(arguments.values()))):
        return
    output = op(**arguments)
    outputs = [y for y in _tensors_in(output if isinstance(output, (tuple, list)) else [output]) if y.requires_grad]
    if outputs:
        from ..autograd import grad
        from ..factories import ones_like

        inputs = [x for x in _tensors_in(arguments.values()) if x.requires_grad]
        grad(outputs, inputs, [ones_like(y) for y in outputs], allow_unused=True)


def _check_fake(op, args, kwargs):
    if op._fake_fn is None and op._schema.endswith("-> ()") and "!)" in op._schema:
        return  # (an operator that only writes its arguments has an obvious fake function, which PyTorch makes)
    if op._fake_fn is None:
        raise RuntimeError(f"There was no fake impl registered for {op!r}. This is necessary for torch.compile/"
                           f"export/fx tracing to work. Please use `{op._init_fn.__name__}.register_fake` to add an "
                           "fake impl.")
    arguments = op._bound(args, kwargs)
    with no_grad():
        fake = op._called(op._fake_fn, arguments)
        real = op._run(arguments)
    fakes = list(_tensors_in(fake if isinstance(fake, (tuple, list)) else [fake]))
    reals = list(_tensors_in(real if isinstance(real, (tuple, list)) else [real]))
    if len(fakes) != len(reals):
        raise RuntimeError(f"{op._qualname}: the fake function gives {len(fakes)} tensors, the operator {len(reals)}")
    for i, (f, r) in enumerate(zip(fakes, reals)):
        if tuple(f.shape) != tuple(r.shape) or f.dtype != r.dtype:
            raise RuntimeError(f"When comparing the output of {op._namespace}.{op._name}.default on FakeTensor and "
                               f"concrete Tensors, found mismatched tensor metadata: output {i} of the fake function "
                               f"has shape {tuple(f.shape)} and dtype {f.dtype}, the operator's {tuple(r.shape)} and "
                               f"{r.dtype}")
