# The two commands the README leads with are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test unit e2e generate lint demo cluster-up cluster-down

## Everything CI checks: formatting, lints, unit/integration tests, generated-file drift, chart, e2e.
test: lint unit e2e

## Unit and integration tests (no cluster needed).
unit:
	$(CARGO) test --workspace

## Cluster e2e: start the local control plane, run the e2e tests, stop it (also on failure).
e2e:
	tests/cluster/e2e.sh

## Regenerate committed files (CRD YAML in the chart, docs/api.md).
generate:
	$(CARGO) run -q -p hybrid-crds --bin crdgen -- --chart charts/hybrid-operator --docs docs/api.md

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

cluster-up:
	tests/cluster/cluster.sh up
cluster-down:
	tests/cluster/cluster.sh down

## The product's main job locally (see README).
demo:
	scripts/demo.sh
