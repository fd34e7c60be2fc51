"""`metahead app`: a local web page to make avatars and drive them (docs/app.md).

service.py  the work, without a page: checks of uploads, making avatars, animating, CSIM (AppService)
ui.py       the Gradio page and its launch (imports gradio; nothing else in metahead does)

from metahead.app import AppConfig, launch
launch(AppConfig(model=Path("runs/demo/model.pt"), port=7860))
"""

from __future__ import annotations

from typing import Any

from metahead.app.service import AppConfig, AppInputError, AppService


def launch(cfg: AppConfig, block: bool = True) -> Any:
    """Serve the app (ui.launch; gradio is imported only here)."""
    from metahead.app.ui import launch as launch_ui

    return launch_ui(cfg, block=block)


__all__ = ["AppConfig", "AppInputError", "AppService", "launch"]
