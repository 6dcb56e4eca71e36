"""Helpers for tests and benchmarks, not used by the pipeline: a seeded random-walk market
(:mod:`~finscale.testing.random_walk`) and the scaling intervals' coverage by simulation
(:mod:`~finscale.testing.coverage`). Kept in the package so that the test suite and
``python -m benchmarks`` share one copy; nothing in a study's stages imports them."""
