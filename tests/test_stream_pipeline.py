"""The stream process's parts on their own, in the test process and in seconds: the typed
messages crossing a real pipe, the stage gate's pause rule and pedal lamps, one source thread
reopening a failing replay source with back-off and dropping what a slow consumer cannot take,
the pre-exam check through the real pattern source, overlay and encoder, the segment sink's
fragment log and reports, and the tail cut to recovered/ that repair and a full disk share."""
from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
import multiprocessing as mp
import os
import queue
import time
from pathlib import Path

import pytest

from capture.base import SourceLost, SourceUnavailable
from capture.replay import PatternSource, WavSource
from core.clock import NS_PER_S, SessionClock
from core.profile import load_profile
from sessions.evidence.recovered import cut_tail
from sessions.recorder import messages
from sessions.recorder.stream.check import run_check
from sessions.recorder.stream.job import StopLine, StreamJob
from sessions.recorder.stream.segment_sink import SegmentSink
from sessions.recorder.stream.source_thread import SourceThread
from sessions.recorder.stream.stage_gate import StageGate

from conftest import ROOT, replay_variant

MS = 1_000_000


def _sample(cls: type) -> object:
    """An instance of a message class with a plain value in every field."""
    clock = SessionClock(start_ns=123 * NS_PER_S, wall_anchor_ns=1_700_000_000 * NS_PER_S)
    values = {int: 7, float: 1.5, str: "cabin", bool: True, bytes: b"\xff\xd8 a thumbnail"}
    kwargs = {}
    for f in dataclasses.fields(cls):
        t = str(f.type)
        if "SessionClock" in t:
            kwargs[f.name] = clock
        elif "PedalSpan" in t:
            kwargs[f.name] = ((1 * MS, 2 * MS), (3 * MS, None))
        elif t.startswith("dict"):
            kwargs[f.name] = {"stream": "cabin", "message": "no frame"}
        else:
            kwargs[f.name] = next(v for k, v in values.items() if t.split(" ")[0].startswith(k.__name__))
    return cls(**kwargs)


def test_every_message_crosses_a_process_pipe_unchanged():
    classes = [c for c in vars(messages).values()
               if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == messages.__name__]
    assert len(classes) == 23
    reader, writer = mp.get_context("spawn").Pipe(duplex=False)
    try:
        for cls in classes:
            msg = _sample(cls)
            writer.send(msg)
            got = reader.recv()
            assert type(got) is cls and got == msg
            with pytest.raises(dataclasses.FrozenInstanceError):
                got.stream = "other"  # type: ignore[misc]
    finally:
        reader.close()
        writer.close()


def test_stage_gate_pause_rule_and_resume_banner():
    gate = StageGate()
    t0 = 1000 * NS_PER_S
    gate.pause(messages.Pause(at_ns=t0 + 3 * NS_PER_S, banner="PAUSE 10:00:03 route AA1", banner_lead_ns=2 * NS_PER_S))
    assert gate.dress(t0).banner is None                            # before the lead: no banner
    assert gate.dress(t0 + 1 * NS_PER_S).banner == "PAUSE 10:00:03 route AA1"
    assert not gate.pause_due(t0 + 3 * NS_PER_S - 1)
    assert gate.pause_due(t0 + 3 * NS_PER_S)                        # the first frame at the instant ends the stage
    gate.enter_pause()
    assert gate.paused and gate.overlay.banner is None and gate.pause_at_ns is None
    gate.resume(messages.Resume(stage=2, banner="RESUME 10:05:00 AA1  STAGE 2", banner_until_ns=t0 + 400 * NS_PER_S))
    assert not gate.paused and gate.stage == 2
    st = gate.dress(t0 + 399 * NS_PER_S)
    assert st.stage == 2 and st.banner.startswith("RESUME")
    assert gate.dress(t0 + 400 * NS_PER_S).banner is None           # the resume banner ends on time


def test_stage_gate_resume_during_the_banner_withdraws_the_pause():
    gate = StageGate()
    t0 = 1000 * NS_PER_S
    gate.pause(messages.Pause(at_ns=t0 + 3 * NS_PER_S, banner="PAUSE 10:00:03 route AA1", banner_lead_ns=3 * NS_PER_S))
    assert gate.dress(t0 + 1 * NS_PER_S).banner.startswith("PAUSE")
    gate.resume(messages.Resume(stage=1, banner="RESUME 10:00:01 AA1  STAGE 1", banner_until_ns=t0 + 4 * NS_PER_S))
    assert not gate.pause_due(t0 + 3 * NS_PER_S) and not gate.paused and gate.stage == 1   # no cut
    assert gate.dress(t0 + 3 * NS_PER_S).banner.startswith("RESUME")
    assert gate.dress(t0 + 4 * NS_PER_S).banner is None


def test_stage_gate_lights_pedals_on_exactly_the_frames_inside_an_actuation():
    gate = StageGate()
    assert gate.dress(5 * MS).brake is None                         # no pedal sensor: no lamp at all
    gate.pedal_spans(messages.PedalSpans(brake=((10 * MS, 20 * MS),), clutch=((15 * MS, None),)))
    lit = [(t, gate.dress(t * MS).brake, gate.dress(t * MS).clutch) for t in (9, 10, 19, 20, 30)]
    assert lit == [(9, False, False), (10, True, False), (19, True, True), (20, False, True), (30, False, True)]
    gate.sensor_values(messages.SensorOverlay(gps_fix=True, speed_kmh=42.0))
    assert gate.dress(31 * MS).speed_kmh == 42.0 and gate.overlay.gps_fix is True


class FlakyPattern(PatternSource):
    """The replay pattern with a fault injected: the device goes away after ``lose_after`` frames
    and refuses the first ``refuse_opens`` attempts to open it again."""

    def __init__(self, lose_after: int, refuse_opens: int):
        super().__init__("flaky", 64, 48, 25, realtime=False)
        self.lose_after, self.refuse_opens = lose_after, refuse_opens
        self.reads = self.opens = 0

    def open(self) -> None:
        self.opens += 1
        if self.reads >= self.lose_after and self.refuse_opens > 0:
            self.refuse_opens -= 1
            raise SourceUnavailable("camera flaky: not there yet")
        super().open()

    def read(self):
        self.reads += 1
        if self.reads == self.lose_after:
            raise SourceLost("camera flaky: unplugged")
        return super().read()


def _thread(source, events: list, **kw) -> SourceThread:
    args = dict(name="capture-test", device="camera flaky", what="video", queue_items=4, full_wait_s=None,
                skip_before_start=True, event=lambda type_, **f: events.append((type_, f)))
    args.update(kw)
    return SourceThread(source, **args)


def _pattern_mappings(pid: int) -> dict[str, tuple[int, int]]:
    """The pattern's picture files a process maps: (RSS, PSS) of each in kB."""
    out: dict[str, tuple[int, int]] = {}
    path, rss = "", 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(None, 1)[0]
        if not first.endswith(":"):
            parts = line.split(None, 5)
            path = parts[5].strip() if len(parts) > 5 else ""
        elif first == "Rss:":
            rss = int(line.split()[1])
        elif first == "Pss:" and "/pattern-v" in path:
            old_rss, old_pss = out.get(path, (0, 0))
            out[path] = (old_rss + rss, old_pss + int(line.split()[1]))
    return out


def _open_pattern_and_report(name: str, conn) -> None:
    src = PatternSource(name, 320, 240, 25, realtime=False)
    src.open()
    src.start(SessionClock.start_now())
    for _ in range(30):  # the canvas scrolls and the noise window moves: every page is read
        src.read()
    conn.send("ready")
    conn.recv()
    conn.send(_pattern_mappings(os.getpid()))
    conn.recv()  # stays open until the parent has looked
    src.close()


def test_pattern_sources_of_one_size_share_their_pictures_across_processes(tmp_path, monkeypatch):
    """Every replay camera of a size maps the same picture files (the stream processes hold the
    pictures once between them, as the page cache holds the file ffmpeg reads), each draws its
    own name and timecode on them, and a damaged file is drawn again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "examrec" / "replay"
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for name in ("road", "cabin"):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_open_pattern_and_report, args=(name, theirs))
        proc.start()
        pipes.append(mine)
        procs.append(proc)
    try:
        assert [conn.recv() for conn in pipes] == ["ready", "ready"]
        for conn in pipes:
            conn.send("measure")
        maps = [conn.recv() for conn in pipes]
        files = sorted(str(p) for p in folder.glob("pattern-*.npy"))
        assert len(files) == 2 and sorted(maps[0]) == sorted(maps[1]) == files, maps  # the canvas and the noise
        for mapping in maps:
            for path, (rss_kb, pss_kb) in mapping.items():
                # Both processes hold the same pages: each is charged about half of them.
                assert rss_kb > 100 and pss_kb <= 0.6 * rss_kb, (path, rss_kb, pss_kb)
    finally:
        for conn in pipes:
            conn.send("done")
        for proc in procs:
            proc.join(10)
    assert (folder.stat().st_mode & 0o777) == 0o700

    clock = SessionClock.start_now()
    road, cabin = PatternSource("road", 320, 240, 25, realtime=False), PatternSource("cabin", 320, 240, 25, realtime=False)
    for src in (road, cabin):
        src.open()
        src.start(clock)
    a, b = road.read().image, cabin.read().image
    assert a.flags.writeable and (a != b).any()                       # its own name on the shared canvas
    # A damaged picture file is found out and drawn again, the same pictures as before.
    canvas = next(folder.glob("pattern-*canvas.npy"))
    canvas.write_bytes(canvas.read_bytes()[:1000])
    again = PatternSource("road", 320, 240, 25, realtime=False)
    again.open()
    again.start(clock)
    assert (again.read().image == a).all()


def test_source_thread_reopens_a_lost_device_with_back_off_and_says_so():
    events: list = []
    src = FlakyPattern(lose_after=3, refuse_opens=1)
    thread = _thread(src, events)
    assert thread.open() is None
    clock = SessionClock.start_now()
    thread.start(clock, StopLine())
    got, t_start = [], time.monotonic()
    try:
        while len(got) < 6 and time.monotonic() - t_start < 10:
            try:
                got.append(thread.queue.get(timeout=0.5))
            except queue.Empty:
                pass
    finally:
        thread.stop()
    took = time.monotonic() - t_start
    assert len(got) == 6
    assert [e[0] for e in events] == ["fault", "recovered"]
    assert events[0][1] == {"device": "camera flaky", "what": "video", "message": "camera flaky: unplugged"}
    assert src.opens == 3                     # the first open, one refused reopen, the one that worked
    assert took >= 0.5 + 1                    # waited 0.5 s, then 1 s after the refusal
    thread.start(clock, StopLine())
    try:
        with pytest.raises(RuntimeError, match="already running"):
            thread.start(clock, StopLine())   # a second start while running is refused
        with pytest.raises(RuntimeError, match="while running"):
            thread.rewind()
    finally:
        thread.stop()
    thread.stop()                             # stopping twice is harmless


def test_source_thread_drops_what_a_slow_consumer_cannot_take_and_ends_at_the_stop():
    events: list = []
    thread = _thread(PatternSource("fast", 64, 48, 25, realtime=False), events, queue_items=2, full_wait_s=0)
    thread.open()
    clock = SessionClock.start_now()
    stop = StopLine(clock.start_ns + 2 * NS_PER_S)             # frame 50 is the last one taken
    thread.start(clock, stop)
    deadline = time.monotonic() + 10
    while thread.captured < 51 and time.monotonic() < deadline:
        time.sleep(0.01)
    thread.stop()
    assert thread.captured == 51 and thread.queue.qsize() == 2 and thread.dropped == 49
    assert events == []
    thread.rewind()
    assert thread.captured == thread.dropped == thread.skipped == 0 and thread.queue.empty()


def test_sound_thread_takes_every_block_when_the_consumer_keeps_up():
    events: list = []
    thread = _thread(WavSource(ROOT / "bench/fixtures/cabin.wav", realtime=False), events, device="audio of t",
                     what="audio", queue_items=2000, full_wait_s=1.0, skip_before_start=False)
    assert thread.open() is None
    clock = SessionClock.start_now()
    thread.start(clock, StopLine(clock.start_ns + NS_PER_S))
    deadline = time.monotonic() + 10
    while thread.captured < 48 and time.monotonic() < deadline:
        time.sleep(0.01)
    thread.stop()
    blocks = list(thread.queue.queue)
    # The 47 blocks of 1024 samples that begin in the first second, and the first one after it.
    assert thread.dropped == 0 and len(blocks) == thread.captured == 48
    assert all(abs(b.capture_ns - a.capture_ns - 1024 * NS_PER_S / 48000) <= 1 for a, b in zip(blocks, blocks[1:]))


def test_pre_exam_check_runs_the_pipeline_and_leaves_it_ready_for_the_session(tmp_path):
    profile = load_profile(replay_variant(tmp_path))
    spec = next(s for s in profile.streams if s.audio)
    job = StreamJob(spec=spec, profile=profile, session_dir=str(tmp_path / "session"))
    events: list = []
    video = _thread(PatternSource(spec.name, spec.width, spec.height, spec.fps), events,
                    queue_items=spec.queue_frames, full_wait_s=0)
    audio = _thread(WavSource(profile.resolve(spec.audio[4:])), events, what="audio", queue_items=2000,
                    full_wait_s=1.0, skip_before_start=False)
    assert video.open() is None and audio.open() is None
    now = SessionClock.start_now()
    clock = SessionClock(now.start_ns + 200 * MS, now.wall_anchor_ns + 200 * MS)
    result = run_check(job, video, audio, clock, 1.2, tmp_path / "scratch")
    assert isinstance(result, messages.CheckDone) and result.error is None, result
    assert result.seconds == pytest.approx(0.9)
    assert result.frames + result.dropped >= 0.9 * spec.fps * 0.9 - 1    # every slot after the warm-up
    assert result.bytes > 0 and result.audio_dbfs is not None and result.audio_dbfs > -60
    assert not (tmp_path / "scratch" / f"{spec.name}.mp4").exists()
    # Rewound for the session: no count of the check's frames, nothing left in the queues.
    assert video.captured == video.dropped == video.skipped == 0 and video.queue.empty() and audio.queue.empty()
    assert events == []


def test_segment_sink_logs_every_fragment_and_reports_the_newest_once(tmp_path):
    from sessions.evidence.chain import last_hash
    profile = load_profile(replay_variant(tmp_path))
    spec = next(s for s in profile.streams if s.name == "pedal")
    session = tmp_path / "session"
    session.mkdir()
    job = StreamJob(spec=spec, profile=profile, session_dir=str(session))
    clock = SessionClock.start_now()
    sent: list = []
    src = PatternSource(spec.name, spec.width, spec.height, spec.fps, realtime=False)
    src.open()
    src.start(clock)
    with ThreadPoolExecutor(max_workers=1) as background:
        sink = SegmentSink(job, clock, StopLine(), None, send=sent.append, event=lambda *a, **k: None,
                           background=background, dropped_total=lambda: 0)
        with pytest.raises(RuntimeError, match="not started"):
            sink.stop(1, paused=False)
        sink.start(0.0, 1)
        with pytest.raises(RuntimeError, match="already started"):
            sink.start(0.0, 1)
        for _ in range(round(spec.fps)):          # one second of frames: several 120 ms fragments
            frame = src.read()
            sink.write(frame, clock.pts_s(frame.capture_ns), 1)
        log_path = session / spec.name / "fragments.jsonl"
        newest = sink.newest_fragment()
        assert isinstance(newest, messages.FragmentWritten) and sink.newest_fragment() is None
        last = json.loads(log_path.read_text().splitlines()[-1])
        assert (newest.file, newest.index, newest.end, newest.sha256) == \
            (f"{spec.name}/0001.mp4", last["index"], last["end"], last["sha256"])
        assert newest.log_sha256 == last_hash(log_path)
        sink.stop(1, paused=False)
    sink.close_log()
    opened, closed = sent
    assert isinstance(opened, messages.SegmentOpened) and opened.file == f"{spec.name}/0001.mp4"
    assert isinstance(closed, messages.SegmentClosed) and closed.closed and closed.frames == round(spec.fps)
    assert closed.sha256 is not None and closed.size == (session / closed.file).stat().st_size


def _tail_file(tmp_path: Path) -> tuple[Path, Path, bytes]:
    session = tmp_path / "s"
    (session / "cabin").mkdir(parents=True)
    data = bytes(range(256)) * 40
    path = session / "cabin" / "0001.mp4"
    path.write_bytes(data)
    return session, path, data


@pytest.mark.parametrize("space_first", [False, True])
def test_cut_tail_keeps_every_cut_byte_in_recovered(tmp_path, space_first):
    session, path, data = _tail_file(tmp_path)
    cut = cut_tail(session, path, 4000, space_first=space_first)
    assert path.read_bytes() == data[:4000]
    assert cut.saved_as == "recovered/cabin__0001.mp4.from-4000" and cut.error is None
    assert (session / cut.saved_as).read_bytes() == data[4000:]
    assert (cut.file, cut.kept_bytes, cut.cut_bytes) == ("cabin/0001.mp4", 4000, len(data) - 4000)


def test_cut_tail_on_a_full_disk_cuts_first_and_reports_a_tail_it_could_not_keep(tmp_path):
    session, path, data = _tail_file(tmp_path)
    (session / "recovered").write_bytes(b"")        # recovered/ cannot be made: the tail has nowhere to go
    cut = cut_tail(session, path, 4000, space_first=True)
    assert path.read_bytes() == data[:4000] and cut.saved_as is None and cut.error
    # Without space_first nothing changes when the tail cannot be kept.
    session2, path2, data2 = _tail_file(tmp_path / "again")
    (session2 / "recovered").write_bytes(b"")
    with pytest.raises(OSError):
        cut_tail(session2, path2, 4000)
    assert path2.read_bytes() == data2 and os.path.getsize(path2) == len(data2)


def test_a_segment_discarded_before_its_first_frame_gives_its_number_back(tmp_path):
    """A segment opened ahead of a first frame that never came (a pause or stop first) is no
    segment: its file goes, and the next segment takes its number, so the stream's numbering has
    no gap (verify reports a gap as a missing segment)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from capture.base import Frame
    from sessions.recorder.stream.job import StopLine
    from sessions.recorder.stream.segment_sink import SegmentSink

    profile = load_profile(replay_variant(tmp_path))
    spec = next(s for s in profile.streams if not s.audio)
    session = tmp_path / "session"
    session.mkdir()
    job = StreamJob(spec=spec, profile=profile, session_dir=str(session))
    now = SessionClock.start_now()
    sent: list = []
    with ThreadPoolExecutor(1) as background:
        sink = SegmentSink(job, now, StopLine(), None, send=sent.append, event=lambda *a, **k: None,
                           background=background, dropped_total=lambda: 0)
        sink.start(0.0, stage=1)
        sink.pause(now.start_ns, stage=1)                 # paused before any frame
        image = np.zeros((spec.height, spec.width, 3), np.uint8)
        sink.write(Frame(image, now.start_ns + NS_PER_S), 1.0, stage=2)
        sink.stop(stage=2, paused=False)
        sink.close_log()
    opened = [m.file for m in sent if isinstance(m, messages.SegmentOpened)]
    discarded = [m.file for m in sent if isinstance(m, messages.SegmentDiscarded)]
    first = f"{spec.name}/0001.mp4"
    assert opened == [first, first] and discarded == [first]
    assert sorted(p.name for p in (session / spec.name).glob("*.mp4")) == ["0001.mp4"]


def _close_a_writer_and_give_back(conn) -> None:
    """A 1080p writer fed by a source thread through a queue, as in a stream process; reports the
    anonymous memory (MB) after it closed, and after give_back_free_memory."""
    import threading
    from core.profile import EncoderSpec
    from muxer.segment import SegmentSettings, SegmentWriter
    from sessions.recorder.stream.heap import give_back_free_memory
    import tempfile

    def anon_mb() -> float:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no Anonymous line")
    clock = SessionClock.start_now()
    src = PatternSource("heap", 1920, 1080, 25, realtime=False)
    src.open()
    src.start(clock)
    frames: queue.Queue = queue.Queue(6)

    def produce() -> None:
        for _ in range(60):
            frames.put(src.read())
        frames.put(None)
    folder = Path(tempfile.mkdtemp())
    writer = SegmentWriter(folder / "s.mp4", "s.mp4", SegmentSettings(1920, 1080, 25, EncoderSpec(preset="ultrafast", crf=23), 50), clock)
    thread = threading.Thread(target=produce)
    thread.start()
    k = 0
    while (frame := frames.get()) is not None:
        writer.write_video(frame.image, clock.start_ns + k * 40_000_000)
        k += 1
    thread.join()
    del frame
    writer.close()
    del writer
    closed = anon_mb()
    give_back_free_memory()
    conn.send((closed, anon_mb()))


def test_a_closed_writers_memory_goes_back_to_the_system():
    """What a closed 1080p writer and the frames it encoded leave in malloc's arenas is returned
    (the pre-exam check's writer, every rotation, pause and stage change close one)."""
    ctx = mp.get_context("spawn")  # a fresh heap: the test process's own history does not count
    mine, theirs = ctx.Pipe()
    proc = ctx.Process(target=_close_a_writer_and_give_back, args=(theirs,))
    proc.start()
    try:
        assert mine.poll(120), f"the writer's process ended without a report (exit code {proc.exitcode})"
        closed, given_back = mine.recv()
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    assert given_back < closed - 15, (closed, given_back)
