#!/usr/bin/env python3
"""The robot's lead scoring against scikit-learn, on the same files.

What it measures: a year of synthetic past leads (train.csv) and the year after it, drawn
with the market's drift carried on (test.csv), both written by `sales-robot bench leads`
with the true chance of each lead beside it. The robot learns with `sales-robot train` and
scores with `sales-robot score`; scikit-learn's LogisticRegression (one-hot categories,
imputed and scaled numbers) and HistGradientBoostingClassifier (native categories and
missing values) learn and predict on the same columns. Each is judged on test.csv: AUC,
Brier score and log loss, beside the oracle (the true chances). The times are wall times:
the robot's commands include reading and writing the CSV files, so `sales-robot bench
scoring` also runs, for the in-process figures on one thread.

It exits 1 when the robot's AUC is below the better scikit-learn AUC or its Brier score
above the better scikit-learn Brier score; speed targets are printed, never enforced.

Run from anywhere (Python 3.10+; it makes a venv under target/bench-venv with
scikit-learn, numpy and pandas, and builds the release binary):

    python3 benches/scoring_vs_sklearn.py [--leads 200000] [--seed 7] [--threads 1]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
VENV = TARGET / "bench-venv"
PACKAGES = ["scikit-learn", "numpy", "pandas"]
BINARY = TARGET / "release" / "sales-robot"

# The columns of a `bench leads` file that are not features.
NOT_FEATURES = ["created_at", "budget", "won", "true_chance"]

TRAIN_TARGET_S = 5.0
SCORE_TARGET_PER_S = 1_000_000


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=200_000, help="leads in each file")
    parser.add_argument("--seed", type=int, default=7, help="train.csv's seed (test.csv takes the next)")
    parser.add_argument("--score", type=int, default=1_000_000, help="leads scored per round by `bench scoring`")
    parser.add_argument("--threads", type=int, default=None,
                        help="limit scikit-learn to this many threads (default: its own choice, every core)")
    parser.add_argument("--config", type=Path, default=REPO / "config",
                        help="the robot's rule folder for train and score (to try other [model] settings)")
    parser.add_argument("--dir", type=Path, default=None, help="keep the files here instead of a temporary folder")
    return parser.parse_args()


def in_venv():
    # Run again inside the venv, with the packages installed there once.
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    probe = subprocess.run([python, "-c", "import sklearn, numpy, pandas"], capture_output=True)
    if probe.returncode != 0:
        print(f"installing {', '.join(PACKAGES)} into {VENV}", flush=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", *PACKAGES], check=True)
    os.execv(python, [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


def robot(*args, capture=True):
    """Runs the release binary from the repository root, as the README runs it."""
    done = subprocess.run([BINARY, *map(str, args)], cwd=REPO, capture_output=capture, text=True)
    if done.returncode != 0:
        sys.exit(f"sales-robot {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done


def timed(f):
    started = time.perf_counter()
    result = f()
    return result, time.perf_counter() - started


def main():
    args = arguments()
    in_venv()

    import json

    import numpy as np
    import pandas as pd
    import sklearn
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from threadpoolctl import threadpool_limits

    print("building the release binary", flush=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)

    scratch = None
    if args.dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="scoring-bench-")
        folder = Path(scratch.name)
    else:
        folder = args.dir.resolve()
        folder.mkdir(parents=True, exist_ok=True)
    train_csv, test_csv = folder / "train.csv", folder / "test.csv"
    model_json, scored_csv = folder / "model.json", folder / "scored.csv"

    print(f"writing {args.leads:,} leads a file into {folder}", flush=True)
    robot("bench", "leads", "--out", train_csv, "--leads", args.leads, "--seed", args.seed)
    robot("bench", "leads", "--out", test_csv, "--leads", args.leads, "--seed", args.seed + 1,
          "--offset-months", 12)

    print("robot: train and score", flush=True)
    config = ("--config", args.config.resolve())
    trained, robot_fit_s = timed(lambda: robot(*config, "train", "--deals", train_csv, "--out", model_json))
    print("  " + trained.stdout.strip().replace("\n", "\n  "))
    _, robot_predict_s = timed(lambda: robot(*config, "score", "--leads", test_csv, "--model", model_json,
                                             "--out", scored_csv))

    # Empty cells are unknown values; no other text stands for "missing".
    read = lambda path: pd.read_csv(path, keep_default_na=False, na_values=[""])
    train, test = read(train_csv), read(test_csv)
    scored = read(scored_csv)
    if len(scored) != len(test) or not (scored["created_at"] == test["created_at"]).all():
        sys.exit("scored.csv does not hold test.csv's leads in their order")

    features = [c for c in train.columns if c not in NOT_FEATURES]
    categories = [c for c in features if not pd.api.types.is_numeric_dtype(train[c])]
    numbers = [c for c in features if c not in categories]
    y_train = (train["won"] > 0).to_numpy()
    y_test = (test["won"] > 0).to_numpy()

    logistic = make_pipeline(
        ColumnTransformer([
            ("categories", make_pipeline(SimpleImputer(strategy="constant", fill_value="(empty)"),
                                         OneHotEncoder(handle_unknown="ignore")), categories),
            # The indicator keeps "no turnover" (persons) apart from a median turnover.
            ("numbers", make_pipeline(SimpleImputer(strategy="median", add_indicator=True),
                                      StandardScaler()), numbers),
        ]),
        LogisticRegression(max_iter=5_000),
    )

    def as_categories(frame, like=None):
        out = frame[features].copy()
        for c in categories:
            known = None if like is None else like[c].cat.categories
            out[c] = pd.Categorical(frame[c], categories=known)
        return out

    x_train_hgb = as_categories(train)
    x_test_hgb = as_categories(test, like=x_train_hgb)
    boosting = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)

    results = []
    with threadpool_limits(limits=args.threads):
        for name, model, x_train, x_test in [
            ("sklearn LogisticRegression", logistic, train[features], test[features]),
            ("sklearn HistGradientBoosting", boosting, x_train_hgb, x_test_hgb),
        ]:
            print(f"{name}: fit and predict", flush=True)
            _, fit_s = timed(lambda: model.fit(x_train, y_train))
            p, predict_s = timed(lambda: model.predict_proba(x_test)[:, 1])
            results.append((name, p, fit_s, predict_s))
    iterations = int(np.max(logistic[-1].n_iter_))
    if iterations >= logistic[-1].max_iter:
        print(f"warning: LogisticRegression did not converge in {iterations} iterations")

    print("robot: bench scoring (in-process)", flush=True)
    inproc = json.loads(robot("bench", "scoring", "--past", args.leads, "--score", args.score,
                              "--seed", args.seed, "--json").stdout)

    rows = [("robot (train/score CLI)", scored["probability"].to_numpy(), robot_fit_s, robot_predict_s)]
    rows += results
    rows.append(("oracle (true chance)", test["true_chance"].to_numpy(), None, None))
    measured = {}
    threads = "every core" if args.threads is None else f"{args.threads} thread(s)"
    print()
    print(f"{len(train):,} leads learned from (one year), {len(test):,} scored (the next year); "
          f"scikit-learn {sklearn.__version__} on {threads}, {os.cpu_count()} cores here")
    print(f"{'model':<30} {'AUC':>7} {'Brier':>8} {'log loss':>9} {'fit s':>7} {'predict s':>10} {'predict leads/s':>16}")
    for name, p, fit_s, predict_s in rows:
        auc, brier, loss = roc_auc_score(y_test, p), brier_score_loss(y_test, p), log_loss(y_test, p)
        measured[name] = (auc, brier, loss)
        seconds = lambda s, f: "—" if s is None else format(s, f)
        rate = "—" if predict_s is None else f"{len(test) / predict_s:,.0f}"
        print(f"{name:<30} {auc:>7.4f} {brier:>8.5f} {loss:>9.5f} {seconds(fit_s, '7.2f'):>7} "
              f"{seconds(predict_s, '10.3f'):>10} {rate:>16}")
    print("(the robot's fit and predict times are its commands' wall times: starting, reading and "
          "writing CSV included; train also measures itself on held-out leads)")

    print()
    print(f"in-process, one thread (sales-robot bench scoring, {inproc['past']:,} past leads, "
          f"{inproc['scored']:,} scored a round, median of {inproc['rounds']}):")
    met = lambda ok: "met" if ok else "NOT met"
    print(f"  train                                  {inproc['train_seconds']:>10.2f} s        "
          f"target < {TRAIN_TARGET_S:.0f} s          {met(inproc['train_seconds'] < TRAIN_TARGET_S)}")
    for label, key in [("model.score (encode + margin + score)", "score_per_second"),
                       ("encode_into + score_encoded", "fast_per_second"),
                       ("encode_into + chance_of (chance only)", "chance_per_second")]:
        print(f"  {label:<38} {inproc[key]:>10,.0f} leads/s  "
              f"target ≥ {SCORE_TARGET_PER_S:,}/s  {met(inproc[key] >= SCORE_TARGET_PER_S)}")
    for name, _, fit_s, predict_s in results:
        print(f"  {name:<38} fit {fit_s:.2f} s, predict_proba {len(test) / predict_s:,.0f} leads/s ({threads})")

    robot_auc, robot_brier, _ = measured["robot (train/score CLI)"]
    best_auc = max((measured[n][0], n) for n, *_ in results)
    best_brier = min((measured[n][1], n) for n, *_ in results)
    oracle_auc, oracle_brier, _ = measured["oracle (true chance)"]
    auc_ok, brier_ok = robot_auc >= best_auc[0], robot_brier <= best_brier[0]
    print()
    print(f"AUC:   robot {robot_auc:.4f} vs the better scikit-learn {best_auc[0]:.4f} ({best_auc[1]}): "
          f"{robot_auc - best_auc[0]:+.4f}, oracle {oracle_auc:.4f} — {'ok' if auc_ok else 'WORSE'}")
    print(f"Brier: robot {robot_brier:.5f} vs the better scikit-learn {best_brier[0]:.5f} ({best_brier[1]}): "
          f"{robot_brier - best_brier[0]:+.5f}, oracle {oracle_brier:.5f} — {'ok' if brier_ok else 'WORSE'}")
    if scratch is not None:
        scratch.cleanup()
    sys.exit(0 if auc_ok and brier_ok else 1)


if __name__ == "__main__":
    main()
