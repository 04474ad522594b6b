#!/bin/bash
# Instructions a memory-queue job costs, end to end (dispatch, claim, run, settle), without
# start-up: callgrind of bench/core_throughput.khadem_round(20000) minus khadem_round(2000),
# divided by 18,000; garbage collector off, hash seed fixed (SEED, default 1).
#   bash bench/instructions.sh [TREE]      (TREE: a checkout, default this one)
set -euo pipefail
tree=$(cd "${1:-$(dirname "$0")/..}" && pwd)
python=$(python -c 'import os, sys; print(os.path.realpath(sys.executable))')
count() {
  local out
  out=$(mktemp)
  (cd "$tree" && PYTHONHASHSEED=${SEED:-1} PYTHONPATH="$tree:$tree/bench" valgrind --tool=callgrind \
    --callgrind-out-file="$out" "$python" -c "
import asyncio, gc, sys
gc.disable()
sys.path.insert(0, 'bench')
import core_throughput
asyncio.run(core_throughput.khadem_round($1))
" >/dev/null 2>&1)
  grep -E "^(summary|totals):" "$out" | head -1 | awk '{print $2}'
  rm -f "$out"
}
big=$(count 20000)
small=$(count 2000)
python -c "print(round(($big - $small) / 18000))"
