"""Multimodal training with PDMP (Alg. 1, stage 2) or a baseline, in one loop.

    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.train import run
    result = run(TrainSpec(profile="profiles/synthetic.json", method="pdmp", gamma_p=10))
    result.summary.best_accuracy, result.run_dir

The loop itself is :mod:`pdmp_cli.train.loop`; ``pdmp train`` calls :func:`run`.
"""

from pdmp_cli.train.loop import RunResult, StepInfo, run  # noqa: F401
