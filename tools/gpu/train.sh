#!/usr/bin/env bash
# One time-limited training session on a lent GPU machine (run there from the repository root, with gpu_pack
# carried; make gpu-pack builds it here): the segmentation, then the enhancement model in both variants, the
# paper's image-only one and the tissue-scar one, each from the bundled weights, each stopped by its own time
# limit. The EMA weights, configurations and the log are copied to $OUT, the folder that comes back:
#   segmentation.safetensors, enhancement_image.safetensors, enhancement_tissue_scar.safetensors (+ .json).
# Back here, `scarenhance bundle` needs a run folder: put each pair back as model.safetensors and config.json.
# The whole checkpoints (weights, EMA and optimiser moments) exceed what comes back, so these runs are not
# resumable there; warm-start the next one from the weights (--init-weights).
# Times in minutes; DEVICE=cpu WORKERS=0 BATCH=2 with tiny ITERATIONS is the dry run the tests make.
set -euo pipefail
PACK=${PACK:-gpu_pack}
OUT=${OUT:?set OUT to the folder for the results}
RUNS=${RUNS:-runs/gpu}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-12}
BATCH=${BATCH:-64}
SEG_MINUTES=${SEG_MINUTES:-2} ENH_IMAGE_MINUTES=${ENH_IMAGE_MINUTES:-2.5} ENH_SCAR_MINUTES=${ENH_SCAR_MINUTES:-3}
SEG_ITERATIONS=${SEG_ITERATIONS:-3000} ENH_ITERATIONS=${ENH_ITERATIONS:-6000}
SEG_LR=${SEG_LR:-1e-4} ENH_LR=${ENH_LR:-3e-4}
SCHEDULE=${SCHEDULE:-constant}  # cosine reaches 0 only at the last iteration, which a time limit may cut short

if compgen -G "$PACK/wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$PACK"/wheels/*.whl
fi
export PYTHONPATH="$PWD:/tmp/site:$PWD/tools/gpu/stub${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS"
DATA="$PACK/data"
COMMON=(--splits "$PACK/splits.json" --device "$DEVICE" --workers "$WORKERS" --batch-size "$BATCH"
        --checkpoint-every 500 --lr-schedule "$SCHEDULE")
ENHANCEMENT=(--dataset "$DATA/emidec" --dataset "$DATA/myops2020_train25" --normalisation heart
             --augmentation strong --max-timestep 300 --original-starts 0.5 --iterations "$ENH_ITERATIONS"
             --learning-rate "$ENH_LR" --init-weights Resources/models/enhancement.safetensors "${COMMON[@]}")

run() {  # name, then the scarenhance command and its arguments
    local name=$1; shift
    echo "== $name: $*"
    python3 -m ScarEnhanceLib "$@" --run-dir "$RUNS/$name" 2>&1 | tee -a "$OUT/train.log"
    cp "$RUNS/$name/model.safetensors" "$OUT/$name.safetensors"
    cp "$RUNS/$name/config.json" "$OUT/$name.json"
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/train.log" || true
run segmentation train-segmentation --dataset "$DATA/emidec" --dataset "$DATA/myops2020_train25" \
    --dataset "$DATA/mscmrseg19_lge" --dataset-share 3 1 1 --context-slices 1 --iterations "$SEG_ITERATIONS" \
    --learning-rate "$SEG_LR" --init-weights Resources/models/heart_segmentation.safetensors \
    --time-limit "$SEG_MINUTES" "${COMMON[@]}"
run enhancement_image train-diffusion --conditioning image --time-limit "$ENH_IMAGE_MINUTES" "${ENHANCEMENT[@]}"
run enhancement_tissue_scar train-diffusion --conditioning tissue-scar --time-limit "$ENH_SCAR_MINUTES" \
    "${ENHANCEMENT[@]}"
