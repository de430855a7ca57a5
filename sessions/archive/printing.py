"""Journals as the official forms (HTML, optionally PDF) and as CSV (AD-3).

Forms:

* ``ua-annex2``: journal of copies issued (order 408, annex 2; IV.6), from the ``copies`` journal.
* ``ua-annex3``: journal of issue and return of portable recorders and media, uploads and deletions
  (order 408, annex 3; V.1), from the ``devices``, ``uploads`` and ``deletions`` journals: an issue
  and the following return of the same inventory number share one row, an upload and the
  deletion from the recorder share one row.
* ``kz-annex1``: journal of issue and return of video recorders (order 444, annex 1; items 8, 20),
  from the ``devices`` journal.
* ``table``: any journal as a plain numbered table (holds, access).

The column headings of the Ukrainian forms follow the text of order 408 (IV.6, V.1); the annex
tables themselves are not in the reference text we had, so the centre should compare one printed
page with its paper journal once. Signature columns are left empty for ink.

Corrections (KZ 9) print the way a paper journal shows them: the original values struck through,
the corrected values beside them, and a note naming the correcting entry and its reason.
"""
from __future__ import annotations

import csv
import html
import io
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Callable

from sessions.archive.errors import UsageError
from sessions.archive.journals import CORRECTION, Entry, JournalView

TEMPLATE = Path(__file__).with_name("forms") / "journal.html"

FORMS = ("ua-annex2", "ua-annex3", "kz-annex1", "table")
DEFAULT_FORM = {"copies": "ua-annex2", "devices": "ua-annex3", "uploads": "ua-annex3", "deletions": "ua-annex3",
                "holds": "table", "access": "table"}
FORM_JOURNALS = {"ua-annex2": ("copies",), "ua-annex3": ("devices", "uploads", "deletions"),
                 "kz-annex1": ("devices",)}


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def local_time(iso_text: str | None) -> str:
    """'2026-03-02T09:15:00Z' as '02.03.2026 09:15' (UTC shown as such; forms are filled by hand
    in local time, so the UTC mark stays visible)."""
    if not iso_text:
        return ""
    t = str(iso_text)
    try:
        d, rest = t.split("T", 1)
        y, m, dd = d.split("-")
        return f"{dd}.{m}.{y} {rest[:5]}" + (" UTC" if t.endswith("Z") else "")
    except ValueError:
        return t


def day(iso_date: str | None) -> str:
    if not iso_date:
        return ""
    try:
        y, m, d = str(iso_date)[:10].split("-")
        return f"{d}.{m}.{y}"
    except ValueError:
        return str(iso_date)


def field_value(e: Entry, key: str) -> str:
    """The effective value, with the original struck through when a correction changed it."""
    new, old = e.effective.get(key), e.record.get(key)
    if new != old:
        return f"<del>{esc(old)}</del> {esc(new)}"
    return esc(new)


def correction_note(e: Entry, view: JournalView, lang: str = "uk") -> str:
    """The remark a corrected entry gets (KZ 9: the remark names the correction and its reason)."""
    words = {"uk": "виправлено записом №", "ru": "исправлено записью №"}[lang]
    notes = []
    for n in e.corrected_by:
        c = view.by_number(n)
        if c:
            notes.append(f"{words} {n} / corrected by entry {n}: {esc(c.record.get('reason'))}")
    return "<br>".join(notes)


@dataclass
class Row:
    number: str
    cells: list[str]
    css: str = ""


@dataclass
class Form:
    key: str
    annex: str
    title: str
    subtitle: str
    headings: list[str]
    build: Callable[[dict[str, JournalView]], list[Row]]


def _yes(v: Any) -> str:
    return "так / yes" if v else ("ні / no" if v is not None else "")


def _correction_rows(view: JournalView, width: int, lang: str = "uk") -> dict[int, Row]:
    word = {"uk": "Виправлення запису №", "ru": "Исправление записи №"}[lang]
    rows = {}
    for e in view.entries:
        if e.type == CORRECTION:
            changes = "; ".join(f"{esc(k)}: {esc((e.record.get('was') or {}).get(k))} → {esc(v)}"
                                for k, v in (e.record.get("changes") or {}).items())
            cells = [""] * (width - 1)
            cells[-1] = (f"{word} {esc(e.record.get('corrects'))} / correction of entry "
                         f"{esc(e.record.get('corrects'))}: {esc(e.record.get('reason'))}. {changes}. "
                         f"{esc(e.record.get('user'))}, {esc(local_time(e.record.get('t_utc')))}")
            rows[e.number] = Row(str(e.number), cells, "correction")
    return rows


def build_annex2(views: dict[str, JournalView]) -> list[Row]:
    view = views["copies"]
    out: list[Row] = []
    corr = _correction_rows(view, 10)
    for e in view.entries:
        if e.type == CORRECTION:
            out.append(corr[e.number])
            continue
        r = e.effective
        who = field_value(e, "applicant")
        if r.get("representative"):
            who += f"<br>представник / representative: {field_value(e, 'representative')}<br>" \
                   f"повноваження / authority: {field_value(e, 'authority')}"
        who += f"<br>документ / ID: {field_value(e, 'id_document')}"
        basis = field_value(e, "authority_request") if r.get("authority_request") else "заява (IV.3)"
        note = []
        if r.get("personal_data_notice"):
            note.append("повідомлено про захист персональних даних (IV.7)")
        if r.get("late"):
            note.append("видано після строку / issued late")
        note.append(correction_note(e, view))
        out.append(Row(str(e.number), [
            esc(day(r.get("requested"))),
            f"{field_value(e, 'candidate')}<br>{esc(day(r.get('exam_date')))}",
            who,
            basis,
            f"{esc(local_time(r.get('t_utc')))}<br>строк / due: {esc(day(r.get('deadline')))}",
            f"{esc(r.get('session_id'))}<br>{esc(r.get('files'))} файлів, {esc(r.get('medium'))}",
            esc(r.get("user")),
            "",
            "<br>".join(n for n in note if n),
        ]))
    return out


def _device_pairs(view: JournalView) -> list[tuple[Entry, Entry | None]]:
    """Each issue with the return of the same inventory number that follows it."""
    open_issue: dict[str, int] = {}
    pairs: list[tuple[Entry, Entry | None]] = []
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
                pairs.append((e, None))   # a return without an issue in this journal
    return pairs


def build_annex3(views: dict[str, JournalView]) -> list[Row]:
    out: list[tuple[str, Row]] = []
    dev = views["devices"]
    for issue, ret in _device_pairs(dev):
        r = issue.effective
        if issue.type == "return":   # unmatched return
            issue, ret = None, issue  # type: ignore[assignment]
        rr = ret.effective if ret else {}
        notes = [n for n in ((correction_note(issue, dev) if issue else ""), (correction_note(ret, dev) if ret else ""),
                             esc(r.get("note") if issue else ""), esc(rr.get("note"))) if n]
        state = []
        if ret is not None:
            if rr.get("battery_checked"):
                state.append("заряд перевірено / battery checked")
            if rr.get("faults"):
                state.append(f"несправності / faults: {field_value(ret, 'faults')}")
        issued = ""
        if issue is not None:
            issued = esc(local_time(r.get("at"))) + \
                f"<br>заряд перевірено / battery checked: {_yes(r.get('battery_checked'))}"
            if r.get("faults"):
                issued += f"<br>несправності / faults: {field_value(issue, 'faults')}"
        base = issue or ret
        out.append((str(base.record.get("t_utc")), Row(f"П{base.number}", [
            f"{esc(base.effective.get('item', 'recorder'))} № {field_value(base, 'inventory')}",
            issued,
            f"{field_value(issue, 'person')}" if issue else "",
            (esc(local_time(rr.get("at"))) + ("<br>" + "<br>".join(state) if state else "")) if ret else "<br>".join(state),
            esc(rr.get("user")) if ret else "",
            "", "", "<br>".join(notes)])))
    up = views["uploads"]
    removed = {e.effective.get("upload_entry"): e for e in up.facts() if e.type == "device-deleted"}
    for e in up.facts():
        if e.type != "upload":
            continue
        r = e.effective
        gone = removed.get(e.number)
        out.append((str(r.get("t_utc")), Row(f"З{e.number}", [
            f"{esc(r.get('device'))}", "", "", "", esc(r.get("user")),
            f"{esc(local_time(r.get('t_utc')))}<br>{esc(r.get('session_id'))} (іспит / exam {esc(day(r.get('exam_date')))})",
            (f"з засобу / from the recorder: {esc(local_time(gone.record.get('t_utc')))}" if gone else ""),
            correction_note(e, up)])))
    dl = views["deletions"]
    for e in dl.facts():
        r = e.effective
        out.append((str(r.get("t_utc")), Row(f"В{e.number}", [
            "інформаційне сховище / archive", "", "", "", esc(r.get("user")), "",
            f"{esc(local_time(r.get('t_utc')))}<br>{esc(r.get('session_id'))} (іспит / exam {esc(day(r.get('exam_date')))}, "
            f"строк зберігання до / kept until {esc(day(str(r.get('expires_at', ''))[:10]))})",
            ("із запізненням / late" if r.get("late") else "") + correction_note(e, dl)])))
    out.sort(key=lambda kv: kv[0])
    for name, prefix in (("devices", "П"), ("uploads", "З"), ("deletions", "В")):
        for n, row in _correction_rows(views[name], 9).items():
            row.number = f"{prefix}{n}"
            e = views[name].by_number(n)
            out.append((str(e.record.get("t_utc")) if e else "", row))
    out.sort(key=lambda kv: kv[0])
    return [row for _k, row in out]


def build_kz(views: dict[str, JournalView]) -> list[Row]:
    dev = views["devices"]
    out: list[tuple[str, Row]] = []
    for issue, ret in _device_pairs(dev):
        if issue.type == "return":
            issue, ret = None, issue  # type: ignore[assignment]
        base = issue or ret
        r = issue.effective if issue else {}
        rr = ret.effective if ret else {}
        check = []
        if issue is not None:
            check.append(f"при получении: заряд проверен — {'да' if r.get('battery_checked') else 'нет'}")
        if ret is not None and rr.get("faults"):
            check.append(f"неисправности: {field_value(ret, 'faults')}")
        if issue is not None and r.get("faults"):
            check.append(f"при выдаче: {field_value(issue, 'faults')}")
        notes = [n for n in ((correction_note(issue, dev, "ru") if issue else ""),
                             (correction_note(ret, dev, "ru") if ret else ""), esc(r.get("note")), esc(rr.get("note")))
                 if n]
        out.append((str(base.record.get("t_utc")), Row(str(base.number), [
            field_value(base, "inventory"),
            field_value(issue, "person") if issue else field_value(ret, "person"),
            esc(local_time(r.get("at"))) if issue else "",
            esc(local_time(rr.get("at"))) if ret else "",
            "<br>".join(check),
            "<br>".join(notes)])))
    for n, row in _correction_rows(dev, 7, "ru").items():
        e = dev.by_number(n)
        out.append((str(e.record.get("t_utc")) if e else "", row))
    out.sort(key=lambda kv: kv[0])
    return [row for _k, row in out]


def build_table(views: dict[str, JournalView]) -> list[Row]:
    (view,) = views.values()
    out = []
    for e in view.entries:
        fields = "; ".join(f"{esc(k)}: {field_value(e, k)}" for k in e.record
                           if k not in ("entry", "type", "t_utc", "user", "role", "host", "prev_sha256"))
        out.append(Row(str(e.number), [esc(local_time(e.record.get("t_utc"))), esc(e.type),
                                       f"{esc(e.record.get('user'))} ({esc(e.record.get('role'))})",
                                       fields, correction_note(e, view)], "correction" if e.type == CORRECTION else ""))
    return out


FORM_SPECS: dict[str, Form] = {
    "ua-annex2": Form("ua-annex2", "Додаток 2 до Інструкції (пункт 6 розділу IV), наказ МВС від 22.05.2020 № 408",
                      "Журнал обліку видачі копій фотографічних зображень, відео-, аудіозаписів, отриманих за "
                      "допомогою технічних засобів контролю",
                      "Journal of copies of photographs, video and audio recordings issued",
                      ["№ з/п", "Дата надходження заяви", "Прізвище, ім'я, по батькові особи, яка складала іспит; "
                       "дата складання іспиту", "Заявник (уповноважений представник): прізвище, ім'я, по батькові; "
                       "документ, що посвідчує особу; документ про повноваження", "Підстава видачі",
                       "Дата видачі копії; строк видачі", "Найменування (ідентифікатор) запису; кількість файлів; носій",
                       "Прізвище, ініціали працівника, який видав копію", "Підпис особи, яка отримала копію",
                       "Примітка"], build_annex2),
    "ua-annex3": Form("ua-annex3", "Додаток 3 до Інструкції (пункт 1 розділу V), наказ МВС від 22.05.2020 № 408",
                      "Журнал обліку видачі, приймання переносного технічного засобу контролю, електронного "
                      "носія, завантаження та видалення інформації",
                      "Journal of issue and return of portable recorders and media, uploads and deletions",
                      ["№ з/п", "Найменування, інвентарний номер технічного засобу контролю, електронного носія",
                       "Дата, час видачі", "Прізвище, ініціали екзаменатора, якому видано; підпис",
                       "Дата, час приймання; стан (заряд, несправності)", "Відповідальна особа; підпис",
                       "Дата, час завантаження інформації в інформаційне сховище",
                       "Дата, час видалення інформації", "Примітка"], build_annex3),
    "kz-annex1": Form("kz-annex1", "Приложение 1 к Инструкции, приказ МЧС РК от 22.08.2023 № 444",
                      "Журнал учета выдачи и сдачи видеорегистратора",
                      "Journal of issue and return of video recorders",
                      ["№ п/п", "Инвентарный номер видеорегистратора", "Ф.И.О. пользователя видеорегистратора",
                       "Дата и время, роспись о получении", "Дата и время, роспись о сдаче",
                       "Проверка заряда аккумулятора, неисправности", "Примечание"], build_kz),
    "table": Form("table", "", "Журнал", "Journal",
                  ["№", "Дата, час / time", "Запис / entry", "Користувач / user", "Зміст / content", "Примітка / note"],
                  build_table),
}


def render_html(views: dict[str, JournalView], form: str, centre: str = "", archive: str = "",
                printed_by: str = "", printed_at: str = "") -> str:
    """The journal(s) as one printable HTML page laid out like the official form."""
    if form not in FORM_SPECS:
        raise UsageError(f"no form {form!r}; forms: {', '.join(FORMS)}")
    spec = FORM_SPECS[form]
    rows = spec.build(views)
    title = spec.title if form != "table" else f"Журнал: {next(iter(views))} / journal: {next(iter(views))}"
    problems = [p for v in views.values() for p in v.problems]
    firsts = [e.record.get("t_utc") for v in views.values() for e in v.entries[:1]]
    lasts = [e.record.get("t_utc") for v in views.values() for e in v.entries[-1:]]
    meta = (f"{esc(centre)}<br>" if centre else "") + \
        f"Розпочато / started: {esc(local_time(min(firsts) if firsts else ''))} &nbsp; " \
        f"Останній запис / last entry: {esc(local_time(max(lasts) if lasts else ''))} &nbsp; " \
        f"Записів / entries: {sum(len(v.entries) for v in views.values())}"
    prob_html = ""
    if problems:
        prob_html = ('<div class="problems"><b>ЦІЛІСНІСТЬ ЖУРНАЛУ ПОРУШЕНО / THE JOURNAL IS NOT INTACT</b><br>'
                     + "<br>".join(esc(p) for p in problems) + "</div>")
    heads = "".join(f"<th>{esc(h)}</th>" for h in spec.headings)
    nums = "".join(f'<th class="num">{i}</th>' for i in range(1, len(spec.headings) + 1))
    body = []
    for r in rows:
        cells = "".join(f"<td>{c}</td>" for c in r.cells)
        body.append(f'<tr class="{r.css}"><td class="no">{esc(r.number)}</td>{cells}</tr>')
    if not body:
        body.append(f'<tr><td colspan="{len(spec.headings)}">Записів немає / no entries</td></tr>')
    legend = ""
    if form == "ua-annex3":
        legend = ("Номери: П — видача/приймання (журнал devices), З — завантаження (uploads), В — видалення "
                  "(deletions). / Numbers: П issue/return, З upload, В deletion; the number is the journal entry. ")
    footer = (f'<p class="small">{legend}Надруковано / printed {esc(printed_at)} — {esc(printed_by)}; архів / archive '
              f"{esc(archive)}. Записи журналу не редагуються: помилки виправляються новим записом із посиланням "
              "(KZ 9). Entries are append-only and hash-chained; corrections are new entries.</p>")
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        lang="uk", title=esc(title), subtitle=esc(spec.subtitle), annex=esc(spec.annex), meta=meta,
        problems=prob_html, headings=heads, numbers=nums, rows="\n".join(body), footer=footer)


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


CONVERTERS = ("chromium", "chromium-browser", "google-chrome", "soffice", "libreoffice", "wkhtmltopdf")


def find_converter() -> str | None:
    for name in CONVERTERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def html_to_pdf(html_text: str, pdf: Path, converter: str | None = None) -> str:
    """Convert with the first converter found; returns its name. Usage error when none is there."""
    exe = converter or find_converter()
    if not exe:
        raise UsageError("no HTML-to-PDF converter found (chromium, libreoffice or wkhtmltopdf): install one, or "
                         "open the HTML file in a browser and print it")
    name = Path(exe).name
    with tempfile.TemporaryDirectory(prefix="examrec-print-") as tmp:
        src = Path(tmp) / (pdf.stem + ".html")
        src.write_text(html_text, encoding="utf-8")
        if name in ("soffice", "libreoffice"):
            cmd = [exe, "--headless", "--convert-to", "pdf", "--outdir", tmp, str(src)]
        elif name == "wkhtmltopdf":
            cmd = [exe, "--quiet", "-O", "Landscape", str(src), str(Path(tmp) / (pdf.stem + ".pdf"))]
        else:
            cmd = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--no-pdf-header-footer",
                   f"--print-to-pdf={Path(tmp) / (pdf.stem + '.pdf')}", src.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        out = Path(tmp) / (pdf.stem + ".pdf")
        if proc.returncode != 0 or not out.exists():
            raise UsageError(f"{name} could not make the PDF (exit {proc.returncode}): {proc.stderr.strip()[:300]}")
        shutil.move(str(out), pdf)
    return name
