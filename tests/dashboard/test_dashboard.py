"""The dashboard in Chromium against the real service: sign-in, the job list and its filter,
a tiny job trained live while its charts grow, the tokens PAEC selected, checkpoints and
their download, compare, submit, cancel, and one tenant's pages closed to another."""

from __future__ import annotations

import json
import re
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.dashboard.conftest import Tab
from tests.worker.conftest import TINY_HYPERPARAMETERS, Workers, wait_for
from tests.worker.test_worker import GRADER, ROWS, status, submit, upload

HELD_OUT = [{"prompt": f"What is {a} + {b}? Answer with just the number.", "answer": str(a + b)}
            for a in range(5, 7) for b in range(1, 3)]


def job_step(tab: Tab) -> int:
    text = tab.page.locator("#job-step").inner_text()
    return int(text.split("/")[0])


def shown(value: float) -> str:
    """A number as the dashboard prints it (4 significant digits, no trailing zeros)."""
    rounded = float(f"{value:.4g}")
    return str(int(rounded)) if rounded.is_integer() else repr(rounded)


def chart_step(tab: Tab, title: str) -> int | None:
    """The last step a chart draws, from its accessible label ("... at step N")."""
    label = tab.page.get_by_role("img", name=re.compile(f"^{re.escape(title)}")).first
    found = re.findall(r"at step (\d+)", label.get_attribute("aria-label") or "")
    return int(found[0]) if found else None


def test_sign_in_keeps_the_key_in_session_storage_only(tab: Tab, key: str) -> None:
    tab.allow("status of 401")
    tab.page.goto(f"{tab.base}/")
    expect(tab.page).to_have_url(re.compile(r"/ui/"))
    tab.page.get_by_label("API key").fill("paec-not-a-key")
    tab.page.get_by_role("button", name="Sign in").click()
    expect(tab.page.get_by_role("alert")).to_have_text("This key was not accepted.")
    tab.sign_in(key)
    expect(tab.page.get_by_role("heading", name="Fine-tuning jobs")).to_be_visible()
    # A new page moves the focus to its content; the navigation comes before it.
    expect(tab.page.locator("main")).to_be_focused()
    tab.page.keyboard.press("Shift+Tab")
    expect(tab.page.get_by_role("button", name="Sign out")).to_be_focused()
    tab.page.keyboard.press("Shift+Tab")
    expect(tab.page.locator("#nav").get_by_role("link", name="New job")).to_be_focused()
    storage = tab.page.evaluate(
        "() => [JSON.stringify(sessionStorage), JSON.stringify(localStorage)]")
    assert key in storage[0] and key not in storage[1]
    assert key not in tab.page.url
    tab.page.get_by_role("button", name="Sign out").click()
    expect(tab.page.get_by_label("API key")).to_be_visible()
    assert key not in tab.page.evaluate("() => JSON.stringify(sessionStorage)")


def test_the_list_shows_method_and_progress_and_filters_by_status(
        tab: Tab, key: str, user: httpx.Client) -> None:
    file_id = upload(user)
    paec = submit(user, file_id, steps=5)
    grpo = submit(user, file_id, steps=5, use_paec=False)
    assert user.post(f"/v1/fine_tuning/jobs/{grpo}/cancel").status_code == 200
    tab.sign_in(key)
    rows = tab.page.locator("#jobs tbody tr[data-job]")
    expect(rows).to_have_count(2)
    expect(tab.page.locator(f'tr[data-job="{paec}"] .method')).to_have_text("PAEC")
    expect(tab.page.locator(f'tr[data-job="{grpo}"] .method')).to_have_text("GRPO")
    expect(tab.page.locator(f'tr[data-job="{paec}"] progress')).to_have_attribute("max", "5")
    tab.page.get_by_label("Status").select_option("cancelled")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job", grpo)
    assert tab.page.url.endswith("#/jobs?status=cancelled")


def test_cancel_from_the_job_page(tab: Tab, key: str, user: httpx.Client) -> None:
    job_id = submit(user, upload(user), steps=50)  # no worker: it stays queued
    tab.sign_in(key, f"#/jobs/{job_id}")
    expect(tab.page.locator("#job-title")).to_contain_text("queued")
    tab.page.once("dialog", lambda d: d.accept())
    tab.page.get_by_role("button", name="Cancel").click()
    expect(tab.page.locator("#job-title")).to_contain_text("cancelled")
    expect(tab.page.get_by_role("button", name="Cancel")).to_be_disabled()
    assert status(user, job_id) == "cancelled"


def watch(tab: Tab, user: httpx.Client, job_id: str, workers: Workers) -> tuple[set[int], set[int]]:
    """Until the job ends, without reloading: the steps the page's counter showed, and the
    last steps the reward chart drew."""
    seen: set[int] = set()
    charted: set[int] = set()
    deadline = time.monotonic() + 150
    while status(user, job_id) not in ("succeeded", "failed") and time.monotonic() < deadline:
        seen.add(job_step(tab))
        charted.add(chart_step(tab, "Reward and accuracy") or 0)
        time.sleep(0.05)
    assert status(user, job_id) == "succeeded", workers.log()
    return seen - {0}, charted - {0}


def check_tokens(tab: Tab, body: dict[str, Any]) -> None:
    """The token view shows the newest stored step's samples, one span per token, the
    mask's selections outlined, details on hover and with the arrow keys."""
    samples = tab.page.locator("#samples .sample")
    expect(samples).to_have_count(len(body["samples"]))
    expect(tab.page.locator("#trace-step")).to_have_value(str(body["step"]))
    first = samples.first.locator(".tok")
    expect(first).to_have_count(len(body["samples"][0]["tokens"]))
    selected = sum(1 for w in body["samples"][0]["mask"] if w is not None and w >= 0.5)
    expect(samples.first.locator(".tok.sel")).to_have_count(selected)
    first.first.hover()
    expect(tab.page.locator(".tokinfo")).to_contain_text("top-p entropy")
    expect(tab.page.locator(".tokinfo")).to_contain_text("mask weight")
    samples.first.focus()
    tab.page.keyboard.press("ArrowRight")
    tab.page.keyboard.press("ArrowRight")
    expect(tab.page.locator(".tokinfo")).to_contain_text("token 3:")  # hovered 1, then 2 right
    tab.page.locator("#trace-step").select_option("1")
    expect(tab.page.locator(".trace").first).to_be_visible()


def test_a_job_trained_live_grows_its_charts_and_shows_the_tokens_paec_selects(
        tab: Tab, key: str, user: httpx.Client, workers: Workers, tmp_path: Path) -> None:
    job_id = submit(user, upload(user), steps=30, trace_samples=2, checkpoint_every=10,
                    paec={"anchor_steps": 2})
    tab.sign_in(key, f"#/jobs/{job_id}")
    expect(tab.page.locator("#job-title")).to_contain_text("queued")
    workers.start()
    seen, charted = watch(tab, user, job_id, workers)
    expect(tab.page.locator("#job-title")).to_contain_text("succeeded", timeout=10_000)
    expect(tab.page.locator("#job-step")).to_have_text("30/30")
    assert len(seen) >= 2 and len(charted) >= 3, (seen, charted)
    # The floor appears once the anchor froze, drawn to the last step.
    entropy = tab.page.get_by_role("img", name=re.compile("^Entropy"))
    expect(entropy).to_have_attribute("aria-label", re.compile("anchor floor [0-9.]+ at step 30"))
    tab.shot("job-live", full_page=True)
    check_tokens(tab, user.get(f"/api/jobs/{job_id}/traces").json())
    tab.shot("tokens")

    # Checkpoints: listed with a download that is the archive the API serves.
    rows = tab.page.locator("#checkpoints tr[data-checkpoint]")
    expect(rows.first).to_be_visible()
    with tab.page.expect_download() as download:
        rows.first.get_by_role("button", name=re.compile("Download")).click()
    saved = tmp_path / "ckpt.tar"
    download.value.save_as(saved)
    with tarfile.open(saved) as tar:
        assert any(name.endswith("config.json") for name in tar.getnames())
    expect(tab.page.locator("#events li").first).to_be_visible()
    expect(tab.page.locator("#hyperparameters")).to_contain_text("paec.anchor_steps")

    # Dark follows the system setting, with the text still readable on it.
    tab.page.emulate_media(color_scheme="dark")
    colours = tab.page.evaluate("() => [getComputedStyle(document.body).backgroundColor, "
                                "getComputedStyle(document.body).color]")
    assert colours == ["rgb(15, 18, 23)", "rgb(230, 233, 238)"], colours
    tab.page.locator("#charts").scroll_into_view_if_needed()
    tab.shot("job-dark")


def test_compare_overlays_paec_and_grpo_and_their_evaluations(
        tab: Tab, key: str, user: httpx.Client, workers: Workers) -> None:
    train = upload(user)
    held = upload(user, HELD_OUT)
    common: dict[str, Any] = {"steps": 4, "eval_interval": 4, "eval_samples": 2}
    ids = [_submit_with_validation(user, train, held, use_paec=flag, **common)
           for flag in (True, False)]
    workers.start()
    for job_id in ids:
        wait_for(lambda j=job_id: status(user, j) in ("succeeded", "failed"), timeout=150,
                 what="the job to finish", log=workers.log)
        assert status(user, job_id) == "succeeded", workers.log()
    paec_model = user.get(f"/v1/fine_tuning/jobs/{ids[0]}").json()["fine_tuned_model"]
    evaluation = user.post("/api/evaluations", json={
        "model": paec_model, "datasets": [held], "k": 2, "max_new_tokens": 6}).json()
    wait_for(lambda: user.get(f"/api/evaluations/{evaluation['id']}").json()["status"]
             in ("succeeded", "failed"), timeout=120, what="the evaluation", log=workers.log)
    evaluation = user.get(f"/api/evaluations/{evaluation['id']}").json()
    assert evaluation["status"] == "succeeded", evaluation
    tab.sign_in(key)
    for job_id in ids:
        tab.page.get_by_label(f"Select {job_id} to compare").check()
    tab.page.get_by_role("button", name="Compare selected").click()
    expect(tab.page.get_by_role("heading", name="Compare jobs")).to_be_visible()
    reward = tab.page.locator("#compare-charts figure").first
    expect(reward.locator(".legend span")).to_have_count(2)
    expect(reward.locator(".legend")).to_contain_text("PAEC")
    expect(reward.locator(".legend")).to_contain_text("GRPO")
    table = tab.page.locator("#compare-evals")
    # One in-training row per job, and the PAEC job's evaluation on the held-out file.
    expect(table.locator("tbody tr")).to_have_count(3)
    headers = table.locator("thead th").all_inner_texts()
    for job_id in ids:
        metrics = user.get(f"/api/jobs/{job_id}/metrics", params={"names": "eval/avg@2"}).json()
        value = metrics["series"]["eval/avg@2"]["values"][-1]
        row = table.locator("tbody tr", has_text="in training").filter(has_text=job_id)
        expect(row.locator("td").nth(headers.index("avg@2"))).to_have_text(shown(value))
    row = table.locator("tbody tr", has_text=evaluation["id"])
    for name, value in evaluation["results"][held].items():
        if name in headers:
            expect(row.locator("td").nth(headers.index(name))).to_have_text(shown(value))
    tab.shot("compare", full_page=True)


def _submit_with_validation(user: httpx.Client, train: str, held: str, **hyper: Any) -> str:
    body = {"model": "local:tiny", "training_file": train, "validation_file": held, "seed": 3,
            "method": {"type": "reinforcement", "reinforcement": {
                "grader": GRADER, "hyperparameters": {**TINY_HYPERPARAMETERS, **hyper}}}}
    r = user.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def test_submit_names_the_field_a_job_is_refused_for_then_starts_it(
        tab: Tab, key: str, user: httpx.Client, tmp_path: Path) -> None:
    tab.allow("status of 400")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    tab.sign_in(key, "#/submit")
    expect(tab.page.get_by_label("PAEC penalty weight", exact=True)).to_have_attribute(
        "placeholder", "default 1")
    tab.page.get_by_label("Training file (JSONL)", exact=True).set_input_files(str(data))
    tab.page.get_by_label("Model", exact=True).fill("local:tiny")
    tab.page.get_by_label("Method", exact=True).select_option(label="GRPO (baseline)")
    tab.page.get_by_label("Samples per prompt (group_size)", exact=True).fill("0")
    tab.page.get_by_role("button", name="Upload and start").click()
    error = tab.page.locator("#hp-group_size-error")
    expect(error).to_contain_text("group_size")
    expect(tab.page.get_by_label("Samples per prompt (group_size)", exact=True)).to_be_focused()
    tab.page.get_by_label("Samples per prompt (group_size)", exact=True).fill("2")
    tab.page.get_by_label("Steps", exact=True).fill("3")
    tab.page.get_by_role("button", name="Upload and start").click()
    expect(tab.page).to_have_url(re.compile(r"#/jobs/ftjob-"))
    job_id = tab.page.url.rsplit("/", 1)[1]
    job = user.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    hyper = job["method"]["reinforcement"]["hyperparameters"]
    assert (hyper["use_paec"], hyper["group_size"], job["total_steps"]) == (False, 2, 3)
    expect(tab.page.locator("#job-title .status")).to_be_visible()


def test_another_tenant_sees_none_of_it(tab: Tab, user: httpx.Client,
                                        worker_sessions: Any) -> None:
    from tests.service import new_tenant_key

    job_id = submit(user, upload(user), steps=3)
    tab.allow("status of 404")
    tab.sign_in(new_tenant_key(worker_sessions)[1], f"#/jobs/{job_id}")
    expect(tab.page.get_by_role("heading", name="Job not found")).to_be_visible()
    tab.page.goto(f"{tab.base}/ui/#/jobs")
    expect(tab.page.locator("#jobs tbody")).to_contain_text("No jobs yet")
