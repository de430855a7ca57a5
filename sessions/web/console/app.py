"""The examiner's console: a Starlette app served by `examrec serve`.

Live state goes to the page as server-sent events (one JSON status about twice a second and at
once on every change, with the cameras' pictures taken since the last one); commands come back
as JSON POSTs to /api/<command>. The pages are plain HTML/CSS/JS from this package (no build
step, nothing from the network).

Security: on 127.0.0.1 only the machine's own screen can reach it. Bound to another address it
requires the profile's PIN/token (asked by a form, kept in an HttpOnly cookie). Either way a
command must carry the X-Examrec-Console header and, when the browser sends one, an Origin of
this very console: a page of another site cannot start, pause or stop an exam.
"""
from __future__ import annotations

import base64
import hmac
import json
import logging
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from sessions.recorder.service import RecorderService

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"console.js": "text/javascript", "console.css": "text/css", "i18n.js": "text/javascript"}
COMMANDS = ("start", "pause", "resume", "stop", "photo", "ack")
COOKIE = "examrec_console"
HEADER = "x-examrec-console"
SSE_INTERVAL_S = 0.5

LOGIN_PAGE = """<!doctype html><html lang="uk"><head><meta charset="utf-8"><title>examrec</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/console.css"></head><body class="login">
<form method="post" action="/login"><h1>examrec</h1>
<label>PIN / token <input name="token" type="password" autocomplete="off" autofocus></label>
<button type="submit" class="big">OK</button>{error}</form></body></html>"""


def fresh_thumbnails(service: RecorderService, sent: dict[str, float]) -> dict[str, str]:
    """The cameras' pictures taken since those in ``sent`` (updated), as base64 JPEG: they go
    out with the status push, so a console costs one stream, not five requests twice a second."""
    out = {}
    for stream, (taken, jpeg) in list(service.thumbnails.items()):
        if sent.get(stream) != taken:
            sent[stream] = taken
            out[stream] = base64.b64encode(jpeg).decode("ascii")
    return out


def create_app(service: RecorderService, *, token: str | None = None, language: str = "uk") -> Starlette:
    """The console app for ``service``; ``token`` set means every request must prove it."""

    def authorised(request: Request) -> bool:
        if not token:
            return True
        given = request.cookies.get(COOKIE) or request.headers.get("authorization", "").removeprefix("Bearer ")
        return bool(given) and hmac.compare_digest(given, token)

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:
            return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
        host = request.headers.get("host", "")
        return origin in (f"http://{host}", f"https://{host}")

    async def index(request: Request) -> Response:
        if not authorised(request):
            return RedirectResponse("/login", status_code=303)
        html = (STATIC / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html.replace("{{LANG}}", language), headers={"Cache-Control": "no-store"})

    async def login_form(request: Request) -> Response:
        return HTMLResponse(LOGIN_PAGE.format(error=""))

    async def login(request: Request) -> Response:
        if not same_origin(request):
            return JSONResponse({"ok": False, "error": "cross-site request refused"}, status_code=403)
        form = await request.form()
        given = str(form.get("token", ""))
        if not token or not hmac.compare_digest(given, token):
            return HTMLResponse(LOGIN_PAGE.format(error='<p class="error">✗</p>'), status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return Response(status_code=404)
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name])

    async def status(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"ok": False, "error": "PIN or token required"}, status_code=401)
        return JSONResponse(await run_in_threadpool(service.status))

    async def events(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"ok": False, "error": "PIN or token required"}, status_code=401)

        async def stream():
            version = -1
            sent: dict[str, float] = {}   # per camera: when the picture last sent was taken
            while not await request.is_disconnected():
                st = await run_in_threadpool(service.status)
                version = st["version"]
                st["thumbnails"] = fresh_thumbnails(service, sent)
                yield f"data: {json.dumps(st, ensure_ascii=False)}\n\n"
                await run_in_threadpool(service.wait_change, version, SSE_INTERVAL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def command(request: Request) -> Response:
        cmd = request.path_params["cmd"]
        if not authorised(request):
            return JSONResponse({"ok": False, "error": "PIN or token required"}, status_code=401)
        if not same_origin(request) or request.headers.get(HEADER) != "1":
            return JSONResponse({"ok": False, "error": "cross-site request refused"}, status_code=403)
        if cmd not in COMMANDS:
            return JSONResponse({"ok": False, "error": f"unknown command {cmd!r}"}, status_code=404)
        try:
            body: dict[str, Any] = await request.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            return JSONResponse({"ok": False, "error": "the request body must be a JSON object"}, status_code=400)
        answer = await run_in_threadpool(service.dispatch, {**body, "cmd": cmd})
        if answer.get("ok") and cmd == "stop":
            # "saved" only when it is: wait for the session to be closed, signed and verified.
            await run_in_threadpool(service.join, 60)
            last = service.last
            answer = {"ok": True, "saved": last.__dict__ if last else None}
        return JSONResponse(answer, status_code=200 if answer.get("ok") else 409)

    routes = [
        Route("/", index),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/static/{name}", static),
        Route("/api/status", status),
        Route("/api/events", events),
        Route("/api/{cmd}", command, methods=["POST"]),
    ]
    return Starlette(routes=routes)
