"""Memory plan vs hand arithmetic for Minitron-4B and Llama-3.1-Minitron-4B-Width at tp 1 and 2, and SmolLM2-135M."""

import json

import pytest

from trt_minitron.archs import get_arch
from trt_minitron.archs.config import ModelConfig
from trt_minitron.build.run import BuildOptions, dry_run
from trt_minitron.errors import ConfigError
from trt_minitron.tensors.mapping import Mapping

GIB = 1 << 30

MINITRON_4B = dict(architecture="NemotronForCausalLM", vocab_size=256000, hidden_size=3072, intermediate_size=9216,
                   num_hidden_layers=32, num_attention_heads=24, num_key_value_heads=8, head_dim=128,
                   hidden_act="relu2", norm_eps=1e-5, max_position_embeddings=4096, partial_rotary_factor=0.5)
LLAMA31_MINITRON_4B = dict(architecture="LlamaForCausalLM", vocab_size=128256, hidden_size=3072,
                           intermediate_size=9216, num_hidden_layers=32, num_attention_heads=32,
                           num_key_value_heads=8, head_dim=128, hidden_act="silu", norm_eps=1e-5,
                           max_position_embeddings=131072, rope_theta=500000.0)
SMOLLM2_135M = dict(architecture="LlamaForCausalLM", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                    num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                    hidden_act="silu", norm_eps=1e-5, max_position_embeddings=8192, tie_word_embeddings=True)


def config_only_checkpoint(path, fields, tp=1, pp=1):
    """A TensorRT-LLM checkpoint folder holding only config.json, as the exporter writes it."""
    cfg = ModelConfig(**fields)
    path.mkdir(parents=True, exist_ok=True)
    trt = get_arch(cfg.architecture).trt_config(cfg, "bfloat16", Mapping(tp, pp))
    (path / "config.json").write_text(json.dumps(trt))
    return path


def plan(tmp_path, fields, tp, **opts):
    ckpt = config_only_checkpoint(tmp_path / f"tp{tp}", fields, tp)
    return dry_run(BuildOptions(checkpoint=ckpt, dry_run=True, **opts))["plan"]


# Reserve used below (plan.py): 1 GiB + max_num_tokens * 2 B * (2*hidden + qkv_width + mlp_width) + logits
# with the defaults max_num_tokens 8192, max_batch_size 8, beam 1, float32 logits.

def test_minitron_4b_tp1(tmp_path):
    p = plan(tmp_path, MINITRON_4B, tp=1, gpu_memory_gib=80)
    # per layer: ln 2*3072 + qkv (24+2*8)*128*3072=15,728,640 + dense 3072*3072=9,437,184 + post ln 6,144
    #            + fc 9216*3072=28,311,552 + proj 28,311,552 = 81,801,216 params; x32 = 2,617,638,912
    # + embedding 256000*3072=786,432,000 + ln_f 6,144 + lm_head 786,432,000 = 4,190,509,056 params x 2 B
    assert p["weight_bytes_per_rank"] == 8_381_018_112
    assert p["kv_cache_bytes_per_token"] == 131_072  # 2 * 32 layers * 8 kv heads * 128 * 2 B
    # 1,073,741,824 + 8192*2*(2*3072 + 5120 + 9216) = 335,544,320 + 8*256000*4 = 8,192,000
    assert p["activation_reserve_bytes"] == 1_417_478_144
    # (85,899,345,920 - 8,381,018,112 - 1,417,478,144) // 131,072 = 76,100,849,664 // 131,072
    assert p["max_kv_tokens"] == 580_603
    assert p["max_batch_size"] == 283  # 580,603 // 2048


def test_minitron_4b_tp2(tmp_path):
    p = plan(tmp_path, MINITRON_4B, tp=2, gpu_memory_gib=80)
    # per layer: ln 6,144 + qkv (12+2*4)*128*3072=7,864,320 + dense 3072*1536=4,718,592 + post ln 6,144
    #            + fc 4608*3072=14,155,776 + proj 14,155,776 = 40,906,752; x32 = 1,309,016,064
    # + embedding (replicated) 786,432,000 + ln_f 6,144 + lm_head 128000*3072=393,216,000 = 2,488,670,208 x 2 B
    assert p["weight_bytes_per_rank"] == 4_977_340_416
    assert p["kv_cache_bytes_per_token"] == 65_536  # 2 * 32 * 4 kv heads per rank * 128 * 2 B
    # 1,073,741,824 + 8192*2*(6144 + 2560 + 4608) = 218,103,808 + 8,192,000
    assert p["activation_reserve_bytes"] == 1_300_037_632
    # (85,899,345,920 - 4,977,340,416 - 1,300,037,632) = 79,621,967,872; // 65,536
    assert p["max_kv_tokens"] == 1_214_934
    assert p["max_batch_size"] == 593  # 1,214,934 // 2048


def test_llama31_minitron_4b_width_tp1(tmp_path):
    p = plan(tmp_path, LLAMA31_MINITRON_4B, tp=1, gpu_memory_gib=80)
    # per layer: ln 3072 + qkv (32+2*8)*128*3072=18,874,368 + dense 3072*4096=12,582,912 + post ln 3072
    #            + fc, gate 9216*3072=28,311,552 each + proj 28,311,552 = 116,398,080; x32 = 3,724,738,560
    # + embedding 128256*3072=394,002,432 + ln_f 3072 + lm_head 394,002,432 = 4,512,746,496 x 2 B
    assert p["weight_bytes_per_rank"] == 9_025_492_992
    assert p["kv_cache_bytes_per_token"] == 131_072  # 2 * 32 * 8 * 128 * 2 B
    # 1,073,741,824 + 8192*2*(6144 + 6144 + 18432) = 503,316,480 + 8*128256*4 = 4,104,192
    assert p["activation_reserve_bytes"] == 1_581_162_496
    # (85,899,345,920 - 9,025,492,992 - 1,581,162,496) = 75,292,690,432; // 131,072
    assert p["max_kv_tokens"] == 574_437
    assert p["max_batch_size"] == 280  # 574,437 // 2048


def test_llama31_minitron_4b_width_tp2(tmp_path):
    p = plan(tmp_path, LLAMA31_MINITRON_4B, tp=2, gpu_memory_gib=80)
    # per layer: ln 3072 + qkv (16+2*4)*128*3072=9,437,184 + dense 3072*2048=6,291,456 + post ln 3072
    #            + fc, gate, proj 4608*3072=14,155,776 each = 58,202,112; x32 = 1,862,467,584
    # + embedding 394,002,432 + ln_f 3072 + lm_head 64128*3072=197,001,216 = 2,453,474,304 x 2 B
    assert p["weight_bytes_per_rank"] == 4_906_948_608
    assert p["kv_cache_bytes_per_token"] == 65_536  # 2 * 32 * 4 * 128 * 2 B
    # 1,073,741,824 + 8192*2*(6144 + 3072 + 9216) = 301,989,888 + 4,104,192
    assert p["activation_reserve_bytes"] == 1_379_835_904
    # (85,899,345,920 - 4,906,948,608 - 1,379,835,904) = 79,612,561,408; // 65,536
    assert p["max_kv_tokens"] == 1_214_791
    assert p["max_batch_size"] == 593  # 1,214,791 // 2048


def test_smollm2_135m_config_only(tmp_path):
    p = plan(tmp_path, SMOLLM2_135M, tp=1, gpu_memory_gib=80)
    # per layer: ln 576 + qkv (9+2*3)*64*576=552,960 + dense 576*576=331,776 + post ln 576
    #            + fc, gate, proj 1536*576=884,736 each = 3,540,096; x30 = 106,202,880
    # + embedding 49152*576=28,311,552 + ln_f 576 + lm_head (tied, still written) 28,311,552
    #   = 162,826,560 x 2 B
    assert p["weight_bytes_per_rank"] == 325_653_120
    assert p["kv_cache_bytes_per_token"] == 23_040  # 2 * 30 * 3 * 64 * 2 B
    # 1,073,741,824 + 8192*2*(1152 + 960 + 3072) = 84,934,656 + 8*49152*4 = 1,572,864
    assert p["activation_reserve_bytes"] == 1_160_249_344
    assert p["max_kv_tokens"] == 3_663_777  # 84,413,443,456 // 23,040
    assert p["max_batch_size"] == 1788


def test_tp_larger_than_kv_heads_repeats_kv(tmp_path):
    # kv heads per rank = ceil(8 / 16) = 1, so KV per token per rank is 2*32*1*128*2 B, not 0
    fields = dict(MINITRON_4B, num_attention_heads=32, hidden_size=4096)
    p = plan(tmp_path, fields, tp=16, gpu_memory_gib=80)
    assert p["kv_cache_bytes_per_token"] == 16_384


def test_pipeline_parallel_counts_layers_per_rank(tmp_path):
    ckpt = config_only_checkpoint(tmp_path / "pp2", MINITRON_4B, tp=1, pp=2)
    p = dry_run(BuildOptions(checkpoint=ckpt, dry_run=True, gpu_memory_gib=80))["plan"]
    assert p["kv_cache_bytes_per_token"] == 65_536  # 2 * 16 layers * 8 * 128 * 2 B
    # rank 0: embedding 786,432,000 + 16 * 81,801,216 = 2,095,251,456 params (rank 1 adds ln_f + lm_head:
    # 786,438,144 + 1,308,819,456 = 2,095,257,600, the larger) x 2 B
    assert p["weight_bytes_per_rank"] == 4_190_515_200


def test_default_gpu_memory_without_gpu_is_80_gib(tmp_path, monkeypatch):
    import trt_minitron.build.run as b

    monkeypatch.setattr(b, "_cuda_available", lambda: False)
    p = plan(tmp_path, SMOLLM2_135M, tp=1)
    assert p["gpu_memory_bytes"] == 80 * GIB
    assert "no GPU" in p["gpu_memory_source"]


def test_too_large_batch_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"--max-batch-size 400 .* the largest batch that fits is 28\d"):
        plan(tmp_path, MINITRON_4B, tp=1, gpu_memory_gib=80, max_batch_size=400)


def test_weights_larger_than_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"weights 7\.81 GiB .* exceed GPU memory 8\.00 GiB"):
        plan(tmp_path, MINITRON_4B, tp=1, gpu_memory_gib=8)


def test_one_sequence_must_fit(tmp_path):
    with pytest.raises(ConfigError, match="one sequence of --max-seq-len 131072"):
        plan(tmp_path, MINITRON_4B, tp=1, gpu_memory_gib=20, max_seq_len=131072, max_batch_size=1)
