# One entry point for people and CI. `make test` installs everything into .venv and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# spark-submit picks the Python on PATH for the driver and workers: put the venv first.
export PATH := $(abspath $(VENV))/bin:$(PATH)
CONFIG ?= conf/ml-latest-small.yaml
ARGS ?=

.PHONY: install test lint format docs walks demo data-ml-100k clean

install: $(VENV)/.installed

# Extras to install: everything for development and CI; the Docker images pick their own
# (docker/Dockerfile: EXTRAS= for the Spark image, EXTRAS=train,eval,tensorboard for the
# trainer image).
EXTRAS ?= train,eval,dev,tensorboard

# With the train extra, TorchRec and FBGEMM for the sharded path come second, without their
# declared dependencies (requirements-sharded.txt says why); pip check then knows torchrec
# lacks "fbgemm-gpu" (the CUDA package name) while the CPU build is there: that line alone is
# expected. On a CUDA machine: make install FBGEMM=fbgemm-gpu==1.8.0.
FBGEMM ?= fbgemm-gpu-cpu==1.8.0
SHARDED ?= $(if $(findstring train,$(EXTRAS)),1,)
KNOWN_CHECK := torchrec 1.8.0 requires fbgemm-gpu, which is not installed.

$(VENV)/.installed: pyproject.toml constraints.txt requirements-sharded.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.$(if $(EXTRAS),[$(EXTRAS)])'
	$(if $(SHARDED),$(PY) -m pip install -q --no-deps -r requirements-sharded.txt '$(FBGEMM)')
	@$(PY) -m pip check > $(VENV)/pip-check.txt || true
	@if grep -v -x -F '$(KNOWN_CHECK)' $(VENV)/pip-check.txt | grep -v '^No broken' | grep .; \
	then echo "pip check found the conflicts above"; exit 1; fi
	touch $@

# The package as a zip for spark-submit --py-files on a cluster whose executors do not have it
# installed (their Python still needs the core dependencies: pyarrow, pandas, numpy).
dist/eges.zip: $(shell find eges -name '*.py') | install
	mkdir -p dist
	$(PY) -c "import zipfile,pathlib; z=zipfile.ZipFile('$@','w'); [z.write(p) for p in sorted(pathlib.Path('eges').rglob('*.py'))]; z.close()"

test: install lint
	$(PY) -m pytest

# Lint (pyflakes, pycodestyle, import order) and the formatter's check, both ruff (pinned in
# constraints.txt); `make format` rewrites the tree in that format.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The configuration reference, generated from eges/config.py (a test fails when it is stale)
docs: install
	$(PY) -m eges.config_reference --markdown > docs/configuration.md

# The walk job on one config, e.g. make walks CONFIG=conf/ml-100k.yaml ARGS="--set walks.seed=7"
# (the config's spark.driver.memory goes to spark-submit as --driver-memory: set in the job it
# would come after the driver JVM started)
walks: install
	submit="$$($(PY) jobs/walks.py --print-submit-args --config $(CONFIG) $(ARGS))" && \
	spark-submit $$submit jobs/walks.py --config $(CONFIG) $(ARGS)

# The main job: walks -> training (eges train --nproc-per-node: torchrun's launcher) ->
# evaluation against baselines -> report.
# make demo                                      MovieLens 100K (fetched from the recbole wheel)
# make demo DEMO_CONFIG=conf/ml-latest-small.yaml  ../shared/data/ml-latest-small
DEMO_CONFIG ?= conf/ml-100k.yaml
NPROC ?= 2
demo: install $(if $(findstring ml-100k,$(DEMO_CONFIG)),data-ml-100k)
	@echo "== 1/3 walk job (Spark local mode): $(DEMO_CONFIG)"
	submit="$$($(PY) jobs/walks.py --print-submit-args --config $(DEMO_CONFIG) $(ARGS))" && \
	spark-submit $$submit jobs/walks.py --config $(DEMO_CONFIG) --set output.overwrite=true $(ARGS)
	@echo "== 2/3 training ($(NPROC) processes, DDP through torchrun's launcher)"
	$(VENV)/bin/eges train --nproc-per-node=$(NPROC) --config $(DEMO_CONFIG) --set train.overwrite=true $(ARGS)
	@echo "== 3/3 evaluation against baselines + report"
	$(VENV)/bin/eges evaluate --config $(DEMO_CONFIG) --set evaluate.overwrite=true $(ARGS)

# MovieLens 100K in RecBole's atomic format ships inside the recbole wheel: fetch the wheel
# (2 MB, nothing installed) and unpack only the data set.
data-ml-100k: data/ml-100k/ml-100k.inter

data/ml-100k/ml-100k.inter: | install
	mkdir -p data/.wheel data/ml-100k
	$(PY) -m pip download -q --no-deps recbole==1.2.1 -d data/.wheel
	$(PY) -c "import zipfile,glob,pathlib; z=zipfile.ZipFile(glob.glob('data/.wheel/recbole-1.2.1-*.whl')[0]); [pathlib.Path('data/ml-100k', pathlib.Path(n).name).write_bytes(z.read(n)) for n in z.namelist() if n.startswith('recbole/dataset_example/ml-100k/ml-100k.')]"
	rm -rf data/.wheel

clean:
	rm -rf out dist .pytest_cache spark-warehouse
