# Set-up and everyday commands. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The chat demo: a real model if MODEL is given, else a tiny random-weight one (gibberish output).
MODEL ?=
Q ?= 介绍一下混合专家模型。
DEMO_DIR := .cache/demo-model

.PHONY: install browser fonts app chat ask ingest test unit integration lint format type bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/python -m pip install --quiet -e ".[llama-cpp,transformers,rag,web,serve,hub,test,dev,bench]"
	touch $(STAMP)

install: $(STAMP)

chat: install
ifeq ($(MODEL),)
	@test -f $(DEMO_DIR)/tiny-mixtral-f32.gguf || $(BIN)/cmrag tiny-model $(DEMO_DIR)
	@echo "No MODEL given: answering with a tiny random-weight model (expect gibberish)."
	@echo "Use a real one: make chat MODEL=/path/to/chinese-mixtral-instruct-q4_k.gguf"
	$(BIN)/cmrag chat --model-path $(DEMO_DIR)/tiny-mixtral-f32.gguf --max-tokens 64 "$(Q)"
else
	$(BIN)/cmrag chat --model-path "$(MODEL)" "$(Q)"
endif

# The main job: set up, ingest the sample documents, open the web app on http://127.0.0.1:7860
# (search-only until MODEL points at a Chinese-Mixtral GGUF file or HF checkpoint directory).
app: install
	$(BIN)/python -m ingest examples/docs --collection examples -q $(if $(MODEL),--model-path "$(MODEL)")
	$(BIN)/cmrag web --collection examples --examples examples/README.md $(if $(MODEL),--model-path "$(MODEL)")

DOCS ?= ../shared/data/docs/laws
ingest: install
	$(BIN)/python -m ingest "$(DOCS)"

# Set up, ingest DOCS, answer QUESTION from them with numbered sources, in the terminal.
QUESTION ?= 民法典中关于居住权的规定有哪些？
ask: install
ifeq ($(MODEL),)
	@test -f $(DEMO_DIR)/tiny-mixtral-f32.gguf || $(BIN)/cmrag tiny-model $(DEMO_DIR)
	@echo "No MODEL given: retrieval is real, the answer comes from a tiny random-weight model."
	$(BIN)/python -m ingest "$(DOCS)" --model-path $(DEMO_DIR)/tiny-mixtral-f32.gguf -q
	$(BIN)/cmrag ask --model-path $(DEMO_DIR)/tiny-mixtral-f32.gguf --max-tokens 64 "$(QUESTION)"
else
	$(BIN)/python -m ingest "$(DOCS)" --model-path "$(MODEL)" -q
	$(BIN)/cmrag ask --model-path "$(MODEL)" "$(QUESTION)"
endif

# Debian's chromium (and CJK fonts) for the browser end-to-end test; Playwright drives it, no
# browser download. Without root or apt the browser test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null; } || echo "could not install chromium: the browser test will be skipped"

# A Chinese font the OCR tests print their scanned pages with (Debian's fonts-wqy-zenhei).
fonts:
	@test -f /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-zenhei >/dev/null; } || echo "could not install fonts-wqy-zenhei: the OCR tests will be skipped"

test: install browser fonts lint
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=25

unit: install
	$(BIN)/python -m pytest -q tests/unit

integration: install
	$(BIN)/python -m pytest -q tests/integration

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python benchmarks/stream_speed.py
	$(BIN)/python benchmarks/ingest_speed.py
	$(BIN)/python benchmarks/retrieval_eval.py
	$(BIN)/python benchmarks/prefix_reuse.py
	$(BIN)/python benchmarks/ocr_speed.py
	$(BIN)/python benchmarks/structured_speed.py

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
