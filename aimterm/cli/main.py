"""The ``aimterm`` command. Exceptions become exit codes here, and only here.

Every command imports what it needs inside its body, so ``aimterm --help`` and status-type
calls stay fast.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from aimterm.errors import AimtermError
from aimterm.version import __version__

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn aimterm errors into a one-line message on stderr and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AimtermError as exc:
            click.echo(f"aimterm: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("aimterm: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aimterm")
def cli() -> None:
    """Run many interactive CLIs (AI coding agents, REPLs) under real PTYs as one fleet."""


@cli.command()
@click.option("--adapter", "adapter_name", default="demo", show_default=True,
              help="Adapter of the fleet.")
@click.option("-n", "--count", type=click.IntRange(1, 64), default=3, show_default=True,
              help="Instances to start.")
@click.option("--think", type=float, default=0.5, show_default=True,
              help="Demo agent think time per turn, in seconds.")
@click.option("--cast", type=click.Path(file_okay=False), default=None,
              help="Save each instance's session as an asciicast v2 file in this folder.")
@handle_errors
def demo(adapter_name: str, count: int, think: float, cast: str | None) -> None:
    """Start a fleet of demo agents, route a batch of prompts over it, show it all live."""
    from aimterm.cli.demo import run_demo

    sys.exit(run_demo(adapter_name, count=count, think=think, cast=cast))


@cli.group()
def adapter() -> None:
    """Write, check and try adapters (the YAML that teaches aimterm a tool)."""


@adapter.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def adapter_list(as_json: bool) -> None:
    """List adapters on the search path, and where each came from."""
    import json

    from aimterm.adapter.registry import AdapterRegistry

    infos = AdapterRegistry().list()
    if as_json:
        click.echo(json.dumps([{"name": i.name, "origin": i.origin, "path": str(i.path),
                                "overrides": [str(p) for p in i.overrides]} for i in infos],
                              indent=2))
        return
    width = max((len(i.name) for i in infos), default=4)
    for info in infos:
        extra = f"  (overrides {', '.join(map(str, info.overrides))})" if info.overrides else ""
        click.echo(f"{info.name:<{width}}  {info.origin:<7}  {info.path}{extra}")


@adapter.command("show")
@click.argument("name")
@handle_errors
def adapter_show(name: str) -> None:
    """Print an adapter as resolved (after extends), in the file format."""
    from aimterm.adapter.loader import spec_to_dict
    from aimterm.adapter.registry import load_adapter
    from aimterm.adapter.yamlfile import dump_yaml

    spec = load_adapter(name)
    click.echo(f"# {spec.name} from {spec.source} ({spec.origin})")
    click.echo(dump_yaml(spec_to_dict(spec)).rstrip())


@adapter.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
def adapter_validate(paths: tuple[str, ...]) -> None:
    """Check adapter files; print every error as path:line: key: what was expected."""
    from aimterm.adapter.registry import load_adapter

    failed = 0
    for path in paths:
        try:
            spec = load_adapter(path)
        except AimtermError as exc:
            failed += 1
            click.echo(str(exc), err=True)
            continue
        click.echo(f"{path}: ok ({spec.name}, {len(spec.states)} state rules)")
    if failed:
        sys.exit(2)


@adapter.command("schema")
def adapter_schema() -> None:
    """Print the JSON Schema of adapter files (for editor completion)."""
    from aimterm.adapter.schema import schema_json

    click.echo(schema_json())


@adapter.command("test")
@click.argument("name")
@click.option("--prompt", "prompts", multiple=True, required=True,
              help="Prompt to send (repeat for several turns).")
@click.option("--cwd", type=click.Path(file_okay=False), default=None,
              help="Working directory for the tool.")
@click.option("--timeout", type=float, default=None, help="Turn timeout in seconds.")
@click.option("--cast", type=click.Path(dir_okay=False), default=None,
              help="Save the session as an asciicast v2 file.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def adapter_test(name: str, prompts: tuple[str, ...], cwd: str | None, timeout: float | None,
                 cast: str | None, as_json: bool) -> None:
    """Run live turns and print the reply, timings and every state change with its cause."""
    from aimterm.cli.demo import run_adapter_test

    sys.exit(run_adapter_test(name, list(prompts), cwd=cwd, timeout=timeout, cast=cast,
                              as_json=as_json))


@adapter.command("doctor")
@click.argument("name")
@click.option("--timeout", type=float, default=90.0, show_default=True,
              help="Seconds the start-up and the turn may take each.")
@click.option("--strict", is_flag=True, help="Exit 1 on a warning too (not only on a failure).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def adapter_doctor(name: str, timeout: float, strict: bool, as_json: bool) -> None:
    """Check that adapter NAME still drives the installed tool.

    Finds the tool, reads its version (and whether the adapter was verified with it), then
    runs one live turn against a fake model started on 127.0.0.1, in a throwaway HOME and
    folder: start-up dialogs, ready, busy, idle, whether the reply is the model's text
    exactly, and a clean quit. Exit 0 when it works (warnings included, unless --strict),
    1 when it does not.

    Example: aimterm adapter doctor claude
    """
    from aimterm.cli.doctor import run_doctor

    sys.exit(run_doctor(name, as_json=as_json, timeout=timeout, strict=strict))


@adapter.command("record")
@click.argument("name")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the asciicast v2 recording.")
@click.option("--prompt", "prompts", multiple=True,
              help="Send this prompt (repeatable); without any, you drive the tool by hand "
                   "and leave with Ctrl-].")
@click.option("--cwd", type=click.Path(file_okay=False), default=None)
@click.option("--timeout", type=float, default=None, help="Turn timeout in seconds.")
@handle_errors
def adapter_record(name: str, output: str, prompts: tuple[str, ...], cwd: str | None,
                   timeout: float | None) -> None:
    """Run a live session and save it, with aimterm's state changes as markers."""
    from aimterm.cli.demo import run_record

    sys.exit(run_record(name, output, list(prompts), cwd=cwd, timeout=timeout))


@adapter.command("explain")
@click.argument("recording", type=click.Path(exists=True, dir_okay=False))
@click.option("--adapter", "adapter_name", required=True, help="Adapter to replay it through.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--strict", is_flag=True, help="Exit 1 when anything is flagged.")
@handle_errors
def adapter_explain(recording: str, adapter_name: str, as_json: bool, strict: bool) -> None:
    """Replay a recording through an adapter: every state change, its rule and the text
    that matched, and the spots that look wrong."""
    from aimterm.cli.demo import run_explain

    sys.exit(run_explain(recording, adapter_name, as_json=as_json, strict=strict))


def _where_options(fn: F) -> F:
    """``-c FILE`` / ``--state-dir DIR``: which cluster (the daemon finds its socket the same way)."""
    fn = click.option("--state-dir", type=click.Path(file_okay=False), default=None,
                      help="State dir of the cluster (overrides the file's state_dir).")(fn)
    fn = click.option("-c", "--config", type=click.Path(dir_okay=False), default=None,
                      help="Cluster file (default: the embedded one, three demo instances).")(fn)
    return fn


@cli.group("jobs", short_help="Run job files on the fleet; check them; see past runs.")
def jobs() -> None:
    """Jobs: a prompt for a tool, the files it works on, the commands that decide success.

    A job file (YAML or JSON) holds one job, a list of jobs, or {jobs: [...]}, in aimterm's
    form or the original plan's (job_id, command, paths, metadata); docs/jobs.md describes
    both. `jobs run` runs every job of a file in parallel (pooled instances, or the tool's
    one-shot command) and keeps the results in the store; `jobs list` and `jobs show` read
    them back. Also spelled `aimterm job`.

    Example: cp -r examples/jobs /tmp/jobs && aimterm jobs run /tmp/jobs/refactor.yaml
    """


@jobs.command("run")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--mode", type=click.Choice(["auto", "pooled", "oneshot"]), default="auto",
              show_default=True,
              help="auto: pooled when the adapter supports it and instances that fit are up "
                   "or several jobs share a tool and folder, one-shot otherwise; pooled or "
                   "oneshot force one form.")
@click.option("-n", "--instances", type=click.IntRange(1, 64), default=3, show_default=True,
              help="Instances started per tool (and folder) for pooled jobs.")
@click.option("--local", is_flag=True,
              help="Run the jobs in this process even when a daemon is up (by default the "
                   "daemon runs them, on its instances of a job's tool in the job's folder).")
@click.option("--detach", is_flag=True,
              help="Hand the run to the daemon and return at once with its id "
                   "(aimterm jobs show RUN later).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the run and every result as JSON on stdout (progress on stderr, "
                   "when it is a terminal).")
@_where_options
@handle_errors
def jobs_run(path: str, mode: str, instances: int, local: bool, detach: bool, as_json: bool,
             config: str | None, state_dir: str | None) -> None:
    """Run every job of PATH (a job file, or - for stdin) in parallel; exit 0 only if every
    job succeeded (its acceptance commands passed), 1 if any did not, 130 on Ctrl-C.

    With a daemon up the daemon runs them (they go on if this command goes away); else they
    run here. Results, attempts and events go to the store of the state dir: aimterm jobs
    show RUN.
    """
    from aimterm.cli.jobs_run import run_jobs

    sys.exit(run_jobs(path, config=config, state_dir=state_dir, mode=mode,
                      instances=instances, as_json=as_json, local=local, detach=detach))


@jobs.command("cancel")
@click.argument("run_id", metavar="RUN")
@_where_options
@handle_errors
def jobs_cancel(run_id: str, config: str | None, state_dir: str | None) -> None:
    """Stop a run the daemon is running: no job gets another attempt, the turns in flight
    are interrupted, the jobs not done end cancelled."""
    from aimterm.cli.jobs import run_cancel

    sys.exit(run_cancel(config, state_dir, run_id))


@jobs.command("list")
@click.option("-n", "--limit", type=click.IntRange(1, 10000), default=20, show_default=True,
              help="How many runs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="The runs as JSON.")
@_where_options
@handle_errors
def jobs_list(limit: int, as_json: bool, config: str | None, state_dir: str | None) -> None:
    """The job runs the store keeps, newest first."""
    from aimterm.cli.jobs import run_list

    sys.exit(run_list(config, state_dir, limit=limit, as_json=as_json))


@jobs.command("show")
@click.argument("ident", metavar="RUN|RUN/JOB|JOB")
@click.option("--json", "as_json", is_flag=True,
              help="The run, its jobs (spec and result), attempts and events as JSON.")
@_where_options
@handle_errors
def jobs_show(ident: str, as_json: bool, config: str | None, state_dir: str | None) -> None:
    """One run: each job's status, error, changed files, acceptance and attempts. A job id
    alone means its newest run."""
    from aimterm.cli.jobs import run_show

    sys.exit(run_show(config, state_dir, ident, as_json=as_json))


@jobs.command("schema")
@click.option("--result", is_flag=True, help="The schema of a job result instead.")
def jobs_schema(result: bool) -> None:
    """Print the JSON Schema of job files (for editor completion and other tools)."""
    from aimterm.cli.jobs import run_schema

    sys.exit(run_schema(result))


@jobs.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--any-tool", is_flag=True,
              help="Do not check that each job's tool is an adapter on the search path.")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as loaded (paths "
                                                      "resolved, the plan's form mapped).")
@handle_errors
def jobs_validate(paths: tuple[str, ...], any_tool: bool, as_json: bool) -> None:
    """Check job files: print "FILE: ok: N jobs", or the mistake as path:line: key: what was
    expected (exit 2).

    Example: aimterm jobs validate examples/jobs/refactor.yaml
    """
    from aimterm.cli.jobs import run_validate

    sys.exit(run_validate(paths, check_tools=not any_tool, as_json=as_json))


# The issue spells it `aimterm job`: the same commands, kept out of the command list.
cli.add_command(click.Group("job", commands=jobs.commands, help=jobs.help, hidden=True))



@cli.command("run")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True,
              help="Check the plan and print its levels, parallelism, critical path and which "
                   "steps can run together; run nothing.")
@click.option("--resume", "resume", metavar="RUN", default=None,
              help="Go on with an interrupted run: merged steps are not redone, running "
                   "ones are.")
@click.option("--keep-worktrees", is_flag=True,
              help="Keep every step's worktree (one whose work did not merge is always kept).")
@click.option("--max-concurrency", type=click.IntRange(1, 64), default=None,
              help="Steps running at once (default: the plan's globals.max_concurrency).")
@click.option("--var", "variables", multiple=True, metavar="KEY=VALUE",
              help="Replace ${KEY} in the plan's strings; repeatable.")
@click.option("-C", "--repo", type=click.Path(file_okay=False, exists=True), default=None,
              help="The git repository the plan works on (default: the current directory's).")
@click.option("--local", is_flag=True,
              help="Run the plan in this process even when a daemon is up (by default the "
                   "daemon runs it, and it goes on if this command goes away).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the run's result as JSON on stdout (progress on stderr).")
@_where_options
@handle_errors
def run_cmd(plan: str, dry_run: bool, resume: str | None, keep_worktrees: bool,
            max_concurrency: int | None, variables: tuple[str, ...], repo: str | None,
            local: bool, as_json: bool, config: str | None, state_dir: str | None) -> None:
    """Run PLAN (YAML or JSON): a graph of steps, each a job for one tool in a git worktree
    and branch of its own (aimterm/PLAN_ID/STEP_ID), merged back one at a time into the
    integration branch aimterm/PLAN_ID/integration, each merge tested by the step's
    acceptance tests before the next. Your own checkout is never touched.

    With a daemon up the daemon runs it (it goes on if this command goes away); else it
    runs here. Exit 0 if every step succeeded (or was skipped), 1 if any failed, 130 on
    Ctrl-C, 2 for a bad plan. docs/plans.md describes the format; aimterm runs show RUN the
    record.
    """
    from aimterm.cli.plans import parse_vars, run_plan

    sys.exit(run_plan(plan, dry_run=dry_run, resume=resume, keep_worktrees=keep_worktrees,
                      max_concurrency=max_concurrency, variables=parse_vars(variables),
                      repo=repo, as_json=as_json, config=config, state_dir=state_dir,
                      local=local))


@cli.group("runs")
def runs() -> None:
    """The plan runs the store keeps (aimterm run PLAN makes them)."""


@runs.command("list")
@click.option("-n", "--limit", type=click.IntRange(1, 10000), default=20, show_default=True,
              help="How many runs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="The runs as JSON.")
@_where_options
@handle_errors
def runs_list(limit: int, as_json: bool, config: str | None, state_dir: str | None) -> None:
    """Plan runs, newest first: plan, status, steps in each state, the integration branch."""
    from aimterm.cli.plans import run_runs_list

    sys.exit(run_runs_list(config, state_dir, limit=limit, as_json=as_json))


@runs.command("show")
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True,
              help="The run, its steps, attempts and events as JSON.")
@_where_options
@handle_errors
def runs_show(run_id: str, as_json: bool, config: str | None, state_dir: str | None) -> None:
    """One plan run: each step's state, attempts, branch, merge commit and error; kept
    worktrees, conflicts and failed gates with their output."""
    from aimterm.cli.plans import run_runs_show

    sys.exit(run_runs_show(config, state_dir, run_id, as_json=as_json))

@cli.group()
def cluster() -> None:
    """Run a cluster daemon and manage it (up, status, scale, restart, down), and print the
    JSON Schemas of its file and of its status (schema)."""


@cluster.command("up")
@_where_options
@click.option("--detach", is_flag=True, help="Run the daemon in the background and return.")
@handle_errors
def cluster_up(config: str | None, state_dir: str | None, detach: bool) -> None:
    """Start the cluster's daemon (in the foreground with a live status line, or detached)."""
    from aimterm.cli.cluster import run_up

    sys.exit(run_up(config, state_dir, detach))


@cluster.command("status")
@_where_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def cluster_status(config: str | None, state_dir: str | None, as_json: bool) -> None:
    """Show the daemon and every instance: state, pid, turns, restarts."""
    from aimterm.cli.cluster import run_status

    sys.exit(run_status(config, state_dir, as_json))


@cluster.command("schema")
@click.option("--status", "status", is_flag=True,
              help="The schema of what `aimterm cluster status --json` prints instead.")
def cluster_schema(status: bool) -> None:
    """Print the JSON Schema of the cluster file (for editors and other tools).

    The file is what `aimterm cluster up -c FILE` reads; the loader checks the same rules,
    each mistake as path:line: key: what was expected, plus two no schema can state (one
    group per adapter, all counts together at most max_instances). With --status: the
    schema of `aimterm cluster status --json` (the daemon, each instance, the queue).
    docs/cluster.md describes both.

    Example: aimterm cluster schema > cluster.schema.json
    """
    from aimterm.cli.cluster import run_schema

    sys.exit(run_schema(status))


@cluster.command("down")
@_where_options
@handle_errors
def cluster_down(config: str | None, state_dir: str | None) -> None:
    """Stop every instance gracefully, then the daemon."""
    from aimterm.cli.cluster import run_down

    sys.exit(run_down(config, state_dir))


@cluster.command("scale")
@_where_options
@click.argument("tool")
@click.argument("count", type=click.IntRange(0, 256))
@handle_errors
def cluster_scale(config: str | None, state_dir: str | None, tool: str, count: int) -> None:
    """Run COUNT instances of TOOL (idle ones stop first when scaling down)."""
    from aimterm.cli.cluster import run_scale

    sys.exit(run_scale(config, state_dir, tool, count))


@cluster.command("restart")
@_where_options
@click.argument("instance_id")
@handle_errors
def cluster_restart(config: str | None, state_dir: str | None, instance_id: str) -> None:
    """Stop and start one instance (also clears FATAL)."""
    from aimterm.cli.cluster import run_restart

    sys.exit(run_restart(config, state_dir, instance_id))


@cli.command()
@_where_options
@click.argument("prompt")
@click.option("--tool", default=None, help="Only instances of this adapter.")
@click.option("--to", "to", default=None, help="This instance (by id).")
@click.option("--key", default=None, help="Keep prompts with the same key on one instance "
                                          "(sticky routing).")
@click.option("--tag", "tags", multiple=True, help="Only instances with this tag (repeatable).")
@click.option("--timeout", type=float, default=None, help="Turn timeout in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole turn as JSON.")
@click.option("--no-wait", is_flag=True, help="Queue the prompt and return its request id.")
@handle_errors
def send(config: str | None, state_dir: str | None, prompt: str, tool: str | None,
         to: str | None, key: str | None, tags: tuple[str, ...], timeout: float | None,
         as_json: bool, no_wait: bool) -> None:
    """Send PROMPT (or - for stdin) to the cluster and print the reply."""
    from aimterm.cli.cluster import run_send

    sys.exit(run_send(config, state_dir, prompt, tool=tool, to=to, key=key, tags=list(tags),
                      timeout=timeout, as_json=as_json, no_wait=no_wait))


@cli.command()
@_where_options
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they happen.")
@click.option("--since", type=click.IntRange(0), default=0, show_default=True,
              help="Only events after this sequence number.")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help="Only events of this kind (repeatable; docs/events.md lists them).")
@click.option("--instance", "instance_id", default=None, metavar="ID",
              help="Only events of this instance.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@handle_errors
def events(config: str | None, state_dir: str | None, follow: bool, since: int,
           kinds: tuple[str, ...], instance_id: str | None, as_json: bool) -> None:
    """Print the cluster's event history (state changes, turns, restarts, crashes)."""
    from aimterm.cli.events import run_events

    sys.exit(run_events(config, state_dir, follow, since, as_json, kinds=list(kinds),
                        instance=instance_id))


@cli.command()
@_where_options
@click.argument("instance_id")
@click.argument("keys", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the reply as JSON.")
@handle_errors
def answer(config: str | None, state_dir: str | None, instance_id: str,
           keys: tuple[str, ...], as_json: bool) -> None:
    """Answer the question an instance is waiting on. KEYS are key names (enter, escape,
    up, ctrl-c, ...) and text, sent in order: aimterm answer ID y enter."""
    from aimterm.cli.cluster import run_answer

    sys.exit(run_answer(config, state_dir, instance_id, list(keys), as_json))


@cli.command()
@_where_options
@click.argument("instance_id")
@click.option("--json", "as_json", is_flag=True, help="Print the reply as JSON.")
@handle_errors
def interrupt(config: str | None, state_dir: str | None, instance_id: str,
              as_json: bool) -> None:
    """Interrupt an instance's turn (the adapter's interrupt keys); the turn ends interrupted."""
    from aimterm.cli.cluster import run_interrupt

    sys.exit(run_interrupt(config, state_dir, instance_id, as_json))


@cli.command()
@_where_options
@click.argument("instance_id")
@click.option("--no-wait", is_flag=True, help="Return at once instead of when it is gone.")
@click.option("--json", "as_json", is_flag=True, help="Print the reply as JSON.")
@handle_errors
def drain(config: str | None, state_dir: str | None, instance_id: str, no_wait: bool,
          as_json: bool) -> None:
    """Let an instance finish its turn, take no more, then stop and remove it."""
    from aimterm.cli.cluster import run_drain

    sys.exit(run_drain(config, state_dir, instance_id, not no_wait, as_json))


@cli.command()
@_where_options
@click.argument("instance_id")
@click.option("-n", "--lines", type=click.IntRange(1, 10000), default=None,
              help="Only the last N lines of the screen.")
@click.option("--json", "as_json", is_flag=True,
              help="The screen as JSON (lines, rows, cols, state).")
@handle_errors
def screen(config: str | None, state_dir: str | None, instance_id: str, lines: int | None,
           as_json: bool) -> None:
    """Print what an instance's terminal shows now, as text."""
    from aimterm.cli.cluster import run_screen

    sys.exit(run_screen(config, state_dir, instance_id, lines, as_json))


@cli.command()
@_where_options
@click.argument("instance_id", required=False)
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="How many turns, newest first.")
@click.option("--json", "as_json", is_flag=True, help="The turns as JSON (prompt, reply, ...).")
@handle_errors
def turns(config: str | None, state_dir: str | None, instance_id: str | None, limit: int,
          as_json: bool) -> None:
    """List the last turns of the cluster (or of one instance): prompt, status, reply."""
    from aimterm.cli.cluster import run_turns

    sys.exit(run_turns(config, state_dir, instance_id, limit, as_json))


@cli.command()
@_where_options
@click.argument("instance_id")
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing as the instance writes (follows it across restarts).")
@click.option("--raw", is_flag=True, help="The output bytes as the tool wrote them, escape "
                                          "sequences included.")
@click.option("-n", "--lines", type=click.IntRange(0), default=None,
              help="Only the last N lines of what is there (rendered).")
@click.option("-p", "--previous", type=click.IntRange(0, 3), default=0, show_default=True,
              help="A run before the last restart (1 = the one before, up to 3).")
@handle_errors
def logs(config: str | None, state_dir: str | None, instance_id: str, follow: bool, raw: bool,
         lines: int | None, previous: int) -> None:
    """Print an instance's terminal: rendered text, or the raw transcript (--raw)."""
    from aimterm.cli.logs import run_logs

    sys.exit(run_logs(config, state_dir, instance_id, follow=follow, raw=raw, lines=lines,
                      previous=previous))


@cli.command()
@_where_options
@click.argument("instance_id")
@click.option("--read-only", is_flag=True, help="Watch only: keystrokes are not sent, and "
                                               "automation keeps using the instance.")
@click.option("--detach-key", default="ctrl-]", show_default=True,
              help="Key that gives the instance back and leaves (ctrl-<key>).")
@handle_errors
def attach(config: str | None, state_dir: str | None, instance_id: str, read_only: bool,
           detach_key: str) -> None:
    """Take over an instance's terminal (automation pauses) until the detach key."""
    from aimterm.cli.attach import parse_detach_key, run_attach

    key = parse_detach_key(detach_key)
    sys.exit(run_attach(config, state_dir, instance_id, read_only=read_only, detach_key=key))


@cli.command()
@_where_options
@click.option("--approve", "approve", default="y", show_default=True, metavar="KEYS",
              help="What `y` answers a waiting instance: key names and text, space-separated "
                   "(as `aimterm answer` takes them).")
@click.option("--reject", "reject", default="n", show_default=True, metavar="KEYS",
              help="What `n` answers a waiting instance.")
@click.option("--retry", "retry_s", type=click.FloatRange(0.1, 60), default=1.0,
              show_default=True, help="Seconds between attempts to reach a daemon that is not "
                                      "there.")
@click.option("--web", is_flag=True, help="Serve it to browsers on 127.0.0.1 instead, behind a "
                                          "random token; prints the address to open.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="With --web: the port (0: a free one).")
@handle_errors
def dashboard(config: str | None, state_dir: str | None, approve: str, reject: str,
              retry_s: float, web: bool, port: int) -> None:
    """A live view of the cluster: instances grouped by what they need, the selected one's
    screen, its question (approve, reject, answer), the event stream; send prompts. It
    follows the daemon's events (and waits for a daemon that is not up yet). ? shows the keys.

    Example: aimterm cluster up --detach && aimterm dashboard
    """
    import os

    from aimterm.config import resolve_config
    from aimterm.dashboard import run_dashboard

    cfg = resolve_config(config, state_dir)
    where: list[str] = []
    if config is not None:
        where += ["-c", os.path.abspath(config)]
    if state_dir is not None:
        where += ["--state-dir", os.path.abspath(state_dir)]
    if web:
        from aimterm.dashboard.web import serve_dashboard

        # Each browser tab runs this same dashboard, on the same cluster.
        served = [sys.executable, "-m", "aimterm", "dashboard", *where, "--approve", approve,
                  "--reject", reject, "--retry", str(retry_s)]
        try:
            code = serve_dashboard(served, port=port)
        except OSError as exc:  # the port is taken, most likely
            click.echo(f"aimterm: cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}",
                       err=True)
            sys.exit(1)
        sys.exit(code)
    # `t` hands the terminal to `aimterm attach` for the same cluster.
    attach = [sys.executable, "-m", "aimterm", "attach", *where]
    sys.exit(run_dashboard(str(cfg.socket_path), approve=approve.split(),
                           reject=reject.split(), retry_s=retry_s, attach_command=attach))


def main() -> None:
    cli(prog_name="aimterm")


if __name__ == "__main__":  # pragma: no cover
    main()
