"""The catalog: a SQLite index of the stored sessions, for search (ST-2). Never the truth.

Everything in it is derived from the archive: the receipts and manifests of the stored sessions
and the uploads, deletions and holds journals. ``archive reindex`` throws it away and rebuilds it
from the manifests in the archive; between reindexes it follows the journals incrementally
(entries after the last one it has seen), so sessions uploaded from any recorder appear at the
next search. On a folder archive it lives in the folder; on S3 in the local cache directory.

Names, examiners, plates and centres are stored twice: as written, and folded (textnorm.fold) so
that "шевченко" finds "Шевченко" and "сатбаев" finds "Сәтбаев"; names and examiners also in their
passport Latin spellings (textnorm.search_forms), so "Koval" finds "Коваль".
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
from contextlib import closing
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Iterable

from sessions.archive.textnorm import fold, fold_plate, query_variants, search_forms, tokens
from sessions.evidence.chain import GENESIS

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
  session_id TEXT PRIMARY KEY,
  prefix TEXT NOT NULL,
  status TEXT NOT NULL,            -- stored | incomplete | deleted
  exam_date TEXT, started_at TEXT, ended_at TEXT, state TEXT,
  centre TEXT, centre_f TEXT,
  candidate TEXT, candidate_f TEXT, candidate_id TEXT, candidate_id_f TEXT,
  examiner TEXT, examiner_f TEXT, plate TEXT, plate_f TEXT, exam TEXT,
  profile TEXT, profile_kind TEXT, utc_offset TEXT,
  retention_months INTEGER, expires_at TEXT, delete_by TEXT,
  holds TEXT NOT NULL DEFAULT '[]',
  streams TEXT, objects INTEGER, bytes INTEGER,
  uploaded_at TEXT, uploaded_by TEXT, deleted_at TEXT
);
CREATE INDEX IF NOT EXISTS sessions_date ON sessions(exam_date);
CREATE TABLE IF NOT EXISTS sync (journal TEXT PRIMARY KEY, entry INTEGER NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS anchors (journal TEXT PRIMARY KEY, entry INTEGER NOT NULL, hash TEXT NOT NULL,
                                    verified_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

COLUMNS = ("session_id", "prefix", "status", "exam_date", "started_at", "ended_at", "state", "centre",
           "candidate", "candidate_id", "examiner", "plate", "exam", "profile", "profile_kind", "utc_offset",
           "retention_months", "expires_at", "delete_by", "holds", "streams", "objects", "bytes",
           "uploaded_at", "uploaded_by", "deleted_at")


@dataclass
class SessionRow:
    """One catalog row, as the find command prints it."""

    data: dict[str, Any]

    def __getattr__(self, item: str) -> Any:
        try:
            return self.data[item]
        except KeyError:
            raise AttributeError(item) from None

    @property
    def holds_list(self) -> list[str]:
        return list(json.loads(self.data.get("holds") or "[]"))

    def to_json(self) -> dict[str, Any]:
        d = {k: self.data.get(k) for k in COLUMNS}
        d["holds"] = self.holds_list
        d["streams"] = json.loads(d["streams"]) if d.get("streams") else []
        return d


@dataclass
class Query:
    name: str | None = None
    candidate_id: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    examiner: str | None = None
    plate: str | None = None
    centre: str | None = None
    held: bool | None = None
    include_deleted: bool = False
    limit: int = 500


def _like(tok: str) -> str:
    return "%" + tok.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _owner_only(path: Path, mode: int) -> None:
    """Tighten a cache file or folder made by an older version (or under a loose umask)."""
    try:
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, mode)
    except OSError:
        pass  # not ours to change (a shared cache): reading it still works


class Catalog:
    """The SQLite index. Open with ``Catalog(path)``; use as a context manager or call close()."""

    def __init__(self, path: Path):
        self.path = Path(path)
        # Candidates' names and exam dates: the cache is the user's alone (0700 folder, 0600 file;
        # SQLite gives its -journal and -wal files the database file's mode).
        if not self.path.parent.exists():  # (a folder archive keeps its catalog in its own root: left as it is)
            self.path.parent.mkdir(parents=True, mode=0o700)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        _owner_only(self.path, 0o600)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.row_factory = sqlite3.Row
        with self.db:
            self.db.executescript(SCHEMA)
            ver = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if ver is None or int(ver[0]) != SCHEMA_VERSION:
                # An index of another version is rebuilt, never migrated: the archive is the truth.
                self.db.executescript("DROP TABLE sessions; DROP TABLE sync;" + SCHEMA)
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    # --- writes ----------------------------------------------------------------------------------

    def clear(self) -> None:
        with self.db:
            self.db.execute("DELETE FROM sessions")
            self.db.execute("DELETE FROM sync")

    def upsert_receipt(self, receipt: dict[str, Any], manifest: dict[str, Any] | None = None,
                       status: str = "stored", holds: list[str] | None = None) -> None:
        """Index one stored session from its receipt (and the manifest, when read)."""
        details = dict(receipt.get("details") or {})
        if manifest:
            details.update({k: v for k, v in (manifest.get("details") or {}).items() if v is not None})
        row = {
            "session_id": receipt["session_id"], "prefix": receipt["prefix"], "status": status,
            "exam_date": receipt.get("exam_date"), "started_at": receipt.get("started_at"),
            "ended_at": receipt.get("ended_at"), "state": receipt.get("state"),
            "centre": details.get("centre"), "candidate": details.get("candidate"),
            "candidate_id": details.get("candidate_id"), "examiner": details.get("examiner"),
            "plate": details.get("plate"), "exam": details.get("exam"),
            "profile": receipt.get("profile"), "profile_kind": receipt.get("profile_kind"),
            "utc_offset": receipt.get("utc_offset"), "retention_months": receipt.get("retention_months"),
            "expires_at": receipt.get("expires_at"), "delete_by": receipt.get("delete_by"),
            "streams": json.dumps(receipt.get("streams") or []),
            "objects": len(receipt.get("objects") or []),
            "bytes": sum(int(o.get("size") or 0) for o in receipt.get("objects") or []),
            "uploaded_at": receipt.get("uploaded_at"), "uploaded_by": receipt.get("uploaded_by"),
            "deleted_at": None,
        }
        with self.db:
            old = self.db.execute("SELECT holds FROM sessions WHERE session_id=?", (row["session_id"],)).fetchone()
            row["holds"] = json.dumps(holds if holds is not None else (json.loads(old["holds"]) if old else []))
            self._write(row)

    def upsert_incomplete(self, session_id: str, prefix: str, exam_date: str | None, objects: int, size: int) -> None:
        """A session whose objects are partly in the archive without a receipt (upload cut off)."""
        with self.db:
            self._write({"session_id": session_id, "prefix": prefix, "status": "incomplete",
                         "exam_date": exam_date, "objects": objects, "bytes": size, "holds": "[]"})

    def _write(self, row: dict[str, Any]) -> None:
        full = {k: row.get(k) for k in COLUMNS}
        full["holds"] = full["holds"] or "[]"
        full["centre_f"] = fold(full["centre"])
        full["candidate_f"] = search_forms(full["candidate"])
        full["candidate_id_f"] = fold(full["candidate_id"]).replace(" ", "")
        full["examiner_f"] = search_forms(full["examiner"])
        full["plate_f"] = fold_plate(full["plate"])
        cols = list(full)
        self.db.execute(f"INSERT OR REPLACE INTO sessions ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        [full[c] for c in cols])

    def mark_deleted(self, session_id: str, at: str) -> None:
        with self.db:
            self.db.execute("UPDATE sessions SET status='deleted', deleted_at=? WHERE session_id=?", (at, session_id))

    def set_holds(self, session_id: str, holds: list[str]) -> None:
        with self.db:
            self.db.execute("UPDATE sessions SET holds=? WHERE session_id=?", (json.dumps(holds), session_id))

    def sync_state(self, journal: str) -> tuple[int, str]:
        row = self.db.execute("SELECT entry, hash FROM sync WHERE journal=?", (journal,)).fetchone()
        return (int(row["entry"]), str(row["hash"])) if row else (0, GENESIS)

    def set_sync_state(self, journal: str, entry: int, hash_: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO sync VALUES (?, ?, ?)", (journal, entry, hash_))

    def anchor(self, journal: str) -> tuple[int, str] | None:
        row = self.db.execute("SELECT entry, hash FROM anchors WHERE journal=?", (journal,)).fetchone()
        return (int(row["entry"]), str(row["hash"])) if row else None

    def set_anchor(self, journal: str, entry: int, hash_: str, at: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO anchors VALUES (?, ?, ?, ?)", (journal, entry, hash_, at))

    # --- reads -----------------------------------------------------------------------------------

    def get(self, session_id: str) -> SessionRow | None:
        row = self.db.execute("SELECT * FROM sessions WHERE session_id=?", (session_id,)).fetchone()
        return SessionRow(dict(row)) if row else None

    def resolve(self, ident: str) -> list[SessionRow]:
        """Sessions whose id is ``ident`` or starts with it (ids are long; a prefix is handy)."""
        exact = self.get(ident)
        if exact:
            return [exact]
        rows = self.db.execute("SELECT * FROM sessions WHERE session_id LIKE ? ESCAPE '\\' ORDER BY session_id",
                               (ident.replace("%", "\\%").replace("_", "\\_") + "%",)).fetchall()
        return [SessionRow(dict(r)) for r in rows]

    def all(self, statuses: Iterable[str] = ("stored",)) -> list[SessionRow]:
        st = list(statuses)
        rows = self.db.execute(f"SELECT * FROM sessions WHERE status IN ({', '.join('?' * len(st))}) "
                               "ORDER BY exam_date, session_id", st).fetchall()
        return [SessionRow(dict(r)) for r in rows]

    def find(self, q: Query) -> list[SessionRow]:
        where: list[str] = []
        args: list[Any] = []
        if not q.include_deleted:
            where.append("status != 'deleted'")
        for column, value in (("candidate_f", q.name), ("examiner_f", q.examiner)):
            for spellings in query_variants(value):
                where.append("(" + " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for _ in spellings) + ")")
                args += [_like(sp) for sp in spellings]
        for t in tokens(q.centre or ""):
            where.append("centre_f LIKE ? ESCAPE '\\'")
            args.append(_like(t))
        if q.candidate_id:
            where.append("candidate_id_f = ?")
            args.append(fold(q.candidate_id).replace(" ", ""))
        if q.plate:
            where.append("plate_f LIKE ? ESCAPE '\\'")
            args.append(_like(fold_plate(q.plate)))
        if q.date_from:
            where.append("exam_date >= ?")
            args.append(q.date_from.isoformat())
        if q.date_to:
            where.append("exam_date <= ?")
            args.append(q.date_to.isoformat())
        if q.held is True:
            where.append("holds != '[]'")
        elif q.held is False:
            where.append("holds = '[]'")
        sql = "SELECT * FROM sessions" + (" WHERE " + " AND ".join(where) if where else "") + \
              " ORDER BY exam_date, started_at, session_id LIMIT ?"
        args.append(q.limit)
        with closing(self.db.execute(sql, args)) as cur:
            return [SessionRow(dict(r)) for r in cur.fetchall()]
