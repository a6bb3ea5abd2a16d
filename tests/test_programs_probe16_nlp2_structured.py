# ruff: noqa: B007, F841, UP004, UP008  (the programs are kept as their authors wrote them)
"""Classic NLP programs (see tests/pytorch_programs.py) not already among the program tests, run on chainrule and on
PyTorch from the same weights and data, comparing losses, gradients, decoded outputs and short training trajectories;
dropout-on variants are compared where PyTorch draws its Bernoulli masks as chainrule does (AMD processors), and run
for finite values elsewhere. Structures over words: AllenNLP's CRF (the forward algorithm with a bool mask, k-best
Viterbi by ``topk`` and ``%``, marginals and expected transition counts as gradients of log Z, checked against
enumerating every path); the child-sum Tree-LSTM on sentence similarity (recursion, KLDivLoss, ``torch.randperm``,
Pearson); a hierarchical attention network over sentences and documents (empty sentences kept out of the packed word
GRU, ``index_copy`` back, masked attention at both levels)."""

import copy
import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# AllenNLP's ConditionalRandomField on a packed BiLSTM: the forward algorithm in a loop over time with a
# bool mask (logsumexp by max, ``alpha * (~mask)``), the gold score by fancy indexing and ``gather``, k-best
# Viterbi by ``topk`` over flattened scores with ``% num_tags``, posterior marginals as the gradient of
# log Z (``torch.autograd.grad``), checked against enumerating every path
# ----------------------------------------------------------------------------------------------

N_TAGS, TAG_WORDS = 4, 9
CRF_SENTS = [[1, 2, 3, 4, 5], [6, 7], [8, 1, 2], [3, 3, 4, 5]]
CRF_GOLD = [[0, 1, 1, 2, 3], [0, 3], [2, 2, 1], [0, 1, 2, 2]]


def allennlp_crf(m, emb=5, hid=4):
    torch, nn = m.torch, m.nn

    def logsumexp(tensor, dim=-1, keepdim=False):
        max_score, _ = tensor.max(dim, keepdim=keepdim)
        if keepdim:
            stable_vec = tensor - max_score
        else:
            stable_vec = tensor - max_score.unsqueeze(dim)
        return max_score + (stable_vec.exp().sum(dim, keepdim=keepdim)).log()

    def viterbi_decode(tag_sequence, transition_matrix, top_k=2):
        sequence_length, num_tags = list(tag_sequence.size())
        path_scores = []
        path_indices = []
        path_scores.append(tag_sequence[0, :].unsqueeze(0))
        for timestep in range(1, sequence_length):
            # Add pairwise potentials to current scores.
            summed_potentials = path_scores[timestep - 1].unsqueeze(2) + transition_matrix
            summed_potentials = summed_potentials.view(-1, num_tags)
            # Best pairwise potential path score from the previous timestep.
            max_k = min(summed_potentials.size()[0], top_k)
            scores, paths = torch.topk(summed_potentials, k=max_k, dim=0)
            path_scores.append(tag_sequence[timestep, :] + scores)
            path_indices.append(paths.squeeze())
        # Construct the most likely sequence backwards.
        path_scores_v = path_scores[-1].view(-1)
        max_k = min(path_scores_v.size()[0], top_k)
        viterbi_scores, best_paths = torch.topk(path_scores_v, k=max_k, dim=0)
        viterbi_paths = []
        for i in range(max_k):
            viterbi_path = [best_paths[i]]
            for backward_timestep in reversed(path_indices):
                viterbi_path.append(int(backward_timestep.view(-1)[viterbi_path[-1]]))
            viterbi_path.reverse()
            viterbi_path = [int(j % num_tags) for j in viterbi_path]
            viterbi_paths.append(viterbi_path)
        return viterbi_paths, viterbi_scores

    class ConditionalRandomField(nn.Module):
        def __init__(self, num_tags, include_start_end_transitions=True):
            super().__init__()
            self.num_tags = num_tags
            self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
            self.include_start_end_transitions = include_start_end_transitions
            if include_start_end_transitions:
                self.start_transitions = nn.Parameter(torch.Tensor(num_tags))
                self.end_transitions = nn.Parameter(torch.Tensor(num_tags))
            self.reset_parameters()

        def reset_parameters(self):
            nn.init.xavier_normal_(self.transitions)
            if self.include_start_end_transitions:
                nn.init.normal_(self.start_transitions)
                nn.init.normal_(self.end_transitions)

        def _input_likelihood(self, logits, mask):
            batch_size, sequence_length, num_tags = logits.size()
            mask = mask.transpose(0, 1).contiguous()
            logits = logits.transpose(0, 1).contiguous()
            if self.include_start_end_transitions:
                alpha = self.start_transitions.view(1, num_tags) + logits[0]
            else:
                alpha = logits[0]
            for i in range(1, sequence_length):
                emit_scores = logits[i].view(batch_size, 1, num_tags)
                transition_scores = self.transitions.view(1, num_tags, num_tags)
                broadcast_alpha = alpha.view(batch_size, num_tags, 1)
                inner = broadcast_alpha + emit_scores + transition_scores
                alpha = logsumexp(inner, 1) * mask[i].view(batch_size, 1) + alpha * (~mask[i]).view(batch_size, 1)
            if self.include_start_end_transitions:
                stops = alpha + self.end_transitions.view(1, num_tags)
            else:
                stops = alpha
            return logsumexp(stops)

        def _joint_likelihood(self, logits, tags, mask):
            batch_size, sequence_length, _ = logits.data.shape
            logits = logits.transpose(0, 1).contiguous()
            mask = mask.transpose(0, 1).contiguous()
            tags = tags.transpose(0, 1).contiguous()
            if self.include_start_end_transitions:
                score = self.start_transitions.index_select(0, tags[0])
            else:
                score = 0.0
            for i in range(sequence_length - 1):
                current_tag, next_tag = tags[i], tags[i + 1]
                transition_score = self.transitions[current_tag.view(-1), next_tag.view(-1)]
                emit_score = logits[i].gather(1, current_tag.view(batch_size, 1)).squeeze(1)
                score = score + transition_score * mask[i + 1] + emit_score * mask[i]
            last_tag_index = mask.sum(0).long() - 1
            last_tags = tags.gather(0, last_tag_index.view(1, batch_size)).squeeze(0)
            if self.include_start_end_transitions:
                last_transition_score = self.end_transitions.index_select(0, last_tags)
            else:
                last_transition_score = 0.0
            last_inputs = logits[-1]
            last_input_score = last_inputs.gather(1, last_tags.view(-1, 1))
            last_input_score = last_input_score.squeeze()
            score = score + last_transition_score + last_input_score * mask[-1]
            return score

        def forward(self, inputs, tags, mask=None):
            if mask is None:
                mask = torch.ones(*tags.size(), dtype=torch.bool, device=inputs.device)
            else:
                mask = mask.to(torch.bool)
            log_denominator = self._input_likelihood(inputs, mask)
            log_numerator = self._joint_likelihood(inputs, tags, mask)
            return torch.sum(log_numerator - log_denominator)

        def viterbi_tags(self, logits, mask, top_k=2):
            _, max_seq_length, num_tags = logits.size()
            logits, mask = logits.data, mask.data
            best_paths = []
            for prediction, prediction_mask in zip(logits, mask):
                mask_indices = prediction_mask.nonzero(as_tuple=False).squeeze()
                masked_prediction = torch.index_select(prediction, 0, mask_indices)
                tag_sequence = masked_prediction.clone()
                tag_sequence[0] += self.start_transitions
                tag_sequence[-1] += self.end_transitions
                viterbi_paths, viterbi_scores = viterbi_decode(tag_sequence, self.transitions, top_k=top_k)
                best_paths.append(list(zip(viterbi_paths, viterbi_scores.tolist())))
            return best_paths

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(TAG_WORDS, emb, padding_idx=0)
            self.lstm = nn.LSTM(emb, hid, batch_first=True, bidirectional=True)
            self.proj = nn.Linear(2 * hid, N_TAGS)
            self.crf = ConditionalRandomField(N_TAGS)

        def emissions(self, tokens, mask):
            lengths = mask.sum(-1)
            packed = nn.utils.rnn.pack_padded_sequence(self.embed(tokens), lengths, batch_first=True,
                                                       enforce_sorted=False)
            out, _ = self.lstm(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=tokens.size(1))
            return self.proj(out)

    return Tagger()


def allennlp_crf_program(m, weights, steps=3):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, allennlp_crf(m), weights)
    tokens = nn.utils.rnn.pad_sequence([torch.tensor(s) for s in CRF_SENTS], batch_first=True)
    tags = nn.utils.rnn.pad_sequence([torch.tensor(t) for t in CRF_GOLD], batch_first=True)
    mask = tokens != 0
    opt = optim.Adam(model.parameters(), lr=0.05)
    nlls = []
    for step in range(steps):
        logits = model.emissions(tokens, mask)
        loss = -model.crf(logits, tags, mask) / tokens.size(0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        nlls.append(loss.item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    # posterior marginals: d log Z / d emissions
    logits = model.emissions(tokens, mask).detach().requires_grad_()
    log_Z = model.crf._input_likelihood(logits, mask)
    # and the expected transition counts: d log Z / d transitions
    marginals, trans_counts = torch.autograd.grad(log_Z.sum(), [logits, model.crf.transitions])
    best = model.crf.viterbi_tags(logits, mask, top_k=2)
    params = {k: v.detach() for k, v in model.crf.named_parameters()}
    return nlls, grads, logits, log_Z, marginals, trans_counts, best, params


def enumerate_crf(emissions, transitions, start, end):
    """log Z, the marginals and the expected transition counts of one sentence, by every path."""
    L, K = emissions.shape
    paths = np.array(np.meshgrid(*[np.arange(K)] * L, indexing="ij")).reshape(L, -1).T
    scores = (start[paths[:, 0]] + end[paths[:, -1]] + emissions[np.arange(L), paths].sum(1)
              + transitions[paths[:, :-1], paths[:, 1:]].sum(1))
    log_Z = np.logaddexp.reduce(scores)
    p = np.exp(scores - log_Z)
    marginals = np.zeros((L, K))
    counts = np.zeros((K, K))
    for path, weight in zip(paths, p):
        marginals[np.arange(L), path] += weight
        np.add.at(counts, (path[:-1], path[1:]), weight)
    best = paths[np.argsort(-scores)[:2]]
    return log_Z, marginals, counts, best, np.sort(scores)[::-1][:2]


def test_allennlp_crf_forward_algorithm_viterbi_and_marginals():
    weights = weights_of(allennlp_crf)
    ours, theirs = run_both(allennlp_crf_program, weights, rtol=1e-4, atol=1e-5)
    nlls, grads, logits, log_Z, marginals, trans_counts, best, params = ours
    assert nlls[-1] < nlls[0]
    p = {k: v.astype(np.float64) for k, v in params.items()}
    counts = np.zeros((N_TAGS, N_TAGS))
    for b, sent in enumerate(CRF_SENTS):
        L = len(sent)
        want_Z, want_marg, want_counts, want_best, want_scores = enumerate_crf(
            logits[b, :L].astype(np.float64), p["transitions"], p["start_transitions"], p["end_transitions"])
        np.testing.assert_allclose(log_Z[b], want_Z, rtol=1e-5)
        np.testing.assert_allclose(marginals[b, :L], want_marg, atol=1e-5)
        assert np.all(marginals[b, L:] == 0)  # the padding steps do not touch log Z
        counts += want_counts
        assert [path for path, _ in best[b]] == want_best.tolist()
        np.testing.assert_allclose([score for _, score in best[b]], want_scores, rtol=1e-5)
    np.testing.assert_allclose(trans_counts, counts, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# the child-sum Tree-LSTM on sentence similarity (Tai et al. 2015, as dasguptar/treelstm.pytorch writes it):
# recursion over trees read from parent pointers, leaves' zero states by ``detach().new(1, d).fill_(0.)
# .requires_grad_()``, ``zip(*map(...))`` of the children's states, ``repeat``, a similarity head over
# |l - r| by ``torch.add(l, -r)``, KLDivLoss against a two-hot target, gradients summed over a batch of
# trees before an Adagrad step, ``torch.randperm`` order, and Pearson/MSE metrics
# ----------------------------------------------------------------------------------------------

TREE_PAIRS = [  # (left parents, left words, right parents, right words, similarity in [1, 5])
    ([2, 0, 2], [3, 4, 5], [2, 0], [3, 6], 3.6),
    ([0, 1, 1, 3], [7, 8, 4, 5], [3, 3, 0, 3], [8, 7, 4, 6], 4.2),
    ([2, 3, 0], [6, 5, 3], [0, 1, 2, 2], [5, 6, 3, 9], 1.7),
    ([0], [9], [2, 0], [9, 8], 2.0),
    ([3, 3, 0, 3, 4], [3, 4, 5, 6, 7], [2, 0, 2], [4, 5, 7], 4.9),
]


def tree_lstm(m, vocab_size=10, in_dim=5, mem_dim=6, hidden_dim=4, num_classes=5):
    torch, nn, F = m.torch, m.nn, m.F

    class ChildSumTreeLSTM(nn.Module):
        def __init__(self, in_dim, mem_dim):
            super(ChildSumTreeLSTM, self).__init__()
            self.in_dim = in_dim
            self.mem_dim = mem_dim
            self.ioux = nn.Linear(self.in_dim, 3 * self.mem_dim)
            self.iouh = nn.Linear(self.mem_dim, 3 * self.mem_dim)
            self.fx = nn.Linear(self.in_dim, self.mem_dim)
            self.fh = nn.Linear(self.mem_dim, self.mem_dim)

        def node_forward(self, inputs, child_c, child_h):
            child_h_sum = torch.sum(child_h, dim=0, keepdim=True)

            iou = self.ioux(inputs) + self.iouh(child_h_sum)
            i, o, u = torch.split(iou, iou.size(1) // 3, dim=1)
            i, o, u = torch.sigmoid(i), torch.sigmoid(o), torch.tanh(u)

            f = torch.sigmoid(
                self.fh(child_h) +
                self.fx(inputs).repeat(len(child_h), 1)
            )
            fc = torch.mul(f, child_c)

            c = torch.mul(i, u) + torch.sum(fc, dim=0, keepdim=True)
            h = torch.mul(o, torch.tanh(c))
            return c, h

        def forward(self, tree, inputs):
            for idx in range(tree.num_children):
                self.forward(tree.children[idx], inputs)

            if tree.num_children == 0:
                child_c = inputs[0].detach().new(1, self.mem_dim).fill_(0.).requires_grad_()
                child_h = inputs[0].detach().new(1, self.mem_dim).fill_(0.).requires_grad_()
            else:
                child_c, child_h = zip(* map(lambda x: x.state, tree.children))
                child_c, child_h = torch.cat(child_c, dim=0), torch.cat(child_h, dim=0)

            tree.state = self.node_forward(inputs[tree.idx], child_c, child_h)
            return tree.state

    class Similarity(nn.Module):
        def __init__(self, mem_dim, hidden_dim, num_classes):
            super(Similarity, self).__init__()
            self.mem_dim = mem_dim
            self.hidden_dim = hidden_dim
            self.num_classes = num_classes
            self.wh = nn.Linear(2 * self.mem_dim, self.hidden_dim)
            self.wp = nn.Linear(self.hidden_dim, self.num_classes)

        def forward(self, lvec, rvec):
            mult_dist = torch.mul(lvec, rvec)
            abs_dist = torch.abs(torch.add(lvec, -rvec))
            vec_dist = torch.cat((mult_dist, abs_dist), 1)

            out = torch.sigmoid(self.wh(vec_dist))
            out = F.log_softmax(self.wp(out), dim=1)
            return out

    class SimilarityTreeLSTM(nn.Module):
        def __init__(self, vocab_size, in_dim, mem_dim, hidden_dim, num_classes, sparsity, freeze):
            super(SimilarityTreeLSTM, self).__init__()
            self.emb = nn.Embedding(vocab_size, in_dim, padding_idx=0, sparse=sparsity)
            if freeze:
                self.emb.weight.requires_grad = False
            self.childsumtreelstm = ChildSumTreeLSTM(in_dim, mem_dim)
            self.similarity = Similarity(mem_dim, hidden_dim, num_classes)

        def forward(self, ltree, linputs, rtree, rinputs):
            linputs = self.emb(linputs)
            rinputs = self.emb(rinputs)
            lstate, lhidden = self.childsumtreelstm(ltree, linputs)
            rstate, rhidden = self.childsumtreelstm(rtree, rinputs)
            output = self.similarity(lstate, rstate)
            return output

    return SimilarityTreeLSTM(vocab_size, in_dim, mem_dim, hidden_dim, num_classes, False, False)


class Tree(object):
    def __init__(self):
        self.parent = None
        self.num_children = 0
        self.children = list()

    def add_child(self, child):
        child.parent = self
        self.num_children += 1
        self.children.append(child)


def read_tree(parents):
    """A tree from 1-based parent pointers (0 marks the root), as treelstm.pytorch's dataset reads them."""
    trees = dict()
    root = None
    for i in range(1, len(parents) + 1):
        if i - 1 not in trees.keys() and parents[i - 1] != -1:
            idx = i
            prev = None
            while True:
                parent = parents[idx - 1]
                if parent == -1:
                    break
                tree = Tree()
                if prev is not None:
                    tree.add_child(prev)
                trees[idx - 1] = tree
                tree.idx = idx - 1
                if parent - 1 in trees.keys():
                    trees[parent - 1].add_child(tree)
                    break
                elif parent == 0:
                    root = tree
                    break
                else:
                    prev = tree
                    idx = parent
    return root


def tree_lstm_training(m, weights, epochs=2, batchsize=2, num_classes=5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, tree_lstm(m), weights)
    criterion = nn.KLDivLoss(reduction="batchmean")
    optimizer = optim.Adagrad(filter(lambda p: p.requires_grad, model.parameters()), lr=0.05, weight_decay=1e-4)

    def map_label_to_target(label, num_classes):
        target = torch.zeros(1, num_classes, dtype=torch.float, device='cpu')
        ceil = int(math.ceil(label))
        floor = int(math.floor(label))
        if ceil == floor:
            target[0, floor - 1] = 1
        else:
            target[0, floor - 1] = ceil - label
            target[0, ceil - 1] = label - floor
        return target

    dataset = [(read_tree(lp), torch.tensor(lw), read_tree(rp), torch.tensor(rw), label)
               for lp, lw, rp, rw, label in TREE_PAIRS]
    torch.manual_seed(123)
    epoch_losses = []
    for epoch in range(epochs):
        model.train()
        optimizer.zero_grad()
        total_loss = 0.0
        indices = torch.randperm(len(dataset), dtype=torch.long, device='cpu')
        for idx in range(len(dataset)):
            ltree, linput, rtree, rinput, label = dataset[indices[idx]]
            target = map_label_to_target(label, num_classes)
            output = model(ltree, linput, rtree, rinput)
            loss = criterion(output, target)
            total_loss += loss.item()
            loss.backward()
            if idx % batchsize == 0 and idx > 0:
                optimizer.step()
                optimizer.zero_grad()
        epoch_losses.append(total_loss / len(dataset))

    model.eval()
    with torch.no_grad():
        predictions = torch.zeros(len(dataset), dtype=torch.float, device='cpu')
        indices = torch.arange(1, num_classes + 1, dtype=torch.float, device='cpu')
        for idx in range(len(dataset)):
            ltree, linput, rtree, rinput, label = dataset[idx]
            output = model(ltree, linput, rtree, rinput)
            output = output.squeeze().to('cpu')
            predictions[idx] = torch.dot(indices, torch.exp(output))
    labels = torch.tensor([pair[-1] for pair in TREE_PAIRS])

    def pearson(predictions, labels):
        x = copy.deepcopy(predictions)
        y = copy.deepcopy(labels)
        x = (x - x.mean()) / x.std()
        y = (y - y.mean()) / y.std()
        return torch.mean(torch.mul(x, y))

    root = dataset[4][0]
    return (epoch_losses, predictions, pearson(predictions, labels), F.mse_loss(predictions, labels),
            [p.grad for p in model.parameters()], root.state, [root.num_children, root.children[2].num_children])


def test_child_sum_tree_lstm_similarity():
    weights = weights_of(tree_lstm)
    ours, theirs = run_both(tree_lstm_training, weights, rtol=1e-4, atol=1e-6)
    epoch_losses, predictions = ours[:2]
    assert np.all((predictions > 1) & (predictions < 5))
    assert ours[-1] == [3, 1]  # the fifth left tree: a root of three children, the third of them with one


# ----------------------------------------------------------------------------------------------
# a hierarchical attention network (Yang et al. 2016) as the popular PyTorch ports write it: documents of
# sentences flattened to (docs × sentences, words), the empty padding sentences kept out of the word-level
# GRU by packing only the non-empty ones (``lengths > 0`` selection, ``pack_padded_sequence(enforce_sorted=
# False)``, ``index_copy`` back into a zero tensor), attention against learnt context vectors with masks at
# both levels, and the attention weights returned for inspection
# ----------------------------------------------------------------------------------------------

HAN_DOCS = [[[3, 4, 5], [6, 2, 0], [0, 0, 0]],
            [[7, 8, 9], [2, 3, 0], [4, 0, 0]],
            [[5, 5, 0], [0, 0, 0], [0, 0, 0]]]
HAN_LABELS = [0, 1, 0]


def han(m, emb=5, word_hid=4, sent_hid=3, n_classes=2):
    torch, nn, F = m.torch, m.nn, m.F

    class AttentionPool(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.proj = nn.Linear(dim, dim)
            self.context = nn.Parameter(torch.empty(dim).uniform_(-0.1, 0.1))

        def forward(self, h, mask):
            u = torch.tanh(self.proj(h))
            scores = (u @ self.context).masked_fill(~mask, float("-inf"))
            alpha = torch.softmax(scores, dim=-1)
            alpha = torch.nan_to_num(alpha)  # a row with nothing to attend to (an empty sentence) stays zero
            return (alpha.unsqueeze(-1) * h).sum(dim=-2), alpha

    class HAN(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(10, emb, padding_idx=0)
            self.word_rnn = nn.GRU(emb, word_hid, batch_first=True, bidirectional=True)
            self.word_attn = AttentionPool(2 * word_hid)
            self.sent_rnn = nn.GRU(2 * word_hid, sent_hid, batch_first=True, bidirectional=True)
            self.sent_attn = AttentionPool(2 * sent_hid)
            self.fc = nn.Linear(2 * sent_hid, n_classes)

        def forward(self, docs):
            n_docs, n_sents, n_words = docs.shape
            words = docs.view(-1, n_words)
            word_lengths = (words != 0).sum(-1)
            nonempty = (word_lengths > 0).nonzero(as_tuple=True)[0]
            packed = nn.utils.rnn.pack_padded_sequence(self.embedding(words[nonempty]), word_lengths[nonempty],
                                                       batch_first=True, enforce_sorted=False)
            out, _ = self.word_rnn(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=n_words)
            hidden = torch.zeros(words.size(0), n_words, out.size(-1)).index_copy(0, nonempty, out)
            sentences, word_alpha = self.word_attn(hidden, words != 0)
            sentences = sentences.view(n_docs, n_sents, -1)
            sent_lengths = (word_lengths.view(n_docs, n_sents) > 0).sum(-1)
            packed = nn.utils.rnn.pack_padded_sequence(sentences, sent_lengths, batch_first=True,
                                                       enforce_sorted=False)
            out, _ = self.sent_rnn(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=n_sents)
            sent_mask = torch.arange(n_sents)[None, :] < sent_lengths[:, None]
            doc, sent_alpha = self.sent_attn(out, sent_mask)
            return self.fc(doc), word_alpha.view(n_docs, n_sents, n_words), sent_alpha

    return HAN()


def han_training(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, han(m), weights)
    docs, labels = torch.tensor(HAN_DOCS), torch.tensor(HAN_LABELS)
    opt = optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for step in range(steps):
        logits, word_alpha, sent_alpha = model(docs)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    return losses, grads, word_alpha, sent_alpha, logits


def test_hierarchical_attention_network_with_empty_sentences():
    weights = weights_of(han)
    ours, theirs = run_both(han_training, weights, rtol=1e-4, atol=1e-6)
    losses, grads, word_alpha, sent_alpha = ours[:4]
    docs = np.array(HAN_DOCS)
    np.testing.assert_allclose(word_alpha.sum(-1), (docs != 0).any(-1).astype(np.float32), rtol=1e-5)
    np.testing.assert_allclose(sent_alpha.sum(-1), 1.0, rtol=1e-5)
    assert np.all(sent_alpha[2, 1:] == 0) and np.all(word_alpha[docs == 0] == 0)
