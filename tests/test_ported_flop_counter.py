"""PyTorch's test_flop_counter.py and test_module_tracker.py, ported: FlopCounterMode's counts (forward,
backward, by module, custom formulas, the table) and ModuleTracker's parents and is_bw. Each case runs on the
library and, where installed, on torch, and is checked against the counts worked out by hand."""

import contextlib
import importlib
from copy import copy

import pytest

LIBRARIES = ("autograd", "torch")


class Lib:
    """The library or torch, with its nn, functional, flop_counter and module_tracker."""

    def __init__(self, name):
        if name == "torch":
            pytest.importorskip("torch")
        self.torch = importlib.import_module(name)
        self.nn = importlib.import_module("torch.nn" if name == "torch" else "nn")
        self.F = importlib.import_module("torch.nn.functional" if name == "torch" else "nn.functional")
        self.flop_counter = importlib.import_module(f"{name}.utils.flop_counter")
        self.module_tracker = importlib.import_module(f"{name}.utils.module_tracker")
        self.checkpoint = importlib.import_module(f"{name}.utils.checkpoint").checkpoint

    def counter(self, **kwargs):
        return self.flop_counter.FlopCounterMode(display=False, **kwargs)

    def T(self, *shape, requires_grad=False):  # noqa: N802  (PyTorch's test's name)
        return self.torch.randn(*shape, requires_grad=requires_grad)


@pytest.fixture(params=LIBRARIES)
def lib(request):
    return Lib(request.param)


def by_name(counts):
    """get_flop_counts() with the operators by name (aten.mm), comparable across the two libraries."""
    return {module: {str(op): n for op, n in ops.items()} for module, ops in counts.items()}


def mm(m, k, n, batch=1):
    return 2 * batch * m * k * n


def conv(n, c_out, c_in, kernel, positions):
    """2 · N · C_out · C_in/groups · prod(kernel) · prod(positions)."""
    total = 2 * n * c_out * c_in
    for size in (*kernel, *positions):
        total *= size
    return total


def test_flop_counter_variety(lib):
    torch = lib.torch
    mod = lib.nn.Linear(9, 10)
    with lib.counter() as mode:
        torch.mm(lib.T(4, 5), lib.T(5, 6))
        torch.addmm(lib.T(4, 6), lib.T(4, 5), lib.T(5, 6), beta=0.5, alpha=0.5)
        torch.matmul(lib.T(5, 6), lib.T(6, 7))
        torch.einsum("ab,bc->ac", lib.T(6, 7), lib.T(7, 8))
        mod(lib.T(8, 9))
    assert mode.get_total_flops() == mm(4, 5, 6) * 2 + mm(5, 6, 7) + mm(6, 7, 8) + mm(8, 9, 10) == 3012


def test_op(lib):
    torch, T = lib.torch, lib.T
    mode = lib.counter()
    with mode:
        torch.mm(T(4, 5), T(5, 6))
    assert mode.get_total_flops() == 240
    with mode:  # (each entry starts from zero)
        torch.bmm(T(3, 4, 5), T(3, 5, 6))
    assert mode.get_total_flops() == 720
    with mode:
        torch.addmm(T(4, 6), T(4, 5), T(5, 6))
        torch.addmm(T(4, 1), T(4, 5), T(5, 6))
        torch.addmm(T(6), T(4, 5), T(5, 6))
    assert mode.get_total_flops() == 3 * 240
    with mode:
        torch.baddbmm(T(3, 4, 6), T(3, 4, 5), T(3, 5, 6))
    assert mode.get_total_flops() == 720
    with mode:
        torch.conv2d(T(2, 3, 6, 6), T(6, 3, 4, 4), padding=1)
    assert mode.get_total_flops() == conv(2, 6, 3, (4, 4), (5, 5)) == 28800
    with mode:
        torch.conv1d(T(2, 3, 6), T(6, 3, 4), padding=1)
    assert mode.get_total_flops() == conv(2, 6, 3, (4,), (5,)) == 1440


def test_backward(lib):
    torch, T = lib.torch, lib.T
    with lib.counter() as mode:
        a = T(4, 5, requires_grad=True)
        a = torch.mm(a, T(5, 6))
        a = a.unsqueeze(0).expand(7, 4, 6)
        a = torch.bmm(a, T(7, 6, 7))
        a.sum().backward()
    # each product once forward, once backward (only the first factors need gradients)
    assert mode.get_total_flops() == 2 * (mm(4, 5, 6) + mm(4, 6, 7, batch=7)) == 5184
    assert by_name(mode.get_flop_counts()) == {"Global": {"aten.mm": 480, "aten.bmm": 4704}}


def test_autograd_op(lib):
    torch = lib.torch

    class _CustomOp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):  # noqa: A002
            return torch.mm(input, input)

        @staticmethod
        def backward(ctx, grad_output):
            return torch.mm(grad_output, grad_output) + torch.mm(grad_output, grad_output)

    a = lib.T(5, 5, requires_grad=True)
    with lib.counter() as mode:
        _CustomOp.apply(a).sum().backward()
    assert mode.get_total_flops() == 3 * mm(5, 5, 5) == 750


def test_custom_mapping(lib):
    mode = lib.counter(custom_mapping={lib.torch.ops.aten.add: lambda *args, out_shape: 5})
    with mode:
        a = lib.T(4, 5)
        a + a
    assert mode.get_total_flops() == 5


def test_noop(lib):
    with lib.counter() as mode:
        lib.T(4, 5).cos()
    assert mode.get_total_flops() == 0
    assert mode.get_flop_counts() == {"Global": {}}  # (get_total_flops reads "Global" into the counts)


def test_register_flop_formula_refuses_a_second_one(lib):
    with pytest.raises(RuntimeError, match="duplicate registrations"):
        lib.flop_counter.register_flop_formula(lib.torch.ops.aten.mm)(lambda *args, **kwargs: 0)
    with pytest.raises(ValueError, match="OpOverloadPacket"):
        lib.flop_counter.register_flop_formula("mm")(lambda *args, **kwargs: 0)


def test_formulas_by_hand(lib):
    fc = lib.flop_counter
    assert fc.mm_flop((3, 4), (4, 5)) == 120
    assert fc.bmm_flop((2, 3, 4), (2, 4, 5)) == 240
    assert fc.addmm_flop((5,), (3, 4), (4, 5)) == 120
    assert fc.conv_flop_count([2, 3, 5, 5], [4, 3, 3, 3], [2, 4, 3, 3]) == conv(2, 4, 3, (3, 3), (3, 3))
    # transposed: the input's positions
    assert fc.conv_flop_count([2, 3, 5, 5], [3, 4, 3, 3], [2, 4, 7, 7], transposed=True) == conv(2, 3, 4, (3, 3),
                                                                                                   (5, 5))
    assert fc.sdpa_flop_count((2, 3, 4, 5), (2, 3, 6, 5), (2, 3, 6, 7)) == mm(4, 5, 6, 6) + mm(4, 6, 7, 6)
    assert fc.sdpa_backward_flop_count((2, 3, 4, 7), (2, 3, 4, 5), (2, 3, 6, 5), (2, 3, 6, 7)) == (
        mm(4, 5, 6, 6) + mm(4, 7, 6, 6) + mm(6, 4, 7, 6) + mm(4, 6, 5, 6) + mm(5, 4, 6, 6))


def _model(nn):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, groups=2))
            self.head = nn.Linear(6 * 4 * 4, 5)

        def forward(self, x):
            return self.head(self.features(x).flatten(1))

    return Net()


def test_module_counts(lib):
    """test_module's resnet18, made small: convolutions (one grouped), a linear head, forward and backward."""
    lib.torch.manual_seed(0)
    model = _model(lib.nn)
    with lib.counter() as mode:
        model(lib.T(2, 3, 6, 6, requires_grad=True)).sum().backward()
    conv1, conv2 = conv(2, 4, 3, (3, 3), (6, 6)), conv(2, 6, 2, (3, 3), (4, 4))
    # backward: dL/dx and dL/dw of each (PyTorch counts a grouped one's dL/dw as if ungrouped: 2x here)
    conv1_back, conv2_back = 2 * conv1, conv2 + 2 * conv2
    head = mm(2, 96, 5)
    counts = by_name(mode.get_flop_counts())
    assert counts["Net.features.0"] == {"aten.convolution": conv1, "aten.convolution_backward": conv1_back}
    assert counts["Net.features.2"] == {"aten.convolution": conv2, "aten.convolution_backward": conv2_back}
    assert counts["Net.head"] == {"aten.addmm": head, "aten.mm": 2 * head}
    assert counts["Net.features"] == {"aten.convolution": conv1 + conv2,
                                      "aten.convolution_backward": conv1_back + conv2_back}
    assert counts["Global"] == counts["Net"]
    assert mode.get_total_flops() == conv1 + conv2 + conv1_back + conv2_back + 3 * head
    assert set(counts) == {"Global", "Net", "Net.features", "Net.features.0", "Net.features.2", "Net.head"}
    assert lib.torch.ops.aten.convolution in mode.get_flop_counts()["Net.features.0"]


def test_transposed_and_volume_convolutions(lib):
    nn = lib.nn
    up, volume = nn.ConvTranspose2d(3, 4, 3, stride=2), nn.Conv3d(2, 3, 3)
    with lib.counter() as mode:
        up(lib.T(2, 3, 5, 5, requires_grad=True)).sum().backward()
    transposed = conv(2, 3, 4, (3, 3), (5, 5))  # (the input's positions)
    assert by_name(mode.get_flop_counts())["ConvTranspose2d"] == {
        "aten.convolution": transposed, "aten.convolution_backward": 2 * transposed}
    with lib.counter() as mode:
        volume(lib.T(1, 2, 5, 5, 5, requires_grad=True)).sum().backward()
    cube = conv(1, 3, 2, (3, 3, 3), (3, 3, 3))
    assert by_name(mode.get_flop_counts())["Conv3d"] == {"aten.convolution": cube,
                                                         "aten.convolution_backward": 2 * cube}


def test_matmul_folds_a_batch_by_a_matrix(lib):
    torch = lib.torch
    with lib.counter() as mode:
        (lib.T(2, 3, 4, requires_grad=True) @ lib.T(4, 5)).sum().backward()
        torch.matmul(lib.T(2, 2, 3, 4), lib.T(2, 1, 4, 5))
        lib.T(4) @ lib.T(4, 5)
    assert by_name(mode.get_flop_counts()) == {"Global": {"aten.mm": 2 * mm(6, 4, 5) + mm(1, 4, 5),
                                                          "aten.bmm": mm(3, 4, 5, batch=4)}}


def test_linear_of_a_batch_of_sequences(lib):
    """A 3-d input is flattened into addmm; the backward's two products are mm, as PyTorch's."""
    layer = lib.nn.Linear(4, 5)
    with lib.counter() as mode:
        layer(lib.T(2, 3, 4)).sum().backward()
    assert by_name(mode.get_flop_counts())["Linear"] == {"aten.addmm": mm(6, 4, 5), "aten.mm": mm(6, 4, 5)}


def test_sdpa_counts_as_the_math_backend(lib):
    """Forward: QKᵀ and the weights by V; backward: two products for each (the math backend's, which PyTorch's
    CPU reaches with sdpa_kernel(MATH); its fused CPU kernel counts nothing)."""
    torch, F = lib.torch, lib.F
    q, k, v = (lib.T(2, 3, 4, 5, requires_grad=True), lib.T(2, 3, 6, 5, requires_grad=True),
               lib.T(2, 3, 6, 7, requires_grad=True))
    forward = lib.flop_counter.sdpa_flop_count(q.shape, k.shape, v.shape)
    def math_backend():
        if torch.__name__ == "torch":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            return sdpa_kernel(SDPBackend.MATH)
        return contextlib.nullcontext()

    with math_backend(), lib.counter() as mode:
        F.scaled_dot_product_attention(q, k, v)
    assert mode.get_total_flops() == forward == mm(4, 5, 6, 6) + mm(4, 6, 7, 6)
    with math_backend(), lib.counter() as mode:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    assert mode.get_total_flops() == 3 * forward


def test_table(lib):
    """get_table as PyTorch's prints it through tabulate 0.10 (cells stripped of their indentation, FLOPs in the
    total's unit, a number column shown as numbers), down to ``depth`` levels, "Global" only where no module
    holds all the FLOPs."""
    if lib.torch.__name__ == "torch":
        pytest.importorskip("tabulate")
    nn = lib.nn
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Sequential(nn.Linear(5, 2)))
    with lib.counter() as mode:
        model(lib.T(3, 4)).sum().backward()
    assert mode.get_table(depth=1) == "\n".join([
        "Module          FLOP    % Total",
        "------------  ------  ---------",
        "Sequential       420    100.00%",
        "- aten.addmm     180     42.86%",
        "- aten.mm        240     57.14%"])
    assert mode.get_table().splitlines()[5:] == [
        "Sequential.0     240     57.14%",
        "- aten.addmm     120     28.57%",
        "- aten.mm        120     28.57%",
        "Sequential.2     180     42.86%",
        "- aten.addmm      60     14.29%",
        "- aten.mm        120     28.57%"]
    with lib.counter() as mode:
        lib.torch.mm(lib.T(40, 50), lib.T(50, 600))
        nn.Linear(3, 3)(lib.T(2, 3))
    assert mode.get_table() == "\n".join([
        "Module             FLOP    % Total",
        "------------  ---------  ---------",
        "Global        2400.036K    100.00%",
        "- aten.mm     2400.000K    100.00%",
        "- aten.addmm     0.036K      0.00%",
        "Linear           0.036K      0.00%",
        "- aten.addmm     0.036K      0.00%"])
    with lib.counter() as mode:
        pass
    assert mode.get_table() == "Module      FLOP    % Total\n--------  ------  ---------\nGlobal         0         0%"


def test_bw_detection(lib):
    mod = lib.nn.Linear(2, 2)
    with lib.module_tracker.ModuleTracker() as tracker:
        mod(lib.torch.rand(2, requires_grad=True)).sum().backward()
        assert not tracker.is_bw
        assert tracker.parents == {"Global"}


def test_module_hierarchy(lib):
    torch, nn = lib.torch, lib.nn
    seen_fw, seen_bw = [], []

    class Foo(nn.Module):
        def forward(self, x):
            x = x["a"].relu_()
            seen_fw.append((copy(tracker.parents), tracker.is_bw))
            x.register_hook(lambda grad: seen_bw.append((copy(tracker.parents), tracker.is_bw)))
            return {"a": torch.mm(x, x)}

    class Mod(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = Foo()
            self.b = nn.ModuleDict({"nest": Foo()})
            self.c = nn.ModuleList([Foo()])

        def forward(self, x):
            return self.b["nest"](self.a(self.c[0](x)))

    mod = Mod()
    with lib.module_tracker.ModuleTracker() as tracker:
        for _ in range(2):
            mod({"a": torch.randn(10, 10, requires_grad=True).clone()})["a"].sum().backward()
    order = ["Mod.c.0", "Mod.a", "Mod.b.nest"]
    assert seen_fw == [({"Global", "Mod", name}, False) for name in order] * 2
    assert seen_bw == [({"Global", "Mod", name}, True) for name in reversed(order)] * 2


def test_confused_hierarchy(lib):
    torch, nn = lib.torch, lib.nn

    class MyMod(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(2, 2)
            self.ran = False

        def forward(self, inp):
            if not self.ran:
                self.ran = True
                return self(inp)
            self.ran = False
            return self.inner(inp)

    mod = MyMod()
    inp = torch.rand(1, 2, requires_grad=True)
    with lib.module_tracker.ModuleTracker() as tracker:  # (it only logs its confusion)
        mod(inp).sum().backward()
    assert tracker.parents == {"Global"}
    with lib.module_tracker.ModuleTracker():
        lib.checkpoint(lambda inp: mod(inp), inp, use_reentrant=False).sum().backward()
    assert inp.grad.shape == (1, 2)


def test_observers_see_forward_and_backward_ops_and_leave_apply_as_it_was():
    import autograd
    from autograd.op_observers import is_observing, observing
    from autograd.primitive import Primitive

    plain, replaced = Primitive.__dict__["apply"], Primitive.apply_replaced
    calls = []
    x, w = autograd.ones(2, 3, requires_grad=True), autograd.ones(3, 4)
    with observing(calls.append):
        assert is_observing()
        (x @ w).sum().backward()
    assert Primitive.__dict__["apply"] is plain and Primitive.apply_replaced == replaced and not is_observing()
    products = [(c.shapes, c.in_backward) for c in calls if c.op.__name__ == "MatMul"]
    # forward x @ w; backward dL/dx = dL/dy @ wᵀ (w used transposed: its own shape)
    assert products == [([(2, 3), (3, 4)], False), ([(2, 4), (3, 4)], True)]
    assert x.grad.tolist() == [[4.0] * 3] * 2


def test_counts_only_its_own_threads_ops(lib):
    import threading

    with lib.counter() as mode:
        worker = threading.Thread(target=lambda: lib.torch.mm(lib.T(4, 5), lib.T(5, 6)))
        worker.start()
        worker.join()
        lib.torch.mm(lib.T(2, 5), lib.T(5, 6))
    assert mode.get_total_flops() == mm(2, 5, 6)


def test_addmm_and_baddbmm_are_counted_under_their_names():
    lib = Lib("autograd")
    with lib.counter() as mode:
        lib.torch.addmm(lib.T(4, 6), lib.T(4, 5), lib.T(5, 6))
        lib.torch.baddbmm(lib.T(3, 4, 6), lib.T(3, 4, 5), lib.T(3, 5, 6))
    assert by_name(mode.get_flop_counts()) == {"Global": {"aten.addmm": 240, "aten.baddbmm": 720}}


def test_matrix_vector_products_count_nothing():
    lib = Lib("autograd")
    with lib.counter() as mode:
        lib.T(3, 4) @ lib.T(4)
        lib.T(4) @ lib.T(4)
    assert mode.get_total_flops() == 0


def test_matrix_by_batch_backward_is_mm():
    lib = Lib("autograd")
    with lib.counter() as mode:
        (lib.T(3, 4, requires_grad=True) @ lib.T(2, 4, 5)).sum().backward()
    assert by_name(mode.get_flop_counts()) == {"Global": {"aten.mm": 2 * mm(6, 4, 5)}}


def test_recurrent_layers_are_counted():
    lib = Lib("autograd")
    with lib.counter() as mode:
        lib.nn.GRU(4, 3, batch_first=True)(lib.T(2, 5, 4))[0].sum().backward()
    assert mode.get_total_flops() > 0
