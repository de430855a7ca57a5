"""The S3 backend: ``s3://bucket`` on any S3-compatible store with Object Lock (boto3).

Every object of a session is written with Object Lock in COMPLIANCE mode until the end of its
retention, so the storage refuses deletion and retention shortening to everybody, administrators
included; a complaint sets S3 legal hold on every object. Writes are create-only
(``If-None-Match: *``) and carry the SHA-256 the manifest promises (``x-amz-checksum-sha256``):
the server stores the bytes only if they hash to it, so a corrupted transfer stores nothing.

Versioning is on (Object Lock requires it). An overwrite or a delete without a version id does not
destroy the locked version, it adds a newer version or a delete marker on top. This backend
always reads the *first* version of a key, the one that was locked at upload, and reports any
later version or marker as an attempt to replace or hide it. ``archive init`` also installs a
bucket policy that denies delete markers under sessions/ and journals/ and denies deletions to
the recorder and head identities.

Journals are one object per entry, ``journals/<name>/<entry:010d>.json`` holding one chained line,
created with ``If-None-Match: *`` so two writers can never both take the same number.

SeaweedFS note (hw-profiles/seaweedfs-iam.json): its *filer* HTTP port writes and deletes behind
the S3 API and ignores Object Lock. Bind it to loopback and never publish it; only the S3 port may
be reachable from other machines.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from core import durable
from sessions.archive.backend import BodyFilter, JournalLine, PutResult, StoredObject
from sessions.archive.config import SETTINGS_KEY, ArchiveURL, ConnectionConfig
from sessions.archive.errors import (AlreadyExists, ArchiveError, AuthError, ChecksumMismatch, IntegrityError, NotInitialised,
                     Refused, Unreachable, UsageError)

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
CHECKSUM_ERRORS = {"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch", "XAmzContentSHA256Mismatch",
                   "InvalidChecksum"}
ENV_CACHE = "EXAMREC_CACHE_DIR"
JOURNAL_KEY_RE = re.compile(r"^\d{10}\.json$")
INBOX_PREFIX = "inbox/"


def b64_of_hex(hexdigest: str) -> str:
    return base64.b64encode(bytes.fromhex(hexdigest)).decode("ascii")


def hex_of_b64(text: str) -> str:
    return base64.b64decode(text).hex()


def bucket_policy(bucket: str, deny_delete_principals: list[str]) -> dict[str, Any]:
    """Deny delete markers (hiding a session or a journal entry) to everybody, and any deletion
    to the given principals (recorder and head identities). Object Lock stays the real guarantee;
    the policy closes the gaps Object Lock leaves open (markers, expired objects)."""
    statements: list[dict[str, Any]] = [{
        "Sid": "NoDeleteMarkers", "Effect": "Deny", "Principal": "*", "Action": ["s3:DeleteObject"],
        "Resource": [f"arn:aws:s3:::{bucket}/sessions/*", f"arn:aws:s3:::{bucket}/journals/*"],
    }]
    if deny_delete_principals:
        statements.append({
            "Sid": "OnlyOfficersDelete", "Effect": "Deny", "Principal": {"AWS": list(deny_delete_principals)},
            "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"], "Resource": [f"arn:aws:s3:::{bucket}/*"],
        })
    return {"Version": "2012-10-17", "Statement": statements}


_SESSIONS: dict[str, Any] = {}


def _shared_session(region: str) -> Any:
    """One boto3 session per region and process: it caches the parsed service models, which
    otherwise cost ~0.2 s for every client (a command opens two: to read the settings, then as the
    user's role). Credentials are given per client, so sharing it never mixes roles."""
    if region not in _SESSIONS:
        import boto3
        _SESSIONS[region] = boto3.session.Session(region_name=region)
    return _SESSIONS[region]



def _private_folder(folder: Path) -> None:
    """Make the cache folder 0700 (made so, or tightened when an older version made it 0755)."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if folder.stat().st_mode & 0o077:
            os.chmod(folder, 0o700)
    except OSError:
        pass  # an unwritable cache is reported where it is used

class S3Backend:
    """An archive in one bucket. ``role`` selects the S3 credentials from the connection file."""

    kind = "s3"

    def __init__(self, url: ArchiveURL, conn: ConnectionConfig, role: str | None = None):
        from botocore.config import Config
        assert url.scheme == "s3" and url.bucket
        self.url = url
        self.bucket = url.bucket
        self.role = role
        self.conn = conn
        creds = conn.credentials_for(role) if role else None
        if creds is None and role is None:
            # Before the user is known (reading the settings): any configured set will do.
            creds = next(iter(conn.credentials.values()), None)
        self.access_key_id = creds.access_key_id if creds else None
        self.endpoint = conn.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = conn.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.region = region
        session = _shared_session(region)
        self.client = session.client(
            "s3", endpoint_url=self.endpoint,
            aws_access_key_id=creds.access_key_id if creds else None,
            aws_secret_access_key=creds.secret_access_key if creds else None,
            config=Config(connect_timeout=3, read_timeout=120, retries={"max_attempts": 3, "mode": "standard"},
                          s3={"addressing_style": "path"},
                          # We always send our own SHA-256; no extra CRC32 the server must also check.
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))
        self._tails: dict[str, tuple[int, str]] = {}
        self._malformed: dict[str, list[str]] = {}
        # The catalog is a local cache of this bucket's index ($EXAMREC_CACHE_DIR or XDG cache).
        base = os.environ.get(ENV_CACHE) or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "examrec")
        tag = hashlib.sha256(f"{self.endpoint}|{self.bucket}".encode()).hexdigest()[:10]
        self._catalog_path = Path(base) / f"catalog-{self.bucket}-{tag}.sqlite"
        # Journal entries never change once stored: a local copy of each (checked against the
        # listed MD5 ETag on every read) spares one GET per entry per listing.
        self._journal_cache = Path(base) / f"journals-{self.bucket}-{tag}"
        _private_folder(Path(base))  # the cache holds candidates' names: the user's alone

    # --- error mapping ---------------------------------------------------------------------------

    def _wrap(self, exc: Exception, what: str) -> ArchiveError:
        from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError
        from botocore.exceptions import ConnectionError as BotoConnectionError
        where = f"archive {self.url}" + (f" at {self.endpoint}" if self.endpoint else "")
        # Every transport failure: refused, not resolvable, timed out, cut in the middle of a transfer.
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            return Unreachable(f"{where} is unreachable ({what}): {exc}")
        if isinstance(exc, NoCredentialsError):
            return UsageError(f"no S3 credentials for role {self.role or '(any)'}: add [s3.credentials.{self.role or 'officer'}] "
                              "to the connection file (--archive-config) or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            msg = err.get("Message") or code
            if code in ("NoSuchBucket",):
                return NotInitialised(f"{where}: bucket {self.bucket!r} does not exist; "
                                      f"run: examrec archive init --archive {self.url}")
            if code in ("PreconditionFailed",) or status == 412:
                return AlreadyExists(f"{what}: already stored")
            if code in CHECKSUM_ERRORS:
                return ChecksumMismatch(f"{what}: the storage received bytes that do not match the SHA-256 they were "
                                        f"sent with ({code}); nothing was stored")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return AuthError(f"{where}: the S3 credentials for role {self.role} were rejected ({code}); "
                                 "check the connection file")
            if code in ("AccessDenied", "403", "Forbidden") or status == 403:
                return Refused(f"{what}: the storage refused it (AccessDenied) for role {self.role}")
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return UsageError(f"{what}: not in {where}")
            return ArchiveError(f"{what}: {where} answered {code}: {msg}")
        return ArchiveError(f"{what}: {exc}")

    def _call(self, what: str, fn: Callable[..., Any], **kw: Any) -> Any:
        try:
            return fn(**kw)
        except Exception as exc:  # noqa: BLE001 - every boto error is mapped to an archive error
            from botocore.exceptions import BotoCoreError, ClientError
            if isinstance(exc, (BotoCoreError, ClientError)):
                raise self._wrap(exc, what) from exc
            raise

    # --- bucket and settings ---------------------------------------------------------------------

    def initialise(self, settings: dict, *, deny_delete_principals: list[str] | None = None) -> list[str]:
        from botocore.exceptions import ClientError
        warnings: list[str] = []
        try:
            self.client.head_bucket(Bucket=self.bucket)
            exists = True
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                exists = False
            else:
                raise self._wrap(exc, f"check bucket {self.bucket}") from exc
        except Exception as exc:  # noqa: BLE001
            raise self._wrap(exc, f"check bucket {self.bucket}") from exc
        if not exists:
            kw: dict[str, Any] = {"Bucket": self.bucket, "ObjectLockEnabledForBucket": True}
            if self.region and self.region != "us-east-1":
                kw["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            self._call(f"create bucket {self.bucket}", self.client.create_bucket, **kw)
        try:
            lock = self.client.get_object_lock_configuration(Bucket=self.bucket)
            enabled = lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"):
                raise self._wrap(exc, f"read Object Lock of {self.bucket}") from exc
            enabled = False
        if not enabled:
            raise Refused(f"bucket {self.bucket!r} exists without Object Lock: recordings in it could be deleted early. "
                          "Object Lock can only be switched on when a bucket is created: choose a new bucket name "
                          "(examrec archive init --archive s3://NEW-NAME)")
        ver = self._call("read versioning", self.client.get_bucket_versioning, Bucket=self.bucket)
        if ver.get("Status") != "Enabled":
            self._call("enable versioning", self.client.put_bucket_versioning, Bucket=self.bucket,
                       VersioningConfiguration={"Status": "Enabled"})
        try:
            self.client.put_bucket_policy(Bucket=self.bucket,
                                          Policy=json.dumps(bucket_policy(self.bucket, deny_delete_principals or [])))
        except Exception as exc:  # noqa: BLE001 - the policy is defence in depth; Object Lock is the rule
            warnings.append(f"bucket policy not installed ({exc}); Object Lock still refuses early deletion, "
                            "but delete markers are not denied")
        body = json.dumps(settings, ensure_ascii=False, indent=1).encode("utf-8")
        try:
            self._call("store settings", self.client.put_object, Bucket=self.bucket, Key=SETTINGS_KEY, Body=body,
                       IfNoneMatch="*", ChecksumSHA256=b64_of_hex(hashlib.sha256(body).hexdigest()))
        except AlreadyExists:
            raise Refused(f"archive {self.url} is already initialised ({SETTINGS_KEY} exists)") from None
        return warnings

    def read_settings(self) -> dict:
        from botocore.exceptions import ClientError
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=SETTINGS_KEY)
            return json.loads(resp["Body"].read())
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "NoSuchBucket", "404"):
                raise NotInitialised(f"archive {self.url} is not initialised (no {SETTINGS_KEY}); "
                                     f"run: examrec archive init --archive {self.url}") from None
            raise self._wrap(exc, "read the archive settings") from exc
        except ValueError as exc:
            raise IntegrityError(f"archive {self.url}: {SETTINGS_KEY} is not valid JSON: {exc}") from None
        except Exception as exc:  # noqa: BLE001
            raise self._wrap(exc, "read the archive settings") from exc

    def write_settings(self, settings: dict) -> None:
        body = json.dumps(settings, ensure_ascii=False, indent=1).encode("utf-8")
        # Versioned, not locked: settings change (users, holidays); every old version stays.
        self._call("store settings", self.client.put_object, Bucket=self.bucket, Key=SETTINGS_KEY, Body=body,
                   ChecksumSHA256=b64_of_hex(hashlib.sha256(body).hexdigest()))

    # --- versions --------------------------------------------------------------------------------

    def _iter_versions(self, prefix: str, key_marker: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """("version"|"marker", entry) for every version under ``prefix``, in S3's listing order."""
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if key_marker:
            kw["KeyMarker"] = key_marker
        while True:
            resp = self._call(f"list {prefix}", self.client.list_object_versions, **kw)
            # S3 lists the versions of a key newest first; that order is kept (LastModified has
            # only one-second resolution, so it cannot order versions written in the same second).
            yield from (("version", v) for v in resp.get("Versions", []))
            yield from (("marker", m) for m in resp.get("DeleteMarkers", []))
            if not resp.get("IsTruncated"):
                break
            kw["KeyMarker"] = resp.get("NextKeyMarker")
            kw["VersionIdMarker"] = resp.get("NextVersionIdMarker")

    def _group(self, prefix: str, key_marker: str | None = None) -> dict[str, StoredObject]:
        """Stored (first) version per key, with counts of later versions and markers."""
        versions: dict[str, list[dict[str, Any]]] = {}
        markers: dict[str, int] = {}
        for kind, item in self._iter_versions(prefix, key_marker):
            if kind == "version":
                versions.setdefault(item["Key"], []).append(item)
            else:
                markers[item["Key"]] = markers.get(item["Key"], 0) + 1
        out: dict[str, StoredObject] = {}
        for key, vs in versions.items():
            # The oldest: earliest LastModified; within one second, the last one listed.
            first = min(enumerate(vs), key=lambda iv: (iv[1]["LastModified"], -iv[0]))[1]
            out[key] = StoredObject(key=key, size=int(first.get("Size", 0)), version_id=first.get("VersionId"),
                                    later_versions=len(vs) - 1, delete_markers=markers.get(key, 0),
                                    last_modified=first.get("LastModified"),
                                    etag=str(first.get("ETag", "")).strip('"') or None)
        for key, n in markers.items():
            if key not in out:
                # Only markers and no version: the object is gone (deleted after its retention)
                # or was never there; report the markers so nothing is silently hidden.
                out[key] = StoredObject(key=key, size=0, version_id=None, delete_markers=n)
        return out

    def _stored_version(self, key: str) -> StoredObject | None:
        obj = self._group(key).get(key)
        return obj if obj and obj.version_id else None

    # --- objects ---------------------------------------------------------------------------------

    def put_object(self, key: str, source: Path | bytes, *, sha256: str, size: int,
                   retain_until: datetime | None, legal_hold: bool = False,
                   body_filter: BodyFilter | None = None) -> PutResult:
        src = open(source, "rb") if isinstance(source, Path) else io.BytesIO(source)
        try:
            body = body_filter(key, src) if body_filter else src
            kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": body, "ContentLength": size,
                                  "ChecksumSHA256": b64_of_hex(sha256), "IfNoneMatch": "*"}
            if retain_until is not None:
                kw["ObjectLockMode"] = "COMPLIANCE"
                kw["ObjectLockRetainUntilDate"] = retain_until.astimezone(timezone.utc)
            if legal_hold:
                kw["ObjectLockLegalHoldStatus"] = "ON"
            resp = self._call(f"store {key}", self.client.put_object, **kw)
        finally:
            src.close()
        echoed = resp.get("ChecksumSHA256")
        if echoed:
            if hex_of_b64(echoed) != sha256:
                raise IntegrityError(f"{key}: the storage reports SHA-256 {hex_of_b64(echoed)[:16]}..., "
                                     f"expected {sha256[:16]}...")
            return PutResult(key, resp.get("VersionId"), sha256, size, "checksum")
        if self.can_read():
            st = self.stat(key)
            if st is None or st.sha256 != sha256:
                raise IntegrityError(f"{key}: stored object does not carry the expected SHA-256")
            return PutResult(key, st.version_id, sha256, size, "checksum")
        # The server accepted x-amz-checksum-sha256 (it refuses a mismatch), echo or not.
        return PutResult(key, resp.get("VersionId"), sha256, size, "checksum")

    def stat(self, key: str, with_checksum: bool = True) -> StoredObject | None:
        obj = self._stored_version(key)
        if obj is None:
            return None
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "VersionId": obj.version_id}
        if with_checksum:
            kw["ChecksumMode"] = "ENABLED"
        head = self._call(f"read {key}", self.client.head_object, **kw)
        obj.size = int(head.get("ContentLength", obj.size))
        if head.get("ChecksumSHA256"):
            obj.sha256 = hex_of_b64(head["ChecksumSHA256"])
        obj.retain_until = head.get("ObjectLockRetainUntilDate")
        obj.legal_hold = head.get("ObjectLockLegalHoldStatus") == "ON"
        return obj

    def list_objects(self, prefix: str) -> list[StoredObject]:
        return sorted(self._group(prefix).values(), key=lambda o: o.key)

    def read_bytes(self, key: str) -> bytes:
        obj = self._stored_version(key)
        if obj is None:
            raise UsageError(f"{key} is not in archive {self.url}")
        resp = self._call(f"read {key}", self.client.get_object, Bucket=self.bucket, Key=key, VersionId=obj.version_id)
        return resp["Body"].read()

    def download(self, key: str, dest: Path) -> str:
        obj = self._stored_version(key)
        if obj is None:
            raise UsageError(f"{key} is not in archive {self.url}")
        resp = self._call(f"read {key}", self.client.get_object, Bucket=self.bucket, Key=key, VersionId=obj.version_id)
        h = hashlib.sha256()
        body = resp["Body"]
        try:
            with open(dest, "wb") as out:
                for chunk in body.iter_chunks(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                durable.fsync(out.fileno())
        except Exception as exc:  # noqa: BLE001
            from botocore.exceptions import BotoCoreError
            if isinstance(exc, BotoCoreError):
                raise self._wrap(exc, f"read {key}") from exc
            raise
        return h.hexdigest()

    def set_legal_hold(self, key: str, on: bool) -> None:
        obj = self._stored_version(key)
        if obj is None:
            raise UsageError(f"{key} is not in archive {self.url}")
        self._call(f"{'hold' if on else 'release'} {key}", self.client.put_object_legal_hold, Bucket=self.bucket,
                   Key=key, VersionId=obj.version_id, LegalHold={"Status": "ON" if on else "OFF"})

    def delete(self, key: str) -> None:
        st = self.stat(key, with_checksum=False)
        if st is not None:
            if st.legal_hold:
                raise Refused(f"{key} is under legal hold; release it first")
            if st.retain_until is not None and st.retain_until > datetime.now(timezone.utc):
                raise Refused(f"{key} is locked (COMPLIANCE) until {st.retain_until.isoformat()}; "
                              "nobody can delete it earlier")
        ids = [(kind, it["VersionId"]) for kind, it in self._iter_versions(key) if it["Key"] == key]
        # Later versions and markers first, the stored version last: an interruption never leaves
        # a replacement standing without its original.
        ids.sort(key=lambda kv: kv[1] == (st.version_id if st else None))
        for _kind, vid in ids:
            self._call(f"delete {key}", self.client.delete_object, Bucket=self.bucket, Key=key, VersionId=vid)

    # --- journals --------------------------------------------------------------------------------

    @staticmethod
    def _journal_key(name: str, entry: int) -> str:
        return f"journals/{name}/{entry:010d}.json"

    def _tail_hint(self, name: str) -> int:
        try:
            return int((self._journal_cache / f"{name}.tail").read_text())
        except (OSError, ValueError):
            return 0

    def _set_tail_hint(self, name: str, entry: int) -> None:
        try:
            self._journal_cache.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self._journal_cache / f"{name}.tail").write_text(str(entry))
        except OSError as exc:                     # a cache only: never fail an append for it
            log.debug("journal tail hint not saved: %s", exc)

    def _list_after(self, name: str, start_after: str | None) -> str | None:
        """The last key of the journal listed after ``start_after`` (None when nothing is)."""
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": f"journals/{name}/"}
        if start_after:
            kw["StartAfter"] = start_after
        last_key = None
        while True:
            resp = self._call(f"list journal {name}", self.client.list_objects_v2, **kw)
            # Only keys of the entry form: an object anybody else put there (journals/access/zz) is
            # never taken for the tail (its name is no number to chain after).
            contents = [c for c in resp.get("Contents", []) if JOURNAL_KEY_RE.match(c["Key"][len(f"journals/{name}/"):])]
            if contents:
                last_key = contents[-1]["Key"]
            if not resp.get("IsTruncated"):
                return last_key
            kw["ContinuationToken"] = resp["NextContinuationToken"]
            kw.pop("StartAfter", None)

    def _journal_tail(self, name: str) -> tuple[int, str]:
        """(number, line hash) of the last entry, from the listing and the stored version. The
        listing starts at the last number this machine saw, so it stays short as journals grow."""
        from sessions.evidence.chain import GENESIS, line_hash
        hint = self._tail_hint(name)
        last_key = self._list_after(name, self._journal_key(name, hint - 1) if hint > 1 else None)
        if last_key is None and hint > 1:
            last_key = self._list_after(name, None)       # the hint was wrong (another bucket?)
        if last_key is None:
            return 0, GENESIS
        entry = int(last_key.rsplit("/", 1)[1].split(".")[0])
        obj = self._stored_version(last_key)
        vid_kw = {"VersionId": obj.version_id} if obj and obj.version_id else {}
        data = self._call(f"read {last_key}", self.client.get_object, Bucket=self.bucket, Key=last_key, **vid_kw)["Body"].read()
        self._set_tail_hint(name, entry)
        return entry, line_hash(data)

    def journal_append(self, name: str, make_line: Callable[[int, str], bytes],
                       retain_until: datetime | None) -> tuple[int, bytes]:
        from sessions.evidence.chain import line_hash
        for _attempt in range(25):
            last, prev = self._tail_or_fetch(name)
            entry = last + 1
            line = make_line(entry, prev)
            kw: dict[str, Any] = {"Bucket": self.bucket, "Key": self._journal_key(name, entry), "Body": line,
                                  "IfNoneMatch": "*", "ChecksumSHA256": b64_of_hex(hashlib.sha256(line).hexdigest())}
            if retain_until is not None:
                kw["ObjectLockMode"] = "COMPLIANCE"
                kw["ObjectLockRetainUntilDate"] = retain_until.astimezone(timezone.utc)
            try:
                self._call(f"append to journal {name}", self.client.put_object, **kw)
            except AlreadyExists:
                # Another writer took this number: read the new tail and chain after it.
                self._set_tail_hint(name, entry)
                self._tails[name] = self._journal_tail(name)
                continue
            self._tails[name] = (entry, line_hash(line))
            self._set_tail_hint(name, entry)
            return entry, line
        raise ArchiveError(f"journal {name}: could not append after 25 attempts (too many concurrent writers?)")

    def _tail_or_fetch(self, name: str) -> tuple[int, str]:
        if name not in self._tails:
            self._tails[name] = self._journal_tail(name)
        return self._tails[name]

    def journal_read(self, name: str, after: int = 0) -> list[JournalLine]:
        prefix = f"journals/{name}/"
        marker = self._journal_key(name, after) if after else None
        grouped = self._group(prefix, key_marker=marker)
        out: list[JournalLine] = []
        self._malformed[name] = []
        for key in sorted(grouped):
            obj = grouped[key]
            if not JOURNAL_KEY_RE.match(key[len(prefix):]):
                self._malformed[name].append(key)
                continue
            entry = int(key[len(prefix):].split(".")[0])
            if entry <= after:
                continue
            notes: list[str] = []
            if obj.later_versions:
                notes.append(f"{obj.later_versions} later version(s) of this entry exist: an attempt to replace it "
                             "(the first, locked version is shown)")
            if obj.delete_markers:
                notes.append(f"{obj.delete_markers} delete marker(s): an attempt to hide this entry")
            if obj.version_id is None:
                out.append(JournalLine(entry, b"", tuple(notes + ["entry missing: no stored version"])))
                continue
            out.append(JournalLine(entry, self._journal_entry_bytes(name, key, entry, obj), tuple(notes)))
        return out

    def _journal_entry_bytes(self, name: str, key: str, entry: int, obj: StoredObject) -> bytes:
        cached = self._journal_cache / name / f"{entry:010d}-{obj.version_id}"
        try:
            data = cached.read_bytes()
            if obj.etag and hashlib.md5(data).hexdigest() == obj.etag:
                return data
        except OSError:
            pass
        data = self._call(f"read {key}", self.client.get_object, Bucket=self.bucket, Key=key,
                          VersionId=obj.version_id)["Body"].read()
        try:
            cached.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            cached.write_bytes(data)
        except OSError as exc:
            log.debug("journal cache not written: %s", exc)
        return data

    def malformed_journal_keys(self, name: str) -> list[str]:
        """Objects under journals/<name>/ the last journal_read skipped: not named like an entry."""
        return list(self._malformed.get(name, []))

    def journal_names(self) -> list[str]:
        resp = self._call("list journals", self.client.list_objects_v2, Bucket=self.bucket, Prefix="journals/",
                          Delimiter="/")
        return sorted(p["Prefix"].split("/")[1] for p in resp.get("CommonPrefixes", []))

    # --- the recorders' inbox ------------------------------------------------------------------

    def inbox_prefix(self) -> str:
        """Where these credentials may leave entries for the office: ``inbox/<access key id>/``.
        The IAM policy gives each recorder identity write access to its own inbox only, so the
        prefix proves which S3 identity wrote an object there."""
        if not self.access_key_id:
            raise UsageError(f"no S3 credentials for role {self.role}: the recorder's inbox is named by its "
                             f"access key id; add [s3.credentials.{self.role}] to the connection file")
        return f"{INBOX_PREFIX}{self.access_key_id}/"

    def inbox_put(self, name: str, data: bytes) -> str:
        """Leave one signed entry in this identity's inbox, create-only; returns its key.
        ``name`` is unique per fact (e.g. the upload id), so a repeated attempt is a no-op."""
        key = self.inbox_prefix() + name
        try:
            self.put_object(key, data, sha256=hashlib.sha256(data).hexdigest(), size=len(data), retain_until=None)
        except AlreadyExists:
            log.info("%s was left in the inbox before (a resumed upload)", key)
        return key

    def inbox_list(self) -> list[StoredObject]:
        """Every entry waiting in any recorder's inbox (officer credentials)."""
        return [o for o in self.list_objects(INBOX_PREFIX) if o.version_id]

    # --- misc ------------------------------------------------------------------------------------

    def catalog_path(self) -> Path:
        return self._catalog_path

    def can_read(self) -> bool:
        return self.role != "recorder"
