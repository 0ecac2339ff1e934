# The suite's commands.  `make test` and `make reproduce-fig1` create .venv and install what is
# missing on first use.  Variables: PROFILE (quick|paper|smoke), DEVICE (auto|cpu|cuda|cuda:1),
# JOBS (runs in parallel: 2 on CPU; 10 with PROFILE=paper, so the 10 Fig. 1 runs share one GPU),
# THREADS (torch CPU threads per run), LOGGER (auto|online|offline|local), RUNS (runs folder),
# LAUNCHER (joblib: runs in parallel on this machine; slurm / slurm_gpu: SLURM array jobs, README "Running on a
# SLURM cluster"; SLURM_ARGS adds hydra.launcher.* overrides, e.g. SLURM_ARGS=hydra.launcher.partition=gpu).
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PROFILE ?= quick
DEVICE  ?= auto
JOBS    ?= $(if $(filter paper,$(PROFILE)),10,2)
THREADS ?= 1
LOGGER  ?= auto
RUNS    ?= runs
# Where the datasets live: DATA=..., else $$RMT_DATA_ROOT, else ./data.
DATA    ?= $(or $(RMT_DATA_ROOT),data)
LAUNCHER ?= joblib
SLURM_ARGS ?=
LAUNCH_joblib    := hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS) device=$(DEVICE)
LAUNCH_slurm     := hydra/launcher=slurm device=$(DEVICE) $(SLURM_ARGS)
LAUNCH_slurm_gpu := hydra/launcher=slurm_gpu device=$(if $(filter auto,$(DEVICE)),cuda,$(DEVICE)) $(SLURM_ARGS)
LAUNCH  := $(or $(LAUNCH_$(LAUNCHER)),$(error LAUNCHER=$(LAUNCHER) is not one of joblib, slurm, slurm_gpu))
SWEEP   := $(LAUNCH) threads=$(THREADS) progress=false logger=$(LOGGER) paths.runs_dir=$(RUNS) paths.data_dir=$(DATA)

export RMT_RUNS_DIR := $(abspath $(RUNS))
FIG     := figures/$(PROFILE)

.PHONY: install data test test-all reproduce-fig1 reproduce-p1-fig2 reproduce-p1-fig3 reproduce-p1-fig4 \
        reproduce-p1-var reproduce-p1-ablation reproduce-p1-mag reproduce-p1-cnn reproduce-p1-confidence reproduce-p2-fig2 reproduce-p2-fig3 reproduce-p2-fig4 \
        reproduce-p2-fig5 reproduce-p2-examples reproduce-p2-esd reproduce-p3-rand reproduce-p3-loss reproduce-p3-regression reproduce-p3-vit-demo reproduce-p3-vit-mp reproduce-p3-vit \
        reproduce-p3-vitl reproduce-p4 reproduce-all figures export-results lock clean-runs gpu-pack gpu-pack-bundle gpu-pack-ingest reproduction

$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c requirements/lock.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# MNIST and Fashion-MNIST into $(DATA): $$RMT_DATA_MIRROR, else ../shared/data, else download.
data: install
	$(PY) -m experiments.data $(DATA)

# Fast tests (CI). `make test-all` also runs the ones marked slow.
test: data
	RMT_DATA_ROOT=$(abspath $(DATA)) $(PY) -m pytest -q

test-all: data
	RMT_DATA_ROOT=$(abspath $(DATA)) $(PY) -m pytest -q -m ''

# P1 Fig. 1: sweep 5 topologies x 2 arms, then draw the figure from the logged runs.
reproduce-fig1: data
	$(PY) -m experiments.train -m experiment=fig1 profile=$(PROFILE) $(SWEEP)
	$(PY) -m analysis fig1 --runs $(RUNS)/fig1/$(PROFILE) --out $(FIG)
	$(PY) -m analysis fig1-train --runs $(RUNS)/fig1/$(PROFILE) --out $(FIG)

# P2 Figs. 2-3: the synthetic spiked matrix, 5 seeds of its noise (paper settings, seconds).
reproduce-p2-fig2 reproduce-p2-fig3: install
	$(PY) -m experiments.synthetic -m 'seed=range(0,5)'
	$(PY) -m analysis p2-synthetic --runs $(RUNS)/p2_synthetic --out figures/paper

# P2 Fig. 4: [784,1000,10] trained 10 epochs, ESD of its first layer (paper profile: ~30 s on 2 cores).
reproduce-p2-fig4: PROFILE = paper
reproduce-p2-fig4: data
	$(PY) -m experiments.train experiment=p2_fig4 profile=$(PROFILE) progress=false logger=$(LOGGER) paths.data_dir=$(DATA)
	$(PY) -m analysis esd --run $(RUNS)/p2_fig4/$(PROFILE)/fc1000-s0 --layers 1 --name p2_fig4 --out figures/$(PROFILE)

# P2 Fig. 5: accuracy vs singular values kept in that layer, MP-predicted rank marked.
reproduce-p2-fig5: PROFILE = paper
reproduce-p2-fig5: reproduce-p2-fig4
	$(PY) -m experiments.rank_sweep profile_name=$(PROFILE)
	$(PY) -m analysis p2-fig5 --run $(RUNS)/p2_fig5/$(PROFILE)/layer1 --out figures/$(PROFILE)

# P1 Figs. 3-4: three more topologies, normal vs RMT-pruned.
reproduce-p1-fig3 reproduce-p1-fig4: data
	$(PY) -m experiments.train -m experiment=p1_fig3 profile=$(PROFILE) $(SWEEP)
	$(PY) -m analysis p1-fig3 --runs $(RUNS)/p1_fig3/$(PROFILE) --out $(FIG)
	$(PY) -m analysis p1-fig4 --runs $(RUNS)/p1_fig3/$(PROFILE) --out $(FIG)

# P1 Fig. 2 is the train accuracy of Fig. 1 panels (c), (d).
reproduce-p1-fig2: reproduce-fig1
	$(PY) -m analysis p1-fig2 --runs $(RUNS)/fig1/$(PROFILE) --out $(FIG)

# P1 random-initialisation variance: 5 seeds x 2 arms.
reproduce-p1-var: data
	$(PY) -m experiments.train -m experiment=p1_var profile=$(PROFILE) $(SWEEP)
	$(PY) -m analysis p1-var --runs $(RUNS)/p1_var/$(PROFILE) --out $(FIG)
	$(PY) -m analysis p1-var-ratio --runs $(RUNS)/p1_var/$(PROFILE) --out $(FIG)

# Fashion-MNIST ablation: {normal, rmt} x {none, L1+L2, L2}.
reproduce-p1-ablation: data
	$(PY) -m experiments.train -m experiment=p1_fmnist_ablation profile=$(PROFILE) $(SWEEP)
	$(PY) -m analysis p1-ablation --runs $(RUNS)/p1_fmnist_ablation/$(PROFILE) --out $(FIG)
	$(PY) -m analysis p1-ablation-train --runs $(RUNS)/p1_fmnist_ablation/$(PROFILE) --out $(FIG)

# P2 Examples 4.3-4.7 (Figs. 6-10) and the parameter table.
reproduce-p2-examples: data
	$(PY) -m experiments.train -m experiment=p2_examples profile=$(PROFILE) $(SWEEP)
	$(PY) -m analysis p2-examples --runs $(RUNS)/p2_examples/$(PROFILE) --out $(FIG)

# P2 Ex. 4.4 "Tables 1/2": which layers of the trained non-split / split nets fit MP, by the runs' own fit and GoF test
# (alpha 0.2, beta 0.1, gamma 0.012) with the noise floor of iid matrices of each shape: one experiments.mp_fits record
# per arm (read from the training record: no checkpoint needed), then the ESD grids with their fit tables.
ESD_P2  := --alpha 0.2 --beta 0.1 --gof-threshold 0.012
reproduce-p2-esd: data
	$(PY) -m experiments.train -m experiment=p2_examples panel=p2_ex4_4 arm=normal,rmt profile=$(PROFILE) $(SWEEP)
	for arm in normal rmt; do $(PY) -m experiments.mp_fits name=p2_esd profile_name=$(PROFILE) run_name=p2_ex4_4-$$arm-s0 \
	  source_run=$(RUNS)/p2_examples/$(PROFILE)/p2_ex4_4-$$arm-s0 alpha=0.2 beta=0.1 gof_threshold=0.012 paths.runs_dir=$(RUNS) || exit 1; done
	$(PY) -m analysis esd --run $(RUNS)/p2_esd/$(PROFILE)/p2_ex4_4-normal-s0 --name esd_p2_ex4_4_non_split $(ESD_P2) --out $(FIG)
	$(PY) -m analysis esd --run $(RUNS)/p2_esd/$(PROFILE)/p2_ex4_4-rmt-s0 --name esd_p2_ex4_4_split $(ESD_P2) --out $(FIG)

# P3 randomness vs epoch, without and with L2.
reproduce-p3-rand: data
	$(PY) -m experiments.train -m experiment=p3_rand profile=$(PROFILE) $(SWEEP)
	$(PY) -m analysis p3-rand --runs $(RUNS)/p3_rand/$(PROFILE) --out $(FIG)

# P1 accuracy vs non-zero parameters: magnitude thresholds on the Fig. 1 (b) nets.
reproduce-p1-mag: reproduce-fig1
	$(PY) -m experiments.magnitude_sweep profile_name=$(PROFILE)
	$(PY) -m analysis p1-mag --run $(RUNS)/p1_mag/$(PROFILE)/fig1b --out $(FIG)

# P1 confidence lemma: [784, N, N, 10] nets for 5 widths, then the bound check.
reproduce-p1-confidence: data
	$(PY) -m experiments.train -m experiment=p1_confidence profile=$(PROFILE) $(SWEEP)
	$(PY) -m experiments.confidence_bound profile_name=$(PROFILE)
	$(PY) -m analysis p1-confidence --run $(RUNS)/p1_confidence_bound/$(PROFILE) --out $(FIG)

# P1 CNN on Fashion-MNIST, conv layers pruned through their unfolded matrices.
reproduce-p1-cnn: data
	$(PY) -m experiments.train -m experiment=p1_cnn profile=$(PROFILE) $(SWEEP)
	$(PY) -m analysis p1-cnn --runs $(RUNS)/p1_cnn/$(PROFILE) --out $(FIG)
	$(PY) -m experiments.magnitude_sweep profile_name=$(PROFILE) run_name=cnn threshold_scale=20 \
	    normal_run=$(RUNS)/p1_cnn/$(PROFILE)/normal-s0 rmt_run=$(RUNS)/p1_cnn/$(PROFILE)/rmt-s0 paths.runs_dir=$(RUNS)
	$(PY) -m analysis p1-mag --run $(RUNS)/p1_mag/$(PROFILE)/cnn --out $(FIG)

# P3 loss vs randomness removed / noise added, on the L2-trained P3 randomness run.
reproduce-p3-loss: reproduce-p3-rand
	$(PY) -m experiments.randomness_removal profile_name=$(PROFILE)
	$(PY) -m analysis p3-loss --run $(RUNS)/p3_loss/$(PROFILE)/from-l2_strong-s0 --out $(FIG)

# P3 regression remark: noisy Fourier targets, fixed features; one learned matrix trained with none / L1 / L2 / MP
# pruning, 5 seeds (paper-like setting, no data files; ~1 min on one CPU thread), then the MSE and spectra figure.
reproduce-p3-regression: install
	$(PY) -m experiments.p3_regression -m 'seed=range(0,5)' device=$(if $(filter auto,$(DEVICE)),cpu,$(DEVICE)) threads=$(THREADS) paths.runs_dir=$(RUNS)
	$(PY) -m analysis p3-regression --runs $(RUNS)/p3_regression/paper --out figures/paper

# P3 demo: a small timm ViT trained here on Fashion-MNIST (not an ImageNet model), then P3's pruning cycles with
# magnitude and structured baselines, then every pruned checkpoint fine-tuned with its mask frozen.
reproduce-p3-vit-demo: data
	$(PY) -m experiments.train experiment=p3_vit_demo profile=$(PROFILE) device=$(DEVICE) progress=false logger=$(LOGGER) paths.runs_dir=$(RUNS) paths.data_dir=$(DATA)
	$(PY) -m experiments.p3_prune experiment=p3_vit_demo_prune profile=$(PROFILE) device=$(DEVICE) progress=false paths.runs_dir=$(RUNS) paths.data_dir=$(DATA)
	$(PY) -m experiments.train -m experiment=p3_vit_demo_ft profile=$(PROFILE) $(SWEEP)
	$(PY) -m analysis p3-vit --run $(RUNS)/p3_vit_demo_prune/$(PROFILE)/vit-s0 --ft-runs $(RUNS)/p3_vit_demo_ft/$(PROFILE) --out $(FIG)

# P3's MP-fit diagnostics on the demo ViT: every layer's fit at P3's alpha 0.25, beta 0.8 and P3's alpha sweep (fit,
# spikes, budget), from the trained run's record (experiments.mp_fits), then the figure, the tables and the ESD grid.
ESD_P3  := --alpha 0.25 --beta 0.8 --gof-threshold 0.135
reproduce-p3-vit-mp: data
	$(PY) -m experiments.train experiment=p3_vit_demo profile=$(PROFILE) device=$(DEVICE) progress=false logger=$(LOGGER) paths.runs_dir=$(RUNS) paths.data_dir=$(DATA)
	$(PY) -m experiments.mp_fits profile_name=$(PROFILE) paths.runs_dir=$(RUNS)
	$(PY) -m analysis p3-vit-mp --run $(RUNS)/p3_vit_mp/$(PROFILE)/vit-s0 --out $(FIG)
	$(PY) -m analysis esd --run $(RUNS)/p3_vit_mp/$(PROFILE)/vit-s0 --name esd_p3_vit_demo $(ESD_P3) --out $(FIG)

# P3 on ImageNet (needs $$IMAGENET_ROOT with train/ and val/ in synset folders, and the pretrained weights in timm's
# cache or as model.checkpoint=<file>; without them the first command stops with one error saying what to put where).
reproduce-p3-vit: install
	$(PY) -m experiments.p3_prune experiment=p3_vitb device=$(DEVICE) paths.runs_dir=$(RUNS)
	$(PY) -m experiments.train -m experiment=p3_vit_ft prune=p3_vitb/paper/vitb16 profile=paper $(SWEEP)
	$(PY) -m analysis p3-vit --run $(RUNS)/p3_vitb/paper/vitb16 --ft-runs $(RUNS)/p3_vit_ft/paper --out figures/paper

reproduce-p3-vitl: install
	$(PY) -m experiments.p3_prune experiment=p3_vitl device=$(DEVICE) paths.runs_dir=$(RUNS)
	$(PY) -m experiments.train -m experiment=p3_vit_ft prune=p3_vitl/paper/vitl16 name=p3_vitl_ft profile=paper $(SWEEP)
	$(PY) -m analysis p3-vit --run $(RUNS)/p3_vitl/paper/vitl16 --ft-runs $(RUNS)/p3_vitl_ft/paper --out figures/paper/vitl

# P4 pruning-ratio limit: FC5 and FC12 on MNIST and Fashion-MNIST trained with CE + L1, then per net the global
# magnitude curve at p = i/1000, the Hessian density by SLQ, the predicted limit and the MP view; figure and table.
reproduce-p4: data
	$(PY) -m experiments.train -m experiment=p4 profile=$(PROFILE) $(SWEEP)
	$(PY) -m experiments.p4_limit -m profile_name=$(PROFILE) $(LAUNCH) \
	  threads=$(THREADS) progress=false paths.runs_dir=$(RUNS) paths.data_dir=$(DATA)
	$(PY) -m analysis p4 --runs $(RUNS)/p4_limit/$(PROFILE) --out $(FIG)

# The GPU pack (docs: README "Paper scale on one GPU"): paper-profile runs under a wall-clock budget on a machine with
# nothing but Python + torch; archives into OUT.  It runs without .venv (the GPU machine has no registry): the bundle
# (`make gpu-pack-bundle DATASETS=mnist`, written here) brings Hydra, OmegaConf and pytest, and the datasets.
OUT     ?= pack-out
BUDGET  ?= 540
DATASETS ?= mnist
PACK_PY := $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-pack:
	$(PACK_PY) -m experiments.pack run --out $(OUT) --budget $(BUDGET) --profile $(if $(filter quick,$(PROFILE)),paper,$(PROFILE)) --device $(DEVICE)

gpu-pack-bundle: data
	$(PY) -m experiments.pack bundle --datasets $(DATASETS) --data-root $(DATA)

gpu-pack-ingest: install
	$(PY) -m experiments.pack ingest $(OUT)/*.tgz

reproduce-all: reproduce-fig1 reproduce-p1-fig2 reproduce-p1-fig3 reproduce-p1-var reproduce-p1-ablation reproduce-p1-mag reproduce-p1-cnn reproduce-p1-confidence \
               reproduce-p2-fig2 reproduce-p2-fig5 reproduce-p2-examples reproduce-p2-esd reproduce-p3-loss reproduce-p3-regression reproduce-p3-vit-demo \
               reproduce-p3-vit-mp reproduce-p4

# Every figure from the committed run records in results/ (no training) into docs/figures/.
R := results
D := docs/figures
# The P1 experiments as run before: the P2 code's re-split (factors), 100 epochs (variant rows of REPRODUCTION.md).
RF := variants/resplit-factors
figures: install
	for f in fig1 fig1-train p1-fig2; do $(PY) -m analysis $$f --runs $(R)/fig1/quick --out $(D)/quick || exit 1; done
	for f in p1-fig3 p1-fig4; do $(PY) -m analysis $$f --runs $(R)/p1_fig3/quick --out $(D)/quick || exit 1; done
	for f in p1-var p1-var-train p1-var-ratio; do $(PY) -m analysis $$f --runs $(R)/p1_var/quick --out $(D)/quick || exit 1; done
	for f in p1-ablation p1-ablation-train; do $(PY) -m analysis $$f --runs $(R)/p1_fmnist_ablation/quick --out $(D)/quick || exit 1; done
	$(PY) -m analysis p1-cnn --runs $(R)/p1_cnn/quick --out $(D)/quick
	$(PY) -m analysis p1-mag --run $(R)/p1_mag/quick/cnn --out $(D)/quick
	$(PY) -m analysis p1-cnn --runs $(R)/variants/p1-cnn-authors-schedule/p1_cnn/quick --out $(D)/variants/p1-cnn-authors-schedule
	for f in p1-ablation p1-ablation-train; do $(PY) -m analysis $$f --runs $(R)/variants/p1-ablation-authors-baseline/p1_fmnist_ablation/quick --out $(D)/variants/p1-ablation-authors-baseline || exit 1; done
	$(PY) -m analysis p1-mag --run $(R)/p1_mag/quick/fig1b --out $(D)/quick
	$(PY) -m analysis p1-confidence --run $(R)/p1_confidence_bound/quick --out $(D)/quick
	$(PY) -m analysis p2-examples --runs $(R)/p2_examples/quick --out $(D)/quick
	$(PY) -m analysis esd --run $(R)/p2_examples/quick/p2_ex4_3-normal-s0 --name esd_p2_ex4_3_non_split --out $(D)/quick
	$(PY) -m analysis esd --run $(R)/p2_examples/quick/p2_ex4_3-rmt-s0 --name esd_p2_ex4_3_split --out $(D)/quick
	$(PY) -m analysis esd --run $(R)/p2_esd/quick/p2_ex4_4-normal-s0 --name esd_p2_ex4_4_non_split $(ESD_P2) --out $(D)/quick
	$(PY) -m analysis esd --run $(R)/p2_esd/quick/p2_ex4_4-rmt-s0 --name esd_p2_ex4_4_split $(ESD_P2) --out $(D)/quick
	$(PY) -m analysis p3-rand --runs $(R)/p3_rand/quick --out $(D)/quick
	$(PY) -m analysis p3-loss --run $(R)/p3_loss/quick/from-l2_strong-s0 --out $(D)/quick
	$(PY) -m analysis p3-vit --run $(R)/p3_vit_demo_prune/quick/vit-s0 --ft-runs $(R)/p3_vit_demo_ft/quick --out $(D)/quick
	$(PY) -m analysis p3-vit-mp --run $(R)/p3_vit_mp/quick/vit-s0 --out $(D)/quick
	$(PY) -m analysis esd --run $(R)/p3_vit_mp/quick/vit-s0 --name esd_p3_vit_demo $(ESD_P3) --out $(D)/quick
	$(PY) -m analysis p4 --runs $(R)/p4_limit/quick --out $(D)/quick
	$(PY) -m analysis p4 --runs $(R)/p4_limit/paper --out $(D)/paper
	if [ -d $(R)/fig1/paper ]; then for f in fig1 fig1-train; do $(PY) -m analysis $$f --runs $(R)/fig1/paper --out $(D)/paper || exit 1; done; fi
	if [ -d $(R)/fig1/paper/fig1c-normal-s0 ]; then $(PY) -m analysis p1-fig2 --runs $(R)/fig1/paper --out $(D)/paper; fi
	if [ -d $(R)/p1_fig3/paper ]; then for f in p1-fig3 p1-fig4; do $(PY) -m analysis $$f --runs $(R)/p1_fig3/paper --out $(D)/paper || exit 1; done; fi
	if [ -d $(R)/p1_var/paper ]; then for f in p1-var p1-var-train; do $(PY) -m analysis $$f --runs $(R)/p1_var/paper --out $(D)/paper || exit 1; done; fi
	if [ -d $(R)/p1_fmnist_ablation/paper ]; then for f in p1-ablation p1-ablation-train; do $(PY) -m analysis $$f --runs $(R)/p1_fmnist_ablation/paper --out $(D)/paper || exit 1; done; fi
	if [ -d $(R)/p2_examples/paper ]; then $(PY) -m analysis p2-examples --runs $(R)/p2_examples/paper --out $(D)/paper; fi
	if [ -d $(R)/p3_vit_demo_prune/paper ]; then $(PY) -m analysis p3-vit --run $(R)/p3_vit_demo_prune/paper/vit-s0 --ft-runs $(R)/p3_vit_demo_ft/paper --out $(D)/paper; fi
	$(PY) -m analysis p3-rand --runs $(R)/p3_rand/paper --out $(D)/paper
	$(PY) -m analysis p3-loss --run $(R)/p3_loss/paper/from-l2_strong-s0 --out $(D)/paper
	$(PY) -m analysis p3-regression --runs $(R)/p3_regression/paper --out $(D)/paper
	$(PY) -m analysis p2-synthetic --runs $(R)/p2_synthetic --out $(D)/paper
	$(PY) -m analysis esd --run $(R)/p2_fig4/paper/fc1000-s0 --layers 1 --name p2_fig4 --out $(D)/paper
	$(PY) -m analysis p2-fig5 --run $(R)/p2_fig5/paper/layer1 --out $(D)/paper
	$(PY) -m analysis fig1 --runs $(R)/variants/resplit-product/fig1 --out $(D)/variants/resplit-product
	for f in fig1 fig1-train p1-fig2; do $(PY) -m analysis $$f --runs $(R)/$(RF)/fig1/quick --out $(D)/$(RF) || exit 1; done
	for f in p1-fig3 p1-fig4; do $(PY) -m analysis $$f --runs $(R)/$(RF)/p1_fig3/quick --out $(D)/$(RF) || exit 1; done
	for f in p1-var p1-var-train; do $(PY) -m analysis $$f --runs $(R)/$(RF)/p1_var/quick --out $(D)/$(RF) || exit 1; done
	for f in p1-ablation p1-ablation-train; do $(PY) -m analysis $$f --runs $(R)/$(RF)/p1_fmnist_ablation/quick --out $(D)/$(RF) || exit 1; done
	$(PY) -m analysis p1-cnn --runs $(R)/$(RF)/p1_cnn/quick --out $(D)/$(RF)
	$(PY) -m analysis p1-mag --run $(R)/$(RF)/p1_mag/quick/fig1b --out $(D)/$(RF)
	$(PY) -m analysis p2-examples --runs $(R)/variants/p2-code/p2_examples/quick --out $(D)/variants/p2-code

# docs/REPRODUCTION.md from the committed records and docs/reproduction/template.md (numbers and verdicts).
reproduction: install
	$(PY) -m analysis reproduction

# Copy the small record files (no checkpoints) of every run in $(RUNS) into results/ (to commit them).
export-results: install
	$(PY) -m analysis export --runs $(RUNS) --to results

lock: install
	{ echo "# Exact pins used by \`make install\` (pip constraints). Regenerate with \`make lock\`."; \
	  $(PY) -m pip freeze --exclude-editable; } > requirements/lock.txt

clean-runs:
	rm -rf $(RUNS)
