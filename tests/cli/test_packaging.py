"""Package metadata: distinctive names, one version pinned across the three, and
the license text shipped with each."""

from __future__ import annotations

import ast
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

import router_cli
import router_core
import router_server

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "router-core": router_core.DISTRIBUTION,
    "router-server": router_server.DISTRIBUTION,
    "router-cli": router_cli.DISTRIBUTION,
}


def project(directory: str) -> dict[str, Any]:
    with (ROOT / "packages" / directory / "pyproject.toml").open("rb") as f:
        data: dict[str, Any] = tomllib.load(f)["project"]
    return data


@pytest.mark.parametrize(("directory", "distribution"), PACKAGES.items())
def test_names_are_distinctive_and_match_the_code(directory: str, distribution: str) -> None:
    name = project(directory)["name"]
    assert name == distribution
    # "router-cli" on the package index is an unrelated project.
    assert name.startswith("inference-router-")
    assert version(name) == project(directory)["version"]  # installed under that name


def test_one_version_and_exact_pins_between_the_three() -> None:
    versions = {project(d)["version"] for d in PACKAGES}
    assert len(versions) == 1
    (shared,) = versions
    names = set(PACKAGES.values())
    for directory in PACKAGES:
        ours = [d for d in project(directory)["dependencies"] if d.split("=")[0] in names]
        assert all(d.endswith(f"=={shared}") for d in ours), ours
    assert [d.split("==")[0] for d in project("router-cli")["dependencies"][:2]] == [
        router_core.DISTRIBUTION, router_server.DISTRIBUTION,
    ]  # fmt: skip


@pytest.mark.parametrize("directory", PACKAGES)
def test_each_package_ships_the_apache_license(directory: str) -> None:
    licence = (ROOT / "LICENSE").read_text()
    assert licence.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert project(directory)["license"] == "Apache-2.0"
    assert project(directory)["license-files"] == ["LICENSE"]
    assert (ROOT / "packages" / directory / "LICENSE").read_text() == licence


def test_nox_reinstalls_the_packages_by_their_names() -> None:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    assigned = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert ast.literal_eval(assigned["DISTRIBUTIONS"]) == list(PACKAGES.values())
