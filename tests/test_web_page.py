"""The web page at / in a real browser: Debian's headless Chromium driven by selenium (chromedriver given by path,
so selenium's manager never looks for a browser online), against a real server holding the bundled model."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import ROOT, Server

pytestmark = pytest.mark.slow
PHOTOS = ROOT / "tests" / "fixtures" / "cifar10"
SCREENSHOT = ROOT / "docs" / "images" / "web-page.png"


@pytest.fixture(scope="module")
def server():
    s = Server(ROOT / "models", "--poll-interval-s", "0")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "the browser tests need Debian's chromium and chromium-driver: run `make tools`"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,900"):
        options.add_argument(argument)
    b = webdriver.Chrome(service=ChromeService(executable_path=driver), options=options)
    b.set_page_load_timeout(30)
    yield b
    b.quit()


def open_page(browser, server) -> None:
    browser.get(server.url + "/")
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#model option"))


def upload(browser, *paths) -> None:
    before = len(browser.find_elements(By.CSS_SELECTOR, ".card"))
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in paths))
    WebDriverWait(browser, 20).until(
        lambda b: (
            len(b.find_elements(By.CSS_SELECTOR, ".card")) >= before + len(paths)
            and all(c.find_elements(By.CSS_SELECTOR, ".meta, .error") for c in b.find_elements(By.CSS_SELECTOR, ".card"))
        )
    )


def test_an_uploaded_photo_shows_what_the_api_answers(browser, server):
    open_page(browser, server)
    photo = PHOTOS / "cat_1.jpg"
    upload(browser, photo)
    card = browser.find_elements(By.CSS_SELECTOR, ".card")[0]
    label = card.find_element(By.CSS_SELECTOR, ".pred.top .label").text
    score = card.find_element(By.CSS_SELECTOR, ".pred.top .score").text
    api = httpx.post(server.url + "/classify?top_k=5", content=photo.read_bytes(), headers={"Content-Type": "image/jpeg"})
    top = api.json()["predictions"][0]
    assert label == top["label"]
    assert score == f"{100 * top['score']:.1f}%" or abs(float(score.rstrip("%")) - 100 * top["score"]) <= 0.05, score
    meta = card.find_element(By.CSS_SELECTOR, ".meta").text
    assert "cifar10-resnet56 v3" in meta and "queue" in meta and "inference" in meta and "total" in meta
    assert len(card.find_elements(By.CSS_SELECTOR, ".pred")) == 5  # top_k 5: the bars


def test_an_svg_shows_the_unsupported_type_message(browser, server, tmp_path):
    open_page(browser, server)
    svg = tmp_path / "drawing.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    upload(browser, svg)
    error = browser.find_elements(By.CSS_SELECTOR, ".card")[0].find_element(By.CSS_SELECTOR, ".error").text
    assert error.startswith("Unsupported file type") and "svg" in error.lower(), error


def test_several_files_go_as_one_batch_and_the_live_panel_counts_them(browser, server):
    open_page(browser, server)
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "stat-answered").text.isdigit())
    before = int(browser.find_element(By.ID, "stat-answered").text)
    upload(browser, *sorted(PHOTOS.glob("*_2.jpg"))[:3])  # three files: one POST /classify/batch
    upload(browser, PHOTOS / "dog_1.jpg")
    WebDriverWait(browser, 10).until(lambda b: int(b.find_element(By.ID, "stat-answered").text) >= before + 2)
    assert browser.find_element(By.ID, "stat-rps").text not in ("-", "offline")
    assert browser.find_element(By.ID, "stat-p50").text.endswith("ms")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1100, 1150)  # the live panel and the results in one picture
    try:
        browser.save_screenshot(str(SCREENSHOT))  # the README shows it
    finally:
        browser.set_window_size(1100, 900)


def test_phone_width_has_no_horizontal_overflow_and_controls_are_labelled(browser, server):
    browser.set_window_size(390, 844)
    try:
        open_page(browser, server)
        upload(browser, PHOTOS / "ship_1.jpg")
        time.sleep(0.2)
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{overflow}px wider than the 390 px viewport"
        unlabelled = browser.execute_script(
            "return [...document.querySelectorAll('input, select')].filter(e => !e.closest('label')).map(e => e.id)"
        )
        assert unlabelled == []
        drop = browser.find_element(By.ID, "drop")
        assert drop.get_attribute("tabindex") == "0" and drop.get_attribute("aria-label")
    finally:
        browser.set_window_size(1100, 900)


def test_the_page_makes_no_outside_request(server):
    """Offline and air-gapped clusters: the page and its assets name no other host (no CDN, no web font)."""
    for path in ("/", "/static/app.js", "/static/app.css"):
        r = httpx.get(server.url + path)
        assert r.status_code == 200, path
        assert "http://" not in r.text and "https://" not in r.text and "//cdn" not in r.text, path
