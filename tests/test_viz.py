"""Graph drawing and the step-through of backpropagation, including the HTML page in a
real headless browser (Debian's chromium and chromedriver, driven by Selenium)."""

import os
import re
import shutil

import numpy as np
import pytest

import autograd
import nn
from autograd import Tensor, Value
from autograd.trace import trace_backward
from autograd.viz import HIGHLIGHT, dot_available, draw, render_svg, save_svg

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


def neuron():
    x1, x2 = Value(2.0, "x1"), Value(-1.0, "x2")
    w1, w2, b = Value(0.5, "w1"), Value(-0.25, "w2"), Value(0.1, "b")
    y = (w1 * x1 + w2 * x2 + b).tanh()
    y.label = "y"
    return y, (x1, x2, w1, w2, b)


def test_value_graph_has_a_node_per_value_and_per_op():
    y, leaves = neuron()
    source = draw(y, legend=False).source
    assert source.count("shape=plain") == 10  # 5 leaves, 2 products, 2 sums and y
    assert source.count("shape=ellipse") == 5  # *, *, +, +, tanh
    assert "<B>w1</B></TD></TR><TR><TD>data 0.5</TD></TR><TR><TD>grad 0</TD>" in source
    y.backward()
    w1 = leaves[2]
    assert w1.grad == pytest.approx(2.0 * (1 - y.data**2))
    assert f"<B>w1</B></TD></TR><TR><TD>data 0.5</TD></TR><TR><TD>grad {w1.grad:.4g}</TD>" in draw(y).source
    assert "rankdir=TB" in draw(y, rankdir="TB").source and "rankdir=LR" in draw(y).source
    assert "grad" not in draw(y, show_grad=False).source and "data" not in draw(y, show_data=False).source


def test_edges_follow_the_data():
    a, b = Value(1.0, "a"), Value(2.0, "b")
    c = a * b
    graph = draw(c)
    ids = graph.node_ids  # stable ids in the order of the walk: the same graph draws the same picture
    op = ids[f"op{id(c)}"]
    assert f"{ids[f'v{id(a)}']} -> {op}" in graph.source and f"{op} -> {ids[f'v{id(c)}']}" in graph.source
    assert graph.source == draw(Value(1.0, "a") * Value(2.0, "b")).source


def test_tensor_graph_names_parameters_and_shows_shapes():
    autograd.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    loss = nn.functional.cross_entropy(model(autograd.randn(5, 3)), autograd.tensor([0, 1, 1, 0, 1]))
    source = draw(loss, names=dict(model.named_parameters())).source
    for name in ("0.weight", "0.bias", "2.weight", "2.bias", "<B>loss</B>"):
        assert name in source
    assert "(4, 3) float32" in source and "AffineMap" in source and "Relu" in source
    assert "mean " in source  # a larger tensor is summarised
    assert f"rankdir={'TB' if dot_available() else 'LR'}" in source  # a row of its 10 values: 1600 px, too wide
    small = draw(Tensor([1.0, 2.0], requires_grad=True) * 3).source
    assert "data [3., 6.]" in small  # a small one shows its numbers


def test_node_limit_says_what_was_collapsed():
    x = Value(1.0)
    y = x
    for _ in range(50):
        y = y * 1.0
    source = draw(y, max_nodes=10).source
    assert source.count("shape=plain") == 10
    assert "91 more nodes not drawn (max_nodes=10)" in source


def test_freed_graph_is_drawn_as_freed():
    x = Tensor([1.0], requires_grad=True)
    y = (x * 2).sum()
    y.backward()
    assert "(freed)" in draw(y).source


@needs_dot
def test_save_svg_writes_svg(tmp_path):
    y, _ = neuron()
    path = save_svg(draw(y), tmp_path / "graph.svg")
    text = path.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and "tanh" in text


def test_without_dot_rendering_names_the_install_command(monkeypatch):
    y, _ = neuron()
    graph = draw(y)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match=r"sudo apt-get install graphviz.*graph.source"):
        render_svg(graph)
    assert "digraph" in graph.source  # the DOT text is still there


def test_value_trace_does_not_change_the_gradients():
    traced, leaves = neuron()
    plain, plain_leaves = neuron()
    trace = trace_backward(traced)
    plain.backward()
    assert [v.grad for v in leaves] == [v.grad for v in plain_leaves]
    assert len(trace) == 10  # every value once: y, the sums, the products, the leaves
    assert trace.steps[0].name == "y" and trace.steps[0].upstream == 1.0
    assert "y = tanh(v4)" in trace.steps[0].caption  # v1..v4 in reading order: w1·x1, w2·x2, their sum, + b
    assert "dy/dv4 = dy/dy · d(tanh(v4))/dv4 = 1 × 1 - tanh²(v4) = 1 × " in trace.steps[0].caption
    assert trace.names["v1"].parents == (trace.names["w1"], trace.names["x1"])


def test_value_trace_records_the_chain_rule_in_numbers():
    a, b = Value(3.0, "a"), Value(-2.0, "b")
    c = a * b
    c.label = "c"
    d = c + a  # a is reused
    d.label = "L"
    trace = trace_backward(d)
    by_name = {step.name: step for step in trace.steps}
    assert by_name["c"].local == (-2.0, 3.0)
    assert by_name["c"].contributions == (("a", -2.0), ("b", 3.0))
    # the local derivative as the lecture writes it: d(a·b)/da = b
    assert "dL/da += dL/dc · d(a · b)/da = 1 × b = 1 × -2 = -2" in by_name["c"].caption
    assert "dL/db = dL/dc · d(a · b)/db = 1 × a = 1 × 3 = 3" in by_name["c"].caption
    assert "a is a leaf: dL/da = -1, the sum of 2 shares, its final gradient" in by_name["a"].caption
    # the picture shows the same moment: after c's step a holds c's share, b its final-to-be gradient
    assert by_name["c"].grads[f"v{id(a)}"] == 1 - 2 and by_name["c"].grads[f"v{id(b)}"] == 3
    assert f"v{id(a)}" in by_name["c"].received and f"v{id(c)}" not in by_name["c"].received
    assert [s.name for s in trace.steps].index("a") > [s.name for s in trace.steps].index("c")


def test_tensor_trace_does_not_change_the_gradients_and_names_shapes():
    def run(traced):
        autograd.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        loss = nn.functional.mse_loss(model(autograd.randn(6, 3)), autograd.zeros(6, 2))
        trace = trace_backward(loss, names=dict(model.named_parameters())) if traced else loss.backward()
        return [p.grad.numpy() for p in model.parameters()], trace

    traced_grads, trace = run(True)
    plain_grads, _ = run(False)
    for a, b in zip(traced_grads, plain_grads):
        np.testing.assert_array_equal(a, b)
    captions = trace.captions()
    assert any("AffineMap" in c and "dL/d0.weight (4, 3)" in c for c in captions)
    assert any(c.startswith("leaf 2.bias (2,)") for c in captions)


@needs_dot
def test_html_page_is_self_contained(tmp_path):
    y, _ = neuron()
    page = trace_backward(y).save_html(tmp_path / "trace.html")
    text = page.read_text(encoding="utf-8")
    assert text.count("<svg") == 11  # the forward graph and one per step
    assert "0x" not in text and text == trace_backward(neuron()[0]).html()  # the same page every time
    assert not re.search(r"(src|href)=\"(https?:)?//", text) and "<script src" not in text
    assert HIGHLIGHT in text


def _browser():
    """A headless Chromium driven by Selenium, or None where they are not installed."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    if not (chromium and driver and webdriver):
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: .ci/run installs chromium and chromium-driver")
        pytest.skip("chromium, chromedriver or selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def _highlighted_node(browser):
    """(title, text) of the node drawn in the highlight colour in the visible step's SVG."""
    return browser.execute_script(f"""
        var step = document.querySelector('.step.shown');
        if (!step) return null;
        var shape = step.querySelector('[fill="{HIGHLIGHT}"]');
        if (!shape) return ['', ''];
        var node = shape.closest('g.node');
        var texts = Array.prototype.map.call(node.querySelectorAll('text'), function (t) {{ return t.textContent; }});
        return [node.querySelector('title').textContent, texts.join(' ')];""")


def _node_text(browser, title):
    """The text of the visible step's node with this title (its name, data and grad)."""
    return browser.execute_script("""
        var titles = document.querySelectorAll('.step.shown g.node > title');
        for (var i = 0; i < titles.length; i++)
            if (titles[i].textContent === arguments[0])
                return Array.prototype.map.call(titles[i].parentNode.querySelectorAll('text'),
                                                function (t) { return t.textContent; }).join(' ');
        return null;""", title)


def _layout(browser):
    """What must not move or overflow between steps, and the smallest text on screen in px."""
    return browser.execute_script("""
        var frames = document.querySelector('.trace-frames').getBoundingClientRect();
        var caption = document.querySelector('.trace-caption').getBoundingClientRect();
        var smallest = 1e9, texts = document.querySelectorAll('.step.shown svg text');
        for (var i = 0; i < texts.length; i++) {
            var size = parseFloat(getComputedStyle(texts[i]).fontSize) * texts[i].getScreenCTM().a;
            smallest = Math.min(smallest, size);
        }
        var body = document.querySelectorAll('.trace-caption, .trace-counter, .trace-controls button');
        for (var k = 0; k < body.length; k++)
            smallest = Math.min(smallest, parseFloat(getComputedStyle(body[k]).fontSize));
        return {frames_top: frames.top, frames_height: frames.height, caption_top: caption.top,
                caption_height: caption.height, scroll_width: document.documentElement.scrollWidth,
                inner_width: window.innerWidth, smallest_text: smallest};""")


@needs_dot
def test_step_through_page_in_a_real_browser(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    y, _ = neuron()
    page = trace_backward(y).save_html(tmp_path / "trace.html")
    browser = _browser()
    try:
        browser.get(page.resolve().as_uri())
        caption = browser.find_element(By.CLASS_NAME, "trace-caption")
        counter = browser.find_element(By.CLASS_NAME, "trace-counter")
        assert counter.text == "step 0 of 10" and "forward pass is done" in caption.text
        assert _highlighted_node(browser) == ["", ""]  # nothing processed yet
        browser.find_element(By.CLASS_NAME, "trace-next").click()
        first_caption, first_node = caption.text, _highlighted_node(browser)
        assert first_caption.startswith("y = tanh(v4)") and first_node[0] == "v1"  # the output, drawn first
        browser.find_element(By.CLASS_NAME, "trace-next").click()
        assert caption.text != first_caption and _highlighted_node(browser)[0] not in ("", first_node[0])
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
        assert caption.text == first_caption and _highlighted_node(browser) == first_node
        assert counter.text == "step 1 of 10"
    finally:
        browser.quit()


NUMBER = r"(-?\d[\d.e+-]*)"


@needs_dot
def test_step_through_caption_and_picture_show_the_same_moment(tmp_path):
    """At every step the gradient the caption names is the one drawn in the highlighted node, the
    shares it sends are drawn in the receiving boxes, and the page neither jumps nor overflows
    (1366 px wide, text at least 12 px)."""
    from selenium.webdriver.common.by import By

    y, _ = neuron()
    loss = (y - 1.0) ** 2
    loss.label = "L"
    trace = trace_backward(loss)
    page = trace.save_html(tmp_path / "trace.html")
    browser = _browser()
    try:
        browser.set_window_size(1366, 900)
        browser.get(page.resolve().as_uri())
        first = _layout(browser)
        root_title = trace.graph(0).node_ids[f"v{id(loss)}"]
        assert "grad 1" in _node_text(browser, root_title)  # the caption's dL/dL = 1 is drawn too
        for i in range(1, len(trace) + 1):
            browser.find_element(By.CLASS_NAME, "trace-next").click()
            text = browser.find_element(By.CLASS_NAME, "trace-caption").text
            name, value = re.search(r"dL/d(\w+) = " + NUMBER, text).groups()
            title, shown = _highlighted_node(browser)
            assert shown.startswith(name + " ") and f"grad {value}" in shown, (i, text, shown)
            ids = trace.graph(i).node_ids
            for sent_to, amount in re.findall(r"; dL/d(\w+) \+?= [^;]*= " + NUMBER + r"(?:;|$)", "; " + text):
                received = _node_text(browser, ids[f"v{id(trace.names[sent_to])}"])
                if text.count(f"dL/d{sent_to} ") == 1 and "+=" not in text:
                    assert f"grad {amount}" in received, (i, sent_to, received)
                else:
                    assert "grad ?" not in received
            layout = _layout(browser)
            for what in ("frames_top", "frames_height", "caption_top", "caption_height"):
                assert layout[what] == first[what], (i, what)  # the page does not jump
            assert layout["scroll_width"] <= layout["inner_width"] <= 1400  # no horizontal scroll
            assert layout["smallest_text"] >= 12, (i, layout)
        screenshot = tmp_path / "step.png"
        browser.save_screenshot(str(screenshot))
        width = int.from_bytes(screenshot.read_bytes()[16:20], "big")  # the PNG header's width
        assert width <= 1400
    finally:
        browser.quit()


@needs_dot
def test_trace_shows_itself_with_a_slider_in_jupyter():
    widgets = pytest.importorskip("ipywidgets", reason="the notebooks extra is not installed")
    y, _ = neuron()
    trace = trace_backward(y)
    shown = trace.show()
    slider = shown.widget.children[0]
    assert isinstance(slider, widgets.IntSlider) and (slider.min, slider.max) == (0, len(trace))
    html = trace._repr_html_()
    assert html.count("<svg") == len(trace) + 1 and "trace-next" in html and "<html" not in html


@needs_dot
def test_training_step_graph_fits_a_window_and_names_what_the_user_wrote():
    """The demo's picture: input batch and targets drawn as data, ops named by their layer
    (Linear, ReLU, CrossEntropyLoss) with the primitive in small type, the loss named `loss`,
    colours by role with a legend, top to bottom, at most 1400 px wide."""
    autograd.manual_seed(0)
    model = nn.MLP(64, [64, 64], 10)
    criterion = nn.CrossEntropyLoss()
    inputs, targets = autograd.randn(8, 64), autograd.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    output, layers = autograd.viz.run_layers(model, inputs)
    loss = criterion(output, targets)
    assert [name for name, _ in layers] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    graph = draw(loss, names={"input batch": inputs, "targets": targets, **dict(model.named_parameters())},
                 layers=[*layers, ("CrossEntropyLoss", loss)])
    source = graph.source
    assert "rankdir=TB" in source  # 16 values: a single row would not fit a window
    assert "<B>Linear</B><BR/><FONT POINT-SIZE=\"10\">AffineMap</FONT>" in source
    assert "<B>ReLU</B>" in source and "<B>CrossEntropyLoss</B>" in source
    for name in ("input batch", "targets", "loss", "0.weight", "4.bias"):
        assert f"<B>{name}</B>" in source
    colours = {role: colour for role, (colour, _) in autograd.viz.ROLES.items()}
    assert source.count(f'BGCOLOR="{colours["data"]}"') == 2 + 1  # input batch, targets, legend
    assert source.count(f'BGCOLOR="{colours["parameter"]}"') == 6 + 1
    assert "loss (where backward starts)" in source
    svg = render_svg(graph)
    width_pt = float(re.search(r'<svg width="([\d.]+)pt"', svg).group(1))
    assert width_pt * 4 / 3 <= 1400
    assert "0x" not in svg and svg == render_svg(draw(loss, names={"input batch": inputs, "targets": targets,
                                                                   **dict(model.named_parameters())},
                                                      layers=[*layers, ("CrossEntropyLoss", loss)]))


@needs_dot
def test_tensor_step_through_starts_with_the_output_gradient_drawn():
    autograd.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    loss = nn.functional.cross_entropy(model(autograd.randn(5, 3)), autograd.tensor([0, 1, 1, 0, 1]))
    trace = trace_backward(loss, names=dict(model.named_parameters()))
    first = trace.graph(0)
    assert "grad 1.<" in first.source  # dL/dL = 1, as the caption says
    last = trace.graph(len(trace)).source
    assert "grad ?" not in last  # at the end every value knows its gradient
    assert trace.html().count("<svg") == len(trace) + 1


def test_values_met_only_through_stand_ins_are_not_counted_as_left_out():
    w = Tensor([0.5, -1.0], requires_grad=True)
    (g,) = autograd.grad((w.tanh() ** 2).sum(), w, create_graph=True)
    assert "not drawn" not in draw(g.sum()).source  # every value is drawn: none was left out
