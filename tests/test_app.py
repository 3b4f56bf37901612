"""The web demo in a real headless Chromium: upload a WAV, read the label, compare with ``ser predict``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app as cli
from tests.conftest import ROOT, free_port, wait_until_up
from tests.test_predict import MODEL_NAME, registered_store  # noqa: F401
from tests.test_serving import stop_tree

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = ROOT / "reports" / "app.png"

pytestmark = pytest.mark.slow


@pytest.fixture
def demo_app(registered_store, tmp_path) -> Iterator[str]:  # noqa: F811
    """``streamlit run app/demo.py`` (as ``make app``) on a free 127.0.0.1 port over the test store."""
    pytest.importorskip("streamlit")
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{registered_store / 'mlflow.db'}"}
    env["HOME"] = str(tmp_path)  # Streamlit keeps its files under ~/.streamlit
    command = [str(bin_dir / "streamlit"), "run", str(ROOT / "app" / "demo.py"), "--server.port", str(port)]
    command += [
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--client.toolbarMode",
        "viewer",
    ]
    log_path = tmp_path / "app.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(f"{url}/_stcore/health", process, log_path)
            yield url
        finally:
            stop_tree(process.pid)


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium through Debian's chromedriver (nothing downloaded)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            "needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,1800",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_upload_shows_the_same_emotion_as_ser_predict(
    demo_app,
    browser,
    registered_store,  # noqa: F811
    demo_features,
    tmp_path,
    monkeypatch,
):
    from selenium.webdriver.common.by import By

    wav = sorted((demo_features / "data" / "raw" / "speech" / "Actor_02").glob("03-01-05-*.wav"))[0]
    clip = shutil.copy(wav, tmp_path / wav.name)
    browser.get(demo_app)
    upload = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, "input[type=file]"), 120, "the file uploader"
    )
    upload[0].send_keys(str(clip))

    def label() -> str | None:
        found = re.search(r"Predicted emotion: (\w+)", browser.find_element(By.TAG_NAME, "body").text)
        return found.group(1) if found else None

    shown = wait_for(label, 120, "the predicted emotion")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "[data-testid=stImage] img"), 60, "the plots")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "canvas, svg.marks"), 60, "the bar chart")
    time.sleep(2)  # let the chart finish drawing before the screenshot
    page = browser.find_element(By.TAG_NAME, "body").text
    assert f"{MODEL_NAME} v1 (@champion)" in page and "primary metric (uar)" in page
    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{registered_store / 'mlflow.db'}")
    result = CliRunner().invoke(cli, ["predict", str(clip), "--json", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    import mlflow

    mlflow.set_tracking_uri(None)
    assert shown == json.loads((tmp_path / "p.json").read_text())["files"][0]["label"]
