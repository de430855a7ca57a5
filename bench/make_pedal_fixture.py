#!/usr/bin/env python3
"""Write bench/fixtures/exam.pedal: a synthetic capture of the examiner's dual-control pedal sensor.

A simulated sensor board samples both pedals every 10 ms and sends an examrec/1 sentence on every
change of a whole percent and at least every 200 ms (heartbeat), as PEDAL-PROTOCOL.md asks. Over
60 s the examiner brakes and declutches several times (gear changes, a hill start, an emergency
stop with both pedals). The first 16 s also hold one of each kind of trouble a real line shows,
so a short replay exercises them all: an EMI noise burst, one bad checksum, a contact bounce
(a press shorter than the debounce), a dip (a release shorter than the debounce), a light touch
under the threshold, a partial sentence, an overlong line, an unknown sentence and a sequence
gap. Another noise burst comes at 37 s.

Format (examrec-pedal-replay/1): ``#`` header lines, then one entry a line,
``<offset_s> S <text>`` (send the text and CR LF) or ``<offset_s> B <hex>`` (send raw bytes);
entries with the same offset go out in one write, i.e. arrive together.

Usage: python bench/make_pedal_fixture.py [--out FILE]
"""
from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sensors.pedal_protocol import format_sentence  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "fixtures" / "exam.pedal"
DURATION_S = 60.0
TICK_S = 0.01      # the board's sampling period
HEARTBEAT_S = 0.2
BOOT_MS = 4_213_377  # the board has been up ~70 minutes
FIRST_SEQ = 40_000


@dataclass(frozen=True)
class Press:
    """The examiner presses ``pedal`` at ``start_s``, holds ``peak`` % until ``release_s``;
    travel ramps over ``ramp_s`` both ways."""

    pedal: str
    start_s: float
    release_s: float
    peak: float
    ramp_s: float = 0.1

    def travel(self, t: float) -> float:
        if t < self.start_s:
            return 0.0
        if t < self.release_s:
            return self.peak * min(1.0, (t - self.start_s) / self.ramp_s)
        return max(0.0, self.peak * (1.0 - (t - self.release_s) / self.ramp_s))


PRESSES = (
    Press("brake", 2.0, 3.2, 85),              # firm brake
    Press("clutch", 4.0, 4.8, 100, 0.08),      # gear change
    Press("brake", 7.5, 8.3, 15),              # light touch: under the threshold, not an actuation
    Press("brake", 10.0, 12.0, 100, 0.06),     # emergency stop ...
    Press("clutch", 10.05, 11.5, 100, 0.08),   # ... with the clutch
    Press("clutch", 15.0, 15.6, 70),
    Press("clutch", 18.0, 19.5, 95),
    Press("brake", 22.0, 23.1, 60, 0.15),
    Press("clutch", 27.0, 28.0, 100),
    Press("brake", 31.0, 33.5, 90, 0.2),       # hill start held on the brake
    Press("clutch", 31.2, 33.0, 100),
    Press("brake", 40.0, 40.7, 40),
    Press("clutch", 45.0, 46.0, 100),
    Press("brake", 50.0, 52.0, 75, 0.12),
    Press("clutch", 55.0, 55.8, 100),
)

# Trouble on the line, at these offsets (seconds).
NOISE_AT = {1.0: 12, 37.0: 20}       # EMI bursts: that many bytes of noise
BAD_CHECKSUM_AT = 5.5                # the next sentence goes out with a wrong checksum
BOUNCE_AT = 6.5                      # brake contact bounce: 45 % then 0 % back to back
DIP_AT = 11.0                        # brake dips to 10 % and back to 100 % back to back
PARTIAL_AT = 9.0                     # a sentence cut after 14 bytes, then the line goes on
OVERLONG_AT = 12.8                   # a garbled line of 100 bytes
UNKNOWN_AT = 13.5                    # the board announces its firmware in a sentence we don't know
SEQ_GAP_AT = 14.2                    # three sentences lost in the board's buffer
SEQ_GAP = 3


def travel(pedal: str, t: float) -> int:
    return round(max((p.travel(t) for p in PRESSES if p.pedal == pedal), default=0.0))


def unknown_sentence() -> bytes:
    body = "EXTXT,01,PEDAL BOARD FW 1.2"
    return f"${body}*{_xor(body):02X}\r\n".encode()


def _xor(text: str) -> int:
    out = 0
    for b in text.encode():
        out ^= b
    return out


def simulate(seed: int = 6) -> list[tuple[float, str, bytes]]:
    """(offset_s, kind, bytes) entries: kind S is a line without CR LF, B raw bytes."""
    rng = random.Random(seed)
    entries: list[tuple[float, str, bytes]] = []
    seq = FIRST_SEQ
    last_sent: tuple[int, int] | None = None
    last_t = -1.0
    pending = dict.fromkeys(("noise", "bad", "bounce", "dip", "partial", "overlong", "unknown", "gap"), True)

    def send(t: float, brake: int, clutch: int, corrupt: bool = False) -> None:
        nonlocal seq
        line = format_sentence(seq, BOOT_MS + round(t * 1000), brake, clutch).rstrip(b"\r\n")
        if corrupt:
            line = line[:-2] + f"{int(line[-2:], 16) ^ 0x5A:02X}".encode()
        entries.append((t, "S", line))
        seq += 1

    steps = round(DURATION_S / TICK_S)
    for i in range(steps + 1):
        t = round(i * TICK_S, 3)
        for at, count in NOISE_AT.items():
            if abs(t - at) < 1e-9:
                noise = bytes(rng.choice([b for b in range(256) if b not in (0x24, 0x0A, 0x0D)])
                              for _ in range(count))
                entries.append((t, "B", noise))
        if pending["bounce"] and t >= BOUNCE_AT:
            pending["bounce"] = False
            send(t, 45, 0)
            send(t, 0, 0)
            last_sent, last_t = (0, 0), t
            continue
        if pending["dip"] and t >= DIP_AT:
            pending["dip"] = False
            send(t, 10, travel("clutch", t))
            send(t, 100, travel("clutch", t))
            last_sent, last_t = (100, travel("clutch", t)), t
            continue
        if pending["partial"] and t >= PARTIAL_AT:
            pending["partial"] = False
            cut = format_sentence(seq, BOOT_MS + round(t * 1000), 0, 0)[:14]
            seq += 1
            entries.append((t, "B", cut))
            last_t = t
            continue
        if pending["overlong"] and t >= OVERLONG_AT:
            pending["overlong"] = False
            body = f"EXPDL,{seq},{BOOT_MS + round(t * 1000)},0,0," + "7" * 70
            seq += 1
            entries.append((t, "S", f"${body}*{_xor(body):02X}".encode()))
            last_t = t
            continue
        if pending["unknown"] and t >= UNKNOWN_AT:
            pending["unknown"] = False
            entries.append((t, "S", unknown_sentence().rstrip(b"\r\n")))
        if pending["gap"] and t >= SEQ_GAP_AT:
            pending["gap"] = False
            seq += SEQ_GAP
        now = (travel("brake", t), travel("clutch", t))
        if now != last_sent or t - last_t >= HEARTBEAT_S - 1e-9:
            corrupt = pending["bad"] and t >= BAD_CHECKSUM_AT
            if corrupt:
                pending["bad"] = False
            send(t, *now, corrupt=corrupt)
            last_sent, last_t = now, t
    return entries


def header(entries: list[tuple[float, str, bytes]]) -> str:
    sentences = sum(1 for _, k, _ in entries if k == "S")
    return "".join(line + "\n" for line in (
        "# Name: examrec exam.pedal, synthetic dual-control pedal sensor capture",
        "# Device: simulated sensor board, examrec/1 protocol, 115200 8N1",
        "# Description: 60 s of an exam drive: brake and clutch actuations (gear changes, hill",
        "#  start, emergency stop with both pedals), heartbeat every 200 ms, a sentence on every",
        "#  change (10 ms sampling). Line trouble: noise bursts at 1 s and 37 s, one bad checksum",
        "#  near 5.7 s, a bounce at 6.5 s (ignored by the 30 ms debounce), a light touch under 20 %",
        "#  at 7.5 s, a partial sentence at 9 s, a dip at 11 s, an overlong line at 12.8 s, an",
        "#  unknown sentence at 13.5 s, three lost sentences at 14.2 s.",
        "# Submitter: examrec, generated by bench/make_pedal_fixture.py (do not edit by hand)",
        "# Format: examrec-pedal-replay/1: '<offset_s> S <text>' sends text + CR LF;",
        "#  '<offset_s> B <hex>' sends raw bytes; equal offsets go out in one write.",
        f"# Duration: {DURATION_S:.1f}",
        f"# Entries: {len(entries)} ({sentences} lines)",
    ))


def render(entries: list[tuple[float, str, bytes]]) -> str:
    out = [header(entries)]
    for t, kind, data in entries:
        text = data.decode("ascii") if kind == "S" else data.hex()
        out.append(f"{t:.3f} {kind} {text}\n")
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    entries = simulate()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(entries), encoding="ascii")
    print(f"{args.out}: {len(entries)} entries over {DURATION_S:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
