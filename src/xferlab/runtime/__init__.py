"""The shared runtime every stage uses: atomic file writes (`io`), integrity manifests and
verification (`integrity`), crash-test stall points (`faults`), config digests and git revision
(`provenance`), atomic Lightning checkpoints (`checkpointing`), loggers and W&B (`loggers`), config
resolvers (`resolvers`), `_target_` building (`building`), the run folder's result files
(`results`) and the checks before a sweep starts (`preflight`)."""
