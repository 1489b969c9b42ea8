#!/usr/bin/env bash
# Memory of lb-controller per LoadBalancer Service in file mode: the
# largest resident set of `--once` over N generated Services (default
# 100,000), minus that of an empty directory, divided by N.
#   benches/footprint.sh [N]      (builds the release binary first)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n=${1:-100000}
cargo build --release -p lb-bins --bin lb-controller -j2 >/dev/null 2>&1
bin=target/release/lb-controller
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/pool.yaml" <<'YAML'
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: bench, namespace: metallb-system}
spec: {addresses: [10.0.0.0/12]}
YAML
rss() { /usr/bin/time -f %M "$bin" --manifests "$1" --once --output json 2>&1 >/dev/null | tail -n 1; }
base=$(rss "$dir")
for ((i = 0; i < n; i++)); do
  printf -- '---\napiVersion: v1\nkind: Service\nmetadata: {name: svc-%d, namespace: ns%d}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n' "$i" $((i % 100))
done >"$dir/services.yaml"
bytes=$(stat -c %s "$dir/services.yaml")
rm -rf "$dir/.lb"
full=$(rss "$dir")
echo "services: $n  manifests: $((bytes / 1024)) KiB  max RSS: $((base / 1024)) MiB empty, $((full / 1024)) MiB full"
echo "per Service: $(((full - base) * 1024 / n)) bytes ($(((full - base) * 1024 / bytes))x the manifest bytes)"
