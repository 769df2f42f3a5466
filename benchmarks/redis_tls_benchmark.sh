#!/usr/bin/env bash
# What TLS costs the redis role's server: the same running server, the same data and the same
# redis-benchmark arguments, once over TLS (the role's TLS port, verified against its CA) and
# once over plaintext (a plaintext port opened live for the benchmark with CONFIG SET port, and
# closed again at the end). Identical runs vary a lot on a shared machine, so the two are
# interleaved ROUNDS times and the median of the per-round ratios is printed, for a pipelined
# and an unpipelined run (TLS costs most per round trip).
#
# Needs a converged instance of the `redis` Molecule scenario whose server has TLS on
# (apes-redis-debian13: TLS only on 6380):
#   molecule converge -s redis && benchmarks/redis_tls_benchmark.sh [container]
# Settings: ROUNDS (default 5), REQUESTS (-n, default 200000), PIPELINES (default "16 1"),
# CLIENTS (-c, 50), TESTS (-t, set,get).
set -euo pipefail
container=${1:-apes-redis-debian13}
rounds=${ROUNDS:-5}
requests=${REQUESTS:-200000}
pipelines=${PIPELINES:-16 1}
clients=${CLIENTS:-50}
tests=${TESTS:-set,get}
admin_password=${REDIS_ADMIN_PASSWORD:-molecule-admin-secret-1}
tls_port=6380
plain_port=6379
ca=/etc/redis/tls/ca.crt

run() { docker exec -i "$container" bash -c "$1"; }
admin() { run "REDISCLI_AUTH='$admin_password' redis-cli --user admin -h 127.0.0.1 -p $tls_port --tls --cacert $ca $1"; }

# A throwaway ACL user for the benchmark (never saved to the ACL file), and a plaintext port
# opened live on the same server (never saved to redis.conf).
bench_password=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
admin "ACL SETUSER bench on '>$bench_password' '~*' '+@all'" >/dev/null
admin "CONFIG SET port $plain_port" >/dev/null
cleanup() {
  admin "CONFIG SET port 0" >/dev/null || true
  admin "ACL DELUSER bench" >/dev/null || true
}
trap cleanup EXIT

bench() { # $1: connection options, $2: pipeline -> "test rps" lines
  run "redis-benchmark -h 127.0.0.1 $1 --user bench -a $bench_password -n $requests -P $2 -c $clients -t $tests --csv -q 2>/dev/null" \
    | awk -F'","' 'NR > 1 { gsub(/"/, "", $1); gsub(/"/, "", $2); print $1, $2 }'
}

echo "redis-benchmark -n $requests -c $clients -t $tests, -P in ($pipelines), $rounds interleaved rounds, container $container"
run "redis-server --version; openssl version"
admin "CONFIG GET tls-protocols" | tr '\n' ' '
echo
results=$(mktemp)
for round in $(seq 1 "$rounds"); do
  for pipeline in $pipelines; do
    # Alternate which transport runs first.
    if ((round % 2)); then order=(tls plain); else order=(plain tls); fi
    for transport in "${order[@]}"; do
      case $transport in
        tls) bench "-p $tls_port --tls --cacert $ca" "$pipeline" ;;
        plain) bench "-p $plain_port" "$pipeline" ;;
      esac | sed "s/^/$round P$pipeline $transport /" >> "$results"
    done
  done
done

python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
data = {}
for rnd, pipeline, transport, test, rps in rows:
    data.setdefault((pipeline, test), {}).setdefault(transport, {})[rnd] = float(rps)
print(f"{'pipeline':8} {'test':5} {'plaintext rps (median)':>23} {'TLS rps (median)':>17} {'TLS/plaintext':>14}")
for (pipeline, test), by in data.items():
    rounds = sorted(by["plain"])
    ratio = statistics.median(by["tls"][r] / by["plain"][r] for r in rounds)
    print(f"{pipeline:8} {test:5} {statistics.median(by['plain'].values()):23.0f}"
          f" {statistics.median(by['tls'].values()):17.0f} {ratio:13.2f}x")
    print("               per round TLS/plaintext: " + ", ".join(f"{by['tls'][r] / by['plain'][r]:.2f}" for r in rounds))
PY
rm -f "$results"
