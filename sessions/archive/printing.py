"""Journals as the official forms, ready to sign (HTML and PDF), and as CSV (AD-3).

Forms, one per annex:

* ``ua-annex2``: journal of copies issued (order 408, annex 2; IV.6), from the ``copies`` journal.
* ``ua-annex3``: journal of issue and return of portable recorders and media, uploads and deletions
  (order 408, annex 3; V.1), from ``devices``, ``uploads`` and ``deletions``: an issue and the
  following return of the same inventory number share one row, an upload and the deletion from
  the recorder share one row, a deletion at the end of retention has its own.
* ``kz-annex1``: journal of issue and return of video recorders (order 444, annex 1; items 8, 9,
  20), from ``devices``, in Russian.
* ``ua-holds``: the complaints that block deletion (UA IV.2) and their decisions, in the same style.
* ``table``: any journal as a plain numbered table (the access journal).

A form speaks only the language of its order (Ukrainian; Russian for Kazakhstan), prints the
centre's local time (archive setting ``timezone``, default the system's zone), people by their
full names and devices by name and inventory number (never logins or host names), numbers its
columns as the annex does and its rows 1, 2, 3..., leaves rows tall enough to sign, and opens
with a cover page (the centre, the title, begun and ended dates). What the page must not carry
(entry numbers, hash chains, the archive's address) goes into a separate verification note
(``verification_note``) that maps each printed row to its journal entries and says whether
the chains are intact.

Corrections (KZ 9: struck through, the new value written, a remark signed in the notes column)
print the original value struck through with the corrected value beside it, and a remark naming
who corrected it, when and why.

The UA column headings follow the text of order 408 (IV.6, V.1); the annex tables themselves are
not in the reference text we had, so a centre should compare one printed page with its paper
journal once. The KZ headings are those of annex 1.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, Callable, Mapping

from sessions.archive.config import Settings
from sessions.archive.errors import UsageError
from sessions.archive.journals import Entry, JournalView
from sessions.archive.localtime import centre_zone, local_date, local_datetime, parse_utc

FORMS_DIR = Path(__file__).with_name("forms")
FORMS = ("ua-annex2", "ua-annex3", "kz-annex1", "ua-holds", "table")
DEFAULT_FORM = {"copies": "ua-annex2", "devices": "ua-annex3", "uploads": "ua-annex3", "deletions": "ua-annex3",
                "holds": "ua-holds", "access": "table"}
FORM_JOURNALS = {"ua-annex2": ("copies",), "ua-annex3": ("devices", "uploads", "deletions"),
                 "kz-annex1": ("devices",), "ua-holds": ("holds",)}


@functools.cache
def _templates() -> Any:
    """The forms' templates (escaping by default). Made on the first form printed: every other
    archive command would pay for importing jinja2."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
    return Environment(loader=FileSystemLoader(str(FORMS_DIR)), autoescape=select_autoescape(["html"]),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


# --- cell contents --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Piece:
    """A run of text in a cell; ``struck`` prints it crossed out (a corrected value)."""

    text: str
    struck: bool = False


Line = list[Piece]
Cell = list[Line]


def line(*parts: str | Piece | list[Piece]) -> Line:
    out: Line = []
    for p in parts:
        if isinstance(p, Piece):
            out.append(p)
        elif isinstance(p, list):
            out.extend(p)
        elif p:
            out.append(Piece(p))
    return out


def cell(*lines: Line | str) -> Cell:
    """A cell of the given lines, empty ones left out."""
    out: Cell = []
    for ln in lines:
        ln = line(ln) if isinstance(ln, str) else ln
        if any(p.text for p in ln):
            out.append(ln)
    return out


@dataclass
class Row:
    number: int
    cells: list[Cell]
    sources: list[str] = field(default_factory=list)      # "journal entry N" for the verification note
    forged: list[str] = field(default_factory=list)       # "journal #N: why" for each entry no authorised key signed


@dataclass
class FormSpec:
    key: str
    lang: str
    annex: str
    title: str
    subtitle: str
    headings: list[str]
    signature_columns: tuple[int, ...]                    # 1-based column numbers that take a signature
    widths: list[int]                                    # relative column widths


@dataclass
class Printer:
    """What every row builder needs: the centre's zone, names of people, session details."""

    settings: Settings
    zone: tzinfo
    sessions: Callable[[str], Mapping[str, Any] | None]

    def when(self, iso_text: Any) -> str:
        return local_datetime(str(iso_text) if iso_text else None, self.zone)

    def day(self, value: Any) -> str:
        return local_date(value, self.zone)

    def person(self, login: Any) -> str:
        return self.settings.full_name(str(login or ""))

    def value(self, e: Entry, key: str, show: Callable[[Any], str] = lambda v: "" if v is None else str(v)) -> Line:
        """The effective value; the original struck through before it when a correction changed it."""
        new, old = e.effective.get(key), e.record.get(key)
        if new != old:
            return [Piece(show(old), True), Piece(" "), Piece(show(new))]
        return [Piece(show(new))]

    def remarks(self, e: Entry | None, view: JournalView, lang: str) -> list[Line]:
        """The signed remark of each correction of ``e`` (KZ 9)."""
        if e is None:
            return []
        word = {"uk": "Виправлено", "ru": "Исправлено"}[lang]
        sign = {"uk": "підпис", "ru": "подпись"}[lang]
        out = []
        for n in e.corrected_by:
            c = view.by_number(n)
            if c is None:
                continue
            out.append(line(f"{word} {self.when(c.record.get('t_utc'))}, {self.person(c.record.get('user'))}: "
                            f"{c.record.get('reason') or ''}. {sign} ________"))
        return out

    def record_of(self, session_id: Any, exam_date: Any, lang: str = "uk") -> str:
        """'запис іспиту Коваль Олена від 02.03.2026 09:15' (the candidate and the exam's local time)."""
        row = self.sessions(str(session_id or "")) or {}
        when = self.when(row.get("started_at")) or self.day(exam_date)
        who = row.get("candidate") or ""
        word = {"uk": "запис іспиту", "ru": "запись экзамена"}[lang]
        frm = {"uk": "від", "ru": "от"}[lang]
        return " ".join(p for p in (word, who, frm, when) if p)


# --- the forms ------------------------------------------------------------------------------------

UA_INSTRUCTION = ("до Інструкції про використання технічних засобів контролю під час складання іспитів "
                  "(у тому числі за допомогою фото-, відео-, аудіотехніки), збереження отриманої за допомогою "
                  "них інформації та доступ до неї")

SPECS: dict[str, FormSpec] = {
    "ua-annex2": FormSpec(
        "ua-annex2", "uk", f"Додаток 2 {UA_INSTRUCTION} (пункт 6 розділу IV)",
        "Журнал", "обліку видачі копій фотографічних зображень, відео-, аудіозаписів, отриманих за допомогою "
                  "технічних засобів контролю",
        ["№ з/п", "Дата надходження заяви", "Прізвище, власне ім'я, по батькові особи, яка складала іспит; "
         "дата складання іспиту", "Заявник (уповноважений представник): прізвище, власне ім'я, по батькові; "
         "документ, що посвідчує особу; документ про повноваження", "Підстава видачі",
         "Дата видачі копії; строк видачі", "Найменування запису; кількість файлів; носій",
         "Прізвище, ініціали працівника, який видав копію; підпис", "Підпис особи, яка отримала копію",
         "Примітка"], (8, 9), [4, 8, 14, 16, 9, 10, 14, 11, 10, 10]),
    "ua-annex3": FormSpec(
        "ua-annex3", "uk", f"Додаток 3 {UA_INSTRUCTION} (пункт 1 розділу V)",
        "Журнал", "обліку видачі, приймання переносного технічного засобу контролю, електронного носія, "
                  "завантаження та видалення інформації",
        ["№ з/п", "Найменування, інвентарний номер технічного засобу контролю, електронного носія",
         "Дата, час видачі", "Прізвище, ініціали екзаменатора, якому видано; підпис",
         "Дата, час приймання; стан (заряд, несправності)", "Відповідальна особа; підпис",
         "Дата, час завантаження інформації в інформаційне сховище", "Дата, час видалення інформації",
         "Примітка"], (4, 6), [4, 14, 10, 13, 12, 13, 14, 12, 10]),
    "kz-annex1": FormSpec(
        "kz-annex1", "ru", "Приложение 1 к Инструкции по использованию технических средств аудио-, видеозаписи "
                           "государственными инспекторами по государственному контролю и надзору в области "
                           "промышленной безопасности. Форма",
        "Журнал", "учета выдачи и сдачи видеорегистратора",
        ["№ п/п", "Инвентарный номер видеорегистратора", "Ф.И.О. пользователя видеорегистратора",
         "Дата и время, роспись о получении", "Дата и время, роспись о сдаче",
         "Проверка заряда аккумулятора, неисправности", "Примечание"], (4, 5), [5, 13, 18, 16, 16, 16, 16]),
    "ua-holds": FormSpec(
        "ua-holds", "uk", "Ведеться відповідно до пункту 2 розділу IV Інструкції",
        "Журнал", "обліку скарг, що блокують видалення записів процесу складання іспитів, та рішень за ними",
        ["№ з/п", "Запис іспиту: прізвище, власне ім'я, по батькові особи; дата, час іспиту",
         "Скарга (номер, дата)", "Дата, час блокування видалення", "Хто заблокував; підпис",
         "Рішення за скаргою (номер, дата)", "Дата, час зняття блокування", "Хто зняв блокування; підпис",
         "Примітка"], (5, 8), [4, 18, 11, 10, 12, 11, 10, 12, 12]),
    "table": FormSpec(
        "table", "uk", "", "Журнал", "доступу до архіву",
        ["№ з/п", "Дата, час", "Особа", "Дія", "Результат"], (), [5, 12, 18, 45, 20]),
}

WORDS = {
    "uk": {"begun": "Розпочато", "ended": "Закінчено", "centre": "(найменування ТСЦ МВС)", "no_entries": "Записів немає",
           "sheets": "У цьому журналі пронумеровано, прошнуровано та скріплено печаткою ______ аркушів.",
           "responsible": "Відповідальна особа", "signature": "(підпис)", "page": "Сторінка",
           "forged": "ПІДРОБЛЕНИЙ ЗАПИС: його не підписала жодна уповноважена особа; це не запис журналу "
                     "(див. примітку перевірки)"},
    "ru": {"begun": "Начат", "ended": "Окончен",
           "centre": "(наименование территориального подразделения ведомства уполномоченного органа в области "
                     "промышленной безопасности)", "no_entries": "Записей нет",
           "sheets": "В настоящем журнале пронумеровано, прошнуровано и скреплено печатью ______ листов.",
           "responsible": "Ответственное лицо", "signature": "(подпись)", "page": "Страница",
           "forged": "ПОДДЕЛЬНАЯ ЗАПИСЬ: её не подписало ни одно уполномоченное лицо; это не запись журнала "
                     "(см. примечание о проверке)"},
}
ITEM_NAMES = {"recorder": "Переносний технічний засіб контролю", "medium": "Електронний носій"}
YES_NO = {"uk": ("так", "ні"), "ru": ("да", "нет")}


def _device_pairs(view: JournalView) -> list[tuple[Entry | None, Entry | None]]:
    """Each issue with the return of the same inventory number that follows it; a return without
    an issue in this journal stands alone."""
    open_issue: dict[str, int] = {}
    pairs: list[tuple[Entry | None, Entry | None]] = []
    for e in view.facts():
        inv = str(e.effective.get("inventory"))
        if e.type == "issue":
            open_issue[inv] = len(pairs)
            pairs.append((e, None))
        elif e.type == "return":
            i = open_issue.pop(inv, None)
            if i is not None:
                pairs[i] = (pairs[i][0], e)
            else:
                pairs.append((None, e))
    return pairs


def _src(journal: str, *entries: Entry | None) -> list[str]:
    out = []
    for e in entries:
        if e is not None:
            out.append(f"{journal} #{e.number}" + (f" (corrected by #{', #'.join(map(str, e.corrected_by))})"
                                                    if e.corrected_by else ""))
    return out


def build_annex2(pr: Printer, views: dict[str, JournalView]) -> list[tuple[str, list[Cell], list[str]]]:
    view = views["copies"]
    rows = []
    for e in view.facts():
        r = e.effective
        # Without --medium the journal holds the folder written to: a path is not for the page.
        medium = lambda v: "електронний носій заявника" if str(v or "").startswith("/") else str(v or "")  # noqa: E731
        applicant = [line("Заявник: ", pr.value(e, "applicant"))]
        if r.get("representative"):
            applicant.append(line("Представник: ", pr.value(e, "representative")))
            applicant.append(line("Повноваження: ", pr.value(e, "authority")))
        applicant.append(line("Документ: ", pr.value(e, "id_document")))
        basis = line(pr.value(e, "authority_request")) if r.get("authority_request") else \
            line("заява (пункт 3 розділу IV)")
        notes = []
        if r.get("personal_data_notice"):
            notes.append(line("повідомлено про захист персональних даних (пункт 7 розділу IV)"))
        if r.get("late"):
            notes.append(line("видано після строку"))
        row = pr.sessions(str(r.get("session_id") or "")) or {}
        rows.append((str(e.record.get("t_utc")), [
            cell(line(pr.day(r.get("requested")))),
            cell(line(pr.value(e, "candidate")), line(pr.when(row.get("started_at")) or pr.day(r.get("exam_date")))),
            cell(*applicant),
            cell(basis),
            cell(line(pr.when(e.record.get("t_utc"))), line("строк: ", pr.day(r.get("deadline")))),
            cell(line(pr.record_of(r.get("session_id"), r.get("exam_date"))),
                 line(f"ідентифікатор {r.get('session_id') or ''}"),
                 line(f"файлів: {r.get('files') or ''}"), line("носій: ", pr.value(e, "medium", medium))),
            cell(line(pr.person(e.record.get("user")))),
            [],
            cell(*notes, *pr.remarks(e, view, "uk")),
        ], _src("copies", e)))
    return rows


def _upload_lines(pr: Printer, uploads: list[tuple[Entry, Entry | None]]) -> tuple[Cell, Cell]:
    """Columns 7 and 8 for the uploads of one device cycle: each upload's time and record, and
    when it was deleted from the device."""
    loaded: Cell = []
    deleted: Cell = []
    for e, gone in uploads:
        rec = pr.record_of(e.effective.get("session_id"), e.effective.get("exam_date"))
        loaded += cell(line(pr.when(e.record.get("t_utc"))), line(rec))
        if gone is not None:
            deleted += cell(line(pr.when(gone.record.get("t_utc"))), line(rec))
    return loaded, deleted


def build_annex3(pr: Printer, views: dict[str, JournalView]) -> list[tuple[str, list[Cell], list[str]]]:
    """One row per issue-and-return of a device, as the paper journal is kept: the examiner takes
    it (columns 2-4), brings it back (5), the responsible person answers for it (6), uploads what
    it recorded (7) and deletes that from the device (8). An upload from a device that was not
    issued (a recorder fixed in a car) has a row of its own, and so has a deletion from the
    storage at the end of retention."""
    dev, up, dl = views["devices"], views["uploads"], views["deletions"]
    yes, no = YES_NO["uk"]
    responsible = pr.settings.responsible_person() or {}
    pairs = _device_pairs(dev)
    removed = {e.effective.get("upload_entry"): e for e in up.facts() if e.type == "device-deleted"}
    # Each upload belongs to the latest issue of its device's inventory number before it.
    attached: dict[int, list[tuple[Entry, Entry | None]]] = {}
    alone: list[Entry] = []
    for e in up.facts():
        if e.type != "upload":
            continue
        when = parse_utc(e.record.get("t_utc"))
        best = None
        for i, (issue, _ret) in enumerate(pairs):
            if issue is None or str(issue.effective.get("inventory")) != str(e.effective.get("device")):
                continue
            at = parse_utc(issue.effective.get("at")) or parse_utc(issue.record.get("t_utc"))
            if at and when and at <= when:
                best = i
        if best is None:
            alone.append(e)
        else:
            attached.setdefault(best, []).append((e, removed.get(e.number)))
    rows = []
    for i, (issue, ret) in enumerate(pairs):
        base = issue or ret
        assert base is not None
        item = pr.settings.device_name(str(base.effective.get("inventory"))) or \
            ITEM_NAMES.get(str(base.effective.get("item") or "recorder"), ITEM_NAMES["recorder"])
        issued: Cell = []
        if issue is not None:
            ri = issue.effective
            issued = cell(line(pr.value(issue, "at", pr.when)),
                          line(f"заряд перевірено: {yes if ri.get('battery_checked') else no}"),
                          line("несправності: ", pr.value(issue, "faults")) if ri.get("faults") else [])
        returned: Cell = []
        if ret is not None:
            rr = ret.effective
            returned = cell(line(pr.value(ret, "at", pr.when)),
                            line(f"заряд перевірено: {yes if rr.get('battery_checked') else no}"),
                            line("несправності: ", pr.value(ret, "faults")) if rr.get("faults") else
                            line("несправностей немає"))
        uploads = attached.get(i, [])
        loaded, deleted = _upload_lines(pr, uploads)
        notes = [line(pr.value(x, "note")) for x in (issue, ret) if x is not None and x.effective.get("note")]
        notes += [line("запис перервано, збережено до останнього фрагмента") for e, _g in uploads
                  if e.effective.get("interrupted")]
        rows.append((str(base.record.get("t_utc")), [
            cell(line(item), line("інв. № ", pr.value(base, "inventory"))),
            issued,
            cell(line(pr.value(issue, "person"))) if issue else [],
            returned,
            cell(line(pr.person(base.record.get("user")))),
            loaded, deleted,
            cell(*notes, *pr.remarks(issue, dev, "uk"), *pr.remarks(ret, dev, "uk"),
                 *[r for e, _g in uploads for r in pr.remarks(e, up, "uk")]),
        ], _src("devices", issue, ret) + [s for e, g in uploads for s in _src("uploads", e, g)]))
    for e in alone:
        r = e.effective
        uploader = pr.settings.user(str(e.record.get("user") or "")) or {}
        device_name = str(uploader.get("full_name") or "") if uploader.get("role") == "recorder" else ""
        # A recorder account uploads by itself; the responsible person answers for it (UA V.1).
        who = uploader if uploader.get("role") in ("officer", "head") else responsible
        gone = removed.get(e.number)
        loaded, deleted = _upload_lines(pr, [(e, gone)])
        rows.append((str(r.get("t_utc")), [
            cell(line(device_name or ITEM_NAMES["recorder"]), line("інв. № ", pr.value(e, "device"))),
            [], [], [],
            cell(line(str(who.get("full_name") or ""))),
            loaded, deleted,
            cell(line("запис перервано, збережено до останнього фрагмента") if r.get("interrupted") else [],
                 *pr.remarks(e, up, "uk")),
        ], _src("uploads", e, gone)))
    for e in dl.facts():
        r = e.effective
        rows.append((str(r.get("t_utc")), [
            cell(line("Інформаційне сховище")),
            [], [], [],
            cell(line(pr.person(e.record.get("user")))),
            [],
            cell(line(pr.when(e.record.get("t_utc"))), line(pr.record_of(r.get("session_id"), r.get("exam_date"))),
                 line(f"строк зберігання закінчився {pr.day(str(r.get('expires_at') or '')[:10])}")),
            cell(line("видалено із запізненням") if r.get("late") else [], *pr.remarks(e, dl, "uk")),
        ], _src("deletions", e)))
    return rows


def build_kz(pr: Printer, views: dict[str, JournalView]) -> list[tuple[str, list[Cell], list[str]]]:
    dev = views["devices"]
    yes, no = YES_NO["ru"]
    rows = []
    for issue, ret in _device_pairs(dev):
        base = issue or ret
        assert base is not None
        check: list[Line] = []
        if issue is not None:
            check.append(line(f"при получении заряд проверен: {yes if issue.effective.get('battery_checked') else no}"))
            if issue.effective.get("faults"):
                check.append(line("при выдаче: ", pr.value(issue, "faults")))
        if ret is not None:
            check.append(line("при сдаче: ", pr.value(ret, "faults")) if ret.effective.get("faults")
                         else line("при сдаче неисправностей нет"))
        notes = [line(pr.value(x, "note")) for x in (issue, ret) if x is not None and x.effective.get("note")]
        rows.append((str(base.record.get("t_utc")), [
            cell(line(pr.value(base, "inventory"))),
            cell(line(pr.value(issue or base, "person"))),
            cell(line(pr.value(issue, "at", pr.when))) if issue else [],
            cell(line(pr.value(ret, "at", pr.when))) if ret else [],
            cell(*check),
            cell(*notes, *pr.remarks(issue, dev, "ru"), *pr.remarks(ret, dev, "ru")),
        ], _src("devices", issue, ret)))
    return rows


def build_holds(pr: Printer, views: dict[str, JournalView]) -> list[tuple[str, list[Cell], list[str]]]:
    view = views["holds"]
    open_rows: dict[tuple[str, str], int] = {}
    pairs: list[tuple[Entry | None, Entry | None]] = []
    for e in view.facts():
        key = (str(e.effective.get("session_id")), str(e.effective.get("complaint")))
        if e.type == "hold":
            open_rows[key] = len(pairs)
            pairs.append((e, None))
        elif e.type == "release":
            i = open_rows.pop(key, None)
            if i is not None:
                pairs[i] = (pairs[i][0], e)
            else:
                pairs.append((None, e))
    rows = []
    for hold, rel in pairs:
        base = hold or rel
        assert base is not None
        r = base.effective
        session = pr.sessions(str(r.get("session_id") or "")) or {}
        rows.append((str(base.record.get("t_utc")), [
            cell(line(str(session.get("candidate") or "")),
                 line(pr.when(session.get("started_at")) or pr.day(r.get("exam_date"))),
                 line(f"ідентифікатор {r.get('session_id') or ''}")),
            cell(line(pr.value(base, "complaint"))),
            cell(line(pr.when(hold.record.get("t_utc")))) if hold else [],
            cell(line(pr.person(hold.record.get("user")))) if hold else [],
            cell(line(pr.value(rel, "decision"))) if rel else [],
            cell(line(pr.when(rel.record.get("t_utc")))) if rel and not rel.effective.get("still_open") else
            (cell(line("блокування триває: відкриті інші скарги")) if rel else []),
            cell(line(pr.person(rel.record.get("user")))) if rel else [],
            cell(*pr.remarks(hold, view, "uk"), *pr.remarks(rel, view, "uk")),
        ], _src("holds", hold, rel)))
    return rows


def build_table(pr: Printer, views: dict[str, JournalView]) -> list[tuple[str, list[Cell], list[str]]]:
    (view,) = views.values()
    results = {"ok": "виконано", "refused": "відмовлено", "denied": "відмовлено (пароль)", "failed": "помилка"}
    rows = []
    for e in view.facts():
        r = e.effective
        rows.append((str(e.record.get("t_utc")), [
            cell(line(pr.when(e.record.get("t_utc")))),
            cell(line(pr.person(e.record.get("user")))),
            cell(line(str(r.get("command") or e.type)), line(str(r.get("target") or ""))),
            cell(line(results.get(str(r.get("result") or ""), str(r.get("result") or "")))),
        ], _src(view.name, e)))
    return rows


BUILDERS: dict[str, Callable[[Printer, dict[str, JournalView]], list[tuple[str, list[Cell], list[str]]]]] = {
    "ua-annex2": build_annex2, "ua-annex3": build_annex3, "kz-annex1": build_kz, "ua-holds": build_holds,
    "table": build_table,
}


@dataclass
class PrintedForm:
    """A form rendered for print, and what its verification note says."""

    form: str
    html: str
    rows: list[Row]
    begun: str
    ended: str


def _rows(form: str, pr: Printer, views: dict[str, JournalView]) -> list[Row]:
    built = BUILDERS[form](pr, views)
    built.sort(key=lambda t: t[0])
    return [Row(i, cells, sources, _forged_sources(sources, views)) for i, (_t, cells, sources) in enumerate(built, start=1)]


_SOURCE_RE = re.compile(r"^(\w+) #(\d+)")


def _forged_sources(sources: list[str], views: dict[str, JournalView]) -> list[str]:
    """Which of a row's entries (its sources, "journal #N ...") no authorised key signed, and why:
    such a row is printed, never silently, but marked as forged on the page itself."""
    out = []
    for s in sources:
        m = _SOURCE_RE.match(s)
        view = views.get(m.group(1)) if m else None
        e = view.by_number(int(m.group(2))) if view and m else None
        if e is not None and e.forged:
            out.append(f"{view.name} #{e.number}: {e.forged}")
        for n in (e.corrected_by if e is not None else []):
            c = view.by_number(n) if view else None
            if c is not None and c.forged:
                out.append(f"{view.name} #{c.number} (a correction): {c.forged}")
    return out


def render_form(views: dict[str, JournalView], form: str, settings: Settings,
                sessions: Callable[[str], Mapping[str, Any] | None] = lambda sid: None,
                zone: tzinfo | None = None) -> PrintedForm:
    """The journal(s) as one printable HTML page laid out like the annex: a cover page, then the
    numbered table. ``sessions`` looks up a session's details (candidate, start) by id."""
    if form not in SPECS:
        raise UsageError(f"no form {form!r}; forms: {', '.join(FORMS)}")
    spec = SPECS[form]
    pr = Printer(settings, zone or centre_zone(settings.timezone), sessions)
    rows = _rows(form, pr, views)
    stamps = [t for v in views.values() for e in v.entries if (t := parse_utc(e.record.get("t_utc")))]
    begun = pr.day(min(stamps).isoformat()) if stamps else ""
    ended = pr.day(max(stamps).isoformat()) if stamps else ""
    responsible = settings.responsible_person() or {}
    html = _templates().get_template("journal.html").render(
        spec=spec, rows=rows, centre=settings.centre, begun=begun, ended=ended,
        responsible=str(responsible.get("full_name") or ""), words=WORDS[spec.lang],
        total_width=sum(spec.widths))
    return PrintedForm(form, html, rows, begun, ended)


def verification_note(printed: PrintedForm, views: dict[str, JournalView], archive: str, printed_by: str,
                      printed_at: datetime) -> str:
    """The technical side of a printed form (kept apart from the page): where each row comes from
    and whether the journals' hash chains are intact."""
    lines = [f"examrec verification note for form {printed.form}",
             f"archive: {archive}", f"printed by: {printed_by} at {printed_at.isoformat(timespec='seconds')}",
             f"journal begun {printed.begun}, last entry {printed.ended}", ""]
    for name, view in views.items():
        n, h = view.last
        state = "chain intact" if view.ok else "NOT INTACT"
        lines.append(f"journal {name}: {len(view.entries)} entries, {state}, last entry #{n} sha256 {h}")
        lines += [f"  problem: {p}" for p in view.problems]
    lines.append("")
    lines.append("printed rows and the journal entries they show:")
    lines += [f"  row {r.number}: {', '.join(r.sources)}" for r in printed.rows]
    for r in printed.rows:
        lines += [f"  row {r.number} is marked FORGED on the page: {why}" for why in r.forged]
    return "\n".join(lines) + "\n"


def export_csv(view: JournalView) -> str:
    """Every entry as stored (one row each), plus which later entries correct it."""
    keys: list[str] = ["entry", "type", "t_utc", "user", "role", "host"]
    for e in view.entries:
        for k in e.record:
            if k not in keys and k != "prev_sha256":
                keys.append(k)
    keys += ["corrected_by", "sha256", "prev_sha256"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(keys)
    for e in view.entries:
        row = []
        for k in keys:
            if k == "corrected_by":
                row.append(" ".join(map(str, e.corrected_by)))
            elif k == "sha256":
                row.append(e.hash)
            else:
                v = e.record.get(k)
                row.append(v if isinstance(v, (str, int, float)) or v is None else
                           json.dumps(v, ensure_ascii=False))
        w.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def html_to_pdf(html_text: str, pdf: Path, chromium: str | None = None, timeout_s: float = 120.0) -> str:
    """Print the page to PDF with headless Chromium (A4 landscape and page numbers come from the
    page's CSS); returns the browser's path. A usage error when no Chromium is installed."""
    exe = chromium or find_chromium()
    if not exe:
        raise UsageError("no Chromium to make the PDF: install it (Debian: apt-get install chromium), or open the "
                         "HTML file in a browser and print it")
    with tempfile.TemporaryDirectory(prefix="examrec-print-") as tmp:
        src = Path(tmp) / "form.html"
        src.write_text(html_text, encoding="utf-8")
        out = Path(tmp) / "form.pdf"
        cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={tmp}/profile",
               "--no-pdf-header-footer", f"--print-to-pdf={out}", src.as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise UsageError(f"{exe} did not finish the PDF within {timeout_s:.0f} s") from None
        if proc.returncode != 0 or not out.exists() or out.stat().st_size == 0:
            raise UsageError(f"{exe} could not make the PDF (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
        pdf.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), pdf)
    return exe
