#!/bin/bash
# Side-by-side ratios against the official EGNN / SEGNN / EGHN on every workload of issue 14's table, measured by
# the shared interleaving driver (../shared/peers/side_by_side.py) with our worker (benchmarks/sbs_worker.py),
# then printed as a Markdown table (../shared/peers/sbs_summarize.py). Run from the repository root:
#
#     benchmarks/side_by_side.sh                       # 2 threads, the full rounds (~40 min on 2 cores)
#     THREADS=1 ROUNDS=4 OUT=/tmp/sbs.jsonl benchmarks/side_by_side.sh
#     JOBS=nbody_egnn:fwd,nbody_egnn:train benchmarks/side_by_side.sh     # a subset
#
# Set-up of the peers (once per machine, outside the repository): ../shared/peers/README.md. Defaults assume
# ~/peers/{egnn,eghn,segnn,shims,venv}; override with PEER_PY, PEER_EGNN_DIR, PEER_EGHN_DIR, PEER_SEGNN_DIR,
# PEER_SHIM_DIR, and the peers folder with PEERS_HARNESS (default ../shared/peers beside the repository).
# Keep the machine quiet while measuring: the interleaving cancels drift, not a second process on the cores.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${PEERS_HARNESS:-$ROOT/../shared/peers}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-8}
BIG_ROUNDS=${BIG_ROUNDS:-3}
OUT=${OUT:-${TMPDIR:-/tmp}/sbs_$(date +%Y%m%d-%H%M%S).jsonl}
echo "results: $OUT" >&2
export OURS_PY=${OURS_PY:-$(command -v python)}
export OURS_BENCH_DIR=$ROOT/benchmarks
export OURS_WORKER=$ROOT/benchmarks/sbs_worker.py
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}   # our side imports this checkout's mdsurrogate
export PEER_PY=${PEER_PY:-$HOME/peers/venv/bin/python}
export PEER_SHIM_DIR=${PEER_SHIM_DIR:-$HOME/peers/shims}
export PEER_EGNN_DIR=${PEER_EGNN_DIR:-$HOME/peers/egnn}
export PEER_EGHN_DIR=${PEER_EGHN_DIR:-$HOME/peers/eghn}
export PEER_SEGNN_DIR=${PEER_SEGNN_DIR:-$HOME/peers/segnn}
for d in "$HARNESS/side_by_side.py" "$PEER_PY" "$PEER_EGNN_DIR" "$PEER_EGHN_DIR" "$PEER_SEGNN_DIR" "$PEER_SHIM_DIR"; do
  [ -e "$d" ] || { echo "missing $d (see ../shared/peers/README.md)" >&2; exit 2; }
done
SMALL=nbody_egnn:fwd,nbody_egnn:train,nbody_segnn:fwd,nbody_segnn:train,mcomplex_eghn:fwd,mcomplex_eghn:train
ROLL=rollout_eghn:step,rollout_egnn:step
BIG=adk_egnn:fwd,adk_egnn:train,adk_eghn:fwd,adk_eghn:train
run() {  # run JOBS ROUNDS BLOCK_S [extra driver args]
  local jobs=$1 rounds=$2 block=$3; shift 3
  [ -n "$jobs" ] || return 0
  "$OURS_PY" "$HARNESS/side_by_side.py" --threads "$THREADS" --rounds "$rounds" --block-s "$block" --out "$OUT" \
      --jobs "$jobs" "$@"
}
pick() {  # the jobs of $1 that are in $JOBS (all when JOBS is unset)
  if [ -z "${JOBS:-}" ]; then echo "$1"; return; fi
  local out=() j
  for j in ${1//,/ }; do [[ ",$JOBS," == *",$j,"* ]] && out+=("$j"); done
  (IFS=,; echo "${out[*]:-}")
}
run "$(pick $SMALL)" "$ROUNDS" 1.0
run "$(pick $ROLL)" "$(( ROUNDS > 6 ? 6 : ROUNDS ))" 1.5
run "$(pick $BIG)" "$BIG_ROUNDS" 0.1 --warmup 1
echo
"$OURS_PY" "$HARNESS/sbs_summarize.py" "$OUT"
echo
echo "threads $THREADS, $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')), torch $("$OURS_PY" -c 'import torch; print(torch.__version__)'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
