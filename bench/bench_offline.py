"""Learning, not just running: bex's offline learners and their variants on one APT-BE walker dataset.

1. collect a walker dataset with APT + behavioral entropy (alpha 0.5, small
   preset, ``--knn-mode recent``) through the real collection driver (Ray
   actors), seeds 0 and 1 of ``--steps`` env steps each, unless ``--data``
   already holds it;
2. relabel it for every ``--tasks`` task;
3. train every ``--variants`` variant (small preset, ``--train-steps`` steps)
   for every task and seed, in process, one torch thread per trial, ``--jobs``
   trials at a time;
4. evaluate each (deterministic, ``--episodes`` episodes on the same seeds for
   every learner) and the uniform random policy, and print mean ± std over seeds
   and the ratio to random.

Every finished trial is appended as one JSON line to ``--results``; a rerun
skips trials already there, so an interrupted run resumes where it stopped.
This is a record of what the learners do on our data, not a pass/fail bar.

    python bench/bench_offline.py [--quick] [--data DIR] [--variants td3,td3_exorl,...]
        [--tasks walker_stand,walker_walk] [--seeds 0,1,2] [--train-steps N] [--jobs J] [--table-only]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MUJOCO_GL", "disable")

from common import machine_label  # noqa: E402

#: variant name -> (learner, overrides on the small preset)
VARIANTS = {
    "td3": ("td3", {}),                             # TD3 paper: target actor, delay 2, Q1 actor loss
    "td3_exorl": ("td3", {"variant": "exorl"}),     # ExORL agent/td3.py
    "cql": ("cql", {}),                             # CQL paper's importance-sampled estimator, SAC actor
    "cql_exorl": ("cql", {"variant": "exorl"}),     # ExORL agent/cql.py
    "crr": ("crr", {}),
    "iql": ("iql", {}),
    "iql_bst": ("iql_bst", {}),
    "td3_bst": ("td3_bst", {}),
    "td3_bc": ("td3_bc", {}),
    "bc": ("bc", {}),
}
DEFAULT_VARIANTS = "td3,td3_exorl,cql,cql_exorl,iql,iql_bst,td3_bst"
EVAL_SEED = 1000


def dataset_complete(root: Path, steps: int) -> bool:
    """Whether ``root`` holds BE alpha-0.5 partitions with at least ``steps`` transitions in all."""
    from bex.replay import Dataset

    try:
        first = Dataset(root, objective="be", param="0.5").load(["is_first"]).is_first
    except (ValueError, FileNotFoundError):
        return False
    return len(first) - int(first.sum()) >= steps


def ensure_dataset(data: Path, steps: int, tasks: list[str]) -> None:
    from bex.replay import relabel

    if not dataset_complete(data, 2 * steps):
        from bex.actors.collect import CollectConfig
        from bex.cluster.driver import run_collections

        t0 = time.perf_counter()
        cfgs = [CollectConfig(out=str(data), explorer="apt", objective="be", param=0.5, steps=steps, seed=s,
                              preset="small", episodes_per_chunk=5, explorer_config={"knn_mode": "recent"})
                for s in (0, 1)]
        run_collections(cfgs, resume=True, max_concurrent_runs=2)
        print(f"collected 2 x {steps} steps in {time.perf_counter() - t0:.0f}s", flush=True)
    for task in tasks:
        relabel(data, task)


def run_trial(data: str, variant: str, task: str, seed: int, train_steps: int, episodes: int) -> dict:
    """Train one variant on one task and seed; evaluate it (one torch thread, no Ray)."""
    import torch

    from bex.envs import evaluate, parse_task
    from bex.learners import make_config, make_learner
    from bex.replay import Dataset, TransitionSampler

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    name, overrides = VARIANTS[variant]
    domain, t = parse_task(task)
    tr = Dataset(data, objective="be", param="0.5").transitions(task)
    cfg = make_config(name, overrides, preset="small")  # hidden 256, batch 256, lr 3e-4, 5K Morse steps
    learner = make_learner(name, tr.obs.shape[1], tr.action.shape[1], cfg, seed=seed)
    sampler = TransitionSampler(tr, cfg.batch_size, seed=seed)
    t0 = time.perf_counter()
    if hasattr(learner, "pretrain"):
        learner.pretrain(sampler.sample)
    pretrain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(train_steps):
        metrics = learner.update(sampler.sample())
    train_s = time.perf_counter() - t0
    ev = evaluate(learner.act, domain, t, episodes=episodes, seed=EVAL_SEED)
    return dict(variant=variant, learner=name, overrides=overrides, task=task, seed=seed, train_steps=train_steps,
                transitions=len(tr), returns=list(ev.returns), mean=ev.mean, std=ev.std, train_s=round(train_s, 1),
                pretrain_s=round(pretrain_s, 1),
                updates_per_s=round(train_steps / train_s, 2),
                final_metrics={k: round(float(v), 5) for k, v in metrics.items()})


def random_returns(task: str, episodes: int) -> dict:
    from bex.envs import env_spec, evaluate, parse_task, random_policy

    domain, t = parse_task(task)
    ev = evaluate(random_policy(env_spec(domain, t).action_dim, seed=0), domain, t, episodes=episodes,
                  seed=EVAL_SEED)
    return dict(variant="random", task=task, seed=0, returns=list(ev.returns), mean=ev.mean, std=ev.std)


def load_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_result(path: Path, row: dict) -> None:
    """One JSON line per finished trial (appended and flushed: a crash loses at most the running trials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def table(rows: list[dict], variants: list[str], tasks: list[str], train_steps: int) -> str:
    """Mean ± std over seeds of each variant's mean evaluation return, and the ratio to random."""
    rnd = {r["task"]: r for r in rows if r["variant"] == "random"}
    head = "| variant | " + " | ".join(tasks) + " |"
    lines = [head, "|" + "---|" * (len(tasks) + 1)]
    lines.append("| random policy | " + " | ".join(
        f"{rnd[t]['mean']:.1f} ± {rnd[t]['std']:.1f} (episodes)" if t in rnd else "—" for t in tasks) + " |")
    for v in variants:
        cells = []
        for t in tasks:
            got = [r for r in rows if r["variant"] == v and r["task"] == t and r.get("train_steps") == train_steps]
            if not got:
                cells.append("—")
                continue
            means = [r["mean"] for r in got]
            m = statistics.mean(means)
            sd = statistics.stdev(means) if len(means) > 1 else 0.0
            ratio = f", {m / rnd[t]['mean']:.2f}× random" if t in rnd and rnd[t]["mean"] > 0 else ""
            cells.append(f"{m:.1f} ± {sd:.1f} (n={len(got)}{ratio})")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny dataset and budget (a smoke run)")
    ap.add_argument("--data", default="bex_runs/bench/offline_walker")
    ap.add_argument("--steps", type=int, default=None, help="dataset size per collection seed (env steps)")
    ap.add_argument("--train-steps", type=int, default=None)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"any of {', '.join(VARIANTS)}")
    ap.add_argument("--tasks", default="walker_stand,walker_walk")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=1, help="trials at a time (one torch thread each)")
    ap.add_argument("--results", default=None, help="JSON-lines record (default DATA/../offline_results.jsonl)")
    ap.add_argument("--table-only", action="store_true", help="print the table of the results so far")
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {bad}; allowed: {', '.join(VARIANTS)}")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    steps = args.steps or (3_000 if args.quick else 30_000)
    train_steps = args.train_steps or (300 if args.quick else 10_000)
    episodes = 2 if args.quick else args.episodes
    data = Path(args.data)
    results = Path(args.results) if args.results else data.parent / f"{data.name}_offline_results.jsonl"
    print(f"# offline learners on an APT-BE walker dataset — {machine_label()}, load {os.getloadavg()[0]:.1f}",
          flush=True)
    if not args.table_only:
        ensure_dataset(data, steps, tasks)
        rows = load_results(results)
        for t in tasks:
            if not any(r["variant"] == "random" and r["task"] == t for r in rows):
                append_result(results, random_returns(t, episodes))
        done = {(r["variant"], r["task"], r["seed"]) for r in load_results(results)
                if r.get("train_steps") == train_steps}
        todo = [(v, t, s) for s in seeds for t in tasks for v in variants if (v, t, s) not in done]
        print(f"{len(done)} trials recorded in {results}; {len(todo)} to run at {train_steps} steps, "
              f"{args.jobs} at a time", flush=True)
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futs = {pool.submit(run_trial, str(data), v, t, s, train_steps, episodes): (v, t, s) for v, t, s in todo}
            for fut in as_completed(futs):  # recorded as each finishes: an interruption loses only running ones
                row = fut.result()
                append_result(results, row)
                print(f"{row['variant']:<10} {row['task']:<14} seed {row['seed']}: {row['mean']:7.1f} ± "
                      f"{row['std']:5.1f}  ({row['updates_per_s']} updates/s, {row['train_s']:.0f}s)", flush=True)
    print(f"\n{train_steps} gradient steps, small preset, {episodes} evaluation episodes per trial; "
          f"± = std over seeds of the per-trial mean return")
    print(table(load_results(results), variants, tasks, train_steps))


if __name__ == "__main__":
    main()
