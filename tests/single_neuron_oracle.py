"""An independent oracle for the single-neuron population problem (Xu & Du): the closed form of
L and its gradient in plain numpy (arccos, no guards beyond clipping), gradient flow by
scipy's solve_ivp, Monte Carlo estimates, and the toy cases' closed forms. Nothing here imports
certifier.

Convention (certify's): L(w) = E_{x ~ N(0, I_d)} (sum_i a_i relu(w_i.x) - sum_j b_j relu(v_j.x))^2,
no factor 1/2. The papers' L_half = L / 2; the flows are related by L(t) = 2 L_half(2 t).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.integrate import solve_ivp


def k(u, w) -> float:
    """E[relu(u.x) relu(w.x)] = |u||w| (sin t + (pi - t) cos t) / (2 pi)."""
    a, b = np.linalg.norm(u), np.linalg.norm(w)
    if a == 0 or b == 0:
        return 0.0
    c = np.clip(u @ w / (a * b), -1.0, 1.0)
    t = np.arccos(c)
    return a * b * (np.sin(t) + (np.pi - t) * c) / (2 * np.pi)


def dk(u, w):
    """d k(u, w) / d u = [(pi - t) w + |w| sin t u/|u|] / (2 pi) (u != 0)."""
    a, b = np.linalg.norm(u), np.linalg.norm(w)
    if b == 0:
        return np.zeros_like(u)
    c = np.clip(u @ w / (a * b), -1.0, 1.0)
    t = np.arccos(c)
    return ((np.pi - t) * w + b * np.sin(t) * u / a) / (2 * np.pi)


def loss(W, v, a=None, V=None, b=None) -> float:
    """L for students W [n, d] (second layer a, default ones) and the teacher v [d] (or V, b)."""
    P, c = _stack(W, v, a, V, b)
    total = 0.0
    for i in range(len(P)):
        for j in range(len(P)):
            total += c[i] * c[j] * (P[i] @ P[i] / 2 if i == j else k(P[i], P[j]))
    return float(total)


def grad(W, v, a=None, V=None, b=None):
    """dL/dW [n, d] (the students' first layer)."""
    P, c = _stack(W, v, a, V, b)
    n = len(W)
    G = np.zeros_like(np.asarray(W, dtype=float))
    for i in range(n):
        G[i] = c[i] * c[i] * P[i]
        for j in range(len(P)):
            if j != i:
                G[i] += 2 * c[i] * c[j] * dk(P[i], P[j])
    return G


def _stack(W, v, a, V, b):
    W = np.asarray(W, dtype=float)
    a = np.ones(len(W)) if a is None else np.asarray(a, dtype=float)
    if V is None:
        V, b = np.asarray(v, dtype=float)[None, :], np.ones(1)
    return np.vstack([W, V]), np.concatenate([a, -np.asarray(b, dtype=float)])


def monte_carlo(W, v, samples: int, seed: int, chunk: int = 250_000):
    """(L, dL/dW) and their standard errors from `samples` draws of x ~ N(0, I) (relu'(0) = 0; the
    event has probability 0)."""
    W = np.asarray(W, dtype=float)
    rng = np.random.default_rng(seed)
    d = W.shape[1]
    s1 = s2 = 0.0
    g1 = np.zeros_like(W)
    g2 = np.zeros_like(W)
    done = 0
    while done < samples:
        m = min(chunk, samples - done)
        x = rng.standard_normal((m, d))
        pre = x @ W.T
        r = np.maximum(pre, 0).sum(axis=1) - np.maximum(x @ v, 0)
        s1 += float((r * r).sum())
        s2 += float((r ** 4).sum())
        per = 2 * r[:, None, None] * (pre > 0)[:, :, None] * x[:, None, :]   # [m, n, d]
        g1 += per.sum(axis=0)
        g2 += (per * per).sum(axis=0)
        done += m
    L = s1 / samples
    L_se = math.sqrt(max(s2 / samples - L * L, 0.0) / samples)
    G = g1 / samples
    G_se = np.sqrt(np.maximum(g2 / samples - G * G, 0.0) / samples)
    return L, L_se, G, G_se


def flow(W0, v, times, rtol: float = 1e-11, atol: float = 1e-14):
    """Gradient flow dW/dt = -grad L by solve_ivp (LSODA); the students at each time."""
    W0 = np.asarray(W0, dtype=float)
    sol = solve_ivp(lambda t, y: -grad(y.reshape(W0.shape), v).ravel(), (0.0, float(times[-1])),
                    W0.ravel(), t_eval=times, rtol=rtol, atol=atol, method="LSODA")
    assert sol.success, sol.message
    return [y.reshape(W0.shape) for y in sol.y.T]


def parallel_loss(c0, v, t):
    """Toy case 1: students w_i = c_i v (c_i > 0) stay parallel to v; with S = sum c_i,
    dS/dt = -n (S - 1), so L(t) = (S0 - 1)^2 |v|^2 / 2 * exp(-2 n t) (certify's convention;
    the papers' L_half = (S - 1)^2 |v|^2 / 4 decays like exp(-n t))."""
    c0 = np.asarray(c0, dtype=float)
    n = len(c0)
    return (c0.sum() - 1) ** 2 * (v @ v) / 2 * np.exp(-2 * n * np.asarray(t))


SYMMETRIC_CONSTANT = math.pi ** 2 / 24
"""Toy case 2: two students reflection-symmetric about v in a plane, balanced: L ~ pi^2 / (24 t^3)
in certify's convention (pi^2 / (6 t^3) in the papers' 1/2 convention, as L(t) = 2 L_half(2 t))."""
