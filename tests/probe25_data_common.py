"""What the files of session 25's data-pipeline probe (tests/test_programs_probe25_data_*.py: samplers and collation,
workers and composed datasets) share: ``batches`` (a loader's batches in a list), ``error_of`` (what a call raises,
as 'Class: message') and ``pytorch_words`` (PyTorch's words of an error's message)."""


def batches(loader):
    return [b for b in loader]


def error_of(f):
    try:
        f()
    except Exception as e:  # noqa: BLE001  (the error itself is what the program reports)
        return f"{type(e).__name__}: {e}"
    return "no error"


def pytorch_words(message):
    """An error's message less the details chainrule adds after PyTorch's words (the lengths that disagree)."""
    return message.split(" (lengths")[0].split(": lengths")[0]
