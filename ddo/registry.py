"""Name -> factory registries. Unknown names fail at once with the list of known ones."""
from __future__ import annotations

from typing import Any, Callable


class UnknownKeyError(KeyError):
    """An unknown registry key. ``str()`` is one line naming the known keys."""

    def __init__(self, kind: str, key: str, known: list[str]):
        self.kind, self.key, self.known = kind, key, known
        super().__init__(key)

    def __str__(self) -> str:
        return f"unknown {self.kind} {self.key!r}; known: {', '.join(self.known) or '(none)'}"


class DuplicateKeyError(ValueError):
    pass


class Registry:
    """Maps string keys to factories and remembers which plugin registered each."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._providers: dict[str, str] = {}
        self._requires: dict[str, dict[str, tuple]] = {}
        self._defaults: dict[str, dict[str, Any]] = {}

    def register(self, key: str, factory: Any, provider: str = "?", requires: dict | None = None,
                 defaults: dict | None = None) -> None:
        """``requires``: configuration values the component works with, ``{config key: allowed values}``
        (for example ``{"parameterization": ("x0", "v")}``); checked by :func:`ddo.options.validate`.
        ``defaults``: configuration values the component is best used with, ``{config key: value}``
        (for example a conditioning key's ``{"parameterization": "x0"}``); a run that selects it and does
        not set those keys gets them (:func:`ddo.options.component_defaults`)."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"{self.kind} keys must be non-empty strings, got {key!r}")
        if key in self._items:
            raise DuplicateKeyError(
                f"{self.kind} {key!r} registered twice (by {self._providers[key]} and by {provider})"
            )
        self._items[key] = factory
        self._providers[key] = provider
        self._requires[key] = {k: tuple(v) for k, v in (requires or {}).items()}
        self._defaults[key] = dict(defaults or {})

    def get(self, key: str) -> Any:
        try:
            return self._items[key]
        except KeyError:
            raise UnknownKeyError(self.kind, key, self.keys()) from None

    def create(self, key: str, **kwargs) -> Any:
        """Call the factory of ``key`` with the keyword arguments that are not ``None``."""
        factory: Callable = self.get(key)
        return factory(**{k: v for k, v in kwargs.items() if v is not None})

    def provider(self, key: str) -> str:
        self.get(key)
        return self._providers[key]

    def requires(self, key: str) -> dict[str, tuple]:
        self.get(key)
        return self._requires[key]

    def defaults(self, key: str) -> dict[str, Any]:
        self.get(key)
        return dict(self._defaults[key])

    def keys(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
