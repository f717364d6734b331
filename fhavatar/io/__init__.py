"""Files at the package edges: photos and frames (`images`), videos (`video`), the standard 3DGS PLY of
Gaussians (`ply`) and generic file checks and reads (`files`). Every name is importable from `fhavatar.io`.

- `images`: `load_image` (any source, format or mode -> RGB uint8 with size limits), `image_size`, `save_image`
  and `to_uint8_frames`;
- `video`: `video_info` / `read_video` (limits on length, memory and time) and `write_video` (H.264 mp4, frames
  streamed to the encoder; `encoder_memory` estimates its memory), all with the ffmpeg binary shipped by
  `imageio-ffmpeg` (no system ffmpeg), every path given to it as `ffmpeg_path` (`file:` + absolute);
- `ply`: `save_gaussians_ply` / `load_gaussians_ply`;
- `files`: `checked_file` (clear errors naming the argument), `read_safetensors` and `replaced_when_done`.
"""

from .files import checked_file, read_safetensors, replaced_when_done
from .images import (
    DEFAULT_MAX_SIDE,
    IMAGE_FORMATS,
    MAX_IMAGE_PIXELS,
    image_size,
    load_image,
    save_image,
    side_by_side,
    to_uint8_frames,
)
from .ply import PLY_PROPERTIES, SH_C0, load_gaussians_ply, save_gaussians_ply
from .video import (
    ENCODER_LOOKAHEAD_PIXELS,
    MAX_VIDEO_BYTES,
    MAX_VIDEO_SECONDS,
    VIDEO_DECODE_TIMEOUT,
    VIDEO_DEMUXERS,
    VIDEO_PROBE_TIMEOUT,
    VideoInfo,
    encoder_memory,
    ffmpeg_path,
    read_video,
    video_info,
    write_video,
)

__all__ = ["DEFAULT_MAX_SIDE", "ENCODER_LOOKAHEAD_PIXELS", "IMAGE_FORMATS", "MAX_IMAGE_PIXELS", "MAX_VIDEO_BYTES",
           "MAX_VIDEO_SECONDS", "PLY_PROPERTIES", "SH_C0", "VIDEO_DECODE_TIMEOUT", "VIDEO_DEMUXERS",
           "VIDEO_PROBE_TIMEOUT", "VideoInfo", "checked_file", "encoder_memory", "ffmpeg_path", "image_size",
           "load_gaussians_ply", "load_image", "read_safetensors", "read_video", "replaced_when_done",
           "save_gaussians_ply", "save_image", "side_by_side", "to_uint8_frames", "video_info", "write_video"]
