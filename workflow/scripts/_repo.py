"""Imported first by every rule script: makes ``diffusion_lib`` importable from this checkout.

Snakemake puts a script's own folder on ``sys.path``; the library lives two levels up. An installed
``diffusion_lib`` (``pip install -e .``) is the same code, so this only matters for conda/cluster runs.
"""
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
