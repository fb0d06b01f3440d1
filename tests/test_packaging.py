import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = project["dependencies"] + extras["dev"] + extras["book"] + extras["eval"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = [p for p in pip if not p.startswith("-e")]
    # same packages with the same version bounds (duplicates across extras count once)
    assert sorted(set(listed)) == sorted(set(wanted))


def test_readme_and_ci_give_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:", makefile, re.M) and re.search(r"^book:", makefile, re.M)


def test_every_subpackage_is_packaged():
    """setuptools ships only the packages listed: a subpackage left out (zephyr_utils.toy) would be
    missing from an installed wheel."""
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = [".".join(p.parent.relative_to(ROOT).parts) for p in sorted((ROOT / "zephyr_utils").rglob("__init__.py"))]
    assert "zephyr_utils.toy" in found and sorted(listed) == sorted(found)


def test_recipes_are_shipped_as_package_data():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "recipes/*/*.yaml" in project["tool"]["setuptools"]["package-data"]["zephyr_utils"]
    assert len(list((ROOT / "zephyr_utils" / "recipes").glob("*/*.yaml"))) >= 13


def test_no_trust_remote_code_by_default():
    for path in (ROOT / "zephyr_utils").rglob("*.py"):
        assert not re.search(r"trust_remote_code\s*[:=]\s*(bool\s*=\s*)?True", path.read_text()), path
