# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""Classic NLP programs (see tests/pytorch_programs.py) not already among the program tests, run on chainrule and on
PyTorch from the same weights and data, comparing losses, gradients, decoded outputs and short training trajectories;
dropout-on variants are compared where PyTorch draws its Bernoulli masks as chainrule does (AMD processors), and run
for finite values elsewhere. fairseq's ConvS2S (weight-normed ``conv_tbc``, GLU, GradMultiply, multi-step attention)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# fairseq's convolutional seq2seq (ConvS2S, Gehring et al. 2017; fairseq/models/fconv.py): weight-normed
# Linear and ConvTBC layers (``torch.conv_tbc``, ``nn.utils.weight_norm(m, dim=2)``), learnt positions by
# ``make_positions`` (cumsum of the non-padding mask), GLU over channels, residuals scaled by sqrt(0.5),
# GradMultiply (a custom Function that returns ``x.new(x)``), multi-step attention with the padding
# excluded from its length scaling (``s * s.rsqrt()``), linearised causal convolutions in the decoder,
# fairseq's label-smoothed NLL, Nesterov SGD, gradient clipping, and greedy decoding
# ----------------------------------------------------------------------------------------------

FC_PAD, FC_EOS, FC_VOCAB = 1, 2, 11
FC_SRC = [[4, 5, 6, 7, 2], [8, 9, 10, 2, 1], [5, 5, 2, 1, 1]]
FC_TGT = [[6, 7, 4, 2], [10, 8, 2, 1], [9, 2, 1, 1]]


def fconv(m, embed_dim=8, enc_convs=((8, 3),) * 2 + ((6, 2),), dec_convs=((8, 3), (8, 3)), out_embed_dim=6,
          dropout=0.0):
    torch, nn, F = m.torch, m.nn, m.F
    import importlib
    _single = importlib.import_module(nn.__name__ + ".modules.utils")._single

    class GradMultiply(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, scale):
            ctx.scale = scale
            res = x.new(x)
            return res

        @staticmethod
        def backward(ctx, grad):
            return grad * ctx.scale, None

    def make_positions(tensor, padding_idx: int):
        mask = tensor.ne(padding_idx).int()
        return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + padding_idx

    class LearnedPositionalEmbedding(nn.Embedding):
        def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int):
            super().__init__(num_embeddings, embedding_dim, padding_idx)

        def forward(self, input):
            positions = make_positions(input, self.padding_idx)
            return F.embedding(positions, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                               self.scale_grad_by_freq, self.sparse)

    def Embedding(num_embeddings, embedding_dim, padding_idx):
        m = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
        nn.init.normal_(m.weight, 0, 0.1)
        nn.init.constant_(m.weight[padding_idx], 0)
        return m

    def PositionalEmbedding(num_embeddings, embedding_dim, padding_idx):
        m = LearnedPositionalEmbedding(num_embeddings + padding_idx + 1, embedding_dim, padding_idx)
        nn.init.normal_(m.weight, 0, 0.1)
        nn.init.constant_(m.weight[padding_idx], 0)
        return m

    def Linear(in_features, out_features, dropout=0.0):
        """Weight-normalized Linear layer (input: N x T x C)"""
        m = nn.Linear(in_features, out_features)
        nn.init.normal_(m.weight, mean=0, std=math.sqrt((1 - dropout) / in_features))
        nn.init.constant_(m.bias, 0)
        return nn.utils.weight_norm(m)

    class ConvTBC(nn.Module):
        """1D convolution over an input of shape (time x batch x channel)"""

        def __init__(self, in_channels, out_channels, kernel_size, padding=0):
            super(ConvTBC, self).__init__()
            self.in_channels = in_channels
            self.out_channels = out_channels
            self.kernel_size = _single(kernel_size)
            self.padding = _single(padding)
            self.weight = nn.Parameter(torch.Tensor(self.kernel_size[0], in_channels, out_channels))
            self.bias = nn.Parameter(torch.Tensor(out_channels))
            self.reset_parameters()

        def reset_parameters(self):
            nn.init.xavier_normal_(self.weight)
            nn.init.zeros_(self.bias)

        def conv_tbc(self, input):
            return torch.conv_tbc(input.contiguous(), self.weight, self.bias, self.padding[0])

        def forward(self, input):
            return self.conv_tbc(input)

    class LinearizedConvolution(ConvTBC):
        """An optimized version of nn.Conv1d; at training time only the past is seen."""

        def forward(self, input, incremental_state=None):
            output = self.conv_tbc(input)
            if self.kernel_size[0] > 1 and self.padding[0] > 0:
                # remove future timesteps added by padding
                output = output[: -self.padding[0], :, :]
            return output

    def ConvTBCLayer(in_channels, out_channels, kernel_size, dropout=0.0, **kwargs):
        """Weight-normalized Conv1d layer"""
        m = ConvTBC(in_channels, out_channels, kernel_size, **kwargs)
        std = math.sqrt((4 * (1.0 - dropout)) / (m.kernel_size[0] * in_channels))
        nn.init.normal_(m.weight, mean=0, std=std)
        nn.init.constant_(m.bias, 0)
        return nn.utils.weight_norm(m, dim=2)

    def LinearizedConv1d(in_channels, out_channels, kernel_size, dropout=0.0, **kwargs):
        """Weight-normalized Conv1d layer optimized for decoding"""
        m = LinearizedConvolution(in_channels, out_channels, kernel_size, **kwargs)
        std = math.sqrt((4 * (1.0 - dropout)) / (m.kernel_size[0] * in_channels))
        nn.init.normal_(m.weight, mean=0, std=std)
        nn.init.constant_(m.bias, 0)
        return nn.utils.weight_norm(m, dim=2)

    def extend_conv_spec(convolutions):
        extended = []
        for spec in convolutions:
            if len(spec) == 3:
                extended.append(spec)
            elif len(spec) == 2:
                extended.append(spec + (1,))
        return tuple(extended)

    class FConvEncoder(nn.Module):
        def __init__(self, num_embeddings, embed_dim, max_positions, convolutions, dropout):
            super().__init__()
            self.dropout_module = nn.Dropout(dropout)
            self.num_attention_layers = None
            self.padding_idx = FC_PAD
            self.embed_tokens = Embedding(num_embeddings, embed_dim, self.padding_idx)
            self.embed_positions = PositionalEmbedding(max_positions, embed_dim, self.padding_idx)
            convolutions = extend_conv_spec(convolutions)
            in_channels = convolutions[0][0]
            self.fc1 = Linear(embed_dim, in_channels, dropout=dropout)
            self.projections = nn.ModuleList()
            self.convolutions = nn.ModuleList()
            self.residuals = []
            layer_in_channels = [in_channels]
            for _, (out_channels, kernel_size, residual) in enumerate(convolutions):
                if residual == 0:
                    residual_dim = out_channels
                else:
                    residual_dim = layer_in_channels[-residual]
                self.projections.append(Linear(residual_dim, out_channels)
                                        if residual_dim != out_channels else None)
                if kernel_size % 2 == 1:
                    padding = kernel_size // 2
                else:
                    padding = 0
                self.convolutions.append(ConvTBCLayer(in_channels, out_channels * 2, kernel_size, dropout=dropout,
                                                      padding=padding))
                self.residuals.append(residual)
                in_channels = out_channels
                layer_in_channels.append(out_channels)
            self.fc2 = Linear(in_channels, embed_dim)

        def forward(self, src_tokens, src_lengths):
            x = self.embed_tokens(src_tokens) + self.embed_positions(src_tokens)
            x = self.dropout_module(x)
            input_embedding = x
            x = self.fc1(x)
            encoder_padding_mask = src_tokens.eq(self.padding_idx).t()  # -> T x B
            if not encoder_padding_mask.any():
                encoder_padding_mask = None
            x = x.transpose(0, 1)
            residuals = [x]
            for proj, conv, res_layer in zip(self.projections, self.convolutions, self.residuals):
                if res_layer > 0:
                    residual = residuals[-res_layer]
                    residual = residual if proj is None else proj(residual)
                else:
                    residual = None
                if encoder_padding_mask is not None:
                    x = x.masked_fill(encoder_padding_mask.unsqueeze(-1), 0)
                x = self.dropout_module(x)
                if conv.kernel_size[0] % 2 == 1:
                    # padding is implicit in the conv
                    x = conv(x)
                else:
                    padding_l = (conv.kernel_size[0] - 1) // 2
                    padding_r = conv.kernel_size[0] // 2
                    x = F.pad(x, (0, 0, 0, 0, padding_l, padding_r))
                    x = conv(x)
                x = F.glu(x, dim=2)
                if residual is not None:
                    x = (x + residual) * math.sqrt(0.5)
                residuals.append(x)
            x = x.transpose(1, 0)
            x = self.fc2(x)
            if encoder_padding_mask is not None:
                encoder_padding_mask = encoder_padding_mask.t()  # -> B x T
                x = x.masked_fill(encoder_padding_mask.unsqueeze(-1), 0)
            # scale gradients (this only affects backward, not forward)
            x = GradMultiply.apply(x, 1.0 / (2.0 * self.num_attention_layers))
            # add output to input embedding for attention
            y = (x + input_embedding) * math.sqrt(0.5)
            return {"encoder_out": (x, y), "encoder_padding_mask": encoder_padding_mask}

    class AttentionLayer(nn.Module):
        def __init__(self, conv_channels, embed_dim, bmm=None):
            super().__init__()
            self.in_projection = Linear(conv_channels, embed_dim)
            self.out_projection = Linear(embed_dim, conv_channels)
            self.bmm = bmm if bmm is not None else torch.bmm

        def forward(self, x, target_embedding, encoder_out, encoder_padding_mask):
            residual = x
            x = (self.in_projection(x) + target_embedding) * math.sqrt(0.5)
            x = self.bmm(x, encoder_out[0])
            if encoder_padding_mask is not None:
                x = x.float().masked_fill(encoder_padding_mask.unsqueeze(1), float("-inf")).type_as(x)
            sz = x.size()
            x = F.softmax(x.view(sz[0] * sz[1], sz[2]), dim=1)
            x = x.view(sz)
            attn_scores = x
            x = self.bmm(x, encoder_out[1])
            s = encoder_out[1].size(1)
            if encoder_padding_mask is None:
                x = x * (s * math.sqrt(1.0 / s))
            else:
                s = s - encoder_padding_mask.type_as(x).sum(dim=1, keepdim=True)  # exclude padding
                s = s.unsqueeze(-1)
                x = x * (s * s.rsqrt())
            x = (self.out_projection(x) + residual) * math.sqrt(0.5)
            return x, attn_scores

    class FConvDecoder(nn.Module):
        def __init__(self, num_embeddings, embed_dim, out_embed_dim, max_positions, convolutions, dropout):
            super().__init__()
            self.dropout_module = nn.Dropout(dropout)
            self.need_attn = True
            convolutions = extend_conv_spec(convolutions)
            in_channels = convolutions[0][0]
            attention = [True] * len(convolutions)
            padding_idx = FC_PAD
            self.embed_tokens = Embedding(num_embeddings, embed_dim, padding_idx)
            self.embed_positions = PositionalEmbedding(max_positions, embed_dim, padding_idx)
            self.fc1 = Linear(embed_dim, in_channels, dropout=dropout)
            self.projections = nn.ModuleList()
            self.convolutions = nn.ModuleList()
            self.attention = nn.ModuleList()
            self.residuals = []
            layer_in_channels = [in_channels]
            for i, (out_channels, kernel_size, residual) in enumerate(convolutions):
                if residual == 0:
                    residual_dim = out_channels
                else:
                    residual_dim = layer_in_channels[-residual]
                self.projections.append(Linear(residual_dim, out_channels)
                                        if residual_dim != out_channels else None)
                self.convolutions.append(LinearizedConv1d(in_channels, out_channels * 2, kernel_size,
                                                          padding=(kernel_size - 1), dropout=dropout))
                self.attention.append(AttentionLayer(out_channels, embed_dim) if attention[i] else None)
                self.residuals.append(residual)
                in_channels = out_channels
                layer_in_channels.append(out_channels)
            self.fc2 = Linear(in_channels, out_embed_dim)
            self.fc3 = Linear(out_embed_dim, num_embeddings, dropout=dropout)

        def forward(self, prev_output_tokens, encoder_out):
            encoder_padding_mask = encoder_out["encoder_padding_mask"]
            encoder_a, encoder_b = encoder_out["encoder_out"]
            encoder_a = encoder_a.transpose(1, 2).contiguous()
            pos_embed = self.embed_positions(prev_output_tokens)
            x = self.embed_tokens(prev_output_tokens)
            x += pos_embed
            x = self.dropout_module(x)
            target_embedding = x
            x = self.fc1(x)
            x = x.transpose(0, 1)  # B x T x C -> T x B x C
            avg_attn_scores = None
            num_attn_layers = len(self.attention)
            residuals = [x]
            for proj, conv, attention, res_layer in zip(self.projections, self.convolutions, self.attention,
                                                        self.residuals):
                if res_layer > 0:
                    residual = residuals[-res_layer]
                    residual = residual if proj is None else proj(residual)
                else:
                    residual = None
                x = self.dropout_module(x)
                x = conv(x)
                x = F.glu(x, dim=2)
                if attention is not None:
                    x = x.transpose(0, 1)
                    x, attn_scores = attention(x, target_embedding, (encoder_a, encoder_b), encoder_padding_mask)
                    if not self.training and self.need_attn:
                        attn_scores = attn_scores / num_attn_layers
                        if avg_attn_scores is None:
                            avg_attn_scores = attn_scores
                        else:
                            avg_attn_scores.add_(attn_scores)
                    x = x.transpose(0, 1)
                if residual is not None:
                    x = (x + residual) * math.sqrt(0.5)
                residuals.append(x)
            x = x.transpose(0, 1)
            x = self.fc2(x)
            x = self.dropout_module(x)
            x = self.fc3(x)
            return x, avg_attn_scores

    class FConvModel(nn.Module):
        def __init__(self, encoder, decoder):
            super().__init__()
            self.encoder, self.decoder = encoder, decoder
            self.encoder.num_attention_layers = sum(layer is not None for layer in decoder.attention)

        def forward(self, src_tokens, src_lengths, prev_output_tokens):
            encoder_out = self.encoder(src_tokens, src_lengths=src_lengths)
            return self.decoder(prev_output_tokens, encoder_out=encoder_out)

    return FConvModel(FConvEncoder(FC_VOCAB, embed_dim, 16, enc_convs, dropout),
                      FConvDecoder(FC_VOCAB, embed_dim, out_embed_dim, 16, dec_convs, dropout))


def fconv_training(m, weights, steps=4, epsilon=0.1):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, fconv(m), weights)

    def label_smoothed_nll_loss(lprobs, target, epsilon, ignore_index=None, reduce=True):
        if target.dim() == lprobs.dim() - 1:
            target = target.unsqueeze(-1)
        nll_loss = -lprobs.gather(dim=-1, index=target)
        smooth_loss = -lprobs.sum(dim=-1, keepdim=True)
        if ignore_index is not None:
            pad_mask = target.eq(ignore_index)
            nll_loss.masked_fill_(pad_mask, 0.0)
            smooth_loss.masked_fill_(pad_mask, 0.0)
        else:
            nll_loss = nll_loss.squeeze(-1)
            smooth_loss = smooth_loss.squeeze(-1)
        if reduce:
            nll_loss = nll_loss.sum()
            smooth_loss = smooth_loss.sum()
        eps_i = epsilon / (lprobs.size(-1) - 1)
        loss = (1.0 - epsilon - eps_i) * nll_loss + eps_i * smooth_loss
        return loss, nll_loss

    src_tokens = torch.tensor(FC_SRC)
    src_lengths = src_tokens.ne(FC_PAD).sum(1)
    target = torch.tensor(FC_TGT)
    prev_output_tokens = torch.cat([torch.full((3, 1), FC_EOS), target[:, :-1]], 1)
    prev_output_tokens = prev_output_tokens.masked_fill(prev_output_tokens == FC_EOS, FC_EOS)
    opt = optim.SGD(model.parameters(), lr=0.25, momentum=0.99, nesterov=True)
    losses, nlls, norms = [], [], []
    for step in range(steps):
        model.train()
        net_output, _ = model(src_tokens, src_lengths, prev_output_tokens)
        lprobs = F.log_softmax(net_output, dim=-1, dtype=torch.float32)
        loss, nll_loss = label_smoothed_nll_loss(lprobs.view(-1, lprobs.size(-1)), target.view(-1), epsilon,
                                                 ignore_index=FC_PAD)
        sample_size = target.ne(FC_PAD).sum()
        opt.zero_grad()
        (loss / sample_size).backward()
        norms.append(nn.utils.clip_grad_norm_(model.parameters(), 0.1))
        opt.step()
        losses.append((loss / sample_size).item())
        nlls.append((nll_loss / sample_size / math.log(2)).item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    model.eval()
    with torch.no_grad():
        encoder_out = model.encoder(src_tokens, src_lengths=src_lengths)
        tokens = torch.full((3, 1), FC_EOS)
        for step in range(4):
            logits, attn = model.decoder(tokens, encoder_out)
            tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return losses, nlls, norms, grads, tokens, attn


@pytest.mark.filterwarnings("ignore:.*weight_norm.* is deprecated:FutureWarning")
def test_fairseq_convs2s_with_weight_norm_conv_tbc_and_grad_multiply():
    weights = weights_of(fconv)
    ours, theirs = run_both(fconv_training, weights, rtol=1e-4, atol=1e-6)
    attn = ours[5]
    np.testing.assert_allclose(attn.sum(-1), 1.0, rtol=1e-5)  # averaged over the attention layers
    assert np.all(attn[1, :, 4:] == 0) and np.all(attn[2, :, 3:] == 0)  # the source padding
