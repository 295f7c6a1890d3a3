"""Small random BitNet checkpoints for the model tests.

Dimensions are deliberately not powers of two (hidden 40 with 5 heads of 8 sharing 1 KV head,
hidden 48 with 4 heads of 12 sharing 2, hidden 44 with 2 heads of 22; FFN 76 or 92; vocab 97)
so that nothing lines up with the 4x4 array by accident. (Every projection's output count must
still be a multiple of 4 for the HF packing, and the head dimension even for RoPE.)

Scales are chosen so that the logits spread over several units: with degenerate (near-equal)
logits greedy decoding would be decided by rounding noise. Tied models tend to repeat a token
(the head reads the input embedding back); untied ones give varied sequences.
"""

from __future__ import annotations

import numpy as np
import pytest

from host.checkpoint import PROJECTIONS, save_checkpoint

SMALL = dict(hidden=48, heads=4, kv_heads=2, head_dim=None, intermediate=92, vocab=97, layers=2)
GQA5 = dict(hidden=40, heads=5, kv_heads=1, intermediate=76)
MHA = dict(hidden=44, heads=2, kv_heads=2, intermediate=92)


def make_config(*, hidden, heads, kv_heads, head_dim, intermediate, vocab, layers, tied,
                linear_class, max_pos=128, eos=None, weight_bits=None) -> dict:
    qc = {"quant_method": "bitnet", "linear_class": linear_class, "quantization_mode": "offline"}
    if weight_bits is not None:
        qc["weight_bits"] = weight_bits
    cfg = {
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_act": "relu2",
        "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
        "max_position_embeddings": max_pos, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": tied, "bos_token_id": 1, "eos_token_id": eos,
        "quantization_config": qc,
    }
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    return cfg


def projection_shapes(cfg: dict) -> dict[str, tuple[int, int]]:
    H, I = cfg["hidden_size"], cfg["intermediate_size"]
    d = cfg.get("head_dim", H // cfg["num_attention_heads"])
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    return {"q_proj": (q, H), "k_proj": (kv, H), "v_proj": (kv, H), "o_proj": (H, q),
            "gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}


def random_tensors(cfg: dict, seed: int) -> dict[str, np.ndarray]:
    """HF-named tensors: trits + scales for projections, float32 for everything else."""
    rng = np.random.default_rng(seed)
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    d = cfg.get("head_dim", H // cfg["num_attention_heads"])
    bitlinear = cfg["quantization_config"]["linear_class"] == "bitlinear"

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    t = {"model.embed_tokens.weight": (0.4 * rng.standard_normal((V, H))).astype(np.float32)}
    for i in range(cfg["num_hidden_layers"]):
        for proj, (N, K) in projection_shapes(cfg).items():
            name = f"model.layers.{i}.{PROJECTIONS[proj]}.{proj}"
            t[name + ".weight"] = rng.choice(np.array([-1, 0, 1], dtype=np.int8), (N, K),
                                             p=[0.3, 0.4, 0.3])
            scale = rng.uniform(0.02, 0.1)
            # bitlinear divides by its scale: store the reciprocal so outputs stay comparable.
            t[name + ".weight_scale"] = np.float32(1.0 / scale if bitlinear else scale)
        t[f"model.layers.{i}.input_layernorm.weight"] = norm(H)
        t[f"model.layers.{i}.post_attention_layernorm.weight"] = norm(H)
        t[f"model.layers.{i}.self_attn.attn_sub_norm.weight"] = norm(cfg["num_attention_heads"]
                                                                     * d)
        t[f"model.layers.{i}.mlp.ffn_sub_norm.weight"] = norm(cfg["intermediate_size"])
    t["model.norm.weight"] = norm(H)
    if not cfg["tie_word_embeddings"]:
        t["lm_head.weight"] = (0.4 * rng.standard_normal((V, H))).astype(np.float32)
    return t


SHAPES = {"small": SMALL, "gqa5": {**SMALL, **GQA5}, "mha": {**SMALL, **MHA}}


class ModelFactory:
    """Writes random packed checkpoints under one temporary folder.

    ``factory(name, shape=..., seed=..., tied=..., linear_class=..., max_pos=..., eos=...)``
    returns the folder; ``config`` and ``tensors`` give the pieces for tests that store them
    in another form.
    """

    def __init__(self, root):
        self.root = root

    def config(self, *, shape="small", tied=True, linear_class="autobitlinear", max_pos=128,
               eos=None, weight_bits=None) -> dict:
        return make_config(**SHAPES[shape], tied=tied, linear_class=linear_class,
                           max_pos=max_pos, eos=eos, weight_bits=weight_bits)

    def tensors(self, cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
        return random_tensors(cfg, seed)

    def __call__(self, name="model", *, seed=0, **kw):
        cfg = self.config(**kw)
        return save_checkpoint(self.root / name, cfg, random_tensors(cfg, seed))


@pytest.fixture
def make_model(tmp_path):
    return ModelFactory(tmp_path)
