"""A virtual X display (Xvfb) for a visible browser in tests, and a "person" who clicks on it.

The click goes through the XTEST extension (libXtst, installed with Xvfb/Chromium), i.e. the
same path as a real mouse: the page under the pointer gets a real click, nothing is scripted
inside the browser.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import time


def xvfb_available() -> bool:
    return shutil.which("Xvfb") is not None


class Xvfb:
    """``with Xvfb() as display:`` -> ":N", a 1280x1024 screen that lives for the block."""

    def __init__(self, width: int = 1280, height: int = 1024) -> None:
        self.size = (width, height)
        self.proc: subprocess.Popen[bytes] | None = None
        self.display = ""

    def __enter__(self) -> str:
        read, write = os.pipe()
        # -displayfd: Xvfb picks a free display number and writes it when it is ready to serve
        self.proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", f"{self.size[0]}x{self.size[1]}x24", "-nolisten", "tcp"],
            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            number = pipe.readline().strip()
        if not number:
            self.__exit__()
            raise RuntimeError("Xvfb did not start")
        self.display = f":{number.decode()}"
        return self.display

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def click(display: str, x: int | None = None, y: int | None = None) -> None:
    """Move the pointer to (x, y) (default: the screen's centre) and click the left button."""
    x11 = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
    xtst = ctypes.CDLL(ctypes.util.find_library("Xtst") or "libXtst.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    for name in ("XDisplayWidth", "XDisplayHeight"):
        getattr(x11, name).argtypes = [ctypes.c_void_p, ctypes.c_int]
    x11.XFlush.argtypes = x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    xtst.XTestFakeMotionEvent.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_ulong]
    xtst.XTestFakeButtonEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
    dpy = x11.XOpenDisplay(display.encode())
    if not dpy:
        raise RuntimeError(f"cannot open X display {display}")
    try:
        x = x11.XDisplayWidth(dpy, 0) // 2 if x is None else x
        y = x11.XDisplayHeight(dpy, 0) // 2 if y is None else y
        xtst.XTestFakeMotionEvent(dpy, -1, x, y, 0)
        x11.XFlush(dpy)
        time.sleep(0.05)  # a person's press comes after the pointer arrived
        xtst.XTestFakeButtonEvent(dpy, 1, 1, 0)
        xtst.XTestFakeButtonEvent(dpy, 1, 0, 0)
        x11.XFlush(dpy)
    finally:
        x11.XCloseDisplay(dpy)
