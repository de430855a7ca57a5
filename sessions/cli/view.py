"""`examrec view SESSION`: watch a session in the browser (every camera in sync with the route,
speed, pedals and events), served read-only on 127.0.0.1 until Ctrl+C."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import webbrowser
from pathlib import Path

from sessions import exitcodes

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``view`` command."""
    p = sub.add_parser(
        "view", help="watch a session in the browser: cameras, route, speed, pedals, events",
        description="Serve the review page of a session folder on 127.0.0.1 and print its URL: every camera "
                    "on one clock, the route, speed, brake and clutch, stages, faults and events, and the "
                    "result of `examrec verify` at the top. Read-only. Runs until Ctrl+C.")
    add_serve_options(p)
    p.add_argument("session", metavar="SESSION", help="the session folder (<out>/<date>/<session_id>)")
    p.set_defaults(func=run)


def add_serve_options(p: argparse.ArgumentParser) -> None:
    """Options shared with `examrec archive view`."""
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--tiles", metavar="URL", help="map tile URL with {z}/{x}/{y}, e.g. the office's tile server")
    p.add_argument("--json", action="store_true", help="print {\"url\", \"session\", \"verify\"} as one JSON line")


def serve(root: Path, args: argparse.Namespace) -> int:
    """Build the page data (verification included), bind, print the URL, serve until interrupted."""
    # imported here: the web server and the page data bring uvicorn, Starlette and PyAV, which other commands don't need
    from sessions.web.review_server import ReviewServer, ReviewSite, bind
    if not (root / "manifest.json").is_file():
        print(f"examrec view: {root}: not a session folder (no manifest.json); give the path of the "
              f"session's folder, e.g. recordings/2025-05-15/<session_id>", file=sys.stderr)
        return exitcodes.USAGE
    if not 0 <= args.port <= 65535:
        print(f"examrec view: --port {args.port}: give a port from 1 to 65535 (or 0 for any free one)", file=sys.stderr)
        return exitcodes.USAGE
    try:
        site = ReviewSite.open(root, tile_url=args.tiles)
    except (OSError, ValueError) as exc:
        print(f"examrec view: {root}: cannot read the session: {exc}", file=sys.stderr)
        return exitcodes.FAILED
    try:
        sock = bind("127.0.0.1", args.port)
    except OSError as exc:
        print(f"examrec view: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}; choose another --port",
              file=sys.stderr)
        return exitcodes.USAGE
    server = ReviewServer(site, sock)
    verify = site.data["verify"]
    if args.json:
        print(json.dumps({"url": server.url, "session": site.data["session_id"], "verify": verify},
                         ensure_ascii=False), flush=True)
    else:
        result = "ok" if verify["ok"] else "interrupted" if verify["untouched"] else "FAILED"
        print(f"{server.url}  (session {site.data['session_id']}, verify: {result}; Ctrl+C to stop)", flush=True)
    if args.open:
        webbrowser.open(server.url)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return exitcodes.OK


def run(args: argparse.Namespace) -> int:
    return serve(Path(args.session), args)
