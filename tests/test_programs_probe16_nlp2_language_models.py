# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Classic NLP programs (see tests/pytorch_programs.py) not already among the program tests, run on chainrule and on
PyTorch from the same weights and data, comparing losses, gradients, decoded outputs and short training trajectories;
dropout-on variants are compared where PyTorch draws its Bernoulli masks as chainrule does (AMD processors), and run
for finite values elsewhere. Transformer-XL's relative attention (``_rel_shift`` by ``view``, einsum over a tuple of
operands, memory from empty 1-D tensors); a character-CNN/highway word encoder under ELMo-style LSTMs and AllenNLP's
ScalarMix."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# a character-aware word encoder (Kim et al. 2016): characters embedded with a padding row, Conv1d filters
# of several widths, max-over-time pooling two ways (``torch.max(dim=2)[0]`` and ``F.max_pool1d`` over the
# whole length), a highway network; ELMo-style forward and backward LSTMs (the backward one over
# ``flip``ped sequences) and AllenNLP's ScalarMix with its masked layer norm, ``ParameterList``,
# ``torch.FloatTensor([x])``, ``torch.split`` of the softmaxed weights and Python's ``sum`` of tensors
# ----------------------------------------------------------------------------------------------

CHAR_WORDS = [[[3, 4, 5, 0, 0], [6, 7, 0, 0, 0], [8, 9, 10, 11, 12], [0, 0, 0, 0, 0]],
              [[5, 5, 0, 0, 0], [3, 0, 0, 0, 0], [4, 6, 8, 0, 0], [9, 3, 3, 7, 0]]]
CHAR_TAGS = [[0, 1, 2, 0], [1, 1, 0, 2]]


def char_cnn_elmo(m, n_chars=13, char_emb=4, filters=((1, 3), (2, 4), (3, 5)), hid=6, n_tags=3):
    torch, nn, F = m.torch, m.nn, m.F

    class Highway(nn.Module):
        def __init__(self, size, num_layers, f):
            super(Highway, self).__init__()
            self.num_layers = num_layers
            self.nonlinear = nn.ModuleList([nn.Linear(size, size) for _ in range(num_layers)])
            self.linear = nn.ModuleList([nn.Linear(size, size) for _ in range(num_layers)])
            self.gate = nn.ModuleList([nn.Linear(size, size) for _ in range(num_layers)])
            self.f = f

        def forward(self, x):
            for layer in range(self.num_layers):
                gate = torch.sigmoid(self.gate[layer](x))
                nonlinear = self.f(self.nonlinear[layer](x))
                linear = self.linear[layer](x)
                x = gate * nonlinear + (1 - gate) * linear
            return x

    class CharCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.char_embedding = nn.Embedding(n_chars, char_emb, padding_idx=0)
            self.convs = nn.ModuleList([nn.Conv1d(char_emb, n, kernel_size=w) for w, n in filters])
            self.n_filters = sum(n for _, n in filters)
            self.highway = Highway(self.n_filters, 2, F.relu)

        def forward(self, chars):
            batch_size, seq_len, max_word_len = chars.size()
            x = self.char_embedding(chars.view(-1, max_word_len)).transpose(1, 2)  # (B*T, E, W)
            pooled = []
            for i, conv in enumerate(self.convs):
                c = torch.tanh(conv(x))
                if i % 2 == 0:
                    c, _ = torch.max(c, dim=2)  # max over time
                else:
                    c = F.max_pool1d(c, c.size(2)).squeeze(2)
                pooled.append(c)
            words = self.highway(torch.cat(pooled, 1))
            return words.view(batch_size, seq_len, -1)

    class ScalarMix(nn.Module):
        def __init__(self, mixture_size, do_layer_norm=False, initial_scalar_parameters=None, trainable=True):
            super().__init__()
            self.mixture_size = mixture_size
            self.do_layer_norm = do_layer_norm
            if initial_scalar_parameters is None:
                initial_scalar_parameters = [0.0] * mixture_size
            self.scalar_parameters = nn.ParameterList(
                [nn.Parameter(torch.FloatTensor([initial_scalar_parameters[i]]), requires_grad=trainable)
                 for i in range(mixture_size)])
            self.gamma = nn.Parameter(torch.FloatTensor([1.0]), requires_grad=trainable)

        def forward(self, tensors, mask=None):
            def _do_layer_norm(tensor, broadcast_mask, num_elements_not_masked):
                tensor_masked = tensor * broadcast_mask
                mean = torch.sum(tensor_masked) / num_elements_not_masked
                variance = torch.sum(((tensor_masked - mean) * broadcast_mask) ** 2) / num_elements_not_masked
                return (tensor - mean) / torch.sqrt(variance + 1e-13)

            normed_weights = F.softmax(torch.cat([parameter for parameter in self.scalar_parameters]), dim=0)
            normed_weights = torch.split(normed_weights, split_size_or_sections=1)

            if not self.do_layer_norm:
                pieces = []
                for weight, tensor in zip(normed_weights, tensors):
                    pieces.append(weight * tensor)
                return self.gamma * sum(pieces)
            else:
                assert mask is not None
                broadcast_mask = mask.unsqueeze(-1)
                input_dim = tensors[0].size(-1)
                num_elements_not_masked = torch.sum(mask) * input_dim
                pieces = []
                for weight, tensor in zip(normed_weights, tensors):
                    pieces.append(weight * _do_layer_norm(tensor, broadcast_mask, num_elements_not_masked))
                return self.gamma * sum(pieces)

    class ELMoTagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.chars = CharCNN()
            self.project = nn.Linear(self.chars.n_filters, hid)
            self.forward_layers = nn.ModuleList([nn.LSTM(hid, hid, batch_first=True) for _ in range(2)])
            self.backward_layers = nn.ModuleList([nn.LSTM(hid, hid, batch_first=True) for _ in range(2)])
            self.mix = ScalarMix(3, do_layer_norm=True, initial_scalar_parameters=[0.1, -0.2, 0.3])
            self.plain_mix = ScalarMix(3)
            self.out = nn.Linear(2 * hid, n_tags)

        def forward(self, chars):
            mask = (chars > 0).any(-1).float()
            token = self.project(self.chars(chars))
            layers = [torch.cat([token, token], -1)]
            fwd, bwd = token, token.flip(1)
            for f_lstm, b_lstm in zip(self.forward_layers, self.backward_layers):
                f_out, _ = f_lstm(fwd)
                b_out, _ = b_lstm(bwd)
                fwd, bwd = f_out + fwd, b_out + bwd  # residual, as ELMo's between layers
                layers.append(torch.cat([fwd, bwd.flip(1)], -1))
            mixed = self.mix(layers, mask) + self.plain_mix(layers)
            return self.out(mixed), mask

    return ELMoTagger()


def char_cnn_elmo_training(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, char_cnn_elmo(m), weights)
    chars = torch.tensor(CHAR_WORDS)
    tags = torch.tensor(CHAR_TAGS)
    opt = optim.SGD(model.parameters(), lr=0.2, momentum=0.9, nesterov=True)
    losses = []
    for step in range(steps):
        logits, mask = model(chars)
        loss = (F.cross_entropy(logits.transpose(1, 2), tags, reduction="none") * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    weights_now = [p.detach().clone() for p in model.mix.scalar_parameters]
    return losses, grads, weights_now, model.mix.gamma, logits


def test_char_cnn_highway_elmo_scalar_mix():
    weights = weights_of(char_cnn_elmo)
    ours, theirs = run_both(char_cnn_elmo_training, weights, rtol=1e-4, atol=1e-6)
    losses, grads = ours[:2]
    assert losses[-1] < losses[0]
    # the all-padding word of the first sentence: its character embedding row (0) gets no gradient
    assert np.all(grads["chars.char_embedding.weight"][0] == 0)
    assert set(k for k in grads if k.startswith("mix.")) == {"mix.scalar_parameters.0", "mix.scalar_parameters.1",
                                                             "mix.scalar_parameters.2", "mix.gamma"}


# ----------------------------------------------------------------------------------------------
# Transformer-XL (kimiyoung/transformer-xl, NVIDIA's edition of the masks): relative positional attention
# with the ``_rel_shift`` trick (a zero column, ``view`` to (k+1, q), drop a row, ``view_as``), einsum with
# its operands as a tuple, ``torch.ger`` sinusoids, learnt r_w/r_r biases, a causal mask by
# ``torch.triu(new_ones, diagonal=1 + mlen)``, recurrence memory that starts as empty 1-D tensors joined by
# ``torch.cat`` and is kept under ``no_grad``, ``attn_score.mul_``, warmup then CosineAnnealingLR by hand
# ----------------------------------------------------------------------------------------------


def transformer_xl(m, n_token=12, n_layer=2, n_head=2, d_model=8, d_head=4, d_inner=16, mem_len=4):
    torch, nn, F = m.torch, m.nn, m.F

    class PositionalEmbedding(nn.Module):
        def __init__(self, demb):
            super(PositionalEmbedding, self).__init__()
            self.demb = demb
            inv_freq = 1 / (10000 ** (torch.arange(0.0, demb, 2.0) / demb))
            self.register_buffer('inv_freq', inv_freq)

        def forward(self, pos_seq, bsz=None):
            sinusoid_inp = torch.ger(pos_seq, self.inv_freq)
            pos_emb = torch.cat([sinusoid_inp.sin(), sinusoid_inp.cos()], dim=-1)
            if bsz is not None:
                return pos_emb[:, None, :].expand(-1, bsz, -1)
            else:
                return pos_emb[:, None, :]

    class PositionwiseFF(nn.Module):
        def __init__(self, d_model, d_inner, dropout, pre_lnorm=False):
            super(PositionwiseFF, self).__init__()
            self.CoreNet = nn.Sequential(
                nn.Linear(d_model, d_inner), nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(d_inner, d_model),
                nn.Dropout(dropout),
            )
            self.layer_norm = nn.LayerNorm(d_model)
            self.pre_lnorm = pre_lnorm

        def forward(self, inp):
            if self.pre_lnorm:
                core_out = self.CoreNet(self.layer_norm(inp))
                output = core_out + inp
            else:
                core_out = self.CoreNet(inp)
                output = self.layer_norm(inp + core_out)
            return output

    class RelPartialLearnableMultiHeadAttn(nn.Module):
        def __init__(self, n_head, d_model, d_head, dropout, dropatt=0, pre_lnorm=False):
            super(RelPartialLearnableMultiHeadAttn, self).__init__()
            self.n_head = n_head
            self.d_model = d_model
            self.d_head = d_head
            self.qkv_net = nn.Linear(d_model, 3 * n_head * d_head, bias=False)
            self.drop = nn.Dropout(dropout)
            self.dropatt = nn.Dropout(dropatt)
            self.o_net = nn.Linear(n_head * d_head, d_model, bias=False)
            self.layer_norm = nn.LayerNorm(d_model)
            self.scale = 1 / (d_head ** 0.5)
            self.pre_lnorm = pre_lnorm
            self.r_net = nn.Linear(self.d_model, self.n_head * self.d_head, bias=False)

        def _rel_shift(self, x, zero_triu=False):
            zero_pad = torch.zeros((x.size(0), 1, *x.size()[2:]), device=x.device, dtype=x.dtype)
            x_padded = torch.cat([zero_pad, x], dim=1)
            x_padded = x_padded.view(x.size(1) + 1, x.size(0), *x.size()[2:])
            x = x_padded[1:].view_as(x)
            if zero_triu:
                ones = torch.ones((x.size(0), x.size(1)))
                x = x * torch.tril(ones, x.size(1) - x.size(0))[:, :, None, None]
            return x

        def forward(self, w, r, r_w_bias, r_r_bias, attn_mask=None, mems=None):
            qlen, rlen, bsz = w.size(0), r.size(0), w.size(1)
            if mems is not None:
                cat = torch.cat([mems, w], 0)
                if self.pre_lnorm:
                    w_heads = self.qkv_net(self.layer_norm(cat))
                else:
                    w_heads = self.qkv_net(cat)
                r_head_k = self.r_net(r)
                w_head_q, w_head_k, w_head_v = torch.chunk(w_heads, 3, dim=-1)
                w_head_q = w_head_q[-qlen:]
            else:
                if self.pre_lnorm:
                    w_heads = self.qkv_net(self.layer_norm(w))
                else:
                    w_heads = self.qkv_net(w)
                r_head_k = self.r_net(r)
                w_head_q, w_head_k, w_head_v = torch.chunk(w_heads, 3, dim=-1)

            klen = w_head_k.size(0)
            w_head_q = w_head_q.view(qlen, bsz, self.n_head, self.d_head)  # qlen x bsz x n_head x d_head
            w_head_k = w_head_k.view(klen, bsz, self.n_head, self.d_head)  # qlen x bsz x n_head x d_head
            w_head_v = w_head_v.view(klen, bsz, self.n_head, self.d_head)  # qlen x bsz x n_head x d_head
            r_head_k = r_head_k.view(rlen, self.n_head, self.d_head)  # qlen x n_head x d_head

            # compute attention score
            rw_head_q = w_head_q + r_w_bias  # qlen x bsz x n_head x d_head
            AC = torch.einsum('ibnd,jbnd->ijbn', (rw_head_q, w_head_k))  # qlen x klen x bsz x n_head
            rr_head_q = w_head_q + r_r_bias
            BD = torch.einsum('ibnd,jnd->ijbn', (rr_head_q, r_head_k))  # qlen x klen x bsz x n_head
            BD = self._rel_shift(BD)

            # [qlen x klen x bsz x n_head]
            attn_score = AC + BD
            attn_score.mul_(self.scale)

            # compute attention probability
            if attn_mask is not None and attn_mask.any().item():
                if attn_mask.dim() == 2:
                    attn_score = attn_score.float().masked_fill(
                        attn_mask[None, :, :, None], -float('inf')).type_as(attn_score)
                elif attn_mask.dim() == 3:
                    attn_score = attn_score.float().masked_fill(
                        attn_mask[:, :, :, None], -float('inf')).type_as(attn_score)

            # [qlen x klen x bsz x n_head]
            attn_prob = F.softmax(attn_score, dim=1)
            attn_prob = self.dropatt(attn_prob)

            # compute attention vector
            attn_vec = torch.einsum('ijbn,jbnd->ibnd', (attn_prob, w_head_v))

            # [qlen x bsz x n_head x d_head]
            attn_vec = attn_vec.contiguous().view(attn_vec.size(0), attn_vec.size(1), self.n_head * self.d_head)

            # linear projection
            attn_out = self.o_net(attn_vec)
            attn_out = self.drop(attn_out)

            if self.pre_lnorm:
                output = w + attn_out
            else:
                output = self.layer_norm(w + attn_out)
            return output

    class RelPartialLearnableDecoderLayer(nn.Module):
        def __init__(self, n_head, d_model, d_head, d_inner, dropout, **kwargs):
            super(RelPartialLearnableDecoderLayer, self).__init__()
            self.dec_attn = RelPartialLearnableMultiHeadAttn(n_head, d_model, d_head, dropout, **kwargs)
            self.pos_ff = PositionwiseFF(d_model, d_inner, dropout, pre_lnorm=kwargs.get('pre_lnorm'))

        def forward(self, dec_inp, r, r_w_bias, r_r_bias, dec_attn_mask=None, mems=None):
            output = self.dec_attn(dec_inp, r, r_w_bias, r_r_bias, attn_mask=dec_attn_mask, mems=mems)
            output = self.pos_ff(output)
            return output

    class MemTransformerLM(nn.Module):
        def __init__(self, n_token, n_layer, n_head, d_model, d_head, d_inner, dropout, dropatt, tgt_len=None,
                     ext_len=0, mem_len=0, clamp_len=-1, pre_lnorm=False):
            super(MemTransformerLM, self).__init__()
            self.n_token = n_token
            self.d_model = d_model
            self.n_head = n_head
            self.d_head = d_head
            self.word_emb = nn.Embedding(n_token, d_model)
            self.drop = nn.Dropout(dropout)
            self.n_layer = n_layer
            self.tgt_len = tgt_len
            self.mem_len = mem_len
            self.ext_len = ext_len
            self.clamp_len = clamp_len
            self.layers = nn.ModuleList()
            for i in range(n_layer):
                self.layers.append(RelPartialLearnableDecoderLayer(
                    n_head, d_model, d_head, d_inner, dropout, dropatt=dropatt, pre_lnorm=pre_lnorm))
            self.out_layer = nn.Linear(d_model, n_token)
            self.out_layer.weight = self.word_emb.weight  # tie_weight
            self.pos_emb = PositionalEmbedding(self.d_model)
            self.r_w_bias = nn.Parameter(torch.Tensor(self.n_head, self.d_head))
            self.r_r_bias = nn.Parameter(torch.Tensor(self.n_head, self.d_head))
            nn.init.normal_(self.r_w_bias, 0.0, 0.02)
            nn.init.normal_(self.r_r_bias, 0.0, 0.02)

        def init_mems(self):
            if self.mem_len > 0:
                mems = []
                param = next(self.parameters())
                for i in range(self.n_layer + 1):
                    empty = torch.empty(0, dtype=param.dtype, device=param.device)
                    mems.append(empty)
                return mems
            else:
                return None

        def _update_mems(self, hids, mems, qlen, mlen):
            # does not deal with None
            if mems is None:
                return None
            # mems is not None
            assert len(hids) == len(mems), 'len(hids) != len(mems)'
            # There are `mlen + qlen` steps that can be cached into mems
            with torch.no_grad():
                new_mems = []
                end_idx = mlen + max(0, qlen - 0 - self.ext_len)
                beg_idx = max(0, end_idx - self.mem_len)
                for i in range(len(hids)):
                    cat = torch.cat([mems[i], hids[i]], dim=0)
                    new_mems.append(cat[beg_idx:end_idx].detach())
            return new_mems

        def _forward(self, dec_inp, mems=None):
            qlen, bsz = dec_inp.size()
            word_emb = self.word_emb(dec_inp)
            mlen = mems[0].size(0) if mems is not None else 0
            klen = mlen + qlen
            dec_attn_mask = torch.triu(word_emb.new_ones(qlen, klen), diagonal=1 + mlen).bool()[:, :, None]
            hids = []
            pos_seq = torch.arange(klen - 1, -1, -1.0, device=word_emb.device, dtype=word_emb.dtype)
            if self.clamp_len > 0:
                pos_seq.clamp_(max=self.clamp_len)
            pos_emb = self.pos_emb(pos_seq)
            core_out = self.drop(word_emb)
            pos_emb = self.drop(pos_emb)
            hids.append(core_out)
            for i, layer in enumerate(self.layers):
                mems_i = None if mems is None else mems[i]
                core_out = layer(core_out, pos_emb, self.r_w_bias, self.r_r_bias, dec_attn_mask=dec_attn_mask,
                                 mems=mems_i)
                hids.append(core_out)
            core_out = self.drop(core_out)
            new_mems = self._update_mems(hids, mems, mlen, qlen)
            return core_out, new_mems

        def forward(self, data, target, *mems):
            if not mems:
                mems = self.init_mems()
            tgt_len = target.size(0)
            hidden, new_mems = self._forward(data, mems=mems)
            pred_hid = hidden[-tgt_len:]
            logit = self.out_layer(pred_hid.view(-1, pred_hid.size(-1)))
            loss = -F.log_softmax(logit, dim=-1).gather(1, target.reshape(-1).unsqueeze(1)).squeeze(1)
            loss = loss.view(tgt_len, -1)
            if new_mems is None:
                return [loss]
            else:
                return [loss] + new_mems

    return MemTransformerLM(n_token, n_layer, n_head, d_model, d_head, d_inner, dropout=0.0, dropatt=0.0,
                            tgt_len=3, mem_len=mem_len, clamp_len=5, pre_lnorm=False)


def transformer_xl_training(m, weights, n_segments=4, tgt_len=3, warmup_step=2, max_step=6):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, transformer_xl(m), weights)
    rng = np.random.default_rng(4)
    stream = torch.tensor(rng.integers(0, 12, (n_segments * tgt_len + 1, 2)))  # (T, bsz), time first
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, max_step, eta_min=0.0)
    train_step, mems, losses, lrs, mem_lens = 0, tuple(), [], [], []
    model.train()
    for batch in range(n_segments):
        data = stream[batch * tgt_len:(batch + 1) * tgt_len]
        target = stream[batch * tgt_len + 1:(batch + 1) * tgt_len + 1]
        ret = model(data, target, *mems)
        loss, mems = ret[0], ret[1:]
        loss = loss.float().mean().type_as(loss)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
        optimizer.zero_grad()
        train_step += 1
        if train_step < warmup_step:
            curr_lr = 0.01 * train_step / warmup_step
            optimizer.param_groups[0]['lr'] = curr_lr
        else:
            scheduler.step()
        losses.append(loss.item())
        lrs.append(optimizer.param_groups[0]['lr'])
        mem_lens.append([m_.size(0) for m_ in mems])
    # evaluation with the memory carried over, under no_grad
    model.eval()
    with torch.no_grad():
        ret = model(stream[:tgt_len], stream[1:tgt_len + 1], *mems)
    return losses, lrs, mem_lens, ret[0], [m_ for m_ in mems], model.r_w_bias, model.word_emb.weight


def test_transformer_xl_relative_attention_with_memory():
    weights = weights_of(transformer_xl)
    ours, theirs = run_both(transformer_xl_training, weights, rtol=1e-4, atol=1e-6)
    losses, lrs, mem_lens = ours[:3]
    assert mem_lens == [[3] * 3, [4] * 3, [4] * 3, [4] * 3]  # the memory grows to mem_len, then slides
    assert all(np.isfinite(losses))
