#!/usr/bin/env bash
# lb-speaker's Layer 2 figures, in network namespaces this script makes: a
# bridge, a client and two nodes (the layout of bins/tests/speaker.rs).
#
#   benches/l2.sh [failover-runs]     (default 5; env VIPS=10000 for the big table)
#
# 1. Reply latency: ARP request → reply, seen on the client's
#    interface (tcpdump, decoded by tshark), for the node's own address
#    (the kernel answers) and for a service address (lb-speaker answers),
#    interleaved in one run; medians and the ratio lb/kernel.
# 2. Failover: the owner of the address dies (its link down, its speaker
#    SIGKILLed: no goodbye) while the client pings every 10 ms; the outage
#    is the longest gap between replies across the kill (detection, new
#    election, announcement, the client's cache updated). Median and worst
#    over the runs, default settings.
# 3. VIPS service addresses on the two nodes; one node dies; the time from
#    the kill to the last address's first gratuitous ARP from the survivor.
#
# Needs root, iproute2, arping, tcpdump, tshark, curl, python3.
# Release binaries are built first. Everything it starts is stopped, and
# the namespaces deleted, at exit.
set -euo pipefail

RUNS=${1:-5}
SKIP_LAT=${SKIP_LAT:-}
VIPS=${VIPS:-10000}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for tool in ip arping tcpdump tshark curl python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, packet sockets)" >&2; exit 2; }
(cd "$root" && cargo build --release -q -p lb-bins --bin lb-speaker --bin lb-controller --bin lb-echo) >&2
bin="${CARGO_TARGET_DIR:-$root/target}/release"

P=lbb$$
V4=10.79.0 V6=fd79:0
work=$(mktemp -d /tmp/lb-l2-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for h in c a b sw; do ip netns del "$P-$h" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
nsx() { local h=$1; shift; ip netns exec "$P-$h" "$@"; }

# --- the LAN ------------------------------------------------------------------
ip netns add "$P-sw"; ip -n "$P-sw" link add br0 type bridge; ip -n "$P-sw" link set br0 up
n=1
for h in c a b; do
  ip netns add "$P-$h"; ip -n "$P-$h" link set lo up
  ip link add eth0 netns "$P-$h" type veth peer name "p$h" netns "$P-sw"
  ip -n "$P-sw" link set "p$h" master br0; ip -n "$P-sw" link set "p$h" up
  ip -n "$P-$h" addr add "$V4.$n/16" dev eth0; ip -n "$P-$h" addr add "$V6::$n/64" dev eth0 nodad
  ip -n "$P-$h" link set eth0 up
  n=$((n + 1))
done
for h in a b; do
  nsx $h sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
    net.ipv6.conf.all.keep_addr_on_down=1 net.ipv6.conf.eth0.keep_addr_on_down=1
done

# manifests DIR COUNT: two nodes, COUNT IPv4 service addresses from
# 10.79.1.1 on (and one IPv6), each Service served on both nodes.
manifests() {
  local dir=$1 count=$2
  mkdir -p "$dir"
  python3 - "$dir" "$count" <<'PY'
import sys, ipaddress
d, n = sys.argv[1], int(sys.argv[2])
base = ipaddress.ip_address("10.79.1.1")
out = []
for name, ip in (("node-a", "10.79.0.2"), ("node-b", "10.79.0.3")):
    out.append(f"apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n")
last = base + n - 1
out.append(f"apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lab, namespace: metallb-system}}\nspec: {{addresses: [{base}-{last}, fd79:0::100/128]}}\n")
out.append("apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lab, namespace: metallb-system}\n")
def svc(name, ip, fam):
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default, annotations: {{metallb.io/loadBalancerIPs: \"{ip}\"}}}}\n"
            f"spec: {{type: LoadBalancer, ipFamilies: [{fam}], ports: [{{port: 80}}]}}\n---\n"
            f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n"
            f"addressType: {fam}\nports: [{{port: 80}}]\nendpoints: [{{addresses: [\"{ip}\"], nodeName: node-a, conditions: {{ready: true}}}}, {{addresses: [\"{ip}\"], nodeName: node-b, conditions: {{ready: true}}}}]\n")
for i in range(n):
    out.append(svc(f"s{i}", base + i, "IPv4"))
out.append(svc("web6", "fd79:0::100", "IPv6"))
open(f"{d}/cluster.yaml", "w").write("---\n".join(out))
PY
  "$bin/lb-controller" --manifests "$dir" --once >/dev/null
}

# speaker NODE DIR: starts node's speaker, waits until ready.
speaker() {
  local h=$1 dir=$2
  # Not through a function: $! must be the speaker itself.
  ip netns exec "$P-$h" "$bin/lb-speaker" --manifests "$dir" --node "node-$h" --metrics-listen 127.0.0.1:9121 \
    >"$work/speaker-$h.log" 2>&1 &
  pids+=($!)
  eval "spk_$h=$!"
  for _ in $(seq 300); do nsx $h curl -sf -m 1 http://127.0.0.1:9121/readyz >/dev/null 2>&1 && return; sleep 0.1; done
  echo "speaker on $h not ready" >&2; cat "$work/speaker-$h.log" >&2; exit 1
}
members() { # waits until both speakers see both
  for h in a b; do
    for _ in $(seq 100); do nsx $h curl -sf -m 1 http://127.0.0.1:9121/metrics | grep -qx 'lb_speaker_members 2' && break; sleep 0.1; done
  done
}
# The owner (a or b) of an address, as MetalLB's election picks it.
owner() {
  python3 - "$1" <<'PY'
import hashlib, ipaddress, sys
ip = str(ipaddress.ip_address(sys.argv[1]))   # as Go (and Rust) print it
print(min("ab", key=lambda n: hashlib.sha256(f"node-{n}#{ip}".encode()).digest())[0])
PY
}

# --- 1. reply latency -----------------------------------------------------------
small="$work/small"; manifests "$small" 1
for h in a b; do nsx $h ip addr add "10.79.1.1/32" dev lo; nsx $h ip addr add "$V6::100/128" dev lo; done
speaker a "$small"; speaker b "$small"; members
vip=10.79.1.1; vip6=$V6::100
o4=$(owner "$vip"); o6=$(owner "$vip6")
kern4=$V4.$([ "$o4" = a ] && echo 2 || echo 3); kern6=$V6::$([ "$o6" = a ] && echo 2 || echo 3)
ip netns exec "$P-c" tcpdump -i eth0 -nn -U -w "$work/lat.pcap" "arp or icmp6" 2>"$work/td.log" & td=$!; pids+=($td)
for _ in $(seq 100); do grep -q listening "$work/td.log" 2>/dev/null && break; sleep 0.05; done
# Requests 10 ms apart, in blocks of 20 alternating between the two
# answerers (each request finds the answerer idle, as on a quiet LAN).
for _ in $(seq 10); do
  nsx c arping -q -i eth0 -c 20 -W "${GAP:-0.01}" "$vip" >/dev/null || true
  nsx c arping -q -i eth0 -c 20 -W "${GAP:-0.01}" "$kern4" >/dev/null || true
done
sleep 0.5; kill "$td"; wait "$td" 2>/dev/null || true
tshark -r "$work/lat.pcap" -T fields -e frame.time_epoch -e arp.opcode -e arp.dst.proto_ipv4 -e arp.src.proto_ipv4 \
  -e icmpv6.type -e icmpv6.nd.ns.target_address -e icmpv6.nd.na.target_address 2>/dev/null |
python3 -c '
import sys, statistics as st
vip, kern, vip6, kern6 = sys.argv[1:5]
pend, d = {}, {}
for l in sys.stdin:
    f = l.rstrip("\n").split("\t") + [""] * 7
    t = float(f[0])
    if f[1] == "1": pend["arp", f[2]] = t
    elif f[1] == "2" and ("arp", f[3]) in pend: d.setdefault(("arp", f[3]), []).append(t - pend.pop(("arp", f[3])))
    elif f[4] == "135": pend["ndp", f[5]] = t
    elif f[4] == "136" and ("ndp", f[6]) in pend: d.setdefault(("ndp", f[6]), []).append(t - pend.pop(("ndp", f[6])))
def med(k): v = d.get(k, []); return (st.median(v) * 1e6, len(v)) if v else (float("nan"), 0)
for proto, mine, theirs in (("arp", vip, kern),):
    (m, n), (k, kn) = med((proto, mine)), med((proto, theirs))
    print(f"reply latency {proto}: lb-speaker {m:.0f} us (n={n}), kernel {k:.0f} us (n={kn}), ratio {m / k:.2f}")
' "$vip" "$kern4" "$vip6" "$kern6"

# --- 2. failover ------------------------------------------------------------------
outages=()
for r in $(seq "$RUNS"); do
  o=$(owner "$vip"); other=$([ "$o" = a ] && echo b || echo a)
  nsx c ip neigh flush dev eth0
  ip netns exec "$P-c" ping -D -i 0.01 -W 0.1 -w 4 "$vip" >"$work/ping.log" 2>&1 & pp=$!; pids+=($pp)
  sleep 1
  t_kill=$(date +%s.%N)
  ip -n "$P-$o" link set eth0 down
  eval "kill -9 \$spk_$o" || { echo "speaker on $o had exited:" >&2; cat "$work/speaker-$o.log" >&2; exit 1; }
  wait "$pp" 2>/dev/null || true
  out=$(python3 - "$t_kill" "$work/ping.log" <<'PY'
import sys, re
tk = float(sys.argv[1])
rep = [float(m.group(1)) for l in open(sys.argv[2]) if (m := re.match(r"\[(\d+\.\d+)\] \d+ bytes from", l))]
# The outage: the longest silence between two replies, the second after
# the kill (a reply in flight when the kill command started counts as
# before it).
gaps = [b - a for a, b in zip(rep, rep[1:]) if b > tk]
print(f"{max(gaps) * 1000:.0f}" if gaps and rep[-1] > tk else "inf")
PY
)
  echo "failover run $r: owner node-$o killed, replies through node-$other after an outage of $out ms"
  outages+=("$out")
  # The node comes back: link up, speaker restarted, both see both.
  ip -n "$P-$o" link set eth0 up
  ip -n "$P-$o" addr replace "$V6::$([ "$o" = a ] && echo 2 || echo 3)/64" dev eth0 nodad
  speaker "$o" "$small"; members; sleep 1
done
printf '%s\n' "${outages[@]}" | python3 -c '
import sys, statistics as st
v = sorted(float(x) for x in sys.stdin.read().split())
print(f"failover over {len(v)} runs: median {st.median(v):.0f} ms, worst {v[-1]:.0f} ms (target: median <= 500 ms, worst <= 1000 ms)")'
for h in a b; do eval "kill -9 \$spk_$h" 2>/dev/null || true; done
sleep 0.3

# --- 3. a big table ---------------------------------------------------------------
big="$work/big"; manifests "$big" "$VIPS"
speaker a "$big"; speaker b "$big"; members; sleep 6   # past the takeover windows
ip netns exec "$P-c" tcpdump -i eth0 -nn -U -w "$work/big.pcap" arp 2>"$work/td2.log" & td=$!; pids+=($td)
for _ in $(seq 100); do grep -q listening "$work/td2.log" 2>/dev/null && break; sleep 0.05; done
mac_b=$(ip -n "$P-b" -j link show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
t_kill=$(date +%s.%N)
ip -n "$P-a" link set eth0 down
kill -9 "$spk_a"
sleep 3
kill "$td"; wait "$td" 2>/dev/null || true
rss=$(awk '/VmRSS/{print $2}' "/proc/$spk_b/status" 2>/dev/null || echo "?")
tshark -r "$work/big.pcap" -Y "arp.src.hw_mac == $mac_b && arp.opcode == 1 && arp.src.proto_ipv4 == arp.dst.proto_ipv4" \
  -T fields -e frame.time_epoch -e arp.src.proto_ipv4 2>/dev/null |
python3 -c '
import sys, hashlib
tk, n, rss = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
import ipaddress
base = ipaddress.ip_address("10.79.1.1")
moved = {str(base + i) for i in range(n) if min("ab", key=lambda x: hashlib.sha256(f"node-{x}#{base + i}".encode()).digest()) == "a"}
first = {}
for l in sys.stdin:
    t, ip = l.split()
    first.setdefault(ip, float(t))
got = [first[ip] for ip in moved if ip in first]
print(f"{n} addresses, {len(moved)} held by the killed node: {len(got)} announced by the survivor, the last {(max(got) - tk) * 1000:.0f} ms after the kill (target <= 1000 ms); survivor RSS {rss} KiB")
' "$t_kill" "$VIPS" "$rss"
