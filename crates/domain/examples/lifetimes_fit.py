"""Times `lifetimes`' BG/NBD and Gamma-Gamma fits on the CDNOW purchase log, the way
`clv_fit` times Coalition's (calibration end 1997-09-30, days as transactions, weeks):

    pip install lifetimes==0.11.3
    python crates/domain/examples/lifetimes_fit.py CDNOW_master.txt [--runs 7]

BG/NBD is timed on the 23,570 customers one by one (how `lifetimes` is usually called)
and on the same data grouped by unique (x, t_x, T) with weights (what Coalition fits).
"""
import statistics
import sys
import time
import warnings

import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import summary_data_from_transaction_data

warnings.filterwarnings("ignore")


def timed(runs, fit):
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fitted = fit()
        times.append((time.perf_counter() - started) * 1e3)
    times.sort()
    return fitted, f"median {statistics.median(times):.2f} ms, fastest {times[0]:.2f} ms of {runs} runs"


def main():
    path = sys.argv[1]
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 7
    df = pd.read_csv(path, sep=r"\s+", header=0, names=["id", "date", "cds", "dollars"], dtype={"date": str})
    df["date"] = pd.to_datetime(df["date"], format="%Y%m%d")
    end = "1997-09-30"
    s = summary_data_from_transaction_data(
        df[df.date <= end], "id", "date", monetary_value_col="dollars", observation_period_end=end, freq="D"
    )
    s["recency"] /= 7.0
    s["T"] /= 7.0
    grouped = s.groupby(["frequency", "recency", "T"]).size().reset_index(name="n")
    print(f"{len(s)} customers, {len(grouped)} (x, t_x, T) groups")

    bg, figures = timed(runs, lambda: BetaGeoFitter().fit(s.frequency, s.recency, s["T"]))
    print(f"lifetimes BG/NBD ungrouped: {dict(bg.params_.round(10))} fit {figures}")
    bg, figures = timed(
        runs, lambda: BetaGeoFitter().fit(grouped.frequency, grouped.recency, grouped["T"], weights=grouped.n)
    )
    print(f"lifetimes BG/NBD grouped: {dict(bg.params_.round(10))} fit {figures}")
    repeaters = s[(s.frequency > 0) & (s.monetary_value > 0)]
    gg, figures = timed(runs, lambda: GammaGammaFitter().fit(repeaters.frequency, repeaters.monetary_value))
    print(f"lifetimes Gamma-Gamma: {dict(gg.params_.round(10))} fit {figures}")


if __name__ == "__main__":
    main()
