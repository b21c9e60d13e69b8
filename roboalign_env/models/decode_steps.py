"""The arithmetic of one decoding call, compiled with TorchScript (used by :mod:`.decoding`).

A decoded token runs some 30 small tensor operations per layer; on a CPU, Python's cost of issuing
them is as large as the operations themselves. TorchScript runs the same operations without the
interpreter: measured on this project's transformer at one row, 0.80 ms per decoded token instead
of 1.31 ms with int8 weights, 1.31 instead of 1.68 in float32. ``torch.compile`` was tried first:
about a minute of compilation per process and no faster at these sizes. TorchScript is deprecated
in favour of ``torch.compile``; :func:`scripted` silences that notice. The functions below are
plain PyTorch: called unscripted, they compute the same.

A weight is a float tensor or an fbgemm packed int8 matrix (see :mod:`.decoding`).
No ``from __future__ import annotations`` here: TorchScript reads the annotations.
"""

import functools
import warnings
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

Weight = Union[Tensor, torch.classes.quantized.LinearPackedParamsBase]
Layer = Tuple[Weight, Weight, Weight, Weight]  # q/k/v, output, gate/up, down


def linear(x: Tensor, weight: Weight) -> Tensor:
    if isinstance(weight, Tensor):
        return F.linear(x, weight)
    return torch.ops.quantized.linear_dynamic(x, weight, True)  # 7-bit activations: fbgemm's AVX2 kernels never saturate


def norm(x: Tensor, eps: float) -> Tensor:
    """RMSNorm without its gain (folded into the next product)."""
    return F.rms_norm(x, [x.shape[-1]], None, eps)


def attention_inputs(x: Tensor, qkv: Weight, rotary: Tensor, eps: float, heads: int) -> Tuple[Tensor, Tensor, Tensor]:
    """q, k (rotated) and v, each (b, heads, n, head_dim), of hidden states x (b, n, hidden)."""
    b, n = x.shape[0], x.shape[1]
    h = linear(norm(x, eps), qkv).view(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    qk = torch.view_as_complex(torch.stack([h[0], h[1]]).float().unflatten(-1, [-1, 2])) * rotary
    qk = torch.view_as_real(qk).flatten(-2).to(x.dtype)
    return qk[0], qk[1], h[2]


def finish_layer(x: Tensor, o: Tensor, out: Weight, gate_up: Weight, down: Weight, eps: float) -> Tensor:
    """The residual stream after attention output o (b, heads, n, head_dim) and the MLP."""
    b, n = x.shape[0], x.shape[1]
    x = x + linear(o.transpose(1, 2).reshape(b, n, -1), out)
    gate, up = linear(norm(x, eps), gate_up).chunk(2, -1)
    return x + linear(F.silu(gate) * up, down)


def logits(x: Tensor, head: Weight, eps: float, keep: int) -> Tensor:
    return linear(norm(x[:, x.shape[1] - keep:], eps), head).float()


def decode(x: Tensor, layers: List[Layer], head: Weight, rotary: Tensor, keys: Tensor, values: Tensor,
           start: int, end: int, rows: Optional[Tensor], positions: Optional[Tensor], mask: Optional[Tensor],
           eps: float, heads: int, keep: int) -> Tensor:
    """Feed x (b, n, hidden) into the cache (layers, B, heads, capacity, head_dim); return the logits
    (b, keep, K) of the last ``keep`` positions.

    ``rows is None``: every cache row, all at length ``start`` (a batch that steps together; plain
    slices). Otherwise ``rows`` (b,) are the cache rows fed and ``positions`` (b, n) each token's
    position in its row (rows of different lengths: an environment restarted some of them).
    """
    for i, (qkv, out, gate_up, down) in enumerate(layers):
        q, k, v = attention_inputs(x, qkv, rotary, eps, heads)
        if rows is None:
            keys[i, :, :, start:end] = k
            values[i, :, :, start:end] = v
            row_keys, row_values = keys[i, :, :, :end], values[i, :, :, :end]
        else:
            assert positions is not None
            row_ids = rows[:, None].expand(positions.shape)
            keys[i][row_ids, :, positions] = k.transpose(1, 2)
            values[i][row_ids, :, positions] = v.transpose(1, 2)
            row_keys, row_values = keys[i][rows, :, :end], values[i][rows, :, :end]
        o = F.scaled_dot_product_attention(q, row_keys, row_values, attn_mask=mask)
        x = finish_layer(x, o, out, gate_up, down, eps)
    return logits(x, head, eps, keep)


@functools.cache
def scripted():
    """:func:`decode`, compiled (once per process, on first use)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(decode)
