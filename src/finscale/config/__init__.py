"""Study configuration: frozen dataclasses per stage (:mod:`.schema`), TOML loading and
overrides (:mod:`.loading`), key documentation (:mod:`.keydocs`).

Consumes: a TOML file (optional) and ``section.key=value`` override strings.
Produces: a validated, immutable :class:`StudyConfig` whose sections are handed to the
stages (``build_model(cfg.model)``), and a stable hash of it.
Guarantees: precedence defaults < file < overrides; unknown keys, wrong types and
out-of-range values raise :class:`ConfigError` naming the key and the bad value.
"""

from finscale.config.keydocs import describe_fields, render_key_docs
from finscale.config.loading import (
    config_hash,
    config_to_dict,
    flatten_axes,
    load_study,
    parse_override,
    replace_section,
    resolve_study_path,
    shipped_studies,
    study_from_dict,
)
from finscale.config.schema import (
    NAME_PATTERN,
    NAME_RULE,
    ConfigError,
    DataConfig,
    EvalConfig,
    FeaturesConfig,
    HpoConfig,
    ModelConfig,
    MonitorConfig,
    RunConfig,
    SplitsConfig,
    StudyConfig,
    TargetConfig,
    TrackingConfig,
    TrainConfig,
    check_name,
)

__all__ = [
    "NAME_PATTERN", "NAME_RULE", "ConfigError", "DataConfig", "EvalConfig", "FeaturesConfig",
    "HpoConfig", "ModelConfig", "MonitorConfig", "RunConfig", "SplitsConfig", "StudyConfig",
    "TargetConfig", "TrackingConfig", "TrainConfig", "check_name", "config_hash",
    "config_to_dict", "describe_fields", "flatten_axes", "load_study", "parse_override",
    "render_key_docs", "replace_section", "resolve_study_path", "shipped_studies",
    "study_from_dict",
]
