"""Behaviour distillation as trials and as ``bex distill``: teacher loading, :class:`DistillTrainee`, and
:func:`run_distill` (the maths is in :mod:`bex.learners.distill`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bex.core.progress import Progress, Reporter
from bex.core.progress import report as report_to
from bex.replay import Episode

from .distill import DistillConfig, Distiller, Teacher, init_student, inner_train, student_policy
from .trial import STATE_FILE, TrialConfig, check_trial, evaluate_trial, load_offline_data, run_trial


# --------------------------------------------------------------------------------------------- teacher loading
def _sweep_teacher(sweep: Path, match: dict) -> Path:
    """The trial of the sweep ``sweep`` trained on the same dataset selection and task as ``match`` (a bex
    learner, lowest seed first; CQL preferred, as the OBD papers' teacher is a CQL variant)."""
    import json

    found = []
    for params in sorted(sweep.glob("*/params.json")):
        try:
            t = json.loads(params.read_text()).get("trial") or {}
        except (OSError, ValueError):
            continue
        same = (str(Path(t.get("dataset", "")).resolve()) == str(Path(match["dataset"]).resolve())
                and {k: str(v) for k, v in (t.get("filters") or {}).items()} == match["filters"]
                and t.get("task") == match["task"] and t.get("learner") != "distill")
        if same:
            found.append((t.get("learner") != "cql", int(t.get("seed", 0)), params.parent))
    if not found:
        raise ValueError(f"teacher sweep {str(sweep)!r} has no trial on {match['dataset']} {match['filters']} for "
                         f"{match['task']}")
    return min(found)[2]


def find_teacher(path: str | Path, match: dict | None = None) -> tuple[Path, dict]:
    """The teacher's ``state.pt`` and its trial config (``params.json``'s ``trial``) from a trial directory (its
    latest ``checkpoint_*``), a checkpoint directory, a ``state.pt``, or a sweep directory (with ``match``: the
    trial on the same dataset selection and task, see :func:`_sweep_teacher`); bad input is one ``ValueError``
    line."""
    import json

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"teacher {str(p)!r} does not exist")
    if p.is_dir() and match is not None and not (p / "params.json").is_file() and any(p.glob("*/params.json")):
        p = _sweep_teacher(p, match)
    if p.is_dir() and (p / "params.json").is_file():
        ckpts = sorted(p.glob(f"checkpoint_*/{STATE_FILE}"))
        if not ckpts:
            raise ValueError(f"teacher trial {str(p)!r} has no checkpoint (checkpoint_*/{STATE_FILE})")
        state, trial_dir = ckpts[-1], p
    elif p.is_dir() and (p / STATE_FILE).is_file():
        state, trial_dir = p / STATE_FILE, p.parent
    elif p.is_file() and p.name == STATE_FILE:
        state, trial_dir = p, p.parent.parent
    else:
        raise ValueError(f"teacher {str(p)!r} is not a bex trial directory, a checkpoint directory or a {STATE_FILE}")
    try:
        params = json.loads((trial_dir / "params.json").read_text())
        trial = params["trial"]
        trial["learner"], trial["task"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"teacher {str(p)!r}: no readable bex trial config ({str(trial_dir / 'params.json')!r})"
                         ) from None
    return state, trial


def load_teacher(path: str | Path, domain: str, obs_dim: int, action_dim: int, match: dict | None = None) -> Teacher:
    """A bex offline learner's checkpoint as a :class:`Teacher` for data of ``domain`` with the given widths
    (another domain or other widths: one ``ValueError`` line); ``match`` selects a sweep's trial."""
    from bex.core.state import load_state
    from bex.envs import parse_task

    from . import LEARNERS, make_learner
    state, trial = find_teacher(path, match)
    cfg = TrialConfig.from_dict(trial)
    if cfg.learner not in LEARNERS:
        raise ValueError(f"teacher {str(path)!r} is a {cfg.learner} trial; a bex learner is needed")
    t_domain, _ = parse_task(cfg.task)
    if t_domain != domain:
        raise ValueError(f"teacher {str(path)!r} was trained on {cfg.task} ({t_domain}); the dataset is {domain}")
    sd = load_state(state)["learner"]
    actor_w = next(v for k, v in sd["actor"].items() if k.endswith("weight"))
    if actor_w.shape[1] != obs_dim:
        raise ValueError(f"teacher {str(path)!r} takes observations of {actor_w.shape[1]} dimensions; the dataset "
                         f"has {obs_dim}")
    learner = make_learner(cfg.learner, obs_dim, action_dim, cfg.resolved_learner_config())
    try:
        learner.load_state_dict(sd)
    except (RuntimeError, KeyError) as e:
        raise ValueError(f"teacher {str(path)!r} does not fit a {cfg.learner} with {obs_dim}-D observations and "
                         f"{action_dim}-D actions: {str(e).splitlines()[0]}") from None
    return Teacher(learner, f"{cfg.learner} trial {Path(path).name}", obs_dim, action_dim)


# --------------------------------------------------------------------------------------------- as a trial
class DistillTrainee:
    """A distillation as a :class:`bex.learners.trial.Trainee`: a "gradient step" is one outer step; ``act`` is
    OBD's evaluation policy (a fresh student trained T steps on the synthetic set, seeded by the trial seed and
    the step).  At the final step :meth:`train` also reports the two baselines on the same evaluation episodes:
    ``baseline/random_pairs/*`` (the same student trained on N random real pairs) and ``baseline/bc_full/*``
    (bex's BC learner at the trial's preset on the whole dataset, ``baseline_bc_steps`` steps)."""

    def __init__(self, cfg, od, threads: int = 1):
        from bex.envs import parse_task

        torch.set_num_threads(max(1, int(threads)))
        self.cfg = cfg
        self.domain, self.task = parse_task(cfg.task, od.env_spec["domain"])
        self.dcfg = DistillConfig.from_dict(cfg.resolved_learner_config())
        if not self.dcfg.teacher:
            raise ValueError("a distillation needs learner_config.teacher (a bex trial or checkpoint)")
        match = {"dataset": cfg.dataset, "filters": {k: str(v) for k, v in cfg.filters.items()},
                 "task": cfg.task}
        teacher = load_teacher(self.dcfg.teacher, self.domain, od.obs.shape[1], od.action.shape[1], match)
        self.od = od
        self.distiller = Distiller(od.obs, od.action, teacher, self.dcfg, seed=cfg.seed)
        self._policy = (None, None)

    def start(self) -> None:
        pass

    def train(self, n: int) -> dict[str, float]:
        import time

        t0 = time.perf_counter()
        for _ in range(n):
            metrics = self.distiller.step()
        metrics["distill/s_per_step"] = (time.perf_counter() - t0) / n
        if self.distiller.steps >= self.cfg.steps:
            metrics.update(self.baselines())
        return metrics

    def act(self, obs: np.ndarray) -> np.ndarray:
        step, policy = self._policy
        if step != self.distiller.steps:
            policy = self.distiller.train_student(seed=self.cfg.seed * 1_000_003 + self.distiller.steps)
            self._policy = (self.distiller.steps, policy)
        return policy(obs)

    def baselines(self) -> dict[str, float]:
        from . import make_config, make_learner

        out = {}
        d = self.distiller
        g = torch.Generator().manual_seed(self.cfg.seed + 7)
        idx = torch.randperm(len(d.z), generator=g)[:self.dcfg.size]
        p = init_student(d.z.shape[1], d.a_syn.shape[1], self.dcfg.hidden_dim, g)
        noise = torch.randn(self.dcfg.inner_steps, self.dcfg.size, d.a_syn.shape[1], generator=g)
        a_real = torch.as_tensor(np.asarray(self.od.action, np.float32))[idx]
        p = inner_train(p, d.z[idx], a_real, self.dcfg.inner_lr, noise, self.dcfg.inner_steps, create_graph=False)
        ev = evaluate_trial(student_policy(p, d.mean, d.std), self.cfg, self.domain, self.task, d.steps)
        out.update({f"baseline/random_pairs/{k.split('/', 1)[1]}": v for k, v in ev.items() if k != "eval/at_step"})
        if self.dcfg.baseline_bc_steps:
            from bex.replay import TransitionSampler

            bc = make_learner("bc", d.z.shape[1], d.a_syn.shape[1], make_config("bc", preset=self.cfg.preset),
                              seed=self.cfg.seed)
            tr = self.od.transitions(next(iter(self.od.rewards))) if self.od.rewards else None
            sampler = TransitionSampler(tr, bc.config.batch_size, "cpu", seed=self.cfg.seed)
            for _ in range(self.dcfg.baseline_bc_steps):
                bc.update(sampler.sample())
            ev = evaluate_trial(bc.act, self.cfg, self.domain, self.task, d.steps)
            out.update({f"baseline/bc_full/{k.split('/', 1)[1]}": v for k, v in ev.items() if k != "eval/at_step"})
        return out

    def save(self, directory: str, meta: dict) -> None:
        from bex.core.state import state_bytes
        from bex.replay import atomic_write_bytes

        state = {"distiller": self.distiller.state_dict(), "mean": torch.as_tensor(self.distiller.mean),
                 "std": torch.as_tensor(self.distiller.std), "step": meta["steps"], "history": meta["history"],
                 "wall_s": meta["wall_s"], "last_eval": meta.get("last_eval") or {}}
        atomic_write_bytes(Path(directory) / STATE_FILE, state_bytes(state))

    def restore(self, directory: str) -> dict:
        from bex.core.state import load_state

        state = load_state(Path(directory) / STATE_FILE)
        self.distiller.load_state_dict(state["distiller"])
        return {"steps": int(state["step"]), "history": state["history"], "wall_s": float(state["wall_s"]),
                "last_eval": state.get("last_eval") or {}}


# --------------------------------------------------------------------------------------------- bex distill
def pair_episode(i: int, s: np.ndarray, a: np.ndarray) -> Episode:
    """A synthetic (state, action) pair as a one-step episode: row 0 the state, row 1 the action (and the state
    again as its next observation, which BC does not read); no physics (a null column)."""
    return Episode(f"syn-{i:06d}", np.stack([s, s]).astype(np.float32),
                   np.stack([np.zeros_like(a), a]).astype(np.float32), None, np.ones(2, np.float32))


def run_distill(trial, out: str | Path, resume: bool = False,
                progress: Reporter | None = None) -> dict:
    """``bex distill``: run the distillation ``trial`` (a :class:`~bex.learners.trial.TrialConfig` with learner
    ``distill``) here, checkpointing to ``OUT/_distill/<name>/`` at every evaluation (``resume`` continues from
    it), then write the synthetic set as partition ``objective=distill/param=<weighting>-n<size>/seed=<seed>``
    of the bex dataset ``OUT`` (no physics; its metadata flags it synthetic and holds the distillation config,
    the final evaluation and the baselines).  ``progress`` gets ``Progress("distill", step, steps, rows=(row,))``
    after every reported outer step (``row``: the trial's metrics).  Returns a summary."""
    import json
    import shutil
    import tempfile

    from bex.envs import env_spec
    from bex.replay import DatasetWriter, atomic_write_bytes
    from bex.replay.writer import partition_dir

    out = Path(out)
    dcfg = DistillConfig.from_dict(trial.resolved_learner_config())
    param_name = f"{dcfg.weighting}-n{dcfg.size}"
    domain_task = check_trial(trial)
    domain = domain_task.split("_", 1)[0]
    pdir = partition_dir(out, domain, "distill", param_name, trial.seed)
    if pdir.is_dir() and any(pdir.glob("*.parquet")):
        raise ValueError(f"{str(pdir)!r} already holds a synthetic set; choose another --out or --seed")
    work = out / "_distill" / f"{param_name}-s{trial.seed}"
    ckpt = work / "checkpoint"
    if ckpt.exists() and not resume:
        raise ValueError(f"{str(work)!r} holds an unfinished distillation; pass --resume to continue it")
    od = load_offline_data(trial.dataset, trial.filters, [trial.task])
    trainee = DistillTrainee(trial, od)  # loads and checks the teacher, sizes: errors before anything is written
    rows: list[dict] = []
    tick = report_to(progress)

    def report(row: dict, write=None) -> None:
        rows.append(row)
        if write is not None:
            work.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".ckpt-", dir=work))
            write(str(tmp))
            old = work / ".old-checkpoint"
            if ckpt.exists():
                ckpt.rename(old)
            tmp.rename(ckpt)
            shutil.rmtree(old, ignore_errors=True)
        tick(Progress("distill", row["steps"], trial.steps, rows=(row,)))

    history = run_trial(trial, trainee, report, checkpoint=ckpt if (resume and (ckpt / STATE_FILE).exists())
                        else None)
    final = rows[-1] if rows else {}
    s, a = trainee.distiller.synthetic()
    spec = env_spec(domain, domain_task.split("_", 1)[1])
    meta = {"synthetic": True, "distill": dcfg.to_dict(), "source": {"dataset": str(trial.dataset),
                                                                      "filters": trial.filters},
            "task": domain_task, "seed": trial.seed, "outer_steps": trainee.distiller.steps,
            "final": {k: v for k, v in final.items() if k.startswith(("eval/", "baseline/"))}}
    with DatasetWriter(out, spec, "distill", param_name, trial.seed, config=meta, physics=False) as w:
        for i in range(len(s)):
            w.write_episode(pair_episode(i, s[i], a[i]))
    atomic_write_bytes(work / "history.json", json.dumps(history).encode())
    shutil.rmtree(ckpt, ignore_errors=True)
    return {"out": str(out), "partition": str(pdir), "pairs": len(s), "outer_steps": trainee.distiller.steps,
            **meta["final"]}


def run_distill_trial(cfg: TrialConfig, data, report, checkpoint=None, threads: int = 1) -> list[dict]:
    """A distillation as a trial (:class:`DistillTrainee` in :func:`~bex.learners.trial.run_trial`)."""
    from .trial import trial_data

    od = trial_data(cfg, data)
    return run_trial(cfg, DistillTrainee(cfg, od, threads), report, checkpoint, fingerprint=od.fingerprint)
