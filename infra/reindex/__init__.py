"""``aichat reindex``: re-index into a new collection while the old one answers, then switch.

    aichat reindex start --collection Chunk_v2 [--chunk-max-tokens 200] [--model M]
    aichat reindex status                  generations, their lag, which one serves
    aichat reindex switch Chunk_v2         move the serving alias once it caught up
    aichat reindex rollback                move it back to the collection it replaced
    aichat reindex drop Chunk_v1           delete a generation that no longer serves

The serving name (``AICHAT_WEAVIATE_COLLECTION``) becomes a Weaviate alias of one index
generation (infra/generations.py). ``start`` creates the generation's collections with its
spec, gives its consumer group the beginning of ``documents`` and starts its ingest workers:
they chunk and embed every retained document version again, and deletes and newer versions
win exactly as in the live pipeline, so the result equals a clean ingest. Both generations
stay current while both pipelines run, which is what makes a rollback safe; ``drop`` ends
the old one.

The package: ``plan.py`` decides (each step's plan and its refusals, saying why and what
to do instead), ``ops.py`` does the work on Weaviate and Kafka, ``workers.py`` runs the
worker processes here, ``cli.py`` is the command.

**Migration.** A deployment from before this has a real collection under the serving
name. It goes on working as it is; the first ``switch`` onto a generation replaces it by
the alias (``--replace-collection``: the old collection and its document states are
deleted, and that switch has no rollback), after its own ingest workers were stopped.
"""
