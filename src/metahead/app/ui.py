"""The Gradio page of `metahead app`: components and their wiring; the work is service.py's.

Offline by construction: analytics and Gradio's version check off, a theme of system fonts only (no web
fonts), no external scripts, no share link. Long requests (making, animating) run in Gradio's queue,
`AppConfig.concurrency` at a time, so one tab's fine-tuning does not block another tab's page.
"""

from __future__ import annotations

import base64
import html
import os
import signal
import threading
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from metahead.app.live import LiveSessions
from metahead.app.results import AvatarResult
from metahead.app.service import RETARGET_CHOICES, AppService
from metahead.app.settings import AppConfig
from metahead.app.uploads import MEGABYTE, AppInputError, check_photos, check_video, display_name
from metahead.data.format import DataError
from metahead.data.video_io import enlarge_frames
from metahead.live import encode_jpeg

UPLOADED_DRIVER = "my video (upload it below)"
SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Helvetica", "Arial", "sans-serif")
SYSTEM_MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")
CSS = """
.mh-status p { margin: 0.2em 0; }
#make-status, #animate-status, #live-status { min-height: 4.5em; }
.mh-error, .mh-error * { color: #b91c1c; }
footer { display: none !important; }
.mh-live { width: 100%; height: auto; image-rendering: auto; }
"""
# Errors a request can meet in its input, shown in the page's status box (anything else is a bug: Gradio
# shows it as an error message, and the server stays up).
INPUT_ERRORS = (AppInputError, DataError)


def _offline_environment() -> None:
    """Before gradio is imported: no telemetry, no version check, no Hub access."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _theme() -> Any:
    import gradio as gr

    return gr.themes.Default(
        primary_hue="indigo", neutral_hue="slate", font=list(SYSTEM_FONTS), font_mono=list(SYSTEM_MONO_FONTS)
    )


def _problem(what: str, err: Exception) -> str:
    """A refusal for the status box, in red (the message's own Markdown, e.g. `code`, kept)."""
    return f'<span class="mh-error">**⚠ {what}:** {html.escape(str(err), quote=False)}</span>'


def _progress_reporter(progress: Any) -> Callable[[float | None, str], None]:
    def report(fraction: float | None, text: str) -> None:
        progress(fraction, desc=text)

    return report


def crop_sheet(crops: np.ndarray | None, tile: int = 96, columns: int = 8) -> np.ndarray | None:
    """The T face crops (T, S, S, 3) as one image, `columns` to a row, each enlarged to about tile²."""
    if crops is None or not len(crops):
        return None
    tiles = enlarge_frames(crops, max(1, round(tile / crops.shape[1])))
    count, height, width = tiles.shape[:3]
    rows, gap = -(-count // columns), 4
    cols = min(count, columns)
    sheet = np.full((rows * (height + gap) - gap, cols * (width + gap) - gap, 3), 255, np.uint8)
    for i, image in enumerate(tiles):
        top, left = (i // columns) * (height + gap), (i % columns) * (width + gap)
        sheet[top : top + height, left : left + width] = image
    return sheet


def _live_image(panel: np.ndarray | None) -> Any:
    """A live frame as an inline JPEG for the page (gr.skip(): keep the one shown)."""
    import gradio as gr

    if panel is None:
        return gr.skip()
    data = base64.b64encode(encode_jpeg(panel)).decode("ascii")
    return f'<img class="mh-live" alt="live avatar" src="data:image/jpeg;base64,{data}">'


def build_app(service: AppService) -> Any:
    """The page (a gr.Blocks) for one AppService."""
    _offline_environment()
    import gradio as gr

    cfg = service.cfg
    model = service.model
    drivers = service.driver_names()
    live = LiveSessions(service)

    # --- handlers: plain functions of the components' values ----------------------------------------------

    def check_photo_upload(files: list[str] | None) -> str:
        if not files:
            return ""
        try:
            paths = check_photos(files, cfg)
        except INPUT_ERRORS as err:
            return _problem("Cannot use these photos", err)
        names = ", ".join(display_name(p) for p in paths[:4]) + (" …" if len(paths) > 4 else "")
        return f"{len(paths)} photo{'s' if len(paths) != 1 else ''} ready ({names}). Press **Make avatar**."

    def steps_for_shots(files: list[str] | None, shots: float) -> Any:
        """The step slider follows T (every photo, else the frames taken from a video): the model's count
        for it, as `metahead avatar` would take. Set after the photos and T, the slider is the user's."""
        return gr.update(value=service.default_steps(len(files) if files else int(shots)))

    def check_video_upload(path: str | None, role: str) -> str:
        if not path:
            return ""
        try:
            info = check_video(path, cfg, role)
        except INPUT_ERRORS as err:
            return _problem(f"Cannot use this {role}", err)
        return f"`{display_name(path)}`: {info.width}×{info.height}, {info.fps:.3g} fps — ready."

    def avatar_outputs(result: AvatarResult) -> tuple:
        notes = "".join(f"  \n⚠ {note}" for note in result.notes)
        curve_png = str(result.curve_png) if result.curve_png else None
        return (
            str(result.avatar_path),
            result.summary + notes,
            gr.update(value=crop_sheet(result.crops), visible=result.crops is not None),
            gr.update(value=curve_png),
            gr.update(visible=curve_png is not None),
            gr.update(value=str(result.avatar_path), visible=True),
        )

    def make_avatar(photos, video, mode, steps, shots, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        try:
            result = service.make_avatar(
                photos=photos, video=video, mode=mode, steps=int(steps), shots=int(shots),
                progress=_progress_reporter(progress),
            )  # fmt: skip
        except INPUT_ERRORS as err:
            return gr.skip(), _problem("Cannot make the avatar", err), *(gr.skip(),) * 4
        return avatar_outputs(result)

    def open_avatar(path):
        if not path:
            return (gr.skip(),) * 6
        try:
            result = service.open_avatar(path)
        except INPUT_ERRORS as err:
            return gr.skip(), _problem("Cannot open this avatar file", err), *(gr.skip(),) * 4
        return avatar_outputs(result)

    def preview_driver(name):
        if name not in drivers:
            return None
        return str(service.driver_preview(name))

    def driver_uploaded(path):
        return check_video_upload(path, "driving video"), (UPLOADED_DRIVER if path else drivers[0])

    def animate(avatar_path, driver, driver_video, retarget, progress=gr.Progress()):  # noqa: B008
        try:
            if driver == UPLOADED_DRIVER and not driver_video:
                raise AppInputError("upload a driving video first, or choose a synthetic driver")
            result = service.animate(
                avatar_path,
                driver_name=None if driver == UPLOADED_DRIVER else driver,
                driver_video=driver_video if driver == UPLOADED_DRIVER else None,
                retarget=retarget,
                progress=_progress_reporter(progress),
            )
        except INPUT_ERRORS as err:
            return _problem("Cannot animate", err), gr.skip(), gr.skip(), gr.skip()
        return (
            result.summary,
            str(result.video),
            str(result.side_by_side),
            gr.update(value=str(result.video), visible=True),
        )

    def live_frame(image, avatar_path, retarget, tab):
        try:
            view = live.frame(tab, avatar_path, image, retarget)
        except INPUT_ERRORS as err:
            return gr.skip(), _problem("Cannot drive the avatar live", err)
        if view is None:  # this tab's previous frame is still being processed: dropped
            return gr.skip(), gr.skip()
        return _live_image(view.panel), view.status

    def live_file(avatar_path, video, retarget, tab):
        try:
            for view in live.play_file(tab, avatar_path, video, retarget):
                yield _live_image(view.panel), view.status
        except INPUT_ERRORS as err:
            yield gr.skip(), _problem("Cannot play this video", err)

    def live_idle(tab):
        status = live.idle_status(tab)
        return gr.skip() if status is None else status

    # --- the page -----------------------------------------------------------------------------------------

    steps_max = cfg.max_finetune_steps
    shots_start = min(8, cfg.max_shots)  # T from a video until moved; the step slider starts at its count
    with gr.Blocks(
        title="metahead: talking-head avatars", analytics_enabled=False, delete_cache=(3600, 3600)
    ) as page:
        avatar_state = gr.State(None)
        gr.Markdown(
            "# metahead · talking-head avatars\n"
            "Few-shot avatars after Zakharov et al. 2019: make an avatar of a person from a few photos or a "
            "short video, then drive it with someone else's motion."
        )
        model_text = model.describe() if model.ok else f'<span class="mh-error">{model.describe()}</span>'
        gr.Markdown(model_text, elem_id="model-status", elem_classes="mh-status")
        with gr.Tab("Make and drive", elem_id="tab-make"), gr.Row(equal_height=False):
            with gr.Column():
                gr.Markdown("## 1 · Make an avatar")
                photos = gr.File(
                    label=f"Photos of one person (1 to {cfg.max_photos}: .jpg, .png, …)",
                    file_count="multiple", elem_id="photos",
                )  # fmt: skip
                person_video = gr.File(
                    label=f"…or a short video of them (up to {cfg.max_video_seconds:g} s)",
                    file_count="single", elem_id="person-video",
                )  # fmt: skip
                with gr.Row():
                    mode = gr.Radio(
                        [("fine-tuned (FT)", "ft"), ("feed-forward (FF)", "ff")], value="ft", label="Mode",
                        elem_id="mode",
                    )  # fmt: skip
                    shots = gr.Slider(
                        1, cfg.max_shots, value=shots_start, step=1,
                        label="Frames taken from a video (T)", elem_id="shots",
                    )  # fmt: skip
                steps = gr.Slider(
                    0, steps_max, value=service.default_steps(shots_start), step=1,
                    label=f"Fine-tuning steps (up to {steps_max})", elem_id="steps",
                )  # fmt: skip
                make_button = gr.Button("Make avatar", variant="primary", elem_id="make")
                make_status = gr.Markdown(elem_id="make-status", elem_classes="mh-status")
                crops = gr.Image(
                    label="The face crops it was made from", elem_id="crops", visible=False,
                    interactive=False, buttons=[],
                )  # fmt: skip
                with gr.Accordion("Fine-tuning losses", open=False, visible=False) as curve_box:
                    curve = gr.Image(show_label=False, elem_id="curve", interactive=False, buttons=[])
                avatar_file = gr.File(
                    label="Avatar file (download)", interactive=False, elem_id="avatar-file", visible=False
                )
                open_file = gr.File(
                    label="…or open an avatar file made earlier (.avatar)", file_count="single",
                    elem_id="open-avatar",
                )  # fmt: skip
            with gr.Column():
                gr.Markdown("## 2 · Drive it")
                with gr.Row():
                    driver = gr.Dropdown(
                        [*drivers, UPLOADED_DRIVER], value=drivers[0], label="Driver", elem_id="driver"
                    )
                    retarget = gr.Radio(
                        list(zip(("automatic", "on", "off"), RETARGET_CHOICES)), value="auto",
                        label="Retarget onto the avatar's face shape", elem_id="retarget",
                    )  # fmt: skip
                driver_preview = gr.Video(
                    label="Driver",
                    interactive=False,
                    autoplay=True,
                    loop=True,
                    elem_id="driver-preview",
                    buttons=[],
                    height=200,
                )
                driver_video = gr.File(
                    label=f"Driving video (up to {cfg.max_video_seconds:g} s)", file_count="single",
                    elem_id="driver-video",
                )  # fmt: skip
                animate_button = gr.Button("Animate", variant="primary", elem_id="animate")
                animate_status = gr.Markdown(elem_id="animate-status", elem_classes="mh-status")
                result_video = gr.Video(
                    label="Result", interactive=False, autoplay=True, loop=True, elem_id="result-video",
                    height=300, buttons=["download"],
                )  # fmt: skip
                side_video = gr.Video(
                    label="Side by side: driver | landmarks | result", interactive=False, autoplay=True,
                    loop=True, elem_id="side-video", buttons=["download"],
                )  # fmt: skip
                video_file = gr.File(
                    label="Video (download)", interactive=False, elem_id="video-file", visible=False
                )

        with gr.Tab("Live", elem_id="tab-live"):
            gr.Markdown(
                "Your camera drives the avatar made or opened in the first tab, frame by frame: the face is "
                "tracked, its pose and expression moved onto the avatar's face, and the avatar rendered. "
                "Look at the camera with a neutral face and press **Neutral face**: expressions are measured "
                "against it. Frames the machine cannot keep up with are dropped, never queued."
            )
            with gr.Row(equal_height=False):
                with gr.Column():
                    camera = gr.Image(
                        sources=["webcam"], streaming=True, type="numpy", label="Camera",
                        elem_id="live-camera", webcam_options=gr.WebcamOptions(mirror=True),
                    )  # fmt: skip
                    with gr.Row():
                        live_retarget = gr.Radio(
                            list(zip(("automatic", "on", "off"), RETARGET_CHOICES)), value="auto",
                            label="Retarget onto the avatar's face shape", elem_id="live-retarget",
                        )  # fmt: skip
                        neutral_button = gr.Button("Neutral face", elem_id="live-neutral")
                    live_video = gr.File(
                        label="…or play a video file as the camera", file_count="single", elem_id="live-video"
                    )
                    play_button = gr.Button("Play the video", elem_id="live-play")
                with gr.Column():
                    gr.Markdown("**Driver | landmarks | avatar**")
                    # Frames go inline (a data: URL) rather than as a file per frame in Gradio's cache.
                    live_output = gr.HTML(elem_id="live-output")
                    live_status = gr.Markdown(elem_id="live-status", elem_classes="mh-status")
                    live_note = gr.Markdown(elem_id="live-note", elem_classes="mh-status")
            live_timer = gr.Timer(1.0)
            live_tab = gr.State(lambda: uuid.uuid4().hex)  # this browser tab's live session

        # --- wiring ---------------------------------------------------------------------------------------
        quick = {"concurrency_limit": None, "show_progress": "minimal"}  # checks: never wait behind long work
        photos.upload(check_photo_upload, photos, make_status, **quick)
        person_video.upload(lambda p: check_video_upload(p, "video"), person_video, make_status, **quick)
        mode.change(lambda m: gr.update(interactive=m == "ft"), mode, steps, **quick)
        photos.change(steps_for_shots, [photos, shots], steps, **quick)
        shots.change(steps_for_shots, [photos, shots], steps, **quick)
        long_work = {"concurrency_limit": cfg.concurrency, "concurrency_id": "long-work"}
        make_outputs = [avatar_state, make_status, crops, curve, curve_box, avatar_file]
        make_inputs = [photos, person_video, mode, steps, shots]
        make_button.click(make_avatar, make_inputs, make_outputs, show_progress_on=make_status, **long_work)
        open_file.upload(open_avatar, open_file, make_outputs, **quick)
        driver.change(preview_driver, driver, driver_preview, **quick)
        page.load(preview_driver, driver, driver_preview, **quick)
        driver_video.upload(driver_uploaded, driver_video, [animate_status, driver], **quick)
        driver_video.clear(lambda: ("", drivers[0]), None, [animate_status, driver], **quick)
        animate_button.click(
            animate,
            [avatar_state, driver, driver_video, retarget],
            [animate_status, result_video, side_video, video_file],
            **long_work,
        )
        live_work = {
            "concurrency_limit": cfg.concurrency,
            "concurrency_id": "live",
            "show_progress": "hidden",
        }
        camera.stream(
            live_frame, [camera, avatar_state, live_retarget, live_tab], [live_output, live_status],
            stream_every=cfg.live_stream_every, time_limit=None, **live_work,
        )  # fmt: skip
        play_button.click(live_file, [avatar_state, live_video, live_retarget, live_tab],
                          [live_output, live_status], **live_work)  # fmt: skip
        neutral_button.click(live.set_neutral, live_tab, live_note, **quick)
        live_timer.tick(live_idle, live_tab, live_status, concurrency_limit=None, show_progress="hidden")
    return page


def _stop_on_sigterm() -> None:
    """SIGTERM (a service manager, `kill`) stops the server like Ctrl+C, so the work folder is removed."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def launch(cfg: AppConfig, block: bool = True) -> tuple[Any, AppService, str]:
    """Serve the app; returns (page, service, local URL). block=True serves until Ctrl+C or SIGTERM and then
    removes the app's own work folder; block=False returns at once (tests), and the caller stops it with
    page.close() and service.close()."""
    import torch

    from metahead.demo import choose_threads

    torch.set_num_threads(choose_threads(cfg.threads))  # the process is the app's
    service = AppService(cfg)
    print(service.model.describe().replace("**", ""), flush=True)  # which model, also in the terminal
    try:
        page = build_app(service)
        page.queue(default_concurrency_limit=cfg.concurrency)
        if block:
            _stop_on_sigterm()
        _, url, _ = page.launch(
            server_name=cfg.host, server_port=cfg.port, prevent_thread_lock=not block, show_error=True,
            share=False, inbrowser=False, max_file_size=int(cfg.max_upload_mb * MEGABYTE),
            allowed_paths=[str(service.work_dir)], theme=_theme(), css=CSS, footer_links=[],
            run_history=False, enable_monitoring=False, ssr_mode=False, pwa=False, mcp_server=False,
        )  # fmt: skip
    except BaseException:
        service.close()
        raise
    if block:  # launch() returned: the server was stopped
        service.close()
    return page, service, url
