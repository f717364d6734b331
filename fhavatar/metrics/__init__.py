"""Evaluation metrics of the paper (§4.1): PSNR, SSIM, LPIPS, CSIM, AKD, AED, APD; and full-head coverage metrics
(head IoU, matte PSNR, back texture: `fhavatar.metrics.full_head`).

Third-party networks are never downloaded: LPIPS trunks and ArcFace weights come from user files
(`load_lpips(backbone_path=...)`, `load_identity_network(path)`); AKD/AED/APD inputs are measured with the
project's own MediaPipe tracker (`MotionAnalyzer`), a labelled substitute for the paper's FAN/SMIRK/pose nets.

Example:
    ```py
    >>> import torch
    >>> from fhavatar.metrics import psnr, ssim
    >>> x = torch.full((1, 3, 16, 16), 0.5)
    >>> round(float(psnr(x, x + 0.1)), 2)
    20.0
    ```
"""

from .full_head import back_texture, face_hull, head_iou, head_rows, matte_psnr
from .identity import (
    ARCFACE_TEMPLATE_112,
    IdentityNetwork,
    IResNet,
    cosine_similarity,
    five_points_from_mediapipe,
    load_identity_network,
)
from .image import psnr, ssim
from .motion import FaceMotion, MotionAnalyzer, aed, akd, apd
from .perceptual import LPIPSMetric, load_lpips

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "FaceMotion",
    "IResNet",
    "IdentityNetwork",
    "LPIPSMetric",
    "MotionAnalyzer",
    "aed",
    "akd",
    "apd",
    "back_texture",
    "cosine_similarity",
    "face_hull",
    "five_points_from_mediapipe",
    "head_iou",
    "head_rows",
    "load_identity_network",
    "load_lpips",
    "matte_psnr",
    "psnr",
    "ssim",
]
