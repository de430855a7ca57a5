"""What a group of processes costs, read from /proc: CPU seconds, RSS, PSS, and memory per mapping.

Used by the benchmarks (bench/throughput.py, bench/memory.py). PSS (proportional set size) shares
each page among the processes that map it, so the PSS of five processes adds up to what they
take from the machine together; RSS counts a shared library once in every process.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

TICK = os.sysconf("SC_CLK_TCK")


def process_table() -> dict[int, tuple[int, float]]:
    """Every live process: pid -> (parent pid, CPU seconds used so far, user + system).

    The CPU includes that of the children the process has waited for (``cutime``/``cstime``), so
    summed over a tree it counts every process once, ended ones too, as long as whichever process
    reaped them is in the tree: a stream process ends into its forkserver's figure, and the
    forkserver, never waited for by the recorder, into none a parent's getrusage would see."""
    table: dict[int, tuple[int, float]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            table[int(d.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / TICK)
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return table


def tree_pids(roots: Iterable[int], table: dict[int, tuple[int, float]] | None = None) -> list[int]:
    """The live processes among ``roots`` and all their descendants."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [p for p in roots if p in table]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def rss_kb(pid: int) -> int:
    """Resident memory of one process (kB); 0 once it has ended."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rollup_kb(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup as {"Rss": kB, "Pss": kB, "Private_Dirty": kB, ...}; {} once it has ended."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return out
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            out[parts[0][:-1]] = int(parts[1])
    return out


def uss_kb(rollup: dict[str, int]) -> int:
    """Unique set size: the pages only this process maps (what ending it would give back)."""
    return rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)


@dataclass
class TreeSample:
    """One look at a process tree, all processes read in the same pass."""

    at: float          # time.monotonic()
    pids: list[int]
    cpu_s: float       # CPU seconds of the live processes and those they reaped
    rss_kb: int
    pss_kb: int


def sample_tree(roots: Iterable[int]) -> TreeSample:
    """CPU, RSS and PSS summed over ``roots`` and their descendants."""
    table = process_table()
    pids = tree_pids(roots, table)
    pss = rss = 0
    for pid in pids:
        roll = rollup_kb(pid)
        pss += roll.get("Pss", 0)
        rss += roll.get("Rss", 0)
    return TreeSample(time.monotonic(), pids, sum(table[p][1] for p in pids if p in table), rss, pss)


@dataclass
class TreeSampler:
    """Samples a process tree on a thread every ``interval_s`` until stopped; keeps the peaks.

    ``roots`` is called at every sample, so processes started later (or a root known only once
    started) are included.
    """

    roots: Callable[[], list[int]]
    interval_s: float = 0.5
    samples: int = 0
    peak_rss_kb: int = 0
    peak_pss_kb: int = 0
    peak_processes: int = 0
    peak_cpu_s: float = 0.0    # the most CPU the tree was seen to have used (it only grows while all live)
    on_sample: Callable[[TreeSample], None] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "TreeSampler":
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            s = sample_tree(self.roots())
            if s.pids:
                self.samples += 1
                self.peak_rss_kb = max(self.peak_rss_kb, s.rss_kb)
                self.peak_pss_kb = max(self.peak_pss_kb, s.pss_kb)
                self.peak_processes = max(self.peak_processes, len(s.pids))
                self.peak_cpu_s = max(self.peak_cpu_s, s.cpu_s)
                if self.on_sample is not None:
                    self.on_sample(s)
            self._stop.wait(self.interval_s)


def machine() -> dict:
    """The machine a figure was measured on: CPU model, cores, load average now."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": model, "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def save_results(path: Path, result: dict, before: dict, after: dict) -> None:
    """Write a bench's results with the machine they were measured on (``before`` and ``after``:
    machine() at the run's start and end) and when, and say so on stderr."""
    result = {**result, "machine": {"cpu_model": before["cpu_model"], "cores": before["cores"],
                                    "load_average_before": before["load_average"],
                                    "load_average_after": after["load_average"]},
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"\nload average before {before['load_average']}, after {after['load_average']} "
          f"({before['cores']} cores, {before['cpu_model']}); wrote {path}", file=sys.stderr)
