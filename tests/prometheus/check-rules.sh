#!/usr/bin/env bash
# Renders the chart's PrometheusRule, then runs `promtool check rules` and the rule unit tests
# in rules_test.yaml against it (promtool ships with Debian's `prometheus` package).
#
#   tests/prometheus/check-rules.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
command -v promtool >/dev/null || { echo "promtool not found: apt-get install prometheus" >&2; exit 1; }
BIN=$("$repo/tests/cluster/build.sh")
# shellcheck source=../cluster/versions.env
source "$repo/tests/cluster/versions.env"
out="$repo/target/prometheus-rules"
mkdir -p "$out"
"$BIN/helm" template hybrid-operator "$repo/charts/hybrid-operator" --namespace hybrid-system \
  --kube-version "$K8S_VERSION" --set prometheusRule.enabled=true \
  --show-only templates/prometheusrule.yaml >"$out/prometheusrule.yaml"
# promtool reads plain rule files: the PrometheusRule's .spec is exactly that.
python3 - "$out/prometheusrule.yaml" "$out/rules.yaml" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
yaml.safe_dump(doc["spec"], open(sys.argv[2], "w"), sort_keys=False)
PY
cp "$here/rules_test.yaml" "$out/rules_test.yaml"
promtool check rules "$out/rules.yaml"
promtool test rules "$out/rules_test.yaml"
