"""The search space of one (budget, horizon) cell, from the study's ``[hpo]`` section.

Consumes: the study config, a budget name and a horizon.
Produces: a :class:`CellSpace` whose :meth:`~CellSpace.sample` turns an Optuna trial into
the cell's parameters in :func:`finscale.runspec.make_spec` form (``d_model``,
``num_layers``, ``num_heads``, ``d_ff``, ``lr``, ``weight_decay``, ``dropout``,
``warmup_fraction``, ``batch_size``, plus any fixed training keys).
Dimensions:
- ``arch``: ONE categorical over the budget's valid grid (every shape whose measured
  parameter count is within ``model.budget_tolerance``), encoded ``d64-l4-h4-f256`` so the
  sampler learns which shapes work. Fixed instead when ``[model.architectures]`` names the
  budget's shape or ``[hpo.fixed."<cell>"]`` gives all four keys; partial arch keys in
  ``hpo.fixed`` narrow the grid.
- ``lr``, ``weight_decay``: log-uniform; ``dropout``, ``warmup_fraction``: uniform;
  ``batch_size``: categorical. A one-element range (``[v]``) is a fixed value.
- ``design``: with ``hpo.feature_set`` / ``hpo.normalization`` / ``hpo.context_len`` (the
  design search, guard 17), ONE categorical over the feasible combinations, encoded
  ``a20_rel/zscore/c16``; the shape is then drawn from THAT design's own grid (the parameter
  count depends on inputs, patching and the statistics token) under the conditional name
  ``arch@<design>``. A design with no shape within the budget's tolerance is left out (logged).
- ``[hpo.fixed."<cell>"]``: any key there replaces its dimension with that value.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass, field

from finscale.config import StudyConfig
from finscale.model import architectures_for_budget, parse_budget, revin_flags
from finscale.runspec import ARCH_KEYS, DESIGN_KEYS, cell_name, cfg_cell, design_cfg, n_inputs, split_params

log = logging.getLogger(__name__)

ARCH_PARAM = "arch"
DESIGN_PARAM = "design"
LOG_DIMS = ("lr", "weight_decay")
UNIFORM_DIMS = ("dropout", "warmup_fraction")
_ARCH_RE = re.compile(r"^d(\d+)-l(\d+)-h(\d+)-f(\d+)$")


def encode_arch(arch: dict) -> str:
    return "d{d_model}-l{num_layers}-h{num_heads}-f{d_ff}".format(**arch)


def encode_design(design: dict) -> str:
    return f"{design['feature_set']}/{design['normalization']}/c{design['context_len']}"


def decode_design(text: str) -> dict:
    parts = text.split("/")
    if len(parts) != 3 or not parts[2].startswith("c") or not parts[2][1:].isdigit():
        raise ValueError(f"design {text!r}: expected <feature set>/<normalization>/c<context_len>")
    return {"feature_set": parts[0], "normalization": parts[1], "context_len": int(parts[2][1:])}


def decode_arch(text: str) -> dict:
    match = _ARCH_RE.match(text)
    if not match:
        raise ValueError(f"architecture {text!r}: expected d<d_model>-l<layers>-h<heads>-f<d_ff>")
    return dict(zip(ARCH_KEYS, map(int, match.groups())))


@dataclass(frozen=True)
class CellSpace:
    """What a trial of one cell samples, and what it holds fixed."""

    cell: str
    archs: tuple[str, ...] = ()                          # >1: searched; 1: fixed; 0: study's own
    floats: dict[str, tuple[float, float, bool]] = field(default_factory=dict)  # low, high, log
    batch_sizes: tuple[int, ...] = ()                    # >1: searched
    fixed: dict = field(default_factory=dict)            # make_spec params held constant
    designs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # design -> its shapes

    def sample(self, trial) -> dict:
        """The trial's cell parameters (fixed values included), in make_spec form."""
        params = dict(self.fixed)
        archs, arch_param = self.archs, ARCH_PARAM
        if self.designs:
            code = trial.suggest_categorical(DESIGN_PARAM, list(self.designs)) \
                if len(self.designs) > 1 else next(iter(self.designs))
            params.update(decode_design(code))
            archs, arch_param = self.designs[code], f"{ARCH_PARAM}@{code}"
            if len(archs) == 1:
                params.update(decode_arch(archs[0]))
        if len(archs) > 1:
            params.update(decode_arch(trial.suggest_categorical(arch_param, list(archs))))
        for name, (low, high, log) in self.floats.items():
            params[name] = trial.suggest_float(name, low, high, log=log)
        if len(self.batch_sizes) > 1:
            params["batch_size"] = trial.suggest_categorical("batch_size", list(self.batch_sizes))
        return params

    def searched(self) -> list[str]:
        """Names of the dimensions Optuna samples (the trial's ``params`` keys)."""
        names = [DESIGN_PARAM] if len(self.designs) > 1 else []
        shapes = max((len(a) for a in self.designs.values()), default=len(self.archs))
        names += [ARCH_PARAM] if shapes > 1 else []
        names += list(self.floats)
        return names + (["batch_size"] if len(self.batch_sizes) > 1 else [])

    def describe(self) -> dict:
        out: dict = {k: f"[{lo:g}, {hi:g}]{' log' if log else ''}"
                     for k, (lo, hi, log) in self.floats.items()}
        if len(self.archs) > 1:
            out[ARCH_PARAM] = f"{len(self.archs)} shapes"
        if self.designs:
            out[DESIGN_PARAM] = ", ".join(f"{d} ({len(a)} shapes)" for d, a in self.designs.items())
        if len(self.batch_sizes) > 1:
            out["batch_size"] = list(self.batch_sizes)
        return {**out, **{k: v for k, v in self.fixed.items()}}


def budget_grid(cfg: StudyConfig, budget: str, *, all_heads: bool = False) -> list[dict]:
    """Every grid architecture whose parameter count fits the budget (see finscale.model).

    Heads follow the model's default rule per width unless ``all_heads`` (when a cell pins
    num_heads): the head count barely changes the parameter count, and searching every
    divisor multiplies the categorical (98 vs 23 shapes at 2M) the sampler must learn.
    Shapes outside ``hpo.aspect`` (d_model / num_layers) are left out: the grid otherwise
    holds e.g. 128 layers of width 8, which no study would pick and which cost 10x the time
    of a sensible shape of the same size on a CPU (the Phase 6A table spans 0.7 to 32).
    """
    low, high = cfg.hpo.aspect
    return [a for a in _grid(cfg, budget, all_heads) if low <= a["d_model"] / a["num_layers"] <= high]


def _grid(cfg: StudyConfig, budget: str, all_heads: bool) -> list[dict]:
    m = cfg.model
    return architectures_for_budget(
        parse_budget(budget), n_inputs=n_inputs(cfg), context_len=m.context_len,
        patch_len=m.patch_len, stride=m.stride, channel_mode=m.channel_mode,
        tolerance=m.budget_tolerance, d_ff_ratios=(m.d_ff_ratio,), positional=m.positional,
        revin=revin_flags(m.normalization)[0], revin_stats=revin_flags(m.normalization)[1],
        all_heads=all_heads)


def _arch_choices(cfg: StudyConfig, budget: str, fixed: dict, cell: str) -> tuple[tuple[str, ...], dict]:
    """(encoded choices, fixed arch params): search the grid unless the shape is given."""
    given = {k: fixed[k] for k in ARCH_KEYS if k in fixed}
    if len(given) == len(ARCH_KEYS):
        return (), given
    if budget in (cfg.model.architectures or {}):
        if given:
            raise ValueError(f"hpo.fixed.{cell}: {', '.join(given)} conflicts with the explicit "
                             f"model.architectures.{budget}; give all of {', '.join(ARCH_KEYS)} or none")
        return (), {}
    grid = [a for a in budget_grid(cfg, budget, all_heads="num_heads" in given)
            if all(a[k] == v for k, v in given.items())]
    if not grid:
        raise ValueError(f"cell {cell}: no architecture of budget {budget!r} "
                         f"(model.budget_tolerance {cfg.model.budget_tolerance:g})"
                         + (f" matches hpo.fixed.{cell} {given}" if given else "")
                         + "; widen the tolerance or give an explicit architecture")
    choices = tuple(dict.fromkeys(encode_arch(a) for a in grid))
    if len(choices) == 1:
        return (), decode_arch(choices[0])
    return choices, {}


def _float_dim(cfg: StudyConfig, name: str) -> tuple[float, float, bool] | float:
    rng = getattr(cfg.hpo, name)
    if len(rng) == 1 or rng[0] == rng[1]:
        return float(rng[0])
    log = name in LOG_DIMS
    if log and rng[0] <= 0:
        raise ValueError(f"hpo.{name}: a log-uniform range needs low > 0, got {list(rng)} "
                         f"(use [value] to fix it, e.g. [0.0])")
    return float(rng[0]), float(rng[1]), log


def cell_space(cfg: StudyConfig, budget: str, horizon: int) -> CellSpace:
    """The search space of cell ``budget``-h``horizon`` (rules in the module docstring)."""
    cell = cfg_cell(cfg, budget, horizon)
    fixed = cfg.hpo.fixed or {}
    # a study with axes may pin a cell of every variant by its plain name ("cpu-s-h1")
    overrides = dict(fixed.get(cell, fixed.get(cell_name(budget, horizon), {})))
    split_params({k: v for k, v in overrides.items() if k not in ARCH_KEYS}, f"hpo.fixed.{cell}")
    designs = _design_choices(cfg, budget, overrides, cell)
    archs, fixed = _arch_choices(cfg, budget, overrides, cell) if not designs else ((), {})
    if designs and all(k in overrides for k in ARCH_KEYS):  # an explicit shape for every design
        fixed = {k: overrides[k] for k in ARCH_KEYS}
    floats = {}
    for name in (*LOG_DIMS, *UNIFORM_DIMS):
        if name in overrides:
            continue
        dim = _float_dim(cfg, name)
        if isinstance(dim, tuple):
            floats[name] = dim
        else:
            fixed[name] = dim
    batch = tuple(dict.fromkeys(cfg.hpo.batch_size))
    if "batch_size" not in overrides and len(batch) == 1:
        fixed["batch_size"] = batch[0]
    fixed.update({k: v for k, v in overrides.items()
                  if k not in ARCH_KEYS and (k not in DESIGN_KEYS or not designs)})
    return CellSpace(cell, archs, floats, batch if "batch_size" not in overrides else (), fixed, designs)


def searched_designs(cfg: StudyConfig, overrides: dict) -> list[dict]:
    """Every combination of the searched design values (a pinned value in ``overrides`` or
    an empty ``hpo.<key>`` holds that key at the study's value); [] without a design search."""
    study = {"feature_set": (cfg.features.set,), "normalization": (cfg.model.normalization,),
             "context_len": (cfg.model.context_len,)}
    if cfg.hpo.mode != "search" or not any(getattr(cfg.hpo, k) for k in DESIGN_KEYS):
        return []
    values = [(overrides[k],) if k in overrides else tuple(dict.fromkeys(getattr(cfg.hpo, k) or study[k]))
              for k in DESIGN_KEYS]
    return [dict(zip(DESIGN_KEYS, combo)) for combo in itertools.product(*values)]


def _design_choices(cfg: StudyConfig, budget: str, overrides: dict, cell: str) -> dict[str, tuple[str, ...]]:
    """Searched design -> its shapes within the budget (() for an explicit shape); designs
    without a shape are left out, and a ValueError names the cell if none is left."""
    out = {}
    for design in searched_designs(cfg, overrides):
        try:
            archs, fixed = _arch_choices(design_cfg(cfg, design), budget, overrides, cell)
        except ValueError as exc:
            log.info("cell %s: design %s left out (%s)", cell, encode_design(design), exc)
            continue
        explicit = all(k in overrides for k in ARCH_KEYS) or budget in (cfg.model.architectures or {})
        # one grid shape comes back as a fixed shape: keep it as the design's only choice
        out[encode_design(design)] = archs or ((encode_arch(fixed),) if fixed and not explicit else ())
    if searched_designs(cfg, overrides) and not out:
        raise ValueError(f"cell {cell}: no searched design has an architecture of budget {budget!r} "
                         f"within model.budget_tolerance {cfg.model.budget_tolerance:g}")
    return out
