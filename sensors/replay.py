"""Replay devices (CAP-12): recorded fixtures through the same interfaces as the real hardware.

- GPS: a real gpsd, started by ``gpsfake -P PORT -n -c CYCLE LOG`` on a free loopback port,
  reads the NMEA log from a pty; the recorder's :class:`sensors.gps.GpsReader` connects to the
  ``gpsd://127.0.0.1:PORT`` it yields, exactly as to the gpsd of the car.
- Pedals: ``socat`` makes a pty pair with stable link names; a thread writes the .pedal capture
  into the sensor end in real time; the recorder's :class:`sensors.pedals.PedalReader` opens
  the other end like a USB-serial adapter.

Both are usable outside tests: :func:`start_gps_replay` and :func:`start_pedal_replay` return an
object with ``url`` and ``close()``; the context managers wrap them. A profile says
``gps = "replay:FILE.nmea"`` / ``pedals = "replay:FILE.pedal"`` (see :mod:`sensors.factory`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from sensors.pedal_protocol import SEQ_MOD, SentenceError, format_sentence, parse_sentence

log = logging.getLogger(__name__)


class ReplayError(RuntimeError):
    """A replay device could not be started; the message says which tool and why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GUARD = Path(__file__).with_name("owner_guard.py")


def guarded(cmd: Sequence[str], remove: Sequence[Path] = (), shm_key: str | None = None) -> list[str]:
    """``cmd`` run under :mod:`sensors.owner_guard`: it ends (with everything it started, and the
    folders and shared memory named here are removed) when this process ends, however it ends."""
    out = [sys.executable, str(GUARD), str(os.getpid())]
    for folder in remove:
        out += ["--remove", str(folder)]
    if shm_key:
        out += ["--shm", shm_key]
    return out + ["--", *cmd]


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool) or (shutil.which(tool, path="/usr/sbin:/sbin") if tool == "gpsd" else None)
    if path is None:
        raise ReplayError(f"{tool} not found: install the Debian package {package} (listed in .ci/apt-packages)")
    return path


def _kill_group(proc: subprocess.Popen, timeout_s: float = 5.0) -> None:
    """End a guarded helper: its guard kills the helper's process group (gpsd under gpsfake) and
    cleans up; a guard that does not answer is killed with its own group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout_s)


# -- GPS ---------------------------------------------------------------------------------------
@dataclass
class GpsReplay:
    """A running gpsfake + gpsd; ``url`` is what a profile's ``gps`` would say."""

    url: str
    port: int
    nmea: Path
    process: subprocess.Popen
    folder: Path

    def close(self) -> None:
        """Stop gpsfake and its gpsd, remove the control socket, the log and gpsd's shared memory."""
        if self.process is None:
            return
        # The guard kills gpsfake and gpsd; we remove the folder (gpsfake's control socket and log
        # are in it) and gpsd's shared memory. When this process dies, the guard does all of it.
        _kill_group(self.process)
        self.process = None  # type: ignore[assignment]
        shutil.rmtree(self.folder, ignore_errors=True)
        if shutil.which("ipcrm"):
            subprocess.run(["ipcrm", "-M", f"0x4770{self.port:04X}"], capture_output=True, check=False)

    def __enter__(self) -> "GpsReplay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


CHUNKS_HEADER = "# Chunks-per-epoch:"


def chunks_per_epoch(nmea: Path) -> int:
    """How many gpsfake chunks (text between Delay-Cookie delimiters) make one receiver epoch,
    from the log's ``# Chunks-per-epoch: N`` header line (1 without one)."""
    with open(nmea, "rb") as fh:
        for raw in fh:
            if not raw.startswith(b"#"):
                break
            line = raw.decode("ascii", errors="replace").strip()
            if line.startswith(CHUNKS_HEADER):
                try:
                    return max(1, min(100, int(line[len(CHUNKS_HEADER):].strip())))
                except ValueError:
                    raise ReplayError(f"{nmea}: {line!r}: the chunk count must be a whole number") from None
    return 1


# gpsfake's control socket (and gpsd's) lives in its folder, and a Unix socket path has at most
# 107 bytes: under a long TMPDIR gpsd never got the device and the replay gave no fix, silently.
SOCKET_NAME_ROOM = len("/examrec-gpsfake-xxxxxxxx/gpsfake-4194304.sock") + 8


def _socket_safe_tmp() -> str:
    """The temporary folder, or /tmp when the temporary folder's path is too long for a socket."""
    base = tempfile.gettempdir()
    return base if len(os.fsencode(base)) + SOCKET_NAME_ROOM <= 107 else "/tmp"


def start_gps_replay(nmea: Path | str, port: int | None = None, cycle_s: float = 1.0,
                     timeout_s: float = 20.0) -> GpsReplay:
    """Start gpsfake on ``nmea`` and wait until its gpsd answers on 127.0.0.1:``port``.

    ``cycle_s`` is the time one receiver epoch takes: 1.0 plays in real time and 0.2 five times
    faster. gpsfake's ``-c`` (the pause after each chunk of the log) is that divided by the
    log's chunks per epoch (our fixtures send GGA and RMC half a second apart, see
    bench/make_nmea_fixture.py).
    """
    nmea = Path(nmea).resolve()
    if not nmea.is_file():
        raise ReplayError(f"NMEA log {nmea} not found (the profile's gps = \"replay:...\" is relative to the profile)")
    gpsfake = _require("gpsfake", "gpsd-clients")
    _require("gpsd", "gpsd")
    pause_s = cycle_s / chunks_per_epoch(nmea)
    port = port or free_port()
    folder = Path(tempfile.mkdtemp(prefix="examrec-gpsfake-", dir=_socket_safe_tmp()))
    logfile = open(folder / "gpsfake.log", "wb")
    env = dict(os.environ, TMPDIR=str(folder))  # gpsfake puts its control socket in TMPDIR
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    try:
        # gpsd exports fixes in a SysV segment keyed by the port (gpsfake sets GPSD_SHM_KEY) and
        # does not remove it on exit; it is ours because the port was.
        cmd = guarded([gpsfake, "-q", "-P", str(port), "-n", "-c", f"{pause_s:g}", str(nmea)],
                      remove=[folder], shm_key=f"0x4770{port:04X}")
        proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    finally:
        logfile.close()
    replay = GpsReplay(url=f"gpsd://127.0.0.1:{port}", port=port, nmea=nmea, process=proc, folder=folder)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            text = (folder / "gpsfake.log").read_text(errors="replace")[-800:]
            replay.close()
            raise ReplayError(f"gpsfake on {nmea.name} exited with status {proc.returncode} before gpsd "
                              f"answered on port {port}: {text.strip()}")
        if gpsd_answers(port):
            log.info("gps replay: gpsd on 127.0.0.1:%d playing %s", port, nmea.name)
            return replay
        if time.monotonic() > deadline:
            replay.close()
            raise ReplayError(f"gpsd started by gpsfake did not answer on 127.0.0.1:{port} within {timeout_s:.0f} s")
        time.sleep(0.1)


def gpsd_answers(port: int, timeout_s: float = 1.0) -> bool:
    """True when a gpsd on 127.0.0.1:``port`` greets a new client with its VERSION line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            return s.recv(256).startswith(b'{"class":"VERSION"')
    except OSError:
        return False


@contextlib.contextmanager
def gpsfake_server(nmea: Path | str, port: int | None = None, cycle_s: float = 1.0) -> Iterator[str]:
    """Context manager: a real gpsd replaying ``nmea``; yields its ``gpsd://127.0.0.1:PORT`` URL."""
    replay = start_gps_replay(nmea, port=port, cycle_s=cycle_s)
    try:
        yield replay.url
    finally:
        replay.close()


# -- pedals ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PedalEntry:
    """One fixture entry: these bytes go out ``offset_s`` after the start."""

    offset_s: float
    data: bytes


@dataclass
class PedalFixture:
    header: dict[str, str]
    entries: list[PedalEntry]

    @property
    def duration_s(self) -> float:
        if "Duration" in self.header:
            return float(self.header["Duration"])
        return (self.entries[-1].offset_s + 0.2) if self.entries else 0.0


def read_pedal_fixture(path: Path | str) -> PedalFixture:
    """Read an examrec-pedal-replay/1 file (see bench/make_pedal_fixture.py)."""
    header: dict[str, str] = {}
    entries: list[PedalEntry] = []
    p = Path(path)
    try:
        lines = p.read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        raise ReplayError(f"pedal capture {p} not found (the profile's pedals = \"replay:...\" is relative "
                          f"to the profile)") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if line.startswith("#"):
            text = line[1:]
            key, sep, value = text.strip().partition(":")
            if sep and not text.startswith("  ") and " " not in key:  # "#  ..." continues a line
                header.setdefault(key, value.strip())
            continue
        try:
            offset, kind, payload = line.split(" ", 2)
            if kind == "S":
                data = payload.encode("ascii") + b"\r\n"
            elif kind == "B":
                data = bytes.fromhex(payload)
            else:
                raise ValueError(f"kind {kind!r} is not S or B")
            entries.append(PedalEntry(float(offset), data))
        except ValueError as exc:
            raise ReplayError(f"{p}:{number}: not '<offset_s> S <text>' or '<offset_s> B <hex>': {exc}") from None
    entries.sort(key=lambda e: e.offset_s)  # stable: equal offsets keep file order
    return PedalFixture(header, entries)


class PtyPair:
    """``socat -d -d pty,raw,echo=0,link=A pty,raw,echo=0,link=B``: two linked ptys whose names
    (``sensor_path``, ``recorder_path``) stay the same across :meth:`close` and :meth:`open`,
    like a USB adapter unplugged and plugged back in."""

    def __init__(self, folder: Path | str, names: tuple[str, str] = ("sensor", "recorder"),
                 remove_folder_on_exit: bool = False):
        self.folder = Path(folder)
        self.remove_folder_on_exit = remove_folder_on_exit  # a folder made for this pair goes when its owner dies
        self.sensor_path = self.folder / names[0]
        self.recorder_path = self.folder / names[1]
        self._proc: subprocess.Popen | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def open(self, timeout_s: float = 5.0) -> None:
        """Start socat and wait until both links exist."""
        socat = _require("socat", "socat")
        if self.alive:
            return
        self._proc = subprocess.Popen(
            guarded([socat, "-d", "-d", f"pty,raw,echo=0,link={self.sensor_path}",
                     f"pty,raw,echo=0,link={self.recorder_path}"],
                    remove=[self.folder] if self.remove_folder_on_exit else []),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not (self.sensor_path.exists() and self.recorder_path.exists()):
            if self._proc.poll() is not None:
                raise ReplayError(f"socat exited with status {self._proc.returncode} making ptys in {self.folder}")
            if time.monotonic() > deadline:
                self.close()
                raise ReplayError(f"socat made no ptys in {self.folder} within {timeout_s:.0f} s")
            time.sleep(0.005)

    def close(self) -> None:
        """Stop socat (its ptys vanish: readers get an I/O error); safe to call twice."""
        if self._proc is not None:
            _kill_group(self._proc)
            self._proc = None
        for link in (self.sensor_path, self.recorder_path):
            with contextlib.suppress(FileNotFoundError):
                link.unlink()


@dataclass
class PedalReplay:
    """A pedal capture playing into a pty pair. ``url`` is the recorder's end; ``start_ns``
    (CLOCK_MONOTONIC) is offset 0 of the capture; ``writes`` lists (loop, offset_s, ns just
    before the write) for every write: when the bytes really went out, which under load can be
    later than scheduled. :meth:`played_ns` looks one up."""

    url: str
    start_ns: int
    entries: list[PedalEntry]
    pair: PtyPair
    loop: bool = False
    duration_s: float = 0.0
    writes: list[tuple[int, float, int]] = field(default_factory=list)
    dropped_writes: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _owns_folder: bool = False

    def due_ns(self, offset_s: float, loop: int = 0) -> int:
        """When an entry at ``offset_s`` is scheduled to go out."""
        return self.start_ns + round((offset_s + loop * self.duration_s) * 1e9)

    def played_ns(self, offset_s: float, loop: int = 0) -> int | None:
        """When the write of the entries at ``offset_s`` started (None if not played)."""
        for lp, off, ns in self.writes:
            if lp == loop and off == offset_s:
                return ns
        return None

    def unplug(self) -> None:
        """Take the pty pair away (the recorder's port read fails); playback continues, its writes are lost."""
        self.pair.close()

    def replug(self) -> None:
        """Bring the pty pair back under the same names."""
        self.pair.open()

    def close(self) -> None:
        """Stop playing, stop socat, remove the links (and the temp folder we made)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        self.pair.close()
        if self._owns_folder:
            shutil.rmtree(self.pair.folder, ignore_errors=True)

    def __enter__(self) -> "PedalReplay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- player thread --------------------------------------------------------------------------
    def _play(self) -> None:
        fd = -1
        groups = _groups(self.entries)
        seq_span, ms_span = _spans(self.entries, self.duration_s)
        loop = 0
        try:
            while not self._stop.is_set():
                for offset, chunks in groups:
                    due = self.due_ns(offset, loop)
                    wait_s = (due - time.monotonic_ns()) / 1e9
                    if wait_s > 0 and self._stop.wait(wait_s):
                        return
                    data = b"".join(_renumber(c, loop, seq_span, ms_span) for c in chunks)
                    if fd < 0:
                        fd = self._reopen()
                    if fd < 0:
                        self.dropped_writes += 1
                        continue
                    before = time.monotonic_ns()
                    try:
                        os.write(fd, data)
                    except OSError:
                        os.close(fd)
                        fd = -1
                        self.dropped_writes += 1
                        continue
                    self.writes.append((loop, offset, before))
                if not self.loop:
                    return
                loop += 1
        finally:
            if fd >= 0:
                os.close(fd)
            self.done.set()

    def _reopen(self) -> int:
        try:
            return os.open(self.pair.sensor_path, os.O_WRONLY | os.O_NOCTTY)
        except OSError:
            return -1


def _groups(entries: Sequence[PedalEntry]) -> list[tuple[float, list[bytes]]]:
    """Entries with equal offsets merged into one write."""
    out: list[tuple[float, list[bytes]]] = []
    for e in entries:
        if out and out[-1][0] == e.offset_s:
            out[-1][1].append(e.data)
        else:
            out.append((e.offset_s, [e.data]))
    return out


def _spans(entries: Sequence[PedalEntry], duration_s: float) -> tuple[int, int]:
    seqs = []
    for e in entries:
        with contextlib.suppress(SentenceError):
            seqs.append(parse_sentence(e.data).seq)
    span = ((seqs[-1] - seqs[0]) % SEQ_MOD + 1) if seqs else 0  # seq wraps at 65536
    return span, round(duration_s * 1000)


def _renumber(data: bytes, loop: int, seq_span: int, ms_span: int) -> bytes:
    """On the n-th repeat, carry seq and device_ms on from the end of the capture (so a looped
    replay shows no sequence gap where it starts over); bad entries stay as recorded."""
    if loop == 0:
        return data
    try:
        s = parse_sentence(data)
    except SentenceError:
        return data
    return format_sentence((s.seq + loop * seq_span) % SEQ_MOD, s.device_ms + loop * ms_span, s.brake, s.clutch)


def start_pedal_replay(fixture: Path | str | Sequence[PedalEntry], *, start_delay_s: float = 0.5,
                       until_s: float | None = None, loop: bool = False,
                       folder: Path | str | None = None, duration_s: float | None = None) -> PedalReplay:
    """Make a pty pair and play ``fixture`` (a .pedal file, or entries) into its sensor end.

    Playback starts ``start_delay_s`` from now (``PedalReplay.start_ns``), leaving the reader
    time to open its end; ``until_s`` plays only entries before that offset; ``loop`` repeats
    forever (for a recorder demo longer than the capture).
    """
    if isinstance(fixture, (str, Path)):
        fx = read_pedal_fixture(fixture)
        entries, dur = fx.entries, fx.duration_s
    else:
        entries = list(fixture)
        dur = (entries[-1].offset_s + 0.2) if entries else 0.0
    if duration_s is not None:
        dur = duration_s
    if until_s is not None:
        entries = [e for e in entries if e.offset_s < until_s]
        dur = min(dur, until_s)
    owns = folder is None
    pair = PtyPair(Path(tempfile.mkdtemp(prefix="examrec-pedals-")) if owns else Path(folder),
                   remove_folder_on_exit=owns)
    pair.open()
    replay = PedalReplay(url=str(pair.recorder_path), start_ns=time.monotonic_ns() + round(start_delay_s * 1e9),
                         entries=entries, pair=pair, loop=loop, duration_s=dur, _owns_folder=owns)
    replay._thread = threading.Thread(target=replay._play, name="pedal-replay", daemon=True)
    replay._thread.start()
    return replay


@contextlib.contextmanager
def pedal_replay(fixture: Path | str | Sequence[PedalEntry], **kwargs: object) -> Iterator[PedalReplay]:
    """Context manager around :func:`start_pedal_replay`; yields the replay (``.url`` is the
    recorder's end of the pty pair, ``.start_ns`` offset 0 of the schedule)."""
    replay = start_pedal_replay(fixture, **kwargs)  # type: ignore[arg-type]
    try:
        yield replay
    finally:
        replay.close()
