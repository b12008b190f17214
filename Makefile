# Set-up and entry points. `make demo` and `make test` create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
# Users on another CUDA version override these, e.g.
#   make test TORCH_SPEC="torch torchvision" TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu121"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TORCH_PIP_ARGS ?=
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
PY := $(VENV)/bin/python

.PHONY: venv demo demo-bundle test fashion-mnist clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# The proof of concept reads Fashion-MNIST from Debian's package; install it when we may.
fashion-mnist:
	@if [ ! -d "$(FASHION_MNIST_DIR)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && apt-get install -y -q dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST not found at $(FASHION_MNIST_DIR): run 'sudo apt-get install dataset-fashion-mnist' or set FASHION_MNIST_DIR" >&2; exit 1; \
	  fi; \
	fi

demo: venv fashion-mnist
	$(PY) -m monai.bundle run --config_file bundle/configs/cifar10.json --dataset fashion_mnist --data_root $(FASHION_MNIST_DIR)

# The chest X-ray bundle's workflow on a small generated MIMIC-style tree (numbers meaningless).
# DEMO_DICOM=/path/to/chest.dcm adds a real radiograph to the inference inputs.
DEMO_DICOM ?=
demo-bundle: venv
	$(PY) scripts/demo_bundle.py --out demo-bundle $(if $(DEMO_DICOM),--dicom $(DEMO_DICOM))

# The import contract first (pyproject.toml's [tool.importlinter]): a cycle or an upward import fails here.
test: venv fashion-mnist
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests

# MONAI Deploy and MONAI Label on a standalone copy of the bundle, in a venv of their own: MONAI Label
# pins its own versions (jsonschema 3, ...) and the Deploy SDK loads holoscan into every `import monai`,
# so neither joins $(VENV). The integration venv sees $(VENV)'s packages behind its own (one .pth line),
# so torch and its CUDA libraries (about 5 GB) are installed once, not twice; whatever the SDKs need in
# another version pip installs into the integration venv, where it shadows $(VENV)'s copy.
# The import check first: without it, missing SDKs would only make the tests skip.
INTEGRATION_VENV ?= .venv-integration
INTEGRATION_PY := $(INTEGRATION_VENV)/bin/python
.PHONY: test-integration
test-integration: $(INTEGRATION_VENV)/.installed
	$(INTEGRATION_PY) -c "import monai.deploy.operators.monai_bundle_inference_operator, monailabel.tasks.infer.bundle"
	$(INTEGRATION_PY) -m pytest -q tests/test_deploy_label.py

$(INTEGRATION_VENV)/.installed: pyproject.toml $(VENV)/.installed
	test -x $(INTEGRATION_PY) || $(PYTHON) -m venv $(INTEGRATION_VENV)
	echo "import site; site.addsitedir('$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")')" \
	  > "$$($(INTEGRATION_PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_l2v_base_venv.pth"
	$(INTEGRATION_PY) -c "import torch, torchvision"
	$(INTEGRATION_PY) -m pip install --quiet --upgrade pip
	$(INTEGRATION_PY) -m pip install --quiet -e '.[deploy]' pytest monailabel $(TORCH_SPEC)
	# The Deploy SDK installs into monai/deploy/. A monai/ without __init__.py here would lose to $(VENV)'s
	# regular package, and monai.deploy would not import: MONAI itself (same version, no deps) goes here too.
	$(INTEGRATION_PY) -m pip install --quiet --no-deps --ignore-installed \
	  "monai==$$($(PY) -c "import importlib.metadata as m; print(m.version('monai'))")"
	touch $@

clean:
	rm -rf $(VENV) $(INTEGRATION_VENV) bundle/models bundle/eval bundle/cache demo-bundle .import_linter_cache
