# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,onnx,openvino,torchao]'
	touch $(STAMP)

venv: $(STAMP)

# The main job: train ResNet-18 on CIFAR-10 for one epoch of the fast CPU recipe, then evaluate it.
# Data: DATA=PATH, else $$RESNETLAB_DATA, else ~/.cache/resnetlab/cifar10, else a download (md5-checked).
DATA ?=
DEMO_OUT ?= runs/demo
demo: $(STAMP)
	$(VENV)/bin/resnetlab train --config cifar10-resnet18-fast --epochs 1 --download --out $(DEMO_OUT) \
		$(if $(DATA),--data $(DATA))
	$(VENV)/bin/resnetlab eval --checkpoint $(DEMO_OUT) --split test

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
