"""proximal plot's output file (written whole or not at all; one error naming the path where it cannot be) and
its runs (each counted once, however often it is named)."""

import errno
import json
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from proximal.config import preset
from proximal.errors import UserError
from proximal.plot import figure_path, plot_runs

PNG = b"\x89PNG\r\n\x1a\n"


def fake_run(path: Path, seed: int) -> Path:
    """A run directory as plot reads it: the config and a few episodes."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(dict(preset("classic").to_dict(), seed=seed)))
    rows = "".join(f"{step},{step / 10 + seed},20\n" for step in range(100, 1100, 100))
    (path / "episodes.csv").write_text("global_step,episodic_return,episodic_length\n" + rows)
    return path


@pytest.fixture
def runs(tmp_path):
    return fake_run(tmp_path / "runs" / "seed1", 1), fake_run(tmp_path / "runs" / "seed2", 2)


def full_disk_savefig(self, fname, **kwargs):
    """Figure.savefig on a disk that fills up half way through the file."""
    Path(fname).write_bytes(PNG)
    raise OSError(errno.ENOSPC, "No space left on device", str(fname))


def test_a_full_disk_is_one_error_and_leaves_the_old_file(runs, tmp_path, monkeypatch):
    output = tmp_path / "out" / "curves.png"
    output.parent.mkdir()
    output.write_bytes(b"the previous figure")
    monkeypatch.setattr(Figure, "savefig", full_disk_savefig)
    with pytest.raises(UserError, match="No space left on device") as caught:
        plot_runs(list(runs), output)
    assert str(output) in str(caught.value) and "free space" in str(caught.value)
    assert output.read_bytes() == b"the previous figure"
    assert [p.name for p in output.parent.iterdir()] == ["curves.png"], "no partial file left"


def test_a_parent_that_is_a_file_is_one_error(runs, tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(UserError, match="'.*afile' is a file, not a directory") as caught:
        plot_runs(list(runs), tmp_path / "afile" / "x.png")
    assert str(tmp_path / "afile" / "x.png") in str(caught.value)
    assert (tmp_path / "afile").read_text() == ""


def test_the_figure_is_written_whole_under_new_directories(runs, tmp_path):
    output = tmp_path / "new" / "dirs" / "curves.png"
    assert plot_runs(list(runs), output) == {"CartPole-v1 (classic)": 2}
    assert output.read_bytes()[:8] == PNG
    assert [p.name for p in output.parent.iterdir()] == ["curves.png"], "no temporary file left"


def test_an_output_without_suffix_is_a_png_whose_name_figure_path_gives(runs, tmp_path):
    output = tmp_path / "curvesnosuffix"
    plot_runs(list(runs), output)
    assert figure_path(output) == tmp_path / "curvesnosuffix.png"
    assert figure_path(output).read_bytes()[:8] == PNG and not output.exists()
    assert figure_path(tmp_path / "c.svg") == tmp_path / "c.svg"


def test_a_run_named_twice_is_one_seed(runs, tmp_path, monkeypatch):
    seed1, seed2 = runs
    monkeypatch.chdir(tmp_path)
    again = Path("runs") / ".." / "runs" / "seed1"  # overlapping globs, another spelling of the same directory
    with pytest.warns(UserWarning, match="given again") as caught:
        groups = plot_runs([seed1, seed2, seed1, again], tmp_path / "c.png")
    assert groups == {"CartPole-v1 (classic)": 2}
    message = str(caught[0].message)
    assert f"'{seed1}'" in message and f"'{again}' (the run '{seed1}')" in message


def test_two_runs_of_one_seed_are_plotted_with_a_warning(runs, tmp_path):
    seed1, _ = runs
    rerun = fake_run(tmp_path / "runs" / "seed1-again", 1)
    with pytest.warns(UserWarning, match="has the seed 1 of") as caught:
        groups = plot_runs([seed1, rerun], tmp_path / "c.png")
    assert groups == {"CartPole-v1 (classic)": 2}
    assert f"'{rerun}' has the seed 1 of '{seed1}'" in str(caught[0].message)


def test_an_output_through_a_link_writes_its_target_and_keeps_its_permissions(runs, tmp_path):
    target = tmp_path / "shared" / "curves.png"
    target.parent.mkdir()
    target.write_bytes(b"old")
    target.chmod(0o640)
    link = tmp_path / "link.png"
    link.symlink_to(target)
    plot_runs(list(runs), link)
    assert link.is_symlink() and target.read_bytes()[:8] == PNG
    assert target.stat().st_mode & 0o777 == 0o640
