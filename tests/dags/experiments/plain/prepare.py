def write_channels(output_dir, *, start, end, seed):
    """Not run by these tests."""
