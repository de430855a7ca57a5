"""Console benchmark: what `examrec serve` takes from Start to the first fragment of every stream,
and what the examiner's console and the warm stream processes cost in CPU and memory.

Load: the replay profile as it is (five streams: 4 x 1280x720 + 640x480 at 25/10 fps, cabin
audio; the GPS drive through a real gpsd, the pedal log through a pty pair), recorded by
`examrec serve` into a temporary folder.
  - warm       serve's start -> every stream process warm (devices open, previewing), the idle
               device check done, the GPS with a fix and the pedal sensor's heartbeat: what the
               examiner's Start then finds ready
  - start      the Start request (sent on the control socket, as the console's button and
               `examrec start` send it) -> the answer "recording", and -> the first fragment record
               of every stream (fragments.jsonl is appended as each fragment is written; the file
               is fsynced within fsync_interval_ms, 500 ms, after); whether the session recorded
               with the very processes that were warm (their pids). `examrec start` itself adds a
               Python start-up: ``cli_round_trip_s`` is one `examrec status` through the socket.
  - console    CPU of the recorder (serve and its stream processes) over --seconds idle (warm,
               previewing) and recording, without a console (serve --no-console: no thumbnails)
               and with the console open in headless Chromium (thumbnails twice a second,
               server-sent status); and Chromium's own.
  - memory     the sum of PSS (/proc/PID/smaps_rollup) of the recorder's child processes (stream
               processes, their forkserver and Python's resource tracker) and of serve itself, idle
               and recording.
Writes bench/results/console.json.  Usage: python bench/console.py [--seconds 20] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TICKS = os.sysconf("SC_CLK_TCK")
sys.path.insert(0, str(ROOT))


def profile(tmp: Path) -> Path:
    text = (ROOT / "hw-profiles" / "replay.toml").read_text().replace("../bench/", f"{ROOT}/bench/")
    lines = text.splitlines()
    first_table = next(i for i, line in enumerate(lines) if line.startswith("["))
    lines.insert(first_table, f'control_socket = "{tmp}/ctl.sock"')  # a top-level key: before the tables
    path = tmp / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def tree(root_pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / TICKS


def pss_mb(pids: list[int]) -> float:
    """The processes' proportional set size (shared pages divided among their users), in MB."""
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
                    break
        except (OSError, ValueError):
            continue
    return round(total_kb / 1024, 1)


def service_status(sock: Path) -> dict:
    from sessions.recorder.control import request
    return request(sock, {"cmd": "status"}, timeout=30)


def wait_warm(sock: Path, timeout: float = 180) -> dict:
    """The status once every stream process is warm, the idle device check has run and the
    sensors the profile has are ready (a GPS fix, the pedal heartbeat)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st = service_status(sock)
        except Exception:  # the socket is not there yet
            st = {}
        sensors_ready = (("gps" not in st or st["gps"].get("fix")) and
                         ("pedals" not in st or st["pedals"].get("healthy")))
        if (st.get("streams") and all(s.get("warm") for s in st["streams"]) and st.get("device_checks")
                and sensors_ready):
            return st
        time.sleep(0.1)
    raise SystemExit(f"the service did not get warm within {timeout:.0f} s: {st}")


def examrec(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sessions.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def first_fragments(session: Path, streams: list[str], timeout: float = 10) -> dict[str, float]:
    """Wall time (time.time) when each stream's first fragment record was seen."""
    seen: dict[str, float] = {}
    deadline = time.time() + timeout
    while len(seen) < len(streams) and time.time() < deadline:
        for name in streams:
            log = session / name / "fragments.jsonl"
            if name not in seen and log.exists() and '"kind":"fragment"' in log.read_text():
                seen[name] = time.time()
        time.sleep(0.005)
    return seen


def one_round(tmp: Path, seconds: float, with_console: bool) -> dict:
    from sessions.recorder.control import request
    prof = profile(tmp)
    out = tmp / "out"
    args = ["serve", "--profile", str(prof), "--out", str(out), "--force", "--port", "0"]
    if not with_console:
        args.append("--no-console")
    served_at = time.monotonic()
    serve = subprocess.Popen([sys.executable, "-m", "sessions.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    url = serve.stdout.readline().strip().removeprefix("console: ")
    driver = None
    try:
        if with_console:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
            opts = webdriver.ChromeOptions()
            opts.binary_location = "/usr/bin/chromium"
            for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1280,800",
                      f"--user-data-dir={tmp / 'chrome'}"):
                opts.add_argument(a)
            driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
            driver.get(url)
        sock = tmp / "ctl.sock"
        warm = wait_warm(sock)
        warm_s = time.monotonic() - served_at
        warm_pids = {s["stream"]: s["pid"] for s in warm["streams"]}
        time.sleep(2)  # settle
        chrome = tree(driver.service.process.pid) if driver else []
        children = [p for p in tree(serve.pid) if p != serve.pid]
        idle_pss = {"children": pss_mb(children), "serve": pss_mb([serve.pid])}
        idle_cpu, idle_chrome = cpu_over(serve.pid, driver, min(seconds, 10))
        t = time.monotonic()
        examrec("status", "--socket", str(sock))
        cli_s = time.monotonic() - t
        t0 = time.time()
        info = request(sock, {"cmd": "start", "details": {"candidate": "Бенчмарк"}}, timeout=120)
        answered = time.time()
        assert info.get("ok"), info
        session = Path(info["session"])
        streams = json.loads((session / "manifest.json").read_text())["streams"]
        names = [s["name"] for s in streams]
        seen = first_fragments(session, names)
        started = json.loads((session / "manifest.json").read_text())["started_at"]
        from core.clock import parse_iso
        start_wall = parse_iso(started).timestamp()
        start_event = next(json.loads(x) for x in (session / "events.jsonl").read_text().splitlines()
                           if json.loads(x)["type"] == "start")
        time.sleep(2)  # settle
        children = [p for p in tree(serve.pid) if p != serve.pid and p not in chrome]
        rec_pss = {"children": pss_mb(children), "serve": pss_mb([serve.pid])}
        rec_cpu, rec_chrome = cpu_over(serve.pid, driver, seconds)
        examrec("stop", "--socket", str(sock))
        return {"console": with_console,
                "serve_to_warm_s": round(warm_s, 3),
                "start_to_recording_s": round(answered - t0, 3),
                "session_start_to_first_fragment_s": {n: round(seen[n] - start_wall, 3) for n in seen},
                "start_to_every_first_fragment_s": round(max(seen.values()) - t0, 3) if len(seen) == len(names) else None,
                "recorded_with_the_warm_processes": all(start_event["pids"].get(n) == p for n, p in warm_pids.items()),
                "cli_round_trip_s": round(cli_s, 3),
                "idle_cpu_percent_of_a_core": idle_cpu,
                "recorder_cpu_percent_of_a_core": rec_cpu,
                "chromium_cpu_percent_of_a_core": rec_chrome,
                "chromium_idle_cpu_percent_of_a_core": idle_chrome,
                "pss_mb": {"idle": idle_pss, "recording": rec_pss}}
    finally:
        if driver is not None:
            driver.quit()
        serve.terminate()
        serve.wait(60)


def cpu_over(serve_pid: int, driver, seconds: float) -> tuple[float, float | None]:
    """CPU of serve and its processes, and of the browser, over ``seconds``: % of one core."""
    pids = tree(serve_pid)
    chrome = tree(driver.service.process.pid) if driver else []
    c0, w0, b0 = cpu_s(pids), time.monotonic(), cpu_s(chrome)
    time.sleep(seconds)
    pids = tree(serve_pid)
    c1, w1 = cpu_s(pids), time.monotonic()
    b1 = cpu_s(tree(driver.service.process.pid)) if driver else 0.0
    return (round(100 * (c1 - c0) / (w1 - w0), 1),
            round(100 * (b1 - b0) / (w1 - w0), 1) if driver else None)


def med_pss(rounds: list[dict], when: str) -> float:
    return round(statistics.median(r["pss_mb"][when]["children"] for r in rounds), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rounds = []
    load_before = os.getloadavg()
    for i in range(args.repeat):
        for console in (False, True):
            with tempfile.TemporaryDirectory(prefix="examrec-bench-console-") as tmp:
                r = one_round(Path(tmp), args.seconds, console)
                print(json.dumps(r, ensure_ascii=False), flush=True)
                rounds.append(r)

    def med(key: str, console: bool) -> float | None:
        vals = [r[key] for r in rounds if r["console"] == console and r[key] is not None]
        return round(statistics.median(vals), 3) if vals else None
    summary = {
        "load": "hw-profiles/replay.toml (5 cameras, audio, GPS replay through gpsd, pedal replay through a pty), "
                "serve --force",
        "seconds": args.seconds, "repeat": args.repeat,
        "load_average_before": [round(x, 2) for x in load_before],
        "serve_to_warm_s": med("serve_to_warm_s", False),
        "start_to_recording_s": med("start_to_recording_s", False),
        "start_to_every_first_fragment_s": med("start_to_every_first_fragment_s", False),
        "start_to_every_first_fragment_s_max": (max(r["start_to_every_first_fragment_s"] for r in rounds)
                                                if all(r["start_to_every_first_fragment_s"] for r in rounds) else None),
        "recorded_with_the_warm_processes": all(r["recorded_with_the_warm_processes"] for r in rounds),
        "cli_round_trip_s": med("cli_round_trip_s", False),
        "idle_cpu_percent_without_console": med("idle_cpu_percent_of_a_core", False),
        "idle_cpu_percent_with_console": med("idle_cpu_percent_of_a_core", True),
        "session_start_to_first_fragment_s_max": round(statistics.median(
            max(r["session_start_to_first_fragment_s"].values()) for r in rounds), 3),
        "recorder_cpu_percent_without_console": med("recorder_cpu_percent_of_a_core", False),
        "recorder_cpu_percent_with_console": med("recorder_cpu_percent_of_a_core", True),
        "chromium_cpu_percent": med("chromium_cpu_percent_of_a_core", True),
        "pss_mb_children_idle": med_pss(rounds, "idle"),
        "pss_mb_children_recording": med_pss(rounds, "recording"),
        "rounds": rounds,
    }
    summary["console_cost_percent_of_a_core"] = (
        round(summary["recorder_cpu_percent_with_console"] - summary["recorder_cpu_percent_without_console"], 1)
        if summary["recorder_cpu_percent_with_console"] is not None else None)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "console.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "rounds"}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
