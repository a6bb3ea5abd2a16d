"""PyTorch's names for the nodes of the graph (``y.grad_fn.name()``, and so ``repr(y)``'s ``grad_fn=<...>``): an op
that several PyTorch functions share is named by the function that made it (a reshape is PyTorch's view, an
unsqueeze or a squeeze; a slice, a select or an index; a matmul of matrices is mm), and functions that end in
another op's node carry PyTorch's name for theirs (mse_loss, gelu, layer_norm). Each case runs on chainrule and on
PyTorch against the same literal name."""

import importlib

import numpy as np
import pytest

CASES = {
    # views and their kinds
    "x.view(12)": "ViewBackward0", "x.reshape(4, 3)": "ViewBackward0", "x.flatten()": "ViewBackward0",
    "x.t().reshape(12)": "UnsafeViewBackward0", "x.unsqueeze(0)": "UnsqueezeBackward0",
    "x.unsqueeze(0).squeeze()": "SqueezeBackward0", "x.unsqueeze(0).squeeze(0)": "SqueezeBackward1",
    "x.unsqueeze(0).squeeze((0,))": "SqueezeBackward2", "x.t()": "TBackward0", "x.T": "PermuteBackward0",
    "x.mT": "TransposeBackward0", "x.transpose(0, 1)": "TransposeBackward0", "x.swapaxes(0, 1)": "TransposeBackward0",
    "x.permute(1, 0)": "PermuteBackward0", "x.movedim(0, 1)": "PermuteBackward0",
    "x.expand(2, 3, 4)": "ExpandBackward0",
    # in-place forms: PyTorch numbers their overloads after the out-of-place ones'
    "(x * 1).t_()": "TBackward1", "(x * 1).transpose_(0, 1)": "TransposeBackward1",
    "(x * 1).swapaxes_(0, 1)": "TransposeBackward1", "(x * 1).unsqueeze_(0)": "UnsqueezeBackward1",
    "(x * 1).unsqueeze_(0).squeeze_()": "SqueezeBackward3", "(x * 1).unsqueeze_(0).squeeze_(0)": "SqueezeBackward4",
    "(x * 1).unsqueeze_(0).squeeze_((0,))": "SqueezeBackward5", "(x * 1).zero_()": "ZeroBackward0",
    "(x * 1).fill_(2.0)": "FillBackward2", "(x * 1).fill_(torch.tensor(2.0))": "FillBackward3",
    # indexing
    "x[1:]": "SliceBackward0", "x[:]": "SliceBackward0", "x[:, 1:]": "SliceBackward0", "x[0, 1:]": "SliceBackward0",
    "x[0]": "SelectBackward0", "x[-1]": "SelectBackward0", "x[:, 0]": "SelectBackward0",
    "x[1:, 0]": "SelectBackward0", "x[0, 1]": "SelectBackward0", "x[None]": "UnsqueezeBackward0",
    "x[...]": "AliasBackward0", "x[[0, 1]]": "IndexBackward0", "x[x > 0]": "IndexBackward0",
    "x[:, [0, 1]]": "IndexBackward0", "x.narrow(1, 1, 2)": "SliceBackward0", "x.select(1, 0)": "SelectBackward0",
    "x.unbind()[0]": "UnbindBackward0", "x.split(1)[0]": "SplitBackward0",
    "x.split([1, 2])[1]": "SplitWithSizesBackward0", "x.chunk(3)[0]": "SplitBackward0",
    "x.tensor_split(2)[0]": "SliceBackward0",
    # reductions: PyTorch numbers them by overload
    "x.sum()": "SumBackward0", "x.sum(0)": "SumBackward1", "x.sum(-1, keepdim=True)": "SumBackward1",
    "x.mean()": "MeanBackward0", "x.mean(0)": "MeanBackward1", "x.prod()": "ProdBackward0",
    "x.prod(0)": "ProdBackward1", "x.max()": "MaxBackward1", "x.max(0).values": "MaxBackward0",
    "x.min()": "MinBackward1", "x.min(1).values": "MinBackward0", "x.amax(0)": "AmaxBackward0",
    "x.amin(0)": "AminBackward0", "x.logsumexp(1)": "LogsumexpBackward0", "x.norm()": "LinalgVectorNormBackward0",
    "x.cumsum(0)": "CumsumBackward0", "x.cumprod(0)": "CumprodBackward0",
    # arithmetic
    "x + x": "AddBackward0", "x - 1": "SubBackward0", "1 - x": "RsubBackward1", "x * 2": "MulBackward0",
    "x ** 2": "PowBackward0", "x ** x": "PowBackward1", "2 ** x": "PowBackward2", "x.square()": "PowBackward0",
    "x.double()": "ToCopyBackward0", "x.clamp(0, 1)": "ClampBackward1", "x.clamp_min(0)": "ClampMinBackward0",
    "x.clamp_max(1)": "ClampMaxBackward0", "x.masked_fill(x > 0, 0.0)": "MaskedFillBackward0",
    "torch.stack([x, x])": "StackBackward0", "torch.cat([x, x])": "CatBackward0",
    # products
    "x @ w.T": "MmBackward0", "x @ v": "MvBackward0", "v @ v": "DotBackward0", "v @ x.T": "SqueezeBackward4",
    "x.unsqueeze(0) @ w.T": "UnsafeViewBackward0", "F.linear(x, w, b)": "AddmmBackward0",
    "F.linear(x, w)": "MmBackward0", "F.linear(x.unsqueeze(0), w, b)": "ViewBackward0",
    "F.linear(v, w, b)": "ViewBackward0",
    # nn.functional
    "F.cross_entropy(x, labels)": "NllLossBackward0", "F.mse_loss(x, x.detach() + 1)": "MseLossBackward0",
    "F.gelu(x)": "GeluBackward0", "F.gelu(x, approximate='tanh')": "GeluBackward0", "F.silu(x)": "SiluBackward0",
    "F.mish(x)": "MishBackward0", "F.softplus(x)": "SoftplusBackward0", "F.elu(x)": "EluBackward0",
    "F.selu(x)": "EluBackward0", "F.layer_norm(x, (4,))": "NativeLayerNormBackward0",
    "F.batch_norm(x, None, None, training=True)": "NativeBatchNormBackward0",
    "F.group_norm(x.unsqueeze(-1), 1)": "NativeGroupNormBackward0", "F.embedding(labels, w)": "EmbeddingBackward0",
    "F.conv2d(images, kernels)": "ConvolutionBackward0", "F.max_pool2d(images, 2)": "MaxPool2DWithIndicesBackward0",
    "F.avg_pool2d(images, 2)": "AvgPool2DBackward0", "F.pad(x, (1, 1))": "ConstantPadNdBackward0",
    "x.index_add(0, labels[:2], x[:2])": "IndexAddBackward0",
    "x.clone().copy_(x * 2)": "torch::autograd::CopyBackwards",
    "torch.zeros(3, 4).copy_(v)": "torch::autograd::CopyBackwards",
    # losses, whatever the reduction
    "F.huber_loss(x, x.detach() + 1)": "HuberLossBackward0",
    "F.huber_loss(x, x.detach() + 1, reduction='none')": "HuberLossBackward0",
    "F.smooth_l1_loss(x, x.detach() + 1, reduction='sum')": "SmoothL1LossBackward0",
    "F.binary_cross_entropy(x.sigmoid(), x.detach().sigmoid())": "BinaryCrossEntropyBackward0",
    "F.binary_cross_entropy_with_logits(x, x.detach(), reduction='none')": "BinaryCrossEntropyWithLogitsBackward0",
    "F.mse_loss(x, x.detach(), reduction='sum')": "MseLossBackward0", "F.nll_loss(x, labels)": "NllLossBackward0",
    "F.nll_loss(x, labels, reduction='none')": "NllLossBackward0",
    "F.cross_entropy(x, labels, reduction='none')": "NllLossBackward0",
    "F.l1_loss(x, x.detach() + 1)": "MeanBackward0",
    # more composites
    "x.var()": "VarBackward0", "x.var(0)": "VarBackward0", "x.std()": "StdBackward0",
    "x.sort(1).values": "SortBackward0",
    "x.topk(2).values": "TopkBackward0", "x.tril()": "TrilBackward0", "x.triu(1)": "TriuBackward0",
    "x.repeat(2, 1)": "RepeatBackward0", "x.roll(1)": "RollBackward0", "x.roll(1, 0)": "RollBackward0",
}


@pytest.mark.parametrize("expression", list(CASES))
def test_node_names_are_pytorchs(T, expression):
    F = importlib.import_module("torch.nn.functional" if T.__name__ == "torch" else "nn.functional")
    rng = np.random.default_rng(0)
    x = T.tensor(rng.standard_normal((3, 4)).astype(np.float32) + 2, requires_grad=True).clone()  # (not a leaf)
    w = T.tensor(rng.standard_normal((5, 4)).astype(np.float32), requires_grad=True)
    v = T.tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    b = T.zeros(5, requires_grad=True)
    labels = T.tensor([0, 1, 2])
    images = T.tensor(rng.standard_normal((1, 2, 4, 4)).astype(np.float32), requires_grad=True)
    kernels = T.tensor(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), requires_grad=True)
    y = eval(expression, {"torch": T, "F": F, "x": x, "w": w, "v": v, "b": b, "labels": labels, "images": images,
                          "kernels": kernels})
    assert y.grad_fn.name() == CASES[expression]
    assert f"grad_fn=<{CASES[expression].rpartition('::')[2]}>" in repr(y)


def test_a_view_op_that_changes_nothing_still_makes_its_own_node(T):
    x = T.ones(3, requires_grad=True).clone()
    names = [y.grad_fn.name() for y in (x.squeeze(0), x.squeeze(), x.reshape(3), x.view(3), x.expand(3),
                                        x.expand_as(x), x.clamp_min(-1.0) * 1)]
    assert names == ["SqueezeBackward1", "SqueezeBackward0", "ViewBackward0", "ViewBackward0", "ExpandBackward0",
                     "ExpandBackward0", "MulBackward0"]
    assert x.grad_fn.name() == "CloneBackward0"  # (x's own node is never renamed)


def test_the_graph_drawing_keeps_the_ops_own_names():
    import autograd

    x = autograd.ones(2, 3, requires_grad=True)
    y = x.unsqueeze(0)
    assert y.grad_fn.name() == "UnsqueezeBackward0" and y.grad_fn.op_name == "Reshape"
    assert x.t().grad_fn.op_name == "Permute" and x[0].grad_fn.op_name == "GetItem"


MORE = {  # (on an image batch x2, a volume x3, a sequence x1 and a matrix s)
    "F.conv1d(x1, torch.ones(3, 2, 2))": "ConvolutionBackward0", "F.conv3d(x3, torch.ones(3, 2, 2, 2, 2))":
    "ConvolutionBackward0", "F.conv_transpose2d(x2, torch.ones(2, 3, 2, 2))": "ConvolutionBackward0",
    "torch.bmm(s.unsqueeze(0), s.t().unsqueeze(0))": "BmmBackward0", "torch.addmm(s, s, torch.ones(4, 4))":
    "AddmmBackward0", "torch.baddbmm(torch.ones(1, 3, 3), s.unsqueeze(0), s.t().unsqueeze(0))": "BaddbmmBackward0",
    "F.max_pool3d(x3, 2)": "MaxPool3DWithIndicesBackward0", "F.avg_pool3d(x3, 2)": "AvgPool3DBackward0",
    "F.interpolate(x1, scale_factor=2)": "UpsampleNearest1DBackward0",
    "F.interpolate(x2, scale_factor=2)": "UpsampleNearest2DBackward0",
    "F.interpolate(x2, scale_factor=2, mode='bilinear')": "UpsampleBilinear2DBackward0",
    "F.interpolate(x2, scale_factor=2, mode='bicubic')": "UpsampleBicubic2DBackward0",
    "F.interpolate(x3, scale_factor=2, mode='trilinear')": "UpsampleTrilinear3DBackward0",
    "F.interpolate(x2, scale_factor=0.5, mode='bilinear', antialias=True)": "UpsampleBilinear2DAaBackward0",
    "F.pad(x2, (1, 1, 1, 1), mode='reflect')": "ReflectionPad2DBackward0",
    "F.pad(x1, (1, 1), mode='replicate')": "ReplicationPad1DBackward0", "F.adaptive_avg_pool2d(x2, 1)": "MeanBackward1",
    "F.adaptive_avg_pool2d(x2, 2)": "AdaptiveAvgPool2DBackward0", "F.adaptive_max_pool2d(x2, 2)":
    "AdaptiveMaxPool2DBackward0", "F.logsigmoid(s)": "LogSigmoidBackward0", "F.glu(s)": "GluBackward0",
    "torch.addcmul(s, s, s)": "AddcmulBackward0", "s.trace()": "TraceBackward0", "s.masked_select(s > 0.5)":
    "MaskedSelectBackward0", "F.pixel_shuffle(x2.repeat(1, 2, 1, 1), 2)": "PixelShuffleBackward0",
    "F.unfold(x2, 2)": "Im2ColBackward0", "F.fold(F.unfold(x2, 2), (5, 5), 2)": "Col2ImBackward0",
    "torch.cdist(s, s)": "CdistBackward0", "F.pdist(s)": "PdistBackward0", "F.celu(s)": "CeluBackward0",
    "F.embedding_bag(torch.tensor([0, 1, 2]), s, torch.tensor([0, 2]))": "EmbeddingBagBackward0",
    "F.prelu(s, torch.tensor([0.25]))": "PreluKernelBackward0", "torch.fmax(s, s * 2)": "FmaxBackward0",
    "s.log1p()": "Log1PBackward0", "s.rot90()": "Rot90Backward0", "s.take(torch.tensor([0, 5]))": "TakeBackward0",
    "s.index_put((torch.tensor([0]),), torch.tensor(1.0))": "IndexPutBackward0",
    "s.index_copy(0, torch.tensor([0]), s[:1] * 2)": "IndexCopyBackward0",
    "s.masked_scatter(s > 0.5, torch.zeros(12))": "MaskedScatterBackward0", "s.cummax(0).values": "CummaxBackward0",
    "s.logcumsumexp(0)": "LogcumsumexpBackward0", "s.kthvalue(2, 1).values": "KthvalueBackward0",
    "s.median()": "MedianBackward0", "s.median(1).values": "MedianBackward1", "s.nanmedian()": "NanmedianBackward0",
    "torch.aminmax(s).min": "AminmaxBackward0", "torch.dist(s, s * 2)": "DistBackward0",
    "s.renorm(2, 0, 1.0)": "RenormBackward0", "torch.vdot(s[0], s[1])": "VdotBackward0",
    "torch.linalg.cross(s[:, :3], s[:, 1:])": "LinalgCrossBackward0", "torch.sinc(s)": "SincBackward0",
    "s.digamma()": "DigammaBackward0",
}


@pytest.mark.parametrize("expression", list(MORE))
def test_more_node_names_are_pytorchs(T, expression):
    F = importlib.import_module("torch.nn.functional" if T.__name__ == "torch" else "nn.functional")
    rng = np.random.default_rng(1)

    def leaf(*shape):
        return T.tensor(rng.uniform(0.1, 1.0, shape).astype(np.float32), requires_grad=True)

    scope = {"torch": T, "F": F, "x1": leaf(1, 2, 5), "x2": leaf(1, 2, 5, 5), "x3": leaf(1, 2, 4, 4, 4),
             "s": leaf(3, 4)}
    y = eval(expression, scope)
    assert y.grad_fn.name() == MORE[expression]
