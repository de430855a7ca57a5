"""Pedal actuations from travel samples: threshold, debounce, and a short history of edges.

A pedal is actuated while its travel is at or above the threshold. Debounce works both ways: an
actuation shorter than ``debounce_ms`` is a bounce and is dropped; a release shorter than
``debounce_ms`` followed by a new press is a dip and does not split the actuation. An actuation
is reported once its release is settled, with the stamps of the sentence that crossed the
threshold upwards (start) and downwards (end): the edges are not delayed by the debounce, only
the decision is.

Pure logic on stamps (no threads, no clock reads): the reader feeds it, tests feed it directly.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

PEDALS = ("brake", "clutch")


@dataclass(frozen=True)
class Actuation:
    """One actuation on CLOCK_MONOTONIC stamps; ``end_ns`` None when still pressed at the end.
    ``interrupted``: the sensor was faulty during it, so its end is uncertain."""

    pedal: str
    start_ns: int
    end_ns: int | None
    peak_percent: float
    interrupted: bool = False

    @property
    def duration_ms(self) -> float | None:
        return None if self.end_ns is None else (self.end_ns - self.start_ns) / 1e6


@dataclass
class _Track:
    percent: float | None = None
    start_ns: int | None = None     # raw start of the current actuation (None: idle)
    peak: float = 0.0
    confirmed: bool = False          # held for the debounce time
    release_ns: int | None = None    # raw release waiting for the debounce time
    interrupted: bool = False


class ActuationTracker:
    """State machine per pedal; not thread-safe (the reader holds a lock around it)."""

    def __init__(self, threshold_percent: float = 20.0, debounce_ms: float = 30.0, history: int = 512):
        self.threshold = float(threshold_percent)
        self.debounce_ns = int(debounce_ms * 1_000_000)
        self.bounces = 0
        self.dips = 0
        self._tracks = {p: _Track() for p in PEDALS}
        self._history: deque[Actuation] = deque()
        self._history_max = history
        self._faults: deque[tuple[int, int | None]] = deque(maxlen=64)
        self._horizon_ns: int | None = None  # answers before this are unknown
        self._last_ns: int | None = None

    # -- feeding ------------------------------------------------------------------------------
    def update(self, values: dict[str, float | None], stamp_ns: int) -> list[Actuation]:
        """One sentence's travels (percent or None for an absent sensor) at ``stamp_ns``;
        returns the actuations that became final."""
        if self._horizon_ns is None:
            self._horizon_ns = stamp_ns
        self._last_ns = stamp_ns
        done = self.tick(stamp_ns)
        for pedal, percent in values.items():
            tr = self._tracks[pedal]
            tr.percent = percent
            above = percent is not None and percent >= self.threshold
            if tr.start_ns is None:
                if above:
                    tr.start_ns, tr.peak, tr.confirmed, tr.release_ns = stamp_ns, percent, False, None
            elif above:
                tr.peak = max(tr.peak, percent)
                if tr.release_ns is not None:  # pressed again within the debounce: a dip
                    tr.release_ns = None
                    self.dips += 1
            elif tr.release_ns is None:
                tr.release_ns = stamp_ns
        done += self.tick(stamp_ns)
        return done

    def tick(self, now_ns: int) -> list[Actuation]:
        """Settle presses and releases that have lasted the debounce time by ``now_ns``."""
        done: list[Actuation] = []
        for pedal, tr in self._tracks.items():
            if tr.start_ns is None:
                continue
            if not tr.confirmed and tr.release_ns is None and now_ns - tr.start_ns >= self.debounce_ns:
                tr.confirmed = True
            if tr.release_ns is not None and now_ns - tr.release_ns >= self.debounce_ns:
                if tr.release_ns - tr.start_ns >= self.debounce_ns:
                    act = Actuation(pedal, tr.start_ns, tr.release_ns, tr.peak, tr.interrupted)
                    self._remember(act)
                    done.append(act)
                else:
                    self.bounces += 1
                self._tracks[pedal] = _Track(percent=tr.percent)
        return done

    def fault_begin(self, stamp_ns: int) -> None:
        """The sensor went silent or its port was lost at ``stamp_ns``: answers are unknown from here."""
        if self._faults and self._faults[-1][1] is None:
            return
        self._faults.append((stamp_ns, None))
        for tr in self._tracks.values():
            if tr.start_ns is not None:
                tr.interrupted = True

    def fault_end(self, stamp_ns: int) -> None:
        """Sentences resumed at ``stamp_ns``."""
        if self._faults and self._faults[-1][1] is None:
            self._faults[-1] = (self._faults[-1][0], stamp_ns)

    def flush(self) -> list[Actuation]:
        """At stop: actuations still open, confirmed ones only (end None when still pressed)."""
        out = self.open_now()
        for pedal, tr in self._tracks.items():
            self._tracks[pedal] = _Track(percent=tr.percent)
        return out

    def open_now(self) -> list[Actuation]:
        """The actuations going on (confirmed ones only, end None when still pressed), left to
        go on: what a session that ends while the sensor keeps reading had of them."""
        return [Actuation(pedal, tr.start_ns, tr.release_ns, tr.peak, tr.interrupted)
                for pedal, tr in self._tracks.items()
                if tr.start_ns is not None and (tr.confirmed or tr.release_ns is not None
                                                and tr.release_ns - tr.start_ns >= self.debounce_ns)]

    def _remember(self, act: Actuation) -> None:
        self._history.append(act)
        while len(self._history) > self._history_max:
            dropped = self._history.popleft()
            self._horizon_ns = dropped.end_ns

    # -- questions ----------------------------------------------------------------------------
    def percent(self, pedal: str) -> float | None:
        return self._tracks[pedal].percent

    def actuated(self, pedal: str) -> bool:
        """Debounced live flag: pressed for at least the debounce time and not yet settled released."""
        tr = self._tracks[pedal]
        return tr.start_ns is not None and tr.confirmed

    def actuated_at(self, pedal: str, t_ns: int) -> bool | None:
        """Was ``pedal`` actuated at capture time ``t_ns``? None when unknown (before the kept
        history, or while the sensor was faulty). Answers within the debounce time of the newest
        sentence may still change (a press not yet confirmed reads False)."""
        if self._horizon_ns is None or t_ns < self._horizon_ns:
            return None
        for start, end in self._faults:
            if start <= t_ns and (end is None or t_ns < end):
                return None
        for act in reversed(self._history):
            if act.pedal != pedal:
                continue
            if act.end_ns is not None and act.end_ns <= t_ns:
                break  # one pedal's actuations never overlap: all earlier ones ended before t
            if act.start_ns <= t_ns:
                return True
        tr = self._tracks[pedal]
        if tr.start_ns is not None and tr.start_ns <= t_ns and (tr.release_ns is None or t_ns < tr.release_ns):
            return tr.confirmed
        return False

    def live_spans(self, since_ns: int) -> dict[str, list[tuple[int, int | None]]]:
        """Per pedal, the (start, end) spans that reach past ``since_ns``, for the overlay: the
        finished actuations plus the press going on now, taken from its raw edges before the
        debounce has decided (the overlay cannot wait for it: a frame is drawn as it arrives).
        A bounce may so light one frame; the ``pedal`` events stay debounced."""
        out: dict[str, list[tuple[int, int | None]]] = {p: [] for p in PEDALS}
        for act in self._history:
            if act.end_ns is None or act.end_ns >= since_ns:
                out[act.pedal].append((act.start_ns, act.end_ns))
        for pedal, tr in self._tracks.items():
            if tr.start_ns is not None:
                out[pedal].append((tr.start_ns, tr.release_ns))
        return out

    def history(self) -> list[Actuation]:
        """Finished actuations kept for :meth:`actuated_at`, oldest first."""
        return list(self._history)
