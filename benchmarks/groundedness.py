"""Groundedness scorers side by side: answer length alone, lexical overlap, and ours (the judge).

AUROC of supported vs unsupported answers on HaluEval dialogue, summarization and QA (rows
0..N-1; the judge was fitted on rows from 5000 on) and on 42 hand-written claim pairs over real
R manual pages (same sentence, one fact changed). Also the judge's speed in pairs per second.

Baselines next to ours: answer length alone, lexical overlap, and "answer-only", a word n-gram
classifier fitted on HaluEval training rows that never sees the context: what it reaches, the
answers' style alone gives away, so a groundedness judge is worth what it adds over it. And
"own-vs-swapped": AUROC of supported answers scored against their own context vs. another row's
(the same words, now unsupported); 0.5 means the scorer ignores the context.

When the encoder is measured, its two engines also run side by side on the same claims of HaluEval
summarization: PyTorch (transformers, the reference) and the verified ONNX Runtime export (the
default), printing claims/s of each, the ratio and the largest logit difference.

    .venv/bin/python benchmarks/groundedness.py [--n 1000] [--scorers judge,embedding]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eval import calibration, data  # noqa: E402
from eval.groundedness import get_scorer  # noqa: E402


def compare_engines(n: int) -> dict:
    """Claims/s of the claim encoder's PyTorch and ONNX engines on the same (evidence, claim) items."""
    import time

    from eval.crossencoder import ClaimEncoder
    from eval.text import Context, claims

    items = [(ctx.evidence(c), c) for p in data.load_set("halueval-summarization", n)
             for ctx in [Context(p.context)] for c in claims(p.answer)]
    res, logits = {}, {}
    for engine in ("torch", "onnx"):
        enc = ClaimEncoder(engine=engine)
        enc.logits(items[:32])  # warm-up
        t0 = time.perf_counter()
        logits[engine] = enc.logits(items)
        res[engine] = round(len(items) / (time.perf_counter() - t0), 1)
    res["ratio"] = round(res["onnx"] / res["torch"], 2)
    res["max_logit_difference"] = max(abs(a - b) for a, b in zip(logits["torch"], logits["onnx"], strict=True))
    print(f"\nclaim encoder engines on {len(items)} summarization claims: torch {res['torch']:.0f} claims/s, "
          f"onnx {res['onnx']:.0f} claims/s, ratio {res['ratio']:.2f}x, "
          f"largest logit difference {res['max_logit_difference']:.1e}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="HaluEval rows per set (each gives 2 pairs)")
    ap.add_argument("--scorers", default="judge", help="comma-separated scorers to measure (default: judge)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = ap.parse_args()
    sets = ["halueval-dialogue", "halueval-summarization", "halueval-qa", "r-manuals"]
    goals = {"halueval-dialogue": 0.80, "halueval-summarization": 0.80, "r-manuals": 0.85}
    out, style = {}, {}
    for scorer in args.scorers.split(","):
        judge = get_scorer(scorer)
        print(f"\nscorer: {scorer}")
        print(f"{'set':<24}{'pairs':>6}{'length':>8}{'lexical':>9}{'answer-only':>12}{'ours':>7}{'goal':>6}{'acc':>7}"
              f"{'pairs/s':>9}{'own-vs-swapped':>16}")
        for name in sets:
            r = calibration.calibrate(judge, data.load_set(name, args.n))
            if name not in style:
                style[name] = calibration.answer_only_auroc(name, args.n)
            r["answer_only_auroc"] = style[name]
            r["context_swap_auroc"] = calibration.context_swap_auroc(judge, name, min(args.n, 300))
            out.setdefault(scorer, {})[name] = r
            goal = goals.get(name)
            print(f"{name:<24}{r['pairs']:>6}{r['length_auroc']:>8.3f}{r['lexical_auroc']:>9.3f}"
                  f"{(f'{style[name]:.3f}' if style[name] is not None else '-'):>12}{r['auroc']:>7.3f}"
                  f"{(f'{goal:.2f}' if goal else '-'):>6}{r['accuracy']:>7.3f}{r['pairs_per_second']:>9.0f}"
                  f"{r['context_swap_auroc']:>16.3f}", flush=True)
    if "encoder" in args.scorers.split(","):
        out["encoder_engines"] = compare_engines(min(args.n, 300))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
