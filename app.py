"""FHAvatar Space (Gradio). UI only: every avatar is built and rendered by `FHAvatarPipeline`.

Create: a photo -> a 360° orbit video, a front render and the avatar as a 3DGS `.ply`.
Animate: a driving video -> the avatar re-enacting it, side by side with the clip (re-uses the avatar of Create).

Run `python app.py [--model DIR_OR_REPO]` (or set FHAVATAR_MODEL); without a model it runs the built-in
default (OpenHead + the training-free projection avatar), which needs no download.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import gradio as gr

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MAX_ORBIT_FRAMES = 120
MAX_SIZE = 512
MAX_VIDEO_SECONDS = 20.0
MAX_UPLOAD_MB = 50
ORBIT_FPS = 24.0


def on_gpu(fn):
    """On a ZeroGPU Space (the `spaces` package importable) run `fn` in a GPU slot; plain otherwise."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(fn)


class AvatarService:
    """The pipeline, loaded once, and the glue that turns UI inputs into files (errors become `gr.Error`)."""

    def __init__(self, model: str | None = None, resolution: int = 256):
        from fhavatar.pipeline_fhavatar import FHAvatarPipeline

        if model:
            self.pipe = FHAvatarPipeline.from_pretrained(model)
            self.name = f"{model}"
        else:
            self.pipe = FHAvatarPipeline.default(resolution=resolution)
            self.name = "built-in default (OpenHead + training-free projection avatar, no download)"
        self.pipe.set_progress_bar_config(disable=True)
        self._avatars: dict[str, object] = {}  # API calls: photo content hash -> avatar (a few, newest last)

    def avatar_for(self, photo):
        """The avatar of `photo` (a path), built once per distinct photo content and re-used by the API."""
        import hashlib

        key = hashlib.sha1(Path(photo).read_bytes()).hexdigest()
        if key not in self._avatars:
            self._avatars[key] = self.pipe.reconstruct(str(photo))
            while len(self._avatars) > 4:
                self._avatars.pop(next(iter(self._avatars)))
        return self._avatars[key]

    @staticmethod
    def _check_file(path, what: str) -> Path:
        if not path:
            raise gr.Error(f"Please upload a {what}.")
        path = Path(path)
        if not path.is_file():
            raise gr.Error(f"The {what} could not be read (no file at {path.name}).")
        if path.stat().st_size > MAX_UPLOAD_MB * 2**20:
            raise gr.Error(f"The {what} is larger than {MAX_UPLOAD_MB} MB; please upload a smaller file.")
        return path

    def _set_background(self, color: str | None) -> None:
        """Renders use the pipeline's background; requests run one at a time (queue limit 1), so set it per call."""
        if not color:
            return
        try:
            value = color.lstrip("#")
            rgb = [int(value[i:i + 2], 16) / 255 for i in (0, 2, 4)]
        except (ValueError, IndexError) as err:
            raise gr.Error(f"Background colour must look like #ffffff, got {color!r}.") from err
        self.pipe.register_to_config(background=rgb)

    def create(self, photo, frames: int = 36, size: int = 384, elevation: float = 10.0, background: str = "#ffffff",
               progress=gr.Progress()):
        """Photo -> (orbit video path, front image path, .ply path, avatar for the session state)."""
        from fhavatar.io import save_image, write_video

        photo = self._check_file(photo, "photo")
        self._set_background(background)
        frames, size = int(frames), int(size)
        if not 1 <= frames <= MAX_ORBIT_FRAMES or not 64 <= size <= MAX_SIZE:
            raise gr.Error(f"Frames must be 1–{MAX_ORBIT_FRAMES} and resolution 64–{MAX_SIZE} pixels.")
        try:
            progress(0.1, desc="tracking the face and building the avatar")
            built = self.pipe(str(photo), orbit=False, height=size, width=size, output_type="np")
            avatar = built.avatar
            progress(0.5, desc="rendering the 360° orbit")
            orbit = self.pipe.orbit(avatar, num_frames=frames, elevation=float(elevation), height=size, width=size,
                                    output_type="np")
        except (ValueError, FileNotFoundError, TypeError) as err:
            raise gr.Error(str(err)) from err
        out = Path(tempfile.mkdtemp(prefix="fhavatar-"))
        return (
            str(write_video(out / "orbit.mp4", list(orbit), fps=ORBIT_FPS)),
            str(save_image(built.front_image, out / "front.png")),
            str(avatar.save_ply(out / "avatar.ply")),
            avatar,
        )

    def animate(self, photo, driving_video, mode: str = "relative", size: int = 384, avatar=None,
                progress=gr.Progress()):
        """Driving video -> re-enacted video path (the avatar beside the clip). Rebuilds the avatar if none."""
        from fhavatar.__main__ import side_by_side
        from fhavatar.io import read_video, video_info, write_video

        video = self._check_file(driving_video, "driving video")
        if mode not in ("relative", "absolute"):
            raise gr.Error(f"Transfer mode must be 'relative' or 'absolute', got {mode!r}.")
        try:
            info = video_info(video)
            if info.duration > MAX_VIDEO_SECONDS:
                raise gr.Error(f"The driving video is {info.duration:.0f} s long; please use at most "
                               f"{MAX_VIDEO_SECONDS:.0f} s.")
            if avatar is None:
                progress(0.05, desc="building the avatar from the photo")
                avatar = self.avatar_for(self._check_file(photo, "photo"))
            progress(0.2, desc="tracking the driving video")
            clip, fps = read_video(video)
            progress(0.5, desc="re-enacting")
            frames = self.pipe.animate(avatar, clip, mode=mode, height=int(size), width=int(size), output_type="np")
        except (ValueError, FileNotFoundError, TypeError) as err:
            raise gr.Error(str(err)) from err
        out = Path(tempfile.mkdtemp(prefix="fhavatar-"))
        pairs = [side_by_side(frame, original) for frame, original in zip(frames, clip)]
        return str(write_video(out / "reenact.mp4", pairs, fps=fps))


def build_demo(service: AvatarService) -> gr.Blocks:
    """The Blocks UI around `service` (named API endpoints: create_avatar, animate)."""
    examples = sorted(str(p) for p in EXAMPLES_DIR.glob("*.png")) + sorted(str(p) for p in EXAMPLES_DIR.glob("*.jpg"))
    with gr.Blocks(title="FHAvatar") as demo:
        gr.Markdown(
            "# FHAvatar\nOne photo → an animatable 3D full-head Gaussian avatar, viewable 360° around and "
            f"re-enactable by any driving video.\n\n**Model running:** {service.name}"
        )
        avatar_state = gr.State(None)
        with gr.Tab("Create"):
            with gr.Row():
                with gr.Column():
                    photo = gr.Image(label="Photo (one clearly visible face)", type="filepath",
                                     sources=["upload", "webcam"])
                    if examples:
                        gr.Examples(examples, inputs=photo)
                    with gr.Accordion("Advanced options", open=False):
                        frames = gr.Slider(1, MAX_ORBIT_FRAMES, value=36, step=1, label="Orbit frames")
                        size = gr.Slider(64, MAX_SIZE, value=384, step=32, label="Resolution")
                        elevation = gr.Slider(-30, 45, value=10, step=1, label="Elevation (degrees)")
                        background = gr.ColorPicker(value="#ffffff", label="Background colour")
                    create = gr.Button("Create avatar", variant="primary")
                with gr.Column():
                    orbit = gr.Video(label="360° orbit", autoplay=True)
                    front = gr.Image(label="Front render", type="filepath")
                    ply = gr.File(label="avatar.ply (3D Gaussian splats)")
        with gr.Tab("Animate"):
            with gr.Row():
                with gr.Column():
                    driving = gr.Video(label=f"Driving video (≤ {MAX_VIDEO_SECONDS:.0f} s)", sources=["upload", "webcam"])
                    mode = gr.Radio(["relative", "absolute"], value="relative", label="Motion transfer")
                    animate = gr.Button("Animate", variant="primary")
                with gr.Column():
                    reenact = gr.Video(label="Re-enactment (avatar | driving clip)", autoplay=True)
        create.click(on_gpu(service.create), [photo, frames, size, elevation, background], [orbit, front, ply, avatar_state],
                     api_name="create_avatar")
        animate.click(on_gpu(service.animate), [photo, driving, mode, size, avatar_state], [reenact], api_name="animate")
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description="FHAvatar Gradio app")
    parser.add_argument("--model", default=os.environ.get("FHAVATAR_MODEL"), help="pipeline folder or Hub repo id")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    demo = build_demo(AvatarService(args.model))
    demo.queue(max_size=16, default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
