"""The sections of the check, one module each, each with `run(config, recorder)`."""
