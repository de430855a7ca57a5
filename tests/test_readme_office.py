"""The README's records-office chapter, run as written: against a folder archive and against a
real S3 server (SeaweedFS).

The chapter's ``sh`` blocks are joined in order into one bash script (``sh folder`` and ``sh s3``
blocks only for that archive); every command must exit as its comment says (``# exit N``), else
0. The example paths, the bucket and the endpoint are replaced by the test's own (the table
REPLACE below); the ``toml`` block is the connection file the S3 run uses, with the secret files
it names written with mode 0600. Two recorded sessions wait on the recorder before the script
runs, as they would after a day of exams.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from archive_harness import TEST_PASSWORD_COST
from conftest import replay_variant
from session_factory import factory_key, make_session
from sessions.archive.config import load_connection

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CHAPTER = "## The records office"
PASSWORD = "readme-pass-1"


def chapter() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(CHAPTER)
    end = text.find("\n## ", start + len(CHAPTER))
    return text[start:end if end > 0 else None]


def blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced block."""
    return [(m.group(1).strip(), m.group(2)) for m in re.finditer(r"^```([^\n]*)\n(.*?)^```", text, re.M | re.S)]


def commands(body: str) -> list[tuple[str, int]]:
    """The commands of a block (continuation lines joined) with the exit code each must give."""
    out: list[tuple[str, int]] = []
    pending = ""
    for raw in body.splitlines():
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = pending + raw
        pending = ""
        if not line.strip():
            continue
        m = re.search(r"#\s*exit (\d+)", line)
        out.append((line, int(m.group(1)) if m else 0))
    return out


def script(kind: str, replace: dict[str, str]) -> str:
    """The chapter's shell blocks for ``kind`` as one script that stops at the first command
    exiting otherwise than the text says."""
    lines = ["set -u", 'fail() { echo "README line: $1" >&2; echo "exited $2, the README says $3" >&2; exit 99; }']
    for info, body in blocks(chapter()):
        words = info.split()
        if not words or words[0] != "sh" or (len(words) > 1 and words[1] != kind):
            continue
        for cmd, want in commands(body):
            for old, new in replace.items():
                cmd = cmd.replace(old, new)
            lines.append(f"{cmd}\nrc=$?; [ $rc -eq {want} ] || fail {shlex.quote(cmd)} $rc {want}")
    return "\n".join(lines) + "\n"


def connection_file(tmp: Path, endpoint: str, secrets: dict[str, str], bucket: str) -> Path:
    """The README's connection file, pointed at the test's server, secrets in files of mode 0600."""
    (toml,) = [body for info, body in blocks(chapter()) if info == "toml"]
    etc = tmp / "etc"
    etc.mkdir(exist_ok=True)
    for ident, secret in secrets.items():
        role = ident.removeprefix("examrec-")
        path = etc / f"{role}.secret"
        path.write_text(secret + "\n")
        path.chmod(0o600)
    text = toml.replace("http://127.0.0.1:8333", endpoint).replace("/etc/examrec/", f"{etc}/") \
        .replace('"s3://examrec"', f'"s3://{bucket}"')
    path = etc / "archive.toml"
    path.write_text(text)
    path.chmod(0o600)
    conn = load_connection(path)                     # every key the README documents is accepted
    assert set(conn.credentials) == {"admin", "officer", "head", "recorder"}
    return path


def run_chapter(kind: str, tmp: Path, replace: dict[str, str], env_extra: dict[str, str]) -> None:
    recordings = tmp / "recordings"
    profile_dir = tmp / "profile"
    profile_dir.mkdir()
    profile = replay_variant(profile_dir, replace={'out = "../recordings"': f'out = "{recordings}"'})
    now = datetime.now(timezone.utc)
    make_session(recordings, started=now - timedelta(hours=3),
                 details={"candidate": "Коваль Олена Петрівна", "candidate_id": "ВН123456",
                          "examiner": "Шевченко Петро", "plate": "АА 1234 ВВ", "centre": "ТСЦ 8041",
                          "exam": "practical"})
    make_session(recordings, started=now - timedelta(hours=2),
                 details={"candidate": "Бондаренко Ігор", "candidate_id": "КА000111", "examiner": "Шевченко Петро",
                          "plate": "АА 1234 ВВ", "centre": "ТСЦ 8041", "exam": "theory"})
    work = tmp / "work"
    work.mkdir()
    # The recorder's public key as its installer exported it (`examrec key --export`): the key
    # that signed the sessions above.
    from cryptography.hazmat.primitives import serialization

    from sessions.evidence.signing import public_key_pem
    (work / "device-17.pub").write_text(public_key_pem(factory_key()))
    # ...and that key itself, where the recorder keeps it (the chapter's /var/lib/examrec).
    recorder_dir = tmp / "recorder-var"
    recorder_dir.mkdir(mode=0o700)
    key_file = recorder_dir / "device.key"
    key_file.write_bytes(factory_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    key_file.chmod(0o600)
    replace = {**replace, "/var/lib/examrec": str(recorder_dir)}
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXAMREC_", "AWS_"))}
    env.update({"PATH": f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}", "EXAMREC_PROFILE": str(profile),
                "EXAMREC_PASSWORD": PASSWORD, "EXAMREC_NEW_PASSWORD": PASSWORD,
                "EXAMREC_CACHE_DIR": str(tmp / "cache"), "HOME": str(tmp / "home"), **env_extra})
    text = script(kind, replace)
    (tmp / "readme-office.sh").write_text(text)
    proc = subprocess.run(["bash", str(tmp / "readme-office.sh")], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n--- stdout ---\n{proc.stdout[-3000:]}"
    out = proc.stdout
    # What the text promises along the way.
    assert "Коваль Олена Петрівна" in out and "0 sessions" in out
    assert "Марія Бондар" in out and "INV-0017" in out                  # archive user list
    for pdf in ("devices-annex3.pdf", "devices-kz.pdf", "copies-annex2.pdf", "holds.pdf"):
        assert (work / pdf).read_bytes()[:5] == b"%PDF-", pdf
    assert len(list(work.glob("*.html.verification.txt"))) == 4        # beside each printed form
    assert not any(recordings.rglob("manifest.json"))                 # uploaded, then deleted from the recorder
    assert "INV-0017" in (work / "uploads.csv").read_text(encoding="utf-8")   # the recorder's inventory number


def base_replace(tmp: Path) -> dict[str, str]:
    (tmp / "usb").mkdir()
    # The archive's password cost as the other archive tests have it (every command logs in:
    # tests/test_access.py checks the default cost and the re-hash at login).
    return {"file:///srv/examrec/archive": f"file://{tmp / 'archive'}", "/media/usb": str(tmp / "usb"),
            "file:///mnt/not-mounted": f"file://{tmp / 'not-mounted'}",
            "--holiday-country UA": f"--holiday-country UA --password-cost {TEST_PASSWORD_COST}"}


def test_the_records_office_chapter_runs_against_a_folder(tmp_path):
    run_chapter("folder", tmp_path, base_replace(tmp_path), {})


def test_the_records_office_chapter_runs_against_s3(seaweed, tmp_path):
    bucket = seaweed.new_bucket()
    conn = connection_file(tmp_path, seaweed.endpoint, seaweed.secret_keys, bucket)
    replace = {**base_replace(tmp_path), "/etc/examrec/archive.toml": str(conn), "s3://examrec": f"s3://{bucket}"}
    run_chapter("s3", tmp_path, replace, {})


def test_the_chapter_is_what_the_test_runs():
    """A block the test would skip (an unknown fence) or a command without examrec would be a
    part of the chapter nobody runs."""
    kinds = {info for info, _ in blocks(chapter())}
    assert kinds == {"sh", "sh folder", "sh s3", "toml"}, kinds
    cmds = [c for info, body in blocks(chapter()) if info.startswith("sh") for c, _ in commands(body)]
    assert len(cmds) >= 35
    assert any(want == 3 for info, body in blocks(chapter()) if info.startswith("sh") for _c, want in commands(body))
    assert any(want == 6 for info, body in blocks(chapter()) if info.startswith("sh") for _c, want in commands(body))
    assert any(want == 2 for info, body in blocks(chapter()) if info.startswith("sh") for _c, want in commands(body))


@pytest.mark.parametrize("line, want", [("examrec archive check --user car7             # exit 3: no", 3),
                                        ("examrec archive find --name Koval", 0)])
def test_expected_codes_are_read_from_the_comment(line, want):
    assert commands(line) == [(line, want)]
