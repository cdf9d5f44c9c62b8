"""Residual-aware interaction score and the functional-ANOVA purification of pair subnetworks."""

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from workbench.datasets import make_additive
from workbench.nam import LaplaceAdditiveRegressor
from workbench.nam.interactions import pair_basis, residual_interaction_information
from workbench.nam.modules import MLPGroup
from workbench.nam.purification import marginal_samples, pair_grand_mean, pair_marginal

FAST = dict(n_epochs=40, n_epochs_burnin=10, marglik_frequency=10, n_hidden=16, batch_size=256,
            lr=2e-2, n_threads=1)


def test_residual_score_equals_partial_r2_of_weighted_least_squares():
    g = np.random.default_rng(0)
    n, f, b = 60, 4, 2
    u = torch.as_tensor(g.standard_normal((n, f, b)))
    design = torch.as_tensor(np.column_stack([np.ones(n), g.standard_normal((n, 3))]))
    resid = torch.as_tensor(g.standard_normal((n, 2)))
    weight = torch.as_tensor(g.uniform(0.2, 1.0, (n, 2)))
    mi, rho = residual_interaction_information(u, design, resid, weight, chunk=2)  # chunks split pairs
    pairs = torch.triu_indices(f, f, offset=1).T
    z_all = pair_basis(u, pairs).numpy()  # (P, N, b*b)
    for p, (i, j) in enumerate(pairs.tolist()):
        ref_mi = 0.0
        for k in range(2):
            sw = np.sqrt(weight[:, k].numpy())
            r, a = resid[:, k].numpy() * sw, design.numpy() * sw[:, None]
            z = z_all[p] * sw[:, None]
            assert np.allclose(z / sw[:, None], np.stack([u[:, i, x] * u[:, j, y] for x in range(b) for y in range(b)], 1))
            rss_a = np.sum((r - a @ np.linalg.lstsq(a, r, rcond=None)[0]) ** 2)
            az = np.column_stack([a, z])
            rss_az = np.sum((r - az @ np.linalg.lstsq(az, r, rcond=None)[0]) ** 2)
            r2 = 1 - rss_az / rss_a  # partial R^2 of the pair's product terms given the additive design
            ref_mi += -0.5 * np.log(1 - r2)
            if k == 0:
                assert float(rho[i, j]) == pytest.approx(np.sqrt(r2), rel=1e-6)
        assert float(mi[i, j]) == pytest.approx(ref_mi, rel=1e-6) and float(mi[j, i]) == float(mi[i, j])
    assert (torch.diagonal(mi) == 0).all()


def test_pair_marginals_match_autograd_reference():
    torch.manual_seed(0)
    group = MLPGroup(3, 2, 2, n_hidden=5, dtype=torch.float64)
    grid = torch.randn(7, 3, dtype=torch.float64)
    samples = torch.randn(11, 3, dtype=torch.float64)
    params = {k: v.detach() for k, v in group.named_parameters()}
    for side in (0, 1):
        mean, jac = pair_marginal(group, grid, samples, side, chunk=3)

        def avg(p, side=side):
            inp = torch.empty(7, 11, 3, 2, dtype=torch.float64)
            inp[..., side], inp[..., 1 - side] = grid[:, None, :], samples[None]
            return functional_call(group, p, (inp.reshape(-1, 3, 2),)).reshape(7, 11, 3, 2).mean(1)

        assert torch.allclose(mean, avg(params))
        dense = jacrev(avg)(params)  # name -> (7, 3, K, *param.shape)
        for s in range(3):
            ref = torch.cat([dense[nm][:, s, :, s].reshape(7, 2, -1) for nm in ("w1", "b1", "w2", "b2")], -1)
            assert torch.allclose(jac[:, s], ref)
    both = torch.stack([samples, samples.flip(0)], -1)  # (M, Q, 2)
    h0, j0 = pair_grand_mean(group, both)
    m_ref, _ = pair_marginal(group, both[:, :, 0], both[:, :, 1], 0)
    assert torch.allclose(h0, m_ref.mean(0)) and j0.shape == (3, 2, group.n_params)
    x = torch.arange(10.0).reshape(5, 2)
    assert torch.equal(marginal_samples(x, 3), x[[0, 2, 4]]) and torch.equal(marginal_samples(x, 10), x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_pair_ranks_first_and_is_no_outlier_without_interaction(seed):
    scores = {}
    for strength in (1.5, 0.0):
        d = make_additive(600, 4, 2, interaction=(0, 1), pair_correlation=0.6, interaction_strength=strength,
                          random_state=seed)
        table = LaplaceAdditiveRegressor(**FAST, random_state=seed).fit(d.X, d.y).rank_interactions().table
        is_pair = [{a, b} == set(d.truth.pair) for a, b in zip(table.feature_i, table.feature_j)]
        scores[strength] = (table.mutual_information[is_pair].iloc[0], table.mutual_information[~np.array(is_pair)])
    planted, others = scores[1.5]
    assert planted > 5 * others.max()  # first, by a wide margin
    control, others0 = scores[0.0]
    assert control < 3 * others0.median() and control < planted / 10  # correlated inputs alone: no outlier


def test_purified_main_effects_recover_the_true_shapes_of_the_pair():
    d = make_additive(800, 3, 0, interaction=(0, 1), pair_correlation=0.6, interaction_strength=2.0, noise=0.2,
                      random_state=5)
    est = LaplaceAdditiveRegressor(**{**FAST, "n_epochs": 80}).fit(d.X, d.y)

    def error(purified):
        sf = est.shape_functions(grid=30)
        truth = d.truth.shape_functions(sf["x_value"], d.X, purified=purified)
        return np.sqrt(((truth - sf["mean"]) ** 2).sel(feature=list(d.truth.pair)).mean()).item()

    stage1 = error(False)
    est.fit_interactions(1, n_epochs=80)
    assert error(True) < 0.5 * stage1  # the pair's main effects no longer absorb the interaction
    inter = est.interaction_functions(d.truth.pair, n_points=15)
    assert np.abs(inter["mean"].mean("x_j")).max() < np.abs(inter["mean"]).max()  # a pure interaction
    sf = est.shape_functions(grid=10)
    assert (sf["std"].sel(feature=list(d.truth.pair)) > 0).all()
