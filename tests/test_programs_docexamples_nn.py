"""The examples in PyTorch's own docstrings (``>>>`` blocks of torch/_torch_docs.py, _tensor_docs.py, functional.py,
nn/functional.py, nn/modules, linalg and special), run on chainrule, as tests/docexamples_common.py says: each a
program over the modules whose result must equal the literal expected in tests/docexamples_expected.py and, where
PyTorch is installed, PyTorch's result. nn: functions, layers (fixed: a non-tensor given to a layer is a TypeError),
losses."""

import pytest

from .docexamples_common import AREAS, check, example, fill

# ----------------------------------------------------------------------------------------------
# nn: functions, layers (fixed: a non-tensor given to a layer is a TypeError), losses
# ----------------------------------------------------------------------------------------------


@example("nn")
def pooling_a_non_tensor_is_a_type_error(m):
    pool = m.nn.MaxPool2d(2, stride=2, return_indices=True)
    try:
        pool(input)  # the nn.MaxUnpool2d example's `input` where its line is missing: the built-in
    except TypeError as error:
        return "must be" in str(error) and "Tensor" in str(error)
    return "no error"


@example("nn")
def max_pool_and_unpool(m):
    torch, nn = m.torch, m.nn
    pool, unpool = nn.MaxPool1d(2, stride=2, return_indices=True), nn.MaxUnpool1d(2, stride=2)
    x = torch.tensor([[[1., 2, 3, 4, 5, 6, 7, 8, 9]]])
    output, indices = pool(x)
    pool2, unpool2 = nn.MaxPool2d(2, stride=2, return_indices=True), nn.MaxUnpool2d(2, stride=2)
    x2 = torch.tensor([[[[1., 2., 3., 4.], [5., 6., 7., 8.], [9., 10., 11., 12.], [13., 14., 15., 16.]]]])
    output2, indices2 = pool2(x2)
    return unpool(output, indices, output_size=x.size()), unpool(output, indices), unpool2(output2, indices2)


@example("nn")
def avg_pool_and_upsampling(m):
    torch, nn, F = m.torch, m.nn, m.F
    x = torch.arange(1, 5, dtype=torch.float32).view(1, 1, 2, 2)
    return (F.avg_pool1d(torch.tensor([[[1, 2, 3, 4, 5, 6, 7]]], dtype=torch.float32), kernel_size=3, stride=2),
            nn.AvgPool1d(3, stride=2)(torch.tensor([[[1., 2, 3, 4, 5, 6, 7]]])),
            nn.UpsamplingBilinear2d(scale_factor=2)(x), nn.UpsamplingNearest2d(scale_factor=2)(x),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)(x))


@example("nn")
def padding_layers(m):
    torch, nn = m.torch, m.nn
    x = torch.arange(9, dtype=torch.float).reshape(1, 1, 3, 3)
    return (nn.CircularPad2d((1, 1, 2, 0))(x), nn.ReflectionPad2d((1, 1, 2, 0))(x),
            nn.ReplicationPad2d((1, 1, 2, 0))(x),
            nn.ReflectionPad1d((3, 1))(torch.arange(8, dtype=torch.float).reshape(1, 2, 4)),
            nn.ZeroPad2d((1, 1, 2, 0))(x), nn.ConstantPad1d((3, 1), 3.5)(torch.arange(4.0).reshape(1, 1, 4)))


@example("nn")
def one_hot_channel_shuffle_threshold(m):
    torch, nn, F = m.torch, m.nn, m.F
    return (F.one_hot(torch.arange(0, 5) % 3, num_classes=5), F.one_hot(torch.arange(0, 6).view(3, 2) % 3),
            nn.ChannelShuffle(2)(torch.arange(1, 17, dtype=torch.float32).view(1, 4, 2, 2)),
            nn.Threshold(0, 0.5)(torch.arange(-3, 3)), nn.Threshold(0.1, 20)(torch.tensor([0.05, 0.5, -1.0])))


@example("nn")
def embeddings(m):
    torch, nn = m.torch, m.nn
    embedding = nn.Embedding.from_pretrained(torch.FloatTensor([[1, 2.3, 3], [4, 5.1, 6.3]]))
    bag = nn.EmbeddingBag.from_pretrained(torch.FloatTensor([[1, 2.3, 3], [4, 5.1, 6.3]]), mode="max")
    padded = nn.Embedding(3, 3, padding_idx=0)
    with torch.no_grad():
        padded.weight[0] = torch.ones(3)
    return (embedding(torch.LongTensor([1])), bag(torch.LongTensor([[0, 1]])), padded.weight[0],
            fill(m, nn.Embedding(10, 3))(torch.LongTensor([[1, 2, 4, 5], [4, 3, 2, 9]])))


@example("nn")
def linear_conv_layers(m):
    torch, nn = m.torch, m.nn
    x = torch.linspace(-1, 1, 2 * 4 * 6).reshape(2, 4, 6)
    return (fill(m, nn.Linear(6, 3))(x), fill(m, nn.Conv1d(4, 2, 3, stride=2))(x),
            fill(m, nn.ConvTranspose1d(4, 2, 3, stride=2, padding=1))(x),
            fill(m, nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)))(x.reshape(1, 2, 4, 6)),
            fill(m, nn.Bilinear(6, 6, 2))(x[0], x[1]))


@example("nn")
def recurrent_layers(m):
    torch, nn = m.torch, m.nn
    x = torch.linspace(-1, 1, 5 * 3 * 4).reshape(5, 3, 4)
    h0, c0 = torch.full((2, 3, 3), 0.1), torch.full((2, 3, 3), -0.2)
    output, (hn, cn) = fill(m, nn.LSTM(4, 3, 2))(x, (h0, c0))
    gru_output, gru_hn = fill(m, nn.GRU(4, 3, 2))(x, h0)
    rnn_output, rnn_hn = fill(m, nn.RNN(4, 3, 2))(x, h0)
    hx = fill(m, nn.GRUCell(4, 3))(x[0], h0[0])
    return output, hn, cn, gru_output, gru_hn, rnn_hn, hx


@example("nn")
def normalization_layers(m):
    torch, nn = m.torch, m.nn
    x = torch.linspace(-2, 3, 4 * 6 * 2).reshape(4, 6, 2)
    bn = fill(m, nn.BatchNorm1d(6))
    out = bn(x)
    return (out, bn.running_mean, bn.running_var, fill(m, nn.LayerNorm([6, 2]))(x), fill(m, nn.GroupNorm(3, 6))(x),
            nn.InstanceNorm1d(6)(x), fill(m, nn.RMSNorm([2]))(x), nn.LocalResponseNorm(2)(x))


@example("nn")
def attention(m):
    torch, nn, F = m.torch, m.nn, m.F
    q = torch.linspace(-1, 1, 2 * 3 * 4).reshape(2, 3, 4)
    k = torch.linspace(1, -0.5, 2 * 5 * 4).reshape(2, 5, 4)
    v = torch.linspace(0, 2, 2 * 5 * 4).reshape(2, 5, 4)
    attn = fill(m, nn.MultiheadAttention(4, 2, batch_first=True))
    attn_output, attn_output_weights = attn(q, k, v)
    return (attn_output, attn_output_weights, F.scaled_dot_product_attention(q, k, v),
            F.scaled_dot_product_attention(q, q, q, is_causal=True))


@example("nn")
def losses(m):
    torch, nn, F = m.torch, m.nn, m.F
    x = torch.tensor([[0.1, 0.2, 0.4, 0.8], [0.9, -0.3, 0.0, 0.5]])
    target = torch.tensor([3, 0])
    return (nn.MultiMarginLoss()(x[:1], torch.tensor([3])),
            nn.MultiLabelMarginLoss()(torch.FloatTensor([[0.1, 0.2, 0.4, 0.8]]), torch.LongTensor([[3, 0, -1, 1]])),
            F.cross_entropy(x, target, label_smoothing=0.1), F.nll_loss(F.log_softmax(x, 1), target, reduction="none"),
            F.kl_div(F.log_softmax(x, 1), F.softmax(x.flip(1), 1), reduction="batchmean"),
            F.poisson_nll_loss(x, x.abs() + 0.5), F.gaussian_nll_loss(x, x.flip(0), torch.full((2, 4), 0.5)),
            F.huber_loss(x, x.flip(1), delta=0.3), F.smooth_l1_loss(x, x.flip(1), beta=0.3),
            F.soft_margin_loss(x, torch.sign(x.flip(1))), F.multilabel_soft_margin_loss(x, (x > 0.3).float()),
            F.triplet_margin_loss(x, x.flip(0), x.flip(1)),
            F.cosine_embedding_loss(x, x.flip(1), torch.tensor([1, -1])))


@example("nn")
def loss_backward(m):
    """The losses' examples call backward: the gradients of their inputs."""
    torch, nn = m.torch, m.nn
    input = torch.tensor([[0.3, -1.2, 0.5], [1.1, 0.4, -0.6]], requires_grad=True)
    target = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 2.0, 0.5]))(input, target).backward()
    first = input.grad.clone()
    input.grad = None
    nn.CrossEntropyLoss()(input, torch.tensor([1, 0])).backward()
    return first, input.grad


@example("nn")
def fold_unfold(m):
    torch, nn = m.torch, m.nn
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    unfold = nn.Unfold(kernel_size=(2, 3))
    fold = nn.Fold(output_size=(4, 4), kernel_size=(2, 3))
    patches = unfold(x)
    return patches.shape, patches[0, :4, :3], fold(patches)[0, 0], nn.PixelShuffle(2)(x[:, :, :2, :2].repeat(1, 4, 1, 1)
                                                                                       )[0, 0]


@pytest.mark.parametrize("name", list(AREAS["nn"]))
def test_nn(name):
    check("nn", name, rtol=1e-4, atol=1e-5)
