"""Image metrics: known values, float32 under autocast, and the perceptual metric's ordering."""

import torch

from roboalign_env.eval.metrics import frame_metrics, perceptual, perceptual_name, psnr, ssim


def test_psnr_and_ssim_known_values():
    a = torch.full((2, 3, 64, 64), 0.5)
    assert torch.allclose(psnr(a + 0.1, a), torch.tensor([20.0, 20.0]), atol=1e-3)  # MSE 0.01
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(x, x), torch.ones(2))


def test_metrics_stay_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 3, 64, 64, generator=g)
    b = (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    plain = ssim(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.allclose(ssim(a, b), plain, atol=1e-6)


def test_perceptual_distance_grows_with_the_damage():
    g = torch.Generator().manual_seed(2)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    image = torch.stack([ys, xs, ys * xs])[None]
    mild = (image + 0.03 * torch.randn(image.shape, generator=g)).clamp(0, 1)
    strong = (image + 0.3 * torch.randn(image.shape, generator=g)).clamp(0, 1)
    d = perceptual(torch.cat([image, mild, strong]), image.expand(3, -1, -1, -1))
    assert d[0] < 1e-3 < d[1] < d[2]
    assert "LPIPS" in perceptual_name()
    assert set(frame_metrics(mild, image)) == {"psnr", "ssim", "lpips"}
