# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Classic NLP programs (see tests/pytorch_programs.py) not already among the program tests, run on chainrule and on
PyTorch from the same weights and data, comparing losses, gradients, decoded outputs and short training trajectories;
dropout-on variants are compared where PyTorch draws its Bernoulli masks as chainrule does (AMD processors), and run
for finite values elsewhere. The pointer-generator with coverage (``scatter_add`` into an extended vocabulary, a
``torch.min`` coverage loss with ties, Adagrad)."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# the pointer-generator network with coverage (See et al. 2017, as atulkum/pointer_summarizer writes it):
# a sorted packed BiLSTM encoder, ReduceState, additive attention with a coverage feature renormalised
# under the padding mask, p_gen by sigmoid, the copy distribution by ``scatter_add`` into an extended
# vocabulary with ``extra_zeros``, the gold probability by ``gather``, the coverage loss by ``torch.min``
# (ties at the padding split the gradient), Adagrad with an initial accumulator and clipping per module
# ----------------------------------------------------------------------------------------------


class PGConfig:
    hidden_dim, emb_dim, vocab_size = 5, 4, 9
    rand_unif_init_mag, trunc_norm_init_std = 0.02, 1e-1
    pointer_gen, is_coverage, cov_loss_wt, eps = True, True, 1.0, 1e-12
    max_grad_norm, lr, adagrad_init_acc, max_dec_steps = 2.0, 0.15, 0.1, 6


def pointer_generator(m):
    torch, nn, F = m.torch, m.nn, m.F
    config = PGConfig
    from_packed = nn.utils.rnn

    def init_lstm_wt(lstm):
        for names in lstm._all_weights:
            for name in names:
                if name.startswith('weight_'):
                    wt = getattr(lstm, name)
                    wt.data.uniform_(-config.rand_unif_init_mag, config.rand_unif_init_mag)
                elif name.startswith('bias_'):
                    # set forget bias to 1
                    bias = getattr(lstm, name)
                    n = bias.size(0)
                    start, end = n // 4, n // 2
                    bias.data.fill_(0.)
                    bias.data[start:end].fill_(1.)

    def init_linear_wt(linear):
        linear.weight.data.normal_(std=config.trunc_norm_init_std)
        if linear.bias is not None:
            linear.bias.data.normal_(std=config.trunc_norm_init_std)

    def init_wt_normal(wt):
        wt.data.normal_(std=config.trunc_norm_init_std)

    class Encoder(nn.Module):
        def __init__(self):
            super(Encoder, self).__init__()
            self.embedding = nn.Embedding(config.vocab_size, config.emb_dim)
            init_wt_normal(self.embedding.weight)
            self.lstm = nn.LSTM(config.emb_dim, config.hidden_dim, num_layers=1, batch_first=True, bidirectional=True)
            init_lstm_wt(self.lstm)
            self.W_h = nn.Linear(config.hidden_dim * 2, config.hidden_dim * 2, bias=False)

        # seq_lens should be in descending order
        def forward(self, input, seq_lens):
            embedded = self.embedding(input)
            packed = from_packed.pack_padded_sequence(embedded, seq_lens, batch_first=True)
            output, hidden = self.lstm(packed)
            encoder_outputs, _ = from_packed.pad_packed_sequence(output, batch_first=True)  # h dim = B x t_k x n
            encoder_outputs = encoder_outputs.contiguous()
            encoder_feature = encoder_outputs.view(-1, 2 * config.hidden_dim)  # B * t_k x 2*hidden_dim
            encoder_feature = self.W_h(encoder_feature)
            return encoder_outputs, encoder_feature, hidden

    class ReduceState(nn.Module):
        def __init__(self):
            super(ReduceState, self).__init__()
            self.reduce_h = nn.Linear(config.hidden_dim * 2, config.hidden_dim)
            init_linear_wt(self.reduce_h)
            self.reduce_c = nn.Linear(config.hidden_dim * 2, config.hidden_dim)
            init_linear_wt(self.reduce_c)

        def forward(self, hidden):
            h, c = hidden  # h, c dim = 2 x b x hidden_dim
            h_in = h.transpose(0, 1).contiguous().view(-1, config.hidden_dim * 2)
            hidden_reduced_h = F.relu(self.reduce_h(h_in))
            c_in = c.transpose(0, 1).contiguous().view(-1, config.hidden_dim * 2)
            hidden_reduced_c = F.relu(self.reduce_c(c_in))
            return (hidden_reduced_h.unsqueeze(0), hidden_reduced_c.unsqueeze(0))  # h, c dim = 1 x b x hidden_dim

    class Attention(nn.Module):
        def __init__(self):
            super(Attention, self).__init__()
            # attention
            if config.is_coverage:
                self.W_c = nn.Linear(1, config.hidden_dim * 2, bias=False)
            self.decode_proj = nn.Linear(config.hidden_dim * 2, config.hidden_dim * 2)
            self.v = nn.Linear(config.hidden_dim * 2, 1, bias=False)

        def forward(self, s_t_hat, encoder_outputs, encoder_feature, enc_padding_mask, coverage):
            b, t_k, n = list(encoder_outputs.size())

            dec_fea = self.decode_proj(s_t_hat)  # B x 2*hidden_dim
            dec_fea_expanded = dec_fea.unsqueeze(1).expand(b, t_k, n).contiguous()  # B x t_k x 2*hidden_dim
            dec_fea_expanded = dec_fea_expanded.view(-1, n)  # B * t_k x 2*hidden_dim

            att_features = encoder_feature + dec_fea_expanded  # B * t_k x 2*hidden_dim
            if config.is_coverage:
                coverage_input = coverage.view(-1, 1)  # B * t_k x 1
                coverage_feature = self.W_c(coverage_input)  # B * t_k x 2*hidden_dim
                att_features = att_features + coverage_feature

            e = torch.tanh(att_features)  # B * t_k x 2*hidden_dim
            scores = self.v(e)  # B * t_k x 1
            scores = scores.view(-1, t_k)  # B x t_k

            attn_dist_ = F.softmax(scores, dim=1) * enc_padding_mask  # B x t_k
            normalization_factor = attn_dist_.sum(1, keepdim=True)
            attn_dist = attn_dist_ / normalization_factor

            attn_dist = attn_dist.unsqueeze(1)  # B x 1 x t_k
            c_t = torch.bmm(attn_dist, encoder_outputs)  # B x 1 x n
            c_t = c_t.view(-1, config.hidden_dim * 2)  # B x 2*hidden_dim

            attn_dist = attn_dist.view(-1, t_k)  # B x t_k

            if config.is_coverage:
                coverage = coverage.view(-1, t_k)
                coverage = coverage + attn_dist

            return c_t, attn_dist, coverage

    class Decoder(nn.Module):
        def __init__(self):
            super(Decoder, self).__init__()
            self.attention_network = Attention()
            # decoder
            self.embedding = nn.Embedding(config.vocab_size, config.emb_dim)
            init_wt_normal(self.embedding.weight)

            self.x_context = nn.Linear(config.hidden_dim * 2 + config.emb_dim, config.emb_dim)

            self.lstm = nn.LSTM(config.emb_dim, config.hidden_dim, num_layers=1, batch_first=True, bidirectional=False)
            init_lstm_wt(self.lstm)

            if config.pointer_gen:
                self.p_gen_linear = nn.Linear(config.hidden_dim * 4 + config.emb_dim, 1)

            # p_vocab
            self.out1 = nn.Linear(config.hidden_dim * 3, config.hidden_dim)
            self.out2 = nn.Linear(config.hidden_dim, config.vocab_size)
            init_linear_wt(self.out2)

        def forward(self, y_t_1, s_t_1, encoder_outputs, encoder_feature, enc_padding_mask,
                    c_t_1, extra_zeros, enc_batch_extend_vocab, coverage, step):

            if not self.training and step == 0:
                h_decoder, c_decoder = s_t_1
                s_t_hat = torch.cat((h_decoder.view(-1, config.hidden_dim),
                                     c_decoder.view(-1, config.hidden_dim)), 1)  # B x 2*hidden_dim
                c_t, _, coverage_next = self.attention_network(s_t_hat, encoder_outputs, encoder_feature,
                                                               enc_padding_mask, coverage)
                coverage = coverage_next

            y_t_1_embd = self.embedding(y_t_1)
            x = self.x_context(torch.cat((c_t_1, y_t_1_embd), 1))
            lstm_out, s_t = self.lstm(x.unsqueeze(1), s_t_1)

            h_decoder, c_decoder = s_t
            s_t_hat = torch.cat((h_decoder.view(-1, config.hidden_dim),
                                 c_decoder.view(-1, config.hidden_dim)), 1)  # B x 2*hidden_dim
            c_t, attn_dist, coverage_next = self.attention_network(s_t_hat, encoder_outputs, encoder_feature,
                                                                   enc_padding_mask, coverage)

            if self.training or step > 0:
                coverage = coverage_next

            p_gen = None
            if config.pointer_gen:
                p_gen_input = torch.cat((c_t, s_t_hat, x), 1)  # B x (2*2*hidden_dim + emb_dim)
                p_gen = self.p_gen_linear(p_gen_input)
                p_gen = torch.sigmoid(p_gen)

            output = torch.cat((lstm_out.view(-1, config.hidden_dim), c_t), 1)  # B x hidden_dim * 3
            output = self.out1(output)  # B x hidden_dim

            output = self.out2(output)  # B x vocab_size
            vocab_dist = F.softmax(output, dim=1)

            if config.pointer_gen:
                vocab_dist_ = p_gen * vocab_dist
                attn_dist_ = (1 - p_gen) * attn_dist

                if extra_zeros is not None:
                    vocab_dist_ = torch.cat([vocab_dist_, extra_zeros], 1)

                final_dist = vocab_dist_.scatter_add(1, enc_batch_extend_vocab, attn_dist_)
            else:
                final_dist = vocab_dist

            return final_dist, s_t, c_t, attn_dist, p_gen, coverage

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder()
            self.decoder = Decoder()
            self.reduce_state = ReduceState()
            # shared the embedding between encoder and decoder
            self.decoder.embedding.weight = self.encoder.embedding.weight

    return Model()


# source words as ids of the extended vocabulary: 9 and 10 are this batch's out-of-vocabulary words
PG_SRC_EXT = [[3, 9, 4, 5, 10, 6], [7, 3, 9, 8, 0, 0], [5, 10, 4, 0, 0, 0]]
PG_TGT_EXT = [[9, 4, 10, 2], [3, 9, 2, 0], [10, 5, 2, 0]]
PG_START, PG_STOP, PG_UNK = 1, 2, 0


def pointer_generator_training(m, weights, steps=3):
    torch, nn, optim = m.torch, m.nn, m.optim
    from_packed = nn.utils.rnn
    config = PGConfig
    model = load(m, pointer_generator(m), weights)
    enc_batch_extend_vocab = torch.tensor(PG_SRC_EXT)
    enc_lens = [6, 4, 3]
    enc_batch = enc_batch_extend_vocab.masked_fill(enc_batch_extend_vocab >= config.vocab_size, PG_UNK)
    enc_padding_mask = (torch.arange(6)[None, :] < torch.tensor(enc_lens)[:, None]).float()
    extra_zeros = torch.zeros((3, 2))
    target_batch = torch.tensor(PG_TGT_EXT)
    dec_batch = torch.cat([torch.full((3, 1), PG_START), target_batch[:, :-1]], 1)
    dec_batch = dec_batch.masked_fill(dec_batch >= config.vocab_size, PG_UNK)
    dec_lens = [4, 3, 3]
    dec_padding_mask = (torch.arange(4)[None, :] < torch.tensor(dec_lens)[:, None]).float()
    dec_lens_var = torch.tensor(dec_lens, dtype=torch.float)
    max_dec_len = 4

    # (the original lists the three modules' parameters, the shared embedding twice: PyTorch warns and steps it
    # twice, chainrule refuses a parameter listed twice in one group by design (README); listed once here)
    params = list(model.parameters())
    optimizer = optim.Adagrad(params, lr=config.lr, initial_accumulator_value=config.adagrad_init_acc)
    losses, norms, p_gens = [], [], []
    for it in range(steps):
        optimizer.zero_grad()
        encoder_outputs, encoder_feature, encoder_hidden = model.encoder(enc_batch, enc_lens)
        s_t_1 = model.reduce_state(encoder_hidden)
        c_t_1 = torch.zeros((3, 2 * config.hidden_dim))
        coverage = torch.zeros(enc_batch.size())

        step_losses = []
        for di in range(min(max_dec_len, config.max_dec_steps)):
            y_t_1 = dec_batch[:, di]  # Teacher forcing
            final_dist, s_t_1, c_t_1, attn_dist, p_gen, next_coverage = model.decoder(
                y_t_1, s_t_1, encoder_outputs, encoder_feature, enc_padding_mask, c_t_1, extra_zeros,
                enc_batch_extend_vocab, coverage, di)
            target = target_batch[:, di]
            gold_probs = torch.gather(final_dist, 1, target.unsqueeze(1)).squeeze()
            step_loss = -torch.log(gold_probs + config.eps)
            if config.is_coverage:
                step_coverage_loss = torch.sum(torch.min(attn_dist, coverage), 1)
                step_loss = step_loss + config.cov_loss_wt * step_coverage_loss
                coverage = next_coverage

            step_mask = dec_padding_mask[:, di]
            step_loss = step_loss * step_mask
            step_losses.append(step_loss)
            p_gens.append(p_gen.detach())

        sum_losses = torch.sum(torch.stack(step_losses, 1), 1)
        batch_avg_loss = sum_losses / dec_lens_var
        loss = torch.mean(batch_avg_loss)

        loss.backward()

        norms.append(nn.utils.clip_grad_norm_(model.encoder.parameters(), config.max_grad_norm))
        nn.utils.clip_grad_norm_(model.decoder.parameters(), config.max_grad_norm)
        nn.utils.clip_grad_norm_(model.reduce_state.parameters(), config.max_grad_norm)

        optimizer.step()
        losses.append(loss.item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    return losses, norms, p_gens, final_dist, coverage, grads, optimizer.state_dict()["state"][0]["sum"]


def test_pointer_generator_with_coverage():
    weights = weights_of(pointer_generator)
    ours, theirs = run_both(pointer_generator_training, weights, rtol=1e-4, atol=1e-6)
    losses, norms, p_gens, final_dist, coverage = ours[:5]
    assert losses[-1] < losses[0]
    # the final distribution over the extended vocabulary sums to one; padding never gets attention
    np.testing.assert_allclose(final_dist.sum(1), 1.0, rtol=1e-5)
    assert coverage[1, 4:].max() == 0 and coverage[2, 3:].max() == 0
    np.testing.assert_allclose(coverage.sum(1), 4.0, rtol=1e-5)  # one unit of attention per decoded step
