# ruff: noqa: E501  (the programs are kept as their authors wrote them)
"""Paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them (labml_nn/...), run
as tests/probe21_papers_common.py says: GAT/GATv2."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# labml_nn/graphs: GAT and GATv2 on a small citation-like graph
# ----------------------------------------------------------------------------------------------


def make_gat(m, v2):
    torch, nn = m.torch, m.nn

    class GraphAttentionLayer(nn.Module):
        def __init__(self, in_features, out_features, n_heads, is_concat=True, dropout=0.6,
                     leaky_relu_negative_slope=0.2):
            super().__init__()
            self.is_concat = is_concat
            self.n_heads = n_heads
            if is_concat:
                assert out_features % n_heads == 0
                self.n_hidden = out_features // n_heads
            else:
                self.n_hidden = out_features
            self.linear = nn.Linear(in_features, self.n_hidden * n_heads, bias=False)
            self.attn = nn.Linear(self.n_hidden * 2, 1, bias=False)
            self.activation = nn.LeakyReLU(negative_slope=leaky_relu_negative_slope)
            self.softmax = nn.Softmax(dim=1)
            self.dropout = nn.Dropout(dropout)

        def forward(self, h, adj_mat):
            n_nodes = h.shape[0]
            g = self.linear(h).view(n_nodes, self.n_heads, self.n_hidden)
            g_repeat = g.repeat(n_nodes, 1, 1)
            g_repeat_interleave = g.repeat_interleave(n_nodes, dim=0)
            g_concat = torch.cat([g_repeat_interleave, g_repeat], dim=-1)
            g_concat = g_concat.view(n_nodes, n_nodes, self.n_heads, 2 * self.n_hidden)
            e = self.activation(self.attn(g_concat))
            e = e.squeeze(-1)
            assert adj_mat.shape[0] == 1 or adj_mat.shape[0] == n_nodes
            assert adj_mat.shape[1] == 1 or adj_mat.shape[1] == n_nodes
            assert adj_mat.shape[2] == 1 or adj_mat.shape[2] == self.n_heads
            e = e.masked_fill(adj_mat == 0, float('-inf'))
            a = self.softmax(e)
            a = self.dropout(a)
            attn_res = torch.einsum('ijh,jhf->ihf', a, g)
            if self.is_concat:
                return attn_res.reshape(n_nodes, self.n_heads * self.n_hidden)
            else:
                return attn_res.mean(dim=1)

    class GraphAttentionV2Layer(nn.Module):
        def __init__(self, in_features, out_features, n_heads, is_concat=True, dropout=0.6,
                     leaky_relu_negative_slope=0.2, share_weights=False):
            super().__init__()
            self.is_concat = is_concat
            self.n_heads = n_heads
            self.share_weights = share_weights
            if is_concat:
                assert out_features % n_heads == 0
                self.n_hidden = out_features // n_heads
            else:
                self.n_hidden = out_features
            self.linear_l = nn.Linear(in_features, self.n_hidden * n_heads, bias=False)
            if share_weights:
                self.linear_r = self.linear_l
            else:
                self.linear_r = nn.Linear(in_features, self.n_hidden * n_heads, bias=False)
            self.attn = nn.Linear(self.n_hidden, 1, bias=False)
            self.activation = nn.LeakyReLU(negative_slope=leaky_relu_negative_slope)
            self.softmax = nn.Softmax(dim=1)
            self.dropout = nn.Dropout(dropout)

        def forward(self, h, adj_mat):
            n_nodes = h.shape[0]
            g_l = self.linear_l(h).view(n_nodes, self.n_heads, self.n_hidden)
            g_r = self.linear_r(h).view(n_nodes, self.n_heads, self.n_hidden)
            g_l_repeat = g_l.repeat(n_nodes, 1, 1)
            g_r_repeat_interleave = g_r.repeat_interleave(n_nodes, dim=0)
            g_sum = g_l_repeat + g_r_repeat_interleave
            g_sum = g_sum.view(n_nodes, n_nodes, self.n_heads, self.n_hidden)
            e = self.attn(self.activation(g_sum))
            e = e.squeeze(-1)
            assert adj_mat.shape[0] == 1 or adj_mat.shape[0] == n_nodes
            assert adj_mat.shape[1] == 1 or adj_mat.shape[1] == n_nodes
            assert adj_mat.shape[2] == 1 or adj_mat.shape[2] == self.n_heads
            e = e.masked_fill(adj_mat == 0, float('-inf'))
            a = self.softmax(e)
            a = self.dropout(a)
            attn_res = torch.einsum('ijh,jhf->ihf', a, g_r)
            if self.is_concat:
                return attn_res.reshape(n_nodes, self.n_heads * self.n_hidden)
            else:
                return attn_res.mean(dim=1)

    class GAT(nn.Module):
        def __init__(self, in_features, n_hidden, n_classes, n_heads, dropout, share_weights=False):
            super().__init__()
            if v2:
                self.layer1 = GraphAttentionV2Layer(in_features, n_hidden, n_heads, is_concat=True, dropout=dropout,
                                                    share_weights=share_weights)
                self.output = GraphAttentionV2Layer(n_hidden, n_classes, 1, is_concat=False, dropout=dropout,
                                                    share_weights=share_weights)
            else:
                self.layer1 = GraphAttentionLayer(in_features, n_hidden, n_heads, is_concat=True, dropout=dropout)
                self.output = GraphAttentionLayer(n_hidden, n_classes, 1, is_concat=False, dropout=dropout)
            self.activation = nn.ELU()
            self.dropout = nn.Dropout(dropout)

        def forward(self, x, adj_mat):
            x = self.dropout(x)
            x = self.layer1(x, adj_mat)
            x = self.activation(x)
            x = self.dropout(x)
            return self.output(x, adj_mat)

    return GAT(7, 12, 3, 4, 0.0, share_weights=v2).double()


def gat_program(m, weights, v2):
    torch, nn = m.torch, m.nn
    model = load(m, make_gat(m, v2), weights)
    rng = np.random.default_rng(8)
    n = 10
    features = torch.tensor(rng.standard_normal((n, 7)))
    labels = torch.tensor(rng.integers(0, 3, n))
    edges = rng.integers(0, n, (2, 18))
    adj_mat = torch.zeros((n, n), dtype=torch.bool)
    adj_mat[torch.tensor(edges[0]), torch.tensor(edges[1])] = True
    adj_mat[torch.tensor(edges[1]), torch.tensor(edges[0])] = True
    adj_mat = adj_mat | torch.eye(n, dtype=torch.bool)  # self-loops, so no row is all -inf
    adj_mat = adj_mat.unsqueeze(-1)
    idx_train = torch.arange(0, 7)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3, weight_decay=5e-4)
    loss_func = nn.CrossEntropyLoss()
    losses = []
    for _ in range(5):
        model.train()
        optimizer.zero_grad()
        output = model(features, adj_mat)
        loss = loss_func(output[idx_train], labels[idx_train])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        output = model(features, adj_mat)
        accuracy = output.argmax(dim=-1).eq(labels).sum().item() / n
    a = model.layer1
    return {"losses": losses, "output": output, "accuracy": accuracy, "shared": getattr(a, "linear_r", None) is getattr(a, "linear_l", 0),
            "n_params": len(list(model.parameters()))}


@pytest.mark.parametrize("v2", [False, True], ids=["gat", "gatv2"])
def test_graph_attention(v2):
    weights = weights_of(lambda m: make_gat(m, v2))
    ours, _ = run_both(gat_program, weights, v2, rtol=1e-8, atol=1e-10)
    assert ours["losses"][-1] < ours["losses"][0]
    assert ours["shared"] == v2 and ours["n_params"] == (4 if v2 else 4)
