# workbench: two commands on a fresh machine with Python 3.11, pip and make.
#   make serve   set everything up and serve the dashboards (panel serve apps/)
#   make test    set everything up and run the whole test suite (unit, notebooks, browser)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PORT   ?= 5006
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup serve test browser lint bench screenshots clean

setup: $(STAMP)

# torch is pinned through constraints.txt to the CPU wheel these machines carry; nothing we install
# pulls torchvision or a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all]'
	touch $(STAMP)

serve: setup
	$(BIN)/panel serve apps/ --port $(PORT) --allow-websocket-origin=localhost:$(PORT) --allow-websocket-origin=127.0.0.1:$(PORT)

browser:
	bash scripts/ensure_chromium.sh

test: setup browser
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=900 --nbmake -n 2 --dist loadfile

lint: setup
	$(BIN)/ruff check workbench tests benchmarks apps

bench: setup
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,benchmarks]'
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# one PNG per dashboard (and the landing page) from the served apps, for the README
screenshots: setup browser
	OMP_NUM_THREADS=1 $(BIN)/python scripts/screenshots.py --out docs/images

clean:
	rm -rf $(VENV) .pytest_cache
