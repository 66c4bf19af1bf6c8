"""The repository's tests as a regular package, so that `import tests.fakes` (the benchmarks, run
as `python -m benchmarks.<name>` from the repository root) finds this folder before the stray
top-level `tests` packages some reference libraries install into site-packages."""
