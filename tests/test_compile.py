"""compile_model raises dynamo's per-code recompile limit, so many models in one process stay compiled."""

import torch

from pgolf.compile import RECOMPILE_LIMIT, compile_model


def test_recompile_limit_is_raised_and_never_lowered():
    import torch._dynamo as dynamo

    old = dynamo.config.recompile_limit
    try:
        dynamo.config.recompile_limit = 8
        compile_model(torch.nn.Linear(2, 2))
        assert dynamo.config.recompile_limit == RECOMPILE_LIMIT
        dynamo.config.recompile_limit = 500
        compile_model(torch.nn.Linear(2, 2))
        assert dynamo.config.recompile_limit == 500
    finally:
        dynamo.config.recompile_limit = old
