# ruff: noqa: E501, UP008  (the programs are kept as their authors write them)
"""pytorch/examples' gat/main.py, one of the programs session 9's probe (tests/test_programs_probe9_examples_*.py) left
out, each kept as written with sizes shrunk and run as tests/probe31_examples_common.py says: its GraphAttentionLayer
with load_cora (``torch.FloatTensor`` of a NumPy array, a sparse diagonal times dense features, ``sparse_coo_tensor``
plus ``eye``, ``where`` of non-edges, ``.mT``) on a Cora-like graph. It agreed with PyTorch when written (session
31)."""

import numpy as np

from .probe31_examples_common import SAME_DROPOUT
from .pytorch_programs import run_both


# ---------------------------------------------------------------- gat/main.py
def gat(m, epochs=3):
    torch, nn, F = m.torch, m.nn, m.F
    Adam = m.optim.Adam

    class GraphAttentionLayer(nn.Module):
        def __init__(self, in_features: int, out_features: int, n_heads: int, concat: bool = False, dropout: float = 0.4, leaky_relu_slope: float = 0.2):
            super(GraphAttentionLayer, self).__init__()
            self.n_heads = n_heads
            self.concat = concat
            self.dropout = dropout
            if concat:
                self.out_features = out_features
                assert out_features % n_heads == 0
                self.n_hidden = out_features // n_heads
            else:
                self.n_hidden = out_features
            self.W = nn.Parameter(torch.empty(size=(in_features, self.n_hidden * n_heads)))
            self.a = nn.Parameter(torch.empty(size=(n_heads, 2 * self.n_hidden, 1)))
            self.leakyrelu = nn.LeakyReLU(leaky_relu_slope)
            self.softmax = nn.Softmax(dim=1)
            self.reset_parameters()

        def reset_parameters(self):
            nn.init.xavier_normal_(self.W)
            nn.init.xavier_normal_(self.a)

        def _get_attention_scores(self, h_transformed):
            source_scores = torch.matmul(h_transformed, self.a[:, :self.n_hidden, :])
            target_scores = torch.matmul(h_transformed, self.a[:, self.n_hidden:, :])
            e = source_scores + target_scores.mT
            return self.leakyrelu(e)

        def forward(self,  h, adj_mat):
            n_nodes = h.shape[0]
            h_transformed = torch.mm(h, self.W)
            h_transformed = F.dropout(h_transformed, self.dropout, training=self.training)
            h_transformed = h_transformed.view(n_nodes, self.n_heads, self.n_hidden).permute(1, 0, 2)
            e = self._get_attention_scores(h_transformed)
            connectivity_mask = -9e16 * torch.ones_like(e)
            e = torch.where(adj_mat > 0, e, connectivity_mask)
            attention = F.softmax(e, dim=-1)
            attention = F.dropout(attention, self.dropout, training=self.training)
            h_prime = torch.matmul(attention, h_transformed)
            if self.concat:
                h_prime = h_prime.permute(1, 0, 2).contiguous().view(n_nodes, self.out_features)
            else:
                h_prime = h_prime.mean(dim=0)
            return h_prime

    class GAT(nn.Module):
        def __init__(self, in_features, n_hidden, n_heads, num_classes, concat=False, dropout=0.4, leaky_relu_slope=0.2):
            super(GAT, self).__init__()
            self.gat1 = GraphAttentionLayer(
                in_features=in_features, out_features=n_hidden, n_heads=n_heads,
                concat=concat, dropout=dropout, leaky_relu_slope=leaky_relu_slope
                )
            self.gat2 = GraphAttentionLayer(
                in_features=n_hidden, out_features=num_classes, n_heads=1,
                concat=False, dropout=dropout, leaky_relu_slope=leaky_relu_slope
                )

        def forward(self, input_tensor, adj_mat):
            x = self.gat1(input_tensor, adj_mat)
            x = F.elu(x)
            x = self.gat2(x, adj_mat)
            return F.log_softmax(x, dim=1)

    def load_cora(content_tensor, cites_tensor, device='cpu'):
        # (np.genfromtxt of cora.content and cora.cites replaced by the arrays it gives)
        features = torch.FloatTensor(content_tensor[:, 1:-1].astype(np.int32))
        scale_vector = torch.sum(features, dim=1)
        scale_vector = 1 / scale_vector
        scale_vector[scale_vector == float('inf')] = 0
        scale_vector = torch.diag(scale_vector).to_sparse()
        features = scale_vector @ features
        classes, labels = np.unique(content_tensor[:, -1], return_inverse=True)
        labels = torch.LongTensor(labels)
        idx = content_tensor[:, 0].astype(np.int32)
        idx_map = {id: pos for pos, id in enumerate(idx)}
        edges = np.array(
            list(map(lambda edge: [idx_map[edge[0]], idx_map[edge[1]]],
                cites_tensor)), dtype=np.int32)
        V = len(idx)
        E = edges.shape[0]
        adj_mat = torch.sparse_coo_tensor(edges.T, torch.ones(E), (V, V), dtype=torch.int64)
        adj_mat = torch.eye(V) + adj_mat
        return features.to(device), labels.to(device), adj_mat.to(device)

    log = []

    def train_iter(epoch, model, optimizer, criterion, input, target, mask_train, mask_val, print_every=10):
        model.train()
        optimizer.zero_grad()
        output = model(*input)
        loss = criterion(output[mask_train], target[mask_train])
        loss.backward()
        optimizer.step()
        loss_train, acc_train = test(model, criterion, input, target, mask_train)
        loss_val, acc_val = test(model, criterion, input, target, mask_val)
        if epoch % print_every == 0:
            log.append((loss_train, acc_train, loss_val, acc_val))

    def test(model, criterion, input, target, mask):
        model.eval()
        with torch.no_grad():
            output = model(*input)
            output, target = output[mask], target[mask]
            loss = criterion(output, target)
            acc = (output.argmax(dim=1) == target).float().sum() / len(target)
        return loss.item(), acc.item()

    rng = np.random.RandomState(0)
    V, nfeat = 20, 12
    ids = rng.choice(np.arange(100, 10000), V, replace=False)
    words = (rng.rand(V, nfeat) < 0.3).astype(int)
    words[3] = 0  # a paper without words: its scale is 1/0 = inf, set to 0
    content_tensor = np.array([[str(i)] + [str(w) for w in row] + [["Theory", "Neural_Networks", "Rule_Learning"][i % 3]]
                               for i, row in zip(ids, words)])
    cites_tensor = np.array([[ids[a], ids[b]] for a, b in rng.randint(0, V, size=(30, 2)) if a != b], dtype=np.int32)
    torch.manual_seed(13)
    features, labels, adj_mat = load_cora(content_tensor, cites_tensor)
    idx = torch.randperm(len(labels))
    idx_test, idx_val, idx_train = idx[:5], idx[5:10], idx[10:]
    gat_net = GAT(in_features=features.shape[1], n_hidden=8, n_heads=2, num_classes=labels.max().item() + 1,
                  concat=True, dropout=0.6, leaky_relu_slope=0.2)
    optimizer = Adam(gat_net.parameters(), lr=0.005, weight_decay=5e-4)
    criterion = nn.NLLLoss()
    for epoch in range(epochs):
        train_iter(epoch + 1, gat_net, optimizer, criterion, (features, adj_mat), labels, idx_train, idx_val, 1)
    return log, test(gat_net, criterion, (features, adj_mat), labels, idx_test), features, adj_mat, gat_net.gat1.a


def test_gat_on_a_cora_like_graph():
    log, (loss, acc), features, adj_mat, a = run_both(gat, compare=SAME_DROPOUT, rtol=1e-4, atol=1e-5)[0]
    assert len(log) == 3 and loss > 0 and 0 <= acc <= 1 and a.shape == (2, 8, 1)
    assert adj_mat.dtype == np.float32 and np.diag(adj_mat).min() >= 1 and (features[3] == 0).all()

