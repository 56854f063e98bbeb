"""The short Markdown report of one benchmark run, with each target and whether it was met."""

from __future__ import annotations

from typing import Any


def _f(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "MISSED")


def _speed(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def encoder_markdown(e: dict[str, Any]) -> tuple[list[str], list[tuple[str, str, bool | None]]]:
    """The encoder tables (every path of ours and every peer, float32 and bf16), the fastest path of ours
    against the best peer per (dtype, shape), and the encoder's target rows."""
    lines: list[str] = []
    targets: list[tuple[str, str, bool | None]] = []
    headline = [
        "| dtype | shape | fastest path we offer | best peer | speed, ours / peer |",
        "| --- | --- | --- | --- | ---: |",
    ]
    for label, s in e["shapes"].items():
        lines += [
            f"## Encoder {label}: batch {s['batch']} x {s['length']}",
            "",
            "| contender | dtype | median ms | seq/s | share of GEMM ceiling | speed vs best peer of its dtype |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        fastest = {entry["fastest_ours"] for entry in s["by_dtype"].values()}
        for name, row in sorted(s["rows"].items(), key=lambda item: (item[1]["dtype"], item[1]["median_s"])):
            mark = " (fastest ours)" if name in fastest else ""
            lines.append(
                f"| {name}{mark} | {row['dtype']} | {_f(row['ms'], 1)} | {_f(row['seq_per_s'])} | "
                f"{_f(row.get('share_of_gemm_ceiling'))} | {_speed(row.get('speed_vs_best_peer'))} |"
            )
        lines.append("")
        for kind, entry in s["by_dtype"].items():
            ratio = entry.get("speed_vs_best_peer")
            headline.append(
                f"| {kind} | {s['batch']} x {s['length']} | {entry['fastest_ours']} | {entry['best_peer'] or '-'} | "
                f"{_speed(ratio)} |"
            )
            if ratio is not None:
                targets.append(
                    (
                        f"fastest path we offer ({entry['fastest_ours']}) vs best {kind} peer ({entry['best_peer']}), "
                        f"{s['batch']}x{s['length']}: leads (speed > 1.00x)",
                        _speed(ratio),
                        ratio > 1.0,
                    )
                )
        peer = s["best_peer"]
        if peer and s["best_ours"]:
            ratio = s["ratios"][peer]
            bound = s.get("bound_vs_best_peer")
            bound_note = "" if bound is None else f" (TF matmuls alone: {bound:.2f}x)"
            if label == "throughput":
                targets.append(
                    (
                        f"encoder throughput float32 vs best peer ({peer}) >= 1.10x",
                        f"{ratio:.2f}x{bound_note}",
                        ratio >= 1.1,
                    )
                )
                b = s.get("bf16_vs_best_peer")
                cos = e["agreement"]["bf16_cosine_per_token"].get(s["best_ours_bf16"], {}).get("min")
                targets.append(
                    (
                        f"bf16 throughput ({s['best_ours_bf16']}) vs best float32 peer >= 1.8x, "
                        "min cosine per token >= 0.999",
                        f"{_f(b)}x, cosine {_f(cos, 5)}",
                        b is not None and b >= 1.8 and cos is not None and cos >= 0.999,
                    )
                )
            else:
                targets.append(
                    (
                        f"encoder latency float32 vs best peer ({peer}) <= 0.90x (time)",
                        f"{ratio:.2f}x{bound_note}",
                        ratio <= 0.9,
                    )
                )
    a = e["agreement"]
    lines += [
        "### Fastest path we offer vs best peer",
        "",
        *headline,
        "",
        (
            "Speed is the best peer's median time over ours (> 1: ours leads). bf16 rows are compared with bf16 peers "
            '(transformers with bf16 weights or under `torch.autocast`, keras-hub with `dtype="bfloat16"`). Ours: '
            "`tf-graph` is `tf.function` (what `predict_on_batch` runs), `tf-xla` adds `jit_compile=True`, `jax-jit` "
            "and `torch-eager` are the JAX and PyTorch Keras backends (each in a child process, timed in the same "
            'round-robin loop), `onnxruntime` is our `export(format="onnx")` (float32 only, with the sentiment '
            "head); `bfloat16` stores weights in bf16, `mixed_bfloat16` casts float32 weights per call. "
            "`bound/tf-matmuls-only` is no contender: the encoder's matmuls alone on TensorFlow."
        ),
        "",
        f"Agreement on a {a['batch']} batch: max |difference| from ours (TF graph, float32): "
        + ", ".join(f"{k} {val:.1e}" for k, val in a["max_abs_diff_vs_ours_float32"].items())
        + "; bf16 vs our float32, cosine per token: "
        + ", ".join(
            f"{k} min {val['min']:.5f} / mean {val['mean']:.5f}" for k, val in a["bf16_cosine_per_token"].items()
        )
        + ".",
        "",
    ]
    if e["skipped"]:
        lines += ["Not timed: " + "; ".join(f"{name}: {why}" for name, why in e["skipped"].items()), ""]
    return lines, targets


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    v = m["versions"]
    lines = [
        "# distilbert-heads CPU benchmark",
        "",
        f"{r['started']}{' (quick mode: rough numbers)' if r['quick'] else ''}"
        f"{' (TINY model: a code-path check, not a measurement)' if r.get('tiny') else ''}. "
        f"Machine kind: {m['cpu'].get('kind', '-')}. Machine: {m['cpu']['model']}, "
        f"{m['cpu']['usable_cores']} cores ({', '.join(m['cpu']['flags'])}), {m['memory_gb']} GB; "
        f"Python {m['python']}; " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        f"Load average (1/5/15 min) at start {r['load_average_start']}, at end {r['load_average_end']}.",
        "",
    ]
    targets: list[tuple[str, str, bool | None]] = []
    if "gemm" in r:
        g = r["gemm"]
        lines += [
            (
                f"GEMM ceiling ({g['n']}^3): float32 {_f(g['float32'], 0)} GFLOP/s, "
                f"bf16 {_f(g['bfloat16'], 0)} GFLOP/s "
                f"({', '.join(f'{k} {val:.0f}' for k, val in g['gflops'].items())})."
            ),
            "",
        ]
    if "encoder" in r:
        encoder_lines, encoder_targets = encoder_markdown(r["encoder"])
        lines += encoder_lines
        targets += encoder_targets
    if "int8" in r:
        from benchmarks import int8

        int8_lines, int8_targets = int8.markdown_lines(r["int8"])
        lines += int8_lines
        targets += int8_targets
    if "pipeline" in r:
        p = r["pipeline"]
        if "rows" in p:
            lines += [
                f"## Pipeline text throughput: {p['texts']} sentences (mostly 5-60 tokens), sentiment head",
                "",
                "| contender | warm median s | texts/s | first pass s |",
                "| --- | ---: | ---: | ---: |",
            ]
            for name, row in p["rows"].items():
                lines.append(
                    f"| {name} | {_f(row['median_s'])} | {_f(row['texts_per_s'], 1)} | {_f(row.get('cold_s'))} |"
                )
            lines.append("")
            if "ratio_vs_transformers_batch32" in p:
                lines += [
                    (
                        f"Same labels as transformers on {100 * p['label_agreement']:.1f}% of texts "
                        f"(max score difference {p['max_score_diff']:.1e})."
                    ),
                    "",
                ]
                if "bf16_label_agreement" in p:
                    lines += [
                        (
                            f"Our bfloat16 pipeline gives the float32 pipeline's label on "
                            f"{100 * p['bf16_label_agreement']:.1f}% of texts (max score difference "
                            f"{p['bf16_max_score_diff']:.1e})."
                        ),
                        "",
                    ]
                ratio = p["ratio_vs_transformers_batch32"]
                targets.append(
                    ("pipeline texts/s vs transformers.pipeline (both batch 32) >= 2x", f"{ratio:.2f}x", ratio >= 2)
                )
        else:
            lines += [f"Pipeline skipped: {p.get('skipped')}", ""]
    if "train" in r:
        t = r["train"]
        lines += [
            f"## Training step: batch {t['batch']} x {t['length']}, sentiment head, Adam",
            "",
            "| contender | median s | steps/s | ratio ours/peer |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name, row in t["rows"].items():
            lines.append(
                f"| {name}{' (best ours)' if name == t['best_ours'] else ''} | {_f(row['median_s'])} | "
                f"{_f(row['steps_per_s'])} | {_f(t['ratios'].get(name))} |"
            )
        lines.append("")
        if t["best_peer"]:
            ratio = t["ratios"][t["best_peer"]]
            targets.append((f"training step vs best peer ({t['best_peer']}) >= 1.0x", f"{ratio:.2f}x", ratio >= 1.0))
    if "plugins" in r:
        pl = r["plugins"]
        imp, lk = pl["import"], pl["lookup"]
        lines += [
            "## Plugin system",
            "",
            (
                f"- `import keras` {imp['import keras']['median_s'] * 1e3:.0f} ms, `import distilbert_heads` "
                f"{imp['import distilbert_heads']['median_s'] * 1e3:.0f} ms (fresh interpreters, median)."
            ),
            (
                f"- Fresh-registry lookup of a built-in: {lk['none']['builtin']['median_s'] * 1e3:.2f} ms with no "
                f"third-party plugins, {lk['with_20_plugins']['builtin']['median_s'] * 1e3:.2f} ms with "
                f"{pl['num_plugins']}; of one plugin's task type (imports it): "
                f"{lk['with_20_plugins']['plugin']['median_s'] * 1e3:.2f} ms."
            ),
            "",
        ]
        worst = max(lk["extra_ms_builtin"], lk["extra_ms_plugin"])
        targets.append(("head lookup with 20 plugins within 10 ms of none", f"+{worst:.1f} ms", worst <= 10))
    if targets:
        lines += ["## Targets", "", "| target | measured | |", "| --- | --- | --- |"]
        lines += [f"| {name} | {value} | {_verdict(ok)} |" for name, value, ok in targets]
        lines.append("")
    return "\n".join(lines)
