"""pdmp: Performance-Dominant Modality Prioritization (arXiv 2604.05773).

Importing this package is cheap: torch is imported only by the modules that need it,
so ``pdmp --help`` answers at once.
"""

__version__ = "0.1.0"
