"""The web demo: bad uploads get a one-line error (Streamlit's AppTest, in-process), and in a real
headless Chromium an upload shows the label ``ser predict`` gives."""

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

from cli import app as cli
from tests.conftest import ROOT, free_port, wait_until_up
from tests.model.test_predict import MODEL_NAME, registered_store  # noqa: F401
from tests.model.test_serving import stop_tree

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = ROOT / "reports" / "app.png"


def wav_bytes(signal, sampling_rate: int = 16_000, subtype: str = "PCM_16") -> bytes:
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, signal, sampling_rate, subtype=subtype, format="WAV")
    return buffer.getvalue()


def bad_uploads() -> dict[str, tuple[bytes, str]]:
    """Upload name → (bytes, what the error must say): the inputs ``ser predict`` and the server refuse."""
    import numpy as np

    from tests.conftest import tone

    good = wav_bytes(tone(3.0))
    corrupt = bytearray(good)
    corrupt[8:16] = b"JUNKJUNK"
    nan, inf = tone(3.0), tone(3.0)
    nan[100:200], inf[50] = np.nan, np.inf
    quiet = (1e-5 * np.random.default_rng(0).standard_normal(48_000)).astype(np.float32)  # -100 dBFS
    return {
        "truncated.wav": (good[:30], "not a readable WAV/FLAC file"),
        "corrupt.wav": (bytes(corrupt), "not a readable WAV/FLAC file"),
        "empty.wav": (b"", "the file is empty"),
        "page.wav": (b"<html>not audio</html>\n" * 40, "not a readable WAV/FLAC file"),
        "nan.wav": (wav_bytes(nan, subtype="FLOAT"), "NaN or infinite samples"),
        "inf.wav": (wav_bytes(inf, subtype="FLOAT"), "NaN or infinite samples"),
        "long.wav": (wav_bytes(tone(31.0, sampling_rate=8_000), 8_000), "over the limit of 30 s"),
        "big.wav": (bytes(10_000_001), "over the limit of 10 MB"),
        "zeros.wav": (wav_bytes(np.zeros(48_000, np.float32)), "silent: every sample is zero"),
        "quiet.wav": (wav_bytes(quiet), "silent: 100.0% of frames below -60 dBFS"),
        # validate's other per-clip checks, with the model's recorded limits
        "one_hz.wav": (wav_bytes(tone(3.0), 1), "sampling rate 1 Hz outside [8000, 96000]"),
        "ten_ms.wav": (wav_bytes(tone(0.01)), "duration 0.01 s outside [0.5, ∞] s"),
        "dc.wav": (wav_bytes(np.full(48_000, 0.5, np.float32), 16_000, "FLOAT"), "constant: 100.0% of"),
        "square.wav": (wav_bytes(np.sign(np.sin(np.arange(48_000) / 8.0))), "clipped: 100.0% of samples"),
    }


@pytest.fixture
def page(registered_store, monkeypatch):  # noqa: F811
    """The demo page run in-process by Streamlit's AppTest over the test store, waiting for a clip."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{registered_store / 'mlflow.db'}")
    monkeypatch.chdir(ROOT)  # params.yaml: the silence settings
    app = AppTest.from_file(str(ROOT / "app" / "demo.py"), default_timeout=120).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert app.info[0].value == "Waiting for a clip."
    yield app
    import mlflow

    mlflow.set_tracking_uri(None)


def test_bad_uploads_get_a_one_line_error_and_a_good_one_a_label(page):
    from tests.conftest import tone

    for name, (data, expected) in bad_uploads().items():
        page.file_uploader[0].set_value((name, data, "audio/wav")).run()
        assert not page.exception, f"{name}: {page.exception}"
        errors = [e.value for e in page.error]
        assert len(errors) == 1 and errors[0].startswith(f"{name}: "), (name, errors)
        assert expected in errors[0], (name, errors)
        assert "\n" not in errors[0] and "Traceback" not in errors[0]
        assert not [h for h in page.subheader if h.value.startswith("Predicted emotion")]
    page.file_uploader[0].set_value(("good.wav", wav_bytes(tone(3.0)), "audio/wav")).run()
    assert not page.exception and not page.error
    assert page.subheader[0].value.startswith("Predicted emotion: ")


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


@pytest.mark.slow
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
