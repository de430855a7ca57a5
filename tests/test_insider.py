"""The attacks of an insider (someone with the recorder's disk, its keys, or a copy), each scripted
against real session folders: every one is detected or refused, with its kind named.

Sessions come from tests/session_factory.py (real fMP4, chained logs, signed checkpoints and
manifest); the symlink and repair attacks go through the real `examrec` commands.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from archive_harness import file_archive, s3_archive  # noqa: F401 - fixtures
from session_factory import factory_key, make_session
from sessions.cli import app as cli
from sessions.evidence import jcs, keystore
from sessions.evidence.chain import GENESIS, line_hash
from sessions.evidence.checkpoints import CHECKPOINTS_NAME, signed_bytes
from sessions.evidence.layout import read_manifest, write_manifest
from sessions.evidence.manifest import FORMAT_V1, canonical_json
from sessions.evidence.repair import RepairRefused, repair_session
from sessions.evidence.signing import fingerprint, public_key_pem, sign_manifest, signed_body
from sessions.evidence.verify import verify_session
from core.profile import ProfileError, load_profile

ROOT = Path(__file__).resolve().parent.parent


def kinds(report) -> set[str]:
    return {p.kind for p in report.problems}


def launder(session: Path, change) -> None:
    """Attack 1: strip the signature, call the session interrupted, change something."""
    m = read_manifest(session)
    m.pop("signature")
    m["state"] = "interrupted"
    change(m, session)
    write_manifest(session, m)


def cut_last_fragments(m: dict, session: Path) -> None:
    """Cut the last fragment of every stream's last segment, with fragments.jsonl, the manifest's
    segment entries and the events summary all made to match."""
    for s in m["streams"]:
        log = session / s["name"] / "fragments.jsonl"
        lines = log.read_bytes().split(b"\n")[:-1]
        last = json.loads(lines[-1])
        log.write_bytes(b"".join(x + b"\n" for x in lines[:-1]))
        seg = session / last["file"]
        with open(seg, "r+b") as f:
            f.truncate(last["offset"])
        entry = s["segments"][-1]
        entry.update(closed=False, sha256=None, size=None)
    ev = (session / "events.jsonl").read_bytes().split(b"\n")[:-1][:-2]  # the stop and the last pedal
    (session / "events.jsonl").write_bytes(b"".join(x + b"\n" for x in ev))
    m["events"] = {"file": "events.jsonl", "lines": len(ev), "last_sha256": line_hash(ev[-1])}


@pytest.fixture
def device_key_file(tmp_path, monkeypatch):
    """Repair signs with the machine's device key: here the recorder's own (the factory key)."""
    from cryptography.hazmat.primitives import serialization
    path = tmp_path / "keys" / "device.key"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(factory_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    path.chmod(0o600)
    monkeypatch.setenv("EXAMREC_KEY", str(path))
    return path


# --- 1. laundering through repair ----------------------------------------------------------

@pytest.mark.parametrize("change", ["details", "cut"])
def test_a_laundered_finished_session_is_refused_by_repair_and_named_by_verify(tmp_path, device_key_file, change, capsys):
    s = make_session(tmp_path)
    if change == "details":
        launder(s, lambda m, _s: m["details"].update(candidate="Someone Else"))
    else:
        launder(s, cut_last_fragments)
    with pytest.raises(RepairRefused, match="finished and its manifest was signed"):
        repair_session(s)
    assert cli.main(["repair", str(s)]) == 3
    assert "repair does not sign it" in capsys.readouterr().err
    assert "signature" not in read_manifest(s)          # nothing was signed
    report = verify_session(s)
    assert not report.untouched
    details = [p.detail for p in report.problems if p.kind == "contradicts-checkpoint"]
    assert any("records that the session finished" in d for d in details), report.problems
    if change == "details":
        assert any("details (candidate) differs from the opening record" in d for d in details)
    else:
        # Every stream's fragment log is shorter than the signed heads.
        for stream in ("cabin", "road-front"):
            assert any(p.file == f"{stream}/fragments.jsonl" and p.kind == "contradicts-checkpoint"
                       for p in report.problems), report.problems
    assert cli.main(["verify", str(s)]) == 1


def test_edited_details_of_an_interrupted_session_are_never_signed_by_repair(tmp_path, device_key_file):
    s = make_session(tmp_path, interrupted=True)
    m = read_manifest(s)
    m["details"]["candidate"] = "Someone Else"
    write_manifest(s, m)
    with pytest.raises(RepairRefused, match="details differ from the opening record"):
        repair_session(s)
    report = verify_session(s)
    assert "contradicts-checkpoint" in kinds(report)


def test_fragments_cut_below_the_last_checkpoint_show_after_repair(tmp_path, device_key_file):
    """An interrupted session whose last fragments were cut (log and file both) before repair:
    repair signs what is left, and verify names the loss below the signed heads."""
    s = make_session(tmp_path, interrupted=True)
    log = s / "cabin" / "fragments.jsonl"
    lines = log.read_bytes().split(b"\n")[:-1]
    last = json.loads(lines[-1])
    log.write_bytes(b"".join(x + b"\n" for x in lines[:-1]))
    with open(s / last["file"], "r+b") as f:
        f.truncate(last["offset"])
    repair_session(s)
    report = verify_session(s)
    assert [p.file for p in report.problems if p.kind == "contradicts-checkpoint"] == ["cabin/fragments.jsonl"]
    assert "vouches for" in next(p.detail for p in report.problems if p.kind == "contradicts-checkpoint")


def test_a_session_killed_and_repaired_verifies_untouched_up_to_its_checkpoint(tmp_path, device_key_file):
    s = make_session(tmp_path, interrupted=True)
    (s / ".reserve").write_bytes(b"\0" * 4096)           # what a killed recorder leaves
    assert verify_session(s).untouched
    repair_session(s)
    assert not (s / ".reserve").exists()
    report = verify_session(s)
    assert report.untouched and kinds(report) == {"interrupted"}, report.problems
    assert report.checkpoint["type"] == "heads" and report.checkpoint["events"]["lines"] > 0
    assert read_manifest(s)["repaired"]["checkpoint"]["seq"] == report.checkpoint["seq"]


def test_a_reserve_file_with_content_is_extra(tmp_path):
    s = make_session(tmp_path, interrupted=True)
    (s / ".reserve").write_bytes(b"\0" * 100 + b"smuggled")
    assert [(p.file, p.kind) for p in verify_session(s).problems if p.kind != "interrupted"] == [(".reserve", "extra-file")]


def test_an_edited_checkpoint_is_bad_and_the_earlier_ones_still_count(tmp_path):
    s = make_session(tmp_path)
    path = s / CHECKPOINTS_NAME
    lines = path.read_bytes().split(b"\n")[:-1]
    rec = json.loads(lines[1])
    rec["events"]["lines"] -= 1
    lines[1] = json.dumps(rec).encode()
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    report = verify_session(s)
    assert "bad-checkpoint" in kinds(report)
    assert any("line 2 (heads) is not signed" in p.detail for p in report.problems)


# --- 2. an unregistered key --------------------------------------------------------------------

def _resign_everything(session: Path, key: Ed25519PrivateKey) -> None:
    """The insider's best: change the details and re-sign the manifest and every checkpoint
    with a fresh key of their own."""
    from sessions.evidence.signing import public_key_hex
    path = session / CHECKPOINTS_NAME
    out, prev = [], GENESIS
    for raw in path.read_bytes().split(b"\n")[:-1]:
        rec = json.loads(raw)
        rec["prev_sha256"] = prev
        if rec["type"] == "open":
            rec["details"]["candidate"] = "Someone Else"
            rec["public_key"] = public_key_hex(key)
        rec.pop("signature")
        if rec["type"] == "finish":
            continue
        rec["signature"] = key.sign(signed_bytes(rec)).hex()
        line = json.dumps(rec, ensure_ascii=False).encode()
        out.append(line)
        prev = line_hash(line)
    path.write_bytes(b"".join(x + b"\n" for x in out))
    m = read_manifest(session)
    m["details"]["candidate"] = "Someone Else"
    write_manifest(session, sign_manifest(m, key))


def test_a_session_resigned_with_a_fresh_key_is_signed_by_an_unregistered_key(tmp_path, capsys):
    s = make_session(tmp_path)
    fresh = Ed25519PrivateKey.generate()
    _resign_everything(s, fresh)
    report = verify_session(s)
    assert report.ok                                      # self-consistent: only trust can tell
    assert cli.main(["verify", str(s)]) == 1
    out = capsys.readouterr().out
    assert f"signed by an unregistered key {fingerprint(fresh)}" in out
    # A public key shipped beside it proves nothing either: --public-key is a choice of the reader.
    pem = tmp_path / "fresh.pem"
    pem.write_text(public_key_pem(fresh))
    assert cli.main(["verify", "--public-key", str(pem), str(s)]) == 0
    capsys.readouterr()
    assert cli.main(["verify", "--json", str(s)]) == 1
    assert json.loads(capsys.readouterr().out)["trusted"] is False


def test_registering_a_key_makes_its_sessions_trusted(tmp_path, capsys):
    key = Ed25519PrivateKey.generate()
    s = make_session(tmp_path, key=key)
    store = tmp_path / "trusted-keys"
    assert cli.main(["verify", "--trusted-keys", str(store), str(s)]) == 1
    pem = tmp_path / "car7.pem"
    pem.write_text(public_key_pem(key))
    assert cli.main(["key", "--register", str(pem), "--trusted-keys", str(store)]) == 2   # needs --name
    assert cli.main(["key", "--register", str(pem), "--name", "INV-0042 car 7", "--trusted-keys", str(store)]) == 0
    capsys.readouterr()
    assert cli.main(["verify", "--trusted-keys", str(store), str(s)]) == 0
    assert "registered as INV-0042 car 7" in capsys.readouterr().out
    assert keystore.load(store)[key.public_key().public_bytes_raw().hex()].name == "INV-0042 car 7"


# --- 4. symbolic links ------------------------------------------------------------------------

def test_repair_and_verify_refuse_a_segment_that_is_a_link(tmp_path, capsys):
    s = make_session(tmp_path / "rec", interrupted=True)
    outside = tmp_path / "precious.bin"
    outside.write_bytes(b"x" * 100_000)
    seg = s / "cabin" / "0002.mp4"
    seg.unlink()
    seg.symlink_to(outside)
    assert cli.main(["repair", str(s)]) == 3
    err = capsys.readouterr().err
    assert str(seg) in err and "symbolic link" in err
    assert outside.read_bytes() == b"x" * 100_000              # never truncated
    assert cli.main(["verify", str(s)]) == 3
    assert str(seg) in capsys.readouterr().err


def test_repair_and_verify_refuse_a_session_folder_that_is_a_link(tmp_path, capsys):
    s = make_session(tmp_path / "elsewhere", interrupted=True)
    day = tmp_path / "out" / s.parent.name
    day.mkdir(parents=True)
    link = day / s.name
    link.symlink_to(s)
    assert cli.main(["repair", str(link)]) == 3
    assert cli.main(["verify", str(link)]) == 3
    assert f"{link}: a symbolic link" in capsys.readouterr().err
    assert read_manifest(s)["state"] == "interrupted" and "repaired" not in read_manifest(s)


def test_upload_refuses_a_linked_session_folder_and_keeps_its_target(file_archive, tmp_path):
    a = file_archive
    target = make_session(tmp_path / "elsewhere")
    day = Path(a.out) / target.parent.name
    day.mkdir(parents=True, exist_ok=True)
    link = day / target.name
    link.symlink_to(target)
    r = a.cli("upload", "--out", a.out, user="car7")
    assert r.rc == 3, r.out + r.err
    assert "symbolic link" in r.out + r.err
    assert (target / "manifest.json").exists()                   # the target outside is untouched
    r = a.cli("upload", str(link), "--out", a.out, user="car7")
    assert r.rc == 3 and "symbolic link" in r.err


# --- 5. profile names ----------------------------------------------------------------------------

def test_a_profile_name_cannot_escape_the_output_folder(tmp_path):
    text = (ROOT / "hw-profiles" / "replay.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('name = "replay"', 'name = "../../../../tmp/x"', 1))
    assert 'name = "../../../../tmp/x"' in bad.read_text()
    with pytest.raises(ProfileError, match="not a valid name"):
        load_profile(bad)


# --- 6. RFC 8785 --------------------------------------------------------------------------------

def test_jcs_sorts_by_utf16_code_units_and_writes_numbers_as_ecmascript():
    # RFC 8785 section 3.2.3's sorting example and appendix B's numbers.
    obj = {"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
           "1": "One", "\U0001F600": "Emoji: Grinning Face", "\u0080": "Control",
           "\u00f6": "Latin Small Letter O With Diaeresis"}
    keys = [k for k in json.loads(jcs.canonicalize(obj))]
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001F600", "\ufb33"]
    for value, text in [(0.0, "0"), (-0.0, "0"), (1e30, "1e+30"), (4.5, "4.5"), (0.002, "0.002"),
                        (1e-7, "1e-7"), (333333333.3333333, "333333333.3333333"), (1e21, "1e+21"),
                        (1e20, "100000000000000000000"), (5.0, "5"), (-1.5e-10, "-1.5e-10"),
                        (9007199254740991, "9007199254740991"), (0.000001, "0.000001")]:
        assert jcs.canonicalize(value).decode() == text, value
    assert jcs.canonicalize({"b": [True, None, "é\n\u001f"], "a": 1}) == '{"a":1,"b":[true,null,"é\\n\\u001f"]}'.encode()
    with pytest.raises(jcs.NotCanonicalisable):
        jcs.canonicalize(2 ** 60)


def test_a_court_checks_the_signature_with_openssl_alone(tmp_path):
    """The signed bytes are JCS: any JCS tool rebuilds them; openssl checks the Ed25519 signature."""
    s = make_session(tmp_path)
    m = read_manifest(s)
    body = tmp_path / "body.json"
    body.write_bytes(signed_body(m))
    sig = tmp_path / "sig.bin"
    sig.write_bytes(bytes.fromhex(m["signature"]["value"]))
    pub = tmp_path / "pub.pem"
    pub.write_text(public_key_pem(m["signature"]["public_key"]))
    r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", body,
                        "-sigfile", sig], capture_output=True, text=True)
    assert r.returncode == 0 and "Signature Verified Successfully" in r.stdout, r.stdout + r.stderr
    body.write_bytes(signed_body(m).replace(b"finished", b"interrupted"))
    r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", body,
                        "-sigfile", sig], capture_output=True, text=True)
    assert r.returncode != 0


def test_verify_still_reads_format_1(tmp_path):
    s = make_session(tmp_path)
    (s / CHECKPOINTS_NAME).unlink()
    m = read_manifest(s)
    m.pop("signature")
    m["format"] = FORMAT_V1
    m["clock"] = {k: int(v) if k.endswith("_ns") else v for k, v in m["clock"].items()}
    signed = sign_manifest(m, factory_key())
    write_manifest(s, signed)
    assert factory_key().public_key().verify(bytes.fromhex(signed["signature"]["value"]),
                                             canonical_json({k: v for k, v in signed.items() if k != "signature"})) is None
    report = verify_session(s)
    assert report.ok, report.problems


# --- 3. journals written with a recorder's S3 keys ---------------------------------------------

def _next_access_entry(a, record: dict, key: Ed25519PrivateKey | None) -> tuple[str, bytes]:
    """The next numbered access entry, correctly chained, as anyone with write access under
    journals/ could PUT it (a recorder's keys no longer can)."""
    from sessions.archive.journals import entry_signed_bytes
    from sessions.evidence.signing import public_key_hex
    lines = a.backend("officer").journal_read("access")
    last = lines[-1]
    n = last.entry + 1
    rec = {"entry": n, **record, "prev_sha256": line_hash(last.data.rstrip(b"\n"))}
    if key is not None:
        rec["signer"] = public_key_hex(key)
        rec["signature"] = key.sign(entry_signed_bytes(rec)).hex()
    return f"journals/access/{n:010d}.json", json.dumps(rec, separators=(",", ":")).encode() + b"\n"


def _denied(call, **kw) -> str:
    from botocore.exceptions import ClientError
    with pytest.raises(ClientError) as exc:
        call(**kw)
    return exc.value.response["Error"]["Code"]


def test_a_recorders_s3_keys_write_only_its_own_uploads_and_the_office_journals_them(s3_archive, tmp_path):
    """With only the recorder's credentials (as on a recorder): no password, no settings read, no
    journal write, no other recorder's inbox; the upload still works and its receipt reaches the
    uploads journal, signed by the office, at the officer's next command."""
    a = s3_archive
    s = a.session()
    conn = a.server.connection_file(tmp_path / "recorder.toml", roles=("recorder",))
    r = a.cli("upload", "--out", a.out, "--json", user="car7",
              env={"EXAMREC_ARCHIVE_CONFIG": str(conn), "EXAMREC_PASSWORD": None})
    assert r.rc == 0, r.out + r.err
    (res,) = r.json()["results"]
    assert res["status"] == "uploaded" and res["local_deleted"] and res["journal_entry"] is None
    assert not s.exists()

    rec, rec2, bucket = a.server.client("recorder"), a.server.client("recorder2"), a.bucket
    assert _denied(rec.get_object, Bucket=bucket, Key="examrec/config.json") == "AccessDenied"
    for key in ("journals/uploads/0000000001.json", "journals/access/0000000099.json", "journals/access/zz",
                "journals/holds/0000000001.json"):
        assert _denied(rec.put_object, Bucket=bucket, Key=key, Body=b"{}") == "AccessDenied", key
    assert _denied(rec.put_object, Bucket=bucket, Key="inbox/examrec-recorder-2/uploads/x.json",
                   Body=b"{}") == "AccessDenied"
    assert _denied(rec2.put_object, Bucket=bucket, Key="inbox/examrec-recorder/uploads/x.json",
                   Body=b"{}") == "AccessDenied"
    assert _denied(rec.list_objects_v2, Bucket=bucket, Prefix="inbox/") == "AccessDenied"

    admin = a.server.client("admin")
    waiting = sorted(o["Key"] for o in admin.list_objects_v2(Bucket=bucket, Prefix="inbox/").get("Contents", []))
    assert [k.split("/")[2] for k in waiting] == ["access", "uploads", "uploads"], waiting
    assert all(k.startswith("inbox/examrec-recorder/") for k in waiting)
    assert not [jl for jl in a.backend("officer").journal_read("uploads")]       # nothing journaled yet

    found = a.cli("archive", "find", "--json")                                  # the officer's next command
    assert found.rc == 0, found.err
    assert [x["session_id"] for x in found.json()] == [s.name]
    assert not admin.list_objects_v2(Bucket=bucket, Prefix="inbox/").get("KeyCount")
    lines = a.backend("officer").journal_read("uploads")
    entries = [json.loads(jl.data) for jl in lines]
    assert [e["type"] for e in entries] == ["upload", "device-deleted"]
    up = entries[0]
    assert up["user"] == "car7" and up["role"] == "recorder" and up["ingested_by"] == "olena"
    assert up["session_id"] == s.name and up["recorded"]["session_id"] == s.name
    assert up["recorded"]["signature"] != up["signature"]                      # the recorder's and the office's
    listing = a.cli("archive", "journal", "list", "uploads")
    assert listing.rc == 0 and "FORGED" not in listing.out, listing.out + listing.err
    access = a.cli("archive", "journal", "list", "access", "--json")
    assert any(e.get("user") == "car7" and e.get("command") == "upload" for e in access.json()["entries"]), access.out

    # A second officer command finds nothing more to ingest: no entry twice.
    assert a.cli("archive", "find").rc == 0
    assert len(a.backend("officer").journal_read("uploads")) == 2


def test_an_inbox_entry_no_recorder_signed_is_refused_or_shown_forged(s3_archive, tmp_path, caplog):
    """The recorder's keys can leave anything in its own inbox. An entry changed after signing, or
    for a journal a recorder may not write, is never ingested and is named at every command; one
    signed by a key no recorder registered is journaled and marked FORGED, never shown as genuine."""
    from sessions.archive.journals import entry_signed_bytes
    from sessions.evidence.signing import public_key_hex
    a = s3_archive
    assert a.cli("archive", "find").rc == 0
    fresh = Ed25519PrivateKey.generate()

    def signed(**over) -> bytes:
        rec = {"journal": "uploads", "type": "upload", "t_utc": "2026-12-01T10:00:00Z", "user": "car7",
               "role": "recorder", "host": "x", "session_id": "20261201T100000Z-replay-ffffff",
               "signer": public_key_hex(fresh), **over}
        rec["signature"] = fresh.sign(entry_signed_bytes(rec)).hex()
        return json.dumps(rec).encode()

    changed = json.loads(signed())
    changed["session_id"] = "20261201T100000Z-replay-eeeeee"
    client = a.server.client("recorder")
    for name, body in (("uploads/fresh-key.json", signed()), ("uploads/changed.json", json.dumps(changed).encode()),
                       ("holds/x.json", signed(journal="holds"))):
        client.put_object(Bucket=a.bucket, Key=f"inbox/examrec-recorder/{name}", Body=body)
    with caplog.at_level("WARNING"):                        # the CLI's warnings (stderr when run alone)
        r = a.cli("archive", "find")
    assert r.rc == 0 and "Traceback" not in r.err
    assert "inbox/examrec-recorder/uploads/changed.json: not ingested: FORGED: its signature does not match" \
        in caplog.text
    assert "inbox/examrec-recorder/holds/x.json: not ingested: names journal 'holds'" in caplog.text
    left = {o["Key"] for o in a.server.client("admin").list_objects_v2(Bucket=a.bucket, Prefix="inbox/")["Contents"]}
    assert left == {"inbox/examrec-recorder/uploads/changed.json", "inbox/examrec-recorder/holds/x.json"}
    listing = a.cli("archive", "journal", "list", "uploads")
    assert listing.rc == 1, listing.out + listing.err
    (forged,) = [line for line in listing.out.splitlines() if "[FORGED:" in line]
    assert "20261201T100000Z-replay-ffffff" in forged
    assert "the recorder's record it carries: signed by an unregistered key" in forged


def test_a_malformed_journal_object_is_reported_never_a_traceback(s3_archive):
    from datetime import datetime, timedelta, timezone
    a = s3_archive
    a.session()
    assert a.cli("upload", "--out", a.out, user="car7").rc == 0
    # The recorder's keys are refused; the bucket's administrator can still put such an object.
    assert _denied(a.server.client("recorder").put_object, Bucket=a.bucket, Key="journals/access/zz",
                   Body=b"x") == "AccessDenied"
    a.server.client("admin").put_object(Bucket=a.bucket, Key="journals/access/zz", Body=b"x",
                                        ObjectLockMode="COMPLIANCE",
                                        ObjectLockRetainUntilDate=datetime.now(timezone.utc) + timedelta(days=3650))
    r = a.cli("archive", "find")                       # every command still appends its access entry
    assert r.rc == 0, r.err
    assert "Traceback" not in r.err
    r = a.cli("archive", "journal", "list", "access")
    assert r.rc == 1 and "Traceback" not in r.err
    assert "BROKEN: journal access: journals/access/zz is not a journal entry" in r.out


@pytest.mark.parametrize("signed_by", ["nobody", "a fresh key", "a recorder's registered key"])
def test_an_entry_put_with_the_recorders_keys_in_an_officers_name_shows_forged(s3_archive, tmp_path, signed_by):
    a = s3_archive
    assert a.cli("archive", "find").rc == 0
    recorder_key = Ed25519PrivateKey.generate()
    store = tmp_path / "trusted-keys"
    store.write_text(Path(os.environ[keystore.ENV_TRUSTED]).read_text())
    keystore.register(recorder_key, "INV-REC-01 car 7", store, kinds=("recorder",))
    key = {"nobody": None, "a fresh key": Ed25519PrivateKey.generate(),
           "a recorder's registered key": recorder_key}[signed_by]
    k, body = _next_access_entry(a, {"type": "access", "t_utc": "2026-12-01T10:00:00.000000Z", "user": "olena",
                                     "role": "officer", "host": "office-pc", "command": "archive release",
                                     "target": "all", "result": "ok", "detail": ""}, key)
    assert _denied(a.server.client("recorder").put_object, Bucket=a.bucket, Key=k, Body=body) == "AccessDenied"
    a.server.client("admin").put_object(Bucket=a.bucket, Key=k, Body=body)   # whoever else can write there
    r = a.cli("archive", "journal", "list", "access", env={keystore.ENV_TRUSTED: str(store)})
    assert r.rc == 1, r.out + r.err
    forged = [line for line in r.out.splitlines() if "[FORGED:" in line]
    assert len(forged) == 1 and "archive release" in forged[0]
    why = {"nobody": "not signed by any key", "a fresh key": "signed by an unregistered key",
           "a recorder's registered key": "not for role officer"}[signed_by]
    assert why in forged[0]
    # The genuine entries around it are not marked, and later appends chain after it.
    assert all("[FORGED" not in line for line in r.out.splitlines() if line != forged[0])


def test_a_copy_kit_carries_the_offices_countersignature(file_archive, tmp_path):
    """A replaced public key and SHA256SUMS pass `sha256sum -c`; the office's countersignature,
    checked with openssl against the fingerprint of the order's paperwork, does not."""
    from datetime import datetime, timezone
    from sessions.evidence.signing import fingerprint, load_or_create_key
    a = file_archive
    s = a.session()
    assert a.cli("upload", "--out", a.out, user="car7").rc == 0
    kit = tmp_path / "usb"
    r = a.cli("archive", "copy", s.name, "--to", kit, "--applicant", "A", "--id-document", "ID",
              "--requested", datetime.now(timezone.utc).date().isoformat())
    assert r.rc == 0, r.err
    office_fp = fingerprint(load_or_create_key(os.environ["EXAMREC_KEY"]))
    readme = (kit / "README.txt").read_text()
    assert office_fp in readme and "DO NOT TRUST public-key.pem" in readme

    def openssl_ok() -> bool:
        return subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", kit / "office-key.pem", "-rawin",
                               "-in", kit / "COUNTERSIGNED.json", "-sigfile", kit / "COUNTERSIGNED.sig"],
                              capture_output=True).returncode == 0

    import hashlib
    assert openssl_ok()
    assert json.loads((kit / "COUNTERSIGNED.json").read_bytes())["sha256sums"] == \
        hashlib.sha256((kit / "SHA256SUMS").read_bytes()).hexdigest()
    # The reader's attack: edit the manifest, re-sign it with a key of their own, ship its key and new sums.
    fresh = Ed25519PrivateKey.generate()
    m = read_manifest(kit / s.name)
    m.pop("signature")
    m["details"]["candidate"] = "Someone Else"
    write_manifest(kit / s.name, sign_manifest(m, fresh))
    (kit / "public-key.pem").write_text(public_key_pem(fresh))
    sums = [line.split("  ", 1) for line in (kit / "SHA256SUMS").read_text().splitlines()]
    (kit / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256((kit / f).read_bytes()).hexdigest()}  {f}\n" for _h, f in sums))
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=kit).returncode == 0
    assert json.loads((kit / "COUNTERSIGNED.json").read_bytes())["sha256sums"] != \
        hashlib.sha256((kit / "SHA256SUMS").read_bytes()).hexdigest()          # the countersignature tells
    # And re-signing the countersignature needs a key whose fingerprint is not the office's.
    assert fingerprint(fresh) != office_fp


def test_the_archive_check_names_a_session_signed_by_an_unregistered_key(file_archive):
    a = file_archive
    fresh = Ed25519PrivateKey.generate()
    a.session(key=fresh)
    assert a.cli("upload", "--out", a.out, user="car7").rc == 0
    r = a.cli("archive", "check", "--deep", user="boss")
    assert r.rc == 1, r.out + r.err
    assert f"signed by an unregistered key {fingerprint(fresh)}" in r.out + r.err
