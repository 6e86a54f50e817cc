"""The aggregator: ensembles of a finished study's members and the report of what they buy.

    records = [from_member_dir(d) for d in member_dirs]      # or tracking/'s MLflow reader
    report = aggregate(records, AggregateOptions(snapshot_last_k=3), executor=None)
    out_dir = write_report(report, study_dir)                 # report.json / .md / plots
    print_report(report)

Modules, one job each: records (what a member is), combine (cached-logit combiners),
metrics, selection (greedy selection); weights (weight averages, BN recalibration, running
jobs), weight_jobs (what a job is), soups (SWA/soup jobs from records); aggregate
(orchestration) with its steps validate, candidates (measuring every stored model), entries
(report entries), prediction_ensembles, weight_ensembles; report (schema, JSON, writing),
report_files, report_render (markdown, terminal), report_plots. No ray, no mlflow here:
cluster/ passes a Ray executor for weight jobs, tracking/ builds the MemberRecords.
Importing this package loads no data, no ray, no mlflow and no matplotlib (plots import it).
"""

from orchestrator.ensemble.aggregate import AggregateOptions, aggregate, validate_members
from orchestrator.ensemble.errors import AggregateError, WeightJobError
from orchestrator.ensemble.records import MemberRecord, SnapshotRef, from_member_dir
from orchestrator.ensemble.report import Report, print_report, write_report
from orchestrator.ensemble.weights import (
    InProcessExecutor,
    WeightJob,
    WeightResult,
    WeightSource,
    job_for_components,
    run_weight_job,
)

__all__ = [
    "AggregateError",
    "AggregateOptions",
    "InProcessExecutor",
    "MemberRecord",
    "Report",
    "SnapshotRef",
    "WeightJob",
    "WeightJobError",
    "WeightResult",
    "WeightSource",
    "aggregate",
    "from_member_dir",
    "job_for_components",
    "print_report",
    "run_weight_job",
    "validate_members",
    "write_report",
]
