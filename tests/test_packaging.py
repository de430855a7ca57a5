"""What a user installs: the `examrec` command and `python -m sessions.cli`, `--version`, and a
wheel that carries the session format, the archive's forms and an SPDX licence."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import av

from conftest import ROOT, run_examrec

EXPECTED = f"PyAV {av.__version__}, FFmpeg {av.ffmpeg_version_info}"


def test_version_names_examrec_pyav_and_ffmpeg():
    from importlib.metadata import version
    proc = run_examrec("--version")                              # python -m sessions.cli --version
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"examrec {version('examrec')} ({EXPECTED})"
    script = Path(sys.executable).with_name("examrec")           # the console script pip installed
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == proc.stdout


def test_the_wheel_ships_the_format_the_forms_and_an_spdx_licence(tmp_path):
    # Build from a copy, so the build leaves nothing in the source tree.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "tests", "bench", "recordings",
                                                             "test-artifacts", "*.egg-info", "build", "__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                           str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("examrec-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "sessions/evidence/FORMAT.md" in names
    assert {f"sessions/web/review/review.{ext}" for ext in ("html", "js", "css")} <= names  # the review page
    assert {n for n in names if n.startswith("sessions/archive/forms/")} >= {"sessions/archive/forms/journal.html"}
    assert "sessions/evidence/layout.py" in names and "sessions/cli/__main__.py" in names
    assert "License-Expression: GPL-3.0-or-later" in metadata.splitlines()
