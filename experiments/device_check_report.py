"""The Markdown table of experiments/device_check.py, from its JSON report (one function)."""

from __future__ import annotations


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"Device check, {report['date']}: {env.get('device_kind')} ({env.get('platform')}), jax {env.get('jax')}, "
             f"torch {env.get('torch')}; peaks used: bf16 {env['peaks']['bfloat16'] / 1e12:.3g} TFLOP/s, "
             f"f32 {env['peaks']['float32'] / 1e12:.3g} TFLOP/s" + (" (smoke: tiny sizes)" if report["smoke"] else ""),
             ""]
    sections = report["sections"]
    if "parity" in sections:
        lines += ["| parity run | passed | failed | seconds | pytest's summary |", "|---|---|---|---|---|"]
        for name, run in sections["parity"].get("result", {}).items():
            lines.append(f"| {name} | {run.get('passed', 0)} | {run.get('failed', 0) + run.get('error', 0)} | "
                         f"{run['seconds']} | {run['summary']} |")
        lines.append("")
    if sections.get("forward", {}).get("result"):
        lines += ["| forward | dtype | batch x len | ours ms | torch ms | ours / torch speed | MFU | torch MFU | "
                  "max err vs torch f32 |", "|---|---|---|---|---|---|---|---|---|"]
        for r in sections["forward"]["result"]:
            lines.append(f"| {r['model']} | {r['dtype']} | {r['batch']}x{r['length']} | {r['jax_ms']:.2f} | "
                         f"{r['torch_ms']:.2f} | {r['speedup']:.2f}x | {r['mfu']:.1%} | {r['torch_mfu']:.1%} | "
                         f"{r['max_abs_err_vs_torch_f32']:.1e} |")
        lines.append("")
    if sections.get("attention", {}).get("result"):
        lines += ["| attention form | pass | dropout (masks from) | batch x len | ms |", "|---|---|---|---|---|"]
        for r in sections["attention"]["result"]:
            cell = f"{r['ms']:.3f}" if "ms" in r else f"n/a ({r['error'][:60]})"
            drop = f"yes ({r['rng']})" if r["dropout"] else "no"
            lines.append(f"| {r['form']} | {r['mode']} | {drop} | {r['batch']}x{r['length']} | {cell} |")
        lines.append("")
    if sections.get("distill", {}).get("result"):
        d = sections["distill"]["result"]
        mem = lambda b: "n/a" if not b else f"{b / 2 ** 30:.1f} GiB"  # noqa: E731
        lines += ["| distillation step, bf16 | batch x len | ms/step | tokens/s | MFU | peak memory | compile s |",
                  "|---|---|---|---|---|---|---|",
                  f"| ours | {d['batch']}x{d['length']} | {d['jax']['step_ms']:.1f} | {d['jax']['tokens_per_s']:,.0f} | "
                  f"{d['jax']['mfu']:.1%} | {mem(d['jax']['peak_device_bytes'])} | {d['jax']['compile_s']:.1f} |",
                  f"| PyTorch (autocast, {d['torch']['attention']}) | {d['batch']}x{d['length']} | "
                  f"{d['torch']['step_ms']:.1f} | {d['torch']['tokens_per_s']:,.0f} | {d['torch']['mfu']:.1%} | "
                  f"{mem(d['torch']['peak_device_bytes'])} | - |", "",
                  f"Distillation step: ours {d['speedup']:.2f}x PyTorch.", ""]
    if sections.get("finetune", {}).get("result"):
        f = sections["finetune"]["result"]
        lines += [f"Fine-tuning step (classification, bf16, {f['batch']}x{f['length']}): ours {f['jax_ms']:.1f} ms "
                  f"({f['mfu']:.1%} MFU), PyTorch {f['torch_ms']:.1f} ms: {f['speedup']:.2f}x; compile "
                  f"{f['compile_s']:.1f} s.", ""]
    failed = [name for name, s in sections.items() if "error" in s]
    if failed:
        lines += ["Failed sections: " + ", ".join(f"{n} ({sections[n]['error']})" for n in failed), ""]
    return "\n".join(lines)
