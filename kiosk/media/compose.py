"""Compose several cameras into the one picture that is encoded (picture-in-picture or side by side).

A camera without signal is replaced by a calm grey "no signal" slate in its place, so the recording
shows the gap instead of freezing on a stale picture.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..config import VideoLayout

Rect = tuple[int, int, int, int]  # x, y, w, h


def _even(v: float) -> int:
    return max(2, int(v) // 2 * 2)


def layout_rects(layout: VideoLayout, count: int) -> list[Rect]:
    """Where each camera goes on the canvas, in room-profile order."""
    W, H = layout.width, layout.height
    if layout.layout == "single" or count == 1:
        return [(0, 0, W, H)][:1]
    if layout.layout == "pip":
        w, h = _even(W * layout.pip_scale), _even(H * layout.pip_scale)
        margin = _even(W * 0.02)
        rects = [(0, 0, W, H)]
        for i in range(1, count):
            rects.append((W - w - margin, H - margin - i * (h + margin), w, h))
        return rects
    w = _even(W / count)
    h = _even(min(H, w * H / W))
    y = _even((H - h) / 2)
    return [(i * w, y, w, h) for i in range(count)]


def slate(size: tuple[int, int], name: str) -> np.ndarray:
    w, h = size
    img = np.full((h, w, 3), 96, np.uint8)
    scale = max(0.4, h / 720)
    text = f"no signal - {name}"
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    cv2.putText(img, text, ((w - tw) // 2, (h + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (200, 200, 200), 2,
                cv2.LINE_AA)
    return img


class Compositor:
    def __init__(self, layout: VideoLayout, camera_names: list[str]) -> None:
        self.layout = layout
        self.names = camera_names
        self.rects = layout_rects(layout, len(camera_names))
        self._canvas = np.zeros((layout.height, layout.width, 3), np.uint8)
        self._slates: dict[int, np.ndarray] = {}

    def sizes(self) -> list[tuple[int, int]]:
        return [(w, h) for _, _, w, h in self.rects]

    def compose(self, frames: list[np.ndarray | None]) -> np.ndarray:
        """frames[i] is camera i's picture at its rect size (or None: slate). Returns the canvas (BGR)."""
        canvas = self._canvas
        if self.layout.layout == "side_by_side":
            canvas[:] = 0
        for i, (x, y, w, h) in enumerate(self.rects):
            img = frames[i] if i < len(frames) else None
            if img is None:
                if i not in self._slates:
                    self._slates[i] = slate((w, h), self.names[i])
                img = self._slates[i]
            elif img.shape[0] != h or img.shape[1] != w:
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            canvas[y:y + h, x:x + w] = img
            if i > 0 and self.layout.layout == "pip":
                cv2.rectangle(canvas, (x - 1, y - 1), (x + w, y + h), (240, 240, 240), 2)
        return canvas
