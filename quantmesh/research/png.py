"""The equity curve (total PnL of each symbol over time) as a PNG, with no plotting
library: lines drawn into an RGB raster and encoded with ``zlib`` (PNG's own deflate)."""

from __future__ import annotations

import struct
import zlib
from itertools import pairwise

from quantmesh.research.charts import COLORS, Box, scale
from quantmesh.research.report import Backtest

__all__ = ["render_png"]

WIDTH, HEIGHT, MARGIN = 900, 360, 20


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


class _Raster:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(b"\xff" * (width * height * 3))

    def dot(self, x: int, y: int, rgb: tuple[int, int, int]) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            at = (y * self.width + x) * 3
            self.pixels[at : at + 3] = bytes(rgb)

    def line(self, x0: int, y0: int, x1: int, y1: int, rgb: tuple[int, int, int]) -> None:
        """Bresenham, two pixels thick."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.dot(x0, y0, rgb)
            self.dot(x0, y0 + 1, rgb)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def encode(self) -> bytes:
        rows = b"".join(
            b"\x00" + bytes(self.pixels[y * self.width * 3 : (y + 1) * self.width * 3])
            for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b"")
        )


def render_png(backtest: Backtest) -> bytes:
    """The equity curves of every symbol on one chart; a grey line at zero PnL."""
    raster = _Raster(WIDTH, HEIGHT)
    xs = [x for r in backtest.records for x in r.curve.ts]
    ys = [y for r in backtest.records for y in r.curve.equity]
    box = Box.around(xs, ys, zero=True)
    inner_w, inner_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    ax, bx, ay, by = scale(box, inner_w, inner_h)
    zero = round(by) + MARGIN
    raster.line(MARGIN, zero, WIDTH - MARGIN, zero, (190, 190, 190))
    for n, record in enumerate(backtest.records):
        rgb = _rgb(COLORS[n % len(COLORS)])
        points = [
            (round(ax * x + bx) + MARGIN, round(ay * y + by) + MARGIN)
            for x, y in zip(record.curve.ts, record.curve.equity, strict=True)
        ]
        for (x0, y0), (x1, y1) in pairwise(points):
            raster.line(x0, y0, x1, y1, rgb)
    return raster.encode()
