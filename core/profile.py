"""Hardware profiles: TOML files in hw-profiles/ naming the streams, devices, sensors and policies.

Everything is validated on load. A mistake raises :class:`ProfileError` whose message names the
file, the key and what is allowed; the CLI prints it and exits 2 without touching anything.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
OVERLAY_FIELDS = ("datetime", "duration", "name", "speed", "pedals", "stage", "gps")
OVERLAY_POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
KINDS = ("vehicle", "theory-room", "body-worn", "replay")
DEFAULT_NOTICE = "Attention! Audio and video recording is in progress"
# Limits: a profile describes one recorder, so anything far beyond them is a mistake or an attack.
MAX_PROFILE_BYTES = 256 * 1024  # the shipped profiles are 1-4 KiB
MAX_STREAMS = 16                # a car has 4-6 cameras; each stream is a process and an encoder
MAX_TEXT = 1000                 # characters in any text value (the notice is the longest real one)
MAX_LIST = 400                  # items in any list (holidays for years ahead fit)


class ProfileError(Exception):
    """A user mistake in a profile: names the file, the key and what is allowed."""

    def __init__(self, file: Path | str, key: str, message: str):
        self.file = str(file)
        self.key = key
        super().__init__(f"{file}: {key}: {message}")


@dataclass(frozen=True)
class Key:
    """One allowed key: its type(s), whether it must be present, its default, and a range check
    that returns an explanation of what is allowed when the value is wrong."""

    types: tuple[type, ...]
    required: bool = False
    default: Any = None
    check: Callable[[Any], str | None] | None = None
    help: str = ""


def _range(lo: float, hi: float) -> Callable[[Any], str | None]:
    return lambda v: None if lo <= v <= hi else f"{v} is out of range: allowed {lo}..{hi}"


def _even_range(lo: int, hi: int) -> Callable[[Any], str | None]:
    def check(v: int) -> str | None:
        if not lo <= v <= hi:
            return f"{v} is out of range: allowed {lo}..{hi}"
        if v % 2:
            return f"{v} is odd: H.264 4:2:0 needs an even number of pixels"
        return None
    return check


def _one_of(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else f"{v!r} is not one of: {', '.join(options)}"


def _list_of(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(v: list) -> str | None:
        bad = [x for x in v if x not in options]
        return None if not bad else f"{bad} not allowed: choose from {', '.join(options)}"
    return check


def _name(v: str) -> str | None:
    return None if NAME_RE.match(v) else f"{v!r} is not a valid name: lowercase letters, digits, '-' and '_', at most 32"


NUM = (int, float)

TOP_KEYS: dict[str, Key] = {
    # The name goes into session folder and control socket paths: the stream-name rule keeps it
    # one plain path component ("../x" would write outside --out and /run/examrec).
    "name": Key((str,), required=True, check=_name, help="profile name"),
    "kind": Key((str,), required=True, check=_one_of(KINDS)),
    "description": Key((str,), default=""),
    "segment_s": Key((int,), default=300, check=_range(1, 3600), help="segment length in seconds"),
    "fragment_ms": Key((int,), default=120, check=_range(40, 250), help="fMP4 fragment length"),
    "fsync_interval_ms": Key((int,), default=500, check=_range(50, 1000)),
    "out": Key((str,), default="recordings", help="output root for sessions"),
    "gps": Key((str,), default=None, help="gpsd://HOST:PORT or replay:FILE.nmea"),
    "pedals": Key((str,), default=None, help="serial URL, or replay:FILE.pedal"),
    "notice": Key((str,), default=DEFAULT_NOTICE),
    "pause_banner_s": Key(NUM, default=3.0, check=_range(0.2, 30), help="banner before a pause / after a resume"),
    "control_socket": Key((str,), default=None),
    "signing_key": Key((str,), default=None, help="path of the Ed25519 device key"),
    "streams": Key((list,), required=True),
    "encoder": Key((dict,), default=None, help="defaults for every stream's encoder"),
    "overlay": Key((dict,), default=None, help="defaults for every stream's overlay"),
    "clock_check": Key((dict,), default=None),
    "pedal_settings": Key((dict,), default=None),
    "checks": Key((dict,), default=None),
    "photos": Key((dict,), default=None),
    "retention": Key((dict,), default=None),
    "upload": Key((dict,), default=None),
    "exam": Key((dict,), default=None, help="exam defaults: pause reasons, examiner, plate, centre"),
    "console": Key((dict,), default=None, help="the examiner's console served by `examrec serve`"),
    "button": Key((dict,), default=None, help="a hardware button (Linux input device) for pause/resume"),
}

STREAM_KEYS: dict[str, Key] = {
    "name": Key((str,), required=True, check=_name),
    "source": Key((str,), required=True, help="pattern:, clip:FILE, v4l2:DEVICE, rtsp://, http:// (MJPEG), x11:DISPLAY"),
    "width": Key((int,), required=True, check=_even_range(16, 3840)),
    "height": Key((int,), required=True, check=_even_range(16, 2160)),
    "fps": Key(NUM, required=True, check=_range(1, 60)),
    "audio": Key((str,), default=None, help="wav:FILE or mic:DEVICE-NAME; one stream owns the audio"),
    "segment_s": Key((int,), default=None, check=_range(1, 3600)),
    "encoder": Key((dict,), default=None),
    "overlay": Key((dict,), default=None),
    "queue_frames": Key((int,), default=6, check=_range(1, 64)),
    "credentials": Key((str,), default=None, help="ENV:VARNAME or a 0600 file holding user:password"),
    "pixel_format": Key((str,), default=None, check=_one_of(("MJPG", "YUYV"))),
    "draw_mouse": Key((bool,), default=False),
    "rtsp_transport": Key((str,), default=None, check=_one_of(("tcp", "udp"))),
    "open_timeout_s": Key(NUM, default=None, check=_range(0.5, 120), help="how long an IP camera may take to answer"),
    "stall_timeout_s": Key(NUM, default=None, check=_range(0.2, 60), help="no data for this long = the camera is lost"),
}

ENCODER_KEYS: dict[str, Key] = {
    "codec": Key((str,), default="libx264", check=_one_of(("libx264",))),
    "preset": Key((str,), default="ultrafast", check=_one_of(X264_PRESETS)),
    "crf": Key((int,), default=None, check=_range(0, 51)),
    "bitrate_kbps": Key((int,), default=None, check=_range(50, 50000)),
    "gop": Key((int,), default=None, check=_range(1, 600), help="frames between keyframes (default: 2 s)"),
}

OVERLAY_KEYS: dict[str, Key] = {
    "fields": Key((list,), default=["datetime", "duration", "name"], check=_list_of(OVERLAY_FIELDS)),
    "position": Key((str,), default="top-left", check=_one_of(OVERLAY_POSITIONS)),
    "scale": Key(NUM, default=1.0, check=_range(0.25, 4)),
}

SECTION_KEYS: dict[str, dict[str, Key]] = {
    "clock_check": {"limit_s": Key(NUM, default=1.0, check=_range(0.01, 3600))},
    "pedal_settings": {
        "threshold_percent": Key(NUM, default=20, check=_range(1, 100)),
        "debounce_ms": Key((int,), default=30, check=_range(0, 1000)),
        "silent_ms": Key((int,), default=1000, check=_range(100, 60000)),
        "baud": Key((int,), default=115200, check=_range(300, 4000000)),
    },
    "checks": {
        "min_record_h": Key(NUM, default=2.0, check=_range(0, 100)),
        "sample_s": Key(NUM, default=2.0, check=_range(0.5, 30)),
        "max_cpu_percent": Key(NUM, default=75, check=_range(10, 100),
                               help="the processor check: the streams may need at most this share of the "
                                    "machine's CPU (measured by `make bench`'s vehicle rounds)"),
        "mandatory": Key((list,), default=None),
        "idle_every_s": Key(NUM, default=600, check=_range(0, 86400),
                            help="`serve`: run the device checks this often while idle (0: only at each Start)"),
    },
    "photos": {
        "candidate": Key((str,), default=None),
        "examiner": Key((str,), default=None),
    },
    "retention": {
        "months": Key((int,), default=3, check=_range(1, 600)),
    },
    "upload": {
        "archive": Key((str,), default=None),
        "on_charge_only": Key((bool,), default=False),
        "holidays": Key((list,), default=[]),
        "working_days": Key((list,), default=[]),
        "holiday_country": Key((str,), default=""),
    },
    "exam": {
        "pause_reasons": Key((list,), default=["candidate asked", "traffic or road closure", "vehicle fault",
                                              "weather", "medical"],
                             help="the short list the examiner picks a pause reason from"),
        "examiner": Key((str,), default=None),
        "plate": Key((str,), default=None),
        "centre": Key((str,), default=None),
        "exam": Key((str,), default=None, check=_one_of(("theory", "practical"))),
    },
    "console": {
        "bind": Key((str,), default="127.0.0.1", help="address the console listens on"),
        "port": Key((int,), default=8470, check=_range(0, 65535)),
        "token": Key((str,), default=None, help="PIN or token the console asks for when bound beyond 127.0.0.1"),
        "language": Key((str,), default="uk", check=_one_of(("uk", "en"))),
    },
    "button": {
        "device": Key((str,), default=None, help="/dev/input/by-id/...-event-kbd (evdev)"),
        "key_code": Key((int,), default=None, check=_range(1, 767),
                        help="the evdev key code that toggles pause/resume (default: any key)"),
        "reason": Key((str,), default="button", help="the pause reason the button logs"),
    },
}


@dataclass
class EncoderSpec:
    codec: str = "libx264"
    preset: str = "ultrafast"
    crf: int | None = None
    bitrate_kbps: int | None = None
    gop: int | None = None


@dataclass
class OverlaySpec:
    fields: list[str] = field(default_factory=lambda: ["datetime", "duration", "name"])
    position: str = "top-left"
    scale: float = 1.0
    label: str | None = None   # "DEMO" on every frame of a replay profile: never mistaken for an exam


@dataclass
class StreamSpec:
    name: str
    source: str
    width: int
    height: int
    fps: float
    audio: str | None
    segment_s: int
    encoder: EncoderSpec
    overlay: OverlaySpec
    queue_frames: int = 6
    credentials: str | None = None
    pixel_format: str | None = None
    draw_mouse: bool = False
    rtsp_transport: str | None = None
    open_timeout_s: float | None = None
    stall_timeout_s: float | None = None

    @property
    def gop(self) -> int:
        return self.encoder.gop or max(1, round(self.fps * 2))


@dataclass
class Profile:
    path: Path
    name: str
    kind: str
    description: str
    segment_s: int
    fragment_ms: int
    fsync_interval_ms: int
    out: str
    streams: list[StreamSpec]
    gps: str | None = None
    pedals: str | None = None
    notice: str = DEFAULT_NOTICE
    pause_banner_s: float = 3.0
    control_socket: str | None = None
    signing_key: str | None = None
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        """Relative fixture paths in a profile are relative to the profile's own folder."""
        return self.path.parent

    def resolve(self, relpath: str) -> Path:
        p = Path(relpath).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def section(self, name: str) -> dict[str, Any]:
        """A validated optional section with defaults filled in (clock_check, pedal_settings...)."""
        return self.sections[name]

    @property
    def audio_stream(self) -> StreamSpec | None:
        return next((s for s in self.streams if s.audio), None)

    def stream(self, name: str) -> StreamSpec:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(name)


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table", bool: "true or false"}
    if types == NUM:
        return "a number"
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_table(file: Path, prefix: str, data: dict, spec: dict[str, Key]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in data:
        if key not in spec:
            raise ProfileError(file, f"{prefix}{key}", f"unknown key; allowed here: {', '.join(spec)}")
    for key, k in spec.items():
        if key not in data:
            if k.required:
                raise ProfileError(file, f"{prefix}{key}", f"missing; required ({k.help or _type_name(k.types)})")
            out[key] = list(k.default) if isinstance(k.default, list) else k.default
            continue
        value = data[key]
        # bool is an int in Python: a `true` where a number belongs is still a mistake.
        if isinstance(value, bool) and bool not in k.types or not isinstance(value, k.types):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise ProfileError(file, f"{prefix}{key}", f"{shown} has the wrong type: expected {_type_name(k.types)}")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ProfileError(file, f"{prefix}{key}", f"{len(value)} characters; at most {MAX_TEXT}")
        if isinstance(value, list) and len(value) > MAX_LIST:
            raise ProfileError(file, f"{prefix}{key}", f"{len(value)} items; at most {MAX_LIST}")
        if isinstance(value, float) and value != value:
            raise ProfileError(file, f"{prefix}{key}", "nan is not a number a profile can use")
        if k.check is not None:
            why = k.check(value)
            if why:
                raise ProfileError(file, f"{prefix}{key}", why)
        out[key] = value
    return out


def _merge(defaults: dict[str, Any], own: dict | None) -> dict[str, Any]:
    """A stream's table over the profile-wide defaults (unset defaults don't count as given)."""
    return {**{k: v for k, v in defaults.items() if v is not None}, **(own or {})}


def _source_files(spec_source: str) -> list[str]:
    for scheme in ("clip:", "wav:"):
        if spec_source.startswith(scheme):
            return [spec_source[len(scheme):]]
    return []


def _check_source(file: Path, key: str, source: str, allowed: tuple[str, ...]) -> None:
    if not source.startswith(allowed):
        raise ProfileError(file, key, f"{source!r} is not a known source: use one of {', '.join(allowed)}")


VIDEO_SCHEMES = ("pattern:", "clip:", "v4l2:", "rtsp://", "rtsps://", "http://", "https://", "x11:")
AUDIO_SCHEMES = ("wav:", "mic:")


SYSTEM_PROFILE = Path("/etc/examrec/profile.toml")
PROFILE_ENV = "EXAMREC_PROFILE"


def chosen_profile_path(given: str | Path | None) -> Path:
    """The profile a command uses: the one given, else $EXAMREC_PROFILE, else the installed
    /etc/examrec/profile.toml. Never a file of the source tree: a recorder must not fall back to
    the replay demo and sign it as an exam."""
    if given:
        return Path(given)
    if os.environ.get(PROFILE_ENV):
        return Path(os.environ[PROFILE_ENV])
    if SYSTEM_PROFILE.exists():
        return SYSTEM_PROFILE
    raise ProfileError(SYSTEM_PROFILE, "(file)", "no profile chosen and none installed: pass --profile FILE "
                       "(the demo: --profile hw-profiles/replay.toml) or install one as /etc/examrec/profile.toml")


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile; raise ProfileError naming the file and key on any mistake."""
    file = Path(path)
    try:
        if file.stat().st_size > MAX_PROFILE_BYTES:
            raise ProfileError(file, "(file)", f"{file.stat().st_size} bytes; a profile is at most "
                                               f"{MAX_PROFILE_BYTES // 1024} KiB")
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(file, "(file)", "no such profile file; see hw-profiles/ for the shipped ones") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(file, "(syntax)", f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ProfileError(file, "(file)", "not UTF-8 text") from None
    except RecursionError:
        raise ProfileError(file, "(syntax)", "arrays or tables nested too deeply; a profile needs two levels") from None
    except OSError as exc:
        raise ProfileError(file, "(file)", f"cannot be read ({exc.strerror or exc})") from None
    top = _check_table(file, "", raw, TOP_KEYS)
    enc_defaults = _check_table(file, "encoder.", top["encoder"] or {}, ENCODER_KEYS)
    ovl_defaults = _check_table(file, "overlay.", top["overlay"] or {}, OVERLAY_KEYS)
    sections = {name: _check_table(file, f"{name}.", top[name] or {}, spec) for name, spec in SECTION_KEYS.items()}

    if not top["streams"]:
        raise ProfileError(file, "streams", "empty; a profile needs at least one [[streams]] table")
    if len(top["streams"]) > MAX_STREAMS:
        raise ProfileError(file, "streams", f"{len(top['streams'])} streams; at most {MAX_STREAMS} (each is a "
                                            f"process with its own encoder)")
    streams: list[StreamSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(top["streams"]):
        prefix = f"streams[{i}]."
        if not isinstance(entry, dict):
            raise ProfileError(file, f"streams[{i}]", "each stream must be a [[streams]] table")
        s = _check_table(file, prefix, entry, STREAM_KEYS)
        prefix = f"streams.{s['name']}."
        if s["name"] in seen:
            raise ProfileError(file, f"{prefix}name", f"duplicate stream name {s['name']!r}; names must be unique")
        seen.add(s["name"])
        _check_source(file, f"{prefix}source", s["source"], VIDEO_SCHEMES)
        if s["audio"] is not None:
            _check_source(file, f"{prefix}audio", s["audio"], AUDIO_SCHEMES)
        for rel in _source_files(s["source"]) + _source_files(s["audio"] or ""):
            p = Path(rel).expanduser()
            p = p if p.is_absolute() else (file.parent / p)
            if not p.is_file():
                raise ProfileError(file, f"{prefix}source" if rel in s["source"] else f"{prefix}audio",
                                   f"fixture file {rel!r} not found (looked for {p.resolve()})")
        enc = _check_table(file, f"{prefix}encoder.", _merge(enc_defaults, s["encoder"]), ENCODER_KEYS)
        if enc["crf"] is not None and enc["bitrate_kbps"] is not None:
            raise ProfileError(file, f"{prefix}encoder", "set crf or bitrate_kbps, not both")
        if enc["crf"] is None and enc["bitrate_kbps"] is None:
            enc["crf"] = 23
        ovl = _check_table(file, f"{prefix}overlay.", _merge(ovl_defaults, s["overlay"]), OVERLAY_KEYS)
        if top["kind"] == "replay":
            ovl["label"] = "DEMO"
        streams.append(StreamSpec(
            name=s["name"], source=s["source"], width=s["width"], height=s["height"], fps=float(s["fps"]),
            audio=s["audio"], segment_s=s["segment_s"] or top["segment_s"],
            encoder=EncoderSpec(**enc), overlay=OverlaySpec(**ovl), queue_frames=s["queue_frames"],
            credentials=s["credentials"], pixel_format=s["pixel_format"], draw_mouse=s["draw_mouse"],
            rtsp_transport=s["rtsp_transport"], open_timeout_s=s["open_timeout_s"], stall_timeout_s=s["stall_timeout_s"],
        ))
    owners = [s.name for s in streams if s.audio]
    if len(owners) > 1:
        raise ProfileError(file, f"streams.{owners[1]}.audio", f"audio is already owned by stream {owners[0]!r}; one stream owns the audio")
    for role in ("candidate", "examiner"):
        want = sections["photos"][role]
        if want is not None and want not in seen:
            raise ProfileError(file, f"photos.{role}", f"no stream named {want!r}; streams are: {', '.join(sorted(seen))}")
    return Profile(
        path=file.resolve(), name=top["name"], kind=top["kind"], description=top["description"],
        segment_s=top["segment_s"], fragment_ms=top["fragment_ms"], fsync_interval_ms=top["fsync_interval_ms"],
        out=top["out"], streams=streams, gps=top["gps"], pedals=top["pedals"], notice=top["notice"],
        pause_banner_s=float(top["pause_banner_s"]),
        control_socket=top["control_socket"], signing_key=top["signing_key"], sections=sections,
    )
