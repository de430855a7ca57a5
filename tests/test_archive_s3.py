"""What only S3 can show: Object Lock against administrators, the role credentials of
hw-profiles/seaweedfs-iam.json, the bucket policy, the filer port's danger. Real SeaweedFS."""
from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from archive_harness import ArchiveUnderTest, run_cli, s3_archive  # noqa: F401 - fixtures
from sessions.archive.backend import RECEIPT_NAME
from sessions.archive.errors import Refused

UTC = timezone.utc


def prefix_of(session) -> str:
    return f"sessions/{session.parent.name}/{session.name}/"


def upload(a: ArchiveUnderTest, user: str = "car7") -> None:
    r = a.cli("upload", "--out", a.out, user=user)
    assert r.rc == 0, r.out + r.err


def denied(call, *args, **kw) -> str:
    with pytest.raises(ClientError) as exc:
        call(*args, **kw)
    return exc.value.response["Error"]["Code"]


def first_version(client, bucket: str, key: str) -> str:
    vs = [v for v in client.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []) if v["Key"] == key]
    return min(vs, key=lambda v: v["LastModified"])["VersionId"]


def test_nobody_deletes_or_shortens_before_retention_not_even_admin(s3_archive):
    a = s3_archive
    s = a.session()
    upload(a)
    admin, bucket = a.server.client("admin"), a.bucket
    key = prefix_of(s) + "manifest.json"
    vid = first_version(admin, bucket, key)
    original = admin.get_object(Bucket=bucket, Key=key, VersionId=vid)["Body"].read()
    assert denied(admin.delete_object, Bucket=bucket, Key=key, VersionId=vid) == "AccessDenied"
    assert denied(admin.delete_object, Bucket=bucket, Key=key, VersionId=vid,
                  BypassGovernanceRetention=True) == "AccessDenied"
    assert denied(admin.put_object_retention, Bucket=bucket, Key=key, VersionId=vid,
                  Retention={"Mode": "COMPLIANCE",
                             "RetainUntilDate": datetime.now(UTC) + timedelta(days=1)}) == "AccessDenied"
    assert denied(admin.delete_object, Bucket=bucket, Key=key) == "AccessDenied"     # no hiding marker either
    res = admin.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key, "VersionId": vid}]})
    assert not res.get("Deleted") and res.get("Errors")
    assert denied(admin.delete_bucket, Bucket=bucket) == "BucketNotEmpty"
    with pytest.raises(Refused, match="COMPLIANCE"):
        a.backend("officer").delete(key)

    # An "overwrite" only stacks a new version on top; the locked original stays and is what the
    # archive reads, copies and checks; the attempt is reported.
    admin.put_object(Bucket=bucket, Key=key, Body=b'{"forged": true}')
    assert a.backend().read_bytes(key) == original
    r = a.cli("archive", "check", "--json")
    assert r.rc == 1
    (res,) = r.json()
    assert any("later version" in p and key in p for p in res["problems"]), res
    copy = a.cli("archive", "copy", s.name, "--to", a.base / "usb", "--applicant", "A", "--id-document", "ID",
                 "--requested", datetime.now(UTC).date().isoformat())
    assert copy.rc == 0, copy.err
    assert (a.base / "usb" / s.name / "manifest.json").read_bytes() == original


def test_recorder_credentials_put_but_cannot_read_list_or_delete(s3_archive):
    a = s3_archive
    own = a.session()
    upload(a)                                      # as car7, with the recorder credentials
    rec, bucket = a.server.client("recorder"), a.bucket
    key = prefix_of(own) + "manifest.json"
    fresh = f"sessions/2026-01-01/20260101T000000Z-replay-aaaaaa/cabin/0001.mp4"
    rec.put_object(Bucket=bucket, Key=fresh, Body=b"new segment")                 # may put
    assert denied(rec.get_object, Bucket=bucket, Key="examrec/config.json") == "AccessDenied"  # no password hashes
    assert denied(rec.get_object, Bucket=bucket, Key=key) == "AccessDenied"        # not a recording
    assert denied(rec.head_object, Bucket=bucket, Key=key) in ("403", "AccessDenied")
    assert denied(rec.list_objects_v2, Bucket=bucket, Prefix="sessions/") == "AccessDenied"
    assert denied(rec.list_objects_v2, Bucket=bucket) == "AccessDenied"
    assert denied(rec.list_object_versions, Bucket=bucket, Prefix="sessions/") == "AccessDenied"
    vid = first_version(a.server.client("admin"), bucket, fresh)
    assert denied(rec.delete_object, Bucket=bucket, Key=fresh, VersionId=vid) == "AccessDenied"  # not even its own
    assert denied(rec.delete_object, Bucket=bucket, Key=fresh) == "AccessDenied"
    assert denied(rec.delete_object, Bucket=bucket, Key=key) == "AccessDenied"
    assert denied(rec.put_object_legal_hold, Bucket=bucket, Key=key, LegalHold={"Status": "OFF"}) == "AccessDenied"
    assert denied(rec.put_object, Bucket=bucket, Key="journals/deletions/0000000001.json", Body=b"{}") == "AccessDenied"
    assert denied(rec.put_object, Bucket=bucket, Key="examrec/config.json", Body=b"{}") == "AccessDenied"

    head = a.server.client("head")
    assert head.get_object(Bucket=bucket, Key=key)["Body"].read()                 # the head reads
    assert head.list_objects_v2(Bucket=bucket, Prefix="sessions/")["KeyCount"] > 0
    assert denied(head.put_object, Bucket=bucket, Key=prefix_of(own) + "x", Body=b"x") == "AccessDenied"
    assert denied(head.delete_object, Bucket=bucket, Key=fresh, VersionId=vid) == "AccessDenied"
    assert denied(head.put_object_legal_hold, Bucket=bucket, Key=key, LegalHold={"Status": "ON"}) == "AccessDenied"

    # Through examrec the same roles: the recorder user is refused before the storage is asked.
    assert a.cli("archive", "find", user="car7").rc == 3
    assert a.cli("archive", "copy", own.name, "--to", a.base / "x", "--applicant", "A", "--id-document", "I",
                 "--requested", datetime.now(UTC).date().isoformat(), user="boss").rc == 3


def test_the_filer_port_bypasses_object_lock_and_check_names_the_loss(s3_archive):
    """Why the deployment must never publish the filer port: it deletes a locked version.
    The archive cannot prevent that, but `archive check` finds it."""
    a = s3_archive
    s = a.session()
    upload(a)
    path = f"/buckets/{a.bucket}/{prefix_of(s)}route.gpx.versions/"
    req = urllib.request.Request(a.server.filer_url + path, headers={"Accept": "application/json"})
    entries = json.load(urllib.request.urlopen(req))["Entries"]
    victim = entries[0]["FullPath"]
    urllib.request.urlopen(urllib.request.Request(a.server.filer_url + victim, method="DELETE"))
    r = a.cli("archive", "check", "--json", user="boss")
    assert r.rc == 1
    (res,) = r.json()
    assert res["problems"] == [f"{prefix_of(s)}route.gpx: missing from the storage"]


def test_init_refuses_a_bucket_without_object_lock(seaweed, tmp_path):
    bucket = seaweed.new_bucket()
    seaweed.client("admin").create_bucket(Bucket=bucket)            # versioning off, no Object Lock
    env = {"EXAMREC_ARCHIVE_CONFIG": str(seaweed.connection_file(tmp_path / "a.toml")),
           "EXAMREC_NEW_PASSWORD": "officer-pass-1", "EXAMREC_CACHE_DIR": str(tmp_path / "c")}
    r = run_cli(["archive", "init", "--archive", f"s3://{bucket}", "--officer-login", "olena",
                 "--officer-name", "Марія Бондар", "--password-cost", "14"], env)
    assert r.rc == 3
    assert "without Object Lock" in r.err and "new bucket" in r.err


def test_an_unreachable_archive_exits_6_and_keeps_the_session(s3_archive, tmp_path):
    a = s3_archive
    s = a.session()
    conf = tmp_path / "down.toml"
    conf.write_text(a.server.connection_file(tmp_path / "up.toml").read_text()
                    .replace(a.server.endpoint, "http://127.0.0.1:9"))       # the discard port: nothing listens
    conf.chmod(0o600)  # it holds secrets
    r = a.cli("upload", "--out", a.out, user="car7", env={"EXAMREC_ARCHIVE_CONFIG": str(conf)})
    assert r.rc == 6, r.err
    assert "unreachable" in r.err
    assert s.exists()


def test_legal_hold_is_set_on_every_object_in_the_storage(s3_archive):
    a = s3_archive
    s = a.session(started=datetime(2020, 2, 3, 9, 0, tzinfo=UTC))        # expired: only the hold protects it
    upload(a)
    assert a.cli("archive", "hold", s.name, "--complaint", "C-5").rc == 0
    admin = a.server.client("admin")
    keys = [o.key for o in a.backend().list_objects(prefix_of(s))]
    assert prefix_of(s) + RECEIPT_NAME in keys
    for key in keys:
        vid = first_version(admin, a.bucket, key)
        assert admin.get_object_legal_hold(Bucket=a.bucket, Key=key, VersionId=vid)["LegalHold"]["Status"] == "ON"
        assert denied(admin.delete_object, Bucket=a.bucket, Key=key, VersionId=vid) == "AccessDenied"
    assert a.cli("archive", "release", s.name, "--decision", "D-5").rc == 0
    vid = first_version(admin, a.bucket, keys[0])
    assert admin.get_object_legal_hold(Bucket=a.bucket, Key=keys[0], VersionId=vid)["LegalHold"]["Status"] == "OFF"


def test_a_journal_entry_rewritten_through_the_filer_is_detected(s3_archive):
    """Journal entries read from the local cache are checked against the storage's listing, so a
    rewrite behind the S3 API (the filer port) still shows."""
    a = s3_archive
    for inv in ("INV-1", "INV-2", "INV-3"):
        assert a.cli("equipment", "issue", inv, "--person", "P").rc == 0
    assert a.cli("archive", "journal", "list", "devices").rc == 0         # fills the cache
    folder = f"/buckets/{a.bucket}/journals/devices/0000000002.json.versions/"
    req = urllib.request.Request(a.server.filer_url + folder, headers={"Accept": "application/json"})
    victim = json.load(urllib.request.urlopen(req))["Entries"][0]["FullPath"]
    old = urllib.request.urlopen(a.server.filer_url + victim).read()
    urllib.request.urlopen(urllib.request.Request(a.server.filer_url + victim, method="PUT",
                                                  data=old.replace(b"INV-2", b"INV-9")))
    r = a.cli("archive", "journal", "list", "devices")
    assert r.rc == 1
    assert "BROKEN: journal devices: entry 2" in r.out
