"""The records office against both backends: a folder archive and S3 (a real SeaweedFS server).

Every test runs twice (``archive`` fixture: file, s3) on real signed sessions from
session_factory, through the real CLI (in-process) and the real storage.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from archive_harness import ArchiveUnderTest, archive, file_archive  # noqa: F401 - fixtures
from sessions.archive.backend import RECEIPT_NAME
from sessions.archive.errors import Refused, Unreachable
from sessions.archive.upload import STATE_DIR, Uploader
from sessions.evidence.verify import verify_session

UTC = timezone.utc
ROOT = Path(__file__).resolve().parent.parent
KZ = {"candidate": "Ерлан Сәтбаев", "candidate_id": "KZ0001", "examiner": "Іван Петренко", "plate": "АІ 1234 ВК",
      "centre": "ТСЦ 8041", "exam": "practical"}
UA = {"candidate": "Шевченко Тарас Григорович", "candidate_id": "AB123456", "examiner": "Ольга Коваль",
      "plate": "КА 0001 ХО", "centre": "ТСЦ 1241", "exam": "practical"}


def files_of(session: Path) -> set[str]:
    return {p.relative_to(session).as_posix() for p in session.rglob("*") if p.is_file() and p.name != ".recording.lock"}


def prefix_of(session: Path) -> str:
    return f"sessions/{session.parent.name}/{session.name}/"


def receipt_of(a: ArchiveUnderTest, session: Path) -> dict:
    return json.loads(a.backend().read_bytes(prefix_of(session) + RECEIPT_NAME))


def upload(a: ArchiveUnderTest, *sessions: Path, user: str = "car7") -> dict:
    r = a.cli("upload", "--out", a.out, "--json", *sessions, user=user)
    assert r.rc == 0, (r.out, r.err)
    return r.json()


def find(a: ArchiveUnderTest, *args: str, user: str = "boss") -> set[str]:
    r = a.cli("archive", "find", "--json", *args, user=user)
    assert r.rc == 0, r.err
    return {x["session_id"] for x in r.json()}


def journal(a: ArchiveUnderTest, name: str) -> dict:
    r = a.cli("archive", "journal", "list", name, "--json")
    assert r.rc == 0, (r.out, r.err)
    return r.json()


# --- upload ---------------------------------------------------------------------------------------------

def test_upload_verifies_every_object_journals_then_deletes_the_local_copy(archive):
    finished = archive.session()
    cut = archive.session(interrupted=True)
    expected = {finished.name: files_of(finished), cut.name: files_of(cut)}
    res = upload(archive)["results"]
    assert {r["session_id"] for r in res} == set(expected)
    assert all(r["status"] == "uploaded" and r["local_deleted"] for r in res), res
    assert not finished.exists() and not cut.exists()
    assert not list((archive.out / STATE_DIR).glob("*.jsonl"))

    backend = archive.backend()
    for s in (finished, cut):
        receipt = receipt_of(archive, s)
        assert {o["file"] for o in receipt["objects"]} == expected[s.name]
        assert receipt["objects"][-1]["file"] == "manifest.json"            # the manifest goes last
        assert receipt["objects"][0]["file"].endswith("0001.mp4")           # segments first
        assert receipt["retention_months"] == 3 and receipt["uploaded_by"] == "car7"
        expires = datetime.fromisoformat(receipt["expires_at"])
        for o in receipt["objects"]:
            st = backend.stat(o["key"])
            assert st.sha256 == o["sha256"] and st.size == o["size"]
            assert st.retain_until is not None and st.retain_until >= expires   # locked for the whole period
    chk = archive.cli("archive", "check", "--deep", "--json", user="boss")
    assert chk.rc == 0, chk.out
    assert [r["ok"] for r in chk.json()] == [True, True]

    j = journal(archive, "uploads")
    assert j["ok"]
    assert [e["type"] for e in j["entries"]].count("upload") == 2
    assert [e["type"] for e in j["entries"]].count("device-deleted") == 2
    assert {e["device"] for e in j["entries"]} == {"INV-REC-01"}
    again = upload(archive)["results"]
    assert again == []


def test_upload_refuses_a_session_changed_on_the_recorder(archive):
    s = archive.session()
    seg = s / "cabin" / "0001.mp4"
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    r = archive.cli("upload", "--out", archive.out, "--json", user="car7")
    assert r.rc == 1
    (res,) = r.json()["results"]
    assert res["status"] == "failed" and "cabin/0001.mp4" in " ".join(res["problems"])
    assert s.exists()
    assert archive.backend().list_objects(prefix_of(s)) == []


def test_a_corrupted_transfer_stores_nothing_and_is_retried(archive):
    s = archive.session()
    target = prefix_of(s) + "cabin/0001.mp4"

    class FlipOneByte:
        """The bytes on the wire differ from the file by one bit at offset 100."""

        def __init__(self, fh):
            self.fh = fh

        def read(self, n=-1):
            pos = self.fh.tell()
            data = bytearray(self.fh.read(n))
            if pos <= 100 < pos + len(data):
                data[100 - pos] ^= 0x01
            return bytes(data)

        def seek(self, *a):
            return self.fh.seek(*a)

        def tell(self):
            return self.fh.tell()

    ctx = archive.open("car7", action="upload")
    with ctx:
        res = Uploader(ctx, body_filter=lambda key, fh: FlipOneByte(fh) if key == target else fh).upload(s)
    assert res.status == "failed" and "nothing was stored" in res.message, res.message
    assert s.exists()
    assert target not in {o.key for o in archive.backend().list_objects(prefix_of(s))}
    r = archive.cli("upload", s, user="car7")
    assert r.rc == 0, r.err
    assert "(resumed)" in r.out
    assert archive.cli("archive", "check", "--deep", user="boss").rc == 0


def _cut_after(n: int, how: str):
    count = {"n": 0}

    def hook(key: str) -> None:
        count["n"] += 1
        if count["n"] == n:
            if how == "exit":
                os._exit(9)        # power loss: no finally, no flush beyond what was fsynced
            raise Unreachable("connection cut (injected)")
    return hook


def test_an_interrupted_upload_resumes_without_duplicates(archive):
    s = archive.session()
    n_files = len(files_of(s))
    ctx = archive.open("car7", action="upload")
    with pytest.raises(Unreachable):
        with ctx:
            Uploader(ctx, after_put=_cut_after(3, "raise")).upload(s)
    assert s.exists()
    assert len(archive.backend().list_objects(prefix_of(s))) == 3
    r = archive.cli("upload", s, "--json", user="car7")
    assert r.rc == 0, r.err
    (res,) = r.json()["results"]
    assert res["resumed"] and res["status"] == "uploaded" and res["local_deleted"]
    objs = archive.backend().list_objects(prefix_of(s))
    assert len(objs) == n_files + 1                                  # every file and the receipt
    assert all(o.later_versions == 0 and o.delete_markers == 0 for o in objs)   # nothing written twice
    uploads = [e for e in journal(archive, "uploads")["entries"] if e["session_id"] == s.name]
    assert [e["type"] for e in uploads] == ["upload", "device-deleted"]


def _upload_and_die(a: ArchiveUnderTest, session: Path, after: int | None) -> None:
    ctx = a.open("car7", action="upload")

    class DiesBeforeDeleting(Uploader):
        def _delete_local(self, *args, **kw):
            os._exit(9)            # power lost between journaling and deleting the local copy

    up = (Uploader(ctx, after_put=_cut_after(after, "exit")) if after else DiesBeforeDeleting(ctx))
    up.upload(session)
    os._exit(0)


@pytest.mark.parametrize("after", [2, None], ids=["mid-objects", "before-local-delete"])
def test_a_power_loss_during_upload_loses_and_duplicates_nothing(archive, after):
    s = archive.session(repaired=True)
    n_files = len(files_of(s))
    child = multiprocessing.get_context("fork").Process(target=_upload_and_die, args=(archive, s, after))
    child.start()
    child.join(60)
    assert child.exitcode == 9
    assert s.exists()
    r = archive.cli("upload", "--out", archive.out, "--json", user="car7")
    assert r.rc == 0, r.out + r.err
    assert not s.exists()
    objs = archive.backend().list_objects(prefix_of(s))
    assert len(objs) == n_files + 1 and all(o.later_versions == 0 for o in objs)
    uploads = [e for e in journal(archive, "uploads")["entries"] if e["session_id"] == s.name]
    assert [e["type"] for e in uploads] == ["upload", "device-deleted"]
    assert archive.cli("archive", "check", "--deep", user="boss").rc == 0


def test_upload_to_an_archive_never_initialised_says_run_init(archive, tmp_path):
    (tmp_path / "nothing-here").mkdir()     # a folder that is there but holds no archive (a missing one: exit 6)
    url = f"file://{tmp_path / 'nothing-here'}" if archive.kind == "file" else \
        f"s3://{archive.server.new_bucket()}"
    archive.session()
    r = archive.cli("upload", "--archive", url, "--out", archive.out, user="car7")
    assert r.rc == 2
    assert f"examrec archive init --archive {url}" in r.err


# --- find, reindex --------------------------------------------------------------------------------

def test_find_by_name_id_dates_examiner_plate_and_centre(archive):
    kz = archive.session(details=KZ, started=datetime(2026, 3, 2, 7, 0, tzinfo=UTC))
    ua = archive.session(details=UA, started=datetime(2026, 3, 10, 7, 0, tzinfo=UTC))
    upload(archive)
    assert find(archive, "--name", "сатбаев") == {kz.name}
    assert find(archive, "--name", "ЕРЛАН Сәтбаев") == {kz.name}
    assert find(archive, "--name", "шевченко") == {ua.name}
    assert find(archive, "--name", "Шевченко тарас") == {ua.name}
    assert find(archive, "--name", "петренко") == set()                  # the examiner is not the candidate
    assert find(archive, "--candidate-id", "kz0001") == {kz.name}
    assert find(archive, "--from", "2026-03-05") == {ua.name}
    assert find(archive, "--until", "2026-03-05") == {kz.name}
    assert find(archive, "--from", "2026-03-02", "--until", "2026-03-10") == {kz.name, ua.name}
    assert find(archive, "--examiner", "коваль") == {ua.name}
    assert find(archive, "--plate", "ai1234bk") == {kz.name}             # Latin query, Cyrillic plate
    assert find(archive, "--centre", "1241") == {ua.name}
    # The passport's Latin spelling finds the Cyrillic name (UA: KMU No. 55; KZ/RU: ICAO 9303), and back.
    assert find(archive, "--name", "Shevchenko Taras Hryhorovych") == {ua.name}
    assert find(archive, "--name", "SATBAEV") == {kz.name}
    assert find(archive, "--name", "Sátbaev erlan") == {kz.name}                # diacritics folded
    assert find(archive, "--examiner", "Koval") == {ua.name}
    assert find(archive, "--examiner", "Olha") == {ua.name}
    assert find(archive, "--name", "Koval") == set()                       # Koval is the examiner, not a candidate
    text = archive.cli("archive", "find", "--name", "сатбаев", user="boss")
    header, row, count = text.out.splitlines()
    assert header.split()[:4] == ["exam", "date", "time", "candidate"] and "examiner" in header and "hold" in header
    # 07:00 UTC on 2 March is 09:00 in Kyiv (the centre's zone)
    assert "2026-03-02  09:00" in row and "Ерлан Сәтбаев" in row and "KZ0001" in row and "АІ 1234 ВК" in row
    assert count == "1 session"
    none = archive.cli("archive", "find", "--name", "Nobody", user="boss")
    assert none.rc == 0 and none.out == "0 sessions\n"


def test_reindex_rebuilds_the_catalog_from_the_archive(archive):
    s = archive.session(details=KZ)
    upload(archive)
    path = archive.backend().catalog_path()
    assert find(archive, "--name", "сатбаев") == {s.name}
    with sqlite3.connect(path) as db:          # the index goes wrong (or is lost)
        db.execute("UPDATE sessions SET candidate_f = 'xxx'")
    assert find(archive, "--name", "сатбаев") == set()
    r = archive.cli("archive", "reindex", "--json", user="boss")
    assert r.rc == 0, r.err
    assert r.json()["stored"] == 1
    assert find(archive, "--name", "сатбаев") == {s.name}


# --- retention, holds, sweep -----------------------------------------------------------------------------

def test_sweep_with_now_deletes_exactly_the_expired_unheld_sessions(archive):
    expired = archive.session(started=datetime(2020, 1, 10, 8, 0, tzinfo=UTC))     # expires 2020-04-11
    held = archive.session(started=datetime(2020, 1, 10, 9, 0, tzinfo=UTC))
    later = archive.session(started=datetime(2020, 3, 1, 8, 0, tzinfo=UTC))       # expires 2020-06-02
    today = archive.session()                                                     # locked for 3 months
    upload(archive)
    assert archive.cli("archive", "hold", held.name, "--complaint", "C-17/2020").rc == 0
    r = archive.cli("archive", "sweep", "--now", "2020-05-01T12:00:00+00:00", "--json")
    assert r.rc == 0, r.err
    items = {i["session_id"]: i for i in r.json()["items"]}
    assert {k for k, v in items.items() if v["action"] == "deleted"} == {expired.name}
    assert items[expired.name]["late"]                       # due 2020-04-13: deleted late
    assert "C-17/2020" in items[held.name]["reason"]
    assert items[later.name]["action"] == "kept" and "retention until 2020-06-01" in items[later.name]["reason"]
    assert items[today.name]["action"] == "kept"
    backend = archive.backend()
    assert backend.list_objects(prefix_of(expired)) == []    # every object, every version
    for s in (held, later, today):
        assert backend.stat(prefix_of(s) + RECEIPT_NAME) is not None
    dels = journal(archive, "deletions")["entries"]
    assert [(e["session_id"], e["late"]) for e in dels] == [(expired.name, True)]
    assert find(archive, "--name", "шевченко") == {held.name, later.name, today.name}
    assert expired.name in find(archive, "--include-deleted")

    # At the real time the March session has expired too; today's is still locked by the storage.
    r = archive.cli("archive", "sweep", "--json")
    items = {i["session_id"]: i for i in r.json()["items"]}
    assert {k for k, v in items.items() if v["action"] == "deleted"} == {later.name}
    assert items[today.name]["action"] == "kept"
    # Judged from 2099 the policy would delete today's session, but its lock follows the real
    # clock: the storage refuses, the sweep says so and keeps it.
    r = archive.cli("archive", "sweep", "--now", "2099-01-01", "--json")
    assert r.rc == 3
    items = {i["session_id"]: i for i in r.json()["items"]}
    assert items[today.name]["action"] == "refused" and "until" in items[today.name]["reason"]
    assert items[held.name]["action"] == "kept"
    assert backend.stat(prefix_of(today) + "manifest.json") is not None


def test_a_held_session_is_never_deleted_whatever_its_retention(archive):
    s = archive.session(started=datetime(2020, 1, 10, 8, 0, tzinfo=UTC))        # long expired, no lock
    upload(archive)
    assert archive.cli("archive", "hold", s.name[:24], "--complaint", "C-1").rc == 0   # an id prefix is enough
    assert archive.cli("archive", "hold", s.name, "--complaint", "C-1").rc == 3        # already held for it
    assert archive.cli("archive", "hold", s.name, "--complaint", "C-2").rc == 0
    backend = archive.backend()
    key = prefix_of(s) + "manifest.json"
    assert backend.stat(key).legal_hold
    with pytest.raises(Refused, match="legal hold"):
        backend.delete(key)                                   # not even the officer, not even expired
    r = archive.cli("archive", "sweep", "--json")
    (item,) = [i for i in r.json()["items"] if i["session_id"] == s.name]
    assert item["action"] == "kept" and "C-1, C-2" in item["reason"]
    assert archive.cli("archive", "release", s.name, "--decision", "D-9").rc == 2      # which complaint?
    assert archive.cli("archive", "release", s.name, "--decision", "D-9", "--complaint", "C-1").rc == 0
    assert backend.stat(key).legal_hold                       # C-2 still open
    assert archive.cli("archive", "sweep").rc == 0 and backend.stat(key) is not None
    assert archive.cli("archive", "release", s.name, "--decision", "D-10").rc == 0
    assert not backend.stat(key).legal_hold
    r = archive.cli("archive", "sweep", "--json")
    (item,) = [i for i in r.json()["items"] if i["session_id"] == s.name]
    assert item["action"] == "deleted"
    holds = journal(archive, "holds")["entries"]
    assert [(e["type"], e["complaint"]) for e in holds] == [("hold", "C-1"), ("hold", "C-2"), ("release", "C-1"),
                                                            ("release", "C-2")]
    assert holds[2]["decision"] == "D-9"


# --- copies -------------------------------------------------------------------------------------------

def test_copy_round_trip_verifies_with_sha256sum_and_examrec_verify(archive, tmp_path):
    two_cams = archive.session(details=UA, started=datetime.now(UTC) - timedelta(days=2))
    road_only = archive.session(streams=("road-front",), started=datetime.now(UTC) - timedelta(days=2))
    upload(archive)
    requested = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    dest = tmp_path / "usb"
    r = archive.cli("archive", "copy", two_cams.name, "--to", dest, "--applicant", "Шевченко Тарас Григорович",
                    "--id-document", "passport FE 123456", "--requested", requested, "--medium", "USB stick",
                    "--json")
    assert r.rc == 0, r.err
    res = r.json()
    assert res["notice"] and res["files"] == len(receipt_of(archive, two_cams)["objects"])
    assert f"copying {res['files']}/{res['files']}" in r.err  # progress on stderr, the result alone on stdout
    sums = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=dest, capture_output=True, text=True)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    assert sums.stdout.count(": OK") == res["files"]
    report = verify_session(dest / two_cams.name)
    assert report.ok, report.problems
    cli = subprocess.run([sys.executable, "-m", "sessions.cli", "verify", str(dest / two_cams.name),
                          "--public-key", str(dest / "public-key.pem")], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    readme = (dest / "README.txt").read_text()
    assert "sha256sum -c SHA256SUMS" in readme and "examrec verify" in readme and "Received by" in readme
    assert "Шевченко Тарас Григорович" in (dest / "PERSONAL-DATA-NOTICE.txt").read_text() or \
        "захист персональних даних" in (dest / "PERSONAL-DATA-NOTICE.txt").read_text()

    dest2 = tmp_path / "usb2"
    r = archive.cli("archive", "copy", road_only.name, "--to", dest2, "--applicant", "A", "--id-document", "ID 1",
                    "--requested", requested, "--json")
    assert r.rc == 0, r.err
    assert not r.json()["notice"] and not (dest2 / "PERSONAL-DATA-NOTICE.txt").exists()

    copies = journal(archive, "copies")["entries"]
    assert [(e["session_id"], e["applicant"], e["personal_data_notice"]) for e in copies] == \
        [(two_cams.name, "Шевченко Тарас Григорович", True), (road_only.name, "A", False)]
    assert copies[0]["id_document"] == "passport FE 123456" and copies[0]["deadline"] >= requested


def test_copy_rules_30_days_representative_authority(archive, tmp_path):
    s = archive.session(started=datetime(2026, 1, 10, 8, 0, tzinfo=UTC))
    upload(archive)
    base = ["archive", "copy", s.name, "--applicant", "Candidate", "--id-document", "passport 1"]
    late = archive.cli(*base, "--to", tmp_path / "a", "--requested", "2026-02-20")
    assert late.rc == 3 and "30" in late.err and "--authority-request" in late.err
    assert not (tmp_path / "a").exists()
    rep = archive.cli(*base, "--to", tmp_path / "b", "--requested", "2026-01-20", "--representative", "Lawyer")
    assert rep.rc == 2 and "--authority" in rep.err
    court = archive.cli(*base, "--to", tmp_path / "c", "--requested", "2026-02-20",
                        "--authority-request", "court ruling 123/45", "--json")
    assert court.rc == 0, court.err
    ok = archive.cli(*base, "--to", tmp_path / "d", "--requested", "2026-01-20", "--representative", "Lawyer",
                     "--authority", "power of attorney 77", "--json")
    assert ok.rc == 0, ok.err
    assert ok.json()["deadline"] == "2026-01-23"                  # Tue 20 Jan + 3 working days
    assert ok.json()["late"]                                      # issued long after
    busy = archive.cli(*base, "--to", tmp_path / "d", "--requested", "2026-01-20")
    assert busy.rc == 2 and "not empty" in busy.err


# --- access -------------------------------------------------------------------------------------------

def test_roles_and_passwords_are_enforced_and_every_access_journaled(archive):
    s = archive.session()
    assert archive.cli("archive", "find", user="car7").rc == 3            # a recorder only uploads
    assert archive.cli("archive", "sweep", user="boss").rc == 3           # the head reads and reviews
    assert archive.cli("archive", "find", user="olena", password="wrong-password").rc == 3
    assert archive.cli("archive", "find", user="nobody", password="whatever-1").rc == 3
    assert archive.cli("upload", "--out", archive.out, user="boss").rc == 3
    assert s.exists()
    assert archive.cli("archive", "find", user="boss").rc == 0
    entries = journal(archive, "access")["entries"]
    got = [(e["user"], e["command"], e["result"]) for e in entries]
    assert ("car7", "archive find", "refused") in got
    assert ("boss", "archive sweep", "refused") in got
    assert ("olena", "archive find", "denied") in got
    assert ("nobody", "archive find", "denied") in got
    assert ("boss", "upload", "refused") in got
    assert ("boss", "archive find", "ok") in got


def test_officers_manage_users_and_holidays(file_archive):
    a = file_archive
    assert a.cli("archive", "user", "passwd", "boss", env={"EXAMREC_NEW_PASSWORD": "short"}).rc == 2
    assert a.cli("archive", "user", "passwd", "boss", env={"EXAMREC_NEW_PASSWORD": "a-new-head-pass"}).rc == 0
    assert a.cli("archive", "find", user="boss").rc == 3                      # the old password is gone
    assert a.cli("archive", "find", user="boss", password="a-new-head-pass").rc == 0
    assert a.cli("archive", "user", "disable", "boss").rc == 0
    r = a.cli("archive", "find", user="boss", password="a-new-head-pass")
    assert r.rc == 3 and "disabled" in r.err
    assert a.cli("archive", "user", "disable", "olena").rc == 3                # not yourself
    assert a.cli("archive", "user", "add", "x", "--role", "officer", "--name", "Іван Іваненко", user="car7",
                 env={"EXAMREC_NEW_PASSWORD": "long-enough-1"}).rc == 3
    users = {u["login"]: u for u in a.cli("archive", "user", "list", "--json").json()}
    assert users["boss"]["disabled"] and users["car7"]["role"] == "recorder"
    assert users["olena"]["full_name"] == "Марія Бондар" and users["car7"]["inventory"] == "INV-REC-01"
    settings = json.loads((a.base / "archive" / "examrec" / "config.json").read_text())
    assert "a-new-head-pass" not in json.dumps(settings)
    assert {u["password"]["algorithm"] for u in settings["users"]} == {"scrypt"}
    r = a.cli("archive", "holidays", "--add", "2026-12-25", "--add", "2027-01-01")
    assert r.rc == 0 and r.out.split() == ["2026-12-25", "2027-01-01"]
    assert a.cli("archive", "holidays", "--add", "25.12.2026").rc == 2


def test_copy_deadline_counts_the_centres_calendar(file_archive, tmp_path):
    from sessions.archive.workdays import WorkCalendar, add_working_days, next_working_day
    a = file_archive
    s = a.session(started=datetime.now(UTC) - timedelta(days=1))
    upload(a)
    today = datetime.now(UTC).astimezone().date()
    day_off = next_working_day(today)                                   # the centre closes the next working day
    r = a.cli("archive", "holidays", "--country", "KZ", "--add", day_off.isoformat(), "--json")
    assert r.rc == 0 and r.json()["country"] == "KZ" and r.json()["holidays"] == [day_off.isoformat()]
    assert a.cli("archive", "holidays", "--add", day_off.isoformat(), user="boss").rc == 3   # the head only reads
    r = a.cli("archive", "copy", s.name, "--to", tmp_path / "usb", "--applicant", "Коваль Олена",
              "--id-document", "паспорт ВН1", "--requested", today.isoformat(), "--json")
    assert r.rc == 0, r.err
    want = add_working_days(today, 3, WorkCalendar.from_settings([day_off], country="KZ"))
    assert r.json()["deadline"] == want.isoformat()
    assert want > add_working_days(today, 3)                             # the day off moved it
