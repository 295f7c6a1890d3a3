"""The BitNet b1.58 architecture in PyTorch, for training; and its export.

The forward pass is the one ``host.model`` runs and ``shared/bitnet-format.md`` specifies:
pre-norm blocks, RoPE (rotate-half), grouped-query attention, ``attn_sub_norm`` before
``o_proj``, the gated FFN ``down(ffn_sub_norm(relu(gate(x))**2 * up(x)))``, a final norm and a
head tied to the embeddings. Every projection is a :class:`BitLinear`.

With ``ternary=True`` (quantization-aware training) a BitLinear quantizes its input per token to
int8 (absmax, ``s = 127 / max|x|``) and its weight to {-1, 0, +1} times ``mean|W|`` (absmean),
and lets the gradient through both roundings unchanged (straight-through estimator). With
``ternary=False`` it is a plain linear layer: the float twin that the report compares against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from host.checkpoint import NORMS, PROJECTIONS, BitNetConfig


@dataclass(frozen=True)
class Dims:
    vocab: int
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 192
    context: int = 128
    rope_theta: float = 10000.0
    eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def ternary_weights(self) -> int:
        """Weights in all projections (what the device holds), from the shapes the runtime
        reads the config with."""
        cfg = BitNetConfig.from_dict(self.hf_config(bos=None, eos=None))
        return self.layers * sum(N * K for N, K in map(cfg.projection_shape, PROJECTIONS))

    def hf_config(self, bos: int | None, eos: int | None) -> dict:
        return {
            "architectures": ["BitNetForCausalLM"], "model_type": "bitnet",
            "hidden_act": "relu2", "hidden_size": self.hidden,
            "intermediate_size": self.ffn, "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim, "vocab_size": self.vocab,
            "max_position_embeddings": self.context, "rms_norm_eps": self.eps,
            "rope_theta": self.rope_theta, "tie_word_embeddings": True,
            "bos_token_id": bos, "eos_token_id": eos, "attention_bias": False,
            "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                    "quantization_mode": "offline"},
        }


def quantize_activations(x: torch.Tensor) -> torch.Tensor:
    """Per-token absmax int8 fake quantization (the rounding of ``sim.numerics``)."""
    s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    return (x * s).round().clamp(-128, 127) / s


def ternarize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmean ternarization: trits in {-1, 0, +1} and the scale mean|W|."""
    scale = w.abs().mean().clamp(min=1e-5)
    return (w / scale).round().clamp(-1, 1), scale


class BitLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, ternary: bool):
        super().__init__()
        self.ternary = ternary
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.normal_(self.weight, std=0.02)
        # Set by freeze(): the exported trits and scale, to evaluate exactly what was saved.
        self.frozen: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.ternary:
            return F.linear(x, self.weight)
        x = x + (quantize_activations(x) - x).detach()
        if self.frozen is not None:
            trits, scale = self.frozen
            return F.linear(x, trits) * scale
        trits, scale = ternarize(self.weight)
        w = self.weight + (trits * scale - self.weight).detach()
        return F.linear(x, w)

    def freeze(self, trits: torch.Tensor, scale: float) -> None:
        self.frozen = (trits.to(torch.float32), torch.tensor(scale, dtype=torch.float32))


class RMSNorm(nn.Module):
    def __init__(self, n: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Block(nn.Module):
    def __init__(self, d: Dims, ternary: bool):
        super().__init__()
        self.d = d
        H, hd = d.hidden, d.head_dim
        self.input_layernorm = RMSNorm(H, d.eps)
        self.post_attention_layernorm = RMSNorm(H, d.eps)
        self.attn_sub_norm = RMSNorm(d.heads * hd, d.eps)
        self.ffn_sub_norm = RMSNorm(d.ffn, d.eps)
        self.q_proj = BitLinear(H, d.heads * hd, ternary)
        self.k_proj = BitLinear(H, d.kv_heads * hd, ternary)
        self.v_proj = BitLinear(H, d.kv_heads * hd, ternary)
        self.o_proj = BitLinear(d.heads * hd, H, ternary)
        self.gate_proj = BitLinear(H, d.ffn, ternary)
        self.up_proj = BitLinear(H, d.ffn, ternary)
        self.down_proj = BitLinear(d.ffn, H, ternary)

    def forward(self, h, cos, sin):
        d = self.d
        B, T, _ = h.shape
        x = self.input_layernorm(h)
        q = self.q_proj(x).view(B, T, d.heads, d.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, d.kv_heads, d.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, d.kv_heads, d.head_dim).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        a = a.transpose(1, 2).reshape(B, T, d.heads * d.head_dim)
        h = h + self.o_proj(self.attn_sub_norm(a))
        x = self.post_attention_layernorm(h)
        return h + self.down_proj(self.ffn_sub_norm(F.relu(self.gate_proj(x)).pow(2)
                                                    * self.up_proj(x)))


class TinyBitNet(nn.Module):
    def __init__(self, d: Dims, ternary: bool = True):
        super().__init__()
        self.d = d
        self.embed_tokens = nn.Embedding(d.vocab, d.hidden)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        self.layers = nn.ModuleList(Block(d, ternary) for _ in range(d.layers))
        self.norm = RMSNorm(d.hidden, d.eps)
        inv_freq = 1.0 / d.rope_theta ** (torch.arange(0, d.head_dim, 2,
                                                        dtype=torch.float32) / d.head_dim)
        angles = torch.outer(torch.arange(d.context, dtype=torch.float32), inv_freq)
        emb = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        if T > self.d.context:
            raise ValueError(f"{T} tokens is more than the context of {self.d.context}")
        h = self.embed_tokens(ids)
        cos, sin = self.cos[:T], self.sin[:T]
        for block in self.layers:
            h = block(h, cos, sin)
        return F.linear(self.norm(h), self.embed_tokens.weight)

    def bitlinears(self):
        for i, block in enumerate(self.layers):
            for proj, where in PROJECTIONS.items():
                yield f"model.layers.{i}.{where}.{proj}", getattr(block, proj)

    def export_tensors(self) -> dict:
        """HF-named tensors for :func:`host.checkpoint.save_checkpoint` (trits + scales)."""
        t = {"model.embed_tokens.weight": self.embed_tokens.weight,
             "model.norm.weight": self.norm.weight}
        for i, block in enumerate(self.layers):
            for norm, prefix in NORMS.items():
                t[f"model.layers.{i}.{prefix}{norm}.weight"] = getattr(block, norm).weight
        out = {k: v.detach().to(torch.float32).numpy().copy() for k, v in t.items()}
        for name, lin in self.bitlinears():
            trits, scale = ternarize(lin.weight.detach())
            out[name + ".weight"] = trits.to(torch.int8).numpy()
            out[name + ".weight_scale"] = float(scale)
        return out

    def load_checkpoint(self, ckpt) -> None:
        """Take every value from a loaded :class:`host.checkpoint.Checkpoint` (as saved, e.g.
        rounded to bf16), freezing the projections to its trits and scales."""
        with torch.no_grad():
            self.embed_tokens.weight.copy_(torch.from_numpy(ckpt.embed_tokens))
            self.norm.weight.copy_(torch.from_numpy(ckpt.norm))
            for block, layer in zip(self.layers, ckpt.layers):
                for norm in NORMS:
                    getattr(block, norm).weight.copy_(torch.from_numpy(getattr(layer, norm)))
                for proj, lin in layer.projections():
                    getattr(block, proj).freeze(torch.from_numpy(lin.trits.astype("float32")),
                                                lin.scale)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def lr_at(step: int, steps: int, peak: float, warmup: float = 0.03, floor: float = 0.1) -> float:
    """Linear warmup, then cosine decay to ``floor * peak``."""
    w = max(1, round(steps * warmup))
    if step < w:
        return peak * (step + 1) / w
    t = (step - w) / max(1, steps - w)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))
