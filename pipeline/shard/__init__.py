"""The shard stage: sampled frames of every video into WebDataset tars, Ray-distributed."""
