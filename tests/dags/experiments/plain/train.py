"""Not run by these tests."""
