"""The comparison's runs: the (method, seed) runs a study plans, each trained through tools/train.py
(or resumed), finished runs evaluated on another split through tools/test.py, and the record each
finished run leaves, with its provenance.

Each run is ``tools/train.py <config> <overrides> train.seed=<seed>`` in
``<out>/<method>/seed<seed>``, its log in ``train.log`` there and its console in ``console.log``; a
finished run (``result.json``) is skipped and an interrupted one resumes from its ``last.pth``, so
the command can simply be rerun. A record (a run's result.json, one line of ``runs.jsonl``) holds
the run's metrics on val, its resolved config, command, environment (revision, CPU, ISA, threads)
and first loss; :func:`evaluate_split` adds the metrics of its ``last.pth`` on the benchmark's test
split (once per run), each evaluation with its own command and ``evaluation_environment``: the
checkout and machine that measured it, which need not be those that trained.
:func:`read_records` reads ``runs.jsonl`` files back, so that a report can cover runs made in
another checkout. The studies themselves are in lab/studies.py; the report in lab/report.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dwdet.config import load_config
from dwdet.engine.metrics import read_metrics
from lab.studies import STUDIES, Method
from lab.synthetic import ensure_synthetic

REPO = Path(__file__).resolve().parents[1]
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
KEPT = (*METRICS, "AP_per_iou")  # what a record keeps of an evaluation (AP_per_iou: where it has one)
# what of a run's environment.json its record keeps: what decides its arithmetic
RUN_ENVIRONMENT = ("git_revision", "git_dirty", "torch", "python", "threads", "cpu", "cpu_id", "cpu_capability",
                   "onednn_max_cpu_isa", "world_size")


# the splits a finished run is evaluated on after training (tools/test.py), each kept in its
# result.json under the split's name
LATER_SPLITS = ("test",)

def selected_methods(study: str) -> list[Method]:
    names = list(STUDIES) if study == "all" else [study]
    methods: dict[str, Method] = {}
    for name in names:
        for method in STUDIES[name]:
            methods.setdefault(method.name, method)
    return list(methods.values())


def planned_runs(methods: list[Method], seeds: list[int]) -> list[tuple[Method, int]]:
    """Every method's runs, seed by seed, so that a study stopped part-way leaves whole pairs."""
    return [(m, s) for s in seeds for m in methods if m.all_seeds or s == seeds[0]]


def run_dir(out: str, method: Method, seed: int) -> Path:
    return Path(out) / method.name / f"seed{seed}"


def train_command(method: Method, seed: int, work_dir: Path, opts: list[str]) -> list[str]:
    init = []
    if method.init_from is not None:
        init = [f"train.init_from={work_dir.parent.parent / method.init_from / f'seed{seed}' / 'last.pth'}"]
    return [sys.executable, str(REPO / "tools" / "train.py"), str(REPO / method.config), "--opts", *method.overrides,
            *init, *opts, f"train.seed={seed}", "--work-dir", str(work_dir), "--resume"]


def kept(evaluation: dict) -> dict:
    """The part of an evaluation a record keeps."""
    return {k: evaluation[k] for k in KEPT if k in evaluation}


def evaluation_record(evaluation: dict, command: list[str]) -> dict:
    """What a record keeps of an evaluation by tools/test.py: its metrics, its command and the
    environment it ran in (tools/test.py writes it beside the metrics)."""
    environment = evaluation.get("environment") or {}
    return {**kept(evaluation), "command": command[1:],
            "evaluation_environment": {k: environment.get(k) for k in RUN_ENVIRONMENT}}


def final_eval(work_dir: Path) -> dict | None:
    """The evaluation at the last epoch of a finished run, or None."""
    config = work_dir / "config.json"
    if not config.is_file() or not (work_dir / "metrics.jsonl").is_file():
        return None
    epochs = json.loads(config.read_text())["train"]["epochs"]
    finals = [r for r in read_metrics(str(work_dir))["val"].values() if r.get("epoch") == epochs]
    return finals[-1] if finals else None


def training_minutes(work_dir: Path) -> float:
    """Minutes spent in training steps (from the logged per-iteration times; resumes included)."""
    seconds, previous = 0.0, 0
    for iteration, record in sorted(read_metrics(str(work_dir))["train"].items()):
        seconds += (record.get("time") or 0.0) * (iteration - previous)
        previous = iteration
    return seconds / 60


def train(method: Method, seed: int, out: str, opts: list[str], threads: int) -> dict:
    """Train one run (or resume it) unless it has finished; returns its result.json. A method that
    evaluates another's trained weights is not trained: those are evaluated on val instead."""
    work_dir = run_dir(out, method, seed)
    result_path = work_dir / "result.json"
    if result_path.is_file():
        result = json.loads(result_path.read_text())
        if result["opts"] != opts:
            raise RuntimeError(f"{work_dir} finished with --opts {result['opts']}, not {opts}: "
                               "use another --out (or delete that run)")
        return result
    work_dir.mkdir(parents=True, exist_ok=True)
    if method.trained_weights_of is not None:
        return evaluate_trained_weights(method, seed, out, opts, threads)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = train_command(method, seed, work_dir, opts)
    say(f"{method.name} seed {seed}: training ({work_dir}/train.log)")
    # the trainer writes train.log itself; its console (progress bars, warnings, a crash's
    # traceback) goes beside it, so that no line is logged twice
    with open(work_dir / "console.log", "a") as console:
        code = subprocess.run(command, stdout=console, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    evaluation = final_eval(work_dir)
    if code != 0 or evaluation is None:
        raise RuntimeError(f"{method.name} seed {seed} did not finish (exit code {code}); "
                           f"see {work_dir}/console.log, and rerun to resume it")
    minutes = training_minutes(work_dir)
    result = {"method": method.name, "seed": seed, "opts": opts, "command": command[1:], "minutes": round(minutes, 2),
              **kept(evaluation), **provenance(work_dir),
              "config": json.loads((work_dir / "config.json").read_text())}
    result_path.write_text(json.dumps(result, indent=1) + "\n")
    say(f"{method.name} seed {seed}: AP {100 * result['AP']:.1f} in {minutes:.1f} min")
    return result


def split_overrides(method: Method, opts: list[str], split: str) -> list[str]:
    """Overrides that make tools/test.py evaluate on ``split`` of the method's benchmark: that split
    (generated first where the benchmark is synthetic) as the evaluation set."""
    data = load_config(str(REPO / method.config), [*method.overrides, *opts]).data
    if data.type == "synthetic":
        params = data.params.to_dict()
        if split == "test" and not params.get("num_test"):
            raise RuntimeError(f"{method.config}: data.params.num_test is 0, the benchmark has no test split")
        images, annotations = ensure_synthetic(REPO / data.root, seed=data.seed, **params)[split]
    else:
        keys = data.to_dict()
        if not keys.get(f"{split}_images") or not keys.get(f"{split}_ann"):
            raise RuntimeError(f"{method.config}: no data.{split}_images and data.{split}_ann, no {split} split")
        images, annotations = REPO / data.root / keys[f"{split}_images"], REPO / data.root / keys[f"{split}_ann"]
    return ["data.type=coco", f"data.val_images={images}", f"data.val_ann={annotations}"]


def weights_source(method: Method, seed: int, out: str) -> tuple[Path, bool]:
    """The run folder whose last.pth holds the method's weights, and whether they are its trained
    weights rather than its weight average."""
    if method.trained_weights_of is not None:
        return Path(out) / method.trained_weights_of / f"seed{seed}", True
    return run_dir(out, method, seed), False


def run_test(method: Method, seed: int, out: str, opts: list[str], threads: int, split: str) -> tuple[dict, list[str]]:
    """The method's weights of ``seed`` evaluated on ``split`` by tools/test.py: (metrics, command)."""
    source, trained = weights_source(method, seed, out)
    work_dir = run_dir(out, method, seed)
    command = [sys.executable, str(REPO / "tools" / "test.py"), str(source / "config.json"), str(source / "last.pth"),
               *(["--trained-weights"] if trained else []), "--opts", *split_overrides(method, opts, split),
               *method.inference,
               "--work-dir", str(work_dir / split)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    say(f"{method.name} seed {seed}: evaluating on {split} ({work_dir}/{split}.log)")
    with open(work_dir / f"{split}.log", "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    metrics = work_dir / split / f"metrics_last{'_trained' * trained}.json"
    if code != 0 or not metrics.is_file():
        raise RuntimeError(f"{method.name} seed {seed}: the {split} evaluation failed (exit code {code}); "
                           f"see {work_dir}/{split}.log")
    return json.loads(metrics.read_text()), command


def evaluate_trained_weights(method: Method, seed: int, out: str, opts: list[str], threads: int) -> dict:
    """The result of a method that is another's finished run evaluated on val with its trained
    weights: that run's record, with these metrics and the command that measured them."""
    source, _ = weights_source(method, seed, out)
    if not (source / "result.json").is_file():
        raise RuntimeError(f"{method.name} seed {seed} evaluates the trained weights of {source}, "
                           "which has not finished")
    trained = json.loads((source / "result.json").read_text())
    evaluation, command = run_test(method, seed, out, opts, threads, "val")
    result = {**{k: v for k, v in trained.items() if k != "test"},  # (the source's test metrics: of its average)
              "method": method.name, "opts": opts, **evaluation_record(evaluation, command),
              "trained_weights_of": str(source)}
    (run_dir(out, method, seed) / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    say(f"{method.name} seed {seed}: AP {100 * result['AP']:.1f} (the trained weights of {source})")
    return result


def evaluate_split(method: Method, seed: int, out: str, opts: list[str], threads: int, split: str) -> dict:
    """A finished run's metrics on ``split`` (its last.pth through tools/test.py), kept in its
    result.json under the split's name, so that each run is evaluated there once."""
    work_dir = run_dir(out, method, seed)
    result = json.loads((work_dir / "result.json").read_text())
    if split in result:
        return result
    evaluation, command = run_test(method, seed, out, opts, threads, split)
    result[split] = evaluation_record(evaluation, command)
    (work_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    say(f"{method.name} seed {seed}: {split} AP {100 * evaluation['AP']:.1f}")
    return result


def provenance(work_dir: Path) -> dict:
    """Where a run came from: the checkout, torch, threads and CPU kernels it ran with, and its first
    logged loss, which tells two runs of one seed that differ from the start (data, weights, code)
    from two that part later (float rounding grown by training)."""
    found = {}
    environment = work_dir / "environment.json"
    if environment.is_file():
        saved = json.loads(environment.read_text())
        found["environment"] = {k: saved.get(k) for k in RUN_ENVIRONMENT}
    logged = read_metrics(str(work_dir))["train"]
    if logged:
        first = min(logged)
        found["first_loss"] = {"iter": first, "loss": logged[first]["loss"]}
    return found


def merge_records(target: str | Path, records: list[dict]) -> int:
    """``records`` merged into the ``runs.jsonl`` file ``target`` (made if missing), one line per
    (method, seed): a new record replaces the old one but keeps the evaluations on other splits
    (``"test"``) that only the old one holds. Returns the number of lines written."""
    path = Path(target)
    merged = read_records([str(path)]) if path.is_file() else {}
    for record in records:
        key = (str(record["method"]), int(record["seed"]))
        kept_splits = {split: metrics for split, metrics in merged.get(key, {}).items()
                       if split in LATER_SPLITS and split not in record}
        merged[key] = {**record, **kept_splits}
    path.write_text("".join(json.dumps(record) + "\n" for record in merged.values()))
    return len(merged)


def say(line: str, stream=sys.stdout) -> None:
    """One whole line per write, so that the lines of concurrent runs do not interleave."""
    stream.write(f"[compare] {line}\n")
    stream.flush()


def read_records(paths: list[str]) -> dict[tuple[str, int], dict]:
    """The run records of ``runs.jsonl`` files, by (method, seed); a later file wins."""
    records = {}
    for path in paths:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as error:
            raise SystemExit(f"--records {path}: cannot read it ({error.strerror})") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = (str(record["method"]), int(record["seed"]))
                float(record["AP"])
            except (ValueError, KeyError, TypeError) as error:
                raise SystemExit(f"--records {path}, line {number}: not a run record with 'method', 'seed' and 'AP' "
                                 f"({error!r})") from None
            records[key] = record
    return records
