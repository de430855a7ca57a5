"""`examrec verify` on real session folders: untouched ones pass, every kind of change is named.

Sessions come from tests/session_factory.py (real fragmented MP4, chained logs, signed manifest);
one test checks a session recorded by the real recorder (conftest's ``recorded_session``).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from session_factory import factory_key, make_session
from sessions.cli import app as cli
from sessions.evidence import verify
from sessions.evidence.chain import GENESIS, encode_record, line_hash
from sessions.evidence.layout import read_manifest, write_manifest
from sessions.evidence.signing import load_or_create_key, public_key_pem, sign_manifest
from sessions.evidence.verify import verify_session


def kinds(report) -> list[str]:
    return sorted({p.kind for p in report.problems})


def problems_of(report, kind: str) -> list:
    return [p for p in report.problems if p.kind == kind]


def fragment_records(session: Path, rel: str) -> list[dict]:
    stream = rel.split("/")[0]
    lines = (session / stream / "fragments.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["file"] == rel]


def event_lines(session: Path) -> list[bytes]:
    return (session / "events.jsonl").read_bytes().split(b"\n")[:-1]


def write_event_lines(session: Path, lines: list[bytes]) -> None:
    (session / "events.jsonl").write_bytes(b"".join(x + b"\n" for x in lines))


def edit_manifest(session: Path, change, resign: bool = False) -> None:
    m = read_manifest(session)
    change(m)
    if resign:  # an insider holding the device key: the chains must still tell
        m = sign_manifest(m, factory_key())
    write_manifest(session, m)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def session(tmp_path) -> Path:
    return make_session(tmp_path)


# --- untouched ------------------------------------------------------------------------------

def test_untouched_session_is_complete_and_untouched(session):
    report = verify_session(session)
    assert report.problems == []
    assert report.ok and report.untouched and report.state == "finished"
    m = read_manifest(session)
    n_records = sum(len((session / s / "fragments.jsonl").read_text().splitlines()) for s in ("cabin", "road-front"))
    assert report.counts["segments"] == report.counts["segments_total"] == 4
    assert report.counts["fragments"] == n_records
    assert report.counts["events"] == m["events"]["lines"] == len(event_lines(session))
    assert report.counts["photos"] == 1 and report.counts["telemetry"] == 1 and report.counts["signature"] == 1
    assert report.counts["bytes"] == sum((session / e["file"]).stat().st_size
                                         for s in m["streams"] for e in s["segments"])


def test_cli_exit_0_and_json_for_untouched(session, capsys):
    assert cli.main(["verify", str(session)]) == 0
    assert "complete and untouched" in capsys.readouterr().out
    assert cli.main(["verify", "--json", str(session / "manifest.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["state"] == "finished" and out["problems"] == []
    assert out["session"] == session.name
    assert out["verified"]["segments"] == 4


# --- each kind of change, its own test --------------------------------------------------------

def test_flipped_byte_is_changed_bytes_naming_the_fragment(session, capsys):
    rel = "cabin/0001.mp4"
    rec = next(r for r in fragment_records(session, rel) if r["index"] == 2)
    flip_byte(session / rel, (rec["offset"] + rec["end"]) // 2)
    report = verify_session(session)
    assert kinds(report) == ["changed-bytes"]
    (p,) = report.problems
    assert p.file == rel and "fragment 2 " in p.detail
    assert cli.main(["verify", "--json", str(session)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["untouched"] is False
    assert out["problems"] == [{"file": rel, "kind": "changed-bytes", "detail": p.detail}]


def test_flipped_byte_in_the_closing_moov_is_changed_bytes(session):
    rel = "road-front/0002.mp4"
    size = (session / rel).stat().st_size
    flip_byte(session / rel, size - 20)  # after the last fragment: only the whole-file hash sees it
    report = verify_session(session)
    assert [(p.file, p.kind) for p in report.problems] == [(rel, "changed-bytes")]
    assert "bytes after byte" in report.problems[0].detail


def test_deleted_segment_is_missing_segment(session):
    (session / "road-front" / "0002.mp4").unlink()
    report = verify_session(session)
    assert [(p.file, p.kind) for p in report.problems] == [("road-front/0002.mp4", "missing-segment")]
    assert cli.main(["verify", str(session)]) == 1


def test_segment_removed_from_manifest_and_disk_is_missing_segment(session):
    """Entry and file gone, manifest re-signed by an insider: fragments.jsonl still tells."""
    edit_manifest(session, lambda m: m["streams"][0]["segments"].pop(), resign=True)
    (session / "cabin" / "0002.mp4").unlink()
    report = verify_session(session)
    assert sorted({(p.file, p.kind) for p in report.problems}) == [
        ("cabin/0002.mp4", "missing-segment"), ("manifest.json", "contradicts-checkpoint")]


def test_reordered_segment_entries(session):
    def swap(m):
        segs = m["streams"][0]["segments"]
        segs[0], segs[1] = segs[1], segs[0]
    edit_manifest(session, swap)
    report = verify_session(session)
    assert "reordered-entries" in kinds(report) and "bad-signature" in kinds(report)
    assert all(p.file == "manifest.json" for p in problems_of(report, "reordered-entries"))


def test_reordered_segment_entries_resigned_still_caught(session):
    def swap(m):
        segs = m["streams"][1]["segments"]
        segs[0], segs[1] = segs[1], segs[0]
    edit_manifest(session, swap, resign=True)
    report = verify_session(session)
    # Re-signed, the manifest is no longer the one the finish checkpoint recorded either.
    assert kinds(report) == ["contradicts-checkpoint", "reordered-entries"]
    assert "stream road-front" in problems_of(report, "reordered-entries")[0].detail


def test_edited_event(session):
    lines = event_lines(session)
    i = next(i for i, x in enumerate(lines) if b'"pedal"' in x)
    lines[i] = lines[i].replace(b'"state":"down"', b'"state":"up"')
    write_event_lines(session, lines)
    report = verify_session(session)
    assert [(p.file, p.kind) for p in report.problems] == [("events.jsonl", "edited-event")]
    assert f"line {i + 1} was edited" in report.problems[0].detail


def test_edited_event_with_chain_rebuilt_is_caught_by_signed_summary(session):
    lines = event_lines(session)
    recs = [json.loads(x) for x in lines]
    i = next(i for i, r in enumerate(recs) if r["type"] == "pedal")
    recs[i]["state"] = "up"
    prev, rebuilt = GENESIS, []
    for r in recs:  # recompute every prev_sha256, as a careful forger would
        r.pop("prev_sha256")
        raw = encode_record(r, prev).rstrip(b"\n")
        rebuilt.append(raw)
        prev = line_hash(raw)
    write_event_lines(session, rebuilt)
    report = verify_session(session)
    assert [(p.file, p.kind) for p in report.problems] == [("events.jsonl", "edited-event")]


def test_removed_event(session):
    lines = event_lines(session)
    i = next(i for i, x in enumerate(lines) if b'"photo"' in x)
    del lines[i]
    write_event_lines(session, lines)
    report = verify_session(session)
    assert [(p.file, p.kind) for p in report.problems] == [("events.jsonl", "removed-event")]
    assert f"line {i + 1} does not follow" in report.problems[0].detail


def test_removed_last_event(session):
    write_event_lines(session, event_lines(session)[:-1])  # the "stop" event: the chain alone can't tell
    report = verify_session(session)
    assert [(p.file, p.kind) for p in report.problems] == [("events.jsonl", "removed-event")]


def test_reordered_events(session):
    lines = event_lines(session)
    lines[0], lines[1] = lines[1], lines[0]  # "start" moved down: it claims to be first
    write_event_lines(session, lines)
    report = verify_session(session)
    assert kinds(report) == ["reordered-entries"]
    assert {p.file for p in report.problems} == {"events.jsonl"}


def test_bad_signature(session):
    edit_manifest(session, lambda m: m["details"].update(candidate="Someone Else"))
    report = verify_session(session)
    assert sorted({(p.file, p.kind) for p in report.problems}) == [
        ("manifest.json", "bad-signature"), ("manifest.json", "contradicts-checkpoint")]
    assert "changed after signing" in problems_of(report, "bad-signature")[0].detail
    # The opening record signed before the first frame names what changed.
    assert any("details (candidate)" in p.detail for p in problems_of(report, "contradicts-checkpoint"))
    assert cli.main(["verify", str(session)]) == 1


def test_missing_signature(session):
    edit_manifest(session, lambda m: m.pop("signature"))
    report = verify_session(session)
    assert sorted((p.file, p.kind) for p in report.problems) == [
        ("manifest.json", "contradicts-checkpoint"), ("manifest.json", "missing-signature")]


def test_extra_file(session):
    (session / "cabin" / "0003.mp4").write_bytes((session / "cabin" / "0002.mp4").read_bytes())
    report = verify_session(session)
    assert [(p.file, p.kind) for p in report.problems] == [("cabin/0003.mp4", "extra-file")]


def test_lock_file_must_stay_empty(session):
    assert (session / ".recording.lock").exists() and verify_session(session).ok
    (session / ".recording.lock").write_bytes(b"hidden")
    assert [(p.file, p.kind) for p in verify_session(session).problems] == [(".recording.lock", "extra-file")]


def test_extra_files_anywhere_but_recovered(session):
    (session / "notes.txt").write_text("x")
    (session / "photos" / "other.jpg").write_bytes(b"\xff\xd8")
    (session / "road-front" / "sub").mkdir()
    (session / "recovered").mkdir()
    (session / "recovered" / "anything").write_bytes(b"kept by repair")
    report = verify_session(session)
    assert sorted((p.file, p.kind) for p in report.problems) == [
        ("notes.txt", "extra-file"), ("photos/other.jpg", "extra-file"), ("road-front/sub/", "extra-file")]


def test_changed_photo_and_telemetry(session):
    flip_byte(session / "photos" / "candidate-0001.jpg", 100)
    with open(session / "telemetry.jsonl", "a") as f:
        f.write('{"type":"gps","lat":0,"lon":0}\n')
    report = verify_session(session)
    assert sorted((p.file, p.kind) for p in report.problems) == [
        ("photos/candidate-0001.jpg", "changed-photo"), ("telemetry.jsonl", "changed-telemetry")]


def test_rewritten_fragment_record_is_caught(session):
    """A fragments.jsonl record forged (and the log re-chained) no longer matches the signed segment."""
    path = session / "cabin" / "fragments.jsonl"
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    recs[2]["sha256"] = hashlib.sha256(b"forged").hexdigest()
    path.write_bytes(rechain(recs))
    report = verify_session(session)
    assert [(p.file, p.kind) for p in report.problems] == [("cabin/fragments.jsonl", "changed-bytes")]


def test_manifest_path_outside_the_session_is_refused(session, tmp_path):
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"not evidence")
    edit_manifest(session, lambda m: m["photos"].append({"file": "photos/../../../secret.mp4", "sha256": "0" * 64}))
    report = verify_session(session)
    assert ("manifest.json", "bad-manifest") in [(p.file, p.kind) for p in report.problems]


def test_unreadable_manifest_is_bad_manifest(session):
    (session / "manifest.json").write_text("{not json")
    report = verify_session(session)
    assert ("manifest.json", "bad-manifest") in [(p.file, p.kind) for p in report.problems]
    assert not report.ok


def test_the_software_versions_are_signed_and_optional(session):
    import av
    # The finish checkpoint pins manifest.json's exact bytes (any re-signing shows there); this
    # test is about the manifest's own checks, so it starts from a session cut just before it.
    cp = session / "checkpoints.jsonl"
    cp.write_bytes(b"".join(x + b"\n" for x in cp.read_bytes().split(b"\n")[:-2]))
    software = read_manifest(session)["software"]
    assert software["pyav"] == av.__version__ and software["ffmpeg"] == av.ffmpeg_version_info
    edit_manifest(session, lambda m: m["software"].update(ffmpeg="0.0"))      # changed without the key
    assert [(p.file, p.kind) for p in verify_session(session).problems] == [("manifest.json", "bad-signature")]
    edit_manifest(session, lambda m: m.pop("software"), resign=True)          # a manifest from before it
    assert verify_session(session).ok
    edit_manifest(session, lambda m: m.update(software={"examrec": 1}), resign=True)
    assert [(p.file, p.kind) for p in verify_session(session).problems] == [("manifest.json", "bad-manifest")]


# --- public key --------------------------------------------------------------------------------

def test_expected_public_key(session, tmp_path):
    right = tmp_path / "device.pub"
    right.write_text(public_key_pem(factory_key()))
    wrong = tmp_path / "other.pub"
    wrong.write_text(public_key_pem(Ed25519PrivateKey.generate()))
    assert cli.main(["verify", "--public-key", str(right), str(session)]) == 0
    assert cli.main(["verify", "--public-key", str(wrong), str(session)]) == 1
    report = verify_session(session, expected_public_key=wrong.read_text())
    assert [(p.file, p.kind) for p in report.problems] == [("manifest.json", "bad-signature")]
    assert "not by the expected key" in report.problems[0].detail
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    assert cli.main(["verify", "--public-key", str(bad), str(session)]) == 2


def test_session_signed_by_another_device(tmp_path):
    other = Ed25519PrivateKey.generate()
    s = make_session(tmp_path, key=other, streams=("cabin",), segments=1)
    assert verify_session(s).ok  # its own signature holds
    report = verify_session(s, expected_public_key=factory_key().public_key())
    assert kinds(report) == ["bad-signature"]


# --- interrupted and repaired ------------------------------------------------------------------

def test_interrupted_session_reports_how_far_it_verifies(tmp_path, capsys):
    s = make_session(tmp_path, interrupted=True)
    report = verify_session(s)
    assert not report.ok and report.untouched
    assert kinds(report) == ["interrupted"]
    assert sorted(p.file for p in report.problems) == ["cabin/0002.mp4", "road-front/0002.mp4"]
    for p in report.problems:
        last = fragment_records(s, p.file)[-1]
        assert f"verified up to fragment {last['index']} (pts {last['last_pts_s']:.1f} s)" in p.detail
        assert "torn last fragment" in p.detail
    assert cli.main(["verify", "--json", str(s)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["state"] == "interrupted" and out["untouched"] is True
    assert {p["kind"] for p in out["problems"]} == {"interrupted"}


def test_session_cut_while_recording_is_interrupted(tmp_path):
    s = make_session(tmp_path, finished=False, streams=("cabin",))
    report = verify_session(s)
    assert [(p.file, p.kind) for p in report.problems] == [("cabin/0002.mp4", "interrupted")]
    assert report.state == "recording"


def test_interrupted_session_with_a_changed_fragment(tmp_path):
    s = make_session(tmp_path, interrupted=True, streams=("cabin",))
    rel = "cabin/0002.mp4"
    recs = fragment_records(s, rel)
    flip_byte(s / rel, recs[2]["offset"] + 10)
    report = verify_session(s)
    assert sorted(p.kind for p in report.problems) == ["changed-bytes", "interrupted"]
    inter = problems_of(report, "interrupted")[0]
    assert f"verified up to fragment {recs[1]['index']} " in inter.detail
    assert f"fragment {recs[2]['index']} " in problems_of(report, "changed-bytes")[0].detail


def rechain(lines: list[dict]) -> bytes:
    prev, out = GENESIS, b""
    for r in lines:
        r = {k: v for k, v in r.items() if k != "prev_sha256"}
        raw = encode_record(r, prev)
        out += raw
        prev = line_hash(raw)
    return out


def test_interrupted_session_with_a_fragment_record_taken_out(tmp_path):
    """Record of fragment 2 removed and the log re-chained: the hole in the byte coverage shows,
    and nothing after it counts as verified."""
    s = make_session(tmp_path, interrupted=True, streams=("cabin",))
    path = s / "cabin" / "fragments.jsonl"
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    gone = next(r for r in recs if r["file"] == "cabin/0002.mp4" and r["index"] == 2)
    path.write_bytes(rechain([r for r in recs if r is not gone]))
    report = verify_session(s)
    assert sorted((p.file, p.kind) for p in report.problems) == [
        ("cabin/0002.mp4", "interrupted"), ("cabin/fragments.jsonl", "changed-bytes")]
    assert f"bytes {gone['offset']}-{gone['end']} before fragment 3" in problems_of(report, "changed-bytes")[0].detail
    inter = problems_of(report, "interrupted")[0].detail
    assert "verified up to fragment 1 " in inter and f"unverified from byte {gone['offset']}" in inter


@pytest.mark.parametrize("header", [b"\x00\x00\x00\x10free", b"\x00\x00\x00\x2cskip"], ids=["size", "type"])
def test_interrupted_session_with_the_unhashed_header_changed(tmp_path, header):
    """The 8 bytes the init record leaves out may only be the box header closing rewrites."""
    s = make_session(tmp_path, interrupted=True, streams=("cabin",))
    rel = "cabin/0002.mp4"
    (init,) = [r for r in fragment_records(s, rel) if r["kind"] == "init"]
    a, b = init["skip"]
    data = bytearray((s / rel).read_bytes())
    assert data[a + 4:b] == b"free"
    data[a:b] = header
    (s / rel).write_bytes(bytes(data))
    report = verify_session(s)
    assert sorted((p.file, p.kind) for p in report.problems) == [(rel, "changed-bytes"), (rel, "interrupted")]
    assert "no fragment verified" in problems_of(report, "interrupted")[0].detail


def test_events_summary_written_while_recording(tmp_path):
    """While recording the manifest keeps last_sha256 current and counts lines only at the end."""
    s = make_session(tmp_path, finished=False, streams=("cabin",))
    lines = event_lines(s)
    edit_manifest(s, lambda m: m["events"].update(lines=0, last_sha256=line_hash(lines[-2])))
    assert kinds(verify_session(s)) == ["interrupted"]  # one event logged after that manifest write
    edit_manifest(s, lambda m: m["events"].update(lines=0, last_sha256=line_hash(lines[-1])))
    lines[-1] = lines[-1].replace(b'"type":', b'"type": ')  # the last line: no later line to break
    write_event_lines(s, lines)
    report = verify_session(s)
    assert kinds(report) == ["edited-event", "interrupted"]
    assert "the last event the manifest recorded" in problems_of(report, "edited-event")[0].detail


def test_finished_session_with_an_open_segment_is_bad_manifest(session):
    edit_manifest(session, lambda m: m["streams"][0]["segments"][-1].update(closed=False, sha256=None), resign=True)
    report = verify_session(session)
    assert sorted({(p.file, p.kind) for p in report.problems}) == [
        ("cabin/0002.mp4", "interrupted"), ("manifest.json", "bad-manifest"), ("manifest.json", "contradicts-checkpoint")]


def test_interrupted_session_missing_its_open_segment(tmp_path):
    """The unsigned manifest and the file both removed: fragments.jsonl still names the segment."""
    s = make_session(tmp_path, interrupted=True, streams=("cabin",))
    edit_manifest(s, lambda m: m["streams"][0]["segments"].pop())
    (s / "cabin" / "0002.mp4").unlink()
    report = verify_session(s)
    assert ("cabin/0002.mp4", "missing-segment") in [(p.file, p.kind) for p in report.problems]


def test_repaired_session_is_interrupted_but_untouched(tmp_path):
    s = make_session(tmp_path, repaired=True)
    report = verify_session(s)
    assert kinds(report) == ["interrupted"] and report.untouched
    assert report.counts["signature"] == 1
    assert all("recovered/" in p.detail for p in report.problems)
    (tail,) = (s / "recovered").glob("cabin__0002.mp4.from-*")
    flip_byte(tail, 0)
    report = verify_session(s)
    assert [(p.file, p.kind) for p in report.problems if p.kind != "interrupted"] == [
        (f"recovered/{tail.name}", "changed-bytes")]
    tail.unlink()
    assert "must be kept" in problems_of(verify_session(s), "changed-bytes")[0].detail


def test_repair_removes_the_space_reserve_a_killed_recorder_leaves(tmp_path, monkeypatch):
    from sessions.evidence.layout import RESERVE_NAME
    from sessions.evidence.repair import repair_session

    monkeypatch.setenv("EXAMREC_KEY", str(tmp_path / "key" / "device.key"))
    s = make_session(tmp_path / "rec", interrupted=True)
    (s / RESERVE_NAME).write_bytes(bytes(4096))          # what a recorder killed mid-exam leaves
    assert verify_session(s).untouched                   # zeros only: never a sign of tampering
    report = repair_session(s)
    assert not (s / RESERVE_NAME).exists() and any(RESERVE_NAME in n for n in report.notes)
    assert kinds(verify_session(s)) == ["interrupted"]


def test_real_repair_of_a_power_cut_session_verifies_untouched(tmp_path, monkeypatch):
    """`examrec repair` (sessions/evidence/repair.py) on a power-cut session: verify then reports only
    "interrupted", with the trimmed bytes accounted for in recovered/."""
    from sessions.evidence.repair import repair_session

    key_path = tmp_path / "key" / "device.key"
    monkeypatch.setenv("EXAMREC_KEY", str(key_path))
    # Repair runs on the recorder: its device key signed the checkpoints.
    s = make_session(tmp_path / "rec", interrupted=True, key=load_or_create_key(key_path))
    repair_session(s)
    report = verify_session(s, expected_public_key=load_or_create_key(key_path).public_key())
    assert kinds(report) == ["interrupted"] and report.counts["signature"] == 1
    assert sorted(p.file for p in report.problems) == ["cabin/0002.mp4", "road-front/0002.mp4"]
    assert all("recovered/" in p.detail for p in report.problems)


def test_repaired_session_must_be_signed(tmp_path):
    """Unless its signed checkpoints stand in (repaired on a machine without the recorder's key)."""
    s = make_session(tmp_path, repaired=True, streams=("cabin",))
    edit_manifest(s, lambda m: m.pop("signature"))
    assert kinds(verify_session(s)) == ["interrupted"]
    (s / "checkpoints.jsonl").unlink()
    assert {"missing-signature", "bad-checkpoint"} <= set(kinds(verify_session(s)))


# --- not a session -----------------------------------------------------------------------------

def test_not_a_session_exits_2(tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path / "nowhere")]) == 2
    (tmp_path / "empty").mkdir()
    assert cli.main(["verify", str(tmp_path / "empty")]) == 2
    with pytest.raises(verify.NotASession):
        verify_session(tmp_path / "empty")


# --- the single-pass hasher on files larger than one read ----------------------------------

def test_hash_ranges_across_chunk_boundaries(tmp_path, monkeypatch):
    data = bytes(range(256)) * 40
    path = tmp_path / "f"
    path.write_bytes(data)
    monkeypatch.setattr(verify, "_CHUNK", 7)  # every range crosses several reads
    ranges = [(0, 0), (0, 13), (13, 14), (5, 900), (900, 10240), (10000, 10241), (300, 301)]
    whole, size, digests = verify.hash_ranges(path, ranges)
    assert whole == hashlib.sha256(data).hexdigest() and size == len(data)
    expected = [hashlib.sha256(data[a:b]).hexdigest() if b <= len(data) else None for a, b in ranges]
    assert digests == expected


# --- a session from the real recorder -----------------------------------------------------

def test_real_recording_verifies_and_names_a_flipped_byte(recorded_session, tmp_path):
    """The recorder's fragments.jsonl, segment chain and events summary meet verify's rules.
    Signed here (as the recorder's signing hook does) so the test does not depend on that hook."""
    s = tmp_path / recorded_session.name
    shutil.copytree(recorded_session, s)
    m = read_manifest(s)
    if "signature" not in m:
        write_manifest(s, sign_manifest(m, factory_key()))
    report = verify_session(s)
    assert report.problems == [] and report.ok
    rel = m["streams"][0]["segments"][0]["file"]
    rec = [r for r in fragment_records(s, rel) if r["kind"] == "fragment"][3]
    flip_byte(s / rel, rec["end"] - 5)
    report = verify_session(s)
    assert [(p.file, p.kind) for p in report.problems] == [(rel, "changed-bytes")]
    assert f"fragment {rec['index']} " in report.problems[0].detail
