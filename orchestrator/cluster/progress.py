"""A compact live view of a running study: one row per member (epoch, val acc, ETA).

A Tune callback (it runs in the driver process). On a terminal it redraws a rich table; when
output goes to a file or a Ray job log it prints one line per reported epoch instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table


@dataclass
class MemberRow:
    key: str
    label: str
    epochs: int
    epoch: int = 0
    val_acc: float | None = None
    polyak_val_acc: float | None = None
    status: str = "pending"
    started: float = field(default_factory=time.monotonic)
    first_epoch: int | None = None  # epochs done before this run (resumed members)

    def eta_s(self) -> float | None:
        if self.first_epoch is None or self.epoch <= self.first_epoch:
            return None
        per_epoch = (time.monotonic() - self.started) / (self.epoch - self.first_epoch)
        return per_epoch * (self.epochs - self.epoch)


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class StudyProgress(Callback):
    def __init__(
        self, study: str, rows: dict[str, MemberRow], epochs: int, console: Console | None = None
    ):
        self.study = study
        self.epochs = epochs
        self.rows = rows
        self.console = console or Console()
        self.live: Live | None = None

    # Tune pickles its callbacks with the experiment state; a console and a live view don't
    # pickle (locks, file handles) and mean nothing in another process anyway.
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("console", "live")}

    def __setstate__(self, state):
        self.__dict__.update(state, console=Console(), live=None)

    # Tune callback hooks ----------------------------------------------------------------
    def setup(self, **info):
        if self.console.is_terminal:
            self.live = Live(
                self.table(), console=self.console, refresh_per_second=2, transient=False
            )
            self.live.start()

    def on_trial_start(self, iteration, trials, trial, **info):
        row = self._row(trial)
        if row:
            row.status, row.started = "running", time.monotonic()
            self._refresh()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = self._row(trial)
        if not row or "epoch" not in result:
            return
        if row.first_epoch is None:
            row.first_epoch, row.started = (
                int(result["epoch"]) - 1,
                time.monotonic() - result.get("time_this_iter_s", 0.0),
            )
        row.epoch = int(result["epoch"])
        row.val_acc = result.get("val_acc")
        row.polyak_val_acc = result.get("polyak_val_acc")
        if self.live is None:
            polyak = f"  polyak {row.polyak_val_acc:.4f}" if row.polyak_val_acc is not None else ""
            self.console.print(
                f"[{self.study}] {row.label}  epoch {row.epoch}/{row.epochs}  val {row.val_acc:.4f}"
                f"{polyak}  eta {_fmt_eta(row.eta_s())}",
                highlight=False,
                soft_wrap=True,
            )
        self._refresh()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._set_status(trial, "done")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._set_status(trial, "[red]failed[/]")

    def on_experiment_end(self, trials, **info):
        self.stop()

    # Rendering --------------------------------------------------------------------------
    def stop(self) -> None:
        if self.live is not None:
            self.live.update(self.table())
            self.live.stop()
            self.live = None

    def table(self) -> Table:
        table = Table(title=f"study {self.study}", title_justify="left", expand=False)
        for column in ("member", "status", "epoch", "val acc", "polyak val", "eta"):
            table.add_column(column, justify="left" if column in ("member", "status") else "right")
        for row in self.rows.values():
            table.add_row(
                row.label,
                row.status,
                f"{row.epoch}/{row.epochs}",
                f"{row.val_acc:.4f}" if row.val_acc is not None else "-",
                f"{row.polyak_val_acc:.4f}" if row.polyak_val_acc is not None else "-",
                _fmt_eta(row.eta_s()) if row.status == "running" else "-",
            )
        return table

    def _row(self, trial) -> MemberRow:
        trial_config = trial.config.get("trial")
        if isinstance(trial_config, dict) and trial_config.get("key") in self.rows:
            return self.rows[trial_config["key"]]
        # Optuna trials are not known up front: a row appears when the trial does.
        key = f"trial-{trial.trial_id}"
        if key not in self.rows:
            values = " ".join(
                f"{k.split('.')[-1]}={v}" for k, v in trial.config.get("search", {}).items()
            )
            self.rows[key] = MemberRow(key, f"{key} {values}".strip(), self.epochs)
        return self.rows[key]

    def _set_status(self, trial, status: str) -> None:
        row = self._row(trial)
        if row:
            row.status = status
            self._refresh()

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.table())
