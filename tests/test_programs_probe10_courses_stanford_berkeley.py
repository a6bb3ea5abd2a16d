# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Programs students write in deep-learning courses (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and data, comparing values and gradients. Stanford CS224n: NMT with a packed
bidirectional LSTM, attention masked through ``.data.masked_fill_`` and beam search. Stanford CS330: second-order
MAML through a functional conv net, prototypical networks. Berkeley CS285: Gaussian, tanh-squashed and categorical
policies."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Stanford CS330 (meta-learning): MAML with a functional convolutional network (second order,
# through conv2d, batch_norm and padding='same'), and prototypical networks
# ----------------------------------------------------------------------------------------------


def maml_and_protonet(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    NUM_HIDDEN_CHANNELS, KERNEL_SIZE, NUM_CONV_LAYERS = 3, 3, 2
    N_WAY, K, Q = 3, 2, 2
    rng = np.random.default_rng(19)
    meta_parameters = {}
    in_channels = 1
    for i in range(NUM_CONV_LAYERS):
        meta_parameters[f'conv{i}'] = torch.tensor(
            rng.uniform(-0.5, 0.5, (NUM_HIDDEN_CHANNELS, in_channels, KERNEL_SIZE, KERNEL_SIZE)).astype(np.float32),
            requires_grad=True)
        meta_parameters[f'b{i}'] = nn.init.zeros_(torch.empty(NUM_HIDDEN_CHANNELS, requires_grad=True))
        in_channels = NUM_HIDDEN_CHANNELS
    meta_parameters[f'w{NUM_CONV_LAYERS}'] = torch.tensor(rng.uniform(-0.5, 0.5, (N_WAY, NUM_HIDDEN_CHANNELS)).astype(np.float32), requires_grad=True)
    meta_parameters[f'b{NUM_CONV_LAYERS}'] = nn.init.zeros_(torch.empty(N_WAY, requires_grad=True))
    inner_lrs = {k: torch.tensor(0.4, requires_grad=True) for k in meta_parameters.keys()}

    def _forward(images, parameters):
        x = images
        for i in range(NUM_CONV_LAYERS):
            x = F.conv2d(input=x, weight=parameters[f'conv{i}'], bias=parameters[f'b{i}'], stride=1, padding='same')
            x = F.batch_norm(x, None, None, training=True)
            x = F.relu(x)
        x = torch.mean(x, dim=[2, 3])
        return F.linear(input=x, weight=parameters[f'w{NUM_CONV_LAYERS}'], bias=parameters[f'b{NUM_CONV_LAYERS}'])

    def score(logits, labels):
        y = torch.argmax(logits, dim=-1) == labels
        return y.type(torch.float).mean().item()

    def _inner_loop(images, labels, train, num_inner_steps=2):
        accuracies = []
        parameters = {k: torch.clone(v) for k, v in meta_parameters.items()}
        for _ in range(num_inner_steps):
            logits = _forward(images, parameters)
            loss = F.cross_entropy(logits, labels)
            accuracies.append(score(logits, labels))
            grads = torch.autograd.grad(loss, parameters.values(), create_graph=train)
            for k, g in zip(parameters.keys(), grads):
                parameters[k] = parameters[k] - inner_lrs[k] * g
        accuracies.append(score(_forward(images, parameters), labels))
        return parameters, accuracies

    optimizer = optim.Adam(list(meta_parameters.values()) + list(inner_lrs.values()), lr=1e-2)
    tasks = [(torch.tensor(rng.standard_normal((N_WAY * K, 1, 5, 5)).astype(np.float32)), torch.arange(N_WAY).repeat_interleave(K),
              torch.tensor(rng.standard_normal((N_WAY * Q, 1, 5, 5)).astype(np.float32)), torch.arange(N_WAY).repeat_interleave(Q))
             for _ in range(2)]
    outer_losses = []
    for step in range(2):
        optimizer.zero_grad()
        outer_loss_batch = []
        for images_support, labels_support, images_query, labels_query in tasks:
            adapted, acc = _inner_loop(images_support, labels_support, True)
            outer_loss_batch.append(F.cross_entropy(_forward(images_query, adapted), labels_query))
        outer_loss = torch.mean(torch.stack(outer_loss_batch))
        outer_loss.backward()
        optimizer.step()
        outer_losses.append(outer_loss.item())
    # (the conv biases b0, b1 feed a batch norm, so their gradients are rounding noise, which Adam scales
    # up to full steps: they and their learning rates are left out of the comparison)
    conv_biases = ('b0', 'b1')
    lr_grads = {k: v.grad for k, v in inner_lrs.items() if k not in conv_biases}

    # prototypical networks with the same encoder as a feature extractor
    def encode(x, parameters):
        for i in range(NUM_CONV_LAYERS):
            x = F.relu(F.batch_norm(F.conv2d(x, parameters[f'conv{i}'], parameters[f'b{i}'], padding='same'), None, None, training=True))
        return x.mean(dim=[2, 3])

    images_support, labels_support, images_query, labels_query = tasks[0]
    features_support = encode(images_support, meta_parameters)
    features_query = encode(images_query, meta_parameters)
    prototypes = torch.stack([features_support[labels_support == c].mean(dim=0) for c in range(N_WAY)])
    distances = torch.sum((features_query[:, None, :] - prototypes[None, :, :]) ** 2, dim=-1)
    by_cdist = torch.cdist(features_query, prototypes) ** 2
    proto_loss = F.cross_entropy(-distances, labels_query)
    proto_grads = torch.autograd.grad(proto_loss, [meta_parameters['conv0'], meta_parameters['conv1']])
    return {"outer_losses": outer_losses, "lr_grads": lr_grads, "params": {k: v.detach() for k, v in meta_parameters.items() if k not in conv_biases},
            "inner_lrs": {k: v.detach() for k, v in inner_lrs.items() if k not in conv_biases}, "acc": acc, "distances": distances,
            "by_cdist": by_cdist, "proto_loss": proto_loss, "proto_grads": proto_grads}


def test_cs330_maml_second_order_and_protonets():
    ours, _ = run_both(maml_and_protonet, rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(ours["by_cdist"], ours["distances"], rtol=1e-4, atol=1e-5)
    assert all(np.abs(g).sum() > 0 for g in ours["lr_grads"].values())  # the inner learning rates are learnt


# ----------------------------------------------------------------------------------------------
# Stanford CS224n, assignment 4: NMT with a packed bidirectional LSTM encoder, an LSTMCell decoder with
# multiplicative attention (masked through ``.data.masked_fill_``), the gathered log-likelihood, and beam
# search (``topk``, ``//`` and ``%`` on hypothesis positions)
# ----------------------------------------------------------------------------------------------


def make_nmt(m):
    torch, nn, F = m.torch, m.nn, m.F

    class NMT(nn.Module):
        def __init__(self, embed_size=4, hidden_size=5, src_vocab=9, tgt_vocab=8, dropout_rate=0.0):
            super().__init__()
            self.hidden_size = hidden_size
            self.source_embedding = nn.Embedding(src_vocab, embed_size, padding_idx=0)
            self.target_embedding = nn.Embedding(tgt_vocab, embed_size, padding_idx=0)
            self.post_embed_cnn = nn.Conv1d(embed_size, embed_size, kernel_size=2, padding="same")
            self.encoder = nn.LSTM(embed_size, hidden_size, bias=True, bidirectional=True)
            self.decoder = nn.LSTMCell(embed_size + hidden_size, hidden_size, bias=True)
            self.h_projection = nn.Linear(2 * hidden_size, hidden_size, bias=False)
            self.c_projection = nn.Linear(2 * hidden_size, hidden_size, bias=False)
            self.att_projection = nn.Linear(2 * hidden_size, hidden_size, bias=False)
            self.combined_output_projection = nn.Linear(3 * hidden_size, hidden_size, bias=False)
            self.target_vocab_projection = nn.Linear(hidden_size, tgt_vocab, bias=False)
            self.dropout = nn.Dropout(dropout_rate)

        def encode(self, source_padded, source_lengths):
            X = self.source_embedding(source_padded)
            X = self.post_embed_cnn(X.permute(1, 2, 0)).permute(2, 0, 1)
            X = nn.utils.rnn.pack_padded_sequence(X, source_lengths)
            enc_hiddens, (last_hidden, last_cell) = self.encoder(X)
            enc_hiddens = nn.utils.rnn.pad_packed_sequence(enc_hiddens)[0].permute(1, 0, 2)
            init_decoder_hidden = self.h_projection(torch.cat((last_hidden[0], last_hidden[1]), 1))
            init_decoder_cell = self.c_projection(torch.cat((last_cell[0], last_cell[1]), 1))
            return enc_hiddens, (init_decoder_hidden, init_decoder_cell)

        def step(self, Ybar_t, dec_state, enc_hiddens, enc_hiddens_proj, enc_masks):
            dec_state = self.decoder(Ybar_t, dec_state)
            dec_hidden, dec_cell = dec_state
            e_t = torch.bmm(enc_hiddens_proj, dec_hidden.unsqueeze(2)).squeeze(2)
            if enc_masks is not None:
                e_t.data.masked_fill_(enc_masks.bool(), -float('inf'))
            alpha_t = F.softmax(e_t, dim=1)
            a_t = torch.bmm(alpha_t.unsqueeze(1), enc_hiddens).squeeze(1)
            U_t = torch.cat((dec_hidden, a_t), 1)
            V_t = self.combined_output_projection(U_t)
            O_t = self.dropout(torch.tanh(V_t))
            return dec_state, O_t, e_t

        def decode(self, enc_hiddens, enc_masks, dec_init_state, target_padded):
            target_padded = target_padded[:-1]
            dec_state = dec_init_state
            batch_size = enc_hiddens.size(0)
            o_prev = torch.zeros(batch_size, self.hidden_size)
            combined_outputs = []
            enc_hiddens_proj = self.att_projection(enc_hiddens)
            Y = self.target_embedding(target_padded)
            for Y_t in torch.split(Y, 1, dim=0):
                Y_t = Y_t.squeeze(0)
                Ybar_t = torch.cat((Y_t, o_prev), dim=1)
                dec_state, o_t, e_t = self.step(Ybar_t, dec_state, enc_hiddens, enc_hiddens_proj, enc_masks)
                combined_outputs.append(o_t)
                o_prev = o_t
            return torch.stack(combined_outputs, dim=0)

        def generate_sent_masks(self, enc_hiddens, source_lengths):
            enc_masks = torch.zeros(enc_hiddens.size(0), enc_hiddens.size(1), dtype=torch.float)
            for e_id, src_len in enumerate(source_lengths):
                enc_masks[e_id, src_len:] = 1
            return enc_masks

        def forward(self, source_padded, source_lengths, target_padded):
            enc_hiddens, dec_init_state = self.encode(source_padded, source_lengths)
            enc_masks = self.generate_sent_masks(enc_hiddens, source_lengths)
            combined_outputs = self.decode(enc_hiddens, enc_masks, dec_init_state, target_padded)
            P = F.log_softmax(self.target_vocab_projection(combined_outputs), dim=-1)
            target_masks = (target_padded != 0).float()
            target_gold_words_log_prob = torch.gather(P, index=target_padded[1:].unsqueeze(-1), dim=-1).squeeze(-1) * target_masks[1:]
            scores = target_gold_words_log_prob.sum(dim=0)
            return scores

    return NMT()


def nmt(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, make_nmt(m), weights_of(make_nmt))
    # (src_len, batch) sorted by length, as the assignment's to_input_tensor gives them
    source_padded = torch.tensor([[3, 4, 5], [6, 7, 8], [5, 2, 0], [4, 0, 0]])
    source_lengths = [4, 3, 2]
    target_padded = torch.tensor([[1, 1, 1], [3, 4, 5], [6, 2, 2], [2, 0, 0]])  # <s>=1, </s>=2, <pad>=0
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for it in range(3):
        optimizer.zero_grad()
        example_losses = -model(source_padded, source_lengths, target_padded)
        batch_loss = example_losses.sum()
        loss = batch_loss / 3
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        losses.append((loss.item(), float(grad_norm)))
    grads = {k: p.grad for k, p in model.named_parameters()}

    # beam search over the trained model
    model.eval()
    tgt_vocab_size, beam_size, max_decoding_time_step = 8, 3, 4
    with torch.no_grad():
        src_sents_var = source_padded[:, :1]
        src_encodings, dec_init_vec = model.encode(src_sents_var, [4])
        src_encodings_att_linear = model.att_projection(src_encodings)
        h_tm1 = dec_init_vec
        att_tm1 = torch.zeros(1, model.hidden_size)
        hypotheses = [[1]]
        completed_hypotheses = []
        hyp_scores = torch.zeros(len(hypotheses), dtype=torch.float)
        t = 0
        while len(completed_hypotheses) < beam_size and t < max_decoding_time_step:
            t += 1
            hyp_num = len(hypotheses)
            exp_src_encodings = src_encodings.expand(hyp_num, src_encodings.size(1), src_encodings.size(2))
            exp_src_encodings_att_linear = src_encodings_att_linear.expand(hyp_num, src_encodings_att_linear.size(1),
                                                                           src_encodings_att_linear.size(2))
            y_tm1 = torch.tensor([hyp[-1] for hyp in hypotheses], dtype=torch.long)
            y_t_embed = model.target_embedding(y_tm1)
            x = torch.cat([y_t_embed, att_tm1], dim=-1)
            (h_t, cell_t), att_t, _ = model.step(x, h_tm1, exp_src_encodings, exp_src_encodings_att_linear, enc_masks=None)
            log_p_t = F.log_softmax(model.target_vocab_projection(att_t), dim=-1)
            live_hyp_num = beam_size - len(completed_hypotheses)
            contiuating_hyp_scores = (hyp_scores.unsqueeze(1).expand_as(log_p_t) + log_p_t).view(-1)
            top_cand_hyp_scores, top_cand_hyp_pos = torch.topk(contiuating_hyp_scores, k=live_hyp_num)
            prev_hyp_ids = torch.div(top_cand_hyp_pos, tgt_vocab_size, rounding_mode='floor')
            hyp_word_ids = top_cand_hyp_pos % tgt_vocab_size
            new_hypotheses, live_hyp_ids, new_hyp_scores = [], [], []
            for prev_hyp_id, hyp_word_id, cand_new_hyp_score in zip(prev_hyp_ids, hyp_word_ids, top_cand_hyp_scores):
                prev_hyp_id = prev_hyp_id.item()
                hyp_word_id = hyp_word_id.item()
                cand_new_hyp_score = cand_new_hyp_score.item()
                new_hyp_sent = hypotheses[prev_hyp_id] + [hyp_word_id]
                if hyp_word_id == 2:
                    completed_hypotheses.append((new_hyp_sent[1:-1], cand_new_hyp_score))
                else:
                    new_hypotheses.append(new_hyp_sent)
                    live_hyp_ids.append(prev_hyp_id)
                    new_hyp_scores.append(cand_new_hyp_score)
            if len(completed_hypotheses) == beam_size:
                break
            live_hyp_ids = torch.tensor(live_hyp_ids, dtype=torch.long)
            h_tm1 = (h_t[live_hyp_ids], cell_t[live_hyp_ids])
            att_tm1 = att_t[live_hyp_ids]
            hypotheses = new_hypotheses
            hyp_scores = torch.tensor(new_hyp_scores, dtype=torch.float)
        if len(completed_hypotheses) == 0:
            completed_hypotheses.append((hypotheses[0][1:], hyp_scores[0].item()))
        completed_hypotheses.sort(key=lambda hyp: hyp[1], reverse=True)
    return {"losses": losses, "grads": grads, "best": [h for h, s in completed_hypotheses],
            "scores": [s for h, s in completed_hypotheses], "enc_shape": tuple(src_encodings.shape)}


def test_cs224n_nmt_with_packed_lstm_attention_and_beam_search():
    ours, _ = run_both(nmt, rtol=2e-4, atol=2e-6)
    assert ours["losses"][-1][0] < ours["losses"][0][0]
    assert ours["enc_shape"] == (1, 4, 10)
    assert ours["scores"] == sorted(ours["scores"], reverse=True)


# ----------------------------------------------------------------------------------------------
# Berkeley CS285 (deep RL): a Gaussian policy as MultivariateNormal with a repeated scale_tril, a
# SAC-style tanh-squashed Normal (TanhTransform(cache_size=1) under Independent), a categorical
# policy, and the policy-gradient loss with an entropy bonus
# ----------------------------------------------------------------------------------------------


def make_policy(m):
    nn = m.nn
    return nn.ModuleDict({"mean_net": nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)),
                          "logits_net": nn.Linear(3, 4)})


def cs285_policies(m):
    torch, nn = m.torch, m.nn
    distributions = torch.distributions
    policy = load(m, make_policy(m), weights_of(make_policy))
    mean_net, logits_net = policy["mean_net"], policy["logits_net"]
    logstd = nn.Parameter(torch.zeros(2, dtype=torch.float32) - 0.5)
    rng = np.random.default_rng(23)

    def from_numpy(*args, **kwargs):
        return torch.from_numpy(*args, **kwargs).float()

    obs = from_numpy(rng.standard_normal((6, 3)))
    acts = from_numpy(np.tanh(rng.standard_normal((6, 2))) * 0.9)
    advantages = from_numpy(rng.standard_normal(6))
    batch_mean = mean_net(obs)
    scale_tril = torch.diag(torch.exp(logstd))
    batch_dim = batch_mean.shape[0]
    batch_scale_tril = scale_tril.repeat(batch_dim, 1, 1)
    action_distribution = distributions.MultivariateNormal(batch_mean, scale_tril=batch_scale_tril)
    log_prob = action_distribution.log_prob(acts)
    base = distributions.Normal(batch_mean, torch.exp(logstd))
    squashed = distributions.TransformedDistribution(base, [distributions.transforms.TanhTransform(cache_size=1)])
    squashed_log_prob = distributions.Independent(squashed, 1).log_prob(acts)
    entropy = action_distribution.entropy()
    loss = -(log_prob * advantages).mean() - (squashed_log_prob * advantages).mean() - 0.01 * entropy.mean()
    loss.backward()
    cat = distributions.Categorical(logits=logits_net(obs))
    discrete_acts = torch.tensor([0, 1, 2, 3, 0, 1])
    discrete_loss = -(cat.log_prob(discrete_acts) * advantages).sum() - cat.entropy().mean()
    discrete_loss.backward()

    # reward-to-go and a normalised advantage, as the homework computes them
    rewards = rng.standard_normal(5)
    rtg = np.array([sum(0.9 ** (k - t) * rewards[k] for k in range(t, 5)) for t in range(5)])
    adv = from_numpy(rtg)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    return {"log_prob": log_prob, "squashed_log_prob": squashed_log_prob, "entropy": entropy, "loss": loss,
            "logstd_grad": logstd.grad, "grads": {k: p.grad for k, p in policy.named_parameters()},
            "discrete_loss": discrete_loss, "adv": adv}


def test_cs285_gaussian_squashed_and_categorical_policies():
    ours, _ = run_both(cs285_policies, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["entropy"], 0.5 * 2 * (1 + np.log(2 * np.pi)) - 1.0, rtol=1e-5)
    assert abs(float(ours["adv"].mean())) < 1e-6
