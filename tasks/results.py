"""What the nightly flow's tasks hand each other: small typed, frozen records.

Every one is a pydantic model, so Prefect's JSON result serializer (``tasks/caching.py``: cached tasks
persist their results as JSON) writes it with its class name and reads the same type back; ``extra="forbid"``
makes a misspelt field fail where it is made, not three tasks later. Both staging backends (one process,
Dask) return ``StagedAudiences``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lookalike_models.config import ModelSpec


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitFile(Result):
    """One train/held-out split of every campaign's seeds (``evaluation.save_split``'s file)."""

    seed: int
    path: str


class TrainedModel(Result):
    """A model fitted on one split's training seeds: what it is, what it saw, and where its state lies."""

    spec: ModelSpec
    data_dir: str
    split: SplitFile
    model_dir: str
    fit_seconds: float
    users_embedded: int
    fit_started_at: float = 0.0  # when the fit began (seconds since the epoch): its MLflow run's start time
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)  # logged to MLflow
    history: dict[str, list[float]] = Field(default_factory=dict)  # training curves, one value per step

    @property
    def name(self) -> str:
        return self.spec.name


class ModelEvaluation(Result):
    """Held-out metrics of one model on one split (``metrics_path``: None when no campaign could be scored)."""

    model: str
    split_seed: int
    metrics_path: str | None
    failed: dict[str, str] = Field(default_factory=dict)  # campaign_id -> why


class StagingRecord(Result):
    """What the next run needs to refresh staged audiences incrementally (``incremental.load_previous_top``,
    which reads ``model_dump(by_alias=True)``). A field may not be called ``keys``: ``dict(record)``, which
    Prefect applies to task parameters, would take it for a mapping's ``keys()``."""

    model_config = ConfigDict(populate_by_name=True)

    model: str  # the spec (JSON) the tops were scored with: another spec must not reuse them
    stage: str
    size: int
    campaign_keys: dict[str, str] = Field(alias="keys")  # campaign_id -> conditions its top list holds under


class StagedAudiences(Result):
    """Audiences written to a staging folder, not yet published. The Dask backend leaves no staging record
    (it does not refresh incrementally)."""

    model: str
    staged: dict[str, str] = Field(default_factory=dict)  # campaign_id -> parquet path
    failed: dict[str, str] = Field(default_factory=dict)  # campaign_id -> why
    refresh_state: StagingRecord | None = None
    incremental_campaigns: list[str] = Field(default_factory=list)  # refreshed from the previous top list


class PreviousRefresh(Result):
    """What tonight may start from: the last published run's model folders and staging (empty: full refresh)."""

    models: dict[str, str] = Field(default_factory=dict)  # model name -> model folder
    staging: StagingRecord | None = None
    other_data_set: str | None = None  # why the last published run's data is another data set (no drift either)


class RefreshRecord(Result):
    """``refresh.json`` in a run folder: what the next run and the re-clustering flow need."""

    data_dir: str
    data_set: str | None = None  # ``sources.data_set_key`` of the run's source (None: written before it existed)
    models: dict[str, str] = Field(default_factory=dict)  # model name -> model folder
    specs: dict[str, ModelSpec] = Field(default_factory=dict)
    staging: StagingRecord | None = None
    run_id: str | None = None  # set when read back as the live run (``refresh.live_models``)


class ChampionDecision(Result):
    """The registry's choice on tonight's held-out split; versions are registered and aliases move only once
    audiences are published."""

    champion: str
    promoted: bool
    reason: str
    previous_champion: str | None = None
    versions: dict[str, int] = Field(default_factory=dict)  # model name -> registered version (once promoted)
    challenger: str | None = None
    aliases_moved: bool = False
    evaluated: bool = True  # False: no campaign could be held out; published without a comparison
    registered_model: str = ""  # the output root's registered model
    model_runs: dict[str, str] = Field(default_factory=dict)  # model name -> child run (its files registrable)


class TrackedSettings(Result):
    """What a run's parent MLflow run records of its config (``tracked_settings``): every setting, flattened to
    ``section.key`` strings, the metric its runs view sorts by, and the data set it read in a few words."""

    params: dict[str, str]
    selection_metric: str
    dataset: str = ""


class RunFolder(Result):
    """Where one flow run writes: its id, folder, output root and parent MLflow run (``open_mlflow_run``
    opens it; "" until then)."""

    run_id: str
    run_dir: str
    output_root: str
    mlflow_run: str = ""


class SummaryRow(Result):
    """One row of ``report/metrics_summary.parquet``: a model's held-out metrics averaged over the campaigns
    of one seed bucket (``all``: every evaluated campaign)."""

    model: str
    seed_bucket: str
    campaigns: int
    metrics: dict[str, float | None]  # metric name (metric_names) -> mean, in the table's column order

    def table_row(self) -> dict[str, str | int | float | None]:
        """The row as the summary table has it: model, seed_bucket, campaigns, then each metric."""
        return {"model": self.model, "seed_bucket": self.seed_bucket, "campaigns": self.campaigns} | self.metrics


class ComparisonRow(Result):
    """One row of ``report/comparison_to_reference.parquet`` (``protocol.compare_to_reference``): a model's
    mean of one metric over a seed bucket's campaigns minus the reference's, with the paired 95% CI."""

    model: str
    seed_bucket: str
    metric: str
    campaigns: int
    mean: float
    reference: str
    reference_mean: float
    diff: float
    ci_low: float
    ci_high: float
    wins: int  # campaigns where the model beats the reference


class RunReport(Result):
    """``evaluate_run``'s report of a night: its tables and plot are files under the run folder's ``report/``;
    the rows later tasks read (the champion's choice, MLflow, the summary) are here."""

    summary: list[SummaryRow] = Field(default_factory=list)  # by model and seed bucket
    comparison: list[ComparisonRow] = Field(default_factory=list)  # empty without a reference model
    files: list[str] = Field(default_factory=list)  # the report's Parquet tables and plot
    not_evaluated: dict[str, int] = Field(default_factory=dict)  # campaign_id -> seeds, too few to hold any out

    def overall(self) -> list[SummaryRow]:
        """Each model's row over every evaluated campaign."""
        return [row for row in self.summary if row.seed_bucket == "all"]


class NightlyResult(Result):
    """What ``nightly_refresh`` returns (and ``lookalike run`` reports)."""

    run_id: str
    mlflow_run_id: str
    published: dict[str, str]  # campaign_id -> audience file
    failed: dict[str, str]  # "model/campaign_id" -> why
    skipped: dict[str, str]  # campaign_id -> why the input made it impossible
    status: Literal["complete", "partial", "failed"]
    summary: list[SummaryRow]  # metrics by model and seed bucket
    drift: dict[str, float | int]
    data_dir: str
    champion: ChampionDecision
    users_embedded: dict[str, int]
    campaigns_refreshed: list[str]
    audiences_dir: str | None = None  # absolute folder of the published audiences (None: nothing published)
    flow_run: str | None = None  # the Prefect flow run, '<name> (<id>)'


class ExpandResult(Result):
    """What ``expand_audience`` returns."""

    run_id: str
    published: dict[str, str]  # campaign_id (the seed list's name) -> audience file
    mlflow_run_id: str | None = None
    flow_run: str | None = None  # the Prefect flow run, '<name> (<id>)'
    notes: list[str] = Field(default_factory=list)  # what the operator should know (e.g. seed ids ignored)


class ExpandStaged(Result):
    """``expand_one``'s staged audience and its notes (seed ids the data does not know, ignored)."""

    staged: dict[str, str]  # campaign_id -> parquet path
    notes: list[str] = Field(default_factory=list)


class ReclusterResult(Result):
    """What ``recluster_model`` did to one live model's centroids."""

    model: str
    reclustered: list[str]  # campaigns whose centroids changed
    campaigns: int  # campaigns with centroids
    why: str | None = None  # why none was re-clustered
