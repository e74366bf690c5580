"""Raw uint8 RGB camera images -> the 6-channel-per-image ``pixel_values`` OFT consumes.

Upstream (``PrismaticImageProcessor.apply_transform`` per tower): PIL bicubic resize to the model size
(antialiased; a no-op when the image already has that size), ``to_tensor`` (/255), then per-tower
``normalize``. Channels 0-2 carry the DINOv2-normalised copy, 3-5 the SigLIP-normalised copy, and the
images of one observation are stacked on channels: (1, 6*N, H, W), third-person camera first.

Exactness: when images arrive at the model resolution (upstream's eval scripts resize beforehand with
TF lanczos3 after a JPEG round-trip, which we do not reproduce) this is bit-exact. Otherwise we resize
with torch's antialiased bicubic and round to uint8, which only approximates PIL's filter; a runtime
that must match us bit-for-bit should be fed images at the model resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import VisionBackboneConfig


def check_image(image: np.ndarray, index: int) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
        raise ValueError(f"image {index}: expected a uint8 numpy array of shape (H, W, 3), got {desc}")


def resize_uint8(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8; identity when already that size."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()


def image_to_pixels(image: np.ndarray, cfg: VisionBackboneConfig) -> torch.Tensor:
    """One (H, W, 3) uint8 image -> (6, S, S) float32."""
    resized = resize_uint8(image, cfg.image_size)
    x = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float() / 255.0
    towers = []
    for norm in cfg.normalization:
        mean = torch.tensor(norm.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(norm.std, dtype=torch.float32)[:, None, None]
        towers.append((x - mean) / std)
    return torch.cat(towers, dim=0)


def images_to_pixel_values(images: Sequence[np.ndarray], cfg: VisionBackboneConfig, num_images: int) -> torch.Tensor:
    """N images of one observation -> (1, 6*N, S, S)."""
    if isinstance(images, np.ndarray):
        images = [images]
    if len(images) != num_images:
        raise ValueError(
            f"this policy takes {num_images} image(s) per observation (third-person first, then wrist), "
            f"got {len(images)}"
        )
    for i, image in enumerate(images):
        check_image(image, i)
    return torch.cat([image_to_pixels(img, cfg) for img in images], dim=0)[None]


__all__ = ["check_image", "resize_uint8", "image_to_pixels", "images_to_pixel_values"]
