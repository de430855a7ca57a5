"""Which software made a recording: examrec, PyAV and the FFmpeg PyAV carries.

The manifest records them (``software``, FORMAT.md) because the encoder and the muxer decide
what the files hold: a dispute years later can ask which versions wrote them. `examrec
--version` prints the same three.
"""
from __future__ import annotations

from importlib import metadata

NOT_INSTALLED = "not installed"


def examrec_version() -> str:
    """examrec's version as installed (pyproject.toml), or "not installed" when run from a
    source tree that pip never installed."""
    try:
        return metadata.version("examrec")
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def software_versions() -> dict[str, str]:
    """{"examrec": ..., "pyav": ..., "ffmpeg": ...}: the manifest's ``software`` object."""
    import av  # here, not at the top: importing PyAV loads FFmpeg, which `examrec --help` need not wait for
    return {"examrec": examrec_version(), "pyav": str(av.__version__), "ffmpeg": str(av.ffmpeg_version_info)}


def version_text() -> str:
    """What `examrec --version` prints."""
    v = software_versions()
    return f"examrec {v['examrec']} (PyAV {v['pyav']}, FFmpeg {v['ffmpeg']})"
