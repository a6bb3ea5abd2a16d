"""Pictures of a small CNN and of a recurrence unrolled over time: what the SVG says (labels, the
time steps' boxes in order, the width) and how it looks in a real headless browser at 1400 px."""

import re
import shutil
import xml.etree.ElementTree as ElementTree

import pytest

import autograd
import nn
from autograd.viz import draw, record_layers, render_svg, run_layers
from tests.test_viz import _browser

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
SVG = "{http://www.w3.org/2000/svg}"
WINDOW = 1400  # px: every picture fits a window this wide


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.relu1, self.pool = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2 = nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()
        self.flatten, self.fc = nn.Flatten(), nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool(self.relu1(self.conv1(x)))
        return self.fc(self.flatten(self.relu2(self.conv2(x))))


def cnn_graph():
    autograd.manual_seed(0)
    model = SmallCNN()
    images, labels = autograd.randn(16, 1, 8, 8), autograd.arange(16) % 10
    output, layers = run_layers(model, images)
    loss = nn.CrossEntropyLoss()(output, labels)
    return draw(loss, names={"images": images, "labels": labels, **dict(model.named_parameters())},
                layers=[*layers, ("CrossEntropyLoss", loss)])


def unrolled_rnn(steps=4):
    """An RNNCell run for ``steps`` steps by a Python loop, a linear readout of the last state."""
    autograd.manual_seed(0)
    cell, readout = nn.RNNCell(3, 5), nn.Linear(5, 2)
    sequence = autograd.randn(4, steps, 3)
    inputs, states, h = [sequence[:, t] for t in range(steps)], [], autograd.zeros(4, 5)
    with record_layers(cell) as layers:
        for x in inputs:
            h = cell(x, h)
            states.append(h)
    loss = nn.functional.cross_entropy(readout(h), autograd.tensor([0, 1, 1, 0]))
    names = {**{f"x_{t}": x for t, x in enumerate(inputs, 1)}, **{f"h_{t}": h for t, h in enumerate(states, 1)},
             **{"cell." + k: p for k, p in cell.named_parameters()},
             **{"readout." + k: p for k, p in readout.named_parameters()}}
    return draw(loss, names=names, layers=layers, steps=states)


def parse(svg):
    """{node title: (texts, (x, y) of its centre)} and {cluster title: (label, (top, bottom))} of an SVG."""
    root = ElementTree.fromstring(svg[svg.index("<svg"):])
    nodes, clusters = {}, {}
    for group in root.iter(SVG + "g"):
        title = group.find(SVG + "title").text if group.find(SVG + "title") is not None else None
        texts = [t.text for t in group.iter(SVG + "text")]
        points = [tuple(map(float, p.split(","))) for shape in group.iter(SVG + "polygon")
                  for p in shape.get("points").split()]
        for ellipse in group.iter(SVG + "ellipse"):
            points.append((float(ellipse.get("cx")), float(ellipse.get("cy"))))
        if not points:
            points = [tuple(map(float, p.split(","))) for path in group.iter(SVG + "path")
                      for p in re.findall(r"-?[\d.]+,-?[\d.]+", path.get("d"))]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        if group.get("class") == "node":
            nodes[title] = (texts, ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2))
        elif group.get("class") == "cluster":
            clusters[title] = (texts[0], (min(ys), max(ys)), (min(xs), max(xs)))
    return root, nodes, clusters


def width_px(root):
    """The SVG's width in CSS px (Graphviz writes pt; its viewBox is the same size)."""
    width = float(root.get("width").removesuffix("pt")) * 4 / 3
    assert float(root.get("viewBox").split()[2]) * 4 / 3 == pytest.approx(width, abs=2)
    return width


def edges(root):
    return [group.find(SVG + "title").text.split("->") for group in root.iter(SVG + "g")
            if group.get("class") == "edge"]


@needs_dot
def test_cnn_graph_names_layers_parameters_and_shapes_and_fits_the_window():
    graph = cnn_graph()
    root, nodes, _ = parse(render_svg(graph))
    ops = sorted((centre[1], texts) for title, (texts, centre) in nodes.items() if title.startswith("op"))
    assert [texts[0] for _, texts in ops] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "Flatten", "Linear",
                                              "CrossEntropyLoss"]  # top to bottom, in the order they run
    assert [texts for _, texts in ops][0] == ["Conv2d"]  # the primitive's name, the same, is not repeated
    assert dict((texts[0], texts[1:]) for _, texts in ops)["Linear"] == ["AffineMap"]
    boxes = {texts[0]: texts[1:] for title, (texts, _) in nodes.items() if title.startswith("v")}
    for name in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight", "fc.bias"):
        assert name in boxes
    assert boxes["conv2.weight"][0] == "(8, 4, 3, 3) float32" and boxes["images"][0] == "(16, 1, 8, 8) float32"
    shapes = [texts[0] for title, (texts, _) in nodes.items() if title.startswith("v") and texts[0].startswith("(")]
    assert shapes.count("(16, 4, 8, 8) float32") == 2  # (N, C, H, W): conv1's output and its ReLU's
    assert shapes.count("(16, 4, 4, 4) float32") == 1 and shapes.count("(16, 8, 4, 4) float32") == 2
    assert boxes["loss"][0] == "() float32" and boxes["labels"][0] == "(16,) int64"
    op_x = {round(centre[0]) for title, (_, centre) in nodes.items() if title.startswith("op")}
    assert len(op_x) == 1  # the layers in one straight column: the parameters join from the side
    assert width_px(root) <= WINDOW
    assert "rankdir=TB" in graph.source


@needs_dot
def test_unrolled_recurrence_draws_one_box_per_time_step_in_order():
    graph = unrolled_rnn()
    root, nodes, clusters = parse(render_svg(graph))
    boxes = sorted(clusters.values(), key=lambda cluster: cluster[1][0])  # top to bottom
    assert [label for label, _, _ in boxes] == ["t=1", "t=2", "t=3", "t=4"]
    assert all(upper[1][1] <= lower[1][0] for upper, lower in zip(boxes, boxes[1:]))  # stacked, not side by side
    by_name = {texts[0]: (title, centre) for title, (texts, centre) in nodes.items()}
    for t, (label, (top, bottom), (left, right)) in enumerate(boxes, 1):
        inside = sorted(texts[0] for texts, (x, y) in nodes.values() if top < y < bottom and left < x < right)
        assert inside == ["RNNCell", f"h_{t}", f"x_{t}"], (label, inside)
    cell_nodes = [title for title, (texts, _) in nodes.items() if texts == ["RNNCell", "RNNLayer"]]
    assert len(cell_nodes) == 4  # the cell's plumbing (unpacking its flat result) is not drawn
    for weight in ("cell.weight_ih", "cell.weight_hh", "cell.bias_ih", "cell.bias_hh"):
        title, (x, y) = by_name[weight]
        assert not any(top < y < bottom and left < x < right for _, (top, bottom), (left, right) in boxes)
        assert sorted(head for tail, head in edges(root) if tail == title) == sorted(cell_nodes)  # drawn once
    # the recurrence: h_{t-1} goes into step t's cell
    cells_in_order = sorted(cell_nodes, key=lambda title: nodes[title][1][1])
    heads = {tail: head for tail, head in edges(root) if head in cell_nodes}
    for t in range(1, 4):
        assert heads[by_name[f"h_{t}"][0]] == cells_in_order[t]
    assert width_px(root) <= WINDOW


@needs_dot
def test_input_computed_before_the_loop_is_shared_and_the_steps_still_stack():
    """An embedding of the whole sequence, looked up once before a GRUCell loop: the lookup is drawn
    outside the boxes, each step's slice of it inside its own, and the boxes stay in one column."""
    autograd.manual_seed(0)
    embedding, cell = nn.Embedding(10, 3), nn.GRUCell(3, 4)
    embedded = embedding(autograd.tensor([[1, 2, 3, 4], [5, 6, 7, 8]]))
    h, states = autograd.zeros(2, 4), []
    with record_layers(cell) as layers:
        for t in range(4):
            h = cell(embedded[:, t], h)
            states.append(h)
    graph = draw(h.sum(), names={"embedding.weight": embedding.weight}, layers=layers, steps=states)
    root, nodes, clusters = parse(render_svg(graph))
    boxes = sorted(clusters.values(), key=lambda cluster: cluster[1][0])
    assert [label for label, _, _ in boxes] == ["t=1", "t=2", "t=3", "t=4"]
    assert all(upper[1][1] <= lower[1][0] for upper, lower in zip(boxes, boxes[1:]))
    for texts, (x, y) in nodes.values():
        box = [label for label, (top, bottom), (left, right) in boxes if top < y < bottom and left < x < right]
        if texts[0] in ("EmbeddingLookup", "embedding.weight"):
            assert box == []
        if texts[0] in ("GetItem", "GRUCell"):
            assert len(box) == 1
    assert width_px(root) <= WINDOW


def test_steps_put_each_steps_ops_in_its_cluster_and_shared_values_outside():
    """An explicit loop h = tanh(x_t W + h U + b): every op of step t in box t, the weights outside,
    a dict's keys as the boxes' titles."""
    autograd.manual_seed(0)
    W, U = autograd.randn(3, 5, requires_grad=True), autograd.randn(5, 5, requires_grad=True)
    b = autograd.zeros(5, requires_grad=True)
    inputs, states, h = [autograd.randn(2, 3) for _ in range(3)], [], autograd.zeros(2, 5)
    for x in inputs:
        h = autograd.tanh(x @ W + h @ U + b)
        states.append(h)
    loss = (h ** 2).mean()
    names = {"W": W, "U": U, "b": b, **{f"x_{t}": x for t, x in enumerate(inputs, 1)},
             **{f"h_{t}": h for t, h in enumerate(states, 1)}}
    graph = draw(loss, names=names, steps={f"step {t}": h for t, h in enumerate(states, 1)})
    source = graph.source
    bodies = re.findall(r"subgraph (cluster_step\d) \{\n(.*?)\n\t\}", source, re.S)
    assert [name for name, _ in bodies] == ["cluster_step1", "cluster_step2", "cluster_step3"]
    for t, (_, body) in enumerate(bodies, 1):
        assert f'label="step {t}"' in body and f"<B>h_{t}</B>" in body and f"<B>x_{t}</B>" in body
        assert sorted(re.findall(r"label=(MatMul|Add|Tanh)", body)) == ["Add", "Add", "MatMul", "MatMul", "Tanh"]
        assert "<B>W</B>" not in body and "<B>U</B>" not in body and "<B>b</B>" not in body
    ids = graph.node_ids
    for weight in (W, U, b):
        assert len(re.findall(rf"\t{ids[f'v{id(weight)}']} -> op\d+", source)) == 3  # into each step once
    assert "rankdir=TB" in source  # a chain of 3 steps does not fit a row
    assert "PowConstant" in source.split("subgraph")[0]  # the loss after the loop: outside the boxes


def test_fused_recurrent_layer_is_one_node_named_by_its_module():
    autograd.manual_seed(0)

    class Tagger(nn.Module):
        def __init__(self, kind):
            super().__init__()
            self.recurrence, self.readout = getattr(nn, kind)(3, 5, batch_first=True), nn.Linear(5, 2)

        def forward(self, x):
            output, _ = self.recurrence(x)
            return self.readout(output[:, -1])

    for kind in ("LSTM", "GRU", "RNN"):
        model, x = Tagger(kind), autograd.randn(4, 6, 3)
        output, layers = run_layers(model, x)
        assert [name for name, _ in layers] == [kind, "Linear"]
        assert isinstance(layers[0].output, tuple) and layers[0].inputs[0] is x
        source = draw(output.sum(), names={"x": x, **dict(model.named_parameters())}, layers=layers).source
        assert f'<B>{kind}</B><BR/><FONT POINT-SIZE="10">{kind}Layer</FONT>' in source
        assert "Reshape" not in source and "Permute" not in source  # how the layer unpacks its result: hidden
        layer_node = re.search(rf"(op\d+) \[label=<<B>{kind}</B>", source).group(1)
        ids = re.findall(rf"\t(v\d+) -> {layer_node}\b", source)
        assert len(ids) == 5  # x and the four weights, each once
        assert "<B>x</B>" in source


def test_two_layer_bidirectional_gru_counts_its_fused_nodes():
    autograd.manual_seed(0)
    gru = nn.GRU(3, 4, num_layers=2, bidirectional=True)
    (output, h_n), layers = run_layers(gru, autograd.randn(6, 2, 3))
    source = draw(output.sum() + h_n.sum(), layers=layers).source
    assert '<B>GRU</B><BR/><FONT POINT-SIZE="10">GRULayer ×4</FONT>' in source
    assert source.count("<B>GRU</B>") == 1


def test_in_place_layer_keeps_to_its_own_op():
    autograd.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 2))
    output, layers = run_layers(model, autograd.randn(5, 3))
    labels = re.findall(r"label=<<B>(\w+)</B>", draw(output.sum(), layers=layers).source)
    assert sorted(labels) == ["Linear", "Linear", "ReLU"]


def test_layer_does_not_take_in_what_computed_a_tensor_others_use_too():
    class Scale(nn.Module):  # multiplies by a tensor its parent computed, not passed as an argument
        def forward(self, x):
            return x * self.factor

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.log_scale, self.scale = nn.Parameter(autograd.zeros(3)), Scale()

        def forward(self, x):
            self.scale.factor = self.log_scale.exp()
            return self.scale(x).sum() + self.scale.factor.sum()

    model = Model()
    loss, layers = run_layers(model, autograd.randn(2, 3, requires_grad=True))
    source = draw(loss, layers=layers).source
    assert '<B>Scale</B><BR/><FONT POINT-SIZE="10">Mul</FONT>' in source
    assert "label=Exp" in source  # still its own op: the sum outside the layer uses its result too


def test_record_layers_removes_its_hooks():
    cell = nn.RNNCell(2, 3)
    with record_layers(cell) as layers:
        cell(autograd.randn(1, 2))
    cell(autograd.randn(1, 2))
    assert len(layers) == 1 and layers[0].label == "RNNCell"
    label, output = layers[0]  # still a (label, output) pair
    assert output.shape == (1, 3)


def _show(browser, svg, tmp_path, name):
    """Open the SVG in a page as a notebook shows it, at 1400 px wide: (page's scroll width, window
    width, smallest text in px, screenshot width)."""
    page = tmp_path / f"{name}.html"
    page.write_text(f"<!doctype html><html><body style='margin:8px'>{svg[svg.index('<svg'):]}</body></html>",
                    encoding="utf-8")
    browser.get(page.resolve().as_uri())
    layout = browser.execute_script("""
        var smallest = 1e9, texts = document.querySelectorAll('svg text');
        for (var i = 0; i < texts.length; i++)
            smallest = Math.min(smallest, parseFloat(getComputedStyle(texts[i]).fontSize) * texts[i].getScreenCTM().a);
        return [document.documentElement.scrollWidth, window.innerWidth, smallest];""")
    screenshot = tmp_path / f"{name}.png"
    browser.save_screenshot(str(screenshot))
    return (*layout, int.from_bytes(screenshot.read_bytes()[16:20], "big"))


@needs_dot
@pytest.mark.parametrize("picture", [cnn_graph, unrolled_rnn], ids=["cnn", "unrolled-rnn"])
def test_picture_fits_a_1400_px_window_in_a_real_browser(tmp_path, picture):
    svg = render_svg(picture())
    browser = _browser()
    try:
        browser.set_window_size(WINDOW, 900)
        scroll_width, inner_width, smallest_text, shot_width = _show(browser, svg, tmp_path, picture.__name__)
    finally:
        browser.quit()
    assert scroll_width <= inner_width <= WINDOW  # no horizontal scroll
    assert smallest_text >= 12  # readable at its own size: nothing was shrunk to fit
    assert shot_width <= WINDOW
