"""MLflow tracking: the only package that imports mlflow.

Layout of runs and artifacts (the contract with the aggregator, DESIGN.md "MLflow layout"):
`layout.py`. Driver side: `uri.py` (which store, is it usable), `study.py` (experiment and study
run, created once). Member side: `member_sink.py` (a `MemberSink`), `logged_model.py`.
Aggregator side: `reader.py`. `ui.py` serves the MLflow UI for a study's store.

Importing this package imports nothing heavy: modules import mlflow themselves, so
cluster/launch.py can use `errors` without loading mlflow.
"""
