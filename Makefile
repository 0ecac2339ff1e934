# The suite's commands.  `make test` and `make reproduce-fig1` create .venv and install what is
# missing on first use.  Variables: PROFILE (quick|paper|smoke), JOBS (parallel runs),
# THREADS (torch threads per run), LOGGER (auto|online|offline|local), RUNS (runs folder).
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PROFILE ?= quick
JOBS    ?= 2
THREADS ?= 1
LOGGER  ?= auto
RUNS    ?= runs
DATA    ?= data
SWEEP   := hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS) threads=$(THREADS) progress=false logger=$(LOGGER) paths.runs_dir=$(RUNS) paths.data_dir=$(DATA)

.PHONY: install data test test-all reproduce-fig1 figures export-fig1 lock clean-runs

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
	$(PY) -m analysis fig1 --runs $(RUNS)/fig1/$(PROFILE) --out figures/$(PROFILE)

# Every figure from the committed run records in results/ (no training).
figures: install
	$(PY) -m analysis fig1 --runs results/fig1 --profile quick --out docs/figures/quick
	$(PY) -m analysis fig1 --runs results/fig1 --profile quick --metric train_acc --out docs/figures/quick

# Copy the small record files of your fig1 runs into results/ (to commit them).
export-fig1: install
	$(PY) -m analysis export --runs $(RUNS)/fig1 --to results/fig1

lock: install
	{ echo "# Exact pins used by \`make install\` (pip constraints). Regenerate with \`make lock\`."; \
	  $(PY) -m pip freeze --exclude-editable; } > requirements/lock.txt

clean-runs:
	rm -rf $(RUNS)
