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

# The Grafana dashboard: every panel query must parse as PromQL, and every metric it (or an
# alert) uses must be one docs/metrics.md documents.
python3 - "$repo" "$out/dashboard-rules.yaml" <<'PY'
import json, re, sys, yaml
repo, out = sys.argv[1], sys.argv[2]
dash = json.load(open(f"{repo}/charts/hybrid-operator/dashboards/hybrid.json"))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
rules = [{"record": f"dashboard:panel{i}", "expr": e.replace("$namespace", ".*").replace("$model", ".*")}
         for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(out, "w"), sort_keys=False)
documented = set(re.findall(r"`(hybrid_(?:runtime|operator)_[a-z0-9_]+)`", open(f"{repo}/docs/metrics.md").read()))
alerts = yaml.safe_load(open(out.replace("dashboard-rules.yaml", "rules.yaml")))
used = set()
for e in exprs + [r["expr"] for g in alerts["groups"] for r in g["rules"]]:
    used |= set(re.findall(r"\b(hybrid_(?:runtime|operator)_[a-z0-9_]+?)(?:_bucket|_sum|_count)?\b", e))
missing = sorted(used - documented)
if missing:
    sys.exit(f"metrics used by the dashboard or alerts but not in docs/metrics.md: {missing}")
print(f"dashboard: {len(exprs)} queries; {len(used)} metric names, all documented")
PY
promtool check rules "$out/dashboard-rules.yaml"
