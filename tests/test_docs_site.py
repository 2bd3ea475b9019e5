"""The documentation as a whole: the site builds with `mkdocs build --strict` (no warnings), its API reference covers
every public name, the README is a short map whose every capability is one click from its page, and the version,
the changelog and the zoo cards say what they should.

The site is built once per test session into a temporary folder (never into the repository).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from readme_blocks import DOCS, README, ROOT, bash_lines, pages

import minineo

# At merge, add the packages other branches bring ("minineo.discovery", "minineo.views") with their reference pages.
PUBLIC_MODULES = ["minineo", "minineo.analysis", "minineo.sae", "minineo.errors", "minineo.data.harvest",
                  "minineo.data.evaluation", "minineo.data.corpus", "minineo.data.shards", "minineo.record.cache",
                  "minineo.record.sites"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site's folder: `python -m mkdocs build --strict` (warnings are errors: broken links, missing
    anchors, pages left out of the nav, unresolvable API references)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, ("mkdocs build --strict failed (the docs need the test extra: "
                                    f'pip install -e ".[test]"):\n{result.stdout}\n{result.stderr}')
    return out


def test_the_site_builds_strict_into_a_temporary_folder(site):
    assert (site / "index.html").is_file() and (site / "reference" / "analysis" / "index.html").is_file()
    assert not (ROOT / "site").exists()


def documented_names(site) -> set[str]:
    """Every anchor id of the API reference pages (mkdocstrings gives each object its dotted path as id)."""
    ids = set()
    for html in (site / "reference").rglob("*.html"):
        ids |= set(re.findall(r'id="(minineo[\w.]*)"', html.read_text()))
    return ids


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_the_api_reference_documents_every_public_name(site, module_name):
    """Each name in the module's __all__ (or, without one, each public function and class defined there) has an
    entry in the reference, under the module's path or the path of the module that defines it."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or [
        name for name, obj in vars(module).items() if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module_name]
    ids = documented_names(site)
    missing = []
    for name in names:
        obj = getattr(module, name)
        homes = {f"{module_name}.{name}", f"{getattr(obj, '__module__', module_name)}.{name}"}
        if getattr(minineo, name, None) is obj:  # re-exported at the door: documented on the minineo page
            homes.add(f"minineo.{name}")
        if not homes & ids:
            missing.append(name)
    assert not missing, f"{module_name}: no API reference entry for {missing}"


def nav_pages(nav) -> list[str]:
    out = []
    for item in nav:
        for value in (item.values() if isinstance(item, dict) else [item]):
            out += nav_pages(value) if isinstance(value, list) else [value]
    return out


class _ConfigLoader(yaml.SafeLoader):
    """mkdocs.yml's YAML: mkdocs's own tags (`!relative $config_dir`) read as their plain value."""


_ConfigLoader.add_multi_constructor("!", lambda loader, tag, node: loader.construct_scalar(node))


def mkdocs_config() -> dict:
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_ConfigLoader)


def test_every_docs_page_is_in_the_nav():
    """A page dropped into docs/ is reachable from the site's navigation (uncomment its line in mkdocs.yml)."""
    listed = set(nav_pages(mkdocs_config()["nav"]))
    present = {page.relative_to(DOCS).as_posix() for page in DOCS.rglob("*.md")}
    assert present <= listed, f"docs pages missing from mkdocs.yml's nav: {sorted(present - listed)}"


def readme_without_comments() -> str:
    return re.sub(r"<!--.*?-->", "", README.read_text(), flags=re.S)


def test_the_readme_is_short_and_has_no_history():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "a date in the README: history belongs in the changelog"
    assert not re.search(r"\bissue \d+", text, flags=re.I), "an issue number in the README"


def test_the_readme_links_resolve_and_reach_every_capability_page():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme_without_comments())
    local = [link for link in links if "://" not in link]
    for link in local:
        assert (ROOT / link).exists(), f"README.md links to {link}, which is not there"
    capabilities = next(item["Capabilities"] for item in mkdocs_config()["nav"] if "Capabilities" in item)
    for page in nav_pages(capabilities):
        assert f"docs/{page}" in local, f"README.md's table does not link to docs/{page}"


def test_every_command_in_the_readme_table_runs_on_its_page():
    """The table's one command per capability is a line of a ```bash block on the page it links to, so the page's
    test (test_docs_examples.py) runs it where it can, and a reader finds it explained there."""
    rows = [line for line in readme_without_comments().splitlines() if line.startswith("| ") and "`" in line]
    checked = 0
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        command = re.fullmatch(r"`(.+)`", cells[1])
        page = re.search(r"\]\((docs/[^)]+)\)", cells[2])
        if not (command and page):
            continue
        lines = [re.sub(r"\s+#.*$", "", line) for _, line in bash_lines(ROOT / page.group(1))]
        assert command.group(1) in lines, f"`{command.group(1)}` is not a bash line of {page.group(1)}"
        checked += 1
    assert checked >= 10


def install_words(command: str) -> list[str]:
    """`python -m pip install --quiet "torch==2.13.0" -e ".[test]"` -> ['torch==2.13.0', '-e', '.[test]']."""
    words = [word.strip('"') for word in command.split()]
    words = words[words.index("install") + 1:]
    return [word for word in words if not word.startswith("--")]


def test_ci_installs_and_tests_exactly_what_the_readme_says():
    setup = next(line for _, line in bash_lines(README) if line.startswith("pip install"))
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    ci_install = next(line for line in ci if line.startswith("python -m pip install"))
    assert install_words(ci_install) == install_words(setup)
    readme_tests = [line for _, line in bash_lines(README) if line.startswith("python -m pytest")]
    assert readme_tests == ["python -m pytest -q"] and ci[-1] == "python -m pytest -q"


def extra_requirements(extra: str) -> set[str]:
    """The installed metadata's requirements of one extra: {'mkdocs-material>=9.5', ...}."""
    requires = importlib.metadata.metadata("minineo").get_all("Requires-Dist") or []
    return {req.split(";")[0].strip() for req in requires if re.search(rf"extra == ['\"]{extra}['\"]", req)}


def test_the_test_extra_brings_the_docs_tools():
    docs = extra_requirements("docs")
    assert docs <= extra_requirements("test"), "reinstall (pip install -e .) if pyproject.toml changed"
    assert {req.split(">")[0] for req in docs} == {"mkdocs-material", "mkdocstrings-python"}


def test_the_version_is_written_once_and_agrees_everywhere():
    pyproject = (ROOT / "pyproject.toml").read_text()
    project_table = pyproject.split("\n[project]\n")[1].split("\n[")[0]
    assert not re.search(r"^version\s*=", project_table, flags=re.M), "the version is written in minineo/__init__.py only"
    assert re.search(r'^dynamic = \["version"\]', project_table, flags=re.M)
    assert re.search(r'^version = \{ attr = "minineo.__version__" \}', pyproject, flags=re.M)
    assert importlib.metadata.version("minineo") == minineo.__version__, "reinstall: pip install -e ."
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert released and released[0] == minineo.__version__


def git_renames() -> list[tuple[str, str]]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the renames come from git's history")
    log = subprocess.run(["git", "log", "--diff-filter=R", "-M", "--name-status", "--format=", "--", "minineo"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [tuple(line.split("\t")[1:3]) for line in log.splitlines() if line.startswith("R")]


def module_path(path: str) -> str:
    """minineo/forward/attention.py -> minineo.forward.attention; minineo/weights/__init__.py -> minineo.weights."""
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def test_the_changelog_lists_every_moved_module_with_its_new_place():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    rows = dict(re.findall(r"^\| `([\w.]+)`[^|]*\| `([\w.]+)`", changelog, flags=re.M))
    for old, new in git_renames():
        old_module, new_module = module_path(old), module_path(new)
        if old_module.count(".") == 1:  # a top-level module (or package) moved
            assert rows.get(old_module) == new_module, f"CHANGELOG.md: {old_module} -> {new_module} is not listed"
        else:  # a module inside a moved package: listed with its package
            package = old_module.rsplit(".", 1)[0]
            assert new_module.startswith(rows.get(package, "?")), f"CHANGELOG.md: {old_module} -> {new_module}"
    for new in rows.values():
        importlib.import_module(new)  # every new place exists


def test_the_zoo_cards_and_the_zoo_page_say_what_reproduces():
    from minineo.zoo.cards import REPRODUCES

    for name in ("tiny-neo", "tiny-gpt2"):
        assert REPRODUCES in (ROOT / "minineo" / "zoo" / name / "README.md").read_text(), name
    page = " ".join((DOCS / "zoo.md").read_text().split())
    assert "Behaviour reproduces on any machine; bits only on the same kind of CPU." in page
    assert "AVX512" in page and "AVX512" in REPRODUCES


def test_no_page_is_history_by_accident():
    """Every page but the two history pages is about what minineo does now: no 'issue N' headings."""
    for page in pages():
        if page.name in ("benchmarks-history.md", "changelog.md"):
            continue
        headings = [line for line in page.read_text().splitlines() if line.startswith("#")]
        assert not [h for h in headings if re.search(r"\bissue \d+", h, flags=re.I)], page


def test_each_benchmark_shows_its_latest_table_with_machine_versions_date_and_load():
    """benchmarks/README.md: how to run, then per benchmark one `Latest:` line (date, torch version, quiet or
    loaded) above its table; the CUDA section says plainly that it has not run yet."""
    text = (ROOT / "benchmarks" / "README.md").read_text()
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    assert sections[0].startswith("How to run")
    measured = [s for s in sections[1:] if not s.startswith("CUDA")]
    assert len(measured) >= 8
    for section in measured:
        title = section.splitlines()[0]
        latest = re.search(r"^Latest: (.*?)(?:\n\n|$)", section, flags=re.M | re.S)
        assert latest, f"benchmarks/README.md, {title}: no 'Latest:' line"
        stamp = " ".join(latest.group(1).split())
        assert re.search(r"20\d\d-\d\d-\d\d", stamp) and "torch 2." in stamp and "CPU" in stamp, (title, stamp)
        assert re.search(r"\*\*(quiet|heavily loaded)\*\*", stamp), (title, stamp)
        assert "\n|" in section, f"{title}: no table"
    cuda = next(s for s in sections if s.startswith("CUDA"))
    assert "Not yet run on a GPU" in cuda
