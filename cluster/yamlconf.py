"""YAML config files: a missing or malformed file is one line naming it (keys are checked by the configs' own
``ConfigBase.from_dict``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load_yaml(path: str | Path, what: str) -> Any:
    """Parse a YAML file; a missing or malformed file is a one-line error naming it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{what} {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
