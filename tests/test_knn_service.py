"""KnnService: core logic without Ray, then the real actor on a local Ray cluster."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from bex.cluster.knn_service import SNAPSHOT_FILE, KnnServiceCore
from bex.entropy import RewardConfig, knn_reward

DIM = 32


def vecs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def brute_window(stored: np.ndarray, queries: np.ndarray, k: int, own_rows=None) -> np.ndarray:
    d = np.linalg.norm(queries[:, None, :].astype(np.float64) - stored[None].astype(np.float64), axis=-1)
    if own_rows is not None:
        d[np.arange(len(queries)), own_rows] = np.inf
    return np.sort(d, axis=1)[:, :k]


def urlb_batch(rep: np.ndarray, k: int) -> np.ndarray:
    t = torch.from_numpy(rep)
    b = t.size(0)
    sim = torch.norm(t[:, None, :].view(b, 1, -1) - t[None, :, :].view(1, b, -1), dim=-1, p=2)
    return sim.topk(k, dim=1, largest=False, sorted=True)[0].numpy()


# ------------------------------------------------------------------ core, no Ray
def test_core_modes_match_brute_force():
    core = KnnServiceCore(DIM, capacity=150)
    hist = [vecs(60, s) for s in range(3)]  # 180 > capacity: wraps
    for i, h in enumerate(hist):
        d = core.knn("r", h, 5, mode="window", add=True)
    stored = np.concatenate(hist)[-150:]
    np.testing.assert_allclose(d, brute_window(stored, hist[-1], 5, own_rows=np.arange(90, 150)), rtol=1e-5, atol=1e-5)
    q = vecs(10, 99)
    np.testing.assert_allclose(core.knn("r", q, 5, add=False), brute_window(stored, q, 5), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(core.knn("r", q, 4, mode="batch"), urlb_batch(q, 4), rtol=1e-5, atol=1e-5)
    assert core.size("r") == 150  # batch mode and add=False store nothing


def test_core_rewards_equal_transform_of_brute_force():
    core = KnnServiceCore(DIM, capacity=1000)
    core.add("r", vecs(200, 0))
    x = vecs(64, 1)
    cfg = RewardConfig(objective="be", k=6, alpha=0.5)
    r = core.rewards("r", x, cfg, mode="window")
    stored = np.concatenate([vecs(200, 0), x])
    ref = knn_reward(brute_window(stored, x, 6, own_rows=np.arange(200, 264)), "be", alpha=0.5)
    np.testing.assert_allclose(r, ref, rtol=1e-5)
    rb = core.rewards("r", x, {"objective": "renyi", "q": 1.1, "k": 12}, mode="batch")
    np.testing.assert_allclose(rb, knn_reward(urlb_batch(x, 12), "renyi", q=1.1), rtol=1e-5)


def test_core_inserts_are_idempotent():
    core = KnnServiceCore(DIM, capacity=500)
    core.add("r", vecs(50, 0), seq="a")
    x = vecs(20, 1)
    first = core.knn("r", x, 3, seq="b")
    core._results.clear()  # force recomputation: the insert must still not repeat
    again = core.knn("r", x, 3, seq="b")
    assert core.size("r") == 70 and core.add("r", vecs(50, 0), seq="a") == 70
    np.testing.assert_array_equal(first, again)  # own copies excluded both times


def test_core_snapshot_restore_atomic(tmp_path):
    core = KnnServiceCore(DIM, capacity=100, snapshot_dir=tmp_path, snapshot_every_s=0.0)
    core.add("a", vecs(130, 0), seq=1)
    core.add("b", vecs(10, 1), seq=1)
    rms_cfg = RewardConfig(objective="shannon", k=3, rms=True)
    core.rewards("a", vecs(5, 2), rms_cfg, add=False)
    assert sorted(os.listdir(tmp_path)) == [SNAPSHOT_FILE]  # no temp file left behind
    again = KnnServiceCore(DIM, capacity=100, snapshot_dir=tmp_path)
    assert again.restored and again.info()["runs"] == {"a": 100, "b": 10}
    q = vecs(7, 3)
    np.testing.assert_array_equal(again.knn("a", q, 4, add=False), core.knn("a", q, 4, add=False))
    np.testing.assert_array_equal(again.rewards("a", q, rms_cfg, add=False), core.rewards("a", q, rms_cfg, add=False))
    assert again.add("a", vecs(130, 0), seq=1) == 100 and again.info()["written"]["a"] == 130  # seq restored
    with pytest.raises(ValueError, match="dim=32"):
        KnnServiceCore(DIM + 1, snapshot_dir=tmp_path)


def test_core_bad_input():
    core = KnnServiceCore(DIM, capacity=100)
    core.add("r", vecs(5, 0))
    with pytest.raises(ValueError, match=rf"shape \(4, {DIM + 1}\)"):
        core.knn("r", np.zeros((4, DIM + 1)), 2)
    bad = vecs(4, 1)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        core.add("r", bad)
    with pytest.raises(ValueError, match=r"k=5 .*5 stored"):
        core.knn("r", vecs(1, 2), 5, add=False)
    with pytest.raises(ValueError, match=r"k=9 .*at most 8 stored"):
        core.knn("r", vecs(3, 2), 9)
    assert core.size("r") == 5  # rejected before inserting
    with pytest.raises(ValueError, match="mode='global'"):
        core.knn("r", vecs(1, 2), 1, mode="global")
    with pytest.raises(ValueError, match="alpha=0"):
        core.rewards("r", vecs(3, 2), {"alpha": 0.0, "k": 2})
    with pytest.raises(ValueError, match="q=1"):
        core.rewards("r", vecs(3, 2), {"objective": "renyi", "q": 1.0, "k": 2})


# ------------------------------------------------------------------- real Ray
@pytest.fixture(scope="module")
def ray_cluster():
    from bex.cluster.runtime import init_ray

    ray = init_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_service_named_modes_and_errors(ray_cluster, tmp_path):
    from bex.cluster.knn_service import KnnClient, get_knn_service

    client = KnnClient(DIM, capacity=400, snapshot_dir=tmp_path, name="knn-modes", namespace="bex-test")
    same = get_knn_service(DIM, name="knn-modes", namespace="bex-test")
    assert same._actor_id == client.handle._actor_id  # get_if_exists: one actor per name
    with pytest.raises(ValueError, match="dim=32"):
        get_knn_service(DIM * 2, name="knn-modes", namespace="bex-test")
    x = vecs(128, 0)
    np.testing.assert_allclose(client.knn("r", x, 12, mode="batch"), urlb_batch(x, 12), rtol=1e-5, atol=1e-5)
    client.add("r", vecs(300, 1))
    d = client.knn("r", x, 5)
    stored = np.concatenate([vecs(300, 1), x])[-400:]
    np.testing.assert_allclose(d, brute_window(stored, x, 5, own_rows=np.arange(272, 400)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="NaN or inf"):
        client.knn("r", np.full((2, DIM), np.inf), 3)
    with pytest.raises(ValueError, match=r"shape"):
        client.add("r", np.zeros((2, DIM + 3)))
    with pytest.raises(ValueError, match=r"k=401"):
        client.knn("r", x[:2], 401, add=False)
    ray_cluster.kill(client.handle, no_restart=True)


@pytest.mark.ray
def test_service_survives_kill_and_restores_window(ray_cluster, tmp_path):
    from bex.cluster.knn_service import KnnClient

    client = KnnClient(DIM, capacity=1000, snapshot_dir=tmp_path, snapshot_every_s=0.0,
                       name="knn-kill", namespace="bex-test", backoff_s=0.2)
    batches = [vecs(100, s) for s in range(4)]
    cfg = RewardConfig(objective="be", alpha=0.5, k=5)
    for b in batches[:3]:
        client.rewards("run0", b, cfg)
    assert client.info()["runs"] == {"run0": 300} and not client.info()["reconstructed"]

    ray_cluster.kill(client.handle, no_restart=False)  # mid-use: the next call lands during the restart
    r = client.rewards("run0", batches[3], cfg)
    info = client.info()
    assert info["reconstructed"] and info["restored"]
    assert info["runs"] == {"run0": 400}  # the 300 snapshotted vectors came back, + this call's 100
    stored = np.concatenate(batches)
    ref = knn_reward(brute_window(stored, batches[3], 5, own_rows=np.arange(300, 400)), "be", alpha=0.5)
    np.testing.assert_allclose(r, ref, rtol=1e-5)
    t0 = time.time()
    for s in range(5, 8):  # keeps serving
        client.add("run0", vecs(10, s))
    assert client.info()["runs"] == {"run0": 430} and time.time() - t0 < 30

    # a permanent death: the client looks the name up again, a new actor restores the snapshot
    ray_cluster.kill(client.handle, no_restart=True)
    assert client.add("run0", vecs(10, 9)) == 440
    assert client.retried >= 1 and client.info()["restored"]
    ray_cluster.kill(client.handle, no_restart=True)
