# ruff: noqa: B007, E501, UP008  (the programs are kept as their authors wrote them)
"""Metric-learning and retrieval programs, run as tests/probe16_metric_common.py says. Networks that compare pairs:
few-shot Relation Networks (BatchNorm2d with momentum=1, ``weights_init`` by class names, ``clip_grad_norm``,
``StepLR.step(episode)``) and Matching Networks (a bidirectional LSTM, ``nn.Softmax()`` with its implicit dim, cosine
attention by ``bmm`` and ``rsqrt``); sentence similarity by a siamese LSTM (MaLSTM over packed, unsorted sequences,
Adadelta with clipping) beside a bidirectional GRU pooled over pad_packed_sequence's mask."""

import math

import numpy as np

from .probe16_metric_common import in_float64
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Few-shot metric networks: the Relation Network (floodsung/LearningToCompareFewShot: BatchNorm2d with momentum=1,
# ``weights_init`` by class names and ``.data.normal_`` under a seed, support/query pairs by ``repeat`` and
# ``transpose``, the deprecated ``clip_grad_norm`` and ``StepLR.step(episode)``) and Matching Networks
# (gitabcworld/MatchingNetworks: a bidirectional LSTM from ``torch.rand`` states, ``nn.Softmax()`` with its
# implicit dim, cosine attention by ``bmm`` and ``rsqrt``, numpy integers as indices)
# ----------------------------------------------------------------------------------------------


def few_shot_episode(n_way=3, n_shot=2, n_query=2, side=28, seed=0):
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((n_way, 1, side, side))
    support = prototypes[:, None] + 0.5 * rng.standard_normal((n_way, n_shot, 1, side, side))
    query = prototypes[:, None] + 0.5 * rng.standard_normal((n_way, n_query, 1, side, side))
    return support, query  # (float64: the programs run with float64 as the default dtype)


def relation_network(m, episodes=3, CLASS_NUM=3, SAMPLE_NUM_PER_CLASS=2, BATCH_NUM_PER_CLASS=2, FEATURE_DIM=8,
                     RELATION_DIM=4, LEARNING_RATE=0.01):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    StepLR = optim.lr_scheduler.StepLR
    torch.manual_seed(0)  # the two libraries draw the same numbers: the initialisation below is shared

    class CNNEncoder(nn.Module):
        """docstring for ClassName"""
        def __init__(self):
            super(CNNEncoder, self).__init__()
            self.layer1 = nn.Sequential(
                nn.Conv2d(1, FEATURE_DIM, kernel_size=3, padding=0),
                nn.BatchNorm2d(FEATURE_DIM, momentum=1, affine=True),
                nn.ReLU(),
                nn.MaxPool2d(2))
            self.layer2 = nn.Sequential(
                nn.Conv2d(FEATURE_DIM, FEATURE_DIM, kernel_size=3, padding=0),
                nn.BatchNorm2d(FEATURE_DIM, momentum=1, affine=True),
                nn.ReLU(),
                nn.MaxPool2d(2))
            self.layer3 = nn.Sequential(
                nn.Conv2d(FEATURE_DIM, FEATURE_DIM, kernel_size=3, padding=1),
                nn.BatchNorm2d(FEATURE_DIM, momentum=1, affine=True),
                nn.ReLU())
            self.layer4 = nn.Sequential(
                nn.Conv2d(FEATURE_DIM, FEATURE_DIM, kernel_size=3, padding=1),
                nn.BatchNorm2d(FEATURE_DIM, momentum=1, affine=True),
                nn.ReLU())

        def forward(self, x):
            out = self.layer1(x)
            out = self.layer2(out)
            out = self.layer3(out)
            out = self.layer4(out)
            # out = out.view(out.size(0),-1)
            return out  # 64

    class RelationNetwork(nn.Module):
        """docstring for RelationNetwork"""
        def __init__(self, input_size, hidden_size):
            super(RelationNetwork, self).__init__()
            self.layer1 = nn.Sequential(
                nn.Conv2d(FEATURE_DIM * 2, FEATURE_DIM, kernel_size=3, padding=1),
                nn.BatchNorm2d(FEATURE_DIM, momentum=1, affine=True),
                nn.ReLU(),
                nn.MaxPool2d(2))
            self.layer2 = nn.Sequential(
                nn.Conv2d(FEATURE_DIM, FEATURE_DIM, kernel_size=3, padding=1),
                nn.BatchNorm2d(FEATURE_DIM, momentum=1, affine=True),
                nn.ReLU(),
                nn.MaxPool2d(2))
            self.fc1 = nn.Linear(input_size, hidden_size)
            self.fc2 = nn.Linear(hidden_size, 1)

        def forward(self, x):
            out = self.layer1(x)
            out = self.layer2(out)
            out = out.view(out.size(0), -1)
            out = F.relu(self.fc1(out))
            out = torch.sigmoid(self.fc2(out))  # (F.sigmoid in the original)
            return out

    def weights_init(m):
        classname = m.__class__.__name__
        if classname.find('Conv') != -1:
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2. / n))
            if m.bias is not None:
                m.bias.data.zero_()
        elif classname.find('BatchNorm') != -1:
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif classname.find('Linear') != -1:
            n = m.weight.size(1)
            m.weight.data.normal_(0, 0.01)
            m.bias.data = torch.ones(m.bias.data.size())

    feature_encoder = CNNEncoder()
    relation_network = RelationNetwork(FEATURE_DIM, RELATION_DIM)
    feature_encoder.apply(weights_init)
    relation_network.apply(weights_init)
    feature_encoder_optim = optim.Adam(feature_encoder.parameters(), lr=LEARNING_RATE)
    feature_encoder_scheduler = StepLR(feature_encoder_optim, step_size=2, gamma=0.5)
    relation_network_optim = optim.Adam(relation_network.parameters(), lr=LEARNING_RATE)
    relation_network_scheduler = StepLR(relation_network_optim, step_size=2, gamma=0.5)
    log = []
    for episode in range(episodes):
        feature_encoder_scheduler.step(episode)
        relation_network_scheduler.step(episode)
        support, query = few_shot_episode(CLASS_NUM, SAMPLE_NUM_PER_CLASS, BATCH_NUM_PER_CLASS, seed=episode)
        samples = torch.from_numpy(support.reshape(-1, 1, 28, 28))
        batches = torch.from_numpy(query.reshape(-1, 1, 28, 28))
        batch_labels = torch.arange(CLASS_NUM).repeat_interleave(BATCH_NUM_PER_CLASS)
        # calculate features
        sample_features = feature_encoder(samples)  # 5x64*5*5
        sample_features = sample_features.view(CLASS_NUM, SAMPLE_NUM_PER_CLASS, FEATURE_DIM, 5, 5)
        sample_features = torch.sum(sample_features, 1).squeeze(1)
        batch_features = feature_encoder(batches)  # 20x64*5*5
        # calculate relations
        # each batch sample link to every samples to calculate relations
        # to form a 100x128 matrix for relation network
        sample_features_ext = sample_features.unsqueeze(0).repeat(BATCH_NUM_PER_CLASS * CLASS_NUM, 1, 1, 1, 1)
        batch_features_ext = batch_features.unsqueeze(0).repeat(CLASS_NUM, 1, 1, 1, 1)
        batch_features_ext = torch.transpose(batch_features_ext, 0, 1)
        relation_pairs = torch.cat((sample_features_ext, batch_features_ext), 2).view(-1, FEATURE_DIM * 2, 5, 5)
        relations = relation_network(relation_pairs).view(-1, CLASS_NUM)
        mse = nn.MSELoss()
        one_hot_labels = torch.zeros(BATCH_NUM_PER_CLASS * CLASS_NUM, CLASS_NUM).scatter_(1, batch_labels.view(-1, 1), 1)
        loss = mse(relations, one_hot_labels)
        # training
        feature_encoder.zero_grad()
        relation_network.zero_grad()
        loss.backward()
        norm_f = nn.utils.clip_grad_norm(feature_encoder.parameters(), 0.5)
        norm_r = nn.utils.clip_grad_norm(relation_network.parameters(), 0.5)
        feature_encoder_optim.step()
        relation_network_optim.step()
        _, predict_labels = torch.max(relations.data, 1)
        rewards = [1 if predict_labels[j] == batch_labels[j] else 0 for j in range(CLASS_NUM * BATCH_NUM_PER_CLASS)]
        log.append([loss.item(), norm_f.item(), norm_r.item(), sum(rewards), feature_encoder_optim.param_groups[0]["lr"]])
    return {"log": log, "relations": relations, "encoder": feature_encoder.state_dict(),
            "relation": relation_network.state_dict()}


def matching_network(m, steps=3, n_way=3, n_shot=1, n_query=2, emb=16):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(1)

    class BidirectionalLSTM(nn.Module):
        def __init__(self, layer_sizes, batch_size, vector_dim):
            super(BidirectionalLSTM, self).__init__()
            self.batch_size = batch_size
            self.hidden_size = layer_sizes[0]
            self.vector_dim = vector_dim
            self.num_layers = len(layer_sizes)
            self.lstm = nn.LSTM(input_size=self.vector_dim, num_layers=self.num_layers,
                                hidden_size=self.hidden_size, bidirectional=True)

        def forward(self, inputs):
            c0 = torch.rand(self.lstm.num_layers * 2, self.batch_size, self.lstm.hidden_size).requires_grad_(False)
            h0 = torch.rand(self.lstm.num_layers * 2, self.batch_size, self.lstm.hidden_size).requires_grad_(False)
            output, (hn, cn) = self.lstm(inputs, (h0, c0))
            return output, hn, cn

    class AttentionalClassify(nn.Module):
        def forward(self, similarities, support_set_y):
            softmax = nn.Softmax()
            softmax_similarities = softmax(similarities)
            preds = softmax_similarities.unsqueeze(1).bmm(support_set_y).squeeze()
            return preds

    class DistanceNetwork(nn.Module):
        def forward(self, support_set, input_image):
            eps = 1e-10
            similarities = []
            for support_image in support_set:
                sum_support = torch.sum(torch.pow(support_image, 2), 1)
                support_magnitude = sum_support.clamp(eps, float("inf")).rsqrt()
                dot_product = input_image.unsqueeze(1).bmm(support_image.unsqueeze(2)).squeeze()
                cosine_similarity = dot_product * support_magnitude
                similarities.append(cosine_similarity)
            similarities = torch.stack(similarities)
            return similarities

    class Classifier(nn.Module):  # a small g: conv, pool, linear
        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
            self.fc = nn.Linear(4 * 6 * 6, emb)

        def forward(self, x):
            return self.fc(self.conv(x).view(x.size(0), -1))

    class MatchingNetwork(nn.Module):
        def __init__(self, batch_size, fce=True):
            super(MatchingNetwork, self).__init__()
            self.batch_size = batch_size
            self.fce = fce
            self.g = Classifier()
            if self.fce:
                self.lstm = BidirectionalLSTM(layer_sizes=[emb // 2], batch_size=batch_size, vector_dim=emb)
            self.dn = DistanceNetwork()
            self.classify = AttentionalClassify()

        def forward(self, support_set_images, support_set_labels_one_hot, target_image, target_label):
            encoded_images = []
            for i in np.arange(support_set_images.size(1)):
                gen_encode = self.g(support_set_images[:, i, :, :, :])
                encoded_images.append(gen_encode)
            for i in np.arange(target_image.size(1)):
                gen_encode = self.g(target_image[:, i, :, :, :])
                encoded_images.append(gen_encode)
                outputs = torch.stack(encoded_images)
                if self.fce:
                    outputs, hn, cn = self.lstm(outputs)
                # get similarity between support set embeddings and target
                similarities = self.dn(support_set=outputs[:-1], input_image=outputs[-1])
                similarities = similarities.t()
                # produce predictions for target probabilities
                preds = self.classify(similarities, support_set_y=support_set_labels_one_hot)
                # calculate accuracy and crossentropy loss
                values, indices = preds.max(1)
                if i == 0:
                    accuracy = torch.mean((indices.squeeze() == target_label[:, i]).float())
                    crossentropy_loss = F.cross_entropy(preds, target_label[:, i].long())
                else:
                    accuracy = accuracy + torch.mean((indices.squeeze() == target_label[:, i]).float())
                    crossentropy_loss = crossentropy_loss + F.cross_entropy(preds, target_label[:, i].long())
                # delete the last target image encoding of encoded_images
                encoded_images.pop()
            return accuracy / target_image.size(1), crossentropy_loss / target_image.size(1)

    batch_size = 2  # episodes per batch
    net = MatchingNetwork(batch_size)
    optimizer = optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    log = []
    for step in range(steps):
        episodes = [few_shot_episode(n_way, n_shot, n_query, seed=10 * step + b) for b in range(batch_size)]
        support = torch.tensor(np.stack([s.reshape(-1, 1, 28, 28) for s, _ in episodes]))  # (B, N*K, 1, 28, 28)
        target = torch.tensor(np.stack([q.reshape(-1, 1, 28, 28) for _, q in episodes]))
        support_y = torch.arange(n_way).repeat_interleave(n_shot).expand(batch_size, -1)
        support_one_hot = F.one_hot(support_y, n_way).to(torch.get_default_dtype())
        target_y = torch.arange(n_way).repeat_interleave(n_query).expand(batch_size, -1)
        acc, c_loss = net(support, support_one_hot, target, target_y)
        optimizer.zero_grad()
        c_loss.backward()
        optimizer.step()
        log.append([acc.item(), c_loss.item()])
    return {"log": log, "params": dict(net.named_parameters()), "buffers": dict(net.named_buffers())}


def test_relation_network():
    ours, _ = run_both(in_float64(relation_network), rtol=1e-8, atol=1e-10)
    assert ours["relations"].dtype == np.float64
    assert [round(row[4], 6) for row in ours["log"]] == [0.01, 0.01, 0.005]  # StepLR.step(episode)


def test_matching_network():
    ours, _ = run_both(in_float64(matching_network), rtol=1e-8, atol=1e-10)
    assert all(0 <= acc <= 1 for acc, _ in ours["log"])


# ----------------------------------------------------------------------------------------------
# Sentence similarity by a siamese LSTM (MaLSTM: exp(-L1) of the last hidden states over packed, unsorted
# sequences, Adadelta with clipping) beside a bidirectional GRU pooled over pad_packed_sequence's mask; and
# re-ranking by k-reciprocal neighbours (SpCL's compute_jaccard_distance: NumPy index arrays into tensors,
# softmax weights, query expansion, the Jaccard distance), checked against a direct NumPy computation
# ----------------------------------------------------------------------------------------------


def sentence_pairs(n=8, vocab=12, max_len=6, seed=0):
    rng = np.random.default_rng(seed)
    lengths_a = rng.integers(2, max_len + 1, n)
    lengths_b = rng.integers(2, max_len + 1, n)
    a = np.zeros((n, max_len), np.int64)
    b = np.zeros((n, max_len), np.int64)
    for i in range(n):
        a[i, :lengths_a[i]] = rng.integers(1, vocab, lengths_a[i])
        b[i, :lengths_b[i]] = rng.integers(1, vocab, lengths_b[i])
    y = (rng.random(n) > 0.5).astype(np.float32)
    return a, lengths_a, b, lengths_b, y


def siamese_text_model(m, vocab=12, emb_dim=6, hidden=5):
    nn = m.nn

    class SiameseLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, emb_dim, padding_idx=0)
            self.lstm = nn.LSTM(emb_dim, hidden, batch_first=True)
            self.gru = nn.GRU(emb_dim, hidden, batch_first=True, bidirectional=True)

    return SiameseLSTM()


def siamese_text(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    pack_padded_sequence, pad_packed_sequence = nn.utils.rnn.pack_padded_sequence, nn.utils.rnn.pad_packed_sequence
    model = load(m, siamese_text_model(m), weights)
    a, la, b, lb, y = (torch.tensor(v) for v in sentence_pairs())

    def encode_last(x, lengths):
        emb = model.embedding(x)
        packed = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
        _, (h, c) = model.lstm(packed)
        return h[-1]

    def encode_mean(x, lengths):
        emb = model.embedding(x)
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = model.gru(packed)
        out, out_lengths = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        mask = (torch.arange(x.size(1))[None, :] < out_lengths[:, None]).unsqueeze(-1).float()
        return (out * mask).sum(1) / out_lengths[:, None].float()

    optimizer = optim.Adadelta(model.parameters(), lr=1.0, rho=0.9)
    log = []
    for step in range(steps):
        optimizer.zero_grad()
        ha, hb = encode_last(a, la), encode_last(b, lb)
        similarity = torch.exp(-torch.sum(torch.abs(ha - hb), dim=1))  # Manhattan LSTM
        ga, gb = encode_mean(a, la), encode_mean(b, lb)
        cos = F.cosine_similarity(ga, gb)
        loss = F.mse_loss(similarity, y) + F.cosine_embedding_loss(ga, gb, 2 * y - 1, margin=0.2)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.25)
        optimizer.step()
        log.append([loss.item(), norm.item()])
    return {"log": log, "similarity": similarity, "cos": cos, "params": dict(model.named_parameters())}


def test_siamese_lstm_sentence_similarity():
    weights = weights_of(siamese_text_model)
    ours, _ = run_both(siamese_text, weights, rtol=1e-4, atol=1e-6)
    assert np.all((ours["similarity"] > 0) & (ours["similarity"] <= 1))
