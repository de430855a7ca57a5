"""One code per outcome: each case the README's exit-code table names, run through the real CLI.

0 ok, 1 a problem found, 2 usage, 3 refused, 6 unreachable (4 disk full and 5 interrupted belong
to recording and are tested there). Every failure is one line on stderr, never a traceback.
"""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


from archive_harness import archive, file_archive, run_cli  # noqa: F401 - fixtures
from sessions.recorder.control import ControlServer

ROOT = Path(__file__).resolve().parent.parent


def one_clean_line(err: str) -> None:
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_an_archive_folder_that_is_not_there_is_unreachable(file_archive, tmp_path):
    a = file_archive
    r = a.cli("archive", "find", "--archive", f"file://{tmp_path / 'not-mounted'}", user="boss")
    assert r.rc == 6
    one_clean_line(r.err)
    assert "not-mounted" in r.err and "not mounted?" in r.err
    (tmp_path / "empty").mkdir()
    r = a.cli("archive", "find", "--archive", f"file://{tmp_path / 'empty'}", user="boss")
    assert r.rc == 2 and "examrec archive init --archive" in r.err      # there, but no archive in it


def test_an_s3_endpoint_that_does_not_answer_is_unreachable(file_archive, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                                   # closed again: nothing listens there
    conn = tmp_path / "archive.toml"
    conn.write_text(f'[s3]\nendpoint_url = "http://127.0.0.1:{port}"\nregion = "us-east-1"\n'
                    '[s3.credentials.head]\naccess_key_id = "k"\nsecret_access_key = "s"\n')
    conn.chmod(0o600)                                               # it holds a secret: the owner's alone
    r = file_archive.cli("archive", "find", "--archive", "s3://examrec", "--archive-config", conn, user="boss",
                         env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    assert r.rc == 6, r.err
    one_clean_line(r.err)


def test_holds_and_releases_against_the_state_are_refused(archive):
    s = archive.session()
    assert archive.cli("upload", "--out", archive.out, user="car7").rc == 0
    r = archive.cli("archive", "release", s.name, "--decision", "D-1")
    assert r.rc == 3 and "is not held" in r.err                    # nothing to release
    one_clean_line(r.err)
    assert archive.cli("archive", "hold", s.name, "--complaint", "C-1").rc == 0
    r = archive.cli("archive", "hold", s.name, "--complaint", "C-1")
    assert r.rc == 3 and "already held" in r.err                   # the same complaint twice
    r = archive.cli("archive", "release", s.name, "--decision", "D-1", "--complaint", "C-9")
    assert r.rc == 3 and "not held for complaint" in r.err
    assert archive.cli("archive", "release", s.name, "--decision", "D-1").rc == 0
    r = archive.cli("archive", "hold", "no-such-session", "--complaint", "C-2")
    assert r.rc == 2                                               # a wrong id is the user's mistake


def test_roles_are_refused_cleanly_for_every_archive_command(archive):
    for args in (["archive", "check"], ["archive", "find"], ["archive", "journal", "list", "access"],
                 ["archive", "sweep"], ["device", "list"]):
        r = archive.cli(*args, user="car7")                         # a recorder only uploads
        assert r.rc == 3, (args, r.err)
        one_clean_line(r.err)
        assert "may not" in r.err
    r = archive.cli("archive", "find", user="boss", password="wrong-password")
    assert r.rc == 3
    one_clean_line(r.err)


def test_several_running_recorders_is_a_usage_matter_not_unreachable(tmp_path):
    run = tmp_path / "run"
    (run / "examrec").mkdir(parents=True)
    servers = [ControlServer(run / "examrec" / f"{n}.sock", lambda req: {"ok": True, "state": "recording"})
               for n in ("car-1", "car-2")]
    for srv in servers:
        srv.start()
    try:
        r = run_cli(["status"], {"XDG_RUNTIME_DIR": str(run)})
        assert r.rc == 2                                            # say which one: --profile or --socket
        assert "several recorders are running" in r.err and "--socket" in r.err
        r = run_cli(["status", "--socket", run / "examrec" / "car-1.sock", "--json"], {"XDG_RUNTIME_DIR": str(run)})
        assert r.rc == 0
    finally:
        for srv in servers:
            srv.stop()
    r = run_cli(["stop"], {"XDG_RUNTIME_DIR": str(run)})
    assert r.rc == 6 and "no recorder is running" in r.err          # nobody answers: unreachable


def test_bad_usage_exits_2_with_one_line(tmp_path):
    cases = [["archive", "find", "--from", "01.03.2026", "--archive", f"file://{tmp_path}"],
             ["archive", "init", "--archive", "ftp://x", "--officer-login", "a", "--officer-name", "Б В"],
             ["archive", "init", "--archive", f"file://{tmp_path / 'n'}", "--officer-login", "Марія",
              "--officer-name", "Марія Бондар"]]
    for args in cases:
        proc = subprocess.run([sys.executable, "-m", "sessions.cli", *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=60, env={"PATH": "/usr/bin:/bin", "EXAMREC_USER": "x",
                                                         "EXAMREC_PASSWORD": "y", "EXAMREC_NEW_PASSWORD": "long-pass-1",
                                                         "HOME": str(tmp_path)})
        assert proc.returncode == 2, (args, proc.stderr)
        one_clean_line(proc.stderr)
    proc = subprocess.run([sys.executable, "-m", "sessions.cli", "archive", "find", "--no-such-option"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
