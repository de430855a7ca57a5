"""Console benchmark: what `examrec serve` takes from Start to the first fsynced fragment of every
stream, and what the examiner's console costs in CPU.

Load: the replay profile's five streams (4 x 1280x720 + 640x480 at 25/10 fps, cabin audio, no
sensors), recorded by `examrec serve` into a temporary folder.
  - start      the Start request -> the answer "recording" (devices opened, pre-exam checks), and
               the session's first instant -> the first fragment record of every stream
               (fragments.jsonl is appended as each fragment is written; the file is fsynced within
               fsync_interval_ms, 500 ms, after)
  - console    CPU of the recorder (serve and its stream processes) over --seconds of recording,
               without a console (serve --no-console: no thumbnails) and with the console open in
               headless Chromium (thumbnails twice a second, server-sent status); and Chromium's own.
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
    # no sensors: their checks wait for a GPS fix, which is not what is measured here
    lines = [line for line in text.splitlines() if not line.startswith(("gps =", "pedals ="))]
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
    prof = profile(tmp)
    out = tmp / "out"
    args = ["serve", "--profile", str(prof), "--out", str(out), "--force", "--port", "0"]
    if not with_console:
        args.append("--no-console")
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
        t0 = time.time()
        r = examrec("start", "--socket", str(sock), "--candidate", "Бенчмарк", "--json")
        answered = time.time()
        info = json.loads(r.stdout)
        session = Path(info["session"])
        streams = json.loads((session / "manifest.json").read_text())["streams"]
        names = [s["name"] for s in streams]
        seen = first_fragments(session, names)
        started = json.loads((session / "manifest.json").read_text())["started_at"]
        from core.clock import parse_iso
        start_wall = parse_iso(started).timestamp()
        time.sleep(2)  # settle
        pids = tree(serve.pid)
        chrome = tree(driver.service.process.pid) if driver else []
        c0, w0, b0 = cpu_s(pids), time.monotonic(), cpu_s(chrome)
        time.sleep(seconds)
        pids = tree(serve.pid)
        c1, w1 = cpu_s(pids), time.monotonic()
        b1 = cpu_s(tree(driver.service.process.pid)) if driver else 0.0
        examrec("stop", "--socket", str(sock))
        return {"console": with_console,
                "start_to_recording_s": round(answered - t0, 3),
                "session_start_to_first_fragment_s": {n: round(seen[n] - start_wall, 3) for n in seen},
                "start_to_every_first_fragment_s": round(max(seen.values()) - t0, 3) if len(seen) == len(names) else None,
                "recorder_cpu_percent_of_a_core": round(100 * (c1 - c0) / (w1 - w0), 1),
                "chromium_cpu_percent_of_a_core": round(100 * (b1 - b0) / (w1 - w0), 1) if driver else None}
    finally:
        if driver is not None:
            driver.quit()
        serve.terminate()
        serve.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rounds = []
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
        "load": "hw-profiles/replay.toml streams (5 cameras, audio), no sensors, serve --force",
        "seconds": args.seconds, "repeat": args.repeat,
        "start_to_recording_s": med("start_to_recording_s", False),
        "start_to_every_first_fragment_s": med("start_to_every_first_fragment_s", False),
        "session_start_to_first_fragment_s_max": round(statistics.median(
            max(r["session_start_to_first_fragment_s"].values()) for r in rounds), 3),
        "recorder_cpu_percent_without_console": med("recorder_cpu_percent_of_a_core", False),
        "recorder_cpu_percent_with_console": med("recorder_cpu_percent_of_a_core", True),
        "chromium_cpu_percent": med("chromium_cpu_percent_of_a_core", True),
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
