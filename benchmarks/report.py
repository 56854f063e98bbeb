"""The short Markdown report of one benchmark run, with each target and whether it was met."""

from __future__ import annotations

from typing import Any


def _f(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "MISSED")


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    v = m["versions"]
    lines = [
        "# distilbert-heads CPU benchmark",
        "",
        f"{r['started']}{' (quick mode: rough numbers)' if r['quick'] else ''}. Machine: {m['cpu']['model']}, "
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
        e = r["encoder"]
        for label in ("throughput", "latency"):
            s = e["shapes"][label]
            lines += [
                f"## Encoder {label}: batch {s['batch']} x {s['length']} (DistilBERT-base, random init)",
                "",
                "| contender | median ms | seq/s | share of GEMM ceiling | ratio ours/peer |",
                "| --- | ---: | ---: | ---: | ---: |",
            ]
            for name, row in s["rows"].items():
                ratio = s["ratios"].get(name)
                lines.append(
                    f"| {name}{' (best ours)' if name == s['best_ours'] else ''} | {_f(row['ms'], 1)} | "
                    f"{_f(row['seq_per_s'])} | {_f(row.get('share_of_gemm_ceiling'))} | {_f(ratio)} |"
                )
            lines.append("")
            peer = s["best_peer"]
            if peer:
                ratio = s["ratios"][peer]
                bound = s.get("bound_vs_best_peer")
                bound_note = "" if bound is None else f" (TF matmuls alone: {bound:.2f}x)"
                if label == "throughput":
                    targets.append(
                        (
                            f"encoder throughput 32x128 vs best peer ({peer}) >= 1.10x",
                            f"{ratio:.2f}x{bound_note}",
                            ratio >= 1.1,
                        )
                    )
                    b = s.get("bf16_vs_best_peer")
                    cos = e["agreement"]["bf16_cosine_per_token"].get(s["best_ours_bf16"], {}).get("min")
                    targets.append(
                        (
                            (
                                f"bf16 throughput ({s['best_ours_bf16']}) vs best float32 peer >= 1.8x, "
                                "min cosine per token >= 0.999"
                            ),
                            f"{_f(b)}x, cosine {_f(cos, 5)}",
                            b is not None and b >= 1.8 and cos is not None and cos >= 0.999,
                        )
                    )
                else:
                    targets.append(
                        (
                            f"encoder latency 1x128 vs best peer ({peer}) <= 0.90x",
                            f"{ratio:.2f}x{bound_note}",
                            ratio <= 0.9,
                        )
                    )
        a = e["agreement"]
        lines += [
            (
                "`bound/tf-matmuls-only` is no contender: it is the encoder's matmuls alone on TensorFlow "
                "(no embedding, bias, GELU, softmax, LayerNorm or transpose), about the least time a float32 "
                "encoder on TensorFlow's matmul can take. `ours/bf16-graph` stores weights in bfloat16 "
                '(`dtype="bfloat16"`), `ours/mixed-bf16-graph` keeps them in float32 (`dtype="mixed_bfloat16"`).'
            ),
            "",
            "Agreement on a 4 x 128 batch: max |difference| from ours (float32): "
            + ", ".join(f"{k} {val:.1e}" for k, val in a["max_abs_diff_vs_ours_float32"].items())
            + "; bf16 vs float32 cosine per token: "
            + ", ".join(
                f"{k} min {val['min']:.5f} / mean {val['mean']:.5f}" for k, val in a["bf16_cosine_per_token"].items()
            )
            + ".",
            "",
        ]
        if e["skipped"]:
            lines += [f"Skipped: {e['skipped']}", ""]
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
