"""`edgeminer simulate`: an active-learning simulation over a dataset's labeled rows (service/simulate.py).

Hides the labels of part of the labeled rows beyond train (the pool), keeps another part held out as
the test set, and for each strategy runs rounds of picking ``--budget`` rows, revealing their labels
and retraining (a linear probe on the embeddings, or the demo CNN). Prints, per strategy, the test
accuracy at the start and after the last round and the area under the budget curve, overall and on the
planted slices, and the pairwise win matrix (paired t-test over repeats); ``--plot`` writes the
accuracy-vs-labels curves as PNG, ``--json`` everything as JSON.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Any

from edgeminer.service.cli_common import CliError, open_store, print_json
from edgeminer.service.settings import Settings


def _truth(path: str | None) -> dict[str, str] | None:
    """id -> label from a CSV with ``id`` and ``label`` columns (e.g. the demo's pool_truth.csv)."""
    if not path:
        return None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"id", "label"} <= set(reader.fieldnames):
                raise CliError(f"--truth {path}: needs the columns id and label (it has {reader.fieldnames})")
            return {r["id"]: r["label"] for r in reader if r.get("id") and r.get("label")}
    except OSError as e:
        raise CliError(f"--truth {path}: cannot read it ({e.strerror or e})") from e


def _strategies(text: str) -> list[str]:
    from edgeminer.service.simulate import standard_strategies, strategy_names

    known = strategy_names()
    if text.strip() == "all":
        return known
    if text.strip() == "standard":
        return standard_strategies()
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in known]
    if bad:
        raise CliError(f"--strategies: unknown {', '.join(bad)}; choose from {', '.join(known)} (or standard, all)")
    return names


def print_tables(result: Any, metrics: tuple[str, ...] = ("overall", "planted")) -> None:
    """Per metric: the strategies' start / final accuracy and AUBC (mean ± std over repeats), then the
    win matrix of the AUBC."""
    for metric in metrics:
        if metric not in result.metrics():
            continue
        print(f"\n{metric} test accuracy ({result.repeats} repeats, {result.rounds} rounds of {result.budget}):")
        print(f"  {'strategy':<24}{'start':>7}{'final':>14}{'AUBC':>14}{'picked in slices':>18}{'class balance':>15}")
        for r in sorted(result.table(metric), key=lambda r: -r["aubc"]):
            print(
                f"  {r['strategy']:<24}{r['start']:>7.3f}{r['final']:>8.3f}±{r['final_std']:.3f}"
                f"{r['aubc']:>8.3f}±{r['aubc_std']:.3f}{_pct(r.get('picked_planted')):>18}"
                f"{_num(r.get('picked_class_balance')):>15}"
            )
        print_win_matrix(result, metric)


def print_win_matrix(result: Any, metric: str) -> None:
    """Rows beat columns: ``+`` significantly better AUBC (paired t-test, p < 0.05), ``-`` worse, ``.`` neither."""
    from edgeminer.service.simulate import win_matrix

    wins = win_matrix(result.aubc(metric))
    names = list(wins)
    width = max(len(n) for n in names)
    print(f"  win matrix ({metric} AUBC; + row significantly better than column, - worse, p < 0.05):")
    print("  " + " " * width + " " + " ".join(f"{n:>3}" for n in range(len(names))) + "  wins")
    for a in names:
        cells = " ".join(f"{'+' if wins[a][b]['win'] > 0 else '-' if wins[a][b]['win'] < 0 else '.':>3}" for b in names)
        total = sum(1 for b in names if wins[a][b]["win"] > 0)
        print(f"  {a:<{width}} {cells}  {total}")
    print("  columns: " + ", ".join(f"{n} {s}" for n, s in enumerate(names)))


def _pct(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0%}"


def _num(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def plot_curves(result: Any, path: str | Path, metrics: tuple[str, ...] = ("overall", "planted")) -> Path:
    """Accuracy vs labels (mean over repeats, band: ± one std), one panel per metric, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise CliError("--plot needs matplotlib (pip install matplotlib)") from e
    import numpy as np

    shown = [m for m in metrics if m in result.metrics()]
    fig, axes = plt.subplots(1, len(shown), figsize=(6.5 * len(shown), 4.8), squeeze=False)
    for ax, metric in zip(axes[0], shown, strict=True):
        cmap = plt.get_cmap("tab20")
        for n, s in enumerate(result.strategies):
            c = result.curves[s][metric]
            mean, std = np.nanmean(c, axis=0), np.nanstd(c, axis=0)
            mined = s.startswith("mine")
            ax.plot(result.labels, mean, marker="o", ms=3, label=s, color=cmap(n % 20), lw=2.0 if mined else 1.2,
                    ls="-" if mined else "--")
            ax.fill_between(result.labels, mean - std, mean + std, alpha=0.08, color=cmap(n % 20))
        ax.set_title(f"{result.dataset}: {metric} test accuracy ({result.retrain}, {result.repeats} repeats)")
        ax.set_xlabel("labels revealed")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from edgeminer.service.simulate import Protocol, load_sim_data, run_names, simulate

    store = open_store(settings)
    names = _strategies(args.strategies)
    data = load_sim_data(
        store, args.dataset, slice_column=args.slice_column or None, background=args.background,
        truth=_truth(args.truth),
    )
    protocol = Protocol(test_share=args.test_share, seen_share=args.seen_share, train_split=args.train_split)
    total = args.repeats * len(run_names(names))
    with tqdm(total=total, desc="simulate", unit="run", disable=args.quiet or args.json) as bar:
        result = simulate(
            data, names, budget=args.budget, rounds=args.rounds, repeats=args.repeats, retrain=args.retrain,
            protocol=protocol, seed=args.seed, progress=lambda _msg: bar.update(1),
        )
    if args.plot:
        plot_curves(result, args.plot)
    if args.json:
        print_json(result.as_dict())
        return 0
    roles = ", ".join(f"{k} {v}" for k, v in result.roles.items())
    print(f"{result.dataset}: {roles} rows (last repeat); retrain {result.retrain}; labels {result.labels}")
    print_tables(result)
    for s, notes in result.notes.items():
        print(f"note: {s}: " + ", ".join(f"{k} {v}" for k, v in notes.items()))
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def register(sub: Any) -> None:
    from edgeminer.service.mining import DIVERSITY_MODES
    from edgeminer.service.simulate import MIXED

    p = sub.add_parser(
        "simulate",
        help="active-learning simulation: which strategy's labels buy the most accuracy",
        description="Hide the labels of part of the labeled rows beyond train (the pool), hold out a test "
        "part, and for each strategy run rounds of picking --budget pool rows, revealing their labels and "
        "retraining; report accuracy-vs-labels overall and on the planted slices, the area under the budget "
        "curve and a pairwise win matrix (paired t-test over repeats). random is always included.",
    )
    p.add_argument("--dataset", required=True)
    p.add_argument(
        "--strategies", default="standard",
        help="comma-separated: random, least_confidence, margin, ratio, entropy, coreset, typiclust, badge, "
        f"mine-<aggregation>[{'|'.join('+' + d for d in DIVERSITY_MODES)}], {', '.join(MIXED)}; standard "
        "(default: each of those once, mining "
        "with every aggregation, the modes aggregation with every diversity mode), or all",
    )
    p.add_argument("--budget", type=int, default=20, help="labels revealed per round (default 20)")
    p.add_argument("--rounds", type=int, default=5, help="rounds per run (default 5)")
    p.add_argument("--repeats", type=int, default=5, help="repeats, each with its own split and seeds (default 5)")
    p.add_argument(
        "--retrain", choices=("probe", "cnn"), default="probe",
        help="probe: logistic regression on the stored embeddings (any dataset); cnn: retrain the demo CNN on "
        "the rows' images (the demo and the planted-slice datasets; slow)",
    )
    p.add_argument("--slice-column", default="slice", help="metadata column naming each row's slice ('' for none)")
    p.add_argument("--background", default="none", help="the slice value of ordinary rows (default none)")
    p.add_argument("--truth", default=None, help="CSV with id,label for rows the dataset has no label for")
    p.add_argument("--test-share", type=float, default=0.4, help="share of the labeled non-train rows held out")
    p.add_argument("--seen-share", type=float, default=0.2, help="share of them kept visible (failures to mine from)")
    p.add_argument("--train-split", default="train", help="the split the first model trains on (default train)")
    p.add_argument("--seed", type=int, default=0, help="first repeat's seed")
    p.add_argument("--plot", default=None, metavar="PNG", help="write the accuracy-vs-labels curves to this PNG")
    p.add_argument("--json", action="store_true", help="the full result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_simulate)
