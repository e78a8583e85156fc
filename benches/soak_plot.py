"""Plots the soak benchmark's CSV (benches/soak.rs) as one PNG of six panels over time.

Usage: python3 benches/soak_plot.py bench-out/soak.csv docs/soak.png
Needs matplotlib (benches/requirements-plot.txt), e.g. in a virtualenv:
  python3 -m venv .venv-plot && .venv-plot/bin/pip install -r benches/requirements-plot.txt
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MIB = 1024 * 1024


def main(src, out):
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{src}: no samples")
    t = [float(r["t_s"]) / 60 for r in rows]

    def col(name, scale=1.0):
        values = [float(r[name]) / scale for r in rows]
        if name.endswith("_ms"):
            # An interval with no completed sample has no latency, not a latency of 0.
            values = [v if v > 0 else float("nan") for v in values]
        return values

    restarts = []
    for prev, r in zip(rows, rows[1:]):
        if r["mw_restarts"] != prev["mw_restarts"]:
            restarts.append(float(r["t_s"]) / 60)

    fig, axes = plt.subplots(3, 2, figsize=(12, 10), sharex=True)
    panels = [
        ("Referrals acknowledged per second", [("acknowledged_per_s", 1, "per s")], None),
        (
            "Latency (ms)",
            [
                ("submit_p99_ms", 1, "acknowledged, p99"),
                ("e2e_p50_ms", 1, "receipt, p50"),
                ("e2e_p99_ms", 1, "receipt, p99"),
            ],
            "log",
        ),
        ("Resident memory (MiB)", [("zm_rss_bytes", MIB, "sender"), ("mw_rss_bytes", MIB, "receiver")], None),
        ("Open file descriptors", [("zm_fds", 1, "sender"), ("mw_fds", 1, "receiver")], None),
        ("Disk use (MiB)", [("zm_disk_bytes", MIB, "sender"), ("mw_disk_bytes", MIB, "receiver")], None),
        ("CPU ms per referral (both nodes)", [("cpu_ms_per_referral", 1, "CPU ms")], None),
    ]
    for ax, (title, series, scale) in zip(axes.flat, panels):
        for name, div, label in series:
            ax.plot(t, col(name, div), label=label, linewidth=1)
        for x in restarts:
            ax.axvline(x, color="grey", alpha=0.25, linewidth=0.8)
        ax.set_title(title, fontsize=10)
        if scale:
            ax.set_yscale(scale)
        ax.set_ylim(bottom=0 if not scale else None)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("minutes (grey lines: receiver restarted)")
    total = rows[-1]["acknowledged_total"]
    fig.suptitle(f"kinbridge soak: {total} referrals acknowledged ({src})", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: soak_plot.py SOAK.csv OUT.png")
    main(sys.argv[1], sys.argv[2])
