#!/usr/bin/env bash
# Throughput of the redis role's configuration against Debian's stock configuration, in the same
# container, with the same redis-benchmark arguments. Identical runs vary a lot on a shared
# machine, so the two (and the role's configuration with AOF off, to show what AOF costs) are
# interleaved ROUNDS times and the median of the per-round ratios is printed.
#
# Needs a converged instance of the `redis` Molecule scenario (the role's server on port 6379):
#   molecule converge -s redis && benchmarks/redis_benchmark.sh [container]
# Settings: ROUNDS (default 7), REQUESTS (-n, default 1000000), PIPELINE (-P, 16), CLIENTS (-c, 50),
# TESTS (-t, set,get).
set -euo pipefail
container=${1:-apes-redis-debian12}
rounds=${ROUNDS:-7}
requests=${REQUESTS:-1000000}
pipeline=${PIPELINE:-16}
clients=${CLIENTS:-50}
tests=${TESTS:-set,get}
admin_password=${REDIS_ADMIN_PASSWORD:-molecule-admin-secret-1}

run() { docker exec -i "$container" bash -c "$1"; }

# A throwaway ACL user for the benchmark (never saved to the ACL file), and Debian's own
# redis.conf from the package, started on port 6380 in a scratch directory.
bench_password=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
run "set -e
export REDISCLI_AUTH='$admin_password'
redis-cli --user admin ACL SETUSER bench on '>$bench_password' '~*' '+@all' >/dev/null
rm -rf /var/tmp/redis-bench && mkdir -p /var/tmp/redis-bench/stock && cd /var/tmp/redis-bench
apt-get download -q redis-server >/dev/null 2>&1
dpkg-deb --fsys-tarfile redis-server_*.deb | tar -xO ./etc/redis/redis.conf > stock.conf
chown -R redis:redis /var/tmp/redis-bench
runuser -u redis -- redis-server /var/tmp/redis-bench/stock.conf --port 6380 --daemonize yes \
  --pidfile /var/tmp/redis-bench/stock.pid --logfile /var/tmp/redis-bench/stock.log --dir /var/tmp/redis-bench/stock --supervised no --bind 127.0.0.1
unset REDISCLI_AUTH
for _ in \$(seq 50); do redis-cli -p 6380 PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done"
cleanup() {
  run "export REDISCLI_AUTH='$admin_password'
  redis-cli --user admin CONFIG SET appendonly yes >/dev/null
  redis-cli --user admin ACL DELUSER bench >/dev/null
  redis-cli -p 6380 SHUTDOWN NOSAVE >/dev/null 2>&1; rm -rf /var/tmp/redis-bench" || true
}
trap cleanup EXIT

bench() { # $1: port, $2: auth args -> "test rps" lines
  run "redis-benchmark -h 127.0.0.1 -p $1 $2 -n $requests -P $pipeline -c $clients -t $tests --csv -q 2>/dev/null" \
    | awk -F'","' 'NR > 1 { gsub(/"/, "", $1); gsub(/"/, "", $2); print $1, $2 }'
}
role_aof() { run "REDISCLI_AUTH='$admin_password' redis-cli --user admin CONFIG SET appendonly $1 >/dev/null
  until REDISCLI_AUTH='$admin_password' redis-cli --user admin INFO persistence | grep -q '^aof_rewrite_in_progress:0'; do sleep 0.2; done"; }

echo "redis-benchmark -n $requests -P $pipeline -c $clients -t $tests, $rounds interleaved rounds, container $container"
run "redis-server --version"
results=$(mktemp)
for round in $(seq 1 "$rounds"); do
  # Rotate the order each round so that no configuration always runs first.
  order=(stock role role_noaof)
  shift_by=$(( (round - 1) % 3 ))
  order=("${order[@]:$shift_by}" "${order[@]:0:$shift_by}")
  for config in "${order[@]}"; do
    case $config in
      stock) bench 6380 "" ;;
      role) role_aof yes; bench 6379 "--user bench -a $bench_password" ;;
      role_noaof) role_aof no; bench 6379 "--user bench -a $bench_password" ;;
    esac | sed "s/^/$round $config /" >> "$results"
  done
done
role_aof yes

python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
data = {}
for rnd, config, test, rps in rows:
    data.setdefault(test, {}).setdefault(config, {})[rnd] = float(rps)
print(f"{'test':6} {'stock rps (median)':>19} {'role rps (median)':>18} {'role/stock':>11} {'AOF off rps':>12} {'AOF cost':>9}")
for test, by in data.items():
    rounds = sorted(by["stock"])
    ratio = statistics.median(by["role"][r] / by["stock"][r] for r in rounds)
    aof = statistics.median(1 - by["role"][r] / by["role_noaof"][r] for r in rounds)
    print(f"{test:6} {statistics.median(by['stock'].values()):19.0f} {statistics.median(by['role'].values()):18.0f}"
          f" {ratio:10.2f}x {statistics.median(by['role_noaof'].values()):12.0f} {aof:8.1%}")
    print("       per round role/stock: " + ", ".join(f"{by['role'][r] / by['stock'][r]:.2f}" for r in rounds))
PY
rm -f "$results"
