"""`evo report`'s page in a real headless browser (Debian's chromium, driven by selenium through
chromium-driver; .ci/run installs both): it loads from a file with no console errors, its
figures render (screenshots that are not blank), and a click on a point of the progress
figure shows that individual's lineage, as the population's files record it. One browser
session for every assertion."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import pytest

from bench.report_speed import make_population
from launch.cli import main

pytest.importorskip("plotly", reason="evo report needs plotly (pip install -e '.[report]')")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.slow,  # a real headless browser
              pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                 reason="Debian's chromium and chromium-driver are not installed "
                                        "(apt-get install chromium chromium-driver; .ci/run does)")]
POLL, DEADLINE = 0.05, 60.0
FIGURES = ["progress-figure", "lineage-figure", "improvements-figure", "health-figure", "workers-figure",
           "strategy-figure", "arch-figure-1", "arch-figure-2"]


def wait_for(driver, script: str, what: str):
    """Poll ``script`` (JavaScript returning a value) until it is truthy; its value."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(POLL)
    raise AssertionError(f"timed out waiting for {what}")


def pixel_spread(png: bytes) -> tuple[float, int]:
    """(standard deviation of the grey levels, number of distinct colours) of a screenshot."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return float(img.mean(axis=2).std()), len(np.unique(img.reshape(-1, 3), axis=0))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    url = str(root / "pop")
    make_population(url, 120, 15, 3, seed=2, policy=True)
    out = root / "report.html"
    assert main(["report", url, "-o", str(out), "--top", "2"]) == 0
    return url, out


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_loads_renders_and_a_click_shows_the_lineage(page, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    url, out = page
    records = {}
    for folder in ("alive", "history"):
        for f in (Path(url) / folder).iterdir():
            rec = json.loads(f.read_text())
            records[rec["id"]] = rec
    browser.get(out.as_uri())
    for fig in FIGURES:  # plotly draws each figure into an svg of its own
        wait_for(browser, f"var d=document.getElementById('{fig}');"
                          "return d && d._fullLayout && d.querySelector('svg.main-svg') !== null;", fig)
    wait_for(browser, "return document.getElementById('progress-figure').getAttribute('data-ready');",
             "the progress figure's hover labels and click handler")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors

    blank = pixel_spread(browser.find_element(By.TAG_NAME, "header").screenshot_as_png)
    for fig in ("progress-figure", "health-figure"):
        element = browser.find_element(By.ID, fig)
        browser.execute_script("arguments[0].scrollIntoView();", element)
        spread, colours = pixel_spread(element.screenshot_as_png)
        assert spread > 5 and colours > 20, (fig, spread, colours, blank)
    for k in (1, 2):  # each architecture drawn: its vertices as boxes, its edges as arrows
        boxes = browser.execute_script(f"return document.querySelectorAll('#arch-figure-{k} g.annotation').length")
        assert boxes >= 4, boxes

    # Click the fittest live individual's marker with the mouse, as a user would.
    fig = browser.find_element(By.ID, "progress-figure")
    browser.execute_script("arguments[0].scrollIntoView();", fig)
    target = browser.execute_script("""
        var gd=arguments[0], k=gd.data.findIndex(function(t){return t.name.indexOf('alive')===0;});
        var t=gd.data[k], y=window.evoDecode(t.y), idx=window.evoDecode(t.customdata), best=0;
        for(var i=1;i<y.length;i++){if(y[i]>y[best])best=i;}
        var pts=gd.querySelectorAll('.scatterlayer .trace')[k].querySelectorAll('path.point');
        return [window.evoPoints.id[idx[best]], pts[best], t.text[best], y.length, pts.length];""", fig)
    ident, marker, label, n, drawn = target
    assert n == drawn == 15   # the alive trace: P markers
    assert label.startswith(f"{ident}<br>")   # the hover label the page made: id, then mutation
    ActionChains(browser).move_to_element(marker).pause(0.2).click().perform()
    title = wait_for(browser, "var t=document.getElementById('clicked-title'); return t && t.textContent;",
                     "the lineage panel")
    assert title.startswith(f"lineage of {ident}:"), title
    shown = [tr.get_attribute("data-id") for tr in browser.find_elements(By.CSS_SELECTOR, "#clicked-steps tr[data-id]")]
    expected = [ident]  # the lineage from the population's files
    while records[expected[-1]]["parent"]:
        expected.append(records[expected[-1]]["parent"])
    expected.reverse()
    assert shown == expected and len(expected) > 2
    assert f"{len(expected) - 1} generation(s)" in title
    # ... and the clicked lineage is drawn on the figure
    assert browser.execute_script("var d=arguments[0].data; return d[d.length-1].x.length;", fig) == len(expected)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
