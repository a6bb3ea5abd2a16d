"""Fixes found by the time-series programs (tests/test_programs_probe14_timeseries.py), each checked on
chainrule and, where installed, on PyTorch (the ``T`` fixture)."""


def test_as_strided_view_reports_its_storage_offset_and_storage(T):
    """x[2:].as_strided(...) without an offset starts at x[2:]'s own offset, and the view shares x's storage
    (its storage_offset was 0 and its data_ptr its own storage's, as if it were a copy)."""
    values = T.arange(20.0).view(10, 2)
    shifted = values[2:]
    windows = shifted.as_strided((2, 4, 2), (4, 2, 1))
    assert windows.storage_offset() == 4
    assert windows.untyped_storage().data_ptr() == values.untyped_storage().data_ptr()
    assert windows[1, 0].tolist() == [8.0, 9.0]
    explicit = values.as_strided((2, 2), (1, 2), 3)
    assert explicit.storage_offset() == 3
    assert explicit.tolist() == [[3.0, 5.0], [4.0, 6.0]]
    explicit[0, 0] = -1.0  # a view: the write shows in values
    assert values[1, 1].item() == -1.0
