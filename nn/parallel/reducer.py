"""Gradient averaging for DistributedDataParallel, overlapped with the backward pass.

Parameters are grouped into buckets of about ``bucket_cap_mb`` (the first of 1 MiB), in reverse order of
``module.parameters()`` (roughly the order backward produces their gradients). A
hook after each parameter's ``.grad`` is accumulated marks it ready; when a whole
bucket is ready its gradients are copied into one flat buffer and a non-blocking
all-reduce starts, while backward goes on computing earlier layers. Buckets are
launched in index order on every rank (MPI needs the same collective order
everywhere). The last ready parameter waits for all buckets and writes

    grad = (1/N) · Σ_ranks grad_rank

back into every ``.grad`` before backward returns.
"""

import time

import numpy

import autograd
import autograd.distributed as dist
from autograd import Tensor, no_grad

FIRST_BUCKET_BYTES = 1024 * 1024  # torch.distributed's _DEFAULT_FIRST_BUCKET_BYTES
UNFINISHED = (
    "Expected to have finished reduction in the prior iteration before starting a new one. This error "
    "indicates that your module has parameters that were not used in producing loss. You can enable unused "
    "parameter detection by passing the keyword argument `find_unused_parameters=True` to "
    "`nn.parallel.DistributedDataParallel`, and by making sure all `forward` function outputs participate "
    "in calculating loss. (Or backward was not called after a forward with gradients enabled.) "
    "Parameters which did not receive grad: {names}"
)


class Bucket:
    def __init__(self, index, params, dtype):
        self.index, self.params, self.dtype = index, params, dtype
        self.offsets, total = [], 0
        for p in params:
            self.offsets.append(total)
            total += p._data.size
        self.buffer = numpy.zeros(total, dtype=dtype)
        self.pending = len(params)
        self.work = None


class Reducer:
    def __init__(self, named_params, bucket_cap_bytes, find_unused_parameters=False):
        self.named = [(name, p) for name, p in named_params if p.requires_grad]
        self.find_unused = find_unused_parameters
        self.buckets = self._make_buckets([p for _, p in reversed(self.named)], bucket_cap_bytes)
        self.bucket_of = {id(p): bucket for bucket in self.buckets for p in bucket.params}
        self.armed = False  # a forward with gradient sync was run; its backward will reduce
        self.ready = set()
        self.unused = []  # parameters the forward's graph does not reach, still to mark ready
        self.locally_unused, self.had_no_grad = set(), set()
        self.next_launch = 0
        self.handles = [p.register_post_accumulate_grad_hook(self._on_grad_ready) for _, p in self.named]
        # seconds the last backward spent here, for benchmarks: copying and launching buckets, polling
        # MPI, and at the end waiting for the all-reduces and writing the averages back
        self.seconds = {"launch": 0.0, "poll": 0.0, "wait": 0.0}

    @staticmethod
    def _make_buckets(params, cap):
        """PyTorch's assignment: a bucket closes once it holds ``cap`` bytes or more, but the first
        closes at 1 MiB, so that the first all-reduce starts early in backward; one dtype per bucket."""
        buckets, current, size = [], [], 0

        def close():
            buckets.append(Bucket(len(buckets), current, current[0]._data.dtype))

        for p in params:
            if current and p._data.dtype != current[0]._data.dtype:
                close()
                current, size = [], 0
            current.append(p)
            size += p._data.nbytes
            if size >= (min(cap, FIRST_BUCKET_BYTES) if not buckets else cap):
                close()
                current, size = [], 0
        if current:
            close()
        return buckets

    def prepare_for_backward(self, outputs):
        """Called by each forward that will be followed by a synchronised backward."""
        if self.armed and self.ready:
            missing = [name for name, p in self.named if id(p) not in self.ready]
            raise RuntimeError(UNFINISHED.format(names=", ".join(missing)))
        self.ready, self.next_launch = set(), 0
        self.seconds = dict.fromkeys(self.seconds, 0.0)
        for bucket in self.buckets:
            bucket.pending, bucket.work = len(bucket.params), None
        self.unused = self._unreachable(outputs) if self.find_unused else []
        self.locally_unused = {id(p) for p in self.unused}
        self.had_no_grad = set()
        self.armed = bool(self.named)

    def _unreachable(self, outputs):
        """The parameters the graph behind ``outputs`` does not reach (their gradient is zero here)."""
        seen, stack = set(), [t.grad_fn for t in _tensors(outputs) if t.grad_fn is not None]
        reached = {id(t) for t in _tensors(outputs) if t.grad_fn is None}
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            for parent in node.parents:
                if parent is None:
                    continue
                if isinstance(parent, Tensor):
                    reached.add(id(parent))
                else:
                    stack.append(parent)
        return [p for _, p in self.named if id(p) not in reached]

    def _on_grad_ready(self, param):
        if not self.armed or id(param) in self.ready:
            return
        if self.unused:  # the first gradient of this backward: the unused ones count as ready (zero) now
            unused, self.unused = self.unused, []
            for p in unused:
                self._mark(p)
        self._mark(param)
        if len(self.ready) == len(self.named):
            self._finish()
        else:
            self._progress()

    def _mark(self, param):
        self.ready.add(id(param))
        bucket = self.bucket_of[id(param)]
        bucket.pending -= 1
        while self.next_launch < len(self.buckets) and self.buckets[self.next_launch].pending == 0:
            self._launch(self.buckets[self.next_launch])
            self.next_launch += 1

    def _launch(self, bucket):
        started = time.perf_counter()
        for p, offset in zip(bucket.params, bucket.offsets):
            part = bucket.buffer[offset:offset + p._data.size]
            if p.grad is None:
                part[...] = 0
                self.had_no_grad.add(id(p))
            else:
                part[...] = p.grad._data.reshape(-1)
        bucket.work = dist.all_reduce(Tensor._make(bucket.buffer), async_op=True)
        self.seconds["launch"] += time.perf_counter() - started

    def _progress(self):
        """Let MPI move the launched all-reduces along (MPICH progresses inside MPI calls)."""
        started = time.perf_counter()
        for bucket in self.buckets[:self.next_launch]:
            bucket.work.is_completed()
        self.seconds["poll"] += time.perf_counter() - started

    def _globally_unused(self):
        """Parameters no rank used in this iteration (find_unused_parameters only): their .grad is
        left as it was, None included, as PyTorch's; one small all-reduce of usage flags."""
        if not self.find_unused:
            return set()
        used = numpy.array([0 if id(p) in self.locally_unused else 1 for _, p in self.named], dtype=numpy.int32)
        dist.all_reduce(Tensor._make(used), op=dist.ReduceOp.MAX)
        return {id(p) for (_, p), flag in zip(self.named, used) if not flag}

    def _finish(self):
        started = time.perf_counter()
        self.armed = False
        scale = 1.0 / dist.get_world_size()
        with autograd.no_grad():
            for bucket in self.buckets:
                bucket.work.wait()
            unused = self._globally_unused()
            for bucket in self.buckets:
                bucket.buffer *= scale
                for p, offset in zip(bucket.params, bucket.offsets):
                    if id(p) in unused and id(p) in self.had_no_grad:
                        continue
                    averaged = bucket.buffer[offset:offset + p._data.size].reshape(p.shape)
                    if p.grad is None or p.grad.requires_grad:
                        p.grad = Tensor._make(averaged.copy())
                    else:
                        with no_grad():
                            p.grad.copy_(Tensor._make(averaged))
        self.seconds["wait"] = time.perf_counter() - started

    def remove_hooks(self):
        for handle in self.handles:
            handle.remove()


def _tensors(value):
    """Every Tensor inside a forward's output (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
