"""What the real-program tests share: the modules a program is written against (ours, and
PyTorch's where installed), and running one program on both and comparing the results."""

import contextlib
import functools
from types import SimpleNamespace

import numpy as np

import autograd
import autograd.utils.data
import nn
import nn.functional
import optim

OURS = SimpleNamespace(torch=autograd, nn=nn, F=nn.functional, optim=optim, data=autograd.utils.data)


def pytorch():
    """The same modules from PyTorch, or None where it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    import torch.utils.data

    torch.set_num_threads(1)  # tiny programs: threads only contend on a shared machine
    return SimpleNamespace(torch=torch, nn=torch.nn, F=torch.nn.functional, optim=torch.optim,
                           data=torch.utils.data)


@contextlib.contextmanager
def one_blas_thread():
    """NumPy's BLAS on one thread for the block, where threadpoolctl is installed (PyTorch's side runs on one
    already): a training run that amplifies rounding compares with PyTorch's only while its matrix products add
    in one order. OpenBLAS's two-thread products split their sums otherwise: 0.3% apart after a few steps of
    RAFT's and DenseNet's training on a 2-core Haswell machine, within 2e-4 on one thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def plain(value):
    """A program's result as NumPy / Python values (tensors of either library become arrays)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple (values, indices)
        return type(value)(*(plain(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        return value.detach().numpy().copy()
    return value


def assert_same(ours, theirs, rtol, atol, where="result"):
    if isinstance(ours, dict):
        assert set(ours) == set(theirs), where
        for k in ours:
            assert_same(ours[k], theirs[k], rtol, atol, f"{where}[{k!r}]")
    elif isinstance(ours, (list, tuple)):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, rtol, atol, f"{where}[{i}]")
    elif isinstance(ours, (str, bool, type(None))):
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"
    else:
        a, b = np.asarray(ours), np.asarray(theirs)
        assert a.shape == b.shape, f"{where}: shapes {a.shape} != {b.shape}"
        wide = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64  # both parts compared
        np.testing.assert_allclose(a.astype(wide), b.astype(wide), rtol=rtol, atol=atol, err_msg=where)


@functools.cache
def same_dropout_masks():
    """Whether PyTorch's Bernoulli masks of a number p (dropout's, ``bernoulli_(p)``'s) equal chainrule's under one
    seed on this machine, measured once: PyTorch has drawn them through MKL's generator on some Intel processors,
    which chainrule does not reproduce, and with its own kernel elsewhere (this project's AVX-512 Xeon of
    2026-11-29 among them, with PyTorch 2.13). False without PyTorch (nothing to compare with)."""
    modules = pytorch()
    if modules is None:
        return False
    torch, saved = modules.torch, (modules.torch.get_rng_state(), autograd.get_rng_state())
    try:
        masks = []
        for m in (modules, OURS):
            m.torch.manual_seed(0)
            masks.append(np.concatenate([m.F.dropout(m.torch.ones(1000), 0.3).numpy(),
                                         m.torch.empty(1000).bernoulli_(0.4).numpy(),
                                         m.nn.Dropout2d(0.5)(m.torch.ones(2, 50, 2, 2)).numpy().ravel()]))
        return bool((masks[0] == masks[1]).all())
    finally:
        torch.set_rng_state(saved[0])
        autograd.set_rng_state(saved[1])


@contextlib.contextmanager
def pytorch_own_float16_kernels(torch):
    """PyTorch's float16 convolutions through its own kernels for the block. Where the processor computes float16
    natively (AVX512-FP16: Intel's Sapphire Rapids and later), PyTorch sends them to oneDNN instead, whose float16
    kernels round otherwise (the weight gradient's sum, say, in one piece, not sample by sample); its own kernels
    are what it runs on every other x86 processor, and what chainrule reproduces to the bit."""
    if not torch.ops.mkldnn._is_mkldnn_fp16_supported():
        yield
        return
    with torch.backends.mkldnn.flags(enabled=False):
        yield


def error_of(f):
    """(the error's class name, its message) of calling f, or None: what the programs compare between libraries."""
    try:
        f()
    except Exception as e:  # noqa: BLE001  (the error itself is what is compared)
        return type(e).__name__, str(e)
    return None


def run_both(program, *args, compare=True, rtol=1e-5, atol=1e-6, own_float16_kernels=False, **kwargs):
    """Run ``program(modules, *args, **kwargs)`` on chainrule and (where installed) PyTorch; where
    ``compare`` the two results must agree. Returns chainrule's result, and PyTorch's (or None).
    ``own_float16_kernels``: PyTorch runs its own float16 kernels (see ``pytorch_own_float16_kernels``)."""
    ours = plain(program(OURS, *args, **kwargs))
    theirs = None
    torch_modules = pytorch()
    if torch_modules is not None:
        with pytorch_own_float16_kernels(torch_modules.torch) if own_float16_kernels else contextlib.nullcontext():
            theirs = plain(program(torch_modules, *args, **kwargs))
        if compare:
            assert_same(ours, theirs, rtol, atol)
    return ours, theirs


def weights_of(make_model, seed=0):
    """Freshly initialised weights of a model (chainrule's, seeded), as arrays to load into either library."""
    autograd.manual_seed(seed)
    return {k: v.numpy().copy() for k, v in make_model(OURS).state_dict().items()}


def load(m, model, weights):
    model.load_state_dict({k: m.torch.tensor(v) for k, v in weights.items()})
    return model


def quickstart_data(n=256, side=8, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((classes, side, side)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    images = prototypes[labels] + 0.5 * rng.standard_normal((n, side, side)).astype(np.float32)
    return images[:, None], labels


# names for the makemore-style programs (a stand-in for names.txt: nothing downloads)
WORDS = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia", "harper", "evelyn",
         "abigail", "emily", "elizabeth", "mila", "ella", "avery", "sofia", "camila", "aria", "scarlett",
         "victoria", "madison", "luna", "grace", "chloe", "penelope", "layla", "riley", "zoey", "nora",
         "lily", "eleanor", "hannah", "lillian", "addison", "aubrey", "ellie", "stella", "natalie", "zoe",
         "leah", "hazel", "violet", "aurora", "savannah", "audrey", "brooklyn", "bella", "claire", "skylar",
         "jade", "quinn", "willow", "ximena"]
