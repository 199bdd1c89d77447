"""The ``proximal`` command: parse, call, print. No algorithm here."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import difflib
import functools
import gc
import json
import logging
import os
import signal
import sys
import threading
import typing
import warnings
from dataclasses import fields
from pathlib import Path

from .config import PRECISIONS, PRESETS, Config, check_seed, field_docs, preset, set_detail, validate
from .errors import RunFailure, Terminated, UserError

# fields with a flag of their own (the names) rather than the generic --field-name
_RENAMED = {"env_id": "--env"}
_NOT_FLAGS = {"details", "preset"}


class _Parser(argparse.ArgumentParser):
    """Usage mistakes get the same one-line error as any other bad input (subparsers inherit this class).
    No abbreviated flags: a typo such as --num-env must not silently set --num-envs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        # argparse reports a command's unknown flags from the top parser ("proximal: error", "see proximal
        # --help", which lists no flags): the command's parser reports them here, with the closest flag it has
        namespace, unknown = self.parse_known_args(args, namespace)
        if unknown:
            parser = getattr(self, "commands", {}).get(getattr(namespace, "command", None), self)
            flags = [flag for action in parser._actions for flag in action.option_strings]
            close = [match for arg in unknown if arg.startswith("-")
                     for match in difflib.get_close_matches(arg.split("=")[0], flags, n=1)]
            hint = f"; did you mean {close[0]}?" if close else ""
            parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
        return namespace


def _parse_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


def _parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(Config)
    docs = field_docs()
    defaults = PRESETS["classic"]
    group = parser.add_argument_group("hyperparameters (defaults of the classic preset; other presets change them)")
    for f in fields(Config):
        if f.name in _NOT_FLAGS:
            continue
        flag = _RENAMED.get(f.name, "--" + f.name.replace("_", "-"))
        kind = hints[f.name]
        convert = {tuple[int, ...]: _parse_sizes, bool: _parse_bool}.get(kind, kind)
        shown = getattr(defaults, f.name)
        shown = ",".join(map(str, shown)) if isinstance(shown, tuple) else shown
        # a bare boolean flag (--track) means true
        bare = {"nargs": "?", "const": True} if kind is bool else {}
        group.add_argument(flag, dest=f.name, type=convert, default=argparse.SUPPRESS, **bare,
                           help=f"{docs.get(f.name, '')} (default: {shown})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="proximal", description="PPO with every implementation detail of the "
                                     "reference (OpenAI baselines ppo2), each switchable for ablation.")
    sub = parser.add_subparsers(dest="command", required=True)
    parser.commands = sub.choices  # each command's parser, which reports its own unknown flags

    train = sub.add_parser("train", help="train a policy")
    train.add_argument("--preset", default="classic", help=f"starting values: {', '.join(PRESETS)} (default: classic)")
    train.add_argument("--run-dir", help="run directory (default runs/<env>__<preset>__<seed>__<time>)")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue the run in RUN_DIR from its newest checkpoint, with its own config")
    train.add_argument("--quiet", action="store_true", help="no progress bar or messages (for scripts)")
    train.add_argument("--off", action="append", default=[], metavar="DETAIL_ID",
                       help="switch a detail off for ablation (repeatable); see `proximal details`")
    train.add_argument("--on", action="append", default=[], metavar="DETAIL_ID",
                       help="switch on a detail that is off in the preset (repeatable)")
    _add_config_flags(train)

    ev = sub.add_parser("eval", help="evaluate a trained policy: mean and std of episodic return")
    ev.add_argument("path", type=Path, metavar="RUN_DIR_OR_CHECKPOINT")
    ev.add_argument("--episodes", type=int, default=10, help="number of episodes (default: 10)")
    ev.add_argument("--deterministic", action="store_true", help="take the most likely action instead of sampling")
    ev.add_argument("--seed", type=int, default=0, help="seed of the evaluation envs and sampling (default: 0)")
    ev.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="(default: cpu)")
    ev.add_argument("--video", type=Path, metavar="OUT.mp4",
                    help="record every evaluated frame to this file (rgb_array rendering; headless MuJoCo uses EGL "
                         "unless MUJOCO_GL says otherwise)")

    export = sub.add_parser("export", help="write a trained policy as an ONNX graph (observation in, action, value "
                                           "and distribution parameters out)")
    export.add_argument("path", type=Path, metavar="RUN_DIR_OR_CHECKPOINT")
    # a str, not a Path: Path drops the trailing slash that says the user meant a directory (refused by the export)
    export.add_argument("-o", "--output", default="policy.onnx", help="the .onnx file to write (default: policy.onnx)")

    plot = sub.add_parser("plot", help="learning curves of runs; seeds of the same env and preset aggregated")
    plot.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    plot.add_argument("-o", "--output", type=Path, default=Path("curves.png"),
                      help="image file; its suffix picks the format: .png, .pdf, .svg (default: curves.png)")

    details = sub.add_parser("details", help="the implementation details: implemented, on in the preset, where, test")
    details.add_argument("--preset", default="classic", help=f"on/off as in this preset: {', '.join(PRESETS)}")
    details.add_argument("--json", action="store_true", help="print a JSON list of objects")
    _add_bench_parsers(sub)
    return parser


def _add_run_options(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N per experiment (default: 3)")
    parser.add_argument("--steps", type=int, help="env steps per run (default: the published count, or the preset's)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="trainings at once on this machine, CPU threads split between them (default: 1)")
    parser.add_argument("--ray", metavar="ADDRESS",
                        help="run each training as a task on this Ray cluster instead (needs proximal[ray]); "
                             "--out must then be a path every node shares")
    parser.add_argument("--out", type=Path, default=Path(out),
                        help=f"run directories and results; a rerun continues what is there (default: {out})")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="device of every run; with --ray, cuda asks one GPU per task (default: cpu)")


def _add_bench_parsers(sub) -> None:
    bench = sub.add_parser("bench", help="reproduce the published results: presets x envs x seeds, resumable")
    bench.add_argument("suite", nargs="+", metavar="SUITE_OR_ENV",
                       help="classic, mujoco, atari, or env ids (with --preset and --steps where no result is "
                            "published)")
    bench.add_argument("--preset", action="append", metavar="PRESET",
                       help="preset to run (repeatable; default: each env's published preset)")
    bench.add_argument("--bootstrap-truncation", action="store_true",
                       help="keep opt.truncation_bootstrap on (default: off, truncation as termination, as the "
                            "published numbers)")
    bench.add_argument("--precision", action="append", choices=PRECISIONS,
                       help="the networks' precision (repeatable: each one a variant, side by side; default: fp32)")
    _add_run_options(bench, "bench")
    ablate = sub.add_parser("ablate", help="the preset, then each applicable detail off in turn, over seeds")
    ablate.add_argument("--preset", default="classic", help="(default: classic)")
    ablate.add_argument("--env", default="CartPole-v1", help="(default: CartPole-v1)")
    _add_run_options(ablate, "ablation")


def config_from_args(args: argparse.Namespace) -> Config:
    values = {f.name: getattr(args, f.name) for f in fields(Config) if f.name in vars(args)}
    return apply_overrides(preset(args.preset), values, args.on, args.off)


def apply_overrides(cfg: Config, values: dict, on=(), off=()) -> Config:
    """``cfg`` with field ``values`` (already of the fields' types) and details switched ``on`` and ``off``,
    validated: what the train command's flags do, shared with ``proximal.train``'s keyword overrides."""
    for name, value in values.items():
        setattr(cfg, name, value)
    if "target_kl" in values:
        cfg.details["aux.target_kl"] = True  # --target-kl X means: stop early at X
    both = sorted(set(off) & set(on))
    if both:
        raise UserError(f"'{both[0]}' is given to both --off and --on; keep one of them")
    for detail_id in off:
        set_detail(cfg, detail_id, False)
    for detail_id in on:
        set_detail(cfg, detail_id, True)
    validate(cfg)
    return cfg


def cmd_train(args: argparse.Namespace) -> None:
    from .rundir import check_location
    from .trainer import default_run_dir, train

    if args.resume is not None:
        # preset is always in args (it has a default); it is checked against "classic" below
        given = sorted(f.name for f in fields(Config)
                       if f.name in vars(args) and f.name not in _NOT_FLAGS and f.name != "device")
        if given or args.off or args.on or args.run_dir is not None or args.preset != "classic":
            raise UserError("--resume continues a run with its own config; drop the other options "
                            "(only --quiet and --device may be given)")
        if Path(args.resume).is_file():
            # the trainer writes into the directory it resumes, so it needs the run directory itself
            raise UserError(f"--resume takes a run directory, not the file '{args.resume}'; it continues from the "
                            "newest checkpoint in RUN_DIR/checkpoints (move newer ones away to resume from an "
                            "earlier one)")
        check_location(args.resume)
        args.run_dir = Path(args.resume)  # for the interrupt hint
        train(None, args.run_dir, resume=True, quiet=args.quiet, device=vars(args).get("device"))
        return
    cfg = config_from_args(args)
    if args.run_dir is not None:
        check_location(args.run_dir)
    args.run_dir = Path(args.run_dir) if args.run_dir is not None else default_run_dir(cfg)
    train(cfg, args.run_dir, quiet=args.quiet)


def interrupted_hint(args: argparse.Namespace, what: str = "interrupted") -> str:
    """How to continue a command that ``what`` (a Ctrl-C, an exception) stopped."""
    if args.command in ("bench", "ablate"):
        return f"{what}; run the same proximal {args.command} command again to continue (finished runs are " \
               "skipped, stopped ones resumed)"
    run_dir = getattr(args, "run_dir", None)
    if args.command != "train" or not isinstance(run_dir, Path):
        return what
    from .checkpoint import finished
    from .distributed import resume_command

    if finished(run_dir):
        return f"{what}; continue with: {resume_command(run_dir)}"
    return f"{what} before the first checkpoint of '{run_dir}'; start it again with the same command"


def cmd_eval(args: argparse.Namespace) -> None:
    from .evaluate import evaluate, load_policy
    from .video import render_headless

    if args.episodes <= 0:
        raise UserError("--episodes must be positive")
    check_seed(args.seed)
    if args.video:
        render_headless()
    policy, cfg, normalizer = load_policy(args.path, args.device)
    returns = evaluate(policy, cfg.env_id, args.episodes, args.seed, args.deterministic, normalizer, args.video, cfg)
    mode = "deterministic" if args.deterministic else "stochastic"
    print(f"{cfg.env_id}: {returns.mean():.2f} ± {returns.std():.2f} over {len(returns)} episodes ({mode})")
    if args.video:
        print(f"wrote {args.video}")


def cmd_export(args: argparse.Namespace) -> None:
    from .export import export_onnx, output_names
    from .agent import load

    agent = load(args.path)
    export_onnx(agent, args.output)
    inputs = "obs, state, start" if agent.recurrent else "obs"
    print(f"wrote {args.output}: inputs {inputs}; outputs {', '.join(output_names(agent))}")


def cmd_plot(args: argparse.Namespace) -> None:
    from .plot import figure_path, plot_runs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = plot_runs(args.run_dirs, args.output)
    for warning in caught:
        print(f"proximal plot: warning: {warning.message}", file=sys.stderr)
    print(f"wrote {figure_path(args.output)}: " + "; ".join(f"{label} ({n} seed{'s' if n > 1 else ''})"
                                               for label, n in groups.items()))


def cmd_details(args: argparse.Namespace) -> None:
    from .details import describe

    rows = describe(preset(args.preset))
    if args.json:
        print(json.dumps([{k: r[k] for k in ("id", "implemented", "enabled", "where", "test")} for r in rows],
                         indent=2))
        return
    width = max(len(r["id"]) for r in rows)
    state_width = max(len(args.preset), 3)
    indent = " " * (width + 2 + 4 + 2 + state_width + 2)
    print(f"{'detail':<{width}}  impl  {args.preset:<{state_width}}  where / test")
    for r in rows:
        impl = "yes" if r["implemented"] else "no"
        on = "on" if r["enabled"] else "off"
        print(f"{r['id']:<{width}}  {impl:<4}  {on:<{state_width}}  {r['where'] or r['title']}")
        if r["test"]:
            print(indent + r["test"])


def _seeds_and_steps(args: argparse.Namespace) -> tuple[list[int], int | None]:
    """bench's and ablate's seeds (1..--seeds) and --steps (None: the published or the preset's count; a 0 must
    not fall back to it)."""
    if args.seeds <= 0:
        raise UserError(f"--seeds must be positive, got {args.seeds}")
    if args.steps is not None and args.steps <= 0:
        raise UserError(f"--steps must be positive, got {args.steps}")
    return list(range(1, args.seeds + 1)), args.steps


def cmd_bench(args: argparse.Namespace) -> None:
    from .bench import SUITES, bench

    envs = [env for name in args.suite for env in SUITES.get(name, (name,))]
    bench(args.out, envs, args.preset, *_seeds_and_steps(args), args.jobs, args.ray,
          reference_truncation=not args.bootstrap_truncation, device=args.device,
          precisions=tuple(dict.fromkeys(args.precision or ["fp32"])))
    print(f"wrote {args.out / 'results.csv'}, {args.out / 'results.md'} and one PNG per env")


def cmd_ablate(args: argparse.Namespace) -> None:
    from .ablate import ablate

    ablate(args.out, args.preset, args.env, *_seeds_and_steps(args), args.jobs, args.ray, args.device)
    print(f"wrote {args.out / 'results.csv'}, {args.out / 'ablation.md'} and {args.out / 'ablation.png'}")


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "export": cmd_export, "plot": cmd_plot, "details": cmd_details,
            "bench": cmd_bench, "ablate": cmd_ablate}


def lighter_start() -> None:
    """What the command's process can leave out of its start-up and exit, with the same numbers (~1 s of CPU time
    of a CartPole run here)."""
    from . import import_heavy

    with _ctrl_c_held():
        torch = import_heavy("torch")
    # The imports' objects, torch's above all, out of the collector's reach: its full passes then scan only what
    # the command allocates. Once: a process that calls main again (the tests) keeps its later garbage collectable.
    if not gc.get_freeze_count():
        gc.freeze()
    # torch's Optimizer keeps torch.compile out of these methods with a wrapper that imports torch._dynamo (~0.8 s,
    # sympy with it) at its first call, e.g. in the optimizer's constructor. The command compiles nothing, so each
    # wrapper is handed the plain method as the dynamo-disabled one it caches; under a torch without that cache
    # the attribute is never read and the wrapper imports torch._dynamo as before
    for name in ("add_param_group", "state_dict", "load_state_dict", "zero_grad"):
        plain = getattr(getattr(torch.optim.Optimizer, name), "__wrapped__", None)
        if plain is not None:
            setattr(plain, "__dynamo_disable", plain)
    # Adam.step's wrapper imports torch._dynamo at every call (~1 s the first time, on every run that trains in
    # torch) for graph breaks that only torch.compile heeds; besides, it runs the step with grad mode set from
    # defaults["differentiable"], which the command's Adam keeps. Only the unwrapped torch 2.x form is replaced.
    step = torch.optim.Adam.step
    if step.__code__.co_name == "_use_grad" and hasattr(step, "__wrapped__"):
        torch.optim.Adam.step = _without_dynamo(step.__wrapped__)


@contextlib.contextmanager
def _ctrl_c_held():
    """A Ctrl-C in torch's import lands in its C++ initialization, which then aborts the process or loses the
    signal: it is held until the import is done, then raised. Only where Python's own handler is in place (not in
    a background job, where Ctrl-C stays ignored, nor in a thread, which cannot set handlers)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    pressed = []
    signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pressed:
        raise KeyboardInterrupt


def _without_dynamo(plain):
    import torch

    @functools.wraps(plain)
    def step(self, closure=None):
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return plain(self, closure)

    return step


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before torch's import: --help and usage errors at once
    # a log handler that cannot write (wandb's debug log on a full disk) prints a traceback for every record;
    # the command reports the disk itself, in one line
    logging.raiseExceptions = False
    if args.command not in ("details", "plot"):  # the two that never touch torch
        lighter_start()
    previous = _stop_on_sigterm()
    try:
        COMMANDS[args.command](args)
    except BrokenPipeError:
        # the reader (e.g. `| head`) has gone; silence the flush at exit too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except UserError as e:
        print(f"proximal {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RunFailure as e:
        print(f"proximal {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        from .distributed import launched

        terminated = isinstance(e, Terminated)
        if launched().rank == 0:  # under torchrun every rank is interrupted: one hint, not one a rank
            print(interrupted_hint(args, "terminated (SIGTERM)" if terminated else "interrupted"), file=sys.stderr)
        return 143 if terminated else 130
    except Exception as e:  # an exception of the user's env, or a bug: its traceback, then how to continue
        what = "stopped by this error"
        if (hint := interrupted_hint(args, what)) != what:
            e.add_note(f"proximal {args.command}: {hint}")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _stop_on_sigterm():
    """A SIGTERM raises ``Terminated`` in the command, once (a second one does not cut its unwinding short), where
    Python's default (the process ends at once, without a word) is in place, in the main thread and outside
    torchrun: a rank waiting in a collective runs no handler, and torchrun stops its ranks with SIGTERM. Returns
    the handler to put back, or None."""
    if threading.current_thread() is not threading.main_thread() or int(os.environ.get("WORLD_SIZE", 1)) > 1 or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def terminated(signum, frame):
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        raise Terminated

    signal.signal(signal.SIGTERM, terminated)
    return signal.SIG_DFL


def run() -> None:
    """The ``proximal`` command: ``main``, then the exit handlers, then the process ends without Python's
    teardown of every module and object (torch's take ~0.3 s). The command has closed what it wrote by then:
    run directories, checkpoints, event files, envs and their workers, W&B runs."""
    try:
        code = main()
    except KeyboardInterrupt:  # in the imports, before main can tell what to continue
        print("interrupted", file=sys.stderr)
        code = 130
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader has gone, as in main
        code = code or 1
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    run()
