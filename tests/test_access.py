"""People, not logins: users with full names, positions and inventory numbers; the first officer
asked on a terminal; passwords hashed at today's scrypt cost and re-hashed at the next login."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

from archive_harness import file_archive, run_cli  # noqa: F401 - fixtures
from sessions.archive.access import DEFAULT_COST_LOG2, check_password, hash_password, needs_rehash

ROOT = Path(__file__).resolve().parent.parent


def settings_of(archive_dir: Path) -> dict:
    return json.loads((archive_dir / "examrec" / "config.json").read_text(encoding="utf-8"))


def test_the_default_cost_is_todays_recommendation():
    assert DEFAULT_COST_LOG2 == 17                                    # OWASP: N=2^17, r=8, p=1
    rec = hash_password("a-long-password")
    assert (rec["n"], rec["r"], rec["p"]) == (1 << 17, 8, 1)
    assert check_password(rec, "a-long-password") and not check_password(rec, "a-long-passwore")
    assert not needs_rehash(rec) and needs_rehash(hash_password("a-long-password", 14))


def test_init_with_names_and_a_weak_hash_is_rehashed_at_the_next_login(tmp_path):
    url = f"file://{tmp_path / 'archive'}"
    env = {"EXAMREC_NEW_PASSWORD": "officer-pass-1", "EXAMREC_ARCHIVE": url, "EXAMREC_CACHE_DIR": str(tmp_path / "c"),
           "EXAMREC_ARCHIVE_CONFIG": None}
    r = run_cli(["archive", "init", "--archive", url, "--officer-login", "olena", "--officer-name", "Марія  Бондар",
                 "--officer-position", "відповідальна особа"], env)
    assert r.rc == 0, r.err
    assert "Марія Бондар (login olena)" in r.out
    st = settings_of(tmp_path / "archive")
    (user,) = st["users"]
    assert user["full_name"] == "Марія Бондар" and user["position"] == "відповідальна особа"
    assert user["password"]["n"] == 1 << 17 and st["password_cost"] == 17 and st["responsible"] == "olena"
    # An archive made before the cost was raised: its hash is cheap (2^14) and it has no cost setting.
    st["users"][0]["password"] = hash_password("officer-pass-1", 14)
    del st["password_cost"]
    (tmp_path / "archive" / "examrec" / "config.json").write_text(json.dumps(st), encoding="utf-8")
    env = {**env, "EXAMREC_USER": "olena", "EXAMREC_PASSWORD": "officer-pass-1"}
    assert run_cli(["archive", "find"], env).rc == 0
    after = settings_of(tmp_path / "archive")["users"][0]
    assert after["password"]["n"] == 1 << 17 and after.get("rehashed_at")
    assert after["password"]["salt"] != st["users"][0]["password"]["salt"]
    assert run_cli(["archive", "find"], env).rc == 0                  # the same password still opens it
    assert run_cli(["archive", "find"], {**env, "EXAMREC_PASSWORD": "wrong-pass-1"}).rc == 3


def test_users_carry_names_positions_and_inventory_numbers(file_archive):
    a = file_archive
    pw = {"EXAMREC_NEW_PASSWORD": "a-long-pass-1"}
    r = a.cli("archive", "user", "add", "car9", "--role", "recorder", "--name", "Відеореєстратор № 9", env=pw)
    assert r.rc == 2 and "--inventory" in r.err                       # a recorder is known by its number
    r = a.cli("archive", "user", "add", "марія", "--role", "officer", "--name", "Марія Бондар", env=pw)
    assert r.rc == 2 and "--name" in r.err                            # a login is Latin; the name goes in --name
    r = a.cli("archive", "user", "add", "ivan", "--role", "head", "--name", "123", env=pw)
    assert r.rc == 2
    assert a.cli("archive", "user", "add", "car9", "--role", "recorder", "--name", "Відеореєстратор № 9",
                 "--inventory", "INV-0009", env=pw).rc == 0
    assert a.cli("archive", "user", "add", "car9", "--role", "recorder", "--name", "X Y", "--inventory", "1",
                 env=pw).rc == 3                                       # exists already
    assert a.cli("archive", "user", "edit", "boss", "--name", "Петро Іванович Головко", "--position",
                 "начальник ТСЦ 8041").rc == 0
    users = {u["login"]: u for u in a.cli("archive", "user", "list", "--json").json()}
    assert users["car9"]["inventory"] == "INV-0009" and users["car9"]["role"] == "recorder"
    assert users["boss"]["full_name"] == "Петро Іванович Головко"
    table = a.cli("archive", "user", "list").out
    assert "Петро Іванович Головко" in table and "INV-0009" in table
    # The recorder account's inventory number is what the uploads journal records.
    a.session()
    r = a.cli("upload", "--out", a.out, user="car9", password="a-long-pass-1", env={"EXAMREC_DEVICE": None})
    assert r.rc == 0, r.err
    entries = a.cli("archive", "journal", "list", "uploads", "--json").json()["entries"]
    assert {e["device"] for e in entries} == {"INV-0009"}


def _read_until(fd: int, text: bytes, timeout_s: float = 30.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout_s
    while text not in buf:
        left = deadline - time.monotonic()
        assert left > 0, buf
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_init_asks_on_a_terminal_for_what_is_missing(tmp_path):
    master, slave = pty.openpty()

    def controlling_tty() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {k: v for k, v in os.environ.items() if not k.startswith("EXAMREC_")}
    proc = subprocess.Popen([sys.executable, "-m", "sessions.cli", "archive", "init", "--archive",
                             f"file://{tmp_path / 'archive'}", "--password-cost", "14"],
                            stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env,
                            preexec_fn=controlling_tty)
    os.close(slave)
    try:
        for prompt, answer in ((b"login", b"olena"), (b"full name", "Марія Бондар".encode()),
                               (b"new password", b"officer-pass-1"), (b"again", b"officer-pass-1")):
            _read_until(master, prompt)
            os.write(master, answer + b"\n")
        tail = _read_until(master, b"ready")
        assert proc.wait(timeout=60) == 0, tail
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    (user,) = settings_of(tmp_path / "archive")["users"]
    assert user["name"] == "olena" and user["full_name"] == "Марія Бондар" and user["password"]["n"] == 1 << 14
