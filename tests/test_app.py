"""The Gradio app's handlers, called directly (the UI layout is built too, not served)."""

from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

gr = pytest.importorskip("gradio")

import app  # noqa: E402
from fhavatar import app_service  # noqa: E402
from tests.served import served  # noqa: E402

REALFACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "realfaces"


@pytest.fixture(scope="module")
def service():
    return app.AvatarService(resolution=64)


def _frames(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return meta, sum(1 for _ in reader)


def test_create_and_animate_with_the_session_avatar(service, tmp_path):
    photo = app.EXAMPLES_DIR / "astronaut.png"
    orbit, front, ply, avatar, viewer, kept = service.create(str(photo), frames=4, size=96, elevation=5.0,
                                                             background="#000000")
    assert viewer == ply and Path(kept).suffix == ".safetensors"
    meta, n = _frames(orbit)
    assert n == 4 and tuple(meta["size"]) == (96, 96)
    from PIL import Image

    assert np.asarray(Image.open(front))[0, 0].tolist() == [0, 0, 0]  # the chosen background in the corner
    with pytest.raises(gr.Error, match="Background colour"):
        service.create(str(photo), frames=2, size=64, background="#zz")
    # a request's colour is a call argument: the shared pipeline's config is never rewritten
    assert service.pipe.config.background == [1.0, 1.0, 1.0]
    service.create(str(photo), frames=1, size=64, background="#ffffff")
    assert Path(front).is_file() and Path(ply).stat().st_size > 1000
    assert avatar is not None
    # a short driving clip (the example photo's own crops, shifted) re-enacts the cached avatar
    from fhavatar.io import load_image, write_video

    image = load_image(photo)
    clip = write_video(tmp_path / "clip.mp4", [np.roll(image, s, axis=1) for s in range(0, 10, 2)], fps=10)
    video = service.animate(None, str(clip), "relative", 96, avatar)
    meta, n = _frames(video)
    assert n == 5 and meta["size"][1] == 96 and meta["fps"] == 10


def test_bad_inputs_give_readable_errors(service, tmp_path):
    with pytest.raises(gr.Error, match="upload a photo"):
        service.create(None)
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is not a photo")
    with pytest.raises(gr.Error):
        service.create(str(not_image), frames=2, size=64)
    with pytest.raises(gr.Error, match="Frames must be"):
        service.create(str(app.EXAMPLES_DIR / "astronaut.png"), frames=1000, size=64)
    from fhavatar.io import write_video

    long_clip = write_video(tmp_path / "long.mp4", [np.zeros((16, 16, 3), np.uint8)] * 25, fps=1)  # 25 s
    with pytest.raises(gr.Error, match="at most 20 s"):
        service.animate(str(app.EXAMPLES_DIR / "astronaut.png"), str(long_clip), "relative", 64, None)
    blank = np.full((128, 128, 3), 200, np.uint8)
    from PIL import Image

    Image.fromarray(blank).save(tmp_path / "blank.png")
    with pytest.raises(gr.Error, match="face"):
        service.create(str(tmp_path / "blank.png"), frames=2, size=64)


def test_ui_builds_with_named_endpoints(service):
    demo = app.build_demo(service)
    names = {dep.get("api_name") for dep in demo.config["dependencies"]}
    assert {"create_avatar", "animate"} <= names


def test_served_app_handles_concurrent_clients_and_survives_errors(service, tmp_path):
    """The real server with its queue: 4 concurrent gradio_client calls succeed, a bad request gets a readable
    error, and the next request is still served."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    demo = app.build_demo(service).queue(max_size=16, default_concurrency_limit=1)
    with served(demo, show_error=True) as url:
        photo = handle_file(str(app.EXAMPLES_DIR / "astronaut.png"))

        def create(_):
            return Client(url, verbose=False).predict(photo, 2, 64, 0.0, api_name="/create_avatar")

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(create, range(4)))
        assert all(Path(r[0]).is_file() and Path(r[2]).is_file() for r in results)
        client = Client(url, verbose=False)
        with pytest.raises(Exception, match="greater than maximum"):  # Gradio's own slider check
            client.predict(photo, 1000, 64, 0.0, api_name="/create_avatar")
        from PIL import Image

        Image.new("RGB", (128, 128), (200, 200, 200)).save(tmp_path / "blank.png")
        with pytest.raises(Exception, match="face"):  # ours, from the tracker
            client.predict(handle_file(str(tmp_path / "blank.png")), 2, 64, 0.0, api_name="/create_avatar")
        assert Path(client.predict(photo, 2, 64, 0.0, api_name="/create_avatar")[0]).is_file()
        # animate through the API: photo + clip, every other argument left at its default
        from fhavatar.io import load_image, write_video

        image = load_image(app.EXAMPLES_DIR / "astronaut.png")
        clip = write_video(tmp_path / "clip.mp4", [np.roll(image, s, axis=1) for s in range(0, 8, 2)], fps=8)
        video = client.predict(photo, handle_file(str(clip)), api_name="/animate")
        path = video["video"] if isinstance(video, dict) else video
        assert _frames(path)[1] == 4


def test_api_animate_reuses_the_avatar_of_the_same_photo(service, tmp_path, monkeypatch):
    import shutil

    photo = tmp_path / "a.png"
    shutil.copy(app.EXAMPLES_DIR / "astronaut.png", photo)
    first = service.avatar_for(photo)
    calls = []
    monkeypatch.setattr(service.pipe, "reconstruct", lambda *a, **k: calls.append(a) or first)
    copy = tmp_path / "b.png"
    shutil.copy(photo, copy)
    assert service.avatar_for(copy) is first and not calls  # same content, other name: cached


def test_limits_and_clean_errors(service, tmp_path, monkeypatch):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    big = tmp_path / "big.png"  # 8000 x 6000 claimed by the header: 48 Mpx, refused before decoding
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8000, 6000, 8, 2, 0, 0, 0))
                    + chunk(b"IEND", b""))
    with pytest.raises(gr.Error, match=f"at most {app.MAX_PHOTO_MEGAPIXELS} Mpx"):
        service.create(str(big), frames=2, size=64)
    # input errors reach the user without the server's folders; anything else as a generic line, never a traceback
    err = service.user_error(ValueError(f"`image` {str(tmp_path / 'x.jpg')!r} is corrupt"), str(tmp_path / "x.jpg"))
    assert str(tmp_path) not in str(err) and "'x.jpg' is corrupt" in str(err)
    err = service.user_error(RuntimeError("secret internals"))
    assert "Internal error (RuntimeError)" in str(err) and "secret" not in str(err)
    assert "ran out of memory" in str(service.user_error(MemoryError()))
    # request folders are pruned: only the newest OUTPUT_DIRS_KEPT stay on disk
    monkeypatch.setattr(app_service, "OUTPUT_DIRS_KEPT", 2)
    folders = [service.output_dir() for _ in range(4)]
    assert [f.exists() for f in folders] == [False, False, True, True]
    # both endpoints share one concurrency slot (one pipeline); the photo input hands over the path undecoded
    demo = app.build_demo(service)
    ids = {fn.api_name: fn.concurrency_id for fn in demo.fns.values()}
    assert ids["create_avatar"] == ids["animate"] == app.CONCURRENCY_ID
    from gradio.data_classes import ImageData

    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    photo = app.photo_input()
    assert photo.preprocess(ImageData(path=str(text), orig_name="notes.jpg")) == str(text)
    assert photo.get_block_name() == "image" and not (Path(app.__file__).with_suffix(".pyi")).exists()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert app.limit_malloc_arenas() is False  # an explicit setting wins


@pytest.mark.parametrize("bad", ["#-1-1-1", "#fff", "#12345", "#1234567", "white", "#gg0000", 12])
def test_colours_are_parsed_strictly(bad):
    with pytest.raises(gr.Error, match="Background colour must look like #ffffff"):
        app_service.parse_color(bad)


def test_colour_parsing_values():
    assert app_service.parse_color("#ff8000") == [1.0, 128 / 255, 0.0]
    assert app_service.parse_color("00FF00") == [0.0, 1.0, 0.0]
    assert app_service.parse_color("") is None and app_service.parse_color(None) is None


def _avatar_half(path) -> np.ndarray:  # the avatar side of a re-enactment (render | clip), [T, H, H, 3] float
    path = path["video"] if isinstance(path, dict) else path
    reader = imageio_ffmpeg.read_frames(str(path))
    w, h = next(reader)["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3)[:, :h] for f in reader]).astype(np.float32)


def test_two_sessions_never_share_an_avatar_or_a_setting(service, tmp_path):
    """Two gradio_client sessions interleave create and animate with different photos and colours: each request shows
    the avatar of the photo it sent and its own session's colour; the shared pipeline's config never changes."""
    from gradio_client import Client, handle_file
    from PIL import Image

    from fhavatar.io import load_image, write_video

    Image.open(app.EXAMPLES_DIR / "astronaut.png").convert("RGB").save(tmp_path / "a.png")
    Image.open(app.EXAMPLES_DIR / "astronaut.png").convert("L").convert("RGB").save(tmp_path / "b.png")  # another photo
    image = load_image(tmp_path / "a.png")
    clip = handle_file(str(write_video(tmp_path / "clip.mp4", [np.roll(image, s, axis=1) for s in (0, 3, 6)], fps=10)))
    a, b = handle_file(str(tmp_path / "a.png")), handle_file(str(tmp_path / "b.png"))
    demo = app.build_demo(service).queue(max_size=16, default_concurrency_limit=1)
    with served(demo, show_error=True) as url:
        alice, bob = Client(url, verbose=False), Client(url, verbose=False)
        alice.predict(a, 1, 64, 0.0, "#000000", api_name="/create_avatar")
        bob.predict(b, 1, 64, 0.0, "#ff0000", api_name="/create_avatar")
        alice_a = _avatar_half(alice.predict(a, clip, "relative", 64, api_name="/animate"))
        bob_b = _avatar_half(bob.predict(b, clip, "relative", 64, api_name="/animate"))
        alice_b = _avatar_half(alice.predict(b, clip, "relative", 64, api_name="/animate"))  # not her session's photo
        fresh_b = _avatar_half(Client(url, verbose=False).predict(b, clip, "relative", 64, api_name="/animate"))
        fresh_a = _avatar_half(Client(url, verbose=False).predict(a, clip, "relative", 64, api_name="/animate"))

    def corner(frames):
        return frames[:, :4, :4].mean((0, 1, 2))

    # colours: each session's own, none in another session, none in the shared config
    np.testing.assert_allclose(corner(alice_a), [0, 0, 0], atol=16)
    np.testing.assert_allclose(corner(bob_b), [255, 0, 0], atol=24)
    for frames in (alice_b, fresh_b, fresh_a):
        np.testing.assert_allclose(corner(frames), [255, 255, 255], atol=16)
    assert service.pipe.config.background == [1.0, 1.0, 1.0]
    # avatars: photo B in Alice's session (which holds photo A's avatar) shows B's avatar, exactly as a fresh session
    assert np.abs(alice_b - fresh_b).mean() < 1.0
    assert np.abs(alice_b - fresh_a).mean() > 3.0

    def saturation(frames):
        return float((frames[:, 16:48, 16:48].max(-1) - frames[:, 16:48, 16:48].min(-1)).mean())

    assert saturation(alice_b) < saturation(fresh_a) - 3  # the gray photo's avatar, not the colour one
