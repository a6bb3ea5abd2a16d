"""What the files of session 13's integer-semantics probe (tests/test_programs_probe13_intsem_*.py, one kind of
program each) share: ``typed`` (a tensor beside its dtype's name, so that run_both compares dtypes too) and
``outcome`` (a step's result, or its error's class and the gist of its message).

The programs (see tests/pytorch_programs.py) run on chainrule and on PyTorch, comparing values *and dtypes* and,
where a step raises, the error's class and the gist of its message; checked by hand where PyTorch is not installed."""

def typed(t):
    """A tensor as (its dtype's name, its values): run_both then compares dtypes, not only values."""
    return (str(t.dtype).rsplit(".", 1)[-1], t)


_GISTS = ("can't be cast to the desired output type", "without overflow", "Integers to negative integer powers",
          "not implemented for", "could not infer output dtype", "ZeroDivisionError", "must be", "expected",
          "only integer tensors", "not supported", "Subtraction, the `-` operator, with a bool tensor",
          "Negation, the `-` operator, on a bool tensor", "is not supported for")


def outcome(thunk):
    """What a step gives: its typed result, or ('error', class, gist) for the error it raises. The class is
    RuntimeError for any RuntimeError (PyTorch's NotImplementedError is one; chainrule's DtypeError and ShapeError
    are too), else its own name; the gist is the first known phrase the message holds."""
    try:
        result = thunk()
    except Exception as error:  # noqa: BLE001  (every error is compared with PyTorch's)
        kind = "RuntimeError" if isinstance(error, RuntimeError) else type(error).__name__
        gist = next((g for g in _GISTS if g.lower() in str(error).lower()), "other")
        return ("error", kind, gist)
    if hasattr(result, "dtype") and hasattr(result, "shape"):
        return typed(result)
    return result
