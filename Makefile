# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean results

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,medical,explain,onnx,openvino,torchao,compress,serve,detection,ssl]'
	touch $(STAMP)

venv: $(STAMP)

# The main job: train ResNet-18 on CIFAR-10 for one epoch of the fast CPU recipe, then evaluate it.
# Data: DATA=PATH, else $$RESNETLAB_DATA, else $$RESNETLAB_CACHE/cifar10 (default ~/.cache/resnetlab), else a download.
DATA ?=
DEMO_OUT ?= runs/demo
demo: $(STAMP)
	$(VENV)/bin/resnetlab train --config cifar10-resnet18-fast --epochs 1 --download --out $(DEMO_OUT) --overwrite \
		$(if $(DATA),--data $(DATA))
	$(VENV)/bin/resnetlab eval --checkpoint $(DEMO_OUT) --split test

test: $(STAMP)
	$(PY) -m pytest -q

# The page's browser test (tests/test_serve_page.py) needs headless Chromium and its driver: `make browser` installs
# Debian's when they are missing (as root, with apt-get). Where it cannot, `make test` still runs: that test skips,
# or fails under CI=true.
.PHONY: browser
test: browser
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium and chromium-driver (apt-get) for the browser test"; \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; } \
			|| echo "could not install chromium: tests/test_serve_page.py will skip (fail with CI=true)" >&2; \
	else echo "no /usr/bin/chromium or /usr/bin/chromedriver, and no root apt-get to install them:" \
		"tests/test_serve_page.py will skip (fail with CI=true)" >&2; fi

# Every file in benchmarks/results/ (and docs/analysis/) regenerated, each naming the commit it was made at:
# about 3.3 hours on 2 cores (benchmarks/run_all.py has the table). ONLY=job[,job] runs some of them;
# `$(PY) benchmarks/run_all.py --list` shows which results are stale (src/ changed since their commit).
ONLY ?=
results: $(STAMP)
	$(PY) benchmarks/run_all.py $(if $(DATA),--data $(DATA)) $(if $(ONLY),--only $(ONLY))

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
