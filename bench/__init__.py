"""Benchmarks behind ``make bench`` (``python -m bench [--only NAME]``).

Each ``bench/bench_*.py`` module exposes ``NAME``, ``DESCRIPTION`` and
``run() -> dict``; the harness in ``bench/__main__.py`` discovers them, runs
them one at a time, prints their tables and writes ``bench/results/<name>.json``.
Targets are reported (PASS/MISS), never asserted. Nothing here needs Django;
a benchmark that does calls ``django.setup()`` itself.
"""
