"""k-NN entropy estimators against closed forms, numerical integrals and identities."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.spatial.distance import cdist
from scipy.special import digamma, gammaln

from bex.entropy import default_beta, knn_behavioral_entropy, knn_renyi_entropy, knn_shannon_entropy, prelec_weight
from bex.entropy.estimators import log_unit_ball_volume

K = 5
N = 20_000


def gaussian(n: int, d: int, sigma: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, sigma, size=(n, d))


def shannon_gaussian(d: int, sigma: float) -> float:
    return 0.5 * d * math.log(2 * math.pi * math.e * sigma ** 2)


def renyi_gaussian(d: int, sigma: float, q: float) -> float:
    return 0.5 * d * math.log(2 * math.pi * sigma ** 2) + d * math.log(q) / (2 * (q - 1))


def be_gaussian(d: int, sigma: float, alpha: float) -> float:
    """-∫ w(f) log w(f) dx for an isotropic Gaussian, by radial quadrature (needs max f <= 1)."""
    b = default_beta(alpha)
    u0 = 0.5 * d * math.log(2 * math.pi * sigma ** 2)
    assert u0 >= 0, "test density must be <= 1"
    log_surface = math.log(2) + 0.5 * d * math.log(math.pi) - float(gammaln(0.5 * d))

    def integrand(r: float) -> float:
        u = u0 + r * r / (2 * sigma ** 2)  # -log f at radius r, exact (no underflow)
        return math.exp(-b * u ** alpha) * b * u ** alpha * math.exp(log_surface) * r ** (d - 1)

    return integrate.quad(integrand, 0, np.inf, limit=400)[0]


def be_uniform(volume: float, alpha: float) -> float:
    """BE of the uniform density 1/V on a set of volume V >= 1: V * (-w log w)(1/V)."""
    b = default_beta(alpha)
    u = math.log(volume)
    return volume * math.exp(-b * u ** alpha) * b * u ** alpha


def rel(est: float, truth: float) -> float:
    return abs(est / truth - 1.0)


# --------------------------------------------------------------- Prelec weight
def test_default_beta_matches_reference_table():
    table = {0.2: 4.33, 0.5: 2.50, 0.7: 1.73, 0.9: 1.20, 1.0: 1.0, 1.5: 0.40, 2: 0.16, 3: 0.026, 5: 0.00066}
    for alpha, beta in table.items():
        assert default_beta(alpha) == pytest.approx(beta, rel=0.02)
    for alpha in (0.2, 0.5, 2.0, 5.0):
        assert prelec_weight(1 / 512, alpha) == pytest.approx(1 / 512, rel=1e-12)  # w(1/M) = 1/M


def test_prelec_weight_values():
    p = np.array([1e-6, 0.1, 0.5, 1.0])
    assert np.allclose(prelec_weight(p, 1.0, 1.0), p)
    assert np.allclose(prelec_weight(p, 2.0, 0.3), np.exp(-0.3 * np.log(p) ** 2))
    assert prelec_weight(0.0, 0.5) == 0.0
    # alpha < 1 inflates small probabilities (the paper's "coarse coverage" regime)
    assert prelec_weight(1e-3, 0.5) > 1e-3 > prelec_weight(1e-3, 2.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, 10.5, float("nan")])
def test_alpha_out_of_range(bad):
    with pytest.raises(ValueError, match="alpha="):
        prelec_weight(0.5, bad)
    with pytest.raises(ValueError, match="alpha="):
        knn_behavioral_entropy(gaussian(50, 1, 1.0), 3, alpha=bad)


# ----------------------------------------------------- closed-form convergence
@pytest.mark.parametrize("d", [1, 2, 5])
def test_shannon_gaussian_closed_form(d):
    x = gaussian(N, d, 2.0, seed=d)
    assert rel(knn_shannon_entropy(x, K), shannon_gaussian(d, 2.0)) < 0.02


@pytest.mark.parametrize("d", [1, 2])
def test_shannon_uniform_closed_form(d):
    x = np.random.default_rng(10 + d).uniform(0.0, 3.0, size=(N, d))
    assert rel(knn_shannon_entropy(x, K), d * math.log(3.0)) < 0.02


@pytest.mark.parametrize("d", [1, 2, 5])
@pytest.mark.parametrize("q", [0.5, 1.1, 2.0])
def test_renyi_gaussian_closed_form(d, q):
    x = gaussian(N, d, 2.0, seed=d)
    assert rel(knn_renyi_entropy(x, K, q), renyi_gaussian(d, 2.0, q)) < 0.06


@pytest.mark.parametrize("q", [0.5, 1.1, 2.0])
def test_renyi_uniform_is_log_volume(q):
    x = np.random.default_rng(3).uniform(0.0, 3.0, size=(N, 2))
    assert rel(knn_renyi_entropy(x, K, q), 2 * math.log(3.0)) < 0.06


# 1-D sigma = 2 and 2-D sigma = 1 keep the density below 1 and away from the tails regime
BE_CASES = [(1, 2.0), (2, 1.0)]


@pytest.mark.parametrize("d,sigma", BE_CASES)
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("bias_correction", [False, True])
def test_behavioral_entropy_gaussian_quadrature(d, sigma, alpha, bias_correction):
    x = gaussian(N, d, sigma, seed=d + 7)
    est = knn_behavioral_entropy(x, K, alpha, bias_correction=bias_correction)
    assert rel(est, be_gaussian(d, sigma, alpha)) < 0.08


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_behavioral_entropy_uniform(d, alpha):
    volume = 10.0
    x = np.random.default_rng(20 + d).uniform(0.0, volume ** (1 / d), size=(N, d))
    assert rel(knn_behavioral_entropy(x, K, alpha), be_uniform(volume, alpha)) < 0.08


def test_be_quadrature_helper_alpha1_is_shannon():
    # sanity of the reference integral itself: w(p) = p for alpha = beta = 1 (default beta(1) = 1)
    assert be_gaussian(2, 1.0, 1.0) == pytest.approx(shannon_gaussian(2, 1.0), rel=1e-7)


def mean_abs_rel_error(estimate, truth, n, seeds=4, d=2, sigma=1.0):
    return np.mean([rel(estimate(gaussian(n, d, sigma, seed=100 + s)), truth) for s in range(seeds)])


def test_error_shrinks_with_n():
    sh = lambda x: knn_shannon_entropy(x, K)  # noqa: E731
    ry = lambda x: knn_renyi_entropy(x, K, 2.0)  # noqa: E731
    be = lambda x: knn_behavioral_entropy(x, K, 0.5, bias_correction=True)  # noqa: E731
    for est, truth in [(sh, shannon_gaussian(2, 1.0)), (ry, renyi_gaussian(2, 1.0, 2.0)),
                       (be, be_gaussian(2, 1.0, 0.5))]:
        small = mean_abs_rel_error(est, truth, 300)
        large = mean_abs_rel_error(est, truth, N)
        assert large < small / 2, (small, large)


# ------------------------------------------------------------------ identities
def test_be_alpha1_is_naive_plugin_and_kl_offset():
    n, d = 600, 3
    x = gaussian(n, d, 1.5, seed=5)
    dist = cdist(x, x)
    np.fill_diagonal(dist, np.inf)
    r = np.sort(dist, axis=1)[:, K - 1]  # k-th neighbour among the others, brute force
    log_f = math.log(K) - math.log(n) - log_unit_ball_volume(d) - d * np.log(r)
    plugin = float(np.mean(-log_f))
    kl = knn_shannon_entropy(x, K)
    assert knn_behavioral_entropy(x, K, alpha=1.0, beta=1.0) == pytest.approx(plugin, abs=1e-10)
    offset = (math.log(n) - digamma(n)) - (math.log(K) - digamma(K))
    assert plugin - kl == pytest.approx(offset, abs=1e-10)
    # with the digamma correction the alpha = beta = 1 case is Kozachenko-Leonenko exactly
    assert knn_behavioral_entropy(x, K, 1.0, 1.0, bias_correction=True) == pytest.approx(kl, abs=1e-10)
    # and KL itself matches its formula on the brute-force radii
    assert kl == pytest.approx(digamma(n) - digamma(K) + log_unit_ball_volume(d) + d * np.mean(np.log(r)),
                               abs=1e-10)


def test_renyi_tends_to_shannon():
    n = 2000
    x = gaussian(n, 2, 1.0, seed=9)
    kl = knn_shannon_entropy(x, K)
    # LPS's q -> 1 limit is KL with psi(n) replaced by log(n - 1)
    limit = kl + math.log(n - 1) - digamma(n)
    gaps = [abs(knn_renyi_entropy(x, K, 1 + eps) - limit) for eps in (0.1, 0.01, 1e-3, 1e-5)]
    assert all(a > b for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 1e-4
    assert abs(knn_renyi_entropy(x, K, 1 - 1e-5) - limit) < 1e-4
    assert abs(limit - kl) < 1e-3


def test_uniform_renyi_equals_shannon_all_orders():
    # every Rényi entropy of a uniform density is log(volume): a q-independence check
    x = np.random.default_rng(4).uniform(0, 2.0, size=(N, 1))
    vals = [knn_renyi_entropy(x, K, q) for q in (0.5, 2.0, 3.0)]
    assert np.ptp(vals) < 0.02


# ------------------------------------------------------------------- bad input
def test_bad_input_messages():
    x = gaussian(100, 2, 1.0)
    with pytest.raises(ValueError, match=r"q=1\.0 .*q != 1"):
        knn_renyi_entropy(x, K, 1.0)
    with pytest.raises(ValueError, match="q=0"):
        knn_renyi_entropy(x, K, 0.0)
    with pytest.raises(ValueError, match="k=100 .*1 <= k < 100"):
        knn_shannon_entropy(x, 100)
    with pytest.raises(ValueError, match="k=0"):
        knn_shannon_entropy(x, 0)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        knn_shannon_entropy(bad, K)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        knn_behavioral_entropy(bad, K, 0.5)
    with pytest.raises(ValueError, match="shape"):
        knn_shannon_entropy(np.zeros((4, 2, 2)), 1)
    with pytest.raises(ValueError, match="distance 0"):
        knn_shannon_entropy(np.zeros((10, 2)), 2)
