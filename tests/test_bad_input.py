"""Careless and hostile input: every case gets one line naming the problem and the exit code
scripts rely on (2 usage, 3 refused, 4 disk full), writes nothing and leaves nothing running."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archive_harness import PASSWORDS, ArchiveUnderTest, file_archive  # noqa: F401 - fixture
from conftest import EXAMREC, ROOT, replay_variant, run_examrec
from core.profile import MAX_STREAMS, ProfileError, load_profile
from sessions.archive.catalog import Catalog
from sessions.recorder.control import ControlServer, request


def one_line_error(r: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """Assert the exit code and that stderr is exactly one line naming the problem (no traceback)."""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# --- profiles ---------------------------------------------------------------------------------

def test_a_profile_nested_100000_deep_is_a_profile_error(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    for cmd in ("record", "check"):
        r = run_examrec(cmd, "--profile", deep, "--out", tmp_path / "out", timeout=60)
        one_line_error(r, 2, "deep.toml", "nested too deeply")
    assert not (tmp_path / "out").exists()


def test_a_profile_with_302_streams_is_refused_on_load_and_16_is_the_limit(tmp_path):
    def streams(n: int) -> str:
        return "".join(f'\n[[streams]]\nname = "cam{i}"\nsource = "pattern:"\nwidth = 64\nheight = 48\nfps = 5\n'
                       for i in range(n))
    head = 'name = "many"\nkind = "replay"\n'
    many = tmp_path / "many.toml"
    many.write_text(head + streams(302))
    started = time.monotonic()
    r = run_examrec("check", "--profile", many, timeout=60)
    one_line_error(r, 2, "302 streams", f"at most {MAX_STREAMS}")
    assert time.monotonic() - started < 30  # refused on load, not after opening 302 sources
    limit = tmp_path / "limit.toml"
    limit.write_text(head + streams(MAX_STREAMS))
    assert len(load_profile(limit).streams) == MAX_STREAMS
    limit.write_text(head + streams(MAX_STREAMS + 1))
    with pytest.raises(ProfileError, match="at most"):
        load_profile(limit)


def test_profile_text_and_size_limits(tmp_path):
    p = replay_variant(tmp_path, replace={'description = "Vehicle-like': f'description = "{"x" * 4950}'})
    with pytest.raises(ProfileError, match="description: [0-9]+ characters; at most 1000"):
        load_profile(p)
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * 400_000 + "\n")
    with pytest.raises(ProfileError, match="at most 256 KiB"):
        load_profile(big)


# --- record: details, duration, output ---------------------------------------------------------

@pytest.mark.parametrize("content, words", [
    ('{"candidate": "\\ud800"}', ("candidate", "not valid Unicode")),
    ('{"candidate": "A", "candidate": "B"}', ("'candidate' appears twice",)),
    (json.dumps({"candidate": "x" * 10_000_000}), ("larger than 64 KiB",)),
    (json.dumps({"candidate": "x" * 5000}), ("candidate: 5000 characters",)),
    ('{"candidate": "line\\nbreak"}', ("control characters",)),
    ("[" * 30_000 + "]" * 30_000, ("not a readable JSON file",)),
], ids=["lone-surrogate", "duplicate-key", "10MB", "long-name", "newline", "nested"])
def test_bad_details_are_refused_before_anything_is_written(tmp_path, content, words):
    details = tmp_path / "details.json"
    details.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    r = run_examrec("record", "--details", details, "--out", out, "--duration", "5", timeout=60)
    one_line_error(r, 2, *words)
    assert not out.exists()


def test_a_command_line_detail_that_is_not_utf8_is_refused(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([*EXAMREC, "record", "--candidate", os.fsdecode(b"Bad \xff name"), "--out", str(out),
                        "--duration", "5"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    one_line_error(r, 2, "candidate", "not valid Unicode")
    assert not out.exists()


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "-inf", "1e9", "ten"])
def test_bad_durations_are_usage_errors(tmp_path, value):
    out = tmp_path / "out"
    r = run_examrec("record", f"--duration={value}", "--out", out, timeout=60)
    one_line_error(r, 2, "--duration")
    assert not out.exists()


def test_an_output_root_that_cannot_hold_sessions_is_refused(tmp_path):
    r = run_examrec("record", "--out", "/proc/1", "--duration", "5", timeout=60)
    one_line_error(r, 2, "/proc/1", "--out")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    r = run_examrec("record", "--out", a_file, "--duration", "5", timeout=60)
    one_line_error(r, 2, str(a_file), "not a folder")
    assert a_file.read_text() == "x"


# --- info, verify, repair on things that are no session -----------------------------------------

def test_info_on_a_file_and_on_a_manifest_without_session_id(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("hello")
    one_line_error(run_examrec("info", a_file), 2, "not a folder")
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"format": "examrec-session/1", "streams": []}))
    one_line_error(run_examrec("info", folder), 2, "no session_id")
    (folder / "manifest.json").write_text(json.dumps({"format": "examrec-session/1", "session_id": "x", "streams": 5}))
    one_line_error(run_examrec("info", folder), 2, "damaged")


def test_a_deeply_nested_manifest_in_info_verify_and_repair(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"session_id": "x", "a": ' + "[" * 200_000 + "]" * 200_000 + "}")
    one_line_error(run_examrec("info", folder), 2, "not valid UTF-8 JSON")
    one_line_error(run_examrec("repair", folder), 3, "not valid UTF-8 JSON")
    r = run_examrec("verify", folder)
    assert r.returncode == 1 and "Traceback" not in r.stderr + r.stdout, r.stderr
    assert "not valid UTF-8 JSON" in r.stdout + r.stderr


# --- archive: copies, connection files, the cache ------------------------------------------------

def _stored_session(archive: ArchiveUnderTest) -> Path:
    from datetime import datetime, timedelta, timezone
    s = archive.session(started=datetime.now(timezone.utc) - timedelta(days=2))
    r = archive.cli("upload", "--out", archive.out, "--json", s, user="car7")
    assert r.rc == 0, r.err
    return s


def _copy_args(session: Path, dest: Path) -> list[str]:
    from datetime import datetime, timedelta, timezone
    requested = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
    return ["archive", "copy", session.name, "--to", str(dest), "--applicant", "A", "--id-document", "ID 1",
            "--requested", requested]


def test_archive_copy_to_a_file_is_a_usage_error(file_archive, tmp_path):
    s = _stored_session(file_archive)
    target = tmp_path / "a-file"
    target.write_text("keep me")
    r = file_archive.cli(*_copy_args(s, target))
    assert r.rc == 2 and len(r.err.strip().splitlines()) == 1 and "is a file" in r.err, r.err
    assert target.read_text() == "keep me"


def _in_own_mount(archive: ArchiveUnderTest, mount_opts: str, args: list[str], mountpoint: Path) -> subprocess.CompletedProcess:
    """Run the CLI in a private mount namespace where ``mountpoint`` is a small tmpfs (util-linux
    `unshare`; no privileges needed), the way a USB stick of that size or state would be."""
    env = {k: v for k, v in {**os.environ, **archive.env}.items() if v is not None}
    env.update(EXAMREC_USER="olena", EXAMREC_PASSWORD=PASSWORDS["olena"])
    script = (f"mount -t tmpfs -o {mount_opts} tmpfs {mountpoint} && "
              f"exec {sys.executable} -m sessions.cli " + " ".join(f"'{a}'" for a in args))
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_archive_copy_to_a_read_only_or_full_medium(file_archive, tmp_path):
    s = _stored_session(file_archive)
    need = sum(f.stat().st_size for f in s.rglob("*") if f.is_file())
    stick = tmp_path / "stick"
    stick.mkdir()
    ro = _in_own_mount(file_archive, "ro,size=64m", _copy_args(s, stick / "copy"), stick)
    assert ro.returncode == 3 and "read-only" in ro.stderr and len(ro.stderr.strip().splitlines()) == 1, ro.stderr
    full = _in_own_mount(file_archive, f"size={max(64 * 1024, need // 2)}", _copy_args(s, stick / "copy"), stick)
    assert full.returncode == 4 and "full" in full.stderr and len(full.stderr.strip().splitlines()) == 1, full.stderr
    # The copies journal holds no entry for either attempt.
    r = file_archive.cli("archive", "journal", "list", "copies", "--json")
    assert r.rc == 0 and not r.json()["entries"], r.out


def test_a_connection_file_with_secrets_readable_by_others_is_refused(tmp_path):
    conn = tmp_path / "archive.toml"
    conn.write_text('[s3]\nendpoint_url = "http://127.0.0.1:9"\n[s3.credentials.officer]\n'
                    'access_key_id = "AK"\nsecret_access_key = "very-secret"\n')
    conn.chmod(0o644)
    env = {"EXAMREC_ARCHIVE_CONFIG": str(conn), "EXAMREC_ARCHIVE": "s3://bucket", "EXAMREC_USER": "olena",
           "EXAMREC_PASSWORD": "x", "EXAMREC_CACHE_DIR": str(tmp_path / "cache")}
    r = run_examrec("archive", "find", "--json", env=env)
    one_line_error(r, 3, "readable by others", "chmod 600")
    assert "very-secret" not in r.stderr + r.stdout


def test_the_archive_cache_is_the_users_alone(tmp_path):
    path = tmp_path / "cache" / "examrec" / "catalog-x.sqlite"
    with Catalog(path):
        pass
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # made by an older version
    with Catalog(path):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- the control socket -------------------------------------------------------------------------

def _raw(path: Path, data: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return json.loads(answer) if answer else {}


def test_control_requests_are_checked_before_they_reach_the_recorder(tmp_path, caplog):
    reached: list[dict] = []
    server = ControlServer(tmp_path / "c.sock", lambda req: reached.append(req) or {"ok": True})
    server.start()
    try:
        answer = request(server.path, {"cmd": "photo", "role": "../../x"})
        assert answer["ok"] is False and "role" in answer["error"]
        assert request(server.path, {"cmd": "photo", "stream": "../../etc"})["ok"] is False
        assert request(server.path, {"cmd": "photo", "role": "candidate"})["ok"] is True
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="sessions.recorder.control"):
            bad = [b"not json\n", b"[1, 2]\n", b'{"cmd": 5}\n', b'{"cmd": "pause", "reason": {"a": 1}}\n',
                   b'{"cmd": "stop", "extra": 1}\n', b"\xff\xfe\n", b"[" * 60_000 + b"\n", b'{"cmd": "ping"}']
            for data in bad:
                assert _raw(server.path, data)["ok"] is False, data[:40]
            try:  # over the size limit: refused unread (the peer may see the rest of its send reset)
                assert _raw(server.path, b" " * 200_000 + b"\n")["ok"] is False
            except ConnectionResetError:
                pass
            bad.append(b"too long")
        records = [r for r in caplog.records if r.name == "sessions.recorder.control"]
        assert len(records) == len(bad), [r.getMessage() for r in records]
        assert all(r.exc_info is None and "\n" not in r.getMessage() for r in records)
    finally:
        server.stop()
    assert reached == [{"cmd": "photo", "role": "candidate"}]


# --- a failed or interrupted check leaves nothing running ----------------------------------------

def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for st in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(st.parent.name)] = int(st.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parents.items() if pp == p}
        out |= kids
        todo += list(kids)
    return out


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


@pytest.mark.parametrize("ending", ["fails", "sigterm", "stream-sigterm"])
def test_a_failed_or_interrupted_check_ends_its_children(tmp_path, ending):
    profile = replay_variant(tmp_path, replace={'source = "pattern:"': 'source = "v4l2:/dev/examrec-no-such-camera"'})
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen([*EXAMREC, "check", "--profile", str(profile)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(scratch)})
    seen: set[int] = set()
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        seen |= _descendants(proc.pid)
        if ending == "sigterm" and len(seen) >= 3:
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            break
        if ending == "stream-sigterm":
            streams = set()
            for p in _alive(_descendants(proc.pid)):
                try:
                    ppid = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
                    parent = Path(f"/proc/{ppid}/cmdline").read_bytes()
                except (OSError, ValueError):
                    continue
                if b"multiprocessing.forkserver" in parent:
                    streams.add(p)  # a stream process: forked by the recorder's forkserver
            if len(streams) >= 5:  # every stream process, in whatever state it is (opening, waiting, checking)
                time.sleep(0.3)
                for p in streams:
                    os.kill(p, signal.SIGTERM)
                gone_by = time.monotonic() + 3
                while _alive(streams) and time.monotonic() < gone_by:
                    time.sleep(0.05)
                assert not _alive(streams), "a stream process did not end on SIGTERM"
                break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err[-2000:]
    assert seen, "the check started no process"
    assert proc.returncode == {"fails": 1, "sigterm": 5, "stream-sigterm": 1}[ending], (proc.returncode, err[-1000:])
    end = time.monotonic() + 10
    while _alive(seen) and time.monotonic() < end:
        time.sleep(0.1)
    assert not _alive(seen), {p: Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in _alive(seen)}
    assert list(scratch.glob("examrec-*")) == []  # the scratch folder and the replay folders


def test_an_interrupt_while_a_stream_process_starts_waits_for_the_start(tmp_path, monkeypatch):
    """SIGTERM that lands while a stream process is being handed to the forkserver acts once the
    start is complete: the process is then known (so aborting ends it) instead of half started
    (abort failed on it and the forkserver's child died with a traceback)."""
    import multiprocessing.process
    from sessions.cli.check import interrupts_raise
    from sessions.recorder.controller import Recorder
    profile = load_profile(replay_variant(tmp_path))
    rec = Recorder(profile, tmp_path / "out")
    start = multiprocessing.process.BaseProcess.start

    def start_under_a_signal(process):
        os.kill(os.getpid(), signal.SIGTERM)   # pending now, while the start goes on
        start(process)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start_under_a_signal)
    try:
        with interrupts_raise(), pytest.raises(KeyboardInterrupt):
            rec.warm()
        started = [rt for rt in rec.streams.values() if rt.process is not None]
        assert len(started) == 1 and started[0].process.pid, "the interrupt came before the start was complete"
    finally:
        monkeypatch.undo()
        rec.abort({})
    assert not any(rt.process.is_alive() for rt in rec.streams.values() if rt.process is not None)
