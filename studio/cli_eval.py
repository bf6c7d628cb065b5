"""`studio eval`: run suites, score groundedness, calibrate scorers, compare runs."""

from __future__ import annotations

import json
import sys
from importlib import import_module
from pathlib import Path

from studio.cli_common import config_keys_help, load_studio_config
from studio.errors import StudioError


def add_parsers(sub) -> None:
    p = sub.add_parser("eval", help="eval suites, groundedness scores, scorer calibration")
    esub = p.add_subparsers(dest="eval_command", metavar="ACTION", required=True)

    run = esub.add_parser("run", help="run a suite; exit 1 when a threshold is missed")
    run.add_argument("suite", metavar="SUITE.yaml")
    run.add_argument("overrides", nargs="*", metavar="key=value")
    run.add_argument("--out", help="run folder (default: $STUDIO_HOME/eval/SUITE-TIME)")
    run.add_argument("--junit", metavar="FILE", help="also write JUnit XML here")
    run.add_argument("--fail-under", type=float, metavar="X", help="every metric's mean must reach X")
    run.add_argument("--baseline", metavar="RUN", help="a report.json or run folder; exit 1 on a regression")
    run.add_argument("--tolerance", type=float, default=0.02, help="drop that counts as a regression (0.02)")
    run.add_argument("--json", action="store_true")
    run.set_defaults(handler=cmd_run)
    config_keys_help(run, lambda: import_module("eval.suite").EvalSuite)

    g = esub.add_parser("groundedness", help="score {context, answer} JSONL lines (adds score, sentences)")
    g.add_argument("input", nargs="?", metavar="INPUT.jsonl")
    g.add_argument("--batch", metavar="FILE.jsonl", help="same as INPUT (the batch form shared with query/ask)")
    g.add_argument("--scorer", default="judge", help="judge (default) | lexical | embedding | "
                   "llm (the judge role's model) | llm:MODEL | nli:PATH")
    g.add_argument("--out", help="write the scored lines here (default: stdout)")
    g.set_defaults(handler=cmd_groundedness)

    c = esub.add_parser("calibrate", help="a scorer's AUROC and accuracy on labelled pairs, with baselines")
    c.add_argument("--scorer", default="judge")
    c.add_argument("--set", action="append", dest="sets", metavar="NAME",
                   help="halueval-qa | halueval-dialogue | halueval-summarization | r-manuals | FILE.jsonl "
                        "(repeatable; default: all four built-in sets)")
    c.add_argument("--n", type=int, default=1000, help="HaluEval rows per set (default 1000, i.e. 2000 pairs)")
    c.add_argument("--train", action="store_true", help="refit the judge's weights first (eval/data/judge.json)")
    c.add_argument("--train-encoder", action="store_true",
                   help="train a claim encoder first (into $STUDIO_HOME/models; ~45 min on 2 cores), then --train")
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=cmd_calibrate)

    cmp_ = esub.add_parser("compare", help="regressions of one run against a baseline run")
    cmp_.add_argument("run")
    cmp_.add_argument("baseline")
    cmp_.add_argument("--tolerance", type=float, default=0.02)
    cmp_.add_argument("--json", action="store_true")
    cmp_.set_defaults(handler=cmd_compare)


def _progress(i: int, n: int, what: str) -> None:
    if i < n:
        print(f"[{i + 1}/{n}] {what}", file=sys.stderr, flush=True)


def cmd_run(args) -> int:
    from eval.suite import (
        apply_fail_under,
        compare,
        junit,
        load_report,
        load_suite,
        new_run_dir,
        run_suite,
        write_reports,
    )

    suite = load_suite(args.suite, args.overrides)
    out = Path(args.out) if args.out else new_run_dir(suite.name, args.user)
    baseline = load_report(args.baseline) if args.baseline else None
    report = run_suite(suite, out, progress=None if args.json else _progress)
    if args.fail_under is not None:
        apply_fail_under(report, args.fail_under)
    if baseline is not None:
        report["comparison"] = compare(report, baseline, args.tolerance)
        if report["comparison"]["regressions"]:
            report["passed"] = False
    write_reports(report, out)
    if args.junit:
        Path(args.junit).parent.mkdir(parents=True, exist_ok=True)
        Path(args.junit).write_text(junit(report))
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(f"{'PASSED' if report['passed'] else 'FAILED'}  {suite.name}: {len(report['cases'])} cases, "
              f"{report['seconds']} s")
        for m, v in report["metrics"].items():
            th = report["thresholds"].get(m)
            fail = report["threshold_failures"].get(m)
            print(f"  {m:<18} {v:.3f}" + (f"  (min {fail['threshold']}: FAILED)" if fail else
                                           f"  (min {th})" if th is not None else ""))
        for r in (report.get("comparison") or {}).get("regressions", []):
            print(f"  regression: {r['metric']}{' in ' + r['case'] if r['case'] else ''}: "
                  f"{r['baseline']} -> {r['now']}")
        print(f"report: {out / 'report.md'}")
    return 0 if report["passed"] else 1


def scorer_name(args) -> str:
    """``--scorer``, with ``llm`` meaning the judge role's model (chat.judge_model, else chat.model)."""
    if args.scorer != "llm":
        return args.scorer
    from studio.modelstore import judge_scorer

    return judge_scorer(load_studio_config(args).chat)


def cmd_groundedness(args) -> int:
    from eval.groundedness import get_scorer

    path = args.input or args.batch
    if bool(args.input) == bool(args.batch):
        raise StudioError("give either INPUT.jsonl or --batch FILE.jsonl")
    if not Path(path).is_file():
        raise StudioError(f"{path} not found")
    scorer = get_scorer(scorer_name(args))
    lines = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise StudioError(f"{path}:{n}: not JSON ({exc})") from None
        if not isinstance(row, dict) or "context" not in row or "answer" not in row:
            raise StudioError(f"{path}:{n}: each line needs \"context\" and \"answer\"")
        ctx = row["context"] if isinstance(row["context"], str) else "\n\n".join(row["context"])
        g = scorer.score(ctx, str(row["answer"]))
        row.update(score=g.score, sentences=[{"text": s.text, "score": s.score, "supported": s.supported}
                                             for s in g.sentences], scorer=g.scorer)
        lines.append(json.dumps(row, ensure_ascii=False))
    text = "\n".join(lines) + ("\n" if lines else "")
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _encoder_progress(step: int, steps: int, loss: float) -> None:
    print(f"\rclaim encoder: step {step}/{steps}, loss {loss:.3f}", end="" if step < steps else "\n",
          file=sys.stderr, flush=True)


def cmd_calibrate(args) -> int:
    from eval import calibration, data, training
    from eval.groundedness import get_scorer

    if args.train_encoder:
        info = training.train_encoder(progress=_encoder_progress)
        print(f"claim encoder trained on {info['examples']} examples in {info['seconds']:.0f} s "
              f"(final loss {info['final_loss']}) -> {info['out']} (score with it: --scorer encoder:{info['out']})",
              file=sys.stderr)
        if args.scorer == "encoder":
            args.scorer = f"encoder:{info['out']}"  # measure the one just trained
    if args.train or args.train_encoder:
        spec = training.train_judge()
        if not args.json:
            print(f"judge refitted on {spec['fitted_on']['claim_rows']} claims -> eval/data/judge.json")
        get_scorer.cache_clear()
    scorer = get_scorer(scorer_name(args))
    rows = {}
    for name in args.sets or list(data.SETS):
        rows[name] = calibration.calibrate(scorer, data.load_set(name, args.n))
    if args.json:
        print(json.dumps({"scorer": args.scorer, "sets": rows}))
        return 0
    print(f"scorer: {args.scorer}  (AUROC: supported vs unsupported; accuracy at score 0.5)")
    print(f"{'set':<24}{'pairs':>6}{'length':>8}{'lexical':>9}{'ours':>7}{'acc':>7}{'pairs/s':>9}")
    for name, r in rows.items():
        print(f"{name:<24}{r['pairs']:>6}{r['length_auroc']:>8.3f}{r['lexical_auroc']:>9.3f}{r['auroc']:>7.3f}"
              f"{r['accuracy']:>7.3f}{r['pairs_per_second']:>9.0f}")
    return 0


def cmd_compare(args) -> int:
    from eval.suite import compare, load_report

    result = compare(load_report(args.run), load_report(args.baseline), args.tolerance)
    if args.json:
        print(json.dumps(result))
    else:
        regs = result["regressions"]
        print(f"{len(regs)} regression(s) beyond {args.tolerance}; improved: {', '.join(result['improved']) or '-'}")
        for r in regs:
            print(f"  {r['metric']}{' in ' + r['case'] if r['case'] else ''}: {r['baseline']} -> {r['now']}")
    return 1 if result["regressions"] else 0
