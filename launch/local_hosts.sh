#!/usr/bin/env bash
# Start N processes on 127.0.0.1 that stand in for N hosts, each with D forced CPU devices.
#
#   launch/local_hosts.sh N [--devices_per_host=D] --config=configs/toy.py --workdir=/tmp/run [...]
#
# Every process runs `vidgen train` with --coordinator=127.0.0.1:PORT --num_processes=N
# --process_id=i; process 0's output goes to the terminal, the others' to WORKDIR/host_i.log.
# Ctrl-C (or SIGTERM) is forwarded to all of them; the exit status is the worst one.
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 N [--devices_per_host=D] --config=... --workdir=... [--config.x=v ...]" >&2
  exit 2
fi
N=$1; shift
DEVICES=2
ARGS=()
WORKDIR=""
for arg in "$@"; do
  case "$arg" in
    --devices_per_host=*) DEVICES="${arg#*=}" ;;
    --workdir=*) WORKDIR="${arg#*=}"; ARGS+=("$arg") ;;
    *) ARGS+=("$arg") ;;
  esac
done
[[ -n "$WORKDIR" ]] || { echo "$0: --workdir=DIR is required" >&2; exit 2; }
mkdir -p "$WORKDIR"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3
PORT="${PORT:-$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; }
trap cleanup INT TERM

for ((i = 0; i < N; i++)); do
  CMD=("$PYTHON" -m vidgen.main train "${ARGS[@]}" --coordinator="127.0.0.1:$PORT"
       --num_processes="$N" --process_id="$i")
  if [[ $i -eq 0 ]]; then
    (cd "$ROOT" && JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES" \
       exec "${CMD[@]}") &
  else
    (cd "$ROOT" && JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES" \
       exec "${CMD[@]}" > "$WORKDIR/host_$i.log" 2>&1) &
  fi
  PIDS+=($!)
done

STATUS=0
for pid in "${PIDS[@]}"; do
  wait "$pid" || STATUS=$?
done
exit "$STATUS"
