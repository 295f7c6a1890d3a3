"""Run a BitNet b1.58 model with every ternary projection on a tritium device.

::

    r = run_model("models/tiny", prompt=[1, 17, 42], device="emu", max_new_tokens=32)
    r.tokens, r.text, r.logits, r.stats

The split follows what the device is for: the seven BitLinear projections of each layer (all
but a sliver of the arithmetic) run on the device as exact integer products; everything whose
numerics are float (RMSNorm, RoPE, attention, relu^2 gating, the final norm and the unquantized
``lm_head``) runs here in float32, as the BitNet reference implementation does, so the logits
match a float32 reference to rounding. Attention is the one exception: it is evaluated in
float64 and rounded to float32 once, which makes every token's result independent of the batch
it was computed in (see ``_Runner._attention``).

Weights are uploaded once, before the first token (resident while they fit, streamed by
:meth:`Device.linear` after that), so each token moves only activations and results over the
link.

The prompt runs as one batch (prefill, M = prompt length: the device sees large M), then one
token at a time against a KV cache (decode, M = 1).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from sim import numerics

from .checkpoint import Checkpoint, load_checkpoint
from .device import Device, WeightHandle, open_device

__all__ = ["run_model", "RunResult", "TokenizerUnavailable", "load_tokenizer"]

#: ``Device.stats`` counters whose sum is the device's cycle count (busy plus every stall)
CYCLE_COUNTERS = ("busy", "stall_input", "stall_drain", "drain_tail")


class TokenizerUnavailable(NotImplementedError):
    """A text prompt was given but cannot be tokenized here (pass token ids instead)."""


@dataclass
class RunResult:
    """What :func:`run_model` produced.

    ``logits`` (float32, ``(vocab,)``) are those the last token was chosen from (the prompt's
    last position when nothing was generated), so callers can check or score them.
    ``stop_reason`` is ``"eos"``, ``"max_new_tokens"``, ``"context"`` (the model's
    ``max_position_embeddings`` is full) or ``"callback"`` (``on_token`` returned False).

    ``stats`` is plain JSON: ``upload`` (the one-time weight upload: seconds, bytes, and how
    many of the stacked weights of the device calls, four per layer (``GROUPS``), are resident
    or streamed); ``layers`` (one dict per layer) and ``prefill``,
    ``decode``, ``total`` (summed), each with ``device_cycles`` (the device's own counters),
    ``model_cycles`` (the cycle model's prediction), link ``bytes_sent`` / ``bytes_received``,
    ``linear_calls``, ``host_seconds`` (wall time of the layer), ``linear_seconds`` (the part
    spent in :meth:`Device.linear`) and ``device_seconds`` (cycles / clock; None when the device
    reports no clock); ``tokens_per_second`` of wall time (prefill included) and
    ``decode_tokens_per_second``; ``device_stats`` (every ``Device.stats`` counter's change
    while generating: retries, timeouts, frames, ...); ``projected``: per board of
    :mod:`sim.boards`, decode tokens per second as ``tritium estimate`` works them out for
    this model (``host.estimate.project``: the device calls planned as this host sends them,
    priced on the board's array, clock and UART; ``bound`` says which of compute, weight
    memory or link dominates; ``basis`` whether the board's figures are targets or measured).
    """

    tokens: list[int]
    prompt_tokens: list[int]
    text: str | None
    stats: dict
    logits: np.ndarray
    stop_reason: str


def run_model(model, prompt, *, device="emu", max_new_tokens: int = 32,
              temperature: float = 0.0, top_k: int | None = None, seed: int | None = None,
              on_token: Callable[[int], object] | None = None,
              device_options: dict | None = None) -> RunResult:
    """Generate up to ``max_new_tokens`` tokens after ``prompt``.

    ``model`` is a checkpoint folder or a loaded :class:`Checkpoint`. ``prompt`` is a list of
    token ids, or text when the folder has ``tokenizer.json`` and the optional ``tokenizers``
    package is installed. ``device`` is a spec for :func:`open_device` (opened with
    ``device_options`` and closed here) or an open :class:`Device` (left open; the weights
    loaded here are freed at the end either way).

    ``temperature`` 0 is greedy (argmax, ties to the lowest id, ``top_k`` ignored); otherwise
    tokens are sampled from ``softmax(logits / temperature)`` restricted to the ``top_k`` largest
    logits, drawn from ``numpy.random.default_rng(seed)`` so a seed reproduces a run.
    ``on_token(id)`` is called with each new token as soon as it is chosen (for streaming); a
    return value of ``False`` stops generation.
    """
    ckpt = model if isinstance(model, Checkpoint) else load_checkpoint(model)
    cfg = ckpt.config
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) \
            or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool)
                              or top_k < 1):
        raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}")
    if on_token is not None and not callable(on_token):
        raise TypeError(f"on_token must be callable, got {on_token!r}")

    tokenizer = load_tokenizer(ckpt, needed=isinstance(prompt, str))
    if isinstance(prompt, str):
        ids = list(tokenizer.encode(prompt).ids)
    else:
        ids = prompt
    prompt_tokens = _check_prompt(ids, cfg.vocab_size, cfg.max_position_embeddings)

    if isinstance(device, str):
        dev = open_device(device, **(device_options or {}))
        owned = True
    elif isinstance(device, Device):
        if device_options:
            raise TypeError("device_options only apply when device is a spec string")
        dev, owned = device, False
    else:
        raise TypeError(f"device must be a spec string or a Device, got {device!r}")

    runner = None
    try:
        runner = _Runner(ckpt, dev, len(prompt_tokens) + max_new_tokens)
        rng = np.random.default_rng(seed)
        tokens: list[int] = []
        stop = "max_new_tokens"
        start = time.perf_counter()
        logits = runner.step(prompt_tokens, "prefill")
        prefill_seconds = time.perf_counter() - start
        while len(tokens) < max_new_tokens:
            tok = _choose(logits, temperature, top_k, rng)
            tokens.append(tok)
            if on_token is not None and on_token(tok) is False:
                stop = "callback"
                break
            if tok in cfg.eos_token_ids:
                stop = "eos"
                break
            if len(tokens) == max_new_tokens:
                break
            if runner.length >= cfg.max_position_embeddings:
                stop = "context"
                break
            logits = runner.step([tok], "decode")
        total_seconds = time.perf_counter() - start
        stats = runner.report(len(prompt_tokens), len(tokens), stop, prefill_seconds,
                              total_seconds)
    finally:
        if runner is not None:
            runner.free()
        if owned:
            dev.close()
    text = tokenizer.decode(tokens) if tokenizer is not None else None
    return RunResult(tokens=tokens, prompt_tokens=prompt_tokens, text=text, stats=stats,
                     logits=logits, stop_reason=stop)


def load_tokenizer(ckpt: Checkpoint, needed: bool = False):
    """The folder's ``tokenizer.json`` as a ``tokenizers.Tokenizer``; None when there is none
    (or the package is missing) and ``needed`` is false."""
    if ckpt.tokenizer_path is None:
        if needed:
            raise ValueError(f"{ckpt.path}: a text prompt needs the folder's tokenizer.json, "
                             f"which it does not have; pass a list of token ids")
        return None
    try:
        import tokenizers
    except ImportError:
        if needed:
            raise TokenizerUnavailable(
                "text prompts need the optional 'tokenizers' package (pip install tokenizers) "
                "to read tokenizer.json; pass a list of token ids instead") from None
        return None
    return tokenizers.Tokenizer.from_file(str(ckpt.tokenizer_path))


def _check_prompt(ids, vocab: int, context: int) -> list[int]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
        raise TypeError(f"prompt must be a list of token ids or a string, got "
                        f"{type(ids).__name__}")
    out = []
    for i, t in enumerate(ids):
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise TypeError(f"prompt token {i} is {t!r}, not an integer token id")
        if not 0 <= t < vocab:
            raise ValueError(f"prompt token {i} is {int(t)}, outside the vocabulary "
                             f"(0 .. {vocab - 1})")
        out.append(int(t))
    if not out:
        raise ValueError("the prompt is empty: the model needs at least one token to start")
    if len(out) > context:
        raise ValueError(f"the prompt has {len(out)} tokens, more than the model's context of "
                         f"{context} (max_position_embeddings)")
    return out


def _choose(logits: np.ndarray, temperature: float, top_k: int | None,
            rng: np.random.Generator) -> int:
    if not np.isfinite(logits).all():
        raise FloatingPointError("the model produced NaN or infinite logits")
    if temperature == 0:
        return int(np.argmax(logits))          # the first maximum: ties go to the lowest id
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, z.size - top_k)[z.size - top_k]
        z = np.where(z >= kth, z, -np.inf)     # ties with the k-th logit stay in
    p = np.exp(z - z.max())
    return int(rng.choice(z.size, p=p / p.sum()))


# ---------------------------------------------------------------------------------------------
# The forward pass
# ---------------------------------------------------------------------------------------------

def _rms_norm(x: np.ndarray, w: np.ndarray, eps: np.float32) -> np.ndarray:
    var = np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32)
    return w * (x * (np.float32(1.0) / np.sqrt(var + eps)))


def _rotate_half(x: np.ndarray) -> np.ndarray:
    h = x.shape[-1] // 2
    return np.concatenate((-x[..., h:], x[..., :h]), axis=-1)


#: Projections that read the same quantized input run as one device call: their weights are
#: stacked along N (fewer calls and frames per token, and fewer padded tiles on wide arrays);
#: each keeps its own scale when its outputs are turned back into floats.
QKV, O, GATE_UP, DOWN = ("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj"), \
    ("down_proj",)
GROUPS = (QKV, O, GATE_UP, DOWN)

_STAT_KEYS = ("device_cycles", "model_cycles", "bytes_sent", "bytes_received", "linear_calls",
              "host_seconds", "linear_seconds")


class _Runner:
    """The model on one device: uploaded weights, the KV cache and the statistics."""

    def __init__(self, ckpt: Checkpoint, dev: Device, max_tokens: int):
        cfg = ckpt.config
        self.ckpt, self.cfg, self.dev = ckpt, cfg, dev
        self.eps = np.float32(cfg.rms_norm_eps)
        # One handle per group of GROUPS in each layer: its projections' rows stacked.
        self.handles: list[dict[tuple[str, ...], WeightHandle]] = []
        self.length = 0                          # tokens in the KV cache
        L = min(max_tokens, cfg.max_position_embeddings)
        shape = (cfg.num_hidden_layers, cfg.num_key_value_heads, L, cfg.head_dim)
        self.k_cache = np.zeros(shape, dtype=np.float32)
        self.v_cache = np.zeros(shape, dtype=np.float32)
        d = cfg.head_dim
        inv_freq = np.float32(1.0) / (np.float32(cfg.rope_theta) ** (
            np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))
        freqs = np.arange(L, dtype=np.float32)[:, None] * inv_freq[None, :]
        emb = np.concatenate((freqs, freqs), axis=-1)
        self.cos, self.sin = np.cos(emb), np.sin(emb)
        self.scaling = d ** -0.5                # float64, like the attention (see below)
        self.phases = {p: [dict.fromkeys(_STAT_KEYS, 0) for _ in range(cfg.num_hidden_layers)]
                       for p in ("prefill", "decode")}
        self.head_seconds = {"prefill": 0.0, "decode": 0.0}
        self.before = dev.stats
        start = time.perf_counter()
        # All at once, so that a model which does not fit keeps room to stream the rest.
        stacked = [np.concatenate([getattr(layer, name).trits for name in group])
                   for layer in ckpt.layers for group in GROUPS]
        #: where a group's stacked outputs divide into its projections' (the same every layer)
        self.splits = {group: np.cumsum([cfg.projection_shape(name)[0] for name in group])[:-1]
                       for group in GROUPS}
        handles = iter(dev.load_many(stacked))
        for layer in ckpt.layers:
            self.handles.append({group: next(handles) for group in GROUPS})
        after = dev.stats
        self.upload = {
            "seconds": time.perf_counter() - start,
            "bytes_sent": after["bytes_sent"] - self.before["bytes_sent"],
            "bytes_received": after["bytes_received"] - self.before["bytes_received"],
            "resident": sum(h.resident for hs in self.handles for h in hs.values()),
            "streamed": sum(h.streamed for hs in self.handles for h in hs.values()),
            "resident_words": sum(h.n_words for hs in self.handles for h in hs.values()
                                  if h.resident),
        }
        self.before = after

    def free(self) -> None:
        for hs in self.handles:
            for h in hs.values():
                if not h.freed:
                    self.dev.free(h)
        self.handles = []

    def _linear(self, acc: dict, i: int, group: tuple[str, ...], q: np.ndarray,
                s: np.ndarray) -> list[np.ndarray]:
        """One device call for the projections of ``group`` in layer ``i`` (they read the
        same quantized input ``q`` with scales ``s``); each one's float32 outputs."""
        before = self.dev.stats
        t0 = time.perf_counter()
        y_int = self.dev.linear(self.handles[i][group], q)
        acc["linear_seconds"] += time.perf_counter() - t0
        after = self.dev.stats
        acc["device_cycles"] += sum(after[c] - before[c] for c in CYCLE_COUNTERS)
        acc["model_cycles"] += after["model_cycles"] - before["model_cycles"]
        acc["bytes_sent"] += after["bytes_sent"] - before["bytes_sent"]
        acc["bytes_received"] += after["bytes_received"] - before["bytes_received"]
        acc["linear_calls"] += 1
        lins = [getattr(self.ckpt.layers[i], name) for name in group]
        return [lin.dequantize(part, s)
                for lin, part in zip(lins, np.split(y_int, self.splits[group], axis=1))]

    def _attention(self, q: np.ndarray, K: np.ndarray, V: np.ndarray,
                   masked: np.ndarray) -> np.ndarray:
        """Causal grouped-query attention of queries ``q`` (T, nh, d) over the cache ``K``,
        ``V`` (nkv, L, d); returns float32 (T, nh*d).

        Computed in float64 and rounded to float32 once, at the end. In float32 the result
        would depend on how BLAS orders the sums, which changes with the number of queries:
        a position computed in the prefill batch and the same position computed alone would
        differ in the last bit, and the activation quantizer that follows turns a last-bit
        difference at a rounding boundary into a whole step of 1/127. Rounded from float64,
        the output is the same whatever the batch (prefill, decode, a reference that recomputes
        everything), and differs from float32 evaluation only by float32 rounding.
        """
        T, nh, d = q.shape
        nkv, L = K.shape[0], K.shape[1]
        g = nh // nkv
        # Query head h reads KV head h // g: group the query heads under their KV head.
        qg = q.transpose(1, 0, 2).reshape(nkv, g * T, d).astype(np.float64)
        scores = (qg @ K.transpose(0, 2, 1).astype(np.float64)) * self.scaling
        scores = scores.reshape(nkv, g, T, L)
        scores[..., masked] = -np.inf
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = (e / e.sum(axis=-1, keepdims=True)).reshape(nkv, g * T, L)
        o = probs @ V.astype(np.float64)                                    # (nkv, g*T, d)
        return o.reshape(nh, T, d).transpose(1, 0, 2).reshape(T, nh * d).astype(np.float32)

    def step(self, tokens: list[int], phase: str) -> np.ndarray:
        """Run ``tokens`` at the next positions; return the float32 logits of the last one."""
        cfg = self.cfg
        T, p0 = len(tokens), self.length
        nh, nkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        L = p0 + T
        cos, sin = self.cos[p0:L, None, :], self.sin[p0:L, None, :]
        causal = np.arange(L)[None, :] > (p0 + np.arange(T))[:, None]      # (T, L) masked
        x = self.ckpt.embed_tokens[np.asarray(tokens)]                      # (T, H) float32
        for i, layer in enumerate(self.ckpt.layers):
            acc = self.phases[phase][i]
            t0 = time.perf_counter()

            # Attention: q/k/v share one quantized input, so they are one device call.
            qa, sa = numerics.quantize_activations(_rms_norm(x, layer.input_layernorm, self.eps))
            q, k, v = self._linear(acc, i, QKV, qa, sa)
            q, k, v = q.reshape(T, nh, d), k.reshape(T, nkv, d), v.reshape(T, nkv, d)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            self.k_cache[i, :, p0:L] = k.transpose(1, 0, 2)
            self.v_cache[i, :, p0:L] = v.transpose(1, 0, 2)
            o = self._attention(q, self.k_cache[i, :, :L], self.v_cache[i, :, :L], causal)
            oa, so = numerics.quantize_activations(_rms_norm(o, layer.attn_sub_norm, self.eps))
            x = x + self._linear(acc, i, O, oa, so)[0]

            # Gated feed-forward with relu^2.
            fa, sf = numerics.quantize_activations(
                _rms_norm(x, layer.post_attention_layernorm, self.eps))
            gate, up = self._linear(acc, i, GATE_UP, fa, sf)
            f = np.square(np.maximum(gate, np.float32(0))) * up
            da, sd = numerics.quantize_activations(_rms_norm(f, layer.ffn_sub_norm, self.eps))
            x = x + self._linear(acc, i, DOWN, da, sd)[0]
            acc["host_seconds"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        last = _rms_norm(x[-1:], self.ckpt.norm, self.eps)
        logits = (last @ self.ckpt.lm_head.T)[0]
        self.head_seconds[phase] += time.perf_counter() - t0
        self.length = L
        return logits.astype(np.float32, copy=False)

    def _projected(self) -> dict:
        """Decode tokens per second on each board of :mod:`sim.boards`: ``tritium
        estimate``'s decode phase for this model on the board's array, clock and link."""
        from . import estimate          # it reads GROUPS from this module
        return estimate.project(estimate.workload_of(self.ckpt, "model", "run_model"))

    def report(self, n_prompt: int, n_new: int, stop: str, prefill_seconds: float,
               total_seconds: float) -> dict:
        """The run's statistics as a plain JSON-serializable dict."""
        info = self.dev.info
        clock = info.get("clock_hz") or 0

        def finish(d: dict) -> dict:
            d = dict(d)
            d["device_seconds"] = d["device_cycles"] / clock if clock else None
            return d

        def total(rows) -> dict:
            return finish({k: sum(r[k] for r in rows) for k in _STAT_KEYS})

        n = self.cfg.num_hidden_layers
        layers = [finish({"layer": i, **{k: self.phases["prefill"][i][k]
                                         + self.phases["decode"][i][k] for k in _STAT_KEYS}})
                  for i in range(n)]
        after = self.dev.stats
        decode_seconds = total_seconds - prefill_seconds
        return {
            "device": self.dev.name,
            "array": {"rows": info["rows"], "cols": info["cols"]},
            "clock_hz": clock or None,
            "prompt_tokens": n_prompt,
            "generated_tokens": n_new,
            "stop_reason": stop,
            "upload": self.upload,
            "prefill_seconds": prefill_seconds,
            "decode_seconds": decode_seconds,
            "host_seconds": total_seconds,
            "tokens_per_second": n_new / total_seconds if total_seconds > 0 else None,
            "decode_tokens_per_second": ((n_new - 1) / decode_seconds
                                         if n_new > 1 and decode_seconds > 0 else None),
            "layers": layers,
            "lm_head_seconds": sum(self.head_seconds.values()),
            "prefill": total(self.phases["prefill"]),
            "decode": total(self.phases["decode"]),
            "projected": self._projected(),
            "total": total(layers),
            # everything the device counted while generating (retries, timeouts, frames, ...)
            "device_stats": {k: after[k] - self.before[k] for k in after},
        }
