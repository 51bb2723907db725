"""Running a reproduction: training runs side by side, then probes, analysis and ICS per run, as resumable stages.

Layout under ``OUT``::

    OUT/runs/<split>/<model>-seed<k>/     training runs (``smooth-infomax train``; resumed from their checkpoint)
    OUT/work/<split>/<model>-seed<k>/     probe, analysis, decoder and ICS outputs (features cached there)
    OUT/logs/<stage>.log                  the output of every command the reproduction ran
    OUT/stages/<stage>.json               finished stages (:class:`~smooth_infomax.stages.Stages`)
    RESULTS/<split>/<model>-seed<k>/      the small JSON files the results page reads (default OUT/results/<scale>)

Every verb runs as its own ``python -m smooth_infomax ...`` process (the CLI is the stable interface; a failing
command names its log file). With ``parallel > 1`` the runs are trained side by side, and afterwards each run's
probes, decoder, ICS and analysis run side by side with the other runs' (one thread per run). Stage names carry
the encoder's epochs: a run that trained further since it was last probed is probed again, and its old results
are removed first. With a deadline (``--time-limit``) no command starts after it; what is done stays.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..checkpoint import atomic_write_json
from ..config import load_config
from ..errors import UserError
from ..stages import Stages
from .protocols import ProbeSpec, Scale
from .summary import done_epochs, training_summary

STAGE_NAMES = ("train", "probes", "analysis", "ics")


class CommandFailed(UserError):
    """A command of the reproduction exited with an error (names its log file)."""


@dataclass
class Plan:
    """Everything one ``smooth-infomax reproduce thesis|paper`` invocation does."""

    scale: Scale
    data: Path
    out: Path
    results: Path
    seeds: Sequence[int]
    schemes: Sequence[str]
    models: Sequence[str]
    epochs: int
    device: str = "cpu"
    overrides: Sequence[str] = ()
    parallel: int = 1
    train_time_limit: float | None = None
    stages: Sequence[str] = STAGE_NAMES
    decoder_epochs: int | None = None
    ics_pairs: int | None = None
    ics_models: Sequence[str] | None = None
    ics_schemes: Sequence[str] | None = None
    samples: bool = True
    env: dict[str, str] = field(default_factory=dict)
    #: wall-clock time (time.time()) after which no further command is started (None: no limit)
    deadline: float | None = None

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.time() > self.deadline

    def run_dir(self, scheme: str, model: str, seed: int) -> Path:
        return self.out / "runs" / scheme / f"{model}-seed{seed}"

    def jobs(self) -> list[tuple[str, str, int]]:
        return [(scheme, model, seed) for scheme in self.schemes for seed in self.seeds for model in self.models]


def cli(*args: str) -> list[str]:
    """The command line of a ``smooth-infomax`` verb, run with this Python."""
    return [sys.executable, "-m", "smooth_infomax", *args]


def _env(plan: Plan) -> dict[str, str]:
    env = dict(os.environ)
    if env.get("PYTHONPATH"):  # e.g. PYTHONPATH=src on a machine without an install: valid from any folder
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads starve processes that share the cores
    env.update(plan.env)
    return env


def _tail(log: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def run_command(cmd: Sequence[str], log: Path, env: dict[str, str]) -> None:
    """Run ``cmd`` with its output appended to ``log``; CommandFailed (naming the log) when it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        code = subprocess.run(list(cmd), stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        raise CommandFailed(f"'{' '.join(cmd[2:4])}' exited with code {code}; see {log} ({_tail(log)})")


# ------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------


def train_command(plan: Plan, scheme: str, model: str, seed: int) -> list[str]:
    run = plan.run_dir(scheme, model, seed)
    sets = [f"data.path={plan.data}", f"seed={seed}", f"data.split_scheme={scheme}", f"train.epochs={plan.epochs}",
            "train.progress=false", "train.log_tensorboard=false", f"train.device={plan.device}", *plan.overrides]
    cmd = cli("train", "--config", plan.scale.config_name(model), "--out", str(run))
    for s in sets:
        cmd += ["--set", s]
    if (run / "checkpoints" / "last.pt").exists():
        cmd.append("--resume")
    return cmd


def train_all(plan: Plan, log: Callable[[str], None] = print) -> dict[str, int]:
    """Train every run of the plan to ``plan.epochs``, ``plan.parallel`` processes at a time.

    Runs that already reached the target are skipped. With ``train_time_limit`` (seconds), processes still
    running then are stopped (SIGTERM; each keeps its last finished epoch's checkpoint and resumes next time).
    Returns run name -> epochs done.
    """
    todo = []
    for scheme, model, seed in plan.jobs():
        run = plan.run_dir(scheme, model, seed)
        if (run / "encoder.pt").exists() and done_epochs(run) >= plan.epochs:
            log(f"done: {run} ({done_epochs(run)} epochs)")
        else:
            todo.append((scheme, model, seed))
    env, t0 = _env(plan), time.time()
    running: list[tuple[subprocess.Popen, Path, Any]] = []
    failures: list[str] = []
    try:
        _supervise(plan, todo, running, failures, env, t0, log)
    finally:  # an error or Ctrl-C here leaves no training process behind
        for proc, _, fh in running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            _wait(proc)
            fh.close()
    if failures:
        raise CommandFailed("training failed: " + "; ".join(failures))
    return {f"{s}/{m}-seed{k}": done_epochs(plan.run_dir(s, m, k)) for s, m, k in plan.jobs()}


def _supervise(plan: Plan, todo: list[tuple[str, str, int]], running: list[tuple[subprocess.Popen, Path, Any]],
               failures: list[str], env: dict[str, str], t0: float, log: Callable[[str], None]) -> None:
    """Start the runs of ``todo`` (at most ``plan.parallel`` at once) and wait for them or the time limit."""
    while todo or running:
        while todo and len(running) < max(1, plan.parallel):
            scheme, model, seed = todo.pop(0)
            logfile = plan.out / "logs" / f"train-{scheme}-{model}-seed{seed}.log"
            logfile.parent.mkdir(parents=True, exist_ok=True)
            cmd = train_command(plan, scheme, model, seed)
            fh = logfile.open("a")
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            log(f"training {plan.run_dir(scheme, model, seed)} to {plan.epochs} epochs (log {logfile})")
            running.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env), logfile, fh))
        time.sleep(0.2)
        if plan.train_time_limit is not None and time.time() - t0 > plan.train_time_limit:
            for proc, logfile, _ in running:
                if proc.poll() is None:
                    log(f"time limit ({plan.train_time_limit:.0f} s): stopping the run of {logfile.name}")
            todo.clear()
            return  # the caller stops what still runs
        for entry in list(running):
            proc, logfile, fh = entry
            if proc.poll() is not None:
                fh.close()
                running.remove(entry)
                if proc.returncode != 0:
                    failures.append(f"{logfile} (code {proc.returncode}: {_tail(logfile)})")


def _wait(proc: subprocess.Popen, grace: float = 60.0) -> None:
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def write_train_summary(run: Path, dest: Path) -> dict | None:
    summary = training_summary(run)
    if summary is not None:
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write_json(dest / "train.json", summary)
    return summary


# ------------------------------------------------------------------------------------------------------
# Probes, analysis, decoders and ICS of one run
# ------------------------------------------------------------------------------------------------------


def _stochastic(run: Path) -> bool:
    """True when the run's encoder has a Gaussian posterior (``model.kind: sim``), read from its config."""
    try:
        return load_config(run / "config.yaml").model.kind == "sim"
    except UserError:
        return False


def probe_specs(plan: Plan, run: Path, samples: bool = False) -> list[ProbeSpec]:
    """The protocol's probes (``samples=False``), or their posterior-sample twins for a stochastic encoder."""
    if not samples:
        return list(plan.scale.probes)
    return [s.sampled() for s in plan.scale.probes] if plan.samples and _stochastic(run) else []


def _single_json(folder: Path, prefix: str) -> Path:
    found = sorted(folder.glob(f"{prefix}*.json"))
    if len(found) != 1:
        raise CommandFailed(f"{folder}: expected one {prefix}*.json from the command, found {len(found)}")
    return found[0]


class RunStages:
    """The post-training stages of one run (``scheme/model-seed<k>``), named with its epochs."""

    def __init__(self, plan: Plan, stages: Stages, scheme: str, model: str, seed: int):
        self.plan, self.stages = plan, stages
        self.scheme, self.model, self.seed = scheme, model, seed
        self.run = plan.run_dir(scheme, model, seed)
        self.name = f"{model}-seed{seed}"
        self.epochs = done_epochs(self.run)
        self.work = plan.out / "work" / scheme / self.name
        self.res = plan.results / scheme / self.name
        self.env = _env(plan)

    def _key(self, what: str) -> str:
        return f"{what}-{self.scheme}-{self.name}-e{self.epochs}"

    def _log(self, what: str) -> Path:
        return self.plan.out / "logs" / f"{self._key(what)}.log"

    def prepare(self) -> None:
        """Results of an earlier epoch count are removed (the run trained further since)."""
        self.res.mkdir(parents=True, exist_ok=True)
        stamp = self.res / "epochs.txt"
        if stamp.exists() and stamp.read_text().strip() != str(self.epochs):
            for f in self.res.glob("*.json"):
                f.unlink()
        write_train_summary(self.run, self.res)

    def finish(self) -> None:
        (self.res / "epochs.txt").write_text(f"{self.epochs}\n")

    def _skip(self, what: str) -> bool:
        """True (with a log line) when the plan's time is up: the command is not started."""
        if self.plan.out_of_time():
            print(f"[time] {self._key(what)} not started: past the time limit (run the command again to do it)")
            return True
        return False

    def probes(self, samples: bool = False) -> None:
        for spec in probe_specs(self.plan, self.run, samples):
            dst = self.res / f"{spec.tag}.json"
            if dst.exists() or self._skip(f"probe-{spec.tag}"):
                continue
            out = self.work / spec.tag

            def fit(spec: ProbeSpec = spec, out: Path = out) -> str:
                run_command(cli("probe", "--run", str(self.run), "--data", str(self.plan.data), "--split-scheme",
                                self.scheme, "--device", self.plan.device, "--out", str(out), *spec.args),
                            self._log(f"probe-{spec.tag}"), self.env)
                return str(_single_json(out, "probe"))

            shutil.copyfile(self.stages.run(self._key(f"probe-{spec.tag}"), fit), dst)

    def analysis(self) -> None:
        dst = self.res / "analysis.json"
        if dst.exists() or self._skip("analysis"):
            return
        out = self.work / "analysis"

        def analyze() -> str:
            run_command(cli("analyze", "--run", str(self.run), "--data", str(self.plan.data), "--split-scheme",
                            self.scheme, "--device", self.plan.device, "--out", str(out), "--no-tsne"),
                        self._log("analysis"), self.env)
            return str(out / "analysis.json")

        shutil.copyfile(self.stages.run(self._key("analysis"), analyze), dst)

    def ics(self) -> None:
        plan, scale = self.plan, self.plan.scale
        if self.scheme not in (plan.ics_schemes or scale.ics_schemes) or \
                self.model not in (plan.ics_models or scale.ics_models):
            return
        dst = self.res / "ics.json"
        if dst.exists() or self._skip("ics"):
            return
        module, loss = scale.decoder_module, scale.decoder_loss
        epochs = plan.decoder_epochs or scale.decoder_epochs
        pairs = plan.ics_pairs or scale.ics_pairs
        dec = self.work / f"decoder-{module}-{loss}-{epochs}-e{self.epochs}"

        def decoder() -> str:
            run_command(cli("decoder", "train", "--run", str(self.run), "--data", str(plan.data), "--module",
                            str(module), "--loss", loss, "--epochs", str(epochs), "--device", plan.device,
                            "--out", str(dec)), self._log(f"decoder-{module}-{epochs}"), self.env)
            return str(dec / "decoder.pt")

        def score(decoder_pt: str) -> dict:
            out = self.work / f"ics-{pairs}"
            run_command(cli("ics", "--run", str(self.run), "--decoder", decoder_pt, "--data", str(plan.data),
                            "--split", "test", "--max-pairs", str(pairs), "--device", plan.device, "--out", str(out)),
                        self._log(f"ics-{pairs}"), self.env)
            result = json.loads((out / "ics.json").read_text())
            result["decoder"] = {"module": module, "loss": loss, "epochs": epochs}
            atomic_write_json(out / "ics-with-decoder.json", result)
            return {"path": str(out / "ics-with-decoder.json")}

        decoder_pt = self.stages.run(self._key(f"decoder-{module}-{loss}-{epochs}"), decoder)
        if self._skip("ics"):
            return
        done = self.stages.run(self._key(f"ics-{module}-{epochs}-{pairs}"), lambda: score(decoder_pt))
        shutil.copyfile(done["path"], dst)


def _eligible(plan: Plan, run: Path) -> bool:
    if plan.scale.probe_unfinished:
        return done_epochs(run) >= 1 and ((run / "encoder.pt").exists() or (run / "checkpoints" / "last.pt").exists())
    return (run / "encoder.pt").exists()


def reproduce(plan: Plan, log: Callable[[str], None] = print,
              before_training: Callable[[Stages], None] | None = None) -> dict:
    """Run the plan's stages; returns ``{"trained": {run: epochs}, "results": str}`` (also OUT/reproduce.json)."""
    unknown = sorted(set(plan.stages) - set(STAGE_NAMES))
    if unknown:
        raise UserError(f"--stages: unknown stage(s) {', '.join(unknown)}; use {', '.join(STAGE_NAMES)}")
    plan.out.mkdir(parents=True, exist_ok=True)
    stages = Stages(plan.out, log=log)
    if before_training is not None:
        before_training(stages)
    failed: CommandFailed | None = None
    trained: dict[str, int] = {}
    if "train" in plan.stages:
        try:
            trained = train_all(plan, log)
        except CommandFailed as exc:  # the other runs are still probed; the error is raised at the end
            log(f"error: {exc}")
            failed = exc

    def evaluate(job: tuple[str, str, int]) -> None:
        rs = RunStages(plan, stages, *job)
        rs.prepare()
        # most wanted first, for a time limit: the protocol's probes, ICS, analysis, then the sample probes
        if "probes" in plan.stages:
            rs.probes()
        if "ics" in plan.stages:
            rs.ics()
        if "analysis" in plan.stages:
            rs.analysis()
        if "probes" in plan.stages:
            rs.probes(samples=True)
        rs.finish()

    jobs = [job for job in plan.jobs() if _eligible(plan, plan.run_dir(*job))]
    if plan.parallel > 1 and len(jobs) > 1:  # one thread per run, each waiting on its own commands
        with ThreadPoolExecutor(max_workers=min(plan.parallel, len(jobs))) as pool:
            for future in [pool.submit(evaluate, job) for job in jobs]:
                future.result()
    else:
        for job in jobs:
            evaluate(job)
    summary = {"scale": plan.scale.name, "trained": trained, "results": str(plan.results),
               "seconds": dict(stages.timings)}
    atomic_write_json(plan.out / "reproduce.json", summary)
    if failed is not None:
        raise failed
    return summary


__all__ = ["Plan", "STAGE_NAMES", "CommandFailed", "cli", "train_command", "train_all", "reproduce", "RunStages"]
