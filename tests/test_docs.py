"""The documentation: the site builds without warnings, the details page is the registry's rendering, and every
relative link of the README and the pages points at a file of the repository."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from proximal.details import DETAILS, markdown

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_details_page_is_the_registry_rendering():
    page = (DOCS / "details.md").read_text()
    assert page == markdown(), "docs/details.md is stale: run `python scripts/render_details.py`"


def test_every_detail_says_what_it_does_what_off_means_and_why():
    for d in DETAILS:
        assert d.does and d.off_means and d.why, f"{d.id}: fill does, off_means and why in proximal/details.py"
    page = markdown()
    # one section per detail, with its texts, in the registry's order
    positions = [page.index(f"\n### {d.id}\n") for d in DETAILS]
    assert positions == sorted(positions)
    gae = page[page.index("\n### core.gae\n"):page.index("\n### core.minibatches\n")]
    assert "- **Off means:** λ = 1" in gae and "`proximal/advantages.py:compute_advantages`" in gae


def test_mkdocs_build_strict(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True)
    assert "No module named mkdocs" not in result.stderr, 'mkdocs is missing: pip install -e ".[dev]"'
    assert result.returncode == 0, result.stderr
    details = (tmp_path / "details" / "index.html").read_text()
    assert all(f'id="{d.id.replace(".", "")}"' in details for d in DETAILS), "one anchor per detail"
    assert (tmp_path / "benchmarks" / "results" / "cartpole_curves.png").is_file(), "the plots are served"


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", ["README.md", *sorted(str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md"))])
def test_relative_links_stay_inside_the_repository(page):
    path = ROOT / page
    text = path.read_text()
    assert "shared/" not in text, f"{page} points outside the repository"
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file = (path.parent / target.split("#")[0]).resolve()
        assert file.is_relative_to(ROOT) and file.exists(), f"{page}: broken link {target}"


def test_no_source_file_points_outside_the_repository():
    """Users clone the repository alone: code, tests and scripts name no file outside it."""
    outside = re.compile(r"\.\./shared|DETAILS\.md|ENVIRONMENT\.md")
    files = [p for folder in ("proximal", "tests", "benchmarks", "scripts", "examples") if (ROOT / folder).is_dir()
             for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".sh", ".md") and p != Path(__file__)]
    assert files
    offenders = [str(p.relative_to(ROOT)) for p in files if outside.search(p.read_text())]
    assert not offenders, f"these files point outside the repository: {offenders}"


# a path of the repository in a code span: a folder (`docs/benchmarks/results/`) or a file (`tests/test_update.py`),
# not an env id such as `proximal/CartPoleNoVelocity-v1`, nor a file "the former" names (since removed)
REPO_PATH = re.compile(r"(?<!former )`((?:proximal|tests|benchmarks|docs|scripts|examples)/"
                       r"(?:[\w.-]+/)*(?:[\w-]+\.\w+)?)`")


@pytest.mark.parametrize("page", ["README.md", *sorted(str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md"))])
def test_paths_named_in_code_spans_exist(page):
    """Links are checked above; a path written as code is not a link, so a moved file leaves it stale."""
    missing = [p for p in REPO_PATH.findall((ROOT / page).read_text()) if not (ROOT / p).exists()]
    assert not missing, f"{page} names paths the repository does not have: {missing}"


def test_design_layout_lists_every_module():
    layout = (DOCS / "design.md").read_text().split("## Layout", 1)[1]
    modules = [str(p.relative_to(ROOT / "proximal")) for p in (ROOT / "proximal").rglob("*.py")
               if not p.name.startswith("__")]
    missing = [m for m in modules if not re.search(rf"(^|\s){re.escape(m)}\s", layout, re.M)]
    assert not missing, f"docs/design.md's layout leaves out {missing}"
