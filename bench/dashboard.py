"""Benchmark of the dashboard's job page on a long run: a job of 10,000 steps x 30 metrics
(the issue's target: the page loads and draws in under a second), in Debian's Chromium.

What it does:
  1. a fresh Postgres database with a tenant, its key and a running job of --steps steps,
     and `uvicorn api.app:app` serving it (bench/polling.py's `served_job`);
  2. writes --metrics series of --steps points each into the metrics table (the panels'
     own names first, then filler names), as the worker's record_metrics would;
  3. in headless Chromium, signed in, opens the job page --runs times and measures, in the
     page, the time from navigation start until every chart with data has drawn its last
     step (each chart's accessible label says "at step N"): HTML, scripts, the job, its
     events, the metrics (downsampled by the API to 1,000 points per name) and the drawing;
  4. in the same page, draws 10 charts of 3 series x --steps points each at full resolution
     (no downsampling by the API: the chart's own per-pixel decimation), --runs times;
  5. prints one JSON line: load_ms and draw_full_ms (median and max), and the settings.

    .venv/bin/python bench/dashboard.py
    .venv/bin/python bench/dashboard.py --steps 20000 --runs 10
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `tests.service`, when run as a script from anywhere
sys.path.insert(0, str(ROOT / "bench"))

PANEL_NAMES = ["reward/mean", "reward/accuracy", "entropy", "entropy/top_p", "entropy/masked",
               "paec/floor", "paec/penalty", "paec/mask_mean", "paec/mask_frac_above_half",
               "paec/decision_frac", "policy/kl", "policy/clip_frac_low",
               "policy/clip_frac_high", "completion/length_mean", "completion/length_max",
               "time/step", "time/sampling", "time/training"]
"""What the job page's panels draw (api/static/dashboard/js/views/panels.js)."""
CHROMIUM = os.environ.get("PAEC_CHROMIUM", "/usr/bin/chromium")

DRAW_FULL = """async ([steps]) => {
  const { Chart, ChartGroup } = await import("/ui/js/chart.js");
  const host = document.createElement("div");
  host.className = "grid";
  document.querySelector("main").replaceChildren(host);
  const xs = Array.from({ length: steps }, (_, i) => i + 1);
  const group = new ChartGroup();
  const charts = Array.from({ length: 10 }, (_, c) => group.add(new Chart(host, {
    title: `bench ${c}`, series: [0, 1, 2].map((s) => ({
      label: `s${s}`, steps: xs, values: xs.map((x) => Math.sin(x / 50 + s + c) + s) })) })));
  await new Promise((r) => requestAnimationFrame(r));
  const t = performance.now();
  for (const chart of charts) chart.draw();
  return performance.now() - t;
}"""


def seed_metrics(url: str, job_id: str, steps: int, n_metrics: int) -> None:
    """`n_metrics` series of `steps` points, written in bulk."""
    from sqlalchemy import insert

    from store.db import make_engine, make_sessionmaker, transaction
    from store.models import Metric

    names = (PANEL_NAMES + [f"extra/metric_{i:02d}" for i in range(n_metrics)])[:n_metrics]
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    for name in names:
        rows = [{"job_id": job_id, "name": name, "step": s,
                 "value": math.exp(-s / steps) + 0.1 * math.sin(s / 7)}
                for s in range(1, steps + 1)]
        with transaction(sessions) as session:
            session.execute(insert(Metric), rows)
    engine.dispose()


def measure(base: str, key: str, job_id: str, steps: int, runs: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    loads, draws = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/ui/")
        page.evaluate("k => sessionStorage.setItem('paec.apiKey', k)", key)
        done = ("n => { const c = [...document.querySelectorAll('figure.chart canvas')]"
                ".filter(e => !e.hidden); return c.length >= 8 && c.every("
                "e => (e.getAttribute('aria-label') || '').includes('at step ' + n)); }")
        for _ in range(runs):
            page.goto("about:blank")
            page.goto(f"{base}/ui/#/jobs/{job_id}")
            page.wait_for_function(done, arg=steps, timeout=60_000, polling="raf")
            loads.append(page.evaluate("performance.now()"))
        for _ in range(runs):
            draws.append(page.evaluate(DRAW_FULL, [steps]))
        browser.close()
    return {"load_ms": loads, "draw_full_ms": draws}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--metrics", type=int, default=30)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    from polling import served_job

    with served_job("paec_bdash") as served:
        seed_metrics(served.database_url, served.job_id, a.steps, a.metrics)
        times = measure(f"http://127.0.0.1:{served.port}", served.key, served.job_id,
                        a.steps, a.runs)
    print(json.dumps({
        **{f"{k}_median": round(statistics.median(v), 1) for k, v in times.items()},
        **{f"{k}_max": round(max(v), 1) for k, v in times.items()},
        "steps": a.steps, "metrics": a.metrics, "runs": a.runs,
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "machine": platform.machine()}))


if __name__ == "__main__":
    main()
