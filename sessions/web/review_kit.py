"""The review page as files beside a session folder: for copy kits and clip kits.

A kit folder looks the same as what ``examrec view`` serves::

    DEST/review.html
    DEST/review/review.js, review.css, session-data.js
    DEST/<session id>/...          the session's files, bytes unchanged

so the recipient opens ``review.html`` in a browser from the medium, with nothing installed.

A clip kit holds, of the session, only the segments that cover a time range (each file exactly as
recorded, so it still verifies against the signed manifest), plus the manifest, events,
telemetry, route, photos and fragment records; its page opens at the range.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import zipfile
from pathlib import Path
from typing import Any

from sessions.evidence.verify import MISSING_SEGMENT
from sessions.web.review_data import DATA_FILE, ReviewOptions, build_review_data, data_script, verification

log = logging.getLogger(__name__)

ASSET_DIR = Path(__file__).resolve().parent / "review"
PAGE = "review.html"
ASSETS = ("review.js", "review.css")
LEFT_OUT = "listed in the manifest, not on disk"


def write_review_page(dest: Path, session_root: Path, *, verify: dict[str, Any] | None = None,
                      clip: tuple[float, float] | None = None, present: set[str] | None = None,
                      tile_url: str | None = None) -> list[Path]:
    """Write review.html and review/ into ``dest`` for the session folder ``session_root`` (which
    must be inside ``dest``). Returns the files written."""
    dest, session_root = Path(dest), Path(session_root)
    base = session_root.resolve().relative_to(dest.resolve()).as_posix() + "/"
    data = build_review_data(session_root, ReviewOptions(base=base, tile_url=tile_url, clip=clip),
                             verify=verify, present=present)
    (dest / "review").mkdir(parents=True, exist_ok=True)
    written = [dest / PAGE]
    shutil.copyfile(ASSET_DIR / PAGE, dest / PAGE)
    for name in ASSETS:
        shutil.copyfile(ASSET_DIR / name, dest / "review" / name)
        written.append(dest / "review" / name)
    (dest / "review" / DATA_FILE).write_text(data_script(data), encoding="utf-8")
    written.append(dest / "review" / DATA_FILE)
    return written


def covering_segments(manifest: dict[str, Any], start: float, end: float) -> list[str]:
    """The segment files of every stream that hold any frame in [start, end]."""
    files = []
    for s in manifest.get("streams") or []:
        for seg in s.get("segments") or []:
            last = seg.get("last_pts_s")
            if seg.get("first_pts_s", 0) <= end and (last is None or last >= start):
                files.append(seg["file"])
    return files


def clip_verification(clip_root: Path, left_out: set[str]) -> dict[str, Any]:
    """``examrec verify`` on the clip, with the segments left out of it listed, not counted as missing."""
    result = verification(clip_root)
    kept = [p for p in result["problems"]
            if not (p["kind"] == MISSING_SEGMENT and p["file"] in left_out and LEFT_OUT in p["detail"])]
    result["problems"] = kept
    result["ok"] = not kept
    result["untouched"] = all(p["kind"] == "interrupted" for p in kept)
    result["clip_left_out"] = sorted(left_out)
    return result


def write_clip_kit(session_root: Path, start: float, end: float, dest: Path) -> Path:
    """Copy the parts of the session that cover [start, end] into ``dest/<session id>/`` with a
    page that opens at the range; returns ``dest``."""
    session_root, dest = Path(session_root), Path(dest)
    manifest = json.loads((session_root / "manifest.json").read_text(encoding="utf-8"))
    session_id = manifest.get("session_id") or session_root.name
    root = dest / session_id
    segments = set(covering_segments(manifest, start, end))
    all_segments = {seg["file"] for s in manifest.get("streams") or [] for seg in s.get("segments") or []}
    wanted = [p for p in session_root.rglob("*") if p.is_file()
              and not p.name.startswith(".")
              and not p.relative_to(session_root).parts[0] == "recovered"
              and (p.suffix != ".mp4" or p.relative_to(session_root).as_posix() in segments)]
    sums = []
    for src in sorted(wanted):
        rel = src.relative_to(session_root)
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        sums.append(f"{hashlib.sha256(target.read_bytes()).hexdigest()}  {session_id}/{rel.as_posix()}")
    (dest / "SHA256SUMS").write_text("\n".join(sums) + "\n", encoding="utf-8")
    verify = clip_verification(root, all_segments - segments)
    write_review_page(dest, root, verify=verify, clip=(start, end), present=segments)
    (dest / "README.txt").write_text(CLIP_README.format(
        session_id=session_id, start=start, end=end, files=len(segments),
        left_out=len(all_segments - segments)), encoding="utf-8")
    return dest


CLIP_README = """\
CLIP OF A RECORDING / ФРАГМЕНТ ЗАПИСУ
=====================================

Session {session_id}, from {start:.3f} s to {end:.3f} s on the session timeline.

Open review.html in a web browser to watch it (it opens at the clip's start).
Відкрийте review.html у веб-браузері, щоб переглянути фрагмент.

{session_id}/ holds the {files} original segment files that cover this range, byte for byte as
recorded ({left_out} other segments of the session are left out), with the signed manifest, the
events, telemetry, route and fragment records. Each segment still verifies against the signed
manifest: `sha256sum -c SHA256SUMS`, and `examrec verify {session_id}` reports only the left-out
segments as missing.
"""


def write_clip_zip(session_root: Path, start: float, end: float, workdir: Path) -> Path:
    """A clip kit packed as one zip (stored, not compressed: the videos are compressed already)."""
    manifest = json.loads((Path(session_root) / "manifest.json").read_text(encoding="utf-8"))
    session_id = manifest.get("session_id") or Path(session_root).name
    name = f"{session_id}_clip_{start:.1f}-{end:.1f}s"
    kit = write_clip_kit(session_root, start, end, Path(workdir) / name)
    zip_path = Path(workdir) / f"{name}.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as z:
        for path in sorted(kit.rglob("*")):
            if path.is_file():
                z.write(path, f"{name}/{path.relative_to(kit).as_posix()}")
    return zip_path


COPY_README_SECTION = """
Watching the recording / Перегляд запису
----------------------------------------
Open review.html (beside this file) in any web browser: every camera in sync with the route,
speed, pedals and the exam's events, with the verification result at the top. Nothing needs
installing and nothing is sent anywhere; the page only reads the files of {session_id}/.

Відкрийте review.html (поруч із цим файлом) у будь-якому веб-браузері: усі камери синхронно з
маршрутом, швидкістю, педалями та подіями іспиту, результат перевірки вгорі. Нічого не потрібно
встановлювати, сторінка лише читає файли з {session_id}/.
"""


def add_copy_page(dest: Path, session_root: Path) -> None:
    """The review page in a copy kit, and a paragraph in its README.txt on how to open it."""
    write_review_page(dest, session_root)
    readme = Path(dest) / "README.txt"
    if readme.is_file():
        with readme.open("a", encoding="utf-8") as f:
            f.write(COPY_README_SECTION.format(session_id=Path(session_root).name))
