#!/usr/bin/env bash
# Segmentation levers side by side on one lent GPU, for a comparison at equal time and equal data-loader workers:
# each NAME=ARGS argument is tools/gpu/train.sh's segmentation run with SEG_ARGS=ARGS (its enhancement runs
# skipped), all started together; NAME's weights and configuration come back in $OUT/NAME/segmentation/ and its log
# as $OUT/NAME/train.log. WORKERS (default 14) are shared among the runs; train.sh's other settings pass through.
#   bash tools/gpu/side_by_side.sh control= drawn_scars="--synthetic-scar 0.3"
set -uo pipefail
OUT=${OUT:?set OUT to the folder for the results}
PACK=${PACK:-gpu_pack}
WORKERS=${WORKERS:-14}
[ $# -gt 0 ] || { echo "name one or more runs as NAME=ARGS" >&2; exit 2; }
names=()
for run in "$@"; do  # each run its own folder under $OUT
    name=${run%%=*}
    if [[ $run != *=* || ! $name =~ ^[A-Za-z0-9_.-]+$ || " ${names[*]} " == *" $name "* ]]; then
        echo "each run is NAME=ARGS with a name of its own (letters, digits, . _ -): $run" >&2
        exit 2
    fi
    names+=("$name")
done

[ -d "$PACK/data" ] || { echo "no training data in $PACK (make gpu-pack)" >&2; exit 1; }
source tools/gpu/wheels.sh  # once, here: the runs find them installed

pids=()
for run in "$@"; do
    name=${run%%=*}
    mkdir -p "$OUT/$name"
    # RUNS empty: each run trains in a fresh folder of its own; train.sh logs its stdout to train.log
    PACK=$PACK OUT=$OUT/$name RUNS="" WORKERS=$((WORKERS / $#)) SEG_ARGS=${run#*=} ENH_IMAGE_MINUTES=0 \
        ENH_SCAR_MINUTES=0 bash tools/gpu/train.sh >/dev/null 2>>"$OUT/$name/train.log" &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
done
exit $failed
