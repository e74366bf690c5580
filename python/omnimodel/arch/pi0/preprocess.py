"""Camera frames -> the [-1, 1] images SigLIP consumes, with LeRobot's empty-camera convention.

LeRobot feeds the model float images in [0, 1] (C, H, W). ``PI0Policy._preprocess_images`` (openpi
``preprocess_observation_pytorch``) then, per camera:

1. if the size differs from ``image_resolution``: ``resize_with_pad_torch`` -- bilinear resize
   (align_corners=False, no antialias) keeping the aspect ratio so the image fits, clamp to [0, 1], and
   pad with 0 centred (the odd pixel goes bottom / right);
2. ``x * 2 - 1``.

Cameras the batch lacks are appended *after* the present ones (in configuration order) as all -1 images
whose tokens are masked out of attention (``img_masks`` False). We take uint8 (H, W, 3) frames (``/255``
gives LeRobot's float input) and ``None`` for a missing camera.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def check_image(image: np.ndarray, index: int) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
        raise ValueError(f"image {index}: expected a uint8 numpy array of shape (H, W, 3), got {desc}")


def resize_with_pad(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) float in [0, 1] -> (3, size, size): fit, bilinear, clamp, centred zero padding."""
    _, h, w = image.shape
    if (h, w) == (size, size):
        return image
    ratio = max(w / size, h / size)
    rh, rw = int(h / ratio), int(w / ratio)
    resized = F.interpolate(image[None], size=(rh, rw), mode="bilinear", align_corners=False)[0].clamp(0.0, 1.0)
    top, left = (size - rh) // 2, (size - rw) // 2
    return F.pad(resized, (left, size - rw - left, top, size - rh - top), value=0.0)


@dataclass
class PreparedImages:
    pixels: torch.Tensor  # (N, 3, S, S) float32 in [-1, 1], in model order
    mask: torch.Tensor  # (N,) bool: False for missing cameras
    order: list[int]  # model slot -> index into the caller's list (-1 for a missing camera)


def prepare_images(images: Sequence[np.ndarray | None], num_cameras: int, size: int) -> PreparedImages:
    """Frames in configuration order (``None`` = camera missing) -> model inputs, LeRobot's ordering."""
    if isinstance(images, np.ndarray):
        images = [images]
    if len(images) != num_cameras:
        raise ValueError(f"this policy has {num_cameras} camera(s); pass one frame (or None) per camera, "
                         f"got {len(images)}")
    present = [i for i, img in enumerate(images) if img is not None]
    if not present:
        raise ValueError("at least one camera frame is needed")
    tensors, mask, order = [], [], []
    for i in present:
        check_image(images[i], i)
        x = torch.from_numpy(np.ascontiguousarray(images[i])).permute(2, 0, 1).to(torch.float32) / 255.0
        tensors.append(resize_with_pad(x, size) * 2.0 - 1.0)
        mask.append(True)
        order.append(i)
    for i in range(num_cameras):
        if images[i] is None:
            tensors.append(torch.full((3, size, size), -1.0))
            mask.append(False)
            order.append(-1)
    return PreparedImages(pixels=torch.stack(tensors), mask=torch.tensor(mask), order=order)


__all__ = ["PreparedImages", "check_image", "prepare_images", "resize_with_pad"]
