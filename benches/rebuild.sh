#!/usr/bin/env bash
# The 10,000-Ingress rebuild on an idle core: `lb-proxy --workers 1` pinned
# to CPU 1 over 10,000 Ingresses of the shape benches/proxy.sh serves (one
# host each; /, /api/, /static/ Prefix and one regex path), one file edited
# and SIGHUP'd N times (default 25), 0.4 s apart. Prints the read + build +
# swap time of each rebuild (from lb-proxy's log), their median and p90 past
# the first two, and CPU and page faults per edit (the process's, over all
# the edits; quick edits may share a rebuild).
#
#   benches/rebuild.sh [N]      needs taskset; builds the release lb-proxy
#
# Listens on 127.0.0.1:18290 only; stops what it started.
set -euo pipefail
n=${1:-25}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -j2 --manifest-path "$root/Cargo.toml" -p lb-bins --bin lb-proxy >&2
bin="${CARGO_TARGET_DIR:-$root/target}/release/lb-proxy"
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/m"
cat > "$work/m/backend.yaml" <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: bench}
spec: {ports: [{name: http, port: 80, targetPort: 18180}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-1, namespace: bench, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
ports: [{name: http, port: 18180}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
EOF
ingress() { # name static-path
  printf '%s\n' "apiVersion: networking.k8s.io/v1" "kind: Ingress" \
    "metadata: {name: $1, namespace: bench, annotations: {nginx.ingress.kubernetes.io/use-regex: \"true\"}}" \
    "spec:" "  ingressClassName: lb" "  rules:" "  - host: $1.example" "    http:" "      paths:" \
    "      - {path: /, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}" \
    "      - {path: /api/, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}" \
    "      - {path: $2, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}" \
    "      - {path: \"/v[0-9]+/items/[a-z]+\$\", pathType: ImplementationSpecific, backend: {service: {name: backend, port: {number: 80}}}}"
}
for i in $(seq 0 9999); do ingress "h$i" /static/ > "$work/m/h$i.yaml"; done
# Files changed in the last 2 s are read again at every look (a rewrite
# within the clock's granularity could hide): let them age first.
sleep 3
taskset -c 1 "$bin" --manifests "$work/m" --http-listen 127.0.0.1:18290 --workers 1 --no-access-log \
  > /dev/null 2> "$work/log" &
pid=$!
for _ in $(seq 1 600); do grep -q "route table built" "$work/log" && break; sleep 0.1; done
sleep 1
stat() { awk '{print $14 + $15, $10}' "/proc/$pid/stat"; }
read -r t0 f0 < <(stat)
for i in $(seq 1 "$n"); do
  ingress h5 "/static$i/" > "$work/m/h5.yaml"
  kill -HUP "$pid"
  sleep 0.4
done
read -r t1 f1 < <(stat)
hz=$(getconf CLK_TCK)
grep "route table swapped" "$work/log" | sed -E 's/.*took=([0-9.]+)(ms|s|µs).*/\1 \2/' |
  awk '{v = $1; if ($2 == "s") v *= 1000; if ($2 == "µs") v /= 1000; printf "%.1f\n", v}' > "$work/took"
echo "rebuilds (ms, in order): $(tr '\n' ' ' < "$work/took")"
# The first two rebuilds after start grow the heap (two tables live at
# once for the first time): left out of the figures, shown above.
tail -n +3 "$work/took" | sort -n | awk -v cpu="$(( (t1 - t0) * 1000 / hz ))" -v faults="$((f1 - f0))" -v n="$n" \
  '{v[NR] = $1} END {printf "past the first two, %d rebuilds: median %.1f ms, p90 %.1f ms, max %.1f ms; per edit: CPU %.0f ms, %d page faults\n",
     NR, v[int((NR + 1) / 2)], v[int(NR * 0.9 + 0.5)], v[NR], cpu / n, faults / n}'
