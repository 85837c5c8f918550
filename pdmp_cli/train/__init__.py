"""Multimodal training with PDMP (Alg. 1, stage 2) or a baseline, in one loop.

    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.train import run
    result = run(TrainSpec(profile="profiles/synthetic.json", method="pdmp", gamma_p=10))
    result.summary.best_accuracy, result.run_dir

The recipe: :mod:`pdmp_cli.train.setup` (``setup(spec) -> Run``: every refusal, nothing written;
the checkpoint format), :mod:`pdmp_cli.train.state` (what the methods' hooks see) and
:mod:`pdmp_cli.train.loop` (the epochs and one ``finish``); ``pdmp train`` calls :func:`run`.
"""

from pdmp_cli.train.loop import RunResult, run  # noqa: F401
from pdmp_cli.train.state import StepInfo  # noqa: F401
