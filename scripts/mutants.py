"""Named mutants: method-critical source edits, each with the tests that must catch it.

A method can be broken while its tests stay green. Each entry of :data:`MUTANTS` below is one small,
deliberate break of a method (an exact snippet of the current source and its replacement) together with the
test node ids that should fail when it is applied. For each mutant the script copies ``src/`` to a temporary
directory, applies the edit there, and runs only that mutant's tests with ``PYTHONPATH`` pointing at the copy;
the working tree is never modified, so a crash or Ctrl-C cannot leave a mutant behind.

Outcomes (one line per mutant, then a summary):

* ``caught``   — pytest failed (a test failed or errored) with the mutant applied. ``by`` names the first failing
  node id. The tests are first run once on the unmutated source (the *baseline*): a test that already fails
  there would "catch" every mutant, so a failing baseline stops the run.
* ``SURVIVED`` — every listed test passed with the mutant applied: the tests do not see this break.
* ``STALE``    — the original snippet is no longer in the file (the source moved on): update the entry.
* ``AMBIGUOUS``— the snippet occurs more than once: add context so it names one place.
* ``INVALID``  — the mutated Python file does not compile (the replacement is wrong, not the method).
* ``NO-TESTS`` — pytest found none of the listed node ids (renamed or deleted tests).
* ``TIMEOUT``  — the tests ran past ``--timeout``: inconclusive (raise the limit or pick faster tests).
* ``KILLED``   — pytest itself died of a signal (out of memory, a segfault): inconclusive.

The exit code is 0 only when every selected mutant is ``caught``.

Usage (from the repository root, with the project's Python):
    python scripts/mutants.py                    # all mutants, one at a time
    python scripts/mutants.py --only mh_accept_always,lsgan_wrong_target --jobs 2
    python scripts/mutants.py --check            # only check that every snippet is still in the source
    python scripts/mutants.py --list             # the table
    python scripts/mutants.py --markdown         # the table as Markdown (docs/TESTING.md)
    python scripts/mutants.py --write-docs       # refresh the table in docs/TESTING.md
"""

from __future__ import annotations

import argparse
import json
import os
import py_compile
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """One named break: replace ``original`` (exactly once in ``file``) by ``replacement``; ``tests`` must fail."""

    name: str
    file: str  # relative to the repository root, under src/
    original: str
    replacement: str
    tests: tuple[str, ...]
    breaks: str  # what the mutant breaks, in one line
    extra: tuple[tuple[str, str], ...] = ()  # further (original, replacement) edits of the same file

    @property
    def edits(self) -> tuple[tuple[str, str], ...]:
        return ((self.original, self.replacement), *self.extra)


def _m(name: str, file: str, original: str, replacement: str, tests: Iterable[str], breaks: str,
       extra: Iterable[tuple[str, str]] = ()) -> Mutant:
    prefix = "src/gancollapse/"
    return Mutant(name, file if file.startswith("src/") else prefix + file, original, replacement,
                  tuple(tests), breaks, tuple(tuple(e) for e in extra))


T = "tests/"
# ---------------------------------------------------------------------------------------------------- the table
MUTANTS: tuple[Mutant, ...] = (
    # ---- adversarial objectives (losses.py)
    _m("lsgan_wrong_target", "losses.py",
       "target = -1.0 if self.seed_compat else 1.0", "target = -1.0 if self.seed_compat else 0.0",
       [T + "test_losses.py::test_least_squares_is_mao_form"],
       "LSGAN's D pulls real scores to 0 instead of b = 1 (Mao et al. Eq. 2)"),
    _m("lsgan_g_target", "losses.py",
       "return sign * 0.5 * (fake - 1.0).pow(2).mean()", "return sign * 0.5 * (fake - 0.0).pow(2).mean()",
       [T + "test_losses.py::test_least_squares_is_mao_form"],
       "LSGAN's G pulls fake scores to 0 (the fake label) instead of c = 1"),
    _m("hinge_no_margin", "losses.py",
       "return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()",
       "return F.relu(-real).mean() + F.relu(fake).mean()",
       [T + "test_losses.py::test_hinge_values"],
       "hinge D loss loses its margin of 1 (Lim & Ye)"),
    _m("non_saturating_is_saturating", "losses.py",
       "return F.softplus(-fake).mean()", "return -F.softplus(fake).mean()",
       [T + "test_losses.py::test_non_saturating_generator_value"],
       "loss=non_saturating silently trains G with the saturating minimax loss"),
    # ---- regularizers
    _m("wgan_gp_centre_zero", "regularizers/gradient_penalty.py",
       "return (norms - 1.0).pow(2).mean(dim=-1)", "return (norms - 0.0).pow(2).mean(dim=-1)",
       [T + "test_regularizers.py::test_gradient_penalty_zero_for_unit_gradient_linear_critic"],
       "WGAN-GP pushes ‖∇D‖ to 0 instead of 1"),
    _m("wgan_gp_no_interpolation", "regularizers/gradient_penalty.py",
       "mixed = alpha * real.detach() + (1.0 - alpha) * fake.detach()", "mixed = real.detach()",
       [T + "test_regularizers.py::test_gradient_penalty_is_taken_at_the_interpolates"],
       "WGAN-GP penalises the gradient at real data, not at x̂ = αx + (1−α)x̃"),
    _m("r1_on_fake", "regularizers/r1.py",
       "r1_penalty(step.discriminator, step.real)", "r1_penalty(step.discriminator, step.fake)",
       [T + "test_regularizers.py::test_r1_penalises_the_gradient_at_real_data_not_at_fakes"],
       "R1 penalises D's gradient on fakes instead of real data (Mescheder et al. Eq. 9)"),
    _m("spectral_norm_not_applied", "regularizers/spectral_norm.py",
       "            spectral_norm(module, n_power_iterations=n_power_iterations)\n",
       "            pass\n",
       [T + "test_regularizers.py::test_spectral_norm_bounds_largest_singular_value"],
       "regularizer=spectral_norm leaves D's layers unnormalised"),
    _m("weight_clipping_bound", "regularizers/weight_clipping.py",
       "torch._foreach_clamp_min_(params, -self.clip)", "torch._foreach_clamp_min_(params, -10 * self.clip)",
       [T + "test_regularizers.py::test_weight_clipping_clamps_every_parameter"],
       "weights are clipped to [−10c, c] instead of [−c, c]"),
    _m("topk_keeps_all", "regularizers/topk.py",
       "return per_sample_score(d_fake).detach().topk(k).indices",
       "return per_sample_score(d_fake).detach().topk(b).indices",
       [T + "test_regularizers.py::test_topk_selects_highest_scored_fakes"],
       "top-k trains G on every fake, whatever k says"),
    _m("topk_lowest_scored", "regularizers/topk.py",
       "return per_sample_score(d_fake).detach().topk(k).indices",
       "return per_sample_score(d_fake).detach().topk(k, largest=False).indices",
       [T + "test_regularizers.py::test_topk_selects_highest_scored_fakes"],
       "top-k keeps the k worst-scored fakes instead of the best"),
    _m("pack_first_member_only", "regularizers/pack.py",
       "return x.reshape(x.shape[0] // m, m * x.shape[1], *x.shape[2:])",
       "return x[::m].repeat(1, m, *([1] * (x.dim() - 2)))",
       [T + "test_pack.py::test_pack_concatenates_consecutive_samples_along_channels",
        T + "test_pack.py::test_packed_discriminator_sees_m_samples_per_score"],
       "PacGAN's D sees the first member of each pack m times, not m different samples"),
    _m("pack_strided_groups", "regularizers/pack.py",
       "return x.reshape(x.shape[0] // m, m * x.shape[1], *x.shape[2:])",
       "return x.reshape(m, x.shape[0] // m, *x.shape[1:]).transpose(0, 1).reshape(x.shape[0] // m, -1, *x.shape[2:])",
       [T + "test_pack.py::test_pack_concatenates_consecutive_samples_along_channels",
        T + "test_pack.py::test_packed_discriminator_sees_m_samples_per_score"],
       "packs of samples B/m apart: in the concatenated real+fake forward a pack mixes real with fake"),
    # ---- MaEM-GAN
    _m("maem_no_entropy", "regularizers/maem.py",
       "return -entropy_weight(self.sigma, epoch, self.ramp_epochs) * ent", "return 0.0 * ent",
       [T + "test_maem_terms.py::test_entropy_reads_buffer_before_pushing",
        T + "test_maem_terms.py::test_sigma_warmup_values"],
       "MaEM's manifold-entropy term contributes nothing to D's or G's loss"),
    _m("maem_entropy_sign", "regularizers/maem.py",
       "return -entropy_weight(self.sigma, epoch, self.ramp_epochs) * ent",
       "return entropy_weight(self.sigma, epoch, self.ramp_epochs) * ent",
       [T + "test_maem_terms.py::test_sigma_warmup_values"],
       "MaEM minimises the code entropy (gathers codes) instead of maximising it"),
    _m("maem_fifo_horizon", "regularizers/maem.py",
       "idx = (self.ptr + torch.arange(n, device=self.data.device)) % self.size",
       "idx = torch.arange(n, device=self.data.device) % self.size",
       [T + "test_maem_terms.py::test_replay_buffer_is_fifo",
        T + "test_maem_terms.py::test_fifo_horizon_vs_seed_compat_per_slot_neighbours"],
       "the replay buffer keeps only the last batch (overwrites its first rows) instead of the last S codes"),
    _m("dlle_flip_one_axis", "regularizers/dlle.py",
       "out = torch.where(along_w, x.flip(-1), x.flip(-2))", "out = x.flip(-2)",
       [T + "test_maem_terms.py::test_augment_flips_along_h_or_w_only"],
       "DLLE's augmentation always flips along H, never along W"),
    _m("dlle_target_not_stopped", "regularizers/dlle.py",
       "        with torch.no_grad():\n            disc = step.discriminator",
       "        with torch.enable_grad():\n            disc = step.discriminator",
       [T + "test_maem_terms.py::test_dlle_matches_hand_computation_with_detached_target"],
       "DLLE's augmented branch is not stop-gradient: D is also pulled towards the un-augmented codes",
       extra=[("return F.mse_loss(codes, augmented_codes.detach())", "return F.mse_loss(codes, augmented_codes)")]),
    # ---- GDPP, Unrolled GAN
    _m("gdpp_no_structure_term", "regularizers/gdpp.py",
       "return magnitude_weight * magnitude + (weights * (1.0 - cos)).sum()",
       "return magnitude_weight * magnitude",
       [T + "test_gdpp.py::test_loss_on_a_hand_computed_pair_of_kernels"],
       "GDPP drops its eigenvector (structure) term and matches eigenvalues only"),
    _m("gdpp_sign_dependent", "regularizers/gdpp.py", "        cos = cos.abs()", "        cos = cos",
       [T + "test_gdpp.py::test_invariant_to_eigenvector_sign_flips_unless_signed"],
       "GDPP's loss depends on eigh's arbitrary eigenvector signs"),
    _m("gdpp_magnitude_abs", "regularizers/gdpp.py",
       "    magnitude = (lam_real - lam_fake).pow(2).mean()", "    magnitude = (lam_real - lam_fake).abs().mean()",
       [T + "test_gdpp.py::test_loss_on_a_hand_computed_pair_of_kernels"],
       "GDPP's eigenvalue term is an L1 instead of the squared difference"),
    _m("gdpp_features_second_forward", "models/gan.py",
       "                d_fake, f_fake = d_net(fake, return_features=True)",
       "                d_fake, f_fake = d_net(fake), d_net(fake, return_features=True)[1]",
       [T + "test_gdpp.py::test_d_features_come_from_the_forward_each_step_already_does"],
       "G's step runs D twice on the fakes (scores and features from two forwards)"),
    _m("gdpp_eigen_order_flipped", "regularizers/gdpp.py",
       "return gdpp_from_eig(lam_r, vec_r.to(vec_f.dtype), lam_f, vec_f, magnitude_weight, sign_invariant)",
       "return gdpp_from_eig(lam_r, vec_r.to(vec_f.dtype), lam_f.flip(0), vec_f.flip(1), magnitude_weight, "
       "sign_invariant)",
       [T + "test_gdpp.py::test_loss_on_a_hand_computed_pair_of_kernels"],
       "GDPP pairs the real kernel's largest eigenpair with the fake kernel's smallest"),
    _m("unrolled_lookahead_detached", "regularizers/unrolled.py",
       "        grads = torch.autograd.grad(loss, [theta[n] for n in names], create_graph=True, allow_unused=True)",
       "        grads = torch.autograd.grad(loss, [theta[n] for n in names], create_graph=False, allow_unused=True)",
       [T + "test_unrolled.py::test_g_gradient_is_the_derivative_of_the_unrolled_objective"],
       "G no longer differentiates through D's look-ahead steps (Metz et al. Eq. 12)"),
    _m("unrolled_adam_no_bias_correction", "regularizers/unrolled.py",
       "p - (lr / (1.0 - beta1**t)) * m / denom", "p - lr * m / denom",
       [T + "test_unrolled.py::test_lookahead_is_k_steps_of_ds_own_optimizer"],
       "the look-ahead's Adam step forgets the bias correction: not D's own optimizer step"),
    _m("unrolled_one_step_short", "regularizers/unrolled.py", "    for i in range(k):", "    for i in range(k - 1):",
       [T + "test_unrolled.py::test_lookahead_is_k_steps_of_ds_own_optimizer"],
       "the look-ahead unrolls k − 1 steps instead of k"),
    _m("unrolled_buffers_shared", "regularizers/unrolled.py",
       "buffers = {n: b.detach().clone() for n, b in net.named_buffers()}", "buffers = dict(net.named_buffers())",
       [T + "test_unrolled.py::test_lookahead_changes_neither_d_nor_its_optimizer_nor_its_buffers"],
       "the look-ahead writes into D's real buffers (BatchNorm / spectral-norm state)"),
    _m("unrolled_d_ignored", "models/gan.py",
       "            d_net = self.g_discriminator(step)", "            d_net = self.discriminator",
       [T + "test_unrolled.py::test_g_gradient_is_the_derivative_of_the_unrolled_objective"],
       "G's loss scores the fakes with the current D, never with the unrolled one"),
    # ---- Dist-GAN
    _m("distgan_g_detached", "models/distgan.py",
       "            logit_fake = self.discriminator(fake)\n            step = Step(\"g\"",
       "            logit_fake = self.discriminator(fake.detach())\n            step = Step(\"g\"",
       [T + "test_distgan_losses.py::test_phases_update_only_their_nets"],
       "Dist-GAN's G loss gets no gradient to G (the fakes are detached)"),
    _m("distgan_g_loss_not_abs", "models/distgan_losses.py",
       "return (torch.sigmoid(logit_real).mean() - torch.sigmoid(logit_fake).mean()).abs()",
       "return torch.sigmoid(logit_real).mean() - torch.sigmoid(logit_fake).mean()",
       [T + "test_distgan_losses.py::test_discriminator_and_generator_scores"],
       "Dist-GAN's G maximises D's fake score instead of closing the real/fake score gap"),
    _m("distgan_latent_distance_unsigned", "models/distgan_losses.py",
       "    md_x = (f_recon - f_fake).mean()", "    md_x = (f_recon - f_fake).abs().mean()",
       [T + "test_distgan_losses.py::test_reconstruction_loss_signed_means"],
       "Dist-GAN's latent-distance constraint uses |·| instead of the reference's signed means"),
    # ---- MBRCE-AAE (matrix-based Rényi divergences)
    _m("renyi_cs2_constant", "aae/renyi.py",
       "        return _cs2(*logs)", "        return (0.0 * x.sum() + 0.0 * y.sum() + 1.0).to(x.dtype)",
       [T + "test_mbrce_aae.py::test_encoder_step_pushes_real_and_generated_codes_apart[cs2]",
        T + "test_aae_renyi.py::test_cs2_equals_parzen_cauchy_schwarz_divergence"],
       "the cs2 Rényi divergence is a constant: MBRCE's latent term gives no gradient"),
    _m("renyi_spectral_constant", "aae/renyi.py",
       "    return _spectral(*logs, alpha=a, eps=_check_eps(eps))",
       "    return (0.0 * x.sum() + 0.0 * y.sum() + 1.0).to(x.dtype)",
       [T + "test_mbrce_aae.py::test_encoder_step_pushes_real_and_generated_codes_apart[spectral0.5]",
        T + "test_aae_renyi.py::test_spectral_equals_petz_divergence_of_covariance_operators"],
       "the general-α (spectral) Rényi divergence is a constant"),
    _m("renyi_bandwidth_detached", "aae/renyi.py", "    return value * follow", "    return value",
       [T + "test_aae_renyi.py::test_median_bandwidth_divergence_is_invariant_to_a_common_rescaling"],
       "the median bandwidth no longer follows the codes: the divergence is not scale-invariant"),
    _m("mbrce_ddp_no_gather", "models/mbrce_aae.py",
       "        if self.world_size > 1:\n            u, v = gather_codes(u), gather_codes(v)\n", "",
       [T + "test_mbrce_ddp.py::test_gathered_divergence_and_gradients_equal_one_process_on_the_global_batch"],
       "under DDP each rank estimates the divergence on its own shard instead of the global batch"),
    _m("mbrce_experiment_without_r1", "conf/experiment/mbrce_aae_digits.yaml",
       "    r1_gamma: 10.0           # ALAE's R1", "    r1_gamma: 0.0           # ALAE's R1",
       [T + "test_mbrce_aae.py::test_mbrce_and_alae_experiments_differ_only_in_the_latent_term"],
       "MBRCE's digits experiment drops ALAE's R1: MBRCE vs ALAE differ in more than the latent term"),
    # ---- NuGAN's nudged Adam, Lanczos
    _m("nudge_update_not_projected", "optim/nudged_adam.py",
       "self._pending = sharp if sharp.numel() else None", "self._pending = None",
       [T + "test_lanczos.py::test_update_projection_stops_momentum_along_sharp_direction"],
       "project=update: Adam's step and momentum keep moving along the sharp eigen-directions"),
    _m("nudge_gradient_not_projected", "optim/nudged_adam.py",
       "        new = project_out(flat, sharp)\n", "        new = flat\n",
       [T + "test_lanczos.py::test_nudge_removes_exactly_the_sharp_eigen_direction"],
       "project=gradient: the gradient keeps its components along the sharp directions"),
    _m("lanczos_no_reorthogonalisation", "optim/lanczos.py",
       "        for _ in range(2):\n            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)",
       "        for _ in range(0):\n            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)",
       [T + "test_lanczos.py::test_lanczos_matches_dense_hessian_eigvalsh"],
       "Lanczos without full reorthogonalisation: ghost eigenvalues, wrong spectrum"),
    # ---- latent samplers
    _m("mh_accept_always", "samplers/mhgan.py",
       "return (d_proposal - d_current).clamp(max=0.0)", "return torch.zeros_like(d_proposal)",
       [T + "test_samplers_calibration.py::test_mh_acceptance_equals_closed_form_with_calibrated_d",
        T + "test_samplers_mcmc.py::test_mhgan_acceptance_rate_matches_closed_form"],
       "MH-GAN accepts every proposal: the MH ratio of Turner et al. Eq. 4 is dropped"),
    _m("repgan_no_proposal_correction", "samplers/repgan.py",
       "    return (log_pi_new - log_pi_old) + (log_q_rev - log_q_fwd)", "    return log_pi_new - log_pi_old",
       [T + "test_samplers_mcmc.py::test_repgan_mh_correction_gives_the_target_variance_at_a_coarse_step"],
       "REP-GAN / WL-GAN's MH test drops the Langevin proposal's q(z|z')/q(z'|z) term"),
    _m("mcmc_accept_always", "samplers/repgan.py",
       "    return u.log() <= torch.nan_to_num(log_ratio, nan=-math.inf)", "    return u.log() <= math.inf",
       [T + "test_samplers_mcmc.py::test_repgan_mh_correction_gives_the_target_variance_at_a_coarse_step",
        T + "test_samplers_mcmc.py::test_mcmc_samplers_move_towards_target"],
       "REP-GAN / WL-GAN accept every Langevin proposal (unadjusted Langevin)"),
    _m("drs_no_shift", "samplers/drs.py",
       "return torch.nn.functional.logsigmoid(drs_f(d, d_max, eps) - gamma)",
       "return torch.nn.functional.logsigmoid(drs_f(d, d_max, eps))",
       [T + "test_samplers_calibration.py::test_drs_acceptance_hand_values"],
       "DRS ignores its γ shift (Azadi et al. Eq. 8): the acceptance rate is no longer controlled"),
    # ---- metrics
    _m("toy_hq_threshold", "metrics/toy.py", "hq = dist <= threshold * std", "hq = dist <= (threshold + 1.0) * std",
       [T + "test_toy_metrics.py::test_all_modes_from_the_true_distribution"],
       "high-quality samples within 4σ instead of the papers' 3σ"),
    _m("toy_kl_direction", "metrics/toy.py",
       "return float(math.log(len(counts)) + (nz * nz.log()).sum().item())",
       "return float(-math.log(len(counts)) - p.log().mean().item())",
       [T + "test_toy_metrics.py::test_single_mode_collapse", T + "test_toy_metrics.py::test_off_manifold_points_are_not_high_quality"],
       "reverse KL(p̂ ‖ U) replaced by the forward KL(U ‖ p̂)"),
    _m("toy_capture_rule", "metrics/toy.py",
       "need = max(float(min_count), float(min_fraction) * int(n_scored))",
       "need = float(min_fraction) * int(n_scored)",
       [T + "test_repro_protocols.py::test_papers_rule_counts_a_mode_with_one_hq_sample_and_never_an_empty_one"],
       "with min_fraction = 0 an empty mode counts as captured"),
    _m("fid_no_sqrt", "metrics/fid.py",
       "tr_covmean = torch.linalg.eigvalsh((m + m.t()) / 2).clamp_min(0).sqrt().sum()",
       "tr_covmean = torch.linalg.eigvalsh((m + m.t()) / 2).clamp_min(0).sum()",
       [T + "test_images_fid.py::test_fid_matches_scipy_reference_on_random_features"],
       "FID's cross term uses Tr(Σ₁Σ₂) instead of Tr (Σ₁Σ₂)^½"),
    _m("kid_biased", "metrics/kid.py",
       "within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))",
       "within = (k_xx.sum() + k_yy.sum()) / (m * m)",
       [T + "test_metrics_kid.py::test_mmd2_unbiased_equals_the_pairwise_definition"],
       "KID uses the biased V-statistic (diagonal kept) instead of the unbiased MMD² (Bińkowski et al. Eq. 4)"),
    _m("stacked_modes_one_channel", "metrics/mode_count.py",
       "digits = [classifier(b[:, c:c + 1]).argmax(dim=1) for c in range(3)]",
       "digits = [classifier(b[:, 0:1]).argmax(dim=1) for c in range(3)]",
       [T + "test_mnist5k.py::test_counter_on_real_held_out_stacked_digits_matches_their_labels"],
       "the stacked-digit mode counter classifies the first channel three times"),
    _m("score_scores_every_point", "score.py", "stats = mode_stats(x[:want].double()", "stats = mode_stats(x.double()",
       [T + "test_score.py::test_points_at_the_eight_ring_means_score_eight_modes_all_hq_kl_zero"],
       "gancollapse.score scores all points given instead of the protocol's sample count"),
    # ---- data, nets, training step
    _m("mnist5k_split_not_held_out", "data/mnist5k.py",
       "    return keep.nonzero().flatten(), held_out", "    return torch.arange(len(labels)), held_out",
       [T + "test_mnist5k.py::test_split_is_fixed_stratified_and_held_out"],
       "the classifier's held-out digits are also in the training split"),
    _m("classifier_not_validated_on_held_out", "classifier.py",
       "    val = (held.images, held.labels) if held is not None else None", "    val = None",
       [T + "test_mnist5k.py::test_classifier_is_tested_on_the_held_out_digits_and_cached"],
       "the mode counter's classifier is never tested on the held-out digits: its accuracy is not recorded"),
    _m("stacked_from_held_out", "data/stacked.py",
       "        data = self.digit_source().load() if self.train else self.digit_source().held_out()",
       "        data = self.digit_source().held_out()",
       [T + "test_mnist5k.py::test_stacked_mnist5k_stacks_three_training_digits"],
       "Stacked MNIST-5k trains on the classifier's held-out digits"),
    _m("ring_endpoint_is_uniform", "data/toy.py",
       "theta = torch.linspace(0, 2 * math.pi, n_modes, dtype=torch.float64)",
       "theta = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)",
       [T + "test_repro_protocols.py::test_uniform_ring_is_unchanged_and_endpoint_ring_repeats_its_first_mean"],
       "angles=endpoint (the seed code's linspace ring, first mean repeated) silently gives the uniform ring"),
    _m("toy_fresh_data_never_renewed", "data/toy.py", "if epoch != self._epoch:", "if self._data is None:",
       [T + "test_repro_protocols.py::test_fresh_data_are_new_every_epoch_and_the_same_for_the_same_epoch"],
       "fresh-data protocols train on the same sample every epoch"),
    _m("maxout_is_mean", "nets/mlp.py", "self.pieces).amax(dim=-1)", "self.pieces).mean(dim=-1)",
       [T + "test_repro_protocols.py::test_maxout_takes_the_max_of_each_group_of_pieces"],
       "maxout units average their pieces (a linear layer) instead of taking the max"),
    _m("simultaneous_updates_ignored", "models/gan.py",
       "self.simultaneous = updates == \"simultaneous\"", "self.simultaneous = False",
       [T + "test_updates.py::test_one_step_equals_the_hand_written_two_step_computation"],
       "updates=simultaneous silently trains with alternating updates"),
    _m("simultaneous_steps_in_turn", "models/phased.py",
       "                if self._backward(out[\"loss\"], phase):\n                    due.append((phase, out[\"loss\"]))",
       "                self._update(out[\"loss\"], phase)",
       [T + "test_updates.py::test_one_step_equals_the_hand_written_two_step_computation"],
       "updates=simultaneous steps each net before the next one's gradient: alternating updates"),
    # ---- stacked ensembles (ensemble=K)
    _m("ensemble_shared_z_stream", "models/ensemble.py",
       "for m, g in zip(self.members, self.generators(), strict=True)])",
       "for m, g in zip(self.members, [self.generators()[0]] * self.k, strict=True)])",
       [T + "test_ensemble.py::test_each_member_ends_equal_to_the_single_run_of_its_seed"],
       "every member of an ensemble draws member 0's noise: K copies of one seed, not K seeds"),
    _m("ensemble_topk_of_member_0", "models/ensemble.py",
       "idx = score.topk(k, dim=1).indices", "idx = score[:1].topk(k, dim=1).indices.expand(self.k, -1)",
       [T + "test_ensemble.py::test_member_equals_single_run_across_losses_and_regularizers[hinge_sn_topk_r1]"],
       "every member's G trains on the fakes member 0's D ranks best"),
    _m("ensemble_clipping_skipped", "models/ensemble.py",
       "                reg.after_d_step(self.discriminator)  # weight clipping", "                pass  # weight clipping",
       [T + "test_ensemble.py::test_member_equals_single_run_across_losses_and_regularizers[lsgan_clip]"],
       "an ensemble never clips its critics' weights"),
    _m("ensemble_one_data_order", "data/ensemble.py",
       "for s in self.seeds])", "for s in [self.seeds[0]] * len(self.seeds)])",
       [T + "test_ensemble.py::test_each_member_ends_equal_to_the_single_run_of_its_seed"],
       "every member of an ensemble sees member 0's data order"),
    _m("ensemble_nan_skips_every_member", "models/ensemble.py",
       "found = torch.maximum(self._found[phase], member_nonfinite(loss, params)) * active",
       "found = torch.maximum(self._found[phase], member_nonfinite(loss, params)).max().expand(self.k) * active",
       [T + "test_ensemble.py::test_a_diverging_member_stops_alone_as_its_single_run_and_poisons_no_other"],
       "one member's non-finite loss skips the step of every member"),
    _m("stacked_adam_shared_step_count", "optim/stacked.py",
       "steps.add_(1 if keep is None else keep.to(steps.dtype))", "steps.add_(1)",
       [T + "test_ensemble.py::test_stacked_optimizer_is_one_torch_optimizer_per_member_with_its_own_skips"],
       "a member whose step was skipped still advances its Adam bias correction"),
    # ---- report statistics
    _m("welch_equal_var", "aggregate.py",
       "res = stats.ttest_ind(xa, xb, equal_var=False)", "res = stats.ttest_ind(xa, xb, equal_var=True)",
       [T + "test_report_confidence.py::test_welch_matches_the_welch_satterthwaite_formula"],
       "the report's Welch test becomes Student's pooled-variance t-test"),
    _m("bootstrap_of_the_std", "aggregate.py",
       "res = stats.bootstrap((xs,), np.mean,", "res = stats.bootstrap((xs,), np.std,",
       [T + "test_report_confidence.py::test_bootstrap_interval_covers_the_mean_of_normal_data_and_shrinks_with_n"],
       "the 95% interval is a bootstrap of the std, not of the mean"),
    _m("holm_is_bonferroni", "aggregate.py",
       "running = max(running, min(1.0, (m - rank) * pvalues[i]))", "running = max(running, min(1.0, m * pvalues[i]))",
       [T + "test_report_confidence.py::test_holm_adjusts_a_hand_example"],
       "Holm's step-down adjustment becomes Bonferroni's"),
    _m("significance_unadjusted", "aggregate.py",
       "rows[i][f\"{key}/significant\"] = bool(q < alpha)", "rows[i][f\"{key}/significant\"] = bool(p < alpha)",
       [T + "test_report_confidence.py::test_report_gives_intervals_and_holm_adjusted_welch_tests_against_the_baseline"],
       "'significant' is read from the unadjusted p, not Holm's"),
    _m("intervals_from_two_seeds", "aggregate.py", "MIN_N = 3", "MIN_N = 2",
       [T + "test_report_confidence.py::test_report_gives_intervals_and_holm_adjusted_welch_tests_against_the_baseline"],
       "the report gives intervals and tests from two seeds (a std with one degree of freedom)"),
    _m("included_rows_override_this_sweep", "report.py",
       "        if match is None:\n            kept.append(r)",
       "        if True:\n            kept.append(r)",
       [T + "test_report_confidence.py::test_an_included_leaderboard_is_tested_in_one_family_with_this_sweep"],
       "a configuration measured again in this sweep is also taken from the included leaderboard (two rows)"),
    _m("included_rows_keep_their_old_tests", "report.py",
       "if v not in (\"\", None) and k != \"baseline\" and not k.endswith(RECOMPUTED_SUFFIXES)}",
       "if v not in (\"\", None)}",
       [T + "test_report_confidence.py::test_an_included_leaderboard_is_tested_in_one_family_with_this_sweep"],
       "an included leaderboard's rows keep the intervals, p-values and baseline flag of their own report"),
    _m("rerun_with_failed_seeds_replaces_included_row", "report.py",
       "        if _enough_runs(match, r):", "        if True:",
       [T + "test_report_confidence.py::test_a_rerun_with_too_few_finished_runs_does_not_replace_the_earlier_row"],
       "a configuration rerun with one finished seed replaces the earlier sitting's five-seed row"),
    _m("included_rows_matched_by_sweep_label", "report.py",
       "    return str(row.get(\"config_id\") or row_label(row))", "    return row_label(row)",
       [T + "test_report_confidence.py::test_configurations_are_matched_by_their_own_overrides_not_by_the_sweep_s_labels"],
       "rows of different sittings are matched by their sweep-relative label: model=big's hinge replaces model=small's"),
    _m("chart_error_bar_is_std", "benchmark.py",
       "below.append(mean - lo if ok else math.nan)", "below.append(_num(r.get(f\"{key}/std\")) if ok else math.nan)",
       [T + "test_report_confidence.py::test_chart_error_bars_are_the_bootstrap_interval"],
       "the leaderboard chart's error bars show the std instead of the bootstrap interval"),
    _m("sweep_waits_out_ctrl_c", "sweep.py",
       "        for proc in alive:\n            proc.send_signal(signum)\n", "",
       [T + "test_sweep.py::test_a_signal_stops_the_sweep_instead_of_running_the_queue"],
       "Ctrl-C or SIGTERM leaves the sweep's running trainings going: the runner waits them out instead of stopping"),
    _m("sweep_keeps_inherited_sigint_ignore", "sweep.py",
       "(signal.SIGINT, signal.SIGTERM)}", "(signal.SIGTERM,)}",
       [T + "test_sweep.py::test_a_signal_stops_the_sweep_instead_of_running_the_queue"],
       "a sweep started as a background job (SIGINT ignored) cannot be stopped with kill -INT: it runs its whole queue"),
    # ---- evaluation, records, reliability
    _m("evaluation_not_reseeded", "metrics/image_callback.py",
       "        with self.seeded(device):  # G's noise from the seed", "        with self.isolated_rng(device):  # G's noise from the seed",
       [T + "test_metrics_evaluator.py::test_image_evaluation_draws_the_same_noise_whatever_came_before"],
       "an evaluation's noise depends on what was drawn before it: the same weights score differently"),
    _m("evaluation_consumes_training_rng", "metrics/evaluator.py",
       "        with torch.random.fork_rng(devices=[device.index or 0] if device.type == \"cuda\" else []):\n            yield",
       "        with contextlib.nullcontext():\n            yield",
       [T + "test_metrics_evaluator.py::test_evaluation_leaves_the_training_rng_untouched"],
       "evaluating during training changes the training run's random stream"),
    _m("checkpoint_write_in_place", "runio.py", "    tmp = temp_path(path)\n    try:", "    tmp = path\n    try:",
       [T + "test_reliability_files.py::test_atomic_write_leaves_the_old_file_when_the_writer_fails"],
       "checkpoints and summaries are written in place: a crash mid-write leaves a torn file"),
    _m("truncated_checkpoint_not_caught", "runio.py", "IndexError, OSError) as err:", "IndexError) as err:",
       [T + "test_reliability_files.py::test_a_truncated_checkpoint_is_a_checkpoint_error_wherever_it_is_loaded"],
       "a truncated checkpoint surfaces as a raw OSError instead of a one-line CheckpointError"),
    _m("disk_full_not_handled", "runio.py", "            if is_disk_full(err):", "            if False:",
       [T + "test_reliability_files.py::test_disk_full_keeps_the_last_checkpoint_records_the_status_and_resumes"],
       "a full disk during a save crashes the run instead of keeping the last checkpoint and recording it"),
    _m("applied_drops_spectral_norm", "models/gan.py",
       "return {name: reg.applied() for name, reg in self.regularizers.items()}",
       "return {name: reg.applied() for name, reg in self.regularizers.items() if name != \"spectral_norm\"}",
       [T + "test_applied.py::test_every_choice_is_applied_or_refused[gan-regularizer=spectral_norm]"],
       "summary.json's applied record leaves out a regularizer the run applied"),
    _m("contract_refuses_no_regularizer", "models/contract.py",
       "        if missing:\n            accepted", "        if False:\n            accepted",
       [T + "test_applied.py::test_the_issues_cases_are_refused_naming_the_key"],
       "a regularizer whose hook the model never calls is accepted and silently ignored"),
    # ---- ensemble=K (batched seeds) and the reproduction ledger
    _m("ensemble_pack_without_member_order", "nets/stacked.py",
       "flat = x.transpose(0, 1).reshape(b, k * h)", "flat = x.reshape(b, k * h)",
       [T + "test_ensemble.py::test_stacked_mlp_is_its_members_side_by_side_with_batch_norm_maxout_and_packing"],
       "PacGAN packing inside the batched D mixes samples of different members"),
    _m("ensemble_batch_norm_count_frozen", "nets/stacked.py",
       'getattr(self, f"num_batches_tracked_{j}").add_(1)', "pass",
       [T + "test_ensemble.py::test_stacked_mlp_is_its_members_side_by_side_with_batch_norm_maxout_and_packing"],
       "the batched BatchNorm does not count its batches (momentum=None averages go wrong)"),
    _m("ensemble_simultaneous_updates_in_turn", "models/ensemble.py",
       "            if not self.simultaneous:\n                self._update(loss, phase)",
       "            if True:\n                self._update(loss, phase)",
       [T + "test_ensemble.py::test_gdpp_cell_member_equals_single_run"],
       "updates=simultaneous in the ensemble steps D before G's gradient is taken"),
    _m("ledger_without_tolerance", "reproduce.py",
       "    return lo - tol <= published <= hi + tol", "    return lo <= published <= hi",
       [T + "test_reproduce.py::test_agrees_inside_at_the_edges_and_outside"],
       "the ledger ignores the paper's rounding and error when it compares"),
    _m("ledger_short_run_counts_as_done", "reproduce.py",
       '(status == "finished" and int(summary.get("g_steps") or 0) >= int(steps))', '(status == "finished")',
       [T + "test_reproduce.py::test_finished_seeds_are_not_trained_again"],
       "a run finished at a shorter schedule is taken as a finished run of the cell"),
    _m("ledger_verdict_without_agreement", "reproduce.py",
       "    if agreement is None:  # only", "    if agreement is None and False:  # only",
       [T + "test_reproduce.py::test_verdicts_on_hand_cases"],
       "a cell with no interval still gets reproduced / not reproduced"),
    # ---- the direct (hook-free) optimizer step
    _m("direct_step_keeps_old_gradients", "models/phased.py",
       "        if first:\n            opt.zero_grad(set_to_none=True)",
       '        if first and self.hook_path != "direct":\n            opt.zero_grad(set_to_none=True)',
       [T + "test_module.py::test_direct_path_trains_the_same_weights_as_lightnings_path"],
       "the direct path accumulates gradients across steps (no zero_grad)"),
    _m("direct_step_skips_after_update", "models/phased.py",
       "        self.after_update(phase)", '        if self.hook_path != "direct":\n            self.after_update(phase)',
       [T + "test_module.py::test_direct_path_trains_the_same_weights_as_lightnings_path"],
       "the direct path skips weight clipping / EMA after the step"),
    _m("host_skip_still_steps", "models/phased.py",
       "            if bad:\n                # Torch optimizers", "            if False:\n                # Torch optimizers",
       [T + "test_module.py::test_cpu_step_reads_the_flag_instead_of_copying_the_weights"],
       "a NaN/inf step on CPU is applied instead of skipped"),
    # ---- one G forward per step (G's phase reuses D's G(z))
    _m("shared_fake_never_shared", "models/gan.py",
       "        return self.simultaneous or (self.share_fake and \"g\" in self.phases())",
       "        return self.simultaneous",
       [T + "test_module.py::test_shared_fakes_train_bitwise_the_same_weights_with_one_g_forward_fewer[plain]"],
       "G's phase recomputes the G(z) that D's phase already computed: one G forward per step wasted"),
    _m("shared_fake_despite_spectral_norm", "models/gan.py",
       "or parametrize.is_parametrized(m) or m._forward_pre_hooks for m in net.modules())",
       "for m in net.modules())",
       [T + "test_module.py::test_fakes_are_not_shared_where_a_second_g_forward_is_not_a_repeat"],
       "fakes are shared where G's forward updates state (spectral norm's u): training changes"),
    _m("ensemble_fake_never_shared", "models/ensemble.py",
       "if shared is not None and self.g_scores_d_fakes():",
       "if shared is not None and self.simultaneous:",
       [T + "test_ensemble.py::test_ensemble_shares_g_of_d_phase_with_g_phase_bitwise"],
       "an ensemble's G phase recomputes the stacked G(z) of D's phase: one G forward per step wasted"),
)


# ---------------------------------------------------------------------------------------------------- the runner
@dataclass
class Result:
    name: str
    status: str  # caught | SURVIVED | STALE | AMBIGUOUS | INVALID | NO-TESTS | TIMEOUT | KILLED | BASELINE-FAILED
    seconds: float = 0.0
    by: str = ""  # the first failing node id (caught) or the reason (other outcomes)

    @property
    def ok(self) -> bool:
        return self.status == "caught"


_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.Lock()
_STOP = threading.Event()  # set on Ctrl-C: no new test run starts


def snippet_status(m: Mutant, root: Path) -> tuple[str, str]:
    """("", "") when ``m.original`` occurs exactly once in its file, else (status, reason)."""
    path = root / m.file
    if not m.file.startswith("src/"):
        return "INVALID", f"{m.file}: mutated files must lie under src/ (only src/ is copied)"
    if not path.is_file():
        return "STALE", f"{m.file} does not exist"
    text = path.read_text(encoding="utf-8")
    for i, (original, replacement) in enumerate(m.edits):
        which = "original snippet" if i == 0 else f"extra snippet {i}"
        n = text.count(original)
        if n == 0:
            return "STALE", f"{which} not found in {m.file}"
        if n > 1:
            return "AMBIGUOUS", f"{which} occurs {n} times in {m.file}"
        if original == replacement:
            return "INVALID", f"{which}: replacement equals the original"
    return "", ""


def _pytest(tests: Sequence[str], pythonpath: Path, root: Path, timeout: float, python: str,
            stop_first: bool = True) -> tuple[int | None, str]:
    """Run pytest on ``tests`` with ``pythonpath`` first; (exit code or None on timeout, output)."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "PYTHONDONTWRITEBYTECODE": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [python, "-m", "pytest", "-q", "-rfE", "-p", "no:xdist", "-p", "no:cacheprovider", "-m", "",
           *(["-x"] if stop_first else []), *tests]
    with _RUNNING_LOCK:
        if _STOP.is_set():
            raise KeyboardInterrupt
        # its own session: Ctrl-C reaches only this script, which then kills the whole group (training subprocesses too)
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        _RUNNING.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        _kill(proc)
        out, _ = proc.communicate()
        return None, out or ""
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(proc)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the test run and any training subprocess it started
    except (ProcessLookupError, PermissionError):
        pass


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def _first_failure(out: str) -> str:
    found = _FAILED.search(out)
    return found.group(1) if found else "(pytest failed; see its output with -v)"


def run_mutant(m: Mutant, root: Path = ROOT, timeout: float = 900.0, python: str = sys.executable,
               verbose: bool = False) -> Result:
    """Apply ``m`` to a temporary copy of ``root/src`` and run its tests against the copy."""
    status, why = snippet_status(m, root)
    if status:
        return Result(m.name, status, 0.0, why)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{m.name}-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(root / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), symlinks=True)
        target = Path(tmp) / m.file
        text = target.read_text(encoding="utf-8")
        for original, replacement in m.edits:
            text = text.replace(original, replacement, 1)
        target.write_text(text, encoding="utf-8")
        if target.suffix == ".py":
            try:
                py_compile.compile(str(target), cfile=str(Path(tmp) / "check.pyc"), doraise=True)
            except py_compile.PyCompileError as err:
                return Result(m.name, "INVALID", time.monotonic() - start, str(err).strip().splitlines()[-1])
        rc, out = _pytest(m.tests, src, root, timeout, python)
    seconds = time.monotonic() - start
    if _STOP.is_set():  # killed by Ctrl-C, not by the mutant
        raise KeyboardInterrupt
    if verbose:
        print(out, flush=True)
    if rc is not None and rc < 0:  # pytest itself died of a signal (OOM killer, segfault): inconclusive
        return Result(m.name, "KILLED", seconds, f"pytest died of signal {-rc}")
    if rc is None:
        return Result(m.name, "TIMEOUT", seconds, f"tests ran past {timeout:.0f} s")
    if rc == 0:
        return Result(m.name, "SURVIVED", seconds, "all listed tests passed")
    if rc in (4, 5):  # usage error (a node id not found) / nothing collected
        last = out.strip().splitlines()[-1] if out.strip() else ""
        return Result(m.name, "NO-TESTS", seconds, last)
    return Result(m.name, "caught", seconds, _first_failure(out))


def run_baseline(mutants: Sequence[Mutant], root: Path, timeout: float, python: str) -> tuple[bool, str, float]:
    """Run every listed test once on the unmutated source: all must pass for 'caught' to mean anything."""
    tests = sorted({t for m in mutants for t in m.tests})
    start = time.monotonic()
    rc, out = _pytest(tests, root / "src", root, timeout * max(1, len(mutants)), python, stop_first=False)
    seconds = time.monotonic() - start
    if rc == 0:
        return True, f"all {len(tests)} listed tests pass on the unmutated source", seconds
    if rc is None:
        return False, "baseline timed out", seconds
    failed = _FAILED.findall(out)
    return False, ("failing on the unmutated source: " + ", ".join(failed)) if failed else out[-2000:], seconds


def run_all(mutants: Sequence[Mutant], root: Path = ROOT, jobs: int = 1, timeout: float = 900.0,
            python: str = sys.executable, baseline: bool = True, verbose: bool = False,
            emit: Callable[[str], None] = print) -> tuple[list[Result], float]:
    """Run ``mutants`` (``jobs`` at a time); print a line per mutant as it finishes; return results, seconds."""
    start = time.monotonic()
    if baseline:
        ok, why, secs = run_baseline(mutants, root, timeout, python)
        emit(f"baseline  {secs:7.1f}s  {why}")
        if not ok:
            return [Result(m.name, "BASELINE-FAILED", 0.0, why) for m in mutants], time.monotonic() - start
    results: dict[str, Result] = {}
    width = max((len(m.name) for m in mutants), default=0)
    done = 0
    lock = threading.Lock()

    def one(m: Mutant) -> Result:
        nonlocal done
        r = run_mutant(m, root, timeout, python, verbose)
        with lock:
            done += 1
            emit(f"[{done:>2}/{len(mutants)}] {r.status:<9} {r.seconds:7.1f}s  {r.name:<{width}}  {r.by}")
        return r

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        for r in pool.map(one, mutants):
            results[r.name] = r
    except KeyboardInterrupt:
        with _RUNNING_LOCK:
            _STOP.set()
            for proc in list(_RUNNING):
                _kill(proc)
        pool.shutdown(wait=True, cancel_futures=True)  # the workers remove their temporary copies
        raise
    pool.shutdown()
    return [results[m.name] for m in mutants], time.monotonic() - start


def summary(results: Sequence[Result], seconds: float) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: kv[0] != "caught"))
    lines = [f"{len(results)} mutants: {parts}; {seconds:.0f} s in all"]
    lines += [f"  {r.status}: {r.name} ({r.by})" for r in results if not r.ok]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- the docs
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "⏎")


def _code(text: str, limit: int = 90) -> str:
    one = " ".join(text.strip().split())
    if len(one) > limit:
        one = one[: limit - 1] + "…"
    return "`" + _cell(one).replace("`", "'") + "`"


def markdown(mutants: Sequence[Mutant]) -> str:
    """The mutant table as Markdown: name, file, what breaks, original → replacement, catching tests."""
    rows = ["| # | mutant | file | what breaks | original → replacement | tests that catch it |",
            "|---|---|---|---|---|---|"]
    for i, m in enumerate(mutants, 1):
        tests = "<br>".join(f"`{t.removeprefix(T)}`" for t in m.tests)
        rows.append(f"| {i} | `{m.name}` | {m.file.removeprefix('src/gancollapse/')} | {_cell(m.breaks)} | "
                    f"{_code(m.original)} → {_code(m.replacement)}{' (+' + str(len(m.extra)) + ' more)' if m.extra else ''}"
                    f" | {tests} |")
    return "\n".join(rows) + "\n"


DOCS = ROOT / "docs" / "TESTING.md"
BEGIN, END = "<!-- mutants:begin (generated by scripts/mutants.py --write-docs) -->", "<!-- mutants:end -->"


def docs_with_table(text: str, mutants: Sequence[Mutant]) -> str:
    """``text`` with the part between the BEGIN/END markers replaced by the current table."""
    head, sep, rest = text.partition(BEGIN)
    if not sep or END not in rest:
        raise ValueError(f"docs/TESTING.md: markers {BEGIN!r} … {END!r} not found; add them where the table goes")
    return head + BEGIN + "\n" + markdown(mutants) + END + rest.split(END, 1)[1]


# ---------------------------------------------------------------------------------------------------- the CLI
def select(mutants: Sequence[Mutant], only: str | None) -> list[Mutant]:
    names = [m.name for m in mutants]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise SystemExit(f"mutants.py: duplicate mutant names {dup}")
    if not only:
        return list(mutants)
    want = [w.strip() for w in only.split(",") if w.strip()]
    unknown = [w for w in want if w not in names]
    if unknown:
        raise SystemExit(f"--only={','.join(unknown)}: no such mutant; `python scripts/mutants.py --list` names them")
    return [m for m in mutants if m.name in want]


def main(argv: Sequence[str] | None = None, mutants: Sequence[Mutant] = MUTANTS, root: Path = ROOT) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="comma-separated mutant names")
    p.add_argument("--list", action="store_true", help="print the table and exit")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown and exit")
    p.add_argument("--write-docs", action="store_true", help="refresh the table in docs/TESTING.md and exit")
    p.add_argument("--check", action="store_true", help="only check that every snippet is in the source")
    p.add_argument("--jobs", type=int, default=1, help="mutants run at a time (default 1)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant's tests (default 900)")
    p.add_argument("--no-baseline", action="store_true", help="skip the run of the tests on the unmutated source")
    p.add_argument("--json", type=Path, help="write the results to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="print pytest's output of each mutant")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs={args.jobs}: must be >= 1")
    chosen = select(mutants, args.only)
    if args.list:
        for m in chosen:
            print(f"{m.name:<34} {m.file.removeprefix('src/gancollapse/'):<34} {m.breaks}")
            for t in m.tests:
                print(f"{'':<36}{t}")
        return 0
    if args.markdown:
        sys.stdout.write(markdown(chosen))
        return 0
    if args.write_docs:  # always the whole table, whatever --only says
        DOCS.write_text(docs_with_table(DOCS.read_text(encoding="utf-8"), mutants), encoding="utf-8")
        print(f"wrote the table of {len(mutants)} mutants into {DOCS}")
        return 0
    if args.check:
        bad = [(m, *snippet_status(m, root)) for m in chosen]
        bad = [(m, s, why) for m, s, why in bad if s]
        for m, s, why in bad:
            print(f"{s:<9} {m.name}: {why}")
        print(f"{len(chosen) - len(bad)} of {len(chosen)} snippets found exactly once")
        return 1 if bad else 0
    try:
        results, seconds = run_all(chosen, root, args.jobs, args.timeout, baseline=not args.no_baseline,
                                   verbose=args.verbose)
    except KeyboardInterrupt:
        print("interrupted: running tests killed, temporary copies removed; the working tree was never modified")
        return 130
    print(summary(results, seconds))
    if args.json:
        args.json.write_text(json.dumps({"seconds": seconds, "results": [asdict(r) for r in results]}, indent=1))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
