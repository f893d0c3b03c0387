"""Typed pipeline configuration. Defaults live in ``conf/*.yaml``; these models validate them, and the
flows take them as parameters so the Prefect UI renders them as forms."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from lookalike_models.adapters.options import AmazonOptions, MovieLensOptions
from lookalike_models.shapes import ShapeConfig
from lookalike_models.strict_config import StrictConfig
from lookalike_models.synthetic import SyntheticConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# Field order is the order of the Prefect UI's run form: what users change first, rarely changed knobs last.
# Optional text is "" rather than None (YAML ``null`` still reads as ""): the form then shows a text box, not
# a type switch reading 'Property is type "None"'.
Text = Annotated[str, BeforeValidator(lambda v: "" if v is None else v)]


def _scorer_choices(schema: dict[str, Any]) -> None:
    """The form's choice list of registered scorers (validation checks the same registry)."""
    import lookalike_models.catalog  # noqa: F401 (registers every scorer)
    from lookalike_models.scorers import SCORERS

    schema["enum"] = sorted(SCORERS)


def _metric_choices(schema: dict[str, Any]) -> None:
    """The form's choice list: the metrics a run measures with the usual audience sizes."""
    from lookalike_models.metric_names import STANDARD_METRICS

    schema["enum"] = STANDARD_METRICS


class DataSource(StrictConfig):
    kind: Literal["synthetic", "folder", "sharded", "movielens", "amazon", "tencent"] = Field(
        "synthetic",
        description="synthetic: generated; folder: a contract folder at `path`; sharded: a sharded folder at "
        "`path` (lookalike_models/sharded/store.py); "
        "movielens/amazon/tencent: the real sets in ../shared/data (or `path`)",
    )
    path: Text = Field("", description="Contract folder (kind=folder) or raw data set folder; empty: the default")
    shape: ShapeConfig = Field(
        default_factory=ShapeConfig,
        title="Shape",
        description="A derived shape of the data (lookalike_models/shapes.py): max_users (a seeded user sample, "
        "all items kept), drop_popular_share (each domain's most-engaged items removed); defaults change nothing",
    )
    min_seed_match_rate: float = Field(
        0.5, ge=0, le=1, description="A campaign fails if fewer of its seeds are known users"
    )
    max_multi_len: int = Field(50, ge=1, description="Longest multi-valued feature list kept")
    # The real sets' adapter knobs: one block per adapter, named as its kind, so --set data.movielens.x=1 reads
    # like data.synthetic.x. Always present (the form then shows no type switch); left out of dumps while at
    # their defaults, so hashes and logged parameters of a config that sets none are the same as before them.
    movielens: MovieLensOptions = Field(
        default_factory=MovieLensOptions,
        title="MovieLens adapter (kind: movielens)",
        description="Which movies become campaigns and the user fields written; used only when kind is movielens",
        exclude_if=lambda options: options == MovieLensOptions(),
    )
    amazon: AmazonOptions = Field(
        default_factory=AmazonOptions,
        title="Amazon adapter (kind: amazon)",
        description="Which movies become campaigns and the user fields written; used only when kind is amazon",
        exclude_if=lambda options: options == AmazonOptions(),
    )
    synthetic: SyntheticConfig | None = Field(
        None,
        title="Synthetic data (kind: synthetic)",
        description="The generator's knobs; used only when kind is synthetic (empty: the generator's defaults)",
    )

    @model_validator(mode="after")
    def _synthetic_knobs_when_synthetic(self) -> DataSource:
        if self.kind == "synthetic" and self.synthetic is None:
            # Not marked as set: a partial run's missing knobs still come from the YAML file (with_file_defaults).
            object.__setattr__(self, "synthetic", SyntheticConfig())
        return self

    @model_validator(mode="after")
    def _sharded_folder_as_written(self) -> DataSource:
        if self.kind == "sharded" and not self.path:
            raise ValueError("data.kind=sharded needs data.path (the sharded folder)")
        if self.kind == "sharded" and not self.shape.is_identity:
            # A shape samples users over the whole raw data set; a sharded folder is never loaded raw.
            raise ValueError("data.shape cannot be used with data.kind=sharded: shape the contract folder first")
        return self

    @model_validator(mode="after")
    def _adapter_knobs_of_this_kind(self) -> DataSource:
        # Another adapter's knobs would be silently unused: a mistyped kind or a block left from another set.
        for kind, default in (("movielens", MovieLensOptions()), ("amazon", AmazonOptions())):
            if self.kind != kind and getattr(self, kind) != default:
                raise ValueError(f"data.{kind} sets the {kind} adapter's options, but data.kind is {self.kind}")
        return self

    @property
    def adapter_options(self) -> MovieLensOptions | AmazonOptions | None:
        """The knobs of this kind's adapter; None for kinds without any (synthetic, folder, tencent)."""
        return {"movielens": self.movielens, "amazon": self.amazon}.get(self.kind)


class ModelSpec(StrictConfig):
    # No per-field descriptions: the run form repeats them for every model of the list (see NightlyConfig.models).
    name: str = Field(..., title="Name")
    model: str = Field(..., title="Model", json_schema_extra=_scorer_choices)
    # A mapping (the form's JSON box, the YAML users write), checked against the model's config when read.
    params: dict[str, Any] = Field(default_factory=dict, title="Params")

    # Fail when the config is read, not after data preparation: an unknown model, or an unknown or bad
    # parameter at any depth (a composite model's parts included), named by its whole key path.
    @field_validator("model")
    @classmethod
    def _known_model(cls, model: str) -> str:
        from lookalike_models.catalog import scorer_class

        try:
            scorer_class(model)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        return model

    @field_validator("params")
    @classmethod
    def _params_of_the_model(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from lookalike_models.catalog import scorer_class
        from lookalike_models.scorers import validated_params

        if "model" not in info.data:  # an unknown model: already reported, its params cannot be checked
            return params
        try:
            return validated_params(scorer_class(info.data["model"]), params)
        except ValidationError as single_process_error:
            # A key only the sharded twin has (e.g. panel_users) is accepted here; whether the night runs on the
            # sharded data plane is known only to NightlyConfig, which refuses it elsewhere.
            from lookalike_models.sharded.catalog import sharded_config_class

            twin = sharded_config_class(info.data["model"])
            if twin is None:
                raise single_process_error from None
            try:
                twin.model_validate(params)
            except ValidationError:
                raise single_process_error from None
            return params


class EvaluationConfig(StrictConfig):
    holdout_frac: float = Field(0.1, gt=0, lt=1, description="Share of each campaign's seeds held out")
    audience_fractions: list[float] = Field(
        [0.01, 0.02, 0.05, 0.1], description="Audience sizes as shares of the population"
    )
    seed_buckets: list[int] = Field([50, 200], description="Seed-list size bucket edges")
    split_seeds: list[int] = Field(
        [0],
        min_length=1,
        description="One held-out split per seed; metrics are "
        "each campaign's mean over the splits. The first split's models are published",
    )
    max_scored_users: int = Field(
        200_000,
        ge=0,
        description="Above this population, each campaign's held-out seeds are ranked against a uniform sample "
        "of this many users (estimated ranks), so evaluation stops growing with the users; 0: everyone",
    )
    reference: Text = Field(
        "",
        description="Model (ModelSpec.name) every model is compared with: paired "
        "95% bootstrap CI over campaigns of the difference (e.g. item_logreg); empty: none",
    )

    @field_validator("split_seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"split_seeds must be distinct, got {seeds}")
        return seeds


class PublishConfig(StrictConfig):
    audience_fraction: float = Field(0.05, gt=0, le=1, description="Published audience size / population")
    model: str = Field(
        "champion",
        description="'champion' (the registry's champion after tonight's comparison) "
        "or a model name (ModelSpec.name) whose audiences are published",
    )
    exclusions: list[str] = Field(
        default_factory=list,
        description="Parquet files of users never to target: user_id, optional campaign_id (null = every campaign)",
    )
    incremental: bool = Field(
        True,
        description="Reuse the previous run's per-user state and campaign top lists "
        "where activity and seeds did not change (exact for pointwise models)",
    )
    keep_depth: float = Field(
        2.0,
        ge=1.0,
        description="Top list kept for the next incremental run, as a "
        "multiple of the audience size (deeper survives more churn)",
    )


class ExecutionConfig(StrictConfig):
    backend: Literal["local", "dask"] = Field(
        "local", description="Where audiences are scored: this process, or Dask workers, users sharded"
    )
    dask_address: Text = Field(
        "",
        pattern=r"^$|^(tcp|tls)://(\[[0-9a-fA-F:]+\]|[^/:\s\[\]]+):\d+$",  # empty, or host or [IPv6] and a port
        description="Scheduler of an existing cluster, e.g. tcp://10.0.0.5:8786; empty starts a LocalCluster",
    )
    n_workers: int = Field(2, ge=1, description="LocalCluster workers")
    processes: bool = Field(
        False,
        description="LocalCluster with worker processes (each loads the data and model once) instead of threads",
    )
    shards: int = Field(4, ge=1, description="User shards per campaign")
    no_workers_timeout_s: float = Field(
        120.0, gt=0, description="With no Dask worker for this long, the night fails (nothing is published)"
    )


class SelectionConfig(StrictConfig):
    metric: str = Field(
        "recall_at_5pct",
        description="Held-out metric (overall) that decides the champion",
        json_schema_extra=_metric_choices,
    )
    min_improvement: float = Field(0.0, ge=0, description="A challenger must beat the champion by this much")
    not_eligible: list[str] = Field(["random", "popularity"], description="Reference models never promoted")
    registered_model: Text = Field(
        "",
        description="MLflow registered model; empty: one per output root (lookalike-audience-<folder>-<hash>), "
        "so two output roots never share the 'champion' alias",
    )
    keep_versions: int = Field(
        10, ge=1, description="Registered versions kept (the newest; versions an alias points at always)"
    )


class NightlyConfig(StrictConfig):
    publish: PublishConfig = Field(default_factory=PublishConfig, title="Publish")
    models: list[ModelSpec] = Field(
        default_factory=lambda: [
            ModelSpec(name="minhash", model="minhash"),
            ModelSpec(name="popularity", model="popularity"),
            ModelSpec(name="random", model="random"),
        ],
        title="Models",
        description="Trained, evaluated and compared tonight; the champion publishes. Each: name (its label in "
        "metrics and paths, e.g. minhash_t02), model (a registered scorer), params (the scorer's config, JSON)",
    )
    data: DataSource = Field(default_factory=DataSource, title="Data")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, title="Evaluation")
    selection: SelectionConfig = Field(default_factory=SelectionConfig, title="Champion selection")
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig, title="Execution")
    output_root: str = Field("runs", description="Where run folders and published audiences go")
    experiment: str = Field("lookalike-nightly", description="MLflow experiment")

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        return models

    def model_post_init(self, _: Any) -> None:
        from lookalike_models.evaluation import audience_sizes

        names = {m.name for m in self.models}
        if self.data.kind == "sharded" and self.execution.backend == "dask":
            from lookalike_models.sharded.catalog import sharded_names  # the sharded night runs only these

            unsharded = sorted({m.model for m in self.models} - set(sharded_names()))
            if unsharded:
                raise ValueError(
                    f"models {unsharded} cannot run on the sharded data plane (data.kind=sharded with "
                    f"execution.backend=dask); sharded models: {', '.join(sharded_names())}"
                )
        else:
            from lookalike_models.sharded.catalog import refuse_sharded_only_params

            refuse_sharded_only_params(self.models)
        if self.publish.model != "champion" and self.publish.model not in names:
            raise ValueError(f"publish.model '{self.publish.model}' is neither 'champion' nor a configured model")
        if self.evaluation.reference and self.evaluation.reference not in names:
            raise ValueError(
                f"evaluation.reference '{self.evaluation.reference}' is not a configured model; one of {sorted(names)}"
            )
        if not names - set(self.selection.not_eligible):
            raise ValueError("every configured model is in selection.not_eligible: nothing can be champion")
        metrics = {
            f"{kind}_at_{label}"
            for label in audience_sizes(1, self.evaluation.audience_fractions)
            for kind in ("precision", "recall")
        } | {"gauc"}
        if self.selection.metric not in metrics:
            raise ValueError(f"selection.metric '{self.selection.metric}' is not measured; one of {sorted(metrics)}")


class ExpandConfig(StrictConfig):
    """Ad-hoc expansion of one campaign, or of a seed list given inline."""

    campaign_id: Text = Field("", description="A campaign of the data's seeds file (or give seed_user_ids)")
    seed_user_ids: list[str] = Field(default_factory=list, description="Or: seed user ids given directly")
    name: str = Field("adhoc", description="Name for an inline seed list (becomes its campaign id)")
    audience_fraction: float = Field(0.05, gt=0, le=1, description="Audience size / population")
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="minhash", model="minhash"), title="Model")
    data: DataSource = Field(default_factory=DataSource, title="Data")
    output_root: str = Field("runs", description="Where ad-hoc audiences are published (under adhoc/)")
    experiment: str = Field("lookalike-adhoc", description="MLflow experiment")

    def model_post_init(self, _: Any) -> None:
        from lookalike_models.sharded.catalog import refuse_sharded_only_params

        refuse_sharded_only_params([self.model], "model.params")  # an ad-hoc expansion runs in one process


class ReclusterConfig(StrictConfig):
    """Between nightly runs: refresh the RALM serving centroids of campaigns whose seed lists grew."""

    seeds_path: str = Field(
        ..., description="Parquet of the current seeds (campaign_id, user_id[, label]), as in the data contract"
    )
    models: list[str] = Field(
        ["ralm", "ralm_average"],
        description="Models (ModelSpec.name) of the live run whose centroids are refreshed, where present",
    )
    output_root: str = Field("runs", description="Where the nightly runs publish (its LATEST run is used)")


def load_config(
    path: str | Path | None = None, cls: type[BaseModel] = NightlyConfig, default: str = "nightly.yaml"
) -> Any:
    """Read a YAML file (default ``conf/<default>``) into the config model, with validation."""
    path = Path(path) if path else CONF_DIR / default
    return cls.model_validate(yaml.safe_load(path.read_text()) or {})


def apply_overrides(config: BaseModel, overrides: list[str]) -> BaseModel:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) and re-validate."""
    doc = config.model_dump()
    for item in overrides:
        key, _, raw = item.partition("=")
        node = doc
        *parents, leaf = key.split(".")
        for depth, part in enumerate(parents):
            if node.get(part) is None:  # absent, or an optional block left empty (data.synthetic of real data)
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):  # e.g. output_root.x=1: output_root is a plain value
                section = ".".join(parents[: depth + 1])
                raise ValueError(
                    f"'{key}': '{section}' is a single value ({node!r:.60}), it has no key "
                    f"'{'.'.join([*parents[depth + 1 :], leaf])}'"
                )
        node[leaf] = yaml.safe_load(raw)
    return type(config).model_validate(doc)


def with_file_defaults(config: BaseModel, default: str = "nightly.yaml") -> BaseModel:
    """Fill what the caller left unset from ``conf/<default>``: a deployment run given only
    ``{"publish": {...}}`` gets the YAML file's models and data, not the classes' fallbacks, so the YAML file
    is the one source of defaults however a run starts. Set fields win; lists are replaced whole.

    Called once per run, where it starts (the flows' first line); tasks take the settled config's parts. A config
    the command line built (file, then ``--set``: every field set) passes unchanged."""
    given = config.model_dump(exclude_unset=True)
    merged = _deep_merge(load_config(None, type(config), default).model_dump(), given)
    if isinstance(config, ExpandConfig) and given.get("seed_user_ids") and "campaign_id" not in given:
        merged["campaign_id"] = ""  # an inline seed list asks for no campaign of the data
    if isinstance(config, NightlyConfig) and "reference" not in given.get("evaluation", {}):
        names = {m["name"] for m in merged["models"]}
        if merged["evaluation"].get("reference") not in names:  # the file's reference is not among these models
            merged["evaluation"]["reference"] = ""
    return type(config).model_validate(merged)


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
