"""`fsar-data embed`: frozen open_clip frame and class-text embeddings cached in HDF5."""
