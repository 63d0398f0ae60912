"""Video files: encoding (synthetic data, benchmarks) and decoding backends."""
