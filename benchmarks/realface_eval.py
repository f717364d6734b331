"""Built-in default on the real photos: source-view fidelity, closed-surface check and orbit contact sheets.

For every photo in ../shared/data/realfaces: track it (OpenHead), build the avatar with the training-free
ProjectionAvatarModel, render it from the source camera and from 36 orbit angles, and print
- PSNR of the source-view render against the aligned photo inside the tracked face mask (target >= 25 dB),
- the smallest alpha inside the head silhouette over the 36 orbit views (target >= 0.99),
- the frontal view's left-right agreement: PSNR between the front render (azimuth 0) and its mirror image inside
  both silhouettes. Not a target: a proxy, to compare versions on one photo, for what the source-view PSNR cannot
  see, a squashed or smeared half of a turned face. Real faces and their lighting are not symmetric (frontal photos
  score 12-16 dB) and a half rebuilt by mirroring scores high by construction,
and write out/realface_orbits/<photo>.png (the aligned photo next to 8 orbit views). The photos' licences
(../shared/data/realfaces/MANIFEST.md) allow internal testing only, so these sheets stay out of the repository;
docs/realface_orbits/ keeps the one made from the public-domain photo p01.

    PYTHONPATH=. .venv/bin/python benchmarks/realface_eval.py [--resolution 256] [--size 256]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fhavatar.avatar import Avatar
from fhavatar.head import OpenHead, UVLayout
from fhavatar.metrics import psnr as image_psnr
from fhavatar.models import ProjectionAvatarModel, make_source_view
from fhavatar.rendering import Camera, render_gaussians
from fhavatar.tracking import track_image

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "realfaces"


def face_mask(head: OpenHead, track, size: int) -> np.ndarray:  # -> [size, size] bool
    """Pixels inside the convex hull of the fitted face landmarks (the tracked face region)."""
    from scipy.spatial import ConvexHull, Delaunay

    points = track.landmarks[:468, :2] * (size / track.image.shape[0])
    hull = Delaunay(points[ConvexHull(points).vertices])
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    return hull.find_simplex(np.stack([xs.ravel(), ys.ravel()], -1)).reshape(size, size) >= 0


def evaluate(path: Path, head: OpenHead, layout: UVLayout, model: ProjectionAvatarModel, size: int, out_dir: Path):
    start = time.perf_counter()
    track = track_image(path, head=head)
    image = torch.from_numpy(track.image).permute(2, 0, 1).float()[None] / 255
    mask = torch.from_numpy(track.mask)[None, None].float() if track.mask is not None else None
    with torch.no_grad():
        attributes = model(make_source_view(image, track.camera, head, track.params, layout, mask=mask))
        avatar = Avatar.from_attributes(attributes, layout, head, track.params)
        gaussians = avatar.gaussians()
        source = render_gaussians(gaussians, track.camera, size, size)
        # The orbit circles the head around the source camera's distance, in head space.
        radius = float(track.camera.position.norm())
        views = Camera.orbit(36, radius=radius, elevation_deg=10.0)
        orbit_alpha = []
        orbit_images = []
        for i in range(36):
            out = render_gaussians(gaussians, views[i], size, size, background=torch.ones(3))
            orbit_alpha.append(out.alpha[0, 0])
            orbit_images.append(out.image[0])
    elapsed = time.perf_counter() - start
    target = torch.nn.functional.interpolate(image, size=(size, size), mode="area")[0]
    region = torch.from_numpy(face_mask(head, track, size))
    psnr = image_psnr(source.image, target[None], mask=region[None, None].to(target)).item()
    # Head silhouette = pixels the avatar covers at all; a hole shows as low alpha inside it (eroded by 2 px).
    min_alpha = 1.0
    for alpha in orbit_alpha:
        inside = alpha > 0.5
        eroded = -torch.nn.functional.max_pool2d(-inside.float()[None, None], 5, 1, 2)[0, 0] > 0.5
        if eroded.any():
            min_alpha = min(min_alpha, alpha[eroded].min().item())
    tiles = [Image.fromarray(track.image).resize((size, size))]
    for k in range(0, 36, 36 // 8):
        tiles.append(Image.fromarray((orbit_images[k].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)))
    sheet = Image.new("RGB", (size * len(tiles), size), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (i * size, 0))
    out_dir.mkdir(parents=True, exist_ok=True)
    sheet.save(out_dir / f"{path.stem}.png")
    # Left-right agreement of the frontal view (the orbit starts at azimuth 0, on the head's symmetry plane).
    front, front_alpha = orbit_images[0], orbit_alpha[0]
    both = (front_alpha > 0.5) & (front_alpha.flip(-1) > 0.5)
    symmetry = image_psnr(front[None], front.flip(-1)[None], mask=both[None, None].to(front)).item()
    return psnr, min_alpha, symmetry, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256, help="UV atlas size K")
    parser.add_argument("--size", type=int, default=256, help="render size in pixels")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "realface_orbits")
    args = parser.parse_args()
    head = OpenHead()
    layout = UVLayout(head, resolution=args.resolution)
    model = ProjectionAvatarModel()
    for path in sorted(PHOTOS.glob("p0*")):
        psnr, min_alpha, symmetry, seconds = evaluate(path, head, layout, model, args.size, args.out)
        print(f"{path.name:<52s} PSNR(face) {psnr:5.1f} dB   min alpha in head silhouette (36 views) {min_alpha:.3f}"
              f"   front symmetry {symmetry:5.1f} dB"
              f"   {seconds:.1f} s")


if __name__ == "__main__":
    main()
