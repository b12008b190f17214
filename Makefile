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

# A rerun replaces the previous demo's checkpoints (--overwrite True).
demo: venv fashion-mnist
	$(PY) -m monai.bundle run --config_file bundle/configs/cifar10.json --dataset fashion_mnist --data_root $(FASHION_MNIST_DIR) --overwrite True

# The chest X-ray bundle's workflow on a small generated MIMIC-style tree (numbers meaningless).
# DEMO_DICOM=/path/to/chest.dcm adds a real radiograph to the inference inputs.
DEMO_DICOM ?=
demo-bundle: venv
	$(PY) scripts/demo_bundle.py --out demo-bundle $(if $(DEMO_DICOM),--dicom $(DEMO_DICOM))

# The import contract first (pyproject.toml's [tool.importlinter]): a cycle or an upward import fails here.
test: venv fashion-mnist
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests

# MONAI Deploy and MONAI Label on a standalone copy of the bundle, each in a venv of its own. Neither joins
# $(VENV): MONAI Label pins its own versions (jsonschema 3, ...) and the Deploy SDK loads holoscan into every
# `import monai`. They cannot share one venv either: MONAI Label needs pydicom 2.4 (its pins below; its
# pydicom_seg fails under pydicom 3), and the Deploy SDK 4 needs pydicom 3 (pydicom.pixels) as soon as
# `import monai` loads monai.deploy. Each SDK venv sees $(VENV)'s packages behind its own (one .pth line),
# so torch and its CUDA libraries (about 5 GB) are installed once; whatever an SDK needs in another version
# pip installs into its venv, where it shadows $(VENV)'s copy. $(VENV) must be the venv that has torch.
# The import checks first: without them, missing SDKs would only make the tests skip.
LABEL_VENV ?= .venv-integration
DEPLOY_VENV ?= .venv-deploy
LABEL_PY := $(LABEL_VENV)/bin/python
DEPLOY_PY := $(DEPLOY_VENV)/bin/python
# MONAI Label with the pins of its own requirements.txt (its wheel's metadata asks only for ">=").
MONAILABEL_SPEC ?= monailabel==0.8.5 pydicom==2.4.4 dicomweb-client==0.59.1 pynetdicom==2.0.2
SAM2_SPEC ?= sam2==1.1.0
.PHONY: test-integration
test-integration: $(LABEL_VENV)/.installed $(DEPLOY_VENV)/.installed
	$(LABEL_PY) -c "import monailabel.interfaces.app, monailabel.tasks.train.bundle, monailabel.tasks.infer.bundle"
	$(LABEL_PY) -m pytest -q tests/test_deploy_label.py tests/test_monai_label_app.py
	$(DEPLOY_PY) -c "import monai.deploy.operators.monai_bundle_inference_operator"
	$(DEPLOY_PY) -m pytest -q tests/test_deploy_label.py

# $(1): a venv that sees $(VENV)'s site-packages through one .pth line.
define sdk_venv
test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
echo "import site; site.addsitedir('$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")')" \
  > "$$($(1)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_l2v_base_venv.pth"
$(1)/bin/python -c "import torch, torchvision"
$(1)/bin/python -m pip install --quiet --upgrade pip setuptools wheel
endef

$(LABEL_VENV)/.installed: pyproject.toml $(VENV)/.installed
	$(call sdk_venv,$(LABEL_VENV))
	# sam2 (a MONAI Label dependency) is a source package that builds against torch: built here against
	# $(VENV)'s torch, pip's isolated build would download another torch (about 5 GB) first.
	SAM2_BUILD_CUDA=0 $(LABEL_PY) -m pip install --quiet --no-build-isolation --no-deps $(SAM2_SPEC)
	$(LABEL_PY) -m pip install --quiet -e . pytest $(MONAILABEL_SPEC) $(TORCH_SPEC)
	touch $@

$(DEPLOY_VENV)/.installed: pyproject.toml $(VENV)/.installed
	$(call sdk_venv,$(DEPLOY_VENV))
	$(DEPLOY_PY) -m pip install --quiet -e '.[deploy]' pytest $(TORCH_SPEC)
	# The Deploy SDK installs into monai/deploy/. A monai/ without __init__.py here would lose to $(VENV)'s
	# regular package, and monai.deploy would not import: MONAI itself (same version, no deps) goes here too.
	$(DEPLOY_PY) -m pip install --quiet --no-deps --ignore-installed \
	  "monai==$$($(PY) -c "import importlib.metadata as m; print(m.version('monai'))")"
	touch $@

clean:
	rm -rf $(VENV) $(LABEL_VENV) $(DEPLOY_VENV) bundle/models bundle/eval bundle/cache demo-bundle .import_linter_cache
