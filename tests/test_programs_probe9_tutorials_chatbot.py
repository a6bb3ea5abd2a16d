# ruff: noqa: UP008  (the programs are kept as their authors wrote them)
"""PyTorch's official tutorials (pytorch/tutorials: beginner_source, intermediate_source, advanced_source), each run
on chainrule and on PyTorch from the same weights and data, comparing losses, parameters and gradients. The chatbot
tutorial (a bidirectional two-layer GRU encoder over ``pack_padded_sequence``/``pad_packed_sequence`` with its
directions summed, Luong attention in its 'dot', 'general' and 'concat' forms, ``maskNLLLoss`` by ``gather`` and
``masked_select``, teacher forcing and greedy decoding by ``topk``, two Adam optimizers, a checkpoint dict of both
state_dicts and both optimizers' through ``torch.save``/``torch.load``, and ``GreedySearchDecoder``)."""

import io
import itertools
import random

import numpy as np
import pytest

from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# Chatbot tutorial (beginner_source/chatbot_tutorial.py)
# ----------------------------------------------------------------------------------------------

PAD_token, SOS_token, EOS_token = 0, 1, 2
CHAT_PAIRS = [("hi how are you", "i am fine"), ("what is your name", "my name is bot"),
              ("where are you", "i am here"), ("hi", "hello"), ("are you fine", "yes i am fine"),
              ("what is it", "it is a bot"), ("how old are you", "i am new"), ("bye", "see you")]


class Voc:
    def __init__(self):
        self.word2index = {}
        self.word2count = {}
        self.index2word = {PAD_token: "PAD", SOS_token: "SOS", EOS_token: "EOS"}
        self.num_words = 3  # Count SOS, EOS, PAD

    def addSentence(self, sentence):
        for word in sentence.split(' '):
            self.addWord(word)

    def addWord(self, word):
        if word not in self.word2index:
            self.word2index[word] = self.num_words
            self.word2count[word] = 1
            self.index2word[self.num_words] = word
            self.num_words += 1
        else:
            self.word2count[word] += 1


def chatbot(m, weights=None, attn_model='dot', teacher_forcing=(True, False, True)):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    device = torch.device("cpu")
    voc = Voc()
    for a, b in CHAT_PAIRS:
        voc.addSentence(a)
        voc.addSentence(b)

    def indexesFromSentence(voc, sentence):
        return [voc.word2index[word] for word in sentence.split(' ')] + [EOS_token]

    def zeroPadding(l, fillvalue=PAD_token):
        return list(itertools.zip_longest(*l, fillvalue=fillvalue))

    def binaryMatrix(l, value=PAD_token):
        m = []
        for i, seq in enumerate(l):
            m.append([])
            for token in seq:
                if token == PAD_token:
                    m[i].append(0)
                else:
                    m[i].append(1)
        return m

    def inputVar(l, voc):
        indexes_batch = [indexesFromSentence(voc, sentence) for sentence in l]
        lengths = torch.tensor([len(indexes) for indexes in indexes_batch])
        padList = zeroPadding(indexes_batch)
        padVar = torch.LongTensor(padList)
        return padVar, lengths

    def outputVar(l, voc):
        indexes_batch = [indexesFromSentence(voc, sentence) for sentence in l]
        max_target_len = max([len(indexes) for indexes in indexes_batch])
        padList = zeroPadding(indexes_batch)
        mask = binaryMatrix(padList)
        mask = torch.BoolTensor(mask)
        padVar = torch.LongTensor(padList)
        return padVar, mask, max_target_len

    def batch2TrainData(voc, pair_batch):
        pair_batch.sort(key=lambda x: len(x[0].split(" ")), reverse=True)
        input_batch, output_batch = [], []
        for pair in pair_batch:
            input_batch.append(pair[0])
            output_batch.append(pair[1])
        inp, lengths = inputVar(input_batch, voc)
        output, mask, max_target_len = outputVar(output_batch, voc)
        return inp, lengths, output, mask, max_target_len

    class EncoderRNN(nn.Module):
        def __init__(self, hidden_size, embedding, n_layers=1, dropout=0):
            super(EncoderRNN, self).__init__()
            self.n_layers = n_layers
            self.hidden_size = hidden_size
            self.embedding = embedding
            self.gru = nn.GRU(hidden_size, hidden_size, n_layers,
                              dropout=(0 if n_layers == 1 else dropout), bidirectional=True)

        def forward(self, input_seq, input_lengths, hidden=None):
            embedded = self.embedding(input_seq)
            packed = nn.utils.rnn.pack_padded_sequence(embedded, input_lengths)
            outputs, hidden = self.gru(packed, hidden)
            outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs)
            outputs = outputs[:, :, :self.hidden_size] + outputs[:, :, self.hidden_size:]
            return outputs, hidden

    class Attn(nn.Module):
        def __init__(self, method, hidden_size):
            super(Attn, self).__init__()
            self.method = method
            if self.method not in ['dot', 'general', 'concat']:
                raise ValueError(self.method, "is not an appropriate attention method.")
            self.hidden_size = hidden_size
            if self.method == 'general':
                self.attn = nn.Linear(self.hidden_size, hidden_size)
            elif self.method == 'concat':
                self.attn = nn.Linear(self.hidden_size * 2, hidden_size)
                self.v = nn.Parameter(torch.FloatTensor(hidden_size))

        def dot_score(self, hidden, encoder_output):
            return torch.sum(hidden * encoder_output, dim=2)

        def general_score(self, hidden, encoder_output):
            energy = self.attn(encoder_output)
            return torch.sum(hidden * energy, dim=2)

        def concat_score(self, hidden, encoder_output):
            energy = self.attn(torch.cat((hidden.expand(encoder_output.size(0), -1, -1), encoder_output), 2)).tanh()
            return torch.sum(self.v * energy, dim=2)

        def forward(self, hidden, encoder_outputs):
            if self.method == 'general':
                attn_energies = self.general_score(hidden, encoder_outputs)
            elif self.method == 'concat':
                attn_energies = self.concat_score(hidden, encoder_outputs)
            elif self.method == 'dot':
                attn_energies = self.dot_score(hidden, encoder_outputs)
            attn_energies = attn_energies.t()
            return F.softmax(attn_energies, dim=1).unsqueeze(1)

    class LuongAttnDecoderRNN(nn.Module):
        def __init__(self, attn_model, embedding, hidden_size, output_size, n_layers=1, dropout=0.1):
            super(LuongAttnDecoderRNN, self).__init__()
            self.attn_model = attn_model
            self.hidden_size = hidden_size
            self.output_size = output_size
            self.n_layers = n_layers
            self.dropout = dropout
            self.embedding = embedding
            self.embedding_dropout = nn.Dropout(dropout)
            self.gru = nn.GRU(hidden_size, hidden_size, n_layers, dropout=(0 if n_layers == 1 else dropout))
            self.concat = nn.Linear(hidden_size * 2, hidden_size)
            self.out = nn.Linear(hidden_size, output_size)
            self.attn = Attn(attn_model, hidden_size)

        def forward(self, input_step, last_hidden, encoder_outputs):
            embedded = self.embedding(input_step)
            embedded = self.embedding_dropout(embedded)
            rnn_output, hidden = self.gru(embedded, last_hidden)
            attn_weights = self.attn(rnn_output, encoder_outputs)
            context = attn_weights.bmm(encoder_outputs.transpose(0, 1))
            rnn_output = rnn_output.squeeze(0)
            context = context.squeeze(1)
            concat_input = torch.cat((rnn_output, context), 1)
            concat_output = torch.tanh(self.concat(concat_input))
            output = self.out(concat_output)
            output = F.softmax(output, dim=1)
            return output, hidden

    def maskNLLLoss(inp, target, mask):
        nTotal = mask.sum()
        crossEntropy = -torch.log(torch.gather(inp, 1, target.view(-1, 1)).squeeze(1))
        loss = crossEntropy.masked_select(mask).mean()
        loss = loss.to(device)
        return loss, nTotal.item()

    def train(input_variable, lengths, target_variable, mask, max_target_len, encoder, decoder, embedding,
              encoder_optimizer, decoder_optimizer, batch_size, clip, use_teacher_forcing):
        encoder_optimizer.zero_grad()
        decoder_optimizer.zero_grad()
        input_variable = input_variable.to(device)
        lengths = lengths.to("cpu")
        target_variable = target_variable.to(device)
        mask = mask.to(device)
        loss = 0
        print_losses = []
        n_totals = 0
        encoder_outputs, encoder_hidden = encoder(input_variable, lengths)
        decoder_input = torch.LongTensor([[SOS_token for _ in range(batch_size)]])
        decoder_input = decoder_input.to(device)
        decoder_hidden = encoder_hidden[:decoder.n_layers]
        if use_teacher_forcing:
            for t in range(max_target_len):
                decoder_output, decoder_hidden = decoder(decoder_input, decoder_hidden, encoder_outputs)
                decoder_input = target_variable[t].view(1, -1)
                mask_loss, nTotal = maskNLLLoss(decoder_output, target_variable[t], mask[t])
                loss += mask_loss
                print_losses.append(mask_loss.item() * nTotal)
                n_totals += nTotal
        else:
            for t in range(max_target_len):
                decoder_output, decoder_hidden = decoder(decoder_input, decoder_hidden, encoder_outputs)
                _, topi = decoder_output.topk(1)
                decoder_input = torch.LongTensor([[topi[i][0] for i in range(batch_size)]])
                decoder_input = decoder_input.to(device)
                mask_loss, nTotal = maskNLLLoss(decoder_output, target_variable[t], mask[t])
                loss += mask_loss
                print_losses.append(mask_loss.item() * nTotal)
                n_totals += nTotal
        loss.backward()
        _ = nn.utils.clip_grad_norm_(encoder.parameters(), clip)
        _ = nn.utils.clip_grad_norm_(decoder.parameters(), clip)
        encoder_optimizer.step()
        decoder_optimizer.step()
        return sum(print_losses) / n_totals

    class GreedySearchDecoder(nn.Module):
        def __init__(self, encoder, decoder):
            super(GreedySearchDecoder, self).__init__()
            self.encoder = encoder
            self.decoder = decoder

        def forward(self, input_seq, input_length, max_length):
            encoder_outputs, encoder_hidden = self.encoder(input_seq, input_length)
            decoder_hidden = encoder_hidden[:decoder.n_layers]
            decoder_input = torch.ones(1, 1, device=device, dtype=torch.long) * SOS_token
            all_tokens = torch.zeros([0], device=device, dtype=torch.long)
            all_scores = torch.zeros([0], device=device)
            for _ in range(max_length):
                decoder_output, decoder_hidden = self.decoder(decoder_input, decoder_hidden, encoder_outputs)
                decoder_scores, decoder_input = torch.max(decoder_output, dim=1)
                all_tokens = torch.cat((all_tokens, decoder_input), dim=0)
                all_scores = torch.cat((all_scores, decoder_scores), dim=0)
                decoder_input = torch.unsqueeze(decoder_input, 0)
            return all_tokens, all_scores

    def evaluate(encoder, decoder, searcher, voc, sentence, max_length=6):
        indexes_batch = [indexesFromSentence(voc, sentence)]
        lengths = torch.tensor([len(indexes) for indexes in indexes_batch])
        input_batch = torch.LongTensor(indexes_batch).transpose(0, 1)
        input_batch = input_batch.to(device)
        lengths = lengths.to("cpu")
        tokens, scores = searcher(input_batch, lengths, max_length)
        decoded_words = [voc.index2word[token.item()] for token in tokens]
        return decoded_words, scores

    hidden_size, encoder_n_layers, decoder_n_layers, dropout, batch_size = 8, 2, 2, 0.0, 4
    clip, learning_rate, decoder_learning_ratio = 1.0, 0.01, 5.0
    embedding = nn.Embedding(voc.num_words, hidden_size)
    encoder = EncoderRNN(hidden_size, embedding, encoder_n_layers, dropout)
    decoder = LuongAttnDecoderRNN(attn_model, embedding, hidden_size, voc.num_words, decoder_n_layers, dropout)
    if weights is None:
        return encoder, decoder
    encoder.load_state_dict({k: torch.tensor(v) for k, v in weights["en"].items()})
    decoder.load_state_dict({k: torch.tensor(v) for k, v in weights["de"].items()})
    encoder.train()
    decoder.train()
    encoder_optimizer = optim.Adam(encoder.parameters(), lr=learning_rate)
    decoder_optimizer = optim.Adam(decoder.parameters(), lr=learning_rate * decoder_learning_ratio)
    rng = random.Random(0)
    training_batches = [batch2TrainData(voc, [rng.choice(CHAT_PAIRS) for _ in range(batch_size)])
                        for _ in range(len(teacher_forcing))]
    losses = []
    for iteration, use_teacher_forcing in enumerate(teacher_forcing):
        input_variable, lengths, target_variable, mask, max_target_len = training_batches[iteration]
        losses.append(train(input_variable, lengths, target_variable, mask, max_target_len, encoder,
                            decoder, embedding, encoder_optimizer, decoder_optimizer, batch_size, clip,
                            use_teacher_forcing))
    grads = {name: p.grad.clone() for name, p in decoder.named_parameters()}
    buffer = io.BytesIO()
    torch.save({'iteration': len(teacher_forcing), 'en': encoder.state_dict(), 'de': decoder.state_dict(),
                'en_opt': encoder_optimizer.state_dict(), 'de_opt': decoder_optimizer.state_dict(),
                'loss': losses[-1], 'voc_dict': voc.__dict__, 'embedding': embedding.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=False)
    voc2 = Voc()
    voc2.__dict__ = checkpoint['voc_dict']
    embedding2 = nn.Embedding(voc2.num_words, hidden_size)
    embedding2.load_state_dict(checkpoint['embedding'])
    encoder2 = EncoderRNN(hidden_size, embedding2, encoder_n_layers, dropout)
    decoder2 = LuongAttnDecoderRNN(attn_model, embedding2, hidden_size, voc2.num_words, decoder_n_layers, dropout)
    encoder2.load_state_dict(checkpoint['en'])
    decoder2.load_state_dict(checkpoint['de'])
    decoder_optimizer2 = optim.Adam(decoder2.parameters(), lr=learning_rate * decoder_learning_ratio)
    decoder_optimizer2.load_state_dict(checkpoint['de_opt'])
    encoder2.eval()
    decoder2.eval()
    searcher = GreedySearchDecoder(encoder2, decoder2)
    with torch.no_grad():
        words, scores = evaluate(encoder2, decoder2, searcher, voc2, "hi how are you")
    exp_avg = [s["exp_avg"] for s in decoder_optimizer2.state.values()]
    params = dict(decoder2.state_dict())
    if attn_model == 'general':
        # hidden . bias is the same for every source position, so softmax cancels it: its gradient is
        # rounding noise, which Adam scales up to steps of lr; it is returned apart and not compared
        del params['attn.attn.bias']
        del exp_avg[[n for n, _ in decoder2.named_parameters()].index('attn.attn.bias')]
        grads['attn.attn.bias'] = grads['attn.attn.bias'].abs().max() < 1e-6
    return {"losses": losses, "params": params, "enc": dict(encoder2.state_dict()),
            "grads": grads, "words": " ".join(words), "scores": scores, "exp_avg": exp_avg,
            "step": [float(s["step"]) for s in decoder_optimizer2.state.values()]}


def chatbot_weights(attn_model):
    OURS.torch.manual_seed(0)
    encoder, decoder = chatbot(OURS, attn_model=attn_model)
    weights = {"en": {k: v.numpy().copy() for k, v in encoder.state_dict().items()},
               "de": {k: v.numpy().copy() for k, v in decoder.state_dict().items()}}
    if attn_model == "concat":  # torch.FloatTensor(n) is uninitialised memory: the program fills it on load
        weights["de"]["attn.v"] = np.random.default_rng(0).standard_normal(8).astype(np.float32)
    return weights


@pytest.mark.parametrize("attn_model", ["dot", "general", "concat"])
def test_chatbot_luong_attention_masked_nll(attn_model):
    weights = chatbot_weights(attn_model)
    ours, _ = run_both(chatbot, weights, attn_model, rtol=2e-4, atol=2e-5)
    assert all(np.isfinite(ours["losses"]))
    if attn_model == "general":
        assert ours["grads"]["attn.attn.bias"]
    assert ours["step"] == [3.0] * len(ours["step"])
    assert len(ours["words"].split()) == 6 and ours["scores"].shape == (6,)
    assert ((0 < ours["scores"]) & (ours["scores"] <= 1)).all()
