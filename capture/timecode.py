"""A machine-readable timecode strip drawn into replay frames.

The strip carries the frame's capture time (milliseconds on the session timeline) as large
black/white cells along the bottom edge. Cells are big and flat, so they survive H.264 at any
sane quality; a test decodes a recorded frame, reads the strip and compares it with the frame's
PTS. That proves the picture and its timestamp belong together ("one timeline").

Layout (44 cells across the width): sync 1,0 | 32 data bits, MSB first | 8-bit check | sync 0,1.
"""
from __future__ import annotations

import numpy as np

CELLS = 44
DATA_BITS = 32
WHITE = 235  # video-range levels: nothing for the encoder to clip
BLACK = 16


def strip_height(height: int) -> int:
    return max(8, height // 45)


def _check(value: int) -> int:
    b = value.to_bytes(4, "big")
    return (sum(b) ^ 0xA5) & 0xFF


def _bits(value_ms: int) -> list[int]:
    value = value_ms & 0xFFFFFFFF
    data = [(value >> (DATA_BITS - 1 - i)) & 1 for i in range(DATA_BITS)]
    chk = _check(value)
    check = [(chk >> (7 - i)) & 1 for i in range(8)]
    return [1, 0] + data + check + [0, 1]


def draw_timecode(image: np.ndarray, value_ms: int) -> None:
    """Draw ``value_ms`` (>= 0) into the bottom rows of a BGR image, in place."""
    h, w = image.shape[:2]
    sh = strip_height(h)
    cw = w // CELLS
    rows = image[h - sh:h]
    rows[:] = BLACK
    for i, bit in enumerate(_bits(max(0, int(value_ms)))):
        if bit:
            rows[:, i * cw:(i + 1) * cw] = WHITE


def read_timecode(image: np.ndarray) -> int | None:
    """Read the strip back from a decoded frame (BGR or gray); None when absent or damaged."""
    gray = image if image.ndim == 2 else image.mean(axis=2)
    h, w = gray.shape[:2]
    sh = strip_height(h)
    cw = w // CELLS
    # Sample the middle of each cell, away from edges where compression smears the contrast.
    y0, y1 = h - sh + sh // 4, h - sh // 4
    bits = []
    for i in range(CELLS):
        x0, x1 = i * cw + cw // 4, (i + 1) * cw - cw // 4
        bits.append(1 if gray[y0:y1, x0:x1].mean() > 128 else 0)
    if bits[:2] != [1, 0] or bits[-2:] != [0, 1]:
        return None
    value = 0
    for b in bits[2:2 + DATA_BITS]:
        value = (value << 1) | b
    chk = 0
    for b in bits[2 + DATA_BITS:2 + DATA_BITS + 8]:
        chk = (chk << 1) | b
    return value if chk == _check(value) else None
