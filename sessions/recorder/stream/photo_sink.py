"""The photo sink: JPEG stills of a stream's frames (the candidate's and the examiner's faces at
the start of the exam, and any `examrec photo`), with the overlay, hashed for the manifest."""
from __future__ import annotations

import hashlib
from concurrent.futures import Executor
from pathlib import Path
from typing import Callable

import numpy as np

from core import durable
from sessions.recorder.messages import PhotoTaken, Report, TakePhoto

JPEG_QUALITY = 92


class PhotoSink:
    """Takes the next recorded frame for each pending request."""

    def __init__(self, session_dir: Path, stream: str, *, send: Callable[[Report], None],
                 event: Callable[..., None], background: Executor):
        self.session_dir = Path(session_dir)
        self.stream = stream
        self._send = send
        self._event = event
        self._background = background
        self.requests: list[TakePhoto] = []

    def request(self, cmd: TakePhoto) -> None:
        self.requests.append(cmd)

    def take(self, image: np.ndarray, capture_ns: int) -> None:
        """Encode the still now (this frame, with its overlay); write it in the background, so a
        slow disk never costs frames."""
        import cv2
        for req in self.requests:
            ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                self._event("error", message=f"photo {req.file} could not be encoded")
                continue
            self._background.submit(self._write, req, jpg.tobytes(), capture_ns)
        self.requests.clear()

    def _write(self, req: TakePhoto, data: bytes, capture_ns: int) -> None:
        path = self.session_dir / req.file
        path.parent.mkdir(exist_ok=True)
        durable.write_file_atomic(path, data)
        self._send(PhotoTaken(self.stream, req.file, req.role, capture_ns, hashlib.sha256(data).hexdigest()))
