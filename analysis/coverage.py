"""Coverage of datasets: k-NN entropies, volumes and the near-static fraction, comparable across datasets.

The BE paper (arXiv 2502.04141) argues with coverage: k-NN entropies of the
datasets' states and t-SNE/PHATE pictures.  This module computes figures that
can be compared between datasets — bex's and anyone else's — on one footing:

* **Equal-size samples.** Each dataset is subsampled (without replacement, seeded)
  to the same number of states ``n``: the smallest dataset's size, or
  ``max_states`` when smaller.  k-NN entropy estimates depend on ``n``.
* **One standardisation.** States are z-scored with the mean and standard
  deviation of *all* compared datasets pooled (dimensions that never move are
  dropped), so a distance means the same in every dataset.  With
  ``standardiser: fixed`` the mean, standard deviation and the cell-volume frame
  come instead from the domain's declared reference (:func:`reference_states`:
  random-action rollouts), so figures computed in separate calls (one shard per
  session) compare with each other.
* **Estimators** (:mod:`bex.entropy.estimators`, from the same k-th neighbour
  distances, FAISS exact k-NN): Shannon (Kozachenko–Leonenko), Rényi of orders
  ``q`` (Leonenko–Pronzato–Savani), behavioral entropy for each ``alpha`` (the
  importance-corrected plug-in; beta from the default coupling with M = 512).
* **Volumes.** ``volume_logdet``: the log-determinant of the covariance of the
  standardised states (a Gaussian's entropy up to constants; blind to how the
  states fill their spread).  ``volume_cells``: the fraction of the cells of a
  ``grid`` × ``grid`` grid over the first two principal components of the pooled
  states (range: the pooled 0.5–99.5 % quantiles) that the dataset occupies — a
  uniform box fills more cells than a few tight clusters of the same covariance.
* **Near-static fraction**: the share of states whose nearest other state is
  closer than ``static_eps`` (standardised units) — held poses, which explain
  most entropy gaps measured in this project.
* **Intervals.** Every figure comes with ``lo``/``hi``, a 95 % subsampling
  interval (Politis & Romano, "m out of n" with m = n/2): the figure is computed
  on ``replicates`` random half-size subsamples of the equal-size sample, and
  the 2.5/97.5 % percentiles of their deviations from their mean, scaled by the
  delete-d jackknife factor sqrt(m/(n − m)) (= 1 for m = n/2: subsamples drawn
  without replacement already spread as the full-sample estimate does; an earlier
  version scaled by sqrt(m/n), intervals √2 too narrow), are put around the
  full-sample value.  (A
  bootstrap with replacement would create duplicate states at distance 0, which
  k-NN estimators cannot take; centring on the replicates' mean removes the
  size effect of counting figures such as ``volume_cells``.)  The value is the
  estimate on the whole equal-size sample.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from bex.core import ConfigBase, param
from bex.core.progress import Progress, Reporter, report
from bex.entropy.estimators import (
    behavioral_entropy_from_log_density,
    log_density_from_distances,
    renyi_from_distances,
    shannon_from_distances,
)
from bex.entropy.knn_index import KnnIndex
from bex.entropy.prelec import default_beta

SPACES = ("physics", "observation", "positions")
#: The BE paper's alpha grid (Fig. 13) and its Rényi orders (reference.md §1), q = 2 added as a common choice.
DEFAULT_ALPHAS = (0.2, 0.5, 0.7, 0.9, 1.5, 2.0, 3.0, 5.0)
DEFAULT_QS = (0.5, 1.1, 2.0)


@dataclass(frozen=True)
class CoverageConfig(ConfigBase):
    """How coverage is measured (every field has the default ``bex coverage`` uses)."""

    space: str = param("physics", "state representation: the physics state, the observation, or the joint "
                       "positions (qpos)", choices=SPACES)
    max_states: int | None = param(None, "equal sample size cap (None: the smallest dataset's size)", lo=10)
    k: int = param(5, "neighbours of the k-NN estimators", lo=1)
    qs: tuple = param(doc="Rényi orders", default_factory=lambda: DEFAULT_QS)
    alphas: tuple = param(doc="behavioral-entropy alphas (beta = (log 512)^(1 - alpha))",
                          default_factory=lambda: DEFAULT_ALPHAS)
    grid: int = param(50, "cells per axis of the occupied-cell volume", lo=2)
    static_eps: float = param(1e-3, "nearest-neighbour distance (standardised units) below which a state is "
                              "near-static", lo=0.0, lo_open=True)
    replicates: int = param(10, "half-size subsamples behind each interval", lo=2)
    map_states: int = param(3000, "pooled states behind the shared t-SNE and PHATE maps (an equal share per "
                            "dataset); 0 = no maps", lo=0)
    seed: int = param(0, "seed of the subsampling", lo=0, hi=2**32 - 1)
    standardiser: str = param("pooled", "'pooled': z-score with the statistics of the compared samples (figures "
                              "compare within one call); 'fixed': with the domain's declared reference (random-"
                              "action rollouts, reference_states), so figures of calls made apart (shards "
                              "collected in different sessions) compare", choices=("pooled", "fixed"))

    def check(self) -> None:
        for q in self.qs:
            if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q <= 10 or q == 1:
                raise ValueError(f"CoverageConfig.qs contains {q!r}: allowed 0 < q <= 10, q != 1")
            if q >= self.k + 1:
                raise ValueError(f"CoverageConfig.qs contains {q!r}: the Rényi estimator needs q < k + 1 = "
                                 f"{self.k + 1}")
        for a in self.alphas:
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a <= 10:
                raise ValueError(f"CoverageConfig.alphas contains {a!r}: allowed 0 < alpha <= 10")


def figure_names(cfg: CoverageConfig) -> list[str]:
    """The keys of the figures :func:`coverage` reports under ``cfg``."""
    return ["shannon", *(_key("renyi_q", q) for q in cfg.qs), *(_key("be_alpha", a) for a in cfg.alphas),
            "volume_logdet", "volume_cells", "near_static"]


@dataclass
class StateSet:
    """The states of one compared dataset (one row per state, already in the chosen space)."""

    name: str
    states: np.ndarray
    meta: dict = field(default_factory=dict)


def _key(prefix: str, v: float) -> str:
    return f"{prefix}{float(v):g}"


def standardiser(sets: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled mean, std and the mask of dimensions that vary (std > 0) over all ``sets``."""
    pooled = np.concatenate([np.asarray(s, np.float64) for s in sets])
    mean, std = pooled.mean(0), pooled.std(0)
    keep = std > 1e-12
    return mean, np.where(keep, std, 1.0), keep


REFERENCE_EPISODES = 20


@functools.lru_cache(maxsize=8)
def reference_states(domain: str, space: str) -> np.ndarray:
    """The fixed standardiser's reference of a domain: the states of 20 episodes of uniform random actions on
    its collection task (episode ``i`` on environment seed ``i``, actions from one generator seeded 0), in
    ``space``.  It depends on nothing but the domain, so coverage figures of datasets measured in different
    calls (different sessions, different machines) share one z-scoring and one cell frame."""
    from bex.envs import make

    rng = np.random.default_rng(0)
    rows = []
    for i in range(REFERENCE_EPISODES):
        env = make(domain, seed=i)
        step = env.reset()
        while not step.last:
            step = env.step(rng.uniform(-1.0, 1.0, env.spec.action_dim))
            rows.append(step.obs if space == "observation" else env.physics_state())
        nq = int(env.physics.model.nq)
        env.close()
    states = np.asarray(rows, np.float64)
    return states[:, :nq] if space == "positions" else states


def figures(z: np.ndarray, cfg: CoverageConfig, cells: Callable[[np.ndarray], float],
            knn: Callable[[np.ndarray, int], np.ndarray]) -> dict[str, float]:
    """Every figure of one standardised sample ``z`` (n, d); an estimate that overflows is non-finite (reported
    as null), without a warning."""
    with np.errstate(all="ignore"):
        return _figures(z, cfg, cells, knn)


def _figures(z: np.ndarray, cfg: CoverageConfig, cells: Callable[[np.ndarray], float],
             knn: Callable[[np.ndarray, int], np.ndarray]) -> dict[str, float]:
    n, d = z.shape
    r = knn(z, cfg.k)  # (n, k): distances to the k nearest other states, ascending
    rk = np.maximum(r[:, -1], 1e-300)
    out = {"shannon": shannon_from_distances(rk, n, d, cfg.k)}
    for q in cfg.qs:
        out[_key("renyi_q", q)] = renyi_from_distances(rk, n, d, cfg.k, float(q))
    log_f = log_density_from_distances(rk, n, d, cfg.k)
    for a in cfg.alphas:
        out[_key("be_alpha", a)] = behavioral_entropy_from_log_density(log_f, float(a), default_beta(float(a)))
    sign, logdet = np.linalg.slogdet(np.cov(z, rowvar=False).reshape(d, d))
    out["volume_logdet"] = float(logdet) if sign > 0 else -math.inf
    out["volume_cells"] = cells(z)
    out["near_static"] = float(np.mean(r[:, 0] < cfg.static_eps))
    return out


def null_figures_note(rows: Sequence[dict]) -> str | None:
    """One sentence naming the figures that are null (non-finite) for some datasets, and why, or None.

    In a high-dimensional space some states' k-NN density exceeds 1, where differential BE is not real-valued
    and the plug-in with the odd extension overflows for alpha > 1 (the walker replication: every APT dataset
    in 18-D physics space); a singular covariance makes ``volume_logdet`` null.
    """
    nulls = {}
    for row in rows:
        for k, v in row.items():
            if isinstance(v, dict) and "value" in v and v["value"] is None:
                nulls[k] = nulls.get(k, 0) + 1
    if not nulls:
        return None
    names = ", ".join(f"{k} ({c} of {len(rows)})" for k, c in nulls.items())
    why = []
    if any(k.startswith("be_alpha") for k in nulls):
        why.append("a BE estimate overflows where some states' k-NN density exceeds 1 (BE is real-valued only "
                   "where f <= 1)")
    if "volume_logdet" in nulls:
        why.append("a singular covariance has no log-determinant")
    return f"null figures: {names}" + (f"; {'; '.join(why)}" if why else "") + " (docs/coverage.md)"


def _interval(value: float, dev: np.ndarray) -> dict:
    """``{"value", "lo", "hi"}``; a non-finite figure (a degenerate covariance) is ``None`` throughout."""
    if not math.isfinite(value) or not np.all(np.isfinite(dev)):
        return {"value": None, "lo": None, "hi": None}
    return {"value": float(value), "lo": float(value + np.percentile(dev, 2.5)),
            "hi": float(value + np.percentile(dev, 97.5))}


@contextlib.contextmanager
def _stdout_to_stderr():
    """Point file descriptor 1 at stderr for the block (whatever Python object holds stdout)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def shared_maps(zs: Sequence[np.ndarray], names: Sequence[str], cfg: CoverageConfig, out_dir: Path,
                rng: np.random.Generator, progress: Reporter | None = None) -> dict[str, str]:
    """One t-SNE (openTSNE) and one PHATE embedding of the pooled states, drawn as small multiples.

    ``cfg.map_states`` pooled states, an equal share from each standardised
    sample, are embedded once per method; each dataset gets a panel with the same
    axes, the pooled states in grey behind its own.  Writes ``tsne.png`` and
    ``phate.png`` to ``out_dir`` (atomically) and returns their paths.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import phate
    from openTSNE import TSNE

    from bex.replay import atomic_write_bytes

    per = max(2, cfg.map_states // len(zs))
    parts = [z[rng.choice(len(z), min(per, len(z)), replace=False)] for z in zs]
    pooled = np.concatenate(parts)
    owner = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])
    perplexity = float(min(30.0, max(2.0, (len(pooled) - 1) / 3.0)))
    # both libraries print progress and convergence notes to stdout (PHATE through a logger holding the
    # original stream), which carries bex's JSON lines: send file descriptor 1 to stderr meanwhile
    with _stdout_to_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tick = report(progress)
        tick(Progress("maps", 0, 2))
        embeddings = {"tsne": np.asarray(TSNE(n_components=2, perplexity=perplexity, random_state=cfg.seed, n_jobs=1,
                                              verbose=False).fit(pooled))}
        tick(Progress("maps", 1, 2))
        try:
            embeddings["phate"] = np.asarray(phate.PHATE(n_components=2, knn=min(5, len(pooled) - 2),
                                                         random_state=cfg.seed, n_jobs=1,
                                                         verbose=0).fit_transform(pooled))
        except np.linalg.LinAlgError:  # PHATE's diffusion SVD fails on a few thousand near-duplicate states
            tick(Progress("maps", 2, 2, message="bex: note: PHATE did not converge on these states; no PHATE map"))
        tick(Progress("maps", 2, 2))
    out = {}
    cols = min(4, len(zs))
    rows = (len(zs) + cols - 1) // cols
    for method, emb in embeddings.items():
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False, sharex=True,
                                 sharey=True)
        for i, ax in enumerate(axes.flat):
            if i >= len(zs):
                ax.axis("off")
                continue
            ax.scatter(emb[:, 0], emb[:, 1], s=2, c="0.85", linewidths=0)
            mine = emb[owner == i]
            ax.scatter(mine[:, 0], mine[:, 1], s=3, c="tab:blue", linewidths=0)
            ax.set_title(names[i], fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{'t-SNE' if method == 'tsne' else 'PHATE'} of {len(pooled)} pooled states "
                     f"(one embedding; grey: all datasets)", fontsize=9)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        path = out_dir / f"{method}.png"
        atomic_write_bytes(path, buf.getvalue())
        out[method] = str(path)
    return out


def coverage(sets: Sequence[StateSet], cfg: CoverageConfig | None = None,
             progress: Reporter | None = None, out_dir: str | Path | None = None) -> list[dict]:
    """The coverage figures of each set, ``{"value", "lo", "hi"}`` each, on equal-size pooled-z-scored samples.

    ``progress`` gets a :class:`~bex.core.progress.Progress` event as work completes: stage ``figures`` (one
    unit per figure set: each dataset's full sample and its replicates), then ``maps`` (t-SNE, PHATE).

    With ``out_dir`` and ``cfg.map_states > 0`` the shared t-SNE and PHATE maps are drawn there too
    (:func:`shared_maps`; each row then names its ``maps``).
    """
    cfg = cfg or CoverageConfig()
    if not sets:
        raise ValueError("coverage needs at least one dataset")
    for s in sets:
        if len(s.states) < 2 * (cfg.k + 1):
            raise ValueError(f"dataset {s.name!r} has {len(s.states)} states: coverage needs at least "
                             f"{2 * (cfg.k + 1)} (k = {cfg.k}, half-size subsamples)")
    dims = {s.states.shape[1] for s in sets}
    if len(dims) > 1:
        raise ValueError(f"the compared datasets have states of different widths {sorted(dims)} in this space; "
                         f"compare datasets of one domain, or use another --space")
    rng = np.random.default_rng(cfg.seed)
    n = min(len(s.states) for s in sets)
    if cfg.max_states is not None:
        n = min(n, cfg.max_states)
    samples = [np.asarray(s.states, np.float64)[rng.choice(len(s.states), n, replace=False)] for s in sets]
    if cfg.standardiser == "fixed":
        domains = {s.meta.get("domain") for s in sets}
        if len(domains) != 1 or None in domains:
            raise ValueError(f"the fixed standardiser is per domain; the compared sets have domains {domains}")
        ref = reference_states(domains.pop(), cfg.space)
        mean, std, keep = standardiser([ref])
        frame = ((ref - mean) / std)[:, keep]
    else:
        mean, std, keep = standardiser(samples)
    zs = [((x - mean) / std)[:, keep] for x in samples]
    d = zs[0].shape[1]
    if d == 0:
        raise ValueError("no dimension of the states varies across the compared datasets")
    pooled = np.concatenate(zs) if cfg.standardiser == "pooled" else frame
    # shared 2-D frame of the cell volume: the pooled principal components, clipped quantile range
    _, _, vt = np.linalg.svd(pooled - pooled.mean(0), full_matrices=False)
    axes = vt[:2].T if d >= 2 else np.eye(1)
    proj = (pooled - pooled.mean(0)) @ axes
    lo, hi = np.quantile(proj, 0.005, axis=0), np.quantile(proj, 0.995, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    center = pooled.mean(0)

    def cells(z: np.ndarray) -> float:
        p = ((z - center) @ axes - lo) / span
        idx = np.clip((p * cfg.grid).astype(int), 0, cfg.grid - 1)
        occupied = np.unique(idx[:, 0] * cfg.grid + (idx[:, 1] if idx.shape[1] > 1 else 0)).size
        return occupied / float(cfg.grid ** idx.shape[1])

    index = KnnIndex(d, capacity=2)  # no ring buffer is used: search_batch searches the sample itself

    def knn(z: np.ndarray, k: int) -> np.ndarray:
        dist, _ = index.search_batch(z.astype(np.float32), k, include_self=False)
        return dist.astype(np.float64)

    out = []
    tick = report(progress)
    total = len(sets) * (1 + cfg.replicates)
    tick(Progress("figures", 0, total))
    for i, (s, z) in enumerate(zip(sets, zs)):
        value = figures(z, cfg, cells, knn)
        tick(Progress("figures", i * (1 + cfg.replicates) + 1, total))
        reps = []
        for j in range(cfg.replicates):
            reps.append(figures(z[rng.choice(n, n // 2, replace=False)], cfg, cells, knn))
            tick(Progress("figures", i * (1 + cfg.replicates) + j + 2, total))
        row = {"dataset": s.name, "states": n, "space": cfg.space, "dims": d, **s.meta}
        scale = math.sqrt((n // 2) / (n - n // 2))  # delete-d jackknife factor of m-out-of-n subsamples
        for key, v in value.items():
            dev = np.array([r[key] for r in reps])
            with np.errstate(all="ignore"):  # an overflowing estimate (BE at extreme alpha): a null figure
                dev = (dev - dev.mean()) * scale
            row[key] = _interval(v, dev)
        out.append(row)
    if out_dir is not None and cfg.map_states > 0:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        maps = shared_maps(zs, [s.name for s in sets], cfg, Path(out_dir), rng, progress=tick)
        for row in out:
            row["maps"] = maps
    return out


# ---------------------------------------------------------------------------------------------- loading
def _positions_width(domain: str) -> int:
    """``nq``: how many leading entries of the physics state are joint positions (qpos)."""
    from bex.envs import make

    env = make(domain, seed=0)
    try:
        return int(env.physics.model.nq)
    finally:
        env.close()


def dataset_states(ds, space: str) -> np.ndarray:
    """The states of a :class:`~bex.replay.Dataset` selection in ``space`` (one row per stored step)."""
    arr = ds.load(["observation" if space == "observation" else "physics"])
    states = arr.observation if space == "observation" else arr.physics
    if space == "positions":
        states = states[:, :_positions_width(ds.env_spec.domain)]
    return np.asarray(states, np.float64)


def selection_state_set(name: str, selections: Sequence[tuple[str, dict]], space: str = "physics") -> StateSet:
    """One :class:`StateSet` named ``name`` from the union of dataset selections ``(root, partition filters)``
    (e.g. every dataset selection behind one row of a results table)."""
    from bex.replay import Dataset

    if space not in SPACES:
        raise ValueError(f"unknown --space {space!r}; allowed: {', '.join(SPACES)}")
    parts, domains = [], set()
    for root, filters in selections:
        ds = Dataset(root, **filters)
        if not ds.files:
            raise ValueError(f"dataset {str(root)!r} holds no data files" + (f" matching {filters}" if filters else ""))
        parts.append(dataset_states(ds, space))
        domains.add(ds.env_spec.domain)
    if len(domains) > 1 and space != "observation":
        raise ValueError(f"{name!r} mixes domains {sorted(domains)}, which cannot be compared in {space} space")
    return StateSet(name, np.concatenate(parts), {"selections": [[str(r), dict(f)] for r, f in selections],
                                                  "domain": sorted(domains)[0]})


def load_state_sets(dirs: Sequence[str | Path], space: str = "physics",
                    progress: Reporter | None = None) -> list[StateSet]:
    """One :class:`StateSet` per partition of each directory (a dataset root: all its partitions; a partition
    directory: that partition), in ``space``.  Every directory is checked (from metadata and file footers) before
    any is read, so bad input is one ``ValueError`` line with no progress before it; ``Progress("load", i, n)``
    then counts partitions read."""
    from bex.replay.reader import Dataset, dataset_selection, has_physics, no_physics_error

    if space not in SPACES:
        raise ValueError(f"unknown --space {space!r}; allowed: {', '.join(SPACES)}")
    todo: list[tuple[Path, dict, Dataset]] = []
    for d in dirs:
        path = Path(d)
        root, fixed = dataset_selection(path)
        ds = Dataset(root, **fixed)
        if not ds.files:
            raise ValueError(f"{str(path)!r} holds no data files (an empty partition or dataset)")
        for part in ds.partitions:
            sub = Dataset(root, **part)
            without = [] if space == "observation" else [f.path for f in sub.files if not has_physics(f.path)]
            if without:
                raise no_physics_error(without[0])
            todo.append((root, part, sub))
    domains = sorted({sub.env_spec.domain for _, _, sub in todo})
    if len(domains) > 1 and space != "observation":
        raise ValueError(f"datasets of different domains {domains} cannot be compared in {space} space "
                         f"(their states mean different things)")
    out: list[StateSet] = []
    tick = report(progress)
    for i, (root, part, sub) in enumerate(todo):
        tick(Progress("load", i, len(todo)))
        states = dataset_states(sub, space)
        label = part.get("objective", "?") + ("" if part.get("param", "none") == "none" else f"={part['param']}")
        name = f"{root.name}:{label}/s{part.get('seed', '?')}"
        out.append(StateSet(name, states, {"path": str(root), "partition": part, "domain": sub.env_spec.domain}))
    tick(Progress("load", len(todo), len(todo)))
    return out
