# ruff: noqa: B006, B007, B020, B023, E501, E721, E741, UP004, UP008, UP032, UP034, E731, F841  (the programs are kept as the book writes them)
"""d2l.ai (PyTorch edition) programs, written as the book writes them with its helpers inlined, run on
chainrule and on PyTorch (see tests/pytorch_programs.py), comparing losses, gradients and parameters.

Builders' guide (parameter access by ``state_dict``/``named_parameters``, tied layers whose gradients add,
custom init by ``apply`` with ``param.data *= param.data.abs() >= 5``, ``nn.LazyLinear``, ``torch.save``/
``load`` of tensors and a state dict); CNN basics (``corr2d`` by loops learnt by gradient descent,
multi-channel ``corr2d`` by ``torch.stack``, pooling by loops vs ``nn.MaxPool2d``); batch norm from scratch
in a LeNet; an RNN from scratch with one-hot inputs and global-norm ``grad_clipping``; attention (masked
softmax, additive and scaled dot-product scoring, multi-head attention with ``transpose_qkv`` and
``repeat_interleave``, positional encoding, a transformer encoder block) trained with the seq2seq
``MaskedSoftmaxCELoss``; the optimisation chapter's momentum, AdaGrad, RMSProp, AdaDelta and Adam by hand
against optim's; and its schedulers (factor, ``MultiStepLR``, cosine with warmup). Then GRU and LSTM from
scratch against ``nn.GRU``/``nn.LSTM`` (deep, bidirectional), NiN/Inception/Residual/DenseNet blocks, the
autodiff chapter (``backward(gradient=)``, ``detach``, control flow), dropout and weight decay from scratch,
a GRU seq2seq (``_flat_weights_names`` init, ``swapaxes``) with and without a Bahdanau decoder, BERT's MaskLM
gather, word2vec's masked BCE, textCNN, FCN's bilinear ``ConvTranspose2d``, anchor assignment, the
preliminaries' tensor idioms, nested blocks (``add_module``, FixedHiddenMLP, ResNeXt groups, ViT patches),
and d2l's Module/DataModule/Trainer in small form where every number comes from the seed (``torch.randn``
data, a shuffled loader, lazy inits, dropout masks, ``Multinomial`` draws of the probability chapter); the
transformer decoder with 2-D causal valid_lens and its cache; and the GAN chapter (a 2-D Gaussian GAN, a DCGAN)."""

import io
import math

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# builders' guide
# ----------------------------------------------------------------------------------------------


def builders_guide(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    X = torch.rand(size=(2, 4))
    net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(1))
    net(X)  # the dummy forward that sizes the lazy layers
    shapes = [(name, tuple(param.shape)) for name, param in net.named_parameters()]
    sd_keys = list(net[2].state_dict().keys())

    def init_normal(module):
        if type(module) == nn.Linear:
            nn.init.normal_(module.weight, mean=0, std=0.01)
            nn.init.zeros_(module.bias)

    def my_init(module):
        if type(module) == nn.Linear:
            nn.init.uniform_(module.weight, -10, 10)
            module.weight.data *= module.weight.data.abs() >= 5

    net.apply(init_normal)
    w0 = net[0].weight.data.clone()
    net.apply(my_init)
    w1 = net[0].weight.data.clone()
    net[0].weight.data[:] += 1
    net[0].weight.data[0, 0] = 42

    # tied parameters: the same layer twice, its gradient the sum of both uses
    shared = nn.Linear(8, 8)
    tied = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(), nn.LazyLinear(1))
    tied(X)
    tied[2].weight.data[0, 0] = 100
    same = bool(tied[2].weight.data[0, 0] == tied[4].weight.data[0, 0])
    tied(X).sum().backward()
    shared_grad = tied[2].weight.grad.clone()

    class CenteredLayer(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, X):
            return X - X.mean()

    class MyLinear(nn.Module):
        def __init__(self, in_units, units):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(in_units, units))
            self.bias = nn.Parameter(torch.randn(units,))

        def forward(self, X):
            linear = torch.matmul(X, self.weight.data) + self.bias.data
            return F_relu(linear)

    F_relu = m.F.relu
    centered = CenteredLayer()(torch.tensor([1.0, 2, 3, 4, 5]))
    custom = nn.Sequential(MyLinear(4, 8), MyLinear(8, 1))(X)

    # file I/O
    buf = io.BytesIO()
    x, y = torch.arange(4), torch.zeros(4)
    torch.save([x, y], buf)
    buf.seek(0)
    x2, y2 = torch.load(buf)
    buf = io.BytesIO()
    torch.save({'x': x, 'y': y}, buf)
    buf.seek(0)
    mydict2 = torch.load(buf)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    clone = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(1))
    clone.load_state_dict(torch.load(buf))
    Y_clone = clone(X)
    return dict(shapes=str(shapes), sd_keys=str(sd_keys), w0=w0, w1=w1, w=net[0].weight.data, same=same,
                shared_grad=shared_grad, centered=centered, custom=custom, x2=x2, y2=y2, dx=mydict2['x'],
                match=bool((Y_clone == net(X)).all()))


def test_builders_guide():
    ours, theirs = run_both(builders_guide)
    assert ours["same"] and ours["match"]
    assert ours["shapes"] == "[('0.weight', (8, 4)), ('0.bias', (8,)), ('2.weight', (1, 8)), ('2.bias', (1,))]"
    w1 = ours["w1"]
    assert np.all((w1 == 0) | (np.abs(w1) >= 5))


# ----------------------------------------------------------------------------------------------
# CNN basics: corr2d by loops, learnt kernel, multi-channel, pooling
# ----------------------------------------------------------------------------------------------


def cnn_basics(m):
    torch, nn = m.torch, m.nn

    def corr2d(X, K):
        h, w = K.shape
        Y = torch.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
        for i in range(Y.shape[0]):
            for j in range(Y.shape[1]):
                Y[i, j] = (X[i:i + h, j:j + w] * K).sum()
        return Y

    class Conv2D(nn.Module):
        def __init__(self, kernel_size):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(kernel_size) * 0.3)
            self.bias = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return corr2d(x, self.weight) + self.bias

    X = torch.ones((6, 8))
    X[:, 2:6] = 0
    K = torch.tensor([[1.0, -1.0]])
    Y = corr2d(X, K)
    # learning the kernel with the scratch layer (gradients through item assignment)
    layer = Conv2D(kernel_size=(1, 2))
    losses = []
    for i in range(6):
        Y_hat = layer(X)
        l = (Y_hat - Y) ** 2
        layer.zero_grad()
        l.sum().backward()
        with torch.no_grad():
            layer.weight -= 5e-3 * layer.weight.grad
            layer.bias -= 5e-3 * layer.bias.grad
        losses.append(l.sum().item())
    # and with nn.Conv2d as the book does
    conv2d = nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False)
    with torch.no_grad():
        conv2d.weight.fill_(0.5)
    Xc, Yc = X.reshape((1, 1, 6, 8)), Y.reshape((1, 1, 6, 7))
    for i in range(10):
        Y_hat = conv2d(Xc)
        l = (Y_hat - Yc) ** 2
        conv2d.zero_grad()
        l.sum().backward()
        conv2d.weight.data[:] -= 3e-2 * conv2d.weight.grad

    def corr2d_multi_in(X, K):
        return sum(corr2d(x, k) for x, k in zip(X, K))

    def corr2d_multi_in_out(X, K):
        return torch.stack([corr2d_multi_in(X, k) for k in K], 0)

    def corr2d_multi_in_out_1x1(X, K):
        c_i, h, w = X.shape
        c_o = K.shape[0]
        X = X.reshape((c_i, h * w))
        K = K.reshape((c_o, c_i))
        Y = torch.matmul(K, X)
        return Y.reshape((c_o, h, w))

    Xm = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
                       [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]])
    Km = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])
    Km = torch.stack((Km, Km + 1, Km + 2), 0)
    multi = corr2d_multi_in_out(Xm, Km)
    torch.manual_seed(0)
    X1 = torch.normal(0, 1, (3, 3, 3))
    K1 = torch.normal(0, 1, (2, 3, 1, 1))
    one_by_one = (corr2d_multi_in_out_1x1(X1, K1) - corr2d_multi_in_out(X1, K1)).abs().max()

    def pool2d(X, pool_size, mode='max'):
        p_h, p_w = pool_size
        Y = torch.zeros((X.shape[0] - p_h + 1, X.shape[1] - p_w + 1))
        for i in range(Y.shape[0]):
            for j in range(Y.shape[1]):
                if mode == 'max':
                    Y[i, j] = X[i: i + p_h, j: j + p_w].max()
                elif mode == 'avg':
                    Y[i, j] = X[i: i + p_h, j: j + p_w].mean()
        return Y

    Xp = torch.arange(16, dtype=torch.float32).reshape((1, 1, 4, 4))
    pools = [pool2d(Xm[0], (2, 2)), pool2d(Xm[0], (2, 2), 'avg'), nn.MaxPool2d(3)(Xp),
             nn.MaxPool2d(3, padding=1, stride=2)(Xp), nn.MaxPool2d((2, 3), stride=(2, 3), padding=(0, 1))(Xp)]
    Xp2 = torch.cat((Xp, Xp + 1), 1)
    pools.append(nn.MaxPool2d(3, padding=1, stride=2)(Xp2))
    return dict(Y=Y, losses=losses, weight=layer.weight, bias=layer.bias, conv=conv2d.weight.data, multi=multi,
                one_by_one=one_by_one, pools=pools)


def test_cnn_basics():
    ours, _ = run_both(cnn_basics)
    assert ours["losses"][-1] < ours["losses"][0]
    assert ours["one_by_one"] < 1e-5
    np.testing.assert_allclose(ours["multi"][0], [[56, 72], [104, 120]])


# ----------------------------------------------------------------------------------------------
# batch norm from scratch in LeNet
# ----------------------------------------------------------------------------------------------


def batch_norm_lenet(m):
    torch, nn, F = m.torch, m.nn, m.F

    def batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum):
        if not torch.is_grad_enabled():
            X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
        else:
            assert len(X.shape) in (2, 4)
            if len(X.shape) == 2:
                mean = X.mean(dim=0)
                var = ((X - mean) ** 2).mean(dim=0)
            else:
                mean = X.mean(dim=(0, 2, 3), keepdim=True)
                var = ((X - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
            X_hat = (X - mean) / torch.sqrt(var + eps)
            moving_mean = (1.0 - momentum) * moving_mean + momentum * mean
            moving_var = (1.0 - momentum) * moving_var + momentum * var
        Y = gamma * X_hat + beta
        return Y, moving_mean.data, moving_var.data

    class BatchNorm(nn.Module):
        def __init__(self, num_features, num_dims):
            super().__init__()
            if num_dims == 2:
                shape = (1, num_features)
            else:
                shape = (1, num_features, 1, 1)
            self.gamma = nn.Parameter(torch.ones(shape))
            self.beta = nn.Parameter(torch.zeros(shape))
            self.moving_mean = torch.zeros(shape)
            self.moving_var = torch.ones(shape)

        def forward(self, X):
            if self.moving_mean.device != X.device:
                self.moving_mean = self.moving_mean.to(X.device)
                self.moving_var = self.moving_var.to(X.device)
            Y, self.moving_mean, self.moving_var = batch_norm(
                X, self.gamma, self.beta, self.moving_mean,
                self.moving_var, eps=1e-5, momentum=0.1)
            return Y

    def lenet(bn):
        if bn == 'scratch':
            return nn.Sequential(
                nn.Conv2d(1, 6, kernel_size=5), BatchNorm(6, num_dims=4), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
                nn.Conv2d(6, 16, kernel_size=5), BatchNorm(16, num_dims=4), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
                nn.Flatten(), nn.Linear(16 * 4 * 4, 120), BatchNorm(120, num_dims=2), nn.Sigmoid(),
                nn.Linear(120, 84), BatchNorm(84, num_dims=2), nn.Sigmoid(), nn.Linear(84, 10))
        return nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5), nn.BatchNorm2d(6), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Flatten(), nn.Linear(16 * 4 * 4, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
            nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(), nn.Linear(84, 10))

    rng = np.random.default_rng(0)
    X = torch.tensor(rng.standard_normal((16, 1, 28, 28)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 10, 16))
    out = {}
    for bn in ('scratch', 'nn'):
        torch.manual_seed(0)
        net = lenet(bn)
        for layer in net:
            if type(layer) in (nn.Linear, nn.Conv2d):
                nn.init.xavier_uniform_(layer.weight)
        opt = m.optim.SGD(net.parameters(), lr=0.5)
        losses = []
        for epoch in range(3):
            l = F.cross_entropy(net(X), y)
            opt.zero_grad()
            l.backward()
            opt.step()
            losses.append(l.item())
        with torch.no_grad():
            eval_out = net.eval()(X) if bn == 'nn' else net(X)
        out[bn] = dict(losses=losses, eval=eval_out, w=net[0].weight.data.clone(),
                       gamma=(net[1].gamma if bn == 'scratch' else net[1].weight).data.clone(),
                       mm=(net[1].moving_mean if bn == 'scratch' else net[1].running_mean).reshape(-1))
    return out


def test_batch_norm_lenet():
    ours, _ = run_both(batch_norm_lenet, rtol=1e-4, atol=1e-5)
    # the scratch layer is nn.BatchNorm in training; they differ only in the running variance (biased vs not)
    np.testing.assert_allclose(ours["scratch"]["losses"], ours["nn"]["losses"], rtol=1e-4)
    np.testing.assert_allclose(ours["scratch"]["mm"], ours["nn"]["mm"], rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# RNN from scratch: one-hot inputs, gradient clipping by the global norm, perplexity
# ----------------------------------------------------------------------------------------------


def rnn_scratch(m):
    torch, nn, F = m.torch, m.nn, m.F
    vocab_size, num_hiddens, batch_size, num_steps = 12, 16, 3, 5
    rng = np.random.default_rng(1)
    corpus = rng.integers(0, vocab_size, 200)
    torch.manual_seed(0)

    def init_rnn_params():
        sigma = 0.01
        W_xh = nn.Parameter(torch.randn(vocab_size, num_hiddens) * sigma)
        W_hh = nn.Parameter(torch.randn(num_hiddens, num_hiddens) * sigma)
        b_h = nn.Parameter(torch.zeros(num_hiddens))
        W_hq = nn.Parameter(torch.randn(num_hiddens, vocab_size) * sigma)
        b_q = nn.Parameter(torch.zeros(vocab_size))
        return [W_xh, W_hh, b_h, W_hq, b_q]

    params = init_rnn_params()
    W_xh, W_hh, b_h, W_hq, b_q = params

    def rnn(inputs, state=None):
        if state is None:
            state = torch.zeros((inputs.shape[1], num_hiddens), device=inputs.device)
        else:
            state, = state
        outputs = []
        for X in inputs:
            state = torch.tanh(torch.matmul(X, W_xh) + torch.matmul(state, W_hh) + b_h)
            outputs.append(state)
        return outputs, state

    def forward(X, state=None):
        embs = F.one_hot(X.T, vocab_size).type(torch.float32)
        rnn_outputs, _ = rnn(embs, state)
        outputs = [torch.matmul(H, W_hq) + b_q for H in rnn_outputs]
        return torch.stack(outputs, 1)

    def grad_clipping(params, theta):
        norm = torch.sqrt(sum(torch.sum((p.grad ** 2)) for p in params))
        if norm > theta:
            for param in params:
                param.grad[:] *= theta / norm
        return norm

    opt = m.optim.SGD(params, lr=1.0)
    ppls, norms = [], []
    for step in range(8):
        starts = [(step * 7 + 31 * i) % (len(corpus) - num_steps - 1) for i in range(batch_size)]
        X = torch.tensor(np.stack([corpus[s:s + num_steps] for s in starts]))
        Y = torch.tensor(np.stack([corpus[s + 1:s + num_steps + 1] for s in starts]))
        Y_hat = forward(X)
        l = F.cross_entropy(Y_hat.reshape(-1, Y_hat.shape[-1]), Y.reshape(-1))
        opt.zero_grad()
        l.backward()
        norms.append(grad_clipping(params, 0.1).item())
        opt.step()
        ppls.append(math.exp(l.item()))
    # the same recurrence, concisely, from the same weights
    rnn_layer = nn.RNN(vocab_size, num_hiddens)
    with torch.no_grad():
        rnn_layer.weight_ih_l0.copy_(W_xh.T)
        rnn_layer.weight_hh_l0.copy_(W_hh.T)
        rnn_layer.bias_ih_l0.copy_(b_h)
        rnn_layer.bias_hh_l0.zero_()
    X = torch.tensor(np.stack([corpus[:num_steps], corpus[5:5 + num_steps]]))
    out, H = rnn_layer(F.one_hot(X.T, vocab_size).type(torch.float32))
    concise = torch.matmul(out, W_hq) + b_q
    scratch = forward(X).permute(1, 0, 2)
    return dict(ppls=ppls, norms=norms, params=params, diff=(concise - scratch).abs().max())


def test_rnn_scratch():
    ours, _ = run_both(rnn_scratch, rtol=1e-4, atol=1e-6)
    assert ours["diff"] < 1e-5
    assert max(ours["norms"]) > 0.1  # the clipping was exercised


# ----------------------------------------------------------------------------------------------
# attention: masked softmax, additive / dot-product scoring, multi-head, positional encoding,
# a transformer encoder block trained by the seq2seq masked loss
# ----------------------------------------------------------------------------------------------


def attention(m):
    torch, nn, F = m.torch, m.nn, m.F

    def sequence_mask(X, valid_len, value=0):
        maxlen = X.size(1)
        mask = torch.arange((maxlen), dtype=torch.float32, device=X.device)[None, :] < valid_len[:, None]
        X[~mask] = value
        return X

    def masked_softmax(X, valid_lens):
        def _sequence_mask(X, valid_len, value=0):
            maxlen = X.size(1)
            mask = torch.arange((maxlen), dtype=torch.float32, device=X.device)[None, :] < valid_len[:, None]
            X[~mask] = value
            return X

        if valid_lens is None:
            return nn.functional.softmax(X, dim=-1)
        else:
            shape = X.shape
            if valid_lens.dim() == 1:
                valid_lens = torch.repeat_interleave(valid_lens, shape[1])
            else:
                valid_lens = valid_lens.reshape(-1)
            X = _sequence_mask(X.reshape(-1, shape[-1]), valid_lens, value=-1e6)
            return nn.functional.softmax(X.reshape(shape), dim=-1)

    class AdditiveAttention(nn.Module):
        def __init__(self, num_hiddens, dropout, **kwargs):
            super(AdditiveAttention, self).__init__(**kwargs)
            self.W_k = nn.LazyLinear(num_hiddens, bias=False)
            self.W_q = nn.LazyLinear(num_hiddens, bias=False)
            self.w_v = nn.LazyLinear(1, bias=False)
            self.dropout = nn.Dropout(dropout)

        def forward(self, queries, keys, values, valid_lens):
            queries, keys = self.W_q(queries), self.W_k(keys)
            features = queries.unsqueeze(2) + keys.unsqueeze(1)
            features = torch.tanh(features)
            scores = self.w_v(features).squeeze(-1)
            self.attention_weights = masked_softmax(scores, valid_lens)
            return torch.bmm(self.dropout(self.attention_weights), values)

    class DotProductAttention(nn.Module):
        def __init__(self, dropout):
            super().__init__()
            self.dropout = nn.Dropout(dropout)

        def forward(self, queries, keys, values, valid_lens=None):
            d = queries.shape[-1]
            scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(d)
            self.attention_weights = masked_softmax(scores, valid_lens)
            return torch.bmm(self.dropout(self.attention_weights), values)

    def transpose_qkv(X, num_heads):
        X = X.reshape(X.shape[0], X.shape[1], num_heads, -1)
        X = X.permute(0, 2, 1, 3)
        return X.reshape(-1, X.shape[2], X.shape[3])

    def transpose_output(X, num_heads):
        X = X.reshape(-1, num_heads, X.shape[1], X.shape[2])
        X = X.permute(0, 2, 1, 3)
        return X.reshape(X.shape[0], X.shape[1], -1)

    class MultiHeadAttention(nn.Module):
        def __init__(self, num_hiddens, num_heads, dropout, bias=False, **kwargs):
            super().__init__()
            self.num_heads = num_heads
            self.attention = DotProductAttention(dropout)
            self.W_q = nn.LazyLinear(num_hiddens, bias=bias)
            self.W_k = nn.LazyLinear(num_hiddens, bias=bias)
            self.W_v = nn.LazyLinear(num_hiddens, bias=bias)
            self.W_o = nn.LazyLinear(num_hiddens, bias=bias)

        def forward(self, queries, keys, values, valid_lens):
            queries = transpose_qkv(self.W_q(queries), self.num_heads)
            keys = transpose_qkv(self.W_k(keys), self.num_heads)
            values = transpose_qkv(self.W_v(values), self.num_heads)
            if valid_lens is not None:
                valid_lens = torch.repeat_interleave(valid_lens, repeats=self.num_heads, dim=0)
            output = self.attention(queries, keys, values, valid_lens)
            output_concat = transpose_output(output, self.num_heads)
            return self.W_o(output_concat)

    class PositionalEncoding(nn.Module):
        def __init__(self, num_hiddens, dropout, max_len=1000):
            super().__init__()
            self.dropout = nn.Dropout(dropout)
            self.P = torch.zeros((1, max_len, num_hiddens))
            X = torch.arange(max_len, dtype=torch.float32).reshape(-1, 1) / torch.pow(
                10000, torch.arange(0, num_hiddens, 2, dtype=torch.float32) / num_hiddens)
            self.P[:, :, 0::2] = torch.sin(X)
            self.P[:, :, 1::2] = torch.cos(X)

        def forward(self, X):
            X = X + self.P[:, :X.shape[1], :].to(X.device)
            return self.dropout(X)

    class PositionWiseFFN(nn.Module):
        def __init__(self, ffn_num_hiddens, ffn_num_outputs):
            super().__init__()
            self.dense1 = nn.LazyLinear(ffn_num_hiddens)
            self.relu = nn.ReLU()
            self.dense2 = nn.LazyLinear(ffn_num_outputs)

        def forward(self, X):
            return self.dense2(self.relu(self.dense1(X)))

    class AddNorm(nn.Module):
        def __init__(self, norm_shape, dropout):
            super().__init__()
            self.dropout = nn.Dropout(dropout)
            self.ln = nn.LayerNorm(norm_shape)

        def forward(self, X, Y):
            return self.ln(self.dropout(Y) + X)

    class TransformerEncoderBlock(nn.Module):
        def __init__(self, num_hiddens, ffn_num_hiddens, num_heads, dropout, use_bias=False):
            super().__init__()
            self.attention = MultiHeadAttention(num_hiddens, num_heads, dropout, use_bias)
            self.addnorm1 = AddNorm(num_hiddens, dropout)
            self.ffn = PositionWiseFFN(ffn_num_hiddens, num_hiddens)
            self.addnorm2 = AddNorm(num_hiddens, dropout)

        def forward(self, X, valid_lens):
            Y = self.addnorm1(X, self.attention(X, X, X, valid_lens))
            return self.addnorm2(Y, self.ffn(Y))

    class MaskedSoftmaxCELoss(nn.CrossEntropyLoss):
        def forward(self, pred, label, valid_len):
            weights = torch.ones_like(label)
            weights = sequence_mask(weights, valid_len)
            self.reduction = 'none'
            unweighted_loss = super(MaskedSoftmaxCELoss, self).forward(pred.permute(0, 2, 1), label)
            weighted_loss = (unweighted_loss * weights).mean(dim=1)
            return weighted_loss

    class TinyEncoder(nn.Module):
        def __init__(self, vocab_size, num_hiddens):
            super().__init__()
            self.num_hiddens = num_hiddens
            self.embedding = nn.Embedding(vocab_size, num_hiddens)
            self.pos_encoding = PositionalEncoding(num_hiddens, 0.0)
            self.blk = TransformerEncoderBlock(num_hiddens, 32, 4, 0.0)
            self.additive = AdditiveAttention(8, 0.0)
            self.dense = nn.LazyLinear(vocab_size)

        def forward(self, X, valid_lens):
            X = self.pos_encoding(self.embedding(X) * math.sqrt(self.num_hiddens))
            X = self.blk(X, valid_lens)
            X = X + self.additive(X, X, X, valid_lens)
            return self.dense(X)

    # the book's masked-softmax examples
    torch.manual_seed(0)
    ms1 = masked_softmax(torch.rand(2, 2, 4), torch.tensor([2, 3]))
    ms2 = masked_softmax(torch.rand(2, 2, 4), torch.tensor([[1, 3], [2, 4]]))
    seqm = sequence_mask(torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([1, 2]))
    lossfn = MaskedSoftmaxCELoss()
    masked_loss = lossfn(torch.ones(3, 4, 10), torch.ones((3, 4), dtype=torch.long), torch.tensor([4, 2, 0]))

    vocab_size, num_hiddens = 11, 16
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.integers(0, vocab_size, (4, 7)))
    Y = torch.flip(X, dims=[1])
    valid_len = torch.tensor([7, 5, 3, 6])
    torch.manual_seed(0)
    net = TinyEncoder(vocab_size, num_hiddens)
    net(X, valid_len)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.tensor(np.random.default_rng(len(name) + p.numel()).normal(0, 0.3, tuple(p.shape)).astype(np.float32)))
    opt = m.optim.Adam(net.parameters(), lr=0.01)
    losses = []
    for step in range(5):
        opt.zero_grad()
        l = lossfn(net(X, valid_len), Y, valid_len)
        l.sum().backward()
        opt.step()
        losses.append(l.sum().item())
    grads = {name: p.grad for name, p in net.named_parameters()}
    return dict(ms1=ms1, ms2=ms2, seqm=seqm, masked_loss=masked_loss, losses=losses, grads=grads,
                P=net.pos_encoding.P[0, :6], weights=net.additive.attention_weights)


def test_attention():
    ours, _ = run_both(attention, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["masked_loss"], [2.3026, 1.1513, 0], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(ours["seqm"], [[1, 0, 0], [4, 5, 0]])
    assert np.all(ours["ms1"][0, :, 2:] < 1e-6)
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# optimisation chapter: momentum, AdaGrad, RMSProp, AdaDelta, Adam by hand against optim's
# ----------------------------------------------------------------------------------------------


def optimizers_by_hand(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    rng = np.random.default_rng(0)
    features = torch.tensor(rng.standard_normal((60, 5)).astype(np.float32))
    labels = torch.tensor((rng.standard_normal((60, 1)) + features.numpy() @ rng.standard_normal((5, 1))).astype(np.float32))

    def init_params():
        w = torch.tensor(np.random.default_rng(3).normal(0, 0.01, (5, 1)).astype(np.float32), requires_grad=True)
        b = torch.zeros((1), requires_grad=True)
        return w, b

    def linreg(X, w, b):
        return torch.matmul(X, w) + b

    def squared_loss(y_hat, y):
        return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2

    def init_momentum_states(feature_dim):
        v_w = torch.zeros((feature_dim, 1))
        v_b = torch.zeros(1)
        return (v_w, v_b)

    def sgd_momentum(params, states, hyperparams):
        for p, v in zip(params, states):
            with torch.no_grad():
                v[:] = hyperparams['momentum'] * v + p.grad
                p[:] -= hyperparams['lr'] * v
            p.grad.data.zero_()

    def init_adagrad_states(feature_dim):
        s_w = torch.zeros((feature_dim, 1))
        s_b = torch.zeros(1)
        return (s_w, s_b)

    def adagrad(params, states, hyperparams):
        eps = 1e-6
        for p, s in zip(params, states):
            with torch.no_grad():
                s[:] += torch.square(p.grad)
                p[:] -= hyperparams['lr'] * p.grad / torch.sqrt(s + eps)
            p.grad.data.zero_()

    def init_rmsprop_states(feature_dim):
        s_w = torch.zeros((feature_dim, 1))
        s_b = torch.zeros(1)
        return (s_w, s_b)

    def rmsprop(params, states, hyperparams):
        gamma, eps = hyperparams['gamma'], 1e-6
        for p, s in zip(params, states):
            with torch.no_grad():
                s[:] = gamma * s + (1 - gamma) * torch.square(p.grad)
                p[:] -= hyperparams['lr'] * p.grad / torch.sqrt(s + eps)
            p.grad.data.zero_()

    def init_adadelta_states(feature_dim):
        s_w, s_b = torch.zeros((feature_dim, 1)), torch.zeros(1)
        delta_w, delta_b = torch.zeros((feature_dim, 1)), torch.zeros(1)
        return ((s_w, delta_w), (s_b, delta_b))

    def adadelta(params, states, hyperparams):
        rho, eps = hyperparams['rho'], 1e-5
        for p, (s, delta) in zip(params, states):
            with torch.no_grad():
                s[:] = rho * s + (1 - rho) * torch.square(p.grad)
                g = (torch.sqrt(delta + eps) / torch.sqrt(s + eps)) * p.grad
                p[:] -= g
                delta[:] = rho * delta + (1 - rho) * g * g
            p.grad.data.zero_()

    def init_adam_states(feature_dim):
        v_w, v_b = torch.zeros((feature_dim, 1)), torch.zeros(1)
        s_w, s_b = torch.zeros((feature_dim, 1)), torch.zeros(1)
        return ((v_w, s_w), (v_b, s_b))

    def adam(params, states, hyperparams):
        beta1, beta2, eps = 0.9, 0.999, 1e-6
        for p, (v, s) in zip(params, states):
            with torch.no_grad():
                v[:] = beta1 * v + (1 - beta1) * p.grad
                s[:] = beta2 * s + (1 - beta2) * torch.square(p.grad)
                v_bias_corr = v / (1 - beta1 ** hyperparams['t'])
                s_bias_corr = s / (1 - beta2 ** hyperparams['t'])
                p[:] -= hyperparams['lr'] * v_bias_corr / (torch.sqrt(s_bias_corr) + eps)
            p.grad.data.zero_()
        hyperparams['t'] += 1

    def train_ch11(trainer_fn, states, hyperparams, num_epochs=2, batch_size=10):
        w, b = init_params()
        net, loss = lambda X: linreg(X, w, b), squared_loss
        losses = []
        for _ in range(num_epochs):
            for i in range(0, 60, batch_size):
                X, y = features[i:i + batch_size], labels[i:i + batch_size]
                l = loss(net(X), y).mean()
                l.backward()
                trainer_fn([w, b], states, hyperparams)
                losses.append(l.item())
        return losses, w.detach().clone(), b.detach().clone()

    def train_concise_ch11(trainer_fn, hyperparams, num_epochs=2, batch_size=10):
        net = nn.Sequential(nn.Linear(5, 1))
        w, b = init_params()
        with torch.no_grad():
            net[0].weight.copy_(w.reshape(1, 5))
            net[0].bias.zero_()
        loss = nn.MSELoss(reduction='none')
        optimizer = trainer_fn(net.parameters(), **hyperparams)
        losses = []
        for _ in range(num_epochs):
            for i in range(0, 60, batch_size):
                X, y = features[i:i + batch_size], labels[i:i + batch_size]
                optimizer.zero_grad()
                out = net(X)
                y = y.reshape(out.shape)
                l = loss(out, y) / 2  # the book's squared_loss halves it
                l.mean().backward()
                optimizer.step()
                losses.append(l.mean().item())
        return losses, net[0].weight.detach().reshape(5, 1).clone(), net[0].bias.detach().clone()

    out = {}
    out['momentum'] = (train_ch11(sgd_momentum, init_momentum_states(5), {'lr': 0.02, 'momentum': 0.5}),
                       train_concise_ch11(optim.SGD, {'lr': 0.02, 'momentum': 0.5}))
    # optim.Adagrad's eps (1e-10) sits outside the root; the book's 1e-6 inside: compare at their defaults
    out['adagrad'] = (train_ch11(adagrad, init_adagrad_states(5), {'lr': 0.1}),
                      train_concise_ch11(optim.Adagrad, {'lr': 0.1}))
    out['rmsprop'] = (train_ch11(rmsprop, init_rmsprop_states(5), {'lr': 0.01, 'gamma': 0.9}),
                      train_concise_ch11(optim.RMSprop, {'lr': 0.01, 'alpha': 0.9}))
    out['adadelta'] = (train_ch11(adadelta, init_adadelta_states(5), {'rho': 0.9}),
                       train_concise_ch11(optim.Adadelta, {'rho': 0.9, 'eps': 1e-5}))
    out['adam'] = (train_ch11(adam, init_adam_states(5), {'lr': 0.01, 't': 1}),
                   train_concise_ch11(optim.Adam, {'lr': 0.01, 'eps': 1e-6}))
    return out


def test_optimizers_by_hand():
    ours, _ = run_both(optimizers_by_hand, rtol=1e-5, atol=1e-6)
    # Adadelta, Adam and momentum are the book's formulas exactly; AdaGrad's and RMSProp's eps sit elsewhere
    tolerances = {'momentum': 1e-5, 'adagrad': 1e-3, 'rmsprop': 1e-3, 'adadelta': 1e-5, 'adam': 1e-5}
    for name, ((hand_losses, hand_w, hand_b), (lib_losses, lib_w, lib_b)) in ours.items():
        np.testing.assert_allclose(hand_losses, lib_losses, rtol=tolerances[name], err_msg=name)
        np.testing.assert_allclose(hand_w, lib_w, rtol=tolerances[name], atol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------------------------
# learning-rate schedulers: factor, multi-factor (MultiStepLR), cosine with warmup
# ----------------------------------------------------------------------------------------------


def schedulers(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    lr_scheduler = optim.lr_scheduler

    class FactorScheduler:
        def __init__(self, factor=1, stop_factor_lr=1e-7, base_lr=0.1):
            self.factor = factor
            self.stop_factor_lr = stop_factor_lr
            self.base_lr = base_lr

        def __call__(self, num_update):
            self.base_lr = max(self.stop_factor_lr, self.base_lr * self.factor)
            return self.base_lr

    class CosineScheduler:
        def __init__(self, max_update, base_lr=0.01, final_lr=0, warmup_steps=0, warmup_begin_lr=0):
            self.base_lr_orig = base_lr
            self.max_update = max_update
            self.final_lr = final_lr
            self.warmup_steps = warmup_steps
            self.warmup_begin_lr = warmup_begin_lr
            self.max_steps = self.max_update - self.warmup_steps

        def get_warmup_lr(self, epoch):
            increase = (self.base_lr_orig - self.warmup_begin_lr) * float(epoch) / float(self.warmup_steps)
            return self.warmup_begin_lr + increase

        def __call__(self, epoch):
            if epoch < self.warmup_steps:
                return self.get_warmup_lr(epoch)
            if epoch <= self.max_update:
                self.base_lr = self.final_lr + (self.base_lr_orig - self.final_lr) * (
                    1 + math.cos(math.pi * (epoch - self.warmup_steps) / self.max_steps)) / 2
            return self.base_lr

    rng = np.random.default_rng(0)
    X = torch.tensor(rng.standard_normal((32, 6)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 3, 32))

    def train(scheduler_kind, num_epochs=12):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        trainer = optim.SGD(net.parameters(), lr=0.3)
        if scheduler_kind == 'multistep':
            scheduler = lr_scheduler.MultiStepLR(trainer, milestones=[3, 7], gamma=0.5)
        elif scheduler_kind == 'factor':
            scheduler = FactorScheduler(factor=0.9, stop_factor_lr=1e-2, base_lr=0.3)
        elif scheduler_kind == 'cosine':
            scheduler = CosineScheduler(10, warmup_steps=3, base_lr=0.3, final_lr=0.01)
        elif scheduler_kind == 'cosine_lib':
            scheduler = lr_scheduler.CosineAnnealingLR(trainer, T_max=10, eta_min=0.01)
        lrs, losses = [], []
        for epoch in range(num_epochs):
            trainer.zero_grad()
            l = nn.functional.cross_entropy(net(X), y)
            l.backward()
            trainer.step()
            losses.append(l.item())
            if scheduler:
                if scheduler.__module__ == lr_scheduler.__name__:
                    scheduler.step()
                else:
                    for param_group in trainer.param_groups:
                        param_group['lr'] = scheduler(epoch)
            lrs.append(trainer.param_groups[0]['lr'])
        return lrs, losses, net[0].weight.detach()

    return {kind: train(kind) for kind in ('multistep', 'factor', 'cosine', 'cosine_lib')}


def test_schedulers():
    ours, _ = run_both(schedulers, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours['multistep'][0], [0.3] * 2 + [0.15] * 4 + [0.075] * 6)
    expected = [0.3 * (1 + math.cos(math.pi * min(t + 1, 10) / 10)) / 2 for t in range(12)]
    np.testing.assert_allclose(ours['cosine_lib'][0][:10], [0.01 + (e - 0.0) * (0.29 / 0.3) for e in expected][:10],
                               rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------------------------
# GRU and LSTM from scratch against nn.GRU / nn.LSTM; deep and bidirectional RNNs
# ----------------------------------------------------------------------------------------------


def gru_lstm_scratch(m):
    torch, nn, F = m.torch, m.nn, m.F
    num_inputs, num_hiddens, T, B = 5, 6, 4, 3
    torch.manual_seed(0)
    inputs = torch.randn(T, B, num_inputs)

    def init_weight(*shape):
        return nn.Parameter(torch.randn(*shape) * 0.3)

    def triple():
        return (init_weight(num_inputs, num_hiddens), init_weight(num_hiddens, num_hiddens),
                nn.Parameter(torch.randn(num_hiddens) * 0.1))

    # GRU (d2l's GRUScratch)
    W_xz, W_hz, b_z = triple()
    W_xr, W_hr, b_r = triple()
    W_xh, W_hh, b_h = triple()

    def gru_forward(inputs, H=None):
        if H is None:
            H = torch.zeros((inputs.shape[1], num_hiddens))
        outputs = []
        for X in inputs:
            Z = torch.sigmoid(torch.matmul(X, W_xz) + torch.matmul(H, W_hz) + b_z)
            R = torch.sigmoid(torch.matmul(X, W_xr) + torch.matmul(H, W_hr) + b_r)
            H_tilde = torch.tanh(torch.matmul(X, W_xh) + torch.matmul(R * H, W_hh) + b_h)
            H = Z * H + (1 - Z) * H_tilde
            outputs.append(H)
        return outputs, H

    outs, H = gru_forward(inputs)
    gru_loss = torch.stack(outs).pow(2).sum()
    gru_loss.backward()
    gru = nn.GRU(num_inputs, num_hiddens)
    with torch.no_grad():
        # nn.GRU's gates are stacked r, z, n; its candidate applies r after W_hn, the book's before W_hh,
        # so the two agree only on the first step (from H = 0)
        gru.weight_ih_l0.copy_(torch.cat([W_xr.T, W_xz.T, W_xh.T]))
        gru.weight_hh_l0.copy_(torch.cat([W_hr.T, W_hz.T, W_hh.T]))
        gru.bias_ih_l0.copy_(torch.cat([b_r, b_z, b_h]))
        gru.bias_hh_l0.zero_()
    out, h = gru(inputs)
    out.pow(2).sum().backward()
    gru_grad_match = (gru.weight_hh_l0.grad[:num_hiddens] - W_hr.grad.T).abs().max()

    # LSTM (d2l's LSTMScratch)
    W_xi, W_hi, b_i = triple()
    W_xf, W_hf, b_f = triple()
    W_xo, W_ho, b_o = triple()
    W_xc, W_hc, b_c = triple()

    def lstm_forward(inputs, H_C=None):
        if H_C is None:
            H = torch.zeros((inputs.shape[1], num_hiddens))
            C = torch.zeros((inputs.shape[1], num_hiddens))
        else:
            H, C = H_C
        outputs = []
        for X in inputs:
            I = torch.sigmoid(torch.matmul(X, W_xi) + torch.matmul(H, W_hi) + b_i)
            Fg = torch.sigmoid(torch.matmul(X, W_xf) + torch.matmul(H, W_hf) + b_f)
            O = torch.sigmoid(torch.matmul(X, W_xo) + torch.matmul(H, W_ho) + b_o)
            C_tilde = torch.tanh(torch.matmul(X, W_xc) + torch.matmul(H, W_hc) + b_c)
            C = Fg * C + I * C_tilde
            H = O * torch.tanh(C)
            outputs.append(H)
        return outputs, (H, C)

    louts, (lH, lC) = lstm_forward(inputs)
    (torch.stack(louts).sum() + lC.pow(2).sum()).backward()
    lstm = nn.LSTM(num_inputs, num_hiddens)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.cat([W_xi.T, W_xf.T, W_xc.T, W_xo.T]))
        lstm.weight_hh_l0.copy_(torch.cat([W_hi.T, W_hf.T, W_hc.T, W_ho.T]))
        lstm.bias_ih_l0.copy_(torch.cat([b_i, b_f, b_c, b_o]))
        lstm.bias_hh_l0.zero_()
    lout, (lh, lc) = lstm(inputs)
    (lout.sum() + lc.pow(2).sum()).backward()
    lstm_grad_match = (lstm.weight_hh_l0.grad[2 * num_hiddens:3 * num_hiddens] - W_hc.grad.T).abs().max()

    # deep and bidirectional, as the book builds them concisely
    torch.manual_seed(1)
    deep = nn.GRU(num_inputs, num_hiddens, num_layers=2, dropout=0)
    birnn = nn.LSTM(num_inputs, num_hiddens, num_layers=2, bidirectional=True)
    dout, dstate = deep(inputs)
    bout, (bh, bc) = birnn(inputs, (torch.zeros(4, B, num_hiddens), torch.ones(4, B, num_hiddens) * 0.1))
    (dout.sum() + bout.pow(2).mean() + bh.sum()).backward()
    return dict(gru=torch.stack(outs), gru_nn=out, gru_match=gru_grad_match, W_hr_grad=W_hr.grad,
                lstm=torch.stack(louts), lstm_nn=lout, lc=lC, lc_nn=lc, lstm_match=lstm_grad_match,
                W_xf_grad=W_xf.grad, dout=dout, dstate=dstate, bout=bout, bh=bh, bc=bc,
                deep_grads=[p.grad for p in deep.parameters()], bi_grads=[p.grad for p in birnn.parameters()])


def test_gru_lstm_scratch():
    ours, _ = run_both(gru_lstm_scratch, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["gru"][0], ours["gru_nn"][0], rtol=1e-5, atol=1e-6)
    assert np.abs(ours["gru"][1:] - ours["gru_nn"][1:]).max() > 1e-3
    np.testing.assert_allclose(ours["lstm"], ours["lstm_nn"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["lc"], ours["lc_nn"][0], rtol=1e-5, atol=1e-6)
    assert ours["lstm_match"] < 1e-5
    assert ours["bout"].shape == (4, 3, 12) and ours["bh"].shape == (4, 3, 6)


# ----------------------------------------------------------------------------------------------
# modern CNNs: NiN, GoogLeNet's Inception, ResNet's Residual, DenseNet
# ----------------------------------------------------------------------------------------------


def modern_cnns(m):
    torch, nn, F = m.torch, m.nn, m.F

    def nin_block(out_channels, kernel_size, strides, padding):
        return nn.Sequential(
            nn.LazyConv2d(out_channels, kernel_size, strides, padding), nn.ReLU(),
            nn.LazyConv2d(out_channels, kernel_size=1), nn.ReLU(),
            nn.LazyConv2d(out_channels, kernel_size=1), nn.ReLU())

    class Inception(nn.Module):
        def __init__(self, c1, c2, c3, c4, **kwargs):
            super(Inception, self).__init__(**kwargs)
            self.b1_1 = nn.LazyConv2d(c1, kernel_size=1)
            self.b2_1 = nn.LazyConv2d(c2[0], kernel_size=1)
            self.b2_2 = nn.LazyConv2d(c2[1], kernel_size=3, padding=1)
            self.b3_1 = nn.LazyConv2d(c3[0], kernel_size=1)
            self.b3_2 = nn.LazyConv2d(c3[1], kernel_size=5, padding=2)
            self.b4_1 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
            self.b4_2 = nn.LazyConv2d(c4, kernel_size=1)

        def forward(self, x):
            b1 = F.relu(self.b1_1(x))
            b2 = F.relu(self.b2_2(F.relu(self.b2_1(x))))
            b3 = F.relu(self.b3_2(F.relu(self.b3_1(x))))
            b4 = F.relu(self.b4_2(self.b4_1(x)))
            return torch.cat((b1, b2, b3, b4), dim=1)

    class Residual(nn.Module):
        def __init__(self, num_channels, use_1x1conv=False, strides=1):
            super().__init__()
            self.conv1 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1, stride=strides)
            self.conv2 = nn.LazyConv2d(num_channels, kernel_size=3, padding=1)
            if use_1x1conv:
                self.conv3 = nn.LazyConv2d(num_channels, kernel_size=1, stride=strides)
            else:
                self.conv3 = None
            self.bn1 = nn.LazyBatchNorm2d()
            self.bn2 = nn.LazyBatchNorm2d()

        def forward(self, X):
            Y = F.relu(self.bn1(self.conv1(X)))
            Y = self.bn2(self.conv2(Y))
            if self.conv3:
                X = self.conv3(X)
            Y += X
            return F.relu(Y)

    def conv_block(num_channels):
        return nn.Sequential(nn.LazyBatchNorm2d(), nn.ReLU(), nn.LazyConv2d(num_channels, kernel_size=3, padding=1))

    class DenseBlock(nn.Module):
        def __init__(self, num_convs, num_channels):
            super(DenseBlock, self).__init__()
            layer = []
            for i in range(num_convs):
                layer.append(conv_block(num_channels))
            self.net = nn.Sequential(*layer)

        def forward(self, X):
            for blk in self.net:
                Y = blk(X)
                X = torch.cat((X, Y), dim=1)
            return X

    def transition_block(num_channels):
        return nn.Sequential(nn.LazyBatchNorm2d(), nn.ReLU(), nn.LazyConv2d(num_channels, kernel_size=1),
                             nn.AvgPool2d(kernel_size=2, stride=2))

    torch.manual_seed(0)
    net = nn.Sequential(
        nin_block(8, kernel_size=3, strides=1, padding=1), nn.MaxPool2d(3, stride=2),
        Inception(4, (4, 8), (2, 4), 4),
        Residual(12, use_1x1conv=True, strides=2), Residual(12),
        DenseBlock(2, 5), transition_block(10),
        nin_block(5, kernel_size=3, strides=1, padding=1),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.standard_normal((4, 3, 17, 17)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 5, 4))
    net(X)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.tensor(np.random.default_rng(p.numel()).normal(0, 0.3, tuple(p.shape)).astype(np.float32)))
    shapes = []
    Z = X
    for layer in net:
        Z = layer(Z)
        shapes.append(tuple(Z.shape))
    opt = m.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    losses = []
    for step in range(3):
        opt.zero_grad()
        l = F.cross_entropy(net(X), y)
        l.backward()
        opt.step()
        losses.append(l.item())
    net.eval()
    with torch.no_grad():
        eval_out = net(X)
    return dict(shapes=shapes, losses=losses, eval=eval_out,
                grads={name: p.grad for name, p in net.named_parameters()},
                running={k: v for k, v in net.state_dict().items() if 'running' in k})


def test_modern_cnns():
    ours, _ = run_both(modern_cnns, rtol=1e-4, atol=1e-5)
    assert ours["shapes"][2] == (4, 20, 8, 8) and ours["shapes"][-1] == (4, 5)


# ----------------------------------------------------------------------------------------------
# automatic differentiation chapter; dropout and weight decay from scratch
# ----------------------------------------------------------------------------------------------


def autodiff_chapter(m):
    torch, nn = m.torch, m.nn
    x = torch.arange(4.0)
    x.requires_grad_(True)
    y = 2 * torch.dot(x, x)
    y.backward()
    g1 = x.grad.clone()
    x.grad.zero_()
    y = x.sum()
    y.backward()
    g2 = x.grad.clone()
    x.grad.zero_()
    y = x * x
    y.backward(gradient=torch.ones(len(y)))
    g3 = x.grad.clone()
    x.grad.zero_()
    y = x * x
    u = y.detach()
    z = u * x
    z.sum().backward()
    g4 = (x.grad == u).all()
    x.grad.zero_()
    y.sum().backward()
    g5 = x.grad.clone()

    def f(a):
        b = a * 2
        while b.norm() < 1000:
            b = b * 2
        if b.sum() > 0:
            c = b
        else:
            c = 100 * b
        return c

    a = torch.tensor(-0.7, requires_grad=True)
    d = f(a)
    d.backward()
    ctrl = (a.grad, d / a)
    a2 = torch.tensor([0.3, -0.2, 0.5], requires_grad=True)
    d2 = f(a2)
    d2.sum().backward()

    # dropout from scratch, and weight decay from scratch
    def dropout_layer(X, dropout):
        assert 0 <= dropout <= 1
        if dropout == 1:
            return torch.zeros_like(X)
        mask = (torch.rand(X.shape) > dropout).float()
        return mask * X / (1.0 - dropout)

    torch.manual_seed(0)
    X = torch.arange(16, dtype=torch.float32).reshape((2, 8))
    drops = [dropout_layer(X, 0.), dropout_layer(X, 1.)]
    mask_frac = (dropout_layer(torch.ones(2000), 0.5) == 0).float().mean()

    def l2_penalty(w):
        return (w ** 2).sum() / 2

    rng = np.random.default_rng(0)
    num_inputs = 20
    Xs = torch.tensor(rng.standard_normal((20, num_inputs)).astype(np.float32))
    ys = torch.tensor((0.05 + 0.01 * Xs.numpy().sum(1, keepdims=True)).astype(np.float32))
    w = torch.tensor(np.random.default_rng(1).normal(0, 1, (num_inputs, 1)).astype(np.float32), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    lambd, lr, batch_size = 3, 0.01, 5
    for epoch in range(3):
        for i in range(0, 20, batch_size):
            Xb, yb = Xs[i:i + batch_size], ys[i:i + batch_size]
            l = ((torch.matmul(Xb, w) + b - yb) ** 2 / 2) + lambd * l2_penalty(w)
            l.sum().backward()
            with torch.no_grad():
                for param in [w, b]:
                    param -= lr * param.grad / batch_size
                    param.grad.zero_()
    # the concise version: weight_decay on the weight only
    net = nn.Linear(num_inputs, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor(np.random.default_rng(1).normal(0, 1, (num_inputs, 1)).astype(np.float32)).T)
        net.bias.zero_()
    trainer = m.optim.SGD([{"params": net.weight, 'weight_decay': lambd}, {"params": net.bias}], lr=lr)
    loss = nn.MSELoss(reduction='none')
    for epoch in range(3):
        for i in range(0, 20, batch_size):
            Xb, yb = Xs[i:i + batch_size], ys[i:i + batch_size]
            trainer.zero_grad()
            l = loss(net(Xb), yb) / 2
            l.mean().backward()
            trainer.step()
    return dict(g1=g1, g2=g2, g3=g3, g4=bool(g4), g5=g5, ctrl=ctrl, a2=a2.grad, drops=drops,
                w=w, b=b, w_concise=net.weight.T, b_concise=net.bias, mask_frac=mask_frac)


def test_autodiff_chapter():
    ours, _ = run_both(autodiff_chapter, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["g1"], [0, 4, 8, 12])
    np.testing.assert_allclose(ours["g3"], [0, 2, 4, 6])
    assert ours["g4"]
    np.testing.assert_allclose(ours["ctrl"][0], ours["ctrl"][1], rtol=1e-6)
    np.testing.assert_allclose(ours["drops"][1], 0)
    # the scratch penalty sums lambda * ||w||^2 / 2 over the batch, then divides by it: the same step
    np.testing.assert_allclose(ours["w"], ours["w_concise"], rtol=1e-4, atol=1e-6)
    assert 0.4 < float(ours["mask_frac"]) < 0.6


# ----------------------------------------------------------------------------------------------
# seq2seq: GRU encoder-decoder (init by _flat_weights_names), Bahdanau attention decoder,
# padded cross-entropy, gradient clipping, greedy prediction
# ----------------------------------------------------------------------------------------------


def seq2seq(m):
    torch, nn, F = m.torch, m.nn, m.F

    def init_seq2seq(module):
        if type(module) == nn.Linear:
            nn.init.xavier_uniform_(module.weight)
        if type(module) == nn.GRU:
            for param in module._flat_weights_names:
                if "weight" in param:
                    nn.init.xavier_uniform_(module._parameters[param])

    class Seq2SeqEncoder(nn.Module):
        def __init__(self, vocab_size, embed_size, num_hiddens, num_layers, dropout=0):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, embed_size)
            self.rnn = nn.GRU(embed_size, num_hiddens, num_layers, dropout=dropout)
            self.apply(init_seq2seq)

        def forward(self, X, *args):
            embs = self.embedding(X.t().type(torch.int64))
            outputs, state = self.rnn(embs)
            return outputs, state

    class Seq2SeqDecoder(nn.Module):
        def __init__(self, vocab_size, embed_size, num_hiddens, num_layers, dropout=0):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, embed_size)
            self.rnn = nn.GRU(embed_size + num_hiddens, num_hiddens, num_layers, dropout=dropout)
            self.dense = nn.LazyLinear(vocab_size)
            self.apply(init_seq2seq)

        def init_state(self, enc_all_outputs, *args):
            return enc_all_outputs

        def forward(self, X, state):
            embs = self.embedding(X.t().type(torch.int32))
            enc_output, hidden_state = state
            context = enc_output[-1]
            context = context.repeat(embs.shape[0], 1, 1)
            embs_and_context = torch.cat((embs, context), -1)
            outputs, hidden_state = self.rnn(embs_and_context, hidden_state)
            outputs = self.dense(outputs).swapaxes(0, 1)
            return outputs, [enc_output, hidden_state]

    class AdditiveAttention(nn.Module):
        def __init__(self, num_hiddens, dropout):
            super().__init__()
            self.W_k = nn.LazyLinear(num_hiddens, bias=False)
            self.W_q = nn.LazyLinear(num_hiddens, bias=False)
            self.w_v = nn.LazyLinear(1, bias=False)
            self.dropout = nn.Dropout(dropout)

        def forward(self, queries, keys, values, valid_lens):
            queries, keys = self.W_q(queries), self.W_k(keys)
            features = torch.tanh(queries.unsqueeze(2) + keys.unsqueeze(1))
            scores = self.w_v(features).squeeze(-1)
            shape = scores.shape
            valid = torch.repeat_interleave(valid_lens, shape[1])
            flat = scores.reshape(-1, shape[-1])
            mask = torch.arange(shape[-1], dtype=torch.float32)[None, :] < valid[:, None]
            flat[~mask] = -1e6
            self.attention_weights = F.softmax(flat.reshape(shape), dim=-1)
            return torch.bmm(self.dropout(self.attention_weights), values)

    class Seq2SeqAttentionDecoder(nn.Module):
        def __init__(self, vocab_size, embed_size, num_hiddens, num_layers, dropout=0):
            super().__init__()
            self.attention = AdditiveAttention(num_hiddens, dropout)
            self.embedding = nn.Embedding(vocab_size, embed_size)
            self.rnn = nn.GRU(embed_size + num_hiddens, num_hiddens, num_layers, dropout=dropout)
            self.dense = nn.LazyLinear(vocab_size)
            self.apply(init_seq2seq)

        def init_state(self, enc_outputs, enc_valid_lens):
            outputs, hidden_state = enc_outputs
            return (outputs.permute(1, 0, 2), hidden_state, enc_valid_lens)

        def forward(self, X, state):
            enc_outputs, hidden_state, enc_valid_lens = state
            X = self.embedding(X).permute(1, 0, 2)
            outputs, self._attention_weights = [], []
            for x in X:
                query = torch.unsqueeze(hidden_state[-1], dim=1)
                context = self.attention(query, enc_outputs, enc_outputs, enc_valid_lens)
                x = torch.cat((context, torch.unsqueeze(x, dim=1)), dim=-1)
                out, hidden_state = self.rnn(x.permute(1, 0, 2), hidden_state)
                outputs.append(out)
                self._attention_weights.append(self.attention.attention_weights)
            outputs = self.dense(torch.cat(outputs, dim=0))
            return outputs.permute(1, 0, 2), [enc_outputs, hidden_state, enc_valid_lens]

    class EncoderDecoder(nn.Module):
        def __init__(self, encoder, decoder, tgt_pad):
            super().__init__()
            self.encoder = encoder
            self.decoder = decoder
            self.tgt_pad = tgt_pad

        def forward(self, enc_X, dec_X, *args):
            enc_all_outputs = self.encoder(enc_X, *args)
            dec_state = self.decoder.init_state(enc_all_outputs, *args)
            return self.decoder(dec_X, dec_state)[0]

        def loss(self, Y_hat, Y):
            Y_hat = Y_hat.reshape((-1, Y_hat.shape[-1]))
            Y = Y.reshape((-1,))
            l = F.cross_entropy(Y_hat, Y, reduction='none')
            mask = (Y.reshape(-1) != self.tgt_pad).type(torch.float32)
            return (l * mask).sum() / mask.sum()

        def predict_step(self, src, tgt_bos, src_valid_len, num_steps):
            enc_all_outputs = self.encoder(src, src_valid_len)
            dec_state = self.decoder.init_state(enc_all_outputs, src_valid_len)
            outputs = [tgt_bos.unsqueeze(1)]
            for _ in range(num_steps):
                Y, dec_state = self.decoder(outputs[-1], dec_state)
                outputs.append(Y.argmax(2))
            return torch.cat(outputs[1:], 1)

    def grad_clipping(model, grad_clip_val):
        params = [p for p in model.parameters() if p.requires_grad]
        norm = torch.sqrt(sum(torch.sum((p.grad ** 2)) for p in params))
        if norm > grad_clip_val:
            for param in params:
                param.grad[:] *= grad_clip_val / norm

    vocab, pad, bos = 10, 0, 1
    rng = np.random.default_rng(0)
    src = rng.integers(3, vocab, (6, 5))
    src_valid_len = np.array([5, 4, 3, 5, 2, 4])
    for i, n in enumerate(src_valid_len):
        src[i, n:] = pad
    tgt = np.concatenate([np.full((6, 1), bos), src[:, ::-1]], 1)
    src, tgt, src_valid_len = torch.tensor(src), torch.tensor(tgt), torch.tensor(src_valid_len)
    out = {}
    for kind in ('plain', 'bahdanau'):
        torch.manual_seed(0)
        encoder = Seq2SeqEncoder(vocab, 8, 12, 2)
        decoder = (Seq2SeqDecoder if kind == 'plain' else Seq2SeqAttentionDecoder)(vocab, 8, 12, 2)
        model = EncoderDecoder(encoder, decoder, tgt_pad=pad)
        model(src, tgt[:, :-1], src_valid_len)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(torch.tensor(np.random.default_rng(len(name) * 7 + p.numel()).normal(0, 0.4, tuple(p.shape)).astype(np.float32)))
        optimizer = m.optim.Adam(model.parameters(), lr=0.01)
        losses = []
        for step in range(4):
            l = model.loss(model(src, tgt[:, :-1], src_valid_len), tgt[:, 1:])
            optimizer.zero_grad()
            with torch.no_grad():
                pass
            l.backward()
            grad_clipping(model, 1)
            optimizer.step()
            losses.append(l.item())
        preds = model.predict_step(src, tgt[:, 0], src_valid_len, 4)
        out[kind] = dict(losses=losses, preds=preds, grads={n: p.grad for n, p in model.named_parameters()},
                         attn=(torch.cat(decoder._attention_weights, 0) if kind == 'bahdanau' else None))
    return out


def test_seq2seq():
    ours, _ = run_both(seq2seq, rtol=1e-4, atol=1e-5)
    assert ours["bahdanau"]["losses"][-1] < ours["bahdanau"]["losses"][0]
    attn = ours["bahdanau"]["attn"]
    np.testing.assert_allclose(attn.sum(-1), 1, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# NLP pretraining and applications: BERT's MaskLM gather, word2vec skip-gram with the masked
# SigmoidBCELoss, textCNN; computer vision: FCN's bilinear transposed convolution, anchor IoUs
# ----------------------------------------------------------------------------------------------


def nlp_and_vision(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class MaskLM(nn.Module):
        def __init__(self, vocab_size, num_hiddens, **kwargs):
            super(MaskLM, self).__init__(**kwargs)
            self.mlp = nn.Sequential(nn.LazyLinear(num_hiddens), nn.ReLU(), nn.LayerNorm(num_hiddens),
                                     nn.LazyLinear(vocab_size))

        def forward(self, X, pred_positions):
            num_pred_positions = pred_positions.shape[1]
            pred_positions = pred_positions.reshape(-1)
            batch_size = X.shape[0]
            batch_idx = torch.arange(0, batch_size)
            batch_idx = torch.repeat_interleave(batch_idx, num_pred_positions)
            masked_X = X[batch_idx, pred_positions]
            masked_X = masked_X.reshape((batch_size, num_pred_positions, -1))
            mlm_Y_hat = self.mlp(masked_X)
            return mlm_Y_hat

    encoded_X = torch.randn(2, 8, 12, requires_grad=True)
    mlm = MaskLM(20, 12)
    mlm_positions = torch.tensor([[1, 5, 2], [6, 1, 5]])
    mlm_Y_hat = mlm(encoded_X, mlm_positions)
    mlm_Y = torch.tensor([[7, 8, 9], [10, 20 - 1, 11]])
    loss = nn.CrossEntropyLoss(reduction='none')
    mlm_l = loss(mlm_Y_hat.reshape((-1, 20)), mlm_Y.reshape(-1))
    mlm_l.sum().backward()

    # word2vec skip-gram
    def skip_gram(center, contexts_and_negatives, embed_v, embed_u):
        v = embed_v(center)
        u = embed_u(contexts_and_negatives)
        pred = torch.bmm(v, u.permute(0, 2, 1))
        return pred

    class SigmoidBCELoss(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, inputs, target, mask=None):
            out = nn.functional.binary_cross_entropy_with_logits(inputs, target, weight=mask, reduction="none")
            return out.mean(dim=1)

    embed_size = 6
    net = nn.Sequential(nn.Embedding(num_embeddings=15, embedding_dim=embed_size),
                        nn.Embedding(num_embeddings=15, embedding_dim=embed_size))
    center = torch.tensor([[1], [4], [7]])
    context_negative = torch.tensor([[2, 3, 5, 0], [6, 9, 11, 13], [8, 1, 0, 0]])
    masks = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.float32)
    labels = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float32)
    optimizer = m.optim.Adam(net.parameters(), lr=0.01)
    w2v_losses = []
    lossfn = SigmoidBCELoss()
    for step in range(3):
        optimizer.zero_grad()
        pred = skip_gram(center, context_negative, net[0], net[1])
        l = (lossfn(pred.reshape(labels.shape).float(), labels.float(), masks) / masks.sum(axis=1) * masks.shape[1])
        l.sum().backward()
        optimizer.step()
        w2v_losses.append(l.sum().item())
    W = net[0].weight.data
    x = W[torch.tensor(3)]
    cos = torch.mv(W, x) / torch.sqrt(torch.sum(W * W, dim=1) * torch.sum(x * x) + 1e-9)
    topk = torch.topk(cos, k=4)[1].cpu().numpy().astype('int32')

    # textCNN
    class TextCNN(nn.Module):
        def __init__(self, vocab_size, embed_size, kernel_sizes, num_channels, **kwargs):
            super(TextCNN, self).__init__(**kwargs)
            self.embedding = nn.Embedding(vocab_size, embed_size)
            self.constant_embedding = nn.Embedding(vocab_size, embed_size)
            self.dropout = nn.Dropout(0.0)
            self.decoder = nn.Linear(sum(num_channels), 2)
            self.pool = nn.AdaptiveAvgPool1d(1)
            self.relu = nn.ReLU()
            self.convs = nn.ModuleList()
            for c, k in zip(num_channels, kernel_sizes):
                self.convs.append(nn.Conv1d(2 * embed_size, c, k))

        def forward(self, inputs):
            embeddings = torch.cat((self.embedding(inputs), self.constant_embedding(inputs)), dim=2)
            embeddings = embeddings.permute(0, 2, 1)
            encoding = torch.cat([torch.squeeze(self.relu(self.pool(conv(embeddings))), dim=-1)
                                  for conv in self.convs], dim=1)
            outputs = self.decoder(self.dropout(encoding))
            return outputs

    textcnn = TextCNN(15, 4, [2, 3, 4], [3, 3, 2])

    def init_weights(module):
        if type(module) in (nn.Linear, nn.Conv1d):
            nn.init.xavier_uniform_(module.weight)

    textcnn.apply(init_weights)
    textcnn.constant_embedding.weight.data.copy_(torch.arange(60, dtype=torch.float32).reshape(15, 4) / 60)
    textcnn.constant_embedding.weight.requires_grad = False
    tokens = torch.tensor([[1, 2, 3, 4, 5, 0, 0], [7, 8, 9, 10, 11, 12, 13]])
    trainer = m.optim.Adam(filter(lambda p: p.requires_grad, textcnn.parameters()), lr=0.01)
    tl = F.cross_entropy(textcnn(tokens), torch.tensor([0, 1]), reduction='none')
    trainer.zero_grad()
    tl.sum().backward()
    trainer.step()
    textcnn_out = textcnn(tokens)

    # FCN: a transposed convolution initialised by bilinear interpolation
    def bilinear_kernel(in_channels, out_channels, kernel_size):
        factor = (kernel_size + 1) // 2
        if kernel_size % 2 == 1:
            center = factor - 1
        else:
            center = factor - 0.5
        og = (torch.arange(kernel_size).reshape(-1, 1), torch.arange(kernel_size).reshape(1, -1))
        filt = (1 - torch.abs(og[0] - center) / factor) * (1 - torch.abs(og[1] - center) / factor)
        weight = torch.zeros((in_channels, out_channels, kernel_size, kernel_size))
        weight[range(in_channels), range(out_channels), :, :] = filt
        return weight

    conv_trans = nn.ConvTranspose2d(3, 3, kernel_size=4, padding=1, stride=2, bias=False)
    conv_trans.weight.data.copy_(bilinear_kernel(3, 3, 4))
    img = torch.arange(48, dtype=torch.float32).reshape(1, 3, 4, 4) / 48
    upsampled = conv_trans(img)
    upsampled.pow(2).sum().backward()

    # anchor boxes: IoU and assignment
    def box_area(boxes):
        return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def box_iou(boxes1, boxes2):
        areas1 = box_area(boxes1)
        areas2 = box_area(boxes2)
        inter_upperlefts = torch.max(boxes1[:, None, :2], boxes2[:, :2])
        inter_lowerrights = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
        inters = (inter_lowerrights - inter_upperlefts).clamp(min=0)
        inter_areas = inters[:, :, 0] * inters[:, :, 1]
        union_areas = areas1[:, None] + areas2 - inter_areas
        return inter_areas / union_areas

    def assign_anchor_to_bbox(ground_truth, anchors, device, iou_threshold=0.5):
        num_anchors, num_gt_boxes = anchors.shape[0], ground_truth.shape[0]
        jaccard = box_iou(anchors, ground_truth)
        anchors_bbox_map = torch.full((num_anchors,), -1, dtype=torch.long, device=device)
        max_ious, indices = torch.max(jaccard, dim=1)
        anc_i = torch.nonzero(max_ious >= iou_threshold).reshape(-1)
        box_j = indices[max_ious >= iou_threshold]
        anchors_bbox_map[anc_i] = box_j
        col_discard = torch.full((num_anchors,), -1)
        row_discard = torch.full((num_gt_boxes,), -1)
        for _ in range(num_gt_boxes):
            max_idx = torch.argmax(jaccard)
            box_idx = (max_idx % num_gt_boxes).long()
            anc_idx = (max_idx / num_gt_boxes).long()
            anchors_bbox_map[anc_idx] = box_idx
            jaccard[:, box_idx] = col_discard
            jaccard[anc_idx, :] = row_discard
        return anchors_bbox_map

    ground_truth = torch.tensor([[0, 0.1, 0.08, 0.52, 0.92], [1, 0.55, 0.2, 0.9, 0.88]])
    anchors = torch.tensor([[0, 0.1, 0.2, 0.3], [0.15, 0.2, 0.4, 0.4], [0.63, 0.05, 0.88, 0.98],
                            [0.66, 0.45, 0.8, 0.8], [0.57, 0.3, 0.92, 0.9]])
    iou = box_iou(anchors, ground_truth[:, 1:])
    assignment = assign_anchor_to_bbox(ground_truth[:, 1:], anchors, None)
    return dict(mlm_Y_hat=mlm_Y_hat, mlm_l=mlm_l, X_grad=encoded_X.grad, w2v=w2v_losses, topk=topk,
                textcnn=textcnn_out, const=textcnn.constant_embedding.weight, upsampled=upsampled,
                ct_grad=conv_trans.weight.grad, iou=iou, assignment=assignment)


def test_nlp_and_vision():
    ours, _ = run_both(nlp_and_vision, rtol=1e-4, atol=1e-5)
    assert (ours["X_grad"][0, [0, 3, 4, 6, 7]] == 0).all()
    np.testing.assert_array_equal(ours["assignment"], [-1, 0, 1, -1, 1])
    np.testing.assert_allclose(ours["const"], np.arange(60).reshape(15, 4) / 60, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# preliminaries and the MLP chapter: tensor idioms, activations' gradients, numerical stability
# ----------------------------------------------------------------------------------------------


def preliminaries(m):
    torch, nn = m.torch, m.nn
    x = torch.arange(12, dtype=torch.float32)
    X = x.reshape(3, 4)
    Y = torch.tensor([[2.0, 1, 4, 3], [1, 2, 3, 4], [4, 3, 2, 1]])
    cat0, cat1 = torch.cat((X, Y), dim=0), torch.cat((X, Y), dim=1)
    eq = X == Y
    X[1, 2] = 17
    X[:2, :] = 12
    Z = torch.zeros_like(Y)
    Z[:] = X + Y
    before = id(X)
    X += Y
    same_id = id(X) == before
    a = torch.tensor([3.5])
    scalars = (a.item(), float(a), int(a))
    A = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    B = A.clone()
    sums = (A.sum(axis=0), A.sum(axis=1), A.sum(axis=[0, 1]), A.mean(axis=0), A.sum() / A.numel(),
            A.sum(axis=1, keepdims=True), A / A.sum(axis=1, keepdims=True), A.cumsum(axis=0), A * B)
    Xi = torch.arange(24).reshape(2, 3, 4)
    ints = (2 + Xi, (2 * Xi).shape, Xi.sum(), Xi.float().mean())
    xv = torch.arange(3, dtype=torch.float32)
    yv = torch.ones(3, dtype=torch.float32)
    lin = (torch.dot(xv, yv), torch.sum(xv * yv), torch.mv(A, xv), A @ xv, torch.mm(A, torch.ones(3, 4)),
           torch.norm(torch.tensor([3.0, -4.0])), torch.abs(torch.tensor([3.0, -4.0])).sum(),
           torch.norm(torch.ones((4, 9))))
    an = torch.arange(-8.0, 8.0, 0.1, requires_grad=True)
    acts = {}
    for name, fn in (('relu', torch.relu), ('sigmoid', torch.sigmoid), ('tanh', torch.tanh)):
        yact = fn(an)
        yact.backward(torch.ones_like(an), retain_graph=True)
        acts[name] = (yact, an.grad.clone())
        an.grad.data.zero_()
    torch.manual_seed(0)
    M = torch.normal(0, 1, size=(4, 4))
    for i in range(20):
        M = M @ torch.normal(0, 1, size=(4, 4))
    # accuracy as d2l's Classifier computes it
    Y_hat = torch.tensor([[0.1, 0.3, 0.6], [0.3, 0.2, 0.5], [0.9, 0.05, 0.05]])
    yl = torch.tensor([2, 1, 0])
    preds = Y_hat.argmax(axis=1).type(yl.dtype)
    compare = (preds == yl.reshape(-1)).type(torch.float32)
    # softmax from scratch's numerically naive form, and its cross-entropy by fancy indexing
    X_exp = torch.exp(Y_hat)
    partition = X_exp.sum(1, keepdims=True)
    sm = X_exp / partition
    ce = -torch.log(sm[list(range(len(sm))), yl]).mean()
    return dict(cat0=cat0, cat1=cat1, eq=eq, X=X, Z=Z, same_id=same_id, scalars=scalars, sums=list(sums),
                ints=[ints[0], tuple(ints[1]), ints[2], ints[3]], lin=list(lin), an=an, acts=acts,
                M=M, acc=compare.mean(), ce=ce, dtype=str(preds.dtype).split('.')[-1])


def test_preliminaries():
    ours, _ = run_both(preliminaries, rtol=1e-5, atol=1e-6)
    assert ours["same_id"] and ours["scalars"] == (3.5, 3.5, 3)
    assert ours["an"].shape == (160,)
    np.testing.assert_allclose(ours["ce"], -np.mean(np.log(
        np.exp([0.6, 0.2, 0.9]) / np.exp([[0.1, 0.3, 0.6], [0.3, 0.2, 0.5], [0.9, 0.05, 0.05]]).sum(1))), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# builders' guide, nested: add_module with spaced names, a custom Sequential, FixedHiddenMLP,
# ResNeXt's grouped convolutions, ViT's patch embedding, a transformer decoder's causal valid_lens
# ----------------------------------------------------------------------------------------------


def nested_blocks(m):
    torch, nn, F = m.torch, m.nn, m.F

    def block1():
        return nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(4), nn.ReLU())

    def block2():
        net = nn.Sequential()
        for i in range(4):
            net.add_module(f'block {i}', block1())
        return net

    class MySequential(nn.Module):
        def __init__(self, *args):
            super().__init__()
            for idx, module in enumerate(args):
                self.add_module(str(idx), module)

        def forward(self, X):
            for module in self.children():
                X = module(X)
            return X

    class FixedHiddenMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.rand_weight = torch.rand((20, 20))
            self.linear = nn.LazyLinear(20)

        def forward(self, X):
            X = self.linear(X)
            X = F.relu(X @ self.rand_weight + 1)
            X = self.linear(X)
            while X.abs().sum() > 1:
                X /= 2
            return X.sum()

    torch.manual_seed(0)
    X = torch.rand(size=(2, 4))
    rgnet = nn.Sequential(block2(), nn.LazyLinear(1))
    rgnet(X)
    names = [name for name, _ in rgnet.named_parameters()][:4]
    b = rgnet[0][1][0].bias.data
    chimera = nn.Sequential(MySequential(nn.LazyLinear(20), nn.ReLU()), nn.LazyLinear(20), FixedHiddenMLP())
    chimera(torch.rand(2, 20))

    def init_constant(module):
        if type(module) == nn.Linear:
            nn.init.constant_(module.weight, 1)
            nn.init.zeros_(module.bias)

    def init_xavier(module):
        if type(module) == nn.Linear:
            nn.init.xavier_uniform_(module.weight)

    chimera.apply(init_xavier)
    chimera[1].apply(init_constant)
    Xc = torch.tensor(np.random.default_rng(0).standard_normal((2, 20)).astype(np.float32))
    with torch.no_grad():
        chimera[2].rand_weight.copy_(torch.tensor(np.random.default_rng(1).random((20, 20)).astype(np.float32)))
        for p in chimera.parameters():
            p.copy_(torch.tensor(np.random.default_rng(p.numel()).normal(0, 0.2, tuple(p.shape)).astype(np.float32)))
    out = chimera(Xc)
    out.backward()

    class ResNeXtBlock(nn.Module):
        def __init__(self, num_channels, groups, bot_mul, use_1x1conv=False, strides=1):
            super().__init__()
            bot_channels = int(round(num_channels * bot_mul))
            self.conv1 = nn.LazyConv2d(bot_channels, kernel_size=1, stride=1)
            self.conv2 = nn.LazyConv2d(bot_channels, kernel_size=3, stride=strides, padding=1,
                                       groups=bot_channels // groups)
            self.conv3 = nn.LazyConv2d(num_channels, kernel_size=1, stride=1)
            self.bn1 = nn.LazyBatchNorm2d()
            self.bn2 = nn.LazyBatchNorm2d()
            self.bn3 = nn.LazyBatchNorm2d()
            if use_1x1conv:
                self.conv4 = nn.LazyConv2d(num_channels, kernel_size=1, stride=strides)
                self.bn4 = nn.LazyBatchNorm2d()
            else:
                self.conv4 = None

        def forward(self, X):
            Y = F.relu(self.bn1(self.conv1(X)))
            Y = F.relu(self.bn2(self.conv2(Y)))
            Y = self.bn3(self.conv3(Y))
            if self.conv4:
                X = self.bn4(self.conv4(X))
            return F.relu(Y + X)

    class PatchEmbedding(nn.Module):
        def __init__(self, img_size=8, patch_size=4, num_hiddens=12):
            super().__init__()
            self.num_patches = (img_size // patch_size) ** 2
            self.conv = nn.LazyConv2d(num_hiddens, kernel_size=patch_size, stride=patch_size)

        def forward(self, X):
            return self.conv(X).flatten(2).transpose(1, 2)

    class ViTish(nn.Module):
        def __init__(self, num_hiddens=12, num_classes=3):
            super().__init__()
            self.block = ResNeXtBlock(6, 2, 1, use_1x1conv=True, strides=1)
            self.patch_embedding = PatchEmbedding(8, 4, num_hiddens)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, num_hiddens))
            num_steps = self.patch_embedding.num_patches + 1
            self.pos_embedding = nn.Parameter(torch.randn(1, num_steps, num_hiddens))
            self.attn = nn.MultiheadAttention(num_hiddens, 3, batch_first=True)
            self.head = nn.Sequential(nn.LayerNorm(num_hiddens), nn.Linear(num_hiddens, num_classes))
            self.mlp = nn.Sequential(nn.LazyLinear(24), nn.GELU(), nn.LazyLinear(num_hiddens))

        def forward(self, X, dec_valid_lens):
            X = self.patch_embedding(self.block(X))
            X = torch.cat((self.cls_token.expand(X.shape[0], -1, -1), X), 1)
            X = X + self.pos_embedding
            # the decoder's causal valid_lens, as a mask
            mask = torch.arange(X.shape[1])[None, :] >= dec_valid_lens[:, None]
            X = X + self.attn(X, X, X, attn_mask=mask, need_weights=False)[0]
            X = X + self.mlp(X)
            return self.head(X[:, 0])

    torch.manual_seed(0)
    vit = ViTish()
    imgs = torch.tensor(np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32))
    num_steps = 5
    dec_valid_lens = torch.arange(1, num_steps + 1).repeat(1, 1).reshape(-1)
    vit(imgs, dec_valid_lens)
    with torch.no_grad():
        for p in vit.parameters():
            p.copy_(torch.tensor(np.random.default_rng(p.numel() + 1).normal(0, 0.3, tuple(p.shape)).astype(np.float32)))
    opt = m.optim.SGD(vit.parameters(), 0.1)
    vit_losses = []
    for step in range(3):
        l = F.cross_entropy(vit(imgs, dec_valid_lens), torch.tensor([0, 2]))
        opt.zero_grad()
        l.backward()
        nn.utils.clip_grad_norm_(vit.parameters(), 1.0)
        opt.step()
        vit_losses.append(l.item())
    return dict(names=names, b=b, out=out, grads=[p.grad for p in chimera.parameters()], vit=vit_losses,
                vit_grads={n: p.grad for n, p in vit.named_parameters()}, repeated=torch.arange(1, 4).repeat(2, 1))


def test_nested_blocks():
    ours, _ = run_both(nested_blocks, rtol=1e-4, atol=1e-5)
    assert ours["names"][0] == "0.block 0.0.weight"


# ----------------------------------------------------------------------------------------------
# d2l's Module / DataModule / Trainer in small form, everything drawn from the seed: synthetic data
# by torch.randn, a shuffled TensorDataset loader, lazy default inits, dropout masks, multinomial draws
# ----------------------------------------------------------------------------------------------


def seeded_trainer(m):
    torch, nn, F = m.torch, m.nn, m.F
    data = m.data

    class HyperParameters:
        def save_hyperparameters(self, ignore=[]):
            import inspect
            frame = inspect.currentframe().f_back
            _, _, _, local_vars = inspect.getargvalues(frame)
            self.hparams = {k: v for k, v in local_vars.items() if k not in set(ignore + ['self']) and not k.startswith('_')}
            for k, v in self.hparams.items():
                setattr(self, k, v)

    class Module(nn.Module, HyperParameters):
        def __init__(self):
            super().__init__()

        def loss(self, y_hat, y):
            raise NotImplementedError

        def forward(self, X):
            return self.net(X)

        def training_step(self, batch):
            return self.loss(self(*batch[:-1]), batch[-1])

        def validation_step(self, batch):
            return self.loss(self(*batch[:-1]), batch[-1])

        def configure_optimizers(self):
            return m.optim.SGD(self.parameters(), lr=self.lr)

    class DataModule(HyperParameters):
        def __init__(self, num_workers=0):
            self.save_hyperparameters()

        def get_tensorloader(self, tensors, train, indices=slice(0, None)):
            tensors = tuple(a[indices] for a in tensors)
            dataset = data.TensorDataset(*tensors)
            return data.DataLoader(dataset, self.batch_size, shuffle=train)

        def train_dataloader(self):
            return self.get_tensorloader((self.X, self.y), True, slice(0, self.num_train))

        def val_dataloader(self):
            return self.get_tensorloader((self.X, self.y), False, slice(self.num_train, None))

    class SyntheticRegressionData(DataModule):
        def __init__(self, w, b, noise=0.01, num_train=64, num_val=32, batch_size=16):
            super().__init__()
            self.save_hyperparameters()
            n = num_train + num_val
            self.X = torch.randn(n, len(w))
            noise = torch.randn(n, 1) * noise
            self.y = torch.matmul(self.X, w.reshape((-1, 1))) + b + noise

    class Trainer(HyperParameters):
        def __init__(self, max_epochs, gradient_clip_val=0):
            self.save_hyperparameters()

        def fit(self, model, data):
            self.train_dataloader = data.train_dataloader()
            self.val_dataloader = data.val_dataloader()
            self.model = model
            self.optim = model.configure_optimizers()
            self.epoch = 0
            self.train_batch_idx = 0
            self.val_batch_idx = 0
            self.losses, self.val_losses = [], []
            for self.epoch in range(self.max_epochs):
                self.fit_epoch()

        def fit_epoch(self):
            self.model.train()
            for batch in self.train_dataloader:
                loss = self.model.training_step(batch)
                self.optim.zero_grad()
                with torch.no_grad():  # as the book: backward runs under no_grad, the step writes leaves
                    loss.backward()
                    if self.gradient_clip_val > 0:
                        self.clip_gradients(self.gradient_clip_val, self.model)
                    self.optim.step()
                self.train_batch_idx += 1
                self.losses.append(loss.item())
            self.model.eval()
            for batch in self.val_dataloader:
                with torch.no_grad():
                    self.val_losses.append(self.model.validation_step(batch).item())
                self.val_batch_idx += 1

        def clip_gradients(self, grad_clip_val, model):
            params = [p for p in model.parameters() if p.requires_grad]
            norm = torch.sqrt(sum(torch.sum((p.grad ** 2)) for p in params))
            if norm > grad_clip_val:
                for param in params:
                    param.grad[:] *= grad_clip_val / norm

    class LinearRegressionScratch(Module):
        def __init__(self, num_inputs, lr, sigma=0.01):
            super().__init__()
            self.save_hyperparameters()
            self.w = torch.normal(0, sigma, (num_inputs, 1), requires_grad=True)
            self.b = torch.zeros(1, requires_grad=True)

        def forward(self, X):
            return torch.matmul(X, self.w) + self.b

        def loss(self, y_hat, y):
            l = (y_hat - y) ** 2 / 2
            return l.mean()

        def configure_optimizers(self):
            return SGD([self.w, self.b], self.lr)

    class SGD(HyperParameters):
        def __init__(self, params, lr):
            self.save_hyperparameters()

        def step(self):
            for param in self.params:
                param -= self.lr * param.grad

        def zero_grad(self):
            for param in self.params:
                if param.grad is not None:
                    param.grad.zero_()

    class DropoutMLP(Module):
        def __init__(self, num_outputs, num_hiddens_1, num_hiddens_2, dropout_1, dropout_2, lr):
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(
                nn.Flatten(), nn.LazyLinear(num_hiddens_1), nn.ReLU(), nn.Dropout(dropout_1),
                nn.LazyLinear(num_hiddens_2), nn.ReLU(), nn.Dropout(dropout_2), nn.LazyLinear(num_outputs))

        def loss(self, y_hat, y):
            return F.mse_loss(y_hat, y)

    torch.manual_seed(0)
    d = SyntheticRegressionData(w=torch.tensor([2, -3.4]), b=4.2)
    scratch = LinearRegressionScratch(2, lr=0.2)
    trainer = Trainer(max_epochs=3)
    trainer.fit(scratch, d)
    scratch_result = (trainer.losses, trainer.val_losses, scratch.w.detach(), scratch.b.detach())
    mlp = DropoutMLP(1, 8, 8, 0.5, 0.2, lr=0.05)
    mlp(d.X[:2])
    trainer = Trainer(max_epochs=2, gradient_clip_val=1)
    trainer.fit(mlp, d)
    mlp_result = (trainer.losses, trainer.val_losses, [p.detach() for p in mlp.parameters()])
    # the probability chapter's multinomial draws
    fair_probs = torch.ones([6]) / 6
    one = torch.distributions.multinomial.Multinomial(1, fair_probs).sample()
    counts = torch.distributions.multinomial.Multinomial(10, fair_probs).sample((50,))
    cum_counts = counts.cumsum(dim=0)
    estimates = cum_counts / cum_counts.sum(dim=1, keepdims=True)
    return dict(scratch=scratch_result, mlp=mlp_result, X=d.X, y=d.y, one=one, estimates=estimates)


def test_seeded_trainer():
    ours, _ = run_both(seeded_trainer, rtol=1e-5, atol=1e-6)
    w = ours["scratch"][2]
    np.testing.assert_allclose(w.ravel(), [2, -3.4], atol=0.5)
    assert ours["one"].sum() == 1 and ours["estimates"].shape == (50, 6)


# ----------------------------------------------------------------------------------------------
# the transformer decoder: 2-D causal valid_lens in training, a growing key-value cache in prediction
# ----------------------------------------------------------------------------------------------


def transformer_decoder(m):
    torch, nn, F = m.torch, m.nn, m.F

    def masked_softmax(X, valid_lens):
        def _sequence_mask(X, valid_len, value=0):
            maxlen = X.size(1)
            mask = torch.arange((maxlen), dtype=torch.float32, device=X.device)[None, :] < valid_len[:, None]
            X[~mask] = value
            return X

        if valid_lens is None:
            return nn.functional.softmax(X, dim=-1)
        shape = X.shape
        if valid_lens.dim() == 1:
            valid_lens = torch.repeat_interleave(valid_lens, shape[1])
        else:
            valid_lens = valid_lens.reshape(-1)
        X = _sequence_mask(X.reshape(-1, shape[-1]), valid_lens, value=-1e6)
        return nn.functional.softmax(X.reshape(shape), dim=-1)

    class DotProductAttention(nn.Module):
        def __init__(self, dropout):
            super().__init__()
            self.dropout = nn.Dropout(dropout)

        def forward(self, queries, keys, values, valid_lens=None):
            d = queries.shape[-1]
            scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(d)
            self.attention_weights = masked_softmax(scores, valid_lens)
            return torch.bmm(self.dropout(self.attention_weights), values)

    class MultiHeadAttention(nn.Module):
        def __init__(self, num_hiddens, num_heads, dropout, bias=False):
            super().__init__()
            self.num_heads = num_heads
            self.attention = DotProductAttention(dropout)
            self.W_q = nn.LazyLinear(num_hiddens, bias=bias)
            self.W_k = nn.LazyLinear(num_hiddens, bias=bias)
            self.W_v = nn.LazyLinear(num_hiddens, bias=bias)
            self.W_o = nn.LazyLinear(num_hiddens, bias=bias)

        def transpose_qkv(self, X):
            X = X.reshape(X.shape[0], X.shape[1], self.num_heads, -1)
            X = X.permute(0, 2, 1, 3)
            return X.reshape(-1, X.shape[2], X.shape[3])

        def transpose_output(self, X):
            X = X.reshape(-1, self.num_heads, X.shape[1], X.shape[2])
            X = X.permute(0, 2, 1, 3)
            return X.reshape(X.shape[0], X.shape[1], -1)

        def forward(self, queries, keys, values, valid_lens):
            queries = self.transpose_qkv(self.W_q(queries))
            keys = self.transpose_qkv(self.W_k(keys))
            values = self.transpose_qkv(self.W_v(values))
            if valid_lens is not None:
                valid_lens = torch.repeat_interleave(valid_lens, repeats=self.num_heads, dim=0)
            output = self.attention(queries, keys, values, valid_lens)
            return self.W_o(self.transpose_output(output))

    class AddNorm(nn.Module):
        def __init__(self, norm_shape, dropout):
            super().__init__()
            self.dropout = nn.Dropout(dropout)
            self.ln = nn.LayerNorm(norm_shape)

        def forward(self, X, Y):
            return self.ln(self.dropout(Y) + X)

    class TransformerDecoderBlock(nn.Module):
        def __init__(self, num_hiddens, ffn_num_hiddens, num_heads, dropout, i):
            super().__init__()
            self.i = i
            self.attention1 = MultiHeadAttention(num_hiddens, num_heads, dropout)
            self.addnorm1 = AddNorm(num_hiddens, dropout)
            self.attention2 = MultiHeadAttention(num_hiddens, num_heads, dropout)
            self.addnorm2 = AddNorm(num_hiddens, dropout)
            self.ffn = nn.Sequential(nn.LazyLinear(ffn_num_hiddens), nn.ReLU(), nn.LazyLinear(num_hiddens))
            self.addnorm3 = AddNorm(num_hiddens, dropout)

        def forward(self, X, state):
            enc_outputs, enc_valid_lens = state[0], state[1]
            if state[2][self.i] is None:
                key_values = X
            else:
                key_values = torch.cat((state[2][self.i], X), dim=1)
            state[2][self.i] = key_values
            if self.training:
                batch_size, num_steps, _ = X.shape
                dec_valid_lens = torch.arange(1, num_steps + 1, device=X.device).repeat(batch_size, 1)
            else:
                dec_valid_lens = None
            X2 = self.attention1(X, key_values, key_values, dec_valid_lens)
            Y = self.addnorm1(X, X2)
            Y2 = self.attention2(Y, enc_outputs, enc_outputs, enc_valid_lens)
            Z = self.addnorm2(Y, Y2)
            return self.addnorm3(Z, self.ffn(Z)), state

    class Decoder(nn.Module):
        def __init__(self, vocab_size, num_hiddens, num_blks):
            super().__init__()
            self.num_hiddens, self.num_blks = num_hiddens, num_blks
            self.embedding = nn.Embedding(vocab_size, num_hiddens)
            self.blks = nn.Sequential()
            for i in range(num_blks):
                self.blks.add_module("block" + str(i), TransformerDecoderBlock(num_hiddens, 16, 2, 0.0, i))
            self.dense = nn.LazyLinear(vocab_size)

        def init_state(self, enc_outputs, enc_valid_lens):
            return [enc_outputs, enc_valid_lens, [None] * self.num_blks]

        def forward(self, X, state):
            X = self.embedding(X) * math.sqrt(self.num_hiddens)
            for blk in self.blks:
                X, state = blk(X, state)
            return self.dense(X), state

    vocab, num_hiddens = 9, 8
    rng = np.random.default_rng(0)
    enc_outputs = torch.tensor(rng.standard_normal((2, 5, num_hiddens)).astype(np.float32))
    enc_valid_lens = torch.tensor([3, 5])
    tgt = torch.tensor(rng.integers(0, vocab, (2, 6)))
    torch.manual_seed(0)
    dec = Decoder(vocab, num_hiddens, 2)
    dec(tgt[:, :-1], dec.init_state(enc_outputs, enc_valid_lens))
    with torch.no_grad():
        for p in dec.parameters():
            p.copy_(torch.tensor(np.random.default_rng(p.numel() + 2).normal(0, 0.3, tuple(p.shape)).astype(np.float32)))
    opt = m.optim.Adam(dec.parameters(), lr=0.01)
    losses = []
    for step in range(3):
        Y_hat, _ = dec(tgt[:, :-1], dec.init_state(enc_outputs, enc_valid_lens))
        l = F.cross_entropy(Y_hat.reshape(-1, vocab), tgt[:, 1:].reshape(-1))
        opt.zero_grad()
        l.backward()
        opt.step()
        losses.append(l.item())
    dec.eval()
    with torch.no_grad():
        full, _ = dec(tgt[:, :-1], dec.init_state(enc_outputs, enc_valid_lens))
        state = dec.init_state(enc_outputs, enc_valid_lens)
        steps = []
        for t in range(5):
            Y, state = dec(tgt[:, t:t + 1], state)
            steps.append(Y)
        incremental = torch.cat(steps, 1)
    return dict(losses=losses, full=full, incremental=incremental, cache=state[2][1].shape[1],
                weights=dec.blks[0].attention1.attention.attention_weights)


def test_transformer_decoder():
    ours, _ = run_both(transformer_decoder, rtol=1e-4, atol=1e-5)
    assert ours["cache"] == 5
    # the last prediction step attends over all 5 cached keys, per head (the cache holds each block's inputs
    # computed from the prefix, so it is not the unmasked full pass: both libraries are compared above)
    np.testing.assert_allclose(ours["weights"].shape, (4, 1, 5))
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# GANs: the book's 2-D Gaussian GAN and a small DCGAN, everything from the seed
# ----------------------------------------------------------------------------------------------


def gans(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    X = torch.normal(0.0, 1, (64, 2))
    A = torch.tensor([[1, 2], [-0.1, 0.5]])
    b = torch.tensor([1, 2])
    data = torch.matmul(X, A) + b

    def update_D(X, Z, net_D, net_G, loss, trainer_D):
        batch_size = X.shape[0]
        ones = torch.ones((batch_size,), device=X.device)
        zeros = torch.zeros((batch_size,), device=X.device)
        trainer_D.zero_grad()
        real_Y = net_D(X)
        fake_X = net_G(Z)
        fake_Y = net_D(fake_X.detach())
        loss_D = (loss(real_Y, ones.reshape(real_Y.shape)) + loss(fake_Y, zeros.reshape(fake_Y.shape))) / 2
        loss_D.backward()
        trainer_D.step()
        return loss_D

    def update_G(Z, net_D, net_G, loss, trainer_G):
        batch_size = Z.shape[0]
        ones = torch.ones((batch_size,), device=Z.device)
        trainer_G.zero_grad()
        fake_X = net_G(Z)
        fake_Y = net_D(fake_X)
        loss_G = loss(fake_Y, ones.reshape(fake_Y.shape))
        loss_G.backward()
        trainer_G.step()
        return loss_G

    def train(net_D, net_G, batches, num_epochs, lr_D, lr_G, latent_dim):
        loss = nn.BCEWithLogitsLoss(reduction='sum')
        for w in net_D.parameters():
            nn.init.normal_(w, 0, 0.02)
        for w in net_G.parameters():
            nn.init.normal_(w, 0, 0.02)
        trainer_D = m.optim.Adam(net_D.parameters(), lr=lr_D, betas=(0.5, 0.999))
        trainer_G = m.optim.Adam(net_G.parameters(), lr=lr_G, betas=(0.5, 0.999))
        history = []
        for epoch in range(num_epochs):
            for X in batches:
                batch_size = X.shape[0]
                Z = torch.normal(0, 1, size=(batch_size, latent_dim))
                history.append((update_D(X, Z, net_D, net_G, loss, trainer_D).item(),
                                update_G(Z, net_D, net_G, loss, trainer_G).item()))
        return history

    net_G = nn.Sequential(nn.Linear(2, 2))
    net_D = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 1))
    batches = [data[i:i + 16] for i in range(0, 64, 16)]
    simple = train(net_D, net_G, batches, 2, 0.05, 0.005, 2)

    class G_block(nn.Module):
        def __init__(self, out_channels, in_channels=3, kernel_size=4, strides=2, padding=1, **kwargs):
            super(G_block, self).__init__(**kwargs)
            self.conv2d_trans = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, strides, padding, bias=False)
            self.batch_norm = nn.BatchNorm2d(out_channels)
            self.activation = nn.ReLU()

        def forward(self, X):
            return self.activation(self.batch_norm(self.conv2d_trans(X)))

    class D_block(nn.Module):
        def __init__(self, out_channels, in_channels=3, kernel_size=4, strides=2, padding=1, alpha=0.2, **kwargs):
            super(D_block, self).__init__(**kwargs)
            self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, strides, padding, bias=False)
            self.batch_norm = nn.BatchNorm2d(out_channels)
            self.activation = nn.LeakyReLU(alpha, inplace=True)

        def forward(self, X):
            return self.activation(self.batch_norm(self.conv2d(X)))

    n_G, n_D, latent = 8, 8, 10
    dc_G = nn.Sequential(
        G_block(in_channels=latent, out_channels=n_G * 2, strides=1, padding=0),  # 4x4
        G_block(in_channels=n_G * 2, out_channels=n_G),  # 8x8
        nn.ConvTranspose2d(in_channels=n_G, out_channels=3, kernel_size=4, stride=2, padding=1, bias=False),
        nn.Tanh())  # 16x16
    dc_D = nn.Sequential(
        D_block(n_D), D_block(in_channels=n_D, out_channels=n_D * 2),
        nn.Conv2d(in_channels=n_D * 2, out_channels=1, kernel_size=4, bias=False))
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    dc_batches = [images[:4], images[4:]]
    loss = nn.BCEWithLogitsLoss(reduction='sum')
    trainer_D = m.optim.Adam(dc_D.parameters(), lr=0.005, betas=(0.5, 0.999))
    trainer_G = m.optim.Adam(dc_G.parameters(), lr=0.005, betas=(0.5, 0.999))
    dc = []
    for Xb in dc_batches:
        Z = torch.normal(0, 1, size=(Xb.shape[0], latent, 1, 1))
        dc.append((update_D(Xb, Z, dc_D, dc_G, loss, trainer_D).item(), update_G(Z, dc_D, dc_G, loss, trainer_G).item()))
    with torch.no_grad():
        fake = dc_G(torch.normal(0, 1, size=(2, latent, 1, 1)))
    return dict(simple=simple, G=net_G[0].weight, dc=dc, fake=fake, running=dc_G[0].batch_norm.running_var)


def test_gans():
    ours, _ = run_both(gans, rtol=1e-4, atol=1e-5)
    assert ours["fake"].shape == (2, 3, 16, 16)
    # weights drawn from N(0, 0.02) give logits near 0: the discriminator's first loss is about 16 ln 2
    np.testing.assert_allclose(ours["simple"][0][0], 16 * math.log(2), rtol=0.05)
