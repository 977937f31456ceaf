"""``bex report``: the page in a real headless Chromium, and its aggregates against hand computations."""
from __future__ import annotations

import io
import json
import subprocess

import numpy as np
import pytest
from scipy.stats import spearmanr, trim_mean

from tests.conftest import BEX

LABELS = ("random", "wide", "narrow")
RETURNS = {"random": [100.0, 120.0, 110.0], "wide": [300.0, 340.0, 320.0], "narrow": [200.0, 180.0, 190.0]}


def _datasets(root):
    """Three partitions of one walker dataset (real physics; different seeds and lengths)."""
    from bex.replay import DatasetWriter
    from tests.helpers import collect_episode

    for i, label in enumerate(LABELS):
        ep, _, spec = collect_episode("walker", "stand", 10 + i, 150 + 20 * i, episode_id=f"{label}-0")
        with DatasetWriter(root, spec, label, None, 0) as w:
            w.write_episode(ep)
    return root


def _sweep(run, data_root):
    """A Tune experiment directory as ``bex sweep`` leaves it: three datasets × one task × TD3 × three seeds."""
    for i, label in enumerate(LABELS):
        for seed, final in enumerate(RETURNS[label]):
            d = run / f"abcde_{3 * i + seed:05d}_td3_walker_stand_{label}_s{seed}"
            d.mkdir(parents=True)
            trial = {"dataset": str(data_root), "filters": {"objective": label}, "label": label, "learner": "td3",
                     "learner_config": {}, "preset": "small", "seed": seed, "steps": 200, "task": "walker_stand",
                     "eval_every": 100, "eval_episodes": 1, "report_every": 50, "device": "cpu"}
            (d / "params.json").write_text(json.dumps({"trial": trial}))
            rows = [{"steps": s, "eval/return_mean": final * s / 200, "eval/at_step": s} for s in (100, 200)]
            (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


def load_page(path) -> dict:
    """Open ``path`` offline in headless Chromium: console errors, dataset rows, images and their pixels."""
    import matplotlib.image as mpimg

    from tests.browser import Browser

    with Browser() as b:
        for m in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
            b.call(m)
        b.call("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1,
               uploadThroughput=-1)
        b.call("Page.navigate", url=path.resolve().as_uri())
        b.wait_event("Page.loadEventFired")
        info = b.evaluate("""({
            rows: [...document.querySelectorAll('table')].map(t => [t.id,
                   [...t.querySelectorAll('tr.dataset-row')].map(r => r.dataset.dataset)]),
            images: [...document.images].map(i => {const r = i.getBoundingClientRect();
                   return {alt: i.alt, ok: i.complete && i.naturalWidth > 0, x: r.left + scrollX, y: r.top + scrollY,
                           width: r.width, height: r.height}}),
            refs: [...document.querySelectorAll('[src],[href]')]
                  .map(e => e.getAttribute('src') || e.getAttribute('href'))
        })""")
        b.call("Runtime.evaluate", expression="0")  # let pending console/log events arrive before reading them
        errors = [e for e in b.events
                  if e.get("method") in ("Runtime.exceptionThrown", "Network.loadingFailed")
                  or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
        variances = []
        for im in info["images"]:
            png = b.screenshot({k: im[k] for k in ("x", "y", "width", "height")})
            variances.append(float(mpimg.imread(io.BytesIO(png), format="png")[..., :3].var()))
    return {**info, "errors": errors, "variances": variances}


def test_report_page_loads_offline_in_chromium_with_every_row_and_non_blank_plots(tmp_path):
    data = _datasets(tmp_path / "data")
    run = tmp_path / "sweeps" / "exp"
    _sweep(run, data)
    page = tmp_path / "page.html"
    p = subprocess.run([BEX, "report", str(run), "--out", str(page), "--max-states", "120", "--map-states", "150"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.splitlines()[-1])
    assert sorted(summary["datasets"]) == sorted(LABELS) and (run / "coverage" / "coverage.json").is_file()
    res = load_page(page)
    assert res["errors"] == []
    tables = dict(res["rows"])
    for table in ("coverage-table", "results-table", "aggregate-table"):
        assert sorted(tables[table]) == sorted(LABELS), table
    # maps (t-SNE, PHATE), one learning curve, the aggregate intervals, the coverage-vs-return scatter
    alts = [im["alt"] for im in res["images"]]
    assert len(alts) == 5 and any("t-SNE" in a or "tsne" in a for a in alts) and "coverage against return" in alts
    assert all(im["ok"] and im["width"] > 100 and im["height"] > 100 for im in res["images"])
    assert min(res["variances"]) > 1e-3, res["variances"]  # drawn, not blank
    assert all(r.startswith("data:") for r in res["refs"])  # nothing to fetch: opens offline
    assert "statistics pooled over the compared datasets" in page.read_text()  # bex coverage's default frame
    # the rank correlation on the page is Spearman's on (Shannon coverage, mean return)
    cov = {r["dataset"]: r["shannon"]["value"] for r in json.loads((run / "coverage" / "coverage.json").read_text())
           ["datasets"]}
    rho = spearmanr([cov[x] for x in LABELS], [np.mean(RETURNS[x]) for x in LABELS]).statistic
    assert summary["rank_correlation"]["rho"] == pytest.approx(rho) and summary["rank_correlation"]["n"] == 3
    # a second report reuses the cached coverage (same numbers, no recomputation message)
    p2 = subprocess.run([BEX, "report", str(run), "--out", str(tmp_path / "again.html"), "--max-states", "120",
                         "--map-states", "150"], capture_output=True, text=True, timeout=600)
    assert p2.returncode == 0 and "figures" not in p2.stderr and "[report] figures" in p.stderr


def test_the_page_check_catches_script_errors_remote_resources_and_blank_plots(tmp_path):
    """The browser check can fail: a page with a script error, a remote image (offline) and a blank image."""
    import matplotlib

    matplotlib.use("Agg")
    import base64

    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(3, 2))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    blank = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    page = tmp_path / "bad.html"
    page.write_text(f'<html><body><img alt="blank" src="{blank}"><img alt="remote" '
                    f'src="http://127.0.0.1:9/x.png" width="200" height="200"><script>undefinedFn()</script>'
                    f'</body></html>')
    res = load_page(page)
    methods = {e["method"] for e in res["errors"]}
    assert "Runtime.exceptionThrown" in methods and ("Network.loadingFailed" in methods
                                                     or "Log.entryAdded" in methods)
    assert res["variances"][0] < 1e-6 and not res["images"][1]["ok"]


def test_aggregates_are_per_task_iqm_then_their_mean_and_the_rank_correlation():
    """Every task weighs the same: the IQM of each task's normalised scores, then their mean (an extra seed in one
    cell stays: the strata need not be the same size)."""
    from bex.analysis.analyze import aggregates, rank_correlation
    from bex.analysis.claims import Table
    from bex.analysis.units import normalised

    rng = np.random.default_rng(0)
    values = {(r, t, "td3"): list(rng.uniform(0, 1000, 5)) for r in ("a", "b") for t in ("walker_stand", "walker_run")}
    values[("a", "walker_stand", "td3")].append(999.0)
    agg = aggregates(Table(values), reps=300)["td3"]
    assert agg["tasks"] == ["walker_run", "walker_stand"]
    for r in ("a", "b"):
        want = np.mean([trim_mean([normalised(x, t) for x in values[(r, t, "td3")]], 0.25)
                        for t in ("walker_stand", "walker_run")])
        f = agg["datasets"][r]
        assert f["value"] == pytest.approx(want) and f["lo"] <= f["value"] <= f["hi"] and f["hi"] > f["lo"]
    c = rank_correlation([1, 2, 3, 4, 5], [10, 20, 30, 50, 40])
    assert c["rho"] == pytest.approx(0.9) and -1 <= c["lo"] <= c["hi"] <= 1
    assert rank_correlation([1, 2], [2, 1])["rho"] is None


def test_bex_analyze_page_combines_shards_and_opens_offline_in_chromium(tmp_path):
    """``bex analyze`` over trials.csv alone writes report.html: Table 1, the claims and the coverage of two shards
    combined over collection seeds (mean and t interval, computed here); pooled-standardiser shards are refused."""
    import re

    from scipy import stats as st

    from tests.test_analyze import FINAL, write_trials

    trials = write_trials(tmp_path / "trials.csv")
    names = sorted({d for d, _ in FINAL})
    shannon = {0: {d: 1.0 + i for i, d in enumerate(names)}, 1: {d: 2.0 + 3 * i for i, d in enumerate(names)}}
    cfg = {"standardiser": "fixed", "space": "physics", "max_states": 500}
    for shard, vals in shannon.items():
        rows = [{"dataset": d, "states": 500, "space": "physics",
                 "shannon": {"value": v, "lo": v - 0.5, "hi": v + 0.5}} for d, v in vals.items()]
        (tmp_path / f"cov{shard}.json").write_text(json.dumps({"config": cfg, "datasets": rows}))
    out = tmp_path / "a"
    p = subprocess.run([BEX, "analyze", str(trials), "--coverage", str(tmp_path / "cov0.json"), "--coverage",
                        str(tmp_path / "cov1.json"), "--out", str(out), "--score-last", "2"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.splitlines()[-1])["report"] == str(out / "report.html")
    res = load_page(out / "report.html")
    assert res["errors"] == [] and all(r.startswith("data:") for r in res["refs"])
    tables = dict(res["rows"])
    for table in ("coverage-table", "results-table", "aggregate-table"):
        assert sorted(tables[table]) == names, table
    assert "claims-table" in tables and min(res["variances"]) > 1e-3
    text = (out / "report.html").read_text()
    assert "fixed reference" in text and "mean over 2 collection seeds" in text and "in physics space" in text
    x = np.array([shannon[0]["smm"], shannon[1]["smm"]])
    half = st.t.ppf(0.975, 1) * x.std(ddof=1) / np.sqrt(2)
    cell = re.search(r'data-dataset="smm"><td>smm</td><td>500</td><td>([^<]+) <small>\[([^,]+), ([^\]]+)\]', text)
    assert [float(v) for v in cell.groups()] == pytest.approx([x.mean(), x.mean() - half, x.mean() + half], rel=1e-2)
    pooled = tmp_path / "pooled.json"
    pooled.write_text((tmp_path / "cov1.json").read_text().replace('"fixed"', '"pooled"'))
    r = subprocess.run([BEX, "analyze", str(trials), "--coverage", str(tmp_path / "cov0.json"), "--coverage",
                        str(pooled), "--out", str(tmp_path / "b")], capture_output=True, text=True, timeout=300)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "standardiser 'pooled'" in lines[0], r.stderr[-2000:]
    assert not (tmp_path / "b").exists()


def test_bex_report_bad_input_is_one_line(tmp_path):
    (tmp_path / "plain").mkdir()
    for args, needle in [([str(tmp_path / "plain"), "--out", str(tmp_path / "p.html")], "is not a sweep"),
                         ([str(tmp_path / "plain"), "--out", str(tmp_path / "p.txt")], "must end in .html"),
                         ([str(tmp_path / "plain"), "--out", str(tmp_path / "p.html"), "--figure", "nope"],
                          "unknown --figure 'nope'")]:
        p = subprocess.run([BEX, "report", *args], capture_output=True, text=True, timeout=300)
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, p.stderr[-2000:])
    assert sorted(x.name for x in tmp_path.iterdir()) == ["plain"]
