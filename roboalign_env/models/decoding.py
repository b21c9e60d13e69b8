"""Incremental (KV-cached) decoding of the dynamics transformer, laid out for speed.

A rollout samples each frame's 16 dynamics codes one at a time, so every decoded token reads all
of the transformer's weights once. At the batch sizes of an environment (1 to 64 rows) on a CPU
that reading, not arithmetic, is most of the time, followed by the count of small operations per
token. :class:`IncrementalDecoder` holds the transformer's weights rearranged for both:

- q/k/v fused into one matrix and gate/up into another: 4 matrix products per layer instead of 7,
  with each RMSNorm's gain folded into the product that follows it;
- the q and k rows of each head permuted so that LLaMA's rotary pairs (dimension i with
  i + head_dim/2) sit side by side, which makes the rotary embedding one complex multiplication.
  Attention scores are unchanged (q and k are permuted alike); the keys in the cache are stored
  permuted, so a :class:`KVCache` is only ever read back by a decoder;
- a ``precision``: ``float32`` (exact: tests compare it with the teacher-forced ``forward``),
  ``bfloat16`` (half the weight bytes, on CPU or GPU) or ``int8`` (CPU: per-output-channel int8
  weights of the attention and gate/up products, through torch's fbgemm dynamic-quantized linear, which
  also quantizes each call's activations; the prediction head stays float32, because it alone picks the
  greedy code among thousands of close logits, and quantizing it flipped enough codes of an 8x8 frame to
  move the dreamed frames away from float32's; so does each MLP's down projection, whose input (the gated
  product) carries a few large activations that one int8 scale per call rounds the rest of away; the
  agreement with float32 with and without it is in docs/environments.md).

Why fbgemm and not torchao (the maintained home of torch's quantization): at these shapes, one
token of a 256-wide model, torchao's int8 tensor subclasses cost 2-4x more per product than the
fbgemm kernel does (measured with torchao 0.18 on this project's transformer shapes).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from roboalign_env.models.decode_steps import scripted

PRECISIONS = ("float32", "bfloat16", "int8")


@dataclass
class KVCache:
    """Preallocated keys and values (layers, B, heads, capacity, head_dim) and each row's filled length."""

    keys: torch.Tensor
    values: torch.Tensor
    lengths: torch.Tensor  # (B,) long

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    @property
    def length(self) -> int:
        """The longest row's length."""
        return int(self.lengths.max())


def _int8_weight(weight: torch.Tensor):
    """W quantized per output row to int8 (symmetric) and packed for fbgemm."""
    w = weight.float()
    scales = (w.abs().amax(1) / 127).clamp_min(1e-12).double()
    with warnings.catch_warnings():  # torch marks its quantized tensors deprecated (see the module docstring)
        warnings.simplefilter("ignore")
        q = torch.quantize_per_channel(w, scales, torch.zeros(len(w), dtype=torch.long), 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(q, None)


def _rotary_pairs(heads: int, head_dim: int) -> torch.Tensor:
    """Row order that puts dimension i of each head next to dimension i + head_dim/2."""
    half = head_dim // 2
    one = torch.stack([torch.arange(half), torch.arange(half) + half], 1).flatten()
    return torch.cat([one + h * head_dim for h in range(heads)])


class IncrementalDecoder:
    """Feeds tokens after what a :class:`KVCache` holds and returns the prediction head's outputs for the
    next code (:meth:`DynamicsTransformer.code_logits` turns them into code logits)."""

    def __init__(self, transformer, precision: str = "float32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
        device = transformer.llama.lm_head.weight.device
        if precision == "int8" and device.type != "cpu":
            raise ValueError(f"int8 decoding runs on the CPU (fbgemm), not {device}; use bfloat16 on a GPU")
        cfg, model = transformer.config, transformer.llama.model
        self.heads, self.head_dim = cfg.num_heads, cfg.hidden_size // cfg.num_heads
        self.dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        self.eps, self.device = model.norm.variance_epsilon, device

        def linear(weight, norm=None, quantize=True):
            """A product's weight; an RMSNorm's gain just before it is folded into its input columns."""
            weight = weight.detach().float() * (1 if norm is None else norm.weight.detach().float())
            return _int8_weight(weight) if precision == "int8" and quantize else weight.to(self.dtype).contiguous()

        pairs = _rotary_pairs(self.heads, self.head_dim).to(device)
        self.layers = []
        for layer in model.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append((
                linear(torch.cat([a.q_proj.weight[pairs], a.k_proj.weight[pairs], a.v_proj.weight]), layer.input_layernorm),
                linear(a.o_proj.weight),
                linear(torch.cat([m.gate_proj.weight, m.up_proj.weight]), layer.post_attention_layernorm),
                linear(m.down_proj.weight, quantize=False),  # never int8: its input's outliers (below)
            ))
        self.head = linear(transformer.llama.lm_head.weight[: cfg.head_size], model.norm, quantize=False)  # never int8
        rope = model.rotary_emb
        angles = torch.arange(cfg.max_positions, device=device, dtype=torch.float32)[:, None] * rope.inv_freq.float()[None]
        self.rotary = torch.polar(torch.full_like(angles, float(rope.attention_scaling)), angles)  # (positions, head_dim/2)

    def new_cache(self, batch_size: int, capacity: int) -> KVCache:
        shape = (len(self.layers), batch_size, self.heads, capacity, self.head_dim)
        zeros = dict(dtype=self.dtype, device=self.device)
        return KVCache(torch.zeros(shape, **zeros), torch.zeros(shape, **zeros),
                       torch.zeros(batch_size, dtype=torch.long, device=self.device))

    def __call__(self, embeds: torch.Tensor, cache: KVCache, rows: torch.Tensor | None = None, keep: int | None = None,
                 causal: bool = True) -> torch.Tensor:
        """Feed ``embeds`` (b, n, hidden) after what ``cache`` holds for ``rows`` (default: every
        row); return the head's outputs in float32: (b, head_size) at the last position, or
        (b, keep, head_size) at the last ``keep`` positions. ``causal=False`` lets the fed positions see each other (a block of
        a ``parallel_frames`` transformer).

        Rows may hold different lengths (an environment resets one rollout while the others go
        on): each row then gets its own rotary positions and attention mask. The decoder's own
        precision holds inside an autocast region too.
        """
        # inference_mode skips autograd's bookkeeping (~15% of a single-token call on a CPU); the
        # clone outside it makes the logits an ordinary tensor that training code may use.
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
            logits = self._decode(embeds, cache, rows, 1 if keep is None else keep, causal)
        return (logits[:, 0] if keep is None else logits).clone()

    def _decode(self, embeds: torch.Tensor, cache: KVCache, rows: torch.Tensor | None, keep: int,
                causal: bool) -> torch.Tensor:
        b, n, _ = embeds.shape
        index = slice(None) if rows is None else rows
        starts = cache.lengths[index]
        positions = starts[:, None] + torch.arange(n, device=starts.device)
        end = int(positions.max()) + 1
        if end > cache.capacity:
            raise ValueError(f"KV cache holds {cache.capacity} positions; {end} needed")
        rotary = self.rotary[positions][:, None]  # (b, 1, n, head_dim/2)
        aligned = bool((starts == starts[0]).all())
        seen = positions if causal else positions[:, -1:].expand(b, n)  # the last position each token sees
        if aligned:  # no mask where every token sees the whole cache
            mask = None if n == 1 or not causal else torch.arange(end, device=embeds.device)[None, :] <= seen[0][:, None]
        else:
            mask = (torch.arange(end, device=embeds.device) <= seen[:, :, None])[:, None]
        if aligned and rows is None:  # a batch that steps together: plain slices of the cache
            token_rows = token_positions = None
        else:
            token_rows = torch.arange(len(cache.lengths), device=starts.device) if rows is None else rows
            token_positions = positions
        logits = scripted()(embeds.to(self.dtype), self.layers, self.head, rotary, cache.keys, cache.values,
                            int(starts[0]), end, token_rows, token_positions, mask, self.eps, self.heads, keep)
        cache.lengths[index] = starts + n
        return logits
