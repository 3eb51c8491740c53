# ecgtune: `make demo` runs the main job on the embedded data, `make test` runs the tests.
# Both create .venv on first use and reuse it afterwards.
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU wheel of this torch lies on local disk here; on a GPU machine set TORCH_SPEC to the CUDA build
# you want. It is installed before the project so the resolver never pulls an unpinned multi-GB torch.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.ecgtune-installed

.PHONY: demo test install lint

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ecgtune demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest
