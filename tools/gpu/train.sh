#!/usr/bin/env bash
# One time-limited training session on a lent GPU machine, run there from the repository root with gpu_pack carried
# (`make gpu-pack` builds it here): `bash tools/gpu/train.sh`, with $OUT the folder that comes back. It trains the
# segmentation, then the enhancement model in two variants, image-only (the paper's conditioning) and tissue-scar
# (also the blood-pool, wall and scar maps), each warm-started from the bundled weights (or SEG_INIT, ENH_INIT,
# ENH_SCAR_INIT) and stopped by its own time limit, all within BUDGET_MINUTES. Each run's EMA weights and
# configuration come back as $OUT/NAME/model.safetensors and config.json, which `scarenhance bundle` takes as a run
# folder; the log as $OUT/train.log. The whole checkpoints (with the optimiser's moments) are too large to come back:
# a next session warm-starts from the weights, and its manifest counts only its own iterations.
# The workers' augmentation bounds the speed: on an H200 with 14 workers the segmentation made about 16
# iterations/s at batch 64 (drawn scars and tissue contrast on; 2026-11-28); size SEG_ITERATIONS to end inside
# SEG_MINUTES, so that a cosine reaches 0.
# Times in minutes; a run given 0 minutes is skipped. SEG_ARGS: more train-segmentation arguments (a lever to try,
# e.g. "--synthetic-scar 0.3"). DEVICE=cpu WORKERS=0 BATCH=2 with tiny ITERATIONS is the dry run the tests make.
set -uo pipefail
PACK=${PACK:-gpu_pack}
OUT=${OUT:?set OUT to the folder for the results}
RUNS=${RUNS:-$(mktemp -d)}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-12}
BATCH=${BATCH:-64}
BUDGET_MINUTES=${BUDGET_MINUTES:-9}  # the whole script: one device command may run 10 minutes
SEG_MINUTES=${SEG_MINUTES:-1.5} ENH_IMAGE_MINUTES=${ENH_IMAGE_MINUTES:-2} ENH_SCAR_MINUTES=${ENH_SCAR_MINUTES:-2.5}
SEG_ITERATIONS=${SEG_ITERATIONS:-3000} ENH_ITERATIONS=${ENH_ITERATIONS:-6000}
SEG_LR=${SEG_LR:-1e-4} ENH_LR=${ENH_LR:-3e-4}
read -ra SEG_ARGS <<< "${SEG_ARGS:-}"  # words, not globbed
SCHEDULE=${SCHEDULE:-constant}  # cosine reaches 0 only at the last iteration, which a time limit may cut short
SEG_INIT=${SEG_INIT:-Resources/models/heart_segmentation.safetensors}
ENH_INIT=${ENH_INIT:-Resources/models/enhancement.safetensors}
ENH_SCAR_INIT=${ENH_SCAR_INIT:-$ENH_INIT}

mkdir -p "$OUT" "$RUNS"
source tools/gpu/wheels.sh
export PYTHONPATH="$PWD:$PWD/tools/gpu/stub${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/train.log"
python3 -c "import ScarEnhanceLib.train, ScarEnhanceLib.cli" 2>&1 | tee -a "$OUT/train.log" || exit 1  # fail in seconds

minutes_for() {  # a run's own limit, or less where the budget (less a minute for each start) leaves less
    python3 -c "import sys; own, budget, spent = map(float, sys.argv[1:]); print(round(max(0.2, min(own, \
budget - spent / 60 - 1)), 2))" "$1" "$BUDGET_MINUTES" "$SECONDS"
}
DATA="$PACK/data"
COMMON=(--splits "$PACK/splits.json" --device "$DEVICE" --workers "$WORKERS" --batch-size "$BATCH"
        --checkpoint-every 500 --lr-schedule "$SCHEDULE")
ENHANCEMENT=(--dataset "$DATA/emidec" --dataset "$DATA/myops2020_train25" --normalisation heart
             --augmentation strong --max-timestep 300 --original-starts 0.5 --iterations "$ENH_ITERATIONS"
             --learning-rate "$ENH_LR" "${COMMON[@]}")

failed=0
run() {  # name, its own time limit, then the scarenhance command and its arguments; a failure spares the others
    local name=$1 minutes
    if python3 -c "import sys; sys.exit(float(sys.argv[1]) > 0)" "$2"; then
        echo "== $name skipped (0 minutes)" | tee -a "$OUT/train.log"
        return
    fi
    minutes=$(minutes_for "$2"); shift 2
    echo "== $name ($minutes min): $*" | tee -a "$OUT/train.log"
    if python3 -m ScarEnhanceLib "$@" --time-limit "$minutes" --run-dir "$RUNS/$name" 2>&1 | tee -a "$OUT/train.log"
    then
        mkdir -p "$OUT/$name"
        cp "$RUNS/$name/model.safetensors" "$RUNS/$name/config.json" "$OUT/$name/"
    else
        echo "== $name failed" | tee -a "$OUT/train.log"
        failed=1
    fi
}

run segmentation "$SEG_MINUTES" train-segmentation --dataset "$DATA/emidec" --dataset "$DATA/myops2020_train25" \
    --dataset "$DATA/mscmrseg19_lge" --dataset-share 3 1 1 --context-slices 1 --iterations "$SEG_ITERATIONS" \
    --learning-rate "$SEG_LR" --init-weights "$SEG_INIT" "${COMMON[@]}" ${SEG_ARGS[@]+"${SEG_ARGS[@]}"}
run enhancement_image "$ENH_IMAGE_MINUTES" train-diffusion --conditioning image --init-weights "$ENH_INIT" \
    "${ENHANCEMENT[@]}"
run enhancement_tissue_scar "$ENH_SCAR_MINUTES" train-diffusion --conditioning tissue-scar \
    --init-weights "$ENH_SCAR_INIT" "${ENHANCEMENT[@]}"
exit $failed
