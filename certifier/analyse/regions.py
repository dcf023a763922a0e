"""Regions U of parameter space: a ball or a box around theta0.

Random points of a region come as one [count, m] tensor (sample) or in chunks of at most `rows`
points (sample_chunks, for the sampled engine's random points: 512 points of m = 278 000 floats
and their temporaries were 8 GB). The chunks are the same points, and leave the generator in the
same state, as one draw: torch fills a normal or uniform tensor from one stream, so draws of rows
whose sizes are multiples of 16 floats continue it exactly (chunk_rows aligns them;
tests/test_workers.py checks it). The per-point scales (a ball's radii) are drawn first, so the
chunks follow them in one pass (until 2026-12-07 they came after the directions, which a first
pass had to draw and drop: twice the normals, 0.35 s of a 6 s run at m = 33 792).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def chunk_rows(m: int, limit: int, multiple: int = 1) -> int:
    """Rows per chunk of points of m floats: at most `limit` (at least one aligned chunk), a
    multiple of `multiple` and of 16 / gcd(m, 16) (so chunked draws are one draw's)."""
    align = 16 // math.gcd(m, 16)
    step = align * multiple // math.gcd(align, multiple)
    return max(step, limit // step * step)


def _sizes(count: int, rows: int) -> list[int]:
    return [min(rows, count - i) for i in range(0, count, rows)]


def _chunks(region, gen: torch.Generator, count: int, rows: int, draw, scales, finish):
    """The points of one draw of `count`, `rows` at a time (module docstring). scales(gen, count):
    the per-point part, drawn first; draw(gen, c): the per-coordinate part of c points;
    finish(part, scale): the points."""
    if count <= rows:
        yield region.sample(gen, count)
        return
    scale = scales(gen, count)
    at = 0
    for c in _sizes(count, rows):
        yield finish(draw(gen, c), scale[at:at + c])
        at += c


def _directions(gen: torch.Generator, count: int, m: int, like: torch.Tensor) -> torch.Tensor:
    """[count, m] standard normals, to be normalised into uniform directions. Drawn in float32
    (torch's float64 randn costs 3 times as much: 1.6 s of a 13 s run at m = 135 168) and widened:
    a direction's distribution is uniform to float32's rounding, all a random point of the region
    needs (it is an evaluation point, not part of any bound)."""
    return torch.randn(count, m, generator=gen, dtype=torch.float32).to(device=like.device, dtype=like.dtype)


@dataclass
class Ball:
    center: torch.Tensor
    radius: float

    kind = "ball"

    def distance(self, theta: torch.Tensor) -> float:
        return float((theta - self.center).norm())

    def contains(self, theta: torch.Tensor) -> bool:
        return self.distance(theta) <= self.radius * (1 + 1e-12)

    def project(self, theta: torch.Tensor) -> torch.Tensor:
        return self.project_measured(theta)[0]

    def measure(self, theta: torch.Tensor) -> tuple[float, bool]:
        """(distance(theta), contains(theta)) from one pass over theta."""
        d = self.distance(theta)
        return d, d <= self.radius * (1 + 1e-12)

    def project_measured(self, theta: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(project(theta), its distance): the distance of a point inside is the norm that
        decided it was inside (the same float as distance()); a projected point's is measured."""
        d = theta - self.center
        norm = float(d.norm())
        if norm <= self.radius:
            return theta, norm
        p = d.mul_(self.radius / norm).add_(self.center)   # center + d (r / |d|), in d's buffer
        return p, self.distance(p)

    @property
    def inner_radius(self) -> float:
        """Radius of the largest ball around the center inside the region."""
        return self.radius

    def sample(self, gen: torch.Generator, count: int) -> torch.Tensor:
        """Points at distances drawn uniformly in [0, r] along uniform directions. Uniform in
        volume would put every point at the boundary in high dimension."""
        m = self.center.numel()
        radii = torch.rand(count, 1, generator=gen, dtype=self.center.dtype).to(self.center.device)
        dirs = _directions(gen, count, m, self.center)
        dirs /= dirs.norm(dim=1, keepdim=True)
        return dirs.mul_(radii).mul_(self.radius).add_(self.center)    # in place: no [count, m] temporaries

    def sample_chunks(self, gen: torch.Generator, count: int, rows: int):
        """sample(gen, count) in chunks of at most `rows` points (aligned by chunk_rows)."""
        m, dtype, device = self.center.numel(), self.center.dtype, self.center.device

        def finish(dirs, radii):
            dirs /= dirs.norm(dim=1, keepdim=True)
            return dirs.mul_(radii).mul_(self.radius).add_(self.center)

        yield from _chunks(self, gen, count, rows,
                           lambda g, c: _directions(g, c, m, self.center),
                           lambda g, c: torch.rand(c, 1, generator=g, dtype=dtype).to(device), finish)

    def with_radius(self, radius: float) -> "Ball":
        return Ball(self.center, radius)


@dataclass
class Box:
    center: torch.Tensor
    halfwidth: float

    kind = "box"

    def distance(self, theta: torch.Tensor) -> float:
        return float((theta - self.center).norm())

    def contains(self, theta: torch.Tensor) -> bool:
        return float((theta - self.center).abs().max()) <= self.halfwidth * (1 + 1e-12)

    def project(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.clamp(theta, self.center - self.halfwidth, self.center + self.halfwidth)

    def measure(self, theta: torch.Tensor) -> tuple[float, bool]:
        """(distance(theta), contains(theta)) from one difference."""
        d = theta - self.center
        return float(d.norm()), float(d.abs_().max()) <= self.halfwidth * (1 + 1e-12)

    def project_measured(self, theta: torch.Tensor) -> tuple[torch.Tensor, float]:
        p = self.project(theta)
        return p, self.distance(p)

    @property
    def inner_radius(self) -> float:
        return self.halfwidth

    def sample(self, gen: torch.Generator, count: int) -> torch.Tensor:
        m = self.center.numel()
        scale = torch.rand(count, 1, generator=gen, dtype=self.center.dtype)
        u = 2 * torch.rand(count, m, generator=gen, dtype=self.center.dtype) - 1
        return self.center + (u * scale * self.halfwidth).to(self.center.device)

    def sample_chunks(self, gen: torch.Generator, count: int, rows: int):
        """sample(gen, count) in chunks of at most `rows` points (aligned by chunk_rows)."""
        m, dtype = self.center.numel(), self.center.dtype

        yield from _chunks(self, gen, count, rows,
                           lambda g, c: torch.rand(c, m, generator=g, dtype=dtype),
                           lambda g, c: torch.rand(c, 1, generator=g, dtype=dtype),
                           lambda r, s: self.center + ((2 * r - 1) * s * self.halfwidth).to(self.center.device))
