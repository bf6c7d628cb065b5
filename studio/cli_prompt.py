"""`studio prompt run`: one prompt technique on one question, from a terminal."""

from __future__ import annotations

import json

from studio.cli_common import add_model_options, backend_from_args, load_studio_config
from studio.errors import StudioError

TECHNIQUE_NAMES = ["zero-shot", "few-shot", "cot", "self-consistency", "role", "delimiters", "json",
                   "generated-knowledge"]


def add_parsers(sub) -> None:
    p = sub.add_parser("prompt", help="prompt techniques: run one on a question")
    psub = p.add_subparsers(dest="prompt_command", metavar="ACTION", required=True)
    run = psub.add_parser("run", help="one technique on one question")
    run.add_argument("question")
    run.add_argument("--technique", required=True, choices=TECHNIQUE_NAMES)
    run.add_argument("--samples", type=int, default=5, help="self-consistency samples (default 5)")
    run.add_argument("--kind", choices=["number", "option", "text"], default="text", help="what the answer is")
    run.add_argument("--labels", help="comma-separated labels for --kind option")
    run.add_argument("--example", action="append", default=[], metavar="Q=>A", help="a few-shot example (repeatable)")
    run.add_argument("--role", help="the persona for --technique role")
    run.add_argument("--json-schema", metavar="FILE", help="the output schema for --technique json")
    run.add_argument("--no-cache", action="store_true", help="do not reuse cached outputs")
    run.add_argument("--json", action="store_true")
    add_model_options(run)
    run.set_defaults(handler=lambda a: cmd_prompt_run(a, load_studio_config(a)))

    bench = psub.add_parser("bench", help="the technique x task accuracy table over task-library files")
    bench.add_argument("files", nargs="+", metavar="configs/prompts/FILE.yaml")
    bench.add_argument("--techniques", default=",".join(TECHNIQUE_NAMES), help="comma-separated (default: all)")
    bench.add_argument("--samples", type=int, default=5)
    bench.add_argument("--no-cache", action="store_true")
    bench.add_argument("--json", action="store_true")
    add_model_options(bench)
    bench.set_defaults(handler=lambda a: cmd_prompt_bench(a, load_studio_config(a)))


def cmd_prompt_run(args, cfg) -> int:
    from studio.backends import settings_from_config
    from studio.prompting.techniques import PromptCache, Task, run_technique

    examples = []
    for ex in args.example:
        q, sep, a = ex.partition("=>")
        if not sep:
            raise StudioError(f"--example {ex!r} must look like QUESTION=>ANSWER")
        examples.append({"q": q.strip(), "a": a.strip()})
    schema = None
    if args.json_schema:
        try:
            schema = json.loads(open(args.json_schema, encoding="utf-8").read())
        except (OSError, ValueError) as exc:
            raise StudioError(f"cannot read the JSON schema {args.json_schema}: {exc}") from None
    task = Task(args.question, kind=args.kind, labels=[x.strip() for x in (args.labels or "").split(",") if x.strip()],
                examples=examples, role=args.role, schema=schema)
    settings = settings_from_config(cfg.generation, temperature=0.0 if args.temperature is None else args.temperature,
                                    top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                                    max_tokens=args.max_tokens or 256, stop=args.stop)
    result = run_technique(backend_from_args(args, cfg, role="prompt"), task, args.technique, settings, args.samples,
                           PromptCache(enabled=not args.no_cache))
    if args.json:
        print(json.dumps(result))
        return 0
    print("prompt:")
    for m in result["prompt"]:
        print(f"  [{m['role']}] {m['content']}")
    print(f"output: {result['output']}")
    if "valid_json" in result:
        print(f"valid against the schema: {'yes' if result['valid_json'] else 'NO'}")
    if result["votes"]:
        print(f"votes: {result['votes']} (agreement {result['agreement']:.2f}, entropy {result['entropy']:.2f} bits)")
    print(f"answer: {result['answer']}  ({result['completion_tokens']} tokens, {result['seconds']:.2f} s"
          f"{', cached' if result['cached'] else ''})")
    return 0


def cmd_prompt_bench(args, cfg) -> int:
    import sys

    from tqdm import tqdm

    from studio.backends import settings_from_config
    from studio.config import load_config
    from studio.errors import StudioError
    from studio.prompting.bench import PromptSuite, run_bench
    from studio.prompting.techniques import PromptCache

    techniques = [t.strip() for t in args.techniques.split(",") if t.strip()]
    unknown = [t for t in techniques if t not in TECHNIQUE_NAMES]
    if unknown:
        raise StudioError(f"unknown technique {unknown[0]!r}; choose from: {', '.join(TECHNIQUE_NAMES)}")
    suites = [load_config(PromptSuite, f) for f in args.files]
    settings = settings_from_config(cfg.generation, temperature=0.0 if args.temperature is None else args.temperature,
                                    seed=args.seed, max_tokens=args.max_tokens or 256)
    bar = tqdm(total=0, file=sys.stderr, disable=None, unit="run")

    def progress(done, total, what):
        bar.total, bar.n = total, done
        bar.set_postfix_str(what, refresh=True)

    result = run_bench(suites, techniques, backend_from_args(args, cfg, role="prompt"), settings, args.samples,
                       PromptCache(enabled=not args.no_cache), progress)
    bar.close()
    if args.json:
        print(json.dumps(result))
        return 0
    names = [s.name for s in suites]
    print(f"{'technique':22}" + "".join(f"{n:>12}" for n in names) + f"{'mean':>8}{'seconds':>9}")
    for t, row in result["table"].items():
        mean = sum(row.values()) / len(row)
        print(f"{t:22}" + "".join(f"{row[n]:>12.2f}" for n in names) + f"{mean:>8.2f}{result['seconds'][t]:>9.1f}")
    return 0
