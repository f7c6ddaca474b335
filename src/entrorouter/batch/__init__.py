"""Batch work over stored prompts: routing files of queries (:mod:`.routing`) and embedding
training tables (:func:`entrorouter.features.distributed.embed_texts`), on one process or a
Ray cluster (:mod:`.engines`)."""
