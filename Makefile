# codemill — the two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
OUT ?= codemill-out
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo demo-selfinstruct test test-fast lint bench bench-scale install java jvm-archive clean

# The virtualenv is (re)built when pyproject.toml changes.
$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "codemill needs Python 3.11 or newer (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(INSTALLED)

# Spark needs Java 17+: say so before a long install, not after.
java:
	@command -v java >/dev/null 2>&1 || [ -x "$$JAVA_HOME/bin/java" ] || { \
		echo "codemill: Spark needs a Java runtime (17 or newer) and none was found."; \
		echo "  Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless"; \
		echo "  macOS:         brew install openjdk@17"; \
		echo "  or set JAVA_HOME to an existing JDK 17+."; exit 1; }

# Spark's driver starts seconds sooner from a class archive, recorded once per Java runtime
# and Spark installation by a small run (about a minute; ~/.cache/codemill/jvm).
jvm-archive: java $(INSTALLED)
	@$(VENV)/bin/codemill jvm-archive || echo "codemill: no JVM class archive; runs work, but start slower"

# The pretraining DAG on this machine's own code, then a tiny model trained on its base mix,
# exported for transformers and scored on HumanEval's first problems (pass@1 near 0: it is tiny).
demo: java $(INSTALLED) jvm-archive
	$(VENV)/bin/codemill run --out $(OUT) $(ARGS)
	$(VENV)/bin/codemill train --config codemill/configs/train-tiny.toml --run $(OUT) --mix base \
		--out $(OUT)/train-demo
	rm -rf $(OUT)/hf-demo
	$(VENV)/bin/codemill export-hf $(OUT)/train-demo --tokenizer $(OUT)/shards --out $(OUT)/hf-demo
	$(VENV)/bin/codemill eval --model $(OUT)/hf-demo --limit 20 --max-new-tokens 128 \
		--set sandbox.allow_weaker_isolation=true --out $(OUT)/eval-demo

# Self-instruct end to end on a CPU with the model `make demo` trained (made first if
# missing): seed tasks mined from this machine's documented functions, the DAG with the
# tiny model as question and code model, then instruction tuning on its shards.
demo-selfinstruct: java $(INSTALLED)
	test -f $(OUT)/hf-demo/config.json || $(MAKE) demo
	$(VENV)/bin/codemill seeds '{stdlib}' '{site_packages}' --limit 40 --out $(OUT)/seeds.jsonl
	$(VENV)/bin/codemill selfinstruct codemill/configs/selfinstruct-demo.toml --out $(OUT)/selfinstruct-demo \
		--set selfinstruct.seed_tasks='"$(OUT)/seeds.jsonl"' \
		--set selfinstruct.question_model.path='"$(OUT)/hf-demo"' \
		--set selfinstruct.code_model.path='"$(OUT)/hf-demo"' \
		--set selfinstruct.output.tokenizer='"$(OUT)/shards/tokenizer.model"'
	$(VENV)/bin/codemill train --config codemill/configs/finetune-tiny.toml --selfinstruct $(OUT)/selfinstruct-demo \
		--set init_from='"$(OUT)/train-demo/checkpoint.pt"' --resume=auto --out $(OUT)/train-selfinstruct-demo

# Everything, as CI runs it: the lint, then every test (Spark, Luigi, torch), then the
# sandbox's hostile programs, in a PID and mount namespace of their own where root can make
# one, so that a broken sandbox cannot harm the host.
ISOLATED := $(shell [ "$$(id -u)" = 0 ] && unshare --fork --pid --mount-proc true 2>/dev/null \
	&& echo unshare --fork --pid --mount-proc)
test: java lint jvm-archive
	$(PY) -m pytest -q --durations=15 --ignore tests/selfinstruct/test_sandbox.py $(PYTEST_ARGS)
	$(ISOLATED) $(PY) -m pytest -q tests/selfinstruct/test_sandbox.py $(PYTEST_ARGS)

# The tests that need no JVM: kernels, config, loader, model; about a minute.
test-fast: $(INSTALLED)
	$(PY) -m pytest -q -m "not spark" $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(VENV)/bin/ruff check codemill tests benchmarks

bench: java $(INSTALLED) jvm-archive
	$(PY) -m benchmarks.run_all

# The whole DAG on synthetic corpora of 100k and 1M documents with a 1 GB driver: time and
# memory per stage, and how they grow (over an hour on 2 cores; corpora cached in bench-out/).
bench-scale: java $(INSTALLED) jvm-archive
	$(PY) -m benchmarks.scale

clean:
	rm -rf codemill-out bench-out
