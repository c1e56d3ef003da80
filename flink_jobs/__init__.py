"""Flink's side of Sluice: the local standalone cluster (``flink_jobs.cluster``) and the jar
manifest (``flink_jobs.jars``). Thin adapters: no business logic, and no ``pyflink`` import here
(PyFlink lives in ``.venv-flink``; the cluster runs from its Flink distribution by path)."""
