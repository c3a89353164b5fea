"""Where the local launcher finds its service folders: never from where it is installed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from shared_data import REPO_ROOT

from umlip_orchestrator.launcher import LauncherError, read_service_list
from umlip_orchestrator.service_descriptions import (
    SERVICES_DIR_VARIABLE,
    ServiceDescriptionError,
    find_services_dir,
)


def checkout_with(tmp_path: Path, *names: str) -> Path:
    """A tree holding ``services/<name>/service.toml`` copied from the repository's."""
    for name in names:
        folder = tmp_path / "services" / name
        folder.mkdir(parents=True)
        shutil.copy(REPO_ROOT / "services" / name / "service.toml", folder)
    return tmp_path


def test_found_at_or_above_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SERVICES_DIR_VARIABLE, raising=False)
    root = checkout_with(tmp_path, "emt")
    deep = root / "results" / "run-1"
    deep.mkdir(parents=True)
    assert find_services_dir(deep) == (root / "services").resolve()
    monkeypatch.chdir(deep)
    assert sorted(read_service_list()) == ["emt"]
    assert read_service_list()["emt"].project == (root / "services" / "emt").resolve()


def test_a_services_folder_without_descriptions_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SERVICES_DIR_VARIABLE, raising=False)
    root = checkout_with(tmp_path, "chgnet")
    inner = root / "work"
    (inner / "services" / "notes").mkdir(parents=True)  # a services/ of something else
    assert find_services_dir(inner) == (root / "services").resolve()


def test_the_variable_overrides_the_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = checkout_with(tmp_path / "a", "emt", "mace")
    monkeypatch.setenv(SERVICES_DIR_VARIABLE, str(elsewhere / "services"))
    assert find_services_dir(REPO_ROOT) == (elsewhere / "services").resolve()
    monkeypatch.chdir(REPO_ROOT)
    assert sorted(read_service_list()) == ["emt", "mace"]
    monkeypatch.setenv(SERVICES_DIR_VARIABLE, str(tmp_path / "missing"))
    with pytest.raises(ServiceDescriptionError, match="is not a folder"):
        find_services_dir()


def test_nothing_found_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SERVICES_DIR_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LauncherError) as raised:
        read_service_list()
    message = str(raised.value)
    assert str(tmp_path.resolve()) in message
    assert SERVICES_DIR_VARIABLE in message and "--service NAME=HOST:PORT" in message
