"""Strict YAML configs: unknown keys and missing required keys fail with one line naming them."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml


def strict(cls, d: Any, where: str):
    """Build dataclass ``cls`` from mapping ``d``, rejecting unknown or missing keys."""
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a mapping, got {type(d).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(names)}")
    try:
        return cls(**d)
    except TypeError as e:  # a required key is missing
        raise ValueError(f"{where}: {e}".replace("__init__() ", "")) from None


def load_yaml(path: str | Path, what: str) -> Any:
    """Parse a YAML file; a missing or malformed file is a one-line error naming it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{what} {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
