"""``DistributedDataParallel``: the same model on every rank, each rank a share of the batch.

    model = nn.parallel.DistributedDataParallel(model)    # rank 0's weights everywhere
    loss = criterion(model(inputs), targets)               # this rank's share of the batch
    loss.backward()                                        # grads averaged over the ranks
    optimizer.step()                                       # identical step on every rank

With the loss a mean over each rank's equal share, the averaged gradient is the
gradient of the mean loss over the whole batch, so N ranks take the steps one
process would take on the whole batch (float rounding aside). The averaging is
bucketed and overlapped with backward (see ``reducer``).
"""

import contextlib

import autograd
import autograd.distributed as dist

from ..module import Module
from .reducer import Reducer


class DistributedDataParallel(Module):
    """torch.nn.parallel.DistributedDataParallel's arguments; CPU only (device_ids must be None).

    broadcast_buffers:      copy rank 0's buffers (BatchNorm's running stats) to every rank at
                            each forward.
    bucket_cap_mb:          size of the gradient buckets all-reduced together (MiB).
    find_unused_parameters: walk the forward's graph to find parameters that get no gradient and
                            count them as zero, so that backward still completes the averaging.
    """

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True,
                 process_group=None, bucket_cap_mb=None, find_unused_parameters=False, check_reduction=False,
                 gradient_as_bucket_view=False, static_graph=False, **kwargs):
        super().__init__()
        if device_ids is not None or output_device is not None:
            raise ValueError(f"DistributedDataParallel device_ids and output_device arguments only work with "
                             f"GPU modules; chainrule's modules are on the CPU, so leave them out "
                             f"(got device_ids={device_ids!r}, output_device={output_device!r})")
        if process_group is not None and process_group is not dist.WORLD:
            raise ValueError(f"only the default process group is supported, got process_group={process_group!r}")
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps an nn.Module, got {type(module).__name__}")
        dist.get_world_size()  # raises when init_process_group was not called
        self.module = module
        self.dim, self.broadcast_buffers = dim, broadcast_buffers
        self.find_unused_parameters, self.static_graph = find_unused_parameters, static_graph
        self.bucket_cap_mb = 25 if bucket_cap_mb is None else bucket_cap_mb
        self.require_backward_grad_sync = True
        self.require_forward_param_sync = True
        self.parameters_to_ignore = set(getattr(module, "_ddp_params_and_buffers_to_ignore", ()))
        if not any(p.requires_grad for n, p in module.named_parameters() if n not in self.parameters_to_ignore):
            raise RuntimeError("DistributedDataParallel is not needed when a module doesn't have any parameter that "
                               "requires a gradient.")
        self._sync_module_states()
        self.reducer = Reducer([(n, p) for n, p in module.named_parameters() if n not in self.parameters_to_ignore],
                               int(self.bucket_cap_mb * 1024 * 1024), find_unused_parameters)

    def _sync_module_states(self):
        """Rank 0's parameters and buffers on every rank: all start from the same model."""
        with autograd.no_grad():
            for name, tensor in list(self.module.named_parameters()) + list(self.module.named_buffers()):
                if name not in self.parameters_to_ignore:
                    dist.broadcast(tensor, src=0)

    def _sync_buffers(self):
        for name, buffer in self.module.named_buffers():
            if name not in self.parameters_to_ignore:
                dist.broadcast(buffer, src=0)

    def forward(self, *inputs, **kwargs):
        will_sync_grads = autograd.is_grad_enabled() and self.require_backward_grad_sync
        if self.require_forward_param_sync and self.broadcast_buffers:
            self._sync_buffers()
        output = self.module(*inputs, **kwargs)
        if will_sync_grads:
            self.require_forward_param_sync = True
            self.reducer.prepare_for_backward(output)
        else:
            self.require_forward_param_sync = False
        return output

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate local gradients without averaging; the first
        synchronised backward after it averages the accumulated sum."""
        previous, self.require_backward_grad_sync = self.require_backward_grad_sync, False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    @contextlib.contextmanager
    def join(self, divide_by_initial_world_size=True, enable=True, throw_on_early_termination=False):
        """PyTorch's context for ranks with uneven numbers of batches. With one rank there is no other
        rank's collectives to shadow, and it does nothing; with several it is not supported."""
        if enable and dist.get_world_size() > 1:
            raise NotImplementedError("DistributedDataParallel.join (uneven inputs across ranks) is not supported: "
                                      "give every rank the same number of batches (a DistributedSampler does)")
        yield

    @staticmethod
    def _set_params_and_buffers_to_ignore_for_model(module, params_and_buffers_to_ignore):
        module._ddp_params_and_buffers_to_ignore = list(params_and_buffers_to_ignore)

    def extra_repr(self):
        return ""

