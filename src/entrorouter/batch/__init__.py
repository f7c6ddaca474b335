"""Batch work over stored prompts: routing files of queries (:mod:`.routing`) and embedding
training tables (:func:`entrorouter.features.distributed.embed_texts`), on one process or a
Ray cluster (:mod:`.engines`)."""

#: Rows per chunk: what is read, routed and written (and resumed) as one unit.
DEFAULT_CHUNK_SIZE = 4096
