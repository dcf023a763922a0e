"""Regions U of parameter space: a ball or a box around theta0."""
from __future__ import annotations

from dataclasses import dataclass

import torch


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
        d = theta - self.center
        norm = float(d.norm())
        return theta if norm <= self.radius else self.center + d * (self.radius / norm)

    @property
    def inner_radius(self) -> float:
        """Radius of the largest ball around the center inside the region."""
        return self.radius

    def sample(self, gen: torch.Generator, count: int) -> torch.Tensor:
        """Points at distances drawn uniformly in [0, r] along uniform directions. Uniform in
        volume would put every point at the boundary in high dimension."""
        m = self.center.numel()
        dirs = torch.randn(count, m, generator=gen, dtype=self.center.dtype).to(self.center.device)
        dirs /= dirs.norm(dim=1, keepdim=True)
        radii = torch.rand(count, 1, generator=gen, dtype=self.center.dtype).to(self.center.device)
        return self.center + dirs * radii * self.radius

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

    @property
    def inner_radius(self) -> float:
        return self.halfwidth

    def sample(self, gen: torch.Generator, count: int) -> torch.Tensor:
        m = self.center.numel()
        u = 2 * torch.rand(count, m, generator=gen, dtype=self.center.dtype) - 1
        scale = torch.rand(count, 1, generator=gen, dtype=self.center.dtype)
        return self.center + (u * scale * self.halfwidth).to(self.center.device)
