"""Composition of two (or more) cameras into the one encoded picture, for both layouts a room profile
offers: picture-in-picture (pip_scale) and side by side; a camera without signal becomes a slate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kiosk.config import load_room
from kiosk.media.compose import Compositor, slate

REPO = Path(__file__).resolve().parent.parent

# BGR, as OpenCV sources deliver them; none of them is the slate's grey (96) or black
RED = (0, 0, 230)
GREEN = (0, 200, 0)
BLUE = (210, 40, 10)
SLATE_GREY = 96


def solid(w: int, h: int, bgr: tuple[int, int, int]) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = bgr
    return img


def room_video(tmp_path: Path, layout: str, width: int = 1280, height: int = 720, pip_scale: float | None = None):
    """The [video] table of a real room profile file with two cameras, loaded as the station loads it."""
    scale = f"pip_scale = {pip_scale}\n" if pip_scale is not None else ""
    text = (REPO / "rooms" / "demo.toml").read_text()
    head, rest = text.split("[[cameras]]", 1)
    video = (f'[video]\nwidth = {width}\nheight = {height}\nfps = 30\nlayout = "{layout}"\n{scale}\n')
    before = head.split("[video]", 1)[0]
    path = tmp_path / f"room-{layout}.toml"
    path.write_text(before + video + "[[cameras]]" + rest)
    room = load_room(path)
    assert room.video.layout == layout and len(room.cameras) == 2
    return room.video, [c.name for c in room.cameras]


def bbox(canvas: np.ndarray, bgr: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (exclusive) of the pixels carrying exactly this colour."""
    ys, xs = np.nonzero(np.all(canvas == np.array(bgr, np.uint8), axis=2))
    assert len(xs), f"no pixel has colour {bgr}"
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def region(canvas: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    return canvas[y0:y1, x0:x1].reshape(-1, 3)


def all_of(pixels: np.ndarray, bgr: tuple[int, int, int]) -> bool:
    return bool(np.all(pixels == np.array(bgr, np.uint8)))


# ---------------------------------------------------------------- side by side


@pytest.mark.parametrize("size", [(1280, 720), (640, 480)])
def test_side_by_side_puts_camera_one_left_and_camera_two_right(tmp_path, size):
    W, H = size
    video, names = room_video(tmp_path, "side_by_side", W, H)
    comp = Compositor(video, names)
    sizes = comp.sizes()
    assert len(sizes) == 2 and sizes[0] == sizes[1]
    frames = [solid(*sizes[0], RED), solid(*sizes[1], GREEN)]
    canvas = comp.compose(frames)
    assert canvas.shape == (H, W, 3) and canvas.dtype == np.uint8
    # each camera fills its half, at its own aspect (no stretching): letterboxed above and below
    x0, y0, x1, y1 = bbox(canvas, RED)
    assert (x0, x1) == (0, W // 2)
    assert abs((x1 - x0) / (y1 - y0) - W / H) < 0.02
    assert all_of(region(canvas, x0, y0, x1, y1), RED)
    gx0, gy0, gx1, gy1 = bbox(canvas, GREEN)
    assert (gx0, gx1) == (W // 2, W) and (gy0, gy1) == (y0, y1)
    assert all_of(region(canvas, gx0, gy0, gx1, gy1), GREEN)
    # centred vertically; the bars are black
    assert abs(y0 - (H - y1)) <= 2
    assert all_of(region(canvas, 0, 0, W, y0), (0, 0, 0)) and all_of(region(canvas, 0, y1, W, H), (0, 0, 0))
    # pixel probes at the middle of each half
    assert tuple(canvas[H // 2, W // 4]) == RED and tuple(canvas[H // 2, 3 * W // 4]) == GREEN


def test_side_by_side_scales_full_size_camera_pictures_into_their_halves(tmp_path):
    video, names = room_video(tmp_path, "side_by_side", 1280, 720)
    comp = Compositor(video, names)
    canvas = comp.compose([solid(1280, 720, BLUE), solid(1920, 1080, RED)])  # not at the rect size
    assert canvas.shape == (720, 1280, 3)
    assert tuple(canvas[360, 320]) == BLUE and tuple(canvas[360, 960]) == RED
    assert bbox(canvas, BLUE)[2] == 640 and bbox(canvas, RED)[0] == 640


def test_side_by_side_missing_camera_shows_a_slate_in_its_half_and_the_other_stays(tmp_path):
    video, names = room_video(tmp_path, "side_by_side", 1280, 720)
    comp = Compositor(video, names)
    w, h = comp.sizes()[0]
    canvas = comp.compose([solid(w, h, RED), None]).copy()
    assert canvas.shape == (720, 1280, 3)
    rx0, ry0, rx1, ry1 = bbox(canvas, RED)
    assert (rx0, rx1) == (0, 640) and all_of(region(canvas, rx0, ry0, rx1, ry1), RED)
    right = canvas[ry0:ry1, 640:1280]
    assert np.array_equal(right, slate((w, h), names[1])), "camera 2's place shows its 'no signal' slate"
    assert np.median(right) == SLATE_GREY and not (right == np.array(RED, np.uint8)).all(axis=2).any()
    # the slate names the camera: a different camera gets a different slate
    assert not np.array_equal(slate((w, h), names[0]), slate((w, h), names[1]))
    # a shorter frames list means the cameras at the end have no signal, too
    assert np.array_equal(comp.compose([solid(w, h, RED)]), canvas)
    # the signal returns: the slate goes at once (no stale picture either way)
    back = comp.compose([None, solid(w, h, GREEN)])
    assert np.array_equal(back[ry0:ry1, 0:640], slate((w, h), names[0]))
    assert all_of(region(back, 640, ry0, 1280, ry1), GREEN)
    assert not (back == np.array(RED, np.uint8)).all(axis=2).any(), "no stale picture of camera 1 remains"


# ---------------------------------------------------------------- picture in picture


@pytest.mark.parametrize("size,pip_scale", [((1280, 720), None), ((1280, 720), 0.25), ((640, 480), 0.4)])
def test_pip_shows_camera_one_full_and_camera_two_inset_bottom_right_at_pip_scale(tmp_path, size, pip_scale):
    W, H = size
    video, names = room_video(tmp_path, "pip", W, H, pip_scale)
    scale = video.pip_scale
    if pip_scale is None:
        assert scale == 0.3  # the documented default
    comp = Compositor(video, names)
    sizes = comp.sizes()
    canvas = comp.compose([solid(*sizes[0], RED), solid(*sizes[1], GREEN)])
    assert canvas.shape == (H, W, 3) and canvas.dtype == np.uint8
    # the inset: camera 2's colour, pip_scale of the picture in each direction (±2 px border/rounding)
    x0, y0, x1, y1 = bbox(canvas, GREEN)
    assert abs((x1 - x0) - W * scale) <= 4 and abs((y1 - y0) - H * scale) <= 4
    assert all_of(region(canvas, x0, y0, x1, y1), GREEN), "the inset is camera 2's picture, whole"
    # ... in the bottom-right corner, inside the picture, with a small margin
    assert x0 > W / 2 and y0 > H / 2
    assert 0 < W - x1 <= 0.05 * W and 0 < H - y1 <= 0.1 * H
    # the main picture is camera 1 everywhere outside the inset (and its frame line)
    main = canvas.copy()
    main[y0 - 4:y1 + 4, x0 - 4:x1 + 4] = RED
    assert all_of(main.reshape(-1, 3), RED)
    assert tuple(canvas[H // 4, W // 4]) == RED and tuple(canvas[(y0 + y1) // 2, (x0 + x1) // 2]) == GREEN
    assert tuple(canvas[H - 1, W - 1]) == RED and tuple(canvas[0, 0]) == RED


def test_pip_scales_full_size_camera_pictures(tmp_path):
    video, names = room_video(tmp_path, "pip", 1280, 720)
    comp = Compositor(video, names)
    canvas = comp.compose([solid(1920, 1080, BLUE), solid(1280, 720, GREEN)])
    assert canvas.shape == (720, 1280, 3)
    x0, y0, x1, y1 = bbox(canvas, GREEN)
    assert abs((x1 - x0) - 384) <= 4 and abs((y1 - y0) - 216) <= 4
    assert tuple(canvas[100, 100]) == BLUE


def test_pip_missing_inset_camera_shows_its_slate_and_missing_main_camera_its_slate(tmp_path):
    video, names = room_video(tmp_path, "pip", 1280, 720)
    comp = Compositor(video, names)
    (mw, mh), (iw, ih) = comp.sizes()
    ok = comp.compose([solid(mw, mh, RED), solid(iw, ih, GREEN)]).copy()
    x0, y0, x1, y1 = bbox(ok, GREEN)

    no_inset = comp.compose([solid(mw, mh, RED), None]).copy()
    assert no_inset.shape == (720, 1280, 3)
    inset = no_inset[y0:y1, x0:x1]
    assert not (inset == np.array(GREEN, np.uint8)).all(axis=2).any(), "no stale inset"
    assert np.median(inset) == SLATE_GREY
    rx, ry, _rw, _rh = comp.rects[1]  # where the inset's picture starts (the frame line covers its edge)
    assert np.array_equal(inset, slate((iw, ih), names[1])[y0 - ry:y1 - ry, x0 - rx:x1 - rx])
    assert tuple(no_inset[100, 100]) == RED and tuple(no_inset[700, 100]) == RED

    no_main = comp.compose([None, solid(iw, ih, GREEN)]).copy()
    assert no_main.shape == (720, 1280, 3)
    assert all_of(region(no_main, x0, y0, x1, y1), GREEN), "the inset stays while the main camera is out"
    assert not (no_main == np.array(RED, np.uint8)).all(axis=2).any(), "no stale main picture"
    outside = no_main[:y0 - 4]
    assert np.median(outside) == SLATE_GREY
    assert np.array_equal(outside, slate((mw, mh), names[0])[:y0 - 4])

    neither = comp.compose([None, None])
    assert neither.shape == (720, 1280, 3)
    assert not (neither == np.array(RED, np.uint8)).all(axis=2).any()
    assert not (neither == np.array(GREEN, np.uint8)).all(axis=2).any()


def test_a_third_camera_gets_its_own_place_in_both_layouts(tmp_path):
    video, _ = room_video(tmp_path, "side_by_side", 1280, 720)
    comp = Compositor(video, ["a", "b", "c"])
    canvas = comp.compose([solid(w, h, c) for (w, h), c in zip(comp.sizes(), (RED, GREEN, BLUE), strict=True)])
    xs = [bbox(canvas, c) for c in (RED, GREEN, BLUE)]
    assert xs[0][0] == 0 and xs[0][2] <= xs[1][0] and xs[1][2] <= xs[2][0] and xs[2][2] >= 1276
    video, _ = room_video(tmp_path, "pip", 1280, 720)
    comp = Compositor(video, ["a", "b", "c"])
    canvas = comp.compose([solid(w, h, c) for (w, h), c in zip(comp.sizes(), (RED, GREEN, BLUE), strict=True)])
    g, b = bbox(canvas, GREEN), bbox(canvas, BLUE)
    assert g[0] == b[0] and b[3] <= g[1], "insets are stacked up the right-hand side, without overlap"
    assert tuple(canvas[100, 100]) == RED
