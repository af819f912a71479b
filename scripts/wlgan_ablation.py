"""WL-GAN ablations on one trained run: which of the two learning modules (and which seed fix) matters.

    OMP_NUM_THREADS=1 python scripts/wlgan_ablation.py <run dir> [--n 500] [--seed 0] [variant ...]

Every variant fits the calibrator on the same held-out real samples and samples n codes with
``conf/sampler/wlgan.yaml`` plus its overrides (batch_size = n); prints modes / HQ / reverse KL (toy runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

VARIANTS = {
    "ours": {},
    "per_chain_theta": {"shared_theta": False},
    "fixed_drift": {"couple_drift": False},
    "no_target_learning": {"learn_target": False},
    "no_proposal_learning": {"learn_proposal": False},
    "neither": {"learn_target": False, "learn_proposal": False},
    "reweighted": {"reweight": True},
    "seed_compat": {"seed_compat": True},
}


def main(argv: list[str] | None = None) -> None:
    import gancollapse
    from gancollapse.metrics.toy import mode_stats
    from gancollapse.sample import held_out_real

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    run = gancollapse.load(args.run_dir)
    dm = run.datamodule()
    real = held_out_real(dm, 5000, 20_000 + args.seed)
    print("| variant | modes | HQ % | reverse KL | acceptance | final eta |")
    print("|---|---|---|---|---|---|")
    for name in args.variants:
        cfg = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "sampler" / "wlgan.yaml"), {"batch_size": args.n},
                              VARIANTS[name])
        s = instantiate(cfg)
        s.fit(run.generator, run.discriminator, real, run.z_dim, seed=args.seed)
        z = s.sample(run.generator, run.discriminator, args.n, run.z_dim, run.device, seed=args.seed)
        m = mode_stats(run.module.generate(args.n, z=z).cpu(), dm.centers, dm.std)
        print(f"| {name} | {m.modes} | {100 * m.hq_fraction:.1f} | {m.reverse_kl:.3f} | "
              f"{s.stats['sampler/acceptance']:.3f} | {s.stats['sampler/eta_final']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
