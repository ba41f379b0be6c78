#!/usr/bin/env bash
# The Hugging Face route (TensorRT-LLM 1.3+, PyTorch backend): export -> verify -> quantize -> summarize -> serve -> bench.
#
#   scripts/pipeline_hf.sh SRC NAME [--qformat fp8|int4_awq|...] [--kv-cache-dtype fp8] [--samples N] [--requests N]
#                          [--dry-run]
#
# SRC: a hub id, an HF folder, a .gguf file or a .nemo file/folder. Outputs: $HF_ROOT/NAME (bf16 HF folder),
# $CKPT_ROOT/NAME (the TensorRT-LLM checkpoint verify judges: same conversion plan), $HF_ROOT/NAME-QFORMAT (ModelOpt
# unified checkpoint, with --qformat), and next to the served folder summarize.md and bench.json.
# --dry-run stops after `serve --dry-run` (no GPU needed). Extra serve flags: SERVE_ARGS="--tp-size 2".
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
[[ $# -ge 1 && ( $1 == -h || $1 == --help ) ]] && { usage; exit 0; }
[[ $# -ge 2 ]] || { usage >&2; exit 2; }

SRC=$1 NAME=$2
shift 2
QFORMAT="" KV="" SAMPLES=20 REQUESTS=64 DRY_RUN=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --qformat) QFORMAT=$2; shift 2 ;;
    --kv-cache-dtype) KV=$2; shift 2 ;;
    --samples) SAMPLES=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    *) echo "pipeline_hf.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

HF_ROOT=${HF_ROOT:-/hf}
CKPT_ROOT=${CKPT_ROOT:-/checkpoints}
PORT=${PORT:-8000}
TRT_MINITRON=${TRT_MINITRON:-trt-minitron}
read -r -a serve_args <<< "${SERVE_ARGS:-}"
HF="$HF_ROOT/$NAME"
MODEL=$HF

step() { echo "== $*" >&2; }

step "export $SRC -> $HF (Hugging Face, bfloat16)"
$TRT_MINITRON export "$SRC" --output "$HF" --format hf --dtype bfloat16 --overwrite

step "verify: the same conversion as a TensorRT-LLM checkpoint ($CKPT_ROOT/$NAME) against $SRC"
$TRT_MINITRON export "$SRC" --output "$CKPT_ROOT/$NAME" --dtype bfloat16 --overwrite
$TRT_MINITRON verify "$CKPT_ROOT/$NAME" --reference "$SRC"

if [[ -n $QFORMAT ]]; then
  MODEL="$HF-$QFORMAT${KV:+-kv$KV}"
  step "quantize $HF -> $MODEL ($QFORMAT${KV:+, $KV KV cache}, ModelOpt unified checkpoint)"
  $TRT_MINITRON quantize "$HF" --output "$MODEL" --qformat "$QFORMAT" ${KV:+--kv-cache-dtype "$KV"} --format hf --overwrite
fi

step "serve --dry-run (the trtllm-serve command and the LLM API options derived from $MODEL)"
$TRT_MINITRON serve "$MODEL" --server trtllm --dry-run --llm-api-options "$MODEL.trtllm-serve.yaml" "${serve_args[@]}"
[[ $DRY_RUN == 1 ]] && exit 0

step "summarize (CNN/DailyMail, $SAMPLES samples, LLM API in this process)"
$TRT_MINITRON summarize --backend trtllm "$MODEL" --num-samples "$SAMPLES" | tee "$MODEL.summarize.md"

step "serve $MODEL on port $PORT, then bench"
$TRT_MINITRON serve "$MODEL" --server trtllm --port "$PORT" --llm-api-options "$MODEL.trtllm-serve.yaml" "${serve_args[@]}" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
until python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=2)" 2>/dev/null; do
  kill -0 "$server" 2>/dev/null || { echo "pipeline_hf.sh: the server exited before it was ready" >&2; exit 1; }
  sleep 5
done
$TRT_MINITRON bench "http://127.0.0.1:$PORT/v1" --tokenizer "$MODEL" --concurrency 1,4,16 --num-requests "$REQUESTS" \
  --report "$MODEL.bench.json"
