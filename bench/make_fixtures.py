"""Make the replay fixtures for audio and the controls camera (run once; the results are committed).

    cabin.wav      10 s, 48 kHz mono 16-bit: quiet room noise with a 1 kHz beep of 100 ms at the
                   start of every second, so sound can be lined up with the picture by ear and by test.
    pedal-cam.mp4  4 s, 640x480@25 H.264: a stand-in for the camera on the candidate's feet
                   (two pedals and a moving foot), looped by the `clip:` source.
"""
from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

HERE = Path(__file__).resolve().parent / "fixtures"


def make_wav(path: Path, seconds: int = 10, rate: int = 48000) -> None:
    rng = np.random.default_rng(7)
    t = np.arange(seconds * rate) / rate
    signal = rng.normal(0, 300, t.size)
    beep = (t % 1.0) < 0.1
    signal[beep] += 9000 * np.sin(2 * np.pi * 1000 * t[beep])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(signal, -32768, 32767).astype("<i2").tobytes())


def make_clip(path: Path, seconds: int = 4, fps: int = 25, size: tuple[int, int] = (640, 480)) -> None:
    w, h = size
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"preset": "veryfast", "crf": "28"}
        for i in range(seconds * fps):
            img = np.full((h, w, 3), (40, 45, 50), np.uint8)
            cv2.rectangle(img, (0, int(h * 0.75)), (w, h), (25, 25, 25), -1)  # floor mat
            for x, label in ((w // 4, "CLUTCH"), (w // 2, "BRAKE"), (3 * w // 4, "GAS")):
                cv2.rectangle(img, (x - 40, h // 2), (x + 40, h // 2 + 90), (90, 90, 90), -1)
                cv2.putText(img, label, (x - 38, h // 2 - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (200, 200, 200), 1)
            fx = int(w / 2 + w / 4 * np.sin(2 * np.pi * i / (seconds * fps)))
            cv2.ellipse(img, (fx, h // 2 + 140), (60, 30), 0, 0, 360, (60, 80, 150), -1)  # the foot
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for p in st.encode(frame):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)


if __name__ == "__main__":
    HERE.mkdir(parents=True, exist_ok=True)
    make_wav(HERE / "cabin.wav")
    make_clip(HERE / "pedal-cam.mp4")
    print("wrote", HERE / "cabin.wav", HERE / "pedal-cam.mp4")
