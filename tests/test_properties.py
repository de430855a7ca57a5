"""Property-based tests (hypothesis): whatever a user, a broken device or a hostile client sends,
the profile loader, the session details, the pedal parser, the gpsd reader and the control
socket's request parser give a clean result or their own clean error, never another exception."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.profile import ProfileError, load_profile
from sensors.gps import GpsFix, GpsReader
from sensors.nmea import sentence as nmea_sentence
from sensors.pedal_protocol import LineFramer, PedalSentence, SentenceError, format_sentence, parse_sentence
from sessions.cli.record import DETAIL_KEYS, DetailsError, session_details
from sessions.recorder.control import COMMANDS, RequestError, parse_request

from conftest import REPLAY

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20)

# TOML values, well-formed or not, that a careless edit may put anywhere in a profile.
toml_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: "nan" if math.isnan(f) else
                                                        ("inf" if f == math.inf else "-inf" if f == -math.inf else repr(f))),
    st.text(max_size=30).map(json.dumps),
    st.sampled_from(["true", "false", "[]", "{}", "[1, [2, [3]]]", '{a = {b = {c = 1}}}', '"\\ud800"', "'''x'''",
                     "[" * 50 + "]" * 50, "1979-05-27T07:32:00Z", "0x1F", "=", "[[", '"unterminated']),
)
profile_keys = st.sampled_from(["name", "kind", "segment_s", "fragment_ms", "out", "gps", "pedals", "notice",
                                "streams", "encoder", "overlay", "clock_check", "photos", "upload", "x",
                                "width", "height", "fps", "source", "audio", "queue_frames", "encoder.crf",
                                "overlay.fields", "checks.mandatory", "retention.months"])


@FAST
@given(edits=st.lists(st.tuples(st.integers(min_value=0, max_value=60), profile_keys, toml_values), max_size=4),
       tail=st.text(max_size=40))
def test_the_profile_loader_gives_a_profile_or_a_profile_error(tmp_path_factory, edits, tail):
    lines = REPLAY.read_text(encoding="utf-8").replace("../bench/", f"{REPLAY.parent.parent}/bench/").splitlines()
    for at, key, value in edits:
        lines.insert(min(at, len(lines)), f"{key} = {value}")
    path = tmp_path_factory.mktemp("p") / "profile.toml"
    path.write_text("\n".join(lines) + "\n" + tail, encoding="utf-8", errors="surrogatepass")
    try:
        load_profile(path)
    except ProfileError as exc:
        assert "\n" not in str(exc).strip() or "not valid TOML" in str(exc)


@FAST
@given(raw=st.binary(max_size=300))
def test_the_profile_loader_survives_any_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("p") / "profile.toml"
    path.write_bytes(raw)
    try:
        load_profile(path)
    except ProfileError:
        pass


def _details_args(details: Path | None, options: dict[str, str | None]) -> argparse.Namespace:
    return argparse.Namespace(details=details, **{k: options.get(k) for k in DETAIL_KEYS})


@FAST
@given(content=st.one_of(json_values.map(json.dumps), st.text(max_size=200)),
       options=st.dictionaries(st.sampled_from(DETAIL_KEYS), st.text(max_size=50) | st.none(), max_size=3))
def test_details_give_text_fields_or_a_details_error(tmp_path_factory, content, options):
    path = tmp_path_factory.mktemp("d") / "details.json"
    path.write_text(content, encoding="utf-8", errors="surrogatepass")
    try:
        details = session_details(_details_args(path, options))
    except DetailsError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert set(details) <= set(DETAIL_KEYS)
    for value in details.values():
        assert isinstance(value, str) and len(value) <= 200
        value.encode("utf-8")  # always writable into the manifest
    json.dumps(details, ensure_ascii=False).encode("utf-8")


@FAST
@given(line=st.binary(max_size=120))
def test_the_pedal_parser_gives_a_sentence_or_a_sentence_error(line):
    try:
        s = parse_sentence(line)
    except SentenceError:
        return
    assert isinstance(s, PedalSentence)
    for value in (s.brake, s.clutch):
        assert value is None or 0 <= value <= 100


@FAST
@given(seq=st.integers(min_value=0, max_value=65535), ms=st.integers(min_value=0, max_value=2**31),
       brake=st.none() | st.floats(min_value=0, max_value=100), clutch=st.none() | st.floats(min_value=0, max_value=100),
       noise=st.binary(max_size=60), cut=st.integers(min_value=0, max_value=80))
def test_the_pedal_framer_and_parser_recover_a_sentence_after_any_noise(seq, ms, brake, clutch, noise, cut):
    good = format_sentence(seq, ms, brake, clutch)
    framer = LineFramer()
    stream = noise + b"\n" + good
    lines = [ln for part in (stream[:cut], stream[cut:]) for ln, _ in framer.feed(part, 0)]
    parsed = []
    for ln in lines:
        try:
            parsed.append(parse_sentence(ln))
        except SentenceError:
            pass
    assert parsed and parsed[-1].seq == seq and parsed[-1].device_ms == ms


tpv_fields = st.fixed_dictionaries({"class": st.just("TPV")}, optional={
    "mode": st.one_of(st.integers(-5, 10), st.text(max_size=3), st.none(), st.floats()),
    "time": st.one_of(st.text(max_size=30), st.just("2025-05-15T06:00:00.000Z"), st.just("9999-12-31T23:59:59Z"),
                      st.integers(), st.none()),
    "lat": st.one_of(st.floats(allow_nan=True), st.text(max_size=5), st.none(), st.booleans()),
    "lon": st.one_of(st.floats(allow_nan=True), st.text(max_size=5), st.none()),
    "speed": st.one_of(st.floats(allow_nan=True), st.text(max_size=5), st.integers()),
    "track": st.one_of(st.floats(allow_nan=True), st.lists(st.integers(), max_size=2)),
    "altMSL": st.one_of(st.floats(allow_nan=True), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
    "device": st.one_of(st.text(max_size=300), st.integers()),
})
nmea_bodies = st.builds(lambda kind, fields: f"GP{kind}," + ",".join(fields),
                        st.sampled_from(["RMC", "GGA", "VTG", "GLL", "ZDA", "GNS", "XYZ"]),
                        st.lists(st.text(alphabet="0123456789.,-ANSVEWTMK", max_size=12), max_size=14))
gpsd_lines = st.one_of(
    tpv_fields.map(lambda d: json.dumps(d, allow_nan=True).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"class": st.sampled_from(["TOFF", "DEVICE", "VERSION", "ERROR", "SKY"])},
                          optional={"real_sec": json_values, "real_nsec": json_values, "clock_sec": json_values,
                                    "clock_nsec": json_values, "activated": json_values, "path": json_values,
                                    "release": json_values, "message": json_values}).map(lambda d: json.dumps(d).encode()),
    nmea_bodies.map(lambda b: nmea_sentence(b).strip().encode()),
    st.binary(max_size=200),
)


@FAST
@given(lines=st.lists(gpsd_lines, max_size=12))
def test_the_gpsd_reader_handles_any_report_line(lines):
    fixes: list[GpsFix] = []
    reader = GpsReader("gpsd://127.0.0.1:9", on_fix=fixes.append)
    stamp = 10**12
    for i, line in enumerate(lines):
        reader._handle(line, stamp + i * 10**8, 1_700_000_000 * 10**9)
    st_ = reader.state()
    assert isinstance(st_.label, str)
    if st_.speed_kmh is not None:
        assert math.isfinite(st_.speed_kmh) and st_.speed_kmh >= 0
    while not reader._dispatch._queue.empty():  # what would go to telemetry: valid JSON every time
        fn, args, kwargs = reader._dispatch._queue.get_nowait()
        for arg in args:
            if isinstance(arg, GpsFix):
                json.dumps(arg.to_record(), allow_nan=False, ensure_ascii=False).encode("utf-8")


control_requests = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode() + b"\n"),
    st.fixed_dictionaries({"cmd": st.sampled_from(sorted(COMMANDS)) | st.text(max_size=6)},
                          optional={k: json_values for k in ("role", "stream", "reason", "plate", "x")})
      .map(lambda d: json.dumps(d).encode() + b"\n"),
)


@FAST
@given(line=control_requests)
def test_the_control_parser_gives_a_checked_request_or_a_request_error(line):
    try:
        req = parse_request(line)
    except RequestError as exc:
        assert "\n" not in str(exc)
        return
    assert req["cmd"] in COMMANDS and set(req) - {"cmd"} <= set(COMMANDS[req["cmd"]])
    if req.get("role") is not None:
        assert req["role"] in ("candidate", "examiner")
    if req.get("stream") is not None:
        assert "/" not in req["stream"] and ".." not in req["stream"]
