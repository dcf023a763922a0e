"""Independent computations the tests compare certify's numbers with.

Nothing here imports certifier: the data are rebuilt with numpy from the specs' seeds, the
models and their gradients are written out by hand, the flows are solved in closed form
(linear models) or by scipy's solve_ivp (the two-layer network)."""
from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp


def rng(seed):
    return np.random.default_rng(seed)


# --- linear least squares, the data of specs/linear_*.rq ---------------------------------
def linear_data(noise: bool):
    x = rng(0).standard_normal((32, 4))
    v = rng(1).standard_normal(4)
    y = x @ v + (0.5 * rng(2).standard_normal(32) if noise else 0.0)
    return x, y


def linear_facts(x, y):
    """Sigma = X^T X / n, its eigen-decomposition, the minimiser w* and the minimum L*."""
    n = x.shape[0]
    sigma = x.T @ x / n
    lam, vecs = np.linalg.eigh(sigma)
    w_star = np.linalg.solve(sigma, x.T @ y / n)
    l_star = float(np.mean((x @ w_star - y) ** 2))
    return sigma, lam, vecs, w_star, l_star


def linear_flow_loss(x, y, w0, ts):
    """Exact gradient-flow loss of L(w) = mean (w.x - y)^2: delta(t) = exp(-2 Sigma t) delta0,
    L(t) = L* + delta(t)^T Sigma delta(t)."""
    _, lam, vecs, w_star, l_star = linear_facts(x, y)
    c = vecs.T @ (w0 - w_star)
    return np.array([l_star + float(np.sum(lam * c**2 * np.exp(-4 * lam * t))) for t in ts])


# --- two-layer tanh network, the data of specs/two_layer_tanh.rq ------------------------
def two_layer_problem():
    x = rng(0).standard_normal((16, 16))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1]
    W = rng(1).standard_normal((512, 16)) / np.sqrt(16)
    a = rng(2).standard_normal(512) / np.sqrt(512)
    return x, y, W, a


def two_layer_loss_grad(theta, x, y, width=512):
    d = x.shape[1]
    W = theta[: width * d].reshape(width, d)
    a = theta[width * d:]
    h = np.tanh(x @ W.T)            # [n, width]
    r = h @ a - y                   # residual
    n = x.shape[0]
    loss = float(np.mean(r**2))
    ga = 2.0 / n * h.T @ r
    gW = 2.0 / n * ((r[:, None] * (1 - h**2)) * a[None, :]).T @ x
    return loss, np.concatenate([gW.ravel(), ga])


def two_layer_flow_loss(ts):
    """Gradient flow of the two-layer network by solve_ivp (RK45, tight tolerances)."""
    x, y, W, a = two_layer_problem()
    theta0 = np.concatenate([W.ravel(), a])
    sol = solve_ivp(lambda t, th: -two_layer_loss_grad(th, x, y)[1], (0.0, float(max(ts))), theta0,
                    t_eval=ts, rtol=1e-10, atol=1e-12, method="RK45")
    assert sol.success, sol.message
    return np.array([two_layer_loss_grad(sol.y[:, i], x, y)[0] for i in range(len(ts))])


# --- linear softmax regression, the data of specs/softmax_separable.rq ---------------------
def softmax_data():
    Y = np.repeat(np.eye(3), 4, axis=0)
    centers = np.array([[2, 0], [-1, 1.7], [-1, -1.7]])
    x = Y @ centers + 0.3 * rng(0).standard_normal((12, 2))
    return x, Y


def softmax_loss_grad(theta, x, Y):
    W = theta.reshape(3, 2)
    z = x @ W.T
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-np.mean((Y * logp).sum(axis=1)))
    grad = (np.exp(logp) - Y).T @ x / x.shape[0]
    return loss, grad.ravel()


# --- logistic regression, the data of specs/logistic_nonseparable.rq -------------------------
def logistic_data():
    x = rng(0).standard_normal((64, 2))
    s = x[:, 0] + 0.5 * x[:, 1] + 0.7 * rng(1).standard_normal(64)
    return x, s / np.abs(s)


def logistic_loss_grad(w, x, y):
    m = y * (x @ w)
    loss = float(np.mean(np.logaddexp(0.0, -m)))
    sig = 0.5 * (1 - np.tanh(m / 2))          # sigmoid(-m)
    return loss, -(x * (y * sig)[:, None]).mean(axis=0)


def flow_loss(loss_grad, theta0, ts):
    """Gradient flow d theta/dt = -grad L by solve_ivp (RK45, tight tolerances)."""
    sol = solve_ivp(lambda t, th: -loss_grad(th)[1], (0.0, float(max(ts))), theta0, t_eval=ts,
                    rtol=1e-10, atol=1e-12)
    assert sol.success, sol.message
    return np.array([loss_grad(sol.y[:, i])[0] for i in range(len(ts))])


def descent_loss(loss_grad, theta0, eta, steps):
    """Plain gradient descent; returns L at every step."""
    theta, out = np.array(theta0, dtype=float), []
    for _ in range(steps + 1):
        L, g = loss_grad(theta)
        out.append(L)
        theta = theta - eta * g
    return np.array(out)


# --- two-layer tanh network with biases, the data of specs/two_layer_floor.rq -----------------
def two_layer_floor_problem():
    x = rng(0).standard_normal((64, 2))
    y = np.sin(2 * x[:, 0]) * np.cos(x[:, 1])
    W = rng(1).standard_normal((8, 2))
    a = rng(2).standard_normal(8) / np.sqrt(8)
    theta0 = np.concatenate([W.ravel(), np.zeros(8), a, [0.0]])   # W, b, a, c in declaration order
    return x, y, theta0


def two_layer_floor_loss_grad(theta, x, y):
    W, b, a, c = theta[:16].reshape(8, 2), theta[16:24], theta[24:32], theta[32]
    h = np.tanh(x @ W.T + b)
    r = h @ a + c - y
    n = len(y)
    s = (r[:, None] * (1 - h**2)) * a[None, :]      # d loss / d pre-activation, times n/2
    grad = np.concatenate([(2 / n * s.T @ x).ravel(), 2 / n * s.sum(axis=0), 2 / n * h.T @ r, [2 / n * r.sum()]])
    return float(np.mean(r**2)), grad


# --- f(x) = a . tanh(W x + b) and a . relu(W2 relu(W1 x)), least squares, by hand in numpy ----
def tanh_loss_grad(theta, x, y, width, bias=True):
    """L = mean((a . tanh(W x + b) - y)^2) and its gradient; theta = [W (width x d), b, a] (no b
    when bias is False), the order of the spec's params."""
    d = x.shape[1]
    W = theta[:width * d].reshape(width, d)
    rest = theta[width * d:]
    b, a = (rest[:width], rest[width:]) if bias else (np.zeros(width), rest)
    h = np.tanh(x @ W.T + b)
    r = h @ a - y
    n = len(y)
    g_out = 2 * r / n
    ga = h.T @ g_out
    gz = np.outer(g_out, a) * (1 - h * h)
    parts = [(gz.T @ x).ravel()] + ([gz.sum(axis=0)] if bias else []) + [ga]
    return float(np.mean(r * r)), np.concatenate(parts)


def relu_mlp_loss_grad(theta, x, y, widths):
    """L = mean((a . relu(W2 relu(W1 x)) - y)^2) and its gradient; theta = [W1, W2, a]."""
    h1, h2 = widths
    d = x.shape[1]
    W1 = theta[:h1 * d].reshape(h1, d)
    W2 = theta[h1 * d:h1 * d + h2 * h1].reshape(h2, h1)
    a = theta[h1 * d + h2 * h1:]
    z1 = x @ W1.T
    u1 = np.maximum(z1, 0)
    z2 = u1 @ W2.T
    u2 = np.maximum(z2, 0)
    r = u2 @ a - y
    g = 2 * r / len(y)
    ga = u2.T @ g
    gz2 = np.outer(g, a) * (z2 > 0)
    gW2 = gz2.T @ u1
    gz1 = (gz2 @ W2) * (z1 > 0)
    gW1 = gz1.T @ x
    return float(np.mean(r * r)), np.concatenate([gW1.ravel(), gW2.ravel(), ga])
