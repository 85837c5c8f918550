"""Figure: training step time, PDMP ÷ vanilla (target <= 1.02).

Both methods run the real loop of ``pdmp train`` (:func:`pdmp_cli.train.loop.train_one_epoch`:
forward, loss, backward, the method's gradient hook, encoder gradient norms, optimizer step,
running metrics) with the same model architecture and initial weights, the same optimizer and
the same batches of the dataset; only ``--method`` differs. Rounds alternate the order
(vanilla, pdmp, pdmp, vanilla, ...) and the ratio is of the per-step medians.
"""

from __future__ import annotations

import time

from benchmarks.common import interleaved, median, spread


def _batches(bundle, batch_size: int, steps: int):
    """``steps`` distinct batches of the training split, collated as the DataLoader does."""
    from torch.utils.data import default_collate

    n = len(bundle.train)
    out = []
    for s in range(steps):
        idx = [(s * batch_size + k) % n for k in range(batch_size)]
        out.append(default_collate([bundle.train[i] for i in idx]))
    return out


def measure(dataset: str, encoder: str, batch_size: int, steps: int, repeats: int, gamma_p: float = 10.0,
            fusion: str = "concat") -> dict:
    import torch

    from pdmp_cli.data import load_dataset
    from pdmp_cli.methods import build_method
    from pdmp_cli.analysis import manual_profile
    from pdmp_cli.specs import TrainSpec
    from pdmp_cli.signals import GracefulInterrupt
    from pdmp_cli.train.loop import train_one_epoch
    from pdmp_cli.train.setup import Run, build_model, build_optimizer
    from pdmp_cli.train.state import EpochStats

    bundle = load_dataset(dataset)
    batches = _batches(bundle, batch_size, steps)
    device = torch.device("cpu")
    # the synthetic presets' regime: the first modality learns fastest, the second performs best
    mods = list(bundle.modalities)
    profile = manual_profile(bundle.name, mods[-1], mods[0], modalities=mods)

    runners = {}
    for name in ("vanilla", "pdmp"):
        spec = TrainSpec(profile="-", dataset=dataset, encoder=encoder, fusion=fusion, method=name,
                         batch_size=batch_size, lr=0.01, gamma_p=gamma_p, device="cpu")
        torch.manual_seed(0)  # the same initial weights for both
        model = build_model(spec, bundle, device)
        method = build_method(name, model, spec, profile)
        opt = build_optimizer(model, spec, method)

        def one_round(model=model, method=method, opt=opt):
            stats = EpochStats(model.modalities, device)
            t0 = time.perf_counter()
            train_one_epoch(Run(spec, device, model, method, opt), batches, stats, epoch=0, start_step=0, stop=GracefulInterrupt())
            return (time.perf_counter() - t0) / steps

        one_round()  # warm-up: allocator, first-call costs
        runners[name] = one_round

    times = interleaved(runners, repeats)
    v, p = median(times["vanilla"]), median(times["pdmp"])
    hook_ms = _hook_ms(model, method, batches[0])  # the last built: PDMP's
    params = sum(t.numel() for ps in model.modality_parameters().values() for t in ps)  # the ones PDMP scales
    return {
        "ratio": p / v,
        "target": 1.02,
        "vanilla_step_ms": v * 1e3,
        "pdmp_step_ms": p * 1e3,
        "vanilla_spread": spread(times["vanilla"]),
        "pdmp_spread": spread(times["pdmp"]),
        "pdmp_hook_ms": hook_ms,  # Eq. 10-12 alone (method.after_backward), timed on its own
        "config": {
            "dataset": bundle.name,
            "encoder": encoder,
            "fusion": fusion,
            "encoder_parameters": params,
            "batch_size": batch_size,
            "input_shapes": {m: list(bundle.train[0][0][m].shape) for m in mods},
            "steps_per_round": steps,
            "rounds": repeats,
            "gamma_p": gamma_p,
            "device": "cpu",
        },
    }


def _hook_ms(model, method, batch, calls: int = 20) -> float:
    """Median time of one ``method.after_backward`` (PDMP: scale every encoder gradient) on the
    gradients of one real backward pass, restored before each call."""
    import torch
    import torch.nn.functional as F

    from pdmp_cli.runtime import to_device

    inputs, labels = batch
    model.zero_grad(set_to_none=True)
    out = model(to_device(inputs, torch.device("cpu")))
    F.cross_entropy(out.logits, labels).backward()
    saved = [(p, p.grad.clone()) for p in model.parameters() if p.grad is not None]
    times = []
    for _ in range(calls):
        for p, g in saved:
            p.grad.copy_(g)
        t0 = time.perf_counter()
        method.after_backward(out, labels, 0)
        times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return median(times) * 1e3
