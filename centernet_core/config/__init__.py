"""Experiment configuration: the schema, resolution from user choices, validation.

``resolve(...)`` is the one path from user choices (preset or YAML file, profile,
overrides) to a frozen ``ExperimentConfig``; ``validate`` holds every cross-field rule.
This package must not import TensorFlow: config errors are reported without it.
"""
from centernet_core.config.resolve import (dump_yaml, experiment_names, fit_to_data, from_dict,
                                           from_yaml_text, load_experiment_yaml,
                                           load_profile_yaml, override, profile_names, resolve, scale_to_batch, to_dict)
from centernet_core.config.schema import (AUTO, EXPORT_FORMATS, OPTIMIZERS, PRECISIONS, SCHEDULES, STRATEGIES,
                                          DataConfig, EvalConfig, ExperimentConfig, ExportConfig, ModelConfig,
                                          RuntimeConfig, TrainConfig)
from centernet_core.config.validate import validate
from centernet_core.errors import ConfigError

__all__ = ["AUTO", "ConfigError", "EXPORT_FORMATS", "OPTIMIZERS", "PRECISIONS", "SCHEDULES", "STRATEGIES", "DataConfig", "EvalConfig",
           "ExperimentConfig", "ExportConfig", "ModelConfig", "RuntimeConfig", "TrainConfig", "dump_yaml",
           "experiment_names", "fit_to_data", "from_dict", "from_yaml_text", "load_experiment_yaml", "load_profile_yaml", "override", "profile_names",
           "resolve", "scale_to_batch", "to_dict", "validate"]
