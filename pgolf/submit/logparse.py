"""Moved to :mod:`pgolf.logformat` (the one reader and writer of the challenge's log lines)."""

from pgolf.logformat import Event, Metric, ParsedLog, parse_log

__all__ = ["Event", "Metric", "ParsedLog", "parse_log"]
