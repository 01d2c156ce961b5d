"""``pgolf runs|leaderboard|sweep|task|try|feed``: the run registry and what is built on it.

    pgolf runs list [--tag T] [--preset P] [--dataset D] [--machine M] [--since 2026-05-01] [--json]
    pgolf runs show RUN             pgolf runs compare RUN_OR_CONFIG RUN_OR_CONFIG ...
    pgolf runs import DIR_OR_LOG ... (pgolf run directories, records folders, official logs)
    pgolf leaderboard [--preset cpu] [--min-seeds 3] [--json]
    pgolf sweep SPEC.yaml [--dry-run | --status]
    pgolf task          pgolf try --set KEY=VALUE ...          pgolf feed [--post TEXT]

``--registry URL`` (or ``PGOLF_REGISTRY``) selects the database: a SQLAlchemy URL or a SQLite path.
A RUN is a run id (a unique prefix will do) or the run directory (or imported log) it was recorded from.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

RegistryOpt = Annotated[str | None, typer.Option(
    "--registry", help="SQLAlchemy URL or SQLite file (default: $PGOLF_REGISTRY, else "
                       "$XDG_DATA_HOME/pgolf/registry.sqlite).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
TagOpt = Annotated[str | None, typer.Option("--tag", help="Only runs with this tag.")]
PresetOpt = Annotated[str | None, typer.Option("--preset", help="Only runs of this preset.")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", help="Only runs on this dataset (its directory name).")]
MachineOpt = Annotated[str | None, typer.Option("--machine", help="Only runs on this machine (CPU or GPU model).")]
SinceOpt = Annotated[str | None, typer.Option("--since", help="Created at or after (ISO date or time).")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Created up to (ISO date: through that day).")]
MetricOpt = Annotated[str, typer.Option("--metric", help="metrics.json key to rank by (lower is better).")]


def _open(url: str | None):
    from pgolf.track.registry import open_registry

    return open_registry(url)


def _filters(tag, preset, dataset, machine, since, until) -> dict:  # noqa: ANN001
    return {k: v for k, v in dict(tag=tag, preset=preset, dataset=dataset, machine=machine, since=since,
                                  until=until).items() if v is not None}


def _scope(preset, dataset, machine, any_machine, tag):  # noqa: ANN001
    from pgolf.track.agent import Scope
    from pgolf.track.jobs import this_machine

    return Scope(preset=preset, dataset=dataset, machine=None if any_machine else (machine or this_machine()), tag=tag)


def _by_path(reg, ref: str) -> list | None:  # noqa: ANN001
    """The records of the run directory (or imported log) ``ref``, its training result first; None when
    ``ref`` is no path (a run id or hash); RegistryError for a missing path or one nothing was recorded from."""
    from pgolf.track.leaderboard import SEED_KINDS
    from pgolf.track.registry import RegistryError

    p = Path(ref)
    if not p.exists():
        if "/" in ref or ref in (".", ".."):  # a path, never a run id or hash
            raise RegistryError(f"{ref}: no such run directory")
        return None
    target = str(p.resolve())
    found = [r for r in reg.runs() if r.run_dir == target]
    if not found:
        raise RegistryError(f"{ref}: nothing recorded from this path in {reg.shown_url} (`pgolf runs import {ref}` "
                            "records it)")
    return sorted(found, key=lambda r: r.kind not in SEED_KINDS)  # stable: newest first within each


def _stderr_status():  # noqa: ANN202
    """A rich console on stderr when it is a terminal (its ``status`` shows a spinner naming the step), else
    None: piped or logged output stays plain lines, as ``pgolf run`` shows its progress bar only on a TTY."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _log_to(console):  # noqa: ANN001, ANN202
    """Lines to stderr: through ``console`` (so they print above its spinner, no markup), else plainly."""
    if console is None:
        return lambda m: print(m, file=sys.stderr, flush=True)
    return lambda m: console.print(m, markup=False, highlight=False)


def _no_status(message: str):  # noqa: ANN202
    import contextlib

    return contextlib.nullcontext()


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler or ``kill``) stops like Ctrl-C: the running unit or candidate is released at once
    and its training child killed, instead of waiting to be found stale."""
    import signal
    import threading

    def stop(signum, frame):  # noqa: ANN001
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def register(app: typer.Typer) -> None:
    runs_app = typer.Typer(no_args_is_help=True, help="The run registry: list, show, compare, import, tag.")
    app.add_typer(runs_app, name="runs")

    @runs_app.command("list")
    def runs_list(registry: RegistryOpt = None, tag: TagOpt = None, preset: PresetOpt = None,
                  dataset: DatasetOpt = None, machine: MachineOpt = None, since: SinceOpt = None,
                  until: UntilOpt = None,
                  kind: Annotated[str | None, typer.Option("--kind", help="run, train, eval, export or import.")] = None,
                  limit: Annotated[int, typer.Option("--limit", help="At most this many (newest first).")] = 50,
                  as_json: JsonOpt = False) -> None:
        """Recorded runs, newest first."""
        from pgolf.track import views

        with _open(registry) as reg:
            recs = reg.runs(kind=kind, limit=limit, **_filters(tag, preset, dataset, machine, since, until))
        if as_json:
            views.dump([r.model_dump() for r in recs])
        else:
            views.console().print(views.runs_table(recs))

    @runs_app.command("show")
    def runs_show(run: Annotated[str, typer.Argument(help="Run id (a unique prefix will do) or its run directory.")],
                  registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
        """One run: config, metrics, hardware, versions, curves."""
        from pgolf.track import views

        with _open(registry) as reg:
            found = _by_path(reg, run)
            rec = found[0] if found else reg.get_run(run)
        if as_json:
            views.dump(rec.full())
            return
        print(views.run_text(rec))
        if found and len(found) > 1:
            print("  also recorded from this directory: " + ", ".join(f"{r.run_id} ({r.kind})" for r in found[1:]))

    @runs_app.command("compare")
    def runs_compare(refs: Annotated[list[str], typer.Argument(help="Run ids, run directories or config hashes "
                                                                    "(prefixes).")],
                     registry: RegistryOpt = None, machine: MachineOpt = None, metric: MetricOpt = "val_bpb",
                     as_json: JsonOpt = False) -> None:
        """Compare runs or configs (all their seeds): metric mean ± std, difference, Welch p, and the
        result-changing config fields that differ (seed, paths, threads … are named apart)."""
        from pgolf.track import views
        from pgolf.track.leaderboard import compare, config_diff
        from pgolf.track.registry import RegistryError

        if len(refs) < 2:
            raise RegistryError("runs compare needs at least two run ids or config hashes")
        groups = []
        with _open(registry) as reg:
            for ref in refs:
                found = _by_path(reg, ref)
                one = found[:1] if found else reg.runs(run_id=ref, machine=machine, limit=2)
                if len(one) == 1:
                    groups.append(one)
                    continue
                recs = reg.runs(config_hash=ref, machine=machine)
                hashes = {r.config_hash for r in recs}
                if len(hashes) != 1:
                    raise RegistryError(f"{ref!r} is {'ambiguous' if hashes or one else 'neither a run id nor a config hash'}"
                                        f" in {reg.shown_url}")
                groups.append(recs)
        rows = compare(groups, metric)
        configs = [g[0].config for g in groups]
        diff = config_diff(configs)
        other = {k: v for k, v in config_diff(configs, all_fields=True).items() if k not in diff}
        if as_json:
            views.dump({"rows": rows, "config_diff": diff, "other_diff": other})
        else:
            for t in views.compare_table(rows, diff, metric, other):
                views.console().print(t)

    @runs_app.command("import")
    def runs_import(paths: Annotated[list[Path], typer.Argument(help="Run directories, folders of them, records "
                                                                     "folders or official-format log files.")],
                    registry: RegistryOpt = None,
                    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag every imported run.")] = None) -> None:
        """Import existing results (idempotent: a run already in the registry is kept once)."""
        from pgolf.track.record import discover

        recs, skipped = discover(list(paths), tags=tag or [])
        with _open(registry) as reg:
            new = sum(reg.add_run(r) for r in recs)
            shown = reg.shown_url
        print(f"imported {new} new runs ({len(recs) - new} already there) into {shown}"
              + (f"; skipped {len(skipped)}:" if skipped else ""))
        for s in skipped:
            print(f"  skipped {s if '(' in s else s + ' (no training lines)'}")

    @runs_app.command("tag")
    def runs_tag(run_id: Annotated[str, typer.Argument(help="Run id (prefix).")],
                 tags: Annotated[list[str], typer.Argument(help="Tags to add.")], registry: RegistryOpt = None) -> None:
        """Add tags to a run."""
        with _open(registry) as reg:
            reg.tag(run_id, tags)
        print(f"tagged {run_id}: {', '.join(tags)}")

    @app.command("leaderboard")
    def leaderboard_cmd(registry: RegistryOpt = None, metric: MetricOpt = "val_bpb", tag: TagOpt = None,
                        preset: PresetOpt = None, dataset: DatasetOpt = None, machine: MachineOpt = None,
                        since: SinceOpt = None, until: UntilOpt = None,
                        min_seeds: Annotated[int, typer.Option("--min-seeds", min=1, help="Seeds a configuration needs "
                                                               "to rank above those with fewer.")] = 3,
                        limit: Annotated[int, typer.Option("--limit", help="Rows to show.")] = 30,
                        as_json: JsonOpt = False) -> None:
        """Configs ranked by mean metric over seeds (n, std, one-sided Welch p vs the reference); configs with
        fewer than --min-seeds seeds rank below the rest, marked *."""
        from pgolf.track import views
        from pgolf.track.leaderboard import leaderboard, notes

        with _open(registry) as reg:
            rows = leaderboard(reg.runs(**_filters(tag, preset, dataset, machine, since, until)), metric,
                               min_seeds=min_seeds)
        if as_json:
            views.dump(rows[:limit])
            return
        views.console().print(views.leaderboard_table(rows[:limit], metric))
        for line in notes(rows, min_seeds) + ([f"({len(rows) - limit} more rows: --limit)"] if len(rows) > limit else []):
            print(line)

    @app.command("sweep")
    def sweep_cmd(spec: Annotated[Path, typer.Argument(help="Sweep spec (YAML).")], registry: RegistryOpt = None,
                  dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and list the units; run nothing.")] = False,
                  show_status: Annotated[bool, typer.Option("--status", help="Show units, claims and results.")] = False,
                  max_units: Annotated[int | None, typer.Option("--max-units", help="Stop after this many units.")] = None,
                  as_json: JsonOpt = False) -> None:
        """Run a sweep worker (start as many as you like, anywhere, on the same registry)."""
        from pgolf.track import views
        from pgolf.track.sweep import Worker, load_spec, plan, status

        s = load_spec(spec)
        if dry_run:
            units, state = plan(s, {})
            base = s.base_config()
            from pgolf.config import apply_overrides

            for u in units:  # every unit's config must build
                apply_overrides(base, u.overrides(s))
            out = {"sweep": s.name, "mode": s.mode, "seeds": s.seeds, "units": [
                {"unit": u.key, "round": u.round, "overrides": u.overrides(s)} for u in units], "out": str(s.out_dir)}
            if as_json:
                views.dump(out)
            else:
                print(f"sweep {s.name} ({s.mode}), seeds {s.seeds}, out {s.out_dir}; units now:")
                for u in out["units"]:
                    print(f"  {u['unit']}: {' '.join(u['overrides']) or '(base)'}")
            return
        with _open(registry) as reg:
            if show_status:
                st = status(s, reg)
                views.dump(st) if as_json else views.console().print(views.status_table(st))
                return
            _stop_on_sigterm()
            state = Worker(s, reg).run(max_units=max_units)
            st = status(s, reg)
        if as_json:
            views.dump(st)
        else:
            print(f"sweep {s.name}: {'done' if state['done'] else state.get('stopped', 'stopped')}"
                  + (f"; selected {state['selected']}" if state.get("selected") is not None else ""))
            views.console().print(views.status_table(st))

    @app.command("task")
    def task_cmd(registry: RegistryOpt = None, preset: PresetOpt = None, dataset: DatasetOpt = None,
                 machine: MachineOpt = None,
                 any_machine: Annotated[bool, typer.Option("--any-machine", help="Do not restrict to this machine.")] = False,
                 tag: TagOpt = None, alpha: Annotated[float, typer.Option("--alpha", help="Keep if p < alpha.")] = 0.25,
                 as_json: JsonOpt = False) -> None:
        """Print the task for an external agent: what may change, how it is scored, the current best."""
        from pgolf.track import views
        from pgolf.track.agent import task, task_markdown

        with _open(registry) as reg:
            t = task(reg, _scope(preset, dataset, machine, any_machine, tag), alpha=alpha)
        views.dump(t) if as_json else print(task_markdown(t))

    @app.command("try")
    def try_cmd(set_: Annotated[list[str] | None, typer.Option("--set", help="Override of the best's config.")] = None,
                config: Annotated[Path | None, typer.Option("--config", help="A config.json to try instead.")] = None,
                registry: RegistryOpt = None, preset: PresetOpt = None, dataset: DatasetOpt = None,
                machine: MachineOpt = None,
                any_machine: Annotated[bool, typer.Option("--any-machine", help="Do not restrict to this machine.")] = False,
                tag: TagOpt = None, alpha: Annotated[float, typer.Option("--alpha", help="Keep if p < alpha.")] = 0.25,
                out: Annotated[Path | None, typer.Option("--out", help="Where the runs go (default runs/tries).")] = None,
                author: Annotated[str | None, typer.Option("--author", help="Who tries (default $PGOLF_AUTHOR or user@host).")] = None,
                as_json: JsonOpt = False) -> None:
        """Run a candidate at the current best's seeds and record keep/discard with its p-value."""
        from pgolf.track import views
        from pgolf.track.agent import try_candidate

        _stop_on_sigterm()
        err = _stderr_status()
        with _open(registry) as reg:
            r = try_candidate(reg, _scope(preset, dataset, machine, any_machine, tag), list(set_ or []),
                              config_file=str(config) if config else None, preset=preset, alpha=alpha, out=out,
                              author=author, log=_log_to(err), status=err.status if err else _no_status)
        if as_json:
            views.dump(r)
            return
        c, b = r["candidate"], r["base"]
        head = "already tried: " if r.get("duplicate") else ""
        print(f"{head}{r['decision']}: candidate {r['candidate_hash'][:12]} {views._ms(c.get('mean'), c.get('std'))} "
              f"(n={c.get('n')})" + (f" vs best {r['base_hash'][:12]} {views._ms(b.get('mean'), b.get('std'))}, "
                                     f"p={'n/a' if r['p_value'] is None else format(r['p_value'], '.3g')}" if b else ""))

    @app.command("feed")
    def feed_cmd(registry: RegistryOpt = None,
                 post: Annotated[str | None, typer.Option("--post", help="Add a finding.")] = None,
                 author: Annotated[str | None, typer.Option("--author", help="Who posts.")] = None,
                 limit: Annotated[int, typer.Option("--limit", help="Entries to show.")] = 20,
                 as_json: JsonOpt = False) -> None:
        """Findings shared on the registry: tries, sweep results, notes."""
        from pgolf.track import views

        with _open(registry) as reg:
            if post:
                reg.post("note", post, author=author)
            entries = reg.feed(limit)
        views.dump(entries) if as_json else views.console().print(views.feed_table(entries))
