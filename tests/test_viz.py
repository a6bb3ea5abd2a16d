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
from autograd.viz import HIGHLIGHT, draw, render_svg, save_svg

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


def neuron():
    x1, x2 = Value(2.0, "x1"), Value(-1.0, "x2")
    w1, w2, b = Value(0.5, "w1"), Value(-0.25, "w2"), Value(0.1, "b")
    y = (w1 * x1 + w2 * x2 + b).tanh()
    y.label = "y"
    return y, (x1, x2, w1, w2, b)


def test_value_graph_has_a_node_per_value_and_per_op():
    y, leaves = neuron()
    source = draw(y).source
    assert source.count("shape=record") == 10  # 5 leaves, 2 products, 2 sums and y
    assert source.count("shape=ellipse") == 5  # *, *, +, +, tanh
    assert "w1 | data 0.5000 | grad 0.0000" in source
    y.backward()
    w1 = leaves[2]
    assert w1.grad == pytest.approx(2.0 * (1 - y.data**2))
    assert f"w1 | data 0.5000 | grad {w1.grad:.4f}" in draw(y).source
    assert "rankdir=TB" in draw(y, rankdir="TB").source
    assert "grad" not in draw(y, show_grad=False).source and "data" not in draw(y, show_data=False).source


def test_edges_follow_the_data():
    a, b = Value(1.0, "a"), Value(2.0, "b")
    c = a * b
    source = draw(c).source
    op = f"op{id(c)}"
    assert f"v{id(a)} -> {op}" in source and f"{op} -> v{id(c)}" in source


def test_tensor_graph_names_parameters_and_shows_shapes():
    autograd.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    loss = nn.functional.cross_entropy(model(autograd.randn(5, 3)), autograd.tensor([0, 1, 1, 0, 1]))
    source = draw(loss, names=dict(model.named_parameters())).source
    for name in ("0.weight", "0.bias", "2.weight", "2.bias"):
        assert name in source
    assert "(4, 3) float32" in source and "AffineMap" in source and "Relu" in source
    assert "mean " in source  # a larger tensor is summarised
    small = draw(Tensor([1.0, 2.0], requires_grad=True) * 3).source
    assert "data [3., 6.]" in small  # a small one shows its numbers


def test_node_limit_says_what_was_collapsed():
    x = Value(1.0)
    y = x
    for _ in range(50):
        y = y * 1.0
    source = draw(y, max_nodes=10).source
    assert source.count("shape=record") == 10
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
    assert "y = tanh(v1)" in trace.steps[0].caption


def test_value_trace_records_the_chain_rule_in_numbers():
    a, b = Value(3.0, "a"), Value(-2.0, "b")
    c = a * b
    c.label = "c"
    d = c + a  # a is reused
    d.label = "d"
    trace = trace_backward(d)
    by_name = {step.name: step for step in trace.steps}
    assert by_name["c"].local == (-2.0, 3.0)
    assert by_name["c"].contributions == (("a", -2.0), ("b", 3.0))
    assert "dL/da += dL/dc · dc/da = 1 × -2 = -2" in by_name["c"].caption
    assert "a is a leaf: dL/da = -1 (the sum of 2 shares)" in by_name["a"].caption
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
    text = page.read_text()
    assert text.count("<svg") == 11  # the forward graph and one per step
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
    """The title of the node drawn in the highlight colour in the visible step's SVG."""
    return browser.execute_script(f"""
        var steps = document.querySelectorAll('.step');
        for (var i = 0; i < steps.length; i++) {{
            if (steps[i].style.display === 'none') continue;
            var shape = steps[i].querySelector('[fill="{HIGHLIGHT}"]');
            return shape ? shape.parentNode.querySelector('title').textContent : '';
        }}
        return null;""")


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
        assert _highlighted_node(browser) == ""  # nothing processed yet
        browser.find_element(By.CLASS_NAME, "trace-next").click()
        first_caption, first_node = caption.text, _highlighted_node(browser)
        assert first_caption.startswith("y = tanh(v1)") and first_node == f"v{id(y)}"
        browser.find_element(By.CLASS_NAME, "trace-next").click()
        assert caption.text != first_caption and _highlighted_node(browser) not in ("", first_node)
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
        assert caption.text == first_caption and _highlighted_node(browser) == first_node
        assert counter.text == "step 1 of 10"
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
