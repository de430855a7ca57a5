"""Journals: append-only, hash-chained, corrected never edited, printed as the official forms;
device issue and return. Edits are detected on a folder archive and on S3 (real SeaweedFS)."""
from __future__ import annotations

import csv
import io
import json
import os
import threading
from datetime import datetime, timezone

import pytest

from archive_harness import archive, file_archive, s3_archive  # noqa: F401 - fixtures
from sessions.archive.journals import CORRECTION, check_lines
from sessions.evidence.chain import GENESIS, encode_record, line_hash

UTC = timezone.utc


def chain(records: list[dict]) -> list[bytes]:
    out, prev = [], GENESIS
    for i, r in enumerate(records, start=1):
        line = encode_record({"entry": i, **r}, prev)
        out.append(line)
        prev = line_hash(line)
    return out


def problems_of(lines: list[bytes], numbers: list[int] | None = None) -> list[str]:
    nums = numbers or list(range(1, len(lines) + 1))
    _entries, problems = check_lines("t", [(n, line, ()) for n, line in zip(nums, lines)])
    return problems


def test_chain_check_names_the_entry_where_it_breaks():
    lines = chain([{"type": "issue", "inventory": f"INV-{i}"} for i in range(5)])
    assert problems_of(lines) == []
    edited = list(lines)
    edited[1] = edited[1].replace(b"INV-1", b"INV-9")
    assert problems_of(edited) == ["journal t: entry 3: the chain breaks here: it does not follow entry 2 "
                                   "(an entry was edited, removed, inserted or reordered)"]
    removed = lines[:2] + lines[3:]
    p = problems_of(removed, [1, 2, 4, 5])
    assert "journal t: entry 3 is missing (removed)" in p and any("entry 4: the chain breaks" in x for x in p)
    swapped = [lines[0], lines[2], lines[1], lines[3], lines[4]]
    assert any("entry 2" in x for x in problems_of(swapped))
    assert any("not readable JSON" in x for x in problems_of(lines[:4] + [b"garbage\n"]))


def test_a_folder_journal_edit_is_detected_and_located(file_archive):
    a = file_archive
    for inv in ("INV-1", "INV-2", "INV-3"):
        assert a.cli("device", "issue", inv, "--person", "Іван Петренко", "--battery-checked").rc == 0
    path = a.base / "archive" / "journals" / "devices.jsonl"
    assert oct(path.stat().st_mode & 0o777) == "0o444"               # read-only between appends
    ok = a.cli("archive", "journal", "list", "devices")
    assert ok.rc == 0 and "chain intact, 3 entries" in ok.err
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes().replace('"person":"Іван'.encode(), b'"person":"Ivan', 1))
    r = a.cli("archive", "journal", "list", "devices")
    assert r.rc == 1
    assert "BROKEN: journal devices: entry 2: the chain breaks here" in r.out
    # An edit of the newest entry breaks no link; the anchor kept by the last good listing catches it.
    path.write_bytes(path.read_bytes().replace(b'"person":"Ivan', '"person":"Іван'.encode(), 1))
    assert a.cli("archive", "journal", "list", "devices").rc == 0
    path.write_bytes(path.read_bytes().replace(b"INV-3", b"INV-8"))
    r = a.cli("archive", "journal", "list", "devices")
    assert r.rc == 1 and "entry 3 changed since it was last verified" in r.out
    assert a.cli("archive", "journal", "print", "devices", "--out", a.base / "p.html").rc == 1
    # The page stays a clean form; the verification note beside it says the chain is broken.
    note = (a.base / "p.html.verification.txt").read_text()
    assert "journal devices: 3 entries, NOT INTACT" in note and "entry 3 changed since it was last verified" in note


def test_s3_journal_entries_cannot_be_replaced_or_inserted_unnoticed(s3_archive):
    a = s3_archive
    for inv in ("INV-1", "INV-2"):
        assert a.cli("device", "issue", inv, "--person", "P").rc == 0
    officer, bucket = a.server.client("officer"), a.bucket
    key1 = "journals/devices/0000000001.json"
    original = officer.get_object(Bucket=bucket, Key=key1)["Body"].read()
    officer.put_object(Bucket=bucket, Key=key1, Body=original.replace(b'"P"', b'"Q"'))   # "edit" = new version
    r = a.cli("archive", "journal", "list", "devices", "--json")
    assert r.rc == 1
    data = r.json()
    assert [e["person"] for e in data["entries"]] == ["P", "P"]           # the first, locked version counts
    assert any("entry 1" in p and "later version" in p for p in data["problems"])
    # An inserted entry cannot chain to a real one without the right hash: it is named.
    forged = encode_record({"entry": 3, "type": "return", "inventory": "INV-1", "person": "P"}, "ab" * 32)
    officer.put_object(Bucket=bucket, Key="journals/devices/0000000003.json", Body=forged, IfNoneMatch="*")
    r = a.cli("archive", "journal", "list", "devices")
    assert "entry 3: the chain breaks here" in r.out


def test_concurrent_appends_never_fork_the_chain(archive):
    a = archive
    ctxs = [a.open("olena", action="journal-write") for _ in range(3)]
    errors: list[BaseException] = []

    def writer(ctx, tag):
        try:
            for i in range(4):
                ctx.journals.append("holds", "hold", {"session_id": f"{tag}-{i}", "complaint": "C"})
        except BaseException as exc:   # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(c, f"w{n}")) for n, c in enumerate(ctxs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in ctxs:
        c.close()
    assert not errors, errors
    view = ctxs[0].journals.read("holds")
    assert view.ok, view.problems
    assert [e.number for e in view.entries] == list(range(1, 13))
    assert sorted(e.record["session_id"] for e in view.entries) == sorted(f"w{n}-{i}" for n in range(3) for i in range(4))


def test_a_torn_last_line_is_set_aside_not_chained(file_archive):
    a = file_archive
    assert a.cli("device", "issue", "INV-1", "--person", "P").rc == 0
    path = a.base / "archive" / "journals" / "devices.jsonl"
    os.chmod(path, 0o644)
    with open(path, "ab") as f:
        f.write(b'{"entry":2,"type":"ret')                               # the writer lost power here
    assert a.cli("equipment", "return", "INV-1", "--person", "P").rc == 0   # the other spelling
    r = a.cli("archive", "journal", "list", "devices", "--json")
    assert r.rc == 0 and [e["type"] for e in r.json()["entries"]] == ["issue", "return"]
    (torn,) = list(path.parent.glob("devices.jsonl.torn-*"))
    assert torn.read_bytes() == b'{"entry":2,"type":"ret'


# --- corrections, devices, forms --------------------------------------------------------------------------

def test_corrections_append_never_edit(file_archive):
    a = file_archive
    assert a.cli("device", "issue", "INV-7", "--person", "Петренко І.", "--battery-checked").rc == 0
    path = a.base / "archive" / "journals" / "devices.jsonl"
    before = path.read_bytes()
    r = a.cli("archive", "journal", "correct", "devices", "1", "--reason", "wrong name",
              "--set", "person=Петренко Іван Петрович")
    assert r.rc == 0, r.err
    assert path.read_bytes().startswith(before)                           # entry 1 untouched
    bad = [(["2", "--reason", "x", "--set", "person=y"], "is itself a correction"),
           (["1", "--reason", "x", "--set", "colour=red"], "has no field colour"),
           (["1", "--reason", "x", "--set", "user=someone"], "cannot be corrected"),
           (["9", "--reason", "x", "--set", "person=y"], "no entry 9")]
    for args, msg in bad:
        r = a.cli("archive", "journal", "correct", "devices", *args)
        assert r.rc == 2 and msg in r.err, (args, r.err)
    assert a.cli("archive", "journal", "correct", "devices", "1", "--reason", "  ", "--set", "person=y").rc == 2
    assert a.cli("archive", "journal", "correct", "devices", "1", "--reason", "x", "--set", "person=y",
                 user="boss").rc == 3                                      # the head reviews, does not write
    data = json.loads(a.cli("archive", "journal", "list", "devices", "--json", user="boss").out)
    assert data["entries"][0]["corrected_by"] == [2]
    assert data["entries"][1]["type"] == CORRECTION and data["entries"][1]["corrects"] == 1
    assert data["entries"][1]["was"] == {"person": "Петренко І."}
    lst = a.cli("device", "list", "--json").json()
    assert lst["devices"][0]["person"] == "Петренко Іван Петрович"       # the corrected value counts

    out = a.base / "kz.html"
    assert a.cli("archive", "journal", "print", "devices", "--form", "kz-annex1", "--out", out).rc == 0
    page = out.read_text()
    assert "<del>Петренко І.</del> Петренко Іван Петрович" in page
    assert "Исправлено" in page and "wrong name" in page
    text = a.cli("archive", "journal", "export", "devices").out
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["person"] == "Петренко І." and rows[0]["corrected_by"] == "2"
    assert rows[1]["corrects"] == "1" and len(rows[0]["sha256"]) == 64


def test_device_issue_and_return_follow_the_device(file_archive):
    a = file_archive
    assert a.cli("device", "return", "INV-1", "--person", "P").rc == 3     # never issued
    assert a.cli("device", "issue", "INV-1", "--person", "Ерлан Сәтбаев", "--battery-checked").rc == 0
    r = a.cli("device", "issue", "INV-1", "--person", "Other")
    assert r.rc == 3 and "still out" in r.err and "Ерлан Сәтбаев" in r.err
    assert a.cli("device", "issue", "SD-04", "--person", "Other", "--item", "medium").rc == 0
    assert a.cli("device", "return", "INV-1", "--person", "Colleague", "--faults", "strap broken").rc == 0
    assert a.cli("device", "issue", "X", "--person", "P", user="car7").rc == 3
    lst = a.cli("device", "list", "--json", user="boss").json()
    st = {d["inventory"]: d for d in lst["devices"]}
    assert not st["INV-1"]["out"] and st["INV-1"]["faults"] == "strap broken"
    assert st["SD-04"]["out"] and st["SD-04"]["item"] == "medium"
    entries = a.cli("archive", "journal", "list", "devices", "--json").json()["entries"]
    ret = entries[-1]
    assert ret["type"] == "return" and ret["issue_entry"] == 1
    assert "issued to Ерлан Сәтбаев" in ret["note"]


def test_forms_carry_the_official_columns(file_archive, tmp_path):
    a = file_archive
    s = a.session(started=datetime.now(UTC))
    assert a.cli("device", "issue", "INV-1", "--person", "Ерлан Сәтбаев", "--battery-checked").rc == 0
    assert a.cli("upload", "--out", a.out, user="car7").rc == 0
    assert a.cli("device", "return", "INV-1", "--person", "Ерлан Сәтбаев").rc == 0
    assert a.cli("archive", "copy", s.name, "--to", tmp_path / "usb", "--applicant", "Ерлан Сәтбаев",
                 "--id-document", "ID 1", "--requested", datetime.now(UTC).astimezone().date().isoformat()).rc == 0
    pages = {}
    for name, form in (("devices", "ua-annex3"), ("devices", "kz-annex1"), ("copies", "ua-annex2"),
                       ("access", "table")):
        out = tmp_path / f"{form}.html"
        r = a.cli("archive", "journal", "print", name, "--form", form, "--out", out, user="boss")
        assert r.rc == 0, r.err
        pages[form] = out.read_text()
    a3 = pages["ua-annex3"]
    for col in ("Найменування, інвентарний номер технічного засобу контролю", "Дата, час видачі",
                "Дата, час завантаження інформації в інформаційне сховище", "Дата, час видалення інформації"):
        assert col in a3
    assert "INV-1" in a3 and "INV-REC-01" in a3 and "Відеореєстратор автомобіля № 7" in a3   # issue; upload
    kz = pages["kz-annex1"]
    for col in ("Инвентарный номер видеорегистратора", "Ф.И.О. пользователя видеорегистратора",
                "Дата и время, роспись о получении", "Дата и время, роспись о сдаче", "Примечание"):
        assert col in kz
    a2 = pages["ua-annex2"]
    for col in ("Дата надходження заяви", "Підпис особи, яка отримала копію"):
        assert col in a2
    assert s.name in a2 and "повідомлено про захист персональних даних" in a2
    assert "archive copy" in pages["table"]
    assert a.cli("archive", "journal", "print", "holds", "--form", "kz-annex1", "--out", tmp_path / "x.html").rc == 2
    with pytest.raises(SystemExit):
        a.cli("archive", "journal", "print", "devices", "--form", "nonsense")
