"""The submission side: records-folder review (``review``), log parsing (``logparse``)."""
