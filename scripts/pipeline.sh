#!/usr/bin/env bash
# export -> verify -> build -> summarize for one model, with every artefact in a mounted folder.
#
#   scripts/pipeline.sh SRC NAME [--tp N] [--pp N] [--samples N] [--dry-run]
#
# SRC: a hub id (org/name), an HF folder, a .gguf file or a .nemo file/folder (paths as seen here,
# e.g. under /models in the container). Outputs: $CKPT_ROOT/NAME (TensorRT-LLM checkpoint),
# $ENGINE_ROOT/NAME (engines + manifest), $ENGINE_ROOT/NAME/summarize.md (ROUGE and tokens/s).
# --dry-run stops after `build --dry-run` (no GPU needed). Extra build flags: BUILD_ARGS="--max-batch-size 4".
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
[[ $# -ge 1 && ( $1 == -h || $1 == --help ) ]] && { usage; exit 0; }
[[ $# -ge 2 ]] || { usage >&2; exit 2; }

SRC=$1 NAME=$2
shift 2
TP=1 PP=1 SAMPLES=20 DRY_RUN=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --tp) TP=$2; shift 2 ;;
    --pp) PP=$2; shift 2 ;;
    --samples) SAMPLES=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    *) echo "pipeline.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

CKPT_ROOT=${CKPT_ROOT:-/checkpoints}
ENGINE_ROOT=${ENGINE_ROOT:-/engines}
TRT_MINITRON=${TRT_MINITRON:-trt-minitron}
CKPT="$CKPT_ROOT/$NAME"
ENGINE="$ENGINE_ROOT/$NAME"
read -r -a build_args <<< "${BUILD_ARGS:-}"

step() { echo "== $*" >&2; }

step "export $SRC -> $CKPT (tp $TP, pp $PP)"
$TRT_MINITRON export "$SRC" --output "$CKPT" --tp "$TP" --pp "$PP" --dtype bfloat16 --overwrite

step "verify $CKPT against $SRC"
$TRT_MINITRON verify "$CKPT" --reference "$SRC"

step "build --dry-run (memory plan)"
$TRT_MINITRON build "$CKPT" --dry-run "${build_args[@]}" > "$CKPT/build_plan.json"
cat "$CKPT/build_plan.json"
[[ $DRY_RUN == 1 ]] && exit 0

step "build $CKPT -> $ENGINE"
$TRT_MINITRON build "$CKPT" --output "$ENGINE" --overwrite --workers "$((TP * PP))" "${build_args[@]}"

step "summarize (CNN/DailyMail, $SAMPLES samples)"
world=$((TP * PP))
launcher=()
if [[ $world -gt 1 ]]; then
  launcher=(mpirun -n "$world" --allow-run-as-root)
fi
"${launcher[@]}" $TRT_MINITRON summarize --backend trtllm "$ENGINE" --num-samples "$SAMPLES" \
  | tee "$ENGINE/summarize.md"
