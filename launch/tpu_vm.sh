#!/usr/bin/env bash
# Create a Cloud TPU VM slice (if needed), install vidgen on every worker, run a config.
#
#   launch/tpu_vm.sh NAME ZONE ACCELERATOR --config=configs/t2v_tiny.py:1B \
#       --workdir=gs://BUCKET/runs/x [--config.x=v ...]
#
# e.g. launch/tpu_vm.sh vidgen-v5p us-east5-a v5p-64 --config=... --workdir=gs://...
# Environment: PROJECT (gcloud project; default: the configured one), RUNTIME (TPU software
# version; default v2-alpha-tpuv5), SPOT=1 for spot capacity, REPO (git URL to clone; default:
# copy this checkout with scp). Every worker runs the same `vidgen train`; jax.distributed
# finds the other workers itself on TPU VMs, so no coordinator flags are needed. Preemption
# (SIGTERM / maintenance events) makes the trainer save and exit; rerun this script to resume
# from the newest checkpoint in the workdir (use a gs:// workdir so every worker sees it).
set -euo pipefail

if [[ $# -lt 4 ]]; then
  echo "usage: $0 NAME ZONE ACCELERATOR --config=... --workdir=... [--config.x=v ...]" >&2
  exit 2
fi
NAME=$1 ZONE=$2 ACCEL=$3; shift 3
RUNTIME="${RUNTIME:-v2-alpha-tpuv5}"
PROJECT_FLAG=(); [[ -n "${PROJECT:-}" ]] && PROJECT_FLAG=(--project="$PROJECT")
SPOT_FLAG=(); [[ "${SPOT:-0}" == 1 ]] && SPOT_FLAG=(--spot)
TPU=(gcloud compute tpus tpu-vm "${PROJECT_FLAG[@]}")

if ! "${TPU[@]}" describe "$NAME" --zone="$ZONE" >/dev/null 2>&1; then
  echo "creating $ACCEL TPU VM $NAME in $ZONE"
  "${TPU[@]}" create "$NAME" --zone="$ZONE" --accelerator-type="$ACCEL" \
      --version="$RUNTIME" "${SPOT_FLAG[@]}"
fi

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -n "${REPO:-}" ]]; then
  FETCH="rm -rf vidgen && git clone --depth 1 $REPO vidgen"
else
  tar -C "$ROOT" --exclude=.venv --exclude=.git -czf /tmp/vidgen_src.tgz .
  "${TPU[@]}" scp /tmp/vidgen_src.tgz "$NAME":~/vidgen_src.tgz --zone="$ZONE" --worker=all
  FETCH="rm -rf vidgen && mkdir vidgen && tar -C vidgen -xzf vidgen_src.tgz"
fi

ARGS=$(printf '%q ' "$@")
"${TPU[@]}" ssh "$NAME" --zone="$ZONE" --worker=all --command="
  set -e
  $FETCH
  cd vidgen
  python3 -m venv .venv
  .venv/bin/pip install -q -U pip
  .venv/bin/pip install -q -e . 'jax[tpu]' -c constraints.txt
  .venv/bin/vidgen train $ARGS
"
echo "done; delete the slice with: ${TPU[*]} delete $NAME --zone=$ZONE"
