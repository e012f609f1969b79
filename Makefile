# The two commands of the README: `make run` and `make test` (plus `make bench`).
# First use creates .venv: torch/torchvision pinned and installed first (../shared/ENV.md),
# then the requirements with the versions in constraints.txt.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
PORT   ?= 8501
# Loopback only by default: anyone who can reach the port can upload, delete and use your
# Ollama. WORKBENCH_BIND=0.0.0.0 opens it to the network on purpose (see README, "Reliability
# and security", for an authenticating reverse proxy in front of a shared instance).
WORKBENCH_BIND ?= 127.0.0.1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install install-ocr run test test-fast lint bench browser clean-store

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install --disable-pip-version-check -q -c constraints.txt -r requirements-dev.txt
	$(PIP) install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

## Serve the app on :8501 over the embedded store; ingest knowledge_base/ first if the store is empty.
run: install
	$(PY) -m workbench ingest --if-empty
	$(VENV)/bin/streamlit run app.py --server.address $(WORKBENCH_BIND) --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

## Debian's Chromium for the browser tests (never `playwright install`).
browser:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-noto-color-emoji >/dev/null; }

## Debian's Tesseract (binary + English and orientation data): with it OCR_ENGINE=auto reads
## scans with Tesseract (CER 0.02 on ../shared/corpus/ocr, EasyOCR 0.14, at a fifth of the
## time); without it the app reads them with EasyOCR.
install-ocr:
	@test -x /usr/bin/tesseract -a -f /usr/share/tesseract-ocr/5/tessdata/osd.traineddata || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr tesseract-ocr-eng tesseract-ocr-osd >/dev/null; }

## The architecture contracts of pyproject.toml (import-linter).
lint: install
	$(VENV)/bin/lint-imports --no-cache

## Everything, as CI runs it (the 25 slowest tests listed at the end: the suite must stay
## under 20 minutes on 2 cores).
test: install install-ocr browser lint
	$(PY) -m pytest -q --durations=25

## The loop while you work: no corpus, SQuAD, OCR-heavy, Docker-prefetch or browser tests.
test-fast: install install-ocr lint
	$(PY) -m pytest -q -m "not slow and not browser"

## Every benchmark (tens of minutes; run it on a quiet machine), then one table of the speed
## goals against their anchors, also written into the README.
bench: install install-ocr
	$(PY) benchmarks/ingest.py
	@for b in benchmarks/*.py; do case $$b in benchmarks/ingest.py|benchmarks/goals.py|benchmarks/_common.py) ;; *) $(PY) $$b || exit 1;; esac; done
	$(PY) benchmarks/ocr.py --engine easyocr
	$(PY) benchmarks/goals.py --readme
