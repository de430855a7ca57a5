"""Decode recorded MP4 the way a reviewer's player would: PyAV frames and ffprobe counts."""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np


@dataclass
class Decoded:
    pts_s: list[float]
    images: list[np.ndarray]


def decode_video(path: Path, keep_every: int = 1) -> Decoded:
    """Every video frame's PTS (s) and, for every ``keep_every``-th, its BGR picture."""
    pts, images = [], []
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        try:
            for i, f in enumerate(c.decode(st)):
                pts.append(float(f.pts * f.time_base))
                if i % keep_every == 0:
                    images.append(f.to_ndarray(format="bgr24"))
        except av.InvalidDataError:
            pass  # a torn tail: the frames before it are what counts
    return Decoded(pts, images)


def audio_span(path: Path) -> tuple[float, float, int]:
    """(first PTS, end PTS, samples) of the decoded audio track."""
    first, end, n = None, 0.0, 0
    with av.open(str(path)) as c:
        for f in c.decode(audio=0):
            t = float(f.pts * f.time_base)
            first = t if first is None else first
            end = t + f.samples / f.sample_rate
            n += f.samples
    return first, end, n


def ffprobe(path: Path) -> dict:
    """ffprobe's view, counting frames by decoding them."""
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                          "stream=codec_type,nb_read_frames,start_time,duration:format=duration",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def decode_audio(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(time of every decoded sample from its frame's own PTS, mono float samples, rate)."""
    times, chunks, rate = [], [], 48000
    with av.open(str(path)) as c:
        for f in c.decode(audio=0):
            rate = f.sample_rate
            a = f.to_ndarray()
            a = a.mean(axis=0) if a.ndim == 2 else a
            chunks.append(a)
            times.append(float(f.pts * f.time_base) + np.arange(len(a)) / rate)
    return np.concatenate(times), np.concatenate(chunks).astype(np.float64), rate


def beep_onsets(path: Path, threshold: float = 0.1) -> list[float]:
    """Session times at which the fixture's 1 kHz beeps start (the WAV beeps at every whole second)."""
    t, x, rate = decode_audio(path)
    win = rate // 200  # 5 ms envelope
    env = np.sqrt(np.convolve(x * x, np.ones(win) / win, mode="same"))
    loud = env > threshold * env.max()
    edges = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    onsets, last = [], -1.0
    for e in edges:
        if t[e] - last > 0.5:
            onsets.append(float(t[e]))
            last = t[e]
    return onsets
