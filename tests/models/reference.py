"""An independent float32 NumPy reference of a BitNet b1.58 checkpoint, for the model tests.

Written from /work/shared/bitnet-format.md alone and deliberately naive: it reads the
safetensors bytes with its own few lines, unpacks the HF 2-bit layout itself, quantizes
activations itself, and runs the whole sequence again for every generated token (no KV
cache), one attention head at a time. It imports nothing from ``host`` or ``sim``: a bug in
the runtime's loader, packing, numerics or caching cannot hide behind the same bug here.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

_DTYPES = {"U8": "<u1", "I8": "<i1", "I64": "<i8", "F16": "<f2", "F32": "<f4", "BF16": "<u2"}


def read_safetensors(path) -> dict[str, np.ndarray]:
    """8-byte little-endian header length, JSON header, raw little-endian tensor bytes."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        a = np.frombuffer(data[base + b:base + end], dtype=_DTYPES[e["dtype"]])
        if e["dtype"] == "BF16":            # bf16 = the high 16 bits of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a.reshape(e["shape"]).astype(a.dtype.newbyteorder("="))
    return out


def unpack(packed: np.ndarray) -> np.ndarray:
    """uint8 (out/4, in) -> trits (out, in): byte [r, c] holds row i*out/4 + r in bits 2i..2i+1,
    code = trit + 1 (code 3 is invalid)."""
    n, k = packed.shape
    w = np.zeros((4 * n, k), dtype=np.int64)
    for i in range(4):
        code = (packed.astype(np.int64) >> (2 * i)) & 3
        assert (code != 3).all(), "invalid 2-bit code 3"
        w[i * n:(i + 1) * n] = code - 1
    return w


class Reference:
    """The model of a checkpoint folder (packed HF format), evaluated in float32."""

    def __init__(self, folder):
        folder = Path(folder)
        c = json.loads((folder / "config.json").read_text())
        self.c = c
        self.t = read_safetensors(folder / "model.safetensors")
        self.linear_class = c["quantization_config"]["linear_class"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads", self.heads)
        self.head_dim = c.get("head_dim", c["hidden_size"] // self.heads)
        self.eps = np.float32(c["rms_norm_eps"])
        self.theta = c["rope_theta"]
        self.weights = {}
        for name, a in self.t.items():
            if name.endswith("_proj.weight"):
                self.weights[name] = (unpack(a), np.float32(self.t[name + "_scale"][0]))

    def rms_norm(self, x, w):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            ms = np.float32(np.mean(x[i] * x[i]))
            out[i] = w * (x[i] * np.float32(1.0 / np.sqrt(ms + self.eps)))
        return out.astype(np.float32)

    def bitlinear(self, x, name):
        """Step 1 and 2 of bitnet-format.md, token by token, with exact integer products."""
        w, scale = self.weights[name]
        y = np.empty((x.shape[0], w.shape[0]), dtype=np.float32)
        for i, row in enumerate(x):
            s = np.float32(127.0) / max(np.float32(np.max(np.abs(row))), np.float32(1e-5))
            q = np.clip(np.round(row * s), -128, 127).astype(np.int64)   # round half to even
            acc = (w @ q).astype(np.float32)                             # exact integers
            if self.linear_class == "autobitlinear":
                y[i] = acc / s * scale
            else:
                y[i] = acc / (s * scale)
        return y

    def rope(self, x, positions):
        """x: (T, head_dim) of one head; rotate-half RoPE."""
        d = self.head_dim
        inv_freq = np.float32(1.0) / (np.float32(self.theta) ** (
            np.arange(0, d, 2).astype(np.float32) / np.float32(d)))
        ang = positions.astype(np.float32)[:, None] * inv_freq[None, :]
        cos = np.cos(np.concatenate([ang, ang], 1))
        sin = np.sin(np.concatenate([ang, ang], 1))
        rot = np.concatenate([-x[:, d // 2:], x[:, :d // 2]], 1)
        return x * cos + rot * sin

    def forward(self, tokens) -> np.ndarray:
        """Logits (float32) of every position of ``tokens``."""
        c, t = self.c, self.t
        T = len(tokens)
        d = self.head_dim
        pos = np.arange(T)
        x = t["model.embed_tokens.weight"][np.array(tokens)].astype(np.float32)
        for layer in range(c["num_hidden_layers"]):
            p = f"model.layers.{layer}."
            h = self.rms_norm(x, t[p + "input_layernorm.weight"])
            q = self.bitlinear(h, p + "self_attn.q_proj.weight")
            k = self.bitlinear(h, p + "self_attn.k_proj.weight")
            v = self.bitlinear(h, p + "self_attn.v_proj.weight")
            attn = np.zeros((T, self.heads * d), dtype=np.float32)
            group = self.heads // self.kv_heads
            for head in range(self.heads):
                kvh = head // group
                qh = self.rope(q[:, head * d:(head + 1) * d], pos)
                kh = self.rope(k[:, kvh * d:(kvh + 1) * d], pos)
                vh = v[:, kvh * d:(kvh + 1) * d]
                # float64, rounded to float32 once (as the runtime does): float32 sums would
                # depend on the sequence length through BLAS blocking, and recomputing the whole
                # sequence at every step would then flip activation rounding now and then.
                scores = (qh.astype(np.float64) @ kh.T.astype(np.float64)) * d ** -0.5
                scores[np.triu(np.ones((T, T), dtype=bool), 1)] = -np.inf
                e = np.exp(scores - scores.max(axis=1, keepdims=True))
                out = (e / e.sum(axis=1, keepdims=True)) @ vh.astype(np.float64)
                attn[:, head * d:(head + 1) * d] = out.astype(np.float32)
            attn = self.rms_norm(attn, t[p + "self_attn.attn_sub_norm.weight"])
            x = x + self.bitlinear(attn, p + "self_attn.o_proj.weight")
            h = self.rms_norm(x, t[p + "post_attention_layernorm.weight"])
            gate = self.bitlinear(h, p + "mlp.gate_proj.weight")
            up = self.bitlinear(h, p + "mlp.up_proj.weight")
            f = np.maximum(gate, np.float32(0)) ** 2 * up
            f = self.rms_norm(f, t[p + "mlp.ffn_sub_norm.weight"])
            x = x + self.bitlinear(f, p + "mlp.down_proj.weight")
        x = self.rms_norm(x, t["model.norm.weight"])
        head = t["model.embed_tokens.weight"] if c.get("tie_word_embeddings") \
            else t["lm_head.weight"]
        return (x @ head.T).astype(np.float32)

    def generate(self, prompt, max_new_tokens) -> tuple[list[int], np.ndarray]:
        """Greedy tokens (ties to the lowest id, stop at eos) and the last step's logits."""
        eos = self.c.get("eos_token_id")
        eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        seq, out, logits = list(prompt), [], None
        for _ in range(max_new_tokens):
            logits = self.forward(seq)[-1]
            tok = int(np.argmax(logits))
            out.append(tok)
            seq.append(tok)
            if tok in eos:
                break
        return out, logits
