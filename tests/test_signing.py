"""The device key, manifest signatures, `examrec key --export`, and the manifest primitives the
recorder shares with verify (canonical JSON, segment chain, atomic write)."""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from session_factory import factory_key, make_session
from sessions.cli import app as cli
from sessions.evidence import manifest, signing
from sessions.evidence.chain import GENESIS
from core.profile import load_profile
from sessions.evidence.layout import ManifestError, chain_segments, read_manifest, segment_entry, write_manifest
from sessions.evidence.manifest import canonical_json, segment_entry_hash, sha256_file
from sessions.evidence.signing import (KeyFileError, check_signature, default_key_path, fingerprint, load_or_create_key,
                              load_public_key, public_key_hex, public_key_pem, sign_manifest)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the device key ----------------------------------------------------------------------------

def test_key_created_0600_in_0700_folder_and_reused(tmp_path):
    path = tmp_path / "new" / "dir" / "device.key"
    key = load_or_create_key(path)
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert b"BEGIN PRIVATE KEY" in path.read_bytes()
    assert public_key_hex(load_or_create_key(path)) == public_key_hex(key)
    assert [p.name for p in path.parent.iterdir()] == ["device.key"]  # no temp file left behind


def test_key_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "device.key"
    load_or_create_key(path)
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(path)


def test_damaged_key_is_reported_not_replaced(tmp_path):
    path = tmp_path / "device.key"
    path.write_bytes(b"garbage")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_or_create_key(path)
    assert path.read_bytes() == b"garbage"


def test_default_key_path_order(tmp_path):
    writable = tmp_path / "var" / "examrec" / "device.key"
    blocked_parent = tmp_path / "a-file"
    blocked_parent.write_text("")
    blocked = blocked_parent / "examrec" / "device.key"  # its "folder" is a file: never writable
    user = tmp_path / "home" / "device.key"
    env = {"EXAMREC_KEY": str(tmp_path / "env.key")}
    assert default_key_path("/etc/examrec/k.key", environ=env, system_path=writable) == Path("/etc/examrec/k.key")
    assert default_key_path(None, environ=env, system_path=writable) == tmp_path / "env.key"
    assert default_key_path(None, environ={}, system_path=writable, user_path=user) == writable
    assert default_key_path(None, environ={}, system_path=blocked, user_path=user) == user


def test_profile_signing_key_is_relative_to_the_profile(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text('name = "t"\nkind = "replay"\nsigning_key = "keys/dev.key"\n'
                       '[[streams]]\nname = "cabin"\nsource = "pattern:"\nwidth = 160\nheight = 120\nfps = 15\n')
    assert signing.key_path_for(load_profile(profile)) == tmp_path / "keys" / "dev.key"


# --- signatures --------------------------------------------------------------------------------

def test_sign_and_check_round_trip_through_the_file(tmp_path):
    key = Ed25519PrivateKey.generate()
    m = {"format": "examrec-session/1", "session_id": "s", "streams": [], "pts": (1, 2.5),
         "details": {"candidate": "Олена Пчілка"}}
    signed = sign_manifest(m, key)
    assert signed["signature"]["public_key"] == public_key_hex(key)
    write_manifest(tmp_path, signed)
    back = read_manifest(tmp_path)
    ok, why = check_signature(back)
    assert ok and fingerprint(key) in why
    assert check_signature(back, expected_public_key=key.public_key())[0]


@pytest.mark.parametrize("change, why", [
    (lambda m: m["details"].update(candidate="X"), "changed after signing"),
    (lambda m: m.pop("signature"), "not signed"),
    (lambda m: m["signature"].update(algorithm="rsa"), "algorithm"),
    (lambda m: m["signature"].update(value="zz"), "hex"),
    (lambda m: m["signature"].update(public_key=public_key_hex(Ed25519PrivateKey.generate())), "changed after signing"),
])
def test_check_signature_failures(change, why):
    m = sign_manifest({"format": "examrec-session/1", "details": {"candidate": "A"}}, factory_key())
    change(m)
    ok, text = check_signature(m)
    assert not ok and why in text


def test_check_signature_expected_key_mismatch():
    m = sign_manifest({"a": 1}, factory_key())
    other = Ed25519PrivateKey.generate()
    ok, why = check_signature(m, expected_public_key=public_key_hex(other))
    assert not ok and fingerprint(other) in why and fingerprint(factory_key()) in why


def test_public_key_forms():
    key = factory_key()
    hexkey = public_key_hex(key)
    for text in (public_key_pem(key), hexkey, hexkey.upper(), ":".join(hexkey[i:i + 2] for i in range(0, 64, 2)),
                 "exported by examrec\n" + public_key_pem(key)):
        assert public_key_hex(load_public_key(text)) == hexkey
    for bad in ("", "abcd", "zz" * 32):
        with pytest.raises(ValueError):
            load_public_key(bad)
    fp = fingerprint(key)
    assert len(fp.split(":")) == 8 and all(len(g) == 4 for g in fp.split(":"))


# --- examrec key --export ---------------------------------------------------------------------

def test_key_export_creates_prints_and_writes(tmp_path, capsys):
    key_path = tmp_path / "k" / "device.key"
    out = tmp_path / "device.pub"
    assert cli.main(["key", "--export", "--key", str(key_path), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    key = load_or_create_key(key_path)
    assert "created a new device key" in printed.err
    assert public_key_pem(key) in printed.out
    assert f"public key (hex): {public_key_hex(key)}" in printed.out
    assert f"fingerprint: {fingerprint(key)}" in printed.out
    assert out.read_text() == public_key_pem(key)
    # The exported file is what `verify --public-key` takes.
    s = make_session(tmp_path / "rec", key=key, streams=("cabin",), segments=1)
    assert cli.main(["verify", "--public-key", str(out), str(s)]) == 0
    s2 = make_session(tmp_path / "rec2", streams=("cabin",), segments=1)  # signed by another device
    assert cli.main(["verify", "--public-key", str(out), str(s2)]) == 1


def test_key_uses_examrec_key_env(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EXAMREC_KEY", str(tmp_path / "env" / "device.key"))
    assert cli.main(["key"]) == 0
    assert "no device key" in capsys.readouterr().out
    assert not (tmp_path / "env" / "device.key").exists()  # showing never creates
    assert cli.main(["key", "--export"]) == 0
    key = load_or_create_key(tmp_path / "env" / "device.key")
    assert cli.main(["key"]) == 0
    assert fingerprint(key) in capsys.readouterr().out


def test_key_refuses_exposed_key_and_bad_args(tmp_path, capsys):
    path = tmp_path / "device.key"
    load_or_create_key(path)
    path.chmod(0o644)
    assert cli.main(["key", "--export", "--key", str(path)]) == 3
    assert "chmod 600" in capsys.readouterr().err
    assert cli.main(["key", "--out", str(tmp_path / "x.pub"), "--key", str(path)]) == 2


# --- manifest primitives ---------------------------------------------------------------------

def test_canonical_json_form():
    obj = {"b": 1, "a": [1.5, "Київ", None], "c": {"z": True, "y": 0}}
    assert canonical_json(obj) == '{"a":[1.5,"Київ",null],"b":1,"c":{"y":0,"z":true}}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_chain_segments_chains_entries():
    first = segment_entry("cabin/0001.mp4", first_pts_s=0.0, last_pts_s=2.9333333333, stage=1, sha256="a" * 64,
                          size=10, frames=45, closed=True)
    second = segment_entry("cabin/0002.mp4", first_pts_s=3.0, stage=1, audio_span=(3.0, 3.0))
    segs = [first, second]
    chain_segments(segs)
    assert first["prev_sha256"] == GENESIS
    assert second["prev_sha256"] == segment_entry_hash(first)
    assert segment_entry_hash(first) == manifest.sha256_hex(canonical_json(first))
    assert first["last_pts_s"] == 2.933333 and second["last_pts_s"] == 3.0 and not second["closed"]
    first["frames"] = 46   # a later change to an entry breaks the link to it until chained again
    assert second["prev_sha256"] != segment_entry_hash(first)
    chain_segments(segs)
    assert second["prev_sha256"] == segment_entry_hash(first)


def test_write_manifest_is_atomic_and_readable(tmp_path):
    m = {"format": "examrec-session/1", "session_id": "x", "details": {"candidate": "Іван"}}
    path = write_manifest(tmp_path, m)
    assert path == tmp_path / "manifest.json" and mode(path) == 0o644
    assert read_manifest(tmp_path) == m and read_manifest(path) == m
    assert "Іван" in path.read_text(encoding="utf-8")  # names stay readable
    write_manifest(tmp_path, {**m, "state": "finished"})
    assert read_manifest(tmp_path)["state"] == "finished"
    assert sorted(os.listdir(tmp_path)) == ["manifest.json"]
    with pytest.raises(ValueError):  # not JSON: refused before anything is written
        write_manifest(tmp_path, {**m, "bad": float("inf")})
    assert read_manifest(tmp_path)["state"] == "finished"


def test_read_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[]")
    with pytest.raises(ManifestError, match="not a JSON object"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other/2"}))
    with pytest.raises(ManifestError, match="format"):
        read_manifest(tmp_path)


def test_sha256_file_streams_large_files(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert sha256_file(tmp_path / "f", chunk_size=1000) == hashlib.sha256(data).hexdigest()
