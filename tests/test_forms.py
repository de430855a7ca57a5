"""The printed journal forms, as a records officer prints them: one archive with issues and returns,
an upload and the deletion from the recorder, a deletion at the end of retention, a copy, a
complaint and its decision, and a correction; every form rendered to PDF by Debian's Chromium and
to PNG by pdftoppm, and read back with pdftotext.

A form must show Cyrillic names, the centre's local time, inventory numbers, the annex's
numbered columns and rows numbered in digits, a cover page, a corrected value struck through
beside the correction; and never a login, the host name, an English word or a file path. The
PNGs go to test-artifacts/forms/ (the README shows copies of them from tests/screenshots/).
"""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from archive_harness import PASSWORDS, make_archive

UTC = timezone.utc
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "forms"
LOGINS = tuple(PASSWORDS)                       # olena, car7, boss: never on a form
CANDIDATE = {"candidate": "Коваль Олена Петрівна", "candidate_id": "ВН123456", "examiner": "Шевченко Петро",
             "plate": "АА 1234 ВВ", "centre": "ТСЦ 8041", "exam": "practical"}
OLD = {"candidate": "Бондаренко Ігор", "candidate_id": "КА000111", "examiner": "Шевченко Петро",
       "plate": "АА 1234 ВВ", "centre": "ТСЦ 8041", "exam": "practical"}
# 2 March 2026, 07:05 UTC is 09:05 in Kyiv (the centre's zone, UTC+2 in winter).
ISSUED_AT, RETURNED_AT = "2026-03-02T07:05:00Z", "2026-03-02T13:40:00Z"


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (cmd, proc.stderr)
    return proc.stdout


@pytest.fixture(scope="module")
def printed(tmp_path_factory) -> dict[str, dict]:
    """Every form of one realistic archive, as HTML, PDF text and PNG pages."""
    for tool in ("pdftotext", "pdftoppm", "chromium"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: the Makefile installs it from .ci/apt-packages")
    base = tmp_path_factory.mktemp("forms")
    a = make_archive("file", base / "a")
    assert a.cli("device", "issue", "INV-0017", "--person", "Шевченко Петро Іванович", "--battery-checked",
                 "--at", ISSUED_AT).rc == 0
    assert a.cli("device", "issue", "SD-0004", "--item", "medium", "--person", "Шевченко Петро Іванович",
                 "--at", ISSUED_AT).rc == 0
    # The car's recorder (the recorder account's inventory number) is issued too: its uploads and
    # their deletion from it fill columns 7 and 8 of its row.
    assert a.cli("device", "issue", "INV-REC-01", "--person", "Шевченко Петро Іванович", "--battery-checked",
                 "--at", ISSUED_AT).rc == 0
    s = a.session(details=CANDIDATE, started=datetime.now(UTC) - timedelta(hours=2))
    old = a.session(details=OLD, started=datetime(2025, 1, 14, 8, 30, tzinfo=UTC))
    assert a.cli("upload", "--out", a.out, user="car7").rc == 0
    assert a.cli("device", "return", "INV-REC-01", "--person", "Шевченко Петро Іванович").rc == 0
    assert a.cli("device", "return", "INV-0017", "--person", "Шевченко Петро Іванович", "--battery-checked",
                 "--faults", "тріщина кріплення", "--at", RETURNED_AT).rc == 0
    r = a.cli("archive", "journal", "correct", "devices", "1", "--reason", "помилка в прізвищі",
              "--set", "person=Шевчено Петро Іванович")
    assert r.rc == 0, r.err
    assert a.cli("archive", "sweep").rc == 0                        # the 2025 session's retention has ended
    today = datetime.now(UTC).astimezone().date().isoformat()
    r = a.cli("archive", "copy", s.name, "--to", base / "usb", "--applicant", "Коваль Олена Петрівна",
              "--id-document", "паспорт ВН123456", "--requested", today, "--medium", "флеш-накопичувач заявника")
    assert r.rc == 0, r.err
    assert a.cli("archive", "hold", s.name, "--complaint", "скарга № 114 від 02.03.2026").rc == 0
    assert a.cli("archive", "release", s.name, "--decision", "рішення № 31 від 05.03.2026").rc == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict] = {}
    for name, form in (("copies", "ua-annex2"), ("devices", "ua-annex3"), ("devices", "kz-annex1"),
                       ("holds", "ua-holds")):
        html, pdf = base / f"{form}.html", base / f"{form}.pdf"
        r = a.cli("archive", "journal", "print", name, "--form", form, "--out", html, "--pdf", pdf, user="boss")
        assert r.rc == 0, r.err
        layout = run(["pdftotext", "-layout", str(pdf), "-"])
        text = " ".join(run(["pdftotext", str(pdf), "-"]).split())     # reading order, one line
        pages = run(["pdfinfo", str(pdf)]) if shutil.which("pdfinfo") else ""
        for old_png in ARTIFACTS.glob(f"{form}-*.png"):
            old_png.unlink()
        run(["pdftoppm", "-png", "-r", "80", str(pdf), str(ARTIFACTS / form)])
        out[form] = {"html": html.read_text(encoding="utf-8"), "text": text, "layout": layout, "pdfinfo": pages,
                     "note": Path(str(html) + ".verification.txt").read_text(encoding="utf-8"),
                     "pngs": sorted(ARTIFACTS.glob(f"{form}-*.png")), "sessions": {s.name, old.name}}
    return out


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def has(text: str, phrase: str) -> bool:
    """``phrase`` is on the page, whatever the line breaks inside a table cell (pdftotext drops the
    hyphen of a word broken at the end of a line, so hyphens do not count either)."""
    squash = lambda t: re.sub(r"[\s\u00ad-]+", "", t)   # noqa: E731
    return squash(phrase) in squash(text)


def latin_words(text: str) -> set[str]:
    """Words in Latin letters, other than Roman numerals (the orders number their sections I, IV, V)."""
    return {w for w in re.findall(r"[A-Za-z]{2,}", text) if not re.fullmatch(r"[IVX]+", w)}


@pytest.mark.parametrize("form", ["ua-annex2", "ua-annex3", "kz-annex1", "ua-holds"])
def test_a_form_speaks_only_its_language_and_names_people(printed, form):
    p = printed[form]
    text = p["text"]
    # Data written in Latin letters by nature: inventory numbers and session identifiers. A table
    # cell breaks an identifier anywhere, so compare with every space and hyphen taken out.
    squashed = re.sub(r"[\s\u00ad-]+", "", text)
    for sid in p["sessions"]:
        squashed = squashed.replace(sid.replace("-", ""), "")
    english = latin_words(squashed) - {"INV", "INVREC", "SD"}
    assert english == set(), english                                          # no English word
    for login in LOGINS:
        assert not re.search(rf"\b{login}\b", text), login
    assert socket.gethostname() not in text
    assert "file:" not in text and "/tmp" not in text and "sha256" not in text.lower()
    assert has(text, "Шевченко Петро Іванович") or form in ("ua-annex2", "ua-holds")
    # The cover page, then the table: at least two pages, A4 landscape, numbered.
    assert len(p["pngs"]) >= 2
    assert re.search(r"(Сторінка|Страница) 1 / \d", text)
    assert re.search(r"Page size:\s+841\.\d+ x 59[45]\.\d+ pts \(A4\)", p["pdfinfo"]), p["pdfinfo"]   # A4 landscape
    for png in p["pngs"]:
        width, height = png_size(png)
        assert width > height and width > 600, png                # landscape, rendered
    # The columns are numbered 1..N in a row of their own, the rows 1, 2, 3 in digits.
    ncols = {"ua-annex2": 10, "ua-annex3": 9, "kz-annex1": 7, "ua-holds": 9}[form]
    numbers = r"\s+".join(str(i) for i in range(1, ncols + 1))
    header = re.search(rf"^\s*{numbers}\s*$", p["layout"], re.M)
    assert header, p["layout"][:3000]
    assert re.search(r"^\s*1\s{2,}\S", p["layout"][header.end():], re.M)      # the first row, numbered 1
    assert "З1" not in text and "З3" not in text
    # No technical text on the page; it is in the verification note.
    assert "chain intact" in p["note"] and "row 1:" in p["note"]


def test_annex3_rows_show_local_time_inventory_numbers_and_the_responsible_person(printed):
    text = printed["ua-annex3"]["text"]
    html = printed["ua-annex3"]["html"]
    assert has(text, "ЖУРНАЛ")
    assert has(text, "Розпочато") and has(text, "Закінчено")
    assert has(text, "02.03.2026 09:05") and has(text, "02.03.2026 15:40")      # Kyiv time, not UTC
    assert has(text, "INV-0017") and has(text, "SD-0004") and has(text, "INV-REC-01")
    assert has(text, "Відеореєстратор автомобіля № 7")                         # the recorder account's name
    assert has(text, "Марія Бондар")                                         # the responsible person
    assert has(text, "Коваль Олена Петрівна") and has(text, "Бондаренко Ігор")   # uploaded, and deleted at retention end
    assert has(text, "Інформаційне сховище")
    # One row per issue and return; the car recorder's row carries both uploads and their deletion.
    note = printed["ua-annex3"]["note"]
    (car_row,) = [ln for ln in note.splitlines() if "uploads #" in ln]
    assert car_row.count("uploads #") == 4 and "devices #" in car_row, note     # 2 uploads, 2 deletions
    # The correction: the old value struck through, the new beside it, a signed remark.
    assert "<del>Шевченко Петро Іванович</del> Шевчено Петро Іванович" in html
    assert has(text, "помилка в прізвищі") and has(text, "Виправлено")


def test_kz_annex1_is_in_russian_with_its_columns(printed):
    text = printed["kz-annex1"]["text"]
    for col in ("Инвентарный номер", "Ф.И.О. пользователя", "Дата и время, роспись о", "Примечание"):
        assert col in text.replace("\n", " ") or col in printed["kz-annex1"]["html"]
    assert has(text, "Начат") and has(text, "Окончен")
    assert has(text, "при получении заряд проверен: да") and has(text, "Исправлено")
    assert has(text, "тріщина кріплення")


def test_annex2_and_the_holds_journal(printed):
    a2 = printed["ua-annex2"]["text"]
    assert has(a2, "Коваль Олена Петрівна") and has(a2, "паспорт ВН123456") and has(a2, "флеш-накопичувач заявника")
    assert has(a2, "Марія Бондар")                                           # who issued the copy
    holds = printed["ua-holds"]["text"]
    assert has(holds, "скарга № 114") and has(holds, "рішення № 31") and has(holds, "Марія Бондар")
    assert has(holds, "Коваль Олена Петрівна")


def test_templates_escape_what_people_typed(tmp_path):
    from sessions.archive.config import Settings
    from sessions.archive.journals import Entry, JournalView, apply_corrections
    from sessions.archive.printing import render_form
    e = Entry(1, {"entry": 1, "type": "issue", "t_utc": "2026-03-02T07:00:00Z", "user": "x", "inventory": "<b>1</b>",
                  "person": "<script>alert(1)</script>", "at": "2026-03-02T07:00:00Z"}, "0" * 64)
    apply_corrections([e])
    page = render_form({"devices": JournalView("devices", [e], [])}, "kz-annex1", Settings()).html
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "&lt;b&gt;1&lt;/b&gt;" in page


def test_without_a_zone_setting_forms_use_the_machines_zone(monkeypatch):
    from sessions.archive.config import Settings
    from sessions.archive.journals import Entry, JournalView, apply_corrections
    from sessions.archive.printing import render_form
    monkeypatch.setenv("TZ", "Asia/Almaty")                              # UTC+5 all year
    e = Entry(1, {"entry": 1, "type": "issue", "t_utc": "2026-03-02T07:00:00Z", "user": "x", "inventory": "7",
                  "person": "Ерлан Сәтбаев", "at": "2026-03-02T07:00:00Z", "battery_checked": True}, "0" * 64)
    apply_corrections([e])
    views = {"devices": JournalView("devices", [e], [])}
    assert "02.03.2026 12:00" in render_form(views, "kz-annex1", Settings()).html
    assert "02.03.2026 09:00" in render_form(views, "kz-annex1", Settings(timezone="Europe/Kyiv")).html


def test_a_forged_row_is_marked_on_the_printed_page_itself(tmp_path):
    """An entry no authorised key signed, chained correctly into a folder archive's journal by
    someone who can write the folder, is printed (never dropped silently) and marked on the form:
    its row is set apart and followed by a line saying it is no journal entry; the genuine rows
    carry no mark; the verification note names the row and why."""
    import json
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from sessions.archive.journals import entry_signed_bytes
    from sessions.evidence.chain import line_hash
    from sessions.evidence.signing import public_key_hex
    a = make_archive("file", tmp_path / "a")
    assert a.cli("archive", "find").rc == 0
    journal = Path(a.url.removeprefix("file://")) / "journals" / "access.jsonl"
    last = journal.read_bytes().splitlines()[-1]
    fresh = Ed25519PrivateKey.generate()
    rec = {"entry": json.loads(last)["entry"] + 1, "type": "access", "t_utc": "2026-12-01T10:00:00.000000Z",
           "user": "olena", "role": "officer", "host": "office-pc", "command": "archive release",
           "target": "all", "result": "ok", "detail": "", "signer": public_key_hex(fresh),
           "prev_sha256": line_hash(last)}
    rec["signature"] = fresh.sign(entry_signed_bytes(rec)).hex()
    with open(journal, "ab") as fh:
        fh.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")

    page, note = tmp_path / "access.html", tmp_path / "access.note.txt"
    r = a.cli("archive", "journal", "print", "access", "--form", "table", "--out", page, "--note", note)
    assert r.rc == 1, r.out + r.err                              # the journal is not intact: exit 1
    html = page.read_text(encoding="utf-8")
    tbody = html[html.index("<tbody>"):html.index("</tbody>")]
    rows = re.findall(r"<tr( class=\"[^\"]*\")?>(.*?)</tr>", tbody, re.S)
    forged = [i for i, (cls, _) in enumerate(rows) if cls == ' class="forged"']
    assert len(forged) == 1 and "archive release" in rows[forged[0]][1]
    cls, note_row = rows[forged[0] + 1]
    assert cls == ' class="forged-note"' and "ПІДРОБЛЕНИЙ ЗАПИС" in note_row
    number = re.search(r'<td class="no">(\d+)', rows[forged[0]][1]).group(1)
    genuine = [body for cls, body in rows if not cls]
    assert len(genuine) >= 2 and not any("&#x2716;" in b or "✖" in b or "ПІДРОБЛЕНИЙ" in b for b in genuine)
    text = note.read_text(encoding="utf-8")
    assert f"row {number} is marked FORGED on the page: access #{rec['entry']}: signed by an unregistered key" in text
