# edgekd: `make compress` and `make test` each set up .venv themselves on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TARGETS = $(basename $(notdir $(wildcard targets/*.yaml)))
ARGS ?=

.PHONY: help setup compress test test-slow bench-fashion clean $(TARGETS)

help:
	@echo "make compress        run 'edgekd compress --target x86-cpu' on the embedded default (digits)"
	@echo "make test            run the test suite"
	@echo "make test-slow       run only the slow tests (the default compress at its real settings)"
	@echo "make <target>        compress for one target file: $(TARGETS)"
	@echo "make bench-fashion   the Fashion-MNIST benchmark (benchmarks/fashion_mnist.py)"

# The stamp file is rebuilt when the dependency lists change. torch goes first: pip then
# resolves everything else against the CPU build (ENVIRONMENT.md explains why).
$(VENV)/.installed: pyproject.toml requirements-cpu.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -r requirements-cpu.txt
	$(PY) -m pip install --quiet -e '.[openvino,postgres,dev]'
	@echo "building NNCF's C++ extension (once, ~1 min)"
	NNCF_EXTENSION_LOAD_TIMEOUT=900 $(PY) -c "import nncf.torch.quantization.extensions, nncf.torch; nncf.torch.force_build_cpu_extensions()"
	touch $@

setup: $(VENV)/.installed

compress: setup
	$(VENV)/bin/edgekd compress --target x86-cpu $(ARGS)

$(TARGETS): setup
	$(VENV)/bin/edgekd compress --target $@ $(ARGS)

# Best effort (root, apt-get, online): sshd, PostgreSQL, Chromium and Fashion-MNIST, so that their
# tests run instead of skipping; pytest's last lines say what was skipped and how to enable it.
test: setup
	.ci/install-test-deps
	$(PY) -m pytest -q $(ARGS)

test-slow: setup
	$(PY) -m pytest -q -m slow $(ARGS)

bench-fashion: setup
	$(PY) benchmarks/fashion_mnist.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
