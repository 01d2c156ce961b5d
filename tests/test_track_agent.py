"""The agent loop on one registry: the first try sets the baseline, a candidate runs at the best's seeds
(the best's runs are reused, not re-run), keep/discard follows the one-sided Welch p-value, a repeated
candidate reports its recorded result without running, a candidate claimed elsewhere is refused, protected
fields cannot change, every slow step is named while it runs (the CLI's spinner) with a line as each job
ends, and ``pgolf task``/``pgolf feed`` show all of it."""

from __future__ import annotations

import contextlib
import json

import pytest

from pgolf.errors import ConfigError
from pgolf.track.agent import Scope, build_candidate, current_best, task, task_markdown, try_candidate
from pgolf.track.jobs import planned_identity, this_machine
from pgolf.track.leaderboard import welch_p_less
from pgolf.track.registry import RegistryError, open_registry

TINY_SET = ["model.vocab_size=384", "train.iterations=6", "train.threads=1"]
pytestmark = pytest.mark.usefixtures("one_thread")


def test_try_task_and_feed(tiny_data, tmp_path, capsys):
    from pgolf.cli import main

    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    out = tmp_path / "tries"
    scope = Scope(preset="tiny", machine=this_machine())
    with open_registry(url) as reg:
        t = task(reg, scope)
        assert t["best"] is None and "None yet" in task_markdown(t)
        with pytest.raises(ConfigError, match="give --preset"):
            try_candidate(reg, scope, [])
        r0 = try_candidate(reg, scope, [f"data.path={tiny_data}", *TINY_SET], preset="tiny", inprocess=True, out=out)
        assert r0["decision"] == "baseline" and r0["seeds"] == [1337, 42] and r0["candidate"]["n"] == 2
        best = current_best(reg, scope)
        assert best["config_hash"] == r0["candidate_hash"] and best["source"] == "try" and best["seeds"] == [42, 1337]
        with pytest.raises(ConfigError, match="train.seed: this field defines the comparison"):
            try_candidate(reg, scope, ["train.seed=3"])
        with pytest.raises(ConfigError, match="current best itself"):
            try_candidate(reg, scope, ["train.log_every=2"])  # not a result-changing field
        steps, logged = [], []

        @contextlib.contextmanager
        def status(message):
            steps.append(message)
            yield

        r1 = try_candidate(reg, scope, ["model.mlp_act=leaky_relu2"], inprocess=True, out=out, alpha=0.25,
                           log=logged.append, status=status)
        c, b = r1["candidate"], r1["base"]
        # every step that can take a while is named while it runs, and each job's end is a line
        assert steps[:2] == ["looking up the current best in the registry",
                             "building the candidate's config and finding its data"]
        jobs = [m for m in steps if m.startswith("try ")]
        assert [m.split(":")[0] for m in jobs] == ["try 1/4", "try 2/4", "try 3/4", "try 4/4"]
        assert [m.split(": ")[1].split()[0] for m in jobs] == ["candidate", "candidate", "best", "best"]
        assert [m.split(" seed ")[1].split(":")[0] for m in jobs] == ["42", "1337", "42", "1337"]
        ends = [m for m in logged if m.startswith("try ") and "/4:" in m]
        assert len(ends) == 4 and all(": ok, val_bpb " in m for m in ends)
        assert [m.endswith("(already recorded)") for m in ends] == [False, False, True, True]
        assert r1["seeds"] == [42, 1337] and b["values"] == r0["candidate"]["values"]  # the best's runs, reused
        p = welch_p_less(list(c["values"].values()), list(b["values"].values()))
        assert r1["p_value"] == p
        assert r1["decision"] == ("keep" if c["mean"] < b["mean"] and p is not None and p < 0.25 else "discard")
        assert len(reg.runs()) == 4  # 2 seeds of the baseline + 2 of the candidate, nothing re-run
        again = try_candidate(reg, scope, ["model.mlp_act=leaky_relu2"], inprocess=True, out=out) \
            if r1["decision"] == "discard" else None
        if again is not None:
            assert again["duplicate"] and again["decision"] == "discard" and len(reg.runs()) == 4
        # a candidate someone else is running right now is refused
        _, cand = build_candidate(current_best(reg, scope), ["model.ln_scale=true"])
        reg.claim(scope.key, planned_identity(cand)[0], "otherhost:1:x", stale_after=600)
        with pytest.raises(RegistryError, match="already being tried by otherhost:1:x"):
            try_candidate(reg, scope, ["model.ln_scale=true"], inprocess=True, out=out)
        md = task_markdown(task(reg, scope))
        now_best = current_best(reg, scope)
        assert now_best["config_hash"][:12] in md and "model.mlp_act=leaky_relu2 → " + r1["decision"] in md
        assert "`train.seed`" in md and "seeds [42, 1337]" in md
        feed = reg.feed()
        assert [f["kind"] for f in feed] == ["try", "try"] and r1["decision"] in feed[0]["message"]
    capsys.readouterr()
    assert main(["feed", "--registry", url, "--post", "leaky looks better at 6 steps", "--author", "a1", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert (entries[0]["author"], entries[0]["kind"], entries[0]["message"]) == ("a1", "note", "leaky looks better at 6 steps")
    assert main(["task", "--registry", url, "--preset", "tiny", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["best"]["config_hash"] == now_best["config_hash"]
    assert main(["try", "--registry", url, "--preset", "tiny", "--set", "export.budget_bytes=5"]) == 2
    assert "export.budget_bytes: this field defines the comparison" in capsys.readouterr().err
