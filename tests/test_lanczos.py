"""Lanczos on Hessian-vector products against dense eigendecompositions, and the NuGAN nudge."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from gancollapse.optim.lanczos import hessian_eigenpairs, lanczos, unflatten
from gancollapse.optim.nudged_adam import NudgedAdam, project_out


def _small_problem():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    names = [n for n, _ in net.named_parameters()]
    params = [p for _, p in net.named_parameters()]

    def loss_of_flat(flat):
        return nn.functional.mse_loss(functional_call(net, dict(zip(names, unflatten(flat, params), strict=True)), (x,)), y)

    flat = torch.cat([p.detach().reshape(-1) for p in params])
    dense = hessian(loss_of_flat)(flat)
    loss = nn.functional.mse_loss(net(x), y)
    return loss, params, dense


def test_lanczos_matches_dense_hessian_eigvalsh():
    loss, params, dense = _small_problem()
    exact = torch.linalg.eigvalsh(dense).flip(0)
    assert dense.shape == (26, 26)
    # Full Krylov space: every Ritz value is exact.
    pairs, _ = hessian_eigenpairs(loss, params, k=5, iterations=26)
    torch.testing.assert_close(pairs.values, exact[:5], rtol=1e-8, atol=1e-10)
    # The NuGAN setting (20 iterations < 26 parameters) still pins the top eigenvalues.
    pairs, grad = hessian_eigenpairs(loss, params, k=3, iterations=20)
    torch.testing.assert_close(pairs.values, exact[:3], rtol=1e-6, atol=1e-8)
    # Ritz vectors are orthonormal eigenvectors of the dense Hessian.
    v = pairs.vectors
    torch.testing.assert_close(v @ v.T, torch.eye(3, dtype=v.dtype), atol=1e-8, rtol=0)
    torch.testing.assert_close(v @ dense, pairs.values[:, None] * v, atol=1e-6, rtol=1e-6)
    assert grad.shape == (26,)


def test_lanczos_largest_magnitude_and_breakdown():
    evals = torch.tensor([-9.0, 5.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    a = q @ torch.diag(evals) @ q.T
    la = lanczos(lambda v: a @ v, 6, k=2, iterations=6, which="LA", dtype=torch.float64)
    lm = lanczos(lambda v: a @ v, 6, k=2, iterations=6, which="LM", dtype=torch.float64)
    torch.testing.assert_close(la.values, torch.tensor([5.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(lm.values, torch.tensor([-9.0, 5.0], dtype=torch.float64))
    # A start vector inside a 2-d invariant subspace stops after 2 steps with exact values.
    v0 = q[:, 1] + q[:, 3]
    pairs = lanczos(lambda v: a @ v, 6, k=2, iterations=6, v0=v0, dtype=torch.float64)
    assert pairs.iterations == 2
    torch.testing.assert_close(pairs.values, torch.tensor([5.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="iterations"):
        lanczos(lambda v: v, 6, k=5, iterations=3)


def test_project_out_removes_only_the_given_directions():
    v = torch.tensor([[0.6, 0.8, 0.0]], dtype=torch.float64)
    g = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    out = project_out(g, v)
    torch.testing.assert_close(out, g - 2.2 * v[0])
    assert abs(float(out @ v[0])) < 1e-12
    torch.testing.assert_close(project_out(g, v[:0]), g)


def test_nudge_removes_exactly_the_sharp_eigen_direction():
    gen = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=gen))
    a = q @ torch.diag(torch.tensor([1000.0, 10.0, 1.0, 0.1], dtype=torch.float64)) @ q.T
    b = torch.randn(4, dtype=torch.float64, generator=gen)
    theta = nn.Parameter(torch.randn(4, dtype=torch.float64, generator=gen))
    opt = NudgedAdam([theta], lr=0.1, k=2, iterations=4, threshold=500.0, every_n_steps=3, project="gradient")
    assert opt.due()
    loss = 0.5 * theta @ a @ theta + b @ theta
    report = opt.nudge(loss)
    g = (a @ theta + b).detach()
    v1 = q[:, 0]
    expected = g - (g @ v1) * v1
    torch.testing.assert_close(theta.grad, expected, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(report.eigenvalues, torch.tensor([1000.0, 10.0], dtype=torch.float64))
    assert report.fired.tolist() == [True, False]
    assert math.isclose(report.removed_norm, abs(float(g @ v1)), rel_tol=1e-9)
    metrics = report.as_metrics("nugan/g")
    assert metrics["nugan/g/fired"] == 1.0 and math.isclose(metrics["nugan/g/eig1"], 10.0, rel_tol=1e-9)
    opt.step()
    assert not opt.due() and opt.steps_taken == 1
    # Below threshold nothing is removed; the counters survive a state-dict round trip.
    opt2 = NudgedAdam([theta], lr=0.1, k=2, iterations=4, threshold=5000.0, project="gradient")
    opt2.nudge(0.5 * theta @ a @ theta + b @ theta)
    torch.testing.assert_close(theta.grad, (a @ theta + b).detach())
    opt2.load_state_dict(opt.state_dict())
    assert opt2.steps_taken == 1 and opt2.fired_total == 1


def _sharp_quadratic():
    gen = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=gen))
    a = q @ torch.diag(torch.tensor([1000.0, 10.0, 1.0, 0.1], dtype=torch.float64)) @ q.T
    b = torch.randn(4, dtype=torch.float64, generator=gen)
    theta0 = torch.randn(4, dtype=torch.float64, generator=gen)
    return a, b, theta0, q[:, 0]


@pytest.mark.parametrize("project", ["update", "gradient"])
def test_update_projection_stops_momentum_along_sharp_direction(project):
    """With momentum built by plain steps, only projecting the applied update (and the first moment) keeps
    the nudged step, and the ones after it, off the sharp eigenvector."""
    a, b, theta0, v1 = _sharp_quadratic()
    theta = nn.Parameter(theta0.clone())
    opt = NudgedAdam([theta], lr=0.01, betas=(0.9, 0.999), k=1, iterations=4, threshold=500.0,
                     every_n_steps=4, project=project)
    for step in range(6):
        before = theta.detach().clone()
        opt.zero_grad()
        loss = 0.5 * theta @ a @ theta + b @ theta
        if opt.due() and step > 0:
            opt.nudge(loss)
            opt.step()
            moved = float((theta.detach() - before) @ v1)
            moment = float(opt.state[theta]["exp_avg"] @ v1)
            if project == "update":
                assert abs(moved) < 1e-12 and abs(moment) < 1e-12
            else:  # the gradient's component is gone, the momentum's is not
                assert abs(moved) > 1e-4 and abs(moment) > 1e-4
            return
        loss.backward()
        opt.step()
    raise AssertionError("no nudge happened")


def test_nudged_adam_rejects_bad_options():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="iterations"):
        NudgedAdam(p, k=5, iterations=2)
    with pytest.raises(ValueError, match="every_n_steps"):
        NudgedAdam(p, every_n_steps=0)
    with pytest.raises(ValueError, match="project"):
        NudgedAdam(p, project="moments")
