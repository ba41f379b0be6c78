"""Layer-by-layer `quantize` (the default) gives ModelOpt's whole-model answer, resumes, and stays flat in depth.

- Calibration: every quantizer value (amax, pre-quant scale) and every weight ModelOpt's calibration touches
  (AWQ and SmoothQuant fold scales into weights), per layer, bit for bit against one whole-model
  `mtq.quantize`, for tiny Llama, Nemotron and Mistral models in every CPU format.
- Checkpoints: `quantize` and `quantize --whole-model` write the same tensors (every rank file, the pre-quant
  sidecar, the unified HF safetensors) and the same config.json, at tp 1 and 2 (and pp 3, --format hf).
- Resume: SIGINT after the first of 3 layers, then `--resume`, gives the uninterrupted run's files; without
  --resume nothing is left behind; a --resume with other settings is refused.
- Memory: a child's peak RSS grows by less than one layer from 2 to 6 layers (the whole-model path's by ~4).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from quant_fixtures import SHARED, articles, has_fp8_kv, make_quant_model, qformat_of, write_tokenizer
from safetensors import safe_open

from trt_minitron.cli import main

CALIB = ["--calib-dataset", str(SHARED), "--calib-size", "8", "--calib-max-len", "48", "--batch-size", "4"]
VARIANTS = ("fp8", "fp8+kv", "int8_sq", "int4_awq", "int4_awq+kv", "w4a8_awq")
REPORTS = ("trt_minitron_quantize.json", "trt_minitron_export.json")  # timings and run facts: may differ

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("layerwise_models")
    return {kind: make_quant_model(kind, root / kind, num_hidden_layers=3) for kind in ("llama", "nemotron", "mistral")}


def _quantizer_state(module: torch.nn.Module, rename=lambda n: n) -> dict[str, torch.Tensor]:
    from modelopt.torch.quantization.nn import TensorQuantizer

    out = {}
    for name, m in module.named_modules():
        if isinstance(m, TensorQuantizer):
            for attr in ("_amax", "_pre_quant_scale"):
                if getattr(m, attr, None) is not None:
                    out[f"{rename(name)}.{attr}"] = getattr(m, attr).detach().clone()
    return out


def _modelopt_layerwise(cfg: dict) -> dict:
    """The same config with ModelOpt's own layer-by-layer calibration switched on (LayerwiseConfig.enable)."""
    cfg = copy.deepcopy(cfg)
    algorithm = cfg["algorithm"]
    cfg["algorithm"] = {**({"method": algorithm} if isinstance(algorithm, str) else algorithm), "layerwise": {"enable": True}}
    return cfg


def _awq_with_fp8_kv(variant: str) -> bool:
    """AWQ-lite with an FP8 KV cache: ModelOpt's whole-model search pass runs with the K/V quantizers already on,
    so from layer 1 on a layer searches on activations carrying the earlier layers' K/V rounding; layer by layer
    (ModelOpt's own layerwise mode, and ours) it searches on float activations. Only there may the two differ."""
    return "awq" in variant and has_fp8_kv(variant)


@pytest.mark.parametrize("kind", ["llama", "nemotron", "mistral"])
def test_layerwise_calibration_is_modelopts_bit_for_bit(models, kind):
    """Ours == ModelOpt's own layerwise mode, always; == its whole-model calibration except AWQ + FP8 KV."""
    import modelopt.torch.quantization as mtq
    from transformers import AutoTokenizer

    from trt_minitron.checkpoints.quant_formats import get_format
    from trt_minitron.quantize.calib import calibration_batches
    from trt_minitron.quantize.hf_model import load_whole_model
    from trt_minitron.quantize.layerwise import calibrate_layers, capture_inputs
    from trt_minitron.quantize.modelopt_run import calibrate, quant_config, quiet
    from trt_minitron.sources.hf import HFSource

    source = HFSource(models[kind])
    batches = calibration_batches(AutoTokenizer.from_pretrained(models[kind]), articles(8), 48, 4)

    def reference(cfg: dict, layerwise: bool) -> tuple[dict, dict]:
        model = load_whole_model(source, "cpu")
        if layerwise:
            with quiet(), torch.no_grad():
                mtq.quantize(model, _modelopt_layerwise(cfg), lambda m: [m(input_ids=b) for b in batches])
        else:
            calibrate(model, cfg, batches)
        return ({n: v for n, v in _quantizer_state(model).items() if n.startswith("model.layers.")},
                {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("model.layers.")})

    for variant in VARIANTS:
        cfg = quant_config(get_format(qformat_of(variant)), "fp8" if has_fp8_kv(variant) else None)
        got, got_w = {}, {}
        for layer in calibrate_layers(source, cfg, capture_inputs(source, batches, "cpu", torch.float32), "cpu",
                                      torch.float32):
            pre = f"model.layers.{layer.index}."
            state = layer.quantizer_state()  # the library's view, for verify's recomputation (issue 20)
            mine = _quantizer_state(layer.layer, lambda n, p=pre: p + n)
            assert sorted(state) == sorted(mine) and all(torch.equal(state[n], mine[n]) for n in mine)
            got.update(mine)
            got_w.update({pre + n: p.detach().clone() for n, p in layer.layer.named_parameters()})
        for layerwise in (True, False):
            want, want_w = reference(cfg, layerwise)
            assert sorted(got) == sorted(want) and len(want) > 10, (variant, sorted(set(got) ^ set(want)))
            assert sorted(got_w) == sorted(want_w)
            differ = [n for n in [*want, *want_w] if not torch.equal({**got, **got_w}[n], {**want, **want_w}[n])]
            if layerwise or not _awq_with_fp8_kv(variant):
                assert not differ, (variant, layerwise, differ[:5])
            else:  # only AWQ-searched values of layers after the first, by a few percent (measured: <= 11 %)
                assert all(not n.startswith("model.layers.0.") for n in differ), differ
                for n in differ:
                    if "_amax" in n or "_pre_quant_scale" in n:
                        rel = ((got[n] - want[n]).abs() / want[n].abs().clamp(min=1e-12)).max()
                        assert rel < 0.25, (n, float(rel))


def test_calibrated_quantizer_states_is_the_library_view(models):
    """The reusable entry point (verify's recomputation, issue 20): each layer's calibrated values in order, equal
    to a whole-model calibration's."""
    from transformers import AutoTokenizer

    from trt_minitron.checkpoints.quant_formats import get_format
    from trt_minitron.quantize.calib import calibration_batches
    from trt_minitron.quantize.hf_model import load_whole_model
    from trt_minitron.quantize.layerwise import calibrated_quantizer_states
    from trt_minitron.quantize.modelopt_run import calibrate, quant_config
    from trt_minitron.sources.hf import HFSource

    source = HFSource(models["nemotron"])
    batches = calibration_batches(AutoTokenizer.from_pretrained(models["nemotron"]), articles(8), 48, 4)
    cfg = quant_config(get_format("int8_sq"), None)
    states = list(calibrated_quantizer_states(source, cfg, batches))
    assert [i for i, _ in states] == [0, 1, 2]
    whole = load_whole_model(source, "cpu")
    calibrate(whole, cfg, batches)
    want = {n: v for n, v in _quantizer_state(whole).items() if n.startswith("model.layers.")}
    got = {n: v for _, state in states for n, v in state.items()}
    assert sorted(got) == sorted(want) and all(torch.equal(got[n], want[n]) for n in want)


def _tensors_and_configs(folder: Path) -> dict:
    """Every tensor (as raw bytes, dtype and shape) and every JSON file but the run reports, by file and name."""
    out = {}
    for f in sorted(folder.iterdir()):
        if f.name in REPORTS:
            continue
        if f.suffix == ".safetensors":
            with safe_open(str(f), "pt") as h:
                for n in h.keys():
                    t = h.get_tensor(n)
                    out[(f.name, n)] = (t.dtype, tuple(t.shape), t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif f.suffix == ".json":
            out[(f.name, "")] = json.loads(f.read_text())
        else:
            out[(f.name, "")] = f.read_bytes()
    return out


CHECKPOINT_CASES = [(kind, v, tp) for kind in ("llama", "nemotron", "mistral") for v in VARIANTS for tp in (1, 2)]


@pytest.mark.parametrize("kind,variant,tp", CHECKPOINT_CASES, ids=[f"{k}-{v}-tp{t}" for k, v, t in CHECKPOINT_CASES])
def test_checkpoint_is_the_whole_model_paths_tensor_for_tensor(models, tmp_path, kind, variant, tp):
    args = ["quantize", str(models[kind]), "--qformat", qformat_of(variant), "--tp", str(tp), *CALIB]
    args += ["--kv-cache-dtype", "fp8"] if has_fp8_kv(variant) else []
    assert main([*args, "-o", str(tmp_path / "layers")]) == 0
    assert main([*args, "-o", str(tmp_path / "whole"), "--whole-model"]) == 0
    got, want = _tensors_and_configs(tmp_path / "layers"), _tensors_and_configs(tmp_path / "whole")
    assert sorted(got) == sorted(want)
    differ = [k for k in want if got[k] != want[k]]
    if _awq_with_fp8_kv(variant):  # see _awq_with_fp8_kv: linears of layers after the first may differ
        assert all(".layers.0." not in n and ".layers." in n and got[(f, n)][:2] == want[(f, n)][:2]
                   for f, n in differ), differ
    else:
        assert differ == []
    assert len([k for k in got if k[0].startswith("rank")]) > 20 * tp
    report = json.loads((tmp_path / "layers" / "trt_minitron_quantize.json").read_text())
    assert report["conversion_check"]["worst"]["layers"] == 3 and report["calibration"]["mode"].startswith("layer")


@pytest.mark.parametrize("kind,extra", [("nemotron", ["--qformat", "w4a8_awq", "--pp", "3"]),
                                        ("llama", ["--qformat", "int8_sq", "--tp", "2", "--pp", "3"]),
                                        ("llama", ["--qformat", "fp8", "--kv-cache-dtype", "fp8", "--format", "hf"]),
                                        ("nemotron", ["--qformat", "int4_awq", "--format", "hf"]),
                                        ("mistral", ["--qformat", "w4a8_awq", "--format", "hf", "--dtype", "float16"])])
def test_pipeline_stages_and_unified_hf_match_the_whole_model_path(models, tmp_path, kind, extra):
    args = ["quantize", str(models[kind]), *extra, *CALIB]
    assert main([*args, "-o", str(tmp_path / "layers")]) == 0
    assert main([*args, "-o", str(tmp_path / "whole"), "--whole-model"]) == 0
    got, want = _tensors_and_configs(tmp_path / "layers"), _tensors_and_configs(tmp_path / "whole")
    assert sorted(got) == sorted(want) and [k for k in want if got[k] != want[k]] == []


def test_calibration_record_says_what_was_used_and_rebuilds_its_batches(models, tmp_path):
    """trt_minitron_quantize.json's recipe (issue 20 item 1) read back: the same batches rebuilt from it, and
    calibration data that changed after the run (one character of one article) refused, naming the file."""
    import hashlib

    from transformers import AutoTokenizer

    from trt_minitron.errors import DatasetError
    from trt_minitron.quantize.calib import recorded_batches, tokens_digest

    data = tmp_path / "calib.jsonl"
    data.write_bytes(SHARED.read_bytes())
    out = tmp_path / "q"
    calib = ["--calib-dataset", str(data), *CALIB[2:]]
    assert main(["quantize", str(models["llama"]), "-o", str(out), "--qformat", "int4_awq", *calib]) == 0
    report = json.loads((out / "trt_minitron_quantize.json").read_text())
    cal = report["calibration"]
    assert {k: v for k, v in cal["dataset"].items() if k != "articles_sha256"} == {
        "file": str(data.resolve()), "sha256": hashlib.sha256(data.read_bytes()).hexdigest(), "records": "first 8"}
    assert sorted(i for batch in cal["sample_ids"] for i in batch) == list(range(8))  # no empty article in 8
    assert [len(b) for b in cal["sample_ids"]] == [s[0] for s in cal["batch_shapes"]] == [4, 4]
    assert cal["batch_shapes"][0][1] >= cal["batch_shapes"][1][1] and cal["max_len"] == 48
    assert cal["modelopt_algorithm"]["method"] == "awq_lite" and cal["seed"] is None
    assert cal["modelopt_quant_cfg"] and (cal["device"], cal["dtype"]) == ("cpu", "float32")
    assert {"nvidia-modelopt", "torch", "transformers", "trt-minitron"} <= set(report["versions"])
    modes = {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()}
    assert len(set(modes.values())) == 1, modes  # the pre-quant sidecar too (it was 0600, issue 15)

    tokenizer = AutoTokenizer.from_pretrained(models["llama"])
    rebuilt = recorded_batches(cal, tokenizer)
    assert tokens_digest(rebuilt) == cal["tokens_sha256"] and [list(b.shape) for b in rebuilt] == cal["batch_shapes"]
    other = lambda text, **kw: {"input_ids": [i + 1 for i in tokenizer(text, **kw)["input_ids"]]}  # noqa: E731
    with pytest.raises(DatasetError, match="tokenize differently from the recorded run"):
        recorded_batches(cal, other)

    lines = data.read_text().splitlines()
    record = json.loads(lines[5])
    record["article"] = record["article"].replace("e", "E", 1)
    data.write_text("\n".join([*lines[:5], json.dumps(record), *lines[6:]]) + "\n")
    with pytest.raises(DatasetError, match=f"{data.resolve()} are not the ones the checkpoint was calibrated on"):
        recorded_batches(cal, tokenizer)
    out2 = tmp_path / "q2"
    assert main(["quantize", str(models["llama"]), "-o", str(out2), "--qformat", "int4_awq", *calib]) == 0
    cal2 = json.loads((out2 / "trt_minitron_quantize.json").read_text())["calibration"]
    changed = [k for k in ("sha256", "articles_sha256") if cal2["dataset"][k] != cal["dataset"][k]]
    assert changed == ["sha256", "articles_sha256"] and cal2["tokens_sha256"] != cal["tokens_sha256"]


# --- resume ----------------------------------------------------------------------------------------------------

RESUME_CALIB = ["--calib-dataset", str(SHARED), "--calib-size", "48", "--calib-max-len", "96", "--batch-size", "4"]


def _interrupt_after_first_layer(args: list[str]) -> tuple[int, str]:
    """Run the CLI in a child; SIGINT it as soon as it reports its first finished layer."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "trt_minitron", *args], stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("layer 1/3:"):
            proc.send_signal(signal.SIGINT)
            break
    lines += proc.stderr.readlines()
    return proc.wait(timeout=300), "".join(lines)


def test_sigint_then_resume_gives_the_uninterrupted_checkpoint(models, tmp_path, capsys):
    src = str(models["nemotron"])
    args = ["quantize", src, "--qformat", "int4_awq", "--kv-cache-dtype", "fp8", "--tp", "2", *RESUME_CALIB]
    assert main([*args, "-o", str(tmp_path / "ref")]) == 0
    out, state = tmp_path / "out", tmp_path / ".out.quantize-resume"
    rc, err = _interrupt_after_first_layer([*args, "-o", str(out), "--resume"])
    assert rc == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].endswith(f"in {state}: rerun with --resume to continue"), err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [".out.quantize-resume", "ref"]
    done = json.loads((state / "manifest.json").read_text())["layers_done"]
    assert done in (1, 2)  # the SIGINT lands in layer 2 (if that finished first, only layer 3 is left)

    capsys.readouterr()
    assert main([*args, "-o", str(out), "--dtype", "float16", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds layers of a run with other settings (options.dtype: 'bfloat16' then, 'float16' now)" in err
    assert len(err.strip().splitlines()) == 1 and state.is_dir() and not out.exists()

    assert main([*args, "-o", str(out), "--resume"]) == 0
    assert f"layer by layer, {done} layers resumed" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "ref"]  # the resume state is gone
    got, want = _tensors_and_configs(out), _tensors_and_configs(tmp_path / "ref")
    assert sorted(got) == sorted(want) and [k for k in want if got[k] != want[k]] == []
    assert json.loads((out / "trt_minitron_quantize.json").read_text())["resumed_layers"] == done


def test_a_run_stopped_while_writing_resumes_without_calibrating_again(models, tmp_path, capsys, monkeypatch):
    import trt_minitron.quantize.assemble as assemble
    from trt_minitron.quantize import layerwise

    args = ["quantize", str(models["llama"]), "--qformat", "w4a8_awq", "--tp", "2", *CALIB, "--resume"]
    assert main([*args, "-o", str(tmp_path / "ref")]) == 0

    def crash(*_a, **_k):
        raise KeyboardInterrupt  # after every layer was committed, while the rank files are written

    with monkeypatch.context() as m:
        m.setattr(assemble, "write_checkpoint", crash)
        assert main([*args, "-o", str(tmp_path / "out")]) == 130
    assert json.loads((tmp_path / ".out.quantize-resume" / "manifest.json").read_text())["layers_done"] == 3
    monkeypatch.setattr(layerwise, "layer_shell", lambda *a: pytest.fail("a finished layer was read again"))
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / "out")]) == 0
    assert "3 layers resumed" in capsys.readouterr().err
    got, want = _tensors_and_configs(tmp_path / "out"), _tensors_and_configs(tmp_path / "ref")
    assert sorted(got) == sorted(want) and [k for k in want if got[k] != want[k]] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "ref"]


def test_sigint_without_resume_leaves_nothing(models, tmp_path):
    src = models["llama"]
    rc, err = _interrupt_after_first_layer(["quantize", str(src), "-o", str(tmp_path / "out"), "--qformat", "fp8",
                                            *RESUME_CALIB])
    assert rc == 130 and err.strip().splitlines()[-1] == "trt-minitron: interrupted by SIGINT; temporary files removed"
    assert list(tmp_path.iterdir()) == []


# --- memory ----------------------------------------------------------------------------------------------------

CHILD = r"""
import json, sys
from trt_minitron.cli import main
rc = main(["quantize", *sys.argv[1:]])
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"rc": rc, "peak": peak}))
"""
HIDDEN, FFN, VOCAB = 1024, 4096, 8192
# One layer in float32: q and o 1024x1024, k and v 256x1024, gate/up/down 4096x1024: 59 MB.
LAYER_F32 = 4 * (2 * HIDDEN * HIDDEN + 2 * 256 * HIDDEN + 3 * FFN * HIDDEN)
# A fixed glibc mmap threshold, as in test_verify_memory.py: the peak then measures what quantize holds.
CHILD_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20), "OMP_NUM_THREADS": "1"}


def _peak(src: Path, out: Path, tokenizer: Path, *flags: str) -> int:
    args = [str(src), "-o", str(out), "--qformat", "fp8", "--tokenizer", str(tokenizer), *CALIB, *flags]
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=600,
                          env=CHILD_ENV)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["rc"] == 0, proc.stdout + proc.stderr
    return report["peak"]


@pytest.mark.slow
def test_peak_rss_is_flat_in_depth(tmp_path):
    from synthetic import write_synthetic_hf

    write_tokenizer(tmp_path / "tok", 256)
    peaks, whole = {}, None
    for layers in (2, 6):
        hf = {"architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN, "intermediate_size": FFN,
              "num_hidden_layers": layers, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 128,
              "hidden_act": "silu", "rms_norm_eps": 1e-5, "vocab_size": VOCAB, "max_position_embeddings": 4096}
        src = write_synthetic_hf(tmp_path / f"src{layers}", hf)
        peaks[layers] = _peak(src, tmp_path / f"q{layers}", tmp_path / "tok")
        if layers == 6:
            whole = _peak(src, tmp_path / "whole6", tmp_path / "tok", "--whole-model")
    print(f"peaks {peaks}, whole model {whole}")
    assert peaks[6] - peaks[2] < LAYER_F32, peaks
    assert peaks[6] < whole - 3 * LAYER_F32, (peaks, whole)  # the whole model holds all 6 layers in float32
