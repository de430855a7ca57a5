"""IP cameras against real servers on loopback: an HTTP MJPEG camera (http.server, threads) and
an RTSP camera (Debian's GStreamer rtsp-server). Every picture carries its frame counter and the
CLOCK_MONOTONIC millisecond it was made, so the tests check what the source delivered and how it
stamped it, not only that something arrived."""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from capture.base import SourceLost, SourceUnavailable
from capture.credentials import CredentialsError, load_credentials, redact, strip_userinfo, with_userinfo
from capture.ipcam import ArrivalMapper, IPCameraSource
from device_harness import MjpegCamera, RtspCamera, decode_timecode, require

PASSWORD = "pa:ss/w@rd%1"   # characters that need URL-encoding, so every spelling is checked


def spec_for(url: str, credentials: str | None = None, width: int = 320, height: int = 240, fps: float = 10.0):
    return SimpleNamespace(name="candidate", source=url, width=width, height=height, fps=fps,
                           credentials=credentials, pixel_format=None, draw_mouse=False)


def profile_at(path: Path):
    return SimpleNamespace(base_dir=path, path=path / "profile.toml")


def assert_no_secret(*texts: str) -> None:
    for t in texts:
        assert PASSWORD not in t and "pa%3Ass" not in t and "pa:ss" not in t, t


def read_coded(src: IPCameraSource, n: int) -> list[tuple[int, int, int]]:
    """n frames as (counter, made_ns, capture_ns); fails on an unreadable picture."""
    out = []
    for _ in range(n):
        frame = src.read()
        assert frame.image.shape == (src.height, src.width, 3) and frame.image.dtype.name == "uint8"
        code = decode_timecode(frame.image)
        assert code is not None, "picture content damaged"
        out.append((code[0], code[1] * 1_000_000, frame.capture_ns))
    return out


def lost_within(src: IPCameraSource, seconds: float) -> tuple[float, str]:
    t0 = time.monotonic()
    with pytest.raises(SourceLost) as err:
        while time.monotonic() - t0 < seconds + 5:
            src.read()
    return time.monotonic() - t0, str(err.value)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    p = tmp_path / "cam.secret"
    p.write_text(f"admin:{PASSWORD}\n")
    p.chmod(0o600)
    return p


# ---------------------------------------------------------------------------------------------
def test_credentials_sources_and_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMREC_TEST_CAM", f"admin:{PASSWORD}")
    c = load_credentials("ENV:EXAMREC_TEST_CAM", tmp_path, "camera x")
    assert (c.user, c.password) == ("admin", PASSWORD)
    assert PASSWORD not in repr(c)
    with pytest.raises(CredentialsError, match="EXAMREC_MISSING is not set"):
        load_credentials("ENV:EXAMREC_MISSING", tmp_path, "camera x")
    f = tmp_path / "rel.secret"
    f.write_text(f"\nadmin:{PASSWORD}\n")
    f.chmod(0o600)
    assert load_credentials("rel.secret", tmp_path, "camera x").password == PASSWORD  # relative to the profile
    f.chmod(0o640)
    with pytest.raises(CredentialsError) as err:
        load_credentials(str(f), tmp_path, "camera x")
    assert "readable by group or others (mode 0640)" in str(err.value) and "chmod 600" in str(err.value)
    f.chmod(0o604)
    with pytest.raises(CredentialsError, match="mode 0604"):
        load_credentials(str(f), tmp_path, "camera x")
    f.write_text("no-colon-here")
    f.chmod(0o600)
    with pytest.raises(CredentialsError, match="user:password"):
        load_credentials(str(f), tmp_path, "camera x")
    # URLs: user-info is taken out, put back percent-encoded, and redacted from any text
    url, inline = strip_userinfo("rtsp://admin:p%40ss@10.0.0.5:554/stream1")
    assert url == "rtsp://10.0.0.5:554/stream1" and inline.password == "p@ss"
    full = with_userinfo(url, c)
    assert full.startswith("rtsp://admin:pa%3Ass%2Fw%40rd%251@10.0.0.5")
    assert_no_secret(redact(f"Server returned 401 for '{full}'", c.secrets()))
    assert redact("see http://u:p@h/x and rtsp://h/y") == "see http://***@h/x and rtsp://h/y"


def test_arrival_mapper_keeps_camera_spacing_never_after_arrival() -> None:
    rng = random.Random(7)
    m = ArrivalMapper(window_ns=5_000_000_000)
    offset = 123_456_789_000
    stamps, seen = [], []
    for i in range(200):
        pts = i * 100_000_000
        delay = rng.randint(2_000_000, 60_000_000)          # network + decode, 2..60 ms
        arrival = pts + offset + delay
        seen.append((arrival, delay))
        best = min(d for a, d in seen if a >= arrival - 5_000_000_000)
        s = m.map(pts, arrival)
        assert s <= arrival
        assert 0 <= s - (pts + offset) <= best             # never worse than the best delay in the window
        stamps.append(s)
    # after the first frames the spacing is the camera's own 100 ms, not the arrival jitter
    gaps = [b - a for a, b in zip(stamps[20:], stamps[21:])]
    assert max(abs(g - 100_000_000) for g in gaps) < 3_000_000
    # the camera restarts its clock: the mapper starts over instead of stamping in the past
    s = m.map(0, 10**13)
    assert s == 10**13
    assert m.map(None, 10**13 + 5) == 10**13 + 5
    assert m.map(None, 1) == 10**13 + 6                    # strictly increasing, whatever arrives


# ---------------------------------------------------------------------------------------------
def test_mjpeg_follows_the_camera_with_file_credentials(tmp_path: Path, secret_file: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cam = MjpegCamera(320, 240, fps=10, user="admin", password=PASSWORD).start()
    try:
        # the profile asks 160x120: the source scales; the secret file is named relative to the profile
        src = IPCameraSource(spec_for(cam.url, credentials=secret_file.name, width=160, height=120),
                             profile_at(tmp_path))
        src.open()
        frames = read_coded(src, 20)
        counters = [c for c, _, _ in frames]
        assert counters == sorted(counters) and len(set(counters)) == 20
        assert counters[-1] - counters[0] <= 22              # at most a couple dropped
        for _, made, stamp in frames:
            assert 0 <= stamp - made <= 100_000_000, (stamp - made) / 1e6   # made (ms floor) <= stamp <= +100 ms
        # MJPEG carries no frame times: stamps are arrivals, so a busy machine may bunch two of them;
        # they still rise and keep the camera's 10 fps on the whole.
        stamps = [f[2] for f in frames]
        assert stamps == sorted(stamps)
        spacing = sorted((b - a) / 1e6 for a, b in zip(stamps[5:], stamps[6:]))
        assert 70 < spacing[len(spacing) // 2] < 130, spacing
        src.close()
        src.close()  # idempotent
        # the wrong password: refused, plainly, without the secret
        bad = tmp_path / "bad.secret"
        bad.write_text(f"admin:{PASSWORD}x")
        bad.chmod(0o600)
        with pytest.raises(SourceUnavailable) as err:
            IPCameraSource(spec_for(cam.url, credentials=str(bad)), profile_at(tmp_path)).open()
        assert "refused the user name or password" in str(err.value) and "candidate" in str(err.value)
        assert_no_secret(str(err.value))
        # a group-readable secret file is refused before any connection
        secret_file.chmod(0o644)
        with pytest.raises(SourceUnavailable, match="chmod 600"):
            IPCameraSource(spec_for(cam.url, credentials=str(secret_file)), profile_at(tmp_path)).open()
    finally:
        cam.stop()
    assert_no_secret(caplog.text)


def test_mjpeg_without_content_length() -> None:
    cam = MjpegCamera(320, 240, fps=15, content_length=False).start()
    try:
        src = IPCameraSource(spec_for(cam.url, fps=15), profile_at(Path(".")))
        src.open()
        frames = read_coded(src, 10)
        assert [c for c, _, _ in frames] == sorted(c for c, _, _ in frames)
        src.close()
    finally:
        cam.stop()


def test_mjpeg_camera_off_stall_and_back(tmp_path: Path) -> None:
    cam = MjpegCamera(320, 240, fps=10).start()
    port = cam.port
    src = IPCameraSource(spec_for(cam.url), profile_at(tmp_path), stall_timeout_s=1.0)
    try:
        src.open()
        read_coded(src, 3)
        cam.stop()                                            # switched off: connection closed
        took, msg = lost_within(src, 2.0)
        assert took < 2.0 and "connection lost" in msg and "candidate" in msg
        src.close()
        with pytest.raises(SourceUnavailable, match="connection refused"):
            src.open()
        cam = MjpegCamera(320, 240, fps=10, port=port).start()   # back on the same address
        src.open()
        read_coded(src, 3)
        cam.stall()                                           # accepts, keeps the connection, sends nothing
        took, msg = lost_within(src, 1.0)
        assert 0.9 < took < 2.0 and "stalled" in msg, (took, msg)
        src.close()
    finally:
        cam.stop()
        src.close()


# ---------------------------------------------------------------------------------------------
def test_rtsp_follows_timecode_loses_and_recovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    require("/usr/bin/python3")
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("EXAMREC_TEST_RTSP", f"admin:{PASSWORD}")
    cam = RtspCamera(320, 240, fps=10, user="admin", password=PASSWORD).start()
    src = IPCameraSource(spec_for(cam.url, credentials="ENV:EXAMREC_TEST_RTSP"), profile_at(tmp_path),
                         stall_timeout_s=1.5)
    try:
        src.open()
        frames = read_coded(src, 25)
        counters = [c for c, _, _ in frames]
        assert counters == sorted(counters) and len(set(counters)) == len(counters)
        # stamps: the camera's time mapped onto CLOCK_MONOTONIC, between making and now
        for _, made, stamp in frames:
            assert -5_000_000 <= stamp - made <= 150_000_000, (stamp - made) / 1e6
        # spacing follows the camera's frame times (pts), not the arrival jitter
        # (a late wake-up of the reader on a loaded machine may still show in one of them)
        deviation = sorted(abs((b[2] - a[2]) - (b[1] - a[1])) / 1e6 for a, b in zip(frames[5:], frames[6:]))
        assert deviation[len(deviation) // 2] < 5 and deviation[-2] < 12, deviation

        cam.kill()                                            # the camera dies: SourceLost within 2 s
        took, msg = lost_within(src, 2.0)
        assert took < 2.0, took
        src.close()
        with pytest.raises(SourceUnavailable) as err:
            src.open()
        assert "connection refused" in str(err.value) and cam.url in str(err.value)

        cam.start()                                           # it comes back on the same port
        deadline = time.monotonic() + 10
        while True:                                           # what the recorder's worker does, with backoff
            try:
                src.open()
                break
            except SourceUnavailable:
                assert time.monotonic() < deadline
                time.sleep(0.3)
        read_coded(src, 3)

        cam.pause()                                           # stalls: connection open, nothing sent
        took, msg = lost_within(src, 1.5)
        assert 1.3 < took < 3.0 and ("stalled" in msg or "connection lost" in msg), (took, msg)
        src.close()
        # a wrong password is reported as such
        monkeypatch.setenv("EXAMREC_TEST_RTSP", "admin:wrong")
        cam.kill()
        cam.start()
        with pytest.raises(SourceUnavailable) as err:
            src.open()
        assert "refused the user name or password" in str(err.value), str(err.value)
        assert_no_secret(msg, str(err.value))
    finally:
        src.close()
        cam.kill()
    assert_no_secret(caplog.text)
