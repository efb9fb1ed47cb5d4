"""Measurement and screenshot tools: benchmarks, precision checks, report and tracking screenshots,
and the one-off A/B scripts. Not part of the library: they import it."""
