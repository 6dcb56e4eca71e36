"""`finscale scaling fit POINTS.csv`: fit L(N) or L(N, D) to external points and print it."""

from __future__ import annotations

import json
from pathlib import Path

from finscale.cli.commands import COMMANDS
from finscale.cli.common import console, print_table


def register(sub) -> None:
    p = sub.add_parser("scaling", help=COMMANDS["scaling"],
                       description="Scaling-law fits outside a study.")
    ssub = p.add_subparsers(dest="scaling_command", metavar="COMMAND", required=True)
    fit = ssub.add_parser(
        "fit", help="fit L(N) or L(N, D) = E + A·N^-alpha + B·D^-beta to POINTS.csv",
        description="Fit one row per trained model: model size (--n), loss (--loss) and, for the joint "
                    "fit, data size (--d) or training FLOPs (--flops, D = C/(6N)). Huber loss on log "
                    "residuals, L-BFGS-B from a grid of starts (Besiroglu et al. 2024), percentile "
                    "intervals from resampling the points, a comparison with the N-only, D-only and "
                    "constant forms and a verdict (docs/scaling.md). Without --d/--flops: the N-only fit.")
    fit.add_argument("points", metavar="POINTS.csv", help="CSV file with a header row")
    fit.add_argument("--n", dest="n_col", required=True, metavar="COL", help="column of model sizes N")
    fit.add_argument("--loss", dest="loss_col", required=True, metavar="COL", help="column of losses L")
    data = fit.add_mutually_exclusive_group()
    data.add_argument("--d", dest="d_col", metavar="COL", help="column of data sizes D (tokens, windows)")
    data.add_argument("--flops", dest="flops_col", metavar="COL",
                      help="column of training FLOPs C; D = C / (6N)")
    fit.add_argument("--exclude-top", type=int, default=0, metavar="K",
                     help="drop the K highest losses first")
    fit.add_argument("--resamples", type=int, default=1000, metavar="R",
                     help="bootstrap resamples (default 1000)")
    fit.add_argument("--seed", type=int, default=0, metavar="N", help="bootstrap seed (default 0)")
    fit.add_argument("--out", default=None, metavar="FILE.json", help="also write the result as JSON")
    fit.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    fit.set_defaults(handler=_fit)


def _fit(args) -> int:
    from finscale.atomic import atomic_write_json
    from finscale.scaling.points import PointsSpec, fit_points

    spec = PointsSpec(n_col=args.n_col, loss_col=args.loss_col, d_col=args.d_col, flops_col=args.flops_col,
                      exclude_top=args.exclude_top)
    if args.out and not Path(args.out).parent.is_dir():
        raise FileNotFoundError(f"--out {args.out}: directory {Path(args.out).parent} does not exist")
    if args.out and Path(args.out).is_dir():
        raise ValueError(f"--out {args.out}: is a directory; expected a JSON file path")
    out = fit_points(args.points, spec, n_resamples=args.resamples, seed=args.seed).to_dict()
    if args.out:
        atomic_write_json(out, Path(args.out))
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True, default=str))
        return 0
    _print(out)
    if args.out:
        console.print(f"wrote {args.out}")
    return 0


def _ci(ci) -> list:
    return ["", ""] if ci is None else [ci[0], ci[1]]


def _print(out: dict) -> None:
    res = out["result"]
    level = f"{res['level']:.0%}"
    head = (f"{out['source']}: {out['n_fitted']} of {out['n_read']} points "
            f"({out['exclude_top']} highest losses excluded), {res['n_resamples']} resamples "
            f"({res['n_failed']} unusable)")
    names = ("E", "A", "B", "alpha", "beta") if out["form"] == "joint" else ("E", "A", "alpha")
    rows = [[k, res["fit"][k], *_ci(res["intervals"].get(k))] for k in names]
    if out["form"] == "joint":
        rows += [["a = beta/(alpha+beta)", res["fit"]["a_exp"], *_ci(res["intervals"]["a_exp"])],
                 ["b = alpha/(alpha+beta)", res["fit"]["b_exp"], *_ci(res["intervals"]["b_exp"])]]
    title = "L(N, D) = E + A·N^-alpha + B·D^-beta" if out["form"] == "joint" else "L(N) = E + A·N^-alpha"
    console.print(head)
    print_table(title, ["parameter", "estimate", f"{level} CI low", f"{level} CI high"], rows)
    if out["form"] == "joint":
        print_table("functional forms (lower is better)", ["form", "parameters", "leave-out RMSE", "BIC"],
                    [[s["form"], s["n_params"], s["cv_rmse"], s["bic"]] for s in res["comparison"]["scores"]])
    else:
        c = res["comparison"]
        print_table("power law vs constant (lower is better)", ["form", "leave-one-size-out RMSE", "BIC"],
                    [["power law", c["lobo_rmse_power"], c["bic_power"]],
                     ["constant", c["lobo_rmse_const"], c["bic_const"]]])
    console.print(f"verdict: {res['text']}")
