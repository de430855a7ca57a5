"""Opening what is under a session folder without ever following a symbolic link.

A session folder holds only real folders and regular files. A symbolic link in it is somebody's
doing (the recorder never makes one), and following it lets a command act outside the session:
`repair` run as root would truncate the file a segment link points to, `upload` would upload a
linked folder and then delete its target. So every command that reads or changes a session first
checks the whole tree with lstat (``check_tree``) and refuses, naming the link; the files are then
opened with O_NOFOLLOW, so a link swapped in after the check fails the open instead of being
followed.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

_CHUNK = 1 << 20


class SymlinkRefused(OSError):
    """A session folder, or something in it, is a symbolic link or not a regular file/folder.
    ``path`` names it; the CLI exits 3 (refused)."""

    def __init__(self, path: Path | str, what: str = "a symbolic link"):
        self.path = Path(path)
        super().__init__(f"{path}: {what}; a session folder holds only regular files and folders, "
                         "so nothing is done with it (look at where it points and who made it)")


def _kind(mode: int) -> str | None:
    """None for a regular file or folder, else what it is, in words."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file (device, pipe or socket)"


def check_tree(session_dir: Path | str, *, parents: int = 1) -> None:
    """Refuse (SymlinkRefused) when ``session_dir``, any of its ``parents`` nearest folders (the
    date folder), or anything under it is a symbolic link or a special file."""
    root = Path(os.path.abspath(session_dir))
    chain = [root, *list(root.parents)[:parents]]
    for p in chain:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise SymlinkRefused(p, "a symbolic link" if p == root else "a symbolic link above the session folder")
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            what = _kind(os.lstat(p).st_mode)
            if what is not None:
                raise SymlinkRefused(p, what)


def open_fd(path: Path | str, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """os.open with O_NOFOLLOW: a symbolic link at ``path`` raises SymlinkRefused."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the last component is a symbolic link
            raise SymlinkRefused(path) from None
        raise


def open_read(path: Path | str):
    """A binary file object for reading, opened without following a link."""
    return os.fdopen(open_fd(path, os.O_RDONLY), "rb")


def read_bytes(path: Path | str) -> bytes:
    with open_read(path) as f:
        return f.read()


def sha256_file(path: Path | str) -> str:
    """SHA-256 (hex) of a regular file, read without following a link."""
    h = hashlib.sha256()
    with open_read(path) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def is_regular(path: Path | str) -> bool:
    """A regular file itself (lstat: a link to one is not)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
