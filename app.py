"""FHAvatar Space (Gradio). UI only: all rendering goes through the `fhavatar` package.

This first version shows the renderer on the built-in synthetic head; photo upload and driving-video
re-enactment arrive with the pipeline. Run: `python app.py` (then open the printed URL).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from fhavatar.demo import render_orbit_demo

MAX_FRAMES = 120
MAX_SIZE = 512


def render_orbit(num_frames: int = 36, size: int = 384, elevation: float = 10.0, progress=gr.Progress()):
    """Render a 360° orbit of the synthetic head; returns (orbit video path, front image path)."""
    if not 1 <= int(num_frames) <= MAX_FRAMES:
        raise gr.Error(f"Frames must be between 1 and {MAX_FRAMES}, got {num_frames}.")
    if not 64 <= int(size) <= MAX_SIZE:
        raise gr.Error(f"Resolution must be between 64 and {MAX_SIZE} pixels, got {size}.")
    progress(0, desc="rendering")
    out_dir = Path(tempfile.mkdtemp(prefix="fhavatar-"))
    paths = render_orbit_demo(out_dir, num_frames=int(num_frames), size=int(size), elevation_deg=float(elevation), progress=False)
    return str(paths["orbit"]), str(paths["front"])


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="FHAvatar") as demo:
        gr.Markdown(
            "# FHAvatar\nOne photo → an animatable 3D full-head Gaussian avatar.\n\n"
            "**Model running:** built-in synthetic head (renderer preview; photo upload comes with the pipeline)."
        )
        with gr.Row():
            with gr.Column():
                with gr.Accordion("Advanced options", open=False):
                    frames = gr.Slider(1, MAX_FRAMES, value=36, step=1, label="Frames")
                    size = gr.Slider(64, MAX_SIZE, value=384, step=32, label="Resolution")
                    elevation = gr.Slider(-30, 45, value=10, step=1, label="Elevation (degrees)")
                button = gr.Button("Render 360° orbit", variant="primary")
            with gr.Column():
                video = gr.Video(label="360° orbit", autoplay=True)
                front = gr.Image(label="Front view", type="filepath")
        button.click(render_orbit, [frames, size, elevation], [video, front], api_name="render_orbit")
    return demo


if __name__ == "__main__":
    build_demo().queue(max_size=16, default_concurrency_limit=1).launch()
