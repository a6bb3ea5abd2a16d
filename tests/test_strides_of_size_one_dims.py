"""``stride()`` of a dim of size 1, as PyTorch reports it: the view ops carry it (``t()`` of a (1, 4) tensor steps
(1, 4), a slice keeps its base's steps), a dim added by indexing with None steps over the dim after it, as
PyTorch's unsqueeze (NumPy's step there is 0), and an empty tensor reports row-major steps.

Each case asserts PyTorch's strides, and runs on PyTorch too where it is installed.
"""

import pytest

CASES = {  # what to do to which tensor, and the strides PyTorch 2.13 reports
    "transpose of a size-1 dim": (lambda T: T.ones(3, 1, 4).transpose(0, 1), (4, 4, 1)),
    "t of a row": (lambda T: T.ones(1, 4).t(), (1, 4)),
    "permute of a column": (lambda T: T.ones(4, 1).permute(1, 0), (1, 1)),
    "t of a sliced column": (lambda T: T.ones(2, 3)[:, 0:1].t(), (1, 3)),
    "a row of a transpose": (lambda T: T.ones(2, 3).t()[0:1], (1, 3)),
    "a column of a transpose": (lambda T: T.ones(2, 3).t()[:, 0:1], (1, 3)),
    "permute of a narrowed dim": (lambda T: T.ones(2, 3, 4)[:, 1:2, :].permute(2, 0, 1), (1, 12, 4)),
    "transpose of a narrowed dim": (lambda T: T.ones(2, 3, 4).narrow(1, 1, 1).transpose(0, 1), (4, 12, 1)),
    "as_strided's own steps": (lambda T: T.ones(6).as_strided((1, 3), (7, 2)), (7, 2)),
    "contiguous of a contiguous transpose": (lambda T: T.ones(3, 1, 4).transpose(0, 1).contiguous(), (4, 4, 1)),
    "mT": (lambda T: T.ones(2, 2, 1).mT, (2, 1, 1)),
    "movedim": (lambda T: T.ones(2, 1, 3).movedim(1, 2), (3, 1, 3)),
    "None in front": (lambda T: T.ones(2, 3)[None], (6, 3, 1)),
    "None inside": (lambda T: T.ones(2, 3)[:, None], (3, 3, 1)),
    "None at the end of a strided slice": (lambda T: T.ones(4, 6)[:, ::2][..., None], (6, 2, 1)),
    "None before a transpose": (lambda T: T.ones(2, 3).t()[None], (3, 1, 3)),
    "unsqueeze": (lambda T: T.ones(2, 3).unsqueeze(1), (3, 3, 1)),
    "a keepdim sum": (lambda T: T.ones(2, 3).sum(0, keepdim=True), (3, 1)),
    "a fresh column": (lambda T: T.ones(2, 1) * 2, (1, 1)),
    "an expanded row": (lambda T: T.ones(1, 5).expand(2, 5), (0, 1)),
    "empty": (lambda T: T.empty(0, 3), (3, 1)),
    "empty with a zero inside": (lambda T: T.empty(5, 0, 3), (3, 3, 1)),
}


@pytest.mark.parametrize("make, strides", CASES.values(), ids=CASES.keys())
def test_strides_as_pytorch_reports_them(T, make, strides):
    x = make(T)
    assert x.stride() == strides
    assert tuple(x.stride(d) for d in range(x.dim())) == strides


def test_as_strided_with_the_reported_strides_gives_the_same_tensor(T):
    base = T.arange(24.0).reshape(2, 3, 4)
    for view in (base[:, 1:2, :].permute(2, 0, 1), base.narrow(1, 1, 1).transpose(0, 1), base[:, None, ::2]):
        again = base.as_strided(view.shape, view.stride(), view.storage_offset())
        assert again.tolist() == view.tolist()
