"""V4L2 cameras without a camera: no /dev/video and no v4l2loopback can be had on the test
machine, so the camera-specific code is kept thin and what can be checked is checked here:
the kernel ABI the ioctls use, format parsing and negotiation against captures in
tests/data/v4l2/, the mapping of driver timestamps, and the plain messages of open()."""
from __future__ import annotations

import ctypes
from pathlib import Path
from types import SimpleNamespace

import pytest

from capture import v4l2
from capture.base import SourceUnavailable
from capture.v4l2 import Mode, V4L2Source, driver_stamp_to_monotonic, negotiate, parse_v4l2_ctl

DATA = Path(__file__).parent / "data" / "v4l2"
C920 = parse_v4l2_ctl((DATA / "c920-list-formats-ext.txt").read_text(), "/dev/video0")
ELP = parse_v4l2_ctl((DATA / "elp-usbfhd01m-list-formats-ext.txt").read_text(), "/dev/video2")
ALL_RATES = (30.0, 24.0, 20.0, 15.0, 10.0, 7.5, 5.0)


def test_ioctl_numbers_and_structs_match_the_kernel_abi() -> None:
    # values of linux/videodev2.h on x86-64/arm64 (the size of each struct is encoded in them)
    assert v4l2.VIDIOC_QUERYCAP == 0x80685600
    assert v4l2.VIDIOC_ENUM_FMT == 0xC0405602
    assert v4l2.VIDIOC_ENUM_FRAMESIZES == 0xC02C564A
    assert v4l2.VIDIOC_ENUM_FRAMEINTERVALS == 0xC034564B
    assert ctypes.sizeof(v4l2.v4l2_capability) == 104 and ctypes.sizeof(v4l2.v4l2_fmtdesc) == 64
    assert v4l2.v4l2_frmsizeenum.u.offset == 12 and v4l2.v4l2_frmivalenum.u.offset == 20
    assert v4l2.fourcc_code("MJPG") == 0x47504A4D and v4l2.fourcc_str(0x56595559) == "YUYV"


def test_parse_both_v4l2_ctl_styles() -> None:
    assert [f.fourcc for f in C920.formats] == ["YUYV", "MJPG"]
    yuyv, mjpg = C920.format("YUYV"), C920.format("MJPG")
    assert len(yuyv.sizes) == 19 and len(mjpg.sizes) == 17
    assert mjpg.description == "Motion-JPEG, compressed"
    assert mjpg.size(1920, 1080).fps == ALL_RATES
    assert yuyv.size(1280, 720).fps == (10.0, 7.5, 5.0) and yuyv.size(2304, 1536).fps == (2.0,)
    assert mjpg.size(2304, 1536) is None
    # the older Index/Pixel Format/Name layout
    assert [f.fourcc for f in ELP.formats] == ["MJPG", "YUYV"]
    assert ELP.format("MJPG").description == "Motion-JPEG"
    assert ELP.format("MJPG").size(1280, 720).fps == (60.0, 30.0)
    assert ELP.format("MJPG").size(640, 480).fps == (120.0, 60.0, 30.0)
    # a size range instead of a list
    ranged = parse_v4l2_ctl("\t[0]: 'YUYV' (YUYV 4:2:2)\n\t\tSize: Stepwise 32x32 - 1920x1080 with step 8/8\n"
                            "\t\t\tInterval: Discrete 0.040s (25.000 fps)\n")
    fmt = ranged.format("YUYV")
    assert fmt.stepwise == (32, 1920, 8, 32, 1080, 8)
    assert fmt.size(1280, 720).offers(25) and fmt.size(1281, 720) is None


def test_negotiation_prefers_mjpg_and_explains_refusals() -> None:
    assert negotiate(C920, 1920, 1080, 30) == Mode("MJPG", 1920, 1080, 30.0)
    assert negotiate(C920, 640, 480, 30) == Mode("MJPG", 640, 480, 30.0)
    assert negotiate(C920, 640, 480, 30, "YUYV") == Mode("YUYV", 640, 480, 30.0)
    assert negotiate(C920, 1280, 720, 29.97) == Mode("MJPG", 1280, 720, 30.0)   # NTSC-ish asks match
    assert negotiate(ELP, 1280, 720, 60) == Mode("MJPG", 1280, 720, 60.0)
    label = "camera cabin (HD Pro Webcam C920)"
    with pytest.raises(SourceUnavailable) as err:            # the C920 has no 25 fps
        negotiate(C920, 1920, 1080, 25, label=label)
    assert str(err.value) == (f"{label} offers 1920x1080 MJPG at 30/24/20/15/10/7.5/5 fps; YUYV at 5 fps, "
                              "not 25 fps: set fps to one of those (or choose another size)")
    with pytest.raises(SourceUnavailable, match=r"offers 1920x1080 YUYV at 5 fps, not 30 fps"):
        negotiate(C920, 1920, 1080, 30, "YUYV", label=label)
    with pytest.raises(SourceUnavailable) as err:
        negotiate(C920, 3840, 2160, 30, label=label)
    msg = str(err.value)
    assert msg.startswith(f"{label} cannot capture 3840x2160; it offers: YUYV 2304x1536@2, 2304x1296@2, 1920x1080@5")
    assert "MJPG 1920x1080@30/24/20/15/10/7.5/5, 1600x896@30/24/20/15/10/7.5/5" in msg
    grey = parse_v4l2_ctl("\t[0]: 'GREY' (8-bit Greyscale)\n\t\tSize: Discrete 640x480\n"
                          "\t\t\tInterval: Discrete 0.033s (30.000 fps)\n")
    with pytest.raises(SourceUnavailable, match="offers GREY; examrec reads MJPG or YUYV"):
        negotiate(grey, 640, 480, 30, label=label)
    only_mjpg = parse_v4l2_ctl((DATA / "elp-usbfhd01m-list-formats-ext.txt").read_text().split("Index       : 1")[0])
    with pytest.raises(SourceUnavailable, match="does not offer pixel_format YUYV; it offers MJPG"):
        negotiate(only_mjpg, 640, 480, 30, "YUYV", label=label)


def test_driver_timestamps_land_on_the_monotonic_clock() -> None:
    mono, wall = 5_000_000_000_000, 1_790_000_000_000_000_000
    # UVC: CLOCK_MONOTONIC at start of exposure, 33 ms before we got the buffer
    assert driver_stamp_to_monotonic((mono - 33_000_000) / 1e6, mono, wall) == (mono - 33_000_000, "monotonic")
    # a driver stamping with the wall clock
    ns, kind = driver_stamp_to_monotonic((wall - 20_000_000) / 1e6, mono, wall)
    assert kind == "wall" and abs(ns - (mono - 20_000_000)) < 1000
    # no stamp at all (0), or nonsense from the future: the time it reached us
    assert driver_stamp_to_monotonic(0.0, mono, wall) == (mono, "arrival")
    assert driver_stamp_to_monotonic((mono + 10**9) / 1e6, mono, wall) == (mono, "arrival")


def spec(source: str, **kw):
    return SimpleNamespace(name="cabin", source=source, width=1280, height=720, fps=30.0, pixel_format=None,
                           credentials=None, draw_mouse=False, **kw)


def test_open_names_a_missing_camera_plainly() -> None:
    path = "/dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920_A1B2C3D4-video-index0"
    with pytest.raises(SourceUnavailable) as err:
        V4L2Source(spec(f"v4l2:{path}")).open()
    assert str(err.value) == (f"camera cabin: {path} not found: is it plugged in? "
                              "`examrec devices` lists what is connected")


def test_open_refuses_a_node_that_is_not_a_camera() -> None:
    # /dev/null answers VIDIOC_QUERYCAP with ENOTTY: the real ioctl path, failing the real way
    with pytest.raises(SourceUnavailable, match=r"camera cabin: /dev/null is not a V4L2 camera"):
        V4L2Source(spec("v4l2:/dev/null")).open()
    src = V4L2Source(spec("v4l2:/dev/null"))
    src.close()
    src.close()                                              # close before open, twice: harmless
