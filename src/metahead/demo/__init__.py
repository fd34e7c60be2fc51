"""`metahead demo`: the whole pipeline on a synthetic corpus, on two CPU cores, shown on one HTML page.

    from metahead.demo import DemoSettings, run_demo
    result = run_demo("demo-output", DemoSettings.full())      # or DemoSettings.quick()
    print(result.page)                                         # demo-output/index.html

Stages, each through the layers' Python APIs (the same calls the CLI commands make):

    1 corpus    synthetic talking heads (data.synthetic), split by identity; plus driving clips of two
                test people: their first videos continued with motion no stage has seen
                                                                    -> OUT/work/corpus, OUT/work/drivers
    2 train     meta-learning of E, G, P, D, bounded by time (training.meta)  -> OUT/work/run/model.pt
    3 avatar    an unseen (test) person from T = 8 frames of one video: fine-tuned (FT) and
                feed-forward (FF) (avatar.Avatar.create)                      -> OUT/work/person.*.avatar
    4 animate   the avatar driven by its own video's held-out continuation (landmarks as they are) and
                by another person (retargeted onto the avatar's face)         -> OUT/videos/*.mp4, *.gif
    5 evaluate  the paper's protocol on a few test videos: FT, FF and the nearest-shot and from-scratch
                baselines (evaluation.protocol)                                -> OUT/work/evaluation
    6 page      OUT/index.html: videos, sample grid, metrics table, training and fine-tuning curves

Every finished stage writes OUT/work/<stage>.done.json with its settings and the digests of the stages
it used. A rerun reuses a stage whose record matches (and whose outputs exist) and redoes it — and so
every stage after it — when its settings changed. An interrupted stage continues where the layer below
can (the corpus keeps finished videos, training resumes from its last checkpoint, the evaluation keeps
finished jobs). See README.md ("make demo").

pipeline.py  run_demo: the stages in order, each reused when its record matches; `metahead demo`
settings.py  DemoSettings (full, quick), DemoResult, the model config they imply
stages.py    stages 1-5: corpus, train, avatar, animate, evaluate
page.py      stage 6: the HTML page
records.py   the stage records (work/<stage>.done.json) and stage folders' settings markers
threads.py   how many torch threads to use (choose_threads; the app uses it too)
"""

from metahead.demo.page import metrics_table_html
from metahead.demo.pipeline import main_for_cli, run_demo
from metahead.demo.records import STAGES, WORK
from metahead.demo.settings import DemoResult, DemoSettings, experiment_config
from metahead.demo.threads import choose_threads, idle_cores

__all__ = [
    "STAGES",
    "WORK",
    "DemoResult",
    "DemoSettings",
    "choose_threads",
    "experiment_config",
    "idle_cores",
    "main_for_cli",
    "metrics_table_html",
    "run_demo",
]
