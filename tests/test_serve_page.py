"""The page of `resnetlab serve` in a real headless Chromium: what it shows is what the model computes.

The server runs as a subprocess (the real `python -m resnetlab serve`) on a tiny checkpoint trained here; the
browser uploads a real CIFAR-10 JPEG and the page's top-5 must equal ``resnetlab.Predictor`` on the same file.
Needs Debian's ``chromium`` and ``chromium-driver`` (`make test` installs them): skipped without them, failed
under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from extras_helpers import need, on_ci
from serve_helpers import free_port
from train_helpers import ROOT, tiny_config, write_tree

need("fastapi", "serve")
need("uvicorn", "serve")
need("selenium", "test")

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"  # ../shared/data from the repo root
# The README's screenshot is this test's: `RESNETLAB_SCREENSHOTS=docs/img pytest tests/test_serve_page.py` writes
# it there; otherwise it goes to the test's tmp_path (a test run leaves the tree clean).
SCREENSHOTS = os.environ.get("RESNETLAB_SCREENSHOTS")
# six colours: top-5 needs at least five classes (train_helpers.write_tree has three)
COLOURS = {"red": (200, 50, 40), "green": (40, 180, 60), "blue": (40, 60, 200), "yellow": (220, 200, 40),
           "purple": (140, 50, 170), "grey": (128, 128, 128)}
WAIT_S = 60


def _missing(reason: str) -> None:
    if on_ci():
        pytest.fail(f"{reason}; with CI=true this test must run, not skip", pytrace=False)
    pytest.skip(reason)


def _write_colours(root: Path) -> Path:
    return write_tree(root, train=12, test=2, size=8, colours=COLOURS)


def _one_cifar_jpeg(out: Path, prefix: str = "cifar10/test/cat/") -> Path:
    """The first member under ``prefix`` of the CIFAR-10 archive, read as a stream (nothing else unpacked)."""
    if not CIFAR.is_file():
        _missing(f"real CIFAR-10 not found: {CIFAR} is absent (../shared/data is not part of a clone)")
    with tarfile.open(CIFAR, "r|gz") as tar:
        for member in tar:
            if member.isfile() and member.name.startswith(prefix) and member.name.endswith(".jpg"):
                path = out / f"cat-{Path(member.name).name}"
                path.write_bytes(tar.extractfile(member).read())
                return path
    raise AssertionError(f"no {prefix}*.jpg in {CIFAR}")


def _get_json(url: str) -> tuple[int, dict | None]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny model trained here; RESNETLAB_PAGE_CHECKPOINT=RUN runs the same test on a real run instead (how
    the README's screenshot is taken: with RESNETLAB_SCREENSHOTS=docs/img)."""
    from resnetlab.train.engine import fit

    if os.environ.get("RESNETLAB_PAGE_CHECKPOINT"):
        return Path(os.environ["RESNETLAB_PAGE_CHECKPOINT"])
    root = tmp_path_factory.mktemp("serve_page")
    fit(tiny_config(_write_colours(root / "colours"), root / "run", epochs=2))
    return root / "run"


@contextmanager
def _serving(checkpoint: Path, log: Path, *flags: str) -> Iterator[tuple[str, dict]]:
    """(base URL, /v1/model) of `python -m resnetlab serve` on a free loopback port, stopped on exit."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    args = [sys.executable, "-m", "resnetlab", "serve", "--checkpoint", str(checkpoint), "--port", str(port),
            "--threads", "1", *flags]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if _get_json(f"{base}/readyz")[0] == 200:
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"/readyz not 200 within {WAIT_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        status, model = _get_json(f"{base}/v1/model")
        assert status == 200 and model, f"GET /v1/model answered {status}"
        yield base, model
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    with _serving(checkpoint, tmp_path_factory.mktemp("serve_log") / "serve.log") as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        _missing(f"headless Chromium not found ({CHROMIUM}, {CHROMEDRIVER}): "
                 "`apt-get install chromium chromium-driver` (`make test` does it as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")  # Selenium Manager looks nothing up: the binaries are given
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, what: str, timeout: float = WAIT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, f"timed out waiting for {what}")


def _no_error(driver) -> None:
    from selenium.webdriver.common.by import By

    error = driver.find_element(By.ID, "error")
    assert not error.is_displayed(), f"the page shows an error: {error.text}"


def _js_errors(driver) -> list[str]:
    try:
        return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    except Exception:  # noqa: BLE001 - a driver without logs
        return []


def test_the_page_shows_the_models_top5_errors_and_explanation(browser, server, checkpoint, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    import resnetlab

    base, model = server
    jpeg = _one_cifar_jpeg(tmp_path)
    driver = browser
    driver.set_window_size(1000, 900)
    driver.get(base + "/")
    _wait(driver, lambda d: d.find_element(By.ID, "model-info").text.startswith("Model:"), "#model-info")
    info = driver.find_element(By.ID, "model-info").text
    assert model["name"] in info and model["backend"] in info, info

    # keyboard: the first Tab reaches the drop zone; Enter there opens the file chooser; the input is labelled
    driver.execute_script("document.getElementById('file').addEventListener('click', (e) => "
                          "{ window.chooserOpened = true; e.preventDefault(); }, { once: true });")
    ActionChains(driver).send_keys(Keys.TAB).perform()
    assert driver.switch_to.active_element.get_attribute("id") == "drop"
    assert driver.find_element(By.ID, "drop").get_attribute("tabindex") == "0"
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    assert driver.execute_script("return window.chooserOpened === true"), "Enter on #drop did not open the chooser"
    labels = driver.execute_script("return Array.from(document.getElementById('file').labels, l => l.textContent)")
    assert labels and labels[0].strip(), "#file has no <label>"
    assert driver.find_element(By.CSS_SELECTOR, "label[for=file]").is_displayed()
    assert driver.find_element(By.ID, "results").get_attribute("aria-live") == "polite"

    # a real JPEG: the page's five classes and probabilities are the Predictor's, on the server's backend
    driver.find_element(By.ID, "file").send_keys(str(jpeg))
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.result")) == 5
          or d.find_element(By.ID, "error").is_displayed(), "5 results")
    _no_error(driver)
    shown = [(li.find_element(By.CSS_SELECTOR, ".class-name").text,
              float(li.find_element(By.CSS_SELECTOR, ".prob").get_attribute("data-prob")))
             for li in driver.find_elements(By.CSS_SELECTOR, "#results li.result")]
    expected = resnetlab.Predictor(checkpoint, backend=model["backend"]).predict([str(jpeg)], topk=5)[0]
    assert [name for name, _ in shown] == [name for name, _ in expected], (shown, expected)
    for (name, p), (_, q) in zip(shown, expected):
        assert abs(p - q) <= 1e-5, (name, p, q)
    first = driver.find_element(By.CSS_SELECTOR, "#results li.result .prob").text
    assert first == f"{shown[0][1] * 100:.1f} %", first
    assert " ms (server " in driver.find_element(By.ID, "latency").text
    assert driver.find_element(By.ID, "preview").is_displayed()

    # the explanation, when the server offers one
    cam = driver.find_element(By.ID, "show-cam")
    if model.get("explain"):
        assert cam.is_displayed()
        cam.click()
        _wait(driver, lambda d: (d.find_element(By.ID, "overlay").get_attribute("src") or "").startswith(
            "data:image/png;base64,") and d.find_element(By.ID, "overlay").is_displayed()
            or d.find_element(By.ID, "error").is_displayed(), "#overlay")
        _no_error(driver)
        assert driver.execute_script("return document.getElementById('overlay').naturalWidth") > 0
    else:
        assert not cam.is_displayed() and not driver.find_element(By.ID, "overlay").is_displayed()
    shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(shots / "serve_page.png"))

    # phone-sized: one column, nothing wider than the screen
    for width, height in ((390, 844), (320, 640)):
        driver.set_window_size(width, height)
        _wait(driver, lambda d, w=width: d.execute_script("return window.innerWidth") <= w, f"a {width} px window", 10)
        overflow = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert overflow[0] <= overflow[1], f"horizontal scrolling at {width} px: {overflow}"
        if width == 390:
            assert driver.save_screenshot(str(tmp_path / "serve_page_phone.png"))
    driver.set_window_size(1000, 900)

    # not an image: an error in plain words, and no stale results
    notes = tmp_path / "notes.txt"
    notes.write_text("Meeting notes: this is text, not a picture.\n")
    driver.find_element(By.ID, "file").send_keys(str(notes))
    _wait(driver, lambda d: d.find_element(By.ID, "error").is_displayed(), "#error")
    error = driver.find_element(By.ID, "error")
    assert "not an image" in error.text, error.text
    assert error.get_attribute("role") == "alert"
    assert not driver.find_elements(By.CSS_SELECTOR, "#results li.result")
    assert not driver.find_element(By.ID, "overlay").is_displayed()
    assert not [e for e in _js_errors(driver) if "/v1/" not in e], _js_errors(driver)


def test_the_static_files_are_served(server):
    base, _ = server
    for path, kind in (("/", "text/html"), ("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        with urllib.request.urlopen(base + path, timeout=5) as r:
            assert r.status == 200 and kind in r.headers.get("content-type", ""), (path, r.headers)
            assert r.read()


def test_without_explanations_and_with_a_small_body_limit(browser, checkpoint, tmp_path):
    """No checkbox when the server cannot explain; a file over the limit is refused in plain words, by the page
    (larger than the limit) and by the server (the file fits, the request with its multipart headers does not)."""
    from selenium.webdriver.common.by import By

    with _serving(checkpoint, tmp_path / "serve.log", "--no-explain", "--max-body-mb", "0.05") as (base, model):
        assert model["explain"] is False and model["limits"]["max_body_mb"] == 0.05
        limit = int(0.05 * 1024 * 1024)
        driver = browser
        driver.set_window_size(1000, 900)
        driver.get(base + "/")
        _wait(driver, lambda d: d.find_element(By.ID, "model-info").text.startswith("Model:"), "#model-info")
        assert not driver.find_element(By.ID, "show-cam").is_displayed()
        for size, server_said in ((limit + 1, False), (limit - 16, True)):
            big = tmp_path / f"big-{size}.jpg"
            big.write_bytes(b"\xff" * size)
            driver.execute_script("document.getElementById('error').hidden = true")
            driver.find_element(By.ID, "file").send_keys(str(big))
            _wait(driver, lambda d: d.find_element(By.ID, "error").is_displayed(), "#error")
            text = driver.find_element(By.ID, "error").text
            assert text.startswith("That file is too big: the server takes at most 0.05 MB"), text
            assert ("The server said:" in text) is server_said, text
            assert not driver.find_elements(By.CSS_SELECTOR, "#results li.result")
