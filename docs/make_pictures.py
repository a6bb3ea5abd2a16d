"""Make the README's pictures: a graph of the lecture's neuron (SVG) and a screenshot of
the step-through page (PNG), taken in headless Chromium. Run from the repository root:
    .venv/bin/python docs/make_pictures.py
"""

import pathlib
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from autograd import Value
from autograd.trace import trace_backward
from autograd.viz import draw, save_svg

HERE = pathlib.Path(__file__).parent


def neuron():
    x1, x2 = Value(2.0, "x1"), Value(-1.0, "x2")
    w1, w2, b = Value(0.5, "w1"), Value(-0.25, "w2"), Value(0.1, "b")
    y = (w1 * x1 + w2 * x2 + b).sigmoid()
    y.label = "y"
    loss = (y - 1.0) ** 2
    loss.label = "L"
    return loss


def main():
    loss = neuron()
    loss.backward()
    save_svg(draw(loss, rankdir="LR"), HERE / "neuron_graph.svg")
    page = pathlib.Path(tempfile.mkdtemp()) / "trace.html"
    trace_backward(neuron()).save_html(page)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1366,820",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.get(page.as_uri())
        for _ in range(5):
            browser.find_element(By.CLASS_NAME, "trace-next").click()
        browser.save_screenshot(str(HERE / "step_through.png"))
    finally:
        browser.quit()


if __name__ == "__main__":
    main()
