#!/usr/bin/env bash
# lb-proxy against nginx on this machine, in the pinned layout: the load
# generator (wrk, one thread) and the upstream (nginx, one worker) on CPU 0,
# the proxy under test alone on CPU 1 with one worker. 64 keep-alive
# connections to host h37.example, path /api/users, through a table of
# 50 hosts x 4 paths (/, /api/, /static/ and one regex), upstream
# keep-alive on both sides, access logs off on both sides.
#
#   benches/proxy.sh [rounds]      (default 5; env DURATION=10 seconds a run)
#
# Needs: wrk, nginx (Debian's nginx-light), taskset, openssl, 2+ CPUs.
# Traffic stays on 127.0.0.1. Every process it starts is stopped at exit.
#
# Prints one TSV line per run, then medians over the rounds and the
# same-round ratios lb/nginx (rps, p99, CPU per request), then the reload
# runs: 10 reloads/s under load for both proxies (nginx -s reload; lb: an
# Ingress rewritten and SIGHUP), and a 10,000-Ingress table rebuilt under
# load (rebuild times from lb-proxy's log).
set -euo pipefail

ROUNDS=${1:-5}
DUR=${DURATION:-10}
CONNS=${CONNS:-64}
BASE=${PORT_BASE:-18080}
UP=$BASE NGX=$((BASE + 1)) NGXS=$((BASE + 2)) LB=$((BASE + 3)) LBS=$((BASE + 4)) LBM=$((BASE + 5)) LB10K=$((BASE + 6))
HOST=h37.example
URLPATH=/api/users

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for tool in wrk nginx taskset openssl getconf; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install wrk nginx-light util-linux openssl)" >&2; exit 2; }
done
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs (the proxy alone on CPU 1)" >&2; exit 2; }
HZ=$(getconf CLK_TCK)

(cd "$root" && cargo build --release -q -p lb-bins --bin lb-proxy) >&2
bin="${CARGO_TARGET_DIR:-$root/target}/release"
[ "${CARGO_TARGET_DIR:-}" ] && [[ "$CARGO_TARGET_DIR" != /* ]] && bin="$root/$CARGO_TARGET_DIR/release"

work=$(mktemp -d /tmp/lb-proxy-bench.XXXXXX)
pids=()
cleanup() {
  for f in "$work"/up/nginx.pid "$work"/px/nginx.pid; do
    [ -f "$f" ] && kill -QUIT "$(cat "$f")" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work"/{up,px,lb,lb10k,out}

# --- certificates: one ECDSA P-256 wildcard for both proxies ---------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=*.example" -addext "subjectAltName=DNS:*.example" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

# --- nginx: upstream and proxy ----------------------------------------------
common="pid PIDFILE; error_log ERRLOG warn; worker_processes 1; worker_shutdown_timeout 10s;
events { worker_connections 4096; }"
temp() { echo "client_body_temp_path $1/cbt; proxy_temp_path $1/pt; fastcgi_temp_path $1/ft; uwsgi_temp_path $1/ut; scgi_temp_path $1/st;"; }
{
  echo "${common//PIDFILE/$work/up/nginx.pid}" | sed "s|ERRLOG|$work/up/error.log|"
  echo "http { access_log off; keepalive_requests 1000000; keepalive_timeout 65s; $(temp "$work/up")"
  echo "  server { listen 127.0.0.1:$UP backlog=4096; location / { default_type text/plain; return 200 'ok'; } } }"
} > "$work/up/nginx.conf"
{
  echo "${common//PIDFILE/$work/px/nginx.pid}" | sed "s|ERRLOG|$work/px/error.log|"
  cat <<EOF
http { access_log off; keepalive_requests 1000000; keepalive_timeout 65s; $(temp "$work/px")
  server_names_hash_bucket_size 64;
  ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
  upstream backend { server 127.0.0.1:$UP; keepalive 128; keepalive_requests 1000000; }
  proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$host;
  proxy_set_header X-Real-IP \$remote_addr; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$host;
  proxy_set_header X-Forwarded-Port \$server_port; proxy_buffering on;
  server { listen 127.0.0.1:$NGX default_server backlog=4096; listen 127.0.0.1:$NGXS ssl default_server backlog=4096; return 404; }
EOF
  for i in $(seq 0 49); do
    cat <<EOF
  server { listen 127.0.0.1:$NGX; listen 127.0.0.1:$NGXS ssl; server_name h$i.example;
    location / { proxy_pass http://backend; } location /api/ { proxy_pass http://backend; }
    location /static/ { proxy_pass http://backend; } location ~ ^/v[0-9]+/items/[a-z]+\$ { proxy_pass http://backend; } }
EOF
  done
  echo "}"
} > "$work/px/nginx.conf"

# --- lb: the same table as Kubernetes objects -------------------------------
# ingress host i: Prefix /, /api/, /static/ and, with use-regex, the regex.
ingress() { # dir name host [extra path]
  cat > "$1/$2.yaml" <<EOF
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: $2, namespace: bench, annotations: {nginx.ingress.kubernetes.io/use-regex: "true"}}
spec:
  ingressClassName: lb
  rules:
  - host: $3
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}
      - {path: /api/, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}
      - {path: /static/, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}
      - {path: "/v[0-9]+/items/[a-z]+\$", pathType: ImplementationSpecific, backend: {service: {name: backend, port: {number: 80}}}}
${4:-}
EOF
}
services() { # dir
  b64() { base64 -w0 < "$1"; }
  cat > "$1/backend.yaml" <<EOF
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: bench}
spec: {ports: [{name: http, port: 80, targetPort: $UP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-1, namespace: bench, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
ports: [{name: http, port: $UP}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: bench}
type: kubernetes.io/tls
data: {tls.crt: $(b64 "$work/cert.pem"), tls.key: $(b64 "$work/key.pem")}
EOF
}
services "$work/lb"
for i in $(seq 0 49); do ingress "$work/lb" "h$i" "h$i.example"; done
services "$work/lb10k"
for i in $(seq 0 9999); do echo "h$i"; done | while read -r h; do ingress "$work/lb10k" "$h" "$h.example"; done

# --- processes ----------------------------------------------------------------
taskset -c 0 nginx -p "$work/up" -c "$work/up/nginx.conf"
taskset -c 1 nginx -p "$work/px" -c "$work/px/nginx.conf"
lb_proxy() { # dir http https metrics log
  taskset -c 1 "$bin/lb-proxy" --manifests "$1" --http-listen "127.0.0.1:$2" --https-listen "127.0.0.1:$3" \
    --metrics-listen "127.0.0.1:$4" --default-certificate bench/tls --workers 1 --no-access-log > /dev/null 2> "$5" &
  echo $!
}
lb_pid=$(lb_proxy "$work/lb" "$LB" "$LBS" "$LBM" "$work/out/lb.log")
pids+=("$lb_pid")
ready() { for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "lb-proxy never became ready" >&2; exit 1; }
command -v curl >/dev/null || { echo "needs curl" >&2; exit 2; }
ready "$LBM"
sleep 0.5
up_pids() { local m; m=$(cat "$work/up/nginx.pid"); echo "$m $(ps -o pid= --ppid "$m")"; }
ngx_pids() { local m; m=$(cat "$work/px/nginx.pid"); echo "$m $(ps -o pid= --ppid "$m")"; }
for url in "http://127.0.0.1:$NGX$URLPATH" "http://127.0.0.1:$LB$URLPATH" "https://127.0.0.1:$NGXS$URLPATH" "https://127.0.0.1:$LBS$URLPATH"; do
  code=$(curl -sk -o /dev/null -w "%{http_code}" -H "Host: $HOST" "$url" || true)
  [ "$code" = 200 ] || { echo "$url answered $code, not 200" >&2; exit 1; }
done

# --- measurement ---------------------------------------------------------------
ticks() { local t=0 p; for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$((t + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}'))); done; echo $t; }
busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
cpu1() { awk '/^cpu1 /{b = $2 + $3 + $4 + $7 + $8; print b, b + $5 + $6}' /proc/stat; }
quiet() { # until the whole machine is below 10 % busy for a second (60 s at most)
  local a b; for _ in $(seq 1 60); do
    a=$(busy); sleep 1; b=$(busy)
    [ $(((b - a) * 100 / HZ / $(nproc))) -lt 10 ] && return 0
  done; echo "warning: the machine is not quiet" >&2
}
to_us() { awk '{v = $1; if (v ~ /us$/) v = v + 0; else if (v ~ /ms$/) v = v * 1000; else if (v ~ /s$/) v = v * 1000000; printf "%d", v}'; }

# run <label> <url> <pids of the proxy...>: one TSV line
#   label rps p50_us p99_us errors cpu_us_per_req cpu1_busy% foreign%
run() {
  local label=$1 url=$2; shift 2
  local try line
  for try in 1 2 3; do
    taskset -c 0 wrk -t1 -c"$CONNS" -d2s -H "Host: $HOST" "$url" >/dev/null 2>&1
    quiet
    local t0 u0 b0 c0 t1 u1 b1 c1 out=$work/out/$label.txt
    t0=$(ticks "$@"); u0=$(ticks $(up_pids)); b0=$(busy); c0=$(cpu1)
    (taskset -c 0 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -H "Host: $HOST" "$url" > "$out" 2>&1; times > "$out.times")
    t1=$(ticks "$@"); u1=$(ticks $(up_pids)); b1=$(busy); c1=$(cpu1)
    local wrk_ticks rps reqs p50 p99 errors non2xx sut fo c1b
    wrk_ticks=$(awk -v hz="$HZ" 'NR == 2 {t = 0; for (i = 1; i <= 2; i++) {split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2]}; printf "%d", t * hz}' "$out.times")
    rps=$(awk '/Requests\/sec/ {printf "%d", $2}' "$out")
    reqs=$(awk '/requests in/ {print $1}' "$out")
    p50=$(awk '$1 == "50%" {print $2}' "$out" | to_us)
    p99=$(awk '$1 == "99%" {print $2}' "$out" | to_us)
    errors=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out"); errors=${errors:-0}
    non2xx=$(awk '/Non-2xx/ {print $5}' "$out"); errors=$((errors + ${non2xx:-0}))
    sut=$((t1 - t0))
    fo=$(((b1 - b0) - sut - (u1 - u0) - wrk_ticks))
    fo=$((fo * 100 / HZ / DUR)); [ $fo -lt 0 ] && fo=0
    read -r c0b c0t <<< "$c0"; read -r c1bb c1t <<< "$c1"
    c1b=$(((c1bb - c0b) * 100 / (c1t - c0t)))
    line=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$label" "$rps" "$p50" "$p99" "$errors" \
      "$(awk -v t="$sut" -v hz="$HZ" -v n="$reqs" 'BEGIN {printf "%.2f", t * 1000000 / hz / n}')" "$c1b" "$fo")
    [ "$fo" -le "${FOREIGN_MAX:-5}" ] && break
    echo "retry $label (try $try): ${fo}% of a core used by processes not ours" >&2
  done
  echo "$line"
}

median() { sort -n | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

printf 'round\tlabel\trps\tp50_us\tp99_us\terrors\tcpu_us_per_req\tcpu1_busy%%\tforeign%%\n' | tee "$work/out/all.tsv"
for r in $(seq 1 "$ROUNDS"); do
  run nginx "http://127.0.0.1:$NGX$URLPATH" $(ngx_pids) | sed "s/^/$r\t/" | tee -a "$work/out/all.tsv"
  run lb "http://127.0.0.1:$LB$URLPATH" "$lb_pid" | sed "s/^/$r\t/" | tee -a "$work/out/all.tsv"
  run nginx-https "https://127.0.0.1:$NGXS$URLPATH" $(ngx_pids) | sed "s/^/$r\t/" | tee -a "$work/out/all.tsv"
  run lb-https "https://127.0.0.1:$LBS$URLPATH" "$lb_pid" | sed "s/^/$r\t/" | tee -a "$work/out/all.tsv"
done

echo
echo "medians over $ROUNDS rounds (ratios: lb / nginx within each round, then the median)"
printf 'what\trps\tp50_us\tp99_us\terrors\tcpu_us_per_req\trps_ratio\tp99_ratio\tcpu_ratio\n'
col() { awk -F'\t' -v l="$1" -v c="$2" '$2 == l {print $c}' "$work/out/all.tsv"; }
ratio() { # lb nginx column: per round lb/nginx
  paste <(col "$1" "$3") <(col "$2" "$3") | awk '{printf "%.3f\n", ($2 > 0 ? $1 / $2 : 0)}' | median
}
for pair in "nginx nginx" "lb nginx" "nginx-https nginx-https" "lb-https nginx-https"; do
  read -r l n <<< "$pair"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$l" "$(col "$l" 3 | median)" "$(col "$l" 4 | median)" \
    "$(col "$l" 5 | median)" "$(col "$l" 6 | awk '{s += $1} END {print s + 0}')" "$(col "$l" 7 | median)" \
    "$(ratio "$l" "$n" 3)" "$(ratio "$l" "$n" 5)" "$(ratio "$l" "$n" 7)"
done

# --- reloads under load -----------------------------------------------------
cat > "$work/pct.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RELOAD requests=%d errors=%d p99=%.0f p999=%.0f max=%.0f\n",
    summary.requests, e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
EOF
nginx_reload() { nginx -p "$work/px" -c "$work/px/nginx.conf" -s reload 2>/dev/null; }
flip=0
lb_reload() { # $1 dir, $2 pid: an Ingress really changes, then SIGHUP
  flip=$((1 - flip))
  local extra=""
  [ $flip = 1 ] && extra="      - {path: /extra/, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}"
  ingress "$1" h1 h1.example "$extra"
  kill -HUP "$2"
}
# reload_run <label> <url> <interval> <action...>: requests errors p99 p99.9 max reloads
reload_run() {
  local label=$1 url=$2 iv=$3; shift 3
  taskset -c 0 wrk -t1 -c"$CONNS" -d2s -H "Host: $HOST" "$url" >/dev/null 2>&1
  quiet
  taskset -c 0 wrk -t1 -c"$CONNS" -d"${DUR}s" -s "$work/pct.lua" -H "Host: $HOST" "$url" > "$work/out/$label.txt" 2>&1 &
  local w=$! n=0
  if [ "$iv" != 0 ]; then
    sleep 0.5
    local end=$(($(date +%s%N) + (DUR - 1) * 1000000000))
    while [ "$(date +%s%N)" -lt $end ]; do "$@"; n=$((n + 1)); sleep "$iv"; done
  fi
  wait $w
  printf '%s\t%s\t%s\n' "$label" "$(awk '/^RELOAD/ {sub("RELOAD ", ""); gsub(/[a-z0-9]+=/, ""); gsub(" ", "\t"); print}' "$work/out/$label.txt")" "$n"
}
echo
echo "reloads under load: requests, failed requests (socket errors + non-2xx), p99, p99.9, max (us), reloads"
printf 'what\trequests\terrors\tp99_us\tp999_us\tmax_us\treloads\n'
reload_run nginx-steady "http://127.0.0.1:$NGX$URLPATH" 0
reload_run nginx-10per_s "http://127.0.0.1:$NGX$URLPATH" 0.1 nginx_reload
sleep 2
reload_run lb-steady "http://127.0.0.1:$LB$URLPATH" 0
before=$(grep -c "route table swapped" "$work/out/lb.log" || true)
reload_run lb-10per_s "http://127.0.0.1:$LB$URLPATH" 0.1 lb_reload "$work/lb" "$lb_pid"
sleep 1
echo "lb-proxy swapped $(( $(grep -c "route table swapped" "$work/out/lb.log") - before )) tables during lb-10per_s"

# --- a 10,000-Ingress table rebuilt under load --------------------------------
kill "$lb_pid" 2>/dev/null || true
lb10k=$(lb_proxy "$work/lb10k" "$LB10K" "$((LB10K + 1))" "$((LB10K + 2))" "$work/out/lb10k.log")
pids+=("$lb10k")
ready "$((LB10K + 2))"
reload_run lb10k-steady "http://127.0.0.1:$LB10K$URLPATH" 0
reload_run lb10k-1per_s "http://127.0.0.1:$LB10K$URLPATH" 1 lb_reload "$work/lb10k" "$lb10k"
sleep 2
echo
echo "10,000 Ingresses: read + build + swap, per rebuild (lb-proxy's log), pinned to the proxy's core:"
grep "route table swapped" "$work/out/lb10k.log" | tail -n +2 | sed -E 's/.*took=([0-9.]+)(ms|s|µs).*/\1 \2/' |
  awk '{v = $1; if ($2 == "s") v *= 1000; if ($2 == "µs") v /= 1000; print v}' | sort -n |
  awk '{v[NR] = $1} END {if (NR) printf "rebuilds %d, median %.1f ms, max %.1f ms\n", NR, v[int((NR + 1) / 2)], v[NR]; else print "no rebuild logged"}'
