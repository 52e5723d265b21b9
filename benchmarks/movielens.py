"""MovieLens-shaped data: users × movies, power-law activity, Zipf-like popularity (issue 27).

Each user rates at least 20 movies (as in the MovieLens releases); the number of ratings per user
follows a Pareto tail scaled so the total is the requested row count, capped at a quarter of the movies.
Movies are drawn with probability ∝ 1/(rank + 10)^1.05 (a few blockbusters, a long tail), without
repeats within a user. The responses:

* ``rating = 3.5 + 0.3 x + u_user + v_movie + e`` with SD(u) = 0.8, SD(v) = 0.5, SD(e) = 0.9;
* ``liked``: Bernoulli with logit P = −0.3 + 0.4 x + u'_user + v'_movie, SD(u') = 1.0, SD(v') = 0.7.

``SIZES`` are the issue's three shapes: 2e6 rows (2e4 × 6e3), ml-25m's (2.5e7, 1.6e5 × 6e4) and
ml-32m's (3.2e7, 2.0e5 × 8.4e4). ``TRUTH`` holds the simulation's parameters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SIZES = {
    "2e6": (2_000_000, 20_000, 6_000),
    "ml25m": (25_000_000, 160_000, 60_000),
    "ml32m": (32_000_000, 200_000, 84_000),
}
TRUTH = {
    "rating": {"(Intercept)": 3.5, "x": 0.3, "sd_user": 0.8, "sd_movie": 0.5, "sigma": 0.9},
    "liked": {"(Intercept)": -0.3, "x": 0.4, "sd_user": 1.0, "sd_movie": 0.7},
}
MIN_RATINGS = 20


def user_counts(rng: np.random.Generator, n: int, users: int, movies: int, alpha: float = 1.2) -> np.ndarray:
    """Ratings per user: 20 + a Pareto(α) share of the remaining rows, capped at movies/4."""
    cap = movies // 4
    raw = rng.pareto(alpha, users)  # Lomax: 0 for the least active
    extra = n - MIN_RATINGS * users
    counts = np.minimum(MIN_RATINGS + np.floor(extra * raw / raw.sum()), cap).astype(np.int64)
    short = n - counts.sum()  # what the cap cut off goes to users below it, in proportion
    while short > 0:
        room = cap - counts
        add = np.minimum(np.floor(short * room / room.sum()).astype(np.int64) + 1, room)
        add[np.cumsum(add) > short] = 0
        if not add.any():
            break
        counts += add
        short = n - counts.sum()
    return counts


def make(size: str = "2e6", seed: int = 2027) -> pd.DataFrame:
    """The rows of one MovieLens-shaped data set (``user``, ``movie`` as int32 codes)."""
    n, users, movies = SIZES[size] if size in SIZES else size
    rng = np.random.default_rng(seed)
    counts = user_counts(rng, n, users, movies)
    pop = 1.0 / (np.arange(movies) + 10.0) ** 1.05
    pop /= pop.sum()
    # heavy users (more than 1/40 of the movies): their distinct movies by Efraimidis and
    # Spirakis' weighted sampling without replacement (the counts[u] smallest −log U / p)
    heavy = np.flatnonzero(counts > max(movies // 40, 50))
    parts = []
    for u in heavy:
        keys = -np.log(rng.random(movies)) / pop
        parts.append(u * np.int64(movies) + np.argpartition(keys, counts[u])[: counts[u]])
    have = np.concatenate(parts) if parts else np.empty(0, np.int64)
    # the others: draw with a margin, drop repeats within a user, draw again for those still short
    short = counts.copy()
    short[heavy] = 0
    light = counts.copy()
    light[heavy] = 0
    kept = np.empty(0, np.int64)
    for _ in range(30):
        ask = np.where(short > 0, np.ceil(short * 1.3).astype(np.int64) + 5, 0)
        uu = np.repeat(np.arange(users, dtype=np.int64), ask)
        key = np.unique(np.concatenate([kept, uu * movies + rng.choice(movies, size=len(uu), p=pop)]))
        key = key[np.lexsort((rng.random(len(key)), key // movies))]  # users in order, movies shuffled
        uu = key // movies
        start = np.r_[0, np.cumsum(np.bincount(uu, minlength=users))[:-1]]
        rank = np.arange(len(key)) - start[uu]
        kept = key[rank < light[uu]]  # counts[u] distinct movies of each user, at random
        short = light - np.bincount(kept // movies, minlength=users)
        if not short.any():
            break
    have = np.concatenate([have, kept])
    user, movie = (have // movies).astype(np.int32), (have % movies).astype(np.int32)
    perm = rng.permutation(len(user))  # rows in no particular order, as a ratings file
    user, movie = user[perm], movie[perm]
    m = len(user)
    x = rng.standard_normal(m)
    t = TRUTH["rating"]
    u, v = rng.normal(0, t["sd_user"], users), rng.normal(0, t["sd_movie"], movies)
    rating = t["(Intercept)"] + t["x"] * x + u[user] + v[movie] + rng.normal(0, t["sigma"], m)
    t = TRUTH["liked"]
    u2, v2 = rng.normal(0, t["sd_user"], users), rng.normal(0, t["sd_movie"], movies)
    eta = t["(Intercept)"] + t["x"] * x + u2[user] + v2[movie]
    liked = (rng.random(m) < 1.0 / (1.0 + np.exp(-eta))).astype(np.float64)
    return pd.DataFrame({"user": user, "movie": movie, "x": x, "rating": rating, "liked": liked})
