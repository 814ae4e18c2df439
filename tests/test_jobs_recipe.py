"""Adapter job recipes: the ``jobs`` key as loaded (defaults, ``extends``, exact errors with
file:line) and the turns and one-shot argv rendered for one job."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from aimterm.adapter.loader import load_file, load_text, spec_to_dict
from aimterm.adapter.registry import load_adapter
from aimterm.adapter.schema import SCHEMA
from aimterm.adapter.spec import JobRecipe, fill_template, template_fields
from aimterm.errors import ConfigError
from aimterm.jobs.recipe import (
    JobTurns,
    job_files,
    job_turns,
    job_values,
    oneshot_argv,
    oneshot_env_values,
)
from aimterm.jobs.spec import Job

BASE = """\
command: [tool]
states:
  - {state: idle, any: '>>> $'}
"""


def adapter(jobs: str) -> str:
    return BASE + textwrap.dedent(jobs)


def error_of(text: str, path: str = "a.yaml") -> str:
    with pytest.raises(ConfigError) as info:
        load_text(text, path)
    return str(info.value)


def job(**kwargs: object) -> Job:
    fields: dict[str, object] = {"id": "j", "tool": "t", "prompt": "fix it"}
    fields.update(kwargs)
    return Job(**fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def test_defaults_without_a_jobs_key() -> None:
    recipe = load_text(BASE).jobs
    assert recipe == JobRecipe()
    assert (recipe.pooled, recipe.files, recipe.prompt, recipe.prompt_with_files, recipe.after,
            recipe.oneshot, recipe.oneshot_env) == (True, None, "{prompt}", None, (), None, ())
    turns = job_turns(recipe, job(files=("/x/a.py",), cwd="/x"))
    assert turns == JobTurns(before=(), prompt="fix it", after=())
    assert oneshot_argv(recipe, job()) is None


def test_every_key_loads() -> None:
    spec = load_text(adapter("""\
        jobs:
          pooled: false
          files: "/add {file}"
          prompt: "{prompt}"
          prompt_with_files: "{prompt} (files: {files})"
          after: ["/drop", "/clear"]
          oneshot: [aider, --yes-always, "{files...}", --message, "{prompt}"]
          oneshot_env: {NO_COLOR: 1, QUIET: true, WHERE: "{cwd}"}
        """))
    assert spec.jobs == JobRecipe(
        pooled=False, files="/add {file}", prompt="{prompt}",
        prompt_with_files="{prompt} (files: {files})", after=("/drop", "/clear"),
        oneshot=("aider", "--yes-always", "{files...}", "--message", "{prompt}"),
        oneshot_env=(("NO_COLOR", "1"), ("QUIET", "1"), ("WHERE", "{cwd}")))


def test_oneshot_as_a_string_is_split_like_a_shell() -> None:
    spec = load_text(adapter("""\
        jobs: {oneshot: "tool --print '{prompt}' {files...}"}
        """))
    assert spec.jobs.oneshot == ("tool", "--print", "{prompt}", "{files...}")
    argv = oneshot_argv(spec.jobs, job(prompt="two words", files=("/w/a", "/w/b"), cwd="/w"))
    assert argv == ["tool", "--print", "two words", "a", "b"]


def test_the_prompt_may_travel_in_the_oneshot_environment() -> None:
    spec = load_text(adapter("""\
        jobs: {oneshot: [tool, --from-env], oneshot_env: {TOOL_PROMPT: "{prompt}"}}
        """))
    assert oneshot_env_values(spec.jobs, job()) == {"TOOL_PROMPT": "fix it"}


ERRORS = [
    pytest.param('jobs:\n  prompt: "do {promt}"\n',
                 "a.yaml:5: jobs.prompt: unknown placeholder {promt} (expected {prompt}, "
                 "{files}, {cwd} or {python})", id="unknown"),
    pytest.param('jobs:\n  prompt: "{prompt} {file}"\n',
                 "a.yaml:5: jobs.prompt: unknown placeholder {file} (expected {prompt}, "
                 "{files}, {cwd} or {python}; {file} is for jobs.files only)", id="file-outside"),
    pytest.param('jobs:\n  files: "/add {path}"\n',
                 "a.yaml:5: jobs.files: unknown placeholder {path} (expected {file}, {prompt}, "
                 "{files}, {cwd} or {python})", id="files-turn"),
    pytest.param('jobs:\n  after: [/drop, "/x {nope}"]\n',
                 "a.yaml:5: jobs.after[1]: unknown placeholder {nope} (expected {prompt}, "
                 "{files}, {cwd} or {python})", id="after"),
    pytest.param('jobs:\n  prompt: "{prompt} {files...}"\n',
                 "a.yaml:5: jobs.prompt: unknown placeholder {files...} (expected {prompt}, "
                 "{files}, {cwd} or {python}; {files...} is for a whole argument of "
                 "jobs.oneshot only)", id="files-args-in-a-turn"),
    pytest.param('jobs:\n  oneshot:\n    - tool\n    - "--files={files...}"\n'
                 '    - "{prompt}"\n',
                 "a.yaml:7: jobs.oneshot[1]: {files...} must be a whole argument (it becomes "
                 "one argument per file); got '--files={files...}'", id="files-args-part"),
    pytest.param('jobs:\n  oneshot: [tool, "{prompt}", "{x}"]\n',
                 "a.yaml:5: jobs.oneshot[2]: unknown placeholder {x} (expected {prompt}, "
                 "{files}, {cwd}, {python} or {message})", id="oneshot-flow-list"),
    pytest.param('jobs:\n  oneshot: "tool {prompt} {x}"\n',
                 "a.yaml:5: jobs.oneshot: unknown placeholder {x} (expected {prompt}, "
                 "{files}, {cwd}, {python} or {message})", id="oneshot-string"),
    pytest.param('jobs:\n  oneshot: [tool, "{prompt}"]\n  oneshot_env:\n    A: "{home}"\n',
                 "a.yaml:7: jobs.oneshot_env.A: unknown placeholder {home} (expected {prompt}, "
                 "{files}, {cwd}, {python} or {message})", id="oneshot-env"),
    pytest.param('jobs:\n  prompt: "say {prompt} in {json}"\n',
                 "a.yaml:5: jobs.prompt: unknown placeholder {json} (expected {prompt}, "
                 "{files}, {cwd} or {python})", id="brace-text-needs-doubling"),
    pytest.param('jobs:\n  prompt: "{prompt} }"\n',
                 "a.yaml:5: jobs.prompt: lone '}' at position 9 (write '}}' for a literal "
                 "brace)", id="lone-close"),
    pytest.param('jobs:\n  prompt_with_files: "{prompt {files}"\n',
                 "a.yaml:5: jobs.prompt_with_files: lone '{' at position 0 (write '{{' for a "
                 "literal brace)", id="lone-open"),
    pytest.param('jobs:\n  prompt: "do it"\n',
                 "a.yaml:5: jobs.prompt: no {prompt} placeholder: the job's prompt would never "
                 "reach the tool", id="prompt-without-prompt"),
    pytest.param('jobs:\n  prompt_with_files: "{files}"\n',
                 "a.yaml:5: jobs.prompt_with_files: no {prompt} placeholder: the job's prompt "
                 "would never reach the tool", id="with-files-without-prompt"),
    pytest.param('jobs:\n  oneshot: [tool, "{files...}"]\n',
                 "a.yaml:5: jobs.oneshot: no {prompt} or {message} placeholder in an argument "
                 "or in jobs.oneshot_env: the job's prompt would never reach the tool",
                 id="oneshot-without-prompt"),
    pytest.param('jobs:\n  pooled: false\n',
                 "a.yaml:5: jobs.pooled: false, but there is no jobs.oneshot: the tool could "
                 "not run a job at all", id="no-way-to-run"),
    pytest.param('jobs:\n  oneshot: []\n',
                 "a.yaml:5: jobs.oneshot: expected a string, a list of strings or nothing, "
                 "got an empty list", id="oneshot-empty"),
    pytest.param('jobs:\n  oneshot: "tool \'{prompt}"\n',
                 "a.yaml:5: jobs.oneshot: expected a command (a list of strings, or a string), "
                 "cannot split \"tool '{prompt}\": No closing quotation", id="oneshot-unsplittable"),
    pytest.param('jobs:\n  after: /drop\n',
                 "a.yaml:5: jobs.after: expected a list of strings, got string '/drop'",
                 id="after-type"),
    pytest.param('jobs:\n  pooled: yes please\n',
                 "a.yaml:5: jobs.pooled: expected true or false, got string 'yes please'",
                 id="pooled-type"),
    pytest.param('jobs:\n  oneshot_env: {A: [1]}\n',
                 "a.yaml:5: jobs.oneshot_env.A: expected a string, a number, or true/false, "
                 "got list", id="env-type"),
    pytest.param('jobs:\n  promt: "{prompt}"\n',
                 "a.yaml:5: jobs.promt: unknown key 'promt' (expected one of: after, files, "
                 "ignore, oneshot, oneshot_env, pooled, pooled_args, prompt, "
                 "prompt_with_files)",
                 id="unknown-key"),
    pytest.param('jobs:\n  pooled_args: ""\n',
                 "a.yaml:5: jobs.pooled_args: expected a command (a list of strings, or a "
                 "string), got an empty string",
                 id="empty-pooled-args"),
]


@pytest.mark.parametrize(("jobs", "message"), ERRORS)
def test_load_errors(jobs: str, message: str) -> None:
    assert error_of(BASE + jobs) == message


def test_the_first_mistake_by_line_is_reported() -> None:
    text = BASE + 'jobs:\n  after: ["{b}"]\n  prompt: "{a}"\n'
    assert error_of(text).startswith("a.yaml:5: jobs.after[0]: unknown placeholder {b}")


def test_extends_merges_jobs_one_level_deep(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(BASE + textwrap.dedent("""\
        jobs:
          files: "/add {file}"
          after: [/drop]
          oneshot: [tool, -m, "{prompt}"]
          oneshot_env: {A: "1", B: "2"}
        """), encoding="utf-8")
    child = tmp_path / "child.yaml"
    child.write_text(textwrap.dedent("""\
        extends: base
        jobs:
          prompt: "please: {prompt}"
          oneshot_env: {C: "3"}
        """), encoding="utf-8")

    def resolve(name: str, requesting: Path) -> Path | None:
        found = tmp_path / f"{name}.yaml"
        return found if found.exists() else None

    recipe = load_file(child, resolver=resolve).jobs
    assert recipe == JobRecipe(files="/add {file}", prompt="please: {prompt}", after=("/drop",),
                               oneshot=("tool", "-m", "{prompt}"), oneshot_env=(("C", "3"),))
    # null takes away what the parent set
    child.write_text("extends: base\njobs: {oneshot: null, files: null}\n", encoding="utf-8")
    recipe = load_file(child, resolver=resolve).jobs
    assert (recipe.oneshot, recipe.files, recipe.after) == (None, None, ("/drop",))
    # a mistake in the child is reported at the child's line
    child.write_text("extends: base\n\njobs: {prompt: '{x}'}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_file(child, resolver=resolve)
    assert str(info.value) == (f"{child}:3: jobs.prompt: unknown placeholder {{x}} (expected "
                               "{prompt}, {files}, {cwd} or {python})")
    # a parent's pooled: false with its oneshot taken away leaves no way to run a job
    (tmp_path / "base.yaml").write_text(BASE + "jobs: {pooled: false, oneshot: [t, '{prompt}']}\n",
                                        encoding="utf-8")
    child.write_text("extends: base\njobs:\n  oneshot: null\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_file(child, resolver=resolve)
    assert str(info.value) == (f"{tmp_path / 'base.yaml'}:4: jobs.pooled: false, but there is "
                               "no jobs.oneshot: the tool could not run a job at all")


def test_spec_to_dict_round_trips_the_recipe() -> None:
    spec = load_text(adapter("""\
        jobs:
          files: "/add {file}"
          prompt_with_files: "{prompt} ({files})"
          after: [/drop]
          oneshot: [tool, "{files...}", "{prompt}"]
          oneshot_env: {A: "{{literal}}"}
        """), "a.yaml")
    data = spec_to_dict(spec)
    assert data["jobs"] == {"pooled": True, "prompt": "{prompt}", "files": "/add {file}",
                            "prompt_with_files": "{prompt} ({files})", "after": ["/drop"],
                            "oneshot": ["tool", "{files...}", "{prompt}"],
                            "oneshot_env": {"A": "{{literal}}"}}
    again = load_text(yaml.safe_dump(data))
    assert again.jobs == spec.jobs
    assert not list(Draft202012Validator(SCHEMA).iter_errors(data))
    assert spec_to_dict(load_text(BASE))["jobs"] == {"pooled": True, "prompt": "{prompt}"}


def test_builtin_adapters() -> None:
    work = job(prompt="echo hi", cwd="/w")
    demo = load_adapter("demo").jobs
    assert demo.pooled and job_turns(demo, work).prompt == "echo hi"
    assert oneshot_argv(demo, work) == [sys.executable, "-m", "aimterm.demo_agent", "-p",
                                        "echo hi"]
    bash = load_adapter("bash").jobs
    assert job_turns(bash, work) == JobTurns((), "echo hi", ())
    assert oneshot_argv(bash, work) == ["bash", "--noprofile", "--norc", "-c", "echo hi"]
    python = load_adapter("python").jobs
    assert job_turns(python, job(prompt="print(1)")).prompt == "print(1)"
    assert oneshot_argv(python, job(prompt="print(1)")) == [sys.executable, "-c", "print(1)"]


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

AIDER_LIKE = JobRecipe(files="/add {file}", prompt="{prompt}",
                       prompt_with_files="{prompt} (files: {files})", after=("/drop",),
                       oneshot=("aider", "--yes-always", "{files...}", "--message", "{prompt}"))


def test_every_placeholder_is_filled() -> None:
    recipe = JobRecipe(files="{file}|{files}|{cwd}|{python}|{prompt}",
                       prompt="{prompt}|{files}|{cwd}|{python}",
                       after=("{prompt}/{files}/{cwd}/{python}",),
                       oneshot=("{python}", "{cwd}", "{files}", "{prompt}", "{files...}"),
                       oneshot_env=(("P", "{prompt}"), ("F", "{files}"), ("C", "{cwd}"),
                                    ("X", "{python}")))
    work = job(prompt="go", files=("/w/a.py", "/w/s/b.py"), cwd="/w")
    py = sys.executable
    turns = job_turns(recipe, work)
    assert turns.before == (f"a.py|a.py s/b.py|/w|{py}|go", f"s/b.py|a.py s/b.py|/w|{py}|go")
    assert turns.prompt == f"go|a.py s/b.py|/w|{py}"
    assert turns.after == (f"go/a.py s/b.py//w/{py}",)
    assert oneshot_argv(recipe, work) == [py, "/w", "a.py s/b.py", "go", "a.py", "s/b.py"]
    assert oneshot_env_values(recipe, work) == {"P": "go", "F": "a.py s/b.py", "C": "/w",
                                                "X": py}
    assert job_values(work) == {"prompt": "go", "files": "a.py s/b.py", "cwd": "/w",
                                "python": py}


def test_files_turns_and_the_prompt_with_files() -> None:
    work = job(files=("/repo/a.py", "/repo/b.py"), cwd="/repo")
    assert job_turns(AIDER_LIKE, work) == JobTurns(
        before=("/add a.py", "/add b.py"), prompt="fix it (files: a.py b.py)", after=("/drop",))
    # no files: no files turns, the plain prompt, the after turns all the same
    assert job_turns(AIDER_LIKE, job(cwd="/repo")) == JobTurns((), "fix it", ("/drop",))
    # no prompt_with_files: the prompt is the prompt
    plain = JobRecipe(files="/add {file}")
    assert job_turns(plain, work) == JobTurns(("/add a.py", "/add b.py"), "fix it", ())


def test_files_args_expand_to_one_argument_per_file_or_none() -> None:
    work = job(prompt="do it", files=("/repo/a b.py", "/repo/c.py"), cwd="/repo")
    assert oneshot_argv(AIDER_LIKE, work) == ["aider", "--yes-always", "a b.py", "c.py",
                                              "--message", "do it"]
    assert oneshot_argv(AIDER_LIKE, job(prompt="do it", cwd="/repo")) == [
        "aider", "--yes-always", "--message", "do it"]


def test_paths_relative_inside_the_cwd_else_absolute() -> None:
    work = job(cwd="/repo/sub", files=(
        "/repo/sub/a.py",        # inside: relative
        "/repo/sub/deep/b.py",   # inside, deeper
        "/repo/other.py",        # outside: absolute
        "/repo/subway/c.py",     # a sibling whose name starts like the cwd: outside
        "d.py",                  # relative: to the cwd
        "x/../e.py",             # normalised
        "../f.py",               # relative, but outside
        "/repo/sub",             # the cwd itself
    ))
    assert job_files(work) == ("a.py", "deep/b.py", "/repo/other.py", "/repo/subway/c.py",
                               "d.py", "e.py", "/repo/f.py", ".")
    # The files need not exist: nothing is looked up.
    assert not os.path.exists("/repo/sub/a.py")


def test_paths_without_a_cwd_stay_as_given() -> None:
    work = job(files=("/abs/a.py", "rel/b.py", "rel/./c.py"))
    assert job_files(work) == ("/abs/a.py", "rel/b.py", "rel/c.py")
    assert job_values(work)["cwd"] == os.getcwd()


def test_a_relative_cwd_is_taken_from_here() -> None:
    work = job(cwd="sub", files=(os.path.join(os.getcwd(), "sub", "a.py"),))
    assert job_values(work)["cwd"] == os.path.join(os.getcwd(), "sub")
    assert job_files(work) == ("a.py",)


def test_literal_braces_and_values_are_put_in_once() -> None:
    recipe = JobRecipe(prompt="{{files}} {prompt} {{{prompt}}} }}{{",
                       oneshot=("x", "{{files...}}", "{prompt}"))
    work = job(prompt="use {files} and {cwd} and {{", files=("/w/a",), cwd="/w")
    assert job_turns(recipe, work).prompt == ("{files} use {files} and {cwd} and {{ "
                                              "{use {files} and {cwd} and {{} }{")
    assert oneshot_argv(recipe, work) == ["x", "{files...}", "use {files} and {cwd} and {{"]


def test_template_helpers() -> None:
    assert template_fields("a {x} {{y}} {z}") == ["x", "z"]
    assert template_fields("") == []
    with pytest.raises(ValueError, match=r"lone '\{' at position 2"):
        template_fields("a {")
    # A recipe built in memory is not checked by the loader: rendering says what is wrong.
    with pytest.raises(ValueError, match=r"unknown placeholder \{nope\} in 'a \{nope\}'"):
        job_turns(JobRecipe(prompt="a {nope}"), job())
    with pytest.raises(ValueError, match=r"lone '\}'"):
        fill_template("}", {})
    assert fill_template("{a}{b}", {"a": "{b}", "b": "1"}) == "{b}1"



def test_message_is_the_prompt_turn_in_the_oneshot_form() -> None:
    recipe = load_text(adapter("""\
        jobs:
          prompt_with_files: "{prompt} (files: {files})"
          oneshot: [tool, -p, "{message}"]
          ignore: [".tool*"]
        """)).jobs
    assert oneshot_argv(recipe, job(cwd="/x", files=("/x/a.py",))) == [
        "tool", "-p", "fix it (files: a.py)"]
    assert oneshot_argv(recipe, job(cwd="/x")) == ["tool", "-p", "fix it"]
    assert recipe.ignore == (".tool*",)


def test_message_is_for_the_oneshot_form_only() -> None:
    message = error_of(adapter('jobs:\n  prompt: "{message}"\n'))
    assert "jobs.prompt: unknown placeholder {message}" in message
    assert "{message} is for jobs.oneshot and jobs.oneshot_env only" in message
