"""Adapter files to :class:`~aimterm.adapter.spec.AdapterSpec`, and back.

This module owns reading adapter YAML with a line for every key, resolving ``extends`` at
the raw-data level (keeping, for every value, the file and line it came from), structural
validation against :data:`~aimterm.adapter.schema.SCHEMA`, the semantic checks, and the
conversion into the typed spec. Every problem is a :class:`~aimterm.errors.ConfigError`
reading ``path:line: key: what was expected``; when a file has several, the first by line
is reported.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from yaml.nodes import MappingNode, ScalarNode

from aimterm.adapter.schema import MAX_INT, MAX_SECONDS, NAME_PATTERN, REGION_PATTERN, SCHEMA
from aimterm.adapter.spec import (
    ALL,
    FILE_PLACEHOLDER,
    FILES_ARGS,
    JOB_PLACEHOLDERS,
    MESSAGE_PLACEHOLDER,
    AdapterSpec,
    AnswerRule,
    Dialog,
    ExitRecipe,
    JobRecipe,
    KeyItem,
    KeySeq,
    Region,
    ReplySpec,
    StartupSpec,
    StateRule,
    SubmitRecipe,
    TerminalSpec,
    template_fields,
)
from aimterm.adapter.validator import SubsetValidator
from aimterm.adapter.yamlfile import (
    build_yaml,
    compose_yaml,
    format_key,
    node_line,
    read_yaml_file,
)
from aimterm.errors import ConfigError
from aimterm.term.keys import is_key

Resolver = Callable[[str, Path], "Path | None"]

_KeyPath = tuple["str | int", ...]
_Where = tuple[str, int]  # (file shown in messages, 1-based line)

#: Top-level mappings that ``extends`` merges one level deep (the child wins per key).
_NESTED = frozenset({"env", "terminal", "submit", "startup", "exit", "reply", "metrics",
                     "interrupt", "jobs"})

_REGION_HELP = "a region: all, top:N, bottom:N, rows:A-B, cursor or cursor:N"
_NAME_HELP = "a name of lowercase letters, digits, '.', '_' or '-'"
_COMMAND_HELP = "a command (a list of strings, or a string)"

#: What a schema ``title`` stands for in an "expected ..." message.
_TITLE_PHRASES = {
    "adapter name": _NAME_HELP,
    "command": _COMMAND_HELP,
    "regular expression": "a regular expression (a string)",
    "regular expressions": "a regular expression or a list of regular expressions",
    "region": _REGION_HELP,
    "key sequence": "keys (a string, or a list of key names, {key: ...}, {text: ...}, "
                    "{paste: ...} or {wait_ms: ...})",
    "key item": "a key name, text, or one of {key: ...}, {text: ...}, {paste: ...}, "
                "{wait_ms: ...}",
    "environment value": "a string, a number, or true/false",
}

#: How a failed schema ``pattern`` is explained.
_PATTERN_PHRASES = {NAME_PATTERN: _NAME_HELP, REGION_PATTERN: _REGION_HELP}

_TYPE_PHRASES = {
    "string": ("a string", "strings"),
    "integer": ("an integer", "integers"),
    "number": ("a number", "numbers"),
    "boolean": ("true or false", "true/false values"),
    "object": ("a mapping", "mappings"),
    "array": ("a list", "lists"),
    "null": ("nothing", "nothing"),
}

_REGION_RE = re.compile(r"(all)|(cursor)|(top|bottom|cursor):(\d+)|rows:(\d+)-(\d+)")

_validator_cache: list[Any] = []

#: Stands in for a pattern that did not compile, so conversion can go on collecting issues.
_NEVER = re.compile(r"(?!)")


# ---------------------------------------------------------------------------------------------
# Raw documents with provenance
# ---------------------------------------------------------------------------------------------


@dataclass
class _Doc:
    """Plain data of one adapter (possibly merged) and where every value came from."""

    data: dict[str, Any]
    where: dict[_KeyPath, _Where]
    path: str  # the file this document was loaded from
    files: list[str] = field(default_factory=list)  # this file, then its ancestors


@dataclass
class _Issue:
    key: _KeyPath
    message: str
    where: _Where | None = None  # given when the key path is not in the document


_fmt_key = format_key
_line_of = node_line
_read = read_yaml_file


def _parse(text: str, path: str) -> _Doc:
    root = compose_yaml(text, path)  # bounded: size, depth, aliases expanded
    if root is None or (isinstance(root, ScalarNode) and root.tag.endswith(":null")
                        and root.value in ("", "~", "null")):
        raise ConfigError("empty adapter file", path=path, line=1)
    if not isinstance(root, MappingNode):
        raise ConfigError("expected a mapping of adapter settings at the top level", path=path,
                          line=_line_of(root))
    built = build_yaml(root, path)
    where: dict[_KeyPath, _Where] = {(): (path, 1)}
    where.update({key: (path, line) for key, line in built.lines.items()})
    return _Doc(data=built.data, where=where, path=path, files=[path])


def _where(doc: _Doc, key: _KeyPath) -> _Where:
    """The (file, line) of ``key``, or of its nearest ancestor that has one."""
    while key not in doc.where:
        key = key[:-1]
    return doc.where[key]


def _first_error(doc: _Doc, issues: list[_Issue]) -> ConfigError:
    def order(item: tuple[int, _Issue]) -> tuple[int, int, int]:
        index, issue = item
        file, line = issue.where or _where(doc, issue.key)
        rank = doc.files.index(file) if file in doc.files else len(doc.files)
        return (rank, line, index)

    _, issue = min(enumerate(issues), key=order)
    file, line = issue.where or _where(doc, issue.key)
    return ConfigError(issue.message, path=file, line=line, key=_fmt_key(issue.key) or None)


def _drop_under(where: dict[_KeyPath, _Where], prefix: _KeyPath) -> None:
    for key in [k for k in where if k[: len(prefix)] == prefix]:
        del where[key]


def _copy_under(dst: dict[_KeyPath, _Where], src: Mapping[_KeyPath, _Where],
                prefix: _KeyPath) -> None:
    dst.update({k: v for k, v in src.items() if k[: len(prefix)] == prefix})


def _merge(parent: _Doc, child: _Doc) -> _Doc:
    """``child`` over ``parent``: top-level keys override, the ``_NESTED`` mappings merge one
    level deep, lists are replaced whole, and ``name`` is never inherited."""
    data = {k: v for k, v in parent.data.items() if k != "name"}
    where = dict(parent.where)
    _drop_under(where, ("name",))
    for key, value in child.data.items():
        below = data.get(key)
        if key in _NESTED and isinstance(value, dict) and isinstance(below, dict):
            merged = dict(below)
            for sub, sub_value in value.items():
                merged[sub] = sub_value
                _drop_under(where, (key, sub))
                _copy_under(where, child.where, (key, sub))
            data[key] = merged
            where[(key,)] = child.where[(key,)]
        else:
            data[key] = value
            _drop_under(where, (key,))
            _copy_under(where, child.where, (key,))
    where[()] = child.where[()]
    return _Doc(data=data, where=where, path=child.path, files=child.files + parent.files)


# ---------------------------------------------------------------------------------------------
# Structural validation (JSON Schema) with plain messages
# ---------------------------------------------------------------------------------------------


def _validator() -> Any:
    if not _validator_cache:
        try:
            _validator_cache.append(SubsetValidator(SCHEMA))
        except TypeError:  # a keyword past the subset: jsonschema itself, at its memory cost
            from jsonschema import Draft202012Validator

            _validator_cache.append(Draft202012Validator(SCHEMA))
    return _validator_cache[0]


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _got(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {_short(value)}"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    kind = {str: "string", int: "integer", float: "number"}.get(type(value),
                                                                type(value).__name__)
    return f"{kind} {_short(value)}"


def _deref(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return cast("Mapping[str, Any]", SCHEMA["$defs"][ref[len("#/$defs/"):]])
    return schema


def _expected(schema: Mapping[str, Any], plural: bool = False) -> str:
    """What a (sub)schema accepts, in words."""
    schema = _deref(schema)
    title = schema.get("title")
    if isinstance(title, str) and title in _TITLE_PHRASES and not plural:
        return _TITLE_PHRASES[title]
    if "enum" in schema and not plural:
        return "one of: " + ", ".join(str(v) for v in schema["enum"])
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    words = []
    for kind in types:
        if kind == "array" and "items" in schema:
            words.append(("lists" if plural else "a list") + " of "
                         + _expected(schema["items"], plural=True))
        else:
            single, many = _TYPE_PHRASES.get(kind, (kind, kind))
            words.append(many if plural else single)
    if not words:
        return "something else"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _bounds(schema: Mapping[str, Any], violated: str) -> str:
    kind = "an integer" if schema.get("type") == "integer" else "a number"
    low, high = schema.get("minimum"), schema.get("maximum")
    if high in (MAX_INT, MAX_SECONDS):
        # The ceiling every number has: named only when it is the one crossed.
        if violated == "maximum":
            return f"{kind} <= {high}"
        high = None
    if low is not None and high is not None:
        return f"{kind} from {low} to {high}"
    if "exclusiveMinimum" in schema:
        return f"{kind} > {schema['exclusiveMinimum']}"
    if low is not None:
        return f"{kind} >= {low}"
    return f"{kind} <= {high}"


def _translate(error: Any, doc: _Doc) -> _Issue:
    """One jsonschema error as a plain message on the key it is about."""
    key: _KeyPath = tuple(error.absolute_path)
    kind = error.validator
    schema: Mapping[str, Any] = error.schema
    value = error.instance
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted((k for k in value if k not in allowed),
                       key=lambda k: _where(doc, key + (k,))[1])
        unknown = extra[0]
        return _Issue(key + (unknown,),
                      f"unknown key {unknown!r} (expected one of: {', '.join(allowed)})")
    if kind == "enum" or (kind == "type" and "enum" in schema):
        # A wrong type on an enum reads like a wrong value: the choices say it all.
        return _Issue(key, f"expected one of: {', '.join(map(str, schema['enum']))}; "
                           f"got {_short(value)}")
    if kind == "type":
        return _Issue(key, f"expected {_expected(schema)}, got {_got(value)}")
    if kind in ("minimum", "maximum", "exclusiveMinimum"):
        return _Issue(key, f"expected {_bounds(schema, kind)}, got {_short(value)}")
    if kind == "required":
        missing = next(name for name in schema["required"] if name not in value)
        return _Issue(key + (missing,),
                      f"missing: expected {_expected(schema['properties'][missing])}",
                      where=_where(doc, key))
    if kind == "pattern":
        phrase = _PATTERN_PHRASES.get(schema["pattern"], f"a match for {schema['pattern']}")
        return _Issue(key, f"expected {phrase}; got {_short(value)}")
    if kind == "minItems":
        return _Issue(key, f"expected {_expected(schema)}, got an empty list")
    if kind in ("minProperties", "maxProperties"):
        names = ", ".join(schema.get("properties", {}))
        return _Issue(key, f"expected a mapping with exactly one of: {names}; "
                           f"got {len(value)} keys")
    return _Issue(key, str(error.message))


def _check_structure(doc: _Doc) -> None:
    try:
        issues = [_translate(error, doc) for error in _validator().iter_errors(doc.data)]
    except RecursionError:  # the YAML bounds keep data shallow; this is the last guard
        raise ConfigError("nested too deeply to check", path=doc.path, line=1) from None
    if issues:
        raise _first_error(doc, issues)


# ---------------------------------------------------------------------------------------------
# extends
# ---------------------------------------------------------------------------------------------


def _own_name(doc: _Doc) -> str:
    name = doc.data.get("name")
    return name if isinstance(name, str) else Path(doc.path).stem


def _resolve(doc: _Doc, requesting: Path, resolver: Resolver | None,
             chain: list[tuple[str, Path]]) -> _Doc:
    """``doc`` with every ancestor merged in (each file checked on its own first)."""
    _check_structure(doc)
    parent_name = doc.data.get("extends")
    if parent_name is None:
        return doc
    at = doc.where[("extends",)]
    found = resolver(parent_name, requesting) if resolver is not None else None
    if found is None or not Path(found).is_file():
        raise ConfigError(f"unknown parent adapter {parent_name!r}", path=at[0], line=at[1],
                          key="extends")
    real = Path(found).resolve()
    names = [name for name, _ in chain]
    for index, (_, seen) in enumerate(chain):
        if seen == real:
            loop = " -> ".join(names[index:] + [parent_name])
            raise ConfigError(f"cycle in extends: {loop}", path=at[0], line=at[1],
                              key="extends")
    parent_path = str(found)
    parent = _parse(_read(parent_path), parent_path)
    parent = _resolve(parent, Path(found), resolver, chain + [(parent_name, real)])
    return _merge(parent, doc)


# ---------------------------------------------------------------------------------------------
# Conversion with semantic checks
# ---------------------------------------------------------------------------------------------


class _Converter:
    """Builds the spec from merged, structurally valid data, collecting semantic issues."""

    def __init__(self, doc: _Doc) -> None:
        self.doc = doc
        self.data = doc.data
        self.issues: list[_Issue] = []

    def fail(self, key: _KeyPath, message: str, where: _Where | None = None) -> None:
        self.issues.append(_Issue(key, message, where))

    # -- small values ---------------------------------------------------------------------

    def regex(self, value: str, key: _KeyPath) -> re.Pattern[str]:
        try:
            return re.compile(value, re.MULTILINE)
        except (re.error, OverflowError) as exc:  # OverflowError: a{99999999999}
            self.fail(key, f"bad regular expression: {exc}")
        except RecursionError:  # thousands of nested groups
            self.fail(key, "bad regular expression: nested too deeply")
        return _NEVER

    def regexes(self, value: Any, key: _KeyPath) -> tuple[re.Pattern[str], ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            return (self.regex(value, key),)
        return tuple(self.regex(item, key + (index,)) for index, item in enumerate(value))

    def region(self, value: Any, key: _KeyPath) -> Region:
        if value is None:
            return ALL
        found = _REGION_RE.fullmatch(value)
        region: Region | None = None
        if found is not None:
            if found.group(1):
                region = ALL
            elif found.group(2):
                region = Region("cursor", 1)
            elif found.group(3):
                count = int(found.group(4))
                if count >= 1:
                    region = Region(cast("Any", found.group(3)), count)
            else:
                first, last = int(found.group(5)), int(found.group(6))
                if 1 <= first <= last:
                    region = Region("rows", first, last)
        if region is None:
            self.fail(key, f"expected {_REGION_HELP}; got {_short(value)}")
            return ALL
        return region

    def keys(self, value: Any, key: _KeyPath) -> KeySeq:
        if isinstance(value, str):
            return (KeyItem("text", value),)
        out: list[KeyItem] = []
        for index, item in enumerate(value):
            at = key + (index,)
            if isinstance(item, str):
                out.append(KeyItem("key", item.lower()) if is_key(item) else KeyItem("text", item))
                continue
            ((kind, text),) = item.items()
            if kind == "key":
                if not is_key(text):
                    self.fail(at + ("key",), f"unknown key name {text!r}")
                out.append(KeyItem("key", text.lower()))
            elif kind == "wait_ms":
                out.append(KeyItem("wait", ms=int(text)))
            else:
                out.append(KeyItem(kind, text))
        return tuple(out)

    def argv(self, value: Any, key: _KeyPath) -> tuple[str, ...]:
        if isinstance(value, list):
            return tuple(value)
        try:
            words = shlex.split(value)
        except ValueError as exc:
            self.fail(key, f"expected {_COMMAND_HELP}, cannot split {_short(value)}: {exc}")
            return ()
        if not words:
            self.fail(key, f"expected {_COMMAND_HELP}, got an empty string")
        return tuple(words)

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.get(name)
        return value if isinstance(value, dict) else {}

    # -- sections -------------------------------------------------------------------------

    def states(self) -> tuple[StateRule, ...]:
        rules = []
        for index, raw in enumerate(self.data.get("states", [])):
            at: _KeyPath = ("states", index)
            file, line = _where(self.doc, at)
            if not (raw.get("any") or raw.get("all") or raw.get("title") is not None):
                self.fail(at, "expected at least one of: any, all, title")
            state = raw["state"]
            title = raw.get("title")
            rules.append(StateRule(
                state=state,
                name=raw.get("name", f"{state}#{index}"),
                priority=int(raw.get("priority", 0)),
                region=self.region(raw.get("region"), at + ("region",)),
                any=self.regexes(raw.get("any"), at + ("any",)),
                all=self.regexes(raw.get("all"), at + ("all",)),
                not_=self.regexes(raw.get("not"), at + ("not",)),
                title=self.regex(title, at + ("title",)) if title is not None else None,
                line=line,
                source=file,
            ))
        if not any(rule.state == "idle" for rule in rules):
            self.fail(("states",), "expected at least one rule with state: idle")
        return tuple(rules)

    def startup(self) -> StartupSpec:
        raw = self.section("startup")
        dialogs = []
        for index, item in enumerate(raw.get("dialogs", [])):
            at: _KeyPath = ("startup", "dialogs", index)
            dialogs.append(Dialog(
                name=item.get("name", f"dialog#{index}"),
                match=self.regex(item["match"], at + ("match",)),
                send=self.keys(item["send"], at + ("send",)),
                region=self.region(item.get("region"), at + ("region",)),
                line=_where(self.doc, at)[1],
            ))
        default = StartupSpec()
        settle = raw.get("settle_ms")
        return StartupSpec(timeout_s=float(raw.get("timeout_s", default.timeout_s)),
                           dialogs=tuple(dialogs),
                           settle_ms=int(settle) if settle is not None else None)

    def submit(self, detect: str) -> SubmitRecipe:
        raw = self.section("submit")
        default = SubmitRecipe()
        return SubmitRecipe(
            paste=raw.get("paste", default.paste),
            keys=self.keys(raw["keys"], ("submit", "keys")) if "keys" in raw else default.keys,
            delay_ms=int(raw.get("delay_ms", default.delay_ms)),
            verify=raw.get("verify", "busy" if detect == "screen" else "output"),
            verify_timeout_ms=int(raw.get("verify_timeout_ms", default.verify_timeout_ms)),
            retry=int(raw.get("retry", default.retry)),
            clear=self.keys(raw["clear"], ("submit", "clear")) if "clear" in raw else (),
            after_echo=bool(raw.get("after_echo", False)),
        )

    def answers(self) -> tuple[AnswerRule, ...]:
        rules = []
        for index, item in enumerate(self.data.get("answers", [])):
            at: _KeyPath = ("answers", index)
            match = self.regex(item["match"], at + ("match",))
            when = []
            for group, pattern in item.get("when", {}).items():
                if group not in match.groupindex and match is not _NEVER:
                    self.fail(at + ("when", group), f"no group named {group!r} in match")
                when.append((group, self.regex(pattern, at + ("when", group))))
            rules.append(AnswerRule(
                name=item.get("name", f"answer#{index}"),
                match=match,
                send=self.keys(item["send"], at + ("send",)),
                when=tuple(when),
                region=self.region(item.get("region"), at + ("region",)),
                line=_where(self.doc, at)[1],
            ))
        return tuple(rules)

    def reply(self, detect: str) -> ReplySpec:
        raw = self.section("reply")
        default = ReplySpec()
        return ReplySpec(
            from_=raw.get("from", "screen-delta" if detect == "screen" else "stream"),
            strip=tuple(raw["strip"]) if "strip" in raw else default.strip,
            chrome=self.regexes(raw.get("chrome"), ("reply", "chrome")),
            start=self.regexes(raw.get("start"), ("reply", "start")),
            end=self.regexes(raw.get("end"), ("reply", "end")),
            region=self.region(raw.get("region"), ("reply", "region")),
            trim=self.regexes(raw.get("trim"), ("reply", "trim")),
            record=raw.get("record"),
            record_wait_ms=int(raw.get("record_wait_ms", default.record_wait_ms)),
        )

    def metrics(self) -> tuple[tuple[str, re.Pattern[str]], ...]:
        out = []
        for name, pattern in self.section("metrics").items():
            compiled = self.regex(pattern, ("metrics", name))
            if not compiled.groupindex and compiled is not _NEVER:
                self.fail(("metrics", name), "expected a pattern with named groups (?P<name>...)")
            out.append((name, compiled))
        return tuple(out)

    def env(self, raw: Mapping[str, Any] | None = None) -> tuple[tuple[str, str], ...]:
        out = []
        for name, value in (self.section("env") if raw is None else raw).items():
            if isinstance(value, bool):
                text = "1" if value else "0"
            else:
                text = str(value)
            out.append((name, text))
        return tuple(out)

    def template(self, text: str, key: _KeyPath, *, file: bool = False,
                 whole_files: bool = False, message: bool = False) -> set[str]:
        """Check the placeholders of one job recipe text; return the names it uses.

        ``file``: ``{file}`` is allowed (the ``files`` turn); ``whole_files``: the text is an
        argument of ``oneshot``, which may be exactly ``{files...}``; ``message``: ``{message}``
        is allowed (the one-shot form).
        """
        if whole_files and text == FILES_ARGS:
            return {"files"}
        try:
            names = template_fields(text)
        except ValueError as exc:
            self.fail(key, str(exc))
            return set()
        allowed = (((FILE_PLACEHOLDER,) if file else ()) + JOB_PLACEHOLDERS
                   + ((MESSAGE_PLACEHOLDER,) if message else ()))
        for name in names:
            if name in allowed:
                continue
            if name == "files..." and whole_files:
                self.fail(key, f"{FILES_ARGS} must be a whole argument (it becomes one "
                               f"argument per file); got {_short(text)}")
                continue
            shown = ", ".join("{" + n + "}" for n in allowed[:-1]) + " or {" + allowed[-1] + "}"
            hint = ""
            if name == FILE_PLACEHOLDER:
                hint = "; {file} is for jobs.files only"
            elif name == MESSAGE_PLACEHOLDER:
                hint = "; {message} is for jobs.oneshot and jobs.oneshot_env only"
            elif name == "files...":
                hint = f"; {FILES_ARGS} is for a whole argument of jobs.oneshot only"
            self.fail(key, f"unknown placeholder {{{name}}} (expected {shown}{hint})")
        return set(names)

    def jobs(self) -> JobRecipe:
        raw = self.section("jobs")
        default = JobRecipe()
        at: _KeyPath = ("jobs",)
        files = raw.get("files")
        if files is not None:
            self.template(files, at + ("files",), file=True)
        prompt = raw.get("prompt", default.prompt)
        with_files = raw.get("prompt_with_files")
        for name, text in (("prompt", prompt), ("prompt_with_files", with_files)):
            if text is not None and "prompt" not in self.template(text, at + (name,)):
                self.fail(at + (name,), "no {prompt} placeholder: the job's prompt would "
                                        "never reach the tool")
        after = tuple(raw.get("after", ()))
        for index, text in enumerate(after):
            self.template(text, at + ("after", index))
        oneshot: tuple[str, ...] | None = None
        env = self.env(raw.get("oneshot_env", {}))
        used: set[str] = set()
        for name, value in env:
            used |= self.template(value, at + ("oneshot_env", name), message=True)
        if raw.get("oneshot") is not None:
            oneshot = self.argv(raw["oneshot"], at + ("oneshot",))
            listed = isinstance(raw["oneshot"], list)
            for index, arg in enumerate(oneshot):
                key = at + ("oneshot", index) if listed else at + ("oneshot",)
                used |= self.template(arg, key, whole_files=True, message=True)
            if oneshot and not used & {"prompt", MESSAGE_PLACEHOLDER}:
                self.fail(at + ("oneshot",), "no {prompt} or {message} placeholder in an "
                                             "argument or in "
                                             "jobs.oneshot_env: the job's prompt would never "
                                             "reach the tool")
        pooled = bool(raw.get("pooled", default.pooled))
        if not pooled and oneshot is None:
            self.fail(at + ("pooled",), "false, but there is no jobs.oneshot: the tool "
                                        "could not run a job at all")
        pooled_args: tuple[str, ...] = ()
        if raw.get("pooled_args") is not None:
            pooled_args = self.argv(raw["pooled_args"], at + ("pooled_args",))
        return JobRecipe(pooled=pooled, files=files, prompt=prompt, prompt_with_files=with_files,
                         after=after, oneshot=oneshot, oneshot_env=env,
                         ignore=tuple(raw.get("ignore", ())), pooled_args=pooled_args)

    def spec(self, name: str, source: str, origin: str) -> AdapterSpec:
        data = self.data
        command: tuple[str, ...] = ()
        if "command" in data:
            command = self.argv(data["command"], ("command",))
        else:
            self.fail(("command",), f"missing: expected {_COMMAND_HELP}, or extends from an "
                                    "adapter that has one", where=(self.doc.path, 1))
        detect = data.get("detect", "screen")
        terminal = self.section("terminal")
        term_default = TerminalSpec()
        exit_raw = self.section("exit")
        exit_default = ExitRecipe()
        interrupt = self.section("interrupt")
        spec = AdapterSpec(
            name=name,
            command=command,
            source=source,
            origin=origin,
            description=data.get("description", ""),
            extends=data.get("extends"),
            env=self.env(),
            env_remove=tuple(data.get("env_remove", ())),
            cwd=data.get("cwd"),
            terminal=TerminalSpec(
                rows=int(terminal.get("rows", term_default.rows)),
                cols=int(terminal.get("cols", term_default.cols)),
                term=terminal.get("term", term_default.term),
                key_gap_ms=int(terminal.get("key_gap_ms", term_default.key_gap_ms)),
                scrollback=int(terminal.get("scrollback", term_default.scrollback)),
            ),
            detect=detect,
            states=self.states(),
            settle_ms=int(data.get("settle_ms", 300 if detect == "screen" else 0)),
            answer_delay_ms=int(data.get("answer_delay_ms", 0)),
            startup=self.startup(),
            submit=self.submit(detect),
            answers=self.answers(),
            reply=self.reply(detect),
            metrics=self.metrics(),
            exit=ExitRecipe(
                keys=self.keys(exit_raw["keys"], ("exit", "keys")) if "keys" in exit_raw else (),
                timeout_s=float(exit_raw.get("timeout_s", exit_default.timeout_s)),
                signal_grace_s=float(exit_raw.get("signal_grace_s",
                                                  exit_default.signal_grace_s)),
            ),
            interrupt=(self.keys(interrupt["keys"], ("interrupt", "keys"))
                       if "keys" in interrupt else AdapterSpec.interrupt),
            resume=self.argv(data["resume"], ("resume",)) if "resume" in data else (),
            turn_timeout_s=float(data.get("turn_timeout_s", 600.0)),
            verified=tuple(data.get("verified", ())),
            jobs=self.jobs(),
        )
        if self.issues:
            raise _first_error(self.doc, self.issues)
        return spec


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def load_text(text: str, path: str = "<string>", *, origin: str = "memory",
              resolver: Resolver | None = None) -> AdapterSpec:
    """Load an adapter from YAML text; ``path`` names it in messages and gives the default
    name (its stem). ``resolver(parent_name, requesting_file)`` finds ``extends`` parents."""
    doc = _parse(text, path)
    requesting = Path(path)
    own = _own_name(doc)
    doc = _resolve(doc, requesting, resolver, [(own, requesting.resolve())])
    if len(doc.files) > 1:
        _check_structure(doc)  # the merged result, though each part already passed on its own
    name = doc.data.get("name", Path(path).stem)
    return _Converter(doc).spec(name, str(path), origin)


def load_file(path: str | Path, *, origin: str = "file",
              resolver: Resolver | None = None) -> AdapterSpec:
    """Load the adapter file at ``path``, resolve ``extends``, validate and convert it."""
    shown = str(path)
    return load_text(_read(shown), shown, origin=origin, resolver=resolver)


def _keys_to_data(keys: KeySeq) -> list[Any]:
    out: list[Any] = []
    for item in keys:
        if item.kind == "key":
            out.append(item.value)
        elif item.kind == "wait":
            out.append({"wait_ms": item.ms})
        elif item.kind == "text" and not is_key(item.value):
            out.append(item.value)
        else:  # paste, or text that would read back as a key name
            out.append({item.kind: item.value})
    return out


def _patterns(patterns: Iterable[re.Pattern[str]]) -> list[str]:
    return [p.pattern for p in patterns]


def spec_to_dict(spec: AdapterSpec) -> dict[str, Any]:
    """The resolved adapter as plain data in the file format (no ``extends``: everything is
    already merged in), so that loading it back gives the same adapter."""
    out: dict[str, Any] = {"name": spec.name}
    if spec.description:
        out["description"] = spec.description
    out["command"] = list(spec.command)
    if spec.env:
        out["env"] = dict(spec.env)
    if spec.env_remove:
        out["env_remove"] = list(spec.env_remove)
    if spec.cwd is not None:
        out["cwd"] = spec.cwd
    t = spec.terminal
    out["terminal"] = {"rows": t.rows, "cols": t.cols, "term": t.term,
                       "key_gap_ms": t.key_gap_ms, "scrollback": t.scrollback}
    out["detect"] = spec.detect
    out["settle_ms"] = spec.settle_ms
    out["turn_timeout_s"] = spec.turn_timeout_s
    states = []
    for rule in spec.states:
        item: dict[str, Any] = {"state": rule.state, "name": rule.name,
                                "priority": rule.priority}
        if rule.region != ALL:
            item["region"] = str(rule.region)
        for key, patterns in (("any", rule.any), ("all", rule.all), ("not", rule.not_)):
            if patterns:
                item[key] = _patterns(patterns)
        if rule.title is not None:
            item["title"] = rule.title.pattern
        states.append(item)
    out["states"] = states
    dialogs = []
    for dialog in spec.startup.dialogs:
        entry: dict[str, Any] = {"name": dialog.name, "match": dialog.match.pattern,
                                 "send": _keys_to_data(dialog.send)}
        if dialog.region != ALL:
            entry["region"] = str(dialog.region)
        dialogs.append(entry)
    out["startup"] = {"timeout_s": spec.startup.timeout_s, "dialogs": dialogs}
    if spec.startup.settle_ms is not None:
        out["startup"]["settle_ms"] = spec.startup.settle_ms
    if spec.answer_delay_ms:
        out["answer_delay_ms"] = spec.answer_delay_ms
    s = spec.submit
    out["submit"] = {"paste": s.paste, "keys": _keys_to_data(s.keys), "delay_ms": s.delay_ms,
                     "verify": s.verify, "verify_timeout_ms": s.verify_timeout_ms,
                     "retry": s.retry, "clear": _keys_to_data(s.clear),
                     "after_echo": s.after_echo}
    answers = []
    for answer in spec.answers:
        entry = {"name": answer.name, "match": answer.match.pattern,
                 "send": _keys_to_data(answer.send)}
        if answer.when:
            entry["when"] = {group: pattern.pattern for group, pattern in answer.when}
        if answer.region != ALL:
            entry["region"] = str(answer.region)
        answers.append(entry)
    if answers:
        out["answers"] = answers
    r = spec.reply
    reply: dict[str, Any] = {"from": r.from_, "strip": list(r.strip)}
    if r.chrome:
        reply["chrome"] = _patterns(r.chrome)
    if r.start:
        reply["start"] = _patterns(r.start)
    if r.end:
        reply["end"] = _patterns(r.end)
    if r.region != ALL:
        reply["region"] = str(r.region)
    if r.trim:
        reply["trim"] = _patterns(r.trim)
    if r.record is not None:
        reply["record"] = r.record
        reply["record_wait_ms"] = r.record_wait_ms
    out["reply"] = reply
    if spec.metrics:
        out["metrics"] = {name: pattern.pattern for name, pattern in spec.metrics}
    e = spec.exit
    out["exit"] = {"keys": _keys_to_data(e.keys), "timeout_s": e.timeout_s,
                   "signal_grace_s": e.signal_grace_s}
    out["interrupt"] = {"keys": _keys_to_data(spec.interrupt)}
    if spec.resume:
        out["resume"] = list(spec.resume)
    if spec.verified:
        out["verified"] = list(spec.verified)
    j = spec.jobs
    jobs: dict[str, Any] = {"pooled": j.pooled, "prompt": j.prompt}
    if j.files is not None:
        jobs["files"] = j.files
    if j.prompt_with_files is not None:
        jobs["prompt_with_files"] = j.prompt_with_files
    if j.after:
        jobs["after"] = list(j.after)
    if j.oneshot is not None:
        jobs["oneshot"] = list(j.oneshot)
    if j.oneshot_env:
        jobs["oneshot_env"] = dict(j.oneshot_env)
    if j.ignore:
        jobs["ignore"] = list(j.ignore)
    if j.pooled_args:
        jobs["pooled_args"] = list(j.pooled_args)
    out["jobs"] = jobs
    return out
