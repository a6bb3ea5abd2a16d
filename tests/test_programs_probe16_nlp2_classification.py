# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""Classic NLP programs (see tests/pytorch_programs.py) not already among the program tests, run on chainrule and on
PyTorch from the same weights and data, comparing losses, gradients, decoded outputs and short training trajectories;
dropout-on variants are compared where PyTorch draws its Bernoulli masks as chainrule does (AMD processors), and run
for finite values elsewhere. Classifiers: ESIM (its own length sorting, masked softmax both ways, ``orthogonal_``
init from the seed); the text classification tutorial with fastText's hashed bigrams (EmbeddingBag offsets by cumsum,
``random_split``, TF-IDF ``per_sample_weights``); MAML over an LSTM intent classifier as learn2learn writes it
(``clone._parameters = clone._parameters.copy()``, ``module._parameters[key] = p + p.update``)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, same_dropout_masks, weights_of

# ----------------------------------------------------------------------------------------------
# ESIM for natural-language inference (Chen et al. 2017, as coetaur0/ESIM writes it): its own
# sort_by_seq_lens (``new_tensor(torch.arange(...))``, the restoration index by sorting the sort),
# ``torch.ones(batch, max_length)`` and ``[:, :max_length]`` with a 0-d tensor, masked softmax both ways,
# weighted sums, ``replace_masked`` max pooling, variational RNNDropout, the LSTMs' init by ``apply`` with
# ``orthogonal_`` and the forget-gate bias, ``nn.Embedding(_weight=None)``, trained from the seed's own init
# ----------------------------------------------------------------------------------------------

NLI_PREMISES = [[3, 4, 5, 6, 0, 0, 0], [7, 8, 0, 0, 0, 0, 0], [9, 3, 4, 0, 0, 0, 0]]
NLI_HYPOTHESES = [[5, 6, 0, 0, 0, 0, 0], [8, 9, 3, 4, 7, 0, 0], [4, 0, 0, 0, 0, 0, 0]]
NLI_LABELS = [0, 2, 1]


def esim_program(m, steps=3, dropout=0.0):
    torch, nn, optim = m.torch, m.nn, m.optim

    def sort_by_seq_lens(batch, sequences_lengths, descending=True):
        sorted_seq_lens, sorting_index = sequences_lengths.sort(0, descending=descending)
        sorted_batch = batch.index_select(0, sorting_index)
        idx_range = sequences_lengths.new_tensor(torch.arange(0, len(sequences_lengths)))
        _, reverse_mapping = sorting_index.sort(0, descending=False)
        restoration_index = idx_range.index_select(0, reverse_mapping)
        return sorted_batch, sorted_seq_lens, sorting_index, restoration_index

    def get_mask(sequences_batch, sequences_lengths):
        batch_size = sequences_batch.size()[0]
        max_length = torch.max(sequences_lengths)
        mask = torch.ones(batch_size, max_length, dtype=torch.float)
        mask[sequences_batch[:, :max_length] == 0] = 0.0
        return mask

    def masked_softmax(tensor, mask):
        tensor_shape = tensor.size()
        reshaped_tensor = tensor.view(-1, tensor_shape[-1])
        # Reshape the mask so it matches the size of the input tensor.
        while mask.dim() < tensor.dim():
            mask = mask.unsqueeze(1)
        mask = mask.expand_as(tensor).contiguous().float()
        reshaped_mask = mask.view(-1, mask.size()[-1])
        result = nn.functional.softmax(reshaped_tensor * reshaped_mask, dim=-1)
        result = result * reshaped_mask
        # 1e-13 is added to avoid divisions by zero.
        result = result / (result.sum(dim=-1, keepdim=True) + 1e-13)
        return result.view(*tensor_shape)

    def weighted_sum(tensor, weights, mask):
        weighted_sum = weights.bmm(tensor)
        while mask.dim() < weighted_sum.dim():
            mask = mask.unsqueeze(1)
        mask = mask.transpose(-1, -2)
        mask = mask.expand_as(weighted_sum).contiguous().float()
        return weighted_sum * mask

    def replace_masked(tensor, mask, value):
        mask = mask.unsqueeze(1).transpose(2, 1)
        reverse_mask = 1.0 - mask
        values_to_add = value * reverse_mask
        return tensor * mask + values_to_add

    class RNNDropout(nn.Dropout):
        def forward(self, sequences_batch):
            ones = sequences_batch.data.new_ones(sequences_batch.shape[0], sequences_batch.shape[-1])
            dropout_mask = nn.functional.dropout(ones, self.p, self.training, inplace=False)
            return dropout_mask.unsqueeze(1) * sequences_batch

    class Seq2SeqEncoder(nn.Module):
        def __init__(self, rnn_type, input_size, hidden_size, num_layers=1, bias=True, dropout=0.0,
                     bidirectional=False):
            assert issubclass(rnn_type, nn.RNNBase), "rnn_type must be a class inheriting from torch.nn.RNNBase"
            super(Seq2SeqEncoder, self).__init__()
            self.rnn_type = rnn_type
            self._encoder = rnn_type(input_size, hidden_size, num_layers=num_layers, bias=bias, batch_first=True,
                                     dropout=dropout, bidirectional=bidirectional)

        def forward(self, sequences_batch, sequences_lengths):
            sorted_batch, sorted_lengths, _, restoration_idx = sort_by_seq_lens(sequences_batch, sequences_lengths)
            packed_batch = nn.utils.rnn.pack_padded_sequence(sorted_batch, sorted_lengths, batch_first=True)
            outputs, _ = self._encoder(packed_batch, None)
            outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True)
            reordered_outputs = outputs.index_select(0, restoration_idx)
            return reordered_outputs

    class SoftmaxAttention(nn.Module):
        def forward(self, premise_batch, premise_mask, hypothesis_batch, hypothesis_mask):
            similarity_matrix = premise_batch.bmm(hypothesis_batch.transpose(2, 1).contiguous())
            prem_hyp_attn = masked_softmax(similarity_matrix, hypothesis_mask)
            hyp_prem_attn = masked_softmax(similarity_matrix.transpose(1, 2).contiguous(), premise_mask)
            attended_premises = weighted_sum(hypothesis_batch, prem_hyp_attn, premise_mask)
            attended_hypotheses = weighted_sum(premise_batch, hyp_prem_attn, hypothesis_mask)
            return attended_premises, attended_hypotheses

    def _init_esim_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight.data)
            nn.init.constant_(module.bias.data, 0.0)
        elif isinstance(module, nn.LSTM):
            nn.init.xavier_uniform_(module.weight_ih_l0.data)
            nn.init.orthogonal_(module.weight_hh_l0.data)
            nn.init.constant_(module.bias_ih_l0.data, 0.0)
            nn.init.constant_(module.bias_hh_l0.data, 0.0)
            hidden_size = module.bias_hh_l0.data.shape[0] // 4
            module.bias_hh_l0.data[hidden_size:(2 * hidden_size)] = 1.0
            if (module.bidirectional):
                nn.init.xavier_uniform_(module.weight_ih_l0_reverse.data)
                nn.init.orthogonal_(module.weight_hh_l0_reverse.data)
                nn.init.constant_(module.bias_ih_l0_reverse.data, 0.0)
                nn.init.constant_(module.bias_hh_l0_reverse.data, 0.0)
                module.bias_hh_l0_reverse.data[hidden_size:(2 * hidden_size)] = 1.0

    class ESIM(nn.Module):
        def __init__(self, vocab_size, embedding_dim, hidden_size, embeddings=None, padding_idx=0, dropout=0.5,
                     num_classes=3, device="cpu"):
            super(ESIM, self).__init__()
            self.vocab_size = vocab_size
            self.embedding_dim = embedding_dim
            self.hidden_size = hidden_size
            self.num_classes = num_classes
            self.dropout = dropout
            self.device = device
            self._word_embedding = nn.Embedding(self.vocab_size, self.embedding_dim, padding_idx=padding_idx,
                                                _weight=embeddings)
            if self.dropout:
                self._rnn_dropout = RNNDropout(p=self.dropout)
            self._encoding = Seq2SeqEncoder(nn.LSTM, self.embedding_dim, self.hidden_size, bidirectional=True)
            self._attention = SoftmaxAttention()
            self._projection = nn.Sequential(nn.Linear(4 * 2 * self.hidden_size, self.hidden_size), nn.ReLU())
            self._composition = Seq2SeqEncoder(nn.LSTM, self.hidden_size, self.hidden_size, bidirectional=True)
            self._classification = nn.Sequential(nn.Dropout(p=self.dropout),
                                                 nn.Linear(2 * 4 * self.hidden_size, self.hidden_size),
                                                 nn.Tanh(),
                                                 nn.Dropout(p=self.dropout),
                                                 nn.Linear(self.hidden_size, self.num_classes))
            # Initialize all weights and biases in the model.
            self.apply(_init_esim_weights)

        def forward(self, premises, premises_lengths, hypotheses, hypotheses_lengths):
            premises_mask = get_mask(premises, premises_lengths).to(self.device)
            hypotheses_mask = get_mask(hypotheses, hypotheses_lengths).to(self.device)
            embedded_premises = self._word_embedding(premises)
            embedded_hypotheses = self._word_embedding(hypotheses)
            if self.dropout:
                embedded_premises = self._rnn_dropout(embedded_premises)
                embedded_hypotheses = self._rnn_dropout(embedded_hypotheses)
            encoded_premises = self._encoding(embedded_premises, premises_lengths)
            encoded_hypotheses = self._encoding(embedded_hypotheses, hypotheses_lengths)
            attended_premises, attended_hypotheses = self._attention(encoded_premises, premises_mask,
                                                                     encoded_hypotheses, hypotheses_mask)
            enhanced_premises = torch.cat([encoded_premises, attended_premises,
                                           encoded_premises - attended_premises,
                                           encoded_premises * attended_premises], dim=-1)
            enhanced_hypotheses = torch.cat([encoded_hypotheses, attended_hypotheses,
                                             encoded_hypotheses - attended_hypotheses,
                                             encoded_hypotheses * attended_hypotheses], dim=-1)
            projected_premises = self._projection(enhanced_premises)
            projected_hypotheses = self._projection(enhanced_hypotheses)
            if self.dropout:
                projected_premises = self._rnn_dropout(projected_premises)
                projected_hypotheses = self._rnn_dropout(projected_hypotheses)
            v_ai = self._composition(projected_premises, premises_lengths)
            v_bj = self._composition(projected_hypotheses, hypotheses_lengths)
            v_a_avg = torch.sum(v_ai * premises_mask.unsqueeze(1).transpose(2, 1), dim=1) \
                / torch.sum(premises_mask, dim=1, keepdim=True)
            v_b_avg = torch.sum(v_bj * hypotheses_mask.unsqueeze(1).transpose(2, 1), dim=1) \
                / torch.sum(hypotheses_mask, dim=1, keepdim=True)
            v_a_max, _ = replace_masked(v_ai, premises_mask, -1e7).max(dim=1)
            v_b_max, _ = replace_masked(v_bj, hypotheses_mask, -1e7).max(dim=1)
            v = torch.cat([v_a_avg, v_a_max, v_b_avg, v_b_max], dim=1)
            logits = self._classification(v)
            probabilities = nn.functional.softmax(logits, dim=-1)
            return logits, probabilities

    torch.manual_seed(0)
    model = ESIM(10, 5, 4, dropout=dropout)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    premises, hypotheses = torch.tensor(NLI_PREMISES), torch.tensor(NLI_HYPOTHESES)
    premises_lengths = (premises != 0).sum(1)
    hypotheses_lengths = (hypotheses != 0).sum(1)
    labels = torch.tensor(NLI_LABELS)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=4e-4)
    losses, accs = [], []
    for step in range(steps):
        model.train()
        optimizer.zero_grad()
        logits, probs = model(premises, premises_lengths, hypotheses, hypotheses_lengths)
        loss = criterion(logits, labels)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        losses.append(loss.item())
        _, out_classes = probs.max(dim=1)
        accs.append((out_classes == labels).sum().item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    return initial, losses, accs, grads, probs


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")
def test_esim_natural_language_inference():
    ours, theirs = run_both(esim_program, rtol=1e-4, atol=1e-6)
    initial = ours[0]
    w_hh = initial["_encoding._encoder.weight_hh_l0"]
    np.testing.assert_allclose(w_hh.T @ w_hh, np.eye(4), atol=1e-5)  # orthogonal_ of a (16, 4) matrix
    assert np.all(initial["_encoding._encoder.bias_hh_l0"][4:8] == 1)
    np.testing.assert_allclose(ours[4].sum(1), 1.0, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")
def test_esim_with_variational_dropout():
    ours, theirs = run_both(esim_program, dropout=0.5, compare=same_dropout_masks(), rtol=1e-4, atol=1e-6)
    assert np.all(np.isfinite(ours[1]))


# ----------------------------------------------------------------------------------------------
# PyTorch's text classification tutorial with fastText's hashed bigrams: a vocabulary by Counter, bigram ids
# hashed into buckets with int64 arithmetic, ``collate_batch`` building EmbeddingBag offsets by
# ``torch.tensor(offsets[:-1]).cumsum(dim=0)``, ``random_split`` and a shuffling DataLoader from the seed,
# SGD with clip_grad_norm_(0.1) and StepLR stepped only when validation accuracy drops, and a TF-IDF
# variant weighting each token through ``per_sample_weights``
# ----------------------------------------------------------------------------------------------

NEWS = [(1, "stocks rally as markets close higher"), (2, "team wins the final match"),
        (3, "new phone chip is faster"), (1, "markets fall on rate fears"), (2, "striker scores twice in final"),
        (3, "chip maker unveils faster phone"), (1, "rate cut lifts stocks"), (2, "coach praises team after match"),
        (3, "software update makes phone faster"), (1, "bond markets rally"), (2, "the match ends in a draw"),
        (3, "new software for chip design"), (1, "stocks close lower"), (2, "team loses final"),
        (3, "phone maker cuts price"), (1, "fears of rate rise hit markets")]


def text_classification(m, emb_dim=6, buckets=17, epochs=3, tfidf=False):
    torch, nn, data = m.torch, m.nn, m.data
    from collections import Counter

    def tokenizer(line):
        return line.lower().split()

    counter = Counter()
    for _, line in NEWS:
        counter.update(tokenizer(line))
    itos = ["<unk>"] + sorted(counter, key=lambda w: (-counter[w], w))
    stoi = {w: i for i, w in enumerate(itos)}
    document_frequency = Counter(w for _, line in NEWS for w in set(tokenizer(line)))

    def text_pipeline(x):
        ids = [stoi.get(token, 0) for token in tokenizer(x)]
        unigrams = torch.tensor(ids, dtype=torch.int64)
        # fastText's bigrams, hashed into a few extra buckets after the vocabulary
        bigrams = (unigrams[:-1] * 116049371 + unigrams[1:]) % buckets + len(itos)
        return torch.cat([unigrams, bigrams])

    def idf_pipeline(x):
        tokens = tokenizer(x)
        weights = [math.log(len(NEWS) / document_frequency[t]) + 1.0 for t in tokens]
        return torch.tensor(weights + [1.0] * (len(tokens) - 1))

    def label_pipeline(x):
        return int(x) - 1

    def collate_batch(batch):
        label_list, text_list, weight_list, offsets = [], [], [], [0]
        for (_label, _text) in batch:
            label_list.append(label_pipeline(_label))
            processed_text = text_pipeline(_text)
            text_list.append(processed_text)
            weight_list.append(idf_pipeline(_text))
            offsets.append(processed_text.size(0))
        label_list = torch.tensor(label_list, dtype=torch.int64)
        offsets = torch.tensor(offsets[:-1]).cumsum(dim=0)
        text_list = torch.cat(text_list)
        return label_list, text_list, offsets, torch.cat(weight_list)

    class TextClassificationModel(nn.Module):
        def __init__(self, vocab_size, embed_dim, num_class):
            super(TextClassificationModel, self).__init__()
            self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, mode="sum" if tfidf else "mean", sparse=False)
            self.fc = nn.Linear(embed_dim, num_class)
            self.init_weights()

        def init_weights(self):
            initrange = 0.5
            self.embedding.weight.data.uniform_(-initrange, initrange)
            self.fc.weight.data.uniform_(-initrange, initrange)
            self.fc.bias.data.zero_()

        def forward(self, text, offsets, weights=None):
            embedded = self.embedding(text, offsets, per_sample_weights=weights if tfidf else None)
            return self.fc(embedded)

    torch.manual_seed(0)
    model = TextClassificationModel(len(itos) + buckets, emb_dim, 3)

    def train(dataloader):
        model.train()
        total_acc, total_count = 0, 0
        for idx, (label, text, offsets, weights) in enumerate(dataloader):
            optimizer.zero_grad()
            predicted_label = model(text, offsets, weights)
            loss = criterion(predicted_label, label)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimizer.step()
            total_acc += (predicted_label.argmax(1) == label).sum().item()
            total_count += label.size(0)
            losses.append(loss.item())

    def evaluate(dataloader):
        model.eval()
        total_acc, total_count = 0, 0
        with torch.no_grad():
            for idx, (label, text, offsets, weights) in enumerate(dataloader):
                predicted_label = model(text, offsets, weights)
                total_acc += (predicted_label.argmax(1) == label).sum().item()
                total_count += label.size(0)
        return total_acc / total_count

    criterion = nn.CrossEntropyLoss()
    optimizer = m.optim.SGD(model.parameters(), lr=5.0)
    scheduler = m.optim.lr_scheduler.StepLR(optimizer, 1.0, gamma=0.1)
    total_accu = None
    num_train = int(len(NEWS) * 0.75)
    split_train_, split_valid_ = data.random_split(NEWS, [num_train, len(NEWS) - num_train])
    train_dataloader = data.DataLoader(split_train_, batch_size=4, shuffle=True, collate_fn=collate_batch)
    valid_dataloader = data.DataLoader(split_valid_, batch_size=4, shuffle=True, collate_fn=collate_batch)
    losses, accuracies, lrs = [], [], []
    for epoch in range(1, epochs + 1):
        train(train_dataloader)
        accu_val = evaluate(valid_dataloader)
        if total_accu is not None and total_accu > accu_val:
            scheduler.step()
        else:
            total_accu = accu_val
        accuracies.append(accu_val)
        lrs.append(optimizer.param_groups[0]["lr"])
    label, text, offsets, weights = collate_batch(NEWS[:3])
    return (losses, accuracies, lrs, list(split_valid_.indices), text, offsets, model.embedding.weight,
            model.fc.weight, model.embedding.weight.grad, len(itos))


@pytest.mark.parametrize("tfidf", [False, True])
def test_text_classification_tutorial_with_hashed_bigrams(tfidf):
    ours, theirs = run_both(text_classification, tfidf=tfidf, rtol=1e-4, atol=1e-6)
    losses, accuracies, lrs, valid, text, offsets = ours[:6]
    assert offsets.tolist() == [0, 11, 20]  # six words and five bigrams, then five and four
    n_vocab = ours[-1]
    unigrams, bigrams = text[:6].astype(np.int64), text[6:11]
    np.testing.assert_array_equal(bigrams, (unigrams[:-1] * 116049371 + unigrams[1:]) % 17 + n_vocab)
    assert len(valid) == 4 and lrs[0] == 5.0


# ----------------------------------------------------------------------------------------------
# MAML over an LSTM intent classifier as learn2learn writes it (``clone_module``: ``clone.__dict__ =
# module.__dict__.copy()``, ``clone._parameters = clone._parameters.copy()`` then cloned tensors written
# into it; ``update_module``: ``module._parameters[key] = p + p.update``, and ``module._apply(lambda x: x)``
# to rebuild an RNN's flat weights), second-order through ``autograd.grad(create_graph=True)``, tasks of
# few-shot sentence classification, Adam on the meta-parameters
# ----------------------------------------------------------------------------------------------

INTENT_TASKS = [  # (support sentences, support labels, query sentences, query labels), token ids 1..9
    ([[1, 2, 3], [4, 5, 0], [1, 3, 0], [6, 5, 4]], [0, 1, 0, 1], [[2, 1, 3], [5, 4, 6]], [0, 1]),
    ([[7, 8, 0], [9, 2, 1], [8, 7, 7], [1, 9, 0]], [1, 0, 1, 0], [[7, 7, 8], [2, 9, 0]], [1, 0]),
    ([[3, 3, 5], [6, 1, 0], [5, 3, 0], [1, 6, 6]], [0, 1, 0, 1], [[3, 5, 5], [6, 6, 1]], [0, 1]),
]


def intent_classifier(m):
    nn = m.nn

    class IntentLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4, padding_idx=0)
            self.lstm = nn.LSTM(4, 5, batch_first=True)
            self.head = nn.Linear(5, 2)

        def forward(self, tokens):
            out, (h, c) = self.lstm(self.embed(tokens))
            return self.head(h[-1])

    return IntentLSTM()


def learn2learn_maml(m, weights, meta_steps=2, adaptation_steps=2, fast_lr=0.5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    def clone_module(module, memo=None):
        if memo is None:
            memo = {}
        if not isinstance(module, nn.Module):
            return module
        clone = module.__new__(type(module))
        clone.__dict__ = module.__dict__.copy()
        clone._parameters = clone._parameters.copy()
        clone._buffers = clone._buffers.copy()
        clone._modules = clone._modules.copy()
        # Second, re-write all parameters
        if hasattr(clone, '_parameters'):
            for param_key in module._parameters:
                if module._parameters[param_key] is not None:
                    param = module._parameters[param_key]
                    param_ptr = param.data_ptr
                    if param_ptr in memo:
                        clone._parameters[param_key] = memo[param_ptr]
                    else:
                        cloned = param.clone()
                        clone._parameters[param_key] = cloned
                        memo[param_ptr] = cloned
        # Third, handle the buffers if necessary
        if hasattr(clone, '_buffers'):
            for buffer_key in module._buffers:
                if clone._buffers[buffer_key] is not None and clone._buffers[buffer_key].requires_grad:
                    buff = module._buffers[buffer_key]
                    buff_ptr = buff.data_ptr
                    if buff_ptr in memo:
                        clone._buffers[buffer_key] = memo[buff_ptr]
                    else:
                        cloned = buff.clone()
                        clone._buffers[buffer_key] = cloned
                        memo[buff_ptr] = cloned
        # Then, recurse for each submodule
        if hasattr(clone, '_modules'):
            for module_key in clone._modules:
                clone._modules[module_key] = clone_module(module._modules[module_key], memo=memo)
        # Finally, rebuild the flattened parameters for RNNs
        if hasattr(clone, 'flatten_parameters'):
            clone = clone._apply(lambda x: x)
        return clone

    def update_module(module, updates=None, memo=None):
        if memo is None:
            memo = {}
        if updates is not None:
            params = list(module.parameters())
            if not len(updates) == len(list(params)):
                raise ValueError('WARNING:update_module(): Parameters and updates have different length.')
            for p, g in zip(params, updates):
                p.update = g
        # Update the params
        for param_key in module._parameters:
            p = module._parameters[param_key]
            if p in memo:
                module._parameters[param_key] = memo[p]
            else:
                if p is not None and hasattr(p, 'update') and p.update is not None:
                    updated = p + p.update
                    p.update = None
                    memo[p] = updated
                    module._parameters[param_key] = updated
        # Then, recurse for each submodule
        for module_key in module._modules:
            module._modules[module_key] = update_module(module._modules[module_key], updates=None, memo=memo)
        # Finally, rebuild the flattened parameters for RNNs
        if hasattr(module, 'flatten_parameters'):
            module._apply(lambda x: x)
        return module

    def maml_update(model, lr, grads=None):
        if grads is not None:
            params = list(model.parameters())
            updates = [None for _ in range(len(params))]
            for i, g in enumerate(grads):
                if g is not None:
                    updates[i] = -lr * g
            return update_module(model, updates=updates)
        return update_module(model)

    model = load(m, intent_classifier(m), weights)
    opt = optim.Adam(model.parameters(), lr=0.01)
    meta_losses, adapted_logits = [], []
    for iteration in range(meta_steps):
        opt.zero_grad()
        meta_loss = 0.0
        for support, support_y, query, query_y in INTENT_TASKS:
            learner = clone_module(model)
            support, support_y = torch.tensor(support), torch.tensor(support_y)
            for step in range(adaptation_steps):
                train_error = F.cross_entropy(learner(support), support_y)
                grads = torch.autograd.grad(train_error, list(learner.parameters()), retain_graph=True,
                                            create_graph=True, allow_unused=True)
                learner = maml_update(learner, fast_lr, grads)
            logits = learner(torch.tensor(query))
            adapted_logits.append(logits)
            meta_loss = meta_loss + F.cross_entropy(logits, torch.tensor(query_y))
        (meta_loss / len(INTENT_TASKS)).backward()
        opt.step()
        meta_losses.append(meta_loss.item())
    grads = {name: p.grad for name, p in model.named_parameters()}
    # the adapted learner's weights differ from the meta-parameters it was cloned from
    moved = (learner.head.weight - model.head.weight).abs().sum()
    return meta_losses, adapted_logits, grads, moved, isinstance(learner.head.weight, nn.Parameter)


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
def test_learn2learn_maml_over_an_lstm_intent_classifier():
    weights = weights_of(intent_classifier)
    ours, theirs = run_both(learn2learn_maml, weights, rtol=1e-4, atol=1e-6)
    meta_losses, adapted_logits, grads, moved, still_a_parameter = ours
    assert moved > 0 and still_a_parameter is False
    # second order: the LSTM's recurrent weights get a meta-gradient through the adaptation steps
    assert np.abs(grads["lstm.weight_hh_l0"]).sum() > 0
