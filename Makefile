# Two commands do everything on a fresh machine:
#   make demo   - set up, then run the main job (a small real `autodemo eval` on the local model)
#   make test   - set up, then run the whole test suite (unit + real-server integration tests)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The local GGUF models live in the checkout's models/ (`autodemo models fetch` puts them
# in the per-user cache dir when the variable is unset).
export AUTODEMO_MODELS_DIR ?= $(CURDIR)/models
TEST_GGUF := $(AUTODEMO_MODELS_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: setup models browser demo test unit lint bench cookbook docs clean

# llama-cpp-python compiles llama.cpp with -march=native by default, whose AMX kernels can die
# in a VM (docs/design/measured-choices.md): build portable AVX2 kernels (x86-64-v3; ggml's x86
# options). docs/getting-started/troubleshooting.md names this variable as the one flag list.
# It only takes effect on a new .venv (the stamp tracks pyproject.toml).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
# pip's wheel cache keys a built wheel by its sdist alone, not by CMAKE_ARGS: a wheel built once
# with -march=native was reused by a later fresh .venv and segfaulted CI. So the wheel
# is built here, never taken from pip's cache, into a folder named after the version and the
# flags, and later setups with the same flags install it from there instead of recompiling.
LLAMA_CPP_PIN := $(shell sed -n 's/.*"llama-cpp-python\[server\]==\([0-9.]*\)".*/\1/p' pyproject.toml)
LLAMA_FLAGS_ID := $(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
LLAMA_WHEELHOUSE ?= $(or $(AUTODEMO_CACHE_DIR),$(HOME)/.cache/langchain-autodemo)/wheels/llama-cpp-python-$(LLAMA_CPP_PIN)-$(LLAMA_FLAGS_ID)
LLAMA_WHEEL = $(wildcard $(LLAMA_WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_PIN)-*.whl)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@test -n "$(LLAMA_CPP_PIN)" || { echo "Makefile: no llama-cpp-python[server]==X pin in pyproject.toml" >&2; exit 1; }
	@test -n "$(LLAMA_WHEEL)" || { \
	  echo "building llama-cpp-python $(LLAMA_CPP_PIN) with $(LLAMA_CMAKE_ARGS) (about 5 minutes on 2 cores)"; \
	  tmp=$$(mktemp -d) && \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip wheel --quiet --no-cache-dir --no-deps \
	    --no-binary llama-cpp-python -w $$tmp "llama-cpp-python==$(LLAMA_CPP_PIN)" && \
	  mkdir -p "$(LLAMA_WHEELHOUSE)" && mv $$tmp/llama_cpp_python-*.whl "$(LLAMA_WHEELHOUSE)/" && rm -rf $$tmp; }
	$(PY) -m pip install --quiet "$$(ls $(LLAMA_WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_PIN)-*.whl)[server]"
	$(PY) -m pip install --quiet -e ".[cli,test,server,llamacpp,langgraph,dev,ray,docs]"
	touch $(STAMP)

setup: $(STAMP) models browser

# The playground test drives Debian's Chromium through Playwright. Where apt-get cannot
# install it (not root, not Debian), the test skips and says so.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	echo "warning: could not install chromium (needs apt-get as root): the playground test will skip"

models: $(STAMP)
	$(VENV)/bin/autodemo models fetch smollm2 qwen2.5-coder-1.5b

$(TEST_GGUF): $(STAMP)
	$(VENV)/bin/autodemo models fetch smollm2

# The main job: a shared-prompt workload (8 solved SST-2 exemplars before every call, final
# answers only), single against packed, priced in USD with prompt caching at gpt-4o-mini
# prices; about 3 minutes of model time on 2 cores. It ends with one sentence per method on
# what 32 items can and cannot show.
demo: setup
	$(VENV)/bin/autodemo eval --dataset sst2 --limit 32 --shots 8 --no-reasoning \
		--batch-sizes 16 --methods single,batch,auto_demo --out autodemo-results/demo

# The whole suite, then the documentation site with --strict (a broken link, a missing page
# or a docstring mkdocstrings cannot render fails the target, so CI).
test: $(STAMP) $(TEST_GGUF) browser
	$(PY) -m pytest tests
	$(VENV)/bin/mkdocs build --strict -q

# The documentation site into site/. mkdocs runs scripts/docs_hooks.py first, which writes the
# generated pages: the CLI reference (scripts/gen_cli_docs.py, from the typer app), the Results
# pages (scripts/build_results_pages.py, from docs/results/*/results.json and tune-*/tune.json),
# real prompts from build_batch_messages, and the cookbook notebooks (rendered with their saved
# outputs, never executed). `$(VENV)/bin/mkdocs serve` previews it.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

lint: $(STAMP)
	$(VENV)/bin/ruff check langchain_autodemo tests benchmarks
	$(VENV)/bin/ruff format --check langchain_autodemo
	$(VENV)/bin/mypy langchain_autodemo

bench: setup
	$(PY) -m benchmarks

# Re-run every cookbook notebook in place on the local Qwen model and save its outputs
# (one notebook at a time; AUTODEMO_MODEL=llamacpp:smollm2 make cookbook for a quick check).
cookbook: $(STAMP) models
	$(PY) scripts/run_cookbook.py $(if $(AUTODEMO_MODEL),--model $(AUTODEMO_MODEL))

clean:
	rm -rf $(VENV) models autodemo-results .pytest_cache
