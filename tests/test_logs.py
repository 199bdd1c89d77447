"""Run logging: the progress bar shows the time breakdown."""

from proximal.logs import UPDATE_TAGS, RunLogger


def update_scalars(**values):
    return {name: values.get(name, 0.5) for name in UPDATE_TAGS}


def test_progress_bar_shows_the_time_breakdown(tmp_path):
    logger = RunLogger(tmp_path, 0, 1000, quiet=True)
    logger.episodes([(10, 30.0, 30), (20, 10.0, 10)])
    logger.update(256, 1, update_scalars(SPS=1234.4, env_seconds=0.5, inference_seconds=0.25,
                                         learn_seconds=0.2, other_seconds=0.05))
    assert logger.bar.postfix == "SPS 1234 | return 20.0 | env 50% inf 25% learn 20% other 5%"
    logger.close()
