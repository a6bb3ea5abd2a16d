# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""PyTorch's NLP tutorials (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same
weights, comparing losses, scores and parameters. The Bi-LSTM CRF ("Advanced: making dynamic decisions"), its forward
algorithm written with a scalar ``log_sum_exp`` over ``max_score.view(1, -1).expand(...)`` and its Viterbi decode by
``torch.max(vec, 1)``, and its partition function against the sum over all paths; the batched CRF of the pytorch-crf
package (kmkurn/pytorch-crf) on top of a BiLSTM, with a bool mask and its default uint8 mask."""

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Bi-LSTM CRF
# ----------------------------------------------------------------------------------------------

START_TAG, STOP_TAG = "<START>", "<STOP>"
CRF_DATA = [("the wall street journal reported today that apple corporation made money".split(),
             "B I I I O O O B I O O".split()),
            ("georgia tech is a university in georgia".split(), "B I O O O O B".split())]
CRF_WORDS = {}
for _sentence, _ in CRF_DATA:
    for _word in _sentence:
        CRF_WORDS.setdefault(_word, len(CRF_WORDS))
CRF_TAGS = {"B": 0, "I": 1, "O": 2, START_TAG: 3, STOP_TAG: 4}


def bilstm_crf(m, hidden_init=None):
    torch, nn = m.torch, m.nn

    def argmax(vec):
        # return the argmax as a python int
        _, idx = torch.max(vec, 1)
        return idx.item()

    # Compute log sum exp in a numerically stable way for the forward algorithm
    def log_sum_exp(vec):
        max_score = vec[0, argmax(vec)]
        max_score_broadcast = max_score.view(1, -1).expand(1, vec.size()[1])
        return max_score + torch.log(torch.sum(torch.exp(vec - max_score_broadcast)))

    class BiLSTM_CRF(nn.Module):
        def __init__(self, vocab_size, tag_to_ix, embedding_dim, hidden_dim):
            super(BiLSTM_CRF, self).__init__()
            self.embedding_dim = embedding_dim
            self.hidden_dim = hidden_dim
            self.vocab_size = vocab_size
            self.tag_to_ix = tag_to_ix
            self.tagset_size = len(tag_to_ix)
            self.word_embeds = nn.Embedding(vocab_size, embedding_dim)
            self.lstm = nn.LSTM(embedding_dim, hidden_dim // 2, num_layers=1, bidirectional=True)
            self.hidden2tag = nn.Linear(hidden_dim, self.tagset_size)
            self.transitions = nn.Parameter(torch.randn(self.tagset_size, self.tagset_size))
            self.transitions.data[tag_to_ix[START_TAG], :] = -10000
            self.transitions.data[:, tag_to_ix[STOP_TAG]] = -10000
            self.hidden = self.init_hidden()

        def init_hidden(self):
            # the tutorial draws torch.randn here; the same draw for both libraries instead
            if hidden_init is None:
                return (torch.zeros(2, 1, self.hidden_dim // 2), torch.zeros(2, 1, self.hidden_dim // 2))
            return (torch.tensor(hidden_init[0]), torch.tensor(hidden_init[1]))

        def _forward_alg(self, feats):
            init_alphas = torch.full((1, self.tagset_size), -10000.)
            init_alphas[0][self.tag_to_ix[START_TAG]] = 0.
            forward_var = init_alphas
            for feat in feats:
                alphas_t = []
                for next_tag in range(self.tagset_size):
                    emit_score = feat[next_tag].view(1, -1).expand(1, self.tagset_size)
                    trans_score = self.transitions[next_tag].view(1, -1)
                    next_tag_var = forward_var + trans_score + emit_score
                    alphas_t.append(log_sum_exp(next_tag_var).view(1))
                forward_var = torch.cat(alphas_t).view(1, -1)
            terminal_var = forward_var + self.transitions[self.tag_to_ix[STOP_TAG]]
            alpha = log_sum_exp(terminal_var)
            return alpha

        def _get_lstm_features(self, sentence):
            self.hidden = self.init_hidden()
            embeds = self.word_embeds(sentence).view(len(sentence), 1, -1)
            lstm_out, self.hidden = self.lstm(embeds, self.hidden)
            lstm_out = lstm_out.view(len(sentence), self.hidden_dim)
            lstm_feats = self.hidden2tag(lstm_out)
            return lstm_feats

        def _score_sentence(self, feats, tags):
            score = torch.zeros(1)
            tags = torch.cat([torch.tensor([self.tag_to_ix[START_TAG]], dtype=torch.long), tags])
            for i, feat in enumerate(feats):
                score = score + self.transitions[tags[i + 1], tags[i]] + feat[tags[i + 1]]
            score = score + self.transitions[self.tag_to_ix[STOP_TAG], tags[-1]]
            return score

        def _viterbi_decode(self, feats):
            backpointers = []
            init_vvars = torch.full((1, self.tagset_size), -10000.)
            init_vvars[0][self.tag_to_ix[START_TAG]] = 0
            forward_var = init_vvars
            for feat in feats:
                bptrs_t = []
                viterbivars_t = []
                for next_tag in range(self.tagset_size):
                    next_tag_var = forward_var + self.transitions[next_tag]
                    best_tag_id = argmax(next_tag_var)
                    bptrs_t.append(best_tag_id)
                    viterbivars_t.append(next_tag_var[0][best_tag_id].view(1))
                forward_var = (torch.cat(viterbivars_t) + feat).view(1, -1)
                backpointers.append(bptrs_t)
            terminal_var = forward_var + self.transitions[self.tag_to_ix[STOP_TAG]]
            best_tag_id = argmax(terminal_var)
            path_score = terminal_var[0][best_tag_id]
            best_path = [best_tag_id]
            for bptrs_t in reversed(backpointers):
                best_tag_id = bptrs_t[best_tag_id]
                best_path.append(best_tag_id)
            start = best_path.pop()
            assert start == self.tag_to_ix[START_TAG]  # Sanity check
            best_path.reverse()
            return path_score, best_path

        def neg_log_likelihood(self, sentence, tags):
            feats = self._get_lstm_features(sentence)
            forward_score = self._forward_alg(feats)
            gold_score = self._score_sentence(feats, tags)
            return forward_score - gold_score

        def forward(self, sentence):
            lstm_feats = self._get_lstm_features(sentence)
            score, tag_seq = self._viterbi_decode(lstm_feats)
            return score, tag_seq

    return BiLSTM_CRF(len(CRF_WORDS), CRF_TAGS, 5, 4)


def bilstm_crf_training(m, weights, hidden_init, epochs=6):
    torch, optim = m.torch, m.optim

    def prepare_sequence(seq, to_ix):
        idxs = [to_ix[w] for w in seq]
        return torch.tensor(idxs, dtype=torch.long)

    model = load(m, bilstm_crf(m, hidden_init), weights)
    optimizer = optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4)
    with torch.no_grad():
        precheck_sent = prepare_sequence(CRF_DATA[0][0], CRF_WORDS)
        precheck_tags = torch.tensor([CRF_TAGS[t] for t in CRF_DATA[0][1]], dtype=torch.long)
        before = model(precheck_sent)
        nll_before = model.neg_log_likelihood(precheck_sent, precheck_tags)
    losses = []
    for epoch in range(epochs):
        for sentence, tags in CRF_DATA:
            model.zero_grad()
            sentence_in = prepare_sequence(sentence, CRF_WORDS)
            targets = torch.tensor([CRF_TAGS[t] for t in tags], dtype=torch.long)
            loss = model.neg_log_likelihood(sentence_in, targets)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    grads = [p.grad.clone() for p in model.parameters()]
    with torch.no_grad():
        after = model(precheck_sent)
    return {"before": before, "nll_before": nll_before, "losses": losses, "after": after, "grads": grads,
            "transitions": model.transitions.detach()}


def test_bilstm_crf():
    weights = weights_of(bilstm_crf)
    rng = np.random.default_rng(1)
    hidden = [rng.standard_normal((2, 1, 2)).astype(np.float32) for _ in range(2)]
    ours, _ = run_both(bilstm_crf_training, weights, hidden, rtol=1e-4, atol=1e-4)
    assert ours["losses"][-1] < ours["losses"][0]
    assert len(ours["after"][1]) == len(CRF_DATA[0][0]) and all(0 <= t < 3 for t in ours["after"][1])
    assert ours["nll_before"].shape == (1,) and ours["nll_before"][0] > 0  # the gold path is one of many
    # never into START nor out of STOP: those rows and columns get no gradient but weight decay's
    assert (ours["transitions"][CRF_TAGS[START_TAG], :] < -9000).all()


def test_crf_partition_function_is_the_sum_over_all_paths():
    """The forward algorithm against brute force over every tag sequence of a 3-word sentence."""
    import itertools

    model = bilstm_crf(OURS)
    feats = OURS.torch.tensor(np.random.default_rng(0).standard_normal((3, 5)).astype(np.float64))
    model.double()
    alpha = model._forward_alg(feats).item()
    T = model.transitions.detach().numpy()
    f = feats.numpy()
    scores = []
    for path in itertools.product(range(5), repeat=3):
        s, prev = 0.0, CRF_TAGS[START_TAG]
        for i, tag in enumerate(path):
            s += T[tag, prev] + f[i, tag]
            prev = tag
        scores.append(s + T[CRF_TAGS[STOP_TAG], prev])
    assert np.isclose(alpha, np.logaddexp.reduce(scores), rtol=1e-9)
    score, path = model._viterbi_decode(feats)
    assert np.isclose(score.item(), max(scores)) and len(path) == 3


# ----------------------------------------------------------------------------------------------
# The batched CRF of the pytorch-crf package (kmkurn/pytorch-crf), on top of a BiLSTM
# ----------------------------------------------------------------------------------------------


def crf_tagger(m):
    torch, nn = m.torch, m.nn

    class CRF(nn.Module):
        def __init__(self, num_tags, batch_first=False):
            if num_tags <= 0:
                raise ValueError(f'invalid number of tags: {num_tags}')
            super().__init__()
            self.num_tags = num_tags
            self.batch_first = batch_first
            self.start_transitions = nn.Parameter(torch.empty(num_tags))
            self.end_transitions = nn.Parameter(torch.empty(num_tags))
            self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
            self.reset_parameters()

        def reset_parameters(self):
            nn.init.uniform_(self.start_transitions, -0.1, 0.1)
            nn.init.uniform_(self.end_transitions, -0.1, 0.1)
            nn.init.uniform_(self.transitions, -0.1, 0.1)

        def forward(self, emissions, tags, mask=None, reduction='sum'):
            if reduction not in ('none', 'sum', 'mean', 'token_mean'):
                raise ValueError(f'invalid reduction: {reduction}')
            if mask is None:
                mask = torch.ones_like(tags, dtype=torch.uint8)
            if self.batch_first:
                emissions = emissions.transpose(0, 1)
                tags = tags.transpose(0, 1)
                mask = mask.transpose(0, 1)
            numerator = self._compute_score(emissions, tags, mask)
            denominator = self._compute_normalizer(emissions, mask)
            llh = numerator - denominator
            if reduction == 'none':
                return llh
            if reduction == 'sum':
                return llh.sum()
            if reduction == 'mean':
                return llh.mean()
            assert reduction == 'token_mean'
            return llh.sum() / mask.float().sum()

        def decode(self, emissions, mask=None):
            if mask is None:
                mask = emissions.new_ones(emissions.shape[:2], dtype=torch.uint8)
            if self.batch_first:
                emissions = emissions.transpose(0, 1)
                mask = mask.transpose(0, 1)
            return self._viterbi_decode(emissions, mask)

        def _compute_score(self, emissions, tags, mask):
            seq_length, batch_size = tags.shape
            mask = mask.float()
            score = self.start_transitions[tags[0]]
            score += emissions[0, torch.arange(batch_size), tags[0]]
            for i in range(1, seq_length):
                score += self.transitions[tags[i - 1], tags[i]] * mask[i]
                score += emissions[i, torch.arange(batch_size), tags[i]] * mask[i]
            seq_ends = mask.long().sum(dim=0) - 1
            last_tags = tags[seq_ends, torch.arange(batch_size)]
            score += self.end_transitions[last_tags]
            return score

        def _compute_normalizer(self, emissions, mask):
            seq_length = emissions.size(0)
            score = self.start_transitions + emissions[0]
            for i in range(1, seq_length):
                broadcast_score = score.unsqueeze(2)
                broadcast_emissions = emissions[i].unsqueeze(1)
                next_score = broadcast_score + self.transitions + broadcast_emissions
                next_score = torch.logsumexp(next_score, dim=1)
                score = torch.where(mask[i].unsqueeze(1), next_score, score)
            score += self.end_transitions
            return torch.logsumexp(score, dim=1)

        def _viterbi_decode(self, emissions, mask):
            seq_length, batch_size = mask.shape
            score = self.start_transitions + emissions[0]
            history = []
            for i in range(1, seq_length):
                broadcast_score = score.unsqueeze(2)
                broadcast_emission = emissions[i].unsqueeze(1)
                next_score = broadcast_score + self.transitions + broadcast_emission
                next_score, indices = next_score.max(dim=1)
                score = torch.where(mask[i].unsqueeze(1), next_score, score)
                history.append(indices)
            score += self.end_transitions
            seq_ends = mask.long().sum(dim=0) - 1
            best_tags_list = []
            for idx in range(batch_size):
                _, best_last_tag = score[idx].max(dim=0)
                best_tags = [best_last_tag.item()]
                for hist in reversed(history[:seq_ends[idx]]):
                    best_last_tag = hist[idx][best_tags[-1]]
                    best_tags.append(best_last_tag.item())
                best_tags.reverse()
                best_tags_list.append(best_tags)
            return best_tags_list

    class BiLSTMCRF(nn.Module):
        def __init__(self, vocab_size, num_tags, embedding_dim=6, hidden_dim=8):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
            self.lstm = nn.LSTM(embedding_dim, hidden_dim // 2, bidirectional=True, batch_first=True)
            self.hidden2tag = nn.Linear(hidden_dim, num_tags)
            self.crf = CRF(num_tags, batch_first=True)

        def forward(self, x):
            return self.hidden2tag(self.lstm(self.embedding(x))[0])

    return BiLSTMCRF(len(CRF_WORDS) + 1, 3)


def crf_training(m, weights, mask_dtype="bool", epochs=6):
    torch = m.torch
    model = load(m, crf_tagger(m), weights)
    tag_ix = {"B": 0, "I": 1, "O": 2}
    longest = max(len(s) for s, _ in CRF_DATA)
    x = torch.zeros(len(CRF_DATA), longest, dtype=torch.long)
    tags = torch.zeros(len(CRF_DATA), longest, dtype=torch.long)
    for b, (sentence, labels) in enumerate(CRF_DATA):
        x[b, :len(sentence)] = torch.tensor([CRF_WORDS[w] + 1 for w in sentence])
        tags[b, :len(labels)] = torch.tensor([tag_ix[t] for t in labels])
    mask = (x != 0).to(getattr(torch, mask_dtype))
    optimizer = m.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for epoch in range(epochs):
        optimizer.zero_grad()
        loss = -model.crf(model(x), tags, mask=mask, reduction="mean")
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        emissions = model(x)
        decoded = model.crf.decode(emissions, mask=mask)
        per_sequence = model.crf(emissions, tags, mask=mask, reduction="none")
        token_mean = model.crf(emissions, tags, mask=mask, reduction="token_mean")
        n = len(CRF_DATA[0][0])  # no padding: the package's default mask, all ones in uint8
        default = None if mask_dtype == "uint8" else torch.ones(1, n, dtype=torch.bool)
        unmasked = model.crf(emissions[:1, :n], tags[:1, :n], mask=default)
    return {"losses": losses, "decoded": decoded, "per_sequence": per_sequence, "token_mean": token_mean,
            "unmasked": unmasked, "grads": [p.grad for p in model.parameters()]}


def test_pytorch_crf_with_a_bool_mask():
    weights = weights_of(crf_tagger)
    ours, _ = run_both(crf_training, weights, rtol=1e-4, atol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0]
    assert [len(d) for d in ours["decoded"]] == [len(s) for s, _ in CRF_DATA]
    assert np.isclose(ours["per_sequence"].sum() / 18, ours["token_mean"], rtol=1e-6)
    assert np.isclose(ours["unmasked"], ours["per_sequence"][0], rtol=1e-5)  # the first sentence is the longest
    assert (ours["per_sequence"] < 0).all()  # log-likelihoods


def test_pytorch_crf_with_its_default_uint8_mask():
    weights = weights_of(crf_tagger)
    ours, _ = run_both(crf_training, weights, mask_dtype="uint8", rtol=1e-4, atol=1e-5)
    bools = crf_training(OURS, weights)
    np.testing.assert_allclose(ours["losses"], bools["losses"], rtol=1e-6)
    with pytest.warns(UserWarning, match="where received a uint8 condition tensor"):
        OURS.torch.where(OURS.torch.tensor([1, 0], dtype=OURS.torch.uint8), 1.0, 0.0)
