"""FHAvatar Space (Gradio): layout and wiring only. The service (`fhavatar.app_service.AvatarService`) checks each
request and calls `FHAvatarPipeline`; this file lays out the tabs and connects them to its methods.

Create: a photo -> the avatar in a 3D viewer (Gaussian splats in the browser), a 360° orbit video, a front render,
the avatar as a 3DGS `.ply` and as a re-animatable avatar file (`.safetensors`).
Animate: a driving video -> the avatar re-enacting it, side by side with the clip; or, without a clip, a built-in
motion (talk, smile, nod, shake, look around, blink). It re-uses the avatar of Create, or an uploaded avatar file.
Live: the visitor's webcam drives the avatar of Create, streamed back frame by frame (`fhavatar.app_live.LiveService`),
and the session's clip is offered when it ends.

Run `python app.py [--model DIR_OR_REPO]` (or set FHAVATAR_MODEL); without a model it runs the built-in
default (OpenHead + the training-free projection avatar), which needs no download.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import gradio as gr

from fhavatar.app_live import (
    LIVE_CONCURRENCY_ID,
    LIVE_SECONDS,
    LIVE_SESSIONS,
    LIVE_STREAM_EVERY,
    LIVE_VIEW_HEIGHT_PX,
    LIVE_WEBCAM_CONSTRAINTS,
    LiveService,
)
from fhavatar.app_service import (
    CONCURRENCY_ID,
    CONCURRENCY_LIMIT,
    LAUNCH_OPTIONS,
    MAX_ORBIT_FRAMES,
    MAX_PHOTO_MEGAPIXELS,
    MAX_SIZE,
    MAX_VIDEO_SECONDS,
    MOTION_CHOICES,
    QUEUE_SIZE,
    STATE_TTL_S,
    VIEWER_HEIGHT_PX,
    AvatarService,
    limit_malloc_arenas,
    on_gpu,
    photo_input,
)

__all__ = ["EXAMPLES_DIR", "MAX_PHOTO_MEGAPIXELS", "AvatarService", "build_demo", "limit_malloc_arenas", "main",
           "photo_input", "serve"]

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
def build_demo(service: AvatarService) -> gr.Blocks:
    """The Blocks UI around `service` (named API endpoints: create_avatar, animate; the Live tab's stream is not one)."""
    examples = sorted(str(p) for p in EXAMPLES_DIR.glob("*.png")) + sorted(str(p) for p in EXAMPLES_DIR.glob("*.jpg"))
    # Gradio's own copies of uploads and outputs are deleted hourly once an hour old.
    with gr.Blocks(title="FHAvatar", delete_cache=(STATE_TTL_S, STATE_TTL_S)) as demo:
        gr.Markdown(
            "# FHAvatar\nOne photo → an animatable 3D full-head Gaussian avatar, viewable 360° around and "
            f"re-enactable by any driving video.\n\n**Model running:** {service.name}"
        )
        avatar_state = gr.State(None, time_to_live=STATE_TTL_S)
        with gr.Tab("Create"):
            with gr.Row():
                with gr.Column():
                    photo = photo_input(label="Photo (one clearly visible face)", sources=["upload", "webcam"])
                    if examples:
                        gr.Examples(examples, inputs=photo)
                    with gr.Accordion("Advanced options", open=False):
                        frames = gr.Slider(1, MAX_ORBIT_FRAMES, value=36, step=1, label="Orbit frames")
                        size = gr.Slider(64, MAX_SIZE, value=384, step=32, label="Resolution")
                        elevation = gr.Slider(-30, 45, value=10, step=1, label="Elevation (degrees)")
                        background = gr.ColorPicker(value="#ffffff", label="Background colour")
                    create = gr.Button("Create avatar", variant="primary")
                with gr.Column():
                    viewer = gr.Model3D(label="3D avatar (drag to turn, scroll to zoom)", height=VIEWER_HEIGHT_PX,
                                        interactive=False)
                    with gr.Row():
                        orbit = gr.Video(label="360° orbit", autoplay=True)
                        front = gr.Image(label="Front render", type="filepath")
                    with gr.Row():
                        ply = gr.File(label="avatar.ply (3D Gaussian splats)")
                        kept = gr.File(label="avatar.safetensors (keep it: Animate takes it instead of the photo)")
        with gr.Tab("Animate"):
            with gr.Row():
                with gr.Column():
                    avatar_upload = gr.File(label="Avatar file (optional: an avatar.safetensors from Create, instead "
                                            "of the photo)", file_types=[".safetensors"])
                    driving = gr.Video(label=f"Driving video (≤ {MAX_VIDEO_SECONDS:.0f} s)", sources=["upload", "webcam"])
                    motion = gr.Radio(MOTION_CHOICES, value="talk", label="Built-in motion (when no driving video is given)")
                    mode = gr.Radio(["relative", "absolute"], value="relative", label="Motion transfer (driving video)")
                    animate = gr.Button("Animate", variant="primary")
                with gr.Column():
                    reenact = gr.Video(label="Animation (avatar | driving clip, or the built-in motion)", autoplay=True)
        with gr.Tab("Live"):
            gr.Markdown(f"Your webcam drives the avatar of Create: start the camera, then press Record. A session lasts "
                        f"up to {LIVE_SECONDS} s; its clip is offered when it ends (or when you press Stop).")
            with gr.Row():  # the webcam mirrors its frames (Gradio's default): the avatar moves as a reflection does
                camera = gr.Image(label="Camera", sources=["webcam"], streaming=True, type="numpy",
                                  height=LIVE_VIEW_HEIGHT_PX,
                                  webcam_options=gr.WebcamOptions(constraints=LIVE_WEBCAM_CONSTRAINTS))
                live_avatar = gr.Image(label="Avatar (live)", format="jpeg", interactive=False,
                                       height=LIVE_VIEW_HEIGHT_PX)
            with gr.Row():
                live_status = gr.Textbox(label="Live status", interactive=False, lines=2)
                live_clip = gr.Video(label="Clip of the live session (avatar | camera)", height=LIVE_VIEW_HEIGHT_PX // 2)
        create.click(on_gpu(service.create), [photo, frames, size, elevation, background],
                     [orbit, front, ply, avatar_state, viewer, kept], api_name="create_avatar",
                     concurrency_id=CONCURRENCY_ID)
        animate.click(on_gpu(service.animate), [photo, driving, mode, size, avatar_state, motion, avatar_upload],
                      [reenact], api_name="animate", concurrency_id=CONCURRENCY_ID)
        live = LiveService(service, seconds=LIVE_SECONDS)
        camera.stream(live.frame, [camera, avatar_state], [live_avatar, live_status], stream_every=LIVE_STREAM_EVERY,
                      time_limit=LIVE_SECONDS, concurrency_limit=LIVE_SESSIONS, concurrency_id=LIVE_CONCURRENCY_ID,
                      show_progress="hidden", api_visibility="private").then(
            live.stop, None, [live_clip, live_status], api_visibility="private")
        demo.unload(live.forget)
    return demo


def serve(demo: gr.Blocks, host: str | None = None, port: int | None = None, **launch_options):
    """Queue `demo` with the app's limits (QUEUE_SIZE, CONCURRENCY_LIMIT) and launch it with LAUNCH_OPTIONS.

    `host` / `port` left at None let Gradio decide: `GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT` when set (a Hugging
    Face Space or a container sets them), else 127.0.0.1 and the first free port from 7860. Given, they win.
    """
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY_LIMIT)
    return demo.launch(server_name=host, server_port=port, **{**LAUNCH_OPTIONS, **launch_options})


def main() -> None:
    parser = argparse.ArgumentParser(description="FHAvatar Gradio app")
    parser.add_argument("--model", default=os.environ.get("FHAVATAR_MODEL"), help="pipeline folder or Hub repo id")
    # No defaults here: an explicit value would override the GRADIO_SERVER_NAME / GRADIO_SERVER_PORT a Space sets.
    parser.add_argument("--host", default=None, help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None,
                        help="port to listen on (default: $GRADIO_SERVER_PORT or the first free one from 7860)")
    parser.add_argument("--resolution", type=int, default=256, help="UV atlas size K of the built-in default")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limit_malloc_arenas()
    serve(build_demo(AvatarService(args.model, resolution=args.resolution)), args.host, args.port)


if __name__ == "__main__":
    main()
