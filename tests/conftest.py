"""Shared test helpers: run the real CLI, record real sessions, decode real MP4."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sessions.evidence.layout import sessions_under

# The S3 server, one for the whole test session (see archive_harness: not imported by the modules).
from archive_harness import seaweed  # noqa: E402,F401 - fixture

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "hw-profiles"
REPLAY = PROFILES / "replay.toml"
EXAMREC = [sys.executable, "-m", "sessions.cli"]

# The test machine's configured profile is the replay profile (a recorder has it installed as
# /etc/examrec/profile.toml); commands that are not given --profile use it.
os.environ.setdefault("EXAMREC_PROFILE", str(REPLAY))

# Each test run has its own runtime directory (control sockets live there), so two test runs, or a
# test run beside a recorder in service, never find each other's recorder.
os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="examrec-test-run-")


def run_examrec(*args: str, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    """Run the examrec CLI in a subprocess (the way people and scripts run it)."""
    env = {**os.environ, **kw.pop("env", {})}
    return subprocess.run([*EXAMREC, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=kw.pop("cwd", ROOT), env=env, **kw)


def session_dirs(out: Path) -> list[Path]:
    """The session folders recorded under ``out``."""
    return sessions_under(out)


def write_profile(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def replay_variant(tmp: Path, replace: dict[str, str] | None = None, append: str = "") -> Path:
    """A copy of the replay profile in ``tmp`` with fixture paths made absolute and edits applied."""
    text = REPLAY.read_text(encoding="utf-8").replace("../bench/", f"{ROOT}/bench/")
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    return write_profile(tmp / "profile.toml", text + append)


@pytest.fixture(scope="session")
def recorded_session(tmp_path_factory) -> Path:
    """The replay profile recorded for 5 s through the real CLI (shared by the read-only tests)."""
    out = tmp_path_factory.mktemp("rec")
    proc = run_examrec("record", "--profile", REPLAY, "--duration", "5", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    (session,) = session_dirs(out)
    assert manifest["session_id"] == session.name
    return session


@pytest.fixture(scope="session", autouse=True)
def device_key(tmp_path_factory):
    """Sessions are signed with a device key; the tests use their own, never the machine's."""
    key = tmp_path_factory.mktemp("key") / "device.key"
    os.environ["EXAMREC_KEY"] = str(key)
    # ...and trust it and the session factory's key, as an office registers its recorders' keys.
    from session_factory import factory_key
    from sessions.evidence import keystore
    from sessions.evidence.signing import load_or_create_key
    store = key.parent / "trusted-keys"
    os.environ[keystore.ENV_TRUSTED] = str(store)
    # The machine's key signs as a recorder and, for the archive commands the tests run, as the office.
    keystore.register(load_or_create_key(key), "test recorder and office", store, kinds=("recorder", "office"))
    keystore.register(factory_key(), "session factory", store)
    return key
