"""MBRCE-AAE under DDP: two CPU processes (gloo) estimate the divergence on the gathered global batch.

Each rank holds half of a fixed batch of "images" and a linear encoder wrapped in DistributedDataParallel; the
module's encoder-step loss −λ·D(U, V) + R1 (``MBRCEAAEModule.divergence`` gathers U and V when the world
size is 2) must give, on every rank, the value and (after DDP's gradient average) the parameter gradients of
one process that sees the whole batch.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from gancollapse.aae.renyi import renyi_divergence
from gancollapse.models.mbrce_aae import MBRCEAAEModule, divergence_r1
from tests.conftest import free_port

WORLD, N, D_IN, D_CODE = 2, 16, 6, 3  # N images in all, N / WORLD per rank
CASES = [("cs2", 2.0, 10.0), ("spectral", 0.5, 0.0)]  # spectral has no double backward: no R1


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    real = torch.randn(N, D_IN, generator=g, dtype=torch.float64)
    fake = torch.randn(N, D_IN, generator=g, dtype=torch.float64) * 0.7 + 0.5
    return real, fake


def _encoder() -> torch.nn.Linear:
    torch.manual_seed(0)  # the same initial weights on every rank and in the single-process reference
    return torch.nn.Linear(D_IN, D_CODE).double()


def _module(estimator: str, alpha: float, r1_gamma: float, world: int) -> MBRCEAAEModule:
    m = MBRCEAAEModule(image_size=4, image_channels=1, latent_dim=4, mapping_layers=1, channels=[4],
                       estimator=estimator, alpha=alpha, r1_gamma=r1_gamma, lambda_div=1.5, batch_sizes=N)
    m.configure_schedule(dataset_size=4 * N, world_size=world)
    return m


def _encoder_step(encoder, module, real, fake):
    """The encoder step's loss as ``MBRCEAAEModule.e_loss`` composes it, −λ·D + R1, and D."""
    real = real.clone().requires_grad_(module.r1_gamma > 0)
    u, v = encoder(torch.cat((real, fake))).split(real.shape[0])
    div = module.divergence(u, v)
    loss = -module.lambda_div * div
    if module.r1_gamma > 0:
        loss = loss + divergence_r1(div, real, module.r1_gamma, module.world_size)
    return loss, div


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        real, fake = _batch()
        share = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
        results = {}
        for estimator, alpha, r1_gamma in CASES:
            encoder = _encoder()
            ddp = DistributedDataParallel(encoder)
            loss, div = _encoder_step(ddp, _module(estimator, alpha, r1_gamma, WORLD), real[share], fake[share])
            loss.backward()
            results[estimator] = {"loss": loss.detach(), "div": div.detach(),
                                  "grads": [p.grad.clone() for p in encoder.parameters()]}
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    # fork: the ranks inherit the imported modules (a spawned interpreter re-imports torch and Lightning, ~30 s)
    mp.start_processes(_rank, args=(free_port(), str(out)), nprocs=WORLD, join=True, start_method="fork")
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("estimator, alpha, r1_gamma", CASES)
def test_gathered_divergence_and_gradients_equal_one_process_on_the_global_batch(ranks, estimator, alpha, r1_gamma):
    real, fake = _batch()
    encoder = _encoder()
    loss, div = _encoder_step(encoder, _module(estimator, alpha, r1_gamma, 1), real, fake)
    loss.backward()
    for rank in ranks:
        got = rank[estimator]
        torch.testing.assert_close(got["div"], div.detach(), rtol=1e-10, atol=0)
        if r1_gamma == 0:
            torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-10, atol=0)
        # DDP averages the ranks' gradients: equal to the single process's, the R1 term's included
        for g, p in zip(got["grads"], encoder.parameters(), strict=True):
            torch.testing.assert_close(g, p.grad, rtol=1e-8, atol=1e-12)
    # the per-rank estimates the module made before (each rank's own half) are another quantity
    half = renyi_divergence(*(encoder(t[: N // WORLD]) for t in (real, fake)), alpha, estimator)
    assert abs(float(half.detach()) - float(div.detach())) > 1e-3
