"""Names vulture (``tests/test_dead_code.py``) reports as unused in pgolf that are used where it cannot see:
read from the source, registered by a decorator, called by a library, or required by a signature. Each line
names why. Never executed or imported; vulture reads it as more code that refers to these names."""
# ruff: noqa

# switches: the bundler reads a module's NEEDED_WHEN with ast (pgolf.bundler.switches), nothing imports it
NEEDED_WHEN

# typer registers the CLI verbs by decorator (pgolf.cli, pgolf.commands.*)
export_cmd, data_build, data_fetch, eval_cmd, review_cmd
runs_list, runs_show, runs_compare, runs_import, runs_tag, leaderboard_cmd, sweep_cmd, task_cmd, try_cmd, feed_cmd
signum, frame  # signal handler signature (pgolf.commands.track)

# config fields and properties: read by name (--set, ModelConfig.layers(name), flatten/identity)
gptj_layers, window_layers, num_virtual_layers

# signatures a library fixes
grad_lse  # torch.library autograd backward: one gradient per forward output (pgolf.model.fused)
max_q, max_k  # torch's varlen_attn contract, which reference_kernel mirrors (pgolf.model.varlen)
extra_repr  # torch.nn.Module repr hook (pgolf.quant.lowbit)

# pydantic: fields of the schemas, validators registered by decorator (pgolf.submit.schema, pgolf.track.*)
model_config, step_avg_ms, train_time_s, eval_time_s, bytes_code, pytorch_version, pre_quant_val_loss
attribution, comparison_baseline_pr, t_statistic, p_value, welch_df, candidate_hash, candidate
_check_date, _consistent, _seeds, _switches, _mode, _one_kind, _name

# alembic reads a migration's module attributes and calls downgrade (pgolf.track.migrations)
down_revision, branch_labels, depends_on, downgrade
# SQLAlchemy event listeners registered by decorator, and the DBAPI connection attribute they set (pgolf.track.registry)
_connect, _begin, isolation_level

# data a dataclass carries for its readers (a description of a scheme's recipe, a result's fields, a path constant)
description  # ExportScheme.description (pgolf.export.schemes)
ngram_p  # MixOutput.ngram_p (pgolf.eval.mix)
threshold_p  # StatsResult field (pgolf.submit.stats)
RECORDS_DIR  # pgolf.submit.record
hashed  # pgolf.submit.review_static

# named by DESIGN.md as the distributed module's helper, kept for users' scripts
print0
