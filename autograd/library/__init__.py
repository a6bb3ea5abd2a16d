"""Custom operators, as ``torch.library``: a Python function made an operator of the library's namespace.

    @autograd.library.custom_op("mylib::numpy_sin", mutates_args=())
    def numpy_sin(x: Tensor) -> Tensor:
        return autograd.from_numpy(np.sin(x.numpy()))

    numpy_sin.register_autograd(backward, setup_context=setup_context)

The function runs as one opaque step: its own operations are not recorded (it may leave the library, as
through NumPy above), so its derivative comes from ``register_autograd``: ``setup_context(ctx, inputs,
output)`` keeps what backward needs and ``backward(ctx, *grads)`` gives dL/dinput for each input, as an
``autograd.Function`` does (it is one underneath). Without it, a backward through the operator raises
PyTorch's error instead of silently giving no gradient. Only the positional arguments are differentiated (a
keyword-only one reaches ``setup_context(ctx, inputs, keyword_only_inputs, output)``), and a list of tensors is
differentiated tensor by tensor. The function's type annotations are its schema (``(Tensor x) -> Tensor``),
each call's arguments checked against it; an output may not be, or share memory with, an input.

The operator is also ``autograd.ops.mylib.numpy_sin`` (PyTorch's ``torch.ops.mylib.numpy_sin``), and
``autograd.ops.aten.<name>`` reaches the library's own functions by their ATen names. ``register_fake``
keeps a function giving an output's shape and dtype (``opcheck`` compares it with the real output), and
``register_kernel`` replaces the function on a device. ``register_vmap``'s rule is kept and unused:
``autograd.func.vmap`` calls the operator once per example (what PyTorch does without a rule), which a correct
rule agrees with. What compilation would use (``register_autocast``, ``register_torch_dispatch``) is kept and
unused too: nothing here compiles.

The older API defines an operator by its schema text and registers kernels per dispatch key:
``Library("mylib", "DEF").define("f(Tensor x) -> Tensor")``, then ``lib.impl("f", kernel, "CPU")`` (or
``torch.library.define`` / ``torch.library.impl``).
"""

from .checks import OpCheckError, opcheck
from .defined import Library, define, fallthrough_kernel, impl
from .namespaces import op_namespace
from .operators import (
                        CustomOpDef,
                        OpOverload,
                        OpOverloadPacket,
                        custom_op,
                        get_ctx,
                        impl_abstract,
                        register_autocast,
                        register_autograd,
                        register_fake,
                        register_kernel,
                        register_torch_dispatch,
                        register_vmap,
)
from .schema import infer_schema

__all__ = ["CustomOpDef", "Library", "custom_op", "define", "fallthrough_kernel", "get_ctx", "impl", "impl_abstract",
           "infer_schema", "opcheck", "register_autocast",
           "register_autograd", "register_fake", "register_kernel", "register_torch_dispatch", "register_vmap"]

