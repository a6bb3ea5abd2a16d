"""``autograd.autograd.profiler``: PyTorch's older spelling, ``torch.autograd.profiler``, of the
profiler in ``autograd.profiler`` (the same events, tables and traces)."""

from ..profiler import EventList, FunctionEvent, FunctionEventAvg, record_function  # noqa: F401
from ..profiler import profile as _profile


class profile(_profile):
    """``torch.autograd.profiler.profile(enabled=True, record_shapes=False, ...)``: records while its
    block runs (``enabled=False``: nothing); ``print(prof)`` prints every event."""

    def __init__(self, enabled=True, *, use_cuda=False, use_device=None, record_shapes=False, with_flops=False,
                 profile_memory=False, with_stack=False, with_modules=False, use_kineto=False, use_cpu=True,
                 experimental_config=None, acc_events=False, custom_trace_id_callback=None,
                 post_processing_timeout_s=None, activity_filters=None):
        super().__init__(record_shapes=record_shapes, profile_memory=profile_memory, with_stack=with_stack,
                         with_flops=with_flops, with_modules=with_modules)
        self.enabled = enabled

    def start(self):
        if self.enabled:
            super().start()

    @property
    def function_events(self):
        return self.events()

    @property
    def self_cpu_time_total(self):
        return sum(event.self_cpu_time_total for event in self.events())

    def table(self, sort_by=None, row_limit=100, header=None, top_level_events_only=False):
        return self.events().table(sort_by=sort_by, row_limit=row_limit, header=header,
                                   top_level_events_only=top_level_events_only)

    def __str__(self):
        return self.table()


class emit_nvtx:  # noqa: N801  (PyTorch's name)
    """``torch.autograd.profiler.emit_nvtx(enabled=True, record_shapes=False)``: NVTX ranges for NVIDIA's profilers.
    Disabled (as the tuning guide leaves it), a block that does nothing; enabled, refused: there is no CUDA build
    here to emit them, as PyTorch's CPU build refuses."""

    def __init__(self, enabled=True, record_shapes=False):
        self.enabled = enabled

    def __enter__(self):
        if self.enabled:
            raise RuntimeError("Can't use NVTX profiler - chainrule has no CUDA build to emit NVTX ranges")
        return self

    def __exit__(self, *exc_info):
        return False
