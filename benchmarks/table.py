"""The benchmark's one table (rich), built from its JSON result."""

from __future__ import annotations


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return ""
    return "[green]met[/]" if ok else "[red]missed[/]"


def rows(result: dict) -> list[tuple[str, str, str, str, str]]:
    """(figure, measured, target, verdict, details) per line of the table."""
    f = result["figures"]
    out = []
    for label, s in (f.get("step_time") or {}).items():
        if not isinstance(s, dict) or "ratio" not in s:
            continue
        c = s["config"]
        out.append((
            f"step time PDMP ÷ vanilla ({c['encoder']}, {c.get('fusion', 'concat')} fusion, batch {c['batch_size']}, {c['dataset']})",
            f"{s['ratio']:.3f}", f"≤ {s['target']:g}", _verdict(s["ratio"] <= s["target"]),
            f"{s['pdmp_step_ms']:.0f} vs {s['vanilla_step_ms']:.0f} ms/step, median of {c['rounds']} rounds; "
            f"Eq. 10-12 alone {s['pdmp_hook_ms']:.2f} ms",
        ))
    if f.get("method_cost"):
        from benchmarks.method_cost import rows as method_rows

        out.extend(method_rows(f["method_cost"]))
    fc = f.get("features_cache")
    if fc:
        c = fc["config"]
        e = fc["data_epoch"]
        out.append((
            "epoch with features cache ÷ decoding every epoch (data only)",
            f"{e['ratio']:.3f}", f"≤ {fc['target']:g}", _verdict(e["ratio"] <= fc["target"]),
            f"{e['cached_s']:.2f} vs {e['recompute_s']:.2f} s; {c['train_clips']} CREMA-D-layout clips, batch {c['batch_size']}",
        ))
        e = fc["train_epoch"]  # no target: on a CPU the model step, not the data, sets an epoch's time
        out.append((
            f"epoch with features cache ÷ decoding every epoch (training, {c['train_epoch_encoder']} encoders, CPU)",
            f"{e['ratio']:.3f}", "", "",
            f"{e['cached_s']:.2f} vs {e['recompute_s']:.2f} s: the CPU model step dominates",
        ))
    pk = f.get("packed_loader")
    if pk:
        ms = pk["ms_per_sample"]
        for key, label, target in (("read_ratio", "read, crop left to the GPU", 0.05),
                                   ("cpu_path_ratio", "CPU path end to end", 0.5)):
            out.append((
                f"loader per sample, packed store ÷ today's ({label})", f"{pk[key]:.3f}", f"≤ {target:g}",
                _verdict(pk[key] <= target),
                f"{ms['packed_read' if key == 'read_ratio' else 'packed_cpu']:.2f} vs {ms['today']:.2f} ms/sample; "
                f"{pk['samples']} CREMA-D-layout clips, batch {pk['batch_size']}, 0 workers",
            ))
    ac = f.get("analyze_cache")
    if ac:
        out.append((
            "second identical `pdmp analyze` (wall)", f"{ac['second_s']:.2f} s", f"< {ac['target_s']:g} s",
            _verdict(ac["second_s"] < ac["target_s"] and ac["second_cache_hit"]),
            f"{ac['ratio']:.3f} of the first ({ac['first_s']:.1f} s); cache hit: {'yes' if ac['second_cache_hit'] else 'NO'}",
        ))
    d = f.get("demo")
    if d:
        out.append((
            "`pdmp demo` wall time, empty cache", f"{d['seconds']:.0f} s", f"< {d['target_s']:g} s",
            _verdict(d["seconds"] < d["target_s"] and d["report_written"]),
            f"{d['complete_runs']} runs complete, report {'written' if d['report_written'] else 'MISSING'}",
        ))
    pm = f.get("peak_memory")
    if pm:
        for key, what in (("synthetic", "synthetic preset"), ("cremad_layout", "CREMA-D layout")):
            m = pm[key]
            c = m["config"]
            out.append((
                f"peak RSS of `pdmp train` ({what})", f"{m['peak_rss_mb']:.0f} MiB", "", "",
                f"{c['encoder']} encoders, batch {c['batch_size']}, 1 epoch, {m['seconds']:.0f} s",
            ))
    tp = f.get("throughput")
    if tp and "skipped" in tp:
        out.append(("training samples/s, ResNet-18, batch 64, CREMA-D shapes (GPU)", "skipped", "", "", tp["skipped"]))
    elif tp:
        c = tp["config"]
        sps = tp["samples_per_s"]
        for prec, r in tp["pdmp_over_vanilla"].items():
            out.append((
                f"samples/s PDMP ÷ vanilla ({c['encoder']}, batch {c['batch_size']}, {prec}, {c['device']})",
                f"{r:.3f}", "≥ 0.98", _verdict(r >= 0.98),
                f"{sps[f'pdmp/{prec}']:.0f} vs {sps[f'vanilla/{prec}']:.0f} samples/s",
            ))
        half = c["autocast"]
        for m, r in tp["autocast_speedup"].items():
            out.append((f"samples/s {half} autocast ÷ fp32 ({m}, {c['device']})", f"{r:.3f}", "", "",
                        f"{sps[f'{m}/{half}']:.0f} vs {sps[f'{m}/fp32']:.0f} samples/s"))
        for k, r in tp.get("autocast_speedup_by_precision", {}).items():
            m, prec = k.split("/")
            if prec != half:
                out.append((f"samples/s {prec} autocast ÷ fp32 ({m}, {c['device']})", f"{r:.3f}", "", "",
                            f"{sps[k]:.0f} vs {sps[f'{m}/fp32']:.0f} samples/s"))
        for k, r in tp.get("channels_last_speedup", {}).items():
            out.append((f"samples/s channels-last ÷ NCHW ({k}, {c['device']})", f"{r:.3f}", "", "",
                        f"{sps[k + '/channels_last']:.0f} vs {sps[k]:.0f} samples/s"))
    gp = f.get("gpu_pipeline")
    if gp and tp and "samples_per_s" in tp:
        # the fastest training variant the model reaches: the loader must keep up with it
        model_sps = max(tp["samples_per_s"].values())
        best_model = max(tp["samples_per_s"], key=tp["samples_per_s"].get)
        default_w = gp["config"]["manifest_default_workers"]
        for w, v in gp["samples_per_s"].items():
            note = " (manifest default)" if str(default_w) == w else ""
            out.append((f"loader samples/s ÷ model samples/s ({w} workers{note}, features cache, {gp['config']['device']})",
                        f"{v / model_sps:.3f}", "≥ 1", _verdict(v >= model_sps),
                        f"{v:.0f} loader vs {model_sps:.0f} model ({best_model}) samples/s"))
    hp = f.get("hot_path")
    if hp:
        for k in hp.get("knobs", []):
            out.append((f"hot path: {k['name']}", f"{k['ratio']:.3f}", "", "", k["detail"]))
    return out


def render(result: dict):
    from rich.table import Table

    m = result["machine"]
    la = result.get("load_average_start", []), result.get("load_average_end", [])
    table = Table(
        title=f"pdmp benchmark ({result['mode']})",
        caption=(f"{m['cpu_count']} CPU cores, {'GPU ' + m['gpu'] if m['gpu'] else 'no GPU'}, Python {m['python']}, "
                 f"torch {m['torch']}, {m['torch_threads']} intra-op thread(s); load average {la[0]} -> {la[1]}; "
                 f"{result['seconds']:.0f} s"),
    )
    for col, just in (("figure", "left"), ("measured", "right"), ("target", "right"), ("", "left"), ("details", "left")):
        table.add_column(col, justify=just)
    for r in rows(result):
        table.add_row(*r)
    for name, err in (result.get("errors") or {}).items():
        table.add_row(name, "[red]error[/]", "", "", err)
    return table
