"""`metahead app` end to end in a real browser: Debian's Chromium, headless, driven by Selenium through
chromium-driver. Starts the app as a subprocess on a free port with a tiny random model, then upload →
avatar → animate on synthetic inputs; a bad upload; two tabs at once; the Live tab driven by Chromium's
fake camera playing a synthetic clip; and no request leaves this machine (every host but localhost
resolves to nothing, and the performance log lists each request).

Run with `pytest -m browser tests/test_app_browser.py` (`make test-browser`); skips where Chromium,
chromedriver or selenium are missing. METAHEAD_APP_SCREENSHOTS=DIR keeps the screenshots there, and
METAHEAD_APP_MODEL=MODEL serves that model instead of the tiny random one ("default": no --model, so the
app looks for `make demo`'s model; docs/app.md, the screenshot). METAHEAD_LIVE_SECONDS=S streams the fake
camera for at least S seconds in the Live test (docs/app.md's browser figures: 60), and METAHEAD_LIVE_FPS=F
makes the fake camera deliver F frames/s (25 unless set).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from app_inputs import photos, text_file, tiny_model
from metahead.live import synthetic_camera_clip

pytestmark = pytest.mark.browser

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver") or next(
    (p for p in ("/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver") if Path(p).is_file()), None
)
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
LIVE_SECONDS = float(os.environ.get("METAHEAD_LIVE_SECONDS", "0"))
LIVE_FPS = float(os.environ.get("METAHEAD_LIVE_FPS", "25"))
SERVER_START_SECONDS = 120
WAIT_SECONDS = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[dict]:
    """`metahead app` serving a tiny model on a free port, in its own process."""
    folder = tmp_path_factory.mktemp("app")
    given = os.environ.get("METAHEAD_APP_MODEL")
    model = (
        Path(given).resolve()
        if given
        else tiny_model(folder / "model.pt", finetune_steps=2, overrides=("finetune.min_passes=2",))
    )  # 2 steps, or 2 passes over T shots in batches of 2: the page's step slider starts at 8 for T = 8
    model_flag = [] if given == "default" else ["--model", str(model)]
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    log = open(folder / "app.log", "w")  # noqa: SIM115  (closed below)
    command = [
        sys.executable, "-m", "metahead", "app", *model_flag, "--port", str(port),
        "--work-dir", str(folder / "work"), "--threads", "1", "--max-steps", "1000",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"metahead app exited with {process.returncode}:\n{(folder / 'app.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"metahead app did not start in {SERVER_START_SECONDS} s")
            time.sleep(0.5)
        yield {"url": url, "folder": folder, "work": folder / "work", "process": process}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    assert process.returncode is not None


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory) -> Path:
    """What Chromium's fake camera plays (looped): a synthetic person talking, 320×240, 4 s at 25 fps (or
    METAHEAD_LIVE_FPS)."""
    return synthetic_camera_clip(tmp_path_factory.mktemp("camera") / "camera.y4m", seconds=4.0, fps=LIVE_FPS)


@pytest.fixture(scope="module")
def browser(camera_clip) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1700",
        "--mute-audio", "--autoplay-policy=no-user-gesture-required", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        # every host but this machine resolves to nothing: the page must load without a network
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
        # the webcam: a clip the test made, access granted without asking
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={camera_clip}",
    ):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = os.environ.get("METAHEAD_APP_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _wait(driver, condition: Callable, seconds: float = WAIT_SECONDS, what: str = ""):
    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(lambda d: condition(d), message=what)


def _text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def _upload(driver, element_id: str, paths: list[Path]) -> None:
    field = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"#{element_id} input[type=file]"))[0]
    field.send_keys("\n".join(str(p) for p in paths))


def _clear(driver, element_id: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#{element_id} button[aria-label='Clear']").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"#{element_id} input[type=file]"))


def _number(driver, element_id: str) -> float:
    field = driver.find_element(By.CSS_SELECTOR, f"#{element_id} input[type=number]")
    return float(field.get_attribute("value"))


def _wait_for_default_steps(driver, shots: int) -> None:
    """The step slider follows T: wait until it shows the tiny model's count for `shots` (2 steps or 2 passes
    over the shots in batches of 2), so that a count set next is not overwritten by that update."""
    if not os.environ.get("METAHEAD_APP_MODEL"):
        expected = max(2, shots)
        what = f"the step slider at {expected} for T = {shots}"
        _wait(driver, lambda d: _number(d, "steps") == expected, 60, what)


def _set_number(driver, element_id: str, value: int) -> None:
    field = driver.find_element(By.CSS_SELECTOR, f"#{element_id} input[type=number]")
    field.clear()
    field.send_keys(str(value), "\t")


VIDEO_STATE = """
const video = document.querySelector(arguments[0] + ' video');
if (!video || !video.src) return null;
return {duration: video.duration, time: video.currentTime, paused: video.paused, ready: video.readyState,
        width: video.videoWidth, height: video.videoHeight, src: video.src};
"""


def _video_plays(driver, element_id: str) -> dict:
    """Wait until the <video> in the element has a duration and its playback time has moved."""

    def state(d) -> dict | None:
        return d.execute_script(VIDEO_STATE, f"#{element_id}")

    loaded = _wait(
        driver, lambda d: (s := state(d)) and s["ready"] >= 1 and s["duration"] > 0 and s, 60,
        f"{element_id}: no playable video",
    )  # fmt: skip
    moved = _wait(driver, lambda d: (s := state(d)) and s["time"] > 0 and s, 60, f"{element_id}: not playing")
    return {**loaded, "played_to": moved["time"]}


def _requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _off_machine(urls: list[str]) -> list[str]:
    return [u for u in urls if urlparse(u).scheme in ("http", "https", "ws", "wss") and
            urlparse(u).hostname not in LOCAL_HOSTS]  # fmt: skip


def test_make_and_animate_in_the_browser(app, browser, screenshots, tmp_path) -> None:
    started = time.monotonic()
    browser.get(app["url"])
    _wait(browser, lambda d: "Model:" in _text(d, "model-status"), 60, "the model line")
    assert "metahead" in browser.title
    _wait_for_default_steps(browser, 8)  # the shots slider's start

    # a bad upload: a text file named .png
    _upload(browser, "photos", [text_file(tmp_path / "notes.png")])
    _wait(browser, lambda d: "notes.png" in _text(d, "make-status"), 60, "the bad upload's message")
    assert "not an image" in _text(browser, "make-status")
    browser.find_element(By.ID, "make").click()  # the button says the same and nothing is made
    _wait(browser, lambda d: "Cannot make the avatar" in _text(d, "make-status"), 60, "the make message")
    browser.save_screenshot(str(screenshots / "app-bad-upload.png"))
    assert not list((app["work"] / "jobs").iterdir())

    # three synthetic photos -> a fine-tuned avatar; the progress is shown while it fine-tunes
    _clear(browser, "photos")
    _upload(browser, "photos", photos(tmp_path / "photos", 3))
    _wait(browser, lambda d: "3 photos ready" in _text(d, "make-status"), 60, "the photos' check")
    _wait_for_default_steps(browser, 3)
    _set_number(browser, "steps", 60)
    browser.find_element(By.ID, "make").click()
    progress_seen = ""
    while "Avatar made" not in (status := _text(browser, "make-status")):
        if "fine-tuning" in status:
            progress_seen = status
        assert time.monotonic() - started < WAIT_SECONDS, "the avatar was not made in time"
        time.sleep(0.1)
    assert "fine-tuning" in progress_seen and "/60" in progress_seen.replace(" ", ""), progress_seen
    assert "60 fine-tuning steps" in _text(browser, "make-status")
    link = browser.find_element(By.CSS_SELECTOR, "#avatar-file a[href]").get_attribute("href")
    with urllib.request.urlopen(link, timeout=30) as response:
        assert urlparse(link).hostname in LOCAL_HOSTS and len(response.read()) > 10_000  # the avatar file
    browser.save_screenshot(str(screenshots / "app-avatar.png"))

    # drive it with a synthetic person, retargeting on
    browser.find_element(By.XPATH, "//*[@id='retarget']//label[normalize-space()='on']").click()
    browser.find_element(By.ID, "animate").click()
    _wait(
        browser, lambda d: "CSIM to the photos" in _text(d, "animate-status"), WAIT_SECONDS, "the animation"
    )
    assert "retargeted onto the avatar's face" in _text(browser, "animate-status")
    result = _video_plays(browser, "result-video")
    side = _video_plays(browser, "side-video")
    assert result["duration"] > 0 and result["played_to"] > 0
    assert side["width"] == 3 * side["height"] == 3 * result["width"]  # driver | landmarks | result
    video_link = browser.find_element(By.CSS_SELECTOR, "#video-file a[href]").get_attribute("href")
    assert video_link.endswith("animation.mp4")
    browser.save_screenshot(str(screenshots / "app-animated.png"))

    assert not _off_machine(_requested_urls(browser))
    assert not [p for p in app["work"].rglob("*") if p.name.endswith((".partial", ".tmp"))]


def test_two_tabs_at_once(app, browser, tmp_path) -> None:
    """A long fine-tuning in one tab does not hold up another tab's avatar (the first is left running:
    the server is stopped at the end)."""
    browser.get(app["url"])
    first = browser.current_window_handle
    _upload(browser, "photos", photos(tmp_path / "first", 2, person=1))
    _wait(browser, lambda d: "2 photos ready" in _text(d, "make-status"), 60)
    _wait_for_default_steps(browser, 2)
    _set_number(browser, "steps", 1000)
    browser.find_element(By.ID, "make").click()
    _wait(browser, lambda d: "fine-tuning" in _text(d, "make-status"), 120, "the first tab's fine-tuning")

    browser.switch_to.new_window("tab")
    try:
        browser.get(app["url"])
        _upload(browser, "photos", photos(tmp_path / "second", 1, person=2))
        _wait(browser, lambda d: "1 photo ready" in _text(d, "make-status"), 60)
        browser.find_element(By.XPATH, "//*[@id='mode']//label[contains(., 'feed-forward')]").click()
        browser.find_element(By.ID, "make").click()
        _wait(browser, lambda d: "Avatar made" in _text(d, "make-status"), 120, "the second tab's avatar")
        assert "feed-forward" in _text(browser, "make-status")
        browser.switch_to.window(first)
        status = _text(browser, "make-status")
        assert "fine-tuning" in status and "Avatar made" not in status, "the second tab waited for the first"
    finally:
        for handle in browser.window_handles:
            if handle != first:
                browser.switch_to.window(handle)
                browser.close()
        browser.switch_to.window(first)
    assert not _off_machine(_requested_urls(browser))


# Records when the page captures a camera frame (Gradio's webcam stream encodes each one with toDataURL)
# and when a new live frame is shown, in the page's own clock.
LIVE_PROBE = """
window.__captured = []; window.__shown = [];
const encode = HTMLCanvasElement.prototype.toDataURL;
HTMLCanvasElement.prototype.toDataURL = function(...args) {
  window.__captured.push(performance.now()); return encode.apply(this, args); };
let last = null;
window.__probe = setInterval(() => {
  const img = document.querySelector('#live-output img.mh-live');
  if (img && img.src !== last) { last = img.src; window.__shown.push([performance.now(), img.src]); }
}, 2);
"""


def _capture_to_display(captured: list[float], shown: list[float]) -> np.ndarray:
    """Estimated camera-capture → display latency (ms) of each shown frame but the first. Gradio keeps only
    the newest frame sent and processes it when the previous one is done: frame k is the newest capture
    after frame k-1's that was waiting when frame k-1 was shown, or, if none was, the first one after."""
    captured = np.asarray(captured)
    used = captured[captured <= shown[0]][-1:]  # the first shown frame's capture, at the latest
    latencies = []
    for before, now in zip(shown[:-1], shown[1:]):
        since = captured[captured > (used[0] if len(used) else -np.inf)]
        waiting, later = since[since <= before], since[(since > before) & (since <= now)]
        used = waiting[-1:] if len(waiting) else later[:1]
        if len(used):
            latencies.append(now - used[0])
    return np.asarray(latencies)


def _avatar_third(data_url: str) -> np.ndarray:
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))
    return image[:, 2 * image.shape[1] // 3 :].astype(np.int16)


def test_live_tab_with_a_fake_camera(app, browser, tmp_path) -> None:
    """Chromium's fake camera plays a synthetic talking person: the Live tab shows avatar frames that
    change with the driver, its figures, and says so when the camera stops (keeping the last frame)."""
    browser.get(app["url"])
    _upload(browser, "photos", photos(tmp_path / "photos", 2))
    _wait(browser, lambda d: "2 photos ready" in _text(d, "make-status"), 60)
    browser.find_element(By.XPATH, "//*[@id='mode']//label[contains(., 'feed-forward')]").click()
    browser.find_element(By.ID, "make").click()
    _wait(browser, lambda d: "Avatar made" in _text(d, "make-status"), WAIT_SECONDS, "the avatar")

    browser.find_element(By.XPATH, "//button[@role='tab'][normalize-space()='Live']").click()
    camera = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#live-camera"))[0]
    browser.execute_script(LIVE_PROBE)
    camera.find_element(By.CSS_SELECTOR, "[title='grant webcam access'] button").click()
    _wait(browser, lambda d: camera.find_elements(By.CSS_SELECTOR, "button[aria-label='capture photo']"), 60)
    camera.find_element(By.CSS_SELECTOR, "button[aria-label='capture photo']").click()  # start streaming
    started = time.monotonic()
    _wait(browser, lambda d: len(d.execute_script("return window.__shown")) >= 40, WAIT_SECONDS,
          "live frames in the page")  # fmt: skip
    browser.find_element(By.ID, "live-neutral").click()
    _wait(browser, lambda d: "Neutral face set" in _text(d, "live-note"), 60, "the neutral face")
    time.sleep(max(2.0, LIVE_SECONDS - (time.monotonic() - started)))
    shown = browser.execute_script("return window.__shown")
    captured = browser.execute_script("return window.__captured")
    status = _text(browser, "live-status")
    assert "frames/s" in status and "retargeted onto the avatar's face" in status, status

    model_size = re.search(r"\d+×\d+", _text(browser, "model-status")).group()
    times = [t for t, _ in shown]
    fps = (len(times) - 1) / ((times[-1] - times[0]) / 1000)
    latency = _capture_to_display(captured, times)
    thirds = [_avatar_third(src) for _, src in shown]
    changes = [float(np.abs(a - b).mean()) for a, b in zip(thirds[:-1], thirds[1:])]
    print(
        f"\nlive in the browser ({model_size} model, 1 thread, load {os.getloadavg()[0]:.1f}): {len(shown)} "
        f"frames shown in {(times[-1] - times[0]) / 1000:.1f} s = {fps:.1f} frames/s of {len(captured)} "
        "captured; "
        f"capture → display latency median {np.median(latency):.0f} ms, 95th percentile "
        f"{np.percentile(latency, 95):.0f} ms (estimated), medians by thirds of the run "
        f"{[round(float(np.median(part))) for part in np.array_split(latency, 3)]} ms; the server: "
        f"{status.splitlines()[0]}"
    )
    # (the frame rate is printed, not asserted: it depends on the machine's load; 40 frames were waited for)
    # the avatar moves with the driver: most consecutive frames differ
    assert sum(change > 0.5 for change in changes) >= len(changes) // 2, changes

    # the camera stops: the page says so and keeps the last frame
    camera.find_element(By.XPATH, ".//button[contains(., 'Stop')]").click()
    last = browser.execute_script("return window.__shown.length")
    _wait(browser, lambda d: "no camera frame" in _text(d, "live-status"), 30, "the stopped-camera notice")
    assert browser.execute_script("return window.__shown.length") <= last + 1  # at most one in flight
    assert browser.find_element(By.CSS_SELECTOR, "#live-output img.mh-live").get_attribute("src")
    assert not _off_machine(_requested_urls(browser))
