"""The backend contract suite: what every backend must do, run on each entry of
``tests/conftest.py``'s ``BACKENDS`` (a new backend enrols with one entry there; README,
"Adding a backend"). ``CLUSTERSTORE_TEST_BACKENDS=<name> pytest tests/contracts`` runs it on
one backend."""
