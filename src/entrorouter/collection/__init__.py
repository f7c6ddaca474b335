"""`entrorouter collect`: build an outcome table by querying live OpenAI-compatible endpoints.

Pipeline: :mod:`.config` (pool.yaml) and :mod:`.queries` (the query file) are validated
first; :mod:`.engine` sends every missing (query, model) pair with bounded concurrency and
grades the answer (:mod:`.graders`); each finished pair is committed to the SQLite
:mod:`.store` beside the output, so a rerun continues where the last one stopped;
:mod:`.output` writes the table atomically. :func:`entrorouter.collection.run.collect` is
the Python entry point, :mod:`.cli` the command.

This package's ``__init__`` stays empty so that ``entrorouter --help`` imports nothing heavy.
"""
