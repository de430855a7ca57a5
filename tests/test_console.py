"""The examiner's console in a real headless Chromium (Debian's chromium + chromedriver through
selenium), against a real `examrec serve` recording a pattern camera with sound and a real RTSP
camera (GStreamer rtsp-server): start an exam with Cyrillic details, pause with a picked reason,
resume during the countdown, take a photo, a camera killed mid-exam turns its tile red and
sounds the alarm, the fault is acknowledged, stop says saved; the session holds exactly that.
Also: the console's PIN and cross-site refusal, and a hardware button on a fake input device."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ROOT, run_examrec
from device_harness import RtspCamera, require

ARTIFACTS = ROOT / "test-artifacts"
CANDIDATE = "Шевченко Тарас Григорович"
CANDIDATE_ID = "АВ 123456"
EXAMINER = "Ольга Коваль-Їжакевич"
PLATE = "КА 0001 ХО"


def profile_text(tmp: Path, rtsp_url: str | None) -> str:
    text = f'''
name = "console"
kind = "replay"
control_socket = "{tmp}/ctl.sock"
out = "{tmp}/out"
gps = "replay:{ROOT}/bench/fixtures/exam-drive.nmea"
pedals = "replay:{ROOT}/bench/fixtures/exam.pedal"
[checks]
sample_s = 1.0
[exam]
pause_reasons = ["кандидат попросив", "перекрита дорога", "несправність авто"]
plate = "{PLATE}"
centre = "ТСЦ 8041"
exam = "practical"
[console]
language = "uk"
[encoder]
crf = 30
[[streams]]
name = "cabin"
source = "pattern:"
width = 320
height = 240
fps = 15
audio = "wav:{ROOT}/bench/fixtures/cabin.wav"
'''
    if rtsp_url:
        text += f'''
[[streams]]
name = "road"
source = "{rtsp_url}"
width = 320
height = 240
fps = 10
stall_timeout_s = 1.0
open_timeout_s = 5
'''
    return text


class Served:
    """`examrec serve` in a subprocess; ``url`` is what it printed first."""

    def __init__(self, profile: Path, *args: str, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "sessions.cli", "serve", "--profile", str(profile),
                                      "--port", "0", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self.first_line = self.proc.stdout.readline().strip()
        self.url = self.first_line.removeprefix("console: ")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        _, err = self.proc.communicate(timeout=60)
        return err


def chrome(tmp: Path) -> webdriver.Chrome:
    require("/usr/bin/chromium", "/usr/bin/chromedriver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1280,800",
                "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={tmp / 'chrome-profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    # The page as a 10" 1280x800 touch screen shows it.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    return driver


def shot(driver: webdriver.Chrome, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"console-{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait_for(driver: webdriver.Chrome, predicate, timeout: float = 30, what: str = ""):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: predicate(d), message=what)


def state_of(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.ID, "state").get_attribute("class")


@pytest.fixture
def camera():
    require("/usr/bin/python3")
    cam = RtspCamera(320, 240, fps=10).start()
    yield cam
    cam.kill()


def test_an_exam_from_the_console(tmp_path, camera):
    profile = tmp_path / "console.toml"
    profile.write_text(profile_text(tmp_path, camera.url), encoding="utf-8")
    # --force: a pre-exam check failing on a loaded test machine (frame rate) must not stop the test
    served = Served(profile, "--force")
    driver = chrome(tmp_path)
    try:
        assert served.url.startswith("http://127.0.0.1:"), served.first_line
        driver.get(served.url)
        wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".tile")) == 2, what="two camera tiles")
        assert "idle" in state_of(driver)
        assert driver.find_element(By.ID, "state").text == "ОЧІКУВАННЯ"       # Ukrainian by the profile
        # idle, the sensors are open already: the GPS speed shows before any exam
        wait_for(driver, lambda d: "km/h" in d.find_element(By.ID, "gps").text, 20, "GPS while idle")
        shot(driver, "idle")

        # Start: a form with Cyrillic details; plate and centre come prefilled from the profile.
        driver.find_element(By.ID, "btn-start").click()
        form = driver.find_element(By.ID, "form-start")
        assert form.find_element(By.NAME, "plate").get_attribute("value") == PLATE
        form.find_element(By.NAME, "candidate").send_keys(CANDIDATE)
        form.find_element(By.NAME, "candidate_id").send_keys(CANDIDATE_ID)
        form.find_element(By.NAME, "examiner").send_keys(EXAMINER)
        shot(driver, "start-form")
        driver.find_element(By.ID, "start-go").click()
        wait_for(driver, lambda d: "recording" in state_of(d) or d.find_element(By.ID, "start-error").text
                 not in ("", "…"), 60, "recording")
        assert "recording" in state_of(driver), driver.find_element(By.ID, "start-error").text
        # live thumbnails about twice a second, on both tiles
        wait_for(driver, lambda d: all(int(img.get_attribute("data-loaded") or 0) >= 3
                                       for img in d.find_elements(By.CSS_SELECTOR, ".tile img")), 20, "thumbnails")
        assert CANDIDATE in driver.find_element(By.ID, "candidate").text
        # the sensors: GPS speed (a real gpsd fed by gpsfake), sound level, the pedal lamps
        wait_for(driver, lambda d: "km/h" in d.find_element(By.ID, "gps").text, 10, "GPS speed")
        wait_for(driver, lambda d: d.find_element(By.ID, "sound-db").text.endswith("dB"), 5, "sound level")
        assert driver.find_element(By.ID, "brake").text == "ГАЛЬМО"
        assert {t.get_attribute("class") for t in driver.find_elements(By.CSS_SELECTOR, ".tile")} == {"tile LIVE"}

        # Pause with a reason picked from the profile's list; resume during the 3 s countdown.
        driver.find_element(By.ID, "btn-pause").click()
        reasons = driver.find_elements(By.CSS_SELECTOR, "#reasons button")
        assert [r.text for r in reasons] == ["кандидат попросив", "перекрита дорога", "несправність авто"]
        assert driver.find_element(By.CSS_SELECTOR, "#form-pause input[name=plate]").get_attribute("value") == PLATE
        reasons[1].click()
        driver.find_element(By.ID, "pause-go").click()
        wait_for(driver, lambda d: d.find_element(By.ID, "countdown").is_displayed(), 5, "countdown")
        shot(driver, "pause-countdown")
        driver.find_element(By.ID, "btn-cancel-pause").click()
        wait_for(driver, lambda d: not d.find_element(By.ID, "countdown").is_displayed(), 5, "countdown gone")
        wait_for(driver, lambda d: "recording" in state_of(d), 10, "recording again")

        driver.find_element(By.ID, "btn-photo").click()
        wait_for(driver, lambda d: "photos/" in d.find_element(By.ID, "toast").text, 5, "photo toast")
        wait_for(driver, lambda d: not d.find_element(By.ID, "toast").is_displayed(), 5, "toast gone")

        # The road camera dies: its tile turns red within 2 s, the alarm sounds, the fault is listed.
        alarms = int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-alarms") or 0)
        camera.kill()
        killed = time.monotonic()
        wait_for(driver, lambda d: "fault" in d.find_element(By.ID, "tile-road").get_attribute("class"), 10, "red tile")
        took = time.monotonic() - killed
        assert took <= 2.0, took
        assert "fault" not in driver.find_element(By.ID, "tile-cabin").get_attribute("class")
        wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#tile-road .st").text == "ВТРАЧЕНО", 3, "LOST")
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#faults li"), 5, "fault listed")
        assert int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-alarms") or 0) > alarms
        shot(driver, "camera-lost")
        fault_text = driver.find_element(By.CSS_SELECTOR, "#faults li").text
        assert "road" in fault_text
        driver.find_element(By.CSS_SELECTOR, "#faults li button.ack").click()
        wait_for(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "#faults li"), 5, "acknowledged")
        assert "fault" in driver.find_element(By.ID, "tile-road").get_attribute("class")  # still lost: still red
        driver.find_element(By.ID, "lang").click()                                     # the language setting
        assert driver.find_element(By.ID, "btn-stop").text == "Stop"
        assert driver.find_element(By.CSS_SELECTOR, "#tile-road .st").text == "LOST"

        # Stop: confirm, then "saved" with the session id, duration and the verify result.
        driver.find_element(By.ID, "btn-stop").click()
        driver.find_element(By.ID, "stop-go").click()
        wait_for(driver, lambda d: d.find_element(By.ID, "dlg-saved").is_displayed(), 60, "saved dialog")
        session_id = driver.find_element(By.ID, "saved-session").text
        assert driver.find_element(By.ID, "saved-verify").text == "ok"
        assert driver.find_element(By.ID, "saved-duration").text.startswith("00:00:")
        shot(driver, "saved")
        wait_for(driver, lambda d: "idle" in state_of(d), 10, "idle again")
    finally:
        driver.quit()
        err = served.stop()
    assert served.proc.returncode == 0, err[-3000:]

    (session,) = [p.parent for p in (tmp_path / "out").glob("*/*/manifest.json")]
    assert session.name == session_id
    m = json.loads((session / "manifest.json").read_text())
    assert m["details"] == {"candidate": CANDIDATE, "candidate_id": CANDIDATE_ID, "examiner": EXAMINER,
                            "plate": PLATE, "centre": "ТСЦ 8041", "exam": "practical"}
    events = [json.loads(x) for x in (session / "events.jsonl").read_text().splitlines()]
    by_type = [e["type"] for e in events]
    controls = [e for e in events if e["type"] in ("pause", "resume", "photo", "fault_acknowledged", "stop")]
    assert [e["type"] for e in controls] == ["pause", "resume", "photo", "fault_acknowledged", "stop"], by_type
    pause, resume, photo, ack, stop = controls
    assert pause["reason"] == "перекрита дорога" and pause["plate"] == PLATE
    assert resume["cancelled_pause"] is True and resume["stage"] == 1
    assert photo["stream"] == "cabin" and (session / photo["file"]).is_file()
    assert ack["stream"] == "road" and ack["by"] == "examiner"
    road_faults = [e for e in events if e["type"] == "fault" and e.get("stream") == "road"]
    assert road_faults and road_faults[0]["pts_s"] < ack["pts_s"]
    assert any(e["type"] == "notice" and e["shown_on"] == "examiner's console" for e in events)
    assert [s["stage"] for s in m["stages"]] == [1]
    road = next(s for s in m["streams"] if s["name"] == "road")
    assert road["gaps"], "the lost camera is a gap in the manifest"
    v = run_examrec("verify", session)
    assert v.returncode == 0, v.stdout + v.stderr


def _http(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json",
                                                                          **(headers or {})})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_console_beyond_localhost_needs_a_token_and_refuses_cross_site_requests(tmp_path):
    profile = tmp_path / "console.toml"
    profile.write_text(profile_text(tmp_path, None), encoding="utf-8")
    refused = run_examrec("serve", "--profile", profile, "--bind", "0.0.0.0", "--port", "0",
                          env={"EXAMREC_CONSOLE_TOKEN": ""})
    assert refused.returncode == 2 and "PIN or token" in refused.stderr
    served = Served(profile, "--bind", "0.0.0.0", env={"EXAMREC_CONSOLE_TOKEN": "4711"})
    try:
        port = served.url.rsplit(":", 1)[1].strip("/")
        base = f"http://127.0.0.1:{port}"
        assert _http(base + "/")[0] == 303                                   # to the PIN form
        assert _http(base + "/api/status")[0] == 401
        auth = {"Authorization": "Bearer 4711"}
        code, body = _http(base + "/api/status", headers=auth)
        assert code == 200 and json.loads(body)["state"] == "idle"
        st = run_examrec("status", "--socket", tmp_path / "ctl.sock", "--json")
        assert json.loads(st.stdout)["console_url"] == served.url
        start = {"details": {"candidate": "Іван"}}
        assert _http(base + "/api/start", "POST", start, auth)[0] == 403      # no console header: a form post
        evil = {**auth, "X-Examrec-Console": "1", "Origin": "http://evil.example"}
        assert _http(base + "/api/start", "POST", start, evil)[0] == 403      # another site's page
        assert _http(base + "/api/start", "POST", start, {"X-Examrec-Console": "1"})[0] == 401  # no token
        code, body = _http(base + "/api/stop", "POST", {}, {**auth, "X-Examrec-Console": "1"})
        assert code == 409 and "no exam is running" in body
        assert json.loads(_http(base + "/api/status", headers=auth)[1])["state"] == "idle"
    finally:
        served.stop()
    assert not list((tmp_path / "out").glob("*/*/manifest.json"))


def press(fifo_fd: int, code: int = 28) -> None:
    """One key press and release in `struct input_event` form, as the kernel delivers them."""
    now = time.time()
    sec, usec = int(now), int(now % 1 * 1e6)
    fmt = "llHHi"
    os.write(fifo_fd, struct.pack(fmt, sec, usec, 4, 4, code) +          # EV_MSC scan code: ignored
             struct.pack(fmt, sec, usec, 1, code, 1) +                   # EV_KEY press
             struct.pack(fmt, sec, usec, 0, 0, 0) +                      # EV_SYN
             struct.pack(fmt, sec, usec, 1, code, 0))                    # release: ignored


def test_a_hardware_button_pauses_and_resumes(tmp_path):
    profile = tmp_path / "console.toml"
    fifo = tmp_path / "event-kbd"
    os.mkfifo(fifo)
    profile.write_text(profile_text(tmp_path, None) + f'\n[button]\ndevice = "{fifo}"\nkey_code = 28\n'
                       'reason = "кнопка"\n', encoding="utf-8")
    served = Served(profile, "--no-console")
    sock = tmp_path / "ctl.sock"
    fd = os.open(fifo, os.O_WRONLY)  # (the profile's idle device checks run every 10 min: not in this test)
    try:
        start = run_examrec("start", "--socket", sock, "--candidate", "Іванна Петренко", timeout=120)
        assert start.returncode == 0, start.stderr
        press(fd, code=30)                         # another key: not the mapped one
        time.sleep(0.5)
        assert json.loads(run_examrec("status", "--socket", sock, "--json").stdout)["state"] == "recording"
        press(fd)
        time.sleep(4.0)                            # past the 3 s banner
        st = json.loads(run_examrec("status", "--socket", sock, "--json").stdout)
        assert st["state"] == "paused" and {s["state"] for s in st["streams"]} == {"PAUSED"}
        press(fd)
        time.sleep(1.0)
        st = json.loads(run_examrec("status", "--socket", sock, "--json").stdout)
        assert st["state"] == "recording" and st["stage"] == 2
        stop = run_examrec("stop", "--socket", sock)
        assert stop.returncode == 0 and stop.stdout.startswith("saved: "), stop.stderr
    finally:
        os.close(fd)
        served.stop()
    (session,) = [p.parent for p in (tmp_path / "out").glob("*/*/manifest.json")]
    events = [json.loads(x) for x in (session / "events.jsonl").read_text().splitlines()]
    pauses = [e for e in events if e["type"] in ("pause", "resume")]
    assert [(e["type"], e.get("reason")) for e in pauses] == [("pause", "кнопка"), ("resume", None)]
    assert pauses[0]["plate"] == PLATE


def test_idle_device_checks_measure_the_cameras_and_list_a_missing_one(tmp_path, camera):
    """While idle the service runs the device checks every [checks] idle_every_s: each camera's
    frame rate through the encoder shows, a camera that is gone is listed as a fault (its tile
    red) before any exam, and cleared when a later run finds it back."""
    profile = tmp_path / "console.toml"
    profile.write_text(profile_text(tmp_path, camera.url).replace("sample_s = 1.0", "sample_s = 1.0\nidle_every_s = 2"),
                       encoding="utf-8")
    served = Served(profile, "--no-console")
    sock = tmp_path / "ctl.sock"

    def status() -> dict:
        return json.loads(run_examrec("status", "--socket", sock, "--json").stdout)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (status().get("device_checks")):
            time.sleep(0.5)
        st = status()
        assert st["state"] == "idle" and st["device_checks"], st
        fps = {s["stream"]: s["fps"] for s in st["streams"]}
        assert fps["cabin"] > 5 and fps["road"] > 3, fps                    # measured through the encoder
        assert not [f for f in st["faults"] if f["stream"] == "road"]
        camera.kill()
        while time.monotonic() < deadline and not [f for f in status()["faults"] if f["stream"] == "road"]:
            time.sleep(0.5)
        st = status()
        (fault,) = [f for f in st["faults"] if f["stream"] == "road"]
        assert "camera road" in fault["device"] and fault["session_id"] == ""
        assert {s["stream"]: s["state"] for s in st["streams"]}["road"] == "LOST"
        camera.start()                                                       # plugged back in
        while time.monotonic() < deadline and {s["stream"]: s["state"] for s in status()["streams"]}["road"] != "IDLE":
            time.sleep(0.5)
        st = status()
        assert {s["stream"]: s["state"] for s in st["streams"]}["road"] == "IDLE", (st["streams"], st["faults"])
    finally:
        served.stop()
    assert not list((tmp_path / "out").glob("*/*/manifest.json"))          # nothing recorded while idle


def _rtsp_clients(port: int) -> set[int]:
    """Local ports of the established TCP connections to 127.0.0.1:``port`` (the RTSP sessions
    open on the test camera): a camera reopened is a new connection."""
    clients = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if remote == f"0100007F:{port:04X}" and state == "01":
            clients.add(int(local.split(":")[1], 16))
    return clients


def test_an_idle_service_shows_every_camera_live_and_records_with_the_open_cameras(tmp_path, camera):
    """Between exams the service keeps its stream processes open (warm): the console shows a live
    thumbnail of every camera before any exam, and Start records every stream with those very
    processes and camera connections (nothing reopened), the pre-exam checks being the idle
    device check's; after the exam a new warm set is open again."""
    profile = tmp_path / "console.toml"
    text = "\n".join(line for line in profile_text(tmp_path, camera.url).splitlines()
                     if not line.startswith(("gps =", "pedals =")))  # cameras only: what is measured here
    profile.write_text(text, encoding="utf-8")
    served = Served(profile, "--force")
    sock = tmp_path / "ctl.sock"
    driver = chrome(tmp_path)

    def status() -> dict:
        return json.loads(run_examrec("status", "--socket", sock, "--json").stdout)
    try:
        driver.get(served.url)
        wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".tile img")) == 2, what="two camera tiles")
        # live pictures before any exam: each tile reloaded its thumbnail again and again
        wait_for(driver, lambda d: all(int(img.get_attribute("data-loaded") or 0) >= 4
                                       for img in d.find_elements(By.CSS_SELECTOR, ".tile img")), 60,
                 "live thumbnails while idle")
        assert "idle" in state_of(driver)
        sizes = driver.execute_script("return [...document.querySelectorAll('.tile img')]"
                                      ".map(i => [i.naturalWidth, i.naturalHeight])")
        assert sizes == [[320, 240], [320, 240]], sizes                      # real decoded pictures
        shot(driver, "idle-live")

        deadline = time.monotonic() + 60
        st = status()
        while time.monotonic() < deadline and not (all(s["warm"] for s in st["streams"]) and st["device_checks"]):
            time.sleep(0.2)
            st = status()
        assert all(s["warm"] for s in st["streams"]) and st["device_checks"], st
        assert all(s["fps"] > 0 for s in st["streams"]), st["streams"]          # the preview's measured rate
        warm_pids = {s["stream"]: s["pid"] for s in st["streams"]}
        connections = _rtsp_clients(camera.port)
        assert len(connections) == 1, connections                            # the road camera, open while idle

        start = run_examrec("start", "--socket", sock, "--candidate", "Леся Українка", "--json", timeout=120)
        assert start.returncode == 0, start.stderr
        session = Path(json.loads(start.stdout)["session"])
        names = ["cabin", "road"]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(
                (session / n / "fragments.jsonl").exists() and '"kind":"fragment"' in (session / n / "fragments.jsonl").read_text()
                for n in names):
            time.sleep(0.02)
        for n in names:                                                      # every stream records
            assert '"kind":"fragment"' in (session / n / "fragments.jsonl").read_text(), n
        events = [json.loads(x) for x in (session / "events.jsonl").read_text().splitlines()]
        started = next(e for e in events if e["type"] == "start")
        assert {n: started["pids"][n] for n in names} == warm_pids           # the warm processes record
        assert _rtsp_clients(camera.port) == connections                     # on the same camera connection
        assert not [e for e in events if e["type"] in ("fault", "restarted")], events
        m = json.loads((session / "manifest.json").read_text())
        runs = {c["check"]: c["run"] for c in m["checks"]}
        assert runs["camera cabin"] == runs["camera road"] == runs["microphone"] == "idle", m["checks"]
        assert runs["output folder"] == "start"
        wait_for(driver, lambda d: "recording" in state_of(d), 10, "recording")
        stop = run_examrec("stop", "--socket", sock)
        assert stop.returncode == 0 and "verify: ok" in stop.stdout, stop.stdout + stop.stderr

        # After the exam: a new warm set, so the next Start finds the cameras open again.
        deadline = time.monotonic() + 60
        st = status()
        while time.monotonic() < deadline and not (st["state"] == "idle" and all(s["warm"] for s in st["streams"])):
            time.sleep(0.2)
            st = status()
        assert st["state"] == "idle" and all(s["warm"] for s in st["streams"]), st["streams"]
        assert not set(warm_pids.values()) & {s["pid"] for s in st["streams"]}
        assert len(_rtsp_clients(camera.port)) == 1
    finally:
        driver.quit()
        err = served.stop()
    assert served.proc.returncode == 0, err[-3000:]
    assert not _rtsp_clients(camera.port)                                    # serve closed the camera on exit
    v = run_examrec("verify", session)
    assert v.returncode == 0, v.stdout + v.stderr
