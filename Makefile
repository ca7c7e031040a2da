# dynamo-offloading: build, check and test the Helm chart.
#
#   make          install the toolchain, generate and check, lint, render every environment, package
#   make test     the test suite (pytest against real Helm 3 and Helm 4)
#   make help     every target

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := all

VENV     := .venv
PYTHON   := $(VENV)/bin/python
HELM     := .tools/bin/helm
CHART    := chart
DIST     := dist
RENDERED := build/rendered
RELEASE  ?= dynamo
VERSION  := $(shell sed -n 's/^version: *//p' $(CHART)/Chart.yaml)
ENVS     := $(basename $(notdir $(wildcard values/*.yaml)))
PYTEST_ARGS ?=

.PHONY: all help deps venv tools generate check lint render package image image-test push push-chart push-image require-registry test bench cluster cluster-down prometheus dynamo-runtime dashboard-look e2e kvbm-bundle kvbm-gpu clean

all: generate check lint render package ## Generate, check, lint, render every environment and package

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: .tools/.debian-packages ## Install the Debian packages the build needs
.tools/.debian-packages: hack/debian-packages.txt hack/install-debian-packages.sh
	hack/install-debian-packages.sh
	@mkdir -p $(@D) && touch $@

venv: $(VENV)/.installed ## Create .venv from the pinned requirements, with the hooks package (dynamo-hooks)
$(VENV)/.installed: requirements.txt hooks/pyproject.toml | .tools/.debian-packages
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps -e hooks
	@touch $@

tools: .tools/.helm .tools/.checkov ## Install Helm 4 (default) and Helm 3 into .tools/bin, checkov into .tools/checkov
.tools/.helm: hack/install_helm.py | $(VENV)/.installed
	$(PYTHON) hack/install_helm.py
	@touch $@

.tools/.checkov: hack/checkov-requirements.txt | .tools/.debian-packages
	python3 -m venv .tools/checkov
	.tools/checkov/bin/python -m pip install --quiet --disable-pip-version-check -r hack/checkov-requirements.txt
	@touch $@

generate: .tools/.helm ## Write values.yaml, values.schema.json, chart README and values/ from generator/
	$(PYTHON) -m generator generate

check: .tools/.helm ## Fail when a generated file is stale or an environment breaks a rule (rendered with Helm)
	$(PYTHON) -m generator check

lint: .tools/.helm ## helm lint --strict for every environment, ruff for the Python
	@for env in $(ENVS); do \
	  echo "helm lint --strict -f values/$$env.yaml"; \
	  $(HELM) lint --strict --quiet $(CHART) -f values/$$env.yaml; \
	done
	$(VENV)/bin/ruff check generator hack hooks testbed tests

render: .tools/.helm ## Render every values/<env>.yaml into build/rendered/<env>.yaml
	@mkdir -p $(RENDERED)
	@for env in $(ENVS); do \
	  $(HELM) template $(RELEASE) $(CHART) -f values/$$env.yaml > $(RENDERED)/$$env.yaml; \
	  echo "Rendered $(RENDERED)/$$env.yaml"; \
	done

SIGN_KEY ?=
KEYRING  ?= $(HOME)/.gnupg/secring.gpg

package: .tools/.helm ## Package the chart into dist/dynamo-offloading-<version>.tgz (SIGN_KEY=<name> also signs it)
	@mkdir -p $(DIST)
	$(HELM) package $(CHART) --destination $(DIST) $(if $(SIGN_KEY),--sign --key "$(SIGN_KEY)" --keyring $(KEYRING))
	@test -f $(DIST)/dynamo-offloading-$(VERSION).tgz

HOOKS_IMAGE := dynamo-offloading-hooks
IMAGE_ARCHIVE := $(DIST)/$(HOOKS_IMAGE)-$(VERSION).oci.tar
PLAIN_HTTP ?=

# Both are built before either is pushed: a failed image build publishes nothing.
push: require-registry package $(IMAGE_ARCHIVE) push-chart push-image ## Build when needed, then push the chart and the hooks image to REGISTRY=host:port (PLAIN_HTTP=1 without TLS)

require-registry:
	@test -n "$(REGISTRY)" || { echo "make $(MAKECMDGOALS): set REGISTRY=host:port"; exit 2; }

push-chart: require-registry package ## Push the chart to oci://$(REGISTRY)/charts/dynamo-offloading:<version>
	$(HELM) push $(DIST)/dynamo-offloading-$(VERSION).tgz oci://$(REGISTRY)/charts $(if $(PLAIN_HTTP),--plain-http)

push-image: require-registry $(IMAGE_ARCHIVE) ## Push the hooks image (built first when missing or older than its sources) to $(REGISTRY)/dynamo-offloading-hooks:<version>
	skopeo copy $(if $(PLAIN_HTTP),--dest-tls-verify=false) oci-archive:$(IMAGE_ARCHIVE) \
	  docker://$(REGISTRY)/$(HOOKS_IMAGE):$(VERSION)

test: .tools/.helm .tools/.checkov dynamo-runtime prometheus check ## Check generated files, then run the test suite
	$(VENV)/bin/pytest $(PYTEST_ARGS)

image: $(IMAGE_ARCHIVE) ## Build the hooks image into dist/dynamo-offloading-hooks-<version>.oci.tar when its sources changed (Docker, else buildah; make -B image forces it)

# What the image is made of: the hooks package and the build's own code.
IMAGE_SOURCES := $(shell git ls-files hooks hack/image 2>/dev/null)

$(IMAGE_ARCHIVE): $(VENV)/.installed .tools/.debian-packages $(IMAGE_SOURCES)
	$(PYTHON) -m hack.image --version $(VERSION)

image-test: image .tools/.helm ## Run dynamo-hooks inside the built image against real servers; push it to a real registry
	$(VENV)/bin/pytest -p no:cacheprovider tests/image $(PYTEST_ARGS)

cluster: $(VENV)/.installed ## Build (once, cached by version) and start a local Kubernetes control plane; build/cluster/kubeconfig
	$(PYTHON) hack/cluster.py up

cluster-down: ## Stop the local control plane and free its ports
	$(PYTHON) hack/cluster.py down

prometheus: $(VENV)/.installed ## Build (once, cached by version) Prometheus and promtool from the Prometheus Go module, for the alert and dashboard tests
	$(PYTHON) hack/prometheus.py build

dynamo-runtime: ## Install (once, cached by its pins) the real Dynamo runtime the cluster tests serve with, CPU only
	python3 hack/dynamo_runtime.py install

e2e: .tools/.helm cluster dynamo-runtime prometheus ## helm install, upgrade, test, rollback and uninstall on the local control plane (Helm 3 and 4)
	$(VENV)/bin/pytest -p no:cacheprovider tests/e2e $(PYTEST_ARGS)

bench: .tools/.helm cluster dynamo-runtime ## Time rendering, each hook step and a release's install/upgrade/uninstall; prints a table
	$(PYTHON) -m hack.bench

# Not part of the test suite: it redraws the chart README's picture. Chromium is installed on first use only.
dashboard-look: .tools/.helm dynamo-runtime prometheus ## Draw the serving dashboard with real data (the Dynamo runtime, a real Prometheus, headless chromium) into docs/serving-dashboard.png
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }
	$(PYTHON) -m hack.dashboard_look

KVBM_VERSIONS ?=
KVBM_BUNDLE   := build/kvbm-gpu

kvbm-bundle: $(VENV)/.installed .tools/.helm ## Pack what make kvbm-gpu needs on a GPU machine into build/kvbm-gpu: KVBM per release line, FUSE, the chart's rendered worker cases
	$(PYTHON) hack/kvbm_bundle.py $(KVBM_VERSIONS)
	$(PYTHON) -m testbed.kvbm_cases $(KVBM_VERSIONS) > $(KVBM_BUNDLE)/cases.json.partial
	mv $(KVBM_BUNDLE)/cases.json.partial $(KVBM_BUNDLE)/cases.json

# Runs where it is started, with nothing but python3 and PyTorch: no venv, no Helm (make kvbm-bundle did that).
kvbm-gpu: ## On a GPU machine (root, /dev/fuse, PyTorch, build/kvbm-gpu carried): the real KVBM driven by the chart's worker environment, each release line; prints a table
	python3 -m testbed.kvbm_gpu $(KVBM_VERSIONS)

clean: ## Remove build outputs (keeps .venv and .tools)
	rm -rf $(DIST) build .pytest_cache
