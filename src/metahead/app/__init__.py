"""`metahead app`: a local web page to make avatars and drive them (docs/app.md).

service.py       the work, without a page: making avatars, animating, CSIM (AppService)
settings.py      AppConfig: the app's settings
model_lookup.py  the model: `--model`, or the one `make demo` trains; loaded once (ModelInfo)
uploads.py       checks of uploaded photos and videos (AppInputError)
results.py       what requests return (AvatarResult, AnimationResult), CSIM
ui.py            the Gradio page and its launch (imports gradio; nothing else in metahead does)
live.py          the Live tab's sessions

from metahead.app import AppConfig, launch
launch(AppConfig(model=Path("runs/demo/model.pt"), port=7860))
"""

from __future__ import annotations

from typing import Any

from metahead.app.service import AppService
from metahead.app.settings import AppConfig
from metahead.app.uploads import AppInputError


def launch(cfg: AppConfig, block: bool = True) -> Any:
    """Serve the app (ui.launch; gradio is imported only here)."""
    from metahead.app.ui import launch as launch_ui

    return launch_ui(cfg, block=block)


__all__ = ["AppConfig", "AppInputError", "AppService", "launch"]
