"""Full-head metrics: does the avatar show the whole head the photo shows, and is its back textured?

The head region of an aligned crop is every row above the chin plus 10 % of the crop height (head, hair and neck; not
the torso). On it:

- `head_iou`: IoU of the avatar's source-view silhouette (alpha > 0.5) and the photo's matte (> 0.5).
- `matte_psnr`: PSNR of the source-view render against the photo inside the matte, where pixels the avatar does not
  cover show the photo's complementary colour (1 - photo), so a gap always costs.
- `back_texture`: how textured the back view is, as the spread of the Laplacian of its luminance about 0 inside
  its eroded silhouette, over the same statistic of the photo inside the matte outside the face (the photo's hair
  and neck). A flat-coloured back scores about 0; one as detailed as the photo's hair about 1. The spread is the
  mean absolute value, not the standard deviation: a flat back still has a few sharp edges (the hair-neck border,
  seams), which dominate a standard deviation (a flat back of the shared photos scores 0.22-0.36 with it, 0.03-0.07
  with the mean absolute value), while texture is many small values everywhere.

`benchmarks/realface_eval.py` and the tests use these definitions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import ConvexHull, Delaunay
from torch import Tensor

from ..head.canonical_face import CHIN
from ..tracking.shell import HEAD_ROWS_BELOW_CHIN
from .image import psnr

__all__ = ["CHIN_LANDMARK", "HEAD_ROWS_BELOW_CHIN", "back_texture", "face_hull", "head_iou", "head_rows", "laplacian_spread",
           "luminance", "matte_psnr"]

#: MediaPipe Face Mesh's chin landmark.
CHIN_LANDMARK = CHIN
#: Pixels eroded from a silhouette before its texture is measured (its outline is an edge, not texture).
TEXTURE_EROSION = 3


def head_rows(chin_y: float, size: int) -> Tensor:  # -> [size, size] bool
    """Rows of a `size`² crop above `chin_y` (pixels, same crop) plus `HEAD_ROWS_BELOW_CHIN` of the crop height."""
    rows = torch.arange(size, dtype=torch.float32) + 0.5
    keep = rows < chin_y + HEAD_ROWS_BELOW_CHIN * size
    return keep[:, None].expand(size, size)


def _check_map(name: str, value: Tensor, size: tuple[int, int]) -> Tensor:  # -> [H, W]
    if not isinstance(value, Tensor) or value.shape[-2:] != size or value.numel() != size[0] * size[1]:
        shape = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"`{name}` must be a [H, W] map of shape {list(size)} (or [1, 1, H, W]), got {shape}.")
    return value.reshape(size).float()


def head_iou(
    alpha: Tensor,  # [H, W] avatar alpha in [0, 1]
    matte: Tensor,  # [H, W] photo matte in [0, 1]
    rows: Tensor,  # [H, W] bool, the head region (`head_rows`)
) -> float:
    """IoU of `alpha > 0.5` and `matte > 0.5` inside `rows`; 1.0 when both are empty there."""
    size = tuple(rows.shape)
    a = _check_map("alpha", alpha, size) > 0.5
    m = _check_map("matte", matte, size) > 0.5
    rows = rows.bool()
    union = ((a | m) & rows).sum()
    return 1.0 if union == 0 else float(((a & m) & rows).sum() / union)


def matte_psnr(
    image: Tensor,  # [3, H, W] the avatar's source-view render over a black background (premultiplied colour)
    alpha: Tensor,  # [H, W] its alpha
    photo: Tensor,  # [3, H, W] the aligned photo in [0, 1]
    matte: Tensor,  # [H, W] the photo's matte in [0, 1]
    rows: Tensor,  # [H, W] bool
) -> float:
    """PSNR (dB) of the render against the photo inside `matte > 0.5` and `rows`; uncovered pixels show `1 - photo`.

    `image` must be rendered over black (premultiplied), so that `image + (1 - alpha)(1 - photo)` is the render over
    the complementary photo.
    """
    size = tuple(rows.shape)
    alpha = _check_map("alpha", alpha, size)
    region = (_check_map("matte", matte, size) > 0.5) & rows.bool()
    if not bool(region.any()):
        raise ValueError("`matte` selects no pixel of the head rows: there is no foreground to compare.")
    shown = image + (1 - alpha)[None] * (1 - photo)
    return float(psnr(shown[None].clamp(0, 1), photo[None], mask=region[None, None].float())[0])


def luminance(image: Tensor) -> Tensor:  # [3, H, W] -> [H, W]
    """Rec. 601 luma of an RGB image in [0, 1]."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device)
    return (image * weights[:, None, None]).sum(0)


def laplacian_spread(gray: Tensor, region: Tensor) -> float:  # [H, W], [H, W] bool
    """Mean absolute 4-neighbour Laplacian of `gray` over `region` (0 for an empty region)."""
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=gray.dtype)
    # Edge pixels repeat outward: the image border is not an edge of the picture.
    lap = F.conv2d(F.pad(gray[None, None], (1, 1, 1, 1), mode="replicate"), kernel[None, None])[0, 0]
    values = lap[region.bool()]
    return float(values.abs().mean()) if values.numel() else 0.0


def _erode(mask: Tensor, pixels: int) -> Tensor:  # [H, W] bool
    return -F.max_pool2d(-mask.float()[None, None], 2 * pixels + 1, 1, pixels)[0, 0] > 0.5


def back_texture(
    back_image: Tensor,  # [3, H, W] the avatar seen from behind
    back_alpha: Tensor,  # [H, W]
    photo: Tensor,  # [3, H, W] the aligned photo
    matte: Tensor,  # [H, W] its matte
    face: Tensor,  # [H, W] bool, the tracked face region of the photo (its landmarks' hull)
    rows: Tensor,  # [H, W] bool, the photo's head rows
) -> float:
    """Laplacian spread of the back view inside its eroded silhouette, over that of the photo's matte minus the face.

    Both at the same resolution. Returns 0 when the back view covers no pixel; raises when the photo shows no
    textured non-face foreground to compare with.
    """
    size = tuple(face.shape)
    back_region = _erode(_check_map("back_alpha", back_alpha, tuple(back_alpha.shape[-2:])) > 0.5, TEXTURE_EROSION)
    photo_region = _erode(_check_map("matte", matte, size) > 0.5, TEXTURE_EROSION) & ~face.bool() & rows.bool()
    reference = laplacian_spread(luminance(photo), photo_region)
    if reference <= 0:
        raise ValueError("the photo's matte outside the face holds no texture to compare the back view with.")
    return laplacian_spread(luminance(back_image), back_region) / reference


def face_hull(points: np.ndarray, size: int) -> Tensor:  # [N, 2] pixels -> [size, size] bool
    """Pixels of a `size`² image inside the convex hull of `points` (e.g. the 468 face landmarks)."""
    hull = Delaunay(points[ConvexHull(points).vertices])
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    inside = hull.find_simplex(np.stack([xs.ravel(), ys.ravel()], -1)).reshape(size, size) >= 0
    return torch.from_numpy(inside)
