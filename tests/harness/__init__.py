"""The load and fault harness: CLI processes writing, following, reading and being killed
at once against one store, and the checks that nothing was lost (see ``tests/test_harness.py``)."""
