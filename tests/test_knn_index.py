"""KnnIndex: exact against brute force (numpy window, URLB's torch batch), errors, threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from bex.entropy import KnnIndex


def brute_force_window(stored: np.ndarray, queries: np.ndarray, k: int, own_rows=None) -> np.ndarray:
    d = np.sqrt(((queries[:, None, :].astype(np.float64) - stored[None].astype(np.float64)) ** 2).sum(-1))
    if own_rows is not None:
        d[np.arange(len(queries)), own_rows] = np.inf
    return np.sort(d, axis=1)[:, :k]


def urlb_batch_knn(rep: torch.Tensor, k: int) -> torch.Tensor:
    b = rep.size(0)
    sim = torch.norm(rep[:, None, :].view(b, 1, -1) - rep[None, :, :].view(1, b, -1), dim=-1, p=2)
    return sim.topk(k, dim=1, largest=False, sorted=True)[0]


def test_window_equals_brute_force_numpy_after_wrap():
    rng = np.random.default_rng(0)
    dim, cap, k = 16, 300, 7
    index = KnnIndex(dim, cap)
    history = []
    for _ in range(5):  # 5 x 110 = 550 vectors: the ring wraps
        chunk = rng.standard_normal((110, dim)).astype(np.float32)
        slots = index.add("run", chunk)
        history.append(chunk)
    stored = np.concatenate(history)[-cap:]
    assert index.size("run") == cap and index.written("run") == 550
    dist, idx = index.search("run", chunk, k, self_slots=slots)
    # the last chunk is the last 110 rows of `stored`
    ref = brute_force_window(stored, chunk, k, own_rows=np.arange(cap - 110, cap))
    np.testing.assert_allclose(dist, ref, rtol=1e-5, atol=1e-5)
    # returned slots point at vectors at exactly those distances
    ring = index.vectors("run")
    np.testing.assert_allclose(np.linalg.norm(ring[idx] - chunk[:, None], axis=-1), dist, rtol=1e-5, atol=1e-5)
    # add_and_search = add + search excluding own copies
    again = KnnIndex(dim, cap)
    for chunk_i in history:
        d2, _ = again.add_and_search("run", chunk_i, k)
    np.testing.assert_array_equal(d2, dist)
    with pytest.raises(ValueError, match=r"k=400 .*300 vectors"):
        again.add_and_search("run", chunk, 400)
    assert again.written("run") == 550  # rejected before inserting
    # queries that are not stored: plain k-NN over the window
    fresh = rng.standard_normal((20, dim)).astype(np.float32)
    np.testing.assert_allclose(index.search("run", fresh, k)[0], brute_force_window(stored, fresh, k),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [1, 5, 12])
def test_batch_mode_equals_urlb_torch_norm_topk(k):
    rep = torch.tanh(torch.randn(256, 64, generator=torch.Generator().manual_seed(k)) * 3)
    dist, idx = KnnIndex(64, 10).search_batch(rep.numpy(), k, include_self=True)
    ref = urlb_batch_knn(rep, k).numpy()
    np.testing.assert_allclose(dist, ref, rtol=1e-5, atol=1e-5)
    assert np.all(dist[:, 0] == 0) and np.all(idx[:, 0] == np.arange(256))
    # without self: the k nearest others = URLB's k+1 minus the self column
    dist2, _ = KnnIndex(64, 10).search_batch(rep.numpy(), k, include_self=False)
    np.testing.assert_allclose(dist2, urlb_batch_knn(rep, k + 1).numpy()[:, 1:], rtol=1e-5, atol=1e-5)


def test_duplicates_are_neighbours_at_zero():
    index = KnnIndex(4, 10)
    x = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 3, 0, 0]], np.float32)
    slots = index.add("a", x)
    dist, _ = index.search("a", x[:2], 2, self_slots=slots[:2])
    np.testing.assert_allclose(dist, [[0, 1], [0, 1]])


def test_runs_are_independent_and_state_round_trips():
    rng = np.random.default_rng(1)
    index = KnnIndex(8, 50)
    a, b = rng.standard_normal((40, 8)), rng.standard_normal((70, 8)) + 100
    index.add("a", a)
    index.add("b", b)
    assert index.runs() == ["a", "b"] and index.size("b") == 50
    q = rng.standard_normal((5, 8))
    np.testing.assert_allclose(index.search("a", q, 3)[0], brute_force_window(a, q, 3), rtol=1e-5)
    clone = KnnIndex(8, 50)
    clone.load_state_dict(index.state_dict())
    for run in ("a", "b"):
        np.testing.assert_array_equal(clone.search(run, q, 3)[0], index.search(run, q, 3)[0])
    assert clone.written("b") == 70
    # a smaller capacity keeps the most recent vectors
    small = KnnIndex(8, 20)
    small.load_state_dict(index.state_dict())
    np.testing.assert_allclose(small.search("b", q, 3)[0], brute_force_window(b[-20:], q, 3), rtol=1e-5)


def test_bad_input_messages():
    index = KnnIndex(8, 20)
    with pytest.raises(ValueError, match=r"shape \(3, 7\).*\(n, 8\)"):
        index.add("a", np.zeros((3, 7)))
    bad = np.zeros((3, 8))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        index.add("a", bad)
    bad[1, 2] = -np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        index.search_batch(bad, 2)
    index.add("a", np.random.default_rng(0).standard_normal((5, 8)))
    with pytest.raises(ValueError, match=r"k=5 .*5 stored vectors.*1 <= k < 5"):
        index.search("a", np.zeros((1, 8)), 5)
    with pytest.raises(ValueError, match="run='nope'"):
        index.search("nope", np.zeros((1, 8)), 1)
    with pytest.raises(ValueError, match=r"k=4 .*batch of 3"):
        index.search_batch(np.random.default_rng(0).standard_normal((3, 8)), 4)
    with pytest.raises(ValueError, match="dim=0"):
        KnnIndex(0, 10)


def test_concurrent_adds_and_searches():
    dim, per_thread, threads = 8, 200, 4
    index = KnnIndex(dim, per_thread * threads)
    index.add("r", np.random.default_rng(9).standard_normal((10, dim)))
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            rng = np.random.default_rng(t)
            for _ in range(per_thread // 10):
                x = rng.standard_normal((10, dim)).astype(np.float32)
                x[:, 0] = 1000 * (t + 1)  # tag the thread
                index.add("r", x)
                index.search("r", x, 3)
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert index.written("r") == 10 + per_thread * threads
    tags = index.vectors("r")[:, 0]
    # capacity = per_thread * threads, 10 initial vectors overwritten: 10 rows went to the wrap-around
    counts = {t: int(np.sum(tags == 1000 * (t + 1))) for t in range(threads)}
    assert sum(counts.values()) == index.size("r") and all(c >= per_thread - 10 for c in counts.values())
