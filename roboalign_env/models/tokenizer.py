"""Stage 1: a compressive video tokenizer with context tokens and dynamics tokens.

The idea follows iVideoGPT / RLVR-World: the first frame of a clip (the *context*) is encoded to a
full token grid (8x8 at 64x64), and every later frame to a small grid of *dynamics* tokens (4x4)
that only has to say what changed. Both the dynamics encoder and the dynamics decoder see the
context frame: the encoder takes the frame and the context stacked on channels, and the decoder is
a U-Net whose skip connections carry the context encoder's multi-scale features and whose output is
added to the context frame. Static background therefore never has to pass through the 16 dynamics
tokens: they only code what changed.

Quantization is FSQ (finite scalar quantization): each latent channel is squashed with ``tanh`` to
``(L-1)/2`` and rounded, with a straight-through gradient, so there is no codebook to collapse.
Context and dynamics tokens share one code space of ``prod(levels)`` codes.

Images are float in [0, 1], channel-first: frames ``(B, 3, H, W)``, clips ``(B, T, 3, H, W)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel


class TokenizerConfig(PretrainedConfig):
    """Sizes of the tokenizer. ``channels[i]`` is the width at resolution ``image_size / 2**(i+1)``:
    a stride-2 stem patchifies the image first (full-resolution convs cost too much on a CPU)."""

    model_type = "roboalign_tokenizer"

    def __init__(
        self,
        image_size: int = 64,
        channels: tuple[int, ...] = (32, 64, 128),
        dynamics_channels: int = 128,
        levels: tuple[int, ...] = (7, 5, 5, 5, 5),
        context_grid: int = 8,
        dynamics_grid: int = 4,
        **kwargs,
    ):
        self.image_size = image_size
        self.channels = list(channels)
        self.dynamics_channels = dynamics_channels
        self.levels = list(levels)
        self.context_grid = context_grid
        self.dynamics_grid = dynamics_grid
        super().__init__(**kwargs)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    @property
    def context_tokens(self) -> int:
        return self.context_grid**2

    @property
    def dynamics_tokens(self) -> int:
        return self.dynamics_grid**2

    def validate(self) -> None:
        if any(level % 2 == 0 or level < 3 for level in self.levels):
            raise ValueError(f"FSQ levels must be odd and >= 3, got {self.levels}")
        if self.image_size // 2 ** len(self.channels) != self.context_grid:
            raise ValueError(f"image_size {self.image_size} with {len(self.channels)} stages does not give "
                             f"a {self.context_grid}x{self.context_grid} context grid")
        if self.context_grid % self.dynamics_grid:
            raise ValueError(f"dynamics_grid {self.dynamics_grid} must divide context_grid {self.context_grid}")


class FSQ(nn.Module):
    """Finite scalar quantization with odd levels: codes are integers in ``[0, prod(levels))``.

    It has no weights; its constants are made on the fly so loading a checkpoint can't skip them.
    """

    def __init__(self, levels: list[int]):
        super().__init__()
        self.levels = list(levels)

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = torch.tensor(self.levels, device=device)
        basis = _digit_basis(levels)
        shape = (1, -1, 1, 1)
        return levels.view(shape), ((levels - 1) / 2).view(shape), basis.view(shape)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z`` (B, D, h, w) → (quantized in [-1, 1] with straight-through grads, codes (B, h, w))."""
        _, half, basis = self._constants(z.device)
        bounded = torch.tanh(z.float()) * half
        rounded = bounded + (bounded.round() - bounded).detach()
        codes = ((bounded.round() + half).long() * basis).sum(1)
        return rounded / half, codes

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, h, w) → quantized values (B, D, h, w) in [-1, 1]."""
        _, half, _ = self._constants(codes.device)
        return (code_digits(codes, self.levels).movedim(-1, 1).float() - half) / half


def code_digits(codes: torch.Tensor, levels: list[int]) -> torch.Tensor:
    """FSQ codes (...) → their digits (..., D): digit d is in ``[0, levels[d])``, the code's level on
    latent dimension d (``code = sum_d digit_d * prod(levels[:d])``)."""
    levels_t = torch.tensor(levels, device=codes.device)
    return (codes.unsqueeze(-1) // _digit_basis(levels_t)) % levels_t


def _digit_basis(levels: torch.Tensor) -> torch.Tensor:
    """The place value of each FSQ digit: ``prod(levels[:d])``."""
    return torch.cumprod(torch.cat([levels.new_ones(1), levels[:-1]]), 0)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(min(8, cin), cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
            nn.GroupNorm(min(8, cout), cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Encoder(nn.Module):
    """Conv encoder: a stride-2 stem, one ResBlock per resolution, stride-2 convs between;
    returns the features of every scale."""

    def __init__(self, in_channels: int, channels: list[int]):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, channels[0], 4, stride=2, padding=1)
        self.blocks = nn.ModuleList(ResBlock(c, c) for c in channels)
        self.downs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(channels, channels[1:]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            feats.append(x)
            if i < len(self.downs):
                x = self.downs[i](x)
        return feats


class PixelDecoder(nn.Module):
    """Conv decoder from the coarsest scale up; with ``skip_channels`` it is the U-Net half that
    concatenates the context encoder's features at every resolution."""

    def __init__(self, channels: list[int], skip_channels: list[int] | None = None):
        super().__init__()
        rev = channels[::-1]
        skips = (skip_channels or [0] * len(channels))[::-1]
        self.blocks = nn.ModuleList(ResBlock(c + s, c) for c, s in zip(rev, skips))
        self.ups = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(rev, rev[1:]))
        self.out = nn.Sequential(nn.GroupNorm(min(8, rev[-1]), rev[-1]), nn.SiLU(),
                                 nn.Conv2d(rev[-1], 3 * 4, 3, padding=1), nn.PixelShuffle(2))
        self.use_skips = skip_channels is not None

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor] | None = None) -> torch.Tensor:
        skips = skips[::-1] if skips is not None else None
        for i, block in enumerate(self.blocks):
            if self.use_skips:
                x = torch.cat([x, skips[i]], 1)
            x = block(x)
            if i < len(self.ups):
                x = self.ups[i](F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.out(x)


class VideoTokenizer(PreTrainedModel):
    """Context frames ↔ 8x8 tokens; later frames ↔ 4x4 dynamics tokens given their context frame."""

    config_class = TokenizerConfig
    main_input_name = "clips"

    def __init__(self, config: TokenizerConfig):
        super().__init__(config)
        config.validate()
        ch, dim = config.channels, len(config.levels)
        self.fsq = FSQ(config.levels)
        self.context_encoder = Encoder(3, ch)
        self.context_to_code = _to_code(ch[-1], dim)
        self.context_from_code = nn.Conv2d(dim, ch[-1], 3, padding=1)
        self.context_decoder = PixelDecoder(ch)
        # Dynamics: encode (frame, context) stacked, go down to the dynamics grid, code it.
        self.dynamics_encoder = Encoder(6, ch)
        extra = int(math.log2(config.context_grid // config.dynamics_grid))
        dc = config.dynamics_channels
        self.dynamics_down = nn.Sequential(
            *[nn.Sequential(nn.Conv2d(ch[-1] if i == 0 else dc, dc, 3, stride=2, padding=1), nn.SiLU()) for i in range(extra)],
            ResBlock(dc if extra else ch[-1], dc),
        )
        self.dynamics_to_code = _to_code(dc, dim)
        self.dynamics_from_code = nn.Sequential(nn.Conv2d(dim, dc, 3, padding=1), ResBlock(dc, dc))
        self.dynamics_up = nn.Upsample(scale_factor=config.context_grid // config.dynamics_grid, mode="nearest")
        self.dynamics_in = nn.Conv2d(dc, ch[-1], 3, padding=1)
        self.dynamics_decoder = PixelDecoder(ch, skip_channels=ch)
        self.post_init()
        # Start as "every frame equals its context": the change head is zero at init.
        nn.init.zeros_(self.dynamics_decoder.out[-2].weight)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
            nn.init.zeros_(module.bias)


    def check_frames(self, frames: torch.Tensor, name: str = "frames") -> None:
        """Frames must be float (..., 3, S, S) in [0, 1] with S = ``image_size``."""
        size = self.config.image_size
        if not torch.is_tensor(frames) or not frames.is_floating_point():
            got = frames.dtype if torch.is_tensor(frames) else type(frames).__name__
            raise TypeError(f"{name}: expected a float tensor in [0, 1], got {got} (divide uint8 images by 255)")
        if frames.shape[-3:] != (3, size, size):
            raise ValueError(f"{name}: expected shape (..., 3, {size}, {size}), got {tuple(frames.shape)}")
        if not torch.isfinite(frames).all():
            raise ValueError(f"{name}: contains NaN or inf")

    # --- context branch ---------------------------------------------------------------------
    def context_features(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale features of context frames (B, 3, H, W); the dynamics decoder's skips."""
        return self.context_encoder(frames * 2 - 1)

    def encode_context(self, frames: torch.Tensor) -> torch.Tensor:
        """Context frames (B, 3, H, W) → codes (B, 64)."""
        self.check_frames(frames)
        _, codes = self.fsq(self.context_to_code(self.context_features(frames)[-1]))
        return codes.flatten(1)

    # --- dynamics branch --------------------------------------------------------------------
    def _dynamics_latent(self, frames: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = torch.cat([frames, context], 1) * 2 - 1
        return self.dynamics_to_code(self.dynamics_down(self.dynamics_encoder(x)[-1]))

    def encode_dynamics(self, frames: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Frames (B, 3, H, W) with their context frames (B, 3, H, W) → codes (B, 16)."""
        self.check_frames(frames)
        self.check_frames(context, "context")
        _, codes = self.fsq(self._dynamics_latent(frames, context))
        return codes.flatten(1)

    def _decode_dynamics_q(self, q: torch.Tensor, context: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.dynamics_in(self.dynamics_up(self.dynamics_from_code(q)))
        return context + self.dynamics_decoder(x, skips)

    def decode_dynamics(self, codes: torch.Tensor, context: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Codes (B, 16), their context frames (B, 3, H, W) and the ``context_features`` of those
        frames → frames (B, 3, H, W). The decoder predicts the change from the context frame."""
        g = self.config.dynamics_grid
        return self._decode_dynamics_q(self.fsq.lookup(codes.view(-1, g, g)), context, skips)

    def encode_clip(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips (B, T, 3, H, W) → context codes of frame 0 (B, 64) and dynamics codes of frames
        1..T-1 given frame 0 (B, T-1, 16): the token layout the transformer trains on."""
        self.check_frames(clips, "clips")
        b, t = clips.shape[:2]
        context = clips[:, 0]
        future = clips[:, 1:].flatten(0, 1)
        dyn = self.encode_dynamics(future, context.repeat_interleave(t - 1, 0))
        return self.encode_context(context), dyn.view(b, t - 1, -1)

    def previous_codes(self, clips: torch.Tensor, dynamics: torch.Tensor) -> torch.Tensor:
        """The dynamics codes (B, T-1, n) each frame of clips (B, T, 3, H, W) would keep if nothing moved:
        the previous frame's ``dynamics`` (B, T-1, n), and for frame 1, frame 0 encoded against itself."""
        still = self.encode_dynamics(clips[:, 0], clips[:, 0])
        return torch.cat([still[:, None], dynamics[:, :-1]], 1)

    def changed_codes(self, clips: torch.Tensor, dynamics: torch.Tensor) -> torch.Tensor:
        """Bool (B, T-1, n): which dynamics codes ``dynamics`` (B, T-1, n) of clips (B, T, 3, H, W) differ
        from :meth:`previous_codes`."""
        return dynamics != self.previous_codes(clips, dynamics)

    def still_cells(self, clips: torch.Tensor, threshold: float) -> torch.Tensor:
        """Bool (B, T-1, n): the dynamics-grid cells of frames 1.. of clips (B, T, 3, H, W) in which no
        pixel changed by more than ``threshold`` (in [0, 1], any channel) since the previous frame."""
        cell = self.config.image_size // self.config.dynamics_grid
        change = (clips[:, 1:] - clips[:, :-1]).abs().amax(2)  # (B, T-1, H, W)
        moved = change.unfold(2, cell, cell).unfold(3, cell, cell).amax((-1, -2))
        return (moved <= threshold).flatten(2)

    def hold_still_codes(self, clips: torch.Tensor, dynamics: torch.Tensor, threshold: float) -> torch.Tensor:
        """Dynamics codes (B, T-1, n) of clips (B, T, 3, H, W) in which every :meth:`still_cells` cell keeps
        the code it had in the previous frame (before frame 1: frame 0 encoded against itself), so codes
        change only where pixels moved; FSQ rounding flicker elsewhere is removed."""
        still = self.still_cells(clips, threshold)
        code = self.encode_dynamics(clips[:, 0], clips[:, 0])
        held = []
        for t in range(dynamics.shape[1]):
            code = torch.where(still[:, t], code, dynamics[:, t])
            held.append(code)
        return torch.stack(held, 1)

    # --- training ---------------------------------------------------------------------------
    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruct clips (B, T, 3, H, W): frame 0 through the context branch, frames 1.. through
        the dynamics branch conditioned on frame 0. Returns reconstructions and the loss."""
        self.check_frames(clips, "clips")
        b, t = clips.shape[:2]
        context = clips[:, 0]
        skips = self.context_features(context)
        q_ctx, _ = self.fsq(self.context_to_code(skips[-1]))
        recon_ctx = self.context_decoder(self.context_from_code(q_ctx)).add(1).div(2)
        future = clips[:, 1:].flatten(0, 1)
        rep = lambda x: x.repeat_interleave(t - 1, 0)  # noqa: E731
        q_dyn, _ = self.fsq(self._dynamics_latent(future, rep(context)))
        recon_dyn = self._decode_dynamics_q(q_dyn, rep(context), [rep(s) for s in skips])
        recon = torch.cat([recon_ctx.unsqueeze(1), recon_dyn.view(b, t - 1, *recon_dyn.shape[1:])], 1)
        loss_ctx = _recon_loss(recon_ctx, context)
        loss_dyn = _recon_loss(recon_dyn, future)
        return {"recon": recon, "loss": (loss_ctx + (t - 1) * loss_dyn) / t,
                "loss_context": loss_ctx, "loss_dynamics": loss_dyn}


def _to_code(channels: int, dim: int) -> nn.Module:
    """Normalize, then project to the FSQ dimensions (un-normalized features saturate tanh and
    collapse every position onto one code)."""
    return nn.Sequential(nn.GroupNorm(min(8, channels), channels), nn.SiLU(), nn.Conv2d(channels, dim, 1))


def _recon_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = pred.float()
    return F.mse_loss(pred, target) + F.l1_loss(pred, target)


def _register() -> None:
    from transformers import AutoConfig, AutoModel

    AutoConfig.register(TokenizerConfig.model_type, TokenizerConfig, exist_ok=True)
    AutoModel.register(TokenizerConfig, VideoTokenizer, exist_ok=True)


_register()
