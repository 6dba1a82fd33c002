"""The application layer: the ``hushtype`` CLI (``hushtype.cli``), the demo and the benchmarks."""
