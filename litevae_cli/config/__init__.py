"""The one training-config schema: preset lookup, YAML loading, `--set` overrides, validation, dump.

A preset is plain data (a YAML file) describing one training phase of LiteVAE (Sadat et al. 2024):
which registered encoder/decoder/discriminator, the data resolution, Adam settings, loss weights and
the loop's lengths. Everything a run uses is in `Config`; the loop writes it next to the run.

Rules (style: "one config schema; unknown keys are errors"):
- The schema is the dataclasses below. A preset may omit any key that has a default here; `name`
  defaults to the preset file's stem.
- The `model` section is a `ModelSpec` (`litevae_cli.model_spec`), the type checkpoints store too.
- `resolve_config` is the one pass: the preset file, then `--set` overrides, then the dedicated flags
  (`FLAG_KEYS`, which win), merged as plain data and validated ONCE, each key remembering where it
  came from; `phase` is checked against the subcommand there (the one statement of the phase).
- Validation is table-driven: types come from the dataclass annotations (`_check_type`), value
  constraints from `_ENUMS`, `_MINIMA`, `_LENGTHS` and `_REGISTRY_KINDS`. Every problem is a
  `UserError` naming the dotted key and where its value came from, e.g.
  "unknown config key 'train.stepz' (in --set)".
- Preset files are read strictly (`presets.read_preset`): UTF-8 text, no duplicate keys, no aliases.
- Overrides are "key.sub=value" strings parsed as YAML by the same loader (`optim.betas=[0.9,0.99]` works).
- Every value is bounded (`checks._MAXIMA`, with the reason in the message) and the model is built on the
  meta device and run on one crop before any work (`config.model_check`), `--dry-run` included.
- No torch at import time (`--help` stays fast): the registry is imported when a config is validated.
"""


from litevae_cli.config.presets import (FLAG_KEYS, _resolve_preset, config_from_dict, config_to_dict, dump_config,  # noqa: F401
                                        list_presets, load_config, resolve_config)
from litevae_cli.config.schema import (ADV_KINDS, LPIPS_NETS, PHASES, Config, DataCfg,  # noqa: F401
                                       DiscriminatorCfg, DistillCfg, LogCfg, LossCfg, OptimCfg, TrainCfg)

__all__ = ["ADV_KINDS", "FLAG_KEYS", "LPIPS_NETS", "PHASES", "Config", "DataCfg", "DiscriminatorCfg", "DistillCfg",
           "LogCfg", "LossCfg", "OptimCfg", "TrainCfg", "config_from_dict", "config_to_dict", "dump_config",
           "list_presets", "load_config", "resolve_config"]
