"""The console's progress line."""

from dsgan.tracking import progress_line

METRICS = {
    "kimg": 12.3,
    "d_loss": 1.5,
    "d_loss_real": 0.75,
    "d_loss_fake": 0.75,
    "d_real_mean": 0.1,
    "d_fake_mean": -0.1,
    "images_per_second": 1234.4,
}


def test_progress_line_fields_and_long_eta():
    line = progress_line({**METRICS, "g_loss": 0.25}, 500, 1000, eta_seconds=100_000)
    assert line == (
        "it 500/1000 (50%) | kimg 12.3 | D 1.500 (real 0.750 fake 0.750) G 0.250 | D(x) 0.10 D(G(z)) -0.10 | "
        "1234 img/s | ETA 27:46:40"
    )


def test_progress_line_without_a_g_step():
    assert " G - | " in progress_line(METRICS, 2, 1000, eta_seconds=59.6)
    assert progress_line(METRICS, 2, 1000, eta_seconds=59.6).endswith("ETA 0:01:00")


def test_resumed_log_drops_the_abandoned_records(tmp_path, caplog):
    """A run resumed from iteration 4 redoes iterations 5..: records past 4 (and a torn last line) are dropped."""
    import json

    from dsgan.config import Wandb
    from dsgan.tracking import METRICS_FILE, Tracker

    lines = [json.dumps({"iteration": i, "d_loss": 1.0}) for i in (2, 4, 6, 8)] + ['{"iteration": 1']
    (tmp_path / METRICS_FILE).write_text("\n".join(lines))
    tracker = Tracker(Wandb(mode="disabled"), tmp_path, {}, is_main=True, start_iteration=4)
    tracker.log({"d_loss": 2.0}, 6)
    tracker.close()
    records = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [(r["iteration"], r["d_loss"]) for r in records] == [(2, 1.0), (4, 1.0), (6, 2.0)]
    assert "dropped 3 record(s) after iteration 4" in caplog.text


def test_progress_line_shows_ada_p():
    assert " D(G(z)) -0.10 | aug p 0.125 | 1234 img/s" in progress_line({**METRICS, "aug/p": 0.125}, 2, 10, 1.0)
