"""``bex info``: a summary of a dataset."""
from __future__ import annotations

from bex.replay import Dataset
from bex.replay.card import card_path, digest_line, partition_facts
from bex.replay.reader import combine_digests


def dataset_info(root) -> dict:
    ds = Dataset(root)
    spec = ds.env_spec if ds.files else None
    facts = [partition_facts(ds, part, None) for part in ds.partitions]  # each partition read once, no card cache
    parts = [{k: p[k] for k in ("partition", "files", "episodes", "transitions", "fingerprint", "layout")}
             for p in facts]
    return dict(
        root=str(ds.root), schema_version=ds.meta.get("schema_version"), bex_version=ds.meta.get("bex_version"),
        partitions=parts, episodes=sum(p["episodes"] for p in parts),
        transitions=sum(p["transitions"] for p in parts),
        shapes=None if spec is None else dict(observation=spec.obs_dim, action=spec.action_dim,
                                              physics=spec.physics_dim),
        domain=None if spec is None else spec.domain, collection_task=None if spec is None else spec.task,
        cached_rewards=ds.cached_tasks(),
        fingerprint=combine_digests([digest_line(p) for p in facts]) if facts else None,
        card=str(card_path(ds.root)) if card_path(ds.root).is_file() else None)


def format_info(d: dict) -> str:
    lines = [f"dataset      {d['root']}", f"schema       v{d['schema_version']} (written by bex {d['bex_version']})",
             f"domain       {d['domain']} (collected on task {d['collection_task']})", f"shapes       {d['shapes']}",
             f"episodes     {d['episodes']}", f"transitions  {d['transitions']}",
             f"rewards      {', '.join(d['cached_rewards']) or '(none cached: run bex relabel)'}",
             f"fingerprint  {d['fingerprint']} (content hash of the rows: bex.replay.Dataset.fingerprint)",
             f"card         {d['card'] or '(none yet: bex collect, relabel and import write it)'}",
             "partitions"]
    for p in d["partitions"]:
        lines.append(f"  {p['partition']:<50} files={p['files']:<4} episodes={p['episodes']:<5} "
                     f"transitions={p['transitions']:<8} fingerprint={p['fingerprint']}"
                     + ("" if p["layout"] == "episodes" else f" layout={p['layout']} (one-step episodes)"))
    return "\n".join(lines)
