"""Finding adapters by name on the adapter search path.

This module owns which file an adapter name means (a later search-path folder overrides an
earlier one: built-in < user < ``AIMTERM_ADAPTER_PATH``), how ``extends`` finds a parent
(a file that extends its own name gets the next definition down), and a cache of loaded
specs that is dropped as soon as any file a spec was built from changes.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aimterm.adapter.loader import load_file
from aimterm.adapter.spec import AdapterSpec
from aimterm.adapter.yamlfile import parse_yaml, read_yaml_file
from aimterm.errors import AdapterNotFound, ConfigError
from aimterm.paths import adapter_search_path

_SUFFIXES = (".yaml", ".yml")

_Stamp = tuple[Path, tuple[int, int]]  # (file, (mtime_ns, size)) a cached result depends on
_Candidates = list[tuple[str, Path]]  # (origin, file), highest precedence first
_Paths = list[Path]


@dataclass
class AdapterInfo:
    """One adapter name as the search path resolves it."""

    name: str
    path: Path
    origin: str
    overrides: _Paths = field(default_factory=list)  # lower-precedence files, next one first


def _mtime(path: Path) -> tuple[int, int]:
    """What says a file changed: its mtime, and its size (an edit within the file system's
    timestamp tick keeps the mtime)."""
    try:
        st = path.stat()
    except OSError:
        return -1, -1
    return st.st_mtime_ns, st.st_size


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


class AdapterRegistry:
    """The adapters on a search path of ``(origin, folder)`` pairs, later overriding earlier."""

    def __init__(self, search_path: list[tuple[str, Path]] | None = None) -> None:
        self.search_path = (list(search_path) if search_path is not None
                            else adapter_search_path())
        self._names: dict[Path, tuple[tuple[int, int], str]] = {}
        self._specs: dict[tuple[Path, str], tuple[tuple[_Stamp, ...], AdapterSpec]] = {}

    # -- lookup ---------------------------------------------------------------------------

    def _name_of(self, path: Path) -> str:
        """The file's ``name:``, else its stem; a file that does not parse goes by its stem."""
        stamp = _mtime(path)
        cached = self._names.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        name = path.stem
        try:  # bounded like every load: any file on the search path is read here
            data = parse_yaml(read_yaml_file(str(path)), str(path)).data
        except ConfigError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("name"), str) and data["name"]:
            name = data["name"]
        self._names[path] = (stamp, name)
        return name

    def _index(self) -> dict[str, _Candidates]:
        index: dict[str, _Candidates] = {}
        for origin, folder in self.search_path:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:  # a folder that does not exist yet is just empty
                continue
            for entry in entries:
                if not entry.name.endswith(_SUFFIXES) or not entry.is_file():
                    continue
                path = Path(folder) / entry.name
                # Later files take precedence, so each goes in front of what came before.
                index.setdefault(self._name_of(path), []).insert(0, (origin, path))
        return index

    def list(self) -> list[AdapterInfo]:
        """Every adapter name with the file that wins and the files it overrides."""
        out = []
        for name, candidates in self._index().items():
            origin, path = candidates[0]
            out.append(AdapterInfo(name=name, path=path, origin=origin,
                                   overrides=[p for _, p in candidates[1:]]))
        return sorted(out, key=lambda info: info.name)

    def _find(self, name: str, skip: Path | None) -> tuple[str, Path] | None:
        candidates = self._index().get(name, [])
        if skip is not None:
            for index, (_, path) in enumerate(candidates):
                if _same_file(path, skip):
                    # The requesting file defines this very name: the next one down.
                    rest = candidates[index + 1:]
                    return rest[0] if rest else None
        return candidates[0] if candidates else None

    def find(self, name: str, skip: Path | None = None) -> Path | None:
        """The file for ``name``. With ``skip`` (a file defining ``name``), the definition
        just below it on the search path instead."""
        found = self._find(name, skip)
        return found[1] if found else None

    def resolve_parent(self, parent: str, requesting: Path) -> Path | None:
        """The ``extends`` resolver: a name on the search path (never ``requesting`` itself),
        or a file path relative to the requesting file."""
        if "/" in parent or parent.endswith(_SUFFIXES):
            candidate = (requesting.parent / Path(parent).expanduser())
            return candidate if candidate.is_file() else None
        return self.find(parent, skip=requesting)

    # -- loading --------------------------------------------------------------------------

    def load_path(self, path: str | Path, origin: str = "file") -> AdapterSpec:
        """Load one file, ``extends`` resolved through this registry; cached until any file
        it was built from changes."""
        path = Path(path)
        key = (path, origin)
        cached = self._specs.get(key)
        if cached is not None and all(_mtime(p) == stamp for p, stamp in cached[0]):
            return cached[1]
        # Stamped before reading, so an edit made while loading invalidates the entry.
        stamps: list[_Stamp] = [(path, _mtime(path))]

        def resolver(parent: str, requesting: Path) -> Path | None:
            found = self.resolve_parent(parent, requesting)
            if found is not None:
                stamps.append((found, _mtime(found)))
            return found

        spec = load_file(path, origin=origin, resolver=resolver)
        self._specs[key] = (tuple(stamps), spec)
        return spec

    def get(self, name: str) -> AdapterSpec:
        """The resolved adapter called ``name``, with ``origin`` set from its folder."""
        found = self._find(name, None)
        if found is None:
            raise AdapterNotFound(name, searched=[str(folder) for _, folder in self.search_path])
        origin, path = found
        return self.load_path(path, origin=origin)


_shared: AdapterRegistry | None = None
_shared_lock = threading.Lock()


def _shared_registry() -> AdapterRegistry:
    """One registry per search path for :func:`load_adapter`: each run of a job or plan step
    loads its tool's adapter, and a fresh registry would parse every file on the path to
    learn its name (a tenth of a second) each time. Its caches check the files' stamps."""
    global _shared
    path = adapter_search_path()
    with _shared_lock:
        if _shared is None or _shared.search_path != path:
            _shared = AdapterRegistry(path)
        return _shared


def _looks_like_path(text: str) -> bool:
    return "/" in text or text.endswith(_SUFFIXES)


def load_adapter(name_or_path: str | Path,
                 registry: AdapterRegistry | None = None) -> AdapterSpec:
    """An adapter by file path (``origin="file"``) or else by name on the search path."""
    registry = registry if registry is not None else _shared_registry()
    text = str(name_or_path)
    if (isinstance(name_or_path, Path) or _looks_like_path(text)) and Path(text).is_file():
        return registry.load_path(Path(text), origin="file")
    return registry.get(text)
