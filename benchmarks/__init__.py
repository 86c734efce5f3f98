"""Benchmarks: Petrel (and Postfix, side by side) between smtp-source and smtp-sink."""
