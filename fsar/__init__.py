"""fsar: few-shot video action recognition with CLIP.

The installed package is `fsar`, built from the folders at the top of the repository:
`fsar.pipeline` (pipeline/: videos to shards to the embedding cache), `fsar.train` (train/:
methods, training, evaluation, reports) and `fsar.cli` (cli/: the `fsar-*` commands). Layers
point down: cli imports train and pipeline, train imports pipeline, pipeline imports neither.
"""

__version__ = "0.1.0"
