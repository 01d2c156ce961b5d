"""Context mixing over the bits of each token (``eval.mix.mode=cm``): the compressors' way of adapting to
the text already scored, on tokens. :mod:`.contexts` finds the contexts and counts them, :mod:`.mixer`
turns them into a full normalized distribution and scores it; :mod:`.reference` rebuilds that
distribution densely from the history for the tests."""

NEEDED_WHEN = "eval.method.endswith('mix') and eval.mix.mode == 'cm'"
