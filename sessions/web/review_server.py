"""The local server of the review page: one session folder, read-only, on 127.0.0.1.

It lays the files out exactly as a copy kit does, so the page is the same in both places:

    /                        -> review.html
    /review/<asset>          -> review.js, review.css (package data) and session-data.js (built)
    /<session id>/<file>     -> the session's own files, with HTTP range requests (Starlette's
                                FileResponse answers ``Range: bytes=a-b`` with 206)
    /clip.zip?start=&end=    -> a clip kit of that range (the original segments that cover it)

Only GET and HEAD exist: nothing here can change the recording.
"""
from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

from sessions.web.review_data import DATA_FILE, ReviewOptions, build_review_data, data_script
from sessions.web.review_kit import ASSET_DIR, ASSETS, PAGE, write_clip_zip

log = logging.getLogger(__name__)


@dataclass
class ReviewSite:
    """One session served for review; ``data`` is built once (it includes the verification)."""

    root: Path
    data: dict[str, Any]

    @classmethod
    def open(cls, root: Path, tile_url: str | None = None) -> "ReviewSite":
        root = Path(root).resolve()
        options = ReviewOptions(base=f"{root.name}/", tile_url=tile_url, served=True)
        return cls(root, build_review_data(root, options))


def _session_file(site: ReviewSite, rel: str) -> Path | None:
    """The file inside the session folder, or None (no way out of the folder, no listing)."""
    path = (site.root / rel).resolve()
    if site.root not in path.parents or not path.is_file():
        return None
    return path


def create_app(site: ReviewSite) -> Starlette:
    """The ASGI app serving ``site``."""
    script = data_script(site.data).encode("utf-8")
    session_id = site.root.name

    async def page(request: Request) -> Response:
        return FileResponse(ASSET_DIR / PAGE, media_type="text/html; charset=utf-8")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name == DATA_FILE:
            return Response(script, media_type="text/javascript; charset=utf-8")
        if name not in ASSETS:
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(ASSET_DIR / name)

    async def session_file(request: Request) -> Response:
        path = _session_file(site, request.path_params["rel"])
        if path is None:
            return PlainTextResponse("not found", status_code=404)
        media = "video/mp4" if path.suffix == ".mp4" else None
        return FileResponse(path, media_type=media)

    async def clip(request: Request) -> Response:
        try:
            start = float(request.query_params["start"])
            end = float(request.query_params["end"])
        except (KeyError, ValueError):
            return PlainTextResponse("give start and end in seconds on the session timeline", status_code=400)
        if end <= start:
            return PlainTextResponse("the clip's end must come after its start", status_code=400)
        tmp = Path(tempfile.mkdtemp(prefix="examrec-clip-"))
        zip_path = write_clip_zip(site.root, start, end, tmp)
        return FileResponse(zip_path, media_type="application/zip", filename=zip_path.name,
                            background=BackgroundTask(_remove_tree, tmp))

    return Starlette(routes=[
        Route("/", page, methods=["GET", "HEAD"]),
        Route("/review.html", page, methods=["GET", "HEAD"]),
        Route("/review/{name}", asset, methods=["GET", "HEAD"]),
        Route("/clip.zip", clip, methods=["GET"]),
        Route(f"/{session_id}/{{rel:path}}", session_file, methods=["GET", "HEAD"]),
    ])


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port), bound before the URL is printed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock


class ReviewServer:
    """uvicorn serving one site on an already bound socket; ``run()`` blocks, ``start()`` does not."""

    def __init__(self, site: ReviewSite, sock: socket.socket):
        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}/"
        config = uvicorn.Config(create_app(site), log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    def run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="review-server", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
