"""Each config/invalid/NAME.yaml holds one mistake; NAME.expected holds the exact message lines."""
from pathlib import Path

import pytest

from proxy.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
INVALID = ROOT / "config" / "invalid"
CASES = sorted(p.stem for p in INVALID.glob("*.yaml"))


def test_there_are_enough_cases_and_each_has_its_expected_file():
    assert len(CASES) >= 15
    for name in CASES:
        assert (INVALID / f"{name}.expected").is_file(), name
    for expected in INVALID.glob("*.expected"):
        assert (INVALID / f"{expected.stem}.yaml").is_file(), expected


@pytest.mark.parametrize("name", CASES)
def test_invalid_config_message(name, monkeypatch):
    monkeypatch.chdir(ROOT)  # messages name the file as given: config/invalid/NAME.yaml
    rel = f"config/invalid/{name}.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(rel)
    expected = (INVALID / f"{name}.expected").read_text(encoding="utf-8").rstrip("\n")
    assert str(info.value) == expected
    assert info.value.problems == expected.split("\n")
    for line in info.value.problems:
        # FILE:LINE[:COL]: ... on one line each; never a traceback or a dumped instance
        assert line.startswith(rel + ":")
        assert line.split(":")[1].isdigit()
        assert "Traceback" not in line and "{'" not in line


@pytest.mark.parametrize("name", CASES)
def test_problems_are_sorted_by_line(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError) as info:
        load_config(f"config/invalid/{name}.yaml")
    lines = [int(p.split(":")[1]) for p in info.value.problems]
    assert lines == sorted(lines)
