"""Pictures and videos a person looks at: contact sheets (PNG) and side-by-side mp4s."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from roboalign_env.extras import require


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling, so 64x64 frames stay crisp when viewed."""
    return image.repeat(factor, axis=-3).repeat(factor, axis=-2)


def grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tile equally sized HxWx3 uint8 images into one image (rows may differ in length)."""
    h, w, _ = rows[0][0].shape
    width = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) + pad, width * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y : y + h, x : x + w] = image
    return out


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 10) -> Path:
    """Write (T, H, W, 3) uint8 frames as an H.264 mp4 with imageio's bundled ffmpeg."""
    imageio = require("imageio", "eval", "writing mp4 videos")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    pad = ((0, 0), (0, -h % 16), (0, -w % 16), (0, 0))  # H.264 wants multiples of 16: pad with white
    frames = np.pad(frames, pad, constant_values=255) if any(p[1] for p in pad) else frames
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=16) as writer:
        for frame in frames:
            writer.append_data(np.ascontiguousarray(frame))
    return path


def read_video(path: str | Path, npz_key: str = "video", min_frames: int = 2) -> np.ndarray:
    """A (T, H, W, 3) uint8 video from an .mp4 (imageio) or an .npz array named ``npz_key``.

    A missing, empty, truncated or undecodable file, an array of the wrong layout and a video of
    fewer than ``min_frames`` frames raise an error that names the file.
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video file not found")
    if path.suffix == ".npz":
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: not an .npz archive (a zip of .npy arrays); empty, truncated or another format")
        try:
            with np.load(path, allow_pickle=False) as data:
                if npz_key not in data.files:
                    raise ValueError(f"{path}: no array {npz_key!r} (has {sorted(data.files)}); pass --npz-key")
                video = np.asarray(data[npz_key])
        except (zipfile.BadZipFile, EOFError, OSError) as err:
            raise ValueError(f"{path}: corrupt or truncated .npz ({type(err).__name__}: {err})") from None
    elif path.suffix == ".mp4":
        iio = require("imageio.v3", "eval", "reading mp4 videos")
        try:
            video = np.asarray(iio.imread(path, index=None))
        except Exception as err:  # ffmpeg's many ways of saying the file is empty, cut short or not a video
            raise ValueError(f"{path}: cannot decode this mp4 (empty, truncated or not a video: "
                             f"{type(err).__name__})") from None
    else:
        raise ValueError(f"{path}: expected an .mp4 or .npz video")
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"{path}: expected uint8 frames of shape (T, H, W, 3), got {video.dtype} {video.shape}")
    if len(video) < min_frames:
        raise ValueError(f"{path}: {len(video)} frame(s); a video needs at least {min_frames} to be scored")
    return video


def pyplot():
    """``matplotlib.pyplot`` with the file-only Agg backend (plots are written, never shown)."""
    matplotlib = require("matplotlib", "eval", "plotting")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, png: str | Path, dpi: int = 90) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    import io

    plt = pyplot()
    from roboalign_env.data.io import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write(png, lambda f: f.write(buf.getvalue()))
