"""The one config convention of bex: frozen dataclasses on :class:`ConfigBase`, fields declared with :func:`param`.

Every config a user can write — learners, explorers, k-NN rewards, collection
runs and grids, trials and sweeps — is a frozen dataclass derived from
:class:`ConfigBase`.  Each field is declared with :func:`param`, which stores its
docstring and its allowed values (a numeric range or a list of choices).
``from_dict`` rejects unknown keys, values of the wrong type (``"5e4"`` for an
integer, ``true`` for a number) and values out of range with a one-line
``ValueError`` that names the class, the key, the value and what is allowed;
constraints between fields live in the class's :meth:`ConfigBase.check`.

Presets: a class may define ``_PRESETS = {"small": {...}, "paper": {...}}``;
the tables of a class and its bases are merged (the subclass wins), keys the
class does not have are ignored, and ``from_dict({"preset": "small", ...})``
starts from the named preset.  Presets are always named :data:`PRESET_NAMES`.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

#: The preset names every config with presets offers (``paper``: the reference sizes; ``small``: a CPU laptop).
PRESET_NAMES = ("small", "paper")


def param(default: Any = dataclasses.MISSING, doc: str = "", *, lo: float | None = None, hi: float | None = None,
          lo_open: bool = False, hi_open: bool = False, choices: Sequence[Any] | None = None,
          default_factory: Any = dataclasses.MISSING):
    """Declare a config field with its docstring and its allowed values.

    ``lo``/``hi`` bound numeric fields (closed unless ``lo_open``/``hi_open``);
    ``choices`` lists the allowed values.  ``None`` is allowed exactly for fields
    annotated ``X | None``.  Mutable defaults (lists, dicts) use ``default_factory``.
    """
    md = {"doc": doc, "lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open,
          "choices": tuple(choices) if choices else None}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=md)
    return field(default=default, metadata=md)


def fmt_range(md: Mapping[str, Any]) -> str:
    """The allowed values of a field as the error messages write them."""
    if md.get("choices"):
        return "one of " + ", ".join(repr(c) for c in md["choices"])
    lo, hi = md.get("lo"), md.get("hi")
    left = "(" if md.get("lo_open") or lo is None else "["
    right = ")" if md.get("hi_open") or hi is None else "]"
    return f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"


def _allowed_types(tp: Any) -> tuple[tuple[type, ...], bool]:
    """(concrete types, None allowed) of an annotation such as ``float | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        return tuple(typing.get_origin(a) or a for a in args if a is not type(None)), type(None) in args
    return (typing.get_origin(tp) or tp,), False


def _type_names(allowed: tuple[type, ...]) -> str:
    return "/".join(getattr(t, "__name__", str(t)) for t in allowed)


@dataclass(frozen=True)
class ConfigBase:
    """Base of every config: strict ``from_dict``/``to_dict``, per-field validation, presets."""

    _PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Other accepted spellings of keys in ``from_dict`` (e.g. URLB's names): ``{alias: field}``.
    _ALIASES: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            self.check_value(f.name, getattr(self, f.name))  # from_dict/preset store the coerced values
        self.check()

    def check(self) -> None:
        """Constraints between fields (a subclass overrides it); raise a one-line ``ValueError``."""

    @classmethod
    def _field(cls, key: str) -> dataclasses.Field:
        for f in dataclasses.fields(cls):
            if f.name == key:
                return f
        raise ValueError(f"{cls.__name__}: unknown key {key!r}; allowed keys: "
                         + ", ".join(f.name for f in dataclasses.fields(cls)))

    @classmethod
    def check_value(cls, key: str, value: Any) -> Any:
        """Check ``value`` for field ``key`` (type, range, choices); return it coerced.

        ints are accepted for float fields (and converted); bools are never
        accepted as numbers; strings are never converted to numbers.  Raises a
        one-line ``ValueError`` naming the class, key, value and what is allowed.
        """
        f = cls._field(key)
        md = f.metadata
        allowed, none_ok = _allowed_types(typing.get_type_hints(cls)[key])
        name = f"{cls.__name__}.{key}"
        if Any in allowed:
            return value
        if value is None:
            if none_ok:
                return None
            raise ValueError(f"{name}=None not allowed; expected {_type_names(allowed)}")
        if isinstance(value, bool) and bool not in allowed:
            raise ValueError(f"{name}={value!r} has type bool; expected {_type_names(allowed)}")
        if float in allowed and isinstance(value, (int, np.integer, np.floating)) and not isinstance(value, bool):
            value = float(value)
        if int in allowed and isinstance(value, np.integer):
            value = int(value)
        if tuple in allowed and isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, allowed):
            raise ValueError(f"{name}={value!r} has type {type(value).__name__}; expected {_type_names(allowed)}")
        if md.get("choices") and value not in md["choices"]:
            raise ValueError(f"{name}={value!r} not allowed; must be {fmt_range(md)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = md.get("lo"), md.get("hi")
            bad = isinstance(value, float) and not math.isfinite(value)
            bad |= lo is not None and (value <= lo if md["lo_open"] else value < lo)
            bad |= hi is not None and (value >= hi if md["hi_open"] else value > hi)
            if bad:
                raise ValueError(f"{name}={value!r} is out of range: allowed {fmt_range(md)}")
        return value

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        """The preset tables of this class and its bases, merged (empty when it has none)."""
        merged: dict[str, dict[str, Any]] = {}
        for klass in reversed(cls.__mro__):
            for name, vals in klass.__dict__.get("_PRESETS", {}).items():
                merged.setdefault(name, {}).update(vals)
        return merged

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None = None, where: str | None = None):
        """Build a config from a plain mapping; unknown keys and bad values raise a one-line ``ValueError``.

        A ``"preset"`` key (classes with presets only) selects the base values the
        other keys override.  ``where`` (a file name, ``runs[2]``) prefixes errors.
        """
        if d is not None and not isinstance(d, Mapping):
            raise ValueError(f"{where or cls.__name__}: expected a mapping of keys, got {d!r}")
        d = {cls._ALIASES.get(k, k): v for k, v in (d or {}).items()}
        known = {f.name for f in dataclasses.fields(cls)}
        preset = d.pop("preset", None) if cls.presets() else None
        unknown = sorted(set(d) - known, key=str)
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        try:
            if unknown:
                raise ValueError(f"{cls.__name__}: unknown key(s) {unknown}; allowed keys: "
                                 f"{', '.join(sorted(known | ({'preset'} if cls.presets() else set())))}")
            if missing and preset is None:
                raise ValueError(f"{cls.__name__}: missing required key(s) {missing}")
            if preset is not None:
                return cls.preset(preset, **d)
            return cls(**{k: cls.check_value(k, v) for k, v in d.items()})
        except (TypeError, ValueError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"{where}: {msg}" if where else msg) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        """A copy with ``changes`` applied and validated (frozen configs are never mutated)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def preset(cls, name: str, **overrides):
        """The configuration of preset ``name`` (:data:`PRESET_NAMES`) with ``overrides`` applied."""
        table = cls.presets()
        if name not in table:
            raise ValueError(f"{cls.__name__}: unknown preset {name!r}; allowed: "
                             f"{', '.join(n for n in PRESET_NAMES if n in table) or 'none'}")
        known = {f.name for f in dataclasses.fields(cls)}
        base = {k: v for k, v in table[name].items() if k in known}
        return cls(**{k: cls.check_value(k, v) for k, v in {**base, **overrides}.items()})

    @classmethod
    def default(cls, key: str) -> Any:
        """Field ``key``'s default value (a command-line option left unset takes it from here)."""
        f = cls._field(key)
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        if f.default is dataclasses.MISSING:
            raise ValueError(f"{cls.__name__}.{key} has no default")
        return f.default

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


def load_yaml(path, what: str) -> Any:
    """Parse a YAML config file; a path that is missing, a directory, unreadable, empty or not YAML is one line
    naming it (keys are checked by the configs' own :meth:`ConfigBase.from_dict`)."""
    from pathlib import Path

    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a directory; give a YAML file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{what} {str(path)!r} is not a text file (not UTF-8)") from None
    except OSError as e:
        raise ValueError(f"{what} {str(path)!r} cannot be read: {e.strerror or type(e).__name__}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{what} {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        raise ValueError(f"{what} {str(path)!r} is empty")
    return data
