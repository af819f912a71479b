"""The GPU-ready step, checked on the CPU: no host sync inside a training step (every regularizer), the
channels_last and bf16 switches leave the losses unchanged within tolerance, CUDA-graph step marking, static
training batches and device-derived loader settings, and the benchmark report (scripts/bench_gpu.*)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from gancollapse.build import build_module
from gancollapse.data.digits import DigitsDataModule
from gancollapse.data.in_memory import DeviceBatches
from gancollapse.losses import HingeLoss
from gancollapse.models.gan import GANModule
from gancollapse.models.phased import PhaseBatch
from gancollapse.nets.dcgan import DCGAN32Discriminator, DCGAN32Generator
from gancollapse.regularizers.disomap import DIsoMap
from gancollapse.regularizers.dlle import DLLE
from gancollapse.regularizers.gradient_penalty import GradientPenalty
from gancollapse.regularizers.maem import ManifoldEntropy
from gancollapse.regularizers.r1 import R1
from gancollapse.regularizers.spectral_norm import SpectralNorm
from gancollapse.regularizers.topk import TopK
from gancollapse.regularizers.weight_clipping import WeightClipping
from gancollapse.train import run
from tests.conftest import REPO, compose_cfg, load_script

# Tensor methods that read a value back to the host (a device sync on a GPU).
HOST_READS = ("item", "__bool__", "tolist", "__int__", "__float__", "__index__", "numpy")

REGULARIZERS = {
    "none": lambda: {},
    "maem": lambda: {"maem": ManifoldEntropy(code_dim=4, buffer_size=32, ramp_epochs=0)},
    "maem_seed_compat": lambda: {"maem": ManifoldEntropy(code_dim=4, buffer_size=32, ramp_epochs=0, seed_compat=True)},
    "maem_full": lambda: {"maem": ManifoldEntropy(code_dim=4, buffer_size=32, ramp_epochs=0),
                          "disomap": DIsoMap()},
    "gradient_penalty": lambda: {"gradient_penalty": GradientPenalty()},
    "r1": lambda: {"r1": R1()},
    "topk": lambda: {"topk": TopK(gamma=0.5)},
    "spectral_norm": lambda: {"spectral_norm": SpectralNorm()},
    "weight_clipping": lambda: {"weight_clipping": WeightClipping()},
    "dlle": lambda: {"dlle": DLLE()},
    "disomap": lambda: {"disomap": DIsoMap()},
}


def _dcgan(regularizers: str = "none", base: int = 4, out_dim: int = 1, seed: int = 0, **kw) -> GANModule:
    """A small DCGAN-32 GAN with fused Adam (torch's non-fused CPU Adam reads its step counter with .item());
    the same seed gives the same nets and replay buffers."""
    torch.manual_seed(seed)
    regularizers = REGULARIZERS[regularizers]()
    fused = {"generator": partial(torch.optim.Adam, lr=1e-3, fused=True),
             "discriminator": partial(torch.optim.Adam, lr=1e-3, fused=True)}
    m = GANModule(DCGAN32Generator(8, base=base), DCGAN32Discriminator(base=base, out_dim=out_dim), HingeLoss(),
                  regularizers, optim=fused, z_dim=8, log_every_n_steps=1000, **kw)
    m.use_optimizers(m.configure_optimizers())
    return m


def _images(n: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("name", REGULARIZERS)
def test_gan_step_with_each_regularizer_has_no_host_sync(name, monkeypatch):
    """A whole D + G step reads nothing back to the host, with every regularizer (and MaEM's stack)."""
    m = _dcgan(name, out_dim=4 if name.startswith("maem") else 1)
    m.training_step(_images())  # optimizer state exists; the next steps are the steady state

    def forbid(*_a, **_k):
        raise AssertionError("host read inside a training step")

    for attr in HOST_READS:
        monkeypatch.setattr(torch.Tensor, attr, forbid)
    for _ in range(2):
        m.training_step(_images())
    monkeypatch.undo()
    assert m.steps == {"d": 3, "g": 3}
    assert all(torch.isfinite(p).all() for p in m.parameters())


def test_channels_last_switch_converts_nets_and_batch_and_keeps_the_losses():
    ref, nhwc = _dcgan(base=8), _dcgan(base=8, channels_last=True)
    convs = [mod.weight for mod in nhwc.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    x = _images(16)
    torch.manual_seed(3)
    pb_ref = ref.phase_batch(x)
    torch.manual_seed(3)
    pb = nhwc.phase_batch(x)
    assert pb.real.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(memory_format=torch.channels_last)
    for phase in ("d", "g"):
        a, b = getattr(ref, f"{phase}_loss")(pb_ref), getattr(nhwc, f"{phase}_loss")(pb)
        torch.testing.assert_close(b["loss"], a["loss"], rtol=1e-4, atol=1e-5)


def test_channels_last_config_key_reaches_the_module():
    cfg = compose_cfg(["dataset=digits", "model=dcgan32", "model.generator.base=4", "model.discriminator.base=4",
                       "channels_last=true"], tiny=False)
    assert build_module(cfg).channels_last
    assert not build_module(compose_cfg(["dataset=digits", "model=dcgan32"], tiny=False)).channels_last


def _losses_on_a_fixed_batch(autocast: bool) -> dict[str, torch.Tensor]:
    """D- and G-phase outputs of DCGAN-32 (base 16) with MaEM's entropy + DIsoMap terms, on one fixed batch."""
    m = _dcgan("maem_full", base=16, out_dim=4)
    pb = PhaseBatch(_images(16), torch.randn(16, 8, generator=torch.Generator().manual_seed(2)))
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = {**m.d_loss(pb), **m.g_loss(pb)}
        out["d_dtype"] = m.discriminator(pb.real)
    return out


def test_bf16_autocast_losses_match_fp32_on_a_fixed_dcgan32_batch():
    fp32, bf16 = _losses_on_a_fixed_batch(False), _losses_on_a_fixed_batch(True)
    assert bf16["d_dtype"].dtype == torch.bfloat16 and fp32["d_dtype"].dtype == torch.float32  # bf16 really ran
    for key in ("d_loss", "g_loss", "maem_entropy_real", "maem_entropy_fake", "disomap", "d_total", "g_total"):
        # bf16 keeps 8 mantissa bits (round-off 2^-9 per op); 1 % covers what a few layers accumulate
        torch.testing.assert_close(bf16[key].float(), fp32[key], rtol=1e-2, atol=1e-5, msg=key)


def test_trainer_precision_bf16_mixed_runs_the_manual_step_under_autocast(tmp_path, monkeypatch):
    """``trainer.precision=bf16-mixed`` (the documented switch) wraps our manual-optimisation step in
    bf16 autocast, and a MaEM step under it trains with finite losses."""
    seen: list[tuple[bool, torch.dtype]] = []
    original = GANModule.d_loss

    def spy(self, pb):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return original(self, pb)

    monkeypatch.setattr(GANModule, "d_loss", spy)
    cfg = compose_cfg(["dataset=digits", "model=dcgan32", "model.generator.base=4", "model.discriminator.base=4",
                       "model.discriminator.out_dim=4", "loss=maf", "regularizer=maem", "regularizer.maem.ramp_epochs=0",
                       "evaluator=none", "logger=none", "callbacks.progress_bar=null", "max_g_steps=3",
                       "log_every_n_steps=1", "trainer.precision=bf16-mixed"], tiny=False)
    summary = run(cfg, tmp_path / "run")
    assert summary["g_steps"] == 3
    assert seen and all(on and dtype == torch.bfloat16 for on, dtype in seen)


def test_reduce_overhead_marks_a_cudagraph_step_before_each_phase(monkeypatch):
    m = _dcgan(compile="reduce-overhead", n_critic=2)
    assert m.cudagraph_steps and not _dcgan(compile=True).cudagraph_steps
    for net in (m.generator, m.discriminator):  # run eagerly: compiling on a CPU takes minutes
        net._compiled_call_impl = None
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    for _ in range(2):
        m.training_step(_images())
    assert len(marks) == 3  # D; then D and G


# ---------------------------------------------------------------------------------------------- data
def _fake_trainer(device: str) -> SimpleNamespace:
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), global_rank=0, world_size=1,
                           training=True)


@pytest.mark.parametrize("on_device", [False, True])
def test_training_batches_all_have_the_batch_size(on_device):
    dm = DigitsDataModule(img_size=8, batch_size=100, on_device=on_device)  # 1,797 images: 17 full batches
    loader = dm.train_dataloader()
    assert isinstance(loader, DeviceBatches) == on_device
    sizes = [b[0].shape[0] for b in loader]
    assert sizes == [100] * 17


def test_on_device_auto_and_pinning_follow_the_trainer_device():
    dm = DigitsDataModule(img_size=8, batch_size=100, on_device="auto")
    dm.setup()
    dm.trainer = _fake_trainer("cpu")
    assert not dm.keeps_on_device() and not dm.train_dataloader().pin_memory
    dm.trainer = _fake_trainer("cuda")
    assert dm.keeps_on_device()
    host = DigitsDataModule(img_size=8, batch_size=100, on_device=False)
    host.trainer = _fake_trainer("cuda")
    assert not host.keeps_on_device() and host.train_dataloader().pin_memory
    with pytest.raises(ValueError, match="dataset.on_device"):
        DigitsDataModule(on_device="gpu")


# ---------------------------------------------------------------------------------------------- benchmark report
def test_markdown_report_rows_ratios_and_missing_peers():
    bench = load_script("bench_gpu")
    env = {"device": "NVIDIA H100 80GB HBM3", "torch": "2.14.1", "cuda": "13.0", "date": "2026-11-24",
           "mode": "full"}
    results = {
        "maem_step_b64": {"ours": {"value": 6500.0}, "seed": {"value": 1000.0}},
        "maem_step_b256": {"ours": {"value": 31000.0}, "seed": {"error": "clone failed"}},
        "entropy": {"ours": {"value": 0.5, "peak_gib": 0.1}, "seed": {"value": 20.0, "peak_gib": 6.2}},
        "toy": {"ours": {"error": "timeout"}},
    }
    md = bench.markdown_report(env, results)
    lines = md.splitlines()
    assert "NVIDIA H100 80GB HBM3" in md and "torch 2.14.1" in md and "CUDA 13.0" in md and "2026-11-24" in md
    row = next(line for line in lines if line.startswith("| MaEM-GAN full step, DCGAN-32, batch 64 "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == ["≥ 6,000 img/s", "6,500", "1,000", "6.50×", "met"]
    row256 = next(line for line in lines if "batch 256" in line)
    assert "not measured (clone failed)" in row256 and "| met |" in row256
    ent = next(line for line in lines if line.startswith("| MaEM entropy term"))
    assert "40.0×" in ent  # lower is better: seed / ours
    toy = next(line for line in lines if line.startswith("| toy ring-8"))
    assert "not measured (timeout)" in toy and "not measured (no result)" in toy
    fid = next(line for line in lines if line.startswith("| FID"))
    assert fid.count("not measured (no result)") == 1 and "n/a" in fid


def test_target_verdicts_respect_direction():
    bench = load_script("bench_gpu")
    assert bench.verdict(6000.0, 6000.0, higher_is_better=True) == "met"
    assert bench.verdict(5999.0, 6000.0, higher_is_better=True) == "missed"
    assert bench.verdict(1.2, 1.0, higher_is_better=False) == "missed"
    assert bench.verdict(None, 1.0, higher_is_better=False) == "–"
    assert bench.speedup(2.0, 10.0, higher_is_better=False) == pytest.approx(5.0)
    assert bench.speedup(10.0, 2.0, higher_is_better=True) == pytest.approx(5.0)
    assert bench.speedup(10.0, None, higher_is_better=True) is None


@pytest.mark.slow
def test_bench_gpu_script_quick_mode_on_cpu(tmp_path):
    """scripts/bench_gpu.sh --quick on the CPU writes the report with a row per benchmark (no network: the
    seed columns say 'not measured')."""
    if shutil.which("bash") is None:
        pytest.skip("bash not available")
    out = tmp_path / "bench.md"
    env = {**os.environ, "DEVICE": "cpu", "OMP_NUM_THREADS": "1", "BENCH_NO_CLONE": "1", "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(REPO / "scripts" / "bench_gpu.sh"), "--quick", "--out", str(out)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    md = out.read_text()
    for label in ("MaEM-GAN full step, DCGAN-32, batch 64", "batch 256", "MaEM entropy term", "FID", "toy ring-8"):
        assert label in md
    raw = json.loads(out.with_suffix(".json").read_text())
    for key in ("maem_step_b64", "maem_step_b256", "entropy", "fid", "toy"):
        assert "value" in raw["results"][key]["ours"], raw["results"][key]
